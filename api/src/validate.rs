//! Everything about a policy the CRD schema cannot check (or that older API servers, which
//! drop CEL rules, do not): label-selector semantics, exemption anchors, image and executable
//! patterns, service-account references, socket paths. The operator reports problems as
//! `Accepted=False`; the probe refuses to apply a policy with any (see [`crate::compiled`]).
use crate::{image::ImagePattern, DockerSocketPolicySpec, Exemption};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Longest socket path: `sun_path` holds 108 bytes including the terminating NUL.
pub const MAX_SOCKET_PATH: usize = 107;

use crate::truncate;

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

fn executables(what: &str, patterns: &[String], problems: &mut Vec<String>) {
    for p in patterns {
        if !p.starts_with('/') {
            problems.push(format!("{what}: {p:?} must be an absolute path pattern"));
        } else if let Err(e) = globset::Glob::new(p) {
            problems.push(format!("{what}: bad glob {p:?}: {}", e.kind()));
        }
    }
}

fn exemption(i: usize, e: &Exemption, problems: &mut Vec<String>) {
    let what = format!("spec.exemptions[{i}]");
    // A pod's author chooses its labels, image and binaries freely; who may run pods in a
    // namespace or under a service account is decided by RBAC. So an exemption must be
    // anchored to one of those, and the rest only narrow it.
    if e.namespaces.is_none() && e.service_accounts.is_none() {
        problems.push(format!(
            "{what}: must set namespaces or serviceAccounts (podSelector, images and executables \
             only narrow an exemption: any pod author can choose its labels, image and binaries)"
        ));
    }
    for ns in e.namespaces.iter().flatten() {
        if !dns1123_label(ns) {
            problems.push(format!("{what}.namespaces: {ns:?} is not a namespace name"));
        }
    }
    if let Some(s) = &e.pod_selector {
        selector(&format!("{what}.podSelector"), s, problems);
    }
    for sa in e.service_accounts.iter().flatten() {
        match sa.split_once('/') {
            Some((ns, name)) if dns1123_label(ns) && dns1123_subdomain(name) => {}
            None if dns1123_subdomain(sa) && e.namespaces.is_some() => {}
            None if dns1123_subdomain(sa) => problems.push(format!(
                "{what}.serviceAccounts: {sa:?} names no namespace: write NAMESPACE/NAME, or \
                 set namespaces (a bare name would match that account in every namespace, \
                 where anyone allowed to create service accounts could take it)"
            )),
            _ => problems.push(format!(
                "{what}.serviceAccounts: {sa:?} is neither NAME nor NAMESPACE/NAME"
            )),
        }
    }
    for image in e.images.iter().flatten() {
        if let Err(e) = ImagePattern::new(image) {
            problems.push(format!("{what}.images: {e}"));
        }
    }
    executables(
        &format!("{what}.executables"),
        e.executables.as_deref().unwrap_or_default(),
        problems,
    );
}

/// Why a socket path cannot be watched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SocketPathError {
    #[error("{0:?} must be an absolute, normalised path (no ., .. or empty segments)")]
    NotNormalised(String),
    #[error("{0:?} must not contain NUL, '=' or control characters")]
    ForbiddenCharacter(String),
    #[error("{0:?} is {len} bytes; a UNIX socket path holds at most {MAX_SOCKET_PATH}", len = .0.len())]
    TooLong(String),
}

/// A socket path can be watched when it is absolute and normalised (no `.`, `..` or empty
/// segments, no trailing `/`), has no NUL or `=` (the probe's command line takes
/// `PATH=RUNTIME`) and is at most 107 bytes.
pub fn check_socket_path(path: &str) -> Result<(), SocketPathError> {
    let normalised = path.len() > 1
        && path.starts_with('/')
        && !path.ends_with('/')
        && path[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if !normalised {
        Err(SocketPathError::NotNormalised(path.to_string()))
    } else if path.contains(['\0', '=']) || path.chars().any(char::is_control) {
        Err(SocketPathError::ForbiddenCharacter(path.to_string()))
    } else if path.len() > MAX_SOCKET_PATH {
        Err(SocketPathError::TooLong(path.to_string()))
    } else {
        Ok(())
    }
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
        if let Err(p) = check_socket_path(&socket.path) {
            problems.push(format!("spec.sockets[{i}].path: {p}"));
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
        match crate::parse_ttl(&r.ttl) {
            Ok(_) => {}
            Err(crate::TtlError::Malformed) => problems.push(format!(
                "spec.findings.ttl: {:?} is not a duration like 7d or 1h30m",
                truncate(&r.ttl, 64)
            )),
            Err(crate::TtlError::TooLong) => problems.push(format!(
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
            serde_json::json!({"exemptions": [{"serviceAccounts": ["monitoring/agent"], "images": ["docker.io/datadog/agent:*"], "executables": ["/usr/{bin,sbin}/cadvisor"]}]}),
            serde_json::json!({"exemptions": [{"namespaces": ["ci"], "serviceAccounts": ["runner"]}, {"namespaces": ["obs"], "podSelector": {"matchLabels": {"app": "agent"}}}]}),
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
                serde_json::json!({"exemptions": [{"namespaces": ["a"], "images": ["nginx:[1"]}]}),
                "bad pattern",
            ),
            (
                serde_json::json!({"exemptions": [{"images": ["datadog/agent"]}]}),
                "must set namespaces or serviceAccounts",
            ),
            (
                serde_json::json!({"exemptions": [{"executables": ["/usr/bin/dockerd-rootless*"]}]}),
                "must set namespaces or serviceAccounts",
            ),
            (
                serde_json::json!({"exemptions": [{"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "sockwarden"}}}]}),
                "must set namespaces or serviceAccounts",
            ),
            (
                serde_json::json!({"exemptions": [{"serviceAccounts": ["datadog"]}]}),
                "names no namespace",
            ),
            (
                serde_json::json!({"exemptions": [{"namespaces": ["a"], "images": ["*datadog/agent:*"]}]}),
                "repository must be exact",
            ),
            (
                serde_json::json!({"exemptions": [{"namespaces": ["a"], "executables": ["dockerd"]}]}),
                "absolute path pattern",
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
                "absolute, normalised path",
            ),
            (
                serde_json::json!({"sockets": [{"path": "/run//docker.sock", "runtime": "docker"}]}),
                "absolute, normalised path",
            ),
            (
                serde_json::json!({"sockets": [{"path": "/run/a=b.sock", "runtime": "docker"}]}),
                "must not contain NUL, '='",
            ),
            (
                serde_json::json!({"sockets": [{"path": format!("/{}", "s".repeat(107)), "runtime": "docker"}]}),
                "at most 107",
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
