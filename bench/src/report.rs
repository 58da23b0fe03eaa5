//! The run's report: one summary table for people, the same as JSON for
//! comparing runs, and the targets the issue set, met or not.

use crate::ceiling::Ceiling;
use crate::pipeline::PipelineReport;
use crate::startup::StartupReport;
use serde::Serialize;
use std::fmt::Write as _;

/// Scenario a (one strict subscription): events per second at least.
const A_EVENTS_PER_SEC: f64 = 4_000.0;
/// Scenario b: share of the broker-only two-hop bound of the same run.
const B_OF_TWO_HOP: f64 = 0.90;
/// Scenario e: p99 latency below this, in milliseconds.
const E_P99_MS: f64 = 20.0;

/// Which side of its bound a measured figure must be on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    /// The figure is at least this.
    AtLeast(f64),
    /// The figure is below this.
    Below(f64),
}

impl Goal {
    /// Whether `value` meets the goal.
    pub fn met_by(self, value: f64) -> bool {
        match self {
            Self::AtLeast(bound) => value >= bound,
            Self::Below(bound) => value < bound,
        }
    }
}

/// A speed target on one figure of one scenario: what `--rounds` judges on
/// the median over rounds, and a single run on its own figure.
#[derive(Debug, Clone, Copy)]
pub struct Criterion {
    /// Scenario name.
    pub scenario: &'static str,
    /// The figure, as the table and the target lines name it.
    pub figure: &'static str,
    /// The goal.
    pub goal: Goal,
    /// Reads the figure off a scenario's report (`None`: not measured,
    /// e.g. b without a ceiling).
    pub measure: fn(&PipelineReport) -> Option<f64>,
    /// Formats a value of the figure, without its unit.
    pub number: fn(f64) -> String,
    /// The figure's unit, after the number.
    pub unit: &'static str,
}

/// The speed targets judged on one figure: a's throughput, b's share of the
/// two-hop bound, e's p99.
pub const CRITERIA: [Criterion; 3] = [
    Criterion {
        scenario: "a",
        figure: "throughput",
        goal: Goal::AtLeast(A_EVENTS_PER_SEC),
        measure: |p| Some(p.events_per_sec),
        number: |v| format!("{v:.0}"),
        unit: " events/s",
    },
    Criterion {
        scenario: "b",
        figure: "throughput",
        goal: Goal::AtLeast(B_OF_TWO_HOP),
        measure: |p| p.ratio_to_two_hop,
        number: |v| format!("{:.0}%", v * 100.0),
        unit: " of the broker-only two-hop bound",
    },
    Criterion {
        scenario: "e",
        figure: "p99 latency",
        goal: Goal::Below(E_P99_MS),
        measure: |p| Some(p.latency.p99_ms),
        number: |v| format!("{v:.1}"),
        unit: " ms",
    },
];

impl Criterion {
    /// What the criterion wants, e.g. `throughput >= 4000 events/s`.
    pub fn wanted(&self) -> String {
        let (relation, bound) = match self.goal {
            Goal::AtLeast(bound) => (">=", bound),
            Goal::Below(bound) => ("<", bound),
        };
        format!("{} {relation} {}", self.figure, self.show(bound))
    }

    /// A value of the figure with its unit, e.g. `3196 events/s`.
    pub fn show(&self, value: f64) -> String {
        format!("{}{}", (self.number)(value), self.unit)
    }

    /// The criterion of scenario `name`, if it has one.
    pub fn of(name: &str) -> Option<&'static Criterion> {
        CRITERIA.iter().find(|c| c.scenario == name)
    }
}

/// One target and whether this run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// Scenario.
    pub scenario: String,
    /// What is measured, with the bound.
    pub wanted: String,
    /// What this run got.
    pub got: String,
    /// Whether it was met.
    pub met: bool,
}

