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

use aya::{
    programs::{Program, ProgramError, TracePoint},
    Ebpf,
};

use super::{tracefs::TRACEFS, LoadError};

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
pub fn available() -> Result<(), LoadError> {
    if !TRACEFS
        .iter()
        .any(|root| Path::new(root).join("events").exists())
    {
        return Err(LoadError::NoTracefs);
    }
    if !tracepoint_exists("sock", "sk_data_ready") {
        return Err(LoadError::NoDataReadyTracepoint);
    }
    Ok(())
}

/// Attaches the tracepoint programs: connect detection, attribution, and (opt-in) opens.
/// [`available`] is checked by `Backend::load` before it reads record layouts.
pub fn attach(ebpf: &mut Ebpf, detect_open: bool) -> Result<(), LoadError> {
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
    program: &'static str,
    category: &str,
    name: &str,
) -> Result<(), LoadError> {
    let prog: &mut TracePoint = program_as(ebpf, program)?;
    prog.load().map_err(|e| LoadError::Refused {
        hook: "tracepoint",
        program,
        source: Box::new(e),
    })?;
    prog.attach(category, name).map_err(|e| LoadError::Attach {
        program,
        target: format!("tracepoint {category}:{name}"),
        source: Box::new(e),
    })?;
    Ok(())
}

/// Program `name` of the object, as the program type its backend attaches.
pub(super) fn program_as<'a, P>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut P, LoadError>
where
    &'a mut P: TryFrom<&'a mut Program, Error = ProgramError>,
{
    let program = ebpf
        .program_mut(name)
        .ok_or_else(|| LoadError::missing("program", name))?;
    program
        .try_into()
        .map_err(|e| LoadError::mismatch("program", name, e))
}
