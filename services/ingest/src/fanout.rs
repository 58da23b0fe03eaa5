//! Accepting one validated event: skip it if its id was already accepted,
//! otherwise publish one confirmed copy to every matching subscription's queue
//! and only then remember the id. Both intakes (AMQP and HTTP) go through here.

use crate::metrics::IngestMetrics;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;
use postline_shared::amqp::broker::{ConfirmedPublisher, Outgoing, PendingConfirm, PublishError};
use postline_shared::amqp::redelivery::INCARNATION_HEADER;
use postline_shared::amqp::topology::{Topology, QUEUED_AT_HEADER};
use postline_shared::redis::catalog::Catalog;
use postline_shared::redis::keys::RedisKeys;
use postline_shared::runtime::ops::Readiness;
use postline_shared::Envelope;
use redis::aio::ConnectionManager;
use std::sync::Arc;
use std::time::Instant;

/// Where an event came from (a metrics label).
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// The AMQP intake queue.
    Amqp,
    /// `POST /v1/events`.
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

/// Why an event could not be accepted right now (the caller retries).
#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    /// The broker did not confirm a copy.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// Redis (idempotency record) failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis lost Postline's state (no installation marker): nothing is
    /// accepted until it is restored or a fresh start is declared.
    #[error("state lost: Redis has no installation marker")]
    StateLost,
}

/// Publishes event copies to subscription queues.
#[derive(Clone)]
pub struct Fanout {
    catalog: Arc<Catalog>,
    topology: Topology,
    deliver_exchange: String,
    keys: RedisKeys,
    redis: ConnectionManager,
    dedup_ttl_secs: u64,
    metrics: IngestMetrics,
    readiness: Arc<Readiness>,
}

impl Fanout {
    /// A fan-out over the given catalog, broker names and Redis.
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
            topology,
            keys,
            redis,
            dedup_ttl_secs,
            metrics,
            readiness,
        }
    }

    /// The metrics both intakes report to.
    pub fn metrics(&self) -> &IngestMetrics {
        &self.metrics
    }

    /// Whether Redis is known to have lost the state (intake holds still).
    pub fn state_lost(&self) -> bool {
        self.readiness.is_state_lost()
    }

    /// Which of `event_ids` were accepted before, in one Redis round trip
    /// that also confirms the installation marker: events are matched
    /// against the catalog only while Redis still holds the state, so an
    /// emptied Redis never turns accepted events into unmatched ones.
    pub async fn seen(&self, event_ids: &[&str]) -> Result<Vec<bool>, FanoutError> {
        if self.readiness.is_state_lost() {
            return Err(FanoutError::StateLost);
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
            return Err(FanoutError::StateLost);
        }
        replies.remove(0);
        Ok(replies)
    }

    /// Remembers `event_ids` as accepted, in one Redis round trip. Call it only
    /// once every copy of those events is confirmed: a crash before it means
    /// the events are accepted again and republished (the per-subscription
    /// delivered markers then stop a second POST), never lost.
    pub async fn remember(&self, event_ids: &[&str]) -> Result<(), redis::RedisError> {
        if event_ids.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for id in event_ids {
            pipe.set_ex(self.keys.intake_dedup(id), 1u8, self.dedup_ttl_secs)
                .ignore();
        }
        pipe.query_async(&mut self.redis.clone()).await
    }

    /// The copies `envelope` needs: one per subscription that wants it.
    pub fn copies(&self, envelope: &Envelope) -> Copies {
        let tree = envelope.to_value();
        let (subscription_ids, incarnations) = self
            .catalog
            .matching(envelope, &tree)
            .iter()
            .map(|s| (s.id().to_string(), s.incarnation.clone()))
            .unzip();
        Copies {
            subscription_ids,
            incarnations,
            body: envelope.to_wire(),
            properties: copy_properties(envelope),
        }
    }

    /// The exchange copies are published to.
    pub fn deliver_exchange(&self) -> &str {
        &self.deliver_exchange
    }

    /// Publishes one copy of `envelope` to every subscription that wants it,
    /// without waiting for confirms. Copies go out in subscription order on
    /// the publisher's one channel, so each queue gets events in the order
    /// they are published here.
    pub async fn publish_copies(
        &self,
        publisher: &ConfirmedPublisher,
        envelope: &Envelope,
    ) -> Result<Vec<PendingCopy>, PublishError> {
        let copies = self.copies(envelope);
        let confirms = publisher
            .publish_all(copies.outgoing(self.deliver_exchange()))
            .await?;
        Ok(copies
            .subscription_ids
            .into_iter()
            .zip(copies.incarnations)
            .zip(confirms)
            .map(|((subscription_id, incarnation), confirm)| PendingCopy {
                subscription_id,
                incarnation,
                confirm,
            })
            .collect())
    }

    /// Counts an event whose copies are all confirmed and whose id is remembered.
    pub fn count_accepted(&self, source: Source, copies: usize) {
        self.metrics
            .ingested
            .with_label_values(&[source.label()])
            .inc();
        self.metrics.copies_published.inc_by(copies as u64);
        if copies == 0 {
            self.metrics.unmatched.inc();
        }
    }

    /// Counts an event skipped because its id was accepted before.
    pub fn count_duplicate(&self, source: Source) {
        self.metrics
            .duplicates
            .with_label_values(&[source.label()])
            .inc();
    }

    /// Accepts `envelope`: returns once every copy is confirmed by the broker.
    pub async fn accept(
        &self,
        publisher: &ConfirmedPublisher,
        envelope: &Envelope,
        source: Source,
    ) -> Result<Accepted, FanoutError> {
        if self.seen(&[envelope.id.as_str()]).await?.first() == Some(&true) {
            self.count_duplicate(source);
            return Ok(Accepted::Duplicate);
        }
        let started = Instant::now();
        // Every copy is published before any confirm is awaited: the broker
        // confirms them together, and per-channel ordering keeps per-queue order.
        let pending = self.publish_copies(publisher, envelope).await?;
        let copies = pending.len();
        for copy in pending {
            match copy.confirm.confirmed().await {
                Ok(()) => {}
                Err(PublishError::Unroutable { .. }) => {
                    // The queue is missing although the subscription exists
                    // (deleted by hand, or a declare lost in a crash): heal it
                    // and publish that copy again rather than lose the event.
                    self.heal(publisher, &copy.subscription_id, envelope.id.as_str())
                        .await?;
                    publisher
                        .publish_confirmed(
                            &self.topology.deliver_exchange(),
                            &copy.subscription_id,
                            &envelope.to_wire(),
                            for_incarnation(copy_properties(envelope), &copy.incarnation),
                        )
                        .await?;
                }
                Err(error) => return Err(error.into()),
            }
        }
        self.metrics
            .publish_latency
            .with_label_values(&[source.label()])
            .observe(started.elapsed().as_secs_f64());
        // Remembered only now that every copy is safe (see `remember`).
        self.remember(&[envelope.id.as_str()]).await?;
        self.count_accepted(source, copies);
        Ok(Accepted::Published(copies))
    }

    /// Declares the queue of a subscription whose copy came back unroutable.
    pub async fn heal(
        &self,
        publisher: &ConfirmedPublisher,
        subscription_id: &str,
        event_id: &str,
    ) -> Result<(), PublishError> {
        tracing::warn!(subscription = %subscription_id, %event_id, "subscription queue missing; redeclaring");
        self.topology
            .declare_subscription(publisher.channel(), subscription_id)
            .await
            .map(|_| ())
            .map_err(|source| PublishError::Broker {
                exchange: self.topology.deliver_exchange(),
                routing_key: subscription_id.to_string(),
                source,
            })
    }
}

