//! The retry policy of a subscription, as data: what happens after each
//! failed attempt — try again at once, wait on a delay step, or give up.
//!
//! The policy is part of the subscription (`retry` in the API). Delivery asks
//! [`RetryPolicy::after_failure`] what to do; ingest only validates it.

use crate::model::problem::Problem;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 60 * MINUTE_MS;
const DAY_MS: u64 = 24 * HOUR_MS;

/// The production ladder: 5m, 15m, 35m, 1h, 2h30m, 5h, 10h30m, 21h, 2d.
pub const PRODUCTION_STEPS_MS: [u64; 9] = [
    5 * MINUTE_MS,
    15 * MINUTE_MS,
    35 * MINUTE_MS,
    HOUR_MS,
    2 * HOUR_MS + 30 * MINUTE_MS,
    5 * HOUR_MS,
    10 * HOUR_MS + 30 * MINUTE_MS,
    21 * HOUR_MS,
    2 * DAY_MS,
];
/// After the last step the ladder repeats this delay.
pub const DEFAULT_REPEAT_EVERY_MS: u64 = DAY_MS;
/// Default give-up age: 7 days since the blocked event first failed.
pub const DEFAULT_GIVE_UP_AFTER_MS: u64 = 7 * DAY_MS;
/// Default immediate retries of the ladder.
pub const DEFAULT_IMMEDIATE_RETRIES: u32 = 3;
/// Default pause between immediate retries.
pub const DEFAULT_IMMEDIATE_PAUSE_MS: u64 = 500;
/// Shortest delay step: below this a delay queue buys nothing over an immediate retry.
pub const MIN_STEP_MS: u64 = 10;
/// Longest delay step (RabbitMQ's TTL limit is far above; this keeps typos out).
pub const MAX_STEP_MS: u64 = 30 * DAY_MS;
/// Most distinct delay steps, since each distinct step is a broker queue.
pub const MAX_STEPS: usize = 32;
/// Longest immediate pause: it holds an unacked message, so keep it short.
pub const MAX_IMMEDIATE_PAUSE_MS: u64 = 30_000;
/// Most immediate retries.
pub const MAX_IMMEDIATE_RETRIES: u32 = 10;
/// The delays (ms) a receiver's `Retry-After` wait is rounded up to (each
/// a delay queue; see delivery's `decision::retry_after`).
pub const RETRY_AFTER_STEPS_MS: [u64; 20] = [
    100, 250, 500, 1_000, 2_000, 3_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000,
    600_000, 900_000, 1_800_000, 3_600_000, 7_200_000, 21_600_000, 86_400_000,
];

/// Default longest wait a receiver's `Retry-After` may ask for (1 hour).
pub const DEFAULT_MAX_RETRY_AFTER_MS: u64 = HOUR_MS;
/// Highest `max_retry_after_ms` an operator may set (1 day).
pub const MAX_MAX_RETRY_AFTER_MS: u64 = DAY_MS;

/// The shape of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    /// Immediate retries, then growing delays until the give-up age.
    #[default]
    Ladder,
    /// A fixed number of retries a fixed delay apart, then give up.
    Fixed,
}

/// What happens when the policy is exhausted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GiveUpRule {
    /// Deactivate the subscription; its backlog is kept (or discarded on request).
    #[default]
    Disable,
    /// Park that one event for replay and go on with the next.
    Skip,
}

/// What a `410 Gone` answer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GoneRule {
    /// Disable the subscription at once: the receiver said it is gone for good.
    #[default]
    Disable,
    /// Treat it as any other failed attempt.
    Retry,
}

/// A subscription's retry policy as the operator writes it (`retry`).
///
/// Fields that do not apply to the chosen `policy` are refused, so a typo
/// cannot silently leave the defaults in force.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// `ladder` (default) or `fixed`.
    #[serde(default)]
    pub policy: PolicyKind,
    /// Retries of the same event right away (default 3 for a ladder, 0 for fixed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immediate_retries: Option<u32>,
    /// Pause between immediate retries (default 500 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immediate_pause_ms: Option<u64>,
    /// Ladder: the delays, in order (default the production ladder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps_ms: Option<Vec<u64>>,
    /// Ladder: delay repeated after the last step (default 24 h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_every_ms: Option<u64>,
    /// Ladder: give up at the first failure this long after the first one (default 7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub give_up_after_ms: Option<u64>,
    /// Fixed: how many delayed retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Fixed: the delay before each retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// `disable` (default) or `skip`.
    #[serde(default)]
    pub on_give_up: GiveUpRule,
    /// With `disable`: discard the undelivered backlog instead of keeping it.
    #[serde(default)]
    pub discard_on_disable: bool,
    /// Longest wait a `Retry-After` on a 429 or 503 is honoured for (default
    /// 1 hour); a longer one is ignored and the ladder applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retry_after_ms: Option<u64>,
    /// `disable` (default): a `410 Gone` disables the subscription at once;
    /// `retry`: it is a failure like any other.
    #[serde(default)]
    pub on_gone: GoneRule,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Try the same event again after this short pause, holding it.
    RetryNow(Duration),
    /// Send the event to the delay queue of this many milliseconds.
    Delay {
        /// The delay step, in milliseconds (names the delay queue).
        delay_ms: u64,
    },
    /// The policy is exhausted: apply the give-up rule.
    GiveUp,
}

