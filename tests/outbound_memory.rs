//! A receiver cannot make Postline read its whole answer: one that streams
//! 100 MiB at full speed to every request (the PING included) is judged by
//! its status, only `POSTLINE_MAX_RESPONSE_BYTES` of each answer are read,
//! the connection is closed instead of drained, and the process's peak
//! resident memory stays where it was.
//!
//! Alone in its test binary: the peak memory it measures is the process's.

use postline_tests::events::numbered;
use postline_tests::{wait, TestEnv, DEADLINE};
use reqwest::Method;
use serde_json::json;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const ANSWER_BYTES: u64 = 100 * 1024 * 1024;

/// A receiver that answers every request `200` with a 100 MiB body, written
/// as fast as the peer takes it; it counts requests and the bytes it got out.
struct FloodingReceiver {
    port: u16,
    requests: Arc<AtomicUsize>,
    most_sent: Arc<AtomicU64>,
}

impl FloodingReceiver {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(AtomicUsize::new(0));
        let most_sent = Arc::new(AtomicU64::new(0));
        let (counted, most) = (requests.clone(), most_sent.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (counted, most) = (counted.clone(), most.clone());
                tokio::spawn(async move {
                    // Read the request head (the body is small and ignored).
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 8192];
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {ANSWER_BYTES}\r\n\r\n"
                    );
                    if stream.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = vec![b'x'; 64 * 1024];
                    let mut sent = 0u64;
                    while sent < ANSWER_BYTES {
                        if stream.write_all(&chunk).await.is_err() {
                            break;
                        }
                        sent += chunk.len() as u64;
                    }
                    most.fetch_max(sent, Ordering::SeqCst);
                });
            }
        });
        Self {
            port,
            requests,
            most_sent,
        }
    }
}

/// Peak resident memory of this process so far (`VmHWM`), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_streaming_100_mib_is_judged_by_its_status_without_growing_memory() {
    let env = TestEnv::start().await;
    let receiver = FloodingReceiver::start().await;
    let before = peak_rss_kib();
    // The PING gets the flood too, and passes on its status.
    env.subscribe(json!({
        "id": "flood",
        "endpoint": format!("http://127.0.0.1:{}/hook", receiver.port),
        "event_types": ["vehicle.*"],
    }))
    .await;
    let events = numbered("f", "vehicle.moved", 6);
    for event in &events {
        env.send_event(event.clone()).await;
    }
    env.wait_delivery_state("flood", "every event delivered", |s| {
        s["counters"]["delivered"] == 6
    })
    .await;
    let after = peak_rss_kib();
    let grown_kib = after.saturating_sub(before);
    let most_sent = receiver.most_sent.load(Ordering::SeqCst);
    println!(
        "peak RSS before {before} KiB, after {after} KiB (+{grown_kib} KiB); most bytes one answer got out: {most_sent}"
    );

    // Every attempt was judged by its 200, once per event.
    let (_, log) = env.operate(Method::GET, "flood", "attempts").await;
    let attempts = log["attempts"].as_array().cloned().unwrap_or_default();
    assert_eq!(attempts.len(), 6, "{log}");
    assert!(attempts.iter().all(|a| a["status"] == 200), "{log}");
    assert_eq!(
        receiver.requests.load(Ordering::SeqCst),
        7,
        "6 events and the PING"
    );
    // Seven 100 MiB answers read whole would have raised the peak by
    // 100 MiB or more; bounded reads leave it within a few MiB.
    assert!(
        grown_kib < 8 * 1024,
        "peak RSS grew by {grown_kib} KiB while receiving 100 MiB answers"
    );
    // The connections were closed, not drained: no answer got near its end
    // out (what did get out sits in the two sockets' kernel buffers).
    wait::until("the flooding writes to stop", DEADLINE, || async {
        let sent = receiver.most_sent.load(Ordering::SeqCst);
        if sent > 0 {
            Ok(())
        } else {
            Err("no write ended yet".to_string())
        }
    })
    .await;
    let most_sent = receiver.most_sent.load(Ordering::SeqCst);
    assert!(
        most_sent < ANSWER_BYTES / 4,
        "an answer was read far past the bound: {most_sent} bytes went out"
    );
    env.cleanup().await;
}
