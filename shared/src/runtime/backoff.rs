//! Capped exponential backoff for reconnect loops: the pause after each
//! failure grows from `initial` by `multiplier` up to `max`, and a success
//! starts it over. Pure arithmetic, plus [`pause`] to sleep a delay unless
//! cancelled.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// First pause of every reconnect loop.
pub const RECONNECT_INITIAL: Duration = Duration::from_millis(200);
/// Longest pause between two broker connection attempts.
pub const BROKER_RECONNECT_MAX: Duration = Duration::from_secs(10);
/// Longest pause between two Redis attempts.
pub const REDIS_RETRY_MAX: Duration = Duration::from_secs(5);

/// The pauses between attempts of one loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    multiplier: u32,
    next: Duration,
}

impl Backoff {
    /// Pauses from `initial`, doubling, never above `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            multiplier: 2,
            next: initial.min(max),
        }
    }

    /// The loops that reconnect to the broker: 200 ms, doubling, up to 10 s.
    pub fn broker_reconnect() -> Self {
        Self::new(RECONNECT_INITIAL, BROKER_RECONNECT_MAX)
    }

    /// The loops that retry Redis: 200 ms, doubling, up to 5 s.
    pub fn redis_retry() -> Self {
        Self::new(RECONNECT_INITIAL, REDIS_RETRY_MAX)
    }

    /// Grows by `multiplier` instead of doubling (at least 1: constant pauses).
    pub fn with_multiplier(mut self, multiplier: u32) -> Self {
        self.multiplier = multiplier.max(1);
        self
    }

    /// The pause to make after a failure; the one after it is longer (up to the cap).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = delay.saturating_mul(self.multiplier).min(self.max);
        delay
    }

    /// An attempt succeeded: the next failure pauses `initial` again.
    pub fn reset(&mut self) {
        self.next = self.initial.min(self.max);
    }

    /// Sleeps the next pause; false when `cancel` fired first.
    pub async fn pause(&mut self, cancel: &CancellationToken) -> bool {
        pause(self.next_delay(), cancel).await
    }
}

/// Sleeps `delay`; false when `cancel` fired first.
pub async fn pause(delay: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn pauses_double_from_the_initial_one_up_to_the_cap() {
        let mut backoff = Backoff::new(ms(200), ms(1_000));
        let delays: Vec<_> = (0..5).map(|_| backoff.next_delay()).collect();
        assert_eq!(delays, [ms(200), ms(400), ms(800), ms(1_000), ms(1_000)]);
    }

    #[test]
    fn a_success_starts_the_pauses_over() {
        let mut backoff = Backoff::broker_reconnect();
        for _ in 0..10 {
            backoff.next_delay();
        }
        assert_eq!(backoff.next_delay(), BROKER_RECONNECT_MAX);
        backoff.reset();
        assert_eq!(backoff.next_delay(), RECONNECT_INITIAL);
    }

    #[test]
    fn another_multiplier_grows_by_it_and_one_keeps_the_pause_constant() {
        let mut tripling = Backoff::new(ms(100), ms(10_000)).with_multiplier(3);
        assert_eq!(
            [
                tripling.next_delay(),
                tripling.next_delay(),
                tripling.next_delay()
            ],
            [ms(100), ms(300), ms(900)]
        );
        let mut constant = Backoff::new(ms(50), ms(10_000)).with_multiplier(0);
        assert_eq!(
            [constant.next_delay(), constant.next_delay()],
            [ms(50), ms(50)]
        );
    }

    #[test]
    fn an_initial_pause_above_the_cap_is_capped_and_huge_pauses_do_not_overflow() {
        assert_eq!(Backoff::new(ms(500), ms(100)).next_delay(), ms(100));
        let mut huge = Backoff::new(Duration::MAX, Duration::MAX);
        huge.next_delay();
        assert_eq!(huge.next_delay(), Duration::MAX);
    }

    #[tokio::test]
    async fn a_cancelled_pause_says_so_at_once() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let mut backoff = Backoff::new(Duration::from_secs(3600), Duration::from_secs(3600));
        assert!(!backoff.pause(&cancel).await);
        assert!(pause(ms(0), &CancellationToken::new()).await);
    }
}
