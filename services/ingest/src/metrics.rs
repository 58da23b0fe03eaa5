//! Ingest's Prometheus metrics.

use postline_shared::runtime::metrics::{counter, counter_vec, latency_histogram};
use prometheus::{HistogramVec, IntCounter, IntCounterVec, Registry};

/// Counters and histograms of the intake path.
#[derive(Clone)]
pub struct IngestMetrics {
    /// Events accepted, by source (`amqp`, `http`).
    pub ingested: IntCounterVec,
    /// Events refused, by source and reason code.
    pub rejected: IntCounterVec,
    /// Events accepted again under an id already seen (not republished).
    pub duplicates: IntCounterVec,
    /// Accepted events no subscription wanted.
    pub unmatched: IntCounter,
    /// Copies published to subscription queues (confirmed).
    pub copies_published: IntCounter,
    /// Time from first publish to last confirm of an event's copies.
    pub publish_latency: HistogramVec,
    /// PINGs sent before storing a subscription, by result (`ok`, `failed`).
    pub pings: IntCounterVec,
}

impl IngestMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        Ok(Self {
            ingested: counter_vec(
                registry,
                "postline_events_ingested_total",
                "Events accepted by intake",
                &["source"],
            )?,
            rejected: counter_vec(
                registry,
                "postline_events_rejected_total",
                "Events refused by intake, by reason",
                &["source", "reason"],
            )?,
            duplicates: counter_vec(
                registry,
                "postline_events_duplicate_total",
                "Events whose id was already accepted (not published again)",
                &["source"],
            )?,
            unmatched: counter(
                registry,
                "postline_events_unmatched_total",
                "Accepted events that no subscription wanted",
            )?,
            copies_published: counter(
                registry,
                "postline_copies_published_total",
                "Event copies published to subscription queues and confirmed",
            )?,
            publish_latency: latency_histogram(
                registry,
                "postline_publish_confirm_seconds",
                "Time to publish and confirm all copies of one event",
                &["source"],
            )?,
            pings: counter_vec(
                registry,
                "postline_pings_total",
                "PINGs sent to endpoints before storing a created or updated subscription",
                &["result"],
            )?,
        })
    }
}
