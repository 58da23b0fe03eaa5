//! Receiver authentication end to end (ingest → delivery → receiver), and the
//! token service behind the token modes: every mode sends exactly its
//! credential; a burst of requests for a cold token makes one call to the
//! partner, across two token-service processes; a token in use is replaced
//! before it lapses; a receiver's 401 makes one refresh and one resend; a
//! token endpoint that is down, slow or answers garbage fails the attempt
//! with a clear error and loses nothing; and no credential shows in API
//! answers, `Debug` output, logs, or a dump of Redis.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use postline_shared::redis::subscription_store::StoreError;
use postline_shared::runtime::encryption::KeyRing;
use postline_tests::api::Auth;
use postline_tests::events::{ids_of, numbered};
use postline_tests::receiver::ids;
use postline_tests::signatures::new_whsec;
use postline_tests::{logs, wait, Receiver, Recorded, TestEnv, TokenServer, DEADLINE, QUIET};
use redis::AsyncCommands;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

/// A random secret-like value with a recognisable prefix.
fn secret(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", BASE64.encode(format!("{user}:{password}")))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The one request that arrived on `path`.
fn on_path<'a>(requests: &'a [Recorded], path: &str) -> &'a Recorded {
    let found: Vec<&Recorded> = requests.iter().filter(|r| r.path == path).collect();
    assert_eq!(found.len(), 1, "one request on {path}: {requests:?}");
    found[0]
}

/// The delivery state hash of a subscription.
async fn state(env: &TestEnv, id: &str) -> HashMap<String, String> {
    env.redis()
        .hgetall(env.keys.delivery_state(&id.parse().expect("an id")))
        .await
        .expect("HGETALL delivery state")
}

