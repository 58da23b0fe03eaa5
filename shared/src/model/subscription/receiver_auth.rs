//! Receiver authentication as a subscription states it: how the receiver
//! knows a request comes from us. Static modes (API key, Basic, Bearer) carry
//! their credential; token modes (OAuth2 client credentials, token servers)
//! carry what the token service needs to fetch a bearer token.
//!
//! Every credential is a [`Secret`]: write-only in the API (the view below
//! leaves them out), redacted in `Debug`, sealed at rest by the store.

use crate::model::problem::Problem;
use crate::model::secret::Secret;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Default lifetime assumed for a token whose response gives none (seconds).
pub const DEFAULT_TOKEN_LIFETIME_SECS: u64 = 3600;
/// Longest lifetime a subscription may assume for its tokens (30 days).
pub const MAX_TOKEN_LIFETIME_SECS: u64 = 30 * 24 * 3600;
/// Default JSON pointer of the token in a token response.
pub const DEFAULT_TOKEN_FIELD: &str = "/access_token";
/// Default JSON pointer of the lifetime (seconds) in a token response.
pub const DEFAULT_EXPIRES_IN_FIELD: &str = "/expires_in";

/// Form fields Postline sets itself in token requests; `extra_params` may not set them.
const RESERVED_FORM_FIELDS: &[&str] = &[
    "grant_type",
    "client_id",
    "client_secret",
    "scope",
    "audience",
    "username",
    "password",
];

/// How requests to the receiver are authenticated.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum ReceiverAuth {
    /// Nothing is sent.
    #[default]
    None,
    /// A key under a partner-chosen name, in a header or a query parameter.
    ApiKey {
        /// Header or query parameter name, e.g. `X-Transfocus-Api-Key`.
        name: String,
        /// Where the key goes.
        #[serde(rename = "in", default)]
        location: ApiKeyLocation,
        /// The key.
        key: Secret,
    },
    /// `Authorization: Basic` from a username and a password.
    Basic {
        /// Username (no `:`).
        username: String,
        /// Password.
        password: Secret,
    },
    /// `Authorization: Bearer` with a static token the partner gave us.
    Bearer {
        /// The token.
        token: Secret,
    },
    /// `Authorization: Bearer` with a token from the partner's OAuth2 token
    /// endpoint (client credentials grant).
    Oauth2ClientCredentials(ClientCredentials),
    /// `Authorization: Bearer` with a token from a partner token server, by
    /// username and password (OAuth2 password grant or a plain JSON login).
    TokenServer(TokenServer),
}

/// Where an API key is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ApiKeyLocation {
    /// As a request header.
    #[default]
    Header,
    /// As a query parameter of the endpoint URL.
    Query,
}

/// How an OAuth2 client authenticates to the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// `Authorization: Basic` (RFC 6749 §2.3.1; every server must support it).
    #[default]
    Basic,
    /// `client_id` and `client_secret` as form fields.
    Body,
}

/// What a token server expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenServerFormat {
    /// `POST {"username": …, "password": …}` as JSON; the token is read from `token_field`.
    #[default]
    Json,
    /// OAuth2 resource owner password grant (`grant_type=password`, form-encoded).
    PasswordGrant,
}

/// Settings of the OAuth2 client credentials mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientCredentials {
    /// The partner's token endpoint (http or https).
    pub token_url: String,
    /// Client id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: Secret,
    /// Client authentication: Basic header (default) or form body.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Requested scope.
    #[serde(default)]
    pub scope: Option<String>,
    /// Requested audience (Auth0 and others).
    #[serde(default)]
    pub audience: Option<String>,
    /// Extra form fields sent with each token request (settings, not secrets:
    /// the API shows them).
    #[serde(default)]
    pub extra_params: BTreeMap<String, String>,
    /// JSON pointer of the token in the response (default `/access_token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_field: Option<String>,
    /// JSON pointer of the lifetime in seconds (default `/expires_in`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_field: Option<String>,
    /// Lifetime assumed when the response gives none (default 3600 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_expires_in_secs: Option<u64>,
}

