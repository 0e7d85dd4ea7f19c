//! `sockwarden-probe run`: load and attach, keep the watched sockets armed, turn events into
//! findings, serve health and metrics, and shut down cleanly on SIGINT/SIGTERM.
use std::{
    io::IsTerminal,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{bail, Context as _};
use aya::maps::{MapData, RingBuf};
use runtime::{
    admin,
    status::{Status, TaskGuard},
};
use tokio::{io::unix::AsyncFd, sync::watch, task::JoinHandle};

use crate::{
    attribution::CgroupIndex,
    backend::{self, Backend, BackendKind, BackendRequest},
    btf_offsets::{syscall_numbers, KernelBtf},
    cluster::{
        cri::{CriClient, IdentitySource, DEFAULT_CRI_SOCKETS},
        owners::OwnerResolver,
        pod_index::PodIndex,
        run_sink,
        writer::{FindingWriter, WriterConfig},
        ClusterForwarder, ClusterSink, Enricher,
    },
    decide::Decider,
    enforce::{self, Enforcer},
    metrics::Metrics,
    open_resolve::OpenResolver,
    output::{http, Outputs},
    pipeline::{FindingSink, OutputFormat, Pipeline, StandaloneSink},
    procinfo, selftest,
    selftest::Canary,
    sockets::{default_specs, ArmEvent, Armer, PolicySockets, SocketSpec},
};

/// How often watched paths are re-resolved (a recreated socket is re-armed within this).
const REARM_INTERVAL: Duration = Duration::from_millis(500);
/// Every this many housekeeping ticks, verdicts are written again from a walk of the tree.
const RESYNC_TICKS: u64 = 10;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Attach backend; `auto` picks the best one that loads here.
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendRequest,
    /// Watch another socket, PATH[=RUNTIME] (repeatable; added to the defaults).
    #[arg(long = "socket", value_name = "PATH[=RUNTIME]")]
    pub sockets: Vec<SocketSpec>,
    /// Watch only the sockets given with --socket.
    #[arg(long)]
    pub no_default_sockets: bool,
    /// Where the host's file system is (when the probe runs in a pod: the hostPath mount).
    #[arg(long, default_value = "/", env = "SOCKWARDEN_HOST_ROOT")]
    pub host_root: PathBuf,
    /// Report host processes too, not only containerised ones.
    #[arg(long)]
    pub include_host: bool,
    /// Also detect open(2) of a watched socket with write intent. In the tracepoint backend
    /// this attaches syscall tracepoints, which slow every syscall (see README).
    #[arg(long)]
    pub detect_open: bool,
    /// Finding format on stdout.
    #[arg(long, value_enum, default_value = "auto")]
    pub format: OutputFormat,
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub listen: SocketAddr,
    /// Node name carried on findings (default: the host name).
    #[arg(long, env = "NODE_NAME")]
    pub node: Option<String>,
    /// Kernel BTF used to resolve struct offsets.
    #[arg(long, default_value = "/sys/kernel/btf/vmlinux")]
    pub btf: PathBuf,
    /// Write findings as DockerAbuseFinding objects (on by default inside a pod).
    #[arg(long, conflicts_with = "standalone")]
    pub cluster: bool,
    /// Never talk to a cluster, even inside a pod.
    #[arg(long)]
    pub standalone: bool,
    /// CRI socket for attributing containers the pod cache has not seen (repeatable;
    /// default: containerd, k3s/rke2 containerd and CRI-O sockets that exist under --host-root).
    #[arg(long = "cri-socket", value_name = "PATH")]
    pub cri_sockets: Vec<PathBuf>,
    /// Cluster mode: at most one write per finding per this many seconds.
    #[arg(long, default_value_t = 5.0)]
    pub write_interval_seconds: f64,
    /// Cluster mode: sustained API writes per second over all findings.
    #[arg(long, default_value_t = 20.0)]
    pub write_rate: f64,
    /// Cluster mode: API write burst.
    #[arg(long, default_value_t = 50.0)]
    pub write_burst: f64,
    /// Cluster mode: most distinct findings held in memory awaiting a write.
    #[arg(long, default_value_t = 10_000)]
    pub max_pending_findings: usize,
    /// Where the probe keeps its canary socket (the self-test's target).
    #[arg(long, default_value = "/run/sockwarden-probe")]
    pub state_dir: PathBuf,
    /// Also POST each reported finding as a Falco alert (JSON) to this http:// or https://
    /// URL, e.g. Falcosidekick's `http://falcosidekick.falco:2801/`.
    #[arg(long, value_name = "URL", value_parser = http::parse_url)]
    pub http_output: Option<hyper::Uri>,
    /// Findings waiting for the HTTP output, at most; beyond, new ones are dropped (counted).
    #[arg(long, value_name = "N", default_value_t = http::DEFAULT_QUEUE)]
    pub http_output_queue: usize,
    /// Header on every HTTP output request, 'Name: value' (repeatable).
    #[arg(long = "http-output-header", value_name = "NAME: VALUE")]
    pub http_output_headers: Vec<http::HeaderSpec>,
    /// Standalone: refuse every container's connects to, write-intent opens of and datagram
    /// sends to the watched sockets (EPERM on lsm/fentry; SIGKILL before the syscall returns
    /// on tracepoint/kprobe). Host processes are never refused. In a cluster, `mode: Enforce`
    /// policies decide instead.
    #[arg(long)]
    pub enforce: bool,
    /// Where the enforcing programs' links are pinned (a BPF file system), so that the node
    /// stays enforced while no probe runs; `sockwarden-probe uninstall` removes them.
    #[arg(long, default_value = backend::pin::DEFAULT_DIR, env = "SOCKWARDEN_PIN_DIR")]
    pub pin_dir: PathBuf,
    /// Cluster mode: the probe's own pod (the downward API's metadata.name, .namespace and
    /// .uid), which owns this node's DockerSocketProbe report.
    #[arg(long, env = "POD_NAME", hide = true)]
    pub pod_name: Option<String>,
    #[arg(long, env = "POD_NAMESPACE", hide = true)]
    pub pod_namespace: Option<String>,
    #[arg(long, env = "POD_UID", hide = true)]
    pub pod_uid: Option<String>,
}

