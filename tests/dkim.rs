//! DKIM signing checked by an independent verifier (`mail-auth`): a signed list message and
//! a signed training reminder (with its calendar attachment) must verify, the signature must
//! cover the headers RFC 8058 and receivers care about, and tampering with a signed header
//! must break it.
//!
//! The selector's TXT record comes from a cache filled by the test, never from DNS. The keys
//! in `tests/fixtures/dkim/` are test-only.
//!
//! Set `HARBORLIST_DKIM_SAMPLE_DIR` to a directory to have `write_samples_when_asked` write
//! the signed messages there, for checking with other verifiers (e.g. dkimpy).

use std::{
    borrow::Borrow,
    collections::HashMap,
    hash::Hash,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Instant,
};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use harborlist::{
    config::{self, DkimSettings, Settings},
    domain::TokenKey,
    mail::{Composer, Identity, Letter, Recipient, dkim},
    schedule::content::{self, Notice},
    templates::EmailTemplates,
};
use mail_auth::{
    AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt,
    common::{parse::TxtRecordParser, verify::DomainKey},
};
use serde_json::{Value, json};

const SELECTOR: &str = "hl2026";
const DOMAIN: &str = "harborlist.example.org";

/// Headers the signature must cover: the originator and identity fields, and the list
/// headers (RFC 8058 §4 requires List-Unsubscribe and List-Unsubscribe-Post to be signed).
const MUST_SIGN: &[&str] = &[
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/dkim").join(name)
}

fn settings() -> Settings {
    config::load_from(&root().join("config"), None).expect("default settings load")
}

fn composer(settings: &Settings, key_file: &str) -> Composer {
    let dkim = dkim::load(&DkimSettings {
        selector: SELECTOR.into(),
        domain: DOMAIN.into(),
        private_key_file: fixture(key_file),
    })
    .expect("test key loads");
    let templates = EmailTemplates::load(&root().join("templates")).expect("templates load");
    let key = TokenKey::parse(&TokenKey::generate_text()).expect("generated key parses");
    Composer::new(
        Identity::from_settings(settings),
        Arc::new(templates),
        key,
        Some(dkim),
    )
}

fn recipient() -> Recipient<'static> {
    Recipient {
        subscriber_id: 42,
        email: "pat@example.net",
        name: Some("Pat Example"),
        unsub_nonce: "nonce-for-pat",
        member: true,
        registration: None,
        delivery_id: Some(7),
    }
}

fn compose(composer: &Composer, template: &str, data: &Value, now: DateTime<Utc>) -> Vec<u8> {
    let letter = Letter {
        mailing_key: &format!("test:{template}"),
        template,
        list_mail: true,
        data,
        training: None,
    };
    composer
        .compose(&letter, &recipient(), now)
        .unwrap_or_else(|e| panic!("compose {template}: {e}"))
        .bytes
}

fn welcome(composer: &Composer) -> Vec<u8> {
    compose(composer, "welcome", &json!({}), Utc::now())
}

fn reminder(settings: &Settings, composer: &Composer) -> Vec<u8> {
    let now = Utc::now();
    let calendar = settings.calendar().expect("default calendar parses");
    let session = calendar
        .upcoming(now, 1)
        .into_iter()
        .next()
        .expect("the default calendar has an upcoming session");
    let data = content::training_data(&session, 0, now, "-//test//EN", Notice::Invite);
    assert!(
        data.get("calendar").is_some(),
        "a reminder carries an invite"
    );
    compose(composer, "reminder", &data, now)
}

/// A TXT cache that answers from a map filled by the test.
#[derive(Default)]
struct TxtRecords(Mutex<HashMap<Box<str>, Txt>>);

impl ResolverCache<Box<str>, Txt> for TxtRecords {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().get(name).cloned()
    }

    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().remove(name)
    }

    fn insert(&self, key: Box<str>, value: Txt, _valid_until: Instant) {
        self.0.lock().unwrap().insert(key, value);
    }
}

