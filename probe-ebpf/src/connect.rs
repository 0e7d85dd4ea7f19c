//! Connects to a watched socket, one program per backend: `sk_data_ready` (a raw tracepoint;
//! tracepoint backend) and the `unix_stream_connect` / `unix_may_send` security hooks (lsm, fentry and
//! kprobe backends). Every path ends at the listening (or receiving) socket, whose bound inode
//! decides, and the event goes to the `CONNECTS` ring.
use aya_ebpf::{
    macros::{fentry, kprobe, lsm, raw_tracepoint},
    programs::{FEntryContext, LsmContext, ProbeContext, RawTracePointContext},
};
use probe_common::{action, kind};

use crate::{
    enforce::{enforce, lsm_return, Refusal},
    helpers::{emit, read, rodata, watched_inode},
};

const AF_UNIX: u16 = 1;
const TCP_LISTEN: u8 = 10;

/// Raw tracepoint `sk_data_ready` (`trace_sk_data_ready(const struct sock *sk)`): a connect
/// to a listening AF_UNIX socket wakes the listener in the connecting task's context. If the
/// listener's bound inode is watched, we emit a CONNECT event with the caller's identity and
/// the path it passed. Raw, not the tracefs tracepoint: no record is built for each socket
/// wake-up, and its link is a `bpf_link` that can be pinned (a perf-event link could not be
/// pinned on every kernel).
#[raw_tracepoint(tracepoint = "sk_data_ready")]
pub fn sk_data_ready(ctx: RawTracePointContext) -> i32 {
    let _ = on_data_ready(ctx.arg::<u64>(0));
    0
}

#[inline(always)]
fn on_data_ready(sk: u64) -> Option<()> {
    // One read decides for every wake-up that is not an AF_UNIX socket's.
    let family: u16 = read(sk, rodata!(OFFSETS.sock_family))?;
    if family != AF_UNIX {
        return None;
    }
    // Only a listening socket is woken by connect(); data wake-ups stop here.
    let state: u8 = read(sk, rodata!(OFFSETS.sock_state))?;
    if state != TCP_LISTEN {
        return None;
    }
    let _ = connect_to(sk, Refusal::Kill);
    Some(())
}

/// A connect (or datagram send) to the UNIX socket `sk` (the listener, or the receiver):
/// reported when the file it is bound to is watched, and refused `how` when the caller's
/// verdict says so. Returns the action taken.
#[inline(always)]
fn connect_to(sk: u64, how: Refusal) -> u32 {
    let Some((dev, ino)) = watched_socket(sk) else {
        return action::NONE;
    };
    let action = enforce(how);
    let _ = emit(kind::CONNECT, dev, ino, 0, action);
    action
}

#[inline(always)]
fn watched_socket(sk: u64) -> Option<(u64, u64)> {
    let dentry: u64 = read(sk, rodata!(OFFSETS.unix_sock_path_dentry))?;
    if dentry == 0 {
        return None; // abstract or unbound
    }
    let inode: u64 = read(dentry, rodata!(OFFSETS.dentry_inode))?;
    watched_inode(inode)
}

/// `security_unix_may_send(struct socket *sock, struct socket *other)`: datagram sends.
#[inline(always)]
fn may_send_to(other: u64, how: Refusal) -> u32 {
    match read::<u64>(other, rodata!(OFFSETS.socket_sk)) {
        Some(sk) => connect_to(sk, how),
        None => action::NONE,
    }
}

#[lsm(hook = "unix_stream_connect")]
pub fn lsm_unix_stream_connect(ctx: LsmContext) -> i32 {
    // (struct sock *sock, struct sock *other, struct sock *newsk): `other` is the listener.
    lsm_return(connect_to(ctx.arg::<u64>(1), Refusal::Return))
}

#[lsm(hook = "unix_may_send")]
pub fn lsm_unix_may_send(ctx: LsmContext) -> i32 {
    lsm_return(may_send_to(ctx.arg::<u64>(1), Refusal::Return))
}

#[fentry(function = "security_unix_stream_connect")]
pub fn fentry_unix_stream_connect(ctx: FEntryContext) -> u32 {
    let _ = connect_to(ctx.arg::<u64>(1), Refusal::HandOff);
    0
}

#[fentry(function = "security_unix_may_send")]
pub fn fentry_unix_may_send(ctx: FEntryContext) -> u32 {
    let _ = may_send_to(ctx.arg::<u64>(1), Refusal::HandOff);
    0
}

// kprobe backend: the arguments come from the registers of the probed call (the
// architecture's calling convention, which aya-ebpf reads for the target it is built for).
#[kprobe(function = "security_unix_stream_connect")]
pub fn kprobe_unix_stream_connect(ctx: ProbeContext) -> u32 {
    if let Some(other) = ctx.arg::<u64>(1) {
        let _ = connect_to(other, Refusal::Kill);
    }
    0
}

#[kprobe(function = "security_unix_may_send")]
pub fn kprobe_unix_may_send(ctx: ProbeContext) -> u32 {
    if let Some(other) = ctx.arg::<u64>(1) {
        let _ = may_send_to(other, Refusal::Kill);
    }
    0
}
