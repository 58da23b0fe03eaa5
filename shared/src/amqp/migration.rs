//! Moving an installation from classic to quorum queues without losing or
//! reordering an event. A queue cannot change type, so quorum queues have
//! names of their own (`.q`, see [`crate::amqp::topology`]) and, for a while, the
//! classic queues of the same namespace still exist beside them:
//!
//! 1. New copies stop reaching the classic queues: ingest unbinds them
//!    ([`unbind`]) as it starts on quorum, before it publishes anything.
//! 2. Each classic queue is drained before its quorum successor is read:
//!    ingest's intake and delivery's consumer of each subscription consume
//!    the classic queue first (single active consumer keeps one reader),
//!    until [`depth`] finds it empty and [`retire`] can delete it — which
//!    the broker refuses while it holds a message or another consumer, so
//!    no replica moves on while a message remains.
//! 3. Only then is the quorum queue consumed; everything in it was queued
//!    after everything in the classic one.
//!
//! Each call here works on a channel of its own: a missing queue or a
//! refused deletion closes that channel only.

use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::Connection;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a classic queue being drained is checked for emptiness.
pub const RECHECK: Duration = Duration::from_millis(300);
/// How long a migration step may wait on the broker.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a migration step failed (other than the queue being absent).
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// The broker or the connection failed.
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    /// The broker did not answer in time.
    #[error("broker did not answer within {0:?}")]
    Timeout(Duration),
}

impl From<MigrationError> for lapin::Error {
    /// For callers that report every broker failure as a lapin error.
    fn from(error: MigrationError) -> Self {
        match error {
            MigrationError::Broker(error) => error,
            timeout => std::io::Error::other(timeout.to_string()).into(),
        }
    }
}

/// Returns once `queue` has been seen empty (or gone) twice in a row, or on
/// `stop`: the consumer draining it can then stop and try [`retire`].
pub async fn wait_until_empty(connection: &Connection, queue: &str, stop: &CancellationToken) {
    let mut empty_before = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RECHECK) => {}
        }
        let empty = matches!(depth(connection, queue).await, Ok(Some(0) | None));
        if empty && empty_before {
            return;
        }
        empty_before = empty;
    }
}

/// Runs `consume` (which reads `queue` until the token it is given fires)
/// until `queue` is found empty, or `stop`, or `consume` ends on its own;
/// returns what it returned and whether the queue was found empty.
pub async fn until_empty<T, F, Fut>(
    connection: &Connection,
    queue: &str,
    stop: &CancellationToken,
    consume: F,
) -> (T, bool)
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let drained = stop.child_token();
    let over = CancellationToken::new();
    let consuming = async {
        let result = consume(drained.clone()).await;
        over.cancel();
        result
    };
    let watching = async {
        tokio::select! {
            _ = wait_until_empty(connection, queue, &drained) => drained.cancel(),
            _ = over.cancelled() => {}
        }
    };
    let (result, ()) = tokio::join!(consuming, watching);
    (result, drained.is_cancelled() && !stop.is_cancelled())
}

/// Ready messages in `queue`, or `None` when it does not exist.
pub async fn depth(connection: &Connection, queue: &str) -> Result<Option<u32>, MigrationError> {
    on_own_channel(connection, |channel| async move {
        channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map(|declared| declared.message_count())
    })
    .await
}

/// Deletes `queue` if it is empty and nobody consumes it; `Some(true)` when
/// it is gone now, `Some(false)` when the broker refused (a message or a
/// consumer is left), `None` when it did not exist.
pub async fn retire(connection: &Connection, queue: &str) -> Result<Option<bool>, MigrationError> {
    if depth(connection, queue).await?.is_none() {
        return Ok(None);
    }
    let deleted = on_own_channel(connection, |channel| async move {
        channel
            .queue_delete(
                queue.into(),
                QueueDeleteOptions {
                    if_unused: true,
                    if_empty: true,
                    ..Default::default()
                },
            )
            .await
    })
    .await?;
    Ok(Some(deleted.is_some()))
}

/// Removes the binding of `queue` to `exchange` under `routing_key` (with
/// `arguments`, for a headers exchange); a missing queue is no error.
pub async fn unbind(
    connection: &Connection,
    queue: &str,
    exchange: &str,
    routing_key: &str,
    arguments: FieldTable,
) -> Result<(), MigrationError> {
    on_own_channel(connection, |channel| async move {
        channel
            .queue_unbind(queue.into(), exchange.into(), routing_key.into(), arguments)
            .await
    })
    .await
    .map(|_| ())
}

/// Runs `step` on a fresh channel, closed afterwards. A step refused while
/// the connection stays up (a missing queue, a refused deletion) is `None`.
async fn on_own_channel<T, F, Fut>(
    connection: &Connection,
    step: F,
) -> Result<Option<T>, MigrationError>
where
    F: FnOnce(lapin::Channel) -> Fut,
    Fut: std::future::Future<Output = Result<T, lapin::Error>>,
{
    let work = async {
        let channel = connection.create_channel().await?;
        let result = step(channel.clone()).await;
        let _ = channel.close(200, "migration step done".into()).await;
        match result {
            Ok(value) => Ok(Some(value)),
            Err(error) if connection.status().connected() => {
                tracing::debug!(%error, "migration step refused by the broker");
                Ok(None)
            }
            Err(error) => Err(MigrationError::Broker(error)),
        }
    };
    tokio::time::timeout(STEP_TIMEOUT, work)
        .await
        .map_err(|_| MigrationError::Timeout(STEP_TIMEOUT))?
}
