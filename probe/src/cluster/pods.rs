//! Who a container is in Kubernetes terms: pod, namespace, container name, image, service
//! account, labels and owning workload. Looked up by container id in a cache of this node's
//! pods (a reflector over `spec.nodeName=$NODE_NAME`), covering init and ephemeral
//! containers too.
use std::collections::BTreeMap;

use api::WorkloadRef;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::{runtime::reflector::Store, ResourceExt};

/// What a finding says about the pod a container belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodMeta {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub container_name: String,
    pub image: Option<String>,
    pub service_account: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// The pod's direct controller (`ReplicaSet`, `Job`, ...), resolved to its workload by
    /// [`super::owners`].
    pub controller: Option<(String, String)>,
    pub workload: Option<WorkloadRef>,
}

/// `containerd://<id>`, `docker://<id>`, `cri-o://<id>` -> `<id>`.
pub fn strip_runtime_prefix(container_id: &str) -> &str {
    container_id
        .split_once("://")
        .map_or(container_id, |(_, id)| id)
}

fn statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    let status = pod.status.as_ref();
    status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .chain(
            status
                .and_then(|s| s.init_container_statuses.as_ref())
                .into_iter()
                .flatten(),
        )
        .chain(
            status
                .and_then(|s| s.ephemeral_container_statuses.as_ref())
                .into_iter()
                .flatten(),
        )
}

/// The pod metadata for container `container_id` if `pod` runs it.
pub fn meta_for(pod: &Pod, container_id: &str) -> Option<PodMeta> {
    let status = statuses(pod).find(|s| {
        s.container_id
            .as_deref()
            .is_some_and(|id| strip_runtime_prefix(id) == container_id)
    })?;
    let controller = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| (o.kind.clone(), o.name.clone()));
    Some(PodMeta {
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        uid: pod.uid().unwrap_or_default(),
        container_name: status.name.clone(),
        image: Some(status.image.clone()).filter(|i| !i.is_empty()),
        service_account: pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone()),
        labels: pod.labels().clone(),
        controller,
        workload: None,
    })
}

/// Finds a container among the cached pods of this node.
pub fn lookup(pods: &Store<Pod>, container_id: &str) -> Option<PodMeta> {
    pods.state().iter().find_map(|p| meta_for(p, container_id))
}

#[cfg(test)]
pub(crate) fn pod_json(
    name: &str,
    uid: &str,
    containers: &[(&str, &str)],
    init: &[(&str, &str)],
) -> Pod {
    let status = |list: &[(&str, &str)]| -> Vec<serde_json::Value> {
        list.iter()
            .map(|(n, id)| serde_json::json!({"name": n, "containerID": format!("containerd://{id}"), "image": format!("registry.example/{n}:1"), "imageID": "", "ready": true, "restartCount": 0}))
            .collect()
    };
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "uid": uid, "labels": {"app": "web", "pod-template-hash": "7d4b9c"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c", "uid": "rs-uid", "controller": true}]},
        "spec": {"serviceAccountName": "web-sa", "nodeName": "n1", "containers": []},
        "status": {"containerStatuses": status(containers), "initContainerStatuses": status(init)}
    }))
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_init_containers_and_prefixes_are_found() {
        let pod = pod_json(
            "web-1",
            "u1",
            &[("app", "aaa"), ("side", "bbb")],
            &[("setup", "ccc")],
        );
        let m = meta_for(&pod, "bbb").unwrap();
        assert_eq!(
            (m.namespace.as_str(), m.name.as_str(), m.uid.as_str()),
            ("shop", "web-1", "u1")
        );
        assert_eq!(m.container_name, "side");
        assert_eq!(m.image.as_deref(), Some("registry.example/side:1"));
        assert_eq!(m.service_account.as_deref(), Some("web-sa"));
        assert_eq!(
            m.controller,
            Some(("ReplicaSet".into(), "web-7d4b9c".into()))
        );
        assert_eq!(meta_for(&pod, "ccc").unwrap().container_name, "setup");
        assert!(meta_for(&pod, "zzz").is_none());
        assert_eq!(strip_runtime_prefix("cri-o://abc"), "abc");
        assert_eq!(strip_runtime_prefix("abc"), "abc");
    }
}
