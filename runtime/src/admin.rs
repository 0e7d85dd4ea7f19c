//! The admin server every sockwarden process runs: `/healthz` (every task still running),
//! `/readyz` (no reason not to be ready) and `/metrics` (the process's registry, Prometheus
//! text format).
use std::{future::Future, sync::Arc};

use axum::{extract::State, http::StatusCode, routing::get, Router};
use prometheus::{Encoder, Registry, TextEncoder};

use crate::status::Status;

#[derive(Clone)]
struct Admin {
    status: Arc<Status>,
    registry: Registry,
}

pub fn router(status: Arc<Status>, registry: Registry) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Admin { status, registry })
}

/// Serves [`router`] on `listener` until `shutdown` resolves.
pub fn serve(
    listener: tokio::net::TcpListener,
    status: Arc<Status>,
    registry: Registry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let app = router(status, registry);
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    })
}

/// Registers `metric` in `registry` and hands it back: a metric is made and registered in
/// one expression, so none is made and forgotten.
pub fn registered<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: M,
) -> prometheus::Result<M> {
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// Every metric in `registry`, in the text exposition format.
pub fn render(registry: &Registry) -> String {
    let mut out = Vec::new();
    let _ = TextEncoder::new().encode(&registry.gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

async fn healthz(State(a): State<Admin>) -> (StatusCode, String) {
    answer(a.status.alive(), "ok", "unhealthy")
}

async fn readyz(State(a): State<Admin>) -> (StatusCode, String) {
    answer(a.status.ready(), "ready", "not ready")
}

/// 200 with `ok`, or 503 with `failing` and why: probes and people read the same line.
fn answer(state: Result<(), String>, ok: &str, failing: &str) -> (StatusCode, String) {
    match state {
        Ok(()) => (StatusCode::OK, format!("{ok}\n")),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{failing}: {why}\n"),
        ),
    }
}

async fn metrics(State(a): State<Admin>) -> ([(&'static str, &'static str); 1], String) {
    (
        [("content-type", "text/plain; version=0.0.4")],
        render(&a.registry),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
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
    async fn readyz_names_every_reason_healthz_names_the_ended_task_and_metrics_are_served() {
        let status = Arc::new(Status::default());
        let registry = Registry::new();
        let drops = prometheus::IntCounter::new("test_drops_total", "drops").unwrap();
        registry.register(Box::new(drops.clone())).unwrap();
        drops.inc_by(3);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = serve(listener, status.clone(), registry, async {
            let _ = stopped.await;
        });

        let (code, body) = get(addr, "/readyz").await;
        assert_eq!(code, 200);
        assert!(body.ends_with("\r\n\r\nready\n"), "{body}");
        status.not_ready("self-test", Some("no canary event".into()));
        status.not_ready("caches", Some("pods not synced".into()));
        let (code, body) = get(addr, "/readyz").await;
        assert_eq!(code, 503);
        assert!(
            body.ends_with("not ready: caches: pods not synced; self-test: no canary event\n"),
            "{body}"
        );
        status.not_ready("caches", None);
        status.not_ready("self-test", None);
        assert_eq!(get(addr, "/readyz").await.0, 200);

        let (code, body) = get(addr, "/healthz").await;
        assert_eq!(code, 200);
        assert!(body.ends_with("\r\n\r\nok\n"), "{body}");
        drop(status.task("reader"));
        let (code, body) = get(addr, "/healthz").await;
        assert_eq!(code, 503);
        assert!(body.ends_with("unhealthy: task ended: reader\n"), "{body}");

        let (code, body) = get(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(
            body.contains("content-type: text/plain; version=0.0.4"),
            "{body}"
        );
        assert!(body.contains("test_drops_total 3"), "{body}");

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
