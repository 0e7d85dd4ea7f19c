//! `DockerAbuseFinding`: one per offending (pod, container, socket, operation, program name),
//! living in the pod's namespace; repeats bump `status.count` and `status.lastSeen`.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// TRC-1019's metadata, carried on every finding.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignatureRef {
    /// Signature id (`TRC-1019`).
    pub id: String,
    /// Version of the signature.
    pub version: String,
    /// Human-readable name of the signature.
    pub name: String,
    /// Event name in the signature's vocabulary (`docker_abuse`).
    pub event_name: String,
    /// The signature's own severity (0-3).
    pub severity: u8,
    /// Attack category (`privilege-escalation`).
    pub category: String,
    /// MITRE ATT&CK technique name.
    pub technique: String,
    /// MITRE ATT&CK STIX id of the technique.
    pub mitre_id: String,
    /// MITRE ATT&CK technique id (`T1068`).
    pub external_id: String,
}

/// TRC-1019 "Docker socket abuse detected": the one definition of its metadata. The probe
/// prints it on every finding and [`SignatureRef::trc_1019`] copies it onto the object.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Signature {
    pub id: &'static str,
    pub version: &'static str,
    pub name: &'static str,
    pub event_name: &'static str,
    pub severity: u8,
    pub category: &'static str,
    pub technique: &'static str,
    pub mitre_id: &'static str,
    pub external_id: &'static str,
}

pub const TRC_1019: Signature = Signature {
    id: "TRC-1019",
    version: "1",
    name: "Docker socket abuse detected",
    event_name: "docker_abuse",
    severity: 2,
    category: "privilege-escalation",
    technique: "Exploitation for Privilege Escalation",
    mitre_id: "attack-pattern--b21c3b2d-02e6-45b1-980b-e69051040839",
    external_id: "T1068",
};

impl From<&Signature> for SignatureRef {
    fn from(s: &Signature) -> Self {
        Self {
            id: s.id.into(),
            version: s.version.into(),
            name: s.name.into(),
            event_name: s.event_name.into(),
            severity: s.severity,
            category: s.category.into(),
            technique: s.technique.into(),
            mitre_id: s.mitre_id.into(),
            external_id: s.external_id.into(),
        }
    }
}

impl SignatureRef {
    pub fn trc_1019() -> Self {
        Self::from(&TRC_1019)
    }
}

/// What the process did with the socket.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FindingOperation {
    /// connect(2) to the socket.
    Connect,
    /// open(2) of the socket file with write intent.
    Open,
}

impl FindingOperation {
    /// The spelling the object, the probe's stdout line and every metric label use (the
    /// serde name; a test keeps the two equal).
    pub fn as_str(self) -> &'static str {
        match self {
            FindingOperation::Connect => "connect",
            FindingOperation::Open => "open",
        }
    }
}

impl std::fmt::Display for FindingOperation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kernel's operation code, as the probe decoded it, in the API's vocabulary.
impl From<probe_common::Operation> for FindingOperation {
    fn from(op: probe_common::Operation) -> Self {
        match op {
            probe_common::Operation::Connect => FindingOperation::Connect,
            probe_common::Operation::Open => FindingOperation::Open,
        }
    }
}

/// What the node did about it.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum FindingAction {
    /// Reported only: the touch went through.
    Audit,
    /// Refused (`EPERM`) or stopped (`SIGKILL`) by the node's backend under enforcement.
    Blocked,
}

impl FindingAction {
    /// The spelling the object, the probe's stdout line and every metric label use (the
    /// serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            FindingAction::Audit => "Audit",
            FindingAction::Blocked => "Blocked",
        }
    }
}

impl std::fmt::Display for FindingAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The pod whose container reached the socket.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct PodRef {
    /// Pod name, in the finding's namespace.
    pub name: String,
    /// Pod uid (tells a re-created pod of the same name apart).
    pub uid: String,
}

/// The container the process ran in.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ContainerRef {
    /// Container name in the pod spec.
    pub name: String,
    /// Full container id as the runtime knows it.
    pub id: String,
    /// Image of the container as the pod spec names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// The pod's top-level owner.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct WorkloadRef {
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `CronJob`, `Job`, `Pod`, ...
    pub kind: String,
    /// Name of the owner, in the finding's namespace.
    pub name: String,
}

/// The runtime socket that was reached.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SocketUse {
    /// The socket's path on the node.
    pub host_path: String,
    /// Which runtime serves it (`docker`, `containerd`, `cri-o`, ...).
    // A string, not `Runtime`: a probe's `--socket PATH=NAME` names runtimes of its own
    // (letters, digits, `-`, `_`, checked where the flag is parsed), and a stricter type
    // here would make one such object undecodable for every reader of the list.
    pub runtime: String,
}

