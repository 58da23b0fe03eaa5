//! Sending one built request to a receiver and deciding, by the
//! subscription's success rule, whether the receiver took it.
//!
//! Delivery uses it for every event attempt and ingest for the PING it sends
//! before storing a created or updated subscription, so both judge a
//! receiver's answer the same way. (Building is [`crate::webhook`]; retrying
//! is delivery's call; a PING is never retried.)

use crate::subscription::SuccessRule;
use crate::webhook::WebhookRequest;
use std::time::{Duration, Instant};

/// Most bytes of a failing receiver's answer kept for the error message.
const ERROR_SNIPPET_BYTES: usize = 200;

/// Why an attempt did not deliver.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AttemptError {
    /// The receiver answered, but not with a success.
    #[error("receiver answered {status}: {snippet}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Start of the response body.
        snippet: String,
    },
    /// No answer within the subscription's timeout.
    #[error("receiver did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection could not be made or broke.
    #[error("connection failed: {0}")]
    Connection(String),
}

impl AttemptError {
    /// The receiver's status, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The result of one POST.
#[derive(Debug)]
pub struct Attempt {
    /// The status on success, or why it failed.
    pub result: Result<u16, AttemptError>,
    /// How long it took.
    pub duration: Duration,
}

/// Sends `request` once and classifies the answer.
pub async fn send(
    client: &reqwest::Client,
    request: &WebhookRequest,
    rule: SuccessRule,
) -> Attempt {
    let started = Instant::now();
    let result = match request.to_reqwest(client).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            // Reading the body lets the connection be reused.
            let body = response.bytes().await.unwrap_or_default();
            if rule.accepts(status) {
                Ok(status)
            } else {
                let end = body.len().min(ERROR_SNIPPET_BYTES);
                Err(AttemptError::Status {
                    status,
                    snippet: String::from_utf8_lossy(&body[..end]).into_owned(),
                })
            }
        }
        Err(error) if error.is_timeout() => Err(AttemptError::Timeout(request.timeout)),
        // The URL is left out: it may carry credentials or an API key.
        Err(error) => Err(AttemptError::Connection(error_chain(&error.without_url()))),
    };
    Attempt {
        result,
        duration: started.elapsed(),
    }
}

/// An error and its sources on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
