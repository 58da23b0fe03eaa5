//! The OpenAPI documents of ingest and the token service: generated from the
//! code, committed under `deploy/openapi/` (a change of API shows in review),
//! served at `GET /openapi.json`, in agreement with the README's endpoint
//! lists, and fuzzed with schemathesis against the running services.
//!
//! Regenerate the committed documents and the README's generated API section
//! with `POSTLINE_UPDATE_OPENAPI=1 cargo test -p postline-tests --test openapi`.

use postline_shared::model::problem::ProblemCode;
use postline_tests::api::Auth;
use postline_tests::env::TestEnv;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Set to `1` to rewrite the committed documents and the README section.
const UPDATE: &str = "POSTLINE_UPDATE_OPENAPI";
const REGENERATE: &str =
    "regenerate with `POSTLINE_UPDATE_OPENAPI=1 cargo test -p postline-tests --test openapi`, review the diff and commit it";
const SECTION_START: &str = "<!-- openapi:begin (generated from deploy/openapi/*.json by tests/openapi.rs; do not edit) -->";
const SECTION_END: &str = "<!-- openapi:end -->";
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

fn updating() -> bool {
    std::env::var(UPDATE).is_ok_and(|v| v == "1")
}

/// The documents as the code generates them: (file name, JSON).
fn generated() -> Vec<(&'static str, Value)> {
    let ingest = serde_json::to_value(postline_ingest::api::openapi::document()).expect("JSON");
    let token = serde_json::to_value(postline_token::api::document()).expect("JSON");
    vec![("ingest.json", ingest), ("token.json", token)]
}

fn rendered(document: &Value) -> String {
    serde_json::to_string_pretty(document).expect("JSON") + "\n"
}

/// Every `METHOD /path` of a document.
fn operations(document: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(method).is_some() {
                found.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    found
}

#[test]
fn committed_documents_are_what_the_code_generates() {
    for (name, document) in generated() {
        let path = repo().join("deploy/openapi").join(name);
        let fresh = rendered(&document);
        if updating() {
            std::fs::write(&path, &fresh).expect("writing the document");
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == fresh,
            "deploy/openapi/{name} differs from what the code generates; {REGENERATE}"
        );
    }
}

#[test]
fn documents_are_openapi_3_1_with_every_problem_code_and_the_security_schemes() {
    let wire: BTreeSet<String> = ProblemCode::ALL
        .iter()
        .map(|c| c.as_str().to_string())
        .collect();
    for (name, document) in generated() {
        assert_eq!(document["openapi"], "3.1.0", "{name}");
        let codes: BTreeSet<String> = document["components"]["schemas"]["ProblemCode"]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: ProblemCode is an enum"))
            .iter()
            .filter_map(|c| c.as_str().map(str::to_string))
            .collect();
        assert_eq!(codes, wire, "{name}: the error schema lists every code");
        assert_eq!(
            document["components"]["schemas"]["Problem"]["properties"]["code"]["$ref"],
            "#/components/schemas/ProblemCode",
            "{name}"
        );
    }
    let ingest = &generated()[0].1;
    let schemes = &ingest["components"]["securitySchemes"];
    assert_eq!(schemes["admin_token"]["scheme"], "bearer");
    assert_eq!(schemes["producer_token"]["scheme"], "bearer");
    assert_eq!(
        schemes["tenant_oauth"]["flows"]["clientCredentials"]["tokenUrl"],
        "/oauth/token"
    );
    let spec = &ingest["components"]["schemas"]["SubscriptionSpec"]["properties"];
    assert_eq!(spec["id"]["pattern"], "^[a-z0-9][a-z0-9_-]{0,63}$");
    assert_eq!(spec["endpoint"]["format"], "uri");
    assert_eq!(spec["timeout_ms"]["maximum"], 60000);
}

/// The `METHOD /path` pairs named in the README's tables (`GET/PATCH /x`
/// names two; a query string is dropped).
fn readme_table_operations(readme: &str) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for line in readme.lines().filter(|l| l.trim_start().starts_with('|')) {
        for cell in line.split('`').skip(1).step_by(2) {
            let Some((methods, path)) = cell.split_once(' ') else {
                continue;
            };
            let path = path.split(['?', '[']).next().unwrap_or_default().trim();
            if !path.starts_with('/') || path.contains(' ') {
                continue;
            }
            let methods: Vec<&str> = methods.split('/').collect();
            if methods
                .iter()
                .all(|m| METHODS.contains(&m.to_lowercase().as_str()) && *m == m.to_uppercase())
            {
                for method in methods {
                    found.insert((method.to_string(), path.to_string()));
                }
            }
        }
    }
    found
}

