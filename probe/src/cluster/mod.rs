//! Cluster mode: findings become `DockerAbuseFinding` objects naming the pod, its workload
//! and namespace, under the policy that governs them.
//!
//! The event loop hands each finding to a bounded channel (never blocking the ring-buffer
//! reader); one task enriches it (pod index by container id, which remembers recently deleted
//! pods for a while; for a container that has just
//! started, the pod its CRI labels name, from the cache by name or one GET; else hold and
//! retry briefly), applies policy scope and exemptions, and queues it in the rate-limited
//! [`writer::FindingWriter`]. Policies only ever judge metadata built from the pod object.
pub mod cri;
pub mod owners;
pub mod pod_index;
pub mod pods;
pub mod policy;
pub mod report;
#[cfg(test)]
pub mod testing;
pub mod verdicts;
pub mod writer;

use std::{collections::VecDeque, sync::Arc, time::Duration};

use api::{
    finding_name, ContainerRef, DockerAbuseFindingSpec, DockerSocketPolicy, PodRef, ProcessRef,
    SignatureRef, SocketUse,
};
use k8s_openapi::{
    api::core::v1::{Namespace, Pod},
    jiff::Timestamp,
};
use kube::{
    core::PartialObjectMeta,
    runtime::reflector::{ObjectRef, Store},
    Api, Client, ResourceExt,
};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

use crate::{
    finding::Finding,
    metrics::Metrics,
    output::{KubeContext, Outputs, Report},
    pipeline::FindingSink,
};
use api::compiled::Verdict;
use cri::IdentitySource;
use owners::OwnerResolver;
use pod_index::PodIndex;
use pods::{PodIdentity, PodMeta};
use policy::Policies;
use writer::{FindingWriter, Recorded};

/// How long a finding whose pod is unknown is held for the pod cache to catch up.
pub const HOLD_FOR: Duration = Duration::from_secs(10);
/// Longest wait for the GET of a new container's pod (the sink is one task; a hung API must
/// not stall it).
const GET_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_HELD: usize = 10_000;
const TICK: Duration = Duration::from_millis(100);

/// Repeats of one finding, coalesced before they cross to the enrichment task.
pub struct Batch {
    pub finding: Finding,
    pub count: i64,
}

/// Distinct findings the event loop coalesces between two hand-overs.
const MAX_COALESCED: usize = 10_000;

/// The event loop's side: repeats of a finding (same container, socket, operation and
/// executable) are coalesced into one batch, handed over without blocking after each drain of
/// the ring buffer. A batch that does not fit the queue waits for the next hand-over; only a
/// new finding beyond `MAX_COALESCED` is dropped, and counted.
pub struct ClusterForwarder {
    pub tx: mpsc::Sender<Batch>,
    pub metrics: Arc<Metrics>,
    pub pending: std::collections::HashMap<String, Batch>,
}

impl ClusterForwarder {
    pub fn new(tx: mpsc::Sender<Batch>, metrics: Arc<Metrics>) -> Self {
        Self {
            tx,
            metrics,
            pending: Default::default(),
        }
    }
}

impl FindingSink for ClusterForwarder {
    fn emit(&mut self, finding: Finding) {
        let key = format!(
            "{}\0{}\0{}\0{}",
            finding
                .container
                .as_ref()
                .and_then(|c| c.id.as_deref())
                .unwrap_or(""),
            finding.socket.host_path,
            finding.operation,
            finding.process.comm, // the finding's key (api::finding_name)
        );
        if let Some(batch) = self.pending.get_mut(&key) {
            batch.count += 1;
            if batch.finding.process.exe.is_none() && finding.process.exe.is_some() {
                batch.finding.process = finding.process; // /proc was read in time this once
            }
        } else if self.pending.len() < MAX_COALESCED {
            self.pending.insert(key, Batch { finding, count: 1 });
        } else {
            self.metrics.findings_dropped.inc();
        }
    }

    fn flush(&mut self) {
        let keys: Vec<String> = self.pending.keys().cloned().collect();
        for key in keys {
            let Some(batch) = self.pending.remove(&key) else {
                continue;
            };
            if let Err(e) = self.tx.try_send(batch) {
                let batch = match e {
                    mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b) => b,
                };
                self.pending.insert(key, batch); // next hand-over
                break;
            }
        }
    }
}

/// Caches and clients enrichment needs.
pub struct Enricher {
    pub pods: Store<Pod>,
    /// The same pods by container id, and recently deleted ones.
    pub pod_index: PodIndex,
    /// Namespaces' metadata only: their labels are all policies judge by.
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    pub policies: Store<DockerSocketPolicy>,
    pub client: Option<Client>,
    /// Who a container is before its pod's status lists it (the runtimes' CRI APIs).
    pub cri: Vec<Box<dyn IdentitySource>>,
    pub owners: OwnerResolver,
}

impl Enricher {
    /// The pod of a container, always built from the pod object: the node's pod index by
    /// container id (a pod deleted up to `pod_index::GONE_TTL` ago included); else, for a container its pod's status does not list yet (it has just
    /// started), the pod its CRI labels name, from the cache by namespace/name or else one GET,
    /// if the uid matches. `None` — hold and retry — while the pod object cannot be had: what
    /// CRI labels say alone is never judged (it lacks the labels and service account).
    ///
    /// `cgroup_pod_uid` is the pod uid the process's kubepods cgroup names, if any; CRI labels
    /// naming another pod are not believed.
    async fn pod_meta(
        &mut self,
        container_id: &str,
        cgroup_pod_uid: Option<&str>,
    ) -> Option<PodMeta> {
        if let Some(meta) = self.pod_index.lookup(container_id) {
            return Some(meta);
        }
        let Some(identity) = self.believed_identity(container_id, cgroup_pod_uid).await else {
            tracing::debug!(
                container = container_id,
                cgroup_pod_uid,
                "no runtime identity for the container, or one naming another pod than its cgroup"
            );
            return None;
        };
        let cached = ObjectRef::<Pod>::new(&identity.name).within(&identity.namespace);
        if let Some(meta) = self
            .pods
            .get(&cached)
            .and_then(|pod| pods::meta_for_identity(&pod, &identity))
        {
            return Some(meta);
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone()?, &identity.namespace);
        let outcome = match tokio::time::timeout(GET_TIMEOUT, api.get_opt(&identity.name)).await {
            Ok(Ok(Some(pod))) => match pods::meta_for_identity(&pod, &identity) {
                Some(meta) => return Some(meta),
                None => "the pod under that name has another uid".to_string(),
            },
            Ok(Ok(None)) => "pod not found".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {GET_TIMEOUT:?}"),
        };
        tracing::debug!(container = container_id, namespace = %identity.namespace, pod = %identity.name, uid = %identity.uid, reason = %outcome, "pod of a new container not available yet; holding its finding");
        None
    }

