//! What a receiver tells Postline, and what an operator tells it about a
//! receiver: `Retry-After` on 429/503 is honoured (strict order held while
//! waiting), `410 Gone` disables at once, a rate limit and `max_in_flight`
//! bound the traffic, and a rotated signing secret keeps the old one
//! signing only for its grace period.

use postline_delivery::decision::retry_after::RETRY_AFTER_STEPS_MS;
use postline_tests::events::{assert_sequence, event, ids_of, numbered};
use postline_tests::receiver::{describe, ids};
use postline_tests::signatures::{assert_standard_webhooks, new_whsec};
use postline_tests::sub_id;
use postline_tests::{wait, Receiver, TestEnv, DEADLINE, QUIET};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_is_retried_no_sooner_than_asked_and_order_holds() {
    let env = TestEnv::start().await;
    for step in RETRY_AFTER_STEPS_MS {
        env.track_queue(&env.topology.delay_queue(step));
    }
    let receiver = Receiver::start().await;
    receiver.send_retry_after(Some("2"));
    receiver.fail_next(1, 429);
    env.subscribe(
        json!({"id": "polite", "endpoint": receiver.url(), "event_types": ["vehicle.*"]}),
    )
    .await;
    let events = numbered("ra", "vehicle.moved", 3);
    env.publish_events_amqp(&events).await;
    receiver.wait_for_successes(3, DEADLINE).await;
    let all = receiver.assert_no_more(QUIET).await;
    // The first attempt was refused; the next is at least 2 s later, and
    // nothing overtook the waiting event.
    assert_eq!(all[0].status, 429, "{}", describe(&all));
    assert_eq!(
        all[1].event_id().as_deref(),
        Some("ra-00000"),
        "{}",
        describe(&all)
    );
    let waited = all[1].at - all[0].at;
    assert!(
        waited >= Duration::from_secs(2),
        "retried after {waited:?}: {}",
        describe(&all)
    );
    assert_sequence(
        "successful deliveries",
        &ids(&receiver.successes()),
        &ids_of(&events),
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_gone_disables_the_subscription_at_once_with_the_reason() {
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    receiver.answer_always(410);
    env.subscribe(json!({"id": "gone", "endpoint": receiver.url(), "event_types": ["vehicle.*"]}))
        .await;
    env.publish_events_amqp(&numbered("g", "vehicle.moved", 3))
        .await;
    let state = env
        .wait_delivery_state("gone", "disabled", |state| state["status"] == "disabled")
        .await;
    let reason = state["disabled"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("410"), "{state}");
    assert_eq!(state["disabled"]["event_id"], "g-00000", "{state}");
    assert_eq!(state["counters"]["gone"], 1, "{state}");
    // One attempt, no retries: the receiver said it is gone for good.
    let all = receiver.assert_no_more(QUIET).await;
    assert_eq!(ids(&all), ["g-00000"], "{}", describe(&all));
    // The event is kept at the head of the backlog, the rest behind it.
    let queue = env.topology.subscription_queue(&sub_id("gone"));
    env.wait_queue_depth(&queue, 3).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_is_an_ordinary_failure_when_told_to_retry() {
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    receiver.fail_next(2, 410);
    env.subscribe(json!({
        "id": "retrying",
        "endpoint": receiver.url(),
        "event_types": ["vehicle.*"],
        "retry": {"immediate_retries": 3, "immediate_pause_ms": 20, "on_gone": "retry"},
    }))
    .await;
    env.send_event(event("r-1", "vehicle.moved", json!({})))
        .await;
    receiver.wait_for_successes(1, DEADLINE).await;
    let all = receiver.assert_no_more(QUIET).await;
    assert_eq!(all.len(), 3, "{}", describe(&all));
    let state = env.delivery_state("retrying").await;
    assert_eq!(state["status"], "active", "{state}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_of_20_per_second_spreads_100_events_and_no_second_sees_more() {
    const COUNT: usize = 100;
    const RATE: usize = 20;
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    env.subscribe(json!({
        "id": "paced",
        "endpoint": receiver.url(),
        "event_types": ["vehicle.*"],
        "rate_limit": {"per_second": RATE},
    }))
    .await;
    let events = numbered("p", "vehicle.moved", COUNT);
    env.publish_events_amqp(&events).await;
    let got = receiver
        .wait_for_successes(COUNT, Duration::from_secs(60))
        .await;
    let span = got[COUNT - 1].at - got[0].at;
    // 99 gaps of 50 ms: 4.95 s at the limit.
    assert!(
        span >= Duration::from_millis(4_500),
        "100 events in {span:?}"
    );
    // Any RATE + 1 consecutive arrivals span a full second (less the
    // receiver's own time-stamping jitter), so no one-second window holds
    // more than RATE.
    for window in got.windows(RATE + 1) {
        let spread = window[RATE].at - window[0].at;
        assert!(
            spread >= Duration::from_millis(980),
            "{} requests within {spread:?}",
            RATE + 1
        );
    }
    assert_sequence("deliveries", &ids(&got), &ids_of(&events));
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_bounds_concurrent_posts_of_an_unordered_subscription() {
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(100));
    env.subscribe(json!({
        "id": "bounded",
        "endpoint": receiver.url(),
        "event_types": ["vehicle.*"],
        "order": "none",
        "max_in_flight": 3,
    }))
    .await;
    env.publish_events_amqp(&numbered("b", "vehicle.moved", 30))
        .await;
    receiver.wait_for_successes(30, DEADLINE).await;
    let most = receiver.max_in_flight();
    assert!((2..=3).contains(&most), "{most} POSTs at once");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_signs_beside_the_new_one_until_its_grace_ends() {
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    let old = new_whsec();
    env.subscribe(json!({
        "id": "rotating",
        "endpoint": receiver.url(),
        "event_types": ["vehicle.*"],
        "secrets": [old],
    }))
    .await;
    let response = env
        .api(
            Method::POST,
            "/v1/subscriptions/rotating/secrets/rotate",
            postline_tests::api::Auth::Admin,
            Some(br#"{"grace_secs": 2}"#.to_vec()),
        )
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    let new = response.json["secret"]
        .as_str()
        .expect("the generated secret")
        .to_string();
    assert!(new.starts_with("whsec_"));
    assert_eq!(response.json["secrets_count"], 1);
    let until = response.json["retiring_secrets_until"][0]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .expect("the old secret's end of grace");
    assert!(
        !response.text.contains(&old),
        "the old secret is never shown"
    );
    // The view never shows the secret again.
    let (_, shown) = env.get_subscription("rotating").await;
    assert!(!shown.to_string().contains(&new), "{shown}");

    env.send_event(event("during", "vehicle.moved", json!({})))
        .await;
    let during = receiver.wait_for_successes(1, DEADLINE).await;
    assert_standard_webhooks(&during[0], "during", &[&new, &old]);

    wait::until("the grace is over", DEADLINE, || async {
        if chrono::Utc::now() > until {
            Ok(())
        } else {
            Err(format!("grace ends at {until}"))
        }
    })
    .await;
    env.send_event(event("after", "vehicle.moved", json!({})))
        .await;
    let after = receiver.wait_for_successes(2, DEADLINE).await;
    assert_standard_webhooks(&after[1], "after", &[&new]);
    let (_, shown) = env.get_subscription("rotating").await;
    assert_eq!(shown["retiring_secrets_until"], json!([]), "{shown}");
    // Ingest's clean-up (every 30 s) drops it from the stored document too.
    let cleaned = env
        .store()
        .drop_retired_secrets(&"rotating".parse().expect("an id"))
        .await
        .expect("dropping the ended secret");
    assert!(cleaned.retiring_secrets.is_empty());
    assert_eq!(cleaned.spec.secrets[0].expose(), new);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_body_with_a_wrong_field_is_refused_naming_it() {
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    env.subscribe(json!({"id": "strict-body", "endpoint": receiver.url(), "event_types": ["a"]}))
        .await;
    for (body, field) in [
        (r#"{"secret": ""}"#, "secret"),
        (r#"{"grace_secs": -1}"#, "grace_secs"),
        (r#"{"grace_secs": 99999999999}"#, "grace_secs"),
        (r#"{"sekret": "x"}"#, "sekret"),
    ] {
        let response = env
            .api(
                Method::POST,
                "/v1/subscriptions/strict-body/secrets/rotate",
                postline_tests::api::Auth::Admin,
                Some(body.as_bytes().to_vec()),
            )
            .await;
        assert_eq!(
            response.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            response.text
        );
        assert_eq!(
            response.error_field(),
            Some(field),
            "{body}: {}",
            response.text
        );
    }
    let missing = env
        .api(
            Method::POST,
            "/v1/subscriptions/nobody/secrets/rotate",
            postline_tests::api::Auth::Admin,
            None,
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.text);
    env.cleanup().await;
}
