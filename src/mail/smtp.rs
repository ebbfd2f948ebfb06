//! Our own SMTP connection pool over lettre's protocol client.
//!
//! lettre's pool does not set TCP_NODELAY. It writes a message body and the closing
//! `CRLF.CRLF` as two writes, so Nagle's algorithm holds the terminator until the relay ACKs
//! the body, and the relay delays that ACK (40 ms on Linux) because it has nothing to say yet.
//! That caps a connection at about 25 messages a second. Here we open the TCP connection
//! ourselves with NODELAY and hand it to lettre's `AsyncSmtpConnection`, which still does
//! EHLO, STARTTLS, AUTH and the SMTP dialogue.
//!
//! Where the relay offers PIPELINING (RFC 2920), a message takes two round trips instead of
//! four: `MAIL`, `RCPT` and `DATA` go in one write and their replies are read together,
//! then the dot-stuffed body and its terminator go in one write. The sender's permit to
//! have one more message accepted but not yet recorded is taken between the two, so a
//! connection sets up its next message while the last one's outcome is being stored. lettre's client has no
//! pipelining, so those writes go through its `command` (which writes any `Display`) and
//! `read_response`. Messages with non-ASCII content or addresses, which need SMTPUTF8 or
//! 8BITMIME parameters, take lettre's own `send`.
//!
//! The pool: at most `size` connections, idle ones kept for reuse for up to a minute. A
//! connection that saw any error is dropped, after QUIT.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use lettre::{
    address::Envelope,
    transport::smtp::{
        authentication::{Credentials, Mechanism},
        client::{AsyncSmtpConnection, TlsParameters},
        commands::{Data, Ehlo, Mail, Rcpt},
        extension::ClientId,
    },
};
use tokio::{
    net::TcpStream,
    sync::{OwnedSemaphorePermit, Semaphore},
};

use super::transport::SendError;

/// What a `smtp://` URL asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    pub host: String,
    pub port: u16,
    pub starttls: Starttls,
    pub credentials: Option<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Starttls {
    Never,
    /// Use it if the relay offers it.
    Opportunistic,
    /// Refuse to send without it.
    Required,
}

impl Relay {
    /// Parses lettre's `smtp://` form: `smtp://[user:pass@]host[:port][?tls=required|opportunistic]`.
    /// Returns `None` for `smtps://` (implicit TLS), which the caller hands to lettre's pool.
    pub fn parse(url: &str) -> Result<Option<Self>, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("{url:?}: {e}"))?;
        match parsed.scheme() {
            "smtp" => {}
            "smtps" => return Ok(None),
            other => {
                return Err(format!(
                    "unsupported scheme {other:?}; use smtp:// or smtps://"
                ));
            }
        }
        let host = parsed.host_str().ok_or("the URL has no host")?.to_owned();
        let starttls = match parsed
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned())
        {
            None => Starttls::Never,
            Some(v) if v == "required" => Starttls::Required,
            Some(v) if v == "opportunistic" => Starttls::Opportunistic,
            Some(v) => return Err(format!("tls={v:?}: use tls=required or tls=opportunistic")),
        };
        let decode = |s: &str| percent_decode(s);
        let credentials = (!parsed.username().is_empty()).then(|| {
            (
                decode(parsed.username()),
                decode(parsed.password().unwrap_or("")),
            )
        });
        Ok(Some(Self {
            host,
            port: parsed.port().unwrap_or(25),
            starttls,
            credentials,
        }))
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

pub struct Pool {
    relay: Relay,
    timeout: Duration,
    idle: Mutex<Vec<(Connection, Instant)>>,
    slots: Semaphore,
}

/// An open SMTP session and whether the relay pipelines.
struct Connection {
    smtp: AsyncSmtpConnection,
    pipelining: bool,
}

/// Text written as it is: several pipelined commands, or a dot-stuffed body.
struct Raw<'a>(&'a str);

impl std::fmt::Display for Raw<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

const IDLE_FOR: Duration = Duration::from_secs(60);

impl Pool {
    pub fn new(relay: Relay, size: u32, timeout: Duration) -> Self {
        Self {
            relay,
            timeout,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(size.max(1) as usize),
        }
    }

