//! Tenants, their OAuth clients, access tokens, failure counters, status-page
//! sessions and portal links in Redis. Every replica of ingest reads the same
//! records, so a token issued by one is accepted by all, and deleting a client
//! deletes its tokens at once. Tokens, session values and link tokens are
//! stored only as SHA-256 digests, client secrets only as argon2 hashes.

use super::credentials::{self, Scope};
use super::{Tenant, TenantSpec};
use chrono::{DateTime, Utc};
use postline_shared::model::tenant::TenantId;
use postline_shared::redis::keys::RedisKeys;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Why a tenant record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TenantStoreError {
    /// Redis did not answer or refused.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A stored record could not be read back.
    #[error("record {key} is corrupt: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// Hashing a new secret failed.
    #[error(transparent)]
    Hash(#[from] credentials::HashError),
    /// The tenant exists already.
    #[error("tenant {0} already exists")]
    AlreadyExists(String),
}

/// An OAuth client of a tenant (its secret only as a hash).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OAuthClient {
    /// Client id.
    pub client_id: String,
    /// The tenant it acts for.
    pub tenant: TenantId,
    /// What its tokens may do.
    pub scopes: Vec<Scope>,
    /// Argon2 hash of the secret.
    pub secret_hash: String,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
}

impl OAuthClient {
    /// What the API shows: everything but the hash.
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "client_id": self.client_id,
            "tenant": self.tenant,
            "scopes": self.scopes,
            "created_at": self.created_at,
        })
    }
}

/// Who holds a token, session or link: the operator or a tenant's client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Principal {
    /// The operator (admin token).
    Admin,
    /// A tenant, through one client (or a portal link: client id `portal`).
    Tenant {
        /// The tenant.
        tenant: TenantId,
        /// The client (or `portal`).
        client_id: String,
        /// What it may do.
        scopes: Vec<Scope>,
    },
}

/// A stored access token, session or portal link.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Grant {
    /// Who it is for.
    pub principal: Principal,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// A session's CSRF token (sessions only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csrf: Option<String>,
}

/// Tenant records of one namespace.
#[derive(Clone)]
pub struct TenantStore {
    redis: ConnectionManager,
    keys: RedisKeys,
}

impl TenantStore {
    /// Records over `redis`.
    pub fn new(redis: ConnectionManager, keys: RedisKeys) -> Self {
        Self { redis, keys }
    }

    fn conn(&self) -> ConnectionManager {
        self.redis.clone()
    }

    fn parse<T: serde::de::DeserializeOwned>(key: &str, json: &str) -> Result<T, TenantStoreError> {
        serde_json::from_str(json).map_err(|e| TenantStoreError::Corrupt {
            key: key.to_string(),
            reason: e.to_string(),
        })
    }

    /// Stores a new tenant; refuses an existing id.
    pub async fn create(&self, spec: TenantSpec) -> Result<Tenant, TenantStoreError> {
        let now = Utc::now();
        let tenant = Tenant {
            spec,
            created_at: now,
            updated_at: now,
        };
        let key = self.keys.tenant(tenant.spec.id.as_str());
        let json = serde_json::to_string(&tenant).unwrap_or_default();
        let created: bool = redis::cmd("SET")
            .arg(&key)
            .arg(json)
            .arg("NX")
            .query_async::<Option<String>>(&mut self.conn())
            .await?
            .is_some();
        if !created {
            return Err(TenantStoreError::AlreadyExists(tenant.spec.id.to_string()));
        }
        let _: () = self
            .conn()
            .sadd(self.keys.tenant_ids(), tenant.spec.id.as_str())
            .await?;
        Ok(tenant)
    }

    /// Replaces a stored tenant.
    pub async fn put(&self, tenant: &Tenant) -> Result<(), TenantStoreError> {
        let json = serde_json::to_string(tenant).unwrap_or_default();
        let _: () = self
            .conn()
            .set(self.keys.tenant(tenant.spec.id.as_str()), json)
            .await?;
        Ok(())
    }

    /// Puts back a tenant and its clients from a backup (as they were: the
    /// clients' secrets keep working, their tokens are gone).
    pub async fn restore(
        &self,
        tenant: &Tenant,
        clients: &[OAuthClient],
    ) -> Result<(), TenantStoreError> {
        let id = tenant.spec.id.as_str();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .set(
                self.keys.tenant(id),
                serde_json::to_string(tenant).unwrap_or_default(),
            )
            .ignore()
            .sadd(self.keys.tenant_ids(), id)
            .ignore();
        for client in clients {
            pipe.set(
                self.keys.oauth_client(&client.client_id),
                serde_json::to_string(client).unwrap_or_default(),
            )
            .ignore()
            .sadd(self.keys.tenant_clients(id), &client.client_id)
            .ignore();
        }
        pipe.query_async::<()>(&mut self.conn()).await?;
        Ok(())
    }

