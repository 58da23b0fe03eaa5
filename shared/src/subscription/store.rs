//! Subscriptions in Redis: one JSON document per id, a set of ids, and a
//! pub/sub channel on which every change is announced by id so that running
//! services reload what changed without a restart.

use super::{Disabled, Subscription, SubscriptionPatch, SubscriptionSpec, SubscriptionStatus};
use crate::keys::RedisKeys;
use crate::problem::Problem;
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

/// Replaces the document only if it is still the one read (compare and set):
/// 1 stored, 0 changed meanwhile, -1 deleted meanwhile.
const SET_IF_UNCHANGED: &str = r#"
local current = redis.call('GET', KEYS[1])
if not current then return -1 end
if current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"#;

/// A subscription changed (created, updated or deleted): reload it by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionChange {
    /// The id that changed.
    pub id: String,
}

/// Reads and writes subscriptions, announcing every change.
#[derive(Clone)]
pub struct SubscriptionStore {
    redis: ConnectionManager,
    client: redis::Client,
    keys: RedisKeys,
}

impl std::fmt::Debug for SubscriptionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionStore")
            .field("keys", &self.keys)
            .finish()
    }
}

impl SubscriptionStore {
    /// A store over `redis` (commands) and `client` (for the change subscription).
    pub fn new(redis: ConnectionManager, client: redis::Client, keys: RedisKeys) -> Self {
        Self {
            redis,
            client,
            keys,
        }
    }

    /// Opens Redis at `url` (one client, one multiplexed reconnecting
    /// connection for the process) and returns the store with that connection.
    pub async fn connect(
        url: &str,
        keys: RedisKeys,
    ) -> Result<(Self, ConnectionManager), StoreError> {
        let (client, redis) = crate::config::connect_redis(url).await?;
        Ok((Self::new(redis.clone(), client, keys), redis))
    }

    /// Stores a new, validated subscription; fails if the id is taken.
    pub async fn create(&self, spec: SubscriptionSpec) -> Result<Subscription, StoreError> {
        spec.validate_new().map_err(StoreError::Invalid)?;
        let now = Utc::now();
        let subscription = Subscription {
            spec,
            created_at: now,
            updated_at: now,
            disabled: None,
        };
        let id = subscription.id().to_string();
        let mut redis = self.redis.clone();
        let created: bool = redis
            .set_nx(self.keys.subscription(&id), encode(&subscription))
            .await?;
        if !created {
            return Err(StoreError::AlreadyExists(id));
        }
        let _: () = redis.sadd(self.keys.subscription_ids(), &id).await?;
        self.announce(&id).await?;
        Ok(subscription)
    }

    /// Reads one subscription.
    pub async fn get(&self, id: &str) -> Result<Subscription, StoreError> {
        let raw: Option<String> = self.redis.clone().get(self.keys.subscription(id)).await?;
        let raw = raw.ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        decode(id, &raw)
    }

