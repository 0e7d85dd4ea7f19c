//! sockwarden's Kubernetes API (group `sockwarden.io`, version `v1alpha1`), shared by the
//! operator and the node probe:
//! - [`DockerSocketPolicy`] (cluster-scoped, `dsp`): what to watch, for which pods, with
//!   which exemptions, and in which mode.
//! - [`DockerAbuseFinding`] (namespaced, `daf`): one per offending (pod, container, socket,
//!   operation, action, program name), counted and time-stamped.
//! - [`DockerSocketProbe`] (namespaced, `dsprobe`): one per node, what its probe does (how it
//!   enforces which policies), written by that probe.
pub mod compiled;
pub mod crds;
pub mod finding;
pub mod image;
pub mod names;
pub mod policy;
pub mod probe;
pub mod validate;

pub use finding::*;
pub use names::{label_value, short_digest};
pub use policy::*;
pub use probe::*;

/// At most `max` bytes of `s` (on a character boundary), marked `…` when cut: a value a
/// workload chose must not make a status message, Event or finding object huge.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The API group.
pub const GROUP: &str = "sockwarden.io";
/// The probe DaemonSet's name, in sockwarden's namespace: the operator applies it, and a
/// stopping probe asks whether it is being deleted (an uninstall).
pub const PROBE_DAEMONSET: &str = "sockwarden-probe";
/// Label on a finding naming the policy it was reported under; its value is
/// [`label_value`] of the policy's name (the full name is `spec.policy`).
pub const POLICY_LABEL: &str = "sockwarden.io/policy";
/// Label on a finding naming the node whose probe reported it; its value is
/// [`label_value`] of the node's name (the full name is `spec.node`).
pub const NODE_LABEL: &str = "sockwarden.io/node";
