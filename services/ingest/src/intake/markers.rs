//! The intake's Redis records: which event ids were accepted (one marker
//! per id, kept `dedup_ttl_secs`), each batch checked in one round trip that
//! also confirms the installation marker.

use super::IntakeError;
use postline_shared::model::ids::EventId;
use postline_shared::redis::keys::RedisKeys;
use postline_shared::runtime::ops::Readiness;
use redis::aio::ConnectionManager;
use std::sync::Arc;

/// Reads and writes the accepted-id markers.
#[derive(Clone)]
pub struct Markers {
    keys: RedisKeys,
    redis: ConnectionManager,
    ttl_secs: u64,
    readiness: Arc<Readiness>,
}

impl Markers {
    /// Markers in `redis` under `keys`, kept `ttl_secs`.
    pub fn new(
        keys: RedisKeys,
        redis: ConnectionManager,
        ttl_secs: u64,
        readiness: Arc<Readiness>,
    ) -> Self {
        Self {
            keys,
            redis,
            ttl_secs,
            readiness,
        }
    }

    /// Which of `event_ids` were accepted before, in one Redis round trip
    /// that also confirms the installation marker: events are matched
    /// against the catalog only while Redis still holds the state, so an
    /// emptied Redis never turns accepted events into unmatched ones.
    pub async fn seen(&self, event_ids: &[&EventId]) -> Result<Vec<bool>, IntakeError> {
        if self.readiness.is_state_lost() {
            return Err(IntakeError::StateLost);
        }
        if event_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.exists(self.keys.installation());
        for id in event_ids {
            pipe.exists(self.keys.intake_dedup(id));
        }
        let mut replies: Vec<bool> = pipe.query_async(&mut self.redis.clone()).await?;
        if replies.first() != Some(&true) {
            // Intake only runs after the marker was found or written, so
            // its absence now means Redis lost the state.
            tracing::error!("installation marker missing in Redis: state lost; intake holds still");
            self.readiness.set_state_lost(true);
            return Err(IntakeError::StateLost);
        }
        replies.remove(0);
        Ok(replies)
    }

    /// Remembers `event_ids` as accepted, in one Redis round trip. Call it only
    /// once every copy of those events is confirmed: a crash before it means
    /// the events are accepted again and republished (the per-subscription
    /// delivered markers then stop a second POST), never lost.
    pub async fn remember(&self, event_ids: &[&EventId]) -> Result<(), redis::RedisError> {
        if event_ids.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for id in event_ids {
            pipe.set_ex(self.keys.intake_dedup(id), 1u8, self.ttl_secs)
                .ignore();
        }
        pipe.query_async(&mut self.redis.clone()).await
    }
}
