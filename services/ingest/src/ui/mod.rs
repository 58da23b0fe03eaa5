//! The status page under `/ui/`: server-rendered HTML on ingest's HTTP
//! server, readable without JavaScript and fetching nothing from outside.
//!
//! Operators sign in with the admin token and see every tenant; partners
//! sign in with a client id and secret (slowed down after failures like the
//! token endpoint) or open a one-time portal link, and see only their own
//! subscriptions. A session is a random cookie value (`HttpOnly`,
//! `SameSite=Strict`, `Secure` under TLS) whose digest names a Redis record,
//! so every replica knows it. Every form carries the session's CSRF token
//! (the sign-in forms a short-lived cookie's); every answer sends a strict
//! Content-Security-Policy. Actions go through the API's own handlers, with
//! the session as the caller, so the same rules and the audit trail apply.

pub mod html;

use crate::api::caller::{check_tenant_active, Caller};
use crate::api::{ApiError, ApiState};
use crate::tenants::credentials::{self, Scope};
use crate::tenants::store::{Grant, Principal};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use html::{button, csrf_field, escape, page, when, when_text, SubscriptionRow, Viewer};
use postline_shared::model::subscription::{Subscription, SubscriptionStatus};
use std::collections::HashMap;
use std::fmt::Write;
use subtle::ConstantTimeEq;

/// The session cookie.
const SESSION_COOKIE: &str = "postline_session";
/// The sign-in forms' CSRF cookie.
const LOGIN_COOKIE: &str = "postline_login";
/// How long a sign-in form stays usable.
const LOGIN_FORM_SECS: u64 = 600;
/// Largest form body.
const MAX_FORM_BYTES: usize = 8 * 1024;
/// The Content-Security-Policy of every page: nothing but this origin's
/// stylesheet, no script at all, forms only to this origin, no framing.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The `/ui` routes.
pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(overview))
        .route("/ui/style.css", get(style))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/portal", get(portal_page).post(portal))
        .route("/ui/logout", post(logout))
        .route("/ui/subscriptions/{id}", get(detail))
        .route("/ui/subscriptions/{id}/{action}", post(action))
        .layer(axum::middleware::map_response(protect))
}

/// Security headers on every status-page answer.
async fn protect(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = |headers: &mut HeaderMap, name: &'static str, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(headers, "content-security-policy", CSP);
    set(headers, "x-content-type-options", "nosniff");
    set(headers, "x-frame-options", "DENY");
    // Portal links carry their token in the query: never pass URLs on.
    set(headers, "referrer-policy", "no-referrer");
    if !headers.contains_key(header::CACHE_CONTROL) {
        set(headers, "cache-control", "no-store");
    }
    response
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        html::STYLE,
    )
        .into_response()
}

/// An HTML answer.
fn html_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

/// A refusal page saying why, with the status of the refusal.
fn refused(status: StatusCode, message: &str, viewer: Option<&Viewer<'_>>) -> Response {
    html_response(
        status,
        page(
            "Refused",
            viewer,
            &format!(
                "<p class=\"refused\" id=\"refused\">{}</p><p><a href=\"/ui/\">Back</a></p>",
                escape(message)
            ),
        ),
    )
}

