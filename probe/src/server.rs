//! `/healthz`, `/readyz` and `/metrics` over HTTP, fed by [`Status`]: readiness is the list
//! of reasons the probe cannot vouch for what it sees (programs not proven to run, caches not
//! synced, no socket to watch); health is whether every long-running task is still running.
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use axum::{extract::State, http::StatusCode, routing::get, Router};
use tokio::sync::watch;

use crate::metrics::Metrics;

/// What the probe knows about itself.
pub struct Status {
    /// Why it is not ready, by source (`self-test`, `caches`, `sockets`, ...).
    not_ready: Mutex<BTreeMap<&'static str, String>>,
    /// Long-running tasks that ended while the probe was not shutting down.
    ended: watch::Sender<Vec<&'static str>>,
    shutting_down: std::sync::atomic::AtomicBool,
}

impl Default for Status {
    fn default() -> Self {
        Self {
            not_ready: Mutex::default(),
            ended: watch::channel(Vec::new()).0,
            shutting_down: Default::default(),
        }
    }
}

impl Status {
    /// Sets (`Some`) or clears (`None`) one reason for not being ready.
    pub fn not_ready(&self, source: &'static str, reason: Option<String>) {
        let mut map = self.not_ready.lock().unwrap_or_else(|p| p.into_inner());
        match reason {
            Some(r) => {
                if map.get(source) != Some(&r) {
                    tracing::warn!(source, reason = %r, "not ready");
                }
                map.insert(source, r);
            }
            None => {
                if map.remove(source).is_some() {
                    tracing::info!(source, "ready again");
                }
            }
        }
    }

    /// `Ok` when ready, else every reason.
    pub fn ready(&self) -> Result<(), String> {
        let map = self.not_ready.lock().unwrap_or_else(|p| p.into_inner());
        if map.is_empty() {
            return Ok(());
        }
        Err(map
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("; "))
    }

    /// A guard a long-running task holds: when it is dropped (the task returned, failed or
    /// panicked) outside shutdown, health fails and [`Status::task_ended`] wakes.
    pub fn task(self: &Arc<Self>, name: &'static str) -> TaskGuard {
        TaskGuard {
            status: self.clone(),
            name,
        }
    }

    /// From now on, tasks ending is expected.
    pub fn shutting_down(&self) {
        self.shutting_down
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// `Ok` while every task runs, else which ended.
    pub fn alive(&self) -> Result<(), String> {
        let ended = self.ended.borrow();
        if ended.is_empty() {
            Ok(())
        } else {
            Err(format!("task ended: {}", ended.join(", ")))
        }
    }

    /// Resolves with a task's name once one ends unexpectedly.
    pub async fn task_ended(&self) -> &'static str {
        let mut rx = self.ended.subscribe();
        loop {
            if let Some(name) = rx.borrow_and_update().first() {
                return name;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

pub struct TaskGuard {
    status: Arc<Status>,
    name: &'static str,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if !self
            .status
            .shutting_down
            .load(std::sync::atomic::Ordering::Acquire)
        {
            tracing::error!(task = self.name, "a long-running task ended unexpectedly");
            self.status.ended.send_modify(|v| v.push(self.name));
        }
    }
}

#[derive(Clone)]
pub struct Health {
    pub metrics: Arc<Metrics>,
    pub status: Arc<Status>,
}

pub fn router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health)
}

async fn healthz(State(h): State<Health>) -> (StatusCode, String) {
    match h.status.alive() {
        Ok(()) => (StatusCode::OK, "ok\n".into()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: {why}\n"),
        ),
    }
}

async fn readyz(State(h): State<Health>) -> (StatusCode, String) {
    match h.status.ready() {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn metrics(State(h): State<Health>) -> ([(&'static str, &'static str); 1], String) {
    (
        [("content-type", "text/plain; version=0.0.4")],
        h.metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get_status(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let code = out[9..12].parse().unwrap();
        (code, out)
    }

    #[tokio::test]
    async fn readyz_names_every_reason_healthz_fails_when_a_task_ends_and_metrics_are_served() {
        let status = Arc::new(Status::default());
        let health = Health {
            metrics: Arc::new(Metrics::new().unwrap()),
            status: status.clone(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(health.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        assert_eq!(get_status(addr, "/readyz").await.0, 200);
        status.not_ready("self-test", Some("no canary event".into()));
        status.not_ready("caches", Some("pods not synced".into()));
        let (code, body) = get_status(addr, "/readyz").await;
        assert_eq!(code, 503);
        assert!(
            body.contains("caches: pods not synced; self-test: no canary event"),
            "{body}"
        );
        status.not_ready("caches", None);
        status.not_ready("self-test", None);
        assert_eq!(get_status(addr, "/readyz").await.0, 200);

        assert_eq!(get_status(addr, "/healthz").await.0, 200);
        let guard = status.task("reader");
        let waiter = {
            let status = status.clone();
            tokio::spawn(async move { status.task_ended().await })
        };
        drop(guard);
        assert_eq!(waiter.await.unwrap(), "reader");
        let (code, body) = get_status(addr, "/healthz").await;
        assert_eq!(code, 503);
        assert!(body.contains("task ended: reader"), "{body}");
        // At shutdown, tasks ending is expected.
        let quiet = Arc::new(Status::default());
        let g = quiet.task("sink");
        quiet.shutting_down();
        drop(g);
        assert!(quiet.alive().is_ok());
        let (code, body) = get_status(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(body.contains("sockwarden_probe_ringbuf_drops_total"));
    }
}
