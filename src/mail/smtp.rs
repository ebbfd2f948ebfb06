//! Our own SMTP connection pool over lettre's protocol client.
//!
//! lettre's pool does not set TCP_NODELAY. It writes a message body and the closing
//! `CRLF.CRLF` as two writes, so Nagle's algorithm holds the terminator until the relay ACKs
//! the body, and the relay delays that ACK (40 ms on Linux) because it has nothing to say yet.
//! That caps a connection at about 25 messages a second. Here we open the TCP connection
//! ourselves with NODELAY and hand it to lettre's `AsyncSmtpConnection`, which still does
//! EHLO, STARTTLS, AUTH and the SMTP dialogue.
//!
//! The pool: at most `size` connections, idle ones kept for reuse for up to a minute. A
//! connection that saw any error is dropped (lettre has already sent QUIT on it).

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use lettre::{
    address::Envelope,
    transport::smtp::{
        authentication::{Credentials, Mechanism},
        client::{AsyncSmtpConnection, TlsParameters},
        extension::ClientId,
    },
};
use tokio::{net::TcpStream, sync::Semaphore};

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
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
    slots: Semaphore,
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

    pub async fn send(&self, envelope: &Envelope, bytes: &[u8]) -> Result<(), SendError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| SendError::Transient("pool closed".into()))?;
        let mut conn = match self.take_idle() {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        match conn.send(envelope, bytes).await {
            Ok(_) => {
                self.idle
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((conn, Instant::now()));
                Ok(())
            }
            // lettre has already aborted (QUIT and close) the connection on any error.
            Err(e) => Err(super::transport::classify(e)),
        }
    }

    fn take_idle(&self) -> Option<AsyncSmtpConnection> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((conn, since)) = idle.pop() {
            // A relay closes idle sessions after a while; don't bet a message on an old one.
            if since.elapsed() < IDLE_FOR && !conn.has_broken() {
                return Some(conn);
            }
        }
        None
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
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
        if let Some((user, pass)) = &r.credentials {
            conn.auth(
                &[Mechanism::Plain, Mechanism::Login],
                &Credentials::new(user.clone(), pass.clone()),
            )
            .await
            .map_err(super::transport::classify)?;
        }
        Ok(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
