//! The pool against scripted relays over real TCP (and TLS): pipelining and not, every
//! failure's stage and class, silence, SMTPUTF8, QUIT, the crash-bound permit; and the URL
//! parser.

use std::sync::Mutex;

use std::time::Instant;

use super::{
    error::{Class, Stage},
    pipeline::dot_stuffed,
    *,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

/// What the scripted relay saw: every chunk read from the socket, each command line,
/// the messages after undoing dot-stuffing, how many sessions said QUIT and how many ended.
#[derive(Default)]
struct Seen {
    chunks: Vec<String>,
    commands: Vec<String>,
    messages: Vec<String>,
    quits: usize,
    ended: usize,
}

/// How a scripted relay answers.
#[derive(Clone, Copy)]
struct Script {
    /// `None`: accept the connection and never say anything.
    greeting: Option<&'static str>,
    pipelining: bool,
    /// EHLO keywords besides PIPELINING and 8BITMIME (`AUTH PLAIN`, `SMTPUTF8`, …).
    keywords: &'static [&'static str],
    /// A reply of its own to a command line (upper-cased, without CRLF), or to `.` (the end
    /// of data): `Some("")` for silence, `None` for the default.
    answer: fn(&str) -> Option<&'static str>,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            greeting: Some("220 relay ready\r\n"),
            pipelining: true,
            keywords: &[],
            answer: |_| None,
        }
    }
}

/// A relay that offers PIPELINING, refuses MAIL from an address starting with "busy"
/// (451) and RCPT to one starting with "gone" (550), and answers DATA with 554 when no
/// recipient was accepted, as RFC 2920 requires.
async fn scripted_relay() -> (u16, Arc<Mutex<Seen>>) {
    relay_with(Script::default()).await
}

/// A relay answering as `script` says, and otherwise as [`scripted_relay`].
async fn relay_with(script: Script) -> (u16, Arc<Mutex<Seen>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                serve(socket, script, &log).await;
                log.lock().unwrap().ended += 1;
            });
        }
    });
    (port, seen)
}

/// One session of the scripted relay.
async fn serve<S>(socket: S, script: Script, log: &Mutex<Seen>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    let (mut read, mut write) = tokio::io::split(socket);
    if let Some(greeting) = script.greeting {
        write.write_all(greeting.as_bytes()).await.unwrap();
    }
    let mut state = Dialogue::default();
    let mut chunk = vec![0u8; 8192];
    loop {
        let n = match read.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let text = String::from_utf8_lossy(&chunk[..n]).into_owned();
        log.lock().unwrap().chunks.push(text.clone());
        if script.greeting.is_none() {
            continue;
        }
        let mut replies = String::new();
        for line in text.split_inclusive("\r\n") {
            match state.answer(line, &script, log) {
                Reply::Say(reply) => replies.push_str(&reply),
                Reply::Quit => {
                    let _ = write.write_all(replies.as_bytes()).await;
                    let _ = write.write_all(b"221 bye\r\n").await;
                    return;
                }
            }
        }
        if !replies.is_empty() && write.write_all(replies.as_bytes()).await.is_err() {
            return;
        }
    }
}

#[derive(Default)]
struct Dialogue {
    mail_ok: bool,
    accepted: usize,
    in_data: bool,
    message: String,
}

enum Reply {
    Say(String),
    Quit,
}

impl Dialogue {
    fn answer(&mut self, line: &str, script: &Script, log: &Mutex<Seen>) -> Reply {
        if self.in_data {
            if line != ".\r\n" {
                self.message
                    .push_str(line.strip_prefix('.').unwrap_or(line));
                return Reply::Say(String::new());
            }
            self.in_data = false;
            let reply = (script.answer)(".").unwrap_or("250 queued\r\n");
            if reply.starts_with('2') {
                let done = std::mem::take(&mut self.message);
                log.lock().unwrap().messages.push(done);
            }
            self.message.clear();
            return Reply::Say(reply.to_owned());
        }
        let upper = line.trim_end().to_ascii_uppercase();
        log.lock().unwrap().commands.push(upper.clone());
        if upper == "QUIT" {
            log.lock().unwrap().quits += 1;
            return Reply::Quit;
        }
        let scripted = (script.answer)(&upper);
        let reply = match scripted {
            Some(reply) => reply.to_owned(),
            None => self.default_reply(&upper, script),
        };
        if upper.starts_with("MAIL") {
            self.mail_ok = reply.starts_with('2');
            self.accepted = 0;
        } else if upper.starts_with("RCPT") && reply.starts_with('2') {
            self.accepted += 1;
        } else if upper.starts_with("DATA") && reply.starts_with("354") {
            self.in_data = true;
        }
        Reply::Say(reply)
    }

