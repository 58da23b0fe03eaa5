//! Keeps one consumer running per active subscription: connects to the
//! broker, starts, updates and stops consumers as subscriptions change, and
//! starts everything over after a lost connection (lapin does not recover).

use crate::connections::{Connections, Placement};
use crate::consumer::{ConsumerContext, Ended, SubscriptionConsumer};
use crate::pacing::Pacer;
use postline_shared::amqp::broker_nodes::{BrokerConnector, BrokerNodes};
use postline_shared::model::ids::SubscriptionId;
use postline_shared::model::subscription::{Subscription, SubscriptionStatus};
use postline_shared::redis::catalog::Catalog;
use postline_shared::runtime::backoff::{self, Backoff};
use postline_shared::runtime::ops::Readiness;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// Shortest pause between sessions that made no progress (a blocked event
/// due but not yet back from its delay queue, a Redis hiccup).
const MIN_IDLE_PAUSE: Duration = Duration::from_millis(50);
/// Longest such pause.
const MAX_IDLE_PAUSE: Duration = Duration::from_secs(5);
/// How often connection health and crashed consumers are checked.
const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(1);

struct RunningConsumer {
    settings: watch::Sender<Arc<Subscription>>,
    stop: CancellationToken,
    task: AbortHandle,
    shard: usize,
}

/// The consumers of one generation of connections. Their tasks live in a
/// `JoinSet`, so if the supervisor itself is dropped (a simulated crash)
/// every consumer is aborted with it and the connections close, returning
/// unacked messages.
struct Consumers {
    connections: Connections,
    by_id: HashMap<SubscriptionId, RunningConsumer>,
    tasks: JoinSet<()>,
}

impl Consumers {
    fn remove(&mut self, id: &SubscriptionId) -> Option<RunningConsumer> {
        let running = self.by_id.remove(id)?;
        self.connections.release(running.shard);
        Some(running)
    }
}

/// The delivery supervisor.
pub struct Supervisor {
    /// Broker nodes (any one will do; another is tried when one is lost).
    pub amqp_url: BrokerNodes,
    /// Shared consumer context.
    pub context: Arc<ConsumerContext>,
    /// Current subscriptions.
    pub catalog: Arc<Catalog>,
    /// Readiness flags to keep current.
    pub readiness: Arc<Readiness>,
    /// Most subscription consumers (channels) per broker connection.
    pub channels_per_connection: usize,
}

