//! Bounces and complaints, read back from the receiving side.
//!
//! A report arrives as a whole message, by one of two ways in: the return path's IMAP
//! mailbox (`imap.rs`, polled and IDLEd) or an SMTP listener the site's own MTA hands
//! bounces to (`listen.rs`). Either gives the raw bytes to [`ingest::Ingest`], which
//!
//! 1. parses them into a [`Report`] (`parse/`: RFC 3464 DSNs, RFC 5965 complaints, the
//!    plain-text bounces MTAs and providers still send, auto-replies) without touching
//!    anything;
//! 2. finds what harborlist sent that it is about: a VERP tag that verifies under the token
//!    key, or our Message-ID in the returned headers to the address the report names;
//! 3. records each recipient's report through `store::bounces`, which scores it (or
//!    unsubscribes a complaint, or counts a policy rejection) in one transaction, and says
//!    whether the message was a report, so the mailbox reader knows which folder it goes to.
//!
//! `harborlist bounces check` runs step 1 (and 2, where a key is at hand) on files.

pub mod imap;
pub mod ingest;
pub mod listen;
pub mod parse;
mod report;

pub use report::{RecipientReport, Report};
