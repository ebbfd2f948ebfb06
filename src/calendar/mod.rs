//! The Safe Harbor training calendar: config in, concrete sessions out.
//!
//! Data flows one way through the submodules:
//!
//! 1. `settings` — `[trainings]` as staff write it (serde, with defaults that
//!    are the real schedule: third Wednesday of odd months, 11:00–12:30
//!    America/Chicago).
//! 2. `Calendar::from_settings` (in `schedule`) — validates every value via
//!    `parse`, expands the RRULE once over a long horizon via `recurrence`,
//!    and resolves `[[trainings.change]]` and `[[trainings.extra]]`. All
//!    config mistakes surface here as a `CalendarError` naming the key.
//! 3. Queries (`query`: `sessions_between`, `upcoming`, `session_on`) yield `Session`
//!    values with changes applied; each carries a stable UID and a
//!    `fingerprint` that changes when attendees need an update notice.
//! 4. Output: `ics::render` for RFC 5545 feeds and invites, `human` for the
//!    wording in emails.
//!
//! The module depends on nothing else in the crate so it can be tested and
//! reasoned about on its own.

mod error;
pub mod human;
pub mod ics;
mod parse;
mod query;
mod recurrence;
mod schedule;
mod session;
mod settings;

pub use error::CalendarError;
pub use schedule::Calendar;
pub use session::Session;
pub use settings::{
    ChangeSettings, DEFAULT_CAPACITY, DEFAULT_DESCRIPTION, DEFAULT_DURATION, DEFAULT_LOCATION,
    DEFAULT_RRULE, DEFAULT_START_TIME, DEFAULT_STARTS_ON, DEFAULT_TIMEZONE, DEFAULT_TITLE,
    ExtraSettings, TrainingsSettings,
};