/// Settings of the token server mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenServer {
    /// The partner's token URL (http or https).
    pub token_url: String,
    /// JSON login (default) or OAuth2 password grant.
    #[serde(default)]
    pub format: TokenServerFormat,
    /// Username.
    pub username: String,
    /// Password.
    pub password: Secret,
    /// OAuth2 client id (password grant only, when the server wants one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// OAuth2 client secret (password grant only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<Secret>,
    /// Client authentication when a client id is given (password grant only).
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Requested scope (password grant only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Extra fields: form fields (password grant) or JSON string fields (JSON
    /// login); settings, not secrets: the API shows them.
    #[serde(default)]
    pub extra_params: BTreeMap<String, String>,
    /// JSON pointer of the token in the response (default `/access_token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_field: Option<String>,
    /// JSON pointer of the lifetime in seconds (default `/expires_in`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_field: Option<String>,
    /// Lifetime assumed when the response gives none (default 3600 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_expires_in_secs: Option<u64>,
}

/// Where a token endpoint's answer holds the token and its lifetime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFields<'a> {
    /// JSON pointer of the token.
    pub token: &'a str,
    /// JSON pointer of the lifetime in seconds.
    pub expires_in: &'a str,
    /// Lifetime when the answer has none.
    pub default_expires_in_secs: u64,
}

/// What the API shows of a subscription's auth: the mode and every setting
/// except the credentials themselves.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum ReceiverAuthView<'a> {
    /// Nothing is sent.
    None,
    /// API key (the key is not shown).
    ApiKey {
        /// Header or parameter name.
        name: &'a str,
        /// Header or query.
        #[serde(rename = "in")]
        location: ApiKeyLocation,
    },
    /// Basic (the password is not shown).
    Basic {
        /// Username.
        username: &'a str,
    },
    /// Static bearer token (not shown).
    Bearer,
    /// OAuth2 client credentials (the client secret is not shown).
    Oauth2ClientCredentials {
        /// Token endpoint.
        token_url: &'a str,
        /// Client id.
        client_id: &'a str,
        /// Client authentication.
        client_auth: ClientAuth,
        /// Scope.
        scope: Option<&'a str>,
        /// Audience.
        audience: Option<&'a str>,
        /// Extra form fields.
        extra_params: &'a BTreeMap<String, String>,
        /// Where the token is read from.
        token_field: &'a str,
        /// Where its lifetime is read from.
        expires_in_field: &'a str,
        /// Lifetime when the answer has none.
        default_expires_in_secs: u64,
    },
    /// Token server (the password and client secret are not shown).
    TokenServer {
        /// Token URL.
        token_url: &'a str,
        /// Format.
        format: TokenServerFormat,
        /// Username.
        username: &'a str,
        /// Client id, if any.
        client_id: Option<&'a str>,
        /// Client authentication (password grant with a client id).
        client_auth: ClientAuth,
        /// Scope.
        scope: Option<&'a str>,
        /// Extra fields.
        extra_params: &'a BTreeMap<String, String>,
        /// Where the token is read from.
        token_field: &'a str,
        /// Where its lifetime is read from.
        expires_in_field: &'a str,
        /// Lifetime when the answer has none.
        default_expires_in_secs: u64,
    },
}

