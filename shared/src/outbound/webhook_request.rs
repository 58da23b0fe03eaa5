//! Building the HTTP request a receiver gets for one event: body by body
//! mode, Standard Webhooks and partner signatures, extra headers, and the
//! receiver's credentials (added by [`crate::outbound::receiver_credentials`], kept as secrets until sent).
//!
//! Building is pure (no I/O) so delivery and the PING check send exactly the
//! same request, and tests can check it without a network.

use crate::model::envelope::Envelope;
use crate::model::subscription::{BodyMode, Subscription};
use crate::outbound::receiver_credentials::AppliedAuth;
use crate::outbound::signing::{body_signature, standard_webhooks_signature};
use crate::outbound::OutboundClient;
use std::time::Duration;

/// `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("postline/", env!("CARGO_PKG_VERSION"));

/// A request ready to send.
#[derive(Debug, Clone)]
pub struct WebhookRequest {
    /// Target URL (without any API key: that is in `auth`).
    pub url: String,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// Receiver credentials, added to the headers and query when sent.
    pub auth: AppliedAuth,
    /// Exact body bytes (what the signatures cover).
    pub body: Vec<u8>,
    /// How long the receiver has to answer.
    pub timeout: Duration,
}

impl WebhookRequest {
    /// Builds the request for `envelope` to `subscription`, signed at `unix_time`.
    pub fn build(subscription: &Subscription, envelope: &Envelope, unix_time: i64) -> Self {
        let spec = &subscription.spec;
        let body = match spec.body {
            BodyMode::Envelope => envelope.to_wire(),
            BodyMode::Payload => envelope.payload.get().as_bytes().to_vec(),
        };
        let mut headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("user-agent".to_string(), USER_AGENT.to_string()),
        ];
        // Replaced secrets still in their rotation grace sign too, after the current ones.
        let signing = subscription.signing_secrets(chrono::Utc::now());
        if !signing.is_empty() {
            headers.push(("webhook-id".into(), envelope.id.to_string()));
            headers.push(("webhook-timestamp".into(), unix_time.to_string()));
            headers.push((
                "webhook-signature".into(),
                standard_webhooks_signature(signing, envelope.id.as_str(), unix_time, &body),
            ));
        }
        if let (Some(header), Some(secret)) = (&spec.signature_header, spec.secrets.first()) {
            if let Some(value) = body_signature(secret, &body, header.encoding) {
                headers.push((header.name.clone(), value));
            }
        }
        headers.extend(spec.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
        Self {
            url: spec.endpoint.clone(),
            headers,
            auth: AppliedAuth::default(),
            body,
            timeout: Duration::from_millis(spec.timeout_ms),
        }
    }

    /// Turns it into a request on the guarded `client`.
    pub fn to_reqwest(&self, client: &OutboundClient) -> reqwest::RequestBuilder {
        let mut request = client
            .post(&self.url)
            .timeout(self.timeout)
            .body(self.body.clone());
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        if !self.auth.query.is_empty() {
            let pairs: Vec<(&str, &str)> = self
                .auth
                .query
                .iter()
                .map(|(name, value)| (name.as_str(), value.expose()))
                .collect();
            request = request.query(&pairs);
        }
        for (name, value) in &self.auth.headers {
            let mut value = match reqwest::header::HeaderValue::from_str(value.expose()) {
                Ok(value) => value,
                // Validation refuses such values; skipping beats panicking on stored data.
                Err(_) => continue,
            };
            // Keeps the value out of reqwest's and hyper's own debug output.
            value.set_sensitive(true);
            request = request.header(name, value);
        }
        request
    }
}
