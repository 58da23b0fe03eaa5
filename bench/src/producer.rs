//! The upstream side: publishing the run's events to ingest, over AMQP (a
//! confirm window, optionally at a fixed rate) or over HTTP (several
//! concurrent producers, each keeping its own events in order).

use crate::error::BenchError;
use crate::event::EventFactory;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties, PublisherConfirm};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to publish: event `seq` has type `event_types[type_of[seq]]`.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The distinct event types.
    pub event_types: Vec<String>,
    /// Per event, the index of its type.
    pub type_of: Vec<usize>,
}

impl Plan {
    /// Number of events.
    pub fn len(&self) -> usize {
        self.type_of.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.type_of.is_empty()
    }

    fn event_type(&self, seq: usize) -> &str {
        &self.event_types[self.type_of[seq]]
    }
}

/// When each event was sent, by sequence number: the start of its end-to-end latency.
pub type SendTimes = Vec<Instant>;

/// Publishes every event of `plan` to `exchange` (routing key = event type)
/// on a connection of its own, with up to `window` confirms outstanding.
///
/// With a `rate` (events/s) events are sent on a fixed schedule and each
/// event's time is its scheduled time, so a stalled pipeline shows up as
/// latency instead of silently slowing the producer down (no coordinated omission).
pub async fn publish_amqp(
    amqp_url: &str,
    exchange: &str,
    factory: &EventFactory,
    plan: &Plan,
    window: usize,
    rate: Option<f64>,
) -> Result<SendTimes, BenchError> {
    let connection = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    let result = publish_on(&connection, exchange, factory, plan, window, rate).await;
    let _ = connection.close(200, "bench producer done".into()).await;
    result
}

async fn publish_on(
    connection: &Connection,
    exchange: &str,
    factory: &EventFactory,
    plan: &Plan,
    window: usize,
    rate: Option<f64>,
) -> Result<SendTimes, BenchError> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let window = window.max(1);
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into());
    let mut pending: VecDeque<(usize, PublisherConfirm)> = VecDeque::with_capacity(window);
    let mut sent = Vec::with_capacity(plan.len());
    let start = Instant::now();
    let due = |seq: usize| start + Duration::from_secs_f64(seq as f64 / rate.unwrap_or(1.0));
    while sent.len() < plan.len() {
        let next = sent.len();
        if pending.len() >= window {
            if let Some((seq, confirm)) = pending.pop_front() {
                confirmed(seq, confirm).await?;
            }
            continue;
        }
        let room = (window - pending.len())
            .min(MAX_BURST)
            .min(plan.len() - next);
        // Everything due (all of it without a rate) goes out as one burst.
        let burst = match rate {
            None => room,
            Some(_) => {
                tokio::time::sleep_until(due(next).into()).await;
                let now = Instant::now();
                (next..next + room)
                    .take_while(|&seq| due(seq) <= now)
                    .count()
                    .max(1)
            }
        };
        let bodies: Vec<(usize, Vec<u8>)> = (next..next + burst)
            .map(|seq| (seq, factory.body(seq as u64, plan.event_type(seq))))
            .collect();
        let messages: Vec<Message<'_>> = bodies
            .iter()
            .map(|(seq, body)| Message {
                exchange,
                routing_key: plan.event_type(*seq),
                body,
                properties: properties.clone(),
            })
            .collect();
        let now = Instant::now();
        let confirms = publish_burst(&channel, &messages).await?;
        for ((seq, _), confirm) in bodies.iter().zip(confirms) {
            sent.push(if rate.is_some() { due(*seq) } else { now });
            pending.push_back((*seq, confirm));
        }
    }
    while let Some((seq, confirm)) = pending.pop_front() {
        confirmed(seq, confirm).await?;
    }
    let _ = channel.close(200, "done".into()).await;
    Ok(sent)
}

/// Most messages handed to the connection at once.
const MAX_BURST: usize = 128;

/// One message of a burst.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    /// Exchange (`""` for a queue by name).
    pub exchange: &'a str,
    /// Routing key.
    pub routing_key: &'a str,
    /// Body.
    pub body: &'a [u8],
    /// Properties (persistent and mandatory are the caller's to set).
    pub properties: BasicProperties,
}

