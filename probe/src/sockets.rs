//! Which runtime sockets are watched, and keeping the kernel's view of them current.
//!
//! A socket is watched by what it is — the device and inode of the daemon's socket file —
//! so every alias (bind mount under another name, symlink, hard link, `/proc/.../root`) is
//! the same object to the kernel. The armer re-resolves the configured paths periodically:
//! a socket that appears later is armed then, and a daemon restart that recreates its socket
//! (new inode) is re-armed on the next pass.
//!
//! Besides the configured sockets (defaults and `--socket`), the armer watches the sockets
//! `DockerSocketPolicy` objects name ([`PolicySockets`]), a set replaced whenever the
//! policies change, so a policy change never needs the probe's DaemonSet to change.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
};

use api::{compiled::PolicySet, validate::SocketPathError, DockerSocketPolicy, Runtime};
use kube::ResourceExt;

use crate::rootfs::{self, FileId};

/// A configured socket path on the host and the runtime it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketSpec {
    pub path: PathBuf,
    pub runtime: String,
}

/// Why a `--socket PATH[=RUNTIME]` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("socket path {0:?} must be absolute")]
    Relative(String),
    #[error("empty runtime in {0:?}")]
    EmptyRuntime(String),
    #[error("runtime {0:?} may only hold letters, digits, '-' and '_'")]
    BadRuntime(String),
}

impl FromStr for SocketSpec {
    type Err = SpecError;

    /// `PATH[=RUNTIME]`; the runtime defaults to what the file name suggests.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (path, runtime) = match s.split_once('=') {
            Some((p, r)) => (p, Some(r)),
            None => (s, None),
        };
        if !path.starts_with('/') {
            return Err(SpecError::Relative(path.to_string()));
        }
        let runtime = match runtime {
            Some("") => return Err(SpecError::EmptyRuntime(s.to_string())),
            Some(r)
                if !r
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                return Err(SpecError::BadRuntime(r.to_string()))
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
    [
        ("docker", Runtime::Docker),
        ("containerd", Runtime::Containerd),
        ("crio", Runtime::CriO),
        ("podman", Runtime::Podman),
        ("buildkit", Runtime::Buildkit),
    ]
    .into_iter()
    .find(|(hint, _)| p.contains(hint))
    // `unknown`, not `other`: nothing named the runtime, the path gave no hint.
    .map_or("unknown", |(_, runtime)| runtime.as_str())
}

/// The sockets watched when none are configured, by runtime.
pub const DEFAULT_SOCKETS: &[(&str, Runtime)] = &[
    ("/var/run/docker.sock", Runtime::Docker),
    ("/run/docker.sock", Runtime::Docker),
    ("/run/cri-dockerd.sock", Runtime::Docker),
    ("/run/containerd/containerd.sock", Runtime::Containerd),
    ("/var/run/containerd/containerd.sock", Runtime::Containerd),
    ("/run/k3s/containerd/containerd.sock", Runtime::Containerd), // k3s and rke2
    ("/var/run/crio/crio.sock", Runtime::CriO),
    ("/run/crio/crio.sock", Runtime::CriO),
    ("/run/podman/podman.sock", Runtime::Podman),
    ("/var/run/podman/podman.sock", Runtime::Podman),
    ("/run/buildkit/buildkitd.sock", Runtime::Buildkit),
    ("/var/run/buildkit/buildkitd.sock", Runtime::Buildkit),
];

pub fn default_specs() -> Vec<SocketSpec> {
    DEFAULT_SOCKETS
        .iter()
        .map(|(path, runtime)| SocketSpec {
            path: PathBuf::from(path),
            runtime: runtime.as_str().to_string(),
        })
        .collect()
}

pub use api::validate::MAX_SOCKET_PATH;

/// Checks a socket path a policy names before it is resolved on the host, by the rule the
/// operator validates policies with ([`api::validate::check_socket_path`]).
pub fn validate_policy_path(path: &str) -> Result<PathBuf, SocketPathError> {
    api::validate::check_socket_path(path).map(|()| PathBuf::from(path))
}

