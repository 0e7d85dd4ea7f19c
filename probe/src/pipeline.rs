//! From ring-buffer record to written finding: decode, identify the socket, attribute the
//! caller, decide, write. Synchronous and allocation-light; one instance per reader.
use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{
    attribution::CgroupIndex,
    decide::{Decider, Identity},
    enforce::Enforcer,
    event::{decode, Decoded, Operation, SocketEvent},
    finding::Finding,
    metrics::Metrics,
    open_resolve::OpenResolver,
    output::{Outputs, Report},
    procinfo::{self, ProcDetails},
    selftest::Canary,
    sockets::{ArmedSocket, Armer},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// JSON when stdout is not a terminal, text when it is.
    Auto,
    Json,
    Text,
}

/// Where the pipeline hands findings: the outputs (standalone) or the cluster forwarder.
pub trait FindingSink {
    fn emit(&mut self, finding: Finding);
    fn flush(&mut self) {}
}

impl FindingSink for Box<dyn FindingSink + Send> {
    fn emit(&mut self, finding: Finding) {
        (**self).emit(finding)
    }
    fn flush(&mut self) {
        (**self).flush()
    }
}

/// Standalone mode: every finding is reported (no policy applies here) through the outputs.
pub struct StandaloneSink {
    pub outputs: Outputs,
    pub metrics: Arc<Metrics>,
}

impl FindingSink for StandaloneSink {
    fn emit(&mut self, finding: Finding) {
        self.outputs.publish(&Report {
            finding: &finding,
            kubernetes: None,
            count: 1,
        });
        // No pod names here (the uid from the cgroup is on the line): namespace and pod
        // are empty, as in cluster mode for a finding without a pod.
        self.metrics.count_finding("", "", &finding);
    }

    fn flush(&mut self) {
        self.outputs.flush();
    }
}

/// How long `/proc` details of a process are reused for its repeated events.
const PROC_CACHE_TTL: Duration = Duration::from_secs(2);
const PROC_CACHE_MAX: usize = 4096;

pub struct Pipeline<S: FindingSink> {
    pub armer: Arc<Mutex<Armer>>,
    pub cgroups: CgroupIndex,
    pub opens: OpenResolver,
    pub decider: Decider,
    pub metrics: Arc<Metrics>,
    pub proc_root: PathBuf,
    pub sink: S,
    pub proc_cache: HashMap<(u32, u64), (Instant, ProcDetails)>,
    /// The self-test's socket: its events prove the probe sees, and are never findings.
    pub canary: Option<Arc<Canary>>,
    /// While enforcing: new cgroups get their verdicts as their creation events arrive.
    pub enforcer: Option<Arc<Mutex<Enforcer>>>,
}

/// CLOCK_MONOTONIC in nanoseconds: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-parameter.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl<S: FindingSink> Pipeline<S> {
    /// Handles one ring-buffer record. Returns whether a finding was written.
    pub fn handle(&mut self, record: &[u8]) -> bool {
        match decode(record) {
            Err(e) => {
                self.metrics.decode_errors.inc();
                tracing::warn!(error = %e, "dropping undecodable ring-buffer record");
                false
            }
            Ok(Decoded::CgroupMkdir { id, path }) => {
                if let Some(enforcer) = &self.enforcer {
                    enforcer
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .on_cgroup(id, &path);
                }
                self.cgroups.record(id, path);
                false
            }
            Ok(Decoded::Socket(ev)) => self.handle_socket_event(ev),
        }
    }

    /// The watched socket an event touched, and how it was identified.
    fn watched_socket(&mut self, ev: &SocketEvent) -> Option<(ArmedSocket, Identity)> {
        // Connects, and opens seen by the lsm/fentry hooks, carry the kernel's own identity
        // of the socket file; tracepoint opens carry a path resolved here.
        if ev.operation == Operation::Connect || ev.ino != 0 {
            let armer = self.armer.lock().unwrap_or_else(|p| p.into_inner());
            return armer
                .lookup(ev.dev, ev.ino)
                .cloned()
                .map(|s| (s, Identity::Inode));
        }
        let resolved = self.opens.resolve(ev);
        let armer = self.armer.lock().unwrap_or_else(|p| p.into_inner());
        match resolved {
            Some(id) => armer
                .lookup(id.kernel_dev, id.ino)
                .cloned()
                .map(|s| (s, Identity::Inode)),
            None => {
                self.metrics.open_unresolved.inc();
                // Caller and its mount namespace gone: fall back to TRC-1019's own rule, the
                // file name, and say so on the finding.
                let name = ev.path.as_deref().and_then(|p| p.rsplit('/').next())?;
                let by_name = armer.lookup_by_file_name(name).cloned();
                if by_name.is_none() {
                    tracing::debug!(path = ?ev.path, pid = ev.pid, "open target unresolvable; caller gone");
                }
                by_name.map(|s| (s, Identity::Name))
            }
        }
    }

    fn handle_socket_event(&mut self, ev: SocketEvent) -> bool {
        if self.canary.as_ref().is_some_and(|c| c.observe(&ev)) {
            return false;
        }
        // An open of some other socket or FIFO, or a connect racing a disarm: not ours.
        let Some((socket, identity)) = self.watched_socket(&ev) else {
            return false;
        };
        self.metrics.count_event(ev.operation, &socket.runtime);
        let cgroup_path = self.cgroups.path_of(ev.cgroup_id, ev.pid);
        let Self {
            decider,
            proc_cache,
            proc_root,
            ..
        } = self;
        let Some(finding) = decider.decide(&ev, &socket, identity, cgroup_path, || {
            proc_details(proc_cache, proc_root, ev.pid, ev.start_ns)
        }) else {
            return false;
        };
        if ev.ktime_ns > 0 {
            let latency = monotonic_ns().saturating_sub(ev.ktime_ns);
            self.metrics.detection_latency.observe(latency as f64 / 1e9);
        }
        self.sink.emit(finding);
        true
    }

    pub fn flush(&mut self) {
        self.sink.flush();
    }
}

