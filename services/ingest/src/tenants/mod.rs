//! Tenants: partner organisations with their own subscriptions, OAuth
//! clients and audit trail. This module holds what a tenant is and the pure
//! rules applied to its requests: which event types it may subscribe to, how
//! many subscriptions it may have, and which settings only the operator may
//! make ([`operator_only`]). [`store`] keeps tenants, clients and tokens in
//! Redis, [`credentials`] makes and checks secrets and tokens, [`audit`]
//! records every management change.

pub mod audit;
pub mod credentials;
pub mod store;

use chrono::{DateTime, Utc};
use postline_shared::model::problem::{Problem, ProblemCode};
use postline_shared::model::retry_policy::{
    PolicyKind, RetryPolicy, DEFAULT_GIVE_UP_AFTER_MS, DEFAULT_MAX_RETRY_AFTER_MS,
};
use postline_shared::model::subscription::{
    EventTypePattern, SubscriptionSpec, DEFAULT_TIMEOUT_MS,
};
use postline_shared::model::tenant::TenantId;
use serde::{Deserialize, Serialize};

/// Default `max_subscriptions` of a new tenant.
pub const DEFAULT_MAX_SUBSCRIPTIONS: u32 = 20;
/// Highest `max_subscriptions` an operator may grant.
pub const MAX_MAX_SUBSCRIPTIONS: u32 = 10_000;
/// Most patterns in `allowed_event_types`.
pub const MAX_ALLOWED_PATTERNS: usize = 100;
/// Longest tenant name.
pub const MAX_NAME_LEN: usize = 200;
/// Shortest delivery interval a tenant may set itself.
pub const TENANT_MIN_INTERVAL_MS: u64 = 60_000;

/// Whether a tenant is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    /// Its credentials work and its subscriptions deliver.
    #[default]
    Active,
    /// Its credentials are refused and its subscriptions were paused.
    Suspended,
}

/// A tenant as the operator writes it (the create body).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantSpec {
    /// Id (the shape of a subscription id); events name it in `tenant`.
    pub id: TenantId,
    /// Display name.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// Event-type patterns its subscriptions may ask for (`order.*`).
    #[schema(min_items = 1, max_items = 100)]
    pub allowed_event_types: Vec<String>,
    /// Most subscriptions it may have.
    #[serde(default = "default_max_subscriptions")]
    #[schema(maximum = 10000, default = 20)]
    pub max_subscriptions: u32,
    /// Active or suspended.
    #[serde(default)]
    pub status: TenantStatus,
}

fn default_max_subscriptions() -> u32 {
    DEFAULT_MAX_SUBSCRIPTIONS
}

/// A partial update of a tenant.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    /// New name.
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    /// New allowed patterns.
    #[schema(min_items = 1, max_items = 100)]
    pub allowed_event_types: Option<Vec<String>>,
    /// New limit.
    #[schema(maximum = 10000)]
    pub max_subscriptions: Option<u32>,
    /// New status (`suspended` pauses its subscriptions).
    pub status: Option<TenantStatus>,
}

impl TenantPatch {
    /// The names of the fields the patch sets (for the audit trail).
    pub fn field_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        if self.name.is_some() {
            names.push("name".to_string());
        }
        if self.allowed_event_types.is_some() {
            names.push("allowed_event_types".to_string());
        }
        if self.max_subscriptions.is_some() {
            names.push("max_subscriptions".to_string());
        }
        if self.status.is_some() {
            names.push("status".to_string());
        }
        names
    }
}

/// A stored tenant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tenant {
    /// What the operator configured.
    #[serde(flatten)]
    pub spec: TenantSpec,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl TenantSpec {
    /// Checks every field, naming the first that is wrong.
    pub fn validate(&self) -> Result<(), Problem> {
        if self.name.trim().is_empty() || self.name.len() > MAX_NAME_LEN {
            return Err(Problem::field(
                "name",
                format!("must be 1 to {MAX_NAME_LEN} bytes"),
            ));
        }
        if self.name.chars().any(char::is_control) {
            return Err(Problem::field(
                "name",
                "must not contain control characters",
            ));
        }
        if self.allowed_event_types.is_empty()
            || self.allowed_event_types.len() > MAX_ALLOWED_PATTERNS
        {
            return Err(Problem::field(
                "allowed_event_types",
                format!("must list 1 to {MAX_ALLOWED_PATTERNS} event type patterns"),
            ));
        }
        for (i, pattern) in self.allowed_event_types.iter().enumerate() {
            EventTypePattern::parse(pattern)
                .map_err(|m| Problem::field(format!("allowed_event_types[{i}]"), m))?;
        }
        if self.max_subscriptions > MAX_MAX_SUBSCRIPTIONS {
            return Err(Problem::field(
                "max_subscriptions",
                format!("must be at most {MAX_MAX_SUBSCRIPTIONS}"),
            ));
        }
        Ok(())
    }

    /// Applies a patch (not yet validated).
    pub fn patched(&self, patch: TenantPatch) -> Self {
        let mut spec = self.clone();
        if let Some(name) = patch.name {
            spec.name = name;
        }
        if let Some(types) = patch.allowed_event_types {
            spec.allowed_event_types = types;
        }
        if let Some(max) = patch.max_subscriptions {
            spec.max_subscriptions = max;
        }
        if let Some(status) = patch.status {
            spec.status = status;
        }
        spec
    }
}

