//! Hostile finding keys with the API server down: 10,000 distinct findings (200 containers,
//! 50 differently named programs each, every one with a 4 KiB executable path and command
//! line) reach the cluster sink while every write fails; memory must stay bounded
//! (RSS <= 128 MiB), and once the API server is back another pod's first finding must still be
//! written. Fails (exit 1) otherwise. Nothing here needs root.
//!
//! `cargo run --release -p probe --example keys_bench`
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{Path, State},
    http::StatusCode,
    routing::patch,
    Json, Router,
};
use kube::runtime::{reflector, watcher};
use probe::{
    cluster::{
        owners::OwnerResolver,
        pod_index::PodIndex,
        run_sink,
        writer::{FindingWriter, WriterConfig},
        Batch, ClusterSink, Enricher,
    },
    finding::{CgroupInfo, ContainerInfo, Finding, Namespaces, ProcessInfo, SocketInfo, TRC_1019},
    metrics::Metrics,
};
use serde_json::{json, Value};

const CONTAINERS: usize = 200;
const PROGRAMS: usize = 50;
const BIG: usize = 4096;
const RSS_LIMIT_KIB: u64 = 128 * 1024;

/// A finding store, as the API server keeps them.
#[derive(Clone, Default)]
struct Api {
    findings: Arc<Mutex<HashMap<(String, String), Value>>>,
}

async fn apply(
    State(api): State<Api>,
    Path((ns, name)): Path<(String, String)>,
    raw: axum::body::Bytes,
) -> (StatusCode, Json<Value>) {
    // Server-side apply sends JSON as application/apply-patch+yaml.
    let mut body: Value = serde_json::from_slice(&raw).unwrap_or_default();
    let mut all = api.findings.lock().unwrap();
    body["metadata"]["uid"] = json!(format!("uid-{name}"));
    if let Some(old) = all.get(&(ns.clone(), name.clone())) {
        body["status"] = old["status"].clone();
    }
    all.insert((ns, name), body.clone());
    (StatusCode::OK, Json(body))
}

async fn apply_status(
    State(api): State<Api>,
    Path((ns, name)): Path<(String, String)>,
    raw: axum::body::Bytes,
) -> (StatusCode, Json<Value>) {
    let body: Value = serde_json::from_slice(&raw).unwrap_or_default();
    let mut all = api.findings.lock().unwrap();
    let Some(obj) = all.get_mut(&(ns, name)) else {
        return (StatusCode::NOT_FOUND, Json(json!({"code": 404})));
    };
    obj["status"] = body["status"].clone();
    (StatusCode::OK, Json(obj.clone()))
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn container_id(i: usize) -> String {
    format!("{i:064x}")
}

fn pod(i: usize, namespace: &str) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("p-{i}"), "namespace": namespace, "uid": format!("uid-{i}")},
        "spec": {"containers": []},
        "status": {"containerStatuses": [{"name": "app", "containerID": format!("containerd://{}", container_id(i)), "image": "nginx", "imageID": "", "ready": true, "restartCount": 0}]}
    }))
    .unwrap()
}

