//! Backup and recovery of Postline's state, under `/v1/admin/…` (admin token):
//! `GET export` (every subscription as stored, secrets sealed, with its
//! ordering block and parked events; every tenant with its OAuth clients,
//! secrets only as their hashes), `POST import` (restores an export and
//! writes a new installation marker, so services fail open again) and
//! `POST reset-state` (declares a fresh start after a loss and names the
//! strict subscriptions whose queued events may now be delivered out of order).

use super::auth::AdminToken;
use super::{admin_channel, close, ApiError, ApiState};
use crate::tenants::store::{OAuthClient, TenantStoreError};
use crate::tenants::Tenant;
use axum::body::{to_bytes, Body};
use axum::extract::{RawQuery, State};
use axum::Json;
use chrono::Utc;
use postline_shared::model::ids::SubscriptionId;
use postline_shared::model::problem::{Problem, ProblemCode};
use postline_shared::model::subscription::{OrderMode, Subscription};
use postline_shared::redis::delivery_state::{Block, ParkedEvent};
use postline_shared::runtime::installation::{self, Marker};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The format name an export carries, checked on import.
pub const EXPORT_FORMAT: &str = "postline-export/1";
/// Largest import body (an export of tens of thousands of subscriptions).
const MAX_IMPORT_BYTES: usize = 256 * 1024 * 1024;

/// A backup: what Redis holds that exists nowhere else and that recovery needs.
#[derive(Debug, Serialize, Deserialize)]
pub struct Export {
    /// [`EXPORT_FORMAT`].
    pub format: String,
    /// When it was taken.
    pub exported_at: chrono::DateTime<Utc>,
    /// The installation marker at that time.
    pub installation: Option<Marker>,
    /// Every subscription.
    pub subscriptions: Vec<ExportedSubscription>,
    /// Every tenant with its clients (absent in exports made before tenants).
    #[serde(default)]
    pub tenants: Vec<ExportedTenant>,
}

/// One tenant in an export.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExportedTenant {
    /// The tenant.
    pub tenant: Tenant,
    /// Its OAuth clients (secrets as argon2 hashes; tokens are not kept).
    #[serde(default)]
    pub clients: Vec<OAuthClient>,
}

/// One subscription in an export.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExportedSubscription {
    /// The stored document, secrets sealed with the installation's key.
    pub subscription: Value,
    /// The ordering block of a strict subscription waiting on the ladder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<Block>,
    /// Events given up with `skip`, kept for replay.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parked: Vec<ParkedEvent>,
}

/// `?force=true`: import or reset although the installation marker is
/// present. Anything but one `true` or `false` is a 400 naming `force`, in
/// the API's JSON error body (axum's query rejection answers in plain text).
fn force(query: Option<&str>) -> Result<bool, ApiError> {
    let mut given = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(name, _)| name == "force")
        .map(|(_, value)| value.into_owned());
    let refused = || {
        ApiError::invalid(Problem::field(
            "force",
            "must be `true` or `false`, given once",
        ))
    };
    match (given.next(), given.next()) {
        (None, _) => Ok(false),
        (Some(value), None) if value == "true" => Ok(true),
        (Some(value), None) if value == "false" => Ok(false),
        _ => Err(refused()),
    }
}

