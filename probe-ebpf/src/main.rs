//! sockwarden's eBPF programs, for every attach backend.
//!
//! Detection keys on what a socket *is*: the inode (and device) of the file a listening
//! AF_UNIX socket is bound to, never its name. The programs, by hook family:
//! - [`connect`]: connects to a watched socket. `sk_data_ready` (tracepoint
//!   `sock:sk_data_ready`, the tracepoint backend), and `lsm_*` / `fentry_*` / `kprobe_*` on
//!   `unix_stream_connect` and `unix_may_send` (the security hooks themselves, for kernels
//!   that load them).
//! - [`open`]: opens of a watched socket file with write intent. `lsm_file_open`,
//!   `fentry_file_open` and `kprobe_file_open`, or `enter_open*`/`exit_open*` (syscall
//!   tracepoints, opt-in `--detect-open`): opens with write intent that fail with ENXIO (what
//!   opening a socket file returns).
//! - [`cgroup`]: `cgroup_mkdir` (tracepoint `cgroup:cgroup_mkdir`), new cgroup v2 directories,
//!   so events from containers that are already gone can still be attributed.
//!
//! [`enforce`] decides, after a match, whether the caller is refused (a verdict map by cgroup
//! id that the probe keeps), and each hook refuses in the strongest way its kind allows.
//!
//! [`maps`] holds every map and the `.rodata` globals the probe fills at load time, and
//! [`helpers`] what the families share (kernel reads, the caller's identity, event emission).
//! User space finds programs, maps and globals by their symbol names, which are the item
//! names, whatever module they live in.
#![no_std]
#![no_main]

mod cgroup;
mod connect;
mod enforce;
mod helpers;
mod maps;
mod open;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
