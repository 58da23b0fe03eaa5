//! The ingest service's broker connection: a supervisor that connects (to
//! any node of the configured list, moving on when its node is lost),
//! declares the topology, shares a confirmed publisher with the HTTP API, runs
//! the AMQP intake, and starts over with backoff whenever the connection fails.

use crate::amqp_intake::AmqpIntake;
use postline_shared::amqp::broker::ConfirmedPublisher;
use postline_shared::amqp::broker_nodes::{BrokerConnector, BrokerNodes};
use postline_shared::amqp::topology::Topology;
use postline_shared::model::ids::SubscriptionId;
use postline_shared::redis::catalog::Catalog;
use postline_shared::runtime::backoff::Backoff;
use postline_shared::runtime::ops::Readiness;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The live broker connection as the HTTP API sees it.
#[derive(Clone)]
pub struct BrokerLink {
    /// The confirmed publisher shared by both intakes.
    pub publisher: ConfirmedPublisher,
    connection: Arc<lapin::Connection>,
}

impl BrokerLink {
    /// A short-lived channel for management operations (declare, delete,
    /// inspect): a failing operation closes its channel, and that must never
    /// be the publisher's, which intake depends on.
    pub async fn admin_channel(&self) -> Result<lapin::Channel, lapin::Error> {
        self.connection.create_channel().await
    }

    /// Whether the link can still be used.
    pub fn is_connected(&self) -> bool {
        self.publisher.is_connected()
    }
}

/// The current broker link, or `None` while disconnected.
pub type LinkHandle = watch::Receiver<Option<BrokerLink>>;

/// Runs the broker side of ingest until `stop_intake` and then `close` are cancelled.
///
/// `stop_intake` ends AMQP consumption (the first step of shutdown);
/// `close` drops the connection once the HTTP API has drained.
#[allow(clippy::too_many_arguments)]
pub async fn supervise(
    amqp_url: BrokerNodes,
    topology: Topology,
    catalog: Arc<Catalog>,
    intake: AmqpIntake,
    link_tx: watch::Sender<Option<BrokerLink>>,
    readiness: Arc<Readiness>,
    stop_intake: CancellationToken,
    close: CancellationToken,
) {
    let mut backoff = Backoff::broker_reconnect();
    // Any node of the list will do; after a loss, another node is tried first.
    let connector = BrokerConnector::new(amqp_url);
    loop {
        let Some(connection) = connector.connect_with_retry("ingest", &close).await else {
            return;
        };
        let connection = Arc::new(connection);
        match prepare(&connection, &topology, &catalog).await {
            Ok(publisher) => {
                tracing::info!("connected to the broker; topology declared");
                backoff.reset();
                link_tx.send_replace(Some(BrokerLink {
                    publisher: publisher.clone(),
                    connection: connection.clone(),
                }));
                readiness.set_broker(true);
                let intake_result = intake.run(&connection, &publisher, &stop_intake).await;
                if let Err(error) = intake_result {
                    tracing::warn!(%error, "AMQP intake stopped");
                }
                if stop_intake.is_cancelled() {
                    // Keep publishing for HTTP requests still draining.
                    close.cancelled().await;
                    readiness.set_broker(false);
                    link_tx.send_replace(None);
                    let _ = connection.close(200, "shutdown".into()).await;
                    return;
                }
            }
            Err(error) => tracing::warn!(%error, "preparing the broker connection failed"),
        }
        readiness.set_broker(false);
        link_tx.send_replace(None);
        connector.lost();
        let _ = connection.close(320, "reconnecting".into()).await;
        if !backoff.pause(&close).await {
            return;
        }
    }
}

async fn prepare(
    connection: &lapin::Connection,
    topology: &Topology,
    catalog: &Catalog,
) -> Result<ConfirmedPublisher, lapin::Error> {
    let publisher = ConfirmedPublisher::open(connection).await?;
    topology.declare_core(publisher.channel()).await?;
    // Re-declaring every known subscription queue heals one lost in a crash
    // between storing a subscription and declaring its queue.
    let mut delays = std::collections::BTreeSet::new();
    for subscription in catalog.all() {
        topology
            .declare_subscription(publisher.channel(), subscription.id())
            .await?;
        delays.extend(subscription.spec.retry.delays_ms());
    }
    // Every ladder step in use has its delay queue before delivery needs it.
    // Best effort, on a channel of its own: a refused declaration (a classic
    // delay queue whose home node is down) closes its channel, and must not
    // keep intake from starting; a retry that still meets a missing delay
    // queue declares it then.
    let mut legacy_delays = delays.clone();
    legacy_delays.extend(postline_shared::model::retry_policy::RETRY_AFTER_STEPS_MS);
    let declared = match connection.create_channel().await {
        Ok(channel) => {
            let declared = topology.declare_delay_queues(&channel, delays).await;
            let _ = channel.close(200, "delay queues declared".into()).await;
            declared
        }
        Err(error) => Err(error),
    };
    if let Err(error) = declared {
        tracing::warn!(%error, "declaring the delay queues failed; each is declared when a retry first needs it");
    }
    // Moving from classic to quorum queues: the classic ones get no new
    // copies from now on (before intake publishes anything); what they hold
    // is drained first (see `postline_shared::amqp::migration`).
    if let Some(legacy) = topology.legacy() {
        let ids: Vec<SubscriptionId> = catalog.all().iter().map(|s| s.id().clone()).collect();
        Topology::unbind_legacy(&legacy, connection, &ids, legacy_delays).await?;
    }
    Ok(publisher)
}
