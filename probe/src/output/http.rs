//! The HTTP output: each reported finding POSTed as a Falco alert ([`super::falco`]) to one
//! URL (Falcosidekick, a webhook receiver). The event loop only ever does a `try_send` into a
//! bounded queue; one task sends, in order, one request at a time. A full queue drops the new
//! finding; connection errors, timeouts, 429 and 5xx are retried with exponential backoff a
//! bounded number of times; any other non-2xx answer is a rejection, not retried. Every loss
//! is counted in `sockwarden_probe_output_dropped_total{output="http",reason}`.
use std::{
    str::FromStr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    header::{HeaderName, HeaderValue, CONTENT_TYPE, USER_AGENT},
    Request, StatusCode, Uri,
};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

use super::{falco::FalcoEvent, Report};
use crate::metrics::Metrics;

/// The `output` label of this output's metrics.
pub const OUTPUT: &str = "http";
pub const DEFAULT_QUEUE: usize = 1000;

/// `--http-output-header 'Name: value'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderSpec {
    pub name: HeaderName,
    pub value: HeaderValue,
}

impl FromStr for HeaderSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, value) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: expected 'Name: value'"))?;
        Ok(Self {
            name: HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|e| format!("header name {:?}: {e}", name.trim()))?,
            value: HeaderValue::from_str(value.trim())
                .map_err(|e| format!("header value of {}: {e}", name.trim()))?,
        })
    }
}

/// `--http-output URL`: an absolute http:// or https:// URL.
pub fn parse_url(s: &str) -> Result<Uri, String> {
    let uri: Uri = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.authority().is_some() => Ok(uri),
        _ => Err(format!(
            "{s:?}: expected an http:// or https:// URL with a host"
        )),
    }
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub url: Uri,
    pub headers: Vec<HeaderSpec>,
    /// Findings waiting to be sent, at most.
    pub queue: usize,
    /// Per request, connection included.
    pub timeout: Duration,
    /// Attempts per finding, the first included.
    pub max_attempts: u32,
    pub backoff_first: Duration,
    pub backoff_max: Duration,
    /// After shutdown begins: how long queued findings may still take to send.
    pub flush_for: Duration,
}

impl HttpConfig {
    pub fn new(url: Uri, headers: Vec<HeaderSpec>, queue: usize) -> Self {
        Self {
            url,
            headers,
            queue: queue.max(1),
            timeout: Duration::from_secs(5),
            max_attempts: 5,
            backoff_first: Duration::from_millis(250),
            backoff_max: Duration::from_secs(4),
            flush_for: Duration::from_secs(5),
        }
    }

    /// Wait before attempt `failed + 1`: doubling from `backoff_first`, capped.
    fn backoff(&self, failed: u32) -> Duration {
        self.backoff_first
            .saturating_mul(1 << failed.saturating_sub(1).min(16))
            .min(self.backoff_max)
    }
}

/// The event loop's side of the queue.
pub struct HttpOutput {
    tx: mpsc::Sender<Bytes>,
    metrics: Arc<Metrics>,
    /// Whether a full queue has been logged since the last delivery (one line per outage,
    /// not one per finding).
    warned_full: Arc<AtomicBool>,
}

