//! The admin HTTP server: `/metrics` for Prometheus, `/healthz` and
//! `/readyz`.
//!
//! It serves the registry created at start-up; it never touches
//! sessions. `/healthz` says only that the process is alive and serving.
//! `/readyz` says whether the proxy can do its job: a policy is in force,
//! it is not shutting down, and the upstream Redis answers a PING on a
//! connection of its own (asked at most once a second, however often
//! probes come).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::Mutex;

use crate::reload::Live;

/// Serves the admin endpoints on `listener` until the task is dropped.
///
/// # Errors
///
/// The I/O error that stopped the server.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    ready: Readiness,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Arc::new(Admin { registry, ready }));
    axum::serve(listener, app).await
}

struct Admin {
    registry: Registry,
    ready: Readiness,
}

/// What `/readyz` asks, with the last upstream answer kept for a second.
pub struct Readiness {
    live: Arc<Live>,
    last: Mutex<Option<(Instant, Result<(), String>)>>,
}

/// How long an upstream answer stands for later probes.
const UPSTREAM_CHECK_TTL: Duration = Duration::from_secs(1);

impl Readiness {
    pub fn new(live: Arc<Live>) -> Readiness {
        Readiness {
            live,
            last: Mutex::new(None),
        }
    }

    /// `Ok` when ready; otherwise why not.
    async fn check(&self) -> Result<(), String> {
        if self.live.is_closing() {
            return Err("shutting down".into());
        }
        let mut last = self.last.lock().await;
        if let Some((at, answer)) = last.as_ref()
            && at.elapsed() < UPSTREAM_CHECK_TTL
        {
            return answer.clone();
        }
        let shared = self.live.load();
        let answer = crate::upstream::probe(&shared.upstream)
            .await
            .map_err(|e| format!("upstream Redis: {e}"));
        shared.metrics.upstream_up.set(i64::from(answer.is_ok()));
        *last = Some((Instant::now(), answer.clone()));
        answer
    }
}

async fn readyz(State(admin): State<Arc<Admin>>) -> impl IntoResponse {
    match admin.ready.check().await {
        Ok(()) => (axum::http::StatusCode::OK, "ready\n".to_string()),
        Err(why) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn metrics(State(admin): State<Arc<Admin>>) -> impl IntoResponse {
    let registry = &admin.registry;
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    if let Err(e) = encoder.encode(&registry.gather(), &mut body) {
        return (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            [(CONTENT_TYPE, "text/plain")],
            format!("encoding metrics failed: {e}\n").into_bytes(),
        );
    }
    (
        axum::http::StatusCode::OK,
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        body,
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}
