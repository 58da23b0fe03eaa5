//! The broker's own ceiling on this machine: how many persistent messages
//! per second one queue takes with publisher confirms and hands out with
//! consumer acks, publisher and consumer on connections of their own running
//! at the same time — the best one hop lapin can do, against which the
//! pipeline (two hops: intake queue, then subscription queue) is measured.

use crate::error::BenchError;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties, PublisherConfirm};
use serde::Serialize;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How the consumer acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AckMode {
    /// One `basic.ack` per message (what Postline's delivery does).
    Each,
    /// One `basic.ack multiple` per this many messages.
    Batched(u16),
}

/// The kind of queue a ceiling run goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueStyle {
    /// A plain durable classic queue: the broker's own limit.
    Plain,
    /// Declared like a subscription queue (two priority levels, single active
    /// consumer) and published to like a copy (message id, headers, priority),
    /// to show what Postline's queue settings cost the broker.
    Subscription,
}

/// One ceiling measurement.
#[derive(Debug, Clone, Serialize)]
pub struct CeilingRun {
    /// Queue kind.
    pub queue: QueueStyle,
    /// Consumer acknowledgement mode.
    pub ack: AckMode,
    /// Messages sent through the queue.
    pub messages: usize,
    /// First publish to last message consumed.
    pub secs: f64,
    /// Messages per second through the queue.
    pub per_sec: f64,
    /// CPU microseconds per message, by component (`broker` is RabbitMQ).
    pub cpu_us_per_message: std::collections::BTreeMap<String, f64>,
}

/// The ceiling: the best of the runs.
#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    /// Message body size in bytes.
    pub message_bytes: usize,
    /// Outstanding publisher confirms allowed.
    pub confirm_window: usize,
    /// Consumer prefetch.
    pub prefetch: u16,
    /// Every run.
    pub runs: Vec<CeilingRun>,
    /// The best messages per second through a plain queue: the ceiling.
    pub per_sec: f64,
}

/// Settings of a ceiling measurement.
#[derive(Debug, Clone)]
pub struct CeilingSpec {
    /// Messages per run.
    pub messages: usize,
    /// Body size.
    pub message_bytes: usize,
    /// Outstanding publisher confirms.
    pub confirm_window: usize,
    /// Consumer prefetch.
    pub prefetch: u16,
}

/// Measures the one-hop ceiling with both ack modes in queue `queue`
/// (declared durable, deleted afterwards).
pub async fn measure(
    amqp_url: &str,
    queue: &str,
    spec: &CeilingSpec,
) -> Result<Ceiling, BenchError> {
    let mut runs = Vec::new();
    for (style, ack) in [
        (QueueStyle::Plain, AckMode::Each),
        (QueueStyle::Plain, AckMode::Batched(64)),
        (QueueStyle::Subscription, AckMode::Each),
    ] {
        runs.push(one_run(amqp_url, queue, spec, style, ack).await?);
    }
    let per_sec = runs
        .iter()
        .filter(|r| r.queue == QueueStyle::Plain)
        .map(|r| r.per_sec)
        .fold(0.0, f64::max);
    Ok(Ceiling {
        message_bytes: spec.message_bytes,
        confirm_window: spec.confirm_window,
        prefetch: spec.prefetch,
        runs,
        per_sec,
    })
}

