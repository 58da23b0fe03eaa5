//! Keeps one consumer running per active subscription: connects to the
//! broker, starts, updates and stops consumers as subscriptions change, and
//! starts everything over after a lost connection (lapin does not recover).

use crate::consumer::{ConsumerContext, Ended, SubscriptionConsumer};
use lapin::Connection;
use postline_shared::broker::{self, ConfirmedPublisher};
use postline_shared::ops::Readiness;
use postline_shared::subscription::catalog::Catalog;
use postline_shared::subscription::{Subscription, SubscriptionStatus};
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
}

/// The consumers of one connection. Their tasks live in a `JoinSet`, so if
/// the supervisor itself is dropped (a simulated crash) every consumer is
/// aborted with it and the connection closes, returning unacked messages.
#[derive(Default)]
struct Consumers {
    by_id: HashMap<String, RunningConsumer>,
    tasks: JoinSet<()>,
}

/// The delivery supervisor.
pub struct Supervisor {
    /// Broker URL.
    pub amqp_url: String,
    /// Shared consumer context.
    pub context: Arc<ConsumerContext>,
    /// Current subscriptions.
    pub catalog: Arc<Catalog>,
    /// Readiness flags to keep current.
    pub readiness: Arc<Readiness>,
}

impl Supervisor {
    /// Runs until `shutdown`; `changed` carries ids of subscriptions that changed.
    pub async fn run(
        self,
        mut changed: mpsc::UnboundedReceiver<String>,
        shutdown: CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(200);
        while let Some(connection) =
            broker::connect_with_retry(&self.amqp_url, "delivery", &shutdown).await
        {
            let publisher = match ConfirmedPublisher::open(&connection).await {
                Ok(publisher) => publisher,
                Err(error) => {
                    tracing::warn!(%error, "opening the publisher channel failed");
                    let _ = connection.close(320, "reconnecting".into()).await;
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            backoff = Duration::from_millis(200);
            self.readiness.set_broker(true);
            tracing::info!(
                subscriptions = self.catalog.len(),
                "connected to the broker; starting consumers"
            );
            let connection = Arc::new(connection);
            let mut consumers = Consumers::default();
            // Everything is reconciled on connect; queued change notices are stale.
            while changed.try_recv().is_ok() {}
            for subscription in self.catalog.all() {
                self.reconcile(&mut consumers, subscription.id(), &connection, &publisher);
            }
            let mut health = tokio::time::interval(HEALTH_CHECK_EVERY);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    Some(id) = changed.recv() => self.reconcile(&mut consumers, &id, &connection, &publisher),
                    _ = health.tick() => {
                        if !connection.status().connected() {
                            tracing::warn!("broker connection lost; restarting all consumers");
                            break;
                        }
                        // A channel error (e.g. a refused delay-queue declaration)
                        // closes the publisher alone; without it no retry can be
                        // scheduled, so start over on a fresh connection.
                        if !publisher.is_connected() {
                            tracing::warn!("publisher channel closed; reconnecting");
                            break;
                        }
                        // Restart consumers that ended on their own (queue
                        // re-created, channel error) if still wanted.
                        while consumers.tasks.try_join_next().is_some() {}
                        let ended: Vec<String> = consumers
                            .by_id
                            .iter()
                            .filter(|(_, c)| c.task.is_finished())
                            .map(|(id, _)| id.clone())
                            .collect();
                        for id in ended {
                            consumers.by_id.remove(&id);
                            self.reconcile(&mut consumers, &id, &connection, &publisher);
                        }
                    }
                }
            }
            stop_all(&mut consumers).await;
            self.context.metrics.consumers.set(0);
            self.readiness.set_broker(false);
            let _ = connection.close(200, "delivery stopping".into()).await;
            if shutdown.is_cancelled() {
                break;
            }
        }
        tracing::info!("delivery supervisor stopped");
    }

    fn reconcile(
        &self,
        consumers: &mut Consumers,
        id: &str,
        connection: &Arc<Connection>,
        publisher: &ConfirmedPublisher,
    ) {
        let wanted = self
            .catalog
            .get(id)
            .filter(|s| s.spec.status == SubscriptionStatus::Active);
        match (wanted, consumers.by_id.get(id)) {
            // Same order mode: the running session picks up the new settings live.
            (Some(subscription), Some(running))
                if running.settings.borrow().spec.order == subscription.spec.order =>
            {
                running.settings.send_replace(subscription);
            }
            // New, or the order mode changed (it decides how a session consumes).
            (Some(subscription), _) => {
                if let Some(previous) = consumers.by_id.remove(id) {
                    previous.stop.cancel();
                }
                let running = self.spawn(
                    &mut consumers.tasks,
                    subscription,
                    connection.clone(),
                    publisher.clone(),
                );
                consumers.by_id.insert(id.to_string(), running);
            }
            (None, Some(_)) => {
                if let Some(running) = consumers.by_id.remove(id) {
                    tracing::info!(subscription = %id, "subscription no longer active; stopping its consumer");
                    // Stopping lets the POST in flight finish; the task is not awaited here.
                    running.stop.cancel();
                }
            }
            (None, None) => {}
        }
        self.context
            .metrics
            .consumers
            .set(consumers.by_id.len() as i64);
    }

    fn spawn(
        &self,
        tasks: &mut JoinSet<()>,
        subscription: Arc<Subscription>,
        connection: Arc<Connection>,
        publisher: ConfirmedPublisher,
    ) -> RunningConsumer {
        let (settings, settings_rx) = watch::channel(subscription.clone());
        let stop = CancellationToken::new();
        let consumer = SubscriptionConsumer {
            context: self.context.clone(),
            subscription: settings_rx,
            publisher,
        };
        let task_stop = stop.clone();
        let mut settings_changed = consumer.subscription.clone();
        let task = tasks.spawn(async move {
            let id = subscription.id().to_string();
            let mut idle_pause = MIN_IDLE_PAUSE;
            loop {
                match consumer.run(&connection, &task_stop).await {
                    Ok(Ended::Wait { until, progressed }) => {
                        let wait = (until - chrono::Utc::now()).to_std().unwrap_or_default();
                        // A session that settled nothing and has nothing to
                        // wait for backs off, so it cannot spin on the queue.
                        let wait = if progressed || wait > MIN_IDLE_PAUSE {
                            idle_pause = MIN_IDLE_PAUSE;
                            wait
                        } else {
                            idle_pause = (idle_pause * 2).min(MAX_IDLE_PAUSE);
                            idle_pause
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
        }
    }
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
