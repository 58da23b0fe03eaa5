//! `postline-bench`: measures the broker's one-hop ceiling, runs the chosen
//! scenarios through the whole pipeline, prints the summary table, writes it
//! as JSON, and exits non-zero when any event was lost, duplicated or reordered.

use anyhow::Context;
use postline_bench::options::{Options, Scenario, USAGE};
use postline_bench::report::RunReport;
use postline_bench::rounds::RoundsReport;
use postline_bench::{ceiling, cpu, pipeline, startup, Endpoints};
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let Some(options) = Options::parse(std::env::args().skip(1))? else {
        print!("{USAGE}");
        return Ok(());
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("pl-bench")
        .enable_all()
        .build()
        .context("building the bench runtime")?;
    let mut rounds = Vec::with_capacity(options.rounds);
    for round in 1..=options.rounds {
        if options.rounds > 1 {
            eprintln!("round {round} of {} ...", options.rounds);
        }
        let report = runtime.block_on(run(&options))?;
        if options.rounds > 1 {
            println!("\nRound {round} of {}", options.rounds);
        }
        print!("{}", report.table());
        rounds.push(report);
    }
    let (json, checks_passed, targets_met) = match rounds.as_slice() {
        [only] => (
            serde_json::to_string_pretty(only),
            only.checks_passed(),
            only.targets_met(),
        ),
        _ => {
            let rounds = RoundsReport::new(rounds);
            print!("{}", rounds.table());
            (
                serde_json::to_string_pretty(&rounds),
                rounds.checks_passed(),
                rounds.targets_met(),
            )
        }
    };
    let json = json.context("serializing the report")?;
    let path = options.json.clone().unwrap_or_else(default_json_path);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
    println!("\nJSON report: {}", path.display());
    runtime.shutdown_background();
    if !checks_passed {
        eprintln!(
            "FAILED: events were lost, duplicated or reordered, or a scenario did not complete"
        );
        std::process::exit(2);
    }
    if options.enforce_targets && !targets_met {
        eprintln!("FAILED: a target was missed (--enforce-targets)");
        std::process::exit(1);
    }
    Ok(())
}

async fn run(options: &Options) -> anyhow::Result<RunReport> {
    let endpoints = Endpoints::from_env();
    let mut report = RunReport {
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        commit: commit(),
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_before: cpu::load_average(),
        load_after: None,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        ceiling: None,
        cluster_ceiling: None,
        pipelines: Vec::new(),
        startup: None,
        errors: Vec::new(),
        targets: Vec::new(),
    };
    if options.ceiling {
        eprintln!("measuring the broker ceiling ...");
        let spec = ceiling::CeilingSpec {
            messages: options.ceiling_messages,
            message_bytes: options.message_bytes,
            confirm_window: options.publish_window,
            prefetch: options.ceiling_prefetch,
            spread: options.subscriptions,
            quorum: false,
            awaiting_publishers: if options.scenarios.contains(&Scenario::D) {
                options.http_clients
            } else {
                0
            },
        };
        let queue = format!("{}.ceiling", postline_bench::fresh_namespace());
        report.ceiling = Some(
            ceiling::measure(endpoints.first_node(), &queue, &spec)
                .await
                .context("measuring the broker ceiling")?,
        );
    }
    // g runs on the cluster, against the cluster's own ceiling (quorum queues).
    let cluster = endpoints.cluster(&options.cluster_url);
    if options.ceiling && options.scenarios.contains(&Scenario::G) {
        eprintln!("measuring the cluster's ceiling (quorum queues) ...");
        let spec = ceiling::CeilingSpec {
            messages: options.ceiling_messages,
            message_bytes: options.message_bytes,
            confirm_window: options.publish_window,
            prefetch: options.ceiling_prefetch,
            spread: options.subscriptions,
            quorum: true,
            awaiting_publishers: 0,
        };
        let queue = format!("{}.ceiling", postline_bench::fresh_namespace());
        match ceiling::measure(cluster.first_node(), &queue, &spec).await {
            Ok(ceiling) => report.cluster_ceiling = Some(ceiling),
            Err(error) => report
                .errors
                .push(format!("g: measuring the cluster's ceiling: {error}")),
        }
    }
    for &scenario in &options.scenarios {
        if scenario == Scenario::F {
            eprintln!("scenario f ...");
            match startup::run(&endpoints, &options.startup()).await {
                Ok(result) => report.startup = Some(result),
                Err(error) => report.errors.push(format!("f: {error}")),
            }
            for spec in options.registered_intake() {
                eprintln!("scenario {}: {} ...", spec.name, spec.title);
                match pipeline::run(&endpoints, &spec).await {
                    Ok(result) => report.pipelines.push(result),
                    Err(error) => report.errors.push(format!("{}: {error}", spec.name)),
                }
            }
            continue;
        }
        let Some(spec) = options.pipeline(scenario) else {
            continue;
        };
        eprintln!("scenario {}: {} ...", spec.name, spec.title);
        let (on, against) = if scenario == Scenario::G {
            (&cluster, &report.cluster_ceiling)
        } else {
            (&endpoints, &report.ceiling)
        };
        match pipeline::run(on, &spec).await {
            Ok(mut result) => {
                if let Some(c) = against {
                    result.set_ceiling(c);
                }
                eprintln!(
                    "  {:.0} deliveries/s, p99 {:.1} ms, check {}",
                    result.deliveries_per_sec,
                    result.latency.p99_ms,
                    result.check.verdict()
                );
                report.pipelines.push(result);
            }
            Err(error) => report.errors.push(format!("{}: {error}", spec.name)),
        }
    }
    report.load_after = cpu::load_average();
    report.evaluate_targets();
    Ok(report)
}

fn commit() -> Option<String> {
    let output = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .is_some_and(|o| !o.stdout.is_empty());
    let hash = String::from_utf8(output.stdout).ok()?.trim().to_string();
    (!hash.is_empty()).then(|| if dirty { format!("{hash}+dirty") } else { hash })
}

fn default_json_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    target.join("bench").join(format!("bench-{stamp}.json"))
}
