//! Subscriptions: who wants which events, where, and how they must be sent.
//!
//! [`SubscriptionSpec`] is what an operator writes (create body, validated
//! strictly); [`Subscription`] is what is stored; [`SubscriptionView`] is what
//! the API shows — the same minus every secret.

mod filter;
pub mod pacing;
mod receiver_auth;
pub mod rotation;
pub mod semantics;
mod type_index;

pub use filter::{EventTypePattern, Filter};
pub use pacing::RateLimit;
pub use receiver_auth::{
    ApiKeyLocation, ClientAuth, ClientCredentials, ReceiverAuth, ReceiverAuthView, TokenFields,
    TokenServer, TokenServerFormat, DEFAULT_EXPIRES_IN_FIELD, DEFAULT_TOKEN_FIELD,
    DEFAULT_TOKEN_LIFETIME_SECS, MAX_TOKEN_LIFETIME_SECS,
};
pub use rotation::RetiringSecret;
pub use semantics::{Completion, Dedup, Tracking};
pub use type_index::TypeIndex;

use crate::model::envelope::Envelope;
use crate::model::ids::{EventId, SubscriptionId};
use crate::model::problem::Problem;
use crate::model::retry_policy::RetryPolicy;
use crate::model::secret::Secret;
use crate::model::tenant::TenantId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Default receiver timeout.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Longest receiver timeout a subscription may ask for.
pub const MAX_TIMEOUT_MS: u64 = 60_000;

/// What the receiver gets as the request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BodyMode {
    /// `{id, type, operation, timestamp, payload}`.
    #[default]
    Envelope,
    /// The producer's payload, byte for byte.
    Payload,
}

/// Which responses count as delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub enum SuccessRule {
    /// Any 2xx status.
    #[default]
    #[serde(rename = "2xx")]
    AnyTwoHundred,
    /// Exactly 200 OK (201, 204… are failures).
    #[serde(rename = "200")]
    OnlyOk,
}

impl SuccessRule {
    /// Whether `status` counts as delivered under this rule.
    pub fn accepts(self, status: u16) -> bool {
        match self {
            Self::AnyTwoHundred => (200..300).contains(&status),
            Self::OnlyOk => status == 200,
        }
    }
}

/// Delivery ordering for a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderMode {
    /// Event N+1 is sent only after event N succeeded or was given up.
    #[default]
    Strict,
    /// Events are sent concurrently; a failure does not hold the others.
    None,
}

/// Whether a subscription is being delivered to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionStatus {
    /// Events are delivered.
    #[default]
    Active,
    /// Events queue up but are not delivered until resumed.
    Paused,
    /// Deactivated after giving up; events queue up until re-enabled.
    Disabled,
}

/// Encoding of a custom signature header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncoding {
    /// Lowercase hex.
    #[default]
    Hex,
    /// Standard base64.
    Base64,
}

/// A partner-specific signature header: HMAC-SHA256 of the raw body with the first secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignatureHeader {
    /// Header name, e.g. `X-FacesWebhookSignature`.
    pub name: String,
    /// How the digest is written.
    #[serde(default)]
    pub encoding: SignatureEncoding,
}

/// A subscription as an operator writes it (the create body).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSpec {
    /// Name-like id (`acme_us`): lowercase letters, digits, `_` and `-`.
    #[schema(value_type = String, pattern = "^[a-z0-9][a-z0-9_-]{0,63}$", example = "acme_us")]
    pub id: SubscriptionId,
    /// Where events are POSTed (http or https).
    #[schema(format = "uri", example = "https://hooks.example.com/postline")]
    pub endpoint: String,
    /// Event types wanted: exact names or `*` wildcards.
    #[schema(min_items = 1, example = json!(["order.*"]))]
    pub event_types: Vec<String>,
    /// All must match for an event to be delivered.
    #[serde(default)]
    pub filters: Vec<Filter>,
    /// Envelope or bare payload.
    #[serde(default)]
    pub body: BodyMode,
    /// Extra fixed headers (e.g. `API-Version: 2.0`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Signing secrets (write-only); Standard Webhooks headers are sent when set.
    #[serde(default)]
    pub secrets: Vec<Secret>,
    /// Optional partner-specific signature header.
    #[serde(default)]
    pub signature_header: Option<SignatureHeader>,
    /// How the receiver authenticates us (credentials write-only).
    #[serde(default)]
    pub auth: ReceiverAuth,
    /// Which statuses count as delivered.
    #[serde(default)]
    pub success: SuccessRule,
    /// Receiver timeout in milliseconds.
    #[serde(default = "default_timeout_ms")]
    #[schema(minimum = 1, maximum = 60000, default = 10000)]
    pub timeout_ms: u64,
    /// Ordering guarantee.
    #[serde(default)]
    pub order: OrderMode,
    /// Initial status (`active` or `paused`).
    #[serde(default)]
    pub status: SubscriptionStatus,
    /// What happens when deliveries fail: the backoff ladder (default) or fixed retries.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Never the same identity twice (e.g. an order's status); off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup: Option<Dedup>,
    /// Nothing more for an entity once a terminal status was delivered; off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion: Option<Completion>,
    /// Deliver on epoch-aligned ticks this many ms apart instead of at once; off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1000, maximum = 86400000)]
    pub interval_ms: Option<u64>,
    /// At most so many POSTs a second to the receiver; unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Order mode `none`: most POSTs in flight at once (default: the
    /// delivery service's prefetch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub max_in_flight: Option<u16>,
    /// The tenant it belongs to (receives only that tenant's events); none: the operator's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
}

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

