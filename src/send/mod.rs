//! The sender: claim due deliveries, send them, record what happened.
//!
//! One loop per instance. Each turn it claims a batch under a lease owned by this turn
//! (see [`crate::store::queue`]) and runs one task per message: compose, then send with at
//! most `mail.pool_size` messages on the wire and at most `mail.max_per_second`. Outcomes go
//! to the turn's recorder (`record.rs`), which stores whatever has arrived while its last
//! write ran in one write (group commit). On shutdown it stops starting new sends, lets the ones in flight
//! finish, records them, and releases the rest of the batch back to the queue.
//!
//! A relay fault (any failure before `RCPT`, see [`crate::mail::transport::Class`]) is not
//! a message's failure: the message goes back to the queue as it was, and the whole sender
//! pauses, doubling, until the relay takes mail again (`relay.rs`, which also tells the
//! operator).
//!
//! Exactly-once is enforced by the unique (mailing, subscriber) rows; what remains is the
//! at-least-once window of a crash between SMTP's 250 and the record. A message can be
//! accepted only under one of `mail.pool_size` permits, held until its outcome is stored, so
//! a crash repeats at most that many, and those repeats carry the same Message-ID.

mod backoff;
mod record;
mod relay;
mod worker;

pub use backoff::retry_delay;
pub use relay::RELAY_STATE;
pub use worker::{Sender, SenderConfig};