/// `GET /v1/admin/export`. Refused (503 `state_lost`) while the state is
/// lost, so a scheduled export never overwrites a good backup with an empty one.
#[utoipa::path(
    get,
    path = "/v1/admin/export",
    tag = "admin",
    responses(
        (status = 200, description = "Every subscription as stored (secrets sealed), with its block and parked events", body = Object),
        super::error_responses::TokenErrors
    ),
    security(("admin_token" = []))
)]
pub async fn export(
    State(state): State<ApiState>,
    _: AdminToken,
) -> Result<Json<Export>, ApiError> {
    let mut redis = state.redis.clone();
    let marker = installation::read_marker(&mut redis, &state.keys)
        .await
        .map_err(unavailable)?;
    if marker.is_none() || state.readiness.is_state_lost() {
        return Err(ApiError::state_lost());
    }
    let documents = state.store.export_sealed().await?;
    let mut subscriptions = Vec::with_capacity(documents.len());
    for document in documents {
        let id = document_id(&document)
            .ok_or_else(|| ApiError::internal("a stored subscription has no well-formed id"))?;
        let block = state.delivery.block(&id).await?;
        let parked = state.delivery.parked(&id).await?;
        subscriptions.push(ExportedSubscription {
            subscription: document,
            block,
            parked,
        });
    }
    let mut tenants = Vec::new();
    for tenant in state.tenants.list().await.map_err(tenant_store)? {
        let clients = state
            .tenants
            .clients(tenant.spec.id.as_str())
            .await
            .map_err(tenant_store)?;
        tenants.push(ExportedTenant { tenant, clients });
    }
    tracing::info!(
        subscriptions = subscriptions.len(),
        tenants = tenants.len(),
        "state exported"
    );
    Ok(Json(Export {
        format: EXPORT_FORMAT.to_string(),
        exported_at: Utc::now(),
        installation: marker,
        subscriptions,
        tenants,
    }))
}

/// `POST /v1/admin/import`: restores an export. Every document is checked
/// (it must open with the configured keys) before anything is written;
/// then the queues are declared, the subscriptions, blocks and parked
/// events written, and a new installation marker ends the lost state.
#[utoipa::path(
    post,
    path = "/v1/admin/import",
    tag = "admin",
    params(("force" = Option<bool>, Query, description = "Import although the state is present")),
    request_body(content = Object, description = "An export"),
    responses(
        (status = 200, description = "Restored", body = super::openapi::Imported),
        super::error_responses::TokenErrors, super::error_responses::BadInput, super::error_responses::Conflict, super::error_responses::TooLarge
    ),
    security(("admin_token" = []))
)]
pub async fn import(
    State(state): State<ApiState>,
    _: AdminToken,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    refuse_if_installed(&state, force(query.as_deref())?).await?;
    let bytes = to_bytes(body, MAX_IMPORT_BYTES).await.map_err(|_| {
        ApiError::invalid(Problem::whole(
            ProblemCode::TooLarge,
            format!("an import is at most {MAX_IMPORT_BYTES} bytes"),
        ))
    })?;
    let export: Export =
        postline_shared::model::problem::parse_json(&bytes).map_err(ApiError::invalid)?;
    if export.format != EXPORT_FORMAT {
        return Err(ApiError::invalid(Problem::field(
            "format",
            format!("must be {EXPORT_FORMAT}"),
        )));
    }
    let mut checked = Vec::with_capacity(export.subscriptions.len());
    for (i, entry) in export.subscriptions.iter().enumerate() {
        let subscription = state
            .store
            .check_sealed(&entry.subscription)
            .map_err(|error| {
                ApiError::invalid(Problem::field(
                    format!("subscriptions[{i}]"),
                    format!("not a subscription this installation can open: {error}"),
                ))
            })?;
        checked.push(subscription);
    }
    let channel = admin_channel(&state).await?;
    for subscription in &checked {
        let declared = declare_queues(&state, &channel, subscription).await;
        if let Err(error) = declared {
            close(channel).await;
            tracing::warn!(%error, subscription = %subscription.id(), "declaring a restored subscription's queues failed");
            return Err(ApiError::unavailable(
                "broker refused a queue declaration; retry",
            ));
        }
    }
    close(channel).await;
    let (mut blocks, mut parked) = (0, 0);
    for (subscription, entry) in checked.iter().zip(&export.subscriptions) {
        let id = subscription.id();
        state
            .store
            .import_sealed(subscription, &entry.subscription)
            .await?;
        match &entry.block {
            Some(block) => {
                state.delivery.set_block(id, block).await?;
                blocks += 1;
            }
            None => state.delivery.clear_block(id).await?,
        }
        state.delivery.restore_parked(id, &entry.parked).await?;
        parked += entry.parked.len();
        state.catalog.upsert(subscription.clone());
    }
    // Tenants before the marker too: a subscription's tenant must exist.
    for entry in &export.tenants {
        state
            .tenants
            .restore(&entry.tenant, &entry.clients)
            .await
            .map_err(tenant_store)?;
    }
    // Last: the marker tells every service the state is whole again.
    let marker = Marker::fresh();
    installation::write_marker(&mut state.redis.clone(), &state.keys, &marker)
        .await
        .map_err(unavailable)?;
    state.readiness.set_state_lost(false);
    tracing::warn!(
        subscriptions = checked.len(),
        blocks,
        parked,
        installation = %marker.id,
        "state imported; services resume"
    );
    Ok(Json(json!({
        "imported": checked.len(),
        "tenants": export.tenants.len(),
        "blocks": blocks,
        "parked": parked,
        "installation": marker,
    })))
}