impl ReceiverAuth {
    /// The mode's name as written in the API (`none`, `api_key`, …).
    pub fn mode(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ApiKey { .. } => "api_key",
            Self::Basic { .. } => "basic",
            Self::Bearer { .. } => "bearer",
            Self::Oauth2ClientCredentials(_) => "oauth2_client_credentials",
            Self::TokenServer(_) => "token_server",
        }
    }

    /// Whether requests need a bearer token from the token service.
    pub fn needs_token(&self) -> bool {
        matches!(
            self,
            Self::Oauth2ClientCredentials(_) | Self::TokenServer(_)
        )
    }

    /// The partner's token endpoint (token modes), which Postline calls too.
    pub fn token_url(&self) -> Option<&str> {
        match self {
            Self::Oauth2ClientCredentials(c) => Some(&c.token_url),
            Self::TokenServer(t) => Some(&t.token_url),
            _ => None,
        }
    }

    /// The canonical form of a token mode's credentials (every field, secrets
    /// included), from which the token cache key is derived; `None` for the
    /// modes that need no token.
    pub fn token_credentials(&self) -> Option<Vec<u8>> {
        // Field order is fixed by the types and maps are sorted, so equal
        // credentials always give the same bytes.
        self.needs_token()
            .then(|| serde_json::to_vec(self).unwrap_or_default())
    }

    /// Where the token endpoint's answer holds the token and lifetime (token modes).
    pub fn token_fields(&self) -> Option<TokenFields<'_>> {
        let (token, expires_in, default) = match self {
            Self::Oauth2ClientCredentials(c) => (
                &c.token_field,
                &c.expires_in_field,
                c.default_expires_in_secs,
            ),
            Self::TokenServer(t) => (
                &t.token_field,
                &t.expires_in_field,
                t.default_expires_in_secs,
            ),
            _ => return None,
        };
        Some(TokenFields {
            token: token.as_deref().unwrap_or(DEFAULT_TOKEN_FIELD),
            expires_in: expires_in.as_deref().unwrap_or(DEFAULT_EXPIRES_IN_FIELD),
            default_expires_in_secs: default.unwrap_or(DEFAULT_TOKEN_LIFETIME_SECS),
        })
    }

    /// Every credential, for sealing at rest.
    pub fn secrets_mut(&mut self) -> Vec<&mut Secret> {
        match self {
            Self::None => Vec::new(),
            Self::ApiKey { key, .. } => vec![key],
            Self::Basic { password, .. } => vec![password],
            Self::Bearer { token } => vec![token],
            Self::Oauth2ClientCredentials(c) => vec![&mut c.client_secret],
            Self::TokenServer(t) => {
                let mut all = vec![&mut t.password];
                all.extend(t.client_secret.as_mut());
                all
            }
        }
    }

    /// Every credential value, for redacting text that might echo one.
    pub fn secret_values(&self) -> Vec<&str> {
        match self {
            Self::None => Vec::new(),
            Self::ApiKey { key, .. } => vec![key.expose()],
            Self::Basic { password, .. } => vec![password.expose()],
            Self::Bearer { token } => vec![token.expose()],
            Self::Oauth2ClientCredentials(c) => vec![c.client_secret.expose()],
            Self::TokenServer(t) => std::iter::once(t.password.expose())
                .chain(t.client_secret.as_ref().map(Secret::expose))
                .collect(),
        }
    }

    /// The API view, without credentials.
    pub fn view(&self) -> ReceiverAuthView<'_> {
        let fields = self.token_fields();
        let (token_field, expires_in_field, default_expires_in_secs) = fields
            .as_ref()
            .map(|f| (f.token, f.expires_in, f.default_expires_in_secs))
            .unwrap_or((
                DEFAULT_TOKEN_FIELD,
                DEFAULT_EXPIRES_IN_FIELD,
                DEFAULT_TOKEN_LIFETIME_SECS,
            ));
        match self {
            Self::None => ReceiverAuthView::None,
            Self::ApiKey { name, location, .. } => ReceiverAuthView::ApiKey {
                name,
                location: *location,
            },
            Self::Basic { username, .. } => ReceiverAuthView::Basic { username },
            Self::Bearer { .. } => ReceiverAuthView::Bearer,
            Self::Oauth2ClientCredentials(c) => ReceiverAuthView::Oauth2ClientCredentials {
                token_url: &c.token_url,
                client_id: &c.client_id,
                client_auth: c.client_auth,
                scope: c.scope.as_deref(),
                audience: c.audience.as_deref(),
                extra_params: &c.extra_params,
                token_field,
                expires_in_field,
                default_expires_in_secs,
            },
            Self::TokenServer(t) => ReceiverAuthView::TokenServer {
                token_url: &t.token_url,
                format: t.format,
                username: &t.username,
                client_id: t.client_id.as_deref(),
                client_auth: t.client_auth,
                scope: t.scope.as_deref(),
                extra_params: &t.extra_params,
                token_field,
                expires_in_field,
                default_expires_in_secs,
            },
        }
    }

    /// Checks the settings against the rest of the subscription (its endpoint
    /// and extra headers), naming the first wrong field as `auth.<field>`.
    pub fn validate(
        &self,
        endpoint: &str,
        extra_headers: &BTreeMap<String, String>,
    ) -> Result<(), Problem> {
        let field = |name: &str, message: String| Problem::field(format!("auth.{name}"), message);
        match self {
            Self::None => Ok(()),
            Self::ApiKey {
                name,
                location,
                key,
            } => {
                if name.is_empty() || name.len() > 256 {
                    return Err(field("name", "must be 1 to 256 characters".into()));
                }
                if key.expose().is_empty() {
                    return Err(field("key", "must not be empty".into()));
                }
                match location {
                    ApiKeyLocation::Header => {
                        super::validate_header_name(name).map_err(|m| field("name", m))?;
                        let lower = name.to_ascii_lowercase();
                        // Authorization is the receiver auth's own header; the
                        // others Postline sets for every request.
                        if lower != "authorization"
                            && super::RESERVED_HEADERS.contains(&lower.as_str())
                        {
                            return Err(field(
                                "name",
                                "is set by Postline and cannot carry the key".into(),
                            ));
                        }
                        if extra_headers.keys().any(|h| h.eq_ignore_ascii_case(name)) {
                            return Err(field(
                                "name",
                                "is also in `headers`: send it one way only".into(),
                            ));
                        }
                        reqwest::header::HeaderValue::from_str(key.expose())
                            .map_err(|_| field("key", "is not a valid HTTP header value".into()))?;
                    }
                    ApiKeyLocation::Query => {
                        let taken = url::Url::parse(endpoint)
                            .ok()
                            .is_some_and(|url| url.query_pairs().any(|(k, _)| k == name.as_str()));
                        if taken {
                            return Err(field(
                                "name",
                                "is already a query parameter of the endpoint".into(),
                            ));
                        }
                    }
                }
                Ok(())
            }
            Self::Basic { username, .. } => {
                if username.is_empty() || username.contains(':') {
                    return Err(field(
                        "username",
                        "must be non-empty and must not contain `:`".into(),
                    ));
                }
                if username.chars().any(char::is_control) {
                    return Err(field(
                        "username",
                        "must not contain control characters".into(),
                    ));
                }
                Ok(())
            }
            Self::Bearer { token } => {
                if token.expose().is_empty() {
                    return Err(field("token", "must not be empty".into()));
                }
                reqwest::header::HeaderValue::from_str(token.expose())
                    .map_err(|_| field("token", "is not a valid HTTP header value".into()))?;
                Ok(())
            }
            Self::Oauth2ClientCredentials(c) => {
                validate_token_url(&c.token_url)?;
                if c.client_id.is_empty() {
                    return Err(field("client_id", "must not be empty".into()));
                }
                if c.client_secret.expose().is_empty() {
                    return Err(field("client_secret", "must not be empty".into()));
                }
                validate_extra_params(&c.extra_params, RESERVED_FORM_FIELDS)?;
                validate_response_fields(
                    &c.token_field,
                    &c.expires_in_field,
                    c.default_expires_in_secs,
                )
            }
            Self::TokenServer(t) => {
                validate_token_url(&t.token_url)?;
                if t.username.is_empty() {
                    return Err(field("username", "must not be empty".into()));
                }
                match t.format {
                    TokenServerFormat::Json => {
                        let oauth_only = [
                            ("client_id", t.client_id.is_some()),
                            ("client_secret", t.client_secret.is_some()),
                            ("scope", t.scope.is_some()),
                            ("client_auth", t.client_auth != ClientAuth::default()),
                        ];
                        if let Some((name, _)) = oauth_only.iter().find(|(_, set)| *set) {
                            return Err(field(
                                name,
                                "applies only to format `password_grant`".into(),
                            ));
                        }
                        validate_extra_params(&t.extra_params, &["username", "password"])?;
                    }
                    TokenServerFormat::PasswordGrant => {
                        if t.client_secret.is_some() && t.client_id.is_none() {
                            return Err(field("client_secret", "needs a `client_id`".into()));
                        }
                        if t.client_id.as_deref() == Some("") {
                            return Err(field("client_id", "must not be empty".into()));
                        }
                        validate_extra_params(&t.extra_params, RESERVED_FORM_FIELDS)?;
                    }
                }
                validate_response_fields(
                    &t.token_field,
                    &t.expires_in_field,
                    t.default_expires_in_secs,
                )
            }
        }
    }
}

