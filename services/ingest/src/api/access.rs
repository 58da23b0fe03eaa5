//! What a caller may see and change of subscriptions: the API view of one,
//! which ones a caller may see (another tenant's look missing), the refusal
//! of writes while the state is lost, and the audit record of a change.
//! Every handler touching subscriptions (management, delivery controls,
//! secrets, tenants, the status page) goes through here.

use super::caller::Caller;
use super::{ApiError, ApiState};
use crate::tenants::audit::AuditEntry;
use crate::tenants::credentials::Scope;
use postline_shared::model::ids::SubscriptionId;
use postline_shared::model::subscription::Subscription;

/// The API view of a subscription as JSON.
pub(crate) fn view(subscription: &Subscription) -> serde_json::Value {
    serde_json::to_value(subscription.view()).unwrap_or_default()
}

/// Records a change of `subscription` in its tenant's audit trail.
pub(crate) async fn audit(
    state: &ApiState,
    caller: &Caller,
    subscription: &Subscription,
    action: &str,
    fields: Vec<String>,
) {
    state
        .audit
        .record(
            subscription.spec.tenant.as_ref(),
            AuditEntry::now(
                &caller.principal,
                caller.via,
                action,
                subscription.id().as_str(),
                fields,
            ),
        )
        .await;
}

/// The subscription `id` if `caller` holds `scope` and may see it: 404
/// alike for a missing subscription and another tenant's.
pub(crate) async fn visible(
    state: &ApiState,
    caller: &Caller,
    id: &SubscriptionId,
    scope: Scope,
) -> Result<Subscription, ApiError> {
    caller.require(scope)?;
    hidden(id)?;
    let subscription = state.store.get(id).await?;
    if !caller.can_see(&subscription) {
        return Err(
            postline_shared::redis::subscription_store::StoreError::NotFound(id.to_string()).into(),
        );
    }
    Ok(subscription)
}

/// While the state is lost a management write would land in an emptied
/// Redis (and make it look like an installation from before the marker):
/// 503 `state_lost` until it is restored or a fresh start is declared.
pub(crate) fn refuse_while_lost(state: &ApiState) -> Result<(), ApiError> {
    if state.readiness.is_state_lost() {
        return Err(ApiError::state_lost());
    }
    Ok(())
}

/// The subscription id of a request path, or a 404 naming `id` (no
/// subscription has a malformed id).
pub(crate) fn path_id(id: &str) -> Result<SubscriptionId, ApiError> {
    SubscriptionId::parse(id).map_err(|invalid| ApiError::malformed_id("id", invalid))
}

/// Postline's own subscriptions (reserved ids, such as the operator's) are
/// not the API's to show or change.
fn hidden(id: &SubscriptionId) -> Result<(), ApiError> {
    if id.is_reserved() {
        return Err(ApiError::not_found(format!(
            "subscription {id} does not exist"
        )));
    }
    Ok(())
}

/// The subscriptions `caller` may see, by id; the operator may narrow
/// them to one tenant's with `tenant` (an empty value: the operator's own).
pub(crate) async fn visible_list(
    state: &ApiState,
    caller: &Caller,
    tenant_filter: Option<&str>,
) -> Result<Vec<Subscription>, ApiError> {
    caller.require(Scope::SubscriptionsRead)?;
    let all = state.store.list().await?;
    Ok(all
        .into_iter()
        .filter(|s| !s.id().is_reserved())
        .filter(|s| caller.can_see(s))
        .filter(|s| match tenant_filter {
            None => true,
            Some("") => s.spec.tenant.is_none(),
            Some(t) => s.spec.tenant.as_ref().is_some_and(|own| own.as_str() == t),
        })
        .collect())
}
