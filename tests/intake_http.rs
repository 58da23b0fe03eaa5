//! The HTTP intake runs on the same batched pipeline as the AMQP intake: a
//! posted batch heals a deleted subscription queue the same way (declared
//! again, the batch published again), a batch mixing repeats and new events
//! is answered per event and delivers each once, and a batch the broker
//! refuses part of is answered 503 and not remembered as accepted.

use postline_tests::events::{assert_sequence, event};
use postline_tests::receiver::ids;
use postline_tests::sub_id;
use postline_tests::{Receiver, TestEnv, DEADLINE, QUIET};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn batch(prefix: &str, event_type: &str, range: std::ops::Range<usize>) -> Vec<Value> {
    range
        .map(|i| event(&format!("{prefix}-{i:03}"), event_type, json!({"seq": i})))
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_posted_batch_heals_a_deleted_subscription_queue_without_loss_or_reordering() {
    let env = TestEnv::start().await;
    let healed = Receiver::start().await;
    let healthy = Receiver::start().await;
    for (id, receiver) in [("healed", &healed), ("healthy", &healthy)] {
        env.subscribe(json!({"id": id, "endpoint": receiver.url(), "event_types": ["heal.*"], "order": "strict"}))
            .await;
    }
    let (status, body) = env.post_batch(json!(batch("h", "heal.it", 0..3))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    healed.wait_for(3, DEADLINE).await;

    // Gone behind Postline's back: the next batch's copies come back unroutable.
    env.amqp()
        .delete_queue(&env.topology.subscription_queue(&sub_id("healed")))
        .await
        .expect("deleting the queue");
    let (status, body) = env.post_batch(json!(batch("h", "heal.it", 3..60))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(strings(&body["duplicates"]), Vec::<String>::new());
    assert!(
        env.queue_exists(&env.topology.subscription_queue(&sub_id("healed")))
            .await,
        "the queue is declared again"
    );

    let want: Vec<String> = (0..60).map(|i| format!("h-{i:03}")).collect();
    for receiver in [&healed, &healthy] {
        receiver.wait_for_distinct(want.len(), DEADLINE).await;
        let all = receiver.assert_no_more(QUIET).await;
        assert_sequence("delivered ids", &ids(&all), &want);
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_mixing_repeats_and_new_events_is_answered_per_event_and_delivered_once() {
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    env.subscribe(json!({"id": "mixed", "endpoint": receiver.url(), "event_types": ["mix.*"], "order": "strict"}))
        .await;
    env.send_event(event("m-a", "mix.it", json!({"copy": "first"})))
        .await;
    env.send_event(event("m-b", "mix.it", json!({"copy": "first"})))
        .await;
    receiver.wait_for(2, DEADLINE).await;

    let posted = json!([
        event("m-a", "mix.it", json!({"copy": "repeat"})),
        event("m-c", "mix.it", json!({"copy": "first"})),
        event("m-b", "mix.it", json!({"copy": "repeat"})),
        event("m-d", "mix.it", json!({"copy": "first"})),
        event("m-c", "mix.it", json!({"copy": "repeat"})),
    ]);
    let (status, body) = env.post_batch(posted).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(strings(&body["ids"]), ["m-a", "m-c", "m-b", "m-d", "m-c"]);
    assert_eq!(strings(&body["duplicates"]), ["m-a", "m-b", "m-c"]);

    receiver.wait_for(4, DEADLINE).await;
    let all = receiver.assert_no_more(QUIET).await;
    assert_sequence(
        "delivered ids",
        &ids(&all),
        &["m-a", "m-b", "m-c", "m-d"].map(String::from),
    );
    for request in &all {
        assert_eq!(
            request.json()["payload"]["copy"],
            "first",
            "the first copy wins"
        );
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_broker_refuses_part_of_is_not_accepted() {
    let env = TestEnv::builder().without_delivery().start().await;
    let receiver = Receiver::start().await;
    env.subscribe(json!({"id": "full", "endpoint": receiver.url(), "event_types": ["full.*"]}))
        .await;
    // The subscription's queue replaced by one that takes two copies and
    // refuses the rest: the third copy of the batch is nacked.
    let queue = env.topology.subscription_queue(&sub_id("full"));
    env.amqp()
        .delete_queue(&queue)
        .await
        .expect("deleting the queue");
    env.amqp()
        .declare_refusing_queue(&queue, &env.topology.deliver_exchange(), "full", 2)
        .await
        .expect("declaring the refusing queue");
    let events = json!(batch("f", "full.it", 0..5));
    let (status, body) = env.post_batch(events.clone()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");

    // Nothing of it was remembered: once the queue is gone (and healed by
    // the next post), the same batch is accepted as new, every event of it.
    env.amqp()
        .delete_queue(&queue)
        .await
        .expect("deleting the queue");
    let (status, body) = env.post_batch(events).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(strings(&body["duplicates"]), Vec::<String>::new());
    let queued: Vec<String> = env
        .drain_subscription_queue("full")
        .await
        .iter()
        .map(|m| m.json()["id"].as_str().unwrap_or_default().to_string())
        .collect();
    let want: Vec<String> = (0..5).map(|i| format!("f-{i:03}")).collect();
    assert_eq!(queued, want);
    env.cleanup().await;
}
