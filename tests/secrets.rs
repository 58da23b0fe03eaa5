//! Secrets are write-only: signing secrets never come back from the API
//! (create, get, list, patch, errors), never reach a log line — even at
//! DEBUG, after events were signed and delivered — and the stored
//! subscription's `Debug` form hides them.

use postline_tests::api::Auth;
use postline_tests::events::numbered;
use postline_tests::signatures::{body_hex, new_whsec, standard_webhooks_v1};
use postline_tests::{logs, Receiver, TestEnv, DEADLINE, QUIET};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// The strings that must never show: each secret, and the base64 part of a
/// `whsec_` secret on its own.
fn forms(secrets: &[&str]) -> Vec<String> {
    let mut all = Vec::new();
    for secret in secrets {
        all.push(secret.to_string());
        if let Some(encoded) = secret.strip_prefix("whsec_") {
            all.push(encoded.to_string());
        }
    }
    all
}

fn assert_hidden(what: &str, text: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(
            !text.contains(secret.as_str()),
            "{what} contains the secret {secret:?}:\n{text}"
        );
    }
}

fn assert_view(what: &str, view: &Value, secrets_count: u64, secrets: &[String]) {
    assert_hidden(what, &view.to_string(), secrets);
    assert!(
        view.get("secrets").is_none(),
        "{what} has a secrets field: {view}"
    );
    assert_eq!(view["secrets_count"], secrets_count, "{what}: {view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_responses_or_logs() {
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    let whsec = new_whsec();
    let custom = format!("faces-secret-{}", uuid::Uuid::new_v4().simple());
    let rotated = new_whsec();
    let secrets = forms(&[&whsec, &custom, &rotated]);
    let mut with_tokens = secrets.clone();
    with_tokens.push(env.admin_token().to_string());
    with_tokens.push(env.producer_token().to_string());

    let (status, created) = env
        .create_subscription(json!({
            "id": "signed",
            "endpoint": receiver.url(),
            "event_types": ["profile.*"],
            "secrets": [whsec],
            "signature_header": {"name": "X-Webhook-Signature", "encoding": "hex"},
        }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_view("create response", &created, 1, &secrets);
    let (status, faces) = env
        .create_subscription(json!({
            "id": "faces",
            "endpoint": receiver.url_for("/faces"),
            "event_types": ["profile.*"],
            "body": "payload",
            "secrets": [custom],
            "signature_header": {"name": "X-FacesWebhookSignature", "encoding": "hex"},
        }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{faces}");
    assert_view("create response", &faces, 1, &secrets);

    let (status, got) = env.get_subscription("signed").await;
    assert_eq!(status, StatusCode::OK);
    assert_view("get response", &got, 1, &secrets);
    let (status, list) = env.list_subscriptions().await;
    assert_eq!(status, StatusCode::OK);
    assert_hidden("list response", &list.to_string(), &secrets);
    assert_eq!(
        list["subscriptions"].as_array().map(Vec::len),
        Some(2),
        "{list}"
    );

    // Deliver signed events, so signing code paths have run and logged.
    let first = numbered("p", "profile.updated", 3);
    env.publish_events_amqp(&first).await;
    let got = receiver.expect_exactly(6, DEADLINE, QUIET).await;
    for request in got.iter().filter(|r| r.path == "/hook") {
        let id = request.event_id().unwrap();
        let timestamp = request.header("webhook-timestamp").unwrap();
        assert_eq!(
            request.header("webhook-signature"),
            Some(standard_webhooks_v1(&whsec, &id, timestamp, &request.body).as_str()),
            "the secret is in use"
        );
    }
    for request in got.iter().filter(|r| r.path == "/faces") {
        assert_eq!(
            request.header("x-faceswebhooksignature"),
            Some(body_hex(&custom, &request.body).as_str())
        );
    }

    // Rotate: the patch response hides the new secrets too.
    let (status, patched) = env
        .patch_subscription("signed", json!({"secrets": [rotated, whsec]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_view("patch response", &patched, 2, &secrets);
    let (_, got) = env.get_subscription("signed").await;
    assert_view("get after patch", &got, 2, &secrets);

    // A receiver failure is logged: the secrets must not ride along.
    receiver.fail_next(2, 500);
    env.send_event(json!({"id": "after-rotation", "type": "profile.created", "payload": {"n": 1}}))
        .await;
    receiver.wait_for(6 + 2 + 2, DEADLINE).await;

    // The stored subscription keeps the secrets, but its Debug form hides them.
    let stored = env.stored_subscription("signed").await;
    let exposed: Vec<&str> = stored.spec.secrets.iter().map(|s| s.expose()).collect();
    assert_eq!(
        exposed,
        vec![rotated.as_str(), whsec.as_str()],
        "stored as given"
    );
    assert_hidden(
        "Debug of the stored subscription",
        &format!("{stored:?}"),
        &secrets,
    );
    assert_hidden(
        "Debug of the stored subscription",
        &format!("{stored:#?}"),
        &secrets,
    );

    let captured = logs::captured();
    // The capture works and covers delivery: a delivery line names both ids.
    let delivery_lines: Vec<String> = logs::lines_containing("after-rotation")
        .into_iter()
        .filter(|line| line.contains("signed"))
        .collect();
    assert!(
        !delivery_lines.is_empty(),
        "no captured log line names event after-rotation and subscription signed; captured:\n{}",
        captured
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_hidden("the captured logs", &captured, &with_tokens);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_secrets_are_not_echoed_in_errors_or_logs() {
    let env = TestEnv::builder().without_delivery().start().await;
    let bad_whsec = format!("whsec_!!not-base64-{}", uuid::Uuid::new_v4().simple());
    let mistyped = format!("bare-string-secret-{}", uuid::Uuid::new_v4().simple());
    let nested = format!("nested-secret-{}", uuid::Uuid::new_v4().simple());
    let secrets = forms(&[&bad_whsec, &mistyped, &nested]);
    let cases = [
        (
            json!({"id": "a", "endpoint": "http://127.0.0.1:9/", "event_types": ["x"], "secrets": [bad_whsec]}),
            "secrets[0]",
        ),
        (
            json!({"id": "a", "endpoint": "http://127.0.0.1:9/", "event_types": ["x"], "secrets": mistyped}),
            "secrets",
        ),
        (
            json!({"id": "a", "endpoint": "http://127.0.0.1:9/", "event_types": ["x"], "secrets": [{"value": nested}]}),
            "secrets[0]",
        ),
    ];
    for (spec, field) in cases {
        let body = serde_json::to_vec(&spec).unwrap();
        let response = env
            .api(Method::POST, "/v1/subscriptions", Auth::Admin, Some(body))
            .await;
        assert_eq!(
            response.status,
            StatusCode::BAD_REQUEST,
            "{}",
            response.text
        );
        assert_eq!(response.error_field(), Some(field), "{}", response.text);
        assert_hidden("the error response", &response.text, &secrets);
    }
    // A patch with a malformed secret, on a subscription that exists.
    env.subscribe(json!({"id": "ok", "endpoint": "http://127.0.0.1:9/", "event_types": ["x"], "verify": false}))
        .await;
    let (status, body) = env
        .patch_subscription("ok", json!({"secrets": [bad_whsec]}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_hidden("the patch error", &body.to_string(), &secrets);
    assert_hidden("the captured logs", &logs::captured(), &secrets);
    env.cleanup().await;
}
