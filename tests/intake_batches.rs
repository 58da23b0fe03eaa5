//! The pipelined AMQP intake: a burst taken as batches keeps the order of the
//! intake queue, publishes a repeated id once whether the repeat is in the
//! same batch, in a batch still in flight, or long after, and dead-letters bad
//! messages in their place without holding back the good ones around them.

use postline_tests::events::{assert_sequence, event};
use postline_tests::receiver::ids;
use postline_tests::sub_id;
use postline_tests::{Receiver, TestEnv, DEADLINE, QUIET};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_with_repeated_ids_is_delivered_once_each_in_order() {
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    env.subscribe(json!({"id": "burst", "endpoint": receiver.url(), "event_types": ["burst.*"]}))
        .await;
    let mut events = Vec::new();
    let mut want = Vec::new();
    for i in 0..300 {
        let id = format!("b-{i:04}");
        events.push(event(&id, "burst.new", json!({"seq": i, "copy": "first"})));
        want.push(id);
        if i % 7 == 3 {
            // A repeat right behind it (same batch) and one further on
            // (likely a later batch while the first is still in flight).
            let repeat = format!("b-{:04}", i - 1);
            events.push(event(
                &repeat,
                "burst.new",
                json!({"seq": i - 1, "copy": "repeat"}),
            ));
        }
        if i % 50 == 49 {
            events.push(event(
                "b-0000",
                "burst.new",
                json!({"seq": 0, "copy": "repeat"}),
            ));
        }
    }
    // A message that is not an event, in the middle: dead-lettered, not blocking.
    events.insert(150, json!({"not": "an event"}));
    env.publish_events_amqp(&events).await;

    receiver.wait_for(want.len(), DEADLINE).await;
    let all = receiver.assert_no_more(QUIET).await;
    assert_sequence("delivered ids", &ids(&all), &want);
    for request in &all {
        assert_eq!(
            request.json()["payload"]["copy"],
            "first",
            "the first copy wins"
        );
    }
    let rejected = env.wait_rejected(1).await;
    assert_eq!(rejected.len(), 1, "exactly the one bad message is rejected");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_queue_deleted_by_hand_is_healed_without_loss_or_reordering() {
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    env.subscribe(json!({"id": "healed", "endpoint": receiver.url(), "event_types": ["heal.*"]}))
        .await;
    let first: Vec<_> = (0..5)
        .map(|i| event(&format!("h-{i:03}"), "heal.it", json!({"seq": i})))
        .collect();
    env.publish_events_amqp(&first).await;
    receiver.wait_for(5, DEADLINE).await;

    // Gone behind Postline's back: the next copies come back unroutable.
    env.amqp()
        .delete_queue(&env.topology.subscription_queue(&sub_id("healed")))
        .await
        .expect("deleting the queue");
    let rest: Vec<_> = (5..200)
        .map(|i| event(&format!("h-{i:03}"), "heal.it", json!({"seq": i})))
        .collect();
    env.publish_events_amqp(&rest).await;

    let want: Vec<String> = (0..200).map(|i| format!("h-{i:03}")).collect();
    receiver.wait_for_distinct(want.len(), DEADLINE).await;
    let all = receiver.assert_no_more(QUIET).await;
    assert_sequence("delivered ids", &ids(&all), &want);
    env.cleanup().await;
}
