//! This node's pods by container id, kept current from the pod watch's events, so that a
//! finding's container is named in one hash lookup instead of a scan of every cached pod.
//!
//! Containers, init containers and ephemeral containers are indexed by the id their status
//! gives (runtime prefix stripped). An id that leaves the index — its pod deleted, or replaced
//! by a restart or a recreated pod of the same name — stays resolvable for [`GONE_TTL`], with
//! the pod metadata of the last time it was listed: a container that connected and was
//! deleted at once is still attributed to its pod. At most [`MAX_GONE`] such ids are kept,
//! the oldest going first, however fast pods are deleted.
//!
//! What is trusted: container ids come from pod *status*, which only the kubelet writes for
//! its own node's pods (the NodeRestriction admission plugin), or whoever else holds `patch`
//! on `pods/status` and is then as trusted as a kubelet. A pod's author sets no container id.
//! Still, if two listed pods ever claim one id, neither is believed: the lookup misses and the
//! runtime's CRI identity, checked against the process's cgroup, decides (see
//! `Enricher::pod_meta`).
use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{reflector::ObjectRef, watcher};
use tokio::time::Instant;

use super::pods::{statuses, strip_runtime_prefix, PodMeta};

/// How long a container id of a deleted pod (or a replaced container) still resolves.
pub const GONE_TTL: Duration = Duration::from_secs(120);
/// Most container ids kept for deleted pods and replaced containers.
pub const MAX_GONE: usize = 10_000;

/// Shared by the pod watch (the writer) and the finding sink (lookups); cheap to clone.
#[derive(Clone, Default)]
pub struct PodIndex {
    inner: Arc<RwLock<Inner>>,
}

/// One pod's claim on a container id.
struct Claim {
    pod: ObjectRef<Pod>,
    container: String,
    /// The runtime's image name from the status (what `pods::meta_for` uses).
    image: String,
}

struct Listed {
    pod: Arc<Pod>,
    ids: Vec<String>,
}

#[derive(Default)]
struct Inner {
    /// Usually one claim per id; more only if statuses disagree (then none is believed).
    by_id: HashMap<String, Vec<Claim>>,
    pods: HashMap<ObjectRef<Pod>, Listed>,
    /// Pods listed since the watch restarted (`Init`..`InitDone`); the others were deleted
    /// meanwhile.
    relisted: Option<HashSet<ObjectRef<Pod>>>,
    gone: Gone,
}

#[derive(Default)]
struct Gone {
    by_id: HashMap<String, GoneEntry>,
    /// Insertion order, for expiry and eviction; a stale slot (the id re-inserted since)
    /// carries an older sequence number than its entry. Never longer than `MAX_GONE`.
    order: VecDeque<(u64, String)>,
    seq: u64,
}

