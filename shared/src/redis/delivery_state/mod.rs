//! Per-subscription delivery records in Redis, written by delivery and read
//! by the management API:
//!
//! - settled markers, which stop a second POST of an event that already
//!   succeeded (or was given up);
//! - the state hash (last success, last failure and error, counters);
//! - the block of a strict subscription waiting on the ladder ([`block`]);
//! - parked events given up with `skip`, kept for replay ([`parked`]);
//! - the capped log of recent attempts ([`attempt_log`]);
//! - dedup identities and open and complete entities ([`semantics_records`]), checked
//!   in the same round trip as the settled marker and recorded in the same
//!   transaction as a success.
//!
//! The block lives here, not in a consumer's memory, so whichever replica
//! becomes the active consumer knows the subscription is waiting.

pub mod attempt_log;
pub mod block;
pub mod parked;
pub mod semantics_records;

pub use attempt_log::AttemptRecord;
pub use block::Block;
pub use parked::ParkedEvent;

use crate::model::ids::{EventId, SubscriptionId};
use crate::model::subscription::Tracking;
use crate::redis::keys::RedisKeys;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use std::collections::HashMap;

/// Marker value of an event the receiver accepted.
const DELIVERED: &str = "delivered";
/// Marker value of an event given up with `skip` (parked, not delivered).
const GIVEN_UP: &str = "given_up";

/// Why a delivery record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Redis did not answer or refused.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A stored record could not be read back.
    #[error("delivery record {key} is corrupt: {reason}")]
    Corrupt {
        /// The Redis key.
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// Redis has no installation marker: its state was lost, so whatever it
    /// says about blocks and markers cannot be trusted.
    #[error("state lost: Redis has no installation marker")]
    StateLost,
}

/// What is known about an event of a subscription before attempting it.
#[derive(Debug, Clone)]
pub struct Precheck {
    /// A success (or a give-up) is already recorded: do not POST again.
    pub settled: bool,
    /// The block of the subscription, if it waits on the ladder.
    pub block: Option<Block>,
    /// The event's dedup identity was already delivered: do not POST it.
    pub duplicate: bool,
    /// The event's entity is complete: do not POST it.
    pub entity_complete: bool,
}

/// Reads and writes delivery records of one namespace.
#[derive(Clone)]
pub struct DeliveryState {
    redis: ConnectionManager,
    keys: RedisKeys,
    settled_ttl_secs: u64,
    attempt_log_cap: usize,
}

/// Default life of a settled marker: longer than the 7-day ladder, so a late
/// duplicate of an event still finds its marker.
pub const DEFAULT_SETTLED_TTL_SECS: u64 = 8 * 24 * 3600;
/// Default number of attempts kept per subscription.
pub const DEFAULT_ATTEMPT_LOG_CAP: usize = 1_000;

impl DeliveryState {
    /// Records over `redis` with the default retention.
    pub fn new(redis: ConnectionManager, keys: RedisKeys) -> Self {
        Self {
            redis,
            keys,
            settled_ttl_secs: DEFAULT_SETTLED_TTL_SECS,
            attempt_log_cap: DEFAULT_ATTEMPT_LOG_CAP,
        }
    }

    /// Settled markers live `settled_ttl_secs`; each subscription keeps
    /// about `attempt_log_cap` recent attempts.
    pub fn with_retention(mut self, settled_ttl_secs: u64, attempt_log_cap: usize) -> Self {
        self.settled_ttl_secs = settled_ttl_secs;
        self.attempt_log_cap = attempt_log_cap;
        self
    }

    fn connection(&self) -> ConnectionManager {
        self.redis.clone()
    }

