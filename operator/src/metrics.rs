//! The operator's Prometheus metrics (prefix `sockwarden_operator_`).
use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use runtime::admin::registered;

pub struct Metrics {
    pub registry: Registry,
    pub reconciles: IntCounterVec,
    pub reconcile_errors: IntCounterVec,
    pub reconcile_duration: HistogramVec,
    /// Sum of finding counts by namespace, operation and action (from the findings cache).
    pub findings: IntGaugeVec,
    pub findings_deleted: IntCounterVec,
    pub leader: IntGauge,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let reconciles = registered(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "sockwarden_operator_reconciles_total",
                    "Reconciles run, by controller",
                ),
                &["controller"],
            )?,
        )?;
        let reconcile_errors = registered(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "sockwarden_operator_reconcile_errors_total",
                    "Reconciles that failed, by controller and error",
                ),
                &["controller", "error"],
            )?,
        )?;
        let reconcile_duration = registered(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "sockwarden_operator_reconcile_duration_seconds",
                    "Reconcile duration",
                )
                .buckets(vec![0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
                &["controller"],
            )?,
        )?;
        let findings = registered(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "sockwarden_operator_findings",
                    "Findings (sum of counts) by namespace, operation and action",
                ),
                &["namespace", "operation", "action"],
            )?,
        )?;
        let findings_deleted = registered(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "sockwarden_operator_findings_deleted_total",
                    "Findings deleted, by reason (ttl, limit)",
                ),
                &["reason"],
            )?,
        )?;
        let leader = registered(
            &registry,
            IntGauge::new(
                "sockwarden_operator_leader",
                "1 while this replica holds the leader lease",
            )?,
        )?;
        Ok(Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            findings,
            findings_deleted,
            leader,
        })
    }

    /// What `/metrics` serves; tests read it.
    #[cfg(test)]
    pub fn render(&self) -> String {
        runtime::admin::render(&self.registry)
    }
}
