//! What every reconcile shares: the API client, the Event publisher, metrics, the probe
//! settings, the caches (reflector stores) of policies, findings, the probe DaemonSet and
//! the probes' reports,
//! and how a failed reconcile is retried.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use api::{DockerAbuseFinding, DockerSocketPolicy, DockerSocketProbe};
use k8s_openapi::{api::apps::v1::DaemonSet, jiff::Timestamp};
use kube::{
    runtime::{controller::Action, reflector::Store},
    Client,
};

use crate::{daemonset::ProbeSettings, events::EventPublisher, metrics::Metrics};

/// Field manager for every server-side apply.
pub const MANAGER: &str = "sockwarden-operator";

/// Which object a finding's Event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventTarget {
    Pod,
    Policy,
}

impl EventTarget {
    pub fn as_str(self) -> &'static str {
        match self {
            EventTarget::Pod => "pod",
            EventTarget::Policy => "policy",
        }
    }
}

pub struct Context {
    pub client: Client,
    pub events: EventPublisher,
    pub metrics: Arc<Metrics>,
    pub settings: ProbeSettings,
    pub policies: Store<DockerSocketPolicy>,
    pub findings: Store<DockerAbuseFinding>,
    /// The probe DaemonSet as its watch last showed it (status counts for policy status).
    pub daemonsets: Store<DaemonSet>,
    /// Each node's probe report, in sockwarden's namespace (what it enforces).
    pub probes: Store<DockerSocketProbe>,
    /// (finding uid, target) -> the count an Event on that target was last published for.
    pub evented: Mutex<HashMap<(String, EventTarget), i64>>,
    pub started: Timestamp,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
}

/// Transient errors (conflicts, throttling, server errors, timeouts) retry soon; the rest
/// later. Nothing is fatal. Shared by both controllers.
pub fn retry_after(controller: &str, error: &Error, ctx: &Context) -> Action {
    ctx.metrics
        .reconcile_errors
        .with_label_values(&[controller, &error.kind()])
        .inc();
    tracing::warn!(controller, %error, "reconcile failed; will retry");
    match error {
        Error::Kube(kube::Error::Api(s)) if s.code == 409 || s.code == 429 || s.code >= 500 => {
            Action::requeue(Duration::from_secs(2))
        }
        _ => Action::requeue(Duration::from_secs(30)),
    }
}

impl Error {
    /// A short label for metrics.
    pub fn kind(&self) -> String {
        match self {
            Error::Kube(kube::Error::Api(status)) => format!("api_{}", status.code),
            Error::Kube(_) => "client".into(),
        }
    }
}