    fn default_reply(&self, upper: &str, script: &Script) -> String {
        let reply = if upper.starts_with("EHLO") {
            let mut lines = vec!["relay"];
            if script.pipelining {
                lines.push("PIPELINING");
            }
            lines.extend(script.keywords);
            lines.push("8BITMIME");
            let last = lines.len() - 1;
            return lines
                .iter()
                .enumerate()
                .map(|(i, l)| format!("250{}{l}\r\n", if i == last { ' ' } else { '-' }))
                .collect();
        } else if upper.starts_with("MAIL FROM:<BUSY") {
            "451 try later\r\n"
        } else if upper.starts_with("MAIL") {
            "250 ok\r\n"
        } else if upper.starts_with("RCPT") && !self.mail_ok {
            "503 need MAIL first\r\n"
        } else if upper.starts_with("RCPT TO:<GONE") {
            "550 no such user\r\n"
        } else if upper.starts_with("RCPT") {
            "250 ok\r\n"
        } else if upper.starts_with("DATA") && self.accepted > 0 {
            "354 go on\r\n"
        } else if upper.starts_with("DATA") {
            "554 no valid recipients\r\n"
        } else if upper.starts_with("AUTH") {
            "235 2.7.0 accepted\r\n"
        } else if upper.starts_with("RSET") || upper.starts_with("NOOP") {
            "250 ok\r\n"
        } else {
            "502 what\r\n"
        };
        reply.to_owned()
    }
}

fn envelope(from: &str, to: &str) -> Envelope {
    Envelope::new(Some(from.parse().unwrap()), vec![to.parse().unwrap()]).unwrap()
}

/// Sends `body` from `from` to `to`, leaving the permit, if one was taken, in `permit`.
async fn send(
    pool: &Pool,
    gate: &Arc<Semaphore>,
    permit: &mut Option<OwnedSemaphorePermit>,
    (from, to): (&str, &str),
    body: &str,
) -> Result<(), SendError> {
    pool.send(&envelope(from, to), body.as_bytes(), gate, permit)
        .await
}

fn pool(port: u16) -> Pool {
    let relay = Relay::parse(&format!("smtp://127.0.0.1:{port}")).unwrap();
    Pool::new(relay, 2, Duration::from_secs(5))
}

#[tokio::test]
async fn pipelines_the_envelope_and_dot_stuffs_the_message() {
    let (port, seen) = scripted_relay().await;
    let pool = pool(port);
    let gate = Arc::new(Semaphore::new(1));
    let body = "Subject: hi\r\n\r\n.starts with a dot\r\n..two\r\nend\r\n";
    let mut permit = None;
    send(
        &pool,
        &gate,
        &mut permit,
        ("list@example.org", "a@example.org"),
        body,
    )
    .await
    .expect("sent");
    assert!(
        permit.is_some(),
        "the caller holds the permit until it records"
    );
    assert_eq!(gate.available_permits(), 0);
    drop(permit);
    // The connection is reused for a second message.
    let mut permit = None;
    send(
        &pool,
        &gate,
        &mut permit,
        ("list@example.org", "b@example.org"),
        body,
    )
    .await
    .expect("sent again");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.messages, vec![body.to_owned(), body.to_owned()]);
    let pipelined = seen
        .chunks
        .iter()
        .filter(|c| {
            c.starts_with("MAIL FROM:<list@example.org>\r\nRCPT TO:<") && c.ends_with("DATA\r\n")
        })
        .count();
    assert_eq!(
        pipelined, 2,
        "MAIL, RCPT and DATA go in one write: {:?}",
        seen.chunks
    );
    assert!(
        seen.chunks
            .iter()
            .any(|c| c.contains("\r\n..starts with a dot\r\n...two\r\n")),
        "leading dots are doubled on the wire"
    );
}

