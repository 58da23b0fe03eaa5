//! One delivery attempt: build the event's request for the subscription as it
//! is now, send it once and classify the answer by the subscription's success
//! rule. Sending and classifying live in `postline_shared::attempt`, so the
//! PING that ingest sends on create and update is judged exactly the same way.

pub use postline_shared::attempt::{send, Attempt, AttemptError};

use chrono::Utc;
use postline_shared::subscription::Subscription;
use postline_shared::webhook::WebhookRequest;
use postline_shared::Envelope;

/// Delivers `envelope` to `subscription` once, signed now.
pub async fn deliver(
    client: &reqwest::Client,
    subscription: &Subscription,
    envelope: &Envelope,
) -> Attempt {
    let request = WebhookRequest::build(subscription, envelope, Utc::now().timestamp());
    send(client, &request, subscription.spec.success).await
}
