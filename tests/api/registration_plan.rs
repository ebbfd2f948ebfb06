//! The planner and the sender around registration, end to end: the real app on a manual
//! clock, real SMTP to the sink, and every message traced back to its mailing by its
//! Message-ID (deterministic per mailing and subscriber).
//!
//! The calendar is the real default: the session of 2027-01-20 starts at 17:00 UTC. Its
//! invitation (21 days before, to the list) falls due at 2026-12-30 17:00 UTC, a last call
//! (7 days before, to those not registered) at 2027-01-13 17:00 UTC, and the reminder (2
//! days before, to those registered) at 2027-01-18 17:00 UTC. Registrations are made through
//! the store (`register_directly`, as staff's `registrations add` does).

use std::{collections::BTreeSet, path::Path};

use chrono::{DateTime, Utc};
use harborlist::{
    calendar::ChangeSettings,
    clock::{Clock, ManualClock, to_millis},
    config::{Audience, RegistrationMode, ReminderSettings, Settings},
    domain::{TokenKey, TokenPurpose, new_nonce},
    schedule::content,
    store::{
        Store,
        registrations::{
            ClaimOutcome, Evidence, NewLink, RegSource, RegStatus, Registrant, SeatOutcome,
            SessionSeats,
        },
    },
};
use sha2::{Digest, Sha256};

use crate::{
    both_backends,
    helpers::{Backend, Received, TestApp, app, assert_success, eventually, header, parse, seed},
};

both_backends!(
    reminders_by_audience_reach_exactly_their_people_once_across_a_restart,
    a_last_call_is_skipped_when_the_training_is_full,
    someone_who_registers_after_the_fan_out_is_not_sent_the_last_call,
    after_downtime_a_last_call_supersedes_the_invitation_but_not_the_reminder,
    an_expired_offer_passes_to_the_next_person,
    a_capacity_raise_by_reload_offers_as_many_seats_as_were_added,
    moved_and_cancelled_trainings_reach_registrants_and_the_waiting_list,
    a_cancelled_training_neither_offers_nor_gives_seats,
);

const SESSION: &str = "2027-01-20";
const UID: &str = "training-20270120@trainings.harborlist.example.org";

fn key(name: &str) -> String {
    format!("reminder:{UID}:{name}")
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().expect("instant")
}

fn reminder(name: &str, before: &str, template: &str, audience: Audience) -> ReminderSettings {
    ReminderSettings {
        name: name.into(),
        before: before.parse().expect("duration"),
        template: template.into(),
        audience,
    }
}

/// The real templates, plus a plain stand-in for each registration letter not written yet,
/// so that registration mail is composed and reaches the sink whatever the state of the
/// real ones.
fn templates() -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.path().is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(Path::new("templates"), dir.path());
    for name in [
        "registered",
        "waitlisted",
        "seat_offer",
        "registration_confirm",
    ] {
        for (ext, body) in [
            ("subject", "About your seat: {{training.title}}"),
            (
                "txt",
                "Hello,\n\nNews about your seat for {{training.date}}.\n",
            ),
            ("html", "<p>News about your seat for {{training.date}}.</p>"),
        ] {
            let file = dir.path().join(format!("email/{name}.{ext}.hbs"));
            if !file.exists() {
                std::fs::write(file, body).unwrap();
            }
        }
    }
    dir
}

/// The app on a manual clock at `now`, with these reminders and this capacity for the
/// session of 2027-01-20, and the subscribers a, b, c, d (active), p (pending: not on the
/// list) and u (unsubscribed).
struct World {
    app: TestApp,
    clock: ManualClock,
    key: TokenKey,
    _templates: tempfile::TempDir,
}

