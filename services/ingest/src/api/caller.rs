//! Who is calling the management API, as an axum extractor: the operator
//! (the admin token) or a tenant (an OAuth access token from `/oauth/token`,
//! looked up in Redis so every replica accepts it and revocation is
//! immediate). Handlers then ask it for a scope and whether a subscription
//! is theirs to see; another tenant's subscription looks like no subscription.

use super::auth::bearer_token;
use super::{ApiError, ApiState};
use crate::tenants::credentials::Scope;
use crate::tenants::store::Principal;
use crate::tenants::TenantStatus;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use postline_shared::model::problem::ProblemCode;
use postline_shared::model::subscription::Subscription;
use postline_shared::model::tenant::TenantId;
use subtle::ConstantTimeEq;

/// The authenticated caller of a management request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Operator or tenant.
    pub principal: Principal,
    /// `api` or `ui` (for the audit trail).
    pub via: &'static str,
}

impl Caller {
    /// The operator, through the API.
    pub fn admin() -> Self {
        Self {
            principal: Principal::Admin,
            via: "api",
        }
    }

    /// The caller's tenant (`None` for the operator).
    pub fn tenant(&self) -> Option<&TenantId> {
        match &self.principal {
            Principal::Admin => None,
            Principal::Tenant { tenant, .. } => Some(tenant),
        }
    }

    /// Whether the caller is the operator.
    pub fn is_admin(&self) -> bool {
        self.principal == Principal::Admin
    }

    /// Whether the caller holds `scope` (the operator holds every scope).
    pub fn has(&self, scope: Scope) -> bool {
        match &self.principal {
            Principal::Admin => true,
            Principal::Tenant { scopes, .. } => scopes.contains(&scope),
        }
    }

    /// 403 `insufficient_scope` unless the caller holds `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.has(scope) {
            Ok(())
        } else {
            Err(ApiError::insufficient_scope(scope.name()))
        }
    }

    /// 403 unless the caller is the operator (see [`Operator`]).
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                ProblemCode::AdminOnly,
                "only the operator's admin token may do this",
            ))
        }
    }

    /// Whether `subscription` is the caller's to see: all for the
    /// operator, only its own tenant's for a tenant.
    pub fn can_see(&self, subscription: &Subscription) -> bool {
        match self.tenant() {
            None => true,
            Some(tenant) => subscription.spec.tenant.as_ref() == Some(tenant),
        }
    }
}

/// Checks a bearer token: the admin token, or a live tenant access token
/// whose tenant exists and is active.
pub async fn authenticate(state: &ApiState, token: &str) -> Result<Caller, ApiError> {
    // Constant-time comparison so response timing does not reveal the token.
    if bool::from(
        token
            .as_bytes()
            .ct_eq(state.admin_token.expose().as_bytes()),
    ) {
        return Ok(Caller::admin());
    }
    let grant = state
        .tenants
        .token(token)
        .await
        .map_err(|error| {
            tracing::error!(%error, "reading an access token failed");
            ApiError::unavailable("credentials store unavailable; retry")
        })?
        .ok_or_else(ApiError::unauthorized)?;
    let principal = grant.principal;
    if let Principal::Tenant { tenant, .. } = &principal {
        check_tenant_active(state, tenant).await?;
    }
    Ok(Caller {
        principal,
        via: "api",
    })
}

/// 401 when the tenant is gone, 403 `tenant_suspended` while it is suspended.
pub async fn check_tenant_active(state: &ApiState, tenant: &TenantId) -> Result<(), ApiError> {
    let found = state.tenants.get(tenant.as_str()).await.map_err(|error| {
        tracing::error!(%error, "reading a tenant failed");
        ApiError::unavailable("credentials store unavailable; retry")
    })?;
    match found {
        None => Err(ApiError::unauthorized()),
        Some(t) if t.spec.status == TenantStatus::Suspended => Err(ApiError::forbidden(
            ProblemCode::TenantSuspended,
            "this tenant is suspended; ask the operator",
        )),
        Some(_) => Ok(()),
    }
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .ok_or_else(ApiError::unauthorized)?;
        authenticate(state, token).await
    }
}

/// A caller that is the operator (the admin token): the tenant, client and
/// portal routes take it, so a tenant's token gets 403 `admin_only` before
/// the handler runs.
#[derive(Debug, Clone)]
pub struct Operator(pub Caller);

impl FromRequestParts<ApiState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require_admin()?;
        Ok(Self(caller))
    }
}
