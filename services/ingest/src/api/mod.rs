//! The ingest HTTP API under `/v1`: event intake for producers, the
//! subscription management API for operators and tenants, tenants and their
//! credentials, and the OAuth token endpoint (`/oauth/token`).

pub(crate) mod access;
mod admin;
mod auth;
pub(crate) mod caller;
pub(crate) mod delivery_controls;
mod error;
mod error_responses;
mod events;
pub(crate) mod oauth;
pub mod openapi;
pub(crate) mod ping;
mod secrets;
pub(crate) mod subscriptions;
mod tenants;

pub use error::ApiError;

use crate::broker_link::{BrokerLink, LinkHandle};
use crate::intake::http::HttpIntake;
use crate::metrics::IngestMetrics;
use axum::Router;
use postline_shared::amqp::topology::Topology;
use postline_shared::model::secret::Secret;
use postline_shared::outbound::token_client::TokenClient;
use postline_shared::redis::catalog::Catalog;
use postline_shared::redis::delivery_state::DeliveryState;
use postline_shared::redis::subscription_store::SubscriptionStore;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What every handler can reach.
#[derive(Clone)]
pub struct ApiState {
    /// Runs posted events through the intake pipeline.
    pub intake: HttpIntake,
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
    pub keys: postline_shared::redis::keys::RedisKeys,
    /// The service's readiness (the lost-state flag).
    pub readiness: Arc<postline_shared::runtime::ops::Readiness>,
    /// Tenants, clients, tokens, sessions and portal links.
    pub tenants: crate::tenants::store::TenantStore,
    /// The audit trails.
    pub audit: crate::tenants::audit::AuditTrail,
    /// Life of an issued access token.
    pub oauth_token_ttl: std::time::Duration,
    /// Status-page settings.
    pub ui: crate::config::UiConfig,
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

/// A management channel of its own, so a refused declaration cannot close
/// the publisher's channel; it is closed again when the request is done.
pub(crate) async fn admin_channel(state: &ApiState) -> Result<lapin::Channel, ApiError> {
    broker(state)?.admin_channel().await.map_err(|error| {
        tracing::warn!(%error, "opening a management channel failed");
        ApiError::unavailable("broker not reachable; retry")
    })
}

/// Closes a management channel once its request is done.
pub(crate) async fn close(channel: lapin::Channel) {
    let _ = channel.close(200, "management request done".into()).await;
}

/// Every documented route: each handler registers at the path of its
/// `#[utoipa::path]`, so the router and the OpenAPI document cannot differ.
pub(crate) fn documented_routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(events::post_one))
        .routes(routes!(events::post_batch))
        .routes(routes!(subscriptions::list, subscriptions::create))
        .routes(routes!(
            subscriptions::get,
            subscriptions::update,
            subscriptions::delete
        ))
        .routes(routes!(delivery_controls::show))
        .routes(routes!(delivery_controls::enable))
        .routes(routes!(delivery_controls::retry_now))
        .routes(routes!(delivery_controls::parked))
        .routes(routes!(delivery_controls::replay_all))
        .routes(routes!(delivery_controls::replay_one))
        .routes(routes!(delivery_controls::attempts))
        .routes(routes!(secrets::rotate))
        .routes(routes!(tenants::list, tenants::create))
        .routes(routes!(tenants::get, tenants::update, tenants::delete))
        .routes(routes!(tenants::list_clients, tenants::create_client))
        .routes(routes!(tenants::delete_client))
        .routes(routes!(tenants::audit_trail))
        .routes(routes!(tenants::portal_link))
        .routes(routes!(oauth::token))
        .routes(routes!(admin::export))
        .routes(routes!(admin::import))
        .routes(routes!(admin::reset_state))
        .routes(routes!(openapi::serve))
}

/// The `/v1` routes, `/oauth/token` and `/openapi.json`.
pub fn router() -> Router<ApiState> {
    let (documented, _) = documented_routes().split_for_parts();
    documented
}
