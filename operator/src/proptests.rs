//! Property tests: arbitrary policies and findings — any strings, counts, times and labels a
//! client can write — fed to validation and to the pure parts of both reconcilers. None may
//! panic, and what they produce stays within what the API server accepts.
use std::sync::Arc;

use api::{DockerAbuseFinding, DockerSocketPolicySpec};
use k8s_openapi::{api::apps::v1::DaemonSet, jiff::Timestamp};
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::{
    events::event_name,
    finding_controller::{describe, verdict, Verdict},
    policy_controller::{accepted_message, coverage, rollup},
    retention::{evicted, seen_at},
};
use api::validate::validate;

/// Any text, weighted towards what matters here: durations, names, paths, times.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9]{1,12}[smhdy]{0,2}([0-9]{0,12}[smhd])?",
        "[a-z0-9.-]{0,300}",
        "/[ -~]{0,200}",
        "[+-]?[0-9]{1,6}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?Z",
    ]
}

fn strings() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(text(), 0..4)
}

fn selector() -> impl Strategy<Value = Value> {
    (
        prop::collection::btree_map(text(), text(), 0..3),
        prop::collection::vec((text(), text(), prop::option::of(strings())), 0..3),
    )
        .prop_map(|(labels, exprs)| {
            let exprs: Vec<Value> = exprs
                .into_iter()
                .map(|(key, operator, values)| json!({"key": key, "operator": operator, "values": values}))
                .collect();
            json!({"matchLabels": labels, "matchExpressions": exprs})
        })
}

fn policy_spec() -> impl Strategy<Value = Value> {
    let exemption = (
        prop::option::of(strings()),
        prop::option::of(strings()),
        prop::option::of(strings()),
        prop::option::of(strings()),
        prop::option::of(selector()),
    )
        .prop_map(|(namespaces, sas, images, exes, pods)| {
            json!({"namespaces": namespaces, "serviceAccounts": sas, "images": images,
                   "executables": exes, "podSelector": pods})
        });
    (
        prop::option::of(selector()),
        prop::option::of(selector()),
        prop::collection::vec(text(), 0..3),
        prop::collection::vec(exemption, 0..3),
        text(),
        prop::option::of(any::<u32>()),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(ns, pods, sockets, exemptions, ttl, max, connect, open)| {
            let sockets: Vec<Value> = sockets
                .into_iter()
                .map(|p| json!({"path": p, "runtime": "docker"}))
                .collect();
            json!({
                "selector": {"namespaceSelector": ns, "podSelector": pods},
                "sockets": sockets, "exemptions": exemptions,
                "operations": {"connect": connect, "open": open},
                "findings": {"ttl": ttl, "maxPerNamespace": max},
            })
        })
}

/// A time as a client may write it: in jiff's range, at its ends, past them, or junk.
fn time() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-377_705_023_201i64..=253_402_207_200)
            .prop_map(|s| json!(Timestamp::from_second(s).unwrap().to_string())),
        Just(json!("9999-12-31T23:59:59Z")),
        Just(json!("0000-01-01T00:00:00Z")),
        text().prop_map(Value::String),
        any::<i64>().prop_map(Value::from),
        Just(Value::Null),
    ]
}

/// A finding as a (possibly hostile) node could write it; creation times are the API
/// server's, so always readable.
fn finding() -> impl Strategy<Value = DockerAbuseFinding> {
    (
        "[a-z0-9-]{1,20}",
        prop_oneof![Just("shop".to_string()), "[a-z]{1,3}"],
        prop_oneof![Just("capped".to_string()), text()],
        prop_oneof![Just("n1".to_string()), text()],
        prop::option::of(any::<i64>()),
        time(),
        time(),
        prop::option::of(0i64..=253_402_207_200),
        text(),
    )
        .prop_map(
            |(name, namespace, policy, node, count, first, last, created, pod)| {
                let mut obj = json!({
                    "apiVersion": "sockwarden.io/v1alpha1", "kind": "DockerAbuseFinding",
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": {
                        "signature": api::SignatureRef::trc_1019(), "node": node,
                        "pod": {"name": pod, "uid": "u"}, "container": {"name": "c", "id": "c1"},
                        "operation": "connect", "socket": {"hostPath": "/run/docker.sock", "runtime": "docker"},
                        "process": {"comm": "sh", "uid": 0}, "action": "Audit", "policy": policy, "severity": 2
                    },
                });
                if let Some(count) = count {
                    obj["status"] = json!({"count": count, "firstSeen": first, "lastSeen": last});
                }
                if let Some(s) = created {
                    obj["metadata"]["creationTimestamp"] =
                        json!(Timestamp::from_second(s).unwrap().to_string());
                }
                serde_json::from_value(obj).expect("a status the API server stores decodes")
            },
        )
}

