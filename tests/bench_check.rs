//! The benchmark's verdict, small: tiny scenarios run through the bench
//! library against the real broker and Redis, and the exactly-once and
//! in-order check must pass. Only outcomes are asserted, never speed.

use postline_bench::pipeline::{self, Intake, Layout, PipelineSpec};
use postline_bench::services::Tuning;
use postline_bench::Endpoints;
use std::time::Duration;

fn tiny(name: &str, layout: Layout, intake: Intake, events: usize) -> PipelineSpec {
    PipelineSpec {
        name: name.into(),
        title: format!("tiny {name}"),
        layout,
        intake,
        events,
        rate: None,
        message_bytes: 512,
        publish_window: 64,
        stall_timeout: Duration::from_secs(30),
        tuning: Tuning::default(),
        registered: layout.subscriptions(),
    }
}

async fn assert_passes(spec: PipelineSpec) {
    let report = pipeline::run(&Endpoints::from_env(), &spec)
        .await
        .unwrap_or_else(|e| panic!("scenario {} did not complete: {e}", spec.name));
    assert!(
        report.check.passed(),
        "scenario {}: {} {:?}",
        spec.name,
        report.check.verdict(),
        report.check.examples
    );
    assert_eq!(
        report.deliveries, report.deliveries_expected,
        "scenario {}",
        spec.name
    );
    assert_eq!(report.latency.count as u64, report.deliveries_expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_strict_subscription_gets_every_event_once_in_order() {
    assert_passes(tiny(
        "a",
        Layout::Spread { subscriptions: 1 },
        Intake::Amqp,
        60,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_spread_over_subscriptions_arrive_once_in_order() {
    assert_passes(tiny(
        "b",
        Layout::Spread { subscriptions: 4 },
        Intake::Amqp,
        80,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_reaches_every_subscription_once_in_order() {
    assert_passes(tiny(
        "c",
        Layout::FanOut { subscriptions: 3 },
        Intake::Amqp,
        30,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_intake_arrives_once_in_order() {
    assert_passes(tiny(
        "d",
        Layout::Spread { subscriptions: 3 },
        Intake::Http {
            clients: 2,
            batch: None,
        },
        30,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_batches_arrive_once_in_order() {
    assert_passes(tiny(
        "d2",
        Layout::Spread { subscriptions: 3 },
        Intake::Http {
            clients: 2,
            batch: Some(7),
        },
        45,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_that_cannot_match_get_nothing() {
    let mut spec = tiny("f", Layout::Spread { subscriptions: 2 }, Intake::Amqp, 30);
    spec.registered = 40;
    assert_passes(spec).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_offered_load_arrives_once_in_order() {
    let mut spec = tiny("e", Layout::Spread { subscriptions: 2 }, Intake::Amqp, 40);
    spec.rate = Some(200.0);
    assert_passes(spec).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ceiling_reports_every_run_and_both_bounds() {
    use postline_bench::ceiling::{self, CeilingSpec, Publishing};
    let spec = CeilingSpec {
        messages: 400,
        message_bytes: 64,
        confirm_window: 32,
        // Above the 64 of the batched-ack run, or its consumer waits forever.
        prefetch: 128,
        spread: 4,
        quorum: false,
        awaiting_publishers: 3,
    };
    let queue = format!("{}.ceiling", postline_bench::fresh_namespace());
    let measured = ceiling::measure(Endpoints::from_env().first_node(), &queue, &spec)
        .await
        .expect("the ceiling is measured");
    assert_eq!(measured.runs.len(), 5, "{:?}", measured.runs);
    let awaited = measured
        .runs
        .iter()
        .find(|run| run.publishing == Publishing::Awaited(3))
        .expect("an awaited run");
    // Every message of every run was consumed, or measure would have failed.
    assert_eq!(awaited.messages, 100);
    assert!(measured.runs.iter().all(|run| run.per_sec > 0.0));
    assert_eq!(measured.awaited_per_sec, Some(awaited.per_sec));
    assert!(measured.two_hop_per_sec.is_some_and(|bound| bound > 0.0));
}
