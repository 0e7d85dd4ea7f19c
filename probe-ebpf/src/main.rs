//! sockwarden's eBPF programs, for every attach backend.
//!
//! Detection keys on what a socket *is*: the inode (and device) of the file a listening
//! AF_UNIX socket is bound to, never its name. Programs:
//! - `sk_data_ready` (tracepoint `sock:sk_data_ready`): a connect to a listening AF_UNIX socket
//!   wakes the listener in the connecting task's context. If the listener's bound inode is
//!   watched, we emit a CONNECT event with the caller's identity and the path it passed.
//!
//! Connects have a ring buffer of their own (`CONNECTS`): opens and cgroup events share
//! `EVENTS`, and ENXIO opens are rate-limited per cgroup, so no container can starve another's
//! connects (or opens) by flooding. Tracepoint record offsets come from tracefs via `FIELDS`.
//! - `enter_open*`/`exit_open*` (syscall tracepoints, opt-in `--detect-open`): opens with
//!   write intent that fail with ENXIO (what opening a socket file returns).
//! - `cgroup_mkdir` (tracepoint `cgroup:cgroup_mkdir`): new cgroup v2 directories, so events
//!   from containers that are already gone can still be attributed.
//! - `lsm_*` / `fentry_*`: the same decisions on the security hooks themselves
//!   (`file_open`, `unix_stream_connect`, `unix_may_send`), for kernels that load them.
#![no_std]
#![no_main]

use core::ptr::{addr_of, addr_of_mut, read_volatile};

use aya_ebpf::maps::ring_buf::RingBufEntry;
use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_get_current_task_btf, bpf_get_current_uid_gid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_user,
        generated::{
            bpf_get_current_comm, bpf_probe_read_kernel_str, bpf_probe_read_user_str,
            bpf_task_pt_regs,
        },
    },
    macros::{fentry, lsm, map, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{FEntryContext, LsmContext, TracePointContext},
    EbpfContext,
};
use probe_common::{
    kind, Event, KernelOffsets, ProbeConfig, RecordFields, WatchedKey, COMM_LEN, COUNTERS_LEN,
    COUNTER_CONNECT_RINGBUF_DROPS, COUNTER_MATCHED, COUNTER_OPENS_LIMITED, COUNTER_RINGBUF_DROPS,
    MAX_WATCHED, OPEN_BURST, OPEN_RATE_PER_SEC, PATH_LEN,
};

const AF_UNIX: u16 = 1;
const TCP_LISTEN: u8 = 10;
const ENXIO: i64 = 6;
const O_ACCMODE: u32 = 3;
/// Longest `sun_path` (`sizeof(sockaddr_un.sun_path)`).
const SUN_PATH_LEN: u32 = 108;

/// Filled by the probe at load time from the running kernel's BTF.
#[no_mangle]
static OFFSETS: KernelOffsets = KernelOffsets {
    sock_state: 0,
    unix_sock_path_dentry: 0,
    dentry_inode: 0,
    inode_ino: 0,
    inode_sb: 0,
    sb_dev: 0,
    task_real_parent: 0,
    task_tgid: 0,
    task_nsproxy: 0,
    nsproxy_mnt_ns: 0,
    nsproxy_pid_ns: 0,
    mnt_ns_inum: 0,
    pid_ns_inum: 0,
    regs_syscall_nr: 0,
    regs_arg2: 0,
    regs_arg1: 0,
    file_inode: 0,
    file_flags: 0,
    inode_mode: 0,
    socket_sk: 0,
    task_group_leader: 0,
    task_start_boottime: 0,
    _pad: 0,
};

#[no_mangle]
static CONFIG: ProbeConfig = ProbeConfig {
    connect_syscall_nr: 0,
    open_syscall_nr: 0,
    openat_syscall_nr: 0,
    openat2_syscall_nr: 0,
};

/// Filled by the probe at load time from the kernel's tracefs `format` files.
#[no_mangle]
static FIELDS: RecordFields = RecordFields {
    data_ready_sk: 0,
    data_ready_family: 0,
    openat_dfd: 0,
    openat_filename: 0,
    openat_flags: 0,
    open_filename: 0,
    open_flags: 0,
    openat2_dfd: 0,
    openat2_filename: 0,
    openat2_how: 0,
    exit_openat_ret: 0,
    exit_open_ret: 0,
    exit_openat2_ret: 0,
    mkdir_root: 0,
    mkdir_id: 0,
    mkdir_path: 0,
};

/// Opens and cgroup events.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Connects only: nothing else can fill it.
#[map]
static CONNECTS: RingBuf = RingBuf::with_byte_size(2 << 20, 0);

