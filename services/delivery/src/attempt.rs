//! One delivery attempt: the event's request for the subscription as it is
//! now, with its receiver auth, sent once and classified by the success rule.
//! The work lives in `postline_shared::outbound::attempt`, so the PING that ingest sends
//! on create and update reaches the receiver, and is judged, exactly the same way.

pub use postline_shared::outbound::attempt::{send, Attempt, AttemptError};

use postline_shared::model::subscription::Subscription;
use postline_shared::outbound::token_client::TokenClient;
use postline_shared::Envelope;

/// Delivers `envelope` to the stored `subscription` once (a 401 to a fetched
/// token is resent once with a fresh token).
pub async fn deliver(
    client: &postline_shared::outbound::OutboundClient,
    tokens: &TokenClient,
    subscription: &Subscription,
    envelope: &Envelope,
) -> Attempt {
    postline_shared::outbound::attempt::deliver(client, tokens, subscription, envelope, None).await
}
