//! Every map and every `.rodata` global of the object, in one place: user space opens maps
//! and overrides globals by these names (`probe/src/backend/mod.rs`), so renaming one here
//! breaks loading.
//!
//! Connects have a ring buffer of their own (`CONNECTS`): opens and cgroup events share
//! `EVENTS`, and ENXIO opens are rate-limited per cgroup, so no container can starve another's
//! connects (or opens) by flooding. Tracepoint record offsets come from tracefs via `FIELDS`.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use probe_common::{
    KernelOffsets, ProbeConfig, RecordFields, WatchedKey, COUNTERS_LEN, MAX_VERDICTS, MAX_WATCHED,
};

/// Filled by the probe at load time from the running kernel's BTF.
#[no_mangle]
pub static OFFSETS: KernelOffsets = KernelOffsets {
    sock_state: 0,
    sock_family: 0,
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
    task_stack: 0,
    stack_pt_regs: 0,
    task_cgroups: 0,
    css_set_dfl_cgrp: 0,
    cgroup_kn: 0,
    kernfs_node_id: 0,
    cgroup_parent: 0,
    cgroup_self: 0,
};

#[no_mangle]
pub static CONFIG: ProbeConfig = ProbeConfig {
    connect_syscall_nr: 0,
    open_syscall_nr: 0,
    openat_syscall_nr: 0,
    openat2_syscall_nr: 0,
};

/// Filled by the probe at load time from the kernel's tracefs `format` files.
#[no_mangle]
pub static FIELDS: RecordFields = RecordFields {
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

/// What an LSM program returns to refuse (`-EPERM`) and to let through (0): `.rodata` values
/// read with volatile loads (see `enforce::lsm_return`), not literals.
#[no_mangle]
pub static LSM_REFUSAL: i32 = -1;
#[no_mangle]
pub static LSM_ALLOW: i32 = 0;

/// Opens and cgroup events.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Connects only: nothing else can fill it.
#[map]
pub static CONNECTS: RingBuf = RingBuf::with_byte_size(2 << 20, 0);

/// Watched socket files by (device, inode). Kept current by the probe (re-armed on restart).
#[map]
pub static WATCHED: HashMap<WatchedKey, u32> = HashMap::with_max_entries(MAX_WATCHED, 0);

/// Inode numbers in `WATCHED` (value: how many entries have it): one lookup turns away
/// nearly every unwatched socket before the device is read.
#[map]
pub static WATCHED_INODES: HashMap<u64, u32> = HashMap::with_max_entries(MAX_WATCHED, 0);

/// Per cgroup id, the theoretical arrival time (ns) of its next ENXIO open (a GCRA limiter).
#[map]
pub static OPEN_LIMITS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4096, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS_LEN, 0);

/// An open(2) with write intent between syscall entry and exit, keyed by thread id.
/// Kernel-side only: user space never reads this map.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingOpen {
    pub filename: u64,
    pub flags: u32,
    pub dirfd: i32,
}

#[map]
pub static PENDING_OPENS: LruHashMap<u32, PendingOpen> = LruHashMap::with_max_entries(8192, 0);

// --- enforcement (see `crate::enforce`) ---

/// Slot 0: 1 while this node enforces, 0 while it only reports. A map, not `.rodata`, so the
/// probe switches it without reloading, and pinned programs keep the last value it wrote.
#[map]
pub static ENFORCE: Array<u32> = Array::with_max_entries(1, 0);

/// Slot 0: `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the probe's last housekeeping tick while
/// it enforces (see `probe_common::HEARTBEAT_STALE_NS`).
#[map]
pub static HEARTBEAT: Array<u64> = Array::with_max_entries(1, 0);

/// Verdicts by cgroup v2 id (`probe_common::verdict`), kept in sync by the probe.
#[map]
pub static VERDICTS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_VERDICTS, 0);

/// The `fentry` backend's hand-off to its `fmod_ret` programs: the `fentry` program on a
/// `security_*` function decides, and records here (by pid_tgid) a caller to refuse; the
/// `fmod_ret` program on the same function, which runs next in the same task, takes the entry
/// and returns `-EPERM`. LRU: an entry whose `fmod_ret` never ran cannot fill the map.
#[map]
pub static REFUSE_NEXT: LruHashMap<u64, u32> = LruHashMap::with_max_entries(4096, 0);
