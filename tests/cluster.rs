//! Postline on the three-node RabbitMQ cluster that `scripts/cluster` runs on
//! this machine (nodes on 127.0.0.1:5681-5683), every queue a quorum queue:
//! 2,000 events to strict subscriptions lose nothing and keep their order
//! when the node holding a subscription queue's leader is killed with
//! `kill -9` (and restarted), or when a delivery replica is killed; and a
//! bare quorum queue keeps its messages, in order, when its leader dies.
//!
//! scripts/test starts the cluster before the tests and stops it after. Run
//! alone (`cargo test -p postline-tests --test cluster`), these tests skip
//! with a printed note unless `scripts/cluster start` has been run.
//! Tests that kill a node take turns, and put the node back before the next.

use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Connection, ConnectionProperties};
use postline_shared::amqp::topology::QueueType;
use postline_tests::amqp::AmqpClient;
use postline_tests::events::{assert_sequence, collapse_adjacent, ids_of, numbered};
use postline_tests::receiver::ids;
use postline_tests::sub_id;
use postline_tests::{namespace, Receiver, TestEnv, DEADLINE, QUIET};
use serde_json::json;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

/// The AMQP ports of nodes 1, 2 and 3 (scripts/cluster: 5680 + n).
const PORTS: [u16; 3] = [5681, 5682, 5683];

/// Cluster tests take turns: two node losses at once would kill the cluster's
/// majority, and a test publishing through a node must not see it killed.
static NODE_LOSS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn node_url(node: usize) -> String {
    format!("amqp://guest:guest@127.0.0.1:{}/%2f", PORTS[node - 1])
}

fn all_nodes() -> String {
    (1..=3).map(node_url).collect::<Vec<_>>().join(",")
}

fn node_listens(node: usize) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], PORTS[node - 1]));
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

/// Whether the three nodes answer; if not, says why the test is skipped.
fn cluster_is_running(test: &str) -> bool {
    let down: Vec<usize> = (1..=3).filter(|&node| !node_listens(node)).collect();
    if down.is_empty() {
        return true;
    }
    println!(
        "SKIPPED {test}: the three-node cluster is not running (node(s) {down:?} do not \
         listen on 127.0.0.1:5681-5683); run `scripts/cluster start`, or scripts/test, which starts it"
    );
    false
}

/// Runs `scripts/cluster ARGS` and returns its output; a failure fails the test.
fn cluster(args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/cluster");
    let output = Command::new("bash")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("running scripts/cluster {args:?}: {error}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "scripts/cluster {args:?} failed: {text}"
    );
    text
}

/// Kills node `n`, and restarts it when dropped (also when the test fails),
/// so the next test finds three nodes.
struct KilledNode(usize);

impl KilledNode {
    fn kill(node: usize) -> Self {
        cluster(&["kill", &node.to_string()]);
        Self(node)
    }
}

impl Drop for KilledNode {
    fn drop(&mut self) {
        // Blocking is fine here: the test is over, and its runtime is idle.
        let output = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/cluster"))
            .args(["restart", &self.0.to_string()])
            .output();
        match output {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "scripts/cluster restart {} failed: {}{}",
                self.0,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(error) => eprintln!("scripts/cluster restart {}: {error}", self.0),
        }
    }
}

async fn connect(node: usize) -> Connection {
    Connection::connect(&node_url(node), ConnectionProperties::default())
        .await
        .unwrap_or_else(|error| panic!("connecting to node {node}: {error}"))
}

/// Events per subscription in the node-loss tests (two subscriptions: 2,000 events).
const PER_SUBSCRIPTION: usize = 1_000;

