//! Postline on the three-node RabbitMQ cluster that `scripts/cluster` runs on
//! this machine (nodes on 127.0.0.1:5681-5683): the services, given every
//! node in `POSTLINE_AMQP_URL`, keep delivering when the node they are
//! connected to is killed with `kill -9`; and a quorum queue of the kind the
//! subscription queues will become keeps its messages, in order, when a node dies.
//!
//! scripts/test starts the cluster before the tests and stops it after. Run
//! alone (`cargo test -p postline-tests --test cluster`), these tests skip
//! with a printed note unless `scripts/cluster start` has been run.
//! Tests that kill a node take turns, and put the node back before the next.

use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Connection, ConnectionProperties};
use postline_shared::topology::{QueueType, Topology};
use postline_tests::amqp::AmqpClient;
use postline_tests::events::{assert_sequence, collapse_adjacent, ids_of, numbered};
use postline_tests::receiver::ids;
use postline_tests::{namespace, wait, Receiver, TestEnv, DEADLINE, QUIET};
use serde_json::json;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

/// The AMQP ports of nodes 1, 2 and 3 (scripts/cluster: 5680 + n).
const PORTS: [u16; 3] = [5681, 5682, 5683];

/// Node-loss tests take turns: two at once would kill the cluster's majority.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_on_node_1_keep_delivering_after_node_1_is_killed() {
    if !cluster_is_running("services_on_node_1_keep_delivering_after_node_1_is_killed") {
        return;
    }
    let _turn = NODE_LOSS.lock().await;
    let mut builder = TestEnv::builder();
    // The test's own connection is on node 2, which stays up.
    builder.broker_url = node_url(2);
    let nodes: postline_shared::broker_nodes::BrokerNodes =
        all_nodes().parse().expect("the cluster's URLs");
    builder.ingest.common.amqp_url = nodes.clone();
    builder.delivery.common.amqp_url = nodes;

    // Classic queues live on the node that declares them, and die with it
    // (quorum subscription queues need issue 14's ordering protocol first).
    // So the namespace's queues are declared from node 2; the services,
    // connected to node 1 (the first of their list), find them there.
    let topology = Topology::new(&builder.namespace, QueueType::Classic);
    let on_node_2 = connect(2).await;
    let channel = on_node_2
        .create_channel()
        .await
        .expect("a channel on node 2");
    topology
        .declare_core(&channel)
        .await
        .expect("declaring the core topology on node 2");
    topology
        .declare_subscription(&channel, "fleet")
        .await
        .expect("declaring the subscription queue on node 2");
    let _ = on_node_2.close(200, "declared".into()).await;

    let env = builder.start().await;
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(5));
    env.subscribe(json!({
        "id": "fleet",
        "endpoint": receiver.url(),
        "event_types": ["vehicle.*"],
        "order": "strict",
    }))
    .await;

    let before = numbered("a", "vehicle.moved", 200);
    env.publish_events_amqp(&before).await;
    receiver.wait_for_successes(40, DEADLINE).await;
    let killed = KilledNode::kill(1);
    let killed_at = std::time::Instant::now();
    assert!(
        receiver.successes().len() < before.len(),
        "every event arrived before node 1 died; the test needs more"
    );
    wait::until("both services to notice node 1 is gone", DEADLINE, || {
        let lost = postline_tests::logs::lines_containing("lost the broker node");
        async move {
            let on_node_1 = lost
                .iter()
                .filter(|line| line.contains("127.0.0.1:5681"))
                .count();
            if on_node_1 >= 2 {
                Ok(())
            } else {
                Err(format!(
                    "{on_node_1} 'lost the broker node' lines for node 1"
                ))
            }
        }
    })
    .await;

    // Published after the loss, over AMQP (through node 2) and over HTTP
    // (ingest answers 503 until it has moved to another node).
    let after = numbered("b", "vehicle.moved", 50);
    env.publish_events_amqp(&after).await;
    let http_id = wait::until("HTTP intake to accept again", DEADLINE, || async {
        let (status, body) = env
            .post_event(json!({"id": "c-00000", "type": "vehicle.moved", "payload": {}}))
            .await;
        match (status.as_u16(), body["ids"][0].as_str()) {
            (202, Some(id)) => Ok(id.to_string()),
            _ => Err(format!("{status} {body}")),
        }
    })
    .await;
    println!(
        "node 1 killed: HTTP intake accepted again after {:?}",
        killed_at.elapsed()
    );

    let mut want = ids_of(&before);
    want.extend(ids_of(&after));
    receiver
        .wait_until("every event, after node 1 died", DEADLINE * 2, |got| {
            let succeeded: Vec<_> = got.iter().filter(|r| r.succeeded()).cloned().collect();
            collapse_adjacent(&ids(&succeeded)).len() > want.len()
        })
        .await;
    println!(
        "node 1 killed: every event delivered {:?} after the kill",
        killed_at.elapsed()
    );
    receiver.assert_no_more(QUIET).await;
    // Nothing lost, nothing reordered; the event in flight when the node
    // died may repeat right after itself. The HTTP event may land anywhere
    // among the AMQP ones (the two intakes are independent).
    let got = collapse_adjacent(&ids(&receiver.successes()));
    let (http, amqp): (Vec<String>, Vec<String>) = got.into_iter().partition(|id| *id == http_id);
    assert_eq!(http.len(), 1, "the HTTP event must arrive once");
    assert_sequence("AMQP events across the loss of node 1", &amqp, &want);
    env.cleanup().await;
    drop(killed);
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