/// The README's generated section: every operation of both documents.
fn api_section(documents: &[(&str, Value)]) -> String {
    let mut out = String::from(SECTION_START);
    out.push('\n');
    for (name, document) in documents {
        let title = document["info"]["title"].as_str().unwrap_or(name);
        out.push_str(&format!(
            "\n**{title}** ([`deploy/openapi/{name}`](deploy/openapi/{name})):\n\n| Endpoint | What |\n|---|---|\n"
        ));
        for (method, path) in operations(document) {
            let operation = &document["paths"][&path][method.to_lowercase()];
            let summary = operation["responses"]
                .as_object()
                .and_then(|responses| responses.values().next())
                .and_then(|first| first["description"].as_str())
                .unwrap_or_default()
                .replace('|', "\\|");
            out.push_str(&format!("| `{method} {path}` | {summary} |\n"));
        }
    }
    out.push('\n');
    out.push_str(SECTION_END);
    out
}

#[test]
fn readme_endpoint_lists_and_the_documents_agree() {
    let readme_path = repo().join("README.md");
    let readme = std::fs::read_to_string(&readme_path).expect("README.md");
    let documents = generated();
    let section = api_section(&documents);
    let (start, end) = (
        readme.find(SECTION_START).unwrap_or_else(|| {
            panic!(
                "README.md has no generated API section; add the two marker lines and {REGENERATE}"
            )
        }),
        readme.find(SECTION_END).expect("README.md: end marker"),
    );
    let current = &readme[start..end + SECTION_END.len()];
    if updating() {
        let updated = readme.replacen(current, &section, 1);
        std::fs::write(&readme_path, updated).expect("writing README.md");
    } else {
        assert!(
            current == section,
            "README.md's generated API section is stale; {REGENERATE}"
        );
    }
    // Both directions: every operation is in the README (the generated
    // section), and every endpoint the README's own tables name exists.
    let documented: BTreeSet<(String, String)> =
        documents.iter().flat_map(|(_, d)| operations(d)).collect();
    let outside_section = readme.replacen(current, "", 1);
    let named = readme_table_operations(&outside_section);
    let unknown: Vec<_> = named.difference(&documented).collect();
    assert!(
        unknown.is_empty(),
        "the README names endpoints the documents do not have: {unknown:?}"
    );
    let in_section = readme_table_operations(&section);
    assert_eq!(
        in_section, documented,
        "the generated section lists every operation"
    );
    for operation in [
        ("GET", "/v1/subscriptions/{id}/state"),
        ("POST", "/v1/admin/import"),
        ("POST", "/v1/tenants/{id}/portal-link"),
    ] {
        let operation = (operation.0.to_string(), operation.1.to_string());
        assert!(named.contains(&operation), "README tables: {operation:?}");
    }
}

/// Examples per operation and phase, and the seed: fixed, so a CI run is
/// bounded and repeatable.
const MAX_EXAMPLES: &str = "20";
const SEED: &str = "16";
/// What every answer is checked for.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,no_secret_leaked";

/// The schemathesis of the virtual environment scripts/test prepares
/// (target/venv, or $POSTLINE_VENV), if it is installed.
fn schemathesis(test: &str) -> Option<PathBuf> {
    let venv = std::env::var_os("POSTLINE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target").join("venv"));
    let program = venv.join("bin").join("schemathesis");
    let ready = std::process::Command::new(&program)
        .arg("--version")
        .output()
        .map(|output| output.status.success())
        .unwrap_or(false);
    if !ready {
        println!(
            "SKIPPED {test}: no schemathesis at {}; scripts/test installs it (pip install schemathesis)",
            program.display()
        );
    }
    ready.then_some(program)
}

/// One schemathesis run: its name, the bearer token it sends, the
/// operations it covers and its phases.
struct Run<'a> {
    label: &'a str,
    bearer: Option<&'a str>,
    include_path: Option<&'a str>,
    exclude_path: Option<&'a str>,
    phases: &'a str,
}

/// Every phase but the stateful one (the document declares no links).
const ALL_PHASES: &str = "examples,coverage,fuzzing";

