//! Ingest and delivery running in this process, each on a Tokio runtime of
//! its own (named threads, so the CPU each uses can be told apart), started
//! through their library `start` functions exactly as their binaries do.

use crate::error::BenchError;
use postline_delivery::DeliveryConfig;
use postline_ingest::IngestConfig;
use postline_shared::model::secret::Secret;
use postline_shared::runtime::config::ServiceConfig;
use postline_shared::CommonConfig;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a service may take to report ready: ingest declares every
/// registered subscription's queue first (f's intake run registers 10,000).
const READY_DEADLINE: Duration = Duration::from_secs(300);

/// Service settings a run may change (`None` keeps the service's default).
#[derive(Debug, Clone, Default)]
pub struct Tuning {
    /// Ingest's AMQP intake prefetch.
    pub intake_prefetch: Option<u16>,
    /// Delivery's prefetch per subscription consumer.
    pub delivery_prefetch: Option<u16>,
    /// Worker threads of each service's runtime (default 2, the machine's cores).
    pub worker_threads: Option<usize>,
}

/// Producer token the bench's ingest accepts.
pub const PRODUCER_TOKEN: &str = "bench-producer-token";

struct Running {
    runtime: Option<tokio::runtime::Runtime>,
    cancel: CancellationToken,
    done: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

impl Running {
    fn new(
        runtime: tokio::runtime::Runtime,
        cancel: CancellationToken,
        done: JoinHandle<()>,
        addr: SocketAddr,
    ) -> Self {
        Self {
            runtime: Some(runtime),
            cancel,
            done: Some(done),
            addr,
        }
    }

    async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(done) = self.done.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), done).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.cancel();
        // Whatever is left goes now; shutting down in the background is the
        // only way allowed from inside another runtime (a plain drop panics).
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Ingest and delivery of one namespace.
pub struct Services {
    ingest: Running,
    delivery: Running,
}

fn runtime(name: &str, threads: usize) -> Result<tokio::runtime::Runtime, BenchError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(|e| BenchError::io(format!("building the {name} runtime"), e))
}

impl Services {
    /// Starts both services for `common` and waits until both report ready.
    pub async fn start(common: &CommonConfig, tuning: &Tuning) -> Result<Self, BenchError> {
        let threads = tuning.worker_threads.unwrap_or(2);
        let mut ingest_config = IngestConfig::local(common.clone());
        ingest_config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        ingest_config.admin_token = Secret::new(format!("bench-admin-{}", uuid::Uuid::new_v4()));
        ingest_config.producer_token = Secret::new(PRODUCER_TOKEN);
        if let Some(prefetch) = tuning.intake_prefetch {
            ingest_config.intake_prefetch = prefetch;
        }
        let mut delivery_config = DeliveryConfig::local(common.clone());
        delivery_config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        if let Some(prefetch) = tuning.delivery_prefetch {
            delivery_config.prefetch = prefetch;
        }

        let ingest_runtime = runtime("pl-ingest", threads)?;
        let cancel = CancellationToken::new();
        let token = cancel.clone();
        let started = ingest_runtime
            .spawn(async move { postline_ingest::start(ingest_config, token).await })
            .await
            .map_err(|e| service_error("ingest", e))?;
        let ingest = match started {
            Ok(running) => Running::new(ingest_runtime, cancel, running.done, running.addr),
            Err(error) => {
                ingest_runtime.shutdown_background();
                return Err(service_error("ingest", format!("{error:#}")));
            }
        };

        let delivery_runtime = match runtime("pl-delivery", threads) {
            Ok(runtime) => runtime,
            Err(error) => {
                ingest.stop().await;
                return Err(error);
            }
        };
        let cancel = CancellationToken::new();
        let token = cancel.clone();
        let started = delivery_runtime
            .spawn(async move { postline_delivery::start(delivery_config, token).await })
            .await
            .map_err(|e| service_error("delivery", e));
        let delivery = match started {
            Ok(Ok(running)) => Running::new(delivery_runtime, cancel, running.done, running.addr),
            Ok(Err(error)) => {
                delivery_runtime.shutdown_background();
                ingest.stop().await;
                return Err(service_error("delivery", format!("{error:#}")));
            }
            Err(error) => {
                delivery_runtime.shutdown_background();
                ingest.stop().await;
                return Err(error);
            }
        };
        let services = Self { ingest, delivery };
        let http = reqwest::Client::new();
        for (name, addr) in [
            ("ingest", services.ingest.addr),
            ("delivery", services.delivery.addr),
        ] {
            if let Err(error) = wait_ready(&http, addr, READY_DEADLINE).await {
                services.stop().await;
                return Err(service_error(name, error));
            }
        }
        Ok(services)
    }

    /// Base URL of the ingest API.
    pub fn ingest_url(&self) -> String {
        format!("http://{}", self.ingest.addr)
    }

    /// Base URL of delivery's ops endpoints.
    pub fn delivery_url(&self) -> String {
        format!("http://{}", self.delivery.addr)
    }

    /// Stops both services (intake first, so nothing new enters delivery's queues).
    pub async fn stop(self) {
        self.ingest.stop().await;
        self.delivery.stop().await;
    }
}

fn service_error(service: &'static str, message: impl std::fmt::Display) -> BenchError {
    BenchError::Service {
        service,
        message: message.to_string(),
    }
}

/// Polls `http://addr/readyz` until it answers 200; returns how long that took.
pub async fn wait_ready(
    http: &reqwest::Client,
    addr: SocketAddr,
    deadline: Duration,
) -> Result<Duration, BenchError> {
    let url = format!("http://{addr}/readyz");
    let started = Instant::now();
    loop {
        if let Ok(response) = http.get(&url).send().await {
            if response.status().is_success() {
                return Ok(started.elapsed());
            }
        }
        if started.elapsed() > deadline {
            return Err(BenchError::Timeout(format!(
                "{url} not ready after {deadline:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
