//! `POST /v1/events` and `POST /v1/events/batch`: validate, fan out, and
//! answer 202 only after the broker confirmed every copy.

use super::auth::ProducerToken;
use super::{ApiError, ApiState};
use crate::fanout::{Accepted, FanoutError, Source};
use axum::body::{to_bytes, Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
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
    publish_all(&state, vec![envelope]).await
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
        let position = format!("[{i}]");
        if raw.get().len() > state.max_event_bytes {
            return Err(reject(
                &state,
                too_large(raw.get().len(), state.max_event_bytes).within(&position),
            ));
        }
        let envelope = Envelope::from_input_bytes(raw.get().as_bytes(), now)
            .map_err(|p| reject(&state, p.within(&position)))?;
        envelopes.push(envelope);
    }
    publish_all(&state, envelopes).await
}

async fn publish_all(state: &ApiState, envelopes: Vec<Envelope>) -> Result<Response, ApiError> {
    let publisher = super::broker(state)?.publisher;
    let mut ids = Vec::with_capacity(envelopes.len());
    let mut duplicates = Vec::new();
    for envelope in envelopes {
        match state
            .fanout
            .accept(&publisher, &envelope, Source::Http)
            .await
        {
            Ok(Accepted::Published(copies)) => {
                tracing::debug!(event_id = %envelope.id, copies, "event accepted over HTTP");
            }
            Ok(Accepted::Duplicate) => duplicates.push(envelope.id.clone()),
            Err(error) => {
                tracing::warn!(%error, event_id = %envelope.id, "event not accepted");
                let message = match error {
                    FanoutError::Publish(_) => "broker did not confirm; retry with the same ids",
                    FanoutError::Redis(_) => "redis unavailable; retry with the same ids",
                    FanoutError::StateLost => return Err(ApiError::state_lost()),
                };
                return Err(ApiError::unavailable(message));
            }
        }
        ids.push(envelope.id);
    }
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

fn too_large(size: usize, limit: usize) -> Problem {
    Problem::whole(
        ProblemCode::TooLarge,
        format!("event is {size} bytes; the limit is {limit}"),
    )
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
