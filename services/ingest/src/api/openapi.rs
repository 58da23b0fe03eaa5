//! The OpenAPI 3.1 document of ingest's HTTP API, generated from the
//! handlers' `#[utoipa::path]` annotations (collected by the router itself,
//! so a route cannot be served undocumented) and the request and response
//! types. Served at `GET /openapi.json`; the committed copy is
//! `deploy/openapi/ingest.json`.
//!
//! Most handlers build their answers as JSON values; the types here describe
//! those answers' shapes for the document only.

use crate::tenants::audit::AuditEntry;
use crate::tenants::TenantStatus;
use postline_shared::model::problem::{Problem, ProblemCode};
use postline_shared::model::subscription::SubscriptionView;
use postline_shared::model::tenant::TenantId;
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::security::{
    ClientCredentials, Flow, HttpAuthScheme, HttpBuilder, OAuth2, Scopes, SecurityScheme,
};
use utoipa::{Modify, OpenApi, ToSchema};

/// Security scheme of the operator's admin token.
pub const ADMIN: &str = "admin_token";
/// Security scheme of the producers' token.
pub const PRODUCER: &str = "producer_token";
/// Security scheme of a tenant's OAuth access token.
pub const TENANT: &str = "tenant_oauth";

/// Every error answer: `{"error": {code, field?, message}}`, and for a failed
/// PING the PING's outcome.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: Problem,
    /// With `ping_failed`: what the endpoint did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ping: Option<PingOutcome>,
}

/// What an endpoint did with a PING.
#[derive(Debug, Serialize, ToSchema)]
pub struct PingOutcome {
    /// The endpoint's HTTP status (`null`: no answer).
    pub status: Option<u16>,
    /// Why there was no acceptable answer (`null` when it answered).
    pub error: Option<String>,
    /// How long the PING took.
    pub duration_ms: u64,
}

/// `202` of `POST /v1/events` and `/v1/events/batch`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// The ids of every accepted event, in order.
    pub ids: Vec<String>,
    /// The ids seen in the last 7 days: accepted again, not published again.
    pub duplicates: Vec<String>,
}

/// A subscription as the API shows it (never a secret): with `backlog` on
/// `GET`, with `ping` after a create or update that sent one.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionShown<'a> {
    /// The subscription.
    #[serde(flatten)]
    pub subscription: SubscriptionView<'a>,
    /// Events waiting in its queue (`GET` only, when the broker answers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u64>,
    /// The PING sent before storing the change, when one was sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ping: Option<PingOutcome>,
}

/// `GET /v1/subscriptions`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionList<'a> {
    /// The subscriptions the caller may see.
    pub subscriptions: Vec<SubscriptionView<'a>>,
}

/// `DELETE /v1/subscriptions/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionDeleted {
    /// The subscription.
    pub id: String,
    /// Always `true`.
    pub deleted: bool,
    /// Whether its queue went too (`false`: repeat the `DELETE`).
    pub queue_deleted: bool,
    /// Events discarded with the queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discarded_events: Option<u64>,
}

/// `GET /v1/subscriptions/{id}/state`: the delivery state.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryStateShown {
    /// The subscription.
    pub id: String,
    /// `active`, `paused` or `disabled`.
    pub status: postline_shared::model::subscription::SubscriptionStatus,
    /// Why and when it was disabled (`null` unless disabled).
    pub disabled: Option<postline_shared::model::subscription::Disabled>,
    /// `strict` or `none`.
    pub order: postline_shared::model::subscription::OrderMode,
    /// The ordering block of a strict subscription waiting on its ladder:
    /// `{event_id, attempts, next_attempt_at, first_failure_at, last_error}`.
    #[schema(value_type = Option<Object>)]
    pub blocked: Option<Value>,
    /// Last successful delivery.
    pub last_success_at: Option<String>,
    /// The event of the last success.
    pub last_event_id: Option<String>,
    /// Last failed attempt.
    pub last_failure_at: Option<String>,
    /// The event of the last failure.
    pub last_failed_event_id: Option<String>,
    /// The last failure's error.
    pub last_error: Option<String>,
    /// `delivered`, `failed_attempts`, `given_up`, `gone`, `stale`,
    /// `superseded`, `discarded`, `deduplicated`, `completed_entity`.
    #[schema(value_type = Object)]
    pub counters: Value,
    /// With a completion rule: `{open, complete}` entities (`null` otherwise).
    #[schema(value_type = Option<Object>)]
    pub entities: Option<Value>,
    /// With an interval: the next tick.
    pub next_tick_at: Option<String>,
    /// Parked events.
    pub parked: u64,
    /// Events waiting in the queue (`null` when the broker does not answer).
    pub backlog: Option<u64>,
}

