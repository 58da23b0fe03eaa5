//! Keeps the status gauges equal to what the shared records say: the ladder
//! gauges (blocked subscriptions and their age, disabled subscriptions,
//! parked events) from Redis and the catalog, and each subscription's
//! backlog (`postline_subscription_backlog`) from the broker.
//!
//! They are read from the shared records rather than counted by consumers,
//! so every replica reports the same, whole picture, whichever of them holds
//! a subscription's consumer.

use crate::metrics::DeliveryMetrics;
use chrono::Utc;
use lapin::{Channel, Connection};
use postline_shared::amqp::broker_nodes::{BrokerConnector, BrokerNodes};
use postline_shared::amqp::topology::Topology;
use postline_shared::model::ids::SubscriptionId;
use postline_shared::model::subscription::SubscriptionStatus;
use postline_shared::redis::catalog::Catalog;
use postline_shared::redis::delivery_state::DeliveryState;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// How often the gauges are refreshed.
const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// Subscriptions read per Redis round trip.
const CHUNK: usize = 1_000;

/// Refreshes the gauges every few seconds until `cancel`.
pub async fn run(
    catalog: Arc<Catalog>,
    state: DeliveryState,
    metrics: DeliveryMetrics,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(REFRESH_EVERY);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(error) = refresh(&catalog, &state, &metrics).await {
            tracing::debug!(%error, "refreshing the ladder gauges failed");
        }
    }
}

async fn refresh(
    catalog: &Catalog,
    state: &DeliveryState,
    metrics: &DeliveryMetrics,
) -> Result<(), postline_shared::redis::delivery_state::StateError> {
    let subscriptions = catalog.all();
    // A disabled subscription keeps its block for when it is re-enabled; it
    // counts as disabled, not blocked.
    let disabled: std::collections::HashSet<&SubscriptionId> = subscriptions
        .iter()
        .filter(|s| s.spec.status == SubscriptionStatus::Disabled)
        .map(|s| s.id())
        .collect();
    let ids: Vec<SubscriptionId> = subscriptions.iter().map(|s| s.id().clone()).collect();
    let mut blocked = Vec::new();
    let mut parked = Vec::new();
    for chunk in ids.chunks(CHUNK) {
        blocked.extend(state.blocked_since(chunk).await?);
        let counts = state.parked_counts(chunk).await?;
        parked.extend(chunk.iter().zip(counts).filter(|(_, n)| *n > 0));
    }
    blocked.retain(|(id, _)| !disabled.contains(id));
    let now = Utc::now();
    metrics.subscriptions_disabled.set(disabled.len() as i64);
    metrics.subscriptions_blocked.set(blocked.len() as i64);
    // Reset first so subscriptions no longer blocked (or parked) disappear.
    metrics.blocked_age.reset();
    for (id, since) in blocked {
        metrics
            .blocked_age
            .with_label_values(&[id.as_str()])
            .set((now - since).num_seconds().max(0));
    }
    metrics.parked_events.reset();
    for (id, count) in parked {
        metrics
            .parked_events
            .with_label_values(&[id.as_str()])
            .set(count as i64);
    }
    Ok(())
}

/// The shortest backlog refresh interval accepted (a zero would spin).
const MIN_BACKLOG_REFRESH: Duration = Duration::from_millis(100);
/// How long closing the backlog connection may take at shutdown.
const CLOSE_WITHIN: Duration = Duration::from_secs(2);

/// Keeps `postline_subscription_backlog` equal to the depth of every known
/// subscription's queue, read from the broker every `every` (one passive
/// declare per queue, on a connection of its own) until `cancel`.
pub async fn run_backlog(
    catalog: Arc<Catalog>,
    mut broker: BrokerDepths,
    metrics: DeliveryMetrics,
    every: Duration,
    cancel: CancellationToken,
) {
    let mut shown = HashSet::new();
    let mut known = HashSet::new();
    let mut tick = tokio::time::interval(every.max(MIN_BACKLOG_REFRESH));
    // A slow broker delays the next reading rather than bunching them up.
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            refreshed = refresh_backlog(&catalog, &mut broker, &metrics, &mut shown, &mut known) => {
                if let Err(error) = refreshed {
                    tracing::debug!(%error, "reading subscription backlogs from the broker failed");
                }
            }
        }
    }
    broker.close().await;
}

/// Which of the subscriptions now in the catalog get their queue read: those
/// that were there at the previous refresh too. A subscription that just
/// appeared (every one, right after start-up) may not have its queue
/// declared yet, and a passive declare of a missing queue makes the broker
/// close the channel, which lapin logs as an error; its depth is read from
/// the next refresh on.
fn to_probe<'a>(
    now: &'a [SubscriptionId],
    known: &HashSet<SubscriptionId>,
) -> Vec<&'a SubscriptionId> {
    now.iter().filter(|id| known.contains(*id)).collect()
}

