//! `bounces.imap_url` (issue 18): the return path's mailbox, on a real Dovecot.
//!
//! List mail goes to the test sink; reports about it (a DSN and a complaint built from
//! the delivered bytes, an auto-reply, a message that isn't a report) are put in the
//! mailbox with IMAP APPEND, as the provider's MTA would deliver them. harborlist reads
//! them, acts on each and moves each to its folder; the test reads the folders back over
//! IMAP. Both backends.

use chrono::{DateTime, Duration, Utc};
use harborlist::{clock::ManualClock, config::Settings, domain::TokenKey};

use crate::{
    announcements::announcement,
    both_backends,
    helpers::{
        Backend, Dovecot, Dsn, Received, TestApp, app, bounce_events, bounce_settings,
        bounce_state, counter, eventually, header, seed,
    },
};

both_backends!(
    each_message_does_what_it_says_and_goes_to_its_folder,
    a_wrong_password_reads_nothing_and_changes_nobody,
    idle_wakes_the_reader_when_a_report_arrives,
    a_forged_report_in_the_mailbox_changes_nothing,
    a_complaint_about_someone_who_already_left_is_kept_and_changes_nothing,
);

const ANA: &str = "ana@example.net";
const BEN: &str = "ben@example.org";
const CY: &str = "cy@example.com";
const T0: &str = "2027-03-01T15:00:00Z";
const SUBJECT: &str = "Spring trainings";
const DONE: &str = "harborlist/processed";
const UNKNOWN: &str = "harborlist/unknown";

fn at(s: &str) -> DateTime<Utc> {
    s.parse().expect("instant")
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("tests/fixtures/bounces/{name}")).expect("fixture")
}

/// An app reading `dovecot`'s mailbox (no listener), with ana, ben and cy on the list
/// and one list message delivered to each.
struct World {
    app: TestApp,
    dovecot: Dovecot,
}

impl World {
    async fn new(backend: Backend, tweak: impl FnOnce(&mut Settings) + Send + 'static) -> Self {
        Self::with_password(backend, crate::helpers::IMAP_PASSWORD, tweak).await
    }

    /// The same, with `password` in `bounces.imap_url`.
    async fn with_password(
        backend: Backend,
        password: &str,
        tweak: impl FnOnce(&mut Settings) + Send + 'static,
    ) -> Self {
        let dovecot = Dovecot::start().await;
        let url = dovecot.url_with(password);
        let clock = ManualClock::new(at(T0) + Duration::minutes(1));
        let app = app(backend)
            .clock(clock)
            .with(move |s| {
                crate::helpers::bounces_on(s);
                let b = bounce_settings(s);
                b.listen = None;
                b.imap_url = Some(url.into());
                b.poll = "1s".parse().expect("duration");
                s.announcements.push(announcement("m", at(T0), SUBJECT));
                tweak(s);
            })
            .spawn()
            .await;
        let key = TokenKey::parse(app.token_key()).expect("key");
        for email in [ANA, BEN, CY] {
            seed(&app.store, &key, email, "active").await;
        }
        app.sink.wait_for(3, 30).await;
        let world = Self { app, dovecot };
        crate::helpers::all_sent(&world.app.store).await;
        world
    }

    fn delivered(&self, email: &str) -> Received {
        self.app
            .sink
            .to(email)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("{email} got no list mail"))
    }

    /// Waits until the mailbox's INBOX is empty and `done` + `unknown` messages are filed.
    async fn filed(&self, done: usize, unknown: usize) {
        eventually(30, "the mailbox read and filed", || async {
            let inbox = self.dovecot.count("INBOX").await;
            let d = self.dovecot.count(DONE).await;
            let u = self.dovecot.count(UNKNOWN).await;
            (inbox == 0 && d == done && u == unknown).then_some(())
        })
        .await;
    }

    async fn metric(&self, name: &str) -> f64 {
        counter(self.app.metrics_url.as_deref().expect("metrics on"), name).await
    }
}