    /// Sends one message; see [`super::Transport::send_gated`] for `gate` and `permit`.
    pub async fn send(
        &self,
        envelope: &Envelope,
        bytes: &[u8],
        gate: &Arc<Semaphore>,
        permit: &mut Option<OwnedSemaphorePermit>,
    ) -> Result<(), SendError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| SendError::Transient("pool closed".into()))?;
        let mut conn = match self.take_idle() {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        match transmit(&mut conn, envelope, bytes, gate, permit).await {
            Ok(()) => {
                self.idle
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((conn, Instant::now()));
                Ok(())
            }
            // Dropped without QUIT: after a pipelined refusal the session may be inside
            // DATA, where QUIT would be read as message text and its answer never come. A
            // relay that sees a session end inside DATA discards the message. (lettre's own
            // `send` has already sent QUIT on its errors.)
            Err(e) => Err(e),
        }
    }

    fn take_idle(&self) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((conn, since)) = idle.pop() {
            // A relay closes idle sessions after a while; don't bet a message on an old one.
            if since.elapsed() < IDLE_FOR && !conn.smtp.has_broken() {
                return Some(conn);
            }
        }
        None
    }

    async fn connect(&self) -> Result<Connection, SendError> {
        let r = &self.relay;
        let transient = |what: &str, e: &dyn std::fmt::Display| {
            SendError::Transient(format!("{what} {}:{}: {e}", r.host, r.port))
        };
        let stream =
            tokio::time::timeout(self.timeout, TcpStream::connect((r.host.as_str(), r.port)))
                .await
                .map_err(|_| transient("timed out connecting to", &"no answer"))?
                .map_err(|e| transient("cannot connect to", &e))?;
        stream
            .set_nodelay(true)
            .map_err(|e| transient("cannot configure the connection to", &e))?;
        let hello = ClientId::default();
        let mut conn = AsyncSmtpConnection::connect_with_transport(Box::new(stream), &hello)
            .await
            .map_err(super::transport::classify)?;
        let wants_tls = match r.starttls {
            Starttls::Never => false,
            Starttls::Opportunistic => conn.can_starttls(),
            Starttls::Required => true,
        };
        if wants_tls {
            let params = TlsParameters::new(r.host.clone())
                .map_err(|e| SendError::Permanent(format!("TLS setup: {e}")))?;
            conn.starttls(params, &hello)
                .await
                .map_err(super::transport::classify)?;
        }
        // lettre keeps only the EHLO keywords it knows, and PIPELINING is not one of them:
        // ask again (before AUTH, which a new EHLO could reset) and read the reply.
        let pipelining = conn
            .command(Ehlo::new(hello.clone()))
            .await
            .map_err(super::transport::classify)?
            .message()
            .any(|line| line.trim().eq_ignore_ascii_case("PIPELINING"));
        if let Some((user, pass)) = &r.credentials {
            conn.auth(
                &[Mechanism::Plain, Mechanism::Login],
                &Credentials::new(user.clone(), pass.clone()),
            )
            .await
            .map_err(super::transport::classify)?;
        }
        Ok(Connection {
            smtp: conn,
            pipelining,
        })
    }
}

