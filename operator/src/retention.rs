//! Which findings the operator keeps: when a finding counts as last seen, when it expires,
//! and which go first beyond a policy's `maxPerNamespace`. Pure functions over what the
//! cache holds, because every time and count in a finding's status is written by a probe
//! and may be forged: nothing here may panic or be steered by such a value.
//!
//! Eviction rule. Over the limit, the finding to go is the oldest of the node holding the
//! most of the policy's findings in that namespace (ties: the node whose oldest finding is
//! older), repeated until the limit holds. Every node thus keeps `min(its findings, L)` for
//! one level `L`: a node can push out only findings of nodes holding at least as many as it
//! keeps itself, so one node flooding a namespace loses its own findings first and every
//! other node keeps at least `max / nodes` (or all it has). Times only order findings
//! within one node, so a forged `lastSeen` can choose only which of the forger's own
//! findings go. Nodes are told apart by `spec.node`, the full name the admission policy
//! binds to the writing node; the `sockwarden.io/node` label may be a digest of it.
use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, HashSet},
};

use api::{parse_ttl, DockerAbuseFinding, FindingsRetention, TtlError, MAX_TTL_SECS};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

/// TTL of findings under no policy, or under a policy whose TTL does not parse.
pub const DEFAULT_TTL_SECS: u64 = 7 * 86_400;
/// How far a probe's clock may run ahead of the operator's before its times are not
/// believed.
pub const CLOCK_SKEW: SignedDuration = SignedDuration::from_mins(5);

/// When a finding was last seen, as far as the operator believes it: the probe's
/// `status.lastSeen`, but never before the API server created the object (its
/// `creationTimestamp`), never after the operator's own now, and not at all when it lies
/// further in the future than clock skew explains (then the creation time stands).
pub fn seen_at(f: &DockerAbuseFinding, now: Timestamp) -> Timestamp {
    let created = f.metadata.creation_timestamp.as_ref().map(|t| t.0.min(now));
    let claimed = f
        .status
        .as_ref()
        .and_then(|s| s.last_seen.as_ref())
        .map(|t| t.0);
    let latest_believed = now.checked_add(CLOCK_SKEW).unwrap_or(now);
    match (claimed, created) {
        (Some(t), created) if t > latest_believed => created.unwrap_or(now),
        (Some(t), Some(c)) => t.max(c).min(now),
        (Some(t), None) => t.min(now),
        (None, Some(c)) => c,
        (None, None) => now,
    }
}

/// The TTL a policy's retention asks for. One too long for the schema (an older API
/// server, or a policy written before the bound) keeps findings as long as allowed rather
/// than deleting them early.
pub fn ttl_secs(retention: Option<&FindingsRetention>) -> u64 {
    match retention.map(|r| parse_ttl(&r.ttl)) {
        Some(Ok(secs)) => secs,
        Some(Err(TtlError::TooLong)) => MAX_TTL_SECS,
        Some(Err(TtlError::Malformed)) | None => DEFAULT_TTL_SECS,
    }
}

/// When a finding seen at `seen` expires; `None` when that lies beyond the last time the
/// clock can name (never, for practical purposes).
pub fn expires_at(seen: Timestamp, ttl_secs: u64) -> Option<Timestamp> {
    let ttl = SignedDuration::from_secs(i64::try_from(ttl_secs).unwrap_or(i64::MAX));
    seen.checked_add(ttl).ok()
}

/// A finding's count as a sum may use it: never negative, `missing` when there is no
/// status yet.
pub fn count(f: &DockerAbuseFinding, missing: i64) -> i64 {
    f.status.as_ref().map_or(missing, |s| s.count.max(0))
}

