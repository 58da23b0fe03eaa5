//! The broker's own ceiling on this machine: how many persistent messages
//! per second one queue takes with publisher confirms and hands out with
//! consumer acks, publisher and consumer on connections of their own running
//! at the same time — the best one hop lapin can do, against which the
//! pipeline (two hops: intake queue, then subscription queue) is measured.

use crate::error::BenchError;
use crate::producer::{publish_burst, Message};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
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
    /// Round-robin over this many subscription-style queues, one consumer
    /// channel each: the broker's side of Postline's second hop.
    Spread(usize),
}

/// How the messages of a ceiling run are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Publishing {
    /// As fast as the confirm window allows (the AMQP intake's producers).
    Windowed,
    /// This many producers, each waiting for its message's confirm before
    /// publishing the next: the shape of scenario d, where every HTTP
    /// producer waits for its 202 and ingest answers only once the event is
    /// confirmed.
    Awaited(usize),
}

/// One ceiling measurement.
#[derive(Debug, Clone, Serialize)]
pub struct CeilingRun {
    /// Queue kind.
    pub queue: QueueStyle,
    /// Consumer acknowledgement mode.
    pub ack: AckMode,
    /// Publishing mode.
    pub publishing: Publishing,
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
    /// Queues of the spread run.
    pub spread: usize,
    /// Whether the queues were quorum queues (the cluster's ceiling, for g).
    pub quorum: bool,
    /// What the broker alone allows for Postline's two hops in a row (a plain
    /// intake queue, then the spread over subscription-style queues):
    /// `1 / (1/plain + 1/spread)` messages per second.
    pub two_hop_per_sec: Option<f64>,
    /// What the broker alone allows for scenario d (one hop, the spread
    /// over subscription-style queues, each producer waiting for its
    /// confirm): messages per second.
    pub awaited_per_sec: Option<f64>,
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
    /// Queues of the spread run (scenario b's subscriptions).
    pub spread: usize,
    /// Quorum queues (declared as Postline declares them on a cluster:
    /// single active consumer and a delivery limit, no priorities).
    pub quorum: bool,
    /// Producers of the awaited run (scenario d's HTTP producers); 0 leaves
    /// that run out.
    pub awaiting_publishers: usize,
}

/// Measures the one-hop ceiling with both ack modes in queue `queue`
/// (declared durable, deleted afterwards).
pub async fn measure(
    amqp_url: &str,
    queue: &str,
    spec: &CeilingSpec,
) -> Result<Ceiling, BenchError> {
    let mut runs = Vec::new();
    let windowed = Publishing::Windowed;
    let mut plan = vec![
        (QueueStyle::Plain, AckMode::Each, windowed),
        (QueueStyle::Plain, AckMode::Batched(64), windowed),
        (QueueStyle::Subscription, AckMode::Each, windowed),
        (QueueStyle::Spread(spec.spread), AckMode::Each, windowed),
    ];
    if spec.awaiting_publishers > 0 {
        let awaited = Publishing::Awaited(spec.awaiting_publishers);
        plan.push((QueueStyle::Spread(spec.spread), AckMode::Each, awaited));
    }
    for (style, ack, publishing) in plan {
        runs.push(one_run(amqp_url, queue, spec, style, ack, publishing).await?);
    }
    let per_sec = runs
        .iter()
        .filter(|r| r.queue == QueueStyle::Plain)
        .map(|r| r.per_sec)
        .fold(0.0, f64::max);
    let spread_per_sec = runs
        .iter()
        .find(|r| matches!(r.queue, QueueStyle::Spread(_)) && r.publishing == windowed)
        .map(|r| r.per_sec);
    let awaited_per_sec = runs
        .iter()
        .find(|r| matches!(r.publishing, Publishing::Awaited(_)))
        .map(|r| r.per_sec);
    Ok(Ceiling {
        message_bytes: spec.message_bytes,
        confirm_window: spec.confirm_window,
        prefetch: spec.prefetch,
        runs,
        per_sec,
        spread: spec.spread,
        quorum: spec.quorum,
        two_hop_per_sec: spread_per_sec
            .filter(|&spread| spread > 0.0 && per_sec > 0.0)
            .map(|spread| 1.0 / (1.0 / per_sec + 1.0 / spread)),
        awaited_per_sec,
    })
}