impl Supervisor {
    /// Runs until `shutdown`; `changed` carries ids of subscriptions that changed.
    pub async fn run(
        self,
        mut changed: mpsc::UnboundedReceiver<SubscriptionId>,
        shutdown: CancellationToken,
    ) {
        let mut backoff = Backoff::broker_reconnect();
        let connector = Arc::new(BrokerConnector::new(self.amqp_url.clone()));
        while !shutdown.is_cancelled() {
            if self.readiness.is_state_lost() {
                // Redis lost its state: nothing is consumed (every event
                // stays in its queue, in order) until it is restored.
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(HEALTH_CHECK_EVERY) => {}
                }
                continue;
            }
            let connections = match Connections::open(
                connector.clone(),
                self.channels_per_connection,
            )
            .await
            {
                Ok(connections) => connections,
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "broker connection failed");
                    if !backoff::pause(delay, &shutdown).await {
                        break;
                    }
                    continue;
                }
            };
            backoff.reset();
            tracing::info!(
                subscriptions = self.catalog.len(),
                "connected to the broker; starting consumers"
            );
            let mut consumers = Consumers {
                connections,
                by_id: HashMap::new(),
                tasks: JoinSet::new(),
            };
            // Everything is reconciled on connect; queued change notices are stale.
            while changed.try_recv().is_ok() {}
            let mut healthy = true;
            for subscription in self.catalog.all() {
                if !self.reconcile(&mut consumers, subscription.id()).await {
                    healthy = false;
                    break;
                }
            }
            self.readiness.set_broker(healthy);
            if healthy {
                tracing::info!(
                    consumers = consumers.by_id.len(),
                    connections = consumers.connections.len(),
                    "consumers started"
                );
            }
            let mut health = tokio::time::interval(HEALTH_CHECK_EVERY);
            while healthy {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    Some(id) = changed.recv() => healthy = self.reconcile(&mut consumers, &id).await,
                    _ = health.tick() => {
                        if self.readiness.is_state_lost() {
                            tracing::warn!("state lost: stopping every consumer until it is restored");
                            break;
                        }
                        // A lost connection, or a publisher closed by a channel
                        // error (e.g. a refused delay-queue declaration): no
                        // retry could be scheduled, so start over.
                        if !consumers.connections.healthy() {
                            tracing::warn!("broker connection or publisher lost; restarting all consumers");
                            break;
                        }
                        // Restart consumers that ended on their own (queue
                        // re-created, channel error) if still wanted.
                        while consumers.tasks.try_join_next().is_some() {}
                        let ended: Vec<SubscriptionId> = consumers
                            .by_id
                            .iter()
                            .filter(|(_, c)| c.task.is_finished())
                            .map(|(id, _)| id.clone())
                            .collect();
                        for id in ended {
                            consumers.remove(&id);
                            healthy = self.reconcile(&mut consumers, &id).await;
                        }
                    }
                }
            }
            stop_all(&mut consumers).await;
            self.context.metrics.consumers.set(0);
            self.context.metrics.connections.set(0);
            self.readiness.set_broker(false);
            if !shutdown.is_cancelled() && !self.readiness.is_state_lost() {
                // Starting over: the next generation tries another node first.
                connector.lost();
            }
            consumers.connections.close().await;
        }
        tracing::info!("delivery supervisor stopped");
    }

    /// Brings the consumer of `id` in line with the catalog; false when no
    /// connection could be opened for it (the caller starts over).
    async fn reconcile(&self, consumers: &mut Consumers, id: &SubscriptionId) -> bool {
        let wanted = self
            .catalog
            .get(id)
            .filter(|s| s.spec.status == SubscriptionStatus::Active);
        match (wanted, consumers.by_id.get(id)) {
            // Same order mode and interval: the running session picks up the new settings live.
            (Some(subscription), Some(running))
                if same_session_shape(&running.settings.borrow(), &subscription) =>
            {
                running.settings.send_replace(subscription);
            }
            // New, or the order mode or interval changed (they decide how a session consumes).
            (Some(subscription), _) => {
                if let Some(previous) = consumers.remove(id) {
                    previous.stop.cancel();
                }
                let placement = match consumers.connections.place().await {
                    Ok(placement) => placement,
                    Err(error) => {
                        tracing::warn!(%error, "opening another broker connection failed");
                        return false;
                    }
                };
                let running = self.spawn(&mut consumers.tasks, subscription, placement);
                consumers.by_id.insert(id.clone(), running);
            }
            (None, Some(_)) => {
                if let Some(running) = consumers.remove(id) {
                    tracing::info!(subscription = %id, "subscription no longer active; stopping its consumer");
                    // Stopping lets the POST in flight finish; the task is not awaited here.
                    running.stop.cancel();
                }
            }
            (None, None) => {}
        }
        let metrics = &self.context.metrics;
        metrics.consumers.set(consumers.by_id.len() as i64);
        metrics.connections.set(consumers.connections.len() as i64);
        true
    }

    fn spawn(
        &self,
        tasks: &mut JoinSet<()>,
        subscription: Arc<Subscription>,
        placement: Placement,
    ) -> RunningConsumer {
        let Placement {
            shard,
            connection,
            publisher,
        } = placement;
        let (settings, settings_rx) = watch::channel(subscription.clone());
        let stop = CancellationToken::new();
        let consumer = SubscriptionConsumer {
            context: self.context.clone(),
            subscription: settings_rx,
            publisher,
            pacer: Arc::new(Pacer::default()),
        };
        let task_stop = stop.clone();
        let mut settings_changed = consumer.subscription.clone();
        let task = tasks.spawn(async move {
            let id = subscription.id().clone();
            let mut idle = Backoff::new(MIN_IDLE_PAUSE, MAX_IDLE_PAUSE);
            loop {
                match consumer.run(&connection, &task_stop).await {
                    Ok(Ended::Wait { until, progressed }) => {
                        let wait = (until - chrono::Utc::now()).to_std().unwrap_or_default();
                        // A session that settled nothing and has nothing to
                        // wait for backs off, so it cannot spin on the queue.
                        let wait = if progressed || wait > MIN_IDLE_PAUSE {
                            idle.reset();
                            wait
                        } else {
                            idle.next_delay()
                        };
                        settings_changed.borrow_and_update();
                        // Nothing is held while waiting: the blocked event is in
                        // a delay queue, the rest in the subscription queue. A
                        // settings change (or "retry now") ends the wait early.
                        tokio::select! {
                            _ = task_stop.cancelled() => return,
                            _ = tokio::time::sleep(wait) => {}
                            _ = settings_changed.changed() => {}
                        }
                    }
                    Ok(Ended::Disabled { .. }) => {
                        // Not restarted: the supervisor stops this consumer as
                        // soon as the catalog shows the subscription disabled.
                        task_stop.cancelled().await;
                        return;
                    }
                    Ok(Ended::Stopped) => return,
                    Ok(Ended::Cancelled) => {
                        tracing::info!(subscription = %id, "broker cancelled the consumer (queue deleted?)");
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(subscription = %id, %error, "consumer failed");
                        return;
                    }
                }
            }
        });
        RunningConsumer {
            settings,
            stop,
            task,
            shard,
        }
    }
}

/// Whether a running session can carry on under `new` settings: order
/// mode, interval and the prefetch window (`max_in_flight`, rate limit) are
/// fixed for a session's life; a new incarnation starts afresh.
fn same_session_shape(running: &Subscription, new: &Subscription) -> bool {
    let (a, b) = (&running.spec, &new.spec);
    a.order == b.order
        && a.interval_ms == b.interval_ms
        && a.max_in_flight == b.max_in_flight
        && a.rate_limit == b.rate_limit
        && running.incarnation == new.incarnation
}

async fn stop_all(consumers: &mut Consumers) {
    for running in consumers.by_id.values() {
        running.stop.cancel();
    }
    consumers.by_id.clear();
    // Consumers already stopping (paused or deleted subscriptions) are awaited too.
    while let Some(joined) = consumers.tasks.join_next().await {
        if let Err(error) = joined {
            tracing::warn!(%error, "consumer task failed");
        }
    }
}
