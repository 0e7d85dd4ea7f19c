//! What `/proc` says about a process while it still exists.
use std::path::Path;

/// Longest command line kept in a finding.
const MAX_CMDLINE: usize = 4096;

#[derive(Clone)]
pub struct ProcDetails {
    pub exe: Option<String>,
    pub cmdline: Option<String>,
}

/// When `pid` started, in clock ticks since boot (`/proc/PID/stat` field 22).
pub fn start_ticks(proc_root: &Path, pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Clock ticks per second (`CLK_TCK`), the unit of `/proc/PID/stat` times.
fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        n if n > 0 => n as u64,
        _ => 100,
    }
}

/// The details of the process `pid` that started at `start_ns` (ns since boot, as the kernel
/// reported it with the event; 0 = unknown): nothing when `/proc/PID` is another process by
/// now (the pid was reused), rather than another program's exe and command line.
pub fn read_started(proc_root: &Path, pid: u32, start_ns: u64) -> ProcDetails {
    let same = |proc_root: &Path| {
        start_ns == 0 || {
            let expected = start_ns / (1_000_000_000 / ticks_per_second());
            start_ticks(proc_root, pid).is_some_and(|t| t.abs_diff(expected) <= 1)
        }
    };
    let nothing = ProcDetails {
        exe: None,
        cmdline: None,
    };
    if !same(proc_root) {
        return nothing;
    }
    let details = read(proc_root, pid);
    // Checked again after: a process replaced while it was being read is not believed.
    if !same(proc_root) {
        return nothing;
    }
    details
}

pub fn read(proc_root: &Path, pid: u32) -> ProcDetails {
    let dir = proc_root.join(pid.to_string());
    let exe = std::fs::read_link(dir.join("exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let cmdline = std::fs::read(dir.join("cmdline")).ok().and_then(|mut raw| {
        raw.truncate(MAX_CMDLINE);
        while raw.last() == Some(&0) {
            raw.pop();
        }
        (!raw.is_empty()).then(|| {
            String::from_utf8_lossy(&raw)
                .split('\0')
                .collect::<Vec<_>>()
                .join(" ")
        })
    });
    ProcDetails { exe, cmdline }
}

/// Inode number of a namespace link such as `/proc/1/ns/mnt` (`mnt:[4026531841]`).
pub fn namespace_inum(link: &Path) -> std::io::Result<u32> {
    let target = std::fs::read_link(link)?;
    let text = target.to_string_lossy();
    text.rsplit_once('[')
        .and_then(|(_, rest)| rest.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("unexpected namespace link {text:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_exe_cmdline_and_namespaces() {
        let me = read(Path::new("/proc"), std::process::id());
        assert!(me.exe.unwrap().contains("probe"));
        assert!(!me.cmdline.unwrap().contains('\0'));
        assert!(namespace_inum(Path::new("/proc/self/ns/mnt")).unwrap() > 0);
    }

    #[test]
    fn details_are_those_of_the_process_that_started_when_the_kernel_said() {
        let me = std::process::id();
        let ticks = start_ticks(Path::new("/proc"), me).unwrap();
        let ns = ticks * (1_000_000_000 / ticks_per_second());
        let same = read_started(Path::new("/proc"), me, ns);
        assert!(same.exe.unwrap().contains("probe"));
        // Another process under this pid (started 10 s later): nothing is lent to it.
        let other = read_started(Path::new("/proc"), me, ns + 10_000_000_000);
        assert!(other.exe.is_none() && other.cmdline.is_none());
        // Unknown start time: by pid alone, as before.
        assert!(read_started(Path::new("/proc"), me, 0).exe.is_some());
    }

    #[test]
    fn missing_process_gives_nothing_rather_than_failing() {
        let gone = read(Path::new("/proc"), u32::MAX - 1);
        assert!(gone.exe.is_none() && gone.cmdline.is_none());
        assert!(namespace_inum(Path::new("/proc/999999999/ns/mnt")).is_err());
    }
}
