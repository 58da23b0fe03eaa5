//! Postline's shared library: the wire formats, the AMQP topology, the Redis
//! layout and the operational plumbing that the ingest, delivery and token
//! services all rely on. Every module here is used by at least two services.
//!
//! The folders, from the bottom up (each uses only those above it in this list,
//! [`runtime`] being used by all and using [`model`], [`amqp`] and [`redis`]
//! only for readiness and configuration):
//!
//! - [`model`]: the data: envelope, subscription spec, retry policy, tenants,
//!   secrets, validation problems. Pure, no I/O.
//! - [`redis`]: state in Redis: key layout, subscription store and catalog,
//!   delivery state (settled markers, blocks, parked events, attempt log),
//!   bearer-token cache.
//! - [`amqp`]: RabbitMQ: broker nodes and connections, confirmed publishing,
//!   topology, redelivery through the retry ladder, migration to quorum.
//! - [`outbound`]: calling partner URLs: the address guard and HTTP client,
//!   building and signing the request, receiver credentials and bearer
//!   tokens, one delivery attempt.
//! - [`runtime`]: configuration, telemetry, metrics, the operational HTTP
//!   surface and server, shutdown, encryption at rest, coalescing, the
//!   installation marker.

#![warn(missing_docs)]

pub mod amqp;
pub mod model;
pub mod outbound;
pub mod redis;
pub mod runtime;

pub use model::envelope::Envelope;
pub use model::subscription::Subscription;
pub use runtime::config::CommonConfig;
