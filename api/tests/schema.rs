//! Every schema rule of the CRDs, checked with good and bad objects: the structural rules
//! (types, enums, patterns, ranges, required) with a JSON Schema validator over the generated
//! openAPIV3Schema, and the `x-kubernetes-validations` CEL rules with a CEL interpreter — what
//! the API server would refuse. (No API server can run here; this is the offline stand-in.)
use api::{DockerAbuseFinding, DockerSocketPolicy};
use kube::CustomResourceExt;
use serde_json::{json, Value};

fn schema<K: CustomResourceExt>() -> Value {
    let crd = serde_json::to_value(K::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// JSON Schema draft 4 does not know `nullable`: turn `nullable: true` into a null type.
fn json_schema(mut s: Value) -> Value {
    fn fix(v: &mut Value) {
        if let Value::Object(map) = v {
            if map.get("nullable") == Some(&Value::Bool(true)) {
                if let Some(Value::String(t)) = map.get("type").cloned() {
                    map.insert("type".into(), json!([t, "null"]));
                }
            }
            for child in map.values_mut() {
                fix(child);
            }
        } else if let Value::Array(items) = v {
            items.iter_mut().for_each(fix);
        }
    }
    fix(&mut s);
    s
}

fn cel_errors(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    if value.is_null() {
        return;
    }
    if let Some(rules) = schema["x-kubernetes-validations"].as_array() {
        for rule in rules {
            let source = rule["rule"].as_str().unwrap();
            let program =
                cel::Program::compile(source).unwrap_or_else(|e| panic!("CEL {source}: {e:?}"));
            let mut ctx = cel::Context::default();
            ctx.add_variable_from_value("self", cel::to_value(value).unwrap());
            match program.execute(&ctx) {
                Ok(cel::Value::Bool(true)) => {}
                other => errors.push(format!(
                    "{path}: {} ({other:?})",
                    rule["message"].as_str().unwrap_or(source)
                )),
            }
        }
    }
    if let (Some(props), Some(obj)) = (schema["properties"].as_object(), value.as_object()) {
        for (key, sub) in props {
            if let Some(v) = obj.get(key) {
                cel_errors(sub, v, &format!("{path}.{key}"), errors);
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            cel_errors(items, v, &format!("{path}[{i}]"), errors);
        }
    }
}

fn check<K: CustomResourceExt>(obj: Value) -> Result<(), Vec<String>> {
    let s = schema::<K>();
    let validator = jsonschema::validator_for(&json_schema(s.clone())).unwrap();
    let mut errors: Vec<String> = validator
        .iter_errors(&obj)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    cel_errors(&s, &obj, "", &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn policy(spec: Value) -> Value {
    json!({"apiVersion": "sockwarden.io/v1alpha1", "kind": "DockerSocketPolicy", "metadata": {"name": "p"}, "spec": spec})
}

fn assert_policy_ok(spec: Value) {
    if let Err(e) = check::<DockerSocketPolicy>(policy(spec.clone())) {
        panic!("refused a good policy {spec}: {e:?}");
    }
}

fn assert_policy_refused(spec: Value, why: &str) {
    match check::<DockerSocketPolicy>(policy(spec.clone())) {
        Ok(()) => panic!("accepted a bad policy {spec}"),
        Err(e) => assert!(
            e.iter().any(|m| m.contains(why)),
            "refusal of {spec} should mention {why:?}: {e:?}"
        ),
    }
}

#[test]
fn policy_mode_is_an_enum() {
    assert_policy_ok(json!({}));
    assert_policy_ok(json!({"mode": "Audit"}));
    assert_policy_ok(json!({"mode": "Enforce"}));
    assert_policy_refused(json!({"mode": "Block"}), "/spec/mode");
    assert_policy_refused(json!({"mode": "audit"}), "/spec/mode");
}

#[test]
fn policy_sockets_need_absolute_paths_and_known_runtimes() {
    assert_policy_ok(
        json!({"sockets": [{"path": "/run/user/1000/docker.sock", "runtime": "docker"}]}),
    );
    assert_policy_ok(json!({"sockets": [{"path": "/run/crio/crio.sock", "runtime": "cri-o"}]}));
    for bad in [
        "docker.sock".to_string(),
        "/run/a=b.sock".into(),
        "/run//docker.sock".into(),
        "/run/".into(),
        format!("/{}", "s".repeat(107)),
    ] {
        assert_policy_refused(
            json!({"sockets": [{"path": bad, "runtime": "docker"}]}),
            "/spec/sockets/0/path",
        );
    }
    assert_policy_refused(
        json!({"sockets": [{"path": "/x.sock", "runtime": "lxc"}]}),
        "/spec/sockets/0/runtime",
    );
    assert_policy_refused(json!({"sockets": [{"runtime": "docker"}]}), "path");
}

#[test]
fn policy_operations_need_at_least_one() {
    assert_policy_ok(json!({"operations": {"connect": true, "open": false}}));
    assert_policy_ok(
        json!({"operations": {"open": true, "openRequiresWrite": false, "connect": false}}),
    );
    assert_policy_refused(
        json!({"operations": {"connect": false, "open": false}}),
        "at least one of connect and open must be true",
    );
    assert_policy_refused(
        json!({"operations": {"connect": "yes", "open": true}}),
        "/spec/operations/connect",
    );
}

#[test]
fn policy_exemptions_must_say_what_they_exempt() {
    assert_policy_ok(json!({"exemptions": [{"namespaces": ["monitoring"]}]}));
    assert_policy_ok(
        json!({"exemptions": [{"serviceAccounts": ["monitoring/agent"], "images": ["datadog/agent:*"], "executables": ["/usr/bin/cadvisor"]}]}),
    );
    assert_policy_ok(
        json!({"exemptions": [{"serviceAccounts": ["ci/runner"]}, {"namespaces": ["obs"], "serviceAccounts": ["agent"], "podSelector": {"matchLabels": {"app": "agent"}}}]}),
    );
    assert_policy_refused(
        json!({"exemptions": [{}]}),
        "an exemption must set namespaces or serviceAccounts",
    );
    // What a pod's author chooses alone exempts nobody.
    for alone in [
        json!({"images": ["datadog/agent"]}),
        json!({"executables": ["/usr/bin/dockerd-rootless.sh"]}),
        json!({"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "sockwarden"}}}),
    ] {
        assert_policy_refused(
            json!({"exemptions": [alone]}),
            "an exemption must set namespaces or serviceAccounts",
        );
    }
    assert_policy_refused(
        json!({"exemptions": [{"serviceAccounts": ["datadog"]}]}),
        "must be written NAMESPACE/NAME",
    );
    assert_policy_refused(
        json!({"exemptions": [{"namespaces": []}]}),
        "/spec/exemptions/0/namespaces",
    );
}

#[test]
fn policy_severity_and_retention_ranges() {
    assert_policy_ok(json!({"severity": 0}));
    assert_policy_ok(json!({"severity": 3, "findings": {"ttl": "1h30m", "maxPerNamespace": 50}}));
    assert_policy_refused(json!({"severity": 4}), "/spec/severity");
    assert_policy_refused(json!({"severity": -1}), "/spec/severity");
    assert_policy_refused(json!({"findings": {"ttl": "-1h"}}), "/spec/findings/ttl");
    assert_policy_refused(json!({"findings": {"ttl": "7 days"}}), "/spec/findings/ttl");
    // Digit count and number of parts are bounded (the 3650d total is the operator's check).
    assert_policy_ok(json!({"findings": {"ttl": "1d2h3m4s"}}));
    assert_policy_refused(
        json!({"findings": {"ttl": "1d2h3m4s5s"}}),
        "/spec/findings/ttl",
    );
    assert_policy_refused(
        json!({"findings": {"ttl": "9999999999h"}}),
        "/spec/findings/ttl",
    );
    assert_policy_refused(
        json!({"findings": {"ttl": "7d", "maxPerNamespace": 0}}),
        "/spec/findings/maxPerNamespace",
    );
}

#[test]
fn policy_selectors_are_standard_label_selectors() {
    assert_policy_ok(json!({"selector": {
        "namespaceSelector": {"matchLabels": {"team": "a"}},
        "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["x"]}]}
    }}));
    assert_policy_refused(
        json!({"selector": {"podSelector": {"matchLabels": {"app": 1}}}}),
        "/spec/selector/podSelector/matchLabels/app",
    );
    assert_policy_refused(
        json!({"selector": {"podSelector": {"matchExpressions": [{"operator": "In"}]}}}),
        "key",
    );
}

fn finding(spec: Value) -> Value {
    json!({"apiVersion": "sockwarden.io/v1alpha1", "kind": "DockerAbuseFinding", "metadata": {"name": "f", "namespace": "ns"}, "spec": spec})
}

fn good_finding_spec() -> Value {
    serde_json::to_value(api::DockerAbuseFindingSpec {
        signature: api::SignatureRef::trc_1019(),
        node: "n1".into(),
        pod: api::PodRef {
            name: "web-1".into(),
            uid: "u".into(),
        },
        container: api::ContainerRef {
            name: "app".into(),
            id: "c".repeat(64),
            image: Some("nginx:1".into()),
        },
        workload: Some(api::WorkloadRef {
            kind: "Deployment".into(),
            name: "web".into(),
        }),
        service_account: Some("default".into()),
        operation: api::FindingOperation::Connect,
        socket: api::SocketUse {
            host_path: "/run/docker.sock".into(),
            runtime: "docker".into(),
        },
        requested_path: Some("/var/run/docker.sock".into()),
        process: api::ProcessRef {
            exe: Some("/usr/bin/curl".into()),
            comm: "curl".into(),
            cmdline: None,
            uid: 0,
        },
        action: api::FindingAction::Audit,
        policy: "default".into(),
        severity: 2,
    })
    .unwrap()
}

#[test]
fn finding_schema_requires_its_fields_and_enums() {
    assert!(check::<DockerAbuseFinding>(finding(good_finding_spec())).is_ok());
    for (field, bad, why) in [
        ("operation", json!("exec"), "/spec/operation"),
        ("action", json!("audit"), "/spec/action"),
        ("severity", json!(9), "/spec/severity"),
    ] {
        let mut spec = good_finding_spec();
        spec[field] = bad;
        let err = check::<DockerAbuseFinding>(finding(spec)).unwrap_err();
        assert!(err.iter().any(|e| e.contains(why)), "{field}: {err:?}");
    }
    let mut spec = good_finding_spec();
    spec.as_object_mut().unwrap().remove("pod");
    assert!(
        check::<DockerAbuseFinding>(finding(spec)).is_err(),
        "pod is required"
    );
}

#[test]
fn committed_crds_match_the_types() {
    use api::crds::{yaml, Shape};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (dir, shape) in [
        ("crds", Shape::Full),
        ("charts/sockwarden/crds", Shape::Base),
    ] {
        for (file, doc) in yaml(shape) {
            let committed = std::fs::read_to_string(root.join(dir).join(file)).unwrap_or_default();
            assert!(
                committed == doc,
                "{dir}/{file} is stale: run `cargo run -p api --bin crdgen` and commit the result"
            );
        }
    }
}

#[test]
fn finding_printer_columns_are_what_kubectl_get_daf_shows() {
    let crd = serde_json::to_value(DockerAbuseFinding::crd()).unwrap();
    let names: Vec<&str> = crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["priority"].as_i64().unwrap_or(0) == 0)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "POD",
            "CONTAINER",
            "SOCKET",
            "OPERATION",
            "ACTION",
            "COUNT",
            "LAST SEEN",
            "AGE"
        ]
    );
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "daf");
    let dsp = serde_json::to_value(DockerSocketPolicy::crd()).unwrap();
    assert_eq!(dsp["spec"]["scope"], "Cluster");
    assert_eq!(dsp["spec"]["names"]["shortNames"][0], "dsp");
}

/// Every property of both CRDs' schemas, with its path, that `kubectl explain` would show
/// without a description.
fn undescribed(schema: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(props) = schema["properties"].as_object() {
        for (key, sub) in props {
            let here = format!("{path}.{key}");
            if sub["description"]
                .as_str()
                .is_none_or(|d| d.trim().is_empty())
            {
                out.push(here.clone());
            }
            undescribed(sub, &here, out);
        }
    }
    if let Some(items) = schema.get("items") {
        undescribed(items, &format!("{path}[]"), out);
    }
    if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        undescribed(values, &format!("{path}{{}}"), out);
    }
}

#[test]
fn every_schema_property_has_a_description_for_kubectl_explain() {
    for (kind, s) in [
        ("DockerSocketPolicy", schema::<DockerSocketPolicy>()),
        ("DockerAbuseFinding", schema::<DockerAbuseFinding>()),
    ] {
        let top = s["description"].as_str().unwrap_or_default();
        assert!(
            !top.is_empty() && !top.contains("Auto-generated"),
            "{kind}: the kind itself needs a description: {top:?}"
        );
        let mut missing = Vec::new();
        undescribed(&s, "", &mut missing);
        assert!(missing.is_empty(), "{kind}: no description on {missing:?}");
    }
}

#[test]
fn both_kinds_are_in_the_sockwarden_category() {
    for crd in [DockerSocketPolicy::crd(), DockerAbuseFinding::crd()] {
        assert_eq!(
            crd.spec.names.categories,
            Some(vec!["sockwarden".to_string()]),
            "{}",
            crd.spec.names.kind
        );
    }
}

fn columns<K: CustomResourceExt>() -> Vec<(String, String, i64)> {
    let crd = serde_json::to_value(K::crd()).unwrap();
    crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["jsonPath"].as_str().unwrap().to_string(),
                c["priority"].as_i64().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn policy_mode_column_shows_what_nodes_do_and_the_request_only_in_wide_output() {
    let cols = columns::<DockerSocketPolicy>();
    let col = |name: &str| cols.iter().find(|c| c.0 == name).cloned().unwrap();
    assert_eq!(
        col("MODE"),
        ("MODE".into(), ".status.effectiveMode".into(), 0)
    );
    assert_eq!(
        col("REQUESTED"),
        ("REQUESTED".into(), ".spec.mode".into(), 1)
    );
    assert!(
        !cols.iter().any(|c| c.1 == ".spec.mode" && c.2 == 0),
        "the requested mode must not look like the effective one: {cols:?}"
    );
    let mut ok = policy(json!({"mode": "Enforce"}));
    ok["status"] = json!({"effectiveMode": "Audit", "conditions": []});
    assert!(check::<DockerSocketPolicy>(ok).is_ok());
    let mut bad = policy(json!({}));
    bad["status"] = json!({"effectiveMode": "Blocking", "conditions": []});
    assert!(check::<DockerSocketPolicy>(bad).is_err());
}

#[test]
fn finding_wide_columns_name_node_policy_executable_and_image() {
    let wide: Vec<(String, String)> = columns::<DockerAbuseFinding>()
        .into_iter()
        .filter(|c| c.2 == 1)
        .map(|c| (c.0, c.1))
        .collect();
    let want = [
        ("NODE", ".spec.node"),
        ("POLICY", ".spec.policy"),
        ("EXE", ".spec.process.exe"),
        ("IMAGE", ".spec.container.image"),
    ];
    assert_eq!(
        wide,
        want.map(|(n, p)| (n.to_string(), p.to_string())),
        "kubectl get daf -o wide"
    );
}
