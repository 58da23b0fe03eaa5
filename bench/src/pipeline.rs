//! One pipeline scenario end to end: subscriptions stored, ingest and
//! delivery started in a fresh namespace, a warm-up event through every
//! subscription, then the measured run — events into intake, POSTs out to
//! the receivers — and the check that each arrived exactly once, in order.

use crate::check::{self, Arrived, CheckReport, Expected};
use crate::cpu::{CpuUse, Snapshot};
use crate::error::BenchError;
use crate::event::{delivered_id, EventFactory};
use crate::producer::{self, Plan};
use crate::receiver::ReceiverFarm;
use crate::redis_stats::CommandCounts;
use crate::services::{Services, Tuning, PRODUCER_TOKEN};
use crate::stats::Latency;
use crate::Endpoints;
use futures::StreamExt;
use postline_shared::model::subscription::SubscriptionSpec;
use postline_shared::redis::subscription_store::SubscriptionStore;
use postline_shared::runtime::installation;
use postline_shared::CommonConfig;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long to keep watching after the last expected delivery, to catch duplicates.
const QUIET: Duration = Duration::from_millis(300);
/// How long the warm-up may take.
const WARM_UP_DEADLINE: Duration = Duration::from_secs(60);

/// How events enter Postline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intake {
    /// Published to the `<ns>.ingest` exchange.
    Amqp,
    /// `POST /v1/events` (or `/v1/events/batch`), from this many concurrent producers.
    Http {
        /// Concurrent producers.
        clients: usize,
        /// Events per `POST /v1/events/batch`; `None` posts one at a time.
        batch: Option<usize>,
    },
}

/// Which subscriptions want which events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Each subscription wants its own event type; events go round-robin over them.
    Spread {
        /// Number of subscriptions.
        subscriptions: usize,
    },
    /// Every subscription wants the one event type: each event goes to all.
    FanOut {
        /// Number of subscriptions.
        subscriptions: usize,
    },
}

impl Layout {
    /// Number of subscriptions.
    pub fn subscriptions(self) -> usize {
        match self {
            Self::Spread { subscriptions } | Self::FanOut { subscriptions } => subscriptions.max(1),
        }
    }

    /// The event types, and per event the index of its type.
    pub fn plan(self, events: usize) -> Plan {
        match self {
            Self::Spread { .. } => {
                let subs = self.subscriptions();
                Plan {
                    event_types: (0..subs).map(|i| format!("bench.s{i}")).collect(),
                    type_of: (0..events).map(|seq| seq % subs).collect(),
                }
            }
            Self::FanOut { .. } => Plan {
                event_types: vec!["bench.fan".into()],
                type_of: vec![0; events],
            },
        }
    }

    /// The event types subscription `index` asks for.
    fn wants(self, index: usize) -> String {
        match self {
            Self::Spread { .. } => format!("bench.s{index}"),
            Self::FanOut { .. } => "bench.fan".into(),
        }
    }

    /// What each subscription must get, in order.
    pub fn expected(self, events: usize) -> Expected {
        let subs = self.subscriptions();
        let per_subscription = match self {
            Self::Spread { .. } => (0..subs)
                .map(|i| (i as u64..events as u64).step_by(subs).collect())
                .collect(),
            Self::FanOut { .. } => vec![(0..events as u64).collect(); subs],
        };
        Expected {
            per_subscription,
            strict: vec![true; subs],
        }
    }
}

/// Everything one scenario needs.
#[derive(Debug, Clone)]
pub struct PipelineSpec {
    /// Short name (`a`, `b`, …).
    pub name: String,
    /// What it measures, for the table.
    pub title: String,
    /// Subscriptions and routing.
    pub layout: Layout,
    /// AMQP or HTTP.
    pub intake: Intake,
    /// Events to send.
    pub events: usize,
    /// Fixed offered load in events/s (AMQP only); `None` sends as fast as confirms allow.
    pub rate: Option<f64>,
    /// Intake body size in bytes.
    pub message_bytes: usize,
    /// The producer's outstanding confirms.
    pub publish_window: usize,
    /// Give up when no delivery arrives for this long.
    pub stall_timeout: Duration,
    /// Service settings.
    pub tuning: Tuning,
    /// Subscriptions registered in all: beyond the layout's, paused ones
    /// wanting event types no event has (exact names and patterns).
    pub registered: usize,
}

