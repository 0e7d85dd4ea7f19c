//! The probe proves it sees. It owns a canary socket that its backend watches like a runtime
//! socket, and a child process — in a mount namespace of its own, so the kernel treats it
//! like a containerised caller — connects to it, at start and then every minute. The event
//! must come back through the ring buffer, the path real findings take; an attached backend
//! whose programs never run (BPF LSM built but left out of `lsm=`) is caught this way, and
//! readiness says so.
//!
//! Canary events are never findings. Only connects from the children this probe spawned
//! count, so a workload cannot keep a blind probe looking healthy by connecting itself.
use std::{
    collections::HashSet,
    os::unix::{net::UnixListener, process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;

use crate::{
    event::{Operation, SocketEvent},
    rootfs::{self, FileId},
};

/// How often the canary is connected to while running.
pub const INTERVAL: Duration = Duration::from_secs(60);
/// How long a connect may take to come back as an event.
pub const DEADLINE: Duration = Duration::from_secs(5);
/// The hidden subcommand a canary child runs.
pub const CONNECT_COMMAND: &str = "canary-connect";

pub struct Canary {
    path: PathBuf,
    listener: UnixListener,
    pub id: FileId,
    /// Children spawned to connect that have not been seen yet.
    expected: Mutex<HashSet<u32>>,
    seen: AtomicU64,
    last_success: AtomicU64,
}

impl Canary {
    /// Binds the canary socket in `dir` (created, mode 0700).
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the probe's state directory {}", dir.display()))?;
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        let path = dir.join(format!("canary-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("binding the canary socket {}", path.display()))?;
        listener.set_nonblocking(true)?;
        // The identity the kernel reports for it, as for every watched socket.
        let id = rootfs::resolve(Path::new("/"), &path)
            .with_context(|| format!("reading the identity of {}", path.display()))?;
        Ok(Self {
            path,
            listener,
            id,
            expected: Mutex::default(),
            seen: AtomicU64::new(0),
            last_success: AtomicU64::new(0),
        })
    }

    /// Spawns a child that connects once; returns its pid. Accepted connections of earlier
    /// children are closed first so the backlog never fills.
    pub fn poke(&self) -> anyhow::Result<u32> {
        while self.listener.accept().is_ok() {}
        let exe = std::env::current_exe().context("finding the probe's own executable")?;
        let mut cmd = Command::new(exe);
        cmd.arg(CONNECT_COMMAND).arg(&self.path);
        // SAFETY: unshare is async-signal-safe; a failure (no CAP_SYS_ADMIN) leaves the child
        // in the probe's mount namespace, which is still a container's inside a pod.
        unsafe {
            cmd.pre_exec(|| {
                libc::unshare(libc::CLONE_NEWNS);
                Ok(())
            });
        }
        let child = cmd.spawn().context("spawning the canary child")?;
        let pid = child.id();
        self.expected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pid);
        // Reap it in the background; it exits right after connecting.
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        Ok(pid)
    }

    /// Whether `ev` touched the canary (then it is not a finding); records a success when it
    /// came from a child this probe spawned.
    pub fn observe(&self, ev: &SocketEvent) -> bool {
        if ev.operation != Operation::Connect
            || ev.dev != self.id.kernel_dev
            || ev.ino != self.id.ino
        {
            return false;
        }
        let ours = self
            .expected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ev.pid);
        if ours {
            self.seen.fetch_add(1, Ordering::AcqRel);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            self.last_success.store(now, Ordering::Release);
        } else {
            tracing::debug!(
                pid = ev.pid,
                "a connect to the canary from a process the probe did not spawn"
            );
        }
        true
    }

    /// Canary connects seen so far.
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::Acquire)
    }

    /// Unix time of the last canary event, 0 before the first.
    pub fn last_success(&self) -> u64 {
        self.last_success.load(Ordering::Acquire)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Canary {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The canary child: connect once and exit.
pub fn connect(path: &Path) -> anyhow::Result<()> {
    std::os::unix::net::UnixStream::connect(path)
        .with_context(|| format!("connecting to the canary {}", path.display()))?;
    Ok(())
}

/// Why a backend failed its self-test, in words for logs and readiness.
pub fn blind_reason(backend: crate::backend::BackendKind) -> String {
    format!(
        "the {backend} programs attached but a test connect to the probe's canary socket produced no event within {}s (on kernels that build BPF LSM but leave it out of lsm=, LSM programs attach and never run)",
        DEADLINE.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{decode, encode, raw_event, Decoded};

    fn connect_event(dev: u64, ino: u64, pid: u32) -> SocketEvent {
        let Decoded::Socket(mut ev) =
            decode(&encode(&raw_event(probe_common::kind::CONNECT, "/x"))).unwrap()
        else {
            unreachable!()
        };
        ev.dev = dev;
        ev.ino = ino;
        ev.pid = pid;
        ev
    }

    #[test]
    fn only_the_probes_own_children_count_and_canary_events_are_never_findings() {
        let dir = tempfile::tempdir().unwrap();
        let canary = Canary::create(dir.path()).unwrap();
        assert!(canary.path().exists());
        let (dev, ino) = (canary.id.kernel_dev, canary.id.ino);
        // Someone else connecting: swallowed, no success.
        assert!(canary.observe(&connect_event(dev, ino, 4242)));
        assert_eq!(canary.seen(), 0);
        let pid = canary.poke().unwrap();
        assert!(canary.observe(&connect_event(dev, ino, pid)));
        assert_eq!(canary.seen(), 1);
        assert!(canary.last_success() > 0);
        // Seen once only; another socket is not the canary.
        assert!(canary.observe(&connect_event(dev, ino, pid)));
        assert_eq!(canary.seen(), 1);
        assert!(!canary.observe(&connect_event(dev, ino + 1, pid)));
    }
}
