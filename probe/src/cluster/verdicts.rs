//! Enforcement in a cluster: each container cgroup's verdict from the accepted policies that
//! select its pod (what [`crate::enforce::Enforcer`] writes into the kernel), and whether
//! this node should enforce at all.
//!
//! - The node enforces while an accepted policy (its current generation) asks for `Enforce`.
//! - A container's pod is the one its kubepods cgroup names by uid: the kubelet makes that
//!   cgroup, and no pod's author chooses its uid. It is looked up among this node's pods, so
//!   the verdict is known from the moment the kubelet makes the container's cgroup, before its
//!   status lists it. A pod not in the cache yet gets no verdict: refused until it is.
//! - `BLOCK` when an applied `Enforce` policy selects the pod (for connects or opens) and none
//!   of its exemptions does; otherwise `ALLOW`. The kernel refuses by cgroup, so an exemption
//!   narrowed by executable never lifts a block (which binary runs inside is the
//!   container's choice), and one narrowed by image applies once the pod's status names the
//!   container's image.
//! - A container outside kubepods (run on the node by hand, not by the kubelet) has no pod
//!   and no policy selects it: `ALLOW`.
use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
};

use api::{
    compiled::{evaluate, PolicySet, Verdict},
    DockerSocketPolicy, FindingOperation, Mode,
};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::{
    core::PartialObjectMeta,
    runtime::reflector::{ObjectRef, Store},
    ResourceExt,
};
use probe_common::verdict;

use super::{pod_index::PodIndex, pods::PodMeta, policy::subject};
use crate::cgroup::ContainerRef;

/// An Enforce policy this node applies, at the generation it applies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Enforced {
    pub name: String,
    pub generation: i64,
}

pub struct ClusterVerdicts {
    pods: Store<Pod>,
    pod_index: PodIndex,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    policies: Store<DockerSocketPolicy>,
    set: Mutex<PolicySet>,
    /// The three caches have listed once: before, nothing is judged.
    synced: AtomicBool,
}

impl ClusterVerdicts {
    pub fn new(
        pods: Store<Pod>,
        pod_index: PodIndex,
        namespaces: Store<PartialObjectMeta<Namespace>>,
        policies: Store<DockerSocketPolicy>,
    ) -> Self {
        Self {
            pods,
            pod_index,
            namespaces,
            policies,
            set: Mutex::new(PolicySet::default()),
            synced: AtomicBool::new(false),
        }
    }

    pub fn mark_synced(&self) {
        self.synced.store(true, Ordering::Release);
    }

    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// The accepted `Enforce` policies this node applies (empty: do not enforce). Nothing
    /// before the caches have synced.
    pub fn enforced(&self) -> Vec<Enforced> {
        if !self.is_synced() {
            return Vec::new();
        }
        let objects = self.policies.state();
        let mut set = self.set.lock().unwrap_or_else(|p| p.into_inner());
        set.refresh(&objects);
        let mut out: Vec<Enforced> = set
            .applied()
            .iter()
            .filter(|p| p.mode == Mode::Enforce)
            .filter_map(|p| {
                let object = objects.iter().find(|o| o.name_any() == p.name)?;
                Some(Enforced {
                    name: p.name.clone(),
                    generation: object.metadata.generation.unwrap_or(0),
                })
            })
            .collect();
        out.sort();
        out
    }

    /// The verdict of container `c`'s cgroup: `None` while it cannot be judged (refused).
    pub fn verdict(&self, c: &ContainerRef) -> Option<u32> {
        let Some(uid) = c.pod_uid.as_deref() else {
            return Some(verdict::ALLOW);
        };
        if !self.is_synced() {
            return None;
        }
        let meta = self.pod_meta(uid, &c.id)?;
        let none = BTreeMap::new();
        let ns = self
            .namespaces
            .get(&ObjectRef::<PartialObjectMeta<Namespace>>::new(
                &meta.namespace,
            ));
        // The kernel refuses the container, not a binary in it: no executable.
        let subject = subject(&meta, ns.as_ref().map_or(&none, |n| n.labels()), None);
        let mut set = self.set.lock().unwrap_or_else(|p| p.into_inner());
        set.refresh(&self.policies.state());
        let enforced = [FindingOperation::Connect, FindingOperation::Open]
            .into_iter()
            .any(|op| {
                matches!(
                    evaluate(set.applied(), &subject, op),
                    Verdict::Report {
                        mode: Mode::Enforce,
                        ..
                    }
                )
            });
        Some(if enforced {
            verdict::BLOCK
        } else {
            verdict::ALLOW
        })
    }

