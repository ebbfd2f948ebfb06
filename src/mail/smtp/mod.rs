//! Our own SMTP connection pool over lettre's protocol client.
//!
//! lettre's pool does not set TCP_NODELAY. It writes a message body and the closing
//! `CRLF.CRLF` as two writes, so Nagle's algorithm holds the terminator until the relay ACKs
//! the body, and the relay delays that ACK (40 ms on Linux) because it has nothing to say yet.
//! That caps a connection at about 25 messages a second. Here we open the TCP connection
//! ourselves with NODELAY and hand it to lettre's `AsyncSmtpConnection`, which still does
//! EHLO, STARTTLS, AUTH and the SMTP dialogue.
//!
//! How a message flows: [`Pool::send`] puts a job on one queue and waits for its answer.
//! `size` workers take jobs from the queue, each over its own session. Where the relay
//! offers PIPELINING (RFC 2920), a worker writes `MAIL`, `RCPT` and `DATA` at once and reads
//! their replies together, takes the sender's permit to have one more message accepted but
//! not yet recorded, then writes the dot-stuffed message, and behind its terminating dot
//! the envelope of the next job if one is already queued. A busy session so spends one
//! round trip per message. lettre's client has no pipelining, so those writes go through
//! its `command` (which writes any `Display`) and `read_response`. Messages with non-ASCII
//! content or addresses, which need SMTPUTF8 or 8BITMIME parameters, and relays without
//! PIPELINING take lettre's own `send`.

use std::{
    future::Future,
    sync::Arc,
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
    sync::{OwnedSemaphorePermit, Semaphore, oneshot},
};

pub mod error;

use self::error::{SendError, Stage};

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

/// The pool: `size` workers, each owning at most one SMTP session, all taking jobs from
/// one queue. A session is dropped after any error or a minute unused.
pub struct Pool {
    shared: Arc<Shared>,
    size: usize,
    jobs: flume::Sender<Job>,
    queue: flume::Receiver<Job>,
    workers: std::sync::Once,
}

/// What every worker needs to open a session.
struct Shared {
    relay: Relay,
    timeout: Duration,
}

/// One message for a worker, and where to answer.
struct Job {
    envelope: Envelope,
    bytes: Vec<u8>,
    gate: Arc<Semaphore>,
    done: oneshot::Sender<Finished>,
}

/// A job's result, with the `gate` permit if one was taken.
type Finished = (Result<(), SendError>, Option<OwnedSemaphorePermit>);

/// An open SMTP session and whether the relay pipelines.
struct Connection {
    smtp: AsyncSmtpConnection,
    pipelining: bool,
    used: Instant,
}

/// A job a worker carries over to its next turn.
enum Carried {
    /// Its envelope was written behind the last message and accepted: the session is
    /// inside DATA and only this job's message may follow.
    Staged(Job),
    /// It never reached the relay as a message (its session failed): start it over.
    Fresh(Job),
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
        let (jobs, queue) = flume::unbounded();
        Self {
            shared: Arc::new(Shared { relay, timeout }),
            size: size.max(1) as usize,
            jobs,
            queue,
            workers: std::sync::Once::new(),
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
        // Workers start with the first message, inside the runtime that sends it, and end
        // when the pool is dropped and their queue closes.
        self.workers.call_once(|| {
            for _ in 0..self.size {
                tokio::spawn(work(Arc::clone(&self.shared), self.queue.clone()));
            }
        });
        let (done, finished) = oneshot::channel();
        let job = Job {
            envelope: envelope.clone(),
            bytes: bytes.to_vec(),
            gate: Arc::clone(gate),
            done,
        };
        self.jobs
            .send(job)
            .map_err(|_| SendError::interrupted("the SMTP pool has stopped"))?;
        let (result, taken) = finished.await.unwrap_or_else(|_| {
            let stopped = SendError::interrupted("the SMTP pool has stopped");
            (Err(stopped), None)
        });
        *permit = taken;
        result
    }
}

