//! Rotated-out signing secrets leave the stored subscription by themselves:
//! once their grace has ended they sign nothing (see
//! `postline_shared::model::subscription::rotation`), and this task removes them
//! from the stored document, so a secret no longer in use is not kept at all.

use postline_shared::redis::catalog::Catalog;
use postline_shared::redis::subscription_store::SubscriptionStore;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the catalog is looked through.
const EVERY: Duration = Duration::from_secs(30);

/// Runs until `cancel`, dropping ended retiring secrets every [`EVERY`].
pub async fn run(store: SubscriptionStore, catalog: Arc<Catalog>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = chrono::Utc::now();
        for subscription in catalog.all() {
            if !subscription.has_retired_secrets(now) {
                continue;
            }
            let id = subscription.id();
            match store.drop_retired_secrets(id).await {
                Ok(updated) => {
                    catalog.upsert(updated);
                    tracing::info!(subscription = %id, "rotated-out signing secret removed after its grace");
                }
                Err(error) => {
                    tracing::warn!(%error, subscription = %id, "removing a rotated-out secret failed; retried later")
                }
            }
        }
    }
}
