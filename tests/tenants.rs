//! Tenants, end to end over the API: two partners with overlapping event
//! types and subscription ids of the same shape each get only their own
//! events (over HTTP and AMQP intake), see and change only their own
//! subscriptions, stay within their scopes, allowed types, limits and the
//! operator-only settings; tokens expire and die with their client; the
//! token endpoint answers RFC 6749's errors; no secret is ever logged or
//! shown again.

use postline_tests::events::event;
use postline_tests::logs;
use postline_tests::receiver::ids;
use postline_tests::sub_id;
use postline_tests::tenants::Client;
use postline_tests::{wait, Receiver, TestEnv, DEADLINE, QUIET};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

/// A token request (form, HTTP Basic pair, content type) and the status and error it must get.
type TokenCase<'a> = (
    Vec<(&'a str, &'a str)>,
    Option<(&'a str, &'a str)>,
    Option<&'a str>,
    StatusCode,
    &'a str,
);

const ALL_SCOPES: [&str; 3] = [
    "subscriptions:read",
    "subscriptions:write",
    "deliveries:replay",
];

fn tenant(id: &str, types: &[&str], max: u32) -> Value {
    json!({ "id": id, "name": format!("{id} Ltd"), "allowed_event_types": types, "max_subscriptions": max })
}

fn with_tenant(mut event: Value, tenant: &str) -> Value {
    event["tenant"] = json!(tenant);
    event
}

fn sorted(ids: Vec<String>) -> BTreeSet<String> {
    ids.into_iter().collect()
}