/// A partial update: every field given replaces the stored one.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionPatch {
    /// New endpoint.
    #[schema(format = "uri")]
    pub endpoint: Option<String>,
    /// New event types.
    pub event_types: Option<Vec<String>>,
    /// New filters.
    pub filters: Option<Vec<Filter>>,
    /// New body mode.
    pub body: Option<BodyMode>,
    /// New extra headers.
    pub headers: Option<BTreeMap<String, String>>,
    /// New secrets (replaces all; send `[]` to remove).
    pub secrets: Option<Vec<Secret>>,
    /// New signature header (`null` is not distinguishable from absent; send it to set one).
    pub signature_header: Option<SignatureHeader>,
    /// New receiver auth (replaces it whole, credentials included; `{"mode": "none"}` removes it).
    pub auth: Option<ReceiverAuth>,
    /// New success rule.
    pub success: Option<SuccessRule>,
    /// New timeout.
    #[schema(minimum = 1, maximum = 60000)]
    pub timeout_ms: Option<u64>,
    /// New order mode.
    pub order: Option<OrderMode>,
    /// New status (`active` re-enables, `paused` pauses).
    pub status: Option<SubscriptionStatus>,
    /// New retry policy (replaces the whole policy).
    pub retry: Option<RetryPolicy>,
    /// New dedup rule (replaces it whole); `null` turns dedup off.
    #[serde(default, deserialize_with = "semantics::nullable")]
    pub dedup: Option<Option<Dedup>>,
    /// New completion rule (replaces it whole); `null` turns it off.
    #[serde(default, deserialize_with = "semantics::nullable")]
    pub completion: Option<Option<Completion>>,
    /// New delivery interval; `null` delivers events as they arrive again.
    #[serde(default, deserialize_with = "semantics::nullable")]
    pub interval_ms: Option<Option<u64>>,
    /// New rate limit; `null` removes it.
    #[serde(default, deserialize_with = "semantics::nullable")]
    pub rate_limit: Option<Option<RateLimit>>,
    /// New concurrency bound; `null` restores the default.
    #[serde(default, deserialize_with = "semantics::nullable")]
    pub max_in_flight: Option<Option<u16>>,
}

/// Why and when delivery deactivated a subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Disabled {
    /// When it was deactivated.
    pub at: DateTime<Utc>,
    /// Why, for people.
    pub reason: String,
    /// The event that exhausted the retry policy.
    #[schema(value_type = String)]
    pub event_id: EventId,
    /// Whether the backlog was discarded (`discard_on_disable`).
    pub backlog_discarded: bool,
}

/// A stored subscription.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subscription {
    /// What the operator configured.
    pub spec: SubscriptionSpec,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Set while the subscription is disabled by delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<Disabled>,
    /// This life of the subscription: new on every create (and when a
    /// disable discards the backlog). Every copy of an event carries the
    /// incarnation it was made for; delivery drops copies of another one.
    /// Empty for subscriptions stored before incarnations existed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub incarnation: String,
    /// Replaced signing secrets still signing during their grace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retiring_secrets: Vec<RetiringSecret>,
}

