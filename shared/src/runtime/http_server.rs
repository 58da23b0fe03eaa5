//! Serving a service's HTTP router with bounded connections: at most
//! `max_connections` at once (further ones wait in the listen backlog and
//! do not disturb those in flight), a request head must arrive within
//! `header_read_timeout` (which also closes a keep-alive connection idle
//! that long: hyper starts the same timer while it waits for the next
//! request), a request body may not stall longer than that either, and
//! shutdown drains the requests in flight.
//!
//! `axum::serve` offers none of these bounds, hence this small accept loop on
//! hyper's own connection builder.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::RequestBodyTimeoutLayer;

/// Default most concurrent connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default time a client has to send a request head (and a keep-alive
/// connection may stay idle).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (out of file descriptors, for instance),
/// so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The bounds of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct ServerLimits {
    /// Most HTTP connections served at once; further ones wait in the listen
    /// backlog until a slot frees.
    #[arg(long, env = "POSTLINE_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// How long a client has to send a request head (ms), how long a
    /// kept-alive connection may idle, and how long a request body may
    /// stall; then the connection is closed.
    #[arg(long = "header-read-timeout-ms", value_name = "MS", env = "POSTLINE_HEADER_READ_TIMEOUT_MS", default_value = "10000", value_parser = crate::runtime::env::millis)]
    pub header_read_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then waits for
/// the requests in flight to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    shutdown: CancellationToken,
) {
    let app = app.layer(RequestBodyTimeoutLayer::new(limits.header_read_timeout));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    loop {
        // A slot first: beyond the limit, connections wait in the backlog.
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // Errors here are the client's (a timeout, a reset): nothing to log.
            let _ = connection.await;
            drop(slot);
        });
    }
    graceful.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Only {
        #[command(flatten)]
        limits: ServerLimits,
    }

    impl crate::runtime::env::Validate for Only {
        fn validate(self) -> Result<Self, crate::runtime::env::ConfigError> {
            Ok(self)
        }
    }

    #[test]
    fn the_default_limits_are_the_configuration_defaults() {
        let parsed = crate::runtime::env::defaults::<Only>().expect("defaults");
        assert_eq!(parsed.limits, ServerLimits::default());
    }
}
