//! Scenario (f): the delivery service as its own process with many
//! subscriptions registered and a few active — how long until it is ready
//! and delivering, and how much memory it holds.
//!
//! The subscriptions are written straight through the `SubscriptionStore`;
//! one event per active subscription waits in its queue before the process
//! starts, so "delivering" is measured as the moment the last of them arrives.

use crate::check::{self, Arrived, CheckReport, Expected};
use crate::error::BenchError;
use crate::event::{delivered_id, EventFactory};
use crate::pipeline::{fresh_store, store_all, subscription_id, subscription_spec};
use crate::receiver::ReceiverFarm;
use crate::Endpoints;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use postline_shared::model::ids::SubscriptionId;
use postline_shared::{CommonConfig, Envelope};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How long the process may take to become ready and deliver.
const DEADLINE: Duration = Duration::from_secs(180);

/// What scenario (f) sets up.
#[derive(Debug, Clone)]
pub struct StartupSpec {
    /// Subscriptions registered.
    pub registered: usize,
    /// How many of them are active (the rest are paused).
    pub active: usize,
    /// The `postline-delivery` binary; built with cargo when `None`.
    pub delivery_bin: Option<PathBuf>,
    /// Probe body size.
    pub message_bytes: usize,
}

/// What scenario (f) measured.
#[derive(Debug, Clone, Serialize)]
pub struct StartupReport {
    /// Subscriptions registered.
    pub registered: usize,
    /// Active subscriptions.
    pub active: usize,
    /// Writing the subscriptions to Redis.
    pub register_secs: f64,
    /// Process start until `/readyz` answered 200.
    pub ready_secs: f64,
    /// Process start until every active subscription's waiting event arrived.
    pub delivering_secs: f64,
    /// Resident memory when ready (MiB).
    pub rss_ready_mib: f64,
    /// Resident memory after delivering, once settled (MiB).
    pub rss_mib: f64,
    /// Peak resident memory (MiB).
    pub rss_peak_mib: f64,
    /// Consumers the process reported running (`postline_delivery_consumers`).
    pub consumers: Option<f64>,
    /// Each waiting event delivered exactly once.
    pub check: CheckReport,
    /// The binary measured.
    pub binary: String,
}

/// Runs scenario (f) and cleans up after it.
pub async fn run(endpoints: &Endpoints, spec: &StartupSpec) -> Result<StartupReport, BenchError> {
    if spec.active == 0 || spec.active > spec.registered {
        return Err(BenchError::Invalid(format!(
            "scenario f needs 1 to {} active subscriptions, not {}",
            spec.registered, spec.active
        )));
    }
    let binary = match &spec.delivery_bin {
        Some(path) => path.clone(),
        None => build_delivery().await?,
    };
    let namespace = crate::fresh_namespace();
    let common = endpoints.common_config(&namespace)?;
    let step = spec.registered / spec.active;
    // Active subscriptions spread over the id range, as in a real catalog.
    let active: Vec<usize> = (0..spec.active).map(|k| k * step).collect();
    let active_ids: Vec<String> = active.iter().map(|&i| subscription_id(i)).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("pl-receiver")
        .enable_all()
        .build()
        .map_err(|e| BenchError::io("building the receivers' runtime", e))?;
    let outcome = measure(endpoints, spec, &common, &active, &binary, runtime.handle()).await;
    runtime.shutdown_background();
    let cleaned = crate::cleanup::purge(endpoints, &namespace, &active_ids, &[]).await;
    let report = outcome?;
    if let Err(error) = cleaned {
        tracing::warn!(%error, %namespace, "clean-up incomplete");
    }
    Ok(report)
}