/// Waits until the subscription's `last_error` contains `needle`; returns it.
async fn wait_last_error(env: &TestEnv, id: &str, needle: &str) -> String {
    wait::until(
        &format!("{id}'s last_error to mention {needle:?}"),
        DEADLINE,
        || async move {
            let state = state(env, id).await;
            match state.get("last_error") {
                Some(error) if error.contains(needle) => Ok(error.clone()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

/// The value of one sample line (`name{labels} value`) of a metrics page, 0 when absent.
fn sample(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn issue_token(env: &TestEnv, base_url: &str, id: &str) -> (StatusCode, Value) {
    let response = env
        .http()
        .post(format!("{base_url}/v1/tokens/{id}"))
        .send()
        .await
        .expect("POST /v1/tokens");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn invalidate_token(
    env: &TestEnv,
    base_url: &str,
    id: &str,
    rejected: &str,
) -> (StatusCode, Value) {
    let response = env
        .http()
        .post(format!("{base_url}/v1/tokens/{id}/invalidate"))
        .json(&json!({ "access_token": rejected }))
        .send()
        .await
        .expect("POST /v1/tokens/…/invalidate");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `count` concurrent token requests spread over `urls`; returns the tokens handed out.
async fn concurrent_tokens(
    env: &TestEnv,
    urls: &[String],
    id: &str,
    count: usize,
    rejected: Option<&str>,
) -> Vec<String> {
    let requests = (0..count).map(|i| {
        let url = urls[i % urls.len()].clone();
        async move {
            let (status, body) = match rejected {
                None => issue_token(env, &url, id).await,
                Some(token) => invalidate_token(env, &url, id, token).await,
            };
            assert_eq!(status, StatusCode::OK, "{body}");
            body["access_token"]
                .as_str()
                .unwrap_or_else(|| panic!("no token: {body}"))
                .to_string()
        }
    });
    futures::future::join_all(requests).await
}

fn oauth_spec(id: &str, endpoint: &str, token_url: &str, client_secret: &str) -> Value {
    json!({
        "id": id,
        "endpoint": endpoint,
        "event_types": ["order.*"],
        "auth": {
            "mode": "oauth2_client_credentials",
            "token_url": token_url,
            "client_id": "postline",
            "client_secret": client_secret,
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_modes_send_exactly_their_credential() {
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    let header_key = secret("hdrkey");
    let query_key = secret("qrykey");
    let password = secret("pw");
    let static_token = secret("static");
    let specs = [
        ("plain", "/plain", json!({"mode": "none"})),
        (
            "key_header",
            "/header",
            json!({"mode": "api_key", "name": "X-Transfocus-Api-Key", "in": "header", "key": header_key}),
        ),
        (
            "key_query",
            "/query?site=7",
            json!({"mode": "api_key", "name": "apikey", "in": "query", "key": query_key}),
        ),
        (
            "basic",
            "/basic",
            json!({"mode": "basic", "username": "transfocus", "password": password}),
        ),
        (
            "bearer",
            "/bearer",
            json!({"mode": "bearer", "token": static_token}),
        ),
    ];
    for (id, path, auth) in specs {
        env.subscribe(json!({
            "id": id,
            "endpoint": receiver.url_for(path),
            "event_types": ["order.*"],
            "auth": auth,
        }))
        .await;
    }
    env.send_event(json!({"type": "order.status", "payload": {"order": 1}}))
        .await;
    let got = receiver.expect_exactly(5, DEADLINE, QUIET).await;

    let credentials = |r: &Recorded| {
        (
            r.header("authorization").map(str::to_string),
            r.header("x-transfocus-api-key").map(str::to_string),
            r.query.clone(),
        )
    };
    assert_eq!(credentials(on_path(&got, "/plain")), (None, None, None));
    assert_eq!(
        credentials(on_path(&got, "/header")),
        (None, Some(header_key.clone()), None)
    );
    assert_eq!(
        credentials(on_path(&got, "/query")),
        (None, None, Some(format!("site=7&apikey={query_key}"))),
        "the key is added to the endpoint's own query"
    );
    assert_eq!(
        credentials(on_path(&got, "/basic")),
        (Some(basic("transfocus", &password)), None, None)
    );
    assert_eq!(
        credentials(on_path(&got, "/bearer")),
        (Some(bearer(&static_token)), None, None)
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_client_credentials_tokens_reach_the_receiver() {
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    let in_header = TokenServer::start().await;
    let in_body = TokenServer::start().await;
    let secret_a = secret("cs");
    let secret_b = secret("cs");
    env.subscribe(json!({
        "id": "cc_basic",
        "endpoint": receiver.url_for("/basic"),
        "event_types": ["order.*"],
        "headers": {"API-Version": "2.0"},
        "auth": {
            "mode": "oauth2_client_credentials",
            "token_url": in_header.url(),
            "client_id": "postline-client",
            "client_secret": secret_a,
            "scope": "events:write",
            "audience": "https://api.partner.example",
            "extra_params": {"resource": "webhooks"},
        },
    }))
    .await;
    env.subscribe(json!({
        "id": "cc_body",
        "endpoint": receiver.url_for("/body"),
        "event_types": ["order.*"],
        "auth": {
            "mode": "oauth2_client_credentials",
            "token_url": in_body.url(),
            "client_id": "postline-client",
            "client_secret": secret_b,
            "client_auth": "body",
        },
    }))
    .await;
    env.send_event(json!({"type": "order.created", "payload": {"n": 1}}))
        .await;
    let got = receiver.expect_exactly(2, DEADLINE, QUIET).await;
    let to_basic = on_path(&got, "/basic");
    assert_eq!(
        to_basic.header("authorization"),
        Some(bearer(&in_header.tokens()[0]).as_str())
    );
    assert_eq!(to_basic.header("api-version"), Some("2.0"));
    assert_eq!(
        on_path(&got, "/body").header("authorization"),
        Some(bearer(&in_body.tokens()[0]).as_str())
    );

    let call = &in_header.calls()[0];
    assert_eq!(
        call.header("authorization"),
        Some(basic("postline-client", &secret_a).as_str()),
        "client authentication in the Basic header"
    );
    assert_eq!(
        call.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let want: BTreeMap<String, String> = [
        ("grant_type", "client_credentials"),
        ("scope", "events:write"),
        ("audience", "https://api.partner.example"),
        ("resource", "webhooks"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(call.form(), want);

    let call = &in_body.calls()[0];
    assert_eq!(call.header("authorization"), None);
    let want: BTreeMap<String, String> = [
        ("grant_type", "client_credentials"),
        ("client_id", "postline-client"),
        ("client_secret", secret_b.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(call.form(), want, "client authentication in the body");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_servers_by_password_grant_and_json_login() {
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    let oauth = TokenServer::start().await;
    let login = TokenServer::start().await;
    login.nested_answers();
    login.set_lifetime(900);
    let grant_password = secret("pw");
    let login_password = secret("pw");
    env.subscribe(json!({
        "id": "password_grant",
        "endpoint": receiver.url_for("/grant"),
        "event_types": ["order.*"],
        "auth": {
            "mode": "token_server",
            "format": "password_grant",
            "token_url": oauth.url(),
            "username": "transport-ops",
            "password": grant_password,
            "client_id": "postline-app",
            "client_auth": "body",
            "scope": "orders",
        },
    }))
    .await;
    env.subscribe(json!({
        "id": "json_login",
        "endpoint": receiver.url_for("/login"),
        "event_types": ["order.*"],
        "auth": {
            "mode": "token_server",
            "token_url": login.url(),
            "username": "fleet-user",
            "password": login_password,
            "extra_params": {"tenant": "acme"},
            "token_field": "/data/jwt",
            "expires_in_field": "/data/ttl",
        },
    }))
    .await;
    env.send_event(json!({"type": "order.updated", "payload": {"n": 1}}))
        .await;
    let got = receiver.expect_exactly(2, DEADLINE, QUIET).await;
    assert_eq!(
        on_path(&got, "/grant").header("authorization"),
        Some(bearer(&oauth.tokens()[0]).as_str())
    );
    assert_eq!(
        on_path(&got, "/login").header("authorization"),
        Some(bearer(&login.tokens()[0]).as_str())
    );

    let grant = &oauth.calls()[0];
    let want: BTreeMap<String, String> = [
        ("grant_type", "password"),
        ("username", "transport-ops"),
        ("password", grant_password.as_str()),
        ("scope", "orders"),
        ("client_id", "postline-app"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(grant.form(), want);
    let json_call = &login.calls()[0];
    assert_eq!(json_call.header("content-type"), Some("application/json"));
    assert_eq!(
        json_call.json(),
        json!({"username": "fleet-user", "password": login_password, "tenant": "acme"})
    );

    // The lifetime was read from the configured field: 900 s less the 1 s margin.
    let (status, body) = issue_token(&env, &env.token_service_urls()[0], "json_login").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let expires_at: chrono::DateTime<chrono::Utc> = body["expires_at"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("expires_at: {body}"));
    let left = (expires_at - chrono::Utc::now()).num_seconds();
    assert!((880..=900).contains(&left), "{left} s left: {body}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_token_services_make_one_partner_call_per_refresh() {
    let mut env = TestEnv::builder().without_delivery().start().await;
    env.start_token_service().await;
    let urls = env.token_service_urls();
    assert_eq!(urls.len(), 2);
    let partner = TokenServer::start().await;
    partner.set_delay(Duration::from_millis(300));
    // 6 s tokens: used for 5 s (1 s margin), replaced from 3.3 s on.
    partner.set_lifetime(6);
    let mut spec = oauth_spec(
        "travel",
        "http://127.0.0.1:9/unused",
        &partner.url(),
        &secret("cs"),
    );
    // No receiver, and a PING would fetch the first token: skip it.
    spec["verify"] = json!(false);
    env.subscribe(spec).await;

    // Cold: 100 concurrent requests over both processes, one partner call.
    let started = Instant::now();
    let first = concurrent_tokens(&env, &urls, "travel", 100, None).await;
    assert_eq!(partner.call_count(), 1, "a cold burst makes one call");
    let distinct: HashSet<&String> = first.iter().collect();
    assert_eq!(distinct.len(), 1, "everyone got the same token");
    assert_eq!(first[0], partner.tokens()[0]);

    // Due for refresh but still usable: another burst, one more call.
    tokio::time::sleep(Duration::from_millis(3600).saturating_sub(started.elapsed())).await;
    let second = concurrent_tokens(&env, &urls, "travel", 100, None).await;
    assert_eq!(partner.call_count(), 2, "one refresh, however many ask");
    assert!(
        second.iter().all(|t| partner.tokens().contains(t)),
        "{second:?}"
    );
    let (_, fresh) = issue_token(&env, &urls[1], "travel").await;
    assert_eq!(fresh["access_token"], partner.tokens()[1].as_str());

    // A receiver rejected the token: 100 invalidations, one more call.
    let rejected = partner.tokens()[1].clone();
    let third = concurrent_tokens(&env, &urls, "travel", 100, Some(&rejected)).await;
    assert_eq!(
        partner.call_count(),
        3,
        "one call after a burst of invalidations"
    );
    assert!(
        third.iter().all(|t| *t == partner.tokens()[2]),
        "every invalidation got the new token: {third:?}"
    );

    // Both processes counted their share; together they fetched three times,
    // and the one that did not hold the lock waited for the other.
    let mut fetched = 0.0;
    let mut waited = 0.0;
    for url in &urls {
        let page = env.metrics_page(url).await;
        fetched += sample(&page, r#"postline_token_fetches_total{outcome="success"}"#);
        waited += sample(&page, r#"postline_token_lock_waits_total{result="token"}"#);
    }
    assert_eq!(fetched, 3.0);
    assert!(waited >= 1.0, "no process waited on the other's refresh");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_deliveries_needing_a_cold_token_makes_one_call() {
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    let partner = TokenServer::start().await;
    partner.set_delay(Duration::from_millis(200));
    let mut spec = oauth_spec("travel", &receiver.url(), &partner.url(), &secret("cs"));
    spec["order"] = json!("none");
    // A PING would fetch the token: skip it so the burst finds it cold.
    spec["verify"] = json!(false);
    env.subscribe(spec).await;
    let events = numbered("burst", "order.created", 100);
    let (status, body) = env.post_batch(Value::Array(events.clone())).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    receiver.wait_for_successes(100, DEADLINE).await;
    receiver.assert_no_more(QUIET).await;
    assert_eq!(partner.call_count(), 1, "100 deliveries, one token call");
    let token = bearer(&partner.tokens()[0]);
    assert!(receiver
        .requests()
        .iter()
        .all(|r| r.header("authorization") == Some(token.as_str())));
    let got: HashSet<String> = ids(&receiver.requests()).into_iter().collect();
    let want: HashSet<String> = ids_of(&events).into_iter().collect();
    assert_eq!(got, want);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_use_is_refreshed_before_it_lapses() {
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    let partner = TokenServer::start().await;
    // 3 s tokens: used for 2 s (half, being short), replaced from 1.33 s on.
    partner.set_lifetime(3);
    let valid = partner.validator();
    receiver.require(move |r| {
        r.header("authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
            .is_some_and(&valid)
    });
    env.subscribe(oauth_spec(
        "telematics",
        &receiver.url(),
        &partner.url(),
        &secret("cs"),
    ))
    .await;
    // An event every 100 ms for 5 s: the token is in use across several lifetimes.
    let events = numbered("tick", "order.moved", 50);
    for event in &events {
        env.send_event(event.clone()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    receiver.wait_for_successes(events.len(), DEADLINE).await;
    let requests = receiver.requests();
    let refused: Vec<&Recorded> = requests.iter().filter(|r| !r.succeeded()).collect();
    assert!(
        refused.is_empty(),
        "a receiver saw a lapsed token: {refused:?}"
    );
    assert_eq!(ids(&requests), ids_of(&events), "in order, once each");
    let issued = partner.issued();
    assert!(issued.len() >= 3, "tokens were replaced: {issued:?}");
    for pair in issued.windows(2) {
        assert!(
            pair[1].at < pair[0].at + pair[0].lifetime,
            "token {} was fetched only after {} lapsed",
            pair[1].token,
            pair[0].token
        );
    }
    assert_eq!(state(&env, "telematics").await.get("failed_attempts"), None);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_refreshes_the_token_once_and_resends() {
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    let partner = TokenServer::start().await;
    let mut spec = oauth_spec("travel", &receiver.url(), &partner.url(), &secret("cs"));
    spec["retry"] = json!({"immediate_retries": 0, "steps_ms": [100], "repeat_every_ms": 100});
    env.subscribe(spec).await;
    env.send_event(json!({"id": "e1", "type": "order.created", "payload": {}}))
        .await;
    receiver.wait_for_successes(1, DEADLINE).await;
    let first = partner.tokens()[0].clone();

    // The partner revoked the first token: the receiver answers it 401.
    let revoked = bearer(&first);
    receiver.require(move |r| r.header("authorization") != Some(revoked.as_str()));
    env.send_event(json!({"id": "e2", "type": "order.created", "payload": {}}))
        .await;
    receiver.wait_for_successes(2, DEADLINE).await;
    receiver.assert_no_more(QUIET).await;
    let got = receiver.requests();
    let seen: Vec<(String, Option<&str>, u16)> = got
        .iter()
        .map(|r| {
            (
                r.event_id().unwrap_or_default(),
                r.header("authorization"),
                r.status,
            )
        })
        .collect();
    let second = bearer(&partner.tokens()[1]);
    assert_eq!(
        seen,
        vec![
            ("e1".to_string(), Some(bearer(&first).as_str()), 200),
            ("e2".to_string(), Some(bearer(&first).as_str()), 401),
            ("e2".to_string(), Some(second.as_str()), 200),
        ]
    );
    assert_eq!(partner.call_count(), 2, "one refresh");
    let delivered = state(&env, "travel").await;
    assert_eq!(
        delivered.get("failed_attempts"),
        None,
        "the resend succeeded, so no failure was counted: {delivered:?}"
    );
    let page = env.delivery_metrics().await;
    assert_eq!(sample(&page, "postline_token_rejections_total"), 1.0);

    // A receiver refusing every token: each attempt is one request plus one
    // resend with a fresh token, then a counted failure.
    receiver.require(|_| false);
    env.send_event(json!({"id": "e3", "type": "order.created", "payload": {}}))
        .await;
    wait_last_error(&env, "travel", "receiver answered 401").await;
    wait::until("two failed attempts of e3", DEADLINE, || async {
        let failed: u32 = state(&env, "travel")
            .await
            .get("failed_attempts")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if failed >= 2 {
            Ok(())
        } else {
            Err(format!("{failed} failed"))
        }
    })
    .await;
    receiver.require(|_| true);
    receiver.wait_for_successes(3, DEADLINE).await;
    let failed: usize = state(&env, "travel").await["failed_attempts"]
        .parse()
        .expect("a count");
    let refused_e3 = receiver
        .requests()
        .iter()
        .filter(|r| r.event_id().as_deref() == Some("e3") && r.status == 401)
        .count();
    assert!(
        refused_e3 == 2 * failed || refused_e3 == 2 * failed + 1,
        "{refused_e3} refused requests for {failed} failed attempts: one resend per attempt"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_failures_are_clear_errors_and_nothing_is_lost() {
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    let echoed = secret("echoed-cs");
    let down = TokenServer::start().await;
    down.fail_with(
        503,
        &json!({"error": "temporarily_unavailable", "error_description": format!("client_secret {echoed} refused")}).to_string(),
    );
    let slow = TokenServer::start().await;
    slow.set_delay(Duration::from_secs(2));
    let garbage = TokenServer::start().await;
    garbage.answer_garbage(&format!("<html>login failed for {echoed}</html>"));
    // Nothing listens there: connection refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let closed_url = format!("http://{}/token", closed.local_addr().unwrap());
    drop(closed);
    let cases = [
        (
            "down",
            &down.url(),
            "token endpoint answered 503 (temporarily_unavailable)",
        ),
        (
            "slow",
            &slow.url(),
            "token endpoint did not answer within 500 ms",
        ),
        (
            "garbage",
            &garbage.url(),
            "token endpoint answer unusable: body is not JSON",
        ),
        ("refused", &closed_url, "token endpoint unreachable"),
    ];
    for (id, token_url, _) in &cases {
        let mut spec = oauth_spec(id, &receiver.url_for(&format!("/{id}")), token_url, &echoed);
        // No token can be had, so no PING could pass.
        spec["verify"] = json!(false);
        env.subscribe(spec).await;
    }
    env.send_event(json!({"id": "must-arrive", "type": "order.created", "payload": {}}))
        .await;
    for (id, _, error) in &cases {
        let shown = wait_last_error(&env, id, error).await;
        assert!(shown.starts_with("no token for the receiver: "), "{shown}");
        assert!(!shown.contains(&echoed), "{shown}");
    }
    assert_eq!(receiver.count(), 0, "nothing is sent without a token");
    // A failed fetch stands for a moment: the failing partner is not called
    // once per delivery attempt.
    let failed_attempts: usize = state(&env, "down").await["failed_attempts"]
        .parse()
        .expect("a count");
    assert!(
        down.call_count() < failed_attempts,
        "{} calls to a failing token endpoint for {failed_attempts} failed attempts",
        down.call_count()
    );

    // The endpoints recover (the closed one by pointing the subscription at a working server).
    down.heal();
    slow.heal();
    garbage.heal();
    let (status, body) = env
        .patch_subscription(
            "refused",
            // The token service holds the healed endpoint's last failure for
            // a moment; delivery retries past it, a one-shot PING would not.
            json!({"auth": {"mode": "oauth2_client_credentials", "token_url": down.url(), "client_id": "postline", "client_secret": echoed}, "verify": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    receiver.wait_for_successes(4, DEADLINE).await;
    receiver.assert_no_more(QUIET).await;
    for (id, _, _) in &cases {
        let got = receiver.requests();
        let arrived = on_path(&got, &format!("/{id}"));
        assert_eq!(arrived.event_id().as_deref(), Some("must-arrive"));
        assert!(arrived.succeeded());
    }

    let captured = logs::captured();
    for (id, _, error) in &cases {
        assert!(
            captured
                .lines()
                .any(|l| l.contains(error) && l.contains(&format!("subscription={id}"))),
            "no log line names {id} with {error:?}"
        );
    }
    assert!(
        !captured.contains(&echoed),
        "the echoed secret reached a log line"
    );
    env.cleanup().await;
}

/// Subscriptions in every mode, with signing secrets; returns every secret
/// given (credentials and signing secrets).
async fn subscribe_every_mode(
    env: &TestEnv,
    receiver: &Receiver,
    oauth: &TokenServer,
    login: &TokenServer,
) -> Vec<String> {
    let whsec = new_whsec();
    let given = [
        secret("api-key"),
        secret("basic-pw"),
        secret("static-token"),
        secret("client-secret"),
        secret("login-pw"),
        secret("grant-client-secret"),
        whsec.clone(),
        secret("plain-signing"),
    ];
    let [api_key, basic_pw, static_token, client_secret, login_pw, grant_secret, whsec, plain] =
        given.clone();
    let specs = [
        (
            "m_key",
            json!({"mode": "api_key", "name": "X-Api-Key", "key": api_key}),
        ),
        (
            "m_basic",
            json!({"mode": "basic", "username": "u", "password": basic_pw}),
        ),
        ("m_bearer", json!({"mode": "bearer", "token": static_token})),
        (
            "m_oauth",
            json!({"mode": "oauth2_client_credentials", "token_url": oauth.url(), "client_id": "c", "client_secret": client_secret}),
        ),
        (
            "m_login",
            json!({"mode": "token_server", "token_url": login.url(), "username": "u", "password": login_pw}),
        ),
        (
            "m_grant",
            json!({"mode": "token_server", "format": "password_grant", "token_url": oauth.url(), "username": "u", "password": login_pw, "client_id": "c", "client_secret": grant_secret}),
        ),
    ];
    for (id, auth) in specs {
        env.subscribe(json!({
            "id": id,
            "endpoint": receiver.url_for(&format!("/{id}")),
            "event_types": ["order.*"],
            "secrets": [whsec, plain],
            "auth": auth,
        }))
        .await;
    }
    let mut all = given.to_vec();
    all.push(whsec.trim_start_matches("whsec_").to_string());
    all
}

fn assert_hidden(what: &str, text: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(
            !text.contains(secret.as_str()),
            "{what} contains the secret {secret:?}:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_dump_holds_no_secret_in_clear() {
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    let oauth = TokenServer::start().await;
    let login = TokenServer::start().await;
    let mut secrets = subscribe_every_mode(&env, &receiver, &oauth, &login).await;
    env.send_event(json!({"type": "order.created", "payload": {}}))
        .await;
    receiver.wait_for_successes(6, DEADLINE).await;
    // The access tokens are credentials too, and now cached.
    secrets.extend(oauth.tokens());
    secrets.extend(login.tokens());
    assert_eq!(secrets.len(), 9 + 3);

    let dump = env.redis_dump().await;
    assert_hidden("the Redis dump", &dump, &secrets);
    assert!(dump.contains("enc:v1:dev:"), "secrets are sealed: {dump}");
    assert!(
        dump.lines().filter(|l| l.contains(":token:")).count() >= 3,
        "tokens are cached: {dump}"
    );
    // What the services read back is what was given.
    let stored = env.stored_subscription("m_basic").await;
    assert_eq!(stored.spec.secrets.len(), 2);
    assert_eq!(
        stored.spec.auth.secret_values(),
        vec![secrets[1].as_str()],
        "opened with the key"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_show_in_api_answers_debug_or_logs() {
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    let oauth = TokenServer::start().await;
    let login = TokenServer::start().await;
    let mut secrets = subscribe_every_mode(&env, &receiver, &oauth, &login).await;
    env.send_event(json!({"type": "order.created", "payload": {}}))
        .await;
    receiver.wait_for_successes(6, DEADLINE).await;
    secrets.extend(oauth.tokens());
    secrets.extend(login.tokens());

    let (status, list) = env.list_subscriptions().await;
    assert_eq!(status, StatusCode::OK);
    assert_hidden("the list answer", &list.to_string(), &secrets);
    let (_, got) = env.get_subscription("m_grant").await;
    assert_hidden("the get answer", &got.to_string(), &secrets);
    assert_eq!(got["auth"]["mode"], "token_server");
    assert_eq!(got["auth"]["format"], "password_grant");
    assert_eq!(got["auth"]["client_id"], "c");
    assert!(got["auth"].get("password").is_none() && got["auth"].get("client_secret").is_none());
    let (_, shown) = env.get_subscription("m_oauth").await;
    assert_eq!(
        shown["auth"],
        json!({
            "mode": "oauth2_client_credentials",
            "token_url": oauth.url(),
            "client_id": "c",
            "client_auth": "basic",
            "scope": null,
            "audience": null,
            "extra_params": {},
            "token_field": "/access_token",
            "expires_in_field": "/expires_in",
            "default_expires_in_secs": 3600,
        }),
        "every setting but the client secret"
    );
    let (_, key) = env.get_subscription("m_key").await;
    assert_eq!(
        key["auth"],
        json!({"mode": "api_key", "name": "X-Api-Key", "in": "header"})
    );

    // A patch answer, and errors about auth fields, show no credential either.
    let new_key = secret("rotated-api-key");
    let (status, patched) = env
        .patch_subscription(
            "m_key",
            json!({"auth": {"mode": "api_key", "name": "apikey", "in": "query", "key": new_key}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_hidden(
        "the patch answer",
        &patched.to_string(),
        std::slice::from_ref(&new_key),
    );
    let refused_secret = secret("refused-secret");
    let bad = [
        (
            json!({"mode": "oauth2_client_credentials", "token_url": "ftp://partner/token", "client_id": "c", "client_secret": refused_secret}),
            "auth.token_url",
        ),
        (
            json!({"mode": "basic", "username": "a:b", "password": refused_secret}),
            "auth.username",
        ),
        (
            json!({"mode": "bearer", "token": "t", "x": refused_secret}),
            "auth.x",
        ),
    ];
    for (auth, field) in bad {
        let body = serde_json::to_vec(&json!({"auth": auth})).unwrap();
        let response = env
            .api(
                Method::PATCH,
                "/v1/subscriptions/m_key",
                Auth::Admin,
                Some(body),
            )
            .await;
        assert_eq!(
            response.status,
            StatusCode::BAD_REQUEST,
            "{}",
            response.text
        );
        assert_eq!(response.error_field(), Some(field), "{}", response.text);
        assert_hidden(
            "an error answer",
            &response.text,
            std::slice::from_ref(&refused_secret),
        );
    }

    // Debug of what the services hold.
    for id in [
        "m_key", "m_basic", "m_bearer", "m_oauth", "m_login", "m_grant",
    ] {
        let stored = env.stored_subscription(id).await;
        assert_hidden("a Debug form", &format!("{stored:?} {stored:#?}"), &secrets);
    }
    secrets.push(new_key);
    secrets.push(refused_secret);
    env.send_event(json!({"type": "order.created", "payload": {}}))
        .await;
    receiver.wait_for_successes(12, DEADLINE).await;
    assert_hidden("the captured logs", &logs::captured(), &secrets);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_reseals_every_secret_under_the_new_key() {
    let env = TestEnv::builder().without_delivery().start().await;
    let signing = secret("signing");
    let password = secret("pw");
    env.subscribe(json!({
        "id": "rotated",
        "endpoint": "http://127.0.0.1:9/hook",
        "event_types": ["order.*"],
        "secrets": [signing],
        "auth": {"mode": "basic", "username": "u", "password": password},
        "verify": false,
    }))
    .await;
    let new_key = format!("k2:{}", BASE64.encode([42u8; 32]));
    let rotated = KeyRing::from_config(&new_key, "dev").expect("key ring");
    let client = redis::Client::open(env.common.redis_url.as_str()).unwrap();
    let store = postline_shared::redis::subscription_store::SubscriptionStore::new(
        env.redis(),
        client.clone(),
        env.keys.clone(),
        rotated,
    );
    // The new ring still opens what the old key sealed.
    let before = store
        .get(&"rotated".parse().expect("an id"))
        .await
        .expect("opened with the old key");
    assert_eq!(before.spec.secrets[0].expose(), signing);

    assert_eq!(store.reseal_all().await.expect("re-seal"), 1);
    assert_eq!(
        store.reseal_all().await.expect("re-seal"),
        0,
        "nothing left to do"
    );
    let dump = env.redis_dump().await;
    assert!(
        dump.contains("enc:v1:k2:") && !dump.contains("enc:v1:dev:"),
        "{dump}"
    );
    assert_hidden(
        "the Redis dump",
        &dump,
        &[signing.clone(), password.clone()],
    );

    // The old key can now be dropped; without the new one nothing opens.
    let only_new = KeyRing::from_config(&new_key, "").unwrap();
    let store_new = postline_shared::redis::subscription_store::SubscriptionStore::new(
        env.redis(),
        client.clone(),
        env.keys.clone(),
        only_new,
    );
    let after = store_new
        .get(&"rotated".parse().expect("an id"))
        .await
        .expect("opened with the new key");
    assert_eq!(after.spec.auth.secret_values(), vec![password.as_str()]);
    let old_only = postline_shared::redis::subscription_store::SubscriptionStore::new(
        env.redis(),
        client,
        env.keys.clone(),
        KeyRing::development(),
    );
    assert!(matches!(
        old_only.get(&"rotated".parse().expect("an id")).await,
        Err(StoreError::Sealed { .. })
    ));
    env.cleanup().await;
}
