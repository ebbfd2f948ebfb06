//! The pool against a scripted relay that offers PIPELINING, and the URL parser.

use std::sync::Mutex;

use std::time::Instant;

use super::{
    error::{Class, Stage},
    pipeline::dot_stuffed,
    *,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
async fn serve(socket: tokio::net::TcpStream, script: Script, log: &Mutex<Seen>) {
    let (mut read, mut write) = socket.into_split();
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
