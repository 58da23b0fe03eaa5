//! The ids Postline passes around, each its own type so that a function
//! taking a subscription id and an event id cannot be handed them swapped:
//! [`SubscriptionId`], [`EventId`] and [`RetryId`] (tenants have
//! [`crate::model::tenant::TenantId`]).
//!
//! Each is checked once, where it enters (an API path or body, an envelope,
//! an AMQP header, a stored record), and deserializing checks it too, so a
//! value of the type is always well formed. On the wire each is a plain
//! string.

use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::fmt;

use crate::model::problem::Problem;

/// Longest subscription id.
pub const MAX_SUBSCRIPTION_ID_LEN: usize = 64;
/// Longest event id, in bytes.
pub const MAX_EVENT_ID_LEN: usize = 200;
/// Longest retry id, in bytes.
pub const MAX_RETRY_ID_LEN: usize = 64;

/// An id that does not have the shape its type requires; says which shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{rule}")]
pub struct InvalidId {
    /// The rule the id broke, for people.
    pub rule: &'static str,
}

impl InvalidId {
    /// The problem of input field `field` holding this id.
    pub fn at(self, field: &str) -> Problem {
        Problem::field(field, self.rule)
    }
}

/// Whether `id` is 1 to `max` of `a-z 0-9 _ -`, starting with a letter or
/// digit: the name-like shape of subscription and tenant ids.
pub fn is_name_like(id: &str, max: usize) -> bool {
    !id.is_empty()
        && id.len() <= max
        && id
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
}

