//! `/v1/tenants`: the operator's management of tenants, their OAuth clients,
//! their portal links, and the audit trail (which a tenant may read too).
//! Suspending a tenant pauses its subscriptions and refuses its tokens;
//! deleting one deletes its subscriptions (queues and backlogs too), its
//! clients and their tokens.

use super::caller::{Caller, Operator};
use super::{ApiError, ApiState};
use crate::tenants::audit::AuditEntry;
use crate::tenants::credentials::{scope_list, Scope};
use crate::tenants::store::{Principal, TenantStoreError};
use crate::tenants::{Tenant, TenantPatch, TenantSpec, TenantStatus};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use postline_shared::model::problem::{parse_json, Problem};
use postline_shared::model::subscription::{SubscriptionPatch, SubscriptionStatus};
use postline_shared::model::tenant::TenantId;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

/// Longest a portal link may stay usable.
pub const MAX_PORTAL_LINK_SECS: u64 = 3600;
/// Default life of a portal link.
pub const DEFAULT_PORTAL_LINK_SECS: u64 = 900;
/// Most audit entries one request may list.
const MAX_AUDIT_LISTED: usize = 1_000;

impl From<TenantStoreError> for ApiError {
    fn from(error: TenantStoreError) -> Self {
        match error {
            TenantStoreError::AlreadyExists(id) => {
                ApiError::conflict_field("id", format!("tenant {id} already exists"))
            }
            other => {
                tracing::error!(error = %other, "tenant store failed");
                ApiError::unavailable("tenant store unavailable; retry")
            }
        }
    }
}

/// The tenant `id`, if it exists.
async fn load(state: &ApiState, id: &str) -> Result<Option<Tenant>, ApiError> {
    Ok(state.tenants.get(id).await?)
}

async fn existing(state: &ApiState, id: &str) -> Result<Tenant, ApiError> {
    load(state, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("tenant {id} does not exist")))
}

fn view(tenant: &Tenant) -> Value {
    serde_json::to_value(tenant).unwrap_or_default()
}

async fn audit(
    state: &ApiState,
    caller: &Caller,
    tenant: &TenantId,
    action: &str,
    resource: &str,
    fields: Vec<String>,
) {
    state
        .audit
        .record(
            Some(tenant),
            AuditEntry::now(&caller.principal, caller.via, action, resource, fields),
        )
        .await;
}

/// `POST /v1/tenants`.
#[utoipa::path(
    post,
    path = "/v1/tenants",
    tag = "tenants",
    request_body = crate::tenants::TenantSpec,
    responses(
        (status = 201, description = "Created", body = super::openapi::TenantShown),
        super::error_responses::ManagementErrors, super::error_responses::BadInput, super::error_responses::Conflict
    ),
    security(("admin_token" = []))
)]
pub async fn create(
    State(state): State<ApiState>,
    Operator(caller): Operator,
    body: Bytes,
) -> Result<Response, ApiError> {
    let spec: TenantSpec = parse_json(&body).map_err(ApiError::invalid)?;
    spec.validate().map_err(ApiError::invalid)?;
    let tenant = state.tenants.create(spec).await?;
    tracing::info!(tenant = %tenant.spec.id, "tenant created");
    let fields = serde_json::from_slice::<serde_json::Map<String, Value>>(&body)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    audit(
        &state,
        &caller,
        &tenant.spec.id,
        "tenant.create",
        tenant.spec.id.as_str(),
        fields,
    )
    .await;
    Ok((StatusCode::CREATED, Json(view(&tenant))).into_response())
}

/// `GET /v1/tenants`.
#[utoipa::path(
    get,
    path = "/v1/tenants",
    tag = "tenants",
    responses(
        (status = 200, description = "Every tenant", body = super::openapi::TenantList),
        super::error_responses::ManagementErrors
    ),
    security(("admin_token" = []))
)]
pub async fn list(State(state): State<ApiState>, _: Operator) -> Result<Json<Value>, ApiError> {
    let tenants: Vec<Value> = state.tenants.list().await?.iter().map(view).collect();
    Ok(Json(json!({ "tenants": tenants })))
}

