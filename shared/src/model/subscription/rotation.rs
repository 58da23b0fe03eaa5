//! Rotating a subscription's signing secret with a grace period: the new
//! secret signs first at once, the ones it replaced keep signing until their
//! grace ends, so a receiver can switch over without dropping a request.
//!
//! A retiring secret past its end signs nothing and is left out of the view;
//! ingest drops it from the stored document soon after (and any write of the
//! subscription does too).

use super::Subscription;
use crate::model::secret::Secret;
use base64::Engine;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// Default grace of a replaced secret: 24 hours.
pub const DEFAULT_GRACE_SECS: u64 = 24 * 60 * 60;
/// Longest grace: 30 days.
pub const MAX_GRACE_SECS: u64 = 30 * 24 * 60 * 60;
/// Most retiring secrets kept (older ones end early when exceeded).
pub const MAX_RETIRING: usize = 5;

/// A replaced secret that still signs until `until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiringSecret {
    /// The secret (sealed at rest like every other).
    pub secret: Secret,
    /// When it stops signing.
    pub until: DateTime<Utc>,
}

/// A fresh Standard Webhooks secret: `whsec_` and 32 random bytes in base64.
pub fn generate_secret() -> Secret {
    let mut bytes = [0u8; 32];
    // Two v4 UUIDs carry 244 random bits from the OS generator.
    bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    Secret::new(format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

impl Subscription {
    /// Makes `new` the first signing secret; every secret it replaces keeps
    /// signing for `grace` after `now`.
    pub fn rotate_secret(&mut self, new: Secret, grace: TimeDelta, now: DateTime<Utc>) {
        self.drop_retired(now);
        let until = now + grace;
        let replaced = std::mem::replace(&mut self.spec.secrets, vec![new]);
        self.retiring_secrets.extend(
            replaced
                .into_iter()
                .map(|secret| RetiringSecret { secret, until }),
        );
        // Newest last: the oldest go first when there are too many.
        let excess = self.retiring_secrets.len().saturating_sub(MAX_RETIRING);
        self.retiring_secrets.drain(..excess);
    }

    /// Forgets the retiring secrets whose grace has ended.
    pub fn drop_retired(&mut self, now: DateTime<Utc>) {
        self.retiring_secrets
            .retain(|retiring| retiring.until > now);
    }

    /// Every secret that signs at `now`: the configured ones first, then the
    /// retiring ones still in their grace.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<&Secret> {
        self.spec
            .secrets
            .iter()
            .chain(
                self.retiring_secrets
                    .iter()
                    .filter(|retiring| retiring.until > now)
                    .map(|retiring| &retiring.secret),
            )
            .collect()
    }

    /// Whether a retiring secret's grace has ended, so the stored document
    /// should drop it (see ingest's `secret_expiry`).
    pub fn has_retired_secrets(&self, now: DateTime<Utc>) -> bool {
        self.retiring_secrets
            .iter()
            .any(|retiring| retiring.until <= now)
    }

    /// When each retiring secret still in its grace stops signing.
    pub fn retiring_until(&self, now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        self.retiring_secrets
            .iter()
            .filter(|retiring| retiring.until > now)
            .map(|retiring| retiring.until)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::subscription::SubscriptionSpec;

    fn subscription(secrets: &[&str]) -> Subscription {
        let spec: SubscriptionSpec = serde_json::from_value(serde_json::json!({
            "id": "s", "endpoint": "https://example.com/", "event_types": ["a"],
            "secrets": secrets,
        }))
        .unwrap();
        Subscription::new(spec, Utc::now())
    }

    #[test]
    fn the_new_secret_signs_first_and_the_old_one_until_its_grace_ends() {
        let now = Utc::now();
        let mut s = subscription(&["old"]);
        s.rotate_secret(Secret::new("new"), TimeDelta::seconds(60), now);
        let values = |s: &Subscription, at| {
            s.signing_secrets(at)
                .iter()
                .map(|secret| secret.expose().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(values(&s, now), ["new", "old"]);
        assert_eq!(s.retiring_until(now), [now + TimeDelta::seconds(60)]);
        let later = now + TimeDelta::seconds(61);
        assert_eq!(values(&s, later), ["new"]);
        assert!(s.retiring_until(later).is_empty());
        assert!(!s.has_retired_secrets(now));
        assert!(s.has_retired_secrets(later));
        s.drop_retired(later);
        assert!(s.retiring_secrets.is_empty());
    }

    #[test]
    fn rotating_often_keeps_a_bounded_number_of_old_secrets() {
        let now = Utc::now();
        let mut s = subscription(&["s0"]);
        for i in 1..=10 {
            s.rotate_secret(Secret::new(format!("s{i}")), TimeDelta::hours(1), now);
        }
        assert_eq!(s.retiring_secrets.len(), MAX_RETIRING);
        assert_eq!(s.spec.secrets[0].expose(), "s10");
        assert_eq!(s.retiring_secrets.last().unwrap().secret.expose(), "s9");
    }

    #[test]
    fn generated_secrets_are_standard_webhooks_secrets() {
        let a = generate_secret();
        assert!(a.expose().starts_with("whsec_"));
        assert!(crate::outbound::signing::SigningKey::from_secret(&a).is_ok());
        assert_ne!(a, generate_secret());
    }
}
