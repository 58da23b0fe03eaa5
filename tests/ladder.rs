//! The failure path on classic subscription queues: every scenario of
//! [`scenarios`] against the default queue type.

#[path = "ladder/scenarios.rs"]
mod scenarios;

use postline_tests::{TestEnv, TestEnvBuilder};

fn env_builder() -> TestEnvBuilder {
    TestEnv::builder()
}

async fn start_env() -> TestEnv {
    env_builder().start().await
}