/// An RFC 5965 complaint (Yahoo's feedback loop, from the fixture) about `received`.
fn complaint(received: &Received, recipient: &str) -> Vec<u8> {
    let id = header(&received.bytes, "Message-ID").expect("a Message-ID");
    String::from_utf8(fixture("arf-complaint.eml"))
        .expect("text fixture")
        .replace(
            "trainings+b52-a41526b7c8d9e0f1@harborlist.example.org",
            &received.from,
        )
        .replace(
            "<hl.a41526b7c8d9e0f1.52@trainings.harborlist.example.org>",
            &id,
        )
        .replace("morgan@yahoo.com", recipient)
        .into_bytes()
}

async fn each_message_does_what_it_says_and_goes_to_its_folder(backend: Backend) {
    let w = World::new(backend, |_| {}).await;
    let ana = w.delivered(ANA);
    let ben = w.delivered(BEN);
    let dsn = Dsn::hard(
        &ana.from,
        ANA,
        &header(&ana.bytes, "Message-ID").expect("id"),
    )
    .bytes();
    let arf = complaint(&ben, BEN);
    let ooo = fixture("auto-reply-ooo.eml");
    let other = fixture("not-a-report.eml");
    let complaints = w.metric("harborlist_complaints_total").await;
    let filed = w
        .metric("harborlist_bounce_mailbox_messages_total{folder=\"processed\"}")
        .await;
    for message in [&dsn, &arf, &ooo, &other] {
        w.dovecot.append("INBOX", message).await;
    }
    w.filed(3, 1).await;

    // The DSN scored ana; the complaint unsubscribed ben; cy is untouched.
    assert_eq!(
        bounce_state(&w.app.store, ANA).await,
        (1.0, "active".into())
    );
    assert_eq!(bounce_state(&w.app.store, BEN).await.1, "unsubscribed");
    let reason: Option<String> =
        sqlx::query_scalar("SELECT unsubscribe_reason FROM subscribers WHERE email_key = $1")
            .bind(BEN)
            .fetch_one(w.app.store.pool())
            .await
            .expect("ben");
    assert_eq!(reason.as_deref(), Some("complaint"));
    assert_eq!(bounce_state(&w.app.store, CY).await, (0.0, "active".into()));
    let events = bounce_events(&w.app.store).await;
    let kinds: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| (e.source.as_str(), e.kind.as_str(), e.effect.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("imap", "hard", "scored"),
            ("imap", "complaint", "unsubscribed"),
            ("imap", "auto-reply", "ignored"),
            ("imap", "not-a-report", "ignored"),
        ],
        "each message is on record; the last two change no one"
    );

    // Nothing deleted, nothing changed: the folders hold the very bytes put in.
    let done = w.dovecot.messages(DONE).await.expect("the done folder");
    assert_eq!(done, [dsn.clone(), arf, ooo], "processed, in order");
    let unknown = w
        .dovecot
        .messages(UNKNOWN)
        .await
        .expect("the unknown folder");
    assert_eq!(unknown, [other]);
    // Other tests in this process count too: the metrics only ever grow by ours.
    assert!(w.metric("harborlist_complaints_total").await >= complaints + 1.0);
    assert!(
        w.metric("harborlist_bounce_mailbox_messages_total{folder=\"processed\"}")
            .await
            >= filed + 3.0
    );
    assert!(w.app.health.mailbox().up);

    // The same DSN delivered again (a provider retrying): filed, and counted once.
    w.dovecot.append("INBOX", &dsn).await;
    w.filed(4, 1).await;
    assert_eq!(
        bounce_state(&w.app.store, ANA).await,
        (1.0, "active".into())
    );
    let dsn_events = bounce_events(&w.app.store)
        .await
        .into_iter()
        .filter(|e| e.kind == "hard")
        .count();
    assert_eq!(dsn_events, 1);
}

