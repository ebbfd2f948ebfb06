//! Everything a template sees, and the composition of one message for one recipient.
//!
//! The template context is the mailing's stored data (the same for every recipient) merged
//! with what is personal: the subscriber's address and name, and links derived from their
//! nonces. Links are derived here, at send time, so plaintext tokens are never stored.

mod member;

use std::sync::Arc;

pub use member::training_of;

use chrono::{DateTime, Utc};
use lettre::{
    address::Envelope,
    message::{Mailbox, dkim::DkimConfig},
};
use serde_json::{Value, json};

use super::{
    MailError,
    message::{self, CalendarPart, ListHeaders, Parts},
};
use crate::{
    config::Settings,
    domain::{TokenKey, TokenPurpose},
    store::registrations::{KIND_REGISTRATION, RegStatus},
    templates::EmailTemplates,
};

/// Who the mail is from and what list it belongs to: fixed per configuration.
#[derive(Debug, Clone)]
pub struct Identity {
    pub from: Mailbox,
    pub reply_to: Option<Mailbox>,
    pub list_name: String,
    pub list_id: String,
    pub organization: String,
    pub postal_address: String,
    pub why: String,
    pub public_url: url::Url,
    pub timezone: chrono_tz::Tz,
    /// `registration.mode`: only with harborlist's own registration do list mails carry a
    /// personal Register link.
    pub registration_mode: crate::config::RegistrationMode,
    /// `registration.closes_before`: the Register link is left out from then on.
    pub closes_before: crate::domain::HumanDuration,
    /// `mail.return_path`: the envelope sender, where reports come back.
    pub return_path: lettre::Address,
    /// `bounces.verp`: each delivery's envelope sender carries its VERP tag.
    pub verp: bool,
}

impl Identity {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            from: settings.mail.from.clone(),
            reply_to: settings.mail.reply_to.clone(),
            list_name: settings.list.name.clone(),
            list_id: settings.list.id.clone(),
            organization: settings.list.organization.clone(),
            postal_address: settings.list.postal_address.clone(),
            why: settings.list.why_you_get_this.clone(),
            public_url: settings.server.public_url.clone(),
            timezone: settings
                .trainings
                .timezone
                .parse()
                .unwrap_or(chrono_tz::America::Chicago),
            registration_mode: settings.registration.mode,
            closes_before: settings.registration.closes_before,
            return_path: settings.mail.return_path(),
            verp: settings.bounces.as_ref().is_some_and(|b| b.verp),
        }
    }

    /// An absolute link under `server.public_url`.
    pub fn url(&self, path: &str) -> String {
        let base = self.public_url.as_str().trim_end_matches('/');
        format!("{base}/{}", path.trim_start_matches('/'))
    }
}

/// One subscriber, as far as composing needs.
#[derive(Debug, Clone, Copy)]
pub struct Recipient<'a> {
    pub subscriber_id: i64,
    pub email: &'a str,
    pub name: Option<&'a str>,
    pub unsub_nonce: &'a str,
    /// Whether they are on the list (active). Only members get a personal Register link.
    pub member: bool,
    /// Their registration for the training the letter is about, if any.
    pub registration: Option<RecipientRegistration<'a>>,
    /// The delivery this message is (none for a preview or test send): with VERP on, the
    /// envelope sender names it, so a bounce says which message failed.
    pub delivery_id: Option<i64>,
}

/// A recipient's registration for the letter's training: where it stands, and the nonce
/// its links (give up, leave, claim) derive from.
#[derive(Debug, Clone, Copy)]
pub struct RecipientRegistration<'a> {
    pub status: RegStatus,
    pub nonce: &'a str,
    pub offer_expires_ms: Option<i64>,
}

/// What to send: a template, the mailing's data, and whether it is list mail (for this
/// recipient: list mail to someone not on the list goes as transactional mail).
#[derive(Debug, Clone, Copy)]
pub struct Letter<'a> {
    pub mailing_key: &'a str,
    pub template: &'a str,
    pub list_mail: bool,
    pub data: &'a Value,
    /// The session the letter is about (its id), if any.
    pub training: Option<&'a str>,
}

/// Whether mail of this kind (or template) is list mail, carrying List-* headers and an
/// unsubscribe link: everything from the welcome on, but not the confirmation request
/// (the person has not joined yet), the goodbye (they have just left), nor registration
/// mail (kind `registration`, templates `registration_confirm`, `registered`, `waitlisted`,
/// `seat_offer`), which is about one person's seat and goes whether or not they are on the
/// list. The sender also sends list mail as transactional to a recipient not on the list.
pub fn is_list_mail(kind: &str) -> bool {
    !matches!(kind, "confirm" | "goodbye" | KIND_REGISTRATION)
        && !REGISTRATION_TEMPLATES.contains(&kind)
}

