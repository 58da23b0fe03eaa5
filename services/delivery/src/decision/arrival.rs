//! What to do with a message as it arrives, before anything is sent: wait
//! for its tick, drop it as stale, skip it as settled, drop it as redundant,
//! hold it back behind a blocked event, or attempt it (and from where on its
//! retry policy).
//!
//! Two steps, so the Redis round trip is spent only on messages that need
//! it: [`screen`] looks at the message and the subscription alone,
//! [`on_precheck`] adds what Redis says about the event and the subscription.

use chrono::{DateTime, TimeDelta, Utc};
use postline_shared::amqp::redelivery::RetryHeaders;
use postline_shared::model::ids::EventId;
use postline_shared::model::subscription::{OrderMode, Subscription};
use postline_shared::model::tenant::may_receive;
use postline_shared::redis::delivery_state::semantics_records::Dropped;
use postline_shared::redis::delivery_state::{Block, Precheck};
use postline_shared::Envelope;

/// How late a blocked event's delayed copy may be before it counts as lost
/// and a fresh one is queued (see [`reissue_on_session_start`]).
pub const LOST_COPY_GRACE: TimeDelta = TimeDelta::seconds(60);

/// What a message says about itself.
#[derive(Debug, Clone, Copy)]
pub struct Arrival<'a> {
    /// The retry bookkeeping and incarnation the copy carries.
    pub copy: &'a RetryHeaders,
    /// For an interval subscription: the next tick, when the copy was
    /// queued after the current one.
    pub tick_due: Option<DateTime<Utc>>,
}

/// Why a copy is not for this subscription any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    /// Made for another incarnation (the subscription was deleted and
    /// created again, or its backlog discarded).
    OtherIncarnation,
    /// A copy of the blocked event other than the one its block names (made
    /// stale by a "retry now", a re-issue, or a crash between publish and ack).
    SupersededCopy,
    /// An event of another tenant (ingest never routes one here; this is the
    /// second line of defence, e.g. after a subscription moved tenants).
    OtherTenant,
}

impl Stale {
    /// The outcome label and state counter.
    pub fn label(self) -> &'static str {
        match self {
            Self::OtherIncarnation => "stale",
            Self::SupersededCopy => "superseded",
            Self::OtherTenant => "foreign_tenant",
        }
    }
}

/// The first look, without Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screened {
    /// Queued after the current tick: hand it back and wait until then.
    WaitForTick(DateTime<Utc>),
    /// Not for this subscription's incarnation: ack and forget it.
    DropStale(Stale),
    /// Read the event's delivery state and decide with [`on_precheck`].
    Check,
}

/// Where an event stands on its retry policy when this copy is attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct History {
    /// Attempts made before this copy.
    pub attempts: u32,
    /// When it first failed, if it did.
    pub first_failure: Option<DateTime<Utc>>,
    /// Whether a block names this event (its success or give-up ends it).
    pub blocked: bool,
}

impl History {
    /// An event never attempted.
    pub const FRESH: Self = Self {
        attempts: 0,
        first_failure: None,
        blocked: false,
    };
}

/// The decision once Redis has been read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnArrival {
    /// Already delivered or given up: ack without sending.
    SkipSettled {
        /// A block still names it: clear it.
        clear_block: bool,
    },
    /// Redundant (its dedup identity was delivered, its entity is complete):
    /// record why, ack without sending.
    Drop {
        /// Why.
        why: Dropped,
        /// A block names it: clear it.
        clear_block: bool,
    },
    /// Not the copy the block waits for: ack and forget it.
    DropStale(Stale),
    /// The subscription is blocked on another event, not due yet: hand this
    /// one back and consume again at `until`.
    HoldBack {
        /// When the blocked event is due.
        until: DateTime<Utc>,
    },
    /// The subscription is blocked on another event that is due: attempt
    /// that event first, from the copy kept in its block, while this message
    /// waits in hand; then decide about this message again.
    AttemptBlockedFirst(History),
    /// Send it.
    Attempt(History),
}