/// One bounded schemathesis run against a served document; returns whether
/// it passed and its output.
async fn fuzz(
    program: &Path,
    run: &Run<'_>,
    document_url: &str,
    secrets: &[&str],
) -> (bool, String) {
    let label = run.label;
    let dir = repo().join("target").join("schemathesis").join(label);
    std::fs::create_dir_all(&dir).expect("creating the report folder");
    let mut command = tokio::process::Command::new(program);
    command
        .current_dir(&dir)
        .env(
            "SCHEMATHESIS_HOOKS",
            repo().join("tests/openapi/no_secret_leaked.py"),
        )
        .env("POSTLINE_FUZZ_SECRETS", secrets.join(","))
        .env("NO_COLOR", "1")
        .args(["run", document_url, "--checks", CHECKS])
        .args(["--max-examples", MAX_EXAMPLES, "--seed", SEED])
        .args(["--phases", run.phases, "--workers", "2"])
        .args(["--request-timeout", "20", "--no-shrink"])
        .args(["--report", "junit", "--report-dir"])
        .arg(&dir)
        .kill_on_drop(true);
    if let Some(token) = run.bearer {
        command.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    if let Some(pattern) = run.include_path {
        command.args(["--include-path-regex", pattern]);
    }
    if let Some(pattern) = run.exclude_path {
        command.args(["--exclude-path-regex", pattern]);
    }
    let output = tokio::time::timeout(Duration::from_secs(240), command.output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis ({label}) did not finish within 4 minutes"))
        .expect("running schemathesis");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// The served document is the committed one.
async fn served(env: &TestEnv, base: &str, name: &str) {
    let response = env
        .http()
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .expect("GET /openapi.json");
    assert_eq!(
        response.status(),
        200,
        "{name}: served without authentication"
    );
    let served: Value = response.json().await.expect("JSON");
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/openapi").join(name)).expect("committed"),
    )
    .expect("JSON");
    assert_eq!(
        served, committed,
        "{name}: the served document is the committed one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_schema_violation_or_leaked_secret() {
    let test = "schemathesis_finds_no_server_error_schema_violation_or_leaked_secret";
    let Some(program) = schemathesis(test) else {
        return;
    };
    let started = Instant::now();
    let mut env = TestEnv::builder().without_delivery().start().await;
    let token_service = format!("http://{}", env.start_token_service().await);
    let ingest = env.ingest_url().to_string();
    served(&env, &ingest, "ingest.json").await;
    served(&env, &token_service, "token.json").await;

    // A tenant with a client and a token, and secrets planted where a leak
    // would show: a subscription's signing secret and receiver password.
    env.create_tenant_ok(json!({
        "id": "acme", "name": "Acme", "allowed_event_types": ["order.*"]
    }))
    .await;
    let client = env
        .create_client_ok(
            "acme",
            &[
                "subscriptions:read",
                "subscriptions:write",
                "deliveries:replay",
            ],
        )
        .await;
    let tenant_token = env.token_ok(&client, None).await;
    let signing_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let password = "fuzz-receiver-password-5b1e";
    let body = serde_json::to_vec(&json!({
        "id": "planted", "endpoint": "http://127.0.0.1:9/hook", "event_types": ["order.*"],
        "secrets": [signing_secret], "verify": false,
        "auth": {"mode": "basic", "username": "u", "password": password}
    }))
    .expect("JSON");
    let created = env
        .api(Method::POST, "/v1/subscriptions", Auth::Admin, Some(body))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let secrets = [
        env.admin_token(),
        env.producer_token(),
        client.secret.as_str(),
        signing_secret,
        password,
    ];
    let ingest_document = format!("{ingest}/openapi.json");
    // The event routes are fuzzed with the producer token only, and without
    // the coverage phase: schemathesis 4.32's coverage generator crashes on
    // their any-JSON `payload` inside an array (a Python SystemError in its
    // own code, not an answer of ours); examples and fuzzing cover them.
    let runs = [
        Run {
            label: "ingest-admin",
            bearer: Some(env.admin_token()),
            include_path: None,
            exclude_path: Some("^/v1/events"),
            phases: ALL_PHASES,
        },
        Run {
            label: "ingest-tenant",
            bearer: Some(tenant_token.as_str()),
            include_path: None,
            exclude_path: Some("^/v1/events"),
            phases: ALL_PHASES,
        },
        Run {
            label: "ingest-producer",
            bearer: Some(env.producer_token()),
            include_path: Some("^/v1/events"),
            exclude_path: None,
            phases: "examples,fuzzing",
        },
    ];
    let mut failures = Vec::new();
    for run in &runs {
        let (passed, output) = fuzz(&program, run, &ingest_document, &secrets).await;
        println!("--- schemathesis {}\n{output}", run.label);
        if !passed {
            failures.push(format!("--- schemathesis {} failed:\n{output}", run.label));
        }
    }
    let token_run = Run {
        label: "token",
        bearer: None,
        include_path: None,
        exclude_path: None,
        phases: ALL_PHASES,
    };
    let token_document = format!("{token_service}/openapi.json");
    let (passed, output) = fuzz(&program, &token_run, &token_document, &secrets).await;
    println!("--- schemathesis token\n{output}");
    if !passed {
        failures.push(format!("--- schemathesis token failed:\n{output}"));
    }
    println!("schemathesis runs took {:?}", started.elapsed());
    env.cleanup().await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