impl HttpOutput {
    /// Queues the finding without waiting; a full queue drops it, counted.
    pub fn offer(&self, report: &Report) {
        if self.tx.capacity() == 0 && !self.tx.is_closed() {
            // Full: not worth serialising (a flood against a dead receiver stays cheap).
            return self.queue_full();
        }
        let body = Bytes::from(FalcoEvent::from_report(report).to_json());
        // Counted before it can be taken, so the gauge never goes below zero.
        let depth = self.metrics.output_queue_depth(OUTPUT);
        depth.inc();
        match self.tx.try_send(body) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                depth.dec();
                self.queue_full();
            }
            // The sender has stopped (its flush time after shutdown is over).
            Err(mpsc::error::TrySendError::Closed(_)) => {
                depth.dec();
                self.metrics.output_dropped(OUTPUT, "shutdown").inc();
            }
        }
    }

    fn queue_full(&self) {
        self.metrics.output_dropped(OUTPUT, "queue_full").inc();
        if !self.warned_full.swap(true, Ordering::Relaxed) {
            tracing::warn!("the HTTP output's queue is full: findings are dropped until it drains");
        }
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

fn client(url: &Uri) -> anyhow::Result<HttpClient> {
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = if url.scheme_str() == Some("https") {
        builder.with_native_roots().map_err(|e| {
            anyhow::anyhow!("--http-output {url}: no CA certificates to verify it with: {e}")
        })?
    } else {
        // Plain http: TLS is never used, no certificates needed.
        builder.with_tls_config(
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        )
    };
    let connector = builder.https_or_http().enable_http1().build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// Starts the sender task. It ends when every [`HttpOutput`] is dropped and the queue is
/// empty, or `flush_for` after `shutdown`, whichever is first; what is left then is counted as
/// dropped (`shutdown`).
pub fn start(
    config: HttpConfig,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(HttpOutput, tokio::task::JoinHandle<()>)> {
    let client = client(&config.url)?;
    // Every series exists from the start, at 0: "nothing lost" is visible, not absent.
    metrics.output_sent(OUTPUT);
    metrics.output_retries(OUTPUT);
    metrics.output_queue_depth(OUTPUT).set(0);
    for reason in ["queue_full", "retries_exhausted", "rejected", "shutdown"] {
        metrics.output_dropped(OUTPUT, reason);
    }
    let (tx, rx) = mpsc::channel(config.queue);
    let warned_full = Arc::new(AtomicBool::new(false));
    let output = HttpOutput {
        tx,
        metrics: metrics.clone(),
        warned_full: warned_full.clone(),
    };
    tracing::info!(url = %config.url, queue = config.queue, "posting findings as Falco alerts");
    let sender = Sender {
        client,
        config,
        metrics,
        shutdown,
        deadline: None,
        warned_full,
    };
    Ok((output, tokio::spawn(sender.run(rx))))
}

enum Outcome {
    Delivered,
    Rejected(StatusCode),
    Exhausted(String),
    OutOfTime,
}

struct Sender {
    client: HttpClient,
    config: HttpConfig,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
    /// Set when shutdown begins: the end of the flush.
    deadline: Option<Instant>,
    warned_full: Arc<AtomicBool>,
}

impl Sender {
    fn note_shutdown(&mut self) {
        if self.deadline.is_none() && *self.shutdown.borrow() {
            self.deadline = Some(Instant::now() + self.config.flush_for);
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Bytes>) {
        loop {
            self.note_shutdown();
            let deadline = self.deadline;
            let body = tokio::select! {
                body = rx.recv() => match body {
                    Some(body) => body,
                    None => break, // every producer is gone and the queue is empty
                },
                // Fires once; a dropped sender counts as shutdown too.
                _ = self.shutdown.changed(), if deadline.is_none() => {
                    self.deadline = Some(Instant::now() + self.config.flush_for);
                    continue;
                }
                _ = sleep_until(deadline), if deadline.is_some() => break,
            };
            self.metrics.output_queue_depth(OUTPUT).dec();
            match self.deliver(body).await {
                Outcome::Delivered => {
                    self.metrics.output_sent(OUTPUT).inc();
                    self.warned_full.store(false, Ordering::Relaxed);
                }
                Outcome::Rejected(status) => {
                    self.metrics.output_dropped(OUTPUT, "rejected").inc();
                    tracing::warn!(url = %self.config.url, %status, "the HTTP output refused a finding; not retried");
                }
                Outcome::Exhausted(reason) => {
                    self.metrics
                        .output_dropped(OUTPUT, "retries_exhausted")
                        .inc();
                    tracing::warn!(url = %self.config.url, attempts = self.config.max_attempts, error = %reason, "a finding could not be posted; dropped");
                }
                Outcome::OutOfTime => {
                    self.metrics.output_dropped(OUTPUT, "shutdown").inc();
                    break;
                }
            }
        }
        rx.close();
        let mut left = 0;
        while rx.try_recv().is_ok() {
            self.metrics.output_queue_depth(OUTPUT).dec();
            left += 1;
        }
        self.metrics.output_dropped(OUTPUT, "shutdown").inc_by(left);
        if left > 0 {
            tracing::warn!(
                left,
                "shutting down with findings the HTTP output could not send in time"
            );
        }
    }

    /// One finding, attempted until it is accepted, refused, out of attempts, or the flush
    /// time is over.
    async fn deliver(&mut self, body: Bytes) -> Outcome {
        let mut failed = 0;
        loop {
            self.note_shutdown();
            let mut timeout = self.config.timeout;
            if let Some(d) = self.deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Outcome::OutOfTime;
                }
                timeout = timeout.min(left);
            }
            let reason = match tokio::time::timeout(timeout, self.post(body.clone())).await {
                Ok(Ok(status)) if status.is_success() => return Outcome::Delivered,
                Ok(Ok(status))
                    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() =>
                {
                    format!("HTTP {status}")
                }
                Ok(Ok(status)) => return Outcome::Rejected(status),
                Ok(Err(e)) => e,
                Err(_) => format!("no answer within {timeout:?}"),
            };
            failed += 1;
            if failed >= self.config.max_attempts {
                return Outcome::Exhausted(reason);
            }
            self.metrics.output_retries(OUTPUT).inc();
            tracing::debug!(error = %reason, attempt = failed, "posting a finding failed; retrying");
            let until = Instant::now() + self.config.backoff(failed);
            if self.deadline.is_none() {
                // Shutdown may begin while waiting: the flush deadline then applies.
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    _ = self.shutdown.changed() => {
                        self.deadline = Some(Instant::now() + self.config.flush_for);
                    }
                }
            }
            if let Some(d) = self.deadline {
                if until >= d {
                    return Outcome::OutOfTime;
                }
                tokio::time::sleep_until(until).await;
            }
        }
    }

    /// One POST; the answer's status once its body is read (so the connection is reused).
    async fn post(&self, body: Bytes) -> Result<StatusCode, String> {
        let mut request = Request::post(self.config.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("sockwarden-probe/", env!("CARGO_PKG_VERSION")),
            );
        for h in &self.config.headers {
            request = request.header(&h.name, &h.value);
        }
        let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| error_chain(&e))?;
        let status = response.status();
        let _ = response.into_body().collect().await;
        Ok(status)
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// An error and its causes, `: `-separated (hyper's own message is only "client error").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::sample;
    use std::{collections::VecDeque, sync::Mutex};

    /// What a test receiver got, and the statuses it answers with next (then 200).
    #[derive(Default)]
    struct Received {
        bodies: Vec<serde_json::Value>,
        headers: Vec<axum::http::HeaderMap>,
        answers: VecDeque<u16>,
    }

    /// A receiver on 127.0.0.1 (never any other address).
    async fn receiver(answers: &[u16]) -> (Uri, Arc<Mutex<Received>>) {
        let state = Arc::new(Mutex::new(Received {
            answers: answers.iter().copied().collect(),
            ..Default::default()
        }));
        let shared = state.clone();
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let shared = shared.clone();
                    async move {
                        let mut r = shared.lock().unwrap();
                        r.bodies.push(serde_json::from_slice(&body).unwrap());
                        r.headers.push(headers);
                        let code = r.answers.pop_front().unwrap_or(200);
                        axum::http::StatusCode::from_u16(code).unwrap()
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url.parse().unwrap(), state)
    }

    fn config(url: Uri, queue: usize) -> HttpConfig {
        HttpConfig {
            timeout: Duration::from_secs(2),
            backoff_first: Duration::from_millis(10),
            backoff_max: Duration::from_millis(40),
            flush_for: Duration::from_secs(2),
            ..HttpConfig::new(url, Vec::new(), queue)
        }
    }

    fn offer_pid(out: &HttpOutput, pid: u32) {
        let mut f = sample();
        f.process.pid = pid;
        out.offer(&Report {
            finding: &f,
            kubernetes: None,
            count: 1,
        });
    }

    async fn until(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn dropped(m: &Metrics, reason: &str) -> u64 {
        m.output_dropped(OUTPUT, reason).get()
    }

    #[test]
    fn flags_parse_urls_and_headers_and_refuse_the_rest() {
        assert!(parse_url("http://falcosidekick.falco:2801/").is_ok());
        assert!(parse_url("https://example.test/hook").is_ok());
        for bad in ["ftp://x/", "falcosidekick:2801", "/path", "http:///x"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        let h: HeaderSpec = "Authorization: Bearer a:b".parse().unwrap();
        assert_eq!(h.name, "authorization");
        assert_eq!(h.value, "Bearer a:b");
        assert!("no-colon".parse::<HeaderSpec>().is_err());
        assert!("Bad Name: x".parse::<HeaderSpec>().is_err());
        assert!("X-Evil: a\r\nInjected: 1".parse::<HeaderSpec>().is_err());
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let c = HttpConfig::new("http://127.0.0.1/".parse().unwrap(), Vec::new(), 1);
        let waits: Vec<_> = (1..=6).map(|n| c.backoff(n).as_millis()).collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 4000]);
    }

    #[tokio::test]
    async fn every_finding_is_delivered_once_in_order_as_falco_json_with_the_headers() {
        let (url, got) = receiver(&[]).await;
        let metrics = Arc::new(Metrics::new().unwrap());
        let (_stop_tx, stop) = watch::channel(false);
        let mut c = config(url, 100);
        c.headers = vec!["X-Token: s3cret".parse().unwrap()];
        let (out, task) = start(c, metrics.clone(), stop).unwrap();
        for pid in 1..=50 {
            offer_pid(&out, pid);
        }
        until("50 deliveries", || metrics.output_sent(OUTPUT).get() == 50).await;
        drop(out);
        task.await.unwrap();
        let r = got.lock().unwrap();
        let pids: Vec<u64> = r
            .bodies
            .iter()
            .map(|b| b["output_fields"]["proc.pid"].as_u64().unwrap())
            .collect();
        assert_eq!(pids, (1..=50).collect::<Vec<u64>>());
        assert_eq!(r.bodies[0]["rule"], "Docker socket abuse detected");
        assert_eq!(r.headers[0]["x-token"], "s3cret");
        assert_eq!(r.headers[0]["content-type"], "application/json");
        assert_eq!(metrics.output_queue_depth(OUTPUT).get(), 0);
        assert_eq!(metrics.output_retries(OUTPUT).get(), 0);
    }

    #[tokio::test]
    async fn a_5xx_and_a_429_are_retried_until_accepted() {
        let (url, got) = receiver(&[500, 429, 503]).await;
        let metrics = Arc::new(Metrics::new().unwrap());
        let (_stop_tx, stop) = watch::channel(false);
        let (out, task) = start(config(url, 10), metrics.clone(), stop).unwrap();
        offer_pid(&out, 7);
        until("delivery", || metrics.output_sent(OUTPUT).get() == 1).await;
        drop(out);
        task.await.unwrap();
        let r = got.lock().unwrap();
        assert_eq!(r.bodies.len(), 4, "three refusals, then accepted");
        assert!(
            r.bodies.iter().all(|b| *b == r.bodies[0]),
            "the same finding"
        );
        assert_eq!(metrics.output_retries(OUTPUT).get(), 3);
        assert_eq!(dropped(&metrics, "retries_exhausted"), 0);
    }

    #[tokio::test]
    async fn a_4xx_is_not_retried_and_is_counted_and_the_next_finding_still_goes() {
        let (url, got) = receiver(&[400]).await;
        let metrics = Arc::new(Metrics::new().unwrap());
        let (_stop_tx, stop) = watch::channel(false);
        let (out, task) = start(config(url, 10), metrics.clone(), stop).unwrap();
        offer_pid(&out, 1);
        offer_pid(&out, 2);
        until("the second delivery", || {
            metrics.output_sent(OUTPUT).get() == 1
        })
        .await;
        drop(out);
        task.await.unwrap();
        assert_eq!(got.lock().unwrap().bodies.len(), 2, "one request each");
        assert_eq!(dropped(&metrics, "rejected"), 1);
        assert_eq!(metrics.output_retries(OUTPUT).get(), 0);
    }

    /// A port nothing listens on (bound, then closed).
    fn closed_port_url() -> Uri {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", l.local_addr().unwrap());
        drop(l);
        url.parse().unwrap()
    }

    // One thread: the sender cannot run while the offering loop does, so what the queue takes
    // is exactly its size.
    #[tokio::test(flavor = "current_thread")]
    async fn a_dead_receiver_never_blocks_the_event_loop_and_every_loss_is_counted() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let (_stop_tx, stop) = watch::channel(false);
        let mut c = config(closed_port_url(), 3);
        c.max_attempts = 3;
        let (out, task) = start(c, metrics.clone(), stop).unwrap();
        let began = std::time::Instant::now();
        for pid in 0..1000 {
            offer_pid(&out, pid);
        }
        assert!(
            began.elapsed() < Duration::from_secs(1),
            "offering took {:?}",
            began.elapsed()
        );
        assert_eq!(dropped(&metrics, "queue_full"), 997);
        assert_eq!(metrics.output_queue_depth(OUTPUT).get(), 3);
        until("the queued three to be given up", || {
            dropped(&metrics, "retries_exhausted") == 3
        })
        .await;
        assert_eq!(metrics.output_retries(OUTPUT).get(), 3 * 2);
        assert_eq!(metrics.output_sent(OUTPUT).get(), 0);
        assert_eq!(metrics.output_queue_depth(OUTPUT).get(), 0);
        drop(out);
        task.await.unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn shutdown_flushes_what_is_queued() {
        let (url, got) = receiver(&[]).await;
        let metrics = Arc::new(Metrics::new().unwrap());
        let (stop_tx, stop) = watch::channel(false);
        let (out, task) = start(config(url, 100), metrics.clone(), stop).unwrap();
        for pid in 0..20 {
            offer_pid(&out, pid);
        }
        stop_tx.send(true).unwrap();
        drop(out); // the reader's last drain is done
        tokio::time::timeout(Duration::from_secs(3), task)
            .await
            .expect("flushed within its bound")
            .unwrap();
        assert_eq!(got.lock().unwrap().bodies.len(), 20);
        assert_eq!(metrics.output_sent(OUTPUT).get(), 20);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn shutdown_gives_up_on_a_dead_receiver_within_the_bound_and_counts_what_is_left() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let (stop_tx, stop) = watch::channel(false);
        let mut c = config(closed_port_url(), 100);
        c.max_attempts = 1000;
        c.flush_for = Duration::from_millis(300);
        let (out, task) = start(c, metrics.clone(), stop).unwrap();
        for pid in 0..20 {
            offer_pid(&out, pid);
        }
        stop_tx.send(true).unwrap();
        let began = std::time::Instant::now();
        // The producer is still alive: the bound alone ends the sender.
        tokio::time::timeout(Duration::from_secs(3), task)
            .await
            .expect("ended within the bound")
            .unwrap();
        assert!(
            began.elapsed() < Duration::from_secs(1),
            "{:?}",
            began.elapsed()
        );
        assert_eq!(dropped(&metrics, "shutdown"), 20);
        assert_eq!(metrics.output_queue_depth(OUTPUT).get(), 0);
        // Too late now: counted, not queued.
        offer_pid(&out, 99);
        assert_eq!(dropped(&metrics, "shutdown"), 21);
    }
}
