//! Which events a subscription wants: event-type patterns and payload filters.

use crate::model::problem::Problem;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An event-type pattern: an exact name, or a glob where `*` matches any run of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTypePattern<'a> {
    pattern: &'a str,
}

impl<'a> EventTypePattern<'a> {
    /// Validates a pattern (event-type characters plus `*`).
    pub fn parse(pattern: &'a str) -> Result<Self, String> {
        let ok = !pattern.is_empty()
            && pattern.len() <= crate::model::envelope::MAX_TYPE_LEN
            && pattern
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-:/*".contains(c));
        if ok {
            Ok(Self { pattern })
        } else {
            Err(format!(
                "{pattern:?} is not an event type pattern (letters, digits, . _ - : / and *)"
            ))
        }
    }

    /// Whether `event_type` matches.
    pub fn matches(&self, event_type: &str) -> bool {
        glob_match(self.pattern.as_bytes(), event_type.as_bytes())
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &'a str {
        self.pattern
    }

    /// The one event type it matches, when it has no `*`.
    pub fn exact(&self) -> Option<&'a str> {
        (!self.pattern.contains('*')).then_some(self.pattern)
    }

    /// What every matching event type starts with: the text before the first `*`.
    pub fn literal_prefix(&self) -> &'a str {
        self.pattern
            .split_once('*')
            .map_or(self.pattern, |(prefix, _)| prefix)
    }
}

/// Whether `event_type` matches `pattern`, a pattern [`EventTypePattern::parse`] accepted.
pub(super) fn glob_match_str(pattern: &str, event_type: &str) -> bool {
    glob_match(pattern.as_bytes(), event_type.as_bytes())
}

fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative glob with backtracking to the last `*`: linear in practice.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A condition on one field of the event envelope, addressed by JSON pointer
/// (`/payload/organisation_id`): the value equals one of `in`, or (with
/// `exists`) the field is present or absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// JSON pointer into `{id, type, operation, timestamp, payload}`.
    pub pointer: String,
    /// Accepted values (JSON equality).
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<Value>>,
    /// Require the field to be present (`true`) or absent (`false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
}

impl Filter {
    /// Checks the filter is well formed.
    pub fn validate(&self) -> Result<(), Problem> {
        if !self.pointer.starts_with('/') {
            return Err(Problem::field(
                "pointer",
                "must be a JSON pointer starting with `/`, e.g. /payload/org",
            ));
        }
        match (&self.one_of, self.exists) {
            (Some(values), None) if !values.is_empty() => Ok(()),
            (Some(_), None) => Err(Problem::field("in", "must list at least one value")),
            (None, Some(_)) => Ok(()),
            _ => Err(Problem::field("in", "give exactly one of `in` or `exists`")),
        }
    }

    /// Whether the envelope tree satisfies the filter.
    pub fn matches(&self, tree: &Value) -> bool {
        let found = tree.pointer(&self.pointer);
        match (&self.one_of, self.exists) {
            (Some(values), _) => found.is_some_and(|v| values.contains(v)),
            (None, Some(wanted)) => found.is_some_and(|v| !v.is_null()) == wanted,
            (None, None) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn glob_patterns() {
        let cases = [
            ("order.created", "order.created", true),
            ("order.created", "order.updated", false),
            ("order.*", "order.created", true),
            ("order.*", "order.status.changed", true),
            ("order.*", "orders.created", false),
            ("*", "anything", true),
            ("*.created", "pnr.created", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
        ];
        for (pattern, event_type, expected) in cases {
            let p = EventTypePattern::parse(pattern).unwrap();
            assert_eq!(p.matches(event_type), expected, "{pattern} vs {event_type}");
        }
        assert!(EventTypePattern::parse("a b").is_err());
    }

    #[test]
    fn filters_match_values_and_presence() {
        let tree = json!({"type": "t", "payload": {"org": "acme", "n": 3, "gone": null}});
        let one_of = |pointer: &str, values: Value| Filter {
            pointer: pointer.into(),
            one_of: Some(values.as_array().unwrap().clone()),
            exists: None,
        };
        let exists = |pointer: &str, wanted| Filter {
            pointer: pointer.into(),
            one_of: None,
            exists: Some(wanted),
        };
        assert!(one_of("/payload/org", json!(["x", "acme"])).matches(&tree));
        assert!(!one_of("/payload/org", json!(["x"])).matches(&tree));
        assert!(one_of("/payload/n", json!([3])).matches(&tree));
        assert!(!one_of("/payload/n", json!(["3"])).matches(&tree));
        assert!(!one_of("/payload/missing", json!(["x"])).matches(&tree));
        assert!(exists("/payload/org", true).matches(&tree));
        assert!(exists("/payload/missing", false).matches(&tree));
        assert!(exists("/payload/gone", false).matches(&tree));
    }
}