impl Shared {
    async fn connect(&self) -> Result<Connection, SendError> {
        let r = &self.relay;
        let transient = |what: &str, e: &dyn std::fmt::Display| {
            SendError::no_reply(Stage::Connect, format!("{what} {}:{}: {e}", r.host, r.port))
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
        // The greeting and lettre's first EHLO.
        let mut conn = self
            .step(
                Stage::Greeting,
                AsyncSmtpConnection::connect_with_transport(Box::new(stream), &hello),
            )
            .await?;
        let wants_tls = match r.starttls {
            Starttls::Never => false,
            Starttls::Opportunistic => conn.can_starttls(),
            Starttls::Required => true,
        };
        if wants_tls {
            let params = TlsParameters::new(r.host.clone())
                .map_err(|e| SendError::no_reply(Stage::Starttls, format!("TLS setup: {e}")))?;
            self.step(Stage::Starttls, conn.starttls(params, &hello))
                .await?;
        }
        // lettre keeps only the EHLO keywords it knows, and PIPELINING is not one of them:
        // ask again (before AUTH, which a new EHLO could reset) and read the reply.
        let pipelining = self
            .step(Stage::Ehlo, conn.command(Ehlo::new(hello.clone())))
            .await?
            .message()
            .any(|line| line.trim().eq_ignore_ascii_case("PIPELINING"));
        if let Some((user, pass)) = &r.credentials {
            let credentials = Credentials::new(user.clone(), pass.clone());
            self.step(
                Stage::Auth,
                conn.auth(&[Mechanism::Plain, Mechanism::Login], &credentials),
            )
            .await?;
        }
        Ok(Connection {
            smtp: conn,
            pipelining,
            used: Instant::now(),
        })
    }

    /// One step of opening a session, under the timeout: a relay that accepts the
    /// connection and then says nothing costs one timeout, at that stage.
    async fn step<T>(
        &self,
        stage: Stage,
        exchange: impl Future<Output = Result<T, lettre::transport::smtp::Error>>,
    ) -> Result<T, SendError> {
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(SendError::from_lettre(stage, &e)),
            Err(_) => Err(SendError::no_reply(
                stage,
                format!("no answer from the relay within {:?}", self.timeout),
            )),
        }
    }

    /// `exchange`, or a temporary failure if the relay stops answering: a worker must never
    /// hang on a dead relay with messages queued behind it.
    async fn timed<T>(
        &self,
        exchange: impl Future<Output = Result<T, SendError>>,
    ) -> Result<T, SendError> {
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(SendError::no_reply(
                    Stage::EndOfData,
                    format!("no answer from the relay within {:?}", self.timeout),
                ))
            })
    }
}

/// A worker: takes jobs one at a time and sends each over its session.
///
/// Where the relay pipelines, a message takes two round trips: `MAIL`, `RCPT` and `DATA`
/// in one write (their replies read together), then the message. And when another job is
/// already waiting as a message goes, that job's envelope is written behind the message's
/// terminating dot (RFC 2920 lets message content lead a group), so a busy session spends
/// one round trip per message. The `gate` permit is taken after a job's envelope is
/// accepted and before its message goes.
///
/// After any error the session is dropped without QUIT: after a pipelined refusal it may be
/// inside DATA, where QUIT would be read as message text and its answer never come. A
/// relay that sees a session end inside DATA discards that message.
async fn work(shared: Arc<Shared>, queue: flume::Receiver<Job>) {
    let mut conn: Option<Connection> = None;
    let mut carried: Option<Carried> = None;
    loop {
        let job = match carried.take() {
            Some(Carried::Staged(job)) => job,
            other => {
                let job = match other {
                    Some(Carried::Fresh(job)) => job,
                    _ => match queue.recv_async().await {
                        Ok(job) => job,
                        Err(_) => return,
                    },
                };
                if job.done.is_closed() {
                    // The sender gave up waiting (its time limit) and has recorded a retry.
                    continue;
                }
                // A relay closes idle sessions after a while; don't bet a message on one.
                if conn
                    .as_ref()
                    .is_some_and(|c| c.smtp.has_broken() || c.used.elapsed() >= IDLE_FOR)
                {
                    conn = None;
                }
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => match shared.connect().await {
                        Ok(c) => conn.insert(c),
                        Err(e) => {
                            finish(job, Err(e), None);
                            continue;
                        }
                    },
                };
                if plain(c, &job).is_none() {
                    // Non-ASCII needs SMTPUTF8 or 8BITMIME parameters, and some relays
                    // don't pipeline: lettre's own dialogue, one message at a time.
                    let permit = match take(&job.gate).await {
                        Ok(p) => p,
                        Err(e) => {
                            finish(job, Err(e), None);
                            continue;
                        }
                    };
                    let sent = shared
                        .timed(async {
                            c.smtp
                                .send(&job.envelope, &job.bytes)
                                .await
                                .map(drop)
                                .map_err(|e| SendError::from_lettre(Stage::Rcpt, &e))
                        })
                        .await;
                    match sent {
                        Ok(()) => c.used = Instant::now(),
                        Err(_) => conn = None,
                    }
                    finish(job, sent, Some(permit));
                    continue;
                }
                let commands = envelope_commands(&job.envelope);
                let accepted = shared
                    .timed(async {
                        let first = c.smtp.command(Raw(&commands)).await.err();
                        let first = first.map(|e| (Stage::Mail, e));
                        read_replies(c, job.envelope.to().len(), 1, first).await
                    })
                    .await;
                if let Err(e) = accepted {
                    conn = None;
                    finish(job, Err(e), None);
                    continue;
                }
                job
            }
        };
        // The session is inside DATA for `job`.
        if job.done.is_closed() {
            // Nobody would record it: don't let the relay accept it. Inside DATA, the only
            // way out is to drop the session.
            conn = None;
            continue;
        }
        let Some(c) = conn.as_mut() else {
            finish(
                job,
                Err(SendError::no_reply(Stage::Data, "session lost")),
                None,
            );
            continue;
        };
        let permit = match take(&job.gate).await {
            Ok(p) => p,
            Err(e) => {
                conn = None;
                finish(job, Err(e), None);
                continue;
            }
        };
        let Some(text) = plain(c, &job) else {
            conn = None;
            finish(
                job,
                Err(SendError::no_reply(Stage::Data, "session lost")),
                None,
            );
            continue;
        };
        let mut out = dot_stuffed(text);
        let next = queue.try_recv().ok();
        let behind = next.as_ref().filter(|n| plain(c, n).is_some());
        if let Some(n) = behind {
            out.push_str(&envelope_commands(&n.envelope));
        }
        // Replies to read after the message's own: MAIL, each RCPT, DATA.
        let behind = behind.map(|n| n.envelope.to().len());
        let writing = Instant::now();
        let sent = shared
            .timed(async {
                c.smtp
                    .command(Raw(&out))
                    .await
                    .map(drop)
                    .map_err(|e| SendError::from_lettre(Stage::EndOfData, &e))
            })
            .await;
        metrics::histogram!(crate::telemetry::RELAY_REPLY).record(writing.elapsed().as_secs_f64());
        if sent.is_err() {
            conn = None;
            finish(job, sent, Some(permit));
            // Its envelope may have gone, but never its message.
            carried = next.map(Carried::Fresh);
            continue;
        }
        c.used = Instant::now();
        finish(job, sent, Some(permit));
        let Some(next) = next else { continue };
        let Some(replies) = behind else {
            carried = Some(Carried::Fresh(next));
            continue;
        };
        match shared.timed(read_replies(c, replies, 0, None)).await {
            Ok(()) => carried = Some(Carried::Staged(next)),
            Err(e) => {
                conn = None;
                finish(next, Err(e), None);
            }
        }
    }
}