/// The first look at a message: its tick and its incarnation.
pub fn screen(subscription: &Subscription, arrival: &Arrival<'_>) -> Screened {
    if let Some(due) = arrival.tick_due {
        return Screened::WaitForTick(due);
    }
    // Copies made before incarnations existed carry none, and subscriptions
    // stored then have none: both are taken as current.
    let current = &subscription.incarnation;
    match arrival.copy.incarnation.as_deref() {
        Some(made_for) if !current.is_empty() && made_for != current => {
            Screened::DropStale(Stale::OtherIncarnation)
        }
        _ => Screened::Check,
    }
}

/// The second look, once the event is read: an event of another tenant is
/// never for this subscription, whatever its types and filters say.
pub fn screen_event(subscription: &Subscription, event: &Envelope) -> Option<Stale> {
    (!may_receive(subscription.spec.tenant.as_ref(), event.tenant.as_ref()))
        .then_some(Stale::OtherTenant)
}

/// At the start of a strict session: whether the blocked event's delayed
/// copy is so overdue that it counts as lost (a delay queue deleted by hand),
/// so a fresh copy must be queued to wake the active consumer. Any message
/// would do, but an otherwise empty queue has none. A copy queued twice (by
/// two replicas) is harmless: the block names only one.
pub fn reissue_on_session_start(block: Option<&Block>, now: DateTime<Utc>) -> bool {
    block.is_some_and(|block| now > block.next_attempt_at + LOST_COPY_GRACE)
}

/// Whether the delivery state of the *next* message, read while the current
/// one (`current_id`) was being handled, still holds once the current one is
/// settled (handled without ending the session), so a strict session can
/// read it during the current POST instead of after it.
///
/// It holds when nothing the current message's handling writes can change
/// it: no dedup or completion rule (a delivery could make the next event a
/// duplicate or complete its entity), no interval, no block (settling the
/// current event can end one), and another event (a repeated copy of the
/// same event must see its success).
pub fn lookahead_holds(
    subscription: &Subscription,
    current_id: Option<&EventId>,
    next_id: Option<&EventId>,
    looked_ahead: &Precheck,
) -> bool {
    let spec = &subscription.spec;
    let plain = spec.dedup.is_none() && spec.completion.is_none() && spec.interval_ms.is_none();
    let other_event = matches!((current_id, next_id), (Some(a), Some(b)) if a != b);
    plain && other_event && looked_ahead.block.is_none()
}

