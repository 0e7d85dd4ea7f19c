//! The chart's findings ValidatingAdmissionPolicy, evaluated against allowed and forged
//! requests: the chart is rendered with helm as a 1.30+ API server would get it, and every
//! matchCondition, variable and validation is run by a CEL interpreter with `request`,
//! `object`, `oldObject` and `variables` bound the way the API server binds them. No API
//! server of 1.30 or later runs here (the test bed is 1.20, without ValidatingAdmissionPolicy),
//! so this is the offline stand-in. It evaluates, it does not type-check: the `cel` crate has
//! no declared types for `request` or the CRD, and timestamps stay strings here.
use std::{path::Path, process::Command, sync::Arc};

use serde::Deserialize;
use serde_json::{json, Value};

const NAMESPACE: &str = "sockwarden-system";
const PROBE: &str = "system:serviceaccount:sockwarden-system:sockwarden-probe";
const NODE_NAME_KEY: &str = "authentication.kubernetes.io/node-name";

fn helm() -> String {
    if let Ok(h) = std::env::var("SW_HELM") {
        return h;
    }
    let tools = "/opt/sockwarden-tools/bin/helm";
    if Command::new("helm").arg("version").output().is_ok() {
        "helm".into()
    } else if Path::new(tools).exists() {
        tools.into()
    } else {
        panic!("helm is needed to render the chart: run scripts/setup.sh or set SW_HELM")
    }
}

/// The policy `name` as `helm template` renders it where the API server serves it.
fn rendered_policy(name: &str) -> Value {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/sockwarden");
    let out = Command::new(helm())
        .args(["template", "sockwarden"])
        .arg(&chart)
        .args([
            "-n",
            NAMESPACE,
            "--show-only",
            "templates/admissionpolicy.yaml",
        ])
        .args([
            "--api-versions",
            "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy",
        ])
        .output()
        .expect("run helm");
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde_yaml_ng::from_value(serde_yaml_ng::Value::deserialize(d).unwrap()).unwrap())
        .collect();
    docs.into_iter()
        .find(|d| d["kind"] == "ValidatingAdmissionPolicy" && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("the chart renders the ValidatingAdmissionPolicy {name}"))
}

#[derive(Debug, PartialEq)]
enum Verdict {
    /// The policy does not apply to this request (another user).
    NotMatched,
    Allowed,
    /// The messages of the validations that failed.
    Refused(Vec<String>),
}

struct Policy {
    env: Arc<cel::Env>,
    spec: Value,
}

impl Policy {
    fn load() -> Self {
        Self::named("sockwarden-probe-findings")
    }

    fn named(name: &str) -> Self {
        let mut env = cel::Env::stdlib();
        env.add_extension(cel::extensions::strings).unwrap();
        Self {
            env: Arc::new(env),
            spec: rendered_policy(name)["spec"].clone(),
        }
    }

    fn eval(&self, source: &str, bindings: &[(&str, &cel::Value)]) -> Result<cel::Value, String> {
        let program = self
            .env
            .compile(source)
            .unwrap_or_else(|e| panic!("CEL {source}: {e:?}"));
        let mut ctx = cel::Context::with_env(self.env.clone());
        for (name, value) in bindings {
            ctx.add_variable_from_value(*name, (*value).clone());
        }
        program.execute(&ctx).map_err(|e| format!("{e:?}"))
    }

    /// What the API server decides, as far as this policy goes (failurePolicy Fail: an
    /// evaluation error refuses too).
    fn admit(&self, request: &Value, object: &Value, old: &Value) -> Verdict {
        let request = cel::to_value(request).unwrap();
        let object = cel::to_value(object).unwrap();
        let old = cel::to_value(old).unwrap();
        let base = [
            ("request", &request),
            ("object", &object),
            ("oldObject", &old),
        ];
        for c in self.spec["matchConditions"].as_array().unwrap() {
            match self.eval(c["expression"].as_str().unwrap(), &base) {
                Ok(cel::Value::Bool(true)) => {}
                Ok(cel::Value::Bool(false)) => return Verdict::NotMatched,
                other => return Verdict::Refused(vec![format!("matchCondition: {other:?}")]),
            }
        }
        let mut variables = std::collections::HashMap::<String, cel::Value>::new();
        for v in self.spec["variables"].as_array().unwrap() {
            let vars = cel::Value::from(variables.clone());
            let mut b = base.to_vec();
            b.push(("variables", &vars));
            match self.eval(v["expression"].as_str().unwrap(), &b) {
                Ok(value) => {
                    variables.insert(v["name"].as_str().unwrap().to_string(), value);
                }
                Err(e) => return Verdict::Refused(vec![format!("variable {}: {e}", v["name"])]),
            }
        }
        let vars = cel::Value::from(variables);
        let mut b = base.to_vec();
        b.push(("variables", &vars));
        let mut refused = Vec::new();
        for v in self.spec["validations"].as_array().unwrap() {
            let message = v["message"]
                .as_str()
                .or(v["messageExpression"].as_str())
                .unwrap()
                .to_string();
            match self.eval(v["expression"].as_str().unwrap(), &b) {
                Ok(cel::Value::Bool(true)) => {}
                Ok(cel::Value::Bool(false)) => refused.push(message),
                other => refused.push(format!("{message} (error: {other:?})")),
            }
        }
        if refused.is_empty() {
            Verdict::Allowed
        } else {
            Verdict::Refused(refused)
        }
    }
}