/// The process that reached the socket. Its names and command line are the pod's own
/// choice: treat them as untrusted text.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ProcessRef {
    /// Executable path inside the container, when it could still be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// The kernel's task name (at most 15 bytes).
    pub comm: String,
    /// Command line, truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// User id of the process, as the node's kernel sees it.
    pub uid: u32,
}

/// A pod's container reached a container runtime's socket.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "sockwarden.io",
    version = "v1alpha1",
    kind = "DockerAbuseFinding",
    plural = "dockerabusefindings",
    shortname = "daf",
    category = "sockwarden",
    doc = "A container process reached a container runtime's socket: one object per pod, container, socket, operation and program; repeats count up in status.",
    namespaced,
    status = "DockerAbuseFindingStatus",
    printcolumn = r#"{"name":"POD","type":"string","jsonPath":".spec.pod.name"}"#,
    printcolumn = r#"{"name":"CONTAINER","type":"string","jsonPath":".spec.container.name"}"#,
    printcolumn = r#"{"name":"SOCKET","type":"string","jsonPath":".spec.socket.hostPath"}"#,
    printcolumn = r#"{"name":"OPERATION","type":"string","jsonPath":".spec.operation"}"#,
    printcolumn = r#"{"name":"ACTION","type":"string","jsonPath":".spec.action"}"#,
    // `-o wide` only: where it happened, under which policy, by which binary and image.
    printcolumn = r#"{"name":"NODE","type":"string","priority":1,"jsonPath":".spec.node"}"#,
    printcolumn = r#"{"name":"POLICY","type":"string","priority":1,"jsonPath":".spec.policy"}"#,
    printcolumn = r#"{"name":"EXE","type":"string","priority":1,"jsonPath":".spec.process.exe"}"#,
    printcolumn = r#"{"name":"IMAGE","type":"string","priority":1,"jsonPath":".spec.container.image"}"#,
    printcolumn = r#"{"name":"COUNT","type":"integer","jsonPath":".status.count"}"#,
    printcolumn = r#"{"name":"LAST SEEN","type":"date","jsonPath":".status.lastSeen"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DockerAbuseFindingSpec {
    /// The detection signature (TRC-1019).
    pub signature: SignatureRef,
    /// The node whose probe reported it.
    pub node: String,
    /// The pod.
    pub pod: PodRef,
    /// The container in the pod.
    pub container: ContainerRef,
    /// The pod's owning workload, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadRef>,
    /// The pod's service account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// `connect` or `open`.
    pub operation: FindingOperation,
    /// The socket reached.
    pub socket: SocketUse,
    /// The path the process used, when it differs from the socket's host path (its view
    /// inside the container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_path: Option<String>,
    /// The process.
    pub process: ProcessRef,
    /// What the node did: `Audit` (reported) or `Blocked`.
    pub action: FindingAction,
    /// The policy the finding was reported under (`default` when none matched).
    pub policy: String,
    /// Severity from the policy (0-3; TRC-1019's is 2).
    #[schemars(range(min = 0, max = 3))]
    pub severity: u8,
}

/// Written by the probe of the pod's node; its times may be forged, so readers bound them
/// (the operator does: see its `retention` module).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DockerAbuseFindingStatus {
    /// How often it was seen.
    pub count: i64,
    /// When it was first seen, by the reporting probe's clock.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "readable_time"
    )]
    pub first_seen: Option<Time>,
    /// When it was last seen, by the reporting probe's clock.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "readable_time"
    )]
    pub last_seen: Option<Time>,
}

/// A time as the API server stores it, or `None` when it cannot be represented here: the
/// API accepts any RFC 3339 time, up to 9999-12-31T23:59:59Z, but jiff's timestamps end a
/// day earlier. Refusing the value would make the whole list undecodable and stop every
/// watch of findings, so such a time is treated as unknown instead.
fn readable_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Time>, D::Error> {
    let value = Option::<serde_json::Value>::deserialize(d)?;
    Ok(value.and_then(|v| serde_json::from_value(v).ok()))
}

