//! What list mail says about its recipient and the training it is about: the member's
//! personal one-click Register link, their own registration (with its give-up, leave or
//! claim link), whether registration is open, and whether the letter goes as list mail
//! (the unsubscribe footer) or as transactional mail. Kept apart from the registration
//! mail's own links (`registration` in [`super::Composer::context`]).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{Composer, Letter, Recipient, RecipientRegistration};
use crate::{config::RegistrationMode, domain::TokenPurpose, store::registrations::RegStatus};

/// The session a mailing's data is about (`training.id`), if any: what preview and `check`
/// pass as [`Letter::training`].
pub fn training_of(data: &Value) -> Option<&str> {
    data.get("training")?.get("id")?.as_str()
}

/// What list mail says about the recipient and the letter's training: whether to show the
/// unsubscribe footer (`list_mail`), the member's personal one-click Register link
/// (`register_url`), their own registration if they have one (`my_registration`, with its
/// give-up / leave / claim links), and where registration stands (`registration_open`,
/// `registration_external`). Every key is always present (null or false when it does not
/// apply), so templates in strict mode render for every recipient.
///
/// `my_registration` is deliberately not `registration`: registration mail carries its
/// own `registration` object in the mailing data.
impl Composer {
    pub(super) fn add_registration_context(
        &self,
        ctx: &mut Value,
        letter: &Letter<'_>,
        to: &Recipient<'_>,
        list_mail: bool,
        now: DateTime<Utc>,
    ) {
        let open = letter.training.is_some() && self.registration_open(letter.data, now);
        let live = to.registration.filter(|r| r.status.is_live());
        let register_url = match (letter.training, live) {
            (Some(session), None) if open && list_mail && to.member => {
                Some(self.register_url(session, to.subscriber_id, to.unsub_nonce))
            }
            _ => None,
        };
        let mine = match (letter.training, live) {
            (Some(_), Some(reg)) => self.my_registration(&reg),
            _ => Value::Null,
        };
        let external = self.identity.registration_mode == RegistrationMode::External;
        if let Some(obj) = ctx.as_object_mut() {
            obj.insert("list_mail".into(), json!(list_mail));
            obj.insert("register_url".into(), json!(register_url));
            obj.insert("my_registration".into(), mine);
            obj.insert("registration_open".into(), json!(open));
            obj.insert("registration_external".into(), json!(external));
        }
    }

    /// Whether harborlist takes registrations for the training in `data` now: its own
    /// mode, not cancelled, and before `registration.closes_before` ahead of the start
    /// (the same rule as `schedule::content::registration_open`, from the mailing's data).
    fn registration_open(&self, data: &Value, now: DateTime<Utc>) -> bool {
        let Some(training) = data.get("training").filter(|t| t.is_object()) else {
            return false;
        };
        let cancelled = training.get("cancelled").and_then(Value::as_bool) == Some(true);
        let start = training
            .get("start")
            .and_then(Value::as_str)
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|s| s.with_timezone(&Utc));
        self.identity.registration_mode == RegistrationMode::Harborlist
            && !cancelled
            && start.is_some_and(|start| now < self.identity.closes_before.before(start))
    }

    /// A list member's personal one-click link for `session` (see
    /// [`TokenKey::member_link`]): nothing is stored, the page re-computes it.
    pub fn register_url(&self, session: &str, subscriber_id: i64, unsub_nonce: &str) -> String {
        let link = self.key.member_link(session, subscriber_id, unsub_nonce);
        self.identity
            .url(&format!("trainings/{session}/register/{}", link.text()))
    }

    /// A registration's own link (`/registrations/{token}/{action}`), as registration mail
    /// carries it.
    fn registration_link(&self, nonce: &str, action: &str) -> String {
        let token = self.key.derive(TokenPurpose::Registration, nonce);
        self.identity
            .url(&format!("registrations/{}/{action}", token.as_str()))
    }

    /// The recipient's registration as list mail shows it.
    fn my_registration(&self, reg: &RecipientRegistration<'_>) -> Value {
        let offered = reg.status == RegStatus::Offered;
        let offer_expires = reg.offer_expires_ms.filter(|_| offered).map(|ms| {
            crate::clock::from_millis(ms)
                .with_timezone(&self.identity.timezone)
                .format("%A, %B %-d at %-I:%M %p %Z")
                .to_string()
        });
        json!({
            "status": reg.status.as_str(),
            "registered": matches!(reg.status, RegStatus::Registered | RegStatus::Attended),
            "waitlisted": reg.status == RegStatus::Waitlisted,
            "offered": offered,
            "cancel_url": self.registration_link(reg.nonce, "cancel"),
            "claim_url": offered.then(|| self.registration_link(reg.nonce, "claim")),
            "offer_expires": offer_expires,
        })
    }
}
