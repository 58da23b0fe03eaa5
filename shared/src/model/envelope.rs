//! The event as it travels: what producers send in, and the envelope that
//! ingest publishes to each subscription queue and delivery posts out.
//!
//! The payload is kept as raw JSON text from intake to the receiver, so a
//! subscription in `payload` body mode gets the producer's bytes unchanged.

use crate::model::ids::EventId;
use crate::model::problem::{parse_json, Problem};
use crate::model::tenant::TenantId;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Longest accepted event type, in bytes.
pub const MAX_TYPE_LEN: usize = 255;
/// Deepest accepted nesting of arrays and objects in a payload: well below
/// what the JSON parser (and so the subscription filters) can read, far
/// above what any real event needs.
pub const MAX_PAYLOAD_DEPTH: usize = 64;

/// An event as a producer submits it: `{id?, type, operation?, timestamp?, payload}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IncomingEvent {
    /// Producer-chosen id; a UUIDv7 is assigned when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// Event type, e.g. `order.status_changed`.
    #[serde(rename = "type")]
    #[schema(min_length = 1, max_length = 255, example = "order.created")]
    pub event_type: String,
    /// What happened to the entity (`created`, `updated`, …), passed through.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 255)]
    pub operation: Option<String>,
    /// When the event was generated (RFC 3339); intake time when absent.
    #[serde(default)]
    #[schema(format = DateTime)]
    pub timestamp: Option<String>,
    /// The event's data, any JSON, kept byte for byte.
    #[schema(value_type = serde_json::Value)]
    pub payload: Box<RawValue>,
    /// The tenant whose subscriptions may receive it; none: the operator's only.
    #[serde(default)]
    pub tenant: Option<TenantId>,
}

/// A validated event, the body of every message on a subscription queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique event id (producer's, or a UUIDv7).
    pub id: EventId,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Operation, when the producer gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// Generation time, RFC 3339 in UTC with milliseconds.
    pub timestamp: String,
    /// The payload exactly as the producer sent it.
    pub payload: Box<RawValue>,
    /// The event's tenant (see [`crate::model::tenant`]); absent for the operator's own events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
}

impl Envelope {
    /// Parses and validates one event from raw JSON bytes, filling defaults.
    pub fn from_input_bytes(bytes: &[u8], now: DateTime<Utc>) -> Result<Self, Problem> {
        Self::from_input(parse_json(bytes)?, now)
    }

    /// Validates a parsed event and fills `id` and `timestamp` defaults.
    pub fn from_input(input: IncomingEvent, now: DateTime<Utc>) -> Result<Self, Problem> {
        let id = match input.id {
            Some(id) => EventId::try_from(id).map_err(|invalid| invalid.at("id"))?,
            None => EventId::generate(),
        };
        validate_type(&input.event_type)?;
        validate_payload_depth(input.payload.get())?;
        if let Some(operation) = &input.operation {
            if operation.is_empty() || operation.len() > MAX_TYPE_LEN {
                return Err(Problem::field(
                    "operation",
                    format!("must be 1 to {MAX_TYPE_LEN} bytes"),
                ));
            }
        }
        let timestamp = match input.timestamp {
            Some(text) => DateTime::parse_from_rfc3339(&text)
                .map_err(|e| {
                    Problem::field("timestamp", format!("not an RFC 3339 date-time: {e}"))
                })?
                .with_timezone(&Utc),
            None => now,
        };
        Ok(Self {
            id,
            event_type: input.event_type,
            operation: input.operation,
            timestamp: timestamp.to_rfc3339_opts(SecondsFormat::Millis, true),
            payload: input.payload,
            tenant: input.tenant,
        })
    }

    /// Parses an envelope from a subscription-queue message body.
    pub fn from_wire(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Serializes the envelope for a subscription queue or an `envelope`-mode POST.
    pub fn to_wire(&self) -> Vec<u8> {
        // Serializing strings and a RawValue into a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The generation time as a timestamp.
    pub fn generated_at(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.timestamp)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The envelope as a JSON tree, for evaluating subscription filters.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "type": self.event_type,
            "operation": self.operation,
            "timestamp": self.timestamp,
            "payload": serde_json::from_str::<serde_json::Value>(self.payload.get())
                .unwrap_or(serde_json::Value::Null),
        })
    }
}

/// Refuses a payload nested deeper than [`MAX_PAYLOAD_DEPTH`]: filters could
/// not read it, and would see `null` instead.
fn validate_payload_depth(payload: &str) -> Result<(), Problem> {
    if nesting_depth(payload) > MAX_PAYLOAD_DEPTH {
        return Err(Problem::field(
            "payload",
            format!("is nested deeper than {MAX_PAYLOAD_DEPTH} levels of arrays and objects"),
        ));
    }
    Ok(())
}

