//! Encryption at rest: partner credentials, signing secrets and cached tokens
//! are sealed with AES-256-GCM before they reach Redis, so a dump of Redis
//! (or its AOF file) does not leak them.
//!
//! A sealed value is text: `enc:v1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>`.
//! The key id makes rotation possible: the current key seals, every key in the
//! ring (current and previous) opens. Each value is sealed for a context (e.g.
//! `sub:acme_us`) that is authenticated but not stored, so a sealed value
//! copied to another subscription or key does not open there.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD as BASE64URL};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;

/// Prefix of every sealed value (format version 1).
pub const SEALED_PREFIX: &str = "enc:v1:";
/// Key id of the built-in development key.
pub const DEV_KEY_ID: &str = "dev";
/// Length of a key in bytes (AES-256).
pub const KEY_BYTES: usize = 32;

const NONCE_BYTES: usize = 12;
const MAX_KEY_ID_LEN: usize = 32;

/// Why a key ring could not be built or a sealed value not opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncryptionError {
    /// A configured key is malformed (the message never contains key material).
    #[error("invalid encryption key: {0}")]
    InvalidKey(String),
    /// The value was sealed with a key id the ring does not hold.
    #[error("sealed with key {0:?}, which is not configured (POSTLINE_ENCRYPTION_KEY / POSTLINE_ENCRYPTION_OLD_KEYS)")]
    UnknownKey(String),
    /// The value is not in the sealed format.
    #[error("not a sealed value")]
    Malformed,
    /// Authentication failed: wrong key, wrong context, or tampered data.
    #[error("sealed with key {0:?} but does not open: wrong key material or tampered value")]
    Tampered(String),
}

/// One key: its id and its cipher.
struct RingKey {
    id: String,
    cipher: Aes256Gcm,
}

struct Inner {
    current: RingKey,
    previous: Vec<RingKey>,
    fingerprint_key: [u8; 32],
    development: bool,
}

