//! What `/proc` says about a process while it still exists.
use std::path::Path;

/// Longest command line kept in a finding.
const MAX_CMDLINE: usize = 4096;

#[derive(Clone)]
pub struct ProcDetails {
    pub exe: Option<String>,
    pub cmdline: Option<String>,
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
    fn missing_process_gives_nothing_rather_than_failing() {
        let gone = read(Path::new("/proc"), u32::MAX - 1);
        assert!(gone.exe.is_none() && gone.cmdline.is_none());
        assert!(namespace_inum(Path::new("/proc/999999999/ns/mnt")).is_err());
    }
}
