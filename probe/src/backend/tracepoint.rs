//! The `tracepoint` backend: loads on kernels without BPF LSM or trampolines.
//!
//! - connect: the raw tracepoint `sk_data_ready` on the *listening* socket, which
//!   `unix_stream_connect` wakes in the connecting task's context. The listener is identified by its bound inode,
//!   so aliases are caught exactly at connect time, while the caller is alive. It is not a
//!   syscall tracepoint, so unrelated syscalls pay nothing.
//! - open (opt-in `--detect-open`): `sys_enter/exit_open{,at,at2}`. Syscall tracepoints put
//!   every syscall on the tracing slow path, hence opt-in (cost in the README).
//! - attribution: `cgroup:cgroup_mkdir`.
use std::path::Path;

use aya::{
    programs::{links::FdLink, Program, ProgramError, RawTracePoint, TracePoint},
    Ebpf,
};

use super::{tracefs::TRACEFS, HookLinks, LoadError};

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
pub fn attach(ebpf: &mut Ebpf, detect_open: bool, links: &mut HookLinks) -> Result<(), LoadError> {
    let program = "sk_data_ready";
    let prog: &mut RawTracePoint = program_as(ebpf, program)?;
    prog.load().map_err(|e| LoadError::Refused {
        hook: "raw tracepoint",
        program,
        source: Box::new(e),
    })?;
    let attach_error = |e| LoadError::Attach {
        program,
        target: "raw tracepoint sk_data_ready".into(),
        source: Box::new(e),
    };
    let id = prog.attach("sk_data_ready").map_err(attach_error)?;
    // The connect hook is what enforces here: held as its link, which can be pinned.
    let link = prog.take_link(id).map_err(attach_error)?;
    links.push((program, FdLink::from(link)));
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
    let prog = load_tracepoint(ebpf, program)?;
    prog.attach(category, name).map_err(|e| LoadError::Attach {
        program,
        target: format!("tracepoint {category}:{name}"),
        source: Box::new(e),
    })?;
    Ok(())
}

fn load_tracepoint<'a>(
    ebpf: &'a mut Ebpf,
    program: &'static str,
) -> Result<&'a mut TracePoint, LoadError> {
    let prog: &mut TracePoint = program_as(ebpf, program)?;
    prog.load().map_err(|e| LoadError::Refused {
        hook: "tracepoint",
        program,
        source: Box::new(e),
    })?;
    Ok(prog)
}

/// A perf-event link (tracepoint, kprobe) as a `bpf_link` that can be pinned; callers check
/// `bpf_perf_link` first (the conversion of an older ioctl-attached link would detach it).
pub(super) fn perf_link<L>(program: &'static str, link: L) -> Result<FdLink, LoadError>
where
    FdLink: TryFrom<L, Error = aya::programs::links::LinkError>,
{
    FdLink::try_from(link).map_err(|e| LoadError::Link {
        program,
        source: Box::new(e),
    })
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