/// One message over an open session, taking a permit from `gate` just before the relay
/// can accept it. On error the session is in an unknown state and the caller must abort it.
async fn transmit(
    conn: &mut Connection,
    envelope: &Envelope,
    bytes: &[u8],
    gate: &Arc<Semaphore>,
    permit: &mut Option<OwnedSemaphorePermit>,
) -> Result<(), SendError> {
    let classify = super::transport::classify;
    let plain = std::str::from_utf8(bytes)
        .ok()
        .filter(|text| text.is_ascii())
        .filter(|_| {
            envelope
                .from()
                .into_iter()
                .chain(envelope.to())
                .all(|a| AsRef::<str>::as_ref(a).is_ascii())
        });
    let Some(text) = plain.filter(|_| conn.pipelining) else {
        *permit = Some(take(gate).await?);
        return conn
            .smtp
            .send(envelope, bytes)
            .await
            .map(drop)
            .map_err(classify);
    };
    let mut commands = Mail::new(envelope.from().cloned(), Vec::new()).to_string();
    for to in envelope.to() {
        commands.push_str(&Rcpt::new(to.clone(), Vec::new()).to_string());
    }
    commands.push_str(&Data.to_string());
    // One reply per command, in order. All of them are read even after a refusal, so the
    // first refusal is the one reported (what follows it is only "bad sequence").
    let mut first_error = conn.smtp.command(Raw(&commands)).await.err();
    for _ in 0..envelope.to().len() + 1 {
        let reply = conn.smtp.read_response().await;
        if let Err(e) = reply {
            let broken = e.is_timeout() || !(e.is_transient() || e.is_permanent());
            first_error.get_or_insert(e);
            if broken {
                break;
            }
        }
    }
    if let Some(e) = first_error {
        return Err(classify(e));
    }
    let body = dot_stuffed(text);
    *permit = Some(take(gate).await?);
    conn.smtp
        .command(Raw(&body))
        .await
        .map(drop)
        .map_err(classify)
}

async fn take(gate: &Arc<Semaphore>) -> Result<OwnedSemaphorePermit, SendError> {
    gate.clone()
        .acquire_owned()
        .await
        .map_err(|_| SendError::Transient("shutting down".into()))
}

