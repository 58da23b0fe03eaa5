//! The consumer of one subscription queue: one session per channel.
//!
//! In `strict` order a session handles messages one after another in queue
//! order and ends as soon as the subscription is blocked on the ladder:
//! closing the channel puts every prefetched message back in its place, and
//! the next session starts when the blocked event is due. Nothing is held
//! unacked while waiting. In order mode `none` up to `prefetch` POSTs run at
//! once and a failing event waits in a delay queue without holding the rest.
//!
//! Before sending, an event is dropped (acked, never POSTed) when its dedup
//! identity was already delivered or its entity is complete; a subscription
//! with `interval_ms` ends its session at the first event queued after the
//! current tick (see [`crate::interval`]).

use crate::attempt::{self, Attempt};
use crate::connections::within;
use crate::interval::Tick;
use crate::metrics::DeliveryMetrics;
use crate::retry::{Failure, Outcome};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::Connection;
use postline_shared::broker::{self, ConfirmedPublisher, PublishError, SettleError};
use postline_shared::delivery_state::semantics::Dropped;
use postline_shared::delivery_state::{AttemptRecord, Block, DeliveryState};
use postline_shared::ladder::NextStep;
use postline_shared::redelivery::{Redelivery, RetryHeaders};
use postline_shared::subscription::{OrderMode, Subscription, SubscriptionStore, Tracking};
use postline_shared::token_client::TokenClient;
use postline_shared::topology::Topology;
use postline_shared::Envelope;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long to wait before trying again after Redis or the broker failed us.
pub(crate) const TRANSIENT_BACKOFF: Duration = Duration::from_secs(1);
/// How late a blocked event's delayed copy may be before it counts as lost
/// and is re-issued from the copy kept in its block.
const LOST_COPY_GRACE: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// What every consumer of this process shares.
pub struct ConsumerContext {
    /// AMQP names.
    pub topology: Topology,
    /// Delivery records (settled markers, blocks, parked events, attempt log).
    pub state: DeliveryState,
    /// Subscriptions (to disable one when its policy gives up).
    pub store: SubscriptionStore,
    /// HTTP client for receivers.
    pub client: postline_shared::outbound::OutboundClient,
    /// Bearer tokens for receivers that need one.
    pub tokens: TokenClient,
    /// Metrics.
    pub metrics: DeliveryMetrics,
    /// Messages in flight per consumer.
    pub prefetch: u16,
}

/// Why a consumer session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Asked to stop (shutdown, subscription paused or deleted).
    Stopped,
    /// Start the next session at `until` (blocked on the ladder, or after a
    /// transient failure); `progressed` tells whether anything was settled.
    Wait {
        /// When to consume again.
        until: DateTime<Utc>,
        /// Whether this session settled at least one event.
        progressed: bool,
    },
    /// The retry policy gave up and disabled the subscription; with
    /// `discard` its backlog was purged as the subscription asked.
    Disabled {
        /// Whether the backlog was to be discarded.
        discard: bool,
    },
    /// The broker cancelled the consumer (queue deleted).
    Cancelled,
}

/// Why a consumer session failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// Channel or connection trouble.
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    /// The channel ended before the broker took an ack or nack: the message
    /// is unsettled and the broker hands it out again.
    #[error("broker: the channel ended before the ack or nack reached it")]
    Unsettled,
    /// Dead-lettering an unreadable message failed.
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handled {
    /// Settled (acked) or dead-lettered; go on with the next.
    Done,
    /// Handed back; consume again at this time.
    Wait(DateTime<Utc>),
    /// The subscription was disabled; `discard` asks for its backlog to be purged.
    Disabled {
        /// Purge the queue once the channel is closed.
        discard: bool,
    },
    /// Handed back because the consumer is stopping.
    Stopped,
}

/// A successful attempt, as the consumer settles it.
#[derive(Debug, Clone, Copy)]
struct Settled {
    /// The receiver's status.
    status: u16,
    /// Attempts made, this one included.
    attempts: u32,
    /// Whether a block named this event.
    unblock: bool,
}

