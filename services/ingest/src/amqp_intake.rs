//! The AMQP intake: consumes `<ns>.ingest` in order (single active consumer),
//! validates each message, fans it out, and acks only after every copy is
//! confirmed. Unacceptable messages go to `<ns>.ingest.rejected` with the reason.

use crate::fanout::{Fanout, FanoutError, Source};
use crate::metrics::IngestMetrics;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::Connection;
use postline_shared::broker::{ConfirmedPublisher, PublishError};
use postline_shared::problem::Problem;
use postline_shared::topology::Topology;
use postline_shared::Envelope;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Why the intake loop ended.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The channel or connection failed.
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    /// A confirm failed: the connection is suspect, so start over.
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Consumes the intake queue.
#[derive(Clone)]
pub struct AmqpIntake {
    fanout: Fanout,
    topology: Topology,
    metrics: IngestMetrics,
    max_event_bytes: usize,
    prefetch: u16,
}

impl AmqpIntake {
    /// An intake feeding `fanout`.
    pub fn new(
        fanout: Fanout,
        topology: Topology,
        metrics: IngestMetrics,
        max_event_bytes: usize,
        prefetch: u16,
    ) -> Self {
        Self {
            fanout,
            topology,
            metrics,
            max_event_bytes,
            prefetch,
        }
    }

    /// Consumes until `stop` or a broker failure.
    pub async fn run(
        &self,
        connection: &Connection,
        publisher: &ConfirmedPublisher,
        stop: &CancellationToken,
    ) -> Result<(), IntakeError> {
        let channel = connection.create_channel().await?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await?;
        let mut consumer = channel
            .basic_consume(
                self.topology.ingest_queue().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        loop {
            let delivery = tokio::select! {
                _ = stop.cancelled() => break,
                next = consumer.next() => match next {
                    Some(delivery) => delivery?,
                    None => break,
                },
            };
            self.handle(delivery, publisher).await?;
        }
        // Closing the channel hands back any prefetched, unacked messages to
        // the queue in their original order; nothing is lost.
        let _ = channel.close(200, "intake stopped".into()).await;
        Ok(())
    }

    async fn handle(
        &self,
        delivery: Delivery,
        publisher: &ConfirmedPublisher,
    ) -> Result<(), IntakeError> {
        let envelope = if delivery.data.len() > self.max_event_bytes {
            Err(Problem::whole(
                "too_large",
                format!(
                    "event is {} bytes; the limit is {}",
                    delivery.data.len(),
                    self.max_event_bytes
                ),
            ))
        } else {
            Envelope::from_input_bytes(&delivery.data, chrono::Utc::now())
        };
        let envelope = match envelope {
            Ok(envelope) => envelope,
            Err(problem) => return self.reject(delivery, publisher, &problem).await,
        };
        match self.fanout.accept(publisher, &envelope, Source::Amqp).await {
            Ok(accepted) => {
                tracing::debug!(event_id = %envelope.id, event_type = %envelope.event_type, ?accepted, "intake event accepted");
                // Safe to ack: every copy is confirmed by the broker (or the id
                // was accepted before), so the event now lives in subscription queues.
                delivery.acker.ack(BasicAckOptions::default()).await?;
                Ok(())
            }
            Err(FanoutError::Publish(error)) => {
                tracing::warn!(%error, event_id = %envelope.id, "publishing copies failed; the event will be retried");
                // Not acked: the broker redelivers it after the reconnect.
                Err(error.into())
            }
            Err(FanoutError::Redis(error)) => {
                tracing::warn!(%error, event_id = %envelope.id, "redis unavailable; requeueing the event");
                tokio::time::sleep(Duration::from_secs(1)).await;
                // Requeued to its original place at the head: order is kept.
                delivery
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await?;
                Ok(())
            }
        }
    }

    async fn reject(
        &self,
        delivery: Delivery,
        publisher: &ConfirmedPublisher,
        problem: &Problem,
    ) -> Result<(), IntakeError> {
        let reason = problem.to_string();
        tracing::warn!(routing_key = %delivery.routing_key, %reason, "intake message rejected");
        self.metrics
            .rejected
            .with_label_values(&["amqp", problem.code])
            .inc();
        publisher
            .dead_letter(
                &self.topology.rejected_queue(),
                &delivery.data,
                problem.code,
                &reason,
                &[(
                    "postline-original-routing-key",
                    delivery.routing_key.as_str(),
                )],
            )
            .await?;
        // Safe to ack: the rejected copy, with its reason, is confirmed durable.
        delivery.acker.ack(BasicAckOptions::default()).await?;
        Ok(())
    }
}
