//! Enforcement's user-space half: the verdict of every cgroup, written into the kernel's
//! `VERDICTS` map and kept current as cgroups appear and vanish (the kernel's half, which
//! reads it, is `probe-ebpf/src/enforce.rs`).
//!
//! - A container cgroup gets what the judge says: `BLOCK` (in scope of an Enforce verdict)
//!   or `ALLOW` (exempt, out of scope, audited) — both cover the cgroups below it, so a
//!   container cannot step out of its verdict by making a child cgroup. A container the judge
//!   cannot name yet (its pod not known) gets nothing: the kernel refuses it until it can.
//! - Every other cgroup is the host's and gets `ALLOW_EXACT`: itself only, so a container
//!   cgroup created below `system.slice` or `kubepods.slice` is not covered by it. Where
//!   containers are made (kubepods, `/docker`) it is `ALLOW_EXACT_GUARD`: a cgroup below it
//!   without a verdict is refused even while no probe runs (elsewhere only while one does:
//!   see `probe_common::HEARTBEAT_STALE_NS`).
//! - The probe's own cgroup gets `ALLOW_EXACT`, whatever its path (it connects to the CRI
//!   socket). Exact: on a host where the probe runs in the root cgroup, a subtree `ALLOW`
//!   there would cover every container created while no probe runs.
//!
//! - A cgroup below a container's own (one the container made) gets nothing: the container's
//!   verdict covers it, whatever its name (it cannot name itself after an exempt container).
//!
//! A cgroup created after the last write has no entry until its `cgroup_mkdir` event is
//! handled here (or the next walk finds it); until then the kernel refuses it. That is the
//! race closed: a container started after the policy is refused from the moment its cgroup
//! exists, before its first process runs. The cost falls on a *new* host cgroup that reaches
//! for a runtime socket within that moment (a transient `systemd-run docker ...`): it is
//! refused too, and succeeds once attributed.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use probe_common::verdict;

use crate::{
    attribution::walk_tree,
    backend::Backend,
    cgroup::{parse_cgroup_path, unified_path_from_proc, ContainerRef},
};

/// Decides a container cgroup's verdict: `Some(BLOCK)`, `Some(ALLOW)`, or `None` while the
/// container cannot be judged yet.
pub type Judge = Box<dyn Fn(&ContainerRef) -> Option<u32> + Send + Sync>;

/// Standalone `--enforce`: every container is refused.
pub fn block_every_container() -> Judge {
    Box::new(|_| Some(verdict::BLOCK))
}

/// What to write for cgroup `id` at `path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Verdict(u32),
    /// A container the judge cannot name yet: nothing, so the kernel refuses it; judged again
    /// soon.
    Unjudged,
    /// Below a container's cgroup: nothing, so the container's verdict covers it.
    Inherits,
}

/// The entry for cgroup `id` at `path`.
pub fn verdict_of(id: u64, path: &str, own_cgroup: Option<u64>, judge: &Judge) -> Entry {
    if own_cgroup == Some(id) {
        return Entry::Verdict(verdict::ALLOW_EXACT);
    }
    let Some(container) = parse_cgroup_path(path) else {
        return Entry::Verdict(if makes_containers(path) {
            verdict::ALLOW_EXACT_GUARD
        } else {
            verdict::ALLOW_EXACT
        });
    };
    let below_a_container = path
        .rsplit_once('/')
        .is_some_and(|(parent, _)| parse_cgroup_path(parent).is_some());
    if below_a_container {
        return Entry::Inherits;
    }
    judge(&container).map_or(Entry::Unjudged, Entry::Verdict)
}

/// Whether `path` (not a container) is where the kubelet or a runtime makes containers:
/// under kubepods (pods, QoS classes), or cgroupfs-driver parents (`/docker`,
/// `/libpod_parent`). No host service lives there, so an unattributed cgroup below it is
/// refused even while no probe runs.
fn makes_containers(path: &str) -> bool {
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    let first = segments.next();
    matches!(first, Some("docker" | "libpod_parent"))
        || path.split('/').any(|s| s.starts_with("kubepods"))
}

