//! Rendering pages. Most pages are one shape — a heading, a few sentences, maybe one
//! button, maybe a link — so [`Page`] builds that shape for `templates/web/page.html.hbs`.

use axum::{
    http::StatusCode,
    response::{Html, IntoResponse, Response},
};
use serde::Serialize;
use serde_json::json;

use super::{
    AppState, member, register, subscribe,
    trainings::{self, Availability},
};
use crate::{calendar::Session, config::Settings};

#[derive(Debug, Serialize)]
struct Form {
    action: String,
    button: String,
    hidden: Vec<Hidden>,
}

#[derive(Debug, Serialize)]
struct Hidden {
    name: String,
    value: String,
}

#[derive(Debug, Serialize)]
struct Link {
    label: String,
    href: String,
}

#[derive(Debug)]
pub struct Page {
    title: String,
    status: StatusCode,
    paragraphs: Vec<String>,
    form: Option<Form>,
    links: Vec<Link>,
}

impl Page {
    pub fn new(title: impl Into<String>, status: StatusCode) -> Self {
        Self {
            title: title.into(),
            status,
            paragraphs: Vec::new(),
            form: None,
            links: Vec::new(),
        }
    }

    pub fn message(mut self, text: impl Into<String>) -> Self {
        self.paragraphs.push(text.into());
        self
    }

    pub fn button(mut self, action: impl Into<String>, label: impl Into<String>) -> Self {
        self.form = Some(Form {
            action: action.into(),
            button: label.into(),
            hidden: Vec::new(),
        });
        self
    }

    pub fn hidden(mut self, name: &str, value: &str) -> Self {
        if let Some(form) = &mut self.form {
            form.hidden.push(Hidden {
                name: name.into(),
                value: value.into(),
            });
        }
        self
    }

    pub fn link(mut self, label: impl Into<String>, href: impl Into<String>) -> Self {
        self.links.push(Link {
            label: label.into(),
            href: href.into(),
        });
        self
    }

    /// What `page.html.hbs` is rendered with, before [`with_list`].
    fn data(&self) -> serde_json::Value {
        json!({
            "title": self.title,
            "paragraphs": self.paragraphs,
            "form": self.form,
            "links": self.links,
        })
    }

    pub fn render(self, state: &AppState) -> Response {
        let data = self.data();
        render(state, self.status, "page", data)
    }
}

/// The pages every route renders with: each must exist under `templates/web/`.
pub const PAGES: &[&str] = &["page", "subscribe", "trainings", "training", member::PAGE];

/// Adds the list's details as `list`, as every page gets them.
fn with_list(settings: &Settings, mut data: serde_json::Value) -> serde_json::Value {
    data["list"] = json!({
        "name": settings.list.name,
        "organization": settings.list.organization,
        "postal_address": settings.list.postal_address,
    });
    data
}

/// Each page with each shape of context its routes give it, built by the same code, so a
/// template that renders with all of these in strict mode renders for every request.
pub fn samples(
    settings: &Settings,
    sessions: &[Session],
) -> Vec<(&'static str, serde_json::Value)> {
    let full = Page::new("A page", StatusCode::OK)
        .message("A paragraph.")
        .button("/confirm/sample", "Confirm")
        .hidden("name", "value")
        .link("Back", "/");
    let bare = Page::new("A page", StatusCode::OK);
    [
        ("page", full.data()),
        ("page", bare.data()),
        ("subscribe", subscribe::form_data("", "", None)),
        (
            "subscribe",
            subscribe::form_data("a@example.org", "A", Some("A problem".into())),
        ),
    ]
    .into_iter()
    .chain(training_samples(sessions))
    .chain(sessions.first().into_iter().flat_map(|s| {
        let action = "/trainings/sample/register/1.sample";
        [
            (member::PAGE, member::page_data(s, 3, action)),
            (member::PAGE, member::page_data(s, 0, action)),
        ]
    }))
    .map(|(page, data)| (page, with_list(settings, data)))
    .collect()
}

/// The trainings list and a session's page in every availability, the form empty and as
/// typed with an error.
fn training_samples(sessions: &[Session]) -> Vec<(&'static str, serde_json::Value)> {
    let all = [
        Availability::Open { left: 1 },
        Availability::Open { left: 12 },
        Availability::Full,
        Availability::Closed,
        Availability::Cancelled,
        Availability::External,
    ];
    let mut out = vec![("trainings", trainings::page_data(&[]))];
    for a in all {
        let rows: Vec<_> = sessions.iter().map(|s| (s.clone(), a)).collect();
        out.push(("trainings", trainings::page_data(&rows)));
        for s in sessions.iter().take(1) {
            out.push((
                "training",
                register::page_data(s, a, &Default::default(), None),
            ));
            let typed = register::sample_form();
            out.push((
                "training",
                register::page_data(s, a, &typed, Some("A problem".into())),
            ));
        }
    }
    out
}

/// Renders `templates/web/<page>.html.hbs` with the list's details added as `list`.
pub fn render(
    state: &AppState,
    status: StatusCode,
    page: &str,
    data: serde_json::Value,
) -> Response {
    let data = with_list(&state.live.settings(), data);
    match state.live.web().render(page, &data) {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "page template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong on our side. Please try again later.\n",
            )
                .into_response()
        }
    }
}

/// The response for a store failure: log it, tell the person to retry.
pub fn unavailable(state: &AppState, error: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %error, "request failed on the database");
    Page::new("Please try again", StatusCode::SERVICE_UNAVAILABLE)
        .message(
            "We couldn't save that just now. Nothing was changed. Please try again in a minute.",
        )
        .render(state)
}
