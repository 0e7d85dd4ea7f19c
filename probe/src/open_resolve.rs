//! Which file an open(2) that failed with ENXIO was aimed at, seen from the caller.
//!
//! Opening a socket file fails before any file descriptor exists, so (unlike connect, which
//! the kernel resolves for us) the path must be resolved here, in the caller's view: its root
//! (`/proc/<pid>/root`), its cwd or directory fd for relative paths, and `/proc/self` as the
//! caller's own `/proc/<pid>`. That works while the caller lives; a caller that is already
//! gone falls back to an earlier resolution of the same path in the same mount namespace.
use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use crate::{
    event::SocketEvent,
    procinfo,
    rootfs::{self, FileId},
};

const AT_FDCWD: i32 = -100;
const MAX_CACHE: usize = 16_384;
/// Bound on /proc entries looked at to find a sibling process.
const MAX_PROC_SCAN: usize = 100_000;

pub struct OpenResolver {
    proc_root: PathBuf,
    /// (mount namespace, absolute path) -> what it resolved to.
    cache: HashMap<(u32, String), FileId>,
}

impl OpenResolver {
    pub fn new(proc_root: PathBuf) -> Self {
        Self {
            proc_root,
            cache: HashMap::new(),
        }
    }

    pub fn resolve(&mut self, ev: &SocketEvent) -> Option<FileId> {
        let path = ev.path.as_deref()?;
        let resolved = self.resolve_live(ev, path);
        let cacheable = path.starts_with('/') && !path.starts_with("/proc/");
        match resolved {
            Ok(id) => {
                if cacheable {
                    if self.cache.len() >= MAX_CACHE {
                        self.cache.clear();
                    }
                    self.cache.insert((ev.mnt_ns, path.to_string()), id);
                }
                Some(id)
            }
            Err(_) if cacheable => self
                .cache
                .get(&(ev.mnt_ns, path.to_string()))
                .copied()
                .or_else(|| self.resolve_via_sibling(ev.mnt_ns, ev.pid, path)),
            Err(_) => None,
        }
    }

    /// The caller is gone: resolve through another live process in its mount namespace
    /// (a container's shell or init often outlives the process that tried the open).
    fn resolve_via_sibling(&self, mnt_ns: u32, gone_pid: u32, path: &str) -> Option<FileId> {
        let entries = std::fs::read_dir(&self.proc_root).ok()?;
        for entry in entries.flatten().take(MAX_PROC_SCAN) {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if pid == gone_pid {
                continue;
            }
            let dir = entry.path();
            if procinfo::namespace_inum(&dir.join("ns/mnt")).ok() != Some(mnt_ns) {
                continue;
            }
            if let Ok(id) = rootfs::resolve(&dir.join("root"), Path::new(path)) {
                return Some(id);
            }
        }
        None
    }

    fn resolve_live(&self, ev: &SocketEvent, path: &str) -> std::io::Result<FileId> {
        let proc_pid = self.proc_root.join(ev.pid.to_string());
        // /proc/self and /proc/thread-self name the caller, not us: map them onto the host's
        // /proc/<pid>, where the kernel follows fd/, root/ and cwd/ links for us.
        let own_proc = if let Some(rest) = path.strip_prefix("/proc/self/") {
            Some(proc_pid.join(rest))
        } else {
            path.strip_prefix("/proc/thread-self/")
                .map(|rest| proc_pid.join("task").join(ev.tid.to_string()).join(rest))
        };
        if let Some(host_path) = own_proc {
            return std::fs::metadata(host_path).map(|m| file_id_of(&m));
        }
        let base = if path.starts_with('/') {
            proc_pid.join("root")
        } else if ev.dirfd == AT_FDCWD {
            self.proc_root.join(ev.tid.to_string()).join("cwd")
        } else {
            proc_pid.join("fd").join(ev.dirfd.to_string())
        };
        rootfs::resolve(&base, Path::new(path))
    }
}

fn file_id_of(meta: &std::fs::Metadata) -> FileId {
    // SAFETY: zeroed stat is valid; only the fields FileId reads are set.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    st.st_dev = meta.dev();
    st.st_ino = meta.ino();
    st.st_mode = meta.mode();
    FileId::from_stat(&st)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Operation;
    use std::os::unix::{io::AsRawFd, net::UnixListener};

    fn open_event(path: &str, dirfd: i32) -> SocketEvent {
        SocketEvent {
            operation: Operation::Open,
            tid: std::process::id(),
            pid: std::process::id(),
            ppid: 0,
            uid: 0,
            gid: 0,
            comm: "test".into(),
            cgroup_id: 0,
            mnt_ns: 1,
            pid_ns: 1,
            dev: 0,
            ino: 0,
            flags: 2,
            dirfd,
            ret: -6,
            path: Some(path.into()),
            ktime_ns: 0,
            start_ns: 0,
            action: crate::event::KernelAction::None,
        }
    }

    #[test]
    fn resolves_absolute_relative_dirfd_and_proc_self_paths_in_the_callers_view() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("real.sock");
        let _l = UnixListener::bind(&sock).unwrap();
        let want = rootfs::resolve(Path::new("/"), &sock).unwrap();
        let mut r = OpenResolver::new("/proc".into());

        assert_eq!(
            r.resolve(&open_event(sock.to_str().unwrap(), AT_FDCWD)),
            Some(want)
        );
        // relative to a directory fd the caller holds
        let d = std::fs::File::open(dir.path()).unwrap();
        assert_eq!(
            r.resolve(&open_event("real.sock", d.as_raw_fd())),
            Some(want)
        );
        // /proc/self/fd/N of an O_PATH descriptor to the socket
        let f = rootfs::open_in_root(&rootfs::open_dir(Path::new("/")).unwrap(), &sock).unwrap();
        let p = format!("/proc/self/fd/{}", f.as_raw_fd());
        assert_eq!(r.resolve(&open_event(&p, AT_FDCWD)), Some(want));
        // `..` segments
        let dotted = format!(
            "{}/../{}/real.sock",
            dir.path().display(),
            dir.path().file_name().unwrap().to_str().unwrap()
        );
        assert_eq!(r.resolve(&open_event(&dotted, AT_FDCWD)), Some(want));
    }

    #[test]
    fn a_caller_that_is_gone_falls_back_to_the_same_path_in_the_same_mount_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("d.sock");
        let _l = UnixListener::bind(&sock).unwrap();
        let mut r = OpenResolver::new("/proc".into());
        let live = open_event(sock.to_str().unwrap(), AT_FDCWD);
        let want = r.resolve(&live).unwrap();
        let mut gone = live.clone();
        gone.pid = u32::MAX - 1;
        gone.tid = u32::MAX - 1;
        assert_eq!(r.resolve(&gone), Some(want));
        gone.mnt_ns = 2; // another mount namespace: the path may mean something else there
        assert_eq!(r.resolve(&gone), None);
        // a path never resolved before, caller gone: another process in our mount namespace
        // (the test harness's own) stands in for it
        let other = dir.path().join("other.sock");
        let _o = UnixListener::bind(&other).unwrap();
        let mut gone = open_event(other.to_str().unwrap(), AT_FDCWD);
        gone.mnt_ns = procinfo::namespace_inum(Path::new("/proc/self/ns/mnt")).unwrap();
        gone.pid = u32::MAX - 1;
        gone.tid = u32::MAX - 1;
        assert_eq!(
            r.resolve(&gone),
            rootfs::resolve(Path::new("/"), &other).ok()
        );
        assert_eq!(r.resolve(&open_event("/no/such/file", AT_FDCWD)), None);
    }
}
