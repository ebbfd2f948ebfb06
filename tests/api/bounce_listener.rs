//! `bounces.listen` (issue 18): the SMTP listener the site's MTA hands bounces to, and what
//! a report does once it is in.
//!
//! List mail goes to the test sink; its envelope sender (the VERP address) and Message-ID
//! are read from the delivered bytes, an RFC 3464 DSN is built for it and handed back to
//! the listener over real TCP (lettre, or a raw session to see each reply). The injected
//! clock moves the days. Both backends.

use chrono::{DateTime, Duration, Utc};
use harborlist::{clock::ManualClock, config::Settings, domain::TokenKey};
use sqlx::Row;

use crate::{
    announcements::announcement,
    both_backends,
    helpers::{
        Backend, BounceEvent, Dsn, RawSmtp, Received, TestApp, app, bounce_events, bounce_settings,
        bounce_state, bounces_on, counter, eventually, hand_over, header, parse, reply_code, seed,
        subscriber_id,
    },
};

both_backends!(
    the_listener_takes_reports_for_the_return_path_and_refuses_everything_else,
    a_message_over_max_size_is_refused_and_nothing_is_recorded,
    garbage_gets_5xx_and_the_session_goes_on,
    a_round_trip_makes_a_dead_address_bouncing_and_it_gets_no_more_list_mail,
    two_reports_on_one_day_score_once_and_the_next_day_scores_again,
    a_score_older_than_stale_after_starts_again,
    a_soft_bounce_adds_soft_weight,
    a_policy_rejection_changes_no_score_and_names_the_domain,
    forged_reports_change_nothing,
    the_same_report_handed_over_twice_counts_once,
    a_store_failure_answers_451_and_the_retry_is_recorded,
    a_stop_finishes_the_message_in_flight_then_closes,
    a_null_float_then_a_float_bind_on_one_connection,
    swaks_hands_a_report_over_and_is_refused_elsewhere,
);

const RETURN_PATH: &str = "trainings@harborlist.example.org";
const ANA: &str = "ana@example.net";
const BEN: &str = "ben@example.org";
const T0: &str = "2027-03-01T15:00:00Z";
const SUBJECTS: [&str; 3] = ["List mail one", "List mail two", "List mail three"];

fn at(s: &str) -> DateTime<Utc> {
    s.parse().expect("instant")
}

/// An app with the listener on, ana and ben on the list, and the three list messages of
/// [`SUBJECTS`] (due at [`T0`]) delivered to both; the clock a minute after T0.
struct World {
    app: TestApp,
    clock: ManualClock,
    port: u16,
}

impl World {
    async fn new(backend: Backend, tweak: impl FnOnce(&mut Settings) + Send + 'static) -> Self {
        let clock = ManualClock::new(at(T0) + Duration::minutes(1));
        let app = app(backend)
            .clock(clock.clone())
            .with(move |s| {
                bounces_on(s);
                for (i, subject) in SUBJECTS.iter().enumerate() {
                    s.announcements
                        .push(announcement(&format!("m{i}"), at(T0), subject));
                }
                tweak(s);
            })
            .spawn()
            .await;
        let key = TokenKey::parse(app.token_key()).expect("key");
        for email in [ANA, BEN] {
            seed(&app.store, &key, email, "active").await;
        }
        let port = app.bounce_port.expect("bounces.listen is bound");
        let world = Self { app, clock, port };
        world.app.sink.wait_for(2 * SUBJECTS.len(), 30).await;
        crate::helpers::all_sent(&world.app.store).await;
        world
    }

    /// What `email` got with `subject`.
    fn delivered(&self, email: &str, subject: &str) -> Received {
        self.app
            .sink
            .to(email)
            .into_iter()
            .find(|m| parse(&m.bytes).subject() == Some(subject))
            .unwrap_or_else(|| panic!("{email} got no {subject:?}"))
    }

    /// A hard-bounce DSN for what `email` got with `subject`, handed to the listener at
    /// the message's envelope sender; panics if it is not taken.
    async fn bounce(&self, email: &str, subject: &str) -> Vec<u8> {
        let m = self.delivered(email, subject);
        let id = message_id(&m);
        let dsn = Dsn::hard(&m.from, email, &id).bytes();
        hand_over(self.port, &[&m.from], &dsn)
            .await
            .expect("the listener takes the report");
        dsn
    }

