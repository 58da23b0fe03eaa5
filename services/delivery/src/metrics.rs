//! Delivery's Prometheus metrics.

use postline_shared::model::ids::SubscriptionId;
use postline_shared::runtime::metrics::{
    counter_vec, gauge, gauge_vec, latency, latency_histogram,
};
use prometheus::{Histogram, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Registry};

/// Counters, gauges and histograms of the delivery path.
#[derive(Clone)]
pub struct DeliveryMetrics {
    /// Outcomes and attempts by subscription: `delivered`, `failed_attempt`,
    /// `duplicate_skipped`, `superseded`, `held_back`, `given_up`,
    /// `discarded`, `invalid_message`, `deduplicated`, `completed_entity`,
    /// `held_for_tick`.
    pub deliveries: IntCounterVec,
    /// Duration of each POST, by result (`success`, `failure`).
    pub attempt_duration: HistogramVec,
    /// Event timestamp → receiver accepted it.
    pub end_to_end_latency: Histogram,
    /// Subscription consumers running in this process.
    pub consumers: IntGauge,
    /// Broker connections the consumers are spread over.
    pub connections: IntGauge,
    /// Retries sent to a delay queue, by step (`delay_ms`).
    pub retries_scheduled: IntCounterVec,
    /// Events given up, by rule (`disable`, `skip`).
    pub give_ups: IntCounterVec,
    /// Strict subscriptions blocked on the ladder right now.
    pub subscriptions_blocked: IntGauge,
    /// Seconds since the blocked event of each blocked subscription first failed.
    pub blocked_age: IntGaugeVec,
    /// Subscriptions disabled by their retry policy.
    pub subscriptions_disabled: IntGauge,
    /// Parked (given-up, replayable) events per subscription.
    pub parked_events: IntGaugeVec,
    /// Events waiting in each subscription's queue, as the broker reports it.
    pub subscription_backlog: IntGaugeVec,
}

impl DeliveryMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        Ok(Self {
            deliveries: counter_vec(
                registry,
                "postline_deliveries_total",
                "Delivery attempts and outcomes by subscription",
                &["subscription", "outcome"],
            )?,
            attempt_duration: latency_histogram(
                registry,
                "postline_delivery_duration_seconds",
                "Duration of one POST to a receiver",
                &["result"],
            )?,
            end_to_end_latency: latency(
                registry,
                "postline_end_to_end_latency_seconds",
                "Time from the event's timestamp to its successful delivery",
            )?,
            consumers: gauge(
                registry,
                "postline_delivery_consumers",
                "Subscription consumers running in this process",
            )?,
            connections: gauge(
                registry,
                "postline_delivery_connections",
                "Broker connections the subscription consumers are spread over",
            )?,
            retries_scheduled: counter_vec(
                registry,
                "postline_retries_scheduled_total",
                "Failed events sent to a delay queue, by ladder step",
                &["delay_ms"],
            )?,
            give_ups: counter_vec(
                registry,
                "postline_give_ups_total",
                "Events whose retry policy was exhausted, by give-up rule",
                &["rule"],
            )?,
            subscriptions_blocked: gauge(
                registry,
                "postline_subscriptions_blocked",
                "Strict subscriptions waiting on the ladder for a failed event",
            )?,
            blocked_age: gauge_vec(
                registry,
                "postline_blocked_event_age_seconds",
                "Seconds since the blocked event of a subscription first failed",
                &["subscription"],
            )?,
            subscriptions_disabled: gauge(
                registry,
                "postline_subscriptions_disabled",
                "Subscriptions disabled because their retry policy gave up",
            )?,
            parked_events: gauge_vec(
                registry,
                "postline_parked_events",
                "Given-up events kept for replay, by subscription",
                &["subscription"],
            )?,
            subscription_backlog: gauge_vec(
                registry,
                "postline_subscription_backlog",
                "Events waiting in a subscription's queue (read from the broker periodically)",
                &["subscription"],
            )?,
        })
    }

    /// Counts one outcome for a subscription.
    pub fn count(&self, subscription: &SubscriptionId, outcome: &str) {
        self.deliveries
            .with_label_values(&[subscription.as_str(), outcome])
            .inc();
    }
}
