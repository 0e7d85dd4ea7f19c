//! Reconciles `DockerAbuseFinding` objects: publishes a Warning Event on the offending Pod
//! and on the policy when a finding appears or its count grows, deletes findings past their
//! policy's TTL or beyond its per-namespace limit, and keeps the findings gauge current.
//!
//! Events are tracked per (finding, target): each target's Event is sent once per count,
//! and a failure on one target makes the retry send only what is still missing. The text
//! carries the count it was published for; since an Event's note cannot change, a grown
//! count is a new Event (named after finding, target and count, so re-sending one that
//! made it is a harmless AlreadyExists). The policy's Events live in `kube-system` (see
//! [`crate::events`]).
use std::{collections::HashMap, sync::Arc, time::Duration};

use api::{
    DockerAbuseFinding, DockerSocketPolicy, FindingAction, FindingOperation, FindingsRetention,
};
use k8s_openapi::{
    api::core::v1::ObjectReference,
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    api::DeleteParams,
    runtime::{controller::Action, reflector::ObjectRef},
    Api, Resource, ResourceExt,
};

use crate::{
    context::{retry_after, Context, Error, EventTarget},
    events::{event_name, NewEvent},
    retention::{count, evicted, expires_at, seen_at, ttl_secs},
};

/// Findings last seen this long before the operator started still get Events on start-up.
const STARTUP_GRACE: SignedDuration = SignedDuration::from_mins(5);
const MAX_REQUEUE: Duration = Duration::from_secs(3600);

pub async fn reconcile(
    finding: Arc<DockerAbuseFinding>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let timer = ctx
        .metrics
        .reconcile_duration
        .with_label_values(&["finding"])
        .start_timer();
    ctx.metrics.reconciles.with_label_values(&["finding"]).inc();
    let result = reconcile_inner(&finding, &ctx).await;
    refresh_gauge(&ctx);
    prune_events(&ctx);
    timer.observe_duration();
    result
}

/// What becomes of a finding, decided from the caches and the operator's clock alone.
#[derive(Debug, PartialEq)]
pub(crate) enum Verdict {
    /// Past its TTL.
    Expired,
    /// Beyond its policy's `maxPerNamespace` (see [`crate::retention`] for which go).
    BeyondLimit,
    /// Kept; look again after this long (at expiry, at most hourly).
    Keep(Duration),
}

pub(crate) fn verdict(
    finding: &DockerAbuseFinding,
    retention: Option<&FindingsRetention>,
    cache: &[Arc<DockerAbuseFinding>],
    now: Timestamp,
) -> Verdict {
    let expires = expires_at(seen_at(finding, now), ttl_secs(retention));
    if expires.is_some_and(|e| now >= e) {
        return Verdict::Expired;
    }
    if let Some(max) = retention.and_then(|r| r.max_per_namespace) {
        let siblings = cache.iter().map(AsRef::as_ref).filter(|f| {
            f.namespace() == finding.namespace() && f.spec.policy == finding.spec.policy
        });
        if evicted(siblings, max as usize, now).contains(&finding.name_any()) {
            return Verdict::BeyondLimit;
        }
    }
    let until_expiry = expires.map_or(MAX_REQUEUE, |e| e.duration_since(now).unsigned_abs());
    Verdict::Keep(until_expiry.min(MAX_REQUEUE))
}

async fn reconcile_inner(finding: &DockerAbuseFinding, ctx: &Context) -> Result<Action, Error> {
    let namespace = finding.namespace().unwrap_or_default();
    let name = finding.name_any();
    let api: Api<DockerAbuseFinding> = Api::namespaced(ctx.client.clone(), &namespace);
    let policy = ctx
        .policies
        .get(&ObjectRef::<DockerSocketPolicy>::new(&finding.spec.policy));
    let retention = policy.as_ref().and_then(|p| p.spec.findings.as_ref());
    match verdict(finding, retention, &ctx.findings.state(), Timestamp::now()) {
        Verdict::Expired => {
            tracing::info!(%namespace, %name, "deleting finding past its TTL");
            delete(&api, finding, ctx, "ttl").await?;
            Ok(Action::await_change())
        }
        Verdict::BeyondLimit => {
            tracing::info!(%namespace, %name, "deleting finding beyond the per-namespace limit");
            delete(&api, finding, ctx, "limit").await?;
            Ok(Action::await_change())
        }
        Verdict::Keep(requeue) => {
            publish_events(finding, policy.as_deref(), ctx).await?;
            Ok(Action::requeue(requeue))
        }
    }
}