fn now() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        Just(Timestamp::now()),
        Just(Timestamp::MAX),
        Just(Timestamp::MIN),
        (-377_705_023_201i64..=253_402_207_200).prop_map(|s| Timestamp::from_second(s).unwrap()),
    ]
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn validation_never_panics_and_a_valid_ttl_is_within_ten_years(spec in policy_spec()) {
        let spec: DockerSocketPolicySpec = serde_json::from_value(spec).unwrap();
        let problems = validate(&spec);
        let ttl = &spec.findings.as_ref().unwrap().ttl;
        let ttl_problem = problems.iter().any(|p| p.starts_with("spec.findings.ttl"));
        prop_assert_eq!(ttl_problem, api::parse_ttl(ttl).is_err());
        if let Ok(secs) = api::parse_ttl(ttl) {
            prop_assert!(secs > 0 && secs <= api::MAX_TTL_SECS);
        }
        let policy = api::DockerSocketPolicy::new("p", spec);
        accepted_message(&policy);
    }

    #[test]
    fn the_finding_reconciler_decides_without_panicking_and_evicts_exactly_the_excess(
        findings in prop::collection::vec(finding(), 0..12),
        spec in policy_spec(),
        now in now(),
    ) {
        let spec: DockerSocketPolicySpec = serde_json::from_value(spec).unwrap();
        let retention = spec.findings.as_ref();
        let cache: Vec<Arc<DockerAbuseFinding>> = findings.iter().cloned().map(Arc::new).collect();
        for f in &findings {
            match verdict(f, retention, &cache, now) {
                Verdict::Keep(requeue) => prop_assert!(requeue <= std::time::Duration::from_secs(3600)),
                Verdict::Expired | Verdict::BeyondLimit => {}
            }
            let seen = seen_at(f, now);
            prop_assert!(seen <= now);
            prop_assert!(describe(f).len() <= 1003);
            let uid = f.metadata.uid.clone().unwrap_or_else(|| f.metadata.name.clone().unwrap());
            let count = f.status.as_ref().map_or(1, |s| s.count).to_string();
            let name = event_name(&[&uid, "pod", &count]);
            prop_assert!(is_dns_subdomain(&name), "{}", name);
        }
        let max = retention.and_then(|r| r.max_per_namespace).unwrap_or(3) as usize;
        let gone = evicted(findings.iter(), max, now);
        let distinct: std::collections::HashSet<_> =
            findings.iter().map(|f| f.metadata.name.clone()).collect();
        // names may repeat in generated data; evicted counts by object
        prop_assert!(gone.len() <= findings.len().saturating_sub(max));
        if distinct.len() == findings.len() {
            prop_assert_eq!(gone.len(), findings.len().saturating_sub(max));
        }
    }

    #[test]
    fn the_policy_reconciler_sums_and_reports_without_panicking(
        findings in prop::collection::vec(finding(), 0..12),
        policy in prop_oneof![Just("capped".to_string()), text()],
        desired in any::<i32>(),
        ready in any::<i32>(),
    ) {
        let cache: Vec<Arc<DockerAbuseFinding>> = findings.into_iter().map(Arc::new).collect();
        let r = rollup(&cache, &policy);
        prop_assert!(r.total >= 0);
        if let Some(t) = r.last_seen {
            // never a time the operator does not believe: at most its own now
            prop_assert!(t.0 <= Timestamp::now());
        }
        let ds: DaemonSet = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "sockwarden-probe", "namespace": "x"},
            "status": {"desiredNumberScheduled": desired, "numberReady": ready,
                       "currentNumberScheduled": 0, "numberMisscheduled": 0},
        })).unwrap();
        coverage(Some(&ds), "x");
    }

    #[test]
    fn label_values_are_always_valid_and_stable(s in text()) {
        let v = api::label_value(&s);
        prop_assert!(api::names::is_label_value(&v), "{:?} -> {:?}", s, v);
        prop_assert_eq!(v.clone(), api::label_value(&s));
        if api::names::is_label_value(&s) {
            prop_assert_eq!(v, s);
        }
    }
}