/// What the API shows of a subscription: everything but the secrets.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SubscriptionView<'a> {
    /// Id.
    #[schema(value_type = String)]
    pub id: &'a SubscriptionId,
    /// Endpoint.
    pub endpoint: &'a str,
    /// Event types.
    pub event_types: &'a [String],
    /// Filters.
    pub filters: &'a [Filter],
    /// Body mode.
    pub body: BodyMode,
    /// Extra headers.
    pub headers: &'a BTreeMap<String, String>,
    /// How many signing secrets are set (their values are never shown).
    pub secrets_count: usize,
    /// When each replaced secret still signing stops (rotation grace).
    pub retiring_secrets_until: Vec<DateTime<Utc>>,
    /// Custom signature header.
    pub signature_header: Option<&'a SignatureHeader>,
    /// Receiver auth, without its credentials.
    pub auth: ReceiverAuthView<'a>,
    /// Success rule.
    pub success: SuccessRule,
    /// Timeout.
    pub timeout_ms: u64,
    /// Order mode.
    pub order: OrderMode,
    /// Status.
    pub status: SubscriptionStatus,
    /// Retry policy, every default filled in.
    pub retry: RetryPolicy,
    /// Dedup rule (`null`: off).
    pub dedup: Option<&'a Dedup>,
    /// Completion rule (`null`: off).
    pub completion: Option<&'a Completion>,
    /// Delivery interval in ms (`null`: events are sent as they arrive).
    pub interval_ms: Option<u64>,
    /// Rate limit (`null`: none).
    pub rate_limit: Option<RateLimit>,
    /// Order mode `none`: most POSTs in flight (`null`: the service's prefetch).
    pub max_in_flight: Option<u16>,
    /// This life of the subscription (new on every create).
    pub incarnation: &'a str,
    /// The tenant it belongs to (`null`: the operator's own).
    pub tenant: Option<&'a TenantId>,
    /// Why it is disabled, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled: Option<&'a Disabled>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl SubscriptionSpec {
    /// Checks every field, naming the first that is wrong.
    pub fn validate(&self) -> Result<(), Problem> {
        validate_id(&self.id)?;
        validate_endpoint(&self.endpoint)?;
        if self.event_types.is_empty() {
            return Err(Problem::field(
                "event_types",
                "must list at least one event type",
            ));
        }
        for (i, pattern) in self.event_types.iter().enumerate() {
            EventTypePattern::parse(pattern)
                .map_err(|m| Problem::field(format!("event_types[{i}]"), m))?;
        }
        for (i, filter) in self.filters.iter().enumerate() {
            filter
                .validate()
                .map_err(|p| p.within(&format!("filters[{i}]")))?;
        }
        for (name, value) in &self.headers {
            validate_extra_header(name, value)?;
        }
        for (i, secret) in self.secrets.iter().enumerate() {
            crate::model::signing_secret::key_bytes(secret)
                .map_err(|m| Problem::field(format!("secrets[{i}]"), m))?;
        }
        if let Some(header) = &self.signature_header {
            if self.secrets.is_empty() {
                return Err(Problem::field(
                    "signature_header",
                    "needs at least one secret in `secrets`",
                ));
            }
            validate_header_name(&header.name)
                .map_err(|m| Problem::field("signature_header.name", m))?;
        }
        self.auth.validate(&self.endpoint, &self.headers)?;
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return Err(Problem::field(
                "timeout_ms",
                format!("must be between 1 and {MAX_TIMEOUT_MS}"),
            ));
        }
        self.retry.validate()?;
        if let Some(dedup) = &self.dedup {
            dedup.validate()?;
        }
        if let Some(completion) = &self.completion {
            completion.validate()?;
        }
        semantics::validate_interval(self.interval_ms)?;
        if let Some(limit) = &self.rate_limit {
            limit.validate()?;
        }
        pacing::validate_max_in_flight(self.max_in_flight)?;
        Ok(())
    }

    /// Checks a new subscription: every field, and a status an operator may set.
    pub fn validate_new(&self) -> Result<(), Problem> {
        if self.status == SubscriptionStatus::Disabled {
            return Err(disabled_is_not_settable());
        }
        self.validate()
    }

    /// Applies a patch, returning the updated spec (not yet validated).
    pub fn patched(&self, patch: SubscriptionPatch) -> Self {
        let mut spec = self.clone();
        macro_rules! take {
            ($($field:ident),*) => { $( if let Some(v) = patch.$field { spec.$field = v; } )* };
        }
        take!(
            endpoint,
            event_types,
            filters,
            body,
            headers,
            secrets,
            auth,
            success,
            timeout_ms,
            order,
            status,
            retry,
            dedup,
            completion,
            interval_ms,
            rate_limit,
            max_in_flight
        );
        if let Some(header) = patch.signature_header {
            spec.signature_header = Some(header);
        }
        spec
    }
}

