//! Throughput and memory of the user-space pipeline under a flood, in cluster mode: ring-buffer
//! record -> decode -> socket identity -> cgroup attribution -> decision -> queue -> pod
//! enrichment -> policy -> merged into the finding writer. One core (the process is pinned to
//! CPU 0, single-threaded runtime). The API server is unreachable, so writes back off and
//! increments merge, as in an outage; nothing here needs root.
//!
//! `cargo run --release -p probe --example pipeline_bench`
use std::{
    collections::HashMap,
    os::unix::{fs::MetadataExt, net::UnixListener},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use kube::runtime::{reflector, watcher};
use probe::{
    attribution::CgroupIndex,
    cluster::{
        owners::OwnerResolver,
        pod_index::PodIndex,
        run_sink,
        writer::{FindingWriter, WriterConfig},
        ClusterForwarder, ClusterSink, Enricher,
    },
    decide::Decider,
    event::encode,
    metrics::Metrics,
    open_resolve::OpenResolver,
    pipeline::Pipeline,
    rootfs::FileId,
    sockets::{Armer, WatchedSet},
};
use probe_common::{kind, Event};

const EVENTS: usize = 2_000_000;
const CONTAINERS: usize = 100;

struct NoMap;
impl WatchedSet for NoMap {
    fn arm(&mut self, _: &FileId) -> anyhow::Result<()> {
        Ok(())
    }
    fn disarm(&mut self, _: &FileId) -> anyhow::Result<()> {
        Ok(())
    }
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

fn pin_to_cpu0() {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn main() {
    pin_to_cpu0();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bench());
}

async fn bench() {
    let dir = tempfile::tempdir().unwrap();
    let _listener = UnixListener::bind(dir.path().join("docker.sock")).unwrap();
    let mut armer = Armer::new(
        vec!["/docker.sock=docker".parse().unwrap()],
        dir.path().to_path_buf(),
    );
    armer.refresh(&mut NoMap);
    let meta = std::fs::metadata(dir.path().join("docker.sock")).unwrap();
    let st_dev = meta.dev();
    let kdev = ((libc::major(st_dev) as u64) << 20) | libc::minor(st_dev) as u64;

    let metrics = Arc::new(Metrics::new().unwrap());
    let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let (pods, mut pod_writer) = reflector::store();
    let pod_index = PodIndex::default();
    let (namespaces, _ns_writer) = reflector::store();
    let (policies, _pol_writer) = reflector::store();
    let ids: Vec<String> = (0..CONTAINERS).map(|i| format!("{i:064x}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("web-{i}"), "namespace": "shop", "uid": format!("uid-{i}")},
            "spec": {"containers": []},
            "status": {"containerStatuses": [{"name": "app", "containerID": format!("containerd://{id}"), "image": "nginx", "imageID": "", "ready": true, "restartCount": 0}]}
        })).unwrap();
        let event = watcher::Event::Apply(pod);
        pod_writer.apply_watcher_event(&event);
        pod_index.apply_watcher_event(&event);
    }
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
    let (tx, rx) = tokio::sync::mpsc::channel(65_536);
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(run_sink(
        rx,
        sink,
        std::future::ready(()),
        stop_rx,
        Duration::ZERO,
    ));

    let mut pipeline = Pipeline {
        armer: Arc::new(Mutex::new(armer)),
        cgroups: CgroupIndex::new(std::path::Path::new("/nonexistent")),
        opens: OpenResolver::new("/proc".into()),
        decider: Decider {
            node: "n1".into(),
            backend: probe::backend::BackendKind::Tracepoint,
            include_host: false,
            host_pid_ns: 1,
            own_pid: None,
        },
        metrics: metrics.clone(),
        proc_root: "/proc".into(),
        sink: ClusterForwarder::new(tx, metrics.clone()),
        proc_cache: HashMap::new(),
        canary: None,
        enforcer: None,
    };
    // cgroup ids learned as the containers' cgroups were made
    for (i, id) in ids.iter().enumerate() {
        let mut e: Event = unsafe { std::mem::zeroed() };
        e.kind = kind::CGROUP_MKDIR;
        e.cgroup_id = 10_000 + i as u64;
        let path = format!("/kubepods/besteffort/poduid-{i}/{id}");
        e.path[..path.len()].copy_from_slice(path.as_bytes());
        e.path_len = path.len() as u32;
        pipeline.handle(&encode(&e));
    }
    let records: Vec<Vec<u8>> = (0..CONTAINERS)
        .map(|i| {
            let mut e: Event = unsafe { std::mem::zeroed() };
            e.kind = kind::CONNECT;
            e.pid = std::process::id();
            e.tid = e.pid;
            e.pid_ns = 2;
            e.mnt_ns = 3;
            e.cgroup_id = 10_000 + i as u64;
            e.dev = kdev;
            e.ino = meta.ino();
            e.comm[..4].copy_from_slice(b"curl");
            let path = b"/var/run/docker.sock";
            e.path[..path.len()].copy_from_slice(path);
            e.path_len = path.len() as u32;
            encode(&e)
        })
        .collect();

    let rss_start = rss_kib();
    let mut rss_max = rss_start;
    let start = Instant::now();
    for n in 0..EVENTS {
        pipeline.handle(&records[n % CONTAINERS]);
        if n % 1024 == 1023 {
            // as after each drain of the ring buffer: hand over, then yield
            pipeline.flush();
            tokio::task::yield_now().await;
        }
        if n % 250_000 == 0 {
            rss_max = rss_max.max(rss_kib());
        }
    }
    // until the sink has merged every event
    pipeline.flush();
    let handled = || metrics.pending_increments.get() as usize;
    while handled() < EVENTS - metrics.findings_dropped.get() as usize {
        pipeline.flush();
        tokio::task::yield_now().await;
        if start.elapsed() > Duration::from_secs(120) {
            break;
        }
    }
    let elapsed = start.elapsed();
    rss_max = rss_max.max(rss_kib());
    let rate = EVENTS as f64 / elapsed.as_secs_f64();
    println!("pipeline: {EVENTS} events from {CONTAINERS} containers in {:.2} s on one core: {:.0} events/s (target >= 200000)", elapsed.as_secs_f64(), rate);
    println!(
        "pipeline: pending increments {} in {} finding keys, dropped {}",
        metrics.pending_increments.get(),
        metrics.write_queue_depth.get(),
        metrics.findings_dropped.get()
    );
    println!(
        "memory: RSS {} KiB at start of the flood, {} KiB at most (target flat, <= 65536 KiB)",
        rss_start, rss_max
    );
}
