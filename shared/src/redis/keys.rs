//! The Redis layout: every key and channel Postline uses, under one namespace.
//!
//! Keeping the names in one place is what lets each test (and each
//! deployment sharing a Redis) live in its own namespace without collisions.

use crate::model::ids::{EventId, SubscriptionId};

/// Builds namespaced Redis key names.
#[derive(Debug, Clone)]
pub struct RedisKeys {
    prefix: String,
}

impl RedisKeys {
    /// Keys under `namespace` (e.g. `postline`).
    pub fn new(namespace: &str) -> Self {
        Self {
            prefix: namespace.to_string(),
        }
    }

    /// JSON document of one subscription.
    pub fn subscription(&self, id: &SubscriptionId) -> String {
        format!("{}:sub:{id}", self.prefix)
    }

    /// A subscription version staged for its PING (not yet stored), with a
    /// short TTL, so the token service can read its credentials.
    pub fn staged_subscription(&self, id: &SubscriptionId, nonce: &str) -> String {
        format!("{}:sub-staged:{id}:{nonce}", self.prefix)
    }

    /// Set of all subscription ids.
    pub fn subscription_ids(&self) -> String {
        format!("{}:subs", self.prefix)
    }

    /// Pub/sub channel announcing the id of each created, updated or deleted subscription.
    pub fn subscription_changes(&self) -> String {
        format!("{}:subs:changed", self.prefix)
    }

    /// Marks an event id as already accepted by intake (idempotent intake).
    pub fn intake_dedup(&self, event_id: &EventId) -> String {
        format!("{}:seen:{event_id}", self.prefix)
    }

    /// Marks an event as delivered to a subscription, so it is never POSTed twice.
    pub fn delivered(&self, subscription_id: &SubscriptionId, event_id: &EventId) -> String {
        format!("{}:delivered:{subscription_id}:{event_id}", self.prefix)
    }

    /// Marks an event identity (hashed) as delivered to a subscription (`dedup`).
    pub fn dedup(&self, subscription_id: &SubscriptionId, identity_hash: &str) -> String {
        format!("{}:dedup:{subscription_id}:{identity_hash}", self.prefix)
    }

    /// Sorted set of a subscription's open entities (`completion`), hashed,
    /// scored by when each was last seen (unix ms).
    pub fn open_entities(&self, subscription_id: &SubscriptionId) -> String {
        format!("{}:entities:{subscription_id}:open", self.prefix)
    }

    /// Sorted set of a subscription's complete entities, scored like the open ones.
    pub fn complete_entities(&self, subscription_id: &SubscriptionId) -> String {
        format!("{}:entities:{subscription_id}:complete", self.prefix)
    }

    /// Hash of a subscription's delivery state (last success, last failure, counters).
    pub fn delivery_state(&self, subscription_id: &SubscriptionId) -> String {
        format!("{}:state:{subscription_id}", self.prefix)
    }

    /// Hash describing the event a strict subscription is blocked on (absent when not blocked).
    pub fn block(&self, subscription_id: &SubscriptionId) -> String {
        format!("{}:block:{subscription_id}", self.prefix)
    }

    /// Hash of a subscription's given-up events kept for replay, by event id.
    pub fn parked(&self, subscription_id: &SubscriptionId) -> String {
        format!("{}:parked:{subscription_id}", self.prefix)
    }

    /// Capped stream of a subscription's recent delivery attempts.
    pub fn attempts(&self, subscription_id: &SubscriptionId) -> String {
        format!("{}:attempts:{subscription_id}", self.prefix)
    }

    /// A cached bearer token (sealed), by the fingerprint of its credentials.
    pub fn token(&self, fingerprint: &str) -> String {
        format!("{}:token:{fingerprint}", self.prefix)
    }

    /// The lock held by the one process refreshing the token of `fingerprint`.
    pub fn token_lock(&self, fingerprint: &str) -> String {
        format!("{}:token:{fingerprint}:lock", self.prefix)
    }

    /// The error of a failed refresh, kept briefly for the processes that waited on it.
    pub fn token_error(&self, fingerprint: &str) -> String {
        format!("{}:token:{fingerprint}:error", self.prefix)
    }

    /// The installation marker: its absence while the broker has the
    /// namespace's queues means Redis lost its state.
    pub fn installation(&self) -> String {
        format!("{}:installation", self.prefix)
    }

    /// Claims one operational event (by its occurrence id) so it is sent once.
    pub fn operator_event(&self, event_id: &EventId) -> String {
        format!("{}:operator-event:{event_id}", self.prefix)
    }

    /// JSON document of one tenant.
    pub fn tenant(&self, id: &str) -> String {
        format!("{}:tenant:{id}", self.prefix)
    }

    /// Set of all tenant ids.
    pub fn tenant_ids(&self) -> String {
        format!("{}:tenants", self.prefix)
    }

    /// Set of the client ids of one tenant.
    pub fn tenant_clients(&self, tenant: &str) -> String {
        format!("{}:tenant:{tenant}:clients", self.prefix)
    }

    /// Capped stream of a tenant's audit trail.
    pub fn tenant_audit(&self, tenant: &str) -> String {
        format!("{}:tenant:{tenant}:audit", self.prefix)
    }

    /// JSON document of one OAuth client (its secret only as a slow hash).
    pub fn oauth_client(&self, client_id: &str) -> String {
        format!("{}:oauth-client:{client_id}", self.prefix)
    }

    /// Set of the hashes of the access tokens issued to a client (for revocation).
    pub fn oauth_client_tokens(&self, client_id: &str) -> String {
        format!("{}:oauth-client:{client_id}:tokens", self.prefix)
    }

    /// One access token, by the SHA-256 of its value, expiring with it.
    pub fn oauth_token(&self, token_hash: &str) -> String {
        format!("{}:oauth-token:{token_hash}", self.prefix)
    }

    /// Count of recent failed authentications of a client id.
    pub fn oauth_failures(&self, client_id: &str) -> String {
        format!("{}:oauth-failures:{client_id}", self.prefix)
    }

    /// One status-page session, by the SHA-256 of its cookie value.
    pub fn ui_session(&self, session_hash: &str) -> String {
        format!("{}:ui-session:{session_hash}", self.prefix)
    }

    /// One unused portal link, by the SHA-256 of its token.
    pub fn portal_link(&self, token_hash: &str) -> String {
        format!("{}:portal-link:{token_hash}", self.prefix)
    }

    /// Pattern matching every key of the namespace (for tests and tooling).
    pub fn all(&self) -> String {
        format!("{}:*", self.prefix)
    }
}
