//! Where finished messages go: an SMTP relay through a connection pool, or `.eml` files.
//!
//! Errors carry the SMTP stage they happened at and their class (see
//! [`super::smtp::error`]), which decides what the sender does about them.

use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Tokio1Executor, address::Envelope,
    transport::smtp::PoolConfig,
};

pub use super::smtp::error::{Class, SendError, Stage};
use super::smtp::{Pool, Relay};
use crate::config::{MailSettings, TransportKind};

#[derive(Clone)]
pub enum Transport {
    /// Plain or STARTTLS relays: our NODELAY pool (see [`super::smtp`]).
    Pooled(Arc<Pool>, Duration),
    /// Implicit TLS (`smtps://`): lettre's own pool. Each carries a bound on one whole send:
    /// lettre's timeout covers connecting but not every reply (a relay that never answers
    /// QUIT after a 4xx would hang the send forever).
    Smtp(AsyncSmtpTransport<Tokio1Executor>, Duration),
    File(PathBuf),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pooled(..) | Self::Smtp(..) => f.write_str("Transport::Smtp"),
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
                let url = mail.smtp_url.as_deref().unwrap_or_default();
                let limit = mail.smtp_timeout.std() * 3;
                if let Some(relay) = Relay::parse(url).map_err(|e| format!("mail.smtp_url: {e}"))? {
                    return Ok(Self::Pooled(
                        Arc::new(Pool::new(relay, mail.pool_size, mail.smtp_timeout.std())),
                        limit,
                    ));
                }
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|e| format!("mail.smtp_url: {e}"))?
                    .timeout(Some(mail.smtp_timeout.std()))
                    .pool_config(
                        PoolConfig::new()
                            .max_size(mail.pool_size)
                            .idle_timeout(Duration::from_secs(60)),
                    )
                    .build();
                Ok(Self::Smtp(transport, limit))
            }
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
    /// being stored; other transports take it first.
    pub async fn send_gated(
        &self,
        envelope: &Envelope,
        bytes: &[u8],
        message_id: &str,
        gate: &Arc<Semaphore>,
    ) -> (Result<(), SendError>, Option<OwnedSemaphorePermit>) {
        let mut permit = None;
        let result = match self {
            Self::Pooled(pool, limit) => {
                match tokio::time::timeout(*limit, pool.send(envelope, bytes, gate, &mut permit))
                    .await
                {
                    Ok(result) => result,
                    Err(_) => Err(SendError::no_reply(
                        Stage::EndOfData,
                        format!("no answer from the relay within {limit:?}"),
                    )),
                }
            }
            Self::Smtp(smtp, limit) => {
                permit = gate.clone().acquire_owned().await.ok();
                match tokio::time::timeout(*limit, smtp.send_raw(envelope, bytes)).await {
                    Ok(result) => result.map(|_| ()).map_err(|e| classify(&e)),
                    Err(_) => Err(SendError::no_reply(
                        Stage::EndOfData,
                        format!("no answer from the relay within {limit:?}"),
                    )),
                }
            }
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

/// lettre's pool (`smtps://`) does not say at which stage a send failed. A reply code
/// puts it at `RCPT` or later, where the recipient may be at fault; anything else (no
/// reply: a refused connection, TLS) is the relay's.
fn classify(e: &lettre::transport::smtp::Error) -> SendError {
    let stage = if e.status().is_some() {
        Stage::Rcpt
    } else {
        Stage::Connect
    };
    SendError::from_lettre(stage, e)
}
