//! Ingest settings: one `clap` struct, read from `POSTLINE_…` variables (or
//! the matching flags); `postline-ingest --help` lists every one with its
//! default.

use postline_shared::model::secret::Secret;
use postline_shared::runtime::config::{ConfigError, ServiceConfig};
use postline_shared::runtime::env::secs;
use postline_shared::runtime::http_server::ServerLimits;
use postline_shared::CommonConfig;
use std::net::SocketAddr;
use std::time::Duration;

/// Development token used when `POSTLINE_ADMIN_TOKEN` is unset.
pub const DEV_ADMIN_TOKEN: &str = "dev-admin-token";
/// Development token used when `POSTLINE_PRODUCER_TOKEN` is unset.
pub const DEV_PRODUCER_TOKEN: &str = "dev-producer-token";

/// Everything the ingest service needs to run.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "postline-ingest",
    version,
    about = "Postline ingest: takes events (AMQP intake, POST /v1/events), fans them out to subscription queues, serves the management API and the status page.",
    long_about = None
)]
pub struct IngestConfig {
    /// Namespace, broker, Redis, encryption and the outbound guard.
    #[command(flatten)]
    pub common: CommonConfig,
    /// HTTP address: ingest API, management API, `/metrics`, `/healthz`, `/readyz`.
    #[arg(
        long = "listen",
        env = "POSTLINE_INGEST_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,
    /// Bearer token of the management API (the default is logged as a
    /// warning: set it in production).
    #[arg(long, env = "POSTLINE_ADMIN_TOKEN", default_value = DEV_ADMIN_TOKEN, hide_env_values = true)]
    pub admin_token: Secret,
    /// Bearer token for `POST /v1/events` and `/v1/events/batch`; must differ
    /// from the admin token.
    #[arg(long, env = "POSTLINE_PRODUCER_TOKEN", default_value = DEV_PRODUCER_TOKEN, hide_env_values = true)]
    pub producer_token: Secret,
    /// Largest accepted event, in bytes (256 KiB); larger ones are rejected.
    #[arg(long, env = "POSTLINE_MAX_EVENT_BYTES", default_value_t = 256 * 1024)]
    pub max_event_bytes: usize,
    /// Largest `POST /v1/events/batch` body, in bytes.
    #[arg(long, env = "POSTLINE_MAX_BATCH_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_batch_bytes: usize,
    /// Most events in one batch.
    #[arg(long, env = "POSTLINE_MAX_BATCH_EVENTS", default_value_t = 1000)]
    pub max_batch_events: usize,
    /// How long an accepted event id is remembered, so a re-sent event is not
    /// published twice (seconds: 7 days).
    #[arg(long = "dedup-ttl-secs", value_name = "SECS", env = "POSTLINE_DEDUP_TTL_SECS", default_value_t = 7 * 24 * 3600)]
    pub dedup_ttl_secs: u64,
    /// AMQP prefetch of the intake consumer: the pipelined intake takes what
    /// it holds as one batch, so this bounds the batch and the events held in
    /// memory (at most this many times the broker's `max_message_size`).
    #[arg(long, env = "POSTLINE_INTAKE_PREFETCH", default_value_t = 512)]
    pub intake_prefetch: u16,
    /// Base URL of the token service, for PINGs to receivers that need a
    /// bearer token.
    #[arg(
        long,
        env = "POSTLINE_TOKEN_URL",
        default_value = "http://127.0.0.1:8082"
    )]
    pub token_url: String,
    /// Bounds of the HTTP server.
    #[command(flatten)]
    pub server: ServerLimits,
    /// Where operational events go, as configured.
    #[command(flatten)]
    pub operator_webhook: OperatorWebhook,
    /// Operational events, on when [`Self::operator_webhook`] has a URL; set
    /// by [`ServiceConfig::check`].
    #[arg(skip)]
    pub operator: Option<crate::operator::OperatorConfig>,
    /// Life of a tenant's access token from `/oauth/token` (seconds).
    #[arg(long = "oauth-token-ttl-secs", value_name = "SECS", env = "POSTLINE_OAUTH_TOKEN_TTL_SECS", default_value = "3600", value_parser = secs)]
    pub oauth_token_ttl: Duration,
    /// Status page: session life and cookies.
    #[command(flatten)]
    pub ui: UiConfig,
}

/// Operational events (see the README, "Operational events").
#[derive(Debug, Clone, clap::Args)]
pub struct OperatorWebhook {
    /// Where operational events go; off when unset.
    #[arg(
        long = "operator-webhook-url",
        value_name = "URL",
        env = "POSTLINE_OPERATOR_WEBHOOK_URL",
        hide_env_values = true
    )]
    pub url: Option<String>,
    /// `whsec_…` secret signing them (Standard Webhooks); required with the URL.
    #[arg(
        long = "operator-webhook-secret",
        value_name = "WHSEC",
        env = "POSTLINE_OPERATOR_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    pub secret: Option<Secret>,
    /// A strict subscription blocked this long is reported
    /// (`postline.subscription.blocked`), in seconds.
    #[arg(long = "blocked-alert-after-secs", value_name = "SECS", env = "POSTLINE_BLOCKED_ALERT_AFTER_SECS", default_value = "3600", value_parser = secs)]
    pub blocked_alert_after: Duration,
    /// How often ingest looks for new operational events (seconds).
    #[arg(long = "operator-scan-secs", value_name = "SECS", env = "POSTLINE_OPERATOR_SCAN_SECS", default_value = "10", value_parser = secs)]
    pub scan_every: Duration,
}

