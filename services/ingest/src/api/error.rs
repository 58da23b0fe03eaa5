//! API errors: a status code and a JSON body `{"error": {code, field?, message}}`,
//! with, for some errors, one more top-level member saying what happened
//! (the failed PING's `ping`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use postline_shared::model::ids::InvalidId;
use postline_shared::model::problem::{Problem, ProblemCode};
use postline_shared::redis::subscription_store::StoreError;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    problem: Problem,
    detail: Option<(&'static str, serde_json::Value)>,
}

impl ApiError {
    /// 400 (or 413 for `too_large`) for bad input.
    pub fn invalid(problem: Problem) -> Self {
        let status = if problem.code == ProblemCode::TooLarge {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        };
        Self::new(status, problem)
    }

    fn new(status: StatusCode, problem: Problem) -> Self {
        Self {
            status,
            problem,
            detail: None,
        }
    }

    /// 422 when the endpoint failed the PING; `ping` says what it did.
    pub fn ping_failed(message: impl Into<String>, ping: serde_json::Value) -> Self {
        Self {
            detail: Some(("ping", ping)),
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                Problem::whole(ProblemCode::PingFailed, message),
            )
        }
    }

    /// 422 when a URL the subscription names leads to an address Postline
    /// may not call (`field`: `endpoint` or `auth.token_url`). Says no more
    /// than "not allowed": never the address, a status or a timing.
    pub fn not_allowed(field: &str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            Problem {
                code: ProblemCode::EndpointNotAllowed,
                field: Some(field.to_string()),
                message: message.into(),
            },
        )
    }

    /// 500 for what cannot happen with well-formed data.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Problem::whole(ProblemCode::Internal, message),
        )
    }

    /// 401 for a missing or wrong token.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            Problem::whole(ProblemCode::Unauthorized, "missing or invalid bearer token"),
        )
    }

    /// 403 with `code` (e.g. `admin_only`, `tenant_suspended`).
    pub fn forbidden(code: ProblemCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, Problem::whole(code, message))
    }

    /// 403 `insufficient_scope` (RFC 6750 §3.1) naming the scope needed.
    pub fn insufficient_scope(scope: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            Problem::whole(
                ProblemCode::InsufficientScope,
                format!("this token lacks the scope {scope}"),
            ),
        )
    }

    /// 429 while a client id is slowed down after failed authentications.
    pub fn too_many(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            Problem::whole(ProblemCode::SlowDown, message),
        )
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The problem of this error.
    pub fn problem(&self) -> &Problem {
        &self.problem
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            Problem::whole(ProblemCode::NotFound, message),
        )
    }

    /// 404 naming the path parameter `field`, whose value cannot be an id
    /// (so nothing has it): as for any missing resource, but saying why.
    pub fn malformed_id(field: &str, invalid: InvalidId) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            Problem {
                code: ProblemCode::NotFound,
                field: Some(field.to_string()),
                message: format!("nothing has this {field}: an {field} {}", invalid.rule),
            },
        )
    }

    /// 409 when the resource is not in a state that allows the request.
    pub fn conflict(code: ProblemCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, Problem::whole(code, message))
    }

    /// 409 naming the field that conflicts.
    pub fn conflict_field(field: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, Problem::field(field, message))
    }

    /// 503 while a dependency is down; the client should retry.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Problem::whole(ProblemCode::Unavailable, message),
        )
    }
}

impl ApiError {
    /// 503 `state_lost`: Redis lost Postline's state; nothing is accepted
    /// until an operator imports an export or declares a fresh start.
    pub fn state_lost() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Problem::whole(
                ProblemCode::StateLost,
                "Postline's state in Redis was lost; an operator must restore it (POST /v1/admin/import) or declare a fresh start (POST /v1/admin/reset-state); retry with the same ids later",
            ),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(id) => {
                Self::not_found(format!("subscription {id} does not exist"))
            }
            StoreError::AlreadyExists(id) => Self::new(
                StatusCode::CONFLICT,
                Problem::field("id", format!("subscription {id} already exists")),
            ),
            StoreError::Changed(id) => Self::conflict(
                ProblemCode::Changed,
                format!("subscription {id} changed while this update was checked; retry"),
            ),
            StoreError::Invalid(problem) => Self::invalid(problem),
            other => {
                tracing::error!(error = %other, "subscription store failed");
                Self::unavailable("subscription store unavailable")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.problem });
        if let Some((name, detail)) = self.detail {
            body[name] = detail;
        }
        (self.status, Json(body)).into_response()
    }
}