/// Declares a string id type: validated by `$check` on every way in,
/// a plain string on the wire and in the API documents.
macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, rule = $rule:expr, check = $check:expr, pattern = $pattern:expr, example = $example:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// What a well-formed id looks like.
            pub const RULE: &'static str = $rule;

            /// Checks `id`.
            pub fn parse(id: &str) -> Result<Self, InvalidId> {
                Self::try_from(id.to_string())
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(id: String) -> Result<Self, InvalidId> {
                let check: fn(&str) -> bool = $check;
                if check(&id) {
                    Ok(Self(id))
                } else {
                    Err(InvalidId { rule: Self::RULE })
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidId;
            fn from_str(id: &str) -> Result<Self, InvalidId> {
                Self::parse(id)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        /// In the API documents: a string of the shape [`Self::RULE`] states.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .pattern(Some($pattern))
                    .description(Some(Self::RULE))
                    .examples([$example])
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

string_id!(
    /// A subscription id: what the API accepts (`acme_us`: 1 to 64 of
    /// `a-z 0-9 _ -`, starting with a letter or digit), or a reserved id
    /// Postline gives its own subscriptions (the same after a leading `_`,
    /// see [`SubscriptionId::is_reserved`]). It names the subscription's
    /// queue and keys.
    SubscriptionId,
    rule = "must be 1 to 64 of a-z 0-9 _ -, starting with a letter or digit",
    check = |id| {
        is_name_like(id, MAX_SUBSCRIPTION_ID_LEN)
            || id
                .strip_prefix('_')
                .is_some_and(|rest| is_name_like(rest, MAX_SUBSCRIPTION_ID_LEN - 1))
    },
    pattern = "^[a-z0-9][a-z0-9_-]{0,63}$",
    example = "acme_us"
);

impl SubscriptionId {
    /// Whether this is a reserved id (leading `_`): Postline's own
    /// subscriptions have one, and the API refuses to create one.
    pub fn is_reserved(&self) -> bool {
        self.0.starts_with('_')
    }
}

string_id!(
    /// An event id: the producer's (1 to 200 bytes without spaces or control
    /// characters), or a UUIDv7 given at intake.
    EventId,
    rule = "must be 1 to 200 bytes without spaces or control characters",
    check = |id| {
        !id.is_empty()
            && id.len() <= MAX_EVENT_ID_LEN
            && !id.chars().any(|c| c.is_whitespace() || c.is_control())
    },
    pattern = "^[^\\s\\p{Cc}]{1,200}$",
    example = "0192d4e0-7a5b-7c3e-9f10-4b7e2f1a9c01"
);

string_id!(
    /// The id of one delayed copy of an event (a UUIDv4 given when the copy
    /// is made); a strict subscription's block names the copy that counts.
    RetryId,
    rule = "must be 1 to 64 of A-Z a-z 0-9 -",
    check = |id| {
        !id.is_empty()
            && id.len() <= MAX_RETRY_ID_LEN
            && id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
    },
    pattern = "^[A-Za-z0-9-]{1,64}$",
    example = "5f0c1d6e-2b3a-4c8d-9e7f-a1b2c3d4e5f6"
);

impl EventId {
    /// A fresh id for an event that came without one (a UUIDv7: ids given
    /// later sort later).
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }
}

impl RetryId {
    /// The id of a new delayed copy.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_ids_are_name_like() {
        for good in ["acme_us", "a", "9lives", "a-1_b", &"a".repeat(64)] {
            assert!(SubscriptionId::parse(good).is_ok(), "{good}");
        }
        let long = "a".repeat(65);
        for bad in [
            "",
            "Acme",
            "-acme",
            "__a",
            "_",
            "_-a",
            "a b",
            "a/b",
            "a:b",
            "a.b",
            "é",
            long.as_str(),
        ] {
            assert_eq!(
                SubscriptionId::parse(bad),
                Err(InvalidId {
                    rule: SubscriptionId::RULE
                }),
                "{bad}"
            );
        }
        let reserved = SubscriptionId::parse("_operator").unwrap();
        assert!(reserved.is_reserved());
        assert!(!SubscriptionId::parse("operator").unwrap().is_reserved());
    }

    #[test]
    fn event_ids_are_any_text_without_spaces_or_control_characters() {
        let longest = "é".repeat(100);
        for good in ["e1", "order:42/v2", "Ünïcode", longest.as_str()] {
            assert!(EventId::parse(good).is_ok(), "{good}");
        }
        let long = "a".repeat(201);
        for bad in [
            "",
            "a b",
            "a\tb",
            "a\nb",
            "a\u{0}b",
            "\u{a0}",
            long.as_str(),
        ] {
            assert!(EventId::parse(bad).is_err(), "{bad:?}");
        }
        let generated = EventId::generate();
        assert_eq!(
            uuid::Uuid::parse_str(generated.as_str())
                .unwrap()
                .get_version_num(),
            7
        );
    }

    #[test]
    fn retry_ids_are_short_tokens() {
        assert!(RetryId::parse("r1").is_ok());
        assert!(RetryId::parse(RetryId::generate().as_str()).is_ok());
        for bad in ["", "a b", "a:b", "../x", &"a".repeat(65)] {
            assert!(RetryId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_are_plain_strings_on_the_wire_and_checked_when_read() {
        let id = SubscriptionId::parse("acme").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), r#""acme""#);
        assert_eq!(
            serde_json::from_str::<SubscriptionId>(r#""acme""#).unwrap(),
            id
        );
        assert!(serde_json::from_str::<SubscriptionId>(r#""Not An Id""#).is_err());
        assert!(serde_json::from_str::<EventId>(r#""a b""#).is_err());
        assert!(serde_json::from_str::<RetryId>(r#""""#).is_err());
        assert_eq!(id.to_string(), "acme");
        assert_eq!(id.as_ref(), "acme");
        assert_eq!(String::from(id), "acme");
    }

    #[test]
    fn an_invalid_id_names_the_field_it_came_in() {
        let problem = SubscriptionId::parse("Bad").unwrap_err().at("id");
        assert_eq!(problem.field.as_deref(), Some("id"));
        assert_eq!(problem.message, SubscriptionId::RULE);
    }
}
