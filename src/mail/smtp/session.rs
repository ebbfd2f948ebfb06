//! Opening and closing one SMTP session, each step under `mail.smtp_timeout`.
//!
//! [`Relay`] is what `mail.smtp_url` asks for. [`Connector::open`] goes through the stages
//! in order, each timed on its own and each failure tagged with its [`Stage`]: connect (TCP
//! with TCP_NODELAY, then the TLS handshake for `smtps://`), the greeting (read here, so
//! a relay that accepts the connection and never speaks costs one timeout at
//! [`Stage::Greeting`]), EHLO, STARTTLS when the URL asks for it, and AUTH. The socket is
//! then handed to lettre's `AsyncSmtpConnection`, which speaks the dialogue. A session
//! that ends normally ends with [`Session::quit`]. [`check_relay`] is the same path for
//! `harborlist check --relay`.

use crate::domain::Secret;
use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use lettre::transport::smtp::{
    authentication::{Credentials, Mechanism},
    client::{AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters},
    commands::Ehlo,
    extension::{ClientId, Extension},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, rustls};

use crate::net::Stream;

use super::error::{SendError, Stage};
use crate::config::{MailSettings, TransportKind};

/// What a `smtp://` or `smtps://` URL asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    pub host: String,
    pub port: u16,
    /// `smtps://`: TLS from the first byte.
    pub implicit_tls: bool,
    pub starttls: Starttls,
    /// The user name and password: the password's `Debug` is `[redacted]`, so a logged or
    /// printed `Relay` never shows it.
    pub credentials: Option<(String, Secret)>,
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
    /// Parses lettre's URL form: `smtp://[user:pass@]host[:port][?tls=required|opportunistic]`
    /// (port 25 by default) or `smtps://[user:pass@]host[:port]` (implicit TLS, port 465).
    pub fn parse(url: &str) -> Result<Self, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("{}: {e}", redact_url(url)))?;
        let implicit_tls = match parsed.scheme() {
            "smtp" => false,
            "smtps" => true,
            other => {
                return Err(format!(
                    "unsupported scheme {other:?}; use smtp:// or smtps://"
                ));
            }
        };
        let host = parsed.host_str().ok_or("the URL has no host")?.to_owned();
        let starttls = match parsed
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned())
        {
            None => Starttls::Never,
            Some(_) if implicit_tls => Starttls::Never,
            Some(v) if v == "required" => Starttls::Required,
            Some(v) if v == "opportunistic" => Starttls::Opportunistic,
            Some(v) => return Err(format!("tls={v:?}: use tls=required or tls=opportunistic")),
        };
        let credentials = (!parsed.username().is_empty()).then(|| {
            (
                percent_decode(parsed.username()),
                Secret::new(percent_decode(parsed.password().unwrap_or(""))),
            )
        });
        let default_port = if implicit_tls { 465 } else { 25 };
        Ok(Self {
            host,
            port: parsed.port().unwrap_or(default_port),
            implicit_tls,
            starttls,
            credentials,
        })
    }

    /// `host:port`, for logs and `check --relay` (never the credentials).
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// `url` with any password replaced by `***`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "(unparseable URL)".to_owned(),
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Opens sessions to one relay.
pub(super) struct Connector {
    relay: Relay,
    timeout: Duration,
    /// For `smtps://`: the roots a relay's certificate must chain to (an error only if
    /// the TLS library refuses its own defaults, reported at the first connect).
    tls: Result<Arc<rustls::ClientConfig>, String>,
    /// Roots trusted for STARTTLS besides lettre's defaults (tests use their own CA).
    starttls_roots: Vec<Certificate>,
}

/// An open SMTP session and what the relay offers.
pub(super) struct Session {
    pub smtp: AsyncSmtpConnection,
    pub pipelining: bool,
    pub used: Instant,
    /// `mail.smtp_timeout`, the bound on each reply.
    pub timeout: Duration,
}

impl Session {
    pub fn offers(&self, extension: Extension) -> bool {
        self.smtp.server_info().supports_feature(extension)
    }

    /// Ends the session politely: QUIT and its reply, under the timeout. Only for a
    /// session between messages (inside DATA, QUIT would be read as message text).
    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(self.timeout, self.smtp.quit()).await;
    }
}

/// `exchange` under `timeout`, its failure tagged with `stage`: a relay that stops
/// answering costs one timeout, at the stage it stopped at.
pub(super) async fn timed<T>(
    timeout: Duration,
    stage: Stage,
    exchange: impl Future<Output = Result<T, lettre::transport::smtp::Error>>,
) -> Result<T, SendError> {
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(SendError::from_lettre(stage, &e)),
        Err(_) => Err(silent(stage, timeout)),
    }
}

