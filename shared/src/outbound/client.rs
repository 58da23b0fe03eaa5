//! The HTTP client for every call to a partner-typed URL (receiver
//! endpoints, PINGs, token endpoints). It refuses internal addresses at
//! connect time (see [`super::lookup`]) and for IP-literal URLs, which skip
//! name resolution; follows no redirect; ignores the ambient `HTTP_PROXY` /
//! `HTTPS_PROXY` variables (a proxy would resolve names itself, past the
//! guard) and uses only an explicitly configured egress proxy; and reads at
//! most a bounded part of any answer (see [`read_bounded`]).

use super::lookup::{allowed_addresses, GuardedResolver, NameLookup};
use super::policy::{AddressPolicy, NotAllowed};
use super::OutboundConfig;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use url::{Host, Url};

/// How long a TCP (and TLS) connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an outbound request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The destination is an internal address; nothing was sent.
    #[error(transparent)]
    NotAllowed(#[from] NotAllowed),
    /// No answer within the request's timeout.
    #[error("no answer in time")]
    Timeout,
    /// The connection could not be made or broke (the URL is left out: it
    /// may carry credentials).
    #[error("connection failed: {0}")]
    Connection(String),
}

/// An answer's body, read up to the configured bound.
#[derive(Debug, Default)]
pub struct BoundedBody {
    /// The bytes read (at most the bound).
    pub bytes: Vec<u8>,
    /// Whether the answer was longer and the rest discarded (the connection
    /// is then closed rather than drained).
    pub truncated: bool,
}

struct Guard {
    policy: Arc<AddressPolicy>,
    lookup: NameLookup,
    proxied: bool,
    max_response_bytes: usize,
}

/// The guarded client; cheap to clone.
#[derive(Clone)]
pub struct OutboundClient {
    http: reqwest::Client,
    guard: Arc<Guard>,
}

impl std::fmt::Debug for OutboundClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundClient")
            .field("allowed", &self.guard.policy.allowed())
            .field("proxied", &self.guard.proxied)
            .finish()
    }
}

impl OutboundClient {
    /// A client applying `config`, sending `User-Agent: user_agent` unless a request sets its own.
    pub fn new(config: &OutboundConfig, user_agent: &str) -> Result<Self, reqwest::Error> {
        let policy = Arc::new(AddressPolicy::new(config.allow_private_networks.clone()));
        let resolver = GuardedResolver {
            policy: policy.clone(),
            lookup: config.lookup.clone(),
            proxy_host: config
                .proxy
                .as_ref()
                .and_then(|p| p.host_str().map(str::to_ascii_lowercase)),
        };
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_max_idle_per_host(32)
            .user_agent(user_agent)
            .dns_resolver(Arc::new(resolver));
        builder = match &config.proxy {
            Some(proxy) => builder.proxy(reqwest::Proxy::all(proxy.as_str())?),
            None => builder.no_proxy(),
        };
        Ok(Self {
            http: builder.build()?,
            guard: Arc::new(Guard {
                policy,
                lookup: config.lookup.clone(),
                proxied: config.proxy.is_some(),
                max_response_bytes: config.max_response_bytes,
            }),
        })
    }

    /// Starts a POST to `url`; send it with [`Self::send`].
    pub fn post(&self, url: &str) -> reqwest::RequestBuilder {
        self.http.post(url)
    }

    /// Sends `request`, refusing an internal destination without connecting.
    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, SendError> {
        let request = request
            .build()
            .map_err(|e| SendError::Connection(error_chain(&e.without_url())))?;
        self.check_before_sending(request.url()).await?;
        self.http.execute(request).await.map_err(|error| {
            if let Some(refused) = find_not_allowed(&error) {
                SendError::NotAllowed(refused)
            } else if error.is_timeout() {
                SendError::Timeout
            } else {
                SendError::Connection(error_chain(&error.without_url()))
            }
        })
    }

    /// The checks the resolver cannot make: an IP literal is never resolved,
    /// and behind a proxy the proxy resolves, so the target's own addresses
    /// are checked here (the proxy may still get another DNS answer: an
    /// egress proxy that enforces its own rules closes that gap).
    async fn check_before_sending(&self, url: &Url) -> Result<(), SendError> {
        match url.host() {
            Some(Host::Ipv4(ip)) => Ok(self.guard.policy.check(IpAddr::V4(ip))?),
            Some(Host::Ipv6(ip)) => Ok(self.guard.policy.check(IpAddr::V6(ip))?),
            Some(Host::Domain(name)) if self.guard.proxied => {
                let addresses = self
                    .guard
                    .lookup
                    .lookup(name)
                    .await
                    .map_err(|e| SendError::Connection(format!("resolving the host: {e}")))?;
                for ip in addresses {
                    self.guard.policy.check(ip)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Whether `url` may be called, as far as can be told now: an internal IP
    /// literal, or a name whose every address is internal, is refused. A name
    /// that does not resolve passes (the check at connect time still holds).
    pub async fn check_destination(&self, url: &str) -> Result<(), NotAllowed> {
        let Ok(url) = Url::parse(url) else {
            return Ok(());
        };
        let addresses = match url.host() {
            Some(Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
            Some(Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
            Some(Host::Domain(name)) => self.guard.lookup.lookup(name).await.unwrap_or_default(),
            None => return Ok(()),
        };
        allowed_addresses(&self.guard.policy, &addresses).map(|_| ())
    }

    /// Reads `response`'s body up to the configured bound.
    pub async fn read_body(
        &self,
        response: reqwest::Response,
    ) -> Result<BoundedBody, reqwest::Error> {
        read_bounded(response, self.guard.max_response_bytes).await
    }
}

/// Reads at most `limit` bytes of `response`'s body; dropping the rest
/// closes the connection instead of reading it.
pub async fn read_bounded(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<BoundedBody, reqwest::Error> {
    let mut body = BoundedBody::default();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - body.bytes.len();
        if chunk.len() > room {
            body.bytes.extend_from_slice(&chunk[..room]);
            body.truncated = true;
            break;
        }
        body.bytes.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The refusal behind a failed request, when the resolver refused every address.
fn find_not_allowed(error: &reqwest::Error) -> Option<NotAllowed> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<NotAllowed>() {
            return Some(refused.clone());
        }
        source = cause.source();
    }
    None
}

/// An error and its sources on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