struct GoneEntry {
    seq: u64,
    until: Instant,
    meta: PodMeta,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves consistent enough maps: keep serving.
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl PodIndex {
    /// The pod metadata for container `container_id` (no runtime prefix): a listed pod's,
    /// else a recently deleted one's.
    pub fn lookup(&self, container_id: &str) -> Option<PodMeta> {
        let inner = read(&self.inner);
        if let Some(claims) = inner.by_id.get(container_id) {
            return match claims.as_slice() {
                [claim] => inner
                    .pods
                    .get(&claim.pod)
                    .map(|l| PodMeta::from_pod(&l.pod, &claim.container, Some(&claim.image))),
                _ => {
                    tracing::debug!(
                        container = container_id,
                        pods = claims.len(),
                        "container id claimed by several pods' statuses; believing none"
                    );
                    None
                }
            };
        }
        inner
            .gone
            .by_id
            .get(container_id)
            .filter(|g| Instant::now() < g.until)
            .map(|g| g.meta.clone())
    }

    /// Follows the pod watch (after the reflector's store has taken the event).
    pub fn apply_watcher_event(&self, event: &watcher::Event<Pod>) {
        let now = Instant::now();
        let mut inner = write(&self.inner);
        inner.gone.expire(now);
        match event {
            watcher::Event::Apply(pod) => inner.apply(pod, now),
            watcher::Event::Delete(pod) => {
                // Its last state may list a container no earlier event did.
                inner.apply(pod, now);
                inner.remove(&ObjectRef::from_obj(pod), now);
            }
            watcher::Event::Init => inner.relisted = Some(HashSet::new()),
            watcher::Event::InitApply(pod) => {
                // Upserted at once: until the relist is done, lookups see old and new pods.
                inner.apply(pod, now);
                if let Some(seen) = inner.relisted.as_mut() {
                    seen.insert(ObjectRef::from_obj(pod));
                }
            }
            watcher::Event::InitDone => {
                if let Some(seen) = inner.relisted.take() {
                    let vanished: Vec<_> = inner
                        .pods
                        .keys()
                        .filter(|k| !seen.contains(*k))
                        .cloned()
                        .collect();
                    for key in vanished {
                        inner.remove(&key, now);
                    }
                }
            }
        }
    }

    /// Container ids currently listed, and kept for deleted pods.
    #[cfg(test)]
    pub(crate) fn sizes(&self) -> (usize, usize) {
        let inner = read(&self.inner);
        (inner.by_id.len(), inner.gone.by_id.len())
    }
}

impl Inner {
    /// Indexes `pod` as it is now; ids it no longer lists are kept as gone.
    fn apply(&mut self, pod: &Pod, now: Instant) {
        let key = ObjectRef::from_obj(pod);
        let pod = Arc::new(pod.clone());
        // Sets, not scans: a pod's author decides how many containers it has.
        let mut ids: HashSet<String> = HashSet::new();
        let mut claims: Vec<(String, Claim)> = Vec::new();
        for status in statuses(&pod) {
            let Some(id) = status.container_id.as_deref().map(strip_runtime_prefix) else {
                continue;
            };
            if id.is_empty() || !ids.insert(id.to_string()) {
                continue; // listed twice in one pod: the first status names it
            }
            claims.push((
                id.to_string(),
                Claim {
                    pod: key.clone(),
                    container: status.name.clone(),
                    image: status.image.clone(),
                },
            ));
        }
        if let Some(old) = self.pods.remove(&key) {
            for id in old.ids {
                let claim = self.unclaim(&id, &key);
                if let Some(claim) = claim.filter(|_| !ids.contains(&id)) {
                    self.gone.insert(id, &old.pod, &claim, now);
                }
            }
        }
        let ids = claims.iter().map(|(id, _)| id.clone()).collect();
        for (id, claim) in claims {
            self.by_id.entry(id).or_default().push(claim);
        }
        self.pods.insert(key, Listed { pod, ids });
    }

    /// Forgets pod `key`; its ids are kept as gone.
    fn remove(&mut self, key: &ObjectRef<Pod>, now: Instant) {
        let Some(old) = self.pods.remove(key) else {
            return;
        };
        for id in old.ids {
            if let Some(claim) = self.unclaim(&id, key) {
                self.gone.insert(id, &old.pod, &claim, now);
            }
        }
    }

    fn unclaim(&mut self, id: &str, key: &ObjectRef<Pod>) -> Option<Claim> {
        let claims = self.by_id.get_mut(id)?;
        let at = claims.iter().position(|c| &c.pod == key)?;
        let claim = claims.swap_remove(at);
        if claims.is_empty() {
            self.by_id.remove(id);
        }
        Some(claim)
    }
}

impl Gone {
    fn insert(&mut self, id: String, pod: &Pod, claim: &Claim, now: Instant) {
        while self.order.len() >= MAX_GONE {
            self.pop_oldest();
        }
        self.seq += 1;
        let meta = PodMeta::from_pod(pod, &claim.container, Some(&claim.image));
        self.order.push_back((self.seq, id.clone()));
        self.by_id.insert(
            id,
            GoneEntry {
                seq: self.seq,
                until: now + GONE_TTL,
                meta,
            },
        );
    }

