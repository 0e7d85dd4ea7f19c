//! Attribution, not detection: `cgroup_mkdir` (tracepoint `cgroup:cgroup_mkdir`, attached by
//! every backend) reports each new cgroup v2 directory with its id, so user space can name the
//! container of an event even after the container is gone.
use core::ptr::addr_of_mut;

use aya_ebpf::{
    helpers::generated::bpf_probe_read_kernel_str, macros::tracepoint, programs::TracePointContext,
    EbpfContext,
};
use probe_common::{kind, Event, PATH_LEN};

use crate::helpers::{field, reserve, rodata};

#[tracepoint(category = "cgroup", name = "cgroup_mkdir")]
pub fn cgroup_mkdir(ctx: TracePointContext) -> u32 {
    let root: i32 = field::<i32, 8>(&ctx, rodata!(FIELDS.mkdir_root));
    if root != 0 {
        return 0; // a cgroup v1 hierarchy: ids there are another numbering
    }
    let id: u64 = field::<u64, 16>(&ctx, rodata!(FIELDS.mkdir_id));
    let data_loc: u32 = field::<u32, 24>(&ctx, rodata!(FIELDS.mkdir_path));
    let Some(mut entry) = reserve(kind::CGROUP_MKDIR) else {
        return 0;
    };
    let event = entry.as_mut_ptr();
    unsafe {
        // Zero everything before `path` (probe-common asserts `path` is the last field).
        core::ptr::write_bytes(
            event as *mut u8,
            0,
            core::mem::size_of::<Event>() - PATH_LEN,
        );
        addr_of_mut!((*event).kind).write(kind::CGROUP_MKDIR);
        addr_of_mut!((*event).cgroup_id).write(id);
        let dst = addr_of_mut!((*event).path) as *mut u8;
        let src = (ctx.as_ptr() as *const u8).add((data_loc & 0xffff) as usize);
        let n = bpf_probe_read_kernel_str(dst.cast(), PATH_LEN as u32, src.cast());
        addr_of_mut!((*event).path_len).write(if n > 0 { (n - 1) as u32 } else { 0 });
    }
    entry.submit(0);
    0
}