fn finish(job: Job, result: Result<(), SendError>, permit: Option<OwnedSemaphorePermit>) {
    // The sender may have given up waiting (its own time limit); the permit then goes.
    let _ = job.done.send((result, permit));
}

/// The job's message as text, if it can go the pipelined way: the relay pipelines, and the
/// message and addresses are ASCII.
fn plain<'j>(c: &Connection, job: &'j Job) -> Option<&'j str> {
    let ascii = job
        .envelope
        .from()
        .into_iter()
        .chain(job.envelope.to())
        .all(|a| AsRef::<str>::as_ref(a).is_ascii());
    std::str::from_utf8(&job.bytes)
        .ok()
        .filter(|text| c.pipelining && ascii && text.is_ascii())
}

/// `MAIL`, one `RCPT` per recipient and `DATA`, to go in one write.
fn envelope_commands(envelope: &Envelope) -> String {
    let mut commands = Mail::new(envelope.from().cloned(), Vec::new()).to_string();
    for to in envelope.to() {
        commands.push_str(&Rcpt::new(to.clone(), Vec::new()).to_string());
    }
    commands.push_str(&Data.to_string());
    commands
}

/// Reads the replies to a pipelined `MAIL`, `rcpts` × `RCPT` and `DATA`, in order, from the
/// `skip`-th on (the ones before were read by the caller, `first_error` the first refusal
/// among them). All of them are read even after a refusal, so the first refusal is the
/// one reported (what follows it is only "bad sequence"), with the stage of the command it
/// answered; only a broken session stops the reading.
async fn read_replies(
    c: &mut Connection,
    rcpts: usize,
    skip: usize,
    mut first_error: Option<(Stage, lettre::transport::smtp::Error)>,
) -> Result<(), SendError> {
    for i in skip..rcpts + 2 {
        let stage = match i {
            0 => Stage::Mail,
            i if i <= rcpts => Stage::Rcpt,
            _ => Stage::Data,
        };
        if let Err(e) = c.smtp.read_response().await {
            let broken = e.is_timeout() || !(e.is_transient() || e.is_permanent());
            first_error.get_or_insert((stage, e));
            if broken {
                break;
            }
        }
    }
    match first_error {
        Some((stage, e)) => Err(SendError::from_lettre(stage, &e)),
        None => Ok(()),
    }
}

/// Waits for the sender's permit to have one more message accepted but not yet recorded.
/// The wait is how long the database's half of the crash-bound cycle holds a session up.
async fn take(gate: &Arc<Semaphore>) -> Result<OwnedSemaphorePermit, SendError> {
    let waiting = Instant::now();
    let permit = gate
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| SendError::interrupted("shutting down"));
    metrics::histogram!(crate::telemetry::UNRECORDED_WAIT).record(waiting.elapsed().as_secs_f64());
    permit
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
