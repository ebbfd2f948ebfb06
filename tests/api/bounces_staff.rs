//! The staff side of bounces (issue 18): the "Bounces and complaints" section of
//! `harborlist status` (text and `--json`), `subscribers list --status bouncing` with the
//! last report about each address, and a bouncing person coming back through the web form.
//!
//! People join through the real web flow, so their confirmation and welcome are real
//! deliveries; reports about those deliveries are recorded with the store's
//! `record_report`, as the IMAP reader and the listener do, at chosen instants. The
//! commands run as the real binary. Both backends.

use chrono::{DateTime, Duration, Utc};
use harborlist::{
    clock::{ManualClock, rfc3339},
    domain::{ReportKind, StatusCode},
    store::{
        Store,
        bounces::{BounceRules, Effect, ReportEvent, ReportSource, ReportTarget},
    },
};
use serde_json::json;

use crate::{
    announcements::announcement,
    both_backends,
    cli::harborlist,
    helpers::{
        Backend, TestApp, app, bounce_state, eventually, link_in, parse, seed, spawn_app, text_of,
    },
};

both_backends!(
    status_counts_the_last_30_days_in_staff_words_and_json,
    subscribers_list_status_bouncing_shows_the_last_report,
    a_bouncing_person_who_subscribes_again_is_active_after_confirming,
);

const DAY_MS: i64 = 86_400_000;
const ANA: &str = "ana@example.net";
const BEN: &str = "ben@example.org";
const CAT: &str = "cat@example.org";
const DAN: &str = "dan@example.com";
const EVE: &str = "eve@example.org";
const LAST_WORDS: &str = "smtp; 550 5.1.1 <…@example.net>: Recipient address rejected: gone";

/// One report, as the readers hand it to the store.
struct Report<'a> {
    key: &'a str,
    kind: ReportKind,
    status: Option<&'a str>,
    diagnostic: &'a str,
    domain: Option<&'a str>,
    target: ReportTarget,
    at_ms: i64,
}

impl Report<'_> {
    async fn record(&self, store: &Store) -> Effect {
        let event = ReportEvent {
            key: self.key.to_owned(),
            source: ReportSource::Listener,
            kind: self.kind,
            status: self
                .status
                .map(|s| StatusCode::parse(s).expect("a status code")),
            diagnostic: Some(self.diagnostic.to_owned()),
            recipient_domain: self.domain.map(str::to_owned),
            target: self.target.clone(),
            day: self.at_ms.div_euclid(DAY_MS),
            now_ms: self.at_ms,
        };
        store
            .record_report(&event, &BounceRules::default())
            .await
            .expect("record the report")
    }
}

fn hard(key: &str, target: ReportTarget, at_ms: i64) -> Report<'_> {
    Report {
        key,
        kind: ReportKind::Hard,
        status: Some("5.1.1"),
        diagnostic: "smtp; 550 5.1.1 user unknown",
        domain: None,
        target,
        at_ms,
    }
}

/// The last delivery written for `email` (their welcome, once they confirmed).
async fn last_delivery(store: &Store, email: &str) -> ReportTarget {
    let id: i64 = sqlx::query_scalar(
        "SELECT d.id FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
         WHERE s.email_key = $1 ORDER BY d.id DESC LIMIT 1",
    )
    .bind(email.to_lowercase())
    .fetch_one(store.pool())
    .await
    .expect("a delivery");
    ReportTarget::Delivery(id)
}

async fn unsubscribe_reason(store: &Store, email: &str) -> Option<String> {
    sqlx::query_scalar("SELECT unsubscribe_reason FROM subscribers WHERE email_key = $1")
        .bind(email.to_lowercase())
        .fetch_one(store.pool())
        .await
        .expect("the subscriber")
}