/// How many observations the histogram `name` holds in the process's metrics.
fn observed(handle: &metrics_exporter_prometheus::PrometheusHandle, name: &str) -> u64 {
    let line = format!("{name}_count ");
    handle
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(&line)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn times_both_halves_of_the_crash_bound_cycle() {
    let handle = crate::telemetry::metrics_handle().expect("a metrics recorder");
    let (relay_before, wait_before) = (
        observed(&handle, "harborlist_relay_reply_seconds"),
        observed(&handle, "harborlist_unrecorded_wait_seconds"),
    );
    let (port, _) = scripted_relay().await;
    let pool = pool(port);
    let gate = Arc::new(Semaphore::new(1));
    let mut permit = None;
    send(
        &pool,
        &gate,
        &mut permit,
        ("list@example.org", "a@example.org"),
        "Subject: hi\r\n\r\nbody\r\n",
    )
    .await
    .expect("sent");
    // Other tests in this process may send too, so counts only have to have grown.
    assert!(observed(&handle, "harborlist_relay_reply_seconds") > relay_before);
    assert!(observed(&handle, "harborlist_unrecorded_wait_seconds") > wait_before);
}

#[tokio::test]
async fn a_refused_recipient_is_permanent_and_a_refused_sender_transient() {
    let (port, seen) = scripted_relay().await;
    let pool = pool(port);
    let gate = Arc::new(Semaphore::new(1));
    let mut permit = None;
    let gone = send(
        &pool,
        &gate,
        &mut permit,
        ("list@example.org", "gone@example.org"),
        "Subject: x\r\n\r\nx\r\n",
    )
    .await;
    // The 550 is reported, not the 554 that DATA got after it.
    match gone {
        Err(e) if e.is_permanent() => assert!(e.text.contains("no such user"), "{e}"),
        other => panic!("expected a permanent failure, got {other:?}"),
    }
    assert!(
        permit.is_none(),
        "nothing was handed over, so nothing to record under a permit"
    );
    let busy = send(
        &pool,
        &gate,
        &mut permit,
        ("busy@example.org", "a@example.org"),
        "Subject: x\r\n\r\nx\r\n",
    )
    .await;
    match busy {
        Err(e) if !e.is_permanent() => assert!(e.text.contains("try later"), "{e}"),
        other => panic!("expected a temporary failure, got {other:?}"),
    }
    // Both sessions were closed after the refusal and a fresh one still works.
    send(
        &pool,
        &gate,
        &mut permit,
        ("list@example.org", "a@example.org"),
        "Subject: x\r\n\r\nx\r\n",
    )
    .await
    .expect("a good message after refusals");
    assert_eq!(seen.lock().unwrap().messages.len(), 1);
}

/// Messages queued behind one another share round trips: the next envelope follows the
/// previous message's terminating dot in the same write. A refusal among them costs only
/// that message.
#[tokio::test]
async fn queued_messages_ride_behind_the_previous_dot() {
    let (port, seen) = scripted_relay().await;
    let relay = Relay::parse(&format!("smtp://127.0.0.1:{port}")).unwrap();
    let pool = Arc::new(Pool::new(relay, 1, Duration::from_secs(5)));
    let gate = Arc::new(Semaphore::new(8));
    let body = |i: usize| format!("Subject: {i}\r\n\r\nmessage {i}\r\n");
    let sends = (0..6).map(|i| {
        let (pool, gate) = (pool.clone(), gate.clone());
        async move {
            let to = if i == 3 {
                "gone@example.org".to_owned()
            } else {
                format!("p{i}@example.org")
            };
            let mut permit = None;
            let result = pool
                .send(
                    &envelope("list@example.org", &to),
                    body(i).as_bytes(),
                    &gate,
                    &mut permit,
                )
                .await;
            (i, result, permit.is_some())
        }
    });
    for (i, result, held) in futures_util::future::join_all(sends).await {
        if i == 3 {
            assert!(
                matches!(&result, Err(e) if e.is_permanent() && e.text.contains("no such user")),
                "{result:?}"
            );
            assert!(!held, "a refused envelope takes no permit");
        } else {
            assert_eq!(result, Ok(()), "message {i}");
            assert!(held, "message {i} is handed over under a permit");
        }
    }
    let seen = seen.lock().unwrap();
    let mut delivered = seen.messages.clone();
    delivered.sort();
    let expected: Vec<String> = [0, 1, 2, 4, 5].into_iter().map(body).collect();
    assert_eq!(delivered, expected);
    let riding = seen
        .chunks
        .iter()
        .filter(|c| c.contains("\r\n.\r\nMAIL FROM:<list@example.org>\r\nRCPT TO:<"))
        .count();
    assert!(
        riding >= 3,
        "envelopes ride behind the previous dot: {:?}",
        seen.chunks
    );
}

#[test]
fn dot_stuffing_doubles_leading_dots_and_terminates() {
    assert_eq!(
        dot_stuffed("a\r\n.b\r\n..c\r\n"),
        "a\r\n..b\r\n...c\r\n.\r\n"
    );
    assert_eq!(dot_stuffed(".x"), "..x\r\n.\r\n");
    assert_eq!(dot_stuffed("no dots\r\n"), "no dots\r\n.\r\n");
    assert_eq!(dot_stuffed("a.\r\nb. c\r\n"), "a.\r\nb. c\r\n.\r\n");
}

#[test]
fn parses_lettre_style_urls() {
    assert_eq!(
        Relay::parse("smtp://127.0.0.1:2525"),
        Ok(Relay {
            host: "127.0.0.1".into(),
            port: 2525,
            implicit_tls: false,
            starttls: Starttls::Never,
            credentials: None
        })
    );
    assert_eq!(
        Relay::parse("smtp://us%40r:p%3Ass@relay.example.org:587?tls=required"),
        Ok(Relay {
            host: "relay.example.org".into(),
            port: 587,
            implicit_tls: false,
            starttls: Starttls::Required,
            credentials: Some(("us@r".into(), "p:ss".into()))
        })
    );
    assert_eq!(
        Relay::parse("smtps://u:p@relay.example.org"),
        Ok(Relay {
            host: "relay.example.org".into(),
            port: 465,
            implicit_tls: true,
            starttls: Starttls::Never,
            credentials: Some(("u".into(), "p".into()))
        })
    );
    assert_eq!(
        redact_url("smtps://u:secret@relay.example.org"),
        "smtps://u:***@relay.example.org"
    );
    assert!(Relay::parse("smtp://relay?tls=maybe").is_err());
}

/// A pool of one session to the relay at `port`, `url` being the URL's scheme and anything
/// before the host (`smtp://`, `smtp://user:secret@`) and `query` what follows the port.
fn pool_at(url: &str, port: u16, query: &str, timeout: Duration) -> Pool {
    let relay = Relay::parse(&format!("{url}127.0.0.1:{port}{query}")).unwrap();
    Pool::new(relay, 1, timeout)
}

/// Sends one message from `list@example.org` to `to` through `pool`.
async fn send_to(pool: &Pool, to: &str) -> Result<(), SendError> {
    let gate = Arc::new(Semaphore::new(1));
    let mut permit = None;
    let body = "Subject: x\r\n\r\nx\r\n";
    send(pool, &gate, &mut permit, ("list@example.org", to), body).await
}

/// One way a relay fails, and what the pool must make of it.
struct Case {
    name: &'static str,
    script: Script,
    url: &'static str,
    query: &'static str,
    stage: Stage,
    class: Class,
    code: Option<u16>,
    enhanced: Option<&'static str>,
}

fn case(name: &'static str, script: Script, stage: Stage, class: Class) -> Case {
    Case {
        name,
        script,
        url: "smtp://",
        query: "",
        stage,
        class,
        code: None,
        enhanced: None,
    }
}

impl Case {
    fn code(mut self, code: u16, enhanced: Option<&'static str>) -> Self {
        (self.code, self.enhanced) = (Some(code), enhanced);
        self
    }
}

fn answering(answer: fn(&str) -> Option<&'static str>) -> Script {
    Script {
        answer,
        ..Script::default()
    }
}

fn failures() -> Vec<Case> {
    let auth = Script {
        keywords: &["AUTH PLAIN LOGIN"],
        answer: |l| {
            l.starts_with("AUTH")
                .then_some("535 5.7.8 Authentication credentials invalid\r\n")
        },
        ..Script::default()
    };
    let greeting = Script {
        greeting: Some("554 5.3.2 no service here\r\n"),
        ..Script::default()
    };
    vec![
        case("554 greeting", greeting, Stage::Greeting, Class::RelayFault).code(554, Some("5.3.2")),
        Case {
            url: "smtp://user:secret@",
            ..case("535 at AUTH", auth, Stage::Auth, Class::RelayFault).code(535, Some("5.7.8"))
        },
        Case {
            query: "?tls=required",
            ..case(
                "tls=required without STARTTLS",
                Script::default(),
                Stage::Starttls,
                Class::RelayFault,
            )
        },
        case(
            "554 5.7.1 at MAIL FROM",
            answering(|l| {
                l.starts_with("MAIL")
                    .then_some("554 5.7.1 sender not allowed\r\n")
            }),
            Stage::Mail,
            Class::RelayFault,
        )
        .code(554, Some("5.7.1")),
        case(
            "550 5.1.1 at RCPT",
            answering(|l| {
                l.starts_with("RCPT")
                    .then_some("550 5.1.1 no such user\r\n")
            }),
            Stage::Rcpt,
            Class::Bounce,
        )
        .code(550, Some("5.1.1")),
        case(
            "550 5.7.1 at RCPT",
            answering(|l| {
                l.starts_with("RCPT")
                    .then_some("550 5.7.1 relaying denied\r\n")
            }),
            Stage::Rcpt,
            Class::Rejected,
        )
        .code(550, Some("5.7.1")),
        case(
            "451 at RCPT",
            answering(|l| {
                l.starts_with("RCPT")
                    .then_some("451 4.3.0 try again later\r\n")
            }),
            Stage::Rcpt,
            Class::Transient,
        )
        .code(451, Some("4.3.0")),
        case(
            "552 5.2.2 after data",
            answering(|l| (l == ".").then_some("552 5.2.2 mailbox full\r\n")),
            Stage::EndOfData,
            Class::Bounce,
        )
        .code(552, Some("5.2.2")),
        case(
            "554 5.7.1 after data",
            answering(|l| (l == ".").then_some("554 5.7.1 message refused as spam\r\n")),
            Stage::EndOfData,
            Class::Rejected,
        )
        .code(554, Some("5.7.1")),
    ]
}

/// Every failure carries its stage, class, code and enhanced code, whether the relay
/// pipelines or not, and none of them delivers anything or shows the password.
#[tokio::test]
async fn every_failure_is_tagged_with_its_stage_and_class() {
    for pipelining in [true, false] {
        for c in failures() {
            let script = Script {
                pipelining,
                ..c.script
            };
            let (port, seen) = relay_with(script).await;
            let pool = pool_at(c.url, port, c.query, Duration::from_secs(5));
            let what = format!("{} (pipelining: {pipelining})", c.name);
            let e = send_to(&pool, "a@example.org").await.expect_err(&what);
            assert_eq!(
                (e.stage, e.class, e.code, e.enhanced.as_deref()),
                (c.stage, c.class, c.code, c.enhanced),
                "{what}: {e}"
            );
            assert!(!e.to_string().contains("secret"), "{what}: {e}");
            assert!(seen.lock().unwrap().messages.is_empty(), "{what}");
        }
    }
}

/// A relay that accepts the connection and never speaks costs one timeout, at the
/// greeting, as a relay fault; one that stops after the greeting, at EHLO.
#[tokio::test]
async fn a_silent_relay_costs_one_timeout_at_the_stage_it_went_silent() {
    let timeout = Duration::from_millis(300);
    let silent = Script {
        greeting: None,
        ..Script::default()
    };
    let after_ehlo = answering(|l| l.starts_with("EHLO").then_some(""));
    for (script, stage) in [(silent, Stage::Greeting), (after_ehlo, Stage::Ehlo)] {
        let (port, _) = relay_with(script).await;
        let pool = pool_at("smtp://", port, "", timeout);
        let started = Instant::now();
        let e = send_to(&pool, "a@example.org").await.expect_err("no reply");
        let took = started.elapsed();
        assert_eq!(
            (e.stage, e.class, e.code),
            (stage, Class::RelayFault, None),
            "{e}"
        );
        assert!(
            took >= timeout && took < timeout * 2,
            "{stage}: took {took:?}"
        );
    }
}

/// Silence inside the envelope or after the dot is also bounded and tagged.
#[tokio::test]
async fn silence_mid_message_is_bounded_and_tagged() {
    let timeout = Duration::from_millis(300);
    let scripts = [
        (
            answering(|l| (l.starts_with("RCPT") || l == "DATA").then_some("")),
            Stage::Rcpt,
        ),
        (answering(|l| (l == ".").then_some("")), Stage::EndOfData),
    ];
    for pipelining in [true, false] {
        for (script, stage) in scripts {
            let script = Script {
                pipelining,
                ..script
            };
            let (port, _) = relay_with(script).await;
            let pool = pool_at("smtp://", port, "", timeout);
            let started = Instant::now();
            let e = send_to(&pool, "a@example.org").await.expect_err("no reply");
            assert_eq!((e.stage, e.class), (stage, Class::Transient), "{e}");
            assert!(started.elapsed() < timeout * 2, "{stage}");
        }
    }
}

/// Without PIPELINING the commands go one at a time, and the message still arrives.
#[tokio::test]
async fn a_relay_without_pipelining_gets_one_command_at_a_time() {
    let (port, seen) = relay_with(Script {
        pipelining: false,
        ..Script::default()
    })
    .await;
    let pool = pool_at("smtp://", port, "", Duration::from_secs(5));
    send_to(&pool, "a@example.org").await.expect("sent");
    send_to(&pool, "b@example.org")
        .await
        .expect("sent on the same session");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.messages.len(), 2);
    for chunk in &seen.chunks {
        let commands = chunk.matches("\r\n").count();
        assert!(
            commands == 1 || chunk.ends_with("\r\n.\r\n"),
            "one command per write: {chunk:?}"
        );
    }
}