/// The copies of one event: the same body and properties to each subscription.
pub struct Copies {
    /// The subscriptions that want the event, in id order.
    pub subscription_ids: Vec<String>,
    /// The incarnation of each (same order): every copy carries its own.
    pub incarnations: Vec<String>,
    /// The envelope as published.
    pub body: Vec<u8>,
    /// Properties of every copy.
    pub properties: BasicProperties,
}

impl Copies {
    /// The messages to publish to `exchange`, one per subscription.
    pub fn outgoing<'a>(&'a self, exchange: &'a str) -> Vec<Outgoing<'a>> {
        self.subscription_ids
            .iter()
            .zip(&self.incarnations)
            .map(|(id, incarnation)| Outgoing {
                exchange,
                routing_key: id,
                body: &self.body,
                properties: for_incarnation(self.properties.clone(), incarnation),
            })
            .collect()
    }
}

/// One copy published to a subscription's queue, not yet confirmed.
pub struct PendingCopy {
    /// The subscription it is for.
    pub subscription_id: String,
    /// The subscription's incarnation it was made for.
    pub incarnation: String,
    /// The broker's verdict, to await.
    pub confirm: PendingConfirm,
}

/// The header of a copy naming the event's tenant (absent for untenanted events).
pub const TENANT_HEADER: &str = "postline-tenant";

/// `properties` stamped with the subscription incarnation the copy is made
/// for, so delivery can tell it from a copy for another life of the same id
/// (see delivery's `decision` module). None for subscriptions stored before
/// incarnations existed.
pub(crate) fn for_incarnation(properties: BasicProperties, incarnation: &str) -> BasicProperties {
    if incarnation.is_empty() {
        return properties;
    }
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(
        INCARNATION_HEADER.into(),
        AMQPValue::LongString(LongString::from(incarnation)),
    );
    properties.with_headers(headers)
}

/// The AMQP properties of a copy of `envelope` in a subscription queue.
pub(crate) fn copy_properties(envelope: &Envelope) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        "postline-event-type".into(),
        AMQPValue::LongString(LongString::from(envelope.event_type.as_str())),
    );
    // The event's tenant, for delivery's check that a copy reaches only its
    // tenant's subscription (the body's `tenant` says the same).
    if let Some(tenant) = &envelope.tenant {
        headers.insert(
            TENANT_HEADER.into(),
            AMQPValue::LongString(LongString::from(tenant.as_str())),
        );
    }
    // Interval subscriptions deliver a copy at the first tick after this.
    headers.insert(
        QUEUED_AT_HEADER.into(),
        AMQPValue::LongString(LongString::from(
            chrono::Utc::now().timestamp_millis().to_string(),
        )),
    );
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_message_id(envelope.id.as_str().into())
        .with_priority(0)
        .with_headers(headers)
}
