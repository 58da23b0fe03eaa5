//! The error answers the OpenAPI document lists, as `IntoResponses` sets a
//! handler's `#[utoipa::path(responses(...))]` names instead of repeating
//! each status and description: every management route can answer
//! [`ManagementErrors`], every route behind a fixed token [`TokenErrors`],
//! and routes add the statuses of their own ([`NotFound`], [`BadInput`],
//! [`Conflict`], [`PingFailed`], [`TooLarge`]). Every body is an
//! [`ErrorBody`].

use super::openapi::ErrorBody;
use utoipa::IntoResponses;

/// What any route of the management API may answer, whoever calls.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum ManagementErrors {
    /// No or an unknown bearer token.
    #[response(
        status = 401,
        description = "`unauthorized`: missing or invalid bearer token"
    )]
    Unauthorized(ErrorBody),
    /// The caller may not do this.
    #[response(
        status = 403,
        description = "`admin_only`, `insufficient_scope`, `tenant_suspended`"
    )]
    Forbidden(ErrorBody),
    /// A dependency is down, or the state was lost.
    #[response(
        status = 503,
        description = "`unavailable` (broker or Redis down; retry) or `state_lost`"
    )]
    Unavailable(ErrorBody),
}

/// What a route behind the admin or the producer token may answer.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum TokenErrors {
    /// No or a wrong bearer token.
    #[response(
        status = 401,
        description = "`unauthorized`: missing or invalid bearer token"
    )]
    Unauthorized(ErrorBody),
    /// A dependency is down, or the state was lost.
    #[response(
        status = 503,
        description = "`unavailable` (broker or Redis down; retry) or `state_lost`"
    )]
    Unavailable(ErrorBody),
}

/// The resource does not exist, or is another tenant's.
#[derive(IntoResponses)]
#[response(
    status = 404,
    description = "`not_found` (another tenant's resource looks missing too)"
)]
#[allow(dead_code)]
pub struct NotFound(ErrorBody);

/// The request is not acceptable input.
#[derive(IntoResponses)]
#[response(
    status = 400,
    description = "Invalid input: `invalid_field` (naming the field), `not_json`, `invalid_body`; `limit_reached`, `operator_only` for tenants"
)]
#[allow(dead_code)]
pub struct BadInput(ErrorBody);

/// The change conflicts with the current state.
#[derive(IntoResponses)]
#[response(
    status = 409,
    description = "Conflict: `invalid_field` (the id is taken), `changed`, `not_blocked`, `block_changed`, `state_present`"
)]
#[allow(dead_code)]
pub struct Conflict(ErrorBody);

/// The endpoint did not pass the PING, or may not be called.
#[derive(IntoResponses)]
#[response(
    status = 422,
    description = "`ping_failed` (with `ping`) or `endpoint_not_allowed`"
)]
#[allow(dead_code)]
pub struct PingFailed(ErrorBody);

/// The body is larger than allowed.
#[derive(IntoResponses)]
#[response(status = 413, description = "`too_large`")]
#[allow(dead_code)]
pub struct TooLarge(ErrorBody);