pub(super) fn silent(stage: Stage, timeout: Duration) -> SendError {
    SendError::no_reply(
        stage,
        format!("no answer from the relay within {timeout:?}"),
    )
}

impl Connector {
    pub fn new(relay: Relay, timeout: Duration) -> Self {
        Self::with_roots(relay, timeout, crate::net::web_roots())
    }

    /// A connector whose `smtps://` sessions trust `roots` only.
    fn with_roots(relay: Relay, timeout: Duration, roots: rustls::RootCertStore) -> Self {
        let tls = crate::net::client_config(roots);
        Self {
            relay,
            timeout,
            tls,
            starttls_roots: Vec::new(),
        }
    }

    /// A connector that trusts only the CA in `ca_pem` for `smtps://`, and it too for
    /// STARTTLS: for tests, whose relays have certificates of their own.
    #[cfg(test)]
    pub fn with_test_ca(relay: Relay, timeout: Duration, ca_pem: &[u8]) -> Self {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem).flatten() {
            let _ = roots.add(cert);
        }
        let mut connector = Self::with_roots(relay, timeout, roots);
        connector.starttls_roots = Certificate::from_pem(ca_pem).into_iter().collect();
        connector
    }

    pub fn relay(&self) -> &Relay {
        &self.relay
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Connect, greeting, EHLO, STARTTLS (as asked), AUTH (with credentials).
    pub async fn open(&self) -> Result<Session, SendError> {
        let wire = self.connect().await?;
        let wire = self.greeting(wire).await?;
        let hello = ClientId::default();
        // lettre reads the greeting again (replayed by `Wire`) and sends its EHLO.
        let mut smtp = timed(
            self.timeout,
            Stage::Ehlo,
            AsyncSmtpConnection::connect_with_transport(Box::new(wire), &hello),
        )
        .await?;
        self.starttls(&mut smtp, &hello).await?;
        // lettre keeps only the EHLO keywords it knows, and PIPELINING is not one of them:
        // ask again (before AUTH, which a new EHLO could reset) and read the reply.
        let pipelining = timed(
            self.timeout,
            Stage::Ehlo,
            smtp.command(Ehlo::new(hello.clone())),
        )
        .await?
        .message()
        .any(|line| line.trim().eq_ignore_ascii_case("PIPELINING"));
        if let Some((user, pass)) = &self.relay.credentials {
            let credentials = Credentials::new(user.clone(), pass.expose().to_owned());
            let mechanisms = [Mechanism::Plain, Mechanism::Login];
            timed(
                self.timeout,
                Stage::Auth,
                smtp.auth(&mechanisms, &credentials),
            )
            .await?;
        }
        Ok(Session {
            smtp,
            pipelining,
            used: Instant::now(),
            timeout: self.timeout,
        })
    }

    /// TCP with NODELAY (lettre writes a body and its terminator apart, and Nagle would
    /// hold the second until the relay's delayed ACK), then TLS for `smtps://`.
    async fn connect(&self) -> Result<Wire, SendError> {
        let r = &self.relay;
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            SendError::no_reply(Stage::Connect, format!("{what} {}: {e}", r.address()))
        };
        let tcp = tokio::time::timeout(self.timeout, TcpStream::connect((r.host.as_str(), r.port)))
            .await
            .map_err(|_| failed("timed out connecting to", &"no answer"))?
            .map_err(|e| failed("cannot connect to", &e))?;
        tcp.set_nodelay(true)
            .map_err(|e| failed("cannot configure the connection to", &e))?;
        if !r.implicit_tls {
            return Ok(Wire::new(Stream::Tcp(tcp)));
        }
        let config = self
            .tls
            .as_ref()
            .map_err(|e| failed("cannot set up TLS for", e))?;
        let name = rustls::pki_types::ServerName::try_from(r.host.clone())
            .map_err(|e| failed("TLS: not a valid server name:", &e))?;
        let tls = tokio::time::timeout(
            self.timeout,
            TlsConnector::from(Arc::clone(config)).connect(name, tcp),
        )
        .await
        .map_err(|_| failed("timed out in the TLS handshake with", &"no answer"))?
        .map_err(|e| failed("TLS handshake with", &e))?;
        Ok(Wire::new(Stream::Tls(Box::new(tls))))
    }

    /// Reads the relay's greeting ourselves, so that silence and refusals are told apart
    /// from EHLO's, and keeps it for lettre to read again.
    async fn greeting(&self, mut wire: Wire) -> Result<Wire, SendError> {
        let read = tokio::time::timeout(self.timeout, read_reply(&mut wire.inner)).await;
        let bytes = match read {
            Err(_) => return Err(silent(Stage::Greeting, self.timeout)),
            Ok(Err(e)) => {
                let text = format!("connection lost before the greeting: {e}");
                return Err(SendError::no_reply(Stage::Greeting, text));
            }
            Ok(Ok(bytes)) => bytes,
        };
        let (code, text) = parse_reply(&bytes);
        if code != Some(220) {
            return Err(match code {
                Some(code) => SendError::reply(Stage::Greeting, code, text),
                None => SendError::no_reply(Stage::Greeting, format!("not SMTP: {text}")),
            });
        }
        wire.replay = bytes;
        Ok(wire)
    }

    async fn starttls(
        &self,
        smtp: &mut AsyncSmtpConnection,
        hello: &ClientId,
    ) -> Result<(), SendError> {
        let offered = smtp.can_starttls();
        match self.relay.starttls {
            Starttls::Never => return Ok(()),
            Starttls::Opportunistic if !offered => return Ok(()),
            Starttls::Required if !offered => {
                return Err(SendError::no_reply(
                    Stage::Starttls,
                    "the relay does not offer STARTTLS, and mail.smtp_url asks for \
                     tls=required (use a relay that offers it, or smtps:// for implicit TLS)",
                ));
            }
            _ => {}
        }
        let mut params = TlsParameters::builder(self.relay.host.clone());
        for root in &self.starttls_roots {
            params = params.add_root_certificate(root.clone());
        }
        let params = params
            .build()
            .map_err(|e| SendError::no_reply(Stage::Starttls, format!("TLS setup: {e}")))?;
        timed(self.timeout, Stage::Starttls, smtp.starttls(params, hello)).await
    }
}

