//! An in-memory view of every subscription, kept in sync with Redis.
//!
//! Ingest matches events against it; delivery reconciles its consumers with
//! it. [`sync`] loads everything, then applies each announced change, and
//! reloads in full after a lost pub/sub connection and periodically, so a
//! missed announcement heals within one period. It keeps the subscriptions
//! indexed by event type too ([`TypeIndex`]), so matching an event does not
//! scan the subscriptions that cannot want it. A full reload is refused
//! while Redis has no installation marker: an emptied Redis is never taken
//! for "no subscriptions" (see [`crate::runtime::installation`]).

use crate::model::envelope::Envelope;
use crate::model::ids::SubscriptionId;
use crate::model::subscription::{Subscription, TypeIndex};
use crate::redis::subscription_store::{StoreError, SubscriptionStore};
use crate::runtime::backoff::Backoff;
use futures::StreamExt;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the catalog reloads in full even without announcements.
pub const FULL_RELOAD_EVERY: Duration = Duration::from_secs(30);

/// The current subscriptions by id.
#[derive(Debug, Default)]
pub struct Catalog {
    state: RwLock<Current>,
}

/// The subscriptions by id, and the same by event type (always in step).
#[derive(Debug, Default)]
struct Current {
    by_id: HashMap<SubscriptionId, Arc<Subscription>>,
    by_type: TypeIndex,
}

impl Current {
    fn remove(&mut self, id: &SubscriptionId) {
        if let Some(old) = self.by_id.remove(id) {
            self.by_type.remove(&old);
        }
    }
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        // A poisoned lock only means a panic elsewhere mid-update of plain
        // maps; keep serving them.
        crate::runtime::locks::read(&self.state)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Current> {
        crate::runtime::locks::write(&self.state)
    }

    /// Inserts or replaces one subscription.
    pub fn upsert(&self, subscription: Subscription) {
        let subscription = Arc::new(subscription);
        let mut current = self.write();
        current.remove(subscription.id());
        current.by_type.insert(subscription.clone());
        current
            .by_id
            .insert(subscription.id().clone(), subscription);
    }

    /// Removes one subscription.
    pub fn remove(&self, id: &SubscriptionId) {
        self.write().remove(id);
    }

    /// Replaces everything; returns the ids that were added, removed, or
    /// stored anew since (a full reload must not wake consumers whose
    /// subscription did not change).
    pub fn replace_all(&self, subscriptions: Vec<Subscription>) -> BTreeSet<SubscriptionId> {
        let fresh: HashMap<SubscriptionId, Arc<Subscription>> = subscriptions
            .into_iter()
            .map(|s| (s.id().clone(), Arc::new(s)))
            .collect();
        let by_type = TypeIndex::of(fresh.values());
        let mut current = self.write();
        let changed = current
            .by_id
            .iter()
            .filter(|(id, old)| fresh.get(*id).is_none_or(|new| !same_version(old, new)))
            .map(|(id, _)| id.clone())
            .chain(
                fresh
                    .keys()
                    .filter(|id| !current.by_id.contains_key(*id))
                    .cloned(),
            )
            .collect();
        *current = Current {
            by_id: fresh,
            by_type,
        };
        changed
    }

    /// One subscription.
    pub fn get(&self, id: &SubscriptionId) -> Option<Arc<Subscription>> {
        self.read().by_id.get(id).cloned()
    }

    /// Every subscription.
    pub fn all(&self) -> Vec<Arc<Subscription>> {
        self.read().by_id.values().cloned().collect()
    }

    /// How many subscriptions there are.
    pub fn len(&self) -> usize {
        self.read().by_id.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.read().by_id.is_empty()
    }

    /// The subscriptions that want `envelope` ([`Subscription::wants`]),
    /// sorted by id, found through the event-type index.
    pub fn matching(&self, envelope: &Envelope) -> Vec<Arc<Subscription>> {
        self.read().by_type.matching(envelope)
    }
}

/// Keeps `catalog` equal to the store until `cancel`, calling `changed(id)`
/// after each id's new state is in the catalog. Returns after the first full
/// load has been signalled through `loaded` (if given) and runs until cancelled.
pub async fn sync(
    store: SubscriptionStore,
    catalog: Arc<Catalog>,
    cancel: CancellationToken,
    changed: impl Fn(&SubscriptionId) + Send + Sync,
    loaded: Option<tokio::sync::oneshot::Sender<()>>,
) {
    let mut loaded = loaded;
    let mut backoff = Backoff::redis_retry();
    while !cancel.is_cancelled() {
        // Subscribe before loading so no change between the two is missed.
        let changes = match store.changes().await {
            Ok(changes) => changes,
            Err(error) => {
                tracing::warn!(%error, "subscribing to subscription changes failed");
                backoff.pause(&cancel).await;
                continue;
            }
        };
        if let Err(error) = reload(&store, &catalog, &changed).await {
            tracing::warn!(%error, "loading subscriptions failed");
            backoff.pause(&cancel).await;
            continue;
        }
        backoff.reset();
        if let Some(done) = loaded.take() {
            let _ = done.send(());
        }
        let mut changes = std::pin::pin!(changes);
        let mut full_reload = tokio::time::interval(FULL_RELOAD_EVERY);
        full_reload.tick().await;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = full_reload.tick() => {
                    if let Err(error) = reload(&store, &catalog, &changed).await {
                        tracing::warn!(%error, "periodic subscription reload failed");
                    }
                }
                change = changes.next() => {
                    let Some(change) = change else {
                        tracing::warn!("subscription change feed closed; resubscribing");
                        break;
                    };
                    match store.find(&change.id).await {
                        Ok(Some(subscription)) => catalog.upsert(subscription),
                        Ok(None) => catalog.remove(&change.id),
                        Err(error) => {
                            tracing::warn!(%error, subscription = %change.id, "reloading a changed subscription failed");
                            continue;
                        }
                    }
                    changed(&change.id);
                }
            }
        }
    }
}

