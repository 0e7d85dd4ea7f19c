//! Policies in the form both binaries judge by: validated and compiled once per generation
//! (selectors, image and executable patterns), then evaluated per finding without parsing.
//!
//! - [`PolicySet`] keeps the compiled form of the policies the operator reports
//!   `Accepted=True` for their current generation and that compile here too; any other policy
//!   is skipped whole and counted, never partly applied.
//! - [`evaluate`] decides scope, exemption and mode for one subject. With no applicable policy
//!   at all, a built-in default reports everything in `Audit` mode under the name `default`.
use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use kube::{
    core::{Selector, SelectorExt},
    ResourceExt,
};

use crate::{
    condition::ACCEPTED, image::ImagePattern, validate::validate, DockerSocketPolicy, Exemption,
    FindingOperation, Mode,
};

pub const DEFAULT_POLICY: &str = "default";
pub const DEFAULT_SEVERITY: u8 = 2;

/// Who did it, in the terms policies judge by; built from the pod object only.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub namespace: &'a str,
    pub namespace_labels: &'a BTreeMap<String, String>,
    pub pod_labels: &'a BTreeMap<String, String>,
    /// The pod's service account (`default` when the pod names none).
    pub service_account: &'a str,
    /// The image as the runtime names it.
    pub image: Option<&'a str>,
    pub executable: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Report {
        policy: String,
        mode: Mode,
        severity: u8,
    },
    /// Exempted by this policy.
    Exempt {
        policy: String,
    },
    OutOfScope,
}

#[derive(Debug)]
struct CompiledExemption {
    namespaces: Option<Vec<String>>,
    pod_selector: Option<Selector>,
    /// `(namespace, name)`; no namespace only alongside `namespaces` (validation).
    service_accounts: Option<Vec<(Option<String>, String)>>,
    images: Option<Vec<ImagePattern>>,
    executables: Option<GlobSet>,
}

impl CompiledExemption {
    fn new(e: &Exemption) -> Result<Self, String> {
        let executables = match &e.executables {
            None => None,
            Some(globs) => {
                let mut set = GlobSetBuilder::new();
                for g in globs {
                    // `*` stays within one directory; `**` crosses.
                    let glob = GlobBuilder::new(g)
                        .literal_separator(true)
                        .build()
                        .map_err(|e| e.to_string())?;
                    set.add(glob);
                }
                Some(set.build().map_err(|e| e.to_string())?)
            }
        };
        Ok(Self {
            namespaces: e.namespaces.clone(),
            pod_selector: e
                .pod_selector
                .clone()
                .map(Selector::try_from)
                .transpose()
                .map_err(|e| e.0)?,
            service_accounts: e.service_accounts.as_ref().map(|list| {
                list.iter()
                    .map(|sa| match sa.split_once('/') {
                        Some((ns, name)) => (Some(ns.to_string()), name.to_string()),
                        None => (None, sa.clone()),
                    })
                    .collect()
            }),
            images: e
                .images
                .as_ref()
                .map(|list| list.iter().map(|i| ImagePattern::new(i)).collect())
                .transpose()?,
            executables,
        })
    }

    /// Every field given must match; fields left out match anything.
    fn exempts(&self, s: &Subject) -> bool {
        let ns_ok = self
            .namespaces
            .as_ref()
            .is_none_or(|list| list.iter().any(|n| n == s.namespace));
        let labels_ok = self
            .pod_selector
            .as_ref()
            .is_none_or(|sel| sel.matches(s.pod_labels));
        let sa_ok = self.service_accounts.as_ref().is_none_or(|list| {
            list.iter().any(|(ns, name)| {
                name == s.service_account && ns.as_deref().is_none_or(|ns| ns == s.namespace)
            })
        });
        let image_ok = self.images.as_ref().is_none_or(|patterns| {
            s.image
                .is_some_and(|img| patterns.iter().any(|p| p.matches(img)))
        });
        let exe_ok = self
            .executables
            .as_ref()
            .is_none_or(|set| s.executable.is_some_and(|x| set.is_match(x)));
        ns_ok && labels_ok && sa_ok && image_ok && exe_ok
    }
}

