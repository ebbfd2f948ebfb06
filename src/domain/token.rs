//! Link tokens: unguessable, URL-safe, and never stored in the clear.
//!
//! A token is `HMAC-SHA256(key, purpose ‖ nonce)` in unpadded base64url (43 characters,
//! 256 bits). The nonce is 128 random bits kept with the work that needs the link (a
//! subscriber row for unsubscribe links, a mailing row for confirmation links); the database
//! stores only `SHA-256(token)` for lookup. So:
//!
//! * a copy of the database alone yields no working link (the key is not in it), and
//! * the sender can re-derive the exact link at send time, after a crash or a retry, without
//!   the plaintext ever having been written down.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    Confirm,
    Unsubscribe,
    /// A registration's own links (confirm it, give up the seat, leave the waiting list,
    /// claim an offer): one token per registration, the page's path says which.
    Registration,
}

impl TokenPurpose {
    fn label(self) -> &'static [u8] {
        match self {
            Self::Confirm => b"confirm\0",
            Self::Unsubscribe => b"unsubscribe\0",
            Self::Registration => b"registration\0",
        }
    }
}

/// A list member's personal "Register" link for one session, as it appears in list mail:
/// `<subscriber id>.<HMAC(key, "join" ‖ session id ‖ unsubscribe nonce)>`.
///
/// It is checked by recomputing the HMAC, not looked up: a row per (member, session)
/// would be 100,000 rows per invitation. Nothing about it is stored, so a copy of the
/// database yields no working link. The id only says whose nonce to check it against.
#[derive(Clone, PartialEq, Eq)]
pub struct MemberLink {
    pub subscriber_id: i64,
    mac: Token,
}

impl std::fmt::Debug for MemberLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemberLink(…)")
    }
}

impl MemberLink {
    /// Accepts only the shape we mint.
    pub fn parse(text: &str) -> Option<Self> {
        let (id, mac) = text.split_once('.')?;
        if id.is_empty() || id.len() > 18 || !id.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Self {
            subscriber_id: id.parse().ok()?,
            mac: Token::parse(mac)?,
        })
    }

    pub fn text(&self) -> String {
        format!("{}.{}", self.subscriber_id, self.mac.as_str())
    }
}

fn member_mac(key: &[u8], session_id: &str, unsub_nonce: &str) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(b"join\0");
    mac.update(session_id.as_bytes());
    mac.update(b"\0");
    mac.update(unsub_nonce.as_bytes());
    mac
}

#[derive(Debug, thiserror::Error)]
pub enum TokenKeyError {
    #[error(
        "must be at least 32 bytes of base64 (64 hex digits also work); generate one with `openssl rand -base64 32`"
    )]
    TooShort,
    #[error("is neither base64 nor hex")]
    Encoding,
}

/// The server-side secret tokens are derived with.
#[derive(Clone)]
pub struct TokenKey(Vec<u8>);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(…)")
    }
}

impl TokenKey {
    pub fn parse(text: &str) -> Result<Self, TokenKeyError> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit()) {
            (0..64)
                .step_by(2)
                .map(|i| u8::from_str_radix(&text[i..i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| TokenKeyError::Encoding)?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .or_else(|_| URL_SAFE_NO_PAD.decode(text))
                .map_err(|_| TokenKeyError::Encoding)?
        };
        if bytes.len() < 32 {
            return Err(TokenKeyError::TooShort);
        }
        Ok(Self(bytes))
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// A fresh random key, base64-encoded, for writing to a key file.
    pub fn generate_text() -> String {
        base64::engine::general_purpose::STANDARD.encode(random_bytes::<32>())
    }

    /// A one-way fingerprint of the key, for the database to remember which key its links
    /// were made with: `base64(HMAC-SHA256(key, label))`. It names the key without
    /// revealing it (HMAC does not give up its key), and no link token can equal it (the
    /// label is not a purpose).
    pub fn fingerprint(&self) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"harborlist token key fingerprint v1");
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }

    pub fn derive(&self, purpose: TokenPurpose, nonce: &str) -> Token {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(purpose.label());
        mac.update(nonce.as_bytes());
        Token(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    /// The member's "Register" link token for `session_id`.
    pub fn member_link(
        &self,
        session_id: &str,
        subscriber_id: i64,
        unsub_nonce: &str,
    ) -> MemberLink {
        let mac = member_mac(&self.0, session_id, unsub_nonce);
        MemberLink {
            subscriber_id,
            mac: Token(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())),
        }
    }

    /// Whether `link` was made by this key for this session and member (compared in
    /// constant time).
    pub fn verifies_member_link(
        &self,
        link: &MemberLink,
        session_id: &str,
        unsub_nonce: &str,
    ) -> bool {
        let Ok(given) = URL_SAFE_NO_PAD.decode(link.mac.as_str()) else {
            return false;
        };
        member_mac(&self.0, session_id, unsub_nonce)
            .verify_slice(&given)
            .is_ok()
    }
}

