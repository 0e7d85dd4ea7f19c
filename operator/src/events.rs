//! Writes `events.k8s.io/v1` Events itself instead of through kube-rs's `Recorder`, for
//! two reasons the API server imposes:
//!
//! - An Event about a cluster-scoped object (a `DockerSocketPolicy`) must live in
//!   `kube-system` on Kubernetes 1.20 (1.21+ also accept `default`, where the `Recorder`
//!   puts it). It goes to `kube-system` on every version; `regarding` still names the policy
//!   without a namespace, so `kubectl describe dsp` (which searches all namespaces) finds it.
//! - An Event's `note` cannot change after creation through `events.k8s.io/v1` (only its
//!   `series` can), so text that carries a current count is a new Event per count.
//!
//! Each Event gets a name the caller derives from what it reports (e.g. finding, target,
//! count). Creating it again — a retry whose first reply was lost, or a new leader
//! re-publishing — answers 409 AlreadyExists, which counts as published: no duplicates.
use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{api::PostParams, Api, Client};

/// Where Events about cluster-scoped objects are written.
pub const CLUSTER_EVENTS_NAMESPACE: &str = "kube-system";

/// What an Event says; the API's limits (reason and action 128, note 1 KiB) are the
/// caller's to keep.
pub struct NewEvent {
    pub warning: bool,
    pub reason: String,
    pub action: String,
    pub note: String,
    pub regarding: ObjectReference,
}

#[derive(Clone)]
pub struct EventPublisher {
    client: Client,
    controller: String,
    instance: String,
}

impl EventPublisher {
    /// `controller` names this operator (reportingController), `instance` the replica.
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        // reportingInstance: non-empty, at most 128 characters.
        let instance: String = instance.chars().take(128).collect();
        Self {
            client,
            controller: controller.into(),
            instance: if instance.is_empty() {
                controller.into()
            } else {
                instance
            },
        }
    }

    /// Creates the Event `name` (see [`event_name`]); an Event of that name already there
    /// counts as published.
    pub async fn publish(&self, name: &str, event: &NewEvent) -> Result<(), kube::Error> {
        let namespace = event_namespace(&event.regarding);
        let body = Event {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                ..Default::default()
            },
            event_time: Some(MicroTime(Timestamp::now())),
            type_: Some(if event.warning { "Warning" } else { "Normal" }.into()),
            reason: Some(event.reason.clone()),
            action: Some(event.action.clone()),
            note: Some(event.note.clone()),
            regarding: Some(event.regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        match api.create(&PostParams::default(), &body).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The namespace an Event about `regarding` belongs in.
pub fn event_namespace(regarding: &ObjectReference) -> &str {
    match regarding.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => ns,
        _ => CLUSTER_EVENTS_NAMESPACE,
    }
}

/// A valid Event name (DNS subdomain) from `parts` joined by dots: lowercase, characters a
/// name may not hold become `-`, and no label starts or ends with `-` or is empty.
pub fn event_name(parts: &[&str]) -> String {
    let labels: Vec<String> = parts
        .iter()
        .flat_map(|p| p.split('.'))
        .map(|label| {
            label
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_lowercase()
                    } else {
                        '-'
                    }
                })
                .collect::<String>()
                .trim_matches('-')
                .to_string()
        })
        .filter(|l| !l.is_empty())
        .collect();
    let joined = labels.join(".");
    if joined.is_empty() {
        return "sockwarden".into();
    }
    if joined.len() <= MAX_NAME {
        return joined;
    }
    // Too long (a long name standing in for a uid): a prefix and a digest of the whole, so
    // names that differ only at the end (the count) stay apart.
    let digest = api::short_digest(&joined);
    let prefix = joined[..MAX_NAME - digest.len() - 1].trim_end_matches(['-', '.']);
    format!("{prefix}-{digest}")
}

/// Longest object name the API server accepts (a DNS subdomain).
const MAX_NAME: usize = 253;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{harness, status_error};

    fn policy_ref() -> ObjectReference {
        ObjectReference {
            api_version: Some("sockwarden.io/v1alpha1".into()),
            kind: Some("DockerSocketPolicy".into()),
            name: Some("audit-all".into()),
            uid: Some("uid-p".into()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn events_about_a_cluster_scoped_object_go_to_kube_system_and_name_it_without_namespace()
    {
        let h = harness();
        let publisher = h.ctx.events.clone();
        let mut api = h.api;
        let verifier = tokio::spawn(async move {
            let call = api
                .expect(
                    "POST",
                    "/apis/events.k8s.io/v1/namespaces/kube-system/events?",
                )
                .await;
            let b = &call.body;
            assert_eq!(b["apiVersion"], "events.k8s.io/v1");
            assert_eq!(b["metadata"]["name"], "uid-p.invalid.3");
            assert_eq!(b["metadata"]["namespace"], "kube-system");
            assert_eq!(
                b["regarding"],
                serde_json::json!({"apiVersion": "sockwarden.io/v1alpha1", "kind": "DockerSocketPolicy", "name": "audit-all", "uid": "uid-p"}),
                "no namespace: kubectl describe dsp finds it"
            );
            assert_eq!(b["type"], "Warning");
            assert_eq!(b["reportingController"], "sockwarden-operator");
            assert!(!b["reportingInstance"].as_str().unwrap().is_empty());
            let t = b["eventTime"].as_str().unwrap();
            assert!(t.len() == 27 && t.ends_with('Z'), "MicroTime: {t}");
            assert!(b["series"].is_null() && b["deprecatedCount"].is_null());
            call.echo();
        });
        publisher
            .publish(
                &event_name(&["uid-p", "invalid", "3"]),
                &NewEvent {
                    warning: true,
                    reason: "InvalidPolicy".into(),
                    action: "Validate".into(),
                    note: "bad".into(),
                    regarding: policy_ref(),
                },
            )
            .await
            .unwrap();
        verifier.await.unwrap();
    }

    #[tokio::test]
    async fn an_event_that_already_exists_counts_as_published_but_other_errors_do_not() {
        let h = harness();
        let publisher = h.ctx.events.clone();
        let mut api = h.api;
        let verifier = tokio::spawn(async move {
            api.expect("POST", "/namespaces/kube-system/events")
                .await
                .reply(409, status_error(409, "AlreadyExists"));
            api.expect("POST", "/namespaces/kube-system/events")
                .await
                .reply(422, status_error(422, "Invalid"));
        });
        let ev = NewEvent {
            warning: true,
            reason: "R".into(),
            action: "A".into(),
            note: "n".into(),
            regarding: policy_ref(),
        };
        publisher.publish("x", &ev).await.unwrap();
        assert!(publisher.publish("x", &ev).await.is_err());
        verifier.await.unwrap();
    }

    #[test]
    fn event_names_are_dns_subdomains() {
        assert_eq!(event_name(&["3F2A-uid", "pod", "12"]), "3f2a-uid.pod.12");
        assert_eq!(event_name(&["_a b_", "Pod"]), "a-b.pod");
        assert_eq!(event_name(&["a..b", "-x-"]), "a.b.x");
        let long = "a".repeat(300);
        let (one, two) = (
            event_name(&[&long, "pod", "1"]),
            event_name(&[&long, "pod", "2"]),
        );
        assert!(one.len() <= 253 && two.len() <= 253);
        assert_ne!(one, two, "the count past the cut still tells them apart");
        assert!(
            one.starts_with("aaaa") && one.as_bytes()[242] == b'-',
            "{one}"
        );
        assert_eq!(event_name(&["__"]), "sockwarden");
    }
}