/// The tenant `id` if `caller` is the operator or that tenant (with the read scope).
async fn own_or_admin(state: &ApiState, caller: &Caller, id: &str) -> Result<Tenant, ApiError> {
    match caller.tenant() {
        None => existing(state, id).await,
        Some(own) if own.as_str() == id => {
            caller.require(Scope::SubscriptionsRead)?;
            existing(state, id).await
        }
        Some(_) => Err(ApiError::not_found(format!("tenant {id} does not exist"))),
    }
}

/// `GET /v1/tenants/{id}` (the operator, or the tenant itself).
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}",
    tag = "tenants",
    params(("id" = String, Path, description = "Tenant id")),
    responses(
        (status = 200, description = "The tenant (a tenant sees only itself)", body = super::openapi::TenantShown),
        super::error_responses::ManagementErrors, super::error_responses::NotFound
    ),
    security(("admin_token" = []), ("tenant_oauth" = ["subscriptions:read"]))
)]
pub async fn get(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(view(&own_or_admin(&state, &caller, &id).await?)))
}

/// `PATCH /v1/tenants/{id}`; suspending pauses every active subscription of the tenant.
#[utoipa::path(
    patch,
    path = "/v1/tenants/{id}",
    tag = "tenants",
    params(("id" = String, Path, description = "Tenant id")),
    request_body = crate::tenants::TenantPatch,
    responses(
        (status = 200, description = "Updated", body = super::openapi::TenantShown),
        super::error_responses::ManagementErrors, super::error_responses::BadInput, super::error_responses::NotFound
    ),
    security(("admin_token" = []))
)]
pub async fn update(
    State(state): State<ApiState>,
    Operator(caller): Operator,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let before = existing(&state, &id).await?;
    let patch: TenantPatch = parse_json(&body).map_err(ApiError::invalid)?;
    let fields = patch.field_names();
    let spec = before.spec.patched(patch);
    spec.validate().map_err(ApiError::invalid)?;
    let suspending =
        before.spec.status == TenantStatus::Active && spec.status == TenantStatus::Suspended;
    let tenant = Tenant {
        spec,
        created_at: before.created_at,
        updated_at: Utc::now(),
    };
    state.tenants.put(&tenant).await?;
    let mut paused = Vec::new();
    if suspending {
        for subscription in state.store.list().await? {
            let own = subscription.spec.tenant.as_ref() == Some(&tenant.spec.id);
            if own && subscription.spec.status == SubscriptionStatus::Active {
                let patch = SubscriptionPatch {
                    status: Some(SubscriptionStatus::Paused),
                    ..SubscriptionPatch::default()
                };
                let updated = state.store.update(subscription.id(), patch).await?;
                state.catalog.upsert(updated.clone());
                super::access::audit(
                    &state,
                    &caller,
                    &updated,
                    "subscription.update",
                    vec!["status".into()],
                )
                .await;
                paused.push(updated.id().to_string());
            }
        }
        tracing::info!(tenant = %id, paused = paused.len(), "tenant suspended");
    }
    audit(
        &state,
        &caller,
        &tenant.spec.id,
        "tenant.update",
        &id,
        fields,
    )
    .await;
    let mut shown = view(&tenant);
    if suspending {
        shown["paused_subscriptions"] = json!(paused);
    }
    Ok(Json(shown))
}

/// `DELETE /v1/tenants/{id}`: the tenant, its subscriptions (with their
/// queues), its clients and their tokens.
#[utoipa::path(
    delete,
    path = "/v1/tenants/{id}",
    tag = "tenants",
    params(("id" = String, Path, description = "Tenant id")),
    responses(
        (status = 200, description = "Deleted with its subscriptions, clients and tokens", body = super::openapi::TenantDeleted),
        super::error_responses::ManagementErrors, super::error_responses::NotFound
    ),
    security(("admin_token" = []))
)]
pub async fn delete(
    State(state): State<ApiState>,
    Operator(caller): Operator,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant = existing(&state, &id).await?;
    let mut deleted = Vec::new();
    for subscription in state.store.list().await? {
        if subscription.spec.tenant.as_ref() == Some(&tenant.spec.id) {
            super::subscriptions::remove(&state, subscription.id()).await?;
            deleted.push(subscription.id().to_string());
        }
    }
    state.tenants.delete(&id).await?;
    tracing::info!(tenant = %id, subscriptions = deleted.len(), "tenant deleted");
    state
        .audit
        .record(
            None,
            AuditEntry::now(
                &caller.principal,
                caller.via,
                "tenant.delete",
                &id,
                Vec::new(),
            ),
        )
        .await;
    Ok(Json(
        json!({ "id": id, "deleted": true, "subscriptions_deleted": deleted }),
    ))
}

