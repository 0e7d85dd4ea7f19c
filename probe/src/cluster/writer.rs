//! Writes findings as `DockerAbuseFinding` objects without flooding the API server.
//!
//! One entry per finding key holds the increments not yet written. A key is written at once
//! the first time, then at most once per `per_key_interval`; all keys share a token bucket
//! (`rate_per_sec`, `burst`). A failed write keeps its increments, which merge with new ones,
//! and is retried with exponential backoff, so the count is exact once the API recovers. The
//! number of keys is bounded (`max_keys`); a new key beyond it is dropped and counted. So
//! that one container cannot crowd out the others (a pod running thousands of differently
//! named binaries), each container holds at most `max_keys_per_container` keys, beyond which
//! its new keys are counted in `sockwarden_probe_finding_keys_capped_total`; a container's
//! first key is always taken, even past `max_keys`.
//!
//! The count is absolute, not incremented: the first write of a key in this process applies
//! the spec (server-side apply), which returns the object with its current count; every
//! status write then sets `committed + pending`. Each pod lives on one node, so one probe
//! owns each key. A finding's spec is fixed once written (the chart's admission policy
//! refuses changes): when a restarted probe's apply is refused, the stored object is read
//! with an empty merge patch and counting continues on it.
use std::{collections::HashMap, sync::Arc, time::Duration};

use api::{label_value, DockerAbuseFinding, DockerAbuseFindingSpec, NODE_LABEL, POLICY_LABEL};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    api::{Patch, PatchParams},
    Api, Client,
};
use serde_json::json;
use tokio::time::Instant;

use crate::metrics::Metrics;

pub const FIELD_MANAGER: &str = "sockwarden-probe";

#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub per_key_interval: Duration,
    pub rate_per_sec: f64,
    pub burst: f64,
    pub max_keys: usize,
    pub max_keys_per_container: usize,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    pub node: String,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            per_key_interval: Duration::from_secs(5),
            rate_per_sec: 20.0,
            burst: 50.0,
            max_keys: 10_000,
            max_keys_per_container: 64,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            node: String::new(),
        }
    }
}

struct Entry {
    spec: DockerAbuseFindingSpec,
    pending: i64,
    first_pending: Timestamp,
    last_pending: Timestamp,
    /// The count the API holds, once this process has read it.
    committed: Option<i64>,
    first_seen: Option<Time>,
    last_write: Option<Instant>,
    retry_at: Option<Instant>,
    backoff: Duration,
}

type Key = (String, String); // (namespace, name)

pub struct FindingWriter {
    client: Client,
    cfg: WriterConfig,
    entries: HashMap<Key, Entry>,
    /// Keys held per container id.
    per_container: HashMap<String, usize>,
    tokens: f64,
    refilled: Instant,
    metrics: Arc<Metrics>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    /// The first occurrence of this key in this process.
    New,
    Merged,
    /// The key bound was reached: counted in `sockwarden_probe_findings_dropped_total`.
    Dropped,
}

