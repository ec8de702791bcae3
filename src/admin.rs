//! The admin HTTP server: `/metrics` for Prometheus and `/healthz`.
//!
//! It serves the registry created at start-up and nothing else; it never
//! touches sessions or Redis. `/healthz` says only that the process is
//! alive and serving.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;

/// Serves the admin endpoints on `listener` until the task is dropped.
///
/// # Errors
///
/// The I/O error that stopped the server.
pub async fn serve(listener: TcpListener, registry: Registry) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(Arc::new(registry));
    axum::serve(listener, app).await
}

async fn metrics(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
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
