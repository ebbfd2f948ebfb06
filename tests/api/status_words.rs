//! `harborlist status` in staff's words: mailings named as staff think of them
//! ("Invitation · Wed Jan 20, 2027 training", "Announcement 'stale'"), states read
//! scheduled / sending / sent / cancelled / skipped with the reason, a moved training under
//! the date it is on now ("moved from May 19"), and what the planner will plan shown before
//! the daemon has ever run. `--json` keeps its machine fields and adds `title`,
//! `state_words` (and `stored` for upcoming ones).
//!
//! Rows in the database come from the real planner on a manual clock (the default
//! calendar: third Wednesday of odd months, 11:00 Chicago); what `status` works out from
//! the configuration is judged against the real time, as staff would run it.

use std::path::Path;

use chrono::{Datelike, Days, Utc};
use harborlist::{
    calendar::{ChangeSettings, Session},
    config::{Settings, load_from},
    store::{Store, bounces::BounceRules, record::Outcome},
};
use serde_json::Value;

use crate::{
    announcements::announcement,
    both_backends,
    cli::harborlist,
    helpers::{Backend, TestDb, assert_success},
    schedule::World,
};

both_backends!(
    status_names_mailings_and_their_states_in_staff_words,
    status_before_the_daemon_ever_ran_shows_the_next_invitation_as_scheduled,
    status_names_a_moved_training_where_it_is_now,
);

const DOMAIN: &str = "trainings.harborlist.example.org";

fn uid(date: &str) -> String {
    format!("training-{date}@{DOMAIN}")
}