async fn one_run(
    amqp_url: &str,
    queue: &str,
    spec: &CeilingSpec,
    style: QueueStyle,
    ack: AckMode,
    publishing: Publishing,
) -> Result<CeilingRun, BenchError> {
    let queues: Vec<String> = match style {
        QueueStyle::Spread(n) => (0..n.max(1)).map(|i| format!("{queue}.{i}")).collect(),
        _ => vec![queue.to_string()],
    };
    let publisher = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    let consumer = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    let before = crate::cpu::Snapshot::take();
    let mut outcome =
        run_between(&publisher, &consumer, &queues, spec, style, ack, publishing).await;
    let cpu = before.until(&crate::cpu::Snapshot::take());
    if let Ok(run) = &mut outcome {
        run.cpu_us_per_message = cpu
            .secs
            .iter()
            .map(|(component, secs)| (component.clone(), secs * 1e6 / run.messages.max(1) as f64))
            .collect();
    }
    // The consumers go first: deleting a queue under one makes the broker cancel it.
    let _ = consumer.close(200, "ceiling done".into()).await;
    if let Ok(channel) = publisher.create_channel().await {
        for queue in &queues {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        // Channels are closed before their connection: a channel dropped
        // while the connection closes makes lapin log a connection error.
        let _ = channel.close(200, "done".into()).await;
    }
    let _ = publisher.close(200, "ceiling done".into()).await;
    outcome
}

async fn run_between(
    publisher: &Connection,
    consumer: &Connection,
    queues: &[String],
    spec: &CeilingSpec,
    style: QueueStyle,
    ack: AckMode,
    publishing: Publishing,
) -> Result<CeilingRun, BenchError> {
    let pub_channel = publisher.create_channel().await?;
    pub_channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut arguments = FieldTable::default();
    let mut properties = BasicProperties::default().with_delivery_mode(2);
    if spec.quorum {
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
    }
    if style != QueueStyle::Plain {
        arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        if spec.quorum {
            arguments.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongInt(postline_shared::amqp::topology::QUORUM_DELIVERY_LIMIT),
            );
        } else {
            arguments.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(1));
        }
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
    let messages = match publishing {
        // Slower by its nature: fewer messages keep the run short.
        Publishing::Awaited(_) => spec.messages.div_ceil(4),
        Publishing::Windowed => spec.messages,
    };
    let mut consuming = Vec::with_capacity(queues.len());
    for (i, queue) in queues.iter().enumerate() {
        pub_channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::durable(),
                arguments.clone(),
            )
            .await?;
        let channel = consumer.create_channel().await?;
        channel
            .basic_qos(spec.prefetch, BasicQosOptions::default())
            .await?;
        let stream = channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        // Round-robin publishing: queue i gets every n-th message from i.
        let expected = (messages + queues.len() - 1 - i) / queues.len();
        consuming.push(tokio::spawn(consume(channel, stream, expected, ack)));
    }

    let body = vec![b'x'; spec.message_bytes];
    let started = Instant::now();
    match publishing {
        Publishing::Windowed => {
            publish_windowed(&pub_channel, queues, &body, &properties, messages, spec).await?
        }
        Publishing::Awaited(producers) => {
            let producers = producers.max(1);
            let each = (0..producers).map(|first| {
                let own = (first..messages).step_by(producers);
                publish_awaited(&pub_channel, queues, &body, &properties, own)
            });
            futures::future::try_join_all(each).await?;
        }
    }
    let mut count = 0;
    let mut finished = started;
    for task in consuming {
        let (got, last) = tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .map_err(|_| BenchError::Timeout("a ceiling consumer did not finish".into()))?
            .map_err(|e| BenchError::Invalid(format!("ceiling consumer task: {e}")))??;
        count += got;
        finished = finished.max(last);
    }
    if count < messages {
        return Err(BenchError::Timeout(format!(
            "the ceiling consumers got {count} of {messages} messages"
        )));
    }
    let secs = finished.duration_since(started).as_secs_f64();
    let _ = pub_channel.close(200, "done".into()).await;
    Ok(CeilingRun {
        queue: style,
        ack,
        publishing,
        messages,
        secs,
        per_sec: messages as f64 / secs.max(1e-9),
        cpu_us_per_message: Default::default(),
    })
}

/// Publishes `messages` round-robin over `queues` with up to the spec's
/// window of confirms outstanding.
async fn publish_windowed(
    channel: &lapin::Channel,
    queues: &[String],
    body: &[u8],
    properties: &BasicProperties,
    messages: usize,
    spec: &CeilingSpec,
) -> Result<(), BenchError> {
    let window = spec.confirm_window.max(1);
    let mut pending: VecDeque<PublisherConfirm> = VecDeque::with_capacity(window);
    let mut published = 0;
    while published < messages {
        if pending.len() >= window {
            if let Some(confirm) = pending.pop_front() {
                confirmed(confirm).await?;
            }
            continue;
        }
        let burst = (window - pending.len()).min(128).min(messages - published);
        let batch: Vec<Message<'_>> = (published..published + burst)
            .map(|n| Message {
                exchange: "",
                routing_key: &queues[n % queues.len()],
                body,
                properties: properties.clone(),
            })
            .collect();
        pending.extend(publish_burst(channel, &batch).await?);
        published += burst;
    }
    while let Some(confirm) = pending.pop_front() {
        confirmed(confirm).await?;
    }
    Ok(())
}

/// One producer of an awaited run: publishes message `n` (to queue
/// `n % queues`) for each `n` of `own`, waiting for each one's confirm.
async fn publish_awaited(
    channel: &lapin::Channel,
    queues: &[String],
    body: &[u8],
    properties: &BasicProperties,
    own: impl Iterator<Item = usize>,
) -> Result<(), BenchError> {
    for n in own {
        let message = Message {
            exchange: "",
            routing_key: &queues[n % queues.len()],
            body,
            properties: properties.clone(),
        };
        for confirm in publish_burst(channel, std::slice::from_ref(&message)).await? {
            confirmed(confirm).await?;
        }
    }
    Ok(())
}

/// Consumes `expected` messages; returns how many came and when the last did.
async fn consume(
    channel: lapin::Channel,
    mut stream: lapin::Consumer,
    expected: usize,
    ack: AckMode,
) -> Result<(usize, Instant), lapin::Error> {
    use futures::StreamExt;
    let mut count = 0usize;
    let mut unacked = 0usize;
    while count < expected {
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
                if unacked >= usize::from(every.max(1)) || count == expected {
                    unacked = 0;
                    delivery
                        .acker
                        .ack(BasicAckOptions { multiple: true })
                        .await?;
                }
            }
        }
    }
    let done = Instant::now();
    // Closed here, not with the connection, so nothing is torn down mid-flight.
    let _ = channel.close(200, "done".into()).await;
    Ok((count, done))
}

async fn confirmed(confirm: PublisherConfirm) -> Result<(), BenchError> {
    match confirm.await? {
        Confirmation::Ack(None) => Ok(()),
        other => Err(BenchError::NotConfirmed(format!(
            "ceiling message: {other:?}"
        ))),
    }
}
