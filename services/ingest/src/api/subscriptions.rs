//! `/v1/subscriptions`: create, read, list, update and delete subscriptions.
//! Creating declares the subscription's queue; deleting removes it. Creating
//! and updating first PING the endpoint (see [`super::ping`]) unless the body
//! says `"verify": false`.
//!
//! The operator sees every subscription; a tenant ([`Caller`]) sees only its
//! own (another's id answers 404), needs the scope of each action, stays
//! within its `allowed_event_types` and `max_subscriptions`, and cannot make
//! the operator-only settings ([`crate::tenants::operator_only`]). Every
//! change lands in the audit trail.

use super::access::{audit, path_id, refuse_while_lost, view, visible, visible_list};
use super::caller::Caller;
use super::{admin_channel, close};
use super::{ApiError, ApiState};
use crate::tenants::credentials::Scope;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use postline_shared::model::ids::SubscriptionId;
use postline_shared::model::problem::{parse_json, Problem};
use postline_shared::model::subscription::{
    Subscription, SubscriptionPatch, SubscriptionSpec, SubscriptionStatus,
};
use serde_json::Value;
use std::borrow::Cow;

/// The request-only flag of create and PATCH bodies that skips the PING.
const VERIFY: &str = "verify";

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

/// The top-level field names of a JSON object body (for the operator-only
/// rules and the audit trail); empty when the body is not an object.
fn field_names(body: &[u8]) -> Vec<String> {
    serde_json::from_slice::<serde_json::Map<String, Value>>(body)
        .map(|fields| fields.keys().cloned().collect())
        .unwrap_or_default()
}

/// The tenant `id` or a 400 naming `field` when there is none.
async fn existing_tenant(
    state: &ApiState,
    id: &postline_shared::model::tenant::TenantId,
) -> Result<crate::tenants::Tenant, ApiError> {
    state
        .tenants
        .get(id.as_str())
        .await?
        .ok_or_else(|| ApiError::invalid(Problem::field("tenant", "no such tenant")))
}

/// The tenant rules of a create: a tenant's subscription is its own (the
/// body may name no other tenant), within its allowed event types, room and
/// the settings it may make; the operator may put a subscription under any
/// existing tenant.
async fn tenant_rules_for_create(
    state: &ApiState,
    caller: &Caller,
    spec: &mut SubscriptionSpec,
    fields: &[String],
) -> Result<(), ApiError> {
    let Some(own) = caller.tenant() else {
        if let Some(tenant) = &spec.tenant {
            existing_tenant(state, tenant).await?;
        }
        return Ok(());
    };
    if spec.tenant.as_ref().is_some_and(|named| named != own) {
        return Err(ApiError::invalid(Problem::field(
            "tenant",
            "may only name your own tenant (or be left out)",
        )));
    }
    spec.tenant = Some(own.clone());
    let tenant = existing_tenant(state, own).await?;
    crate::tenants::check_event_types(&tenant.spec.allowed_event_types, &spec.event_types)
        .map_err(ApiError::invalid)?;
    crate::tenants::operator_only(spec, &|name: &str| fields.iter().any(|f| f == name))
        .map_err(ApiError::invalid)?;
    let existing = state
        .store
        .list()
        .await?
        .iter()
        .filter(|s| s.spec.tenant.as_ref() == Some(own))
        .count();
    crate::tenants::check_room(tenant.spec.max_subscriptions, existing)
        .map_err(ApiError::invalid)?;
    Ok(())
}

/// `POST /v1/subscriptions`.
#[utoipa::path(
    post,
    path = "/v1/subscriptions",
    tag = "subscriptions",
    request_body(content = postline_shared::model::subscription::SubscriptionSpec, description = "The subscription; `\"verify\": false` (not stored) skips the PING (operator only)"),
    responses(
        (status = 201, description = "Created, after the endpoint passed the PING", body = super::openapi::SubscriptionShown),
        super::error_responses::ManagementErrors, super::error_responses::BadInput, super::error_responses::Conflict, super::error_responses::PingFailed
    ),
    security(("admin_token" = []), ("tenant_oauth" = ["subscriptions:write"]))
)]
pub async fn create(
    State(state): State<ApiState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(Scope::SubscriptionsWrite)?;
    refuse_while_lost(&state)?;
    let (verify, body) = take_verify(&body).map_err(ApiError::invalid)?;
    let mut spec: SubscriptionSpec = parse_json(&body).map_err(ApiError::invalid)?;
    let fields = field_names(&body);
    spec.validate_new().map_err(ApiError::invalid)?;
    tenant_rules_for_create(&state, &caller, &mut spec, &fields).await?;
    check_destinations(&state, &spec).await?;
    if state.store.find(&spec.id).await?.is_some() {
        return Err(
            postline_shared::redis::subscription_store::StoreError::AlreadyExists(
                spec.id.to_string(),
            )
            .into(),
        );
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
    audit(
        &state,
        &caller,
        &subscription,
        "subscription.create",
        fields,
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(view_with_ping(&subscription, ping)),
    )
        .into_response())
}

