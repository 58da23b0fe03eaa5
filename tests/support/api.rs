//! The ingest HTTP API as the tests call it: events with the producer token,
//! subscriptions with the admin token, and raw requests for the error cases.
//! Every helper returns the status and the body (JSON, or `Null` when the
//! body is not JSON) and never asserts, so tests state what they expect.

use crate::env::TestEnv;
use postline_shared::model::retry_policy::RetryPolicy;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::LazyLock;

/// The retry policy of test subscriptions that do not set one: the
/// production shape (3 immediate retries, then growing delays) in milliseconds.
pub static TEST_LADDER: LazyLock<Value> = LazyLock::new(|| {
    json!({
        "immediate_retries": 3,
        "immediate_pause_ms": 20,
        "steps_ms": [50, 100, 200],
        "repeat_every_ms": 200,
    })
});

/// Which bearer token a raw request carries.
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    /// No `Authorization` header.
    None,
    /// The environment's admin token.
    Admin,
    /// The environment's producer token.
    Producer,
    /// This exact token.
    Token(&'a str),
}

/// A response: status, body text, and the body as JSON (`Null` if not JSON).
#[derive(Debug, Clone)]
pub struct ApiResponse {
    /// HTTP status.
    pub status: StatusCode,
    /// The raw body.
    pub text: String,
    /// The body parsed as JSON, `Null` when it is not JSON.
    pub json: Value,
}

impl ApiResponse {
    /// `error.code` of an error body.
    pub fn error_code(&self) -> Option<&str> {
        self.json["error"]["code"].as_str()
    }

    /// `error.field` of an error body.
    pub fn error_field(&self) -> Option<&str> {
        self.json["error"]["field"].as_str()
    }
}