/// Everything one bench run found.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// The commit measured, when known.
    pub commit: Option<String>,
    /// CPU cores.
    pub cores: usize,
    /// 1-minute load average before the run.
    pub load_before: Option<f64>,
    /// 1-minute load average after the run.
    pub load_after: Option<f64>,
    /// The command line.
    pub command: String,
    /// The broker's one-hop ceiling.
    pub ceiling: Option<Ceiling>,
    /// The cluster's ceiling with quorum queues (scenario g).
    pub cluster_ceiling: Option<Ceiling>,
    /// Pipeline scenarios.
    pub pipelines: Vec<PipelineReport>,
    /// Scenario f.
    pub startup: Option<StartupReport>,
    /// Scenarios that could not complete, with why.
    pub errors: Vec<String>,
    /// The targets.
    pub targets: Vec<Target>,
}

impl RunReport {
    /// Whether every check passed and every scenario completed.
    pub fn checks_passed(&self) -> bool {
        self.errors.is_empty()
            && self.pipelines.iter().all(|p| p.check.passed())
            && self.startup.as_ref().is_none_or(|s| s.check.passed())
    }

    /// Whether every target measured was met.
    pub fn targets_met(&self) -> bool {
        self.targets.iter().all(|t| t.met)
    }

    /// Works out the targets from the results.
    pub fn evaluate_targets(&mut self) {
        let mut targets = Vec::new();
        for p in &self.pipelines {
            let Some(criterion) = Criterion::of(&p.name) else {
                continue;
            };
            let Some(value) = (criterion.measure)(p) else {
                continue;
            };
            targets.push(Target {
                scenario: p.name.clone(),
                wanted: criterion.wanted(),
                got: format!("{}, check {}", criterion.show(value), p.check.verdict()),
                met: criterion.goal.met_by(value) && p.check.passed(),
            });
        }
        let named = |name: &str| self.pipelines.iter().find(|p| p.name == name);
        if let (Some(d2), Some(b)) = (named("d2"), named("b")) {
            targets.push(Target {
                scenario: "d2".into(),
                wanted: "HTTP batches >= the AMQP intake of b, in events/s".into(),
                got: format!(
                    "{:.0} events/s against b's {:.0}, check {}",
                    d2.events_per_sec,
                    b.events_per_sec,
                    d2.check.verdict()
                ),
                met: d2.events_per_sec >= b.events_per_sec && d2.check.passed(),
            });
        }
        if let Some((few, many)) = self.registered_intake() {
            targets.push(Target {
                scenario: "f".into(),
                wanted: format!(
                    "ingest CPU per event with {} registered within 1.5x of {} registered",
                    many.0, few.0
                ),
                got: format!("{:.1} us against {:.1} us", many.1, few.1),
                met: many.1 <= few.1 * 1.5,
            });
        }
        if let Some(s) = &self.startup {
            targets.push(Target {
                scenario: "f".into(),
                wanted: format!("{} subscriptions: delivering < 30 s", s.registered),
                got: format!(
                    "ready {:.2} s, delivering {:.2} s",
                    s.ready_secs, s.delivering_secs
                ),
                met: s.delivering_secs < 30.0 && s.check.passed(),
            });
            targets.push(Target {
                scenario: "f".into(),
                wanted: "resident memory < 300 MiB".into(),
                got: format!("{:.1} MiB (peak {:.1})", s.rss_mib, s.rss_peak_mib),
                met: s.rss_peak_mib < 300.0,
            });
        }
        self.targets = targets;
    }

    /// f's intake runs as (registered, ingest CPU us per event), fewest
    /// registered first: every event of those runs has exactly one delivery.
    pub fn registered_intake(&self) -> Option<((usize, f64), (usize, f64))> {
        let mut runs: Vec<(usize, f64)> = self
            .pipelines
            .iter()
            .filter_map(|p| {
                let registered = p.name.strip_prefix("f/")?.parse().ok()?;
                Some((registered, p.cpu_us_per_delivery.get("ingest").copied()?))
            })
            .collect();
        runs.sort_by_key(|(registered, _)| *registered);
        match runs.as_slice() {
            [few, .., many] => Some((*few, *many)),
            _ => None,
        }
    }

