//! `POST /oauth/token`: the OAuth 2.0 client credentials grant (RFC 6749
//! §4.4) for tenants' clients. The client authenticates with HTTP Basic or
//! with `client_id` and `client_secret` in the form body (§2.3.1), may narrow
//! the token's scopes with `scope`, and gets an opaque bearer token that every
//! ingest replica accepts (it is kept in Redis, as a digest, until it expires
//! or its client is deleted). Errors are the RFC's (§5.2). A client id with
//! repeated failures must wait before it is checked again (429).

use super::{ApiError, ApiState};
use crate::tenants::credentials::{self, narrow, scope_list, ScopeError};
use crate::tenants::TenantStatus;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use postline_shared::model::problem::ProblemCode;
use serde_json::json;
use std::collections::HashMap;

/// Largest token request body.
pub const MAX_TOKEN_REQUEST_BYTES: usize = 4096;

/// A well-formed client credentials request.
#[derive(Debug, PartialEq, Eq)]
pub struct TokenRequest {
    /// The client id.
    pub client_id: String,
    /// The secret presented.
    pub client_secret: String,
    /// The `scope` parameter, when given.
    pub scope: Option<String>,
    /// Whether the client authenticated with HTTP Basic.
    pub basic: bool,
}

/// An RFC 6749 §5.2 error answer.
#[derive(Debug, PartialEq, Eq)]
pub struct OAuthError {
    /// `invalid_request`, `invalid_client`, …
    pub error: ProblemCode,
    /// For people.
    pub description: String,
}

impl OAuthError {
    fn new(error: ProblemCode, description: impl Into<String>) -> Self {
        Self {
            error,
            description: description.into(),
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let status = if self.error == ProblemCode::InvalidClient {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::BAD_REQUEST
        };
        let mut response = (
            status,
            Json(json!({ "error": self.error, "error_description": self.description })),
        )
            .into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"postline\""),
            );
        }
        response
    }
}

