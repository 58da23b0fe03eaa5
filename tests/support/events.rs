//! Building events and comparing what arrived with what was sent: sequence
//! assertions that point at the first difference instead of dumping
//! thousands of ids.

use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};

/// An input event `{id, type, payload}`.
pub fn event(id: &str, event_type: &str, payload: Value) -> Value {
    json!({ "id": id, "type": event_type, "payload": payload })
}

/// `count` events `<prefix>-00000…` of `event_type`, each with `{"seq": i}` in its payload.
pub fn numbered(prefix: &str, event_type: &str, count: usize) -> Vec<Value> {
    (0..count)
        .map(|i| event(&format!("{prefix}-{i:05}"), event_type, json!({ "seq": i })))
        .collect()
}

/// The `id` of each event.
pub fn ids_of(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().expect("event has an id").to_string())
        .collect()
}

/// Collapses runs of the same id into one (re-deliveries right after a crash).
pub fn collapse_adjacent(ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(ids.len());
    for id in ids {
        if out.last() != Some(id) {
            out.push(id.clone());
        }
    }
    out
}

/// Asserts `got` equals `want` element by element; on failure says where
/// they first differ, what is missing and what is extra or repeated.
pub fn assert_sequence(what: &str, got: &[String], want: &[String]) {
    if got == want {
        return;
    }
    let first_difference = got
        .iter()
        .zip(want)
        .position(|(g, w)| g != w)
        .unwrap_or(got.len().min(want.len()));
    let window = |list: &[String]| {
        let from = first_difference.saturating_sub(3);
        let to = (first_difference + 4).min(list.len());
        format!("[{from}..{to}] = {:?}", &list[from..to.max(from)])
    };
    let got_set: HashSet<&String> = got.iter().collect();
    let want_set: HashSet<&String> = want.iter().collect();
    let missing: Vec<&String> = want.iter().filter(|w| !got_set.contains(w)).collect();
    let extra: Vec<&String> = got.iter().filter(|g| !want_set.contains(g)).collect();
    let mut counts: HashMap<&String, usize> = HashMap::new();
    for id in got {
        *counts.entry(id).or_default() += 1;
    }
    let mut repeated: Vec<(&String, usize)> = counts.into_iter().filter(|(_, n)| *n > 1).collect();
    repeated.sort();
    panic!(
        "{what}: sequences differ\n  got {} ids, want {}\n  first difference at index {first_difference}\n  got  {}\n  want {}\n  missing ({}): {:?}\n  unexpected ({}): {:?}\n  repeated ({}): {:?}",
        got.len(),
        want.len(),
        window(got),
        window(want),
        missing.len(),
        missing.iter().take(20).collect::<Vec<_>>(),
        extra.len(),
        extra.iter().take(20).collect::<Vec<_>>(),
        repeated.len(),
        repeated.iter().take(20).collect::<Vec<_>>(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(list: &[&str]) -> Vec<String> {
        list.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn collapses_only_adjacent_repeats() {
        assert_eq!(
            collapse_adjacent(&s(&["a", "a", "b", "a"])),
            s(&["a", "b", "a"])
        );
    }

    #[test]
    #[should_panic(expected = "first difference at index 1")]
    fn reports_the_first_difference() {
        assert_sequence("t", &s(&["a", "c"]), &s(&["a", "b"]));
    }
}
