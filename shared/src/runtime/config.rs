//! Configuration every service reads from the environment, with defaults
//! that work against a local RabbitMQ and Redis.

use crate::amqp::broker_nodes::BrokerNodes;
use crate::amqp::topology::QueueType;
use crate::outbound::OutboundConfig;
use crate::runtime::encryption::KeyRing;
pub use crate::runtime::env::{env_or, ConfigError};

/// Settings shared by ingest, delivery and token.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    /// Prefix of every AMQP name and Redis key (`POSTLINE_NAMESPACE`).
    pub namespace: String,
    /// Broker node URLs (`POSTLINE_AMQP_URL`: one URL, or a comma-separated
    /// list of a cluster's nodes), checked.
    pub amqp_url: BrokerNodes,
    /// Redis URL (`POSTLINE_REDIS_URL`).
    pub redis_url: String,
    /// Subscription queue type (`POSTLINE_QUEUE_TYPE`: classic|quorum).
    pub queue_type: QueueType,
    /// With `quorum`: drain and delete the classic queues of an installation
    /// moving from classic queues first (`POSTLINE_MIGRATE_FROM_CLASSIC`,
    /// default false; see [`crate::amqp::migration`]).
    pub migrate_from_classic: bool,
    /// Keys sealing secrets at rest (`POSTLINE_ENCRYPTION_KEY`, `POSTLINE_ENCRYPTION_OLD_KEYS`);
    /// every service reading subscriptions needs the same ring.
    pub encryption: KeyRing,
    /// How calls to partner URLs are guarded (`POSTLINE_ALLOW_PRIVATE_NETWORKS`,
    /// `POSTLINE_MAX_RESPONSE_BYTES`, `POSTLINE_OUTBOUND_PROXY`).
    pub outbound: OutboundConfig,
}

/// Default broker URL: local RabbitMQ as guest.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Default Redis URL.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

impl CommonConfig {
    /// Reads the shared settings from the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let namespace: String = env_or("POSTLINE_NAMESPACE", "postline".to_string())?;
        validate_namespace(&namespace).map_err(|reason| ConfigError {
            name: "POSTLINE_NAMESPACE".into(),
            value: namespace.clone(),
            reason,
        })?;
        Ok(Self {
            namespace,
            amqp_url: amqp_urls_from_env()?,
            redis_url: env_or("POSTLINE_REDIS_URL", DEFAULT_REDIS_URL.to_string())?,
            queue_type: env_or("POSTLINE_QUEUE_TYPE", QueueType::Classic)?,
            migrate_from_classic: env_or("POSTLINE_MIGRATE_FROM_CLASSIC", false)?,
            encryption: encryption_from_env()?,
            outbound: OutboundConfig::from_env()?,
        })
    }

    /// Logs a warning for each development default still in use, and which
    /// internal ranges outbound calls may reach; call once at start-up.
    pub fn warn_about_defaults(&self) {
        self.outbound.log_policy();
        if self.encryption.is_development() {
            tracing::warn!(
                "POSTLINE_ENCRYPTION_KEY is not set: secrets in Redis are sealed with the public development key"
            );
        }
    }

    /// Local defaults under `namespace` (tests give each run its own).
    pub fn local(namespace: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            amqp_url: default_amqp_nodes(),
            redis_url: DEFAULT_REDIS_URL.to_string(),
            queue_type: QueueType::Classic,
            migrate_from_classic: false,
            encryption: KeyRing::development(),
            outbound: OutboundConfig::default(),
        }
    }

    /// The AMQP names of this namespace.
    pub fn topology(&self) -> crate::amqp::topology::Topology {
        crate::amqp::topology::Topology::new(&self.namespace, self.queue_type)
            .migrating_from_classic(self.migrate_from_classic)
    }

    /// The Redis keys of this namespace.
    pub fn keys(&self) -> crate::redis::keys::RedisKeys {
        crate::redis::keys::RedisKeys::new(&self.namespace)
    }
}

