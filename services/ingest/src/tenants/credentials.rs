//! Tenant credentials: scopes, OAuth client secrets (kept only as argon2
//! hashes), opaque access tokens and session values (random, kept in Redis
//! only as SHA-256 digests), and the slow-down applied to a client id after
//! failed authentications.

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// What a tenant token may do.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub enum Scope {
    /// Read its subscriptions, their state, attempts and parked events.
    #[serde(rename = "subscriptions:read")]
    SubscriptionsRead,
    /// Create, change, pause, resume, delete its subscriptions.
    #[serde(rename = "subscriptions:write")]
    SubscriptionsWrite,
    /// Retry a blocked event now and replay parked events.
    #[serde(rename = "deliveries:replay")]
    DeliveriesReplay,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 3] = [
        Scope::SubscriptionsRead,
        Scope::SubscriptionsWrite,
        Scope::DeliveriesReplay,
    ];

    /// The scope's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::SubscriptionsRead => "subscriptions:read",
            Self::SubscriptionsWrite => "subscriptions:write",
            Self::DeliveriesReplay => "deliveries:replay",
        }
    }

    /// The scope named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// Scopes as the space-separated list OAuth uses.
pub fn scope_list(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| s.name())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a requested scope list cannot be granted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// A name that is no scope.
    #[error("unknown scope {0:?}")]
    Unknown(String),
    /// A scope the client was not given.
    #[error("scope {0} was not granted to this client")]
    NotGranted(&'static str),
}

/// The scopes of a token: the client's, or the `requested` subset of them.
pub fn narrow(granted: &[Scope], requested: Option<&str>) -> Result<Vec<Scope>, ScopeError> {
    let Some(requested) = requested.filter(|r| !r.trim().is_empty()) else {
        return Ok(granted.to_vec());
    };
    let mut scopes = Vec::new();
    for name in requested.split(' ').filter(|n| !n.is_empty()) {
        let scope = Scope::parse(name).ok_or_else(|| ScopeError::Unknown(name.to_string()))?;
        if !granted.contains(&scope) {
            return Err(ScopeError::NotGranted(scope.name()));
        }
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    scopes.sort();
    Ok(scopes)
}

/// Failed authentications of a client id before it is slowed down.
pub const FREE_FAILURES: u64 = 5;
/// Longest wait imposed on a client id.
pub const MAX_PENALTY: Duration = Duration::from_secs(300);

/// How long a client id must wait after its `failures`-th recent failure:
/// nothing for the first few, then 1 s, 2 s, 4 s… up to [`MAX_PENALTY`].
pub fn penalty(failures: u64) -> Option<Duration> {
    let over = failures.checked_sub(FREE_FAILURES)?;
    let secs = 1u64.checked_shl(over.min(32) as u32).unwrap_or(u64::MAX);
    Some(Duration::from_secs(secs).min(MAX_PENALTY))
}

/// A random value of 32 bytes, base64url, after `prefix`.
pub fn random_value(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// A new client id (not secret, but unguessable).
pub fn new_client_id() -> String {
    let mut bytes = [0u8; 12];
    OsRng.fill_bytes(&mut bytes);
    format!("plc_{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The hex SHA-256 of a token, the only form in which tokens are stored.
pub fn digest(token: &str) -> String {
    let hash = Sha256::digest(token.as_bytes());
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a secret could not be hashed or checked.
#[derive(Debug, thiserror::Error)]
#[error("password hash: {0}")]
pub struct HashError(String);

impl HashError {
    /// A hashing task that did not complete.
    pub fn from_join(reason: String) -> Self {
        Self(reason)
    }
}

/// The argon2id hash (PHC string) of `secret`. Slow on purpose: call it off
/// the async threads.
pub fn hash_secret(secret: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Whether `secret` matches the PHC string `hash` (false for a malformed hash).
pub fn verify_secret(secret: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(secret.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_narrow_to_granted_scopes_only() {
        let granted = [Scope::SubscriptionsRead, Scope::SubscriptionsWrite];
        assert_eq!(narrow(&granted, None).unwrap(), granted);
        assert_eq!(narrow(&granted, Some("  ")).unwrap(), granted);
        assert_eq!(
            narrow(&granted, Some("subscriptions:read")).unwrap(),
            [Scope::SubscriptionsRead]
        );
        assert_eq!(
            narrow(&granted, Some("deliveries:replay")),
            Err(ScopeError::NotGranted("deliveries:replay"))
        );
        assert!(matches!(
            narrow(&granted, Some("subscriptions:read admin")),
            Err(ScopeError::Unknown(_))
        ));
        assert_eq!(
            scope_list(&Scope::ALL),
            "subscriptions:read subscriptions:write deliveries:replay"
        );
    }

    #[test]
    fn failures_beyond_the_free_ones_wait_exponentially_up_to_a_cap() {
        assert_eq!(penalty(0), None);
        assert_eq!(penalty(FREE_FAILURES - 1), None);
        assert_eq!(penalty(FREE_FAILURES), Some(Duration::from_secs(1)));
        assert_eq!(penalty(FREE_FAILURES + 3), Some(Duration::from_secs(8)));
        assert_eq!(penalty(FREE_FAILURES + 60), Some(MAX_PENALTY));
        assert_eq!(penalty(u64::MAX), Some(MAX_PENALTY));
    }

    #[test]
    fn secrets_are_kept_as_argon2_hashes() {
        let secret = random_value("pls_");
        let hash = hash_secret(&secret).unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(!hash.contains(&secret));
        assert!(verify_secret(&secret, &hash));
        assert!(!verify_secret("wrong", &hash));
        assert!(!verify_secret(&secret, "not a hash"));
        assert_ne!(random_value("x"), random_value("x"));
        assert_eq!(digest("a").len(), 64);
    }
}
