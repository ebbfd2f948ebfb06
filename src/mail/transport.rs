//! Where finished messages go: an SMTP relay through our connection pool (`smtp://` and
//! `smtps://` alike), or `.eml` files.
//!
//! Errors carry the SMTP stage they happened at and their class (see
//! [`super::smtp::error`]), which decides what the sender does about them.

use std::{path::PathBuf, sync::Arc};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use lettre::address::Envelope;

pub use super::smtp::error::{Class, SendError, Stage};
use super::smtp::{Pool, Relay};
use crate::config::{MailSettings, TransportKind};

#[derive(Clone)]
pub enum Transport {
    /// Any relay: our NODELAY pool (see [`super::smtp`]), which bounds each step and
    /// each whole send.
    Pooled(Arc<Pool>),
    File(PathBuf),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pooled(..) => f.write_str("Transport::Smtp"),
            Self::File(dir) => write!(f, "Transport::File({})", dir.display()),
        }
    }
}

impl Transport {
    pub fn from_settings(mail: &MailSettings) -> Result<Self, String> {
        match mail.transport {
            TransportKind::File => {
                crate::fsutil::create_dir_all(&mail.outbox_dir).map_err(|e| {
                    format!(
                        "mail.outbox_dir: cannot create {}: {e}",
                        mail.outbox_dir.display()
                    )
                })?;
                Ok(Self::File(mail.outbox_dir.clone()))
            }
            TransportKind::Smtp => {
                let url = mail.relay_url();
                let relay = Relay::parse(url).map_err(|e| format!("mail.smtp_url: {e}"))?;
                let pool = Pool::new(relay, mail.pool_size, mail.smtp_timeout.std());
                Ok(Self::Pooled(Arc::new(pool)))
            }
        }
    }

    /// Ends the relay's sessions with QUIT (waiting about one `mail.smtp_timeout` at
    /// most); call it when the sender stops. Sends after it fail as interrupted.
    pub async fn close(&self) {
        if let Self::Pooled(pool) = self {
            pool.close().await;
        }
    }

    /// Delivers one message. `message_id` (without angle brackets) names the outbox file, so
    /// a retry of the same delivery overwrites rather than duplicates.
    pub async fn send(
        &self,
        envelope: &Envelope,
        bytes: &[u8],
        message_id: &str,
    ) -> Result<(), SendError> {
        let gate = Arc::new(Semaphore::new(1));
        self.send_gated(envelope, bytes, message_id, &gate).await.0
    }

    /// Delivers one message, taking a permit from `gate` before the relay can accept it,
    /// and hands the permit back: the caller holds it until the outcome is stored, so
    /// `gate`'s size bounds the messages a crash could repeat. With the pipelining pool the
    /// permit is taken after the relay has accepted the envelope and before the message
    /// itself goes, so a connection sets up its next message while the previous outcome is
    /// being stored; the outbox takes it first.
    pub async fn send_gated(
        &self,
        envelope: &Envelope,
        bytes: &[u8],
        message_id: &str,
        gate: &Arc<Semaphore>,
    ) -> (Result<(), SendError>, Option<OwnedSemaphorePermit>) {
        let mut permit = None;
        let result = match self {
            Self::Pooled(pool) => pool.send(envelope, bytes, gate, &mut permit).await,
            Self::File(dir) => {
                permit = gate.clone().acquire_owned().await.ok();
                let safe: String = message_id
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@') {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                let path = dir.join(format!("{safe}.eml"));
                // Written beside and renamed into place: a reader of the outbox never sees
                // half a message, and the file is 0600 (it holds live links).
                let (at, bytes) = (path.clone(), bytes.to_vec());
                match tokio::task::spawn_blocking(move || crate::fsutil::replace(&at, &bytes)).await
                {
                    Ok(written) => written,
                    Err(e) => Err(std::io::Error::other(e)),
                }
                .map_err(|e| {
                    SendError::no_reply(Stage::Connect, format!("writing {}: {e}", path.display()))
                })
            }
        };
        (result, permit)
    }
}