/// The runtime name findings and metrics carry for a policy's runtime.
pub fn runtime_name(runtime: Runtime) -> &'static str {
    runtime.as_str()
}

/// (policy name, path, runtime) of every socket the policies `set` applies name (accepted by
/// the operator and valid, compiled once per generation), by policy name then in each
/// policy's order.
fn named_sockets(
    set: &mut PolicySet,
    policies: &[Arc<DockerSocketPolicy>],
) -> Vec<(String, String, Runtime)> {
    set.refresh(policies);
    let applied: HashSet<&str> = set.applied().iter().map(|p| p.name.as_str()).collect();
    let mut named: Vec<(String, String, Runtime)> = policies
        .iter()
        .filter(|p| applied.contains(p.name_any().as_str()))
        .flat_map(|p| {
            let policy = p.name_any();
            p.spec
                .sockets
                .iter()
                .map(move |s| (policy.clone(), s.path.clone(), s.runtime))
        })
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0)); // stable: keeps each policy's own order
    named
}

fn specs_of(named: &[(String, String, Runtime)]) -> Vec<SocketSpec> {
    let mut seen = HashSet::new();
    let mut specs = Vec::new();
    for (policy, path, runtime) in named {
        match validate_policy_path(path) {
            Ok(path) => {
                // One spec per path; the first policy by name decides its runtime.
                if seen.insert(path.clone()) {
                    specs.push(SocketSpec {
                        path,
                        runtime: runtime_name(*runtime).to_string(),
                    });
                }
            }
            Err(why) => tracing::warn!(
                policy = %policy, path = ?path,
                "policy socket path {why}; not watching it"
            ),
        }
    }
    specs
}

/// The sockets `policies` name, validated (invalid paths are skipped with a warning), one
/// spec per path.
pub fn policy_specs(policies: &[Arc<DockerSocketPolicy>]) -> Vec<SocketSpec> {
    specs_of(&named_sockets(&mut PolicySet::default(), policies))
}

/// Follows the sockets policies name: each pass compares the policies' socket lists with the
/// last ones (cheap; policies are few) and derives new specs only when they changed, so an
/// invalid path is warned about once per change, not once per pass.
#[derive(Default)]
pub struct PolicySockets {
    last: Vec<(String, String, Runtime)>,
    set: PolicySet,
}