/// Whether the probe reports to a cluster (explicitly, or by default inside a pod).
fn cluster_mode(args: &RunArgs) -> bool {
    let in_pod = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    args.cluster || (in_pod && !args.standalone)
}

/// Capabilities needed to load and attach: CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON.
fn check_privileges() -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |bit: u32| cap_eff & (1u64 << bit) != 0;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    bail!("sockwarden-probe needs root (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN) to load eBPF programs: run it with sudo or grant those capabilities")
}

/// `sockwarden-probe run`: start, then run until a signal or a task ends.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    Probe::start(args).await?.run_until_signal().await
}

/// A started probe: its programs attached and the tasks that keep them useful, owned here so
/// that they stop in one order (see [`Probe::shut_down`]).
pub struct Probe {
    status: Arc<Status>,
    /// Sent `true` once: every task's cue to stop.
    shutdown: watch::Sender<bool>,
    /// Dropping the last handle detaches every program.
    backend: Arc<Mutex<Backend>>,
    reader: JoinHandle<anyhow::Result<()>>,
    self_test: Option<JoinHandle<()>>,
    finding_writer: Option<JoinHandle<()>>,
    http_output: Option<JoinHandle<()>>,
    housekeeping: JoinHandle<()>,
    server: JoinHandle<std::io::Result<()>>,
    cluster: Arc<std::sync::OnceLock<ClusterState>>,
}

impl Probe {
    /// Loads and attaches the programs (the first backend that proves it sees, unless one is
    /// forced), arms the watched sockets, and spawns the admin server, housekeeping, the
    /// outputs, the reader and the self-test.
    pub async fn start(args: RunArgs) -> anyhow::Result<Self> {
        check_privileges()?;
        let offsets = kernel_offsets(&args.btf)?;
        let proc_root = args.host_root.join("proc");
        let (host_mnt_ns, host_pid_ns) = host_namespaces(&proc_root)?;
        tracing::info!(host_mnt_ns, host_pid_ns, "host namespaces");
        let _ = raise_memlock_limit();
        let options = load_options(offsets, args.detect_open);
        let canary = create_canary(&args.state_dir);
        let (backend, rings, blind, kind) = attach(&args, &options, canary.as_deref())?;

        let metrics = Arc::new(Metrics::new()?);
        let status = Arc::new(Status::default());
        match (&canary, blind) {
            (None, _) => status.not_ready(
                "self-test",
                Some("the canary socket could not be created".into()),
            ),
            (Some(_), Some(why)) => status.not_ready("self-test", Some(why)),
            (Some(c), None) => metrics.self_test_last_success.set(c.last_success() as i64),
        }
        metrics.set_backend(kind);

        let armer = Arc::new(Mutex::new(Armer::new(
            watched_specs(&args)?,
            args.host_root.clone(),
        )));
        let backend = Arc::new(Mutex::new(backend));
        rearm(&armer, &backend, &metrics, &status);
        let enforcer = start_enforcer(&args, &backend, &metrics, host_pid_ns)?;

        let (shutdown, stop) = watch::channel(false);
        let server = serve_admin(args.listen, &status, &metrics, stop.clone()).await?;
        // The policy cache, once cluster mode has started.
        let cluster = Arc::new(std::sync::OnceLock::new());
        let housekeeping = spawn_housekeeping(
            armer.clone(),
            backend.clone(),
            metrics.clone(),
            &status,
            cluster.clone(),
            NodeEnforcement {
                enforcer: enforcer.clone(),
                btf: args.btf.clone(),
                pin_dir: args.pin_dir.clone(),
                backend: kind,
            },
            stop.clone(),
        );
        let cgroups = index_cgroups(&args.host_root);
        let node = args
            .node
            .clone()
            .or_else(runtime::host::name)
            .unwrap_or_else(|| "unknown".into());
        let (http_sender, http_output) = start_http_output(&args, &metrics, &stop)?;
        let (sink, finding_writer) = start_sink(
            &args,
            &node,
            http_sender,
            &metrics,
            &status,
            &cluster,
            &stop,
        )
        .await?;
        if let (Some(enforcer), Some(cluster)) = (&enforcer, cluster.get()) {
            let verdicts = cluster.verdicts.clone();
            enforcer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .set_judge(Box::new(move |c| verdicts.verdict(c)));
        }
        let pipeline = Pipeline {
            armer,
            cgroups,
            opens: OpenResolver::new(proc_root.clone()),
            decider: Decider {
                node,
                backend: kind,
                include_host: args.include_host,
                host_pid_ns,
                own_pid: own_pid(host_pid_ns),
            },
            metrics: metrics.clone(),
            proc_root,
            sink,
            proc_cache: Default::default(),
            canary: canary.clone(),
            enforcer,
        };
        let reader = spawn_reader(rings, pipeline, &status, stop.clone());
        let self_test = canary.map(|c| spawn_self_test(c, kind, &status, &metrics, stop.clone()));
        Ok(Self {
            status,
            shutdown,
            backend,
            reader,
            self_test,
            finding_writer,
            http_output,
            housekeeping,
            server,
            cluster,
        })
    }

