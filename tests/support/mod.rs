//! Test support for Postline's end-to-end tests: every test runs the real
//! ingest and delivery services in-process against the real RabbitMQ and
//! Redis, in a namespace of its own, and watches what a real HTTP receiver gets.
//!
//! - [`env::TestEnv`]: a namespace, the services, and helpers to drive them
//!   (HTTP API in [`api`], AMQP in [`amqp`]) and to clean up after the test.
//! - [`receiver::Receiver`]: a recording HTTP server that fails on command.
//! - [`logs`]: captures every log line so tests can look for leaked secrets.
//! - [`events`] and [`signatures`]: building events, comparing sequences, and
//!   verifying signatures independently of Postline's own code.
//! - [`tenants`]: tenants, their clients and tokens; [`ui`]: a headless
//!   Chromium (through chromedriver) for the status page.
//! - [`token_server::TokenServer`]: a partner's token endpoint that counts its
//!   calls and can be down, slow or answer garbage on command.

#![warn(missing_docs)]

pub mod amqp;
pub mod api;
pub mod env;
pub mod events;
pub mod logs;
pub mod namespace;
pub mod proxy;
pub mod receiver;
pub mod redis_server;
pub mod signatures;
pub mod tenants;
pub mod token_server;
pub mod ui;
pub mod wait;

pub use env::{TestEnv, TestEnvBuilder};
pub use receiver::{Receiver, Recorded};
pub use token_server::TokenServer;

/// The subscription id `id`, as a test names it (a malformed literal is a
/// bug in the test, so it panics).
pub fn sub_id(id: &str) -> postline_shared::model::ids::SubscriptionId {
    postline_shared::model::ids::SubscriptionId::parse(id)
        .unwrap_or_else(|e| panic!("subscription id {id:?}: {e}"))
}

use std::time::Duration;

/// The default deadline of every wait in the tests: generous, because the
/// tests assert on outcomes, never on speed.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// How long a test watches for unexpected extra requests after it got what it expected.
pub const QUIET: Duration = Duration::from_millis(500);
