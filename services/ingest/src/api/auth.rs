//! Bearer-token checks: producers and operators hold different tokens.

use super::ApiError;
use axum::http::HeaderMap;
use postline_shared::secret::Secret;
use subtle::ConstantTimeEq;

/// Accepts the request only if it carries `Authorization: Bearer <expected>`.
pub fn require_bearer(headers: &HeaderMap, expected: &Secret) -> Result<(), ApiError> {
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(ApiError::unauthorized)?;
    // Constant-time comparison so response timing does not reveal the token.
    if bool::from(presented.as_bytes().ct_eq(expected.expose().as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}
