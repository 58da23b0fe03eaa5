//! Redis records of the partner semantics (see
//! [`crate::model::subscription::semantics`]):
//!
//! - a dedup identity is a key `<ns>:dedup:<sub>:<hash>` with the rule's TTL,
//!   written in the transaction that records the success;
//! - entities live in two sorted sets per subscription, open and complete,
//!   scored by when each was last seen (unix ms). Every write prunes members
//!   older than the rule's TTL and renews the sets' own expiry, so an idle
//!   subscription's sets vanish and a busy one's stay bounded.

use super::{DeliveryState, StateError};
use crate::model::ids::SubscriptionId;
use crate::model::subscription::semantics::EntityMark;
use crate::model::subscription::Tracking;

/// Why delivery dropped an event without sending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Its dedup identity was already delivered.
    Duplicate,
    /// Its entity is complete.
    CompletedEntity,
}

impl Dropped {
    /// The outcome label and state counter: `deduplicated` or `completed_entity`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Duplicate => "deduplicated",
            Self::CompletedEntity => "completed_entity",
        }
    }
}

/// How many entities a subscription tracks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntityCounts {
    /// Seen and not complete.
    pub open: u64,
    /// A terminal status was delivered.
    pub complete: u64,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The last-seen time (unix ms) before which a record with `ttl_secs` is expired.
pub(crate) fn cutoff_ms(ttl_secs: u64) -> f64 {
    let ttl_ms = ttl_secs.saturating_mul(1_000) as f64;
    now_ms() as f64 - ttl_ms
}

fn expiry_secs(ttl_secs: u64) -> i64 {
    i64::try_from(ttl_secs).unwrap_or(i64::MAX)
}

impl DeliveryState {
    /// Adds the writes recording a delivered event's `tracking` to `pipe`.
    pub(crate) fn track(
        &self,
        pipe: &mut redis::Pipeline,
        subscription_id: &SubscriptionId,
        tracking: &Tracking,
    ) {
        if let Some(dedup) = &tracking.dedup {
            pipe.set_ex(
                self.keys.dedup(subscription_id, &dedup.hash),
                1u8,
                dedup.ttl_secs,
            )
            .ignore();
        }
        if let Some(entity) = &tracking.entity {
            self.track_entity(pipe, subscription_id, entity);
        }
    }

    fn track_entity(
        &self,
        pipe: &mut redis::Pipeline,
        subscription_id: &SubscriptionId,
        entity: &EntityMark,
    ) {
        let open = self.keys.open_entities(subscription_id);
        let complete = self.keys.complete_entities(subscription_id);
        let member = &entity.mark.hash;
        let ttl = entity.mark.ttl_secs;
        if entity.terminal {
            pipe.zadd(&complete, member, now_ms()).ignore();
            pipe.zrem(&open, member).ignore();
        } else {
            pipe.zadd(&open, member, now_ms()).ignore();
        }
        let cutoff = cutoff_ms(ttl);
        for set in [&open, &complete] {
            pipe.zrembyscore(set, "-inf", format!("({cutoff}"))
                .ignore()
                .expire(set, expiry_secs(ttl))
                .ignore();
        }
    }

    /// Records that an event was dropped for `why`: the state counter and,
    /// for a complete entity, that the entity was seen now (so it stays
    /// complete while its events keep coming).
    pub async fn record_dropped(
        &self,
        subscription_id: &SubscriptionId,
        why: Dropped,
        tracking: &Tracking,
    ) -> Result<(), StateError> {
        let mut pipe = redis::pipe();
        pipe.hincr(self.keys.delivery_state(subscription_id), why.label(), 1)
            .ignore();
        if let (Dropped::CompletedEntity, Some(entity)) = (why, &tracking.entity) {
            // XX: only a member still there is touched; an expired one stays gone.
            pipe.cmd("ZADD")
                .arg(self.keys.complete_entities(subscription_id))
                .arg("XX")
                .arg(now_ms())
                .arg(&entity.mark.hash)
                .ignore();
        }
        pipe.query_async::<()>(&mut self.connection()).await?;
        Ok(())
    }

    /// How many entities are open and complete within `ttl_secs` of last being seen.
    pub async fn entity_counts(
        &self,
        subscription_id: &SubscriptionId,
        ttl_secs: u64,
    ) -> Result<EntityCounts, StateError> {
        let cutoff = cutoff_ms(ttl_secs);
        let (open, complete): (u64, u64) = redis::pipe()
            .zcount(self.keys.open_entities(subscription_id), cutoff, "+inf")
            .zcount(self.keys.complete_entities(subscription_id), cutoff, "+inf")
            .query_async(&mut self.connection())
            .await?;
        Ok(EntityCounts { open, complete })
    }
}
