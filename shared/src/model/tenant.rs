//! Tenants as events and subscriptions name them: the [`TenantId`] type and
//! the one rule that keeps tenants apart, [`may_receive`]. A tenant's
//! subscription gets only its own tenant's events; an event without a
//! tenant goes only to subscriptions without one (the operator's own).
//! Ingest matches by it and delivery checks it again on every copy.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest tenant id.
pub const MAX_TENANT_ID_LEN: usize = 64;

/// A tenant id: 1 to 64 of `a-z 0-9 _ -`, starting with a letter or digit
/// (the shape of a subscription id). Deserializing validates it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

/// In the API documents a tenant id is a string of the shape [`TenantId::parse`] checks.
impl utoipa::PartialSchema for TenantId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^[a-z0-9][a-z0-9_-]{0,63}$"))
            .description(Some(
                "A tenant id: 1 to 64 of a-z 0-9 _ -, starting with a letter or digit.",
            ))
            .examples(["acme"])
            .into()
    }
}

impl utoipa::ToSchema for TenantId {}

impl TenantId {
    /// Validates `id`.
    pub fn parse(id: &str) -> Result<Self, String> {
        if crate::model::ids::is_name_like(id, MAX_TENANT_ID_LEN) {
            Ok(Self(id.to_string()))
        } else {
            Err(format!(
                "must be 1 to {MAX_TENANT_ID_LEN} of a-z 0-9 _ -, starting with a letter or digit"
            ))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TenantId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<TenantId> for String {
    fn from(id: TenantId) -> Self {
        id.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a subscription of tenant `subscription` may receive an event of
/// tenant `event`: only when both name the same tenant, or neither names one.
pub fn may_receive(subscription: Option<&TenantId>, event: Option<&TenantId>) -> bool {
    subscription == event
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> TenantId {
        TenantId::parse(text).unwrap()
    }

    #[test]
    fn tenant_ids_have_the_shape_of_subscription_ids() {
        for good in ["acme", "acme_eu", "a-1", "9lives"] {
            assert!(TenantId::parse(good).is_ok(), "{good}");
        }
        let long = "a".repeat(MAX_TENANT_ID_LEN + 1);
        for bad in ["", "Acme", "-acme", "a b", "a/b", "a:b", long.as_str()] {
            assert!(TenantId::parse(bad).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<TenantId>(r#""Bad Id""#).is_err());
        assert_eq!(serde_json::to_string(&id("acme")).unwrap(), r#""acme""#);
    }

    #[test]
    fn a_tenant_receives_only_its_own_events_and_the_operator_only_untenanted_ones() {
        let (acme, globex) = (id("acme"), id("globex"));
        assert!(may_receive(Some(&acme), Some(&acme)));
        assert!(!may_receive(Some(&acme), Some(&globex)));
        assert!(!may_receive(Some(&acme), None));
        assert!(!may_receive(None, Some(&acme)));
        assert!(may_receive(None, None));
    }
}
