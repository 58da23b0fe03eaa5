//! The installation marker: proof, kept in Redis, that this namespace's state
//! (subscriptions, blocks, markers) exists. A Redis that comes back empty has
//! no marker; if the broker still has the namespace's queues, the state was
//! lost and every service fails closed until an operator restores an export
//! or declares a fresh start (see the README, "Recovering lost state").
//!
//! [`decide`] is the pure decision; [`check`] and [`watch`] execute it.

use crate::amqp::broker_nodes::{BrokerConnector, BrokerNodes};
use crate::amqp::topology::Topology;
use crate::redis::keys::RedisKeys;
use crate::runtime::backoff::Backoff;
use crate::runtime::ops::Readiness;
use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often [`watch`] pings Redis and looks for the marker.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);

/// The marker's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// A fresh id per installation (or per declared fresh start / import).
    pub id: String,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

impl Marker {
    /// A new marker with a random id, written now.
    pub fn fresh() -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            created_at: Utc::now(),
        }
    }
}

/// What the marker and the broker together say about the state in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The marker is there: the state in Redis is the installation's.
    Ok,
    /// No marker and no queues: a new installation; write the marker.
    FreshInstall,
    /// No marker, but Redis holds subscriptions: an installation from
    /// before the marker existed (an upgrade), not an emptied Redis; write it.
    Adopt,
    /// No marker but the broker has the namespace's queues: Redis lost its
    /// state. Fail closed.
    Lost,
}

/// The decision. `queues_present` is only asked for when the marker is
/// missing and Redis holds no subscription (the broker is not consulted on
/// the happy path). Management writes are refused while the state is lost,
/// so subscriptions in a Redis without a marker predate the marker.
pub fn decide(
    marker_present: bool,
    subscriptions_present: bool,
    queues_present: impl FnOnce() -> bool,
) -> Verdict {
    if marker_present {
        Verdict::Ok
    } else if subscriptions_present {
        Verdict::Adopt
    } else if queues_present() {
        Verdict::Lost
    } else {
        Verdict::FreshInstall
    }
}

/// Why the state could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum InstallationError {
    /// Redis did not answer.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The broker could not be asked whether the namespace's queues exist.
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    /// The stored marker is not a marker.
    #[error("installation marker is corrupt: {0}")]
    Corrupt(String),
}

/// Whether the marker exists.
pub async fn marker_present(
    redis: &mut ConnectionManager,
    keys: &RedisKeys,
) -> Result<bool, redis::RedisError> {
    redis.exists(keys.installation()).await
}

/// The marker, if any.
pub async fn read_marker(
    redis: &mut ConnectionManager,
    keys: &RedisKeys,
) -> Result<Option<Marker>, InstallationError> {
    let text: Option<String> = redis.get(keys.installation()).await?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| InstallationError::Corrupt(e.to_string())))
        .transpose()
}

/// Writes `marker`, replacing any (an import or a declared fresh start).
pub async fn write_marker(
    redis: &mut ConnectionManager,
    keys: &RedisKeys,
    marker: &Marker,
) -> Result<(), InstallationError> {
    let text =
        serde_json::to_string(marker).map_err(|e| InstallationError::Corrupt(e.to_string()))?;
    let _: () = redis.set(keys.installation(), text).await?;
    Ok(())
}

/// Whether the broker has the namespace's intake queue (a passive declare
/// on a short-lived connection: a missing queue closes only that channel).
pub async fn broker_has_namespace(
    amqp_url: &BrokerNodes,
    topology: &Topology,
) -> Result<bool, lapin::Error> {
    let connection = BrokerConnector::new(amqp_url.clone())
        .connect("state-check")
        .await?;
    // An installation moving to quorum queues may still have only its
    // classic intake queue.
    let mut queues = vec![topology.ingest_queue()];
    queues.extend(topology.legacy().map(|legacy| legacy.ingest_queue()));
    let mut exists = false;
    for queue in queues {
        match crate::amqp::migration::depth(&connection, &queue).await {
            Ok(found) => exists |= found.is_some(),
            Err(error) => {
                let _ = connection.close(200, "state check failed".into()).await;
                return Err(error.into());
            }
        }
    }
    if !exists {
        tracing::debug!("intake queue absent");
    }
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        connection.close(200, "state check done".into()),
    )
    .await;
    Ok(exists)
}

