//! Per-subscription delivery records in Redis: the delivered markers that
//! stop a second POST of an event that already succeeded, and the delivery
//! state hash (last success, last failure and error, counters).

use postline_shared::keys::RedisKeys;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;

/// Reads and writes delivery records of one namespace.
#[derive(Clone)]
pub struct DeliveryState {
    redis: ConnectionManager,
    keys: RedisKeys,
    delivered_ttl_secs: u64,
}

impl DeliveryState {
    /// Records over `redis`; markers live `delivered_ttl_secs`.
    pub fn new(redis: ConnectionManager, keys: RedisKeys, delivered_ttl_secs: u64) -> Self {
        Self {
            redis,
            keys,
            delivered_ttl_secs,
        }
    }

    /// Whether `event_id` was already delivered to `subscription_id`.
    pub async fn was_delivered(
        &self,
        subscription_id: &str,
        event_id: &str,
    ) -> redis::RedisResult<bool> {
        self.redis
            .clone()
            .exists(self.keys.delivered(subscription_id, event_id))
            .await
    }

    /// Records a success: the marker and the state hash, in one round trip.
    pub async fn record_success(
        &self,
        subscription_id: &str,
        event_id: &str,
    ) -> redis::RedisResult<()> {
        let now = chrono::Utc::now().to_rfc3339();
        let state = self.keys.delivery_state(subscription_id);
        redis::pipe()
            .set_ex(
                self.keys.delivered(subscription_id, event_id),
                1u8,
                self.delivered_ttl_secs,
            )
            .ignore()
            .hset(&state, "last_success_at", &now)
            .ignore()
            .hset(&state, "last_event_id", event_id)
            .ignore()
            .hincr(&state, "delivered", 1)
            .ignore()
            .query_async(&mut self.redis.clone())
            .await
    }

    /// Records a failed attempt (best effort: it informs operators only).
    pub async fn record_failure(&self, subscription_id: &str, event_id: &str, error: &str) {
        let now = chrono::Utc::now().to_rfc3339();
        let state = self.keys.delivery_state(subscription_id);
        let written: redis::RedisResult<()> = redis::pipe()
            .hset(&state, "last_failure_at", &now)
            .ignore()
            .hset(&state, "last_failed_event_id", event_id)
            .ignore()
            .hset(&state, "last_error", error)
            .ignore()
            .hincr(&state, "failed_attempts", 1)
            .ignore()
            .query_async(&mut self.redis.clone())
            .await;
        if let Err(redis_error) = written {
            tracing::warn!(%redis_error, subscription = %subscription_id, "recording a failure failed");
        }
    }
}
