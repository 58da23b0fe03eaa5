//! What can stop a bench run before it has a result to report.

/// Why a measurement could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// RabbitMQ failed or refused something.
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Writing subscriptions failed.
    #[error("subscription store: {0}")]
    Store(#[from] postline_shared::redis::subscription_store::StoreError),
    /// The namespace's installation marker could not be written.
    #[error("installation marker: {0}")]
    Installation(#[from] postline_shared::runtime::installation::InstallationError),
    /// An HTTP call (intake, readiness) failed.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// Local I/O (sockets, files, child processes).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// A Postline service did not start.
    #[error("starting {service}: {message}")]
    Service {
        /// Which service.
        service: &'static str,
        /// Its error, rendered (the services report `anyhow` errors).
        message: String,
    },
    /// The broker did not take a message the bench published.
    #[error("publish not confirmed: {0}")]
    NotConfirmed(String),
    /// Something expected did not happen in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The options ask for something the bench cannot do.
    #[error("invalid options: {0}")]
    Invalid(String),
}

impl BenchError {
    /// Wraps an I/O error with what was being attempted.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}
