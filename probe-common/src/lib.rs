//! Plain `#[repr(C)]` types shared by the eBPF programs (kernel side) and the node probe
//! (user side): the ring-buffer event, the watched-socket map entries and the load-time
//! configuration the probe writes into the programs' `.rodata`.
#![no_std]

/// Bytes of a requested path carried in an event (sun_path is 108; open paths can be longer).
pub const PATH_LEN: usize = 256;
/// Kernel `TASK_COMM_LEN`.
pub const COMM_LEN: usize = 16;
/// Most watched sockets one probe tracks at once.
pub const MAX_WATCHED: u32 = 256;

/// What an [`Event`] reports.
pub mod kind {
    /// A process connected to a watched socket's listening socket (TRC-1019 trigger b).
    pub const CONNECT: u32 = 1;
    /// A process opened a socket-like file with write intent and got ENXIO (TRC-1019 trigger a);
    /// the probe resolves whether it was a watched socket.
    pub const OPEN: u32 = 2;
    /// A cgroup directory was created on the cgroup v2 hierarchy (attribution, not a finding).
    pub const CGROUP_MKDIR: u32 = 3;
}

/// The operation an [`Event`] of kind [`kind::CONNECT`] or [`kind::OPEN`] reports: the
/// kernel's vocabulary, which the probe decodes with `TryFrom` (other kinds are refused) and
/// the API crate converts into its own with `From`. The kernel keeps writing the plain
/// `u32` codes; this enum only names them on the user side.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    Connect = kind::CONNECT,
    Open = kind::OPEN,
}

impl TryFrom<u32> for Operation {
    /// The code that names no operation.
    type Error = u32;

    fn try_from(code: u32) -> Result<Self, u32> {
        match code {
            kind::CONNECT => Ok(Operation::Connect),
            kind::OPEN => Ok(Operation::Open),
            other => Err(other),
        }
    }
}

/// One record on the ring buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Event {
    pub kind: u32,
    /// open(2) flags for `OPEN`; 0 otherwise.
    pub flags: u32,
    /// Thread id (kernel `pid`).
    pub tid: u32,
    /// Process id (kernel `tgid`).
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub mnt_ns: u32,
    pub pid_ns: u32,
    /// Syscall result where one is known (`OPEN`: the negative errno).
    pub ret: i32,
    /// openat(2) directory fd (`AT_FDCWD` = -100 for absolute/cwd-relative).
    pub dirfd: i32,
    /// Bytes of `path` that hold the requested path (0 = unknown).
    pub path_len: u32,
    /// What the kernel did about it (an [`action`] code).
    pub action: u32,
    /// Zero (keeps `cgroup_id` 8-aligned without implicit padding).
    pub reserved: u32,
    /// cgroup v2 id of the task (`CGROUP_MKDIR`: the new cgroup's id).
    pub cgroup_id: u64,
    /// `bpf_ktime_get_ns` at the hook: lets the probe measure detection latency.
    pub ktime_ns: u64,
    /// When the calling process started (its thread-group leader's `start_boottime`, ns since
    /// boot; 0 = unknown): with the pid, it names one process even after the pid is reused.
    pub start_ns: u64,
    /// Kernel-encoded device (`major << 20 | minor`) of the watched socket file.
    pub dev: u64,
    /// Inode of the watched socket file (0 for `OPEN`: resolved in user space).
    pub ino: u64,
    pub comm: [u8; COMM_LEN],
    /// Requested path (connect: the `sun_path` the caller passed; open: the filename;
    /// cgroup mkdir: the cgroup path). NUL-terminated when shorter than `PATH_LEN`.
    pub path: [u8; PATH_LEN],
}

/// What the kernel did about a touch of a watched socket ([`Event::action`]).
pub mod action {
    /// Let through (no Enforce verdict for the caller's cgroup, or enforcement is off).
    pub const NONE: u32 = 0;
    /// The hook returned `-EPERM`: the syscall failed (`lsm`, `fentry` with `fmod_ret`).
    pub const REFUSED: u32 = 1;
    /// The caller was sent SIGKILL in its own context, before the syscall returned to it
    /// (`tracepoint`, `kprobe`: hooks that cannot change a return value).
    pub const KILLED: u32 = 2;
}

