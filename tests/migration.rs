//! Moving an installation from classic to quorum queues with events in
//! flight: the services restart with `POSTLINE_QUEUE_TYPE=quorum` on the same
//! namespace while a strict subscription has a backlog and another is
//! blocked on the ladder; every event arrives once, in order, and the
//! classic queues are drained and deleted.

use postline_shared::amqp::topology::{QueueType, Topology};
use postline_tests::events::{assert_sequence, collapse_adjacent, ids_of, numbered};
use postline_tests::receiver::ids;
use postline_tests::sub_id;
use postline_tests::{wait, Receiver, TestEnv, DEADLINE, QUIET};
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_from_classic_to_quorum_queues_with_events_in_flight_loses_and_reorders_nothing() {
    let mut env = TestEnv::start().await;
    let quorum = Topology::new(&env.namespace, QueueType::Quorum);
    for queue in [quorum.ingest_queue(), quorum.rejected_queue()] {
        env.track_queue(&queue);
    }
    let fleet = Receiver::start().await;
    fleet.set_delay(Duration::from_millis(3));
    let stuck = Receiver::start().await;
    let retry = json!({"immediate_retries": 0, "steps_ms": [200], "repeat_every_ms": 200});
    for (id, receiver, types) in [
        ("fleet", &fleet, "vehicle.*"),
        ("stuck", &stuck, "parcel.*"),
    ] {
        env.subscribe(json!({
            "id": id, "endpoint": receiver.url(), "event_types": [types], "retry": retry,
        }))
        .await;
        env.track_queue(&quorum.subscription_queue(&sub_id(id)));
    }
    env.track_queue(&quorum.delay_queue(200));
    // `stuck` is blocked on its first event, its backlog waiting behind it.
    stuck.refuse_event("p-00000", 503);
    let vehicles = numbered("v", "vehicle.moved", 600);
    let parcels = numbered("p", "parcel.sent", 20);
    let (before, after) = vehicles.split_at(400);
    let mut first: Vec<Value> = before.to_vec();
    first.extend(parcels.iter().cloned());
    env.publish_events_amqp(&first).await;
    fleet.wait_for_successes(50, DEADLINE).await;
    env.wait_delivery_state("stuck", "stuck blocked", |s| !s["blocked"].is_null())
        .await;

    // The move: delivery stops mid-stream, ingest restarts on quorum queues
    // (unbinding the classic ones), then delivery on quorum queues too.
    env.stop_delivery().await;
    assert!(
        fleet.successes().len() < before.len(),
        "every event arrived before the move; the test needs more"
    );
    for common in [
        &mut env.ingest_config.common,
        &mut env.delivery_config.common,
    ] {
        common.queue_type = QueueType::Quorum;
        common.migrate_from_classic = true;
    }
    env.restart_ingest().await;
    // Published after the move: through the quorum intake queue.
    env.publish_events_amqp(after).await;
    env.start_delivery().await;
    stuck.accept_event("p-00000");

    for (receiver, events, what) in [(&fleet, &vehicles, "fleet"), (&stuck, &parcels, "stuck")] {
        receiver
            .wait_until(what, DEADLINE * 2, |got| {
                let ok: Vec<_> = got.iter().filter(|r| r.succeeded()).cloned().collect();
                collapse_adjacent(&ids(&ok)).len() >= events.len()
            })
            .await;
        receiver.assert_no_more(QUIET).await;
        let got = collapse_adjacent(&ids(&receiver.successes()));
        assert_sequence(what, &got, &ids_of(events));
    }
    // The classic queues were drained and deleted.
    let classic = Topology::new(&env.namespace, QueueType::Classic);
    for queue in [
        classic.subscription_queue(&sub_id("fleet")),
        classic.subscription_queue(&sub_id("stuck")),
        classic.ingest_queue(),
    ] {
        wait::until(&format!("{queue} deleted"), DEADLINE, || async {
            if env.queue_exists(&queue).await {
                Err("still there".to_string())
            } else {
                Ok(())
            }
        })
        .await;
    }
    env.cleanup().await;
}
