//! Acting on an event the retry policy will not retry in place: send it to
//! the delay queue of its next ladder step (blocking a strict subscription
//! until it is due), or give up on it by the subscription's rule.
//!
//! Each step makes its work durable (a confirmed publish, a Redis write)
//! before it lets the consumer ack, and says so in an [`Outcome`].

use crate::consumer::{Handled, SubscriptionConsumer, TRANSIENT_BACKOFF};
use chrono::{TimeDelta, Utc};
use lapin::message::Delivery;
use postline_shared::delivery_state::{Block, ParkedEvent};
use postline_shared::ladder::GiveUpRule;
use postline_shared::redelivery::RetryHeaders;
use postline_shared::subscription::{Disabled, OrderMode, Subscription};
use postline_shared::Envelope;

/// An event whose last attempt failed.
pub struct Failure<'a> {
    /// The event.
    pub envelope: &'a Envelope,
    /// Attempts made so far, the failed one included.
    pub attempts: u32,
    /// When it first failed.
    pub first_failure: chrono::DateTime<Utc>,
    /// Why the last attempt failed.
    pub error: String,
}

/// What the consumer does with the message once a step is done.
#[derive(Debug)]
pub enum Outcome {
    /// Ack it (the step made the event durable elsewhere), then go on as said.
    Ack(Handled),
    /// Put it back in its place in the queue, then go on as said.
    Requeue(Handled),
}

fn retry_soon() -> Outcome {
    Outcome::Requeue(Handled::Wait(Utc::now() + TRANSIENT_BACKOFF))
}

/// Sends the event to the delay queue of `delay_ms`; a strict subscription
/// is blocked on it until then.
pub async fn reschedule(
    consumer: &SubscriptionConsumer,
    id: &str,
    delivery: &Delivery,
    failure: &Failure<'_>,
    delay_ms: u64,
    subscription: &Subscription,
) -> Outcome {
    let context = &consumer.context;
    let event_id = &failure.envelope.id;
    let retry_id = uuid::Uuid::new_v4().to_string();
    let headers = RetryHeaders {
        attempts: failure.attempts,
        first_failure: Some(failure.first_failure),
        retry_id: Some(retry_id.clone()),
    };
    if let Err(error) = consumer
        .redelivery()
        .to_delay_queue(id, &delivery.data, &headers, delay_ms)
        .await
    {
        tracing::warn!(%error, subscription = %id, %event_id, "scheduling a retry failed; handing the event back");
        return retry_soon();
    }
    let due = Utc::now() + TimeDelta::milliseconds(i64::try_from(delay_ms).unwrap_or(i64::MAX));
    context
        .metrics
        .retries_scheduled
        .with_label_values(&[&delay_ms.to_string()])
        .inc();
    tracing::info!(subscription = %id, %event_id, attempts = failure.attempts, delay_ms, next_attempt_at = %due, "retry scheduled on the ladder");
    if subscription.spec.order == OrderMode::None {
        // Safe to ack: a confirmed copy waits in the delay queue.
        return Outcome::Ack(Handled::Done);
    }
    let block = Block {
        event_id: event_id.clone(),
        retry_id,
        attempts: failure.attempts,
        next_attempt_at: due,
        first_failure_at: failure.first_failure,
        last_error: failure.error.clone(),
        envelope: String::from_utf8_lossy(&delivery.data).into_owned(),
    };
    if let Err(error) = context.state.set_block(id, &block).await {
        // Without the block later events would overtake this one, so the
        // original stays; the delayed copy becomes a stale duplicate.
        tracing::warn!(%error, subscription = %id, %event_id, "recording the block failed; handing the event back");
        return retry_soon();
    }
    // Safe to ack: a confirmed copy waits in the delay queue and the block
    // in Redis names it, so every replica holds later events back.
    Outcome::Ack(Handled::Wait(due))
}

/// Applies the subscription's give-up rule to the event.
pub async fn give_up(
    consumer: &SubscriptionConsumer,
    id: &str,
    delivery: &Delivery,
    failure: &Failure<'_>,
    subscription: &Subscription,
) -> Outcome {
    let context = &consumer.context;
    let event_id = &failure.envelope.id;
    let retry = &subscription.spec.retry;
    let strict = subscription.spec.order == OrderMode::Strict;
    match retry.on_give_up {
        GiveUpRule::Skip => {
            let parked = ParkedEvent {
                event_id: event_id.clone(),
                event_type: failure.envelope.event_type.clone(),
                attempts: failure.attempts,
                first_failure_at: failure.first_failure,
                given_up_at: Utc::now(),
                last_error: failure.error.clone(),
                envelope: String::from_utf8_lossy(&delivery.data).into_owned(),
            };
            if let Err(error) = context.state.park(id, &parked, strict).await {
                tracing::warn!(%error, subscription = %id, %event_id, "parking a given-up event failed; handing it back");
                return retry_soon();
            }
            context.metrics.give_ups.with_label_values(&["skip"]).inc();
            context.metrics.count(id, "given_up");
            tracing::warn!(subscription = %id, %event_id, attempts = failure.attempts, error = %failure.error, "retry policy exhausted; event parked for replay, moving on");
            // Safe to ack: the event is parked in Redis, kept for replay.
            Outcome::Ack(Handled::Done)
        }
        GiveUpRule::Disable => {
            let discard = retry.discard_on_disable;
            let why = Disabled {
                at: Utc::now(),
                reason: format!(
                    "retry policy exhausted after {} attempts: {}",
                    failure.attempts, failure.error
                ),
                event_id: event_id.clone(),
                backlog_discarded: discard,
            };
            if let Err(error) = context.store.disable(id, why).await {
                tracing::warn!(%error, subscription = %id, "disabling the subscription failed; handing the event back");
                return retry_soon();
            }
            if let Err(error) = context.state.clear_block(id).await {
                // Re-enabling clears it too, so the event is not given up twice.
                tracing::warn!(%error, subscription = %id, "clearing the block of a disabled subscription failed");
            }
            context
                .metrics
                .give_ups
                .with_label_values(&["disable"])
                .inc();
            context.metrics.count(id, "given_up");
            tracing::error!(subscription = %id, %event_id, attempts = failure.attempts, error = %failure.error, discard, "retry policy exhausted; subscription disabled");
            if discard {
                let _ = context.state.count(id, "discarded", 1).await;
                // Safe to ack: the subscription asked for its undelivered
                // events to be discarded; the rest of the queue is purged next.
                Outcome::Ack(Handled::Disabled { discard })
            } else {
                // Requeued, the event stays at the head of the kept backlog
                // and is the first delivered after re-enabling.
                Outcome::Requeue(Handled::Disabled { discard })
            }
        }
    }
}
