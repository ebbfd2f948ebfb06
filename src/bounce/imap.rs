//! The return path's mailbox, read over IMAP (`bounces.imap_url`).
//!
//! This is the way in a small organisation can always have: the mailbox at its mail
//! provider that the envelope sender delivers to. The reader logs in, makes sure
//! `bounces.done_folder` and `bounces.unknown_folder` exist, and then loops:
//!
//! 1. every message in the mailbox not marked deleted is fetched (at most
//!    `bounces.max_size` of it, with `BODY.PEEK[]`, so reading marks nothing seen) and
//!    handed to [`Ingest::handle`];
//! 2. once its report is recorded, the message is moved (`UID MOVE`, or COPY and a
//!    `\Deleted` flag expunged by UID where MOVE is missing) to the done folder, or to the
//!    unknown folder if it was not a report, up to 64 at a time. Nothing is ever deleted;
//! 3. it waits for `bounces.poll`, in IDLE where the server offers it, so a new report is
//!    read as it arrives.
//!
//! A message is moved only after its report is stored. If harborlist stops (or the store
//! fails) in between, the message is still in the mailbox and is read again next time;
//! the stored report's key makes the second reading a no-op.
//!
//! Anything that goes wrong ends the session: the reader logs it naming
//! `bounces.imap_url`, sets `harborlist_bounce_mailbox_up` to 0 and tries again after a
//! growing pause (up to `bounces.poll`, at least a minute for a refused login so a wrong
//! password does not lock the account). A failed login reads nothing, so nobody's score
//! moves.

use std::{collections::HashSet, time::Duration};

use async_imap::{Session, extensions::idle::IdleResponse, types::Capabilities};
use futures_util::TryStreamExt;
use tokio_util::sync::CancellationToken;

mod filing;
mod mailbox;

pub use mailbox::{MailboxCheck, check_mailbox, check_mailbox_trusting};

use filing::{Folders, Read, spelled};
use mailbox::Mailbox;

use super::ingest::Ingest;
use crate::{
    config::{BounceSettings, ImapUrl},
    health::Health,
    net::Stream,
    store::{StoreError, bounces::ReportSource},
};

/// The longest one IMAP command may take before the session is given up.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// The first pause after a failure; it doubles up to `bounces.poll`.
const FIRST_RETRY: Duration = Duration::from_secs(2);
/// The least pause after a refused login: providers lock accounts that retry quickly.
const LOGIN_RETRY: Duration = Duration::from_secs(60);

type ImapSession = Session<Stream>;

/// Why a session with the mailbox ended.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("TLS with {0}: {1}")]
    Tls(String, String),
    #[error(
        "the server refused the login for {user} ({detail}); check the user and password in bounces.imap_url (an @ in the user is written %40)"
    )]
    Login { user: String, detail: String },
    #[error("the server has no folder {folder:?} ({detail}); check the path in bounces.imap_url")]
    NoMailbox { folder: String, detail: String },
    #[error("cannot create the folder {folder:?} ({detail}); create it by hand, or set {key}")]
    Folder {
        folder: String,
        key: &'static str,
        detail: String,
    },
    #[error("the server did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the server does not offer STARTTLS, which ?tls=required asks for")]
    NoStartTls,
    #[error("IMAP: {0}")]
    Protocol(#[from] async_imap::error::Error),
    #[error("recording a report: {0}")]
    Store(#[from] StoreError),
}

impl ImapError {
    /// A short label for the `harborlist_bounce_mailbox_errors_total{reason}` counter.
    fn reason(&self) -> &'static str {
        match self {
            ImapError::Connect(..) | ImapError::Timeout(_) => "connect",
            ImapError::Tls(..) | ImapError::NoStartTls => "tls",
            ImapError::Login { .. } => "login",
            ImapError::NoMailbox { .. } | ImapError::Folder { .. } => "folder",
            ImapError::Protocol(_) => "protocol",
            ImapError::Store(_) => "store",
        }
    }
}

/// Reads reports from the return path's mailbox until stopped.
pub struct Reader {
    mailbox: Mailbox,
    poll: Duration,
    done_folder: String,
    unknown_folder: String,
    max_size: u64,
    ingest: Ingest,
    health: Health,
}

