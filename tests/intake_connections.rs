//! Ingest's HTTP server bounds its connections: a client that sends half a
//! request head is cut off after the header-read timeout, hundreds of them do
//! not keep a normal producer from getting its 202, and beyond the
//! connection limit new connections wait for a free slot instead of being
//! refused or hurting the ones in flight.

use postline_tests::{TestEnv, DEADLINE};
use reqwest::StatusCode;
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Opens `count` connections to `addr` that each send half a request line.
async fn open_half_requests(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream = TcpStream::connect(addr).await.expect("connect to ingest");
        stream
            .write_all(b"POST /v1/events HTTP/1.1\r\nHost: ingest\r\nContent-Ty")
            .await
            .expect("send half a request");
        streams.push(stream);
    }
    streams
}

/// Waits until the server closes every stream; returns how long the last took.
async fn wait_all_closed(streams: Vec<TcpStream>, since: Instant) -> Duration {
    let mut closing = JoinSet::new();
    for mut stream in streams {
        closing.spawn(async move {
            let mut buf = [0u8; 1024];
            loop {
                match stream.read(&mut buf).await {
                    // Closed (possibly after a 408 answer, which is data).
                    Ok(0) | Err(_) => return since.elapsed(),
                    Ok(_) => {}
                }
            }
        });
    }
    let mut last = Duration::ZERO;
    let all = async {
        while let Some(closed) = closing.join_next().await {
            last = last.max(closed.expect("reader task"));
        }
    };
    tokio::time::timeout(DEADLINE, all)
        .await
        .expect("every half-open connection closed by the server");
    last
}

/// POSTs one event on a connection of its own: with a 1 s idle timeout, a
/// kept-alive connection could be closed by the server just as it is reused.
async fn post_on_a_new_connection(env: &TestEnv, n: u32) -> StatusCode {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(DEADLINE)
        .build()
        .expect("client");
    client
        .post(format!("{}/v1/events", env.ingest_url()))
        .bearer_auth(env.producer_token())
        .json(&json!({"type": "order.created", "payload": {"n": n}}))
        .send()
        .await
        .expect("POST /v1/events")
        .status()
}

fn ingest_addr(env: &TestEnv) -> SocketAddr {
    env.ingest_url()
        .trim_start_matches("http://")
        .parse()
        .expect("ingest address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_half_open_connections_are_closed_after_the_header_timeout_while_events_get_their_202(
) {
    let mut builder = TestEnv::builder().without_delivery();
    builder.ingest.server.header_read_timeout = Duration::from_secs(1);
    let env = builder.start().await;
    let addr = ingest_addr(&env);

    let opened = Instant::now();
    let stalled = open_half_requests(addr, 500).await;
    // A producer is served while they hang.
    assert_eq!(
        post_on_a_new_connection(&env, 1).await,
        StatusCode::ACCEPTED
    );

    let last_closed = wait_all_closed(stalled, opened).await;
    println!("500 half-open connections: the last was closed {last_closed:?} after opening");
    // And the server still serves afterwards.
    assert_eq!(
        post_on_a_new_connection(&env, 2).await,
        StatusCode::ACCEPTED
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_connection_limit_a_new_connection_waits_for_a_slot_and_is_served() {
    let mut builder = TestEnv::builder().without_delivery();
    builder.ingest.server.max_connections = 20;
    builder.ingest.server.header_read_timeout = Duration::from_secs(2);
    let env = builder.start().await;
    let addr = ingest_addr(&env);

    // Every slot is held by a stalled client.
    let stalled = open_half_requests(addr, 20).await;
    let started = Instant::now();
    // A new producer connection is neither refused nor reset: it waits in
    // the listen backlog until the stalled ones time out.
    assert_eq!(
        post_on_a_new_connection(&env, 1).await,
        StatusCode::ACCEPTED
    );
    let waited = started.elapsed();
    println!("with 20 of 20 slots held, a producer waited {waited:?} for its 202");
    // It did wait for a slot: the limit held.
    assert!(
        waited >= Duration::from_millis(1500),
        "served after {waited:?}: the 21st connection did not wait for a slot"
    );
    wait_all_closed(stalled, started).await;
    env.cleanup().await;
}