/// Reads the depth of every subscription's queue (see [`to_probe`]), then
/// updates the gauge: sets the ones read and drops the series of
/// subscriptions that are gone (deleted, or their queue is missing). On a
/// broker error the gauge keeps its last values.
async fn refresh_backlog(
    catalog: &Catalog,
    broker: &mut BrokerDepths,
    metrics: &DeliveryMetrics,
    shown: &mut HashSet<SubscriptionId>,
    known: &mut HashSet<SubscriptionId>,
) -> Result<(), lapin::Error> {
    let now: Vec<SubscriptionId> = catalog.all().iter().map(|s| s.id().clone()).collect();
    let mut depths = Vec::new();
    for id in to_probe(&now, known) {
        if let Some(depth) = broker.depth(id).await? {
            depths.push((id.clone(), depth));
        }
    }
    // Only once the reads succeeded: after a broker error the same
    // subscriptions are probed again, none skipped.
    *known = now.into_iter().collect();
    let read: HashSet<SubscriptionId> = depths.iter().map(|(id, _)| id.clone()).collect();
    for gone in shown.difference(&read) {
        let _ = metrics
            .subscription_backlog
            .remove_label_values(&[gone.as_str()]);
    }
    for (id, depth) in &depths {
        metrics
            .subscription_backlog
            .with_label_values(&[id.as_str()])
            .set(i64::from(*depth));
    }
    *shown = read;
    Ok(())
}

/// Queue depths read from the broker over a connection (and channel) of its
/// own, opened on first use and again after a failure.
pub struct BrokerDepths {
    connector: BrokerConnector,
    topology: Topology,
    connection: Option<Connection>,
    channel: Option<Channel>,
}

impl BrokerDepths {
    /// Reads the queues of `topology` on whichever of `nodes` answers (connects lazily).
    pub fn new(nodes: &BrokerNodes, topology: Topology) -> Self {
        Self {
            connector: BrokerConnector::new(nodes.clone()),
            topology,
            connection: None,
            channel: None,
        }
    }

    async fn channel(&mut self) -> Result<Channel, lapin::Error> {
        let connected = |c: &Connection| c.status().connected();
        if !self.connection.as_ref().is_some_and(connected) {
            self.channel = None;
            let connection = self.connector.connect("delivery-backlog").await?;
            self.connection = Some(connection);
        }
        if let Some(channel) = self.channel.as_ref().filter(|c| c.status().connected()) {
            return Ok(channel.clone());
        }
        let Some(connection) = self.connection.as_ref() else {
            return Err(lapin::Error::from(std::io::Error::other(
                "no broker connection",
            )));
        };
        let channel = connection.create_channel().await?;
        self.channel = Some(channel.clone());
        Ok(channel)
    }

    /// The depth of a subscription's queue; `None` when the queue does not
    /// exist (the broker closes the channel, not the connection, for that).
    pub async fn depth(
        &mut self,
        subscription_id: &SubscriptionId,
    ) -> Result<Option<u32>, lapin::Error> {
        let channel = self.channel().await?;
        match self
            .topology
            .subscription_backlog(&channel, subscription_id)
            .await
        {
            Ok(depth) => Ok(Some(depth)),
            Err(error) => {
                self.channel = None;
                if self
                    .connection
                    .as_ref()
                    .is_some_and(|c| c.status().connected())
                {
                    Ok(None)
                } else {
                    self.connection = None;
                    Err(error)
                }
            }
        }
    }

    /// Closes the connection; a broker that does not answer cannot hold up
    /// delivery's shutdown for more than a moment.
    async fn close(&mut self) {
        self.channel = None;
        if let Some(connection) = self.connection.take() {
            let closing = connection.close(200, "delivery stopping".into());
            let _ = tokio::time::timeout(CLOSE_WITHIN, closing).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<SubscriptionId> {
        list.iter()
            .map(|s| SubscriptionId::parse(s).unwrap())
            .collect()
    }

    #[test]
    fn nothing_is_probed_at_the_first_refresh() {
        assert!(to_probe(&ids(&["a", "b"]), &HashSet::new()).is_empty());
    }

    #[test]
    fn subscriptions_known_at_the_previous_refresh_are_probed_and_new_ones_wait_one() {
        let known: HashSet<SubscriptionId> = ids(&["a", "b", "gone"]).into_iter().collect();
        assert_eq!(to_probe(&ids(&["a", "new", "b"]), &known), ["a", "b"]);
    }
}