impl Reader {
    pub fn new(url: ImapUrl, settings: &BounceSettings, ingest: Ingest) -> Self {
        Self {
            mailbox: Mailbox::new(url),
            poll: settings.poll.std(),
            done_folder: settings.done_folder.clone(),
            unknown_folder: settings.unknown_folder.clone(),
            max_size: settings.max_size,
            ingest,
            health: Health::default(),
        }
    }

    /// Reports the reader's state to the service's health.
    pub fn with_health(mut self, health: Health) -> Self {
        self.health = health;
        self
    }

    /// `INBOX of user on host:port`, for logs: never the password.
    pub fn describe(&self) -> String {
        self.mailbox.describe()
    }

    /// Reads, moves and waits until `stop` fires; sessions that fail are tried again.
    pub async fn run(self, stop: CancellationToken) {
        let mut failures: u32 = 0;
        metrics::gauge!("harborlist_bounce_mailbox_up").set(0.0);
        while !stop.is_cancelled() {
            let error = match self.session(&stop, &mut failures).await {
                Ok(()) => break,
                Err(e) => e,
            };
            metrics::gauge!("harborlist_bounce_mailbox_up").set(0.0);
            metrics::counter!("harborlist_bounce_mailbox_errors_total", "reason" => error.reason())
                .increment(1);
            failures = failures.saturating_add(1);
            self.health.mailbox_failed(error.to_string());
            let pause = pause(failures, self.poll, &error);
            tracing::error!(
                key = "bounces.imap_url",
                mailbox = %self.describe(),
                error = %error,
                retry_in = ?pause,
                "bounces.imap_url: cannot read the bounce mailbox"
            );
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        metrics::gauge!("harborlist_bounce_mailbox_up").set(0.0);
    }

    /// One logged-in session: read what is there, wait, read again, until stopped.
    async fn session(&self, stop: &CancellationToken, failures: &mut u32) -> Result<(), ImapError> {
        let mut session = self.mailbox.login().await?;
        let caps = timed(session.capabilities()).await??;
        let folders = self.ensure_folders(&mut session).await?;
        metrics::gauge!("harborlist_bounce_mailbox_up").set(1.0);
        self.health.mailbox_up();
        if *failures > 0 {
            tracing::info!(mailbox = %self.describe(), "bounces.imap_url: reading the bounce mailbox again");
        }
        *failures = 0;
        loop {
            self.mailbox.select(&mut session).await?;
            self.drain(&mut session, &caps, &folders).await?;
            if stop.is_cancelled() {
                break;
            }
            session = self.wait(session, &caps, stop).await?;
            if stop.is_cancelled() {
                break;
            }
        }
        // A polite goodbye; the session is over whatever the server says.
        let _ = timed(session.logout()).await;
        Ok(())
    }

    /// The done and unknown folders, created (and subscribed, so mail programs show them)
    /// when missing, and spelled with the server's hierarchy delimiter.
    async fn ensure_folders(&self, session: &mut ImapSession) -> Result<Folders, ImapError> {
        let delimiter = {
            let names: Vec<_> = timed(session.list(Some(""), Some("")))
                .await??
                .try_collect()
                .await?;
            names
                .first()
                .and_then(|n| n.delimiter())
                .unwrap_or("/")
                .to_owned()
        };
        let existing: HashSet<String> = {
            let names: Vec<_> = timed(session.list(Some(""), Some("*")))
                .await??
                .try_collect()
                .await?;
            names.iter().map(|n| n.name().to_owned()).collect()
        };
        let folders = Folders {
            done: spelled(&self.done_folder, &delimiter),
            unknown: spelled(&self.unknown_folder, &delimiter),
        };
        for (folder, key) in [
            (&folders.done, "bounces.done_folder"),
            (&folders.unknown, "bounces.unknown_folder"),
        ] {
            if existing.contains(folder) {
                continue;
            }
            timed(session.create(folder))
                .await?
                .map_err(|e| ImapError::Folder {
                    folder: folder.clone(),
                    key,
                    detail: e.to_string(),
                })?;
            let _ = timed(session.subscribe(folder)).await;
            tracing::info!(%folder, "bounces.imap_url: created a folder for read reports");
        }
        Ok(folders)
    }

    /// Reads every message in the selected mailbox, oldest first, and moves each away.
    async fn drain(
        &self,
        session: &mut ImapSession,
        caps: &Capabilities,
        folders: &Folders,
    ) -> Result<(), ImapError> {
        let mut uids: Vec<u32> = timed(session.uid_search("UNDELETED"))
            .await??
            .into_iter()
            .collect();
        uids.sort_unstable();
        let mut read = Read::default();
        for uid in uids {
            let Some(raw) = self.fetch(session, uid).await? else {
                continue; // gone since the search (another client moved it)
            };
            let ingested = match self.ingest.handle(&raw, ReportSource::Imap, &[]).await {
                Ok(i) => i,
                Err(e) => {
                    // What was recorded before the failure is filed; this one stays.
                    read.file(session, caps, folders).await?;
                    return Err(e.into());
                }
            };
            read.add(uid, ingested.was_report());
            if read.is_full() {
                read.file(session, caps, folders).await?;
            }
        }
        read.file(session, caps, folders).await
    }

    /// The first `bounces.max_size` bytes of one message, without marking it seen.
    async fn fetch(
        &self,
        session: &mut ImapSession,
        uid: u32,
    ) -> Result<Option<Vec<u8>>, ImapError> {
        let query = format!("BODY.PEEK[]<0.{}>", self.max_size);
        let fetched: Vec<_> = timed(session.uid_fetch(uid.to_string(), &query))
            .await??
            .try_collect()
            .await?;
        Ok(fetched
            .iter()
            .find(|f| f.uid == Some(uid) || f.uid.is_none())
            .and_then(|f| f.body())
            .map(<[u8]>::to_vec))
    }

    /// Waits up to `bounces.poll` for new mail (IDLE where offered), or until `stop`.
    async fn wait(
        &self,
        session: ImapSession,
        caps: &Capabilities,
        stop: &CancellationToken,
    ) -> Result<ImapSession, ImapError> {
        if !caps.has_str("IDLE") {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(self.poll) => {}
            }
            return Ok(session);
        }
        let mut idle = session.idle();
        timed(idle.init()).await??;
        let (wait, interrupt) = idle.wait_with_timeout(self.poll);
        let woke = tokio::select! {
            r = wait => Some(r?),
            _ = stop.cancelled() => None,
        };
        drop(interrupt);
        if let Some(IdleResponse::NewData(_)) = woke {
            tracing::debug!("bounces.imap_url: new mail in the bounce mailbox");
        }
        Ok(timed(idle.done()).await??)
    }
}