impl World {
    async fn new(
        backend: Backend,
        now: &str,
        reminders: Vec<ReminderSettings>,
        capacity: u32,
    ) -> Self {
        let clock = ManualClock::new(at(now));
        let dir = templates();
        let path = dir.path().to_owned();
        let app = app(backend)
            .clock(clock.clone())
            .with(move |s| {
                s.templates.dir = path;
                s.reminders = reminders;
                s.trainings.change.push(ChangeSettings {
                    date: SESSION.into(),
                    capacity: Some(capacity),
                    ..Default::default()
                });
            })
            .spawn()
            .await;
        let key = TokenKey::parse(app.token_key()).unwrap();
        for (email, status) in [
            ("a@example.org", "active"),
            ("b@example.org", "active"),
            ("c@example.org", "active"),
            ("d@example.org", "active"),
            ("p@example.org", "pending"),
            ("u@example.org", "unsubscribed"),
        ] {
            seed(&app.store, &key, email, status).await;
        }
        Self {
            app,
            clock,
            key,
            _templates: dir,
        }
    }

    fn store(&self) -> &Store {
        &self.app.store
    }

    fn seats(&self) -> SessionSeats {
        seats(&self.app.settings, self.clock.now())
    }

    /// Registers `email` for the session as staff would, by phone.
    async fn register(&self, email: &str) -> SeatOutcome {
        let nonce = new_nonce();
        let hash = self.key.derive(TokenPurpose::Registration, &nonce).hash();
        let unsub_nonce = new_nonce();
        let unsub_hash = self
            .key
            .derive(TokenPurpose::Unsubscribe, &unsub_nonce)
            .hash();
        let email_key = email.to_lowercase();
        let who = Registrant {
            email,
            email_key: &email_key,
            name: None,
            organisation: None,
            org_key: None,
            unsub_nonce: &unsub_nonce,
            unsub_hash: &unsub_hash,
        };
        self.store()
            .register_directly(
                &self.seats(),
                &who,
                NewLink {
                    nonce: &nonce,
                    hash: &hash,
                },
                RegSource::Staff,
                false,
                Evidence::default(),
                to_millis(self.clock.now()),
            )
            .await
            .expect("register")
    }

    async fn id(&self, email: &str) -> i64 {
        self.store()
            .registration_of(SESSION, email)
            .await
            .unwrap()
            .expect("a registration")
            .id
    }

    async fn status(&self, email: &str) -> Option<RegStatus> {
        self.store()
            .registration_of(SESSION, &email.to_lowercase())
            .await
            .unwrap()
            .map(|r| r.status)
    }

    async fn mailing_state(&self, key: &str) -> Option<String> {
        self.store()
            .mailing_by_key(key)
            .await
            .unwrap()
            .map(|m| m.state)
    }

    /// Waits until the planner has turned twice and nothing is left to send: whatever
    /// this moment's planning and sending will do is done (and recorded), so a count taken
    /// now is final.
    async fn settled(&self) {
        self.app.planner_turns().await;
        eventually(30, "an empty queue", || async {
            (self.store().queue_depth().await.ok()? == 0).then_some(())
        })
        .await;
    }

    /// Moves the clock and waits for the app's planner to have turned after it.
    async fn set_clock(&self, now: &str) {
        self.clock.set(at(now));
        self.app.planner_turns().await;
    }

    /// Waits until the sink holds `n` messages of the mailing `key`, then a moment more
    /// (nothing else may come), and returns their recipients.
    async fn recipients_of(&self, key: &str, n: usize) -> BTreeSet<String> {
        let prefix = message_id_prefix(key);
        let of = || {
            self.app
                .sink
                .messages()
                .into_iter()
                .filter(|m| {
                    parse(&m.bytes)
                        .message_id()
                        .is_some_and(|id| id.starts_with(&prefix))
                })
                .collect::<Vec<Received>>()
        };
        eventually(30, &format!("{n} message(s) of {key}"), || async {
            (of().len() >= n).then_some(())
        })
        .await;
        self.settled().await;
        let msgs = of();
        assert_eq!(msgs.len(), n, "{key}: exactly {n}, each once");
        msgs.iter().flat_map(|m| m.to.clone()).collect()
    }

    /// The messages of mailings whose keys start with `prefix` that reached `email`.
    fn mail_to(&self, email: &str, key: &str) -> Vec<Received> {
        let prefix = message_id_prefix(key);
        self.app
            .sink
            .to(email)
            .into_iter()
            .filter(|m| {
                parse(&m.bytes)
                    .message_id()
                    .is_some_and(|id| id.starts_with(&prefix))
            })
            .collect()
    }