impl TxtRecords {
    /// The `<selector>._domainkey.<domain>` record for a public key file.
    fn with_domain_key(public_key_pem: &Path) -> Self {
        let record = domain_key_record(public_key_pem);
        let key = DomainKey::parse(record.as_bytes())
            .unwrap_or_else(|e| panic!("TXT record {record:?} parses: {e:?}"));
        let records = Self::default();
        records.0.lock().unwrap().insert(
            format!("{SELECTOR}._domainkey.{DOMAIN}.").into(),
            Txt::from(key),
        );
        records
    }
}

/// `v=DKIM1; k=…; p=…` from a SubjectPublicKeyInfo PEM file. RSA records carry the DER
/// SubjectPublicKeyInfo; Ed25519 records carry the raw 32-byte key (RFC 8463).
fn domain_key_record(public_key_pem: &Path) -> String {
    let pem = std::fs::read_to_string(public_key_pem).expect("public key fixture");
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>();
    let der = base64::engine::general_purpose::STANDARD
        .decode(&b64)
        .expect("PEM body is base64");
    // An Ed25519 SubjectPublicKeyInfo is a fixed 12-byte prefix and the 32-byte key.
    const ED25519_SPKI_PREFIX: [u8; 12] = [
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    if der.len() == 44 && der.starts_with(&ED25519_SPKI_PREFIX) {
        let raw = base64::engine::general_purpose::STANDARD.encode(&der[12..]);
        format!("v=DKIM1; k=ed25519; p={raw}")
    } else {
        format!("v=DKIM1; k=rsa; p={b64}")
    }
}

/// Every DKIM result `mail-auth` reports for the message, with the signature's h= list.
async fn verify(message: &[u8], public_key_pem: &Path) -> Vec<(DkimResult, Vec<String>)> {
    let records = TxtRecords::with_domain_key(public_key_pem);
    let authenticator = MessageAuthenticator::new_cloudflare().expect("resolver builds");
    let parsed = AuthenticatedMessage::parse(message).expect("mail-auth parses the message");
    authenticator
        .verify_dkim(Parameters::new(&parsed).with_txt_cache(&records))
        .await
        .into_iter()
        .map(|out| {
            let h = out.signature().map(|s| s.h.clone()).unwrap_or_default();
            (out.result().clone(), h)
        })
        .collect()
}

async fn assert_passes(message: &[u8], public_key_pem: &Path, what: &str) {
    let results = verify(message, public_key_pem).await;
    assert_eq!(
        results.len(),
        1,
        "{what}: expected exactly one DKIM result, got {results:?}\n{}",
        String::from_utf8_lossy(message)
    );
    let (result, h) = &results[0];
    assert_eq!(
        *result,
        DkimResult::Pass,
        "{what}: DKIM must pass\n{}",
        String::from_utf8_lossy(message)
    );
    for name in MUST_SIGN {
        assert!(
            h.iter().any(|s| s.eq_ignore_ascii_case(name)),
            "{what}: mail-auth's view of h= {h:?} lacks {name}"
        );
    }
}

/// The header section, unfolded, as (name, value) pairs.
fn headers(message: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(message);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut out: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            out.push((name.to_owned(), value.trim().to_owned()));
        }
    }
    out
}

/// The `h=` tag of the (single) DKIM-Signature header, parsed from the raw bytes.
fn signed_header_names(message: &[u8]) -> Vec<String> {
    let all = headers(message);
    let sigs: Vec<&String> = all
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("DKIM-Signature"))
        .map(|(_, v)| v)
        .collect();
    assert_eq!(sigs.len(), 1, "exactly one DKIM-Signature header");
    let h = sigs[0]
        .split(';')
        .filter_map(|tag| tag.split_once('='))
        .find(|(k, _)| k.trim() == "h")
        .map(|(_, v)| v)
        .expect("DKIM-Signature has an h= tag");
    h.split(':')
        .map(|s| s.chars().filter(|c| !c.is_whitespace()).collect())
        .collect()
}

