//! Staying up when things around Postline fail: the broker connection drops
//! under ingest or delivery (the supervisors reconnect, redeclare and resume,
//! losing nothing), delivery starts before the exchanges exist, and an
//! unordered subscription keeps flowing past an event its receiver refuses.

use postline_tests::events::{assert_sequence, collapse_adjacent, ids_of, numbered};
use postline_tests::proxy::TcpProxy;
use postline_tests::receiver::ids;
use postline_tests::{wait, Receiver, TestEnv, DEADLINE, QUIET};
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Where the test's broker listens, read from its URL.
fn broker_addr(builder: &postline_tests::TestEnvBuilder) -> SocketAddr {
    let url = url::Url::parse(&builder.broker_url).expect("broker URL");
    let host = url.host_str().unwrap_or("127.0.0.1");
    let port = url.port().unwrap_or(5672);
    std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .ok()
        .and_then(|mut addrs| addrs.next())
        .expect("resolving the broker address")
}

async fn subscribe(env: &TestEnv, receiver: &Receiver, order: &str) {
    env.subscribe(json!({
        "id": "fleet",
        "endpoint": receiver.url(),
        "event_types": ["vehicle.*"],
        "order": order,
    }))
    .await;
}

/// Every event arrived as a success, in order; a re-delivery of the event
/// in flight when the connection dropped may repeat right after itself.
fn assert_all_in_order(receiver: &Receiver, want: &[String]) {
    let got = collapse_adjacent(&ids(&receiver.successes()));
    assert_sequence("delivered after reconnecting", &got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_reconnects_after_losing_the_broker() {
    let mut builder = TestEnv::builder();
    let proxy = TcpProxy::start(broker_addr(&builder)).await;
    builder.delivery.common.amqp_url = proxy.amqp_url();
    let env = builder.start().await;
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(5));
    subscribe(&env, &receiver, "strict").await;
    let events = numbered("r", "vehicle.moved", 300);
    env.publish_events_amqp(&events).await;
    receiver.wait_for_successes(60, DEADLINE).await;

    proxy.sever();
    let at_cut = receiver.successes().len();
    assert!(
        at_cut < events.len(),
        "all events arrived before the cut; the test needs more"
    );

    receiver
        .wait_until("every event after the reconnect", DEADLINE, |got| {
            collapse_adjacent(&ids(&got
                .iter()
                .filter(|r| r.succeeded())
                .cloned()
                .collect::<Vec<_>>()))
            .len()
                >= events.len()
        })
        .await;
    receiver.assert_no_more(QUIET).await;
    assert_all_in_order(&receiver, &ids_of(&events));
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_reconnects_after_losing_the_broker() {
    let mut builder = TestEnv::builder();
    let proxy = TcpProxy::start(broker_addr(&builder)).await;
    builder.ingest.common.amqp_url = proxy.amqp_url();
    let env = builder.start().await;
    let receiver = Receiver::start().await;
    subscribe(&env, &receiver, "strict").await;
    let first = numbered("a", "vehicle.moved", 50);
    env.publish_events_amqp(&first).await;
    receiver.wait_for_successes(first.len(), DEADLINE).await;

    proxy.sever();
    // Published while ingest is reconnecting: they wait in the intake queue.
    let second = numbered("b", "vehicle.moved", 50);
    env.publish_events_amqp(&second).await;
    // HTTP intake answers 503 while disconnected and 202 once reconnected.
    let third_id = wait::until("HTTP intake to accept again", DEADLINE, || async {
        let (status, body) = env
            .post_event(json!({"id": "c-00000", "type": "vehicle.moved", "payload": {}}))
            .await;
        match (status.as_u16(), body["ids"][0].as_str()) {
            (202, Some(id)) => Ok(id.to_string()),
            _ => Err(format!("{status} {body}")),
        }
    })
    .await;

    let mut want = ids_of(&first);
    want.extend(ids_of(&second));
    receiver.wait_for_successes(want.len() + 1, DEADLINE).await;
    receiver.assert_no_more(QUIET).await;
    // The two intakes are independent: the HTTP event may land anywhere among
    // the AMQP ones, which must keep their own order.
    let got = collapse_adjacent(&ids(&receiver.successes()));
    let (http, amqp): (Vec<String>, Vec<String>) = got.into_iter().partition(|id| *id == third_id);
    assert_eq!(http.len(), 1, "the HTTP event must arrive once");
    assert_sequence("AMQP events after ingest reconnected", &amqp, &want);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_starting_before_the_deliver_exchange_exists_declares_it_and_delivers() {
    let mut env = TestEnv::builder().without_delivery().start().await;
    let receiver = Receiver::start().await;
    subscribe(&env, &receiver, "strict").await;
    // As in a fresh namespace whose delivery pods start before ingest's: the
    // exchange the subscription queues are bound to does not exist.
    env.amqp()
        .delete_exchange(&env.topology.deliver_exchange())
        .await
        .expect("deleting the deliver exchange");
    env.start_delivery().await;
    // The consumer comes once its queue is bound again; only then can
    // ingest's copies be routed to it.
    let queue = env
        .topology
        .subscription_queue(&postline_tests::sub_id("fleet"));
    wait::until("the subscription's consumer", DEADLINE, || async {
        match env.amqp().consumer_count(&queue).await {
            Ok(Some(n)) if n > 0 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let events = numbered("x", "vehicle.moved", 20);
    env.publish_events_amqp(&events).await;
    receiver.wait_for_successes(events.len(), DEADLINE).await;
    receiver.assert_no_more(QUIET).await;
    assert_all_in_order(&receiver, &ids_of(&events));
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unordered_delivery_flows_past_a_refused_event() {
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    subscribe(&env, &receiver, "none").await;
    let events = numbered("n", "vehicle.moved", 40);
    let stuck = ids_of(&events)[0].clone();
    receiver.refuse_event(&stuck, 503);
    env.publish_events_amqp(&events).await;

    // Every other event arrives while the first one keeps failing.
    let others = receiver
        .wait_until("the events after the refused one", DEADLINE, |got| {
            got.iter().filter(|r| r.succeeded()).count() >= events.len() - 1
        })
        .await;
    assert!(
        others
            .iter()
            .any(|r| r.event_id().as_deref() == Some(stuck.as_str()) && !r.succeeded()),
        "the refused event was never tried"
    );

    receiver.accept_event(&stuck);
    receiver.wait_for_successes(events.len(), DEADLINE).await;
    receiver.assert_no_more(QUIET).await;
    let mut successes: HashMap<String, usize> = HashMap::new();
    for id in ids(&receiver.successes()) {
        *successes.entry(id).or_default() += 1;
    }
    for id in ids_of(&events) {
        assert_eq!(
            successes.get(&id),
            Some(&1),
            "{id} must succeed exactly once"
        );
    }
    env.cleanup().await;
}