/// Spawns [`sync`] and waits until the catalog holds every subscription:
/// matching or consuming against a half-loaded catalog would skip subscriptions.
pub async fn start_sync(
    store: SubscriptionStore,
    cancel: CancellationToken,
    changed: impl Fn(&SubscriptionId) + Send + Sync + 'static,
) -> Result<(Arc<Catalog>, tokio::task::JoinHandle<()>), LoadAborted> {
    let catalog = Catalog::new();
    let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(sync(
        store,
        catalog.clone(),
        cancel,
        changed,
        Some(loaded_tx),
    ));
    loaded_rx.await.map_err(|_| LoadAborted)?;
    Ok((catalog, task))
}

/// The catalog's first load was cancelled before it completed.
#[derive(Debug, thiserror::Error)]
#[error("loading subscriptions was cancelled before it completed")]
pub struct LoadAborted;

/// Whether two reads of a subscription are the same stored version: every
/// store write sets `updated_at`, a re-create also a new incarnation.
fn same_version(a: &Subscription, b: &Subscription) -> bool {
    a.updated_at == b.updated_at && a.created_at == b.created_at && a.incarnation == b.incarnation
}

async fn reload(
    store: &SubscriptionStore,
    catalog: &Catalog,
    changed: &(impl Fn(&SubscriptionId) + Send + Sync),
) -> Result<(), StoreError> {
    if !store.installed().await? {
        tracing::error!(
            kept = catalog.len(),
            "installation marker missing in Redis: keeping the catalog as it was instead of reloading (state lost?)"
        );
        return Ok(());
    }
    let all = store.list().await?;
    for id in catalog.replace_all(all) {
        changed(&id);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::subscription::SubscriptionSpec;
    use chrono::{TimeDelta, Utc};

    fn id(id: &str) -> SubscriptionId {
        SubscriptionId::parse(id).unwrap()
    }

    fn subscription(id: &str) -> Subscription {
        let spec: SubscriptionSpec = serde_json::from_value(serde_json::json!({
            "id": id, "endpoint": "https://example.com/", "event_types": ["a"],
        }))
        .unwrap();
        Subscription::new(spec, Utc::now())
    }

    #[test]
    fn a_full_reload_reports_only_what_changed() {
        let catalog = Catalog::new();
        let (a, b, c) = (subscription("a"), subscription("b"), subscription("c"));
        let first = catalog.replace_all(vec![a.clone(), b.clone()]);
        assert_eq!(first, BTreeSet::from([id("a"), id("b")]));
        assert!(catalog.replace_all(vec![a.clone(), b.clone()]).is_empty());
        let mut b2 = b.clone();
        b2.updated_at += TimeDelta::seconds(1);
        let changed = catalog.replace_all(vec![a.clone(), b2, c]);
        assert_eq!(changed, BTreeSet::from([id("b"), id("c")]));
        let removed = catalog.replace_all(vec![subscription("c")]);
        assert!(removed.contains("a") && removed.contains("b") && removed.contains("c"));
    }

    #[test]
    fn matching_follows_upserts_removals_and_reloads() {
        let catalog = Catalog::new();
        let event = |event_type: &str| {
            let input = format!(r#"{{"id":"e","type":"{event_type}","payload":{{}}}}"#);
            Envelope::from_input_bytes(input.as_bytes(), Utc::now()).unwrap()
        };
        let ids = |found: Vec<Arc<Subscription>>| -> Vec<String> {
            found.iter().map(|s| s.id().to_string()).collect()
        };
        catalog.replace_all(vec![subscription("x"), subscription("y")]);
        assert_eq!(ids(catalog.matching(&event("a"))), ["x", "y"]);
        let mut moved = subscription("x");
        moved.spec.event_types = vec!["b.*".into()];
        catalog.upsert(moved);
        assert_eq!(ids(catalog.matching(&event("a"))), ["y"]);
        assert_eq!(ids(catalog.matching(&event("b.c"))), ["x"]);
        catalog.remove(&id("y"));
        assert!(catalog.matching(&event("a")).is_empty());
        catalog.replace_all(vec![subscription("z")]);
        assert_eq!(ids(catalog.matching(&event("a"))), ["z"]);
        assert!(catalog.matching(&event("b.c")).is_empty());
    }
}