fn validate_token_url(url: &str) -> Result<(), Problem> {
    super::validate_url("auth.token_url", url)
}

fn validate_extra_params(
    params: &BTreeMap<String, String>,
    reserved: &[&str],
) -> Result<(), Problem> {
    for name in params.keys() {
        if name.is_empty() {
            return Err(Problem::field(
                "auth.extra_params",
                "names must not be empty",
            ));
        }
        if reserved.contains(&name.as_str()) {
            return Err(Problem::field(
                format!("auth.extra_params.{name}"),
                "is set by Postline",
            ));
        }
    }
    Ok(())
}

fn validate_response_fields(
    token_field: &Option<String>,
    expires_in_field: &Option<String>,
    default_expires_in_secs: Option<u64>,
) -> Result<(), Problem> {
    for (name, pointer) in [
        ("token_field", token_field),
        ("expires_in_field", expires_in_field),
    ] {
        if let Some(pointer) = pointer {
            if !pointer.starts_with('/') {
                return Err(Problem::field(
                    format!("auth.{name}"),
                    "must be a JSON pointer such as /access_token or /data/token",
                ));
            }
        }
    }
    if let Some(secs) = default_expires_in_secs {
        if secs == 0 || secs > MAX_TOKEN_LIFETIME_SECS {
            return Err(Problem::field(
                "auth.default_expires_in_secs",
                format!("must be between 1 and {MAX_TOKEN_LIFETIME_SECS}"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::problem::parse_json;

    fn parse(json: &str) -> Result<ReceiverAuth, Problem> {
        parse_json(json.as_bytes())
    }

    fn check(json: &str) -> Result<ReceiverAuth, Problem> {
        let auth = parse(json)?;
        auth.validate("https://r.example/hook?x=1", &BTreeMap::new())?;
        Ok(auth)
    }

    #[test]
    fn parses_every_mode() {
        let cases = [
            (r#"{"mode":"none"}"#, "none"),
            (
                r#"{"mode":"api_key","name":"X-Transfocus-Api-Key","key":"k1"}"#,
                "api_key",
            ),
            (
                r#"{"mode":"api_key","name":"apikey","in":"query","key":"k1"}"#,
                "api_key",
            ),
            (r#"{"mode":"basic","username":"u","password":"p"}"#, "basic"),
            (r#"{"mode":"bearer","token":"t"}"#, "bearer"),
            (
                r#"{"mode":"oauth2_client_credentials","token_url":"https://a/token","client_id":"c","client_secret":"s","scope":"x y","audience":"api","client_auth":"body","extra_params":{"resource":"r"}}"#,
                "oauth2_client_credentials",
            ),
            (
                r#"{"mode":"token_server","token_url":"https://a/login","username":"u","password":"p","token_field":"/data/token"}"#,
                "token_server",
            ),
            (
                r#"{"mode":"token_server","format":"password_grant","token_url":"https://a/token","username":"u","password":"p","client_id":"c"}"#,
                "token_server",
            ),
        ];
        for (json, mode) in cases {
            let auth = check(json).unwrap_or_else(|p| panic!("{json}: {p}"));
            assert_eq!(auth.mode(), mode);
            let again: ReceiverAuth =
                serde_json::from_slice(&serde_json::to_vec(&auth).unwrap()).unwrap();
            assert_eq!(again, auth, "stored form round-trips");
        }
    }

    #[test]
    fn names_each_bad_field() {
        let cases = [
            (r#"{"mode":"api_key","name":"","key":"k"}"#, "auth.name"),
            (
                r#"{"mode":"api_key","name":"Bad Name","key":"k"}"#,
                "auth.name",
            ),
            (
                r#"{"mode":"api_key","name":"Content-Type","key":"k"}"#,
                "auth.name",
            ),
            (
                r#"{"mode":"api_key","name":"x","in":"query","key":"k"}"#,
                "auth.name",
            ),
            (r#"{"mode":"api_key","name":"X-Key","key":""}"#, "auth.key"),
            (
                r#"{"mode":"basic","username":"a:b","password":"p"}"#,
                "auth.username",
            ),
            (r#"{"mode":"bearer","token":""}"#, "auth.token"),
            (
                r#"{"mode":"oauth2_client_credentials","token_url":"ftp://a/","client_id":"c","client_secret":"s"}"#,
                "auth.token_url",
            ),
            (
                r#"{"mode":"oauth2_client_credentials","token_url":"https://a/","client_id":"","client_secret":"s"}"#,
                "auth.client_id",
            ),
            (
                r#"{"mode":"oauth2_client_credentials","token_url":"https://a/","client_id":"c","client_secret":"s","extra_params":{"grant_type":"x"}}"#,
                "auth.extra_params.grant_type",
            ),
            (
                r#"{"mode":"token_server","token_url":"https://a/","username":"u","password":"p","token_field":"token"}"#,
                "auth.token_field",
            ),
            (
                r#"{"mode":"token_server","token_url":"https://a/","username":"u","password":"p","client_id":"c"}"#,
                "auth.client_id",
            ),
            (
                r#"{"mode":"token_server","token_url":"https://a/","username":"u","password":"p","default_expires_in_secs":0}"#,
                "auth.default_expires_in_secs",
            ),
        ];
        for (json, field) in cases {
            let problem = check(json).unwrap_err();
            assert_eq!(problem.field.as_deref(), Some(field), "{json}: {problem}");
        }
    }

    #[test]
    fn refuses_unknown_and_missing_fields() {
        assert!(parse(r#"{"mode":"bearer","token":"t","colour":"red"}"#).is_err());
        assert!(parse(
            r#"{"mode":"oauth2_client_credentials","token_url":"https://a/","client_id":"c","client_secret":"s","colour":1}"#
        )
        .is_err());
        assert!(parse(
            r#"{"mode":"oauth2_client_credentials","client_id":"c","client_secret":"s"}"#
        )
        .is_err());
        assert!(parse(r#"{"mode":"kerberos"}"#).is_err());
    }

    #[test]
    fn api_key_header_must_not_clash_with_extra_headers() {
        let auth = parse(r#"{"mode":"api_key","name":"X-Key","key":"k"}"#).unwrap();
        let headers = BTreeMap::from([("x-key".to_string(), "v".to_string())]);
        let problem = auth.validate("https://a/", &headers).unwrap_err();
        assert_eq!(problem.field.as_deref(), Some("auth.name"));
    }

    #[test]
    fn view_and_debug_hide_every_credential() {
        let cases = [
            r#"{"mode":"api_key","name":"X-Key","key":"hidden-api-key"}"#,
            r#"{"mode":"basic","username":"u","password":"hidden-password"}"#,
            r#"{"mode":"bearer","token":"hidden-static-token"}"#,
            r#"{"mode":"oauth2_client_credentials","token_url":"https://a/","client_id":"c","client_secret":"hidden-client-secret"}"#,
            r#"{"mode":"token_server","format":"password_grant","token_url":"https://a/","username":"u","password":"hidden-password","client_id":"c","client_secret":"hidden-client-secret"}"#,
        ];
        for json in cases {
            let auth = parse(json).unwrap();
            let shown = format!(
                "{} {auth:?} {auth:#?}",
                serde_json::to_string(&auth.view()).unwrap()
            );
            assert!(!shown.contains("hidden-"), "{shown}");
            assert!(!auth.secret_values().is_empty());
        }
    }

    #[test]
    fn equal_credentials_give_equal_cache_material() {
        let a = parse(r#"{"mode":"oauth2_client_credentials","token_url":"https://a/","client_id":"c","client_secret":"s","extra_params":{"b":"2","a":"1"}}"#).unwrap();
        let b = parse(r#"{"mode":"oauth2_client_credentials","client_secret":"s","extra_params":{"a":"1","b":"2"},"client_id":"c","token_url":"https://a/"}"#).unwrap();
        assert_eq!(a.token_credentials(), b.token_credentials());
        let c = parse(r#"{"mode":"oauth2_client_credentials","token_url":"https://a/","client_id":"c","client_secret":"other"}"#).unwrap();
        assert_ne!(a.token_credentials(), c.token_credentials());
        assert_eq!(ReceiverAuth::None.token_credentials(), None);
    }
}
