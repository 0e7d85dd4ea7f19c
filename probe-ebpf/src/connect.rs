//! Connects to a watched socket, one program per backend: `sk_data_ready` (tracepoint
//! backend) and the `unix_stream_connect` / `unix_may_send` security hooks (lsm, fentry and
//! kprobe backends). Every path ends at the listening (or receiving) socket, whose bound inode
//! decides, and the event goes to the `CONNECTS` ring.
use aya_ebpf::{
    macros::{fentry, kprobe, lsm, tracepoint},
    programs::{FEntryContext, LsmContext, ProbeContext, TracePointContext},
};
use probe_common::kind;

use crate::helpers::{emit, field, read, rodata, watched_inode};

const AF_UNIX: u16 = 1;
const TCP_LISTEN: u8 = 10;

/// Tracepoint `sock:sk_data_ready`: a connect to a listening AF_UNIX socket wakes the listener
/// in the connecting task's context. If the listener's bound inode is watched, we emit a
/// CONNECT event with the caller's identity and the path it passed.
#[tracepoint(category = "sock", name = "sk_data_ready")]
pub fn sk_data_ready(ctx: TracePointContext) -> u32 {
    let _ = on_data_ready(&ctx);
    0
}

#[inline(always)]
fn on_data_ready(ctx: &TracePointContext) -> Option<()> {
    // Record fields are read directly (no helper): this is the cost every socket wake-up pays.
    let family: u16 = field::<u16, 16>(ctx, rodata!(FIELDS.data_ready_family));
    if family != AF_UNIX {
        return None;
    }
    let sk: u64 = field::<u64, 8>(ctx, rodata!(FIELDS.data_ready_sk));
    // Only a listening socket is woken by connect(); data wake-ups stop here.
    let state: u8 = read(sk, rodata!(OFFSETS.sock_state))?;
    if state != TCP_LISTEN {
        return None;
    }
    report_connect_to(sk)
}

/// A connect to the UNIX socket `sk` (the listener, or the datagram receiver): reported when
/// the file it is bound to is watched.
#[inline(always)]
fn report_connect_to(sk: u64) -> Option<()> {
    let dentry: u64 = read(sk, rodata!(OFFSETS.unix_sock_path_dentry))?;
    if dentry == 0 {
        return None; // abstract or unbound
    }
    let inode: u64 = read(dentry, rodata!(OFFSETS.dentry_inode))?;
    let (dev, ino) = watched_inode(inode)?;
    emit(kind::CONNECT, dev, ino, 0)
}

/// `security_unix_may_send(struct socket *sock, struct socket *other)`: datagram sends.
#[inline(always)]
fn on_unix_may_send(other: u64) -> Option<()> {
    let sk: u64 = read(other, rodata!(OFFSETS.socket_sk))?;
    report_connect_to(sk)
}

#[lsm(hook = "unix_stream_connect")]
pub fn lsm_unix_stream_connect(ctx: LsmContext) -> i32 {
    // (struct sock *sock, struct sock *other, struct sock *newsk): `other` is the listener.
    let _ = report_connect_to(ctx.arg::<u64>(1));
    0
}

#[lsm(hook = "unix_may_send")]
pub fn lsm_unix_may_send(ctx: LsmContext) -> i32 {
    let _ = on_unix_may_send(ctx.arg::<u64>(1));
    0
}

#[fentry(function = "security_unix_stream_connect")]
pub fn fentry_unix_stream_connect(ctx: FEntryContext) -> u32 {
    let _ = report_connect_to(ctx.arg::<u64>(1));
    0
}

#[fentry(function = "security_unix_may_send")]
pub fn fentry_unix_may_send(ctx: FEntryContext) -> u32 {
    let _ = on_unix_may_send(ctx.arg::<u64>(1));
    0
}

// kprobe backend: the arguments come from the registers of the probed call (the
// architecture's calling convention, which aya-ebpf reads for the target it is built for).
#[kprobe(function = "security_unix_stream_connect")]
pub fn kprobe_unix_stream_connect(ctx: ProbeContext) -> u32 {
    if let Some(other) = ctx.arg::<u64>(1) {
        let _ = report_connect_to(other);
    }
    0
}

#[kprobe(function = "security_unix_may_send")]
pub fn kprobe_unix_may_send(ctx: ProbeContext) -> u32 {
    if let Some(other) = ctx.arg::<u64>(1) {
        let _ = on_unix_may_send(other);
    }
    0
}
