//! The AMQP topology: exchange and queue names, their arguments, and the
//! idempotent declarations every service runs after (re)connecting.
//!
//! - `<ns>.ingest` topic exchange → `<ns>.ingest` queue (single active consumer)
//! - `<ns>.ingest.rejected` queue for input that cannot be accepted
//! - `<ns>.deliver` direct exchange → `<ns>.sub.<id>` per subscription
//!   (durable, single active consumer; classic: two priority levels, quorum:
//!   replicated, at-least-once dead-lettering to the rejected queue)
//! - `<ns>.delay` headers exchange → `<ns>.delay.<ms>` per ladder step, each
//!   with a per-queue TTL and dead-lettered back to `<ns>.deliver`

use crate::model::ids::SubscriptionId;
use lapin::options::{
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};
use serde::{Deserialize, Serialize};

/// Which RabbitMQ queue type subscription queues use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    /// Classic queues: single node, the default.
    #[default]
    Classic,
    /// Quorum queues: replicated, for clusters (RabbitMQ 3.10 and later).
    Quorum,
}

impl std::str::FromStr for QueueType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "classic" => Ok(Self::Classic),
            "quorum" => Ok(Self::Quorum),
            other => Err(format!("unknown queue type {other:?} (classic|quorum)")),
        }
    }
}

/// Names of every exchange and queue under one namespace.
#[derive(Debug, Clone)]
pub struct Topology {
    namespace: String,
    queue_type: QueueType,
    migrating: bool,
}

impl Topology {
    /// The topology of `namespace`, with subscription queues of `queue_type`.
    pub fn new(namespace: &str, queue_type: QueueType) -> Self {
        Self {
            namespace: namespace.to_string(),
            queue_type,
            migrating: false,
        }
    }

    /// The same topology, which (if of quorum queues) first drains the
    /// classic queues of the installation it replaces: see [`Self::legacy`].
    pub fn migrating_from_classic(mut self, migrating: bool) -> Self {
        self.migrating = migrating;
        self
    }

    /// Topic exchange upstream systems publish events to (routing key = event type).
    pub fn ingest_exchange(&self) -> String {
        format!("{}.ingest", self.namespace)
    }

    /// Intake queue consumed by ingest.
    pub fn ingest_queue(&self) -> String {
        self.queue_name(format!("{}.ingest", self.namespace))
    }

    /// Queue holding intake messages that could not be accepted, with the reason.
    pub fn rejected_queue(&self) -> String {
        self.queue_name(format!("{}.ingest.rejected", self.namespace))
    }

    /// Direct exchange routing event copies to subscription queues by subscription id.
    pub fn deliver_exchange(&self) -> String {
        format!("{}.deliver", self.namespace)
    }

    /// Headers exchange in front of the retry ladder's delay queues.
    pub fn delay_exchange(&self) -> String {
        format!("{}.delay", self.namespace)
    }

    /// The delay queue of one ladder step: messages wait `delay_ms`, then are
    /// dead-lettered back to their subscription queue.
    pub fn delay_queue(&self, delay_ms: u64) -> String {
        self.queue_name(format!("{}.delay.{delay_ms}", self.namespace))
    }

    /// The queue of one subscription.
    pub fn subscription_queue(&self, subscription_id: &SubscriptionId) -> String {
        self.queue_name(format!("{}.sub.{subscription_id}", self.namespace))
    }

    /// The queue type of this topology's queues.
    pub fn queue_type(&self) -> QueueType {
        self.queue_type
    }

    /// The classic topology a quorum installation is moving from (its queues
    /// are drained first, then deleted; see [`crate::amqp::migration`]); `None`
    /// unless this is a quorum topology told to migrate.
    pub fn legacy(&self) -> Option<Topology> {
        (self.queue_type == QueueType::Quorum && self.migrating)
            .then(|| Topology::new(&self.namespace, QueueType::Classic))
    }