/// One policy, ready to evaluate.
#[derive(Debug)]
pub struct CompiledPolicy {
    pub name: String,
    pub mode: Mode,
    pub severity: u8,
    connect: bool,
    open: bool,
    namespace_selector: Option<Selector>,
    pod_selector: Option<Selector>,
    exemptions: Vec<CompiledExemption>,
}

impl CompiledPolicy {
    /// Validates and compiles; every problem is returned, and nothing is compiled from a
    /// policy that has any.
    pub fn compile(policy: &DockerSocketPolicy) -> Result<Self, Vec<String>> {
        let problems = validate(&policy.spec);
        if !problems.is_empty() {
            return Err(problems);
        }
        let spec = &policy.spec;
        let ops = spec.operations.clone().unwrap_or_default();
        let selector =
            |s: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>| {
                s.cloned()
                    .map(Selector::try_from)
                    .transpose()
                    .map_err(|e| vec![e.0])
            };
        let sel = spec.selector.as_ref();
        Ok(Self {
            name: policy.name_any(),
            mode: spec.mode,
            severity: spec.severity.unwrap_or(DEFAULT_SEVERITY),
            connect: ops.connect,
            open: ops.open,
            namespace_selector: selector(sel.and_then(|s| s.namespace_selector.as_ref()))?,
            pod_selector: selector(sel.and_then(|s| s.pod_selector.as_ref()))?,
            exemptions: spec
                .exemptions
                .iter()
                .map(CompiledExemption::new)
                .collect::<Result<_, _>>()
                .map_err(|e| vec![e])?,
        })
    }

    /// Whether the policy covers this pod (its namespace and labels).
    pub fn selects(&self, s: &Subject) -> bool {
        self.namespace_selector
            .as_ref()
            .is_none_or(|sel| sel.matches(s.namespace_labels))
            && self
                .pod_selector
                .as_ref()
                .is_none_or(|sel| sel.matches(s.pod_labels))
    }

    fn counts(&self, op: FindingOperation) -> bool {
        match op {
            FindingOperation::Connect => self.connect,
            FindingOperation::Open => self.open,
        }
    }
}

/// The verdict for `subject` doing `op` under `policies` (sorted by name, as [`PolicySet`]
/// keeps them): the strictest mode among the policies that select it and do not exempt it
/// (the first by name among equals); else exempt if one exempted it; else out of scope.
pub fn evaluate(
    policies: &[Arc<CompiledPolicy>],
    subject: &Subject,
    op: FindingOperation,
) -> Verdict {
    if policies.is_empty() {
        return Verdict::Report {
            policy: DEFAULT_POLICY.into(),
            mode: Mode::Audit,
            severity: DEFAULT_SEVERITY,
        };
    }
    let mut exempted_by = None;
    let mut best: Option<&CompiledPolicy> = None;
    for p in policies {
        if !p.selects(subject) || !p.counts(op) {
            continue;
        }
        if p.exemptions.iter().any(|e| e.exempts(subject)) {
            exempted_by.get_or_insert_with(|| p.name.clone());
            continue;
        }
        if best.is_none_or(|b| p.mode > b.mode) {
            best = Some(p);
        }
    }
    match (best, exempted_by) {
        (Some(p), _) => Verdict::Report {
            policy: p.name.clone(),
            mode: p.mode,
            severity: p.severity,
        },
        (None, Some(policy)) => Verdict::Exempt { policy },
        (None, None) => Verdict::OutOfScope,
    }
}

/// Whether the operator reports the policy's current generation `Accepted=True`.
pub fn accepted(policy: &DockerSocketPolicy) -> bool {
    let generation = policy.metadata.generation;
    policy.status.as_ref().is_some_and(|status| {
        status.conditions.iter().any(|c| {
            c.type_ == ACCEPTED
                && c.status == "True"
                && c.observed_generation.or(status.observed_generation) == generation
        })
    })
}

/// Why a policy present in the cluster is not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    /// The operator has not accepted this generation (yet, or it refused it).
    NotAccepted,
    /// It does not compile here.
    Invalid(Vec<String>),
}

/// A policy object's compiled form, with the uid and generation it was compiled from.
#[derive(Debug)]
struct Entry {
    uid: Option<String>,
    generation: Option<i64>,
    result: Result<Arc<CompiledPolicy>, Vec<String>>,
}

