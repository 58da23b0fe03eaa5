//! `postline-ingest --help` is the configuration reference: it runs without
//! Redis or a broker, exits 0, and lists every variable with its default,
//! never the value of a secret one.

use clap::CommandFactory;
use postline_shared::runtime::env::variables;
use std::process::Command;

#[test]
fn help_lists_every_variable_with_its_default_and_hides_secret_values() {
    let secret = "do-not-show-this-value";
    let mut run = Command::new(env!("CARGO_BIN_EXE_postline-ingest"));
    run.arg("--help");
    let listed = variables(&postline_ingest::IngestConfig::command());
    for variable in listed.iter().filter(|variable| variable.secret) {
        run.env(&variable.name, secret);
    }
    let output = run.output().expect("postline-ingest runs");
    assert!(output.status.success(), "{output:?}");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(listed.len() > 10, "{listed:?}");
    for variable in &listed {
        assert!(
            help.contains(&format!("[env: {}", variable.name)),
            "{} missing:\n{help}",
            variable.name
        );
        if let Some(default) = &variable.default {
            assert!(
                help.contains(&format!("[default: {default}]")) || default.is_empty(),
                "{} default {default}:\n{help}",
                variable.name
            );
        }
    }
    assert!(!help.contains(secret), "a secret value is shown:\n{help}");
}
