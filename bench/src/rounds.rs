//! Several rounds of the same run, for a machine whose speed drifts (a small
//! shared VM can halve its speed within the hour): each round measures its own
//! ceiling and then its scenarios, and the speed targets are judged on the
//! median of each figure over the rounds — every round's figure taken against
//! its own round's ceiling — so no single slow or lucky minute decides.

use crate::report::{target_line, Criterion, RunReport, CRITERIA};
use serde::Serialize;
use std::fmt::Write as _;

/// One target judged over every round.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// Scenario.
    pub scenario: String,
    /// What the target wants.
    pub wanted: String,
    /// A speed target's figure in each round that measured it, in round
    /// order (empty for the other targets).
    pub values: Vec<f64>,
    /// Their median.
    pub median: Option<f64>,
    /// Rounds that judged the target.
    pub rounds: usize,
    /// Rounds that met it on their own.
    pub met_in: usize,
    /// A speed target: the median meets it and every round's check passed;
    /// another: met in at least half the rounds.
    pub met: bool,
    /// What was got: median, lowest and highest, or the last round's.
    pub got: String,
}

/// Every round, and the targets judged over them.
#[derive(Debug, Clone, Serialize)]
pub struct RoundsReport {
    /// Each round's own report.
    pub rounds: Vec<RunReport>,
    /// Every target, judged over the rounds.
    pub verdicts: Vec<Verdict>,
}

impl RoundsReport {
    /// Judges `rounds`.
    pub fn new(rounds: Vec<RunReport>) -> Self {
        let mut verdicts: Vec<Verdict> = CRITERIA
            .iter()
            .filter_map(|criterion| on_median(criterion, &rounds))
            .collect();
        verdicts.extend(by_majority(&rounds));
        Self { rounds, verdicts }
    }

    /// Whether every round's checks passed and every scenario completed.
    pub fn checks_passed(&self) -> bool {
        self.rounds.iter().all(RunReport::checks_passed)
    }

    /// Whether every target was met (on the median, or in half the rounds).
    pub fn targets_met(&self) -> bool {
        self.verdicts.iter().all(|v| v.met)
    }

    /// The summary after the rounds' own tables.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let measured = match self.rounds.iter().any(|r| r.ceiling.is_some()) {
            true => "each against its own ceiling; ",
            false => "",
        };
        let _ = writeln!(
            out,
            "\nOver {} rounds ({measured}speed targets judged on the median)",
            self.rounds.len()
        );
        for v in &self.verdicts {
            let got = format!("{}; met in {} of {} rounds", v.got, v.met_in, v.rounds);
            let _ = writeln!(out, "{}", target_line(v.met, &v.scenario, &v.wanted, &got));
        }
        out
    }
}

/// `criterion` judged on the median of its figure over the rounds that
/// measured it.
fn on_median(criterion: &Criterion, rounds: &[RunReport]) -> Option<Verdict> {
    let mut values = Vec::new();
    let mut met_in = 0;
    let mut checks = true;
    for round in rounds {
        let Some(pipeline) = round
            .pipelines
            .iter()
            .find(|p| p.name == criterion.scenario)
        else {
            continue;
        };
        let Some(value) = (criterion.measure)(pipeline) else {
            continue;
        };
        checks &= pipeline.check.passed();
        met_in += usize::from(criterion.goal.met_by(value) && pipeline.check.passed());
        values.push(value);
    }
    let median = median(&values)?;
    let lowest = values.iter().copied().fold(f64::INFINITY, f64::min);
    let highest = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some(Verdict {
        scenario: criterion.scenario.to_string(),
        wanted: criterion.wanted(),
        rounds: values.len(),
        median: Some(median),
        met_in,
        met: checks && criterion.goal.met_by(median),
        got: format!(
            "median {} (lowest {}, highest {})",
            criterion.show(median),
            (criterion.number)(lowest),
            (criterion.number)(highest)
        ),
        values,
    })
}

