//! The block of a strict subscription: the event it waits on, which copy of
//! that event is the current one, and when it is due.
//!
//! Each delayed copy of a blocked event carries a retry id; only the copy
//! whose id matches the block is attempted, so copies made stale by a
//! "retry now" or a crash between publish and ack are dropped, not re-sent.
//! The block also keeps the event itself, so an operator can retry it now
//! and a lost delayed copy can be re-issued.

use super::{DeliveryState, StateError};
use crate::model::ids::{EventId, RetryId, SubscriptionId};
use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use std::collections::HashMap;

/// What a strict subscription is waiting on (serialisable for backups).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Block {
    /// The event that keeps failing.
    pub event_id: EventId,
    /// Id of the one delayed copy that may be attempted next.
    pub retry_id: RetryId,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the current copy comes back to the queue.
    pub next_attempt_at: DateTime<Utc>,
    /// When the event first failed (the give-up age counts from here).
    pub first_failure_at: DateTime<Utc>,
    /// Why the last attempt failed.
    pub last_error: String,
    /// The event as it travels on the wire (the envelope JSON).
    pub envelope: String,
    /// The subscription incarnation it was made in (empty on blocks
    /// written before incarnations existed): another incarnation's block
    /// holds nothing back.
    #[serde(default)]
    pub incarnation: String,
}

/// Gives an existing block a fresh policy, due now (re-enabling).
const RESTART_IF_PRESENT: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'attempts', '0', 'first_failure_at', ARGV[1], 'next_attempt_at', ARGV[1])
  return 1
end
return 0
"#;

/// Puts in the new copy's id and due time only if the block still names
/// the copy the caller saw, so a retry-now cannot undo a newer failure.
const RESCHEDULE_IF_CURRENT: &str = r#"
if redis.call('HGET', KEYS[1], 'retry_id') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'retry_id', ARGV[2], 'next_attempt_at', ARGV[3])
  return 1
end
return 0
"#;

impl Block {
    fn to_fields(&self) -> [(&'static str, String); 8] {
        [
            ("event_id", self.event_id.to_string()),
            ("retry_id", self.retry_id.to_string()),
            ("attempts", self.attempts.to_string()),
            ("next_attempt_at", self.next_attempt_at.to_rfc3339()),
            ("first_failure_at", self.first_failure_at.to_rfc3339()),
            ("last_error", self.last_error.clone()),
            ("envelope", self.envelope.clone()),
            ("incarnation", self.incarnation.clone()),
        ]
    }

    /// Reads a block back from its hash; an empty hash means no block.
    pub(crate) fn from_fields(
        key: &str,
        mut fields: HashMap<String, String>,
    ) -> Result<Option<Self>, StateError> {
        if fields.is_empty() {
            return Ok(None);
        }
        let corrupt = |reason: String| StateError::Corrupt {
            key: key.to_string(),
            reason,
        };
        let mut take = |name: &str| {
            fields
                .remove(name)
                .ok_or_else(|| corrupt(format!("missing field {name}")))
        };
        let time = |text: String, name: &str| {
            DateTime::parse_from_rfc3339(&text)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| StateError::Corrupt {
                    key: key.to_string(),
                    reason: format!("{name}: {e}"),
                })
        };
        let event_id =
            EventId::try_from(take("event_id")?).map_err(|e| corrupt(format!("event_id: {e}")))?;
        let retry_id =
            RetryId::try_from(take("retry_id")?).map_err(|e| corrupt(format!("retry_id: {e}")))?;
        let attempts = take("attempts")?;
        let next_attempt_at = take("next_attempt_at")?;
        let first_failure_at = take("first_failure_at")?;
        let last_error = take("last_error")?;
        let envelope = take("envelope")?;
        let incarnation = fields.remove("incarnation").unwrap_or_default();
        Ok(Some(Self {
            event_id,
            retry_id,
            attempts: attempts
                .parse()
                .map_err(|e| corrupt(format!("attempts: {e}")))?,
            next_attempt_at: time(next_attempt_at, "next_attempt_at")?,
            first_failure_at: time(first_failure_at, "first_failure_at")?,
            last_error,
            envelope,
            incarnation,
        }))
    }