    /// Pod `uid` of this node, as container `id` (its status's name and image for it when
    /// listed; before, the pod alone, with no image).
    fn pod_meta(&self, uid: &str, id: &str) -> Option<PodMeta> {
        if let Some(meta) = self.pod_index.lookup(id).filter(|m| m.uid == uid) {
            return Some(meta);
        }
        let pod = self
            .pods
            .state()
            .into_iter()
            .find(|p| p.uid().as_deref() == Some(uid))?;
        Some(PodMeta::from_pod(&pod, "", None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::compiled::testing::policy;
    use kube::runtime::{reflector, watcher};
    use serde_json::json;

    const WEB: &str = "0f2c1a3e-7d4b-4c1e-9a53-2b8f1e0c9d11";
    const TOOLS: &str = "11111111-2222-3333-4444-555555555555";
    const OTHER: &str = "99999999-2222-3333-4444-555555555555";

    fn pod(name: &str, namespace: &str, uid: &str, app: &str, sa: &str) -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "uid": uid, "labels": {"app": app}},
            "spec": {"serviceAccountName": sa, "nodeName": "n1", "containers": [{"name": "c", "image": "registry.example/c:1"}]},
        }))
        .unwrap()
    }

    fn container(pod_uid: Option<&str>) -> ContainerRef {
        ContainerRef {
            id: "c".repeat(64),
            runtime: Some("cri".into()),
            pod_uid: pod_uid.map(String::from),
        }
    }

    /// Verdicts over this node's pods and the cluster's policies.
    fn verdicts(pods: &[Pod], policies: &[DockerSocketPolicy]) -> ClusterVerdicts {
        let (pod_store, mut pod_writer) = reflector::store();
        for p in pods {
            pod_writer.apply_watcher_event(&watcher::Event::Apply(p.clone()));
        }
        let (policy_store, mut policy_writer) = reflector::store();
        for p in policies {
            policy_writer.apply_watcher_event(&watcher::Event::Apply(p.clone()));
        }
        let (ns_store, _) = reflector::store();
        ClusterVerdicts::new(pod_store, PodIndex::default(), ns_store, policy_store)
    }

    fn web_enforce(accepted: bool) -> DockerSocketPolicy {
        policy(
            "web-enforce",
            json!({
                "mode": "Enforce",
                "selector": {"podSelector": {"matchLabels": {"app": "web"}}},
                "exemptions": [
                    {"namespaces": ["tools"]},
                    // Narrowed by executable: it cannot lift a container's verdict.
                    {"namespaces": ["shop"], "serviceAccounts": ["shop/web-sa"], "executables": ["/usr/bin/agent"]},
                ],
            }),
            accepted,
        )
    }

    #[test]
    fn enforce_blocks_the_pods_it_selects_and_allows_the_exempt_and_the_unselected() {
        let v = verdicts(
            &[
                pod("web", "shop", WEB, "web", "web-sa"),
                pod("tool", "tools", TOOLS, "web", "default"),
                pod("other", "shop", OTHER, "other", "default"),
            ],
            &[web_enforce(true)],
        );
        // Nothing is judged before the caches have synced.
        assert_eq!(v.verdict(&container(Some(WEB))), None);
        assert!(v.enforced().is_empty());
        v.mark_synced();
        assert_eq!(v.verdict(&container(Some(WEB))), Some(verdict::BLOCK));
        assert_eq!(v.verdict(&container(Some(TOOLS))), Some(verdict::ALLOW));
        assert_eq!(v.verdict(&container(Some(OTHER))), Some(verdict::ALLOW));
        // A pod not in the cache yet: no verdict (refused until it is).
        assert_eq!(
            v.verdict(&container(Some("aaaaaaaa-0000-0000-0000-000000000000"))),
            None
        );
        // A container outside kubepods: no pod, no policy selects it.
        assert_eq!(v.verdict(&container(None)), Some(verdict::ALLOW));
        assert_eq!(
            v.enforced(),
            vec![Enforced {
                name: "web-enforce".into(),
                generation: 1
            }]
        );
    }

    #[test]
    fn nothing_is_enforced_by_an_audit_or_an_unaccepted_policy() {
        let pods = [pod("web", "shop", WEB, "web", "web-sa")];
        let audit = policy(
            "web-audit",
            json!({"selector": {"podSelector": {"matchLabels": {"app": "web"}}}}),
            true,
        );
        for policies in [vec![audit], vec![web_enforce(false)], vec![]] {
            let v = verdicts(&pods, &policies);
            v.mark_synced();
            assert!(v.enforced().is_empty(), "{policies:?}");
            assert_eq!(v.verdict(&container(Some(WEB))), Some(verdict::ALLOW));
        }
    }
}
