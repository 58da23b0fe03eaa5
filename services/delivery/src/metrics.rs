//! Delivery's Prometheus metrics.

use postline_shared::metrics::{counter_vec, gauge, latency, latency_histogram};
use prometheus::{Histogram, HistogramVec, IntCounterVec, IntGauge, Registry};

/// Counters, gauges and histograms of the delivery path.
#[derive(Clone)]
pub struct DeliveryMetrics {
    /// Final outcomes and attempts by subscription: `delivered`, `failed_attempt`,
    /// `handed_back`, `duplicate_skipped`, `invalid_message`.
    pub deliveries: IntCounterVec,
    /// Duration of each POST, by result (`success`, `failure`).
    pub attempt_duration: HistogramVec,
    /// Event timestamp → receiver accepted it.
    pub end_to_end_latency: Histogram,
    /// Subscription consumers running in this process.
    pub consumers: IntGauge,
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
        })
    }

    /// Counts one outcome for a subscription.
    pub fn count(&self, subscription: &str, outcome: &str) {
        self.deliveries
            .with_label_values(&[subscription, outcome])
            .inc();
    }
}
