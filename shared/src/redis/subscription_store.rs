//! Subscriptions in Redis: one JSON document per id, a set of ids, and a
//! pub/sub channel on which every change is announced by id so that running
//! services reload what changed without a restart.
//!
//! Every secret in a document (signing secrets, receiver credentials) is
//! sealed with the installation's key ring before it is written and opened
//! when read, so Redis never holds one in clear.

use crate::model::ids::SubscriptionId;
use crate::model::problem::Problem;
use crate::model::secret::Secret;
use crate::model::subscription::{
    new_incarnation, Disabled, Subscription, SubscriptionPatch, SubscriptionSpec,
    SubscriptionStatus,
};
use crate::redis::compare_and_set::{CompareAndSet, Swap};
use crate::redis::keys::RedisKeys;
use crate::runtime::encryption::{EncryptionError, KeyRing, Sealing};
use chrono::Utc;
use futures::{Stream, StreamExt};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;

/// What can go wrong reading or writing subscriptions.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis failed or is unreachable.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A stored document could not be read back (corrupt or from an incompatible version).
    #[error("stored subscription {id} is unreadable: {source}")]
    Corrupt {
        /// Subscription id.
        id: String,
        /// Parse failure.
        #[source]
        source: serde_json::Error,
    },
    /// A stored secret does not open with the configured keys.
    #[error("a secret of stored subscription {id} cannot be opened: {source}")]
    Sealed {
        /// Subscription id.
        id: String,
        /// Why it does not open.
        #[source]
        source: EncryptionError,
    },
    /// No subscription with that id.
    #[error("subscription {0} does not exist")]
    NotFound(String),
    /// Creating an id that is taken.
    #[error("subscription {0} already exists")]
    AlreadyExists(String),
    /// The change would make the subscription invalid.
    #[error("{0}")]
    Invalid(Problem),
    /// The subscription changed between reading it and storing an update.
    #[error("subscription {0} changed meanwhile")]
    Changed(String),
}

/// An update worked out but not stored yet, so it can be checked first (the
/// PING); [`SubscriptionStore::commit`] stores it only if the subscription
/// is still as it was read.
#[derive(Debug, Clone)]
pub struct PendingUpdate {
    /// The subscription as it was read.
    pub before: Subscription,
    /// The subscription as it will be stored.
    pub after: Subscription,
    /// The stored document `before` was read from.
    raw_before: String,
}

/// A subscription changed (created, updated or deleted): reload it by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionChange {
    /// The id that changed.
    pub id: SubscriptionId,
}

/// Reads and writes subscriptions, announcing every change.
#[derive(Clone)]
pub struct SubscriptionStore {
    redis: ConnectionManager,
    client: redis::Client,
    keys: RedisKeys,
    keyring: KeyRing,
}

impl std::fmt::Debug for SubscriptionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionStore")
            .field("keys", &self.keys)
            .field("keyring", &self.keyring)
            .finish()
    }
}

impl SubscriptionStore {
    /// A store over `redis` (commands) and `client` (for the change
    /// subscription), sealing secrets with `keyring`.
    pub fn new(
        redis: ConnectionManager,
        client: redis::Client,
        keys: RedisKeys,
        keyring: KeyRing,
    ) -> Self {
        Self {
            redis,
            client,
            keys,
            keyring,
        }
    }

    /// Opens Redis at `url` (one client, one multiplexed reconnecting
    /// connection for the process) and returns the store with that connection.
    pub async fn connect(
        url: &str,
        keys: RedisKeys,
        keyring: KeyRing,
    ) -> Result<(Self, ConnectionManager), StoreError> {
        let (client, redis) = crate::runtime::config::connect_redis(url).await?;
        Ok((Self::new(redis.clone(), client, keys, keyring), redis))
    }