/// A non-ASCII address needs SMTPUTF8: refused for good, before anything is sent, by a
/// relay that does not offer it; sent with the parameter by one that does.
#[tokio::test]
async fn an_address_that_needs_smtputf8_goes_only_where_it_is_offered() {
    let (port, seen) = scripted_relay().await;
    let pool = pool_at("smtp://", port, "", Duration::from_secs(5));
    let e = send_to(&pool, "jürgen@example.org")
        .await
        .expect_err("no SMTPUTF8");
    assert_eq!((e.stage, e.class), (Stage::Local, Class::Rejected), "{e}");
    assert!(e.is_permanent() && !e.counts_as_bounce());
    assert!(e.text.contains("SMTPUTF8"), "{e}");
    assert!(
        !seen
            .lock()
            .unwrap()
            .commands
            .iter()
            .any(|c| c.starts_with("MAIL")),
        "nothing was offered to the relay"
    );
    // The session is still good for the next message.
    send_to(&pool, "a@example.org")
        .await
        .expect("an ASCII address");

    let (port, seen) = relay_with(Script {
        keywords: &["SMTPUTF8"],
        ..Script::default()
    })
    .await;
    let pool = pool_at("smtp://", port, "", Duration::from_secs(5));
    send_to(&pool, "jürgen@example.org")
        .await
        .expect("SMTPUTF8 offered");
    let seen = seen.lock().unwrap();
    assert!(
        seen.commands
            .iter()
            .any(|c| c.starts_with("MAIL FROM:<LIST@EXAMPLE.ORG>") && c.ends_with(" SMTPUTF8")),
        "{:?}",
        seen.commands
    );
    assert_eq!(seen.messages.len(), 1);
}