    /// The keys of registration mail (offers and the like) that went to `email`.
    async fn registration_mail_keys(&self, email: &str) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT m.key FROM mailings m JOIN subscribers s ON s.id = m.subscriber_id
             WHERE m.kind = 'registration' AND s.email_key = $1 ORDER BY m.id",
        )
        .bind(email.to_lowercase())
        .fetch_all(self.store().pool())
        .await
        .unwrap()
    }
}

fn seats(settings: &Settings, now: DateTime<Utc>) -> SessionSeats {
    let calendar = settings.calendar().unwrap();
    let session = calendar.session_by_id(SESSION).expect("the session");
    content::seats(settings, &session, 0, now)
}

/// `hl.<first 8 bytes of SHA-256(key), hex>.`: how the Message-IDs of one mailing begin.
fn message_id_prefix(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("hl.{hex}.")
}

fn set(emails: &[&str]) -> BTreeSet<String> {
    emails.iter().map(|e| (*e).to_owned()).collect()
}

fn three_audiences() -> Vec<ReminderSettings> {
    vec![
        reminder("invitation", "21d", "invitation", Audience::List),
        reminder("last-call", "7d", "invitation", Audience::Unregistered),
        reminder("reminder", "2d", "reminder", Audience::Registered),
    ]
}

async fn reminders_by_audience_reach_exactly_their_people_once_across_a_restart(backend: Backend) {
    let mut w = World::new(backend, "2026-12-01T00:00:00Z", three_audiences(), 30).await;
    // c is on the list; p and u are not (pending, unsubscribed), and register all the same.
    for email in ["c@example.org", "p@example.org", "u@example.org"] {
        assert_eq!(w.register(email).await, SeatOutcome::Registered);
    }
    // Their "You're registered" goes whatever their list status, and never as list mail.
    eventually(30, "three registration letters", || async {
        (w.app.sink.count() >= 3).then_some(())
    })
    .await;
    for m in w.app.sink.messages() {
        assert!(header(&m.bytes, "List-Unsubscribe").is_none(), "{:?}", m.to);
    }
    // `status` counts each planned mailing's own audience.
    let upcoming = w.store().upcoming_mailings(50).await.unwrap();
    let audience = |name: &str| {
        upcoming
            .iter()
            .find(|m| m.key == key(name))
            .map(|m| m.audience)
    };
    assert_eq!(audience("invitation"), Some(4), "the active list");
    assert_eq!(audience("last-call"), Some(3), "a, b and d");
    assert_eq!(audience("reminder"), Some(3), "c, p and u");

    w.set_clock("2026-12-30T17:00:00Z").await;
    assert_eq!(
        w.recipients_of(&key("invitation"), 4).await,
        set(&[
            "a@example.org",
            "b@example.org",
            "c@example.org",
            "d@example.org"
        ]),
        "the invitation: the active list"
    );

    // d registers after the invitation: the last call is not for them any more.
    assert_eq!(w.register("d@example.org").await, SeatOutcome::Registered);
    w.set_clock("2027-01-13T17:00:00Z").await;
    assert_eq!(
        w.recipients_of(&key("last-call"), 2).await,
        set(&["a@example.org", "b@example.org"]),
        "the last call: active and not registered"
    );

    // A restart between the mailings sends nothing again.
    w.app = w.app.restart().await;
    w.settled().await;
    assert_eq!(w.recipients_of(&key("last-call"), 2).await.len(), 2);

    // c gives up the seat before the reminder.
    let c = w
        .store()
        .registration_of(SESSION, "c@example.org")
        .await
        .unwrap()
        .unwrap();
    w.store()
        .give_up(&w.seats(), c.id, to_millis(w.clock.now()))
        .await
        .unwrap();
    w.set_clock("2027-01-18T17:00:00Z").await;
    assert_eq!(
        w.recipients_of(&key("reminder"), 3).await,
        set(&["d@example.org", "p@example.org", "u@example.org"]),
        "the reminder: those holding a seat, on the list or not"
    );
    // On the list: list mail. Not on it: the same reminder, as transactional mail.
    let listed = |email: &str| {
        let m = w.mail_to(email, &key("reminder"));
        assert_eq!(m.len(), 1, "{email}");
        header(&m[0].bytes, "List-Unsubscribe").is_some()
    };
    assert!(listed("d@example.org"));
    assert!(!listed("p@example.org"));
    assert!(!listed("u@example.org"));

    w.app = w.app.restart().await;
    w.settled().await;
    for (name, n) in [("invitation", 4), ("last-call", 2), ("reminder", 3)] {
        assert_eq!(w.mail_to_all(&key(name)), n, "{name} once, after a restart");
    }
}

