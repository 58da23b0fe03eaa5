//! Independent signature checks, written on the `hmac` and `sha2` crates
//! (never on Postline's signing module): Standard Webhooks and raw-body
//! HMAC-SHA256 headers, as a partner's receiver would verify them.

use crate::receiver::Recorded;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::BTreeSet;

/// HMAC-SHA256 of the concatenated `parts` under `key`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// The HMAC key of a secret: the base64-decoded part of a `whsec_` secret,
/// the UTF-8 bytes of any other.
pub fn key_of(secret: &str) -> Vec<u8> {
    match secret.strip_prefix("whsec_") {
        Some(encoded) => BASE64.decode(encoded).expect("whsec_ secret is base64"),
        None => secret.as_bytes().to_vec(),
    }
}

/// A new random Standard Webhooks secret (`whsec_` + base64 of 24 random bytes).
pub fn new_whsec() -> String {
    let mut bytes = Vec::with_capacity(32);
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes.extend_from_slice(&uuid::Uuid::new_v4().as_bytes()[..8]);
    format!("whsec_{}", BASE64.encode(bytes))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `v1,<base64>` signature Standard Webhooks expects for one secret.
pub fn standard_webhooks_v1(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let digest = hmac_sha256(
        &key_of(secret),
        &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
    );
    format!("v1,{}", BASE64.encode(digest))
}

/// The hex HMAC-SHA256 of `body` under `secret`.
pub fn body_hex(secret: &str, body: &[u8]) -> String {
    hex(&hmac_sha256(&key_of(secret), &[body]))
}

/// The base64 HMAC-SHA256 of `body` under `secret`.
pub fn body_base64(secret: &str, body: &[u8]) -> String {
    BASE64.encode(hmac_sha256(&key_of(secret), &[body]))
}

/// Asserts the Standard Webhooks headers of `request` verify under exactly `secrets`.
pub fn assert_standard_webhooks(request: &Recorded, event_id: &str, secrets: &[&str]) {
    assert_eq!(request.header("webhook-id"), Some(event_id), "webhook-id");
    let timestamp = request
        .header("webhook-timestamp")
        .expect("webhook-timestamp header");
    let sent_at: i64 = timestamp
        .parse()
        .expect("webhook-timestamp is unix seconds");
    let now = chrono::Utc::now().timestamp();
    assert!(
        (now - sent_at).abs() < 300,
        "webhook-timestamp {sent_at} is not close to now ({now})"
    );
    let signature = request
        .header("webhook-signature")
        .expect("webhook-signature header");
    let got: BTreeSet<&str> = signature.split(' ').collect();
    let want: Vec<String> = secrets
        .iter()
        .map(|secret| standard_webhooks_v1(secret, event_id, timestamp, &request.body))
        .collect();
    let want: BTreeSet<&str> = want.iter().map(String::as_str).collect();
    assert_eq!(
        got, want,
        "webhook-signature must hold one valid v1 signature per secret"
    );
    assert_eq!(
        signature.split(' ').count(),
        secrets.len(),
        "one signature per secret: {signature}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        let signature = standard_webhooks_v1(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn matches_a_known_hmac() {
        assert_eq!(
            body_hex("key", b"The quick brown fox jumps over the lazy dog"),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }
}
