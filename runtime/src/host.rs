//! The host's name, as the kernel has it (the pod's name inside a pod).

/// `None` where `/proc` cannot tell; each caller picks its own fallback.
pub fn name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
}
