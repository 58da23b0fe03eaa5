//! The operational HTTP surface every service exposes: `/healthz` (the
//! process runs), `/readyz` (broker and Redis connected, state not lost) and
//! `/metrics` (which also carries `postline_ready`, the `/readyz` verdict as
//! 1 or 0, and `postline_state_lost`).

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
    /// Redis lost its state (see [`crate::runtime::installation`]).
    state_lost: AtomicBool,
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

    /// Records whether Redis lost its state (no installation marker while
    /// the broker has the namespace's queues).
    pub fn set_state_lost(&self, lost: bool) {
        self.state_lost.store(lost, Ordering::Relaxed);
    }

    /// Whether Redis lost its state: intake and delivery must hold still.
    pub fn is_state_lost(&self) -> bool {
        self.state_lost.load(Ordering::Relaxed)
    }

    /// Whether both are up and the state is not lost.
    pub fn is_ready(&self) -> bool {
        self.broker.load(Ordering::Relaxed)
            && self.redis.load(Ordering::Relaxed)
            && !self.is_state_lost()
    }
}

#[derive(Clone)]
struct OpsState {
    readiness: Arc<Readiness>,
    registry: prometheus::Registry,
    /// `postline_ready`, set from `readiness` at every scrape.
    ready: Option<prometheus::IntGauge>,
    /// `postline_state_lost`, set from `readiness` at every scrape.
    state_lost: Option<prometheus::IntGauge>,
}

/// Name of the gauge that mirrors `/readyz` on `/metrics`.
pub const READY_METRIC: &str = "postline_ready";

/// Name of the gauge that says whether Redis lost its state.
pub const STATE_LOST_METRIC: &str = "postline_state_lost";

/// Routes for `/healthz`, `/readyz` and `/metrics`, to merge into a service's
/// router. Registers `postline_ready` and `postline_state_lost` in `registry`.
pub fn router(readiness: Arc<Readiness>, registry: prometheus::Registry) -> Router {
    let ready = crate::runtime::metrics::gauge(
        &registry,
        READY_METRIC,
        "1 when the service is ready (what /readyz answers 200 to), 0 otherwise",
    )
    .map_err(|error| tracing::warn!(%error, "registering {READY_METRIC} failed"))
    .ok();
    let state_lost = crate::runtime::metrics::gauge(
        &registry,
        STATE_LOST_METRIC,
        "1 while Redis has lost Postline's state (no installation marker, queues present): intake and delivery hold still",
    )
    .map_err(|error| tracing::warn!(%error, "registering {STATE_LOST_METRIC} failed"))
    .ok();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(OpsState {
            readiness,
            registry,
            ready,
            state_lost,
        })
}

/// `/healthz`'s answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Health {
    /// Always `ok`.
    status: String,
}

/// `/readyz`'s answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Ready {
    /// Whether the service is ready.
    ready: bool,
    /// Whether the broker is connected.
    broker: bool,
    /// Whether Redis answers.
    redis: bool,
    /// `ok`, or `lost` while Redis has lost Postline's state.
    state: String,
}

/// The OpenAPI description of these routes, to merge into a service's document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    #[derive(OpenApi)]
    #[openapi(paths(healthz, readyz, metrics))]
    struct Ops;
    Ops::openapi()
}

/// The process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "ops",
    responses((status = 200, description = "The process is up", body = Health))
)]
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Whether the service is ready: broker and Redis reachable, state not lost.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    responses(
        (status = 200, description = "Ready", body = Ready),
        (status = 503, description = "Not ready (`state`: `lost` while Redis lost the state)", body = Ready)
    )
)]
async fn readyz(State(state): State<OpsState>) -> Response {
    let r = &state.readiness;
    let body = Json(serde_json::json!({
        "ready": r.is_ready(),
        "broker": r.broker.load(Ordering::Relaxed),
        "redis": r.redis.load(Ordering::Relaxed),
        "state": if r.is_state_lost() { "lost" } else { "ok" },
    }));
    let status = if r.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}

/// Prometheus metrics (`postline_*`).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String))
)]
async fn metrics(State(state): State<OpsState>) -> Response {
    if let Some(ready) = &state.ready {
        ready.set(i64::from(state.readiness.is_ready()));
    }
    if let Some(lost) = &state.state_lost {
        lost.set(i64::from(state.readiness.is_state_lost()));
    }
    (
        [("content-type", "text/plain; version=0.0.4")],
        crate::runtime::metrics::render(&state.registry),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn postline_ready_on_metrics_says_what_readyz_says() {
        let readiness = Readiness::new();
        let app = router(readiness.clone(), prometheus::Registry::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a local port");
        let addr = listener.local_addr().expect("the bound address");
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();
        let ready_line = || async {
            let text = client
                .get(format!("http://{addr}/metrics"))
                .send()
                .await
                .expect("GET /metrics")
                .text()
                .await
                .expect("metrics text");
            text.lines()
                .find(|line| line.starts_with("postline_ready "))
                .map(str::to_string)
        };
        assert_eq!(ready_line().await.as_deref(), Some("postline_ready 0"));
        readiness.set_broker(true);
        assert_eq!(
            ready_line().await.as_deref(),
            Some("postline_ready 0"),
            "Redis is still down"
        );
        readiness.set_redis(true);
        assert_eq!(ready_line().await.as_deref(), Some("postline_ready 1"));
        readiness.set_state_lost(true);
        assert_eq!(
            ready_line().await.as_deref(),
            Some("postline_ready 0"),
            "lost state is not ready"
        );
        readiness.set_state_lost(false);
        readiness.set_broker(false);
        assert_eq!(ready_line().await.as_deref(), Some("postline_ready 0"));
        server.abort();
    }
}