impl World {
    fn mail_to_all(&self, key: &str) -> usize {
        let prefix = message_id_prefix(key);
        self.app
            .sink
            .messages()
            .iter()
            .filter(|m| {
                parse(&m.bytes)
                    .message_id()
                    .is_some_and(|id| id.starts_with(&prefix))
            })
            .count()
    }
}

async fn a_last_call_is_skipped_when_the_training_is_full(backend: Backend) {
    let w = World::new(backend, "2027-01-05T00:00:00Z", three_audiences(), 2).await;
    assert_eq!(w.register("c@example.org").await, SeatOutcome::Registered);
    assert_eq!(w.register("p@example.org").await, SeatOutcome::Registered);
    assert_eq!(
        w.register("d@example.org").await,
        SeatOutcome::Waitlisted { rank: 1 }
    );
    w.set_clock("2027-01-13T17:00:00Z").await;
    assert_eq!(
        w.mailing_state(&key("last-call")).await.as_deref(),
        Some("skipped")
    );
    let skipped = w.store().skipped_mailings(10).await.unwrap();
    let reason = &skipped
        .iter()
        .find(|m| m.key == key("last-call"))
        .expect("listed among skipped mailings")
        .reason;
    assert!(
        reason.contains("no seats left") && reason.contains("2 of 2"),
        "{reason}"
    );
    w.settled().await;
    assert_eq!(w.mail_to_all(&key("last-call")), 0);
}

/// The sender checks the segment again at send time: someone who registered between the
/// fan-out and the sending is not asked to register.
async fn someone_who_registers_after_the_fan_out_is_not_sent_the_last_call(backend: Backend) {
    let w = World::new(backend, "2027-01-05T00:00:00Z", three_audiences(), 30).await;
    // The relay turns everything away for now (451), so the last call waits in retries.
    w.app.sink.set(crate::helpers::Behaviour::TempFail);
    w.set_clock("2027-01-13T17:00:00Z").await;
    eventually(30, "the last call tried", || async {
        (w.app.sink.attempts() >= 4).then_some(())
    })
    .await;
    assert_eq!(w.register("b@example.org").await, SeatOutcome::Registered);
    w.app.sink.set(crate::helpers::Behaviour::Accept);
    // Past every retry's backoff (at most mail.retry_max, 1 s here).
    w.set_clock("2027-01-13T17:00:05Z").await;
    assert_eq!(
        w.recipients_of(&key("last-call"), 3).await,
        set(&["a@example.org", "c@example.org", "d@example.org"])
    );
    let reason: Option<String> = sqlx::query_scalar(
        "SELECT d.last_error FROM deliveries d JOIN mailings m ON m.id = d.mailing_id
         JOIN subscribers s ON s.id = d.subscriber_id
         WHERE m.key = $1 AND s.email_key = 'b@example.org' AND d.state = 'skipped'",
    )
    .bind(key("last-call"))
    .fetch_optional(w.store().pool())
    .await
    .unwrap()
    .flatten();
    assert!(
        reason.as_deref().is_some_and(|r| r.contains("registered")),
        "{reason:?}"
    );
}

