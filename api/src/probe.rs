//! `DockerSocketProbe`: what one node's probe does, written by that probe (one per node, in
//! sockwarden's namespace, named after the node and owned by the probe's pod, so it goes
//! with the pod). The operator reads them to say whether a policy's `Enforce` is enforced:
//! only when every node's probe enforces that policy's current generation.
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One node's probe, as it reports itself.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "sockwarden.io",
    version = "v1alpha1",
    kind = "DockerSocketProbe",
    plural = "dockersocketprobes",
    shortname = "dsprobe",
    category = "sockwarden",
    namespaced,
    doc = "What one node's sockwarden probe does: its backend, and whether and how it enforces which Enforce policies. Written by that node's probe.",
    printcolumn = r#"{"name":"NODE","type":"string","jsonPath":".spec.node"}"#,
    printcolumn = r#"{"name":"BACKEND","type":"string","jsonPath":".spec.backend"}"#,
    printcolumn = r#"{"name":"ENFORCING","type":"boolean","jsonPath":".spec.enforcing"}"#,
    printcolumn = r#"{"name":"BLOCKS WITH","type":"string","jsonPath":".spec.blocksWith"}"#,
    printcolumn = r#"{"name":"PINNED","type":"boolean","jsonPath":".spec.pinned"}"#,
    printcolumn = r#"{"name":"REASON","type":"string","priority":1,"jsonPath":".spec.reason"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DockerSocketProbeSpec {
    /// The node this probe runs on.
    #[schemars(length(max = 253))]
    pub node: String,
    /// The attach backend it chose: `lsm`, `fentry`, `tracepoint` or `kprobe`.
    #[schemars(length(max = 16))]
    pub backend: String,
    /// Whether the node refuses containers' touches of the watched sockets now.
    pub enforcing: bool,
    /// How a refused caller is stopped: `EPERM` (the call fails) or `SIGKILL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub blocks_with: Option<String>,
    /// Whether the enforcing programs are pinned (the node stays enforced while no probe
    /// runs).
    #[serde(default)]
    pub pinned: bool,
    /// The `Enforce` policies enforced, at the generation enforced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024))]
    pub policies: Vec<EnforcedPolicy>,
    /// Why this node does not enforce although an `Enforce` policy applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub reason: Option<String>,
}

/// A policy a node enforces, at the generation it enforces.
#[derive(
    Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct EnforcedPolicy {
    #[schemars(length(max = 253))]
    pub name: String,
    pub generation: i64,
}

impl DockerSocketProbeSpec {
    /// Whether this node enforces policy `name` at `generation`.
    pub fn enforces(&self, name: &str, generation: i64) -> bool {
        self.enforcing
            && self
                .policies
                .iter()
                .any(|p| p.name == name && p.generation == generation)
    }
}
