//! The audit trail: one entry per management change (who, what, on which
//! resource, when, and the names of the fields changed, never their
//! values), in a capped Redis stream per tenant. Changes to the operator's
//! own subscriptions go to a stream of their own (`_operator`, never a tenant id).

use super::store::Principal;
use chrono::{DateTime, Utc};
use postline_shared::model::tenant::TenantId;
use postline_shared::redis::keys::RedisKeys;
use redis::aio::ConnectionManager;
use redis::streams::{StreamMaxlen, StreamRangeReply};
use serde::{Deserialize, Serialize};

/// Entries kept per tenant (approximately).
pub const AUDIT_CAP: usize = 1_000;
/// The stream of changes to subscriptions without a tenant.
pub const OPERATOR_STREAM: &str = "_operator";
const FIELD: &str = "entry";

/// One audited change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// When.
    pub at: DateTime<Utc>,
    /// Who: `admin`, or `client:<client_id>` (`client:portal` for a portal session).
    pub actor: String,
    /// Through what: `api` or `ui`.
    pub via: String,
    /// What, e.g. `subscription.update`.
    pub action: String,
    /// On what, e.g. the subscription id.
    pub resource: String,
    /// The names of the fields set (never their values).
    pub fields: Vec<String>,
}

impl AuditEntry {
    /// An entry for a change made now by `principal`.
    pub fn now(
        principal: &Principal,
        via: &str,
        action: &str,
        resource: &str,
        fields: Vec<String>,
    ) -> Self {
        Self {
            at: Utc::now(),
            actor: actor(principal),
            via: via.to_string(),
            action: action.to_string(),
            resource: resource.to_string(),
            fields,
        }
    }
}

/// How `principal` appears in the trail.
pub fn actor(principal: &Principal) -> String {
    match principal {
        Principal::Admin => "admin".to_string(),
        Principal::Tenant { client_id, .. } => format!("client:{client_id}"),
    }
}

/// Reads and writes audit trails.
#[derive(Clone)]
pub struct AuditTrail {
    redis: ConnectionManager,
    keys: RedisKeys,
}

impl AuditTrail {
    /// Trails over `redis`.
    pub fn new(redis: ConnectionManager, keys: RedisKeys) -> Self {
        Self { redis, keys }
    }

    /// Appends `entry` to `tenant`'s trail (the operator's when `None`).
    /// Best effort: a failure is logged, never fails the change itself.
    pub async fn record(&self, tenant: Option<&TenantId>, entry: AuditEntry) {
        let stream = tenant.map_or(OPERATOR_STREAM, TenantId::as_str);
        let json = serde_json::to_string(&entry).unwrap_or_default();
        let written: Result<(), redis::RedisError> = redis::cmd("XADD")
            .arg(self.keys.tenant_audit(stream))
            .arg(StreamMaxlen::Approx(AUDIT_CAP))
            .arg("*")
            .arg(FIELD)
            .arg(json)
            .query_async(&mut self.redis.clone())
            .await;
        if let Err(error) = written {
            tracing::warn!(%error, tenant = stream, action = %entry.action, "writing the audit entry failed");
        }
    }

    /// The `limit` newest entries of `tenant`'s trail, newest first.
    pub async fn recent(
        &self,
        tenant: &str,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, redis::RedisError> {
        let reply: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(self.keys.tenant_audit(tenant))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(reply
            .ids
            .iter()
            .filter_map(|entry| {
                let json: String = entry.get(FIELD)?;
                serde_json::from_str(&json).ok()
            })
            .collect())
    }
}
