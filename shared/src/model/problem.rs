//! Validation problems: what was wrong with a piece of input, naming the field.
//!
//! One type serves the HTTP API (rendered as a 4xx JSON body) and the AMQP
//! intake (rendered as the reason header of a dead-lettered message).
//! [`ProblemCode`] lists every error code any Postline API answers with, so
//! the OpenAPI documents can name them all.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Every machine-readable error code of Postline's HTTP APIs (ingest's
/// `{"error": {"code"}}` bodies, the OAuth token endpoint's RFC 6749 §5.2
/// `error` values, the token service's errors) and of the AMQP intake's
/// `postline-reject-code` header. The wire strings are the snake_case names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProblemCode {
    /// A field is missing, unknown, mistyped or out of range (`field` names it);
    /// with 409, the field's value is taken (an id that exists).
    InvalidField,
    /// The body as a whole does not fit (e.g. not an object).
    InvalidBody,
    /// The body is not JSON.
    NotJson,
    /// The body (or an event) is over the size limit (413).
    TooLarge,
    /// A batch is empty or has too many events.
    InvalidBatch,
    /// The endpoint failed the PING sent before a create or update (422).
    PingFailed,
    /// A URL leads to an address Postline may not call (422).
    EndpointNotAllowed,
    /// Something that cannot happen with well-formed data (500).
    Internal,
    /// Missing or invalid bearer token (401).
    Unauthorized,
    /// Only the operator's admin token may do this (403).
    AdminOnly,
    /// The caller's tenant is suspended (403).
    TenantSuspended,
    /// The token lacks the scope the request needs (403).
    InsufficientScope,
    /// A client id is slowed down after failed authentications (429).
    SlowDown,
    /// No such resource (404), or not the caller's.
    NotFound,
    /// The subscription changed while the request was checked (409); retry.
    Changed,
    /// The blocked event was attempted meanwhile (409).
    BlockChanged,
    /// The subscription is not blocked (409).
    NotBlocked,
    /// Redis lost Postline's state; restore or reset it first (503).
    StateLost,
    /// The state is present; `?force=true` to overwrite it (409).
    StatePresent,
    /// A dependency is down (503); retry.
    Unavailable,
    /// A tenant's limit (`max_subscriptions`) is reached (400).
    LimitReached,
    /// A tenant may not set this field or value (400).
    OperatorOnly,
    /// OAuth token endpoint: a malformed token request (400).
    InvalidRequest,
    /// OAuth token endpoint: client authentication failed (401).
    InvalidClient,
    /// OAuth token endpoint: a grant type other than `client_credentials` (400).
    UnsupportedGrantType,
    /// OAuth token endpoint: an unknown or not granted scope (400).
    InvalidScope,
    /// OAuth token endpoint: the client's tenant is suspended (400).
    UnauthorizedClient,
    /// Token service: the subscription's receiver auth fetches no token (422).
    NoTokenMode,
    /// Token service: the receiver's token endpoint failed (502).
    TokenEndpoint,
    /// Token service: another replica's refresh did not finish in time (504).
    RefreshTimeout,
}

impl ProblemCode {
    /// Every code, in declaration order (a new code goes here too: the
    /// OpenAPI test compares this list with the documents).
    pub const ALL: [ProblemCode; 30] = [
        Self::InvalidField,
        Self::InvalidBody,
        Self::NotJson,
        Self::TooLarge,
        Self::InvalidBatch,
        Self::PingFailed,
        Self::EndpointNotAllowed,
        Self::Internal,
        Self::Unauthorized,
        Self::AdminOnly,
        Self::TenantSuspended,
        Self::InsufficientScope,
        Self::SlowDown,
        Self::NotFound,
        Self::Changed,
        Self::BlockChanged,
        Self::NotBlocked,
        Self::StateLost,
        Self::StatePresent,
        Self::Unavailable,
        Self::LimitReached,
        Self::OperatorOnly,
        Self::InvalidRequest,
        Self::InvalidClient,
        Self::UnsupportedGrantType,
        Self::InvalidScope,
        Self::UnauthorizedClient,
        Self::NoTokenMode,
        Self::TokenEndpoint,
        Self::RefreshTimeout,
    ];

    /// The wire string (`invalid_field`, `not_found`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidField => "invalid_field",
            Self::InvalidBody => "invalid_body",
            Self::NotJson => "not_json",
            Self::TooLarge => "too_large",
            Self::InvalidBatch => "invalid_batch",
            Self::PingFailed => "ping_failed",
            Self::EndpointNotAllowed => "endpoint_not_allowed",
            Self::Internal => "internal",
            Self::Unauthorized => "unauthorized",
            Self::AdminOnly => "admin_only",
            Self::TenantSuspended => "tenant_suspended",
            Self::InsufficientScope => "insufficient_scope",
            Self::SlowDown => "slow_down",
            Self::NotFound => "not_found",
            Self::Changed => "changed",
            Self::BlockChanged => "block_changed",
            Self::NotBlocked => "not_blocked",
            Self::StateLost => "state_lost",
            Self::StatePresent => "state_present",
            Self::Unavailable => "unavailable",
            Self::LimitReached => "limit_reached",
            Self::OperatorOnly => "operator_only",
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::NoTokenMode => "no_token_mode",
            Self::TokenEndpoint => "token_endpoint",
            Self::RefreshTimeout => "refresh_timeout",
        }
    }
}

impl fmt::Display for ProblemCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected input: a machine-readable code, the offending field, and a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Stable code for programs, e.g. `invalid_field`, `not_json`, `too_large`.
    pub code: ProblemCode,
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
            code: ProblemCode::InvalidField,
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// A problem with the input as a whole.
    pub fn whole(code: ProblemCode, message: impl Into<String>) -> Self {
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
            return Self::whole(
                ProblemCode::NotJson,
                format!("body is not valid JSON: {message}"),
            );
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
            (None, "." | "") => return Self::whole(ProblemCode::InvalidBody, message),
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
    deserializer.end().map_err(|e| {
        Problem::whole(
            ProblemCode::NotJson,
            format!("trailing data after JSON: {e}"),
        )
    })?;
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
        assert_eq!(broken.code, ProblemCode::NotJson);
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
    fn every_code_is_listed_once() {
        let distinct: std::collections::HashSet<_> = ProblemCode::ALL.iter().collect();
        assert_eq!(distinct.len(), ProblemCode::ALL.len());
    }

    #[test]
    fn every_code_serializes_as_its_wire_string() {
        for code in ProblemCode::ALL {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::from(code.as_str())
            );
        }
    }

    #[test]
    fn within_prefixes_the_path() {
        let p = Problem::field("type", "required").within("events[2]");
        assert_eq!(p.field.as_deref(), Some("events[2].type"));
    }
}
