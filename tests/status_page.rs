//! The status page in a real headless Chromium: a partner signs in with its
//! client credentials and sees exactly its own subscriptions in their real
//! state (one blocked by a failing receiver, one paused), pauses one, retries
//! the blocked one once the receiver recovers, and the page follows each
//! change; a second partner, in via a portal link, never sees the first's
//! data; a form posted without its CSRF token is refused; the pages are
//! locked down (CSP, cookie flags); no credential or session value is logged.
//! Screenshots of every page land in `target/ui-screenshots/`.

use postline_tests::api::Auth;
use postline_tests::events::event;
use postline_tests::logs;
use postline_tests::ui::{element, screenshot, until_status, Chromedriver};
use postline_tests::{Receiver, TestEnv, DEADLINE};
use reqwest::{Method, StatusCode};
use serde_json::json;

const ALL_SCOPES: [&str; 3] = [
    "subscriptions:read",
    "subscriptions:write",
    "deliveries:replay",
];

/// A ladder whose first wait is long: only "retry now" ends the block within the test.
fn slow_ladder() -> serde_json::Value {
    json!({"immediate_retries": 0, "steps_ms": [600000], "repeat_every_ms": 600000})
}

fn row_ids(source: &str) -> Vec<String> {
    source
        .match_indices("<tr id=\"sub-")
        .filter_map(|(at, _)| {
            let rest = &source[at + "<tr id=\"sub-".len()..];
            rest.split('"').next().map(String::from)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partners_see_and_operate_only_their_own_webhooks_in_a_real_browser() {
    let env = TestEnv::start().await;
    let driver = Chromedriver::start().await;
    let base = env.ingest_url().to_string();
    for (id, types) in [("acme", ["order.*"]), ("globex", ["order.*"])] {
        env.create_tenant_ok(
            json!({"id": id, "name": format!("{id} Ltd"), "allowed_event_types": types}),
        )
        .await;
    }
    let acme = env.create_client_ok("acme", &ALL_SCOPES).await;
    let acme_token = env.token_ok(&acme, None).await;
    let (failing, healthy, idle, theirs) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    for (id, receiver, status) in [
        ("acme-blocked", &failing, "active"),
        ("acme-ok", &healthy, "active"),
        ("acme-paused", &idle, "paused"),
    ] {
        let created = env
            .create_subscription_as(
                &acme_token,
                json!({"id": id, "endpoint": receiver.url(), "event_types": ["order.*"],
                       "status": status, "retry": slow_ladder()}),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    }
    env.subscribe(json!({"id": "globex-orders", "endpoint": theirs.url(), "event_types": ["order.*"], "tenant": "globex"}))
        .await;
    failing.answer_always(503);
    for (id, tenant) in [("a-1", "acme"), ("g-1", "globex")] {
        let mut e = event(id, "order.created", json!({"n": 1}));
        e["tenant"] = json!(tenant);
        env.send_event(e).await;
    }
    healthy.wait_for_successes(1, DEADLINE).await;
    theirs.wait_for_successes(1, DEADLINE).await;
    env.wait_delivery_state("acme-blocked", "acme-blocked to be blocked", |s| {
        !s["blocked"].is_null()
    })
    .await;

    // The pages are locked down, and the sign-in cookie is HttpOnly and SameSite=Strict.
    let login = env
        .http()
        .get(format!("{base}/ui/login"))
        .send()
        .await
        .expect("GET /ui/login");
    let header = |name: &str| {
        login
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        header("content-security-policy").contains("default-src 'none'"),
        "{}",
        header("content-security-policy")
    );
    assert!(
        !header("content-security-policy").contains("unsafe"),
        "no unsafe-inline anything"
    );
    let cookie = header("set-cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let overview = env
        .http()
        .get(format!("{base}/ui/"))
        .send()
        .await
        .expect("GET /ui/");
    assert!(
        overview.url().path().ends_with("/ui/login"),
        "no session: to the sign-in page"
    );

    // Partner acme signs in with its client id and secret.
    let browser = driver.browser().await;
    browser
        .goto(&format!("{base}/ui/login"))
        .await
        .expect("goto login");
    screenshot(&browser, "01-sign-in").await;
    element(&browser, "#partner-signin input[name=client_id]")
        .await
        .send_keys(&acme.id)
        .await
        .expect("type id");
    element(&browser, "#partner-signin input[name=client_secret]")
        .await
        .send_keys(&acme.secret)
        .await
        .expect("type secret");
    element(&browser, "#partner-signin button")
        .await
        .click()
        .await
        .expect("sign in");
    element(&browser, "table#subscriptions").await;
    let overview_url = format!("{base}/ui/");
    let source = until_status(
        &browser,
        &overview_url,
        "#sub-acme-blocked .status",
        "blocked",
    )
    .await;
    screenshot(&browser, "02-partner-overview").await;
    assert_eq!(
        row_ids(&source),
        ["acme-blocked", "acme-ok", "acme-paused"],
        "exactly its own"
    );
    assert!(!source.contains("globex"), "nothing of the other tenant");
    assert!(
        source.contains("receiver answered 503"),
        "the failure is shown"
    );
    let status = |css: &'static str| {
        let browser = &browser;
        async move {
            element(browser, css)
                .await
                .attr("data-status")
                .await
                .expect("attr")
                .unwrap_or_default()
        }
    };
    assert_eq!(status("#sub-acme-ok .status").await, "active");
    assert_eq!(status("#sub-acme-paused .status").await, "paused");
    assert_eq!(
        element(&browser, "#viewer")
            .await
            .text()
            .await
            .expect("text"),
        "acme"
    );

    // It pauses acme-ok; the page and the API both say paused.
    browser
        .goto(&format!("{base}/ui/subscriptions/acme-ok"))
        .await
        .expect("goto detail");
    screenshot(&browser, "03-subscription-active").await;
    element(
        &browser,
        "form[action='/ui/subscriptions/acme-ok/pause'] button",
    )
    .await
    .click()
    .await
    .expect("pause");
    element(&browser, "#notice").await;
    assert_eq!(status("#status").await, "paused");
    screenshot(&browser, "04-subscription-paused").await;
    let (_, shown) = env.get_subscription("acme-ok").await;
    assert_eq!(shown["status"], "paused");

    // A form posted without its CSRF token is refused and changes nothing.
    browser
        .execute(
            "document.querySelectorAll('input[name=csrf]').forEach(function (e) { e.remove(); });",
            vec![],
        )
        .await
        .expect("strip the CSRF fields");
    element(
        &browser,
        "form[action='/ui/subscriptions/acme-ok/resume'] button",
    )
    .await
    .click()
    .await
    .expect("resume");
    let refusal = element(&browser, "#refused")
        .await
        .text()
        .await
        .expect("text");
    assert!(refusal.contains("CSRF"), "{refusal}");
    screenshot(&browser, "05-csrf-refused").await;
    let (_, shown) = env.get_subscription("acme-ok").await;
    assert_eq!(
        shown["status"], "paused",
        "the refused form changed nothing"
    );

    // The receiver recovers; "retry now" delivers the blocked event at once.
    failing.answer_always(200);
    let blocked_url = format!("{base}/ui/subscriptions/acme-blocked");
    until_status(&browser, &blocked_url, "#status", "blocked").await;
    screenshot(&browser, "06-subscription-blocked").await;
    element(
        &browser,
        "form[action='/ui/subscriptions/acme-blocked/retry'] button",
    )
    .await
    .click()
    .await
    .expect("retry now");
    element(&browser, "#notice").await;
    failing.wait_for_successes(1, DEADLINE).await;
    let source = until_status(&browser, &blocked_url, "#status", "active").await;
    assert!(source.contains("a-1"), "the attempts list the event");
    assert!(
        source.contains("<td>order.created</td>"),
        "the attempts list the event's type"
    );
    screenshot(&browser, "07-subscription-recovered").await;

    // A PING from the page reaches the receiver (paused or not).
    let pings = healthy.pings().len();
    browser
        .goto(&format!("{base}/ui/subscriptions/acme-ok"))
        .await
        .expect("goto detail");
    element(
        &browser,
        "form[action='/ui/subscriptions/acme-ok/ping'] button",
    )
    .await
    .click()
    .await
    .expect("ping");
    let notice = element(&browser, "#notice")
        .await
        .text()
        .await
        .expect("text");
    assert!(notice.contains("PING"), "{notice}");
    assert_eq!(healthy.pings().len(), pings + 1, "one more PING");

    // The audit trail on the page lists the changes made through it.
    browser.goto(&overview_url).await.expect("goto overview");
    let audit = element(&browser, "#audit")
        .await
        .text()
        .await
        .expect("audit text");
    assert!(
        audit.contains("delivery.retry_now") && audit.contains("subscription.update"),
        "{audit}"
    );

    // Partner globex opens a portal link in a browser of its own.
    let link = env
        .api(
            Method::POST,
            "/v1/tenants/globex/portal-link",
            Auth::Admin,
            Some(br#"{"ttl_secs":300}"#.to_vec()),
        )
        .await;
    assert_eq!(link.status, StatusCode::CREATED, "{}", link.text);
    let path = link.json["path"].as_str().expect("path").to_string();
    let portal_token = path.split("token=").nth(1).unwrap_or_default().to_string();
    let other = driver.browser().await;
    other
        .goto(&format!("{base}{path}"))
        .await
        .expect("goto portal link");
    element(&other, "#portal button")
        .await
        .click()
        .await
        .expect("open");
    element(&other, "#viewer").await;
    let source = other.source().await.expect("source");
    screenshot(&other, "08-portal-overview").await;
    assert_eq!(row_ids(&source), ["globex-orders"], "{source}");
    assert!(!source.contains("acme"), "never the other partner's data");
    other
        .goto(&format!("{base}/ui/subscriptions/acme-ok"))
        .await
        .expect("goto theirs");
    let refusal = element(&other, "#refused")
        .await
        .text()
        .await
        .expect("text");
    assert!(refusal.contains("does not exist"), "{refusal}");
    assert!(!other
        .source()
        .await
        .expect("source")
        .contains(&healthy.url()));
    screenshot(&other, "09-portal-other-tenant-refused").await;
    // The link works once.
    let third = driver.browser().await;
    third
        .goto(&format!("{base}{path}"))
        .await
        .expect("goto used link");
    element(&third, "#portal button")
        .await
        .click()
        .await
        .expect("open again");
    let refusal = element(&third, "#refused")
        .await
        .text()
        .await
        .expect("text");
    assert!(refusal.contains("used already"), "{refusal}");

    // The operator signs in with the admin token and sees both tenants.
    third
        .goto(&format!("{base}/ui/login"))
        .await
        .expect("goto login");
    element(&third, "#operator-signin input[name=token]")
        .await
        .send_keys(env.admin_token())
        .await
        .expect("type token");
    element(&third, "#operator-signin button")
        .await
        .click()
        .await
        .expect("sign in");
    element(&third, "table#tenants").await;
    let source = third.source().await.expect("source");
    screenshot(&third, "10-operator-overview").await;
    assert_eq!(
        row_ids(&source),
        ["acme-blocked", "acme-ok", "acme-paused", "globex-orders"]
    );

    // No credential, link token or session value in the logs.
    let mut secrets = vec![
        acme.secret.clone(),
        acme_token.clone(),
        portal_token,
        env.admin_token().to_string(),
    ];
    for b in [&browser, &other, &third] {
        for cookie in b.get_all_cookies().await.expect("cookies") {
            assert!(
                cookie.http_only().unwrap_or(false),
                "{} is HttpOnly",
                cookie.name()
            );
            secrets.push(cookie.value().to_string());
        }
    }
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        assert!(
            logs::lines_containing(secret).is_empty(),
            "a secret reached the logs"
        );
    }
    for b in [browser, other, third] {
        let _ = b.close().await;
    }
    env.cleanup().await;
}
