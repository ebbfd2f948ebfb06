//! Relay faults are not the subscriber's fault (issue 15). Against scripted relays over
//! real TCP: a wrong password (535 at AUTH), a refused sender (554 at MAIL FROM, on a relay
//! that pipelines), a relay that never speaks, and `tls=required` against a relay without
//! STARTTLS. With each, three mailings leave every subscriber active and every delivery
//! queued without an attempt, while `/metrics`, `status` and the log say what is wrong.
//! Once the relay is fixed, each subscriber gets each message exactly once. And only
//! what is about the address counts against it: a 5.7.1 at RCPT fails the message and
//! nothing more, three 5.1.1s make the address bouncing.
//!
//! The relay-fault cases run the real binary: `harborlist_relay_up` is a process-wide
//! gauge, and in-process apps of tests running alongside would share it.

use chrono::{SecondsFormat, Utc};
use harborlist::{domain::TokenKey, store::Store};
use sqlx::Row;

use crate::{
    both_backends,
    cli::harborlist,
    helpers::{
        Backend, Daemon, DaemonSetup, MailSink, Script, ScriptedRelay, TestDb, app, assert_success,
        eventually, parse, seed,
    },
};

both_backends!(
    a_wrong_password_marks_no_one_and_mail_goes_once_the_relay_takes_it,
    a_refused_sender_marks_no_one_and_mail_goes_once_the_relay_takes_it,
    a_silent_relay_marks_no_one_and_mail_goes_once_it_answers,
    tls_required_without_starttls_marks_no_one_and_mail_goes_once_fixed,
    a_policy_rejection_at_rcpt_fails_the_message_but_not_the_address,
    three_unknown_user_refusals_at_rcpt_make_an_address_bouncing,
);

const PEOPLE: [&str; 3] = [
    "ana@example.org",
    "ben@example.org",
    "cy.d@mail.example.net",
];
const SUBJECTS: [&str; 3] = ["Relay fault one", "Relay fault two", "Relay fault three"];

/// How the relay gets fixed once the fault has been seen.
enum Fix {
    /// The same port is answered by the capturing sink.
    Sink,
    /// The same port is answered by a relay that takes the configured password (mailin,
    /// behind [`MailSink`], offers AUTH only over TLS).
    RelayAcceptingAuth,
    /// The operator corrects `mail.smtp_url` and restarts the daemon; the sink answers.
    RestartWithUrl(String),
}

struct Fault {
    script: Script,
    url: String,
    /// How `last_error` and the log name the stage.
    stage: &'static str,
    fix: Fix,
}

async fn a_wrong_password_marks_no_one_and_mail_goes_once_the_relay_takes_it(backend: Backend) {
    let port = MailSink::reserve_port();
    let script = Script {
        auth: "535 5.7.8 Authentication credentials invalid".into(),
        ..Script::default()
    };
    let url = format!("smtp://mailer:wr0ng-s3cret@127.0.0.1:{port}");
    let log = relay_fault_harms_no_one(
        backend,
        port,
        Fault {
            script,
            url,
            stage: "AUTH: 535 5.7.8 Authentication credentials invalid",
            fix: Fix::RelayAcceptingAuth,
        },
    )
    .await;
    assert!(
        !log.contains("wr0ng-s3cret"),
        "the password reached the log:\n{log}"
    );
    assert!(
        log.contains(&format!("smtp://mailer:***@127.0.0.1:{port}")),
        "the log names the relay with its password hidden:\n{log}"
    );
}

async fn a_refused_sender_marks_no_one_and_mail_goes_once_the_relay_takes_it(backend: Backend) {
    let port = MailSink::reserve_port();
    let script = Script {
        mail: "554 5.7.1 <trainings@harborlist.example.org>: Sender address rejected".into(),
        ..Script::default()
    };
    let log = relay_fault_harms_no_one(
        backend,
        port,
        Fault {
            script,
            url: format!("smtp://127.0.0.1:{port}"),
            stage: "MAIL FROM: 554 5.7.1 <t…@h…org>: Sender address rejected",
            fix: Fix::Sink,
        },
    )
    .await;
    assert!(
        !log.contains("trainings@harborlist.example.org"),
        "an address echoed by the relay reached the log whole:\n{log}"
    );
}

async fn a_silent_relay_marks_no_one_and_mail_goes_once_it_answers(backend: Backend) {
    let port = MailSink::reserve_port();
    let script = Script {
        silent: true,
        ..Script::default()
    };
    relay_fault_harms_no_one(
        backend,
        port,
        Fault {
            script,
            url: format!("smtp://127.0.0.1:{port}"),
            stage: "greeting: no answer from the relay within 1s",
            fix: Fix::Sink,
        },
    )
    .await;
}

