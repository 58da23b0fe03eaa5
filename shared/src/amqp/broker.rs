//! Talking to RabbitMQ: connecting, and publishing with confirms so that a
//! message counts as sent only once the broker has taken responsibility for it.
//!
//! lapin does not recover connections reliably, so services own their
//! reconnect loop; this module gives them the pieces (connect, confirmed
//! channel), and [`crate::amqp::broker_nodes`] picks the node of a cluster to connect to.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use lapin::{Confirmation, PublisherConfirm};

/// Why a publish did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The channel or connection failed before the broker confirmed.
    #[error("publishing to {exchange}/{routing_key} failed: {source}")]
    Broker {
        /// Target exchange.
        exchange: String,
        /// Routing key used.
        routing_key: String,
        /// What lapin reported.
        #[source]
        source: lapin::Error,
    },
    /// The broker refused the message (negative acknowledgement).
    #[error("broker refused the message for {exchange}/{routing_key}")]
    Nacked {
        /// Target exchange.
        exchange: String,
        /// Routing key used.
        routing_key: String,
    },
    /// No queue was bound for the routing key: the message would have been lost.
    #[error("message for {exchange}/{routing_key} was unroutable")]
    Unroutable {
        /// Target exchange.
        exchange: String,
        /// Routing key used.
        routing_key: String,
    },
}

/// Connects to the broker at `url`, naming the connection after the service.
pub async fn connect(url: &str, service: &str) -> Result<Connection, lapin::Error> {
    let properties = ConnectionProperties::default()
        .with_connection_name(LongString::from(format!("postline-{service}")));
    Connection::connect(url, properties).await
}

/// A channel in confirm mode: every publish is persistent, mandatory and confirmed.
#[derive(Clone)]
pub struct ConfirmedPublisher {
    channel: Channel,
    /// Held while publishes are handed to lapin. lapin numbers a publish for
    /// its confirm and queues its frames under two different locks, so two
    /// tasks publishing at once on one channel (HTTP requests and the AMQP
    /// intake) could interleave and get each other's confirms, or returns.
    handing_over: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for ConfirmedPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfirmedPublisher")
            .field("channel", &self.channel.id())
            .finish()
    }
}

/// One message for [`ConfirmedPublisher::publish_all`] (persistent and mandatory like every publish).
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    /// Target exchange (`""` for a queue by name).
    pub exchange: &'a str,
    /// Routing key (the queue name on the default exchange).
    pub routing_key: &'a str,
    /// Body.
    pub body: &'a [u8],
    /// Properties; the delivery mode is set to persistent.
    pub properties: BasicProperties,
}

/// A publish the broker has received but not yet confirmed.
#[must_use = "a publish counts only once its confirmation has been awaited"]
pub struct PendingConfirm {
    confirm: PublisherConfirm,
    exchange: String,
    routing_key: String,
}

impl PendingConfirm {
    /// Waits for the broker's verdict; an unroutable message is an error.
    pub async fn confirmed(self) -> Result<(), PublishError> {
        match self.confirm.await {
            Ok(Confirmation::Ack(None)) => Ok(()),
            // lapin reports a mandatory message that no queue took as an ack
            // carrying the returned message: for us that is a loss, so an error.
            Ok(Confirmation::Ack(Some(_))) => Err(PublishError::Unroutable {
                exchange: self.exchange,
                routing_key: self.routing_key,
            }),
            Ok(Confirmation::Nack(_)) | Ok(Confirmation::NotRequested) => {
                Err(PublishError::Nacked {
                    exchange: self.exchange,
                    routing_key: self.routing_key,
                })
            }
            Err(source) => Err(PublishError::Broker {
                exchange: self.exchange,
                routing_key: self.routing_key,
                source,
            }),
        }
    }
}

