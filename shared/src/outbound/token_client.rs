//! The way to the receivers' bearer tokens, for delivery and for ingest's
//! PING: a short in-process copy, then the Redis cache the token service
//! fills, then the token service itself (over HTTP) on a miss. Concurrent
//! look-ups of the same token share one, and a token due for refresh is used
//! while a fresh one is asked for in the background, so a token in use never
//! lapses.
//!
//! The token service reads the credentials from the stored subscription; a
//! PING of a subscription not stored yet names its staged version instead.

use crate::model::secret::Secret;
use crate::model::subscription::Subscription;
use crate::outbound::{error_chain, read_bounded};
use crate::redis::token_cache::{Token, TokenCache};
use crate::runtime::coalesce::Coalesce;
use crate::runtime::locks::lock;
use crate::runtime::metrics::{counter, counter_vec};
use prometheus::{IntCounter, IntCounterVec, Registry};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a token is used from memory before Redis is read again: short,
/// so an invalidation elsewhere reaches every replica quickly.
const LOCAL_TTL: Duration = Duration::from_secs(5);
/// How long the token service may take: it may wait for a partner's token
/// endpoint (10 s by default) and for another replica's refresh.
const SERVICE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most bytes read from a token service answer (a token and its expiry).
const SERVICE_ANSWER_BYTES: usize = 64 * 1024;

/// Why no token could be had; the text lands in the attempt log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token service could not be reached or did not answer in time.
    #[error("token service unreachable: {0}")]
    Unreachable(String),
    /// The token service answered with an error (e.g. the partner's endpoint failed).
    #[error("{0}")]
    Refused(String),
}

/// Token metrics of the services asking for tokens.
#[derive(Clone)]
pub struct TokenClientMetrics {
    /// Token look-ups by where the token came from: `memory`, `redis`,
    /// `service`, or `error` when none was had.
    pub lookups: IntCounterVec,
    /// Receivers' 401 answers after which the token was refreshed and the event resent.
    pub rejections: IntCounter,
}

impl TokenClientMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        Ok(Self {
            lookups: counter_vec(
                registry,
                "postline_token_lookups_total",
                "Bearer token look-ups, by source",
                &["source"],
            )?,
            rejections: counter(
                registry,
                "postline_token_rejections_total",
                "Receiver 401 answers after which the token was refreshed and the request resent once",
            )?,
        })
    }
}

/// Query parameter of the token service naming a staged subscription.
pub const STAGED_PARAM: &str = "staged";

/// Which subscription document the token service reads the credentials from.
#[derive(Debug, Clone)]
struct Source {
    /// The subscription id.
    id: String,
    /// Its staged version, when it is not stored yet (a PING's).
    staged: Option<String>,
}

impl Source {
    fn of(subscription: &Subscription, staged: Option<&str>) -> Self {
        Self {
            id: subscription.id().to_string(),
            staged: staged.map(str::to_string),
        }
    }
}

struct Local {
    token: Token,
    until: Instant,
}

struct Inner {
    http: reqwest::Client,
    base_url: String,
    cache: TokenCache,
    local: Mutex<HashMap<String, Local>>,
    refreshing: Mutex<HashSet<String>>,
    coalesce: Coalesce<Result<Token, TokenError>>,
    metrics: TokenClientMetrics,
}

/// Hands out the bearer token a subscription's receiver needs.
#[derive(Clone)]
pub struct TokenClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TokenClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenClient")
            .field("base_url", &self.inner.base_url)
            .finish()
    }
}

