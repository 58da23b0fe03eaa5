//! Interval delivery (`interval_ms`): a subscription's events are sent on
//! ticks aligned to the epoch instead of as they arrive. At each tick
//! everything queued before it goes out, one POST per event, in order.
//!
//! Nothing is held in memory between ticks: a session knows the tick it
//! started after, delivers the copies ingest queued before that tick, and on
//! the first copy queued after it hands that copy back and ends, waiting in
//! the supervisor for the tick that copy belongs to. Copies without the
//! queued-at stamp (retries from a delay queue, replays) are due at once, so
//! the retry ladder keeps its own times.

use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use postline_shared::amqp::topology::{header_str, QUEUED_AT_HEADER};
use postline_shared::model::subscription::semantics::{tick_after, tick_at_or_before};

/// The tick a session delivers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tick {
    /// The latest tick at session start (unix ms).
    at_ms: i64,
    /// The subscription's interval.
    interval_ms: u64,
}

impl Tick {
    /// The latest tick of an `interval_ms` schedule, as of now.
    pub(crate) fn now(interval_ms: u64) -> Self {
        Self::at(Utc::now().timestamp_millis(), interval_ms)
    }

    fn at(now_ms: i64, interval_ms: u64) -> Self {
        Self {
            at_ms: tick_at_or_before(now_ms, interval_ms),
            interval_ms,
        }
    }

    /// `None` when a copy with these properties is due at this tick, else
    /// the tick at which it is.
    pub(crate) fn wait_for(&self, properties: &BasicProperties) -> Option<DateTime<Utc>> {
        let queued_at: i64 = header_str(properties.headers().as_ref(), QUEUED_AT_HEADER)?
            .parse()
            .ok()?;
        if queued_at < self.at_ms {
            return None;
        }
        DateTime::from_timestamp_millis(tick_after(queued_at, self.interval_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postline_shared::amqp::broker::string_headers;

    fn queued_at(ms: &str) -> BasicProperties {
        BasicProperties::default().with_headers(string_headers([(QUEUED_AT_HEADER, ms)]))
    }

    #[test]
    fn copies_queued_before_the_tick_are_due() {
        let tick = Tick::at(10_500, 1_000);
        assert_eq!(tick.wait_for(&queued_at("9999")), None);
        assert_eq!(tick.wait_for(&queued_at("9000")), None);
        assert_eq!(
            tick.wait_for(&queued_at("10000")),
            DateTime::from_timestamp_millis(11_000),
            "queued at the tick itself: the next one"
        );
        assert_eq!(
            tick.wait_for(&queued_at("12345")),
            DateTime::from_timestamp_millis(13_000),
            "queued after a later tick (a slow batch): that tick's successor"
        );
    }

    #[test]
    fn copies_without_a_stamp_are_due_at_once() {
        let tick = Tick::at(10_500, 1_000);
        assert_eq!(tick.wait_for(&BasicProperties::default()), None);
        assert_eq!(tick.wait_for(&queued_at("not a number")), None);
    }
}
