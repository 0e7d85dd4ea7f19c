//! `fmod_ret` (BPF_MODIFY_RETURN) programs on the `security_*` functions: how the `fentry`
//! backend refuses. aya 0.14 has no program type for them, so they are loaded with a small
//! `bpf(2)` call of our own, and kept tiny: [`attach_refuser`]'s program only carries out the
//! decision the aya-built `fentry` program on the same function made (15 instructions, no
//! kernel struct reads). [`check_attaches`] loads a do-nothing one (`r0 = 0; exit`), attaches
//! it and closes both descriptors, which detaches it: arm64 kernels before 6.4 load it and
//! cannot attach.
use std::{
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
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
const BPF_OBJ_PIN: libc::c_long = 6;
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
    let prog = load(btf_id, &[mov_imm(0, 0), EXIT], "sw_fmod")?;
    // The link is dropped at once, which closes it and detaches the program, before `prog`
    // is closed.
    attach(&prog).map(drop)
}

/// The refusing program of the `fentry` backend, attached to `function`: it returns
/// `-EPERM` (and the function does not run) for a task the `fentry` program on the same
/// function put into `refuse_next` (a hash map keyed by pid_tgid), taking the entry;
/// otherwise 0, and the function runs as usual. The decision itself stays in the aya-built
/// `fentry` program: this one only carries it out. Returns the link (closing it detaches).
pub fn attach_refuser(
    btf_path: &Path,
    function: &str,
    refuse_next: BorrowedFd<'_>,
) -> Result<OwnedFd, FmodRetError> {
    let btf_id = func_btf_id(btf_path, function)?;
    let map = refuse_next.as_raw_fd();
    let (ld_lo, ld_hi) = ld_map_fd(1, map);
    #[rustfmt::skip]
    let insns = [
        call(BPF_FUNC_GET_CURRENT_PID_TGID), // r0 = pid_tgid
        stx_dw(10, 0, -8),                   // *(u64 *)(r10 - 8) = r0
        mov_reg(2, 10),                      // r2 = r10
        add_imm(2, -8),                      // r2 = &key
        ld_lo, ld_hi,                        // r1 = refuse_next
        call(BPF_FUNC_MAP_LOOKUP_ELEM),      // r0 = lookup(r1, r2)
        jeq_imm(0, 0, 7),                    // not there: let it run
        ld_lo, ld_hi,                        // r1 = refuse_next
        mov_reg(2, 10),
        add_imm(2, -8),
        call(BPF_FUNC_MAP_DELETE_ELEM),      // take the entry
        mov_imm(0, -EPERM),                  // return -EPERM: the function does not run
        EXIT,
        mov_imm(0, 0),                       // return 0: the function runs
        EXIT,
    ];
    let prog = load(btf_id, &insns, "sw_refuse")?;
    attach(&prog)
}

const EPERM: i32 = 1;
const BPF_FUNC_MAP_LOOKUP_ELEM: i32 = 1;
const BPF_FUNC_MAP_DELETE_ELEM: i32 = 3;
const BPF_FUNC_GET_CURRENT_PID_TGID: i32 = 14;
const BPF_PSEUDO_MAP_FD: u8 = 1;
const EXIT: u64 = 0x95;

/// One instruction: opcode, dst and src registers, offset, immediate (little-endian layout
/// of `struct bpf_insn`).
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | u64::from((src << 4) | dst) << 8
        | u64::from(off as u16) << 16
        | u64::from(imm as u32) << 32
}
fn mov_imm(dst: u8, imm: i32) -> u64 {
    insn(0xb7, dst, 0, 0, imm) // BPF_ALU64 | BPF_MOV | BPF_K
}
fn mov_reg(dst: u8, src: u8) -> u64 {
    insn(0xbf, dst, src, 0, 0) // BPF_ALU64 | BPF_MOV | BPF_X
}
fn add_imm(dst: u8, imm: i32) -> u64 {
    insn(0x07, dst, 0, 0, imm) // BPF_ALU64 | BPF_ADD | BPF_K
}
fn stx_dw(dst: u8, src: u8, off: i16) -> u64 {
    insn(0x7b, dst, src, off, 0) // BPF_STX | BPF_MEM | BPF_DW
}
fn call(helper: i32) -> u64 {
    insn(0x85, 0, 0, 0, helper) // BPF_JMP | BPF_CALL
}
fn jeq_imm(dst: u8, imm: i32, off: i16) -> u64 {
    insn(0x15, dst, 0, off, imm) // BPF_JMP | BPF_JEQ | BPF_K
}
/// `dst = map` (BPF_LD | BPF_IMM | BPF_DW with the map's descriptor): two instructions.
fn ld_map_fd(dst: u8, fd: i32) -> (u64, u64) {
    (insn(0x18, dst, BPF_PSEUDO_MAP_FD, 0, fd), 0)
}