/// `GET /v1/subscriptions[?tenant=<id>]`.
#[utoipa::path(
    get,
    path = "/v1/subscriptions",
    tag = "subscriptions",
    params(("tenant" = Option<String>, Query, description = "Only this tenant's subscriptions (empty: the operator's own)")),
    responses(
        (status = 200, description = "The subscriptions the caller may see", body = super::openapi::SubscriptionList),
        super::error_responses::ManagementErrors
    ),
    security(("admin_token" = []), ("tenant_oauth" = ["subscriptions:read"]))
)]
pub async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(name, _)| name == "tenant")
        .map(|(_, value)| value.into_owned());
    let all = visible_list(&state, &caller, tenant.as_deref()).await?;
    let views: Vec<_> = all.iter().map(view).collect();
    Ok(Json(serde_json::json!({ "subscriptions": views })))
}

/// `GET /v1/subscriptions/{id}`.
#[utoipa::path(
    get,
    path = "/v1/subscriptions/{id}",
    tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "The subscription, with its `backlog`", body = super::openapi::SubscriptionShown),
        super::error_responses::ManagementErrors, super::error_responses::NotFound
    ),
    security(("admin_token" = []), ("tenant_oauth" = ["subscriptions:read"]))
)]
pub async fn get(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = path_id(&id)?;
    let subscription = visible(&state, &caller, &id, Scope::SubscriptionsRead).await?;
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
#[utoipa::path(
    patch,
    path = "/v1/subscriptions/{id}",
    tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    request_body(content = postline_shared::model::subscription::SubscriptionPatch, description = "Only the fields sent change; `\"verify\": false` skips the PING"),
    responses(
        (status = 200, description = "Updated", body = super::openapi::SubscriptionShown),
        super::error_responses::ManagementErrors, super::error_responses::BadInput, super::error_responses::NotFound, super::error_responses::Conflict, super::error_responses::PingFailed
    ),
    security(("admin_token" = []), ("tenant_oauth" = ["subscriptions:write"]))
)]
pub async fn update(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = path_id(&id)?;
    refuse_while_lost(&state)?;
    visible(&state, &caller, &id, Scope::SubscriptionsWrite).await?;
    let (verify, body) = take_verify(&body).map_err(ApiError::invalid)?;
    let patch: SubscriptionPatch = parse_json(&body).map_err(ApiError::invalid)?;
    let fields = field_names(&body);
    let verify = verify && patch.changes_the_request();
    let retry_changed = patch.retry.is_some();
    // Only a new URL is checked: pausing a subscription whose endpoint is
    // refused today (stored before the rule, say) must still work.
    let urls_changed = patch.endpoint.is_some() || patch.auth.is_some();
    let new_types = patch.event_types.clone();
    let pending = state.store.prepare_update(&id, patch).await?;
    if let Some(own) = caller.tenant() {
        let tenant = existing_tenant(&state, own).await?;
        if let Some(types) = &new_types {
            crate::tenants::check_event_types(&tenant.spec.allowed_event_types, types)
                .map_err(ApiError::invalid)?;
        }
        crate::tenants::operator_only(&pending.after.spec, &|name: &str| {
            fields.iter().any(|f| f == name)
        })
        .map_err(ApiError::invalid)?;
    }
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
    audit(
        &state,
        &caller,
        &subscription,
        "subscription.update",
        fields,
    )
    .await;
    Ok(Json(view_with_ping(&subscription, ping)))
}

/// `DELETE /v1/subscriptions/{id}`: removes the subscription, its queue and backlog.
#[utoipa::path(
    delete,
    path = "/v1/subscriptions/{id}",
    tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "Deleted with its queue and backlog", body = super::openapi::SubscriptionDeleted),
        super::error_responses::ManagementErrors, super::error_responses::NotFound
    ),
    security(("admin_token" = []), ("tenant_oauth" = ["subscriptions:write"]))
)]
pub async fn delete(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = path_id(&id)?;
    refuse_while_lost(&state)?;
    let subscription = visible(&state, &caller, &id, Scope::SubscriptionsWrite).await?;
    let body = remove(&state, &id).await?;
    audit(
        &state,
        &caller,
        &subscription,
        "subscription.delete",
        Vec::new(),
    )
    .await;
    Ok((StatusCode::OK, Json(body)).into_response())
}

/// Deletes subscription `id` with its queue, backlog and delivery records
/// (the DELETE, and deleting a tenant, go through here).
pub(super) async fn remove(state: &ApiState, id: &SubscriptionId) -> Result<Value, ApiError> {
    let channel = admin_channel(state).await?;
    // The subscription goes first so no new copy is routed to the queue.
    let outcome = state.store.delete(id).await;
    state.catalog.remove(id);
    // Removing the queue is idempotent, so a repeated DELETE (after a 404 or
    // a broker hiccup) still cleans up a queue left behind.
    let discarded = state.topology.delete_subscription(&channel, id).await;
    close(channel).await;
    // Moving to quorum queues: the classic queue may still be there too.
    if let Some(legacy) = state.topology.legacy() {
        if let Ok(channel) = admin_channel(state).await {
            let _ = legacy.delete_subscription(&channel, id).await;
            close(channel).await;
        }
    }
    outcome?;
    if let Err(error) = state.delivery.forget(id).await {
        tracing::warn!(%error, subscription = %id, "removing the delivery records failed");
    }
    Ok(match discarded {
        Ok(discarded) => {
            tracing::info!(subscription = %id, discarded, "subscription deleted");
            serde_json::json!({ "id": id, "deleted": true, "queue_deleted": true, "discarded_events": discarded })
        }
        Err(error) => {
            tracing::warn!(%error, subscription = %id, "subscription deleted; removing its queue failed (repeat the DELETE)");
            serde_json::json!({ "id": id, "deleted": true, "queue_deleted": false })
        }
    })
}
