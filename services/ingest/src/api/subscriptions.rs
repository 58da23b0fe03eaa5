//! `/v1/subscriptions`: create, read, list, update and delete subscriptions.
//! Creating declares the subscription's queue; deleting removes it. Creating
//! and updating first PING the endpoint (see [`super::ping`]) unless the body
//! says `"verify": false`.

use super::auth::require_bearer;
use super::{ApiError, ApiState};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use postline_shared::problem::{parse_json, Problem};
use postline_shared::subscription::{
    Subscription, SubscriptionPatch, SubscriptionSpec, SubscriptionStatus,
};
use serde_json::Value;
use std::borrow::Cow;

/// The request-only flag of create and PATCH bodies that skips the PING.
const VERIFY: &str = "verify";

/// The API view of a subscription as JSON.
pub(super) fn view(subscription: &Subscription) -> serde_json::Value {
    serde_json::to_value(subscription.view()).unwrap_or_default()
}

/// A management channel of its own, so a refused declaration cannot close
/// the publisher's channel; it is closed again when the request is done.
pub(super) async fn admin_channel(state: &ApiState) -> Result<lapin::Channel, ApiError> {
    super::broker(state)?
        .admin_channel()
        .await
        .map_err(|error| {
            tracing::warn!(%error, "opening a management channel failed");
            ApiError::unavailable("broker not reachable; retry")
        })
}

pub(super) async fn close(channel: lapin::Channel) {
    let _ = channel.close(200, "management request done".into()).await;
}

/// Takes the `verify` flag (default true, never stored) out of a create or
/// PATCH body, leaving the rest for the strict parser. A body that is not a
/// JSON object is passed on untouched for that parser to name what is wrong.
fn take_verify(body: &[u8]) -> Result<(bool, Cow<'_, [u8]>), Problem> {
    let Ok(mut fields) = serde_json::from_slice::<serde_json::Map<String, Value>>(body) else {
        return Ok((true, Cow::Borrowed(body)));
    };
    let Some(flag) = fields.remove(VERIFY) else {
        return Ok((true, Cow::Borrowed(body)));
    };
    let verify = flag
        .as_bool()
        .ok_or_else(|| Problem::field(VERIFY, "must be true or false"))?;
    // Re-serializing a parsed map cannot fail.
    let rest = serde_json::to_vec(&fields).unwrap_or_default();
    Ok((verify, Cow::Owned(rest)))
}

/// Declares the delay queues of a retry policy, so a retry never meets a
/// missing one (the broker would return the event, body and all). Best
/// effort, on a management channel of its own: a refused declaration (a
/// classic delay queue whose home node is down) closes its channel, and must
/// not refuse the change; a retry that meets a missing delay queue declares it.
async fn declare_delay_queues(state: &ApiState, spec: &SubscriptionSpec) {
    let declared = match admin_channel(state).await {
        Ok(channel) => {
            let declared = state
                .topology
                .declare_delay_queues(&channel, spec.retry.delays_ms())
                .await;
            close(channel).await;
            declared.map_err(|error| error.to_string())
        }
        Err(_) => Err("no management channel".to_string()),
    };
    if let Err(error) = declared {
        tracing::warn!(%error, subscription = %spec.id, "declaring the delay queues failed; each is declared when a retry first needs it");
    }
}

/// Refuses a subscription whose endpoint or token endpoint leads only to
/// addresses Postline may not call, before anything is PINGed or stored.
/// (Delivery checks again at every connect: this check is for a clear answer.)
async fn check_destinations(state: &ApiState, spec: &SubscriptionSpec) -> Result<(), ApiError> {
    let urls = std::iter::once(("endpoint", spec.endpoint.as_str()))
        .chain(spec.auth.token_url().map(|url| ("auth.token_url", url)));
    for (field, url) in urls {
        if let Err(refused) = state.client.check_destination(url).await {
            tracing::info!(subscription = %spec.id, field, reason = %refused, "subscription refused: destination not allowed");
            return Err(ApiError::not_allowed(
                field,
                format!("{field} leads to an address Postline may not call (private, loopback, link-local or reserved); nothing was stored"),
            ));
        }
    }
    Ok(())
}

/// A view with the PING's result added, when there was one.
fn view_with_ping(subscription: &Subscription, ping: Option<Value>) -> Value {
    let mut shown = view(subscription);
    if let Some(ping) = ping {
        shown["ping"] = ping;
    }
    shown
}

/// `POST /v1/subscriptions`.
pub async fn create(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_bearer(&headers, &state.admin_token)?;
    refuse_while_lost(&state)?;
    let (verify, body) = take_verify(&body).map_err(ApiError::invalid)?;
    let spec: SubscriptionSpec = parse_json(&body).map_err(ApiError::invalid)?;
    spec.validate_new().map_err(ApiError::invalid)?;
    check_destinations(&state, &spec).await?;
    if state.store.find(&spec.id).await?.is_some() {
        return Err(postline_shared::subscription::StoreError::AlreadyExists(spec.id).into());
    }
    // The PING comes before anything is declared or stored, so a refused
    // subscription leaves no trace.
    let ping = if verify {
        let now = Utc::now();
        let candidate = Subscription::new(spec.clone(), now);
        Some(super::ping::verify(&state, &candidate).await?)
    } else {
        None
    };
    // Queue first: once the subscription is stored, events start being
    // routed to it, and a copy with no queue to land in would be refused.
    let channel = admin_channel(&state).await?;
    let declared = state
        .topology
        .declare_subscription(&channel, &spec.id)
        .await;
    close(channel).await;
    declared.map_err(|error| {
        tracing::warn!(%error, "declaring a subscription queue failed");
        ApiError::unavailable("broker refused the queue declaration; retry")
    })?;
    declare_delay_queues(&state, &spec).await;
    let subscription = state.store.create(spec).await?;
    state.catalog.upsert(subscription.clone());
    tracing::info!(subscription = %subscription.id(), verified = ping.is_some(), "subscription created");
    Ok((
        StatusCode::CREATED,
        Json(view_with_ping(&subscription, ping)),
    )
        .into_response())
}