    /// The tenant `id`, if it exists.
    pub async fn get(&self, id: &str) -> Result<Option<Tenant>, TenantStoreError> {
        let key = self.keys.tenant(id);
        let json: Option<String> = self.conn().get(&key).await?;
        json.map(|j| Self::parse(&key, &j)).transpose()
    }

    /// Every tenant, by id.
    pub async fn list(&self) -> Result<Vec<Tenant>, TenantStoreError> {
        let mut ids: Vec<String> = self.conn().smembers(self.keys.tenant_ids()).await?;
        ids.sort();
        let mut tenants = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(tenant) = self.get(&id).await? {
                tenants.push(tenant);
            }
        }
        Ok(tenants)
    }

    /// Removes a tenant with its clients, their tokens, and its audit trail.
    pub async fn delete(&self, id: &str) -> Result<(), TenantStoreError> {
        for client in self.clients(id).await? {
            self.delete_client(&client.client_id).await?;
        }
        let _: () = redis::pipe()
            .del(self.keys.tenant(id))
            .del(self.keys.tenant_clients(id))
            .del(self.keys.tenant_audit(id))
            .srem(self.keys.tenant_ids(), id)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Issues a client to `tenant`; returns it and its secret (shown once).
    pub async fn create_client(
        &self,
        tenant: &TenantId,
        scopes: Vec<Scope>,
    ) -> Result<(OAuthClient, String), TenantStoreError> {
        let secret = credentials::random_value("pls_");
        let hashed = secret.clone();
        let secret_hash = tokio::task::spawn_blocking(move || credentials::hash_secret(&hashed))
            .await
            .map_err(|e| credentials::HashError::from_join(e.to_string()))??;
        let client = OAuthClient {
            client_id: credentials::new_client_id(),
            tenant: tenant.clone(),
            scopes,
            secret_hash,
            created_at: Utc::now(),
        };
        let json = serde_json::to_string(&client).unwrap_or_default();
        let _: () = redis::pipe()
            .set(self.keys.oauth_client(&client.client_id), json)
            .sadd(self.keys.tenant_clients(tenant.as_str()), &client.client_id)
            .query_async(&mut self.conn())
            .await?;
        Ok((client, secret))
    }

    /// The client `client_id`, if it exists.
    pub async fn client(&self, client_id: &str) -> Result<Option<OAuthClient>, TenantStoreError> {
        let key = self.keys.oauth_client(client_id);
        let json: Option<String> = self.conn().get(&key).await?;
        json.map(|j| Self::parse(&key, &j)).transpose()
    }

    /// The clients of `tenant`.
    pub async fn clients(&self, tenant: &str) -> Result<Vec<OAuthClient>, TenantStoreError> {
        let mut ids: Vec<String> = self
            .conn()
            .smembers(self.keys.tenant_clients(tenant))
            .await?;
        ids.sort();
        let mut clients = Vec::new();
        for id in ids {
            if let Some(client) = self.client(&id).await? {
                clients.push(client);
            }
        }
        Ok(clients)
    }

    /// Revokes a client and every token issued to it. Returns whether it existed.
    pub async fn delete_client(&self, client_id: &str) -> Result<bool, TenantStoreError> {
        let Some(client) = self.client(client_id).await? else {
            return Ok(false);
        };
        let tokens: Vec<String> = self
            .conn()
            .smembers(self.keys.oauth_client_tokens(client_id))
            .await?;
        let mut pipe = redis::pipe();
        for hash in &tokens {
            pipe.del(self.keys.oauth_token(hash)).ignore();
        }
        pipe.del(self.keys.oauth_client(client_id))
            .ignore()
            .del(self.keys.oauth_client_tokens(client_id))
            .ignore()
            .srem(self.keys.tenant_clients(client.tenant.as_str()), client_id)
            .ignore();
        let _: () = pipe.query_async(&mut self.conn()).await?;
        Ok(true)
    }

    /// Issues an access token to `client` with `scopes`, valid for `ttl`.
    pub async fn issue_token(
        &self,
        client: &OAuthClient,
        scopes: Vec<Scope>,
        ttl: Duration,
    ) -> Result<String, TenantStoreError> {
        let token = credentials::random_value("plt_");
        let hash = credentials::digest(&token);
        let grant = Grant {
            principal: Principal::Tenant {
                tenant: client.tenant.clone(),
                client_id: client.client_id.clone(),
                scopes,
            },
            expires_at: Utc::now() + ttl,
            csrf: None,
        };
        let secs = ttl.as_secs().max(1);
        let set = self.keys.oauth_client_tokens(&client.client_id);
        let _: () = redis::pipe()
            .set_ex(
                self.keys.oauth_token(&hash),
                serde_json::to_string(&grant).unwrap_or_default(),
                secs,
            )
            .ignore()
            .sadd(&set, &hash)
            .ignore()
            .expire(&set, secs as i64)
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        Ok(token)
    }

    /// The live grant of access token `token`, if any.
    pub async fn token(&self, token: &str) -> Result<Option<Grant>, TenantStoreError> {
        self.live(self.keys.oauth_token(&credentials::digest(token)))
            .await
    }

    async fn live(&self, key: String) -> Result<Option<Grant>, TenantStoreError> {
        let json: Option<String> = self.conn().get(&key).await?;
        let grant: Option<Grant> = json.map(|j| Self::parse(&key, &j)).transpose()?;
        Ok(grant.filter(|g| g.expires_at > Utc::now()))
    }

    fn lock_key(&self, client_id: &str) -> String {
        format!("{}:lock", self.keys.oauth_failures(client_id))
    }

    /// How long `client_id` must still wait after its failures, if at all.
    pub async fn penalty_left(
        &self,
        client_id: &str,
    ) -> Result<Option<Duration>, TenantStoreError> {
        let ms: i64 = self.conn().pttl(self.lock_key(client_id)).await?;
        Ok((ms > 0).then(|| Duration::from_millis(ms as u64)))
    }

    /// Counts a failed authentication of `client_id` and imposes the wait it earns.
    pub async fn record_failure(&self, client_id: &str) -> Result<u64, TenantStoreError> {
        let key = self.keys.oauth_failures(client_id);
        let (count,): (u64,) = redis::pipe()
            .incr(&key, 1u64)
            .expire(&key, 900)
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        if let Some(wait) = credentials::penalty(count) {
            let _: () = self
                .conn()
                .pset_ex(self.lock_key(client_id), 1u8, wait.as_millis() as u64)
                .await?;
        }
        Ok(count)
    }

    /// Forgets the failures of `client_id` after a success.
    pub async fn clear_failures(&self, client_id: &str) -> Result<(), TenantStoreError> {
        let _: () = self
            .conn()
            .del(&[
                self.keys.oauth_failures(client_id),
                self.lock_key(client_id),
            ])
            .await?;
        Ok(())
    }

    /// Opens a status-page session for `principal`; returns the cookie value.
    pub async fn open_session(
        &self,
        principal: Principal,
        ttl: Duration,
    ) -> Result<String, TenantStoreError> {
        let value = credentials::random_value("pss_");
        let grant = Grant {
            principal,
            expires_at: Utc::now() + ttl,
            csrf: Some(credentials::random_value("")),
        };
        let _: () = self
            .conn()
            .set_ex(
                self.keys.ui_session(&credentials::digest(&value)),
                serde_json::to_string(&grant).unwrap_or_default(),
                ttl.as_secs().max(1),
            )
            .await?;
        Ok(value)
    }

    /// The live session of cookie value `value`, if any.
    pub async fn session(&self, value: &str) -> Result<Option<Grant>, TenantStoreError> {
        self.live(self.keys.ui_session(&credentials::digest(value)))
            .await
    }

    /// Ends a session.
    pub async fn close_session(&self, value: &str) -> Result<(), TenantStoreError> {
        let _: () = self
            .conn()
            .del(self.keys.ui_session(&credentials::digest(value)))
            .await?;
        Ok(())
    }

    /// Creates a one-time portal link token for `principal`, valid for `ttl`.
    pub async fn create_link(
        &self,
        principal: Principal,
        ttl: Duration,
    ) -> Result<String, TenantStoreError> {
        let token = credentials::random_value("plp_");
        let grant = Grant {
            principal,
            expires_at: Utc::now() + ttl,
            csrf: None,
        };
        let _: () = self
            .conn()
            .set_ex(
                self.keys.portal_link(&credentials::digest(&token)),
                serde_json::to_string(&grant).unwrap_or_default(),
                ttl.as_secs().max(1),
            )
            .await?;
        Ok(token)
    }

    /// Uses up portal link `token`: its grant, once.
    pub async fn take_link(&self, token: &str) -> Result<Option<Grant>, TenantStoreError> {
        let key = self.keys.portal_link(&credentials::digest(token));
        let json: Option<String> = redis::cmd("GETDEL")
            .arg(&key)
            .query_async(&mut self.conn())
            .await?;
        let grant: Option<Grant> = json.map(|j| Self::parse(&key, &j)).transpose()?;
        Ok(grant.filter(|g| g.expires_at > Utc::now()))
    }
}