/// The compiled policies to apply, refreshed from the cluster's objects; a policy is compiled
/// again only when its uid or generation changes.
#[derive(Debug, Default)]
pub struct PolicySet {
    compiled: HashMap<String, Entry>,
    applied: Vec<Arc<CompiledPolicy>>,
    skipped: BTreeMap<String, Skipped>,
}

impl PolicySet {
    /// Brings the set up to date with `objects`; returns the policies newly skipped (or
    /// skipped for a new reason), for the caller to log once.
    pub fn refresh(&mut self, objects: &[Arc<DockerSocketPolicy>]) -> Vec<(String, Skipped)> {
        let mut compiled = HashMap::with_capacity(objects.len());
        let mut applied = Vec::new();
        let mut skipped = BTreeMap::new();
        for obj in objects {
            let name = obj.name_any();
            let (uid, generation) = (obj.uid(), obj.metadata.generation);
            let result = match self.compiled.remove(&name) {
                Some(e) if e.uid == uid && e.generation == generation => e.result,
                _ => CompiledPolicy::compile(obj).map(Arc::new),
            };
            match (&result, accepted(obj)) {
                (Err(problems), _) => {
                    skipped.insert(name.clone(), Skipped::Invalid(problems.clone()));
                }
                (Ok(_), false) => {
                    skipped.insert(name.clone(), Skipped::NotAccepted);
                }
                (Ok(p), true) => applied.push(p.clone()),
            }
            compiled.insert(
                name,
                Entry {
                    uid,
                    generation,
                    result,
                },
            );
        }
        applied.sort_by(|a, b| a.name.cmp(&b.name));
        let news = skipped
            .iter()
            .filter(|(name, why)| self.skipped.get(*name) != Some(why))
            .map(|(n, w)| (n.clone(), w.clone()))
            .collect();
        self.compiled = compiled;
        self.applied = applied;
        self.skipped = skipped;
        news
    }

    /// The policies applied, sorted by name.
    pub fn applied(&self) -> &[Arc<CompiledPolicy>] {
        &self.applied
    }

    /// How many policies present are not applied.
    pub fn skipped(&self) -> usize {
        self.skipped.len()
    }

    /// Whether any applied policy selects `subject` (with no policy, the default does).
    pub fn in_scope(&self, subject: &Subject) -> bool {
        self.applied.is_empty() || self.applied.iter().any(|p| p.selects(subject))
    }
}

/// Policies as the operator leaves them, for tests in every crate.
pub mod testing {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    use crate::{DockerSocketPolicy, DockerSocketPolicyStatus};