/// Enforcement verdicts, the values of the `VERDICTS` map (keyed by cgroup v2 id). The kernel
/// judges a caller by its own cgroup's entry, else by the nearest ancestor holding a subtree
/// verdict ([`verdict::ALLOW`] or [`verdict::BLOCK`]); no entry at all means a cgroup the
/// probe has not attributed yet, which is refused while enforcing.
pub mod verdict {
    /// This cgroup and every cgroup below it may use runtime sockets (an exempt or
    /// out-of-scope container; the probe itself).
    pub const ALLOW: u32 = 1;
    /// This cgroup only (a host cgroup: `/`, `system.slice`, the kubelet's and the runtimes'):
    /// a container cgroup created below it is not covered until it is attributed.
    pub const ALLOW_EXACT: u32 = 2;
    /// This cgroup and every cgroup below it are refused (a container under Enforce).
    pub const BLOCK: u32 = 3;
    /// This cgroup only, like `ALLOW_EXACT`, and a cgroup below it without a verdict is
    /// refused even while no probe runs: where the kubelet or a runtime makes containers
    /// (`kubepods`, `/docker`), in which no host service lives.
    pub const ALLOW_EXACT_GUARD: u32 = 4;
}

/// Most cgroups with a verdict at once.
pub const MAX_VERDICTS: u32 = 65_536;
/// How many ancestors the kernel climbs looking for a subtree verdict.
pub const MAX_CGROUP_DEPTH: u32 = 16;
/// A cgroup with no verdict is refused only while the probe's heartbeat (written every
/// housekeeping tick, 0.5 s) is younger than this: with no probe attributing new cgroups, one
/// may be a restarted host service (the kubelet, recreated with a new id) as well as a new
/// container, and refusing it could take the node down.
pub const HEARTBEAT_STALE_NS: u64 = 15_000_000_000;

/// Key of the watched-socket map: the socket file's identity. Inode numbers repeat across
/// file systems, so the device is part of the key.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WatchedKey {
    /// Kernel-encoded device (`major << 20 | minor`, the kernel's `dev_t`, not `st_dev`).
    pub dev: u64,
    pub ino: u64,
}

/// Byte offsets of the kernel struct members the programs read, resolved from the running
/// kernel's BTF at load time (Rust eBPF has no CO-RE relocations).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `sock.__sk_common.skc_state`
    pub sock_state: u32,
    /// `sock.__sk_common.skc_family`
    pub sock_family: u32,
    /// `unix_sock.path.dentry`
    pub unix_sock_path_dentry: u32,
    /// `dentry.d_inode`
    pub dentry_inode: u32,
    /// `inode.i_ino`
    pub inode_ino: u32,
    /// `inode.i_sb`
    pub inode_sb: u32,
    /// `super_block.s_dev`
    pub sb_dev: u32,
    /// `task_struct.real_parent`
    pub task_real_parent: u32,
    /// `task_struct.tgid`
    pub task_tgid: u32,
    /// `task_struct.nsproxy`
    pub task_nsproxy: u32,
    /// `nsproxy.mnt_ns`
    pub nsproxy_mnt_ns: u32,
    /// `nsproxy.pid_ns_for_children`
    pub nsproxy_pid_ns: u32,
    /// `mnt_namespace.ns.inum`
    pub mnt_ns_inum: u32,
    /// `pid_namespace.ns.inum`
    pub pid_ns_inum: u32,
    /// `pt_regs` member holding the syscall number (x86-64 `orig_ax`); 0 disables path capture.
    pub regs_syscall_nr: u32,
    /// `pt_regs` member holding the syscall's second argument (x86-64 `si`).
    pub regs_arg2: u32,
    /// `pt_regs` member holding the syscall's first argument (x86-64 `di`).
    pub regs_arg1: u32,
    /// `file.f_inode`
    pub file_inode: u32,
    /// `file.f_flags`
    pub file_flags: u32,
    /// `inode.i_mode`
    pub inode_mode: u32,
    /// `socket.sk`
    pub socket_sk: u32,
    /// `task_struct.group_leader`
    pub task_group_leader: u32,
    /// `task_struct.start_boottime` (0: unknown, the start time is not read)
    pub task_start_boottime: u32,
    /// `task_struct.stack`, on kernels without the `bpf_task_pt_regs` helper (before 5.15);
    /// 0 where the helper exists and the programs use it.
    pub task_stack: u32,
    /// Where the syscall's saved registers sit from the base of the task's kernel stack
    /// (THREAD_SIZE minus `sizeof(struct pt_regs)`); used only with `task_stack`.
    pub stack_pt_regs: u32,
    /// `task_struct.cgroups`
    pub task_cgroups: u32,
    /// `css_set.dfl_cgrp`
    pub css_set_dfl_cgrp: u32,
    /// `cgroup.kn`
    pub cgroup_kn: u32,
    /// `kernfs_node.id` (the cgroup v2 id)
    pub kernfs_node_id: u32,
    /// `cgroup.self.parent`: the parent's `self` css, which is the parent `cgroup` itself
    /// less [`KernelOffsets::cgroup_self`].
    pub cgroup_parent: u32,
    /// `cgroup.self`
    pub cgroup_self: u32,
}