/// Two tenants with a client each, and a token each.
async fn two_tenants(env: &TestEnv) -> ((Client, String), (Client, String)) {
    env.create_tenant_ok(tenant("acme", &["order.*"], 5)).await;
    env.create_tenant_ok(tenant("globex", &["order.*"], 5))
        .await;
    let acme = env.create_client_ok("acme", &ALL_SCOPES).await;
    let globex = env.create_client_ok("globex", &ALL_SCOPES).await;
    let acme_token = env.token_ok(&acme, None).await;
    let globex_token = env.token_ok(&globex, None).await;
    ((acme, acme_token), (globex, globex_token))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_receives_only_its_own_events_over_http_and_amqp() {
    let env = TestEnv::start().await;
    let ((_, acme), (_, globex)) = two_tenants(&env).await;
    let (to_acme, to_globex, to_operator) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    // Same event types, ids of the same shape, and a filter that would match everything.
    for (token, id, receiver) in [
        (&acme, "acme-orders", &to_acme),
        (&globex, "globex-orders", &to_globex),
    ] {
        let created = env
            .create_subscription_as(
                token,
                json!({"id": id, "endpoint": receiver.url(), "event_types": ["order.*"],
                       "filters": [{"pointer": "/payload/n", "exists": true}]}),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        assert_eq!(
            created.json["tenant"],
            id.split('-').next().unwrap_or_default()
        );
    }
    env.subscribe(
        json!({"id": "operator-orders", "endpoint": to_operator.url(), "event_types": ["order.*"]}),
    )
    .await;

    // Over HTTP.
    env.send_event(with_tenant(
        event("a-1", "order.created", json!({"n": 1})),
        "acme",
    ))
    .await;
    env.send_event(with_tenant(
        event("g-1", "order.created", json!({"n": 1})),
        "globex",
    ))
    .await;
    env.send_event(event("o-1", "order.created", json!({"n": 1})))
        .await;
    // Over AMQP.
    env.publish_events_amqp(&[
        with_tenant(event("a-2", "order.updated", json!({"n": 2})), "acme"),
        with_tenant(event("g-2", "order.updated", json!({"n": 2})), "globex"),
        event("o-2", "order.updated", json!({"n": 2})),
        // A tenant nobody has: goes nowhere.
        with_tenant(event("x-1", "order.updated", json!({"n": 3})), "initech"),
    ])
    .await;

    let got_acme = to_acme.expect_exactly(2, DEADLINE, QUIET).await;
    let got_globex = to_globex.expect_exactly(2, DEADLINE, QUIET).await;
    let got_operator = to_operator.expect_exactly(2, DEADLINE, QUIET).await;
    assert_eq!(
        sorted(ids(&got_acme)),
        sorted(vec!["a-1".into(), "a-2".into()])
    );
    assert_eq!(
        sorted(ids(&got_globex)),
        sorted(vec!["g-1".into(), "g-2".into()])
    );
    assert_eq!(
        sorted(ids(&got_operator)),
        sorted(vec!["o-1".into(), "o-2".into()])
    );
    for request in &got_acme {
        assert_eq!(
            request.json()["tenant"],
            "acme",
            "the envelope names the tenant"
        );
    }
    for request in &got_operator {
        assert!(
            request.json().get("tenant").is_none(),
            "untenanted events carry no tenant"
        );
    }

    // Idempotency stays global: another tenant cannot reuse an accepted id.
    let (status, body) = env
        .post_event(with_tenant(
            event("a-1", "order.created", json!({"n": 9})),
            "globex",
        ))
        .await;
    assert!(status.is_success(), "{body}");
    to_globex.assert_no_more(QUIET).await;

    // A malformed tenant is refused, naming the field.
    let (status, body) = env
        .post_event(with_tenant(
            event("bad-1", "order.created", json!({})),
            "Not A Tenant",
        ))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "tenant", "{body}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_sees_changes_and_deletes_only_its_own_subscriptions() {
    let env = TestEnv::start().await;
    let ((acme_client, acme), (_, globex)) = two_tenants(&env).await;
    let receiver = Receiver::start().await;
    for (token, id) in [(&acme, "acme-orders"), (&globex, "globex-orders")] {
        let created = env
            .create_subscription_as(
                token,
                json!({"id": id, "endpoint": receiver.url(), "event_types": ["order.*"]}),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    }

    // Lists show only one's own; the operator sees both and can filter.
    let listed = |response: &postline_tests::api::ApiResponse| -> Vec<String> {
        response.json["subscriptions"]
            .as_array()
            .map(|subs| {
                subs.iter()
                    .filter_map(|s| s["id"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mine = env
        .call_as(&acme, Method::GET, "/v1/subscriptions", None)
        .await;
    assert_eq!(listed(&mine), ["acme-orders"], "{}", mine.text);
    let all = env
        .call_as(env.admin_token(), Method::GET, "/v1/subscriptions", None)
        .await;
    assert_eq!(listed(&all), ["acme-orders", "globex-orders"]);
    let filtered = env
        .call_as(
            env.admin_token(),
            Method::GET,
            "/v1/subscriptions?tenant=globex",
            None,
        )
        .await;
    assert_eq!(listed(&filtered), ["globex-orders"]);

    // Another tenant's subscription is a 404 for every route, like a missing one.
    let theirs = "/v1/subscriptions/globex-orders";
    let attempts = [
        (Method::GET, theirs.to_string(), None),
        (
            Method::PATCH,
            theirs.to_string(),
            Some(json!({"status": "paused"})),
        ),
        (Method::DELETE, theirs.to_string(), None),
        (Method::GET, format!("{theirs}/state"), None),
        (Method::GET, format!("{theirs}/attempts"), None),
        (Method::GET, format!("{theirs}/parked"), None),
        (Method::POST, format!("{theirs}/retry"), None),
        (Method::POST, format!("{theirs}/enable"), None),
        (Method::POST, format!("{theirs}/parked/replay"), None),
    ];
    for (method, path, body) in attempts {
        let response = env.call_as(&acme, method.clone(), &path, body).await;
        assert_eq!(
            response.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {}",
            response.text
        );
        assert_eq!(
            response.json["error"]["message"], "subscription globex-orders does not exist",
            "the same 404 as for a missing id"
        );
    }
    let (_, still) = env.get_subscription("globex-orders").await;
    assert_eq!(still["status"], "active", "nothing was changed");

    // One's own: pause, read the state, delete.
    let paused = env
        .call_as(
            &acme,
            Method::PATCH,
            "/v1/subscriptions/acme-orders",
            Some(json!({"status": "paused"})),
        )
        .await;
    assert_eq!(paused.status, StatusCode::OK, "{}", paused.text);
    assert_eq!(paused.json["status"], "paused");
    let state = env
        .call_as(
            &acme,
            Method::GET,
            "/v1/subscriptions/acme-orders/state",
            None,
        )
        .await;
    assert_eq!(state.status, StatusCode::OK, "{}", state.text);

    // The tenant rules, each naming its field.
    let refused = [
        (
            json!({"id": "acme-invoices", "endpoint": receiver.url(), "event_types": ["invoice.*"]}),
            "event_types[0]",
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"id": "acme-slow", "endpoint": receiver.url(), "event_types": ["order.*"], "timeout_ms": 30000}),
            "timeout_ms",
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"id": "acme-long", "endpoint": receiver.url(), "event_types": ["order.*"], "retry": {"give_up_after_ms": 2_592_000_000u64}}),
            "retry.give_up_after_ms",
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"id": "acme-eager", "endpoint": receiver.url(), "event_types": ["order.*"], "interval_ms": 1000}),
            "interval_ms",
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"id": "acme-spy", "endpoint": receiver.url(), "event_types": ["order.*"], "tenant": "globex"}),
            "tenant",
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (spec, field, status) in refused {
        let response = env.create_subscription_as(&acme, spec.clone()).await;
        assert_eq!(response.status, status, "{spec}: {}", response.text);
        assert_eq!(
            response.error_field(),
            Some(field),
            "{spec}: {}",
            response.text
        );
    }
    let patched = env
        .call_as(
            &acme,
            Method::PATCH,
            "/v1/subscriptions/acme-orders",
            Some(json!({"event_types": ["user.*"]})),
        )
        .await;
    assert_eq!(
        patched.error_field(),
        Some("event_types[0]"),
        "{}",
        patched.text
    );
    let patched = env
        .call_as(
            &acme,
            Method::PATCH,
            "/v1/subscriptions/acme-orders",
            Some(json!({"tenant": "globex"})),
        )
        .await;
    assert_eq!(patched.error_field(), Some("tenant"), "{}", patched.text);

    // max_subscriptions.
    env.api(
        Method::PATCH,
        "/v1/tenants/acme",
        postline_tests::api::Auth::Admin,
        Some(br#"{"max_subscriptions":1}"#.to_vec()),
    )
    .await;
    let over = env
        .create_subscription_as(
            &acme,
            json!({"id": "acme-more", "endpoint": receiver.url(), "event_types": ["order.*"]}),
        )
        .await;
    assert_eq!(over.status, StatusCode::BAD_REQUEST, "{}", over.text);
    assert_eq!(
        over.error_field(),
        Some("max_subscriptions"),
        "{}",
        over.text
    );

    // A token without subscriptions:write can read but not create or change.
    let reader = env.token_ok(&acme_client, Some("subscriptions:read")).await;
    let read = env
        .call_as(&reader, Method::GET, "/v1/subscriptions/acme-orders", None)
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);
    for (method, path, body) in [
        (
            Method::POST,
            "/v1/subscriptions",
            Some(json!({"id": "acme-x", "endpoint": receiver.url(), "event_types": ["order.*"]})),
        ),
        (
            Method::PATCH,
            "/v1/subscriptions/acme-orders",
            Some(json!({"status": "active"})),
        ),
        (Method::DELETE, "/v1/subscriptions/acme-orders", None),
        (Method::POST, "/v1/subscriptions/acme-orders/retry", None),
    ] {
        let response = env.call_as(&reader, method.clone(), path, body).await;
        assert_eq!(
            response.status,
            StatusCode::FORBIDDEN,
            "{method} {path}: {}",
            response.text
        );
        assert_eq!(
            response.error_code(),
            Some("insufficient_scope"),
            "{}",
            response.text
        );
    }
    // Tenant tokens cannot manage tenants.
    let response = env.call_as(&acme, Method::GET, "/v1/tenants", None).await;
    assert_eq!(response.status, StatusCode::FORBIDDEN, "{}", response.text);

    // Deleting one's own works and removes its queue; the other's stays.
    let deleted = env
        .call_as(&acme, Method::DELETE, "/v1/subscriptions/acme-orders", None)
        .await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.text);
    assert!(
        !env.queue_exists(&env.topology.subscription_queue(&sub_id("acme-orders")))
            .await
    );
    assert!(
        env.queue_exists(&env.topology.subscription_queue(&sub_id("globex-orders")))
            .await
    );

    // The audit trail: who, what, which fields, never a value.
    let trail = env
        .call_as(
            env.admin_token(),
            Method::GET,
            "/v1/tenants/acme/audit",
            None,
        )
        .await;
    assert_eq!(trail.status, StatusCode::OK, "{}", trail.text);
    let entries = trail.json["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let actions: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for action in [
        "subscription.create",
        "subscription.update",
        "subscription.delete",
        "tenant.update",
        "client.create",
    ] {
        assert!(
            actions.contains(&action),
            "{action} audited: {}",
            trail.text
        );
    }
    let create = entries
        .iter()
        .find(|e| e["action"] == "subscription.create")
        .expect("create entry");
    assert_eq!(create["actor"], format!("client:{}", acme_client.id));
    assert_eq!(create["resource"], "acme-orders");
    assert!(
        create["fields"]
            .as_array()
            .is_some_and(|f| f.contains(&json!("endpoint"))),
        "{create}"
    );
    assert!(
        !trail.text.contains(&receiver.url()),
        "values are never audited: {}",
        trail.text
    );
    let theirs = env
        .call_as(&acme, Method::GET, "/v1/tenants/globex/audit", None)
        .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND, "{}", theirs.text);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_revoked_and_suspended_credentials_are_refused() {
    let mut builder = TestEnv::builder();
    builder.ingest.oauth_token_ttl = Duration::from_secs(1);
    let env = builder.start().await;
    env.create_tenant_ok(tenant("acme", &["order.*"], 5)).await;
    let client = env.create_client_ok("acme", &ALL_SCOPES).await;
    let receiver = Receiver::start().await;

    // Expiry: the token works, then is refused once its second is over.
    let token = env.token_ok(&client, None).await;
    let response = env
        .call_as(&token, Method::GET, "/v1/subscriptions", None)
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    wait::until("the 1 s token to expire", DEADLINE, || {
        let call = env.call_as(&token, Method::GET, "/v1/subscriptions", None);
        async move {
            let response = call.await;
            if response.status == StatusCode::UNAUTHORIZED {
                Ok(())
            } else {
                Err(response.status.to_string())
            }
        }
    })
    .await;

    // Revocation: deleting the client kills its live tokens at once.
    let token = env.token_ok(&client, None).await;
    let created = env
        .create_subscription_as(
            &token,
            json!({"id": "acme-orders", "endpoint": receiver.url(), "event_types": ["order.*"]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let revoked = env
        .api(
            Method::DELETE,
            &format!("/v1/tenants/acme/clients/{}", client.id),
            postline_tests::api::Auth::Admin,
            None,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.text);
    let response = env
        .call_as(&token, Method::GET, "/v1/subscriptions", None)
        .await;
    assert_eq!(
        response.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        response.text
    );
    let answer = env
        .token_request(
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &client.id),
                ("client_secret", &client.secret),
            ],
            None,
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.text);
    assert_eq!(answer.json["error"], "invalid_client");

    // Suspension pauses the tenant's subscriptions and refuses its tokens.
    let second = env.create_client_ok("acme", &ALL_SCOPES).await;
    let token = env.token_ok(&second, None).await;
    let suspended = env
        .api(
            Method::PATCH,
            "/v1/tenants/acme",
            postline_tests::api::Auth::Admin,
            Some(br#"{"status":"suspended"}"#.to_vec()),
        )
        .await;
    assert_eq!(suspended.status, StatusCode::OK, "{}", suspended.text);
    assert_eq!(
        suspended.json["paused_subscriptions"],
        json!(["acme-orders"])
    );
    let (_, subscription) = env.get_subscription("acme-orders").await;
    assert_eq!(subscription["status"], "paused");
    let response = env
        .call_as(&token, Method::GET, "/v1/subscriptions", None)
        .await;
    assert_eq!(response.status, StatusCode::FORBIDDEN, "{}", response.text);
    assert_eq!(response.error_code(), Some("tenant_suspended"));

    // Deleting the tenant deletes its subscriptions with their queues.
    let deleted = env
        .api(
            Method::DELETE,
            "/v1/tenants/acme",
            postline_tests::api::Auth::Admin,
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.text);
    assert_eq!(
        deleted.json["subscriptions_deleted"],
        json!(["acme-orders"])
    );
    let (status, _) = env.get_subscription("acme-orders").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        !env.queue_exists(&env.topology.subscription_queue(&sub_id("acme-orders")))
            .await
    );
    let response = env
        .call_as(&token, Method::GET, "/v1/subscriptions", None)
        .await;
    assert_eq!(
        response.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        response.text
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_endpoint_answers_as_rfc_6749_says_and_slows_down_guessing() {
    let env = TestEnv::builder().without_delivery().start().await;
    env.create_tenant_ok(tenant("acme", &["order.*"], 5)).await;
    let client = env
        .create_client_ok("acme", &["subscriptions:read", "subscriptions:write"])
        .await;
    let grant = ("grant_type", "client_credentials");
    let (id, secret) = (client.id.as_str(), client.secret.as_str());

    // Body authentication, and HTTP Basic, both work; the answer is not cacheable.
    let answer = env
        .token_request(
            &[grant, ("client_id", id), ("client_secret", secret)],
            None,
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.json["token_type"], "Bearer");
    assert_eq!(answer.json["expires_in"], 3600);
    assert_eq!(
        answer.json["scope"],
        "subscriptions:read subscriptions:write"
    );
    assert_eq!(
        answer
            .headers
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let first_token = answer.json["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let answer = env
        .token_request(
            &[grant, ("scope", "subscriptions:read")],
            Some((id, secret)),
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.json["scope"], "subscriptions:read", "narrowed");

    // The error cases.
    let cases: Vec<TokenCase> = vec![
        (
            vec![grant],
            None,
            None,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            vec![("client_id", id), ("client_secret", secret)],
            None,
            None,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            vec![grant, ("client_id", id), ("client_secret", secret)],
            None,
            Some("application/json"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            vec![grant, grant, ("client_id", id), ("client_secret", secret)],
            None,
            None,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            vec![grant, ("client_id", id)],
            Some((id, secret)),
            None,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            vec![
                ("grant_type", "password"),
                ("client_id", id),
                ("client_secret", secret),
            ],
            None,
            None,
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        (
            vec![grant, ("scope", "deliveries:replay")],
            Some((id, secret)),
            None,
            StatusCode::BAD_REQUEST,
            "invalid_scope",
        ),
        (
            vec![grant, ("scope", "admin")],
            Some((id, secret)),
            None,
            StatusCode::BAD_REQUEST,
            "invalid_scope",
        ),
        (
            vec![grant],
            Some((id, "wrong")),
            None,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            vec![grant],
            Some(("plc_nobody", "wrong")),
            None,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
    ];
    for (form, basic, content_type, status, error) in cases {
        let answer = env.token_request(&form, basic, content_type).await;
        assert_eq!(answer.status, status, "{form:?} {basic:?}: {}", answer.text);
        assert_eq!(
            answer.json["error"], error,
            "{form:?} {basic:?}: {}",
            answer.text
        );
        if status == StatusCode::UNAUTHORIZED {
            assert!(
                answer.headers.contains_key("www-authenticate"),
                "401 names the scheme"
            );
        }
    }

    // Guessing: after a few failures the client id must wait, even with the right secret.
    let mut slowed = None;
    for _ in 0..10 {
        let answer = env.token_request(&[grant], Some((id, "guess")), None).await;
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            slowed = Some(answer);
            break;
        }
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.text);
    }
    assert!(slowed.is_some(), "repeated failures are slowed down");
    let answer = env.token_request(&[grant], Some((id, secret)), None).await;
    assert_eq!(
        answer.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        answer.text
    );
    // ...and is served again once the wait is over.
    let form = [grant];
    wait::until("the client's wait to end", DEADLINE, || {
        let request = env.token_request(&form, Some((id, secret)), None);
        async move {
            let answer = request.await;
            if answer.status == StatusCode::OK {
                Ok(())
            } else {
                Err(answer.text)
            }
        }
    })
    .await;

    // The secret and tokens appear in no later answer and in no log line.
    let clients = env
        .api(
            Method::GET,
            "/v1/tenants/acme/clients",
            postline_tests::api::Auth::Admin,
            None,
        )
        .await;
    assert_eq!(clients.status, StatusCode::OK);
    let audit = env
        .api(
            Method::GET,
            "/v1/tenants/acme/audit",
            postline_tests::api::Auth::Admin,
            None,
        )
        .await;
    for shown in [&clients.text, &audit.text] {
        assert!(!shown.contains(secret), "the secret is shown only once");
    }
    for needle in [secret, first_token.as_str(), env.admin_token()] {
        assert!(
            logs::lines_containing(needle).is_empty(),
            "a secret leaked into the logs"
        );
    }
    assert!(!logs::captured().is_empty(), "log capture works");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_carries_tenants_and_clients_and_an_import_brings_them_back_working() {
    let env = TestEnv::start().await;
    let receiver = Receiver::start().await;
    let ((acme, acme_token), _) = two_tenants(&env).await;
    let created = env
        .create_subscription_as(
            &acme_token,
            json!({"id": "acme-kept", "endpoint": receiver.url(), "event_types": ["order.*"]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let export = env
        .api(
            Method::GET,
            "/v1/admin/export",
            postline_tests::api::Auth::Admin,
            None,
        )
        .await;
    assert_eq!(export.status, StatusCode::OK, "{}", export.text);
    assert!(
        !export.text.contains(&acme.secret),
        "no client secret in an export"
    );
    let tenants: BTreeSet<&str> = export.json["tenants"]
        .as_array()
        .expect("tenants in the export")
        .iter()
        .filter_map(|t| t["tenant"]["id"].as_str())
        .collect();
    assert_eq!(tenants, BTreeSet::from(["acme", "globex"]));

    // The tenant goes (with its clients, tokens and subscriptions)...
    let deleted = env
        .api(
            Method::DELETE,
            "/v1/tenants/acme",
            postline_tests::api::Auth::Admin,
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.text);
    let refused = env
        .token_request(
            &[("grant_type", "client_credentials")],
            Some((&acme.id, &acme.secret)),
            None,
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.text);
    // ...and the import brings it back: the same client secret gets a token.
    let imported = env
        .api(
            Method::POST,
            "/v1/admin/import?force=true",
            postline_tests::api::Auth::Admin,
            Some(export.text.into_bytes()),
        )
        .await;
    assert_eq!(imported.status, StatusCode::OK, "{}", imported.text);
    assert_eq!(imported.json["tenants"], 2, "{}", imported.text);
    let token = env.token_ok(&acme, None).await;
    let shown = env
        .call_as(&token, Method::GET, "/v1/subscriptions/acme-kept", None)
        .await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.text);
    env.cleanup().await;
}