/// Publishes `messages` (mandatory) in order, handing them all to lapin
/// before awaiting any write, so they leave in few socket writes: the best
/// publishing lapin can do (one publish awaited at a time costs a socket
/// write and two thread hand-offs each). Returns their confirms in order.
pub async fn publish_burst(
    channel: &lapin::Channel,
    messages: &[Message<'_>],
) -> Result<Vec<PublisherConfirm>, lapin::Error> {
    let options = BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    };
    let mut started = Vec::with_capacity(messages.len());
    for message in messages {
        let mut publish = Box::pin(channel.basic_publish(
            message.exchange.into(),
            message.routing_key.into(),
            options,
            message.body,
            message.properties.clone(),
        ));
        // The first poll takes the confirm number and queues the frames, in order.
        let polled = futures::poll!(publish.as_mut());
        started.push((publish, polled));
    }
    let mut confirms = Vec::with_capacity(started.len());
    for (publish, polled) in started {
        confirms.push(match polled {
            std::task::Poll::Ready(sent) => sent?,
            std::task::Poll::Pending => publish.await?,
        });
    }
    Ok(confirms)
}

/// A JSON array of the event bodies (each a JSON object).
fn batch_body(bodies: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::with_capacity(bodies.iter().map(|b| b.len() + 1).sum::<usize>() + 2);
    body.push(b'[');
    for (i, event) in bodies.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(event);
    }
    body.push(b']');
    body
}

async fn confirmed(seq: usize, confirm: PublisherConfirm) -> Result<(), BenchError> {
    match confirm.await? {
        Confirmation::Ack(None) => Ok(()),
        other => Err(BenchError::NotConfirmed(format!("event {seq}: {other:?}"))),
    }
}

/// Posts every event of `plan` to `POST {ingest_url}/v1/events` (or, with
/// `batch`, that many at a time to `POST {ingest_url}/v1/events/batch`) from
/// `clients` concurrent producers. Events of one `group` always go through
/// the same producer, one after another, so their order at intake is defined.
pub async fn post_http(
    ingest_url: &str,
    token: &str,
    factory: &EventFactory,
    plan: &Plan,
    group_of: &[usize],
    clients: usize,
    batch: Option<usize>,
) -> Result<SendTimes, BenchError> {
    let clients = clients.max(1);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .tcp_nodelay(true)
        .build()?;
    let url: Arc<str> = match batch {
        Some(_) => format!("{ingest_url}/v1/events/batch").into(),
        None => format!("{ingest_url}/v1/events").into(),
    };
    let per_post = batch.unwrap_or(1).max(1);
    let auth: Arc<str> = format!("Bearer {token}").into();
    let mut lanes: Vec<Vec<usize>> = vec![Vec::new(); clients];
    for seq in 0..plan.len() {
        let group = group_of.get(seq).copied().unwrap_or(0);
        lanes[group % clients].push(seq);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for lane in lanes.into_iter().filter(|lane| !lane.is_empty()) {
        let (http, url, auth) = (http.clone(), url.clone(), auth.clone());
        let factory = factory.clone();
        let types: Vec<String> = lane
            .iter()
            .map(|&seq| plan.event_type(seq).to_string())
            .collect();
        tasks.spawn(async move {
            let mut times = Vec::with_capacity(lane.len());
            for (seqs, types) in lane.chunks(per_post).zip(types.chunks(per_post)) {
                let bodies: Vec<Vec<u8>> = seqs
                    .iter()
                    .zip(types)
                    .map(|(&seq, event_type)| factory.body(seq as u64, event_type))
                    .collect();
                let body = match batch {
                    Some(_) => batch_body(&bodies),
                    None => bodies.concat(),
                };
                let seq = seqs[0];
                let at = Instant::now();
                let response = http
                    .post(url.as_ref())
                    .header("authorization", auth.as_ref())
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                let status = response.status();
                if status != reqwest::StatusCode::ACCEPTED {
                    let text = response.text().await.unwrap_or_default();
                    return Err(BenchError::NotConfirmed(format!(
                        "event {seq}: ingest answered {status}: {text}"
                    )));
                }
                times.extend(seqs.iter().map(|&seq| (seq, at)));
            }
            Ok::<_, BenchError>(times)
        });
    }
    let epoch = Instant::now();
    let mut sent = vec![epoch; plan.len()];
    while let Some(joined) = tasks.join_next().await {
        let times =
            joined.map_err(|e| BenchError::Invalid(format!("HTTP producer task: {e}")))??;
        for (seq, at) in times {
            sent[seq] = at;
        }
    }
    Ok(sent)
}
