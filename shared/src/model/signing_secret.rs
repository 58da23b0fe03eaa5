//! What a signing secret stands for: a secret written `whsec_<base64>` (the
//! Standard Webhooks form) is the key bytes it decodes to; any other secret is
//! its UTF-8 bytes. Validation of a subscription and the signer in
//! [`crate::outbound::signing`] both read secrets through [`key_bytes`].

use crate::model::secret::Secret;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

/// Prefix of Standard Webhooks secrets.
pub const WHSEC_PREFIX: &str = "whsec_";

/// The HMAC key bytes of a secret, rejecting empty secrets and malformed
/// `whsec_` values (the message says which).
pub fn key_bytes(secret: &Secret) -> Result<Vec<u8>, String> {
    let text = secret.expose();
    let bytes = match text.strip_prefix(WHSEC_PREFIX) {
        Some(encoded) => BASE64
            .decode(encoded)
            .map_err(|_| "a whsec_ secret must be base64 after the prefix".to_string())?,
        None => text.as_bytes().to_vec(),
    };
    if bytes.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(bytes)
}