impl ConfirmedPublisher {
    /// Opens a channel on `connection` and puts it in confirm mode.
    pub async fn open(connection: &Connection) -> Result<Self, lapin::Error> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            channel,
            handing_over: Default::default(),
        })
    }

    /// The underlying channel (for declarations).
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Whether the channel is still usable.
    pub fn is_connected(&self) -> bool {
        self.channel.status().connected()
    }

    /// Sends a persistent, mandatory message; await the result to know it is safe.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<PendingConfirm, PublishError> {
        let mut pending = self
            .publish_all(vec![Outgoing {
                exchange,
                routing_key,
                body,
                properties,
            }])
            .await?;
        pending.pop().ok_or_else(|| PublishError::Nacked {
            exchange: exchange.to_string(),
            routing_key: routing_key.to_string(),
        })
    }

    /// Publishes `messages` in order, handing them to the connection all at
    /// once, and returns their pending confirms in the same order.
    ///
    /// [`ConfirmedPublisher::publish`] waits until lapin's I/O thread has
    /// written each message before the next can be sent, one socket write and
    /// two thread hand-offs per message; here every message is queued first
    /// and the writes are awaited together, so many go out per write and the
    /// broker reads them in bulk.
    pub async fn publish_all(
        &self,
        messages: Vec<Outgoing<'_>>,
    ) -> Result<Vec<PendingConfirm>, PublishError> {
        let options = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let mut started = Vec::with_capacity(messages.len());
        let handing_over = self.handing_over.lock().await;
        for message in &messages {
            let mut publish = Box::pin(self.channel.basic_publish(
                message.exchange.into(),
                message.routing_key.into(),
                options,
                message.body,
                message.properties.clone().with_delivery_mode(2),
            ));
            // The first poll takes the message's confirm number and queues its
            // frames, in call order, so the broker sees them in this order.
            let polled = futures::poll!(publish.as_mut());
            started.push((publish, polled));
        }
        drop(handing_over);
        let mut pending = Vec::with_capacity(started.len());
        for ((publish, polled), message) in started.into_iter().zip(&messages) {
            let sent = match polled {
                std::task::Poll::Ready(sent) => sent,
                std::task::Poll::Pending => publish.await,
            };
            let confirm = sent.map_err(|source| PublishError::Broker {
                exchange: message.exchange.to_string(),
                routing_key: message.routing_key.to_string(),
                source,
            })?;
            pending.push(PendingConfirm {
                confirm,
                exchange: message.exchange.to_string(),
                routing_key: message.routing_key.to_string(),
            });
        }
        Ok(pending)
    }

    /// Publishes and waits for the confirmation.
    pub async fn publish_confirmed(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
        self.publish(exchange, routing_key, body, properties)
            .await?
            .confirmed()
            .await
    }
}

/// Header naming why a message was dead-lettered (a stable code).
pub const REJECT_CODE_HEADER: &str = "postline-reject-code";
/// Header explaining, for people, why a message was dead-lettered.
pub const REJECT_REASON_HEADER: &str = "postline-reject-reason";

impl ConfirmedPublisher {
    /// Puts a message that cannot be processed into `queue` (the rejected
    /// queue) with its reason, confirmed, so nothing is dropped silently.
    pub async fn dead_letter(
        &self,
        queue: &str,
        body: &[u8],
        code: &str,
        reason: &str,
        context: &[(&str, &str)],
    ) -> Result<(), PublishError> {
        self.publish_dead_letter(queue, body, code, reason, context)
            .await?
            .confirmed()
            .await
    }

    /// Like [`ConfirmedPublisher::dead_letter`], but returns before the
    /// confirm so a caller can publish more first; it counts only once awaited.
    pub async fn publish_dead_letter(
        &self,
        queue: &str,
        body: &[u8],
        code: &str,
        reason: &str,
        context: &[(&str, &str)],
    ) -> Result<PendingConfirm, PublishError> {
        self.publish(
            "",
            queue,
            body,
            dead_letter_properties(code, reason, context),
        )
        .await
    }
}

/// Properties of a dead-lettered message: its reason code and text, and
/// `context` pairs, as headers.
pub fn dead_letter_properties(
    code: &str,
    reason: &str,
    context: &[(&str, &str)],
) -> BasicProperties {
    let headers = string_headers(
        [(REJECT_CODE_HEADER, code), (REJECT_REASON_HEADER, reason)]
            .into_iter()
            .chain(context.iter().copied()),
    );
    BasicProperties::default().with_headers(headers)
}

/// Builds an AMQP header table from string pairs.
pub fn string_headers<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in pairs {
        table.insert(name.into(), AMQPValue::LongString(LongString::from(value)));
    }
    table
}

/// How often a pending ack or nack checks whether its channel has ended.
const SETTLE_CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// An ack or nack that did not reach the broker.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    /// The channel ended first: the message is unsettled and the broker
    /// hands it out again.
    #[error("the channel ended before the ack or nack reached the broker")]
    Unsettled,
    /// lapin reported an error.
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
}

/// Awaits `settling`, an ack or nack of the message `acker` belongs to;
/// fails if it did not reach the broker.
///
/// lapin (4.12) hands acks and nacks to its internal RPC loop. When the
/// connection drops, its IO loop queues the connection error, then a command
/// that stops that loop. An ack queued after the stop command, but before the
/// loop has handled the error (which poisons the channel's ackers), is never
/// handled: its future never completes. The ackers are poisoned moments
/// later, so an ack still pending once its acker is poisoned has failed.
/// Without this check a consumer would wait on it for ever, and so would a
/// supervisor waiting for its sessions before it reconnects.
pub async fn settle(
    acker: &lapin::Acker,
    settling: impl std::future::Future<Output = lapin::Result<bool>>,
) -> Result<(), SettleError> {
    tokio::pin!(settling);
    loop {
        match tokio::time::timeout(SETTLE_CHECK_EVERY, &mut settling).await {
            // Sent on a live channel.
            Ok(Ok(true)) => return Ok(()),
            // Not sent: the acker was poisoned (its channel had ended) already.
            Ok(Ok(false)) => return Err(SettleError::Unsettled),
            Ok(Err(error)) => return Err(error.into()),
            Err(_) if acker.poisoned() => {
                tracing::debug!(
                    "an ack or nack was still pending when its channel ended; giving up on it"
                );
                return Err(SettleError::Unsettled);
            }
            Err(_) => {}
        }
    }
}
