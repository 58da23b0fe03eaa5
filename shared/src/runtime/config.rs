//! Configuration every service reads from the environment, with defaults
//! that work against a local RabbitMQ and Redis: [`CommonConfig`], the part
//! each service's own `clap` struct flattens in, and [`ServiceConfig`], what
//! such a struct offers (reading it, its defaults for tests). Each field's
//! attribute names its variable and default, its doc says what it does:
//! `--help` and the README's table (checked by `tests/configuration.rs`) are
//! made from them.

use crate::amqp::broker_nodes::BrokerNodes;
use crate::amqp::topology::QueueType;
use crate::model::secret::Secret;
use crate::outbound::OutboundConfig;
use crate::runtime::encryption::KeyRing;
pub use crate::runtime::env::{ConfigError, Validate};

/// Settings shared by ingest, delivery and token.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonConfig {
    /// Prefix of every exchange, queue and Redis key: 1 to 64 of letters,
    /// digits, `_` and `-`. Several installations (or tests) can share one
    /// broker and one Redis.
    #[arg(long, env = "POSTLINE_NAMESPACE", default_value = "postline", value_parser = parse_namespace)]
    pub namespace: String,
    /// RabbitMQ: one URL, or a comma-separated list of a cluster's nodes (a
    /// service connects to the first that answers and moves to another when
    /// its node dies; errors never show the URLs' passwords).
    #[arg(long, env = "POSTLINE_AMQP_URL", default_value = DEFAULT_AMQP_URL, hide_env_values = true)]
    pub amqp_url: BrokerNodes,
    /// Redis URL.
    #[arg(long, env = "POSTLINE_REDIS_URL", default_value = DEFAULT_REDIS_URL, hide_env_values = true)]
    pub redis_url: String,
    /// Queue type: `classic` (single node) or `quorum` (clusters, RabbitMQ
    /// 3.10 or later); an installation keeps the type it started with.
    #[arg(long, env = "POSTLINE_QUEUE_TYPE", default_value = "classic")]
    pub queue_type: QueueType,
    /// With `quorum`: first drain and delete the classic queues of an
    /// installation moving from classic queues (see the README, "Clusters and
    /// Kubernetes", and `amqp::migration`).
    #[arg(long, env = "POSTLINE_MIGRATE_FROM_CLASSIC", default_value_t = false, action = clap::ArgAction::Set)]
    pub migrate_from_classic: bool,
    /// Encryption of secrets at rest (`POSTLINE_ENCRYPTION_KEY`,
    /// `POSTLINE_ENCRYPTION_OLD_KEYS`).
    #[command(flatten)]
    pub encryption_keys: EncryptionKeys,
    /// The key ring [`Self::encryption_keys`] make, set by
    /// [`Validate::validate`]; every service reading subscriptions needs the same.
    #[arg(skip = KeyRing::development())]
    pub encryption: KeyRing,
    /// How calls to partner URLs are guarded.
    #[command(flatten)]
    pub outbound: OutboundConfig,
    /// Log lines as `text` or `json` (the filter is `RUST_LOG`, default `info`).
    #[arg(
        long,
        env = "POSTLINE_LOG_FORMAT",
        default_value = "text",
        ignore_case = true
    )]
    pub log_format: LogFormat,
}

/// The keys sealing secrets at rest, as configured.
#[derive(Debug, Clone, clap::Args)]
pub struct EncryptionKeys {
    /// `<key id>:<base64 of 32 bytes>`: seals secrets in Redis; the same on
    /// every service. Unset: the public built-in development key (logged as
    /// a warning: set it in production).
    #[arg(
        long = "encryption-key",
        env = "POSTLINE_ENCRYPTION_KEY",
        value_name = "ID:KEY",
        hide_env_values = true
    )]
    pub current: Option<Secret>,
    /// Comma-separated `<key id>:<base64>` (or `dev`) that still open what
    /// they sealed, for rotation.
    #[arg(
        long = "encryption-old-keys",
        env = "POSTLINE_ENCRYPTION_OLD_KEYS",
        value_name = "ID:KEY,…",
        hide_env_values = true
    )]
    pub old: Option<Secret>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "lower")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Default broker URL: local RabbitMQ as guest.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Default Redis URL.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

impl Validate for CommonConfig {
    fn validate(mut self) -> Result<Self, ConfigError> {
        self.encryption = self.encryption_keys.ring()?;
        Ok(self)
    }
}

/// A service's whole configuration: a command whose common part is a
/// [`CommonConfig`]. Read with [`ServiceConfig::from_env`]; tests build the
/// defaults with [`ServiceConfig::local`].
pub trait ServiceConfig: clap::Parser {
    /// The common part.
    fn common_mut(&mut self) -> &mut CommonConfig;

    /// Checks the service's own rules between its variables, once the
    /// common part is checked (none by default).
    fn check(self) -> Result<Self, ConfigError> {
        Ok(self)
    }

    /// Reads the configuration from the arguments and the environment;
    /// `--help` prints every setting and exits (call from `main` only).
    fn from_env() -> Result<Self, ConfigError> {
        crate::runtime::env::from_env()
    }

    /// The defaults around `common`, whatever the process's environment says.
    fn local(common: CommonConfig) -> Self {
        match crate::runtime::env::defaults::<Self>() {
            Ok(mut defaults) => {
                *defaults.common_mut() = common;
                defaults
            }
            // Constant defaults that pass validation (the unit tests check them).
            Err(error) => unreachable!("the default configuration is invalid: {error}"),
        }
    }
}

