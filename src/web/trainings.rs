//! `GET /trainings` (the next sessions as a page) and `GET /trainings.ics` (the same as a
//! subscribable iCalendar feed, with each session's current SEQUENCE).

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{AppState, pages};
use crate::{
    calendar::ics::{self, IcsEvent, Method},
    schedule::content::{prodid, training_json},
};

/// How many sessions the page and the feed show.
const SHOWN: usize = 12;

pub async fn page(State(state): State<AppState>) -> Response {
    let sessions = state.live.calendar().upcoming(state.clock.now(), SHOWN);
    pages::render(&state, StatusCode::OK, "trainings", page_data(&sessions))
}

/// What `trainings.html.hbs` is rendered with.
pub(super) fn page_data(sessions: &[crate::calendar::Session]) -> serde_json::Value {
    let list: Vec<_> = sessions.iter().map(training_json).collect();
    json!({ "title": "Upcoming trainings", "sessions": list, "calendar_url": "/trainings.ics" })
}

pub async fn feed(State(state): State<AppState>) -> Response {
    let now = state.clock.now();
    let sessions = state.live.calendar().upcoming(now, SHOWN);
    let mut events = Vec::with_capacity(sessions.len());
    for s in &sessions {
        // The feed must agree with the invitations already sent, so it carries the same
        // SEQUENCE the planner recorded.
        let sequence = match state.store.training(&s.uid).await {
            Ok(row) => row.map_or(0, |r| u32::try_from(r.sequence).unwrap_or(0)),
            Err(e) => return pages::unavailable(&state, &e),
        };
        events.push((s, sequence));
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
