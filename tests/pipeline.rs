//! The whole pipeline, intake to receiver: events published over AMQP and
//! posted over HTTP arrive with the right body and headers, signed; a long
//! stream keeps its order; subscriptions get exactly the events they match;
//! `payload` mode sends the producer's bytes unchanged; intake is idempotent.

use postline_tests::events::{assert_sequence, event, ids_of, numbered};
use postline_tests::receiver::ids;
use postline_tests::signatures::{assert_standard_webhooks, body_base64, body_hex, new_whsec};
use postline_tests::{Receiver, Recorded, TestEnv, DEADLINE, QUIET};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

fn assert_common_headers(request: &Recorded) {
    assert_eq!(request.method, "POST");
    assert_eq!(request.header("content-type"), Some("application/json"));
    let agent = request.header("user-agent").unwrap_or_default();
    assert!(
        agent.starts_with("postline/") && agent.len() > "postline/".len(),
        "user-agent: {agent:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_and_http_events_arrive_signed_with_the_right_body_and_headers() {
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    let whsec = new_whsec();
    let plain = format!("plain-{}", uuid::Uuid::new_v4().simple());
    env.subscribe(json!({
        "id": "acme_us",
        "endpoint": receiver.url_for("/acme"),
        "event_types": ["order.*"],
        "filters": [{"pointer": "/payload/org", "in": ["acme"]}],
        "headers": {"API-Version": "2.0"},
        "secrets": [whsec, plain],
        "signature_header": {"name": "X-FacesWebhookSignature", "encoding": "hex"},
    }))
    .await;
    let b64_secret = format!("b64-{}", uuid::Uuid::new_v4().simple());
    env.subscribe(json!({
        "id": "partner_b64",
        "endpoint": receiver.url_for("/b64"),
        "event_types": ["order.created"],
        "secrets": [b64_secret],
        "signature_header": {"name": "X-Signature", "encoding": "base64"},
    }))
    .await;

    // Over AMQP, with every optional field given (timestamp in another zone).
    let amqp_event = json!({
        "id": "evt-amqp-1",
        "type": "order.created",
        "operation": "created",
        "timestamp": "2026-03-01T10:00:00+01:00",
        "payload": {"org": "acme", "order": {"number": 17, "lines": [1, 2.5, "x"]}},
    });
    env.publish_amqp("order.created", &serde_json::to_vec(&amqp_event).unwrap())
        .await;
    // Over HTTP, with the defaults filled in by intake.
    let http_id = env
        .send_event(
            json!({"type": "order.updated", "payload": {"org": "acme", "status": "shipped"}}),
        )
        .await;

    let all = receiver.expect_exactly(3, DEADLINE, QUIET).await;
    let acme: Vec<&Recorded> = all.iter().filter(|r| r.path == "/acme").collect();
    let b64: Vec<&Recorded> = all.iter().filter(|r| r.path == "/b64").collect();
    assert_eq!(acme.len(), 2, "acme_us gets both events");
    assert_eq!(b64.len(), 1, "partner_b64 gets only order.created");
    let by_id = |id: &str| {
        *acme
            .iter()
            .find(|r| r.event_id().as_deref() == Some(id))
            .unwrap_or_else(|| panic!("event {id} did not reach acme_us"))
    };

    let from_amqp = by_id("evt-amqp-1");
    assert_common_headers(from_amqp);
    assert_eq!(from_amqp.query, None);
    assert_eq!(
        from_amqp.json(),
        json!({
            "id": "evt-amqp-1",
            "type": "order.created",
            "operation": "created",
            "timestamp": "2026-03-01T09:00:00.000Z",
            "payload": {"org": "acme", "order": {"number": 17, "lines": [1, 2.5, "x"]}},
        })
    );
    assert_eq!(from_amqp.header("api-version"), Some("2.0"));
    assert_standard_webhooks(from_amqp, "evt-amqp-1", &[&whsec, &plain]);
    assert_eq!(
        from_amqp.header("x-faceswebhooksignature"),
        Some(body_hex(&whsec, &from_amqp.body).as_str()),
        "the custom header is the hex HMAC of the raw body with the first secret"
    );

    let from_http = by_id(&http_id);
    assert_common_headers(from_http);
    let body = from_http.json();
    assert_eq!(body["type"], "order.updated");
    assert_eq!(body["payload"], json!({"org": "acme", "status": "shipped"}));
    assert!(body.get("operation").is_none_or(Value::is_null), "{body}");
    let id = uuid::Uuid::parse_str(&http_id).expect("a generated id is a UUID");
    assert_eq!(id.get_version_num(), 7, "generated ids are UUIDv7");
    let stamp = chrono::DateTime::parse_from_rfc3339(body["timestamp"].as_str().unwrap())
        .expect("timestamp is RFC 3339");
    let age = chrono::Utc::now().signed_duration_since(stamp);
    assert!(
        age.num_seconds().abs() < 300,
        "timestamp defaults to now: {stamp}"
    );
    assert_standard_webhooks(from_http, &http_id, &[&whsec, &plain]);
    assert_eq!(
        from_http.header("x-faceswebhooksignature"),
        Some(body_hex(&whsec, &from_http.body).as_str())
    );

    let partner = b64[0];
    assert_common_headers(partner);
    assert_eq!(partner.event_id().as_deref(), Some("evt-amqp-1"));
    assert_standard_webhooks(partner, "evt-amqp-1", &[&b64_secret]);
    assert_eq!(
        partner.header("x-signature"),
        Some(body_base64(&b64_secret, &partner.body).as_str()),
        "base64 HMAC of the raw body with a plain (UTF-8) secret"
    );
    assert_eq!(
        partner.header("api-version"),
        None,
        "headers are per subscription"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_events_arrive_in_published_order() {
    const COUNT: usize = 1000;
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    env.subscribe(json!({
        "id": "firehose",
        "endpoint": receiver.url(),
        "event_types": ["seq.*"],
        "order": "strict",
    }))
    .await;
    // Two event types interleaved: order is per subscription, not per type.
    let events: Vec<Value> = numbered("seq", "seq.a", COUNT)
        .into_iter()
        .enumerate()
        .map(|(i, mut e)| {
            if i % 3 == 0 {
                e["type"] = json!("seq.b");
            }
            e
        })
        .collect();
    for chunk in events.chunks(250) {
        env.publish_events_amqp(chunk).await;
    }

    receiver
        .wait_for_successes(COUNT, Duration::from_secs(120))
        .await;
    let all = receiver.assert_no_more(QUIET).await;
    assert_sequence("event ids", &ids(&all), &ids_of(&events));
    let sequence: Vec<u64> = all
        .iter()
        .map(|r| r.json()["payload"]["seq"].as_u64().expect("seq in payload"))
        .collect();
    assert_eq!(
        sequence,
        (0..COUNT as u64).collect::<Vec<_>>(),
        "payload sequence numbers"
    );
    assert!(all.iter().all(Recorded::succeeded));
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_subscription_gets_exactly_the_events_it_matches() {
    let env = TestEnv::start().await;
    let orders = Receiver::start().await;
    let pnrs = Receiver::start().await;
    env.subscribe(json!({
        "id": "acme_orders",
        "endpoint": orders.url(),
        "event_types": ["order.*"],
        "filters": [{"pointer": "/payload/org", "in": ["acme", "acme-eu"]}],
    }))
    .await;
    env.subscribe(json!({
        "id": "globex_pnr",
        "endpoint": pnrs.url(),
        "event_types": ["pnr.created", "pnr.cancelled"],
        "filters": [
            {"pointer": "/payload/org", "in": ["globex"]},
            {"pointer": "/payload/vip", "exists": true},
        ],
    }))
    .await;

    let mut events = Vec::new();
    let mut want_orders = Vec::new();
    let mut want_pnrs = Vec::new();
    let mut add = |id: String, kind: &str, payload: Value, to: Option<&mut Vec<String>>| {
        if let Some(list) = to {
            list.push(id.clone());
        }
        events.push(event(&id, kind, payload));
    };
    for i in 0..30 {
        add(
            format!("o-acme-{i}"),
            "order.created",
            json!({"org": "acme", "i": i}),
            Some(&mut want_orders),
        );
        add(
            format!("o-globex-{i}"),
            "order.created",
            json!({"org": "globex", "i": i, "vip": true}),
            None,
        );
        add(
            format!("p-globex-{i}"),
            "pnr.created",
            json!({"org": "globex", "i": i, "vip": i}),
            Some(&mut want_pnrs),
        );
        add(
            format!("p-acme-{i}"),
            "pnr.created",
            json!({"org": "acme", "i": i, "vip": true}),
            None,
        );
        add(
            format!("p-novip-{i}"),
            "pnr.cancelled",
            json!({"org": "globex", "i": i}),
            None,
        );
        add(
            format!("p-upd-{i}"),
            "pnr.updated",
            json!({"org": "globex", "i": i, "vip": true}),
            None,
        );
        add(
            format!("o-eu-{i}"),
            "order.status.changed",
            json!({"org": "acme-eu", "i": i}),
            Some(&mut want_orders),
        );
        add(
            format!("x-{i}"),
            "invoice.paid",
            json!({"org": "acme", "i": i, "vip": true}),
            None,
        );
        add(
            format!("o-nested-{i}"),
            "order.created",
            json!({"org": ["acme"], "i": i}),
            None,
        );
    }
    // Sentinels last: once each arrives, anything wrongly routed before it has arrived too.
    add(
        "o-sentinel".into(),
        "order.created",
        json!({"org": "acme"}),
        Some(&mut want_orders),
    );
    add(
        "p-sentinel".into(),
        "pnr.cancelled",
        json!({"org": "globex", "vip": false}),
        Some(&mut want_pnrs),
    );
    env.publish_events_amqp(&events).await;

    let got_orders = orders
        .expect_exactly(want_orders.len(), DEADLINE, QUIET)
        .await;
    let got_pnrs = pnrs.expect_exactly(want_pnrs.len(), DEADLINE, QUIET).await;
    assert_sequence("acme_orders", &ids(&got_orders), &want_orders);
    assert_sequence("globex_pnr", &ids(&got_pnrs), &want_pnrs);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_mode_sends_the_payload_bytes_unchanged() {
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    env.subscribe(json!({
        "id": "thin",
        "endpoint": receiver.url(),
        "event_types": ["profile.*"],
        "body": "payload",
        "secrets": ["thin-secret"],
        "signature_header": {"name": "X-FacesWebhookSignature", "encoding": "hex"},
    }))
    .await;
    let payload_http =
        "{ \"b\" :1,\n\t\"a\" : [1.50 , \"x\", {\"nested\" :  null}] ,\"u\":\"\\u00e9\u{e9}\"  }";
    let payload_amqp = "[ 1e3,\r\n  -0.0 ,\"\\\"quoted\\\"\"\t]";
    let http_body =
        format!(r#"{{"id":"raw-http","type":"profile.updated","payload":{payload_http}}}"#);
    let response = env.post_event_raw(http_body.as_bytes()).await;
    assert_eq!(response.status, StatusCode::ACCEPTED, "{}", response.text);
    let amqp_body =
        format!(r#"{{"id":"raw-amqp","type":"profile.deleted","payload":{payload_amqp}}}"#);
    env.publish_amqp("profile.deleted", amqp_body.as_bytes())
        .await;

    let got = receiver.expect_exactly(2, DEADLINE, QUIET).await;
    assert_eq!(
        String::from_utf8_lossy(&got[0].body),
        payload_http,
        "payload bytes over HTTP intake"
    );
    assert_eq!(
        String::from_utf8_lossy(&got[1].body),
        payload_amqp,
        "payload bytes over AMQP intake"
    );
    assert_eq!(got[0].header("webhook-id"), Some("raw-http"));
    assert_eq!(got[1].header("webhook-id"), Some("raw-amqp"));
    for request in &got {
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(
            request.header("x-faceswebhooksignature"),
            Some(body_hex("thin-secret", &request.body).as_str())
        );
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_id_seen_before_is_accepted_but_delivered_once() {
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    env.subscribe(json!({"id": "once", "endpoint": receiver.url(), "event_types": ["dup.*"]}))
        .await;
    let first = event("dup-1", "dup.test", json!({"attempt": 1}));
    let (status, body) = env.post_event(first.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body, json!({"ids": ["dup-1"], "duplicates": []}));

    let (status, body) = env.post_event(first.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "a repeat is accepted: {body}");
    assert_eq!(body, json!({"ids": ["dup-1"], "duplicates": ["dup-1"]}));

    // The same id with another body is still the same event.
    let (status, body) = env
        .post_event(event("dup-1", "dup.test", json!({"attempt": 2})))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["duplicates"], json!(["dup-1"]));
    // Over AMQP too: the repeat is dropped, the new event behind it is delivered.
    env.publish_events_amqp(&[first, event("dup-2", "dup.test", json!({}))])
        .await;
    receiver.wait_for_distinct(2, DEADLINE).await;

    let (status, body) = env
        .post_batch(json!([
            event("dup-3", "dup.test", json!({})),
            event("dup-1", "dup.test", json!({})),
            event("dup-2", "dup.test", json!({})),
        ]))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        body,
        json!({"ids": ["dup-3", "dup-1", "dup-2"], "duplicates": ["dup-1", "dup-2"]})
    );
    // A sentinel: with strict order, any wrongly published repeat lands before it.
    env.send_event(event("dup-4", "dup.test", json!({}))).await;

    receiver.wait_for_distinct(4, DEADLINE).await;
    let all = receiver.assert_no_more(QUIET).await;
    assert_sequence(
        "delivered ids",
        &ids(&all),
        &["dup-1", "dup-2", "dup-3", "dup-4"].map(String::from),
    );
    assert_eq!(
        all[0].json()["payload"],
        json!({"attempt": 1}),
        "the first copy wins"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_spread_over_several_connections_all_deliver_in_order() {
    // Two consumers per connection: five subscriptions need three connections.
    let mut builder = TestEnv::builder();
    builder.delivery.channels_per_connection = 2;
    let mut env = builder.without_delivery().start().await;
    let receiver = Receiver::start().await;
    let subscriptions: Vec<String> = (0..5).map(|i| format!("spread{i}")).collect();
    for id in &subscriptions {
        env.subscribe(json!({
            "id": id,
            "endpoint": receiver.url_for(&format!("/{id}")),
            "event_types": ["fleet.*"],
        }))
        .await;
    }
    env.start_delivery().await;
    let events = numbered("s", "fleet.moved", 20);
    env.publish_events_amqp(&events).await;

    receiver
        .wait_for_successes(subscriptions.len() * events.len(), DEADLINE)
        .await;
    receiver.assert_no_more(QUIET).await;
    for id in &subscriptions {
        let path = format!("/{id}");
        let got: Vec<Recorded> = receiver
            .successes()
            .into_iter()
            .filter(|r| r.path == path)
            .collect();
        assert_sequence(&format!("events of {id}"), &ids(&got), &ids_of(&events));
    }
    let metrics = env.delivery_metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "postline_delivery_connections 3"),
        "{metrics}"
    );
    env.cleanup().await;
}