fn assert_covers_required_headers(message: &[u8], what: &str) {
    let signed = signed_header_names(message);
    let present = headers(message);
    for name in MUST_SIGN {
        assert!(
            signed.iter().any(|s| s.eq_ignore_ascii_case(name)),
            "{what}: h={} lacks {name}",
            signed.join(":")
        );
        assert!(
            present.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)),
            "{what}: the message has no {name} header to sign"
        );
    }
}

/// Changes one character of the List-Unsubscribe URL (inside the unsubscribe token).
fn tamper_list_unsubscribe(message: &[u8]) -> Vec<u8> {
    let needle = b"\r\nList-Unsubscribe:";
    let start = message
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
        .expect("the message has a List-Unsubscribe header")
        + needle.len();
    let end = start
        + message[start..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("header line ends");
    let value = &message[start..end];
    let marker = b"unsubscribe/";
    let at = start
        + value
            .windows(marker.len())
            .position(|w| w == marker)
            .expect("List-Unsubscribe carries the unsubscribe URL")
        + marker.len();
    let mut out = message.to_vec();
    out[at] = if out[at] == b'A' { b'B' } else { b'A' };
    assert_ne!(out, message);
    out
}

#[tokio::test]
async fn signed_list_message_verifies() {
    let settings = settings();
    let message = welcome(&composer(&settings, "rsa.pem"));
    assert_passes(&message, &fixture("rsa.pub.pem"), "welcome (rsa)").await;
}

#[tokio::test]
async fn signed_reminder_with_invite_verifies() {
    let settings = settings();
    let message = reminder(&settings, &composer(&settings, "rsa.pem"));
    let text = String::from_utf8_lossy(&message);
    assert!(
        text.contains("text/calendar"),
        "the reminder carries its invite"
    );
    assert_passes(&message, &fixture("rsa.pub.pem"), "reminder (rsa)").await;
}

#[tokio::test]
async fn ed25519_signature_verifies() {
    let settings = settings();
    let composer = composer(&settings, "ed25519.seed");
    let pubkey = fixture("ed25519.pub.pem");
    assert_passes(&welcome(&composer), &pubkey, "welcome (ed25519)").await;
    assert_passes(
        &reminder(&settings, &composer),
        &pubkey,
        "reminder (ed25519)",
    )
    .await;
}

#[test]
fn signature_covers_identity_and_list_headers() {
    let settings = settings();
    let composer = composer(&settings, "rsa.pem");
    assert_covers_required_headers(&welcome(&composer), "welcome");
    assert_covers_required_headers(&reminder(&settings, &composer), "reminder");
}

#[tokio::test]
async fn changing_list_unsubscribe_breaks_the_signature() {
    let settings = settings();
    let composer = composer(&settings, "rsa.pem");
    let pubkey = fixture("rsa.pub.pem");
    for (what, message) in [
        ("welcome", welcome(&composer)),
        ("reminder", reminder(&settings, &composer)),
    ] {
        // The untouched message passes, so a failure below is due to the change alone.
        assert_passes(&message, &pubkey, what).await;
        let tampered = tamper_list_unsubscribe(&message);
        let results = verify(&tampered, &pubkey).await;
        assert!(!results.is_empty(), "{what}: tampered message has a result");
        for (result, _) in &results {
            assert!(
                matches!(result, DkimResult::Fail(_)),
                "{what}: a changed List-Unsubscribe must fail verification, got {result:?}"
            );
        }
    }
}

/// Writes signed samples for checking by hand with other verifiers; does nothing unless
/// `HARBORLIST_DKIM_SAMPLE_DIR` is set.
#[test]
fn write_samples_when_asked() {
    let Some(dir) = std::env::var_os("HARBORLIST_DKIM_SAMPLE_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("sample dir");
    let settings = settings();
    for key in ["rsa.pem", "ed25519.seed"] {
        let composer = composer(&settings, key);
        let alg = key.split('.').next().unwrap_or(key);
        std::fs::write(dir.join(format!("welcome-{alg}.eml")), welcome(&composer))
            .expect("write sample");
        std::fs::write(
            dir.join(format!("reminder-{alg}.eml")),
            reminder(&settings, &composer),
        )
        .expect("write sample");
    }
}
