//! Operator controls over a subscription's delivery, under
//! `/v1/subscriptions/{id}/…`: its delivery state, re-enabling it, retrying
//! a blocked event now, parked events and their replay, recent attempts.
//! The state also shows the partner semantics at work: events dropped as
//! duplicates or of complete entities, open and complete entities, the next tick.

use super::access::{audit, path_id, view, visible};
use super::caller::Caller;
use super::{admin_channel, close, ApiError, ApiState};
use crate::tenants::credentials::Scope;
use axum::extract::{Path, RawQuery, State};
use axum::Json;
use chrono::{DateTime, Utc};
use postline_shared::amqp::redelivery::Redelivery;
use postline_shared::model::ids::{EventId, SubscriptionId};
use postline_shared::model::problem::{Problem, ProblemCode};
use postline_shared::model::subscription::semantics::tick_after;
use postline_shared::model::subscription::{Subscription, SubscriptionStatus};
use postline_shared::redis::delivery_state::{ParkedEvent, StateError};
use serde_json::{json, Value};

/// Most attempts one request may list.
const MAX_ATTEMPTS_LISTED: usize = 1_000;

impl From<StateError> for ApiError {
    fn from(error: StateError) -> Self {
        tracing::error!(%error, "delivery state unavailable");
        Self::unavailable("delivery state unavailable; retry")
    }
}

/// Checks that `caller` holds `scope` and may see subscription `id`;
/// every control starts here.
async fn subscription(
    state: &ApiState,
    caller: &Caller,
    id: &SubscriptionId,
    scope: Scope,
) -> Result<Subscription, ApiError> {
    visible(state, caller, id, scope).await
}

fn redelivery(state: &ApiState) -> Result<Redelivery, ApiError> {
    let link = super::broker(state)?;
    Ok(Redelivery::new(link.publisher, state.topology.clone()))
}

/// `GET /v1/subscriptions/{id}/state`: where delivery stands.
#[utoipa::path(
    get,
    path = "/v1/subscriptions/{id}/state",
    tag = "delivery",
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "The delivery state", body = super::openapi::DeliveryStateShown),
        super::error_responses::ManagementErrors, super::error_responses::NotFound
    ),
    security(("admin_token" = []), ("tenant_oauth" = ["subscriptions:read"]))
)]
pub async fn show(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = path_id(&id)?;
    let subscription = subscription(&state, &caller, &id, Scope::SubscriptionsRead).await?;
    let records = &state.delivery;
    let summary = records.summary(&id).await?;
    let block = records.block(&id).await?;
    let parked = records
        .parked_counts(std::slice::from_ref(&id))
        .await?
        .first()
        .copied()
        .unwrap_or(0);
    let backlog = match admin_channel(&state).await {
        Ok(channel) => {
            let depth = state
                .topology
                .subscription_backlog(&channel, &id)
                .await
                .ok();
            close(channel).await;
            depth
        }
        Err(_) => None,
    };
    let entities = match &subscription.spec.completion {
        Some(rule) => {
            let counts = records.entity_counts(&id, rule.ttl_secs).await?;
            json!({ "open": counts.open, "complete": counts.complete })
        }
        None => Value::Null,
    };
    let next_tick_at = subscription.spec.interval_ms.and_then(|interval| {
        let next = tick_after(Utc::now().timestamp_millis(), interval);
        DateTime::<Utc>::from_timestamp_millis(next)
    });
    let text = |name: &str| summary.get(name).cloned();
    let number = |name: &str| {
        summary
            .get(name)
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(Json(json!({
        "id": id,
        "status": subscription.spec.status,
        "disabled": subscription.disabled,
        "order": subscription.spec.order,
        "blocked": block.as_ref().map(|b| b.view()),
        "last_success_at": text("last_success_at"),
        "last_event_id": text("last_event_id"),
        "last_failure_at": text("last_failure_at"),
        "last_failed_event_id": text("last_failed_event_id"),
        "last_error": text("last_error"),
        "counters": {
            "delivered": number("delivered"),
            "failed_attempts": number("failed_attempts"),
            "given_up": number("given_up"),
            "gone": number("gone"),
            "stale": number("stale"),
            "superseded": number("superseded"),
            "discarded": number("discarded"),
            "deduplicated": number("deduplicated"),
            "completed_entity": number("completed_entity"),
        },
        "entities": entities,
        "next_tick_at": next_tick_at,
        "parked": parked,
        "backlog": backlog,
    })))
}

/// Restarts a disabled subscription's block along with re-enabling it: the
/// event that exhausted the policy is tried first, with a fresh retry policy
/// instead of giving up at once (see delivery's `decision` module).
pub async fn reenable_cleanup(state: &ApiState, before: &Subscription) -> Result<(), ApiError> {
    if before.spec.status == SubscriptionStatus::Disabled {
        state.delivery.restart_block(before.id()).await?;
    }
    Ok(())
}

/// `POST /v1/subscriptions/{id}/enable`: re-enables a disabled (or paused) subscription.
#[utoipa::path(
    post,
    path = "/v1/subscriptions/{id}/enable",
    tag = "delivery",
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "Re-enabled", body = super::openapi::SubscriptionShown),
        super::error_responses::ManagementErrors, super::error_responses::NotFound, super::error_responses::Conflict
    ),
    security(("admin_token" = []), ("tenant_oauth" = ["subscriptions:write"]))
)]
pub async fn enable(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = path_id(&id)?;
    let before = subscription(&state, &caller, &id, Scope::SubscriptionsWrite).await?;
    reenable_cleanup(&state, &before).await?;
    let subscription = state.store.enable(&id).await?;
    state.catalog.upsert(subscription.clone());
    tracing::info!(subscription = %id, was = ?before.spec.status, "subscription re-enabled");
    audit(
        &state,
        &caller,
        &subscription,
        "subscription.enable",
        Vec::new(),
    )
    .await;
    Ok(Json(view(&subscription)))
}

