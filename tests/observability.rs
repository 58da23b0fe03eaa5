//! What operators watch: the Prometheus configuration and alert rules in
//! `deploy/prometheus` pass `promtool` (syntax and the rules' unit tests),
//! every metric the rules and the Grafana dashboard (`deploy/grafana`) name is
//! really exported by the services, the compose file runs them (and Redis
//! with AOF), and `postline_subscription_backlog` follows a subscription's queue.

use postline_tests::sub_id;
use postline_tests::{wait, Receiver, TestEnv, TokenServer, DEADLINE};
use reqwest::StatusCode;
use serde_json::json;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The workspace root.
fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `deploy/` at the workspace root.
fn deploy_dir() -> PathBuf {
    workspace_dir().join("deploy")
}

fn read_workspace_file(relative: &str) -> String {
    let path = workspace_dir().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn read_deploy_file(relative: &str) -> String {
    read_workspace_file(&format!("deploy/{relative}"))
}

/// Runs `promtool` with `args` in `deploy/prometheus`; panics with its output
/// unless it succeeds, or with how to get it when it is not installed.
fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(deploy_dir().join("prometheus"))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): it comes with Debian's prometheus package; \
                 run scripts/test (which installs it when missing) or apt-get install prometheus"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "promtool {} failed ({}):\n{text}",
        args.join(" "),
        output.status
    );
    text
}

#[test]
fn promtool_accepts_the_alert_rules_and_both_prometheus_configs() {
    promtool(&["check", "rules", "alerts.yml"]);
    promtool(&["check", "config", "prometheus.yml"]);
    promtool(&["check", "config", "prometheus-compose.yml"]);
}

#[test]
fn every_alert_rule_passes_its_promtool_unit_tests() {
    promtool(&["test", "rules", "alerts_test.yml"]);
}

/// Values of `key: value` lines (comments and quotes stripped) in a YAML file.
fn yaml_values(text: &str, key: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim().trim_start_matches("- ");
            let value = line.strip_prefix(key)?.strip_prefix(':')?;
            let value = value.split('#').next().unwrap_or_default().trim();
            Some(value.trim_matches('"').to_string())
        })
        .filter(|value| !value.is_empty())
        .collect()
}

#[test]
fn every_alert_rule_has_unit_tests() {
    let rules = yaml_values(&read_deploy_file("prometheus/alerts.yml"), "alert");
    let tested = yaml_values(&read_deploy_file("prometheus/alerts_test.yml"), "alertname");
    assert!(rules.len() >= 7, "too few alert rules found: {rules:?}");
    let untested: Vec<&String> = rules.difference(&tested).collect();
    assert!(
        untested.is_empty(),
        "alert rules without a unit test in alerts_test.yml: {untested:?}"
    );
    let unknown: Vec<&String> = tested.difference(&rules).collect();
    assert!(
        unknown.is_empty(),
        "alerts_test.yml tests rules alerts.yml does not have: {unknown:?}"
    );
}

#[test]
fn the_dashboard_is_grafana_json_with_unique_panel_ids_and_a_query_in_every_panel() {
    let text = read_deploy_file("grafana/postline.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("postline.json is not JSON: {e}"));
    assert_eq!(dashboard["uid"], "postline");
    let panels = dashboard["panels"].as_array().expect("a panels array");
    let mut ids = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(
            ids.insert(panel["id"].as_u64().expect("a numeric panel id")),
            "duplicate panel id in {title:?}"
        );
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(
                expr.contains("postline_"),
                "panel {title:?} has a query on no Postline metric: {expr:?}"
            );
        }
    }
    // The provisioning provider reads the folder docker compose mounts the dashboard in.
    let provider = read_deploy_file("grafana/provisioning/dashboards/postline.yml");
    let compose = read_workspace_file("docker-compose.yml");
    assert!(
        provider.contains("path: /etc/postline/dashboards"),
        "{provider}"
    );
    assert!(
        compose.contains("./deploy/grafana/postline.json:/etc/postline/dashboards/postline.json"),
        "docker-compose.yml does not mount the dashboard where the provider looks"
    );
}

