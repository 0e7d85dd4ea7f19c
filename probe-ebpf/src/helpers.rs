//! What every hook family shares: reading kernel memory and `.rodata`, tracepoint record
//! fields, the watched-socket lookup, the caller's identity, and putting an event on the ring
//! its kind goes to. All `#[inline(always)]`: the verifier then sees each program as one
//! function, with the `.rodata` offsets as constants.
use core::ptr::{addr_of_mut, read_volatile};

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_get_current_task_btf, bpf_get_current_uid_gid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        generated::{bpf_get_current_comm, bpf_probe_read_user_str, bpf_task_pt_regs},
    },
    maps::ring_buf::RingBufEntry,
    programs::TracePointContext,
    EbpfContext,
};
use probe_common::{
    kind, Event, WatchedKey, COMM_LEN, COUNTER_CONNECT_RINGBUF_DROPS, COUNTER_MATCHED,
    COUNTER_RINGBUF_DROPS, PATH_LEN,
};

use crate::maps::{CONNECTS, COUNTERS, EVENTS, WATCHED, WATCHED_INODES};

/// Longest `sun_path` (`sizeof(sockaddr_un.sun_path)`).
const SUN_PATH_LEN: u32 = 108;

/// Reads a `.rodata` member of a global in [`crate::maps`]; the verifier sees the frozen
/// value as a constant.
macro_rules! rodata {
    ($global:ident . $field:ident) => {
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!($crate::maps::$global.$field)) }
    };
}
pub(crate) use rodata;

#[inline(always)]
pub(crate) fn read<T>(base: u64, offset: u32) -> Option<T> {
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T).ok() }
}

#[inline(always)]
pub(crate) fn bump(counter: u32) {
    if let Some(value) = COUNTERS.get_ptr_mut(counter) {
        unsafe { *value += 1 };
    }
}

/// A tracepoint record field at `offset` (from tracefs). The verifier accepts a direct load
/// from the record only at a constant offset, so the layout the programs were built against
/// (`USUAL`, this project's kernels) is read directly, and any other offset the kernel's
/// format file gives through a helper (correct, ~60 ns slower). `offset` is a frozen
/// `.rodata` value, so the verifier drops the branch not taken.
#[inline(always)]
pub(crate) fn field<T: Copy + Default, const USUAL: usize>(
    ctx: &TracePointContext,
    offset: u32,
) -> T {
    let record = ctx.as_ptr() as *const u8;
    if offset as usize == USUAL {
        unsafe { read_volatile(record.add(USUAL) as *const T) }
    } else {
        unsafe { bpf_probe_read_kernel(record.add(offset as usize) as *const T) }
            .unwrap_or_default()
    }
}

/// Mount- and pid-namespace inums of a task.
#[inline(always)]
pub(crate) fn namespaces(task: u64) -> Option<(u32, u32)> {
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
pub(crate) fn fill_task(event: *mut Event, kind: u32, task: u64, mnt_ns: u32, pid_ns: u32) {
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
        addr_of_mut!((*event).action).write(probe_common::action::NONE);
        addr_of_mut!((*event).reserved).write(0);
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

/// Copies a user-space string into the event's path and sets `path_len` (without the NUL).
#[inline(always)]
pub(crate) fn copy_user_path(event: *mut Event, src: u64, max: u32) {
    unsafe {
        let dst = addr_of_mut!((*event).path) as *mut u8;
        let n = bpf_probe_read_user_str(dst.cast(), max, src as *const _);
        addr_of_mut!((*event).path_len).write(if n > 0 { (n - 1) as u32 } else { 0 });
    }
}

/// (device, inode) of `inode` if it is a watched socket file.
#[inline(always)]
pub(crate) fn watched_inode(inode: u64) -> Option<(u64, u64)> {
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

/// Emits an event for the current task. No host filter here: whether the caller is in a
/// container is decided in user space by its cgroup first, and a container process may have
/// joined the host's namespaces (hostPID + nsenter). Only touches of watched sockets get
/// here, so host traffic on the ring buffer is bounded by connects to runtime sockets.
#[inline(always)]
pub(crate) fn emit(kind: u32, dev: u64, ino: u64, flags: u32, action: u32) -> Option<()> {
    let task = unsafe { bpf_get_current_task() };
    let (mnt_ns, pid_ns) = namespaces(task)?;
    let mut entry = reserve(kind)?;
    let event = entry.as_mut_ptr();
    fill_task(event, kind, task, mnt_ns, pid_ns);
    unsafe {
        addr_of_mut!((*event).dev).write(dev);
        addr_of_mut!((*event).ino).write(ino);
        addr_of_mut!((*event).flags).write(flags);
        addr_of_mut!((*event).action).write(action);
    }
    requested_path(event, kind == kind::CONNECT);
    entry.submit(0);
    Some(())
}

/// Room for one event on the ring its kind goes to; a full ring is counted, never silent.
/// (`kind` is a constant at every call site, so the branch folds away.)
#[inline(always)]
pub(crate) fn reserve(kind: u32) -> Option<RingBufEntry<Event>> {
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
    let stack_offset = rodata!(OFFSETS.task_stack);
    let regs = if stack_offset == 0 {
        (unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) }) as u64
    } else {
        // Before bpf_task_pt_regs (5.15): the registers sit at the top of the task's kernel
        // stack. The verifier explores only this branch there (the offset is a constant of
        // frozen .rodata), so the helpers it lacks are never checked.
        let task = unsafe { bpf_get_current_task() };
        match read::<u64>(task, stack_offset) {
            Some(stack) if stack != 0 => stack + rodata!(OFFSETS.stack_pt_regs) as u64,
            _ => return,
        }
    };
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