async fn measure(
    endpoints: &Endpoints,
    spec: &StartupSpec,
    common: &CommonConfig,
    active: &[usize],
    binary: &Path,
    receivers_runtime: &tokio::runtime::Handle,
) -> Result<StartupReport, BenchError> {
    let farm = ReceiverFarm::start(active.len(), receivers_runtime).await?;
    let (store, _redis) = fresh_store(common).await?;
    let mut listener_of = vec![None; spec.registered];
    for (k, &index) in active.iter().enumerate() {
        listener_of[index] = Some(k);
    }
    let specs = (0..spec.registered)
        .map(|i| {
            let endpoint = farm.url(listener_of[i].unwrap_or(0));
            subscription_spec(
                &subscription_id(i),
                endpoint,
                &format!("bench.s{i}"),
                listener_of[i].is_some(),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let registering = Instant::now();
    store_all(&store, specs, 64).await?;
    let register_secs = registering.elapsed().as_secs_f64();

    // One event waits in each active subscription's queue before the process starts.
    let factory = EventFactory::new(&common.namespace, spec.message_bytes);
    let connection =
        Connection::connect(&endpoints.amqp_url, ConnectionProperties::default()).await?;
    let probes = publish_probes(&connection, common, &factory, active).await;
    let _ = connection.close(200, "probes published".into()).await;
    probes?;

    let port = free_port()?;
    let mut child = tokio::process::Command::new(binary)
        .env("POSTLINE_NAMESPACE", &common.namespace)
        .env("POSTLINE_AMQP_URL", common.amqp_url.to_env_value())
        .env("POSTLINE_REDIS_URL", &common.redis_url)
        .env("POSTLINE_DELIVERY_LISTEN", format!("127.0.0.1:{port}"))
        .env("POSTLINE_ALLOW_PRIVATE_NETWORKS", crate::RECEIVER_NETWORK)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| BenchError::io(format!("starting {}", binary.display()), e))?;
    let started = Instant::now();
    let outcome = watch(&child, port, started, &farm, active.len()).await;
    stop_child(&mut child).await;
    let (ready_secs, rss_ready_mib, delivering_secs, rss_mib, rss_peak_mib, consumers) = outcome?;

    let arrivals = farm.recorder().take();
    let arrived: Vec<Arrived> = arrivals
        .iter()
        .map(|a| Arrived {
            subscription: a.listener,
            seq: delivered_id(&a.body).and_then(|id| factory.seq_of(&id)),
        })
        .collect();
    let expected = Expected {
        per_subscription: (0..active.len() as u64).map(|k| vec![k]).collect(),
        strict: vec![true; active.len()],
    };
    Ok(StartupReport {
        registered: spec.registered,
        active: active.len(),
        register_secs,
        ready_secs,
        delivering_secs,
        rss_ready_mib,
        rss_mib,
        rss_peak_mib,
        consumers,
        check: check::check(&expected, &arrived),
        binary: binary.display().to_string(),
    })
}

type Watched = (f64, f64, f64, f64, f64, Option<f64>);

async fn watch(
    child: &tokio::process::Child,
    port: u16,
    started: Instant,
    farm: &ReceiverFarm,
    active: usize,
) -> Result<Watched, BenchError> {
    let pid = child
        .id()
        .ok_or_else(|| BenchError::Invalid("the delivery process exited at once".into()))?;
    let http = reqwest::Client::new();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    crate::services::wait_ready(&http, addr, DEADLINE).await?;
    let ready_secs = started.elapsed().as_secs_f64();
    let rss_ready = memory(pid).map_or(0.0, |m| m.0);
    while farm.recorder().count() < active {
        if started.elapsed() > DEADLINE {
            return Err(BenchError::Timeout(format!(
                "{} of {active} waiting events delivered after {DEADLINE:?}",
                farm.recorder().count()
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let delivering_secs = started.elapsed().as_secs_f64();
    // Let allocations settle (consumers finish their first round) before reading memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss, peak) = memory(pid).unwrap_or((0.0, 0.0));
    let consumers = gauge(&http, port, "postline_delivery_consumers").await;
    Ok((ready_secs, rss_ready, delivering_secs, rss, peak, consumers))
}

async fn publish_probes(
    connection: &Connection,
    common: &CommonConfig,
    factory: &EventFactory,
    active: &[usize],
) -> Result<(), BenchError> {
    let topology = common.topology();
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    topology.declare_core(&channel).await?;
    let exchange = topology.deliver_exchange();
    let mut pending = Vec::with_capacity(active.len());
    for (k, &index) in active.iter().enumerate() {
        let id = SubscriptionId::parse(&subscription_id(index))
            .map_err(|e| BenchError::Invalid(format!("subscription id: {e}")))?;
        topology.declare_subscription(&channel, &id).await?;
        let body = factory.body(k as u64, &format!("bench.s{index}"));
        let envelope = Envelope::from_input_bytes(&body, chrono::Utc::now())
            .map_err(|p| BenchError::Invalid(format!("probe event: {p}")))?;
        let confirm = channel
            .basic_publish(
                exchange.as_str().into(),
                id.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &envelope.to_wire(),
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into())
                    .with_message_id(envelope.id.as_str().into())
                    .with_priority(0),
            )
            .await?;
        pending.push(confirm);
    }
    for confirm in pending {
        match confirm.await? {
            Confirmation::Ack(None) => {}
            other => return Err(BenchError::NotConfirmed(format!("probe: {other:?}"))),
        }
    }
    let _ = channel.close(200, "done".into()).await;
    Ok(())
}

/// `(VmRSS, VmHWM)` of `pid` in MiB.
fn memory(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

async fn gauge(http: &reqwest::Client, port: u16, name: &str) -> Option<f64> {
    let text = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn free_port() -> Result<u16, BenchError> {
    let socket = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| BenchError::io("finding a free port", e))?;
    socket
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| BenchError::io("finding a free port", e))
}

/// SIGTERM (the service's graceful stop), then SIGKILL if it lingers.
async fn stop_child(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(15), child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.kill().await;
}

/// Builds the release `postline-delivery` with cargo (a no-op when it is
/// current) and returns the path cargo reports for it.
pub async fn build_delivery() -> Result<PathBuf, BenchError> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or_else(|| Path::new("."));
    let output = tokio::process::Command::new(&cargo)
        .args([
            "build",
            "--release",
            "-p",
            "postline-delivery",
            "--bin",
            "postline-delivery",
            "--message-format=json",
        ])
        .current_dir(workspace)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .await
        .map_err(|e| BenchError::io(format!("running {cargo} build"), e))?;
    if !output.status.success() {
        return Err(BenchError::Invalid(format!(
            "cargo build -p postline-delivery failed ({})",
            output.status
        )));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["target"]["name"] == "postline-delivery")
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| {
            BenchError::Invalid("cargo did not report the postline-delivery binary".into())
        })
}
