//! The single error type of the calendar module.
//!
//! Every problem is found while turning `[trainings]` into a `Calendar`, and
//! the person who has to fix it is editing a TOML file, so each error carries
//! the config key it came from (`trainings.change[1].date`) next to a plain
//! sentence about what is wrong. Display is `"{key}: {problem}"`.

/// A configuration problem, tied to the key that caused it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct CalendarError {
    key: String,
    problem: String,
}

impl CalendarError {
    pub(crate) fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
        }
    }

    /// The config key at fault, e.g. `trainings.extra[0].start`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// What is wrong with it, without the key.
    pub fn problem(&self) -> &str {
        &self.problem
    }
}
