//! Command-line options of the bench binary, and the scenarios they select.

use crate::error::BenchError;
use crate::pipeline::{Intake, Layout, PipelineSpec};
use crate::services::Tuning;
use crate::startup::StartupSpec;
use std::path::PathBuf;
use std::time::Duration;

/// The scenarios, each selectable with `--scenario`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    /// (a) one strict subscription.
    A,
    /// (b) many strict subscriptions, events spread across them.
    B,
    /// (c) fan-out: one event type to many subscriptions.
    C,
    /// (d) HTTP intake instead of AMQP.
    D,
    /// (d2) HTTP intake posting batches (`POST /v1/events/batch`).
    D2,
    /// (e) a fixed offered load, for latency.
    E,
    /// (f) many subscriptions registered: delivery start-up time and
    /// memory, and ingest's CPU per event with many against few registered.
    F,
    /// (g) the layout of b on the three-node cluster with quorum queues,
    /// against a ceiling measured on that cluster.
    G,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 7] = [
        Self::A,
        Self::B,
        Self::C,
        Self::D,
        Self::D2,
        Self::E,
        Self::F,
    ];
    /// What runs without `--scenario`: the throughput and latency targets, about a minute.
    pub const DEFAULT: [Scenario; 3] = [Self::A, Self::B, Self::E];

    fn parse(text: &str) -> Result<Vec<Self>, BenchError> {
        let mut chosen = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.to_ascii_lowercase().as_str() {
                "all" => chosen.extend(Self::ALL),
                "a" => chosen.push(Self::A),
                "b" => chosen.push(Self::B),
                "c" => chosen.push(Self::C),
                "d" => chosen.push(Self::D),
                "d2" => chosen.push(Self::D2),
                "e" => chosen.push(Self::E),
                "f" => chosen.push(Self::F),
                "g" => chosen.push(Self::G),
                "ceiling" => {}
                other => {
                    return Err(BenchError::Invalid(format!(
                        "unknown scenario {other:?} (a, b, c, d, d2, e, f, g, all, ceiling)"
                    )))
                }
            }
        }
        chosen.sort();
        chosen.dedup();
        Ok(chosen)
    }
}

/// Everything the bench binary can be told.
#[derive(Debug, Clone)]
pub struct Options {
    /// Scenarios to run, in order.
    pub scenarios: Vec<Scenario>,
    /// Whether to measure the broker ceiling first.
    pub ceiling: bool,
    /// Messages per ceiling run.
    pub ceiling_messages: usize,
    /// Body size of intake events and ceiling messages.
    pub message_bytes: usize,
    /// Outstanding publisher confirms (producer and ceiling).
    pub publish_window: usize,
    /// Consumer prefetch of the ceiling.
    pub ceiling_prefetch: u16,
    /// Events of (a); `--events` sets every scenario's count at once.
    pub events_a: usize,
    /// Events of (b).
    pub events_b: usize,
    /// Events of (c) (each goes to every subscription).
    pub events_c: usize,
    /// Events of (d).
    pub events_d: usize,
    /// Events of (d2).
    pub events_d2: usize,
    /// Events per `POST /v1/events/batch` in (d2).
    pub batch_size: usize,
    /// Events of f's intake runs.
    pub events_f: usize,
    /// Subscriptions of (b), (d) and (e).
    pub subscriptions: usize,
    /// Subscriptions of the fan-out (c).
    pub fanout: usize,
    /// Concurrent HTTP producers of (d) and (d2).
    pub http_clients: usize,
    /// Offered load of (e), events/s.
    pub rate: f64,
    /// Duration of (e).
    pub duration: Duration,
    /// Subscriptions registered in (f).
    pub registered: usize,
    /// Active subscriptions in (f).
    pub active: usize,
    /// The delivery binary for (f) (built with cargo when absent).
    pub delivery_bin: Option<PathBuf>,
    /// Give up on a scenario when nothing arrives for this long.
    pub stall_timeout: Duration,
    /// Service settings.
    pub tuning: Tuning,
    /// Where to write the JSON report.
    pub json: Option<PathBuf>,
    /// Exit non-zero when a target is missed (a failed check always does).
    pub enforce_targets: bool,
    /// Times the whole run (ceiling and scenarios) is repeated; with more
    /// than one, the targets are judged on the median over the rounds.
    pub rounds: usize,
    /// The cluster's node URLs for g (`--cluster-url`; default
    /// `POSTLINE_BENCH_CLUSTER_URL`, else the nodes `scripts/cluster` runs).
    pub cluster_url: String,
}