    /// Runs until SIGTERM or SIGINT, or until a long-running task ends, whichever comes
    /// first; then shuts down. A task that ended is an error, so that the probe is restarted.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        let failed = tokio::select! {
            r = runtime::shutdown::signal() => { r?; None }
            task = self.status.task_ended() => Some(task),
        };
        self.shut_down().await?;
        match failed {
            Some(task) => {
                bail!("the {task} task ended unexpectedly; exiting so that the probe is restarted")
            }
            None => Ok(()),
        }
    }

    /// Stops the tasks in order: the reader drains what is queued into the sinks, the
    /// self-test, the finding writer (flushes what the reader handed it), the HTTP output
    /// (after the sinks, which hold its queue), housekeeping, the admin server; then detaches.
    async fn shut_down(self) -> anyhow::Result<()> {
        self.status.shutting_down();
        tracing::info!("shutting down: draining events and detaching programs");
        let _ = self.shutdown.send(true);
        self.reader.await??;
        if let Some(task) = self.self_test {
            let _ = task.await;
        }
        if let Some(task) = self.finding_writer {
            let _ = task.await;
        }
        // It flushes within its bound, then ends.
        if let Some(task) = self.http_output {
            let _ = task.await;
        }
        let _ = self.housekeeping.await;
        let _ = self.server.await;
        let pinned = self
            .backend
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pinned_dir();
        // Dropping the backend detaches every program that is not pinned.
        drop(self.backend);
        let Some(dir) = pinned else { return Ok(()) };
        let uninstalled = match self.cluster.get() {
            Some(cluster) => daemonset_going(cluster).await,
            None => false,
        };
        if uninstalled {
            match backend::pin::remove_all(&dir) {
                Ok(removed) => {
                    tracing::info!(removed, "the probe DaemonSet is being deleted (an uninstall): removed this node's pinned enforcement")
                }
                Err(e) => {
                    tracing::error!(error = %e, dir = %dir.display(), "the probe DaemonSet is being deleted but the pinned enforcement could not be removed: run `sockwarden-probe uninstall` on the node")
                }
            }
        } else {
            tracing::info!(dir = %dir.display(), "enforcement stays pinned while no probe runs: the next probe takes it over; `sockwarden-probe uninstall` removes it");
        }
        Ok(())
    }
}

fn kernel_offsets(btf: &std::path::Path) -> anyhow::Result<probe_common::KernelOffsets> {
    let btf = KernelBtf::from_file(btf)?;
    let offsets = btf
        .kernel_offsets()
        .context("this kernel's BTF lacks a struct member the probe reads")?;
    if offsets.regs_syscall_nr == 0 {
        tracing::warn!("requested paths cannot be captured on this kernel or architecture");
    }
    Ok(offsets)
}

fn load_options(offsets: probe_common::KernelOffsets, detect_open: bool) -> backend::LoadOptions {
    let syscalls = syscall_numbers();
    backend::LoadOptions {
        offsets,
        config: probe_common::ProbeConfig {
            connect_syscall_nr: syscalls.0,
            open_syscall_nr: syscalls.1,
            openat_syscall_nr: syscalls.2,
            openat2_syscall_nr: syscalls.3,
        },
        detect_open,
    }
}

/// The canary every backend must see before it is trusted (see selftest).
fn create_canary(state_dir: &std::path::Path) -> Option<Arc<Canary>> {
    match Canary::create(state_dir) {
        Ok(c) => Some(Arc::new(c)),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "no self-test possible: the probe cannot prove it sees");
            None
        }
    }
}

/// Why `auto` moves past a backend: it did not load, or it loaded and did not prove it sees.
#[derive(Debug, thiserror::Error)]
enum Unusable {
    #[error(transparent)]
    Load(#[from] backend::LoadError),
    #[error("{0}")]
    Blind(String),
}

/// Loads the requested backend, or with `auto` the first that loads and proves it sees the
/// canary. Also returns why it is blind, when a forced backend did not prove it.
fn attach(
    args: &RunArgs,
    options: &backend::LoadOptions,
    canary: Option<&Canary>,
) -> anyhow::Result<(Backend, backend::Rings, Option<String>, BackendKind)> {
    backend::log_kernel_facts();
    let forced = args.backend != BackendRequest::Auto;
    // What actually loads and then sees decides, not what the kernel's configuration claims.
    let ((backend, rings, blind), kind, reason) = backend::select(args.backend, |kind| {
        let mut backend = Backend::load(kind, options)?;
        let mut rings = backend.rings()?;
        let blind = match canary {
            Some(c) if !prove(&mut backend, &mut rings.connects, c) => {
                Some(selftest::blind_reason(kind))
            }
            _ => None,
        };
        match blind {
            // A forced backend keeps running, not ready, saying why.
            Some(why) if !forced => Err(Unusable::Blind(why)),
            blind => Ok((backend, rings, blind)),
        }
    })?;
    tracing::info!(backend = %kind, reason = %reason, "attach backend chosen");
    if kind != BackendKind::Tracepoint && args.detect_open {
        tracing::info!("--detect-open is implied: the {kind} backend sees opens at no extra cost");
    }
    tracing::info!(backend = %kind, "eBPF programs attached");
    Ok((backend, rings, blind, kind))
}

/// The configured sockets: the defaults unless refused, plus every `--socket`.
fn watched_specs(args: &RunArgs) -> anyhow::Result<Vec<SocketSpec>> {
    let mut specs = if args.no_default_sockets {
        Vec::new()
    } else {
        default_specs()
    };
    specs.extend(args.sockets.iter().cloned());
    if specs.is_empty() {
        bail!("no sockets to watch: drop --no-default-sockets or add --socket PATH");
    }
    Ok(specs)
}

/// Binds `listen` and serves `/healthz`, `/readyz` and `/metrics` until `stop`.
async fn serve_admin(
    listen: SocketAddr,
    status: &Arc<Status>,
    metrics: &Metrics,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<std::io::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen} for health and metrics"))?;
    let bound = listener.local_addr().unwrap_or(listen);
    tracing::info!(listen = %bound, "serving /healthz, /readyz, /metrics");
    Ok(admin::serve(
        listener,
        status.clone(),
        metrics.registry.clone(),
        async move {
            let _ = stop.changed().await;
        },
    ))
}

