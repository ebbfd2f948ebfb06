//! `bounces.listen`: a small SMTP server (RFC 5321) the site's own MTA hands bounces to,
//! e.g. Postfix's transport `smtp:[127.0.0.1]:2526` for the return path's address.
//!
//! A connection is a [`Session`]: commands are read one line at a time (`lines.rs`, with a
//! length cap and a timeout) and parsed (`command.rs`); `RCPT TO` takes only the return
//! path and its `+TAG` forms (it never relays); `DATA` reads to the lone dot, keeping at
//! most `bounces.max_size` bytes. At the final dot the bytes and the accepted recipients
//! go to [`Ingest::handle`], and the reply is 250 only once the report is recorded: if
//! the store fails the reply is `451 4.3.0`, so the MTA keeps the message and tries again.
//!
//! The [`Listener`] caps concurrent sessions and messages per session. On stop it takes no
//! new connections and lets each session finish the message in flight, then closes it.

mod command;
mod lines;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncWriteExt, BufReader},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::Semaphore,
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use self::{
    command::Command,
    lines::{CommandLine, Data},
};
use super::ingest::Ingest;
use crate::{
    domain::{is_return_path, redact},
    runtime::Live,
    store::bounces::ReportSource,
};

/// The listener's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long the client may take for one command line or one piece of a message
    /// (RFC 5321 §4.5.3.2 asks servers to wait at least five minutes).
    pub timeout: Duration,
    /// Sessions at once; one more is told to come back later (421).
    pub max_connections: usize,
    /// Messages per session, so a session can't hold its place for ever.
    pub max_messages: usize,
    /// Accepted recipients per message.
    pub max_recipients: usize,
    /// Refused or unreadable commands per session before it is closed.
    pub max_errors: usize,
    /// How long a stop waits for the messages in flight.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(300),
            max_connections: 32,
            max_messages: 100,
            max_recipients: 100,
            max_errors: 20,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// RFC 5321 §4.5.3.1.4: 512 bytes for a command line; some slack for long addresses.
const COMMAND_LINE_MAX: usize = 2048;

/// The bound socket and what sessions need.
pub struct Listener {
    tcp: TcpListener,
    ingest: Ingest,
    live: Live,
    limits: Limits,
}

impl Listener {
    pub fn new(tcp: TcpListener, ingest: Ingest, live: Live) -> Self {
        Self {
            tcp,
            ingest,
            live,
            limits: Limits::default(),
        }
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Serves until `stop` fires, then lets the sessions finish the message in flight
    /// (for at most `shutdown_grace`) and returns.
    pub async fn run(self, stop: CancellationToken) {
        let Self {
            tcp,
            ingest,
            live,
            limits,
        } = self;
        let seats = Arc::new(Semaphore::new(limits.max_connections));
        let mut sessions = JoinSet::new();
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => break,
                Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
                accepted = tcp.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment, don't spin.
                    tracing::warn!(error = %e, "bounces.listen: accept failed");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                    }
                }
            };
            let Ok(seat) = seats.clone().try_acquire_owned() else {
                tracing::info!(%peer, "bounces.listen: too many sessions, one turned away");
                let _ = stream.try_write(b"421 4.3.2 Too many connections, try again later\r\n");
                continue;
            };
            let session = Session::new(stream, peer, ingest.clone(), live.clone(), limits);
            let stop = stop.clone();
            sessions.spawn(async move {
                session.run(stop).await;
                drop(seat);
            });
        }
        drop(tcp);
        let drained = tokio::time::timeout(limits.shutdown_grace, async {
            while sessions.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("bounces.listen: sessions still open at the stop were cut off");
            sessions.abort_all();
        }
    }
}

/// What to do after a command.
enum Flow {
    Continue,
    Close,
}

/// One SMTP session: its connection and the transaction in progress.
struct Session {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    peer: SocketAddr,
    /// This end as an address literal, for the greeting: never the MTA's own host name,
    /// which would look like a mail loop to it.
    local: String,
    ingest: Ingest,
    live: Live,
    limits: Limits,
    greeted: bool,
    /// `MAIL FROM` of the transaction in progress (`""` for the null sender).
    from: Option<String>,
    rcpts: Vec<String>,
    messages: usize,
    errors: usize,
}