    /// A queue's name: quorum queues carry a `.q` suffix, because a queue
    /// cannot change type and an installation moving from classic to quorum
    /// queues has both for a while.
    fn queue_name(&self, base: String) -> String {
        match self.queue_type {
            QueueType::Classic => base,
            QueueType::Quorum => format!("{base}{QUORUM_SUFFIX}"),
        }
    }

    /// Declares the exchanges and intake queues (idempotent; run after every connect).
    pub async fn declare_core(&self, channel: &Channel) -> Result<(), lapin::Error> {
        declare_exchange(channel, &self.ingest_exchange(), ExchangeKind::Topic).await?;
        declare_exchange(channel, &self.deliver_exchange(), ExchangeKind::Direct).await?;
        declare_exchange(channel, &self.delay_exchange(), ExchangeKind::Headers).await?;
        channel
            .queue_declare(
                self.ingest_queue().into(),
                QueueDeclareOptions::durable(),
                self.intake_queue_arguments(),
            )
            .await?;
        channel
            .queue_bind(
                self.ingest_queue().into(),
                self.ingest_exchange().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_declare(
                self.rejected_queue().into(),
                QueueDeclareOptions::durable(),
                self.rejected_queue_arguments(),
            )
            .await?;
        Ok(())
    }

    /// Declares a subscription's queue and binds it (idempotent); returns its depth.
    pub async fn declare_subscription(
        &self,
        channel: &Channel,
        subscription_id: &SubscriptionId,
    ) -> Result<u32, lapin::Error> {
        // The exchange the queue is bound to is declared here too: delivery
        // may start before ingest has declared it (a fresh namespace, pods
        // starting in any order), and a bind to a missing exchange fails.
        declare_exchange(channel, &self.deliver_exchange(), ExchangeKind::Direct).await?;
        let queue = channel
            .queue_declare(
                self.subscription_queue(subscription_id).into(),
                QueueDeclareOptions::durable(),
                self.subscription_queue_arguments(),
            )
            .await?;
        channel
            .queue_bind(
                self.subscription_queue(subscription_id).into(),
                self.deliver_exchange().into(),
                subscription_id.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(queue.message_count())
    }

    /// How many events wait in a subscription's queue, without declaring
    /// anything (a passive declare: it fails if the queue does not exist).
    pub async fn subscription_backlog(
        &self,
        channel: &Channel,
        subscription_id: &SubscriptionId,
    ) -> Result<u32, lapin::Error> {
        let queue = channel
            .queue_declare(
                self.subscription_queue(subscription_id).into(),
                QueueDeclareOptions::durable().passive(),
                FieldTable::default(),
            )
            .await?;
        Ok(queue.message_count())
    }

    /// Deletes a subscription's queue (and with it its binding and backlog).
    pub async fn delete_subscription(
        &self,
        channel: &Channel,
        subscription_id: &SubscriptionId,
    ) -> Result<u32, lapin::Error> {
        channel
            .queue_delete(
                self.subscription_queue(subscription_id).into(),
                QueueDeleteOptions::default(),
            )
            .await
    }

    /// Declares the delay queue of one step and binds it to the delay
    /// exchange on the [`DELAY_HEADER`] value (idempotent).
    ///
    /// The TTL is per queue, not per message, so no message waits behind a
    /// longer one; expiry dead-letters through `<ns>.deliver` with the
    /// message's own routing key (its subscription id).
    pub async fn declare_delay_queue(
        &self,
        channel: &Channel,
        delay_ms: u64,
    ) -> Result<(), lapin::Error> {
        let queue = self.delay_queue(delay_ms);
        let mut args = FieldTable::default();
        args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(i64::try_from(delay_ms).unwrap_or(i64::MAX)),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            long_string(&self.deliver_exchange()),
        );
        if self.queue_type == QueueType::Quorum {
            args.insert("x-queue-type".into(), long_string("quorum"));
            // Quorum dead-lettering is at-most-once unless asked otherwise,
            // and at-least-once needs reject-publish overflow.
            args.insert(
                "x-dead-letter-strategy".into(),
                long_string("at-least-once"),
            );
            args.insert("x-overflow".into(), long_string("reject-publish"));
        }
        channel
            .queue_declare(queue.as_str().into(), QueueDeclareOptions::durable(), args)
            .await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                self.delay_exchange().into(),
                "".into(),
                QueueBindOptions::default(),
                delay_binding(delay_ms),
            )
            .await
    }

