//! A stateful Kubernetes API double over HTTP, for the probe binary in cluster mode (no API
//! server can run here). It serves LIST of the pods, namespaces and policies it holds
//! (watches stay open and quiet), GET of a pod, 404 for owners, and server-side apply of
//! `DockerAbuseFinding` objects and their status, which it keeps.
use std::{
    collections::HashMap,
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
};

use axum::{
    body::Body,
    extract::{Path as UrlPath, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde_json::{json, Value};

#[derive(Default)]
pub struct Objects {
    pub pods: Vec<Value>,
    pub findings: HashMap<(String, String), Value>,
    pub writes: usize,
}

#[derive(Clone)]
pub struct FakeApi {
    pub objects: Arc<Mutex<Objects>>,
    pub addr: SocketAddr,
}

type Shared = Arc<Mutex<Objects>>;

fn list(kind: &str, items: Vec<Value>) -> Json<Value> {
    Json(
        json!({"apiVersion": "v1", "kind": format!("{kind}List"), "metadata": {"resourceVersion": "1"}, "items": items}),
    )
}

/// A watch answer that never sends an event and never ends.
fn quiet_watch() -> Response {
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(futures::stream::pending::<
            Result<Vec<u8>, std::io::Error>,
        >()))
        .unwrap()
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound"}))).into_response()
}

fn is_watch(q: &HashMap<String, String>) -> bool {
    q.get("watch").is_some_and(|w| w == "true" || w == "1")
}

async fn pods(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    if is_watch(&q) {
        return quiet_watch();
    }
    list("Pod", s.lock().unwrap().pods.clone()).into_response()
}

async fn empty_list(Query(q): Query<HashMap<String, String>>) -> Response {
    if is_watch(&q) {
        return quiet_watch();
    }
    list("", vec![]).into_response()
}

async fn get_pod(
    State(s): State<Shared>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> Response {
    let pods = s.lock().unwrap().pods.clone();
    pods.into_iter()
        .find(|p| {
            p["metadata"]["namespace"] == ns.as_str() && p["metadata"]["name"] == name.as_str()
        })
        .map_or_else(not_found, |p| Json(p).into_response())
}

/// Server-side apply sends `application/apply-patch+yaml`, of which JSON is a subset.
fn parse(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

async fn apply_finding(
    State(s): State<Shared>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let mut o = s.lock().unwrap();
    o.writes += 1;
    let mut obj = parse(&body);
    let key = (ns, name);
    if let Some(old) = o.findings.get(&key) {
        obj["status"] = old["status"].clone();
    }
    obj["metadata"]["uid"] = json!(format!("uid-{}", key.1));
    o.findings.insert(key, obj.clone());
    Json(obj).into_response()
}

async fn apply_status(
    State(s): State<Shared>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let mut o = s.lock().unwrap();
    o.writes += 1;
    let Some(obj) = o.findings.get_mut(&(ns, name)) else {
        return not_found();
    };
    obj["status"] = parse(&body)["status"].clone();
    Json(obj.clone()).into_response()
}

impl FakeApi {
    pub async fn start() -> FakeApi {
        let objects: Shared = Arc::default();
        let app = Router::new()
            .route("/api/v1/pods", get(pods))
            .route("/api/v1/namespaces", get(empty_list))
            .route(
                "/apis/sockwarden.io/v1alpha1/dockersocketpolicies",
                get(empty_list),
            )
            .route("/api/v1/namespaces/{ns}/pods/{name}", get(get_pod))
            .route(
                "/apis/apps/v1/namespaces/{ns}/replicasets/{name}",
                get(|| async { not_found() }),
            )
            .route(
                "/apis/batch/v1/namespaces/{ns}/jobs/{name}",
                get(|| async { not_found() }),
            )
            .route(
                "/apis/sockwarden.io/v1alpha1/namespaces/{ns}/dockerabusefindings/{name}",
                axum::routing::patch(apply_finding),
            )
            .route(
                "/apis/sockwarden.io/v1alpha1/namespaces/{ns}/dockerabusefindings/{name}/status",
                axum::routing::patch(apply_status),
            )
            .with_state(objects.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeApi { objects, addr }
    }

    /// A kubeconfig that points at this double.
    pub fn write_kubeconfig(&self, path: &Path) {
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\nusers:\n- name: probe\n  user:\n    token: test\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: probe\ncurrent-context: fake\n",
            self.addr
        );
        std::fs::write(path, config).unwrap();
    }

    pub fn add_pod(&self, pod: Value) {
        self.objects.lock().unwrap().pods.push(pod);
    }

    pub fn findings(&self) -> Vec<Value> {
        self.objects
            .lock()
            .unwrap()
            .findings
            .values()
            .cloned()
            .collect()
    }
}

/// A pod as kubelet would report it, running `container_id` under `runtime`.
pub fn pod(
    namespace: &str,
    name: &str,
    uid: &str,
    container: &str,
    runtime: &str,
    container_id: &str,
    node: &str,
) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "labels": {"app": name, "pod-template-hash": "5f7c9"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{name}-5f7c9"), "uid": "rs", "controller": true}]},
        "spec": {"nodeName": node, "serviceAccountName": "attacker-sa", "containers": [{"name": container, "image": "sockwarden-test:latest"}]},
        "status": {"containerStatuses": [{"name": container, "containerID": format!("{runtime}://{container_id}"), "image": "sockwarden-test:latest", "imageID": "", "ready": true, "restartCount": 0}]}
    })
}