    /// The runtime's identity for `container_id`, unless the container's cgroup names
    /// another pod.
    async fn believed_identity(
        &mut self,
        container_id: &str,
        cgroup_pod_uid: Option<&str>,
    ) -> Option<PodIdentity> {
        let identity = self.identity(container_id).await?;
        cgroup_pod_uid
            .is_none_or(|uid| uid == identity.uid)
            .then_some(identity)
    }

    /// The first identity a runtime gives for `container_id`.
    async fn identity(&mut self, container_id: &str) -> Option<PodIdentity> {
        for source in &mut self.cri {
            if let Some(identity) = source.identity(container_id).await {
                return Some(identity);
            }
        }
        None
    }
}

pub struct ClusterSink {
    pub enricher: Enricher,
    pub policies: Policies,
    pub writer: FindingWriter,
    pub metrics: Arc<Metrics>,
    pub node: String,
    /// The stdout line and HTTP output of every reported finding.
    pub outputs: Outputs,
    held: VecDeque<(Instant, Batch)>,
}

/// How often this node's pods are counted against the policies' scope.
const SCOPE_EVERY: Duration = Duration::from_secs(5);

impl ClusterSink {
    pub fn new(
        enricher: Enricher,
        writer: FindingWriter,
        metrics: Arc<Metrics>,
        node: String,
        outputs: Outputs,
    ) -> Self {
        Self {
            enricher,
            policies: Policies::new(metrics.clone()),
            writer,
            metrics,
            node,
            outputs,
            held: VecDeque::new(),
        }
    }

    pub async fn handle(&mut self, batch: Batch) {
        let finding = &batch.finding;
        let Some(id) = finding.container.as_ref().and_then(|c| c.id.clone()) else {
            // Containerised by its namespaces but no container in its cgroup: no pod to name.
            self.metrics.enrichment_misses.inc();
            tracing::warn!(pid = finding.process.pid, comm = %finding.process.comm, "finding from a process in no known container: reported on stdout only");
            self.outputs.publish(&Report {
                finding,
                kubernetes: None,
                count: batch.count,
            });
            return;
        };
        let cgroup_pod_uid = finding.pod.as_ref().map(|p| p.uid.clone());
        match self.enricher.pod_meta(&id, cgroup_pod_uid.as_deref()).await {
            Some(meta) => self.report(batch, meta).await,
            None if self.held.len() < MAX_HELD => {
                self.held.push_back((Instant::now() + HOLD_FOR, batch))
            }
            None => self.metrics.findings_dropped.inc(),
        }
    }

    /// Retries held findings; those past their deadline are counted as enrichment misses and
    /// printed, so nothing is lost silently.
    pub async fn retry_held(&mut self) {
        for _ in 0..self.held.len() {
            let Some((deadline, batch)) = self.held.pop_front() else {
                break;
            };
            let id = batch
                .finding
                .container
                .as_ref()
                .and_then(|c| c.id.clone())
                .unwrap_or_default();
            let cgroup_pod_uid = batch.finding.pod.as_ref().map(|p| p.uid.clone());
            match self.enricher.pod_meta(&id, cgroup_pod_uid.as_deref()).await {
                Some(meta) => self.report(batch, meta).await,
                None if Instant::now() < deadline => self.held.push_back((deadline, batch)),
                None => {
                    self.metrics.enrichment_misses.inc();
                    match self
                        .enricher
                        .believed_identity(&id, cgroup_pod_uid.as_deref())
                        .await
                    {
                        Some(identity) => self.report_unknown_pod(batch, identity),
                        None => {
                            tracing::warn!(container = %id, count = batch.count, "no pod found for the container; finding reported on stdout only");
                            self.outputs.publish(&Report {
                                finding: &batch.finding,
                                kubernetes: None,
                                count: batch.count,
                            });
                        }
                    }
                }
            }
        }
    }