/// Whether every event type that `wanted` can match is matched by one of
/// `allowed`. Exact names are checked by matching; a wanted pattern with
/// wildcards must appear verbatim in `allowed`, or be a prefix pattern
/// (`order.status.*`) under an allowed prefix pattern (`order.*`).
pub fn pattern_allowed(allowed: &[String], wanted: &str) -> bool {
    if !wanted.contains('*') {
        return allowed
            .iter()
            .filter_map(|p| EventTypePattern::parse(p).ok())
            .any(|p| p.matches(wanted));
    }
    allowed.iter().any(|a| {
        if a == wanted || a == "*" {
            return true;
        }
        // Both "prefix*" with no other wildcard: covered when the wanted
        // prefix extends the allowed one.
        match (a.strip_suffix('*'), wanted.strip_suffix('*')) {
            (Some(a_prefix), Some(w_prefix)) => {
                !a_prefix.contains('*') && !w_prefix.contains('*') && w_prefix.starts_with(a_prefix)
            }
            _ => false,
        }
    })
}

/// Refuses event types a tenant may not ask for, naming the first.
pub fn check_event_types(allowed: &[String], event_types: &[String]) -> Result<(), Problem> {
    for (i, wanted) in event_types.iter().enumerate() {
        if !pattern_allowed(allowed, wanted) {
            return Err(Problem::field(
                format!("event_types[{i}]"),
                "is not among the event types your tenant may subscribe to (allowed_event_types)",
            ));
        }
    }
    Ok(())
}

/// Refuses a new subscription beyond the tenant's `max_subscriptions`.
pub fn check_room(max_subscriptions: u32, existing: usize) -> Result<(), Problem> {
    if existing >= max_subscriptions as usize {
        return Err(Problem {
            code: ProblemCode::LimitReached,
            field: Some("max_subscriptions".into()),
            message: format!(
                "your tenant may have at most {max_subscriptions} subscriptions; delete one first"
            ),
        });
    }
    Ok(())
}

/// Most POSTs in flight a tenant may ask for (the delivery default prefetch).
pub const TENANT_MAX_IN_FLIGHT: u16 = 64;

/// Refuses, for a tenant's own request, the settings only the operator may
/// make. `touched(name)` says whether the request sets top-level field `name`
/// (a create sets all it names; a PATCH only its own): a setting the
/// operator made stays, and the tenant can still change everything else.
///
/// Operator-only: a retry policy that lasts longer or retries more than the
/// default (more than 3 immediate retries, a ladder giving up later than 7
/// days, fixed retries adding up to more than 7 days), a timeout above the
/// default 10 s, a delivery interval below one minute, a `Retry-After` cap
/// above the default hour, and `max_in_flight` above the default prefetch.
pub fn operator_only(
    spec: &SubscriptionSpec,
    touched: &dyn Fn(&str) -> bool,
) -> Result<(), Problem> {
    let refuse = |field: &str, message: String| {
        Err(Problem {
            code: ProblemCode::OperatorOnly,
            field: Some(field.to_string()),
            message,
        })
    };
    if touched("retry") {
        check_retry(&spec.retry).or_else(|(field, message)| refuse(&field, message))?;
    }
    if touched("timeout_ms") && spec.timeout_ms > DEFAULT_TIMEOUT_MS {
        return refuse(
            "timeout_ms",
            format!("above {DEFAULT_TIMEOUT_MS} ms only the operator may set"),
        );
    }
    if touched("max_in_flight") && spec.max_in_flight.unwrap_or(0) > TENANT_MAX_IN_FLIGHT {
        return refuse(
            "max_in_flight",
            format!("above {TENANT_MAX_IN_FLIGHT} only the operator may set"),
        );
    }
    if touched("interval_ms") {
        if let Some(interval) = spec.interval_ms {
            if interval < TENANT_MIN_INTERVAL_MS {
                return refuse(
                    "interval_ms",
                    format!("below {TENANT_MIN_INTERVAL_MS} ms only the operator may set"),
                );
            }
        }
    }
    Ok(())
}