/// The deterministic object name of the finding for one (pod uid, container, socket,
/// operation, program): the same key always writes the same object. The program is the
/// task's `comm`, which the kernel reports with every event; the executable path is read
/// from /proc afterwards and is missing for a process that already exited, so keying by it
/// split one program's connects over two objects (seen on a real cluster).
pub fn finding_name(
    pod_uid: &str,
    container: &str,
    socket_path: &str,
    operation: FindingOperation,
    action: FindingAction,
    program: &str,
) -> String {
    // FNV-1a over the key fields, NUL-separated; 64 bits in hex, twice with different
    // offsets for 128 bits so collisions are not a practical concern.
    fn fnv(seed: u64, parts: &[&str]) -> u64 {
        let mut h = seed;
        for part in parts {
            for b in part.bytes().chain(std::iter::once(0)) {
                h ^= b as u64;
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    }
    // A blocked touch is another object than an audited one (a finding's spec is kept as
    // created); audited names are those of the versions before enforcement.
    let op = match action {
        FindingAction::Audit => operation.as_str().to_string(),
        FindingAction::Blocked => format!("{} {}", operation.as_str(), action.as_str()),
    };
    let parts = [pod_uid, container, socket_path, &op, program];
    format!(
        "daf-{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325, &parts),
        fnv(0x6c62_272e_07bb_0142, &parts)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_carries_the_same_trc_1019_fields_the_probe_prints() {
        assert_eq!(
            serde_json::to_value(SignatureRef::trc_1019()).unwrap(),
            serde_json::to_value(TRC_1019).unwrap()
        );
    }

    #[test]
    fn kernel_codes_convert_to_the_api_operation_and_unknown_codes_are_refused() {
        use probe_common::{kind, Operation};
        for (code, op, api) in [
            (kind::CONNECT, Operation::Connect, FindingOperation::Connect),
            (kind::OPEN, Operation::Open, FindingOperation::Open),
        ] {
            assert_eq!(Operation::try_from(code), Ok(op));
            assert_eq!(op as u32, code, "the enum names the kernel's own codes");
            assert_eq!(FindingOperation::from(op), api);
        }
        for code in [0, kind::CGROUP_MKDIR, 42, u32::MAX] {
            assert_eq!(Operation::try_from(code), Err(code));
        }
    }

    #[test]
    fn as_str_is_the_serde_spelling() {
        for op in [FindingOperation::Connect, FindingOperation::Open] {
            assert_eq!(serde_json::to_value(op).unwrap(), op.as_str());
            assert_eq!(op.to_string(), op.as_str());
            let back: FindingOperation = serde_json::from_value(op.as_str().into()).unwrap();
            assert_eq!(back, op);
        }
        assert_eq!(FindingOperation::Connect.as_str(), "connect");
        assert_eq!(FindingOperation::Open.as_str(), "open");
        for action in [FindingAction::Audit, FindingAction::Blocked] {
            assert_eq!(serde_json::to_value(action).unwrap(), action.as_str());
            assert_eq!(action.to_string(), action.as_str());
            let back: FindingAction = serde_json::from_value(action.as_str().into()).unwrap();
            assert_eq!(back, action);
        }
        assert_eq!(FindingAction::Audit.as_str(), "Audit");
    }

    #[test]
    fn a_time_past_what_jiff_can_hold_reads_as_unknown_and_the_status_still_decodes() {
        let status: DockerAbuseFindingStatus = serde_json::from_value(serde_json::json!({
            "count": 3, "firstSeen": "2024-01-01T00:00:00Z", "lastSeen": "9999-12-31T23:59:59Z"
        }))
        .unwrap();
        assert_eq!(status.count, 3);
        assert!(status.first_seen.is_some());
        assert_eq!(status.last_seen, None);
        let junk: DockerAbuseFindingStatus =
            serde_json::from_value(serde_json::json!({"count": 1, "lastSeen": 7})).unwrap();
        assert_eq!(junk.last_seen, None);
    }

    #[test]
    fn finding_name_is_deterministic_valid_and_distinguishes_each_key_field() {
        let base = finding_name(
            "uid-1",
            "app",
            "/run/docker.sock",
            FindingOperation::Connect,
            FindingAction::Audit,
            "/bin/sh",
        );
        assert_eq!(
            base,
            finding_name(
                "uid-1",
                "app",
                "/run/docker.sock",
                FindingOperation::Connect,
                FindingAction::Audit,
                "/bin/sh"
            )
        );
        assert_eq!(base.len(), 36);
        assert!(base
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
        for other in [
            finding_name(
                "uid-2",
                "app",
                "/run/docker.sock",
                FindingOperation::Connect,
                FindingAction::Audit,
                "/bin/sh",
            ),
            finding_name(
                "uid-1",
                "side",
                "/run/docker.sock",
                FindingOperation::Connect,
                FindingAction::Audit,
                "/bin/sh",
            ),
            finding_name(
                "uid-1",
                "app",
                "/run/containerd/containerd.sock",
                FindingOperation::Connect,
                FindingAction::Audit,
                "/bin/sh",
            ),
            finding_name(
                "uid-1",
                "app",
                "/run/docker.sock",
                FindingOperation::Open,
                FindingAction::Audit,
                "/bin/sh",
            ),
            finding_name(
                "uid-1",
                "app",
                "/run/docker.sock",
                FindingOperation::Connect,
                FindingAction::Audit,
                "/usr/bin/curl",
            ),
            finding_name(
                "uid-1",
                "app",
                "/run/docker.sock",
                FindingOperation::Connect,
                FindingAction::Blocked,
                "/bin/sh",
            ),
            // field boundaries matter: ("ab","c") is not ("a","bc")
            finding_name(
                "uid-1",
                "ap",
                "p/run/docker.sock",
                FindingOperation::Connect,
                FindingAction::Audit,
                "/bin/sh",
            ),
        ] {
            assert_ne!(base, other);
        }
    }
}
