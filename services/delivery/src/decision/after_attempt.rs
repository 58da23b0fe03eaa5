//! What follows a failed attempt: try again in place, wait on a delay step
//! (as long as the receiver's `Retry-After` asks, within bounds), give up by
//! the subscription's rule, or disable a subscription whose receiver said
//! `410 Gone`.

use super::retry_after;
use chrono::{DateTime, TimeDelta, Utc};
use postline_shared::model::retry_policy::{GiveUpRule, GoneRule, NextStep, RetryPolicy};
use postline_shared::model::subscription::{OrderMode, Subscription};
use std::time::Duration;

/// A failed attempt, as far as the decision needs it.
#[derive(Debug, Clone, Copy)]
pub struct Failure<'a> {
    /// The receiver's status, when it answered.
    pub status: Option<u16>,
    /// Its `Retry-After` header, when it sent one.
    pub retry_after: Option<&'a str>,
    /// Attempts made, this one included.
    pub attempts: u32,
    /// When the event first failed (this attempt, if it is the first failure).
    pub first_failure: DateTime<Utc>,
}

/// Why a subscription is disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisableCause {
    /// Its retry policy is exhausted.
    Exhausted,
    /// Its receiver answered `410 Gone`.
    Gone,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Hold the message and try again after this pause.
    RetryNow(Duration),
    /// Send a copy through the delay queue of `delay_ms`, due at `due`; a
    /// strict subscription is blocked on it until then (`block`).
    Reschedule {
        /// The delay step (names the delay queue).
        delay_ms: u64,
        /// When the copy is back.
        due: DateTime<Utc>,
        /// Whether the subscription holds everything else back meanwhile.
        block: bool,
        /// Whether the receiver's `Retry-After` set the delay.
        asked_by_receiver: bool,
    },
    /// Park the event for replay and go on with the next.
    Park,
    /// Disable the subscription; with `discard` its backlog (this event
    /// included) is discarded, otherwise this event stays at its head.
    Disable {
        /// Why.
        cause: DisableCause,
        /// Whether the backlog goes.
        discard: bool,
    },
}

impl AfterFailure {
    /// Whether the message itself is settled (acked) rather than handed
    /// back once the decision's durable work is done.
    pub fn acks_the_message(self) -> bool {
        !matches!(
            self,
            Self::RetryNow(_) | Self::Disable { discard: false, .. }
        )
    }
}

/// Decides what follows `failure` under `subscription`'s settings at `now`.
pub fn after_failure(
    subscription: &Subscription,
    failure: &Failure<'_>,
    now: DateTime<Utc>,
) -> AfterFailure {
    let policy = &subscription.spec.retry;
    if failure.status == Some(410) && policy.on_gone == GoneRule::Disable {
        return AfterFailure::Disable {
            cause: DisableCause::Gone,
            discard: policy.discard_on_disable,
        };
    }
    let block = subscription.spec.order == OrderMode::Strict;
    let asked = receiver_asked(policy, failure, now);
    match policy.after_failure(failure.attempts, failure.first_failure, now) {
        NextStep::GiveUp => match policy.on_give_up {
            GiveUpRule::Skip => AfterFailure::Park,
            GiveUpRule::Disable => AfterFailure::Disable {
                cause: DisableCause::Exhausted,
                discard: policy.discard_on_disable,
            },
        },
        NextStep::RetryNow(pause) => match asked {
            Some(wait) if wait > pause_delta(pause) => by_receiver(wait, now, block),
            _ => AfterFailure::RetryNow(pause),
        },
        NextStep::Delay { delay_ms } => match asked {
            Some(wait) if wait > TimeDelta::milliseconds(ms_i64(delay_ms)) => {
                by_receiver(wait, now, block)
            }
            _ => AfterFailure::Reschedule {
                delay_ms,
                due: now + TimeDelta::milliseconds(ms_i64(delay_ms)),
                block,
                asked_by_receiver: false,
            },
        },
    }
}

