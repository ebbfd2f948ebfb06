//! The VERP tag: the envelope sender `local+TAG@domain` that names one delivery, so a
//! bounce sent back to it says which message to which person failed (RFC 5321's reverse
//! path, "variable envelope return path").
//!
//! TAG is `b<delivery id>-<MAC>`, the MAC being the first 64 bits of
//! `HMAC-SHA256(token key, "verp\0" ‖ id)` in lower-case hex. Anyone can write a report to
//! the return path; only a tag we minted verifies, so a made-up one is recognised as made
//! up and changes no one. Hex because receivers may change the case of a local part.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{TokenKey, hex};

const MAC_BYTES: usize = 8;

/// A delivery named by a verified VERP tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerpTag {
    pub delivery_id: i64,
}

/// What a recipient address says about VERP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerpMatch {
    /// `local+TAG@domain` with a tag one of our keys made.
    Valid(VerpTag),
    /// The return path's pattern, but a tag no key of ours made: forged or mangled.
    Forged,
    /// Not the return path's pattern at all.
    Other,
}

impl TokenKey {
    /// The envelope sender for `delivery_id`: `local+TAG@domain` of `return_path`.
    pub fn verp_address(&self, return_path: &lettre::Address, delivery_id: i64) -> lettre::Address {
        let local = format!(
            "{}+b{delivery_id}-{}",
            return_path.user(),
            self.verp_mac(delivery_id)
        );
        lettre::Address::new(local, return_path.domain()).unwrap_or_else(|_| return_path.clone())
    }

    fn verp_mac(&self, delivery_id: i64) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"verp\0");
        mac.update(delivery_id.to_string().as_bytes());
        hex(&mac.finalize().into_bytes()[..MAC_BYTES])
    }
}

/// Reads `address` (as a report or an SMTP `RCPT TO` gives it) against the return path,
/// checking the tag under each of `keys` (the current one and those before a rotation).
pub fn verp_match<'k>(
    address: &str,
    return_path: &lettre::Address,
    keys: impl IntoIterator<Item = &'k TokenKey>,
) -> VerpMatch {
    let address = address.trim().trim_matches(['<', '>']);
    let Some((local, domain)) = address.rsplit_once('@') else {
        return VerpMatch::Other;
    };
    if !domain.eq_ignore_ascii_case(return_path.domain()) {
        return VerpMatch::Other;
    }
    let base = return_path.user();
    let Some(tag) = local
        .get(..base.len())
        .filter(|head| head.eq_ignore_ascii_case(base))
        .and_then(|_| local[base.len()..].strip_prefix('+'))
    else {
        return VerpMatch::Other;
    };
    let parsed = tag
        .strip_prefix(['b', 'B'])
        .and_then(|t| t.split_once('-'))
        .filter(|(id, mac)| {
            !id.is_empty()
                && id.len() <= 18
                && id.bytes().all(|b| b.is_ascii_digit())
                && mac.len() == 2 * MAC_BYTES
        })
        .and_then(|(id, mac)| Some((id.parse::<i64>().ok()?, mac.to_ascii_lowercase())));
    let Some((delivery_id, mac)) = parsed else {
        return VerpMatch::Forged;
    };
    let genuine = keys.into_iter().any(|k| {
        let expected = k.verp_mac(delivery_id);
        // Constant time: the comparison must not say how much of a guess was right.
        expected.len() == mac.len()
            && expected
                .bytes()
                .zip(mac.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if genuine {
        VerpMatch::Valid(VerpTag { delivery_id })
    } else {
        VerpMatch::Forged
    }
}

/// Whether `address` is the return path itself or one of its `+TAG` forms (anything the
/// SMTP listener should take).
pub fn is_return_path(address: &str, return_path: &lettre::Address) -> bool {
    let address = address.trim().trim_matches(['<', '>']);
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    let base = return_path.user();
    domain.eq_ignore_ascii_case(return_path.domain())
        && (local.eq_ignore_ascii_case(base)
            || local
                .get(..base.len())
                .is_some_and(|h| h.eq_ignore_ascii_case(base))
                && local[base.len()..].starts_with('+'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> TokenKey {
        TokenKey::parse(&hex(&[byte; 32])).unwrap()
    }

    #[test]
    fn a_minted_tag_verifies_and_names_its_delivery() {
        let rp: lettre::Address = "bounces@example.org".parse().unwrap();
        let a = key(1).verp_address(&rp, 4711);
        assert!(a.user().starts_with("bounces+b4711-"), "{a}");
        assert_eq!(
            verp_match(a.as_ref(), &rp, [&key(1)]),
            VerpMatch::Valid(VerpTag { delivery_id: 4711 })
        );
        // Receivers may upper-case the local part.
        assert_eq!(
            verp_match(&a.to_string().to_uppercase(), &rp, [&key(2), &key(1)]),
            VerpMatch::Valid(VerpTag { delivery_id: 4711 })
        );
    }

    #[test]
    fn a_made_up_or_altered_tag_is_forged() {
        let rp: lettre::Address = "bounces@example.org".parse().unwrap();
        let a = key(1).verp_address(&rp, 4711).to_string();
        assert_eq!(verp_match(&a, &rp, [&key(2)]), VerpMatch::Forged);
        let other_id = a.replace("b4711-", "b4712-");
        assert_eq!(verp_match(&other_id, &rp, [&key(1)]), VerpMatch::Forged);
        assert_eq!(
            verp_match("bounces+b1-0000000000000000@example.org", &rp, [&key(1)]),
            VerpMatch::Forged
        );
        assert_eq!(
            verp_match("bounces+junk@example.org", &rp, [&key(1)]),
            VerpMatch::Forged
        );
        assert_eq!(
            verp_match("someone@example.org", &rp, [&key(1)]),
            VerpMatch::Other
        );
        assert_eq!(
            verp_match(&a.replace("example.org", "example.com"), &rp, [&key(1)]),
            VerpMatch::Other
        );
    }

    #[test]
    fn the_listener_takes_the_return_path_and_its_tags_only() {
        let rp: lettre::Address = "bounces@example.org".parse().unwrap();
        assert!(is_return_path("<bounces@example.org>", &rp));
        assert!(is_return_path("Bounces+b1-00@EXAMPLE.org", &rp));
        assert!(!is_return_path("bouncesx@example.org", &rp));
        assert!(!is_return_path("postmaster@example.org", &rp));
        assert!(!is_return_path("bounces@example.org.evil", &rp));
    }
}
