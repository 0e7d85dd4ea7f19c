//! What the CRD schema cannot check about a policy: label-selector semantics, glob syntax,
//! service-account references, socket paths. Problems are reported as `Accepted=False`.
use api::{DockerSocketPolicySpec, Exemption};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::policy_controller::truncate;

fn dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(dns1123_label)
}

fn label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    name_ok && prefix.is_none_or(dns1123_subdomain)
}

fn selector(what: &str, s: &LabelSelector, problems: &mut Vec<String>) {
    for key in s.match_labels.iter().flat_map(|m| m.keys()) {
        if !label_key(key) {
            problems.push(format!("{what}: invalid label key {key:?}"));
        }
    }
    for (i, expr) in s.match_expressions.iter().flatten().enumerate() {
        if !label_key(&expr.key) {
            problems.push(format!(
                "{what}.matchExpressions[{i}]: invalid label key {:?}",
                expr.key
            ));
        }
        let values = expr.values.as_ref().map_or(0, Vec::len);
        match expr.operator.as_str() {
            "In" | "NotIn" if values == 0 => problems.push(format!(
                "{what}.matchExpressions[{i}]: operator {} needs at least one value",
                expr.operator
            )),
            "Exists" | "DoesNotExist" if values > 0 => problems.push(format!(
                "{what}.matchExpressions[{i}]: operator {} takes no values",
                expr.operator
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => problems.push(format!(
                "{what}.matchExpressions[{i}]: unknown operator {other:?} (In, NotIn, Exists, DoesNotExist)"
            )),
        }
    }
}

fn globs(what: &str, patterns: &[String], problems: &mut Vec<String>) {
    for p in patterns {
        if let Err(e) = globset::Glob::new(p) {
            problems.push(format!("{what}: bad glob {p:?}: {}", e.kind()));
        }
    }
}

fn exemption(i: usize, e: &Exemption, problems: &mut Vec<String>) {
    let what = format!("spec.exemptions[{i}]");
    for ns in e.namespaces.iter().flatten() {
        if !dns1123_label(ns) {
            problems.push(format!("{what}.namespaces: {ns:?} is not a namespace name"));
        }
    }
    if let Some(s) = &e.pod_selector {
        selector(&format!("{what}.podSelector"), s, problems);
    }
    for sa in e.service_accounts.iter().flatten() {
        let ok = match sa.split_once('/') {
            Some((ns, name)) => dns1123_label(ns) && dns1123_subdomain(name),
            None => dns1123_subdomain(sa),
        };
        if !ok {
            problems.push(format!(
                "{what}.serviceAccounts: {sa:?} is neither NAME nor NAMESPACE/NAME"
            ));
        }
    }
    globs(
        &format!("{what}.images"),
        e.images.as_deref().unwrap_or_default(),
        problems,
    );
    globs(
        &format!("{what}.executables"),
        e.executables.as_deref().unwrap_or_default(),
        problems,
    );
}

/// Every problem with a policy, in one list; empty when the policy can be applied.
pub fn validate(spec: &DockerSocketPolicySpec) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(sel) = &spec.selector {
        if let Some(s) = &sel.namespace_selector {
            selector("spec.selector.namespaceSelector", s, &mut problems);
        }
        if let Some(s) = &sel.pod_selector {
            selector("spec.selector.podSelector", s, &mut problems);
        }
    }
    for (i, socket) in spec.sockets.iter().enumerate() {
        let path = &socket.path;
        if !path.starts_with('/')
            || path.split('/').any(|c| c == ".." || c == ".")
            || path.contains('\0')
        {
            problems.push(format!(
                "spec.sockets[{i}].path: {path:?} must be an absolute path without . or .. segments"
            ));
        }
    }
    if let Some(ops) = &spec.operations {
        if !ops.connect && !ops.open {
            problems.push("spec.operations: at least one of connect and open must be true".into());
        }
    }
    for (i, e) in spec.exemptions.iter().enumerate() {
        exemption(i, e, &mut problems);
    }
    if let Some(r) = &spec.findings {
        match api::parse_ttl(&r.ttl) {
            Ok(_) => {}
            Err(api::TtlError::Malformed) => problems.push(format!(
                "spec.findings.ttl: {:?} is not a duration like 7d or 1h30m",
                truncate(&r.ttl, 64)
            )),
            Err(api::TtlError::TooLong) => problems.push(format!(
                "spec.findings.ttl: {:?} is longer than the maximum of 3650d (ten years)",
                truncate(&r.ttl, 64)
            )),
        }
    }
    if spec.severity.is_some_and(|s| s > 3) {
        problems.push("spec.severity: must be 0 to 3".into());
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> DockerSocketPolicySpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn good_policies_have_no_problems() {
        for s in [
            serde_json::json!({}),
            serde_json::json!({"mode": "Enforce", "selector": {"podSelector": {"matchExpressions": [{"key": "app.kubernetes.io/name", "operator": "In", "values": ["a"]}]}}}),
            serde_json::json!({"exemptions": [{"serviceAccounts": ["monitoring/agent", "ci-runner"], "images": ["docker.io/datadog/agent:*"], "executables": ["/usr/{bin,sbin}/cadvisor"]}]}),
            serde_json::json!({"sockets": [{"path": "/srv/docker.sock", "runtime": "docker"}], "findings": {"ttl": "36h"}}),
            serde_json::json!({"findings": {"ttl": "3650d", "maxPerNamespace": 1}}),
        ] {
            assert_eq!(validate(&spec(s.clone())), Vec::<String>::new(), "{s}");
        }
    }

    #[test]
    fn each_semantic_error_is_named() {
        let cases = [
            (
                serde_json::json!({"selector": {"podSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]}}}),
                "needs at least one value",
            ),
            (
                serde_json::json!({"selector": {"podSelector": {"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["x"]}]}}}),
                "takes no values",
            ),
            (
                serde_json::json!({"selector": {"namespaceSelector": {"matchExpressions": [{"key": "app", "operator": "Near"}]}}}),
                "unknown operator",
            ),
            (
                serde_json::json!({"selector": {"podSelector": {"matchLabels": {"-bad-": "x"}}}}),
                "invalid label key",
            ),
            (
                serde_json::json!({"exemptions": [{"images": ["nginx:[1"]}]}),
                "bad glob",
            ),
            (
                serde_json::json!({"exemptions": [{"serviceAccounts": ["a/b/c"]}]}),
                "neither NAME nor NAMESPACE/NAME",
            ),
            (
                serde_json::json!({"exemptions": [{"namespaces": ["Kube_System"]}]}),
                "is not a namespace name",
            ),
            (
                serde_json::json!({"sockets": [{"path": "/run/../etc/x", "runtime": "docker"}]}),
                "must be an absolute path",
            ),
            (
                serde_json::json!({"findings": {"ttl": "0s"}}),
                "is not a duration",
            ),
            (
                serde_json::json!({"findings": {"ttl": "999999999h"}}),
                "longer than the maximum of 3650d",
            ),
            (
                serde_json::json!({"findings": {"ttl": "3650d1s"}}),
                "longer than the maximum of 3650d",
            ),
            (
                serde_json::json!({"operations": {"connect": false, "open": false}}),
                "at least one of connect and open",
            ),
        ];
        for (s, want) in cases {
            let problems = validate(&spec(s.clone()));
            assert!(
                problems.iter().any(|p| p.contains(want)),
                "{s}: {problems:?}"
            );
        }
    }
}
