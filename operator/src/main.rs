//! `sockwarden-operator`: reconciles `DockerSocketPolicy` objects, rolls out the probe
//! DaemonSet, publishes Events and status, and garbage-collects findings.
mod conditions;
mod context;
mod daemonset;
mod events;
mod finding_controller;
mod leader;
mod metrics;
mod policy_controller;
mod server;
#[cfg(test)]
mod testing;
mod validate;

use std::{
    net::SocketAddr,
    sync::{atomic::AtomicBool, Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use api::{DockerAbuseFinding, DockerSocketPolicy};
use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use k8s_openapi::{
    api::{apps::v1::DaemonSet, coordination::v1::Lease},
    jiff::Timestamp,
};
use kube::{
    api::{Patch, PatchParams},
    runtime::{reflector::ObjectRef, watcher, Controller},
    Api, Client,
};

use crate::{
    context::{Context, MANAGER},
    daemonset::{probe_daemonset, ProbeSettings, NAME},
    events::EventPublisher,
    leader::LeaderElector,
    metrics::Metrics,
};

#[derive(Parser)]
#[command(
    name = "sockwarden-operator",
    version,
    about = "Runs sockwarden in a Kubernetes cluster"
)]
struct Cli {
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Connect to the cluster and reconcile until SIGTERM.
    Run(RunArgs),
    /// Print the probe DaemonSet this operator would apply (no cluster needed), for review
    /// and security scanning.
    RenderDaemonset(ProbeArgs),
}

#[derive(clap::Args, Clone)]
struct ProbeArgs {
    /// Namespace of the operator and the probe DaemonSet.
    #[arg(long, env = "POD_NAMESPACE", default_value = "sockwarden-system")]
    namespace: String,
    #[arg(long, default_value_t = ProbeSettings::default().image)]
    probe_image: String,
    #[arg(long, default_value = "IfNotPresent")]
    probe_image_pull_policy: String,
    #[arg(long, default_value = "sockwarden-probe")]
    probe_service_account: String,
    /// Priority class of probe pods; empty for none.
    #[arg(long, default_value = "system-node-critical")]
    probe_priority_class: String,
    /// Let probes detect opens through syscall tracepoints where no LSM backend exists (costs every syscall).
    #[arg(long)]
    probe_detect_open: bool,
}

impl ProbeArgs {
    fn settings(&self) -> ProbeSettings {
        ProbeSettings {
            namespace: self.namespace.clone(),
            image: self.probe_image.clone(),
            image_pull_policy: self.probe_image_pull_policy.clone(),
            service_account: self.probe_service_account.clone(),
            priority_class: (!self.probe_priority_class.is_empty())
                .then(|| self.probe_priority_class.clone()),
            detect_open: self.probe_detect_open,
            ..Default::default()
        }
    }
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    probe: ProbeArgs,
    /// This replica's identity in leader election.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Run without leader election (a single replica only).
    #[arg(long)]
    no_leader_election: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sockwarden-operator: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let args = match cli.command {
        Command::Run(args) => args,
        Command::RenderDaemonset(probe) => {
            let ds = probe_daemonset(&probe.settings(), &[]);
            match serde_yaml_ng::to_string(&ds) {
                Ok(yaml) => {
                    print!("{yaml}");
                    return std::process::ExitCode::SUCCESS;
                }
                Err(e) => {
                    eprintln!("sockwarden-operator: rendering the DaemonSet failed: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            }
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sockwarden-operator: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let client = Client::try_default().await.context(
        "cannot reach a Kubernetes API: no kubeconfig found (set KUBECONFIG or ~/.kube/config) and not running in a pod",
    )?;
    let identity = args
        .identity
        .clone()
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "sockwarden-operator".into());
    let metrics = Arc::new(Metrics::new()?);
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let health = server::Health {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    tokio::spawn(async move { axum::serve(listener, server::router(health)).await });

    let settings = args.probe.settings();
    let namespace = args.probe.namespace.clone();

    // Wait for leadership; keep renewing it in the background, and stop if it is lost.
    ready.store(true, std::sync::atomic::Ordering::Release);
    let mut lease = None;
    if !args.no_leader_election {
        let elector = Arc::new(LeaderElector::new(
            Api::<Lease>::namespaced(client.clone(), &namespace),
            "sockwarden-operator",
            &identity,
            Duration::from_secs(15),
        ));
        tracing::info!(%identity, "waiting for the leader lease");
        loop {
            match elector.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election: API error"),
            }
            tokio::time::sleep(elector.renew_interval()).await;
        }
        tracing::info!(%identity, "leading");
        metrics.leader.set(1);
        let renewing = elector.clone();
        let renewer = tokio::spawn(async move {
            let mut failures = 0;
            loop {
                tokio::time::sleep(renewing.renew_interval()).await;
                match renewing.try_acquire_or_renew().await {
                    Ok(true) => failures = 0,
                    Ok(false) => {
                        tracing::error!(
                            "leader lease lost to another replica; exiting so only one reconciles"
                        );
                        std::process::exit(1);
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(error = %e, failures, "renewing the leader lease failed");
                        if failures >= 2 {
                            tracing::error!("could not renew the leader lease in time; exiting");
                            std::process::exit(1);
                        }
                    }
                }
            }
        });
        lease = Some((elector, renewer));
    }

    let policies: Api<DockerSocketPolicy> = Api::all(client.clone());
    let findings: Api<DockerAbuseFinding> = Api::all(client.clone());
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), &namespace);

    // The probe runs (audit, built-in defaults) even before any policy exists.
    daemonsets
        .patch(
            NAME,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&probe_daemonset(&settings, &[])),
        )
        .await
        .context("applying the probe DaemonSet")?;

    let policy_controller = Controller::new(policies, watcher::Config::default());
    let policy_store = policy_controller.store();
    let finding_controller = Controller::new(findings.clone(), watcher::Config::default());
    let finding_store = finding_controller.store();
    let ctx = Arc::new(Context {
        client: client.clone(),
        events: EventPublisher::new(client.clone(), MANAGER, &identity),
        metrics: metrics.clone(),
        settings,
        policies: policy_store.clone(),
        findings: finding_store,
        evented: Mutex::new(Default::default()),
        started: Timestamp::now(),
    });
    let policy_loop = policy_controller
        .watches(
            findings,
            watcher::Config::default(),
            |f: DockerAbuseFinding| Some(ObjectRef::<DockerSocketPolicy>::new(&f.spec.policy)),
        )
        .watches(
            daemonsets,
            watcher::Config::default().fields(&format!("metadata.name={NAME}")),
            move |_ds: DaemonSet| {
                policy_store
                    .state()
                    .iter()
                    .map(|p| ObjectRef::from_obj(p.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal()
        .run(
            policy_controller::reconcile,
            policy_controller::error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});
    let finding_loop = finding_controller
        .shutdown_on_signal()
        .run(
            finding_controller::reconcile,
            finding_controller::error_policy,
            ctx,
        )
        .for_each(|_| async {});
    tracing::info!("reconciling policies and findings");
    tokio::join!(policy_loop, finding_loop);

    // Shutting down: stop renewing and hand the lease over at once.
    if let Some((elector, renewer)) = lease {
        renewer.abort();
        let _ = renewer.await;
        match elector.release().await {
            Ok(true) => tracing::info!(%identity, "released the leader lease"),
            Ok(false) => tracing::info!("the leader lease was no longer ours to release"),
            Err(e) => {
                tracing::warn!(error = %e, "releasing the leader lease failed; another replica takes over when it runs out")
            }
        }
        metrics.leader.set(0);
    }
    tracing::info!("shut down");
    Ok(())
}
