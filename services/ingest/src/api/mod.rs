//! The ingest HTTP API under `/v1`: event intake for producers, the
//! subscription management API for operators and tenants, tenants and their
//! credentials, and the OAuth token endpoint (`/oauth/token`).

mod admin;
mod auth;
pub(crate) mod caller;
pub(crate) mod delivery_controls;
mod error;
mod events;
pub(crate) mod oauth;
pub(crate) mod ping;
mod secrets;
pub(crate) mod subscriptions;
mod tenants;

pub use error::ApiError;

use crate::broker_link::{BrokerLink, LinkHandle};
use crate::fanout::Fanout;
use crate::metrics::IngestMetrics;
use axum::routing::{get, post};
use axum::Router;
use postline_shared::delivery_state::DeliveryState;
use postline_shared::secret::Secret;
use postline_shared::subscription::catalog::Catalog;
use postline_shared::subscription::SubscriptionStore;
use postline_shared::token_client::TokenClient;
use postline_shared::topology::Topology;
use std::sync::Arc;

/// What every handler can reach.
#[derive(Clone)]
pub struct ApiState {
    /// Publishes accepted events.
    pub fanout: Fanout,
    /// The current broker link (`None` while reconnecting).
    pub broker: LinkHandle,
    /// Subscription storage.
    pub store: SubscriptionStore,
    /// This process's view of subscriptions (updated at once on API changes).
    pub catalog: Arc<Catalog>,
    /// Delivery records (state, blocks, parked events, attempts).
    pub delivery: DeliveryState,
    /// HTTP client for PINGs (the same settings as delivery's: no redirects).
    pub client: postline_shared::outbound::OutboundClient,
    /// Bearer tokens for PINGs to receivers that need one.
    pub tokens: TokenClient,
    /// AMQP names.
    pub topology: Topology,
    /// Metrics.
    pub metrics: IngestMetrics,
    /// Token for `/v1/subscriptions`.
    pub admin_token: Secret,
    /// Token for `/v1/events`.
    pub producer_token: Secret,
    /// Largest single event.
    pub max_event_bytes: usize,
    /// Largest batch body.
    pub max_batch_bytes: usize,
    /// Most events per batch.
    pub max_batch_events: usize,
    /// Redis, for the installation marker.
    pub redis: redis::aio::ConnectionManager,
    /// Redis key names.
    pub keys: postline_shared::keys::RedisKeys,
    /// The service's readiness (the lost-state flag).
    pub readiness: Arc<postline_shared::ops::Readiness>,
    /// Tenants, clients, tokens, sessions and portal links.
    pub tenants: crate::tenants::store::TenantStore,
    /// The audit trails.
    pub audit: crate::tenants::audit::AuditTrail,
    /// Life of an issued access token.
    pub oauth_token_ttl: std::time::Duration,
    /// Status-page settings.
    pub ui: crate::ui::UiConfig,
}

/// The live broker link, or 503 while ingest is reconnecting.
fn broker(state: &ApiState) -> Result<BrokerLink, ApiError> {
    state
        .broker
        .borrow()
        .clone()
        .filter(BrokerLink::is_connected)
        .ok_or_else(|| ApiError::unavailable("broker not connected; retry"))
}

/// The `/v1` routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/events", post(events::post_one))
        .route("/v1/events/batch", post(events::post_batch))
        .route(
            "/v1/subscriptions",
            get(subscriptions::list).post(subscriptions::create),
        )
        .route(
            "/v1/subscriptions/{id}",
            get(subscriptions::get)
                .patch(subscriptions::update)
                .delete(subscriptions::delete),
        )
        .route("/v1/subscriptions/{id}/state", get(delivery_controls::show))
        .route(
            "/v1/subscriptions/{id}/enable",
            post(delivery_controls::enable),
        )
        .route(
            "/v1/subscriptions/{id}/retry",
            post(delivery_controls::retry_now),
        )
        .route(
            "/v1/subscriptions/{id}/parked",
            get(delivery_controls::parked),
        )
        .route(
            "/v1/subscriptions/{id}/parked/replay",
            post(delivery_controls::replay_all),
        )
        .route(
            "/v1/subscriptions/{id}/parked/{event_id}/replay",
            post(delivery_controls::replay_one),
        )
        .route(
            "/v1/subscriptions/{id}/attempts",
            get(delivery_controls::attempts),
        )
        .route(
            "/v1/subscriptions/{id}/secrets/rotate",
            post(secrets::rotate),
        )
        .route("/v1/tenants", get(tenants::list).post(tenants::create))
        .route(
            "/v1/tenants/{id}",
            get(tenants::get)
                .patch(tenants::update)
                .delete(tenants::delete),
        )
        .route(
            "/v1/tenants/{id}/clients",
            get(tenants::list_clients).post(tenants::create_client),
        )
        .route(
            "/v1/tenants/{id}/clients/{client_id}",
            axum::routing::delete(tenants::delete_client),
        )
        .route("/v1/tenants/{id}/audit", get(tenants::audit_trail))
        .route("/v1/tenants/{id}/portal-link", post(tenants::portal_link))
        .route("/oauth/token", post(oauth::token))
        .merge(crate::ui::router())
        .route("/v1/admin/export", get(admin::export))
        .route("/v1/admin/import", post(admin::import))
        .route("/v1/admin/reset-state", post(admin::reset_state))
        .fallback(|| async { ApiError::not_found("no such route") })
        .with_state(state)
}
