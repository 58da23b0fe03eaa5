//! The PING sent before a created or updated subscription is stored: one
//! synthetic `ping` event POSTed to the endpoint as delivery would send it
//! (body mode, signatures, extra headers, receiver auth), judged by the
//! subscription's own success rule. It is not queued, not retried and not
//! counted as a delivery.
//!
//! A receiver whose auth needs a bearer token gets one from the token
//! service, as delivery's do; since the subscription is not stored yet, its
//! new version is staged in Redis (sealed, briefly) for the token service to
//! read the credentials from.

use super::{ApiError, ApiState};
use chrono::{SecondsFormat, Utc};
use postline_shared::model::ids::{EventId, SubscriptionId};
use postline_shared::model::subscription::Subscription;
use postline_shared::outbound::attempt::{self, Attempt, AttemptError};
use postline_shared::Envelope;
use serde_json::{json, Value};

/// Type (and operation) of the PING event.
pub const PING_TYPE: &str = "ping";
/// How long a staged version outlives its PING at most: longer than the
/// longest receiver timeout plus a token fetch, short enough not to linger.
const STAGED_TTL_SECS: u64 = 300;

/// The PING event for subscription `subscription_id`:
/// `{id: "ping_<uuid>", type: "ping", operation: "ping", timestamp, payload: {subscription}}`.
fn envelope(subscription_id: &SubscriptionId) -> Result<Envelope, serde_json::Error> {
    // A uuid after `ping_` is always a well-formed event id.
    let id = EventId::try_from(format!("ping_{}", uuid::Uuid::new_v4()))
        .unwrap_or_else(|_| EventId::generate());
    Ok(Envelope {
        id,
        event_type: PING_TYPE.into(),
        operation: Some(PING_TYPE.into()),
        timestamp: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        payload: serde_json::value::to_raw_value(&json!({ "subscription": subscription_id }))?,
        tenant: None,
    })
}

/// PINGs `subscription`'s endpoint. Returns what the endpoint did when it
/// passed, or the 422 answer saying what it did when it did not.
pub async fn verify(state: &ApiState, subscription: &Subscription) -> Result<Value, ApiError> {
    let id = subscription.id();
    let envelope = envelope(id).map_err(|error| {
        tracing::error!(%error, subscription = %id, "building the PING failed");
        ApiError::internal("could not build the PING")
    })?;
    let attempt = send(state, subscription, &envelope).await?;
    if let Err(AttemptError::NotAllowed(refused)) = &attempt.result {
        // Only reachable when a name resolved differently from the check
        // before the PING: the answer says "not allowed" and nothing else
        // (no status, no timing) so the PING cannot probe internal addresses.
        state.metrics.pings.with_label_values(&["failed"]).inc();
        tracing::warn!(subscription = %id, reason = %refused, "PING refused: endpoint not allowed");
        return Err(ApiError::not_allowed(
            "endpoint",
            "the endpoint resolves to an address Postline may not call; nothing was stored",
        ));
    }
    let duration_ms = attempt.duration.as_millis() as u64;
    let (status, error) = match &attempt.result {
        Ok(status) => (Some(*status), None),
        Err(AttemptError::Status { status, .. }) => (Some(*status), None),
        Err(other) => (None, Some(other.to_string())),
    };
    let shown = json!({ "status": status, "error": error, "duration_ms": duration_ms });
    let Err(failure) = attempt.result else {
        state.metrics.pings.with_label_values(&["ok"]).inc();
        tracing::info!(subscription = %id, status, duration_ms, "PING passed");
        return Ok(shown);
    };
    state.metrics.pings.with_label_values(&["failed"]).inc();
    // The endpoint is not logged: its URL may carry credentials.
    tracing::warn!(subscription = %id, status, error = error.as_deref(), duration_ms, "PING failed; change refused");
    let what = match &failure {
        AttemptError::Status { status, .. } => format!(
            "the endpoint answered {status} to the PING, which the subscription's success rule ({}) does not accept",
            success_label(subscription)
        ),
        other => format!("the PING failed: {other}"),
    };
    Err(ApiError::ping_failed(
        format!("{what}; nothing was stored (send \"verify\": false to skip the check)"),
        shown,
    ))
}

/// Sends the PING with the receiver auth, staging the subscription first
/// when a token must be fetched for it.
async fn send(
    state: &ApiState,
    subscription: &Subscription,
    envelope: &Envelope,
) -> Result<Attempt, ApiError> {
    let id = subscription.id();
    if !state.tokens.needs_token(subscription) {
        return Ok(
            attempt::deliver(&state.client, &state.tokens, subscription, envelope, None).await,
        );
    }
    let staged = state.store.stage(subscription, STAGED_TTL_SECS).await?;
    let attempt = attempt::deliver(
        &state.client,
        &state.tokens,
        subscription,
        envelope,
        Some(&staged),
    )
    .await;
    if let Err(error) = state.store.unstage(id, &staged).await {
        // It expires on its own shortly.
        tracing::warn!(%error, subscription = %id, "removing a staged subscription failed");
    }
    Ok(attempt)
}

fn success_label(subscription: &Subscription) -> String {
    serde_json::to_value(subscription.spec.success)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}