impl RetryPolicy {
    /// Checks the policy, naming the offending field (under `retry.`).
    pub fn validate(&self) -> Result<(), Problem> {
        let field = |name: &str, message: String| Problem::field(format!("retry.{name}"), message);
        let misplaced = |name: &str, kind: &str| {
            Problem::field(
                format!("retry.{name}"),
                format!("does not apply to policy `{kind}`"),
            )
        };
        if self.immediate_retries.unwrap_or(0) > MAX_IMMEDIATE_RETRIES {
            return Err(field(
                "immediate_retries",
                format!("must be at most {MAX_IMMEDIATE_RETRIES}"),
            ));
        }
        if self.immediate_pause_ms.unwrap_or(0) > MAX_IMMEDIATE_PAUSE_MS {
            return Err(field(
                "immediate_pause_ms",
                format!("must be at most {MAX_IMMEDIATE_PAUSE_MS}"),
            ));
        }
        match self.policy {
            PolicyKind::Ladder => {
                for (name, given) in [
                    ("retries", self.retries.is_some()),
                    ("delay_ms", self.delay_ms.is_some()),
                ] {
                    if given {
                        return Err(misplaced(name, "ladder"));
                    }
                }
                if let Some(steps) = &self.steps_ms {
                    if steps.is_empty() || steps.len() > MAX_STEPS {
                        return Err(field(
                            "steps_ms",
                            format!("must list 1 to {MAX_STEPS} delays"),
                        ));
                    }
                    for (i, step) in steps.iter().enumerate() {
                        check_step(*step).map_err(|m| field(&format!("steps_ms[{i}]"), m))?;
                    }
                }
                if let Some(repeat) = self.repeat_every_ms {
                    check_step(repeat).map_err(|m| field("repeat_every_ms", m))?;
                }
                if self.give_up_after_ms == Some(0) {
                    return Err(field("give_up_after_ms", "must be above 0".into()));
                }
            }
            PolicyKind::Fixed => {
                for (name, given) in [
                    ("steps_ms", self.steps_ms.is_some()),
                    ("repeat_every_ms", self.repeat_every_ms.is_some()),
                    ("give_up_after_ms", self.give_up_after_ms.is_some()),
                ] {
                    if given {
                        return Err(misplaced(name, "fixed"));
                    }
                }
                let retries = self
                    .retries
                    .ok_or_else(|| field("retries", "is required with policy `fixed`".into()))?;
                if retries > 100 {
                    return Err(field("retries", "must be at most 100".into()));
                }
                let delay = self
                    .delay_ms
                    .ok_or_else(|| field("delay_ms", "is required with policy `fixed`".into()))?;
                check_step(delay).map_err(|m| field("delay_ms", m))?;
            }
        }
        if self.max_retry_after_ms.unwrap_or(0) > MAX_MAX_RETRY_AFTER_MS {
            return Err(field(
                "max_retry_after_ms",
                format!("must be at most {MAX_MAX_RETRY_AFTER_MS}"),
            ));
        }
        if self.discard_on_disable && self.on_give_up != GiveUpRule::Disable {
            return Err(field(
                "discard_on_disable",
                "applies only with `on_give_up: disable`".into(),
            ));
        }
        Ok(())
    }

    /// The policy with every default filled in, as the API shows it.
    pub fn resolved(&self) -> Self {
        let ladder = self.policy == PolicyKind::Ladder;
        Self {
            policy: self.policy,
            immediate_retries: Some(self.immediate_retries()),
            immediate_pause_ms: Some(self.immediate_pause().as_millis() as u64),
            steps_ms: ladder.then(|| self.steps().to_vec()),
            repeat_every_ms: ladder
                .then(|| self.repeat_every_ms.unwrap_or(DEFAULT_REPEAT_EVERY_MS)),
            give_up_after_ms: self.give_up_after().map(|age| age.as_millis() as u64),
            retries: self.retries,
            delay_ms: self.delay_ms,
            on_give_up: self.on_give_up,
            discard_on_disable: self.discard_on_disable,
            max_retry_after_ms: Some(self.max_retry_after().as_millis() as u64),
            on_gone: self.on_gone,
        }
    }

