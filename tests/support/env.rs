//! The test environment: a unique namespace, the ingest, token and delivery
//! services started in-process with fast settings, the tests' own AMQP and
//! Redis connections, and the clean-up that removes every queue, exchange and
//! key of the namespace afterwards (also, best effort, when a test panics).

use crate::amqp::{AmqpClient, GotMessage};
use crate::{logs, namespace, wait, DEADLINE};
use postline_delivery::DeliveryConfig;
use postline_ingest::IngestConfig;
use postline_shared::amqp::topology::{QueueType, Topology};
use postline_shared::model::ids::SubscriptionId;
use postline_shared::model::secret::Secret;
use postline_shared::outbound::OutboundConfig;
use postline_shared::redis::keys::RedisKeys;
use postline_shared::redis::subscription_store::SubscriptionStore;
use postline_shared::runtime::config::ServiceConfig;
use postline_shared::CommonConfig;
use postline_token::TokenConfig;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The range the test receivers live in, allowed for outbound calls in
/// every test environment unless a test clears the allow-list.
pub const LOOPBACK_V4: &str = "127.0.0.0/8";

/// Settings for a [`TestEnv`], adjustable before [`TestEnvBuilder::start`].
pub struct TestEnvBuilder {
    /// The namespace (already unique).
    pub namespace: String,
    /// Ingest settings (listen on port 0, random tokens).
    pub ingest: IngestConfig,
    /// Delivery settings (port 0, 20 ms retry pause, 3 in-place retries).
    pub delivery: DeliveryConfig,
    /// Token service settings (port 0, 500 ms token endpoint timeout, 1 s expiry margin).
    pub token: TokenConfig,
    /// The broker the test itself talks to (publishing, inspecting queues),
    /// kept apart from the services' URLs so a test can route those through a
    /// proxy; like `POSTLINE_AMQP_URL`, a comma-separated list of nodes.
    pub broker_url: String,
    /// Whether `start` also starts delivery (default true).
    pub with_delivery: bool,
}

