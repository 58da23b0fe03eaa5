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
//!    not yet due hands it back (nack with requeue keeps its place) and
//!    consumes again at the due time. Nothing is held unacked while waiting.
//! 5. **The blocked event goes first.** Once the block is due, whatever
//!    message the active consumer receives, it attempts the blocked event
//!    first — from the copy kept in the block — while that message waits in
//!    hand; then it decides about the message again (it is next in order).
//!    The protocol therefore needs no queue priorities: the delayed copy,
//!    dead-lettered back into the subscription queue when its TTL expires,
//!    lands at the head (classic queues, priority 1) or at the tail (quorum
//!    queues, which have no priorities on RabbitMQ 3.x) and is only a wake-up
//!    for an otherwise idle queue. When it arrives, the copy the block names
//!    is attempted like the block's own; any other copy of the blocked event
//!    (superseded by "retry now", the original after a crash between block
//!    and ack) is dropped as stale, and a copy of an event already settled is
//!    skipped. A blocked event that fails again gets a new copy and a new
//!    block; the message in hand is handed back and the session ends, so the
//!    prefetched messages behind it return in order.
//! 6. **Lost copies.** If the named copy is more than
//!    [`arrival::LOST_COPY_GRACE`] overdue when a strict session starts (a
//!    delay queue deleted by hand, with nothing else queued to wake the
//!    consumer), a fresh copy is queued from the event kept in the block.
//! 7. **The end of a block.** A success clears it; a give-up with `skip`
//!    parks the event (settled, so stray copies are skipped) and clears it; a
//!    give-up with `disable` (or a `410 Gone`) keeps the backlog *and the
//!    block*, so after re-enabling (which restarts the block's policy, due
//!    at once) the blocked event is still first; with `discard_on_disable`
//!    the block is cleared, the queue purged, and the subscription starts a
//!    new incarnation.
//!
//! Requeueing keeps a message's place on both queue types (quorum queues
//! return requeued messages ahead of the rest), and closing a channel
//! returns its unacked messages in order; quorum subscription queues have a
//! finite `x-delivery-limit` (1,000,000, far above any number of hold-backs)
//! with at-least-once dead-lettering to the rejected queue past it.
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
    lookahead_holds, on_precheck, reissue_on_session_start, screen, screen_event, Arrival, History,
    OnArrival, Screened, Stale,
};
