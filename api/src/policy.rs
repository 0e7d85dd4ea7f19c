//! `DockerSocketPolicy`: what sockwarden watches, for which pods, and what it does.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a matching event leads to.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub enum Mode {
    /// Report findings; never interfere.
    #[default]
    Audit,
    /// Also refuse the access: the container's touches of a watched socket fail (`EPERM`) or
    /// the caller is stopped (`SIGKILL`), as each node's backend can.
    Enforce,
}

/// A cluster-wide policy for runtime-socket access from pods.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "sockwarden.io",
    version = "v1alpha1",
    kind = "DockerSocketPolicy",
    plural = "dockersocketpolicies",
    shortname = "dsp",
    category = "sockwarden",
    doc = "A cluster-wide policy for runtime-socket access from pods: which sockets are watched, for which pods, with which exemptions and retention of findings.",
    status = "DockerSocketPolicyStatus",
    // MODE is what the nodes do, not what was asked for (REQUESTED, with -o wide): an
    // `Enforce` policy reads as enforced only once every node's probe enforces it.
    printcolumn = r#"{"name":"MODE","type":"string","description":"What the nodes do for this policy (status.effectiveMode)","jsonPath":".status.effectiveMode"}"#,
    printcolumn = r#"{"name":"REQUESTED","type":"string","description":"The mode the policy asks for (spec.mode)","priority":1,"jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"ACCEPTED","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"READY","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"NODES","type":"string","jsonPath":".status.nodes.ready"}"#,
    printcolumn = r#"{"name":"FINDINGS","type":"integer","jsonPath":".status.findings.total"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DockerSocketPolicySpec {
    /// `Audit` (default) reports; `Enforce` also refuses where the node can.
    #[serde(default)]
    pub mode: Mode,
    /// Which pods the policy covers; empty selects every pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<PolicySelector>,
    /// Sockets to watch in addition to the probe's defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub sockets: Vec<SocketRef>,
    /// Which operations count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operations: Option<Operations>,
    /// Legitimate users of the socket (monitoring agents, CI runners).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub exemptions: Vec<Exemption>,
    /// Severity on findings (TRC-1019's is 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3))]
    pub severity: Option<u8>,
    /// Retention of findings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub findings: Option<FindingsRetention>,
}

/// Which pods a policy covers: those matching both selectors (an absent one matches all).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicySelector {
    /// Labels of the pod's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Labels of the pod itself (chosen by the pod's author).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
}

/// A runtime socket on the node.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SocketRef {
    /// Absolute, normalised host path of the socket (at most 107 bytes, no `=`).
    #[schemars(regex(pattern = r"^(/[^/\x00=]+)+$"), length(min = 2, max = 107))]
    pub path: String,
    /// Which runtime serves it.
    pub runtime: Runtime,
}

/// The container runtime (or builder) serving a socket; reported on findings.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// Docker Engine (dockerd).
    Docker,
    /// containerd.
    Containerd,
    /// CRI-O.
    #[serde(rename = "cri-o")]
    CriO,
    /// Podman's API service.
    Podman,
    /// BuildKit (buildkitd).
    Buildkit,
    /// Anything else that runs or builds containers.
    Other,
}

impl Runtime {
    /// The name findings and metric labels carry for the runtime (the serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Podman => "podman",
            Runtime::Buildkit => "buildkit",
            Runtime::Other => "other",
        }
    }
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn yes() -> bool {
    true
}

/// Which operations count. TRC-1019 counts both, opens only with write intent.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.connect || self.open",
    "message": "at least one of connect and open must be true"
}]))]
pub struct Operations {
    /// Count connect(2) to the socket (default true).
    #[serde(default = "yes")]
    pub connect: bool,
    /// Count open(2) of the socket file (default true; where the node can see opens).
    #[serde(default = "yes")]
    pub open: bool,
    /// Count an open only with write flags (as TRC-1019 does).
    #[serde(default = "yes")]
    pub open_requires_write: bool,
}

impl Default for Operations {
    fn default() -> Self {
        Self {
            connect: true,
            open: true,
            open_requires_write: true,
        }
    }
}

/// One exemption; a pod matching every field given is exempt. It must name namespaces or
/// service accounts (who may run pods there is RBAC's decision); pod labels, images and
/// executables are the pod author's choice, so they only narrow it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.namespaces) || has(self.serviceAccounts)",
    "message": "an exemption must set namespaces or serviceAccounts; podSelector, images and executables only narrow it (a pod's author chooses those)"
}, {
    "rule": "!has(self.serviceAccounts) || has(self.namespaces) || self.serviceAccounts.all(s, s.contains('/'))",
    "message": "serviceAccounts without namespaces must be written NAMESPACE/NAME"
}]))]
pub struct Exemption {
    /// Namespaces whose pods are exempt (narrowed by the other fields given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub namespaces: Option<Vec<String>>,
    /// Pod labels; narrows only: a pod's author chooses its labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    /// `NAMESPACE/NAME`; a bare `NAME` only together with `namespaces` (that account in
    /// those namespaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub service_accounts: Option<Vec<String>>,
    /// Images: an exact repository (`datadog/agent` is `docker.io/datadog/agent`) with an
    /// optional tag or digest pattern, e.g. `gcr.io/datadoghq/agent:7.*`. No wildcard in the
    /// repository. Narrows only: anyone may run any image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub images: Option<Vec<String>>,
    /// Absolute executable path globs (`*` within one directory, `**` across), e.g.
    /// `/usr/bin/cadvisor`. Narrows only: a pod's author names its own binaries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub executables: Option<Vec<String>>,
}