/// The value of cookie `name` in the request.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// Whether cookies must be `Secure` for this request.
fn secure(state: &ApiState, headers: &HeaderMap) -> bool {
    state.ui.secure_cookies
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value (`max_age` 0 removes the cookie).
pub fn set_cookie(name: &str, value: &str, max_age: u64, secure: bool) -> String {
    format!(
        "{name}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Parses a bounded form body.
fn form(body: &[u8]) -> Option<HashMap<String, String>> {
    if body.len() > MAX_FORM_BYTES {
        return None;
    }
    Some(url::form_urlencoded::parse(body).into_owned().collect())
}

fn same(a: &str, b: &str) -> bool {
    !a.is_empty() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A signed-in visitor.
struct Session {
    caller: Caller,
    csrf: String,
    label: String,
}

impl Session {
    fn viewer(&self) -> Viewer<'_> {
        Viewer {
            label: &self.label,
            csrf: &self.csrf,
        }
    }
}

/// The session of the request, if it has a live one whose tenant is active.
async fn session(state: &ApiState, headers: &HeaderMap) -> Result<Option<Session>, Response> {
    let Some(value) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let grant = state.tenants.session(value).await.map_err(|error| {
        tracing::error!(%error, "reading a session failed");
        refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "sessions unavailable; retry",
            None,
        )
    })?;
    let Some(Grant {
        principal,
        csrf: Some(csrf),
        ..
    }) = grant
    else {
        return Ok(None);
    };
    if let Principal::Tenant { tenant, .. } = &principal {
        if let Err(error) = check_tenant_active(state, tenant).await {
            return Err(refused(error.status(), &error.problem().message, None));
        }
    }
    let label = match &principal {
        Principal::Admin => "operator".to_string(),
        Principal::Tenant { tenant, .. } => tenant.to_string(),
    };
    Ok(Some(Session {
        caller: Caller {
            principal,
            via: "ui",
        },
        csrf,
        label,
    }))
}

/// The session, or a redirect to the sign-in page.
async fn signed_in(state: &ApiState, headers: &HeaderMap) -> Result<Session, Response> {
    session(state, headers)
        .await?
        .ok_or_else(|| Redirect::to("/ui/login").into_response())
}

/// `GET /ui/login`: both sign-in forms, with a fresh sign-in CSRF cookie.
async fn login_page(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let token = credentials::random_value("");
    let csrf = csrf_field(&token);
    let body = format!(
        "<form method=\"post\" action=\"/ui/login\" class=\"signin\" id=\"partner-signin\">\
         <h2>Partner</h2>{csrf}<input type=\"hidden\" name=\"kind\" value=\"client\">\
         <label>Client id <input name=\"client_id\" autocomplete=\"username\" required></label>\
         <label>Client secret <input name=\"client_secret\" type=\"password\" autocomplete=\"current-password\" required></label>\
         <button type=\"submit\">Sign in</button></form>\
         <form method=\"post\" action=\"/ui/login\" class=\"signin\" id=\"operator-signin\">\
         <h2>Operator</h2>{csrf}<input type=\"hidden\" name=\"kind\" value=\"admin\">\
         <label>Admin token <input name=\"token\" type=\"password\" autocomplete=\"current-password\" required></label>\
         <button type=\"submit\">Sign in</button></form>"
    );
    let mut response = html_response(StatusCode::OK, page("Sign in", None, &body));
    if let Ok(value) = HeaderValue::from_str(&set_cookie(
        LOGIN_COOKIE,
        &token,
        LOGIN_FORM_SECS,
        secure(&state, &headers),
    )) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// Checks the sign-in CSRF token of a sign-in form.
fn login_csrf_ok(headers: &HeaderMap, fields: &HashMap<String, String>) -> bool {
    match (cookie(headers, LOGIN_COOKIE), fields.get("csrf")) {
        (Some(expected), Some(given)) => same(given, expected),
        _ => false,
    }
}

/// Opens a session for `principal` and sends the visitor to the overview.
async fn open_session(state: &ApiState, headers: &HeaderMap, principal: Principal) -> Response {
    let ttl = state.ui.session_ttl;
    match state.tenants.open_session(principal, ttl).await {
        Ok(value) => {
            let secure = secure(state, headers);
            let mut response = Redirect::to("/ui/").into_response();
            for cookie in [
                set_cookie(SESSION_COOKIE, &value, ttl.as_secs(), secure),
                set_cookie(LOGIN_COOKIE, "", 0, secure),
            ] {
                if let Ok(value) = HeaderValue::from_str(&cookie) {
                    response.headers_mut().append(header::SET_COOKIE, value);
                }
            }
            response
        }
        Err(error) => {
            tracing::error!(%error, "opening a session failed");
            refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "sessions unavailable; retry",
                None,
            )
        }
    }
}

/// `POST /ui/login`: the admin token, or a client id and secret.
async fn login(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(fields) = form(&body) else {
        return refused(StatusCode::PAYLOAD_TOO_LARGE, "form too large", None);
    };
    if !login_csrf_ok(&headers, &fields) {
        return refused(
            StatusCode::FORBIDDEN,
            "the form's CSRF token is missing or wrong; reload the sign-in page",
            None,
        );
    }
    let field = |name: &str| fields.get(name).map(String::as_str).unwrap_or_default();
    let failed = || refused(StatusCode::UNAUTHORIZED, "sign-in failed", None);
    match field("kind") {
        "admin" => {
            if same(field("token"), state.admin_token.expose()) {
                tracing::info!("operator signed in to the status page");
                open_session(&state, &headers, Principal::Admin).await
            } else {
                tracing::info!("operator sign-in to the status page failed");
                failed()
            }
        }
        "client" => {
            let client_id = field("client_id");
            match crate::api::oauth::check_client(&state, client_id, field("client_secret")).await {
                Ok(Ok(client)) => {
                    if let Err(error) = check_tenant_active(&state, &client.tenant).await {
                        return refused(error.status(), &error.problem().message, None);
                    }
                    tracing::info!(%client_id, tenant = %client.tenant, "partner signed in to the status page");
                    let principal = Principal::Tenant {
                        tenant: client.tenant,
                        client_id: client.client_id,
                        scopes: client.scopes,
                    };
                    open_session(&state, &headers, principal).await
                }
                Ok(Err(())) => failed(),
                Err(error) => refused(error.status(), &error.problem().message, None),
            }
        }
        _ => refused(StatusCode::BAD_REQUEST, "unknown sign-in kind", None),
    }
}

/// `GET /ui/portal?token=…`: a page whose button uses the portal link (a
/// GET only shows it, so link previews cannot use it up).
async fn portal_page(
    State(state): State<ApiState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let token = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(n, _)| n == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let csrf = credentials::random_value("");
    let body = format!(
        "<form method=\"post\" action=\"/ui/portal\" class=\"signin\" id=\"portal\">{}\
         <input type=\"hidden\" name=\"token\" value=\"{}\">\
         <p>This link opens your webhook status page.</p>\
         <button type=\"submit\">Open the status page</button></form>",
        csrf_field(&csrf),
        escape(&token)
    );
    let mut response = html_response(StatusCode::OK, page("Webhook status", None, &body));
    if let Ok(value) = HeaderValue::from_str(&set_cookie(
        LOGIN_COOKIE,
        &csrf,
        LOGIN_FORM_SECS,
        secure(&state, &headers),
    )) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// `POST /ui/portal`: uses up the portal link and opens its session.
async fn portal(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(fields) = form(&body) else {
        return refused(StatusCode::PAYLOAD_TOO_LARGE, "form too large", None);
    };
    if !login_csrf_ok(&headers, &fields) {
        return refused(
            StatusCode::FORBIDDEN,
            "the form's CSRF token is missing or wrong",
            None,
        );
    }
    let token = fields.get("token").map(String::as_str).unwrap_or_default();
    match state.tenants.take_link(token).await {
        Ok(Some(grant)) => {
            tracing::info!("portal link used");
            open_session(&state, &headers, grant.principal).await
        }
        Ok(None) => refused(
            StatusCode::UNAUTHORIZED,
            "this link has expired or was used already; ask for a new one",
            None,
        ),
        Err(error) => {
            tracing::error!(%error, "reading a portal link failed");
            refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "links unavailable; retry",
                None,
            )
        }
    }
}

/// `POST /ui/logout`.
async fn logout(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    let session = match signed_in(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let fields = form(&body).unwrap_or_default();
    if !same(
        fields.get("csrf").map(String::as_str).unwrap_or_default(),
        &session.csrf,
    ) {
        return refused(
            StatusCode::FORBIDDEN,
            "the form's CSRF token is missing or wrong",
            Some(&session.viewer()),
        );
    }
    if let Some(value) = cookie(&headers, SESSION_COOKIE) {
        let _ = state.tenants.close_session(value).await;
    }
    let mut response = Redirect::to("/ui/login").into_response();
    if let Ok(value) =
        HeaderValue::from_str(&set_cookie(SESSION_COOKIE, "", 0, secure(&state, &headers)))
    {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// What the page shows of `subscription`, read from the delivery records.
async fn row(
    state: &ApiState,
    subscription: &Subscription,
    channel: Option<&lapin::Channel>,
) -> SubscriptionRow {
    let id = subscription.id();
    let now = Utc::now();
    let summary = state.delivery.summary(id).await.unwrap_or_default();
    let block = state.delivery.block(id).await.ok().flatten();
    let attempts = state
        .delivery
        .recent_attempts(
            id,
            postline_shared::redis::delivery_state::DEFAULT_ATTEMPT_LOG_CAP,
        )
        .await
        .unwrap_or_default();
    let delivered_since = |age: chrono::Duration| {
        attempts
            .iter()
            .filter(|a| a.outcome == "delivered" && a.at > now - age)
            .count()
    };
    let parked = state
        .delivery
        .parked_counts(std::slice::from_ref(id))
        .await
        .ok()
        .and_then(|c| c.first().copied())
        .unwrap_or(0);
    let backlog = match channel {
        Some(channel) => state.topology.subscription_backlog(channel, id).await.ok(),
        None => None,
    };
    let status = match subscription.spec.status {
        SubscriptionStatus::Active => "active",
        SubscriptionStatus::Paused => "paused",
        SubscriptionStatus::Disabled => "disabled",
    };
    SubscriptionRow {
        id: id.to_string(),
        tenant: subscription.spec.tenant.as_ref().map(ToString::to_string),
        endpoint: subscription.spec.endpoint.clone(),
        event_types: subscription.spec.event_types.clone(),
        status: status.to_string(),
        disabled_reason: subscription.disabled.as_ref().map(|d| d.reason.clone()),
        disabled_at: subscription.disabled.as_ref().map(|d| d.at),
        blocked: block.map(|b| (b.first_failure_at, b.next_attempt_at, b.last_error)),
        backlog,
        last_success_at: summary.get("last_success_at").cloned(),
        last_failure_at: summary.get("last_failure_at").cloned(),
        last_error: summary.get("last_error").cloned(),
        delivered_hour: delivered_since(chrono::Duration::hours(1)),
        delivered_day: delivered_since(chrono::Duration::days(1)),
        parked,
    }
}

async fn management_channel(state: &ApiState) -> Option<lapin::Channel> {
    let link = state.broker.borrow().clone()?;
    link.admin_channel().await.ok()
}

/// `GET /ui/`: every subscription the visitor may see (the operator also sees the tenants).
async fn overview(
    State(state): State<ApiState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let session = match signed_in(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let subscriptions = match crate::api::access::visible_list(&state, &session.caller, None).await
    {
        Ok(list) => list,
        Err(error) => {
            return refused(
                error.status(),
                &error.problem().message,
                Some(&session.viewer()),
            )
        }
    };
    let channel = management_channel(&state).await;
    let mut rows = Vec::with_capacity(subscriptions.len());
    for subscription in &subscriptions {
        rows.push(row(&state, subscription, channel.as_ref()).await);
    }
    if let Some(channel) = channel {
        let _ = channel.close(200, "status page done".into()).await;
    }
    let now = Utc::now();
    let mut body = notice(query.as_deref());
    body.push_str(&html::subscriptions_table(
        &rows,
        session.caller.is_admin(),
        now,
    ));
    if session.caller.is_admin() {
        if let Ok(tenants) = state.tenants.list().await {
            body.push_str("<h2>Tenants</h2><table id=\"tenants\"><thead><tr><th>Tenant</th><th>Name</th><th>Status</th><th>Allowed event types</th><th>Subscriptions</th></tr></thead><tbody>");
            for tenant in tenants {
                let count = subscriptions
                    .iter()
                    .filter(|s| s.spec.tenant.as_ref() == Some(&tenant.spec.id))
                    .count();
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td>{}</td><td>{:?}</td><td>{}</td><td>{count} / {}</td></tr>",
                    escape(tenant.spec.id.as_str()),
                    escape(&tenant.spec.name),
                    tenant.spec.status,
                    escape(&tenant.spec.allowed_event_types.join(", ")),
                    tenant.spec.max_subscriptions,
                );
            }
            body.push_str("</tbody></table>");
        }
    } else if let Some(tenant) = session.caller.tenant() {
        if let Ok(entries) = state.audit.recent(tenant.as_str(), 20).await {
            body.push_str(&audit_table(&entries, now));
        }
    }
    let title = if session.caller.is_admin() {
        "All webhooks"
    } else {
        "Your webhooks"
    };
    html_response(StatusCode::OK, page(title, Some(&session.viewer()), &body))
}

fn audit_table(entries: &[crate::tenants::audit::AuditEntry], now: DateTime<Utc>) -> String {
    let mut html = String::from("<h2>Recent changes</h2><table id=\"audit\"><thead><tr><th>When</th><th>Who</th><th>What</th><th>On</th><th>Fields</th></tr></thead><tbody>");
    for entry in entries {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{} ({})</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            when(entry.at, now),
            escape(&entry.actor),
            escape(&entry.via),
            escape(&entry.action),
            escape(&entry.resource),
            escape(&entry.fields.join(", ")),
        );
    }
    html.push_str("</tbody></table>");
    html
}

/// The notice of a completed action (`?done=…`), from a fixed list.
fn notice(query: Option<&str>) -> String {
    let done = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(n, _)| n == "done")
        .map(|(_, v)| v.into_owned());
    let text = match done.as_deref() {
        Some("pause") => "Paused.",
        Some("resume") => "Resumed.",
        Some("retry") => "The blocked event is being retried now.",
        Some("replay") => "The parked event was queued again.",
        Some("ping") => "The PING was answered.",
        _ => return String::new(),
    };
    format!("<p class=\"notice\" id=\"notice\">{text}</p>")
}

/// `GET /ui/subscriptions/{id}`: one subscription with its recent attempts and parked events.
async fn detail(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let session = match signed_in(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let viewer = session.viewer();
    let id = match crate::api::access::path_id(&id) {
        Ok(id) => id,
        Err(error) => return refused(error.status(), &error.problem().message, Some(&viewer)),
    };
    let subscription =
        match crate::api::access::visible(&state, &session.caller, &id, Scope::SubscriptionsRead)
            .await
        {
            Ok(s) => s,
            Err(error) => return refused(error.status(), &error.problem().message, Some(&viewer)),
        };
    let channel = management_channel(&state).await;
    let row = row(&state, &subscription, channel.as_ref()).await;
    if let Some(channel) = channel {
        let _ = channel.close(200, "status page done".into()).await;
    }
    let now = Utc::now();
    let (word, detail) = html::status_line(&row, now);
    let base = format!("/ui/subscriptions/{}", row.id);
    let csrf = &session.csrf;
    let mut body = notice(query.as_deref());
    let _ = write!(
        body,
        "<dl id=\"facts\"><dt>Status</dt><dd class=\"status status-{word}\" id=\"status\" data-status=\"{word}\">{detail}</dd>\
         <dt>Endpoint</dt><dd>{}</dd><dt>Event types</dt><dd>{}</dd>\
         <dt>Backlog</dt><dd id=\"backlog\">{}</dd><dt>Last success</dt><dd>{}</dd>\
         <dt>Last failure</dt><dd>{} {}</dd><dt>Delivered</dt><dd>{} in the last hour, {} in the last day</dd></dl>",
        escape(&row.endpoint),
        escape(&row.event_types.join(", ")),
        row.backlog.map_or("?".to_string(), |b| b.to_string()),
        when_text(row.last_success_at.as_deref(), now),
        when_text(row.last_failure_at.as_deref(), now),
        escape(row.last_error.as_deref().unwrap_or("")),
        row.delivered_hour,
        row.delivered_day,
    );
    body.push_str("<p id=\"actions\">");
    if row.status == "active" {
        body.push_str(&button(&format!("{base}/pause"), "Pause", csrf, ""));
    } else {
        body.push_str(&button(&format!("{base}/resume"), "Resume", csrf, ""));
    }
    if row.blocked.is_some() {
        body.push_str(&button(&format!("{base}/retry"), "Retry now", csrf, ""));
    }
    body.push_str(&button(&format!("{base}/ping"), "Send a PING", csrf, ""));
    body.push_str("</p>");
    let attempts = state
        .delivery
        .recent_attempts(&id, 50)
        .await
        .unwrap_or_default();
    body.push_str("<h2>Recent attempts</h2><table id=\"attempts\"><thead><tr><th>When</th><th>Event</th><th>Type</th><th>Attempt</th><th>Outcome</th><th>Status or error</th><th>Duration</th></tr></thead><tbody>");
    for attempt in &attempts {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ms</td></tr>",
            when(attempt.at, now),
            escape(attempt.event_id.as_str()),
            escape(&attempt.event_type),
            attempt.attempt,
            escape(&attempt.outcome),
            escape(
                &attempt
                    .status
                    .map(|s| s.to_string())
                    .or_else(|| attempt.error.clone())
                    .unwrap_or_default()
            ),
            attempt.duration_ms,
        );
    }
    body.push_str("</tbody></table>");
    let parked = state.delivery.parked(&id).await.unwrap_or_default();
    body.push_str("<h2>Parked events</h2>");
    if parked.is_empty() {
        body.push_str("<p>None.</p>");
    } else {
        body.push_str("<table id=\"parked\"><thead><tr><th>Event</th><th>Type</th><th>Attempts</th><th>Given up</th><th>Last error</th><th></th></tr></thead><tbody>");
        for event in &parked {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(event.event_id.as_str()),
                escape(&event.event_type),
                event.attempts,
                when(event.given_up_at, now),
                escape(&event.last_error),
                button(
                    &format!("{base}/replay"),
                    "Replay",
                    csrf,
                    &format!(
                        "<input type=\"hidden\" name=\"event_id\" value=\"{}\">",
                        escape(event.event_id.as_str())
                    ),
                ),
            );
        }
        body.push_str("</tbody></table>");
    }
    html_response(
        StatusCode::OK,
        page(&format!("Subscription {}", row.id), Some(&viewer), &body),
    )
}

/// `POST /ui/subscriptions/{id}/{action}`: pause, resume, retry, replay or
/// ping, through the API's handlers with the session as the caller.
async fn action(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let session = match signed_in(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let viewer = session.viewer();
    let Some(fields) = form(&body) else {
        return refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            "form too large",
            Some(&viewer),
        );
    };
    if !same(
        fields.get("csrf").map(String::as_str).unwrap_or_default(),
        &session.csrf,
    ) {
        tracing::info!(subscription = %id, "status page action refused: CSRF token missing or wrong");
        return refused(
            StatusCode::FORBIDDEN,
            "the form's CSRF token is missing or wrong",
            Some(&viewer),
        );
    }
    let caller = session.caller.clone();
    let outcome = run_action(&state, caller, &id, &action, &fields).await;
    match outcome {
        Ok(()) => Redirect::to(&format!("/ui/subscriptions/{id}?done={action}")).into_response(),
        Err(error) => refused(error.status(), &error.problem().message, Some(&viewer)),
    }
}

async fn run_action(
    state: &ApiState,
    caller: Caller,
    id: &str,
    action: &str,
    fields: &HashMap<String, String>,
) -> Result<(), ApiError> {
    use crate::api::{access, delivery_controls, subscriptions};
    let path = || axum::extract::Path(id.to_string());
    let status_patch = |status: &str| Bytes::from(format!("{{\"status\":\"{status}\"}}"));
    match action {
        "pause" => {
            subscriptions::update(State(state.clone()), caller, path(), status_patch("paused"))
                .await
                .map(|_| ())
        }
        "resume" => {
            subscriptions::update(State(state.clone()), caller, path(), status_patch("active"))
                .await
                .map(|_| ())
        }
        "retry" => delivery_controls::retry_now(State(state.clone()), caller, path())
            .await
            .map(|_| ()),
        "replay" => {
            let event_id = fields.get("event_id").cloned().unwrap_or_default();
            delivery_controls::replay_one(
                State(state.clone()),
                caller,
                axum::extract::Path((id.to_string(), event_id)),
            )
            .await
            .map(|_| ())
        }
        "ping" => {
            let id = access::path_id(id)?;
            let subscription =
                access::visible(state, &caller, &id, Scope::SubscriptionsWrite).await?;
            let outcome = crate::api::ping::verify(state, &subscription).await;
            access::audit(
                state,
                &caller,
                &subscription,
                "subscription.ping",
                Vec::new(),
            )
            .await;
            outcome.map(|_| ())
        }
        _ => Err(ApiError::not_found("no such action")),
    }
}
