//! Sending a copy of an event back towards its subscription queue: through
//! the delay queue of a ladder step, straight to the head of the queue, or to
//! its tail (a replay), together with the retry headers the copy carries.
//!
//! Delivery uses it to reschedule failures; the management API to retry a
//! blocked event now and to replay parked ones. Every publish is confirmed.

use crate::amqp::broker::{string_headers, ConfirmedPublisher, PublishError};
use crate::amqp::topology::{header_str, Topology, DELAY_HEADER};
use crate::model::ids::{RetryId, SubscriptionId};
use crate::redis::delivery_state::{Block, DeliveryState, StateError};
use chrono::{DateTime, Utc};
use lapin::BasicProperties;

/// Attempts made so far on the event (our header: RabbitMQ 4 ignores client `x-death`).
pub const ATTEMPTS_HEADER: &str = "postline-attempts";
/// When the event first failed (RFC 3339).
pub const FIRST_FAILURE_HEADER: &str = "postline-first-failure";
/// Which delayed copy this is; only the copy the block names is attempted.
pub const RETRY_ID_HEADER: &str = "postline-retry-id";
/// The subscription incarnation a copy was made for (set by ingest on every
/// copy and kept on every re-published one); delivery drops other incarnations'.
pub const INCARNATION_HEADER: &str = "postline-incarnation";

/// Priority of copies that must go to the head of their subscription queue.
const HEAD_PRIORITY: u8 = 1;

/// Why a copy could not be sent back.
#[derive(Debug, thiserror::Error)]
pub enum RedeliveryError {
    /// The publish was not confirmed.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The delay queue could not be declared.
    #[error("declaring delay queue {queue}: {source}")]
    Declare {
        /// The delay queue.
        queue: String,
        /// What the broker said.
        #[source]
        source: lapin::Error,
    },
}

/// Why a blocked event could not be re-issued.
#[derive(Debug, thiserror::Error)]
pub enum ReissueError {
    /// The fresh copy was not confirmed.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The block could not be updated.
    #[error(transparent)]
    State(#[from] StateError),
}

/// Retry bookkeeping carried in a copy's headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryHeaders {
    /// Attempts made so far (0 on a fresh event).
    pub attempts: u32,
    /// When the event first failed.
    pub first_failure: Option<DateTime<Utc>>,
    /// The copy's retry id.
    pub retry_id: Option<RetryId>,
    /// The subscription incarnation the copy was made for (`None` on copies
    /// made before incarnations existed).
    pub incarnation: Option<String>,
}

impl RetryHeaders {
    /// Reads the headers of a received message; missing or malformed ones
    /// read as a fresh event (the block in Redis is the authority anyway).
    pub fn read(properties: &BasicProperties) -> Self {
        let headers = properties.headers().as_ref();
        Self {
            attempts: header_str(headers, ATTEMPTS_HEADER)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
            first_failure: header_str(headers, FIRST_FAILURE_HEADER)
                .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&Utc)),
            retry_id: header_str(headers, RETRY_ID_HEADER)
                .and_then(|id| RetryId::try_from(id).ok()),
            incarnation: header_str(headers, INCARNATION_HEADER),
        }
    }

    fn properties(&self, delay_ms: Option<u64>) -> BasicProperties {
        let attempts = self.attempts.to_string();
        let first_failure = self.first_failure.map(|t| t.to_rfc3339());
        let delay = delay_ms.map(|ms| ms.to_string());
        let pairs = [
            Some((ATTEMPTS_HEADER, attempts.as_str())),
            first_failure.as_deref().map(|t| (FIRST_FAILURE_HEADER, t)),
            self.retry_id
                .as_ref()
                .map(|id| (RETRY_ID_HEADER, id.as_str())),
            self.incarnation
                .as_deref()
                .map(|incarnation| (INCARNATION_HEADER, incarnation)),
            delay.as_deref().map(|ms| (DELAY_HEADER, ms)),
        ];
        BasicProperties::default()
            .with_headers(string_headers(pairs.into_iter().flatten()))
            .with_priority(HEAD_PRIORITY)
            .with_content_type("application/json".into())
    }
}

/// Sends event copies back towards subscription queues.
#[derive(Debug, Clone)]
pub struct Redelivery {
    publisher: ConfirmedPublisher,
    topology: Topology,
}

