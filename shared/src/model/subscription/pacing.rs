//! How fast a subscription's receiver may be called: a rate limit on its
//! POSTs (`rate_limit`) and, in order mode `none`, how many may be in flight
//! at once (`max_in_flight`). Delivery enforces both; ingest validates them.

use crate::model::problem::Problem;
use serde::{Deserialize, Serialize};
use std::num::NonZeroU32;

/// Highest rate a subscription may set (per second).
pub const MAX_PER_SECOND: u32 = 10_000;
/// Most POSTs in flight a subscription may ask for.
pub const MAX_IN_FLIGHT: u16 = 1_000;

/// At most `per_second` POSTs a second, with up to `burst` sent back to back
/// after a quiet spell (default 1: evenly spaced, so no window of one second
/// ever sees more than `per_second`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained rate, POSTs per second (1 to 10,000).
    #[schema(minimum = 1, maximum = 10000)]
    pub per_second: u32,
    /// How many may go at once after a quiet spell (default 1).
    #[serde(default = "default_burst")]
    pub burst: u32,
}

fn default_burst() -> u32 {
    1
}

impl RateLimit {
    /// Checks the limit, naming the field (under `rate_limit.`).
    pub fn validate(&self) -> Result<(), Problem> {
        if !(1..=MAX_PER_SECOND).contains(&self.per_second) {
            return Err(Problem::field(
                "rate_limit.per_second",
                format!("must be between 1 and {MAX_PER_SECOND}"),
            ));
        }
        if self.burst == 0 || self.burst > self.per_second.max(1) {
            return Err(Problem::field(
                "rate_limit.burst",
                "must be between 1 and `per_second`",
            ));
        }
        Ok(())
    }

    /// The rate as a non-zero count (validation keeps it at least 1).
    pub fn per_second(&self) -> NonZeroU32 {
        NonZeroU32::new(self.per_second).unwrap_or(NonZeroU32::MIN)
    }

    /// The burst as a non-zero count.
    pub fn burst(&self) -> NonZeroU32 {
        NonZeroU32::new(self.burst).unwrap_or(NonZeroU32::MIN)
    }
}

/// Checks `max_in_flight`.
pub fn validate_max_in_flight(max_in_flight: Option<u16>) -> Result<(), Problem> {
    match max_in_flight {
        Some(n) if n == 0 || n > MAX_IN_FLIGHT => Err(Problem::field(
            "max_in_flight",
            format!("must be between 1 and {MAX_IN_FLIGHT}"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limit_names_the_wrong_field() {
        let limit = |per_second, burst| RateLimit { per_second, burst }.validate();
        assert!(limit(20, 1).is_ok());
        assert!(limit(20, 20).is_ok());
        assert_eq!(
            limit(0, 1).unwrap_err().field.as_deref(),
            Some("rate_limit.per_second")
        );
        assert_eq!(
            limit(20_000, 1).unwrap_err().field.as_deref(),
            Some("rate_limit.per_second")
        );
        assert_eq!(
            limit(20, 0).unwrap_err().field.as_deref(),
            Some("rate_limit.burst")
        );
        assert_eq!(
            limit(20, 21).unwrap_err().field.as_deref(),
            Some("rate_limit.burst")
        );
        assert!(validate_max_in_flight(Some(0)).is_err());
        assert!(validate_max_in_flight(Some(5)).is_ok());
        assert!(validate_max_in_flight(None).is_ok());
    }

    #[test]
    fn burst_defaults_to_one() {
        let limit: RateLimit = serde_json::from_str(r#"{"per_second": 20}"#).unwrap();
        assert_eq!(
            limit,
            RateLimit {
                per_second: 20,
                burst: 1
            }
        );
    }
}
