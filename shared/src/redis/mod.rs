//! Postline's state in Redis: the key layout, the subscription documents and
//! the in-memory catalog synced from them, the per-subscription delivery
//! records, the bearer-token cache, and the compare-and-set write they share.

pub mod catalog;
pub mod compare_and_set;
pub mod delivery_state;
pub mod keys;
pub mod subscription_store;
pub mod token_cache;
