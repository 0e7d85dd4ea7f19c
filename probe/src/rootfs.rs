//! Resolves a path the way a given root directory sees it: symlinks (absolute ones too) and
//! `..` stay inside that root, as they would for a process whose `/` it is. Used for the
//! host's sockets under `--host-root` (or, for a directory not mounted there, through the
//! host init process's root) and for paths a container process asked for, through
//! `/proc/<pid>/root`.
use std::{
    ffi::CString,
    fs::File,
    io,
    os::fd::{AsRawFd, FromRawFd},
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

/// Device and inode of a file, with the device in the kernel's internal encoding
/// (`major << 20 | minor`), which is what the eBPF programs read from `super_block.s_dev`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub kernel_dev: u64,
    pub ino: u64,
    pub is_socket: bool,
}

impl FileId {
    pub fn from_stat(st: &libc::stat) -> Self {
        let major = libc::major(st.st_dev) as u64;
        let minor = libc::minor(st.st_dev) as u64;
        Self {
            kernel_dev: (major << 20) | minor,
            ino: st.st_ino,
            is_socket: st.st_mode & libc::S_IFMT == libc::S_IFSOCK,
        }
    }

    /// `major:minor`, as `ls -l`/`stat` print it.
    pub fn dev_string(&self) -> String {
        format!("{}:{}", self.kernel_dev >> 20, self.kernel_dev & 0xfffff)
    }
}

/// Opens `path` with `O_PATH` relative to the directory `dir`, resolving in-root
/// (`RESOLVE_IN_ROOT`: absolute symlinks and `..` cannot escape `dir`).
pub fn open_in_root(dir: &File, path: &Path) -> io::Result<File> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: open_how is plain data; zero is "no flags".
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT;
    // SAFETY: valid fd, NUL-terminated path, `how` lives across the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c_path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd we own.
    Ok(unsafe { File::from_raw_fd(fd as i32) })
}

/// Opens a directory to resolve in.
pub fn open_dir(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
}

pub fn file_id(file: &File) -> io::Result<FileId> {
    // SAFETY: zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(file.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(FileId::from_stat(&st))
}

/// The file `path` names when resolved inside `root`.
pub fn resolve(root: &Path, path: &Path) -> io::Result<FileId> {
    let dir = open_dir(root)?;
    file_id(&open_in_root(&dir, path)?)
}

/// The host's `/` as its init process sees it: `<host_root>/proc/1/root`, or, where pid 1
/// cannot be opened (a sandbox that hides it), that of kthreadd (pid 2), a kernel thread in
/// the initial namespaces. `None` when neither can be opened.
pub fn host_init_root(host_root: &Path) -> Option<PathBuf> {
    let proc = host_root.join("proc");
    let pid1 = proc.join("1/root");
    if open_dir(&pid1).is_ok() {
        return Some(pid1);
    }
    let comm = std::fs::read_to_string(proc.join("2/comm")).unwrap_or_default();
    let kthreadd = proc.join("2/root");
    (comm.trim() == "kthreadd" && open_dir(&kthreadd).is_ok()).then_some(kthreadd)
}

/// The file `path` names on the host: resolved inside `host_root`, or, when it does not
/// exist there (its directory is not mounted into the probe's pod), inside the host init
/// process's root ([`host_init_root`]). The error is the one under `host_root`.
pub fn resolve_on_host(host_root: &Path, path: &Path) -> io::Result<FileId> {
    match resolve(host_root, path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => host_init_root(host_root)
            .and_then(|root| resolve(&root, path).ok())
            .ok_or(e),
        found => found,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::{fs::symlink, net::UnixListener};

    #[test]
    fn absolute_symlinks_and_dotdot_stay_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("run")).unwrap();
        let _listener = UnixListener::bind(r.join("run/docker.sock")).unwrap();
        // /var/run -> /run, as on most distributions: absolute, so it must resolve in-root.
        std::fs::create_dir_all(r.join("var")).unwrap();
        symlink("/run", r.join("var/run")).unwrap();
        symlink("../../run/docker.sock", r.join("var/alias.sock")).unwrap();

        let direct = resolve(r, Path::new("/run/docker.sock")).unwrap();
        assert!(direct.is_socket);
        assert_eq!(
            resolve(r, Path::new("/var/run/docker.sock")).unwrap(),
            direct
        );
        // `..` past the root clamps at the root, like chroot.
        assert_eq!(resolve(r, Path::new("/var/alias.sock")).unwrap(), direct);
        assert_eq!(
            resolve(r, Path::new("../../../run/docker.sock")).unwrap(),
            direct
        );
        // relative paths resolve from the root directory
        assert_eq!(resolve(r, Path::new("run/docker.sock")).unwrap(), direct);
    }

    #[test]
    fn symlink_loops_and_missing_files_are_errors_not_hangs() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        symlink("/b", r.join("a")).unwrap();
        symlink("/a", r.join("b")).unwrap();
        let err = resolve(r, Path::new("/a")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
        let err = resolve(r, Path::new("/missing.sock")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn kernel_device_encoding_matches_major_minor() {
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        st.st_dev = libc::makedev(259, 3);
        st.st_mode = libc::S_IFSOCK;
        let id = FileId::from_stat(&st);
        assert_eq!(id.kernel_dev, (259 << 20) | 3);
        assert_eq!(id.dev_string(), "259:3");
        assert!(id.is_socket);
    }

    #[test]
    fn a_path_missing_under_the_host_root_is_found_through_the_init_process_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        // pid 1's root (a directory here; the host's `/` through a magic link in a pod)
        std::fs::create_dir_all(r.join("proc/1/root/srv/docker")).unwrap();
        let _l = UnixListener::bind(r.join("proc/1/root/srv/docker/d.sock")).unwrap();
        let id = resolve_on_host(r, Path::new("/srv/docker/d.sock")).unwrap();
        assert!(id.is_socket);
        // what exists under the host root itself wins
        std::fs::create_dir_all(r.join("srv/docker")).unwrap();
        let _m = UnixListener::bind(r.join("srv/docker/d.sock")).unwrap();
        let direct = resolve(r, Path::new("/srv/docker/d.sock")).unwrap();
        assert_ne!(direct, id);
        assert_eq!(
            resolve_on_host(r, Path::new("/srv/docker/d.sock")).unwrap(),
            direct
        );
        // missing in both: the error is the host root's
        let err = resolve_on_host(r, Path::new("/srv/none.sock")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn kthreadds_root_stands_in_for_a_hidden_pid_1_and_nothing_else_does() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("proc/2/root/srv")).unwrap();
        let _l = UnixListener::bind(r.join("proc/2/root/srv/d.sock")).unwrap();
        std::fs::write(r.join("proc/2/comm"), "bash\n").unwrap();
        assert!(host_init_root(r).is_none(), "pid 2 is not kthreadd");
        assert!(resolve_on_host(r, Path::new("/srv/d.sock")).is_err());
        std::fs::write(r.join("proc/2/comm"), "kthreadd\n").unwrap();
        assert_eq!(host_init_root(r), Some(r.join("proc/2/root")));
        assert!(
            resolve_on_host(r, Path::new("/srv/d.sock"))
                .unwrap()
                .is_socket
        );
    }
}