    /// A container whose runtime names a pod that the API server did not show within the
    /// hold (made through the runtime directly, or deleted at once). No policy can be applied
    /// to a pod Kubernetes does not know, and no exemption claimed for it: it is reported
    /// under the built-in default, with the identity the runtime gives.
    fn report_unknown_pod(&mut self, batch: Batch, identity: PodIdentity) {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": identity.name, "namespace": identity.namespace, "uid": identity.uid},
            "spec": {"containers": [{"name": identity.container_name}]},
        }))
        .unwrap_or_default();
        let mut meta = PodMeta::from_pod(&pod, &identity.container_name, identity.image.as_deref());
        meta.workload = Some(api::WorkloadRef {
            kind: "Pod".into(),
            name: identity.name.clone(),
        });
        tracing::warn!(namespace = %identity.namespace, pod = %identity.name, uid = %identity.uid, "the runtime names a pod the API server does not have; reported under the built-in default policy");
        self.write(
            batch,
            &meta,
            policy::DEFAULT_POLICY,
            policy::DEFAULT_SEVERITY,
        );
    }

    async fn report(&mut self, batch: Batch, mut meta: PodMeta) {
        let Batch { finding, count } = batch;
        let workload = self
            .enricher
            .owners
            .resolve(
                &meta.namespace,
                meta.controller.as_ref(),
                &meta.labels,
                &meta.name,
            )
            .await;
        meta.workload = Some(workload);
        let ns_labels = self
            .enricher
            .namespaces
            .get(&ObjectRef::<PartialObjectMeta<Namespace>>::new(
                &meta.namespace,
            ))
            .map(|n| n.labels().clone())
            .unwrap_or_default();
        self.policies.refresh(&self.enricher.policies.state());
        // The kernel refused the container, whichever binary ran (as it judged: see
        // `verdicts`); a refusal is reported even where the policies changed since.
        let blocked = finding.action == api::FindingAction::Blocked;
        let verdict = self.policies.verdict(
            &meta,
            &ns_labels,
            finding.process.exe.as_deref().filter(|_| !blocked),
            finding.operation,
        );
        let (policy_name, severity) = match verdict {
            Verdict::Report {
                policy, severity, ..
            } => (policy, severity),
            _ if blocked => (policy::DEFAULT_POLICY.to_string(), policy::DEFAULT_SEVERITY),
            Verdict::Exempt { policy } => {
                self.metrics.exempt.with_label_values(&[&policy]).inc();
                return;
            }
            Verdict::OutOfScope => {
                self.metrics.out_of_scope.inc();
                return;
            }
        };
        self.write(Batch { finding, count }, &meta, &policy_name, severity);
    }

    /// Queues the finding for the API under `policy`, counts it and logs a new one.
    fn write(&mut self, batch: Batch, meta: &PodMeta, policy_name: &str, severity: u8) {
        let Batch { finding, count } = batch;
        let spec = spec_for(&finding, meta, &self.node, policy_name, severity);
        let name = finding_name(
            &meta.uid,
            &meta.container_name,
            &finding.socket.host_path,
            spec.operation,
            spec.action,
            &finding.process.comm,
        );
        // Printed and posted whether or not the writer has room: those outputs have bounds
        // of their own, and are what is left when the API server is out of reach.
        self.outputs.publish(&Report {
            finding: &finding,
            kubernetes: Some(&KubeContext {
                namespace: meta.namespace.clone(),
                pod: meta.name.clone(),
                pod_uid: meta.uid.clone(),
                container: meta.container_name.clone(),
                image: meta.image.clone(),
                workload: meta.workload.clone(),
                service_account: meta.service_account.clone(),
                policy: policy_name.to_string(),
                severity,
                finding: name.clone(),
            }),
            count,
        });
        let recorded =
            self.writer
                .record_many(&meta.namespace, &name, spec, Timestamp::now(), count);
        if recorded == Recorded::Dropped {
            return;
        }
        self.metrics
            .count_finding(&meta.namespace, &meta.name, &finding);
        if recorded == Recorded::New {
            tracing::warn!(
                namespace = %meta.namespace, pod = %meta.name, container = %meta.container_name,
                socket = %finding.socket.host_path, operation = %finding.operation, policy = %policy_name,
                finding = %name, "DockerSocketAbuse"
            );
        }
    }
}

/// Longest command line stored in a finding object (stdout keeps up to 4 KiB): objects stay
/// small, and 10,000 findings queued during an API outage fit in memory.
const MAX_SPEC_CMDLINE: usize = 1024;

fn short_cmdline(c: &str) -> String {
    api::truncate(c, MAX_SPEC_CMDLINE)
}

pub fn spec_for(
    f: &Finding,
    meta: &PodMeta,
    node: &str,
    policy: &str,
    severity: u8,
) -> DockerAbuseFindingSpec {
    DockerAbuseFindingSpec {
        signature: SignatureRef::trc_1019(),
        node: node.to_string(),
        pod: PodRef {
            name: meta.name.clone(),
            uid: meta.uid.clone(),
        },
        container: ContainerRef {
            name: meta.container_name.clone(),
            id: f
                .container
                .as_ref()
                .and_then(|c| c.id.clone())
                .unwrap_or_default(),
            image: meta.image.clone(),
        },
        workload: meta.workload.clone(),
        service_account: meta.service_account.clone(),
        operation: f.operation,
        socket: SocketUse {
            host_path: f.socket.host_path.clone(),
            runtime: f.socket.runtime.clone(),
        },
        requested_path: f.requested_path.clone(),
        process: ProcessRef {
            exe: f.process.exe.clone(),
            comm: f.process.comm.clone(),
            cmdline: f.process.cmdline.as_deref().map(short_cmdline),
            uid: f.process.uid,
        },
        action: f.action,
        policy: policy.to_string(),
        severity,
    }
}

