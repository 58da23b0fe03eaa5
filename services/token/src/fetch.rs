//! Calling a partner's token endpoint: OAuth2 client credentials, OAuth2
//! password grant, or a plain JSON login, and reading the token and its
//! lifetime from the answer.
//!
//! Errors say what went wrong without repeating what the partner sent back:
//! an error body may echo the credentials, so only a well-formed OAuth2
//! `error` code is kept from it.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use postline_shared::model::secret::Secret;
use postline_shared::model::subscription::{
    ClientAuth, ClientCredentials, ReceiverAuth, TokenFields, TokenServer, TokenServerFormat,
};
use postline_shared::outbound::{error_chain, OutboundClient, SendError};
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Why a token could not be fetched. Serializable, so a failed refresh can be
/// handed to the processes that waited on it through Redis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FetchError {
    /// No connection could be made, or it broke.
    #[error("token endpoint unreachable: {reason}")]
    Unreachable {
        /// The transport error (without the URL).
        reason: String,
    },
    /// The token endpoint is an internal address; nothing was sent.
    #[error("token endpoint not allowed: {reason}")]
    NotAllowed {
        /// The refusal (the address and its range).
        reason: String,
    },
    /// No answer in time.
    #[error("token endpoint did not answer within {ms} ms")]
    Timeout {
        /// The timeout.
        ms: u64,
    },
    /// The endpoint answered with a non-2xx status.
    #[error("token endpoint answered {status}{}", code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Refused {
        /// HTTP status.
        status: u16,
        /// The OAuth2 `error` code, when the answer carried a well-formed one.
        code: Option<String>,
    },
    /// A 2xx answer without a usable token.
    #[error("token endpoint answer unusable: {reason}")]
    InvalidResponse {
        /// What was wrong (never the body itself).
        reason: String,
    },
}

impl FetchError {
    /// The metrics label of this failure.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "unreachable",
            Self::NotAllowed { .. } => "not_allowed",
            Self::Timeout { .. } => "timeout",
            Self::Refused { .. } => "refused",
            Self::InvalidResponse { .. } => "invalid_response",
        }
    }
}

/// A token as the partner issued it.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The token.
    pub token: Secret,
    /// Its lifetime from the moment the request was sent.
    pub lifetime: Duration,
}

/// Fetches a token for `auth` (a token mode), waiting at most `timeout`.
pub async fn fetch(
    http: &OutboundClient,
    auth: &ReceiverAuth,
    timeout: Duration,
) -> Result<Fetched, FetchError> {
    let (request, fields) = match (auth, auth.token_fields()) {
        (ReceiverAuth::Oauth2ClientCredentials(c), Some(fields)) => {
            (client_credentials(http, c), fields)
        }
        (ReceiverAuth::TokenServer(t), Some(fields)) => (token_server(http, t), fields),
        _ => {
            return Err(FetchError::InvalidResponse {
                reason: format!("auth mode {} has no token endpoint", auth.mode()),
            })
        }
    };
    let response = http
        .send(request.header(ACCEPT, "application/json").timeout(timeout))
        .await
        .map_err(|e| transport_error(e, timeout))?;
    let status = response.status();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .chars()
        .take(64)
        .collect::<String>();
    let body = http
        .read_body(response)
        .await
        .map_err(|e| read_error(e, timeout))?;
    let body = (!body.truncated).then_some(body.bytes);
    if !status.is_success() {
        return Err(FetchError::Refused {
            status: status.as_u16(),
            code: oauth_error_code(&body),
        });
    }
    let Some(body) = body else {
        return Err(FetchError::InvalidResponse {
            reason: "answer is larger than POSTLINE_MAX_RESPONSE_BYTES".into(),
        });
    };
    parse_answer(&body, &content_type, &fields)
}

fn client_credentials(http: &OutboundClient, c: &ClientCredentials) -> reqwest::RequestBuilder {
    let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
    form.extend(c.scope.as_deref().map(|s| ("scope", s)));
    form.extend(c.audience.as_deref().map(|a| ("audience", a)));
    form.extend(c.extra_params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let request = http.post(&c.token_url);
    with_client_auth(
        request,
        form,
        c.client_auth,
        Some(&c.client_id),
        Some(&c.client_secret),
    )
}

fn token_server(http: &OutboundClient, t: &TokenServer) -> reqwest::RequestBuilder {
    let request = http.post(&t.token_url);
    match t.format {
        TokenServerFormat::Json => {
            let mut body = serde_json::Map::new();
            for (name, value) in &t.extra_params {
                body.insert(name.clone(), value.clone().into());
            }
            body.insert("username".into(), t.username.clone().into());
            body.insert("password".into(), t.password.expose().into());
            request.json(&body)
        }
        TokenServerFormat::PasswordGrant => {
            let mut form: Vec<(&str, &str)> = vec![
                ("grant_type", "password"),
                ("username", &t.username),
                ("password", t.password.expose()),
            ];
            form.extend(t.scope.as_deref().map(|s| ("scope", s)));
            form.extend(t.extra_params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            with_client_auth(
                request,
                form,
                t.client_auth,
                t.client_id.as_ref(),
                t.client_secret.as_ref(),
            )
        }
    }
}

/// Adds OAuth2 client authentication (RFC 6749 §2.3.1) and the form body.
fn with_client_auth<'a>(
    request: reqwest::RequestBuilder,
    mut form: Vec<(&'a str, &'a str)>,
    how: ClientAuth,
    client_id: Option<&'a String>,
    client_secret: Option<&'a Secret>,
) -> reqwest::RequestBuilder {
    let Some(client_id) = client_id else {
        return request.form(&form);
    };
    match how {
        ClientAuth::Basic => {
            // The RFC form-encodes both parts before Base64.
            let encode =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let pair = format!(
                "{}:{}",
                encode(client_id),
                encode(client_secret.map(Secret::expose).unwrap_or_default())
            );
            let request = request.form(&form);
            match HeaderValue::from_str(&format!("Basic {}", BASE64.encode(pair))) {
                Ok(mut value) => {
                    value.set_sensitive(true);
                    request.header(AUTHORIZATION, value)
                }
                // Base64 and ASCII only: always a valid header value.
                Err(_) => request,
            }
        }
        ClientAuth::Body => {
            form.push(("client_id", client_id));
            if let Some(secret) = client_secret {
                form.push(("client_secret", secret.expose()));
            }
            request.form(&form)
        }
    }
}

fn transport_error(error: SendError, timeout: Duration) -> FetchError {
    match error {
        SendError::NotAllowed(refused) => FetchError::NotAllowed {
            reason: refused.to_string(),
        },
        SendError::Timeout => FetchError::Timeout {
            ms: timeout.as_millis() as u64,
        },
        SendError::Connection(reason) => FetchError::Unreachable { reason },
    }
}

fn read_error(error: reqwest::Error, timeout: Duration) -> FetchError {
    if error.is_timeout() {
        return FetchError::Timeout {
            ms: timeout.as_millis() as u64,
        };
    }
    FetchError::Unreachable {
        reason: error_chain(&error.without_url()),
    }
}

/// The OAuth2 `error` code of an error answer, only when it looks like one
/// (a short word): anything else may be the partner echoing our request.
fn oauth_error_code(body: &Option<Vec<u8>>) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body.as_deref()?).ok()?;
    let code = value.get("error")?.as_str()?;
    let well_formed = !code.is_empty()
        && code.len() <= 64
        && code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    well_formed.then(|| code.to_string())
}