fn check_retry(retry: &RetryPolicy) -> Result<(), (String, String)> {
    let default_immediate = RetryPolicy::default().immediate_retries();
    if retry.immediate_retries() > default_immediate {
        return Err((
            "retry.immediate_retries".into(),
            format!("more than {default_immediate} only the operator may set"),
        ));
    }
    if retry.max_retry_after() > std::time::Duration::from_millis(DEFAULT_MAX_RETRY_AFTER_MS) {
        return Err((
            "retry.max_retry_after_ms".into(),
            format!("above {DEFAULT_MAX_RETRY_AFTER_MS} ms (1 hour) only the operator may set"),
        ));
    }
    let limit = DEFAULT_GIVE_UP_AFTER_MS;
    match retry.policy {
        PolicyKind::Ladder => {
            if retry.give_up_after_ms.is_some_and(|ms| ms > limit) {
                return Err((
                    "retry.give_up_after_ms".into(),
                    format!("above {limit} ms (7 days) only the operator may set"),
                ));
            }
        }
        PolicyKind::Fixed => {
            let total =
                u64::from(retry.retries.unwrap_or(0)).saturating_mul(retry.delay_ms.unwrap_or(0));
            if total > limit {
                return Err((
                    "retry.retries".into(),
                    "retries lasting more than 7 days only the operator may set".into(),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use postline_shared::model::problem::parse_json;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn allowed_patterns_cover_names_and_narrower_prefixes_only() {
        let allowed = strings(&["order.*", "invoice.paid"]);
        assert!(pattern_allowed(&allowed, "order.created"));
        assert!(pattern_allowed(&allowed, "order.*"));
        assert!(pattern_allowed(&allowed, "order.status.*"));
        assert!(pattern_allowed(&allowed, "invoice.paid"));
        assert!(!pattern_allowed(&allowed, "invoice.*"));
        assert!(!pattern_allowed(&allowed, "*"));
        assert!(!pattern_allowed(&allowed, "ord*"));
        assert!(!pattern_allowed(&allowed, "*.created"));
        assert!(!pattern_allowed(&allowed, "user.created"));
        assert!(pattern_allowed(&strings(&["*"]), "anything.*"));
        let problem = check_event_types(&allowed, &strings(&["order.x", "user.x"])).unwrap_err();
        assert_eq!(problem.field.as_deref(), Some("event_types[1]"));
    }

    #[test]
    fn the_limit_names_max_subscriptions() {
        assert!(check_room(2, 1).is_ok());
        let problem = check_room(2, 2).unwrap_err();
        assert_eq!(problem.field.as_deref(), Some("max_subscriptions"));
        assert_eq!(problem.code, ProblemCode::LimitReached);
    }

    fn spec(json: &str) -> SubscriptionSpec {
        parse_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn operator_only_settings_are_refused_to_tenants_by_field() {
        let all = |_: &str| true;
        let base = r#""id":"a","endpoint":"https://x/","event_types":["a"]"#;
        assert!(operator_only(&spec(&format!("{{{base}}}")), &all).is_ok());
        assert!(operator_only(
            &spec(&format!(
                r#"{{{base},"retry":{{"steps_ms":[50,100],"immediate_retries":1}}}}"#
            )),
            &all
        )
        .is_ok());
        let cases = [
            (
                r#""retry":{"immediate_retries":5}"#,
                "retry.immediate_retries",
            ),
            (
                r#""retry":{"max_retry_after_ms":7200000}"#,
                "retry.max_retry_after_ms",
            ),
            (r#""order":"none","max_in_flight":500"#, "max_in_flight"),
            (
                r#""retry":{"give_up_after_ms":864000000}"#,
                "retry.give_up_after_ms",
            ),
            (
                r#""retry":{"policy":"fixed","retries":10,"delay_ms":86400000}"#,
                "retry.retries",
            ),
            (r#""timeout_ms":30000"#, "timeout_ms"),
            (r#""interval_ms":1000"#, "interval_ms"),
        ];
        for (extra, field) in cases {
            let s = spec(&format!("{{{base},{extra}}}"));
            let problem = operator_only(&s, &all).unwrap_err();
            assert_eq!(problem.field.as_deref(), Some(field), "{extra}");
            assert_eq!(problem.code, ProblemCode::OperatorOnly);
            // A setting the request does not touch (the operator's) stays.
            assert!(operator_only(&s, &|_: &str| false).is_ok());
        }
    }

    #[test]
    fn tenant_specs_name_each_bad_field() {
        let cases = [
            (
                r#"{"id":"Acme","name":"A","allowed_event_types":["a"]}"#,
                "id",
            ),
            (
                r#"{"id":"acme","name":"","allowed_event_types":["a"]}"#,
                "name",
            ),
            (
                r#"{"id":"acme","name":"A","allowed_event_types":[]}"#,
                "allowed_event_types",
            ),
            (
                r#"{"id":"acme","name":"A","allowed_event_types":["a b"]}"#,
                "allowed_event_types[0]",
            ),
            (
                r#"{"id":"acme","name":"A","allowed_event_types":["a"],"max_subscriptions":1000000}"#,
                "max_subscriptions",
            ),
            (
                r#"{"id":"acme","name":"A","allowed_event_types":["a"],"colour":1}"#,
                "colour",
            ),
        ];
        for (json, field) in cases {
            let problem = parse_json::<TenantSpec>(json.as_bytes())
                .and_then(|s| s.validate().map(|_| s))
                .unwrap_err();
            assert_eq!(problem.field.as_deref(), Some(field), "{json}: {problem}");
        }
    }
}
