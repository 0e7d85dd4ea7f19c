//! Enforcement's user-space half: the verdict of every cgroup, written into the kernel's
//! `VERDICTS` map and kept current as cgroups appear and vanish (the kernel's half, which
//! reads it, is `probe-ebpf/src/enforce.rs`).
//!
//! - A container cgroup gets what the judge says: `BLOCK` (in scope of an Enforce verdict)
//!   or `ALLOW` (exempt, out of scope, audited) — both cover the cgroups below it, so a
//!   container cannot step out of its verdict by making a child cgroup. A container the judge
//!   cannot name yet (its pod not known) gets nothing: the kernel refuses it until it can.
//! - Every other cgroup is the host's and gets `ALLOW_EXACT`: itself only, so a container
//!   cgroup created below `system.slice` or `kubepods.slice` is not covered by it.
//! - The probe's own cgroup gets `ALLOW_EXACT`, whatever its path (it connects to the CRI
//!   socket). Exact: on a host where the probe runs in the root cgroup, a subtree `ALLOW`
//!   there would cover every container created while no probe runs.
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

/// The verdict for cgroup `id` at `path` (`None`: write none, the kernel refuses it).
pub fn verdict_of(id: u64, path: &str, own_cgroup: Option<u64>, judge: &Judge) -> Option<u32> {
    if own_cgroup == Some(id) {
        return Some(verdict::ALLOW_EXACT);
    }
    match parse_cgroup_path(path) {
        Some(container) => judge(&container),
        None => Some(verdict::ALLOW_EXACT),
    }
}

pub struct Enforcer {
    backend: Arc<Mutex<Backend>>,
    mount: PathBuf,
    own_cgroup: Option<u64>,
    judge: Judge,
    /// What the kernel's map holds, as this probe wrote it.
    written: HashMap<u64, u32>,
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
        }
    }

    /// A new cgroup (its `cgroup_mkdir` event).
    pub fn on_cgroup(&mut self, id: u64, path: &str) {
        let verdict = verdict_of(id, path, self.own_cgroup, &self.judge);
        let shared = self.backend.clone();
        let mut backend = shared.lock().unwrap_or_else(|p| p.into_inner());
        self.write(&mut backend, id, verdict);
    }

    /// Walks the cgroup tree and writes every cgroup's verdict; entries of cgroups that are
    /// gone are removed. Returns how many cgroups hold a verdict.
    pub fn resync(&mut self) -> usize {
        let tree = walk_tree(&self.mount);
        let shared = self.backend.clone();
        let mut backend = shared.lock().unwrap_or_else(|p| p.into_inner());
        let mut present = std::collections::HashSet::with_capacity(tree.len());
        for (id, path) in &tree {
            present.insert(*id);
            let verdict = verdict_of(*id, path, self.own_cgroup, &self.judge);
            self.write(&mut backend, *id, verdict);
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

    fn write(&mut self, backend: &mut Backend, id: u64, verdict: Option<u32>) {
        match verdict {
            Some(v) if self.written.get(&id) == Some(&v) => {}
            Some(v) => match backend.set_verdict(id, v) {
                Ok(()) => {
                    self.written.insert(id, v);
                }
                Err(e) => {
                    tracing::warn!(cgroup = id, error = %crate::backend::sentence(&e), "a verdict could not be written; the cgroup stays refused")
                }
            },
            None => {
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
        assert_eq!(verdict_of(7, &docker, None, &block), Some(verdict::BLOCK));
        assert_eq!(verdict_of(7, &pod, None, &block), Some(verdict::BLOCK));
        // Not judged yet: no entry, which the kernel refuses.
        assert_eq!(verdict_of(7, &pod, None, &judge_all(None)), None);
        assert_eq!(
            verdict_of(7, &pod, None, &judge_all(Some(verdict::ALLOW))),
            Some(verdict::ALLOW)
        );
        for host in [
            "/",
            "/system.slice",
            "/system.slice/docker.service",
            "/kubepods.slice",
            "/user.slice/user-0.slice/session-3.scope",
        ] {
            assert_eq!(
                verdict_of(3, host, None, &block),
                Some(verdict::ALLOW_EXACT),
                "{host}"
            );
        }
        // The probe's own cgroup, even a container's (the probe in its pod); only itself,
        // even where it is the root.
        assert_eq!(
            verdict_of(9, &pod, Some(9), &block),
            Some(verdict::ALLOW_EXACT)
        );
        assert_eq!(
            verdict_of(1, "/", Some(1), &block),
            Some(verdict::ALLOW_EXACT)
        );
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
