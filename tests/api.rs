//! The subscription management API end to end: create, read, list, update
//! and delete, with the broker and delivery following each change live.

use postline_tests::events::event;
use postline_tests::receiver::ids;
use postline_tests::sub_id;
use postline_tests::{Receiver, TestEnv, DEADLINE, QUIET};
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

/// Subscription changes reach running services asynchronously (Redis
/// pub/sub); this is the pause given to them, not a speed requirement.
const PROPAGATION: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_crud_round_trip_follows_each_change_live() {
    let env = TestEnv::start().await;
    let first = Receiver::start().await;
    let second = Receiver::start().await;
    let control = Receiver::start().await;
    let spec = json!({
        "id": "acme_us",
        "endpoint": first.url(),
        "event_types": ["order.*"],
        "filters": [{"pointer": "/payload/org", "in": ["acme"]}],
        "headers": {"API-Version": "2.0"},
        "success": "200",
        "timeout_ms": 5000,
    });

    // Create.
    let (status, created) = env.create_subscription(spec.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["id"], "acme_us");
    assert_eq!(created["endpoint"], first.url());
    assert_eq!(created["event_types"], json!(["order.*"]));
    assert_eq!(
        created["filters"],
        json!([{"pointer": "/payload/org", "in": ["acme"]}])
    );
    assert_eq!(created["headers"], json!({"API-Version": "2.0"}));
    assert_eq!(created["body"], "envelope", "default body mode");
    assert_eq!(created["order"], "strict", "default order mode");
    assert_eq!(created["status"], "active", "default status");
    assert_eq!(created["success"], "200");
    assert_eq!(created["timeout_ms"], 5000);
    assert_eq!(created["secrets_count"], 0);
    let queue = env.topology.subscription_queue(&sub_id("acme_us"));
    assert!(
        env.queue_exists(&queue).await,
        "creating declares the queue"
    );

    // A second create with the same id conflicts and changes nothing.
    let mut again = spec.clone();
    again["endpoint"] = json!(second.url());
    let (status, body) = env.create_subscription(again).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["field"], "id", "{body}");

    // A control subscription that also gets every order event.
    env.subscribe(json!({"id": "control", "endpoint": control.url(), "event_types": ["order.*"]}))
        .await;

    // Get and list.
    let (status, got) = env.get_subscription("acme_us").await;
    assert_eq!(status, StatusCode::OK, "{got}");
    for field in [
        "id",
        "endpoint",
        "event_types",
        "filters",
        "headers",
        "body",
        "order",
        "status",
        "success",
        "timeout_ms",
        "created_at",
    ] {
        assert_eq!(got[field], created[field], "get shows the same {field}");
    }
    assert_eq!(
        got["endpoint"],
        first.url(),
        "the conflicting create changed nothing"
    );
    let (status, list) = env.list_subscriptions().await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let listed: Vec<&str> = list["subscriptions"]
        .as_array()
        .expect("subscriptions array")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(listed, vec!["acme_us", "control"], "{list}");
    let (status, body) = env.get_subscription("nobody").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Events flow to the first endpoint.
    env.send_event(event("e-1", "order.created", json!({"org": "acme"})))
        .await;
    control.wait_for(1, DEADLINE).await;
    let got = first.wait_for(1, DEADLINE).await;
    assert_eq!(ids(&got), ["e-1"]);
    assert_eq!(got[0].header("api-version"), Some("2.0"));

    // Patch: a new endpoint, used for the next event, with no restart.
    let (status, patched) = env
        .patch_subscription(
            "acme_us",
            json!({"endpoint": second.url_for("/v2"), "headers": {"API-Version": "3.0"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["endpoint"], second.url_for("/v2"));
    assert_eq!(
        patched["event_types"],
        json!(["order.*"]),
        "untouched fields stay"
    );
    assert_eq!(patched["created_at"], created["created_at"]);
    let (_, got) = env.get_subscription("acme_us").await;
    assert_eq!(
        got["endpoint"],
        second.url_for("/v2"),
        "the change is stored"
    );
    tokio::time::sleep(PROPAGATION).await;
    env.send_event(event("e-2", "order.updated", json!({"org": "acme"})))
        .await;
    let got = second.wait_for(1, DEADLINE).await;
    assert_eq!(ids(&got), ["e-2"]);
    assert_eq!(got[0].path, "/v2");
    assert_eq!(got[0].header("api-version"), Some("3.0"));
    control.wait_for(2, DEADLINE).await;
    first.assert_no_more(QUIET).await;
    assert_eq!(
        ids(&first.requests()),
        ["e-1"],
        "the old endpoint gets nothing more"
    );

    // Patches are validated too.
    let (status, body) = env
        .patch_subscription("acme_us", json!({"endpoint": "not a url"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "endpoint", "{body}");
    let (status, body) = env
        .patch_subscription("acme_us", json!({"colour": "red"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "colour", "{body}");
    let (status, body) = env
        .patch_subscription("nobody", json!({"timeout_ms": 100}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (_, got) = env.get_subscription("acme_us").await;
    assert_eq!(
        got["endpoint"],
        second.url_for("/v2"),
        "refused patches change nothing"
    );

    // Delete: the subscription and its queue go, and delivery stops.
    let (status, body) = env.delete_subscription("acme_us").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["deleted"], true, "{body}");
    assert!(!env.queue_exists(&queue).await, "the queue {queue} is gone");
    let (status, _) = env.get_subscription("acme_us").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = env.list_subscriptions().await;
    assert_eq!(
        list["subscriptions"].as_array().map(Vec::len),
        Some(1),
        "{list}"
    );
    let (status, body) = env.delete_subscription("acme_us").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a second delete: {body}");

    tokio::time::sleep(PROPAGATION).await;
    let (status, body) = env
        .post_event(event("e-3", "order.created", json!({"org": "acme"})))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let got = control.wait_for(3, DEADLINE).await;
    assert_eq!(ids(&got), ["e-1", "e-2", "e-3"]);
    second.assert_no_more(QUIET).await;
    assert_eq!(
        ids(&second.requests()),
        ["e-2"],
        "nothing reaches a deleted subscription"
    );
    assert!(
        !env.queue_exists(&queue).await,
        "nothing re-created the queue"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_subscription_queues_events_until_resumed() {
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    env.subscribe(json!({
        "id": "later",
        "endpoint": receiver.url(),
        "event_types": ["order.*"],
        "status": "paused",
    }))
    .await;
    for i in 0..3 {
        env.send_event(event(&format!("q-{i}"), "order.created", json!({})))
            .await;
    }
    let queue = env.topology.subscription_queue(&sub_id("later"));
    env.wait_queue_depth(&queue, 3).await;
    receiver.assert_no_more(QUIET).await;
    assert_eq!(receiver.count(), 0, "nothing is delivered while paused");
    let (status, shown) = env.get_subscription("later").await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(
        shown["backlog"], 3,
        "the API reports the queued events: {shown}"
    );

    let (status, body) = env
        .patch_subscription("later", json!({"status": "active"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "active");
    let got = receiver.expect_exactly(3, DEADLINE, QUIET).await;
    assert_eq!(ids(&got), ["q-0", "q-1", "q-2"]);
    env.cleanup().await;
}
