//! Reaching the bounce mailbox: TCP, TLS as `bounces.imap_url` asks (from the first byte,
//! or after STARTTLS), the greeting and the login. The reader opens its sessions here, and
//! `harborlist check --mailbox` opens one read-only session and reports what it found.

use std::sync::Arc;

use async_imap::Client;
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, rustls};

use super::{ImapError, ImapSession, timed};
use crate::{
    config::{ImapTls, ImapUrl},
    net::Stream,
};

/// Where the mailbox is and how to reach it: the part of the reader that `harborlist
/// check --mailbox` uses too.
pub(super) struct Mailbox {
    url: ImapUrl,
    tls: Result<Arc<rustls::ClientConfig>, String>,
}

impl Mailbox {
    pub(super) fn new(url: ImapUrl) -> Self {
        Self {
            url,
            tls: crate::net::client_config(crate::net::web_roots()),
        }
    }

    pub(super) fn describe(&self) -> String {
        format!(
            "{} of {} on {}:{}",
            self.url.mailbox, self.url.user, self.url.host, self.url.port
        )
    }

    /// Selects the folder reports arrive in; returns how many messages it holds.
    pub(super) async fn select(&self, session: &mut ImapSession) -> Result<u32, ImapError> {
        let selected = timed(session.select(&self.url.mailbox))
            .await?
            .map_err(|e| ImapError::NoMailbox {
                folder: self.url.mailbox.clone(),
                detail: e.to_string(),
            })?;
        Ok(selected.exists)
    }

    /// Connects (TLS as the URL says), reads the greeting and logs in.
    pub(super) async fn login(&self) -> Result<ImapSession, ImapError> {
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

async fn greeting(client: &mut Client<Stream>) -> Result<(), ImapError> {
    match timed(client.read_response()).await? {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(ImapError::Protocol(
            async_imap::error::Error::ConnectionLost,
        )),
        Err(e) => Err(ImapError::Protocol(e.into())),
    }
}
