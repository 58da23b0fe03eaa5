//! What a running service needs besides its own work: the start-up they
//! share ([`service`]), configuration,
//! logging, metrics, the operational HTTP surface (`/healthz`, `/readyz`,
//! `/metrics`) and the bounded server behind it, shutdown, encryption at
//! rest, request coalescing, the installation marker that makes a service
//! fail closed when its state was lost, reconnect backoff and lock helpers.

pub mod backoff;
pub mod coalesce;
pub mod config;
pub mod encryption;
pub mod env;
pub mod http_server;
pub mod installation;
pub mod locks;
pub mod metrics;
pub mod ops;
pub mod service;
pub mod shutdown;
pub mod telemetry;