/// `POST /v1/subscriptions/{id}/retry`: the blocked event is tried now,
/// skipping the rest of its wait.
#[utoipa::path(
    post,
    path = "/v1/subscriptions/{id}/retry",
    tag = "delivery",
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "The blocked event is tried now", body = super::openapi::RetryingNow),
        super::error_responses::ManagementErrors, super::error_responses::NotFound, super::error_responses::Conflict
    ),
    security(("admin_token" = []), ("tenant_oauth" = ["deliveries:replay"]))
)]
pub async fn retry_now(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = path_id(&id)?;
    let subscription = subscription(&state, &caller, &id, Scope::DeliveriesReplay).await?;
    let block = state.delivery.block(&id).await?.ok_or_else(|| {
        ApiError::conflict(
            ProblemCode::NotBlocked,
            format!("subscription {id} is not waiting on a failed event"),
        )
    })?;
    let swapped = redelivery(&state)?
        .reissue_blocked(&state.delivery, &id, &subscription.incarnation, &block)
        .await
        .map_err(|error| {
            tracing::warn!(%error, subscription = %id, "retry now failed");
            ApiError::unavailable("could not queue the retry; retry")
        })?;
    if !swapped {
        return Err(ApiError::conflict(
            ProblemCode::BlockChanged,
            "the blocked event was attempted meanwhile; look at the state and retry",
        ));
    }
    // Wakes the consumer waiting for the old due time, in whichever replica it runs.
    state.store.announce(&id).await?;
    tracing::info!(subscription = %id, event_id = %block.event_id, "blocked event retried now by an operator");
    audit(
        &state,
        &caller,
        &subscription,
        "delivery.retry_now",
        Vec::new(),
    )
    .await;
    Ok(Json(
        json!({ "id": id, "event_id": block.event_id, "retrying": true }),
    ))
}

/// `GET /v1/subscriptions/{id}/parked`: events given up with `skip`.
#[utoipa::path(
    get,
    path = "/v1/subscriptions/{id}/parked",
    tag = "delivery",
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "The parked events", body = super::openapi::ParkedList),
        super::error_responses::ManagementErrors, super::error_responses::NotFound
    ),
    security(("admin_token" = []), ("tenant_oauth" = ["subscriptions:read"]))
)]
pub async fn parked(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = path_id(&id)?;
    subscription(&state, &caller, &id, Scope::SubscriptionsRead).await?;
    let events: Vec<ParkedEvent> = state
        .delivery
        .parked(&id)
        .await?
        .iter()
        .map(ParkedEvent::view)
        .collect();
    Ok(Json(json!({ "id": id, "parked": events })))
}

/// `POST /v1/subscriptions/{id}/parked/replay`: replays every parked event.
#[utoipa::path(
    post,
    path = "/v1/subscriptions/{id}/parked/replay",
    tag = "delivery",
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "Every parked event queued again", body = super::openapi::Replayed),
        super::error_responses::ManagementErrors, super::error_responses::NotFound
    ),
    security(("admin_token" = []), ("tenant_oauth" = ["deliveries:replay"]))
)]
pub async fn replay_all(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = path_id(&id)?;
    let subscription = subscription(&state, &caller, &id, Scope::DeliveriesReplay).await?;
    let events = state.delivery.parked(&id).await?;
    let replayed = replay(&state, &subscription, &events).await?;
    audit(
        &state,
        &caller,
        &subscription,
        "delivery.replay",
        Vec::new(),
    )
    .await;
    Ok(Json(json!({ "id": id, "replayed": replayed })))
}