    /// Whether `event_id` is settled for `subscription_id`, the
    /// subscription's block, and whether the event's `tracking` says it is a
    /// duplicate or of a complete entity, in one round trip, which also
    /// confirms the installation marker: an emptied Redis would say "not
    /// blocked, not delivered" and let later events overtake a blocked one,
    /// so without the marker this is [`StateError::StateLost`].
    pub async fn precheck(
        &self,
        subscription_id: &SubscriptionId,
        event_id: &EventId,
        tracking: &Tracking,
    ) -> Result<Precheck, StateError> {
        let block_key = self.keys.block(subscription_id);
        let mut pipe = redis::pipe();
        pipe.exists(self.keys.installation())
            .exists(self.keys.delivered(subscription_id, event_id))
            .hgetall(&block_key);
        if let Some(dedup) = &tracking.dedup {
            pipe.exists(self.keys.dedup(subscription_id, &dedup.hash));
        }
        if let Some(entity) = &tracking.entity {
            pipe.zscore(
                self.keys.complete_entities(subscription_id),
                &entity.mark.hash,
            );
        }
        let replies: Vec<redis::Value> = pipe.query_async(&mut self.connection()).await?;
        let mut replies = replies.into_iter();
        let mut next = || replies.next().unwrap_or(redis::Value::Nil);
        let installed: bool = redis::from_redis_value(next()).map_err(redis::RedisError::from)?;
        if !installed {
            return Err(StateError::StateLost);
        }
        let settled: bool = redis::from_redis_value(next()).map_err(redis::RedisError::from)?;
        let block: HashMap<String, String> =
            redis::from_redis_value(next()).map_err(redis::RedisError::from)?;
        let duplicate = match tracking.dedup {
            Some(_) => redis::from_redis_value(next()).map_err(redis::RedisError::from)?,
            None => false,
        };
        let entity_complete = match &tracking.entity {
            Some(entity) => {
                let last_seen: Option<f64> =
                    redis::from_redis_value(next()).map_err(redis::RedisError::from)?;
                // Pruning happens on write, so an expired member may linger.
                last_seen.is_some_and(|at| at >= semantics_records::cutoff_ms(entity.mark.ttl_secs))
            }
            None => false,
        };
        Ok(Precheck {
            settled,
            block: Block::from_fields(&block_key, block)?,
            duplicate,
            entity_complete,
        })
    }

    /// Records a success: the marker, the state hash, the event's dedup
    /// identity and entity (`tracking`), the attempt in the log and, when
    /// the subscription was blocked on this event, the end of the block, in
    /// one transaction (one round trip: this is the hot path).
    pub async fn record_success(
        &self,
        subscription_id: &SubscriptionId,
        event_id: &EventId,
        unblock: bool,
        tracking: &Tracking,
        attempt: &AttemptRecord,
    ) -> Result<(), StateError> {
        let now = chrono::Utc::now().to_rfc3339();
        let state = self.keys.delivery_state(subscription_id);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .set_ex(
                self.keys.delivered(subscription_id, event_id),
                DELIVERED,
                self.settled_ttl_secs,
            )
            .ignore()
            .hset(&state, "last_success_at", &now)
            .ignore()
            .hset(&state, "last_event_id", event_id.as_str())
            .ignore()
            .hincr(&state, "delivered", 1)
            .ignore();
        if unblock {
            pipe.del(self.keys.block(subscription_id)).ignore();
        }
        self.track(&mut pipe, subscription_id, tracking);
        self.append_attempt(&mut pipe, subscription_id, attempt);
        pipe.query_async::<()>(&mut self.connection()).await?;
        Ok(())
    }

    /// Records a failed attempt in the state hash and the attempt log (best
    /// effort: it informs operators only).
    pub async fn record_failure(
        &self,
        subscription_id: &SubscriptionId,
        event_id: &EventId,
        error: &str,
        attempt: &AttemptRecord,
    ) {
        let now = chrono::Utc::now().to_rfc3339();
        let state = self.keys.delivery_state(subscription_id);
        let mut pipe = redis::pipe();
        self.append_attempt(&mut pipe, subscription_id, attempt);
        let written: redis::RedisResult<()> = pipe
            .hset(&state, "last_failure_at", &now)
            .ignore()
            .hset(&state, "last_failed_event_id", event_id.as_str())
            .ignore()
            .hset(&state, "last_error", error)
            .ignore()
            .hincr(&state, "failed_attempts", 1)
            .ignore()
            .query_async(&mut self.connection())
            .await;
        if let Err(redis_error) = written {
            tracing::warn!(%redis_error, subscription = %subscription_id, "recording a failure failed");
        }
    }

    /// Adds `by` to counter `name` of the state hash (e.g. `discarded`).
    pub async fn count(
        &self,
        subscription_id: &SubscriptionId,
        name: &str,
        by: i64,
    ) -> Result<(), StateError> {
        let _: i64 = self
            .connection()
            .hincr(self.keys.delivery_state(subscription_id), name, by)
            .await?;
        Ok(())
    }

    /// The state hash: last success/failure, last error and counters.
    pub async fn summary(
        &self,
        subscription_id: &SubscriptionId,
    ) -> Result<HashMap<String, String>, StateError> {
        Ok(self
            .connection()
            .hgetall(self.keys.delivery_state(subscription_id))
            .await?)
    }

    /// Removes every delivery record of a deleted subscription except the
    /// settled markers and dedup identities, which expire on their own (a
    /// subscription created again under the id does not match them).
    pub async fn forget(&self, subscription_id: &SubscriptionId) -> Result<(), StateError> {
        let _: () = self
            .connection()
            .del(&[
                self.keys.delivery_state(subscription_id),
                self.keys.block(subscription_id),
                self.keys.parked(subscription_id),
                self.keys.attempts(subscription_id),
                self.keys.open_entities(subscription_id),
                self.keys.complete_entities(subscription_id),
            ])
            .await?;
        Ok(())
    }
}
