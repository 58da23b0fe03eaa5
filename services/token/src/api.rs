//! The token service's HTTP API under `/v1/tokens`, for delivery replicas
//! (and ingest's PINGs) on the internal network: a token by subscription id,
//! and invalidation after a receiver's 401. Credentials never cross this API:
//! the service reads them from the subscription in Redis itself, or, with
//! `?staged=<name>`, from the version ingest staged there for a PING before
//! storing it.

use crate::minter::{MintError, Minter};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use postline_shared::problem::{parse_json, Problem, ProblemCode};
use postline_shared::secret::Secret;
use postline_shared::token_cache::Token;
use serde::Deserialize;
use std::sync::Arc;

/// The body of `POST /v1/tokens/{id}/invalidate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvalidateRequest {
    /// The token the receiver rejected.
    pub access_token: Secret,
}

/// The query of both routes: which staged version to read, if any.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenQuery {
    /// A staged subscription version (see `SubscriptionStore::stage`).
    #[serde(default)]
    pub staged: Option<String>,
}

/// An error answer: a status and `{"error": {code, message}}`.
#[derive(Debug)]
pub struct TokenApiError {
    status: StatusCode,
    problem: Problem,
}

impl From<MintError> for TokenApiError {
    fn from(error: MintError) -> Self {
        let (status, code) = match &error {
            MintError::NotFound(_) => (StatusCode::NOT_FOUND, ProblemCode::NotFound),
            MintError::NoTokenMode { .. } => (StatusCode::UNPROCESSABLE_ENTITY, ProblemCode::NoTokenMode),
            MintError::Fetch(_) => (StatusCode::BAD_GATEWAY, ProblemCode::TokenEndpoint),
            MintError::LockTimeout => (StatusCode::GATEWAY_TIMEOUT, ProblemCode::RefreshTimeout),
            MintError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, ProblemCode::Unavailable),
        };
        Self {
            status,
            problem: Problem::whole(code, error.to_string()),
        }
    }
}

impl IntoResponse for TokenApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.problem })),
        )
            .into_response()
    }
}

/// The `/v1/tokens` routes.
pub fn router(minter: Arc<Minter>) -> Router {
    Router::new()
        .route("/v1/tokens/{id}", post(issue))
        .route("/v1/tokens/{id}/invalidate", post(invalidate))
        .with_state(minter)
}

/// `POST /v1/tokens/{id}`: `{access_token, expires_at, refresh_at}`.
async fn issue(
    State(minter): State<Arc<Minter>>,
    Path(id): Path<String>,
    Query(query): Query<TokenQuery>,
) -> Result<Json<Token>, TokenApiError> {
    Ok(Json(minter.token(&id, query.staged.as_deref()).await?))
}

/// `POST /v1/tokens/{id}/invalidate` with `{"access_token": <rejected>}`: a fresh token.
async fn invalidate(
    State(minter): State<Arc<Minter>>,
    Path(id): Path<String>,
    Query(query): Query<TokenQuery>,
    body: Bytes,
) -> Result<Json<Token>, TokenApiError> {
    let request: InvalidateRequest = parse_json(&body).map_err(|problem| TokenApiError {
        status: StatusCode::BAD_REQUEST,
        problem,
    })?;
    Ok(Json(
        minter
            .invalidate(&id, query.staged.as_deref(), &request.access_token)
            .await?,
    ))
}
