//! The probe's side of policies: the cluster's `DockerSocketPolicy` objects compiled once per
//! generation ([`api::compiled::PolicySet`]: only those the operator accepted, never a part of
//! one), and a pod on this node put in the terms they judge by. Nothing a pod sets about itself
//! (labels, image, binaries) exempts it without the namespace or service account an exemption
//! is anchored to; sockwarden's own probe is recognised by its process, not by a label.
use std::{collections::BTreeMap, sync::Arc};

use api::{
    compiled::{evaluate, PolicySet, Skipped, Subject, Verdict},
    DockerSocketPolicy, FindingOperation,
};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::{
    core::PartialObjectMeta,
    runtime::reflector::{ObjectRef, Store},
    ResourceExt,
};

use super::pods::PodMeta;
use crate::metrics::Metrics;

pub use api::compiled::{DEFAULT_POLICY, DEFAULT_SEVERITY};

pub struct Policies {
    set: PolicySet,
    metrics: Arc<Metrics>,
}

fn service_account(sa: Option<&String>) -> &str {
    sa.map_or("default", String::as_str)
}

/// What policies judge about container `meta` running `exe` (its namespace's labels
/// `ns_labels`): the findings' verdicts and enforcement's (`super::verdicts`) alike.
pub fn subject<'a>(
    meta: &'a PodMeta,
    ns_labels: &'a BTreeMap<String, String>,
    exe: Option<&'a str>,
) -> Subject<'a> {
    Subject {
        namespace: &meta.namespace,
        namespace_labels: ns_labels,
        pod_labels: &meta.labels,
        service_account: service_account(meta.service_account.as_ref()),
        image: meta.image.as_deref(),
        executable: exe,
    }
}

impl Policies {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            set: PolicySet::default(),
            metrics,
        }
    }

    /// Follows the cluster's policies; says once why a policy is not applied.
    pub fn refresh(&mut self, objects: &[Arc<DockerSocketPolicy>]) {
        for (name, why) in self.set.refresh(objects) {
            match why {
                Skipped::NotAccepted => {
                    tracing::info!(policy = %name, "policy not applied: the operator has not accepted its current generation")
                }
                Skipped::Invalid(problems) => {
                    tracing::warn!(policy = %name, problems = %problems.join("; "), "policy not applied: invalid")
                }
            }
        }
        self.metrics.policies_invalid.set(self.set.skipped() as i64);
    }

    pub fn verdict(
        &self,
        meta: &PodMeta,
        ns_labels: &BTreeMap<String, String>,
        exe: Option<&str>,
        op: FindingOperation,
    ) -> Verdict {
        evaluate(self.set.applied(), &subject(meta, ns_labels, exe), op)
    }

    /// Counts this node's pods that no applied policy selects, for the
    /// `sockwarden_probe_pods_out_of_scope` gauge: "out of scope" is visible, not silent.
    pub fn count_out_of_scope(
        &self,
        pods: &Store<Pod>,
        namespaces: &Store<PartialObjectMeta<Namespace>>,
    ) {
        let none = BTreeMap::new();
        let out = pods
            .state()
            .iter()
            .filter(|pod| {
                let ns = pod.namespace().unwrap_or_default();
                let ns_obj = namespaces.get(&ObjectRef::new(&ns));
                let subject = Subject {
                    namespace: &ns,
                    namespace_labels: ns_obj.as_ref().map_or(&none, |n| n.labels()),
                    pod_labels: pod.labels(),
                    service_account: service_account(
                        pod.spec
                            .as_ref()
                            .and_then(|s| s.service_account_name.as_ref()),
                    ),
                    image: None,
                    executable: None,
                };
                !self.set.in_scope(&subject)
            })
            .count();
        self.metrics.pods_out_of_scope.set(out as i64);
    }
}