async fn a_wrong_password_reads_nothing_and_changes_nobody(backend: Backend) {
    // One letter wrong, as typed into the config.
    let w = World::with_password(backend, "correct-horse-batery", |_| {}).await;
    let ana = w.delivered(ANA);
    let dsn = Dsn::hard(
        &ana.from,
        ANA,
        &header(&ana.bytes, "Message-ID").expect("id"),
    )
    .bytes();
    w.dovecot.append("INBOX", &dsn).await;
    let status = eventually(30, "the refused login noted", || async {
        let m = w.app.health.mailbox();
        (m.failures_in_a_row >= 1).then_some(m)
    })
    .await;
    assert!(!status.up);
    let error = status.last_error.expect("the error");
    assert!(
        error.contains("refused the login for bounces@harborlist.example.org")
            && error.contains("bounces.imap_url"),
        "names the login and the key: {error}"
    );
    assert!(!error.contains("batery"), "never the password: {error}");
    assert_eq!(
        w.dovecot.count("INBOX").await,
        1,
        "the report is still there"
    );
    assert_eq!(w.dovecot.messages(DONE).await, None, "no folder was made");
    assert_eq!(bounce_events(&w.app.store).await, []);
    for email in [ANA, BEN, CY] {
        assert_eq!(
            bounce_state(&w.app.store, email).await,
            (0.0, "active".into()),
            "{email}"
        );
    }
}

async fn idle_wakes_the_reader_when_a_report_arrives(backend: Backend) {
    // An hour between looks: only IDLE can bring the report in within the test.
    let w = World::new(backend, |s| {
        bounce_settings(s).poll = "1h".parse().expect("duration")
    })
    .await;
    eventually(30, "the reader logged in and made its folders", || async {
        (w.app.health.mailbox().up && w.dovecot.messages(DONE).await.is_some()).then_some(())
    })
    .await;
    let ana = w.delivered(ANA);
    let dsn = Dsn::hard(
        &ana.from,
        ANA,
        &header(&ana.bytes, "Message-ID").expect("id"),
    )
    .bytes();
    w.dovecot.append("INBOX", &dsn).await;
    w.filed(1, 0).await;
    assert_eq!(
        bounce_state(&w.app.store, ANA).await,
        (1.0, "active".into())
    );
}

async fn a_forged_report_in_the_mailbox_changes_nothing(backend: Backend) {
    let w = World::new(backend, |_| {}).await;
    let unmatched = w.metric("harborlist_reports_unmatched_total").await;
    let ana = w.delivered(ANA);
    // A made-up tag on the right return path, and a made-up Message-ID in our shape.
    let (local, domain) = ana.from.split_once('@').expect("an address");
    let forged_tag = format!(
        "{}-0000000000000000@{domain}",
        local.rsplit_once('-').expect("a tag").0
    );
    let forged = Dsn::hard(
        &forged_tag,
        ANA,
        "<hl.0123456789abcdef.1@trainings.harborlist.example.org>",
    )
    .bytes();
    w.dovecot.append("INBOX", &forged).await;
    w.filed(1, 0).await;
    assert_eq!(
        bounce_state(&w.app.store, ANA).await,
        (0.0, "active".into())
    );
    let effects: Vec<String> = bounce_events(&w.app.store)
        .await
        .into_iter()
        .map(|e| e.effect)
        .collect();
    assert_eq!(effects, ["unmatched"]);
    assert!(w.metric("harborlist_reports_unmatched_total").await >= unmatched + 1.0);
}

async fn a_complaint_about_someone_who_already_left_is_kept_and_changes_nothing(backend: Backend) {
    let w = World::new(backend, |_| {}).await;
    let ben = w.delivered(BEN);
    sqlx::query("UPDATE subscribers SET status = 'unsubscribed' WHERE email_key = $1")
        .bind(BEN)
        .execute(w.app.store.pool())
        .await
        .expect("ben leaves by his own link");
    w.dovecot.append("INBOX", &complaint(&ben, BEN)).await;
    w.filed(1, 0).await;
    let events = bounce_events(&w.app.store).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].kind.as_str(), events[0].effect.as_str()),
        ("complaint", "ignored"),
        "on record, matched, but nobody to take off"
    );
    assert!(events[0].subscriber_id.is_some());
    let reason: Option<String> =
        sqlx::query_scalar("SELECT unsubscribe_reason FROM subscribers WHERE email_key = $1")
            .bind(BEN)
            .fetch_one(w.app.store.pool())
            .await
            .expect("ben");
    assert_eq!(
        reason, None,
        "his own leaving is not rewritten as a complaint"
    );
}

