//! The node probe's Prometheus metrics (prefix `sockwarden_probe_`).
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    /// Matched kernel events, by operation and runtime (before the host/container decision).
    pub events: IntCounterVec,
    pub findings: IntCounterVec,
    /// Ring-buffer reservation failures in the kernel: events lost, never silently.
    pub ringbuf_drops: IntCounter,
    pub decode_errors: IntCounter,
    /// Opens with write intent that failed with ENXIO whose target could not be resolved.
    pub open_unresolved: IntCounter,
    pub sockets_armed: IntGauge,
    pub backend_info: IntGaugeVec,
    /// Kernel hook to finding written, in seconds.
    pub detection_latency: Histogram,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let events = IntCounterVec::new(
            Opts::new(
                "sockwarden_probe_events_total",
                "Kernel events on watched sockets, by operation and runtime",
            ),
            &["operation", "runtime"],
        )?;
        let findings = IntCounterVec::new(
            Opts::new(
                "sockwarden_probe_findings_total",
                "Findings reported, by operation, runtime and action",
            ),
            &["operation", "runtime", "action"],
        )?;
        let ringbuf_drops = IntCounter::new(
            "sockwarden_probe_ringbuf_drops_total",
            "Events lost because the kernel ring buffer was full",
        )?;
        let decode_errors = IntCounter::new(
            "sockwarden_probe_decode_errors_total",
            "Ring-buffer records that could not be decoded",
        )?;
        let open_unresolved = IntCounter::new(
            "sockwarden_probe_open_unresolved_total",
            "Opens failing with ENXIO whose target could not be resolved (caller gone)",
        )?;
        let sockets_armed = IntGauge::new(
            "sockwarden_probe_sockets_armed",
            "Runtime sockets currently watched",
        )?;
        let backend_info = IntGaugeVec::new(
            Opts::new(
                "sockwarden_probe_backend_info",
                "Attach backend in use (value 1)",
            ),
            &["backend"],
        )?;
        let detection_latency = Histogram::with_opts(
            HistogramOpts::new(
                "sockwarden_probe_detection_latency_seconds",
                "Time from the kernel hook to the finding being written",
            )
            .buckets(vec![
                0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
            ]),
        )?;
        registry.register(Box::new(events.clone()))?;
        registry.register(Box::new(findings.clone()))?;
        registry.register(Box::new(ringbuf_drops.clone()))?;
        registry.register(Box::new(decode_errors.clone()))?;
        registry.register(Box::new(open_unresolved.clone()))?;
        registry.register(Box::new(sockets_armed.clone()))?;
        registry.register(Box::new(backend_info.clone()))?;
        registry.register(Box::new(detection_latency.clone()))?;
        Ok(Self {
            registry,
            events,
            findings,
            ringbuf_drops,
            decode_errors,
            open_unresolved,
            sockets_armed,
            backend_info,
            detection_latency,
        })
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_metric_with_its_labels() {
        let m = Metrics::new().unwrap();
        m.events.with_label_values(&["connect", "docker"]).inc();
        m.findings
            .with_label_values(&["connect", "docker", "audit"])
            .inc();
        m.ringbuf_drops.inc_by(3);
        m.backend_info.with_label_values(&["tracepoint"]).set(1);
        let text = m.render();
        assert!(text.contains(r#"sockwarden_probe_findings_total{action="audit",operation="connect",runtime="docker"} 1"#), "{text}");
        assert!(text.contains("sockwarden_probe_ringbuf_drops_total 3"));
        assert!(text.contains(r#"sockwarden_probe_backend_info{backend="tracepoint"} 1"#));
        assert!(text.contains("sockwarden_probe_sockets_armed 0"));
    }
}
