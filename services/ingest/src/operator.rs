//! Operational events for the operator: `postline.subscription.disabled`,
//! `postline.subscription.blocked` (a strict subscription blocked longer
//! than a threshold), `postline.event.parked` and `postline.state.lost`,
//! sent to `POSTLINE_OPERATOR_WEBHOOK_URL`, signed (Standard Webhooks) with
//! `POSTLINE_OPERATOR_WEBHOOK_SECRET`.
//!
//! The endpoint is an internal subscription with the reserved id
//! [`OPERATOR_ID`] (refused by the API's id rule, hidden from it), kept up to
//! date from the environment at ingest start. Ingest scans the catalog and
//! the delivery records every few seconds; each occurrence becomes one event
//! with an id derived from the occurrence, claimed once across replicas with
//! `SET NX`, and published (confirmed) straight to the operator's queue, so
//! delivery sends and retries it like any event and its delivered marker
//! stops a repeat. `postline.state.lost` cannot go through Redis when Redis
//! lost its state: the ingest process that sees the loss POSTs it directly,
//! retried a few times, once per loss per process (in memory).

use crate::broker_link::LinkHandle;
use chrono::{DateTime, Utc};
use postline_shared::amqp::topology::Topology;
use postline_shared::model::envelope::Envelope;
use postline_shared::model::secret::Secret;
use postline_shared::model::subscription::{Subscription, SubscriptionSpec};
use postline_shared::outbound::webhook_request::WebhookRequest;
use postline_shared::outbound::OutboundClient;
use postline_shared::redis::catalog::Catalog;
use postline_shared::redis::delivery_state::DeliveryState;
use postline_shared::redis::keys::RedisKeys;
use postline_shared::redis::subscription_store::SubscriptionStore;
use postline_shared::runtime::ops::Readiness;
use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The reserved id of the operator's subscription (the API's id rule
/// refuses a leading `_`, so no partner subscription can take it).
pub const OPERATOR_ID: &str = "_operator";
/// How long a claimed occurrence is remembered (longer than the ladder).
const CLAIM_TTL_SECS: u64 = 8 * 24 * 3600;
/// Direct attempts of `postline.state.lost`.
const STATE_LOST_ATTEMPTS: u32 = 5;

/// Where and how operational events go.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// The operator's endpoint.
    pub url: String,
    /// The signing secret (`whsec_…`).
    pub secret: Secret,
    /// A strict subscription blocked this long is reported.
    pub blocked_alert_after: Duration,
    /// How often subscriptions are scanned.
    pub scan_every: Duration,
}

/// One thing the operator is told about, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occurrence {
    /// Event type.
    pub event_type: &'static str,
    /// The subscription concerned.
    pub subscription: String,
    /// What makes this occurrence distinct from an earlier one of the same kind.
    pub distinct: String,
    /// The event payload.
    pub payload: serde_json::Value,
}

impl Occurrence {
    /// The event id: the same for the same occurrence, whoever sends it.
    pub fn event_id(&self) -> String {
        let digest = Sha256::digest(
            format!(
                "{}|{}|{}",
                self.event_type, self.subscription, self.distinct
            )
            .as_bytes(),
        );
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("op-{hex}")
    }
}

/// What one subscription's records call for (pure: the scan's decision).
pub fn occurrences(
    subscription: &Subscription,
    block: Option<&postline_shared::redis::delivery_state::Block>,
    parked: &[postline_shared::redis::delivery_state::ParkedEvent],
    blocked_alert_after: Duration,
    now: DateTime<Utc>,
) -> Vec<Occurrence> {
    let id = subscription.id().to_string();
    let mut found = Vec::new();
    if let Some(disabled) = &subscription.disabled {
        found.push(Occurrence {
            event_type: "postline.subscription.disabled",
            subscription: id.clone(),
            distinct: disabled.at.to_rfc3339(),
            payload: serde_json::json!({
                "subscription": id,
                "at": disabled.at,
                "reason": disabled.reason,
                "event_id": disabled.event_id,
                "backlog_discarded": disabled.backlog_discarded,
            }),
        });
    }
    // A disabled subscription keeps its block for when it is re-enabled: it
    // is reported as disabled, not as blocked.
    if let Some(block) = block.filter(|_| subscription.disabled.is_none()) {
        let blocked_for = (now - block.first_failure_at).to_std().unwrap_or_default();
        if blocked_for >= blocked_alert_after {
            found.push(Occurrence {
                event_type: "postline.subscription.blocked",
                subscription: id.clone(),
                distinct: format!("{}|{}", block.event_id, block.first_failure_at.to_rfc3339()),
                payload: serde_json::json!({
                    "subscription": id,
                    "event_id": block.event_id,
                    "first_failure_at": block.first_failure_at,
                    "attempts": block.attempts,
                    "next_attempt_at": block.next_attempt_at,
                    "blocked_secs": blocked_for.as_secs(),
                }),
            });
        }
    }
    for event in parked {
        found.push(Occurrence {
            event_type: "postline.event.parked",
            subscription: id.clone(),
            distinct: format!("{}|{}", event.event_id, event.given_up_at.to_rfc3339()),
            payload: serde_json::json!({
                "subscription": id,
                "event_id": event.event_id,
                "event_type": event.event_type,
                "attempts": event.attempts,
                "first_failure_at": event.first_failure_at,
                "given_up_at": event.given_up_at,
            }),
        });
    }
    found
}