/// Reads a token request from its `Authorization` and `Content-Type`
/// headers and form body, checking everything but the credentials themselves.
pub fn parse_token_request(
    authorization: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<TokenRequest, OAuthError> {
    let form_type = content_type
        .and_then(|t| t.split(';').next())
        .is_some_and(|t| {
            t.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form_type {
        return Err(OAuthError::new(
            ProblemCode::InvalidRequest,
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    if body.len() > MAX_TOKEN_REQUEST_BYTES {
        return Err(OAuthError::new(
            ProblemCode::InvalidRequest,
            "the request is too large",
        ));
    }
    let mut params: HashMap<String, String> = HashMap::new();
    for (name, value) in url::form_urlencoded::parse(body) {
        if params
            .insert(name.to_string(), value.into_owned())
            .is_some()
        {
            return Err(OAuthError::new(
                ProblemCode::InvalidRequest,
                format!("parameter {name} is given more than once"),
            ));
        }
    }
    let grant_type = params
        .remove("grant_type")
        .ok_or_else(|| OAuthError::new(ProblemCode::InvalidRequest, "grant_type is missing"))?;
    if grant_type != "client_credentials" {
        return Err(OAuthError::new(
            ProblemCode::UnsupportedGrantType,
            "only grant_type=client_credentials is supported",
        ));
    }
    let basic = authorization.map(basic_credentials).transpose()?;
    let body_id = params.remove("client_id");
    let body_secret = params.remove("client_secret");
    let (client_id, client_secret, basic) = match (basic, body_id, body_secret) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err(OAuthError::new(
                ProblemCode::InvalidRequest,
                "authenticate with one method only: HTTP Basic or the body",
            ))
        }
        (Some((id, secret)), None, None) => (id, secret, true),
        (None, Some(id), Some(secret)) => (id, secret, false),
        (None, _, _) => {
            return Err(OAuthError::new(
                ProblemCode::InvalidClient,
                "client authentication is missing",
            ))
        }
    };
    if client_id.is_empty() || client_secret.is_empty() {
        return Err(OAuthError::new(
            ProblemCode::InvalidClient,
            "client authentication failed",
        ));
    }
    Ok(TokenRequest {
        client_id,
        client_secret,
        scope: params.remove("scope"),
        basic,
    })
}

/// The client id and secret of a `Basic` authorization value, each
/// form-urlencoded before encoding as RFC 6749 §2.3.1 asks.
fn basic_credentials(value: &str) -> Result<(String, String), OAuthError> {
    let failed = || {
        OAuthError::new(
            ProblemCode::InvalidClient,
            "malformed HTTP Basic credentials",
        )
    };
    let (scheme, encoded) = value.split_once(' ').ok_or_else(failed)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(failed());
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| failed())?;
    let text = String::from_utf8(decoded).map_err(|_| failed())?;
    let (id, secret) = text.split_once(':').ok_or_else(failed)?;
    let unescape = |part: &str| -> String {
        url::form_urlencoded::parse(format!("v={part}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Ok((unescape(id), unescape(secret)))
}

/// A hash no secret matches, checked for unknown client ids so that their
/// answer takes as long as a wrong secret's.
static DECOY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    credentials::hash_secret("postline-decoy-secret").unwrap_or_default()
});

/// `POST /oauth/token`.
#[utoipa::path(
    post,
    path = "/oauth/token",
    tag = "oauth",
    request_body(content = super::openapi::TokenForm, content_type = "application/x-www-form-urlencoded", description = "The client authenticates with HTTP Basic or `client_id`/`client_secret` in the form"),
    responses(
        (status = 200, description = "An access token (`Cache-Control: no-store`)", body = super::openapi::TokenIssued),
        (status = 400, description = "`invalid_request`, `unsupported_grant_type`, `invalid_scope`, `unauthorized_client`", body = super::openapi::OAuthErrorBody),
        (status = 401, description = "`invalid_client` (with `WWW-Authenticate`)", body = super::openapi::OAuthErrorBody),
        (status = 429, description = "`slow_down`: this client id failed too often; wait", body = super::openapi::ErrorBody),
        (status = 503, description = "`unavailable` (broker or Redis down; retry) or `state_lost`", body = super::openapi::ErrorBody)
    )
)]
pub async fn token(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    match issue(&state, &headers, &body).await {
        Ok(response) => response,
        Err(Refusal::OAuth(error)) => error.into_response(),
        Err(Refusal::Api(error)) => error.into_response(),
    }
}

enum Refusal {
    OAuth(OAuthError),
    Api(ApiError),
}

impl From<OAuthError> for Refusal {
    fn from(error: OAuthError) -> Self {
        Self::OAuth(error)
    }
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Self::Api(error)
    }
}

/// Longest client id looked at; longer ones (and ones with other
/// characters than issued ids have) fail without touching Redis.
const MAX_CLIENT_ID_LEN: usize = 64;

/// Whether `client_id` has the shape of an issued id (so that failure
/// counters and log lines only ever carry such values).
pub fn plausible_client_id(client_id: &str) -> bool {
    !client_id.is_empty()
        && client_id.len() <= MAX_CLIENT_ID_LEN
        && client_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Checks a client id and secret, with the slow-down for repeated failures
/// (shared by the token endpoint and the status page's partner sign-in).
pub async fn check_client(
    state: &ApiState,
    client_id: &str,
    secret: &str,
) -> Result<Result<crate::tenants::store::OAuthClient, ()>, ApiError> {
    if !plausible_client_id(client_id) {
        tracing::info!("client authentication failed: malformed client id");
        return Ok(Err(()));
    }
    if let Some(wait) = state.tenants.penalty_left(client_id).await? {
        tracing::info!(%client_id, wait_ms = wait.as_millis() as u64, "client slowed down after failed authentications");
        return Err(ApiError::too_many(format!(
            "too many failed attempts for this client; retry in {} s",
            wait.as_secs().max(1)
        )));
    }
    let client = state.tenants.client(client_id).await?;
    let hash = client
        .as_ref()
        .map_or_else(|| DECOY_HASH.clone(), |c| c.secret_hash.clone());
    let presented = secret.to_string();
    let matches =
        tokio::task::spawn_blocking(move || credentials::verify_secret(&presented, &hash))
            .await
            .unwrap_or(false);
    match client {
        Some(client) if matches => {
            state.tenants.clear_failures(client_id).await?;
            Ok(Ok(client))
        }
        _ => {
            let failures = state.tenants.record_failure(client_id).await?;
            tracing::info!(%client_id, failures, "client authentication failed");
            Ok(Err(()))
        }
    }
}

async fn issue(state: &ApiState, headers: &HeaderMap, body: &[u8]) -> Result<Response, Refusal> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let request = parse_token_request(
        text(header::AUTHORIZATION),
        text(header::CONTENT_TYPE),
        body,
    )?;
    let client = check_client(state, &request.client_id, &request.client_secret)
        .await?
        .map_err(|()| {
            OAuthError::new(ProblemCode::InvalidClient, "client authentication failed")
        })?;
    let tenant = state
        .tenants
        .get(client.tenant.as_str())
        .await
        .map_err(ApiError::from)?;
    if tenant.is_none_or(|t| t.spec.status != TenantStatus::Active) {
        return Err(OAuthError::new(
            ProblemCode::UnauthorizedClient,
            "this client's tenant is suspended",
        )
        .into());
    }
    let scopes = narrow(&client.scopes, request.scope.as_deref()).map_err(|error| {
        OAuthError::new(
            ProblemCode::InvalidScope,
            match error {
                ScopeError::Unknown(_) => "the scope names an unknown scope".to_string(),
                ScopeError::NotGranted(scope) => {
                    format!("scope {scope} was not granted to this client")
                }
            },
        )
    })?;
    let ttl = state.oauth_token_ttl;
    let token = state
        .tenants
        .issue_token(&client, scopes.clone(), ttl)
        .await
        .map_err(ApiError::from)?;
    tracing::info!(client_id = %client.client_id, tenant = %client.tenant, "access token issued");
    let mut response = Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": ttl.as_secs(),
        "scope": scope_list(&scopes),
    }))
    .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

    fn error_of(auth: Option<&str>, content_type: Option<&str>, body: &str) -> &'static str {
        parse_token_request(auth, content_type, body.as_bytes())
            .unwrap_err()
            .error
            .as_str()
    }

    #[test]
    fn reads_body_and_basic_client_authentication() {
        let request = parse_token_request(
            None,
            FORM,
            b"grant_type=client_credentials&client_id=c1&client_secret=s%2B1&scope=subscriptions%3Aread",
        )
        .unwrap();
        assert_eq!(request.client_id, "c1");
        assert_eq!(request.client_secret, "s+1");
        assert_eq!(request.scope.as_deref(), Some("subscriptions:read"));
        assert!(!request.basic);
        let basic = format!("Basic {}", STANDARD.encode("c1:s%2B1"));
        let request = parse_token_request(
            Some(&basic),
            Some("application/x-www-form-urlencoded; charset=utf-8"),
            b"grant_type=client_credentials",
        )
        .unwrap();
        assert_eq!(
            (request.client_id.as_str(), request.client_secret.as_str()),
            ("c1", "s+1")
        );
        assert!(request.basic);
    }

    #[test]
    fn only_id_shaped_client_ids_are_looked_up() {
        assert!(plausible_client_id("plc_AbC-09_x"));
        assert!(!plausible_client_id(""));
        assert!(!plausible_client_id("a b"));
        assert!(!plausible_client_id("a:b"));
        assert!(!plausible_client_id(&"a".repeat(MAX_CLIENT_ID_LEN + 1)));
    }

    #[test]
    fn names_the_rfc_error_of_each_malformed_request() {
        let good = "grant_type=client_credentials&client_id=c&client_secret=s";
        assert_eq!(
            error_of(None, Some("application/json"), good),
            "invalid_request"
        );
        assert_eq!(error_of(None, None, good), "invalid_request");
        assert_eq!(
            error_of(None, FORM, "client_id=c&client_secret=s"),
            "invalid_request"
        );
        assert_eq!(
            error_of(None, FORM, &format!("{good}&grant_type=client_credentials")),
            "invalid_request"
        );
        assert_eq!(
            error_of(
                None,
                FORM,
                "grant_type=password&client_id=c&client_secret=s"
            ),
            "unsupported_grant_type"
        );
        assert_eq!(
            error_of(None, FORM, "grant_type=client_credentials"),
            "invalid_client"
        );
        assert_eq!(
            error_of(None, FORM, "grant_type=client_credentials&client_id=c"),
            "invalid_client"
        );
        let basic = format!("Basic {}", STANDARD.encode("c:s"));
        assert_eq!(error_of(Some(&basic), FORM, good), "invalid_request");
        assert_eq!(
            error_of(Some("Basic !!!"), FORM, "grant_type=client_credentials"),
            "invalid_client"
        );
        assert_eq!(
            error_of(None, FORM, &"x".repeat(MAX_TOKEN_REQUEST_BYTES + 1)),
            "invalid_request"
        );
    }
}