impl Default for TestEnvBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TestEnvBuilder {
    /// Fast local settings in a fresh namespace.
    pub fn new() -> Self {
        let namespace = namespace::unique();
        let mut common = CommonConfig::local(&namespace);
        // The same variables as the services, so the suite can run against another broker or Redis.
        if let Ok(urls) = std::env::var("POSTLINE_AMQP_URL") {
            common.amqp_url = urls
                .parse()
                .unwrap_or_else(|error| panic!("POSTLINE_AMQP_URL: {error}"));
        }
        if let Ok(url) = std::env::var("POSTLINE_REDIS_URL") {
            common.redis_url = url;
        }
        // Receivers and token servers in tests are on loopback, which the
        // outbound guard refuses unless allowed, as in production.
        common.outbound.allow_private_networks = vec![LOOPBACK_V4.parse().expect("a CIDR")];
        let broker_url = common.amqp_url.to_env_value();
        let mut ingest = IngestConfig::local(common.clone());
        ingest.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        ingest.admin_token = Secret::new(namespace::random_token("admin"));
        ingest.producer_token = Secret::new(namespace::random_token("producer"));
        let mut token = TokenConfig::local(common.clone());
        token.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        token.fetch_timeout = Duration::from_millis(500);
        token.expiry_margin = Duration::from_secs(1);
        let mut delivery = DeliveryConfig::local(common);
        delivery.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            namespace,
            ingest,
            delivery,
            token,
            broker_url,
            with_delivery: true,
        }
    }

    /// Does not start delivery (for tests of intake alone).
    pub fn without_delivery(mut self) -> Self {
        self.with_delivery = false;
        self
    }

    /// Changes the outbound guard of every service (ingest's PINGs,
    /// delivery, the token service) alike.
    pub fn outbound(mut self, change: impl Fn(&mut OutboundConfig)) -> Self {
        change(&mut self.ingest.common.outbound);
        change(&mut self.delivery.common.outbound);
        change(&mut self.token.common.outbound);
        self
    }

    /// Points every service (and the test's own Redis connection) at
    /// another Redis, e.g. a [`crate::redis_server::PrivateRedis`].
    pub fn redis_url(mut self, url: &str) -> Self {
        self.ingest.common.redis_url = url.to_string();
        self.delivery.common.redis_url = url.to_string();
        self.token.common.redis_url = url.to_string();
        self
    }

    /// Declares every queue of the namespace as `queue_type` (the services'
    /// `POSTLINE_QUEUE_TYPE`).
    pub fn queue_type(mut self, queue_type: QueueType) -> Self {
        self.ingest.common.queue_type = queue_type;
        self.delivery.common.queue_type = queue_type;
        self.token.common.queue_type = queue_type;
        self
    }

    /// Points the services and the test itself at the broker nodes `urls`
    /// (comma-separated, like `POSTLINE_AMQP_URL`).
    pub fn brokers(mut self, urls: &str) -> Self {
        let nodes: postline_shared::amqp::broker_nodes::BrokerNodes = urls
            .parse()
            .unwrap_or_else(|error| panic!("broker URLs {urls}: {error}"));
        self.ingest.common.amqp_url = nodes.clone();
        self.delivery.common.amqp_url = nodes.clone();
        self.token.common.amqp_url = nodes;
        self.broker_url = urls.to_string();
        self
    }

    /// Sets the largest accepted event (both intakes).
    pub fn max_event_bytes(mut self, bytes: usize) -> Self {
        self.ingest.max_event_bytes = bytes;
        self
    }

    /// Starts ingest, the token service (and delivery unless disabled) and waits until ready.
    pub async fn start(self) -> TestEnv {
        logs::init();
        let common = self.ingest.common.clone();
        let amqp = AmqpClient::connect(&self.broker_url)
            .await
            .expect("the tests need RabbitMQ at the default URL (scripts/test starts it)");
        let redis = redis::Client::open(common.redis_url.as_str())
            .expect("redis URL")
            .get_connection_manager()
            .await
            .expect("the tests need Redis at the default URL (scripts/test starts it)");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("HTTP client");
        let mut env = TestEnv {
            namespace: self.namespace,
            topology: common.topology(),
            keys: common.keys(),
            common,
            ingest_config: self.ingest,
            delivery_config: self.delivery,
            token_config: self.token,
            ingest_url: String::new(),
            http,
            amqp,
            redis,
            ingest: None,
            delivery: None,
            replicas: Vec::new(),
            token_services: Vec::new(),
            crashed: Vec::new(),
            subscription_ids: Mutex::new(BTreeSet::new()),
            extra_queues: Mutex::new(Vec::new()),
            rejected: Mutex::new(Vec::new()),
            cleaned: false,
        };
        // The token service first: ingest's PINGs need it as delivery does.
        let token = env.start_token_service().await;
        env.ingest_config.token_url = format!("http://{token}");
        env.delivery_config.token_url = format!("http://{token}");
        env.start_ingest().await;
        if self.with_delivery {
            env.start_delivery().await;
        }
        env
    }
}

/// A running service: its stop token and the task that ends when it stopped.
struct Service {
    cancel: CancellationToken,
    done: JoinHandle<()>,
    addr: SocketAddr,
}

/// A delivery service running on a Tokio runtime of its own, so that a
/// crash can be simulated by shutting that runtime down: every task it
/// spawned dies at once and its sockets close, as when a process is killed,
/// whatever the service's internal task structure.
struct DeliveryService {
    service: Service,
    runtime: tokio::runtime::Runtime,
}

impl DeliveryService {
    /// Kills everything the service runs, without any shutdown step.
    fn kill(self) -> CancellationToken {
        self.service.done.abort();
        self.runtime.shutdown_background();
        self.service.cancel
    }
}

/// One test's world. Call [`TestEnv::cleanup`] at the end of the test.
pub struct TestEnv {
    /// The namespace of every AMQP name and Redis key of this test.
    pub namespace: String,
    /// Shared settings.
    pub common: CommonConfig,
    /// AMQP names.
    pub topology: Topology,
    /// Redis keys.
    pub keys: RedisKeys,
    /// Ingest settings as started.
    pub ingest_config: IngestConfig,
    /// Delivery settings used by every (re)start.
    pub delivery_config: DeliveryConfig,
    /// Token service settings used by every instance.
    pub token_config: TokenConfig,
    pub(crate) ingest_url: String,
    pub(crate) http: reqwest::Client,
    pub(crate) amqp: AmqpClient,
    redis: ConnectionManager,
    ingest: Option<Service>,
    delivery: Option<DeliveryService>,
    /// More delivery replicas, beside `delivery`.
    replicas: Vec<DeliveryService>,
    /// Token service instances; delivery uses the first.
    token_services: Vec<Service>,
    /// Stop tokens of aborted deliveries, cancelled at clean-up.
    crashed: Vec<CancellationToken>,
    pub(crate) subscription_ids: Mutex<BTreeSet<String>>,
    extra_queues: Mutex<Vec<String>>,
    rejected: Mutex<Vec<GotMessage>>,
    cleaned: bool,
}