/// Watched socket files by (device, inode). Kept current by the probe (re-armed on restart).
#[map]
static WATCHED: HashMap<WatchedKey, u32> = HashMap::with_max_entries(MAX_WATCHED, 0);

/// Inode numbers in `WATCHED` (value: how many entries have it): one lookup turns away
/// nearly every unwatched socket before the device is read.
#[map]
static WATCHED_INODES: HashMap<u64, u32> = HashMap::with_max_entries(MAX_WATCHED, 0);

/// Per cgroup id, the theoretical arrival time (ns) of its next ENXIO open (a GCRA limiter).
#[map]
static OPEN_LIMITS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4096, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS_LEN, 0);

/// An open(2) with write intent between syscall entry and exit, keyed by thread id.
#[repr(C)]
#[derive(Clone, Copy)]
struct PendingOpen {
    filename: u64,
    flags: u32,
    dirfd: i32,
}

#[map]
static PENDING_OPENS: LruHashMap<u32, PendingOpen> = LruHashMap::with_max_entries(8192, 0);

/// Reads a `.rodata` member; the verifier sees the frozen value as a constant.
macro_rules! rodata {
    ($global:ident . $field:ident) => {
        unsafe { read_volatile(addr_of!($global.$field)) }
    };
}

#[inline(always)]
fn read<T>(base: u64, offset: u32) -> Option<T> {
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T).ok() }
}

#[inline(always)]
fn bump(counter: u32) {
    if let Some(value) = COUNTERS.get_ptr_mut(counter) {
        unsafe { *value += 1 };
    }
}

/// Mount- and pid-namespace inums of a task.
#[inline(always)]
fn namespaces(task: u64) -> Option<(u32, u32)> {
    let nsproxy: u64 = read(task, rodata!(OFFSETS.task_nsproxy))?;
    if nsproxy == 0 {
        return None; // exiting task
    }
    let mnt_ns: u64 = read(nsproxy, rodata!(OFFSETS.nsproxy_mnt_ns))?;
    let pid_ns: u64 = read(nsproxy, rodata!(OFFSETS.nsproxy_pid_ns))?;
    let mnt: u32 = read(mnt_ns, rodata!(OFFSETS.mnt_ns_inum))?;
    let pid: u32 = read(pid_ns, rodata!(OFFSETS.pid_ns_inum))?;
    Some((mnt, pid))
}

/// Writes the caller's identity into a reserved event.
#[inline(always)]
fn fill_task(event: *mut Event, kind: u32, task: u64, mnt_ns: u32, pid_ns: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    let parent: u64 = read(task, rodata!(OFFSETS.task_real_parent)).unwrap_or(0);
    let ppid: u32 = if parent == 0 {
        0
    } else {
        read(parent, rodata!(OFFSETS.task_tgid)).unwrap_or(0)
    };
    let start_ns: u64 = match (
        rodata!(OFFSETS.task_start_boottime),
        read::<u64>(task, rodata!(OFFSETS.task_group_leader)),
    ) {
        (0, _) | (_, None) | (_, Some(0)) => 0,
        (offset, Some(leader)) => read(leader, offset).unwrap_or(0),
    };
    unsafe {
        addr_of_mut!((*event).kind).write(kind);
        addr_of_mut!((*event).flags).write(0);
        addr_of_mut!((*event).tid).write(pid_tgid as u32);
        addr_of_mut!((*event).pid).write((pid_tgid >> 32) as u32);
        addr_of_mut!((*event).ppid).write(ppid);
        addr_of_mut!((*event).uid).write(uid_gid as u32);
        addr_of_mut!((*event).gid).write((uid_gid >> 32) as u32);
        addr_of_mut!((*event).mnt_ns).write(mnt_ns);
        addr_of_mut!((*event).pid_ns).write(pid_ns);
        addr_of_mut!((*event).ret).write(0);
        addr_of_mut!((*event).dirfd).write(-100);
        addr_of_mut!((*event).path_len).write(0);
        addr_of_mut!((*event).cgroup_id).write(bpf_get_current_cgroup_id());
        addr_of_mut!((*event).ktime_ns).write(bpf_ktime_get_ns());
        addr_of_mut!((*event).start_ns).write(start_ns);
        addr_of_mut!((*event).dev).write(0);
        addr_of_mut!((*event).ino).write(0);
        let comm = addr_of_mut!((*event).comm) as *mut u8;
        if bpf_get_current_comm(comm.cast(), COMM_LEN as u32) < 0 {
            comm.write(0);
        }
        // A terminating NUL so user space never reads stale ring-buffer bytes as a path.
        (addr_of_mut!((*event).path) as *mut u8).write(0);
    }
}

