//! The AMQP intake: consumes `<ns>.ingest` in order (single active consumer),
//! validates each message, fans it out, and acks only after every copy is
//! confirmed and the event's id remembered. Unacceptable messages go to
//! `<ns>.ingest.rejected` with the reason.
//!
//! The messages go through the intake pipeline (`crate::intake`), pipelined:
//! whatever the prefetch window holds is taken as one batch (planned with one
//! Redis round trip, then every copy and dead letter published), and handed
//! to a settler while the next batch is read and published. The settler takes
//! batches strictly in order: it awaits a batch's confirms, writes its dedup
//! markers in one round trip, and acks it with one `multiple` ack. When
//! anything fails, the session closes its channel, which hands every unacked
//! message back to the queue in its original order, so order and
//! at-least-once survive failures; a batch whose copies found no queue is
//! published again that way once the queues are healed.

use crate::intake::publish::{Item, Published};
use crate::intake::settle::{self, Confirmed};
use crate::intake::{validate, Intake, Source};
use crate::metrics::IngestMetrics;
use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Acker, Connection};
use postline_shared::amqp::broker::{
    self as broker, dead_letter_properties, ConfirmedPublisher, PublishError, SettleError,
};
use postline_shared::amqp::migration;
use postline_shared::amqp::topology::Topology;
use postline_shared::model::ids::{EventId, SubscriptionId};
use postline_shared::model::problem::Problem;
use postline_shared::runtime::locks;
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Batches published but not yet settled, beyond the one being settled.
/// The prefetch bounds the messages in flight anyway; this only bounds memory.
const PIPELINE_DEPTH: usize = 16;
/// Pause before consuming again after Redis failed.
const REDIS_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Why the intake loop ended.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The channel or connection failed.
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    /// An ack did not reach the broker (its channel ended): the batch is
    /// handed out again, and its remembered ids stop a second publish.
    #[error(transparent)]
    Settle(#[from] SettleError),
    /// A confirm failed: the connection is suspect, so start over.
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Consumes the intake queue.
#[derive(Clone)]
pub struct AmqpIntake {
    pipeline: Intake,
    topology: Topology,
    metrics: IngestMetrics,
    max_event_bytes: usize,
    prefetch: u16,
}

/// How one consuming session (one channel) ended.
enum SessionEnd {
    /// Asked to stop.
    Stopped,
    /// The broker cancelled the consumer (queue deleted).
    ConsumerGone,
    /// Redis failed: consume again after a pause.
    RedisDown,
    /// Copies came back unroutable: declare these subscriptions' queues,
    /// then consume again (the affected events are still unacked).
    Heal(Vec<SubscriptionId>),
}

/// One batch, published, waiting to be settled.
struct Batch {
    /// Acks the whole batch (and nothing unsettled: batches settle in order).
    last: Acker,
    /// Its publishes and events.
    published: Published,
}

impl AmqpIntake {
    /// An intake feeding `pipeline`.
    pub fn new(
        pipeline: Intake,
        topology: Topology,
        metrics: IngestMetrics,
        max_event_bytes: usize,
        prefetch: u16,
    ) -> Self {
        Self {
            pipeline,
            topology,
            metrics,
            max_event_bytes,
            prefetch,
        }
    }

    /// Consumes until `stop` or a broker failure: first what is left in the
    /// classic intake queue of an installation moving to quorum queues,
    /// then the intake queue.
    pub async fn run(
        &self,
        connection: &Connection,
        publisher: &ConfirmedPublisher,
        stop: &CancellationToken,
    ) -> Result<(), IntakeError> {
        if let Some(legacy) = self.topology.legacy() {
            self.drain_legacy(connection, publisher, &legacy.ingest_queue(), stop)
                .await?;
            if stop.is_cancelled() {
                return Ok(());
            }
        }
        self.consume(&self.topology.ingest_queue(), connection, publisher, stop)
            .await
    }

    /// Consumes the classic intake queue `queue` until it is empty and can
    /// be deleted (every event in it was published before any in the quorum
    /// intake queue, so it goes first; see `postline_shared::amqp::migration`).
    async fn drain_legacy(
        &self,
        connection: &Connection,
        publisher: &ConfirmedPublisher,
        queue: &str,
        stop: &CancellationToken,
    ) -> Result<(), IntakeError> {
        loop {
            if migration::depth(connection, queue)
                .await
                .map_err(lapin::Error::from)?
                .is_none()
            {
                return Ok(());
            }
            tracing::info!(%queue, "draining the classic intake queue before the quorum one");
            let (consumed, _) =
                migration::until_empty(connection, queue, stop, |until| async move {
                    self.consume(queue, connection, publisher, &until).await
                })
                .await;
            consumed?;
            if stop.is_cancelled() {
                return Ok(());
            }
            match migration::retire(connection, queue)
                .await
                .map_err(lapin::Error::from)?
            {
                Some(false) => {
                    tracing::info!(%queue, "classic intake queue not empty or still consumed; draining on");
                    tokio::time::sleep(migration::RECHECK).await;
                }
                _ => {
                    tracing::warn!(%queue, "classic intake queue drained and deleted; consuming the quorum one");
                    return Ok(());
                }
            }
        }
    }

    /// Consumes `queue` until `stop` or a broker failure.
    async fn consume(
        &self,
        queue: &str,
        connection: &Connection,
        publisher: &ConfirmedPublisher,
        stop: &CancellationToken,
    ) -> Result<(), IntakeError> {
        loop {
            let channel = connection.create_channel().await?;
            channel
                .basic_qos(self.prefetch, BasicQosOptions::default())
                .await?;
            let consumer = channel
                .basic_consume(
                    queue.into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            let ended = self.session(consumer, publisher, stop).await;
            // Closing the channel hands every unacked message back to the
            // queue in its original order; nothing is lost or overtaken.
            let _ = channel.close(200, "intake session ended".into()).await;
            match ended? {
                SessionEnd::Stopped | SessionEnd::ConsumerGone => return Ok(()),
                SessionEnd::RedisDown => {
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(REDIS_RETRY_PAUSE) => {}
                    }
                }
                SessionEnd::Heal(subscriptions) => {
                    // Nothing is being published now (the session is over), so
                    // no later event can reach a healed queue before the
                    // requeued ones are published again: order is kept.
                    self.pipeline.heal(publisher, &subscriptions).await?;
                }
            }
        }
    }

    /// Reads and publishes batches while settling earlier ones, until either side ends.
    async fn session(
        &self,
        consumer: lapin::Consumer,
        publisher: &ConfirmedPublisher,
        stop: &CancellationToken,
    ) -> Result<SessionEnd, IntakeError> {
        let (batches_tx, batches_rx) = mpsc::channel(PIPELINE_DEPTH);
        // Ids published but not yet remembered in Redis, so a repeat of one
        // in a later batch is still recognised as a duplicate.
        let in_flight = Mutex::new(HashSet::new());
        // The settler's way of stopping the reader when it gives up.
        let halt = CancellationToken::new();
        let reading = self.read(consumer, publisher, stop, &halt, batches_tx, &in_flight);
        let settling = self.settle(batches_rx, &halt, &in_flight);
        let (read_end, settle_end) = tokio::join!(reading, settling);
        // When the settler gave up, its reason is the session's.
        match settle_end? {
            Some(end) => Ok(end),
            None => read_end,
        }
    }

    async fn read(
        &self,
        mut consumer: lapin::Consumer,
        publisher: &ConfirmedPublisher,
        stop: &CancellationToken,
        halt: &CancellationToken,
        batches: mpsc::Sender<Batch>,
        in_flight: &Mutex<HashSet<EventId>>,
    ) -> Result<SessionEnd, IntakeError> {
        // Returning drops `batches`: the settler then finishes what is in
        // flight and ends too.
        let most = usize::from(self.prefetch.max(1));
        loop {
            let first = tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(SessionEnd::Stopped),
                _ = halt.cancelled() => return Ok(SessionEnd::Stopped),
                next = consumer.next() => match next {
                    Some(delivery) => delivery?,
                    None => return Ok(SessionEnd::ConsumerGone),
                },
            };
            let mut deliveries = vec![first];
            let mut consumer_gone = false;
            // Whatever else has already arrived joins this batch; nothing waits for more.
            while deliveries.len() < most {
                match consumer.next().now_or_never() {
                    Some(Some(delivery)) => deliveries.push(delivery?),
                    Some(None) => {
                        consumer_gone = true;
                        break;
                    }
                    None => break,
                }
            }
            let Some(batch) = self.publish_batch(deliveries, publisher, in_flight).await? else {
                return Ok(SessionEnd::RedisDown);
            };
            if batches.send(batch).await.is_err() {
                // The settler gave up; it tells the session why.
                return Ok(SessionEnd::Stopped);
            }
            if consumer_gone {
                return Ok(SessionEnd::ConsumerGone);
            }
        }
    }

    /// Plans every message of the batch, then publishes its copies and dead
    /// letters in message order. `None` when Redis could not be asked.
    async fn publish_batch(
        &self,
        deliveries: Vec<Delivery>,
        publisher: &ConfirmedPublisher,
        in_flight: &Mutex<HashSet<EventId>>,
    ) -> Result<Option<Batch>, IntakeError> {
        let Some(last) = deliveries.last().map(|d| d.acker.clone()) else {
            return Ok(None);
        };
        let items: Vec<Item> = deliveries.iter().map(|d| self.validate(d)).collect();
        // Ids still in flight from earlier batches are duplicates without
        // asking Redis; the in-flight set is read before Redis is asked: an id
        // leaves it only after its marker is written, so it is always in one
        // or the other.
        let known = |id: &EventId| locks::lock(in_flight).contains(id);
        let steps = match self.pipeline.plan(&items, known).await {
            Ok(steps) => steps,
            Err(error) => {
                tracing::warn!(%error, "redis unavailable; the intake pauses and the events will be retried");
                return Ok(None);
            }
        };
        let published = self.pipeline.publish(publisher, &items, &steps).await?;
        locks::lock(in_flight).extend(published.accepted.iter().map(|(id, _)| id.clone()));
        Ok(Some(Batch { last, published }))
    }

    /// Settles batches in order; `Some` when it gave up (the reader is halted).
    async fn settle(
        &self,
        mut batches: mpsc::Receiver<Batch>,
        halt: &CancellationToken,
        in_flight: &Mutex<HashSet<EventId>>,
    ) -> Result<Option<SessionEnd>, IntakeError> {
        let given_up = |end| {
            halt.cancel();
            Some(end)
        };
        while let Some(mut batch) = batches.recv().await {
            match settle::confirms(&mut batch.published).await {
                Ok(Confirmed::All) => {}
                Ok(Confirmed::Unroutable(subscriptions)) => {
                    // A subscription's queue is missing. Not acked: this batch
                    // and all after it go back to the queue, and are published
                    // again once the queues are declared, rather than lost.
                    tracing::warn!(subscriptions = ?subscriptions, "copies were unroutable; redeclaring and retrying");
                    return Ok(given_up(SessionEnd::Heal(subscriptions)));
                }
                Err(error) => {
                    tracing::warn!(%error, "publishing copies failed; the events will be retried");
                    halt.cancel();
                    // Not acked: the broker redelivers them after the reconnect.
                    return Err(error.into());
                }
            }
            if let Err(error) = self.pipeline.remember(&batch.published).await {
                // Not acked: the events go back to the queue and are published
                // again when Redis is back (delivered markers stop a second POST).
                tracing::warn!(%error, "redis unavailable; the intake pauses and the events will be retried");
                return Ok(given_up(SessionEnd::RedisDown));
            }
            // Safe to ack, with `multiple`, everything up to this batch's last
            // message: every copy and dead letter of this batch and of every
            // batch before it (settled before it, in order) is confirmed by
            // the broker, and every published id is remembered.
            let last = &batch.last;
            broker::settle(last, last.ack(BasicAckOptions { multiple: true })).await?;
            {
                let mut in_flight = locks::lock(in_flight);
                for (id, _) in &batch.published.accepted {
                    in_flight.remove(id);
                }
            }
            self.pipeline.count(&batch.published, Source::Amqp);
        }
        Ok(None)
    }

    /// The message as an event, or as a dead letter with its reason.
    fn validate(&self, delivery: &Delivery) -> Item {
        match validate::event(&delivery.data, self.max_event_bytes, chrono::Utc::now()) {
            Ok(envelope) => Item::Event(envelope),
            Err(problem) => Item::Rejected {
                body: delivery.data.clone(),
                properties: self.rejection(delivery, &problem),
            },
        }
    }

    /// Counts and logs a rejected message; returns its dead letter's properties.
    fn rejection(&self, delivery: &Delivery, problem: &Problem) -> lapin::BasicProperties {
        let reason = problem.to_string();
        tracing::warn!(routing_key = %delivery.routing_key, %reason, "intake message rejected");
        self.metrics
            .rejected
            .with_label_values(&["amqp", problem.code.as_str()])
            .inc();
        dead_letter_properties(
            problem.code.as_str(),
            &reason,
            &[(
                "postline-original-routing-key",
                delivery.routing_key.as_str(),
            )],
        )
    }
}