/// How a node enforces once armed.
pub struct Armed {
    pub blocks_with: &'static str,
    /// Why the programs are not pinned (the node enforces only while this probe runs).
    pub not_pinned: Option<String>,
}

pub struct Enforcer {
    backend: Arc<Mutex<Backend>>,
    mount: PathBuf,
    own_cgroup: Option<u64>,
    judge: Judge,
    /// What the kernel's map holds, as this probe wrote it.
    written: HashMap<u64, u32>,
    /// Container cgroups the judge could not name yet, by id: their paths.
    unjudged: HashMap<u64, String>,
    armed: Option<Armed>,
}

impl Enforcer {
    pub fn new(
        backend: Arc<Mutex<Backend>>,
        mount: PathBuf,
        own_cgroup: Option<u64>,
        judge: Judge,
    ) -> Self {
        Self {
            backend,
            mount,
            own_cgroup,
            judge,
            written: HashMap::new(),
            unjudged: HashMap::new(),
            armed: None,
        }
    }

    /// Judges containers from now on by `judge` (cluster mode: once the caches exist).
    pub fn set_judge(&mut self, judge: Judge) {
        self.judge = judge;
    }

    /// How the node enforces, if armed.
    pub fn armed(&self) -> Option<&Armed> {
        self.armed.as_ref()
    }

    /// Writes every cgroup's verdict, then turns enforcement on (pinned under `pin_dir`). An
    /// error says why this node cannot enforce.
    pub fn arm(
        &mut self,
        btf: &Path,
        pin_dir: Option<&Path>,
    ) -> Result<&Armed, crate::backend::EnforceError> {
        let cgroups = self.resync();
        let shared = self.backend.clone();
        let mut backend = shared.lock().unwrap_or_else(|p| p.into_inner());
        let not_pinned = backend.arm_enforcement(btf, pin_dir)?;
        let armed = self.armed.insert(Armed {
            blocks_with: backend.blocks_with(),
            not_pinned: not_pinned.map(|why| crate::backend::sentence(&why)),
        });
        match &armed.not_pinned {
            None => {
                tracing::info!(cgroups, blocks_with = armed.blocks_with, pinned = ?pin_dir, "enforcing: containers' touches of the watched sockets are refused")
            }
            Some(why) => {
                tracing::warn!(cgroups, blocks_with = armed.blocks_with, not_pinned = %why, "enforcing only while this probe runs: containers' touches of the watched sockets are refused")
            }
        }
        Ok(armed)
    }

    /// Turns enforcement off and removes this probe's pins.
    pub fn disarm(&mut self) -> Result<(), crate::backend::EnforceError> {
        if self.armed.take().is_some() {
            let shared = self.backend.clone();
            let mut backend = shared.lock().unwrap_or_else(|p| p.into_inner());
            backend.disarm_enforcement()?;
            tracing::info!("not enforcing any more: no accepted Enforce policy");
        }
        Ok(())
    }

    /// A new cgroup (its `cgroup_mkdir` event).
    pub fn on_cgroup(&mut self, id: u64, path: &str) {
        let entry = verdict_of(id, path, self.own_cgroup, &self.judge);
        let shared = self.backend.clone();
        let mut backend = shared.lock().unwrap_or_else(|p| p.into_inner());
        self.write(&mut backend, id, path, entry);
    }

    /// Every housekeeping tick: while armed, the heartbeat that keeps cgroups without a
    /// verdict refused (a probe is attributing them); then the containers not judged yet.
    pub fn tick(&mut self) {
        if self.armed.is_some() {
            let shared = self.backend.clone();
            let mut backend = shared.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = backend.heartbeat() {
                tracing::warn!(error = %crate::backend::sentence(&e), "the enforcement heartbeat could not be written: cgroups without a verdict are let through");
            }
        }
        self.retry_unjudged();
    }

