//! Settling messages with the broker: every ack comes after the durable
//! record of the message's outcome. Order mode `none` acks each message on
//! its own; a strict session, which settles messages strictly in delivery
//! order, batches them: it remembers the last settled message and acks it
//! with `multiple` (settling it and every one before it on the channel) when
//! the batch is full, when no next message came within [`LINGER`], and
//! before the session ends. A message handed back is never in a batch:
//! hand-backs end the session, after the batch of the messages before it is
//! flushed.
//!
//! Holding an ack back costs nothing but a longer redelivery after a crash
//! (each redelivered message is skipped as settled by its Redis record),
//! and it saves the broker an ack per message on queues where events
//! trickle in one at a time, which is most of them.

use crate::consumer_error::ConsumerError;
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use lapin::Acker;
use postline_shared::amqp::broker::{self, SettleError};
use postline_shared::runtime::locks;
use std::sync::Mutex;

/// Most messages one `multiple` ack settles.
const MAX_BATCH: usize = 64;
/// How long a strict session waits for its next message before it acks
/// what it has settled: long enough for a trickle of events to share an ack,
/// short enough that a quiet queue's consumer settles promptly.
pub(crate) const LINGER: std::time::Duration = std::time::Duration::from_millis(25);

/// How a consumer session acks.
pub(crate) struct Acks {
    /// `None`: each on its own; otherwise the pending batch.
    batch: Option<Mutex<Batch>>,
}

struct Batch {
    /// The last settled message not acked yet.
    last: Option<Acker>,
    /// How many settled messages wait for the ack.
    pending: usize,
    /// Messages a batch holds at most.
    limit: usize,
}

impl Acks {
    /// Each message acked on its own (concurrent settling, order mode `none`).
    pub(crate) fn each() -> Self {
        Self { batch: None }
    }

    /// Batched `multiple` acks (strict sessions, settling in delivery
    /// order) on a channel with `window` unacked messages at most: a batch
    /// holds at most half of it, so the broker never stops delivering for
    /// want of an ack held back.
    pub(crate) fn batched(window: u16) -> Self {
        Self {
            batch: Some(Mutex::new(Batch {
                last: None,
                pending: 0,
                limit: batch_limit(window),
            })),
        }
    }

    /// Whether settled messages wait for an ack.
    pub(crate) fn pending(&self) -> bool {
        self.batch
            .as_ref()
            .is_some_and(|batch| locks::lock(batch).pending > 0)
    }

    /// Acks `delivery`, now or with the batch: call it only once the work
    /// the ack stands for is durable.
    pub(crate) async fn ack(&self, delivery: &Delivery) -> Result<(), ConsumerError> {
        let Some(batch) = &self.batch else {
            return settle(
                &delivery.acker,
                delivery.acker.ack(BasicAckOptions::default()),
            )
            .await;
        };
        let full = {
            // A poisoned lock only means a panic elsewhere; the batch is plain data.
            let mut batch = locks::lock(batch);
            batch.last = Some(delivery.acker.clone());
            batch.pending += 1;
            batch.pending >= batch.limit
        };
        if full {
            self.flush().await?;
        }
        Ok(())
    }

    /// Acks every batched message with one `multiple` ack of the last.
    pub(crate) async fn flush(&self) -> Result<(), ConsumerError> {
        let Some(batch) = &self.batch else {
            return Ok(());
        };
        let last = {
            // Plain data, as above.
            let mut batch = locks::lock(batch);
            batch.pending = 0;
            batch.last.take()
        };
        match last {
            Some(acker) => {
                let multiple = BasicAckOptions { multiple: true };
                settle(&acker, acker.ack(multiple)).await
            }
            None => Ok(()),
        }
    }
}

/// Messages one batch holds on a channel whose prefetch is `window`.
fn batch_limit(window: u16) -> usize {
    (usize::from(window) / 2).clamp(1, MAX_BATCH)
}

/// Awaits an ack (see [`broker::settle`]).
async fn settle(
    acker: &Acker,
    settling: impl std::future::Future<Output = lapin::Result<bool>>,
) -> Result<(), ConsumerError> {
    broker::settle(acker, settling)
        .await
        .map_err(|error| match error {
            SettleError::Unsettled => ConsumerError::Unsettled,
            SettleError::Broker(error) => ConsumerError::Broker(error),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_holds_at_most_half_the_window_and_never_more_than_the_cap() {
        assert_eq!(batch_limit(64), 32);
        assert_eq!(batch_limit(1_000), MAX_BATCH);
        assert_eq!(batch_limit(3), 1);
        assert_eq!(batch_limit(1), 1);
        assert_eq!(batch_limit(0), 1);
    }
}