/// A service's configuration is checked part by part: the common part, then
/// the service's own rules.
impl<T: ServiceConfig> Validate for T {
    fn validate(mut self) -> Result<Self, ConfigError> {
        let common = self.common_mut().clone().validate()?;
        *self.common_mut() = common;
        self.check()
    }
}

/// [`CommonConfig`] alone as a command: its defaults, and its unit tests.
#[derive(clap::Parser)]
#[command(name = "postline")]
struct CommonOnly {
    #[command(flatten)]
    common: CommonConfig,
}

impl Validate for CommonOnly {
    fn validate(self) -> Result<Self, ConfigError> {
        Ok(Self {
            common: self.common.validate()?,
        })
    }
}

impl CommonConfig {
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

    /// The defaults under `namespace` (tests give each run its own),
    /// whatever the process's environment says.
    pub fn local(namespace: &str) -> Self {
        match crate::runtime::env::defaults::<CommonOnly>() {
            Ok(only) => Self {
                namespace: namespace.to_string(),
                ..only.common
            },
            // Constant defaults that parse (the unit tests check them).
            Err(error) => unreachable!("the default configuration is invalid: {error}"),
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

impl EncryptionKeys {
    /// The key ring: the current key and the old ones, or the development
    /// key. An error names the variable, never its value (key material).
    pub fn ring(&self) -> Result<KeyRing, ConfigError> {
        let text = |key: &Option<Secret>| {
            key.as_ref()
                .map(|key| key.expose().trim().to_string())
                .unwrap_or_default()
        };
        let (current, previous) = (text(&self.current), text(&self.old));
        if current.is_empty() {
            if !previous.is_empty() {
                return Err(ConfigError::redacted(
                    "POSTLINE_ENCRYPTION_OLD_KEYS",
                    "set POSTLINE_ENCRYPTION_KEY too: old keys only open, the current key seals",
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
            ConfigError::redacted(name, error.to_string())
        })
    }
}

/// [`DEFAULT_AMQP_URL`] as a list of one.
pub fn default_amqp_nodes() -> BrokerNodes {
    match DEFAULT_AMQP_URL.parse() {
        Ok(nodes) => nodes,
        // A constant that parses (the unit tests check it).
        Err(error) => unreachable!("DEFAULT_AMQP_URL is invalid: {error}"),
    }
}

fn parse_namespace(namespace: &str) -> Result<String, String> {
    let ok = !namespace.is_empty()
        && namespace.len() <= 64
        && namespace
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(namespace.to_string())
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

    fn parse(args: &[&str]) -> Result<CommonConfig, ConfigError> {
        crate::runtime::env::from_args::<CommonOnly>(args).map(|only| only.common)
    }

    #[test]
    fn the_default_broker_is_one_local_node() {
        let nodes = default_amqp_nodes();
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes.url(0), Some(DEFAULT_AMQP_URL));
        let defaults = CommonConfig::local("ns");
        assert_eq!(defaults.amqp_url.to_env_value(), DEFAULT_AMQP_URL);
        assert_eq!(defaults.namespace, "ns");
        assert!(defaults.encryption.is_development());
        assert_eq!(defaults.queue_type, QueueType::Classic);
    }

    #[test]
    fn a_bad_broker_list_names_the_variable_but_not_the_password() {
        let error = parse(&["--amqp-url", "amqp://u:pw1@n1/%2f,http://u:pw2@n2/"]).unwrap_err();
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
        let common = parse(&[
            "--amqp-url",
            "amqp://u:p@n1:5681/%2f,amqp://u:p@n2:5682/%2f",
        ])
        .unwrap();
        assert_eq!(common.amqp_url.len(), 2);
        assert_eq!(common.amqp_url.label(1), Some("amqp://n2:5682/%2f"));
    }

    #[test]
    fn a_namespace_outside_the_rules_is_refused_by_name() {
        let error = parse(&["--namespace", "a:b"]).unwrap_err();
        assert_eq!(error.name, "POSTLINE_NAMESPACE");
        assert_eq!(error.value, "a:b");
        assert!(error.reason.contains("letters, digits"), "{error}");
    }

    #[test]
    fn an_unknown_queue_type_is_refused_by_name() {
        let error = parse(&["--queue-type", "stream"]).unwrap_err();
        assert_eq!(error.name, "POSTLINE_QUEUE_TYPE");
        let common = parse(&["--queue-type", "quorum", "--migrate-from-classic", "true"]).unwrap();
        assert_eq!(common.queue_type, QueueType::Quorum);
        assert!(common.migrate_from_classic);
    }

    #[test]
    fn old_keys_without_a_current_key_are_refused_without_their_value() {
        let error = parse(&["--encryption-old-keys", "k1:c2VjcmV0"]).unwrap_err();
        assert_eq!(error.name, "POSTLINE_ENCRYPTION_OLD_KEYS");
        assert!(!error.to_string().contains("c2VjcmV0"), "{error}");
        let error = parse(&["--encryption-key", "k1:c2VjcmV0"]).unwrap_err();
        assert_eq!(error.name, "POSTLINE_ENCRYPTION_KEY");
        assert!(!error.to_string().contains("c2VjcmV0"), "{error}");
    }
}
