//! One message from the return path, from bytes to what it does: parse, match, record.
//!
//! Both ways in (the IMAP reader and the SMTP listener) call [`Ingest::handle`]. The
//! parser touches nothing; matching is pure (a VERP tag verified under the token keys, or
//! our Message-ID); the store records each recipient's report and applies it in one
//! transaction. The answer says whether the message was a report, which decides the
//! mailbox folder it goes to.

use chrono::Datelike;

use super::{RecipientReport, Report, parse};
use crate::{
    clock::{SharedClock, to_millis},
    domain::{ReportKind, TokenKey, VerpMatch, redact, verp_match},
    runtime::{Live, Runtime},
    store::{
        Store, StoreError,
        bounces::{Effect, ReportEvent, ReportSource, ReportTarget},
    },
};

/// What handling one message did.
#[derive(Debug, Clone, PartialEq)]
pub struct Ingested {
    pub kind: ReportKind,
    /// One per recipient recorded (one for a report that names none).
    pub effects: Vec<Effect>,
}

impl Ingested {
    /// Whether the message was a report (of any kind, auto-replies included): it goes to
    /// `bounces.done_folder`; anything else to `bounces.unknown_folder`.
    pub fn was_report(&self) -> bool {
        self.kind != ReportKind::NotAReport
    }
}

/// Turns messages from the return path into recorded reports.
#[derive(Clone)]
pub struct Ingest {
    store: Store,
    live: Live,
    clock: SharedClock,
}

impl Ingest {
    pub fn new(store: Store, live: Live, clock: SharedClock) -> Self {
        Self { store, live, clock }
    }

    /// Parses, matches and records `raw`. `envelope_to` are the SMTP recipients it came
    /// to (the listener's `RCPT TO`), where a VERP tag is too.
    pub async fn handle(
        &self,
        raw: &[u8],
        source: ReportSource,
        envelope_to: &[String],
    ) -> Result<Ingested, StoreError> {
        let runtime = self.live.current();
        let mut report = parse::parse(raw);
        for to in envelope_to {
            if !report.return_addresses.contains(to) {
                report.return_addresses.push(to.clone());
            }
        }
        let now = self.clock.now();
        let zone = runtime.composer.identity().timezone;
        let day = i64::from(now.with_timezone(&zone).date_naive().num_days_from_ce());
        let rules = runtime.bounce_rules();
        let mut effects = Vec::new();
        for (recipient, target) in targets(&report, &runtime) {
            let event = ReportEvent {
                key: event_key(&report, recipient),
                source,
                kind: recipient.map_or(report.kind, |r| r.kind),
                status: recipient.and_then(|r| r.status),
                diagnostic: recipient
                    .and_then(|r| r.diagnostic.as_deref())
                    .map(crate::mail::redact::redact_addresses),
                recipient_domain: recipient
                    .and_then(|r| r.address.as_deref())
                    .and_then(|a| a.rsplit_once('@'))
                    .map(|(_, d)| d.to_ascii_lowercase()),
                target,
                day,
                now_ms: to_millis(now),
            };
            let effect = self.store.record_report(&event, &rules).await?;
            count(event.kind, effect);
            tracing::info!(
                kind = %event.kind,
                status = event.status.map(|s| s.to_string()),
                recipient = recipient.and_then(|r| r.address.as_deref()).map(redact),
                effect = effect.as_str(),
                "report read"
            );
            effects.push(effect);
        }
        Ok(Ingested {
            kind: report.kind,
            effects,
        })
    }
}

/// Each recipient of the report (or the report itself, if it names none) with what it
/// is about.
fn targets<'r>(
    report: &'r Report,
    runtime: &Runtime,
) -> Vec<(Option<&'r RecipientReport>, ReportTarget)> {
    let by_tag = report_tag(report, runtime);
    if report.recipients.is_empty() {
        return vec![(None, by_tag.unwrap_or(ReportTarget::None))];
    }
    report
        .recipients
        .iter()
        .map(|r| {
            let target = by_tag
                .clone()
                .or_else(|| by_message_id(report, r, runtime))
                .unwrap_or(ReportTarget::None);
            (Some(r), target)
        })
        .collect()
}