/// The result of one scenario.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PipelineReport {
    /// Short name.
    pub name: String,
    /// What it measures.
    pub title: String,
    /// `amqp` or `http`.
    pub intake: String,
    /// Subscriptions.
    pub subscriptions: usize,
    /// Whether events were spread over the subscriptions (not fanned out).
    pub layout_spread: bool,
    /// Whether each HTTP producer waits for one event's 202 at a time
    /// (scenario d), so it is measured against the awaited-confirm bound
    /// (whose producers are as many: both are `--http-clients`).
    pub awaits_each_event: bool,
    /// Events sent.
    pub events: usize,
    /// Offered load, when fixed (events/s).
    pub offered_rate: Option<f64>,
    /// Deliveries expected (events × matching subscriptions).
    pub deliveries_expected: u64,
    /// Requests the receivers got.
    pub deliveries: u64,
    /// First event sent to last delivery received.
    pub secs: f64,
    /// How long the producer took to hand every event to ingest.
    pub publish_secs: f64,
    /// First event sent until ingest had accepted them all (its own counter),
    /// so a slow stage shows: ingest when this is close to `secs`, delivery otherwise.
    pub ingest_secs: Option<f64>,
    /// Events completely delivered per second.
    pub events_per_sec: f64,
    /// POSTs received per second.
    pub deliveries_per_sec: f64,
    /// Deliveries per second divided by the broker ceiling of the same run.
    pub ratio_to_ceiling: Option<f64>,
    /// Deliveries per second divided by the broker's own two-hop bound for
    /// the same number of subscription queues (spread layouts only).
    pub ratio_to_two_hop: Option<f64>,
    /// Deliveries per second divided by what the broker alone allows when
    /// as many producers each wait for every confirm (scenario d).
    pub ratio_to_awaited: Option<f64>,
    /// Event sent → receiver got it.
    pub latency: Latency,
    /// Exactly once, in order.
    pub check: CheckReport,
    /// CPU used while events flowed.
    pub cpu: CpuUse,
    /// CPU microseconds per delivery, by component.
    pub cpu_us_per_delivery: BTreeMap<String, f64>,
    /// Redis commands per delivery (server-wide counters).
    pub redis_per_delivery: BTreeMap<String, f64>,
    /// Where the time of one event goes, from the services' own metrics.
    pub stages: Stages,
}

/// Mean stage durations over the measured run, from the services' metrics,
/// and Redis round trips sampled while events flowed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stages {
    /// Ingest: publishing and confirming an event's copies (ms, mean).
    pub ingest_confirm_ms: Option<f64>,
    /// Delivery: one POST to a receiver (ms, mean).
    pub delivery_post_ms: Option<f64>,
    /// A Redis `PING` from the bench while events flowed: the round trip
    /// every Redis command of ingest and delivery pays at least.
    pub redis_rtt: Latency,
}

impl PipelineReport {
    /// Fills in the ratios to the ceiling measured in the same run.
    pub fn set_ceiling(&mut self, ceiling: &crate::ceiling::Ceiling) {
        if ceiling.per_sec > 0.0 {
            self.ratio_to_ceiling = Some(self.deliveries_per_sec / ceiling.per_sec);
        }
        if !self.layout_spread || self.subscriptions != ceiling.spread {
            return;
        }
        if self.awaits_each_event {
            self.ratio_to_awaited = ceiling
                .awaited_per_sec
                .map(|bound| self.deliveries_per_sec / bound);
        } else {
            self.ratio_to_two_hop = ceiling
                .two_hop_per_sec
                .map(|bound| self.deliveries_per_sec / bound);
        }
    }
}

/// Runs one scenario in a namespace of its own and cleans up after it.
pub async fn run(endpoints: &Endpoints, spec: &PipelineSpec) -> Result<PipelineReport, BenchError> {
    if spec.rate.is_some() && spec.intake != Intake::Amqp {
        return Err(BenchError::Invalid(
            "a fixed offered load is only supported over AMQP".into(),
        ));
    }
    let namespace = crate::fresh_namespace();
    let common = endpoints.common_config(&namespace)?;
    let subscriptions = spec.layout.subscriptions();
    let ids: Vec<String> = (0..subscriptions.max(spec.registered))
        .map(subscription_id)
        .collect();
    let receivers_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("pl-receiver")
        .enable_all()
        .build()
        .map_err(|e| BenchError::io("building the receivers' runtime", e))?;
    let outcome = measure(endpoints, spec, &common, &ids, receivers_runtime.handle()).await;
    receivers_runtime.shutdown_background();
    let cleaned = crate::cleanup::purge(endpoints, &namespace, &ids, &[]).await;
    let report = outcome?;
    if let Err(error) = cleaned {
        tracing::warn!(%error, %namespace, "clean-up incomplete");
    }
    Ok(report)
}