/// The encryption keys of an installation: one current key that seals, and
/// previous keys that still open what they sealed. Cheap to clone.
#[derive(Clone)]
pub struct KeyRing {
    inner: Arc<Inner>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key ids only: the key material never appears in a log line.
        f.debug_struct("KeyRing")
            .field("current", &self.inner.current.id)
            .field(
                "previous",
                &self
                    .inner
                    .previous
                    .iter()
                    .map(|k| k.id.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// How a stored value was protected, as found when opening it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealing {
    /// Sealed with the current key.
    Current,
    /// Sealed with a previous key, or stored in clear by an older version:
    /// it should be sealed again with the current key.
    Stale,
}

impl KeyRing {
    /// A ring from the configuration text: `current` is `<id>:<base64 of 32
    /// bytes>`, `previous` a comma-separated list of the same (may be empty).
    /// The bare word `dev` names the built-in development key, so an
    /// installation can rotate away from it.
    pub fn from_config(current: &str, previous: &str) -> Result<Self, EncryptionError> {
        let development = current.trim() == DEV_KEY_ID;
        let (current, current_bytes) = parse_key(current)?;
        let mut old: Vec<RingKey> = Vec::new();
        for entry in previous.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (key, _) = parse_key(entry)?;
            if key.id == current.id || old.iter().any(|k| k.id == key.id) {
                return Err(EncryptionError::InvalidKey(format!(
                    "key id {:?} is configured twice",
                    key.id
                )));
            }
            old.push(key);
        }
        Ok(Self::build(current, &current_bytes, old, development))
    }

    /// The built-in development key: works out of the box for local runs and
    /// tests, and protects nothing (it is public). Never use it in production.
    pub fn development() -> Self {
        let (current, bytes) = development_key();
        Self::build(current, &bytes, Vec::new(), true)
    }

    fn build(
        current: RingKey,
        current_bytes: &[u8; KEY_BYTES],
        previous: Vec<RingKey>,
        development: bool,
    ) -> Self {
        // A key of its own for fingerprints, derived so the sealing key is never
        // used for two purposes.
        let fingerprint_key = hmac_sha256(current_bytes, &[b"postline fingerprint key v1"]);
        Self {
            inner: Arc::new(Inner {
                current,
                previous,
                fingerprint_key,
                development,
            }),
        }
    }

    /// Whether this is the built-in development key.
    pub fn is_development(&self) -> bool {
        self.inner.development
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> &str {
        &self.inner.current.id
    }

    /// Seals `plaintext` for `context` with the current key.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> String {
        let key = &self.inner.current;
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = associated_data(&key.id, context);
        // Encryption fails only for inputs beyond GCM's limit (64 GiB), far above
        // anything stored here; an empty ciphertext would then fail to open, loudly.
        let ciphertext = key
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        let mut raw = Vec::with_capacity(NONCE_BYTES + ciphertext.len());
        raw.extend_from_slice(nonce.as_slice());
        raw.extend_from_slice(&ciphertext);
        format!("{SEALED_PREFIX}{}:{}", key.id, BASE64URL.encode(raw))
    }

    /// Opens a value sealed for `context` by any key of the ring.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Vec<u8>, EncryptionError> {
        let rest = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or(EncryptionError::Malformed)?;
        let (id, encoded) = rest.split_once(':').ok_or(EncryptionError::Malformed)?;
        let key = self
            .key(id)
            .ok_or_else(|| EncryptionError::UnknownKey(id.to_string()))?;
        let raw = BASE64URL
            .decode(encoded)
            .map_err(|_| EncryptionError::Malformed)?;
        if raw.len() < NONCE_BYTES {
            return Err(EncryptionError::Malformed);
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_BYTES);
        let aad = associated_data(id, context);
        key.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| EncryptionError::Tampered(id.to_string()))
    }

    /// Opens a stored text value: sealed values are opened; a value without
    /// the sealed prefix was stored in clear by an older version and is taken
    /// as is (and reported [`Sealing::Stale`] so it gets sealed again).
    pub fn open_text(
        &self,
        stored: &str,
        context: &str,
    ) -> Result<(String, Sealing), EncryptionError> {
        if !stored.starts_with(SEALED_PREFIX) {
            return Ok((stored.to_string(), Sealing::Stale));
        }
        let plaintext = self.open(stored, context)?;
        let text = String::from_utf8(plaintext).map_err(|_| EncryptionError::Malformed)?;
        let sealing = if sealed_key_id(stored) == Some(self.current_id()) {
            Sealing::Current
        } else {
            Sealing::Stale
        };
        Ok((text, sealing))
    }

    /// A stable, non-reversible name for `data` (hex HMAC-SHA256 with a key
    /// derived from the current key): a Redis key can be derived from
    /// credentials without holding them in clear.
    pub fn fingerprint(&self, data: &[u8]) -> String {
        crate::outbound::signing::hex(&hmac_sha256(&self.inner.fingerprint_key, &[data]))
    }

    fn key(&self, id: &str) -> Option<&RingKey> {
        std::iter::once(&self.inner.current)
            .chain(&self.inner.previous)
            .find(|k| k.id == id)
    }
}

/// The key id a sealed value names, `None` when it is not sealed.
pub fn sealed_key_id(stored: &str) -> Option<&str> {
    stored
        .strip_prefix(SEALED_PREFIX)?
        .split_once(':')
        .map(|(id, _)| id)
}

fn associated_data(key_id: &str, context: &str) -> Vec<u8> {
    format!("postline:{key_id}:{context}").into_bytes()
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("any key length"));
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn development_key() -> (RingKey, [u8; KEY_BYTES]) {
    let bytes: [u8; KEY_BYTES] =
        Sha256::digest(b"postline development key: not for production").into();
    let key = RingKey {
        id: DEV_KEY_ID.to_string(),
        cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)),
    };
    (key, bytes)
}