/// `POST /v1/admin/reset-state`: declares a fresh start (a new marker) and
/// names the strict subscriptions known to this process whose queues hold
/// events but which have no block in Redis: their order may now be broken.
#[utoipa::path(
    post,
    path = "/v1/admin/reset-state",
    tag = "admin",
    params(("force" = Option<bool>, Query, description = "Reset although the state is present")),
    responses(
        (status = 200, description = "A fresh start declared", body = super::openapi::ResetDone),
        (status = 400, description = "`invalid_field`: `force` is not `true` or `false`", body = super::openapi::ErrorBody),
        super::error_responses::TokenErrors, super::error_responses::Conflict
    ),
    security(("admin_token" = []))
)]
pub async fn reset_state(
    State(state): State<ApiState>,
    _: AdminToken,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    refuse_if_installed(&state, force(query.as_deref())?).await?;
    let known = state.catalog.all();
    let mut at_risk = Vec::new();
    let link = super::broker(&state)?;
    for subscription in known.iter().filter(|s| s.spec.order == OrderMode::Strict) {
        let id = subscription.id();
        // A failed passive declare closes its channel: one channel per look.
        let channel = link.admin_channel().await.map_err(|error| {
            tracing::warn!(%error, "opening a management channel failed");
            ApiError::unavailable("broker not reachable; retry")
        })?;
        let queued = state.topology.subscription_backlog(&channel, id).await.ok();
        close(channel).await;
        let blocked = state.delivery.block(id).await?.is_some();
        if let Some(queued) = queued.filter(|&n| n > 0 && !blocked) {
            at_risk.push(json!({"id": id, "queued": queued}));
        }
    }
    let marker = Marker::fresh();
    installation::write_marker(&mut state.redis.clone(), &state.keys, &marker)
        .await
        .map_err(unavailable)?;
    state.readiness.set_state_lost(false);
    tracing::warn!(
        installation = %marker.id,
        may_be_out_of_order = at_risk.len(),
        "fresh start declared; services resume without the lost state"
    );
    Ok(Json(json!({
        "installation": marker,
        "known_subscriptions": known.len(),
        "may_be_out_of_order": at_risk,
    })))
}

/// 409 `state_present` when the marker is there (nothing to recover) and
/// the operator did not insist.
async fn refuse_if_installed(state: &ApiState, force: bool) -> Result<(), ApiError> {
    let present = installation::marker_present(&mut state.redis.clone(), &state.keys)
        .await
        .map_err(|error| unavailable(error.into()))?;
    if present && !force {
        return Err(ApiError::conflict(
            ProblemCode::StatePresent,
            "the installation marker is present: the state is not lost (add ?force=true to overwrite)",
        ));
    }
    Ok(())
}

async fn declare_queues(
    state: &ApiState,
    channel: &lapin::Channel,
    subscription: &Subscription,
) -> Result<(), lapin::Error> {
    state
        .topology
        .declare_subscription(channel, subscription.id())
        .await?;
    state
        .topology
        .declare_delay_queues(channel, subscription.spec.retry.delays_ms())
        .await
}

fn document_id(document: &Value) -> Option<SubscriptionId> {
    document
        .pointer("/spec/id")
        .or_else(|| document.get("id"))
        .and_then(Value::as_str)
        .and_then(|id| SubscriptionId::parse(id).ok())
}

fn unavailable(error: installation::InstallationError) -> ApiError {
    tracing::error!(%error, "installation marker unavailable");
    ApiError::unavailable("redis unavailable; retry")
}

fn tenant_store(error: TenantStoreError) -> ApiError {
    tracing::warn!(%error, "reading or writing tenants failed");
    ApiError::unavailable("tenants could not be read or written; retry")
}
