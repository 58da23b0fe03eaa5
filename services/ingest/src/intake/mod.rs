//! The one intake pipeline both intakes use, a batch at a time:
//!
//! 1. validate each message ([`validate`]), in the adapter (HTTP answers 400
//!    for the whole request, AMQP dead-letters the message);
//! 2. find duplicates: in flight or earlier in the batch, then the rest in
//!    one Redis round trip that also confirms the installation marker
//!    ([`markers`]);
//! 3. plan: the copies each new event needs, from the catalog's event-type
//!    index ([`plan`]);
//! 4. publish every copy and dead letter in one go ([`publish`]);
//! 5. settle: await every confirm; copies that found no queue mean the batch
//!    is not safe — the queues are declared ([`Intake::heal`]) and the whole
//!    batch is published again; once all is confirmed, remember the ids and
//!    count the batch ([`settle`]).
//!
//! The AMQP intake (`amqp_intake`) pipelines batches and adds acks and dead
//! letters; it publishes a healed batch again by handing it back to its queue.
//! The HTTP intake ([`http`]) gathers concurrent requests into batches,
//! publishes a healed batch again itself, and answers 202 per request.

pub mod copy;
pub mod http;
pub mod markers;
pub mod plan;
pub mod publish;
pub mod settle;
pub mod validate;

use crate::metrics::IngestMetrics;
use markers::Markers;
use plan::{Step, Target};
use postline_shared::amqp::broker::{ConfirmedPublisher, PublishError};
use postline_shared::amqp::topology::Topology;
use postline_shared::model::ids::{EventId, SubscriptionId};
use postline_shared::redis::catalog::Catalog;
use postline_shared::redis::keys::RedisKeys;
use postline_shared::runtime::ops::Readiness;
use postline_shared::Envelope;
use publish::{Item, Published};
use redis::aio::ConnectionManager;
use settle::Confirmed;
use std::sync::Arc;

/// How often a batch is healed and published again before the caller is
/// told to retry (each round declares the queues its copies missed).
const HEAL_ROUNDS: usize = 3;

/// Where an event came from (a metrics label).
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// The AMQP intake queue.
    Amqp,
    /// `POST /v1/events` and `POST /v1/events/batch`.
    Http,
}

impl Source {
    /// Label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Amqp => "amqp",
            Self::Http => "http",
        }
    }
}

/// What became of an accepted event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Published to this many subscription queues (possibly zero).
    Published(usize),
    /// Its id was accepted before; nothing was published.
    Duplicate,
}

/// Why a batch could not be accepted right now (the caller retries).
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The broker did not confirm a publish.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// Redis (idempotency record) failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis lost Postline's state (no installation marker): nothing is
    /// accepted until it is restored or a fresh start is declared.
    #[error("state lost: Redis has no installation marker")]
    StateLost,
    /// Copies still found no queue after the queues were declared again.
    #[error("copies for {0:?} stayed unroutable after redeclaring their queues")]
    StillUnroutable(Vec<SubscriptionId>),
}

/// The pipeline's shared parts: catalog, broker names, Redis markers, metrics.
#[derive(Clone)]
pub struct Intake {
    catalog: Arc<Catalog>,
    topology: Topology,
    deliver_exchange: String,
    rejected_queue: String,
    markers: Markers,
    metrics: IngestMetrics,
}

impl Intake {
    /// An intake over the given catalog, broker names and Redis.
    pub fn new(
        catalog: Arc<Catalog>,
        topology: Topology,
        keys: RedisKeys,
        redis: ConnectionManager,
        dedup_ttl_secs: u64,
        metrics: IngestMetrics,
        readiness: Arc<Readiness>,
    ) -> Self {
        Self {
            catalog,
            deliver_exchange: topology.deliver_exchange(),
            rejected_queue: topology.rejected_queue(),
            topology,
            markers: Markers::new(keys, redis, dedup_ttl_secs, readiness),
            metrics,
        }
    }

