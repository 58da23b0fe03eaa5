//! Postline's shared library: the wire formats, the AMQP topology, the Redis
//! layout and the operational plumbing that the ingest, delivery and token
//! services all rely on. Every module here is used by at least two services.

#![warn(missing_docs)]

pub mod attempt;
pub mod auth;
pub mod broker;
pub mod broker_nodes;
pub mod coalesce;
pub mod config;
pub mod delivery_state;
pub mod encryption;
pub mod envelope;
pub mod http_server;
pub mod installation;
pub mod keys;
pub mod ladder;
pub mod metrics;
pub mod migration;
pub mod ops;
pub mod outbound;
pub mod problem;
pub mod redelivery;
pub mod secret;
pub mod shutdown;
pub mod signing;
pub mod subscription;
pub mod telemetry;
pub mod tenant;
pub mod token_cache;
pub mod token_client;
pub mod topology;
pub mod webhook;

pub use config::CommonConfig;
pub use envelope::Envelope;
pub use subscription::Subscription;