async fn tls_required_without_starttls_marks_no_one_and_mail_goes_once_fixed(backend: Backend) {
    let port = MailSink::reserve_port();
    relay_fault_harms_no_one(
        backend,
        port,
        Fault {
            script: Script::default(),
            url: format!("smtp://127.0.0.1:{port}?tls=required"),
            stage: "STARTTLS: ",
            fix: Fix::RestartWithUrl(format!("smtp://127.0.0.1:{port}")),
        },
    )
    .await;
}

/// Runs one relay fault through three mailings and the fix; returns the daemon's log.
async fn relay_fault_harms_no_one(backend: Backend, port: u16, fault: Fault) -> String {
    let db = TestDb::new(backend).await;
    let relay = ScriptedRelay::start_on(port, fault.script).await;
    let setup = DaemonSetup::new(&db.url, &fault.url, "[log]\nformat = \"json\"\n")
        .env("HARBORLIST__MAIL__SMTP_TIMEOUT", "1s")
        .env("HARBORLIST__MAIL__POOL_SIZE", "2");
    let store = Store::connect(&db.url, 2).await.expect("store");
    let key = TokenKey::parse(&setup.token_key).expect("key");
    for email in PEOPLE {
        seed(&store, &key, email, "active").await;
    }
    setup.write_announcements(&announcements(1));
    let daemon = setup.launch().await;

    eventually(30, "three mailings fanned out to everyone", || async {
        (deliveries(&store).await.len() == SUBJECTS.len() * PEOPLE.len()).then_some(())
    })
    .await;
    // The sender goes on trying, pausing between tries, with every delivery in the queue.
    let seen = relay.sessions();
    eventually(30, "two more tries at the relay", || async {
        (relay.sessions() >= seen + 2).then_some(())
    })
    .await;
    eventually(10, "every delivery queued without an attempt", || async {
        let rows = deliveries(&store).await;
        rows.iter()
            .all(|d| d.state == "queued" && d.attempts == 0)
            .then_some(())
    })
    .await;
    assert!(
        deliveries(&store).await.iter().any(|d| d
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("relay fault at"))),
        "a delivery that went to the relay carries its answer"
    );
    assert_eq!(
        subscribers(&store).await,
        PEOPLE
            .map(|e| (e.to_owned(), "active".to_owned(), 0))
            .to_vec(),
        "nobody is held responsible for the relay"
    );
    assert_eq!(relay_up(&daemon).await, Some(0.0));
    let status = status_json(&db.url, &setup.token_key);
    assert_eq!(status["relay"]["state"], "failing", "{status}");
    let since = status["relay"]["since"].as_str().expect("since");
    chrono::DateTime::parse_from_rfc3339(since).expect("since is RFC 3339");
    let last_error = status["relay"]["last_error"].as_str().expect("last_error");
    assert!(last_error.starts_with(fault.stage), "{last_error}");
    let text = status_text(&db.url, &setup.token_key);
    assert!(
        text.contains("Mail relay: failing since ")
            && text.contains(&format!(" at {}", fault.stage)),
        "{text}"
    );

    let sessions = relay.sessions();
    relay.stop().await;
    let fixed = std::time::Instant::now();
    let (daemon, arrivals) = fix(fault.fix, port, daemon, &setup).await;
    eventually(30, "every delivery sent", || async {
        let rows = deliveries(&store).await;
        rows.iter().all(|d| d.state == "sent").then_some(())
    })
    .await;
    eprintln!(
        "[{backend:?} {}] sessions at the failing relay: {sessions}; all sent {:?} after the fix",
        fault.stage,
        fixed.elapsed()
    );
    let arrived = arrivals.get();
    for email in PEOPLE {
        for subject in SUBJECTS {
            let n = arrived
                .iter()
                .filter(|(to, s)| to == email && s == subject)
                .count();
            assert_eq!(n, 1, "{email} got {subject:?} {n} times: {arrived:?}");
        }
    }
    assert_eq!(arrived.len(), PEOPLE.len() * SUBJECTS.len(), "{arrived:?}");
    assert_eq!(relay_up(&daemon).await, Some(1.0));
    let status = status_json(&db.url, &setup.token_key);
    assert_eq!(status["relay"]["state"], "ok", "{status}");
    assert!(status_text(&db.url, &setup.token_key).contains("Mail relay: ok"));
    let mut log = daemon.log();
    if let Some(first) = arrivals.first_log {
        log = first + &log;
    } else {
        assert!(log.contains("the mail relay takes mail again"), "{log}");
    }
    let errors = log
        .lines()
        .filter(|l| l.contains("\"ERROR\"") && l.contains("the mail relay is failing at"))
        .count();
    assert_eq!(
        errors, 1,
        "one ERROR line when the relay starts failing:\n{log}"
    );
    assert!(
        log.contains("mail.smtp_url") && log.contains(fault.stage),
        "the ERROR line names the setting, the stage and the reply:\n{log}"
    );
    log
}

