//! Validation problems: what was wrong with a piece of input, naming the field.
//!
//! One type serves the HTTP API (rendered as a 4xx JSON body) and the AMQP
//! intake (rendered as the reason header of a dead-lettered message).

use serde::Serialize;
use std::fmt;

/// A rejected input: a machine-readable code, the offending field, and a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Stable code for programs, e.g. `invalid_field`, `not_json`, `too_large`.
    pub code: &'static str,
    /// The field at fault as a path (`filters[0].pointer`), when one is to blame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Human-readable explanation.
    pub message: String,
}

impl Problem {
    /// A problem with one named field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: "invalid_field",
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// A problem with the input as a whole.
    pub fn whole(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            field: None,
            message: message.into(),
        }
    }

    /// The same problem with its field path placed under `prefix` (e.g. `events[3]`).
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = Some(match self.field.take() {
            Some(field) if field.starts_with('[') => format!("{prefix}{field}"),
            Some(field) => format!("{prefix}.{field}"),
            None => prefix.to_string(),
        });
        self
    }

    /// Turns a path-tracking JSON parse failure into a problem naming the field.
    pub fn from_json(error: serde_path_to_error::Error<serde_json::Error>) -> Self {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = without_input_values(&strip_position(&inner.to_string()));
        if inner.is_syntax() || inner.is_eof() {
            return Self::whole("not_json", format!("body is not valid JSON: {message}"));
        }
        // The path already ends in an unknown field's name, but a missing field
        // is named only in the message text: lift it out to complete the path.
        // Inside an internally tagged enum (buffered by serde) the path stops at
        // the enum, so an unknown field's name is lifted out the same way.
        let named = quoted_name(&message, "missing field `").or_else(|| {
            quoted_name(&message, "unknown field `").filter(|name| !path.ends_with(name.as_str()))
        });
        let field = match (named, path.as_str()) {
            (Some(name), "." | "") => name,
            (Some(name), parent) => format!("{parent}.{name}"),
            (None, "." | "") => return Self::whole("invalid_body", message),
            (None, path) => path.to_string(),
        };
        Self::field(field, message)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}: {}: {}", self.code, field, self.message),
            None => write!(f, "{}: {}", self.code, self.message),
        }
    }
}

impl std::error::Error for Problem {}

/// Parses JSON into `T`, reporting the path of the first field that does not fit.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T =
        serde_path_to_error::deserialize(&mut deserializer).map_err(Problem::from_json)?;
    deserializer
        .end()
        .map_err(|e| Problem::whole("not_json", format!("trailing data after JSON: {e}")))?;
    Ok(value)
}

fn quoted_name(message: &str, marker: &str) -> Option<String> {
    let rest = &message[message.find(marker)? + marker.len()..];
    Some(rest[..rest.find('`')?].to_string())
}

/// Drops the offending value from serde's "invalid type/value" messages
/// (`invalid type: string "hunter2", expected a sequence` → `invalid type:
/// string, expected a sequence`): the value may be a secret in the wrong place,
/// and errors are both returned and logged.
fn without_input_values(message: &str) -> String {
    let Some(rest) = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
    else {
        return message.to_string();
    };
    let prefix = &message[..message.len() - rest.len()];
    let (found, expected) = match rest.find(", expected") {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let kind = found
        .find([' ', '"', '`'])
        .map_or(found, |cut| &found[..cut]);
    format!("{prefix}{kind}{expected}")
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        pointer: String,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        filters: Vec<Inner>,
    }

    #[test]
    fn names_unknown_missing_and_mistyped_fields() {
        let unknown = parse_json::<Outer>(br#"{"name":"a","filters":[],"colour":1}"#).unwrap_err();
        assert_eq!(unknown.field.as_deref(), Some("colour"));
        let nested =
            parse_json::<Outer>(br#"{"name":"a","filters":[{"pointer":"/x","y":1}]}"#).unwrap_err();
        assert_eq!(nested.field.as_deref(), Some("filters[0].y"));
        let missing = parse_json::<Outer>(br#"{"filters":[]}"#).unwrap_err();
        assert_eq!(missing.field.as_deref(), Some("name"));
        let mistyped =
            parse_json::<Outer>(br#"{"name":"a","filters":[{"pointer":3}]}"#).unwrap_err();
        assert_eq!(mistyped.field.as_deref(), Some("filters[0].pointer"));
        let broken = parse_json::<Outer>(b"{not json").unwrap_err();
        assert_eq!(broken.code, "not_json");
    }

    #[test]
    fn never_echoes_the_offending_value() {
        let mistyped = parse_json::<Outer>(br#"{"name":"a","filters":"hunter2"}"#).unwrap_err();
        assert!(!mistyped.message.contains("hunter2"), "{mistyped}");
        assert_eq!(
            mistyped.message,
            "invalid type: string, expected a sequence"
        );
        let number = parse_json::<Outer>(br#"{"name":12345678,"filters":[]}"#).unwrap_err();
        assert!(!number.message.contains("12345678"), "{number}");
    }

    #[test]
    fn within_prefixes_the_path() {
        let p = Problem::field("type", "required").within("events[2]");
        assert_eq!(p.field.as_deref(), Some("events[2].type"));
    }
}
