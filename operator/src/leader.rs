//! Leader election on a `coordination.k8s.io/v1` Lease, so two replicas can run safely: only
//! the holder reconciles. A holder renews every third of the lease; a lease not renewed
//! within its duration may be taken over. Writes use the lease's resourceVersion, so two
//! candidates racing for it cannot both win (the loser gets 409 Conflict).
//!
//! The spec is what `kubectl get lease` and client-go expect: `holderIdentity`,
//! `leaseDurationSeconds`, `acquireTime` and `renewTime` as MicroTime (RFC 3339, six
//! fractional digits, UTC), `leaseTransitions` counting changes of holder. On SIGTERM the
//! leader [releases](LeaderElector::release) the lease (no holder, a one-second duration),
//! so another replica takes over at once instead of after the lease runs out.
use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference},
    jiff::{SignedDuration, Timestamp},
};
use kube::{api::PostParams, Api};

pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// The operator's Deployment: the Lease goes when the operator is uninstalled.
    owner: Option<OwnerReference>,
}

impl LeaderElector {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        Self {
            api,
            name: name.into(),
            identity: identity.into(),
            duration,
            owner: None,
        }
    }

    /// Makes `owner` the Lease's owner when this replica creates or takes it over.
    pub fn owned_by(mut self, owner: Option<OwnerReference>) -> Self {
        self.owner = owner;
        self
    }

    pub fn renew_interval(&self) -> Duration {
        self.duration / 3
    }

    fn spec(&self, now: Timestamp, acquire: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs() as i32),
            acquire_time: Some(MicroTime(acquire)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Takes or renews the lease. `Ok(true)`: we lead until at least now + duration.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    owner_references: self.owner.clone().map(|o| vec![o]),
                    ..Default::default()
                },
                spec: Some(self.spec(now, now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false), // someone else made it first
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
        let ours = holder == Some(self.identity.as_str());
        let duration = SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(15).into());
        let expired = spec
            .renew_time
            .as_ref()
            // Checked: a renewTime at the end of time must not panic (it reads as not expired).
            .is_none_or(|t| t.0.checked_add(duration).is_ok_and(|end| end < now));
        if !ours && !expired && holder.is_some() {
            return Ok(false);
        }
        let transitions =
            spec.lease_transitions
                .unwrap_or(0)
                .saturating_add(if ours { 0 } else { 1 });
        let acquire = if ours {
            spec.acquire_time.map_or(now, |t| t.0)
        } else {
            now
        };
        lease.spec = Some(self.spec(now, acquire, transitions));
        if let (Some(owner), None) = (&self.owner, &lease.metadata.owner_references) {
            lease.metadata.owner_references = Some(vec![owner.clone()]);
        }
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false), // lost the race
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up if we hold it: no holder, renewed now, lasting one second (the
    /// API's minimum), transitions unchanged. `Ok(true)` if released.
    pub async fn release(&self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(false);
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(false);
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        lease.spec = Some(spec);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false), // changed under us
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{harness, status_error};
    use serde_json::json;

    fn elector(h: &crate::testing::Harness, me: &str) -> LeaderElector {
        LeaderElector::new(
            Api::namespaced(h.ctx.client.clone(), "sockwarden-system"),
            "sockwarden-operator",
            me,
            Duration::from_secs(15),
        )
    }

    fn lease(holder: &str, renewed: Timestamp, transitions: i32) -> serde_json::Value {
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "sockwarden-operator", "namespace": "sockwarden-system", "resourceVersion": "41"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                     "renewTime": MicroTime(renewed), "acquireTime": MicroTime(renewed), "leaseTransitions": transitions}
        })
    }

    const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/sockwarden-system/leases";

    /// metav1.MicroTime on the wire: `2006-01-02T15:04:05.000000Z`, parseable.
    fn assert_micro_time(v: &serde_json::Value) {
        let t = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
        let b = t.as_bytes();
        assert_eq!(b.len(), 27, "{t}");
        assert!(b[19] == b'.' && b[26] == b'Z' && b[10] == b'T', "{t}");
        assert!(b[20..26].iter().all(u8::is_ascii_digit), "{t}");
        t.parse::<Timestamp>().unwrap();
    }

    #[tokio::test]
    async fn first_replica_creates_the_lease_and_leads() {
        let h = harness();
        let e = elector(&h, "pod-a");
        let mut api = h.api;
        let verifier = tokio::spawn(async move {
            api.expect("GET", &format!("{PATH}/sockwarden-operator"))
                .await
                .reply(404, status_error(404, "NotFound"));
            let call = api.expect("POST", PATH).await;
            assert_eq!(call.body["apiVersion"], "coordination.k8s.io/v1");
            assert_eq!(call.body["kind"], "Lease");
            assert_eq!(call.body["metadata"]["name"], "sockwarden-operator");
            let spec = &call.body["spec"];
            assert_eq!(spec["holderIdentity"], "pod-a");
            assert_eq!(spec["leaseDurationSeconds"], 15);
            assert_eq!(spec["leaseTransitions"], 0);
            for field in ["acquireTime", "renewTime"] {
                assert_micro_time(&spec[field]);
            }
            assert_eq!(spec["acquireTime"], spec["renewTime"]);
            call.echo();
        });
        assert!(e.try_acquire_or_renew().await.unwrap());
        verifier.await.unwrap();
    }

    #[tokio::test]
    async fn the_lease_is_owned_by_the_operator_deployment_so_uninstall_removes_it() {
        let h = harness();
        let owner = OwnerReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "sockwarden-operator".into(),
            uid: "dep-uid".into(),
            ..Default::default()
        };
        let e = elector(&h, "pod-a").owned_by(Some(owner));
        let mut api = h.api;
        let verifier = tokio::spawn(async move {
            api.expect("GET", &format!("{PATH}/sockwarden-operator"))
                .await
                .reply(404, status_error(404, "NotFound"));
            let call = api.expect("POST", PATH).await;
            let refs = &call.body["metadata"]["ownerReferences"];
            assert_eq!(refs[0]["kind"], "Deployment");
            assert_eq!(refs[0]["uid"], "dep-uid");
            call.echo();
        });
        assert!(e.try_acquire_or_renew().await.unwrap());
        verifier.await.unwrap();
    }

    #[tokio::test]
    async fn a_fresh_lease_held_by_another_replica_is_left_alone() {
        let h = harness();
        let e = elector(&h, "pod-b");
        let mut api = h.api;
        let verifier = tokio::spawn(async move {
            api.expect("GET", "/leases/sockwarden-operator")
                .await
                .reply(200, lease("pod-a", Timestamp::now(), 0));
            api.expect_silence().await;
        });
        assert!(!e.try_acquire_or_renew().await.unwrap());
        verifier.await.unwrap();
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_with_its_resource_version() {
        let h = harness();
        let e = elector(&h, "pod-b");
        let mut api = h.api;
        let verifier = tokio::spawn(async move {
            let stale = Timestamp::now() - SignedDuration::from_secs(60);
            api.expect("GET", "/leases/sockwarden-operator")
                .await
                .reply(200, lease("pod-a", stale, 2));
            let call = api.expect("PUT", "/leases/sockwarden-operator").await;
            assert_eq!(
                call.body["metadata"]["resourceVersion"], "41",
                "optimistic concurrency"
            );
            assert_eq!(call.body["spec"]["holderIdentity"], "pod-b");
            assert_eq!(call.body["spec"]["leaseTransitions"], 3);
            call.echo();
        });
        assert!(e.try_acquire_or_renew().await.unwrap());
        verifier.await.unwrap();
    }

    #[tokio::test]
    async fn losing_the_race_for_the_lease_is_not_leading_and_not_an_error() {
        let h = harness();
        let e = elector(&h, "pod-b");
        let mut api = h.api;
        let verifier = tokio::spawn(async move {
            let stale = Timestamp::now() - SignedDuration::from_secs(60);
            api.expect("GET", "/leases/sockwarden-operator")
                .await
                .reply(200, lease("pod-a", stale, 0));
            api.expect("PUT", "/leases/sockwarden-operator")
                .await
                .reply(409, status_error(409, "Conflict"));
        });
        assert!(!e.try_acquire_or_renew().await.unwrap());
        verifier.await.unwrap();
    }

    #[tokio::test]
    async fn the_holder_renews_without_a_transition() {
        let h = harness();
        let e = elector(&h, "pod-a");
        let mut api = h.api;
        let verifier = tokio::spawn(async move {
            api.expect("GET", "/leases/sockwarden-operator")
                .await
                .reply(200, lease("pod-a", Timestamp::now(), 4));
            let call = api.expect("PUT", "/leases/sockwarden-operator").await;
            assert_eq!(call.body["spec"]["leaseTransitions"], 4);
            call.echo();
        });
        assert!(e.try_acquire_or_renew().await.unwrap());
        verifier.await.unwrap();
    }

    #[tokio::test]
    async fn renewal_keeps_the_acquire_time_and_moves_the_renew_time() {
        let h = harness();
        let e = elector(&h, "pod-a");
        let mut api = h.api;
        let acquired = Timestamp::now() - SignedDuration::from_secs(5);
        let verifier = tokio::spawn(async move {
            api.expect("GET", "/leases/sockwarden-operator")
                .await
                .reply(200, lease("pod-a", acquired, 1));
            let call = api.expect("PUT", "/leases/sockwarden-operator").await;
            let spec = &call.body["spec"];
            assert_eq!(spec["acquireTime"], json!(MicroTime(acquired)));
            assert_micro_time(&spec["renewTime"]);
            assert!(
                spec["renewTime"]
                    .as_str()
                    .unwrap()
                    .parse::<Timestamp>()
                    .unwrap()
                    > acquired
            );
            assert_eq!(spec["holderIdentity"], "pod-a");
            call.echo();
        });
        assert!(e.try_acquire_or_renew().await.unwrap());
        verifier.await.unwrap();
    }

    #[tokio::test]
    async fn on_shutdown_the_leader_releases_the_lease_and_a_standby_takes_it_at_once() {
        let h = harness();
        let leader = elector(&h, "pod-a");
        let standby = elector(&h, "pod-b");
        let mut api = h.api;
        let verifier = tokio::spawn(async move {
            api.expect("GET", "/leases/sockwarden-operator")
                .await
                .reply(200, lease("pod-a", Timestamp::now(), 2));
            let call = api.expect("PUT", "/leases/sockwarden-operator").await;
            assert_eq!(call.body["metadata"]["resourceVersion"], "41");
            let spec = call.body["spec"].clone();
            assert!(spec["holderIdentity"].is_null(), "holder cleared: {spec}");
            assert_eq!(spec["leaseDurationSeconds"], 1);
            assert_eq!(spec["leaseTransitions"], 2);
            assert_micro_time(&spec["renewTime"]);
            call.echo();
            // the standby sees the released lease (renewed just now) and takes it
            let mut released = lease("pod-a", Timestamp::now(), 2);
            released["spec"] = spec;
            api.expect("GET", "/leases/sockwarden-operator")
                .await
                .reply(200, released);
            let call = api.expect("PUT", "/leases/sockwarden-operator").await;
            assert_eq!(call.body["spec"]["holderIdentity"], "pod-b");
            assert_eq!(call.body["spec"]["leaseDurationSeconds"], 15);
            assert_eq!(call.body["spec"]["leaseTransitions"], 3);
            call.echo();
        });
        assert!(leader.release().await.unwrap());
        assert!(
            standby.try_acquire_or_renew().await.unwrap(),
            "no waiting for the old lease to run out"
        );
        verifier.await.unwrap();
    }

    #[tokio::test]
    async fn releasing_a_lease_held_by_another_replica_changes_nothing() {
        let h = harness();
        let e = elector(&h, "pod-b");
        let mut api = h.api;
        let verifier = tokio::spawn(async move {
            api.expect("GET", "/leases/sockwarden-operator")
                .await
                .reply(200, lease("pod-a", Timestamp::now(), 0));
            api.expect_silence().await;
        });
        assert!(!e.release().await.unwrap());
        verifier.await.unwrap();
    }
}