/// The incarnation of the operator's subscription, the same in every install.
const OPERATOR_INCARNATION: &str = "operator";

/// The operator's subscription as configured.
pub fn operator_subscription(config: &OperatorConfig) -> Result<Subscription, serde_json::Error> {
    let spec: SubscriptionSpec = serde_json::from_value(serde_json::json!({
        "id": OPERATOR_ID,
        "endpoint": config.url,
        "event_types": ["postline.*"],
        "order": "none",
        "secrets": [config.secret.expose()],
    }))?;
    let mut subscription = Subscription::new(spec, Utc::now());
    // One fixed incarnation: ingest re-installs this subscription at every
    // start, and the copies queued before must stay deliverable.
    subscription.incarnation = OPERATOR_INCARNATION.to_string();
    Ok(subscription)
}

fn envelope_of(occurrence: &Occurrence) -> Option<Envelope> {
    let input = serde_json::json!({
        "id": occurrence.event_id(),
        "type": occurrence.event_type,
        "payload": occurrence.payload,
    });
    Envelope::from_input_bytes(input.to_string().as_bytes(), Utc::now())
        .map_err(|problem| tracing::warn!(?problem, "building an operational event failed"))
        .ok()
}

/// The running notifier's parts.
pub struct Notifier {
    /// Configuration.
    pub config: OperatorConfig,
    /// The operator's subscription (also kept in memory for `state.lost`).
    pub subscription: Subscription,
    /// Subscriptions.
    pub catalog: Arc<Catalog>,
    /// Blocks and parked events.
    pub delivery: DeliveryState,
    /// Claims.
    pub redis: ConnectionManager,
    /// Key names.
    pub keys: RedisKeys,
    /// The publisher.
    pub broker: LinkHandle,
    /// Exchange names.
    pub topology: Topology,
    /// The lost-state flag.
    pub readiness: Arc<Readiness>,
    /// For `state.lost`, sent directly.
    pub client: OutboundClient,
    /// The installation marker id seen at start (names the loss).
    pub installation_id: Option<String>,
    /// Where the operator's subscription is (re)installed after a recovery.
    pub store: SubscriptionStore,
}

/// Stores the operator's subscription (or replaces it with the configured one).
pub async fn install(store: &SubscriptionStore, subscription: &Subscription) {
    if let Err(error) = store.put_internal(subscription).await {
        tracing::warn!(%error, "storing the operator's subscription failed");
    }
}