    fn expire(&mut self, now: Instant) {
        while let Some((_, id)) = self.order.front() {
            match self.by_id.get(id) {
                Some(g) if g.until > now => break,
                _ => self.pop_oldest(),
            }
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((seq, id)) = self.order.pop_front() {
            if self.by_id.get(&id).is_some_and(|g| g.seq == seq) {
                self.by_id.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::pods::{pod_json, starting_pod_json};

    fn apply(index: &PodIndex, pod: Pod) {
        index.apply_watcher_event(&watcher::Event::Apply(pod));
    }

    fn with_ephemeral(mut pod: Pod, name: &str, id: &str) -> Pod {
        let status = pod.status.get_or_insert_with(Default::default);
        status.ephemeral_container_statuses = Some(vec![serde_json::from_value(
            serde_json::json!({"name": name, "containerID": id, "image": "registry.example/debug:1", "imageID": "", "ready": false, "restartCount": 0}),
        )
        .unwrap()]);
        pod
    }

    #[test]
    fn containers_init_and_ephemeral_containers_are_found_under_any_runtime_prefix() {
        let index = PodIndex::default();
        apply(
            &index,
            with_ephemeral(
                pod_json("web-1", "u1", &[("app", "aaa")], &[("setup", "bbb")]),
                "debug",
                "cri-o://ccc",
            ),
        );
        let mut docker = pod_json("web-2", "u2", &[], &[]);
        docker.status.as_mut().unwrap().container_statuses = Some(vec![serde_json::from_value(
            serde_json::json!({"name": "side", "containerID": "docker://ddd", "image": "registry.example/side:1", "imageID": "", "ready": true, "restartCount": 0}),
        )
        .unwrap()]);
        apply(&index, docker);
        let m = index.lookup("aaa").unwrap(); // listed as containerd://aaa
        assert_eq!(
            (m.name.as_str(), m.uid.as_str(), m.container_name.as_str()),
            ("web-1", "u1", "app")
        );
        assert_eq!(m.image.as_deref(), Some("registry.example/app:1"));
        assert_eq!(m.service_account.as_deref(), Some("web-sa"));
        assert_eq!(m.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(index.lookup("bbb").unwrap().container_name, "setup");
        let debug = index.lookup("ccc").unwrap();
        assert_eq!(debug.container_name, "debug");
        assert_eq!(debug.image.as_deref(), Some("registry.example/debug:1"));
        assert_eq!(index.lookup("ddd").unwrap().name, "web-2");
        assert!(index.lookup("containerd://aaa").is_none(), "ids are bare");
        assert!(index.lookup("zzz").is_none());
        assert!(index.lookup("").is_none());
        // the same answer as the scan of one pod it replaces
        let pod = pod_json("web-1", "u1", &[("app", "aaa")], &[("setup", "bbb")]);
        assert_eq!(
            crate::cluster::pods::meta_for(&pod, "aaa"),
            index.lookup("aaa")
        );
    }

    #[test]
    fn a_pod_update_that_adds_a_container_status_is_followed() {
        let index = PodIndex::default();
        apply(&index, starting_pod_json("web-1", "u1", &["app"]));
        assert_eq!(index.sizes(), (0, 0));
        apply(&index, pod_json("web-1", "u1", &[("app", "aaa")], &[]));
        assert_eq!(index.lookup("aaa").unwrap().container_name, "app");
        apply(
            &index,
            pod_json("web-1", "u1", &[("app", "aaa"), ("side", "bbb")], &[]),
        );
        assert_eq!(index.lookup("bbb").unwrap().container_name, "side");
        assert_eq!(index.sizes(), (2, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deleted_pods_containers_resolve_for_the_ttl_then_not() {
        let index = PodIndex::default();
        let pod = pod_json("web-1", "u1", &[("app", "aaa")], &[("setup", "bbb")]);
        apply(&index, pod.clone());
        index.apply_watcher_event(&watcher::Event::Delete(pod));
        assert_eq!(index.sizes(), (0, 2));
        tokio::time::advance(GONE_TTL - Duration::from_secs(1)).await;
        let m = index.lookup("aaa").expect("still named within the TTL");
        assert_eq!((m.name.as_str(), m.uid.as_str()), ("web-1", "u1"));
        assert_eq!(m.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(index.lookup("bbb").unwrap().container_name, "setup");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(index.lookup("aaa").is_none(), "forgotten after the TTL");
        // expired entries are dropped by the next event
        apply(&index, pod_json("web-2", "u2", &[], &[]));
        assert_eq!(index.sizes(), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_restarted_container_and_a_pod_recreated_under_its_name_keep_the_old_id_resolvable() {
        let index = PodIndex::default();
        apply(&index, pod_json("web-1", "u1", &[("app", "aaa")], &[]));
        apply(&index, pod_json("web-1", "u1", &[("app", "aa2")], &[]));
        assert_eq!(index.lookup("aa2").unwrap().container_name, "app");
        assert_eq!(index.lookup("aaa").unwrap().uid, "u1", "the old instance");
        apply(&index, pod_json("web-1", "u2", &[("app", "new")], &[]));
        assert_eq!(index.lookup("aa2").unwrap().uid, "u1");
        assert_eq!(index.lookup("new").unwrap().uid, "u2");
        assert_eq!(index.sizes(), (1, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_relist_forgets_pods_deleted_while_the_watch_was_down_but_keeps_them_as_gone() {
        let index = PodIndex::default();
        apply(&index, pod_json("web-1", "u1", &[("app", "aaa")], &[]));
        apply(&index, pod_json("web-2", "u2", &[("app", "bbb")], &[]));
        index.apply_watcher_event(&watcher::Event::Init);
        index.apply_watcher_event(&watcher::Event::InitApply(pod_json(
            "web-2",
            "u2",
            &[("app", "bbb")],
            &[],
        )));
        assert_eq!(index.lookup("aaa").unwrap().name, "web-1", "until relisted");
        index.apply_watcher_event(&watcher::Event::InitDone);
        assert_eq!(index.sizes(), (1, 1));
        assert_eq!(index.lookup("aaa").unwrap().name, "web-1", "now as gone");
        tokio::time::advance(GONE_TTL).await;
        assert!(index.lookup("aaa").is_none());
        assert_eq!(index.lookup("bbb").unwrap().name, "web-2");
    }

    #[tokio::test(start_paused = true)]
    async fn a_container_id_claimed_by_two_pods_is_believed_for_neither_until_one_lets_go() {
        let index = PodIndex::default();
        apply(&index, pod_json("web-1", "u1", &[("app", "aaa")], &[]));
        // a status (written by whoever may patch pods/status) claiming web-1's container
        let forged = pod_json("forged", "u9", &[("x", "aaa")], &[]);
        apply(&index, forged.clone());
        assert!(
            index.lookup("aaa").is_none(),
            "ambiguous: the CRI path decides"
        );
        index.apply_watcher_event(&watcher::Event::Delete(forged));
        assert_eq!(index.lookup("aaa").unwrap().name, "web-1");
        // one pod listing an id twice claims it once
        apply(
            &index,
            pod_json("web-3", "u3", &[("a", "ccc"), ("b", "ccc")], &[]),
        );
        assert_eq!(index.lookup("ccc").unwrap().container_name, "a");
    }

    #[tokio::test(start_paused = true)]
    async fn the_gone_cache_stays_bounded_under_a_flood_of_deletions() {
        let index = PodIndex::default();
        let first = pod_json("p-0", "u-0", &[("app", "id-0")], &[]);
        apply(&index, first.clone());
        index.apply_watcher_event(&watcher::Event::Delete(first));
        for i in 1..MAX_GONE + 500 {
            let pod = pod_json(
                &format!("p-{i}"),
                &format!("u-{i}"),
                &[("app", &format!("id-{i}"))],
                &[],
            );
            apply(&index, pod.clone());
            // churn the same id back and forth too: no stale slot may grow the queue
            apply(
                &index,
                pod_json(&format!("p-{i}"), &format!("u-{i}"), &[], &[]),
            );
            apply(&index, pod.clone());
            index.apply_watcher_event(&watcher::Event::Delete(pod));
        }
        let (listed, gone) = index.sizes();
        assert_eq!(listed, 0);
        assert!(gone <= MAX_GONE, "{gone}");
        assert!(read(&index.inner).gone.order.len() <= MAX_GONE);
        assert!(index.lookup("id-0").is_none(), "the oldest went first");
        let last = MAX_GONE + 499;
        assert_eq!(
            index.lookup(&format!("id-{last}")).unwrap().name,
            format!("p-{last}")
        );
    }

    /// Lookups per second with 1,000 pods, the scan of every pod (before) against the index:
    /// `cargo test -p probe --release --lib lookup_rate -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement: run it on purpose"]
    fn lookup_rate_linear_scan_vs_index() {
        use kube::runtime::reflector;
        const PODS: usize = 1_000;
        let (store, mut writer) = reflector::store();
        let index = PodIndex::default();
        let ids: Vec<String> = (0..PODS).map(|i| format!("{i:064x}")).collect();
        for (i, id) in ids.iter().enumerate() {
            let event = watcher::Event::Apply(pod_json(
                &format!("web-{i}"),
                &format!("uid-{i}"),
                &[("app", id)],
                &[],
            ));
            writer.apply_watcher_event(&event);
            index.apply_watcher_event(&event);
        }
        // every pod's container in turn, found by both
        let rate = |n: usize, f: &dyn Fn(&str) -> Option<PodMeta>| {
            let start = std::time::Instant::now();
            for k in 0..n {
                let id = &ids[(k * 7919) % PODS];
                assert!(f(id).is_some());
            }
            n as f64 / start.elapsed().as_secs_f64()
        };
        let linear = rate(2_000, &|id| crate::cluster::pods::lookup(&store, id));
        let indexed = rate(200_000, &|id| index.lookup(id));
        println!(
            "{PODS} pods: linear scan {linear:.0} lookups/s, index {indexed:.0} lookups/s, ratio {:.0}x",
            indexed / linear
        );
    }
}
