//! Ingest settings from the environment.

use postline_shared::model::secret::Secret;
use postline_shared::runtime::config::{env_or, ConfigError};
use postline_shared::runtime::http_server::ServerLimits;
use postline_shared::CommonConfig;
use std::net::SocketAddr;
use std::time::Duration;

/// Development token used when `POSTLINE_ADMIN_TOKEN` is unset.
pub const DEV_ADMIN_TOKEN: &str = "dev-admin-token";
/// Development token used when `POSTLINE_PRODUCER_TOKEN` is unset.
pub const DEV_PRODUCER_TOKEN: &str = "dev-producer-token";

/// Everything the ingest service needs to run.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Namespace, broker and Redis.
    pub common: CommonConfig,
    /// HTTP listen address (`POSTLINE_INGEST_LISTEN`).
    pub listen: SocketAddr,
    /// Bearer token for the management API (`POSTLINE_ADMIN_TOKEN`).
    pub admin_token: Secret,
    /// Bearer token for producers posting events (`POSTLINE_PRODUCER_TOKEN`).
    pub producer_token: Secret,
    /// Largest accepted event, in bytes (`POSTLINE_MAX_EVENT_BYTES`).
    pub max_event_bytes: usize,
    /// Largest batch request body (`POSTLINE_MAX_BATCH_BYTES`).
    pub max_batch_bytes: usize,
    /// Most events in one batch (`POSTLINE_MAX_BATCH_EVENTS`).
    pub max_batch_events: usize,
    /// How long an accepted event id is remembered for idempotent intake (`POSTLINE_DEDUP_TTL_SECS`).
    pub dedup_ttl_secs: u64,
    /// Intake messages in flight from the broker (`POSTLINE_INTAKE_PREFETCH`): the
    /// pipelined intake takes them as batches, so this bounds both the batch size
    /// and the events held in memory (at most this many times `max_event_bytes`).
    pub intake_prefetch: u16,
    /// Base URL of the token service, for PINGs to receivers that need a
    /// bearer token (`POSTLINE_TOKEN_URL`).
    pub token_url: String,
    /// Bounds of the HTTP server: most concurrent connections
    /// (`POSTLINE_MAX_CONNECTIONS`) and how long a request head may take,
    /// which is also how long a kept-alive connection may idle
    /// (`POSTLINE_HEADER_READ_TIMEOUT_MS`).
    pub server: ServerLimits,
    /// Operational events (`POSTLINE_OPERATOR_WEBHOOK_URL` and
    /// `POSTLINE_OPERATOR_WEBHOOK_SECRET`; off when the URL is unset).
    pub operator: Option<crate::operator::OperatorConfig>,
    /// Life of a tenant's access token (`POSTLINE_OAUTH_TOKEN_TTL_SECS`, default 1 h).
    pub oauth_token_ttl: Duration,
    /// Status page: session life (`POSTLINE_UI_SESSION_TTL_SECS`, default 8 h)
    /// and whether cookies are always `Secure` (`POSTLINE_UI_SECURE_COOKIES`).
    pub ui: crate::ui::UiConfig,
}

impl IngestConfig {
    /// Reads the configuration from the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let defaults = Self::local(CommonConfig::from_env()?);
        let config = Self {
            listen: env_or("POSTLINE_INGEST_LISTEN", defaults.listen)?,
            admin_token: Secret::new(env_or("POSTLINE_ADMIN_TOKEN", DEV_ADMIN_TOKEN.to_string())?),
            producer_token: Secret::new(env_or(
                "POSTLINE_PRODUCER_TOKEN",
                DEV_PRODUCER_TOKEN.to_string(),
            )?),
            max_event_bytes: env_or("POSTLINE_MAX_EVENT_BYTES", defaults.max_event_bytes)?,
            max_batch_bytes: env_or("POSTLINE_MAX_BATCH_BYTES", defaults.max_batch_bytes)?,
            max_batch_events: env_or("POSTLINE_MAX_BATCH_EVENTS", defaults.max_batch_events)?,
            dedup_ttl_secs: env_or("POSTLINE_DEDUP_TTL_SECS", defaults.dedup_ttl_secs)?,
            intake_prefetch: env_or("POSTLINE_INTAKE_PREFETCH", defaults.intake_prefetch)?,
            token_url: env_or("POSTLINE_TOKEN_URL", defaults.token_url.clone())?,
            server: ServerLimits {
                max_connections: env_or(
                    "POSTLINE_MAX_CONNECTIONS",
                    defaults.server.max_connections,
                )?,
                header_read_timeout: Duration::from_millis(env_or(
                    "POSTLINE_HEADER_READ_TIMEOUT_MS",
                    defaults.server.header_read_timeout.as_millis() as u64,
                )?),
            },
            operator: operator_from_env()?,
            oauth_token_ttl: Duration::from_secs(env_or(
                "POSTLINE_OAUTH_TOKEN_TTL_SECS",
                defaults.oauth_token_ttl.as_secs(),
            )?),
            ui: crate::ui::UiConfig {
                session_ttl: Duration::from_secs(env_or(
                    "POSTLINE_UI_SESSION_TTL_SECS",
                    defaults.ui.session_ttl.as_secs(),
                )?),
                secure_cookies: env_or("POSTLINE_UI_SECURE_COOKIES", defaults.ui.secure_cookies)?,
            },
            ..defaults
        };
        if config.admin_token == config.producer_token {
            // One token for both would let every producer manage subscriptions.
            return Err(ConfigError {
                name: "POSTLINE_PRODUCER_TOKEN".into(),
                value: "<redacted>".into(),
                reason: "must differ from POSTLINE_ADMIN_TOKEN".into(),
            });
        }
        Ok(config)
    }

    /// Defaults around `common`, listening on 127.0.0.1:8080.
    pub fn local(common: CommonConfig) -> Self {
        Self {
            common,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_token: Secret::new(DEV_ADMIN_TOKEN),
            producer_token: Secret::new(DEV_PRODUCER_TOKEN),
            max_event_bytes: 256 * 1024,
            max_batch_bytes: 16 * 1024 * 1024,
            max_batch_events: 1000,
            dedup_ttl_secs: 7 * 24 * 3600,
            intake_prefetch: 512,
            token_url: "http://127.0.0.1:8082".to_string(),
            server: ServerLimits::default(),
            operator: None,
            oauth_token_ttl: Duration::from_secs(3600),
            ui: crate::ui::UiConfig::default(),
        }
    }
}

fn operator_from_env() -> Result<Option<crate::operator::OperatorConfig>, ConfigError> {
    let url: String = env_or("POSTLINE_OPERATOR_WEBHOOK_URL", String::new())?;
    if url.is_empty() {
        return Ok(None);
    }
    let secret: String = env_or("POSTLINE_OPERATOR_WEBHOOK_SECRET", String::new())?;
    if secret.is_empty() {
        return Err(ConfigError {
            name: "POSTLINE_OPERATOR_WEBHOOK_SECRET".into(),
            value: "<empty>".into(),
            reason: "required with POSTLINE_OPERATOR_WEBHOOK_URL (operational events are signed)"
                .into(),
        });
    }
    Ok(Some(crate::operator::OperatorConfig {
        url,
        secret: Secret::new(secret),
        blocked_alert_after: Duration::from_secs(env_or(
            "POSTLINE_BLOCKED_ALERT_AFTER_SECS",
            3600u64,
        )?),
        scan_every: Duration::from_secs(env_or("POSTLINE_OPERATOR_SCAN_SECS", 10u64)?),
    }))
}
