//! What every reconcile shares: the API client, the Event recorder, metrics, the probe
//! settings, and the caches (reflector stores) of policies and findings.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use api::{DockerAbuseFinding, DockerSocketPolicy};
use k8s_openapi::jiff::Timestamp;
use kube::{
    runtime::{events::Recorder, reflector::Store},
    Client,
};

use crate::{daemonset::ProbeSettings, metrics::Metrics};

/// Field manager for every server-side apply.
pub const MANAGER: &str = "sockwarden-operator";

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub settings: ProbeSettings,
    pub policies: Store<DockerSocketPolicy>,
    pub findings: Store<DockerAbuseFinding>,
    /// Finding uid -> the count Events were last published for.
    pub evented: Mutex<HashMap<String, i64>>,
    pub started: Timestamp,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
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