/// Whether the probe's DaemonSet is gone or being deleted, or the probe's own permissions to
/// read it are (its ServiceAccount or Role deleted): an uninstall, not a restart or a rollout.
/// Unsure (the API unreachable, no pod identity) is "no": the node stays enforced.
async fn daemonset_going(cluster: &ClusterState) -> bool {
    use k8s_openapi::api::apps::v1::DaemonSet;
    let Some(namespace) = &cluster.namespace else {
        return false;
    };
    let api: kube::Api<DaemonSet> = kube::Api::namespaced(cluster.client.clone(), namespace);
    match tokio::time::timeout(Duration::from_secs(5), api.get_opt(api::PROBE_DAEMONSET)).await {
        Ok(Ok(None)) => true,
        Ok(Ok(Some(ds))) => ds.metadata.deletion_timestamp.is_some(),
        Ok(Err(kube::Error::Api(status))) if status.code == 401 || status.code == 403 => {
            tracing::info!(
                code = status.code,
                "the probe may no longer read its DaemonSet: sockwarden is being uninstalled"
            );
            true
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot tell whether the probe DaemonSet is being deleted; enforcement stays pinned");
            false
        }
        Err(_) => {
            tracing::warn!("the API server did not say within 5 s whether the probe DaemonSet is being deleted; enforcement stays pinned");
            false
        }
    }
}

/// What cluster mode shares with housekeeping once it has started.
struct ClusterState {
    policies: kube::runtime::reflector::Store<api::DockerSocketPolicy>,
    verdicts: Arc<crate::cluster::verdicts::ClusterVerdicts>,
    /// This node's DockerSocketProbe report, when the probe knows its pod.
    report: Option<watch::Sender<Option<api::DockerSocketProbeSpec>>>,
    node: String,
    client: kube::Client,
    /// The probe's own namespace, when the downward API gives it.
    namespace: Option<String>,
}

/// This node's enforcer (none where it cannot enforce or is not asked to), where arming finds
/// the kernel's BTF and pins the links, and the backend that enforces.
struct NodeEnforcement {
    enforcer: Option<Arc<Mutex<Enforcer>>>,
    btf: PathBuf,
    pin_dir: PathBuf,
    backend: BackendKind,
}

/// Cluster mode: arms enforcement while an accepted `Enforce` policy applies and disarms it
/// when none does (then an earlier probe's pins go too), and reports what the node enforces.
/// Until the caches have synced nothing changes: an earlier probe's pins keep enforcing.
fn follow_enforce_policies(
    enforcer: Option<&mut Enforcer>,
    cluster: &ClusterState,
    at: &NodeEnforcement,
    metrics: &Metrics,
    refusal: &mut Option<String>,
) {
    if !cluster.verdicts.is_synced() {
        return;
    }
    let enforced = cluster.verdicts.enforced();
    let Some(enforcer) = enforcer else {
        report(
            cluster,
            at,
            None,
            &enforced,
            Some(NO_CGROUP_V2).filter(|_| !enforced.is_empty()),
        );
        return;
    };
    let wanted = !enforced.is_empty();
    match (wanted, enforcer.armed().is_some()) {
        (true, false) => match enforcer.arm(&at.btf, Some(&at.pin_dir)) {
            Ok(armed) => {
                metrics
                    .enforcing
                    .with_label_values(&[armed.blocks_with])
                    .set(1);
                *refusal = None;
            }
            Err(e) => {
                let why = backend::sentence(&e);
                if refusal.as_deref() != Some(why.as_str()) {
                    tracing::error!(error = %why, "an Enforce policy applies but this node cannot enforce; it audits");
                }
                *refusal = Some(why);
            }
        },
        (false, armed) => {
            if armed {
                if let Err(e) = enforcer.disarm() {
                    tracing::warn!(error = %backend::sentence(&e), "turning enforcement off failed");
                }
                metrics.enforcing.reset();
            }
            // An earlier probe's pins (this one's are gone with disarm).
            match backend::pin::remove_all(&at.pin_dir) {
                Ok(0) => {}
                Ok(removed) => {
                    tracing::info!(
                        removed,
                        "no Enforce policy: removed an earlier probe's pinned enforcement"
                    )
                }
                Err(e) => tracing::warn!(error = %e, "removing pinned enforcement failed"),
            }
        }
        (true, true) => {}
    }
    let armed = enforcer.armed();
    report(
        cluster,
        at,
        armed,
        &enforced,
        refusal.as_deref().filter(|_| armed.is_none()),
    );
}

