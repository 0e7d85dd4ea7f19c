//! The workload behind a pod: a ReplicaSet's Deployment, a Job's CronJob, or the controller
//! itself. The owner's own owner reference is read from the API (cached); when that is not
//! possible (no permission, API down) the Deployment is derived from kubelet's naming (a
//! ReplicaSet is `<deployment>-<pod-template-hash>`), and a Job stays a Job.
use std::collections::{BTreeMap, HashMap};

use api::WorkloadRef;
use k8s_openapi::api::{apps::v1::ReplicaSet, batch::v1::Job};
use kube::{Api, Client, ResourceExt};

/// The workload, given the pod's controller and, if known, that controller's controller.
pub fn workload(
    controller: Option<&(String, String)>,
    owner_of_controller: Option<(String, String)>,
    pod_labels: &BTreeMap<String, String>,
    pod_name: &str,
) -> WorkloadRef {
    let Some((kind, name)) = controller else {
        return WorkloadRef {
            kind: "Pod".into(),
            name: pod_name.into(),
        };
    };
    if let Some((kind, name)) = owner_of_controller {
        return WorkloadRef { kind, name };
    }
    if kind == "ReplicaSet" {
        if let Some(hash) = pod_labels.get("pod-template-hash") {
            if let Some(deployment) = name.strip_suffix(&format!("-{hash}")) {
                return WorkloadRef {
                    kind: "Deployment".into(),
                    name: deployment.into(),
                };
            }
        }
    }
    WorkloadRef {
        kind: kind.clone(),
        name: name.clone(),
    }
}

/// Looks up owners of ReplicaSets and Jobs, remembering answers.
pub struct OwnerResolver {
    client: Option<Client>,
    cache: HashMap<(String, String, String), Option<(String, String)>>,
}

impl OwnerResolver {
    pub fn new(client: Option<Client>) -> Self {
        Self {
            client,
            cache: HashMap::new(),
        }
    }

    pub async fn resolve(
        &mut self,
        namespace: &str,
        controller: Option<&(String, String)>,
        labels: &BTreeMap<String, String>,
        pod_name: &str,
    ) -> WorkloadRef {
        let owner = match controller {
            Some((kind, name)) if kind == "ReplicaSet" || kind == "Job" => {
                self.owner_of(namespace, kind, name).await
            }
            _ => None,
        };
        workload(controller, owner, labels, pod_name)
    }

    async fn owner_of(
        &mut self,
        namespace: &str,
        kind: &str,
        name: &str,
    ) -> Option<(String, String)> {
        let key = (namespace.to_string(), kind.to_string(), name.to_string());
        if let Some(hit) = self.cache.get(&key) {
            return hit.clone();
        }
        let client = self.client.clone()?;
        let refs = match kind {
            "ReplicaSet" => Api::<ReplicaSet>::namespaced(client, namespace)
                .get_opt(name)
                .await
                .map(|o| o.map(|o| o.owner_references().to_vec())),
            _ => Api::<Job>::namespaced(client, namespace)
                .get_opt(name)
                .await
                .map(|o| o.map(|o| o.owner_references().to_vec())),
        };
        let owner = match refs {
            Ok(Some(refs)) => refs
                .into_iter()
                .find(|o| o.controller == Some(true))
                .map(|o| (o.kind, o.name)),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(error = %e, kind, name, "owner lookup failed; using naming conventions");
                return None; // not cached: try again next time
            }
        };
        if self.cache.len() > 4096 {
            self.cache.clear();
        }
        self.cache.insert(key, owner.clone());
        owner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(hash: &str) -> BTreeMap<String, String> {
        [("pod-template-hash".to_string(), hash.to_string())].into()
    }

    #[test]
    fn owner_resolution_table() {
        let rs = ("ReplicaSet".to_string(), "web-7d4b9c".to_string());
        let job = ("Job".to_string(), "backup-29000000".to_string());
        let sts = ("StatefulSet".to_string(), "db".to_string());
        let cases = [
            // the API said who owns the ReplicaSet / Job
            (
                Some(&rs),
                Some(("Deployment".to_string(), "web".to_string())),
                labels("7d4b9c"),
                ("Deployment", "web"),
            ),
            (
                Some(&job),
                Some(("CronJob".to_string(), "backup".to_string())),
                BTreeMap::new(),
                ("CronJob", "backup"),
            ),
            // no API answer: kubelet naming for ReplicaSets, the Job itself otherwise
            (Some(&rs), None, labels("7d4b9c"), ("Deployment", "web")),
            (
                Some(&rs),
                None,
                labels("other"),
                ("ReplicaSet", "web-7d4b9c"),
            ),
            (
                Some(&job),
                None,
                BTreeMap::new(),
                ("Job", "backup-29000000"),
            ),
            (Some(&sts), None, BTreeMap::new(), ("StatefulSet", "db")),
            (None, None, BTreeMap::new(), ("Pod", "bare-pod")),
        ];
        for (controller, owner, l, (kind, name)) in cases {
            let w = workload(controller, owner, &l, "bare-pod");
            assert_eq!(
                (w.kind.as_str(), w.name.as_str()),
                (kind, name),
                "{controller:?}"
            );
        }
    }
}
