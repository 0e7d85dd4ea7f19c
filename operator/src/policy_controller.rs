//! Reconciles `DockerSocketPolicy` objects: validates them and reports
//! `Accepted`/`Ready`/`Degraded`, node coverage and a findings roll-up in the policy's status.
//!
//! It never writes the probe DaemonSet: probes watch policies and arm their sockets
//! themselves, and the DaemonSet belongs to [`crate::rollout`]. Node coverage comes from the
//! DaemonSet's status in the watch cache; every DaemonSet status change reconciles all
//! policies, so `Ready`/`Degraded` follow the probes without an API call here.
use std::{sync::Arc, time::Duration};

use api::{
    condition::{ACCEPTED, DEGRADED, ENFORCED, READY},
    DockerAbuseFinding, DockerSocketPolicy, DockerSocketPolicyStatus, DockerSocketProbe,
    FindingsRollup, Mode, NodeCoverage,
};
use k8s_openapi::{
    api::apps::v1::DaemonSet,
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use kube::{
    api::{Patch, PatchParams},
    runtime::{controller::Action, reflector::ObjectRef},
    Api, Resource, ResourceExt,
};
use serde_json::json;

use crate::{
    conditions::condition,
    context::{retry_after, Context, Error, MANAGER},
    daemonset::NAME,
    events::{event_name, NewEvent},
    retention::{count, seen_at},
};
use api::{truncate, validate::validate};

const HEALTHY_REQUEUE: Duration = Duration::from_secs(60);
const DEGRADED_REQUEUE: Duration = Duration::from_secs(15);

pub async fn reconcile(
    policy: Arc<DockerSocketPolicy>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let timer = ctx
        .metrics
        .reconcile_duration
        .with_label_values(&["policy"])
        .start_timer();
    ctx.metrics.reconciles.with_label_values(&["policy"]).inc();
    let result = reconcile_inner(&policy, &ctx).await;
    timer.observe_duration();
    result
}

async fn reconcile_inner(policy: &DockerSocketPolicy, ctx: &Context) -> Result<Action, Error> {
    let name = policy.name_any();
    let generation = policy.meta().generation;
    let previous = policy
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let policies: Api<DockerSocketPolicy> = Api::all(ctx.client.clone());
    let findings = Some(rollup(&ctx.findings.state(), &name));

    let problems = validate(&policy.spec);
    if !problems.is_empty() {
        let message = problems.join("; ");
        tracing::warn!(policy = %name, %message, "policy refused");
        let status = DockerSocketPolicyStatus {
            observed_generation: generation,
            // Not applied anywhere while refused.
            effective_mode: None,
            conditions: vec![
                condition(
                    ACCEPTED,
                    false,
                    "InvalidSpec",
                    message.clone(),
                    generation,
                    &previous,
                ),
                condition(
                    READY,
                    false,
                    "NotAccepted",
                    "the policy is not applied until it is valid",
                    generation,
                    &previous,
                ),
                condition(DEGRADED, false, "NotAccepted", "", generation, &previous),
            ],
            nodes: policy.status.as_ref().and_then(|s| s.nodes.clone()),
            findings,
        };
        patch_status(&policies, &name, &status).await?;
        // One Event per refused generation; a retry re-creates the same name (no duplicate).
        let uid = policy.uid().unwrap_or_else(|| name.clone());
        let generation = generation.unwrap_or(0).to_string();
        ctx.events
            .publish(
                &event_name(&[&uid, "invalid", &generation]),
                &NewEvent {
                    warning: true,
                    reason: "InvalidPolicy".into(),
                    action: "Validate".into(),
                    note: truncate(&message, 1000),
                    regarding: policy.object_ref(&()),
                },
            )
            .await?;
        // Nothing changes until the policy does: no requeue, no hot loop.
        return Ok(Action::await_change());
    }

    let daemonset = ctx
        .daemonsets
        .get(&ObjectRef::<DaemonSet>::new(NAME).within(&ctx.settings.namespace));
    let cov = coverage(daemonset.as_deref(), &ctx.settings.namespace);
    let enforcement = enforcement(policy, &cov.nodes, &ctx.probes.state());
    let mut status = DockerSocketPolicyStatus {
        observed_generation: generation,
        effective_mode: Some(enforcement.effective_mode(policy)),
        conditions: vec![
            condition(
                ACCEPTED,
                true,
                "Valid",
                accepted_message(policy),
                generation,
                &previous,
            ),
            condition(
                READY,
                cov.ready.0,
                cov.ready.1,
                cov.ready.2,
                generation,
                &previous,
            ),
            condition(
                DEGRADED,
                cov.degraded.0,
                cov.degraded.1,
                cov.degraded.2,
                generation,
                &previous,
            ),
        ],
        nodes: Some(cov.nodes),
        findings,
    };
    status.conditions.extend(enforced_condition(
        policy,
        &enforcement,
        generation,
        &previous,
    ));
    patch_status(&policies, &name, &status).await?;
    Ok(Action::requeue(if cov.degraded.0 {
        DEGRADED_REQUEUE
    } else {
        HEALTHY_REQUEUE
    }))
}

pub(crate) fn accepted_message(policy: &DockerSocketPolicy) -> String {
    match policy.spec.mode {
        Mode::Audit => "policy applied in Audit mode".to_string(),
        Mode::Enforce => {
            "policy applied in Enforce mode (whether the nodes enforce it: the Enforced condition)"
                .to_string()
        }
    }
}

/// How many of the probe's nodes enforce a policy's current generation, as their
/// `DockerSocketProbe` reports say.
pub(crate) struct Enforcement {
    /// Nodes that should run a probe, and those whose probe is ready (the policy's coverage).
    nodes: NodeCoverage,
    /// Reports that enforce this generation, and how they block.
    enforcing: i32,
    blocks_with: std::collections::BTreeSet<String>,
    /// A node that does not, and why (its own words, if it gave any).
    lagging: Option<(String, Option<String>)>,
}

/// Reads the reports in `probes` for `policy`, over the nodes of its coverage.
pub(crate) fn enforcement(
    policy: &DockerSocketPolicy,
    nodes: &NodeCoverage,
    probes: &[Arc<DockerSocketProbe>],
) -> Enforcement {
    let name = policy.name_any();
    let generation = policy.meta().generation.unwrap_or(0);
    let mut e = Enforcement {
        nodes: nodes.clone(),
        enforcing: 0,
        blocks_with: Default::default(),
        lagging: None,
    };
    for probe in probes {
        if probe.spec.enforces(&name, generation) {
            e.enforcing += 1;
            e.blocks_with
                .extend(probe.spec.blocks_with.iter().map(|b| truncate(b, 16)));
        } else if e.lagging.is_none() {
            e.lagging = Some((
                truncate(&probe.spec.node, 253),
                probe.spec.reason.as_deref().map(|r| truncate(r, 300)),
            ));
        }
    }
    e
}

impl Enforcement {
    /// Every node that should run a probe runs a ready one that enforces this generation.
    fn all(&self) -> bool {
        let n = &self.nodes;
        n.desired > 0 && n.ready >= n.desired && self.enforcing >= n.desired
    }

    /// What the nodes do for `policy` (`status.effectiveMode`, the MODE column): `Enforce`
    /// only when all of them enforce it.
    pub(crate) fn effective_mode(&self, policy: &DockerSocketPolicy) -> Mode {
        if policy.spec.mode == Mode::Enforce && self.all() {
            Mode::Enforce
        } else {
            Mode::Audit
        }
    }
}

/// For a policy asking for `Enforce`: the `Enforced` condition, true only when every node's
/// probe enforces the policy's current generation. None for an `Audit` policy: nothing was
/// asked that could be missing.
pub(crate) fn enforced_condition(
    policy: &DockerSocketPolicy,
    e: &Enforcement,
    generation: Option<i64>,
    previous: &[Condition],
) -> Option<Condition> {
    if policy.spec.mode != Mode::Enforce {
        return None;
    }
    let generation_text = generation.unwrap_or(0);
    let how = e.blocks_with.iter().cloned().collect::<Vec<_>>().join(", ");
    Some(if e.all() {
        condition(
            ENFORCED,
            true,
            "AllNodesEnforce",
            format!(
                "all {} nodes enforce generation {generation_text} (blocking with {how})",
                e.nodes.desired
            ),
            generation,
            previous,
        )
    } else {
        let (reason, mut message) = if e.nodes.desired == 0 {
            ("NoNodes", "no node runs a probe".to_string())
        } else if e.nodes.ready < e.nodes.desired {
            (
                "NodesNotReady",
                format!(
                    "{} of {} nodes run a ready probe; findings are audited where the policy is not enforced",
                    e.nodes.ready, e.nodes.desired
                ),
            )
        } else {
            (
                "NotAllNodesEnforce",
                format!(
                    "{} of {} nodes enforce generation {generation_text}; the others audit",
                    e.enforcing, e.nodes.desired
                ),
            )
        };
        if let Some((node, why)) = &e.lagging {
            message.push_str(&format!(
                "; node {node}: {}",
                why.as_deref().unwrap_or("not enforcing it (yet)")
            ));
        }
        condition(ENFORCED, false, reason, message, generation, previous)
    })
}

/// Node coverage from the probe DaemonSet in the cache, as the `Ready` and `Degraded`
/// conditions' (status, reason, message).
pub(crate) struct Coverage {
    nodes: NodeCoverage,
    ready: (bool, &'static str, String),
    degraded: (bool, &'static str, String),
}

/// While the DaemonSet is not in the cache (not created yet, or deleted and being
/// re-created) no node is known to be covered.
pub(crate) fn coverage(daemonset: Option<&DaemonSet>, namespace: &str) -> Coverage {
    let Some(daemonset) = daemonset else {
        let message = format!(
            "the probe DaemonSet {namespace}/{NAME} does not exist (yet); the operator creates it"
        );
        return Coverage {
            nodes: NodeCoverage {
                desired: 0,
                ready: 0,
            },
            ready: (false, "ProbeDaemonSetMissing", message.clone()),
            degraded: (true, "ProbeDaemonSetMissing", message),
        };
    };
    let ds_status = daemonset.status.clone().unwrap_or_default();
    let (desired, ready) = (ds_status.desired_number_scheduled, ds_status.number_ready);
    let all_ready = desired > 0 && ready >= desired;
    let ready_reason = if desired == 0 {
        "NoNodes"
    } else if all_ready {
        "AllNodesReady"
    } else {
        "NodesNotReady"
    };
    let message = format!("{ready} of {desired} nodes run a ready probe");
    let degraded = if ready < desired {
        let uncovered = format!(
            "{} nodes are not covered: {message}",
            desired.saturating_sub(ready)
        );
        (true, "NodesNotCovered", uncovered)
    } else {
        (false, "AllNodesCovered", message.clone())
    };
    Coverage {
        nodes: NodeCoverage { desired, ready },
        ready: (all_ready, ready_reason, message),
        degraded,
    }
}

/// Findings reported under this policy, from the findings cache. Matched on the full name
/// in `spec.policy` (the `sockwarden.io/policy` label may be a digest of a long name);
/// counts that do not add up (negative, overflowing) and times the operator does not believe
/// (see [`seen_at`]) cannot break the sum.
pub(crate) fn rollup(findings: &[Arc<DockerAbuseFinding>], policy: &str) -> FindingsRollup {
    let now = Timestamp::now();
    let mut total: i64 = 0;
    let mut last_seen: Option<Timestamp> = None;
    for f in findings.iter().filter(|f| f.spec.policy == policy) {
        total = total.saturating_add(count(f, 0));
        if f.status.as_ref().is_some_and(|s| s.last_seen.is_some()) {
            last_seen = last_seen.max(Some(seen_at(f, now)));
        }
    }
    FindingsRollup {
        total,
        last_seen: last_seen.map(Time),
    }
}

async fn patch_status(
    api: &Api<DockerSocketPolicy>,
    name: &str,
    status: &DockerSocketPolicyStatus,
) -> Result<(), Error> {
    let body = json!({
        "apiVersion": "sockwarden.io/v1alpha1",
        "kind": "DockerSocketPolicy",
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

pub fn error_policy(_policy: Arc<DockerSocketPolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    retry_after("policy", error, &ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{harness, status_error, ApiServer, Call, Harness};
    use api::{DockerAbuseFinding, DockerAbuseFindingSpec};
    use serde_json::Value;

    fn policy(name: &str, spec: Value) -> DockerSocketPolicy {
        let mut p = DockerSocketPolicy::new(name, serde_json::from_value(spec).unwrap());
        p.metadata.generation = Some(3);
        p.metadata.uid = Some(format!("uid-{name}"));
        p
    }

    fn finding(name: &str, policy: &str, count: i64) -> DockerAbuseFinding {
        let spec: DockerAbuseFindingSpec = serde_json::from_value(json!({
            "signature": api::SignatureRef::trc_1019(), "node": "n1",
            "pod": {"name": "web-1", "uid": "pod-uid"}, "container": {"name": "app", "id": "c1"},
            "operation": "connect", "socket": {"hostPath": "/run/docker.sock", "runtime": "docker"},
            "process": {"comm": "curl", "uid": 0}, "action": "Audit", "policy": policy, "severity": 2
        }))
        .unwrap();
        let mut f = DockerAbuseFinding::new(name, spec);
        f.metadata.namespace = Some("shop".into());
        f.status = Some(api::DockerAbuseFindingStatus {
            count,
            first_seen: None,
            last_seen: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            )),
        });
        f
    }

    fn reply_policy(call: Call, p: &DockerSocketPolicy) {
        let mut obj = serde_json::to_value(p).unwrap();
        obj["status"] = call.body["status"].clone();
        call.reply(200, obj);
    }

    fn cond<'a>(status: &'a Value, type_: &str) -> &'a Value {
        status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == type_)
            .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
    }

    /// Expects the status patch of `p` (and nothing before it), answers it, returns the status.
    async fn expect_status(api: &mut ApiServer, p: &DockerSocketPolicy) -> Value {
        let call = api
            .expect(
                "PATCH",
                &format!(
                    "/apis/sockwarden.io/v1alpha1/dockersocketpolicies/{}/status?",
                    p.name_any()
                ),
            )
            .await;
        assert!(call.uri.contains("fieldManager=sockwarden-operator"));
        let status = call.body["status"].clone();
        reply_policy(call, p);
        status
    }

    #[tokio::test]
    async fn new_policy_reports_ready_from_the_daemonset_cache_without_touching_the_daemonset() {
        let mut h = harness();
        let p = policy(
            "audit-all",
            json!({"sockets": [{"path": "/srv/d.sock", "runtime": "docker"}]}),
        );
        h.set_daemonset(3, 3);
        h.add_finding(&finding("daf-1", "audit-all", 2));
        h.add_finding(&finding("daf-2", "audit-all", 3));
        h.add_finding(&finding("daf-3", "other-policy", 7));
        let (ctx, mut api, reply_to) = (h.ctx.clone(), h.api, p.clone());
        let verifier = tokio::spawn(async move {
            let s = expect_status(&mut api, &reply_to).await;
            assert_eq!(s["observedGeneration"], 3);
            assert_eq!(s["effectiveMode"], "Audit");
            assert!(
                !s["conditions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|c| c["type"] == "Enforced"),
                "an Audit policy asks for nothing it could lack: {s}"
            );
            assert_eq!(cond(&s, "Accepted")["status"], "True");
            assert_eq!(cond(&s, "Ready")["status"], "True");
            assert_eq!(cond(&s, "Ready")["observedGeneration"], 3);
            assert_eq!(cond(&s, "Degraded")["status"], "False");
            assert_eq!(s["nodes"], json!({"desired": 3, "ready": 3}));
            assert_eq!(
                s["findings"]["total"], 5,
                "only this policy's findings count"
            );
            assert!(s["findings"]["lastSeen"].is_string());
            api.expect_silence().await; // no DaemonSet call
        });
        let action = reconcile(Arc::new(p), ctx).await.unwrap();
        assert_eq!(action, Action::requeue(HEALTHY_REQUEUE));
        verifier.await.unwrap();
    }

    #[tokio::test]
    async fn forged_counts_and_a_last_seen_in_year_9999_neither_panic_nor_reach_the_status() {
        let mut h = harness();
        h.set_daemonset(1, 1);
        let p = policy("p", json!({}));
        for (name, count) in [("daf-1", i64::MAX), ("daf-2", i64::MAX), ("daf-3", -5)] {
            let mut f = finding(name, "p", count);
            f.status.as_mut().unwrap().last_seen = Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::MAX),
            );
            h.add_finding(&f);
        }
        let (ctx, mut api, reply_to) = (h.ctx.clone(), h.api, p.clone());
        let verifier = tokio::spawn(async move {
            let s = expect_status(&mut api, &reply_to).await;
            assert_eq!(
                s["findings"]["total"],
                i64::MAX,
                "saturates; negatives count 0"
            );
            let last: Timestamp = s["findings"]["lastSeen"].as_str().unwrap().parse().unwrap();
            assert!(last <= Timestamp::now(), "not the forged {last}");
        });
        reconcile(Arc::new(p), ctx).await.unwrap();
        verifier.await.unwrap();
    }

    #[tokio::test]
    async fn deleting_a_policy_causes_no_daemonset_call() {
        let mut h = harness();
        h.set_daemonset(2, 2);
        let stays = policy("stays", json!({}));
        let goes = policy(
            "goes",
            json!({"sockets": [{"path": "/srv/other/api.sock", "runtime": "docker"}]}),
        );
        h.add_policy(&stays);
        h.add_policy(&goes);
        h.remove_policy(&goes);
        let (ctx, mut api, reply_to) = (h.ctx.clone(), h.api, stays.clone());
        let verifier = tokio::spawn(async move {
            // The remaining policy's reconcile writes its own status, nothing else.
            expect_status(&mut api, &reply_to).await;
            api.expect_silence().await;
        });
        reconcile(Arc::new(stays), ctx).await.unwrap();
        verifier.await.unwrap();
    }

    #[tokio::test]
    async fn daemonset_status_changes_move_the_policy_between_ready_and_degraded() {
        let mut h = harness();
        let p = policy("p", json!({}));
        h.set_daemonset(3, 3);
        let ctx = h.ctx.clone();
        let mut api = h.api;
        let reply_to = p.clone();
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let verifier = tokio::spawn(async move {
            let s = expect_status(&mut api, &reply_to).await;
            assert_eq!(cond(&s, "Ready")["status"], "True");
            tx.send(()).await.unwrap();
            let s = expect_status(&mut api, &reply_to).await;
            assert_eq!(cond(&s, "Ready")["status"], "False");
            assert_eq!(cond(&s, "Degraded")["status"], "True");
            assert_eq!(s["nodes"], json!({"desired": 3, "ready": 1}));
            api.expect_silence().await;
        });
        let p = Arc::new(p);
        reconcile(p.clone(), ctx.clone()).await.unwrap();
        rx.recv().await.unwrap();
        h.daemonsets
            .apply_watcher_event(&kube::runtime::watcher::Event::Apply(
                serde_json::from_value(json!({
                    "apiVersion": "apps/v1", "kind": "DaemonSet",
                    "metadata": {"name": "sockwarden-probe", "namespace": "sockwarden-system"},
                    "status": {"desiredNumberScheduled": 3, "numberReady": 1, "currentNumberScheduled": 3, "numberMisscheduled": 0},
                }))
                .unwrap(),
            ));
        let action = reconcile(p, ctx).await.unwrap();
        assert_eq!(action, Action::requeue(DEGRADED_REQUEUE));
        verifier.await.unwrap();
    }

    #[tokio::test]
    async fn without_the_probe_daemonset_the_policy_is_degraded_and_says_why() {
        let h = harness();
        let p = policy("p", json!({}));
        let (ctx, mut api, reply_to) = (h.ctx.clone(), h.api, p.clone());
        let verifier = tokio::spawn(async move {
            let s = expect_status(&mut api, &reply_to).await;
            assert_eq!(cond(&s, "Accepted")["status"], "True");
            assert_eq!(cond(&s, "Ready")["reason"], "ProbeDaemonSetMissing");
            assert_eq!(cond(&s, "Degraded")["status"], "True");
            assert!(cond(&s, "Degraded")["message"]
                .as_str()
                .unwrap()
                .contains("sockwarden-system/sockwarden-probe"));
            api.expect_silence().await;
        });
        let action = reconcile(Arc::new(p), ctx).await.unwrap();
        assert_eq!(action, Action::requeue(DEGRADED_REQUEUE));
        verifier.await.unwrap();
    }

    #[tokio::test]
    async fn invalid_policy_is_refused_in_status_and_an_event_without_touching_the_daemonset() {
        let h = harness();
        let p = policy(
            "bad",
            json!({"exemptions": [{"namespaces": ["a"], "images": ["nginx:[1"]}], "selector": {"podSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]}}}),
        );
        let (ctx, mut api, reply_to) = (h.ctx.clone(), h.api, p.clone());
        let verifier = tokio::spawn(async move {
            let call = api
                .expect("PATCH", "/dockersocketpolicies/bad/status?")
                .await;
            let s = call.body["status"].clone();
            let accepted = cond(&s, "Accepted");
            assert_eq!(accepted["status"], "False");
            assert_eq!(accepted["reason"], "InvalidSpec");
            assert!(
                s["effectiveMode"].is_null(),
                "a refused policy is applied nowhere"
            );
            let msg = accepted["message"].as_str().unwrap();
            assert!(
                msg.contains("bad pattern") && msg.contains("needs at least one value"),
                "{msg}"
            );
            assert_eq!(cond(&s, "Ready")["status"], "False");
            reply_policy(call, &reply_to);
            // Events about the cluster-scoped policy live in kube-system (1.20 demands it).
            let call = api
                .expect(
                    "POST",
                    "/apis/events.k8s.io/v1/namespaces/kube-system/events",
                )
                .await;
            assert_eq!(call.body["type"], "Warning");
            assert_eq!(call.body["reason"], "InvalidPolicy");
            assert_eq!(call.body["metadata"]["name"], "uid-bad.invalid.3");
            assert_eq!(call.body["regarding"]["kind"], "DockerSocketPolicy");
            assert_eq!(call.body["regarding"]["name"], "bad");
            assert!(call.body["regarding"]["namespace"].is_null());
            call.echo();
            api.expect_silence().await; // no DaemonSet apply
        });
        let action = reconcile(Arc::new(p), ctx).await.unwrap();
        assert_eq!(
            action,
            Action::await_change(),
            "an invalid policy waits for a change: no hot loop"
        );
        verifier.await.unwrap();
    }

    #[tokio::test]
    async fn partly_ready_daemonset_is_degraded_with_the_reason() {
        let mut h = harness();
        h.set_daemonset(5, 2);
        let p = policy("p", json!({"mode": "Enforce"}));
        let (ctx, mut api, reply_to) = (h.ctx.clone(), h.api, p.clone());
        let verifier = tokio::spawn(async move {
            let call = api.expect("PATCH", "/dockersocketpolicies/p/status?").await;
            let s = call.body["status"].clone();
            assert_eq!(cond(&s, "Ready")["status"], "False");
            assert_eq!(cond(&s, "Ready")["reason"], "NodesNotReady");
            let degraded = cond(&s, "Degraded");
            assert_eq!(degraded["status"], "True");
            assert_eq!(degraded["reason"], "NodesNotCovered");
            assert!(
                degraded["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("3 nodes are not covered: 2 of 5"),
                "{degraded}"
            );
            assert!(cond(&s, "Accepted")["message"]
                .as_str()
                .unwrap()
                .contains("Enforce mode"));
            // Asked for Enforce, but not every node's probe is ready: MODE shows Audit, and
            // a condition says why.
            assert_eq!(s["effectiveMode"], "Audit");
            let enforced = cond(&s, "Enforced");
            assert_eq!(enforced["status"], "False");
            assert_eq!(enforced["reason"], "NodesNotReady");
            assert_eq!(enforced["observedGeneration"], 3);
            reply_policy(call, &reply_to);
        });
        let action = reconcile(Arc::new(p), ctx).await.unwrap();
        assert_eq!(action, Action::requeue(DEGRADED_REQUEUE));
        verifier.await.unwrap();
    }

    /// The status a reconcile of `p` patches, with `h`'s caches.
    async fn status_of(h: Harness, p: DockerSocketPolicy) -> Value {
        let (ctx, mut api, reply_to) = (h.ctx.clone(), h.api, p.clone());
        let verifier = tokio::spawn(async move {
            let call = api.expect("PATCH", "/dockersocketpolicies/p/status?").await;
            let s = call.body["status"].clone();
            reply_policy(call, &reply_to);
            s
        });
        reconcile(Arc::new(p), ctx).await.unwrap();
        verifier.await.unwrap()
    }

    #[tokio::test]
    async fn enforce_is_effective_only_when_every_nodes_probe_enforces_the_current_generation() {
        let enforce = || policy("p", json!({"mode": "Enforce"}));
        // Two nodes, both ready, both enforcing generation 3: Enforce.
        let mut h = harness();
        h.set_daemonset(2, 2);
        h.set_probe("n1", &[("p", 3)], Some("EPERM"), None);
        h.set_probe("n2", &[("other", 1), ("p", 3)], Some("SIGKILL"), None);
        let s = status_of(h, enforce()).await;
        assert_eq!(s["effectiveMode"], "Enforce");
        let c = cond(&s, "Enforced");
        assert_eq!(c["status"], "True", "{c}");
        assert_eq!(c["reason"], "AllNodesEnforce");
        assert!(
            c["message"].as_str().unwrap().contains("EPERM, SIGKILL"),
            "{c}"
        );

        // One node still enforces the previous generation: Audit, and which node says so.
        let mut h = harness();
        h.set_daemonset(2, 2);
        h.set_probe("n1", &[("p", 3)], Some("EPERM"), None);
        h.set_probe("n2", &[("p", 2)], Some("EPERM"), None);
        let s = status_of(h, enforce()).await;
        assert_eq!(s["effectiveMode"], "Audit");
        let c = cond(&s, "Enforced");
        assert_eq!(c["status"], "False");
        assert_eq!(c["reason"], "NotAllNodesEnforce");
        assert!(c["message"].as_str().unwrap().contains("1 of 2"), "{c}");
        assert!(c["message"].as_str().unwrap().contains("node n2"), "{c}");

        // A node that cannot enforce says why, and the condition carries it.
        let mut h = harness();
        h.set_daemonset(1, 1);
        h.set_probe(
            "n1",
            &[],
            None,
            Some("cannot enforce: no cgroup v2 hierarchy here"),
        );
        let s = status_of(h, enforce()).await;
        assert_eq!(s["effectiveMode"], "Audit");
        assert!(cond(&s, "Enforced")["message"]
            .as_str()
            .unwrap()
            .contains("no cgroup v2 hierarchy"));

        // A node without a report (its probe has not written one yet) is not counted as
        // enforcing, however many other reports say they do.
        let mut h = harness();
        h.set_daemonset(3, 3);
        h.set_probe("n1", &[("p", 3)], Some("EPERM"), None);
        h.set_probe("n2", &[("p", 3)], Some("EPERM"), None);
        let s = status_of(h, enforce()).await;
        assert_eq!(s["effectiveMode"], "Audit");

        // An Audit policy has no Enforced condition and audits whatever the nodes do.
        let mut h = harness();
        h.set_daemonset(1, 1);
        h.set_probe("n1", &[("p", 3)], Some("EPERM"), None);
        let s = status_of(h, policy("p", json!({"mode": "Audit"}))).await;
        assert_eq!(s["effectiveMode"], "Audit");
        assert!(s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["type"] != "Enforced"));
    }

    #[tokio::test]
    async fn conflicts_and_server_errors_are_retried_soon_and_never_panic() {
        let mut h = harness();
        h.set_daemonset(1, 1);
        let p = Arc::new(policy("p", json!({})));
        let (ctx, mut api, reply_to) = (h.ctx.clone(), h.api, p.as_ref().clone());
        let verifier = tokio::spawn(async move {
            api.expect("PATCH", "/dockersocketpolicies/p/status?")
                .await
                .reply(409, status_error(409, "Conflict"));
            api.expect("PATCH", "/dockersocketpolicies/p/status?")
                .await
                .reply(500, status_error(500, "InternalError"));
            let call = api.expect("PATCH", "/dockersocketpolicies/p/status?").await;
            reply_policy(call, &reply_to);
        });
        let err = reconcile(p.clone(), ctx.clone()).await.unwrap_err();
        assert_eq!(
            error_policy(p.clone(), &err, ctx.clone()),
            Action::requeue(Duration::from_secs(2))
        );
        let err = reconcile(p.clone(), ctx.clone()).await.unwrap_err();
        assert_eq!(
            error_policy(p.clone(), &err, ctx.clone()),
            Action::requeue(Duration::from_secs(2))
        );
        reconcile(p.clone(), ctx.clone())
            .await
            .expect("the retry succeeds once the API recovers");
        verifier.await.unwrap();
        let m = ctx.metrics.render();
        assert!(m.contains(r#"sockwarden_operator_reconcile_errors_total{controller="policy",error="api_409"} 1"#), "{m}");
        assert!(m.contains(r#"sockwarden_operator_reconcile_errors_total{controller="policy",error="api_500"} 1"#), "{m}");
    }
}
