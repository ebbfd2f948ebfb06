//! A worker of the pool: takes jobs from the queue one at a time, over its own session.
//!
//! A job goes through two halves. [`Worker::stage`] opens the session if needed and
//! takes it into DATA for the job (the envelope accepted). [`Worker::deliver`] then waits
//! for the sender's crash-bound permit (`gate`), checks that the sender still wants the
//! answer, and writes the message; when another job is already queued and the relay
//! pipelines, that job's envelope rides behind the terminating dot, and the job comes
//! back [`Carried::Staged`]. A busy session so spends one round trip per message.
//!
//! After an error the session is dropped without QUIT: after a pipelined refusal it may
//! be inside DATA, where QUIT would be read as message text and its answer never come, and
//! a relay that sees a session end inside DATA discards that message. A session that ends
//! normally (unused for `idle`, or the pool dropped) ends with QUIT.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{
    Job,
    error::{SendError, Stage},
    pipeline::{envelope_commands, mail_parameters, offer_envelope, read_replies, send_message},
    session::{Connector, Session},
};

/// A job a worker carries over to its next turn.
enum Carried {
    /// Its envelope was written behind the last message and accepted: the session is
    /// inside DATA and only this job's message may follow.
    Staged(Job),
    /// It never reached the relay as a message (its session failed): start it over.
    Fresh(Job),
}

struct Worker {
    connector: Arc<Connector>,
    queue: flume::Receiver<Job>,
    session: Option<Session>,
    idle: Duration,
    closing: CancellationToken,
}

/// The queue loop; it ends, with QUIT, when the pool is closed or dropped.
pub(super) async fn work(
    connector: Arc<Connector>,
    queue: flume::Receiver<Job>,
    idle: Duration,
    closing: CancellationToken,
) {
    let mut worker = Worker {
        connector,
        queue,
        session: None,
        idle,
        closing,
    };
    let mut carried: Option<Carried> = None;
    loop {
        let staged = match carried.take() {
            Some(Carried::Staged(job)) => Some(job),
            Some(Carried::Fresh(job)) => worker.stage(job).await,
            None => match worker.next().await {
                Some(job) => worker.stage(job).await,
                None => break,
            },
        };
        if let Some(job) = staged {
            carried = worker.deliver(job).await;
        }
    }
    if let Some(session) = worker.session.take() {
        session.quit().await;
    }
    // Jobs queued as the pool closed are answered, not left to their time limit.
    while let Ok(job) = worker.queue.try_recv() {
        finish(
            job,
            Err(SendError::interrupted("the SMTP pool has stopped")),
            None,
        );
    }
}

impl Worker {
    /// The next job, or `None` once the pool closes. The session is closed with QUIT
    /// once it has been unused for `idle` (a relay closes idle sessions after a while;
    /// don't bet a message on one).
    async fn next(&mut self) -> Option<Job> {
        loop {
            let left = match &self.session {
                Some(session) => self.idle.saturating_sub(session.used.elapsed()),
                None => Duration::MAX,
            };
            tokio::select! {
                biased;
                () = self.closing.cancelled() => return None,
                job = self.queue.recv_async() => return job.ok(),
                () = tokio::time::sleep(left), if self.session.is_some() => self.close(),
            }
        }
    }

    /// Ends an idle session with QUIT, without holding up the next job.
    fn close(&mut self) {
        if let Some(session) = self.session.take()
            && !session.smtp.has_broken()
        {
            tokio::spawn(session.quit());
        }
    }

    /// Takes a session into DATA for `job`, or finishes the job with why not.
    async fn stage(&mut self, job: Job) -> Option<Job> {
        if job.done.is_closed() || job.reached.abandoned() {
            // The sender gave up waiting (its time limit) and has recorded a retry.
            return None;
        }
        job.reached.mark(Stage::Connect);
        if self.session.as_ref().is_some_and(|s| s.smtp.has_broken()) {
            self.session = None;
        } else if self
            .session
            .as_ref()
            .is_some_and(|s| s.used.elapsed() >= self.idle)
        {
            self.close();
        }
        let session = match self.session.as_mut() {
            Some(s) => s,
            None => match self.connector.open().await {
                Ok(s) => self.session.insert(s),
                Err(e) => {
                    finish(job, Err(e), None);
                    return None;
                }
            },
        };
        let params = match mail_parameters(session, &job.envelope, &job.bytes) {
            Ok(p) => p,
            Err(e) => {
                // Nothing went on the wire; the session stays good.
                finish(job, Err(e), None);
                return None;
            }
        };
        job.reached.mark(Stage::Mail);
        if let Err(e) = offer_envelope(session, &job.envelope, params).await {
            self.session = None;
            finish(job, Err(e), None);
            return None;
        }
        job.reached.mark(Stage::Data);
        Some(job)
    }

    /// Sends the message of `job`, whose session is inside DATA, under its permit.
    async fn deliver(&mut self, job: Job) -> Option<Carried> {
        if job.done.is_closed() || job.reached.abandoned() {
            // Nobody would record it: don't let the relay accept it. Inside DATA, the
            // only way out is to drop the session.
            self.session = None;
            return None;
        }
        let permit = match take(&job.gate).await {
            Ok(p) => p,
            Err(e) => {
                self.session = None;
                finish(job, Err(e), None);
                return None;
            }
        };
        if !job.reached.commit() || job.done.is_closed() {
            // The sender gave up while the permit was awaited, and records a retry:
            // sending now would deliver the message twice.
            self.session = None;
            return None;
        }
        let Some(session) = self.session.as_mut() else {
            let lost = SendError::no_reply(Stage::Data, "session lost");
            finish(job, Err(lost), Some(permit));
            return None;
        };
        let next = session
            .pipelining
            .then(|| self.queue.try_recv().ok())
            .flatten();
        let behind = next.as_ref().and_then(|n| ride_behind(session, &job, n));
        if let (Some(n), Some(_)) = (&next, &behind) {
            n.reached.mark(Stage::Mail);
        }
        let writing = Instant::now();
        let sent = send_message(session, &job.bytes, behind.as_deref()).await;
        metrics::histogram!(crate::telemetry::RELAY_REPLY).record(writing.elapsed().as_secs_f64());
        if sent.is_err() {
            self.session = None;
            finish(job, sent, Some(permit));
            // Its envelope may have gone, but never its message.
            return next.map(Carried::Fresh);
        }
        session.used = Instant::now();
        finish(job, sent, Some(permit));
        let next = next?;
        if behind.is_none() {
            return Some(Carried::Fresh(next));
        }
        match read_replies(session, next.envelope.to().len(), None).await {
            Ok(()) => {
                next.reached.mark(Stage::Data);
                Some(Carried::Staged(next))
            }
            Err(e) => {
                self.session = None;
                finish(next, Err(e), None);
                None
            }
        }
    }
}

/// The commands of `next`'s envelope, if they can ride behind `job`'s terminating dot.
fn ride_behind(session: &Session, job: &Job, next: &Job) -> Option<String> {
    if next.done.is_closed() || next.reached.abandoned() || std::str::from_utf8(&job.bytes).is_err()
    {
        return None;
    }
    let params = mail_parameters(session, &next.envelope, &next.bytes).ok()?;
    Some(envelope_commands(&next.envelope, params))
}

fn finish(job: Job, result: Result<(), SendError>, permit: Option<OwnedSemaphorePermit>) {
    // The sender may have given up waiting (its own time limit); the permit then goes.
    let _ = job.done.send((result, permit));
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