    async fn state(&self, email: &str) -> (f64, String) {
        bounce_state(&self.app.store, email).await
    }

    async fn events(&self) -> Vec<BounceEvent> {
        bounce_events(&self.app.store).await
    }

    async fn effects(&self) -> Vec<String> {
        self.events().await.into_iter().map(|e| e.effect).collect()
    }
}

fn message_id(m: &Received) -> String {
    header(&m.bytes, "Message-ID").expect("a Message-ID")
}

fn delivery_of(verp: &str) -> i64 {
    verp.split_once("+b")
        .and_then(|(_, rest)| rest.split_once('-'))
        .and_then(|(id, _)| id.parse().ok())
        .unwrap_or_else(|| panic!("not a VERP address: {verp}"))
}

async fn the_listener_takes_reports_for_the_return_path_and_refuses_everything_else(
    backend: Backend,
) {
    let w = World::new(backend, |_| {}).await;
    let m = w.delivered(ANA, SUBJECTS[0]);
    assert!(
        m.from.starts_with("trainings+b") && m.from.ends_with("@harborlist.example.org"),
        "list mail leaves with the VERP return path: {}",
        m.from
    );
    // With lettre, to the VERP address: taken and recorded.
    w.bounce(ANA, SUBJECTS[0]).await;
    let events = w.events().await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].source.as_str(), events[0].kind.as_str()),
        ("listener", "hard")
    );
    assert_eq!(events[0].delivery_id, Some(delivery_of(&m.from)));
    // To the return path itself: taken too.
    let dsn = Dsn::hard(RETURN_PATH, ANA, "<nothing@example.net>").bytes();
    hand_over(w.port, &[RETURN_PATH], &dsn)
        .await
        .expect("the bare return path");
    assert_eq!(w.events().await.len(), 2);
    // Anyone else: 550, with lettre and on the wire; it never relays.
    for outside in [
        "someone@example.org",
        "trainings@other.example",
        "trainingsx@harborlist.example.org",
        "bob+trainings@harborlist.example.org",
    ] {
        let e = hand_over(w.port, &[outside], &dsn)
            .await
            .expect_err("an address outside the pattern is refused");
        assert_eq!(reply_code(&e).as_deref(), Some("550"), "{outside}: {e}");
    }
    let (mut smtp, greeting) = RawSmtp::connect(w.port).await;
    assert!(greeting.starts_with("220 "), "{greeting}");
    let ehlo = smtp.cmd("EHLO mx.example.org").await;
    for feature in [
        "250-SIZE 1048576",
        "8BITMIME",
        "PIPELINING",
        "250 ENHANCEDSTATUSCODES",
    ] {
        assert!(ehlo.contains(feature), "{ehlo}");
    }
    assert!(smtp.cmd("MAIL FROM:<>").await.starts_with("250 2.1.0"));
    let refused = smtp.cmd("RCPT TO:<someone@example.org>").await;
    assert!(refused.starts_with("550 5.1.1 "), "{refused}");
    let refused = smtp.cmd("RCPT TO:<trainings@other.example>").await;
    assert!(refused.starts_with("550 5.1.1 "), "{refused}");
    let data = smtp.cmd("DATA").await;
    assert!(
        data.starts_with("503 5.5.1"),
        "no accepted recipient: {data}"
    );
    let ok = smtp
        .cmd("RCPT TO:<TRAININGS+anything@Harborlist.Example.Org>")
        .await;
    assert!(ok.starts_with("250 2.1.5"), "case doesn't matter: {ok}");
    assert!(smtp.cmd("RSET").await.starts_with("250"));
    assert!(smtp.cmd("QUIT").await.starts_with("221"));
    assert_eq!(w.events().await.len(), 2, "refused mail recorded nothing");
}