/// How long findings are kept and how many per namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FindingsRetention {
    /// Keep a finding this long after it was last seen: up to four numbers with a unit
    /// (`s`, `m`, `h`, `d`), e.g. `7d`, `36h`, `1h30m`; at most 3650d in total.
    #[serde(default = "default_ttl")]
    #[schemars(regex(pattern = r"^([0-9]{1,9}(s|m|h|d)){1,4}$"), length(max = 40))]
    pub ttl: String,
    /// Most findings kept per namespace; the oldest go first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_per_namespace: Option<u32>,
}

fn default_ttl() -> String {
    "7d".into()
}

impl Default for FindingsRetention {
    fn default() -> Self {
        Self {
            ttl: default_ttl(),
            max_per_namespace: None,
        }
    }
}

/// The longest retention a policy may ask for: ten years. It keeps every expiry time
/// computable (jiff's timestamps end in year 9999) and is far beyond any real need.
pub const MAX_TTL_SECS: u64 = 3650 * 86_400;

/// Why a retention duration was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlError {
    /// Not numbers with units (`7d`, `1h30m`), or zero.
    Malformed,
    /// Longer than [`MAX_TTL_SECS`] (3650d).
    TooLong,
}

/// Parses a retention duration (`7d`, `1h30m`) into seconds, at most [`MAX_TTL_SECS`].
pub fn parse_ttl(s: &str) -> Result<u64, TtlError> {
    let mut total: u64 = 0;
    let mut digits: u64 = 0;
    let mut have_digits = false;
    for c in s.chars() {
        if let Some(d) = c.to_digit(10) {
            // Saturates: any number this large is over the limit anyway.
            digits = digits.saturating_mul(10).saturating_add(d as u64);
            have_digits = true;
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(TtlError::Malformed),
        };
        if !have_digits {
            return Err(TtlError::Malformed);
        }
        total = total.saturating_add(digits.saturating_mul(unit));
        (digits, have_digits) = (0, false);
    }
    match total {
        _ if have_digits || total == 0 => Err(TtlError::Malformed),
        t if t > MAX_TTL_SECS => Err(TtlError::TooLong),
        t => Ok(t),
    }
}

/// What the operator observed for the policy.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DockerSocketPolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// What the nodes actually do for this policy: `Enforce` only while every node's probe
    /// enforces its current generation (the `Enforced` condition says which do not), else
    /// `Audit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_mode: Option<Mode>,
    /// `Accepted`, `Ready`, `Degraded`, and `Enforced` for a policy asking for `Enforce`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// How many nodes should run a probe and how many run a ready one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodeCoverage>,
    /// Findings reported under this policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub findings: Option<FindingsRollup>,
}

/// Probe coverage, from the probe DaemonSet's status.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct NodeCoverage {
    /// Nodes that should run a probe.
    pub desired: i32,
    /// Nodes running a ready probe.
    pub ready: i32,
}

/// Findings reported under a policy, summed by the operator.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FindingsRollup {
    /// Sum of the findings' counts.
    pub total: i64,
    /// The latest `lastSeen` among them (times in the future are not believed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Time>,
}

/// Condition types.
pub mod condition {
    pub const ACCEPTED: &str = "Accepted";
    pub const READY: &str = "Ready";
    pub const DEGRADED: &str = "Degraded";
    /// Only on policies asking for `Enforce`: whether every node's probe enforces the
    /// policy's current generation.
    pub const ENFORCED: &str = "Enforced";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_as_str_is_the_serde_spelling() {
        use Runtime::*;
        for r in [Docker, Containerd, CriO, Podman, Buildkit, Other] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
            assert_eq!(r.to_string(), r.as_str());
        }
    }

    #[test]
    fn ttl_parsing_accepts_units_and_refuses_junk() {
        assert_eq!(parse_ttl("7d"), Ok(7 * 86_400));
        assert_eq!(parse_ttl("1h30m"), Ok(5400));
        assert_eq!(parse_ttl("45s"), Ok(45));
        for bad in ["", "7", "d", "-1h", "1y", "0s", "1h-", "h1", "１d"] {
            assert_eq!(parse_ttl(bad), Err(TtlError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn ttl_is_bounded_at_ten_years_without_overflow() {
        assert_eq!(parse_ttl("3650d"), Ok(MAX_TTL_SECS));
        assert_eq!(parse_ttl("3649d23h59m60s"), Ok(MAX_TTL_SECS));
        for long in [
            "3650d1s",
            "999999999h",
            "99999999999999999999d",
            "999999999d999999999d999999999d999999999d",
        ] {
            assert_eq!(parse_ttl(long), Err(TtlError::TooLong), "{long:?}");
        }
    }

    #[test]
    fn defaults_are_audit_both_operations_write_only_opens_and_seven_days() {
        let spec: DockerSocketPolicySpec = serde_json::from_str("{}").unwrap();
        assert_eq!(spec.mode, Mode::Audit);
        let ops: Operations = serde_json::from_str("{}").unwrap();
        assert!(ops.connect && ops.open && ops.open_requires_write);
        let r: FindingsRetention = serde_json::from_str("{}").unwrap();
        assert_eq!(r.ttl, "7d");
    }
}
