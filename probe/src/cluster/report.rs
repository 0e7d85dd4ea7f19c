//! This node's `DockerSocketProbe`: what its probe does (its backend; whether, how and for
//! which `Enforce` policies it enforces, or why not), applied by server-side apply whenever
//! that changes. It lives in sockwarden's namespace, is named after the node and is owned by
//! the probe's pod, so the garbage collector removes it with the pod: a report never outlives
//! the probe that wrote it. The operator reads them for the policies' `Enforced` condition.
use std::time::Duration;

use api::{DockerSocketProbe, DockerSocketProbeSpec};
use kube::{
    api::{Patch, PatchParams},
    Api, Client,
};
use tokio::{sync::watch, task::JoinHandle};

const MANAGER: &str = "sockwarden-probe";

/// The pod the probe runs in (the downward API's `metadata.*`), which owns its report.
#[derive(Debug, Clone)]
pub struct OwnPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// Applies each new spec sent on the returned channel (the latest wins; a failed apply is
/// retried, backing off to a minute, until it succeeds or a newer spec replaces it).
pub fn spawn(
    client: Client,
    pod: OwnPod,
    node: String,
    mut stop: watch::Receiver<bool>,
) -> (watch::Sender<Option<DockerSocketProbeSpec>>, JoinHandle<()>) {
    let (tx, mut rx) = watch::channel::<Option<DockerSocketProbeSpec>>(None);
    let api: Api<DockerSocketProbe> = Api::namespaced(client, &pod.namespace);
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { break },
                _ = stop.changed() => break,
            }
            let Some(spec) = rx.borrow_and_update().clone() else {
                continue;
            };
            let mut wait = Duration::from_secs(1);
            loop {
                match apply(&api, &pod, &node, &spec).await {
                    Ok(()) => {
                        tracing::info!(
                            node,
                            enforcing = spec.enforcing,
                            policies = spec.policies.len(),
                            "reported what this node enforces (DockerSocketProbe)"
                        );
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?wait, "writing this node's DockerSocketProbe failed")
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return,
                }
                wait = (wait * 2).min(Duration::from_secs(60));
                if rx.has_changed().unwrap_or(false) {
                    break; // a newer spec replaces this one
                }
            }
        }
    });
    (tx, task)
}

async fn apply(
    api: &Api<DockerSocketProbe>,
    pod: &OwnPod,
    node: &str,
    spec: &DockerSocketProbeSpec,
) -> Result<(), kube::Error> {
    let body = serde_json::json!({
        "apiVersion": "sockwarden.io/v1alpha1",
        "kind": "DockerSocketProbe",
        "metadata": {
            "name": node,
            "namespace": pod.namespace,
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "Pod", "name": pod.name, "uid": pod.uid,
            }],
        },
        "spec": spec,
    });
    api.patch(
        node,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}