    /// Stores a new, validated subscription; fails if the id is taken.
    pub async fn create(&self, spec: SubscriptionSpec) -> Result<Subscription, StoreError> {
        spec.validate_new().map_err(StoreError::Invalid)?;
        let now = Utc::now();
        let subscription = Subscription::new(spec, now);
        let id = subscription.id();
        let mut redis = self.redis.clone();
        let created: bool = redis
            .set_nx(self.keys.subscription(id), self.encode(&subscription))
            .await?;
        if !created {
            return Err(StoreError::AlreadyExists(id.to_string()));
        }
        let _: () = redis
            .sadd(self.keys.subscription_ids(), id.as_str())
            .await?;
        self.announce(id).await?;
        Ok(subscription)
    }

    /// Reads one subscription.
    pub async fn get(&self, id: &SubscriptionId) -> Result<Subscription, StoreError> {
        let raw: Option<String> = self.redis.clone().get(self.keys.subscription(id)).await?;
        let raw = raw.ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        self.decode(id.as_str(), &raw)
            .map(|(subscription, _)| subscription)
    }

    /// Reads one subscription, `None` when it does not exist.
    pub async fn find(&self, id: &SubscriptionId) -> Result<Option<Subscription>, StoreError> {
        match self.get(id).await {
            Ok(subscription) => Ok(Some(subscription)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Whether Redis holds the installation marker (its state is not lost).
    pub async fn installed(&self) -> Result<bool, StoreError> {
        Ok(
            crate::runtime::installation::marker_present(&mut self.redis.clone(), &self.keys)
                .await?,
        )
    }

    /// Reads every subscription, sorted by id.
    pub async fn list(&self) -> Result<Vec<Subscription>, StoreError> {
        let mut subscriptions = Vec::new();
        self.for_each_stored(|id, doc| {
            subscriptions.push(self.decode(id.as_str(), &doc)?.0);
            Ok(())
        })
        .await?;
        Ok(subscriptions)
    }

    /// Every stored document exactly as stored (secrets still sealed),
    /// sorted by id: what a backup keeps.
    pub async fn export_sealed(&self) -> Result<Vec<serde_json::Value>, StoreError> {
        let mut documents = Vec::new();
        self.for_each_stored(|id, doc| {
            let value = serde_json::from_str(&doc).map_err(|source| StoreError::Corrupt {
                id: id.to_string(),
                source,
            })?;
            documents.push(value);
            Ok(())
        })
        .await?;
        Ok(documents)
    }

    /// Hands every stored document, with its id, to `each`, in id order.
    /// MGET in chunks keeps each reply bounded with tens of thousands of
    /// subscriptions; an id without a document is a delete in progress and
    /// is skipped.
    async fn for_each_stored(
        &self,
        mut each: impl FnMut(&SubscriptionId, String) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut redis = self.redis.clone();
        let ids = self.stored_ids().await?;
        for chunk in ids.chunks(500) {
            let keys: Vec<String> = chunk.iter().map(|id| self.keys.subscription(id)).collect();
            let docs: Vec<Option<String>> = redis.mget(&keys).await?;
            for (id, doc) in chunk.iter().zip(docs) {
                if let Some(doc) = doc {
                    each(id, doc)?;
                }
            }
        }
        Ok(())
    }

    /// The ids in the set of all subscriptions, sorted; one that is not an
    /// id (written by hand) is skipped, since no document can be stored under it.
    async fn stored_ids(&self) -> Result<Vec<SubscriptionId>, StoreError> {
        let stored: Vec<String> = self
            .redis
            .clone()
            .smembers(self.keys.subscription_ids())
            .await?;
        let mut ids: Vec<SubscriptionId> = stored
            .into_iter()
            .filter_map(|id| match SubscriptionId::try_from(id) {
                Ok(id) => Some(id),
                Err(invalid) => {
                    tracing::warn!(%invalid, "the set of subscription ids holds a malformed one; skipping it");
                    None
                }
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Checks an exported document: it must be a subscription whose secrets
    /// open with the configured keys. Returns it opened, and its id.
    pub fn check_sealed(&self, document: &serde_json::Value) -> Result<Subscription, StoreError> {
        let id = document
            .pointer("/spec/id")
            .or_else(|| document.get("id"))
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let raw = document.to_string();
        let (subscription, _) = self.decode(&id, &raw)?;
        Ok(subscription)
    }

    /// Stores an exported document as it is (replacing any with its id) and
    /// announces it; check it first with [`Self::check_sealed`].
    pub async fn import_sealed(
        &self,
        subscription: &Subscription,
        document: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let id = subscription.id();
        let mut redis = self.redis.clone();
        redis::pipe()
            .atomic()
            .set(self.keys.subscription(id), document.to_string())
            .ignore()
            .sadd(self.keys.subscription_ids(), id.as_str())
            .ignore()
            .query_async::<()>(&mut redis)
            .await?;
        self.announce(id).await
    }

    /// Stores an internal subscription (e.g. the operator's, whose reserved
    /// id the API refuses) as given, sealing its secrets, and announces it.
    pub async fn put_internal(&self, subscription: &Subscription) -> Result<(), StoreError> {
        let id = subscription.id();
        let mut redis = self.redis.clone();
        redis::pipe()
            .atomic()
            .set(self.keys.subscription(id), self.encode(subscription))
            .ignore()
            .sadd(self.keys.subscription_ids(), id.as_str())
            .ignore()
            .query_async::<()>(&mut redis)
            .await?;
        self.announce(id).await
    }

    /// Applies a patch and stores the result if it validates.
    pub async fn update(
        &self,
        id: &SubscriptionId,
        patch: SubscriptionPatch,
    ) -> Result<Subscription, StoreError> {
        let pending = self.prepare_update(id, patch).await?;
        self.commit(pending).await
    }

    /// Works out (and validates) what applying `patch` makes of the stored
    /// subscription, without storing anything.
    pub async fn prepare_update(
        &self,
        id: &SubscriptionId,
        patch: SubscriptionPatch,
    ) -> Result<PendingUpdate, StoreError> {
        patch.validate().map_err(StoreError::Invalid)?;
        let raw: Option<String> = self.redis.clone().get(self.keys.subscription(id)).await?;
        let raw_before = raw.ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        let (before, _) = self.decode(id.as_str(), &raw_before)?;
        let spec = before.spec.patched(patch);
        spec.validate().map_err(StoreError::Invalid)?;
        // Leaving `disabled` (re-enabling or pausing) forgets why it was disabled.
        let disabled = before
            .disabled
            .clone()
            .filter(|_| spec.status == SubscriptionStatus::Disabled);
        let now = Utc::now();
        let mut after = before.clone();
        after.spec = spec;
        after.updated_at = now;
        after.disabled = disabled;
        after.drop_retired(now);
        Ok(PendingUpdate {
            before,
            after,
            raw_before,
        })
    }

    /// Stores a prepared update if the subscription was not changed (or
    /// deleted) since it was read, and announces it.
    pub async fn commit(&self, pending: PendingUpdate) -> Result<Subscription, StoreError> {
        let id = pending.after.id().clone();
        // Replaced only if it is still the document read.
        let swapped = CompareAndSet::default()
            .swap(
                &mut self.redis.clone(),
                &self.keys.subscription(&id),
                &pending.raw_before,
                &self.encode(&pending.after),
            )
            .await?;
        match swapped {
            Swap::Stored => {
                self.announce(&id).await?;
                Ok(pending.after)
            }
            Swap::Changed => Err(StoreError::Changed(id.to_string())),
            Swap::Missing => Err(StoreError::NotFound(id.to_string())),
        }
    }

    /// Keeps `candidate`, a subscription not stored yet (or not in this
    /// version), sealed like a stored one for `ttl_secs`, so the token service
    /// can read its credentials for the PING; returns the name to ask for it by.
    pub async fn stage(
        &self,
        candidate: &Subscription,
        ttl_secs: u64,
    ) -> Result<String, StoreError> {
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let _: () = self
            .redis
            .clone()
            .set_ex(
                self.keys.staged_subscription(candidate.id(), &nonce),
                self.encode(candidate),
                ttl_secs,
            )
            .await?;
        Ok(nonce)
    }

    /// Reads the staged version `nonce` of subscription `id`.
    pub async fn get_staged(
        &self,
        id: &SubscriptionId,
        nonce: &str,
    ) -> Result<Subscription, StoreError> {
        let raw: Option<String> = self
            .redis
            .clone()
            .get(self.keys.staged_subscription(id, nonce))
            .await?;
        let raw = raw.ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        self.decode(id.as_str(), &raw)
            .map(|(subscription, _)| subscription)
    }

    /// Drops a staged version once its PING is done.
    pub async fn unstage(&self, id: &SubscriptionId, nonce: &str) -> Result<(), StoreError> {
        let _: () = self
            .redis
            .clone()
            .del(self.keys.staged_subscription(id, nonce))
            .await?;
        Ok(())
    }

    /// Deactivates a subscription whose retry policy gave up, or whose
    /// receiver is gone (used by delivery). Compare-and-set: a change stored
    /// meanwhile (a PATCH) is kept and the disable applied on top of it.
    /// When the backlog is discarded the subscription starts a new
    /// incarnation, so no copy made before (queued, delayed, replayed) can
    /// be delivered after it is re-enabled.
    pub async fn disable(
        &self,
        id: &SubscriptionId,
        why: Disabled,
    ) -> Result<Subscription, StoreError> {
        self.modify(id, |subscription| {
            subscription.spec.status = SubscriptionStatus::Disabled;
            if why.backlog_discarded {
                subscription.incarnation = new_incarnation();
            }
            subscription.disabled = Some(why.clone());
        })
        .await
    }

    /// Makes `secret` the first signing secret; the ones it replaces keep
    /// signing for `grace` (see [`crate::model::subscription::rotation`]).
    pub async fn rotate_secret(
        &self,
        id: &SubscriptionId,
        secret: Secret,
        grace: chrono::TimeDelta,
    ) -> Result<Subscription, StoreError> {
        self.modify(id, |subscription| {
            subscription.rotate_secret(secret.clone(), grace, Utc::now())
        })
        .await
    }

    /// Drops the retiring secrets whose grace has ended from the stored document.
    pub async fn drop_retired_secrets(
        &self,
        id: &SubscriptionId,
    ) -> Result<Subscription, StoreError> {
        // `modify` drops them from every document it writes.
        self.modify(id, |_| {}).await
    }

    /// Applies `change` to the stored subscription and stores the result if
    /// nothing else was stored meanwhile, reading again and re-applying it
    /// (a few times) when something was: a concurrent PATCH is never undone.
    async fn modify(
        &self,
        id: &SubscriptionId,
        change: impl Fn(&mut Subscription),
    ) -> Result<Subscription, StoreError> {
        const ATTEMPTS: usize = 5;
        for _ in 0..ATTEMPTS {
            let raw: Option<String> = self.redis.clone().get(self.keys.subscription(id)).await?;
            let raw_before = raw.ok_or_else(|| StoreError::NotFound(id.to_string()))?;
            let (before, _) = self.decode(id.as_str(), &raw_before)?;
            let mut after = before.clone();
            change(&mut after);
            after.updated_at = Utc::now();
            after.drop_retired(after.updated_at);
            let pending = PendingUpdate {
                before,
                after,
                raw_before,
            };
            match self.commit(pending).await {
                Err(StoreError::Changed(_)) => continue,
                other => return other,
            }
        }
        Err(StoreError::Changed(id.to_string()))
    }

    /// Re-enables a disabled (or paused) subscription.
    pub async fn enable(&self, id: &SubscriptionId) -> Result<Subscription, StoreError> {
        self.update(
            id,
            SubscriptionPatch {
                status: Some(SubscriptionStatus::Active),
                ..Default::default()
            },
        )
        .await
    }

    /// Deletes a subscription; returns it as it was.
    pub async fn delete(&self, id: &SubscriptionId) -> Result<Subscription, StoreError> {
        let subscription = self.get(id).await?;
        let mut redis = self.redis.clone();
        let _: () = redis::pipe()
            .atomic()
            .del(self.keys.subscription(id))
            .srem(self.keys.subscription_ids(), id.as_str())
            .query_async(&mut redis)
            .await?;
        self.announce(id).await?;
        Ok(subscription)
    }

    /// Tells every running service that subscription `id` changed, so its
    /// consumer re-reads its settings and delivery state now.
    pub async fn announce(&self, id: &SubscriptionId) -> Result<(), StoreError> {
        let _: i64 = self
            .redis
            .clone()
            .publish(self.keys.subscription_changes(), id.as_str())
            .await?;
        Ok(())
    }

    /// Subscribes to change announcements. The stream ends when the pub/sub
    /// connection drops: callers then reload everything and subscribe again.
    pub async fn changes(
        &self,
    ) -> Result<impl Stream<Item = SubscriptionChange> + Send + 'static, StoreError> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(self.keys.subscription_changes()).await?;
        Ok(pubsub.into_on_message().filter_map(|message| async move {
            // The announcement comes from outside the process: a malformed
            // one is logged (the reason, never the text) and skipped.
            // (A conversion error quotes the value, so it is not logged.)
            let Ok(announced) = message.get_payload::<String>() else {
                tracing::warn!("a subscription change announcement is not text; skipping it");
                return None;
            };
            match SubscriptionId::try_from(announced) {
                Ok(id) => Some(SubscriptionChange { id }),
                Err(invalid) => {
                    tracing::warn!(%invalid, "a subscription change announcement names a malformed id; skipping it");
                    None
                }
            }
        }))
    }
}

/// The context every secret of subscription `id` is sealed for, so a sealed
/// value copied into another subscription does not open there.
fn seal_context(id: &str) -> String {
    format!("sub:{id}")
}

impl SubscriptionStore {
    fn encode(&self, subscription: &Subscription) -> String {
        let mut sealed = subscription.clone();
        let context = seal_context(subscription.id().as_str());
        for secret in sealed.secrets_mut() {
            *secret = Secret::new(self.keyring.seal(secret.expose().as_bytes(), &context));
        }
        // Plain data with string keys: serializing cannot fail.
        serde_json::to_string(&sealed).unwrap_or_default()
    }

    fn decode(&self, id: &str, raw: &str) -> Result<(Subscription, Sealing), StoreError> {
        let mut subscription: Subscription =
            serde_json::from_str(raw).map_err(|source| StoreError::Corrupt {
                id: id.to_string(),
                source,
            })?;
        let context = seal_context(id);
        let mut sealing = Sealing::Current;
        for secret in subscription.secrets_mut() {
            let (clear, found) =
                self.keyring
                    .open_text(secret.expose(), &context)
                    .map_err(|source| StoreError::Sealed {
                        id: id.to_string(),
                        source,
                    })?;
            if found == Sealing::Stale {
                sealing = Sealing::Stale;
            }
            *secret = Secret::new(clear);
        }
        Ok((subscription, sealing))
    }

    /// Seals again, with the current key, every stored secret that is sealed
    /// with a previous key or was stored in clear by an older version; returns
    /// how many subscriptions were rewritten. Run after a key rotation, so
    /// the old key can then be dropped from the configuration.
    pub async fn reseal_all(&self) -> Result<usize, StoreError> {
        let mut redis = self.redis.clone();
        let ids = self.stored_ids().await?;
        // A re-seal must never overwrite an update made in between.
        let cas = CompareAndSet::default();
        let mut rewritten = 0;
        for id in ids {
            let key = self.keys.subscription(&id);
            let raw: Option<String> = redis.get(&key).await?;
            let Some(raw) = raw else { continue };
            let (subscription, sealing) = self.decode(id.as_str(), &raw)?;
            if sealing == Sealing::Current {
                continue;
            }
            let swapped = cas
                .swap(&mut redis, &key, &raw, &self.encode(&subscription))
                .await?;
            // A document changed in between was written by the current code,
            // hence sealed with the current key already.
            if swapped == Swap::Stored {
                rewritten += 1;
            }
        }
        Ok(rewritten)
    }
}