/// The deepest nesting of arrays and objects in well-formed JSON text, by
/// one pass over its bytes (brackets inside strings do not count).
fn nesting_depth(json: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for byte in json.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Checks an event type: 1–255 bytes of letters, digits and `. _ - : /`.
pub fn validate_type(event_type: &str) -> Result<(), Problem> {
    if event_type.is_empty() || event_type.len() > MAX_TYPE_LEN {
        return Err(Problem::field(
            "type",
            format!("must be 1 to {MAX_TYPE_LEN} bytes"),
        ));
    }
    if !event_type
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-:/".contains(c))
    {
        return Err(Problem::field(
            "type",
            "may contain only letters, digits and . _ - : /",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::problem::ProblemCode;

    #[test]
    fn nesting_depth_counts_brackets_outside_strings() {
        assert_eq!(nesting_depth("1"), 0);
        assert_eq!(nesting_depth(r#"{"a":[1,{"b":2}]}"#), 3);
        assert_eq!(nesting_depth(r#"{"a":"[[[{{{\"]]"}"#), 1);
        assert_eq!(nesting_depth(r#"[[], [[]], []]"#), 3);
    }

    #[test]
    fn a_payload_nested_too_deep_is_refused_naming_the_payload() {
        let deep = |n: usize| {
            format!(
                r#"{{"type":"t","payload":{}{}}}"#,
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        let now = Utc::now();
        let accepted = Envelope::from_input_bytes(deep(MAX_PAYLOAD_DEPTH).as_bytes(), now).unwrap();
        // Filters can read everything that is accepted.
        assert!(!accepted.to_value()["payload"].is_null());
        let problem =
            Envelope::from_input_bytes(deep(MAX_PAYLOAD_DEPTH + 1).as_bytes(), now).unwrap_err();
        assert_eq!(problem.field.as_deref(), Some("payload"));
        // Far deeper than the parser's own limit is refused the same way, not as null.
        let problem = Envelope::from_input_bytes(deep(5_000).as_bytes(), now).unwrap_err();
        assert!(
            problem.field.as_deref() == Some("payload") || problem.code == ProblemCode::NotJson,
            "{problem:?}"
        );
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-02T03:04:05.678Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn fills_defaults_and_keeps_payload_bytes() {
        let raw = br#"{"type":"order.created","payload":{ "b":1,  "a":[1.50, "x"] }}"#;
        let envelope = Envelope::from_input_bytes(raw, now()).unwrap();
        assert_eq!(envelope.timestamp, "2026-01-02T03:04:05.678Z");
        assert_eq!(
            uuid::Uuid::parse_str(envelope.id.as_str())
                .unwrap()
                .get_version_num(),
            7
        );
        assert_eq!(envelope.payload.get(), r#"{ "b":1,  "a":[1.50, "x"] }"#);
        let back = Envelope::from_wire(&envelope.to_wire()).unwrap();
        assert_eq!(back.payload.get(), envelope.payload.get());
    }

    #[test]
    fn names_the_bad_field() {
        let cases: [(&[u8], &str); 5] = [
            (br#"{"payload":{}}"#, "type"),
            (br#"{"type":"a b","payload":{}}"#, "type"),
            (
                br#"{"type":"a","timestamp":"yesterday","payload":{}}"#,
                "timestamp",
            ),
            (br#"{"type":"a"}"#, "payload"),
            (br#"{"type":"a","payload":{},"extra":1}"#, "extra"),
        ];
        for (input, field) in cases {
            let problem = Envelope::from_input_bytes(input, now()).unwrap_err();
            assert_eq!(problem.field.as_deref(), Some(field), "{problem}");
        }
        assert_eq!(
            Envelope::from_input_bytes(b"nope", now()).unwrap_err().code,
            ProblemCode::NotJson
        );
    }

    #[test]
    fn a_producer_event_id_is_checked_and_kept() {
        let raw = br#"{"id":"has space","type":"a","payload":null}"#;
        let problem = Envelope::from_input_bytes(raw, now()).unwrap_err();
        assert_eq!(problem.field.as_deref(), Some("id"), "{problem}");
        let wire = br#"{"id":"","type":"a","timestamp":"2026-01-02T03:04:05.678Z","payload":null}"#;
        assert!(
            Envelope::from_wire(wire).is_err(),
            "an envelope's id is checked when read"
        );
    }

    #[test]
    fn normalises_timestamps_to_utc() {
        let raw =
            br#"{"id":"e1","type":"a","timestamp":"2026-05-01T12:00:00+02:00","payload":null}"#;
        let envelope = Envelope::from_input_bytes(raw, now()).unwrap();
        assert_eq!(envelope.timestamp, "2026-05-01T10:00:00.000Z");
        assert_eq!(envelope.id, "e1");
    }
}