    /// The summary table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let load = |l: Option<f64>| l.map_or("?".into(), |l| format!("{l:.2}"));
        let _ = writeln!(
            out,
            "Postline bench {} | commit {} | {} cores | load {} -> {}",
            self.started_at,
            self.commit.as_deref().unwrap_or("?"),
            self.cores,
            load(self.load_before),
            load(self.load_after),
        );
        let _ = writeln!(out, "command: {}", self.command);
        let _ = writeln!(
            out,
            "{:<32} {:>8} {:>5} {:>7} {:>8} {:>9} {:>8} {:>7} {:>7} {:>7} {:>7} {:>9}  check",
            "scenario",
            "intake",
            "subs",
            "events",
            "ev/s",
            "deliv/s",
            "vs ceil",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "ingest/all"
        );
        if let Some(c) = &self.ceiling {
            write_ceiling_rows(&mut out, "ceiling", "broker-only two-hop bound", c);
        }
        if let Some(c) = &self.cluster_ceiling {
            write_ceiling_rows(&mut out, "cluster ceiling", "cluster two-hop bound", c);
        }
        for p in &self.pipelines {
            let _ = writeln!(
                out,
                "{:<32} {:>8} {:>5} {:>7} {:>8.0} {:>9.0} {:>8} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>9}  {}{}",
                format!("{}  {}", p.name, p.title),
                p.intake,
                p.subscriptions,
                p.events,
                p.events_per_sec,
                p.deliveries_per_sec,
                p.ratio_to_ceiling
                    .map_or("-".into(), |r| format!("{:.1}%", r * 100.0)),
                p.latency.p50_ms,
                p.latency.p95_ms,
                p.latency.p99_ms,
                p.latency.max_ms,
                p.ingest_secs.map_or("-".into(), |s| format!("{s:.2}/{:.2}", p.secs)),
                p.check.verdict(),
                match (p.ratio_to_two_hop, p.ratio_to_awaited) {
                    (Some(r), _) => format!("  ({:.0}% of the two-hop bound)", r * 100.0),
                    (None, Some(r)) => format!("  ({:.0}% of the awaited-confirm bound)", r * 100.0),
                    (None, None) => String::new(),
                },
            );
        }
        if let Some(s) = &self.startup {
            let _ = writeln!(
                out,
                "f  {} registered, {} active: ready {:.2} s, delivering {:.2} s, RSS {:.1} MiB (ready {:.1}, peak {:.1}), consumers {}, register {:.1} s  {}",
                s.registered,
                s.active,
                s.ready_secs,
                s.delivering_secs,
                s.rss_mib,
                s.rss_ready_mib,
                s.rss_peak_mib,
                s.consumers.map_or("?".into(), |c| format!("{c:.0}")),
                s.register_secs,
                s.check.verdict(),
            );
        }
        if let Some((few, many)) = self.registered_intake() {
            let _ = writeln!(
                out,
                "f  ingest CPU per event: {:.1} us with {} subscriptions registered, {:.1} us with {} registered ({:.2}x)",
                few.1,
                few.0,
                many.1,
                many.0,
                many.1 / few.1.max(1e-9),
            );
        }
        if !self.pipelines.is_empty() {
            let components = [
                "producer", "ingest", "delivery", "receiver", "lapin_io", "broker", "redis",
                "other",
            ];
            let _ = write!(out, "\nCPU us per delivery   ");
            // Ceiling rows: the consumer's CPU shows under `delivery`.
            for c in components {
                let _ = write!(out, "{c:>9}");
            }
            let _ = writeln!(out, "   machine busy");
            if let Some(c) = &self.ceiling {
                for run in &c.runs {
                    let _ = write!(
                        out,
                        "{:<22}",
                        format!("ceiling {}", ack_label(run.ack))
                            .chars()
                            .take(21)
                            .collect::<String>()
                    );
                    for component in components {
                        let component = if component == "delivery" {
                            "bench_other"
                        } else {
                            component
                        };
                        let us = run
                            .cpu_us_per_message
                            .get(component)
                            .copied()
                            .unwrap_or(0.0);
                        let _ = write!(out, "{us:>9.1}");
                    }
                    let _ = writeln!(out, "   {:?}", run.queue);
                }
            }
            for p in &self.pipelines {
                let _ = write!(out, "{:<22}", p.name);
                for c in components {
                    let us = p.cpu_us_per_delivery.get(c).copied().unwrap_or(0.0);
                    let _ = write!(out, "{us:>9.1}");
                }
                let busy = 100.0 * p.cpu.machine_busy_secs
                    / (p.cpu.wall_secs.max(1e-9) * self.cores.max(1) as f64);
                let _ = writeln!(out, "   {busy:>5.0}%");
            }
            let _ = writeln!(
                out,
                "\nStages (means over the run): ingest publish+confirm per event, delivery POST, Redis PING round trip p50/p99"
            );
            let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2} ms"));
            for p in &self.pipelines {
                let _ = writeln!(
                    out,
                    "{:<22}confirm {:>10}  POST {:>10}  redis rtt {:.2}/{:.2} ms",
                    p.name,
                    ms(p.stages.ingest_confirm_ms),
                    ms(p.stages.delivery_post_ms),
                    p.stages.redis_rtt.p50_ms,
                    p.stages.redis_rtt.p99_ms,
                );
            }
            let _ = writeln!(
                out,
                "\nRedis commands per delivery (server-wide counters: other clients add to them)"
            );
            for p in &self.pipelines {
                let calls: Vec<String> = p
                    .redis_per_delivery
                    .iter()
                    .filter(|(_, &n)| n >= 0.01)
                    .map(|(command, n)| format!("{command} {n:.2}"))
                    .collect();
                let _ = writeln!(out, "{:<22}{}", p.name, calls.join(", "));
            }
        }
        for p in self.pipelines.iter().filter(|p| !p.check.passed()) {
            let _ = writeln!(out, "\n{} check failed: {}", p.name, p.check.verdict());
            for example in &p.check.examples {
                let _ = writeln!(out, "  {example}");
            }
        }
        if !self.targets.is_empty() {
            let _ = writeln!(out, "\nTargets");
            for t in &self.targets {
                let _ = writeln!(
                    out,
                    "{}",
                    target_line(t.met, &t.scenario, &t.wanted, &t.got)
                );
            }
        }
        for error in &self.errors {
            let _ = writeln!(out, "ERROR {error}");
        }
        out
    }
}