/// Ingest and delivery on the cluster with every queue a quorum queue, two
/// strict subscriptions (`fleet`, `parcels`) and their receivers, and 2,000
/// events published to the intake.
async fn quorum_pipeline_with_2000_events(
    with_replica: bool,
) -> (TestEnv, [Receiver; 2], [Vec<String>; 2]) {
    let mut env = TestEnv::builder()
        .brokers(&all_nodes())
        .queue_type(QueueType::Quorum)
        .start()
        .await;
    if with_replica {
        env.start_replica().await;
    }
    let receivers = [Receiver::start().await, Receiver::start().await];
    for (receiver, (id, types)) in receivers
        .iter()
        .zip([("fleet", "vehicle.*"), ("parcels", "parcel.*")])
    {
        // Slow enough that the loss comes mid-stream on a fast machine too.
        receiver.set_delay(Duration::from_millis(2));
        env.subscribe(json!({
            "id": id,
            "endpoint": receiver.url(),
            "event_types": [types],
            "order": "strict",
        }))
        .await;
    }
    let vehicles = numbered("v", "vehicle.moved", PER_SUBSCRIPTION);
    let parcels = numbered("p", "parcel.sent", PER_SUBSCRIPTION);
    let mut all = Vec::with_capacity(2 * PER_SUBSCRIPTION);
    for (v, p) in vehicles.iter().zip(&parcels) {
        all.push(v.clone());
        all.push(p.clone());
    }
    env.publish_events_amqp(&all).await;
    (env, receivers, [ids_of(&vehicles), ids_of(&parcels)])
}