/// While the state is lost a management write would land in an emptied
/// Redis (and make it look like an installation from before the marker):
/// 503 `state_lost` until it is restored or a fresh start is declared.
pub(super) fn refuse_while_lost(state: &ApiState) -> Result<(), ApiError> {
    if state.readiness.is_state_lost() {
        return Err(ApiError::state_lost());
    }
    Ok(())
}

/// The operator's internal subscription is not the API's to show or change.
pub(super) fn hidden(id: &str) -> Result<(), ApiError> {
    if id == crate::operator::OPERATOR_ID {
        return Err(ApiError::not_found(format!(
            "subscription {id} does not exist"
        )));
    }
    Ok(())
}

/// `GET /v1/subscriptions`.
pub async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_bearer(&headers, &state.admin_token)?;
    let all = state.store.list().await?;
    let views: Vec<_> = all
        .iter()
        .filter(|s| s.id() != crate::operator::OPERATOR_ID)
        .map(view)
        .collect();
    Ok(Json(serde_json::json!({ "subscriptions": views })))
}

/// `GET /v1/subscriptions/{id}`.
pub async fn get(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_bearer(&headers, &state.admin_token)?;
    hidden(&id)?;
    let subscription = state.store.get(&id).await?;
    let mut shown = view(&subscription);
    // Backlog depth straight from the broker, when it is reachable.
    if let Ok(channel) = admin_channel(&state).await {
        if let Ok(depth) = state.topology.subscription_backlog(&channel, &id).await {
            shown["backlog"] = depth.into();
        }
        close(channel).await;
    }
    Ok(Json(shown))
}

/// `PATCH /v1/subscriptions/{id}`.
pub async fn update(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    require_bearer(&headers, &state.admin_token)?;
    refuse_while_lost(&state)?;
    hidden(&id)?;
    let (verify, body) = take_verify(&body).map_err(ApiError::invalid)?;
    let patch: SubscriptionPatch = parse_json(&body).map_err(ApiError::invalid)?;
    let verify = verify && patch.changes_the_request();
    let retry_changed = patch.retry.is_some();
    // Only a new URL is checked: pausing a subscription whose endpoint is
    // refused today (stored before the rule, say) must still work.
    let urls_changed = patch.endpoint.is_some() || patch.auth.is_some();
    let pending = state.store.prepare_update(&id, patch).await?;
    if urls_changed {
        check_destinations(&state, &pending.after.spec).await?;
    }
    // The PING goes to the subscription as it would be stored; the update is
    // stored only if it passes and nobody changed the subscription meanwhile.
    let ping = if verify {
        Some(super::ping::verify(&state, &pending.after).await?)
    } else {
        None
    };
    if retry_changed {
        // The new policy's ladder steps get their delay queues before it is stored.
        declare_delay_queues(&state, &pending.after.spec).await;
    }
    if pending.after.spec.status == SubscriptionStatus::Active {
        super::delivery_controls::reenable_cleanup(&state, &pending.before).await?;
    }
    let subscription = state.store.commit(pending).await?;
    state.catalog.upsert(subscription.clone());
    tracing::info!(subscription = %id, verified = ping.is_some(), "subscription updated");
    Ok(Json(view_with_ping(&subscription, ping)))
}

/// `DELETE /v1/subscriptions/{id}`: removes the subscription, its queue and backlog.
pub async fn delete(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require_bearer(&headers, &state.admin_token)?;
    refuse_while_lost(&state)?;
    hidden(&id)?;
    let channel = admin_channel(&state).await?;
    // The subscription goes first so no new copy is routed to the queue.
    let outcome = state.store.delete(&id).await;
    state.catalog.remove(&id);
    // Removing the queue is idempotent, so a repeated DELETE (after a 404 or
    // a broker hiccup) still cleans up a queue left behind.
    let discarded = state.topology.delete_subscription(&channel, &id).await;
    close(channel).await;
    outcome?;
    if let Err(error) = state.delivery.forget(&id).await {
        tracing::warn!(%error, subscription = %id, "removing the delivery records failed");
    }
    let body = match discarded {
        Ok(discarded) => {
            tracing::info!(subscription = %id, discarded, "subscription deleted");
            serde_json::json!({ "id": id, "deleted": true, "queue_deleted": true, "discarded_events": discarded })
        }
        Err(error) => {
            tracing::warn!(%error, subscription = %id, "subscription deleted; removing its queue failed (repeat the DELETE)");
            serde_json::json!({ "id": id, "deleted": true, "queue_deleted": false })
        }
    };
    Ok((StatusCode::OK, Json(body)).into_response())
}