/// The templates of registration mail (kind [`KIND_REGISTRATION`]): transactional, to the
/// one person, whatever their list status. Named here too because `preview` and `check`
/// ask [`is_list_mail`] by template.
pub const REGISTRATION_TEMPLATES: [&str; 4] = [
    "registration_confirm",
    "registered",
    "waitlisted",
    "seat_offer",
];

/// An instant as people read it in `zone`: "Monday, January 18 at 11:00 AM CST". Mail and
/// pages say deadlines (a confirmation's, an offer's) the same way.
pub fn local_time(zone: chrono_tz::Tz, ms: i64) -> String {
    let at = crate::clock::from_millis(ms).with_timezone(&zone);
    at.format("%A, %B %-d at %-I:%M %p %Z").to_string()
}

/// A message ready for the transport.
#[derive(Debug, Clone)]
pub struct Composed {
    pub envelope: Envelope,
    pub bytes: Vec<u8>,
    pub message_id: String,
}

#[derive(Clone)]
pub struct Composer {
    identity: Arc<Identity>,
    templates: Arc<EmailTemplates>,
    key: TokenKey,
    dkim: Option<Arc<DkimConfig>>,
}

impl std::fmt::Debug for Composer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Composer")
            .field("identity", &self.identity)
            .field("dkim", &self.dkim.is_some())
            .finish()
    }
}