/// Loads `insns` as a `fmod_ret` program for the kernel function with BTF id `btf_id`.
fn load(btf_id: u32, insns: &[u64], name: &str) -> Result<OwnedFd, FmodRetError> {
    let license = b"GPL\0";
    let mut log = vec![0u8; 16384];
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
    let name = name.as_bytes();
    attr[48..48 + name.len().min(15)].copy_from_slice(&name[..name.len().min(15)]); // prog_name
    put32(&mut attr, 68, BPF_MODIFY_RETURN); // expected_attach_type
    put32(&mut attr, 108, btf_id); // attach_btf_id (vmlinux)
                                   // SAFETY: attr is a valid bpf_attr prefix; the pointers in it outlive the call.
    unsafe { sys_bpf(BPF_PROG_LOAD, &attr) }.map_err(|source| {
        let log = String::from_utf8_lossy(&log);
        FmodRetError::Refused {
            source,
            log: log.trim_end_matches('\0').trim().to_string(),
        }
    })
}

/// Attaches a loaded tracing program to the function it was loaded for; returns the link.
fn attach(prog: &OwnedFd) -> Result<OwnedFd, FmodRetError> {
    // union bpf_attr, raw_tracepoint variant { u64 name = 0; u32 prog_fd }.
    let mut attach = [0u8; 16];
    attach[8..12].copy_from_slice(&(prog.as_raw_fd() as u32).to_ne_bytes());
    // SAFETY: attach is a valid bpf_attr prefix.
    unsafe { sys_bpf(BPF_RAW_TRACEPOINT_OPEN, &attach) }.map_err(FmodRetError::Attach)
}

/// Pins a link (or any BPF object) at `path` on a BPF file system.
pub fn pin(fd: BorrowedFd<'_>, path: &Path) -> std::io::Result<()> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // union bpf_attr, BPF_OBJ_PIN variant { u64 pathname; u32 bpf_fd; u32 file_flags }.
    let mut attr = [0u8; 16];
    attr[0..8].copy_from_slice(&(c_path.as_ptr() as u64).to_ne_bytes());
    attr[8..12].copy_from_slice(&(fd.as_raw_fd() as u32).to_ne_bytes());
    // SAFETY: attr is a valid bpf_attr prefix; c_path outlives the call. BPF_OBJ_PIN returns
    // 0, not a descriptor: it must not be wrapped in an OwnedFd (dropping one would close
    // descriptor 0).
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_PIN, attr.as_ptr(), attr.len() as u32) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The instruction bytes as the kernel reads them (`struct bpf_insn`: code, dst:4 src:4,
    /// off, imm), compared with what `llvm-objdump` prints for the same instructions.
    #[test]
    fn instructions_encode_as_the_kernel_reads_them() {
        let bytes = |i: u64| i.to_le_bytes();
        assert_eq!(bytes(EXIT), [0x95, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            bytes(mov_imm(0, -EPERM)),
            [0xb7, 0x00, 0, 0, 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(bytes(mov_reg(2, 10)), [0xbf, 0xa2, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            bytes(add_imm(2, -8)),
            [0x07, 0x02, 0, 0, 0xf8, 0xff, 0xff, 0xff]
        );
        assert_eq!(
            bytes(stx_dw(10, 0, -8)),
            [0x7b, 0x0a, 0xf8, 0xff, 0, 0, 0, 0]
        );
        assert_eq!(bytes(call(14)), [0x85, 0, 0, 0, 14, 0, 0, 0]);
        assert_eq!(bytes(jeq_imm(0, 0, 7)), [0x15, 0, 7, 0, 0, 0, 0, 0]);
        let (lo, hi) = ld_map_fd(1, 5);
        assert_eq!(bytes(lo), [0x18, 0x11, 0, 0, 5, 0, 0, 0]);
        assert_eq!(hi, 0);
    }
}