/// `status` (and `status --json`) on `db_url`, with `config` layered over the defaults.
fn status(db_url: &str, config: Option<&Path>) -> (String, Value) {
    let run = |json: bool| {
        let mut cmd = harborlist();
        if let Some(file) = config {
            cmd.arg("--config").arg(file);
        }
        cmd.arg("status");
        if json {
            cmd.arg("--json");
        }
        let out = cmd
            .env("HARBORLIST__DATABASE__URL", db_url)
            .output()
            .expect("status runs");
        assert_success(&out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let doc = serde_json::from_str(&run(true)).expect("status --json prints JSON");
    (run(false), doc)
}

/// The entry of `doc[list]` with this key.
fn by_key<'a>(doc: &'a Value, list: &str, key: &str) -> &'a Value {
    doc[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {doc:#}"))
        .iter()
        .find(|m| m["key"] == key)
        .unwrap_or_else(|| panic!("{key} is not in {list}: {doc:#}"))
}

/// (title, state_words) of a listed mailing.
fn words(m: &Value) -> (&str, &str) {
    (
        m["title"].as_str().unwrap_or_default(),
        m["state_words"].as_str().unwrap_or_default(),
    )
}

/// Claims every queued delivery and records each as sent, as the sender would.
async fn send_everything(store: &Store, now_ms: i64) {
    let claimed = store
        .claim("test#1", now_ms, now_ms + 60_000, 1_000)
        .await
        .expect("claim");
    let outcomes: Vec<Outcome> = claimed
        .iter()
        .map(|c| Outcome::Sent {
            delivery_id: c.delivery_id,
            subscriber_id: c.subscriber_id,
        })
        .collect();
    let mut recorder = store.recorder().await.expect("recorder");
    recorder
        .record("test#1", &outcomes, now_ms, &BounceRules::default())
        .await
        .expect("record");
}

fn at_ms(instant: &str) -> i64 {
    instant
        .parse::<chrono::DateTime<Utc>>()
        .expect("instant")
        .timestamp_millis()
}

fn change(date: &str, f: impl FnOnce(&mut ChangeSettings)) -> ChangeSettings {
    let mut c: ChangeSettings = toml::from_str(&format!("date = {date:?}")).expect("a change");
    f(&mut c);
    c
}

/// The January invitation and reminder went out and were sent; the March training was cancelled after its invitation went out, so a
/// cancellation notice went and its reminder was cancelled; the May training moved a week
/// after its invitation, so an update notice went; an announcement found two days late
/// was skipped.
async fn status_names_mailings_and_their_states_in_staff_words(backend: Backend) {
    let mut w = World::new(backend, "2026-12-01T12:00:00Z").await;
    let invited = "2026-12-30T17:00:00Z";
    w.turn_at(invited).await;
    send_everything(&w.store, at_ms(invited)).await;
    // For those registered: nobody is, so it was done as soon as it fanned out.
    w.turn_at("2027-01-18T17:00:00Z").await;
    w.turn_at("2027-02-24T17:00:00Z").await;
    let cancel_march = change("2027-03-17", |c| c.cancelled = Some(true));
    let move_may = change("2027-05-19", |c| c.start = Some("2027-05-26T11:00".into()));
    w.reconfigure(|s| s.trainings.change.push(cancel_march));
    w.turn_at("2027-02-25T17:00:00Z").await;
    w.turn_at("2027-04-28T16:00:00Z").await;
    w.reconfigure(|s| s.trainings.change.push(move_may));
    w.turn_at("2027-04-29T16:00:00Z").await;
    w.reconfigure(|s| {
        s.announcements.push(announcement(
            "stale",
            "2027-04-27T16:00:00Z".parse().unwrap(),
            "Old news",
        ))
    });
    w.turn_at("2027-04-29T16:00:00Z").await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("local.toml");
    std::fs::write(
        &file,
        "[[trainings.change]]\ndate = \"2027-03-17\"\ncancelled = true\n\n\
         [[trainings.change]]\ndate = \"2027-05-19\"\nstart = \"2027-05-26T11:00\"\n",
    )
    .unwrap();
    let (text, doc) = status(&w.settings.database.url, Some(&file));

    let mar = uid("20270317");
    let may = uid("20270519");
    let expected = [
        (
            format!("reminder:{}:invitation", uid("20270120")),
            "reminder",
            "fanned",
            "Invitation · Wed Jan 20, 2027 training",
            "sent",
        ),
        (
            format!("reminder:{}:reminder", uid("20270120")),
            "reminder",
            "fanned",
            "Reminder · Wed Jan 20, 2027 training",
            "sent",
        ),
        (
            format!("reminder:{mar}:reminder"),
            "reminder",
            "cancelled",
            "Reminder · Wed Mar 17, 2027 training",
            "cancelled",
        ),
        (
            format!("cancel:{mar}:1"),
            "cancel",
            "fanned",
            "Cancellation notice · Wed Mar 17, 2027 training",
            "sending",
        ),
        (
            format!("update:{may}:1"),
            "update",
            "fanned",
            "Update notice · Wed May 26, 2027 training (moved from May 19)",
            "sending",
        ),
        (
            format!("reminder:{may}:invitation"),
            "reminder",
            "fanned",
            "Invitation · Wed May 26, 2027 training (moved from May 19)",
            "sending",
        ),
        (
            "announcement:stale".to_owned(),
            "announcement",
            "skipped",
            "Announcement 'stale'",
            "skipped: send_at Tue Apr 27 2027 11:00 AM CDT was 2 days ago",
        ),
    ];
    for (key, kind, state, title, state_words) in &expected {
        let m = by_key(&doc, "recent", key);
        // The machine fields are as they were; the words are added beside them.
        assert_eq!(
            (m["kind"].as_str(), m["state"].as_str()),
            (Some(*kind), Some(*state)),
            "{key}"
        );
        assert_eq!(words(m), (*title, *state_words), "{key}");
        let word = state_words.split(':').next().unwrap_or_default();
        assert!(
            text.lines()
                .any(|l| l.contains(title) && l.split_whitespace().any(|w| w == word)),
            "no line with {title:?} and {word:?}:\n{text}"
        );
    }
    assert!(
        !text.contains("reminder:training-"),
        "no mailing keys:\n{text}"
    );
    assert!(!text.contains("fanned"), "no internal states:\n{text}");
    assert!(
        text.contains(
            "Skipped, not sent\n  Announcement 'stale': send_at Tue Apr 27 2027 11:00 AM CDT was 2 days ago"
        ),
        "{text}"
    );
    assert_eq!(
        by_key(&doc, "skipped", "announcement:stale")["title"],
        "Announcement 'stale'"
    );
}

/// The settings the binary reads (the committed defaults and `extra`).
fn settings(extra: Option<&Path>) -> Settings {
    load_from(Path::new("config"), extra.map(Path::to_path_buf)).expect("config loads")
}

/// The upcoming sessions, by the real clock, whose invitation is not due yet.
fn invited_later(s: &Settings) -> Vec<Session> {
    let now = Utc::now();
    s.calendar()
        .expect("calendar")
        .upcoming(now, 6)
        .into_iter()
        .filter(|t| !t.cancelled && invitation_due(t) > now)
        .collect()
}

/// 21 calendar days before the start (`[[reminders]] before = "21d"`), at the same local time.
fn invitation_due(t: &Session) -> chrono::DateTime<Utc> {
    t.start
        .checked_sub_days(Days::new(21))
        .expect("in range")
        .with_timezone(&Utc)
}

async fn status_before_the_daemon_ever_ran_shows_the_next_invitation_as_scheduled(
    backend: Backend,
) {
    let db = TestDb::new(backend).await;
    let next = invited_later(&settings(None)).remove(0);
    let (text, doc) = status(&db.url, None);

    let key = format!("reminder:{}:invitation", next.uid);
    let title = format!(
        "Invitation · {} training",
        next.start.format("%a %b %-d, %Y")
    );
    let m = by_key(&doc, "upcoming", &key);
    assert_eq!(words(m), (title.as_str(), "scheduled"));
    assert_eq!(
        (&m["state"], &m["kind"], &m["stored"], &m["audience"]),
        (
            &Value::from("planned"),
            &Value::from("reminder"),
            &Value::from(false),
            &Value::from(0)
        )
    );
    let due = chrono::DateTime::parse_from_rfc3339(m["due"].as_str().unwrap()).unwrap();
    assert_eq!(due, invitation_due(&next));

    let due_words = invitation_due(&next)
        .with_timezone(&next.start.timezone())
        .format("%a %b %-d %Y %-I:%M %p %Z")
        .to_string();
    assert!(
        text.lines()
            .any(|l| l.contains(&due_words) && l.contains(&title) && l.contains("scheduled")),
        "{text}"
    );
    assert!(!text.contains("(none planned)"), "{text}");
    assert!(
        text.contains("(not planned by the daemon yet: it plans them when it runs"),
        "{text}"
    );
    // Worked out, not written: the database has no mailing.
    let store = Store::connect(&db.url, 1).await.expect("store");
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM mailings")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(n, 0);
}

async fn status_names_a_moved_training_where_it_is_now(backend: Backend) {
    let db = TestDb::new(backend).await;
    // Any odd month's third Wednesday plus a week stays in its year.
    let was = invited_later(&settings(None)).remove(0);
    let to = was.start.date_naive() + Days::new(7);
    assert_eq!(to.year(), was.start.year());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("local.toml");
    std::fs::write(
        &file,
        format!(
            "[[trainings.change]]\ndate = \"{}\"\nstart = \"{}T11:00\"\n",
            was.id,
            to.format("%Y-%m-%d")
        ),
    )
    .unwrap();
    let (text, doc) = status(&db.url, Some(&file));

    let moved = format!("(moved from {})", was.start.format("%b %-d"));
    let title = format!(
        "Invitation · {} training {moved}",
        to.format("%a %b %-d, %Y")
    );
    let m = by_key(
        &doc,
        "upcoming",
        &format!("reminder:{}:invitation", was.uid),
    );
    assert_eq!(words(m), (title.as_str(), "scheduled"));
    assert!(text.contains(&title), "{text}");
    // Among the next trainings, where it is now, with its seats as before.
    let day = format!("  {}, 11:00 AM", to.format("%A, %B %-d, %Y"));
    let seats = format!("[{}] {moved}: 0 / 30 registered", was.id);
    assert!(
        text.lines()
            .any(|l| l.starts_with(&day) && l.contains(&seats)),
        "no {day:?} … {seats:?} in:\n{text}"
    );
}
