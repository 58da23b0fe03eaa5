//! Partner semantics of a subscription beyond "POST every event": never the
//! same status twice (`dedup`), nothing more for an entity once its terminal
//! status went out (`completion`), and delivery on a fixed tick (`interval_ms`).
//!
//! This module holds the settings, their validation and what they make of one
//! event ([`Tracking`]); delivery checks and records the tracking in Redis
//! (`delivery_state`), ingest validates the settings and shows them.

use super::Subscription;
use crate::model::problem::Problem;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Default life of a dedup identity and of a completed entity: 30 days.
pub const DEFAULT_SEMANTICS_TTL_SECS: u64 = 30 * 24 * 3600;
/// Longest such life: a year.
pub const MAX_SEMANTICS_TTL_SECS: u64 = 366 * 24 * 3600;
/// Most pointers in a dedup identity.
pub const MAX_DEDUP_FIELDS: usize = 16;
/// Most terminal values of a completion rule.
pub const MAX_TERMINAL_VALUES: usize = 64;
/// Shortest delivery interval.
pub const MIN_INTERVAL_MS: u64 = 1_000;
/// Longest delivery interval: a day.
pub const MAX_INTERVAL_MS: u64 = 24 * 3600 * 1_000;

fn default_ttl_secs() -> u64 {
    DEFAULT_SEMANTICS_TTL_SECS
}

/// `dedup`: an event whose identity (the values at `fields`) was already
/// delivered to the subscription within `ttl_secs` is not sent again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Dedup {
    /// JSON pointers into the envelope, e.g. `/payload/order_id`, `/payload/status`.
    pub fields: Vec<String>,
    /// How long an identity is remembered after its delivery.
    #[serde(default = "default_ttl_secs")]
    pub ttl_secs: u64,
}

/// `completion`: once an event whose `field` is one of `terminal` was
/// delivered for an entity (the value at `entity`), later events of that
/// entity are dropped for `ttl_secs` after it was last seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Completion {
    /// JSON pointer to the entity's id, e.g. `/payload/order_id`.
    pub entity: String,
    /// JSON pointer to its status, e.g. `/payload/status`.
    pub field: String,
    /// Statuses that complete the entity (JSON equality), e.g. `["Cancelled", "Ended"]`.
    pub terminal: Vec<Value>,
    /// How long an entity is tracked after it was last seen.
    #[serde(default = "default_ttl_secs")]
    pub ttl_secs: u64,
}

/// What an event means to a subscription's dedup and completion rules:
/// what delivery must check before sending it and record after.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tracking {
    /// The event's dedup identity, when the subscription deduplicates and
    /// the event has every field.
    pub dedup: Option<Mark>,
    /// The event's entity, when the subscription tracks completion and the
    /// event names an entity.
    pub entity: Option<EntityMark>,
}

/// A hashed identity and how long to keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// Hex SHA-256 of the identity (fixed length whatever the values).
    pub hash: String,
    /// Life of the record.
    pub ttl_secs: u64,
}

/// An event's entity under a completion rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityMark {
    /// The hashed entity.
    pub mark: Mark,
    /// Whether this event's status completes the entity.
    pub terminal: bool,
}

impl Tracking {
    /// Whether there is nothing to check or record.
    pub fn is_empty(&self) -> bool {
        self.dedup.is_none() && self.entity.is_none()
    }

    /// The tracking of `envelope` under `subscription`'s rules; the payload
    /// is parsed only when the subscription has a rule.
    pub fn for_event(subscription: &Subscription, envelope: &crate::Envelope) -> Self {
        let spec = &subscription.spec;
        if spec.dedup.is_none() && spec.completion.is_none() {
            return Self::default();
        }
        Self::of(subscription, &envelope.to_value())
    }

    /// The tracking of the event whose envelope tree is `tree` (see
    /// [`crate::Envelope::to_value`]) under `subscription`'s rules.
    pub fn of(subscription: &Subscription, tree: &Value) -> Self {
        let spec = &subscription.spec;
        // The creation time is part of every hash: a subscription deleted and
        // created again under the same id starts afresh, even though the
        // dedup records of the old one are left to expire on their own.
        let salt = subscription.created_at;
        let dedup = spec.dedup.as_ref().and_then(|dedup| {
            let values = dedup
                .fields
                .iter()
                .map(|pointer| present(tree, pointer))
                .collect::<Option<Vec<&Value>>>()?;
            Some(Mark {
                hash: digest(salt, "dedup", &dedup.fields, &values),
                ttl_secs: dedup.ttl_secs,
            })
        });
        let entity = spec.completion.as_ref().and_then(|rule| {
            let entity = present(tree, &rule.entity)?;
            let terminal = present(tree, &rule.field).is_some_and(|s| rule.terminal.contains(s));
            Some(EntityMark {
                mark: Mark {
                    hash: digest(
                        salt,
                        "entity",
                        std::slice::from_ref(&rule.entity),
                        &[entity],
                    ),
                    ttl_secs: rule.ttl_secs,
                },
                terminal,
            })
        });
        Self { dedup, entity }
    }
}