    /// Longest `Retry-After` wait honoured.
    pub fn max_retry_after(&self) -> Duration {
        Duration::from_millis(
            self.max_retry_after_ms
                .unwrap_or(DEFAULT_MAX_RETRY_AFTER_MS),
        )
    }

    /// Immediate retries in force (the default depends on the policy).
    pub fn immediate_retries(&self) -> u32 {
        self.immediate_retries.unwrap_or(match self.policy {
            PolicyKind::Ladder => DEFAULT_IMMEDIATE_RETRIES,
            PolicyKind::Fixed => 0,
        })
    }

    /// Pause between immediate retries.
    pub fn immediate_pause(&self) -> Duration {
        Duration::from_millis(
            self.immediate_pause_ms
                .unwrap_or(DEFAULT_IMMEDIATE_PAUSE_MS),
        )
    }

    /// Ladder steps in force.
    pub fn steps(&self) -> &[u64] {
        self.steps_ms.as_deref().unwrap_or(&PRODUCTION_STEPS_MS)
    }

    /// Give-up age in force (ladder only; `None` for fixed).
    pub fn give_up_after(&self) -> Option<Duration> {
        match self.policy {
            PolicyKind::Ladder => Some(Duration::from_millis(
                self.give_up_after_ms.unwrap_or(DEFAULT_GIVE_UP_AFTER_MS),
            )),
            PolicyKind::Fixed => None,
        }
    }

    /// Every distinct delay this policy can ask for (one delay queue each).
    pub fn delays_ms(&self) -> Vec<u64> {
        let mut delays: Vec<u64> = match self.policy {
            PolicyKind::Ladder => {
                let mut all = self.steps().to_vec();
                all.push(self.repeat_every_ms.unwrap_or(DEFAULT_REPEAT_EVERY_MS));
                all
            }
            PolicyKind::Fixed => self.delay_ms.into_iter().collect(),
        };
        delays.sort_unstable();
        delays.dedup();
        delays
    }