/// Sends this node's report when it differs from the last one sent.
fn report(
    cluster: &ClusterState,
    at: &NodeEnforcement,
    armed: Option<&enforce::Armed>,
    enforced: &[crate::cluster::verdicts::Enforced],
    reason: Option<&str>,
) {
    let Some(tx) = &cluster.report else { return };
    let spec = api::DockerSocketProbeSpec {
        node: cluster.node.clone(),
        backend: at.backend.to_string(),
        enforcing: armed.is_some(),
        blocks_with: armed.map(|a| a.blocks_with.to_string()),
        pinned: armed.is_some_and(|a| a.not_pinned.is_none()),
        policies: armed
            .map(|_| {
                enforced
                    .iter()
                    .map(|e| api::EnforcedPolicy {
                        name: e.name.clone(),
                        generation: e.generation,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        reason: reason.map(|r| api::truncate(r, 1000)),
    };
    tx.send_if_modified(|last| {
        if last.as_ref() == Some(&spec) {
            return false;
        }
        *last = Some(spec);
        true
    });
}

/// Re-arms sockets (the configured ones and those policies name) and exports the kernel's
/// counters and program statistics, every [`REARM_INTERVAL`].
fn spawn_housekeeping(
    armer: Arc<Mutex<Armer>>,
    backend: Arc<Mutex<Backend>>,
    metrics: Arc<Metrics>,
    status: &Arc<Status>,
    cluster: Arc<std::sync::OnceLock<ClusterState>>,
    at: NodeEnforcement,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let mut policy_sockets = PolicySockets::default();
    // Why this node last could not enforce (said once per reason).
    let mut refusal: Option<String> = None;
    let alive = status.task("housekeeping");
    let status = status.clone();
    tokio::spawn(async move {
        let _alive = alive;
        let mut tick = tokio::time::interval(REARM_INTERVAL);
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            ticks += 1;
            if let Some(enforcer) = at
                .enforcer
                .as_ref()
                .filter(|_| ticks.is_multiple_of(RESYNC_TICKS))
            {
                // Catches what a lost cgroup_mkdir event missed, and forgets cgroups gone.
                enforcer.lock().unwrap_or_else(|p| p.into_inner()).resync();
            }
            if let Some(cluster) = cluster.get() {
                follow_policy_sockets(&mut policy_sockets, &cluster.policies, &armer);
                let mut enforcer = at
                    .enforcer
                    .as_ref()
                    .map(|e| e.lock().unwrap_or_else(|p| p.into_inner()));
                follow_enforce_policies(
                    enforcer.as_deref_mut(),
                    cluster,
                    &at,
                    &metrics,
                    &mut refusal,
                );
            }
            if let Some(enforcer) = &at.enforcer {
                enforcer.lock().unwrap_or_else(|p| p.into_inner()).tick();
            }
            rearm(&armer, &backend, &metrics, &status);
            let (stats, counts) = {
                let backend = backend.lock().unwrap_or_else(|p| p.into_inner());
                (backend.program_stats(), backend.kernel_counts())
            };
            for (program, runs, time) in stats {
                metrics
                    .program_runs
                    .with_label_values(&[&program])
                    .set(runs as i64);
                metrics
                    .program_run_seconds
                    .with_label_values(&[&program])
                    .set(time.as_secs_f64());
            }
            let lost = metrics.record_kernel_counts(counts);
            if lost > 0 {
                tracing::warn!(lost, "a kernel ring buffer was full: events lost");
            }
        }
    })
}

/// Why a node without a cgroup v2 hierarchy cannot enforce.
const NO_CGROUP_V2: &str =
    "cannot enforce: no cgroup v2 hierarchy here (verdicts are kept by cgroup v2 id)";

/// This node's enforcer. Standalone with `--enforce` it is armed at once (every container
/// refused), and a node that cannot enforce says why and the probe exits: `--enforce` never
/// quietly audits. In a cluster it starts unarmed; housekeeping arms and disarms it as
/// `Enforce` policies come and go (an earlier probe's pins enforce meanwhile). Standalone
/// without `--enforce`: none, and an earlier probe's pins are removed.
fn start_enforcer(
    args: &RunArgs,
    backend: &Arc<Mutex<Backend>>,
    metrics: &Metrics,
    host_pid_ns: u32,
) -> anyhow::Result<Option<Arc<Mutex<Enforcer>>>> {
    let cluster = cluster_mode(args);
    if args.enforce && cluster {
        bail!("--enforce is for standalone runs; in a cluster, DockerSocketPolicy objects with mode: Enforce decide");
    }
    if !args.enforce && !cluster {
        let removed = backend::pin::remove_all(&args.pin_dir).unwrap_or(0);
        if removed > 0 {
            tracing::info!(removed, dir = %args.pin_dir.display(), "not enforcing: removed an earlier probe's pinned enforcement");
        }
        return Ok(None);
    }
    let Some(mount) = crate::attribution::find_cgroup2_mount(&args.host_root) else {
        if args.enforce {
            bail!(NO_CGROUP_V2);
        }
        tracing::warn!("{NO_CGROUP_V2}; Enforce policies are audited on this node");
        return Ok(None);
    };
    let own = enforce::own_cgroup(&mount, own_pid(host_pid_ns).unwrap_or(std::process::id()));
    match own {
        // Before this probe touches a runtime socket (the CRI socket, in a cluster).
        Some(id) => {
            let through = backend::pin::allow_in_pinned(&args.pin_dir, id);
            if through > 0 {
                tracing::info!(
                    cgroup = id,
                    programs = through,
                    "let this probe through the enforcement an earlier probe left pinned"
                );
            }
        }
        None => {
            tracing::warn!("the probe's own cgroup was not found: its own connects may be refused")
        }
    }
    // In a cluster nothing is judged until the caches exist (`set_judge`).
    let judge = if cluster {
        Box::new(|_: &crate::cgroup::ContainerRef| None)
    } else {
        enforce::block_every_container()
    };
    let mut enforcer = Enforcer::new(backend.clone(), mount, own, judge);
    if args.enforce {
        let armed = enforcer
            .arm(&args.btf, Some(&args.pin_dir))
            .map_err(|e| anyhow::anyhow!(backend::sentence(&e)))
            .context("cannot enforce on this node")?;
        metrics
            .enforcing
            .with_label_values(&[armed.blocks_with])
            .set(1);
    }
    Ok(Some(Arc::new(Mutex::new(enforcer))))
}

/// The cgroup v2 index, walked once; cgroup creation events keep it current.
fn index_cgroups(host_root: &std::path::Path) -> CgroupIndex {
    let mut cgroups = CgroupIndex::new(host_root);
    match cgroups.mount() {
        Some(m) => tracing::info!(cgroup2 = %m.display(), "attributing by cgroup v2 ids"),
        None => tracing::warn!(
            "no cgroup v2 hierarchy found: container attribution falls back to /proc"
        ),
    }
    cgroups.walk();
    cgroups
}

/// The HTTP output's sender and task, when `--http-output` is set; whichever sink reports
/// findings holds the sender's queue.
fn start_http_output(
    args: &RunArgs,
    metrics: &Arc<Metrics>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<(Option<http::HttpOutput>, Option<JoinHandle<()>>)> {
    Ok(match &args.http_output {
        Some(url) => {
            let config = http::HttpConfig::new(
                url.clone(),
                args.http_output_headers.clone(),
                args.http_output_queue,
            );
            let (output, task) = http::start(config, metrics.clone(), stop.clone())?;
            (Some(output), Some(task))
        }
        None => (None, None),
    })
}

/// The sink the reader hands findings to. Cluster mode (asked for, or inside a pod unless
/// `--standalone`): the forwarder to the finding writer, whose task comes back too, and the
/// policy cache is published for housekeeping. Else stdout and the HTTP output directly.
async fn start_sink(
    args: &RunArgs,
    node: &str,
    http_output: Option<http::HttpOutput>,
    metrics: &Arc<Metrics>,
    status: &Arc<Status>,
    cluster: &std::sync::OnceLock<ClusterState>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<(Box<dyn FindingSink + Send>, Option<JoinHandle<()>>)> {
    let json = match args.format {
        OutputFormat::Json => true,
        OutputFormat::Text => false,
        OutputFormat::Auto => !std::io::stdout().is_terminal(),
    };
    if cluster_mode(args) {
        // std's stdout is line-buffered: each finding's line is out as soon as it is decided.
        let outputs = Outputs::new(Box::new(std::io::stdout()), json, http_output);
        let (tx, task, state) =
            start_cluster_sink(args, node, metrics.clone(), status, stop.clone(), outputs).await?;
        let _ = cluster.set(state);
        Ok((
            Box::new(ClusterForwarder::new(tx, metrics.clone())),
            Some(task),
        ))
    } else {
        // Flushed after each drain of the ring buffer.
        let out = Box::new(std::io::BufWriter::new(std::io::stdout()));
        let sink = StandaloneSink {
            outputs: Outputs::new(out, json, http_output),
            metrics: metrics.clone(),
        };
        Ok((Box::new(sink), None))
    }
}

/// The reader: turns ring buffer records into findings until stopped, then drains.
fn spawn_reader(
    rings: backend::Rings,
    pipeline: Pipeline<Box<dyn FindingSink + Send>>,
    status: &Arc<Status>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<anyhow::Result<()>> {
    let alive = status.task("reader");
    tokio::spawn(async move {
        let _alive = alive;
        read_events(rings, pipeline, stop).await
    })
}

/// The self-test: [`self_test_loop`] until stopped.
fn spawn_self_test(
    canary: Arc<Canary>,
    backend: BackendKind,
    status: &Arc<Status>,
    metrics: &Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let alive = status.task("self-test");
    let (status, metrics) = (status.clone(), metrics.clone());
    tokio::spawn(async move {
        let _alive = alive;
        tokio::select! {
            _ = self_test_loop(canary, backend, status, metrics) => {}
            _ = stop.changed() => {}
        }
    })
}

/// At start: the backend's programs must report a connect to the canary within the deadline.
/// Only the canary is armed yet, so nothing else of interest is in the ring.
fn prove(backend: &mut Backend, ring: &mut RingBuf<MapData>, canary: &Canary) -> bool {
    use crate::sockets::WatchedSet;
    if let Err(e) = backend.arm(&canary.id) {
        tracing::warn!(error = %format!("{e:#}"), "arming the canary failed");
        return false;
    }
    if let Err(e) = canary.poke() {
        tracing::warn!(error = %format!("{e:#}"), "the self-test could not connect");
        return false;
    }
    let deadline = std::time::Instant::now() + selftest::DEADLINE;
    let before = canary.seen();
    while std::time::Instant::now() < deadline {
        while let Some(record) = ring.next() {
            if let Ok(crate::event::Decoded::Socket(ev)) = crate::event::decode(&record) {
                canary.observe(&ev);
            }
        }
        if canary.seen() > before {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Every [`selftest::INTERVAL`]: connect to the canary and expect the event back through the
/// running pipeline; readiness follows the outcome.
async fn self_test_loop(
    canary: Arc<Canary>,
    backend: BackendKind,
    status: Arc<Status>,
    metrics: Arc<Metrics>,
) {
    let mut tick = tokio::time::interval(selftest::INTERVAL);
    tick.tick().await; // the start-up proof was the first
    loop {
        tick.tick().await;
        let before = canary.seen();
        if let Err(e) = canary.poke() {
            tracing::warn!(error = %format!("{e:#}"), "the self-test could not connect");
        }
        let deadline = tokio::time::Instant::now() + selftest::DEADLINE;
        while canary.seen() == before && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if canary.seen() > before {
            metrics
                .self_test_last_success
                .set(canary.last_success() as i64);
            status.not_ready("self-test", None);
        } else {
            metrics.self_test_failures.inc();
            status.not_ready("self-test", Some(selftest::blind_reason(backend)));
        }
    }
}

/// Starts cluster mode: caches of this node's pods, namespaces and policies, CRI clients,
/// the finding writer and the task that feeds it. Returns the policy cache too, whose sockets
/// the armer follows.
async fn start_cluster_sink(
    args: &RunArgs,
    node: &str,
    metrics: Arc<Metrics>,
    status: &Arc<Status>,
    shutdown: watch::Receiver<bool>,
    outputs: Outputs,
) -> anyhow::Result<(
    tokio::sync::mpsc::Sender<crate::cluster::Batch>,
    tokio::task::JoinHandle<()>,
    ClusterState,
)> {
    use k8s_openapi::api::core::v1::{Namespace, Pod};
    use kube::{core::PartialObjectMeta, runtime::watcher};
    if args.node.is_none() {
        bail!("cluster mode needs this node's name: set NODE_NAME (the downward API's spec.nodeName) or --node");
    }
    let client = kube::Client::try_default()
        .await
        .context("cluster mode: cannot reach the Kubernetes API (no in-cluster service account and no kubeconfig)")?;
    let state_client = client.clone();
    let pod_index = PodIndex::default();
    let pods = spawn_reflector(
        kube::Api::<Pod>::all(client.clone()),
        watcher::Config::default().fields(&format!("spec.nodeName={node}")),
        status.task("pod cache"),
        {
            let index = pod_index.clone();
            move |event| index.apply_watcher_event(event)
        },
    );
    // Metadata only (labels are what namespace selectors read): same list/watch permission,
    // smaller objects.
    let namespaces = spawn_reflector(
        kube::Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        watcher::Config::default(),
        status.task("namespace cache"),
        |_| {},
    );
    let policies = spawn_reflector(
        kube::Api::<api::DockerSocketPolicy>::all(client.clone()),
        watcher::Config::default(),
        status.task("policy cache"),
        |_| {},
    );
    // Ready, and judging findings, only once all three caches have listed once.
    status.not_ready(
        "caches",
        Some("the pod, namespace and policy caches have not synced yet".into()),
    );
    let verdicts = Arc::new(crate::cluster::verdicts::ClusterVerdicts::new(
        pods.clone(),
        pod_index.clone(),
        namespaces.clone(),
        policies.clone(),
    ));
    let synced = {
        let (pods, namespaces, policies, status, verdicts) = (
            pods.clone(),
            namespaces.clone(),
            policies.clone(),
            status.clone(),
            verdicts.clone(),
        );
        async move {
            let _ = tokio::join!(
                pods.wait_until_ready(),
                namespaces.wait_until_ready(),
                policies.wait_until_ready()
            );
            verdicts.mark_synced();
            status.not_ready("caches", None);
        }
    };
    let cri_paths: Vec<PathBuf> = if args.cri_sockets.is_empty() {
        DEFAULT_CRI_SOCKETS
            .iter()
            .map(|p| args.host_root.join(p.trim_start_matches('/')))
            .filter(|p| p.exists())
            .collect()
    } else {
        args.cri_sockets.clone()
    };
    let mut cri: Vec<Box<dyn IdentitySource>> = Vec::new();
    for path in cri_paths {
        match CriClient::new(&path) {
            Ok(mut c) => {
                match c.version().await {
                    Ok((runtime, version)) => {
                        tracing::info!(socket = %path.display(), %runtime, %version, "CRI fallback for attribution")
                    }
                    Err(e) => {
                        tracing::warn!(socket = %path.display(), error = %e, "CRI socket not answering yet; will retry on use")
                    }
                }
                cri.push(Box::new(c));
            }
            Err(e) => tracing::warn!(socket = %path.display(), error = %e, "CRI socket unusable"),
        }
    }
    let writer = FindingWriter::new(
        client.clone(),
        WriterConfig {
            per_key_interval: Duration::from_secs_f64(args.write_interval_seconds.max(0.0)),
            rate_per_sec: args.write_rate.max(0.1),
            burst: args.write_burst.max(1.0),
            max_keys: args.max_pending_findings.max(1),
            node: node.to_string(),
            ..Default::default()
        },
        metrics.clone(),
    );
    let enricher = Enricher {
        pods,
        pod_index,
        namespaces,
        policies: policies.clone(),
        client: Some(client.clone()),
        cri,
        owners: OwnerResolver::new(Some(client)),
    };
    let sink = ClusterSink::new(enricher, writer, metrics, node.to_string(), outputs);
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let alive = status.task("finding writer");
    let sink_shutdown = shutdown.clone();
    let task = tokio::spawn(async move {
        let _alive = alive;
        run_sink(rx, sink, synced, sink_shutdown, Duration::from_secs(5)).await
    });
    tracing::info!(node, "cluster mode: writing DockerAbuseFinding objects");
    let report = match (&args.pod_name, &args.pod_namespace, &args.pod_uid) {
        (Some(name), Some(namespace), Some(uid)) => {
            let pod = crate::cluster::report::OwnPod {
                namespace: namespace.clone(),
                name: name.clone(),
                uid: uid.clone(),
            };
            let (tx, _task) = crate::cluster::report::spawn(
                state_client.clone(),
                pod,
                node.to_string(),
                shutdown.clone(),
            );
            Some(tx)
        }
        _ => {
            tracing::warn!("POD_NAME, POD_NAMESPACE or POD_UID unset: what this node enforces is not reported (no DockerSocketProbe), so no Enforce policy reads as enforced");
            None
        }
    };
    Ok((
        tx,
        task,
        ClusterState {
            policies,
            verdicts,
            report,
            node: node.to_string(),
            client: state_client,
            namespace: args.pod_namespace.clone(),
        },
    ))
}

/// A cache of `api`'s objects; `on_event` sees each watch event after the cache took it.
fn spawn_reflector<K>(
    api: kube::Api<K>,
    config: kube::runtime::watcher::Config,
    alive: TaskGuard,
    mut on_event: impl FnMut(&kube::runtime::watcher::Event<K>) + Send + 'static,
) -> kube::runtime::reflector::Store<K>
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    use futures::StreamExt;
    use kube::runtime::{reflector, watcher, WatchStreamExt};
    let (store, writer) = reflector::store();
    let stream = reflector(writer, watcher(api, config).default_backoff());
    tokio::spawn(async move {
        let _alive = alive;
        let mut stream = std::pin::pin!(stream);
        while let Some(r) = stream.next().await {
            match r {
                Ok(event) => on_event(&event),
                Err(e) => tracing::warn!(error = %e, "watching the API failed; retrying"),
            }
        }
    });
    store
}

/// The host's mount and PID namespaces: those of pid 1, or, where pid 1 cannot be inspected
/// (a sandbox that hides it), those of pid 2 — kthreadd, a kernel thread, always in the
/// initial namespaces — or last our own, when we run on the host's /proc.
fn host_namespaces(proc_root: &std::path::Path) -> anyhow::Result<(u32, u32)> {
    let of = |pid: &str| -> std::io::Result<(u32, u32)> {
        Ok((
            procinfo::namespace_inum(&proc_root.join(pid).join("ns/mnt"))?,
            procinfo::namespace_inum(&proc_root.join(pid).join("ns/pid"))?,
        ))
    };
    let first_error = match of("1") {
        Ok(ns) => return Ok(ns),
        Err(e) => e,
    };
    let kthreadd = std::fs::read_to_string(proc_root.join("2/comm")).unwrap_or_default();
    if kthreadd.trim() == "kthreadd" {
        if let Ok(ns) = of("2") {
            tracing::info!(error = %first_error, "pid 1's namespaces are hidden; using kthreadd's (pid 2)");
            return Ok(ns);
        }
    }
    if proc_root == std::path::Path::new("/proc") {
        tracing::warn!(error = %first_error, "cannot read pid 1's namespaces; taking this process's as the host's");
        return Ok(of("self")?);
    }
    Err(first_error).context(format!(
        "reading the host's namespaces from {}/1/ns (in a pod: hostPID: true and --host-root)",
        proc_root.display()
    ))
}

/// This process's id as the kernel reports callers (in the host's PID namespace), when the
/// probe runs there (on the host, or in a pod with `hostPID: true`).
fn own_pid(host_pid_ns: u32) -> Option<u32> {
    let ours = procinfo::namespace_inum(std::path::Path::new("/proc/self/ns/pid")).ok();
    if ours == Some(host_pid_ns) {
        Some(std::process::id())
    } else {
        tracing::warn!("the probe runs outside the host's PID namespace: its own connects to runtime sockets may be reported");
        None
    }
}

/// Hands the armer the sockets policies name when they changed since the last pass.
fn follow_policy_sockets(
    follow: &mut PolicySockets,
    policies: &kube::runtime::reflector::Store<api::DockerSocketPolicy>,
    armer: &Mutex<Armer>,
) {
    if let Some(specs) = follow.update(&policies.state()) {
        tracing::info!(
            sockets = specs.len(),
            "sockets named by policies changed; re-arming"
        );
        armer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_policy_specs(specs);
    }
}

fn rearm(armer: &Mutex<Armer>, backend: &Mutex<Backend>, metrics: &Metrics, status: &Status) {
    let mut armer = armer.lock().unwrap_or_else(|p| p.into_inner());
    let mut backend = backend.lock().unwrap_or_else(|p| p.into_inner());
    for event in armer.refresh(&mut *backend) {
        match event {
            ArmEvent::Armed(s) => tracing::info!(
                path = %s.host_path.display(), runtime = %s.runtime, inode = s.id.ino,
                device = %s.id.dev_string(), "watching socket"
            ),
            ArmEvent::Disarmed(s) => tracing::info!(
                path = %s.host_path.display(), inode = s.id.ino, "socket gone, replaced or no longer named; disarmed"
            ),
            ArmEvent::Missing { path, reason } => tracing::info!(
                path = %path.display(), reason = %reason, "socket not present; will arm it when it appears"
            ),
        }
    }
    metrics.sockets_armed.set(armer.armed_count() as i64);
    status.not_ready(
        "sockets",
        (armer.armed_count() == 0).then(|| {
            "no runtime socket found on this node: nothing to watch (sockwarden_probe_sockets_armed is 0)".to_string()
        }),
    );
}

/// Reads both rings until stopped, then drains them. Each turn takes at most [`DRAIN_BATCH`]
/// records from a ring, so a flood on the events ring delays connects by at most one batch.
/// Before connects, the events ring gets its turn: a container's `cgroup_mkdir` was queued
/// before its first connect, and attributing that connect needs it (the container may be
/// gone by now).
async fn read_events(
    rings: backend::Rings,
    mut pipeline: Pipeline<Box<dyn FindingSink + Send>>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let register = |ring| {
        // SAFETY: the ring buffer owns its fd and outlives this registration (both end here).
        unsafe { AsyncFd::register(ring) }
            .map_err(|e| anyhow::anyhow!("polling a ring buffer: {e}"))
    };
    let mut connects = register(rings.connects)?;
    let mut events = register(rings.events)?;
    loop {
        tokio::select! {
            biased;
            guard = connects.readable_mut() => {
                let mut guard = guard?;
                drain(events.get_mut(), &mut pipeline);
                // Left ready while records remain: the kernel wakes us again only once we
                // have caught up.
                if drain(guard.get_inner_mut(), &mut pipeline) {
                    guard.clear_ready();
                }
            }
            guard = events.readable_mut() => {
                let mut guard = guard?;
                // Left ready while records remain: the kernel wakes us again only once we
                // have caught up.
                if drain(guard.get_inner_mut(), &mut pipeline) {
                    guard.clear_ready();
                }
            }
            _ = stop.changed() => break,
        }
    }
    // What is queued now; a flood that goes on is not waited for.
    for ring in [events.get_mut(), connects.get_mut()] {
        for _ in 0..FINAL_DRAIN_BATCHES {
            if drain(ring, &mut pipeline) {
                break;
            }
        }
    }
    Ok(())
}

/// Most records taken from one ring in one turn.
const DRAIN_BATCH: usize = 4096;
/// At shutdown, more than a full ring's worth of batches.
const FINAL_DRAIN_BATCHES: usize = 8;

/// Longest a turn handles records before handing its findings over: a ring that never
/// empties must not hold back the writer.
const HAND_OVER_EVERY: Duration = Duration::from_millis(200);

/// Handles up to [`DRAIN_BATCH`] records, or as many as fit in [`HAND_OVER_EVERY`], then hands
/// the findings over; true when the ring is empty.
fn drain<S: FindingSink>(ring: &mut RingBuf<MapData>, pipeline: &mut Pipeline<S>) -> bool {
    let mut emptied = false;
    let started = std::time::Instant::now();
    for i in 0..DRAIN_BATCH {
        if i % 64 == 63 && started.elapsed() >= HAND_OVER_EVERY {
            break;
        }
        match ring.next() {
            Some(item) => {
                pipeline.handle(&item);
            }
            None => {
                emptied = true;
                break;
            }
        }
    }
    pipeline.flush();
    emptied
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
fn raise_memlock_limit() -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