impl TokenClient {
    /// A client of the token service at `base_url`, reading `cache` first.
    pub fn new(
        base_url: &str,
        cache: TokenCache,
        metrics: TokenClientMetrics,
    ) -> Result<Self, reqwest::Error> {
        // The token service is the operator's own (not partner-typed), so
        // this client is not guarded; it still ignores ambient proxies.
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(SERVICE_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base_url: base_url.trim_end_matches('/').to_string(),
                cache,
                local: Mutex::new(HashMap::new()),
                refreshing: Mutex::new(HashSet::new()),
                coalesce: Coalesce::default(),
                metrics,
            }),
        })
    }

    /// Whether `subscription`'s receiver auth needs a bearer token.
    pub fn needs_token(&self, subscription: &Subscription) -> bool {
        self.inner
            .cache
            .fingerprint(&subscription.spec.auth)
            .is_some()
    }

    /// The bearer token for `subscription`, or `None` when its auth mode
    /// needs none; `staged` names its staged version when it is not stored yet.
    pub async fn token(
        &self,
        subscription: &Subscription,
        staged: Option<&str>,
    ) -> Result<Option<Secret>, TokenError> {
        let Some(fingerprint) = self.inner.cache.fingerprint(&subscription.spec.auth) else {
            return Ok(None);
        };
        let outcome = self
            .lookup(Source::of(subscription, staged), &fingerprint)
            .await;
        if outcome.is_err() {
            self.count("error");
        }
        outcome.map(|token| Some(token.access_token))
    }

    /// After the receiver rejected `rejected`: asks the token service to drop
    /// it (only if it is still the cached one) and returns a fresh token.
    pub async fn refresh_after_rejection(
        &self,
        subscription: &Subscription,
        rejected: &Secret,
        staged: Option<&str>,
    ) -> Result<Secret, TokenError> {
        self.inner.metrics.rejections.inc();
        let fingerprint = self
            .inner
            .cache
            .fingerprint(&subscription.spec.auth)
            .unwrap_or_default();
        self.forget(&fingerprint, rejected);
        // Keyed by the rejected token too: a concurrent look-up may still be
        // returning it, and its answer must not be taken for a fresh one.
        let key = format!("{fingerprint}:rejected:{}", short_hash(rejected));
        let this = self.clone();
        let (source, rejected) = (Source::of(subscription, staged), rejected.clone());
        let token = self
            .inner
            .coalesce
            .run(&key, move || async move {
                this.call_service(&source, Some(&rejected)).await
            })
            .await?;
        self.remember(&fingerprint, &token);
        Ok(token.access_token)
    }

    async fn lookup(&self, source: Source, fingerprint: &str) -> Result<Token, TokenError> {
        let now = chrono::Utc::now();
        if let Some(token) = self.in_memory(fingerprint, now) {
            self.count("memory");
            self.refresh_if_due(&source, fingerprint, &token, now);
            return Ok(token);
        }
        match self.inner.cache.read(fingerprint).await {
            Ok(Some(token)) if token.is_usable(now) => {
                self.count("redis");
                self.remember(fingerprint, &token);
                self.refresh_if_due(&source, fingerprint, &token, now);
                return Ok(token);
            }
            Ok(_) => {}
            // The token service can still answer: it owns the cache.
            Err(error) => {
                tracing::warn!(%error, subscription = %source.id, "reading the token cache failed")
            }
        }
        let token = self.fetch_coalesced(source, fingerprint).await?;
        self.count("service");
        Ok(token)
    }

    async fn fetch_coalesced(
        &self,
        source: Source,
        fingerprint: &str,
    ) -> Result<Token, TokenError> {
        let this = self.clone();
        let fingerprint_owned = fingerprint.to_string();
        let token = self
            .inner
            .coalesce
            .run(fingerprint, move || async move {
                let token = this.call_service(&source, None).await?;
                this.remember(&fingerprint_owned, &token);
                Ok(token)
            })
            .await?;
        Ok(token)
    }

    /// Asks for the next token in the background once the current one is due,
    /// one request per token at a time.
    fn refresh_if_due(
        &self,
        source: &Source,
        fingerprint: &str,
        token: &Token,
        now: chrono::DateTime<chrono::Utc>,
    ) {
        if !token.refresh_due(now) {
            return;
        }
        if !lock(&self.inner.refreshing).insert(fingerprint.to_string()) {
            return;
        }
        let this = self.clone();
        let (source, fingerprint) = (source.clone(), fingerprint.to_string());
        tokio::spawn(async move {
            let id = source.id.clone();
            if let Err(error) = this.fetch_coalesced(source, &fingerprint).await {
                // The current token serves until it lapses; the next use asks again.
                tracing::warn!(%error, subscription = %id, "refreshing a token ahead of its expiry failed");
            }
            lock(&this.inner.refreshing).remove(&fingerprint);
        });
    }

    async fn call_service(
        &self,
        source: &Source,
        rejected: Option<&Secret>,
    ) -> Result<Token, TokenError> {
        let inner = &self.inner;
        let id = &source.id;
        let mut request = match rejected {
            None => inner
                .http
                .post(format!("{}/v1/tokens/{id}", inner.base_url)),
            Some(token) => inner
                .http
                .post(format!("{}/v1/tokens/{id}/invalidate", inner.base_url))
                .json(&serde_json::json!({ "access_token": token.expose() })),
        };
        if let Some(staged) = &source.staged {
            request = request.query(&[(STAGED_PARAM, staged.as_str())]);
        }
        let response = request
            .send()
            .await
            .map_err(|e| TokenError::Unreachable(error_chain(&e.without_url())))?;
        let status = response.status();
        let body = read_bounded(response, SERVICE_ANSWER_BYTES)
            .await
            .map_err(|e| TokenError::Unreachable(error_chain(&e.without_url())))?
            .bytes;
        if status.is_success() {
            return serde_json::from_slice::<Token>(&body).map_err(|_| {
                TokenError::Refused(format!("token service answered {status} without a token"))
            });
        }
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| format!("token service answered {status}"));
        Err(TokenError::Refused(message))
    }

    fn in_memory(&self, fingerprint: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Token> {
        let local = lock(&self.inner.local);
        let entry = local.get(fingerprint)?;
        (entry.until > Instant::now() && entry.token.is_usable(now)).then(|| entry.token.clone())
    }

    fn remember(&self, fingerprint: &str, token: &Token) {
        lock(&self.inner.local).insert(
            fingerprint.to_string(),
            Local {
                token: token.clone(),
                until: Instant::now() + LOCAL_TTL,
            },
        );
    }

    fn forget(&self, fingerprint: &str, rejected: &Secret) {
        let mut local = lock(&self.inner.local);
        if local
            .get(fingerprint)
            .is_some_and(|entry| entry.token.access_token == *rejected)
        {
            local.remove(fingerprint);
        }
    }

    fn count(&self, source: &str) {
        self.inner
            .metrics
            .lookups
            .with_label_values(&[source])
            .inc();
    }
}

/// A short, non-reversible tag of a token, to key in-process work by it.
fn short_hash(token: &Secret) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    token.expose().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}
