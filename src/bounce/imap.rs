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

use std::{collections::HashSet, sync::Arc, time::Duration};

use async_imap::{Client, Session, extensions::idle::IdleResponse, types::Capabilities};
use futures_util::TryStreamExt;
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, rustls};
use tokio_util::sync::CancellationToken;

use super::ingest::Ingest;
use crate::{
    config::{BounceSettings, ImapTls, ImapUrl},
    health::Health,
    net::Stream,
    store::{StoreError, bounces::ReportSource},
};

/// The longest one IMAP command may take before the session is given up.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Messages moved in one command.
const MOVE_BATCH: usize = 64;
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
            if read.len() >= MOVE_BATCH {
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

/// Where the mailbox is and how to reach it: the part of the reader that `harborlist
/// check --mailbox` uses too.
struct Mailbox {
    url: ImapUrl,
    tls: Result<Arc<rustls::ClientConfig>, String>,
}

impl Mailbox {
    fn new(url: ImapUrl) -> Self {
        Self {
            url,
            tls: crate::net::client_config(crate::net::web_roots()),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} of {} on {}:{}",
            self.url.mailbox, self.url.user, self.url.host, self.url.port
        )
    }

    /// Selects the folder reports arrive in; returns how many messages it holds.
    async fn select(&self, session: &mut ImapSession) -> Result<u32, ImapError> {
        let selected = timed(session.select(&self.url.mailbox))
            .await?
            .map_err(|e| ImapError::NoMailbox {
                folder: self.url.mailbox.clone(),
                detail: e.to_string(),
            })?;
        Ok(selected.exists)
    }

    /// Connects (TLS as the URL says), reads the greeting and logs in.
    async fn login(&self) -> Result<ImapSession, ImapError> {
        let place = format!("{}:{}", self.url.host, self.url.port);
        let tcp = timed(TcpStream::connect((self.url.host.as_str(), self.url.port)))
            .await?
            .map_err(|e| ImapError::Connect(place.clone(), e))?;
        let stream = match self.url.tls {
            ImapTls::Implicit => self.tls(tcp).await?,
            ImapTls::StartTls | ImapTls::Loopback => Stream::Tcp(tcp),
        };
        let mut client = Client::new(stream);
        greeting(&mut client).await?;
        if self.url.tls == ImapTls::StartTls {
            timed(client.run_command_and_check_ok("STARTTLS", None))
                .await?
                .map_err(|_| ImapError::NoStartTls)?;
            let Stream::Tcp(tcp) = client.into_inner() else {
                return Err(ImapError::NoStartTls);
            };
            client = Client::new(self.tls(tcp).await?);
        }
        let password = self.url.password.expose();
        match timed(client.login(&self.url.user, password)).await? {
            Ok(session) => Ok(session),
            Err((async_imap::error::Error::Io(e), _)) => Err(ImapError::Connect(place, e)),
            Err((e, _)) => Err(ImapError::Login {
                user: self.url.user.clone(),
                detail: e.to_string(),
            }),
        }
    }

    async fn tls(&self, tcp: TcpStream) -> Result<Stream, ImapError> {
        let host = self.url.host.clone();
        let config = self
            .tls
            .as_ref()
            .map_err(|e| ImapError::Tls(host.clone(), e.clone()))?;
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| ImapError::Tls(host.clone(), e.to_string()))?;
        let tls = timed(TlsConnector::from(Arc::clone(config)).connect(name, tcp))
            .await?
            .map_err(|e| ImapError::Tls(host, e.to_string()))?;
        Ok(Stream::Tls(Box::new(tls)))
    }
}

/// What `harborlist check --mailbox` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxCheck {
    /// `INBOX of user on host:port`.
    pub mailbox: String,
    /// Messages waiting in it.
    pub messages: u32,
    /// The server wakes harborlist on new mail (IDLE); without it, it looks every poll.
    pub idle: bool,
    /// The server moves messages in one step (MOVE); without it, copy and flag deleted.
    pub moves: bool,
}

/// Logs in to `bounces.imap_url`, looks at the mailbox and logs out, changing nothing.
pub async fn check_mailbox(url: ImapUrl) -> Result<MailboxCheck, ImapError> {
    check_mailbox_trusting(url, crate::net::web_roots()).await
}