/// The nodes `scripts/cluster start` runs on this machine.
pub const LOCAL_CLUSTER_URLS: &str = "amqp://guest:guest@127.0.0.1:5681/%2f,amqp://guest:guest@127.0.0.1:5682/%2f,amqp://guest:guest@127.0.0.1:5683/%2f";

impl Default for Options {
    fn default() -> Self {
        Self {
            scenarios: Scenario::DEFAULT.to_vec(),
            ceiling: true,
            ceiling_messages: 20_000,
            message_bytes: 512,
            publish_window: 512,
            ceiling_prefetch: 256,
            events_a: 10_000,
            events_b: 20_000,
            events_c: 1_000,
            events_d: 5_000,
            events_d2: 20_000,
            batch_size: 100,
            events_f: 5_000,
            subscriptions: 100,
            fanout: 50,
            http_clients: 16,
            rate: 1_000.0,
            duration: Duration::from_secs(10),
            registered: 10_000,
            active: 10,
            delivery_bin: None,
            stall_timeout: Duration::from_secs(20),
            tuning: Tuning::default(),
            json: None,
            enforce_targets: false,
            rounds: 1,
            cluster_url: std::env::var("POSTLINE_BENCH_CLUSTER_URL")
                .ok()
                .filter(|urls| !urls.trim().is_empty())
                .unwrap_or_else(|| LOCAL_CLUSTER_URLS.to_string()),
        }
    }
}

/// `--help` text.
pub const USAGE: &str = "\
postline-bench: the broker's own ceiling, then the whole Postline pipeline against it

USAGE: cargo run --release -p postline-bench -- [OPTIONS]

Scenarios (default: a,b,e; the broker ceiling is always measured first unless --no-ceiling):
  --scenario LIST        comma-separated: a,b,c,d,d2,e,f,g, or all (a-f)
      a  1 strict subscription (AMQP intake)
      b  --subscriptions strict subscriptions, events spread across them
      c  fan-out: 1 event type to --fanout subscriptions
      d  HTTP intake (POST /v1/events from --http-clients producers), layout of b
      d2 HTTP intake in batches (POST /v1/events/batch of --batch-size events
         from --http-clients producers), layout of b
      e  fixed offered load (--rate events/s for --duration s), layout of b: latency
      f  --registered subscriptions, --active of them active: delivery as its own
         process, time until ready and delivering, resident memory; then
         ingest's CPU per event (AMQP intake, --active subscriptions wanting
         the events) with --registered and with only --active registered
      g  the layout of b on a RabbitMQ cluster with quorum queues (--cluster-url,
         default the nodes of scripts/cluster), against a ceiling measured there

Sizes:
  --events N             events of a, b, c, d, d2 and f's intake runs
                         (defaults 10000, 20000, 1000, 5000, 20000, 5000)
  --subscriptions N      subscriptions of b, d, e (100)
  --fanout N             subscriptions of c (50)
  --http-clients N       concurrent HTTP producers of d and d2 (16)
  --batch-size N         events per batch in d2 (100)
  --rate N               offered load of e, events/s (1000)
  --duration SECS        duration of e (10)
  --registered N         subscriptions registered in f (10000)
  --active N             active subscriptions in f (10)
  --message-bytes N      event body size (512)
  --ceiling-messages N   messages per ceiling run (20000)
  --window N             outstanding publisher confirms (512)
  --prefetch N           ceiling consumer prefetch (256)
  --no-ceiling           skip the ceiling (ratios are then left out)
  --cluster-url URLS     g's broker nodes, comma-separated (POSTLINE_BENCH_CLUSTER_URL)

Services:
  --intake-prefetch N    ingest's POSTLINE_INTAKE_PREFETCH
  --delivery-prefetch N  delivery's POSTLINE_DELIVERY_PREFETCH
  --service-threads N    worker threads of each in-process service (2)
  --delivery-bin PATH    postline-delivery binary for f (default: cargo build --release)

Output:
  --json PATH            where to write the JSON report (default target/bench/bench-<time>.json)
  --stall-timeout SECS   give up when nothing arrives for this long (20)
  --enforce-targets      exit 1 when a target is missed, not only when a check fails
  --rounds N             repeat the whole run N times (each round with its own
                         ceiling) and judge the targets on the median (1)

Broker and Redis: POSTLINE_AMQP_URL and POSTLINE_REDIS_URL, default local.
";

