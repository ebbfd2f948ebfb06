//! The sender: claim due deliveries, send them, record what happened.
//!
//! One loop per instance. Each turn it claims a batch under a lease owned by this turn
//! (see [`crate::store::queue`]), renders and sends the batch with at most
//! `mail.pool_size` messages in flight and at most `mail.max_per_second`, then records all
//! outcomes in one transaction. On shutdown it stops starting new sends, lets the ones in
//! flight finish, records them, and releases the rest of the batch back to the queue.
//!
//! Exactly-once is enforced by the unique (mailing, subscriber) rows; what remains is the
//! at-least-once window of a crash between SMTP's 250 and the record, bounded by the
//! number of messages in flight, and those repeats carry the same Message-ID.

mod backoff;
mod worker;

pub use backoff::retry_delay;
pub use worker::{Sender, SenderConfig};