fn request(user: &str, node: Option<&str>, operation: &str, sub: &str) -> Value {
    let mut extra = json!({
        "authentication.kubernetes.io/pod-name": ["sockwarden-probe-x7k2p"],
        "authentication.kubernetes.io/pod-uid": ["5e0bd49b-f040-43b0-99b7-22765a53f7f3"],
        "authentication.kubernetes.io/credential-id": ["JTI=aed34954-b33a-4142-b1ec-389d6bbb4936"],
    });
    if let Some(n) = node {
        extra[NODE_NAME_KEY] = json!([n]);
    }
    json!({
        "uid": "0b4b8a4c-1f2e-4d5c-9a3b-7c6d5e4f3a2b",
        "kind": {"group": "sockwarden.io", "version": "v1alpha1", "kind": "DockerAbuseFinding"},
        "resource": {"group": "sockwarden.io", "version": "v1alpha1", "resource": "dockerabusefindings"},
        "subResource": sub,
        "name": "daf-0123456789abcdef0123456789abcdef",
        "namespace": "shop",
        "operation": operation,
        "userInfo": {
            "username": user,
            "uid": "14ee3fa4-a7e2-420f-9f9a-dbc4507c3798",
            "groups": ["system:serviceaccounts", "system:serviceaccounts:sockwarden-system", "system:authenticated"],
            "extra": extra,
        },
        "dryRun": false,
    })
}

fn probe_create(node: Option<&str>) -> Value {
    request(PROBE, node, "CREATE", "")
}

fn probe_update(node: &str, sub: &str) -> Value {
    request(PROBE, Some(node), "UPDATE", sub)
}

/// A finding as the probe on `node` writes it (labels included), with an optional status.
fn finding(node: &str, label: &str, status: Option<Value>) -> Value {
    let spec = serde_json::to_value(api::DockerAbuseFindingSpec {
        signature: api::SignatureRef::trc_1019(),
        node: node.into(),
        pod: api::PodRef {
            name: "web-5d8f7c9b4-qx2lm".into(),
            uid: "e87dbbd6-3d7e-45db-aafb-72b24627dff5".into(),
        },
        container: api::ContainerRef {
            name: "app".into(),
            id: "c".repeat(64),
            image: Some("registry.example/shop/web:1.4".into()),
        },
        workload: Some(api::WorkloadRef {
            kind: "Deployment".into(),
            name: "web".into(),
        }),
        service_account: Some("web-sa".into()),
        operation: api::FindingOperation::Connect,
        socket: api::SocketUse {
            host_path: "/run/docker.sock".into(),
            runtime: "docker".into(),
        },
        requested_path: Some("/tmp/innocent.sock".into()),
        process: api::ProcessRef {
            exe: Some("/usr/bin/curl".into()),
            comm: "curl".into(),
            cmdline: None,
            uid: 0,
        },
        action: api::FindingAction::Audit,
        policy: "sockwarden-default".into(),
        severity: 2,
    })
    .unwrap();
    let mut f = json!({
        "apiVersion": "sockwarden.io/v1alpha1",
        "kind": "DockerAbuseFinding",
        "metadata": {
            "name": "daf-0123456789abcdef0123456789abcdef",
            "namespace": "shop",
            "uid": "9d2c1b0a-8f7e-4d6c-b5a4-3f2e1d0c9b8a",
            "creationTimestamp": "2025-03-01T10:00:00Z",
            "labels": {"sockwarden.io/policy": "sockwarden-default", "sockwarden.io/node": label},
        },
        "spec": spec,
    });
    if let Some(s) = status {
        f["status"] = s;
    }
    f
}

