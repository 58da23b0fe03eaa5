//! Postline's benchmark: how close does the whole pipeline get to the
//! broker's own limit on this machine?
//!
//! A run first measures the broker's one-hop ceiling (persistent, confirmed,
//! acked messages through one queue, the same size as the events), then drives
//! scenarios through the real ingest and delivery services (in-process, each in
//! a namespace of its own) to fast local receivers, and reports throughput, its
//! ratio to the ceiling and end-to-end latency. Every pipeline run is checked:
//! each event must arrive exactly once at each subscription that wants it, and
//! in order for strict subscriptions; a run that loses, duplicates or reorders
//! fails, however fast it was.
//!
//! The binary (`cargo run --release -p postline-bench -- --help`) prints a
//! table and writes JSON; the library is what the test suite calls to run a
//! tiny scenario and assert the check passes.

#![warn(missing_docs)]

pub mod ceiling;
pub mod check;
pub mod cleanup;
pub mod cpu;
pub mod error;
pub mod event;
pub mod options;
pub mod pipeline;
pub mod producer;
pub mod receiver;
pub mod redis_stats;
pub mod report;
pub mod rounds;
pub mod services;
pub mod startup;
pub mod stats;

pub use error::BenchError;
pub use options::{Options, Scenario};
pub use pipeline::{Intake, Layout, PipelineSpec};

/// Where the bench finds RabbitMQ and Redis, and what every run shares.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Broker URL (`POSTLINE_AMQP_URL`, default local guest).
    pub amqp_url: String,
    /// Redis URL (`POSTLINE_REDIS_URL`, default local).
    pub redis_url: String,
    /// The services' queue type (classic, quorum on a cluster).
    pub queue_type: postline_shared::amqp::topology::QueueType,
}

impl Endpoints {
    /// The services' own defaults, overridden by the same environment variables.
    pub fn from_env() -> Self {
        let var = |name: &str, default: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| default.to_string())
        };
        Self {
            amqp_url: var(
                "POSTLINE_AMQP_URL",
                postline_shared::runtime::config::DEFAULT_AMQP_URL,
            ),
            redis_url: var(
                "POSTLINE_REDIS_URL",
                postline_shared::runtime::config::DEFAULT_REDIS_URL,
            ),
            queue_type: postline_shared::amqp::topology::QueueType::Classic,
        }
    }

    /// The first broker node: what the bench's own connections (producer,
    /// ceiling, clean-up) use; the services get every node.
    pub fn first_node(&self) -> &str {
        self.amqp_url
            .split(',')
            .next()
            .unwrap_or(&self.amqp_url)
            .trim()
    }

    /// The same Redis, with the broker nodes `urls` and quorum queues.
    pub fn cluster(&self, urls: &str) -> Self {
        Self {
            amqp_url: urls.to_string(),
            redis_url: self.redis_url.clone(),
            queue_type: postline_shared::amqp::topology::QueueType::Quorum,
        }
    }
}

impl Endpoints {
    /// The services' shared settings for one measurement in `namespace`:
    /// this queue type, and outbound calls allowed to the bench's receivers
    /// on loopback ([`RECEIVER_NETWORK`]).
    pub fn common_config(
        &self,
        namespace: &str,
    ) -> Result<postline_shared::CommonConfig, BenchError> {
        let mut common = postline_shared::CommonConfig {
            amqp_url: self
                .amqp_url
                .parse()
                .map_err(|e| BenchError::Invalid(format!("POSTLINE_AMQP_URL: {e}")))?,
            redis_url: self.redis_url.clone(),
            queue_type: self.queue_type,
            ..postline_shared::CommonConfig::local(namespace)
        };
        common.outbound.allow_private_networks = vec![RECEIVER_NETWORK
            .parse()
            .expect("RECEIVER_NETWORK is a CIDR")];
        Ok(common)
    }
}

/// Where the bench's receivers listen: allowed for outbound calls.
pub const RECEIVER_NETWORK: &str = "127.0.0.0/8";

/// A fresh namespace for one measurement (`b` + 12 hex characters), so runs
/// never see each other's queues or keys, nor those of tests or `scripts/run`.
pub fn fresh_namespace() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("b{}", &id[..12])
}
