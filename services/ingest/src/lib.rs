//! The Postline ingest service: the front door. It takes events from the AMQP
//! intake queue and from `POST /v1/events`, publishes one confirmed copy per
//! matching subscription, and serves the subscription management API.

#![warn(missing_docs)]

pub mod amqp_intake;
pub mod api;
pub mod broker_link;
pub mod config;
pub mod intake;
pub mod metrics;
pub mod operator;
mod secret_expiry;
pub mod tenants;
pub mod ui;

pub use config::IngestConfig;

use anyhow::Context;
use postline_shared::outbound::token_client::{TokenClient, TokenClientMetrics};
use postline_shared::redis::catalog;
use postline_shared::redis::delivery_state::DeliveryState;
use postline_shared::redis::token_cache::TokenCache;
use postline_shared::runtime::installation;
use postline_shared::runtime::service::{Broker, Running, Service};
use tokio_util::sync::CancellationToken;

/// A started ingest service: where the HTTP API listens, and its end.
pub type RunningIngest = Running;

/// Starts ingest; it runs until `shutdown` is cancelled, then stops intake,
/// drains HTTP requests in flight and closes the broker connection.
pub async fn start(
    config: IngestConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningIngest> {
    let common = &config.common;
    let mut service = Service::connect("ingest", common, Broker::Used, &shutdown).await?;
    let metrics =
        metrics::IngestMetrics::register(&service.registry).context("registering metrics")?;
    let (store, redis, keys, topology, readiness) = (
        service.store.clone(),
        service.redis.clone(),
        service.keys.clone(),
        service.topology.clone(),
        service.readiness.clone(),
    );
    // Ingest owns the subscriptions, so it brings them under the current
    // encryption key after a rotation (and seals any stored in clear).
    match store.reseal_all().await {
        Ok(0) => {}
        Ok(count) => {
            tracing::info!(count, key = %common.encryption.current_id(), "re-sealed subscription secrets with the current key");
        }
        Err(error) => {
            tracing::warn!(%error, "re-sealing subscription secrets failed; they stay readable with the old keys")
        }
    }
    let operator_subscription = match &config.operator {
        Some(operator) => {
            let subscription = operator::operator_subscription(operator)
                .context("POSTLINE_OPERATOR_WEBHOOK_URL / _SECRET do not make a valid endpoint")?;
            if !readiness.is_state_lost() {
                operator::install(&store, &subscription).await;
            }
            Some(subscription)
        }
        None => None,
    };
    let installation_id = installation::read_marker(&mut redis.clone(), &keys)
        .await
        .ok()
        .flatten()
        .map(|m| m.id);
    let background = service.background();
    let (catalog, sync) = catalog::start_sync(store.clone(), background.clone(), |_| {})
        .await
        .context("loading subscriptions")?;
    service.adopt(sync);

    let delivery = DeliveryState::new(redis.clone(), keys.clone());
    // PINGs get receivers' bearer tokens the way delivery does.
    let tokens = TokenClient::new(
        &config.token_url,
        TokenCache::new(redis.clone(), keys.clone(), common.encryption.clone()),
        TokenClientMetrics::register(&service.registry).context("registering token metrics")?,
    )
    .context("building the token service client")?;
    let pipeline = intake::Intake::new(
        catalog.clone(),
        topology.clone(),
        keys.clone(),
        redis.clone(),
        config.dedup_ttl_secs,
        metrics.clone(),
        readiness.clone(),
    );
    let (link_tx, link_rx) = tokio::sync::watch::channel(None);
    let client = postline_shared::outbound::OutboundClient::new(
        &common.outbound,
        postline_shared::outbound::webhook_request::USER_AGENT,
    )
    .context("building the HTTP client")?;
    if let (Some(operator), Some(subscription)) = (config.operator.clone(), operator_subscription) {
        service.spawn(
            operator::Notifier {
                config: operator,
                subscription,
                catalog: catalog.clone(),
                delivery: delivery.clone(),
                redis: redis.clone(),
                keys: keys.clone(),
                broker: link_rx.clone(),
                topology: topology.clone(),
                readiness: readiness.clone(),
                client: client.clone(),
                installation_id,
                store: store.clone(),
            }
            .run(background.clone()),
        );
    }
    service.spawn(secret_expiry::run(
        store.clone(),
        catalog.clone(),
        background.clone(),
    ));
    let http_intake = intake::http::HttpIntake::start(pipeline.clone(), link_rx.clone());
    let intake = amqp_intake::AmqpIntake::new(
        pipeline,
        topology.clone(),
        metrics.clone(),
        config.max_event_bytes,
        config.intake_prefetch,
    );
    let close_broker = CancellationToken::new();
    let broker = tokio::spawn(broker_link::supervise(
        common.amqp_url.clone(),
        topology.clone(),
        catalog.clone(),
        intake,
        link_tx,
        readiness.clone(),
        shutdown.clone(),
        close_broker.clone(),
    ));

    let state = api::ApiState {
        intake: http_intake,
        broker: link_rx,
        store,
        catalog,
        delivery,
        client,
        tokens,
        topology,
        metrics,
        admin_token: config.admin_token.clone(),
        producer_token: config.producer_token.clone(),
        max_event_bytes: config.max_event_bytes,
        max_batch_bytes: config.max_batch_bytes,
        max_batch_events: config.max_batch_events,
        redis: redis.clone(),
        tenants: tenants::store::TenantStore::new(redis.clone(), keys.clone()),
        audit: tenants::audit::AuditTrail::new(redis, keys.clone()),
        keys,
        readiness,
        oauth_token_ttl: config.oauth_token_ttl,
        ui: config.ui,
    };
    let running = service
        .serve(
            config.listen,
            app(state),
            config.server,
            shutdown,
            |http_drained| async move {
                http_drained.cancelled().await;
                // HTTP has drained: no request can still need the publisher.
                close_broker.cancel();
                let _ = broker.await;
            },
        )
        .await?;
    Ok(running)
}

/// Every HTTP route of ingest: the API and the status page; anything else
/// is a JSON 404.
fn app(state: api::ApiState) -> axum::Router {
    api::router()
        .merge(ui::router())
        .fallback(|| async { api::ApiError::not_found("no such route") })
        .with_state(state)
}
