//! Standard `metav1.Condition`s for policy status: a new condition keeps the previous
//! `lastTransitionTime` when its status did not change.
use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

pub fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    previous: &[Condition],
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(Timestamp::now()));
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let old = condition("Ready", true, "AllNodesReady", "3/3", Some(1), &[]);
        let again = condition(
            "Ready",
            true,
            "AllNodesReady",
            "4/4",
            Some(2),
            std::slice::from_ref(&old),
        );
        assert_eq!(again.last_transition_time, old.last_transition_time);
        assert_eq!(again.observed_generation, Some(2));
        std::thread::sleep(std::time::Duration::from_millis(2));
        let flipped = condition(
            "Ready",
            false,
            "NodesNotReady",
            "1/4",
            Some(2),
            std::slice::from_ref(&old),
        );
        assert_ne!(flipped.last_transition_time, old.last_transition_time);
        assert_eq!(flipped.status, "False");
    }
}