/// The targets without a figure in [`CRITERIA`] (d2 against b, f's), each
/// met when met in at least half the rounds that judged it.
fn by_majority(rounds: &[RunReport]) -> Vec<Verdict> {
    let mut verdicts: Vec<Verdict> = Vec::new();
    for target in rounds.iter().flat_map(|r| &r.targets) {
        if Criterion::of(&target.scenario).is_some() {
            continue;
        }
        let same = |v: &Verdict| v.scenario == target.scenario && v.wanted == target.wanted;
        let index = match verdicts.iter().position(same) {
            Some(index) => index,
            None => {
                verdicts.push(Verdict {
                    scenario: target.scenario.clone(),
                    wanted: target.wanted.clone(),
                    values: Vec::new(),
                    median: None,
                    rounds: 0,
                    met_in: 0,
                    met: false,
                    got: String::new(),
                });
                verdicts.len() - 1
            }
        };
        let verdict = &mut verdicts[index];
        verdict.rounds += 1;
        verdict.met_in += usize::from(target.met);
        verdict.met = 2 * verdict.met_in >= verdict.rounds;
        verdict.got = format!("last round: {}", target.got);
    }
    verdicts
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::PipelineReport;

    fn scenario(name: &str, events_per_sec: f64, ratio: Option<f64>) -> PipelineReport {
        PipelineReport {
            name: name.into(),
            events_per_sec,
            ratio_to_two_hop: ratio,
            ..Default::default()
        }
    }

    fn round(pipelines: Vec<PipelineReport>) -> RunReport {
        let mut report = RunReport {
            started_at: String::new(),
            commit: None,
            cores: 2,
            load_before: None,
            load_after: None,
            command: String::new(),
            ceiling: None,
            cluster_ceiling: None,
            pipelines,
            startup: None,
            errors: Vec::new(),
            targets: Vec::new(),
        };
        report.evaluate_targets();
        report
    }

    fn verdict<'a>(report: &'a RoundsReport, scenario: &str) -> &'a Verdict {
        report
            .verdicts
            .iter()
            .find(|v| v.scenario == scenario)
            .expect("a verdict for the scenario")
    }

    #[test]
    fn the_median_is_the_middle_value_or_the_mean_of_the_middle_two() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn speed_targets_are_judged_on_the_median_of_the_rounds_not_the_best_or_the_last() {
        let rounds = RoundsReport::new(vec![
            round(vec![
                scenario("a", 4_500.0, None),
                scenario("b", 0.0, Some(0.95)),
            ]),
            round(vec![
                scenario("a", 4_200.0, None),
                scenario("b", 0.0, Some(0.80)),
            ]),
            round(vec![
                scenario("a", 3_000.0, None),
                scenario("b", 0.0, Some(0.85)),
            ]),
        ]);
        let a = verdict(&rounds, "a");
        assert_eq!(a.median, Some(4_200.0));
        assert_eq!((a.met_in, a.rounds), (2, 3));
        assert!(a.met);
        let b = verdict(&rounds, "b");
        assert_eq!(b.median, Some(0.85));
        assert_eq!((b.met_in, b.rounds), (1, 3));
        assert!(!b.met, "b's best round met 90 %, its median did not");
        assert!(!rounds.targets_met());
        assert!(rounds.checks_passed());
    }

    #[test]
    fn a_failed_check_in_any_round_misses_the_target_whatever_the_median() {
        let mut reordered = scenario("a", 5_000.0, None);
        reordered.check.out_of_order = 1;
        let rounds = RoundsReport::new(vec![
            round(vec![scenario("a", 5_000.0, None)]),
            round(vec![reordered]),
            round(vec![scenario("a", 5_000.0, None)]),
        ]);
        let a = verdict(&rounds, "a");
        assert_eq!(a.met_in, 2);
        assert!(!a.met);
        assert!(!rounds.checks_passed());
    }

    #[test]
    fn other_targets_are_met_when_met_in_at_least_half_the_rounds() {
        let d2_and_b = |d2: f64| vec![scenario("b", 3_000.0, None), scenario("d2", d2, None)];
        let rounds = RoundsReport::new(vec![
            round(d2_and_b(2_000.0)),
            round(d2_and_b(6_000.0)),
            round(d2_and_b(2_500.0)),
        ]);
        let d2 = verdict(&rounds, "d2");
        assert_eq!((d2.met_in, d2.rounds), (1, 3));
        assert!(!d2.met);
        let rounds = RoundsReport::new(vec![round(d2_and_b(2_000.0)), round(d2_and_b(6_000.0))]);
        assert!(verdict(&rounds, "d2").met);
    }
}
