//! Which policy governs a finding: scope by namespace and pod labels, operations, exemptions
//! (namespace, pod labels, service account, image glob, executable glob), and the strictest
//! mode among the policies that apply.
//!
//! With no policy in the cluster at all, a built-in default reports everything in `Audit`
//! mode under the policy name `default`. Once policies exist, a pod none of them selects is
//! out of scope. sockwarden's own pods are always exempt.
use std::{collections::BTreeMap, sync::Arc};

use api::{selector, DockerSocketPolicy, Exemption, Mode};
use globset::{Glob, GlobBuilder};
use kube::ResourceExt;

use super::pods::PodMeta;
use crate::event::Operation;

pub const DEFAULT_POLICY: &str = "default";
pub const DEFAULT_SEVERITY: u8 = 2;
/// Label carried by sockwarden's own pods.
pub const PART_OF_LABEL: (&str, &str) = ("app.kubernetes.io/part-of", "sockwarden");

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Report {
        policy: String,
        mode: Mode,
        severity: u8,
    },
    /// Exempted by this policy (or `sockwarden` for its own pods).
    Exempt {
        policy: String,
    },
    OutOfScope,
}

fn glob_matches(pattern: &str, value: &str, path_like: bool) -> bool {
    let glob = if path_like {
        GlobBuilder::new(pattern).literal_separator(true).build()
    } else {
        Glob::new(pattern)
    };
    glob.map(|g| g.compile_matcher().is_match(value))
        .unwrap_or(false)
}

/// Every field the exemption sets must match (fields left out match anything).
pub fn exempts(e: &Exemption, pod: &PodMeta, exe: Option<&str>) -> bool {
    let ns_ok = e
        .namespaces
        .as_ref()
        .is_none_or(|list| list.contains(&pod.namespace));
    let labels_ok = e
        .pod_selector
        .as_ref()
        .is_none_or(|s| selector::matches(s, &pod.labels));
    let sa_ok = e.service_accounts.as_ref().is_none_or(|list| {
        let sa = pod.service_account.as_deref().unwrap_or("default");
        list.iter().any(|entry| match entry.split_once('/') {
            Some((ns, name)) => ns == pod.namespace && name == sa,
            None => entry == sa,
        })
    });
    let image_ok = e.images.as_ref().is_none_or(|globs| {
        pod.image
            .as_deref()
            .is_some_and(|img| globs.iter().any(|g| glob_matches(g, img, false)))
    });
    let exe_ok = e
        .executables
        .as_ref()
        .is_none_or(|globs| exe.is_some_and(|x| globs.iter().any(|g| glob_matches(g, x, true))));
    ns_ok && labels_ok && sa_ok && image_ok && exe_ok
}

fn selects(p: &DockerSocketPolicy, pod: &PodMeta, ns_labels: &BTreeMap<String, String>) -> bool {
    let Some(sel) = &p.spec.selector else {
        return true;
    };
    sel.namespace_selector
        .as_ref()
        .is_none_or(|s| selector::matches(s, ns_labels))
        && sel
            .pod_selector
            .as_ref()
            .is_none_or(|s| selector::matches(s, &pod.labels))
}

fn counts(p: &DockerSocketPolicy, op: Operation) -> bool {
    let ops = p.spec.operations.clone().unwrap_or_default();
    match op {
        Operation::Connect => ops.connect,
        Operation::Open => ops.open,
    }
}

