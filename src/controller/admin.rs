//! The admin HTTP server: `/healthz` (the process is alive), `/readyz` (CRDs found and caches
//! synced), `/metrics` (Prometheus / OpenMetrics text).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};

use super::metrics::Metrics;

/// What readiness waits for.
#[derive(Debug, Default)]
pub(crate) struct Readiness {
    /// The CRDs answer list calls.
    pub crds_found: AtomicBool,
    /// The watch caches hold a full list.
    pub caches_synced: AtomicBool,
}

#[derive(Clone)]
struct AppState {
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
}

/// Serves the admin endpoints until `shutdown` resolves.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .with_state(AppState { readiness, metrics });
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

/// Binds the admin address.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let crds = state.readiness.crds_found.load(Ordering::Relaxed);
    let synced = state.readiness.caches_synced.load(Ordering::Relaxed);
    if crds && synced {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        let mut pending = Vec::new();
        if !crds {
            pending.push("CRDs not found (kubectl apply --server-side -f crds/)");
        }
        if !synced {
            pending.push("watch caches not synced");
        }
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", pending.join("; ")),
        )
    }
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
