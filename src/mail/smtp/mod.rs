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
mod tests;
