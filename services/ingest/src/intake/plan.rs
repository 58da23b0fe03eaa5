//! What a batch needs published, decided before anything is sent (pure).
//!
//! Each message of a batch is either an event (by id) or a rejected message.
//! An event is a duplicate when its id is still in flight from an earlier
//! batch, appears earlier in this batch, or Redis says it was accepted
//! before; otherwise it gets one copy per subscription that wants it (which
//! may be none). A rejected message goes to the rejected queue.

use postline_shared::model::ids::SubscriptionId;
use std::hash::Hash;

/// A subscription a copy is for, and the incarnation the copy is made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The subscription (its queue's routing key).
    pub subscription_id: SubscriptionId,
    /// Stamped on the copy (see `copy::for_incarnation`).
    pub incarnation: String,
}

/// What one message of a batch needs published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Its id was accepted before (or is earlier in flight): nothing.
    Duplicate,
    /// One copy to each target, in target order (possibly none).
    Copies(Vec<Target>),
    /// The rejected queue, with its reason.
    DeadLetter,
}

/// Which events of a batch are known duplicates, and which ids to ask Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dedup {
    /// Per message: a duplicate known without asking Redis.
    pub duplicate: Vec<bool>,
    /// The messages whose ids Redis must be asked about, in message order.
    pub ask: Vec<usize>,
}

/// `ids[i]` is message `i`'s event id (`None`: a rejected message).
/// `in_flight` tells ids published by earlier batches and not yet
/// remembered in Redis (an id leaves that set only once its marker is
/// written, so it is always in one or the other).
pub fn dedup<Id: Eq + Hash + ?Sized>(
    ids: &[Option<&Id>],
    in_flight: impl Fn(&Id) -> bool,
) -> Dedup {
    let mut seen_here = std::collections::HashSet::new();
    let mut duplicate = vec![false; ids.len()];
    let mut ask = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let Some(id) = id else { continue };
        if in_flight(id) || !seen_here.insert(*id) {
            duplicate[i] = true;
        } else {
            ask.push(i);
        }
    }
    Dedup { duplicate, ask }
}

/// The steps of a batch: `seen` is Redis's answer for `dedup.ask` (same
/// order; a missing answer counts as not seen), `targets(i)` the copies
/// event `i` needs.
pub fn steps<Id: ?Sized>(
    ids: &[Option<&Id>],
    dedup: &Dedup,
    seen: &[bool],
    mut targets: impl FnMut(usize) -> Vec<Target>,
) -> Vec<Step> {
    let mut duplicate = dedup.duplicate.clone();
    for (&i, &seen) in dedup.ask.iter().zip(seen) {
        duplicate[i] |= seen;
    }
    ids.iter()
        .zip(duplicate)
        .enumerate()
        .map(|(i, (id, duplicate))| match (id, duplicate) {
            (None, _) => Step::DeadLetter,
            (Some(_), true) => Step::Duplicate,
            (Some(_), false) => Step::Copies(targets(i)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(id: &str) -> Target {
        Target {
            subscription_id: SubscriptionId::parse(id).unwrap(),
            incarnation: format!("inc-{id}"),
        }
    }

    #[test]
    fn repeats_in_flight_or_earlier_in_the_batch_are_not_asked() {
        let ids = [Some("a"), Some("b"), None, Some("a"), Some("c")];
        let dedup = dedup(&ids, |id| id == "c");
        assert_eq!(dedup.duplicate, [false, false, false, true, true]);
        assert_eq!(dedup.ask, [0, 1]);
    }

    #[test]
    fn each_message_gets_copies_a_dead_letter_or_nothing() {
        let ids = [Some("a"), Some("b"), None, Some("a"), Some("d")];
        let dedup = dedup(&ids, |_| false);
        assert_eq!(dedup.ask, [0, 1, 4]);
        // Redis knows b; a has two subscriptions, d none.
        let steps = steps(&ids, &dedup, &[false, true, false], |i| match i {
            0 => vec![target("s1"), target("s2")],
            _ => Vec::new(),
        });
        assert_eq!(
            steps,
            [
                Step::Copies(vec![target("s1"), target("s2")]),
                Step::Duplicate,
                Step::DeadLetter,
                Step::Duplicate,
                Step::Copies(Vec::new()),
            ]
        );
    }

    #[test]
    fn a_batch_of_rejects_asks_nothing() {
        let ids: [Option<&str>; 2] = [None, None];
        let dedup = dedup(&ids, |_| true);
        assert!(dedup.ask.is_empty());
        assert_eq!(
            steps(&ids, &dedup, &[], |_| unreachable!("no event")),
            [Step::DeadLetter, Step::DeadLetter]
        );
    }
}
