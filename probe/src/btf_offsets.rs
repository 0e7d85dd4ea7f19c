//! Resolves the kernel struct member offsets the eBPF programs read, from the running
//! kernel's BTF. Rust eBPF has no CO-RE relocations, so this is what lets one binary run on
//! many kernels: the offsets go into the programs' `.rodata` at load time.
use std::path::Path;

use btf_rs::{Btf, BtfType, Type};
use probe_common::KernelOffsets;

#[derive(Debug, thiserror::Error)]
pub enum OffsetError {
    #[error(
        "cannot read kernel BTF at {path}: {source} (the kernel needs CONFIG_DEBUG_INFO_BTF=y)"
    )]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot parse kernel BTF")]
    Parse(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel BTF: struct {structure} has no member {member}")]
    NoMember { structure: String, member: String },
}

/// Member offsets resolved from a BTF blob (e.g. `/sys/kernel/btf/vmlinux`).
pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    pub fn from_file(path: &Path) -> Result<Self, OffsetError> {
        let bytes = std::fs::read(path).map_err(|source| OffsetError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let btf = Btf::from_bytes(&bytes).map_err(|e| OffsetError::Parse(e.into()))?;
        Ok(Self { btf })
    }

    /// Byte offset of a dotted member path (`"__sk_common.skc_state"`) inside `struct name`.
    /// Members of anonymous unions and structs are found as if they were direct members.
    pub fn offset(&self, structure: &str, member_path: &str) -> Result<u32, OffsetError> {
        let mut current = self.find_struct(structure)?;
        let mut total_bits = 0u32;
        let mut current_name = structure.to_string();
        for member in member_path.split('.') {
            let (bits, type_id) =
                self.find_member(&current, member)?
                    .ok_or_else(|| OffsetError::NoMember {
                        structure: current_name.clone(),
                        member: member.to_string(),
                    })?;
            total_bits += bits;
            current = self.resolve_composite(type_id).unwrap_or(current);
            current_name = member.to_string();
        }
        Ok(total_bits / 8)
    }

    fn find_struct(&self, name: &str) -> Result<btf_rs::Struct, OffsetError> {
        let types = self
            .btf
            .resolve_types_by_name(name)
            .map_err(|_| OffsetError::NoStruct(name.to_string()))?;
        types
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) if !s.members.is_empty() => Some(s),
                _ => None,
            })
            .ok_or_else(|| OffsetError::NoStruct(name.to_string()))
    }

    /// Follows typedefs and qualifiers to a struct or union, if the type is one.
    fn resolve_composite(&self, mut type_id: u32) -> Option<btf_rs::Struct> {
        for _ in 0..16 {
            match self.btf.resolve_type_by_id(type_id).ok()? {
                Type::Struct(s) | Type::Union(s) => return Some(s),
                Type::Typedef(t) => type_id = t.get_type_id().ok()?,
                Type::Volatile(t) => type_id = t.get_type_id().ok()?,
                Type::Const(t) => type_id = t.get_type_id().ok()?,
                _ => return None,
            }
        }
        None
    }

    /// (bit offset, type id) of `name` in `s`, searching anonymous members recursively.
    fn find_member(
        &self,
        s: &btf_rs::Struct,
        name: &str,
    ) -> Result<Option<(u32, u32)>, OffsetError> {
        for member in &s.members {
            let member_name = self.btf.resolve_name(member).unwrap_or_default();
            let type_id = member
                .get_type_id()
                .map_err(|e| OffsetError::Parse(e.into()))?;
            if member_name == name {
                return Ok(Some((member.bit_offset(), type_id)));
            }
            if member_name.is_empty() {
                if let Some(inner) = self.resolve_composite(type_id) {
                    if let Some((bits, id)) = self.find_member(&inner, name)? {
                        return Ok(Some((member.bit_offset() + bits, id)));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Every offset the `tracepoint` backend needs.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, OffsetError> {
        let (mut regs_syscall_nr, regs_arg1, regs_arg2) = self.syscall_regs();
        let (task_stack, stack_pt_regs) = match self.regs_on_stack() {
            Some(found) => found,
            None => {
                // Neither the helper nor a known stack layout: no requested-path capture.
                regs_syscall_nr = 0;
                (0, 0)
            }
        };
        Ok(KernelOffsets {
            sock_state: self.offset("sock", "__sk_common.skc_state")?,
            sock_family: self.offset("sock", "__sk_common.skc_family")?,
            unix_sock_path_dentry: self.offset("unix_sock", "path.dentry")?,
            dentry_inode: self.offset("dentry", "d_inode")?,
            inode_ino: self.offset("inode", "i_ino")?,
            inode_sb: self.offset("inode", "i_sb")?,
            sb_dev: self.offset("super_block", "s_dev")?,
            task_real_parent: self.offset("task_struct", "real_parent")?,
            task_tgid: self.offset("task_struct", "tgid")?,
            task_nsproxy: self.offset("task_struct", "nsproxy")?,
            nsproxy_mnt_ns: self.offset("nsproxy", "mnt_ns")?,
            nsproxy_pid_ns: self.offset("nsproxy", "pid_ns_for_children")?,
            mnt_ns_inum: self.offset("mnt_namespace", "ns.inum")?,
            pid_ns_inum: self.offset("pid_namespace", "ns.inum")?,
            regs_syscall_nr,
            regs_arg2,
            regs_arg1,
            file_inode: self.offset("file", "f_inode")?,
            file_flags: self.offset("file", "f_flags")?,
            inode_mode: self.offset("inode", "i_mode")?,
            socket_sk: self.offset("socket", "sk")?,
            task_group_leader: self.offset("task_struct", "group_leader")?,
            // Named real_start_time before 5.5; without either, process details are read
            // by pid alone.
            task_start_boottime: self
                .offset("task_struct", "start_boottime")
                .or_else(|_| self.offset("task_struct", "real_start_time"))
                .unwrap_or(0),
            task_stack,
            stack_pt_regs,
            task_cgroups: self.offset("task_struct", "cgroups")?,
            css_set_dfl_cgrp: self.offset("css_set", "dfl_cgrp")?,
            cgroup_kn: self.offset("cgroup", "kn")?,
            kernfs_node_id: self.offset("kernfs_node", "id")?,
            cgroup_parent: self.offset("cgroup", "self.parent")?,
            cgroup_self: self.offset("cgroup", "self")?,
        })
    }

    /// Whether this kernel knows BPF helper `BPF_FUNC_<name>` (its `enum bpf_func_id`).
    pub fn has_helper(&self, name: &str) -> bool {
        let wanted = format!("BPF_FUNC_{name}");
        self.btf
            .resolve_types_by_name("bpf_func_id")
            .unwrap_or_default()
            .iter()
            .any(|t| match t {
                Type::Enum(e) => e
                    .members
                    .iter()
                    .any(|m| self.btf.resolve_name(m).is_ok_and(|n| n == wanted)),
                _ => false,
            })
    }

    /// How the programs find the syscall's saved registers: `(0, 0)` where the kernel has
    /// `bpf_task_pt_regs` (5.15+); before it, `(task_struct.stack, THREAD_SIZE - sizeof(pt_regs))`
    /// — on x86-64 and arm64 the registers sit at the top of the task's kernel stack, which is
    /// 16 KiB, twice that with KASAN (seen in BTF as `kasan_report`). `None` where neither
    /// is known.
    fn regs_on_stack(&self) -> Option<(u32, u32)> {
        if self.has_helper("task_pt_regs") {
            return Some((0, 0));
        }
        if !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            return None;
        }
        let stack = self.offset("task_struct", "stack").ok()?;
        let regs_size = self.find_struct("pt_regs").ok()?.size() as u32;
        let kasan = self
            .btf
            .resolve_ids_by_name("kasan_report")
            .is_ok_and(|ids| !ids.is_empty());
        let thread_size: u32 = if kasan { 32 * 1024 } else { 16 * 1024 };
        Some((stack, thread_size - regs_size))
    }

    /// Where `pt_regs` keeps the syscall number and first two arguments; zeros where
    /// unknown, which only turns off capture of requested paths.
    fn syscall_regs(&self) -> (u32, u32, u32) {
        if cfg!(target_arch = "x86_64") {
            return match (
                self.offset("pt_regs", "orig_ax"),
                self.offset("pt_regs", "di"),
                self.offset("pt_regs", "si"),
            ) {
                (Ok(nr), Ok(arg1), Ok(arg2)) => (nr, arg1, arg2),
                _ => (0, 0, 0),
            };
        }
        if cfg!(target_arch = "aarch64") {
            // user_pt_regs.regs[0..] hold the arguments; syscallno follows pstate.
            if let (Ok(regs), Ok(nr)) = (
                self.offset("pt_regs", "regs"),
                self.offset("pt_regs", "syscallno"),
            ) {
                return (nr, regs, regs + 8);
            }
        }
        (0, 0, 0)
    }
}

/// The architecture's syscall numbers: (connect, open, openat, openat2). arm64 has no
/// open(2) (`u32::MAX` never matches).
pub const fn syscall_numbers() -> (u32, u32, u32, u32) {
    if cfg!(target_arch = "aarch64") {
        (203, u32::MAX, 56, 437)
    } else {
        (42, 2, 257, 437)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vmlinux() -> Option<KernelBtf> {
        let path = Path::new("/sys/kernel/btf/vmlinux");
        if !path.exists() {
            eprintln!("skipping: this kernel exposes no BTF at {}", path.display());
            return None;
        }
        Some(KernelBtf::from_file(path).expect("parse vmlinux BTF"))
    }

    #[test]
    fn resolves_every_offset_the_programs_need_from_the_running_kernel() {
        let Some(btf) = vmlinux() else { return };
        let offsets = btf.kernel_offsets().expect("all members present");
        // struct path is { vfsmount *mnt; dentry *dentry; }: dentry sits 8 bytes in.
        assert_eq!(
            offsets.unix_sock_path_dentry,
            btf.offset("unix_sock", "path").unwrap() + 8
        );
        // skc_state lives inside sock_common, which is sock's first member.
        assert!(offsets.sock_state < btf.offset("sock", "sk_rcvbuf").unwrap());
        assert!(offsets.inode_sb > 0 && offsets.dentry_inode > 0);
        if cfg!(target_arch = "x86_64") {
            // x86-64 pt_regs: r15..di (each 8 bytes); si is the 14th register, orig_ax the 16th.
            assert_eq!(offsets.regs_arg2, 13 * 8);
            assert_eq!(offsets.regs_syscall_nr, 15 * 8);
            assert_eq!(offsets.regs_arg1, 14 * 8);
        }
    }

    #[test]
    fn the_registers_come_from_the_helper_where_the_kernel_has_it_else_from_the_stack() {
        let Some(btf) = vmlinux() else { return };
        assert!(
            btf.has_helper("get_current_cgroup_id"),
            "every BTF kernel has it"
        );
        assert!(!btf.has_helper("no_such_helper"));
        let offsets = btf.kernel_offsets().unwrap();
        if btf.has_helper("task_pt_regs") {
            assert_eq!((offsets.task_stack, offsets.stack_pt_regs), (0, 0));
        } else {
            assert!(offsets.task_stack > 0, "{offsets:?}");
        }
        // What the fallback would compute here, against the kernel's own layout.
        if cfg!(target_arch = "x86_64") {
            let regs = btf.find_struct("pt_regs").unwrap().size() as u32;
            assert_eq!(regs, 21 * 8, "x86-64 pt_regs: 21 registers");
            assert!(btf.offset("task_struct", "stack").unwrap() > 0);
        }
    }

    #[test]
    fn unknown_members_are_reported_by_name() {
        let Some(btf) = vmlinux() else { return };
        let err = btf.offset("sock", "no_such_member").unwrap_err();
        assert!(err.to_string().contains("no_such_member"), "{err}");
        let err = btf.offset("no_such_struct_xyz", "a").unwrap_err();
        assert!(matches!(err, OffsetError::NoStruct(_)));
    }
}