fn status(count: i64, last: &str) -> Value {
    json!({"count": count, "firstSeen": "2025-03-01T10:00:00Z", "lastSeen": last})
}

fn assert_allowed(p: &Policy, req: &Value, obj: &Value, old: &Value) {
    assert_eq!(p.admit(req, obj, old), Verdict::Allowed);
}

fn assert_refused(p: &Policy, req: &Value, obj: &Value, old: &Value, why: &str) {
    match p.admit(req, obj, old) {
        Verdict::Refused(msgs) => assert!(
            msgs.iter().any(|m| m.contains(why)),
            "refusal should say {why:?}: {msgs:?}"
        ),
        other => panic!("a forged request was {other:?}, want refused because {why:?}"),
    }
}

#[test]
fn a_probe_creates_findings_of_its_own_node_only() {
    let p = Policy::load();
    let own = finding("node-a", "node-a", None);
    assert_allowed(&p, &probe_create(Some("node-a")), &own, &Value::Null);
    // Another node's finding, labelled as that node or as its own: both refused.
    assert_refused(
        &p,
        &probe_create(Some("node-a")),
        &finding("node-b", "node-b", None),
        &Value::Null,
        "may only write findings of its own node",
    );
    assert_refused(
        &p,
        &probe_create(Some("node-a")),
        &finding("node-a", "node-b", None),
        &Value::Null,
        "sockwarden.io/node must name the probe's own node",
    );
    let mut unlabelled = own.clone();
    unlabelled["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("labels");
    assert_refused(
        &p,
        &probe_create(Some("node-a")),
        &unlabelled,
        &Value::Null,
        "sockwarden.io/node",
    );
}

#[test]
fn a_probe_token_without_a_node_name_writes_nothing() {
    let p = Policy::load();
    let own = finding("node-a", "node-a", None);
    assert_refused(&p, &probe_create(None), &own, &Value::Null, "names no node");
    // No extra at all (a legacy secret-based token).
    let mut req = probe_create(None);
    req["userInfo"].as_object_mut().unwrap().remove("extra");
    assert_refused(&p, &req, &own, &Value::Null, "names no node");
}

#[test]
fn other_users_are_not_restricted() {
    let p = Policy::load();
    let forged = finding("node-b", "node-c", None);
    for user in [
        "system:serviceaccount:sockwarden-system:sockwarden-operator",
        "kubernetes-admin",
        // The same name in another namespace is not the release's probe.
        "system:serviceaccount:shop:sockwarden-probe",
    ] {
        assert_eq!(
            p.admit(&request(user, None, "CREATE", ""), &forged, &Value::Null),
            Verdict::NotMatched,
            "{user}"
        );
    }
}

#[test]
fn a_finding_spec_and_labels_never_change() {
    let p = Policy::load();
    let old = finding("node-a", "node-a", Some(status(3, "2025-03-01T10:05:00Z")));
    // The probe re-applies the same spec after a restart: allowed.
    assert_allowed(&p, &probe_update("node-a", ""), &old.clone(), &old);
    for (field, value) in [
        ("/spec/action", json!("Blocked")),
        ("/spec/pod/name", json!("someone-else")),
        ("/spec/severity", json!(0)),
        ("/spec/policy", json!("quiet")),
    ] {
        let mut rewritten = old.clone();
        *rewritten.pointer_mut(field).unwrap() = value;
        assert_refused(
            &p,
            &probe_update("node-a", ""),
            &rewritten,
            &old,
            "spec never changes",
        );
    }
    let mut relabelled = old.clone();
    relabelled["metadata"]["labels"]["sockwarden.io/policy"] = json!("quiet");
    assert_refused(
        &p,
        &probe_update("node-a", ""),
        &relabelled,
        &old,
        "labels never change",
    );
    // Moving a finding to the requesting node is a spec change too.
    let theirs = finding("node-b", "node-b", Some(status(3, "2025-03-01T10:05:00Z")));
    let stolen = finding("node-a", "node-a", Some(status(3, "2025-03-01T10:05:00Z")));
    assert_refused(
        &p,
        &probe_update("node-a", ""),
        &stolen,
        &theirs,
        "spec never changes",
    );
}

#[test]
fn status_counts_only_grow_and_first_seen_stays() {
    let p = Policy::load();
    let old = finding("node-a", "node-a", Some(status(5, "2025-03-01T10:05:00Z")));
    let grown = finding("node-a", "node-a", Some(status(9, "2025-03-01T11:00:00Z")));
    assert_allowed(&p, &probe_update("node-a", "status"), &grown, &old);
    // The first status write after the create.
    let created = finding("node-a", "node-a", None);
    assert_allowed(&p, &probe_update("node-a", "status"), &grown, &created);
    let shrunk = finding("node-a", "node-a", Some(status(1, "2025-03-01T11:00:00Z")));
    assert_refused(
        &p,
        &probe_update("node-a", "status"),
        &shrunk,
        &old,
        "count never decreases",
    );
    let mut moved = grown.clone();
    moved["status"]["firstSeen"] = json!("2025-03-01T10:59:00Z");
    assert_refused(
        &p,
        &probe_update("node-a", "status"),
        &moved,
        &old,
        "firstSeen never changes",
    );
    let mut dropped = grown.clone();
    dropped["status"]
        .as_object_mut()
        .unwrap()
        .remove("firstSeen");
    assert_refused(
        &p,
        &probe_update("node-a", "status"),
        &dropped,
        &old,
        "firstSeen never changes",
    );
    // Another node's finding: its count cannot be bumped either.
    let theirs_old = finding("node-b", "node-b", Some(status(5, "2025-03-01T10:05:00Z")));
    let theirs_new = finding("node-b", "node-b", Some(status(6, "2025-03-01T11:00:00Z")));
    assert_refused(
        &p,
        &probe_update("node-a", "status"),
        &theirs_new,
        &theirs_old,
        "may only write findings of its own node",
    );
}

#[test]
fn long_node_names_are_labelled_by_their_prefix_and_a_hash() {
    let p = Policy::load();
    // 70 characters; the first 52 end in a letter.
    let node = format!("{}.compute.internal", "ip-10-0-0-1-".repeat(4) + "abcdefg");
    assert!(node.len() > 63);
    let prefix = &node[..52];
    assert!(prefix.ends_with(|c: char| c.is_ascii_alphanumeric()));
    let label = format!("{prefix}-0123456789");
    assert_allowed(
        &p,
        &probe_create(Some(&node)),
        &finding(&node, &label, None),
        &Value::Null,
    );
    // The full name does not fit a label; a label naming another node's prefix is refused.
    for bad in [
        node.clone(),
        format!("{}-0123456789", &prefix[..51]),
        format!("x{}-0123456789", &prefix[1..]),
        format!("{prefix}-012345678z"),
        format!("{prefix}0123456789"),
    ] {
        assert_refused(
            &p,
            &probe_create(Some(&node)),
            &finding(&node, &bad, None),
            &Value::Null,
            "sockwarden.io/node",
        );
    }
    // A 52-character cut ending in '-' or '.' is trimmed back to the last letter or digit.
    let dotted = format!("{}.{}", "a".repeat(51), "b".repeat(20));
    let trimmed = format!("{}-abcdef0123", "a".repeat(51));
    assert_allowed(
        &p,
        &probe_create(Some(&dotted)),
        &finding(&dotted, &trimmed, None),
        &Value::Null,
    );
    assert_refused(
        &p,
        &probe_create(Some(&dotted)),
        &finding(&dotted, &format!("{}.-abcdef0123", "a".repeat(51)), None),
        &Value::Null,
        "sockwarden.io/node",
    );
}

fn report(name: &str, node: &str) -> Value {
    json!({
        "apiVersion": "sockwarden.io/v1alpha1", "kind": "DockerSocketProbe",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"node": node, "backend": "lsm", "enforcing": true, "blocksWith": "EPERM", "pinned": true,
                 "policies": [{"name": "enforce-payments", "generation": 2}]},
    })
}

#[test]
fn a_probe_writes_only_its_own_nodes_report() {
    let p = Policy::named("sockwarden-probe-reports");
    let mine = report("node-a", "node-a");
    for op in ["CREATE", "UPDATE"] {
        let req = request(PROBE, Some("node-a"), op, "");
        assert_allowed(&p, &req, &mine, &Value::Null);
        // Another node's report, by its name or by what it says, or without a node at all.
        for forged in [
            report("node-b", "node-b"),
            report("node-a", "node-b"),
            report("node-b", "node-a"),
        ] {
            assert_refused(
                &p,
                &req,
                &forged,
                &Value::Null,
                "may only write the report of its own node",
            );
        }
        assert_refused(
            &p,
            &request(PROBE, None, op, ""),
            &mine,
            &Value::Null,
            "names no node",
        );
    }
    // The operator and administrators are not restricted.
    assert_eq!(
        p.admit(
            &request(
                "system:serviceaccount:sockwarden-system:sockwarden-operator",
                None,
                "UPDATE",
                ""
            ),
            &report("node-b", "node-b"),
            &Value::Null
        ),
        Verdict::NotMatched
    );
}
