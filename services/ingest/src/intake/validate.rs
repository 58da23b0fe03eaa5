//! Turning one message body into an event, or the problem that stops it
//! (size limit first, then the envelope's own validation).

use postline_shared::model::problem::{Problem, ProblemCode};
use postline_shared::Envelope;

/// `body` as an event, if it is at most `limit` bytes and a valid envelope.
pub fn event(
    body: &[u8],
    limit: usize,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Envelope, Problem> {
    if body.len() > limit {
        return Err(too_large(body.len(), limit));
    }
    Envelope::from_input_bytes(body, now)
}

/// The problem of an event of `size` bytes over `limit`.
pub fn too_large(size: usize, limit: usize) -> Problem {
    Problem::whole(
        ProblemCode::TooLarge,
        format!("event is {size} bytes; the limit is {limit}"),
    )
}