fn parse_key(entry: &str) -> Result<(RingKey, [u8; KEY_BYTES]), EncryptionError> {
    if entry.trim() == DEV_KEY_ID {
        return Ok(development_key());
    }
    let (id, encoded) = entry.trim().split_once(':').ok_or_else(|| {
        EncryptionError::InvalidKey("expected <key id>:<base64 of 32 random bytes>".into())
    })?;
    let id_ok = !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !id_ok {
        return Err(EncryptionError::InvalidKey(format!(
            "key id must be 1 to {MAX_KEY_ID_LEN} of letters, digits, _ and -"
        )));
    }
    let bytes = BASE64
        .decode(encoded.trim())
        .or_else(|_| BASE64URL.decode(encoded.trim()))
        .map_err(|_| EncryptionError::InvalidKey(format!("key {id:?} is not valid base64")))?;
    let bytes: [u8; KEY_BYTES] = bytes.try_into().map_err(|wrong: Vec<u8>| {
        EncryptionError::InvalidKey(format!(
            "key {id:?} is {} bytes; it must be {KEY_BYTES} (e.g. `openssl rand -base64 32`)",
            wrong.len()
        ))
    })?;
    let key = RingKey {
        id: id.to_string(),
        cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)),
    };
    Ok((key, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, byte: u8) -> String {
        format!("{id}:{}", BASE64.encode([byte; KEY_BYTES]))
    }

    #[test]
    fn seals_and_opens_in_context() {
        let ring = KeyRing::from_config(&key("k1", 7), "").unwrap();
        let sealed = ring.seal(b"client-secret-123", "sub:a");
        assert!(sealed.starts_with("enc:v1:k1:"), "{sealed}");
        assert!(!sealed.contains("client-secret-123"));
        assert_eq!(ring.open(&sealed, "sub:a").unwrap(), b"client-secret-123");
        assert_eq!(
            ring.open(&sealed, "sub:b"),
            Err(EncryptionError::Tampered("k1".into())),
            "a value moved to another context does not open"
        );
        assert_ne!(
            ring.seal(b"x", "c"),
            ring.seal(b"x", "c"),
            "fresh nonce each time"
        );
    }

    #[test]
    fn rotation_opens_old_values_and_reports_them_stale() {
        let old = KeyRing::from_config(&key("k1", 1), "").unwrap();
        let sealed_old = old.seal(b"s3cret", "ctx");
        let rotated = KeyRing::from_config(&key("k2", 2), &key("k1", 1)).unwrap();
        assert_eq!(
            rotated.open_text(&sealed_old, "ctx").unwrap(),
            ("s3cret".to_string(), Sealing::Stale)
        );
        let sealed_new = rotated.seal(b"s3cret", "ctx");
        assert_eq!(sealed_key_id(&sealed_new), Some("k2"));
        assert_eq!(
            rotated.open_text(&sealed_new, "ctx").unwrap().1,
            Sealing::Current
        );
        assert_eq!(
            old.open(&sealed_new, "ctx"),
            Err(EncryptionError::UnknownKey("k2".into()))
        );
        assert_eq!(
            rotated.open_text("legacy-clear", "ctx").unwrap(),
            ("legacy-clear".to_string(), Sealing::Stale)
        );
    }

    #[test]
    fn wrong_key_material_under_the_same_id_does_not_open() {
        let a = KeyRing::from_config(&key("k1", 1), "").unwrap();
        let b = KeyRing::from_config(&key("k1", 9), "").unwrap();
        assert_eq!(
            b.open(&a.seal(b"x", "c"), "c"),
            Err(EncryptionError::Tampered("k1".into()))
        );
    }

    #[test]
    fn refuses_bad_keys_without_echoing_them() {
        let short = format!("k1:{}", BASE64.encode([3u8; 16]));
        let cases = [
            "no-colon".to_string(),
            ":AAAA".to_string(),
            "bad id:AAAA".to_string(),
            "k1:!!!not-base64".to_string(),
            short,
        ];
        for case in cases {
            let error = KeyRing::from_config(&case, "").unwrap_err();
            let shown = error.to_string();
            if let Some((_, material)) = case.split_once(':') {
                if !material.is_empty() {
                    assert!(!shown.contains(material), "{shown}");
                }
            }
        }
        assert!(KeyRing::from_config(&key("k1", 1), &key("k1", 2)).is_err());
    }

    #[test]
    fn debug_shows_ids_only_and_fingerprints_are_stable() {
        let ring = KeyRing::from_config(&key("k2", 5), &key("k1", 6)).unwrap();
        let shown = format!("{ring:?}");
        assert!(shown.contains("k2") && shown.contains("k1"), "{shown}");
        assert!(!shown.contains(&BASE64.encode([5u8; KEY_BYTES])));
        assert_eq!(ring.fingerprint(b"abc"), ring.fingerprint(b"abc"));
        assert_ne!(ring.fingerprint(b"abc"), ring.fingerprint(b"abd"));
        assert_eq!(ring.fingerprint(b"abc").len(), 64);
        assert!(KeyRing::development().is_development());
    }

    #[test]
    fn can_rotate_away_from_the_development_key() {
        let sealed = KeyRing::development().seal(b"from-dev-runs", "c");
        let ring = KeyRing::from_config(&key("prod1", 4), "dev").unwrap();
        assert!(!ring.is_development());
        assert_eq!(
            ring.open_text(&sealed, "c").unwrap(),
            ("from-dev-runs".to_string(), Sealing::Stale)
        );
    }
}
