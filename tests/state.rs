//! State that fails closed: a Redis that comes back empty (a second
//! `redis-server` without persistence, restarted by the test) makes every
//! service unready and holds every event (HTTP intake 503 `state_lost`,
//! AMQP intake leaves its messages queued, delivery sends nothing) until an
//! operator imports an export (then every event is delivered once, in
//! strict order, the blocked one first) or declares a fresh start (then the
//! answer names the strict subscriptions that may be out of order). The
//! operator is told, once per occurrence and signed, about disabled,
//! long-blocked subscriptions, parked events and the lost state.

use postline_tests::api::Auth;
use postline_tests::events::{assert_sequence, event};
use postline_tests::receiver::ids;
use postline_tests::redis_server::PrivateRedis;
use postline_tests::signatures::{new_whsec, standard_webhooks_v1};
use postline_tests::sub_id;
use postline_tests::Recorded;
use postline_tests::{wait, Receiver, TestEnv, DEADLINE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;

/// A strict subscription whose failing event waits 300 ms per ladder step.
async fn subscribe_strict(env: &TestEnv, receiver: &Receiver, id: &str) {
    env.subscribe(json!({
        "id": id,
        "endpoint": receiver.url(),
        "event_types": ["vehicle.*"],
        "order": "strict",
        "retry": {"immediate_retries": 0, "steps_ms": [300], "repeat_every_ms": 300},
    }))
    .await;
}

async fn readyz(env: &TestEnv, addr: &str) -> (StatusCode, Value) {
    let response = env
        .http()
        .get(format!("{addr}/readyz"))
        .send()
        .await
        .expect("GET /readyz");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn delivery_url(env: &TestEnv) -> String {
    let addr: SocketAddr = env.delivery_addr().expect("delivery runs");
    format!("http://{addr}")
}

/// Waits until ingest and delivery both say (or both stop saying) that the state is lost.
async fn wait_state(env: &TestEnv, lost: bool) {
    for url in [env.ingest_url().to_string(), delivery_url(env)] {
        let what = format!("{url}/readyz to say lost = {lost}");
        wait::until(&what, DEADLINE, || async {
            let (status, body) = readyz(env, &url).await;
            let says_lost = body["state"] == "lost";
            let ok = if lost {
                status == StatusCode::SERVICE_UNAVAILABLE && says_lost
            } else {
                status == StatusCode::OK && !says_lost
            };
            if ok {
                Ok(())
            } else {
                Err(format!("{status} {body}"))
            }
        })
        .await;
    }
}

async fn wait_blocked_on(env: &TestEnv, id: &str, event_id: &str) {
    env.wait_delivery_state(id, "the subscription blocked", |state| {
        state["blocked"]["event_id"] == event_id
    })
    .await;
}

/// Every success once, and no other success.
fn assert_each_delivered_once(receiver: &Receiver, expected: &[String]) {
    let successes = ids(&receiver.successes());
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in &successes {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    for id in expected {
        assert_eq!(
            counts.get(id.as_str()).copied().unwrap_or(0),
            1,
            "{id} must be delivered exactly once; successes: {successes:?}"
        );
    }
    assert_eq!(
        successes.len(),
        expected.len(),
        "unexpected successes: {successes:?}"
    );
}

/// The ids of `all` that belong to `subset`, in the order of `all`.
fn only(all: &[String], subset: &[String]) -> Vec<String> {
    all.iter()
        .filter(|id| subset.contains(id))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_redis_loss_nothing_is_accepted_and_dropped_and_an_import_delivers_every_event_once_in_strict_order_blocked_one_first(
) {
    let redis = PrivateRedis::start().await;
    let env = TestEnv::builder().redis_url(&redis.url()).start().await;
    let receiver = Receiver::start().await;
    subscribe_strict(&env, &receiver, "fleet").await;

    // Before the loss: one delivered, one blocked, two waiting behind it.
    env.send_event(event("e-0", "vehicle.moved", json!({"n": 0})))
        .await;
    receiver.wait_for_successes(1, DEADLINE).await;
    receiver.refuse_event("e-1", 503);
    env.send_event(event("e-1", "vehicle.moved", json!({"n": 1})))
        .await;
    wait_blocked_on(&env, "fleet", "e-1").await;
    env.send_event(event("e-2", "vehicle.moved", json!({"n": 2})))
        .await;
    env.publish_events_amqp(&[event("e-3", "vehicle.moved", json!({"n": 3}))])
        .await;

    // The scheduled backup.
    let export = env
        .api(Method::GET, "/v1/admin/export", Auth::Admin, None)
        .await;
    assert_eq!(export.status, StatusCode::OK, "{}", export.text);
    let subscriptions = export.json["subscriptions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(subscriptions.len(), 1, "{}", export.text);
    assert_eq!(
        subscriptions[0]["block"]["event_id"], "e-1",
        "the block is exported"
    );

    // Events keep flowing over both intakes while Redis loses everything.
    let mut http_accepted = Vec::new();
    let mut http_refused = Vec::new();
    let mut amqp_sent = Vec::new();
    let mut n = 100;
    let send_one = async |n: usize,
                          http_accepted: &mut Vec<String>,
                          http_refused: &mut Vec<String>,
                          amqp_sent: &mut Vec<String>| {
        let http_id = format!("h-{n}");
        let (status, body) = env
            .post_event(event(&http_id, "vehicle.moved", json!({"n": n})))
            .await;
        match status {
            StatusCode::ACCEPTED => http_accepted.push(http_id),
            StatusCode::SERVICE_UNAVAILABLE => http_refused.push(http_id),
            other => panic!("POST answered {other} {body}"),
        }
        let amqp_id = format!("a-{n}");
        env.publish_events_amqp(&[event(&amqp_id, "vehicle.moved", json!({"n": n}))])
            .await;
        amqp_sent.push(amqp_id);
    };
    for _ in 0..5 {
        send_one(n, &mut http_accepted, &mut http_refused, &mut amqp_sent).await;
        n += 1;
    }
    redis.restart_empty().await;
    // Keep sending until the services noticed, then a few more.
    let mut lost_answers = 0;
    while lost_answers < 3 {
        let refused_before = http_refused.len();
        send_one(n, &mut http_accepted, &mut http_refused, &mut amqp_sent).await;
        n += 1;
        if http_refused.len() > refused_before {
            lost_answers += 1;
        }
        assert!(n < 10_000, "HTTP intake never refused after the loss");
    }
    wait_state(&env, true).await;
    let (status, body) = env
        .post_event(event("h-late", "vehicle.moved", json!({})))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "state_lost", "{body}");
    http_refused.push("h-late".to_string());
    // Management writes would land in the emptied Redis: refused too.
    let (status, body) = env
        .create_subscription(
            json!({"id": "newcomer", "endpoint": receiver.url(), "event_types": ["x.*"]}),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "state_lost", "{body}");
    assert!(
        env.metrics_page(env.ingest_url())
            .await
            .contains("postline_state_lost 1"),
        "ingest reports the loss as a metric"
    );
    assert!(
        env.metrics_page(&delivery_url(&env))
            .await
            .contains("postline_state_lost 1"),
        "delivery reports the loss as a metric"
    );
    // AMQP intake holds its messages: the late ones are still in its queue.
    env.publish_events_amqp(&[event("a-late", "vehicle.moved", json!({}))])
        .await;
    amqp_sent.push("a-late".to_string());
    let intake = env.topology.ingest_queue();
    wait::until(
        "the late AMQP event to wait in the intake queue",
        DEADLINE,
        || async {
            match env.queue_depth(&intake).await {
                Some(depth) if depth >= 1 => Ok(()),
                other => Err(format!("intake depth {other:?}")),
            }
        },
    )
    .await;
    // Nothing after the blocked event was sent while the state was lost.
    let successes = ids(&receiver.successes());
    assert_eq!(
        successes,
        vec!["e-0".to_string()],
        "only e-0 was delivered so far"
    );
    // An export now would be empty: refused, so it cannot replace a good backup.
    let empty = env
        .api(Method::GET, "/v1/admin/export", Auth::Admin, None)
        .await;
    assert_eq!(
        empty.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        empty.text
    );

    // Recovery: import the backup; the receiver works again.
    let import = env
        .api(
            Method::POST,
            "/v1/admin/import",
            Auth::Admin,
            Some(export.text.clone().into_bytes()),
        )
        .await;
    assert_eq!(import.status, StatusCode::OK, "{}", import.text);
    assert_eq!(import.json["imported"], 1, "{}", import.text);
    assert_eq!(import.json["blocks"], 1, "{}", import.text);
    wait_state(&env, false).await;
    receiver.accept_event("e-1");
    // The producer re-sends what was refused.
    for id in &http_refused {
        let (status, body) = env.post_event(event(id, "vehicle.moved", json!({}))).await;
        assert_eq!(status, StatusCode::ACCEPTED, "re-sending {id}: {body}");
    }

    let mut expected: Vec<String> = ["e-0", "e-1", "e-2", "e-3"].map(String::from).to_vec();
    expected.extend(http_accepted.iter().cloned());
    expected.extend(amqp_sent.iter().cloned());
    expected.extend(http_refused.iter().cloned());
    receiver.wait_for_successes(expected.len(), DEADLINE).await;
    receiver.assert_no_more(postline_tests::QUIET).await;
    assert_each_delivered_once(&receiver, &expected);
    let successes = ids(&receiver.successes());
    assert_sequence(
        "the blocked event first, then the ones behind it",
        &successes[..4],
        &["e-0", "e-1", "e-2", "e-3"].map(String::from),
    );
    assert_sequence(
        "HTTP events accepted before and during the loss",
        &only(&successes, &http_accepted),
        &http_accepted,
    );
    assert_sequence("AMQP events", &only(&successes, &amqp_sent), &amqp_sent);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_fresh_start_makes_services_ready_again_and_names_strict_subscriptions_that_may_be_out_of_order(
) {
    let redis = PrivateRedis::start().await;
    let env = TestEnv::builder().redis_url(&redis.url()).start().await;
    let receiver = Receiver::start().await;
    let idle = Receiver::start().await;
    subscribe_strict(&env, &receiver, "stuck").await;
    env.subscribe(json!({"id": "idle", "endpoint": idle.url(), "event_types": ["other.*"]}))
        .await;

    // Nothing is lost: a reset is refused.
    let refused = env
        .api(Method::POST, "/v1/admin/reset-state", Auth::Admin, None)
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text);
    assert_eq!(refused.json["error"]["code"], "state_present");

    receiver.refuse_event("s-1", 503);
    env.send_event(event("s-1", "vehicle.moved", json!({})))
        .await;
    wait_blocked_on(&env, "stuck", "s-1").await;
    env.send_event(event("s-2", "vehicle.moved", json!({})))
        .await;
    env.send_event(event("s-3", "vehicle.moved", json!({})))
        .await;

    redis.restart_empty().await;
    wait_state(&env, true).await;
    let reset = env
        .api(Method::POST, "/v1/admin/reset-state", Auth::Admin, None)
        .await;
    assert_eq!(reset.status, StatusCode::OK, "{}", reset.text);
    let at_risk: Vec<&str> = reset.json["may_be_out_of_order"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(at_risk, vec!["stuck"], "{}", reset.text);
    assert!(
        reset.json["installation"]["id"].is_string(),
        "{}",
        reset.text
    );
    wait_state(&env, false).await;
    env.cleanup().await;
}

/// The operational event's type, after checking its Standard Webhooks signature.
fn verified_type(request: &Recorded, secret: &str) -> String {
    let id = request.header("webhook-id").expect("webhook-id");
    let timestamp = request
        .header("webhook-timestamp")
        .expect("webhook-timestamp");
    let signature = request
        .header("webhook-signature")
        .expect("webhook-signature");
    assert_eq!(
        signature,
        standard_webhooks_v1(secret, id, timestamp, &request.body),
        "signature of {}",
        request.summary()
    );
    let body = request.json();
    assert_eq!(body["id"], id, "the webhook id is the event id");
    body["type"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_endpoint_gets_each_operational_event_once_signed() {
    let redis = PrivateRedis::start().await;
    let operator = Receiver::start().await;
    let secret = new_whsec();
    let mut builder = TestEnv::builder().redis_url(&redis.url());
    builder.ingest.operator = Some(postline_ingest::operator::OperatorConfig {
        url: operator.url(),
        secret: postline_shared::model::secret::Secret::new(secret.clone()),
        blocked_alert_after: std::time::Duration::from_secs(1),
        scan_every: std::time::Duration::from_millis(100),
    });
    let env = builder.start().await;
    env.track_queue(&env.topology.subscription_queue(&sub_id("_operator")));
    let partner = Receiver::start().await;
    subscribe_strict(&env, &partner, "blocky").await;
    for (id, rule) in [("quitter", "disable"), ("skipper", "skip")] {
        env.subscribe(json!({
            "id": id,
            "endpoint": partner.url(),
            "event_types": [format!("{id}.*")],
            "retry": {"policy": "fixed", "retries": 1, "delay_ms": 50, "on_give_up": rule},
        }))
        .await;
    }
    // The operator's subscription is internal: not listed, not reachable.
    let (_, listed) = env.list_subscriptions().await;
    assert!(!listed.to_string().contains("_operator"), "{listed}");
    let (status, _) = env.get_subscription("_operator").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    for id in ["b-1", "q-1", "p-1"] {
        partner.refuse_event(id, 503);
    }
    env.send_event(event("b-1", "vehicle.moved", json!({})))
        .await;
    env.send_event(event("q-1", "quitter.failed", json!({})))
        .await;
    env.send_event(event("p-1", "skipper.failed", json!({})))
        .await;

    let mut want = vec![
        "postline.event.parked",
        "postline.subscription.blocked",
        "postline.subscription.disabled",
    ];
    operator.wait_for_successes(want.len(), DEADLINE).await;
    // Scans go on every 100 ms: still once each.
    let got = operator.assert_no_more(postline_tests::QUIET).await;
    let mut types: Vec<String> = got.iter().map(|r| verified_type(r, &secret)).collect();
    types.sort();
    assert_eq!(types, want, "{}", postline_tests::receiver::describe(&got));
    let parked = got
        .iter()
        .find(|r| r.json()["type"] == "postline.event.parked")
        .map(Recorded::json)
        .unwrap_or_default();
    assert_eq!(parked["payload"]["subscription"], "skipper");
    assert_eq!(parked["payload"]["event_id"], "p-1");

    // Redis loses its state: told directly, once.
    redis.restart_empty().await;
    wait_state(&env, true).await;
    want.push("postline.state.lost");
    want.sort();
    operator.wait_for_successes(want.len(), DEADLINE).await;
    let got = operator.assert_no_more(postline_tests::QUIET).await;
    let mut types: Vec<String> = got.iter().map(|r| verified_type(r, &secret)).collect();
    types.sort();
    assert_eq!(types, want, "{}", postline_tests::receiver::describe(&got));
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_installation_from_before_the_marker_is_adopted_not_taken_for_lost() {
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    subscribe_strict(&env, &receiver, "older").await;
    // As on a Redis written by a Postline without the marker.
    let marker = format!("{}:installation", env.namespace);
    let mut redis = env.redis();
    let _: () = redis::AsyncCommands::del(&mut redis, &marker)
        .await
        .expect("DEL the marker");
    wait::until("the marker to be written again", DEADLINE, || {
        let mut redis = env.redis();
        let marker = marker.clone();
        async move {
            let present: bool = redis::AsyncCommands::exists(&mut redis, &marker)
                .await
                .map_err(|e| e.to_string())?;
            if present {
                Ok(())
            } else {
                Err("absent".to_string())
            }
        }
    })
    .await;
    wait_state(&env, false).await;
    env.send_event(event("o-1", "vehicle.moved", json!({})))
        .await;
    receiver.wait_for_successes(1, DEADLINE).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compare_and_set_writes_only_over_the_value_it_was_given() {
    use postline_shared::redis::compare_and_set::{CompareAndSet, Swap};
    let env = TestEnv::start().await;
    let key = format!("{}:cas-test", env.namespace);
    let mut redis = env.redis();
    let cas = CompareAndSet::default();
    let swap = |expected: &'static str, new: &'static str| {
        let (cas, key, mut redis) = (cas.clone(), key.clone(), env.redis());
        async move {
            cas.swap(&mut redis, &key, expected, new)
                .await
                .expect("the script runs")
        }
    };
    assert_eq!(
        swap("a", "b").await,
        Swap::Missing,
        "nothing to compare with"
    );
    let _: () = redis::AsyncCommands::set(&mut redis, &key, "a")
        .await
        .expect("SET");
    assert_eq!(swap("x", "b").await, Swap::Changed);
    let kept: String = redis::AsyncCommands::get(&mut redis, &key)
        .await
        .expect("GET");
    assert_eq!(kept, "a", "a changed value is left alone");
    assert_eq!(swap("a", "b").await, Swap::Stored);
    let stored: String = redis::AsyncCommands::get(&mut redis, &key)
        .await
        .expect("GET");
    assert_eq!(stored, "b");
    env.cleanup().await;
}