/// Checks the state and executes the verdict: writes the marker on a fresh
/// install, records a loss in `readiness` (and clears it when the marker is back).
pub async fn check(
    redis: &mut ConnectionManager,
    keys: &RedisKeys,
    amqp_url: &BrokerNodes,
    topology: &Topology,
    readiness: &Readiness,
) -> Result<Verdict, InstallationError> {
    let present = marker_present(redis, keys).await?;
    let subscriptions: bool = if present {
        false
    } else {
        redis.exists(keys.subscription_ids()).await?
    };
    let queues = if present || subscriptions {
        false
    } else {
        broker_has_namespace(amqp_url, topology).await?
    };
    let verdict = decide(present, subscriptions, || queues);
    match verdict {
        Verdict::Ok => {
            if readiness.is_state_lost() {
                tracing::warn!("installation marker is back (state restored or fresh start declared); resuming");
            }
            readiness.set_state_lost(false);
        }
        Verdict::FreshInstall | Verdict::Adopt => {
            // NX: two services starting together write one marker.
            let marker = Marker::fresh();
            let text = serde_json::to_string(&marker)
                .map_err(|e| InstallationError::Corrupt(e.to_string()))?;
            let written: bool = redis::cmd("SET")
                .arg(keys.installation())
                .arg(text)
                .arg("NX")
                .query_async::<Option<String>>(redis)
                .await?
                .is_some();
            if written {
                if verdict == Verdict::Adopt {
                    tracing::warn!(installation = %marker.id, "no installation marker but subscriptions present (an installation from before the marker): marker written");
                } else {
                    tracing::info!(installation = %marker.id, "fresh installation: marker written");
                }
            }
            readiness.set_state_lost(false);
        }
        Verdict::Lost => {
            if !readiness.is_state_lost() {
                tracing::error!(
                    marker = %keys.installation(),
                    queue = %topology.ingest_queue(),
                    "STATE LOST: Redis has no installation marker but the broker has this namespace's queues; \
                     refusing intake and delivery until an export is imported (POST /v1/admin/import) \
                     or a fresh start is declared (POST /v1/admin/reset-state)"
                );
            }
            readiness.set_state_lost(true);
        }
    }
    Ok(verdict)
}

/// [`check`] before a service starts its intake or consumers, retried until
/// it can be answered (a broker or Redis that is down) or `cancel`: a fresh
/// install must be marked before the intake queue is declared, or the next
/// check would take the new queue for lost state.
pub async fn check_at_start(
    redis: &ConnectionManager,
    keys: &RedisKeys,
    amqp_url: &BrokerNodes,
    topology: &Topology,
    readiness: &Readiness,
    cancel: &CancellationToken,
) {
    let mut redis = redis.clone();
    let mut backoff = Backoff::redis_retry();
    loop {
        match check(&mut redis, keys, amqp_url, topology, readiness).await {
            Ok(_) => return,
            Err(error) => {
                tracing::warn!(%error, "cannot check the installation marker yet; retrying");
            }
        }
        if !backoff.pause(cancel).await {
            return;
        }
    }
}

/// Keeps the Redis and state flags of `readiness` current: pings Redis and
/// checks the marker every [`WATCH_EVERY`] until `cancel`.
pub async fn watch(
    mut redis: ConnectionManager,
    keys: RedisKeys,
    amqp_url: BrokerNodes,
    topology: Topology,
    readiness: Arc<Readiness>,
    cancel: CancellationToken,
) {
    loop {
        let pong: Result<String, _> = redis::cmd("PING").query_async(&mut redis).await;
        readiness.set_redis(pong.is_ok());
        if pong.is_ok() {
            if let Err(error) = check(&mut redis, &keys, &amqp_url, &topology, &readiness).await {
                tracing::warn!(%error, "checking the installation marker failed");
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(WATCH_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_present_marker_is_ok_without_asking_the_broker() {
        for subscriptions in [false, true] {
            assert_eq!(
                decide(true, subscriptions, || panic!("the broker is not asked")),
                Verdict::Ok
            );
        }
    }

    #[test]
    fn no_marker_and_no_queues_is_a_fresh_install() {
        assert_eq!(decide(false, false, || false), Verdict::FreshInstall);
    }

    #[test]
    fn no_marker_while_the_queues_exist_is_lost_state() {
        assert_eq!(decide(false, false, || true), Verdict::Lost);
    }

    #[test]
    fn no_marker_with_subscriptions_is_an_installation_from_before_the_marker() {
        assert_eq!(
            decide(false, true, || panic!("the broker is not asked")),
            Verdict::Adopt
        );
    }

    #[test]
    fn a_marker_round_trips_through_json() {
        let marker = Marker::fresh();
        let text = serde_json::to_string(&marker).expect("serialises");
        assert_eq!(
            serde_json::from_str::<Marker>(&text).expect("parses"),
            marker
        );
    }
}