impl Notifier {
    /// Scans until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        let mut lost_reported = false;
        loop {
            if self.readiness.is_state_lost() {
                if !lost_reported {
                    lost_reported = true;
                    self.report_state_lost(&cancel).await;
                }
            } else {
                if lost_reported {
                    // Recovered: an import or a fresh start may lack the
                    // operator's subscription; put the configured one back.
                    install(&self.store, &self.subscription).await;
                    self.catalog.upsert(self.subscription.clone());
                }
                lost_reported = false;
                self.scan().await;
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.config.scan_every) => {}
            }
        }
    }

    async fn scan(&self) {
        let now = Utc::now();
        for subscription in self.catalog.all() {
            if subscription.id() == OPERATOR_ID {
                continue;
            }
            let id = subscription.id();
            let block = match self.delivery.block(id).await {
                Ok(block) => block,
                Err(error) => {
                    tracing::debug!(%error, "operator scan: reading a block failed");
                    return;
                }
            };
            let parked = self.delivery.parked(id).await.unwrap_or_default();
            for occurrence in occurrences(
                &subscription,
                block.as_ref(),
                &parked,
                self.config.blocked_alert_after,
                now,
            ) {
                self.send_once(&occurrence).await;
            }
        }
    }

    /// Claims the occurrence and publishes it to the operator's queue; a
    /// failed publish releases the claim, so the next scan tries again.
    async fn send_once(&self, occurrence: &Occurrence) {
        let Some(envelope) = envelope_of(occurrence) else {
            return;
        };
        let Some(link) = self.broker.borrow().clone().filter(|l| l.is_connected()) else {
            return;
        };
        let claim = self.keys.operator_event(&envelope.id);
        let mut redis = self.redis.clone();
        let claimed: Result<Option<String>, _> = redis::cmd("SET")
            .arg(&claim)
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(CLAIM_TTL_SECS)
            .query_async(&mut redis)
            .await;
        if !matches!(claimed, Ok(Some(_))) {
            return;
        }
        let published = link
            .publisher
            .publish_confirmed(
                &self.topology.deliver_exchange(),
                OPERATOR_ID,
                &envelope.to_wire(),
                crate::intake::copy::for_incarnation(
                    crate::intake::copy::copy_properties(&envelope),
                    OPERATOR_INCARNATION,
                ),
            )
            .await;
        match published {
            Ok(()) => {
                tracing::info!(event_type = occurrence.event_type, subscription = %occurrence.subscription, event_id = %envelope.id, "operational event queued");
            }
            Err(error) => {
                tracing::warn!(%error, "publishing an operational event failed; retried at the next scan");
                let _: Result<(), _> = redis::cmd("DEL").arg(&claim).query_async(&mut redis).await;
            }
        }
    }

    /// POSTs `postline.state.lost` directly (Redis cannot be trusted now).
    async fn report_state_lost(&self, cancel: &CancellationToken) {
        let occurrence = Occurrence {
            event_type: "postline.state.lost",
            subscription: String::new(),
            distinct: self.installation_id.clone().unwrap_or_default(),
            payload: serde_json::json!({
                "installation": self.installation_id,
                "detected_at": Utc::now(),
                "detail": "Redis has no installation marker while the broker has this namespace's queues; intake and delivery hold still until POST /v1/admin/import or POST /v1/admin/reset-state",
            }),
        };
        let Some(envelope) = envelope_of(&occurrence) else {
            return;
        };
        let mut pause = Duration::from_millis(500);
        for attempt in 1..=STATE_LOST_ATTEMPTS {
            let request =
                WebhookRequest::build(&self.subscription, &envelope, Utc::now().timestamp());
            // Through the guarded client: bounded answer, no URL in errors.
            let sent = postline_shared::outbound::attempt::send(
                &self.client,
                &request,
                self.subscription.spec.success,
            )
            .await;
            match sent.result {
                Ok(_) => {
                    tracing::info!(event_id = %envelope.id, "postline.state.lost sent to the operator");
                    return;
                }
                Err(error) => {
                    tracing::warn!(attempt, %error, "sending postline.state.lost failed");
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            pause *= 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscription() -> Subscription {
        serde_json::from_value(serde_json::json!({
            "spec": {"id": "acme", "endpoint": "https://a.example/h", "event_types": ["x.*"]},
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
        }))
        .expect("a subscription")
    }

    #[test]
    fn a_healthy_subscription_calls_for_nothing() {
        assert!(occurrences(
            &subscription(),
            None,
            &[],
            Duration::from_secs(3600),
            Utc::now()
        )
        .is_empty());
    }

    #[test]
    fn a_disabled_subscription_is_reported_disabled_not_blocked_by_the_block_it_keeps() {
        let now = Utc::now();
        let block = postline_shared::redis::delivery_state::Block {
            event_id: "e1".parse().unwrap(),
            retry_id: "r1".parse().unwrap(),
            attempts: 9,
            next_attempt_at: now,
            first_failure_at: now - chrono::TimeDelta::hours(2),
            last_error: "receiver answered 500".into(),
            envelope: "{}".into(),
            incarnation: String::new(),
        };
        let blocked = occurrences(
            &subscription(),
            Some(&block),
            &[],
            Duration::from_secs(60),
            now,
        );
        let types: Vec<_> = blocked.iter().map(|o| o.event_type).collect();
        assert_eq!(types, ["postline.subscription.blocked"]);
        let mut disabled = subscription();
        disabled.disabled = Some(postline_shared::model::subscription::Disabled {
            at: now,
            reason: "retry policy exhausted".into(),
            event_id: "e1".parse().unwrap(),
            backlog_discarded: false,
        });
        let found = occurrences(&disabled, Some(&block), &[], Duration::from_secs(60), now);
        let types: Vec<_> = found.iter().map(|o| o.event_type).collect();
        assert_eq!(types, ["postline.subscription.disabled"]);
    }

    #[test]
    fn the_same_occurrence_has_the_same_event_id_and_another_has_another() {
        let a = Occurrence {
            event_type: "postline.event.parked",
            subscription: "acme".into(),
            distinct: "e-1|t".into(),
            payload: serde_json::Value::Null,
        };
        let mut b = a.clone();
        assert_eq!(a.event_id(), b.event_id());
        b.distinct = "e-2|t".into();
        assert_ne!(a.event_id(), b.event_id());
    }
}
