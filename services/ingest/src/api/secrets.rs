//! `POST /v1/subscriptions/{id}/secrets/rotate`: a new signing secret, with
//! the replaced ones signing on for a grace period so the receiver can
//! switch over without rejecting a single request.
//!
//! The body is optional: `{"secret": "...", "grace_secs": N}`. Without a
//! secret one is generated (`whsec_` + 32 random bytes) and returned in this
//! answer only; a given secret is never echoed. The view shows how many
//! secrets sign and when each replaced one stops, never their values.

use super::access::{audit, path_id, refuse_while_lost, view, visible};
use super::caller::Caller;
use super::{ApiError, ApiState};
use crate::tenants::credentials::Scope;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::Json;
use chrono::TimeDelta;
use postline_shared::model::problem::{parse_json, Problem};
use postline_shared::model::secret::Secret;
use postline_shared::model::subscription::rotation::{
    generate_secret, DEFAULT_GRACE_SECS, MAX_GRACE_SECS,
};
use postline_shared::outbound::signing::SigningKey;
use serde::Deserialize;
use serde_json::Value;

/// The optional rotation body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Rotation {
    /// The new secret; generated when absent.
    secret: Option<Secret>,
    /// How long the replaced secrets keep signing (default 24 h, at most 30 days).
    #[schema(maximum = 2592000)]
    grace_secs: Option<u64>,
}

impl Rotation {
    fn parse(body: &[u8]) -> Result<Self, Problem> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let rotation: Self = parse_json(body)?;
        if let Some(secret) = &rotation.secret {
            SigningKey::from_secret(secret).map_err(|m| Problem::field("secret", m))?;
        }
        if rotation
            .grace_secs
            .is_some_and(|grace| grace > MAX_GRACE_SECS)
        {
            return Err(Problem::field(
                "grace_secs",
                format!("must be at most {MAX_GRACE_SECS}"),
            ));
        }
        Ok(rotation)
    }
}

/// `POST /v1/subscriptions/{id}/secrets/rotate`.
#[utoipa::path(
    post,
    path = "/v1/subscriptions/{id}/secrets/rotate",
    tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    request_body(content = Option<Rotation>, description = "Optional: the new secret and the grace of the replaced ones"),
    responses(
        (status = 200, description = "Rotated; `secret` when generated", body = super::openapi::Rotated),
        super::error_responses::ManagementErrors, super::error_responses::BadInput, super::error_responses::NotFound, super::error_responses::Conflict
    ),
    security(("admin_token" = []), ("tenant_oauth" = ["subscriptions:write"]))
)]
pub async fn rotate(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = path_id(&id)?;
    refuse_while_lost(&state)?;
    // A tenant rotates its own subscriptions' secrets (another's is a 404).
    visible(&state, &caller, &id, Scope::SubscriptionsWrite).await?;
    let rotation = Rotation::parse(&body).map_err(ApiError::invalid)?;
    let grace_secs = rotation.grace_secs.unwrap_or(DEFAULT_GRACE_SECS);
    let generated = rotation.secret.is_none();
    let secret = rotation.secret.unwrap_or_else(generate_secret);
    let grace = TimeDelta::seconds(i64::try_from(grace_secs).unwrap_or(i64::MAX));
    let subscription = state
        .store
        .rotate_secret(&id, secret.clone(), grace)
        .await?;
    state.catalog.upsert(subscription.clone());
    audit(
        &state,
        &caller,
        &subscription,
        "subscription.rotate_secret",
        vec!["secrets".to_string()],
    )
    .await;
    tracing::info!(subscription = %id, grace_secs, generated, "signing secret rotated");
    let mut shown = view(&subscription);
    if generated {
        // Shown once, in this answer: it is stored sealed and never shown again.
        shown["secret"] = Value::String(secret.expose().to_string());
    }
    shown["grace_secs"] = grace_secs.into();
    Ok(Json(shown))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_optional_and_checked_by_field() {
        assert!(Rotation::parse(b"").unwrap().secret.is_none());
        assert!(Rotation::parse(b"  ").unwrap().grace_secs.is_none());
        let given = Rotation::parse(
            br#"{"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "grace_secs": 60}"#,
        )
        .unwrap();
        assert_eq!(given.grace_secs, Some(60));
        let field = |body: &[u8]| Rotation::parse(body).unwrap_err().field;
        assert_eq!(field(br#"{"secret": ""}"#).as_deref(), Some("secret"));
        assert_eq!(
            field(br#"{"grace_secs": 99999999999}"#).as_deref(),
            Some("grace_secs")
        );
        assert_eq!(field(br#"{"grace": 5}"#).as_deref(), Some("grace"));
    }
}