#[test]
fn compose_persists_redis_every_second_and_mounts_files_that_exist() {
    let compose = read_workspace_file("docker-compose.yml");
    assert!(
        compose.contains(r#"["redis-server", "--appendonly", "yes", "--appendfsync", "everysec"]"#),
        "Redis must run with AOF fsynced every second"
    );
    assert_eq!(
        compose.matches(r#"profiles: ["observability"]"#).count(),
        2,
        "Prometheus and Grafana run under the observability profile"
    );
    let mounted: Vec<&str> = compose
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- ./"))
        .filter_map(|mount| mount.split(':').next())
        .collect();
    assert!(mounted.len() >= 5, "{mounted:?}");
    for path in mounted {
        assert!(
            workspace_dir().join(path).exists(),
            "docker-compose.yml mounts ./{path}, which does not exist"
        );
    }
}

/// Every `postline_*` name in `text` (metric names are `[a-z0-9_]`).
fn postline_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("postline_") {
        let preceded_by_word = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        if !preceded_by_word {
            names.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

/// The sample names in a `/metrics` text (so `_bucket`, `_sum`, `_count` of
/// histograms), plus the family names of its `# TYPE` lines.
fn exported_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| match line.strip_prefix("# TYPE ") {
            Some(typed) => typed.split(' ').next(),
            None if line.starts_with('#') => None,
            None => line.split(['{', ' ']).next(),
        })
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect()
}

/// `/metrics` of ingest, delivery and the token service, by service name.
async fn scrape_all(env: &TestEnv) -> Vec<(&'static str, String)> {
    let delivery = format!("http://{}", env.delivery_addr().expect("delivery runs"));
    let token = env.token_service_urls().remove(0);
    vec![
        ("ingest", env.metrics_page(env.ingest_url()).await),
        ("delivery", env.metrics_page(&delivery).await),
        ("token", env.metrics_page(&token).await),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_the_alert_rules_use_is_exported_by_the_services() {
    let wanted: BTreeSet<String> = [
        read_deploy_file("prometheus/alerts.yml"),
        read_deploy_file("grafana/postline.json"),
    ]
    .iter()
    .flat_map(|text| postline_names(text))
    .collect();
    assert!(
        wanted.len() >= 20,
        "too few metric names found in the rules and the dashboard: {wanted:?}"
    );

    let mut builder = TestEnv::builder();
    builder.delivery.backlog_refresh = Duration::from_millis(200);
    let env = builder.start().await;
    // Labelled series appear only once used: drive every path they count.
    // A receiver behind an OAuth2 token (token fetch, cache, a 401 and the
    // invalidation it causes), one that always fails (a subscription left
    // blocked on a long ladder step, one whose event is parked), rejects,
    // a duplicate, an unmatched event.
    let tokens = TokenServer::start().await;
    let with_token = Receiver::start().await;
    let failing = Receiver::start().await;
    failing.answer_always(500);
    env.subscribe(json!({
        "id": "with_token",
        "endpoint": with_token.url(),
        "event_types": ["order.*"],
        "auth": {
            "mode": "oauth2_client_credentials",
            "token_url": tokens.url(),
            "client_id": "postline",
            "client_secret": "observability-test-secret",
        },
    }))
    .await;
    env.subscribe(json!({
        "id": "blocked",
        "endpoint": failing.url_for("/blocked"),
        "event_types": ["order.*"],
        "retry": {"immediate_retries": 0, "steps_ms": [3_600_000]},
    }))
    .await;
    env.subscribe(json!({
        "id": "parked",
        "endpoint": failing.url_for("/parked"),
        "event_types": ["order.*"],
        "retry": {"policy": "fixed", "retries": 1, "delay_ms": 50, "on_give_up": "skip"},
    }))
    .await;
    // The receiver refuses the first token it sees once, as after a rotation.
    with_token.fail_next(1, 401);
    let event = json!({"id": "obs-1", "type": "order.created", "payload": {"n": 1}});
    env.send_event(event.clone()).await;
    env.send_event(event).await; // a duplicate
    env.send_event(json!({"type": "nobody.wants.this", "payload": {}}))
        .await;
    let refused = env.post_event_raw(b"not json").await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.text);
    with_token.wait_for_successes(1, DEADLINE).await;

    let scraped = wait::until(
        "every metric of the rules and the dashboard on some service's /metrics",
        DEADLINE,
        || async {
            let scraped = scrape_all(&env).await;
            let exported: BTreeSet<String> = scraped
                .iter()
                .flat_map(|(_, text)| exported_names(text))
                .collect();
            let missing: Vec<&String> = wanted.difference(&exported).collect();
            if missing.is_empty() {
                Ok(scraped)
            } else {
                Err(format!("missing {missing:?}"))
            }
        },
    )
    .await;
    // Each service reports itself ready on /metrics as on /readyz.
    for (service, text) in &scraped {
        assert!(
            text.lines().any(|line| line == "postline_ready 1"),
            "{service} does not export postline_ready 1:\n{text}"
        );
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_gauge_follows_the_queue_of_a_paused_subscription_until_it_drains() {
    let mut builder = TestEnv::builder();
    builder.delivery.backlog_refresh = Duration::from_millis(200);
    let env = builder.start().await;
    let receiver = Receiver::start().await;
    env.subscribe(json!({
        "id": "held",
        "endpoint": receiver.url(),
        "event_types": ["order.*"],
        "status": "paused",
    }))
    .await;
    env.subscribe(json!({
        "id": "flowing",
        "endpoint": receiver.url_for("/flowing"),
        "event_types": ["invoice.*"],
    }))
    .await;
    for n in 0..5 {
        env.send_event(json!({"type": "order.created", "payload": {"n": n}}))
            .await;
    }
    env.wait_queue_depth(&env.topology.subscription_queue(&sub_id("held")), 5)
        .await;
    env.wait_metric(
        "postline_subscription_backlog",
        &["subscription=\"held\""],
        "5",
    )
    .await;
    // A subscription with nothing waiting shows 0, not nothing.
    env.wait_metric(
        "postline_subscription_backlog",
        &["subscription=\"flowing\""],
        "0",
    )
    .await;

    let (status, body) = env
        .patch_subscription("held", json!({"status": "active"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    receiver.wait_for_successes(5, DEADLINE).await;
    env.wait_metric(
        "postline_subscription_backlog",
        &["subscription=\"held\""],
        "0",
    )
    .await;

    // A deleted subscription's series goes away.
    let (status, body) = env.delete_subscription("held").await;
    assert!(status.is_success(), "{status} {body}");
    wait::until(
        "the deleted subscription's backlog series to go away",
        DEADLINE,
        || async {
            let text = env.delivery_metrics().await;
            let held: Vec<&str> = text
                .lines()
                .filter(|line| {
                    line.starts_with("postline_subscription_backlog")
                        && line.contains("subscription=\"held\"")
                })
                .collect();
            if held.is_empty() {
                Ok(())
            } else {
                Err(held.join("\n"))
            }
        },
    )
    .await;
    env.cleanup().await;
}
