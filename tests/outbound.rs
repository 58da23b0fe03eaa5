//! The outbound edge, tried as an attacker would: URLs that lead to internal
//! addresses are refused at create and update (for the endpoint and the token
//! endpoint, in every odd spelling) without a single request; a name that
//! rebinds to an internal address after the check is refused at connect
//! time; a PING refused that way says only "not allowed"; receivers cannot
//! make delivery read more than the response bound; and no log line carries
//! an event payload, even when the broker returns a message.
//!
//! Traffic goes to 127.0.0.1 only: the refused addresses are never connected
//! to (that is what is tested), and the cases that could reach a non-loopback
//! address if the guard failed are created with `"verify": false`, so not even
//! a broken guard sends anything there.

use postline_shared::outbound::NameLookup;
use postline_tests::events::event;
use postline_tests::receiver::ids;
use postline_tests::{logs, wait, Receiver, TestEnv, DEADLINE, QUIET};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A resolver the test steers: `name` answers what `answer` holds at the
/// moment of the lookup; every other name fails.
#[derive(Clone)]
struct SteeredName {
    name: &'static str,
    answer: Arc<Mutex<Vec<IpAddr>>>,
    lookups: Arc<AtomicUsize>,
}

impl SteeredName {
    fn new(name: &'static str, first: &str) -> Self {
        let steered = Self {
            name,
            answer: Arc::default(),
            lookups: Arc::default(),
        };
        steered.answer_with(&[first]);
        steered
    }

    fn answer_with(&self, addresses: &[&str]) {
        *self.answer.lock().unwrap() = addresses.iter().map(|a| a.parse().unwrap()).collect();
    }

    fn lookup(&self) -> NameLookup {
        let this = self.clone();
        NameLookup::from_fn(move |name| {
            let this = this.clone();
            async move {
                this.lookups.fetch_add(1, Ordering::SeqCst);
                if name == this.name {
                    Ok(this.answer.lock().unwrap().clone())
                } else {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "unknown test name",
                    ))
                }
            }
        })
    }
}