/// The id of subscription `index` (sorts in index order).
pub fn subscription_id(index: usize) -> String {
    format!("s{index:05}")
}

/// What registered-only subscription `index` wants: no event of the bench
/// has it; every other one is a pattern, so both kinds of matching are loaded.
fn unmatched_type(index: usize) -> String {
    match index % 2 {
        0 => format!("other.t{index}"),
        _ => format!("other.t{index}.*"),
    }
}

/// A strict subscription as an operator would write it, with one signing
/// secret so delivery does the signing work it does in production.
pub fn subscription_spec(
    id: &str,
    endpoint: &str,
    event_type: &str,
    active: bool,
) -> Result<SubscriptionSpec, BenchError> {
    serde_json::from_value(serde_json::json!({
        "id": id,
        "endpoint": endpoint,
        "event_types": [event_type],
        "secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        "order": "strict",
        "status": if active { "active" } else { "paused" },
    }))
    .map_err(|e| BenchError::Invalid(format!("subscription spec: {e}")))
}

/// The subscription store of a fresh namespace, whose installation marker
/// is written first, as a new installation's services write it before any
/// subscription exists (the bench stores its subscriptions itself).
pub async fn fresh_store(
    common: &CommonConfig,
) -> Result<(SubscriptionStore, redis::aio::ConnectionManager), BenchError> {
    let (store, mut redis) =
        SubscriptionStore::connect(&common.redis_url, common.keys(), common.encryption.clone())
            .await?;
    installation::write_marker(&mut redis, &common.keys(), &installation::Marker::fresh()).await?;
    Ok((store, redis))
}

/// Stores `specs` `concurrency` at a time.
pub async fn store_all(
    store: &SubscriptionStore,
    specs: Vec<SubscriptionSpec>,
    concurrency: usize,
) -> Result<(), BenchError> {
    let mut writes = futures::stream::iter(specs.into_iter().map(|spec| store.create(spec)))
        .buffer_unordered(concurrency.max(1));
    while let Some(written) = writes.next().await {
        written?;
    }
    Ok(())
}

async fn measure(
    endpoints: &Endpoints,
    spec: &PipelineSpec,
    common: &CommonConfig,
    ids: &[String],
    receivers_runtime: &tokio::runtime::Handle,
) -> Result<PipelineReport, BenchError> {
    let layout = spec.layout;
    let subscriptions = layout.subscriptions();
    let farm = ReceiverFarm::start(subscriptions, receivers_runtime).await?;
    let (store, mut redis) = fresh_store(common).await?;
    let specs = ids
        .iter()
        .enumerate()
        .map(|(i, id)| match i < subscriptions {
            true => subscription_spec(id, farm.url(i), &layout.wants(i), true),
            false => subscription_spec(id, farm.url(0), &unmatched_type(i), false),
        })
        .collect::<Result<Vec<_>, _>>()?;
    store_all(&store, specs, 32).await?;

    let services = Services::start(common, &spec.tuning).await?;
    let result = drive(endpoints, spec, common, &services, &farm, &mut redis).await;
    services.stop().await;
    result
}