/// The body of `POST /v1/tenants/{id}/clients`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewClient {
    /// Scopes of the client (default: all).
    #[serde(default)]
    scopes: Option<Vec<Scope>>,
}

/// `POST /v1/tenants/{id}/clients`: issues a client; its secret is in this answer only.
#[utoipa::path(
    post,
    path = "/v1/tenants/{id}/clients",
    tag = "tenants",
    params(("id" = String, Path, description = "Tenant id")),
    request_body(content = Option<NewClient>, description = "Scopes (default: all)"),
    responses(
        (status = 201, description = "Issued; `client_secret` in this answer only", body = super::openapi::ClientShown),
        super::error_responses::ManagementErrors, super::error_responses::BadInput, super::error_responses::NotFound
    ),
    security(("admin_token" = []))
)]
pub async fn create_client(
    State(state): State<ApiState>,
    Operator(caller): Operator,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let tenant = existing(&state, &id).await?;
    let request: NewClient = if body.iter().all(u8::is_ascii_whitespace) {
        NewClient { scopes: None }
    } else {
        parse_json(&body).map_err(ApiError::invalid)?
    };
    let mut scopes = request.scopes.unwrap_or_else(|| Scope::ALL.to_vec());
    scopes.sort();
    scopes.dedup();
    if scopes.is_empty() {
        return Err(ApiError::invalid(Problem::field(
            "scopes",
            "must name at least one scope",
        )));
    }
    let (client, secret) = state.tenants.create_client(&tenant.spec.id, scopes).await?;
    tracing::info!(tenant = %id, client_id = %client.client_id, "client issued");
    audit(
        &state,
        &caller,
        &tenant.spec.id,
        "client.create",
        &client.client_id,
        vec!["scopes".into()],
    )
    .await;
    let mut shown = client.view();
    shown["client_secret"] = json!(secret);
    shown["scope"] = json!(scope_list(&client.scopes));
    Ok((StatusCode::CREATED, Json(shown)).into_response())
}

/// `GET /v1/tenants/{id}/clients` (never a secret).
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}/clients",
    tag = "tenants",
    params(("id" = String, Path, description = "Tenant id")),
    responses(
        (status = 200, description = "The tenant's clients (never a secret)", body = super::openapi::ClientList),
        super::error_responses::ManagementErrors, super::error_responses::NotFound
    ),
    security(("admin_token" = []))
)]
pub async fn list_clients(
    State(state): State<ApiState>,
    _: Operator,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    existing(&state, &id).await?;
    let clients: Vec<Value> = state
        .tenants
        .clients(&id)
        .await?
        .iter()
        .map(|c| c.view())
        .collect();
    Ok(Json(json!({ "clients": clients })))
}