/// `POST /v1/subscriptions/{id}/retry`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RetryingNow {
    /// The subscription.
    pub id: String,
    /// The blocked event, tried now.
    pub event_id: String,
    /// Always `true`.
    pub retrying: bool,
}

/// `GET /v1/subscriptions/{id}/parked`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ParkedList {
    /// The subscription.
    pub id: String,
    /// Events given up with `skip`: id, type, attempts, first failure, give-up time, last error.
    #[schema(value_type = Vec<Object>)]
    pub parked: Vec<Value>,
}

/// `POST /v1/subscriptions/{id}/parked/replay` and `.../parked/{event_id}/replay`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Replayed {
    /// The subscription.
    pub id: String,
    /// The ids of the events queued again.
    pub replayed: Vec<String>,
}

/// `GET /v1/subscriptions/{id}/attempts`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptList {
    /// The subscription.
    pub id: String,
    /// The recent attempts, newest first: time, event, attempt, status or error, duration.
    #[schema(value_type = Vec<Object>)]
    pub attempts: Vec<Value>,
}

/// `POST /v1/subscriptions/{id}/secrets/rotate`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Rotated<'a> {
    /// The subscription after the rotation.
    #[serde(flatten)]
    pub subscription: SubscriptionView<'a>,
    /// The generated secret, in this answer only (absent when the request gave one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// A tenant as the API shows it (the create body's fields, and when).
/// Spelled out rather than flattened: the create body's schema is closed
/// (unknown fields are refused), so it cannot be extended by composition.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantShown {
    /// Id.
    pub id: TenantId,
    /// Display name.
    pub name: String,
    /// Event-type patterns its subscriptions may ask for.
    pub allowed_event_types: Vec<String>,
    /// Most subscriptions it may have.
    pub max_subscriptions: u32,
    /// Active or suspended.
    pub status: TenantStatus,
    /// Creation time.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Last change.
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// `PATCH` with `status: suspended`: the subscriptions it paused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_subscriptions: Option<Vec<String>>,
}

/// `GET /v1/tenants`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantList {
    /// Every tenant.
    pub tenants: Vec<TenantShown>,
}

/// `DELETE /v1/tenants/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantDeleted {
    /// The tenant.
    pub id: String,
    /// Always `true`.
    pub deleted: bool,
    /// The subscriptions deleted with it.
    pub subscriptions_deleted: Vec<String>,
}

/// A tenant's OAuth client (never its secret, except `client_secret` once, on create).
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientShown {
    /// The client id (`plc_…`).
    pub client_id: String,
    /// The tenant.
    pub tenant: String,
    /// The scopes it may be granted.
    pub scopes: Vec<crate::tenants::credentials::Scope>,
    /// When it was issued.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// The secret (`pls_…`): in the create answer only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// The scopes space-separated: in the create answer only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// `GET /v1/tenants/{id}/clients`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientList {
    /// The tenant's clients.
    pub clients: Vec<ClientShown>,
}

/// `DELETE /v1/tenants/{id}/clients/{client_id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientDeleted {
    /// The client.
    pub client_id: String,
    /// Always `true`.
    pub deleted: bool,
}

/// `GET /v1/tenants/{id}/audit`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditList {
    /// The tenant.
    pub tenant: String,
    /// Newest first.
    pub entries: Vec<AuditEntry>,
}

/// `POST /v1/tenants/{id}/portal-link`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PortalLink {
    /// The tenant.
    pub tenant: String,
    /// The link's path (`/ui/portal?token=plp_…`).
    pub path: String,
    /// The link, absolute.
    pub url: String,
    /// When it stops working.
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// `POST /oauth/token`: the form of the client credentials grant.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenForm {
    /// Always `client_credentials`.
    #[schema(example = "client_credentials")]
    pub grant_type: String,
    /// The client id, when not sent with HTTP Basic.
    pub client_id: Option<String>,
    /// The client secret, when not sent with HTTP Basic.
    #[schema(value_type = Option<postline_shared::model::secret::Secret>)]
    pub client_secret: Option<String>,
    /// Space-separated scopes narrowing the client's.
    pub scope: Option<String>,
}

