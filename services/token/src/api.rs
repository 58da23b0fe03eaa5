//! The token service's HTTP API under `/v1/tokens`, for delivery replicas
//! (and ingest's PINGs) on the internal network: a token by subscription id,
//! and invalidation after a receiver's 401. Credentials never cross this API:
//! the service reads them from the subscription in Redis itself, or, with
//! `?staged=<name>`, from the version ingest staged there for a PING before
//! storing it. Its OpenAPI 3.1 document, generated from these handlers, is
//! served at `GET /openapi.json` (committed as `deploy/openapi/token.json`).

use crate::minter::{MintError, Minter};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use postline_shared::model::problem::{parse_json, Problem, ProblemCode};
use postline_shared::model::secret::Secret;
use postline_shared::redis::token_cache::Token;
use serde::Deserialize;
use std::sync::Arc;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The body of `POST /v1/tokens/{id}/invalidate`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvalidateRequest {
    /// The token the receiver rejected.
    #[schema(value_type = String)]
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

impl TokenQuery {
    /// Reads the query string; an unknown or repeated parameter is a 400
    /// in the API's JSON error body (axum's query rejection answers in
    /// plain text).
    pub fn parse(query: Option<&str>) -> Result<Self, TokenApiError> {
        let mut staged = None;
        for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let refused = |message: &str| TokenApiError {
                status: StatusCode::BAD_REQUEST,
                problem: Problem::field(name.to_string(), message.to_string()),
            };
            if name != "staged" {
                return Err(refused("unknown query parameter"));
            }
            if staged.replace(value.into_owned()).is_some() {
                return Err(refused("given more than once"));
            }
        }
        Ok(Self { staged })
    }
}

/// Every error answer: `{"error": {code, field?, message}}`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: Problem,
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
            MintError::NoTokenMode { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, ProblemCode::NoTokenMode)
            }
            MintError::Fetch(_) => (StatusCode::BAD_GATEWAY, ProblemCode::TokenEndpoint),
            MintError::LockTimeout => (StatusCode::GATEWAY_TIMEOUT, ProblemCode::RefreshTimeout),
            MintError::Unavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, ProblemCode::Unavailable)
            }
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

/// The documented routes: each handler registers at the path of its
/// `#[utoipa::path]`, so the router and the document cannot differ.
fn documented_routes() -> OpenApiRouter<Arc<Minter>> {
    OpenApiRouter::new()
        .routes(routes!(issue))
        .routes(routes!(invalidate))
        .routes(routes!(serve_openapi))
}

/// The document's frame.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Postline token service API",
        description = "Bearer tokens for receivers, by subscription id, for delivery replicas and ingest's PINGs on the internal network (no authentication: do not expose it). Credentials never cross this API.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    components(schemas(ErrorBody, Problem, ProblemCode)),
    tags(
        (name = "tokens", description = "Tokens for receivers"),
        (name = "ops", description = "Health, readiness, metrics and this document")
    )
)]
struct Frame;

/// The token service's OpenAPI 3.1 document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut document = Frame::openapi();
    document.merge(documented_routes().into_openapi());
    document.merge(postline_shared::runtime::ops::openapi());
    document.info.version = env!("CARGO_PKG_VERSION").to_string();
    document
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "ops",
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json", body = Object))
)]
async fn serve_openapi() -> Response {
    Json(&*SERVED).into_response()
}

/// The document as served, built once.
static SERVED: std::sync::LazyLock<serde_json::Value> =
    std::sync::LazyLock::new(|| serde_json::to_value(document()).unwrap_or_default());

/// The `/v1/tokens` routes and `/openapi.json`.
pub fn router(minter: Arc<Minter>) -> Router {
    let (router, _) = documented_routes().split_for_parts();
    router.with_state(minter)
}

/// `POST /v1/tokens/{id}`: `{access_token, expires_at, refresh_at}`.
#[utoipa::path(
    post,
    path = "/v1/tokens/{id}",
    tag = "tokens",
    params(
        ("id" = String, Path, description = "Subscription id"),
        ("staged" = Option<String>, Query, description = "Read this staged version of the subscription (ingest's PINGs)")
    ),
    responses(
        (status = 200, description = "A usable token (cached, or fetched now)", body = Token),
        (status = 400, description = "`invalid_field`: an unknown or repeated query parameter", body = ErrorBody),
        (status = 404, description = "`not_found`: no such subscription", body = ErrorBody),
        (status = 422, description = "`no_token_mode`: its receiver auth fetches no token", body = ErrorBody),
        (status = 502, description = "`token_endpoint`: the receiver's token endpoint failed", body = ErrorBody),
        (status = 503, description = "`unavailable`: Redis is down; retry", body = ErrorBody),
        (status = 504, description = "`refresh_timeout`: another replica's refresh did not finish in time", body = ErrorBody)
    )
)]
async fn issue(
    State(minter): State<Arc<Minter>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Token>, TokenApiError> {
    let query = TokenQuery::parse(query.as_deref())?;
    Ok(Json(minter.token(&id, query.staged.as_deref()).await?))
}

/// `POST /v1/tokens/{id}/invalidate` with `{"access_token": <rejected>}`: a fresh token.
#[utoipa::path(
    post,
    path = "/v1/tokens/{id}/invalidate",
    tag = "tokens",
    params(
        ("id" = String, Path, description = "Subscription id"),
        ("staged" = Option<String>, Query, description = "Read this staged version of the subscription (ingest's PINGs)")
    ),
    request_body = InvalidateRequest,
    responses(
        (status = 200, description = "A fresh token (the rejected one is dropped from the cache)", body = Token),
        (status = 400, description = "`invalid_field` (also an unknown or repeated query parameter), `not_json`, `invalid_body`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such subscription", body = ErrorBody),
        (status = 422, description = "`no_token_mode`: its receiver auth fetches no token", body = ErrorBody),
        (status = 502, description = "`token_endpoint`: the receiver's token endpoint failed", body = ErrorBody),
        (status = 503, description = "`unavailable`: Redis is down; retry", body = ErrorBody),
        (status = 504, description = "`refresh_timeout`: another replica's refresh did not finish in time", body = ErrorBody)
    )
)]
async fn invalidate(
    State(minter): State<Arc<Minter>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Json<Token>, TokenApiError> {
    let query = TokenQuery::parse(query.as_deref())?;
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
