//! The kernel's watched-socket map against the real probe and its eBPF programs: a socket
//! is its (device, inode), so two sockets that share an inode number on two file systems
//! are two watched sockets. Needs root and BTF (no Docker).
mod common;

use std::{
    ffi::CString,
    os::unix::{
        fs::MetadataExt,
        net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use common::{http_get, Probe};

const WAIT: Duration = Duration::from_secs(10);

/// Root and BTF, or a printed skip; in CI a missing piece fails instead.
fn root_ready() -> bool {
    let mut missing = Vec::new();
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root");
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        missing.push("kernel BTF");
    }
    if missing.is_empty() {
        return true;
    }
    let reason = format!("needs {}", missing.join(", "));
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI must run the root tests, but this machine {reason}");
    }
    eprintln!("SKIPPED: {reason}");
    false
}

/// A fresh tmpfs, lazily unmounted when dropped (also when the test fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: PathBuf) -> Tmpfs {
        std::fs::create_dir_all(&at).unwrap();
        let target = CString::new(at.to_str().unwrap()).unwrap();
        let fstype = CString::new("tmpfs").unwrap();
        // SAFETY: valid NUL-terminated strings; no data argument.
        let rc = unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mount tmpfs at {}: {}",
            at.display(),
            std::io::Error::last_os_error()
        );
        Tmpfs(at)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = CString::new(self.0.to_str().unwrap()).unwrap();
        // SAFETY: valid path string.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

fn listen(path: &Path) -> UnixListener {
    let listener = UnixListener::bind(path).unwrap();
    let accepting = listener.try_clone().unwrap();
    std::thread::spawn(move || {
        for conn in accepting.incoming() {
            drop(conn);
        }
    });
    listener
}

fn wait_until(what: &str, probe: &Probe, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}\n{}", probe.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn armed(probe: &Probe, n: usize) -> bool {
    http_get(&probe.listen, "/metrics")
        .is_some_and(|(_, body)| body.contains(&format!("sockwarden_probe_sockets_armed {n}\n")))
}

fn connects_to(probe: &Probe, host_path: &Path) -> usize {
    let path = host_path.to_str().unwrap();
    probe
        .matching(|v| v["operation"] == "connect" && v["socket"]["hostPath"] == path)
        .len()
}

#[test]
fn sockets_sharing_an_inode_number_on_two_file_systems_are_watched_apart() {
    if !root_ready() {
        return;
    }
    common::register_cleanup();
    let dir = PathBuf::from(format!("/tmp/sw-inode-{}", std::process::id()));
    // A fresh tmpfs numbers its inodes from the same start: the first file made in each
    // gets the same inode number on a different device.
    let a = Tmpfs::mount(dir.join("a"));
    let b = Tmpfs::mount(dir.join("b"));
    let (sock_a, sock_b) = (a.0.join("rt.sock"), b.0.join("rt.sock"));
    let _la = listen(&sock_a);
    let _lb = listen(&sock_b);
    let (ma, mb) = (
        std::fs::metadata(&sock_a).unwrap(),
        std::fs::metadata(&sock_b).unwrap(),
    );
    assert_eq!(ma.ino(), mb.ino(), "the premise: one inode number");
    assert_ne!(ma.dev(), mb.dev(), "the premise: two devices");

    let probe = Probe::start(
        &[
            "--no-default-sockets".into(),
            "--include-host".into(), // this test's own connects are host processes
            "--socket".into(),
            format!("{}=docker", sock_a.display()),
            "--socket".into(),
            format!("{}=containerd", sock_b.display()),
        ],
        &dir,
    );
    wait_until("both sockets armed", &probe, || armed(&probe, 2));

    // Keyed by inode alone, the second arming overwrote the first: A went unseen.
    drop(UnixStream::connect(&sock_a).unwrap());
    drop(UnixStream::connect(&sock_b).unwrap());
    wait_until("a connect to each socket reported", &probe, || {
        connects_to(&probe, &sock_a) == 1 && connects_to(&probe, &sock_b) == 1
    });

    // Disarm A (its file is gone); B, with the same inode number, stays watched.
    std::fs::remove_file(&sock_a).unwrap();
    wait_until("A disarmed", &probe, || armed(&probe, 1));
    drop(UnixStream::connect(&sock_b).unwrap());
    wait_until("B still reported after A was disarmed", &probe, || {
        connects_to(&probe, &sock_b) == 2
    });
    assert_eq!(connects_to(&probe, &sock_a), 1, "nothing new for A");
    assert!(probe.terminate().success());
    drop((a, b));
    let _ = std::fs::remove_dir_all(&dir);
}
