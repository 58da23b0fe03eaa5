//! The recent-attempts log of a subscription: a capped Redis stream with one
//! entry per POST (time, event, attempt number, status or error, duration),
//! for the management API and status pages.

use super::{DeliveryState, StateError};
use crate::model::ids::{EventId, SubscriptionId};
use chrono::{DateTime, Utc};
use redis::streams::{StreamMaxlen, StreamRangeReply};
use serde::{Deserialize, Serialize};

/// One logged attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// When the attempt finished.
    pub at: DateTime<Utc>,
    /// Event id.
    pub event_id: EventId,
    /// Event type (empty in records written before it was kept).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub event_type: String,
    /// Attempt number of this event (1 for the first POST).
    pub attempt: u32,
    /// HTTP status, when the receiver answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why it failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: u64,
    /// `delivered` or `failed`.
    pub outcome: String,
}

/// The stream field holding the record's JSON.
const RECORD_FIELD: &str = "record";

impl DeliveryState {
    /// Adds the XADD of `record` to `pipe`, so the attempt is logged in the
    /// same round trip as the outcome it belongs to.
    pub(crate) fn append_attempt(
        &self,
        pipe: &mut redis::Pipeline,
        subscription_id: &SubscriptionId,
        record: &AttemptRecord,
    ) {
        // Plain data with string keys: serializing cannot fail.
        let json = serde_json::to_string(record).unwrap_or_default();
        pipe.cmd("XADD")
            .arg(self.keys.attempts(subscription_id))
            .arg(StreamMaxlen::Approx(self.attempt_log_cap))
            .arg("*")
            .arg(RECORD_FIELD)
            .arg(json)
            .ignore();
    }

    /// The `limit` most recent attempts, newest first.
    pub async fn recent_attempts(
        &self,
        subscription_id: &SubscriptionId,
        limit: usize,
    ) -> Result<Vec<AttemptRecord>, StateError> {
        let key = self.keys.attempts(subscription_id);
        let reply: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(&key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut self.connection())
            .await?;
        reply
            .ids
            .iter()
            .map(|entry| {
                let json: String = entry.get(RECORD_FIELD).unwrap_or_default();
                serde_json::from_str(&json).map_err(|e| StateError::Corrupt {
                    key: key.clone(),
                    reason: format!("entry {}: {e}", entry.id),
                })
            })
            .collect()
    }
}