/// What arrived once the relay was fixed, wherever it was captured.
struct Arrivals {
    sink: Option<MailSink>,
    relay: Option<ScriptedRelay>,
    /// The log of the daemon that saw the fault, if the fix replaced it.
    first_log: Option<String>,
}

impl Arrivals {
    /// (recipient, subject) of each message.
    fn get(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(sink) = &self.sink {
            for m in sink.messages() {
                let subject = parse(&m.bytes).subject().unwrap_or_default().to_owned();
                out.extend(m.to.iter().map(|t| (t.to_lowercase(), subject.clone())));
            }
        }
        if let Some(relay) = &self.relay {
            for m in relay.accepted() {
                out.extend(m.to.iter().map(|t| (t.clone(), m.subject.clone())));
            }
        }
        out
    }
}

async fn fix(fix: Fix, port: u16, daemon: Daemon, setup: &DaemonSetup) -> (Daemon, Arrivals) {
    match fix {
        Fix::Sink => {
            let sink = MailSink::start_on_port(port);
            let arrivals = Arrivals {
                sink: Some(sink),
                relay: None,
                first_log: None,
            };
            (daemon, arrivals)
        }
        Fix::RelayAcceptingAuth => {
            let relay = ScriptedRelay::start_on(port, Script::default()).await;
            let arrivals = Arrivals {
                sink: None,
                relay: Some(relay),
                first_log: None,
            };
            (daemon, arrivals)
        }
        Fix::RestartWithUrl(url) => {
            let first_log = daemon.log();
            assert!(daemon.stop().await.success());
            let sink = MailSink::start_on_port(port);
            let daemon = setup
                .clone()
                .env("HARBORLIST__MAIL__SMTP_URL", &url)
                .launch()
                .await;
            let arrivals = Arrivals {
                sink: Some(sink),
                relay: None,
                first_log: Some(first_log),
            };
            (daemon, arrivals)
        }
    }
}

async fn a_policy_rejection_at_rcpt_fails_the_message_but_not_the_address(backend: Backend) {
    let (app, relay) = rcpt_refusal(
        backend,
        "550 5.7.1 <ana@example.org>: Recipient address rejected: policy",
    )
    .await;
    let rows = settled(&app.store).await;
    for d in rows.iter().filter(|d| d.email == "ana@example.org") {
        assert_eq!((d.state.as_str(), d.attempts), ("failed", 1), "{d:?}");
        let error = d.last_error.as_deref().unwrap_or_default();
        assert!(
            error.contains("RCPT TO") && error.contains("5.7.1"),
            "the reason is kept: {error}"
        );
    }
    assert!(
        rows.iter()
            .filter(|d| d.email != "ana@example.org")
            .all(|d| d.state == "sent")
    );
    assert_eq!(relay.accepted().len(), 2 * SUBJECTS.len());
    assert_eq!(
        subscribers(&app.store).await[0],
        ("ana@example.org".to_owned(), "active".to_owned(), 0),
        "three policy rejections do not count against the address"
    );
}

async fn three_unknown_user_refusals_at_rcpt_make_an_address_bouncing(backend: Backend) {
    let (app, relay) = rcpt_refusal(
        backend,
        "550 5.1.1 <ana@example.org>: Recipient address rejected: User unknown",
    )
    .await;
    let rows = settled(&app.store).await;
    assert!(
        rows.iter()
            .filter(|d| d.email == "ana@example.org")
            .all(|d| d.state == "failed" && d.attempts == 1),
        "{rows:?}"
    );
    assert_eq!(relay.accepted().len(), 2 * SUBJECTS.len());
    assert_eq!(
        subscribers(&app.store).await[0],
        ("ana@example.org".to_owned(), "bouncing".to_owned(), 3),
        "three refusals of the address in a row"
    );
    let events = crate::helpers::bounce_events(&app.store).await;
    assert_eq!(
        events
            .iter()
            .map(|e| (e.source.as_str(), e.kind.as_str(), e.status.as_deref()))
            .collect::<Vec<_>>(),
        [("send", "hard", Some("5.1.1")); 3],
        "a report event for each refusal: {events:?}"
    );
}

