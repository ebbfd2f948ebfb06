//! Registration as people do it: the public form, the links in its mails, and the rows
//! behind them, for `registration.rs` and `registration_seats.rs`.

use harborlist::{
    domain::{TokenKey, TokenPurpose},
    store::registrations::{RegStatus, SessionSeats},
};

use super::{AppBuilder, Backend, Received, TestApp, app, eventually, parse, text_of};

/// The first session of the default calendar (Wednesday, January 20, 2027, 11:00 CST).
pub const SESSION: &str = "2027-01-20";

/// An app whose sessions have `capacity` seats and whose per-IP limit lets a test post
/// as often as it needs from 127.0.0.1.
pub fn reg_app(backend: Backend, capacity: u32) -> AppBuilder {
    app(backend).with(move |s| {
        s.trainings.capacity = capacity;
        s.subscriptions.max_requests_per_ip_per_hour = 1_000_000;
    })
}

pub fn subject(bytes: &[u8]) -> String {
    parse(bytes).subject().unwrap_or_default().to_owned()
}

/// The registration link for `action` (`confirm`, `cancel`, `claim`) in a mail's text.
pub fn reg_link(bytes: &[u8], action: &str) -> String {
    let text = text_of(bytes);
    text.split_whitespace()
        .find(|w| {
            w.starts_with("http")
                && w.contains("/registrations/")
                && w.ends_with(&format!("/{action}"))
        })
        .unwrap_or_else(|| panic!("no /registrations/…/{action} link in:\n{text}"))
        .to_owned()
}

/// A page's HTML with the escapes handlebars writes undone, to compare with the words.
pub fn unescape(html: String) -> String {
    html.replace("&#x27;", "'")
        .replace("&quot;", "\"")
        .replace("&#x3D;", "=")
        .replace("&amp;", "&")
}

impl TestApp {
    /// `POST /trainings/{id}` with the public form.
    pub async fn register(
        &self,
        session: &str,
        email: &str,
        name: &str,
        organisation: &str,
        news: bool,
    ) -> reqwest::Response {
        let mut form = vec![
            ("email", email),
            ("name", name),
            ("organisation", organisation),
        ];
        if news {
            form.push(("news", "on"));
        }
        self.http
            .post(self.url(&format!("/trainings/{session}")))
            .form(&form)
            .send()
            .await
            .expect("POST /trainings/{id}")
    }

    /// The page at `url`, its escapes undone.
    pub async fn page_text(&self, url: &str) -> String {
        self.get(url)
            .await
            .text()
            .await
            .map(unescape)
            .expect("body")
    }

    /// What posting the button at `url` answers, its escapes undone.
    pub async fn post_text(&self, url: &str) -> String {
        self.post_empty(url)
            .await
            .text()
            .await
            .map(unescape)
            .expect("body")
    }

    /// The mails to `email` whose subject starts with `prefix`, in arrival order.
    pub fn mails_like(&self, email: &str, prefix: &str) -> Vec<Received> {
        self.sink
            .to(email)
            .into_iter()
            .filter(|m| subject(&m.bytes).starts_with(prefix))
            .collect()
    }

    /// Waits for the `n`th (1-based) mail to `email` whose subject starts with `prefix`.
    pub async fn wait_mail(&self, email: &str, prefix: &str, n: usize) -> Received {
        eventually(
            30,
            &format!("mail {n} \"{prefix}…\" to {email}"),
            || async { self.mails_like(email, prefix).get(n - 1).cloned() },
        )
        .await
    }

    /// The public form, then the confirmation mail's link posted: the page that answers.
    pub async fn register_and_confirm(&self, email: &str) -> String {
        let before = self
            .mails_like(email, "Please confirm your registration")
            .len();
        assert_eq!(
            self.register(SESSION, email, "", "", false).await.status(),
            200
        );
        let mail = self
            .wait_mail(email, "Please confirm your registration", before + 1)
            .await;
        let response = self.post_empty(&reg_link(&mail.bytes, "confirm")).await;
        assert_eq!(response.status(), 200);
        response.text().await.map(unescape).expect("body")
    }

    /// Where `email`'s registration for `SESSION` stands.
    pub async fn reg_status(&self, email: &str) -> Option<RegStatus> {
        self.store
            .registrations_for(SESSION)
            .await
            .expect("registrations")
            .into_iter()
            .find(|r| r.email.as_deref() == Some(email))
            .map(|r| r.status)
    }

    /// `SESSION`'s seats as the running settings give them, at the app's clock.
    pub fn seats(&self) -> SessionSeats {
        let calendar = self.settings.calendar().expect("calendar");
        let session = calendar.session_by_id(SESSION).expect("session");
        harborlist::schedule::content::seats(&self.settings, &session, 0, self.clock.now())
    }

    /// The link tokens of every registration for `SESSION` (by address), derived from the
    /// nonces in the database as the sender would.
    pub async fn reg_tokens(&self) -> Vec<(String, String)> {
        use sqlx::Row;
        let key = TokenKey::parse(self.token_key()).expect("key");
        let rows = sqlx::query(
            "SELECT s.email, r.nonce FROM registrations r JOIN subscribers s ON s.id = r.subscriber_id
             WHERE r.session_id = $1 ORDER BY r.id",
        )
        .bind(SESSION)
        .fetch_all(self.store.pool())
        .await
        .expect("registrations");
        rows.iter()
            .map(|r| {
                let email: String = r.get("email");
                let nonce: String = r.get("nonce");
                (
                    email,
                    key.derive(TokenPurpose::Registration, &nonce)
                        .as_str()
                        .to_owned(),
                )
            })
            .collect()
    }
}
