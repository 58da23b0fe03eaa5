//! The Redis layout: every key and channel Postline uses, under one namespace.
//!
//! Keeping the names in one place is what lets each test (and each
//! deployment sharing a Redis) live in its own namespace without collisions.

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
    pub fn subscription(&self, id: &str) -> String {
        format!("{}:sub:{id}", self.prefix)
    }

    /// A subscription version staged for its PING (not yet stored), with a
    /// short TTL, so the token service can read its credentials.
    pub fn staged_subscription(&self, id: &str, nonce: &str) -> String {
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
    pub fn intake_dedup(&self, event_id: &str) -> String {
        format!("{}:seen:{event_id}", self.prefix)
    }

    /// Marks an event as delivered to a subscription, so it is never POSTed twice.
    pub fn delivered(&self, subscription_id: &str, event_id: &str) -> String {
        format!("{}:delivered:{subscription_id}:{event_id}", self.prefix)
    }

    /// Marks an event identity (hashed) as delivered to a subscription (`dedup`).
    pub fn dedup(&self, subscription_id: &str, identity_hash: &str) -> String {
        format!("{}:dedup:{subscription_id}:{identity_hash}", self.prefix)
    }

    /// Sorted set of a subscription's open entities (`completion`), hashed,
    /// scored by when each was last seen (unix ms).
    pub fn open_entities(&self, subscription_id: &str) -> String {
        format!("{}:entities:{subscription_id}:open", self.prefix)
    }

    /// Sorted set of a subscription's complete entities, scored like the open ones.
    pub fn complete_entities(&self, subscription_id: &str) -> String {
        format!("{}:entities:{subscription_id}:complete", self.prefix)
    }

    /// Hash of a subscription's delivery state (last success, last failure, counters).
    pub fn delivery_state(&self, subscription_id: &str) -> String {
        format!("{}:state:{subscription_id}", self.prefix)
    }

    /// Hash describing the event a strict subscription is blocked on (absent when not blocked).
    pub fn block(&self, subscription_id: &str) -> String {
        format!("{}:block:{subscription_id}", self.prefix)
    }

    /// Hash of a subscription's given-up events kept for replay, by event id.
    pub fn parked(&self, subscription_id: &str) -> String {
        format!("{}:parked:{subscription_id}", self.prefix)
    }

    /// Capped stream of a subscription's recent delivery attempts.
    pub fn attempts(&self, subscription_id: &str) -> String {
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
    pub fn operator_event(&self, event_id: &str) -> String {
        format!("{}:operator-event:{event_id}", self.prefix)
    }

    /// Pattern matching every key of the namespace (for tests and tooling).
    pub fn all(&self) -> String {
        format!("{}:*", self.prefix)
    }
}
