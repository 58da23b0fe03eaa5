//! Several broker nodes in `POSTLINE_AMQP_URL`: a service connects to the
//! first node that answers, skipping one that refuses, and events flow as
//! with a single URL. (Losing a node of a real cluster: tests/cluster.rs.)

use postline_shared::amqp::broker_nodes::BrokerNodes;
use postline_tests::events::{assert_sequence, collapse_adjacent, ids_of, numbered};
use postline_tests::receiver::ids;
use postline_tests::{Receiver, TestEnv, DEADLINE, QUIET};
use serde_json::json;

/// A port on 127.0.0.1 where nothing listens: bound by the OS, then released.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().expect("its address").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_skip_a_node_that_refuses_and_deliver_through_the_next() {
    let mut builder = TestEnv::builder();
    let urls = format!(
        "amqp://guest:guest@127.0.0.1:{}/%2f,{}",
        closed_port(),
        builder.broker_url
    );
    let nodes: BrokerNodes = urls.parse().expect("the list of nodes");
    builder.ingest.common.amqp_url = nodes.clone();
    builder.delivery.common.amqp_url = nodes;
    let env = builder.start().await;
    let receiver = Receiver::start().await;
    env.subscribe(json!({
        "id": "fleet",
        "endpoint": receiver.url(),
        "event_types": ["vehicle.*"],
        "order": "strict",
    }))
    .await;

    // Through ingest's AMQP intake and on to the receiver.
    let events = numbered("n", "vehicle.moved", 20);
    env.publish_events_amqp(&events).await;
    receiver.wait_for_successes(events.len(), DEADLINE).await;
    receiver.assert_no_more(QUIET).await;
    let got = collapse_adjacent(&ids(&receiver.successes()));
    assert_sequence("delivered through the second node", &got, &ids_of(&events));
    env.cleanup().await;
}
