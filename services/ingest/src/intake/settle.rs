//! Settling a published batch: awaiting every confirm, collecting the
//! subscriptions whose copies came back unroutable (their queue is missing),
//! and — once the batch is safe — remembering its ids and counting it.

use super::publish::{Pending, Published};
use super::{Intake, Source};
use postline_shared::amqp::broker::PublishError;
use postline_shared::model::ids::{EventId, SubscriptionId};

/// What the broker said about a whole batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Confirmed {
    /// Every publish confirmed and routed.
    All,
    /// Every publish confirmed, but copies for these subscriptions found no
    /// queue: the batch is not safe until they are healed and it is
    /// published again (see [`Intake::heal`]).
    Unroutable(Vec<SubscriptionId>),
}

/// Awaits every confirm of `published`, in order; the first failure other
/// than an unroutable copy is the batch's error.
pub async fn confirms(published: &mut Published) -> Result<Confirmed, PublishError> {
    let mut unroutable: Vec<SubscriptionId> = Vec::new();
    let pending: Vec<Pending> = std::mem::take(&mut published.pending);
    for publish in pending {
        match (publish.confirm.confirmed().await, publish.subscription_id) {
            (Ok(()), _) => {}
            (Err(PublishError::Unroutable { .. }), Some(subscription)) => {
                if !unroutable.contains(&subscription) {
                    unroutable.push(subscription);
                }
            }
            (Err(error), _) => return Err(error),
        }
    }
    published.confirmed_in = published.started.elapsed();
    Ok(match unroutable.is_empty() {
        true => Confirmed::All,
        false => Confirmed::Unroutable(unroutable),
    })
}

impl Intake {
    /// Remembers the ids of a confirmed batch (see `Markers::remember`):
    /// call it only after [`confirms`] answered [`Confirmed::All`].
    pub async fn remember(&self, published: &Published) -> Result<(), redis::RedisError> {
        let ids: Vec<&EventId> = published.accepted.iter().map(|(id, _)| id).collect();
        self.markers.remember(&ids).await
    }

    /// Counts a settled batch: its events accepted and skipped, and the
    /// time from its first publish to its last confirm for each event.
    pub fn count(&self, published: &Published, source: Source) {
        let metrics = &self.metrics;
        let label = [source.label()];
        let publish_secs = published.confirmed_in.as_secs_f64();
        let latency = metrics.publish_latency.with_label_values(&label);
        let ingested = metrics.ingested.with_label_values(&label);
        for &(_, copies) in &published.accepted {
            latency.observe(publish_secs);
            ingested.inc();
            metrics.copies_published.inc_by(copies as u64);
            if copies == 0 {
                metrics.unmatched.inc();
            }
        }
        if published.duplicates > 0 {
            metrics
                .duplicates
                .with_label_values(&label)
                .inc_by(published.duplicates as u64);
        }
    }
}
