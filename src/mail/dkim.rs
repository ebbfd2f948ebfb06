//! DKIM signing configuration.
//!
//! lettre's default signs only From, Subject, To and Date. RFC 8058 requires that
//! List-Unsubscribe and List-Unsubscribe-Post be covered too (otherwise a forwarder could
//! swap the unsubscribe target), so the header list is set explicitly. Canonicalization is
//! relaxed/relaxed, which survives the header refolding some relays do.
//!
//! Content-Type is deliberately not signed: lettre writes a multipart message's top-level
//! Content-Type with the body, after signing, so a signature claiming it never verifies.

use lettre::message::{
    dkim::{
        DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
        DkimSigningKey,
    },
    header::HeaderName,
};

use super::MailError;
use crate::config::DkimSettings;

pub const SIGNED_HEADERS: &[&str] = &[
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "MIME-Version",
];

/// Reads the key file and builds the signer. An RSA key is PKCS#1 PEM
/// (`-----BEGIN RSA PRIVATE KEY-----`); an Ed25519 key is the base64 of its 32-byte seed.
pub fn load(settings: &DkimSettings) -> Result<DkimConfig, MailError> {
    let text = std::fs::read_to_string(&settings.private_key_file).map_err(|e| {
        MailError::Dkim(format!(
            "mail.dkim.private_key_file: cannot read {}: {e}",
            settings.private_key_file.display()
        ))
    })?;
    let algorithm = if text.contains("BEGIN RSA PRIVATE KEY") {
        DkimSigningAlgorithm::Rsa
    } else {
        DkimSigningAlgorithm::Ed25519
    };
    let key = DkimSigningKey::new(text.trim(), algorithm).map_err(|e| {
        MailError::Dkim(format!(
            "mail.dkim.private_key_file: {} is not a PKCS#1 RSA PEM key or a base64 Ed25519 seed: {e}",
            settings.private_key_file.display()
        ))
    })?;
    Ok(DkimConfig::new(
        settings.selector.clone(),
        settings.domain.clone(),
        key,
        SIGNED_HEADERS
            .iter()
            .map(|h| HeaderName::new_from_ascii_str(h))
            .collect(),
        DkimCanonicalization {
            header: DkimCanonicalizationType::Relaxed,
            body: DkimCanonicalizationType::Relaxed,
        },
    ))
}
