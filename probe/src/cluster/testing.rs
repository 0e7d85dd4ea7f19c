//! A stateful API-server double for the probe's cluster code (no API server can run here):
//! a `tower_test` mock behind a real `kube::Client`, answering server-side apply of findings
//! and their status (counts kept per object), GETs of the pods it was given (404 to other
//! reads), and failing writes or reads on demand with a given HTTP status. Watches are left
//! open and quiet.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use futures::future::BoxFuture;
use http::{Request, Response};
use http_body_util::BodyExt;
use kube::{client::Body, Client};
use serde_json::{json, Value};

use super::{cri::IdentitySource, pods::PodIdentity};

#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub uri: String,
    pub body: Value,
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    /// (namespace, name) -> finding object as last applied.
    findings: HashMap<(String, String), Value>,
    fail_next: u32,
    fail_code: u16,
    /// Refuse a spec change of an existing finding, as the chart's admission policy does.
    immutable_spec: bool,
    /// (namespace, name) -> pod served to GETs.
    pods: HashMap<(String, String), Value>,
    /// Every read fails with this status while set.
    fail_reads: Option<u16>,
}

#[derive(Clone)]
pub struct ApiDouble {
    state: Arc<Mutex<State>>,
    client: Client,
}

fn status(code: u16) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": "Injected", "message": "injected failure"})
}

impl ApiDouble {
    pub fn start() -> Self {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let state = Arc::new(Mutex::new(State::default()));
        let served = state.clone();
        tokio::spawn(async move {
            // Watches are parked here so their connections stay open and quiet.
            let mut parked = Vec::new();
            while let Some((request, respond)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let uri = parts.uri.to_string();
                if uri.contains("watch=true") {
                    parked.push(respond);
                    continue;
                }
                let (code, answer) = Self::answer(&served, parts.method.as_str(), &uri, body);
                let response = Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap();
                respond.send_response(response);
            }
        });
        Self {
            state,
            client: Client::new(service, "default"),
        }
    }

    fn answer(state: &Mutex<State>, method: &str, uri: &str, body: Value) -> (u16, Value) {
        let mut s = state.lock().unwrap();
        s.calls.push(Call {
            method: method.into(),
            uri: uri.into(),
            body: body.clone(),
        });
        let path = uri.split('?').next().unwrap_or_default().to_string();
        if method == "GET" {
            if let Some(code) = s.fail_reads {
                return (code, status(code));
            }
            // /api/v1/namespaces/{ns}/pods/{name}
            let parts: Vec<&str> = path.split('/').collect();
            if let ["", "api", "v1", "namespaces", ns, "pods", name] = parts[..] {
                if let Some(pod) = s.pods.get(&(ns.to_string(), name.to_string())) {
                    return (200, pod.clone());
                }
            }
            return (404, status(404)); // owners of ReplicaSets/Jobs, other pods: not held here
        }
        if s.fail_next > 0 {
            s.fail_next -= 1;
            let code = s.fail_code;
            return (code, status(code));
        }
        // /apis/sockwarden.io/v1alpha1/namespaces/{ns}/dockerabusefindings/{name}[/status]
        let parts: Vec<&str> = path.split('/').collect();
        if method == "PATCH" && parts.len() >= 8 && parts[6] == "dockerabusefindings" {
            let key = (parts[5].to_string(), parts[7].to_string());
            let is_status = parts.get(8) == Some(&"status");
            let existing = s.findings.get(&key).cloned();
            if is_status {
                let Some(mut obj) = existing else {
                    return (404, status(404));
                };
                obj["status"] = body["status"].clone();
                s.findings.insert(key, obj.clone());
                return (200, obj);
            }
            if body.as_object().is_some_and(|o| o.is_empty()) {
                // An empty merge patch: reads the object.
                return match existing {
                    Some(obj) => (200, obj),
                    None => (404, status(404)),
                };
            }
            if s.immutable_spec {
                if let Some(old) = &existing {
                    if old["spec"] != body["spec"] {
                        return (422, status(422)); // as the chart's admission policy refuses
                    }
                }
            }
            let mut obj = body;
            obj["metadata"]["uid"] = json!(format!("uid-{}", key.1));
            if let Some(old) = existing {
                obj["status"] = old["status"].clone();
            }
            s.findings.insert(key, obj.clone());
            return (200, obj);
        }
        (404, status(404))
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn count(&self, namespace: &str, name: &str) -> Option<i64> {
        let s = self.state.lock().unwrap();
        s.findings.get(&(namespace.into(), name.into()))?["status"]["count"].as_i64()
    }

    pub fn findings(&self) -> Vec<Value> {
        self.state
            .lock()
            .unwrap()
            .findings
            .values()
            .cloned()
            .collect()
    }

    pub fn preload(&self, namespace: &str, name: &str, count: i64) {
        self.state.lock().unwrap().findings.insert(
            (namespace.into(), name.into()),
            json!({"apiVersion": "sockwarden.io/v1alpha1", "kind": "DockerAbuseFinding",
                   "metadata": {"name": name, "namespace": namespace},
                   "spec": serde_json::to_value(finding_spec()).unwrap(),
                   "status": {"count": count}}),
        );
    }

    /// Serves `pod` to GETs of it.
    pub fn add_pod(&self, pod: &k8s_openapi::api::core::v1::Pod) {
        use kube::ResourceExt;
        self.state.lock().unwrap().pods.insert(
            (pod.namespace().unwrap_or_default(), pod.name_any()),
            serde_json::to_value(pod).unwrap(),
        );
    }

    /// Refuse spec changes of existing findings (the chart's ValidatingAdmissionPolicy).
    pub fn refuse_spec_changes(&self) {
        self.state.lock().unwrap().immutable_spec = true;
    }

    /// Every read fails with `code` until called with `None`.
    pub fn fail_reads(&self, code: Option<u16>) {
        self.state.lock().unwrap().fail_reads = code;
    }

    /// The next `n` writes fail with `code`.
    pub fn fail_next(&self, n: u32, code: u16) {
        let mut s = self.state.lock().unwrap();
        s.fail_next = n;
        s.fail_code = code;
    }
}

/// A runtime's answers to "which pod is this container", by container id; shared so a test
/// can change them after the sink owns its copy.
#[derive(Clone, Default)]
pub struct Identities(Arc<Mutex<HashMap<String, PodIdentity>>>);

impl Identities {
    pub fn insert(&self, container_id: &str, identity: PodIdentity) {
        self.0
            .lock()
            .unwrap()
            .insert(container_id.to_string(), identity);
    }
}

impl IdentitySource for Identities {
    fn identity<'a>(&'a mut self, container_id: &'a str) -> BoxFuture<'a, Option<PodIdentity>> {
        let known = self.0.lock().unwrap().get(container_id).cloned();
        Box::pin(async move { known })
    }
}

pub fn finding_spec() -> api::DockerAbuseFindingSpec {
    serde_json::from_value(json!({
        "signature": api::SignatureRef::trc_1019(), "node": "n1",
        "pod": {"name": "web-1", "uid": "pod-uid"}, "container": {"name": "app", "id": "c1"},
        "operation": "connect", "socket": {"hostPath": "/run/docker.sock", "runtime": "docker"},
        "process": {"comm": "curl", "uid": 0}, "action": "Audit", "policy": "default", "severity": 2
    }))
    .unwrap()
}