async fn after_downtime_a_last_call_supersedes_the_invitation_but_not_the_reminder(
    backend: Backend,
) {
    let w = World::new(backend, "2026-12-01T00:00:00Z", three_audiences(), 30).await;
    assert_eq!(w.register("c@example.org").await, SeatOutcome::Registered);
    // Down from Dec 1 to Jan 19: all three fell due. The last call covers the invitation
    // (everyone the invitation still matters to has not registered); the reminder to those
    // registered covers nobody else, and nothing covers it.
    w.set_clock("2027-01-19T08:00:00Z").await;
    assert_eq!(
        w.mailing_state(&key("invitation")).await.as_deref(),
        Some("skipped")
    );
    assert_eq!(
        w.recipients_of(&key("last-call"), 3).await,
        set(&["a@example.org", "b@example.org", "d@example.org"])
    );
    assert_eq!(
        w.recipients_of(&key("reminder"), 1).await,
        set(&["c@example.org"])
    );
    assert_eq!(w.mail_to_all(&key("invitation")), 0);
}

/// Once the training is cancelled, a seat given up is not offered on, and an open offer can't
/// be claimed: the store refuses, whichever page or command asks.
async fn a_cancelled_training_neither_offers_nor_gives_seats(backend: Backend) {
    let w = World::new(backend, "2027-01-10T12:00:00Z", Vec::new(), 1).await;
    assert_eq!(w.register("c@example.org").await, SeatOutcome::Registered);
    for (email, rank) in [
        ("p@example.org", 1),
        ("u@example.org", 2),
        ("a@example.org", 3),
    ] {
        assert_eq!(w.register(email).await, SeatOutcome::Waitlisted { rank });
    }
    let now = to_millis(w.clock.now());
    let c = w.id("c@example.org").await;
    let p = w.id("p@example.org").await;
    w.store().give_up(&w.seats(), c, now).await.unwrap();
    assert_eq!(w.status("p@example.org").await, Some(RegStatus::Offered));

    let cancelled = SessionSeats {
        cancelled: true,
        ..w.seats()
    };
    assert_eq!(
        w.store().claim_offer(&cancelled, p, now).await.unwrap(),
        ClaimOutcome::Closed
    );
    w.store().give_up(&cancelled, p, now).await.unwrap();
    assert_eq!(w.status("u@example.org").await, Some(RegStatus::Waitlisted));
    assert_eq!(w.store().refill(&cancelled, now).await.unwrap(), 0);
    assert_eq!(w.status("u@example.org").await, Some(RegStatus::Waitlisted));
}

async fn an_expired_offer_passes_to_the_next_person(backend: Backend) {
    let w = World::new(backend, "2027-01-10T12:00:00Z", Vec::new(), 1).await;
    assert_eq!(w.register("c@example.org").await, SeatOutcome::Registered);
    assert_eq!(
        w.register("p@example.org").await,
        SeatOutcome::Waitlisted { rank: 1 }
    );
    assert_eq!(
        w.register("u@example.org").await,
        SeatOutcome::Waitlisted { rank: 2 }
    );
    let c = w
        .store()
        .registration_of(SESSION, "c@example.org")
        .await
        .unwrap()
        .unwrap();
    w.store()
        .give_up(&w.seats(), c.id, to_millis(w.clock.now()))
        .await
        .unwrap();
    assert_eq!(w.status("p@example.org").await, Some(RegStatus::Offered));
    // "You're on the waiting list", then the offer.
    eventually(30, "p's offer", || async {
        (w.app.sink.to("p@example.org").len() >= 2).then_some(())
    })
    .await;

    // 47 hours on, the offer still holds: nothing moves.
    w.set_clock("2027-01-12T11:00:00Z").await;
    assert_eq!(w.status("p@example.org").await, Some(RegStatus::Offered));
    assert_eq!(w.status("u@example.org").await, Some(RegStatus::Waitlisted));

    // Past its 48 hours, a planner turn expires it and offers the seat to u.
    w.set_clock("2027-01-12T12:00:01Z").await;
    assert_eq!(w.status("p@example.org").await, Some(RegStatus::Expired));
    assert_eq!(w.status("u@example.org").await, Some(RegStatus::Offered));
    let offers = w.registration_mail_keys("u@example.org").await;
    assert!(offers.iter().any(|k| k.starts_with("offer:")), "{offers:?}");
    // u is not on the list (unsubscribed) and gets the offer all the same, as
    // transactional mail: "You're on the waiting list", then the offer.
    eventually(30, "u's offer", || async {
        (w.app.sink.to("u@example.org").len() >= 2).then_some(())
    })
    .await;
    for m in w.app.sink.to("u@example.org") {
        assert!(header(&m.bytes, "List-Unsubscribe").is_none());
    }
    // No offer is made twice.
    w.set_clock("2027-01-12T12:30:00Z").await;
    assert_eq!(
        w.registration_mail_keys("u@example.org")
            .await
            .iter()
            .filter(|k| k.starts_with("offer:"))
            .count(),
        1
    );
}