    /// Judges again the containers that could not be judged (their pod not known yet), so
    /// that one is refused no longer than it must be. Returns how many are still unjudged.
    fn retry_unjudged(&mut self) -> usize {
        if self.unjudged.is_empty() {
            return 0;
        }
        let retry: Vec<(u64, String)> = self.unjudged.drain().collect();
        let shared = self.backend.clone();
        let mut backend = shared.lock().unwrap_or_else(|p| p.into_inner());
        for (id, path) in retry {
            let entry = verdict_of(id, &path, self.own_cgroup, &self.judge);
            self.write(&mut backend, id, &path, entry);
        }
        self.unjudged.len()
    }

    /// Walks the cgroup tree and writes every cgroup's verdict; entries of cgroups that are
    /// gone are removed. Returns how many cgroups hold a verdict.
    pub fn resync(&mut self) -> usize {
        let tree = walk_tree(&self.mount);
        let shared = self.backend.clone();
        let mut backend = shared.lock().unwrap_or_else(|p| p.into_inner());
        let mut present = std::collections::HashSet::with_capacity(tree.len());
        self.unjudged.clear();
        for (id, path) in &tree {
            present.insert(*id);
            let entry = verdict_of(*id, path, self.own_cgroup, &self.judge);
            self.write(&mut backend, *id, path, entry);
        }
        let gone: Vec<u64> = self
            .written
            .keys()
            .filter(|id| !present.contains(id))
            .copied()
            .collect();
        for id in gone {
            backend.remove_verdict(id);
            self.written.remove(&id);
        }
        self.written.len()
    }

    fn write(&mut self, backend: &mut Backend, id: u64, path: &str, entry: Entry) {
        if entry == Entry::Unjudged {
            self.unjudged.insert(id, path.to_string());
        }
        match entry {
            Entry::Verdict(v) if self.written.get(&id) == Some(&v) => {}
            Entry::Verdict(v) => match backend.set_verdict(id, v) {
                Ok(()) => {
                    self.written.insert(id, v);
                }
                Err(e) => {
                    tracing::warn!(cgroup = id, error = %crate::backend::sentence(&e), "a verdict could not be written; the cgroup stays refused")
                }
            },
            Entry::Unjudged | Entry::Inherits => {
                if self.written.remove(&id).is_some() {
                    backend.remove_verdict(id);
                }
            }
        }
    }
}

