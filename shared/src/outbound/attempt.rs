//! One attempt to hand a receiver an event: build the request, authenticate
//! it (with a bearer token from the token service when the receiver needs
//! one), send it, and decide, by the subscription's success rule, whether the
//! receiver took it.
//!
//! Delivery uses it for every event attempt and ingest for the PING it sends
//! before storing a created or updated subscription, so a receiver sees the
//! same request, credentials included, from both, and both judge its answer
//! the same way. (Building is [`crate::outbound::webhook_request`], credentials [`crate::outbound::receiver_credentials`];
//! retrying is delivery's call; a PING is never retried.)

use crate::model::secret::Secret;
use crate::model::subscription::{Subscription, SuccessRule};
use crate::outbound::receiver_credentials as auth;
use crate::outbound::token_client::TokenClient;
use crate::outbound::webhook_request::WebhookRequest;
use crate::outbound::{NotAllowed, OutboundClient, SendError};
use crate::Envelope;
use std::time::{Duration, Instant};

/// Most bytes of a failing receiver's answer kept for the error message.
const ERROR_SNIPPET_BYTES: usize = 200;
/// Longest `Retry-After` value read (an HTTP date is 29 characters).
const MAX_RETRY_AFTER_LEN: usize = 64;

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
        /// The answer's `Retry-After` header, as sent (bounded).
        retry_after: Option<String>,
    },
    /// No answer within the subscription's timeout.
    #[error("receiver did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection could not be made or broke.
    #[error("connection failed: {0}")]
    Connection(String),
    /// The endpoint is an internal address; nothing was sent.
    #[error(transparent)]
    NotAllowed(#[from] NotAllowed),
    /// The receiver's bearer token could not be had (token service or the
    /// partner's token endpoint failed); nothing was sent.
    #[error("no token for the receiver: {0}")]
    Token(String),
}

impl AttemptError {
    /// The receiver's status, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The receiver's `Retry-After` header, when it answered with one.
    pub fn retry_after(&self) -> Option<&str> {
        match self {
            Self::Status { retry_after, .. } => retry_after.as_deref(),
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

/// Delivers `envelope` to `subscription` once: builds the request, applies
/// the receiver auth, sends it and classifies the answer. When a fetched
/// token is answered 401, the token is invalidated and the request sent once
/// more with a fresh one; only that second answer counts.
///
/// `staged` names a not yet stored version of the subscription (see
/// [`crate::redis::subscription_store::SubscriptionStore::stage`]) for the token service
/// to read the credentials from: a PING's; deliveries pass `None`.
pub async fn deliver(
    client: &OutboundClient,
    tokens: &TokenClient,
    subscription: &Subscription,
    envelope: &Envelope,
    staged: Option<&str>,
) -> Attempt {
    let started = Instant::now();
    let token = match tokens.token(subscription, staged).await {
        Ok(token) => token,
        Err(error) => {
            return Attempt {
                result: Err(AttemptError::Token(error.to_string())),
                duration: started.elapsed(),
            }
        }
    };
    let mut attempt = send_authenticated(client, subscription, envelope, token.as_ref()).await;
    if let (Some(rejected), Err(AttemptError::Status { status: 401, .. })) =
        (&token, &attempt.result)
    {
        tracing::info!(subscription = %subscription.id(), event_id = %envelope.id, "receiver answered 401; resending once with a fresh token");
        attempt = match tokens
            .refresh_after_rejection(subscription, rejected, staged)
            .await
        {
            Ok(fresh) => send_authenticated(client, subscription, envelope, Some(&fresh)).await,
            Err(error) => Attempt {
                result: Err(AttemptError::Token(format!(
                    "receiver answered 401 and no fresh token could be had: {error}"
                ))),
                duration: Duration::ZERO,
            },
        };
    }
    attempt.duration = started.elapsed();
    attempt
}

/// Builds the request with the receiver's credentials and sends it; a
/// receiver answer that echoes a credential has it redacted.
async fn send_authenticated(
    client: &OutboundClient,
    subscription: &Subscription,
    envelope: &Envelope,
    token: Option<&Secret>,
) -> Attempt {
    let started = Instant::now();
    let spec = &subscription.spec;
    let mut request = WebhookRequest::build(subscription, envelope, chrono::Utc::now().timestamp());
    request.auth = match auth::apply(&spec.auth, token) {
        Ok(applied) => applied,
        Err(error) => {
            return Attempt {
                result: Err(AttemptError::Token(error.to_string())),
                duration: started.elapsed(),
            }
        }
    };
    let mut attempt = send(client, &request, spec.success).await;
    if let Err(AttemptError::Status { snippet, .. }) = &mut attempt.result {
        let sent = request
            .auth
            .headers
            .iter()
            .chain(&request.auth.query)
            .map(|(_, value)| value.expose());
        let secrets = spec
            .auth
            .secret_values()
            .into_iter()
            .chain(token.map(Secret::expose))
            .chain(sent);
        *snippet = auth::redact(snippet, secrets);
    }
    attempt
}

/// Sends `request` once and classifies the answer.
pub async fn send(client: &OutboundClient, request: &WebhookRequest, rule: SuccessRule) -> Attempt {
    let started = Instant::now();
    let result = match client.send(request.to_reqwest(client)).await {
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .filter(|value| value.len() <= MAX_RETRY_AFTER_LEN)
                .map(str::to_string);
            // Reading the body lets the connection be reused; at most the
            // configured bound is read, a longer answer closes the connection.
            let body = client
                .read_body(response)
                .await
                .map(|body| body.bytes)
                .unwrap_or_default();
            if rule.accepts(status) {
                Ok(status)
            } else {
                let end = body.len().min(ERROR_SNIPPET_BYTES);
                Err(AttemptError::Status {
                    status,
                    snippet: String::from_utf8_lossy(&body[..end]).into_owned(),
                    retry_after,
                })
            }
        }
        Err(SendError::NotAllowed(refused)) => Err(AttemptError::NotAllowed(refused)),
        Err(SendError::Timeout) => Err(AttemptError::Timeout(request.timeout)),
        Err(SendError::Connection(reason)) => Err(AttemptError::Connection(reason)),
    };
    Attempt {
        result,
        duration: started.elapsed(),
    }
}