async fn a_capacity_raise_by_reload_offers_as_many_seats_as_were_added(backend: Backend) {
    let mut w = World::new(backend, "2027-01-10T12:00:00Z", Vec::new(), 1).await;
    assert_eq!(w.register("c@example.org").await, SeatOutcome::Registered);
    for (rank, email) in ["d@example.org", "p@example.org", "u@example.org"]
        .into_iter()
        .enumerate()
    {
        assert_eq!(
            w.register(email).await,
            SeatOutcome::Waitlisted {
                rank: rank as i64 + 1
            }
        );
    }
    // Two more seats: the first two waiting get offers, in order; the third waits on.
    // A live reload, the daemon running on.
    w.app.reload_with(|s| {
        for c in &mut s.trainings.change {
            if c.date == SESSION {
                c.capacity = Some(3);
            }
        }
    });
    eventually(30, "two offers", || async {
        (w.status("p@example.org").await == Some(RegStatus::Offered)).then_some(())
    })
    .await;
    assert_eq!(w.status("d@example.org").await, Some(RegStatus::Offered));
    assert_eq!(w.status("u@example.org").await, Some(RegStatus::Waitlisted));
    for email in ["d@example.org", "p@example.org"] {
        let keys = w.registration_mail_keys(email).await;
        assert_eq!(
            keys.iter().filter(|k| k.starts_with("offer:")).count(),
            1,
            "{email}: {keys:?}"
        );
        eventually(30, "the offer mail", || async {
            (w.app.sink.to(email).len() >= 2).then_some(())
        })
        .await;
    }
    assert!(
        !w.registration_mail_keys("u@example.org")
            .await
            .iter()
            .any(|k| k.starts_with("offer:"))
    );
}

async fn moved_and_cancelled_trainings_reach_registrants_and_the_waiting_list(backend: Backend) {
    let mut w = World::new(backend, "2026-12-01T00:00:00Z", three_audiences(), 1).await;
    // p (not on the list) holds the only seat; u (unsubscribed) waits. No list mail about
    // the training went out yet.
    assert_eq!(w.register("p@example.org").await, SeatOutcome::Registered);
    assert_eq!(
        w.register("u@example.org").await,
        SeatOutcome::Waitlisted { rank: 1 }
    );
    // Moved: the registrations stay (the session's id is the same), and everyone involved
    // hears of it.
    w.app = w
        .app
        .restart_with(|s| {
            for c in &mut s.trainings.change {
                if c.date == SESSION {
                    c.location = Some("Room 2, 1605 Eustis Street, St Paul".into());
                }
            }
        })
        .await;
    let involved = set(&[
        "a@example.org",
        "b@example.org",
        "c@example.org",
        "d@example.org",
        "p@example.org",
        "u@example.org",
    ]);
    assert_eq!(
        w.recipients_of(&format!("update:{UID}:1"), 6).await,
        involved
    );
    assert_eq!(w.status("p@example.org").await, Some(RegStatus::Registered));
    assert_eq!(w.status("u@example.org").await, Some(RegStatus::Waitlisted));
    // Not on the list: the notice comes as transactional mail.
    let notice = w.mail_to("u@example.org", &format!("update:{UID}:1"));
    assert!(header(&notice[0].bytes, "List-Unsubscribe").is_none());
    let notice = w.mail_to("a@example.org", &format!("update:{UID}:1"));
    assert!(header(&notice[0].bytes, "List-Unsubscribe").is_some());

    // Cancelled, with more seats in the same edit: the cancellation reaches the same people,
    // and nobody waiting is offered a seat in a training that will not happen.
    w.app = w
        .app
        .restart_with(|s| {
            for c in &mut s.trainings.change {
                if c.date == SESSION {
                    c.cancelled = Some(true);
                    c.capacity = Some(5);
                }
            }
        })
        .await;
    assert_eq!(
        w.recipients_of(&format!("cancel:{UID}:2"), 6).await,
        involved
    );
    let cancel = w.mail_to("p@example.org", &format!("cancel:{UID}:2"));
    assert!(
        crate::helpers::calendar_part(&cancel[0].bytes)
            .expect("the cancellation's invite")
            .contains("METHOD:CANCEL")
    );
    assert_eq!(w.status("u@example.org").await, Some(RegStatus::Waitlisted));
    assert!(
        !w.registration_mail_keys("u@example.org")
            .await
            .iter()
            .any(|k| k.starts_with("offer:"))
    );
}

