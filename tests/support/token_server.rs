//! A partner's token endpoint: a real axum HTTP server on 127.0.0.1:0 that
//! records every call (headers, body, arrival time), issues numbered tokens
//! with a chosen lifetime, and can be told to be down, slow, or to answer
//! garbage — as OAuth2 servers and plain JSON login servers do in the wild.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One call to the token endpoint.
#[derive(Debug, Clone)]
pub struct TokenCall {
    /// Request headers.
    pub headers: HeaderMap,
    /// Exact body bytes.
    pub body: Bytes,
    /// When it arrived.
    pub at: Instant,
}

impl TokenCall {
    /// A header value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as form fields (`application/x-www-form-urlencoded`).
    pub fn form(&self) -> BTreeMap<String, String> {
        url::form_urlencoded::parse(&self.body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A token the server issued.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The token.
    pub token: String,
    /// When it was issued.
    pub at: Instant,
    /// How long the server said it lives.
    pub lifetime: Duration,
}

/// How the server answers.
#[derive(Debug, Clone)]
enum Behaviour {
    /// Issues a token.
    Issue,
    /// Answers this status and body.
    Fail(u16, String),
    /// Answers 200 with this non-JSON body.
    Garbage(String),
}

/// Where the token is in the answer.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// `{"access_token", "token_type", "expires_in"}` (OAuth2).
    OAuth,
    /// `{"data": {"jwt", "ttl"}}` (a home-made login server).
    Nested,
}

#[derive(Debug)]
struct Inner {
    calls: Vec<TokenCall>,
    issued: Vec<Issued>,
    behaviour: Behaviour,
    shape: Shape,
    lifetime: u64,
    delay: Duration,
    prefix: String,
}

type Shared = Arc<Mutex<Inner>>;

/// A running token endpoint; the server stops when it is dropped.
pub struct TokenServer {
    addr: SocketAddr,
    inner: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl TokenServer {
    /// Starts a server issuing OAuth2-shaped tokens living an hour.
    pub async fn start() -> Self {
        let inner: Shared = Arc::new(Mutex::new(Inner {
            calls: Vec::new(),
            issued: Vec::new(),
            behaviour: Behaviour::Issue,
            shape: Shape::OAuth,
            lifetime: 3600,
            delay: Duration::ZERO,
            prefix: format!("tok-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        }));
        let app = Router::new().fallback(answer).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the token server");
        let addr = listener.local_addr().expect("token server address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            inner,
            server,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `http://127.0.0.1:PORT/token`.
    pub fn url(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<TokenCall> {
        self.lock().calls.clone()
    }

    /// How many calls arrived.
    pub fn call_count(&self) -> usize {
        self.lock().calls.len()
    }

    /// Every token issued, in order.
    pub fn issued(&self) -> Vec<Issued> {
        self.lock().issued.clone()
    }

    /// The tokens issued, in order.
    pub fn tokens(&self) -> Vec<String> {
        self.lock().issued.iter().map(|i| i.token.clone()).collect()
    }

    /// Tokens issued from now on live `secs` seconds.
    pub fn set_lifetime(&self, secs: u64) {
        self.lock().lifetime = secs;
    }

    /// Waits `delay` before answering.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// Answers as `{"data": {"jwt": …, "ttl": …}}` instead of OAuth2.
    pub fn nested_answers(&self) {
        self.lock().shape = Shape::Nested;
    }

    /// Answers `status` with `body` from now on.
    pub fn fail_with(&self, status: u16, body: &str) {
        self.lock().behaviour = Behaviour::Fail(status, body.to_string());
    }

    /// Answers 200 with a non-JSON `body` from now on.
    pub fn answer_garbage(&self, body: &str) {
        self.lock().behaviour = Behaviour::Garbage(body.to_string());
    }

    /// Issues tokens again, without delay.
    pub fn heal(&self) {
        let mut inner = self.lock();
        inner.behaviour = Behaviour::Issue;
        inner.delay = Duration::ZERO;
    }

    /// Whether `token` was issued here and has not outlived its lifetime.
    pub fn is_valid(&self, token: &str) -> bool {
        valid(&self.inner, token)
    }

    /// [`TokenServer::is_valid`] as a closure that can outlive a borrow, for a
    /// receiver that checks tokens against this server.
    pub fn validator(&self) -> impl Fn(&str) -> bool + Send + Sync + 'static {
        let inner = self.inner.clone();
        move |token| valid(&inner, token)
    }
}

fn valid(inner: &Shared, token: &str) -> bool {
    inner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .issued
        .iter()
        .any(|i| i.token == token && i.at.elapsed() < i.lifetime)
}

async fn answer(State(inner): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let at = Instant::now();
    let (behaviour, delay) = {
        let mut inner = inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.calls.push(TokenCall { headers, body, at });
        (inner.behaviour.clone(), inner.delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match behaviour {
        Behaviour::Fail(status, body) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            [("content-type", "application/json")],
            body,
        )
            .into_response(),
        Behaviour::Garbage(body) => {
            (StatusCode::OK, [("content-type", "text/html")], body).into_response()
        }
        Behaviour::Issue => {
            let mut inner = inner.lock().unwrap_or_else(|e| e.into_inner());
            let token = format!("{}-{}", inner.prefix, inner.issued.len() + 1);
            let lifetime = inner.lifetime;
            inner.issued.push(Issued {
                token: token.clone(),
                at,
                lifetime: Duration::from_secs(lifetime),
            });
            let body = match inner.shape {
                Shape::OAuth => serde_json::json!({
                    "access_token": token,
                    "token_type": "Bearer",
                    "expires_in": lifetime,
                }),
                Shape::Nested => serde_json::json!({"data": {"jwt": token, "ttl": lifetime}}),
            };
            axum::Json(body).into_response()
        }
    }
}
