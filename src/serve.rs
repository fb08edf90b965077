//! The operator's HTTP endpoints (axum): `/metrics` (OpenMetrics text), `/healthz` (liveness)
//! and `/readyz` (readiness), on each address given (the chart gives a health port and a metrics
//! port; both serve all three paths).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tracing::{info, warn};

use crate::metrics::Metrics;

/// What the probes report.
#[derive(Default)]
pub struct Health {
    /// The API server answered (the Lease was read or written); the process can lead or stand by.
    connected: AtomicBool,
    /// A fatal condition was met (the controllers stopped): liveness fails so the Pod restarts.
    failed: AtomicBool,
}

impl Health {
    /// Records that the API server answered.
    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
    }

    /// Records that the process can no longer do its work.
    pub fn set_failed(&self) {
        self.failed.store(true, Ordering::Release);
    }

    /// `/readyz`: connected and not failed.
    pub fn ready(&self) -> bool {
        self.connected.load(Ordering::Acquire) && !self.failed.load(Ordering::Acquire)
    }

    /// `/healthz`: not failed.
    pub fn live(&self) -> bool {
        !self.failed.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
struct Shared {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// Errors of the endpoints.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address could not be bound.
    #[error("listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

fn router(shared: Shared) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(shared)
}

async fn metrics(State(s): State<Shared>) -> impl IntoResponse {
    match s.metrics.encode(jiff::Timestamp::now()) {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("encode: {e}\n")).into_response(),
    }
}

async fn healthz(State(s): State<Shared>) -> (StatusCode, &'static str) {
    if s.health.live() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "the controllers stopped\n")
    }
}

async fn readyz(State(s): State<Shared>) -> (StatusCode, &'static str) {
    if s.health.ready() {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not connected to the API server yet\n",
        )
    }
}

/// Binds every address now (a taken port is an error at start-up, not later) and serves them in
/// background tasks for the life of the process.
pub async fn serve(
    addrs: &[SocketAddr],
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> Result<(), Error> {
    let app = router(Shared { metrics, health });
    let mut seen = Vec::new();
    for addr in addrs {
        if seen.contains(addr) {
            continue;
        }
        seen.push(*addr);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind {
                addr: *addr,
                source,
            })?;
        let bound = listener.local_addr().unwrap_or(*addr);
        info!(addr = %bound, "serving /metrics, /healthz and /readyz");
        let app = app.clone();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                warn!(addr = %bound, error = %e, "the HTTP endpoint stopped");
            }
        });
    }
    Ok(())
}