#[test]
fn an_announcement_names_its_training_by_id_or_by_date() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("local.toml");
    let with = |training: &str| {
        format!(
            "[[trainings.extra]]\nid = \"lgbtq-2027-04\"\nstart = \"2027-04-14T11:00:00-05:00\"\nduration = \"2h\"\n\n\
             [[announcements]]\nid = \"news\"\nsend_at = \"2027-04-01T09:00\"\nsubject = \"News\"\nmarkdown = \"Hi\"\ntraining = \"{training}\"\n"
        )
    };
    for training in ["lgbtq-2027-04", "2027-04-14", "2027-05-19"] {
        std::fs::write(&file, with(training)).unwrap();
        let s = harborlist::config::load_from(Path::new("config"), Some(file.clone()))
            .unwrap_or_else(|e| panic!("{training}: {e}"));
        let calendar = s.calendar().unwrap();
        let session = s.announcements[0].session(&calendar).expect(training);
        let expected = if training == "2027-05-19" {
            "2027-05-19"
        } else {
            "lgbtq-2027-04"
        };
        assert_eq!(session.id, expected);
    }
    std::fs::write(&file, with("lgbtq-2027-05")).unwrap();
    let e = harborlist::config::load_from(Path::new("config"), Some(file.clone()))
        .expect_err("an unknown training")
        .to_string();
    assert!(
        e.contains(&format!(
            "announcement \"news\" (the 1st [[announcements]] entry, in {}): training: ",
            file.display()
        )) && e.contains("lgbtq-2027-05"),
        "{e}"
    );
}

#[test]
fn check_warns_about_audiences_when_registration_is_external() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("local.toml");
    std::fs::write(
        &file,
        "[registration]\nmode = \"external\"\n[trainings]\nregistration_url = \"https://example.org/register\"\n",
    )
    .unwrap();
    let out = crate::cli::harborlist()
        .arg("--config")
        .arg(&file)
        .arg("check")
        .output()
        .unwrap();
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("warn reminders[1].audience")
            && stdout.contains("\"registered\"")
            && stdout.contains("whole list"),
        "{stdout}"
    );
    // With harborlist taking registrations there is nothing to warn about.
    let out = crate::cli::harborlist().arg("check").output().unwrap();
    assert_success(&out);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("warn "));
}

/// The shipped defaults: an invitation to the list at 21 days, a reminder to those
/// registered at 2 days; and the external mode turns every audience into the list.
#[test]
fn the_default_reminders_are_an_invitation_to_the_list_and_a_reminder_to_those_registered() {
    let s = harborlist::config::load_from(Path::new("config"), None).unwrap();
    let r: Vec<_> = s
        .reminders
        .iter()
        .map(|r| {
            (
                r.name.as_str(),
                r.before.std().as_secs() / 86_400,
                r.audience,
            )
        })
        .collect();
    assert_eq!(
        r,
        vec![
            ("invitation", 21, Audience::List),
            ("reminder", 2, Audience::Registered),
        ]
    );
    assert_eq!(s.registration.mode, RegistrationMode::Harborlist);
    let default = include_str!("../../config/default.toml");
    assert!(default.contains("# audience = \"unregistered\""));
}
