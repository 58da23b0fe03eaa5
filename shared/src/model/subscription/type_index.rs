//! Subscriptions indexed by the event types they want, so matching an event
//! costs the same whatever number of subscriptions cannot want it.
//!
//! Exact names sit in a map by name. Patterns with a `*` are parsed once,
//! when a subscription is added, and filed under their literal prefix (the
//! text before the first `*`), grouped by that prefix's length: an event
//! type looks up only its own prefixes of the lengths some pattern has, and
//! only the patterns found there are matched as globs. Tenant and payload
//! filters are then checked on those few (see [`Subscription::wants`]).

use super::filter::glob_match_str;
use super::{EventTypePattern, Subscription};
use crate::model::envelope::Envelope;
use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The subscriptions, by the event types they want.
#[derive(Debug, Default, Clone)]
pub struct TypeIndex {
    /// Patterns without `*`: the one type they match.
    exact: HashMap<Box<str>, Vec<Arc<Subscription>>>,
    /// Patterns with `*`, by literal prefix length, then by literal prefix.
    wildcard: BTreeMap<usize, HashMap<Box<str>, Vec<Glob>>>,
}

/// A wildcard pattern of one subscription.
#[derive(Debug, Clone)]
struct Glob {
    pattern: Box<str>,
    subscription: Arc<Subscription>,
}

