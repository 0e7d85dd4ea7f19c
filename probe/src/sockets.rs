//! Which runtime sockets are watched, and keeping the kernel's view of them current.
//!
//! A socket is watched by what it is — the device and inode of the daemon's socket file —
//! so every alias (bind mount under another name, symlink, hard link, `/proc/.../root`) is
//! the same object to the kernel. The armer re-resolves the configured paths periodically:
//! a socket that appears later is armed then, and a daemon restart that recreates its socket
//! (new inode) is re-armed on the next pass.
use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    str::FromStr,
};

use crate::rootfs::{self, FileId};

/// A configured socket path on the host and the runtime it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketSpec {
    pub path: PathBuf,
    pub runtime: String,
}

impl FromStr for SocketSpec {
    type Err = String;

    /// `PATH[=RUNTIME]`; the runtime defaults to what the file name suggests.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (path, runtime) = match s.split_once('=') {
            Some((p, r)) => (p, Some(r)),
            None => (s, None),
        };
        if !path.starts_with('/') {
            return Err(format!("socket path {path:?} must be absolute"));
        }
        let runtime = match runtime {
            Some("") => return Err(format!("empty runtime in {s:?}")),
            Some(r)
                if !r
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                return Err(format!(
                    "runtime {r:?} may only hold letters, digits, '-' and '_'"
                ))
            }
            Some(r) => r.to_string(),
            None => guess_runtime(Path::new(path)).to_string(),
        };
        Ok(Self {
            path: PathBuf::from(path),
            runtime,
        })
    }
}

fn guess_runtime(path: &Path) -> &'static str {
    let p = path.to_string_lossy();
    if p.contains("docker") {
        "docker"
    } else if p.contains("containerd") {
        "containerd"
    } else if p.contains("crio") {
        "cri-o"
    } else if p.contains("podman") {
        "podman"
    } else if p.contains("buildkit") {
        "buildkit"
    } else {
        "unknown"
    }
}

/// The sockets watched when none are configured, by runtime.
pub const DEFAULT_SOCKETS: &[(&str, &str)] = &[
    ("/var/run/docker.sock", "docker"),
    ("/run/docker.sock", "docker"),
    ("/run/cri-dockerd.sock", "docker"),
    ("/run/containerd/containerd.sock", "containerd"),
    ("/var/run/containerd/containerd.sock", "containerd"),
    ("/run/k3s/containerd/containerd.sock", "containerd"), // k3s and rke2
    ("/var/run/crio/crio.sock", "cri-o"),
    ("/run/crio/crio.sock", "cri-o"),
    ("/run/podman/podman.sock", "podman"),
    ("/var/run/podman/podman.sock", "podman"),
    ("/run/buildkit/buildkitd.sock", "buildkit"),
    ("/var/run/buildkit/buildkitd.sock", "buildkit"),
];

pub fn default_specs() -> Vec<SocketSpec> {
    DEFAULT_SOCKETS
        .iter()
        .map(|(path, runtime)| SocketSpec {
            path: PathBuf::from(path),
            runtime: runtime.to_string(),
        })
        .collect()
}

/// What a finding says about the socket it touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmedSocket {
    pub id: FileId,
    /// The first configured path that reached it.
    pub host_path: PathBuf,
    pub runtime: String,
}

/// The kernel side of the watched set (a BPF map keyed by inode).
pub trait WatchedSet {
    fn arm(&mut self, id: &FileId) -> anyhow::Result<()>;
    fn disarm(&mut self, id: &FileId) -> anyhow::Result<()>;
}

/// A change the armer made, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArmEvent {
    Armed(ArmedSocket),
    Disarmed(ArmedSocket),
    /// A configured path that does not (or no longer does) name a socket; said once.
    Missing {
        path: PathBuf,
        reason: String,
    },
}

pub struct Armer {
    specs: Vec<SocketSpec>,
    host_root: PathBuf,
    armed: BTreeMap<(u64, u64), ArmedSocket>,
    missing: HashMap<PathBuf, String>,
    /// Every socket ever armed, so events in flight after a re-arm still name their socket.
    known: HashMap<(u64, u64), ArmedSocket>,
}

impl Armer {
    pub fn new(specs: Vec<SocketSpec>, host_root: PathBuf) -> Self {
        Self {
            specs,
            host_root,
            armed: BTreeMap::new(),
            missing: HashMap::new(),
            known: HashMap::new(),
        }
    }