/// The DATA section for `text`: a dot doubled at the start of every line (RFC 5321
/// 4.5.2), then the terminating `.` line.
fn dot_stuffed(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text;
    if rest.starts_with('.') {
        out.push('.');
    }
    while let Some(at) = rest.find("\n.") {
        out.push_str(&rest[..=at]);
        out.push('.');
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
    if !out.ends_with("\r\n") {
        out.push_str("\r\n");
    }
    out.push_str(".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    /// What the scripted relay saw: every chunk read from the socket, and the messages
    /// after undoing dot-stuffing.
    #[derive(Default)]
    struct Seen {
        chunks: Vec<String>,
        messages: Vec<String>,
    }

    /// A relay that offers PIPELINING, refuses MAIL from an address starting with "busy"
    /// (451) and RCPT to one starting with "gone" (550), and answers DATA with 554 when no
    /// recipient was accepted, as RFC 2920 requires.
    async fn scripted_relay() -> (u16, Arc<Mutex<Seen>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut read = BufReader::new(read);
                    write.write_all(b"220 relay ready\r\n").await.unwrap();
                    let (mut accepted, mut in_data, mut message) = (0, false, String::new());
                    let mut mail_ok = false;
                    loop {
                        let mut chunk = vec![0u8; 8192];
                        let n = if read.buffer().is_empty() {
                            match read.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            }
                        } else {
                            let buffered = read.buffer().len().min(chunk.len());
                            chunk[..buffered].copy_from_slice(&read.buffer()[..buffered]);
                            read.consume(buffered);
                            buffered
                        };
                        let text = String::from_utf8_lossy(&chunk[..n]).into_owned();
                        log.lock().unwrap().chunks.push(text.clone());
                        let mut replies = String::new();
                        for line in text.split_inclusive("\r\n") {
                            if in_data {
                                if line == ".\r\n" {
                                    in_data = false;
                                    let done = std::mem::take(&mut message);
                                    log.lock().unwrap().messages.push(done);
                                    replies.push_str("250 queued\r\n");
                                } else {
                                    message.push_str(line.strip_prefix('.').unwrap_or(line));
                                }
                                continue;
                            }
                            let upper = line.to_ascii_uppercase();
                            let reply = if upper.starts_with("EHLO") {
                                "250-relay\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
                            } else if upper.starts_with("MAIL FROM:<BUSY") {
                                (mail_ok, accepted) = (false, 0);
                                "451 try later\r\n"
                            } else if upper.starts_with("MAIL") {
                                (mail_ok, accepted) = (true, 0);
                                "250 ok\r\n"
                            } else if upper.starts_with("RCPT") && !mail_ok {
                                "503 need MAIL first\r\n"
                            } else if upper.starts_with("RCPT TO:<GONE") {
                                "550 no such user\r\n"
                            } else if upper.starts_with("RCPT") {
                                accepted += 1;
                                "250 ok\r\n"
                            } else if upper.starts_with("DATA") && accepted > 0 {
                                in_data = true;
                                "354 go on\r\n"
                            } else if upper.starts_with("DATA") {
                                "554 no valid recipients\r\n"
                            } else if upper.starts_with("QUIT") {
                                let _ = write.write_all(b"221 bye\r\n").await;
                                return;
                            } else {
                                "502 what\r\n"
                            };
                            replies.push_str(reply);
                        }
                        if !replies.is_empty() && write.write_all(replies.as_bytes()).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        (port, seen)
    }

    fn envelope(from: &str, to: &str) -> Envelope {
        Envelope::new(Some(from.parse().unwrap()), vec![to.parse().unwrap()]).unwrap()
    }

    fn pool(port: u16) -> Pool {
        let relay = Relay::parse(&format!("smtp://127.0.0.1:{port}"))
            .unwrap()
            .unwrap();
        Pool::new(relay, 2, Duration::from_secs(5))
    }

    #[tokio::test]
    async fn pipelines_the_envelope_and_dot_stuffs_the_message() {
        let (port, seen) = scripted_relay().await;
        let pool = pool(port);
        let gate = Arc::new(Semaphore::new(1));
        let body = "Subject: hi\r\n\r\n.starts with a dot\r\n..two\r\nend\r\n";
        let mut permit = None;
        pool.send(
            &envelope("list@example.org", "a@example.org"),
            body.as_bytes(),
            &gate,
            &mut permit,
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
        pool.send(
            &envelope("list@example.org", "b@example.org"),
            body.as_bytes(),
            &gate,
            &mut permit,
        )
        .await
        .expect("sent again");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.messages, vec![body.to_owned(), body.to_owned()]);
        let pipelined = seen
            .chunks
            .iter()
            .filter(|c| {
                c.starts_with("MAIL FROM:<list@example.org>\r\nRCPT TO:<")
                    && c.ends_with("DATA\r\n")
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

    #[tokio::test]
    async fn a_refused_recipient_is_permanent_and_a_refused_sender_transient() {
        let (port, seen) = scripted_relay().await;
        let pool = pool(port);
        let gate = Arc::new(Semaphore::new(1));
        let mut permit = None;
        let gone = pool
            .send(
                &envelope("list@example.org", "gone@example.org"),
                b"Subject: x\r\n\r\nx\r\n",
                &gate,
                &mut permit,
            )
            .await;
        // The 550 is reported, not the 554 that DATA got after it.
        match gone {
            Err(SendError::Permanent(e)) => assert!(e.contains("no such user"), "{e}"),
            other => panic!("expected a permanent failure, got {other:?}"),
        }
        assert!(
            permit.is_none(),
            "nothing was handed over, so nothing to record under a permit"
        );
        let busy = pool
            .send(
                &envelope("busy@example.org", "a@example.org"),
                b"Subject: x\r\n\r\nx\r\n",
                &gate,
                &mut permit,
            )
            .await;
        match busy {
            Err(SendError::Transient(e)) => assert!(e.contains("try later"), "{e}"),
            other => panic!("expected a temporary failure, got {other:?}"),
        }
        // Both sessions were closed after the refusal and a fresh one still works.
        pool.send(
            &envelope("list@example.org", "a@example.org"),
            b"Subject: x\r\n\r\nx\r\n",
            &gate,
            &mut permit,
        )
        .await
        .expect("a good message after refusals");
        assert_eq!(seen.lock().unwrap().messages.len(), 1);
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
            Ok(Some(Relay {
                host: "127.0.0.1".into(),
                port: 2525,
                starttls: Starttls::Never,
                credentials: None
            }))
        );
        assert_eq!(
            Relay::parse("smtp://us%40r:p%3Ass@relay.example.org:587?tls=required"),
            Ok(Some(Relay {
                host: "relay.example.org".into(),
                port: 587,
                starttls: Starttls::Required,
                credentials: Some(("us@r".into(), "p:ss".into()))
            }))
        );
        assert_eq!(Relay::parse("smtps://u:p@relay.example.org"), Ok(None));
        assert!(Relay::parse("smtp://relay?tls=maybe").is_err());
    }
}