impl TypeIndex {
    /// An index over `subscriptions`.
    pub fn of<'a>(subscriptions: impl IntoIterator<Item = &'a Arc<Subscription>>) -> Self {
        let mut index = Self::default();
        for subscription in subscriptions {
            index.insert(subscription.clone());
        }
        index
    }

    /// Files `subscription` under each of its (valid) patterns; patterns
    /// that do not parse match nothing, as in [`Subscription::wants_type`].
    pub fn insert(&mut self, subscription: Arc<Subscription>) {
        for text in &subscription.spec.event_types {
            let Ok(pattern) = EventTypePattern::parse(text) else {
                continue;
            };
            match pattern.exact() {
                Some(name) => self
                    .exact
                    .entry(name.into())
                    .or_default()
                    .push(subscription.clone()),
                None => {
                    let prefix = pattern.literal_prefix();
                    self.wildcard
                        .entry(prefix.len())
                        .or_default()
                        .entry(prefix.into())
                        .or_default()
                        .push(Glob {
                            pattern: pattern.as_str().into(),
                            subscription: subscription.clone(),
                        });
                }
            }
        }
    }

    /// Takes out what [`TypeIndex::insert`] filed for `subscription` (the
    /// version that was inserted: its patterns say where it is).
    pub fn remove(&mut self, subscription: &Subscription) {
        let id = subscription.id();
        for text in &subscription.spec.event_types {
            let Ok(pattern) = EventTypePattern::parse(text) else {
                continue;
            };
            match pattern.exact() {
                Some(name) => {
                    if let Some(bucket) = self.exact.get_mut(name) {
                        bucket.retain(|s| s.id() != id);
                        if bucket.is_empty() {
                            self.exact.remove(name);
                        }
                    }
                }
                None => {
                    let prefix = pattern.literal_prefix();
                    let Some(by_prefix) = self.wildcard.get_mut(&prefix.len()) else {
                        continue;
                    };
                    if let Some(bucket) = by_prefix.get_mut(prefix) {
                        bucket.retain(|g| g.subscription.id() != id);
                        if bucket.is_empty() {
                            by_prefix.remove(prefix);
                        }
                    }
                    if by_prefix.is_empty() {
                        self.wildcard.remove(&prefix.len());
                    }
                }
            }
        }
    }

    /// The subscriptions with a pattern matching `event_type`, each once, by id.
    pub fn wanting_type(&self, event_type: &str) -> Vec<Arc<Subscription>> {
        let mut found: Vec<Arc<Subscription>> =
            self.exact.get(event_type).cloned().unwrap_or_default();
        for (&len, by_prefix) in self.wildcard.range(..=event_type.len()) {
            let Some(prefix) = event_type.get(..len) else {
                continue;
            };
            let Some(bucket) = by_prefix.get(prefix) else {
                continue;
            };
            found.extend(
                bucket
                    .iter()
                    .filter(|g| glob_match_str(&g.pattern, event_type))
                    .map(|g| g.subscription.clone()),
            );
        }
        found.sort_by(|a, b| a.id().cmp(b.id()));
        // A subscription with two matching patterns is found twice.
        found.dedup_by(|a, b| a.id() == b.id());
        found
    }

    /// The subscriptions that want `envelope`, by id: the same as every
    /// subscription's [`Subscription::wants`], without asking those whose
    /// patterns cannot match. The envelope's JSON tree is built only if a
    /// candidate has a payload filter.
    pub fn matching(&self, envelope: &Envelope) -> Vec<Arc<Subscription>> {
        let tree = OnceCell::new();
        let mut wanted = self.wanting_type(&envelope.event_type);
        wanted
            .retain(|s| s.wants_beyond_type(envelope, || tree.get_or_init(|| envelope.to_value())));
        wanted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::subscription::SubscriptionSpec;
    use chrono::Utc;
    use serde_json::json;

    fn subscription(id: &str, event_types: &[&str], extra: serde_json::Value) -> Arc<Subscription> {
        let mut body =
            json!({"id": id, "endpoint": "https://example.com/", "event_types": event_types});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let spec: SubscriptionSpec = serde_json::from_value(body).expect("a valid spec");
        Arc::new(Subscription::new(spec, Utc::now()))
    }

    fn envelope(event_type: &str, tenant: Option<&str>, payload: serde_json::Value) -> Envelope {
        let mut input = json!({"id": "e1", "type": event_type, "payload": payload});
        if let (Some(tenant), Some(input)) = (tenant, input.as_object_mut()) {
            input.insert("tenant".into(), json!(tenant));
        }
        Envelope::from_input_bytes(input.to_string().as_bytes(), Utc::now()).expect("a valid event")
    }

    fn scan(all: &[Arc<Subscription>], envelope: &Envelope) -> Vec<String> {
        let tree = envelope.to_value();
        let mut ids: Vec<String> = all
            .iter()
            .filter(|s| s.wants(envelope, &tree))
            .map(|s| s.id().to_string())
            .collect();
        ids.sort();
        ids
    }

    fn ids(found: Vec<Arc<Subscription>>) -> Vec<String> {
        found.iter().map(|s| s.id().to_string()).collect()
    }

    /// Patterns built from a few segments and every placement of `*`, so
    /// exact names, prefixes, suffixes, infixes and overlaps all occur.
    fn patterns() -> Vec<String> {
        let segments = ["order", "order.created", "order.c", "pnr", "a", "ab", ""];
        let mut out = vec!["*".to_string(), "**".to_string(), "*.*".to_string()];
        for s in segments.iter().filter(|s| !s.is_empty()) {
            out.push(s.to_string());
            out.push(format!("{s}*"));
            out.push(format!("*{s}"));
            out.push(format!("*{s}*"));
            out.push(format!("{s}.*"));
            for t in segments {
                out.push(format!("{s}*{t}"));
                out.push(format!("{s}.*.{t}"));
            }
        }
        out
    }

    fn event_types() -> Vec<&'static str> {
        vec![
            "order",
            "order.created",
            "order.c",
            "order.cancelled",
            "order.x.created",
            "orders.created",
            "pnr",
            "pnr.created",
            "a",
            "ab",
            "aab",
            "a.b",
            "ab.order",
            "x",
            "order.created.v2",
            "order..a",
            "created",
        ]
    }

    #[test]
    fn the_index_finds_exactly_what_a_full_scan_finds() {
        let patterns = patterns();
        // One subscription per pattern, and some with several patterns
        // (one matching twice), a tenant, or a payload filter.
        let mut all: Vec<Arc<Subscription>> = patterns
            .iter()
            .enumerate()
            .map(|(i, p)| subscription(&format!("p{i:04}"), &[p], json!({})))
            .collect();
        for (i, pair) in patterns.windows(2).enumerate().step_by(3) {
            all.push(subscription(
                &format!("m{i:04}"),
                &[&pair[0], &pair[1]],
                json!({}),
            ));
        }
        all.push(subscription(
            "twice",
            &["order.*", "order.created", "*"],
            json!({}),
        ));
        all.push(subscription(
            "tenant",
            &["order.*"],
            json!({"tenant": "acme"}),
        ));
        all.push(subscription(
            "filtered",
            &["*"],
            json!({"filters": [{"pointer": "/payload/org", "in": ["acme"]}]}),
        ));
        all.push(subscription("bad", &["not a pattern"], json!({})));
        let index = TypeIndex::of(&all);
        let mut compared = 0;
        for event_type in event_types() {
            for tenant in [None, Some("acme")] {
                for payload in [json!({}), json!({"org": "acme"})] {
                    let envelope = envelope(event_type, tenant, payload);
                    assert_eq!(
                        ids(index.matching(&envelope)),
                        scan(&all, &envelope),
                        "{event_type} tenant {tenant:?}"
                    );
                    compared += 1;
                }
            }
        }
        assert_eq!(compared, event_types().len() * 4);
    }

    #[test]
    fn removing_and_replacing_keeps_the_index_equal_to_a_scan() {
        let first = subscription("s1", &["order.*", "pnr"], json!({}));
        let second = subscription("s2", &["order.created"], json!({}));
        let mut index = TypeIndex::of(&[first.clone(), second.clone()]);
        let order = envelope("order.created", None, json!({}));
        assert_eq!(ids(index.matching(&order)), ["s1", "s2"]);
        // s1 changes its patterns: the old ones must no longer find it.
        index.remove(&first);
        let changed = subscription("s1", &["pnr.*"], json!({}));
        index.insert(changed.clone());
        assert_eq!(ids(index.matching(&order)), ["s2"]);
        let pnr = envelope("pnr.created", None, json!({}));
        assert_eq!(ids(index.matching(&pnr)), ["s1"]);
        index.remove(&changed);
        index.remove(&second);
        assert!(index.matching(&order).is_empty() && index.matching(&pnr).is_empty());
        assert!(index.exact.is_empty() && index.wildcard.is_empty());
    }

    #[test]
    fn subscriptions_that_cannot_match_are_never_looked_at() {
        // 10,000 subscriptions on other types: the lookup sees only the wanted ones.
        let mut all: Vec<Arc<Subscription>> = (0..10_000)
            .map(|i| {
                let pattern = if i % 2 == 0 {
                    format!("other.t{i}")
                } else {
                    format!("other.t{i}.*")
                };
                subscription(&format!("o{i:05}"), &[&pattern], json!({}))
            })
            .collect();
        all.push(subscription("wanted", &["bench.*"], json!({})));
        let index = TypeIndex::of(&all);
        assert_eq!(ids(index.wanting_type("bench.s1")), ["wanted"]);
        // Only prefix lengths that some pattern has are looked up.
        assert!(index.wildcard.len() < 10);
    }
}
