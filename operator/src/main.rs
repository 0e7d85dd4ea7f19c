//! `sockwarden-operator`: reconciles `DockerSocketPolicy` objects, rolls out the probe
//! DaemonSet, publishes Events and status, and garbage-collects findings.
//!
//! Tasks once leading: the lease renewer ([`leader`]), the DaemonSet watch that keeps the
//! probe DaemonSet as configured and fills its cache ([`rollout`]), the policy controller
//! (status from that cache, reconciled again on every DaemonSet change) and the finding
//! controller (Events, TTL). SIGTERM stops the controllers, then releases the lease.
mod conditions;
mod context;
mod crds;
mod daemonset;
mod events;
mod finding_controller;
mod leader;
mod metrics;
mod policy_controller;
mod probe_settings;
#[cfg(test)]
mod proptests;
mod retention;
mod rollout;
#[cfg(test)]
mod testing;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use api::{DockerAbuseFinding, DockerSocketPolicy, DockerSocketProbe};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, Deployment},
        coordination::v1::Lease,
    },
    jiff::Timestamp,
};
use kube::{
    runtime::{reflector, reflector::ObjectRef, watcher, Controller, WatchStreamExt},
    Api, Client,
};

use crate::{
    context::{Context, MANAGER},
    daemonset::{probe_daemonset, ApiServerAddr, ProbeSettings, NAME},
    events::EventPublisher,
    leader::LeaderElector,
    metrics::Metrics,
    probe_settings::ProbePodSettings,
    rollout::Rollout,
};
use runtime::{admin, status::Status};

#[derive(Parser)]
#[command(
    name = "sockwarden-operator",
    version,
    about = "Runs sockwarden in a Kubernetes cluster"
)]
struct Cli {
    #[command(flatten)]
    log: runtime::logging::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Connect to the cluster and reconcile until SIGTERM.
    Run(RunArgs),
    /// Print the probe DaemonSet `run` would apply with the same flags (no cluster needed),
    /// for review and security scanning. `run` adds the owner reference to
    /// --owner-deployment, whose uid only the cluster knows.
    RenderDaemonset(RunArgs),
}

/// The operator's configuration of the probe DaemonSet; `run` and `render-daemonset` share
/// it, so the rendered DaemonSet is the applied one.
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
    /// Run probe pods in the node's network (hostNetwork, ClusterFirstWithHostNet DNS,
    /// health checks over 127.0.0.1), for clusters where pods reach the API server only
    /// directly.
    #[arg(long)]
    probe_host_network: bool,
    /// HOST:PORT probes use for the API server (sets KUBERNETES_SERVICE_HOST/_PORT in the
    /// probe container); IPv6 as [ADDR]:PORT. Default: the `kubernetes` Service.
    #[arg(long, value_name = "HOST:PORT")]
    probe_api_server: Option<ApiServerAddr>,
    /// YAML or JSON file with the probe pods' node selector, tolerations, affinity,
    /// resources, annotations, labels, image pull secrets, extra arguments and environment,
    /// and HTTP output (the chart's ConfigMap sockwarden-probe-settings). Read once at
    /// start; a bad file stops the operator, naming the field.
    #[arg(long, value_name = "FILE", value_parser = read_probe_settings)]
    probe_settings: Option<ProbePodSettings>,
    /// Name of the operator's Deployment (in --namespace); it becomes the probe DaemonSet's
    /// owner, so deleting the operator deletes the probes. Empty: no owner.
    #[arg(long, default_value = "", value_name = "NAME")]
    owner_deployment: String,
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
            host_network: self.probe_host_network,
            api_server: self.probe_api_server.clone(),
            pod: self.probe_settings.clone().unwrap_or_default(),
            ..Default::default()
        }
    }
}

