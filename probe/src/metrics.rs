//! The node probe's Prometheus metrics (prefix `sockwarden_probe_`).
use crate::{
    backend::{BackendKind, KernelCounts},
    finding::Finding,
};
use prometheus::{
    GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use runtime::admin::registered;

pub struct Metrics {
    pub registry: Registry,
    /// Matched kernel events, by operation and runtime (before the host/container decision).
    pub events: IntCounterVec,
    pub findings: IntCounterVec,
    /// Unix time of the latest finding per label set of `findings`: what the detection
    /// alert compares with the present. A counter cannot carry a pod's first finding (its
    /// series is born at 1 or more, and a restarted probe may land on the same count), a
    /// timestamp that moved into the alert window always does.
    pub finding_last_seen: GaugeVec,
    /// Ring-buffer reservation failures in the kernel, by ring (`connects`, `events`):
    /// events lost, never silently.
    pub ringbuf_drops: IntCounterVec,
    /// Opens failing with ENXIO the kernel did not queue because their cgroup went over its
    /// rate (a flood; the connect ring is unaffected either way).
    pub opens_rate_limited: IntCounter,
    /// Touches of a watched socket the kernel refused or stopped under an Enforce verdict
    /// (counted in the kernel, so also those whose event a full ring lost).
    pub blocked: IntCounter,
    /// 1 while this node enforces (label `blocks_with`: `EPERM` or `SIGKILL`), else 0.
    pub enforcing: IntGaugeVec,
    pub decode_errors: IntCounter,
    /// Opens with write intent that failed with ENXIO whose target could not be resolved.
    pub open_unresolved: IntCounter,
    pub sockets_armed: IntGauge,
    pub backend_info: IntGaugeVec,
    /// Kernel hook to finding written, in seconds.
    pub detection_latency: Histogram,
    /// Per eBPF program, cumulative runs and run time from the kernel's BPF statistics
    /// (non-zero only while `sysctl kernel.bpf_stats_enabled=1`): what each hook costs.
    pub program_runs: IntGaugeVec,
    pub program_run_seconds: GaugeVec,
    /// Cluster mode: failed writes of findings to the API server (retried).
    pub api_write_errors: IntCounter,
    /// Cluster mode: finding keys with increments waiting to be written.
    pub write_queue_depth: IntGauge,
    /// Cluster mode: increments waiting to be written, over all keys.
    pub pending_increments: IntGauge,
    /// Cluster mode: findings whose pod could not be found (pod cache, CRI, retries).
    pub enrichment_misses: IntCounter,
    /// Cluster mode: findings lost to a full queue or the key bound.
    pub findings_dropped: IntCounter,
    /// Cluster mode: findings not reported because a policy exempts them.
    pub exempt: IntCounterVec,
    /// Cluster mode: new finding keys refused because their container holds its maximum.
    pub finding_keys_capped: IntCounter,
    /// Cluster mode: policies present but not applied (not accepted, or invalid).
    pub policies_invalid: IntGauge,
    /// Cluster mode: this node's pods no applied policy selects.
    pub pods_out_of_scope: IntGauge,
    /// Cluster mode: findings not reported because no applied policy selects the pod.
    pub out_of_scope: IntCounter,
    /// Unix time of the last self-test connect the backend reported (0: never).
    pub self_test_last_success: IntGauge,
    /// Self-tests whose connect never came back as an event.
    pub self_test_failures: IntCounter,
    /// Findings an output (`http`) delivered.
    pub output_sent_total: IntCounterVec,
    /// Findings an output lost, by reason (`queue_full`, `retries_exhausted`, `rejected`,
    /// `shutdown`).
    pub output_dropped_total: IntCounterVec,
    /// Failed attempts an output retried.
    pub output_retries_total: IntCounterVec,
    /// Findings waiting in an output's queue.
    pub output_queue: IntGaugeVec,
    pod_label_sets: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
}

/// Distinct (namespace, pod) label pairs on `sockwarden_probe_findings_total`; further pods
/// are counted under `_other` so the series count stays bounded.
pub const MAX_POD_SERIES: usize = 500;

/// The kernel's ring buffers, as `ring` label values.
const RINGS: [&str; 2] = ["connects", "events"];

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let events = registered(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "sockwarden_probe_events_total",
                    "Kernel events on watched sockets, by operation and runtime",
                ),
                &["operation", "runtime"],
            )?,
        )?;
        let findings = registered(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "sockwarden_probe_findings_total",
                    "Findings reported, by namespace, pod, operation, runtime and action",
                ),
                &["namespace", "pod", "operation", "runtime", "action"],
            )?,
        )?;
        let finding_last_seen = registered(&registry, GaugeVec::new(
            Opts::new(
                "sockwarden_probe_finding_last_seen_timestamp_seconds",
                "Unix time of the latest finding, by namespace, pod, operation, runtime and action",
            ),
            &["namespace", "pod", "operation", "runtime", "action"],
        )?)?;
        let ringbuf_drops = registered(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "sockwarden_probe_ringbuf_drops_total",
                    "Events lost because a kernel ring buffer was full, by ring (connects, events)",
                ),
                &["ring"],
            )?,
        )?;
        // Both series exist from the start, at 0: "nothing lost" is visible, not absent.
        for ring in RINGS {
            let _ = ringbuf_drops.with_label_values(&[ring]);
        }
        let opens_rate_limited = registered(
            &registry,
            IntCounter::new(
                "sockwarden_probe_opens_rate_limited_total",
                "Opens failing with ENXIO not queued because their cgroup exceeded its rate",
            )?,
        )?;
        let blocked = registered(
            &registry,
            IntCounter::new(
                "sockwarden_probe_blocked_total",
                "Touches of a watched socket refused (EPERM) or stopped (SIGKILL) by the kernel under an Enforce verdict",
            )?,
        )?;
        let enforcing = registered(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "sockwarden_probe_enforcing",
                    "1 while this node enforces an Enforce verdict, by how it blocks",
                ),
                &["blocks_with"],
            )?,
        )?;
        let decode_errors = registered(
            &registry,
            IntCounter::new(
                "sockwarden_probe_decode_errors_total",
                "Ring-buffer records that could not be decoded",
            )?,
        )?;
        let open_unresolved = registered(
            &registry,
            IntCounter::new(
                "sockwarden_probe_open_unresolved_total",
                "Opens failing with ENXIO whose target could not be resolved (caller gone)",
            )?,
        )?;
        let sockets_armed = registered(
            &registry,
            IntGauge::new(
                "sockwarden_probe_sockets_armed",
                "Runtime sockets currently watched",
            )?,
        )?;
        let backend_info = registered(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "sockwarden_probe_backend_info",
                    "Attach backend in use (value 1)",
                ),
                &["backend"],
            )?,
        )?;
        let detection_latency = registered(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "sockwarden_probe_detection_latency_seconds",
                    "Time from the kernel hook to the finding being written",
                )
                .buckets(vec![
                    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
                ]),
            )?,
        )?;
        let program_runs = registered(&registry, IntGaugeVec::new(
            Opts::new("sockwarden_probe_program_runs", "Runs of each eBPF program (kernel BPF statistics; needs kernel.bpf_stats_enabled=1)"),
            &["program"],
        )?)?;
        let program_run_seconds = registered(&registry, GaugeVec::new(
            Opts::new("sockwarden_probe_program_run_seconds", "Total run time of each eBPF program (kernel BPF statistics; needs kernel.bpf_stats_enabled=1)"),
            &["program"],
        )?)?;
        let api_write_errors = registered(
            &registry,
            IntCounter::new(
                "sockwarden_probe_api_write_errors_total",
                "Failed writes of findings to the API server (retried)",
            )?,
        )?;
        let write_queue_depth = registered(
            &registry,
            IntGauge::new(
                "sockwarden_probe_write_queue_depth",
                "Finding keys with increments waiting to be written",
            )?,
        )?;
        let pending_increments = registered(
            &registry,
            IntGauge::new(
                "sockwarden_probe_pending_increments",
                "Finding increments waiting to be written",
            )?,
        )?;
        let enrichment_misses = registered(
            &registry,
            IntCounter::new(
                "sockwarden_probe_enrichment_misses_total",
                "Findings whose pod could not be identified",
            )?,
        )?;
        let findings_dropped = registered(
            &registry,
            IntCounter::new(
                "sockwarden_probe_findings_dropped_total",
                "Findings lost to a full queue or the key bound",
            )?,
        )?;
        let exempt = registered(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "sockwarden_probe_exempt_total",
                    "Findings not reported because a policy exempts them",
                ),
                &["policy"],
            )?,
        )?;
        let finding_keys_capped = registered(
            &registry,
            IntCounter::new(
                "sockwarden_probe_finding_keys_capped_total",
                "New finding keys refused because their container already holds its maximum",
            )?,
        )?;
        let policies_invalid = registered(&registry, IntGauge::new(
            "sockwarden_probe_policies_invalid",
            "Policies not applied: not accepted by the operator for their current generation, or invalid",
        )?)?;
        let pods_out_of_scope = registered(
            &registry,
            IntGauge::new(
                "sockwarden_probe_pods_out_of_scope",
                "Pods on this node that no applied policy selects",
            )?,
        )?;
        let out_of_scope = registered(
            &registry,
            IntCounter::new(
                "sockwarden_probe_out_of_scope_total",
                "Findings not reported because no applied policy selects the pod",
            )?,
        )?;
        let self_test_last_success = registered(
            &registry,
            IntGauge::new(
                "sockwarden_probe_self_test_last_success_timestamp_seconds",
                "Unix time of the last self-test connect to the canary socket the backend reported",
            )?,
        )?;
        let self_test_failures = registered(
            &registry,
            IntCounter::new(
                "sockwarden_probe_self_test_failures_total",
                "Self-test connects to the canary socket that never came back as an event",
            )?,
        )?;
        let output_sent_total = registered(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "sockwarden_probe_output_sent_total",
                    "Findings an output delivered, by output",
                ),
                &["output"],
            )?,
        )?;
        let output_dropped_total = registered(&registry, IntCounterVec::new(
            Opts::new(
                "sockwarden_probe_output_dropped_total",
                "Findings an output lost, by output and reason (queue_full, retries_exhausted, rejected, shutdown)",
            ),
            &["output", "reason"],
        )?)?;
        let output_retries_total = registered(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "sockwarden_probe_output_retries_total",
                    "Failed attempts to deliver a finding that an output retried, by output",
                ),
                &["output"],
            )?,
        )?;
        let output_queue = registered(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "sockwarden_probe_output_queue_depth",
                    "Findings waiting in an output's queue, by output",
                ),
                &["output"],
            )?,
        )?;
        Ok(Self {
            registry,
            events,
            findings,
            finding_last_seen,
            ringbuf_drops,
            opens_rate_limited,
            blocked,
            enforcing,
            decode_errors,
            open_unresolved,
            sockets_armed,
            backend_info,
            detection_latency,
            program_runs,
            program_run_seconds,
            api_write_errors,
            write_queue_depth,
            pending_increments,
            enrichment_misses,
            findings_dropped,
            exempt,
            finding_keys_capped,
            policies_invalid,
            pods_out_of_scope,
            out_of_scope,
            self_test_last_success,
            self_test_failures,
            output_sent_total,
            output_dropped_total,
            output_retries_total,
            output_queue,
            pod_label_sets: Default::default(),
        })
    }

    /// Counts a finding and stamps its last-seen time, keeping the (namespace, pod) label
    /// pairs bounded. `namespace` and `pod` are the pod's namespace and name, both empty when
    /// no pod is known (always, in standalone mode); the other labels are the finding's own
    /// values, spelled as on its stdout line and API object, the same in both modes.
    pub fn count_finding(&self, namespace: &str, pod: &str, finding: &Finding) {
        let (ns, pod) = {
            let mut seen = self
                .pod_label_sets
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let pair = (namespace.to_string(), pod.to_string());
            if seen.contains(&pair) || seen.len() < MAX_POD_SERIES {
                seen.insert(pair.clone());
                pair
            } else {
                ("_other".to_string(), "_other".to_string())
            }
        };
        let labels = [
            ns.as_str(),
            pod.as_str(),
            finding.operation.as_str(),
            &finding.socket.runtime,
            finding.action.as_str(),
        ];
        self.findings.with_label_values(&labels).inc();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.finding_last_seen.with_label_values(&labels).set(now);
    }

    /// Counts a kernel event on a watched socket (before the host/container decision).
    pub fn count_event(&self, operation: probe_common::Operation, runtime: &str) {
        let operation = api::FindingOperation::from(operation);
        self.events
            .with_label_values(&[operation.as_str(), runtime])
            .inc();
    }

    /// Names the attach backend in use.
    pub fn set_backend(&self, backend: BackendKind) {
        self.backend_info
            .with_label_values(&[backend.as_str()])
            .set(1);
    }

    pub fn output_sent(&self, output: &str) -> IntCounter {
        self.output_sent_total.with_label_values(&[output])
    }

    pub fn output_dropped(&self, output: &str, reason: &str) -> IntCounter {
        self.output_dropped_total
            .with_label_values(&[output, reason])
    }

    pub fn output_retries(&self, output: &str) -> IntCounter {
        self.output_retries_total.with_label_values(&[output])
    }

    pub fn output_queue_depth(&self, output: &str) -> IntGauge {
        self.output_queue.with_label_values(&[output])
    }

    /// Brings the kernel-side counters up to the kernel's totals; returns the events lost
    /// since the last call (for a log line).
    pub fn record_kernel_counts(&self, counts: KernelCounts) -> u64 {
        let mut lost = 0;
        for (ring, total) in [
            ("connects", counts.connect_ring_drops),
            ("events", counts.event_ring_drops),
        ] {
            let counter = self.ringbuf_drops.with_label_values(&[ring]);
            let new = total.saturating_sub(counter.get());
            counter.inc_by(new);
            lost += new;
        }
        let limited = counts
            .opens_limited
            .saturating_sub(self.opens_rate_limited.get());
        self.opens_rate_limited.inc_by(limited);
        self.blocked
            .inc_by(counts.blocked.saturating_sub(self.blocked.get()));
        lost
    }

    pub fn render(&self) -> String {
        runtime::admin::render(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::sample;

    #[test]
    fn pod_label_pairs_are_bounded() {
        let m = Metrics::new().unwrap();
        let f = sample();
        for i in 0..(MAX_POD_SERIES + 50) {
            m.count_finding("ns", &format!("pod-{i}"), &f);
        }
        let text = m.render();
        let series = text
            .lines()
            .filter(|l| l.starts_with("sockwarden_probe_findings_total{"))
            .count();
        assert_eq!(series, MAX_POD_SERIES + 1);
        let stamps = text
            .lines()
            .filter(|l| l.starts_with("sockwarden_probe_finding_last_seen_timestamp_seconds{"))
            .count();
        assert_eq!(
            stamps,
            MAX_POD_SERIES + 1,
            "last-seen stamps share the bound"
        );
        assert!(
            text.contains(
                r#"namespace="_other",operation="connect",pod="_other",runtime="docker"} 50"#
            ),
            "{text}"
        );
    }

    #[test]
    fn a_first_finding_is_stamped_with_the_present_time() {
        let m = Metrics::new().unwrap();
        assert!(
            !m.render()
                .contains("sockwarden_probe_finding_last_seen_timestamp_seconds{"),
            "no series before a finding"
        );
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        m.count_finding("shop", "web-1", &sample());
        let stamp = m
            .finding_last_seen
            .with_label_values(&["shop", "web-1", "connect", "docker", "Audit"])
            .get();
        assert!(
            stamp >= before.floor() && stamp < before + 60.0,
            "{stamp} vs {before}"
        );
        assert_eq!(
            m.findings
                .with_label_values(&["shop", "web-1", "connect", "docker", "Audit"])
                .get(),
            1
        );
    }

    #[test]
    fn exposition_names_every_metric_with_its_labels() {
        let m = Metrics::new().unwrap();
        m.count_event(probe_common::Operation::Connect, "docker");
        m.count_event(probe_common::Operation::Open, "docker");
        m.count_finding("", "", &sample());
        let lost = m.record_kernel_counts(KernelCounts {
            connect_ring_drops: 0,
            event_ring_drops: 3,
            opens_limited: 7,
            blocked: 2,
        });
        assert_eq!(lost, 3);
        // totals, not increments: the same totals again add nothing
        let lost = m.record_kernel_counts(KernelCounts {
            connect_ring_drops: 1,
            event_ring_drops: 3,
            opens_limited: 9,
            blocked: 2,
        });
        assert_eq!(lost, 1);
        m.set_backend(BackendKind::Tracepoint);
        let text = m.render();
        assert!(text.contains(r#"sockwarden_probe_findings_total{action="Audit",namespace="",operation="connect",pod="",runtime="docker"} 1"#), "{text}");
        for op in ["connect", "open"] {
            let line =
                format!(r#"sockwarden_probe_events_total{{operation="{op}",runtime="docker"}} 1"#);
            assert!(text.contains(&line), "{text}");
        }
        assert!(text.contains(r#"sockwarden_probe_ringbuf_drops_total{ring="events"} 3"#));
        assert!(text.contains("sockwarden_probe_blocked_total 2"), "{text}");
        assert!(text.contains(r#"sockwarden_probe_ringbuf_drops_total{ring="connects"} 1"#));
        assert!(text.contains("sockwarden_probe_opens_rate_limited_total 9"));
        assert!(text.contains(r#"sockwarden_probe_backend_info{backend="tracepoint"} 1"#));
        assert!(text.contains("sockwarden_probe_sockets_armed 0"));
    }
}
