//! Where the CPU went during a measurement, from `/proc`: this process's
//! threads grouped by name (each component runs on a runtime of its own with
//! its own thread names), the broker (`beam.smp`), Redis (`redis-server`), and
//! the whole machine, so that load from anything else shows up as `other`.
//!
//! On a 2-core machine shared with compilers this is what tells a slow
//! pipeline from a busy machine.

use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

/// Clock ticks per second of `/proc` CPU times (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// Thread-name prefixes of the bench's runtimes and what they stand for.
pub const COMPONENTS: [(&str, &str); 5] = [
    ("pl-ingest", "ingest"),
    ("pl-delivery", "delivery"),
    ("pl-receiver", "receiver"),
    ("lapin-io-loop", "lapin_io"),
    ("pl-bench", "producer"),
];

/// CPU counters at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    at: Instant,
    components: BTreeMap<String, u64>,
    broker: u64,
    redis: u64,
    machine_busy: u64,
}

/// CPU seconds used between two snapshots, by component.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuUse {
    /// Wall-clock seconds between the snapshots.
    pub wall_secs: f64,
    /// CPU seconds by component (this process's threads, `broker`, `redis`, `other`).
    pub secs: BTreeMap<String, f64>,
    /// Whole machine: busy CPU seconds (all cores).
    pub machine_busy_secs: f64,
}

impl CpuUse {
    /// CPU seconds of `component`.
    pub fn of(&self, component: &str) -> f64 {
        self.secs.get(component).copied().unwrap_or(0.0)
    }
}

impl Snapshot {
    /// Reads the counters now (missing files count as zero: not on Linux, or no broker here).
    pub fn take() -> Self {
        let mut components = BTreeMap::new();
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for task in tasks.flatten() {
                let Some((name, ticks)) = read_stat(&task.path().join("stat")) else {
                    continue;
                };
                let component = COMPONENTS
                    .iter()
                    .find(|(prefix, _)| name.starts_with(prefix))
                    .map_or("bench_other", |(_, component)| component);
                *components.entry(component.to_string()).or_insert(0) += ticks;
            }
        }
        let (mut broker, mut redis) = (0, 0);
        if let Ok(processes) = std::fs::read_dir("/proc") {
            for process in processes.flatten() {
                let name = process.file_name();
                if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                let Some((comm, ticks)) = read_stat(&process.path().join("stat")) else {
                    continue;
                };
                match comm.as_str() {
                    "beam.smp" => broker += ticks,
                    "redis-server" => redis += ticks,
                    _ => {}
                }
            }
        }
        Self {
            at: Instant::now(),
            components,
            broker,
            redis,
            machine_busy: machine_busy_ticks().unwrap_or(0),
        }
    }

    /// CPU used from `self` until `later`.
    pub fn until(&self, later: &Snapshot) -> CpuUse {
        let secs = |ticks: u64| ticks as f64 / TICKS_PER_SEC;
        let mut out = BTreeMap::new();
        let mut ours = 0u64;
        for (component, &after) in &later.components {
            // Threads that ended in between take their ticks with them; never go negative.
            let delta = after.saturating_sub(self.components.get(component).copied().unwrap_or(0));
            ours += delta;
            out.insert(component.clone(), secs(delta));
        }
        let broker = later.broker.saturating_sub(self.broker);
        let redis = later.redis.saturating_sub(self.redis);
        let machine = later.machine_busy.saturating_sub(self.machine_busy);
        out.insert("broker".into(), secs(broker));
        out.insert("redis".into(), secs(redis));
        out.insert(
            "other".into(),
            secs(machine.saturating_sub(ours + broker + redis)),
        );
        CpuUse {
            wall_secs: later.at.duration_since(self.at).as_secs_f64(),
            secs: out,
            machine_busy_secs: secs(machine),
        }
    }
}

/// `(comm, utime + stime)` from a `/proc/.../stat` file.
fn read_stat(path: &std::path::Path) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // After the name: state is field 3 of the file, utime 14 and stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

/// Busy ticks of all cores (everything but idle and iowait) from `/proc/stat`.
fn machine_busy_ticks() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some(total.saturating_sub(idle))
}

/// The 1-minute load average, if readable.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
