//! The README's configuration table says what the services' `--help` says:
//! every variable a service reads is in the table with the same default and
//! the same services, and every `POSTLINE_…` row of the table is read by the
//! services it names. The clap definitions are the source; this keeps the
//! README from drifting away from them.

use clap::CommandFactory;
use postline_shared::runtime::env::{variables, Variable};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const SERVICES: [&str; 3] = ["ingest", "delivery", "token"];

/// One row of the README's table.
#[derive(Debug)]
struct Row {
    default: String,
    used_by: BTreeSet<String>,
}

fn readme_rows() -> BTreeMap<String, Row> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(path).expect("README.md");
    let section = readme
        .split("\n## Configuration\n")
        .nth(1)
        .expect("a Configuration section")
        .split("\n## ")
        .next()
        .unwrap_or_default();
    section
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
            let used_by = match cells[2] {
                "all" => SERVICES.iter().map(|s| s.to_string()).collect(),
                list => list.split(',').map(|s| s.trim().to_string()).collect(),
            };
            let row = Row {
                default: cells[1].to_string(),
                used_by,
            };
            (cells[0].trim_matches('`').to_string(), row)
        })
        .collect()
}

/// Every variable of the three services, with the services reading it.
fn configured() -> BTreeMap<String, (Variable, BTreeSet<String>)> {
    let commands = [
        postline_ingest::IngestConfig::command(),
        postline_delivery::DeliveryConfig::command(),
        postline_token::TokenConfig::command(),
    ];
    let mut all: BTreeMap<String, (Variable, BTreeSet<String>)> = BTreeMap::new();
    for (service, command) in SERVICES.iter().zip(&commands) {
        for variable in variables(command) {
            let entry = all
                .entry(variable.name.clone())
                .or_insert_with(|| (variable.clone(), BTreeSet::new()));
            assert_eq!(
                entry.0, variable,
                "{} differs between services",
                variable.name
            );
            entry.1.insert(service.to_string());
        }
    }
    all
}

/// What the README's default cell must say for `default`.
fn default_agrees(cell: &str, default: Option<&str>) -> bool {
    match default {
        Some("") => cell == "empty",
        Some(value) => cell == format!("`{value}`") || cell.starts_with(&format!("`{value}` (")),
        None => !cell.starts_with('`'),
    }
}

#[test]
fn the_readme_configuration_table_matches_the_services_help() {
    let rows = readme_rows();
    let configured = configured();
    let mut problems = Vec::new();
    for (name, (variable, services)) in &configured {
        let Some(row) = rows.get(name) else {
            problems.push(format!("{name} is missing from the README's table"));
            continue;
        };
        if !default_agrees(&row.default, variable.default.as_deref()) {
            problems.push(format!(
                "{name}: README default {:?}, --help default {:?}",
                row.default, variable.default
            ));
        }
        if &row.used_by != services {
            problems.push(format!(
                "{name}: README says used by {:?}, the services reading it are {services:?}",
                row.used_by
            ));
        }
    }
    for name in rows.keys().filter(|name| name.starts_with("POSTLINE_")) {
        if !configured.contains_key(name) {
            problems.push(format!("{name} is in the README but no service reads it"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