async fn delete(
    api: &Api<DockerAbuseFinding>,
    finding: &DockerAbuseFinding,
    ctx: &Context,
    reason: &str,
) -> Result<(), Error> {
    let name = finding.name_any();
    let uid = &finding.uid().unwrap_or_else(|| name.clone());
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {} // already gone
        Err(e) => return Err(e.into()),
    }
    forget_events(ctx, uid);
    ctx.metrics
        .findings_deleted
        .with_label_values(&[reason])
        .inc();
    Ok(())
}

pub(crate) fn describe(f: &DockerAbuseFinding) -> String {
    let op = match f.spec.operation {
        FindingOperation::Connect => "connected to",
        FindingOperation::Open => "opened",
    };
    let verb = match f.spec.action {
        FindingAction::Audit => "",
        FindingAction::Blocked => " (blocked)",
    };
    let process = f
        .spec
        .process
        .exe
        .clone()
        .unwrap_or_else(|| f.spec.process.comm.clone());
    let count = f.status.as_ref().map_or(1, |s| s.count);
    api::truncate(
        &format!(
            "container {} of pod {}/{} (process {process}, uid {}) {op} the {} socket {}{verb}; seen {count} time(s); finding {}",
            f.spec.container.name,
            f.namespace().unwrap_or_default(),
            f.spec.pod.name,
            f.spec.process.uid,
            f.spec.socket.runtime,
            f.spec.socket.host_path,
            f.name_any(),
        ),
        1000,
    )
}

async fn publish_events(
    finding: &DockerAbuseFinding,
    policy: Option<&DockerSocketPolicy>,
    ctx: &Context,
) -> Result<(), Error> {
    let uid = finding.uid().unwrap_or_else(|| finding.name_any());
    let count = finding.status.as_ref().map_or(1, |s| s.count);
    // First sight: publish unless it is old news from before this operator started.
    let since = ctx
        .started
        .checked_sub(STARTUP_GRACE)
        .unwrap_or(ctx.started);
    let fresh = seen_at(finding, Timestamp::now()) >= since;
    let pod = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(finding.spec.pod.name.clone()),
        namespace: finding.namespace(),
        uid: Some(finding.spec.pod.uid.clone()),
        ..Default::default()
    };
    let mut targets = vec![(EventTarget::Pod, pod)];
    if let Some(policy) = policy {
        targets.push((EventTarget::Policy, policy.object_ref(&())));
    }
    for (target, regarding) in targets {
        let key = (uid.clone(), target);
        let published = ctx
            .evented
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .copied();
        let due = match published {
            Some(seen) => count > seen,
            None => fresh,
        };
        if due {
            let event = NewEvent {
                warning: true,
                reason: "DockerSocketAbuse".into(),
                action: match finding.spec.action {
                    FindingAction::Audit => "Detected".into(),
                    FindingAction::Blocked => "Blocked".into(),
                },
                note: describe(finding),
                regarding,
            };
            let name = event_name(&[&uid, target.as_str(), &count.to_string()]);
            ctx.events.publish(&name, &event).await?;
        }
        // Recorded per target as soon as it is done: a later failure does not undo it.
        ctx.evented
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, count);
    }
    Ok(())
}

/// Forgets what was published for a finding that is gone.
fn forget_events(ctx: &Context, uid: &str) {
    ctx.evented
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|(u, _), _| u != uid);
}

/// Forgets findings no longer in the cache (deleted by someone else), so the bookkeeping
/// does not grow without bound.
fn prune_events(ctx: &Context) {
    let live: std::collections::HashSet<String> = ctx
        .findings
        .state()
        .iter()
        .map(|f| f.uid().unwrap_or_else(|| f.name_any()))
        .collect();
    ctx.evented
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|(u, _), _| live.contains(u));
}

