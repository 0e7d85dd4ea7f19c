//! The probe pods' scheduling and extras, read from a YAML (or JSON) file
//! (`--probe-settings`): the chart renders the `probe.*` values into the ConfigMap
//! `sockwarden-probe-settings`, mounted into the operator pod. A file instead of one flag
//! per field: the values are nested Kubernetes objects (tolerations, affinity, resources)
//! that would need quoting as flags, and `render-daemonset --probe-settings FILE` shows the
//! same DaemonSet for review.
//!
//! Everything is checked when the file is read, before the operator starts: unknown keys
//! (also inside the Kubernetes objects, whose own decoders would ignore them), labels that
//! would take over the DaemonSet's selector labels, probe arguments and environment
//! variables the operator sets itself, and malformed label keys or values — so a bad value
//! stops the operator with the field named instead of failing every apply.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, LocalObjectReference, ResourceRequirements, Toleration,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The file's content. Absent keys keep today's DaemonSet (see [`Default`]).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbePodSettings {
    /// Nodes the probe runs on (every node when empty).
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the probe tolerates; absent: every taint (`[{operator: Exists}]`).
    #[serde(default = "tolerate_everything")]
    pub tolerations: Vec<Toleration>,
    /// Pod affinity and anti-affinity, as in a pod spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Replaces the built-in requests and limits when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Added to the pod annotations.
    #[serde(default)]
    pub pod_annotations: BTreeMap<String, String>,
    /// Added to the pod labels; the labels the operator sets cannot be changed.
    #[serde(default)]
    pub pod_labels: BTreeMap<String, String>,
    /// Secrets for pulling the probe image.
    #[serde(default)]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Appended to the probe's `run` arguments.
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// Added to the probe container's environment.
    #[serde(default)]
    pub extra_env: Vec<EnvVar>,
    /// Findings also sent over HTTP.
    #[serde(default)]
    pub http_output: HttpOutput,
}

/// Where probes also send findings over HTTP (probe flags `--http-output`,
/// `--http-output-queue`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpOutput {
    /// `http://` or `https://` URL; empty: off.
    #[serde(default)]
    pub url: String,
    /// Findings a probe holds while the endpoint is slow or down; absent: the probe's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<u32>,
}

fn tolerate_everything() -> Vec<Toleration> {
    vec![Toleration {
        operator: Some("Exists".into()),
        ..Default::default()
    }]
}

impl Default for ProbePodSettings {
    fn default() -> Self {
        Self {
            node_selector: BTreeMap::new(),
            tolerations: tolerate_everything(),
            affinity: None,
            resources: None,
            pod_annotations: BTreeMap::new(),
            pod_labels: BTreeMap::new(),
            image_pull_secrets: Vec::new(),
            extra_args: Vec::new(),
            extra_env: Vec::new(),
            http_output: HttpOutput::default(),
        }
    }
}

/// Labels the operator puts on probe pods (the selector's among them).
pub const OWN_LABELS: [&str; 3] = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
];

/// Probe flags the operator sets (or chooses not to); `extraArgs` may not repeat them.
pub const OWN_FLAGS: [&str; 7] = [
    "--host-root",
    "--listen",
    "--format",
    "--log-format",
    "--detect-open",
    "--http-output",
    "--http-output-queue",
];

/// Environment variables the operator sets in the probe container.
pub const OWN_ENV: [&str; 3] = [
    "NODE_NAME",
    "KUBERNETES_SERVICE_HOST",
    "KUBERNETES_SERVICE_PORT",
];

/// Most findings a probe may be told to queue for HTTP output.
pub const MAX_HTTP_QUEUE: u32 = 1_000_000;

impl ProbePodSettings {
    /// Reads and checks a settings file; the error names the file and the field.
    pub fn from_file(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read probe settings {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("probe settings {}: {e}", path.display()))
    }

