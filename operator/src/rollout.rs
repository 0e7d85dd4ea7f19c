//! Keeps the probe DaemonSet as the operator's configuration renders it, and nothing else
//! moves it.
//!
//! The desired DaemonSet is computed once at start from the flags, the `--probe-settings`
//! file and the owner Deployment
//! (see [`owner_reference`]) and applied (server-side apply, forced) when this replica
//! starts leading. It holds no policy data, so the first apply of a new leader equals the
//! steady state — a restart or leader change rolls no probe — and policy create, change or
//! delete never touches it. After that, the DaemonSet watch feeds [`Rollout::observe`]: the
//! DaemonSet is re-applied only if it is gone, or if someone changed its spec (its
//! `metadata.generation` moved past the one our last apply produced) and a field the
//! operator sets differs; status-only changes cost no call. Tying re-applies to a new
//! generation keeps a server that normalises a field we send (so the comparison always
//! sees a difference) from causing an apply loop — before Kubernetes 1.27 even a no-op
//! apply bumps the resourceVersion and produces a watch event.
use std::{sync::Mutex, time::Duration};

use k8s_openapi::{
    api::apps::v1::{DaemonSet, Deployment},
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{
    api::{Patch, PatchParams},
    runtime::watcher,
    Api, ResourceExt,
};

use crate::{
    context::MANAGER,
    daemonset::{drifted, NAME},
};

pub struct Rollout {
    api: Api<DaemonSet>,
    desired: DaemonSet,
    /// `metadata.generation` of the DaemonSet as our last apply left it.
    applied_generation: Mutex<Option<i64>>,
}

impl Rollout {
    pub fn new(api: Api<DaemonSet>, desired: DaemonSet) -> Self {
        Self {
            api,
            desired,
            applied_generation: Mutex::new(None),
        }
    }

    /// Applies the desired DaemonSet.
    pub async fn apply(&self) -> Result<(), kube::Error> {
        let applied = self
            .api
            .patch(
                NAME,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&self.desired),
            )
            .await?;
        *self
            .applied_generation
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = applied.metadata.generation;
        Ok(())
    }

    /// Whether `observed` is a spec someone else wrote that differs from ours.
    fn edited(&self, observed: &DaemonSet) -> bool {
        let ours = *self
            .applied_generation
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        observed.metadata.generation != ours && drifted(&self.desired, observed)
    }

    /// Handles one event of the DaemonSet watch: re-applies if the DaemonSet drifted or was
    /// deleted. Returns whether policies should be reconciled (their status reads the
    /// DaemonSet's counts from the cache the watch fills).
    pub async fn observe(&self, event: &watcher::Event<DaemonSet>) -> Result<bool, kube::Error> {
        match event {
            watcher::Event::Apply(ds) | watcher::Event::InitApply(ds) => {
                if self.edited(ds) {
                    tracing::warn!(
                        daemonset = %ds.name_any(),
                        "the probe DaemonSet differs from the operator's configuration; re-applying"
                    );
                    self.apply().await?;
                }
                // Initial objects are in the cache only once the listing is done.
                Ok(matches!(event, watcher::Event::Apply(_)))
            }
            watcher::Event::Delete(_) => {
                tracing::warn!("the probe DaemonSet was deleted; re-creating it");
                self.apply().await?;
                Ok(true)
            }
            watcher::Event::Init => Ok(false),
            watcher::Event::InitDone => Ok(true),
        }
    }
}