impl SubscriptionSpec {
    /// Every secret of the subscription (signing secrets and receiver
    /// credentials), for sealing and opening at rest.
    pub fn secrets_mut(&mut self) -> Vec<&mut Secret> {
        let mut all: Vec<&mut Secret> = self.secrets.iter_mut().collect();
        all.extend(self.auth.secrets_mut());
        all
    }
}

impl Subscription {
    /// Every secret of the stored subscription, the retiring ones included,
    /// for sealing and opening at rest.
    pub fn secrets_mut(&mut self) -> Vec<&mut Secret> {
        let mut all = self.spec.secrets_mut();
        all.extend(
            self.retiring_secrets
                .iter_mut()
                .map(|retiring| &mut retiring.secret),
        );
        all
    }
}

impl Subscription {
    /// A subscription created now from `spec`, in a new incarnation.
    pub fn new(spec: SubscriptionSpec, now: DateTime<Utc>) -> Self {
        Self {
            spec,
            created_at: now,
            updated_at: now,
            disabled: None,
            incarnation: new_incarnation(),
            retiring_secrets: Vec::new(),
        }
    }

    /// The id.
    pub fn id(&self) -> &SubscriptionId {
        &self.spec.id
    }

    /// Whether `envelope` (and its JSON tree `tree`) is wanted by this subscription.
    pub fn wants(&self, envelope: &Envelope, tree: &serde_json::Value) -> bool {
        self.wants_type(&envelope.event_type) && self.wants_beyond_type(envelope, || tree)
    }

    /// Whether one of the subscription's event-type patterns matches `event_type`.
    pub fn wants_type(&self, event_type: &str) -> bool {
        self.spec
            .event_types
            .iter()
            .filter_map(|p| EventTypePattern::parse(p).ok())
            .any(|p| p.matches(event_type))
    }

