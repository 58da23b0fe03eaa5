//! A small AMQP client for the tests, written straight on lapin (not on
//! Postline's broker module) so the tests do not trust the code they test:
//! confirmed publishing, `basic_get`, passive declarations and deletions.

use anyhow::{anyhow, bail, Context};
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};

/// One message taken from a queue with `basic_get`.
#[derive(Debug, Clone)]
pub struct GotMessage {
    /// The body.
    pub body: Vec<u8>,
    /// The routing key it was published with.
    pub routing_key: String,
    /// String headers (other header types are left out).
    pub headers: Vec<(String, String)>,
    /// Its priority, if set.
    pub priority: Option<u8>,
}

impl GotMessage {
    /// A string header by exact name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON (panics when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "message body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// The tests' own broker connection.
pub struct AmqpClient {
    connection: Connection,
    publisher: Channel,
}

impl AmqpClient {
    /// Connects to the first node of `urls` (one URL or a comma-separated
    /// list) that answers and opens a channel in confirm mode.
    pub async fn connect(urls: &str) -> anyhow::Result<Self> {
        let nodes: postline_shared::amqp::broker_nodes::BrokerNodes = urls.parse()?;
        let connection = postline_shared::amqp::broker_nodes::BrokerConnector::new(nodes.clone())
            .connect("tests")
            .await
            .with_context(|| format!("connecting to RabbitMQ at {nodes}"))?;
        let publisher = connection.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            connection,
            publisher,
        })
    }

    /// Publishes one persistent, mandatory message and waits for the broker's
    /// confirm; an unroutable or refused message is an error.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
    ) -> anyhow::Result<()> {
        self.publish_many(exchange, [(routing_key.to_string(), body.to_vec())])
            .await
    }

    /// Publishes messages in order on one channel, then waits for every confirm.
    pub async fn publish_many(
        &self,
        exchange: &str,
        messages: impl IntoIterator<Item = (String, Vec<u8>)>,
    ) -> anyhow::Result<()> {
        let mut pending = Vec::new();
        for (routing_key, body) in messages {
            let confirm = self
                .publisher
                .basic_publish(
                    exchange.into(),
                    routing_key.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .with_context(|| format!("publishing to {exchange}/{routing_key}"))?;
            pending.push((routing_key, confirm));
        }
        for (routing_key, confirm) in pending {
            match confirm.await? {
                Confirmation::Ack(None) => {}
                Confirmation::Ack(Some(_)) => {
                    bail!("message to {exchange}/{routing_key} was unroutable")
                }
                other => bail!("message to {exchange}/{routing_key} not confirmed: {other:?}"),
            }
        }
        Ok(())
    }

    /// Takes one message from `queue` (auto-acked), `None` when it is empty.
    pub async fn get(&self, queue: &str) -> anyhow::Result<Option<GotMessage>> {
        let channel = self.connection.create_channel().await?;
        let got = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .with_context(|| format!("basic_get from {queue}"))?;
        let _ = channel.close(200, "done".into()).await;
        Ok(got.map(|message| {
            let delivery = message.delivery;
            GotMessage {
                body: delivery.data.clone(),
                routing_key: delivery.routing_key.as_str().to_string(),
                headers: string_headers(delivery.properties.headers().as_ref()),
                priority: *delivery.properties.priority(),
            }
        }))
    }

    /// Takes every message currently in `queue`.
    pub async fn drain(&self, queue: &str) -> anyhow::Result<Vec<GotMessage>> {
        let mut all = Vec::new();
        while let Some(message) = self.get(queue).await? {
            all.push(message);
        }
        Ok(all)
    }

    /// The number of ready messages in `queue`, or `None` when it does not exist.
    pub async fn queue_depth(&self, queue: &str) -> anyhow::Result<Option<u32>> {
        Ok(self
            .passive_declare(queue)
            .await?
            .map(|q| q.message_count()))
    }

    /// The number of consumers of `queue`, or `None` when it does not exist.
    pub async fn consumer_count(&self, queue: &str) -> anyhow::Result<Option<u32>> {
        Ok(self
            .passive_declare(queue)
            .await?
            .map(|q| q.consumer_count()))
    }

    /// `queue` as the broker has it, or `None` when it does not exist (a
    /// passive declare on a fresh channel, which the broker closes on 404).
    async fn passive_declare(&self, queue: &str) -> anyhow::Result<Option<lapin::Queue>> {
        let channel = self.connection.create_channel().await?;
        let declared = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        match declared {
            Ok(queue) => {
                let _ = channel.close(200, "done".into()).await;
                Ok(Some(queue))
            }
            Err(error) if is_not_found(&error) => Ok(None),
            Err(error) => Err(anyhow!(error).context(format!("passive declare of {queue}"))),
        }
    }

    /// Deletes a queue (missing is fine).
    pub async fn delete_queue(&self, queue: &str) -> anyhow::Result<()> {
        let channel = self.connection.create_channel().await?;
        match channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await
        {
            Ok(_) => {
                let _ = channel.close(200, "done".into()).await;
                Ok(())
            }
            Err(error) if is_not_found(&error) => Ok(()),
            Err(error) => Err(anyhow!(error).context(format!("deleting queue {queue}"))),
        }
    }

    /// Declares `queue` to hold at most `max_length` messages and refuse
    /// (nack) every publish beyond, bound to `exchange` under `routing_key`:
    /// a broker that refuses part of a batch.
    pub async fn declare_refusing_queue(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        max_length: u32,
    ) -> anyhow::Result<()> {
        let channel = self.connection.create_channel().await?;
        let mut arguments = FieldTable::default();
        arguments.insert("x-max-length".into(), AMQPValue::LongUInt(max_length));
        arguments.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
        channel
            .queue_declare(queue.into(), QueueDeclareOptions::default(), arguments)
            .await
            .with_context(|| format!("declaring {queue}"))?;
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("binding {queue}"))?;
        let _ = channel.close(200, "done".into()).await;
        Ok(())
    }

    /// Deletes an exchange (missing is fine).
    pub async fn delete_exchange(&self, exchange: &str) -> anyhow::Result<()> {
        let channel = self.connection.create_channel().await?;
        match channel
            .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
            .await
        {
            Ok(()) => {
                let _ = channel.close(200, "done".into()).await;
                Ok(())
            }
            Err(error) if is_not_found(&error) => Ok(()),
            Err(error) => Err(anyhow!(error).context(format!("deleting exchange {exchange}"))),
        }
    }

    /// Closes the connection.
    pub async fn close(&self) {
        let _ = self.connection.close(200, "test done".into()).await;
    }
}

fn is_not_found(error: &lapin::Error) -> bool {
    let text = format!("{error:?} {error}");
    text.contains("NOTFOUND") || text.contains("NOT-FOUND") || text.contains("NOT_FOUND")
}

fn string_headers(headers: Option<&FieldTable>) -> Vec<(String, String)> {
    let Some(headers) = headers else {
        return Vec::new();
    };
    headers
        .inner()
        .iter()
        .filter_map(|(name, value): (&ShortString, &AMQPValue)| {
            let text = match value {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::ShortString(s) => s.as_str().to_string(),
                _ => return None,
            };
            Some((name.as_str().to_string(), text))
        })
        .collect()
}
