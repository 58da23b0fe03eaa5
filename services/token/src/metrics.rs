//! The token service's Prometheus metrics.

use postline_shared::runtime::metrics::{counter_vec, latency};
use prometheus::{Histogram, IntCounterVec, Registry};

/// Counters and histograms of token minting and caching.
#[derive(Clone)]
pub struct TokenMetrics {
    /// Cache look-ups by result: `hit`, `miss`, `refresh_due` (usable but due for replacement).
    pub lookups: IntCounterVec,
    /// Calls to partner token endpoints by outcome: `success`, `refused`,
    /// `timeout`, `unreachable`, `invalid_response`.
    pub fetches: IntCounterVec,
    /// Duration of one call to a partner token endpoint.
    pub fetch_duration: Histogram,
    /// Waits for another process's refresh, by how they ended: `token`,
    /// `error` (the refresh failed), `retry` (lock freed without a token), `timeout`.
    pub lock_waits: IntCounterVec,
    /// Time spent waiting for another process's refresh.
    pub lock_wait_duration: Histogram,
    /// Invalidations after a receiver's 401: `deleted` (the rejected token
    /// was cached) or `stale` (a newer token was cached already).
    pub invalidations: IntCounterVec,
}

impl TokenMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        Ok(Self {
            lookups: counter_vec(
                registry,
                "postline_token_cache_lookups_total",
                "Token cache look-ups by result",
                &["result"],
            )?,
            fetches: counter_vec(
                registry,
                "postline_token_fetches_total",
                "Calls to partner token endpoints by outcome",
                &["outcome"],
            )?,
            fetch_duration: latency(
                registry,
                "postline_token_fetch_duration_seconds",
                "Duration of one call to a partner token endpoint",
            )?,
            lock_waits: counter_vec(
                registry,
                "postline_token_lock_waits_total",
                "Waits for a refresh held by another process, by how they ended",
                &["result"],
            )?,
            lock_wait_duration: latency(
                registry,
                "postline_token_lock_wait_seconds",
                "Time spent waiting for a refresh held by another process",
            )?,
            invalidations: counter_vec(
                registry,
                "postline_token_invalidations_total",
                "Token invalidations after a receiver answered 401",
                &["result"],
            )?,
        })
    }
}
