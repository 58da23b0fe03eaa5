//! Configuration every service reads from the environment, with defaults
//! that work against a local RabbitMQ and Redis.

use crate::encryption::KeyRing;
use crate::outbound::OutboundConfig;
use crate::topology::QueueType;
use std::str::FromStr;

/// A configuration variable that is set but unusable.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}={value:?} is invalid: {reason}")]
pub struct ConfigError {
    /// Variable name.
    pub name: String,
    /// Its value.
    pub value: String,
    /// Why it was refused.
    pub reason: String,
}

/// Reads `name` and parses it, or returns `default` when unset or empty.
pub fn env_or<T>(name: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => {
            value.trim().parse().map_err(|e: T::Err| ConfigError {
                name: name.to_string(),
                value,
                reason: e.to_string(),
            })
        }
        _ => Ok(default),
    }
}

/// Settings shared by ingest, delivery and token.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    /// Prefix of every AMQP name and Redis key (`POSTLINE_NAMESPACE`).
    pub namespace: String,
    /// Broker URL (`POSTLINE_AMQP_URL`).
    pub amqp_url: String,
    /// Redis URL (`POSTLINE_REDIS_URL`).
    pub redis_url: String,
    /// Subscription queue type (`POSTLINE_QUEUE_TYPE`: classic|quorum).
    pub queue_type: QueueType,
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
            amqp_url: env_or("POSTLINE_AMQP_URL", DEFAULT_AMQP_URL.to_string())?,
            redis_url: env_or("POSTLINE_REDIS_URL", DEFAULT_REDIS_URL.to_string())?,
            queue_type: env_or("POSTLINE_QUEUE_TYPE", QueueType::Classic)?,
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
            amqp_url: DEFAULT_AMQP_URL.to_string(),
            redis_url: DEFAULT_REDIS_URL.to_string(),
            queue_type: QueueType::Classic,
            encryption: KeyRing::development(),
            outbound: OutboundConfig::default(),
        }
    }

    /// The AMQP names of this namespace.
    pub fn topology(&self) -> crate::topology::Topology {
        crate::topology::Topology::new(&self.namespace, self.queue_type)
    }

    /// The Redis keys of this namespace.
    pub fn keys(&self) -> crate::keys::RedisKeys {
        crate::keys::RedisKeys::new(&self.namespace)
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