fn check_mailbox(url: &str) -> std::process::Output {
    crate::cli::harborlist()
        .args(["check", "--mailbox"])
        .env("HARBORLIST__BOUNCES__IMAP_URL", url)
        .output()
        .expect("run harborlist")
}

#[tokio::test]
async fn check_mailbox_logs_in_looks_and_changes_nothing() {
    let dovecot = Dovecot::start().await;
    for name in ["postfix-dsn.eml", "not-a-report.eml"] {
        dovecot.append("INBOX", &fixture(name)).await;
    }
    let out = check_mailbox(&dovecot.url());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = format!(
        "ok   bounce mailbox INBOX of bounces@harborlist.example.org on 127.0.0.1:{} (2 messages waiting; new mail is read as it arrives (IDLE))",
        dovecot.port
    );
    assert!(stdout.contains(&expected), "{stdout}");
    assert_eq!(dovecot.count("INBOX").await, 2, "nothing moved");
    assert_eq!(dovecot.messages(DONE).await, None, "no folder made");

    let out = check_mailbox(&dovecot.url_with("correct-horse-batery"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "FAIL bounce mailbox: the server refused the login for bounces@harborlist.example.org"
        ) && stderr.contains("check the user and password in bounces.imap_url"),
        "{stderr}"
    );
    assert!(!stderr.contains("batery"), "never the password: {stderr}");

    // Nothing listens on the port any more: the connection is named, not the password.
    let port = dovecot.port;
    drop(dovecot);
    let out = check_mailbox(&format!(
        "imap://bounces%40harborlist.example.org:pw@127.0.0.1:{port}/INBOX"
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot connect to 127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[test]
fn check_mailbox_without_a_mailbox_says_which_key_to_set() {
    let out = crate::cli::harborlist()
        .args(["check", "--mailbox"])
        .output()
        .expect("run harborlist");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("set bounces.imap_url"), "{stderr}");
}

fn test_ca() -> harborlist::net::RootCertStore {
    use tokio_rustls::rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = harborlist::net::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter("src/mail/smtp/testdata/ca.pem").expect("ca.pem") {
        roots
            .add(cert.expect("a certificate"))
            .expect("the test CA");
    }
    roots
}

fn url(text: &str) -> harborlist::config::ImapUrl {
    harborlist::config::ImapUrl::parse(text).expect("a mailbox URL")
}

#[tokio::test]
async fn starttls_and_imaps_verify_the_servers_certificate() {
    let dovecot = Dovecot::start_with_tls().await;
    let tls_port = dovecot.tls_port.expect("imaps port");
    let login = "bounces%40harborlist.example.org:correct-horse-battery@127.0.0.1";
    let starttls = format!("imap://{login}:{}/INBOX?tls=required", dovecot.port);
    let imaps = format!("imaps://{login}:{tls_port}/INBOX");
    // Trusting the certificate's CA: both log in and look.
    for text in [&starttls, &imaps] {
        let found = harborlist::bounce::imap::check_mailbox_trusting(url(text), test_ca())
            .await
            .unwrap_or_else(|e| panic!("{text}: {e}\n{}", dovecot.log()));
        assert_eq!(found.messages, 0);
    }
    // As deployed (the public roots only), the test CA is not trusted: refused before the
    // password is sent, and said so.
    for text in [&starttls, &imaps] {
        let out = check_mailbox(text);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("FAIL bounce mailbox: TLS with 127.0.0.1:")
                && stderr.contains("certificate"),
            "{stderr}"
        );
    }
    let logins = dovecot.log().matches("Login: user=").count();
    assert_eq!(
        logins,
        2,
        "only the two trusted sessions logged in:\n{}",
        dovecot.log()
    );
}

#[tokio::test]
async fn tls_required_refuses_a_server_without_starttls() {
    let dovecot = Dovecot::start().await;
    let text = format!(
        "imap://bounces%40harborlist.example.org:correct-horse-battery@127.0.0.1:{}/INBOX?tls=required",
        dovecot.port
    );
    let out = check_mailbox(&text);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("does not offer STARTTLS, which ?tls=required asks for"),
        "{stderr}"
    );
}