    /// Decides what follows the `failures`-th failed attempt of an event
    /// (counting from 1) whose first failure was at `first_failure`.
    ///
    /// The ladder gives up at the first failure that happens at least the
    /// give-up age after the first one; fixed after its last retry.
    pub fn after_failure(
        &self,
        failures: u32,
        first_failure: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> NextStep {
        let immediate = self.immediate_retries();
        if failures <= immediate {
            return NextStep::RetryNow(self.immediate_pause());
        }
        // 0 for the first delayed retry.
        let delayed = (failures - immediate - 1) as usize;
        match self.policy {
            PolicyKind::Ladder => {
                let age = (now - first_failure).to_std().unwrap_or_default();
                if self.give_up_after().is_some_and(|limit| age >= limit) {
                    return NextStep::GiveUp;
                }
                let delay_ms = self
                    .steps()
                    .get(delayed)
                    .copied()
                    .unwrap_or(self.repeat_every_ms.unwrap_or(DEFAULT_REPEAT_EVERY_MS));
                NextStep::Delay { delay_ms }
            }
            PolicyKind::Fixed => match (self.retries, self.delay_ms) {
                (Some(retries), Some(delay_ms)) if delayed < retries as usize => {
                    NextStep::Delay { delay_ms }
                }
                _ => NextStep::GiveUp,
            },
        }
    }
}

fn check_step(ms: u64) -> Result<(), String> {
    if (MIN_STEP_MS..=MAX_STEP_MS).contains(&ms) {
        Ok(())
    } else {
        Err(format!(
            "must be between {MIN_STEP_MS} and {MAX_STEP_MS} milliseconds"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::problem::parse_json;
    use chrono::TimeDelta;

    fn policy(json: &str) -> Result<RetryPolicy, Problem> {
        let policy: RetryPolicy = parse_json(json.as_bytes())?;
        policy.validate()?;
        Ok(policy)
    }

    /// Walks the default ladder, failing at each scheduled time, and returns
    /// every delay chosen until it gives up, with the give-up time.
    fn walk(policy: &RetryPolicy) -> (Vec<u64>, TimeDelta) {
        let first = DateTime::<Utc>::UNIX_EPOCH;
        let mut now = first;
        let mut delays = Vec::new();
        for failures in 1.. {
            match policy.after_failure(failures, first, now) {
                NextStep::RetryNow(pause) => now += TimeDelta::from_std(pause).unwrap(),
                NextStep::Delay { delay_ms } => {
                    delays.push(delay_ms);
                    now += TimeDelta::milliseconds(delay_ms as i64);
                }
                NextStep::GiveUp => break,
            }
        }
        (delays, now - first)
    }

    #[test]
    fn production_ladder_steps_then_daily_until_seven_days() {
        let ladder = RetryPolicy::default();
        assert_eq!(ladder.immediate_retries(), 3);
        let (delays, gave_up_at) = walk(&ladder);
        let minutes: Vec<u64> = delays.iter().map(|d| d / MINUTE_MS).collect();
        assert_eq!(
            minutes,
            [5, 15, 35, 60, 150, 300, 630, 1260, 2880, 1440, 1440, 1440, 1440],
        );
        // Never before the cut-off, and at most one daily step after it.
        assert!(gave_up_at >= TimeDelta::days(7), "{gave_up_at}");
        assert!(gave_up_at < TimeDelta::days(8), "{gave_up_at}");
    }

    #[test]
    fn ladder_gives_up_exactly_at_the_age_not_before() {
        let ladder = RetryPolicy::default();
        let first = DateTime::<Utc>::UNIX_EPOCH;
        let just_before = first + TimeDelta::days(7) - TimeDelta::seconds(1);
        assert!(matches!(
            ladder.after_failure(20, first, just_before),
            NextStep::Delay { delay_ms: DAY_MS }
        ));
        assert_eq!(
            ladder.after_failure(20, first, first + TimeDelta::days(7)),
            NextStep::GiveUp
        );
    }

    #[test]
    fn resolved_policy_shows_every_default_and_still_validates() {
        let resolved = RetryPolicy::default().resolved();
        assert_eq!(resolved.steps_ms.as_deref(), Some(&PRODUCTION_STEPS_MS[..]));
        assert_eq!(resolved.give_up_after_ms, Some(7 * DAY_MS));
        assert_eq!(resolved.immediate_retries, Some(3));
        resolved.validate().unwrap();
        let fixed = policy(r#"{"policy":"fixed","retries":2,"delay_ms":60000}"#).unwrap();
        assert_eq!(fixed.resolved().give_up_after_ms, None);
        fixed.resolved().validate().unwrap();
    }

    #[test]
    fn immediate_retries_come_first() {
        let ladder = RetryPolicy::default();
        let now = Utc::now();
        for failures in 1..=3 {
            assert_eq!(
                ladder.after_failure(failures, now, now),
                NextStep::RetryNow(Duration::from_millis(500))
            );
        }
        assert_eq!(
            ladder.after_failure(4, now, now),
            NextStep::Delay {
                delay_ms: 5 * MINUTE_MS
            }
        );
    }

    #[test]
    fn fixed_retries_twice_then_gives_up() {
        let fixed =
            policy(r#"{"policy":"fixed","retries":2,"delay_ms":60000,"on_give_up":"skip"}"#)
                .unwrap();
        let (delays, _) = walk(&fixed);
        assert_eq!(delays, [60_000, 60_000]);
        assert_eq!(fixed.delays_ms(), [60_000]);
    }

    #[test]
    fn custom_ladder_in_milliseconds() {
        let fast = policy(
            r#"{"immediate_retries":1,"immediate_pause_ms":5,"steps_ms":[50,100],"repeat_every_ms":200,"give_up_after_ms":1000}"#,
        )
        .unwrap();
        let (delays, gave_up_at) = walk(&fast);
        assert_eq!(&delays[..4], [50, 100, 200, 200]);
        assert!(gave_up_at >= TimeDelta::milliseconds(1000));
        assert_eq!(fast.delays_ms(), [50, 100, 200]);
    }

    #[test]
    fn names_each_bad_field() {
        let cases = [
            (r#"{"policy":"fixed","delay_ms":10}"#, "retry.retries"),
            (r#"{"policy":"fixed","retries":2}"#, "retry.delay_ms"),
            (
                r#"{"policy":"fixed","retries":2,"delay_ms":10,"steps_ms":[10]}"#,
                "retry.steps_ms",
            ),
            (r#"{"retries":2}"#, "retry.retries"),
            (r#"{"steps_ms":[]}"#, "retry.steps_ms"),
            (r#"{"steps_ms":[100,1]}"#, "retry.steps_ms[1]"),
            (
                r#"{"immediate_pause_ms":3600000}"#,
                "retry.immediate_pause_ms",
            ),
            (
                r#"{"on_give_up":"skip","discard_on_disable":true}"#,
                "retry.discard_on_disable",
            ),
            (r#"{"give_up_after_ms":0}"#, "retry.give_up_after_ms"),
        ];
        for (json, field) in cases {
            let problem = policy(json).unwrap_err();
            assert_eq!(problem.field.as_deref(), Some(field), "{json}: {problem}");
        }
        let unknown = policy(r#"{"polcy":"fixed"}"#).unwrap_err();
        assert_eq!(unknown.field.as_deref(), Some("polcy"));
    }
}