    /// Parses YAML or JSON (JSON is YAML) and checks it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: Value = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        // An empty file is the defaults.
        let mut raw = if raw.is_null() {
            Value::Object(Default::default())
        } else {
            raw
        };
        quantities_as_strings(&mut raw);
        // Each top-level key on its own first, so that a type error names its field (the
        // decoder's own message does not say where it was).
        let Value::Object(fields) = &raw else {
            return Err("not a map of settings".into());
        };
        for (k, v) in fields {
            let one = Value::Object([(k.clone(), v.clone())].into_iter().collect());
            serde_json::from_value::<Self>(one).map_err(|e| format!("{k}: {e}"))?;
        }
        let settings: Self = serde_json::from_value(raw.clone()).map_err(|e| e.to_string())?;
        // Kubernetes types ignore keys they do not know; a misspelt `opertor` would be
        // dropped silently. What does not survive the round trip is refused.
        let back = serde_json::to_value(&settings).map_err(|e| e.to_string())?;
        if let Some(path) = first_unknown(&raw, &back, "") {
            return Err(format!("{path}: unknown field"));
        }
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), String> {
        for (k, v) in &self.node_selector {
            check_label("nodeSelector", k, v)?;
        }
        for (k, v) in &self.pod_labels {
            if OWN_LABELS.contains(&k.as_str()) {
                return Err(format!(
                    "podLabels.{k}: set by the operator (the DaemonSet selects its pods by these labels)"
                ));
            }
            check_label("podLabels", k, v)?;
        }
        for k in self.pod_annotations.keys() {
            check_key(k).map_err(|why| format!("podAnnotations.{k}: {why}"))?;
        }
        for (i, s) in self.image_pull_secrets.iter().enumerate() {
            if s.name.is_empty() {
                return Err(format!("imagePullSecrets[{i}].name: empty"));
            }
        }
        for (i, a) in self.extra_args.iter().enumerate() {
            let flag = a.split('=').next().unwrap_or_default();
            if !flag.starts_with("--") || flag.len() < 3 {
                return Err(format!(
                    "extraArgs[{i}] {a:?}: not a --flag or --flag=value (the probe runs `run` with flags only)"
                ));
            }
            if OWN_FLAGS.contains(&flag) {
                return Err(format!(
                    "extraArgs[{i}] {a:?}: {flag} is set by the operator (use probe.detectOpen or probe.httpOutput)"
                ));
            }
        }
        for (i, e) in self.extra_env.iter().enumerate() {
            if e.name.is_empty() || OWN_ENV.contains(&e.name.as_str()) {
                return Err(format!(
                    "extraEnv[{i}].name {:?}: empty or set by the operator ({})",
                    e.name,
                    OWN_ENV.join(", ")
                ));
            }
        }
        let http = &self.http_output;
        if !http.url.is_empty() {
            let rest = http
                .url
                .strip_prefix("https://")
                .or_else(|| http.url.strip_prefix("http://"));
            let ok = rest.is_some_and(|r| {
                !r.is_empty()
                    && !r.starts_with('/')
                    && !r.chars().any(|c| c.is_whitespace() || c.is_control())
            });
            if !ok {
                return Err(format!(
                    "httpOutput.url {:?}: not an http:// or https:// URL with a host",
                    http.url
                ));
            }
        }
        match http.queue {
            Some(_) if http.url.is_empty() => {
                return Err("httpOutput.queue: set without httpOutput.url".into())
            }
            Some(q) if q == 0 || q > MAX_HTTP_QUEUE => {
                return Err(format!(
                    "httpOutput.queue {q}: not from 1 to {MAX_HTTP_QUEUE}"
                ))
            }
            _ => {}
        }
        Ok(())
    }

    /// The probe arguments these settings add, in order.
    pub fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if !self.http_output.url.is_empty() {
            args.push(format!("--http-output={}", self.http_output.url));
            if let Some(q) = self.http_output.queue {
                args.push(format!("--http-output-queue={q}"));
            }
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }
}

/// The first key of `have` (as read) that `kept` (after decoding) lost, as a path. A null
/// is an absent optional field, which the encoders leave out, so it does not count.
fn first_unknown(have: &Value, kept: &Value, path: &str) -> Option<String> {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (have, kept) {
        (Value::Object(have), Value::Object(kept)) => {
            have.iter().find_map(|(k, v)| match kept.get(k) {
                Some(kv) => first_unknown(v, kv, &join(k)),
                None if v.is_null() => None,
                None => Some(join(k)),
            })
        }
        (Value::Array(have), Value::Array(kept)) => have
            .iter()
            .zip(kept)
            .enumerate()
            .find_map(|(i, (h, k))| first_unknown(h, k, &format!("{path}[{i}]"))),
        _ => None,
    }
}

/// `cpu: 1` is a valid quantity in a manifest (and what Helm renders for it), but the
/// quantity type decodes strings only.
fn quantities_as_strings(raw: &mut Value) {
    for part in ["requests", "limits"] {
        if let Some(Value::Object(m)) = raw.pointer_mut(&format!("/resources/{part}")) {
            for v in m.values_mut() {
                if let Value::Number(n) = v {
                    *v = Value::String(n.to_string());
                }
            }
        }
    }
}

fn check_label(field: &str, key: &str, value: &str) -> Result<(), String> {
    check_key(key).map_err(|why| format!("{field}.{key}: {why}"))?;
    if !api::names::is_label_value(value) {
        return Err(format!(
            "{field}.{key}: value {value:?} is not a label value (at most 63 of [A-Za-z0-9._-], alphanumeric at both ends)"
        ));
    }
    Ok(())
}