impl PolicySockets {
    /// The specs to arm, when the policies' sockets differ from the last call's.
    pub fn update(&mut self, policies: &[Arc<DockerSocketPolicy>]) -> Option<Vec<SocketSpec>> {
        let named = named_sockets(&mut self.set, policies);
        if named == self.last {
            return None;
        }
        let specs = specs_of(&named);
        self.last = named;
        Some(specs)
    }
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
    /// Configured: defaults and `--socket`.
    specs: Vec<SocketSpec>,
    /// Named by policies; replaced as they change.
    policy_specs: Vec<SocketSpec>,
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
            policy_specs: Vec::new(),
            host_root,
            armed: BTreeMap::new(),
            missing: HashMap::new(),
            known: HashMap::new(),
        }
    }

    /// Replaces the sockets policies name. Takes effect on the next [`Armer::refresh`]: new
    /// ones are armed, and one no spec names any more is disarmed then.
    pub fn set_policy_specs(&mut self, specs: Vec<SocketSpec>) {
        self.policy_specs = specs;
        // Forget "missing" notes for paths nobody names now, so a path named again is
        // reported again.
        let named: HashSet<&Path> = self
            .specs
            .iter()
            .chain(&self.policy_specs)
            .map(|s| s.path.as_path())
            .collect();
        self.missing
            .retain(|path, _| named.contains(path.as_path()));
    }

    /// Resolves every path (configured ones, then those policies name) on the host and brings
    /// `set` in line. Returns what changed.
    pub fn refresh(&mut self, set: &mut dyn WatchedSet) -> Vec<ArmEvent> {
        let mut events = Vec::new();
        // Every spec reaching a socket, per socket, configured ones first.
        let mut wanted: BTreeMap<(u64, u64), Vec<ArmedSocket>> = BTreeMap::new();
        for spec in self.specs.iter().chain(&self.policy_specs) {
            match rootfs::resolve_on_host(&self.host_root, &spec.path) {
                Ok(id) if id.is_socket => {
                    self.missing.remove(&spec.path);
                    wanted
                        .entry((id.kernel_dev, id.ino))
                        .or_default()
                        .push(ArmedSocket {
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
        for (key, candidates) in wanted {
            if let Some(current) = self.armed.get_mut(&key) {
                // Keep the path it was armed under while some spec still names it (findings
                // are keyed by it), with that spec's runtime now; else the first spec's.
                let Some(now) = candidates
                    .iter()
                    .find(|c| c.host_path == current.host_path)
                    .or(candidates.first())
                else {
                    continue;
                };
                if now != current {
                    *current = now.clone();
                    self.known.insert(key, now.clone());
                    events.push(ArmEvent::Armed(now.clone()));
                }
                continue;
            }
            let Some(socket) = candidates.into_iter().next() else {
                continue;
            };
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
        assert_eq!(
            "relative.sock".parse::<SocketSpec>(),
            Err(SpecError::Relative("relative.sock".into()))
        );
        assert_eq!(
            "/a.sock=".parse::<SocketSpec>(),
            Err(SpecError::EmptyRuntime("/a.sock=".into()))
        );
        assert_eq!(
            "/a.sock=bad name".parse::<SocketSpec>(),
            Err(SpecError::BadRuntime("bad name".into()))
        );
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

    /// A policy the operator accepted.
    fn policy(name: &str, sockets: serde_json::Value) -> Arc<DockerSocketPolicy> {
        Arc::new(api::compiled::testing::policy(
            name,
            serde_json::json!({ "sockets": sockets }),
            true,
        ))
    }

    fn spec(path: &str, runtime: &str) -> SocketSpec {
        SocketSpec {
            path: PathBuf::from(path),
            runtime: runtime.into(),
        }
    }

    #[test]
    fn policy_socket_paths_must_be_absolute_short_and_free_of_dotdot_and_nul() {
        let longest = format!("/{}", "s".repeat(MAX_SOCKET_PATH - 1));
        let too_long = format!("/{}", "s".repeat(MAX_SOCKET_PATH));
        for ok in ["/run/docker.sock", "/srv/..hidden/d.sock", longest.as_str()] {
            assert_eq!(validate_policy_path(ok), Ok(PathBuf::from(ok)), "{ok}");
        }
        type Kind = fn(String) -> SocketPathError;
        let table: &[(&str, Kind)] = &[
            ("run/docker.sock", SocketPathError::NotNormalised),
            ("", SocketPathError::NotNormalised),
            ("/run/../etc/docker.sock", SocketPathError::NotNormalised),
            ("/run/..", SocketPathError::NotNormalised),
            ("/run/d\0.sock", SocketPathError::ForbiddenCharacter),
            ("/run/d\n.sock", SocketPathError::ForbiddenCharacter),
            ("/a/./b.sock", SocketPathError::NotNormalised),
            ("/run//docker.sock", SocketPathError::NotNormalised),
            ("/run/docker.sock/", SocketPathError::NotNormalised),
            ("/run/a=b.sock", SocketPathError::ForbiddenCharacter),
            (too_long.as_str(), SocketPathError::TooLong),
        ];
        for (bad, kind) in table {
            assert_eq!(
                validate_policy_path(bad),
                Err(kind(bad.to_string())),
                "{bad:?}"
            );
        }
        assert_eq!(
            validate_policy_path(&too_long).unwrap_err().to_string(),
            format!("{too_long:?} is 108 bytes; a UNIX socket path holds at most 107")
        );
    }

    #[test]
    fn policy_specs_come_from_applied_policies_only_and_name_each_path_once_first_policy_by_name_wins(
    ) {
        let refused = api::compiled::testing::policy(
            "d-refused",
            serde_json::json!({"sockets": [{"path": "/srv/refused.sock", "runtime": "docker"}]}),
            false,
        );
        let policies = [
            policy(
                "b-ci",
                serde_json::json!([
                    {"path": "/srv/ci/buildkitd.sock", "runtime": "buildkit"},
                    {"path": "/run/user/1000/podman.sock", "runtime": "docker"}
                ]),
            ),
            policy(
                "a-podman",
                serde_json::json!([
                    {"path": "/run/user/1000/podman.sock", "runtime": "podman"},
                    {"path": "/srv/crio.sock", "runtime": "cri-o"}
                ]),
            ),
            policy("c-none", serde_json::json!([])),
            // Marked accepted (say, by a forged status) but invalid: not applied at all.
            policy(
                "e-invalid",
                serde_json::json!([
                    {"path": "/srv/ok.sock", "runtime": "docker"},
                    {"path": "/run/../etc/shadow", "runtime": "other"}
                ]),
            ),
            Arc::new(refused),
        ];
        assert_eq!(
            policy_specs(&policies),
            vec![
                spec("/run/user/1000/podman.sock", "podman"),
                spec("/srv/crio.sock", "cri-o"),
                spec("/srv/ci/buildkitd.sock", "buildkit"),
            ]
        );
        let names: Vec<&str> = [
            Runtime::Docker,
            Runtime::Containerd,
            Runtime::CriO,
            Runtime::Podman,
            Runtime::Buildkit,
            Runtime::Other,
        ]
        .into_iter()
        .map(runtime_name)
        .collect();
        assert_eq!(
            names,
            [
                "docker",
                "containerd",
                "cri-o",
                "podman",
                "buildkit",
                "other"
            ]
        );
    }

    #[test]
    fn policy_sockets_are_rederived_only_when_the_policies_sockets_change() {
        let mut follow = PolicySockets::default();
        assert_eq!(follow.update(&[]), None, "nothing named, nothing changed");
        let v1 = [policy(
            "p",
            serde_json::json!([{"path": "/srv/a.sock", "runtime": "docker"}]),
        )];
        assert_eq!(
            follow.update(&v1),
            Some(vec![spec("/srv/a.sock", "docker")])
        );
        assert_eq!(follow.update(&v1), None);
        // another policy without sockets changes nothing to arm
        let v2 = [v1[0].clone(), policy("q", serde_json::json!([]))];
        assert_eq!(follow.update(&v2), None);
        let v3 = [policy(
            "p",
            serde_json::json!([{"path": "/srv/a.sock", "runtime": "podman"}]),
        )];
        assert_eq!(
            follow.update(&v3),
            Some(vec![spec("/srv/a.sock", "podman")])
        );
        assert_eq!(follow.update(&[]), Some(vec![]), "every policy gone");
    }

    #[test]
    fn a_socket_a_policy_names_is_armed_and_disarmed_once_no_policy_names_it() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("run")).unwrap();
        std::fs::create_dir_all(r.join("srv")).unwrap();
        let _d = UnixListener::bind(r.join("run/d.sock")).unwrap();
        let _p = UnixListener::bind(r.join("srv/p.sock")).unwrap();
        let mut armer = Armer::new(vec![spec("/run/d.sock", "docker")], r.to_path_buf());
        let mut set = FakeSet::default();
        armer.refresh(&mut set);
        assert_eq!(set.0.len(), 1);

        armer.set_policy_specs(vec![spec("/srv/p.sock", "podman")]);
        let events = armer.refresh(&mut set);
        assert!(
            matches!(&events[..], [ArmEvent::Armed(s)] if s.host_path == Path::new("/srv/p.sock") && s.runtime == "podman"),
            "{events:?}"
        );
        assert_eq!(set.0.len(), 2);
        assert!(armer.refresh(&mut set).is_empty(), "steady state");

        armer.set_policy_specs(Vec::new());
        let events = armer.refresh(&mut set);
        assert!(
            matches!(&events[..], [ArmEvent::Disarmed(s)] if s.host_path == Path::new("/srv/p.sock")),
            "{events:?}"
        );
        assert_eq!(set.0.len(), 1, "the configured socket stays armed");
        assert_eq!(armer.armed_count(), 1);
    }

    #[test]
    fn a_configured_socket_a_policy_also_names_stays_armed_when_the_policy_drops_it() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("run")).unwrap();
        std::fs::create_dir_all(r.join("var")).unwrap();
        std::os::unix::fs::symlink("/run", r.join("var/run")).unwrap();
        let _d = UnixListener::bind(r.join("run/d.sock")).unwrap();
        let mut armer = Armer::new(vec![spec("/run/d.sock", "docker")], r.to_path_buf());
        let mut set = FakeSet::default();
        armer.refresh(&mut set);
        // the same socket by its own path and by an alias: nothing new to arm or rename
        armer.set_policy_specs(vec![
            spec("/var/run/d.sock", "docker"),
            spec("/run/d.sock", "docker"),
        ]);
        assert!(armer.refresh(&mut set).is_empty());
        armer.set_policy_specs(Vec::new());
        assert!(armer.refresh(&mut set).is_empty(), "still configured");
        assert_eq!(set.0.len(), 1);
    }

    #[test]
    fn a_policy_socket_in_a_directory_not_mounted_under_the_host_root_is_armed_through_pid_1s_root()
    {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("proc/1/root/srv/docker")).unwrap();
        let _s = UnixListener::bind(r.join("proc/1/root/srv/docker/d.sock")).unwrap();
        let mut armer = Armer::new(Vec::new(), r.to_path_buf());
        armer.set_policy_specs(vec![spec("/srv/docker/d.sock", "docker")]);
        let mut set = FakeSet::default();
        let events = armer.refresh(&mut set);
        assert!(
            matches!(&events[..], [ArmEvent::Armed(s)] if s.host_path == Path::new("/srv/docker/d.sock")),
            "{events:?}"
        );
        assert_eq!(set.0.len(), 1);
    }

    #[test]
    fn a_policy_changing_a_sockets_runtime_relabels_it_without_rearming() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let _s = UnixListener::bind(r.join("x.sock")).unwrap();
        let mut armer = Armer::new(Vec::new(), r.to_path_buf());
        let mut set = FakeSet::default();
        armer.set_policy_specs(vec![spec("/x.sock", "other")]);
        armer.refresh(&mut set);
        let key = *set.0.iter().next().unwrap();
        armer.set_policy_specs(vec![spec("/x.sock", "docker")]);
        let events = armer.refresh(&mut set);
        assert!(
            matches!(&events[..], [ArmEvent::Armed(s)] if s.runtime == "docker"),
            "{events:?}"
        );
        assert_eq!(set.0.len(), 1);
        assert_eq!(armer.lookup(key.0, key.1).unwrap().runtime, "docker");
        assert_eq!(armer.armed_count(), 1);
    }

    #[test]
    fn a_missing_policy_socket_is_reported_again_after_the_policy_names_it_anew() {
        let root = tempfile::tempdir().unwrap();
        let mut armer = Armer::new(Vec::new(), root.path().to_path_buf());
        let mut set = FakeSet::default();
        let missing = |events: &[ArmEvent]| {
            events
                .iter()
                .filter(|e| matches!(e, ArmEvent::Missing { .. }))
                .count()
        };
        armer.set_policy_specs(vec![spec("/srv/none.sock", "docker")]);
        assert_eq!(missing(&armer.refresh(&mut set)), 1);
        assert_eq!(missing(&armer.refresh(&mut set)), 0);
        armer.set_policy_specs(Vec::new());
        assert!(armer.refresh(&mut set).is_empty());
        armer.set_policy_specs(vec![spec("/srv/none.sock", "docker")]);
        assert_eq!(missing(&armer.refresh(&mut set)), 1);
    }
}