/// Three mailings to three subscribers through a pipelining relay that refuses
/// ana@example.org at RCPT with `refusal`.
async fn rcpt_refusal(backend: Backend, refusal: &str) -> (crate::helpers::TestApp, ScriptedRelay) {
    let port = MailSink::reserve_port();
    let script = Script {
        rcpt: [("ana@example.org".to_owned(), refusal.to_owned())].into(),
        ..Script::default()
    };
    let relay = ScriptedRelay::start_on(port, script).await;
    let send_at = Utc::now() + chrono::Duration::seconds(2);
    let app = app(backend)
        .smtp_port(port)
        .with(move |s| {
            for (i, subject) in SUBJECTS.iter().enumerate() {
                s.announcements.push(crate::announcements::announcement(
                    &format!("fault-{i}"),
                    send_at,
                    subject,
                ));
            }
        })
        .spawn()
        .await;
    let key = TokenKey::parse(
        app.settings
            .security
            .token_key
            .as_ref()
            .map(harborlist::domain::Secret::expose)
            .unwrap(),
    )
    .unwrap();
    for email in PEOPLE {
        seed(&app.store, &key, email, "active").await;
    }
    (app, relay)
}

/// Waits until all nine deliveries have their final state, and returns them.
async fn settled(store: &Store) -> Vec<Delivery> {
    eventually(30, "every delivery settled", || async {
        let rows = deliveries(store).await;
        (rows.len() == PEOPLE.len() * SUBJECTS.len()
            && rows
                .iter()
                .all(|d| d.state == "sent" || d.state == "failed"))
        .then_some(rows)
    })
    .await
}

fn announcements(in_secs: i64) -> String {
    let at = (Utc::now() + chrono::Duration::seconds(in_secs))
        .to_rfc3339_opts(SecondsFormat::Secs, true);
    SUBJECTS
        .iter()
        .enumerate()
        .map(|(i, subject)| {
            format!(
                "[[announcements]]\nid = \"fault-{i}\"\nsend_at = \"{at}\"\nsubject = \"{subject}\"\nmarkdown = \"Relay fault test {i}.\"\n\n"
            )
        })
        .collect()
}

#[derive(Debug)]
struct Delivery {
    email: String,
    state: String,
    attempts: i64,
    last_error: Option<String>,
}

async fn deliveries(store: &Store) -> Vec<Delivery> {
    // On PostgreSQL, sent messages are `sending` until the sender folds its sent log.
    store.settle_sent().await.expect("fold the sent log");
    sqlx::query(
        "SELECT s.email, d.state, d.attempts, d.last_error FROM deliveries d
         JOIN subscribers s ON s.id = d.subscriber_id JOIN mailings m ON m.id = d.mailing_id
         WHERE m.key LIKE 'announcement:%' ORDER BY s.email, m.key",
    )
    .fetch_all(store.pool())
    .await
    .expect("deliveries")
    .iter()
    .map(|r| Delivery {
        email: r.get("email"),
        state: r.get("state"),
        attempts: r.get("attempts"),
        last_error: r.get("last_error"),
    })
    .collect()
}

/// (email, status, bounce score, whole points) of every subscriber, by email.
async fn subscribers(store: &Store) -> Vec<(String, String, i64)> {
    sqlx::query("SELECT email, status, bounce_score FROM subscribers ORDER BY email")
        .fetch_all(store.pool())
        .await
        .expect("subscribers")
        .iter()
        .map(|r| {
            (
                r.get("email"),
                r.get("status"),
                r.get::<f64, _>("bounce_score") as i64,
            )
        })
        .collect()
}

/// `harborlist_relay_up` as the daemon's `/metrics` shows it.
async fn relay_up(daemon: &Daemon) -> Option<f64> {
    let body = reqwest::get(&daemon.metrics)
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix("harborlist_relay_up "))
        .and_then(|v| v.trim().parse().ok())
}

fn status_json(db_url: &str, token_key: &str) -> serde_json::Value {
    let out = harborlist()
        .args(["status", "--json"])
        .env("HARBORLIST__DATABASE__URL", db_url)
        .env("HARBORLIST__SECURITY__TOKEN_KEY", token_key)
        .output()
        .expect("status --json");
    assert_success(&out);
    serde_json::from_slice(&out.stdout).expect("status --json prints JSON")
}

fn status_text(db_url: &str, token_key: &str) -> String {
    let out = harborlist()
        .arg("status")
        .env("HARBORLIST__DATABASE__URL", db_url)
        .env("HARBORLIST__SECURITY__TOKEN_KEY", token_key)
        .output()
        .expect("status");
    assert_success(&out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}