/// The delivery a verified VERP tag names, if the report carries one.
pub fn report_tag(report: &Report, runtime: &Runtime) -> Option<ReportTarget> {
    let keys: Vec<&TokenKey> = std::iter::once(&runtime.key)
        .chain(&runtime.previous_keys)
        .collect();
    match report_verp(report, &runtime.composer.identity().return_path, &keys) {
        VerpMatch::Valid(tag) => Some(ReportTarget::Delivery(tag.delivery_id)),
        VerpMatch::Forged | VerpMatch::Other => None,
    }
}

/// What the report's return addresses say about VERP under `keys`: the first tag that
/// verifies; else `Forged` if one has the return path's pattern with a tag none of them
/// made; else `Other`. Pure, so `bounces check` reads it without a runtime.
pub fn report_verp(
    report: &Report,
    return_path: &lettre::Address,
    keys: &[&TokenKey],
) -> VerpMatch {
    let mut seen = VerpMatch::Other;
    for address in &report.return_addresses {
        match verp_match(address, return_path, keys.iter().copied()) {
            VerpMatch::Valid(tag) => return VerpMatch::Valid(tag),
            VerpMatch::Forged => seen = VerpMatch::Forged,
            VerpMatch::Other => {}
        }
    }
    seen
}

/// Our Message-ID in the returned headers, for this recipient.
fn by_message_id(
    report: &Report,
    recipient: &RecipientReport,
    runtime: &Runtime,
) -> Option<ReportTarget> {
    let address = recipient.address.as_deref()?;
    let list_id = &runtime.composer.identity().list_id;
    report.message_ids.iter().find_map(|id| {
        let (mailing_hash, subscriber_id) = ours(id, list_id)?;
        Some(ReportTarget::MessageId {
            mailing_hash,
            subscriber_id,
            recipient: address.to_owned(),
        })
    })
}

/// `hl.<16 hex>.<subscriber id>@<list id>` (what `mail::Composer::message_id` writes), as
/// (mailing hash, subscriber id).
pub fn ours(message_id: &str, list_id: &str) -> Option<(String, i64)> {
    let (local, domain) = message_id
        .trim()
        .trim_matches(['<', '>'])
        .rsplit_once('@')?;
    if !domain.eq_ignore_ascii_case(list_id) {
        return None;
    }
    let rest = local.strip_prefix("hl.")?;
    let (hash, id) = rest.split_once('.')?;
    let hex = hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit());
    let digits = !id.is_empty() && id.len() <= 18 && id.bytes().all(|b| b.is_ascii_digit());
    if !(hex && digits) {
        return None;
    }
    Some((hash.to_ascii_lowercase(), id.parse().ok()?))
}

/// The stored event's key: the report's identity and the recipient, hashed (the
/// recipient's address is not kept in it).
fn event_key(report: &Report, recipient: Option<&RecipientReport>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(report.id.as_bytes());
    h.update(b"\0");
    if let Some(a) = recipient.and_then(|r| r.address.as_deref()) {
        h.update(a.to_lowercase().as_bytes());
    }
    crate::domain::hex(&h.finalize())
}

fn count(kind: ReportKind, effect: Effect) {
    if effect == Effect::Duplicate {
        return;
    }
    match kind {
        ReportKind::Hard | ReportKind::Soft | ReportKind::Delayed => {
            metrics::counter!("harborlist_bounces_total", "kind" => kind.as_str()).increment(1);
        }
        ReportKind::Complaint => metrics::counter!("harborlist_complaints_total").increment(1),
        ReportKind::AutoReply | ReportKind::NotAReport => {}
    }
    if effect == Effect::Unmatched {
        metrics::counter!("harborlist_reports_unmatched_total").increment(1);
    }
}
