//! Tenants as the tests drive them: the operator creates tenants and
//! clients, a partner gets tokens from `/oauth/token` (the form body or HTTP
//! Basic, exactly as a partner's OAuth library sends them) and calls the
//! API with them. Helpers return what came back and never assert, except
//! the `*_ok` ones, which assert the happy path they are named after.

use crate::api::{ApiResponse, Auth, TEST_LADDER};
use crate::env::TestEnv;
use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A client's credentials as issued (the secret is shown once).
#[derive(Debug, Clone)]
pub struct Client {
    /// Client id.
    pub id: String,
    /// Client secret.
    pub secret: String,
}

/// A token endpoint answer: status, headers and JSON body.
#[derive(Debug)]
pub struct TokenAnswer {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// The raw body.
    pub text: String,
    /// The body as JSON (`Null` when it is not JSON).
    pub json: Value,
}

impl TestEnv {
    /// `POST /v1/tenants` with the admin token; asserts 201.
    pub async fn create_tenant_ok(&self, spec: Value) -> Value {
        let body = serde_json::to_vec(&spec).expect("JSON");
        let response = self
            .api(Method::POST, "/v1/tenants", Auth::Admin, Some(body))
            .await;
        assert_eq!(
            response.status,
            StatusCode::CREATED,
            "creating tenant {spec}: {}",
            response.text
        );
        response.json
    }

    /// `POST /v1/tenants/{tenant}/clients` with `scopes`; asserts 201.
    pub async fn create_client_ok(&self, tenant: &str, scopes: &[&str]) -> Client {
        let body = serde_json::to_vec(&json!({ "scopes": scopes })).expect("JSON");
        let response = self
            .api(
                Method::POST,
                &format!("/v1/tenants/{tenant}/clients"),
                Auth::Admin,
                Some(body),
            )
            .await;
        assert_eq!(
            response.status,
            StatusCode::CREATED,
            "issuing a client: {}",
            response.text
        );
        Client {
            id: response.json["client_id"]
                .as_str()
                .expect("client_id")
                .to_string(),
            secret: response.json["client_secret"]
                .as_str()
                .expect("client_secret")
                .to_string(),
        }
    }

    /// `POST /oauth/token` with `form` as the body, an optional HTTP Basic
    /// pair, and `content_type` (the form type unless given).
    pub async fn token_request(
        &self,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
        content_type: Option<&str>,
    ) -> TokenAnswer {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut request = self
            .http()
            .post(format!("{}/oauth/token", self.ingest_url()))
            .header(
                "content-type",
                content_type.unwrap_or("application/x-www-form-urlencoded"),
            )
            .body(body);
        if let Some((id, secret)) = basic {
            let encode = |s: &str| -> String {
                url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
            };
            let pair = format!("{}:{}", encode(id), encode(secret));
            request = request.header(
                "authorization",
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ),
            );
        }
        let response = request.send().await.expect("token request");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        TokenAnswer {
            status,
            headers,
            text,
            json,
        }
    }

    /// A token for `client` (all its scopes, or `scope`); asserts 200.
    pub async fn token_ok(&self, client: &Client, scope: Option<&str>) -> String {
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", client.id.as_str()),
            ("client_secret", client.secret.as_str()),
        ];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        let answer = self.token_request(&form, None, None).await;
        assert_eq!(answer.status, StatusCode::OK, "token: {}", answer.text);
        answer.json["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    /// `POST /v1/subscriptions` with a tenant's `token`; tracks the id for
    /// clean-up and gives specs without `retry` the test ladder.
    pub async fn create_subscription_as(&self, token: &str, mut spec: Value) -> ApiResponse {
        if let Some(fields) = spec.as_object_mut() {
            fields.entry("retry").or_insert_with(|| TEST_LADDER.clone());
        }
        self.track_delay_queues(&spec["retry"]);
        if let Some(id) = spec["id"].as_str() {
            self.subscription_ids
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.to_string());
        }
        let body = serde_json::to_vec(&spec).expect("JSON");
        self.api(
            Method::POST,
            "/v1/subscriptions",
            Auth::Token(token),
            Some(body),
        )
        .await
    }

    /// Any API call with `token` and an optional JSON body.
    pub async fn call_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> ApiResponse {
        let body = body.map(|b| serde_json::to_vec(&b).expect("JSON"));
        self.api(method, path, Auth::Token(token), body).await
    }
}
