//! Rebuild the eBPF object when bpf-linker changes. Only the eBPF build needs bpf-linker,
//! so a host build (e.g. `cargo check --workspace`) does not demand it.
fn main() {
    let target_arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if target_arch != "bpf" {
        return;
    }
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
