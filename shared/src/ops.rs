//! The operational HTTP surface every service exposes: `/healthz` (the
//! process runs), `/readyz` (broker and Redis connected) and `/metrics`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Connection flags the service's supervisors keep up to date.
#[derive(Debug, Default)]
pub struct Readiness {
    broker: AtomicBool,
    redis: AtomicBool,
}

impl Readiness {
    /// A fresh, not-ready state.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Records whether the broker connection is up.
    pub fn set_broker(&self, up: bool) {
        self.broker.store(up, Ordering::Relaxed);
    }

    /// Records whether Redis is reachable.
    pub fn set_redis(&self, up: bool) {
        self.redis.store(up, Ordering::Relaxed);
    }

    /// Whether both are up.
    pub fn is_ready(&self) -> bool {
        self.broker.load(Ordering::Relaxed) && self.redis.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct OpsState {
    readiness: Arc<Readiness>,
    registry: prometheus::Registry,
}

/// Routes for `/healthz`, `/readyz` and `/metrics`, to merge into a service's router.
pub fn router(readiness: Arc<Readiness>, registry: prometheus::Registry) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(OpsState {
            readiness,
            registry,
        })
}

async fn readyz(State(state): State<OpsState>) -> Response {
    let r = &state.readiness;
    let body = Json(serde_json::json!({
        "ready": r.is_ready(),
        "broker": r.broker.load(Ordering::Relaxed),
        "redis": r.redis.load(Ordering::Relaxed),
    }));
    let status = if r.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}

async fn metrics(State(state): State<OpsState>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        crate::metrics::render(&state.registry),
    )
        .into_response()
}

/// Keeps the Redis readiness flag current by pinging every few seconds.
pub async fn watch_redis(
    mut redis: redis::aio::ConnectionManager,
    readiness: Arc<Readiness>,
    cancel: tokio_util::sync::CancellationToken,
) {
    loop {
        let pong: Result<String, _> = redis::cmd("PING").query_async(&mut redis).await;
        readiness.set_redis(pong.is_ok());
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
        }
    }
}