impl TestEnv {
    /// A builder with fast settings in a fresh namespace.
    pub fn builder() -> TestEnvBuilder {
        TestEnvBuilder::new()
    }

    /// Ingest and delivery with the default test settings.
    pub async fn start() -> Self {
        TestEnvBuilder::new().start().await
    }

    /// Base URL of the ingest API, e.g. `http://127.0.0.1:40123`.
    pub fn ingest_url(&self) -> &str {
        &self.ingest_url
    }

    /// The admin token.
    pub fn admin_token(&self) -> &str {
        self.ingest_config.admin_token.expose()
    }

    /// The producer token.
    pub fn producer_token(&self) -> &str {
        self.ingest_config.producer_token.expose()
    }

    /// The tests' own AMQP client.
    pub fn amqp(&self) -> &AmqpClient {
        &self.amqp
    }

    /// The tests' own Redis connection.
    pub fn redis(&self) -> ConnectionManager {
        self.redis.clone()
    }

    /// Stops ingest cleanly and starts it again with [`TestEnv::ingest_config`]
    /// as it is now (e.g. another queue type).
    pub async fn restart_ingest(&mut self) {
        if let Some(ingest) = self.ingest.take() {
            ingest.cancel.cancel();
            if tokio::time::timeout(DEADLINE, ingest.done).await.is_err() {
                panic!("ingest did not stop within {DEADLINE:?}");
            }
        }
        self.start_ingest().await;
    }

    async fn start_ingest(&mut self) {
        let cancel = CancellationToken::new();
        let running = postline_ingest::start(self.ingest_config.clone(), cancel.clone())
            .await
            .expect("ingest failed to start");
        self.ingest_url = format!("http://{}", running.addr);
        wait_ready(&self.http, "ingest", running.addr).await;
        self.ingest = Some(Service {
            cancel,
            done: running.done,
            addr: running.addr,
        });
    }

    /// Starts a token service instance (the first one started is the one
    /// delivery uses) and waits until it is ready; returns where it listens.
    pub async fn start_token_service(&mut self) -> SocketAddr {
        let cancel = CancellationToken::new();
        let running = postline_token::start(self.token_config.clone(), cancel.clone())
            .await
            .expect("token service failed to start");
        wait_ready(&self.http, "token", running.addr).await;
        self.token_services.push(Service {
            cancel,
            done: running.done,
            addr: running.addr,
        });
        running.addr
    }

    /// Base URLs of the running token service instances, the delivery one first.
    pub fn token_service_urls(&self) -> Vec<String> {
        self.token_services
            .iter()
            .map(|s| format!("http://{}", s.addr))
            .collect()
    }

    /// The tests' HTTP client (30 s timeout).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Starts (another) delivery service, on a runtime of its own, and waits
    /// until it reports ready.
    pub async fn start_delivery(&mut self) {
        assert!(self.delivery.is_none(), "delivery is already running");
        let delivery = self.spawn_delivery().await;
        self.delivery = Some(delivery);
    }

    /// Starts one more delivery replica beside the running one (both then
    /// consume the same subscription queues, as replicas in production do).
    pub async fn start_replica(&mut self) {
        let replica = self.spawn_delivery().await;
        self.replicas.push(replica);
    }