    /// Reads one subscription, `None` when it does not exist.
    pub async fn find(&self, id: &str) -> Result<Option<Subscription>, StoreError> {
        match self.get(id).await {
            Ok(subscription) => Ok(Some(subscription)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Reads every subscription, sorted by id.
    pub async fn list(&self) -> Result<Vec<Subscription>, StoreError> {
        let mut redis = self.redis.clone();
        let mut ids: Vec<String> = redis.smembers(self.keys.subscription_ids()).await?;
        ids.sort();
        let mut subscriptions = Vec::with_capacity(ids.len());
        // MGET in chunks keeps each reply bounded with tens of thousands of subscriptions.
        for chunk in ids.chunks(500) {
            let keys: Vec<String> = chunk.iter().map(|id| self.keys.subscription(id)).collect();
            let docs: Vec<Option<String>> = redis.mget(&keys).await?;
            for (id, doc) in chunk.iter().zip(docs) {
                // An id without a document is a delete in progress: skip it.
                if let Some(doc) = doc {
                    subscriptions.push(decode(id, &doc)?);
                }
            }
        }
        Ok(subscriptions)
    }

    /// Applies a patch and stores the result if it validates.
    pub async fn update(
        &self,
        id: &str,
        patch: SubscriptionPatch,
    ) -> Result<Subscription, StoreError> {
        let pending = self.prepare_update(id, patch).await?;
        self.commit(pending).await
    }

    /// Works out (and validates) what applying `patch` makes of the stored
    /// subscription, without storing anything.
    pub async fn prepare_update(
        &self,
        id: &str,
        patch: SubscriptionPatch,
    ) -> Result<PendingUpdate, StoreError> {
        patch.validate().map_err(StoreError::Invalid)?;
        let raw: Option<String> = self.redis.clone().get(self.keys.subscription(id)).await?;
        let raw_before = raw.ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        let before = decode(id, &raw_before)?;
        let spec = before.spec.patched(patch);
        spec.validate().map_err(StoreError::Invalid)?;
        // Leaving `disabled` (re-enabling or pausing) forgets why it was disabled.
        let disabled = before
            .disabled
            .clone()
            .filter(|_| spec.status == SubscriptionStatus::Disabled);
        let after = Subscription {
            spec,
            created_at: before.created_at,
            updated_at: Utc::now(),
            disabled,
        };
        Ok(PendingUpdate {
            before,
            after,
            raw_before,
        })
    }

    /// Stores a prepared update if the subscription was not changed (or
    /// deleted) since it was read, and announces it.
    pub async fn commit(&self, pending: PendingUpdate) -> Result<Subscription, StoreError> {
        let id = pending.after.id().to_string();
        let stored: i64 = redis::Script::new(SET_IF_UNCHANGED)
            .key(self.keys.subscription(&id))
            .arg(&pending.raw_before)
            .arg(encode(&pending.after))
            .invoke_async(&mut self.redis.clone())
            .await?;
        match stored {
            1 => {
                self.announce(&id).await?;
                Ok(pending.after)
            }
            0 => Err(StoreError::Changed(id)),
            _ => Err(StoreError::NotFound(id)),
        }
    }

    /// Deactivates a subscription whose retry policy gave up (used by delivery).
    pub async fn disable(&self, id: &str, why: Disabled) -> Result<Subscription, StoreError> {
        let mut subscription = self.get(id).await?;
        subscription.spec.status = SubscriptionStatus::Disabled;
        subscription.disabled = Some(why);
        subscription.updated_at = Utc::now();
        self.replace(subscription).await
    }

    /// Re-enables a disabled (or paused) subscription.
    pub async fn enable(&self, id: &str) -> Result<Subscription, StoreError> {
        self.update(
            id,
            SubscriptionPatch {
                status: Some(SubscriptionStatus::Active),
                ..Default::default()
            },
        )
        .await
    }

    async fn replace(&self, subscription: Subscription) -> Result<Subscription, StoreError> {
        let id = subscription.id().to_string();
        // SET XX: an update racing a delete must not resurrect the subscription.
        let stored: Option<String> = redis::cmd("SET")
            .arg(self.keys.subscription(&id))
            .arg(encode(&subscription))
            .arg("XX")
            .query_async(&mut self.redis.clone())
            .await?;
        if stored.is_none() {
            return Err(StoreError::NotFound(id));
        }
        self.announce(&id).await?;
        Ok(subscription)
    }

    /// Deletes a subscription; returns it as it was.
    pub async fn delete(&self, id: &str) -> Result<Subscription, StoreError> {
        let subscription = self.get(id).await?;
        let mut redis = self.redis.clone();
        let _: () = redis::pipe()
            .atomic()
            .del(self.keys.subscription(id))
            .srem(self.keys.subscription_ids(), id)
            .query_async(&mut redis)
            .await?;
        self.announce(id).await?;
        Ok(subscription)
    }

    /// Tells every running service that subscription `id` changed, so its
    /// consumer re-reads its settings and delivery state now.
    pub async fn announce(&self, id: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .redis
            .clone()
            .publish(self.keys.subscription_changes(), id)
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
            message
                .get_payload::<String>()
                .ok()
                .map(|id| SubscriptionChange { id })
        }))
    }
}

fn encode(subscription: &Subscription) -> String {
    // Plain data with string keys: serializing cannot fail.
    serde_json::to_string(subscription).unwrap_or_default()
}

fn decode(id: &str, raw: &str) -> Result<Subscription, StoreError> {
    serde_json::from_str(raw).map_err(|source| StoreError::Corrupt {
        id: id.to_string(),
        source,
    })
}