/// This process's cgroup id on the host's hierarchy at `mount`. `/proc/self/cgroup` names it
/// relative to our cgroup namespace, which is the host's outside a pod; inside one with a
/// namespace of its own, the cgroup that lists `host_pid` is found by walking the tree.
pub fn own_cgroup(mount: &Path, host_pid: u32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let lists_us = |dir: &Path| {
        std::fs::read_to_string(dir.join("cgroup.procs"))
            .map(|procs| procs.lines().any(|l| l.trim() == host_pid.to_string()))
            .unwrap_or(false)
    };
    let content = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    if let Some(path) = unified_path_from_proc(&content) {
        let dir = mount.join(path.trim_start_matches('/'));
        if lists_us(&dir) {
            return std::fs::metadata(&dir).ok().map(|m| m.ino());
        }
    }
    walk_tree(mount)
        .into_iter()
        .find_map(|(id, path)| lists_us(&mount.join(path.trim_start_matches('/'))).then_some(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge_all(v: Option<u32>) -> Judge {
        Box::new(move |_| v)
    }

    #[test]
    fn containers_get_the_judges_word_hosts_only_themselves_and_the_probe_always_passes() {
        let docker = format!("/system.slice/docker-{}.scope", "a".repeat(64));
        let pod = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0f2c1a3e_7d4b_4c1e_9a53_2b8f1e0c9d11.slice/cri-containerd-{}.scope",
            "b".repeat(64)
        );
        let block = judge_all(Some(verdict::BLOCK));
        let v = |v| Entry::Verdict(v);
        assert_eq!(verdict_of(7, &docker, None, &block), v(verdict::BLOCK));
        assert_eq!(verdict_of(7, &pod, None, &block), v(verdict::BLOCK));
        // Not judged yet: no entry, which the kernel refuses.
        assert_eq!(verdict_of(7, &pod, None, &judge_all(None)), Entry::Unjudged);
        assert_eq!(
            verdict_of(7, &pod, None, &judge_all(Some(verdict::ALLOW))),
            v(verdict::ALLOW)
        );
        for host in [
            "/",
            "/system.slice",
            "/system.slice/docker.service",
            "/system.slice/kubelet.service",
            "/user.slice/user-0.slice/session-3.scope",
        ] {
            assert_eq!(
                verdict_of(3, host, None, &block),
                v(verdict::ALLOW_EXACT),
                "{host}"
            );
        }
        // Where containers are made: unattributed cgroups below stay refused with no probe.
        for parent in [
            "/kubepods.slice",
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0f2c1a3e_7d4b_4c1e_9a53_2b8f1e0c9d11.slice",
            "/sockwarden-testbed/kubepods/besteffort/pod0f2c1a3e-7d4b-4c1e-9a53-2b8f1e0c9d11",
            "/docker",
            "/libpod_parent",
        ] {
            assert_eq!(
                verdict_of(3, parent, None, &block),
                v(verdict::ALLOW_EXACT_GUARD),
                "{parent}"
            );
        }
        // The probe's own cgroup, even a container's (the probe in its pod); only itself,
        // even where it is the root.
        assert_eq!(
            verdict_of(9, &pod, Some(9), &block),
            v(verdict::ALLOW_EXACT)
        );
        assert_eq!(verdict_of(1, "/", Some(1), &block), v(verdict::ALLOW_EXACT));
    }

    #[test]
    fn a_cgroup_a_container_makes_inherits_its_verdict_whatever_it_is_named() {
        let pod = format!(
            "/kubepods/besteffort/pod0f2c1a3e-7d4b-4c1e-9a53-2b8f1e0c9d11/{}",
            "b".repeat(64)
        );
        // The judge would let the exempt container's id through; the child is not asked.
        let exempt = "e".repeat(64);
        let judge: Judge = Box::new(move |c| {
            Some(if c.id == exempt {
                verdict::ALLOW
            } else {
                verdict::BLOCK
            })
        });
        assert_eq!(
            verdict_of(7, &pod, None, &judge),
            Entry::Verdict(verdict::BLOCK)
        );
        for child in [
            format!("{pod}/{}", "e".repeat(64)),
            format!("{pod}/docker-{}.scope", "e".repeat(64)),
            format!("{pod}/init.scope"),
            format!(
                "{pod}/kubepods/pod11111111-2222-3333-4444-555555555555/{}",
                "e".repeat(64)
            ),
        ] {
            assert_eq!(
                verdict_of(8, &child, None, &judge),
                Entry::Inherits,
                "{child}"
            );
        }
    }

    #[test]
    fn own_cgroup_is_found_on_this_hosts_tree() {
        let Some(mount) = crate::attribution::find_cgroup2_mount(Path::new("/")) else {
            eprintln!("skipped: no cgroup v2 hierarchy here");
            return;
        };
        let id = own_cgroup(&mount, std::process::id()).expect("own cgroup");
        // Our cgroup's directory lists us.
        let (_, path) = walk_tree(&mount)
            .into_iter()
            .find(|(i, _)| *i == id)
            .expect("in the tree");
        let procs = std::fs::read_to_string(
            mount
                .join(path.trim_start_matches('/'))
                .join("cgroup.procs"),
        )
        .unwrap();
        assert!(procs.lines().any(|l| l == std::process::id().to_string()));
    }
}
