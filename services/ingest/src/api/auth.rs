//! Bearer-token checks as axum extractors: producers and the operator hold
//! different fixed tokens ([`ProducerToken`], [`AdminToken`]); a tenant's
//! OAuth token is checked by [`super::caller::Caller`].

use super::{ApiError, ApiState};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use postline_shared::model::secret::Secret;
use subtle::ConstantTimeEq;

/// A request carrying the operator's admin token (`POSTLINE_ADMIN_TOKEN`):
/// a handler taking it is reached only with that token, 401 otherwise.
#[derive(Debug, Clone, Copy)]
pub struct AdminToken;

/// A request carrying the producers' token (`POSTLINE_PRODUCER_TOKEN`):
/// a handler taking it is reached only with that token, 401 otherwise.
#[derive(Debug, Clone, Copy)]
pub struct ProducerToken;

impl FromRequestParts<ApiState> for AdminToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        require_bearer(&parts.headers, &state.admin_token).map(|()| Self)
    }
}

impl FromRequestParts<ApiState> for ProducerToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        require_bearer(&parts.headers, &state.producer_token).map(|()| Self)
    }
}

/// Accepts the request only if it carries `Authorization: Bearer <expected>`.
fn require_bearer(headers: &HeaderMap, expected: &Secret) -> Result<(), ApiError> {
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .ok_or_else(ApiError::unauthorized)?;
    // Constant-time comparison so response timing does not reveal the token.
    if bool::from(presented.as_bytes().ct_eq(expected.expose().as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is
/// matched case-insensitively (RFC 7235 §2.1).
pub(super) fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_bearer_scheme_is_matched_in_any_case() {
        for value in ["Bearer t0k", "bearer t0k", "BEARER t0k", "bEaReR  t0k"] {
            assert_eq!(bearer_token(value), Some("t0k"), "{value}");
        }
        for value in ["Basic t0k", "Bearer", "Bearer ", "Bearert0k", "t0k"] {
            assert_eq!(bearer_token(value), None, "{value}");
        }
    }
}