/// Status-page settings.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct UiConfig {
    /// Life of a status-page session (seconds: 8 h).
    #[arg(long = "ui-session-ttl-secs", value_name = "SECS", env = "POSTLINE_UI_SESSION_TTL_SECS", default_value = "28800", value_parser = secs)]
    pub session_ttl: Duration,
    /// Always mark the status page's cookies `Secure` (set it when ingest is
    /// reached over TLS); they are also when the request came over TLS
    /// through a proxy (`X-Forwarded-Proto: https`).
    #[arg(long = "ui-secure-cookies", env = "POSTLINE_UI_SECURE_COOKIES", default_value_t = false, action = clap::ArgAction::Set)]
    pub secure_cookies: bool,
}

impl OperatorWebhook {
    /// The operator's endpoint, or `None` when no URL is set.
    fn config(&self) -> Result<Option<crate::operator::OperatorConfig>, ConfigError> {
        let url = match self.url.as_deref().map(str::trim) {
            Some(url) if !url.is_empty() => url.to_string(),
            _ => return Ok(None),
        };
        let secret = match &self.secret {
            Some(secret) if !secret.expose().trim().is_empty() => secret.clone(),
            _ => return Err(ConfigError {
                name: "POSTLINE_OPERATOR_WEBHOOK_SECRET".into(),
                value: "<empty>".into(),
                reason:
                    "required with POSTLINE_OPERATOR_WEBHOOK_URL (operational events are signed)"
                        .into(),
            }),
        };
        Ok(Some(crate::operator::OperatorConfig {
            url,
            secret,
            blocked_alert_after: self.blocked_alert_after,
            scan_every: self.scan_every,
        }))
    }
}

impl ServiceConfig for IngestConfig {
    fn common_mut(&mut self) -> &mut CommonConfig {
        &mut self.common
    }

    fn check(mut self) -> Result<Self, ConfigError> {
        if self.admin_token == self.producer_token {
            // One token for both would let every producer manage subscriptions.
            return Err(ConfigError::redacted(
                "POSTLINE_PRODUCER_TOKEN",
                "must differ from POSTLINE_ADMIN_TOKEN",
            ));
        }
        self.operator = self.operator_webhook.config()?;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postline_shared::runtime::env::from_args;

    #[test]
    fn the_defaults_are_the_documented_ones() {
        let config = IngestConfig::local(CommonConfig::local("ns"));
        assert_eq!(config.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(config.admin_token.expose(), DEV_ADMIN_TOKEN);
        assert_eq!(config.max_event_bytes, 262_144);
        assert_eq!(config.dedup_ttl_secs, 604_800);
        assert_eq!(config.server, ServerLimits::default());
        assert_eq!(config.oauth_token_ttl, Duration::from_secs(3600));
        assert_eq!(config.ui.session_ttl, Duration::from_secs(8 * 3600));
        assert!(config.operator.is_none());
        assert_eq!(config.common.namespace, "ns");
    }

    #[test]
    fn one_token_for_admin_and_producer_is_refused_without_showing_it() {
        let error = from_args::<IngestConfig>([
            "--admin-token",
            "same-token",
            "--producer-token",
            "same-token",
        ])
        .unwrap_err();
        assert_eq!(error.name, "POSTLINE_PRODUCER_TOKEN");
        assert!(!error.to_string().contains("same-token"), "{error}");
    }

    #[test]
    fn an_operator_url_needs_its_secret() {
        let error =
            from_args::<IngestConfig>(["--operator-webhook-url", "http://ops.example/hook"])
                .unwrap_err();
        assert_eq!(error.name, "POSTLINE_OPERATOR_WEBHOOK_SECRET");
        let config = from_args::<IngestConfig>([
            "--operator-webhook-url",
            "http://ops.example/hook",
            "--operator-webhook-secret",
            "whsec_c2VjcmV0",
            "--operator-scan-secs",
            "3",
        ])
        .unwrap();
        let operator = config.operator.expect("operational events on");
        assert_eq!(operator.scan_every, Duration::from_secs(3));
        assert_eq!(operator.blocked_alert_after, Duration::from_secs(3600));
    }

    #[test]
    fn durations_in_milliseconds_and_seconds_are_read_as_such() {
        let config = from_args::<IngestConfig>([
            "--header-read-timeout-ms",
            "1500",
            "--oauth-token-ttl-secs",
            "60",
        ])
        .unwrap();
        assert_eq!(
            config.server.header_read_timeout,
            Duration::from_millis(1500)
        );
        assert_eq!(config.oauth_token_ttl, Duration::from_secs(60));
    }
}
