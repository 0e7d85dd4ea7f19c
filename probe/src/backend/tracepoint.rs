//! The `tracepoint` backend: loads on kernels without BPF LSM or trampolines.
//!
//! - connect: `sock:sk_data_ready` on the *listening* socket, which `unix_stream_connect`
//!   wakes in the connecting task's context. The listener is identified by its bound inode,
//!   so aliases are caught exactly at connect time, while the caller is alive. It is not a
//!   syscall tracepoint, so unrelated syscalls pay nothing.
//! - open (opt-in `--detect-open`): `sys_enter/exit_open{,at,at2}`. Syscall tracepoints put
//!   every syscall on the tracing slow path, hence opt-in (cost in the README).
//! - attribution: `cgroup:cgroup_mkdir`.
use std::path::Path;

use anyhow::anyhow;
use aya::{programs::TracePoint, Ebpf};

use super::tracefs::TRACEFS;

fn tracepoint_exists(category: &str, name: &str) -> bool {
    TRACEFS.iter().any(|root| {
        Path::new(root)
            .join("events")
            .join(category)
            .join(name)
            .exists()
    })
}

/// The backend needs the `sock:sk_data_ready` tracepoint (Linux 6.6+).
pub fn available() -> Result<(), String> {
    if !TRACEFS
        .iter()
        .any(|root| Path::new(root).join("events").exists())
    {
        return Err("tracefs is not mounted (mount -t tracefs none /sys/kernel/tracing)".into());
    }
    if !tracepoint_exists("sock", "sk_data_ready") {
        return Err(
            "the kernel has no sock:sk_data_ready tracepoint (needs Linux 6.6 or newer)".into(),
        );
    }
    Ok(())
}

/// Attaches the tracepoint programs: connect detection, attribution, and (opt-in) opens.
pub fn attach(ebpf: &mut Ebpf, detect_open: bool) -> anyhow::Result<()> {
    available().map_err(anyhow::Error::msg)?;
    attach_tracepoint(ebpf, "sk_data_ready", "sock", "sk_data_ready")?;
    attach_tracepoint(ebpf, "cgroup_mkdir", "cgroup", "cgroup_mkdir")?;
    if detect_open {
        for (prog, name) in [
            ("enter_openat", "sys_enter_openat"),
            ("exit_openat", "sys_exit_openat"),
            ("enter_openat2", "sys_enter_openat2"),
            ("exit_openat2", "sys_exit_openat2"),
            ("enter_open", "sys_enter_open"),
            ("exit_open", "sys_exit_open"),
        ] {
            if tracepoint_exists("syscalls", name) {
                attach_tracepoint(ebpf, prog, "syscalls", name)?;
            } else {
                tracing::debug!(tracepoint = name, "not on this architecture; skipped");
            }
        }
    }
    Ok(())
}

pub fn attach_tracepoint(
    ebpf: &mut Ebpf,
    program: &str,
    category: &str,
    name: &str,
) -> anyhow::Result<()> {
    let prog: &mut TracePoint = ebpf
        .program_mut(program)
        .ok_or_else(|| anyhow!("the eBPF object has no program {program}"))?
        .try_into()?;
    prog.load()
        .map_err(|e| anyhow!("the kernel refused program {program}: {e}"))?;
    prog.attach(category, name)
        .map_err(|e| anyhow!("attaching {program} to tracepoint {category}:{name} failed: {e}"))?;
    Ok(())
}