    async fn spawn_delivery(&self) -> DeliveryService {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("{}-delivery", self.namespace))
            .enable_all()
            .build()
            .expect("a runtime for delivery");
        let cancel = CancellationToken::new();
        let (config, token) = (self.delivery_config.clone(), cancel.clone());
        let started = runtime
            .spawn(async move { postline_delivery::start(config, token).await })
            .await
            .expect("delivery's start panicked");
        let running = match started {
            Ok(running) => running,
            Err(error) => {
                runtime.shutdown_background();
                panic!("delivery failed to start: {error:#}");
            }
        };
        let addr = running.addr;
        let service = Service {
            cancel,
            done: running.done,
            addr,
        };
        wait_ready(&self.http, "delivery", addr).await;
        DeliveryService { service, runtime }
    }

    /// Where the running delivery serves `/healthz`, `/readyz` and `/metrics`.
    pub fn delivery_addr(&self) -> Option<SocketAddr> {
        self.delivery.as_ref().map(|d| d.service.addr)
    }

    /// Stops delivery cleanly: cancels it and waits for `done`.
    pub async fn stop_delivery(&mut self) {
        let delivery = self.delivery.take().expect("delivery is not running");
        delivery.service.cancel.cancel();
        let stopped = tokio::time::timeout(DEADLINE, delivery.service.done).await;
        // Whatever is left (nothing, if the service owns its tasks) goes now.
        delivery.runtime.shutdown_background();
        match stopped {
            Ok(Ok(())) => {}
            Ok(Err(error)) => panic!("delivery task failed while stopping: {error}"),
            Err(_) => panic!("delivery did not stop within {DEADLINE:?} after cancel"),
        }
    }

    /// Simulates a crash of delivery: aborts its `done` task and kills every
    /// task it runs (its runtime is shut down), with no shutdown step, so its
    /// connections drop with messages unacked.
    pub fn abort_delivery(&mut self) {
        let delivery = self.delivery.take().expect("delivery is not running");
        self.crashed.push(delivery.kill());
    }

    /// Remembers a queue to delete at clean-up (subscription queues created
    /// through the API are tracked already).
    pub fn track_queue(&self, queue: &str) {
        lock(&self.extra_queues).push(queue.to_string());
    }

    /// Publishes raw bytes to the ingest exchange (confirmed).
    pub async fn publish_amqp(&self, routing_key: &str, body: &[u8]) {
        self.amqp
            .publish(&self.topology.ingest_exchange(), routing_key, body)
            .await
            .expect("publishing to the ingest exchange");
    }

    /// Publishes events (JSON values with a `type`) to the ingest exchange,
    /// in order, routing key = type; returns once all are confirmed.
    pub async fn publish_events_amqp(&self, events: &[serde_json::Value]) {
        let messages = events.iter().map(|event| {
            let routing_key = event["type"].as_str().unwrap_or("untyped").to_string();
            (routing_key, serde_json::to_vec(event).expect("event JSON"))
        });
        self.amqp
            .publish_many(&self.topology.ingest_exchange(), messages)
            .await
            .expect("publishing events to the ingest exchange");
    }

    /// Every message dead-lettered to the rejected queue so far (taken off
    /// the queue and kept here, in arrival order).
    pub async fn rejected_messages(&self) -> Vec<GotMessage> {
        let fresh = self
            .amqp
            .drain(&self.topology.rejected_queue())
            .await
            .expect("reading the rejected queue");
        let mut all = lock(&self.rejected);
        all.extend(fresh);
        all.clone()
    }

    /// Waits until at least `n` messages were rejected; returns them all.
    pub async fn wait_rejected(&self, n: usize) -> Vec<GotMessage> {
        wait::until(&format!("{n} rejected messages"), DEADLINE, || async move {
            let all = self.rejected_messages().await;
            if all.len() >= n {
                Ok(all)
            } else {
                Err(format!("{} rejected: {:?}", all.len(), summarize(&all)))
            }
        })
        .await
    }

    /// The depth of a queue, `None` if it does not exist.
    pub async fn queue_depth(&self, queue: &str) -> Option<u32> {
        self.amqp.queue_depth(queue).await.expect("passive declare")
    }

    /// Whether a queue exists (passive declare).
    pub async fn queue_exists(&self, queue: &str) -> bool {
        self.queue_depth(queue).await.is_some()
    }

    /// Waits until `queue` holds exactly `n` ready messages.
    pub async fn wait_queue_depth(&self, queue: &str, n: u32) {
        wait::until(
            &format!("{n} messages in {queue}"),
            DEADLINE,
            || async move {
                match self.queue_depth(queue).await {
                    Some(depth) if depth == n => Ok(()),
                    other => Err(format!("depth {other:?}")),
                }
            },
        )
        .await
    }

    /// Takes every message from a subscription's queue (only meaningful
    /// while delivery is not running).
    pub async fn drain_subscription_queue(&self, subscription_id: &str) -> Vec<GotMessage> {
        self.amqp
            .drain(
                &self
                    .topology
                    .subscription_queue(&crate::sub_id(subscription_id)),
            )
            .await
            .expect("draining a subscription queue")
    }

    /// Every Redis key of the namespace.
    pub async fn redis_keys(&self) -> Vec<String> {
        scan_keys(&mut self.redis(), &self.keys.all())
            .await
            .expect("SCAN")
    }

    /// The subscription as stored in Redis, read back (secrets opened) as the services do.
    pub async fn stored_subscription(&self, id: &str) -> postline_shared::Subscription {
        let id = postline_shared::model::ids::SubscriptionId::parse(id)
            .unwrap_or_else(|e| panic!("subscription id {id}: {e}"));
        self.store()
            .get(&id)
            .await
            .unwrap_or_else(|e| panic!("reading subscription {id}: {e}"))
    }

    /// A subscription store on this namespace, with the services' keys.
    pub fn store(&self) -> SubscriptionStore {
        let client = redis::Client::open(self.common.redis_url.as_str()).expect("redis URL");
        SubscriptionStore::new(
            self.redis(),
            client,
            self.keys.clone(),
            self.common.encryption.clone(),
        )
    }

    /// Everything Redis holds under the namespace, as text: each key with its
    /// value (`GET`, `HGETALL`, `SMEMBERS`, `LRANGE`, `ZRANGE` or `XRANGE` by
    /// type), as an attacker with a dump would see it.
    pub async fn redis_dump(&self) -> String {
        let mut redis = self.redis();
        let mut dump = String::new();
        let mut keys = self.redis_keys().await;
        keys.sort();
        for key in keys {
            let kind: String = redis::cmd("TYPE")
                .arg(&key)
                .query_async(&mut redis)
                .await
                .expect("TYPE");
            let value: redis::Value = match kind.as_str() {
                "string" => redis::cmd("GET").arg(&key).query_async(&mut redis).await,
                "hash" => {
                    redis::cmd("HGETALL")
                        .arg(&key)
                        .query_async(&mut redis)
                        .await
                }
                "set" => {
                    redis::cmd("SMEMBERS")
                        .arg(&key)
                        .query_async(&mut redis)
                        .await
                }
                "list" => {
                    redis::cmd("LRANGE")
                        .arg(&key)
                        .arg(0)
                        .arg(-1)
                        .query_async(&mut redis)
                        .await
                }
                "zset" => {
                    redis::cmd("ZRANGE")
                        .arg(&key)
                        .arg(0)
                        .arg(-1)
                        .query_async(&mut redis)
                        .await
                }
                "stream" => {
                    redis::cmd("XRANGE")
                        .arg(&key)
                        .arg("-")
                        .arg("+")
                        .query_async(&mut redis)
                        .await
                }
                // Expired between SCAN and TYPE.
                _ => Ok(redis::Value::Nil),
            }
            .unwrap_or_else(|e| panic!("reading {key}: {e}"));
            dump.push_str(&format!("{key} ({kind}) = {}\n", show_value(&value)));
        }
        dump
    }

    /// Stops the services and deletes the namespace's queues, exchanges and Redis keys.
    pub async fn cleanup(mut self) {
        self.cleaned = true;
        let deliveries = self
            .delivery
            .take()
            .into_iter()
            .chain(self.replicas.drain(..));
        for delivery in deliveries.collect::<Vec<_>>() {
            delivery.service.cancel.cancel();
            if tokio::time::timeout(DEADLINE, delivery.service.done)
                .await
                .is_err()
            {
                eprintln!("{}: delivery did not stop in time", self.namespace);
            }
            delivery.runtime.shutdown_background();
        }
        if let Some(ingest) = self.ingest.take() {
            ingest.cancel.cancel();
            if tokio::time::timeout(DEADLINE, ingest.done).await.is_err() {
                eprintln!("{}: ingest did not stop in time", self.namespace);
            }
        }
        for token in self.token_services.drain(..) {
            token.cancel.cancel();
            if tokio::time::timeout(DEADLINE, token.done).await.is_err() {
                eprintln!("{}: a token service did not stop in time", self.namespace);
            }
        }
        for token in &self.crashed {
            token.cancel();
        }
        let plan = self.purge_plan().await;
        if let Err(error) = purge(&self.common, &plan).await {
            eprintln!("{}: clean-up incomplete: {error:#}", self.namespace);
        }
        self.amqp.close().await;
    }

    async fn purge_plan(&self) -> PurgePlan {
        let mut subscriptions = lock(&self.subscription_ids).clone();
        let stored: Vec<String> = self
            .redis()
            .smembers(self.keys.subscription_ids())
            .await
            .unwrap_or_default();
        subscriptions.extend(stored);
        PurgePlan {
            subscriptions,
            extra_queues: lock(&self.extra_queues).clone(),
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        // The test panicked (or forgot to clean up): stop what runs here and
        // purge the namespace from a thread of its own.
        for delivery in self
            .delivery
            .take()
            .into_iter()
            .chain(self.replicas.drain(..))
        {
            delivery.kill().cancel();
        }
        if let Some(ingest) = self.ingest.take() {
            ingest.cancel.cancel();
            ingest.done.abort();
        }
        for token in self.token_services.drain(..) {
            token.cancel.cancel();
            token.done.abort();
        }
        for token in &self.crashed {
            token.cancel();
        }
        let plan = PurgePlan {
            subscriptions: lock(&self.subscription_ids).clone(),
            extra_queues: lock(&self.extra_queues).clone(),
        };
        let common = self.common.clone();
        let purger = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(15), purge(&common, &plan)).await;
            });
        });
        let _ = purger.join();
    }
}