    /// Resolves every configured path and brings `set` in line. Returns what changed.
    pub fn refresh(&mut self, set: &mut dyn WatchedSet) -> Vec<ArmEvent> {
        let mut events = Vec::new();
        let mut wanted: BTreeMap<(u64, u64), ArmedSocket> = BTreeMap::new();
        for spec in &self.specs {
            match rootfs::resolve(&self.host_root, &spec.path) {
                Ok(id) if id.is_socket => {
                    self.missing.remove(&spec.path);
                    wanted
                        .entry((id.kernel_dev, id.ino))
                        .or_insert_with(|| ArmedSocket {
                            id,
                            host_path: spec.path.clone(),
                            runtime: spec.runtime.clone(),
                        });
                }
                other => {
                    let reason = match other {
                        Ok(_) => "not a socket".to_string(),
                        Err(e) => e.to_string(),
                    };
                    if self.missing.get(&spec.path) != Some(&reason) {
                        self.missing.insert(spec.path.clone(), reason.clone());
                        events.push(ArmEvent::Missing {
                            path: spec.path.clone(),
                            reason,
                        });
                    }
                }
            }
        }
        let stale: Vec<_> = self
            .armed
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .copied()
            .collect();
        for key in stale {
            if let Some(old) = self.armed.remove(&key) {
                if let Err(e) = set.disarm(&old.id) {
                    tracing::warn!(error = %e, path = %old.host_path.display(), "disarming socket failed");
                }
                events.push(ArmEvent::Disarmed(old));
            }
        }
        for (key, socket) in wanted {
            if self.armed.contains_key(&key) {
                continue;
            }
            match set.arm(&socket.id) {
                Ok(()) => {
                    if self.known.len() > 4096 {
                        self.known.clear(); // bounded; only matters across thousands of restarts
                    }
                    self.known.insert(key, socket.clone());
                    self.armed.insert(key, socket.clone());
                    events.push(ArmEvent::Armed(socket));
                }
                Err(e) => events.push(ArmEvent::Missing {
                    path: socket.host_path.clone(),
                    reason: format!("cannot arm: {e}"),
                }),
            }
        }
        events
    }

    pub fn armed_count(&self) -> usize {
        self.armed.len()
    }

    pub fn lookup(&self, kernel_dev: u64, ino: u64) -> Option<&ArmedSocket> {
        self.known.get(&(kernel_dev, ino))
    }

    /// An armed socket whose configured path ends in `file_name` (e.g. `docker.sock`).
    pub fn lookup_by_file_name(&self, file_name: &str) -> Option<&ArmedSocket> {
        if file_name.is_empty() {
            return None;
        }
        self.armed
            .values()
            .find(|s| s.host_path.file_name().is_some_and(|n| n == file_name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{collections::HashSet, os::unix::net::UnixListener};

    #[derive(Default)]
    struct FakeSet(HashSet<(u64, u64)>);
    impl WatchedSet for FakeSet {
        fn arm(&mut self, id: &FileId) -> anyhow::Result<()> {
            self.0.insert((id.kernel_dev, id.ino));
            Ok(())
        }
        fn disarm(&mut self, id: &FileId) -> anyhow::Result<()> {
            self.0.remove(&(id.kernel_dev, id.ino));
            Ok(())
        }
    }

    #[test]
    fn socket_flag_parses_path_and_runtime() {
        let s: SocketSpec = "/srv/my.sock=podman".parse().unwrap();
        assert_eq!(s.path, PathBuf::from("/srv/my.sock"));
        assert_eq!(s.runtime, "podman");
        let s: SocketSpec = "/run/user/1000/docker.sock".parse().unwrap();
        assert_eq!(s.runtime, "docker");
        assert!("relative.sock".parse::<SocketSpec>().is_err());
        assert!("/a.sock=".parse::<SocketSpec>().is_err());
        assert!("/a.sock=bad name".parse::<SocketSpec>().is_err());
    }

    #[test]
    fn missing_socket_is_reported_once_then_armed_when_it_appears_and_rearmed_on_restart() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("run")).unwrap();
        let specs = vec![
            "/run/d.sock=docker".parse().unwrap(),
            "/var/run/d.sock=docker".parse().unwrap(),
        ];
        let mut armer = Armer::new(specs, root.path().to_path_buf());
        let mut set = FakeSet::default();

        let first = armer.refresh(&mut set);
        assert_eq!(
            first
                .iter()
                .filter(|e| matches!(e, ArmEvent::Missing { .. }))
                .count(),
            2
        );
        assert!(
            armer.refresh(&mut set).is_empty(),
            "missing sockets are reported once"
        );

        let listener = UnixListener::bind(root.path().join("run/d.sock")).unwrap();
        let events = armer.refresh(&mut set);
        assert!(
            matches!(&events[..], [ArmEvent::Armed(s)] if s.host_path == Path::new("/run/d.sock"))
        );
        assert_eq!(set.0.len(), 1);
        let old = *set.0.iter().next().unwrap();

        // the daemon restarts: its socket file is recreated with a new inode
        drop(listener);
        std::fs::remove_file(root.path().join("run/d.sock")).unwrap();
        let _keep = std::fs::File::create(root.path().join("placeholder")).unwrap(); // keep the old inode number from being reused at once
        let _listener = UnixListener::bind(root.path().join("run/d.sock")).unwrap();
        let events = armer.refresh(&mut set);
        assert!(events.iter().any(|e| matches!(e, ArmEvent::Disarmed(_))));
        assert!(events.iter().any(|e| matches!(e, ArmEvent::Armed(_))));
        assert_eq!(set.0.len(), 1);
        assert_ne!(*set.0.iter().next().unwrap(), old);
        // events still in flight for the old inode keep their socket
        assert!(armer.lookup(old.0, old.1).is_some());
    }

    #[test]
    fn a_regular_file_at_a_socket_path_is_not_armed() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("docker.sock"), b"").unwrap();
        let mut armer = Armer::new(
            vec!["/docker.sock".parse().unwrap()],
            root.path().to_path_buf(),
        );
        let mut set = FakeSet::default();
        let events = armer.refresh(&mut set);
        assert!(
            matches!(&events[..], [ArmEvent::Missing { reason, .. }] if reason == "not a socket")
        );
        assert!(set.0.is_empty());
    }
}