/// Where an event stands on its retry policy when this copy arrives.
#[derive(Debug, Clone, Copy)]
struct History {
    attempts: u32,
    first_failure: Option<DateTime<Utc>>,
    /// Whether a block names this event (a success or give-up ends it).
    blocked: bool,
}

/// One consumer session on the queue of the subscription in `subscription`.
#[derive(Clone)]
pub struct SubscriptionConsumer {
    /// Shared context.
    pub context: Arc<ConsumerContext>,
    /// The subscription's current settings (updated live).
    pub subscription: watch::Receiver<Arc<Subscription>>,
    /// Publisher for delayed copies and dead letters.
    pub publisher: ConfirmedPublisher,
}

impl SubscriptionConsumer {
    pub(crate) fn settings(&self) -> Arc<Subscription> {
        self.subscription.borrow().clone()
    }

    pub(crate) fn redelivery(&self) -> Redelivery {
        Redelivery::new(self.publisher.clone(), self.context.topology.clone())
    }

    /// Consumes until stopped, blocked, disabled, cancelled by the broker, or failed.
    pub async fn run(
        &self,
        connection: &Connection,
        stop: &CancellationToken,
    ) -> Result<Ended, ConsumerError> {
        let id = self.settings().id().to_string();
        let topology = &self.context.topology;
        let channel = within(connection.create_channel()).await?;
        channel
            .basic_qos(self.context.prefetch, BasicQosOptions::default())
            .await?;
        topology.declare_subscription(&channel, &id).await?;
        let mut consumer = channel
            .basic_consume(
                topology.subscription_queue(&id).into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let settings = self.settings();
        // An interval session delivers what was queued before the latest tick.
        let tick = settings.spec.interval_ms.map(Tick::now);
        let outcome = if settings.spec.order == OrderMode::None {
            self.consume_unordered(&id, &mut consumer, tick, stop).await
        } else {
            self.consume_in_order(&id, &mut consumer, tick, stop).await
        };
        // Closing the channel returns every prefetched, unacked message to the
        // queue in its original position, so the next consumer resumes in order.
        let _ = channel.close(200, "consumer session over".into()).await;
        if let Ok(Ended::Disabled { discard: true }) = outcome {
            self.discard_backlog(connection, &id).await;
        }
        outcome
    }

    /// Strict order: one event at a time; a blocked event ends the session.
    async fn consume_in_order(
        &self,
        id: &str,
        consumer: &mut lapin::Consumer,
        tick: Option<Tick>,
        stop: &CancellationToken,
    ) -> Result<Ended, ConsumerError> {
        let mut progressed = false;
        loop {
            let delivery = tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(Ended::Stopped),
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => delivery,
                    Some(Err(error)) => return Err(error.into()),
                    None => return Ok(Ended::Cancelled),
                },
            };
            match self.handle(id, delivery, tick, stop).await? {
                Handled::Done => progressed = true,
                other => return Ok(other.ended(progressed)),
            }
        }
    }

    /// Order mode `none`: up to `prefetch` POSTs at once; a failing event
    /// goes to a delay queue on its own and the others keep flowing.
    async fn consume_unordered(
        &self,
        id: &str,
        consumer: &mut lapin::Consumer,
        tick: Option<Tick>,
        stop: &CancellationToken,
    ) -> Result<Ended, ConsumerError> {
        let limit = usize::from(self.context.prefetch.max(1));
        let mut in_flight = tokio::task::JoinSet::new();
        // The first outcome that ends the session; in-flight POSTs still finish.
        let mut settled_any = false;
        let mut ending: Option<Result<Ended, ConsumerError>> = None;
        while ending.is_none() {
            tokio::select! {
                biased;
                _ = stop.cancelled() => ending = Some(Ok(Ended::Stopped)),
                Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => {
                    match joined {
                        Ok(Ok(Handled::Done)) => settled_any = true,
                        Ok(Ok(other)) => ending = Some(Ok(other.ended(settled_any))),
                        Ok(Err(error)) => ending = Some(Err(error)),
                        Err(panic) => {
                            tracing::error!(subscription = %id, %panic, "delivery task panicked");
                        }
                    }
                }
                next = consumer.next(), if in_flight.len() < limit => match next {
                    Some(Ok(delivery)) => {
                        let worker = self.clone();
                        let (id, stop) = (id.to_string(), stop.clone());
                        in_flight.spawn(async move { worker.handle(&id, delivery, tick, &stop).await });
                    }
                    Some(Err(error)) => ending = Some(Err(error.into())),
                    None => ending = Some(Ok(Ended::Cancelled)),
                },
            }
        }
        // POSTs in flight finish and are settled before the channel closes.
        while let Some(joined) = in_flight.join_next().await {
            if let Ok(Ok(Handled::Disabled { discard })) = joined {
                ending = Some(Ok(Ended::Disabled { discard }));
            }
        }
        ending.unwrap_or(Ok(Ended::Stopped))
    }

    /// Handles one message: hand it back if it belongs to a later tick,
    /// skip it if settled, drop it if a duplicate or of a complete entity,
    /// hold it back if the subscription is blocked on another event,
    /// otherwise attempt it.
    async fn handle(
        &self,
        id: &str,
        delivery: Delivery,
        tick: Option<Tick>,
        stop: &CancellationToken,
    ) -> Result<Handled, ConsumerError> {
        let context = &self.context;
        if let Some(due) = tick.and_then(|tick| tick.wait_for(&delivery.properties)) {
            tracing::debug!(subscription = %id, %due, "queued after the current tick; waiting for the next");
            // Safe: a requeued message returns to its own place in the queue.
            requeue(&delivery).await?;
            context.metrics.count(id, "held_for_tick");
            return Ok(Handled::Wait(due));
        }
        let envelope = match Envelope::from_wire(&delivery.data) {
            Ok(envelope) => envelope,
            Err(error) => {
                self.dead_letter(id, &delivery, &error.to_string()).await?;
                return Ok(Handled::Done);
            }
        };
        let subscription = self.settings();
        let strict = subscription.spec.order == OrderMode::Strict;
        let tracking = Tracking::for_event(&subscription, &envelope);
        let carried = RetryHeaders::read(&delivery.properties);
        let precheck = match context.state.precheck(id, &envelope.id, &tracking).await {
            Ok(precheck) => precheck,
            Err(error) => {
                tracing::warn!(%error, subscription = %id, event_id = %envelope.id, "redis unavailable; handing the event back");
                requeue(&delivery).await?;
                return Ok(Handled::Wait(Utc::now() + TRANSIENT_BACKOFF));
            }
        };
        let names_this_event = precheck
            .block
            .as_ref()
            .is_some_and(|block| block.event_id == envelope.id);
        if precheck.settled {
            if names_this_event {
                // A block must never outlive its event's settlement.
                let _ = context.state.clear_block(id).await;
            }
            tracing::info!(subscription = %id, event_id = %envelope.id, "already settled; skipping");
            context.metrics.count(id, "duplicate_skipped");
            // Safe to ack: a success (or give-up) for this event is already recorded.
            ack(&delivery).await?;
            return Ok(Handled::Done);
        }
        // A drop depends only on what was delivered, so it is right even
        // while the subscription is blocked on another event.
        let dropped = if precheck.entity_complete {
            Some(Dropped::CompletedEntity)
        } else if precheck.duplicate {
            Some(Dropped::Duplicate)
        } else {
            None
        };
        if let Some(why) = dropped {
            self.drop_event(id, &envelope, &delivery, why, &tracking, names_this_event)
                .await?;
            return Ok(Handled::Done);
        }
        let history = match precheck.block {
            Some(block) if strict && names_this_event => {
                if carried.retry_id.as_deref() != Some(block.retry_id.as_str()) {
                    tracing::info!(subscription = %id, event_id = %envelope.id, "stale copy of the blocked event; dropping it");
                    context.metrics.count(id, "superseded");
                    // Safe to ack: the block names another copy of this event,
                    // confirmed in a delay queue or at the head of the queue.
                    ack(&delivery).await?;
                    return Ok(Handled::Done);
                }
                History {
                    attempts: block.attempts,
                    first_failure: Some(block.first_failure_at),
                    blocked: true,
                }
            }
            Some(block) if strict => return self.hold_back(id, &delivery, &block).await,
            // Without a block a strict event starts its policy afresh (a
            // re-enabled subscription gets a full ladder again).
            _ if strict => History {
                attempts: 0,
                first_failure: None,
                blocked: false,
            },
            _ => History {
                attempts: carried.attempts,
                first_failure: carried.first_failure,
                blocked: names_this_event,
            },
        };
        self.attempt(id, &envelope, delivery, history, &tracking, stop)
            .await
    }

    /// Acks an event that must not be sent: its identity was delivered
    /// already, or its entity is complete.
    async fn drop_event(
        &self,
        id: &str,
        envelope: &Envelope,
        delivery: &Delivery,
        why: Dropped,
        tracking: &Tracking,
        names_block: bool,
    ) -> Result<(), ConsumerError> {
        let state = &self.context.state;
        if names_block {
            // A block must never outlive its event's settlement.
            let _ = state.clear_block(id).await;
        }
        if let Err(error) = state.record_dropped(id, why, tracking).await {
            tracing::warn!(%error, subscription = %id, event_id = %envelope.id, "counting a dropped event failed");
        }
        tracing::info!(subscription = %id, event_id = %envelope.id, reason = why.label(), "not sent");
        self.context.metrics.count(id, why.label());
        // Safe to ack: the delivery that makes this event redundant is
        // recorded in Redis, and the event is never to be sent.
        ack(delivery).await?;
        Ok(())
    }

    /// Hands back a message of a subscription blocked on another event and
    /// says when to look again; re-issues the blocked event if its copy is lost.
    async fn hold_back(
        &self,
        id: &str,
        delivery: &Delivery,
        block: &Block,
    ) -> Result<Handled, ConsumerError> {
        let now = Utc::now();
        if now > block.next_attempt_at + LOST_COPY_GRACE {
            tracing::warn!(subscription = %id, event_id = %block.event_id, due = %block.next_attempt_at, "blocked event is overdue; re-issuing it from its block");
            let reissued = self
                .redelivery()
                .reissue_blocked(&self.context.state, id, block)
                .await;
            if let Err(error) = reissued {
                tracing::warn!(%error, subscription = %id, "re-issuing the blocked event failed");
            }
        }
        // Safe: a requeued message returns to its own place in the queue.
        requeue(delivery).await?;
        self.context.metrics.count(id, "held_back");
        Ok(Handled::Wait(block.next_attempt_at.max(now)))
    }

    /// POSTs the event, retrying in place while the policy says so, then
    /// settles it: delivered, rescheduled on the ladder, or given up.
    async fn attempt(
        &self,
        id: &str,
        envelope: &Envelope,
        delivery: Delivery,
        history: History,
        tracking: &Tracking,
        stop: &CancellationToken,
    ) -> Result<Handled, ConsumerError> {
        let context = &self.context;
        let mut attempts = history.attempts;
        let mut first_failure = history.first_failure;
        loop {
            attempts += 1;
            // Settings are read per attempt so a live update applies at once.
            let subscription = self.settings();
            let attempt =
                attempt::deliver(&context.client, &context.tokens, &subscription, envelope).await;
            let record = self.attempt_record(envelope, attempts, &attempt);
            let error = match attempt.result {
                Ok(status) => {
                    let settled = Settled {
                        status,
                        attempts,
                        unblock: history.blocked,
                    };
                    self.settle_success(id, envelope, delivery, settled, tracking, &record)
                        .await?;
                    return Ok(Handled::Done);
                }
                Err(error) => error,
            };
            context.metrics.count(id, "failed_attempt");
            tracing::warn!(subscription = %id, event_id = %envelope.id, attempt = attempts, duration_ms = attempt.duration.as_millis() as u64, %error, "delivery attempt failed");
            context
                .state
                .record_failure(id, &envelope.id, &error.to_string(), &record)
                .await;
            let now = Utc::now();
            let first = *first_failure.get_or_insert(now);
            let failure = Failure {
                envelope,
                attempts,
                first_failure: first,
                error: error.to_string(),
            };
            match subscription.spec.retry.after_failure(attempts, first, now) {
                NextStep::RetryNow(pause) => {
                    if pause_or_stop(pause, stop).await {
                        requeue(&delivery).await?;
                        return Ok(Handled::Stopped);
                    }
                }
                NextStep::Delay { delay_ms } => {
                    return self
                        .reschedule(id, delivery, &failure, delay_ms, &subscription)
                        .await;
                }
                NextStep::GiveUp => {
                    return self.give_up(id, delivery, &failure, &subscription).await
                }
            }
        }
    }

    async fn reschedule(
        &self,
        id: &str,
        delivery: Delivery,
        failure: &Failure<'_>,
        delay_ms: u64,
        subscription: &Subscription,
    ) -> Result<Handled, ConsumerError> {
        let outcome =
            crate::retry::reschedule(self, id, &delivery, failure, delay_ms, subscription).await;
        self.finish(&delivery, outcome).await
    }

    async fn give_up(
        &self,
        id: &str,
        delivery: Delivery,
        failure: &Failure<'_>,
        subscription: &Subscription,
    ) -> Result<Handled, ConsumerError> {
        let outcome = crate::retry::give_up(self, id, &delivery, failure, subscription).await;
        self.finish(&delivery, outcome).await
    }

    /// Acks or requeues the message as the retry step decided.
    async fn finish(
        &self,
        delivery: &Delivery,
        outcome: Outcome,
    ) -> Result<Handled, ConsumerError> {
        match outcome {
            Outcome::Ack(handled) => {
                ack(delivery).await?;
                Ok(handled)
            }
            Outcome::Requeue(handled) => {
                requeue(delivery).await?;
                Ok(handled)
            }
        }
    }

    /// Records a delivered event (with its dedup identity and entity) and acks it.
    async fn settle_success(
        &self,
        id: &str,
        envelope: &Envelope,
        delivery: Delivery,
        settled: Settled,
        tracking: &Tracking,
        record: &AttemptRecord,
    ) -> Result<(), ConsumerError> {
        let Settled {
            status,
            attempts,
            unblock,
        } = settled;
        let context = &self.context;
        let metrics = &context.metrics;
        // The marker goes first: after a crash before the ack, the
        // redelivered message finds it and is not POSTed again.
        if let Err(error) = context
            .state
            .record_success(id, &envelope.id, unblock, tracking, record)
            .await
        {
            tracing::warn!(%error, subscription = %id, event_id = %envelope.id, "recording the success failed");
        }
        // Safe to ack: the receiver accepted the event.
        ack(&delivery).await?;
        metrics.count(id, "delivered");
        if unblock {
            tracing::info!(subscription = %id, event_id = %envelope.id, attempts, "blocked event delivered; subscription unblocked");
        }
        if let Some(generated) = envelope.generated_at() {
            let age = Utc::now() - generated;
            metrics
                .end_to_end_latency
                .observe(age.as_seconds_f64().max(0.0));
        }
        tracing::debug!(subscription = %id, event_id = %envelope.id, status, attempt = attempts, "delivered");
        Ok(())
    }

    /// Observes the attempt in the metrics and describes it for the
    /// attempt log (written with the attempt's outcome, in one round trip).
    fn attempt_record(&self, envelope: &Envelope, number: u32, attempt: &Attempt) -> AttemptRecord {
        let context = &self.context;
        let (label, status, error) = match &attempt.result {
            Ok(status) => ("success", Some(*status), None),
            Err(error) => ("failure", error.status(), Some(error.to_string())),
        };
        context
            .metrics
            .attempt_duration
            .with_label_values(&[label])
            .observe(attempt.duration.as_secs_f64());
        AttemptRecord {
            at: Utc::now(),
            event_id: envelope.id.clone(),
            attempt: number,
            status,
            error,
            duration_ms: attempt.duration.as_millis() as u64,
            outcome: if attempt.result.is_ok() {
                "delivered"
            } else {
                "failed"
            }
            .into(),
        }
    }

    /// Empties the queue of a subscription disabled with `discard_on_disable`.
    async fn discard_backlog(&self, connection: &Connection, id: &str) {
        let purged = async {
            let channel = within(connection.create_channel()).await?;
            let purged = channel
                .queue_purge(
                    self.context.topology.subscription_queue(id).into(),
                    QueuePurgeOptions::default(),
                )
                .await;
            let _ = channel.close(200, "backlog discarded".into()).await;
            purged
        }
        .await;
        match purged {
            Ok(count) => {
                tracing::warn!(subscription = %id, discarded = count, "disabled subscription's backlog discarded");
                let _ = self
                    .context
                    .state
                    .count(id, "discarded", i64::from(count))
                    .await;
                self.context
                    .metrics
                    .deliveries
                    .with_label_values(&[id, "discarded"])
                    .inc_by(u64::from(count));
            }
            Err(error) => {
                tracing::error!(%error, subscription = %id, "discarding the backlog failed; it is kept")
            }
        }
    }

    async fn dead_letter(
        &self,
        id: &str,
        delivery: &Delivery,
        reason: &str,
    ) -> Result<(), ConsumerError> {
        tracing::error!(subscription = %id, %reason, "unreadable message on a subscription queue; dead-lettering it");
        self.context.metrics.count(id, "invalid_message");
        self.publisher
            .dead_letter(
                &self.context.topology.rejected_queue(),
                &delivery.data,
                "invalid_envelope",
                reason,
                &[("postline-subscription", id)],
            )
            .await?;
        // Safe to ack: the message and its reason are confirmed in the rejected queue.
        ack(delivery).await?;
        Ok(())
    }
}

