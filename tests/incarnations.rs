//! Every copy of an event carries the subscription incarnation it was made
//! for: a subscription deleted and created again with the same id, or
//! re-enabled after `discard_on_disable`, never receives a copy that was
//! waiting in a delay queue for its former life.

use postline_tests::events::event;
use postline_tests::sub_id;
use postline_tests::{wait, Receiver, TestEnv, DEADLINE, QUIET};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_created_again_with_the_same_id_never_gets_a_copy_of_its_former_life() {
    let env = TestEnv::start().await;
    let old = Receiver::start().await;
    let new = Receiver::start().await;
    old.answer_always(503);
    let step_ms = 1_500;
    env.subscribe(json!({
        "id": "reborn",
        "endpoint": old.url(),
        "event_types": ["vehicle.*"],
        "retry": {"immediate_retries": 0, "steps_ms": [step_ms], "repeat_every_ms": step_ms},
    }))
    .await;
    env.send_event(event("old-1", "vehicle.moved", json!({"n": 1})))
        .await;
    // Blocked: the event's copy now waits in the delay queue.
    env.wait_delivery_state("reborn", "blocked on old-1", |state| {
        state["blocked"]["event_id"] == "old-1"
    })
    .await;
    let (status, _) = env.delete_subscription("reborn").await;
    assert_eq!(status, StatusCode::OK);
    env.subscribe(json!({
        "id": "reborn",
        "endpoint": new.url(),
        "event_types": ["parcel.*"],
    }))
    .await;
    // The old copy comes back into the new queue when its step expires and
    // is dropped as another incarnation's.
    env.wait_delivery_state("reborn", "the old copy dropped as stale", |state| {
        state["counters"]["stale"].as_u64() >= Some(1)
    })
    .await;
    env.send_event(event("new-1", "parcel.sent", json!({"n": 2})))
        .await;
    new.wait_for_successes(1, DEADLINE).await;
    let got = new.assert_no_more(QUIET).await;
    let ids: Vec<_> = got.iter().filter_map(|r| r.event_id()).collect();
    assert_eq!(
        ids,
        ["new-1"],
        "only the new life's event reaches the new endpoint"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_on_disable_leaves_no_copy_behind_for_an_unordered_subscription() {
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    let step_ms = 1_500;
    env.subscribe(json!({
        "id": "discarding",
        "endpoint": receiver.url(),
        "event_types": ["vehicle.*"],
        "order": "none",
        "retry": {"immediate_retries": 0, "steps_ms": [step_ms], "repeat_every_ms": step_ms,
                  "discard_on_disable": true},
    }))
    .await;
    // `waiting` fails once and sits in the delay queue...
    receiver.refuse_event("waiting", 503);
    env.send_event(event("waiting", "vehicle.moved", json!({"n": 1})))
        .await;
    receiver
        .wait_until("one failed attempt of `waiting`", DEADLINE, |all| {
            all.iter()
                .any(|r| r.event_id().as_deref() == Some("waiting"))
        })
        .await;
    // ...when `gone` is answered 410, which disables with a discard.
    receiver.refuse_event("gone", 410);
    env.send_event(event("gone", "vehicle.moved", json!({"n": 2})))
        .await;
    let state = env
        .wait_delivery_state("discarding", "disabled", |state| {
            state["status"] == "disabled"
        })
        .await;
    assert_eq!(state["disabled"]["backlog_discarded"], true, "{state}");
    receiver.accept_event("waiting");
    receiver.accept_event("gone");
    // Past the delay step the copy of `waiting` is back in the queue...
    let queue = env.topology.subscription_queue(&sub_id("discarding"));
    env.wait_queue_depth(&queue, 1).await;
    let (status, body) = env.operate(Method::POST, "discarding", "enable").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // ...and after re-enabling it is dropped, not delivered.
    let state = env
        .wait_delivery_state("discarding", "the old copy dropped as stale", |state| {
            state["counters"]["stale"].as_u64() >= Some(1)
        })
        .await;
    assert_eq!(state["counters"]["gone"], 1, "{state}");
    env.send_event(event("after", "vehicle.moved", json!({"n": 3})))
        .await;
    receiver
        .wait_until("`after` delivered", DEADLINE, |all| {
            all.iter()
                .any(|r| r.succeeded() && r.event_id().as_deref() == Some("after"))
        })
        .await;
    let all = receiver.assert_no_more(QUIET).await;
    let delivered: Vec<_> = all
        .iter()
        .filter(|r| r.succeeded())
        .filter_map(|r| r.event_id())
        .collect();
    assert_eq!(
        delivered,
        ["after"],
        "nothing of the discarded backlog was delivered"
    );
    wait::until("the queue is empty", DEADLINE, || async {
        match env.queue_depth(&queue).await {
            Some(0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    env.cleanup().await;
}