fn assert_not_allowed(status: StatusCode, body: &Value, field: &str, case: &str) {
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{case}: {body}");
    assert_eq!(
        body["error"]["code"], "endpoint_not_allowed",
        "{case}: {body}"
    );
    assert_eq!(body["error"]["field"], field, "{case}: {body}");
    // Nothing learned from the destination: no PING result, no status, no timing.
    assert!(body.get("ping").is_none(), "{case}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_an_internal_address_is_refused_at_create_and_nothing_is_called() {
    // The production default: no internal range allowed.
    let env = TestEnv::builder()
        .outbound(|o| o.allow_private_networks.clear())
        .start()
        .await;
    let receiver = Receiver::start().await;
    let port = receiver.addr().port();
    // Spellings of the receiver's own loopback address: created with the
    // PING on, so a guard that let one through would show at the receiver.
    let loopback = [
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://127.1:{port}/hook"),
        format!("http://2130706433:{port}/hook"),
        format!("http://0x7f.1:{port}/hook"),
        format!("http://0177.0.0.1:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        format!("http://[::1]:{port}/hook"),
        format!("http://localhost:{port}/hook"),
        format!("http://0.0.0.0:{port}/hook"),
        format!("http://0:{port}/hook"),
        format!("http://[::]:{port}/hook"),
    ];
    // Everything else internal: never contacted even if the guard failed
    // (no PING), and nothing is stored.
    let elsewhere = [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://10.1.2.3/hook",
        "http://172.16.0.1/hook",
        "http://192.168.1.1/hook",
        "http://100.64.0.1/hook",
        "http://[fc00::1]/hook",
        "http://[fd12:3456::1]/hook",
        "http://[fe80::1]/hook",
        "http://224.0.0.1/hook",
        "http://255.255.255.255/hook",
        "http://[ff02::1]/hook",
        "http://[64:ff9b::a00:1]/hook",
    ];
    let cases = loopback
        .iter()
        .map(|url| (url.clone(), true))
        .chain(elsewhere.iter().map(|url| (url.to_string(), false)));
    for (n, (url, verify)) in cases.enumerate() {
        let id = format!("ssrf-{n}");
        let (status, body) = env
            .create_subscription(json!({
                "id": id, "endpoint": url, "event_types": ["order.*"], "verify": verify,
            }))
            .await;
        assert_not_allowed(status, &body, "endpoint", &url);
        assert_eq!(
            env.get_subscription(&id).await.0,
            StatusCode::NOT_FOUND,
            "{url}"
        );

        // The same URL as a token endpoint, behind an allowed-looking (but
        // never called: no PING) public endpoint.
        let (status, body) = env
            .create_subscription(json!({
                "id": format!("{id}-token"),
                "endpoint": "https://203.0.114.1/hook",
                "event_types": ["order.*"],
                "verify": false,
                "auth": {
                    "mode": "oauth2_client_credentials", "token_url": url,
                    "client_id": "c", "client_secret": "s",
                },
            }))
            .await;
        assert_not_allowed(status, &body, "auth.token_url", &url);
    }

    // An allowed subscription turned internal by PATCH is refused too, and
    // keeps its old endpoint.
    let (status, body) = env
        .create_subscription(json!({
            "id": "public", "endpoint": "https://203.0.114.1/hook",
            "event_types": ["order.*"], "verify": false,
        }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = env
        .patch_subscription(
            "public",
            json!({"endpoint": format!("http://127.0.0.1:{port}/hook"), "verify": true}),
        )
        .await;
    assert_not_allowed(status, &body, "endpoint", "PATCH");
    let (_, stored) = env.get_subscription("public").await;
    assert_eq!(stored["endpoint"], "https://203.0.114.1/hook");

    receiver.assert_no_more(QUIET).await;
    assert!(receiver.pings().is_empty(), "the receiver was PINGed");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_rebinds_to_an_internal_address_is_refused_at_connect_without_a_connection() {
    let partner = SteeredName::new("partner.example", "127.0.0.1");
    let env = TestEnv::builder()
        .outbound(|o| o.lookup = partner.lookup())
        .start()
        .await;
    let receiver = Receiver::start().await;
    let endpoint = format!("http://partner.example:{}/hook", receiver.addr().port());
    // Created while the name answers the (allowed) loopback: PING passes.
    env.subscribe(json!({
        "id": "rebind", "endpoint": endpoint, "event_types": ["order.*"],
    }))
    .await;
    assert_eq!(receiver.pings().len(), 1);

    // Now the name answers the metadata service and a private address.
    partner.answer_with(&["10.1.2.3", "169.254.169.254"]);
    env.send_event(event("e-1", "order.created", json!({"n": 1})))
        .await;
    let refused = wait::until("an attempt refused as not allowed", DEADLINE, || async {
        let (_, log) = env.operate(Method::GET, "rebind", "attempts").await;
        let errors: Vec<String> = log["attempts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["error"].as_str().map(str::to_string))
            .collect();
        match errors
            .iter()
            .find(|e| e.contains("destination not allowed"))
        {
            Some(error) => Ok(error.clone()),
            None => Err(format!("{log}")),
        }
    })
    .await;
    assert!(refused.contains("10.1.2.3"), "{refused}");
    assert!(
        receiver.successes().is_empty(),
        "delivered to a rebound name"
    );

    // An answer with one allowed address among refused ones: only the
    // checked, allowed address is connected to, and the event arrives.
    partner.answer_with(&["10.1.2.3", "127.0.0.1"]);
    let got = receiver.wait_for_successes(1, DEADLINE).await;
    assert_eq!(ids(&got), ["e-1"]);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_refused_at_connect_says_only_not_allowed() {
    // The create-time check sees the loopback; the PING's own lookup then
    // gets a private address (rebinding between the two).
    let lookups = Arc::new(AtomicUsize::new(0));
    let counted = lookups.clone();
    let env = TestEnv::builder()
        .outbound(|o| {
            let counted = counted.clone();
            o.lookup = NameLookup::from_fn(move |_| {
                let n = counted.fetch_add(1, Ordering::SeqCst);
                let ip = if n == 0 { "127.0.0.1" } else { "192.168.7.7" };
                async move { Ok(vec![ip.parse().unwrap()]) }
            });
        })
        .start()
        .await;
    let receiver = Receiver::start().await;
    let (status, body) = env
        .create_subscription(json!({
            "id": "ping-rebind",
            "endpoint": format!("http://partner.example:{}/hook", receiver.addr().port()),
            "event_types": ["order.*"],
        }))
        .await;
    assert_not_allowed(status, &body, "endpoint", "PING");
    assert!(
        !body.to_string().contains("192.168"),
        "the answer names the internal address: {body}"
    );
    assert!(
        lookups.load(Ordering::SeqCst) >= 2,
        "the PING resolved again"
    );
    assert!(receiver.pings().is_empty());
    assert_eq!(
        env.get_subscription("ping-rebind").await.0,
        StatusCode::NOT_FOUND
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_line_carries_a_payload_during_a_ladder_run_even_when_a_delay_queue_was_lost() {
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    env.subscribe(json!({
        "id": "quiet", "endpoint": receiver.url(), "event_types": ["order.*"],
        "retry": {"immediate_retries": 0, "steps_ms": [40, 80], "repeat_every_ms": 80},
    }))
    .await;
    // Its delay queues exist from the start…
    let first_step = env.topology.delay_queue(40);
    assert!(
        env.queue_exists(&first_step).await,
        "{first_step} not declared at create"
    );
    assert!(env.queue_exists(&env.topology.delay_queue(80)).await);
    // …and when one is lost anyway, the broker returns the retry copy, body
    // and all: only ids may reach the logs. (Deleted once the first event
    // went through, so the subscription is fully running.)
    env.send_event(event("p-0", "order.created", json!({})))
        .await;
    receiver.wait_for_successes(1, DEADLINE).await;
    env.amqp()
        .delete_queue(&first_step)
        .await
        .expect("deleting a delay queue");

    let marker = format!("payload-marker-{}", env.namespace);
    receiver.fail_next(3, 503);
    env.send_event(event(
        "p-1",
        "order.created",
        json!({"secret_note": marker}),
    ))
    .await;
    let got = receiver.wait_for_successes(2, DEADLINE).await;
    assert_eq!(ids(&got), ["p-0", "p-1"]);
    assert_eq!(
        receiver.requests().len(),
        5,
        "{}",
        postline_tests::receiver::describe(&receiver.requests())
    );

    // The lost queue was met (and healed), so the return path did run.
    wait::until("the missing delay queue logged", DEADLINE, || async {
        let lines = logs::lines_containing("delay queue missing");
        if lines.iter().any(|l| l.contains("quiet")) {
            Ok(())
        } else {
            Err(format!("{lines:?}"))
        }
    })
    .await;
    // As text, and as the byte list a `Debug` of a message body prints.
    let as_bytes = format!("{:?}", marker.as_bytes());
    let as_bytes = as_bytes.trim_start_matches('[').trim_end_matches(']');
    for needle in [marker.as_str(), as_bytes] {
        let leaked = logs::lines_containing(needle);
        assert!(leaked.is_empty(), "payload in the logs: {leaked:#?}");
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowercase_bearer_scheme_is_accepted_and_a_too_deep_payload_is_refused() {
    let env = TestEnv::builder().without_delivery().start().await;
    let response = env
        .http()
        .post(format!("{}/v1/events", env.ingest_url()))
        .header("authorization", format!("bearer {}", env.producer_token()))
        .json(&json!({"type": "order.created", "payload": {}}))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    let deep = format!(
        r#"{{"type":"order.created","payload":{}{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let answer = env.post_event_raw(deep.as_bytes()).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.json);
    assert_eq!(answer.error_field(), Some("payload"), "{}", answer.json);

    env.publish_amqp("order.created", deep.as_bytes()).await;
    let rejected = env.wait_rejected(1).await;
    let reason = rejected[0]
        .header("postline-reject-reason")
        .unwrap_or_default()
        .to_string();
    assert!(reason.contains("payload"), "{reason} / {:?}", rejected[0]);
    env.cleanup().await;
}