/// Recomputes the findings gauge from the cache.
fn refresh_gauge(ctx: &Context) {
    let mut sums: HashMap<(String, &'static str, &'static str), i64> = HashMap::new();
    for f in ctx.findings.state() {
        // The same spellings as the objects and the probe's metric labels.
        let (op, action) = (f.spec.operation.as_str(), f.spec.action.as_str());
        let sum = sums
            .entry((f.namespace().unwrap_or_default(), op, action))
            .or_default();
        *sum = sum.saturating_add(count(&f, 1));
    }
    ctx.metrics.findings.reset();
    for ((ns, op, action), n) in sums {
        ctx.metrics
            .findings
            .with_label_values(&[&ns, op, action])
            .set(n);
    }
}

pub fn error_policy(_finding: Arc<DockerAbuseFinding>, error: &Error, ctx: Arc<Context>) -> Action {
    retry_after("finding", error, &ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{harness, status_error};
    use api::DockerAbuseFindingSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    fn finding(name: &str, policy: &str, count: i64, last_seen: Timestamp) -> DockerAbuseFinding {
        let spec: DockerAbuseFindingSpec = serde_json::from_value(json!({
            "signature": api::SignatureRef::trc_1019(), "node": "n1",
            "pod": {"name": "web-1", "uid": "pod-uid-1"}, "container": {"name": "app", "id": "c1", "image": "nginx"},
            "operation": "connect", "socket": {"hostPath": "/run/docker.sock", "runtime": "docker"},
            "process": {"exe": "/usr/bin/curl", "comm": "curl", "uid": 0}, "action": "Audit", "policy": policy, "severity": 2
        }))
        .unwrap();
        let mut f = DockerAbuseFinding::new(name, spec);
        f.metadata.namespace = Some("shop".into());
        f.metadata.uid = Some(format!("uid-{name}"));
        f.status = Some(api::DockerAbuseFindingStatus {
            count,
            first_seen: None,
            last_seen: Some(Time(last_seen)),
        });
        f
    }

    fn policy(name: &str, findings: serde_json::Value) -> DockerSocketPolicy {
        DockerSocketPolicy::new(
            name,
            serde_json::from_value(json!({"findings": findings})).unwrap(),
        )
    }

    #[tokio::test]
    async fn new_finding_publishes_warning_events_on_the_pod_and_the_policy_once_per_increase() {
        let mut h = harness();
        h.add_policy(&policy("audit-all", json!({"ttl": "10m"})));
        let f = finding("daf-1", "audit-all", 3, Timestamp::now());
        h.add_finding(&f);
        let (ctx, mut api) = (h.ctx.clone(), h.api);
        let verifier = tokio::spawn(async move {
            let call = api
                .expect("POST", "/apis/events.k8s.io/v1/namespaces/shop/events")
                .await;
            assert_eq!(call.body["type"], "Warning");
            assert_eq!(call.body["reason"], "DockerSocketAbuse");
            assert_eq!(call.body["regarding"]["kind"], "Pod");
            assert_eq!(call.body["regarding"]["name"], "web-1");
            assert_eq!(call.body["regarding"]["uid"], "pod-uid-1");
            let note = call.body["note"].as_str().unwrap();
            for part in [
                "container app",
                "shop/web-1",
                "/usr/bin/curl",
                "/run/docker.sock",
                "3 time(s)",
            ] {
                assert!(note.contains(part), "note lacks {part:?}: {note}");
            }
            assert_eq!(call.body["metadata"]["name"], "uid-daf-1.pod.3");
            call.echo();
            let call = api
                .expect(
                    "POST",
                    "/apis/events.k8s.io/v1/namespaces/kube-system/events",
                )
                .await;
            assert_eq!(call.body["regarding"]["kind"], "DockerSocketPolicy");
            assert_eq!(call.body["regarding"]["name"], "audit-all");
            assert_eq!(call.body["metadata"]["name"], "uid-daf-1.policy.3");
            call.echo();
            api.expect_silence().await; // the same count again: nothing
                                        // count grew: a new Event per target whose text carries the new count
            for (path, name) in [
                ("/namespaces/shop/events", "uid-daf-1.pod.4"),
                ("/namespaces/kube-system/events", "uid-daf-1.policy.4"),
            ] {
                let call = api.expect("POST", path).await;
                assert_eq!(call.body["metadata"]["name"], name);
                let note = call.body["note"].as_str().unwrap();
                assert!(note.contains("seen 4 time(s)"), "{note}");
                call.echo();
            }
            api.expect_silence().await;
        });
        let action = reconcile(Arc::new(f.clone()), ctx.clone()).await.unwrap();
        let Some(requeue) = action_requeue(&action) else {
            panic!("{action:?}")
        };
        assert!(
            requeue <= Duration::from_secs(600) && requeue > Duration::from_secs(590),
            "requeue at expiry: {requeue:?}"
        );
        reconcile(Arc::new(f.clone()), ctx.clone()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        let grown = finding("daf-1", "audit-all", 4, Timestamp::now());
        reconcile(Arc::new(grown), ctx.clone()).await.unwrap();
        verifier.await.unwrap();
        assert!(ctx.metrics.render().contains(
            r#"sockwarden_operator_findings{action="Audit",namespace="shop",operation="connect"} 3"#
        ));
    }

    #[tokio::test]
    async fn the_policy_event_goes_to_kube_system_naming_the_cluster_scoped_policy() {
        let mut h = harness();
        let mut p = policy("audit-all", json!({"ttl": "10m"}));
        p.metadata.uid = Some("policy-uid".into());
        h.add_policy(&p);
        let f = finding("daf-1", "audit-all", 1, Timestamp::now());
        h.add_finding(&f);
        let (ctx, mut api) = (h.ctx.clone(), h.api);
        let verifier = tokio::spawn(async move {
            api.expect("POST", "/apis/events.k8s.io/v1/namespaces/shop/events")
                .await
                .echo();
            let call = api
                .expect(
                    "POST",
                    "/apis/events.k8s.io/v1/namespaces/kube-system/events?",
                )
                .await;
            assert_eq!(call.body["metadata"]["namespace"], "kube-system");
            assert_eq!(
                call.body["regarding"],
                json!({"apiVersion": "sockwarden.io/v1alpha1", "kind": "DockerSocketPolicy",
                       "name": "audit-all", "uid": "policy-uid"}),
                "names the policy, with no namespace"
            );
            assert_eq!(call.body["reason"], "DockerSocketAbuse");
            assert_eq!(call.body["action"], "Detected");
            assert!(call.body["note"]
                .as_str()
                .unwrap()
                .contains("seen 1 time(s)"));
            call.echo();
            api.expect_silence().await;
        });
        reconcile(Arc::new(f), ctx).await.unwrap();
        verifier.await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_policy_event_is_retried_without_resending_the_pod_event() {
        let mut h = harness();
        h.add_policy(&policy("audit-all", json!({"ttl": "10m"})));
        let f = Arc::new(finding("daf-1", "audit-all", 3, Timestamp::now()));
        h.add_finding(&f);
        let (ctx, mut api) = (h.ctx.clone(), h.api);
        let verifier = tokio::spawn(async move {
            api.expect("POST", "/namespaces/shop/events").await.echo();
            api.expect("POST", "/namespaces/kube-system/events")
                .await
                .reply(422, status_error(422, "Invalid"));
            // the retry: only the policy's Event, still for count 3
            let call = api.expect("POST", "/namespaces/kube-system/events").await;
            assert_eq!(call.body["metadata"]["name"], "uid-daf-1.policy.3");
            assert!(call.body["note"]
                .as_str()
                .unwrap()
                .contains("seen 3 time(s)"));
            call.echo();
            api.expect_silence().await;
        });
        let err = reconcile(f.clone(), ctx.clone()).await.unwrap_err();
        assert_eq!(err.kind(), "api_422");
        reconcile(f.clone(), ctx.clone())
            .await
            .expect("the retry sends what is missing");
        reconcile(f, ctx.clone())
            .await
            .expect("nothing left to send");
        verifier.await.unwrap();
    }

    #[tokio::test]
    async fn long_ttls_requeue_at_most_hourly() {
        let mut h = harness();
        h.add_policy(&policy("long", json!({"ttl": "30d"})));
        // last seen before the operator started: no Events, just the requeue
        let f = finding(
            "daf-l",
            "long",
            1,
            Timestamp::now() - SignedDuration::from_hours(1),
        );
        let (ctx, mut api) = (h.ctx.clone(), h.api);
        let verifier = tokio::spawn(async move { api.expect_silence().await });
        let action = reconcile(Arc::new(f), ctx).await.unwrap();
        assert_eq!(action, Action::requeue(MAX_REQUEUE));
        verifier.await.unwrap();
    }

    #[tokio::test]
    async fn finding_past_its_ttl_is_deleted_without_events() {
        let mut h = harness();
        h.add_policy(&policy("short", json!({"ttl": "1h"})));
        let f = finding(
            "daf-old",
            "short",
            1,
            Timestamp::now() - SignedDuration::from_hours(2),
        );
        let (ctx, mut api) = (h.ctx.clone(), h.api);
        ctx.evented
            .lock()
            .unwrap()
            .insert(("uid-daf-old".into(), EventTarget::Pod), 1);
        let verifier = tokio::spawn(async move {
            let call = api
                .expect(
                    "DELETE",
                    "/apis/sockwarden.io/v1alpha1/namespaces/shop/dockerabusefindings/daf-old",
                )
                .await;
            call.reply(
                200,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
            );
            api.expect_silence().await;
        });
        assert_eq!(
            reconcile(Arc::new(f), ctx.clone()).await.unwrap(),
            Action::await_change()
        );
        verifier.await.unwrap();
        assert!(ctx
            .metrics
            .render()
            .contains(r#"sockwarden_operator_findings_deleted_total{reason="ttl"} 1"#));
        assert!(
            ctx.evented.lock().unwrap().is_empty(),
            "a deleted finding's Event bookkeeping is dropped"
        );
    }

    #[tokio::test]
    async fn without_a_policy_the_default_ttl_of_seven_days_applies() {
        let h = harness();
        let f = finding(
            "daf-x",
            "default",
            1,
            Timestamp::now() - SignedDuration::from_hours(24 * 8),
        );
        let (ctx, mut api) = (h.ctx.clone(), h.api);
        let verifier = tokio::spawn(async move {
            api.expect("DELETE", "/dockerabusefindings/daf-x")
                .await
                .reply(404, status_error(404, "NotFound"));
        });
        reconcile(Arc::new(f), ctx)
            .await
            .expect("already gone is fine");
        verifier.await.unwrap();
    }

    #[tokio::test]
    async fn oldest_findings_beyond_the_namespace_limit_are_deleted() {
        let mut h = harness();
        h.add_policy(&policy(
            "capped",
            json!({"ttl": "7d", "maxPerNamespace": 2}),
        ));
        let now = Timestamp::now();
        let newest = finding("daf-a", "capped", 1, now);
        let middle = finding("daf-b", "capped", 1, now - SignedDuration::from_mins(5));
        let oldest = finding("daf-c", "capped", 1, now - SignedDuration::from_mins(10));
        for f in [&newest, &middle, &oldest] {
            h.add_finding(f);
        }
        let (ctx, mut api) = (h.ctx.clone(), h.api);
        let verifier = tokio::spawn(async move {
            api.expect("DELETE", "/dockerabusefindings/daf-c")
                .await
                .reply(
                    200,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                );
        });
        reconcile(Arc::new(oldest), ctx).await.unwrap();
        verifier.await.unwrap();
    }

    #[tokio::test]
    async fn a_ttl_of_999999999h_neither_panics_nor_expires_and_requeues_hourly() {
        let mut h = harness();
        h.add_policy(&policy("forever", json!({"ttl": "999999999h"})));
        let f = finding(
            "daf-f",
            "forever",
            1,
            Timestamp::now() - SignedDuration::from_hours(24 * 365),
        );
        h.add_finding(&f);
        let (ctx, mut api) = (h.ctx.clone(), h.api);
        let verifier = tokio::spawn(async move { api.expect_silence().await });
        let action = reconcile(Arc::new(f), ctx).await.unwrap();
        assert_eq!(
            action,
            Action::requeue(MAX_REQUEUE),
            "kept (ten years at most)"
        );
        verifier.await.unwrap();
    }

    #[tokio::test]
    async fn a_last_seen_in_year_9999_is_not_believed_so_the_ttl_runs_from_creation() {
        let mut h = harness();
        h.add_policy(&policy("week", json!({"ttl": "7d"})));
        let mut f = finding("daf-9999", "week", 1, Timestamp::MAX);
        f.metadata.creation_timestamp =
            Some(Time(Timestamp::now() - SignedDuration::from_hours(24 * 8)));
        h.add_finding(&f);
        let (ctx, mut api) = (h.ctx.clone(), h.api);
        let verifier = tokio::spawn(async move {
            api.expect("DELETE", "/dockerabusefindings/daf-9999")
                .await
                .reply(
                    200,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                );
            api.expect_silence().await;
        });
        assert_eq!(
            reconcile(Arc::new(f), ctx).await.unwrap(),
            Action::await_change()
        );
        verifier.await.unwrap();
    }

    #[tokio::test]
    async fn over_the_limit_the_flooding_node_loses_its_findings_however_new_they_claim_to_be() {
        let mut h = harness();
        h.add_policy(&policy(
            "capped",
            json!({"ttl": "7d", "maxPerNamespace": 4}),
        ));
        let hour_ago = Timestamp::now() - SignedDuration::from_hours(1);
        let on = |name: &str, node: &str, last_seen: Timestamp| {
            let mut f = finding(name, "capped", 1, last_seen);
            f.spec.node = node.into();
            f.metadata.creation_timestamp = Some(Time(hour_ago));
            f
        };
        // Limit 4, five findings: "honest" has the two oldest, "flood" three, one of them
        // claiming year 9999 (under newest-first it would be kept and daf-h1 would go).
        let honest = [
            on("daf-h1", "honest", hour_ago),
            on("daf-h2", "honest", hour_ago + SignedDuration::from_mins(1)),
        ];
        let forged = on("daf-f0", "flood", Timestamp::MAX);
        let flood = [
            forged.clone(),
            on("daf-f1", "flood", hour_ago + SignedDuration::from_mins(20)),
            on("daf-f2", "flood", hour_ago + SignedDuration::from_mins(30)),
        ];
        for f in honest.iter().chain(&flood) {
            h.add_finding(f);
        }
        let (ctx, mut api) = (h.ctx.clone(), h.api);
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let verifier = tokio::spawn(async move {
            // The honest node's oldest is kept (no call at all: it is old news, no Events) ...
            api.expect_silence().await;
            tx.send(()).await.unwrap();
            // ... and the flood's forged one goes: it counts from its creation, the oldest.
            api.expect("DELETE", "/dockerabusefindings/daf-f0")
                .await
                .reply(
                    200,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                );
            api.expect_silence().await;
        });
        let kept = reconcile(Arc::new(honest[0].clone()), ctx.clone())
            .await
            .unwrap();
        assert_ne!(kept, Action::await_change());
        rx.recv().await.unwrap();
        reconcile(Arc::new(forged), ctx.clone()).await.unwrap();
        verifier.await.unwrap();
        assert!(ctx
            .metrics
            .render()
            .contains(r#"sockwarden_operator_findings_deleted_total{reason="limit"} 1"#));
    }

    fn action_requeue(a: &Action) -> Option<Duration> {
        // Action has no accessor; its Debug form carries the duration.
        let text = format!("{a:?}");
        let secs: f64 = text
            .split("Some(")
            .nth(1)?
            .split("s)")
            .next()?
            .parse()
            .ok()?;
        Some(Duration::from_secs_f64(secs))
    }
}