async fn a_message_over_max_size_is_refused_and_nothing_is_recorded(backend: Backend) {
    let w = World::new(backend, |s| bounce_settings(s).max_size = 4096).await;
    let m = w.delivered(ANA, SUBJECTS[0]);
    let mut dsn = Dsn::hard(&m.from, ANA, &message_id(&m)).bytes();
    let padding = format!("X-Padding: {}\r\n", "p".repeat(70)).repeat(60);
    dsn.splice(0..0, padding.into_bytes());
    assert!(dsn.len() > 4096);
    let e = hand_over(w.port, &[&m.from], &dsn)
        .await
        .expect_err("too big");
    assert_eq!(reply_code(&e).as_deref(), Some("552"), "{e}");
    // Announced with SIZE=, it is refused before any byte of it is sent.
    let (mut smtp, _) = RawSmtp::connect(w.port).await;
    assert!(smtp.cmd("EHLO mx").await.contains("SIZE 4096"));
    let refused = smtp.cmd("MAIL FROM:<> SIZE=5000").await;
    assert!(refused.starts_with("552 5.3.4"), "{refused}");
    // Sent anyway: read to the dot, refused, and the session goes on.
    assert!(smtp.cmd("MAIL FROM:<>").await.starts_with("250"));
    assert!(
        smtp.cmd(&format!("RCPT TO:<{}>", m.from))
            .await
            .starts_with("250")
    );
    assert!(smtp.cmd("DATA").await.starts_with("354"));
    smtp.send(&dsn).await;
    let refused = smtp.cmd(".").await;
    assert!(
        refused.starts_with("552 5.3.4 Message too big"),
        "{refused}"
    );
    assert!(smtp.cmd("NOOP").await.starts_with("250"));
    assert_eq!(w.events().await, [], "nothing recorded");
    assert_eq!(w.state(ANA).await, (0.0, "active".into()));
    // Within the limit, the same report is taken.
    let small = Dsn::hard(&m.from, ANA, &message_id(&m)).bytes();
    hand_over(w.port, &[&m.from], &small)
        .await
        .expect("within the limit");
    assert_eq!(w.state(ANA).await, (1.0, "active".into()));
}

async fn garbage_gets_5xx_and_the_session_goes_on(backend: Backend) {
    let w = World::new(backend, |_| {}).await;
    let (mut smtp, _) = RawSmtp::connect(w.port).await;
    let before_ehlo = smtp.cmd("MAIL FROM:<>").await;
    assert!(before_ehlo.starts_with("503"), "{before_ehlo}");
    for (line, code) in [
        ("GET / HTTP/1.1", "500"),
        ("\u{7}\u{1b}[2J", "500"),
        ("EXPN staff", "502"),
        ("STARTTLS", "502"),
        ("EHLO", "501"),
        ("HELO mx", "250"),
        ("RCPT TO:<trainings@harborlist.example.org>", "503"),
        ("MAIL FROM:<> RET=HDRS", "501"),
        ("MAIL FROM:<>", "250"),
        ("MAIL FROM:<>", "503"),
        ("RCPT TO:<broken", "501"),
        ("VRFY root", "252"),
    ] {
        let reply = smtp.cmd(line).await;
        assert!(reply.starts_with(code), "{line:?} → {reply}");
    }
    // Bytes that aren't UTF-8, and a line far over the cap.
    smtp.send(b"\xff\xfe\xfd MAIL\r\n").await;
    assert!(smtp.reply().await.starts_with("500"));
    let long = smtp.cmd(&format!("NOOP {}", "x".repeat(10_000))).await;
    assert!(long.starts_with("500 5.5.2"), "{long}");
    // Pipelined: three commands in one write, three replies in order.
    smtp.send(b"RSET\r\nNOOP\r\nMAIL FROM:<>\r\n").await;
    for _ in 0..3 {
        assert!(smtp.reply().await.starts_with("250"));
    }
    // Still a working session: a report goes through it.
    let m = w.delivered(ANA, SUBJECTS[0]);
    assert!(
        smtp.cmd(&format!("RCPT TO:<{}>", m.from))
            .await
            .starts_with("250")
    );
    assert!(smtp.cmd("DATA").await.starts_with("354"));
    let dsn = Dsn::hard(&m.from, ANA, &message_id(&m)).bytes();
    let stuffed = String::from_utf8(dsn)
        .expect("text")
        .replace("\r\n.", "\r\n..");
    smtp.send(stuffed.as_bytes()).await;
    let done = smtp.cmd(".").await;
    assert!(done.starts_with("250 2.0.0"), "{done}");
    assert_eq!(w.state(ANA).await, (1.0, "active".into()));
    // Too many errors close the session; the listener goes on.
    let (mut noisy, _) = RawSmtp::connect(w.port).await;
    for i in 0..20 {
        let reply = noisy.cmd("FOO").await;
        assert!(reply.starts_with("500"), "error {i}: {reply}");
    }
    let last = noisy.reply().await;
    assert!(
        last.starts_with("421 4.7.0"),
        "the 20th error closes: {last}"
    );
    assert_eq!(noisy.reply().await, "", "closed after the 421");
    assert!(RawSmtp::connect(w.port).await.1.starts_with("220"));
}