impl FindingWriter {
    pub fn new(client: Client, cfg: WriterConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            tokens: cfg.burst,
            refilled: Instant::now(),
            cfg,
            entries: HashMap::new(),
            per_container: HashMap::new(),
            metrics,
        }
    }

    /// Counts one occurrence of a finding.
    pub fn record(
        &mut self,
        namespace: &str,
        name: &str,
        spec: DockerAbuseFindingSpec,
        at: Timestamp,
    ) -> Recorded {
        self.record_many(namespace, name, spec, at, 1)
    }

    /// Counts `count` occurrences of a finding.
    pub fn record_many(
        &mut self,
        namespace: &str,
        name: &str,
        spec: DockerAbuseFindingSpec,
        at: Timestamp,
        count: i64,
    ) -> Recorded {
        let key = (namespace.to_string(), name.to_string());
        if let Some(e) = self.entries.get_mut(&key) {
            // A later event may know what an earlier one could not read from /proc.
            if e.spec.process.exe.is_none() && spec.process.exe.is_some() {
                e.spec.process = spec.process;
            }
            if e.pending == 0 {
                e.first_pending = at;
                self.metrics.write_queue_depth.inc();
            }
            e.pending += count;
            e.last_pending = at;
            self.metrics.pending_increments.add(count);
            return Recorded::Merged;
        }
        let container = spec.container.id.clone();
        let held = self.per_container.get(&container).copied().unwrap_or(0);
        if held >= self.cfg.max_keys_per_container.max(1) {
            self.forget_written();
        }
        let held = self.per_container.get(&container).copied().unwrap_or(0);
        if held >= self.cfg.max_keys_per_container.max(1) {
            self.metrics.finding_keys_capped.inc();
            return Recorded::Dropped;
        }
        if self.entries.len() >= self.cfg.max_keys && held > 0 {
            self.forget_written();
            if self.entries.len() >= self.cfg.max_keys {
                self.metrics.findings_dropped.inc();
                return Recorded::Dropped;
            }
        }
        *self.per_container.entry(container).or_default() += 1;
        self.entries.insert(
            key,
            Entry {
                spec,
                pending: count,
                first_pending: at,
                last_pending: at,
                committed: None,
                first_seen: None,
                last_write: None,
                retry_at: None,
                backoff: Duration::ZERO,
            },
        );
        self.metrics.write_queue_depth.inc();
        self.metrics.pending_increments.add(count);
        Recorded::New
    }

    /// Forgets keys with nothing pending (their count lives in the API; a later occurrence
    /// reads it back), and recounts the keys per container.
    fn forget_written(&mut self) {
        self.entries.retain(|_, e| e.pending > 0);
        self.per_container.clear();
        for e in self.entries.values() {
            *self
                .per_container
                .entry(e.spec.container.id.clone())
                .or_default() += 1;
        }
    }

    /// Recounts the queue gauges from the entries (after writes; `record` keeps them current
    /// in O(1), so the per-finding path never walks every key).
    fn publish_gauges(&self) {
        let (mut keys, mut increments) = (0, 0);
        for e in self.entries.values().filter(|e| e.pending > 0) {
            keys += 1;
            increments += e.pending;
        }
        self.metrics.write_queue_depth.set(keys);
        self.metrics.pending_increments.set(increments);
    }

    /// Increments not yet written, over all keys.
    pub fn pending(&self) -> i64 {
        self.entries.values().map(|e| e.pending).sum()
    }

    /// The earliest moment a pending key may be written.
    pub fn next_due(&self) -> Option<Instant> {
        let now = Instant::now();
        self.entries
            .values()
            .filter(|e| e.pending > 0)
            .map(|e| self.due_at(e).unwrap_or(now))
            .min()
    }

    /// When an entry may be written next; `None` is "now" (never written, no backoff).
    fn due_at(&self, e: &Entry) -> Option<Instant> {
        let by_interval = e.last_write.map(|t| t + self.cfg.per_key_interval);
        [by_interval, e.retry_at].into_iter().flatten().max()
    }

    /// Writes every key that is due, as far as the token bucket allows. Returns API calls made.
    pub async fn flush(&mut self) -> usize {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.cfg.rate_per_sec).min(self.cfg.burst);
        self.refilled = now;
        let mut due: Vec<(Timestamp, &str, Key)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.pending > 0 && self.due_at(e).is_none_or(|t| t <= now))
            .map(|(k, e)| (e.first_pending, e.spec.container.id.as_str(), k.clone()))
            .collect();
        due.sort();
        // Round robin over containers, the smallest backlog first, oldest first within each:
        // a container with thousands of keys queued (an outage, a hostile pod) cannot make
        // another container's first finding wait behind it.
        let mut backlog: HashMap<&str, usize> = HashMap::new();
        for (_, container, _) in &due {
            *backlog.entry(container).or_default() += 1;
        }
        let mut turn: HashMap<&str, usize> = HashMap::new();
        let mut order: Vec<(usize, usize, Timestamp, Key)> = due
            .into_iter()
            .map(|(at, container, key)| {
                let n = turn.entry(container).or_default();
                *n += 1;
                (*n, backlog[container], at, key)
            })
            .collect();
        order.sort();
        let mut calls = 0;
        for (_, _, _, key) in order {
            if self.tokens < 1.0 {
                break;
            }
            self.tokens -= 1.0;
            calls += self.write(&key).await;
        }
        self.publish_gauges();
        calls
    }

    async fn write(&mut self, key: &Key) -> usize {
        let api: Api<DockerAbuseFinding> = Api::namespaced(self.client.clone(), &key.0);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let Some(e) = self.entries.get_mut(key) else {
            return 0;
        };
        let mut calls = 0;
        if e.committed.is_none() {
            let body = json!({
                "apiVersion": "sockwarden.io/v1alpha1",
                "kind": "DockerAbuseFinding",
                // Label values hold 63 characters; names may have 253 (the full ones are
                // spec.policy and spec.node).
                "metadata": {"name": key.1, "namespace": key.0, "labels": {
                    POLICY_LABEL: label_value(&e.spec.policy),
                    NODE_LABEL: label_value(&self.cfg.node),
                }},
                "spec": e.spec,
            });
            calls += 1;
            let mut applied = api.patch(&key.1, &params, &Patch::Apply(&body)).await;
            if matches!(&applied, Err(kube::Error::Api(s)) if s.code == 403 || s.code == 422) {
                // The chart's admission policy keeps a finding's spec as first written; after
                // a restart this process may see the same key with, say, another exe. Keep
                // the stored spec and read its count (an empty merge patch changes nothing).
                tracing::info!(finding = %key.1, namespace = %key.0, "the stored finding keeps its first spec; counting on it");
                calls += 1;
                applied = api
                    .patch(&key.1, &PatchParams::default(), &Patch::Merge(json!({})))
                    .await;
            }
            match applied {
                Ok(obj) => {
                    let status = obj.status.unwrap_or_default();
                    e.committed = Some(status.count);
                    e.first_seen = status.first_seen;
                }
                Err(err) => {
                    Self::failed(e, &err, &self.cfg, &self.metrics);
                    return calls;
                }
            }
        }
        // The stored count may have been written by anyone allowed to: never overflow on it.
        let count = e.committed.unwrap_or(0).max(0).saturating_add(e.pending);
        let first_seen = e.first_seen.clone().unwrap_or(Time(e.first_pending));
        let body = json!({
            "apiVersion": "sockwarden.io/v1alpha1",
            "kind": "DockerAbuseFinding",
            "metadata": {"name": key.1, "namespace": key.0},
            "status": {"count": count, "firstSeen": first_seen, "lastSeen": Time(e.last_pending)},
        });
        calls += 1;
        match api
            .patch_status(&key.1, &params, &Patch::Apply(&body))
            .await
        {
            Ok(_) => {
                e.committed = Some(count);
                e.first_seen = Some(first_seen);
                e.pending = 0;
                e.last_write = Some(Instant::now());
                e.retry_at = None;
                e.backoff = Duration::ZERO;
            }
            Err(err) => {
                if matches!(&err, kube::Error::Api(s) if s.code == 404) {
                    e.committed = None; // deleted meanwhile (TTL): recreate
                }
                Self::failed(e, &err, &self.cfg, &self.metrics);
            }
        }
        calls
    }

    fn failed(e: &mut Entry, err: &kube::Error, cfg: &WriterConfig, metrics: &Metrics) {
        metrics.api_write_errors.inc();
        e.backoff = (e.backoff * 2).clamp(cfg.min_backoff, cfg.max_backoff);
        e.retry_at = Some(Instant::now() + e.backoff);
        tracing::warn!(error = %err, retry_in = ?e.backoff, pending = e.pending, "writing a finding failed; increments kept for retry");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::testing::{finding_spec, ApiDouble};

    fn writer(api: &ApiDouble, cfg: WriterConfig) -> FindingWriter {
        FindingWriter::new(api.client(), cfg, Arc::new(Metrics::new().unwrap()))
    }

    #[tokio::test(start_paused = true)]
    async fn first_write_applies_spec_with_field_manager_then_sets_the_count() {
        let api = ApiDouble::start();
        let mut w = writer(
            &api,
            WriterConfig {
                node: "n1".into(),
                ..Default::default()
            },
        );
        assert_eq!(
            w.record("shop", "daf-1", finding_spec(), Timestamp::now()),
            Recorded::New
        );
        assert_eq!(w.flush().await, 2);
        let calls = api.calls();
        assert_eq!(calls[0].method, "PATCH");
        assert!(
            calls[0].uri.starts_with(
                "/apis/sockwarden.io/v1alpha1/namespaces/shop/dockerabusefindings/daf-1?"
            ),
            "{}",
            calls[0].uri
        );
        assert!(
            calls[0].uri.contains("fieldManager=sockwarden-probe")
                && calls[0].uri.contains("force=true")
        );
        assert_eq!(calls[0].body["spec"]["pod"]["name"], "web-1");
        assert_eq!(
            calls[0].body["metadata"]["labels"]["sockwarden.io/policy"],
            "default"
        );
        assert_eq!(
            calls[0].body["metadata"]["labels"]["sockwarden.io/node"],
            "n1"
        );
        assert!(calls[1].uri.starts_with(
            "/apis/sockwarden.io/v1alpha1/namespaces/shop/dockerabusefindings/daf-1/status?"
        ));
        assert_eq!(calls[1].body["status"]["count"], 1);
        assert_eq!(api.count("shop", "daf-1"), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn long_policy_and_node_names_are_hashed_in_labels_and_kept_whole_in_the_spec() {
        let api = ApiDouble::start();
        let node = format!("node-{}", "n".repeat(200));
        let policy = format!("policy-{}", "p".repeat(240));
        let mut w = writer(
            &api,
            WriterConfig {
                node: node.clone(),
                ..Default::default()
            },
        );
        let mut spec = finding_spec();
        spec.policy = policy.clone();
        spec.node = node.clone();
        w.record("shop", "daf-1", spec, Timestamp::now());
        w.flush().await;
        let body = &api.calls()[0].body;
        let labels = &body["metadata"]["labels"];
        assert_eq!(labels["sockwarden.io/policy"], api::label_value(&policy));
        assert_eq!(labels["sockwarden.io/node"], api::label_value(&node));
        for l in ["sockwarden.io/policy", "sockwarden.io/node"] {
            assert!(labels[l].as_str().unwrap().len() <= 63, "{l}: {labels}");
        }
        assert_eq!(body["spec"]["policy"], policy.as_str());
        assert_eq!(body["spec"]["node"], node.as_str());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stored_count_at_the_top_of_i64_saturates_instead_of_overflowing() {
        let api = ApiDouble::start();
        api.preload("shop", "daf-1", i64::MAX);
        let mut w = writer(&api, WriterConfig::default());
        w.record_many("shop", "daf-1", finding_spec(), Timestamp::now(), 5);
        assert_eq!(w.flush().await, 2);
        assert_eq!(api.count("shop", "daf-1"), Some(i64::MAX));
    }

    #[tokio::test(start_paused = true)]
    async fn ten_thousand_repeats_in_a_second_make_a_handful_of_writes_and_an_exact_count() {
        let api = ApiDouble::start();
        let mut w = writer(&api, WriterConfig::default());
        for i in 0..10_000 {
            w.record("shop", "daf-1", finding_spec(), Timestamp::now());
            if i % 100 == 0 {
                w.flush().await;
                tokio::time::advance(Duration::from_millis(10)).await;
            }
        }
        // drain: wait out the per-key interval
        for _ in 0..20 {
            tokio::time::advance(Duration::from_secs(1)).await;
            w.flush().await;
        }
        assert_eq!(api.count("shop", "daf-1"), Some(10_000));
        let writes = api.calls().len();
        assert!(writes <= 4, "{writes} API calls for one flooding key");
        assert_eq!(w.pending(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn api_errors_for_a_while_then_recovery_give_an_exact_count() {
        let api = ApiDouble::start();
        let mut w = writer(&api, WriterConfig::default());
        async fn phase(w: &mut FindingWriter, increments: usize) {
            for _ in 0..increments / 10 {
                for _ in 0..10 {
                    w.record("shop", "daf-1", finding_spec(), Timestamp::now());
                }
                w.flush().await;
                tokio::time::advance(Duration::from_millis(100)).await;
            }
            // the API is back: wait out the backoff (capped at a minute)
            for _ in 0..30 {
                tokio::time::advance(Duration::from_secs(60)).await;
                w.flush().await;
            }
        }
        api.fail_next(10, 500); // the API server fails...
        phase(&mut w, 300).await;
        assert_eq!(
            api.count("shop", "daf-1"),
            Some(300),
            "exact after recovering from 500s"
        );
        assert_eq!(w.metrics.api_write_errors.get(), 10);
        api.fail_next(5, 429); // ...then throttles
        phase(&mut w, 300).await;
        assert_eq!(
            api.count("shop", "daf-1"),
            Some(600),
            "exact after recovering from 429s"
        );
        assert_eq!(w.metrics.api_write_errors.get(), 15);
        assert_eq!(w.pending(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn existing_count_in_the_api_is_continued_not_reset() {
        let api = ApiDouble::start();
        api.preload("shop", "daf-1", 41);
        let mut w = writer(&api, WriterConfig::default());
        w.record("shop", "daf-1", finding_spec(), Timestamp::now());
        w.flush().await;
        assert_eq!(api.count("shop", "daf-1"), Some(42));
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_restart_a_refused_spec_change_keeps_the_stored_spec_and_continues_its_count() {
        let api = ApiDouble::start();
        api.preload("shop", "daf-1", 41);
        api.refuse_spec_changes();
        let mut w = writer(&api, WriterConfig::default());
        let mut changed = finding_spec();
        changed.process.exe = Some("/tmp/other-exe".into()); // read from /proc this time
        w.record("shop", "daf-1", changed, Timestamp::now());
        assert_eq!(w.flush().await, 3, "apply (refused), read, status");
        assert_eq!(api.count("shop", "daf-1"), Some(42));
        assert_eq!(w.metrics.api_write_errors.get(), 0);
        let stored = &api.findings()[0];
        assert_eq!(
            stored["spec"],
            serde_json::to_value(finding_spec()).unwrap()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn one_container_with_thousands_of_programs_cannot_crowd_out_another_containers_finding()
    {
        let api = ApiDouble::start();
        let mut w = writer(
            &api,
            WriterConfig {
                max_keys: 100,
                max_keys_per_container: 8,
                ..Default::default()
            },
        );
        api.fail_next(100_000, 503); // the API is down: nothing leaves the queue
        for i in 0..10_000 {
            let mut spec = finding_spec();
            spec.process.comm = format!("prog-{i}");
            let r = w.record("shop", &format!("daf-a-{i}"), spec, Timestamp::now());
            assert_eq!(
                r,
                if i < 8 {
                    Recorded::New
                } else {
                    Recorded::Dropped
                },
                "{i}"
            );
        }
        assert_eq!(w.metrics.finding_keys_capped.get(), 10_000 - 8);
        // Other containers fill the global bound ...
        for c in 0..92 {
            let mut spec = finding_spec();
            spec.container.id = format!("filler-{c}");
            assert_eq!(
                w.record("shop", &format!("daf-f-{c}"), spec, Timestamp::now()),
                Recorded::New
            );
        }
        // ... and a container's first finding is still taken, and written once the API is back.
        let mut other = finding_spec();
        other.container.id = "c2".into();
        assert_eq!(
            w.record("bank", "daf-b", other.clone(), Timestamp::now()),
            Recorded::New
        );
        let mut second = other;
        second.process.comm = "sh".into();
        assert_eq!(
            w.record("bank", "daf-b2", second, Timestamp::now()),
            Recorded::Dropped,
            "past the global bound only a container's first key is taken"
        );
        api.fail_next(0, 503);
        for _ in 0..40 {
            w.flush().await;
            tokio::time::advance(Duration::from_secs(5)).await;
        }
        assert_eq!(api.count("bank", "daf-b"), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn after_an_outage_a_new_containers_first_finding_is_written_before_anothers_backlog() {
        let api = ApiDouble::start();
        let mut w = writer(
            &api,
            WriterConfig {
                rate_per_sec: 1.0,
                burst: 1.0,
                ..Default::default()
            },
        );
        for i in 0..30 {
            let mut spec = finding_spec();
            spec.process.comm = format!("prog-{i}");
            w.record("shop", &format!("daf-a-{i}"), spec, Timestamp::now());
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        let mut other = finding_spec();
        other.container.id = "c2".into();
        w.record("bank", "daf-b", other, Timestamp::now());
        w.flush().await; // one token: one key
        assert_eq!(api.count("bank", "daf-b"), Some(1), "{:?}", api.findings());
    }

    #[tokio::test(start_paused = true)]
    async fn key_bound_drops_new_keys_and_counts_them_memory_stays_bounded() {
        let api = ApiDouble::start();
        let mut w = writer(
            &api,
            WriterConfig {
                max_keys: 3,
                ..Default::default()
            },
        );
        api.fail_next(1000, 503); // nothing can be written: keys stay pending
        for i in 0..5 {
            let r = w.record(
                "shop",
                &format!("daf-{i}"),
                finding_spec(),
                Timestamp::now(),
            );
            assert_eq!(
                r,
                if i < 3 {
                    Recorded::New
                } else {
                    Recorded::Dropped
                }
            );
        }
        assert_eq!(w.metrics.findings_dropped.get(), 2);
        assert_eq!(w.entries.len(), 3);
        // existing keys still merge
        assert_eq!(
            w.record("shop", "daf-0", finding_spec(), Timestamp::now()),
            Recorded::Merged
        );
        // the queue gauges follow every record without a recount
        assert_eq!(w.metrics.write_queue_depth.get(), 3);
        assert_eq!(w.metrics.pending_increments.get(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn global_token_bucket_spreads_many_keys_over_time() {
        let api = ApiDouble::start();
        let mut w = writer(
            &api,
            WriterConfig {
                rate_per_sec: 10.0,
                burst: 10.0,
                ..Default::default()
            },
        );
        for i in 0..50 {
            w.record(
                "shop",
                &format!("daf-{i}"),
                finding_spec(),
                Timestamp::now(),
            );
        }
        let first = w.flush().await;
        assert!(
            first <= 20,
            "burst of 10 tokens, 2 calls per new key: {first}"
        );
        let mut seconds = 0;
        while w.pending() > 0 {
            tokio::time::advance(Duration::from_secs(1)).await;
            w.flush().await;
            seconds += 1;
            assert!(seconds < 60);
        }
        assert!(
            seconds >= 3,
            "50 keys at 10 writes/s take several seconds, took {seconds}"
        );
    }
}