/// `--probe-settings`: read and checked while the flags are parsed, so neither `run` nor
/// `render-daemonset` gets past a bad file.
fn read_probe_settings(path: &str) -> Result<ProbePodSettings, String> {
    ProbePodSettings::from_file(std::path::Path::new(path))
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
    cli.log.init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sockwarden-operator: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let args = match cli.command {
        Command::Run(args) => args,
        Command::RenderDaemonset(args) => {
            if !args.probe.owner_deployment.is_empty() {
                eprintln!(
                    "sockwarden-operator: `run` also sets an ownerReference to Deployment {}/{} (its uid is only known in the cluster)",
                    args.probe.namespace, args.probe.owner_deployment
                );
            }
            let ds = probe_daemonset(&args.probe.settings(), None);
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
        .or_else(runtime::host::name)
        .unwrap_or_else(|| "sockwarden-operator".into());
    let metrics = Arc::new(Metrics::new()?);
    // Ready as soon as it serves: standbys waiting for the lease are ready too.
    let status = Arc::new(Status::starting("operator", "starting".into()));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    // Serves until the process exits.
    admin::serve(
        listener,
        status.clone(),
        metrics.registry.clone(),
        std::future::pending(),
    );

    let settings = args.probe.settings();
    let namespace = args.probe.namespace.clone();
    status.not_ready("operator", None);

    // The DaemonSet is rendered once, from configuration only (see rollout.rs).
    let owner = if args.probe.owner_deployment.is_empty() {
        None
    } else {
        rollout::owner_reference(
            &Api::<Deployment>::namespaced(client.clone(), &namespace),
            &args.probe.owner_deployment,
            Duration::from_secs(1),
            Duration::from_secs(30),
        )
        .await
    };
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), &namespace);
    let rollout = Arc::new(Rollout::new(
        daemonsets.clone(),
        probe_daemonset(&settings, owner.as_ref()),
    ));

    // Wait for leadership; keep renewing it in the background, and stop if it is lost.
    let mut lease = None;
    if !args.no_leader_election {
        let elector = Arc::new(
            LeaderElector::new(
                Api::<Lease>::namespaced(client.clone(), &namespace),
                "sockwarden-operator",
                &identity,
                Duration::from_secs(15),
            )
            .owned_by(owner.clone()),
        );
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

    // The CRDs in the shape this API server supports (CEL rules from 1.25 on).
    if let Err(e) = crds::apply(&client).await {
        tracing::warn!(error = %e, "could not bring the CRDs up to date");
    }

    // The probe runs (audit, built-in defaults) even before any policy exists.
    rollout
        .apply()
        .await
        .context("applying the probe DaemonSet")?;

    // The DaemonSet watch: fills the cache policy status reads, puts a drifted or deleted
    // DaemonSet back, and asks for every policy to be reconciled when it changes.
    let (daemonset_store, daemonset_writer) = reflector::store();
    let (trigger_tx, trigger_rx) = futures::channel::mpsc::channel::<()>(1);
    // The probes' reports (what each node enforces): every change asks for every policy to
    // be reconciled too, as their Enforced condition reads them.
    let (probe_store, probe_writer) = reflector::store();
    let probe_watch = {
        let mut trigger_tx = trigger_tx.clone();
        let api: Api<DockerSocketProbe> = Api::namespaced(client.clone(), &namespace);
        tokio::spawn(async move {
            let events =
                reflector(probe_writer, watcher(api, watcher::Config::default())).default_backoff();
            futures::pin_mut!(events);
            while let Some(event) = events.next().await {
                match event {
                    Ok(_) => {
                        let _ = trigger_tx.try_send(());
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "watching the probes' reports failed; retrying")
                    }
                }
            }
        })
    };
    let watch_rollout = rollout.clone();
    let daemonset_watch = tokio::spawn(async move {
        let mut trigger_tx = trigger_tx;
        let events = reflector(
            daemonset_writer,
            watcher(
                daemonsets,
                watcher::Config::default().fields(&format!("metadata.name={NAME}")),
            ),
        )
        .default_backoff();
        futures::pin_mut!(events);
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => match watch_rollout.observe(&event).await {
                    // A full channel already holds a pending "reconcile all".
                    Ok(true) => {
                        let _ = trigger_tx.try_send(());
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "re-applying the probe DaemonSet failed; the next change of it retries")
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "watching the probe DaemonSet failed; retrying")
                }
            }
        }
    });
    if daemonset_store.wait_until_ready().await.is_err() {
        anyhow::bail!("the probe DaemonSet watch stopped before its first listing");
    }

    let policies: Api<DockerSocketPolicy> = Api::all(client.clone());
    let findings: Api<DockerAbuseFinding> = Api::all(client.clone());
    let policy_controller = Controller::new(policies, watcher::Config::default());
    let policy_store = policy_controller.store();
    let finding_controller = Controller::new(findings.clone(), watcher::Config::default());
    let finding_store = finding_controller.store();
    let ctx = Arc::new(Context {
        client: client.clone(),
        events: EventPublisher::new(client.clone(), MANAGER, &identity),
        metrics: metrics.clone(),
        settings,
        policies: policy_store,
        findings: finding_store,
        daemonsets: daemonset_store,
        probes: probe_store,
        evented: Mutex::new(Default::default()),
        started: Timestamp::now(),
    });
    let policy_loop = policy_controller
        .watches(
            findings,
            watcher::Config::default(),
            |f: DockerAbuseFinding| Some(ObjectRef::<DockerSocketPolicy>::new(&f.spec.policy)),
        )
        .reconcile_all_on(trigger_rx)
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

    // Shutting down: stop putting the DaemonSet back (an uninstall is deleting it), stop
    // renewing, and hand the lease over at once.
    daemonset_watch.abort();
    probe_watch.abort();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("sockwarden-operator").chain(args.iter().copied()))
    }

    fn probe_args(cli: Cli) -> ProbeArgs {
        match cli.command {
            Command::Run(a) | Command::RenderDaemonset(a) => a.probe,
        }
    }

    #[test]
    fn run_and_render_daemonset_take_the_same_flags_and_render_the_same_daemonset() {
        let flags = [
            "--namespace=sw",
            "--listen=0.0.0.0:9090",
            "--probe-image=reg/probe:1",
            "--probe-host-network",
            "--probe-api-server=127.0.0.1:16443",
            "--owner-deployment=sockwarden-operator",
            "--no-leader-election",
        ];
        let mut run = vec!["run"];
        run.extend(flags);
        let mut render = vec!["render-daemonset"];
        render.extend(flags);
        let run = probe_args(parse(&run).unwrap());
        let render = probe_args(parse(&render).unwrap());
        assert_eq!(run.settings(), render.settings());
        assert_eq!(run.owner_deployment, "sockwarden-operator");
        let settings = run.settings();
        assert!(settings.host_network);
        assert_eq!(
            settings.api_server,
            Some(ApiServerAddr {
                host: "127.0.0.1".into(),
                port: 16443
            })
        );
        let ds = serde_json::to_value(probe_daemonset(&settings, None)).unwrap();
        assert_eq!(ds["metadata"]["namespace"], "sw");
        assert_eq!(ds["spec"]["template"]["spec"]["hostNetwork"], true);
    }

    #[test]
    fn both_subcommands_read_the_same_probe_settings_file() {
        let path =
            std::env::temp_dir().join(format!("sw-main-settings-{}.yaml", std::process::id()));
        std::fs::write(
            &path,
            "nodeSelector: {pool: system}\nextraArgs: [--write-rate=7]\n",
        )
        .unwrap();
        let flag = format!("--probe-settings={}", path.display());
        let run = probe_args(parse(&["run", &flag]).unwrap()).settings();
        let render = probe_args(parse(&["render-daemonset", &flag]).unwrap()).settings();
        assert_eq!(run, render);
        assert_eq!(run.pod.node_selector["pool"], "system");
        let ds = serde_json::to_value(probe_daemonset(&run, None)).unwrap();
        assert_eq!(
            ds["spec"]["template"]["spec"]["nodeSelector"]["pool"],
            "system"
        );
        // Without the flag: the built-in pod settings (every taint tolerated).
        let plain = probe_args(parse(&["run"]).unwrap()).settings();
        assert_eq!(plain.pod, ProbePodSettings::default());
        std::fs::write(&path, "podLabels: {app.kubernetes.io/managed-by: me}\n").unwrap();
        let err = parse(&["run", &flag]).err().expect("refused").to_string();
        assert!(
            err.contains("--probe-settings")
                && err.contains("podLabels.app.kubernetes.io/managed-by"),
            "{err}"
        );
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn the_defaults_need_no_flags_and_set_no_owner_or_host_network() {
        let probe = probe_args(parse(&["render-daemonset"]).unwrap());
        assert_eq!(probe.owner_deployment, "");
        let settings = probe.settings();
        assert!(!settings.host_network);
        assert_eq!(settings.api_server, None);
    }

    #[test]
    fn a_malformed_api_server_flag_is_refused_with_the_reason() {
        let err = parse(&["run", "--probe-api-server=https://10.0.0.1:6443"])
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("--probe-api-server"), "{err}");
        assert!(err.contains("no scheme"), "{err}");
    }
}