struct PurgePlan {
    subscriptions: BTreeSet<String>,
    extra_queues: Vec<String>,
}

async fn purge(common: &CommonConfig, plan: &PurgePlan) -> anyhow::Result<()> {
    let topology = common.topology();
    let mut redis = redis::Client::open(common.redis_url.as_str())?
        .get_connection_manager()
        .await?;
    // Subscription ids also stored in Redis by a test that bypassed the API.
    let mut subscriptions = plan.subscriptions.clone();
    let stored: Vec<String> = redis
        .smembers(common.keys().subscription_ids())
        .await
        .unwrap_or_default();
    subscriptions.extend(stored);

    let amqp = AmqpClient::connect(&common.amqp_url.to_env_value()).await?;
    let mut queues = vec![topology.ingest_queue(), topology.rejected_queue()];
    // Only a well-formed id can have a queue: a malformed one (a test's
    // refused create, or planted in Redis) is skipped.
    queues.extend(
        subscriptions
            .iter()
            .filter_map(|id| SubscriptionId::parse(id).ok())
            .map(|id| topology.subscription_queue(&id)),
    );
    queues.extend(plan.extra_queues.iter().cloned());
    for queue in &queues {
        amqp.delete_queue(queue).await?;
    }
    for exchange in [
        topology.ingest_exchange(),
        topology.deliver_exchange(),
        topology.delay_exchange(),
    ] {
        amqp.delete_exchange(&exchange).await?;
    }
    amqp.close().await;

    let keys = scan_keys(&mut redis, &common.keys().all()).await?;
    for chunk in keys.chunks(500) {
        let _: () = redis.del(chunk).await?;
    }
    Ok(())
}