impl Composer {
    pub fn new(
        identity: Identity,
        templates: Arc<EmailTemplates>,
        key: TokenKey,
        dkim: Option<DkimConfig>,
    ) -> Self {
        Self {
            identity: Arc::new(identity),
            templates,
            key,
            dkim: dkim.map(Arc::new),
        }
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn templates(&self) -> &EmailTemplates {
        &self.templates
    }

    /// Deterministic per (mailing, subscriber): a retry after a crash carries the same ID,
    /// so receivers and people can recognise it as the same message.
    pub fn message_id(&self, mailing_key: &str, subscriber_id: i64) -> String {
        // `store::bounces` reads it back from a report's returned headers.
        let short = crate::store::bounces::mailing_hash_of(mailing_key);
        format!("hl.{short}.{subscriber_id}@{}", self.identity.list_id)
    }

    /// `mail.return_path`, or with VERP its `local+TAG@domain` for this delivery.
    pub fn envelope_sender(&self, to: &Recipient<'_>) -> lettre::Address {
        let rp = &self.identity.return_path;
        match to.delivery_id {
            Some(id) if self.identity.verp => self.key.verp_address(rp, id),
            _ => rp.clone(),
        }
    }

    pub fn unsubscribe_url(&self, unsub_nonce: &str) -> String {
        self.identity.url(&format!(
            "unsubscribe/{}",
            self.key
                .derive(TokenPurpose::Unsubscribe, unsub_nonce)
                .as_str()
        ))
    }

    /// The data a template sees.
    pub fn context(&self, letter: &Letter<'_>, to: &Recipient<'_>, unsubscribe_url: &str) -> Value {
        let id = &self.identity;
        let mut ctx = json!({
            "list": {
                "name": id.list_name,
                "organization": id.organization,
                "postal_address": id.postal_address,
                "why_you_get_this": id.why,
                "url": id.url("/"),
                "trainings_url": id.url("/trainings"),
                "calendar_url": id.url("/trainings.ics"),
            },
            "subscriber": { "email": to.email, "name": to.name },
            "unsubscribe_url": unsubscribe_url,
            "confirm_url": Value::Null,
            "confirm_expires": Value::Null,
        });
        if let Some(nonce) = letter.data.get("confirm_nonce").and_then(Value::as_str) {
            ctx["confirm_url"] = json!(id.url(&format!(
                "confirm/{}",
                self.key.derive(TokenPurpose::Confirm, nonce).as_str()
            )));
        }
        if let Some(ms) = letter.data.get("expires_at_ms").and_then(Value::as_i64) {
            ctx["confirm_expires"] = json!(self.local_time(ms));
        }
        if let (Some(obj), Some(data)) = (ctx.as_object_mut(), letter.data.as_object()) {
            for (k, v) in data {
                if !matches!(
                    k.as_str(),
                    "confirm_nonce" | "expires_at_ms" | "calendar" | "registration"
                ) {
                    obj.insert(k.clone(), v.clone());
                }
            }
        }
        if let Some(registration) = self.registration_context(letter.data) {
            ctx["registration"] = registration;
        }
        if letter.template == "welcome"
            && let Some(obj) = ctx.as_object_mut()
        {
            // A welcome queued before these were stored (an upgrade mid-way) still renders.
            for key in ["next_training", "reminders_text"] {
                obj.entry(key).or_insert(Value::Null);
            }
        }
        ctx
    }

    /// An instant in the trainings' zone (see [`local_time`]).
    fn local_time(&self, ms: i64) -> String {
        local_time(self.identity.timezone, ms)
    }

    /// Registration mail's own links and facts, when the letter's data carries a
    /// registration (`{"registration": {"nonce", "rank", "offer_expires_at_ms", …}}`): the
    /// confirm, cancel and claim links of its one token (derived here, at send time, like
    /// every link), its place on the waiting list and the offer's deadline in local time.
    fn registration_context(&self, data: &Value) -> Option<Value> {
        let reg = data.get("registration")?;
        let nonce = reg.get("nonce").and_then(Value::as_str)?;
        let token = self.key.derive(TokenPurpose::Registration, nonce);
        let link = |action: &str| {
            json!(
                self.identity
                    .url(&format!("registrations/{}/{action}", token.as_str()))
            )
        };
        let at = |field: &str| {
            reg.get(field)
                .and_then(Value::as_i64)
                .map_or(Value::Null, |ms| json!(self.local_time(ms)))
        };
        Some(json!({
            "session": reg.get("session").cloned().unwrap_or(Value::Null),
            "confirm_url": link("confirm"),
            "cancel_url": link("cancel"),
            "claim_url": link("claim"),
            "rank": reg.get("rank").cloned().unwrap_or(Value::Null),
            "offer_deadline": at("offer_expires_at_ms"),
            "closes_at": at("closes_at_ms"),
        }))
    }

    pub fn compose(
        &self,
        letter: &Letter<'_>,
        to: &Recipient<'_>,
        now: DateTime<Utc>,
    ) -> Result<Composed, MailError> {
        let id = &self.identity;
        // A confirmation goes to an address nobody has proved yet: it carries nothing the
        // requester typed (no greeting by name, no display name in To), so the list can't be
        // used to send someone else's words under its name.
        let unproved = Recipient { name: None, ..*to };
        let to = if letter.mailing_key.starts_with("confirm:") {
            &unproved
        } else {
            to
        };
        // Derived once: the template's link and the List-Unsubscribe header are the same.
        let unsubscribe_url = self.unsubscribe_url(to.unsub_nonce);
        // List mail only to someone on the list: to anyone else (a registrant who isn't
        // subscribed) the same letter goes as transactional mail, without List-* headers
        // or the unsubscribe footer, whatever the caller decided.
        let list_mail = letter.list_mail && to.member;
        let mut ctx = self.context(letter, to, &unsubscribe_url);
        self.add_registration_context(&mut ctx, letter, to, list_mail, now);
        let rendered = self.templates.render(letter.template, ctx)?;
        let address: lettre::Address = to
            .email
            .parse()
            .map_err(|e| MailError::Build(format!("recipient address: {e}")))?;
        let message_id = self.message_id(letter.mailing_key, to.subscriber_id);
        let list = list_mail.then(|| ListHeaders {
            list_id: message::list_id_header(&id.list_name, &id.list_id),
            unsubscribe_url,
            subscribe_url: id.url("/"),
            help_url: id.url("/"),
        });
        let calendar = letter.data.get("calendar").and_then(|c| {
            Some(CalendarPart {
                method: c.get("method")?.as_str()?.to_owned(),
                body: c.get("body")?.as_str()?.to_owned(),
            })
        });
        let envelope = Envelope::new(Some(self.envelope_sender(to)), vec![address.clone()])
            .map_err(|e| MailError::Build(format!("envelope: {e}")))?;
        let mut msg = message::build(Parts {
            from: &id.from,
            reply_to: id.reply_to.as_ref(),
            to: Mailbox::new(to.name.map(str::to_owned), address),
            envelope: envelope.clone(),
            message_id: &message_id,
            date: now.into(),
            rendered,
            list,
            calendar,
        })?;
        if let Some(dkim) = &self.dkim {
            msg.sign(dkim);
        }
        Ok(Composed {
            envelope,
            bytes: msg.formatted(),
            message_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_mail_is_not_list_mail() {
        for kind in ["confirm", "goodbye", KIND_REGISTRATION]
            .into_iter()
            .chain(REGISTRATION_TEMPLATES)
        {
            assert!(!is_list_mail(kind), "{kind}");
        }
        for kind in [
            "welcome",
            "reminder",
            "invitation",
            "announcement",
            "update",
        ] {
            assert!(is_list_mail(kind), "{kind}");
        }
    }

    #[test]
    fn a_deadline_reads_in_the_trainings_zone() {
        // 2027-01-12T12:00:00Z is 6:00 AM in Chicago (CST).
        assert_eq!(
            local_time(chrono_tz::America::Chicago, 1_799_755_200_000),
            "Tuesday, January 12 at 6:00 AM CST"
        );
    }
}
