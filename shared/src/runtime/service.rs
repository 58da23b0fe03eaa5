//! The start-up every service shares, as one builder: [`Service::connect`]
//! makes the metrics registry and readiness flags, opens Redis (the
//! subscription store), checks the installation marker and keeps watching
//! it; [`Service::spawn`] adds the service's background tasks;
//! [`Service::serve`] binds the listener, serves the service's router merged
//! with the ops routes (`/healthz`, `/readyz`, `/metrics`), and on shutdown
//! drains HTTP, waits for the service's own work, then stops the background
//! tasks. A service's `lib.rs` only says what is its own; its `main` reads
//! the configuration and calls [`init_process`].

use crate::amqp::topology::Topology;
use crate::redis::keys::RedisKeys;
use crate::redis::subscription_store::{StoreError, SubscriptionStore};
use crate::runtime::config::CommonConfig;
use crate::runtime::http_server::{self, ServerLimits};
use crate::runtime::installation;
use crate::runtime::ops::{self, Readiness};
use axum::Router;
use redis::aio::ConnectionManager;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Whether a service holds broker connections (its readiness needs them,
/// and the installation marker is checked before it starts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    /// The service consumes or publishes: readiness waits for the broker.
    Used,
    /// The service never talks to the broker: only Redis decides readiness.
    Unused,
}

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Redis did not answer.
    #[error("connecting to Redis at {url}: {source}")]
    Redis {
        /// The Redis URL, with its password hidden.
        url: String,
        /// What failed.
        source: StoreError,
    },
    /// The listen address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
}

/// A service being started: what every service has, and the background
/// tasks to stop once it has drained.
pub struct Service {
    name: &'static str,
    namespace: String,
    /// Where the service's metrics register; `/metrics` renders it.
    pub registry: prometheus::Registry,
    /// The `/readyz` flags.
    pub readiness: Arc<Readiness>,
    /// The subscriptions in Redis.
    pub store: SubscriptionStore,
    /// The process's one multiplexed Redis connection.
    pub redis: ConnectionManager,
    /// The Redis keys of the namespace.
    pub keys: RedisKeys,
    /// The AMQP names of the namespace.
    pub topology: Topology,
    background: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// Set by [`Service::serve`]; a service dropped before (its start
    /// failed) stops its background tasks.
    served: bool,
}

impl Drop for Service {
    fn drop(&mut self) {
        if !self.served {
            self.background.cancel();
        }
    }
}

/// A started service.
pub struct Running {
    /// Where its HTTP endpoints listen (useful with port 0).
    pub addr: SocketAddr,
    /// Completes when the service has shut down.
    pub done: JoinHandle<()>,
}

impl Service {
    /// Opens Redis and checks the installation marker (for a service using
    /// the broker, before it reads the catalog or declares a queue), then
    /// keeps watching Redis and the marker until the service stops.
    pub async fn connect(
        name: &'static str,
        common: &CommonConfig,
        broker: Broker,
        shutdown: &CancellationToken,
    ) -> Result<Self, StartError> {
        let readiness = Readiness::new();
        let keys = common.keys();
        let topology = common.topology();
        let (store, redis) =
            SubscriptionStore::connect(&common.redis_url, keys.clone(), common.encryption.clone())
                .await
                .map_err(|source| StartError::Redis {
                    url: redacted_url(&common.redis_url),
                    source,
                })?;
        readiness.set_redis(true);
        match broker {
            Broker::Used => {
                // Is the state in Redis this installation's (or a fresh
                // install, then marked)?
                installation::check_at_start(
                    &redis,
                    &keys,
                    &common.amqp_url,
                    &topology,
                    &readiness,
                    shutdown,
                )
                .await;
            }
            Broker::Unused => readiness.set_broker(true),
        }
        let background = CancellationToken::new();
        // A service holding no queue still reports a lost state, so the
        // whole installation shows unready.
        let watch = tokio::spawn(installation::watch(
            redis.clone(),
            keys.clone(),
            common.amqp_url.clone(),
            topology.clone(),
            readiness.clone(),
            background.clone(),
        ));
        Ok(Self {
            name,
            namespace: common.namespace.clone(),
            registry: prometheus::Registry::new(),
            readiness,
            store,
            redis,
            keys,
            topology,
            background,
            tasks: vec![watch],
            served: false,
        })
    }

    /// Cancelled once the service has drained: background tasks stop on it.
    pub fn background(&self) -> CancellationToken {
        self.background.clone()
    }

    /// Adds a background task, awaited after [`Self::background`] is cancelled.
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push(tokio::spawn(task));
    }

    /// Adds a task already running, awaited like [`Self::spawn`]'s.
    pub fn adopt<T: Send + 'static>(&mut self, task: JoinHandle<T>) {
        self.tasks.push(tokio::spawn(async move {
            let _ = task.await;
        }));
    }

    /// Binds `listen` and serves `api` with the ops routes until `shutdown`;
    /// `work` (the service's own, e.g. consumers finishing what they hold)
    /// runs beside the server and is given a token cancelled once HTTP has
    /// drained. When both are done the background tasks stop.
    pub async fn serve<W, F>(
        mut self,
        listen: SocketAddr,
        api: Router,
        limits: ServerLimits,
        shutdown: CancellationToken,
        work: W,
    ) -> Result<Running, StartError>
    where
        W: FnOnce(CancellationToken) -> F,
        F: Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: listen,
            source,
        })?;
        tracing::info!(%addr, namespace = %self.namespace, service = self.name, "listening");
        self.served = true;
        let app = api.merge(ops::router(self.readiness.clone(), self.registry.clone()));
        let http_drained = CancellationToken::new();
        let work = work(http_drained.clone());
        let (name, background) = (self.name, self.background.clone());
        let tasks = std::mem::take(&mut self.tasks);
        let done = tokio::spawn(async move {
            let http = async {
                http_server::serve(listener, app, limits, shutdown).await;
                http_drained.cancel();
            };
            tokio::join!(http, work);
            background.cancel();
            for task in tasks {
                let _ = task.await;
            }
            tracing::info!(service = name, "stopped");
        });
        Ok(Running { addr, done })
    }
}

/// `url` without its password, for messages.
fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "<unparsable URL>".to_string(),
    }
}

/// What a service's `main` does once its configuration is read: sets up
/// logging and warns about development defaults still in use.
pub fn init_process(common: &CommonConfig) {
    crate::runtime::telemetry::init(common.log_format);
    common.warn_about_defaults();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_password_never_reaches_a_message() {
        let shown = redacted_url("redis://user:hunter2@redis.internal:6379/0");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redis.internal"), "{shown}");
        assert_eq!(
            redacted_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