pub fn evaluate(
    policies: &[Arc<DockerSocketPolicy>],
    pod: &PodMeta,
    ns_labels: &BTreeMap<String, String>,
    exe: Option<&str>,
    op: Operation,
) -> Verdict {
    if pod.labels.get(PART_OF_LABEL.0).map(String::as_str) == Some(PART_OF_LABEL.1) {
        return Verdict::Exempt {
            policy: "sockwarden".into(),
        };
    }
    if policies.is_empty() {
        return Verdict::Report {
            policy: DEFAULT_POLICY.into(),
            mode: Mode::Audit,
            severity: DEFAULT_SEVERITY,
        };
    }
    let mut sorted: Vec<&Arc<DockerSocketPolicy>> = policies.iter().collect();
    sorted.sort_by_key(|p| p.name_any());
    let mut exempted_by = None;
    let mut best: Option<(&DockerSocketPolicy, Mode)> = None;
    for p in sorted {
        if !selects(p, pod, ns_labels) || !counts(p, op) {
            continue;
        }
        if p.spec.exemptions.iter().any(|e| exempts(e, pod, exe)) {
            exempted_by.get_or_insert_with(|| p.name_any());
            continue;
        }
        // Strictest mode wins; among equals, the first by name.
        if best.is_none_or(|(_, m)| p.spec.mode > m) {
            best = Some((p, p.spec.mode));
        }
    }
    match (best, exempted_by) {
        (Some((p, mode)), _) => Verdict::Report {
            policy: p.name_any(),
            mode,
            severity: p.spec.severity.unwrap_or(DEFAULT_SEVERITY),
        },
        (None, Some(policy)) => Verdict::Exempt { policy },
        (None, None) => Verdict::OutOfScope,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(name: &str, spec: serde_json::Value) -> Arc<DockerSocketPolicy> {
        Arc::new(DockerSocketPolicy::new(
            name,
            serde_json::from_value(spec).unwrap(),
        ))
    }

    fn pod() -> PodMeta {
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "agent-x", "namespace": "monitoring", "uid": "u", "labels": {"app": "datadog"}},
            "spec": {"serviceAccountName": "datadog",
                     "containers": [{"name": "agent", "image": "docker.io/datadog/agent:7.50.1"}]}
        }))
        .unwrap();
        PodMeta::from_pod(&pod, "agent", None)
    }

    fn ns(team: &str) -> BTreeMap<String, String> {
        [("team".to_string(), team.to_string())].into()
    }

    #[test]
    fn exemption_fields_and_glob_edge_cases() {
        let p = pod();
        let cases = [
            (json!({"namespaces": ["monitoring"]}), None, true),
            (json!({"namespaces": ["kube-system"]}), None, false),
            (
                json!({"podSelector": {"matchLabels": {"app": "datadog"}}}),
                None,
                true,
            ),
            (
                json!({"serviceAccounts": ["monitoring/datadog"]}),
                None,
                true,
            ),
            (json!({"serviceAccounts": ["datadog"]}), None, true),
            (
                json!({"serviceAccounts": ["other-ns/datadog"]}),
                None,
                false,
            ),
            (json!({"images": ["docker.io/datadog/agent:*"]}), None, true),
            (json!({"images": ["*/datadog/*"]}), None, true),
            (
                json!({"images": ["docker.io/datadog/agent:6.*"]}),
                None,
                false,
            ),
            (json!({"images": ["datadog/agent:*"]}), None, false), // globs are anchored
            (
                json!({"executables": ["/usr/bin/*"]}),
                Some("/usr/bin/agent"),
                true,
            ),
            (
                json!({"executables": ["/usr/bin/*"]}),
                Some("/usr/bin/sub/agent"),
                false,
            ), // * stays in one directory
            (
                json!({"executables": ["/usr/bin/**"]}),
                Some("/usr/bin/sub/agent"),
                true,
            ),
            (
                json!({"executables": ["/opt/{agent,probe}"]}),
                Some("/opt/probe"),
                true,
            ),
            (json!({"executables": ["/usr/bin/agent"]}), None, false), // unknown exe never matches
            // every field given must match
            (
                json!({"namespaces": ["monitoring"], "images": ["nginx:*"]}),
                None,
                false,
            ),
            (
                json!({"namespaces": ["monitoring"], "images": ["docker.io/datadog/agent:*"], "serviceAccounts": ["datadog"]}),
                None,
                true,
            ),
        ];
        for (e, exe, want) in cases {
            let ex: Exemption = serde_json::from_value(e.clone()).unwrap();
            assert_eq!(exempts(&ex, &p, exe), want, "{e} exe={exe:?}");
        }
    }

    #[test]
    fn no_policy_at_all_reports_under_the_builtin_default() {
        assert_eq!(
            evaluate(&[], &pod(), &ns("a"), None, Operation::Connect),
            Verdict::Report {
                policy: "default".into(),
                mode: Mode::Audit,
                severity: 2
            }
        );
    }

    #[test]
    fn sockwarden_pods_are_always_exempt() {
        let mut p = pod();
        p.labels
            .insert("app.kubernetes.io/part-of".into(), "sockwarden".into());
        assert_eq!(
            evaluate(&[], &p, &ns("a"), None, Operation::Connect),
            Verdict::Exempt {
                policy: "sockwarden".into()
            }
        );
    }

    #[test]
    fn several_policies_strictest_mode_wins_and_is_named() {
        let audit = policy("a-audit", json!({}));
        let enforce = policy(
            "z-enforce",
            json!({"mode": "Enforce", "severity": 3, "selector": {"namespaceSelector": {"matchLabels": {"team": "obs"}}}}),
        );
        let v = evaluate(
            &[audit.clone(), enforce.clone()],
            &pod(),
            &ns("obs"),
            None,
            Operation::Connect,
        );
        assert_eq!(
            v,
            Verdict::Report {
                policy: "z-enforce".into(),
                mode: Mode::Enforce,
                severity: 3
            }
        );
        // the enforcing policy does not select this namespace: audit applies
        let v = evaluate(
            &[audit, enforce],
            &pod(),
            &ns("web"),
            None,
            Operation::Connect,
        );
        assert_eq!(
            v,
            Verdict::Report {
                policy: "a-audit".into(),
                mode: Mode::Audit,
                severity: 2
            }
        );
    }

    #[test]
    fn exemptions_operations_and_scope() {
        let exempting = policy(
            "agents",
            json!({"exemptions": [{"images": ["docker.io/datadog/agent:*"]}]}),
        );
        assert_eq!(
            evaluate(
                std::slice::from_ref(&exempting),
                &pod(),
                &ns("obs"),
                None,
                Operation::Connect
            ),
            Verdict::Exempt {
                policy: "agents".into()
            }
        );
        // another policy that does not exempt it still reports
        let strict = policy("strict", json!({"mode": "Enforce"}));
        assert!(matches!(
            evaluate(&[exempting, strict], &pod(), &ns("obs"), None, Operation::Connect),
            Verdict::Report { ref policy, mode: Mode::Enforce, .. } if policy == "strict"
        ));
        // a policy that only counts connects ignores opens
        let connect_only = policy("c", json!({"operations": {"connect": true, "open": false}}));
        assert_eq!(
            evaluate(&[connect_only], &pod(), &ns("obs"), None, Operation::Open),
            Verdict::OutOfScope
        );
        // a policy scoped elsewhere leaves this pod out of scope
        let elsewhere = policy(
            "web-only",
            json!({"selector": {"podSelector": {"matchLabels": {"app": "web"}}}}),
        );
        assert_eq!(
            evaluate(&[elsewhere], &pod(), &ns("obs"), None, Operation::Connect),
            Verdict::OutOfScope
        );
    }
}