/// How long the receiver asked to be left alone, when it may ask (429 or
/// 503) and the wait is within the policy's `max_retry_after_ms`.
fn receiver_asked(
    policy: &RetryPolicy,
    failure: &Failure<'_>,
    now: DateTime<Utc>,
) -> Option<TimeDelta> {
    if !matches!(failure.status, Some(429 | 503)) {
        return None;
    }
    let not_before = retry_after::not_before(failure.retry_after?, now)?;
    let wait = not_before - now;
    let cap = TimeDelta::from_std(policy.max_retry_after()).unwrap_or(TimeDelta::MAX);
    (wait <= cap).then_some(wait)
}

fn by_receiver(wait: TimeDelta, now: DateTime<Utc>, block: bool) -> AfterFailure {
    let delay_ms = retry_after::step_at_least(wait);
    AfterFailure::Reschedule {
        delay_ms,
        due: now + TimeDelta::milliseconds(ms_i64(delay_ms)),
        block,
        asked_by_receiver: true,
    }
}

fn pause_delta(pause: Duration) -> TimeDelta {
    TimeDelta::from_std(pause).unwrap_or(TimeDelta::MAX)
}

fn ms_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use postline_shared::model::subscription::SubscriptionSpec;

    fn subscription(order: &str, retry: serde_json::Value) -> Subscription {
        let spec: SubscriptionSpec = serde_json::from_value(serde_json::json!({
            "id": "s", "endpoint": "https://example.com/", "event_types": ["a"],
            "order": order, "retry": retry,
        }))
        .unwrap();
        Subscription::new(spec, Utc::now())
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-02T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn failure(status: u16, retry_after: Option<&str>, attempts: u32) -> Failure<'_> {
        Failure {
            status: Some(status),
            retry_after,
            attempts,
            first_failure: now(),
        }
    }

    fn ladder() -> serde_json::Value {
        serde_json::json!({"immediate_retries": 1, "immediate_pause_ms": 10, "steps_ms": [100, 200]})
    }

    fn reschedule(delay_ms: u64, block: bool, asked: bool) -> AfterFailure {
        AfterFailure::Reschedule {
            delay_ms,
            due: now() + TimeDelta::milliseconds(delay_ms as i64),
            block,
            asked_by_receiver: asked,
        }
    }

    #[test]
    fn the_ladder_applies_when_the_receiver_asks_nothing() {
        let s = subscription("strict", ladder());
        let rows = [
            (1, AfterFailure::RetryNow(Duration::from_millis(10))),
            (2, reschedule(100, true, false)),
            (3, reschedule(200, true, false)),
        ];
        for (attempts, expected) in rows {
            assert_eq!(
                after_failure(&s, &failure(500, None, attempts), now()),
                expected,
                "attempt {attempts}"
            );
        }
        let unordered = subscription("none", ladder());
        assert_eq!(
            after_failure(&unordered, &failure(500, None, 2), now()),
            reschedule(100, false, false)
        );
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date_sets_the_wait_within_the_cap() {
        let s = subscription("strict", ladder());
        let date = "Wed, 02 Dec 2026 10:00:30 GMT";
        let past = "Wed, 02 Dec 2026 09:00:00 GMT";
        let rows: Vec<(&str, u16, Option<&str>, u32, AfterFailure)> = vec![
            (
                "429 seconds during immediate retries",
                429,
                Some("2"),
                1,
                reschedule(2_000, true, true),
            ),
            (
                "503 seconds on the ladder",
                503,
                Some("3"),
                2,
                reschedule(3_000, true, true),
            ),
            (
                "a future date",
                429,
                Some(date),
                2,
                reschedule(30_000, true, true),
            ),
            (
                "a past date asks nothing: the ladder",
                429,
                Some(past),
                2,
                reschedule(100, true, false),
            ),
            (
                "shorter than the step: the ladder",
                429,
                Some("0"),
                3,
                reschedule(200, true, false),
            ),
            (
                "over the 1 h cap: ignored",
                429,
                Some("7200"),
                2,
                reschedule(100, true, false),
            ),
            (
                "unreadable: ignored",
                429,
                Some("soon"),
                1,
                AfterFailure::RetryNow(Duration::from_millis(10)),
            ),
            (
                "only 429 and 503 may ask",
                500,
                Some("5"),
                2,
                reschedule(100, true, false),
            ),
        ];
        for (row, status, value, attempts, expected) in rows {
            assert_eq!(
                after_failure(&s, &failure(status, value, attempts), now()),
                expected,
                "{row}"
            );
        }
    }

    #[test]
    fn the_cap_is_the_subscriptions_own() {
        let mut retry = ladder();
        retry["max_retry_after_ms"] = serde_json::json!(10_000);
        let s = subscription("strict", retry);
        assert_eq!(
            after_failure(&s, &failure(429, Some("10"), 2), now()),
            reschedule(10_000, true, true)
        );
        assert_eq!(
            after_failure(&s, &failure(429, Some("11"), 2), now()),
            reschedule(100, true, false)
        );
    }

    #[test]
    fn gone_disables_at_once_unless_told_to_retry() {
        let s = subscription("strict", ladder());
        assert_eq!(
            after_failure(&s, &failure(410, None, 1), now()),
            AfterFailure::Disable {
                cause: DisableCause::Gone,
                discard: false
            }
        );
        let mut retry = ladder();
        retry["discard_on_disable"] = serde_json::json!(true);
        let discarding = subscription("none", retry);
        assert_eq!(
            after_failure(&discarding, &failure(410, None, 1), now()),
            AfterFailure::Disable {
                cause: DisableCause::Gone,
                discard: true
            }
        );
        let mut retry = ladder();
        retry["on_gone"] = serde_json::json!("retry");
        let retrying = subscription("strict", retry);
        assert_eq!(
            after_failure(&retrying, &failure(410, None, 1), now()),
            AfterFailure::RetryNow(Duration::from_millis(10))
        );
    }

    #[test]
    fn an_exhausted_policy_parks_or_disables() {
        let fixed = |rule: &str, discard: bool| {
            subscription(
                "strict",
                serde_json::json!({"policy": "fixed", "retries": 1, "delay_ms": 50,
                    "on_give_up": rule, "discard_on_disable": discard}),
            )
        };
        let skip = subscription(
            "strict",
            serde_json::json!({"policy": "fixed", "retries": 1, "delay_ms": 50, "on_give_up": "skip"}),
        );
        assert_eq!(
            after_failure(&fixed("disable", false), &failure(500, None, 1), now()),
            reschedule(50, true, false)
        );
        assert_eq!(
            after_failure(&skip, &failure(500, None, 2), now()),
            AfterFailure::Park
        );
        assert_eq!(
            after_failure(&fixed("disable", false), &failure(500, None, 2), now()),
            AfterFailure::Disable {
                cause: DisableCause::Exhausted,
                discard: false
            }
        );
        assert_eq!(
            after_failure(&fixed("disable", true), &failure(500, None, 2), now()),
            AfterFailure::Disable {
                cause: DisableCause::Exhausted,
                discard: true
            }
        );
        // Exhausted wins over a Retry-After: the policy's limits hold.
        assert_eq!(
            after_failure(&skip, &failure(429, Some("5"), 2), now()),
            AfterFailure::Park
        );
        // The ladder gives up by age.
        let aged = Failure {
            first_failure: now() - TimeDelta::days(8),
            ..failure(500, None, 5)
        };
        let ladder = subscription("strict", serde_json::json!({}));
        assert!(matches!(
            after_failure(&ladder, &aged, now()),
            AfterFailure::Disable { .. }
        ));
    }

    #[test]
    fn only_a_kept_event_is_handed_back() {
        assert!(!AfterFailure::RetryNow(Duration::ZERO).acks_the_message());
        assert!(!AfterFailure::Disable {
            cause: DisableCause::Gone,
            discard: false
        }
        .acks_the_message());
        assert!(AfterFailure::Disable {
            cause: DisableCause::Exhausted,
            discard: true
        }
        .acks_the_message());
        assert!(AfterFailure::Park.acks_the_message());
        assert!(reschedule(100, true, false).acks_the_message());
    }
}