/// Waits up to five seconds for `check` to hold of what the relay saw.
async fn until(seen: &Mutex<Seen>, what: &str, check: impl Fn(&Seen) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check(&seen.lock().unwrap()) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sessions that end normally say QUIT: unused for the idle time, or the pool dropped.
/// One that failed is dropped without it.
#[tokio::test]
async fn sessions_that_end_normally_end_with_quit() {
    let (port, seen) = scripted_relay().await;
    let mut pool = pool_at("smtp://", port, "", Duration::from_secs(5));
    pool.idle = Duration::from_millis(200);
    send_to(&pool, "a@example.org").await.expect("sent");
    until(&seen, "QUIT after idling", |s| s.quits == 1 && s.ended == 1).await;
    // The next message opens a new session; dropping the pool closes it with QUIT.
    send_to(&pool, "b@example.org").await.expect("sent again");
    drop(pool);
    until(&seen, "QUIT at the pool's end", |s| {
        s.quits == 2 && s.ended == 2
    })
    .await;
    // `close` (the sender stopping) waits for the QUIT, and refuses later sends.
    let pool = pool_at("smtp://", port, "", Duration::from_secs(5));
    send_to(&pool, "c@example.org").await.expect("sent");
    pool.close().await;
    assert_eq!(seen.lock().unwrap().quits, 3, "close waited for the QUIT");
    let late = send_to(&pool, "d@example.org").await.expect_err("closed");
    assert_eq!((late.stage, late.class), (Stage::Local, Class::Transient));

    let (port, seen) = relay_with(answering(|l| {
        (l == ".").then_some("554 5.7.1 message refused\r\n")
    }))
    .await;
    let pool = pool_at("smtp://", port, "", Duration::from_secs(5));
    send_to(&pool, "a@example.org").await.expect_err("refused");
    until(&seen, "the failed session's end", |s| s.ended == 1).await;
    assert_eq!(seen.lock().unwrap().quits, 0, "no QUIT after a failure");
}

/// Issue 15, item 4: a sender that gives up while the worker waits for its crash-bound
/// permit has recorded a retry, so the worker must not send: one delivery per recipient.
#[tokio::test]
async fn a_message_whose_sender_gave_up_during_the_permit_wait_is_not_sent() {
    let (port, seen) = scripted_relay().await;
    let pool = pool_at("smtp://", port, "", Duration::from_secs(5));
    let gate = Arc::new(Semaphore::new(1));
    // The record path is stalled: every permit is held.
    let held = gate.clone().acquire_owned().await.unwrap();
    let body = "Subject: once\r\n\r\nonly once\r\n";
    let mut permit = None;
    let sending = send(
        &pool,
        &gate,
        &mut permit,
        ("list@example.org", "a@example.org"),
        body,
    );
    // The sender's time limit fires while the worker waits inside DATA for the permit.
    let gave_up = tokio::time::timeout(Duration::from_millis(300), sending).await;
    assert!(
        gave_up.is_err(),
        "the send was still waiting for its permit"
    );
    until(&seen, "the envelope", |s| {
        s.commands.iter().any(|c| c == "DATA")
    })
    .await;
    drop(held);
    until(&seen, "the worker to act", |s| {
        s.ended == 1 || !s.messages.is_empty()
    })
    .await;
    assert!(
        seen.lock().unwrap().messages.is_empty(),
        "sent although abandoned"
    );
    // The sender's retry delivers it, once.
    let mut permit = None;
    send(
        &pool,
        &gate,
        &mut permit,
        ("list@example.org", "a@example.org"),
        body,
    )
    .await
    .expect("the retry");
    assert_eq!(seen.lock().unwrap().messages, vec![body.to_owned()]);
}

const TEST_CA: &[u8] = include_bytes!("testdata/ca.pem");

/// The relay's certificate for 127.0.0.1 (see testdata/README.md).
fn test_tls() -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let chain = CertificateDer::pem_slice_iter(include_bytes!("testdata/relay.pem"))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(include_bytes!("testdata/relay.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A scripted relay that speaks TLS from the first byte, as `smtps://` relays do.
async fn tls_relay(script: Script, acceptor: tokio_rustls::TlsAcceptor) -> (u16, Arc<Mutex<Seen>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (log, acceptor) = (log.clone(), acceptor.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(socket).await {
                    serve(tls, script, &log).await;
                }
                log.lock().unwrap().ended += 1;
            });
        }
    });
    (port, seen)
}