async fn a_round_trip_makes_a_dead_address_bouncing_and_it_gets_no_more_list_mail(
    backend: Backend,
) {
    let later = at(T0) + Duration::days(4);
    let w = World::new(backend, move |s| {
        s.announcements
            .push(announcement("after", later, "After the bounces"));
    })
    .await;
    let threshold = 3;
    for (day, subject) in SUBJECTS.iter().enumerate() {
        w.bounce(ANA, subject).await;
        let (score, status) = w.state(ANA).await;
        assert_eq!(score, (day + 1) as f64, "one more point a day");
        let expected = if day + 1 == threshold {
            "bouncing"
        } else {
            "active"
        };
        assert_eq!(status, expected, "after {} report(s)", day + 1);
        w.clock.advance(Duration::days(1));
    }
    let events = w.events().await;
    assert_eq!(
        events.iter().map(|e| e.effect.as_str()).collect::<Vec<_>>(),
        ["scored", "scored", "bouncing"]
    );
    let last = &events[2];
    assert_eq!(last.status.as_deref(), Some("5.1.1"));
    assert!(
        last.diagnostic
            .as_deref()
            .is_some_and(|d| d.contains("550 5.1.1") && d.contains("does not exist")),
        "the report's words are kept: {last:?}"
    );
    assert_eq!(last.score, Some(3.0));
    assert_eq!(
        last.subscriber_id,
        Some(subscriber_id(&w.app.store, ANA).await)
    );
    assert_eq!(w.state(BEN).await, (0.0, "active".into()), "ben is fine");

    // The next list mailing reaches ben and not ana.
    w.clock.set(later + Duration::minutes(1));
    eventually(30, "ben gets the next list mail", || async {
        w.app
            .sink
            .to(BEN)
            .iter()
            .any(|m| parse(&m.bytes).subject() == Some("After the bounces"))
            .then_some(())
    })
    .await;
    crate::helpers::all_sent(&w.app.store).await;
    assert!(
        !w.app
            .sink
            .to(ANA)
            .iter()
            .any(|m| parse(&m.bytes).subject() == Some("After the bounces")),
        "a bouncing address gets no list mail"
    );
    let ana_rows: Vec<String> = sqlx::query(
        "SELECT d.state FROM deliveries d JOIN mailings m ON m.id = d.mailing_id
         JOIN subscribers s ON s.id = d.subscriber_id
         WHERE m.key = 'announcement:after' AND s.email_key = $1",
    )
    .bind(ANA)
    .fetch_all(w.app.store.pool())
    .await
    .expect("deliveries")
    .iter()
    .map(|r| r.get("state"))
    .collect();
    assert!(
        ana_rows.iter().all(|s| s == "skipped"),
        "no delivery for ana, or a skipped one: {ana_rows:?}"
    );
}

async fn two_reports_on_one_day_score_once_and_the_next_day_scores_again(backend: Backend) {
    let w = World::new(backend, |_| {}).await;
    w.bounce(ANA, SUBJECTS[0]).await;
    w.clock.advance(Duration::hours(2));
    w.bounce(ANA, SUBJECTS[1]).await;
    assert_eq!(w.state(ANA).await.0, 1.0, "two reports on one day score 1");
    assert_eq!(w.effects().await, ["scored", "once-a-day"]);
    w.clock.advance(Duration::days(1));
    w.bounce(ANA, SUBJECTS[2]).await;
    assert_eq!(w.state(ANA).await.0, 2.0, "the next day scores again");
    assert_eq!(w.effects().await, ["scored", "once-a-day", "scored"]);
}

