//! The `lsm` and `fentry` backends: the same decisions made on the kernel's security hooks,
//! which see every open and connect without taxing other syscalls. `lsm` attaches BPF LSM
//! programs to `file_open`, `unix_stream_connect` and `unix_may_send`; `fentry` attaches
//! trampolines to the `security_*` functions behind them. Both need BTF and are refused
//! (EPERM) by kernels that lack BPF LSM or trampolines; auto-selection then moves on.
use anyhow::anyhow;
use aya::{
    programs::{FEntry, Lsm},
    Btf, Ebpf,
};

use super::tracepoint::attach_tracepoint;

const LSM_HOOKS: &[(&str, &str)] = &[
    ("lsm_file_open", "file_open"),
    ("lsm_unix_stream_connect", "unix_stream_connect"),
    ("lsm_unix_may_send", "unix_may_send"),
];

const FENTRY_FUNCTIONS: &[(&str, &str)] = &[
    ("fentry_file_open", "security_file_open"),
    ("fentry_unix_stream_connect", "security_unix_stream_connect"),
    ("fentry_unix_may_send", "security_unix_may_send"),
];

fn kernel_btf() -> anyhow::Result<Btf> {
    Btf::from_sys_fs().map_err(|e| anyhow!("reading kernel BTF for hook attachment: {e}"))
}

/// LSM programs load and attach on a kernel built with BPF LSM even when it is not in the
/// active list, and then never run: where the list is readable, `bpf` must be in it. Where it
/// is not readable (securityfs not mounted), loading decides.
fn bpf_lsm_active() -> anyhow::Result<()> {
    let Ok(active) = std::fs::read_to_string("/sys/kernel/security/lsm") else {
        return Ok(());
    };
    if active.split(',').any(|l| l.trim() == "bpf") {
        Ok(())
    } else {
        Err(anyhow!(
            "the BPF LSM is not active (/sys/kernel/security/lsm reads {:?}; boot with lsm=...,bpf)",
            active.trim()
        ))
    }
}

pub fn attach_lsm(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    bpf_lsm_active()?;
    let btf = kernel_btf()?;
    for (program, hook) in LSM_HOOKS {
        let prog: &mut Lsm = ebpf
            .program_mut(program)
            .ok_or_else(|| anyhow!("the eBPF object has no program {program}"))?
            .try_into()?;
        prog.load(hook, &btf)
            .map_err(|e| anyhow!("the kernel refused LSM program {program}: {e}"))?;
        prog.attach()
            .map_err(|e| anyhow!("attaching {program} to LSM hook {hook} failed: {e}"))?;
    }
    attach_tracepoint(ebpf, "cgroup_mkdir", "cgroup", "cgroup_mkdir")
}

pub fn attach_fentry(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    let btf = kernel_btf()?;
    for (program, function) in FENTRY_FUNCTIONS {
        let prog: &mut FEntry = ebpf
            .program_mut(program)
            .ok_or_else(|| anyhow!("the eBPF object has no program {program}"))?
            .try_into()?;
        prog.load(function, &btf)
            .map_err(|e| anyhow!("the kernel refused fentry program {program}: {e}"))?;
        prog.attach()
            .map_err(|e| anyhow!("attaching {program} to {function} failed: {e}"))?;
    }
    attach_tracepoint(ebpf, "cgroup_mkdir", "cgroup", "cgroup_mkdir")
}
