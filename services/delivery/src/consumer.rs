//! The ordered consumer of one subscription queue.
//!
//! Messages are handled strictly one after another in queue order. Each is
//! acked only after its final outcome; when the receiver keeps failing, the
//! event is handed back to the head of the queue together with everything
//! prefetched behind it, so order survives failures, restarts and failover.

use crate::attempt::{self, AttemptError};
use crate::metrics::DeliveryMetrics;
use crate::state::DeliveryState;
use crate::token::TokenClient;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::Connection;
use postline_shared::broker::{ConfirmedPublisher, PublishError};
use postline_shared::subscription::{OrderMode, Subscription};
use postline_shared::topology::Topology;
use postline_shared::Envelope;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long an unordered subscription holds a failing event before handing it back.
const UNORDERED_HAND_BACK_PAUSE: Duration = Duration::from_secs(5);

/// What every consumer of this process shares.
pub struct ConsumerContext {
    /// AMQP names.
    pub topology: Topology,
    /// Delivered markers and state.
    pub state: DeliveryState,
    /// HTTP client for receivers.
    pub client: reqwest::Client,
    /// Bearer tokens for receivers that need one.
    pub tokens: TokenClient,
    /// Metrics.
    pub metrics: DeliveryMetrics,
    /// Messages in flight per consumer.
    pub prefetch: u16,
    /// Immediate retries before handing an event back.
    pub inplace_retries: u32,
    /// Pause between immediate retries.
    pub retry_pause: Duration,
}