/// One target's line: `  [met] a: throughput >= 4000 events/s (got …)`.
pub fn target_line(met: bool, scenario: &str, wanted: &str, got: &str) -> String {
    let verdict = if met { "met" } else { "MISSED" };
    format!("  [{verdict}] {scenario}: {wanted} (got {got})")
}

/// The rows of one ceiling measurement in the summary table.
fn write_ceiling_rows(out: &mut String, label: &str, bound_label: &str, c: &Ceiling) {
    for run in &c.runs {
        let _ = writeln!(
            out,
            "{:<32} {:>8} {:>5} {:>7} {:>8} {:>9.0} {:>8}",
            format!(
                "{label}: {}{} queue, {} B, ack {}{}",
                if c.quorum { "quorum " } else { "" },
                match run.queue {
                    crate::ceiling::QueueStyle::Plain => "plain".to_string(),
                    crate::ceiling::QueueStyle::Subscription => "sub-style".into(),
                    crate::ceiling::QueueStyle::Spread(n) => format!("{n} sub-style"),
                },
                c.message_bytes,
                ack_label(run.ack),
                match run.publishing {
                    crate::ceiling::Publishing::Windowed => String::new(),
                    crate::ceiling::Publishing::Awaited(n) => format!(", {n} awaiting"),
                }
            ),
            "amqp",
            "-",
            run.messages,
            "-",
            run.per_sec,
            format!("{:.0}%", 100.0 * run.per_sec / c.per_sec.max(1e-9)),
        );
    }
    if let Some(bound) = c.two_hop_per_sec {
        let _ = writeln!(
            out,
            "{:<32} {:>8} {:>5} {:>7} {:>8} {:>9.0}   (1 / (1/plain + 1/{}-queue spread))",
            bound_label, "", c.spread, "", "", bound, c.spread
        );
    }
}

fn ack_label(ack: crate::ceiling::AckMode) -> String {
    match ack {
        crate::ceiling::AckMode::Each => "each".into(),
        crate::ceiling::AckMode::Batched(n) => format!("x{n}"),
    }
}