impl Redelivery {
    /// Publishes through `publisher` into the queues of `topology`.
    pub fn new(publisher: ConfirmedPublisher, topology: Topology) -> Self {
        Self {
            publisher,
            topology,
        }
    }

    /// Parks a copy in the delay queue of `delay_ms`; when it expires it
    /// returns to the head of the subscription queue. Declares the delay
    /// queue on first use (an unroutable publish means it is missing).
    pub async fn to_delay_queue(
        &self,
        subscription_id: &SubscriptionId,
        body: &[u8],
        headers: &RetryHeaders,
        delay_ms: u64,
    ) -> Result<(), RedeliveryError> {
        let exchange = self.topology.delay_exchange();
        let properties = headers.properties(Some(delay_ms));
        let first = self
            .publisher
            .publish_confirmed(
                &exchange,
                subscription_id.as_str(),
                body,
                properties.clone(),
            )
            .await;
        match first {
            Err(PublishError::Unroutable { .. }) => {
                // Delay queues are declared with their subscription, so this
                // means one was deleted by hand; ids only in the log.
                tracing::warn!(subscription = %subscription_id, delay_ms, "delay queue missing; declaring it and publishing again");
                self.topology
                    .declare_delay_queue(self.publisher.channel(), delay_ms)
                    .await
                    .map_err(|source| RedeliveryError::Declare {
                        queue: self.topology.delay_queue(delay_ms),
                        source,
                    })?;
                Ok(self
                    .publisher
                    .publish_confirmed(&exchange, subscription_id.as_str(), body, properties)
                    .await?)
            }
            other => Ok(other?),
        }
    }

    /// Puts a copy at the head of the subscription queue (priority 1).
    pub async fn to_head(
        &self,
        subscription_id: &SubscriptionId,
        body: &[u8],
        headers: &RetryHeaders,
    ) -> Result<(), PublishError> {
        self.publisher
            .publish_confirmed(
                &self.topology.deliver_exchange(),
                subscription_id.as_str(),
                body,
                headers.properties(None),
            )
            .await
    }

    /// Puts a fresh copy of a blocked event at the head of its queue and
    /// makes it the block's current copy, due now: "retry now" for operators,
    /// and the cure for a delayed copy that never came back. Returns false
    /// when the block moved on meanwhile (the fresh copy is then dropped as stale).
    pub async fn reissue_blocked(
        &self,
        state: &DeliveryState,
        subscription_id: &SubscriptionId,
        incarnation: &str,
        block: &Block,
    ) -> Result<bool, ReissueError> {
        let retry_id = RetryId::generate();
        let headers = RetryHeaders {
            attempts: block.attempts,
            first_failure: Some(block.first_failure_at),
            retry_id: Some(retry_id.clone()),
            incarnation: Some(incarnation.to_string()),
        };
        // The copy goes first: a block naming a copy that does not exist
        // would hold the subscription until the next overdue check.
        self.to_head(subscription_id, block.envelope.as_bytes(), &headers)
            .await?;
        Ok(state
            .reschedule_block(subscription_id, &block.retry_id, &retry_id, Utc::now())
            .await?)
    }

    /// Puts a fresh copy, made for `incarnation`, at the tail of the
    /// subscription queue (a replay).
    pub async fn to_tail(
        &self,
        subscription_id: &SubscriptionId,
        incarnation: &str,
        body: &[u8],
    ) -> Result<(), PublishError> {
        let headers = string_headers([(INCARNATION_HEADER, incarnation)]);
        self.publisher
            .publish_confirmed(
                &self.topology.deliver_exchange(),
                subscription_id.as_str(),
                body,
                BasicProperties::default()
                    .with_content_type("application/json".into())
                    .with_headers(headers),
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let headers = RetryHeaders {
            attempts: 4,
            first_failure: DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            retry_id: RetryId::parse("r-1").ok(),
            incarnation: Some("i-1".into()),
        };
        let properties = headers.properties(Some(300_000));
        assert_eq!(RetryHeaders::read(&properties), headers);
        assert_eq!(
            header_str(properties.headers().as_ref(), DELAY_HEADER).as_deref(),
            Some("300000")
        );
        assert_eq!(properties.priority(), &Some(1));
        assert_eq!(
            RetryHeaders::read(&BasicProperties::default()),
            RetryHeaders::default()
        );
    }
}