/// Load-time settings written into `.rodata`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeConfig {
    /// The architecture's `connect` syscall number (x86-64: 42).
    pub connect_syscall_nr: u32,
    /// `open` (x86-64: 2; none elsewhere: u32::MAX), `openat` (257) and `openat2` (437).
    pub open_syscall_nr: u32,
    pub openat_syscall_nr: u32,
    pub openat2_syscall_nr: u32,
}

/// Byte offsets of the tracepoint record fields the programs read, taken from the kernel's
/// tracefs `format` files at start (a record layout is not a stable ABI). 0 where a
/// tracepoint is not used.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordFields {
    /// `syscalls:sys_enter_openat`: `dfd`, `filename`, `flags`.
    pub openat_dfd: u32,
    pub openat_filename: u32,
    pub openat_flags: u32,
    /// `syscalls:sys_enter_open`: `filename`, `flags`.
    pub open_filename: u32,
    pub open_flags: u32,
    /// `syscalls:sys_enter_openat2`: `dfd`, `filename`, `how`.
    pub openat2_dfd: u32,
    pub openat2_filename: u32,
    pub openat2_how: u32,
    /// `ret` of `syscalls:sys_exit_openat`, `sys_exit_open`, `sys_exit_openat2`.
    pub exit_openat_ret: u32,
    pub exit_open_ret: u32,
    pub exit_openat2_ret: u32,
    /// `cgroup:cgroup_mkdir`: `root`, `id`, `path` (a `__data_loc`).
    pub mkdir_root: u32,
    pub mkdir_id: u32,
    pub mkdir_path: u32,
}

/// Per cgroup, opens that fail with ENXIO are queued at most at this sustained rate, after
/// a burst of [`OPEN_BURST`]: one container's flood cannot crowd out the others' opens.
pub const OPEN_RATE_PER_SEC: u64 = 100;
pub const OPEN_BURST: u64 = 200;

// Indexes into the `COUNTERS` per-CPU array.
/// Reservation failures on the `EVENTS` ring (opens, cgroup events).
pub const COUNTER_RINGBUF_DROPS: u32 = 0;
/// Touches of a watched socket seen in the kernel.
pub const COUNTER_MATCHED: u32 = 1;
/// Reservation failures on the `CONNECTS` ring.
pub const COUNTER_CONNECT_RINGBUF_DROPS: u32 = 2;
/// ENXIO opens not queued because their cgroup exceeded its rate.
pub const COUNTER_OPENS_LIMITED: u32 = 3;
/// Touches refused or stopped by an Enforce verdict.
pub const COUNTER_BLOCKED: u32 = 4;
pub const COUNTERS_LEN: u32 = 5;