/// [`check_mailbox`], trusting `roots` only for TLS (the tests' own CA).
pub async fn check_mailbox_trusting(
    url: ImapUrl,
    roots: rustls::RootCertStore,
) -> Result<MailboxCheck, ImapError> {
    let mailbox = Mailbox {
        url,
        tls: crate::net::client_config(roots),
    };
    let mut session = mailbox.login().await?;
    let caps = timed(session.capabilities()).await??;
    // EXAMINE, not SELECT: read-only, so not even \Recent changes.
    let examined = timed(session.examine(&mailbox.url.mailbox))
        .await?
        .map_err(|e| ImapError::NoMailbox {
            folder: mailbox.url.mailbox.clone(),
            detail: e.to_string(),
        })?;
    let _ = timed(session.logout()).await;
    Ok(MailboxCheck {
        mailbox: mailbox.describe(),
        messages: examined.exists,
        idle: caps.has_str("IDLE"),
        moves: caps.has_str("MOVE"),
    })
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

/// Messages whose reports are recorded, waiting to be moved together: one MOVE per
/// folder for up to [`MOVE_BATCH`] messages, since on a large mailbox each MOVE costs the
/// server about as much as a hundred messages' worth of reading.
#[derive(Default)]
struct Read {
    reports: Vec<u32>,
    others: Vec<u32>,
}

impl Read {
    fn add(&mut self, uid: u32, was_report: bool) {
        if was_report {
            self.reports.push(uid);
        } else {
            self.others.push(uid);
        }
    }

    fn len(&self) -> usize {
        self.reports.len() + self.others.len()
    }

    /// Moves what was read to its folders and starts again.
    async fn file(
        &mut self,
        session: &mut ImapSession,
        caps: &Capabilities,
        folders: &Folders,
    ) -> Result<(), ImapError> {
        for (uids, folder, label) in [
            (&mut self.reports, &folders.done, "processed"),
            (&mut self.others, &folders.unknown, "unknown"),
        ] {
            if uids.is_empty() {
                continue;
            }
            let set = uids
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",");
            move_messages(session, caps, &set, folder).await?;
            metrics::counter!("harborlist_bounce_mailbox_messages_total", "folder" => label)
                .increment(uids.len() as u64);
            uids.clear();
        }
        Ok(())
    }
}

/// The two folders read messages go to, as the server spells them.
struct Folders {
    done: String,
    unknown: String,
}

/// `harborlist/processed` with the server's delimiter (`harborlist.processed` on a server
/// whose folders are separated by dots).
fn spelled(folder: &str, delimiter: &str) -> String {
    folder.split('/').collect::<Vec<_>>().join(delimiter)
}

/// Moves the messages of a UID set: MOVE (RFC 6851) where offered; else COPY, then
/// `\Deleted` and an expunge of those UIDs only (UIDPLUS), so no other message flagged
/// deleted is touched.
async fn move_messages(
    session: &mut ImapSession,
    caps: &Capabilities,
    uid: &str,
    folder: &str,
) -> Result<(), ImapError> {
    if caps.has_str("MOVE") {
        return Ok(timed(session.uid_mv(&uid, folder)).await??);
    }
    timed(session.uid_copy(&uid, folder)).await??;
    let _: Vec<_> = timed(session.uid_store(&uid, "+FLAGS.SILENT (\\Deleted)"))
        .await??
        .try_collect()
        .await?;
    if caps.has_str("UIDPLUS") {
        let _: Vec<_> = timed(session.uid_expunge(&uid))
            .await??
            .try_collect()
            .await?;
    }
    // Without UIDPLUS the copy stays flagged deleted in the mailbox until the owner's
    // mail program expunges it; the search skips it meanwhile.
    Ok(())
}

async fn greeting(client: &mut Client<Stream>) -> Result<(), ImapError> {
    match timed(client.read_response()).await? {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(ImapError::Protocol(
            async_imap::error::Error::ConnectionLost,
        )),
        Err(e) => Err(ImapError::Protocol(e.into())),
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
    fn folders_take_the_servers_delimiter() {
        assert_eq!(spelled("harborlist/processed", "/"), "harborlist/processed");
        assert_eq!(spelled("harborlist/processed", "."), "harborlist.processed");
        assert_eq!(spelled("Bounces", "."), "Bounces");
    }

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
