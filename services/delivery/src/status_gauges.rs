//! Keeps the ladder gauges (blocked subscriptions and their age, disabled
//! subscriptions, parked events) equal to what Redis and the catalog say.
//!
//! They are read from the shared records rather than counted by consumers,
//! so every replica reports the same, whole picture, whichever of them holds
//! a subscription's consumer.

use crate::metrics::DeliveryMetrics;
use chrono::Utc;
use postline_shared::delivery_state::DeliveryState;
use postline_shared::subscription::catalog::Catalog;
use postline_shared::subscription::SubscriptionStatus;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the gauges are refreshed.
const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// Subscriptions read per Redis round trip.
const CHUNK: usize = 1_000;

/// Refreshes the gauges every few seconds until `cancel`.
pub async fn run(
    catalog: Arc<Catalog>,
    state: DeliveryState,
    metrics: DeliveryMetrics,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(REFRESH_EVERY);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(error) = refresh(&catalog, &state, &metrics).await {
            tracing::debug!(%error, "refreshing the ladder gauges failed");
        }
    }
}

async fn refresh(
    catalog: &Catalog,
    state: &DeliveryState,
    metrics: &DeliveryMetrics,
) -> Result<(), postline_shared::delivery_state::StateError> {
    let subscriptions = catalog.all();
    let disabled = subscriptions
        .iter()
        .filter(|s| s.spec.status == SubscriptionStatus::Disabled)
        .count();
    let ids: Vec<String> = subscriptions.iter().map(|s| s.id().to_string()).collect();
    let mut blocked = Vec::new();
    let mut parked = Vec::new();
    for chunk in ids.chunks(CHUNK) {
        blocked.extend(state.blocked_since(chunk).await?);
        let counts = state.parked_counts(chunk).await?;
        parked.extend(chunk.iter().zip(counts).filter(|(_, n)| *n > 0));
    }
    let now = Utc::now();
    metrics.subscriptions_disabled.set(disabled as i64);
    metrics.subscriptions_blocked.set(blocked.len() as i64);
    // Reset first so subscriptions no longer blocked (or parked) disappear.
    metrics.blocked_age.reset();
    for (id, since) in blocked {
        metrics
            .blocked_age
            .with_label_values(&[&id])
            .set((now - since).num_seconds().max(0));
    }
    metrics.parked_events.reset();
    for (id, count) in parked {
        metrics
            .parked_events
            .with_label_values(&[id])
            .set(count as i64);
    }
    Ok(())
}