/// The broker nodes from `POSTLINE_AMQP_URL`, or the local default. An error
/// names the variable and what is wrong, never the value (URLs carry passwords).
fn amqp_urls_from_env() -> Result<BrokerNodes, ConfigError> {
    match std::env::var("POSTLINE_AMQP_URL") {
        Ok(value) if !value.trim().is_empty() => parse_amqp_urls(&value),
        _ => Ok(default_amqp_nodes()),
    }
}

fn parse_amqp_urls(value: &str) -> Result<BrokerNodes, ConfigError> {
    value.parse().map_err(
        |error: crate::amqp::broker_nodes::BrokerNodesError| ConfigError {
            name: "POSTLINE_AMQP_URL".into(),
            value: "<redacted>".into(),
            reason: error.to_string(),
        },
    )
}

/// [`DEFAULT_AMQP_URL`] as a list of one.
pub fn default_amqp_nodes() -> BrokerNodes {
    match DEFAULT_AMQP_URL.parse() {
        Ok(nodes) => nodes,
        // A constant that parses (the unit tests check it).
        Err(error) => unreachable!("DEFAULT_AMQP_URL is invalid: {error}"),
    }
}

/// The key ring from `POSTLINE_ENCRYPTION_KEY` (current) and
/// `POSTLINE_ENCRYPTION_OLD_KEYS` (still opened), or the development key.
fn encryption_from_env() -> Result<KeyRing, ConfigError> {
    let current = std::env::var("POSTLINE_ENCRYPTION_KEY").unwrap_or_default();
    let previous = std::env::var("POSTLINE_ENCRYPTION_OLD_KEYS").unwrap_or_default();
    // The values are key material: errors name the variable, never its value.
    let refuse = |name: &str, reason: String| ConfigError {
        name: name.to_string(),
        value: "<redacted>".into(),
        reason,
    };
    if current.trim().is_empty() {
        if !previous.trim().is_empty() {
            return Err(refuse(
                "POSTLINE_ENCRYPTION_OLD_KEYS",
                "set POSTLINE_ENCRYPTION_KEY too: old keys only open, the current key seals".into(),
            ));
        }
        return Ok(KeyRing::development());
    }
    KeyRing::from_config(&current, &previous).map_err(|error| {
        let name = if KeyRing::from_config(&current, "").is_err() {
            "POSTLINE_ENCRYPTION_KEY"
        } else {
            "POSTLINE_ENCRYPTION_OLD_KEYS"
        };
        refuse(name, error.to_string())
    })
}

fn validate_namespace(namespace: &str) -> Result<(), String> {
    let ok = !namespace.is_empty()
        && namespace.len() <= 64
        && namespace
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err("use 1 to 64 of letters, digits, _ and -".into())
    }
}

/// Opens the process's Redis client and its one multiplexed, reconnecting connection.
pub async fn connect_redis(
    url: &str,
) -> Result<(redis::Client, redis::aio::ConnectionManager), redis::RedisError> {
    let client = redis::Client::open(url)?;
    let manager = client.get_connection_manager().await?;
    Ok((client, manager))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_broker_is_one_local_node() {
        let nodes = default_amqp_nodes();
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes.url(0), Some(DEFAULT_AMQP_URL));
    }

    #[test]
    fn a_bad_broker_list_names_the_variable_but_not_the_password() {
        let error = parse_amqp_urls("amqp://u:pw1@n1/%2f,http://u:pw2@n2/").unwrap_err();
        let message = error.to_string();
        assert!(message.contains("POSTLINE_AMQP_URL"), "{message}");
        assert!(message.contains("entry 2"), "{message}");
        assert!(
            !message.contains("pw1") && !message.contains("pw2"),
            "{message}"
        );
    }

    #[test]
    fn a_broker_list_parses_into_its_nodes() {
        let nodes = parse_amqp_urls("amqp://u:p@n1:5681/%2f,amqp://u:p@n2:5682/%2f").unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes.label(1), Some("amqp://n2:5682/%2f"));
    }
}
