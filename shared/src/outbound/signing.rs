//! Request signatures: Standard Webhooks (`webhook-signature: v1,<base64>` over
//! `id.timestamp.body`) and partner headers (hex or base64 HMAC-SHA256 of the body).
//!
//! A secret written `whsec_<base64>` (the Standard Webhooks form) signs with
//! its decoded bytes; any other secret signs with its UTF-8 bytes.

use crate::model::secret::Secret;
use crate::model::signing_secret;
use crate::model::subscription::SignatureEncoding;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// HMAC key bytes derived from a secret.
pub struct SigningKey(Vec<u8>);

impl SigningKey {
    /// Derives the key, rejecting empty secrets and malformed `whsec_` values.
    pub fn from_secret(secret: &Secret) -> Result<Self, String> {
        signing_secret::key_bytes(secret).map(Self)
    }

    fn mac(&self, parts: &[&[u8]]) -> Vec<u8> {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = HmacSha256::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!());
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().to_vec()
    }
}

/// The `webhook-signature` value: one `v1,<base64>` per secret, space-separated.
pub fn standard_webhooks_signature<'a>(
    secrets: impl IntoIterator<Item = &'a Secret>,
    message_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    let timestamp = timestamp.to_string();
    secrets
        .into_iter()
        .filter_map(|secret| SigningKey::from_secret(secret).ok())
        .map(|key| {
            let digest = key.mac(&[
                message_id.as_bytes(),
                b".",
                timestamp.as_bytes(),
                b".",
                body,
            ]);
            format!("v1,{}", BASE64.encode(digest))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A partner signature header value: HMAC-SHA256 of the raw body.
pub fn body_signature(secret: &Secret, body: &[u8], encoding: SignatureEncoding) -> Option<String> {
    let digest = SigningKey::from_secret(secret).ok()?.mac(&[body]);
    Some(match encoding {
        SignatureEncoding::Hex => hex(&digest),
        SignatureEncoding::Base64 => BASE64.encode(digest),
    })
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_reference_vector() {
        // The example from the Standard Webhooks specification's test suite.
        let secret = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let body = br#"{"test": 2432232314}"#;
        let signature = standard_webhooks_signature(
            &[secret],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            body,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn rotation_signs_with_every_secret() {
        let secrets = [Secret::new("one"), Secret::new("two")];
        let signature = standard_webhooks_signature(&secrets, "id", 1, b"{}");
        assert_eq!(signature.split(' ').count(), 2);
    }

    #[test]
    fn body_signature_encodings() {
        let secret = Secret::new("key");
        let hex = body_signature(
            &secret,
            b"The quick brown fox jumps over the lazy dog",
            SignatureEncoding::Hex,
        );
        // RFC 4231-style known value for HMAC-SHA256("key", pangram).
        assert_eq!(
            hex.as_deref(),
            Some("f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8")
        );
        let b64 = body_signature(&secret, b"x", SignatureEncoding::Base64).unwrap();
        assert_eq!(BASE64.decode(b64).unwrap().len(), 32);
    }

    #[test]
    fn rejects_bad_secrets() {
        assert!(SigningKey::from_secret(&Secret::new("")).is_err());
        assert!(SigningKey::from_secret(&Secret::new("whsec_!!!")).is_err());
    }
}
