//! Publishing a planned batch: every copy and dead letter in message order,
//! handed to the broker in one go without waiting for confirms. Copies go
//! out in subscription order on the publisher's one channel, so each queue
//! gets events in the order they are published here.

use super::copy::{copy_properties, for_incarnation};
use super::plan::Step;
use lapin::BasicProperties;
use postline_shared::amqp::broker::{ConfirmedPublisher, Outgoing, PendingConfirm, PublishError};
use postline_shared::model::ids::{EventId, SubscriptionId};
use postline_shared::Envelope;
use std::time::{Duration, Instant};

/// One message of a batch, validated.
pub enum Item {
    /// A valid event.
    Event(Envelope),
    /// A message refused at validation: its body and dead-letter properties.
    Rejected {
        /// The message as it came.
        body: Vec<u8>,
        /// Reason headers (see `broker::dead_letter_properties`).
        properties: BasicProperties,
    },
}

impl Item {
    /// The event's id (`None` for a rejected message).
    pub fn event_id(&self) -> Option<&EventId> {
        match self {
            Self::Event(envelope) => Some(&envelope.id),
            Self::Rejected { .. } => None,
        }
    }
}

/// One publish of a batch still waiting for the broker's confirm.
pub struct Pending {
    /// The subscription a copy is for (`None` for a dead letter).
    pub subscription_id: Option<SubscriptionId>,
    /// The broker's verdict, to await.
    pub confirm: PendingConfirm,
}

/// A batch handed to the broker, not yet confirmed.
pub struct Published {
    /// Every publish, in order.
    pub pending: Vec<Pending>,
    /// Events published: id and number of copies (possibly zero).
    pub accepted: Vec<(EventId, usize)>,
    /// Events skipped as duplicates.
    pub duplicates: usize,
    /// When the first publish started.
    pub started: Instant,
    /// From the first publish to the last confirm (set by `settle::confirms`).
    pub confirmed_in: Duration,
}

/// Publishes what `steps` say for `items` (same order): copies to
/// `deliver_exchange`, dead letters to `rejected_queue`.
pub async fn publish(
    publisher: &ConfirmedPublisher,
    deliver_exchange: &str,
    rejected_queue: &str,
    items: &[Item],
    steps: &[Step],
) -> Result<Published, PublishError> {
    // Each event's body is built once, for all its copies.
    let bodies: Vec<Option<Vec<u8>>> = items
        .iter()
        .zip(steps)
        .map(|(item, step)| match (item, step) {
            (Item::Event(envelope), Step::Copies(targets)) if !targets.is_empty() => {
                Some(envelope.to_wire())
            }
            _ => None,
        })
        .collect();
    let mut outgoing = Vec::new();
    let mut for_subscription = Vec::new();
    let mut accepted = Vec::new();
    let mut duplicates = 0;
    for ((item, step), body) in items.iter().zip(steps).zip(&bodies) {
        match (item, step) {
            (Item::Event(envelope), Step::Copies(targets)) => {
                tracing::debug!(event_id = %envelope.id, event_type = %envelope.event_type, copies = targets.len(), "intake event accepted");
                accepted.push((envelope.id.clone(), targets.len()));
                let Some(body) = body else { continue };
                let properties = copy_properties(envelope);
                for target in targets {
                    outgoing.push(Outgoing {
                        exchange: deliver_exchange,
                        routing_key: target.subscription_id.as_str(),
                        body,
                        properties: for_incarnation(properties.clone(), &target.incarnation),
                    });
                    for_subscription.push(Some(target.subscription_id.clone()));
                }
            }
            (Item::Event(envelope), _) => {
                tracing::debug!(event_id = %envelope.id, "intake event is a duplicate");
                duplicates += 1;
            }
            (Item::Rejected { body, properties }, _) => {
                outgoing.push(Outgoing {
                    exchange: "",
                    routing_key: rejected_queue,
                    body,
                    properties: properties.clone(),
                });
                for_subscription.push(None);
            }
        }
    }
    let started = Instant::now();
    let confirms = publisher.publish_all(outgoing).await?;
    let pending = for_subscription
        .into_iter()
        .zip(confirms)
        .map(|(subscription_id, confirm)| Pending {
            subscription_id,
            confirm,
        })
        .collect();
    Ok(Published {
        pending,
        accepted,
        duplicates,
        started,
        confirmed_in: Duration::ZERO,
    })
}
