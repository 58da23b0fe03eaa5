//! The failure path: retries on the backoff ladder through delay queues,
//! strict order kept while an event is blocked (across restarts and two
//! replicas), the give-up rules (`disable` with the backlog kept or
//! discarded, `skip` with parking and replay), `fixed` retries, and the
//! operator controls and metrics. Ladders here are in milliseconds.
//!
//! Run on classic queues by `tests/ladder.rs` and on quorum queues (no
//! priorities: the ordering protocol must not need them) by
//! `tests/ladder_quorum.rs`.

use postline_shared::amqp::topology::QueueType;
use postline_tests::events::{assert_sequence, collapse_adjacent, ids_of, numbered};
use postline_tests::receiver::{describe, ids};
use postline_tests::sub_id;
use postline_tests::{wait, Receiver, Recorded, TestEnv, DEADLINE, QUIET};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

/// How much later than its step an attempt may come before the test calls
/// it "wildly more" (broker TTL expiry, a consumer restart, a loaded machine).
const LATENESS_ALLOWED: Duration = Duration::from_millis(2_500);

async fn subscribe(env: &TestEnv, receiver: &Receiver, id: &str, extra: Value) {
    let mut spec = json!({
        "id": id,
        "endpoint": receiver.url(),
        "event_types": ["vehicle.*"],
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    env.subscribe(spec).await;
}

/// Whether a queue depth shows `events` waiting. On quorum queues the delayed
/// copies of a blocked event come back at the tail and wait there (each a
/// wake-up, dropped as superseded when reached), so they add to the depth.
fn holds_backlog(env: &TestEnv, depth: &Value, events: usize) -> bool {
    let Some(depth) = depth.as_u64() else {
        return false;
    };
    match env.topology.queue_type() {
        QueueType::Classic => depth == events as u64,
        QueueType::Quorum => depth >= events as u64,
    }
}

/// The requests the receiver got for one event.
fn attempts_of(all: &[Recorded], event_id: &str) -> Vec<Recorded> {
    all.iter()
        .filter(|r| r.event_id().as_deref() == Some(event_id))
        .cloned()
        .collect()
}

/// Every event delivered exactly once as a success, in publication order.
fn assert_delivered_once_in_order(receiver: &Receiver, events: &[Value]) {
    let successes = ids(&receiver.successes());
    assert_sequence("successful deliveries", &successes, &ids_of(events));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_gets_each_event_once_in_order_with_attempts_on_the_ladder() {
    const COUNT: usize = 5;
    let steps = [200u64, 400, 800];
    let env = crate::start_env().await;
    let receiver = Receiver::start().await;
    // 1 + 2 immediate failures, then one failure at each step and one more
    // at the repeat step: 6 failures, the 7th attempt succeeds.
    receiver.fail_next(6, 503);
    subscribe(
        &env,
        &receiver,
        "ladder",
        json!({"retry": {
            "immediate_retries": 2,
            "immediate_pause_ms": 20,
            "steps_ms": steps,
            "repeat_every_ms": 800,
        }}),
    )
    .await;
    let events = numbered("l", "vehicle.moved", COUNT);
    env.publish_events_amqp(&events).await;

    receiver.wait_for_successes(COUNT, DEADLINE).await;
    let all = receiver.assert_no_more(QUIET).await;
    assert_delivered_once_in_order(&receiver, &events);
    let first = attempts_of(&all, "l-00000");
    assert_eq!(first.len(), 7, "{}", describe(&all));
    assert!(
        all[..7]
            .iter()
            .all(|r| r.event_id().as_deref() == Some("l-00000")),
        "nothing overtook the failing event: {}",
        describe(&all)
    );
    let gaps: Vec<Duration> = first.windows(2).map(|w| w[1].at - w[0].at).collect();
    let expected = [20, 20, 200, 400, 800, 800].map(Duration::from_millis);
    for (i, (gap, step)) in gaps.iter().zip(expected).enumerate() {
        assert!(
            *gap >= step && *gap < step + LATENESS_ALLOWED,
            "gap {i} was {gap:?}, the step is {step:?} (all gaps {gaps:?})"
        );
    }

    // The attempts log has every attempt of the first event, newest first.
    let (status, log) = env.operate(Method::GET, "ladder", "attempts").await;
    assert_eq!(status, StatusCode::OK, "{log}");
    let logged: Vec<&Value> = log["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .filter(|a| a["event_id"] == "l-00000")
        .collect();
    assert_eq!(logged.len(), 7, "{log}");
    assert_eq!(logged[0]["attempt"], 7);
    assert_eq!(logged[0]["outcome"], "delivered");
    assert_eq!(logged[6]["attempt"], 1);
    assert_eq!(logged[6]["status"], 503);
    assert!(logged[6]["duration_ms"].is_u64());
    let state = env.delivery_state("ladder").await;
    assert!(state["blocked"].is_null(), "{state}");
    assert_eq!(state["counters"]["delivered"], COUNT);
    assert_eq!(state["counters"]["failed_attempts"], 6);
    for step in steps {
        let label = format!("delay_ms=\"{step}\"");
        let count = if step == 800 { "2" } else { "1" };
        env.wait_metric("postline_retries_scheduled_total", &[&label], count)
            .await;
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_events_wait_while_one_is_blocked_and_follow_it_in_order() {
    const COUNT: usize = 10;
    let env = crate::start_env().await;
    let receiver = Receiver::start().await;
    receiver.refuse_event("b-00002", 500);
    subscribe(
        &env,
        &receiver,
        "blocked",
        json!({"retry": {"immediate_retries": 1, "steps_ms": [150], "repeat_every_ms": 150}}),
    )
    .await;
    let events = numbered("b", "vehicle.moved", COUNT);
    env.publish_events_amqp(&events).await;

    // Two delivered, then the third keeps failing on the ladder.
    receiver
        .wait_until("5 attempts of b-00002", DEADLINE, |all| {
            attempts_of(all, "b-00002").len() >= 5
        })
        .await;
    // Between sessions nothing is prefetched, so the broker counts the rest
    // as ready (during a session they are briefly unacked, not counted).
    let state = env
        .wait_delivery_state("blocked", "a block, the rest waiting in the queue", |s| {
            s["blocked"]["event_id"] == "b-00002" && holds_backlog(&env, &s["backlog"], COUNT - 3)
        })
        .await;
    assert!(state["blocked"]["attempts"].as_u64() >= Some(2), "{state}");
    assert!(state["blocked"]["next_attempt_at"].is_string(), "{state}");
    assert!(state["blocked"]["first_failure_at"].is_string(), "{state}");
    assert!(
        state["blocked"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("500")),
        "{state}"
    );
    assert!(
        holds_backlog(&env, &state["backlog"], COUNT - 3),
        "the rest wait in the queue: {state}"
    );
    env.wait_metric("postline_subscriptions_blocked", &[], "1")
        .await;
    let seen = ids(&receiver.requests());
    assert!(
        !seen.iter().any(|id| id.as_str() > "b-00002"),
        "no later event is sent while b-00002 is blocked: {seen:?}"
    );

    receiver.accept_event("b-00002");
    receiver.wait_for_successes(COUNT, DEADLINE).await;
    receiver.assert_no_more(QUIET).await;
    assert_delivered_once_in_order(&receiver, &events);
    let state = env
        .wait_delivery_state("blocked", "the block to end", |s| s["blocked"].is_null())
        .await;
    assert_eq!(state["counters"]["delivered"], COUNT, "{state}");
    env.wait_metric("postline_subscriptions_blocked", &[], "0")
        .await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_the_event_sits_in_a_delay_queue_keeps_order() {
    const COUNT: usize = 10;
    const STEP: u64 = 1_500;
    let mut env = crate::start_env().await;
    let receiver = Receiver::start().await;
    receiver.refuse_event("c-00000", 503);
    subscribe(
        &env,
        &receiver,
        "crashy",
        json!({"retry": {"immediate_retries": 1, "steps_ms": [STEP], "repeat_every_ms": STEP}}),
    )
    .await;
    let events = numbered("c", "vehicle.moved", COUNT);
    env.publish_events_amqp(&events).await;
    receiver.wait_for(2, DEADLINE).await;
    let delay_queue = env.topology.delay_queue(STEP);
    env.wait_queue_depth(&delay_queue, 1).await;

    // Delivery dies with the event in the delay queue and nothing in memory
    // that matters; a new delivery service picks up from Redis and the broker.
    env.abort_delivery();
    receiver.accept_event("c-00000");
    env.start_delivery().await;

    receiver.wait_for_successes(COUNT, DEADLINE).await;
    receiver.assert_no_more(QUIET).await;
    assert_delivered_once_in_order(&receiver, &events);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_delivery_replicas_still_post_one_at_a_time_in_order() {
    const COUNT: usize = 150;
    let mut env = crate::start_env().await;
    env.start_replica().await;
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(3));
    // The first event goes through the ladder, so the replicas hand the
    // queue back and forth while it is blocked.
    receiver.fail_next(6, 500);
    subscribe(&env, &receiver, "twins", json!({})).await;
    let events = numbered("t", "vehicle.moved", COUNT);
    env.publish_events_amqp(&events).await;

    receiver.wait_for_successes(COUNT, DEADLINE).await;
    receiver.assert_no_more(QUIET).await;
    assert_delivered_once_in_order(&receiver, &events);
    assert_eq!(
        receiver.max_in_flight(),
        1,
        "a strict subscription never has two POSTs in flight"
    );
    // Stopping the first replica hands the queue to the other one.
    env.stop_delivery().await;
    let more = numbered("u", "vehicle.moved", 20);
    env.publish_events_amqp(&more).await;
    receiver.wait_for_successes(COUNT + 20, DEADLINE).await;
    let tail: Vec<String> = ids(&receiver.successes()).split_off(COUNT);
    assert_sequence("delivered by the remaining replica", &tail, &ids_of(&more));
    env.cleanup().await;
}

/// A policy that gives up quickly: 2 attempts, then 50 ms steps for 400 ms.
fn quick_give_up(rule: &str, discard: bool) -> Value {
    let mut retry = json!({
        "immediate_retries": 1,
        "immediate_pause_ms": 10,
        "steps_ms": [50],
        "repeat_every_ms": 50,
        "give_up_after_ms": 400,
        "on_give_up": rule,
    });
    if discard {
        retry["discard_on_disable"] = json!(true);
    }
    json!({ "retry": retry })
}

async fn wait_disabled(env: &TestEnv, id: &str) -> Value {
    wait::until(&format!("{id} to be disabled"), DEADLINE, || async {
        let (_, body) = env.get_subscription(id).await;
        if body["status"] == "disabled" {
            Ok(body)
        } else {
            Err(body.to_string())
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn give_up_disables_keeps_the_backlog_and_reenabling_delivers_it_in_order() {
    let env = crate::start_env().await;
    let receiver = Receiver::start().await;
    receiver.answer_always(500);
    subscribe(&env, &receiver, "gone", quick_give_up("disable", false)).await;
    let events = numbered("d", "vehicle.moved", 5);
    env.publish_events_amqp(&events).await;

    let disabled = wait_disabled(&env, "gone").await;
    assert_eq!(disabled["disabled"]["event_id"], "d-00000", "{disabled}");
    assert!(
        disabled["disabled"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("500")),
        "{disabled}"
    );
    assert!(disabled["disabled"]["at"].is_string(), "{disabled}");
    let tried = receiver.event_ids();
    assert!(tried.iter().all(|id| id == "d-00000"), "{tried:?}");
    // Events keep queueing while disabled; the given-up one heads the backlog.
    let later = numbered("e", "vehicle.moved", 2);
    env.publish_events_amqp(&later).await;
    let queue = env.topology.subscription_queue(&sub_id("gone"));
    wait::until("the backlog kept in the queue", DEADLINE, || async {
        let depth = env.queue_depth(&queue).await;
        if depth.is_some_and(|n| holds_backlog(&env, &n.into(), 7)) {
            Ok(())
        } else {
            Err(format!("depth {depth:?}"))
        }
    })
    .await;
    let state = env.delivery_state("gone").await;
    assert_eq!(state["status"], "disabled", "{state}");
    // The block stays with the kept backlog, so the given-up event is still
    // first after re-enabling (whichever queue position its copy has).
    assert_eq!(state["blocked"]["event_id"], "d-00000", "{state}");
    env.wait_metric("postline_subscriptions_disabled", &[], "1")
        .await;
    env.wait_metric("postline_give_ups_total", &["rule=\"disable\""], "1")
        .await;
    let attempts_before = receiver.count();
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        receiver.count(),
        attempts_before,
        "nothing is sent while disabled"
    );

    receiver.answer_always(200);
    let (status, body) = env.operate(Method::POST, "gone", "enable").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "active");
    assert!(body["disabled"].is_null(), "{body}");
    let all_events: Vec<Value> = events.iter().chain(&later).cloned().collect();
    receiver.wait_for_successes(7, DEADLINE).await;
    receiver.assert_no_more(QUIET).await;
    assert_delivered_once_in_order(&receiver, &all_events);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn give_up_with_discard_on_disable_drops_the_backlog() {
    let env = crate::start_env().await;
    let receiver = Receiver::start().await;
    receiver.answer_always(503);
    subscribe(&env, &receiver, "dropped", quick_give_up("disable", true)).await;
    let events = numbered("x", "vehicle.moved", 5);
    env.publish_events_amqp(&events).await;

    let disabled = wait_disabled(&env, "dropped").await;
    assert_eq!(
        disabled["disabled"]["backlog_discarded"], true,
        "{disabled}"
    );
    let queue = env.topology.subscription_queue(&sub_id("dropped"));
    env.wait_queue_depth(&queue, 0).await;
    let state = env
        // The 5 events; on a quorum queue also the delayed copies of the
        // given-up one that came back behind the backlog (each a message).
        .wait_delivery_state("dropped", "5 discarded", |s| {
            s["counters"]["discarded"].as_u64() >= Some(5)
        })
        .await;
    assert_eq!(state["backlog"], 0, "{state}");

    // Re-enabled, only what arrives from now on is delivered.
    receiver.answer_always(200);
    let (status, body) = env.operate(Method::POST, "dropped", "enable").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let fresh = numbered("y", "vehicle.moved", 2);
    env.publish_events_amqp(&fresh).await;
    receiver.wait_for_successes(2, DEADLINE).await;
    receiver.assert_no_more(QUIET).await;
    assert_delivered_once_in_order(&receiver, &fresh);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_retries_then_skip_parks_the_event_and_replay_delivers_it() {
    // The order-status partner: 2 retries a fixed delay apart, then the
    // update is marked failed and the next ones go on.
    const DELAY: u64 = 300;
    let env = crate::start_env().await;
    let receiver = Receiver::start().await;
    receiver.refuse_event("s-00001", 500);
    subscribe(
        &env,
        &receiver,
        "orders",
        json!({"retry": {"policy": "fixed", "retries": 2, "delay_ms": DELAY, "on_give_up": "skip"}}),
    )
    .await;
    let events = numbered("s", "vehicle.moved", 5);
    env.publish_events_amqp(&events).await;

    receiver.wait_for_successes(4, DEADLINE).await;
    let all = receiver.assert_no_more(QUIET).await;
    let delivered = ids(&receiver.successes());
    assert_sequence(
        "delivered around the given-up event",
        &delivered,
        &["s-00000", "s-00002", "s-00003", "s-00004"].map(String::from),
    );
    let refused = attempts_of(&all, "s-00001");
    assert_eq!(
        refused.len(),
        3,
        "1 attempt + 2 retries: {}",
        describe(&all)
    );
    for pair in refused.windows(2) {
        let gap = pair[1].at - pair[0].at;
        let step = Duration::from_millis(DELAY);
        assert!(gap >= step && gap < step + LATENESS_ALLOWED, "gap {gap:?}");
    }
    // The next events waited for the give-up: strict order holds.
    let s2 = all
        .iter()
        .position(|r| r.event_id().as_deref() == Some("s-00002"));
    let last_refusal = all
        .iter()
        .rposition(|r| r.event_id().as_deref() == Some("s-00001"));
    assert!(s2 > last_refusal, "{}", describe(&all));

    let (status, parked) = env.operate(Method::GET, "orders", "parked").await;
    assert_eq!(status, StatusCode::OK, "{parked}");
    let list = parked["parked"].as_array().expect("parked list");
    assert_eq!(list.len(), 1, "{parked}");
    assert_eq!(list[0]["event_id"], "s-00001");
    assert_eq!(list[0]["attempts"], 3);
    assert!(list[0]["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("500")));
    assert!(
        list[0].get("envelope").is_none(),
        "the body is not listed: {parked}"
    );
    env.wait_metric("postline_give_ups_total", &["rule=\"skip\""], "1")
        .await;
    env.wait_metric("postline_parked_events", &["subscription=\"orders\""], "1")
        .await;

    receiver.accept_event("s-00001");
    let (status, body) = env
        .operate(Method::POST, "orders", "parked/s-00001/replay")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["replayed"], json!(["s-00001"]));
    receiver.wait_for_successes(5, DEADLINE).await;
    receiver.assert_no_more(QUIET).await;
    assert_eq!(
        ids(&receiver.successes()).last().map(String::as_str),
        Some("s-00001")
    );
    let (_, parked) = env.operate(Method::GET, "orders", "parked").await;
    assert_eq!(parked["parked"], json!([]), "{parked}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_now_skips_the_rest_of_a_long_wait() {
    let env = crate::start_env().await;
    let receiver = Receiver::start().await;
    receiver.refuse_event("n-00000", 502);
    // A one-hour step: only "retry now" can bring the event back in time.
    subscribe(
        &env,
        &receiver,
        "patient",
        json!({"retry": {"immediate_retries": 1, "steps_ms": [3_600_000]}}),
    )
    .await;
    let events = numbered("n", "vehicle.moved", 4);
    env.publish_events_amqp(&events).await;
    env.wait_delivery_state("patient", "a one-hour block", |s| {
        s["blocked"]["event_id"] == "n-00000"
    })
    .await;
    assert_eq!(receiver.count(), 2);

    receiver.accept_event("n-00000");
    let (status, body) = env.operate(Method::POST, "patient", "retry").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["event_id"], "n-00000");
    receiver.wait_for_successes(4, DEADLINE).await;
    receiver.assert_no_more(QUIET).await;
    assert_delivered_once_in_order(&receiver, &events);

    // Nothing is blocked now: a second retry is refused, saying why.
    let (status, body) = env.operate(Method::POST, "patient", "retry").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "not_blocked");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_none_keeps_delivering_while_a_failed_event_waits_on_the_ladder() {
    const COUNT: usize = 10;
    let env = crate::start_env().await;
    let receiver = Receiver::start().await;
    receiver.refuse_event("o-00000", 500);
    subscribe(
        &env,
        &receiver,
        "loose",
        json!({"order": "none", "retry": {"immediate_retries": 0, "steps_ms": [200], "repeat_every_ms": 200}}),
    )
    .await;
    let events = numbered("o", "vehicle.moved", COUNT);
    env.publish_events_amqp(&events).await;
    receiver.wait_for_successes(COUNT - 1, DEADLINE).await;
    assert!(attempts_of(&receiver.requests(), "o-00000")
        .iter()
        .all(|r| !r.succeeded()));
    let state = env.delivery_state("loose").await;
    assert!(
        state["blocked"].is_null(),
        "order none never blocks: {state}"
    );

    receiver.accept_event("o-00000");
    receiver.wait_for_successes(COUNT, DEADLINE).await;
    receiver.assert_no_more(QUIET).await;
    let mut delivered = ids(&receiver.successes());
    assert_eq!(delivered.last().map(String::as_str), Some("o-00000"));
    delivered.sort();
    assert_eq!(
        collapse_adjacent(&delivered),
        delivered,
        "each exactly once"
    );
    assert_eq!(delivered, ids_of(&events));
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_api_errors_name_what_is_wrong() {
    let env = crate::env_builder().without_delivery().start().await;
    let receiver = Receiver::start().await;
    let (status, body) = env
        .create_subscription(json!({
            "id": "bad", "endpoint": receiver.url(), "event_types": ["a"],
            "retry": {"steps_ms": [0]},
        }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "retry.steps_ms[0]");
    let (status, body) = env
        .create_subscription(json!({
            "id": "bad", "endpoint": receiver.url(), "event_types": ["a"],
            "retry": {"policy": "fixed", "delay_ms": 100},
        }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "retry.retries");

    // The default policy is shown whole: the production ladder.
    let created = env
        .subscribe(
            json!({"id": "plain", "endpoint": receiver.url(), "event_types": ["a"], "retry": {}}),
        )
        .await;
    assert_eq!(
        created["retry"]["steps_ms"],
        json!([300000, 900000, 2100000, 3600000, 9000000, 18000000, 37800000, 75600000, 172800000])
    );
    assert_eq!(created["retry"]["give_up_after_ms"], 604_800_000u64);
    assert_eq!(created["retry"]["on_give_up"], "disable");

    let (status, body) = env.operate(Method::POST, "plain", "retry").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = env
        .operate(Method::POST, "plain", "parked/nope/replay")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = env
        .operate(Method::GET, "plain", "attempts?limit=abc")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "limit");
    let (status, body) = env.operate(Method::GET, "ghost", "state").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = env
        .patch_subscription("plain", json!({"status": "disabled"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "status");
    env.cleanup().await;
}
