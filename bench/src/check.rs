//! The verdict on a run: did every event arrive exactly once at every
//! subscription that wants it, and, for strict subscriptions, in order?
//!
//! Speed means nothing without this: a run that loses, duplicates or
//! reorders is a failed run.

use serde::Serialize;
use std::collections::HashMap;

/// How many problem examples a report keeps (enough to start debugging).
const EXAMPLES: usize = 10;

/// What each subscription must receive, in the order it must receive it.
#[derive(Debug, Clone)]
pub struct Expected {
    /// Per subscription: the sequence numbers it must get, in publish order.
    pub per_subscription: Vec<Vec<u64>>,
    /// Whether each subscription promises order (`strict`).
    pub strict: Vec<bool>,
}

impl Expected {
    /// Total deliveries expected.
    pub fn total(&self) -> u64 {
        self.per_subscription.iter().map(|s| s.len() as u64).sum()
    }
}

/// One request a receiver got: which subscription, and which event (`None`
/// when the body named no event of this run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrived {
    /// Subscription index.
    pub subscription: u32,
    /// Event sequence number.
    pub seq: Option<u64>,
}

/// The outcome of the exactly-once-and-in-order check.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// Deliveries expected.
    pub expected: u64,
    /// Expected deliveries that arrived (each counted once).
    pub arrived: u64,
    /// Expected deliveries that never arrived.
    pub missing: u64,
    /// Deliveries that arrived more than once (the extra copies).
    pub duplicates: u64,
    /// Requests for an event the subscription should not get, or for no event of this run.
    pub unexpected: u64,
    /// Strict subscriptions: events that arrived after a later one.
    pub out_of_order: u64,
    /// The first few problems, for people.
    pub examples: Vec<String>,
}

impl CheckReport {
    /// Whether the run delivered everything exactly once and in order.
    pub fn passed(&self) -> bool {
        self.missing == 0 && self.duplicates == 0 && self.unexpected == 0 && self.out_of_order == 0
    }

    /// `ok`, or what went wrong in a few words.
    pub fn verdict(&self) -> String {
        if self.passed() {
            return "ok".into();
        }
        let mut parts = Vec::new();
        for (count, what) in [
            (self.missing, "lost"),
            (self.duplicates, "dup"),
            (self.unexpected, "unexpected"),
            (self.out_of_order, "reordered"),
        ] {
            if count > 0 {
                parts.push(format!("{count} {what}"));
            }
        }
        format!("FAIL {}", parts.join(", "))
    }

    fn note(&mut self, example: impl FnOnce() -> String) {
        if self.examples.len() < EXAMPLES {
            self.examples.push(example());
        }
    }
}

/// Checks `arrivals` (in the order the receivers got them) against `expected`.
pub fn check(expected: &Expected, arrivals: &[Arrived]) -> CheckReport {
    let mut report = CheckReport {
        expected: expected.total(),
        ..Default::default()
    };
    // Position of each expected event in its subscription's sequence.
    let positions: Vec<HashMap<u64, usize>> = expected
        .per_subscription
        .iter()
        .map(|seqs| seqs.iter().enumerate().map(|(i, &s)| (s, i)).collect())
        .collect();
    let mut seen: Vec<Vec<bool>> = expected
        .per_subscription
        .iter()
        .map(|seqs| vec![false; seqs.len()])
        .collect();
    let mut last_position: Vec<Option<usize>> = vec![None; expected.per_subscription.len()];
    for arrival in arrivals {
        let sub = arrival.subscription as usize;
        let Some(seq) = arrival.seq else {
            report.unexpected += 1;
            report.note(|| format!("subscription {sub}: a request naming no event of this run"));
            continue;
        };
        let Some(&position) = positions.get(sub).and_then(|p| p.get(&seq)) else {
            report.unexpected += 1;
            report.note(|| format!("subscription {sub}: event {seq} was not meant for it"));
            continue;
        };
        if seen[sub][position] {
            report.duplicates += 1;
            report.note(|| format!("subscription {sub}: event {seq} arrived again"));
            continue;
        }
        seen[sub][position] = true;
        report.arrived += 1;
        if expected.strict.get(sub).copied().unwrap_or(false) {
            if let Some(last) = last_position[sub] {
                if position < last {
                    report.out_of_order += 1;
                    let after = expected.per_subscription[sub][last];
                    report.note(|| {
                        format!("subscription {sub}: event {seq} arrived after event {after}")
                    });
                }
            }
        }
        last_position[sub] = Some(last_position[sub].map_or(position, |l| l.max(position)));
    }
    report.missing = report.expected - report.arrived;
    if report.missing > 0 {
        for (sub, flags) in seen.iter().enumerate() {
            if let Some(position) = flags.iter().position(|f| !f) {
                let seq = expected.per_subscription[sub][position];
                report.note(|| {
                    format!("subscription {sub}: event {seq} (and maybe more) never arrived")
                });
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected() -> Expected {
        Expected {
            per_subscription: vec![vec![0, 2, 4], vec![1, 3]],
            strict: vec![true, false],
        }
    }

    fn arrivals(list: &[(u32, u64)]) -> Vec<Arrived> {
        list.iter()
            .map(|&(subscription, seq)| Arrived {
                subscription,
                seq: Some(seq),
            })
            .collect()
    }

    #[test]
    fn a_complete_ordered_run_passes() {
        let report = check(
            &expected(),
            &arrivals(&[(0, 0), (1, 3), (0, 2), (1, 1), (0, 4)]),
        );
        assert!(report.passed(), "{report:?}");
        assert_eq!(report.arrived, 5);
        assert_eq!(report.verdict(), "ok");
    }

    #[test]
    fn loss_duplicates_strangers_and_reordering_fail() {
        let lost = check(&expected(), &arrivals(&[(0, 0), (0, 2), (1, 1), (1, 3)]));
        assert_eq!((lost.missing, lost.passed()), (1, false));

        let duplicated = check(
            &expected(),
            &arrivals(&[(0, 0), (0, 2), (0, 2), (0, 4), (1, 1), (1, 3)]),
        );
        assert_eq!((duplicated.duplicates, duplicated.passed()), (1, false));

        let mut stranger = arrivals(&[(0, 0), (0, 2), (0, 4), (1, 1), (1, 3), (1, 2)]);
        stranger.push(Arrived {
            subscription: 0,
            seq: None,
        });
        let stranger = check(&expected(), &stranger);
        assert_eq!((stranger.unexpected, stranger.passed()), (2, false));

        let reordered = check(
            &expected(),
            &arrivals(&[(0, 2), (0, 0), (0, 4), (1, 1), (1, 3)]),
        );
        assert_eq!((reordered.out_of_order, reordered.passed()), (1, false));
        assert!(reordered.verdict().contains("reordered"));
    }

    #[test]
    fn unordered_subscriptions_may_arrive_in_any_order() {
        let report = check(
            &expected(),
            &arrivals(&[(1, 3), (1, 1), (0, 0), (0, 2), (0, 4)]),
        );
        assert!(report.passed(), "{report:?}");
    }
}