async fn a_score_older_than_stale_after_starts_again(backend: Backend) {
    let w = World::new(backend, |s| {
        bounce_settings(s).stale_after = "7d".parse().expect("duration");
    })
    .await;
    w.bounce(ANA, SUBJECTS[0]).await;
    w.clock.advance(Duration::days(1));
    w.bounce(ANA, SUBJECTS[1]).await;
    assert_eq!(w.state(ANA).await.0, 2.0);
    w.clock.advance(Duration::days(8));
    w.bounce(ANA, SUBJECTS[2]).await;
    assert_eq!(
        w.state(ANA).await,
        (1.0, "active".into()),
        "a stale score starts again from 0"
    );
}

async fn a_soft_bounce_adds_soft_weight(backend: Backend) {
    let w = World::new(backend, |_| {}).await;
    for (day, subject) in SUBJECTS.iter().take(2).enumerate() {
        let m = w.delivered(ANA, subject);
        let id = message_id(&m);
        let dsn = Dsn::hard(&m.from, ANA, &id)
            .status("4.2.2", "smtp; 452 4.2.2 Mailbox full")
            .bytes();
        hand_over(w.port, &[&m.from], &dsn).await.expect("taken");
        assert_eq!(w.state(ANA).await.0, 0.5 * (day + 1) as f64);
        w.clock.advance(Duration::days(1));
    }
    let events = w.events().await;
    assert_eq!(
        events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["soft", "soft"]
    );
    assert_eq!(events[1].score, Some(1.0));
    // Delayed-delivery warnings count nothing.
    let m = w.delivered(ANA, SUBJECTS[2]);
    let id = message_id(&m);
    let mut delayed =
        Dsn::hard(&m.from, ANA, &id).status("4.4.7", "smtp; 451 4.4.7 delivery delayed");
    delayed.action = "delayed";
    hand_over(w.port, &[&m.from], &delayed.bytes())
        .await
        .expect("taken");
    assert_eq!(w.state(ANA).await.0, 1.0);
    assert_eq!(w.events().await[2].effect, "ignored");
}

async fn a_policy_rejection_changes_no_score_and_names_the_domain(backend: Backend) {
    let w = World::new(backend, |_| {}).await;
    let m = w.delivered(ANA, SUBJECTS[0]);
    let dsn = Dsn::hard(&m.from, ANA, &message_id(&m))
        .status(
            "5.7.515",
            "smtp; 550 5.7.515 Access denied, sending domain harborlist.example.org doesn't meet the required authentication level",
        )
        .bytes();
    hand_over(w.port, &[&m.from], &dsn).await.expect("taken");
    assert_eq!(w.state(ANA).await, (0.0, "active".into()));
    let events = w.events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].effect, "policy");
    assert_eq!(events[0].status.as_deref(), Some("5.7.515"));
    assert_eq!(events[0].recipient_domain.as_deref(), Some("example.net"));
    // A hard bounce the same day still scores: the policy rejection took no day.
    w.bounce(ANA, SUBJECTS[1]).await;
    assert_eq!(w.state(ANA).await.0, 1.0);
}