impl Session {
    fn new(
        stream: TcpStream,
        peer: SocketAddr,
        ingest: Ingest,
        live: Live,
        limits: Limits,
    ) -> Self {
        let local = match stream.local_addr() {
            Ok(SocketAddr::V4(a)) => format!("[{}]", a.ip()),
            Ok(SocketAddr::V6(a)) => format!("[IPv6:{}]", a.ip()),
            Err(_) => "[127.0.0.1]".to_owned(),
        };
        let (read, writer) = stream.into_split();
        Self {
            reader: BufReader::new(read),
            writer,
            peer,
            local,
            ingest,
            live,
            limits,
            greeted: false,
            from: None,
            rcpts: Vec::new(),
            messages: 0,
            errors: 0,
        }
    }

    async fn run(mut self, stop: CancellationToken) {
        let started = std::time::Instant::now();
        let ended = self.serve(&stop).await;
        tracing::debug!(
            peer = %self.peer,
            messages = self.messages,
            errors = self.errors,
            ended,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "bounces.listen: session ended"
        );
    }

    /// Runs the session; returns how it ended, for the log.
    async fn serve(&mut self, stop: &CancellationToken) -> &'static str {
        tracing::debug!(peer = %self.peer, "bounces.listen: session started");
        let greeting = format!("220 {} harborlist bounce listener ESMTP", self.local);
        if self.reply(&greeting).await.is_err() {
            return "write failed";
        }
        loop {
            let line = tokio::select! {
                _ = stop.cancelled() => {
                    let _ = self.reply("421 4.3.2 Shutting down, try again later").await;
                    return "stopping";
                }
                line = lines::read_command(&mut self.reader, COMMAND_LINE_MAX, self.limits.timeout) => line,
            };
            let flow = match line {
                Ok(CommandLine::Line(line)) => self.command(command::parse(&line)).await,
                Ok(CommandLine::TooLong) => self.error("500 5.5.2 Line too long").await,
                Ok(CommandLine::Flood) => {
                    let _ = self.reply("500 5.5.2 Line too long; closing").await;
                    return "line without end";
                }
                Ok(CommandLine::Closed) => return "closed by the client",
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    let _ = self.reply("421 4.4.2 Timeout, closing").await;
                    return "timed out";
                }
                Err(_) => return "read failed",
            };
            match flow {
                Ok(Flow::Continue) if self.errors >= self.limits.max_errors => {
                    let _ = self.reply("421 4.7.0 Too many errors, closing").await;
                    return "too many errors";
                }
                Ok(Flow::Continue) => {}
                Ok(Flow::Close) => return "closed",
                Err(_) => return "write failed",
            }
        }
    }

    async fn command(&mut self, command: Command) -> std::io::Result<Flow> {
        match command {
            Command::Ehlo(_) => self.ehlo().await,
            Command::Helo(_) => {
                self.greeted = true;
                self.reset();
                let reply = format!("250 {}", self.local);
                self.ok(&reply).await
            }
            Command::Mail { from, size } => self.mail(from, size).await,
            Command::Rcpt(to) => self.rcpt(to).await,
            Command::Data => self.data().await,
            Command::Rset => {
                self.reset();
                self.ok("250 2.0.0 OK").await
            }
            Command::Noop => self.ok("250 2.0.0 OK").await,
            Command::Vrfy => {
                self.ok("252 2.1.5 Cannot VRFY user, but will take reports for the return path")
                    .await
            }
            Command::Quit => {
                self.reply("221 2.0.0 Bye").await?;
                Ok(Flow::Close)
            }
            Command::NotImplemented => self.error("502 5.5.1 Command not implemented").await,
            Command::Syntax(why) => self.error(&format!("501 5.5.4 Syntax: {why}")).await,
            Command::Unknown => self.error("500 5.5.2 Command unrecognized").await,
        }
    }

    async fn ehlo(&mut self) -> std::io::Result<Flow> {
        self.greeted = true;
        self.reset();
        let reply = format!(
            "250-{}\r\n250-SIZE {}\r\n250-8BITMIME\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES",
            self.local,
            self.max_size()
        );
        self.ok(&reply).await
    }

    async fn mail(&mut self, from: String, size: Option<u64>) -> std::io::Result<Flow> {
        if !self.greeted {
            return self.error("503 5.5.1 Say EHLO first").await;
        }
        if self.from.is_some() {
            return self.error("503 5.5.1 Nested MAIL command").await;
        }
        if self.messages >= self.limits.max_messages {
            self.reply("421 4.7.0 Too many messages in one session, closing")
                .await?;
            return Ok(Flow::Close);
        }
        let max = self.max_size();
        if size.is_some_and(|s| s > max) {
            tracing::info!(peer = %self.peer, size, max, "bounces.listen: refused a message over bounces.max_size");
            return self
                .ok(&format!("552 5.3.4 Message too big (at most {max} bytes)"))
                .await;
        }
        self.from = Some(from);
        self.ok("250 2.1.0 Sender OK").await
    }

    async fn rcpt(&mut self, to: String) -> std::io::Result<Flow> {
        if self.from.is_none() {
            return self.error("503 5.5.1 Need MAIL first").await;
        }
        let return_path = self.live.current().composer.identity().return_path.clone();
        if !is_return_path(&to, &return_path) {
            tracing::info!(
                peer = %self.peer,
                recipient = %redact(&to),
                "bounces.listen: refused a recipient outside the return path"
            );
            return self
                .error("550 5.1.1 No such mailbox: only the list's return path takes mail here")
                .await;
        }
        if self.rcpts.len() >= self.limits.max_recipients {
            return self.ok("452 4.5.3 Too many recipients").await;
        }
        self.rcpts.push(to);
        self.ok("250 2.1.5 Recipient OK").await
    }

    async fn data(&mut self) -> std::io::Result<Flow> {
        if self.from.is_none() {
            return self.error("503 5.5.1 Need MAIL first").await;
        }
        if self.rcpts.is_empty() {
            return self.error("503 5.5.1 Need RCPT first").await;
        }
        self.reply("354 End data with <CR><LF>.<CR><LF>").await?;
        let max = usize::try_from(self.max_size()).unwrap_or(usize::MAX);
        let data = match lines::read_data(&mut self.reader, max, self.limits.timeout).await {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                self.reply("421 4.4.2 Timeout, closing").await?;
                return Ok(Flow::Close);
            }
            Err(e) => return Err(e),
        };
        let rcpts = std::mem::take(&mut self.rcpts);
        self.from = None;
        self.messages += 1;
        match data {
            Data::Message(raw) => self.hand_over(&raw, &rcpts).await,
            Data::TooBig => {
                tracing::info!(peer = %self.peer, max, "bounces.listen: refused a message over bounces.max_size");
                self.ok("552 5.3.4 Message too big").await
            }
            Data::Closed => Ok(Flow::Close),
        }
    }

    /// Gives the message to [`Ingest`]; 250 only once it is recorded.
    async fn hand_over(&mut self, raw: &[u8], rcpts: &[String]) -> std::io::Result<Flow> {
        match self.ingest.handle(raw, ReportSource::Listener, rcpts).await {
            Ok(ingested) => {
                tracing::debug!(
                    peer = %self.peer,
                    kind = %ingested.kind,
                    bytes = raw.len(),
                    "bounces.listen: message recorded"
                );
                self.ok("250 2.0.0 Report received").await
            }
            Err(e) => {
                tracing::warn!(peer = %self.peer, error = %e, "bounces.listen: could not record a report; the MTA will retry");
                self.ok("451 4.3.0 Could not record the report, try again later")
                    .await
            }
        }
    }

    fn reset(&mut self) {
        self.from = None;
        self.rcpts.clear();
    }

    fn max_size(&self) -> u64 {
        self.live.settings().bounces.as_ref().map_or_else(
            || crate::config::BounceSettings::default().max_size,
            |b| b.max_size,
        )
    }

    /// A reply that goes on with the session.
    async fn ok(&mut self, text: &str) -> std::io::Result<Flow> {
        self.reply(text).await?;
        Ok(Flow::Continue)
    }

    /// A refusal that counts towards `max_errors`.
    async fn error(&mut self, text: &str) -> std::io::Result<Flow> {
        self.errors += 1;
        self.ok(text).await
    }

    async fn reply(&mut self, text: &str) -> std::io::Result<()> {
        let mut bytes = Vec::with_capacity(text.len() + 2);
        bytes.extend_from_slice(text.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        // A client that doesn't read its replies must not hold the session for ever.
        tokio::time::timeout(self.limits.timeout, self.writer.write_all(&bytes))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "reply not read"))?
    }
}
