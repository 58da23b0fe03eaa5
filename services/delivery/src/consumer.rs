//! The consumer of one subscription queue: one session per channel, and the
//! executor of [`crate::decision`]: it reads what a decision needs (the
//! message, the subscription, the event's delivery state, the attempt's
//! answer), asks the decision, and carries it out — acks and hand-backs, Redis
//! writes, confirmed publishes, metrics and logs — deciding nothing itself.
//!
//! In `strict` order a session handles messages one after another and ends
//! as soon as the subscription is blocked on the ladder: closing the channel
//! puts every prefetched message back in its place, and the next session
//! starts when the blocked event is due. In order mode `none` up to
//! `max_in_flight` POSTs run at once. Every POST first waits for the
//! subscription's rate limit ([`crate::pacing`]).

use crate::acks::Acks;
use crate::attempt::{self, Attempt};
use crate::connections::within;
pub use crate::consumer_error::ConsumerError;
use crate::decision::{
    self, AfterFailure, Arrival, DisableCause, History, OnArrival, Screened, Stale,
};
use crate::interval::Tick;
use crate::metrics::DeliveryMetrics;
use crate::pacing::{self, Pacer};
use chrono::{DateTime, Utc};
use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, BasicQosOptions, QueuePurgeOptions};
use lapin::types::FieldTable;
use lapin::Connection;
use postline_shared::amqp::broker::ConfirmedPublisher;
use postline_shared::amqp::migration;
use postline_shared::amqp::redelivery::{Redelivery, RetryHeaders};
use postline_shared::amqp::topology::Topology;
use postline_shared::model::ids::{EventId, RetryId, SubscriptionId};
use postline_shared::model::subscription::{Disabled, OrderMode, Subscription, Tracking};
use postline_shared::outbound::token_client::TokenClient;
use postline_shared::redis::delivery_state::semantics_records::Dropped;
use postline_shared::redis::delivery_state::{
    AttemptRecord, Block, DeliveryState, ParkedEvent, Precheck,
};
use postline_shared::redis::subscription_store::SubscriptionStore;
use postline_shared::Envelope;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How long to wait before trying again after Redis or the broker failed us.
pub(crate) const TRANSIENT_BACKOFF: Duration = Duration::from_secs(1);

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
    /// Messages in flight per consumer (and POSTs at once in order mode
    /// `none`, unless the subscription sets `max_in_flight`).
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
    /// The subscription was disabled (policy exhausted, or receiver gone);
    /// with `discard` its backlog was purged as the subscription asked.
    Disabled {
        /// Whether the backlog was to be discarded.
        discard: bool,
    },
    /// The broker cancelled the consumer (queue deleted).
    Cancelled,
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

/// One event being handled: the message it came in (none when it is a
/// blocked event attempted from the copy kept in its block), its body, and
/// where it stands.
struct InHand<'a> {
    id: &'a SubscriptionId,
    acks: &'a Acks,
    delivery: Option<&'a Delivery>,
    body: &'a [u8],
    envelope: &'a Envelope,
    tracking: &'a Tracking,
    incarnation: &'a str,
}

