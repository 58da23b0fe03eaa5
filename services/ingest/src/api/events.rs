//! `POST /v1/events` and `POST /v1/events/batch`: validate, hand the events
//! to the intake pipeline (`crate::intake`), and answer 202 only after the
//! broker confirmed every copy and the ids were remembered.

use super::auth::ProducerToken;
use super::{ApiError, ApiState};
use crate::intake::http::Refused;
use crate::intake::{validate, Accepted};
use axum::body::{to_bytes, Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use postline_shared::model::ids::EventId;
use postline_shared::model::problem::{parse_json, Problem, ProblemCode};
use postline_shared::Envelope;
use serde_json::value::RawValue;

/// One event.
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "events",
    request_body = postline_shared::model::envelope::IncomingEvent,
    responses(
        (status = 202, description = "Accepted, after the broker confirmed every copy", body = super::openapi::Accepted),
        super::error_responses::TokenErrors, super::error_responses::BadInput, super::error_responses::TooLarge
    ),
    security(("producer_token" = []))
)]
pub async fn post_one(
    State(state): State<ApiState>,
    _: ProducerToken,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_limited(&state, body, state.max_event_bytes).await?;
    let envelope =
        Envelope::from_input_bytes(&bytes, chrono::Utc::now()).map_err(|p| reject(&state, p))?;
    accept(&state, vec![envelope]).await
}

/// An array of events, validated all-or-nothing before anything is published.
#[utoipa::path(
    post,
    path = "/v1/events/batch",
    tag = "events",
    request_body(content = Vec<postline_shared::model::envelope::IncomingEvent>, description = "1 to 1,000 events, validated whole before any is published"),
    responses(
        (status = 202, description = "Accepted, after the broker confirmed every copy", body = super::openapi::Accepted),
        super::error_responses::TokenErrors, super::error_responses::BadInput, super::error_responses::TooLarge
    ),
    security(("producer_token" = []))
)]
pub async fn post_batch(
    State(state): State<ApiState>,
    _: ProducerToken,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_limited(&state, body, state.max_batch_bytes).await?;
    let raw_events: Vec<Box<RawValue>> = parse_json(&bytes).map_err(|p| reject(&state, p))?;
    if raw_events.is_empty() || raw_events.len() > state.max_batch_events {
        return Err(reject(
            &state,
            Problem::whole(
                ProblemCode::InvalidBatch,
                format!("a batch holds 1 to {} events", state.max_batch_events),
            ),
        ));
    }
    let now = chrono::Utc::now();
    let mut envelopes = Vec::with_capacity(raw_events.len());
    for (i, raw) in raw_events.iter().enumerate() {
        let envelope = validate::event(raw.get().as_bytes(), state.max_event_bytes, now)
            .map_err(|p| reject(&state, p.within(&format!("[{i}]"))))?;
        envelopes.push(envelope);
    }
    accept(&state, envelopes).await
}

/// Runs `envelopes` through the intake pipeline (batched with whatever
/// other requests are waiting) and answers 202 with every id, naming those
/// accepted before.
async fn accept(state: &ApiState, envelopes: Vec<Envelope>) -> Result<Response, ApiError> {
    let ids: Vec<EventId> = envelopes.iter().map(|e| e.id.clone()).collect();
    let fates = state
        .intake
        .accept(envelopes)
        .await
        .map_err(|refused| match refused {
            Refused::Unavailable(message) => ApiError::unavailable(message),
            Refused::StateLost => ApiError::state_lost(),
        })?;
    let duplicates: Vec<&EventId> = ids
        .iter()
        .zip(&fates)
        .filter(|(_, fate)| **fate == Accepted::Duplicate)
        .map(|(id, _)| id)
        .collect();
    // Safe to answer 202: the pipeline answered only once every copy was
    // confirmed by the broker and every new id remembered.
    let body = serde_json::json!({ "ids": ids, "duplicates": duplicates });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

async fn read_limited(state: &ApiState, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    // to_bytes fails only on a body over the limit or a broken connection;
    // the latter has no one left to read the answer.
    to_bytes(body, limit)
        .await
        .map_err(|_| reject(state, too_large_unknown(limit)))
}

fn too_large_unknown(limit: usize) -> Problem {
    Problem::whole(
        ProblemCode::TooLarge,
        format!("request body exceeds the limit of {limit} bytes"),
    )
}

fn reject(state: &ApiState, problem: Problem) -> ApiError {
    state
        .metrics
        .rejected
        .with_label_values(&["http", problem.code.as_str()])
        .inc();
    ApiError::invalid(problem)
}