/// `smtps://` goes through the same pool: pipelined, staged, and tagged on failure.
#[tokio::test]
async fn implicit_tls_relays_use_the_same_pool_and_stages() {
    let acceptor = test_tls();
    let (port, seen) = tls_relay(Script::default(), acceptor.clone()).await;
    let relay = Relay::parse(&format!("smtps://127.0.0.1:{port}")).unwrap();
    let pool = Pool::over(
        session::Connector::with_test_ca(relay, Duration::from_secs(5), TEST_CA),
        1,
    );
    send_to(&pool, "a@example.org")
        .await
        .expect("sent over TLS");
    send_to(&pool, "b@example.org")
        .await
        .expect("again, same session");
    assert_eq!(seen.lock().unwrap().messages.len(), 2);
    assert!(
        seen.lock()
            .unwrap()
            .chunks
            .iter()
            .any(|c| c.ends_with("RCPT TO:<b@example.org>\r\nDATA\r\n")),
        "pipelined over TLS"
    );

    let auth = Script {
        keywords: &["AUTH PLAIN"],
        answer: |l| {
            l.starts_with("AUTH")
                .then_some("535 5.7.8 bad credentials\r\n")
        },
        ..Script::default()
    };
    let (port, _) = tls_relay(auth, acceptor).await;
    let relay = Relay::parse(&format!("smtps://u:secret@127.0.0.1:{port}")).unwrap();
    let pool = Pool::over(
        session::Connector::with_test_ca(relay, Duration::from_secs(5), TEST_CA),
        1,
    );
    let e = send_to(&pool, "a@example.org").await.expect_err("535");
    assert_eq!(
        (e.stage, e.class, e.code, e.enhanced.as_deref()),
        (Stage::Auth, Class::RelayFault, Some(535), Some("5.7.8"))
    );

    // A certificate nobody vouches for is a relay fault at connect.
    let (port, _) = tls_relay(Script::default(), test_tls()).await;
    let pool = pool_at("smtps://", port, "", Duration::from_secs(5));
    let e = send_to(&pool, "a@example.org")
        .await
        .expect_err("untrusted");
    assert_eq!(
        (e.stage, e.class),
        (Stage::Connect, Class::RelayFault),
        "{e}"
    );
}

