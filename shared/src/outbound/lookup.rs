//! Name resolution for outbound calls: Postline resolves every partner host
//! itself, drops the addresses the [`AddressPolicy`] refuses, and hands the
//! HTTP client only the addresses it checked, so the connection goes to an
//! address that was checked for that very request (a DNS answer that changes
//! between a check and the connect, i.e. rebinding, cannot reach an internal
//! address).
//!
//! The resolver itself is replaceable ([`NameLookup::from_fn`]) so tests can
//! answer a name differently from one lookup to the next.

use super::policy::{AddressPolicy, NotAllowed};
use futures::future::BoxFuture;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// How long one name may take to resolve.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

type LookupFn = dyn Fn(String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> + Send + Sync;

/// Turns a host name into addresses: the system resolver, or one a test supplies.
#[derive(Clone)]
pub struct NameLookup(Arc<LookupFn>);

impl fmt::Debug for NameLookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NameLookup")
    }
}

impl Default for NameLookup {
    fn default() -> Self {
        Self::system()
    }
}

impl NameLookup {
    /// The operating system's resolver (`getaddrinfo` through Tokio).
    pub fn system() -> Self {
        Self::from_fn(|name| async move {
            let addresses = tokio::net::lookup_host((name.as_str(), 0)).await?;
            Ok(addresses.map(|a| a.ip()).collect())
        })
    }

    /// A resolver of one's own.
    pub fn from_fn<F, Fut>(lookup: F) -> Self
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = std::io::Result<Vec<IpAddr>>> + Send + 'static,
    {
        Self(Arc::new(move |name| Box::pin(lookup(name))))
    }

    /// The addresses of `name`, within [`LOOKUP_TIMEOUT`].
    pub async fn lookup(&self, name: &str) -> std::io::Result<Vec<IpAddr>> {
        // `[::1]` arrives bracketed from some callers.
        let name = name.trim_start_matches('[').trim_end_matches(']');
        match tokio::time::timeout(LOOKUP_TIMEOUT, (self.0)(name.to_string())).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("resolving the host took longer than {LOOKUP_TIMEOUT:?}"),
            )),
        }
    }
}

/// Keeps the addresses `policy` allows; when none is left, the first refusal.
pub fn allowed_addresses(
    policy: &AddressPolicy,
    addresses: &[IpAddr],
) -> Result<Vec<IpAddr>, NotAllowed> {
    let mut refused = None;
    let mut allowed = Vec::with_capacity(addresses.len());
    for &ip in addresses {
        match policy.check(ip) {
            Ok(()) => allowed.push(ip),
            Err(error) => {
                refused.get_or_insert(error);
            }
        }
    }
    match refused {
        Some(error) if allowed.is_empty() => Err(error),
        _ => Ok(allowed),
    }
}

/// The resolver the outbound HTTP client connects through.
pub(super) struct GuardedResolver {
    pub(super) policy: Arc<AddressPolicy>,
    pub(super) lookup: NameLookup,
    /// The configured egress proxy's host: the operator's own, so exempt.
    pub(super) proxy_host: Option<String>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_ascii_lowercase();
        let policy = self.policy.clone();
        let lookup = self.lookup.clone();
        let exempt = self.proxy_host.as_deref() == Some(host.as_str());
        Box::pin(async move {
            let addresses = lookup.lookup(&host).await?;
            let usable = if exempt {
                addresses
            } else {
                allowed_addresses(&policy, &addresses)?
            };
            if usable.is_empty() {
                return Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the host name has no address",
                ))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            // Port 0: reqwest puts in the URL's port.
            let addrs: reqwest::dns::Addrs = Box::new(
                usable
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, 0))
                    .collect::<Vec<_>>()
                    .into_iter(),
            );
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::policy::parse_allowed;

    #[test]
    fn refused_addresses_are_dropped_and_only_an_all_refused_answer_fails() {
        let policy = AddressPolicy::new(parse_allowed("127.0.0.0/8").unwrap());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            allowed_addresses(&policy, &[ip("10.0.0.1"), ip("127.0.0.1"), ip("8.8.8.8")]),
            Ok(vec![ip("127.0.0.1"), ip("8.8.8.8")])
        );
        let refused =
            allowed_addresses(&policy, &[ip("10.1.2.3"), ip("169.254.169.254")]).unwrap_err();
        assert_eq!(refused.ip, ip("10.1.2.3"));
        assert_eq!(allowed_addresses(&policy, &[]), Ok(vec![]));
    }
}