    /// The metrics both intakes report to.
    pub fn metrics(&self) -> &IngestMetrics {
        &self.metrics
    }

    /// Steps 2 and 3: what `items` need published. `in_flight` tells ids
    /// published by earlier, still unsettled batches (see [`plan::dedup`]).
    pub async fn plan(
        &self,
        items: &[Item],
        in_flight: impl Fn(&EventId) -> bool,
    ) -> Result<Vec<Step>, IntakeError> {
        let ids: Vec<Option<&EventId>> = items.iter().map(Item::event_id).collect();
        let dedup = plan::dedup(&ids, in_flight);
        let asked: Vec<&EventId> = dedup.ask.iter().filter_map(|&i| ids[i]).collect();
        let seen = self.markers.seen(&asked).await?;
        Ok(plan::steps(&ids, &dedup, &seen, |i| match &items[i] {
            Item::Event(envelope) => self
                .catalog
                .matching(envelope)
                .iter()
                .map(|s| Target {
                    subscription_id: s.id().clone(),
                    incarnation: s.incarnation.clone(),
                })
                .collect(),
            Item::Rejected { .. } => Vec::new(),
        }))
    }

    /// Step 4: publishes what `steps` say for `items`, without waiting for confirms.
    pub async fn publish(
        &self,
        publisher: &ConfirmedPublisher,
        items: &[Item],
        steps: &[Step],
    ) -> Result<Published, PublishError> {
        publish::publish(
            publisher,
            &self.deliver_exchange,
            &self.rejected_queue,
            items,
            steps,
        )
        .await
    }

    /// The one way a missing subscription queue is healed: declared again
    /// (it was deleted by hand, or a declare was lost in a crash), after
    /// which the batch whose copies missed it is published again whole.
    pub async fn heal(
        &self,
        publisher: &ConfirmedPublisher,
        subscriptions: &[SubscriptionId],
    ) -> Result<(), PublishError> {
        for subscription in subscriptions {
            tracing::warn!(%subscription, "subscription queue missing; redeclaring");
            self.topology
                .declare_subscription(publisher.channel(), subscription)
                .await
                .map_err(|source| PublishError::Broker {
                    exchange: self.deliver_exchange.clone(),
                    routing_key: subscription.to_string(),
                    source,
                })?;
        }
        Ok(())
    }

    /// The whole pipeline for one batch of valid events, not pipelined:
    /// returns once every copy is confirmed by the broker and every new id
    /// is remembered, with each event's fate in order.
    pub async fn accept(
        &self,
        publisher: &ConfirmedPublisher,
        events: Vec<Envelope>,
        source: Source,
    ) -> Result<Vec<Accepted>, IntakeError> {
        let events: Vec<Item> = events.into_iter().map(Item::Event).collect();
        let mut unroutable = Vec::new();
        for _ in 0..HEAL_ROUNDS {
            let steps = self.plan(&events, |_| false).await?;
            let mut published = self.publish(publisher, &events, &steps).await?;
            match settle::confirms(&mut published).await? {
                Confirmed::All => {
                    // Remembered only now that every copy is safe (see `Markers::remember`).
                    self.remember(&published).await?;
                    self.count(&published, source);
                    return Ok(steps
                        .iter()
                        .map(|step| match step {
                            Step::Copies(targets) => Accepted::Published(targets.len()),
                            // Every item is an event: no dead letters here.
                            Step::Duplicate | Step::DeadLetter => Accepted::Duplicate,
                        })
                        .collect());
                }
                Confirmed::Unroutable(subscriptions) => {
                    // Not remembered: publishing the batch again after the
                    // heal cannot skip an event (delivered markers stop a
                    // second POST of the copies that did arrive).
                    tracing::warn!(subscriptions = ?subscriptions, "copies were unroutable; redeclaring and publishing the batch again");
                    self.heal(publisher, &subscriptions).await?;
                    unroutable = subscriptions;
                }
            }
        }
        Err(IntakeError::StillUnroutable(unroutable))
    }
}
