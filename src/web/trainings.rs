//! `GET /trainings` (the next sessions as a page, each with its seats) and
//! `GET /trainings.ics` (the same as a subscribable iCalendar feed, with each session's
//! current SEQUENCE).
//!
//! Public pages show counts only, never names: [`Availability`] is all they know of a
//! session's registrations.

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{AppState, pages};
use crate::{
    calendar::{
        Session,
        ics::{self, IcsEvent, Method},
    },
    config::{RegistrationMode, Settings},
    schedule::content::{prodid, training_json},
    store::{StoreError, registrations::SeatCounts},
};

/// How many sessions the page and the feed show.
const SHOWN: usize = 12;

/// Where registration for a session stands, as the public pages say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Availability {
    /// Seats are free.
    Open {
        left: i64,
    },
    /// No seat is free; the form joins the waiting list.
    Full,
    /// Past `registration.closes_before` (or over).
    Closed,
    Cancelled,
    /// `registration.mode = "external"`: people register at `registration_url`.
    External,
}

impl Availability {
    pub(super) fn of(
        settings: &Settings,
        session: &Session,
        counts: SeatCounts,
        now: DateTime<Utc>,
    ) -> Self {
        if settings.registration.mode == RegistrationMode::External {
            Self::External
        } else if session.cancelled {
            Self::Cancelled
        } else if !crate::schedule::content::registration_open(settings, session, now) {
            Self::Closed
        } else {
            match counts.left(session.capacity) {
                0 => Self::Full,
                left => Self::Open { left },
            }
        }
    }

    /// Whether the public form takes registrations (open or full).
    pub(super) fn takes_registrations(self) -> bool {
        matches!(self, Self::Open { .. } | Self::Full)
    }

    /// What templates see: `state`, the words, and flags for `{{#if}}`.
    pub(super) fn json(self) -> Value {
        let (state, label) = match self {
            Self::Open { left: 1 } => ("open", "1 seat left".to_owned()),
            Self::Open { left } => ("open", format!("{left} seats left")),
            Self::Full => ("full", "Full: join the waiting list".to_owned()),
            Self::Closed => ("closed", "Registration closed".to_owned()),
            Self::Cancelled => ("cancelled", "Cancelled".to_owned()),
            Self::External => ("external", String::new()),
        };
        json!({
            "state": state,
            "label": label,
            "form": self.takes_registrations(),
            "full": self == Self::Full,
            "external": self == Self::External,
        })
    }
}

/// Each of `sessions` with its availability now (one query for all the counts).
pub(super) async fn with_availability(
    state: &AppState,
    sessions: Vec<Session>,
) -> Result<Vec<(Session, Availability)>, StoreError> {
    let settings = state.live.settings();
    let now = state.clock.now();
    let needs_counts = settings.registration.mode == RegistrationMode::Harborlist;
    let counts = if needs_counts {
        state.store.seat_counts().await?
    } else {
        Default::default()
    };
    Ok(sessions
        .into_iter()
        .map(|s| {
            let c = counts.get(&s.id).copied().unwrap_or_default();
            let a = Availability::of(&settings, &s, c, now);
            (s, a)
        })
        .collect())
}

pub async fn page(State(state): State<AppState>) -> Response {
    let sessions = state.live.calendar().upcoming(state.clock.now(), SHOWN);
    match with_availability(&state, sessions).await {
        Ok(rows) => pages::render(&state, StatusCode::OK, "trainings", page_data(&rows)),
        Err(e) => pages::unavailable(&state, &e),
    }
}

/// What `trainings.html.hbs` is rendered with.
pub(super) fn page_data(sessions: &[(Session, Availability)]) -> Value {
    let list: Vec<_> = sessions
        .iter()
        .map(|(s, a)| {
            let mut t = training_json(s);
            t["availability"] = a.json();
            t["url"] = json!(format!("/trainings/{}", s.id));
            t
        })
        .collect();
    json!({ "title": "Upcoming trainings", "sessions": list, "calendar_url": "/trainings.ics" })
}

pub async fn feed(State(state): State<AppState>) -> Response {
    let now = state.clock.now();
    let sessions = state.live.calendar().upcoming(now, SHOWN);
    let mut events = Vec::with_capacity(sessions.len());
    for s in &sessions {
        // The feed must agree with the invitations already sent, so it carries the same
        // SEQUENCE the planner recorded.
        match sequence(&state, s).await {
            Ok(sequence) => events.push((s, sequence)),
            Err(e) => return pages::unavailable(&state, &e),
        }
    }
    let events: Vec<IcsEvent<'_>> = events
        .iter()
        .map(|(session, sequence)| IcsEvent {
            session,
            sequence: *sequence,
        })
        .collect();
    let body = ics::render(
        &events,
        Method::Publish,
        now,
        &prodid(&state.live.settings().list.name),
    );
    (
        [
            (header::CONTENT_TYPE, "text/calendar; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "inline; filename=\"trainings.ics\"",
            ),
        ],
        body,
    )
        .into_response()
}

/// The SEQUENCE the planner recorded for the session (0 before its first invitation).
pub(super) async fn sequence(state: &AppState, session: &Session) -> Result<u32, StoreError> {
    let row = state.store.training(&session.uid).await?;
    Ok(row.map_or(0, |r| u32::try_from(r.sequence).unwrap_or(0)))
}