impl Options {
    /// Parses command-line arguments (without the program name). `Ok(None)` means `--help`.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Self>, BenchError> {
        let mut options = Self::default();
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let (flag, inline) = match flag.split_once('=') {
                Some((flag, value)) => (flag.to_string(), Some(value.to_string())),
                None => (flag, None),
            };
            let mut value = || -> Result<String, BenchError> {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| BenchError::Invalid(format!("{flag} needs a value")))
            };
            match flag.as_str() {
                "-h" | "--help" => return Ok(None),
                "--scenario" | "--scenarios" => options.scenarios = Scenario::parse(&value()?)?,
                "--no-ceiling" => options.ceiling = false,
                "--cluster-url" => options.cluster_url = value()?,
                "--events" => {
                    let n = number(&flag, &value()?)?;
                    options.events_a = n;
                    options.events_b = n;
                    options.events_c = n;
                    options.events_d = n;
                    options.events_d2 = n;
                    options.events_f = n;
                }
                "--subscriptions" => options.subscriptions = number(&flag, &value()?)?,
                "--fanout" => options.fanout = number(&flag, &value()?)?,
                "--http-clients" => options.http_clients = number(&flag, &value()?)?,
                "--batch-size" => options.batch_size = number(&flag, &value()?)?,
                "--rate" => options.rate = number::<f64>(&flag, &value()?)?,
                "--duration" => {
                    options.duration = Duration::from_secs_f64(number(&flag, &value()?)?)
                }
                "--registered" => options.registered = number(&flag, &value()?)?,
                "--active" => options.active = number(&flag, &value()?)?,
                "--message-bytes" => options.message_bytes = number(&flag, &value()?)?,
                "--ceiling-messages" => options.ceiling_messages = number(&flag, &value()?)?,
                "--window" => options.publish_window = number(&flag, &value()?)?,
                "--prefetch" => options.ceiling_prefetch = number(&flag, &value()?)?,
                "--intake-prefetch" => {
                    options.tuning.intake_prefetch = Some(number(&flag, &value()?)?)
                }
                "--delivery-prefetch" => {
                    options.tuning.delivery_prefetch = Some(number(&flag, &value()?)?)
                }
                "--service-threads" => {
                    options.tuning.worker_threads = Some(number(&flag, &value()?)?)
                }
                "--delivery-bin" => options.delivery_bin = Some(PathBuf::from(value()?)),
                "--json" => options.json = Some(PathBuf::from(value()?)),
                "--stall-timeout" => {
                    options.stall_timeout = Duration::from_secs_f64(number(&flag, &value()?)?)
                }
                "--enforce-targets" => options.enforce_targets = true,
                "--rounds" => options.rounds = number(&flag, &value()?)?,
                other => {
                    return Err(BenchError::Invalid(format!(
                        "unknown option {other:?}; see --help"
                    )))
                }
            }
        }
        if options.rounds == 0 {
            return Err(BenchError::Invalid("--rounds must be at least 1".into()));
        }
        if options.rate <= 0.0 || options.rate.is_nan() {
            return Err(BenchError::Invalid("--rate must be positive".into()));
        }
        Ok(Some(options))
    }

    /// The pipeline spec of a scenario (`None` for f, which is no pipeline run).
    pub fn pipeline(&self, scenario: Scenario) -> Option<PipelineSpec> {
        let base = |name: &str, title: String, layout: Layout, intake: Intake, events: usize| {
            PipelineSpec {
                name: name.into(),
                title,
                layout,
                intake,
                events,
                rate: None,
                message_bytes: self.message_bytes,
                publish_window: self.publish_window,
                stall_timeout: self.stall_timeout,
                tuning: self.tuning.clone(),
                registered: layout.subscriptions(),
            }
        };
        let spread = Layout::Spread {
            subscriptions: self.subscriptions,
        };
        Some(match scenario {
            Scenario::A => base(
                "a",
                "1 strict subscription".into(),
                Layout::Spread { subscriptions: 1 },
                Intake::Amqp,
                self.events_a,
            ),
            Scenario::B => base(
                "b",
                format!("{} strict subs, spread", self.subscriptions),
                spread,
                Intake::Amqp,
                self.events_b,
            ),
            Scenario::C => base(
                "c",
                format!("fan-out 1 type -> {} subs", self.fanout),
                Layout::FanOut {
                    subscriptions: self.fanout,
                },
                Intake::Amqp,
                self.events_c,
            ),
            Scenario::D => base(
                "d",
                format!("HTTP intake, {} subs", self.subscriptions),
                spread,
                Intake::Http {
                    clients: self.http_clients,
                    batch: None,
                },
                self.events_d,
            ),
            Scenario::D2 => base(
                "d2",
                format!(
                    "HTTP batches of {}, {} subs",
                    self.batch_size, self.subscriptions
                ),
                spread,
                Intake::Http {
                    clients: self.http_clients,
                    batch: Some(self.batch_size.max(1)),
                },
                self.events_d2,
            ),
            Scenario::E => {
                let events = (self.rate * self.duration.as_secs_f64()).round().max(1.0) as usize;
                let mut spec = base(
                    "e",
                    format!("{} ev/s offered, {} subs", self.rate, self.subscriptions),
                    spread,
                    Intake::Amqp,
                    events,
                );
                spec.rate = Some(self.rate);
                spec
            }
            Scenario::F => return None,
            Scenario::G => base(
                "g",
                format!("{} strict subs, quorum cluster", self.subscriptions),
                spread,
                Intake::Amqp,
                self.events_b,
            ),
        })
    }

    /// f's intake runs: the AMQP intake feeding `--active` subscriptions,
    /// with only those registered and with `--registered` in all (the rest
    /// want other event types), so ingest's CPU per event shows whether
    /// matching grows with subscriptions that cannot match.
    pub fn registered_intake(&self) -> [PipelineSpec; 2] {
        let active = self.active.max(1);
        [active, self.registered.max(active)].map(|registered| PipelineSpec {
            name: format!("f/{registered}"),
            title: format!("intake, {registered} registered"),
            layout: Layout::Spread {
                subscriptions: active,
            },
            intake: Intake::Amqp,
            events: self.events_f,
            rate: None,
            message_bytes: self.message_bytes,
            publish_window: self.publish_window,
            stall_timeout: self.stall_timeout,
            tuning: self.tuning.clone(),
            registered,
        })
    }

    /// What scenario f sets up.
    pub fn startup(&self) -> StartupSpec {
        StartupSpec {
            registered: self.registered,
            active: self.active,
            delivery_bin: self.delivery_bin.clone(),
            message_bytes: self.message_bytes,
        }
    }
}

