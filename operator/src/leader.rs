//! Leader election on a `coordination.k8s.io/v1` Lease, so two replicas can run safely: only
//! the holder reconciles. A holder renews every third of the lease; a lease not renewed
//! within its duration may be taken over. Writes use the lease's resourceVersion, so two
//! candidates racing for it cannot both win (the loser gets 409 Conflict).
use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::{SignedDuration, Timestamp},
};
use kube::{api::PostParams, Api};

pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl LeaderElector {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        Self {
            api,
            name: name.into(),
            identity: identity.into(),
            duration,
        }
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
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let duration = SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(15).into());
        let expired = spec
            .renew_time
            .as_ref()
            .is_none_or(|t| t.0 + duration < now);
        if !ours && !expired && spec.holder_identity.is_some() {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + if ours { 0 } else { 1 };
        let acquire = if ours {
            spec.acquire_time.map_or(now, |t| t.0)
        } else {
            now
        };
        lease.spec = Some(self.spec(now, acquire, transitions));
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
            assert_eq!(call.body["spec"]["holderIdentity"], "pod-a");
            assert_eq!(call.body["spec"]["leaseDurationSeconds"], 15);
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
}