/// Lower-case hex, without an allocation per byte (this runs for every imported row).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

/// A new nonce: 128 random bits as 32 hex digits.
pub fn new_nonce() -> String {
    hex(&random_bytes::<16>())
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // The OS RNG failing is not something a mail service can recover from sensibly.
    getrandom::fill(&mut buf)
        .unwrap_or_else(|e| panic!("the OS random number generator failed: {e}"));
    buf
}

/// A token as it appears in a link.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

impl Token {
    /// Accepts only the shape we mint, so junk from a URL never reaches the database.
    pub fn parse(text: &str) -> Option<Self> {
        (text.len() == 43
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then(|| Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What the database stores and looks up: hex SHA-256 of the token text.
    pub fn hash(&self) -> String {
        hex(&Sha256::digest(self.0.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TokenKey {
        TokenKey::parse(&"ab".repeat(32)).expect("hex key")
    }

    #[test]
    fn member_links_verify_only_for_their_session_member_and_key() {
        let k = key();
        let link = k.member_link("2027-01-20", 42, "nonce-a");
        let parsed = MemberLink::parse(&link.text()).expect("parses");
        assert_eq!(parsed.subscriber_id, 42);
        assert!(k.verifies_member_link(&parsed, "2027-01-20", "nonce-a"));
        assert!(!k.verifies_member_link(&parsed, "2027-03-17", "nonce-a"));
        assert!(!k.verifies_member_link(&parsed, "2027-01-20", "nonce-b"));
        let other = TokenKey::parse(&"cd".repeat(32)).expect("hex key");
        assert!(!other.verifies_member_link(&parsed, "2027-01-20", "nonce-a"));
        for junk in [
            "",
            "42",
            ".abc",
            "x.y",
            "42.short",
            &format!("-1.{}", link.mac.as_str()),
        ] {
            assert!(MemberLink::parse(junk).is_none(), "{junk:?}");
        }
    }

    #[test]
    fn tokens_are_deterministic_per_nonce_and_purpose() {
        let n = new_nonce();
        assert_eq!(n.len(), 32);
        let a = key().derive(TokenPurpose::Confirm, &n);
        assert_eq!(a, key().derive(TokenPurpose::Confirm, &n));
        assert_ne!(a, key().derive(TokenPurpose::Unsubscribe, &n));
        assert_ne!(a, key().derive(TokenPurpose::Confirm, &new_nonce()));
        assert_eq!(a.as_str().len(), 43);
        assert_eq!(Token::parse(a.as_str()), Some(a.clone()));
        assert_eq!(a.hash().len(), 64);
        assert_ne!(a.hash(), a.as_str());
    }

    #[test]
    fn rejects_short_keys_and_junk_tokens() {
        assert!(matches!(
            TokenKey::parse("c2hvcnQ="),
            Err(TokenKeyError::TooShort)
        ));
        assert!(TokenKey::parse(&TokenKey::generate_text()).is_ok());
        assert_eq!(Token::parse("short"), None);
        assert_eq!(Token::parse(&"a".repeat(42).replace('a', "%")), None);
    }

    #[test]
    fn a_fingerprint_tells_keys_apart_and_is_no_token() {
        let other = TokenKey::parse(&"cd".repeat(32)).expect("hex key");
        assert_eq!(key().fingerprint(), key().fingerprint());
        assert_ne!(key().fingerprint(), other.fingerprint());
        assert!(!key().fingerprint().contains(&"ab".repeat(32)));
        assert_eq!(
            Token::parse(&key().fingerprint()),
            None,
            "padded base64, not a link"
        );
    }
}
