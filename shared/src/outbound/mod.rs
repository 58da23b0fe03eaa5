//! The outbound edge: how Postline calls URLs that partners type.
//!
//! - [`policy`]: which addresses may be called (pure rules).
//! - [`lookup`]: resolving names and keeping only the allowed addresses,
//!   which the client then connects to (no DNS rebinding).
//! - [`client`]: the guarded HTTP client with bounded answers, no redirects
//!   and no ambient proxy.
//! - [`webhook_request`]: building the request a receiver gets for one event
//!   (pure), signed by [`signing`] and carrying the credentials
//!   [`receiver_credentials`] applies, with bearer tokens from [`token_client`].
//! - [`attempt`]: one attempt: build, authenticate, send, judge the answer.

pub mod attempt;
pub mod client;
pub mod lookup;
pub mod policy;
pub mod receiver_credentials;
pub mod signing;
pub mod token_client;
pub mod webhook_request;

pub use client::{error_chain, read_bounded, BoundedBody, OutboundClient, SendError};
pub use lookup::NameLookup;
pub use policy::{AddressPolicy, NotAllowed};

use crate::runtime::env::{env_or, ConfigError};
use ipnet::IpNet;

/// Default bound of what is read from any answer.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// How outbound calls are guarded.
#[derive(Debug, Clone)]
pub struct OutboundConfig {
    /// Internal ranges that may be called anyway
    /// (`POSTLINE_ALLOW_PRIVATE_NETWORKS`, comma-separated CIDRs, empty by default).
    pub allow_private_networks: Vec<IpNet>,
    /// Most bytes read from any answer (`POSTLINE_MAX_RESPONSE_BYTES`, 64 KiB).
    pub max_response_bytes: usize,
    /// Egress proxy for every outbound call (`POSTLINE_OUTBOUND_PROXY`);
    /// the ambient `HTTP(S)_PROXY` variables are never used.
    pub proxy: Option<url::Url>,
    /// How host names are resolved (the system's resolver; tests inject their own).
    pub lookup: NameLookup,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            allow_private_networks: Vec::new(),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            proxy: None,
            lookup: NameLookup::system(),
        }
    }
}

impl OutboundConfig {
    /// Reads the settings from the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let refuse = |name: &str, value: String, reason: String| ConfigError {
            name: name.into(),
            value,
            reason,
        };
        let allowed = std::env::var("POSTLINE_ALLOW_PRIVATE_NETWORKS").unwrap_or_default();
        let allow_private_networks = policy::parse_allowed(&allowed)
            .map_err(|reason| refuse("POSTLINE_ALLOW_PRIVATE_NETWORKS", allowed.clone(), reason))?;
        let max_response_bytes: usize =
            env_or("POSTLINE_MAX_RESPONSE_BYTES", defaults.max_response_bytes)?;
        if max_response_bytes == 0 {
            return Err(refuse(
                "POSTLINE_MAX_RESPONSE_BYTES",
                "0".into(),
                "must be at least 1".into(),
            ));
        }
        let proxy = match std::env::var("POSTLINE_OUTBOUND_PROXY") {
            Ok(text) if !text.trim().is_empty() => {
                let url = url::Url::parse(text.trim()).map_err(|e| {
                    // A proxy URL may carry credentials: not echoed.
                    refuse(
                        "POSTLINE_OUTBOUND_PROXY",
                        "<redacted>".into(),
                        e.to_string(),
                    )
                })?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(refuse(
                        "POSTLINE_OUTBOUND_PROXY",
                        "<redacted>".into(),
                        "must be an http or https URL".into(),
                    ));
                }
                Some(url)
            }
            _ => None,
        };
        Ok(Self {
            allow_private_networks,
            max_response_bytes,
            proxy,
            ..defaults
        })
    }

    /// Says once, at start, which internal ranges outbound calls may reach.
    pub fn log_policy(&self) {
        if self.allow_private_networks.is_empty() {
            tracing::info!("outbound calls refuse every private, loopback and link-local address");
        } else {
            let ranges = self
                .allow_private_networks
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",");
            tracing::warn!(allowed = %ranges, "outbound calls may reach these internal ranges (POSTLINE_ALLOW_PRIVATE_NETWORKS)");
        }
        if self.proxy.is_some() {
            tracing::info!("outbound calls go through POSTLINE_OUTBOUND_PROXY");
        }
    }
}