impl Handled {
    /// How a session ends on this outcome; `progressed` if it settled anything first.
    fn ended(self, progressed: bool) -> Ended {
        match self {
            Self::Done | Self::Stopped => Ended::Stopped,
            Self::Wait(until) => Ended::Wait { until, progressed },
            Self::Disabled { discard } => Ended::Disabled { discard },
        }
    }
}

/// Acks a message: call it only once the work the ack stands for is durable.
async fn ack(delivery: &Delivery) -> Result<(), ConsumerError> {
    settle(delivery, delivery.acker.ack(BasicAckOptions::default())).await
}

/// Puts a message back in its place in the queue, unsettled.
async fn requeue(delivery: &Delivery) -> Result<(), ConsumerError> {
    let nack = delivery.acker.nack(BasicNackOptions {
        requeue: true,
        ..Default::default()
    });
    settle(delivery, nack).await
}

/// Awaits an ack or nack of `delivery` (see [`broker::settle`]).
async fn settle(
    delivery: &Delivery,
    settling: impl std::future::Future<Output = lapin::Result<bool>>,
) -> Result<(), ConsumerError> {
    broker::settle(&delivery.acker, settling)
        .await
        .map_err(|error| match error {
            SettleError::Unsettled => ConsumerError::Unsettled,
            SettleError::Broker(error) => ConsumerError::Broker(error),
        })
}

/// Sleeps `pause`; returns true if `stop` fired first.
async fn pause_or_stop(pause: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(pause) => false,
    }
}