/// A label or annotation key: an optional DNS-subdomain prefix and `/`, then a name of at
/// most 63 of `[A-Za-z0-9._-]` beginning and ending alphanumeric.
fn check_key(key: &str) -> Result<(), &'static str> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !ok {
            return Err("the key's prefix is not a DNS subdomain");
        }
    }
    if name.is_empty() || !api::names::is_label_value(name) {
        return Err(
            "not a valid key (name: at most 63 of [A-Za-z0-9._-], alphanumeric at both ends)",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_defaults_which_tolerate_every_taint() {
        for text in ["", "{}", "---\n"] {
            assert_eq!(
                ProbePodSettings::parse(text).unwrap(),
                ProbePodSettings::default()
            );
        }
        let d = ProbePodSettings::default();
        assert_eq!(d.tolerations.len(), 1);
        assert_eq!(d.tolerations[0].operator.as_deref(), Some("Exists"));
        assert!(d.args().is_empty());
    }

    #[test]
    fn a_full_file_is_read_into_kubernetes_types() {
        let s = ProbePodSettings::parse(
            r#"
nodeSelector: {kubernetes.io/os: linux}
tolerations: []
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms: [{matchExpressions: [{key: pool, operator: NotIn, values: [gpu]}]}]
resources: {requests: {cpu: 20m, memory: 32Mi}, limits: {memory: 128Mi}}
podAnnotations: {example.com/team: security}
podLabels: {team: security}
imagePullSecrets: [{name: regcred}]
extraArgs: ["--write-rate=10"]
extraEnv: [{name: RUST_LOG, value: debug}]
httpOutput: {url: "https://collector.example:8443/v1/findings", queue: 500}
"#,
        )
        .unwrap();
        assert!(s.tolerations.is_empty(), "[] means no tolerations");
        assert_eq!(s.node_selector["kubernetes.io/os"], "linux");
        assert_eq!(s.image_pull_secrets[0].name, "regcred");
        let cpu = ProbePodSettings::parse("resources: {limits: {cpu: 1}}").unwrap();
        assert_eq!(cpu.resources.unwrap().limits.unwrap()["cpu"].0, "1");
        assert_eq!(
            s.args(),
            [
                "--http-output=https://collector.example:8443/v1/findings",
                "--http-output-queue=500",
                "--write-rate=10"
            ]
        );
    }

    #[test]
    fn bad_settings_are_refused_naming_the_field() {
        for (text, says) in [
            ("nodeSelectr: {a: b}", "nodeSelectr"),
            (
                "tolerations: [{opertor: Exists}]",
                "tolerations[0].opertor: unknown field",
            ),
            (
                "resources: {requests: {cpu: 1}, limit: {}}",
                "resources.limit: unknown field",
            ),
            ("tolerations: Exists", "tolerations: invalid type"),
            (
                "httpOutput: {url: 'http://c', queue: -1}",
                "httpOutput: invalid value",
            ),
            ("- a list", "not a map"),
            (
                "podLabels: {app.kubernetes.io/name: other}",
                "podLabels.app.kubernetes.io/name: set by the operator",
            ),
            ("podLabels: {team: 'a b'}", "podLabels.team: value"),
            (
                "podAnnotations: {'Bad_Prefix/x': y}",
                "podAnnotations.Bad_Prefix/x",
            ),
            ("nodeSelector: {'': x}", "nodeSelector."),
            ("imagePullSecrets: [{name: ''}]", "imagePullSecrets[0].name"),
            ("extraArgs: [--listen=0.0.0.0:1]", "extraArgs[0]"),
            (
                "extraArgs: [--host-root=/]",
                "--host-root is set by the operator",
            ),
            (
                "extraArgs: [--http-output=http://x]",
                "use probe.detectOpen or probe.httpOutput",
            ),
            ("extraArgs: [run]", "not a --flag"),
            (
                "extraEnv: [{name: NODE_NAME, value: forged}]",
                "extraEnv[0].name",
            ),
            ("httpOutput: {url: 'ftp://x'}", "httpOutput.url"),
            ("httpOutput: {url: 'http://'}", "httpOutput.url"),
            ("httpOutput: {url: 'http://a b'}", "httpOutput.url"),
            ("httpOutput: {queue: 5}", "httpOutput.queue: set without"),
            (
                "httpOutput: {url: 'http://c', queue: 0}",
                "httpOutput.queue 0",
            ),
            ("httpOutput: {url: 'http://c', qeue: 1}", "qeue"),
        ] {
            let err = ProbePodSettings::parse(text).expect_err(text);
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