/// The names of the findings among `siblings` (one policy's findings in one namespace) that
/// go to bring them down to `max`, by the rule in the module docs.
pub fn evicted<'a>(
    siblings: impl IntoIterator<Item = &'a DockerAbuseFinding>,
    max: usize,
    now: Timestamp,
) -> HashSet<String> {
    // Per node, its findings newest first, so the oldest is popped first.
    let mut by_node: BTreeMap<&str, Vec<(Timestamp, String)>> = BTreeMap::new();
    let mut total = 0usize;
    for f in siblings {
        by_node
            .entry(f.spec.node.as_str())
            .or_default()
            .push((seen_at(f, now), f.name_any()));
        total += 1;
    }
    let mut heap: BinaryHeap<(usize, Reverse<Timestamp>, Reverse<&str>)> = BinaryHeap::new();
    for (node, list) in by_node.iter_mut() {
        list.sort_by(|a, b| b.cmp(a));
        if let Some((oldest, _)) = list.last() {
            heap.push((list.len(), Reverse(*oldest), Reverse(*node)));
        }
    }
    let mut gone = HashSet::new();
    for _ in 0..total.saturating_sub(max) {
        let Some((_, _, Reverse(node))) = heap.pop() else {
            break;
        };
        let Some(list) = by_node.get_mut(node) else {
            break;
        };
        if let Some((_, name)) = list.pop() {
            gone.insert(name);
        }
        if let Some((oldest, _)) = list.last() {
            heap.push((list.len(), Reverse(*oldest), Reverse(node)));
        }
    }
    gone
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::{DockerAbuseFindingSpec, DockerAbuseFindingStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    pub fn finding(
        name: &str,
        node: &str,
        created: Timestamp,
        last_seen: Option<Timestamp>,
    ) -> DockerAbuseFinding {
        let spec: DockerAbuseFindingSpec = serde_json::from_value(json!({
            "signature": api::SignatureRef::trc_1019(), "node": node,
            "pod": {"name": "p", "uid": "u"}, "container": {"name": "c", "id": "c1"},
            "operation": "connect", "socket": {"hostPath": "/run/docker.sock", "runtime": "docker"},
            "process": {"comm": "sh", "uid": 0}, "action": "Audit", "policy": "capped", "severity": 2
        }))
        .unwrap();
        let mut f = DockerAbuseFinding::new(name, spec);
        f.metadata.creation_timestamp = Some(Time(created));
        f.status = Some(DockerAbuseFindingStatus {
            count: 1,
            first_seen: None,
            last_seen: last_seen.map(Time),
        });
        f
    }

    fn mins(m: i64) -> SignedDuration {
        SignedDuration::from_mins(m)
    }

    #[test]
    fn a_last_seen_beyond_clock_skew_is_not_believed_and_the_creation_time_stands() {
        let now = Timestamp::now();
        let created = now - mins(60);
        let year_9999 = Timestamp::MAX;
        for future in [year_9999, now + mins(6)] {
            let f = finding("f", "n", created, Some(future));
            assert_eq!(seen_at(&f, now), created, "{future}");
        }
        // within the skew: believed, but never later than now
        let f = finding("f", "n", created, Some(now + mins(4)));
        assert_eq!(seen_at(&f, now), now);
    }

    #[test]
    fn a_last_seen_before_creation_counts_from_creation() {
        let now = Timestamp::now();
        let created = now - mins(10);
        let year_1: Timestamp = "0001-01-01T00:00:00Z".parse().unwrap();
        let f = finding("f", "n", created, Some(year_1));
        assert_eq!(seen_at(&f, now), created);
        let f = finding("f", "n", created, Some(now - mins(3)));
        assert_eq!(seen_at(&f, now), now - mins(3), "an honest time is kept");
        let f = finding("f", "n", created, None);
        assert_eq!(seen_at(&f, now), created);
    }

    #[test]
    fn ttl_too_long_is_held_at_the_maximum_and_junk_falls_back_to_the_default() {
        let r = |ttl: &str| FindingsRetention {
            ttl: ttl.into(),
            max_per_namespace: None,
        };
        assert_eq!(ttl_secs(Some(&r("999999999h"))), MAX_TTL_SECS);
        assert_eq!(ttl_secs(Some(&r("1y"))), DEFAULT_TTL_SECS);
        assert_eq!(ttl_secs(Some(&r("2h"))), 7200);
        assert_eq!(ttl_secs(None), DEFAULT_TTL_SECS);
    }

    #[test]
    fn expiry_past_the_end_of_time_is_none_not_a_panic() {
        let end: Timestamp = "9999-12-30T00:00:00Z".parse().unwrap();
        assert_eq!(expires_at(end, MAX_TTL_SECS), None);
        assert_eq!(expires_at(end, u64::MAX), None);
        let t = Timestamp::UNIX_EPOCH;
        assert_eq!(expires_at(t, 60), Some(t + mins(1)));
    }

    #[test]
    fn a_flooding_node_loses_its_own_findings_first_oldest_first() {
        let now = Timestamp::now();
        let t0 = now - mins(100);
        // node "honest": 3 old findings; node "flood": 10 newer ones, one claiming the future
        let mut all = vec![];
        for i in 0..3 {
            all.push(finding(
                &format!("honest-{i}"),
                "honest",
                t0,
                Some(t0 + mins(i)),
            ));
        }
        for i in 0..10 {
            let seen = if i == 9 { None } else { Some(now - mins(i)) };
            let mut f = finding(&format!("flood-{i}"), "flood", now - mins(50), seen);
            if i == 0 {
                // forged: claims year 9999 to look newest; counts from its creation instead
                f.status.as_mut().unwrap().last_seen =
                    Some(Time("9999-01-01T00:00:00Z".parse().unwrap()));
            }
            all.push(f);
        }
        let gone = evicted(&all, 6, now);
        assert_eq!(gone.len(), 7);
        assert!(gone.iter().all(|n| n.starts_with("flood-")), "{gone:?}");
        // the flood keeps its 3 newest believed times
        for kept in ["flood-1", "flood-2", "flood-3"] {
            assert!(!gone.contains(kept), "{kept} kept: {gone:?}");
        }
        assert!(
            gone.contains("flood-0"),
            "the forged future time is not believed"
        );
    }

    #[test]
    fn beyond_the_level_every_node_keeps_an_equal_share() {
        let now = Timestamp::now();
        let mut all = vec![];
        for (node, n) in [("a", 8), ("b", 6), ("c", 1)] {
            for i in 0..n {
                all.push(finding(
                    &format!("{node}-{i}"),
                    node,
                    now - mins(60),
                    Some(now - mins(i)),
                ));
            }
        }
        let gone = evicted(&all, 9, now);
        let left = |node: &str| {
            all.iter()
                .filter(|f| f.spec.node == node && !gone.contains(&f.name_any()))
                .count()
        };
        assert_eq!((left("a"), left("b"), left("c")), (4, 4, 1));
        // within a node, the oldest went: a-7..a-4 (seen 7..4 minutes ago)
        for i in 4..8 {
            assert!(gone.contains(&format!("a-{i}")));
        }
    }

    #[test]
    fn at_or_under_the_limit_nothing_goes() {
        let now = Timestamp::now();
        let all: Vec<_> = (0..3)
            .map(|i| finding(&format!("f{i}"), "n", now, Some(now)))
            .collect();
        assert!(evicted(&all, 3, now).is_empty());
        assert!(evicted(&all, 100, now).is_empty());
        assert_eq!(evicted(&all, 0, now).len(), 3);
    }
}
