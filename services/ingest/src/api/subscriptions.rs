//! `/v1/subscriptions`: create, read, list, update and delete subscriptions.
//! Creating declares the subscription's queue; deleting removes it.

use super::auth::require_bearer;
use super::{ApiError, ApiState};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use postline_shared::problem::parse_json;
use postline_shared::subscription::{
    Subscription, SubscriptionPatch, SubscriptionSpec, SubscriptionStatus,
};

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

/// `POST /v1/subscriptions`.
pub async fn create(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_bearer(&headers, &state.admin_token)?;
    let spec: SubscriptionSpec = parse_json(&body).map_err(ApiError::invalid)?;
    spec.validate_new().map_err(ApiError::invalid)?;
    if state.store.find(&spec.id).await?.is_some() {
        return Err(postline_shared::subscription::StoreError::AlreadyExists(spec.id).into());
    }
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
    let subscription = state.store.create(spec).await?;
    state.catalog.upsert(subscription.clone());
    tracing::info!(subscription = %subscription.id(), "subscription created");
    Ok((StatusCode::CREATED, Json(view(&subscription))).into_response())
}

/// `GET /v1/subscriptions`.
pub async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_bearer(&headers, &state.admin_token)?;
    let all = state.store.list().await?;
    let views: Vec<_> = all.iter().map(view).collect();
    Ok(Json(serde_json::json!({ "subscriptions": views })))
}

/// `GET /v1/subscriptions/{id}`.
pub async fn get(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_bearer(&headers, &state.admin_token)?;
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
) -> Result<Json<serde_json::Value>, ApiError> {
    require_bearer(&headers, &state.admin_token)?;
    let patch: SubscriptionPatch = parse_json(&body).map_err(ApiError::invalid)?;
    patch.validate().map_err(ApiError::invalid)?;
    if patch.status == Some(SubscriptionStatus::Active) {
        let before = state.store.get(&id).await?;
        super::delivery_controls::reenable_cleanup(&state, &before).await?;
    }
    let subscription = state.store.update(&id, patch).await?;
    state.catalog.upsert(subscription.clone());
    tracing::info!(subscription = %id, "subscription updated");
    Ok(Json(view(&subscription)))
}

/// `DELETE /v1/subscriptions/{id}`: removes the subscription, its queue and backlog.
pub async fn delete(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require_bearer(&headers, &state.admin_token)?;
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
