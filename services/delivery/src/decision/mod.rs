//! Every decision delivery makes about a message, as pure functions from
//! what it knows to what to do; [`crate::consumer`] executes them (acks,
//! Redis writes, publishes, metrics, logs) and decides nothing itself.
//!
//! - [`arrival`]: a message arrives — wait for its tick, drop it as stale,
//!   skip it as settled, drop it as redundant, hold it back, or attempt it;
//! - [`after_attempt`]: an attempt failed — retry in place, reschedule
//!   (honouring `Retry-After`), park, or disable (exhausted, or `410 Gone`);
//! - [`retry_after`]: reading a receiver's `Retry-After`.
//!
//! # The ordering protocol (strict subscriptions)
//!
//! Event N+1 is sent only after event N succeeded or was given up, across
//! crashes, replica failover and broker restarts. The pieces:
//!
//! 1. **One consumer.** A subscription queue has single-active-consumer, so
//!    one delivery replica consumes it at a time, one message at a time, in
//!    queue order. A success is recorded in Redis (the delivered marker,
//!    which also clears a block naming the event) *before* the ack, so a
//!    copy redelivered after a crash is skipped as settled, never re-sent.
//! 2. **Immediate retries** hold the message (short pauses, bounded by the
//!    policy) and keep its place.
//! 3. **The block.** When the policy asks for a delay, a copy with a fresh
//!    *retry id* is published (confirmed) to the delay queue of that step —
//!    or of the `Retry-After` step, whichever is later — then the *block* is
//!    written to Redis: the event, the copy's retry id, attempts, first
//!    failure, due time, and the event itself; only then is the original
//!    acked. The session ends; the channel closes, so every prefetched
//!    message returns to its place.
//! 4. **Holding back.** Any consumer (this replica or another after a
//!    failover) that receives an event while the block names another event
//!    hands it back (nack with requeue keeps its place) and consumes again
//!    at the due time. Nothing is held unacked while waiting.
//! 5. **The way back.** When the delayed copy's TTL expires the broker
//!    dead-letters it to the head of the subscription queue (priority 1 on
//!    classic queues), so the first consumer after the wait gets it. Only
//!    the copy whose retry id the block names is attempted; any other copy
//!    of the blocked event (the original after a crash between block and
//!    ack, a copy superseded by "retry now") is dropped as stale.
//! 6. **Lost copies.** If the named copy is more than
//!    [`arrival::LOST_COPY_GRACE`] overdue (a delay queue deleted by hand),
//!    the consumer re-issues it from the event kept in the block.
//! 7. **The end of a block.** A success clears it; a give-up parks the
//!    event (settled, so stray copies are skipped) and clears it, or
//!    disables the subscription: the event is handed back to stay at the
//!    head of the kept backlog, or, with `discard_on_disable`, the backlog is
//!    purged and the subscription starts a new incarnation.
//!
//! # Incarnations
//!
//! Every subscription has an incarnation id, new on every create and on a
//! disable that discards the backlog. Ingest stamps it on every copy, and
//! every re-published copy (delayed, re-issued, replayed) keeps the one it
//! was made for. A copy of another incarnation is dropped as stale before
//! anything else is looked at, so a subscription deleted and created again
//! with the same id, or re-enabled after a discard, never receives an old
//! copy that was waiting in a delay queue.
//!
//! # Tenants
//!
//! A tenant's subscription gets only its tenant's events (ingest matches them
//! so); delivery checks the event's `tenant` again as soon as it is read and
//! drops a foreign one ([`arrival::screen_event`]).
//!
//! # Order mode `none`
//!
//! Up to `max_in_flight` POSTs run at once; a failing event goes to a delay
//! queue carrying its attempts and first failure in its headers, and nothing
//! else waits for it.

pub mod after_attempt;
pub mod arrival;
pub mod retry_after;

pub use after_attempt::{after_failure, AfterFailure, DisableCause, Failure};
pub use arrival::{
    on_precheck, screen, screen_event, Arrival, History, OnArrival, Screened, Stale,
};