// Layout assertions. The eBPF object (target bpfel) writes these types and the probe (the
// host's target) reads them, or the other way round, each compiled from this file on its own:
// a layout that differs between the two, or that changes unnoticed, would have one side read
// the other's bytes at the wrong place. Both builds evaluate these at compile time, so such a
// change fails to compile instead. The numbers are the ABI: change them only together with the
// struct, knowing that both sides are rebuilt.

/// Asserts size, alignment and every field's offset of a shared type. The pattern without
/// `..` in `every_field_listed` makes leaving out a field (or adding one to the struct but not
/// here) a compile error too (rustc words it as "pattern requires `..`").
macro_rules! assert_layout {
    ($ty:ident, size = $size:literal, align = $align:literal, { $($field:ident: $offset:literal),+ $(,)? }) => {
        const _: () = {
            #[allow(dead_code)]
            fn every_field_listed(value: &$ty) {
                let $ty { $($field: _),+ } = value;
            }
            assert!(core::mem::size_of::<$ty>() == $size);
            assert!(core::mem::align_of::<$ty>() == $align);
            $(assert!(core::mem::offset_of!($ty, $field) == $offset);)+
        };
    };
}

assert_layout!(Event, size = 368, align = 8, {
    kind: 0,
    flags: 4,
    tid: 8,
    pid: 12,
    ppid: 16,
    uid: 20,
    gid: 24,
    mnt_ns: 28,
    pid_ns: 32,
    ret: 36,
    dirfd: 40,
    path_len: 44,
    action: 48,
    reserved: 52,
    cgroup_id: 56,
    ktime_ns: 64,
    start_ns: 72,
    dev: 80,
    ino: 88,
    comm: 96,
    path: 112,
});
// `path` is last: the cgroup_mkdir program zeroes the `size_of::<Event>() - PATH_LEN` bytes
// before it.
const _: () =
    assert!(core::mem::offset_of!(Event, path) + PATH_LEN == core::mem::size_of::<Event>());

assert_layout!(WatchedKey, size = 16, align = 8, { dev: 0, ino: 8 });

assert_layout!(KernelOffsets, size = 124, align = 4, {
    sock_state: 0,
    sock_family: 4,
    unix_sock_path_dentry: 8,
    dentry_inode: 12,
    inode_ino: 16,
    inode_sb: 20,
    sb_dev: 24,
    task_real_parent: 28,
    task_tgid: 32,
    task_nsproxy: 36,
    nsproxy_mnt_ns: 40,
    nsproxy_pid_ns: 44,
    mnt_ns_inum: 48,
    pid_ns_inum: 52,
    regs_syscall_nr: 56,
    regs_arg2: 60,
    regs_arg1: 64,
    file_inode: 68,
    file_flags: 72,
    inode_mode: 76,
    socket_sk: 80,
    task_group_leader: 84,
    task_start_boottime: 88,
    task_stack: 92,
    stack_pt_regs: 96,
    task_cgroups: 100,
    css_set_dfl_cgrp: 104,
    cgroup_kn: 108,
    kernfs_node_id: 112,
    cgroup_parent: 116,
    cgroup_self: 120,
});

assert_layout!(ProbeConfig, size = 16, align = 4, {
    connect_syscall_nr: 0,
    open_syscall_nr: 4,
    openat_syscall_nr: 8,
    openat2_syscall_nr: 12,
});

assert_layout!(RecordFields, size = 56, align = 4, {
    openat_dfd: 0,
    openat_filename: 4,
    openat_flags: 8,
    open_filename: 12,
    open_flags: 16,
    openat2_dfd: 20,
    openat2_filename: 24,
    openat2_how: 28,
    exit_openat_ret: 32,
    exit_open_ret: 36,
    exit_openat2_ret: 40,
    mkdir_root: 44,
    mkdir_id: 48,
    mkdir_path: 52,
});

#[cfg(feature = "user")]
mod pod_impls {
    // SAFETY: plain-old-data, `#[repr(C)]`, every bit pattern valid.
    unsafe impl aya::Pod for super::WatchedKey {}
    unsafe impl aya::Pod for super::RecordFields {}
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::ProbeConfig {}
}