/// The result of [`check_relay`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayCheck {
    /// `mail.transport = "file"`: nothing to connect to.
    NoRelay,
    /// Every stage passed and the session ended with QUIT.
    Ok {
        /// `host:port`.
        address: String,
        /// TLS was in use (implicit or by STARTTLS).
        tls: bool,
        /// AUTH was done.
        authenticated: bool,
        pipelining: bool,
    },
}

/// Opens one session to the configured relay, as the sender would, and QUITs: the
/// operator's way to learn of a wrong password or TLS setting before the first mailing.
pub async fn check_relay(mail: &MailSettings) -> Result<RelayCheck, SendError> {
    if mail.transport == TransportKind::File {
        return Ok(RelayCheck::NoRelay);
    }
    let url = mail.relay_url();
    let relay = Relay::parse(url)
        .map_err(|e| SendError::rejected_locally(format!("mail.smtp_url: {e}")))?;
    let connector = Connector::new(relay, mail.smtp_timeout.std());
    let session = connector.open().await?;
    let checked = RelayCheck::Ok {
        address: connector.relay().address(),
        tls: connector.relay().implicit_tls || session.smtp.is_encrypted(),
        authenticated: connector.relay().credentials.is_some(),
        pipelining: session.pipelining,
    };
    session.quit().await;
    Ok(checked)
}

/// The longest greeting we read.
const MAX_GREETING: usize = 16 * 1024;

/// Reads one whole reply (up to its last line, `NNN text`) and nothing after it: before
/// EHLO the relay has nothing else to say.
async fn read_reply(inner: &mut Stream) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(128);
    let mut byte = [0u8; 512];
    loop {
        let n = inner.read(&mut byte).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        bytes.extend_from_slice(&byte[..n]);
        let last_line_done = bytes.ends_with(b"\n")
            && bytes[..bytes.len() - 1]
                .rsplit(|b| *b == b'\n')
                .next()
                .is_some_and(|line| line.get(3) != Some(&b'-'));
        if last_line_done {
            return Ok(bytes);
        }
        if bytes.len() > MAX_GREETING {
            return Err(io::Error::other("greeting too long"));
        }
    }
}

/// The code of a reply and its text, its lines joined by spaces.
fn parse_reply(bytes: &[u8]) -> (Option<u16>, String) {
    let text = String::from_utf8_lossy(bytes);
    let code = text.get(..3).and_then(|c| c.parse().ok());
    let joined = text
        .lines()
        .map(|l| l.get(4..).unwrap_or("").trim())
        .collect::<Vec<_>>()
        .join(" ");
    match code {
        Some(_) => (code, joined),
        None => (None, text.trim().chars().take(200).collect()),
    }
}

/// The socket under a session: TCP, or TLS from the first byte. The greeting, which
/// [`Connector::greeting`] read, is replayed to lettre before the socket is read again.
#[derive(Debug)]
struct Wire {
    replay: Vec<u8>,
    at: usize,
    inner: Stream,
}

impl Wire {
    fn new(inner: Stream) -> Self {
        Self {
            replay: Vec::new(),
            at: 0,
            inner,
        }
    }
}

impl AsyncRead for Wire {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.replay.len() {
            let n = buf.remaining().min(this.replay.len() - this.at);
            buf.put_slice(&this.replay[this.at..this.at + n]);
            this.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Wire {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for Wire {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }
}
