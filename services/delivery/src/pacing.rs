//! A subscription's rate limit, enforced on its POSTs: one limiter per
//! subscription per delivery replica, kept across consumer sessions and
//! rebuilt when the subscription's `rate_limit` changes.
//!
//! A strict subscription has one active consumer, so its local limiter is
//! exact. Waiting never holds a message past the broker's consumer timeout:
//! the session's prefetch is bounded by [`prefetch_for`] so that even the
//! last prefetched message waits about a minute at most.

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use postline_shared::model::subscription::{OrderMode, RateLimit, Subscription};
use postline_shared::runtime::locks;
use std::sync::{Arc, Mutex};

/// Longest a prefetched message should wait for the limiter, in seconds.
const MAX_LIMITER_WAIT_SECS: u32 = 60;

/// The limiter of one subscription.
#[derive(Default)]
pub struct Pacer {
    current: Mutex<Option<(RateLimit, Arc<DefaultDirectRateLimiter>)>>,
}

impl Pacer {
    /// Waits until `limit` lets one more POST go (at once without a limit).
    pub async fn ready(&self, limit: Option<RateLimit>) {
        let Some(limit) = limit else { return };
        let limiter = {
            // A poisoned lock only means a panic elsewhere; the limiter is still usable.
            let mut current = locks::lock(&self.current);
            match current.as_ref() {
                Some((set, limiter)) if *set == limit => limiter.clone(),
                _ => {
                    let quota = Quota::per_second(limit.per_second()).allow_burst(limit.burst());
                    let limiter = Arc::new(RateLimiter::direct(quota));
                    *current = Some((limit, limiter.clone()));
                    limiter
                }
            }
        };
        limiter.until_ready().await;
    }
}

/// How many messages a session of `subscription` may have unacked, and how
/// many POSTs it runs at once: `max_in_flight` (default `prefetch`) in order
/// mode `none`, `prefetch` in strict order (one POST at a time); with a rate
/// limit, no more than a minute's worth.
pub fn prefetch_for(subscription: &Subscription, prefetch: u16) -> u16 {
    let spec = &subscription.spec;
    let window = match spec.order {
        OrderMode::None => spec.max_in_flight.unwrap_or(prefetch),
        OrderMode::Strict => prefetch,
    };
    let window = match spec.rate_limit {
        Some(limit) => {
            let minute = limit.per_second.saturating_mul(MAX_LIMITER_WAIT_SECS);
            window.min(u16::try_from(minute).unwrap_or(u16::MAX))
        }
        None => window,
    };
    window.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use postline_shared::model::subscription::SubscriptionSpec;

    fn subscription(extra: serde_json::Value) -> Subscription {
        let mut spec = serde_json::json!({"id": "s", "endpoint": "https://example.com/", "event_types": ["a"]});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let spec: SubscriptionSpec = serde_json::from_value(spec).unwrap();
        Subscription::new(spec, chrono::Utc::now())
    }

    #[test]
    fn the_window_follows_order_mode_max_in_flight_and_rate() {
        let rows = [
            (serde_json::json!({}), 64),
            (serde_json::json!({"order": "none"}), 64),
            (serde_json::json!({"order": "none", "max_in_flight": 5}), 5),
            (
                serde_json::json!({"order": "none", "max_in_flight": 500}),
                500,
            ),
            (serde_json::json!({"rate_limit": {"per_second": 1}}), 60),
            (
                serde_json::json!({"order": "none", "max_in_flight": 500, "rate_limit": {"per_second": 2}}),
                120,
            ),
        ];
        for (extra, expected) in rows {
            assert_eq!(
                prefetch_for(&subscription(extra.clone()), 64),
                expected,
                "{extra}"
            );
        }
    }

    #[tokio::test]
    async fn the_limiter_spaces_posts_at_the_rate() {
        let pacer = Pacer::default();
        let limit = Some(RateLimit {
            per_second: 50,
            burst: 1,
        });
        let started = std::time::Instant::now();
        for _ in 0..6 {
            pacer.ready(limit).await;
        }
        // Five gaps of 20 ms at least: a limit that did nothing would take ~0.
        assert!(started.elapsed() >= std::time::Duration::from_millis(95));
        pacer.ready(None).await;
    }
}
