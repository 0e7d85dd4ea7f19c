//! Who a container is in Kubernetes terms: pod, namespace, container name, image, service
//! account, labels and owning workload, built from a pod object. Container ids are looked up in
//! [`super::pod_index::PodIndex`], fed by the watch of this node's pods
//! (`spec.nodeName=$NODE_NAME`), covering init and ephemeral containers too.
use std::collections::BTreeMap;

use api::WorkloadRef;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::ResourceExt;

/// What a finding says about the pod a container belongs to: everything a policy judges by.
///
/// Built only from a `Pod` object ([`PodMeta::from_pod`], [`meta_for`], [`meta_for_identity`]):
/// the private field keeps anyone else from assembling one out of partial data, so a pod is
/// never judged without its labels and service account.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    from_pod_object: FromPodObject,
}

/// Private: only this module can build a [`PodMeta`] (`#[non_exhaustive]` would only keep
/// other crates out).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FromPodObject;

/// Which pod and container a container id is, as the runtime's CRI labels say (kubelet sets
/// them when it creates the container, before the pod's status lists it). Enough to find the
/// pod object; not enough to judge by: it has no labels, service account or owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIdentity {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub container_name: String,
    /// The image as the runtime names it.
    pub image: Option<String>,
}

impl PodMeta {
    /// Container `container_name` of `pod`. The image is the runtime's name for it
    /// (`runtime_image`: the container status's, or CRI's, which kubelet copies into that
    /// status) so a container is judged by one image string whether or not its status exists
    /// yet; else the image the pod spec gives that container.
    pub fn from_pod(pod: &Pod, container_name: &str, runtime_image: Option<&str>) -> Self {
        let controller = pod
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| (o.kind.clone(), o.name.clone()));
        // A bare image id (`sha256:...`, what some runtimes report) names no image.
        let image = runtime_image
            .filter(|i| !i.is_empty() && !i.starts_with("sha256:"))
            .map(str::to_string)
            .or_else(|| spec_image(pod, container_name));
        Self {
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
            uid: pod.uid().unwrap_or_default(),
            container_name: container_name.to_string(),
            image,
            service_account: pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone()),
            labels: pod.labels().clone(),
            controller,
            workload: None,
            from_pod_object: FromPodObject,
        }
    }
}

/// The image the pod spec gives container `name` (regular, init or ephemeral).
fn spec_image(pod: &Pod, name: &str) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
        .and_then(|c| c.image.clone())
        .or_else(|| {
            spec.ephemeral_containers
                .iter()
                .flatten()
                .find(|c| c.name == name)
                .and_then(|c| c.image.clone())
        })
        .filter(|i| !i.is_empty())
}

/// `containerd://<id>`, `docker://<id>`, `cri-o://<id>` -> `<id>`.
pub fn strip_runtime_prefix(container_id: &str) -> &str {
    container_id
        .split_once("://")
        .map_or(container_id, |(_, id)| id)
}

/// Every container status of `pod`: containers, init containers, ephemeral containers.
pub(crate) fn statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
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

/// The pod metadata for container `container_id` if `pod`'s status lists it.
pub fn meta_for(pod: &Pod, container_id: &str) -> Option<PodMeta> {
    let status = statuses(pod).find(|s| {
        s.container_id
            .as_deref()
            .is_some_and(|id| strip_runtime_prefix(id) == container_id)
    })?;
    Some(PodMeta::from_pod(pod, &status.name, Some(&status.image)))
}

/// The pod metadata for the container `identity` names, if `pod` is that very pod (same
/// namespace, name and uid: a pod recreated under the same name is another pod). Needs no
/// container status, so it works from the moment the container starts.
pub fn meta_for_identity(pod: &Pod, identity: &PodIdentity) -> Option<PodMeta> {
    let same = pod.namespace().as_deref() == Some(identity.namespace.as_str())
        && pod.name_any() == identity.name
        && pod.uid().as_deref() == Some(identity.uid.as_str());
    same.then(|| PodMeta::from_pod(pod, &identity.container_name, identity.image.as_deref()))
}

