//! Postline's state in Redis: the key layout, the subscription documents and
//! the in-memory catalog synced from them, the per-subscription delivery
//! records, and the bearer-token cache.

pub mod catalog;
pub mod delivery_state;
pub mod keys;
pub mod subscription_store;
pub mod token_cache;
