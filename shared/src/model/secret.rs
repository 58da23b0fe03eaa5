//! A string that must never be shown: signing secrets, tokens, passwords.
//!
//! `Debug` prints a fixed placeholder, so a secret that slips into a log line
//! or an error message stays hidden. It serializes to its value because it is
//! stored (Redis); API views must leave secrets out instead of serializing them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A secret value; `Debug` redacts it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for signing or authenticating; never for display.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Any text is a secret; configuration reads secrets this way.
impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(value))
    }
}

/// In the API documents a secret is a write-only string: requests carry it,
/// answers never show it.
impl utoipa::PartialSchema for Secret {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .write_only(Some(true))
            .description(Some(
                "A secret value: accepted in requests, never shown in answers.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Secret::new("hunter2-very-secret");
        let shown = format!("{secret:?} {:?}", vec![secret.clone()]);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(secret.expose(), "hunter2-very-secret");
    }
}