/// Finds a container by scanning every cached pod: what [`super::pod_index::PodIndex`]
/// replaced, kept to compare against it.
#[cfg(test)]
pub fn lookup(pods: &kube::runtime::reflector::Store<Pod>, container_id: &str) -> Option<PodMeta> {
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

/// A pod kubelet is starting: its spec names containers `containers` (image
/// `registry.example/<name>:1`), init container `setup` and ephemeral container `debug`, and
/// no container status exists yet.
#[cfg(test)]
pub(crate) fn starting_pod_json(name: &str, uid: &str, containers: &[&str]) -> Pod {
    let mut pod = serde_json::to_value(pod_json(name, uid, &[], &[])).unwrap();
    pod["spec"]["containers"] = containers
        .iter()
        .map(|n| serde_json::json!({"name": n, "image": format!("registry.example/{n}:1")}))
        .collect();
    pod["spec"]["initContainers"] =
        serde_json::json!([{"name": "setup", "image": "registry.example/setup:1"}]);
    pod["spec"]["ephemeralContainers"] =
        serde_json::json!([{"name": "debug", "image": "registry.example/debug:1"}]);
    pod["status"] = serde_json::json!({"phase": "Pending"});
    serde_json::from_value(pod).unwrap()
}

#[cfg(test)]
pub(crate) fn identity(name: &str, uid: &str, container: &str) -> PodIdentity {
    PodIdentity {
        namespace: "shop".into(),
        name: name.into(),
        uid: uid.into(),
        container_name: container.into(),
        image: None,
    }
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

    #[test]
    fn a_starting_container_gets_labels_service_account_owner_and_image_from_the_pod_spec() {
        let pod = starting_pod_json("web-1", "u1", &["app", "side"]);
        assert!(meta_for(&pod, "fresh").is_none(), "no status lists it yet");
        let m = meta_for_identity(&pod, &identity("web-1", "u1", "side")).unwrap();
        assert_eq!(
            (m.namespace.as_str(), m.name.as_str(), m.uid.as_str()),
            ("shop", "web-1", "u1")
        );
        assert_eq!(m.container_name, "side");
        assert_eq!(m.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(m.service_account.as_deref(), Some("web-sa"));
        assert_eq!(
            m.controller,
            Some(("ReplicaSet".into(), "web-7d4b9c".into()))
        );
        assert_eq!(m.image.as_deref(), Some("registry.example/side:1"));
        // init and ephemeral containers are found in the spec too
        let init = meta_for_identity(&pod, &identity("web-1", "u1", "setup")).unwrap();
        assert_eq!(init.image.as_deref(), Some("registry.example/setup:1"));
        let debug = meta_for_identity(&pod, &identity("web-1", "u1", "debug")).unwrap();
        assert_eq!(debug.image.as_deref(), Some("registry.example/debug:1"));
        // the runtime's name for the image wins, as it does once the status exists
        let mut named = identity("web-1", "u1", "app");
        named.image = Some("docker.io/registry.example/app:1".into());
        assert_eq!(
            meta_for_identity(&pod, &named).unwrap().image.as_deref(),
            Some("docker.io/registry.example/app:1")
        );
        named.image = Some("sha256:4f1d".into());
        assert_eq!(
            meta_for_identity(&pod, &named).unwrap().image.as_deref(),
            Some("registry.example/app:1"),
            "an image id is no name"
        );
    }

    #[test]
    fn an_identity_naming_another_pod_or_a_recreated_one_is_not_matched() {
        let pod = starting_pod_json("web-1", "u1", &["app"]);
        assert!(meta_for_identity(&pod, &identity("web-1", "u-old", "app")).is_none());
        assert!(meta_for_identity(&pod, &identity("web-2", "u1", "app")).is_none());
        let mut elsewhere = identity("web-1", "u1", "app");
        elsewhere.namespace = "other".into();
        assert!(meta_for_identity(&pod, &elsewhere).is_none());
    }
}