/// 2 s, 4 s, 8 s … up to `bounces.poll`; a refused login waits at least a minute.
fn pause(failures: u32, poll: Duration, error: &ImapError) -> Duration {
    let grown = FIRST_RETRY.saturating_mul(1 << failures.saturating_sub(1).min(16));
    let pause = grown.min(poll.max(FIRST_RETRY));
    match error {
        ImapError::Login { .. } => pause.max(LOGIN_RETRY),
        _ => pause,
    }
}

async fn timed<F: std::future::Future>(f: F) -> Result<F::Output, ImapError> {
    tokio::time::timeout(COMMAND_TIMEOUT, f)
        .await
        .map_err(|_| ImapError::Timeout(COMMAND_TIMEOUT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_to_the_poll_and_a_refused_login_waits_a_minute() {
        let poll = Duration::from_secs(60);
        let lost = ImapError::Timeout(COMMAND_TIMEOUT);
        let secs: Vec<u64> = (1..=7).map(|n| pause(n, poll, &lost).as_secs()).collect();
        assert_eq!(secs, [2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(pause(u32::MAX, poll, &lost), poll, "no overflow");
        let refused = ImapError::Login {
            user: "bounces@example.org".into(),
            detail: "NO [AUTHENTICATIONFAILED]".into(),
        };
        let quick = Duration::from_secs(1);
        assert_eq!(pause(1, quick, &refused), LOGIN_RETRY);
        let text = refused.to_string();
        assert!(
            text.contains("bounces.imap_url") && text.contains("%40"),
            "{text}"
        );
    }
}