async fn forged_reports_change_nothing(backend: Backend) {
    let w = World::new(backend, |_| {}).await;
    let metrics = w.app.metrics_url.clone().expect("metrics on");
    let unmatched_before = counter(&metrics, "harborlist_reports_unmatched_total").await;
    let real = w.delivered(ANA, SUBJECTS[0]);
    let real_id = message_id(&real);
    let (hash, ana_id) = real_id
        .trim_matches(['<', '>'])
        .strip_prefix("hl.")
        .and_then(|r| r.split_once('@'))
        .and_then(|(local, _)| local.split_once('.'))
        .map(|(h, id)| (h.to_owned(), id.to_owned()))
        .expect("our Message-ID");
    let ben_id = subscriber_id(&w.app.store, BEN).await;
    // A made-up tag naming ana's real delivery, and a Message-ID of our shape with a
    // made-up mailing hash.
    let forged_tag = format!(
        "trainings+b{}-0000000000000000@harborlist.example.org",
        delivery_of(&real.from)
    );
    let made_up_id = format!("<hl.0123456789abcdef.{ana_id}@trainings.harborlist.example.org>");
    let dsn = Dsn::hard(&forged_tag, ANA, &made_up_id).bytes();
    hand_over(w.port, &[&forged_tag], &dsn)
        .await
        .expect("the pattern is taken; the tag is then found made up");
    // The right mailing hash with ben's subscriber id, about ana's address.
    let borrowed_id = format!("<hl.{hash}.{ben_id}@trainings.harborlist.example.org>");
    let dsn = Dsn::hard(RETURN_PATH, ANA, &borrowed_id).bytes();
    hand_over(w.port, &[RETURN_PATH], &dsn)
        .await
        .expect("taken");
    // Ana's real Message-ID, about ben's address.
    let dsn = Dsn::hard(RETURN_PATH, BEN, &real_id).bytes();
    hand_over(w.port, &[RETURN_PATH], &dsn)
        .await
        .expect("taken");

    for email in [ANA, BEN] {
        assert_eq!(w.state(email).await, (0.0, "active".into()), "{email}");
    }
    let events = w.events().await;
    assert_eq!(w.effects().await, ["unmatched", "unmatched", "unmatched"]);
    assert!(
        events.iter().all(|e| e.subscriber_id.is_none()),
        "{events:?}"
    );
    let unmatched_after = counter(&metrics, "harborlist_reports_unmatched_total").await;
    assert!(
        unmatched_after >= unmatched_before + 3.0,
        "harborlist_reports_unmatched_total {unmatched_before} → {unmatched_after}"
    );
    // The genuine report by Message-ID alone (no VERP tag) does count: the forgeries
    // failed for what they got wrong.
    let dsn = Dsn::hard(RETURN_PATH, ANA, &real_id).bytes();
    hand_over(w.port, &[RETURN_PATH], &dsn)
        .await
        .expect("taken");
    assert_eq!(w.state(ANA).await, (1.0, "active".into()));
}

async fn the_same_report_handed_over_twice_counts_once(backend: Backend) {
    let w = World::new(backend, |_| {}).await;
    let dsn = w.bounce(ANA, SUBJECTS[0]).await;
    w.clock.advance(Duration::days(1));
    let m = w.delivered(ANA, SUBJECTS[0]);
    hand_over(w.port, &[&m.from], &dsn)
        .await
        .expect("taken again");
    assert_eq!(w.state(ANA).await.0, 1.0, "the same report counts once");
    assert_eq!(w.events().await.len(), 1, "and is stored once");
}

async fn a_store_failure_answers_451_and_the_retry_is_recorded(backend: Backend) {
    let w = World::new(backend, |_| {}).await;
    let pool = w.app.store.pool();
    sqlx::query("ALTER TABLE bounce_events RENAME TO bounce_events_away")
        .execute(pool)
        .await
        .expect("rename");
    let m = w.delivered(ANA, SUBJECTS[0]);
    let dsn = Dsn::hard(&m.from, ANA, &message_id(&m)).bytes();
    let e = hand_over(w.port, &[&m.from], &dsn)
        .await
        .expect_err("the store can't record it");
    assert_eq!(reply_code(&e).as_deref(), Some("451"), "{e}");
    assert!(e.is_transient(), "the MTA keeps it and tries again: {e}");
    sqlx::query("ALTER TABLE bounce_events_away RENAME TO bounce_events")
        .execute(pool)
        .await
        .expect("rename back");
    assert_eq!(w.state(ANA).await.0, 0.0, "nothing half done");
    hand_over(w.port, &[&m.from], &dsn)
        .await
        .expect("the retry is taken");
    assert_eq!(w.state(ANA).await, (1.0, "active".into()));
}

