//! A receiver's `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP
//! date, read into the earliest time the next attempt may be made, and the
//! delay queue that honours it.
//!
//! Delay queues are named by their delay, so a partner's arbitrary wait is
//! rounded *up* to one of a fixed set of steps: the copy never comes back
//! before the time asked for, and a misbehaving receiver cannot make the
//! broker grow one queue per distinct value.

use chrono::{DateTime, TimeDelta, Utc};

pub use postline_shared::model::retry_policy::RETRY_AFTER_STEPS_MS;

/// The earliest time the receiver asked to be called again, from its
/// `Retry-After` value at `now`; `None` when the value is neither form. A
/// date in the past means "now".
pub fn not_before(value: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than any wait we honour: saturate instead of overflowing.
        let secs: i64 = value.parse().unwrap_or(i64::MAX);
        let wait = TimeDelta::try_seconds(secs).unwrap_or(TimeDelta::MAX);
        return Some(
            now.checked_add_signed(wait)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        );
    }
    let at: DateTime<Utc> = httpdate::parse_http_date(value).ok()?.into();
    Some(at.max(now))
}

/// The delay queue step that waits at least `wait`: the smallest step not
/// shorter than it (the longest step for anything longer).
pub fn step_at_least(wait: TimeDelta) -> u64 {
    let wait_ms = u64::try_from(wait.num_milliseconds()).unwrap_or(0);
    RETRY_AFTER_STEPS_MS
        .iter()
        .copied()
        .find(|step| *step >= wait_ms)
        .unwrap_or(RETRY_AFTER_STEPS_MS[RETRY_AFTER_STEPS_MS.len() - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn seconds_and_dates_both_read_as_a_time() {
        let now = at("2026-12-02T10:00:00Z");
        assert_eq!(not_before("3", now), Some(at("2026-12-02T10:00:03Z")));
        assert_eq!(not_before(" 0 ", now), Some(now));
        assert_eq!(
            not_before("Wed, 02 Dec 2026 10:01:00 GMT", now),
            Some(at("2026-12-02T10:01:00Z"))
        );
        // A date already past asks for nothing more than now.
        assert_eq!(not_before("Wed, 02 Dec 2026 09:00:00 GMT", now), Some(now));
    }

    #[test]
    fn nonsense_is_no_request_at_all() {
        let now = at("2026-12-02T10:00:00Z");
        for value in ["", "soon", "-5", "1.5", "3 seconds", "Wed, 99 Foo 2026"] {
            assert_eq!(not_before(value, now), None, "{value:?}");
        }
        // Absurdly large values saturate instead of overflowing.
        assert!(not_before("99999999999999999999999", now).is_some_and(|t| t > now));
    }

    #[test]
    fn the_step_never_comes_back_early() {
        assert_eq!(step_at_least(TimeDelta::milliseconds(1)), 100);
        assert_eq!(step_at_least(TimeDelta::seconds(2)), 2_000);
        assert_eq!(step_at_least(TimeDelta::milliseconds(2_001)), 3_000);
        assert_eq!(step_at_least(TimeDelta::minutes(59)), 3_600_000);
        assert_eq!(step_at_least(TimeDelta::days(3)), 86_400_000);
        for window in RETRY_AFTER_STEPS_MS.windows(2) {
            assert!(window[0] < window[1]);
        }
    }
}
