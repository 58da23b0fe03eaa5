//! The bearer-token cache in Redis, shared by the token service (which fills
//! it) and delivery (which reads it directly and asks the token service only
//! on a miss).
//!
//! A token is cached under a fingerprint of its credentials (an HMAC with a
//! key derived from the encryption key, so the key name reveals nothing),
//! sealed like every other secret at rest, with a Redis TTL that ends at the
//! token's usable expiry. `refresh_at` is earlier: from then on, readers keep
//! using the token but ask for a fresh one, so a token in use is replaced
//! before it lapses.

use crate::model::secret::Secret;
use crate::model::subscription::ReceiverAuth;
use crate::redis::keys::RedisKeys;
use crate::runtime::encryption::{EncryptionError, KeyRing};
use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

/// A bearer token and when to stop using it; also the token service's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Token {
    /// The token (sent as `Authorization: Bearer …`).
    #[schema(value_type = String)]
    pub access_token: Secret,
    /// When the token must no longer be sent (the partner's expiry minus a safety margin).
    pub expires_at: DateTime<Utc>,
    /// From when a fresh token should be fetched while this one is still used.
    pub refresh_at: DateTime<Utc>,
}

impl Token {
    /// Whether the token may still be sent at `now`.
    pub fn is_usable(&self, now: DateTime<Utc>) -> bool {
        now < self.expires_at
    }

    /// Whether it is time to fetch the next token.
    pub fn refresh_due(&self, now: DateTime<Utc>) -> bool {
        now >= self.refresh_at
    }
}

/// Why reading or writing the cache failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenCacheError {
    /// Redis failed or is unreachable.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The cached value does not open (key rotated away, or tampered).
    #[error("cached token cannot be opened: {0}")]
    Sealed(#[from] EncryptionError),
    /// The opened value is not a token.
    #[error("cached token is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
}

/// Reads and writes cached tokens of one namespace.
#[derive(Clone)]
pub struct TokenCache {
    redis: ConnectionManager,
    keys: RedisKeys,
    keyring: KeyRing,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("keys", &self.keys)
            .finish()
    }
}

impl TokenCache {
    /// A cache over `redis`, sealing with `keyring`.
    pub fn new(redis: ConnectionManager, keys: RedisKeys, keyring: KeyRing) -> Self {
        Self {
            redis,
            keys,
            keyring,
        }
    }

    /// The Redis key names of this namespace.
    pub fn keys(&self) -> &RedisKeys {
        &self.keys
    }

    /// The cache name of `auth`'s credentials; `None` for modes without tokens.
    pub fn fingerprint(&self, auth: &ReceiverAuth) -> Option<String> {
        auth.token_credentials()
            .map(|credentials| self.keyring.fingerprint(&credentials))
    }

    /// The cached token of `fingerprint`, if any (expired ones are gone by TTL).
    pub async fn read(&self, fingerprint: &str) -> Result<Option<Token>, TokenCacheError> {
        let raw: Option<String> = self.redis.clone().get(self.keys.token(fingerprint)).await?;
        raw.map(|raw| self.open(fingerprint, &raw)).transpose()
    }

    /// Seals `token` as stored under `fingerprint`.
    pub fn seal(&self, fingerprint: &str, token: &Token) -> String {
        // Plain data: serializing cannot fail.
        let clear = serde_json::to_vec(token).unwrap_or_default();
        self.keyring.seal(&clear, &context(fingerprint))
    }

    /// Opens a stored value of `fingerprint`.
    pub fn open(&self, fingerprint: &str, raw: &str) -> Result<Token, TokenCacheError> {
        let clear = self.keyring.open(raw, &context(fingerprint))?;
        Ok(serde_json::from_slice(&clear)?)
    }

    /// Stores `token` until its `expires_at`; returns the stored (sealed) value.
    /// A token already past its expiry is not stored.
    pub async fn write(&self, fingerprint: &str, token: &Token) -> Result<String, TokenCacheError> {
        let sealed = self.seal(fingerprint, token);
        let ttl_ms = (token.expires_at - Utc::now()).num_milliseconds();
        if ttl_ms > 0 {
            let _: () = self
                .redis
                .clone()
                .pset_ex(
                    self.keys.token(fingerprint),
                    &sealed,
                    u64::try_from(ttl_ms).unwrap_or(1),
                )
                .await?;
        }
        Ok(sealed)
    }
}

fn context(fingerprint: &str) -> String {
    format!("token:{fingerprint}")
}