fn finding(container: usize, program: usize) -> Finding {
    let pad = |tag: String| format!("{tag}{}", "x".repeat(BIG - tag.len()));
    Finding {
        signature: TRC_1019,
        time: "2026-11-29T10:00:00Z".into(),
        node: "n1".into(),
        operation: api::FindingOperation::Connect,
        socket: SocketInfo {
            host_path: "/run/docker.sock".into(),
            runtime: "docker".into(),
            inode: 1,
            device: "0:1".into(),
            identity: "inode",
        },
        requested_path: Some("/run/docker.sock".into()),
        open_flags: None,
        process: ProcessInfo {
            pid: 1000 + program as u32,
            tid: 1000 + program as u32,
            ppid: 1,
            uid: 0,
            gid: 0,
            comm: format!("prog-{program}"),
            exe: Some(pad(format!("/tmp/{container}/{program}/"))),
            cmdline: Some(pad(format!("run {container} {program} "))),
        },
        container: Some(ContainerInfo {
            id: Some(container_id(container)),
            runtime: Some("containerd".into()),
        }),
        pod: None,
        namespaces: Namespaces { mnt: 1, pid: 2 },
        cgroup: CgroupInfo { id: 1, path: None },
        backend: probe::backend::BackendKind::Tracepoint,
        action: api::FindingAction::Audit,
        enforcement: None,
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    std::process::exit(rt.block_on(bench()));
}

async fn bench() -> i32 {
    // The API server is down: nothing listens on its address (connections are refused) until
    // it comes back.
    let api = Api::default();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let app = Router::new()
        .route(
            "/apis/sockwarden.io/v1alpha1/namespaces/{ns}/dockerabusefindings/{name}",
            patch(apply),
        )
        .route(
            "/apis/sockwarden.io/v1alpha1/namespaces/{ns}/dockerabusefindings/{name}/status",
            patch(apply_status),
        )
        .with_state(api.clone());

    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let (pods, mut pod_writer) = reflector::store();
    let pod_index = PodIndex::default();
    let (namespaces, _ns_writer) = reflector::store();
    let (policies, _pol_writer) = reflector::store();
    for i in 0..CONTAINERS {
        let event = watcher::Event::Apply(pod(i, "flood"));
        pod_writer.apply_watcher_event(&event);
        pod_index.apply_watcher_event(&event);
    }
    let other = CONTAINERS; // another pod, in another namespace
    let event = watcher::Event::Apply(pod(other, "bank"));
    pod_writer.apply_watcher_event(&event);
    pod_index.apply_watcher_event(&event);
    let metrics = Arc::new(Metrics::new().unwrap());
    let enricher = Enricher {
        pods,
        pod_index,
        namespaces,
        policies,
        client: None,
        cri: Vec::new(),
        owners: OwnerResolver::new(None),
    };
    let writer = FindingWriter::new(
        client,
        WriterConfig {
            node: "n1".into(),
            ..Default::default()
        },
        metrics.clone(),
    );
    let sink = ClusterSink::new(
        enricher,
        writer,
        metrics.clone(),
        "n1".into(),
        probe::output::Outputs::new(Box::new(std::io::sink()), true, None),
    );
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(run_sink(
        rx,
        sink,
        std::future::ready(()),
        stop_rx,
        Duration::from_secs(1),
    ));

    let rss_start = rss_kib();
    let mut rss_max = rss_start;
    for program in 0..PROGRAMS {
        for container in 0..CONTAINERS {
            let batch = Batch {
                finding: finding(container, program),
                count: 1,
            };
            tx.send(batch).await.unwrap();
        }
        rss_max = rss_max.max(rss_kib());
    }
    // Let the sink take them all in and try (and fail) to write for a while.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        rss_max = rss_max.max(rss_kib());
    }
    let keys = metrics.write_queue_depth.get();
    println!(
        "keys: {} distinct 4 KiB findings sent with the API down: {keys} keys queued, {} capped per container, {} dropped, {} write errors",
        CONTAINERS * PROGRAMS,
        metrics.finding_keys_capped.get(),
        metrics.findings_dropped.get(),
        metrics.api_write_errors.get()
    );
    println!("keys: RSS {rss_start} KiB before, {rss_max} KiB at most (limit {RSS_LIMIT_KIB} KiB)");

    // The API server comes back; another pod's first finding must get through.
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let started = Instant::now();
    tx.send(Batch {
        finding: finding(other, 0),
        count: 1,
    })
    .await
    .unwrap();
    let written = loop {
        let done = api
            .findings
            .lock()
            .unwrap()
            .keys()
            .any(|(ns, _)| ns == "bank");
        if done || started.elapsed() > Duration::from_secs(60) {
            break done;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "keys: after recovery, the other pod's finding {} in {:.1} s",
        if written {
            "was written"
        } else {
            "was NOT written"
        },
        started.elapsed().as_secs_f64()
    );
    if rss_max > RSS_LIMIT_KIB || !written || keys == 0 {
        eprintln!("keys: FAILED");
        return 1;
    }
    0
}