async fn a_stop_finishes_the_message_in_flight_then_closes(backend: Backend) {
    let mut w = World::new(backend, |_| {}).await;
    let m = w.delivered(ANA, SUBJECTS[0]);
    let dsn = Dsn::hard(&m.from, ANA, &message_id(&m)).bytes();
    let (first, rest) = dsn.split_at(dsn.len() / 2);
    let (mut smtp, _) = RawSmtp::connect(w.port).await;
    assert!(smtp.cmd("EHLO mx").await.starts_with("250"));
    assert!(smtp.cmd("MAIL FROM:<>").await.starts_with("250"));
    assert!(
        smtp.cmd(&format!("RCPT TO:<{}>", m.from))
            .await
            .starts_with("250")
    );
    assert!(smtp.cmd("DATA").await.starts_with("354"));
    smtp.send(first).await;
    let port = w.port;
    let rest = rest.to_vec();
    let finish = async move {
        // The listener has stopped taking connections: the stop has reached it.
        eventually(20, "the listener to stop accepting", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
                .then_some(())
        })
        .await;
        smtp.send(&rest).await;
        let done = smtp.cmd(".").await;
        let after = smtp.reply().await;
        (done, after)
    };
    let ((), (done, after)) = tokio::join!(w.app.stop(), finish);
    assert!(
        done.starts_with("250 2.0.0"),
        "the message in flight is taken: {done}"
    );
    assert!(
        after.starts_with("421 4.3.2"),
        "then the session closes: {after}"
    );
    let store = harborlist::store::Store::connect(&w.app.db.url, 1)
        .await
        .expect("store");
    assert_eq!(
        bounce_state(&store, ANA).await.0,
        1.0,
        "and it was recorded"
    );
}

/// Runs swaks (Debian's `swaks`, which `.ci/run` installs) against the listener, with
/// `data` on its standard input; returns (success, transcript).
async fn swaks(port: u16, to: &str, data: Vec<u8>) -> (bool, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{port}"), "--from", "<>"])
        .args(["--to", to, "--pipeline", "--data", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("swaks runs (apt-get install swaks)");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(&data).await.expect("write to swaks");
    drop(stdin);
    let out = child.wait_with_output().await.expect("swaks ends");
    let transcript =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), transcript)
}

async fn swaks_hands_a_report_over_and_is_refused_elsewhere(backend: Backend) {
    let w = World::new(backend, |_| {}).await;
    let m = w.delivered(BEN, SUBJECTS[1]);
    let dsn = Dsn::hard(&m.from, BEN, &message_id(&m)).bytes();
    let (ok, transcript) = swaks(w.port, &m.from, dsn.clone()).await;
    assert!(ok, "{transcript}");
    assert!(transcript.contains("PIPELINING"), "{transcript}");
    assert!(
        transcript.contains("250 2.0.0 Report received"),
        "{transcript}"
    );
    assert_eq!(w.state(BEN).await, (1.0, "active".into()));
    let (ok, transcript) = swaks(w.port, "someone@example.org", dsn).await;
    assert!(!ok, "{transcript}");
    assert!(transcript.contains("550 5.1.1"), "{transcript}");
    assert_eq!(w.events().await.len(), 1);
}

/// The statement that stores an event's score is prepared once per connection; a NULL
/// score first (an unmatched report) must not make a real one fail on it later (the
/// vendored sqlx fix, `vendor/README.md`).
async fn a_null_float_then_a_float_bind_on_one_connection(backend: Backend) {
    let db = crate::helpers::TestDb::new(backend).await;
    let store = harborlist::store::Store::connect(&db.url, 1)
        .await
        .expect("store");
    let mut conn = store.pool().acquire().await.expect("a connection");
    sqlx::query("CREATE TABLE floats (x DOUBLE PRECISION)")
        .execute(&mut *conn)
        .await
        .expect("create");
    for x in [None, Some(1.5), None, Some(2.25)] {
        sqlx::query("INSERT INTO floats (x) VALUES ($1)")
            .bind(x)
            .execute(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("binding {x:?} after a NULL: {e}"));
    }
    let sum: f64 = sqlx::query_scalar("SELECT SUM(x) FROM floats")
        .fetch_one(&mut *conn)
        .await
        .expect("sum");
    assert_eq!(sum, 3.75);
}

/// A port already in use fails startup with an error naming the setting and the address.
#[tokio::test]
async fn a_taken_bounces_listen_port_fails_startup_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let db = crate::helpers::TestDb::new(Backend::Sqlite).await;
    let mut settings = crate::helpers::test_settings(&db.url, 1);
    bounces_on(&mut settings);
    bounce_settings(&mut settings).listen = Some(addr);
    let clock: harborlist::clock::SharedClock = std::sync::Arc::new(harborlist::clock::SystemClock);
    let e = match harborlist::startup::Application::build(settings, clock).await {
        Ok(_) => panic!("startup must fail with {addr} taken"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.starts_with("bounces.listen: cannot listen on ") && e.contains(&addr.to_string()),
        "{e}"
    );
}