    /// The rest of [`Subscription::wants`], for an event whose type is known
    /// to match (see [`TypeIndex`]): its tenant and the payload filters.
    /// `tree` gives the envelope's JSON tree, asked for only when a filter needs it.
    pub fn wants_beyond_type<'t>(
        &self,
        envelope: &Envelope,
        tree: impl FnOnce() -> &'t serde_json::Value,
    ) -> bool {
        if !crate::model::tenant::may_receive(self.spec.tenant.as_ref(), envelope.tenant.as_ref()) {
            return false;
        }
        if self.spec.filters.is_empty() {
            return true;
        }
        let tree = tree();
        self.spec.filters.iter().all(|f| f.matches(tree))
    }

    /// The API view, without secrets.
    pub fn view(&self) -> SubscriptionView<'_> {
        let s = &self.spec;
        SubscriptionView {
            id: &s.id,
            endpoint: &s.endpoint,
            event_types: &s.event_types,
            filters: &s.filters,
            body: s.body,
            headers: &s.headers,
            secrets_count: s.secrets.len(),
            retiring_secrets_until: self.retiring_until(Utc::now()),
            signature_header: s.signature_header.as_ref(),
            auth: s.auth.view(),
            success: s.success,
            timeout_ms: s.timeout_ms,
            order: s.order,
            status: s.status,
            retry: s.retry.resolved(),
            dedup: s.dedup.as_ref(),
            completion: s.completion.as_ref(),
            interval_ms: s.interval_ms,
            rate_limit: s.rate_limit,
            max_in_flight: s.max_in_flight,
            incarnation: &self.incarnation,
            tenant: s.tenant.as_ref(),
            disabled: self.disabled.as_ref(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// A fresh incarnation id.
pub fn new_incarnation() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The problem of an operator asking for status `disabled`.
pub fn disabled_is_not_settable() -> Problem {
    Problem::field(
        "status",
        "may be set to `active` or `paused`; `disabled` is set by delivery",
    )
}

impl SubscriptionPatch {
    /// Whether the patch changes what the receiver gets or how it is
    /// reached (endpoint, body, headers, signing, auth, success rule,
    /// timeout): only such a change needs the endpoint PINGed again, so an
    /// operator can pause a subscription, or change its retry policy, while
    /// its endpoint is down.
    pub fn changes_the_request(&self) -> bool {
        self.endpoint.is_some()
            || self.body.is_some()
            || self.headers.is_some()
            || self.secrets.is_some()
            || self.signature_header.is_some()
            || self.auth.is_some()
            || self.success.is_some()
            || self.timeout_ms.is_some()
    }

    /// Checks what only a patch can get wrong (the rest is checked on the result).
    pub fn validate(&self) -> Result<(), Problem> {
        if self.status == Some(SubscriptionStatus::Disabled) {
            return Err(disabled_is_not_settable());
        }
        Ok(())
    }
}

/// Deserializing checked the id's shape; the API may not use a reserved one.
fn validate_id(id: &SubscriptionId) -> Result<(), Problem> {
    if id.is_reserved() {
        return Err(Problem::field("id", SubscriptionId::RULE));
    }
    Ok(())
}

fn validate_endpoint(endpoint: &str) -> Result<(), Problem> {
    validate_url("endpoint", endpoint)
}

/// Checks an http(s) URL that Postline will call, naming `field` when it is wrong.
fn validate_url(field: &str, url: &str) -> Result<(), Problem> {
    let url =
        url::Url::parse(url).map_err(|e| Problem::field(field, format!("not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Problem::field(field, "must be an http or https URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Problem::field(field, "must name a host"));
    }
    if url.fragment().is_some() {
        return Err(Problem::field(field, "must not have a #fragment"));
    }
    Ok(())
}

/// Headers Postline sets itself, which extra headers may not override.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "user-agent",
    "authorization",
    "transfer-encoding",
    "connection",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

fn validate_header_name(name: &str) -> Result<(), String> {
    reqwest::header::HeaderName::from_bytes(name.as_bytes())
        .map(|_| ())
        .map_err(|_| format!("{name:?} is not a valid HTTP header name"))
}

fn validate_extra_header(name: &str, value: &str) -> Result<(), Problem> {
    let field = format!("headers.{name}");
    validate_header_name(name).map_err(|m| Problem::field(&field, m))?;
    if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(Problem::field(
            &field,
            "is set by Postline and cannot be overridden",
        ));
    }
    reqwest::header::HeaderValue::from_str(value)
        .map(|_| ())
        .map_err(|_| Problem::field(&field, "value is not a valid HTTP header value"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::problem::parse_json;

    fn spec(json: &str) -> Result<SubscriptionSpec, Problem> {
        let spec: SubscriptionSpec = parse_json(json.as_bytes())?;
        spec.validate()?;
        Ok(spec)
    }

    #[test]
    fn accepts_a_full_spec_with_defaults() {
        let s = spec(
            r#"{"id":"acme_us","endpoint":"https://a.example/hook","event_types":["order.*"]}"#,
        )
        .unwrap();
        assert_eq!(s.timeout_ms, DEFAULT_TIMEOUT_MS);
        assert_eq!(s.order, OrderMode::Strict);
        assert_eq!(s.success, SuccessRule::AnyTwoHundred);
    }

    #[test]
    fn names_each_bad_field() {
        let base = r#""endpoint":"https://a.example/","event_types":["a"]"#;
        let cases = [
            (format!(r#"{{"id":"Bad Id",{base}}}"#), "id"),
            (format!(r#"{{"id":"_reserved",{base}}}"#), "id"),
            (
                r#"{"id":"a","endpoint":"ftp://x/","event_types":["a"]}"#.to_string(),
                "endpoint",
            ),
            (
                r#"{"id":"a","endpoint":"not a url","event_types":["a"]}"#.to_string(),
                "endpoint",
            ),
            (
                r#"{"id":"a","endpoint":"https://x/","event_types":[]}"#.to_string(),
                "event_types",
            ),
            (
                r#"{"id":"a","endpoint":"https://x/","event_types":["a b"]}"#.to_string(),
                "event_types[0]",
            ),
            (format!(r#"{{"id":"a",{base},"colour":"red"}}"#), "colour"),
            (
                format!(r#"{{"id":"a",{base},"headers":{{"Content-Type":"x"}}}}"#),
                "headers.Content-Type",
            ),
            (
                format!(r#"{{"id":"a",{base},"timeout_ms":0}}"#),
                "timeout_ms",
            ),
            (
                format!(r#"{{"id":"a",{base},"filters":[{{"pointer":"x","in":[1]}}]}}"#),
                "filters[0].pointer",
            ),
            (
                format!(r#"{{"id":"a",{base},"signature_header":{{"name":"X-Sig"}}}}"#),
                "signature_header",
            ),
        ];
        for (json, field) in cases {
            let problem = spec(&json).unwrap_err();
            assert_eq!(problem.field.as_deref(), Some(field), "{json}: {problem}");
        }
    }

    #[test]
    fn view_hides_secrets() {
        let s = spec(r#"{"id":"a","endpoint":"https://x/","event_types":["a"],"secrets":["shh-top-secret"]}"#)
            .unwrap();
        let now = Utc::now();
        let stored = Subscription::new(s, now);
        let shown = serde_json::to_string(&stored.view()).unwrap();
        assert!(!shown.contains("shh-top-secret"), "{shown}");
        assert!(shown.contains(r#""secrets_count":1"#), "{shown}");
        assert!(!format!("{stored:?}").contains("shh-top-secret"));
    }

    #[test]
    fn a_patch_sets_keeps_or_clears_the_semantics() {
        let s = spec(
            r#"{"id":"a","endpoint":"https://x/","event_types":["a"],"interval_ms":300000,
                "dedup":{"fields":["/payload/order_id","/payload/status"]}}"#,
        )
        .unwrap();
        let patch = |json: &str| parse_json::<SubscriptionPatch>(json.as_bytes()).unwrap();
        let kept = s.patched(patch(r#"{"timeout_ms":500}"#));
        assert_eq!(kept.interval_ms, Some(300_000));
        assert_eq!(kept.dedup, s.dedup);
        let cleared = s.patched(patch(r#"{"interval_ms":null,"dedup":null}"#));
        assert_eq!(cleared.interval_ms, None);
        assert_eq!(cleared.dedup, None);
        let set = s.patched(patch(
            r#"{"completion":{"entity":"/payload/order_id","field":"/payload/status","terminal":["Ended"]}}"#,
        ));
        assert_eq!(
            set.completion.map(|c| c.ttl_secs),
            Some(semantics::DEFAULT_SEMANTICS_TTL_SECS)
        );
    }

    #[test]
    fn names_bad_auth_fields() {
        let base = r#""id":"a","endpoint":"https://x/","event_types":["a"]"#;
        let cases = [
            (
                format!(
                    r#"{{{base},"auth":{{"mode":"oauth2_client_credentials","client_id":"c","client_secret":"s"}}}}"#
                ),
                "auth.token_url",
            ),
            (
                format!(r#"{{{base},"auth":{{"mode":"bearer","token":"t","colour":1}}}}"#),
                "auth.colour",
            ),
            (
                format!(r#"{{{base},"auth":{{"mode":"kerberos"}}}}"#),
                "auth.mode",
            ),
            (
                format!(
                    r#"{{{base},"auth":{{"mode":"token_server","token_url":"not a url","username":"u","password":"p"}}}}"#
                ),
                "auth.token_url",
            ),
            (
                format!(
                    r#"{{{base},"headers":{{"X-Key":"1"}},"auth":{{"mode":"api_key","name":"x-key","key":"k"}}}}"#
                ),
                "auth.name",
            ),
        ];
        for (json, field) in cases {
            let problem = spec(&json).unwrap_err();
            assert_eq!(problem.field.as_deref(), Some(field), "{json}: {problem}");
        }
    }

    #[test]
    fn view_hides_auth_credentials_and_patch_replaces_auth() {
        let s = spec(r#"{"id":"a","endpoint":"https://x/","event_types":["a"],"auth":{"mode":"basic","username":"alice","password":"pw-top-secret"}}"#)
            .unwrap();
        let now = Utc::now();
        let stored = Subscription::new(s.clone(), now);
        let shown = serde_json::to_string(&stored.view()).unwrap();
        assert!(!shown.contains("pw-top-secret"), "{shown}");
        assert!(
            shown.contains(r#""auth":{"mode":"basic","username":"alice"}"#),
            "{shown}"
        );
        assert!(!format!("{stored:?}").contains("pw-top-secret"));
        let patch: SubscriptionPatch =
            crate::model::problem::parse_json(br#"{"auth":{"mode":"none"}}"#).unwrap();
        assert_eq!(s.patched(patch).auth, ReceiverAuth::None);
        let untouched = s.patched(SubscriptionPatch::default());
        assert_eq!(untouched.auth, s.auth);
    }

    #[test]
    fn success_rules() {
        assert!(SuccessRule::AnyTwoHundred.accepts(204));
        assert!(!SuccessRule::OnlyOk.accepts(204));
        assert!(SuccessRule::OnlyOk.accepts(200));
        assert!(!SuccessRule::AnyTwoHundred.accepts(302));
    }
}