/// `POST /v1/subscriptions/{id}/parked/{event_id}/replay`: replays one parked event.
#[utoipa::path(
    post,
    path = "/v1/subscriptions/{id}/parked/{event_id}/replay",
    tag = "delivery",
    params(("id" = String, Path, description = "Subscription id"), ("event_id" = String, Path, description = "Parked event id")),
    responses(
        (status = 200, description = "The event queued again", body = super::openapi::Replayed),
        super::error_responses::ManagementErrors, super::error_responses::NotFound
    ),
    security(("admin_token" = []), ("tenant_oauth" = ["deliveries:replay"]))
)]
pub async fn replay_one(
    State(state): State<ApiState>,
    caller: Caller,
    Path((id, event_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = path_id(&id)?;
    let event_id =
        EventId::parse(&event_id).map_err(|invalid| ApiError::malformed_id("event_id", invalid))?;
    let subscription = subscription(&state, &caller, &id, Scope::DeliveriesReplay).await?;
    let event = state
        .delivery
        .parked_event(&id, &event_id)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "event {event_id} is not parked for subscription {id}"
            ))
        })?;
    let events = [event];
    let replayed = replay(&state, &subscription, &events).await?;
    audit(
        &state,
        &caller,
        &subscription,
        "delivery.replay",
        Vec::new(),
    )
    .await;
    Ok(Json(json!({ "id": id, "replayed": replayed })))
}

/// Queues a fresh copy of each event at the tail of the subscription
/// queue, made for the subscription's current incarnation.
async fn replay(
    state: &ApiState,
    subscription: &Subscription,
    events: &[ParkedEvent],
) -> Result<Vec<EventId>, ApiError> {
    let id = subscription.id();
    let redelivery = redelivery(state)?;
    let mut replayed = Vec::with_capacity(events.len());
    for event in events {
        // The marker goes first so the copy is delivered, not skipped as
        // settled; the record goes last, once the copy is confirmed queued.
        state.delivery.prepare_replay(id, &event.event_id).await?;
        redelivery
            .to_tail(id, &subscription.incarnation, event.envelope.as_bytes())
            .await
            .map_err(|error| {
                tracing::warn!(%error, subscription = %id, event_id = %event.event_id, "replay failed");
                ApiError::unavailable("could not queue the replay; the event stays parked; retry")
            })?;
        state.delivery.unpark(id, &event.event_id).await?;
        tracing::info!(subscription = %id, event_id = %event.event_id, "parked event replayed");
        replayed.push(event.event_id.clone());
    }
    Ok(replayed)
}

/// Reads `limit` from the query (default 100), refusing anything but a number.
fn attempts_limit(query: Option<&str>) -> Result<usize, ApiError> {
    let given = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(name, _)| name == "limit")
        .map(|(_, value)| value.into_owned());
    let Some(text) = given else {
        return Ok(100);
    };
    text.parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_ATTEMPTS_LISTED).contains(n))
        .ok_or_else(|| {
            ApiError::invalid(Problem::field(
                "limit",
                format!("must be a number from 1 to {MAX_ATTEMPTS_LISTED}"),
            ))
        })
}

/// `GET /v1/subscriptions/{id}/attempts?limit=N`: recent attempts, newest first.
#[utoipa::path(
    get,
    path = "/v1/subscriptions/{id}/attempts",
    tag = "delivery",
    params(("id" = String, Path, description = "Subscription id"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Most attempts (default 100)")),
    responses(
        (status = 200, description = "The recent attempts, newest first", body = super::openapi::AttemptList),
        super::error_responses::ManagementErrors, super::error_responses::BadInput, super::error_responses::NotFound
    ),
    security(("admin_token" = []), ("tenant_oauth" = ["subscriptions:read"]))
)]
pub async fn attempts(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let id = path_id(&id)?;
    let limit = attempts_limit(query.as_deref())?;
    subscription(&state, &caller, &id, Scope::SubscriptionsRead).await?;
    let attempts = state.delivery.recent_attempts(&id, limit).await?;
    Ok(Json(json!({ "id": id, "attempts": attempts })))
}
