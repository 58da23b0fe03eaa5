//! Parked events: events a subscription gave up on with the `skip` rule,
//! kept (with why they failed) until an operator replays them.

use super::{DeliveryState, StateError, GIVEN_UP};
use crate::model::ids::{EventId, SubscriptionId};
use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

/// One given-up event kept for replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedEvent {
    /// Event id.
    pub event_id: EventId,
    /// Event type.
    pub event_type: String,
    /// Attempts made before giving up.
    pub attempts: u32,
    /// When it first failed.
    pub first_failure_at: DateTime<Utc>,
    /// When it was given up.
    pub given_up_at: DateTime<Utc>,
    /// Why the last attempt failed.
    pub last_error: String,
    /// The event as it travels on the wire (the envelope JSON); not shown by the API.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub envelope: String,
}

impl ParkedEvent {
    /// The parked event as the API lists it (without the body).
    pub fn view(&self) -> Self {
        Self {
            envelope: String::new(),
            ..self.clone()
        }
    }
}

impl DeliveryState {
    /// Parks `event` and marks it settled so no stale copy of it is sent;
    /// when `unblock`, the subscription's block ends in the same transaction.
    pub async fn park(
        &self,
        subscription_id: &SubscriptionId,
        event: &ParkedEvent,
        unblock: bool,
    ) -> Result<(), StateError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        self.keep_parked(&mut pipe, subscription_id, event)?;
        pipe.hincr(self.keys.delivery_state(subscription_id), "given_up", 1)
            .ignore();
        if unblock {
            pipe.del(self.keys.block(subscription_id)).ignore();
        }
        pipe.query_async::<()>(&mut self.connection()).await?;
        Ok(())
    }

    /// Puts back parked events from a backup (each marked settled again,
    /// as when it was parked, so no stale copy of it is sent).
    pub async fn restore_parked(
        &self,
        subscription_id: &SubscriptionId,
        events: &[ParkedEvent],
    ) -> Result<(), StateError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for event in events {
            self.keep_parked(&mut pipe, subscription_id, event)?;
        }
        pipe.query_async::<()>(&mut self.connection()).await?;
        Ok(())
    }

    /// Adds to `pipe` the record of parked `event` and its settled marker.
    fn keep_parked(
        &self,
        pipe: &mut redis::Pipeline,
        subscription_id: &SubscriptionId,
        event: &ParkedEvent,
    ) -> Result<(), StateError> {
        let record = serde_json::to_string(event).map_err(|e| StateError::Corrupt {
            key: self.keys.parked(subscription_id),
            reason: e.to_string(),
        })?;
        pipe.hset(
            self.keys.parked(subscription_id),
            event.event_id.as_str(),
            record,
        )
        .ignore()
        .set_ex(
            self.keys.delivered(subscription_id, &event.event_id),
            GIVEN_UP,
            self.settled_ttl_secs,
        )
        .ignore();
        Ok(())
    }

    /// Every parked event of a subscription, oldest give-up first.
    pub async fn parked(
        &self,
        subscription_id: &SubscriptionId,
    ) -> Result<Vec<ParkedEvent>, StateError> {
        let key = self.keys.parked(subscription_id);
        let records: Vec<String> = self.connection().hvals(&key).await?;
        let mut events = records
            .iter()
            .map(|record| {
                serde_json::from_str::<ParkedEvent>(record).map_err(|e| StateError::Corrupt {
                    key: key.clone(),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        events.sort_by_key(|e| e.given_up_at);
        Ok(events)
    }

    /// One parked event of a subscription, if it is parked.
    pub async fn parked_event(
        &self,
        subscription_id: &SubscriptionId,
        event_id: &EventId,
    ) -> Result<Option<ParkedEvent>, StateError> {
        let key = self.keys.parked(subscription_id);
        let record: Option<String> = self.connection().hget(&key, event_id.as_str()).await?;
        record
            .map(|record| {
                serde_json::from_str(&record).map_err(|e| StateError::Corrupt {
                    key: key.clone(),
                    reason: e.to_string(),
                })
            })
            .transpose()
    }

    /// How many events each of `ids` has parked, in one round trip.
    pub async fn parked_counts(&self, ids: &[SubscriptionId]) -> Result<Vec<usize>, StateError> {
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hlen(self.keys.parked(id));
        }
        Ok(pipe.query_async(&mut self.connection()).await?)
    }

    /// Clears the settled marker of a parked event before it is replayed,
    /// so the replayed copy is delivered rather than skipped.
    pub async fn prepare_replay(
        &self,
        subscription_id: &SubscriptionId,
        event_id: &EventId,
    ) -> Result<(), StateError> {
        let _: () = self
            .connection()
            .del(self.keys.delivered(subscription_id, event_id))
            .await?;
        Ok(())
    }

    /// Removes a parked event once its replayed copy is safely queued.
    pub async fn unpark(
        &self,
        subscription_id: &SubscriptionId,
        event_id: &EventId,
    ) -> Result<(), StateError> {
        let _: () = self
            .connection()
            .hdel(self.keys.parked(subscription_id), event_id.as_str())
            .await?;
        Ok(())
    }
}