/// The value at `pointer`, treating JSON `null` as absent (as filters do).
fn present<'a>(tree: &'a Value, pointer: &str) -> Option<&'a Value> {
    tree.pointer(pointer).filter(|v| !v.is_null())
}

fn digest(salt: DateTime<Utc>, kind: &str, pointers: &[String], values: &[&Value]) -> String {
    // serde_json's maps are sorted, so equal values always serialize alike.
    let canonical = serde_json::json!([salt.timestamp_micros(), kind, pointers, values]);
    let hash = Sha256::digest(canonical.to_string().as_bytes());
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

fn validate_pointer(pointer: &str, field: &str) -> Result<(), Problem> {
    if pointer.starts_with('/') {
        Ok(())
    } else {
        Err(Problem::field(
            field,
            "must be a JSON pointer starting with `/`, e.g. /payload/order_id",
        ))
    }
}

fn validate_ttl(ttl_secs: u64, field: &str) -> Result<(), Problem> {
    if (1..=MAX_SEMANTICS_TTL_SECS).contains(&ttl_secs) {
        Ok(())
    } else {
        Err(Problem::field(
            field,
            format!("must be between 1 and {MAX_SEMANTICS_TTL_SECS} seconds"),
        ))
    }
}

impl Dedup {
    /// Checks the rule, naming the field at fault (under `dedup`).
    pub fn validate(&self) -> Result<(), Problem> {
        if self.fields.is_empty() || self.fields.len() > MAX_DEDUP_FIELDS {
            return Err(Problem::field(
                "dedup.fields",
                format!("must list 1 to {MAX_DEDUP_FIELDS} JSON pointers"),
            ));
        }
        for (i, pointer) in self.fields.iter().enumerate() {
            validate_pointer(pointer, &format!("dedup.fields[{i}]"))?;
        }
        validate_ttl(self.ttl_secs, "dedup.ttl_secs")
    }
}

impl Completion {
    /// Checks the rule, naming the field at fault (under `completion`).
    pub fn validate(&self) -> Result<(), Problem> {
        validate_pointer(&self.entity, "completion.entity")?;
        validate_pointer(&self.field, "completion.field")?;
        if self.terminal.is_empty() || self.terminal.len() > MAX_TERMINAL_VALUES {
            return Err(Problem::field(
                "completion.terminal",
                format!("must list 1 to {MAX_TERMINAL_VALUES} values"),
            ));
        }
        validate_ttl(self.ttl_secs, "completion.ttl_secs")
    }
}

/// Checks a delivery interval.
pub fn validate_interval(interval_ms: Option<u64>) -> Result<(), Problem> {
    match interval_ms {
        Some(ms) if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&ms) => Err(Problem::field(
            "interval_ms",
            format!("must be between {MIN_INTERVAL_MS} and {MAX_INTERVAL_MS}"),
        )),
        _ => Ok(()),
    }
}

/// The tick at or before `now_ms` (unix ms) of an `interval_ms` schedule
/// aligned to the epoch, so every replica computes the same ticks.
pub fn tick_at_or_before(now_ms: i64, interval_ms: u64) -> i64 {
    let interval = i64::try_from(interval_ms).unwrap_or(i64::MAX).max(1);
    now_ms.div_euclid(interval) * interval
}

/// The first tick strictly after `at_ms`: when an event queued at `at_ms`
/// is delivered ("everything queued before the tick").
pub fn tick_after(at_ms: i64, interval_ms: u64) -> i64 {
    let interval = i64::try_from(interval_ms).unwrap_or(i64::MAX).max(1);
    tick_at_or_before(at_ms, interval_ms).saturating_add(interval)
}