/// The decision for a message of `event_id` once its delivery state is known.
pub fn on_precheck(
    subscription: &Subscription,
    arrival: &Arrival<'_>,
    event_id: &EventId,
    precheck: &Precheck,
    now: DateTime<Utc>,
) -> OnArrival {
    // A block left by another incarnation (a delete whose clean-up failed)
    // holds nothing back in this one.
    let block = precheck.block.as_ref().filter(|block| {
        block.incarnation.is_empty()
            || subscription.incarnation.is_empty()
            || block.incarnation == subscription.incarnation
    });
    let names_this_event = block.is_some_and(|block| &block.event_id == event_id);
    if precheck.settled {
        // A block must never outlive its event's settlement.
        return OnArrival::SkipSettled {
            clear_block: names_this_event,
        };
    }
    // A drop depends only on what was delivered, so it is right even while
    // the subscription is blocked on another event.
    let dropped = if precheck.entity_complete {
        Some(Dropped::CompletedEntity)
    } else if precheck.duplicate {
        Some(Dropped::Duplicate)
    } else {
        None
    };
    if let Some(why) = dropped {
        return OnArrival::Drop {
            why,
            clear_block: names_this_event,
        };
    }
    let copy = arrival.copy;
    if subscription.spec.order == OrderMode::None {
        return OnArrival::Attempt(History {
            attempts: copy.attempts,
            first_failure: copy.first_failure,
            blocked: names_this_event,
        });
    }
    match block {
        Some(block) if names_this_event => {
            if copy.retry_id.as_ref() != Some(&block.retry_id) {
                OnArrival::DropStale(Stale::SupersededCopy)
            } else {
                OnArrival::Attempt(History {
                    attempts: block.attempts,
                    first_failure: Some(block.first_failure_at),
                    blocked: true,
                })
            }
        }
        // Due: whichever message the consumer got, the blocked event goes
        // first. Its delayed copy may be anywhere in the queue (at the tail
        // on a quorum queue), so the block's own copy is attempted.
        Some(block) if now >= block.next_attempt_at => OnArrival::AttemptBlockedFirst(History {
            attempts: block.attempts,
            first_failure: Some(block.first_failure_at),
            blocked: true,
        }),
        Some(block) => OnArrival::HoldBack {
            until: block.next_attempt_at,
        },
        // Without a block a strict event starts its policy afresh (a
        // re-enabled subscription gets a full ladder again).
        None => OnArrival::Attempt(History::FRESH),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postline_shared::model::ids::RetryId;
    use postline_shared::model::subscription::SubscriptionSpec;

    fn id(event_id: &str) -> EventId {
        EventId::parse(event_id).unwrap()
    }

    fn subscription(order: &str) -> Subscription {
        let spec: SubscriptionSpec = serde_json::from_value(serde_json::json!({
            "id": "s", "endpoint": "https://example.com/", "event_types": ["a"], "order": order,
        }))
        .unwrap();
        let mut subscription = Subscription::new(spec, Utc::now());
        subscription.incarnation = "inc-1".into();
        subscription
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-02T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn block(event_id: &str, retry_id: &str, due: DateTime<Utc>) -> Block {
        Block {
            event_id: id(event_id),
            retry_id: RetryId::parse(retry_id).unwrap(),
            attempts: 4,
            next_attempt_at: due,
            first_failure_at: now() - TimeDelta::minutes(10),
            last_error: "receiver answered 500".into(),
            envelope: "{}".into(),
            incarnation: "inc-1".into(),
        }
    }

    fn copy(incarnation: Option<&str>, retry_id: Option<&str>, attempts: u32) -> RetryHeaders {
        RetryHeaders {
            attempts,
            first_failure: (attempts > 0).then(|| now() - TimeDelta::minutes(1)),
            retry_id: retry_id.map(|r| RetryId::parse(r).unwrap()),
            incarnation: incarnation.map(Into::into),
        }
    }

    fn precheck(block: Option<Block>) -> Precheck {
        Precheck {
            settled: false,
            block,
            duplicate: false,
            entity_complete: false,
        }
    }

    #[test]
    fn a_copy_of_another_incarnation_is_stale_and_a_legacy_copy_is_current() {
        let s = subscription("strict");
        let screen_of = |incarnation| {
            let copy = copy(incarnation, None, 0);
            screen(
                &s,
                &Arrival {
                    copy: &copy,
                    tick_due: None,
                },
            )
        };
        assert_eq!(screen_of(Some("inc-1")), Screened::Check);
        assert_eq!(screen_of(None), Screened::Check);
        assert_eq!(
            screen_of(Some("inc-0")),
            Screened::DropStale(Stale::OtherIncarnation)
        );
        let mut legacy = subscription("strict");
        legacy.incarnation.clear();
        let any = copy(Some("whatever"), None, 0);
        assert_eq!(
            screen(
                &legacy,
                &Arrival {
                    copy: &any,
                    tick_due: None
                }
            ),
            Screened::Check
        );
    }

    #[test]
    fn an_event_of_another_tenant_is_never_for_this_subscription() {
        let envelope = |tenant: Option<&str>| {
            let mut input = serde_json::json!({"id": "e", "type": "a", "operation": "a", "timestamp": "2026-12-02T10:00:00Z", "payload": {}});
            if let Some(tenant) = tenant {
                input["tenant"] = tenant.into();
            }
            Envelope::from_wire(input.to_string().as_bytes()).unwrap()
        };
        let operator = subscription("strict");
        let mut acme = subscription("strict");
        acme.spec.tenant = Some(postline_shared::model::tenant::TenantId::parse("acme").unwrap());
        assert_eq!(screen_event(&operator, &envelope(None)), None);
        assert_eq!(
            screen_event(&operator, &envelope(Some("acme"))),
            Some(Stale::OtherTenant)
        );
        assert_eq!(screen_event(&acme, &envelope(Some("acme"))), None);
        assert_eq!(
            screen_event(&acme, &envelope(Some("globex"))),
            Some(Stale::OtherTenant)
        );
        assert_eq!(
            screen_event(&acme, &envelope(None)),
            Some(Stale::OtherTenant)
        );
    }

    #[test]
    fn a_copy_queued_after_the_tick_waits_for_the_next_one() {
        let s = subscription("strict");
        let stale = copy(Some("inc-0"), None, 0);
        let due = now() + TimeDelta::seconds(5);
        assert_eq!(
            screen(
                &s,
                &Arrival {
                    copy: &stale,
                    tick_due: Some(due)
                }
            ),
            Screened::WaitForTick(due)
        );
    }

    /// The ordering protocol of a strict subscription, row by row.
    #[test]
    fn strict_order_protocol_table() {
        let s = subscription("strict");
        let now = now();
        let due_later = now + TimeDelta::minutes(5);
        let overdue = now - LOST_COPY_GRACE - TimeDelta::seconds(1);
        let fresh = copy(Some("inc-1"), None, 0);
        let current = copy(Some("inc-1"), Some("r2"), 4);
        let older = copy(Some("inc-1"), Some("r1"), 3);
        let settled = Precheck {
            settled: true,
            ..precheck(Some(block("e1", "r2", due_later)))
        };
        let duplicate = Precheck {
            duplicate: true,
            ..precheck(None)
        };
        let complete_while_blocked = Precheck {
            entity_complete: true,
            ..precheck(Some(block("e0", "r2", due_later)))
        };
        let rows: Vec<(&str, &str, &RetryHeaders, Precheck, OnArrival)> = vec![
            (
                "no block: attempt from scratch",
                "e1",
                &fresh,
                precheck(None),
                OnArrival::Attempt(History::FRESH),
            ),
            (
                "settled: skip, clearing the block naming it",
                "e1",
                &current,
                settled,
                OnArrival::SkipSettled { clear_block: true },
            ),
            (
                "duplicate identity: drop",
                "e1",
                &fresh,
                duplicate,
                OnArrival::Drop {
                    why: Dropped::Duplicate,
                    clear_block: false,
                },
            ),
            (
                "complete entity drops even while blocked on another",
                "e1",
                &fresh,
                complete_while_blocked,
                OnArrival::Drop {
                    why: Dropped::CompletedEntity,
                    clear_block: false,
                },
            ),
            (
                "the copy the block names: attempt it, continuing its policy",
                "e1",
                &current,
                precheck(Some(block("e1", "r2", now))),
                OnArrival::Attempt(History {
                    attempts: 4,
                    first_failure: Some(now - TimeDelta::minutes(10)),
                    blocked: true,
                }),
            ),
            (
                "another copy of the blocked event: stale",
                "e1",
                &older,
                precheck(Some(block("e1", "r2", now))),
                OnArrival::DropStale(Stale::SupersededCopy),
            ),
            (
                "the original of the blocked event: stale",
                "e1",
                &fresh,
                precheck(Some(block("e1", "r2", now))),
                OnArrival::DropStale(Stale::SupersededCopy),
            ),
            (
                "a later event while blocked: hold back until due",
                "e2",
                &fresh,
                precheck(Some(block("e1", "r2", due_later))),
                OnArrival::HoldBack { until: due_later },
            ),
            (
                "a later event once the blocked one is due: the blocked one first, from its block",
                "e2",
                &fresh,
                precheck(Some(block("e1", "r2", now))),
                OnArrival::AttemptBlockedFirst(History {
                    attempts: 4,
                    first_failure: Some(now - TimeDelta::minutes(10)),
                    blocked: true,
                }),
            ),
            (
                "long overdue (its copy lost): the blocked one first all the same",
                "e2",
                &fresh,
                precheck(Some(block("e1", "r2", overdue))),
                OnArrival::AttemptBlockedFirst(History {
                    attempts: 4,
                    first_failure: Some(now - TimeDelta::minutes(10)),
                    blocked: true,
                }),
            ),
            (
                "another incarnation's block holds nothing back",
                "e2",
                &fresh,
                precheck(Some(Block {
                    incarnation: "inc-0".into(),
                    ..block("e1", "r2", due_later)
                })),
                OnArrival::Attempt(History::FRESH),
            ),
        ];
        for (row, event_id, copy, precheck, expected) in rows {
            let arrival = Arrival {
                copy,
                tick_due: None,
            };
            assert_eq!(
                on_precheck(&s, &arrival, &id(event_id), &precheck, now),
                expected,
                "{row}"
            );
        }
    }

    #[test]
    fn only_a_long_overdue_block_calls_for_a_fresh_copy_at_session_start() {
        let now = now();
        assert!(!reissue_on_session_start(None, now));
        assert!(!reissue_on_session_start(Some(&block("e1", "r", now)), now));
        assert!(!reissue_on_session_start(
            Some(&block("e1", "r", now - LOST_COPY_GRACE)),
            now
        ));
        let lost = block("e1", "r", now - LOST_COPY_GRACE - TimeDelta::seconds(1));
        assert!(reissue_on_session_start(Some(&lost), now));
    }

    #[test]
    fn a_state_read_ahead_holds_only_when_settling_the_current_event_cannot_change_it() {
        let plain = subscription("strict");
        let clean = precheck(None);
        assert!(lookahead_holds(
            &plain,
            Some(&id("e1")),
            Some(&id("e2")),
            &clean
        ));
        // The same event again must see the success of its first copy.
        assert!(!lookahead_holds(
            &plain,
            Some(&id("e1")),
            Some(&id("e1")),
            &clean
        ));
        // Copies without an id (delayed, replayed) are read afresh.
        assert!(!lookahead_holds(&plain, None, Some(&id("e2")), &clean));
        assert!(!lookahead_holds(&plain, Some(&id("e1")), None, &clean));
        // A block may end with the current event.
        let blocked = precheck(Some(block("e1", "r", now())));
        assert!(!lookahead_holds(
            &plain,
            Some(&id("e1")),
            Some(&id("e2")),
            &blocked
        ));
        // A delivery can make the next event a duplicate or complete its entity.
        let mut dedup = subscription("strict");
        dedup.spec.dedup =
            serde_json::from_value(serde_json::json!({"fields": ["/payload/id"]})).unwrap();
        assert!(!lookahead_holds(
            &dedup,
            Some(&id("e1")),
            Some(&id("e2")),
            &clean
        ));
        let mut interval = subscription("strict");
        interval.spec.interval_ms = Some(60_000);
        assert!(!lookahead_holds(
            &interval,
            Some(&id("e1")),
            Some(&id("e2")),
            &clean
        ));
    }

    #[test]
    fn unordered_copies_carry_their_own_history_and_never_hold_back() {
        let s = subscription("none");
        let now = now();
        let retried = copy(Some("inc-1"), None, 5);
        let arrival = Arrival {
            copy: &retried,
            tick_due: None,
        };
        let blocked_elsewhere = precheck(Some(block("e9", "r", now + TimeDelta::hours(1))));
        assert_eq!(
            on_precheck(&s, &arrival, &id("e1"), &blocked_elsewhere, now),
            OnArrival::Attempt(History {
                attempts: 5,
                first_failure: retried.first_failure,
                blocked: false
            })
        );
    }
}