    /// A policy at generation 1 that the operator accepted (`accepted = true`) or refused.
    pub fn policy(name: &str, spec: serde_json::Value, accepted: bool) -> DockerSocketPolicy {
        let mut p = DockerSocketPolicy::new(name, serde_json::from_value(spec).unwrap());
        p.metadata.generation = Some(1);
        p.metadata.uid = Some(format!("uid-{name}"));
        p.status = Some(DockerSocketPolicyStatus {
            observed_generation: Some(1),
            conditions: vec![Condition {
                type_: crate::condition::ACCEPTED.into(),
                status: if accepted { "True" } else { "False" }.into(),
                reason: if accepted { "Valid" } else { "InvalidSpec" }.into(),
                message: String::new(),
                observed_generation: Some(1),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            }],
            ..Default::default()
        });
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compiled(name: &str, spec: serde_json::Value) -> Arc<CompiledPolicy> {
        Arc::new(CompiledPolicy::compile(&testing::policy(name, spec, true)).unwrap())
    }

    struct Pod {
        namespace: &'static str,
        labels: BTreeMap<String, String>,
        ns_labels: BTreeMap<String, String>,
        sa: &'static str,
        image: &'static str,
    }

    fn agent() -> Pod {
        Pod {
            namespace: "monitoring",
            labels: [("app".to_string(), "datadog".to_string())].into(),
            ns_labels: [("team".to_string(), "obs".to_string())].into(),
            sa: "datadog",
            image: "docker.io/datadog/agent:7.50.1",
        }
    }

    impl Pod {
        fn subject<'a>(&'a self, exe: Option<&'a str>) -> Subject<'a> {
            Subject {
                namespace: self.namespace,
                namespace_labels: &self.ns_labels,
                pod_labels: &self.labels,
                service_account: self.sa,
                image: Some(self.image),
                executable: exe,
            }
        }
    }

    fn exempted(exemption: serde_json::Value, pod: &Pod, exe: Option<&str>) -> bool {
        let p = compiled("p", json!({"exemptions": [exemption]}));
        matches!(
            evaluate(&[p], &pod.subject(exe), FindingOperation::Connect),
            Verdict::Exempt { .. }
        )
    }

    #[test]
    fn exemption_fields_narrow_an_anchor_and_patterns_stay_in_their_lane() {
        let p = agent();
        let cases = [
            (json!({"namespaces": ["monitoring"]}), None, true),
            (json!({"namespaces": ["kube-system"]}), None, false),
            (
                json!({"serviceAccounts": ["monitoring/datadog"]}),
                None,
                true,
            ),
            (
                json!({"serviceAccounts": ["other-ns/datadog"]}),
                None,
                false,
            ),
            (
                json!({"namespaces": ["monitoring"], "serviceAccounts": ["datadog"]}),
                None,
                true,
            ),
            (
                json!({"namespaces": ["monitoring"], "serviceAccounts": ["other"]}),
                None,
                false,
            ),
            (
                json!({"namespaces": ["monitoring"], "podSelector": {"matchLabels": {"app": "datadog"}}}),
                None,
                true,
            ),
            (
                json!({"namespaces": ["monitoring"], "podSelector": {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["datadog"]}]}}),
                None,
                false,
            ),
            (
                json!({"serviceAccounts": ["monitoring/datadog"], "images": ["datadog/agent"]}),
                None,
                true,
            ),
            (
                json!({"serviceAccounts": ["monitoring/datadog"], "images": ["datadog/agent:7.*"]}),
                None,
                true,
            ),
            (
                json!({"serviceAccounts": ["monitoring/datadog"], "images": ["datadog/agent:6.*"]}),
                None,
                false,
            ),
            (
                json!({"serviceAccounts": ["monitoring/datadog"], "images": ["gcr.io/datadoghq/agent"]}),
                None,
                false,
            ),
            (
                json!({"namespaces": ["monitoring"], "executables": ["/usr/bin/*"]}),
                Some("/usr/bin/agent"),
                true,
            ),
            (
                json!({"namespaces": ["monitoring"], "executables": ["/usr/bin/*"]}),
                Some("/usr/bin/sub/agent"),
                false,
            ),
            (
                json!({"namespaces": ["monitoring"], "executables": ["/usr/bin/**"]}),
                Some("/usr/bin/sub/agent"),
                true,
            ),
            (
                json!({"namespaces": ["monitoring"], "executables": ["/usr/bin/agent"]}),
                None,
                false,
            ),
        ];
        for (e, exe, want) in cases {
            assert_eq!(exempted(e.clone(), &p, exe), want, "{e} exe={exe:?}");
        }
    }

    #[test]
    fn exemptions_a_pod_could_satisfy_by_itself_do_not_compile() {
        for e in [
            json!({"images": ["datadog/agent"]}),
            json!({"executables": ["/usr/bin/dockerd-rootless*"]}),
            json!({"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "sockwarden"}}}),
            json!({"serviceAccounts": ["datadog"]}),
            json!({"namespaces": ["monitoring"], "images": ["*datadog/agent:*"]}),
        ] {
            let p = testing::policy("p", json!({"exemptions": [e.clone()]}), true);
            assert!(CompiledPolicy::compile(&p).is_err(), "{e}");
        }
    }

    #[test]
    fn no_policy_reports_under_the_builtin_default_and_labels_exempt_nobody() {
        let mut p = agent();
        p.labels
            .insert("app.kubernetes.io/part-of".into(), "sockwarden".into());
        assert_eq!(
            evaluate(&[], &p.subject(None), FindingOperation::Connect),
            Verdict::Report {
                policy: DEFAULT_POLICY.into(),
                mode: Mode::Audit,
                severity: DEFAULT_SEVERITY
            }
        );
    }

    #[test]
    fn strictest_mode_wins_exemptions_operations_and_scope() {
        let audit = compiled("a-audit", json!({}));
        let enforce = compiled(
            "z-enforce",
            json!({"mode": "Enforce", "severity": 3, "selector": {"namespaceSelector": {"matchLabels": {"team": "obs"}}}}),
        );
        let p = agent();
        let s = p.subject(None);
        let both = [audit.clone(), enforce.clone()];
        assert_eq!(
            evaluate(&both, &s, FindingOperation::Connect),
            Verdict::Report {
                policy: "z-enforce".into(),
                mode: Mode::Enforce,
                severity: 3
            }
        );
        let mut web = agent();
        web.ns_labels = [("team".to_string(), "web".to_string())].into();
        assert_eq!(
            evaluate(&both, &web.subject(None), FindingOperation::Connect),
            Verdict::Report {
                policy: "a-audit".into(),
                mode: Mode::Audit,
                severity: 2
            }
        );
        let exempting = compiled(
            "agents",
            json!({"exemptions": [{"serviceAccounts": ["monitoring/datadog"], "images": ["datadog/agent"]}]}),
        );
        assert_eq!(
            evaluate(
                std::slice::from_ref(&exempting),
                &s,
                FindingOperation::Connect
            ),
            Verdict::Exempt {
                policy: "agents".into()
            }
        );
        // another policy that does not exempt it still reports
        assert!(matches!(
            evaluate(&[exempting, enforce], &s, FindingOperation::Connect),
            Verdict::Report { ref policy, mode: Mode::Enforce, .. } if policy == "z-enforce"
        ));
        let connect_only = compiled("c", json!({"operations": {"connect": true, "open": false}}));
        assert_eq!(
            evaluate(&[connect_only], &s, FindingOperation::Open),
            Verdict::OutOfScope
        );
        let elsewhere = compiled(
            "web-only",
            json!({"selector": {"podSelector": {"matchLabels": {"app": "web"}}}}),
        );
        assert_eq!(
            evaluate(&[elsewhere], &s, FindingOperation::Connect),
            Verdict::OutOfScope
        );
    }

    #[test]
    fn policy_set_applies_only_accepted_valid_current_generations_and_recompiles_on_change() {
        let good = Arc::new(testing::policy("good", json!({}), true));
        let refused = Arc::new(testing::policy(
            "refused",
            json!({"selector": {"podSelector": {"matchLabels": {"app": "none"}}}}),
            false,
        ));
        // Accepted by a compromised writer of status, but invalid: still not applied.
        let forged = Arc::new(testing::policy(
            "forged",
            json!({"exemptions": [{"podSelector": {"matchLabels": {"x": "y"}}}]}),
            true,
        ));
        let mut stale = testing::policy("stale", json!({"mode": "Enforce"}), true);
        stale.metadata.generation = Some(2); // accepted generation 1, not this one
        let stale = Arc::new(stale);
        let mut set = PolicySet::default();
        let news = set.refresh(&[good.clone(), refused.clone(), forged.clone(), stale.clone()]);
        let names: Vec<&str> = set.applied().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["good"]);
        assert_eq!(set.skipped(), 3);
        assert_eq!(news.len(), 3);
        assert!(news.iter().any(|(n, w)| n == "forged"
            && matches!(w, Skipped::Invalid(p) if p[0].contains("namespaces or serviceAccounts"))));
        assert!(news
            .iter()
            .any(|(n, w)| n == "stale" && *w == Skipped::NotAccepted));
        // Nothing changed: nothing new to log, the same compiled object.
        let before = set.applied()[0].clone();
        assert!(set
            .refresh(&[good.clone(), refused, forged, stale])
            .is_empty());
        assert!(Arc::ptr_eq(&before, &set.applied()[0]));
        // A new generation is compiled again; a policy gone is gone.
        let mut next = (*good).clone();
        next.metadata.generation = Some(2);
        next.status.as_mut().unwrap().observed_generation = Some(2);
        next.status.as_mut().unwrap().conditions[0].observed_generation = Some(2);
        set.refresh(&[Arc::new(next)]);
        assert!(!Arc::ptr_eq(&before, &set.applied()[0]));
        assert_eq!(set.skipped(), 0);
    }

    #[test]
    fn scope_is_visible() {
        let web_only = Arc::new(testing::policy(
            "web-only",
            json!({"selector": {"podSelector": {"matchLabels": {"app": "web"}}}}),
            true,
        ));
        let mut set = PolicySet::default();
        let p = agent();
        assert!(
            set.in_scope(&p.subject(None)),
            "no policy: the default covers all"
        );
        set.refresh(&[web_only]);
        assert!(!set.in_scope(&p.subject(None)));
    }
}
