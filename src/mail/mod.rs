//! Turning a delivery into bytes on the wire.
//!
//! [`Composer`] takes a template name, the mailing's data and one recipient, renders the
//! subject, text and HTML parts ([`crate::templates`]), derives that recipient's links from
//! their nonces ([`crate::domain::Token`]), and builds an RFC 5322 message with the list
//! headers ([`message`]), optionally DKIM-signed ([`dkim`]). [`transport::Transport`] then
//! hands the bytes to SMTP or writes them to the outbox directory.

pub mod context;
pub mod dkim;
pub mod markdown;
pub mod message;
pub mod redact;
pub mod smtp;
pub mod transport;

pub use context::{Composer, Identity, Letter, Recipient};
pub use transport::{SendError, Transport};

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error(transparent)]
    Template(#[from] crate::templates::TemplateError),
    #[error("invalid message: {0}")]
    Build(String),
    #[error("DKIM: {0}")]
    Dkim(String),
}
