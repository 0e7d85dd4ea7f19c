//! An API-server double for reconciler tests (no API server can run here): a `tower_test`
//! mock behind a real `kube::Client`. Each test scripts the calls it expects, in order; the
//! verifier asserts method, path and body of each, answers as the API server would, and a
//! missing or extra call fails the test.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use api::{DockerAbuseFinding, DockerSocketPolicy};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::jiff::Timestamp;
use kube::{
    client::Body,
    runtime::{
        reflector::{self, store::Writer},
        watcher,
    },
    Client,
};
use serde_json::{json, Value};

use crate::{context::Context, daemonset::ProbeSettings, events::EventPublisher, metrics::Metrics};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

pub struct ApiServer {
    handle: Handle,
}

/// One request the verifier received.
pub struct Call {
    pub method: String,
    pub uri: String,
    pub body: Value,
    respond: tower_test::mock::SendResponse<Response<Body>>,
}

impl Call {
    pub fn reply(self, status: u16, body: Value) {
        let response = Response::builder()
            .status(StatusCode::from_u16(status).unwrap())
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap();
        self.respond.send_response(response);
    }

    /// Answers with the object it was sent (as apply, create and replace do).
    pub fn echo(self) {
        let mut body = self.body.clone();
        if body["metadata"]["resourceVersion"].is_null() && body.get("metadata").is_some() {
            body["metadata"]["resourceVersion"] = json!("2");
        }
        self.reply(200, body);
    }
}

pub fn status_error(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": reason, "reason": reason, "code": code})
}

impl ApiServer {
    /// The next call, which must have this method and a path containing `path`.
    pub async fn expect(&mut self, method: &str, path: &str) -> Call {
        let call = self.next_any().await;
        assert_eq!(call.method, method, "call to {}", call.uri);
        assert!(
            call.uri.contains(path),
            "expected a call to {path}, got {} {}",
            call.method,
            call.uri
        );
        call
    }

    /// The next call, whatever it is.
    pub async fn next_any(&mut self) -> Call {
        let (request, respond) =
            tokio::time::timeout(Duration::from_secs(2), self.handle.next_request())
                .await
                .expect("expected a call, but none came")
                .expect("the client is gone");
        let (parts, body) = request.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        Call {
            method: parts.method.to_string(),
            uri: parts.uri.to_string(),
            body,
            respond,
        }
    }

    /// Asserts that no further call comes within a short while.
    pub async fn expect_silence(&mut self) {
        if let Ok(Some((req, _))) =
            tokio::time::timeout(Duration::from_millis(200), self.handle.next_request()).await
        {
            panic!("unexpected call {} {}", req.method(), req.uri());
        }
    }
}

pub struct Harness {
    pub ctx: Arc<Context>,
    pub api: ApiServer,
    pub policies: Writer<DockerSocketPolicy>,
    pub findings: Writer<DockerAbuseFinding>,
    pub daemonsets: Writer<DaemonSet>,
    pub probes: Writer<api::DockerSocketProbe>,
}

pub fn harness() -> Harness {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let (policy_store, policies) = reflector::store();
    let (finding_store, findings) = reflector::store();
    let (daemonset_store, daemonsets) = reflector::store();
    let (probe_store, probes) = reflector::store();
    let ctx = Arc::new(Context {
        client: client.clone(),
        events: EventPublisher::new(client, "sockwarden-operator", "operator-0"),
        metrics: Arc::new(Metrics::new().unwrap()),
        settings: ProbeSettings::default(),
        policies: policy_store,
        findings: finding_store,
        daemonsets: daemonset_store,
        probes: probe_store,
        evented: Mutex::new(HashMap::new()),
        started: Timestamp::now(),
    });
    Harness {
        ctx,
        api: ApiServer { handle },
        policies,
        findings,
        daemonsets,
        probes,
    }
}

impl Harness {
    pub fn add_policy(&mut self, p: &DockerSocketPolicy) {
        self.policies
            .apply_watcher_event(&watcher::Event::Apply(p.clone()));
    }
    pub fn remove_policy(&mut self, p: &DockerSocketPolicy) {
        self.policies
            .apply_watcher_event(&watcher::Event::Delete(p.clone()));
    }
    pub fn add_finding(&mut self, f: &DockerAbuseFinding) {
        self.findings
            .apply_watcher_event(&watcher::Event::Apply(f.clone()));
    }
    /// Node `node`'s probe report: enforcing `policies` (name, generation) by `blocks_with`,
    /// or not, saying `reason`.
    pub fn set_probe(
        &mut self,
        node: &str,
        policies: &[(&str, i64)],
        blocks_with: Option<&str>,
        reason: Option<&str>,
    ) {
        let mut probe = api::DockerSocketProbe::new(
            node,
            api::DockerSocketProbeSpec {
                node: node.into(),
                backend: "tracepoint".into(),
                enforcing: blocks_with.is_some(),
                blocks_with: blocks_with.map(String::from),
                pinned: true,
                policies: policies
                    .iter()
                    .map(|(name, generation)| api::EnforcedPolicy {
                        name: name.to_string(),
                        generation: *generation,
                    })
                    .collect(),
                reason: reason.map(String::from),
            },
        );
        probe.metadata.namespace = Some("sockwarden-system".into());
        self.probes
            .apply_watcher_event(&watcher::Event::Apply(probe));
    }

    /// The probe DaemonSet as the watch shows it: desired and ready node counts.
    pub fn set_daemonset(&mut self, desired: i32, ready: i32) {
        let ds: DaemonSet = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "sockwarden-probe", "namespace": "sockwarden-system"},
            "status": {"desiredNumberScheduled": desired, "numberReady": ready,
                       "currentNumberScheduled": desired, "numberMisscheduled": 0},
        }))
        .unwrap();
        self.daemonsets
            .apply_watcher_event(&watcher::Event::Apply(ds));
    }
}
