//! Accepting one validated event: skip it if its id was already accepted,
//! otherwise publish one confirmed copy to every matching subscription's queue
//! and only then remember the id. Both intakes (AMQP and HTTP) go through here.

use crate::metrics::IngestMetrics;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;
use postline_shared::broker::{ConfirmedPublisher, PublishError};
use postline_shared::keys::RedisKeys;
use postline_shared::subscription::catalog::Catalog;
use postline_shared::topology::{Topology, QUEUED_AT_HEADER};
use postline_shared::Envelope;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
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
}

/// Publishes event copies to subscription queues.
#[derive(Clone)]
pub struct Fanout {
    catalog: Arc<Catalog>,
    topology: Topology,
    keys: RedisKeys,
    redis: ConnectionManager,
    dedup_ttl_secs: u64,
    metrics: IngestMetrics,
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
    ) -> Self {
        Self {
            catalog,
            topology,
            keys,
            redis,
            dedup_ttl_secs,
            metrics,
        }
    }

    /// Accepts `envelope`: returns once every copy is confirmed by the broker.
    pub async fn accept(
        &self,
        publisher: &ConfirmedPublisher,
        envelope: &Envelope,
        source: Source,
    ) -> Result<Accepted, FanoutError> {
        let mut redis = self.redis.clone();
        let seen_key = self.keys.intake_dedup(&envelope.id);
        if redis.exists::<_, bool>(&seen_key).await? {
            self.metrics
                .duplicates
                .with_label_values(&[source.label()])
                .inc();
            return Ok(Accepted::Duplicate);
        }
        let tree = envelope.to_value();
        let targets = self.catalog.matching(envelope, &tree);
        let body = envelope.to_wire();
        let exchange = self.topology.deliver_exchange();
        let properties = copy_properties(envelope);
        let started = Instant::now();
        // Publish every copy before awaiting any confirm: the broker confirms
        // them together, and per-channel ordering keeps per-queue order.
        let mut pending = Vec::with_capacity(targets.len());
        for subscription in &targets {
            let confirm = publisher
                .publish(&exchange, subscription.id(), &body, properties.clone())
                .await?;
            pending.push((subscription.id().to_string(), confirm));
        }
        for (subscription_id, confirm) in pending {
            match confirm.confirmed().await {
                Ok(()) => {}
                Err(PublishError::Unroutable { .. }) => {
                    // The queue is missing although the subscription exists
                    // (deleted by hand, or a declare lost in a crash): heal it
                    // and publish that copy again rather than lose the event.
                    tracing::warn!(subscription = %subscription_id, event_id = %envelope.id, "subscription queue missing; redeclaring");
                    self.topology
                        .declare_subscription(publisher.channel(), &subscription_id)
                        .await
                        .map_err(|source| PublishError::Broker {
                            exchange: exchange.clone(),
                            routing_key: subscription_id.clone(),
                            source,
                        })?;
                    publisher
                        .publish_confirmed(&exchange, &subscription_id, &body, properties.clone())
                        .await?;
                }
                Err(error) => return Err(error.into()),
            }
        }
        self.metrics
            .publish_latency
            .with_label_values(&[source.label()])
            .observe(started.elapsed().as_secs_f64());
        // Remember the id only now that every copy is safe: a crash before
        // this line means the event is accepted again and republished (the
        // per-subscription delivered markers then stop a second POST).
        let _: () = redis.set_ex(&seen_key, 1u8, self.dedup_ttl_secs).await?;
        self.metrics
            .ingested
            .with_label_values(&[source.label()])
            .inc();
        self.metrics.copies_published.inc_by(targets.len() as u64);
        if targets.is_empty() {
            self.metrics.unmatched.inc();
        }
        Ok(Accepted::Published(targets.len()))
    }
}

fn copy_properties(envelope: &Envelope) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        "postline-event-type".into(),
        AMQPValue::LongString(LongString::from(envelope.event_type.as_str())),
    );
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
