//! A webhook receiver: a real axum HTTP server on 127.0.0.1:0 that records
//! every request (method, path, query, headers, exact body bytes, arrival
//! time, the status it answered) and answers as the test tells it to —
//! including 401 to requests whose credentials a test-given check refuses.
//!
//! PINGs (sent when a subscription is created or updated) are kept apart:
//! they are answered 200 unless the test refuses them (or their credentials),
//! never use up a scripted answer, and are not among the recorded deliveries,
//! so tests of delivery see only events.

use crate::wait;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::Router;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// HTTP method.
    pub method: Method,
    /// Path, e.g. `/hook`.
    pub path: String,
    /// Query string without `?`, if any.
    pub query: Option<String>,
    /// Every header (look-ups are case-insensitive).
    pub headers: HeaderMap,
    /// The exact body bytes.
    pub body: Bytes,
    /// When it arrived.
    pub at: Instant,
    /// When it arrived, by the wall clock (for comparing with epoch-aligned ticks).
    pub wall: chrono::DateTime<chrono::Utc>,
    /// The status the receiver answered.
    pub status: u16,
}

impl Recorded {
    /// A header value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON (panics with the body when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "request body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The event id: the envelope's `id`, else the `webhook-id` header.
    pub fn event_id(&self) -> Option<String> {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_string))
            .or_else(|| self.header("webhook-id").map(str::to_string))
    }

    /// Whether this is a PING: the envelope of a `ping` event, or (in
    /// `payload` body mode) its bare payload `{"subscription": id}`.
    pub fn is_ping(&self) -> bool {
        let Ok(body) = serde_json::from_slice::<serde_json::Value>(&self.body) else {
            return false;
        };
        let envelope = body["type"] == "ping"
            && body["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("ping_"));
        let bare = body
            .as_object()
            .is_some_and(|fields| fields.len() == 1 && fields.contains_key("subscription"));
        envelope || bare
    }

    /// Whether the receiver answered 2xx.
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// A one-line description for failure messages.
    pub fn summary(&self) -> String {
        let body = String::from_utf8_lossy(&self.body);
        let body: String = body.chars().take(160).collect();
        format!(
            "{} {}{} -> {} {}",
            self.method,
            self.path,
            self.query
                .as_deref()
                .map(|q| format!("?{q}"))
                .unwrap_or_default(),
            self.status,
            body
        )
    }
}

/// A test's check of a request's credentials.
type Check = Arc<dyn Fn(&Recorded) -> bool + Send + Sync>;

#[derive(Default)]
struct Authorizer(Option<Check>);

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Authorizer(set)"
        } else {
            "Authorizer(none)"
        })
    }
}

#[derive(Debug)]
struct Script {
    /// Statuses for the next requests, in order.
    next: VecDeque<u16>,
    /// Status once `next` is used up.
    default: u16,
    /// How long to wait before answering.
    delay: Duration,
    /// Events refused until cleared, by event id, with the status to answer.
    refused_events: HashMap<String, u16>,
    /// Status answered to PINGs.
    ping_status: u16,
    /// Requests it refuses are answered 401.
    authorizer: Authorizer,
    /// `Retry-After` sent with every failing answer, when set.
    retry_after: Option<String>,
}

#[derive(Debug)]
struct Inner {
    requests: Vec<Recorded>,
    pings: Vec<Recorded>,
    script: Script,
    /// Requests being answered right now, and the most there ever were.
    in_flight: usize,
    max_in_flight: usize,
}

type Shared = Arc<Mutex<Inner>>;

/// A running receiver; the server stops when it is dropped.
pub struct Receiver {
    addr: SocketAddr,
    inner: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Receiver {
    /// Starts a receiver answering 200 to everything.
    pub async fn start() -> Self {
        let inner: Shared = Arc::new(Mutex::new(Inner {
            requests: Vec::new(),
            pings: Vec::new(),
            script: Script {
                next: VecDeque::new(),
                default: 200,
                delay: Duration::ZERO,
                refused_events: HashMap::new(),
                ping_status: 200,
                authorizer: Authorizer::default(),
                retry_after: None,
            },
            in_flight: 0,
            max_in_flight: 0,
        }));
        let app = Router::new()
            .fallback(record)
            .layer(DefaultBodyLimit::disable())
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the receiver");
        let addr = listener.local_addr().expect("receiver address");
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

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/hook`.
    pub fn url(&self) -> String {
        self.url_for("/hook")
    }

    /// `http://127.0.0.1:PORT<path>`.
    pub fn url_for(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers `status` to the next `count` requests, then goes back to the default.
    pub fn fail_next(&self, count: usize, status: u16) {
        self.lock()
            .script
            .next
            .extend(std::iter::repeat_n(status, count));
    }

    /// Answers `status` to every request carrying event `event_id` until
    /// [`Receiver::accept_event`] (other events are answered as usual).
    pub fn refuse_event(&self, event_id: &str, status: u16) {
        self.lock()
            .script
            .refused_events
            .insert(event_id.to_string(), status);
    }

    /// Stops refusing event `event_id`.
    pub fn accept_event(&self, event_id: &str) {
        self.lock().script.refused_events.remove(event_id);
    }

    /// Sends `Retry-After: value` with every failing answer from now on
    /// (`None`: without it again).
    pub fn send_retry_after(&self, value: Option<&str>) {
        self.lock().script.retry_after = value.map(str::to_string);
    }

    /// Answers `status` to every PING from now on (200 by default).
    pub fn answer_pings(&self, status: u16) {
        self.lock().script.ping_status = status;
    }

    /// Every PING so far, in arrival order.
    pub fn pings(&self) -> Vec<Recorded> {
        self.lock().pings.clone()
    }

    /// Answers 401 to every request for which `check` is false (before any
    /// scripted answer), as a receiver checking credentials does.
    pub fn require(&self, check: impl Fn(&Recorded) -> bool + Send + Sync + 'static) {
        self.lock().script.authorizer = Authorizer(Some(Arc::new(check)));
    }

    /// Answers `status` to every request from now on (after any scripted ones).
    pub fn answer_always(&self, status: u16) {
        self.lock().script.default = status;
    }

    /// Waits `delay` before answering each request.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().script.delay = delay;
    }

    /// The most requests that were ever being answered at once.
    pub fn max_in_flight(&self) -> usize {
        self.lock().max_in_flight
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// How many requests arrived so far.
    pub fn count(&self) -> usize {
        self.lock().requests.len()
    }

    /// The requests answered 2xx, in arrival order.
    pub fn successes(&self) -> Vec<Recorded> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.succeeded())
            .cloned()
            .collect()
    }

    /// Event ids of every request, in arrival order.
    pub fn event_ids(&self) -> Vec<String> {
        ids(&self.requests())
    }

    /// Waits until at least `n` requests arrived; returns all of them.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        self.wait_until(&format!("{n} requests"), timeout, |all| all.len() >= n)
            .await
    }

