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

use crate::runtime::env::at_least_one;
use ipnet::IpNet;

/// Default bound of what is read from any answer.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// How outbound calls are guarded.
#[derive(Debug, Clone, clap::Args)]
pub struct OutboundConfig {
    /// Comma-separated CIDRs (e.g. `127.0.0.0/8,10.20.0.0/16`; a bare address
    /// means just that address) that outbound calls may reach although they
    /// are internal; empty allows none.
    #[arg(long, env = "POSTLINE_ALLOW_PRIVATE_NETWORKS", default_value = "", value_parser = policy::parse_allowed)]
    pub allow_private_networks: ::std::vec::Vec<IpNet>,
    /// Most bytes read of any answer from a receiver or a token endpoint; the
    /// rest is discarded by closing the connection.
    #[arg(long, env = "POSTLINE_MAX_RESPONSE_BYTES", default_value_t = DEFAULT_MAX_RESPONSE_BYTES, value_parser = at_least_one)]
    pub max_response_bytes: usize,
    /// `http(s)://host:port` egress proxy for every call to a partner URL;
    /// the ambient `HTTP_PROXY`/`HTTPS_PROXY` variables are never used.
    #[arg(long = "outbound-proxy", value_name = "URL", env = "POSTLINE_OUTBOUND_PROXY", hide_env_values = true, value_parser = parse_proxy)]
    pub proxy: Option<url::Url>,
    /// How host names are resolved (the system's resolver; tests inject their own).
    #[arg(skip)]
    pub lookup: NameLookup,
}

/// Parses `POSTLINE_OUTBOUND_PROXY`: an http or https URL. The error never
/// repeats it (a proxy URL may carry credentials).
fn parse_proxy(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text.trim()).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http or https URL".into());
    }
    Ok(url)
}

impl OutboundConfig {
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
