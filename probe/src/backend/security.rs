//! The `lsm`, `fentry` and `kprobe` backends: the same decisions made on the kernel's security
//! hooks, which see every open and connect without taxing other syscalls. `lsm` attaches BPF
//! LSM programs to `file_open`, `unix_stream_connect` and `unix_may_send`; `fentry` attaches
//! trampolines to the `security_*` functions behind them; `kprobe` puts kprobes on the same
//! functions, for kernels that cannot route a kernel function through a trampoline (arm64
//! before 6.4). lsm and fentry need BTF and are refused by kernels that lack BPF LSM or
//! trampolines; kprobes are refused where the kernel forbids them (lockdown, EPERM, as on
//! some hosts); auto-selection then moves on.
use aya::{
    programs::{links::FdLink, FEntry, KProbe, Lsm},
    Btf, Ebpf,
};

use super::{
    tracepoint::{attach_tracepoint, perf_link, program_as},
    HookLinks, LoadError,
};

const LSM_HOOKS: &[(&str, &str)] = &[
    ("lsm_file_open", "file_open"),
    ("lsm_unix_stream_connect", "unix_stream_connect"),
    ("lsm_unix_may_send", "unix_may_send"),
];

pub(super) const FENTRY_FUNCTIONS: &[(&str, &str)] = &[
    ("fentry_file_open", "security_file_open"),
    ("fentry_unix_stream_connect", "security_unix_stream_connect"),
    ("fentry_unix_may_send", "security_unix_may_send"),
];

const KPROBE_FUNCTIONS: &[(&str, &str)] = &[
    ("kprobe_file_open", "security_file_open"),
    ("kprobe_unix_stream_connect", "security_unix_stream_connect"),
    ("kprobe_unix_may_send", "security_unix_may_send"),
];

fn kernel_btf() -> Result<Btf, LoadError> {
    Btf::from_sys_fs().map_err(|e| LoadError::Btf(Box::new(e)))
}

/// LSM programs load and attach on a kernel built with BPF LSM even when it is not in the
/// active list, and then never run: where the list is readable, `bpf` must be in it. Where it
/// is not readable (securityfs not mounted), loading decides.
fn bpf_lsm_active() -> Result<(), LoadError> {
    let Ok(active) = std::fs::read_to_string("/sys/kernel/security/lsm") else {
        return Ok(());
    };
    if active.split(',').any(|l| l.trim() == "bpf") {
        Ok(())
    } else {
        Err(LoadError::LsmInactive {
            active: active.trim().to_string(),
        })
    }
}

pub fn attach_lsm(ebpf: &mut Ebpf, links: &mut HookLinks) -> Result<(), LoadError> {
    bpf_lsm_active()?;
    let btf = kernel_btf()?;
    for &(program, hook) in LSM_HOOKS {
        let prog: &mut Lsm = program_as(ebpf, program)?;
        prog.load(hook, &btf).map_err(|e| LoadError::Refused {
            hook: "LSM",
            program,
            source: Box::new(e),
        })?;
        let id = prog
            .attach()
            .map_err(|e| LoadError::attach(program, format!("LSM hook {hook}"), e))?;
        let link = prog
            .take_link(id)
            .map_err(|e| LoadError::attach(program, format!("LSM hook {hook}"), e))?;
        links.push((program, FdLink::from(link)));
    }
    attach_tracepoint(ebpf, "cgroup_mkdir", "cgroup", "cgroup_mkdir")
}

pub fn attach_fentry(ebpf: &mut Ebpf, links: &mut HookLinks) -> Result<(), LoadError> {
    let btf = kernel_btf()?;
    for &(program, function) in FENTRY_FUNCTIONS {
        let prog: &mut FEntry = program_as(ebpf, program)?;
        prog.load(function, &btf).map_err(|e| LoadError::Refused {
            hook: "fentry",
            program,
            source: Box::new(e),
        })?;
        let id = prog
            .attach()
            .map_err(|e| LoadError::attach(program, function.to_string(), e))?;
        let link = prog
            .take_link(id)
            .map_err(|e| LoadError::attach(program, function.to_string(), e))?;
        links.push((program, FdLink::from(link)));
    }
    attach_tracepoint(ebpf, "cgroup_mkdir", "cgroup", "cgroup_mkdir")
}

pub fn attach_kprobe(ebpf: &mut Ebpf, links: &mut HookLinks) -> Result<(), LoadError> {
    for &(program, function) in KPROBE_FUNCTIONS {
        let prog: &mut KProbe = program_as(ebpf, program)?;
        prog.load().map_err(|e| LoadError::Refused {
            hook: "kprobe",
            program,
            source: Box::new(e),
        })?;
        // (not `LoadError::attach`: its ENOTSUPP reading is about trampolines)
        let attach_error = |e| LoadError::Attach {
            program,
            target: function.to_string(),
            source: Box::new(e),
        };
        let id = prog.attach(function, 0).map_err(attach_error)?;
        if aya::features().bpf_perf_link() {
            let link = prog.take_link(id).map_err(attach_error)?;
            links.push((program, perf_link(program, link)?));
        }
    }
    attach_tracepoint(ebpf, "cgroup_mkdir", "cgroup", "cgroup_mkdir")
}