/// `/proc` details, reused for a process's events within a short window (a flood from one
/// process must not cost two file reads per event). Keyed by pid and start time, so a reused
/// pid never gets another process's details.
fn proc_details(
    cache: &mut HashMap<(u32, u64), (Instant, ProcDetails)>,
    proc_root: &std::path::Path,
    pid: u32,
    start_ns: u64,
) -> ProcDetails {
    let now = Instant::now();
    if let Some((at, details)) = cache.get(&(pid, start_ns)) {
        if now.duration_since(*at) < PROC_CACHE_TTL {
            return details.clone();
        }
    }
    let details = procinfo::read_started(proc_root, pid, start_ns);
    if cache.len() >= PROC_CACHE_MAX {
        cache.retain(|_, (at, _)| now.duration_since(*at) < PROC_CACHE_TTL);
    }
    cache.insert((pid, start_ns), (now, details.clone()));
    details
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        event::{encode, raw_event},
        output::SharedBuf,
        rootfs::FileId,
        sockets::WatchedSet,
    };
    use std::os::unix::net::UnixListener;

    struct NoMap;
    impl WatchedSet for NoMap {
        fn arm(&mut self, _: &FileId) -> anyhow::Result<()> {
            Ok(())
        }
        fn disarm(&mut self, _: &FileId) -> anyhow::Result<()> {
            Ok(())
        }
    }

    fn pipeline(root: &std::path::Path) -> (Pipeline<StandaloneSink>, SharedBuf) {
        let mut armer = Armer::new(
            vec!["/docker.sock=docker".parse().unwrap()],
            root.to_path_buf(),
        );
        armer.refresh(&mut NoMap);
        let metrics = Arc::new(Metrics::new().unwrap());
        let out = SharedBuf::default();
        let pipeline = Pipeline {
            armer: Arc::new(Mutex::new(armer)),
            cgroups: CgroupIndex::new(std::path::Path::new("/nonexistent")),
            opens: OpenResolver::new("/proc".into()),
            decider: Decider {
                node: "n".into(),
                backend: crate::backend::BackendKind::Tracepoint,
                include_host: false,
                host_pid_ns: 1,
                own_pid: None,
            },
            metrics: metrics.clone(),
            proc_root: "/proc".into(),
            sink: StandaloneSink {
                outputs: Outputs::new(Box::new(out.clone()), true, None),
                metrics,
            },
            proc_cache: HashMap::new(),
            canary: None,
            enforcer: None,
        };
        (pipeline, out)
    }

    #[test]
    fn container_connect_becomes_one_json_line_and_counts() {
        let root = tempfile::tempdir().unwrap();
        let _l = UnixListener::bind(root.path().join("docker.sock")).unwrap();
        let id = crate::rootfs::resolve(root.path(), "/docker.sock".as_ref()).unwrap();
        let (mut p, out) = pipeline(root.path());
        let cid = "c".repeat(64);
        p.handle(&encode(&{
            let mut e = raw_event(probe_common::kind::CGROUP_MKDIR, &format!("/docker/{cid}"));
            e.cgroup_id = 31337;
            e
        }));
        let mut e = raw_event(probe_common::kind::CONNECT, "/var/run/alias.sock");
        e.dev = id.kernel_dev;
        e.ino = id.ino;
        e.cgroup_id = 31337;
        e.pid_ns = 1; // host pid ns: the cgroup alone makes it a container
        assert!(p.handle(&encode(&e)));
        let lines = out.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["count"], 1);
        assert!(v["kubernetes"].is_null());
        assert_eq!(v["container"]["id"], cid.as_str());
        assert_eq!(v["requestedPath"], "/var/run/alias.sock");
        assert_eq!(v["socket"]["hostPath"], "/docker.sock");
        assert_eq!(
            p.metrics
                .findings
                .with_label_values(&["", "", "connect", "docker", "Audit"])
                .get(),
            1
        );
    }

    #[test]
    fn unknown_socket_and_garbage_records_are_not_findings() {
        let root = tempfile::tempdir().unwrap();
        let (mut p, out) = pipeline(root.path());
        let e = raw_event(probe_common::kind::CONNECT, "/x");
        assert!(!p.handle(&encode(&e)), "inode not armed");
        assert!(!p.handle(&[1, 2, 3]));
        assert_eq!(p.metrics.decode_errors.get(), 1);
        assert!(out.lines().is_empty());
    }
}