async fn scan_keys(
    redis: &mut ConnectionManager,
    pattern: &str,
) -> redis::RedisResult<Vec<String>> {
    use futures::StreamExt;
    let mut found = Vec::new();
    let mut iter = redis.scan_match::<_, String>(pattern).await?;
    while let Some(key) = iter.next().await {
        found.push(key?);
    }
    Ok(found)
}

async fn wait_ready(http: &reqwest::Client, service: &str, addr: SocketAddr) {
    let url = format!("http://{addr}/readyz");
    let url = url.as_str();
    wait::until(
        &format!("{service} to be ready at {url}"),
        DEADLINE,
        || async move {
            match http.get(url).send().await {
                Ok(response) if response.status().is_success() => Ok(()),
                Ok(response) => {
                    let status = response.status();
                    Err(format!(
                        "{status} {}",
                        response.text().await.unwrap_or_default()
                    ))
                }
                Err(error) => Err(error.to_string()),
            }
        },
    )
    .await
}

/// A Redis reply as text, bulk strings decoded lossily as UTF-8.
fn show_value(value: &redis::Value) -> String {
    match value {
        redis::Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        redis::Value::SimpleString(text) => text.clone(),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            let shown: Vec<String> = items.iter().map(show_value).collect();
            format!("[{}]", shown.join(", "))
        }
        redis::Value::Map(pairs) => {
            let shown: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}: {}", show_value(k), show_value(v)))
                .collect();
            format!("{{{}}}", shown.join(", "))
        }
        other => format!("{other:?}"),
    }
}

fn summarize(messages: &[GotMessage]) -> Vec<String> {
    messages
        .iter()
        .map(|m| {
            format!(
                "{:?}: {}",
                m.header("postline-reject-code"),
                String::from_utf8_lossy(&m.body)
                    .chars()
                    .take(60)
                    .collect::<String>()
            )
        })
        .collect()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