/// `harborlist ARGS…` against the app's database; (exit code, stdout, stderr).
fn run(app: &TestApp, args: &[&str]) -> (Option<i32>, String, String) {
    let out = harborlist()
        .args(args)
        .env("HARBORLIST__DATABASE__URL", &app.db.url)
        .env("HARBORLIST__SECURITY__TOKEN_KEY", app.token_key())
        .output()
        .expect("run harborlist");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `harborlist ARGS…`, which must succeed; its stdout.
fn run_ok(app: &TestApp, args: &[&str]) -> String {
    let (code, stdout, stderr) = run(app, args);
    assert_eq!(
        code,
        Some(0),
        "{args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

/// Five people on the list through the web flow, and a month and a half of reports about
/// them, some older than 30 days; returns the app and when ana's last report came.
///
/// In the last 30 days: ana's address bounced hard on three days (the third made her
/// bouncing), ben's once soft (his old hard bounce is stale), cat complained, outlook.com
/// refused dan twice and gmail.com once on policy, one report was delayed, one an
/// auto-reply, and two matched nothing we sent. Before that: ben's hard bounce, eve's
/// complaint, a policy refusal and an unmatched report, which must not be counted.
async fn reported(backend: Backend) -> (TestApp, i64) {
    let app = spawn_app(backend).await;
    for email in [ANA, BEN, CAT, DAN, EVE] {
        app.subscribe_and_confirm(email).await;
    }
    let store = &app.store;
    let now = harborlist::clock::to_millis(Utc::now());
    let ago = |days: i64, hours: i64| now - days * DAY_MS - hours * 3_600_000;
    let ana = last_delivery(store, ANA).await;
    let ben = last_delivery(store, BEN).await;
    let dan = last_delivery(store, DAN).await;

    // Older than 30 days.
    assert!(matches!(
        hard("old-ben", ben.clone(), ago(40, 0)).record(store).await,
        Effect::Scored { .. }
    ));
    let old_complaint = Report {
        key: "old-eve",
        kind: ReportKind::Complaint,
        status: None,
        diagnostic: "abuse report",
        domain: None,
        target: last_delivery(store, EVE).await,
        at_ms: ago(45, 0),
    };
    assert_eq!(old_complaint.record(store).await, Effect::Unsubscribed);
    let old_policy = Report {
        key: "old-policy",
        kind: ReportKind::Hard,
        status: Some("5.7.1"),
        diagnostic: "550 5.7.1 spam",
        domain: Some("outlook.com"),
        target: dan.clone(),
        at_ms: ago(35, 0),
    };
    assert_eq!(old_policy.record(store).await, Effect::Policy);
    assert_eq!(
        hard("old-unmatched", ReportTarget::None, ago(31, 0))
            .record(store)
            .await,
        Effect::Unmatched
    );

    // The last 30 days.
    for (i, days) in [3, 2].into_iter().enumerate() {
        let key = format!("ana-{i}");
        assert!(matches!(
            hard(&key, ana.clone(), ago(days, 0)).record(store).await,
            Effect::Scored { .. }
        ));
    }
    let ana_last_at = ago(1, 0);
    let last = Report {
        diagnostic: LAST_WORDS,
        ..hard("ana-2", ana.clone(), ana_last_at)
    };
    assert!(matches!(last.record(store).await, Effect::Bouncing { .. }));
    let soft = Report {
        kind: ReportKind::Soft,
        status: Some("4.2.2"),
        diagnostic: "452 4.2.2 mailbox full",
        ..hard("ben-soft", ben.clone(), ago(0, 1))
    };
    assert_eq!(soft.record(store).await, Effect::Scored { score: 0.5 });
    let complaint = Report {
        key: "cat-complaint",
        kind: ReportKind::Complaint,
        status: None,
        diagnostic: "abuse report",
        domain: None,
        target: last_delivery(store, CAT).await,
        at_ms: ago(0, 2),
    };
    assert_eq!(complaint.record(store).await, Effect::Unsubscribed);
    for (key, domain) in [
        ("p1", "outlook.com"),
        ("p2", "outlook.com"),
        ("p3", "gmail.com"),
    ] {
        let policy = Report {
            status: Some("5.7.1"),
            diagnostic: "550 5.7.1 rejected by policy",
            domain: Some(domain),
            ..hard(key, dan.clone(), ago(0, 3))
        };
        assert_eq!(policy.record(store).await, Effect::Policy);
    }
    for (key, kind) in [
        ("delayed", ReportKind::Delayed),
        ("ooo", ReportKind::AutoReply),
    ] {
        let report = Report {
            kind,
            status: None,
            ..hard(key, ana.clone(), ago(0, 4))
        };
        assert_eq!(report.record(store).await, Effect::Ignored);
    }
    for key in ["forged-1", "forged-2"] {
        assert_eq!(
            hard(key, ReportTarget::None, ago(0, 5)).record(store).await,
            Effect::Unmatched
        );
    }
    (app, ana_last_at)
}

async fn status_counts_the_last_30_days_in_staff_words_and_json(backend: Backend) {
    let (app, _) = reported(backend).await;

    let doc: serde_json::Value =
        serde_json::from_str(&run_ok(&app, &["status", "--json"])).expect("JSON");
    assert_eq!(
        doc["bounces"],
        json!({
            "days": 30, "hard": 3, "soft": 1, "delayed": 1, "complaints": 1, "auto_replies": 1,
            "became_bouncing": 1,
            "policy_by_domain": [{"domain": "outlook.com", "count": 2}, {"domain": "gmail.com", "count": 1}],
            "unmatched": 2,
        })
    );
    // The fields that were there before are still there.
    assert_eq!(doc["subscribers"]["active"], 2, "ben and dan");
    assert_eq!(doc["subscribers"]["bouncing"], 1);
    assert!(doc["queue_depth"].is_number() && doc["relay"].is_object());

    let text = run_ok(&app, &["status"]);
    let section = text
        .split_once("\nBounces and complaints (last 30 days)\n")
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("no bounce section:\n{text}"));
    let lines: Vec<&str> = section.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        [
            "3 hard bounces, 1 soft, 1 delayed; 1 auto-reply",
            "1 complaint (unsubscribed)",
            "1 person stopped getting mail because their address bounces (see `harborlist subscribers list --status bouncing`)",
            "rejected as policy/spam by: outlook.com 2, gmail.com 1",
            "(the list has a deliverability problem with that provider, not the people on it: check SPF, DKIM and DMARC for the sending domain)",
            "2 reports matched nothing harborlist sent (ignored)",
        ],
        "{text}"
    );

    // Nothing at all in the window: one calm line, zeros in JSON, no policy advice.
    let fresh = spawn_app(backend).await;
    let doc: serde_json::Value =
        serde_json::from_str(&run_ok(&fresh, &["status", "--json"])).expect("JSON");
    assert_eq!(
        doc["bounces"],
        json!({"days": 30, "hard": 0, "soft": 0, "delayed": 0, "complaints": 0, "auto_replies": 0,
               "became_bouncing": 0, "policy_by_domain": [], "unmatched": 0})
    );
    let text = run_ok(&fresh, &["status"]);
    assert!(
        text.ends_with("Bounces and complaints (last 30 days)\n  nothing came back\n"),
        "{text}"
    );
    assert!(!text.contains("SPF"), "{text}");
}

async fn subscribers_list_status_bouncing_shows_the_last_report(backend: Backend) {
    let (app, ana_last_at) = reported(backend).await;
    // Made bouncing by hand, with no report about them.
    let key = harborlist::domain::TokenKey::parse(app.token_key()).expect("key");
    seed(&app.store, &key, "hand@example.org", "bouncing").await;

    let rows: Vec<serde_json::Value> = serde_json::from_str(&run_ok(
        &app,
        &["subscribers", "list", "--status", "bouncing", "--json"],
    ))
    .expect("JSON array");
    let ana_row = rows
        .iter()
        .find(|r| r["email"] == ANA)
        .expect("ana is listed");
    assert_eq!(ana_row["status"], "bouncing");
    assert_eq!(ana_row["last_status"], "5.1.1");
    assert_eq!(
        ana_row["last_diagnostic"], LAST_WORDS,
        "the most recent report's words"
    );
    assert_eq!(ana_row["last_bounce_at"], rfc3339(ana_last_at));
    let hand = rows
        .iter()
        .find(|r| r["email"] == "hand@example.org")
        .expect("the hand-made one is listed");
    for field in ["last_status", "last_diagnostic", "last_bounce_at"] {
        assert!(hand[field].is_null(), "{field}: {hand}");
    }
    assert_eq!(rows.len(), 2, "only the bouncing: {rows:?}");

    let table = run_ok(&app, &["subscribers", "list", "--status", "bouncing"]);
    let ana_line = table
        .lines()
        .find(|l| l.starts_with(ANA))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        ana_line.contains(&rfc3339(ana_last_at))
            && ana_line.contains("5.1.1")
            && ana_line.contains(LAST_WORDS),
        "{table}"
    );
    assert!(
        table.starts_with("EMAIL") && table.contains("DIAGNOSTIC"),
        "{table}"
    );
    assert!(table.ends_with("2 subscriber(s)\n"), "{table}");

    // The other statuses filter too, and their rows carry no bounce fields.
    let active: Vec<serde_json::Value> = serde_json::from_str(&run_ok(
        &app,
        &["subscribers", "list", "--status", "active", "--json"],
    ))
    .expect("JSON array");
    let emails: Vec<&str> = active.iter().filter_map(|r| r["email"].as_str()).collect();
    assert_eq!(emails, [BEN, DAN]);
    assert!(active.iter().all(|r| r.get("last_diagnostic").is_none()));
    let left = run_ok(&app, &["subscribers", "list", "--status", "unsubscribed"]);
    assert!(
        left.contains(CAT) && left.contains(EVE) && !left.contains(ANA),
        "{left}"
    );
    assert!(!left.contains("DIAGNOSTIC"), "{left}");
    // Without a filter, everyone, as before.
    let all = run_ok(&app, &["subscribers", "list"]);
    assert!(all.ends_with("6 subscriber(s)\n"), "{all}");

    let (code, _, stderr) = run(&app, &["subscribers", "list", "--status", "gone"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("pending")
            && stderr.contains("active")
            && stderr.contains("unsubscribed")
            && stderr.contains("bouncing"),
        "the error names the valid values: {stderr}"
    );
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().expect("instant")
}

async fn a_bouncing_person_who_subscribes_again_is_active_after_confirming(backend: Backend) {
    let t0 = at("2027-03-01T15:00:00Z");
    let later = t0 + Duration::days(4);
    let clock = ManualClock::new(t0);
    let app = app(backend)
        .clock(clock.clone())
        .with(move |s| {
            s.announcements
                .push(announcement("back", later, "After coming back"))
        })
        .spawn()
        .await;
    let store = &app.store;
    app.subscribe_and_confirm(ANA).await;
    app.subscribe_and_confirm(BEN).await;
    // Ana's address bounces on three days: bouncing. Ben marks a message as spam.
    let ana = last_delivery(store, ANA).await;
    for (i, key) in ["a0", "a1", "a2"].into_iter().enumerate() {
        let at_ms = harborlist::clock::to_millis(t0 + Duration::days(i as i64));
        hard(key, ana.clone(), at_ms).record(store).await;
    }
    assert_eq!(bounce_state(store, ANA).await, (3.0, "bouncing".into()));
    let complaint = Report {
        key: "ben-spam",
        kind: ReportKind::Complaint,
        status: None,
        diagnostic: "abuse report",
        domain: None,
        target: last_delivery(store, BEN).await,
        at_ms: harborlist::clock::to_millis(t0),
    };
    assert_eq!(complaint.record(store).await, Effect::Unsubscribed);
    assert_eq!(
        unsubscribe_reason(store, BEN).await.as_deref(),
        Some("complaint")
    );
    clock.set(t0 + Duration::days(3));

    // The form answers them as it answers a stranger.
    let mut bodies = Vec::new();
    for email in [ANA, BEN, "new@example.org"] {
        let res = app.subscribe(email, "").await;
        assert_eq!(res.status(), 200, "{email}");
        bodies.push(res.text().await.expect("body").replace(email, "ADDRESS"));
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "the answer differs by state:\n{bodies:#?}"
    );

    for email in [ANA, BEN] {
        // Confirmation and welcome before; now a new confirmation (double opt-in).
        let confirm = eventually(20, "a new confirmation", || async {
            app.sink
                .to(email)
                .into_iter()
                .skip(2)
                .find(|m| text_of(&m.bytes).contains("/confirm/"))
        })
        .await;
        assert!(
            app.status_of(email).await.is_some_and(|s| s != "active"),
            "{email}: not back until they confirm"
        );
        let link = link_in(&confirm.bytes, "/confirm/");
        assert_eq!(app.post_empty(&link).await.status(), 200);
        assert_eq!(bounce_state(store, email).await, (0.0, "active".into()));
        assert_eq!(unsubscribe_reason(store, email).await, None, "{email}");
    }
    let scoring: (Option<i64>, Option<i64>) = {
        use sqlx::Row;
        let row = sqlx::query(
            "SELECT bounce_raised_at, bounce_scored_day FROM subscribers WHERE email_key = $1",
        )
        .bind(ANA)
        .fetch_one(store.pool())
        .await
        .expect("ana");
        (row.get("bounce_raised_at"), row.get("bounce_scored_day"))
    };
    assert_eq!(scoring, (None, None), "the score starts again from nothing");

    // The next list mail reaches them both.
    clock.set(later + Duration::minutes(1));
    for email in [ANA, BEN] {
        eventually(30, "list mail after coming back", || async {
            app.sink
                .to(email)
                .iter()
                .any(|m| parse(&m.bytes).subject() == Some("After coming back"))
                .then_some(())
        })
        .await;
    }
}