impl InHand<'_> {
    /// Acks the message it came in, if any (see [`Acks::ack`]).
    async fn ack(&self) -> Result<(), ConsumerError> {
        match self.delivery {
            Some(delivery) => self.acks.ack(delivery).await,
            None => Ok(()),
        }
    }

    /// Hands the message it came in back, if any (see [`hand_back`]).
    fn hand_back(&self) {
        if let Some(delivery) = self.delivery {
            hand_back(delivery);
        }
    }
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
    /// The subscription's rate limiter (kept across sessions).
    pub pacer: Arc<Pacer>,
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
        let settings = self.settings();
        // One span per session: every line logged while consuming names the
        // subscription, its incarnation and the queue, so no line repeats them.
        let span = tracing::info_span!(
            "session",
            subscription = %settings.id(),
            incarnation = %settings.incarnation,
            queue = tracing::field::Empty,
        );
        self.run_session(connection, settings, stop)
            .instrument(span)
            .await
    }

    async fn run_session(
        &self,
        connection: &Connection,
        settings: Arc<Subscription>,
        stop: &CancellationToken,
    ) -> Result<Ended, ConsumerError> {
        let id = settings.id().clone();
        let topology = &self.context.topology;
        // An installation moving to quorum queues drains the subscription's
        // classic queue first: everything in it precedes the quorum queue.
        if let Some(legacy) = topology.legacy() {
            let queue = legacy.subscription_queue(&id);
            if migration::depth(connection, &queue)
                .await
                .map_err(lapin::Error::from)?
                .is_some()
            {
                return self.drain_legacy(connection, &settings, &queue, stop).await;
            }
        }
        let channel = within(connection.create_channel()).await?;
        topology.declare_subscription(&channel, &id).await?;
        let _ = channel.close(200, "declared".into()).await;
        let outcome = self
            .session(
                connection,
                &settings,
                &topology.subscription_queue(&id),
                stop,
            )
            .await;
        if let Ok(Ended::Disabled { discard: true }) = outcome {
            self.discard_backlog(connection, &id, &topology.subscription_queue(&id))
                .await;
        }
        outcome
    }

    /// Consumes the classic queue `queue` of a subscription moving to a
    /// quorum queue until it is empty and deleted, then ends the session so
    /// the next one reads the quorum queue (see `postline_shared::amqp::migration`).
    async fn drain_legacy(
        &self,
        connection: &Connection,
        settings: &Subscription,
        queue: &str,
        stop: &CancellationToken,
    ) -> Result<Ended, ConsumerError> {
        let id = settings.id();
        let (outcome, drained) =
            migration::until_empty(connection, queue, stop, |until| async move {
                self.session(connection, settings, queue, &until).await
            })
            .await;
        if stop.is_cancelled() {
            return outcome;
        }
        match outcome? {
            // Drained: delete it (refused while a message or another
            // replica's consumer is left), then go on with the quorum queue.
            Ended::Stopped if drained => {}
            Ended::Disabled { discard: true } => {
                self.discard_backlog(connection, id, queue).await;
                let current = self.context.topology.subscription_queue(id);
                self.discard_backlog(connection, id, &current).await;
                return Ok(Ended::Disabled { discard: true });
            }
            other => return Ok(other),
        }
        let retired = migration::retire(connection, queue)
            .await
            .map_err(lapin::Error::from)?;
        let now = Utc::now();
        if retired == Some(false) {
            return Ok(Ended::Wait {
                until: now + migration::RECHECK,
                progressed: true,
            });
        }
        tracing::warn!(%queue, "classic subscription queue drained and deleted; consuming the quorum one");
        Ok(Ended::Wait {
            until: now,
            progressed: true,
        })
    }

    /// One session on `queue`: a channel of its own, closed at the end, which
    /// returns every message not settled to its place.
    async fn session(
        &self,
        connection: &Connection,
        settings: &Subscription,
        queue: &str,
        stop: &CancellationToken,
    ) -> Result<Ended, ConsumerError> {
        let id = settings.id();
        tracing::Span::current().record("queue", queue);
        let window = pacing::prefetch_for(settings, self.context.prefetch);
        let channel = within(connection.create_channel()).await?;
        channel
            .basic_qos(window, BasicQosOptions::default())
            .await?;
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        if settings.spec.order == OrderMode::Strict {
            self.reissue_lost_copy(settings).await;
        }
        // An interval session delivers what was queued before the latest tick.
        let tick = settings.spec.interval_ms.map(Tick::now);
        let outcome = if settings.spec.order == OrderMode::None {
            self.consume_unordered(id, &mut consumer, tick, usize::from(window), stop)
                .await
        } else {
            self.consume_in_order(id, &mut consumer, tick, window, stop)
                .await
        };
        // Closing the channel returns every prefetched, unacked message to the
        // queue in its original position, so the next consumer resumes in order.
        let _ = channel.close(200, "consumer session over".into()).await;
        outcome
    }

    /// Strict order: one event at a time; a blocked event ends the session.
    /// Acks are batched (see [`crate::acks`]) and flushed when no next
    /// message comes within [`crate::acks::LINGER`] and when the session ends.
    async fn consume_in_order(
        &self,
        id: &SubscriptionId,
        consumer: &mut lapin::Consumer,
        tick: Option<Tick>,
        window: u16,
        stop: &CancellationToken,
    ) -> Result<Ended, ConsumerError> {
        let acks = Acks::batched(window);
        let ended = self
            .consume_in_order_with(id, consumer, tick, &acks, stop)
            .await;
        // The messages settled so far are acked before the channel closes,
        // whatever ended the session (a failed flush only means they come
        // again, and are skipped as settled).
        let flushed = acks.flush().await;
        let ended = ended?;
        flushed?;
        Ok(ended)
    }

    async fn consume_in_order_with(
        &self,
        id: &SubscriptionId,
        consumer: &mut lapin::Consumer,
        tick: Option<Tick>,
        acks: &Acks,
        stop: &CancellationToken,
    ) -> Result<Ended, ConsumerError> {
        let mut progressed = false;
        // The next message, taken while the current one was handled, with
        // its delivery state read meanwhile (when that read still holds).
        let mut carried: Option<(Delivery, Option<ReadAhead>)> = None;
        loop {
            if stop.is_cancelled() {
                return Ok(Ended::Stopped);
            }
            let (delivery, looked_ahead) = match carried.take() {
                Some(carried) => carried,
                None => match self.next_in_order(consumer, acks, stop).await? {
                    Next::Message(delivery) => (*delivery, None),
                    Next::Ended(ended) => return Ok(ended),
                },
            };
            // A message already prefetched behind this one gets its delivery
            // state read during this one's POST (one Redis round trip less).
            let (ahead, consumer_ended) = match consumer.next().now_or_never() {
                Some(Some(Ok(next))) => (Some(next), false),
                Some(Some(Err(error))) => return Err(error.into()),
                // The broker cancelled the consumer: this message is the last.
                Some(None) => (None, true),
                // Nothing prefetched yet.
                None => (None, false),
            };
            let Some(next) = ahead else {
                match self
                    .handle(id, delivery, tick, acks, looked_ahead, stop)
                    .instrument(delivery_span())
                    .await?
                {
                    Handled::Done if consumer_ended => return Ok(Ended::Cancelled),
                    Handled::Done => progressed = true,
                    other => return Ok(other.ended(progressed)),
                }
                continue;
            };
            let current_id = message_id(&delivery);
            let (handled, next_state) = tokio::join!(
                self.handle(id, delivery, tick, acks, looked_ahead, stop)
                    .instrument(delivery_span()),
                self.read_ahead(id, &next)
            );
            match handled? {
                Handled::Done => progressed = true,
                // `next` is handed back with the rest when the channel closes.
                other => return Ok(other.ended(progressed)),
            }
            let subscription = self.settings();
            let next_id = message_id(&next);
            let holds = next_state.map(|mut read| {
                // The event stays read; its state only while it still holds.
                read.precheck = read.precheck.filter(|state| {
                    decision::lookahead_holds(
                        &subscription,
                        current_id.as_ref(),
                        next_id.as_ref(),
                        state,
                    )
                });
                read
            });
            carried = Some((next, holds));
        }
    }

    /// The next message of a strict session; the batch of acks goes out
    /// when none comes within [`crate::acks::LINGER`].
    async fn next_in_order(
        &self,
        consumer: &mut lapin::Consumer,
        acks: &Acks,
        stop: &CancellationToken,
    ) -> Result<Next, ConsumerError> {
        let mut next = consumer.next().now_or_never();
        if next.is_none() && acks.pending() {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(Next::Ended(Ended::Stopped)),
                arrived = consumer.next() => next = Some(arrived),
                _ = tokio::time::sleep(crate::acks::LINGER) => {}
            }
        }
        let next = match next {
            Some(next) => next,
            None => {
                acks.flush().await?;
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => return Ok(Next::Ended(Ended::Stopped)),
                    next = consumer.next() => next,
                }
            }
        };
        match next {
            Some(Ok(delivery)) => Ok(Next::Message(Box::new(delivery))),
            Some(Err(error)) => Err(error.into()),
            None => Ok(Next::Ended(Ended::Cancelled)),
        }
    }

    /// Reads a message and its delivery state ahead of its turn; `None`
    /// when it is unreadable (it is dead-lettered in turn), no state when
    /// Redis failed (it is read again in turn).
    async fn read_ahead(&self, id: &SubscriptionId, delivery: &Delivery) -> Option<ReadAhead> {
        let envelope = Envelope::from_wire(&delivery.data).ok()?;
        let tracking = Tracking::for_event(&self.settings(), &envelope);
        let precheck = self
            .context
            .state
            .precheck(id, &envelope.id, &tracking)
            .await
            .ok();
        Some(ReadAhead { envelope, precheck })
    }

    /// Order mode `none`: up to `limit` POSTs at once; a failing event goes
    /// to a delay queue on its own and the others keep flowing.
    async fn consume_unordered(
        &self,
        id: &SubscriptionId,
        consumer: &mut lapin::Consumer,
        tick: Option<Tick>,
        limit: usize,
        stop: &CancellationToken,
    ) -> Result<Ended, ConsumerError> {
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
                            tracing::error!(%panic, "delivery task panicked");
                        }
                    }
                }
                next = consumer.next(), if in_flight.len() < limit => match next {
                    Some(Ok(delivery)) => {
                        let worker = self.clone();
                        let (id, stop) = (id.clone(), stop.clone());
                        in_flight.spawn(
                            async move {
                                // Concurrent POSTs settle in any order: each acked on its own.
                                worker
                                    .handle(&id, delivery, tick, &Acks::each(), None, &stop)
                                    .instrument(delivery_span())
                                    .await
                            }
                            .in_current_span(),
                        );
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

    /// Handles one message as [`decision::screen`] and
    /// [`decision::on_precheck`] say (in its [`delivery_span`]).
    async fn handle(
        &self,
        id: &SubscriptionId,
        delivery: Delivery,
        tick: Option<Tick>,
        acks: &Acks,
        ahead: Option<ReadAhead>,
        stop: &CancellationToken,
    ) -> Result<Handled, ConsumerError> {
        let context = &self.context;
        let subscription = self.settings();
        let copy = RetryHeaders::read(&delivery.properties);
        let arrival = Arrival {
            copy: &copy,
            tick_due: tick.and_then(|tick| tick.wait_for(&delivery.properties)),
        };
        match decision::screen(&subscription, &arrival) {
            Screened::WaitForTick(due) => {
                tracing::debug!(%due, "queued after the current tick; waiting for the next");
                hand_back(&delivery);
                context.metrics.count(id, "held_for_tick");
                return Ok(Handled::Wait(due));
            }
            Screened::DropStale(why) => {
                let event_id = message_id(&delivery);
                self.drop_stale(id, acks, &delivery, event_id.as_ref(), why)
                    .await?;
                return Ok(Handled::Done);
            }
            Screened::Check => {}
        }
        // Read ahead of its turn (see `consume_in_order_with`), or now.
        let (envelope, mut looked_ahead) = match ahead {
            Some(ReadAhead { envelope, precheck }) => (envelope, precheck),
            None => match Envelope::from_wire(&delivery.data) {
                Ok(envelope) => (envelope, None),
                Err(error) => {
                    self.dead_letter(id, acks, &delivery, &error.to_string())
                        .await?;
                    return Ok(Handled::Done);
                }
            },
        };
        tracing::Span::current().record("event_id", tracing::field::display(&envelope.id));
        if let Some(why) = decision::screen_event(&subscription, &envelope) {
            self.drop_stale(id, acks, &delivery, Some(&envelope.id), why)
                .await?;
            return Ok(Handled::Done);
        }
        let tracking = Tracking::for_event(&subscription, &envelope);
        let hand = InHand {
            id,
            acks,
            delivery: Some(&delivery),
            body: &delivery.data,
            envelope: &envelope,
            tracking: &tracking,
            incarnation: &subscription.incarnation,
        };
        // Decided again after a blocked event attempted first has settled.
        loop {
            let read = match looked_ahead.take() {
                Some(precheck) => Ok(precheck),
                None => context.state.precheck(id, &envelope.id, &tracking).await,
            };
            let precheck = match read {
                Ok(precheck) => precheck,
                Err(error) => {
                    tracing::warn!(%error, "redis unavailable; handing the event back");
                    hand_back(&delivery);
                    return Ok(Handled::Wait(Utc::now() + TRANSIENT_BACKOFF));
                }
            };
            let decided =
                decision::on_precheck(&subscription, &arrival, &envelope.id, &precheck, Utc::now());
            return match decided {
                OnArrival::SkipSettled { clear_block } => {
                    if clear_block {
                        let _ = context.state.clear_block(id).await;
                    }
                    tracing::info!("already settled; skipping");
                    context.metrics.count(id, "duplicate_skipped");
                    // Safe to ack: a success (or give-up) for this event is already recorded.
                    acks.ack(&delivery).await?;
                    Ok(Handled::Done)
                }
                OnArrival::Drop { why, clear_block } => {
                    self.drop_event(&hand, why, clear_block).await?;
                    Ok(Handled::Done)
                }
                OnArrival::DropStale(why) => {
                    self.drop_stale(id, acks, &delivery, Some(&envelope.id), why)
                        .await?;
                    Ok(Handled::Done)
                }
                OnArrival::HoldBack { until } => {
                    hand_back(&delivery);
                    context.metrics.count(id, "held_back");
                    Ok(Handled::Wait(until))
                }
                OnArrival::AttemptBlockedFirst(history) => {
                    let Some(block) = precheck.block else {
                        continue;
                    };
                    match self
                        .attempt_blocked(&subscription, &block, history, acks, stop)
                        .await?
                    {
                        // The blocked event is settled: this message is next.
                        Handled::Done => continue,
                        other => {
                            // Still blocked (or stopping): this message waits
                            // in its place; closing the channel returns the
                            // prefetched ones behind it in order.
                            hand_back(&delivery);
                            Ok(other)
                        }
                    }
                }
                OnArrival::Attempt(history) => self.attempt(&hand, history, stop).await,
            };
        }
    }

    /// Attempts a due blocked event from the copy kept in its block (its
    /// delayed copy, wherever it is in the queue, is then skipped as settled
    /// or dropped as superseded).
    async fn attempt_blocked(
        &self,
        subscription: &Subscription,
        block: &Block,
        history: History,
        acks: &Acks,
        stop: &CancellationToken,
    ) -> Result<Handled, ConsumerError> {
        let id = subscription.id();
        let envelope = match Envelope::from_wire(block.envelope.as_bytes()) {
            Ok(envelope) => envelope,
            Err(error) => {
                // Written from a message that was read once: only a damaged
                // Redis gets here. The body goes to the rejected queue.
                tracing::error!(event_id = %block.event_id, %error, "the blocked event's kept copy is unreadable; dead-lettering it");
                self.reject(id, block.envelope.as_bytes(), &error.to_string())
                    .await?;
                let _ = self.context.state.clear_block(id).await;
                return Ok(Handled::Done);
            }
        };
        // The blocked event is another than the message in hand: a span of its own.
        let span = delivery_span();
        span.record("event_id", tracing::field::display(&envelope.id));
        span.in_scope(|| {
            tracing::info!(
                attempts = history.attempts,
                "blocked event due; attempting it from its block"
            )
        });
        let tracking = Tracking::for_event(subscription, &envelope);
        let hand = InHand {
            id,
            acks,
            delivery: None,
            body: block.envelope.as_bytes(),
            envelope: &envelope,
            tracking: &tracking,
            incarnation: &subscription.incarnation,
        };
        self.attempt(&hand, history, stop).instrument(span).await
    }

    /// Acks an event that must not be sent: its identity was delivered
    /// already, or its entity is complete.
    async fn drop_event(
        &self,
        hand: &InHand<'_>,
        why: Dropped,
        clear_block: bool,
    ) -> Result<(), ConsumerError> {
        let (id, state) = (hand.id, &self.context.state);
        if clear_block {
            // A block must never outlive its event's settlement.
            let _ = state.clear_block(id).await;
        }
        if let Err(error) = state.record_dropped(id, why, hand.tracking).await {
            tracing::warn!(%error, "counting a dropped event failed");
        }
        tracing::info!(reason = why.label(), "not sent");
        self.context.metrics.count(id, why.label());
        // Safe to ack: the delivery that makes this event redundant is
        // recorded in Redis, and the event is never to be sent.
        hand.ack().await
    }

    /// Acks a copy that is not to be delivered: made for another
    /// incarnation, or superseded by the copy its block names.
    async fn drop_stale(
        &self,
        id: &SubscriptionId,
        acks: &Acks,
        delivery: &Delivery,
        event_id: Option<&EventId>,
        why: Stale,
    ) -> Result<(), ConsumerError> {
        let event_id = event_id.map_or("-", EventId::as_str);
        tracing::info!(%event_id, reason = why.label(), "stale copy; dropping it");
        self.context.metrics.count(id, why.label());
        if let Err(error) = self.context.state.count(id, why.label(), 1).await {
            tracing::warn!(%error, "counting a stale copy failed");
        }
        // Safe to ack: the copy belongs to a life of the subscription that is
        // over, or the block names another copy of this event, confirmed in a
        // delay queue or at the head of the queue.
        acks.ack(delivery).await
    }

    /// Queues a fresh copy of a blocked event whose delayed copy is long
    /// overdue, so the active consumer has a message to wake on.
    async fn reissue_lost_copy(&self, subscription: &Subscription) {
        let id = subscription.id();
        let block = match self.context.state.block(id).await {
            Ok(block) => block,
            Err(error) => {
                tracing::warn!(%error, "reading the block at session start failed");
                return;
            }
        };
        if !decision::reissue_on_session_start(block.as_ref(), Utc::now()) {
            return;
        }
        let Some(block) = block else { return };
        tracing::warn!(event_id = %block.event_id, due = %block.next_attempt_at, "blocked event's copy is overdue; queueing a fresh one");
        let reissued = self
            .redelivery()
            .reissue_blocked(&self.context.state, id, &subscription.incarnation, &block)
            .await;
        if let Err(error) = reissued {
            tracing::warn!(%error, "queueing a fresh copy of the blocked event failed");
        }
    }

    /// POSTs the event, retrying in place while the decision says so, then
    /// carries out what [`decision::after_failure`] decides, or settles the success.
    async fn attempt(
        &self,
        hand: &InHand<'_>,
        history: History,
        stop: &CancellationToken,
    ) -> Result<Handled, ConsumerError> {
        let (id, envelope, context) = (hand.id, hand.envelope, &self.context);
        let mut attempts = history.attempts;
        let mut first_failure = history.first_failure;
        loop {
            // Settings are read per attempt so a live update applies at once.
            let subscription = self.settings();
            let paced = tokio::select! {
                _ = stop.cancelled() => false,
                _ = self.pacer.ready(subscription.spec.rate_limit) => true,
            };
            if !paced {
                hand.hand_back();
                return Ok(Handled::Stopped);
            }
            attempts += 1;
            tracing::Span::current().record("attempt", attempts);
            let attempt =
                attempt::deliver(&context.client, &context.tokens, &subscription, envelope).await;
            let record = self.attempt_record(envelope, attempts, &attempt);
            let error = match attempt.result {
                Ok(status) => {
                    self.settle_success(hand, status, attempts, history.blocked, &record)
                        .await?;
                    return Ok(Handled::Done);
                }
                Err(error) => error,
            };
            context.metrics.count(id, "failed_attempt");
            tracing::warn!(duration_ms = attempt.duration.as_millis() as u64, %error, "delivery attempt failed");
            let reason = error.to_string();
            context
                .state
                .record_failure(id, &envelope.id, &reason, &record)
                .await;
            let now = Utc::now();
            let first = *first_failure.get_or_insert(now);
            let failure = decision::Failure {
                status: error.status(),
                retry_after: error.retry_after(),
                attempts,
                first_failure: first,
            };
            let next = decision::after_failure(&subscription, &failure, now);
            let failed = Failed {
                hand,
                attempts,
                first_failure: first,
                reason: &reason,
            };
            let handled = match next {
                AfterFailure::RetryNow(pause) => {
                    if pause_or_stop(pause, stop).await {
                        hand.hand_back();
                        return Ok(Handled::Stopped);
                    }
                    continue;
                }
                AfterFailure::Reschedule {
                    delay_ms,
                    due,
                    block,
                    asked_by_receiver,
                } => {
                    self.reschedule(&failed, delay_ms, due, block, asked_by_receiver)
                        .await
                }
                AfterFailure::Park => self.park(&failed, subscription.spec.order).await,
                AfterFailure::Disable { cause, discard } => {
                    self.disable(&failed, cause, discard).await
                }
            };
            return match handled {
                // The decision's durable work is done: settle the message as it says.
                Some(handled) if next.acks_the_message() => {
                    // Safe to ack: the step above made the event durable
                    // elsewhere (a confirmed delayed copy with its block, a
                    // parked record), or the subscription asked for its
                    // backlog to be discarded.
                    hand.ack().await?;
                    Ok(handled)
                }
                Some(handled) => {
                    // Kept: the event stays at the head of the backlog (and
                    // its block, if it has one, keeps it first).
                    hand.hand_back();
                    Ok(handled)
                }
                // The durable step failed: hand the event back, try again soon.
                None => {
                    hand.hand_back();
                    Ok(Handled::Wait(Utc::now() + TRANSIENT_BACKOFF))
                }
            };
        }
    }

    /// Sends a copy through the delay queue of `delay_ms` and, for a strict
    /// subscription, blocks it on that copy until `due`. `None` when a step
    /// failed (nothing may be acked then).
    async fn reschedule(
        &self,
        failed: &Failed<'_, '_>,
        delay_ms: u64,
        due: DateTime<Utc>,
        block: bool,
        asked_by_receiver: bool,
    ) -> Option<Handled> {
        let hand = failed.hand;
        let (id, event_id, context) = (hand.id, &hand.envelope.id, &self.context);
        let retry_id = RetryId::generate();
        let headers = RetryHeaders {
            attempts: failed.attempts,
            first_failure: Some(failed.first_failure),
            retry_id: Some(retry_id.clone()),
            incarnation: Some(hand.incarnation.to_string()),
        };
        if let Err(error) = self
            .redelivery()
            .to_delay_queue(id, hand.body, &headers, delay_ms)
            .await
        {
            tracing::warn!(%error, "scheduling a retry failed; handing the event back");
            return None;
        }
        context
            .metrics
            .retries_scheduled
            .with_label_values(&[&delay_ms.to_string()])
            .inc();
        tracing::info!(attempts = failed.attempts, delay_ms, next_attempt_at = %due, asked_by_receiver, "retry scheduled");
        if !block {
            return Some(Handled::Done);
        }
        let block = Block {
            event_id: event_id.clone(),
            retry_id,
            attempts: failed.attempts,
            next_attempt_at: due,
            first_failure_at: failed.first_failure,
            last_error: failed.reason.to_string(),
            envelope: String::from_utf8_lossy(hand.body).into_owned(),
            incarnation: hand.incarnation.to_string(),
        };
        if let Err(error) = context.state.set_block(id, &block).await {
            // Without the block later events would overtake this one, so the
            // original stays; the delayed copy becomes a stale duplicate.
            tracing::warn!(%error, "recording the block failed; handing the event back");
            return None;
        }
        // The ack that follows is safe: a confirmed copy waits in the delay
        // queue and the block in Redis names it, so every replica holds
        // later events back.
        Some(Handled::Wait(due))
    }

    /// Parks a given-up event for replay and moves on.
    async fn park(&self, failed: &Failed<'_, '_>, order: OrderMode) -> Option<Handled> {
        let hand = failed.hand;
        let (id, envelope, context) = (hand.id, hand.envelope, &self.context);
        let parked = ParkedEvent {
            event_id: envelope.id.clone(),
            event_type: envelope.event_type.clone(),
            attempts: failed.attempts,
            first_failure_at: failed.first_failure,
            given_up_at: Utc::now(),
            last_error: failed.reason.to_string(),
            envelope: String::from_utf8_lossy(hand.body).into_owned(),
        };
        // Parking counts `given_up` in the state, in the same transaction.
        let strict = order == OrderMode::Strict;
        if let Err(error) = context.state.park(id, &parked, strict).await {
            tracing::warn!(%error, "parking a given-up event failed; handing it back");
            return None;
        }
        context.metrics.give_ups.with_label_values(&["skip"]).inc();
        context.metrics.count(id, "given_up");
        tracing::warn!(attempts = failed.attempts, error = %failed.reason, "retry policy exhausted; event parked for replay, moving on");
        Some(Handled::Done)
    }

    /// Disables the subscription: its policy is exhausted, or its receiver
    /// said it is gone.
    async fn disable(
        &self,
        failed: &Failed<'_, '_>,
        cause: DisableCause,
        discard: bool,
    ) -> Option<Handled> {
        let hand = failed.hand;
        let (id, event_id, context) = (hand.id, &hand.envelope.id, &self.context);
        let reason = match cause {
            DisableCause::Exhausted => format!(
                "retry policy exhausted after {} attempts: {}",
                failed.attempts, failed.reason
            ),
            DisableCause::Gone => format!("receiver is gone: {}", failed.reason),
        };
        let why = Disabled {
            at: Utc::now(),
            reason,
            event_id: event_id.clone(),
            backlog_discarded: discard,
        };
        if let Err(error) = context.store.disable(id, why).await {
            tracing::warn!(%error, "disabling the subscription failed; handing the event back");
            return None;
        }
        // A kept backlog keeps its block: the blocked event stays first, and
        // re-enabling restarts its policy. A discarded one has nothing to keep.
        if discard {
            if let Err(error) = context.state.clear_block(id).await {
                tracing::warn!(%error, "clearing the block of a discarded backlog failed");
            }
        }
        let label = match cause {
            DisableCause::Exhausted => "given_up",
            DisableCause::Gone => "gone",
        };
        if cause == DisableCause::Exhausted {
            context
                .metrics
                .give_ups
                .with_label_values(&["disable"])
                .inc();
        }
        context.metrics.count(id, label);
        if let Err(error) = context.state.count(id, label, 1).await {
            tracing::warn!(%error, "counting a disabling outcome failed");
        }
        if discard {
            let _ = context.state.count(id, "discarded", 1).await;
        }
        tracing::error!(attempts = failed.attempts, error = %failed.reason, reason = label, discard, "subscription disabled");
        Some(Handled::Disabled { discard })
    }

    /// Records a delivered event (with its dedup identity and entity) and acks it.
    async fn settle_success(
        &self,
        hand: &InHand<'_>,
        status: u16,
        attempts: u32,
        unblock: bool,
        record: &AttemptRecord,
    ) -> Result<(), ConsumerError> {
        let (id, envelope, context) = (hand.id, hand.envelope, &self.context);
        let metrics = &context.metrics;
        // The marker goes first: after a crash before the ack, the
        // redelivered message finds it and is not POSTed again.
        if let Err(error) = context
            .state
            .record_success(id, &envelope.id, unblock, hand.tracking, record)
            .await
        {
            tracing::warn!(%error, "recording the success failed");
        }
        // Safe to ack: the receiver accepted the event.
        hand.ack().await?;
        metrics.count(id, "delivered");
        if unblock {
            tracing::info!(attempts, "blocked event delivered; subscription unblocked");
        }
        if let Some(generated) = envelope.generated_at() {
            let age = Utc::now() - generated;
            metrics
                .end_to_end_latency
                .observe(age.as_seconds_f64().max(0.0));
        }
        tracing::debug!(status, "delivered");
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
            event_type: envelope.event_type.clone(),
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
    /// Copies waiting in delay queues are of the incarnation the disable
    /// ended, so they are dropped as stale when they come back.
    async fn discard_backlog(&self, connection: &Connection, id: &SubscriptionId, queue: &str) {
        let purged = async {
            let channel = within(connection.create_channel()).await?;
            let purged = channel
                .queue_purge(queue.into(), QueuePurgeOptions::default())
                .await;
            let _ = channel.close(200, "backlog discarded".into()).await;
            purged
        }
        .await;
        match purged {
            Ok(count) => {
                tracing::warn!(
                    discarded = count,
                    "disabled subscription's backlog discarded"
                );
                let _ = self
                    .context
                    .state
                    .count(id, "discarded", i64::from(count))
                    .await;
                self.context
                    .metrics
                    .deliveries
                    .with_label_values(&[id.as_str(), "discarded"])
                    .inc_by(u64::from(count));
            }
            Err(error) => {
                tracing::error!(%error, "discarding the backlog failed; it is kept")
            }
        }
    }

    async fn dead_letter(
        &self,
        id: &SubscriptionId,
        acks: &Acks,
        delivery: &Delivery,
        reason: &str,
    ) -> Result<(), ConsumerError> {
        tracing::error!(%reason, "unreadable message on a subscription queue; dead-lettering it");
        self.context.metrics.count(id, "invalid_message");
        self.reject(id, &delivery.data, reason).await?;
        // Safe to ack: the message and its reason are confirmed in the rejected queue.
        acks.ack(delivery).await?;
        Ok(())
    }

    /// Puts an unreadable event `body` of subscription `id` in the rejected
    /// queue with `reason` (confirmed).
    async fn reject(
        &self,
        id: &SubscriptionId,
        body: &[u8],
        reason: &str,
    ) -> Result<(), ConsumerError> {
        self.publisher
            .dead_letter(
                &self.context.topology.rejected_queue(),
                body,
                "invalid_envelope",
                reason,
                &[("postline-subscription", id.as_str())],
            )
            .await?;
        Ok(())
    }
}

/// An event whose last attempt failed, as the steps after it need it.
struct Failed<'h, 'a> {
    hand: &'h InHand<'a>,
    attempts: u32,
    first_failure: DateTime<Utc>,
    reason: &'h str,
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

/// Hands a message back by leaving it unsettled: every caller ends the
/// session next, and closing its channel returns each unsettled message to
/// its place, in queue order, on classic and quorum queues alike. (A nack
/// with requeue would not do: the broker may deliver the message again at
/// once to this still-open consumer, behind the ones prefetched after it,
/// and a quorum queue then returns it last when the channel closes.)
fn hand_back(delivery: &Delivery) {
    tracing::trace!(
        delivery_tag = delivery.delivery_tag,
        "handed back at the end of the session"
    );
}

/// A message read ahead of its turn, during the previous one's POST.
struct ReadAhead {
    /// The event, parsed.
    envelope: Envelope,
    /// Its delivery state, when it was read and still holds.
    precheck: Option<Precheck>,
}

/// What a strict session gets when it asks for the next message.
enum Next {
    /// A message (boxed: a delivery is large beside an `Ended`).
    Message(Box<Delivery>),
    /// The session ends (stopped, or the broker cancelled the consumer).
    Ended(Ended),
}

/// The event id a copy carries in its properties (ingest sets it on every
/// copy it fans out; re-published copies carry none).
fn message_id(delivery: &Delivery) -> Option<EventId> {
    delivery
        .properties
        .message_id()
        .as_ref()
        .and_then(|id| EventId::parse(id.as_str()).ok())
}

/// The span of one delivery, inside its session's: every line logged while
/// handling a message names the event (once it is read) and the attempt
/// through it, so no line repeats them.
fn delivery_span() -> tracing::Span {
    tracing::info_span!(
        "delivery",
        event_id = tracing::field::Empty,
        attempt = tracing::field::Empty,
    )
}

/// Sleeps `pause`; returns true if `stop` fired first.
async fn pause_or_stop(pause: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(pause) => false,
    }
}