/// Reads one CRLF line from the plain socket, byte by byte (nothing past it: the TLS
/// handshake follows).
async fn plain_line(socket: &mut tokio::net::TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") {
        if socket.read(&mut byte).await.unwrap_or(0) == 0 {
            break;
        }
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}

/// A relay that offers STARTTLS, then speaks `script` over TLS.
async fn starttls_relay(script: Script) -> (u16, Arc<Mutex<Seen>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let log = seen.clone();
    let acceptor = test_tls();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (log, acceptor) = (log.clone(), acceptor.clone());
            tokio::spawn(async move {
                socket.write_all(b"220 relay ready\r\n").await.unwrap();
                loop {
                    let line = plain_line(&mut socket).await;
                    if line.is_empty() {
                        break;
                    }
                    log.lock()
                        .unwrap()
                        .commands
                        .push(line.trim_end().to_owned());
                    if line.to_ascii_uppercase().starts_with("STARTTLS") {
                        socket.write_all(b"220 go ahead\r\n").await.unwrap();
                        if let Ok(tls) = acceptor.accept(socket).await {
                            let after = Script {
                                greeting: Some(""),
                                ..script
                            };
                            serve(tls, after, &log).await;
                        }
                        break;
                    }
                    let _ = socket.write_all(b"250-relay\r\n250 STARTTLS\r\n").await;
                }
                log.lock().unwrap().ended += 1;
            });
        }
    });
    (port, seen)
}

