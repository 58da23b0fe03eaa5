//! API errors: a status code and a JSON body `{"error": {code, field?, message}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use postline_shared::problem::Problem;
use postline_shared::subscription::StoreError;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    problem: Problem,
}

impl ApiError {
    /// 400 (or 413 for `too_large`) for bad input.
    pub fn invalid(problem: Problem) -> Self {
        let status = if problem.code == "too_large" {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        };
        Self { status, problem }
    }

    /// 401 for a missing or wrong token.
    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            problem: Problem::whole("unauthorized", "missing or invalid bearer token"),
        }
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            problem: Problem::whole("not_found", message),
        }
    }

    /// 409 when the resource is not in a state that allows the request.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::CONFLICT,
            problem: Problem::whole(code, message),
        }
    }

    /// 503 while a dependency is down; the client should retry.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            problem: Problem::whole("unavailable", message),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(id) => {
                Self::not_found(format!("subscription {id} does not exist"))
            }
            StoreError::AlreadyExists(id) => Self {
                status: StatusCode::CONFLICT,
                problem: Problem::field("id", format!("subscription {id} already exists")),
            },
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
        (
            self.status,
            Json(serde_json::json!({ "error": self.problem })),
        )
            .into_response()
    }
}
