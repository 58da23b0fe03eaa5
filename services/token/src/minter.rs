//! Minting and caching tokens, one refresh at a time per set of credentials
//! across every process.
//!
//! A request for a token is answered from the Redis cache while the cached
//! token is fresh. Otherwise one process takes the refresh lock (`SET NX PX`)
//! and calls the partner; the others — in this process they simply join the
//! same call, elsewhere they poll Redis — wait for the fresh token, or for
//! the error the refresh ended with, instead of calling the partner too. A
//! token that is due for refresh but still usable is handed out while the
//! refresh runs, and kept when the refresh fails.

use crate::fetch::{self, FetchError, Fetched};
use crate::metrics::TokenMetrics;
use chrono::{DateTime, Utc};
use postline_shared::model::ids::SubscriptionId;
use postline_shared::model::secret::Secret;
use postline_shared::model::subscription::ReceiverAuth;
use postline_shared::outbound::OutboundClient;
use postline_shared::redis::subscription_store::{StoreError, SubscriptionStore};
use postline_shared::redis::token_cache::{Token, TokenCache, TokenCacheError};
use postline_shared::runtime::coalesce::Coalesce;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a process waiting for another's refresh looks at Redis.
const LOCK_POLL: Duration = Duration::from_millis(25);
/// How long a failed fetch's error stands: the processes that waited on it get
/// it, and new requests get it too instead of calling the failing partner again.
const FAILURE_HOLD: Duration = Duration::from_secs(2);
/// Extra lifetime of the refresh lock beyond the fetch timeout, so a slow
/// fetch never outlives its lock; a crashed holder's lock expires after it.
const LOCK_SLACK: Duration = Duration::from_secs(5);
/// Times a request retries taking the lock after a holder vanished without a result.
const LOCK_ROUNDS: usize = 3;

/// Deletes a key only while it still holds the given value: releases the
/// refresh lock only if this process holds it, and invalidates a cached token
/// only if it is still the rejected one.
const DELETE_IF_EQUAL: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Why no token could be handed out.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MintError {
    /// No such subscription.
    #[error("subscription {0} does not exist")]
    NotFound(String),
    /// The subscription's auth mode uses no token.
    #[error("subscription {id} uses auth mode {mode}, which needs no token")]
    NoTokenMode {
        /// Subscription id.
        id: String,
        /// Its auth mode.
        mode: &'static str,
    },
    /// The partner's token endpoint failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// Another process held the refresh lock for longer than a fetch may take.
    #[error("timed out waiting for another process's token refresh")]
    LockTimeout,
    /// Redis or the subscription store failed.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl From<redis::RedisError> for MintError {
    fn from(error: redis::RedisError) -> Self {
        Self::Unavailable(format!("redis: {error}"))
    }
}

/// Token lifetimes: when a fetched token stops being used and when it is replaced.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long a partner's token endpoint has to answer.
    pub fetch_timeout: Duration,
    /// Taken off the partner's lifetime.
    pub expiry_margin: Duration,
    /// How long before the end of use the token is replaced (at most a third of its use).
    pub refresh_ahead: Duration,
}

impl Timing {
    /// The cached form of a token fetched by a request sent at `sent_at`.
    pub fn token(&self, fetched: Fetched, sent_at: DateTime<Utc>) -> Token {
        let lifetime = fetched.lifetime;
        // A token shorter-lived than twice the margin is used for half its life.
        let usable = if lifetime > self.expiry_margin * 2 {
            lifetime - self.expiry_margin
        } else {
            lifetime / 2
        };
        let ahead = self.refresh_ahead.min(usable / 3);
        let to_chrono = |d: Duration| chrono::Duration::from_std(d).unwrap_or_default();
        let expires_at = sent_at + to_chrono(usable);
        Token {
            access_token: fetched.token,
            expires_at,
            refresh_at: expires_at - to_chrono(ahead),
        }
    }

    fn lock_ttl(&self) -> Duration {
        self.fetch_timeout + LOCK_SLACK
    }
}

/// What a refresh that failed leaves for the processes that waited on it.
#[derive(Debug, Serialize, Deserialize)]
struct FailedRefresh {
    /// The lock value of the failed attempt.
    lock: String,
    error: FetchError,
}