    /// Waits until at least `n` requests were answered 2xx; returns those.
    pub async fn wait_for_successes(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        self.wait_until(&format!("{n} successful requests"), timeout, |all| {
            all.iter().filter(|r| r.succeeded()).count() >= n
        })
        .await;
        self.successes()
    }

    /// Waits until requests carrying `n` distinct event ids arrived; returns all requests.
    pub async fn wait_for_distinct(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        self.wait_until(&format!("{n} distinct event ids"), timeout, |all| {
            all.iter()
                .filter_map(Recorded::event_id)
                .collect::<HashSet<_>>()
                .len()
                >= n
        })
        .await
    }

    /// Waits until `done` holds for the recorded requests; returns them.
    /// Panics after `timeout`, listing what arrived.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[Recorded]) -> bool,
    ) -> Vec<Recorded> {
        let what = format!("{what} at the receiver on {}", self.addr);
        wait::until(&what, timeout, || {
            let all = self.requests();
            let outcome = if done(&all) {
                Ok(all)
            } else {
                Err(describe(&all))
            };
            async move { outcome }
        })
        .await
    }

    /// Waits for exactly `n` requests: at least `n` within `timeout`, and
    /// still `n` after watching for `quiet` more. Returns them.
    pub async fn expect_exactly(
        &self,
        n: usize,
        timeout: Duration,
        quiet: Duration,
    ) -> Vec<Recorded> {
        self.wait_for(n, timeout).await;
        tokio::time::sleep(quiet).await;
        let all = self.requests();
        assert_eq!(
            all.len(),
            n,
            "expected exactly {n} requests at {}; got {}",
            self.addr,
            describe(&all)
        );
        all
    }

    /// Asserts that no request arrives within `quiet` (beyond those already there).
    pub async fn assert_no_more(&self, quiet: Duration) -> Vec<Recorded> {
        let before = self.count();
        tokio::time::sleep(quiet).await;
        let all = self.requests();
        assert_eq!(
            all.len(),
            before,
            "expected no further requests at {} within {quiet:?}; got {}",
            self.addr,
            describe(&all[before..])
        );
        all
    }
}

/// Event ids of `requests` (requests without one show as `<none>`).
pub fn ids(requests: &[Recorded]) -> Vec<String> {
    requests
        .iter()
        .map(|r| r.event_id().unwrap_or_else(|| "<none>".into()))
        .collect()
}

/// A readable list of requests, shortened when long.
pub fn describe(requests: &[Recorded]) -> String {
    const SHOWN: usize = 30;
    let mut text = format!("{} request(s)", requests.len());
    let skip = requests.len().saturating_sub(SHOWN);
    if skip > 0 {
        text.push_str(&format!(" (first {skip} not shown)"));
    }
    for (i, request) in requests.iter().enumerate().skip(skip) {
        text.push_str(&format!("\n  #{i}: {}", request.summary()));
    }
    text
}

async fn record(
    State(inner): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let at = Instant::now();
    let (status, delay, retry_after) = {
        let mut inner = inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut recorded = Recorded {
            method,
            path: uri.path().to_string(),
            query: uri.query().map(str::to_string),
            headers,
            body,
            at,
            wall: chrono::Utc::now(),
            status: 0,
        };
        let unauthorized = inner
            .script
            .authorizer
            .0
            .as_ref()
            .is_some_and(|check| !check(&recorded));
        if recorded.is_ping() {
            recorded.status = if unauthorized {
                401
            } else {
                inner.script.ping_status
            };
            let status = recorded.status;
            inner.pings.push(recorded);
            return StatusCode::from_u16(status)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
                .into_response();
        }
        let refused = if unauthorized {
            Some(401)
        } else {
            recorded
                .event_id()
                .and_then(|id| inner.script.refused_events.get(&id).copied())
        };
        let status = match refused {
            Some(status) => status,
            None => inner
                .script
                .next
                .pop_front()
                .unwrap_or(inner.script.default),
        };
        recorded.status = status;
        inner.requests.push(recorded);
        inner.in_flight += 1;
        inner.max_in_flight = inner.max_in_flight.max(inner.in_flight);
        let retry_after = inner
            .script
            .retry_after
            .clone()
            .filter(|_| !(200..300).contains(&status));
        (status, inner.script.delay, retry_after)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    inner.lock().unwrap_or_else(|e| e.into_inner()).in_flight -= 1;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match retry_after {
        Some(value) => (status, [(axum::http::header::RETRY_AFTER, value)]).into_response(),
        None => status.into_response(),
    }
}