fn parse_answer(
    body: &[u8],
    content_type: &str,
    fields: &TokenFields<'_>,
) -> Result<Fetched, FetchError> {
    let invalid = |reason: String| FetchError::InvalidResponse { reason };
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| {
        invalid(format!(
            "body is not JSON ({} bytes, content-type {content_type})",
            body.len()
        ))
    })?;
    let token = value
        .pointer(fields.token)
        .and_then(serde_json::Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| invalid(format!("no token (a non-empty string) at {}", fields.token)))?;
    if HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
        return Err(invalid(format!(
            "the token at {} is not valid in an HTTP header",
            fields.token
        )));
    }
    let lifetime_secs = match value.pointer(fields.expires_in) {
        None | Some(serde_json::Value::Null) => fields.default_expires_in_secs as f64,
        Some(serde_json::Value::Number(n)) => n.as_f64().unwrap_or(-1.0),
        // Some servers send the lifetime as a string.
        Some(serde_json::Value::String(s)) => s.trim().parse().unwrap_or(-1.0),
        Some(_) => -1.0,
    };
    if !(lifetime_secs.is_finite() && lifetime_secs > 0.0) {
        return Err(invalid(format!(
            "the lifetime at {} is not a positive number of seconds",
            fields.expires_in
        )));
    }
    let max = postline_shared::model::subscription::MAX_TOKEN_LIFETIME_SECS as f64;
    Ok(Fetched {
        token: Secret::new(token),
        lifetime: Duration::from_secs_f64(lifetime_secs.min(max)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> TokenFields<'static> {
        TokenFields {
            token: "/access_token",
            expires_in: "/expires_in",
            default_expires_in_secs: 3600,
        }
    }

    #[test]
    fn reads_token_and_lifetime() {
        let got = parse_answer(
            br#"{"access_token":"abc","expires_in":"120"}"#,
            "application/json",
            &fields(),
        )
        .unwrap();
        assert_eq!(got.token.expose(), "abc");
        assert_eq!(got.lifetime, Duration::from_secs(120));
        let defaulted = parse_answer(br#"{"access_token":"abc"}"#, "x", &fields()).unwrap();
        assert_eq!(defaulted.lifetime, Duration::from_secs(3600));
        let nested = TokenFields {
            token: "/data/token",
            expires_in: "/data/ttl",
            default_expires_in_secs: 60,
        };
        let got = parse_answer(br#"{"data":{"token":"t","ttl":30}}"#, "x", &nested).unwrap();
        assert_eq!(
            (got.token.expose(), got.lifetime),
            ("t", Duration::from_secs(30))
        );
    }

    #[test]
    fn refuses_unusable_answers_without_quoting_them() {
        let cases: [&[u8]; 5] = [
            b"<html>secret-echo</html>",
            br#"{"token":"secret-echo"}"#,
            br#"{"access_token":""}"#,
            br#"{"access_token":"a\nb"}"#,
            br#"{"access_token":"secret-echo","expires_in":0}"#,
        ];
        for body in cases {
            let error = parse_answer(body, "text/html", &fields()).unwrap_err();
            assert_eq!(error.outcome(), "invalid_response");
            assert!(!error.to_string().contains("secret-echo"), "{error}");
        }
    }

    #[test]
    fn keeps_only_well_formed_oauth_error_codes() {
        let code = |body: &[u8]| oauth_error_code(&Some(body.to_vec()));
        assert_eq!(
            code(br#"{"error":"invalid_client"}"#),
            Some("invalid_client".into())
        );
        assert_eq!(code(br#"{"error":"bad secret s3cr3t given"}"#), None);
        assert_eq!(code(b"not json"), None);
        let error = FetchError::Refused {
            status: 401,
            code: Some("invalid_client".into()),
        };
        assert_eq!(
            error.to_string(),
            "token endpoint answered 401 (invalid_client)"
        );
    }
}
