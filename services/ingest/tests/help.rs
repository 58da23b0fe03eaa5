//! `postline-ingest --help` is the configuration reference: it runs without
//! Redis or a broker, exits 0, and lists every variable with its default,
//! never the value of a secret one.

use clap::CommandFactory;
use postline_shared::runtime::env::{help_problems, variables};
use std::path::Path;

#[test]
fn help_lists_every_variable_with_its_default_and_hides_secret_values() {
    let command = postline_ingest::IngestConfig::command();
    assert!(
        variables(&command).len() > 10,
        "the variables are read from the command"
    );
    let problems = help_problems(Path::new(env!("CARGO_BIN_EXE_postline-ingest")), &command);
    assert!(problems.is_empty(), "{problems:#?}");
}
