//! The OpenAPI documents of ingest and the token service: generated from the
//! code, committed under `deploy/openapi/` (a change of API shows in review),
//! served at `GET /openapi.json`, in agreement with the README's endpoint
//! lists, and fuzzed with schemathesis against the running services.
//!
//! Regenerate the committed documents and the README's generated API section
//! with `POSTLINE_UPDATE_OPENAPI=1 cargo test -p postline-tests --test openapi`.

use postline_shared::problem::ProblemCode;
use postline_tests::env::TestEnv;
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
            panic!("README.md has no generated API section; add the two marker lines and {REGENERATE}")
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
    assert_eq!(in_section, documented, "the generated section lists every operation");
    for operation in [
        ("GET", "/v1/subscriptions/{id}/state"),
        ("POST", "/v1/admin/import"),
        ("POST", "/v1/tenants/{id}/portal-link"),
    ] {
        let operation = (operation.0.to_string(), operation.1.to_string());
        assert!(named.contains(&operation), "README tables: {operation:?}");
    }
}