async fn drive(
    endpoints: &Endpoints,
    spec: &PipelineSpec,
    common: &CommonConfig,
    services: &Services,
    farm: &ReceiverFarm,
    redis: &mut redis::aio::ConnectionManager,
) -> Result<PipelineReport, BenchError> {
    let layout = spec.layout;
    let subscriptions = layout.subscriptions();
    let exchange = common.topology().ingest_exchange();
    let recorder = farm.recorder().clone();

    // Warm-up: one event through every subscription, so every consumer is
    // running and every HTTP connection is open before the clock starts.
    let warm_factory = EventFactory::new(&format!("{}w", common.namespace), spec.message_bytes);
    let warm_plan = match layout {
        Layout::Spread { .. } => layout.plan(subscriptions),
        Layout::FanOut { .. } => layout.plan(1),
    };
    producer::publish_amqp(
        endpoints.first_node(),
        &exchange,
        &warm_factory,
        &warm_plan,
        64,
        None,
    )
    .await?;
    let started = Instant::now();
    while recorder.count() < subscriptions {
        if started.elapsed() > WARM_UP_DEADLINE {
            return Err(BenchError::Timeout(format!(
                "warm-up: {} of {subscriptions} subscriptions delivered after {WARM_UP_DEADLINE:?}",
                recorder.count()
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    recorder.take();

    let factory = EventFactory::new(&common.namespace, spec.message_bytes);
    let plan = layout.plan(spec.events);
    let expected = layout.expected(spec.events);
    let want = expected.total() as usize;
    let http = reqwest::Client::new();
    let ingest_metrics = format!("{}/metrics", services.ingest_url());
    let delivery_metrics = format!("{}/metrics", services.delivery_url());
    let ingest_before = scrape(&http, &ingest_metrics).await;
    let delivery_before = scrape(&http, &delivery_metrics).await;
    let stop_pinging = tokio_util::sync::CancellationToken::new();
    let pinging = tokio::spawn(sample_redis_rtt(
        common.redis_url.clone(),
        stop_pinging.clone(),
    ));
    let cpu_before = Snapshot::take();
    let redis_before = CommandCounts::read(redis).await;
    let publishing = Instant::now();
    let ingest_done = tokio::spawn(watch_ingest(services.ingest_url(), spec.events as f64));
    let mut producing = {
        let (factory, plan) = (factory.clone(), plan.clone());
        let (amqp_url, exchange) = (endpoints.first_node().to_string(), exchange.clone());
        let ingest_url = services.ingest_url();
        let intake = spec.intake;
        let (window, rate) = (spec.publish_window, spec.rate);
        tokio::spawn(async move {
            let sent = match intake {
                Intake::Amqp => {
                    producer::publish_amqp(&amqp_url, &exchange, &factory, &plan, window, rate)
                        .await
                }
                Intake::Http { clients, batch } => {
                    let groups: Vec<usize> = match layout {
                        Layout::Spread { .. } => plan.type_of.clone(),
                        // Every subscription gets every event: one producer keeps them in order.
                        Layout::FanOut { .. } => vec![0; plan.len()],
                    };
                    producer::post_http(
                        &ingest_url,
                        PRODUCER_TOKEN,
                        &factory,
                        &plan,
                        &groups,
                        clients,
                        batch,
                    )
                    .await
                }
            };
            sent.map(|sent| (sent, Instant::now()))
        })
    };
    let mut produced = None;
    let mut last_count = 0;
    let mut last_progress = Instant::now();
    loop {
        let count = recorder.count();
        if count >= want && produced.is_some() {
            break;
        }
        if count != last_count {
            last_count = count;
            last_progress = Instant::now();
        } else if last_progress.elapsed() > spec.stall_timeout {
            tracing::warn!(
                got = count,
                want,
                "no delivery for {:?}; giving up",
                spec.stall_timeout
            );
            break;
        }
        if produced.is_none() {
            tokio::select! {
                joined = &mut producing => {
                    let (sent, done) = joined
                        .map_err(|e| BenchError::Invalid(format!("producer task: {e}")))??;
                    produced = Some((sent, done));
                }
                _ = tokio::time::sleep(Duration::from_millis(2)) => {}
            }
        } else {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let cpu = cpu_before.until(&Snapshot::take());
    let redis_calls = redis_before.until(&CommandCounts::read(redis).await);
    // Its last poll may be due still: give it a moment, then stop it.
    let stop_watching = ingest_done.abort_handle();
    let ingest_done = tokio::time::timeout(Duration::from_millis(100), ingest_done)
        .await
        .ok()
        .and_then(Result::ok);
    stop_watching.abort();
    stop_pinging.cancel();
    let redis_rtt = Latency::of(pinging.await.unwrap_or_default());
    let stages = Stages {
        ingest_confirm_ms: mean_ms(
            &ingest_before,
            &scrape(&http, &ingest_metrics).await,
            "postline_publish_confirm_seconds",
        ),
        delivery_post_ms: mean_ms(
            &delivery_before,
            &scrape(&http, &delivery_metrics).await,
            "postline_delivery_duration_seconds",
        ),
        redis_rtt,
    };
    tokio::time::sleep(QUIET).await;
    let arrivals = recorder.take();
    let Some((sent, producer_done)) = produced else {
        return Err(BenchError::Timeout("the producer never finished".into()));
    };

    let arrived: Vec<Arrived> = arrivals
        .iter()
        .map(|arrival| Arrived {
            subscription: arrival.listener,
            seq: delivered_id(&arrival.body).and_then(|id| factory.seq_of(&id)),
        })
        .collect();
    let check = check::check(&expected, &arrived);
    let latency = Latency::of(
        arrivals
            .iter()
            .zip(&arrived)
            .filter_map(|(arrival, arrived)| {
                let sent_at = sent.get(arrived.seq? as usize)?;
                Some(arrival.at.saturating_duration_since(*sent_at))
            })
            .collect(),
    );
    let first_sent = sent.iter().min().copied().unwrap_or(publishing);
    let last_arrival = arrivals.iter().map(|a| a.at).max().unwrap_or(first_sent);
    let secs = last_arrival
        .saturating_duration_since(first_sent)
        .as_secs_f64()
        .max(1e-9);
    let deliveries = arrivals.len() as u64;
    let complete_events = match layout {
        Layout::Spread { .. } => check.arrived,
        Layout::FanOut { .. } => check.arrived / subscriptions as u64,
    };
    let per_delivery = |value: f64| value / (deliveries.max(1) as f64);
    Ok(PipelineReport {
        name: spec.name.clone(),
        title: spec.title.clone(),
        intake: match spec.intake {
            Intake::Amqp => "amqp".into(),
            Intake::Http {
                clients,
                batch: None,
            } => format!("http x{clients}"),
            Intake::Http {
                clients,
                batch: Some(n),
            } => format!("b{n} x{clients}"),
        },
        subscriptions,
        layout_spread: matches!(layout, Layout::Spread { .. }),
        awaits_each_event: matches!(spec.intake, Intake::Http { batch: None, .. }),
        events: spec.events,
        offered_rate: spec.rate,
        deliveries_expected: expected.total(),
        deliveries,
        secs,
        publish_secs: producer_done
            .saturating_duration_since(first_sent)
            .as_secs_f64(),
        ingest_secs: ingest_done.map(|at| at.saturating_duration_since(first_sent).as_secs_f64()),
        events_per_sec: complete_events as f64 / secs,
        deliveries_per_sec: deliveries as f64 / secs,
        ratio_to_ceiling: None,
        ratio_to_two_hop: None,
        ratio_to_awaited: None,
        latency,
        check,
        cpu_us_per_delivery: cpu
            .secs
            .iter()
            .map(|(component, secs)| (component.clone(), per_delivery(secs * 1e6)))
            .collect(),
        cpu,
        redis_per_delivery: redis_calls
            .iter()
            .map(|(command, &calls)| (command.clone(), per_delivery(calls as f64)))
            .collect(),
        stages,
    })
}

/// Polls ingest's `postline_events_ingested_total` until it reaches `events`;
/// returns when it did.
async fn watch_ingest(ingest_url: String, events: f64) -> Instant {
    let http = reqwest::Client::new();
    let url = format!("{ingest_url}/metrics");
    loop {
        if let Ok(response) = http.get(&url).send().await {
            if let Ok(text) = response.text().await {
                let ingested: f64 = text
                    .lines()
                    .filter(|l| l.starts_with("postline_events_ingested_total"))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum();
                if ingested >= events {
                    return Instant::now();
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every sample of a Prometheus text page, by series (name and labels).
async fn scrape(http: &reqwest::Client, url: &str) -> BTreeMap<String, f64> {
    let Ok(response) = http.get(url).send().await else {
        return BTreeMap::new();
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Mean of histogram `name` (all label sets) between two scrapes, in ms.
fn mean_ms(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    name: &str,
) -> Option<f64> {
    let total = |page: &BTreeMap<String, f64>, suffix: &str| -> f64 {
        let series = format!("{name}{suffix}");
        page.iter()
            .filter(|(key, _)| *key == &series || key.starts_with(&format!("{series}{{")))
            .map(|(_, value)| value)
            .sum()
    };
    let count = total(after, "_count") - total(before, "_count");
    let sum = total(after, "_sum") - total(before, "_sum");
    (count > 0.0).then(|| 1000.0 * sum / count)
}

/// Times a Redis `PING` every 5 ms until `stop`; returns the round trips.
async fn sample_redis_rtt(
    redis_url: String,
    stop: tokio_util::sync::CancellationToken,
) -> Vec<Duration> {
    let mut samples = Vec::new();
    let Ok(client) = redis::Client::open(redis_url.as_str()) else {
        return samples;
    };
    // A connection of its own: sharing one would queue the pings behind other commands.
    let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
        return samples;
    };
    while !stop.is_cancelled() {
        let started = Instant::now();
        let pinged: Result<String, _> = redis::cmd("PING").query_async(&mut connection).await;
        if pinged.is_ok() {
            samples.push(started.elapsed());
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    }
    samples
}
