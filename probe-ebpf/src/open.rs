//! Opens of a watched socket file with write intent (TRC-1019 trigger a), per backend:
//! - lsm, fentry and kprobe: `security_file_open` itself, where the file's inode is known, so
//!   the watched map decides in the kernel.
//! - tracepoint (opt-in `--detect-open`: syscall tracepoints tax every syscall): the
//!   `enter_open*` programs stash write-intent opens per thread, and the `exit_open*` ones
//!   report those that failed with ENXIO (what opening a socket file returns), rate-limited
//!   per cgroup; user space resolves whether the path was a watched socket.
use core::ptr::{addr_of_mut, read_volatile};

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_ktime_get_ns, bpf_probe_read_user,
    },
    macros::{fentry, kprobe, lsm, tracepoint},
    programs::{FEntryContext, LsmContext, ProbeContext, TracePointContext},
};
use probe_common::{action, kind, COUNTER_OPENS_LIMITED, OPEN_BURST, OPEN_RATE_PER_SEC, PATH_LEN};

use crate::enforce::{enforce, lsm_return, Refusal};
use crate::helpers::{
    bump, copy_user_path, emit, field, fill_task, namespaces, read, reserve, rodata, watched_inode,
};
use crate::maps::{PendingOpen, OPEN_LIMITS, PENDING_OPENS};

const ENXIO: i64 = 6;
const O_ACCMODE: u32 = 3;
const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;

// --- lsm and fentry backends: the security hook ---

/// `security_file_open`: a socket inode first (one read decides for nearly every open), write
/// intent next, then the watched map.
#[inline(always)]
fn on_file_open(file: u64, how: Refusal) -> Option<u32> {
    // `file` is a BTF-typed hook argument: the verifier lets us load its fields directly
    // (fault-safe), without a helper call — this is the cost every open in the system pays.
    let inode_at = rodata!(OFFSETS.file_inode) as usize;
    let inode: u64 = unsafe { read_volatile((file as *const u8).add(inode_at) as *const u64) };
    if inode == 0 {
        return None;
    }
    let mode_at = rodata!(OFFSETS.inode_mode) as usize;
    let mode: u16 = unsafe { read_volatile((inode as *const u8).add(mode_at) as *const u16) };
    on_socket_file_open(file, inode, mode, how)
}

/// The rest of `security_file_open` once the inode and its mode are read (each hook family
/// reads them its own way).
#[inline(always)]
fn on_socket_file_open(file: u64, inode: u64, mode: u16, how: Refusal) -> Option<u32> {
    if mode & S_IFMT != S_IFSOCK {
        return None;
    }
    let flags: u32 = read(file, rodata!(OFFSETS.file_flags))?;
    if flags & O_ACCMODE == 0 {
        return None;
    }
    let (dev, ino) = watched_inode(inode)?;
    let action = enforce(how);
    let _ = emit(kind::OPEN, dev, ino, flags, action);
    Some(action)
}

#[lsm(hook = "file_open")]
pub fn lsm_file_open(ctx: LsmContext) -> i32 {
    lsm_return(on_file_open(ctx.arg::<u64>(0), Refusal::Return).unwrap_or(action::NONE))
}

#[fentry(function = "security_file_open")]
pub fn fentry_file_open(ctx: FEntryContext) -> u32 {
    let _ = on_file_open(ctx.arg::<u64>(0), Refusal::HandOff);
    0
}

/// kprobe backend: the same function, where its argument is a plain register value (no BTF
/// type), so the inode and mode are read through the helper.
#[kprobe(function = "security_file_open")]
pub fn kprobe_file_open(ctx: ProbeContext) -> u32 {
    let _ = on_file_open_probed(&ctx);
    0
}

#[inline(always)]
fn on_file_open_probed(ctx: &ProbeContext) -> Option<u32> {
    let file: u64 = ctx.arg(0)?;
    let inode: u64 = read(file, rodata!(OFFSETS.file_inode))?;
    if inode == 0 {
        return None;
    }
    let mode: u16 = read(inode, rodata!(OFFSETS.inode_mode))?;
    on_socket_file_open(file, inode, mode, Refusal::Kill)
}

// --- tracepoint backend: open(2) with write intent, syscall entry to exit ---

#[inline(always)]
fn stash_open(filename: u64, flags: u32, dirfd: i32) -> u32 {
    if flags & O_ACCMODE == 0 {
        return 0; // read-only: not TRC-1019's write intent
    }
    // Host processes too: a container process in the host's namespaces is known only by its
    // cgroup, which user space judges (see `helpers::emit`).
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