/// Why a consumer session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Asked to stop (shutdown, subscription paused or deleted).
    Stopped,
    /// An event kept failing and went back to the head of the queue;
    /// `progressed` tells whether anything was delivered before it.
    HandedBack {
        /// Whether this session delivered at least one event first.
        progressed: bool,
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
    /// Dead-lettering an unreadable message failed.
    #[error(transparent)]
    Publish(#[from] PublishError),
}

enum Handled {
    Done,
    HandBack,
}

/// One consumer session on the queue of the subscription in `subscription`.
#[derive(Clone)]
pub struct SubscriptionConsumer {
    /// Shared context.
    pub context: Arc<ConsumerContext>,
    /// The subscription's current settings (updated live).
    pub subscription: watch::Receiver<Arc<Subscription>>,
    /// Publisher for dead-lettering unreadable messages.
    pub publisher: ConfirmedPublisher,
}

impl SubscriptionConsumer {
    /// Consumes until stopped, handed back, cancelled by the broker, or failed.
    pub async fn run(
        &self,
        connection: &Connection,
        stop: &CancellationToken,
    ) -> Result<Ended, ConsumerError> {
        let id = self.subscription.borrow().id().to_string();
        let topology = &self.context.topology;
        let channel = connection.create_channel().await?;
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
        let unordered = self.subscription.borrow().spec.order == OrderMode::None;
        let outcome = if unordered {
            self.consume_unordered(&id, &mut consumer, stop).await
        } else {
            self.consume_in_order(&id, &mut consumer, stop).await
        };
        // Closing the channel returns every prefetched, unacked message to the
        // queue in its original position, so the next consumer resumes in order.
        let _ = channel.close(200, "consumer stopped".into()).await;
        outcome
    }

    /// Strict order: one event at a time; a failing event stops the session.
    async fn consume_in_order(
        &self,
        id: &str,
        consumer: &mut lapin::Consumer,
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
            match self.handle(id, delivery, stop).await? {
                Handled::Done => progressed = true,
                Handled::HandBack => return Ok(Ended::HandedBack { progressed }),
            }
        }
    }

    /// Order mode `none`: up to `prefetch` POSTs at once; a failing event is
    /// handed back on its own after a pause, and the others keep flowing.
    async fn consume_unordered(
        &self,
        id: &str,
        consumer: &mut lapin::Consumer,
        stop: &CancellationToken,
    ) -> Result<Ended, ConsumerError> {
        let limit = usize::from(self.context.prefetch.max(1));
        let mut in_flight = tokio::task::JoinSet::new();
        let outcome = loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break Ok(Ended::Stopped),
                Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => {
                    match joined {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => break Err(error),
                        Err(panic) => {
                            tracing::error!(subscription = %id, %panic, "delivery task panicked");
                        }
                    }
                }
                next = consumer.next(), if in_flight.len() < limit => match next {
                    Some(Ok(delivery)) => {
                        let worker = self.clone();
                        let (id, stop) = (id.to_string(), stop.clone());
                        in_flight.spawn(async move { worker.handle(&id, delivery, &stop).await });
                    }
                    Some(Err(error)) => break Err(error.into()),
                    None => break Ok(Ended::Cancelled),
                },
            }
        };
        // POSTs in flight finish and are acked (or handed back) before the channel closes.
        while in_flight.join_next().await.is_some() {}
        outcome
    }

    async fn handle(
        &self,
        id: &str,
        delivery: Delivery,
        stop: &CancellationToken,
    ) -> Result<Handled, ConsumerError> {
        let context = &self.context;
        let envelope = match Envelope::from_wire(&delivery.data) {
            Ok(envelope) => envelope,
            Err(error) => {
                self.dead_letter(id, &delivery, &error.to_string()).await?;
                return Ok(Handled::Done);
            }
        };
        match context.state.was_delivered(id, &envelope.id).await {
            Ok(true) => {
                tracing::info!(subscription = %id, event_id = %envelope.id, "already delivered; skipping");
                context.metrics.count(id, "duplicate_skipped");
                // Safe to ack: a success for this event is already recorded.
                delivery.acker.ack(BasicAckOptions::default()).await?;
                return Ok(Handled::Done);
            }
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(%error, subscription = %id, event_id = %envelope.id, "redis unavailable; handing the event back");
                return self.hand_back(id, &envelope, delivery, stop).await;
            }
        }
        for attempt_number in 1..=1 + context.inplace_retries {
            // Settings are read per attempt so a live update applies at once.
            let subscription = self.subscription.borrow().clone();
            let attempt =
                attempt::deliver(&context.client, &context.tokens, &subscription, &envelope).await;
            match attempt.result {
                Ok(status) => {
                    self.settle_success(
                        id,
                        &envelope,
                        delivery,
                        status,
                        attempt_number,
                        attempt.duration,
                    )
                    .await?;
                    return Ok(Handled::Done);
                }
                Err(error) => {
                    self.note_failure(id, &envelope, &error, attempt_number, attempt.duration)
                        .await;
                    if attempt_number > context.inplace_retries
                        || pause_or_stop(context.retry_pause, stop).await
                    {
                        break;
                    }
                }
            }
        }
        self.hand_back(id, &envelope, delivery, stop).await
    }

    /// Records a delivered event and acks it.
    async fn settle_success(
        &self,
        id: &str,
        envelope: &Envelope,
        delivery: Delivery,
        status: u16,
        attempt_number: u32,
        duration: Duration,
    ) -> Result<(), ConsumerError> {
        let context = &self.context;
        let metrics = &context.metrics;
        metrics
            .attempt_duration
            .with_label_values(&["success"])
            .observe(duration.as_secs_f64());
        // The marker goes first: after a crash before the ack, the
        // redelivered message finds it and is not POSTed again.
        if let Err(error) = context.state.record_success(id, &envelope.id).await {
            tracing::warn!(%error, subscription = %id, event_id = %envelope.id, "recording the success failed");
        }
        // Safe to ack: the receiver accepted the event.
        delivery.acker.ack(BasicAckOptions::default()).await?;
        metrics.count(id, "delivered");
        if let Some(generated) = envelope.generated_at() {
            let age = chrono::Utc::now() - generated;
            metrics
                .end_to_end_latency
                .observe(age.as_seconds_f64().max(0.0));
        }
        tracing::debug!(subscription = %id, event_id = %envelope.id, status, attempt = attempt_number, duration_ms = duration.as_millis() as u64, "delivered");
        Ok(())
    }

    /// Records one failed attempt in metrics, logs and the delivery state.
    async fn note_failure(
        &self,
        id: &str,
        envelope: &Envelope,
        error: &AttemptError,
        attempt_number: u32,
        duration: Duration,
    ) {
        let context = &self.context;
        context
            .metrics
            .attempt_duration
            .with_label_values(&["failure"])
            .observe(duration.as_secs_f64());
        context.metrics.count(id, "failed_attempt");
        tracing::warn!(subscription = %id, event_id = %envelope.id, attempt = attempt_number, duration_ms = duration.as_millis() as u64, %error, "delivery attempt failed");
        context
            .state
            .record_failure(id, &envelope.id, &error.to_string())
            .await;
    }

    async fn hand_back(
        &self,
        id: &str,
        envelope: &Envelope,
        delivery: Delivery,
        stop: &CancellationToken,
    ) -> Result<Handled, ConsumerError> {
        if self.subscription.borrow().spec.order == OrderMode::None {
            // Without ordering the others keep flowing; holding just this
            // message for a while keeps it from coming straight back.
            pause_or_stop(UNORDERED_HAND_BACK_PAUSE, stop).await;
        }
        // A requeued message returns to its original place at the head of a
        // classic queue; in strict mode the caller then closes the channel so
        // the messages prefetched behind it go back too and nothing overtakes it.
        delivery
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await?;
        self.context.metrics.count(id, "handed_back");
        tracing::info!(subscription = %id, event_id = %envelope.id, "event handed back to the head of its queue");
        Ok(Handled::HandBack)
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
        delivery.acker.ack(BasicAckOptions::default()).await?;
        Ok(())
    }
}

/// Sleeps `pause`; returns true if `stop` fired first.
async fn pause_or_stop(pause: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(pause) => false,
    }
}