    /// The block as the API shows it (without the event body).
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "event_id": self.event_id,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at,
            "first_failure_at": self.first_failure_at,
            "last_error": self.last_error,
        })
    }
}

impl DeliveryState {
    /// The subscription's block, if it is waiting on the ladder.
    pub async fn block(
        &self,
        subscription_id: &SubscriptionId,
    ) -> Result<Option<Block>, StateError> {
        let key = self.keys.block(subscription_id);
        let fields: HashMap<String, String> = self.connection().hgetall(&key).await?;
        Block::from_fields(&key, fields)
    }

    /// Records (or replaces) the subscription's block.
    pub async fn set_block(
        &self,
        subscription_id: &SubscriptionId,
        block: &Block,
    ) -> Result<(), StateError> {
        let key = self.keys.block(subscription_id);
        redis::pipe()
            .atomic()
            .del(&key)
            .ignore()
            .hset_multiple(&key, &block.to_fields())
            .ignore()
            .query_async::<()>(&mut self.connection())
            .await?;
        Ok(())
    }

    /// Ends the subscription's block.
    pub async fn clear_block(&self, subscription_id: &SubscriptionId) -> Result<(), StateError> {
        let _: () = self
            .connection()
            .del(self.keys.block(subscription_id))
            .await?;
        Ok(())
    }

    /// Restarts the subscription's block, if it has one, with a fresh policy
    /// and due now: a re-enabled subscription tries its blocked event first,
    /// with a whole ladder again. Returns whether there was a block.
    pub async fn restart_block(
        &self,
        subscription_id: &SubscriptionId,
    ) -> Result<bool, StateError> {
        let restarted: i64 = redis::Script::new(RESTART_IF_PRESENT)
            .key(self.keys.block(subscription_id))
            .arg(Utc::now().to_rfc3339())
            .invoke_async(&mut self.connection())
            .await?;
        Ok(restarted == 1)
    }

    /// Makes `new_retry_id` the current copy, due at `due`, if the block
    /// still names `seen_retry_id`; returns whether it did.
    pub async fn reschedule_block(
        &self,
        subscription_id: &SubscriptionId,
        seen_retry_id: &RetryId,
        new_retry_id: &RetryId,
        due: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        let swapped: i64 = redis::Script::new(RESCHEDULE_IF_CURRENT)
            .key(self.keys.block(subscription_id))
            .arg(seen_retry_id.as_str())
            .arg(new_retry_id.as_str())
            .arg(due.to_rfc3339())
            .invoke_async(&mut self.connection())
            .await?;
        Ok(swapped == 1)
    }

    /// First-failure times of the blocked subscriptions among `ids`, in one round trip.
    pub async fn blocked_since(
        &self,
        ids: &[SubscriptionId],
    ) -> Result<Vec<(SubscriptionId, DateTime<Utc>)>, StateError> {
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hget(self.keys.block(id), "first_failure_at");
        }
        let found: Vec<Option<String>> = pipe.query_async(&mut self.connection()).await?;
        Ok(ids
            .iter()
            .zip(found)
            .filter_map(|(id, since)| {
                let since = DateTime::parse_from_rfc3339(&since?).ok()?;
                Some((id.clone(), since.with_timezone(&Utc)))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        let now = DateTime::parse_from_rfc3339("2026-11-23T10:00:00.123Z")
            .unwrap()
            .with_timezone(&Utc);
        let block = Block {
            event_id: EventId::parse("e1").unwrap(),
            retry_id: RetryId::parse("r1").unwrap(),
            attempts: 5,
            next_attempt_at: now,
            first_failure_at: now,
            last_error: "receiver answered 500".into(),
            envelope: "{}".into(),
            incarnation: "i1".into(),
        };
        let fields: HashMap<String, String> = block
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(fields.len(), 8);
        assert_eq!(Block::from_fields("k", fields).unwrap(), Some(block));
        assert_eq!(Block::from_fields("k", HashMap::new()).unwrap(), None);
    }
}
