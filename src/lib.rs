//! harborlist: the Safe Harbor trainings listserv and its reminder service.
//!
//! The crate is arranged so that every piece of work becomes a database row before it
//! happens (see `ARCHITECTURE.md`):
//!
//! * [`web`] takes subscription requests and link clicks and writes subscribers, tokens and
//!   one-recipient mailings, then returns without touching SMTP.
//! * [`schedule`] turns the training calendar, the reminders and the announcements in the
//!   configuration into mailings, and fans due mailings out into one delivery per subscriber.
//! * [`send`] claims due deliveries, renders them through [`mail`], hands them to SMTP (or
//!   the file outbox) and records the outcome.
//! * [`store`] is the only module that speaks SQL; [`config`] and [`domain`] hold the parsed,
//!   validated inputs everything else relies on.
//! * [`fsutil`] creates every file and folder harborlist writes, for its own user only.
//! * [`bounce`] reads reports back from the receiving side (the return path's IMAP mailbox
//!   or an SMTP listener) and records what they do; [`net`] is the client socket SMTP and
//!   IMAP share.

pub mod bounce;
pub mod calendar;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod fsutil;
pub mod health;
pub mod mail;
pub mod net;
pub mod preflight;
pub mod reload;
pub mod runtime;
pub mod schedule;
pub mod send;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod templates;
pub mod web;