/// Waits until each receiver has every event of its subscription, then
/// checks: nothing lost, nothing reordered, a repeat only right after itself
/// (the event in flight when something died); returns the time it took.
async fn assert_all_delivered_in_order(
    receivers: &[Receiver; 2],
    want: &[Vec<String>; 2],
    what: &str,
) {
    for (receiver, want) in receivers.iter().zip(want) {
        receiver
            .wait_until(what, DEADLINE * 4, |got| {
                let succeeded: Vec<_> = got.iter().filter(|r| r.succeeded()).cloned().collect();
                collapse_adjacent(&ids(&succeeded)).len() >= want.len()
            })
            .await;
        receiver.assert_no_more(QUIET).await;
        let got = collapse_adjacent(&ids(&receiver.successes()));
        assert_sequence(what, &got, want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_node_of_quorum_subscription_queues_loses_and_reorders_nothing() {
    let test = "killing_the_leader_node_of_quorum_subscription_queues_loses_and_reorders_nothing";
    if !cluster_is_running(test) {
        return;
    }
    let _turn = NODE_LOSS.lock().await;
    let (env, receivers, want) = quorum_pipeline_with_2000_events(false).await;
    let queue = env.topology.subscription_queue(&sub_id("fleet"));
    let leader: usize = cluster(&["leader", &queue])
        .trim()
        .parse()
        .expect("scripts/cluster leader prints a node number");
    receivers[0].wait_for_successes(100, DEADLINE).await;
    let killed = KilledNode::kill(leader);
    let killed_at = std::time::Instant::now();
    let delivered_at_kill = receivers[0].successes().len();
    assert!(
        delivered_at_kill < PER_SUBSCRIPTION,
        "every event arrived before node {leader} died; the test needs more"
    );
    // Delivery resumes on the remaining majority (a new leader, and the
    // services on another node if they were on the dead one).
    receivers[0]
        .wait_until("deliveries to resume after the kill", DEADLINE * 2, |got| {
            got.iter().filter(|r| r.succeeded()).count() > delivered_at_kill + 10
        })
        .await;
    let resumed = killed_at.elapsed();
    // The node comes back while the stream goes on.
    drop(killed);
    let restarted = killed_at.elapsed();
    assert_all_delivered_in_order(&receivers, &want, "strict events across the leader's death")
        .await;
    println!(
        "leader node {leader} of {queue} killed after {delivered_at_kill} deliveries: deliveries resumed after {resumed:?}; node back after {restarted:?}; all 2,000 events delivered {:?} after the kill",
        killed_at.elapsed()
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_delivery_replica_on_the_quorum_cluster_loses_and_reorders_nothing() {
    let test = "killing_a_delivery_replica_on_the_quorum_cluster_loses_and_reorders_nothing";
    if !cluster_is_running(test) {
        return;
    }
    // Not while another test kills a node: this one needs every node up.
    let _turn = NODE_LOSS.lock().await;
    let (mut env, receivers, want) = quorum_pipeline_with_2000_events(true).await;
    receivers[0].wait_for_successes(100, DEADLINE).await;
    // The first replica is killed mid-stream, unacked messages and all; the
    // other takes over each queue as its single active consumer.
    env.abort_delivery();
    let killed_at = std::time::Instant::now();
    assert!(
        receivers[0].successes().len() < PER_SUBSCRIPTION,
        "every event arrived before the replica died; the test needs more"
    );
    assert_all_delivered_in_order(&receivers, &want, "strict events across a replica's death")
        .await;
    println!(
        "delivery replica killed: all 2,000 events delivered {:?} after the kill",
        killed_at.elapsed()
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_queue_keeps_its_messages_in_order_when_its_leader_node_dies() {
    if !cluster_is_running("a_quorum_queue_keeps_its_messages_in_order_when_its_leader_node_dies") {
        return;
    }
    let _turn = NODE_LOSS.lock().await;
    let queue = format!("{}.quorum", namespace::unique());
    // Declared from node 1, so its leader is there (client-local placement),
    // with the arguments a quorum subscription queue can have on 3.10:
    // single active consumer and a finite delivery limit (no priorities).
    let on_node_1 = connect(1).await;
    let channel = on_node_1
        .create_channel()
        .await
        .expect("a channel on node 1");
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    args.insert("x-delivery-limit".into(), AMQPValue::LongInt(1_000));
    channel
        .queue_declare(queue.as_str().into(), QueueDeclareOptions::durable(), args)
        .await
        .expect("declaring a quorum queue with single active consumer");
    let _ = on_node_1.close(200, "declared".into()).await;

    let on_node_2 = AmqpClient::connect(&node_url(2))
        .await
        .expect("connecting to node 2");
    let sent: Vec<(String, Vec<u8>)> = (0..100)
        .map(|i| (queue.clone(), format!("m-{i:03}").into_bytes()))
        .collect();
    on_node_2
        .publish_many("", sent.clone())
        .await
        .expect("publishing to the quorum queue");

    let killed = KilledNode::kill(1);
    let killed_at = std::time::Instant::now();
    // Two of three nodes remain, a majority: a new leader is elected and the
    // queue serves its messages, in order, through node 3.
    let mut got: Vec<Vec<u8>> = Vec::new();
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut errors: Vec<String> = Vec::new();
    while got.len() < 100 {
        // A quorum queue with single active consumer refuses basic.get, so
        // this consumes. While the new leader is being elected the broker
        // may refuse with a connection error: each round connects afresh.
        if let Err(error) = consume_some(&queue, &mut got).await {
            if !errors.contains(&error) {
                errors.push(error);
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of 100 messages after {DEADLINE:?}; errors: {errors:?}",
            got.len()
        );
    }
    println!(
        "quorum queue: all 100 messages consumed {:?} after its leader was killed; \
         errors while the leader moved: {errors:?}",
        killed_at.elapsed()
    );
    // A message whose ack was lost with a connection comes again, right after itself.
    got.dedup();
    let want: Vec<Vec<u8>> = sent.into_iter().map(|(_, body)| body).collect();
    assert_eq!(got, want, "the quorum queue lost or reordered messages");
    on_node_2
        .delete_queue(&queue)
        .await
        .expect("deleting the test queue");
    on_node_2.close().await;
    drop(killed);
}

/// Consumes from `queue` through node 3, acking each message, until 100 are
/// in `got` or nothing comes for a second.
async fn consume_some(queue: &str, got: &mut Vec<Vec<u8>>) -> Result<(), String> {
    use futures::StreamExt;
    use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
    let connection = Connection::connect(&node_url(3), ConnectionProperties::default())
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| format!("channel: {e}"))?;
    channel
        .basic_qos(10, BasicQosOptions::default())
        .await
        .map_err(|e| format!("qos: {e}"))?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "cluster-test".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("consume: {e}"))?;
    let result = loop {
        if got.len() >= 100 {
            break Ok(());
        }
        match tokio::time::timeout(Duration::from_secs(1), consumer.next()).await {
            Err(_) => break Ok(()),
            Ok(None) => break Err("consumer ended".to_string()),
            Ok(Some(Err(e))) => break Err(format!("delivery: {e}")),
            Ok(Some(Ok(delivery))) => {
                if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
                    break Err(format!("ack: {e}"));
                }
                got.push(delivery.data);
            }
        }
    };
    let _ = connection.close(200, "consumed".into()).await;
    result
}