/// `200` of `POST /oauth/token`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenIssued {
    /// The bearer token (opaque).
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// Space-separated granted scopes.
    pub scope: String,
}

/// An RFC 6749 §5.2 error of `POST /oauth/token`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthErrorBody {
    /// One of `invalid_request`, `invalid_client`, `unsupported_grant_type`,
    /// `invalid_scope`, `unauthorized_client`.
    pub error: ProblemCode,
    /// For people.
    pub error_description: String,
}

/// `POST /v1/admin/import`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Imported {
    /// Subscriptions restored.
    pub imported: u64,
    /// Ordering blocks restored.
    pub blocks: u64,
    /// Parked events restored.
    pub parked: u64,
}

/// `POST /v1/admin/reset-state`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResetDone {
    /// The new installation marker.
    #[schema(value_type = Object)]
    pub installation: Value,
    /// How many subscriptions this ingest process knew.
    pub known_subscriptions: u64,
    /// Strict subscriptions whose queue holds events while no block is known: `{id, queued}`.
    #[schema(value_type = Vec<Object>)]
    pub may_be_out_of_order: Vec<Value>,
}

/// Adds the security schemes.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            ADMIN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The operator's admin token (POSTLINE_ADMIN_TOKEN): every management route.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            PRODUCER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The producers' token (POSTLINE_PRODUCER_TOKEN): event intake.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            TENANT,
            SecurityScheme::OAuth2(OAuth2::with_description(
                [Flow::ClientCredentials(ClientCredentials::new(
                    "/oauth/token",
                    Scopes::from_iter([
                        (
                            "subscriptions:read",
                            "list, get, state, attempts, parked; the tenant and its audit trail",
                        ),
                        (
                            "subscriptions:write",
                            "create, patch, pause/resume, enable, delete, rotate secrets",
                        ),
                        ("deliveries:replay", "retry now, replay parked events"),
                    ]),
                ))],
                "A tenant's access token from POST /oauth/token: its own subscriptions only.",
            )),
        );
    }
}

/// Adds `verify` to the create and update bodies: it is read (and taken
/// out) before the body is parsed as the subscription, so the types do not
/// carry it, but their schemas are closed (unknown fields are refused).
struct Verify;

impl Modify for Verify {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
        use utoipa::openapi::RefOr;
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        for name in ["SubscriptionSpec", "SubscriptionPatch"] {
            if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(name) {
                object.properties.insert(
                    "verify".to_string(),
                    ObjectBuilder::new()
                        .schema_type(Type::Boolean)
                        .default(Some(serde_json::Value::Bool(true)))
                        .description(Some("`false` skips the PING (not stored)."))
                        .into(),
                );
            }
        }
    }
}

/// The document's frame: info, security schemes, shared schemas.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Postline ingest API",
        description = "Event intake, subscriptions and their delivery controls, tenants and their OAuth clients, the OAuth token endpoint, state recovery, and the health endpoints of Postline's ingest service.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    modifiers(&Security),
    components(schemas(ErrorBody, Problem, ProblemCode)),
    tags(
        (name = "events", description = "Event intake (producer token)"),
        (name = "subscriptions", description = "Subscriptions (admin token or a tenant's token)"),
        (name = "delivery", description = "Delivery state and operator controls"),
        (name = "tenants", description = "Tenants, their clients, audit trail and portal links"),
        (name = "oauth", description = "OAuth 2.0 client credentials grant for tenants' clients"),
        (name = "admin", description = "State export, import and reset (admin token)"),
        (name = "ops", description = "Health, readiness, metrics and this document")
    )
)]
struct Frame;

/// The whole document: the frame, every documented route, and the
/// service-independent ops routes.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut document = Frame::openapi();
    document.merge(super::documented_routes().into_openapi());
    document.merge(postline_shared::runtime::ops::openapi());
    Verify.modify(&mut document);
    document.info.version = env!("CARGO_PKG_VERSION").to_string();
    document
}

/// The document as served, built once.
static SERVED: std::sync::LazyLock<Value> =
    std::sync::LazyLock::new(|| serde_json::to_value(document()).unwrap_or_default());

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "ops",
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json", body = Object))
)]
pub async fn serve() -> axum::response::Response {
    use axum::response::IntoResponse;
    axum::Json(&*SERVED).into_response()
}