impl TestEnv {
    /// Any request to the ingest API.
    pub async fn api(
        &self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Option<Vec<u8>>,
    ) -> ApiResponse {
        let url = format!("{}{path}", self.ingest_url);
        let mut request = self.http.request(method.clone(), &url);
        let token = match auth {
            Auth::None => None,
            Auth::Admin => Some(self.admin_token().to_string()),
            Auth::Producer => Some(self.producer_token().to_string()),
            Auth::Token(token) => Some(token.to_string()),
        };
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url} failed: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        ApiResponse { status, text, json }
    }

    async fn json_call(
        &self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let body = body.map(|b| serde_json::to_vec(b).expect("JSON body"));
        let response = self.api(method, path, auth, body).await;
        (response.status, response.json)
    }

    /// `POST /v1/subscriptions`; tracks the id for clean-up. A spec without
    /// `retry` gets [`TEST_LADDER`], so failing tests wait milliseconds, not minutes.
    pub async fn create_subscription(&self, mut spec: Value) -> (StatusCode, Value) {
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
        self.json_call(Method::POST, "/v1/subscriptions", Auth::Admin, Some(&spec))
            .await
    }

    /// Creates a subscription and asserts 201; returns the response body.
    pub async fn subscribe(&self, spec: Value) -> Value {
        let (status, body) = self.create_subscription(spec.clone()).await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "creating {spec} answered {body}"
        );
        body
    }

    /// `GET /v1/subscriptions/{id}`.
    pub async fn get_subscription(&self, id: &str) -> (StatusCode, Value) {
        self.json_call(
            Method::GET,
            &format!("/v1/subscriptions/{id}"),
            Auth::Admin,
            None,
        )
        .await
    }

    /// `GET /v1/subscriptions`.
    pub async fn list_subscriptions(&self) -> (StatusCode, Value) {
        self.json_call(Method::GET, "/v1/subscriptions", Auth::Admin, None)
            .await
    }

    /// Remembers the delay queues a retry policy can create, for clean-up.
    pub(crate) fn track_delay_queues(&self, retry: &Value) {
        if let Ok(policy) = serde_json::from_value::<RetryPolicy>(retry.clone()) {
            for delay in policy.delays_ms() {
                self.track_queue(&self.topology.delay_queue(delay));
            }
        }
    }

    /// An operator call under `/v1/subscriptions/{id}/…` (`suffix` like `state`, `enable`).
    pub async fn operate(&self, method: Method, id: &str, suffix: &str) -> (StatusCode, Value) {
        self.json_call(
            method,
            &format!("/v1/subscriptions/{id}/{suffix}"),
            Auth::Admin,
            None,
        )
        .await
    }

    /// `GET /v1/subscriptions/{id}/state`, asserting 200.
    pub async fn delivery_state(&self, id: &str) -> Value {
        let (status, body) = self.operate(Method::GET, id, "state").await;
        assert_eq!(status, StatusCode::OK, "state of {id}: {body}");
        body
    }

    /// Polls `GET /v1/subscriptions/{id}/state` until `done` holds; returns that state.
    pub async fn wait_delivery_state(
        &self,
        id: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        crate::wait::until(what, crate::DEADLINE, || async {
            let state = self.delivery_state(id).await;
            if done(&state) {
                Ok(state)
            } else {
                Err(state.to_string())
            }
        })
        .await
    }

    /// Polls delivery's `/metrics` until a sample of `name` carrying every
    /// label in `labels` (like `outcome="delivered"`) has `value`.
    pub async fn wait_metric(&self, name: &str, labels: &[&str], value: &str) {
        let what = format!("metric {name}{labels:?} = {value}");
        crate::wait::until(&what, crate::DEADLINE, || async {
            let text = self.delivery_metrics().await;
            let found = text.lines().any(|line| {
                line.starts_with(name)
                    && labels.iter().all(|label| line.contains(label))
                    && line.rsplit(' ').next() == Some(value)
            });
            if found {
                Ok(())
            } else {
                let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(name)).collect();
                Err(lines.join("\n"))
            }
        })
        .await
    }

    /// The delivery service's `/metrics` text.
    pub async fn delivery_metrics(&self) -> String {
        let addr = self.delivery_addr().expect("delivery is running");
        self.metrics_page(&format!("http://{addr}")).await
    }

    /// The `/metrics` page of the service at `base_url`, asserting 200.
    pub async fn metrics_page(&self, base_url: &str) -> String {
        let response = self
            .http
            .get(format!("{base_url}/metrics"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {base_url}/metrics: {e}"));
        assert_eq!(response.status(), StatusCode::OK, "{base_url}/metrics");
        response.text().await.expect("metrics text")
    }

    /// `PATCH /v1/subscriptions/{id}`.
    pub async fn patch_subscription(&self, id: &str, patch: Value) -> (StatusCode, Value) {
        self.track_delay_queues(&patch["retry"]);
        self.json_call(
            Method::PATCH,
            &format!("/v1/subscriptions/{id}"),
            Auth::Admin,
            Some(&patch),
        )
        .await
    }

    /// `DELETE /v1/subscriptions/{id}`.
    pub async fn delete_subscription(&self, id: &str) -> (StatusCode, Value) {
        self.json_call(
            Method::DELETE,
            &format!("/v1/subscriptions/{id}"),
            Auth::Admin,
            None,
        )
        .await
    }

    /// `POST /v1/events` with a JSON event.
    pub async fn post_event(&self, event: Value) -> (StatusCode, Value) {
        self.json_call(Method::POST, "/v1/events", Auth::Producer, Some(&event))
            .await
    }

    /// Posts an event and asserts 202; returns the assigned id.
    pub async fn send_event(&self, event: Value) -> String {
        let (status, body) = self.post_event(event.clone()).await;
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "posting {event} answered {body}"
        );
        body["ids"][0]
            .as_str()
            .unwrap_or_else(|| panic!("202 without ids: {body}"))
            .to_string()
    }

    /// `POST /v1/events` with these exact body bytes.
    pub async fn post_event_raw(&self, body: &[u8]) -> ApiResponse {
        self.api(
            Method::POST,
            "/v1/events",
            Auth::Producer,
            Some(body.to_vec()),
        )
        .await
    }

    /// `POST /v1/events/batch` with a JSON array.
    pub async fn post_batch(&self, events: Value) -> (StatusCode, Value) {
        self.json_call(
            Method::POST,
            "/v1/events/batch",
            Auth::Producer,
            Some(&events),
        )
        .await
    }
}
