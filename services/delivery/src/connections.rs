//! The broker connections of one supervisor generation.
//!
//! Every subscription consumer needs a channel of its own, and a connection
//! carries at most `channel_max` channels (2047 on a default RabbitMQ), so
//! consumers are spread over as many connections as they need, each with its
//! own confirmed publisher for delayed copies and dead letters.

use lapin::Connection;
use postline_shared::amqp::broker::ConfirmedPublisher;
use postline_shared::amqp::broker_nodes::{BrokerConnector, ConnectError};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How long one step of setting up with the broker (connecting, opening a
/// channel) may take before it counts as failed.
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);

/// Awaits a step of setting up with the broker, failing it after [`SETUP_TIMEOUT`].
///
/// lapin (4.12) does not always complete these futures when the connection
/// drops under them: a handshake cut at the wrong moment never finishes, and
/// a channel request queued to lapin's internal RPC loop just as the
/// connection's IO loop stops that loop is never handled. Unbounded, such a
/// step would hold the supervisor (or a consumer it waits for) for ever.
pub(crate) async fn within<T>(
    step: impl Future<Output = Result<T, lapin::Error>>,
) -> Result<T, lapin::Error> {
    tokio::time::timeout(SETUP_TIMEOUT, step)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer from the broker within {SETUP_TIMEOUT:?}"),
            )
            .into())
        })
}

/// Why a connection (and its publisher) could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionsError {
    /// No broker node accepted a connection.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The connection opened but its confirmed publisher did not.
    #[error("opening the publisher channel failed: {0}")]
    Publisher(#[from] lapin::Error),
}

/// One connection, its publisher, and how many consumers it carries.
struct Shard {
    connection: Arc<Connection>,
    publisher: ConfirmedPublisher,
    consumers: usize,
}

/// Where a consumer was placed.
#[derive(Clone)]
pub struct Placement {
    /// Index of the connection (to release the place later).
    pub shard: usize,
    /// The connection to open the consumer's channel on.
    pub connection: Arc<Connection>,
    /// The publisher of that connection.
    pub publisher: ConfirmedPublisher,
}

/// Connections filled up to `per_connection` consumers each.
pub struct Connections {
    connector: Arc<BrokerConnector>,
    per_connection: usize,
    shards: Vec<Shard>,
}

impl Connections {
    /// Opens the first connection through `connector` (more are opened, to
    /// the same node, as consumers need them).
    pub async fn open(
        connector: Arc<BrokerConnector>,
        per_connection: usize,
    ) -> Result<Self, ConnectionsError> {
        let mut connections = Self {
            connector,
            per_connection: per_connection.max(1),
            shards: Vec::new(),
        };
        connections.add_shard().await?;
        Ok(connections)
    }

    async fn add_shard(&mut self) -> Result<usize, ConnectionsError> {
        let name = format!("delivery-{}", self.shards.len());
        // A handshake cut at the wrong moment never completes in lapin
        // 4.12: bounded, it counts as a failed attempt and is retried.
        let connection = tokio::time::timeout(SETUP_TIMEOUT, self.connector.connect(&name))
            .await
            .unwrap_or_else(|_| {
                Err(ConnectError {
                    failures: vec![format!(
                        "no answer from the broker within {SETUP_TIMEOUT:?}"
                    )],
                })
            })?;
        let publisher = match within(ConfirmedPublisher::open(&connection)).await {
            Ok(publisher) => publisher,
            Err(error) => {
                let _ = within(connection.close(320, "publisher failed".into())).await;
                return Err(error.into());
            }
        };
        self.shards.push(Shard {
            connection: Arc::new(connection),
            publisher,
            consumers: 0,
        });
        Ok(self.shards.len() - 1)
    }

    /// A place for one more consumer: the least loaded connection with room,
    /// or a new connection when all are full.
    pub async fn place(&mut self) -> Result<Placement, ConnectionsError> {
        let roomiest = self
            .shards
            .iter()
            .enumerate()
            .filter(|(_, shard)| shard.consumers < self.per_connection)
            .min_by_key(|(_, shard)| shard.consumers)
            .map(|(index, _)| index);
        let index = match roomiest {
            Some(index) => index,
            None => self.add_shard().await?,
        };
        let shard = &mut self.shards[index];
        shard.consumers += 1;
        Ok(Placement {
            shard: index,
            connection: shard.connection.clone(),
            publisher: shard.publisher.clone(),
        })
    }

    /// Gives a consumer's place back.
    pub fn release(&mut self, shard: usize) {
        if let Some(shard) = self.shards.get_mut(shard) {
            shard.consumers = shard.consumers.saturating_sub(1);
        }
    }

    /// Whether every connection and publisher is still usable; lapin does
    /// not recover, so one lost connection means starting over.
    pub fn healthy(&self) -> bool {
        self.shards
            .iter()
            .all(|shard| shard.connection.status().connected() && shard.publisher.is_connected())
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Whether none are open.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// Closes every connection; unacked messages return to their queues.
    pub async fn close(self) {
        for shard in self.shards {
            let _ = shard
                .connection
                .close(200, "delivery stopping".into())
                .await;
        }
    }
}