/// `tls=required` upgrades the session before anything else is said.
#[tokio::test]
async fn starttls_upgrades_before_the_envelope() {
    let (port, seen) = starttls_relay(Script::default()).await;
    let relay = Relay::parse(&format!("smtp://127.0.0.1:{port}?tls=required")).unwrap();
    let pool = Pool::over(
        session::Connector::with_test_ca(relay, Duration::from_secs(5), TEST_CA),
        1,
    );
    send_to(&pool, "a@example.org")
        .await
        .expect("sent over STARTTLS");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.messages.len(), 1);
    let starttls = seen.commands.iter().position(|c| c == "STARTTLS");
    let mail = seen.commands.iter().position(|c| c.starts_with("MAIL"));
    assert!(starttls.is_some() && starttls < mail, "{:?}", seen.commands);
}

/// Messages queued behind a silent relay's sessions outlast the pool's whole-send limit
/// before a session is free: they too are relay faults, not attempts against the message.
#[tokio::test]
async fn messages_waiting_for_a_silent_relay_are_relay_faults_too() {
    let (port, _) = relay_with(Script {
        greeting: None,
        ..Script::default()
    })
    .await;
    let pool = pool_at("smtp://", port, "", Duration::from_millis(200));
    let sends = (0..6).map(|i| {
        let pool = &pool;
        async move { send_to(pool, &format!("p{i}@example.org")).await }
    });
    let results = futures_util::future::join_all(sends).await;
    let stages: Vec<_> = results
        .iter()
        .map(|r| r.as_ref().map_err(|e| (e.stage, e.class)))
        .collect();
    assert!(
        stages.iter().all(|r| matches!(
            r,
            Err((Stage::Greeting | Stage::Connect, Class::RelayFault))
        )),
        "{stages:?}"
    );
    assert!(
        stages.iter().any(|r| matches!(r, Err((Stage::Connect, _)))),
        "some waited out the limit in the queue: {stages:?}"
    );
}

/// The same with the pool's own whole-send limit (three timeouts): the send comes back a
/// retry at DATA, and the message is never written after it.
#[tokio::test]
async fn the_pools_own_limit_abandons_a_message_stuck_before_its_permit() {
    let (port, seen) = scripted_relay().await;
    let pool = pool_at("smtp://", port, "", Duration::from_millis(100));
    let gate = Arc::new(Semaphore::new(1));
    let held = gate.clone().acquire_owned().await.unwrap();
    let body = "Subject: once\r\n\r\nonly once\r\n";
    let mut permit = None;
    let e = send(
        &pool,
        &gate,
        &mut permit,
        ("list@example.org", "a@example.org"),
        body,
    )
    .await
    .expect_err("the limit fires while the permit is held");
    assert_eq!((e.stage, e.class), (Stage::Data, Class::Transient), "{e}");
    assert!(permit.is_none());
    drop(held);
    until(&seen, "the worker to act", |s| {
        s.ended == 1 || !s.messages.is_empty()
    })
    .await;
    assert!(
        seen.lock().unwrap().messages.is_empty(),
        "sent although abandoned"
    );
}

#[test]
fn a_job_is_committed_or_abandoned_never_both() {
    let reached = Reached::default();
    assert_eq!(reached.abandon(), Ok(None), "still queued");
    assert!(!reached.commit(), "abandoned first");
    reached.mark(Stage::Data);
    assert!(reached.abandoned(), "marks don't revive it");

    let reached = Reached::default();
    reached.mark(Stage::Data);
    assert!(reached.commit());
    assert_eq!(
        reached.abandon(),
        Err(()),
        "on the wire: its answer is awaited"
    );
}
