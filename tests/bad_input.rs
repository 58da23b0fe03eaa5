//! Bad input over both intakes gets a clear answer: HTTP callers a 4xx JSON
//! error naming the field, AMQP producers a dead-letter in
//! `<ns>.ingest.rejected` with the reason in headers; and the valid events
//! around the bad ones are still accepted and delivered, in order.

use postline_tests::api::Auth;
use postline_tests::events::{assert_sequence, event, ids_of, numbered};
use postline_tests::receiver::ids;
use postline_tests::sub_id;
use postline_tests::{Receiver, TestEnv, DEADLINE, QUIET};
use reqwest::{Method, StatusCode};
use serde_json::json;

const SMALL_LIMIT: usize = 1024;

/// One bad HTTP event and the error it must get.
struct Case<'a> {
    name: &'a str,
    body: Vec<u8>,
    status: StatusCode,
    code: &'a str,
    field: Option<&'a str>,
}

impl<'a> Case<'a> {
    fn new(
        name: &'a str,
        body: &[u8],
        status: StatusCode,
        code: &'a str,
        field: Option<&'a str>,
    ) -> Self {
        Self {
            name,
            body: body.to_vec(),
            status,
            code,
            field,
        }
    }
}

/// A subscription to every event at `endpoint`; nothing listens there, so
/// the PING is skipped (these tests look at intake, not at deliveries).
fn catch_all(id: &str, endpoint: &str) -> serde_json::Value {
    json!({ "id": id, "endpoint": endpoint, "event_types": ["*"], "verify": false })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_events_with_bad_input_get_clear_errors_and_publish_nothing() {
    let env = TestEnv::builder()
        .without_delivery()
        .max_event_bytes(SMALL_LIMIT)
        .start()
        .await;
    env.subscribe(catch_all("all", "http://127.0.0.1:9/hook"))
        .await;
    let queue = env.topology.subscription_queue(&sub_id("all"));

    let oversized = format!(
        r#"{{"type":"big.event","payload":{{"blob":"{}"}}}}"#,
        "x".repeat(SMALL_LIMIT)
    );
    let invalid = StatusCode::BAD_REQUEST;
    let cases = [
        Case::new("not JSON", b"this is not json", invalid, "not_json", None),
        Case::new(
            "truncated JSON",
            br#"{"type":"a","payload":"#,
            invalid,
            "not_json",
            None,
        ),
        Case::new(
            "missing type",
            br#"{"payload":{"a":1}}"#,
            invalid,
            "invalid_field",
            Some("type"),
        ),
        Case::new(
            "bad type",
            br#"{"type":"has space","payload":{}}"#,
            invalid,
            "invalid_field",
            Some("type"),
        ),
        Case::new(
            "missing payload",
            br#"{"type":"a.b"}"#,
            invalid,
            "invalid_field",
            Some("payload"),
        ),
        Case::new(
            "unknown field",
            br#"{"type":"a.b","payload":{},"colour":"red"}"#,
            invalid,
            "invalid_field",
            Some("colour"),
        ),
        Case::new(
            "bad timestamp",
            br#"{"type":"a.b","timestamp":"yesterday","payload":{}}"#,
            invalid,
            "invalid_field",
            Some("timestamp"),
        ),
        Case::new(
            "oversized",
            oversized.as_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            None,
        ),
    ];
    for Case {
        name,
        body,
        status,
        code,
        field,
    } in cases
    {
        let response = env.post_event_raw(&body).await;
        assert_eq!(response.status, status, "{name}: {}", response.text);
        assert_eq!(
            response.error_code(),
            Some(code),
            "{name}: {}",
            response.text
        );
        assert_eq!(response.error_field(), field, "{name}: {}", response.text);
        assert!(
            response.json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{name}: the error explains itself: {}",
            response.text
        );
    }
    assert_eq!(
        env.queue_depth(&queue).await,
        Some(0),
        "no bad event was published"
    );

    // The same subscription does get a valid event: the depth check above means something.
    let id = env
        .send_event(event("ok-1", "a.b", json!({"fine": true})))
        .await;
    assert_eq!(id, "ok-1");
    env.wait_queue_depth(&queue, 1).await;
    let copies = env.drain_subscription_queue("all").await;
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0].json()["id"], "ok-1");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_batch_is_validated_all_or_nothing() {
    let env = TestEnv::builder()
        .without_delivery()
        .max_event_bytes(SMALL_LIMIT)
        .start()
        .await;
    env.subscribe(catch_all("all", "http://127.0.0.1:9/hook"))
        .await;
    let queue = env.topology.subscription_queue(&sub_id("all"));

    let (status, body) = env
        .post_batch(json!([
            event("b-0", "a.b", json!({"n": 0})),
            {"id": "b-1", "payload": {"n": 1}},
            event("b-2", "a.b", json!({"n": 2})),
        ]))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_field", "{body}");
    assert_eq!(body["error"]["field"], "[1].type", "{body}");

    let (status, body) = env
        .post_batch(json!([
            event("c-0", "a.b", json!({"n": 0})),
            event("c-1", "a.b", json!({"n": 1, "colour": "fine inside the payload"})),
            {"id": "c-2", "type": "a.b", "payload": {}, "colour": "red"},
        ]))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "[2].colour", "{body}");

    let (status, body) = env
        .post_batch(json!([
            event("d-0", "a.b", json!({"n": 0})),
            event("d-1", "a.b", json!({"blob": "y".repeat(SMALL_LIMIT)})),
        ]))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], "too_large", "{body}");
    assert_eq!(body["error"]["field"], "[1]", "{body}");

    let (status, body) = env.post_batch(json!([])).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "an empty batch is refused: {body}"
    );

    assert_eq!(
        env.queue_depth(&queue).await,
        Some(0),
        "nothing of a refused batch was published"
    );

    let good = numbered("ok", "a.b", 3);
    let (status, body) = env.post_batch(json!(good)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["ids"], json!(ids_of(&good)), "{body}");
    assert_eq!(body["duplicates"], json!([]), "{body}");
    env.wait_queue_depth(&queue, 3).await;
    let copies: Vec<String> = env
        .drain_subscription_queue("all")
        .await
        .iter()
        .map(|m| m.json()["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_sequence(
        "batch copies in the subscription queue",
        &copies,
        &ids_of(&good),
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_wrong_tokens_are_refused() {
    let env = TestEnv::builder().without_delivery().start().await;
    let event_body = serde_json::to_vec(&event("t-1", "a.b", json!({}))).unwrap();
    let spec = serde_json::to_vec(&catch_all("nope", "http://127.0.0.1:9/hook")).unwrap();
    let wrong = format!("{}x", env.producer_token());
    let cases = [
        (
            Method::POST,
            "/v1/events",
            Auth::None,
            Some(event_body.clone()),
        ),
        (
            Method::POST,
            "/v1/events",
            Auth::Token(&wrong),
            Some(event_body.clone()),
        ),
        (
            Method::POST,
            "/v1/events",
            Auth::Token(""),
            Some(event_body.clone()),
        ),
        (
            Method::POST,
            "/v1/events",
            Auth::Admin,
            Some(event_body.clone()),
        ),
        (
            Method::POST,
            "/v1/events/batch",
            Auth::None,
            Some(b"[]".to_vec()),
        ),
        (
            Method::POST,
            "/v1/subscriptions",
            Auth::None,
            Some(spec.clone()),
        ),
        (
            Method::POST,
            "/v1/subscriptions",
            Auth::Producer,
            Some(spec.clone()),
        ),
        (Method::GET, "/v1/subscriptions", Auth::None, None),
        (
            Method::GET,
            "/v1/subscriptions",
            Auth::Token("dev-admin-token"),
            None,
        ),
        (Method::GET, "/v1/subscriptions/nope", Auth::Producer, None),
        (Method::DELETE, "/v1/subscriptions/nope", Auth::None, None),
    ];
    for (method, path, auth, body) in cases {
        let response = env.api(method.clone(), path, auth, body).await;
        assert_eq!(
            response.status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} with {auth:?}: {}",
            response.text
        );
        assert_eq!(
            response.error_code(),
            Some("unauthorized"),
            "{}",
            response.text
        );
    }
    let (status, body) = env.list_subscriptions().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["subscriptions"],
        json!([]),
        "nothing was created: {body}"
    );
    assert_eq!(
        env.queue_depth(&env.topology.subscription_queue(&sub_id("nope")))
            .await,
        None
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_subscriptions_are_refused_naming_the_field() {
    let env = TestEnv::builder().without_delivery().start().await;
    let ok = "http://127.0.0.1:9/hook";
    let cases = [
        (
            json!({"id": "s1", "endpoint": ok, "event_types": ["a"], "colour": "red"}),
            "colour",
        ),
        (
            json!({"id": "s1", "endpoint": ok, "event_types": ["a"], "filters": [{"pointer": "/payload/org", "in": ["x"], "hue": 1}]}),
            "filters[0].hue",
        ),
        (
            json!({"id": "s1", "endpoint": ok, "event_types": ["a"], "signature_header": {"name": "X-Sig", "encoding": "hex", "salt": "x"}, "secrets": ["k"]}),
            "signature_header.salt",
        ),
        (
            json!({"id": "s1", "endpoint": "not a url", "event_types": ["a"]}),
            "endpoint",
        ),
        (
            json!({"id": "s1", "endpoint": "ftp://127.0.0.1/hook", "event_types": ["a"]}),
            "endpoint",
        ),
        (
            json!({"id": "s1", "endpoint": "http://", "event_types": ["a"]}),
            "endpoint",
        ),
        (
            json!({"id": "s1", "endpoint": 42, "event_types": ["a"]}),
            "endpoint",
        ),
        (json!({"id": "s1", "event_types": ["a"]}), "endpoint"),
        (
            json!({"id": "Not An Id", "endpoint": ok, "event_types": ["a"]}),
            "id",
        ),
        (
            json!({"id": "s1", "endpoint": ok, "event_types": []}),
            "event_types",
        ),
        (
            json!({"id": "s1", "endpoint": ok, "event_types": ["a", "b c"]}),
            "event_types[1]",
        ),
        (
            json!({"id": "s1", "endpoint": ok, "event_types": ["a"], "body": "xml"}),
            "body",
        ),
        (
            json!({"id": "s1", "endpoint": ok, "event_types": ["a"], "timeout_ms": 0}),
            "timeout_ms",
        ),
        (
            json!({"id": "s1", "endpoint": ok, "event_types": ["a"], "headers": {"Content-Type": "text/plain"}}),
            "headers.Content-Type",
        ),
    ];
    for (spec, field) in cases {
        let (status, body) = env.create_subscription(spec.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{spec} answered {body}");
        assert_eq!(body["error"]["field"], field, "{spec} answered {body}");
        assert!(body["error"]["code"].is_string(), "{body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    let not_json = env
        .api(
            Method::POST,
            "/v1/subscriptions",
            Auth::Admin,
            Some(b"{\"id\":".to_vec()),
        )
        .await;
    assert_eq!(
        not_json.status,
        StatusCode::BAD_REQUEST,
        "{}",
        not_json.text
    );
    assert_eq!(not_json.error_code(), Some("not_json"), "{}", not_json.text);

    let (status, body) = env.list_subscriptions().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["subscriptions"],
        json!([]),
        "nothing was stored: {body}"
    );
    assert!(
        !env.queue_exists(&env.topology.subscription_queue(&sub_id("s1")))
            .await,
        "no queue was declared for a refused subscription"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_ids_in_a_path_are_not_found_naming_the_parameter() {
    let env = TestEnv::start().await;
    let long = "a".repeat(65);
    let cases = [
        (
            Method::GET,
            "/v1/subscriptions/Not%20An%20Id".to_string(),
            "id",
        ),
        (Method::GET, format!("/v1/subscriptions/{long}/state"), "id"),
        (Method::DELETE, "/v1/subscriptions/a:b".to_string(), "id"),
        (
            Method::POST,
            "/v1/subscriptions/a.b/retry".to_string(),
            "id",
        ),
        (
            Method::POST,
            "/v1/subscriptions/s1/parked/bad%20event/replay".to_string(),
            "event_id",
        ),
    ];
    for (method, path, field) in cases {
        let response = env.api(method.clone(), &path, Auth::Admin, None).await;
        assert_eq!(
            response.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {}",
            response.text
        );
        assert_eq!(
            response.error_code(),
            Some("not_found"),
            "{}",
            response.text
        );
        assert_eq!(response.error_field(), Some(field), "{}", response.text);
    }
    // A well-formed id that names nothing is a plain 404.
    let missing = env
        .api(Method::GET, "/v1/subscriptions/nope", Auth::Admin, None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.text);
    assert_eq!(missing.error_field(), None, "{}", missing.text);
    env.cleanup().await;
}

/// Valid events interleaved with the three kinds of bad message.
struct Interleaved {
    /// (routing key, body) in publishing order.
    messages: Vec<(String, Vec<u8>)>,
    /// Ids of the valid events, in order.
    valid_ids: Vec<String>,
    /// Reject codes of the bad messages, in order.
    codes: Vec<&'static str>,
}

fn interleaved() -> Interleaved {
    let oversized = format!(
        r#"{{"id":"big","type":"mix.big","payload":{{"blob":"{}"}}}}"#,
        "z".repeat(SMALL_LIMIT)
    );
    let valid = numbered("mix", "mix.ok", 4);
    let body = |i: usize| serde_json::to_vec(&valid[i]).unwrap();
    let messages = vec![
        ("mix.ok".to_string(), body(0)),
        ("mix.bad".to_string(), b"{not json at all".to_vec()),
        ("mix.ok".to_string(), body(1)),
        (
            "mix.untyped".to_string(),
            br#"{"id":"no-type","payload":{"a":1}}"#.to_vec(),
        ),
        ("mix.ok".to_string(), body(2)),
        ("mix.big".to_string(), oversized.into_bytes()),
        ("mix.ok".to_string(), body(3)),
    ];
    Interleaved {
        messages,
        valid_ids: ids_of(&valid),
        codes: vec!["not_json", "invalid_field", "too_large"],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_bad_messages_are_dead_lettered_with_their_reason() {
    let env = TestEnv::builder()
        .without_delivery()
        .max_event_bytes(SMALL_LIMIT)
        .start()
        .await;
    env.subscribe(catch_all("all", "http://127.0.0.1:9/hook"))
        .await;
    let Interleaved {
        messages,
        valid_ids,
        codes,
    } = interleaved();
    let bad_bodies: Vec<Vec<u8>> = [1, 3, 5].iter().map(|&i| messages[i].1.clone()).collect();
    env.amqp()
        .publish_many(&env.topology.ingest_exchange(), messages)
        .await
        .expect("publishing");

    let rejected = env.wait_rejected(3).await;
    assert_eq!(
        rejected.len(),
        3,
        "exactly the three bad messages are rejected"
    );
    let got_codes: Vec<Option<&str>> = rejected
        .iter()
        .map(|m| m.header("postline-reject-code"))
        .collect();
    assert_eq!(
        got_codes,
        codes.iter().map(|c| Some(*c)).collect::<Vec<_>>(),
        "reject codes, in intake order"
    );
    for (message, body) in rejected.iter().zip(&bad_bodies) {
        assert_eq!(&message.body, body, "the rejected message keeps its bytes");
        let reason = message.header("postline-reject-reason").unwrap_or_default();
        assert!(
            !reason.is_empty(),
            "a reason is given: {:?}",
            message.headers
        );
    }
    let missing_type = rejected[1]
        .header("postline-reject-reason")
        .unwrap_or_default();
    assert!(
        missing_type.contains("type"),
        "the reason names the missing field: {missing_type}"
    );

    // The valid events all reached the subscription queue, in order.
    let queue = env.topology.subscription_queue(&sub_id("all"));
    env.wait_queue_depth(&queue, 4).await;
    let copies: Vec<String> = env
        .drain_subscription_queue("all")
        .await
        .iter()
        .map(|m| m.json()["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_sequence(
        "valid events in the subscription queue",
        &copies,
        &valid_ids,
    );
    assert_eq!(
        env.rejected_messages().await.len(),
        3,
        "nothing else was rejected"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_events_around_bad_ones_are_delivered_in_order() {
    let env = TestEnv::builder()
        .max_event_bytes(SMALL_LIMIT)
        .start()
        .await;
    let receiver = Receiver::start().await;
    env.subscribe(json!({"id": "mix", "endpoint": receiver.url(), "event_types": ["mix.*"]}))
        .await;
    let Interleaved {
        messages,
        valid_ids,
        codes,
    } = interleaved();
    env.amqp()
        .publish_many(&env.topology.ingest_exchange(), messages)
        .await
        .expect("publishing");

    let got = receiver.expect_exactly(4, DEADLINE, QUIET).await;
    assert_sequence("delivered events", &ids(&got), &valid_ids);
    for (i, request) in got.iter().enumerate() {
        assert_eq!(request.json()["payload"], json!({"seq": i}));
    }
    let rejected = env.wait_rejected(3).await;
    let got_codes: Vec<&str> = rejected
        .iter()
        .filter_map(|m| m.header("postline-reject-code"))
        .collect();
    assert_eq!(got_codes, codes);
    env.cleanup().await;
}
