//! The kernel's half of enforcement: whether the current task may touch a watched socket.
//! User space writes verdicts by cgroup id (`VERDICTS`) and turns enforcement on (`ENFORCE`);
//! the hooks ask [`refuse_current`] only after a watched socket matched, so unrelated
//! syscalls never run this code.
use aya_ebpf::helpers::{
    bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns, generated::bpf_send_signal,
};
use probe_common::{action, verdict, COUNTER_BLOCKED, HEARTBEAT_STALE_NS, MAX_CGROUP_DEPTH};

use crate::{
    helpers::{bump, read, rodata},
    maps::{ENFORCE, HEARTBEAT, REFUSE_NEXT, VERDICTS},
};

/// Whether the current task's touch of a watched socket is refused: enforcement is on, and
/// its cgroup's verdict, or the nearest ancestor's subtree verdict, is `BLOCK` — or no cgroup
/// on the way up has one (a cgroup not attributed yet) while a probe runs to attribute it.
/// Walks `task->cgroups->dfl_cgrp` and `cgroup.self.parent`, so a cgroup a container made
/// inside its own is judged as that container.
#[inline(always)]
pub(crate) fn refuse_current() -> bool {
    match ENFORCE.get(0) {
        Some(on) if *on != 0 => {}
        _ => return false,
    }
    let task = unsafe { bpf_get_current_task() };
    let Some(css_set) = read::<u64>(task, rodata!(OFFSETS.task_cgroups)) else {
        return probe_alive();
    };
    let Some(mut cgroup) = read::<u64>(css_set, rodata!(OFFSETS.css_set_dfl_cgrp)) else {
        return probe_alive();
    };
    for depth in 0..MAX_CGROUP_DEPTH {
        if cgroup == 0 {
            break;
        }
        let id = read::<u64>(cgroup, rodata!(OFFSETS.cgroup_kn))
            .and_then(|kn| read::<u64>(kn, rodata!(OFFSETS.kernfs_node_id)));
        if let Some(id) = id {
            match unsafe { VERDICTS.get(&id) }.copied() {
                Some(verdict::BLOCK) => return true,
                Some(verdict::ALLOW) => return false,
                Some(verdict::ALLOW_EXACT | verdict::ALLOW_EXACT_GUARD) if depth == 0 => {
                    return false
                }
                // Not attributed yet, below where containers are made: refused even while
                // no probe runs.
                Some(verdict::ALLOW_EXACT_GUARD) => return true,
                _ => {}
            }
        }
        let parent_css: u64 = read(cgroup, rodata!(OFFSETS.cgroup_parent)).unwrap_or(0);
        cgroup = if parent_css == 0 {
            0
        } else {
            parent_css - rodata!(OFFSETS.cgroup_self) as u64
        };
    }
    // Nothing on the way up: not attributed yet.
    probe_alive()
}

/// Whether a probe attributes new cgroups now (its heartbeat is fresh): only then is a cgroup
/// without a verdict refused (see `probe_common::HEARTBEAT_STALE_NS`).
#[inline(always)]
fn probe_alive() -> bool {
    let Some(beat) = HEARTBEAT.get(0).copied() else {
        return false;
    };
    let now = unsafe { bpf_ktime_get_ns() };
    now.wrapping_sub(beat) < HEARTBEAT_STALE_NS
}

/// How a hook carries out a refusal.
#[derive(Clone, Copy)]
pub(crate) enum Refusal {
    /// An LSM program: its return value is the hook's (`-EPERM`).
    Return,
    /// A `fentry` program: the `fmod_ret` program on the same function returns `-EPERM`.
    HandOff,
    /// A hook that cannot change the outcome (tracepoint, kprobe): SIGKILL to the caller,
    /// taken before the syscall returns to user space.
    Kill,
}

/// Applies the verdict for the current task; returns the [`action`] code for its event.
#[inline(always)]
pub(crate) fn enforce(how: Refusal) -> u32 {
    if !refuse_current() {
        return action::NONE;
    }
    bump(COUNTER_BLOCKED);
    match how {
        Refusal::Return => action::REFUSED,
        Refusal::HandOff => {
            let id = bpf_get_current_pid_tgid();
            match REFUSE_NEXT.insert(&id, &1, 0) {
                Ok(()) => action::REFUSED,
                Err(_) => action::NONE,
            }
        }
        Refusal::Kill => {
            if unsafe { bpf_send_signal(SIGKILL) } == 0 {
                action::KILLED
            } else {
                action::NONE
            }
        }
    }
}

const SIGKILL: u32 = 9;

/// An LSM program's return value for `action`: `-EPERM` when it refused, else 0. Both are
/// loaded from frozen `.rodata` with volatile loads, which LLVM can neither fold nor move out
/// of their branches, so the verifier sees a known constant on every path. With literals,
/// LLVM folds "refused ? -EPERM : 0" into `r0 = -(cond)` (or reuses the action's register for
/// the 0), whose value the 6.12 verifier cannot bound, and it rejects an LSM program whose
/// return value it cannot prove is in [-4095, 0].
#[inline(always)]
pub(crate) fn lsm_return(action: u32) -> i32 {
    use core::ptr::{addr_of, read_volatile};
    if action == action::REFUSED {
        unsafe { read_volatile(addr_of!(crate::maps::LSM_REFUSAL)) }
    } else {
        unsafe { read_volatile(addr_of!(crate::maps::LSM_ALLOW)) }
    }
}
