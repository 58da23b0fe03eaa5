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
    let mut pending: VecDeque<(usize, PublisherConfirm)> = VecDeque::with_capacity(window);
    let mut sent = Vec::with_capacity(plan.len());
    let start = Instant::now();
    for seq in 0..plan.len() {
        let at = match rate {
            Some(rate) => {
                let due = start + Duration::from_secs_f64(seq as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                due
            }
            None => Instant::now(),
        };
        let event_type = plan.event_type(seq);
        let body = factory.body(seq as u64, event_type);
        let confirm = channel
            .basic_publish(
                exchange.into(),
                event_type.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &body,
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into()),
            )
            .await?;
        sent.push(at);
        pending.push_back((seq, confirm));
        while pending.len() >= window {
            if let Some((seq, confirm)) = pending.pop_front() {
                confirmed(seq, confirm).await?;
            }
        }
    }
    while let Some((seq, confirm)) = pending.pop_front() {
        confirmed(seq, confirm).await?;
    }
    let _ = channel.close(200, "done".into()).await;
    Ok(sent)
}

async fn confirmed(seq: usize, confirm: PublisherConfirm) -> Result<(), BenchError> {
    match confirm.await? {
        Confirmation::Ack(None) => Ok(()),
        other => Err(BenchError::NotConfirmed(format!("event {seq}: {other:?}"))),
    }
}

/// Posts every event of `plan` to `POST {ingest_url}/v1/events` from
/// `clients` concurrent producers. Events of one `group` always go through
/// the same producer, one after another, so their order at intake is defined.
pub async fn post_http(
    ingest_url: &str,
    token: &str,
    factory: &EventFactory,
    plan: &Plan,
    group_of: &[usize],
    clients: usize,
) -> Result<SendTimes, BenchError> {
    let clients = clients.max(1);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .tcp_nodelay(true)
        .build()?;
    let url: Arc<str> = format!("{ingest_url}/v1/events").into();
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
            for (seq, event_type) in lane.into_iter().zip(types) {
                let body = factory.body(seq as u64, &event_type);
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
                times.push((seq, at));
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