/// The ownerReference naming the operator's Deployment `name`, so the garbage collector
/// deletes the DaemonSet with it (`helm uninstall`). Not a controller reference and no
/// `blockOwnerDeletion` (that would need update rights on the Deployment's finalizers).
/// A missing Deployment or a refused read (404/403) gives no owner, with a warning; other
/// errors are retried with backoff (up to `max_delay` apart).
pub async fn owner_reference(
    api: &Api<Deployment>,
    name: &str,
    first_delay: Duration,
    max_delay: Duration,
) -> Option<OwnerReference> {
    let mut delay = first_delay;
    loop {
        match api.get(name).await {
            Ok(d) => match d.metadata.uid {
                Some(uid) => {
                    return Some(OwnerReference {
                        api_version: "apps/v1".into(),
                        kind: "Deployment".into(),
                        name: name.into(),
                        uid,
                        controller: Some(false),
                        block_owner_deletion: None,
                    })
                }
                None => tracing::warn!(deployment = name, "the owner Deployment has no uid yet"),
            },
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 403 => {
                tracing::warn!(
                    deployment = name,
                    code = s.code,
                    error = %s.message,
                    "cannot read the owner Deployment; the probe DaemonSet gets no owner and outlives the operator's uninstall (delete it by hand, or fix --owner-deployment / RBAC get on deployments)"
                );
                return None;
            }
            Err(e) => {
                tracing::warn!(deployment = name, error = %e, retry_in = ?delay, "reading the owner Deployment failed; retrying");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(max_delay);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        daemonset::{probe_daemonset, ProbeSettings},
        testing::{harness, status_error, Harness},
    };
    use api::DockerSocketPolicy;
    use serde_json::{json, Value};

    fn rollout(h: &Harness, owner: Option<&OwnerReference>) -> Rollout {
        Rollout::new(
            Api::namespaced(h.ctx.client.clone(), "sockwarden-system"),
            probe_daemonset(&ProbeSettings::default(), owner),
        )
    }

    /// What the API server would show for `applied`: server defaults, a generation and a
    /// status added.
    fn as_served(applied: &Value, generation: i64, ready: i32) -> DaemonSet {
        let mut v = applied.clone();
        v["metadata"]["resourceVersion"] = json!("10");
        v["metadata"]["generation"] = json!(generation);
        v["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        v["status"] = json!({"desiredNumberScheduled": 2, "numberReady": ready, "currentNumberScheduled": 2, "numberMisscheduled": 0});
        serde_json::from_value(v).unwrap()
    }

    fn policy(name: &str) -> DockerSocketPolicy {
        DockerSocketPolicy::new(
            name,
            serde_json::from_value(
                json!({"sockets": [{"path": "/srv/docker/api.sock", "runtime": "docker"}]}),
            )
            .unwrap(),
        )
    }

    #[tokio::test]
    async fn the_start_apply_and_a_later_reapply_send_identical_bodies_whatever_the_policies() {
        let mut h = harness();
        let r = rollout(&h, None);
        let mut api = h.api;
        let verifier = tokio::spawn(async move {
            let first = api
                .expect(
                    "PATCH",
                    "/apis/apps/v1/namespaces/sockwarden-system/daemonsets/sockwarden-probe?",
                )
                .await;
            assert!(first.uri.contains("fieldManager=sockwarden-operator"));
            assert!(first.uri.contains("force=true"));
            let body = first.body.clone();
            let mut served = body.clone();
            served["metadata"]["generation"] = json!(1);
            first.reply(200, served);
            // policy added, DaemonSet status moved: no call; then an edited image: re-apply
            let second = api.expect("PATCH", "/daemonsets/sockwarden-probe?").await;
            assert_eq!(second.body, body, "the re-apply equals the start apply");
            second.echo();
            api.expect_silence().await;
            body
        });
        r.apply().await.unwrap();
        let applied = serde_json::to_value(&r.desired).unwrap();

        h.policies
            .apply_watcher_event(&watcher::Event::Apply(policy("extra-sockets")));
        let event = watcher::Event::Apply(as_served(&applied, 1, 1));
        assert!(
            r.observe(&event).await.unwrap(),
            "a status change reconciles policies"
        );
        h.policies
            .apply_watcher_event(&watcher::Event::Delete(policy("extra-sockets")));
        let mut edited = applied.clone();
        edited["spec"]["template"]["spec"]["containers"][0]["image"] = json!("other:1");
        assert!(r
            .observe(&watcher::Event::Apply(as_served(&edited, 2, 2)))
            .await
            .unwrap());
        let body = verifier.await.unwrap();
        assert!(
            !body.to_string().contains("/srv/docker"),
            "no policy data in the DaemonSet"
        );
    }

    #[tokio::test]
    async fn a_deleted_daemonset_is_recreated_and_initial_objects_wait_for_the_listing() {
        let h = harness();
        let r = rollout(&h, None);
        let applied = serde_json::to_value(&r.desired).unwrap();
        let mut api = h.api;
        let verifier = tokio::spawn(async move {
            api.expect("PATCH", "/daemonsets/sockwarden-probe?")
                .await
                .echo();
            api.expect_silence().await;
        });
        assert!(!r.observe(&watcher::Event::Init).await.unwrap());
        assert!(!r
            .observe(&watcher::Event::InitApply(as_served(&applied, 4, 2)))
            .await
            .unwrap());
        assert!(r.observe(&watcher::Event::InitDone).await.unwrap());
        assert!(r
            .observe(&watcher::Event::Delete(as_served(&applied, 4, 2)))
            .await
            .unwrap());
        verifier.await.unwrap();
    }

    #[tokio::test]
    async fn a_field_the_server_normalises_does_not_cause_an_apply_loop() {
        let h = harness();
        let r = rollout(&h, None);
        let mut normalised = serde_json::to_value(&r.desired).unwrap();
        normalised["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] =
            json!("0.05");
        let served = normalised.clone();
        let mut api = h.api;
        let verifier = tokio::spawn(async move {
            let call = api.expect("PATCH", "/daemonsets/sockwarden-probe?").await;
            let mut reply = served;
            reply["metadata"]["generation"] = json!(6);
            call.reply(200, reply);
            api.expect_silence().await;
        });
        r.apply().await.unwrap();
        // Every later watch event shows the normalised value at the generation we made.
        for ready in [0, 1, 2] {
            let ds = as_served(&normalised, 6, ready);
            assert!(drifted(&r.desired, &ds));
            assert!(r.observe(&watcher::Event::Apply(ds)).await.unwrap());
        }
        verifier.await.unwrap();
    }

    #[tokio::test]
    async fn the_owner_deployment_becomes_the_daemonsets_owner() {
        let h = harness();
        let deployments: Api<Deployment> =
            Api::namespaced(h.ctx.client.clone(), "sockwarden-system");
        let mut api = h.api;
        let verifier = tokio::spawn(async move {
            api.expect(
                "GET",
                "/apis/apps/v1/namespaces/sockwarden-system/deployments/sockwarden-operator",
            )
            .await
            .reply(500, status_error(500, "InternalError"));
            api.expect("GET", "/deployments/sockwarden-operator")
                .await
                .reply(
                    200,
                    json!({"apiVersion": "apps/v1", "kind": "Deployment",
                           "metadata": {"name": "sockwarden-operator", "namespace": "sockwarden-system", "uid": "d-uid-1"},
                           "spec": {"selector": {}, "template": {}}}),
                );
        });
        let owner = owner_reference(
            &deployments,
            "sockwarden-operator",
            Duration::from_millis(10),
            Duration::from_millis(50),
        )
        .await
        .expect("a server error is retried");
        verifier.await.unwrap();
        let ds =
            serde_json::to_value(probe_daemonset(&ProbeSettings::default(), Some(&owner))).unwrap();
        assert_eq!(
            ds["metadata"]["ownerReferences"],
            json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "sockwarden-operator", "uid": "d-uid-1", "controller": false}]),
            "not a controller, no blockOwnerDeletion"
        );
    }

    #[tokio::test]
    async fn a_missing_or_forbidden_owner_deployment_means_no_owner_and_no_crash() {
        for code in [404, 403] {
            let h = harness();
            let deployments: Api<Deployment> =
                Api::namespaced(h.ctx.client.clone(), "sockwarden-system");
            let mut api = h.api;
            let verifier = tokio::spawn(async move {
                api.expect("GET", "/deployments/gone")
                    .await
                    .reply(code, status_error(code, "NotFound"));
                api.expect_silence().await;
            });
            let owner = owner_reference(
                &deployments,
                "gone",
                Duration::from_millis(10),
                Duration::from_millis(50),
            )
            .await;
            assert_eq!(owner, None, "{code}");
            verifier.await.unwrap();
        }
    }
}
