//! Our own SMTP connection pool over lettre's protocol client.
//!
//! lettre's pool does not set TCP_NODELAY. It writes a message body and the closing
//! `CRLF.CRLF` as two writes, so Nagle's algorithm holds the terminator until the relay ACKs
//! the body, and the relay delays that ACK (40 ms on Linux) because it has nothing to say yet.
//! That caps a connection at about 25 messages a second. Here we open the TCP connection
//! ourselves with NODELAY (and TLS on it for `smtps://`) and hand it to lettre's
//! `AsyncSmtpConnection`, which speaks the SMTP dialogue. One code path serves every relay,
//! so every outcome carries the [`Stage`](error::Stage) it happened at.
//!
//! How a message flows: [`Pool::send`] puts a job on one queue and waits for its answer.
//! `size` workers ([`worker`]) take jobs from the queue, each over its own session
//! ([`session`]: connect, greeting, EHLO, STARTTLS, AUTH, each under `mail.smtp_timeout`,
//! and QUIT at the end). A worker takes its session into DATA for the job ([`pipeline`]:
//! `MAIL`, `RCPT` and `DATA` in one write where the relay offers PIPELINING, else one at a
//! time), takes the sender's permit to have one more message accepted but not yet recorded,
//! then writes the dot-stuffed message, and behind its terminating dot the envelope of the
//! next job if one is already queued. A busy session so spends one round trip per message.
//! [`error`] says what each failure means for the message, the subscriber and the relay.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

use lettre::address::Envelope;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub mod error;
mod pipeline;
pub mod session;
mod worker;

pub use self::session::{Relay, RelayCheck, Starttls, check_relay, redact_url};
use self::{
    error::{SendError, Stage},
    session::Connector,
};

/// The pool: `size` workers, each owning at most one SMTP session, all taking jobs from
/// one queue. A session is dropped after any error, and closed with QUIT after a minute
/// unused, at [`Pool::close`], or when the pool is dropped.
pub struct Pool {
    connector: Arc<Connector>,
    size: usize,
    idle: Duration,
    /// The bound on one whole send, queue wait included.
    limit: Duration,
    jobs: flume::Sender<Job>,
    queue: flume::Receiver<Job>,
    workers: std::sync::Once,
    running: TaskTracker,
    closing: CancellationToken,
}

/// One message for a worker, and where to answer.
struct Job {
    envelope: Envelope,
    bytes: Vec<u8>,
    gate: Arc<Semaphore>,
    done: oneshot::Sender<Finished>,
    reached: Arc<Reached>,
}

/// A job's result, with the `gate` permit if one was taken.
type Finished = (Result<(), SendError>, Option<OwnedSemaphorePermit>);

/// How far a job got, and who decides its fate when the sender's time limit fires.
///
/// The worker marks each stage; before it writes the message it *commits* the job, and
/// the sender whose limit fires *abandons* it, both in one atomic step, so exactly one of
/// them wins. A committed message's answer is awaited (the worker's own reply timeout
/// bounds it); an abandoned one is never written, and the sender records a retry. Without
/// this, a sender giving up just as the message went would record a retry of a message the
/// relay accepts: a duplicate without any crash.
#[derive(Default)]
struct Reached(AtomicU8);

/// The stages a worker marks, in order (0 is "still queued").
const MARKED: [Stage; 4] = [Stage::Connect, Stage::Mail, Stage::Data, Stage::EndOfData];
const COMMITTED: u8 = MARKED.len() as u8;
const ABANDONED: u8 = u8::MAX;

impl Reached {
    /// Records progress, unless the sender has abandoned the job.
    fn mark(&self, stage: Stage) {
        let at = MARKED.iter().position(|s| *s == stage).map_or(0, |i| i + 1) as u8;
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                (now != ABANDONED).then_some(at)
            });
    }

    fn abandoned(&self) -> bool {
        self.0.load(Ordering::Acquire) == ABANDONED
    }

    /// The worker's claim to write the message; `false` if the sender gave up first.
    fn commit(&self) -> bool {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                (now != ABANDONED).then_some(COMMITTED)
            })
            .is_ok()
    }

    /// The sender's giving up: the stage the job had reached, or `Err` if the message
    /// is already on its way (then its answer must be awaited).
    fn abandon(&self) -> Result<Option<Stage>, ()> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                (now < COMMITTED).then_some(ABANDONED)
            })
            .map(|was| {
                (was as usize)
                    .checked_sub(1)
                    .and_then(|i| MARKED.get(i).copied())
            })
            .map_err(drop)
    }
}

const IDLE_FOR: Duration = Duration::from_secs(60);

impl Pool {
    /// A pool of `size` sessions to `relay`, each step and reply awaited at most
    /// `timeout`, and one whole send (its wait in the queue included) three times that.
    pub fn new(relay: Relay, size: u32, timeout: Duration) -> Self {
        Self::over(Connector::new(relay, timeout), size)
    }

    fn over(connector: Connector, size: u32) -> Self {
        let (jobs, queue) = flume::unbounded();
        Self {
            limit: connector.timeout() * 3,
            connector: Arc::new(connector),
            size: size.max(1) as usize,
            idle: IDLE_FOR,
            jobs,
            queue,
            workers: std::sync::Once::new(),
            running: TaskTracker::new(),
            closing: CancellationToken::new(),
        }
    }

    /// Ends every session with QUIT once its message in hand is done, and waits for that,
    /// at most about one `mail.smtp_timeout`. Later sends fail as interrupted.
    pub async fn close(&self) {
        self.closing.cancel();
        self.running.close();
        let bound = self.connector.timeout() + Duration::from_secs(1);
        let _ = tokio::time::timeout(bound, self.running.wait()).await;
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
        if self.closing.is_cancelled() {
            return Err(SendError::interrupted("the SMTP pool has stopped"));
        }
        self.workers.call_once(|| {
            for _ in 0..self.size {
                let (connector, queue) = (Arc::clone(&self.connector), self.queue.clone());
                let closing = self.closing.clone();
                self.running
                    .spawn(worker::work(connector, queue, self.idle, closing));
            }
        });
        let (done, finished) = oneshot::channel();
        let reached = Arc::new(Reached::default());
        let job = Job {
            envelope: envelope.clone(),
            bytes: bytes.to_vec(),
            gate: Arc::clone(gate),
            done,
            reached: Arc::clone(&reached),
        };
        self.jobs
            .send(job)
            .map_err(|_| SendError::interrupted("the SMTP pool has stopped"))?;
        let mut finished = finished;
        let answer = match tokio::time::timeout(self.limit, &mut finished).await {
            Ok(answer) => answer,
            Err(_) => match reached.abandon() {
                Ok(stage) => Ok((Err(self.gave_up(stage)), None)),
                // The message is on the wire: wait for the relay's word on it.
                Err(()) => finished.await,
            },
        };
        let (result, taken) = answer.unwrap_or_else(|_| {
            let stopped = SendError::interrupted("the SMTP pool has stopped");
            (Err(stopped), None)
        });
        *permit = taken;
        result
    }

    /// The failure of a send that outlasted the limit, at the stage its job had reached.
    fn gave_up(&self, reached: Option<Stage>) -> SendError {
        let limit = self.limit;
        match reached {
            None => SendError::no_reply(
                Stage::Connect,
                format!("no session to the relay was free within {limit:?}"),
            ),
            Some(stage) => {
                SendError::no_reply(stage, format!("no answer from the relay within {limit:?}"))
            }
        }
    }
}

#[cfg(test)]
mod tests;
