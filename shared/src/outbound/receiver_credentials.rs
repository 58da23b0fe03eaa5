//! Applying a subscription's receiver authentication to a request: turns
//! [`ReceiverAuth`] (and, for the token modes, a bearer token fetched by the
//! token service) into the headers and query parameters to send.
//!
//! Delivery and the PING check use this same code, so a receiver sees the
//! same credentials from both. The values stay [`Secret`]s until the request
//! is handed to reqwest, so a `Debug` of a built request shows none of them.

use crate::model::secret::Secret;
use crate::model::subscription::{ApiKeyLocation, ReceiverAuth};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

/// What to replace a credential with in text that may echo it.
pub const REDACTED: &str = "<redacted>";

/// The credentials a request carries: headers and query parameters whose
/// values are secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedAuth {
    /// Headers, e.g. `("authorization", "Bearer …")`.
    pub headers: Vec<(String, Secret)>,
    /// Query parameters added to the endpoint URL.
    pub query: Vec<(String, Secret)>,
}

/// A token mode was applied without a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("receiver auth mode {0} needs a bearer token, and none was given")]
pub struct MissingToken(pub &'static str);

/// The credentials `auth` puts on a request; `token` is the bearer token of
/// the token modes (ignored by the others).
pub fn apply(auth: &ReceiverAuth, token: Option<&Secret>) -> Result<AppliedAuth, MissingToken> {
    let mut applied = AppliedAuth::default();
    match auth {
        ReceiverAuth::None => {}
        ReceiverAuth::ApiKey {
            name,
            location,
            key,
        } => match location {
            ApiKeyLocation::Header => applied.headers.push((name.clone(), key.clone())),
            ApiKeyLocation::Query => applied.query.push((name.clone(), key.clone())),
        },
        ReceiverAuth::Basic { username, password } => {
            let pair = format!("{username}:{}", password.expose());
            applied.headers.push((
                "authorization".into(),
                Secret::new(format!("Basic {}", BASE64.encode(pair))),
            ));
        }
        ReceiverAuth::Bearer { token } => applied.headers.push(bearer(token)),
        ReceiverAuth::Oauth2ClientCredentials(_) | ReceiverAuth::TokenServer(_) => {
            let token = token.ok_or(MissingToken(auth.mode()))?;
            applied.headers.push(bearer(token));
        }
    }
    Ok(applied)
}

fn bearer(token: &Secret) -> (String, Secret) {
    (
        "authorization".into(),
        Secret::new(format!("Bearer {}", token.expose())),
    )
}

/// `text` with every occurrence of each non-empty value of `secrets` replaced
/// by [`REDACTED`]: for receiver answers and errors that could echo a credential.
pub fn redact<'a>(text: &str, secrets: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = text.to_string();
    for secret in secrets {
        // Very short values would redact innocent text and protect little.
        if secret.len() >= 4 && out.contains(secret) {
            out = out.replace(secret, REDACTED);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(json: &str) -> ReceiverAuth {
        serde_json::from_str(json).unwrap()
    }

    fn shown(applied: &AppliedAuth) -> Vec<(String, String, bool)> {
        let mut all: Vec<_> = applied
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_string(), true))
            .collect();
        all.extend(
            applied
                .query
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_string(), false)),
        );
        all
    }

    #[test]
    fn each_mode_sends_exactly_its_credential() {
        let token = Secret::new("tok-123");
        let cases = [
            (r#"{"mode":"none"}"#, vec![]),
            (
                r#"{"mode":"api_key","name":"X-Transfocus-Api-Key","key":"k1"}"#,
                vec![("X-Transfocus-Api-Key", "k1", true)],
            ),
            (
                r#"{"mode":"api_key","name":"apikey","in":"query","key":"k1"}"#,
                vec![("apikey", "k1", false)],
            ),
            (
                r#"{"mode":"basic","username":"Aladdin","password":"open sesame"}"#,
                vec![("authorization", "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==", true)],
            ),
            (
                r#"{"mode":"bearer","token":"static-1"}"#,
                vec![("authorization", "Bearer static-1", true)],
            ),
            (
                r#"{"mode":"oauth2_client_credentials","token_url":"https://a/","client_id":"c","client_secret":"s"}"#,
                vec![("authorization", "Bearer tok-123", true)],
            ),
            (
                r#"{"mode":"token_server","token_url":"https://a/","username":"u","password":"p"}"#,
                vec![("authorization", "Bearer tok-123", true)],
            ),
        ];
        for (json, want) in cases {
            let applied = apply(&auth(json), Some(&token)).unwrap();
            let want: Vec<_> = want
                .into_iter()
                .map(|(k, v, h)| (k.to_string(), v.to_string(), h))
                .collect();
            assert_eq!(shown(&applied), want, "{json}");
            assert!(!format!("{applied:?}").contains("tok-123"));
        }
    }

    #[test]
    fn token_modes_need_a_token() {
        let oauth = auth(
            r#"{"mode":"token_server","token_url":"https://a/","username":"u","password":"p"}"#,
        );
        assert_eq!(apply(&oauth, None), Err(MissingToken("token_server")));
    }

    #[test]
    fn redacts_echoed_credentials() {
        assert_eq!(
            redact("bad key abcd-1234 given", ["abcd-1234", ""]),
            "bad key <redacted> given"
        );
        assert_eq!(redact("a b c", ["a"]), "a b c", "too short to redact");
    }
}