    /// Stops routing new copies to the queues of `legacy` (the classic
    /// topology this quorum one replaces): the intake queue, the queues of
    /// `subscription_ids` and the delay queues of `delays_ms`. Their messages
    /// stay, to be drained before the quorum queues are read (see
    /// [`crate::amqp::migration`]). Missing queues are skipped.
    pub async fn unbind_legacy(
        legacy: &Topology,
        connection: &lapin::Connection,
        subscription_ids: &[SubscriptionId],
        delays_ms: impl IntoIterator<Item = u64>,
    ) -> Result<(), crate::amqp::migration::MigrationError> {
        use crate::amqp::migration::{depth, unbind};
        let intake = legacy.ingest_queue();
        if depth(connection, &intake).await?.is_some() {
            unbind(
                connection,
                &intake,
                &legacy.ingest_exchange(),
                "#",
                FieldTable::default(),
            )
            .await?;
        }
        for id in subscription_ids {
            let queue = legacy.subscription_queue(id);
            if depth(connection, &queue).await?.is_some() {
                unbind(
                    connection,
                    &queue,
                    &legacy.deliver_exchange(),
                    id.as_str(),
                    FieldTable::default(),
                )
                .await?;
            }
        }
        for delay_ms in delays_ms {
            let queue = legacy.delay_queue(delay_ms);
            if depth(connection, &queue).await?.is_some() {
                unbind(
                    connection,
                    &queue,
                    &legacy.delay_exchange(),
                    "",
                    delay_binding(delay_ms),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Declares the delay queue of every step in `delays_ms` (a retry
    /// policy's [`crate::model::retry_policy::RetryPolicy::delays_ms`]), so that a retry
    /// never meets a missing delay queue (and the broker never returns an
    /// event body to us).
    pub async fn declare_delay_queues(
        &self,
        channel: &Channel,
        delays_ms: impl IntoIterator<Item = u64>,
    ) -> Result<(), lapin::Error> {
        for delay_ms in delays_ms {
            self.declare_delay_queue(channel, delay_ms).await?;
        }
        Ok(())
    }

    fn subscription_queue_arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        match self.queue_type {
            // Priority 1 puts a delayed copy back at the head; the ordering
            // protocol does not need it (see delivery's `decision` module),
            // but queues declared with it must keep being declared with it.
            QueueType::Classic => {
                args.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(1));
            }
            QueueType::Quorum => self.insert_consumed_quorum_arguments(&mut args),
        }
        args
    }

    /// A quorum queue that consumers hand messages back to: a finite
    /// delivery limit (as dead-lettering needs, and far above the number of
    /// times a held-back message can be handed back), past which messages go
    /// to the rejected queue at least once.
    fn insert_consumed_quorum_arguments(&self, args: &mut FieldTable) {
        args.insert("x-queue-type".into(), long_string("quorum"));
        self.insert_at_least_once_dead_lettering(args);
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(QUORUM_DELIVERY_LIMIT),
        );
    }

    /// Arguments of the intake queue (single active consumer; replicated on
    /// quorum installations, dead-lettering nothing silently).
    fn intake_queue_arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        if self.queue_type == QueueType::Quorum {
            self.insert_consumed_quorum_arguments(&mut args);
        }
        args
    }

    /// Arguments of the rejected queue (replicated on quorum installations).
    fn rejected_queue_arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        if self.queue_type == QueueType::Quorum {
            args.insert("x-queue-type".into(), long_string("quorum"));
        }
        args
    }