/// `DELETE /v1/tenants/{id}/clients/{client_id}`: revokes the client and its tokens.
#[utoipa::path(
    delete,
    path = "/v1/tenants/{id}/clients/{client_id}",
    tag = "tenants",
    params(("id" = String, Path, description = "Tenant id"), ("client_id" = String, Path, description = "Client id")),
    responses(
        (status = 200, description = "Revoked with every token it holds", body = super::openapi::ClientDeleted),
        super::error_responses::ManagementErrors, super::error_responses::NotFound
    ),
    security(("admin_token" = []))
)]
pub async fn delete_client(
    State(state): State<ApiState>,
    Operator(caller): Operator,
    Path((id, client_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let tenant = existing(&state, &id).await?;
    let missing = || ApiError::not_found(format!("client {client_id} does not exist"));
    let client = state
        .tenants
        .client(&client_id)
        .await?
        .ok_or_else(missing)?;
    if client.tenant != tenant.spec.id {
        return Err(missing());
    }
    state.tenants.delete_client(&client_id).await?;
    tracing::info!(tenant = %id, %client_id, "client revoked");
    audit(
        &state,
        &caller,
        &tenant.spec.id,
        "client.delete",
        &client_id,
        Vec::new(),
    )
    .await;
    Ok(Json(json!({ "client_id": client_id, "deleted": true })))
}

/// `GET /v1/tenants/{id}/audit?limit=N` (the operator, or the tenant itself), newest first.
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}/audit",
    tag = "tenants",
    params(("id" = String, Path, description = "Tenant id"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Most entries (default 100)")),
    responses(
        (status = 200, description = "The audit trail, newest first", body = super::openapi::AuditList),
        super::error_responses::ManagementErrors, super::error_responses::BadInput, super::error_responses::NotFound
    ),
    security(("admin_token" = []), ("tenant_oauth" = ["subscriptions:read"]))
)]
pub async fn audit_trail(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    own_or_admin(&state, &caller, &id).await?;
    let limit = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(name, _)| name == "limit")
        .map(|(_, value)| {
            value
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_AUDIT_LISTED).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid(Problem::field(
                        "limit",
                        format!("must be a number from 1 to {MAX_AUDIT_LISTED}"),
                    ))
                })
        })
        .transpose()?
        .unwrap_or(100);
    let entries = state.audit.recent(&id, limit).await.map_err(|error| {
        tracing::error!(%error, "reading the audit trail failed");
        ApiError::unavailable("audit trail unavailable; retry")
    })?;
    Ok(Json(json!({ "tenant": id, "entries": entries })))
}

/// The body of `POST /v1/tenants/{id}/portal-link`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewLink {
    /// How long the link works (default 900 s).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3600)]
    ttl_secs: Option<u64>,
    /// Scopes of the session it opens (default: all).
    #[serde(default)]
    scopes: Option<Vec<Scope>>,
}

/// `POST /v1/tenants/{id}/portal-link`: a one-time link into the tenant's
/// status page, usable for `ttl_secs` (default 15 min, at most 1 h).
#[utoipa::path(
    post,
    path = "/v1/tenants/{id}/portal-link",
    tag = "tenants",
    params(("id" = String, Path, description = "Tenant id")),
    request_body(content = Option<NewLink>, description = "Optional: lifetime and scopes"),
    responses(
        (status = 201, description = "A one-time link into the tenant's status page", body = super::openapi::PortalLink),
        super::error_responses::ManagementErrors, super::error_responses::BadInput, super::error_responses::NotFound
    ),
    security(("admin_token" = []))
)]
pub async fn portal_link(
    State(state): State<ApiState>,
    Operator(caller): Operator,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let tenant = existing(&state, &id).await?;
    let request: NewLink = if body.iter().all(u8::is_ascii_whitespace) {
        NewLink::default()
    } else {
        parse_json(&body).map_err(ApiError::invalid)?
    };
    let ttl = request.ttl_secs.unwrap_or(DEFAULT_PORTAL_LINK_SECS);
    if ttl == 0 || ttl > MAX_PORTAL_LINK_SECS {
        return Err(ApiError::invalid(Problem::field(
            "ttl_secs",
            format!("must be between 1 and {MAX_PORTAL_LINK_SECS}"),
        )));
    }
    let scopes = request.scopes.unwrap_or_else(|| Scope::ALL.to_vec());
    let principal = Principal::Tenant {
        tenant: tenant.spec.id.clone(),
        client_id: "portal".into(),
        scopes,
    };
    let token = state
        .tenants
        .create_link(principal, Duration::from_secs(ttl))
        .await?;
    audit(
        &state,
        &caller,
        &tenant.spec.id,
        "portal_link.create",
        &id,
        Vec::new(),
    )
    .await;
    let path = format!("/ui/portal?token={token}");
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
    {
        Some(proto) if proto.eq_ignore_ascii_case("https") => "https",
        _ if state.ui.secure_cookies => "https",
        _ => "http",
    };
    let url = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|host| format!("{scheme}://{host}{path}"));
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "tenant": id,
            "path": path,
            "url": url,
            "expires_at": Utc::now() + Duration::from_secs(ttl),
        })),
    )
        .into_response())
}