enum Waited {
    Token(Token),
    Failed(FetchError),
    Retry,
}

/// Hands out tokens for subscriptions, fetching them when needed.
pub struct Minter {
    store: SubscriptionStore,
    cache: TokenCache,
    redis: ConnectionManager,
    http: OutboundClient,
    timing: Timing,
    metrics: TokenMetrics,
    coalesce: Coalesce<Result<Token, MintError>>,
}

impl Minter {
    /// A minter reading subscriptions from `store` and caching through `cache`.
    pub fn new(
        store: SubscriptionStore,
        cache: TokenCache,
        redis: ConnectionManager,
        http: OutboundClient,
        timing: Timing,
        metrics: TokenMetrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            cache,
            redis,
            http,
            timing,
            metrics,
            coalesce: Coalesce::default(),
        })
    }

    /// A fresh token for subscription `id`: cached, or fetched now. With
    /// `staged`, the credentials are those of that staged version of the
    /// subscription (a PING before it is stored).
    pub async fn token(
        self: &Arc<Self>,
        id: &str,
        staged: Option<&str>,
    ) -> Result<Token, MintError> {
        let (fingerprint, auth) = self.credentials(id, staged).await?;
        self.coalesced(id, fingerprint, auth).await
    }

    /// Drops `rejected` from the cache if it is still the cached token (a
    /// newer token fetched meanwhile is kept), then hands out a fresh one.
    pub async fn invalidate(
        self: &Arc<Self>,
        id: &str,
        staged: Option<&str>,
        rejected: &Secret,
    ) -> Result<Token, MintError> {
        let (fingerprint, auth) = self.credentials(id, staged).await?;
        let key = self.cache.keys().token(&fingerprint);
        let raw: Option<String> = self.redis.clone().get(&key).await?;
        let still_cached = raw.as_ref().is_some_and(|raw| {
            // An unreadable entry is useless: drop it too.
            self.cache
                .open(&fingerprint, raw)
                .map_or(true, |token| token.access_token == *rejected)
        });
        match raw {
            Some(raw) if still_cached => {
                self.delete_if_equal(&key, &raw).await?;
                self.metrics
                    .invalidations
                    .with_label_values(&["deleted"])
                    .inc();
                tracing::info!(subscription = %id, "cached token rejected by the receiver; dropped");
            }
            _ => self
                .metrics
                .invalidations
                .with_label_values(&["stale"])
                .inc(),
        }
        let token = self
            .coalesced(id, fingerprint.clone(), auth.clone())
            .await?;
        if token.access_token == *rejected {
            // Joined a look-up that read the cache before the drop above.
            return self.obtain(id, &fingerprint, &auth).await;
        }
        Ok(token)
    }

    async fn credentials(
        &self,
        id: &str,
        staged: Option<&str>,
    ) -> Result<(String, ReceiverAuth), MintError> {
        // A malformed id names no subscription.
        let subscription_id =
            SubscriptionId::parse(id).map_err(|_| MintError::NotFound(id.to_string()))?;
        let read = match staged {
            Some(nonce) => self.store.get_staged(&subscription_id, nonce).await,
            None => self.store.get(&subscription_id).await,
        };
        let subscription = read.map_err(|error| match error {
            StoreError::NotFound(id) => MintError::NotFound(id),
            other => MintError::Unavailable(other.to_string()),
        })?;
        let auth = subscription.spec.auth;
        let fingerprint = self
            .cache
            .fingerprint(&auth)
            .ok_or_else(|| MintError::NoTokenMode {
                id: id.to_string(),
                mode: auth.mode(),
            })?;
        Ok((fingerprint, auth))
    }

    /// One look-up per credentials at a time in this process; the others join it.
    async fn coalesced(
        self: &Arc<Self>,
        id: &str,
        fingerprint: String,
        auth: ReceiverAuth,
    ) -> Result<Token, MintError> {
        let this = self.clone();
        let id = id.to_string();
        let key = fingerprint.clone();
        self.coalesce
            .run(&key, move || async move {
                this.obtain(&id, &fingerprint, &auth).await
            })
            .await
    }

    async fn obtain(
        &self,
        id: &str,
        fingerprint: &str,
        auth: &ReceiverAuth,
    ) -> Result<Token, MintError> {
        let keys = self.cache.keys();
        for _ in 0..LOCK_ROUNDS {
            let now = Utc::now();
            let cached = self.read_cached(fingerprint).await?;
            let usable = cached.filter(|t| t.is_usable(now));
            if let Some(token) = usable.as_ref().filter(|t| !t.refresh_due(now)) {
                self.metrics.lookups.with_label_values(&["hit"]).inc();
                return Ok(token.clone());
            }
            let result = if usable.is_some() {
                "refresh_due"
            } else {
                "miss"
            };
            self.metrics.lookups.with_label_values(&[result]).inc();
            // A refresh failed moments ago: its error stands for a while, so a
            // failing partner gets one call per hold, not one per delivery.
            if let Some(failed) = self.recent_failure(fingerprint).await? {
                return match usable {
                    Some(token) => Ok(token),
                    None => Err(failed.error.into()),
                };
            }
            let lock = uuid::Uuid::new_v4().simple().to_string();
            let acquired: Option<String> = redis::cmd("SET")
                .arg(keys.token_lock(fingerprint))
                .arg(&lock)
                .arg("NX")
                .arg("PX")
                .arg(self.timing.lock_ttl().as_millis() as u64)
                .query_async(&mut self.redis.clone())
                .await?;
            if acquired.is_some() {
                return self
                    .refresh_holding_lock(id, fingerprint, auth, &lock, usable)
                    .await;
            }
            // Another process is refreshing: a still-usable token serves meanwhile.
            if let Some(token) = usable {
                return Ok(token);
            }
            match self.wait_for_refresh(fingerprint).await? {
                Waited::Token(token) => return Ok(token),
                Waited::Failed(error) => return Err(error.into()),
                Waited::Retry => continue,
            }
        }
        Err(MintError::LockTimeout)
    }

    async fn refresh_holding_lock(
        &self,
        id: &str,
        fingerprint: &str,
        auth: &ReceiverAuth,
        lock: &str,
        usable: Option<Token>,
    ) -> Result<Token, MintError> {
        let keys = self.cache.keys();
        let lock_key = keys.token_lock(fingerprint);
        // A refresh may have completed between the read and the lock.
        let now = Utc::now();
        if let Some(token) = self
            .read_cached(fingerprint)
            .await?
            .filter(|t| t.is_usable(now) && !t.refresh_due(now))
        {
            self.delete_if_equal(&lock_key, lock).await?;
            return Ok(token);
        }
        let sent_at = Utc::now();
        let started = Instant::now();
        let fetched = fetch::fetch(&self.http, auth, self.timing.fetch_timeout).await;
        self.metrics
            .fetch_duration
            .observe(started.elapsed().as_secs_f64());
        let outcome = match fetched {
            Ok(fetched) => {
                self.metrics.fetches.with_label_values(&["success"]).inc();
                let token = self.timing.token(fetched, sent_at);
                if let Err(error) = self.cache.write(fingerprint, &token).await {
                    // The token still serves this request; others will fetch their own.
                    tracing::warn!(%error, subscription = %id, "caching a fetched token failed");
                }
                tracing::info!(
                    subscription = %id,
                    expires_at = %token.expires_at,
                    refresh_at = %token.refresh_at,
                    duration_ms = started.elapsed().as_millis() as u64,
                    "token fetched"
                );
                Ok(token)
            }
            Err(error) => {
                self.metrics
                    .fetches
                    .with_label_values(&[error.outcome()])
                    .inc();
                tracing::warn!(%error, subscription = %id, "fetching a token failed");
                let failed = FailedRefresh {
                    lock: lock.to_string(),
                    error: error.clone(),
                };
                // Best effort: without it, the next request simply tries again.
                let _: Result<(), _> = self
                    .redis
                    .clone()
                    .pset_ex(
                        keys.token_error(fingerprint),
                        serde_json::to_string(&failed).unwrap_or_default(),
                        FAILURE_HOLD.as_millis() as u64,
                    )
                    .await;
                match usable {
                    // Keep using the current token until it lapses.
                    Some(token) => Ok(token),
                    None => Err(MintError::Fetch(error)),
                }
            }
        };
        if let Err(error) = self.delete_if_equal(&lock_key, lock).await {
            // The lock expires by itself; waiters then retry.
            tracing::warn!(%error, subscription = %id, "releasing the token refresh lock failed");
        }
        outcome
    }

    /// Polls Redis until the refresh another process holds ends.
    async fn wait_for_refresh(&self, fingerprint: &str) -> Result<Waited, MintError> {
        let keys = self.cache.keys();
        let watched = [
            keys.token(fingerprint),
            keys.token_lock(fingerprint),
            keys.token_error(fingerprint),
        ];
        let started = Instant::now();
        let deadline = started + self.timing.lock_ttl() + Duration::from_secs(1);
        let mut seen_lock: Option<String> = None;
        let waited = loop {
            let (token, lock, failed): (Option<String>, Option<String>, Option<String>) =
                redis::cmd("MGET")
                    .arg(&watched[..])
                    .query_async(&mut self.redis.clone())
                    .await?;
            let now = Utc::now();
            let fresh = token
                .and_then(|raw| self.cache.open(fingerprint, &raw).ok())
                .filter(|t| t.is_usable(now) && !t.refresh_due(now));
            if let Some(token) = fresh {
                break ("token", Waited::Token(token));
            }
            match lock {
                Some(holder) => seen_lock = Some(holder),
                None => {
                    let failed = failed
                        .and_then(|raw| serde_json::from_str::<FailedRefresh>(&raw).ok())
                        .filter(|f| seen_lock.as_ref().is_none_or(|seen| *seen == f.lock));
                    break match failed {
                        Some(failed) => ("error", Waited::Failed(failed.error)),
                        None => ("retry", Waited::Retry),
                    };
                }
            }
            if Instant::now() >= deadline {
                self.metrics
                    .lock_waits
                    .with_label_values(&["timeout"])
                    .inc();
                return Err(MintError::LockTimeout);
            }
            tokio::time::sleep(LOCK_POLL).await;
        };
        self.metrics.lock_waits.with_label_values(&[waited.0]).inc();
        self.metrics
            .lock_wait_duration
            .observe(started.elapsed().as_secs_f64());
        Ok(waited.1)
    }

    async fn recent_failure(&self, fingerprint: &str) -> Result<Option<FailedRefresh>, MintError> {
        let raw: Option<String> = self
            .redis
            .clone()
            .get(self.cache.keys().token_error(fingerprint))
            .await?;
        Ok(raw.and_then(|raw| serde_json::from_str(&raw).ok()))
    }

    async fn read_cached(&self, fingerprint: &str) -> Result<Option<Token>, MintError> {
        match self.cache.read(fingerprint).await {
            Ok(token) => Ok(token),
            Err(TokenCacheError::Redis(error)) => Err(error.into()),
            Err(error) => {
                // Unreadable (e.g. sealed with a key since removed): fetch anew.
                tracing::warn!(%error, "ignoring an unreadable cached token");
                Ok(None)
            }
        }
    }

    async fn delete_if_equal(&self, key: &str, value: &str) -> Result<(), MintError> {
        let _: i64 = redis::Script::new(DELETE_IF_EQUAL)
            .key(key)
            .arg(value)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> Timing {
        Timing {
            fetch_timeout: Duration::from_secs(10),
            expiry_margin: Duration::from_secs(30),
            refresh_ahead: Duration::from_secs(60),
        }
    }

    fn fetched(secs: u64) -> Fetched {
        Fetched {
            token: Secret::new("t"),
            lifetime: Duration::from_secs(secs),
        }
    }

    #[test]
    fn long_lived_tokens_end_a_margin_early_and_refresh_ahead() {
        let sent = Utc::now();
        let token = timing().token(fetched(3600), sent);
        assert_eq!(token.expires_at - sent, chrono::Duration::seconds(3570));
        assert_eq!(
            token.expires_at - token.refresh_at,
            chrono::Duration::seconds(60)
        );
    }

    #[test]
    fn short_lived_tokens_are_used_for_half_their_life() {
        let sent = Utc::now();
        let token = timing().token(fetched(40), sent);
        assert_eq!(token.expires_at - sent, chrono::Duration::seconds(20));
        assert!(token.refresh_at > sent && token.refresh_at < token.expires_at);
        assert!(token.refresh_at - sent >= chrono::Duration::seconds(13));
    }
}
