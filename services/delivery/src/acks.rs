//! Settling messages with the broker: every ack comes after the durable
//! record of the message's outcome. Order mode `none` acks each message on
//! its own; a strict session, which settles messages strictly in delivery
//! order, batches them: it remembers the last settled message and acks it
//! with `multiple` (settling it and every one before it on the channel) when
//! the batch is full, before waiting for the next message, and before the
//! session ends. A message handed back is never in a batch: hand-backs end
//! the session, after the batch of the messages before it is flushed.

use crate::consumer_error::ConsumerError;
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use lapin::Acker;
use postline_shared::amqp::broker::{self, SettleError};
use postline_shared::runtime::locks;
use std::sync::Mutex;

/// Most messages one `multiple` ack settles.
const MAX_BATCH: usize = 64;

/// How a consumer session acks.
pub(crate) struct Acks {
    /// `None`: each on its own; otherwise the pending batch.
    batch: Option<Mutex<Batch>>,
}

#[derive(Default)]
struct Batch {
    /// The last settled message not acked yet.
    last: Option<Acker>,
    /// How many settled messages wait for the ack.
    pending: usize,
}

impl Acks {
    /// Each message acked on its own (concurrent settling, order mode `none`).
    pub(crate) fn each() -> Self {
        Self { batch: None }
    }

    /// Batched `multiple` acks (strict sessions, settling in delivery order).
    pub(crate) fn batched() -> Self {
        Self {
            batch: Some(Mutex::new(Batch::default())),
        }
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
            batch.pending >= MAX_BATCH
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