fn number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, BenchError>
where
    T::Err: std::fmt::Display,
{
    text.trim()
        .parse()
        .map_err(|e| BenchError::Invalid(format!("{flag} {text:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Options {
        Options::parse(args.iter().map(|s| s.to_string()))
            .expect("valid")
            .expect("not help")
    }

    #[test]
    fn scenarios_and_sizes() {
        let options = parse(&["--scenario", "b,a", "--events=500", "--no-ceiling"]);
        assert_eq!(options.scenarios, vec![Scenario::A, Scenario::B]);
        // g (the cluster) only when asked: `all` must run where no cluster is.
        assert_eq!(
            parse(&["--scenario", "g,b"]).scenarios,
            vec![Scenario::B, Scenario::G]
        );
        assert!(!Scenario::ALL.contains(&Scenario::G));
        let cluster = parse(&["--cluster-url", "amqp://a/%2f,amqp://b/%2f"]);
        assert_eq!(cluster.cluster_url, "amqp://a/%2f,amqp://b/%2f");
        assert!(cluster
            .pipeline(Scenario::G)
            .is_some_and(|spec| spec.name == "g"));
        assert_eq!((options.events_a, options.events_b), (500, 500));
        assert!(!options.ceiling);
        assert_eq!(
            parse(&["--scenario", "all"]).scenarios,
            Scenario::ALL.to_vec()
        );
        assert_eq!(parse(&[]).scenarios, Scenario::DEFAULT.to_vec());
        assert!(Options::parse(["--scenario".to_string(), "z".to_string()]).is_err());
        assert!(Options::parse(["--bogus".to_string()]).is_err());
        assert!(Options::parse(["--help".to_string()])
            .expect("ok")
            .is_none());
    }

    #[test]
    fn scenario_e_sends_rate_times_duration() {
        let options = parse(&["--rate", "200", "--duration", "3"]);
        let spec = options.pipeline(Scenario::E).expect("a pipeline");
        assert_eq!((spec.events, spec.rate), (600, Some(200.0)));
        assert!(options.pipeline(Scenario::F).is_none());
    }

    #[test]
    fn d2_posts_batches_and_f_compares_registered_counts() {
        let options = parse(&["--scenario", "d2,f", "--batch-size", "50"]);
        assert_eq!(options.scenarios, vec![Scenario::D2, Scenario::F]);
        let spec = options.pipeline(Scenario::D2).expect("a pipeline");
        assert_eq!(
            spec.intake,
            Intake::Http {
                clients: 16,
                batch: Some(50)
            }
        );
        let [few, many] = options.registered_intake();
        assert_eq!((few.registered, many.registered), (10, 10_000));
        assert_eq!(few.layout, many.layout);
    }
}