/// Deserializes a field that may be given as `null` to clear it: absent is
/// `None`, `null` is `Some(None)`, a value is `Some(Some(value))`.
pub(crate) fn nullable<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::problem::parse_json;
    use serde_json::json;

    fn subscription(extra: Value) -> Subscription {
        let mut spec = json!({"id": "s", "endpoint": "https://x/", "event_types": ["*"]});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        let spec = parse_json(spec.to_string().as_bytes()).unwrap();
        let at = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        Subscription::new(spec, at)
    }

    fn tree(payload: Value) -> Value {
        json!({"id": "e", "type": "order.status", "payload": payload})
    }

    #[test]
    fn dedup_identity_is_the_values_at_the_fields() {
        let s =
            subscription(json!({"dedup": {"fields": ["/payload/order_id", "/payload/status"]}}));
        let of = |payload| Tracking::of(&s, &tree(payload)).dedup;
        let a = of(json!({"order_id": "A", "status": "Open", "n": 1})).unwrap();
        let again = of(json!({"n": 2, "status": "Open", "order_id": "A"})).unwrap();
        assert_eq!(a, again, "other fields and key order do not matter");
        assert_eq!(a.ttl_secs, DEFAULT_SEMANTICS_TTL_SECS);
        assert_eq!(a.hash.len(), 64);
        assert_ne!(of(json!({"order_id": "A", "status": "Ended"})).unwrap(), a);
        assert_ne!(of(json!({"order_id": "B", "status": "Open"})).unwrap(), a);
        assert_ne!(
            of(json!({"order_id": 1, "status": "Open"})),
            of(json!({"order_id": "1", "status": "Open"})),
            "JSON types count"
        );
        assert_eq!(of(json!({"order_id": "A"})), None, "missing field");
        assert_eq!(of(json!({"order_id": "A", "status": null})), None);
        assert!(Tracking::of(&subscription(json!({})), &tree(json!({}))).is_empty());
    }

    #[test]
    fn a_subscription_created_again_gets_fresh_identities() {
        let mut first = subscription(json!({"dedup": {"fields": ["/payload/k"]}}));
        let event = tree(json!({"k": 1}));
        let before = Tracking::of(&first, &event);
        first.created_at += chrono::TimeDelta::seconds(1);
        assert_ne!(Tracking::of(&first, &event), before);
    }

    #[test]
    fn completion_marks_the_entity_and_terminal_statuses() {
        let s = subscription(json!({"completion": {
            "entity": "/payload/order_id", "field": "/payload/status",
            "terminal": ["Cancelled", "Ended"], "ttl_secs": 60,
        }}));
        let of = |payload| Tracking::of(&s, &tree(payload)).entity;
        let open = of(json!({"order_id": "A", "status": "Open"})).unwrap();
        let ended = of(json!({"order_id": "A", "status": "Ended"})).unwrap();
        assert!(!open.terminal);
        assert!(ended.terminal);
        assert_eq!(open.mark, ended.mark, "same entity");
        assert_eq!(open.mark.ttl_secs, 60);
        let other = of(json!({"order_id": "B", "status": "Ended"})).unwrap();
        assert_ne!(other.mark, ended.mark);
        assert!(!of(json!({"order_id": "A"})).unwrap().terminal);
        assert_eq!(of(json!({"status": "Ended"})), None, "no entity");
    }

    #[test]
    fn names_each_bad_field() {
        let cases = [
            (json!({"dedup": {"fields": []}}), "dedup.fields"),
            (
                json!({"dedup": {"fields": ["order_id"]}}),
                "dedup.fields[0]",
            ),
            (
                json!({"dedup": {"fields": ["/a"], "ttl_secs": 0}}),
                "dedup.ttl_secs",
            ),
            (json!({"dedup": {"fields": ["/a"], "ttl": 1}}), "dedup.ttl"),
            (
                json!({"completion": {"entity": "x", "field": "/s", "terminal": ["E"]}}),
                "completion.entity",
            ),
            (
                json!({"completion": {"entity": "/x", "field": "/s", "terminal": []}}),
                "completion.terminal",
            ),
            (
                json!({"completion": {"entity": "/x", "terminal": ["E"]}}),
                "completion.field",
            ),
            (json!({"interval_ms": 999}), "interval_ms"),
            (json!({"interval_ms": MAX_INTERVAL_MS + 1}), "interval_ms"),
        ];
        for (extra, field) in cases {
            let mut spec = json!({"id": "s", "endpoint": "https://x/", "event_types": ["*"]});
            if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
                spec.extend(extra.clone());
            }
            let problem = parse_json::<super::super::SubscriptionSpec>(spec.to_string().as_bytes())
                .and_then(|s| s.validate())
                .unwrap_err();
            assert_eq!(problem.field.as_deref(), Some(field), "{spec}: {problem}");
        }
    }

    #[test]
    fn ticks_are_aligned_to_the_epoch() {
        assert_eq!(tick_at_or_before(12_345, 1_000), 12_000);
        assert_eq!(tick_at_or_before(12_000, 1_000), 12_000);
        assert_eq!(
            tick_after(12_000, 1_000),
            13_000,
            "queued at a tick: the next one"
        );
        assert_eq!(tick_after(12_999, 1_000), 13_000);
        assert_eq!(tick_after(1_700_000_123_456, 300_000), 1_700_000_400_000);
    }
}
