//! Partner semantics end to end: the PING that guards every create and
//! update, never the same status twice (`dedup`), nothing more for a
//! completed entity (`completion`), delivery on epoch-aligned ticks
//! (`interval_ms`), the `200`-only success rule, `payload` body mode, and
//! routing by event-type and payload filters.

use postline_tests::events::{assert_sequence, event, ids_of};
use postline_tests::receiver::{describe, ids};
use postline_tests::signatures::{body_hex, new_whsec, standard_webhooks_v1};
use postline_tests::sub_id;
use postline_tests::{Receiver, Recorded, TestEnv, TokenServer, DEADLINE, QUIET};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// The wall clock in unix milliseconds.
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The first tick of an `interval`-ms schedule aligned to the epoch strictly
/// after `at_ms` (written here from the definition, not with Postline's code).
fn tick_after(at_ms: i64, interval: i64) -> i64 {
    (at_ms / interval + 1) * interval
}

fn wall_ms(request: &Recorded) -> i64 {
    request.wall.timestamp_millis()
}

/// The order-status event `id`: order `order` now has `status` (no status when `None`).
fn status_event(id: &str, order: &str, status: Option<&str>) -> Value {
    let mut payload = json!({ "order_id": order });
    if let Some(status) = status {
        payload["status"] = json!(status);
    }
    event(id, "order.status", payload)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_ping_refuses_create_and_update_and_a_passed_one_lets_them_through() {
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    let whsec = new_whsec();
    let spec = json!({
        "id": "guarded",
        "endpoint": receiver.url(),
        "event_types": ["order.*"],
        "secrets": [whsec],
        "signature_header": {"name": "X-Signature", "encoding": "hex"},
        "headers": {"API-Version": "2.0"},
    });

    // Refused: 422 with what the endpoint did, and nothing stored or declared.
    receiver.answer_pings(503);
    let (status, body) = env.create_subscription(spec.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "ping_failed", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("503")),
        "{body}"
    );
    assert_eq!(body["ping"]["status"], 503, "{body}");
    assert_eq!(body["ping"]["error"], Value::Null, "{body}");
    assert!(body["ping"]["duration_ms"].is_u64(), "{body}");
    assert_eq!(receiver.pings().len(), 1);
    let (status, _) = env.get_subscription("guarded").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        !env.queue_exists(&env.topology.subscription_queue(&sub_id("guarded")))
            .await
    );

    // An endpoint nobody listens on: the connection error is shown.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let dead = format!("http://{}/hook", closed.local_addr().expect("its address"));
    drop(closed);
    let mut unreachable = spec.clone();
    unreachable["endpoint"] = json!(dead);
    let (status, body) = env.create_subscription(unreachable).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["ping"]["status"], Value::Null, "{body}");
    assert!(
        body["ping"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("connection")),
        "{body}"
    );

    // Accepted: stored, and the PING was signed and dressed like an event.
    receiver.answer_pings(200);
    let (status, created) = env.create_subscription(spec.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["ping"]["status"], 200, "{created}");
    let pings = receiver.pings();
    assert_eq!(pings.len(), 2);
    let ping = &pings[1];
    let body = ping.json();
    let ping_id = body["id"].as_str().expect("the PING has an id");
    assert!(ping_id.starts_with("ping_"), "{body}");
    assert_eq!(body["type"], "ping");
    assert_eq!(body["operation"], "ping");
    assert_eq!(body["payload"], json!({"subscription": "guarded"}));
    assert!(body["timestamp"].is_string(), "{body}");
    assert_eq!(ping.header("webhook-id"), Some(ping_id));
    let timestamp = ping.header("webhook-timestamp").expect("webhook-timestamp");
    assert_eq!(
        ping.header("webhook-signature"),
        Some(standard_webhooks_v1(&whsec, ping_id, timestamp, &ping.body).as_str())
    );
    assert_eq!(
        ping.header("x-signature"),
        Some(body_hex(&whsec, &ping.body).as_str())
    );
    assert_eq!(ping.header("api-version"), Some("2.0"));
    assert_eq!(ping.header("content-type"), Some("application/json"));

    // An update is PINGed as it would be stored; refused, nothing changes.
    receiver.answer_pings(500);
    let (status, body) = env
        .patch_subscription("guarded", json!({"headers": {"API-Version": "3.0"}}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["ping"]["status"], 500, "{body}");
    let (_, shown) = env.get_subscription("guarded").await;
    assert_eq!(shown["headers"], json!({"API-Version": "2.0"}), "{shown}");
    let last_ping = receiver.pings().pop().expect("the update's PING");
    assert_eq!(last_ping.header("api-version"), Some("3.0"));

    // The subscription's own success rule judges the PING.
    receiver.answer_pings(204);
    let (status, body) = env
        .patch_subscription("guarded", json!({"success": "200"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (_, shown) = env.get_subscription("guarded").await;
    assert_eq!(shown["success"], "2xx", "{shown}");
    let (status, body) = env
        .patch_subscription("guarded", json!({"headers": {"API-Version": "3.0"}}))
        .await;
    assert_eq!(status, StatusCode::OK, "a 204 passes the 2xx rule: {body}");
    assert_eq!(body["headers"], json!({"API-Version": "3.0"}), "{body}");

    // `verify: false` skips the PING and is not stored.
    receiver.answer_pings(503);
    let before = receiver.pings().len();
    let (status, body) = env
        .patch_subscription("guarded", json!({"timeout_ms": 2000, "verify": false}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["timeout_ms"], 2000);
    assert!(
        body.get("verify").is_none() && body.get("ping").is_none(),
        "{body}"
    );
    let mut unverified = spec.clone();
    unverified["id"] = json!("unverified");
    unverified["verify"] = json!(false);
    let (status, body) = env.create_subscription(unverified).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(receiver.pings().len(), before, "no PING was sent");
    let raw: Option<String> = redis::AsyncCommands::get(
        &mut env.redis(),
        env.keys.subscription(&"unverified".parse().expect("an id")),
    )
    .await
    .expect("GET");
    assert!(!raw.unwrap_or_default().contains("verify"));
    // Pausing, or changing the retry policy, does not touch the request:
    // no PING, so it works while the endpoint is down.
    let (status, body) = env
        .patch_subscription(
            "guarded",
            json!({"status": "paused", "retry": {"immediate_retries": 1}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "paused");
    assert!(body.get("ping").is_none(), "{body}");
    assert_eq!(receiver.pings().len(), before, "no PING was sent");
    let (status, body) = env
        .patch_subscription("guarded", json!({"verify": "no"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "verify", "{body}");

    // PINGs are not deliveries: no attempt, no counter, no request among events.
    let state = env.delivery_state("guarded").await;
    assert_eq!(state["counters"]["delivered"], 0, "{state}");
    assert_eq!(state["counters"]["failed_attempts"], 0, "{state}");
    let (_, attempts) = env.operate(Method::GET, "guarded", "attempts").await;
    assert_eq!(attempts["attempts"], json!([]), "{attempts}");
    assert_eq!(receiver.count(), 0);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ping_carries_the_receiver_auth_including_a_fetched_token() {
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    let key = format!("key-{}", uuid::Uuid::new_v4().simple());
    let expected = key.clone();
    receiver.require(move |r| r.header("x-partner-key") == Some(expected.as_str()));
    let with_key = |id: &str, key: &str| {
        json!({
            "id": id,
            "endpoint": receiver.url_for(&format!("/{id}")),
            "event_types": ["order.*"],
            "auth": {"mode": "api_key", "name": "X-Partner-Key", "key": key},
        })
    };
    let (status, body) = env.create_subscription(with_key("keyed", &key)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let ping = receiver.pings().pop().expect("a PING");
    assert_eq!(ping.header("x-partner-key"), Some(key.as_str()));
    assert_eq!(ping.status, 200);
    // The receiver refuses a wrong key, so the subscription is refused.
    let (status, body) = env
        .create_subscription(with_key("wrong", "not-the-key"))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["ping"]["status"], 401, "{body}");
    assert!(
        !body.to_string().contains("not-the-key"),
        "no credential in the answer: {body}"
    );
    let (status, _) = env.get_subscription("wrong").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A token mode: the token service fetches the token for a subscription
    // that is not stored yet, from the credentials being set.
    let first = TokenServer::start().await;
    let second = TokenServer::start().await;
    let oauth = TokenServer::start().await;
    let valid_second = second.validator();
    let valid_first = first.validator();
    let expected = key.clone();
    receiver.require(move |r| {
        let keyed = r.header("x-partner-key") == Some(expected.as_str());
        let bearer = r
            .header("authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
            .is_some_and(|token| valid_first(token) || valid_second(token));
        keyed || bearer
    });
    let oauth_auth = |server: &TokenServer| {
        json!({
            "mode": "oauth2_client_credentials",
            "token_url": server.url(),
            "client_id": "postline",
            "client_secret": format!("cs-{}", uuid::Uuid::new_v4().simple()),
        })
    };
    let (status, body) = env
        .create_subscription(json!({
            "id": "fetched",
            "endpoint": receiver.url_for("/fetched"),
            "event_types": ["order.*"],
            "auth": oauth_auth(&first),
        }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let ping = receiver.pings().pop().expect("a PING");
    assert_eq!(
        ping.header("authorization"),
        Some(format!("Bearer {}", first.tokens()[0]).as_str())
    );
    // Changed credentials are PINGed with a token from the new ones.
    let (status, body) = env
        .patch_subscription("fetched", json!({"auth": oauth_auth(&second)}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ping = receiver.pings().pop().expect("a PING");
    assert_eq!(
        ping.header("authorization"),
        Some(format!("Bearer {}", second.tokens()[0]).as_str())
    );
    // No token, no PING: the change is refused and the stored auth stays.
    oauth.fail_with(503, r#"{"error": "temporarily_unavailable"}"#);
    let pings_before = receiver.pings().len();
    let (status, body) = env
        .patch_subscription("fetched", json!({"auth": oauth_auth(&oauth)}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["ping"]["status"], Value::Null, "{body}");
    assert!(
        body["ping"]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("no token for the receiver")),
        "{body}"
    );
    assert_eq!(receiver.pings().len(), pings_before, "nothing was sent");
    let (_, shown) = env.get_subscription("fetched").await;
    assert_eq!(shown["auth"]["token_url"], second.url(), "{shown}");
    // Staged versions do not outlive their PINGs.
    let staged: Vec<String> = env
        .redis_keys()
        .await
        .into_iter()
        .filter(|k| k.contains(":sub-staged:"))
        .collect();
    assert!(staged.is_empty(), "{staged:?}");

    // Events then go out with the same credentials as the PINGs.
    env.send_event(json!({"type": "order.created", "payload": {}}))
        .await;
    let got = receiver.expect_exactly(2, DEADLINE, QUIET).await;
    assert!(got.iter().all(Recorded::succeeded), "{}", describe(&got));
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_order_status_is_delivered_once_and_a_new_status_is_delivered() {
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    let created = env
        .subscribe(json!({
            "id": "statuses",
            "endpoint": receiver.url(),
            "event_types": ["order.*"],
            "dedup": {"fields": ["/payload/order_id", "/payload/status"]},
        }))
        .await;
    assert_eq!(
        created["dedup"],
        json!({"fields": ["/payload/order_id", "/payload/status"], "ttl_secs": 2_592_000}),
        "the default TTL is 30 days: {created}"
    );
    let events = [
        status_event("a-open", "A", Some("Open")),
        status_event("a-open-again", "A", Some("Open")),
        status_event("a-shipped", "A", Some("Shipped")),
        status_event("b-open", "B", Some("Open")),
        status_event("a-open-late", "A", Some("Open")),
        // Without a status there is no identity: never deduplicated.
        status_event("a-unknown-1", "A", None),
        status_event("a-unknown-2", "A", None),
    ];
    env.publish_events_amqp(&events).await;

    let want: Vec<String> = [
        "a-open",
        "a-shipped",
        "b-open",
        "a-unknown-1",
        "a-unknown-2",
    ]
    .map(String::from)
    .to_vec();
    receiver.wait_for(want.len(), DEADLINE).await;
    let all = receiver.assert_no_more(QUIET).await;
    assert_sequence("delivered", &ids(&all), &want);
    let state = env
        .wait_delivery_state("statuses", "two events deduplicated", |s| {
            s["counters"]["deduplicated"] == 2
        })
        .await;
    assert_eq!(state["counters"]["delivered"], 5, "{state}");
    env.wait_metric(
        "postline_deliveries_total",
        &["outcome=\"deduplicated\"", "subscription=\"statuses\""],
        "2",
    )
    .await;

    // A later event with a status already sent is still refused; a new one goes.
    env.publish_events_amqp(&[
        status_event("a-shipped-again", "A", Some("Shipped")),
        status_event("a-ended", "A", Some("Ended")),
    ])
    .await;
    receiver.wait_for(6, DEADLINE).await;
    let all = receiver.assert_no_more(QUIET).await;
    assert_eq!(ids(&all[5..]), ["a-ended"], "{}", describe(&all));
    env.wait_delivery_state("statuses", "three events deduplicated", |s| {
        s["counters"]["deduplicated"] == 3
    })
    .await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_order_ends_its_later_events_are_dropped_while_other_orders_flow() {
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    env.subscribe(json!({
        "id": "orders",
        "endpoint": receiver.url(),
        "event_types": ["order.*"],
        "completion": {
            "entity": "/payload/order_id",
            "field": "/payload/status",
            "terminal": ["Cancelled", "Ended"],
        },
    }))
    .await;
    let events = [
        status_event("a-open", "A", Some("Open")),
        status_event("b-open", "B", Some("Open")),
        status_event("a-ended", "A", Some("Ended")),
        status_event("a-late", "A", Some("Moving")),
        status_event("b-moving", "B", Some("Moving")),
        status_event("a-ended-again", "A", Some("Ended")),
        status_event("c-cancelled", "C", Some("Cancelled")),
        status_event("c-reopened", "C", Some("Open")),
        // No order id: not an entity, always delivered.
        event("no-order", "order.note", json!({"text": "hello"})),
        status_event("b-still", "B", Some("Moving")),
    ];
    env.publish_events_amqp(&events).await;

    let want: Vec<String> = [
        "a-open",
        "b-open",
        "a-ended",
        "b-moving",
        "c-cancelled",
        "no-order",
        "b-still",
    ]
    .map(String::from)
    .to_vec();
    receiver.wait_for(want.len(), DEADLINE).await;
    let all = receiver.assert_no_more(QUIET).await;
    assert_sequence("delivered", &ids(&all), &want);
    let state = env
        .wait_delivery_state("orders", "three events of complete orders dropped", |s| {
            s["counters"]["completed_entity"] == 3
        })
        .await;
    assert_eq!(
        state["entities"],
        json!({"open": 1, "complete": 2}),
        "B is open, A and C are complete: {state}"
    );
    assert_eq!(state["counters"]["delivered"], 7, "{state}");
    env.wait_metric(
        "postline_deliveries_total",
        &["outcome=\"completed_entity\"", "subscription=\"orders\""],
        "3",
    )
    .await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_delivery_sends_what_was_queued_before_each_tick_right_after_it() {
    const INTERVAL: i64 = 2_000;
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    let created = env
        .subscribe(json!({
            "id": "ticking",
            "endpoint": receiver.url(),
            "event_types": ["order.*"],
            "interval_ms": INTERVAL,
        }))
        .await;
    assert_eq!(created["interval_ms"], INTERVAL, "{created}");
    let (status, body) = env
        .create_subscription(json!({
            "id": "too_fast", "endpoint": receiver.url(), "event_types": ["a"],
            "interval_ms": 999,
        }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "interval_ms", "{body}");

    // Publish just after a tick, so the batch waits most of an interval.
    let next = tick_after(now_ms(), INTERVAL);
    tokio::time::sleep(Duration::from_millis((next - now_ms() + 100).max(0) as u64)).await;
    let first: Vec<Value> = (0..5)
        .map(|i| event(&format!("first-{i}"), "order.status", json!({"seq": i})))
        .collect();
    let published_from = now_ms();
    let (status, body) = env.post_batch(json!(first)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let first_tick = tick_after(published_from, INTERVAL);
    let state = env.delivery_state("ticking").await;
    assert!(state["next_tick_at"].is_string(), "{state}");

    let got = receiver.wait_for(first.len(), DEADLINE).await;
    assert_sequence("the first batch", &ids(&got), &ids_of(&first));
    for request in &got {
        assert!(
            wall_ms(request) >= first_tick,
            "{} arrived {} ms before its tick",
            request.summary(),
            first_tick - wall_ms(request)
        );
    }

    // Right after that tick: the next batch waits for the next one.
    let second: Vec<Value> = (0..3)
        .map(|i| event(&format!("second-{i}"), "order.status", json!({"seq": i})))
        .collect();
    let published_from = now_ms();
    let (status, body) = env.post_batch(json!(second)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let second_tick = tick_after(published_from, INTERVAL);
    assert!(second_tick > first_tick);
    receiver
        .wait_for(first.len() + second.len(), DEADLINE)
        .await;
    let all = receiver.assert_no_more(QUIET).await;
    assert_sequence(
        "both batches, one request per event",
        &ids(&all),
        &[ids_of(&first), ids_of(&second)].concat(),
    );
    for request in &all[first.len()..] {
        assert!(
            wall_ms(request) >= second_tick,
            "{} arrived {} ms before its tick",
            request.summary(),
            second_tick - wall_ms(request)
        );
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_an_interval_a_failed_event_is_retried_at_its_ladder_time_not_the_next_tick() {
    const INTERVAL: i64 = 5_000;
    const STEP: i64 = 300;
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    env.subscribe(json!({
        "id": "ticking_retry",
        "endpoint": receiver.url(),
        "event_types": ["order.*"],
        "interval_ms": INTERVAL,
        "retry": {"immediate_retries": 0, "steps_ms": [STEP], "repeat_every_ms": STEP},
    }))
    .await;
    let next = tick_after(now_ms(), INTERVAL);
    tokio::time::sleep(Duration::from_millis((next - now_ms() + 100).max(0) as u64)).await;
    receiver.fail_next(1, 503);
    let events: Vec<Value> = (0..3)
        .map(|i| event(&format!("r-{i}"), "order.status", json!({"seq": i})))
        .collect();
    let published_from = now_ms();
    let (status, body) = env.post_batch(json!(events)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let tick = tick_after(published_from, INTERVAL);

    receiver.wait_for_successes(events.len(), DEADLINE).await;
    let all = receiver.assert_no_more(QUIET).await;
    assert_eq!(
        ids(&all),
        ["r-0", "r-0", "r-1", "r-2"],
        "{}",
        describe(&all)
    );
    assert!(wall_ms(&all[0]) >= tick, "{}", describe(&all));
    let retried_after = all[1].at - all[0].at;
    assert!(
        retried_after >= Duration::from_millis(STEP as u64),
        "the retry waited its step: {retried_after:?}"
    );
    // Its step, not the next tick: well before the 5 s interval is over.
    assert!(
        wall_ms(&all[1]) < tick + INTERVAL,
        "retried {retried_after:?} after the failure, at the next tick or later"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_only_subscription_retries_201_and_204_and_payload_mode_sends_the_bytes() {
    let env = TestEnv::start().await;
    let strict_ok = Receiver::start().await;
    let lenient = Receiver::start().await;
    env.subscribe(json!({
        "id": "only_ok",
        "endpoint": strict_ok.url(),
        "event_types": ["profile.*"],
        "success": "200",
        "body": "payload",
        "secrets": ["thin-secret"],
        "signature_header": {"name": "X-FacesWebhookSignature", "encoding": "hex"},
    }))
    .await;
    env.subscribe(json!({
        "id": "any_2xx",
        "endpoint": lenient.url(),
        "event_types": ["profile.*"],
        "body": "payload",
    }))
    .await;
    strict_ok.fail_next(1, 201);
    strict_ok.fail_next(1, 204);
    lenient.fail_next(1, 204);
    let payload = "{ \"b\" :1,\n\t\"a\" : [1.50 , \"x\", {\"nested\" :  null}] ,\"u\":\"\\u00e9\u{e9}\", \"big\": 12345678901234567890  }";
    let raw = format!(r#"{{"id":"thin-1","type":"profile.updated","payload":{payload}}}"#);
    let response = env.post_event_raw(raw.as_bytes()).await;
    assert_eq!(response.status, StatusCode::ACCEPTED, "{}", response.text);

    // The receiver calls 201 and 204 successes; the subscription does not.
    strict_ok
        .wait_until("an answer 200", DEADLINE, |all| {
            all.iter().any(|r| r.status == 200)
        })
        .await;
    let all = strict_ok.assert_no_more(QUIET).await;
    let statuses: Vec<u16> = all.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [201, 204, 200], "{}", describe(&all));
    for request in &all {
        assert_eq!(
            String::from_utf8_lossy(&request.body),
            payload,
            "every attempt carries the payload byte for byte"
        );
        assert_eq!(request.header("webhook-id"), Some("thin-1"));
        assert_eq!(
            request.header("x-faceswebhooksignature"),
            Some(body_hex("thin-secret", &request.body).as_str())
        );
    }
    let state = env
        .wait_delivery_state("only_ok", "one delivery after two failures", |s| {
            s["counters"]["delivered"] == 1
        })
        .await;
    assert_eq!(state["counters"]["failed_attempts"], 2, "{state}");
    let (_, log) = env.operate(Method::GET, "only_ok", "attempts").await;
    let outcomes: Vec<(Value, Value)> = log["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| (a["status"].clone(), a["outcome"].clone()))
        .collect();
    assert_eq!(
        outcomes,
        [
            (json!(200), json!("delivered")),
            (json!(204), json!("failed")),
            (json!(201), json!("failed")),
        ],
        "{log}"
    );

    // The 2xx subscription took the 204 at once.
    let took = lenient.expect_exactly(1, DEADLINE, QUIET).await;
    assert_eq!(took[0].status, 204);
    assert_eq!(String::from_utf8_lossy(&took[0].body), payload);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_and_payload_filters_route_exactly_the_matching_events() {
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    let subscriptions = [
        ("exact", json!(["order.created"]), json!([])),
        ("wildcard", json!(["order.*"]), json!([])),
        ("everything", json!(["*"]), json!([])),
        (
            "two_orgs",
            json!(["order.*"]),
            json!([{"pointer": "/payload/org", "in": ["acme", "globex"]}]),
        ),
        (
            "has_vehicle",
            json!(["*"]),
            json!([{"pointer": "/payload/vehicle", "exists": true}]),
        ),
        (
            "acme_vehicles",
            json!(["order.*"]),
            json!([
                {"pointer": "/payload/org", "in": ["acme"]},
                {"pointer": "/payload/vehicle", "exists": true},
            ]),
        ),
        (
            "no_vehicle",
            json!(["pnr.*", "order.status.*", "vehicle.moved"]),
            json!([{"pointer": "/payload/vehicle", "exists": false}]),
        ),
    ];
    for (id, types, filters) in &subscriptions {
        env.subscribe(json!({
            "id": id,
            "endpoint": receiver.url_for(&format!("/{id}")),
            "event_types": types,
            "filters": filters,
        }))
        .await;
    }
    let events = [
        event("e1", "order.created", json!({"org": "acme"})),
        event(
            "e2",
            "order.shipped",
            json!({"org": "globex", "vehicle": "v1"}),
        ),
        event(
            "e3",
            "order.created",
            json!({"org": "initech", "vehicle": "v2"}),
        ),
        event("e4", "pnr.created", json!({"org": "acme"})),
        event(
            "e5",
            "order.created",
            json!({"org": "acme", "vehicle": "v3"}),
        ),
        event("e6", "order.status.changed", json!({"org": "ACME"})),
        event("e7", "vehicle.moved", json!({"vehicle": null})),
        event(
            "e8",
            "orders.created",
            json!({"org": "acme", "vehicle": "v4"}),
        ),
    ];
    env.publish_events_amqp(&events).await;

    let expected: BTreeMap<&str, Vec<&str>> = BTreeMap::from([
        ("exact", vec!["e1", "e3", "e5"]),
        ("wildcard", vec!["e1", "e2", "e3", "e5", "e6"]),
        (
            "everything",
            vec!["e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8"],
        ),
        ("two_orgs", vec!["e1", "e2", "e5"]),
        ("has_vehicle", vec!["e2", "e3", "e5", "e8"]),
        ("acme_vehicles", vec!["e5"]),
        ("no_vehicle", vec!["e4", "e6", "e7"]),
    ]);
    let total = expected.values().map(Vec::len).sum();
    receiver.wait_for(total, DEADLINE).await;
    let all = receiver.assert_no_more(QUIET).await;
    for (id, want) in &expected {
        let path = format!("/{id}");
        let got: Vec<Recorded> = all.iter().filter(|r| r.path == path).cloned().collect();
        let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        assert_sequence(&format!("events routed to {id}"), &ids(&got), &want);
    }
    env.cleanup().await;
}