/// Runs the sink: nothing is judged before `synced` (the pod, namespace and policy caches
/// have listed once — else the built-in default would apply and exemptions be ignored;
/// findings wait in the queue meanwhile); then until the reader has handed over its last
/// batch (the channel closes), or `drain_for` after shutdown; then flushes what it can within
/// `drain_for`.
pub async fn run_sink(
    mut rx: mpsc::Receiver<Batch>,
    mut sink: ClusterSink,
    synced: impl std::future::Future<Output = ()>,
    mut shutdown: watch::Receiver<bool>,
    drain_for: Duration,
) {
    tokio::select! {
        _ = synced => {}
        _ = shutdown.changed() => {}
    }
    let mut tick = tokio::time::interval(TICK);
    let mut scope = tokio::time::interval(SCOPE_EVERY);
    let mut stop_by: Option<Instant> = None;
    loop {
        let give_up = async {
            match stop_by {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            f = rx.recv() => match f {
                Some(f) => sink.handle(f).await,
                None => break, // the reader is done: everything it read is here
            },
            _ = tick.tick() => {
                sink.retry_held().await;
                sink.writer.flush().await;
            }
            _ = scope.tick() => {
                sink.policies.refresh(&sink.enricher.policies.state());
                sink.policies
                    .count_out_of_scope(&sink.enricher.pods, &sink.enricher.namespaces);
            }
            _ = shutdown.changed(), if stop_by.is_none() => {
                stop_by = Some(Instant::now() + drain_for);
            }
            _ = give_up => {
                tracing::warn!("the reader did not finish within the drain time");
                break;
            }
        }
    }
    let deadline = Instant::now() + drain_for;
    while sink.writer.pending() > 0 && Instant::now() < deadline {
        sink.writer.flush().await;
        let wait = sink
            .writer
            .next_due()
            .map_or(TICK, |t| t.saturating_duration_since(Instant::now()));
        tokio::time::sleep(wait.clamp(Duration::from_millis(10), TICK * 5)).await;
    }
    if sink.writer.pending() > 0 {
        tracing::warn!(
            pending = sink.writer.pending(),
            "shutting down with finding increments unwritten"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        cluster::testing::{ApiDouble, Identities},
        finding,
        output::SharedBuf,
    };
    use kube::runtime::{reflector, watcher};

    /// The pod watch as `run` wires it: the store, then the index.
    struct PodFeed {
        store: reflector::store::Writer<Pod>,
        index: PodIndex,
    }

    impl PodFeed {
        fn apply_watcher_event(&mut self, event: &watcher::Event<Pod>) {
            self.store.apply_watcher_event(event);
            self.index.apply_watcher_event(event);
        }

        /// A running pod with one container `app` whose id is `container_id`.
        fn add(&mut self, name: &str, uid: &str, container_id: &str) {
            self.apply_watcher_event(&watcher::Event::Apply(pods::pod_json(
                name,
                uid,
                &[("app", container_id)],
                &[],
            )));
        }
    }

    struct Fixture {
        api: ApiDouble,
        sink: ClusterSink,
        pods: PodFeed,
        policies: reflector::store::Writer<DockerSocketPolicy>,
        namespaces: reflector::store::Writer<PartialObjectMeta<Namespace>>,
        /// What the runtime's CRI labels say about containers.
        cri: Identities,
        /// What the sink printed on "stdout".
        stdout: SharedBuf,
    }

    fn fixture() -> Fixture {
        let api = ApiDouble::start();
        let metrics = Arc::new(Metrics::new().unwrap());
        let (pod_store, pods) = reflector::store();
        let (ns_store, namespaces) = reflector::store();
        let (policy_store, policies) = reflector::store();
        let cri = Identities::default();
        let pod_index = PodIndex::default();
        let pods = PodFeed {
            store: pods,
            index: pod_index.clone(),
        };
        let enricher = Enricher {
            pods: pod_store,
            pod_index,
            namespaces: ns_store,
            policies: policy_store,
            client: Some(api.client()),
            cri: vec![Box::new(cri.clone())],
            owners: OwnerResolver::new(Some(api.client())),
        };
        let writer = FindingWriter::new(
            api.client(),
            writer::WriterConfig {
                node: "n1".into(),
                ..Default::default()
            },
            metrics.clone(),
        );
        let stdout = SharedBuf::default();
        let sink = ClusterSink::new(
            enricher,
            writer,
            metrics,
            "n1".into(),
            Outputs::new(Box::new(stdout.clone()), true, None),
        );
        Fixture {
            api,
            sink,
            pods,
            policies,
            namespaces,
            cri,
            stdout,
        }
    }

    fn container_finding(container_id: &str) -> Batch {
        let mut f = finding::sample();
        f.container = Some(finding::ContainerInfo {
            id: Some(container_id.into()),
            runtime: Some("containerd".into()),
        });
        Batch {
            finding: f,
            count: 1,
        }
    }

    fn written(api: &ApiDouble) -> Vec<serde_json::Value> {
        api.findings()
    }

    #[tokio::test]
    async fn finding_sent_to_the_api_names_pod_container_workload_and_default_policy() {
        let mut fx = fixture();
        fx.pods.add("web-1", "pod-uid-1", "cid-1");
        fx.sink.handle(container_finding("cid-1")).await;
        fx.sink.writer.flush().await;
        let all = written(&fx.api);
        assert_eq!(all.len(), 1, "{all:#?}");
        let f = &all[0];
        assert_eq!(f["metadata"]["namespace"], "shop");
        assert_eq!(f["metadata"]["labels"]["sockwarden.io/policy"], "default");
        let spec = &f["spec"];
        assert_eq!(
            spec["pod"],
            serde_json::json!({"name": "web-1", "uid": "pod-uid-1"})
        );
        assert_eq!(spec["container"]["name"], "app");
        assert_eq!(spec["container"]["id"], "cid-1");
        assert_eq!(spec["container"]["image"], "registry.example/app:1");
        assert_eq!(
            spec["workload"],
            serde_json::json!({"kind": "Deployment", "name": "web"})
        );
        assert_eq!(spec["serviceAccount"], "web-sa");
        assert_eq!(spec["operation"], "connect");
        assert_eq!(spec["socket"]["hostPath"], "/run/docker.sock");
        assert_eq!(spec["requestedPath"], "/tmp/innocent.sock");
        assert_eq!(spec["process"]["exe"], "/usr/bin/curl");
        assert_eq!(spec["action"], "Audit");
        assert_eq!(spec["signature"]["id"], "TRC-1019");
        assert_eq!(f["status"]["count"], 1);
        // the deterministic name of the key
        let name = api::finding_name(
            "pod-uid-1",
            "app",
            "/run/docker.sock",
            api::FindingOperation::Connect,
            api::FindingAction::Audit,
            "curl",
        );
        assert_eq!(f["metadata"]["name"], name.as_str());
        let m = fx.sink.metrics.render();
        assert!(m.contains(r#"sockwarden_probe_findings_total{action="Audit",namespace="shop",operation="connect",pod="web-1",runtime="docker"} 1"#), "{m}");
    }

    /// The labels of the one `sockwarden_probe_findings_total` series in `text`.
    fn finding_labels(text: &str) -> std::collections::BTreeMap<String, String> {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("sockwarden_probe_findings_total{"))
            .collect();
        assert_eq!(lines.len(), 1, "{text}");
        let inner = &lines[0][lines[0].find('{').unwrap() + 1..lines[0].rfind('}').unwrap()];
        inner
            .split(',')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect()
    }

    #[tokio::test]
    async fn standalone_and_cluster_mode_give_one_finding_the_same_values() {
        for (operation, action) in [
            (api::FindingOperation::Connect, api::FindingAction::Audit),
            (api::FindingOperation::Open, api::FindingAction::Audit),
        ] {
            let mut batch = container_finding("cid-1");
            batch.finding.operation = operation;
            batch.finding.action = action;
            // Standalone: the stdout line and the metrics.
            let standalone_out = SharedBuf::default();
            let standalone_metrics = Arc::new(Metrics::new().unwrap());
            let mut standalone = crate::pipeline::StandaloneSink {
                outputs: Outputs::new(Box::new(standalone_out.clone()), true, None),
                metrics: standalone_metrics.clone(),
            };
            standalone.emit(batch.finding.clone());
            let line: serde_json::Value = serde_json::from_str(&standalone_out.lines()[0]).unwrap();
            let standalone_labels = finding_labels(&standalone_metrics.render());
            // Cluster mode: the object, the stdout line and the metrics.
            let mut fx = fixture();
            fx.pods.add("web-1", "pod-uid-1", "cid-1");
            fx.sink.handle(batch).await;
            fx.sink.writer.flush().await;
            let object = written(&fx.api).remove(0);
            let cluster_line: serde_json::Value =
                serde_json::from_str(&fx.stdout.lines()[0]).unwrap();
            let cluster_labels = finding_labels(&fx.sink.metrics.render());

            for (label, value) in [
                ("operation", operation.as_str()),
                ("action", action.as_str()),
                ("runtime", "docker"),
            ] {
                assert_eq!(standalone_labels[label], value, "standalone {label}");
                assert_eq!(cluster_labels[label], value, "cluster {label}");
            }
            for (json, what) in [(&line, "standalone"), (&cluster_line, "cluster")] {
                assert_eq!(json["operation"], operation.as_str(), "{what} line");
                assert_eq!(json["action"], action.as_str(), "{what} line");
                assert_eq!(json["socket"]["runtime"], "docker", "{what} line");
            }
            assert_eq!(object["spec"]["operation"], operation.as_str());
            assert_eq!(object["spec"]["action"], action.as_str());
            assert_eq!(object["spec"]["socket"]["runtime"], "docker");
            // The pod labels: its namespace and name where known, both empty where not.
            assert_eq!(
                (&*cluster_labels["namespace"], &*cluster_labels["pod"]),
                ("shop", "web-1")
            );
            assert_eq!(
                (&*standalone_labels["namespace"], &*standalone_labels["pod"]),
                ("", "")
            );
        }
    }

    #[tokio::test]
    async fn findings_the_reader_hands_over_after_shutdown_began_are_still_written() {
        let mut fx = fixture();
        for i in 0..20 {
            fx.pods.add(
                &format!("web-{i}"),
                &format!("pod-uid-{i}"),
                &format!("cid-{i}"),
            );
        }
        let (tx, rx) = mpsc::channel(64);
        let (stop_tx, stop_rx) = watch::channel(false);
        let sink = tokio::spawn(run_sink(
            rx,
            fx.sink,
            std::future::ready(()),
            stop_rx,
            Duration::from_secs(5),
        ));
        // Shutdown begins; the reader's final drain then hands over what it read.
        stop_tx.send(true).unwrap();
        tokio::task::yield_now().await;
        for i in 0..20 {
            tx.send(container_finding(&format!("cid-{i}")))
                .await
                .unwrap();
        }
        drop(tx); // the reader is done
        sink.await.unwrap();
        assert_eq!(
            written(&fx.api).len(),
            20,
            "every finding read before exit is written"
        );
    }

    #[tokio::test]
    async fn nothing_is_judged_before_the_caches_have_synced() {
        let fx = fixture();
        let (tx, rx) = mpsc::channel(64);
        let (_stop_tx, stop_rx) = watch::channel(false);
        let (synced_tx, synced_rx) = tokio::sync::oneshot::channel::<()>();
        let api = fx.api.clone();
        let mut pods = fx.pods;
        let sink = tokio::spawn(run_sink(
            rx,
            fx.sink,
            async move {
                let _ = synced_rx.await;
            },
            stop_rx,
            Duration::from_secs(1),
        ));
        tx.send(container_finding("cid-1")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            api.calls().is_empty(),
            "judged before the caches synced: {:?}",
            api.calls()
        );
        pods.add("web-1", "pod-uid-1", "cid-1");
        synced_tx.send(()).unwrap();
        drop(tx);
        sink.await.unwrap();
        assert_eq!(written(&api).len(), 1);
    }

    #[tokio::test]
    async fn forwarder_coalesces_repeats_and_keeps_what_the_queue_cannot_take() {
        let (tx, mut rx) = mpsc::channel(1);
        let metrics = Arc::new(Metrics::new().unwrap());
        let mut fwd = ClusterForwarder::new(tx, metrics.clone());
        for _ in 0..1000 {
            fwd.emit(container_finding("cid-a").finding);
        }
        for _ in 0..5 {
            fwd.emit(container_finding("cid-b").finding);
        }
        fwd.flush(); // the queue holds one batch; the other waits in the forwarder
        let first = rx.try_recv().unwrap();
        assert!(rx.try_recv().is_err());
        fwd.flush();
        let second = rx.try_recv().unwrap();
        let mut counts = [first.count, second.count];
        counts.sort();
        assert_eq!(counts, [5, 1000], "every repeat is counted, none lost");
        assert_eq!(metrics.findings_dropped.get(), 0);
    }

    #[tokio::test]
    async fn a_pod_the_cache_has_not_seen_yet_is_held_then_attributed() {
        let mut fx = fixture();
        fx.sink.handle(container_finding("cid-late")).await;
        fx.sink.writer.flush().await;
        assert!(written(&fx.api).is_empty(), "nothing to attribute yet");
        fx.pods.add("late-1", "pod-uid-2", "cid-late");
        fx.sink.retry_held().await;
        fx.sink.writer.flush().await;
        let all = written(&fx.api);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0]["spec"]["pod"]["name"], "late-1");
        assert_eq!(fx.sink.metrics.enrichment_misses.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_container_no_pod_ever_claims_is_counted_as_an_enrichment_miss() {
        let mut fx = fixture();
        fx.sink.handle(container_finding("cid-orphan")).await;
        tokio::time::advance(HOLD_FOR + Duration::from_secs(1)).await;
        fx.sink.retry_held().await;
        assert_eq!(fx.sink.metrics.enrichment_misses.get(), 1);
        assert!(fx.sink.held.is_empty());
    }

    #[tokio::test]
    async fn exempted_pods_and_out_of_scope_pods_write_nothing() {
        let mut fx = fixture();
        fx.pods.add("web-1", "pod-uid-1", "cid-1");
        let exempting = accepted(
            "agents",
            serde_json::json!({"exemptions": [{"serviceAccounts": ["shop/web-sa"]}]}),
        );
        fx.policies
            .apply_watcher_event(&watcher::Event::Apply(exempting));
        fx.sink.handle(container_finding("cid-1")).await;
        fx.sink.writer.flush().await;
        assert!(written(&fx.api).is_empty());
        assert_eq!(
            fx.sink.metrics.exempt.with_label_values(&["agents"]).get(),
            1
        );
        // a namespace-scoped policy elsewhere leaves this pod out of scope
        let mut scoped = accepted(
            "agents",
            serde_json::json!({"selector": {"namespaceSelector": {"matchLabels": {"team": "payments"}}}}),
        );
        // The edit is the policy's generation 2, accepted as such.
        scoped.metadata.generation = Some(2);
        let status = scoped.status.as_mut().unwrap();
        status.observed_generation = Some(2);
        status.conditions[0].observed_generation = Some(2);
        fx.policies
            .apply_watcher_event(&watcher::Event::Apply(scoped));
        fx.namespaces.apply_watcher_event(&watcher::Event::Apply(serde_json::from_value(serde_json::json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": {"name": "shop", "labels": {"team": "shop"}}
        })).unwrap()));
        fx.sink.handle(container_finding("cid-1")).await;
        fx.sink.writer.flush().await;
        assert!(written(&fx.api).is_empty());
        assert_eq!(fx.sink.metrics.out_of_scope.get(), 1);
        assert!(
            fx.stdout.lines().is_empty(),
            "neither an exempt nor an out-of-scope finding is printed: {:?}",
            fx.stdout.lines()
        );
        fx.sink
            .policies
            .count_out_of_scope(&fx.sink.enricher.pods, &fx.sink.enricher.namespaces);
        assert_eq!(fx.sink.metrics.pods_out_of_scope.get(), 1);
    }

    #[tokio::test]
    async fn a_blocked_touch_is_reported_even_where_an_exemption_would_keep_it_quiet() {
        let mut fx = fixture();
        fx.pods.add("web-1", "pod-uid-1", "cid-1");
        // An exemption that matched when the kernel judged; the kernel blocked anyway (the
        // policies changed since, or it was narrowed by executable): never silent.
        let exempting = accepted(
            "agents",
            serde_json::json!({"exemptions": [{"serviceAccounts": ["shop/web-sa"]}]}),
        );
        fx.policies
            .apply_watcher_event(&watcher::Event::Apply(exempting));
        let mut batch = container_finding("cid-1");
        batch.finding.action = api::FindingAction::Blocked;
        fx.sink.handle(batch).await;
        fx.sink.writer.flush().await;
        let objects = written(&fx.api);
        assert_eq!(objects.len(), 1, "{objects:?}");
        assert_eq!(objects[0]["spec"]["action"], "Blocked");
        assert_eq!(objects[0]["spec"]["policy"], policy::DEFAULT_POLICY);
    }

    #[tokio::test]
    async fn a_reported_finding_is_one_stdout_line_with_its_kubernetes_context_and_count() {
        let mut fx = fixture();
        fx.pods.add("web-1", "pod-uid-1", "cid-1");
        let mut batch = container_finding("cid-1");
        batch.count = 7;
        fx.sink.handle(batch).await;
        fx.sink.writer.flush().await;
        let lines = fx.stdout.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        let object = &written(&fx.api)[0];
        assert_eq!(v["count"], 7);
        assert_eq!(v["signature"]["id"], "TRC-1019");
        assert_eq!(v["container"]["id"], "cid-1");
        let k = &v["kubernetes"];
        assert_eq!(k["namespace"], "shop");
        assert_eq!(k["pod"], "web-1");
        assert_eq!(k["podUid"], "pod-uid-1");
        assert_eq!(k["container"], object["spec"]["container"]["name"]);
        assert_eq!(k["image"], object["spec"]["container"]["image"]);
        assert_eq!(k["workload"], object["spec"]["workload"]);
        assert_eq!(k["serviceAccount"], "web-sa");
        assert_eq!(k["policy"], "default");
        assert_eq!(k["severity"], 2);
        assert_eq!(k["finding"], object["metadata"]["name"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_container_whose_pod_was_just_deleted_is_still_attributed_to_it_for_a_while() {
        let mut fx = fixture();
        let pod = pods::pod_json("web-1", "pod-uid-1", &[("app", "cid-gone")], &[]);
        fx.pods
            .apply_watcher_event(&watcher::Event::Apply(pod.clone()));
        fx.pods.apply_watcher_event(&watcher::Event::Delete(pod));
        fx.sink.handle(container_finding("cid-gone")).await;
        fx.sink.writer.flush().await;
        let all = written(&fx.api);
        assert_eq!(all.len(), 1, "{all:#?}");
        assert_eq!(
            all[0]["spec"]["pod"],
            serde_json::json!({"name": "web-1", "uid": "pod-uid-1"})
        );
        assert_eq!(all[0]["spec"]["container"]["name"], "app");
        assert_eq!(all[0]["spec"]["serviceAccount"], "web-sa");
        assert!(fx.sink.held.is_empty());
        // past the TTL the id names nothing: held, as any unknown container
        tokio::time::advance(pod_index::GONE_TTL + Duration::from_secs(1)).await;
        fx.sink.handle(container_finding("cid-gone")).await;
        assert_eq!(fx.sink.held.len(), 1);
    }

    #[tokio::test]
    async fn a_namespace_selector_reads_the_labels_of_the_metadata_only_namespace_cache() {
        let mut fx = fixture();
        fx.pods.add("web-1", "pod-uid-1", "cid-1");
        fx.policies.apply_watcher_event(&watcher::Event::Apply(accepted(
            "payments",
            serde_json::json!({"severity": 3, "selector": {"namespaceSelector": {"matchLabels": {"team": "payments"}}}}),
        )));
        fx.namespaces.apply_watcher_event(&watcher::Event::Apply(serde_json::from_value(serde_json::json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": {"name": "shop", "labels": {"team": "payments"}}
        })).unwrap()));
        fx.sink.handle(container_finding("cid-1")).await;
        fx.sink.writer.flush().await;
        let all = written(&fx.api);
        assert_eq!(all.len(), 1, "{all:#?}");
        assert_eq!(all[0]["spec"]["policy"], "payments");
        assert_eq!(all[0]["spec"]["severity"], 3);
        fx.sink.policies.refresh(&fx.sink.enricher.policies.state());
        fx.sink
            .policies
            .count_out_of_scope(&fx.sink.enricher.pods, &fx.sink.enricher.namespaces);
        assert_eq!(fx.sink.metrics.pods_out_of_scope.get(), 0);
    }

    #[tokio::test]
    async fn a_finding_in_no_known_container_is_printed_without_kubernetes_context() {
        let mut fx = fixture();
        let mut batch = container_finding("unused");
        batch.finding.container = None;
        batch.count = 2;
        fx.sink.handle(batch).await;
        let lines = fx.stdout.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert!(v["kubernetes"].is_null());
        assert_eq!(v["count"], 2);
        assert_eq!(fx.sink.metrics.enrichment_misses.get(), 1);
    }

    /// A policy as the operator leaves it once it accepted it.
    fn accepted(name: &str, spec: serde_json::Value) -> DockerSocketPolicy {
        api::compiled::testing::policy(name, spec, true)
    }

    #[tokio::test]
    async fn policies_the_operator_did_not_accept_or_that_are_invalid_are_not_applied_at_all() {
        let mut fx = fixture();
        fx.pods.add("web-1", "pod-uid-1", "cid-1");
        // Refused by the operator: would exempt the pod's namespace.
        fx.policies
            .apply_watcher_event(&watcher::Event::Apply(api::compiled::testing::policy(
                "refused",
                serde_json::json!({"exemptions": [{"namespaces": ["shop"]}]}),
                false,
            )));
        // Marked accepted, but an exemption by label alone is invalid: never applied.
        fx.policies.apply_watcher_event(&watcher::Event::Apply(accepted(
            "forged",
            serde_json::json!({"exemptions": [{"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "sockwarden"}}}]}),
        )));
        fx.sink.handle(container_finding("cid-1")).await;
        fx.sink.writer.flush().await;
        let all = written(&fx.api);
        assert_eq!(all.len(), 1, "{all:#?}");
        assert_eq!(
            all[0]["spec"]["policy"], "default",
            "no policy applies: the default does"
        );
        assert_eq!(fx.sink.metrics.policies_invalid.get(), 2);
        assert_eq!(
            fx.sink.metrics.exempt.with_label_values(&["refused"]).get(),
            0
        );
    }

    /// A policy that selects only `app=web` pods, so a pod judged without its labels would be
    /// out of scope and its finding dropped.
    fn web_policy() -> DockerSocketPolicy {
        accepted(
            "web-only",
            serde_json::json!({"severity": 3, "selector": {"podSelector": {"matchLabels": {"app": "web"}}}}),
        )
    }

    fn pod_gets(api: &ApiDouble) -> usize {
        api.calls()
            .iter()
            .filter(|c| c.method == "GET" && c.uri.contains("/pods/"))
            .count()
    }

    fn assert_judged_by_web_policy(f: &serde_json::Value) {
        assert_eq!(f["metadata"]["labels"]["sockwarden.io/policy"], "web-only");
        let spec = &f["spec"];
        assert_eq!(spec["policy"], "web-only");
        assert_eq!(spec["severity"], 3);
        assert_eq!(spec["serviceAccount"], "web-sa");
        assert_eq!(
            spec["pod"],
            serde_json::json!({"name": "web-1", "uid": "pod-uid-1"})
        );
        assert_eq!(spec["container"]["name"], "app");
        assert_eq!(spec["container"]["id"], "cid-new");
        assert_eq!(spec["container"]["image"], "registry.example/app:1");
        assert_eq!(
            spec["workload"],
            serde_json::json!({"kind": "Deployment", "name": "web"})
        );
    }

    #[tokio::test]
    async fn a_container_its_pod_status_does_not_list_yet_is_judged_by_the_policy_selecting_the_cached_pod(
    ) {
        let mut fx = fixture();
        fx.policies
            .apply_watcher_event(&watcher::Event::Apply(web_policy()));
        fx.pods
            .apply_watcher_event(&watcher::Event::Apply(pods::starting_pod_json(
                "web-1",
                "pod-uid-1",
                &["app"],
            )));
        fx.cri
            .insert("cid-new", pods::identity("web-1", "pod-uid-1", "app"));
        fx.api.fail_reads(Some(503)); // the cache alone must do
        fx.sink.handle(container_finding("cid-new")).await;
        fx.sink.writer.flush().await;
        let all = written(&fx.api);
        assert_eq!(all.len(), 1, "{all:#?}");
        assert_judged_by_web_policy(&all[0]);
        assert_eq!(pod_gets(&fx.api), 0, "found in the cache by name");
        assert!(fx.sink.held.is_empty());
    }

    #[tokio::test]
    async fn a_container_its_pod_status_does_not_list_yet_is_judged_by_the_policy_selecting_the_pod_read_once(
    ) {
        let mut fx = fixture();
        fx.policies
            .apply_watcher_event(&watcher::Event::Apply(web_policy()));
        fx.api
            .add_pod(&pods::starting_pod_json("web-1", "pod-uid-1", &["app"]));
        fx.cri
            .insert("cid-new", pods::identity("web-1", "pod-uid-1", "app"));
        fx.sink.handle(container_finding("cid-new")).await;
        fx.sink.writer.flush().await;
        let all = written(&fx.api);
        assert_eq!(all.len(), 1, "{all:#?}");
        assert_judged_by_web_policy(&all[0]);
        assert_eq!(pod_gets(&fx.api), 1);
        assert!(fx.sink.held.is_empty());
    }

    #[tokio::test]
    async fn a_new_container_whose_pod_cannot_be_read_is_held_not_judged_by_default_then_reported()
    {
        let mut fx = fixture();
        // No policy yet: judging the CRI identity now would report it under `default`.
        fx.cri
            .insert("cid-new", pods::identity("web-1", "pod-uid-1", "app"));
        fx.api.fail_reads(Some(503));
        fx.sink.handle(container_finding("cid-new")).await;
        fx.sink.retry_held().await;
        fx.sink.writer.flush().await;
        assert!(written(&fx.api).is_empty(), "{:#?}", written(&fx.api));
        assert_eq!(fx.sink.held.len(), 1, "held, not dropped");
        assert!(pod_gets(&fx.api) >= 1, "the pod was asked for");

        // A policy selecting the pod arrives, the API recovers and serves the pod.
        fx.policies
            .apply_watcher_event(&watcher::Event::Apply(web_policy()));
        fx.api.fail_reads(None);
        fx.api
            .add_pod(&pods::starting_pod_json("web-1", "pod-uid-1", &["app"]));
        fx.sink.retry_held().await;
        fx.sink.writer.flush().await;
        let all = written(&fx.api);
        assert_eq!(all.len(), 1, "{all:#?}");
        assert_judged_by_web_policy(&all[0]);
        assert_eq!(all[0]["status"]["count"], 1);
        assert!(fx.sink.held.is_empty());
        assert_eq!(fx.sink.metrics.enrichment_misses.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_recreated_pod_under_the_same_name_never_lends_its_policy_the_unknown_pod_is_reported_under_the_default(
    ) {
        let mut fx = fixture();
        fx.policies
            .apply_watcher_event(&watcher::Event::Apply(web_policy()));
        // CRI names the old pod; cache and API only know its successor under the same name.
        let successor = pods::starting_pod_json("web-1", "pod-uid-new", &["app"]);
        fx.pods
            .apply_watcher_event(&watcher::Event::Apply(successor.clone()));
        fx.api.add_pod(&successor);
        fx.cri
            .insert("cid-new", pods::identity("web-1", "pod-uid-old", "app"));
        fx.sink.handle(container_finding("cid-new")).await;
        assert_eq!(fx.sink.held.len(), 1);
        fx.sink.writer.flush().await;
        assert!(written(&fx.api).is_empty(), "not judged while held");
        tokio::time::advance(HOLD_FOR + Duration::from_secs(1)).await;
        fx.sink.retry_held().await;
        fx.sink.writer.flush().await;
        assert!(fx.sink.held.is_empty());
        assert_eq!(fx.sink.metrics.enrichment_misses.get(), 1);
        // Reported, as the pod the runtime names, under the built-in default: never under
        // the successor's policy, never with its labels or service account.
        let all = written(&fx.api);
        assert_eq!(all.len(), 1, "{all:#?}");
        let spec = &all[0]["spec"];
        assert_eq!(spec["pod"]["uid"], "pod-uid-old");
        assert_eq!(spec["policy"], policy::DEFAULT_POLICY);
        assert_eq!(spec["workload"]["kind"], "Pod");
        assert!(spec.get("serviceAccount").is_none_or(|v| v.is_null()));
    }

    #[tokio::test]
    async fn cri_labels_naming_another_pod_than_the_containers_cgroup_are_not_believed() {
        let mut fx = fixture();
        fx.pods
            .apply_watcher_event(&watcher::Event::Apply(pods::starting_pod_json(
                "web-1",
                "pod-uid-1",
                &["app"],
            )));
        fx.cri
            .insert("cid-new", pods::identity("web-1", "pod-uid-1", "app"));
        let mut batch = container_finding("cid-new");
        batch.finding.pod = Some(finding::PodInfo {
            uid: "pod-uid-elsewhere".into(),
        });
        fx.sink.handle(batch).await;
        fx.sink.writer.flush().await;
        assert!(written(&fx.api).is_empty());
        assert_eq!(fx.sink.held.len(), 1);
        // the same labels agreeing with the cgroup are believed
        let mut batch = container_finding("cid-new");
        batch.finding.pod = Some(finding::PodInfo {
            uid: "pod-uid-1".into(),
        });
        fx.sink.handle(batch).await;
        fx.sink.writer.flush().await;
        assert_eq!(written(&fx.api).len(), 1);
    }
}