/// Copies a user-space string into the event's path; returns the length without the NUL.
#[inline(always)]
fn copy_user_path(event: *mut Event, src: u64, max: u32) {
    unsafe {
        let dst = addr_of_mut!((*event).path) as *mut u8;
        let n = bpf_probe_read_user_str(dst.cast(), max, src as *const _);
        addr_of_mut!((*event).path_len).write(if n > 0 { (n - 1) as u32 } else { 0 });
    }
}

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

/// (device, inode) of `inode` if it is a watched socket file.
#[inline(always)]
fn watched_inode(inode: u64) -> Option<(u64, u64)> {
    let ino: u64 = read(inode, rodata!(OFFSETS.inode_ino))?;
    unsafe { WATCHED_INODES.get(&ino) }?;
    let sb: u64 = read(inode, rodata!(OFFSETS.inode_sb))?;
    let dev: u32 = read(sb, rodata!(OFFSETS.sb_dev))?;
    let key = WatchedKey {
        dev: dev as u64,
        ino,
    };
    unsafe { WATCHED.get(&key) }?;
    bump(COUNTER_MATCHED);
    Some((key.dev, ino))
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

/// Emits an event for the current task. No host filter here: whether the caller is in a
/// container is decided in user space by its cgroup first, and a container process may have
/// joined the host's namespaces (hostPID + nsenter). Only touches of watched sockets get
/// here, so host traffic on the ring buffer is bounded by connects to runtime sockets.
#[inline(always)]
fn emit(kind: u32, dev: u64, ino: u64, flags: u32) -> Option<()> {
    let task = unsafe { bpf_get_current_task() };
    let (mnt_ns, pid_ns) = namespaces(task)?;
    let mut entry = reserve(kind)?;
    let event = entry.as_mut_ptr();
    fill_task(event, kind, task, mnt_ns, pid_ns);
    unsafe {
        addr_of_mut!((*event).dev).write(dev);
        addr_of_mut!((*event).ino).write(ino);
        addr_of_mut!((*event).flags).write(flags);
    }
    requested_path(event, kind == kind::CONNECT);
    entry.submit(0);
    Some(())
}

/// Room for one event on the ring its kind goes to; a full ring is counted, never silent.
/// (`kind` is a constant at every call site, so the branch folds away.)
#[inline(always)]
fn reserve(kind: u32) -> Option<RingBufEntry<Event>> {
    let (ring, drops) = if kind == kind::CONNECT {
        (&CONNECTS, COUNTER_CONNECT_RINGBUF_DROPS)
    } else {
        (&EVENTS, COUNTER_RINGBUF_DROPS)
    };
    let entry = ring.reserve::<Event>(0);
    if entry.is_none() {
        bump(drops);
    }
    entry
}

/// The path the caller passed, read from the syscall's saved registers while it is still
/// inside the syscall: connect(2)'s `sun_path`, or the filename of open/openat/openat2.
#[inline(always)]
fn requested_path(event: *mut Event, connect: bool) {
    let nr_offset = rodata!(OFFSETS.regs_syscall_nr);
    if nr_offset == 0 {
        return;
    }
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as u64;
    let nr = read::<u64>(regs, nr_offset).unwrap_or(u64::MAX) as u32;
    if connect {
        if nr == rodata!(CONFIG.connect_syscall_nr) {
            let uaddr: u64 = read(regs, rodata!(OFFSETS.regs_arg2)).unwrap_or(0);
            if uaddr != 0 {
                // sockaddr_un: sa_family_t (2 bytes), then sun_path.
                copy_user_path(event, uaddr + 2, SUN_PATH_LEN);
            }
        }
        return;
    }
    let arg = if nr == rodata!(CONFIG.open_syscall_nr) {
        rodata!(OFFSETS.regs_arg1)
    } else if nr == rodata!(CONFIG.openat_syscall_nr) || nr == rodata!(CONFIG.openat2_syscall_nr) {
        rodata!(OFFSETS.regs_arg2)
    } else {
        return;
    };
    let filename: u64 = read(regs, arg).unwrap_or(0);
    if filename != 0 {
        copy_user_path(event, filename, PATH_LEN as u32);
    }
}

// --- lsm and fentry backends: the security hooks themselves ---

const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;

/// `security_file_open`: a socket inode first (one read decides for nearly every open), write
/// intent next, then the watched map.
#[inline(always)]
fn on_file_open(file: u64) -> Option<()> {
    // `file` is a BTF-typed hook argument: the verifier lets us load its fields directly
    // (fault-safe), without a helper call — this is the cost every open in the system pays.
    let inode_at = rodata!(OFFSETS.file_inode) as usize;
    let inode: u64 = unsafe { read_volatile((file as *const u8).add(inode_at) as *const u64) };
    if inode == 0 {
        return None;
    }
    let mode_at = rodata!(OFFSETS.inode_mode) as usize;
    let mode: u16 = unsafe { read_volatile((inode as *const u8).add(mode_at) as *const u16) };
    if mode & S_IFMT != S_IFSOCK {
        return None;
    }
    let flags: u32 = read(file, rodata!(OFFSETS.file_flags))?;
    if flags & O_ACCMODE == 0 {
        return None;
    }
    let (dev, ino) = watched_inode(inode)?;
    emit(kind::OPEN, dev, ino, flags)
}

/// `security_unix_may_send(struct socket *sock, struct socket *other)`: datagram sends.
#[inline(always)]
fn on_unix_may_send(other: u64) -> Option<()> {
    let sk: u64 = read(other, rodata!(OFFSETS.socket_sk))?;
    report_connect_to(sk)
}

#[lsm(hook = "file_open")]
pub fn lsm_file_open(ctx: LsmContext) -> i32 {
    let _ = on_file_open(ctx.arg::<u64>(0));
    0
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

#[fentry(function = "security_file_open")]
pub fn fentry_file_open(ctx: FEntryContext) -> u32 {
    let _ = on_file_open(ctx.arg::<u64>(0));
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

// --- open(2) with write intent (opt-in: syscall tracepoints tax every syscall) ---

#[inline(always)]
fn stash_open(filename: u64, flags: u32, dirfd: i32) -> u32 {
    if flags & O_ACCMODE == 0 {
        return 0; // read-only: not TRC-1019's write intent
    }
    // Host processes too: a container process in the host's namespaces is known only by its
    // cgroup, which user space judges (see `emit`).
    let tid = bpf_get_current_pid_tgid() as u32;
    let pending = PendingOpen {
        filename,
        flags,
        dirfd,
    };
    let _ = PENDING_OPENS.insert(&tid, &pending, 0);
    0
}

#[inline(always)]
fn finish_open(ctx: &TracePointContext, ret_offset: u32) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(pending) = (unsafe { PENDING_OPENS.get(&tid) }).copied() else {
        return 0;
    };
    let _ = PENDING_OPENS.remove(&tid);
    let ret: i64 = field::<i64, 16>(ctx, ret_offset);
    // Opening a socket file fails with ENXIO: anything else is not a socket.
    if ret != -ENXIO {
        return 0;
    }
    if !open_within_rate() {
        bump(COUNTER_OPENS_LIMITED);
        return 0;
    }
    let task = unsafe { bpf_get_current_task() };
    let Some((mnt_ns, pid_ns)) = namespaces(task) else {
        return 0;
    };
    let Some(mut entry) = reserve(kind::OPEN) else {
        return 0;
    };
    let event = entry.as_mut_ptr();
    fill_task(event, kind::OPEN, task, mnt_ns, pid_ns);
    unsafe {
        addr_of_mut!((*event).flags).write(pending.flags);
        addr_of_mut!((*event).dirfd).write(pending.dirfd);
        addr_of_mut!((*event).ret).write(ret as i32);
    }
    copy_user_path(event, pending.filename, PATH_LEN as u32);
    entry.submit(0);
    0
}

const OPEN_INTERVAL_NS: u64 = 1_000_000_000 / OPEN_RATE_PER_SEC;
const OPEN_TOLERANCE_NS: u64 = OPEN_INTERVAL_NS * OPEN_BURST;

/// Whether the current cgroup may queue another ENXIO open (GCRA: each open moves the
/// cgroup's theoretical arrival time one interval on; more than a burst ahead of now is over
/// the rate). Unsynchronised across CPUs: the bound is approximate, which is all it needs.
#[inline(always)]
fn open_within_rate() -> bool {
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    let now = unsafe { bpf_ktime_get_ns() };
    match OPEN_LIMITS.get_ptr_mut(&cgroup) {
        Some(tat) => {
            let next = unsafe { *tat }.max(now);
            if next - now >= OPEN_TOLERANCE_NS {
                return false;
            }
            unsafe { *tat = next + OPEN_INTERVAL_NS };
            true
        }
        None => {
            let _ = OPEN_LIMITS.insert(&cgroup, &(now + OPEN_INTERVAL_NS), 0);
            true
        }
    }
}

/// A tracepoint record field at `offset` (from tracefs). The verifier accepts a direct load
/// from the record only at a constant offset, so the layout the programs were built against
/// (`USUAL`, this project's kernels) is read directly, and any other offset the kernel's
/// format file gives through a helper (correct, ~60 ns slower). `offset` is a frozen
/// `.rodata` value, so the verifier drops the branch not taken.
#[inline(always)]
fn field<T: Copy + Default, const USUAL: usize>(ctx: &TracePointContext, offset: u32) -> T {
    let record = ctx.as_ptr() as *const u8;
    if offset as usize == USUAL {
        unsafe { read_volatile(record.add(USUAL) as *const T) }
    } else {
        unsafe { bpf_probe_read_kernel(record.add(offset as usize) as *const T) }
            .unwrap_or_default()
    }
}

#[tracepoint(category = "syscalls", name = "sys_enter_openat")]
pub fn enter_openat(ctx: TracePointContext) -> u32 {
    let dirfd: i64 = field::<i64, 16>(&ctx, rodata!(FIELDS.openat_dfd));
    let filename: u64 = field::<u64, 24>(&ctx, rodata!(FIELDS.openat_filename));
    let flags: i64 = field::<i64, 32>(&ctx, rodata!(FIELDS.openat_flags));
    stash_open(filename, flags as u32, dirfd as i32)
}

#[tracepoint(category = "syscalls", name = "sys_enter_open")]
pub fn enter_open(ctx: TracePointContext) -> u32 {
    let filename: u64 = field::<u64, 16>(&ctx, rodata!(FIELDS.open_filename));
    let flags: i64 = field::<i64, 24>(&ctx, rodata!(FIELDS.open_flags));
    stash_open(filename, flags as u32, -100)
}

#[tracepoint(category = "syscalls", name = "sys_enter_openat2")]
pub fn enter_openat2(ctx: TracePointContext) -> u32 {
    let dirfd: i64 = field::<i64, 16>(&ctx, rodata!(FIELDS.openat2_dfd));
    let filename: u64 = field::<u64, 24>(&ctx, rodata!(FIELDS.openat2_filename));
    let how: u64 = field::<u64, 32>(&ctx, rodata!(FIELDS.openat2_how));
    // struct open_how starts with `__u64 flags`.
    let flags: u64 = unsafe { bpf_probe_read_user(how as *const u64) }.unwrap_or(0);
    stash_open(filename, flags as u32, dirfd as i32)
}

#[tracepoint(category = "syscalls", name = "sys_exit_openat")]
pub fn exit_openat(ctx: TracePointContext) -> u32 {
    finish_open(&ctx, rodata!(FIELDS.exit_openat_ret))
}

#[tracepoint(category = "syscalls", name = "sys_exit_open")]
pub fn exit_open(ctx: TracePointContext) -> u32 {
    finish_open(&ctx, rodata!(FIELDS.exit_open_ret))
}

#[tracepoint(category = "syscalls", name = "sys_exit_openat2")]
pub fn exit_openat2(ctx: TracePointContext) -> u32 {
    finish_open(&ctx, rodata!(FIELDS.exit_openat2_ret))
}

// --- attribution: new cgroups ---

#[tracepoint(category = "cgroup", name = "cgroup_mkdir")]
pub fn cgroup_mkdir(ctx: TracePointContext) -> u32 {
    let root: i32 = field::<i32, 8>(&ctx, rodata!(FIELDS.mkdir_root));
    if root != 0 {
        return 0; // a cgroup v1 hierarchy: ids there are another numbering
    }
    let id: u64 = field::<u64, 16>(&ctx, rodata!(FIELDS.mkdir_id));
    let data_loc: u32 = field::<u32, 24>(&ctx, rodata!(FIELDS.mkdir_path));
    let Some(mut entry) = reserve(kind::CGROUP_MKDIR) else {
        return 0;
    };
    let event = entry.as_mut_ptr();
    unsafe {
        core::ptr::write_bytes(
            event as *mut u8,
            0,
            core::mem::size_of::<Event>() - PATH_LEN,
        );
        addr_of_mut!((*event).kind).write(kind::CGROUP_MKDIR);
        addr_of_mut!((*event).cgroup_id).write(id);
        let dst = addr_of_mut!((*event).path) as *mut u8;
        let src = (ctx.as_ptr() as *const u8).add((data_loc & 0xffff) as usize);
        let n = bpf_probe_read_kernel_str(dst.cast(), PATH_LEN as u32, src.cast());
        addr_of_mut!((*event).path_len).write(if n > 0 { (n - 1) as u32 } else { 0 });
    }
    entry.submit(0);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
