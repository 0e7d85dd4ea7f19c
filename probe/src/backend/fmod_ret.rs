//! Whether a `fmod_ret` (BPF_MODIFY_RETURN) program loads and attaches on a `security_*`
//! function — what enforcement in the `fentry` backend will use. aya 0.14 has no program type
//! for it, so this loads a minimal one (`r0 = 0; exit`: returning 0 lets the function run as
//! usual) with a small `bpf(2)` call of our own, attaches it, and closes both descriptors,
//! which detaches it. Attaching matters: arm64 kernels before 6.4 load it and cannot attach.
use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
};

use btf_rs::{Btf, Type};

use super::error::ENOTSUPP;

#[derive(Debug, thiserror::Error)]
pub enum FmodRetError {
    #[error("reading {path}")]
    ReadBtf {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing kernel BTF")]
    ParseBtf(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("no function {0} in kernel BTF")]
    NoFunction(String),
    #[error("{source}{}", verifier_suffix(log))]
    Refused {
        source: std::io::Error,
        /// The verifier's log, often empty for attach-time refusals.
        log: String,
    },
    #[error("it loads, but attaching it failed: {}", attach_words(.0))]
    Attach(std::io::Error),
}

/// The attach errno in words; ENOTSUPP (kernel-internal) has none in libc.
fn attach_words(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(ENOTSUPP) => "ENOTSUPP (524): no BPF trampolines on kernel functions here".into(),
        _ => e.to_string(),
    }
}

fn verifier_suffix(log: &str) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!(": {log}")
    }
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_PROG_TYPE_TRACING: u32 = 26;
const BPF_MODIFY_RETURN: u32 = 26;

/// BTF id of the kernel function `name`.
fn func_btf_id(btf_path: &Path, name: &str) -> Result<u32, FmodRetError> {
    let bytes = std::fs::read(btf_path).map_err(|source| FmodRetError::ReadBtf {
        path: btf_path.to_path_buf(),
        source,
    })?;
    let btf = Btf::from_bytes(&bytes).map_err(|e| FmodRetError::ParseBtf(e.into()))?;
    // btf-rs reports a name it does not hold as an error; either way there is no function.
    let ids = btf.resolve_ids_by_name(name).unwrap_or_default();
    ids.into_iter()
        .find(|id| matches!(btf.resolve_type_by_id(*id), Ok(Type::Func(_))))
        .ok_or_else(|| FmodRetError::NoFunction(name.to_string()))
}

/// Loads a do-nothing `fmod_ret` program for `function` and attaches it for a moment; Ok
/// when the kernel accepts both.
pub fn check_attaches(btf_path: &Path, function: &str) -> Result<(), FmodRetError> {
    let btf_id = func_btf_id(btf_path, function)?;
    // mov r0, 0 ; exit
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = b"GPL\0";
    let mut log = vec![0u8; 4096];
    // union bpf_attr, BPF_PROG_LOAD variant (offsets from include/uapi/linux/bpf.h).
    let mut attr = [0u8; 128];
    let put32 =
        |a: &mut [u8; 128], off: usize, v: u32| a[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    let put64 =
        |a: &mut [u8; 128], off: usize, v: u64| a[off..off + 8].copy_from_slice(&v.to_ne_bytes());
    put32(&mut attr, 0, BPF_PROG_TYPE_TRACING); // prog_type
    put32(&mut attr, 4, insns.len() as u32); // insn_cnt
    put64(&mut attr, 8, insns.as_ptr() as u64); // insns
    put64(&mut attr, 16, license.as_ptr() as u64); // license
    put32(&mut attr, 24, 1); // log_level
    put32(&mut attr, 28, log.len() as u32); // log_size
    put64(&mut attr, 32, log.as_mut_ptr() as u64); // log_buf
    attr[48..55].copy_from_slice(b"sw_fmod"); // prog_name
    put32(&mut attr, 68, BPF_MODIFY_RETURN); // expected_attach_type
    put32(&mut attr, 108, btf_id); // attach_btf_id (vmlinux)
                                   // SAFETY: attr is a valid bpf_attr prefix; the pointers in it outlive the call.
    let prog = unsafe { sys_bpf(BPF_PROG_LOAD, &attr) }.map_err(|source| {
        let log = String::from_utf8_lossy(&log);
        FmodRetError::Refused {
            source,
            log: log.trim_end_matches('\0').trim().to_string(),
        }
    })?;
    // Attach: union bpf_attr, raw_tracepoint variant { u64 name = 0; u32 prog_fd }, which
    // for a tracing program attaches it to the function it was loaded for.
    let mut attach = [0u8; 16];
    attach[8..12].copy_from_slice(&(prog.as_raw_fd() as u32).to_ne_bytes());
    // SAFETY: attach is a valid bpf_attr prefix. The link is dropped at once, which closes
    // it and detaches the program, before `prog` is closed.
    unsafe { sys_bpf(BPF_RAW_TRACEPOINT_OPEN, &attach) }
        .map(drop)
        .map_err(FmodRetError::Attach)
}

/// `bpf(cmd, attr)`: the descriptor the kernel returns, owned (closed on drop), or its errno.
///
/// # Safety
/// `attr` must be a valid `union bpf_attr` prefix for `cmd`, and every pointer in it must
/// stay valid for the call.
unsafe fn sys_bpf(cmd: libc::c_long, attr: &[u8]) -> std::io::Result<OwnedFd> {
    let fd = libc::syscall(libc::SYS_bpf, cmd, attr.as_ptr(), attr.len() as u32);
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(OwnedFd::from_raw_fd(fd as i32))
}
