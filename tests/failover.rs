//! Delivery under failure: a crash mid-stream, a clean stop and restart, and
//! receivers that fail, lose nothing and keep a strict subscription's order.

use postline_tests::events::{assert_sequence, collapse_adjacent, ids_of, numbered};
use postline_tests::receiver::{describe, ids};
use postline_tests::{Receiver, TestEnv, DEADLINE, QUIET};
use serde_json::{json, Value};
use std::time::Duration;

/// Long enough for any POST in flight at a stop to have landed.
const GRACE: Duration = Duration::from_millis(300);

async fn strict_subscription(env: &TestEnv, receiver: &Receiver) {
    env.subscribe(json!({
        "id": "fleet",
        "endpoint": receiver.url(),
        "event_types": ["vehicle.*"],
        "order": "strict",
    }))
    .await;
}

/// Publishes the first batch, waits until delivery is part-way through it,
/// and returns the events.
async fn stream_until_part_way(env: &TestEnv, receiver: &Receiver, count: usize) -> Vec<Value> {
    // A slow receiver keeps the stream going long enough to interrupt it.
    receiver.set_delay(Duration::from_millis(10));
    let events = numbered("v", "vehicle.moved", count);
    env.publish_events_amqp(&events).await;
    receiver.wait_for(count / 5, DEADLINE).await;
    events
}

/// Asserts that nothing is delivered while no delivery service runs.
async fn assert_stopped(receiver: &Receiver, total: usize) {
    tokio::time::sleep(GRACE).await;
    let at_stop = receiver.count();
    assert!(
        at_stop < total,
        "the stream finished before delivery was stopped ({at_stop} of {total}); \
         the test needs a slower receiver or more events"
    );
    receiver.assert_no_more(Duration::from_millis(700)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_stream_loses_nothing_and_keeps_order() {
    const FIRST: usize = 300;
    const SECOND: usize = 100;
    let mut env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    strict_subscription(&env, &receiver).await;
    let mut events = stream_until_part_way(&env, &receiver, FIRST).await;

    env.abort_delivery();
    assert_stopped(&receiver, FIRST).await;
    let before_restart = receiver.count();

    // Events keep coming in while delivery is down.
    let more: Vec<Value> = numbered("w", "vehicle.stopped", SECOND);
    env.publish_events_amqp(&more).await;
    events.extend(more);
    receiver.set_delay(Duration::ZERO);
    env.start_delivery().await;

    receiver
        .wait_for_distinct(FIRST + SECOND, Duration::from_secs(60))
        .await;
    let all = receiver.assert_no_more(QUIET).await;
    let got = ids(&all);
    // Only the event in flight at the crash may come twice, right after itself.
    assert_sequence(
        "delivered ids with adjacent repeats collapsed",
        &collapse_adjacent(&got),
        &ids_of(&events),
    );
    let repeats = got.len() - FIRST - SECOND;
    assert!(
        repeats <= 1,
        "at most the event in flight at the crash is sent again; {repeats} repeats around #{before_restart}:\n{}",
        describe(&all[before_restart.saturating_sub(3)..(before_restart + 3).min(all.len())])
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_and_restart_loses_nothing_and_sends_nothing_twice() {
    const FIRST: usize = 300;
    const SECOND: usize = 100;
    let mut env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    strict_subscription(&env, &receiver).await;
    let mut events = stream_until_part_way(&env, &receiver, FIRST).await;

    env.stop_delivery().await;
    assert_stopped(&receiver, FIRST).await;

    let more: Vec<Value> = numbered("w", "vehicle.stopped", SECOND);
    env.publish_events_amqp(&more).await;
    events.extend(more);
    receiver.set_delay(Duration::ZERO);
    env.start_delivery().await;

    receiver
        .wait_for(FIRST + SECOND, Duration::from_secs(60))
        .await;
    let all = receiver.assert_no_more(QUIET).await;
    assert_sequence("delivered ids", &ids(&all), &ids_of(&events));
    assert!(all.iter().all(|r| r.succeeded()));
    env.cleanup().await;
}

/// Publishes `count` events to a strict subscription whose receiver fails
/// its first `failures` requests with `status`; checks every event arrives
/// exactly once as a success, in order, and that nothing overtook the first.
async fn failing_receiver_case(failures: usize, status: u16, success_rule: &str) {
    const COUNT: usize = 20;
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    receiver.fail_next(failures, status);
    env.subscribe(json!({
        "id": "flaky",
        "endpoint": receiver.url(),
        "event_types": ["vehicle.*"],
        "success": success_rule,
    }))
    .await;
    let events = numbered("f", "vehicle.moved", COUNT);
    env.publish_events_amqp(&events).await;

    receiver
        .wait_for(failures + COUNT, Duration::from_secs(60))
        .await;
    let all = receiver.assert_no_more(QUIET).await;
    let counts = |status: u16| match success_rule {
        "200" => status == 200,
        _ => (200..300).contains(&status),
    };
    let successes: Vec<_> = all.iter().filter(|r| counts(r.status)).cloned().collect();
    assert_sequence("successful deliveries", &ids(&successes), &ids_of(&events));
    let failed_ids = ids(&all[..failures]);
    assert!(
        failed_ids.iter().all(|id| id == "f-00000"),
        "while the first event fails nothing else is tried: {}",
        describe(&all)
    );
    assert_eq!(
        all.len(),
        failures + COUNT,
        "one request per failure plus one per event: {}",
        describe(&all)
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_a_few_times_gets_every_event_once_in_order() {
    // Fewer failures than in-place retries: retried on the spot.
    failing_receiver_case(2, 503, "2xx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_beyond_the_inplace_retries_gets_every_event_once_in_order() {
    // More failures than 1 + 3 in-place attempts: the event is handed back
    // to the head of its queue and tried again later, still first.
    failing_receiver_case(9, 500, "2xx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_200_counts_when_the_subscription_says_so() {
    // 204 is a failure under the `200` rule.
    failing_receiver_case(5, 204, "200").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_holds_events_until_it_is_fixed() {
    const COUNT: usize = 10;
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    // A port nobody listens on: connection refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_endpoint = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    // It could not pass a PING, so the operator skips the check.
    env.subscribe(json!({"id": "down", "endpoint": dead_endpoint, "event_types": ["vehicle.*"], "verify": false}))
        .await;
    let events = numbered("u", "vehicle.moved", COUNT);
    env.publish_events_amqp(&events).await;
    // Let delivery fail a few rounds against the closed port.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.count(), 0);

    let (status, body) = env
        .patch_subscription("down", json!({"endpoint": receiver.url()}))
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    receiver.wait_for(COUNT, Duration::from_secs(60)).await;
    let all = receiver.assert_no_more(QUIET).await;
    assert_sequence("delivered ids", &ids(&all), &ids_of(&events));
    env.cleanup().await;
}