    /// A quorum queue's messages past the delivery limit go to the rejected
    /// queue, at least once (which needs `reject-publish` overflow).
    fn insert_at_least_once_dead_lettering(&self, args: &mut FieldTable) {
        args.insert("x-dead-letter-exchange".into(), long_string(""));
        args.insert(
            "x-dead-letter-routing-key".into(),
            long_string(&self.rejected_queue()),
        );
        args.insert(
            "x-dead-letter-strategy".into(),
            long_string("at-least-once"),
        );
        args.insert("x-overflow".into(), long_string("reject-publish"));
    }
}

/// Suffix of every quorum queue's name (`postline.sub.acme.q`).
pub const QUORUM_SUFFIX: &str = ".q";

/// `x-delivery-limit` of quorum queues: finite (at-least-once dead-lettering
/// needs one) and unreachable in practice.
pub const QUORUM_DELIVERY_LIMIT: i32 = 1_000_000;

/// Header whose value (the step in milliseconds, as text) routes a message
/// to its delay queue through the headers exchange.
pub const DELAY_HEADER: &str = "postline-delay-ms";

/// Header ingest stamps on every copy it fans out: when it was queued (unix
/// ms, as text). Delivery on an interval sends a copy at the first tick after it.
pub const QUEUED_AT_HEADER: &str = "postline-queued-at";

/// Declares a durable exchange of `kind` without arguments (idempotent).
async fn declare_exchange(
    channel: &Channel,
    name: &str,
    kind: ExchangeKind,
) -> Result<(), lapin::Error> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(name.into(), kind, durable, FieldTable::default())
        .await
}

/// The binding of a delay queue to the delay exchange: its step, as text.
fn delay_binding(delay_ms: u64) -> FieldTable {
    let mut binding = FieldTable::default();
    binding.insert("x-match".into(), long_string("all"));
    binding.insert(DELAY_HEADER.into(), long_string(&delay_ms.to_string()));
    binding
}

fn long_string(text: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(text))
}

/// Reads a string header from AMQP message properties.
pub fn header_str(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    let value = headers?.inner().get(&ShortString::from(name))?;
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme() -> SubscriptionId {
        SubscriptionId::parse("acme").unwrap()
    }

    #[test]
    fn quorum_queues_have_names_of_their_own_and_exchanges_are_shared() {
        let classic = Topology::new("ns", QueueType::Classic);
        let quorum = Topology::new("ns", QueueType::Quorum);
        assert_eq!(classic.subscription_queue(&acme()), "ns.sub.acme");
        assert_eq!(quorum.subscription_queue(&acme()), "ns.sub.acme.q");
        assert_eq!(quorum.ingest_queue(), "ns.ingest.q");
        assert_eq!(quorum.rejected_queue(), "ns.ingest.rejected.q");
        assert_eq!(quorum.delay_queue(300), "ns.delay.300.q");
        assert_eq!(classic.deliver_exchange(), quorum.deliver_exchange());
        assert_eq!(classic.ingest_exchange(), quorum.ingest_exchange());
    }

    #[test]
    fn only_a_quorum_topology_told_to_migrate_has_a_classic_one_to_drain() {
        assert!(Topology::new("ns", QueueType::Quorum).legacy().is_none());
        assert!(Topology::new("ns", QueueType::Classic)
            .migrating_from_classic(true)
            .legacy()
            .is_none());
        let legacy = Topology::new("ns", QueueType::Quorum)
            .migrating_from_classic(true)
            .legacy()
            .expect("the classic topology");
        assert_eq!(legacy.subscription_queue(&acme()), "ns.sub.acme");
        assert_eq!(legacy.queue_type(), QueueType::Classic);
    }
}