async fn one_run(
    amqp_url: &str,
    queue: &str,
    spec: &CeilingSpec,
    style: QueueStyle,
    ack: AckMode,
) -> Result<CeilingRun, BenchError> {
    let publisher = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    let consumer = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    let before = crate::cpu::Snapshot::take();
    let mut outcome = run_between(&publisher, &consumer, queue, spec, style, ack).await;
    let cpu = before.until(&crate::cpu::Snapshot::take());
    if let Ok(run) = &mut outcome {
        run.cpu_us_per_message = cpu
            .secs
            .iter()
            .map(|(component, secs)| (component.clone(), secs * 1e6 / run.messages.max(1) as f64))
            .collect();
    }
    // The consumer goes first: deleting a queue under it makes the broker cancel it.
    let _ = consumer.close(200, "ceiling done".into()).await;
    if let Ok(channel) = publisher.create_channel().await {
        let _ = channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = publisher.close(200, "ceiling done".into()).await;
    outcome
}

async fn run_between(
    publisher: &Connection,
    consumer: &Connection,
    queue: &str,
    spec: &CeilingSpec,
    style: QueueStyle,
    ack: AckMode,
) -> Result<CeilingRun, BenchError> {
    let pub_channel = publisher.create_channel().await?;
    pub_channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut arguments = FieldTable::default();
    let mut properties = BasicProperties::default().with_delivery_mode(2);
    if style == QueueStyle::Subscription {
        arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        arguments.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(1));
        let mut headers = FieldTable::default();
        headers.insert(
            "postline-event-type".into(),
            AMQPValue::LongString("bench.ceiling".into()),
        );
        properties = properties
            .with_content_type("application/json".into())
            .with_message_id("0190c0de-0000-7000-8000-000000000000".into())
            .with_priority(0)
            .with_headers(headers);
    }
    pub_channel
        .queue_declare(queue.into(), QueueDeclareOptions::durable(), arguments)
        .await?;
    let sub_channel = consumer.create_channel().await?;
    sub_channel
        .basic_qos(spec.prefetch, BasicQosOptions::default())
        .await?;
    let mut stream = sub_channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let messages = spec.messages;
    let consuming = tokio::spawn(async move {
        use futures::StreamExt;
        let mut count = 0usize;
        let mut unacked = 0usize;
        while count < messages {
            let Some(delivery) = stream.next().await else {
                break;
            };
            let delivery = delivery?;
            count += 1;
            match ack {
                AckMode::Each => {
                    delivery.acker.ack(BasicAckOptions::default()).await?;
                }
                AckMode::Batched(every) => {
                    unacked += 1;
                    if unacked >= usize::from(every.max(1)) || count == messages {
                        unacked = 0;
                        delivery
                            .acker
                            .ack(BasicAckOptions { multiple: true })
                            .await?;
                    }
                }
            }
        }
        Ok::<_, lapin::Error>((count, Instant::now()))
    });

    let body = vec![b'x'; spec.message_bytes];
    let window = spec.confirm_window.max(1);
    let mut pending: VecDeque<PublisherConfirm> = VecDeque::with_capacity(window);
    let started = Instant::now();
    for _ in 0..messages {
        let confirm = pub_channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &body,
                properties.clone(),
            )
            .await?;
        pending.push_back(confirm);
        while pending.len() >= window {
            if let Some(confirm) = pending.pop_front() {
                confirmed(confirm).await?;
            }
        }
    }
    while let Some(confirm) = pending.pop_front() {
        confirmed(confirm).await?;
    }
    let (count, finished) = tokio::time::timeout(Duration::from_secs(120), consuming)
        .await
        .map_err(|_| BenchError::Timeout("the ceiling consumer did not finish".into()))?
        .map_err(|e| BenchError::Invalid(format!("ceiling consumer task: {e}")))??;
    if count < messages {
        return Err(BenchError::Timeout(format!(
            "the ceiling consumer got {count} of {messages} messages"
        )));
    }
    let secs = finished.duration_since(started).as_secs_f64();
    Ok(CeilingRun {
        queue: style,
        ack,
        messages,
        secs,
        per_sec: messages as f64 / secs.max(1e-9),
        cpu_us_per_message: Default::default(),
    })
}

async fn confirmed(confirm: PublisherConfirm) -> Result<(), BenchError> {
    match confirm.await? {
        Confirmation::Ack(None) => Ok(()),
        other => Err(BenchError::NotConfirmed(format!(
            "ceiling message: {other:?}"
        ))),
    }
}
