//! One claimed delivery, for the sender loop in [`super`]: skip it if it should not go
//! (the training has begun, the subscriber left), compose it, wait for a sending turn and the
//! rate limit, hand it to the relay under a crash-bound permit, and turn the relay's answer
//! into an [`Outcome`] by the failure's class: sent; a bounce (failed, counts towards
//! `bouncing`); a rejection (failed, does not count); a temporary failure (retry later
//! with backoff, one attempt spent); or a relay fault (back to the queue as it was, and the
//! whole sender pauses, see `super::super::relay`). While the sender is paused, claimed
//! messages go back to the queue without being handed over.

use crate::domain::StatusCode;
use crate::store::record::Refusal;
use std::time::Instant;

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::Sender;
use crate::{
    clock::to_millis,
    domain::redact,
    mail::{
        Letter, Recipient, SendError,
        context::RecipientRegistration,
        context::{Composer, is_list_mail},
        redact::redact_addresses,
        transport::{Class, Stage},
    },
    send::backoff::{jitter, retry_delay},
    store::{
        delivery::Claimed, queue::Segment, record::Outcome, registrations::KIND_REGISTRATION,
        registrations::RegStatus, subscriptions::Status,
    },
};

impl Sender {
    pub(super) async fn deliver(
        &self,
        composer: &Composer,
        c: &Claimed,
        shutdown: &CancellationToken,
        slot: &mut Option<OwnedSemaphorePermit>,
    ) -> Outcome {
        // List mail to someone not on the list (a registrant's reminder or notice) goes as
        // transactional mail: no footer, no List-Unsubscribe for a list they are not on.
        let list_mail = is_list_mail(&c.mailing.kind) && c.status == Status::Active.as_str();
        if self.relay.is_paused() {
            // The relay is failing: hold the message without spending an attempt.
            return Outcome::Released {
                delivery_id: c.delivery_id,
            };
        }
        if let Some(reason) = self.skip_reason(c) {
            return Outcome::Skipped {
                delivery_id: c.delivery_id,
                reason,
            };
        }
        let mailing = &*c.mailing;
        let letter = Letter {
            mailing_key: &mailing.key,
            template: &mailing.template,
            list_mail,
            data: &mailing.data,
            training: mailing.training.as_deref(),
        };
        let recipient = Recipient {
            delivery_id: Some(c.delivery_id),
            subscriber_id: c.subscriber_id,
            email: &c.email,
            name: c.name.as_deref(),
            unsub_nonce: &c.unsub_nonce,
            member: c.status == "active",
            registration: c.registration.as_ref().map(|r| RecipientRegistration {
                status: r.status,
                nonce: &r.nonce,
                offer_expires_ms: r.offer_expires_ms,
            }),
        };
        let composed = match composer.compose(&letter, &recipient, self.clock.now()) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(mailing = %c.mailing.key, error = %e, "could not compose message");
                return Outcome::Failed {
                    delivery_id: c.delivery_id,
                    subscriber_id: c.subscriber_id,
                    error: e.to_string(),
                    refusal: None,
                };
            }
        };
        // Composing (CPU) happens before taking a sending turn, so the next messages are
        // rendered while the current ones are on the wire.
        let _sending = match self.sending.acquire().await {
            Ok(turn) => turn,
            Err(_) => {
                return Outcome::Released {
                    delivery_id: c.delivery_id,
                };
            }
        };
        if let Some(limiter) = &self.limiter {
            tokio::select! {
                _ = limiter.until_ready() => {}
                _ = shutdown.cancelled() => return Outcome::Released { delivery_id: c.delivery_id },
            }
        }
        // Checked again here: the relay may have started failing while this message waited
        // for its turn, and none is handed to it then.
        if shutdown.is_cancelled() || self.relay.is_paused() {
            return Outcome::Released {
                delivery_id: c.delivery_id,
            };
        }
        let started = Instant::now();
        // The transport takes an `unrecorded` permit before the relay can accept the message
        // and the caller holds it until the outcome is stored: at most `concurrency` messages
        // are ever accepted but not yet recorded, which bounds what a crash can repeat.
        let (result, permit) = self
            .transport
            .send_gated(
                &composed.envelope,
                &composed.bytes,
                &composed.message_id,
                &self.unrecorded,
            )
            .await;
        *slot = permit;
        metrics::histogram!("harborlist_send_seconds").record(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                self.relay.ok();
                metrics::counter!("harborlist_messages_sent_total", "kind" => c.mailing.kind.clone())
                    .increment(1);
                tracing::debug!(mailing = %c.mailing.key, to = %redact(&c.email), "sent");
                Outcome::Sent {
                    delivery_id: c.delivery_id,
                    subscriber_id: c.subscriber_id,
                }
            }
            Err(e) => self.failed(c, list_mail, &e),
        }
    }

    /// What a failure means for this delivery, by its class (see
    /// [`crate::mail::transport::Class`]): only a bounce counts against the address, and a
    /// relay fault does not count against the message either.
    fn failed(&self, c: &Claimed, list_mail: bool, e: &SendError) -> Outcome {
        // The relay answered about this recipient or message: whatever it said, it works.
        if e.code.is_some() && !e.stage.before_rcpt() && e.stage != Stage::Local {
            self.relay.ok();
        }
        let to = redact(&c.email);
        // Relays echo addresses in their replies: shortened before they are logged or
        // stored, so neither the log nor `last_error` becomes a copy of the list.
        let error = redact_addresses(&e.to_string());
        let shown = error.clone();
        match e.class {
            Class::RelayFault => {
                self.relay.fault(e);
                tracing::debug!(mailing = %c.mailing.key, %to, error = %shown, "relay fault; back to the queue");
                Outcome::RelayFault {
                    delivery_id: c.delivery_id,
                    error,
                }
            }
            Class::Bounce | Class::Rejected => {
                let bounce = list_mail && e.class == Class::Bounce;
                let status = e.enhanced.as_deref().and_then(StatusCode::parse);
                let refusal = Refusal {
                    policy: status.is_some_and(StatusCode::is_policy),
                    counts: bounce,
                    status,
                    recipient_domain: recipient_domain(&c.email),
                };
                let reason = if e.class == Class::Bounce {
                    "bounce"
                } else {
                    "rejected"
                };
                metrics::counter!("harborlist_messages_failed_total", "reason" => reason)
                    .increment(1);
                if bounce {
                    metrics::counter!("harborlist_bounces_total", "kind" => "hard").increment(1);
                }
                tracing::warn!(mailing = %c.mailing.key, %to, error = %shown, bounce, "permanent failure; not retrying");
                Outcome::Failed {
                    delivery_id: c.delivery_id,
                    subscriber_id: c.subscriber_id,
                    error,
                    refusal: Some(refusal),
                }
            }
            Class::Transient => self.retry(c, &to, error, &shown),
        }
    }

    /// A temporary failure: one attempt spent, then a retry with backoff, or the end once
    /// `mail.max_attempts` are used up.
    fn retry(&self, c: &Claimed, to: &str, error: String, shown: &str) -> Outcome {
        let attempts = u32::try_from(c.attempts).unwrap_or(u32::MAX);
        if attempts >= self.config.max_attempts {
            metrics::counter!("harborlist_messages_failed_total", "reason" => "retries_exhausted")
                .increment(1);
            tracing::warn!(mailing = %c.mailing.key, %to, error = %shown, attempts, "giving up after repeated temporary failures");
            return Outcome::Failed {
                delivery_id: c.delivery_id,
                subscriber_id: c.subscriber_id,
                error,
                refusal: None,
            };
        }
        let delay = retry_delay(
            attempts,
            self.config.retry_base,
            self.config.retry_max,
            jitter(),
        );
        metrics::counter!("harborlist_messages_retried_total").increment(1);
        tracing::info!(mailing = %c.mailing.key, %to, error = %shown, attempts, retry_in = ?delay, "temporary failure; will retry");
        let at = self.clock.now()
            + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::seconds(30));
        Outcome::Retry {
            delivery_id: c.delivery_id,
            at_ms: to_millis(at),
            error,
        }
    }

    /// Reasons not to send a claimed delivery at all.
    pub(super) fn skip_reason(&self, c: &Claimed) -> Option<String> {
        if let Some(deadline) = c.mailing.not_after_ms
            && to_millis(self.clock.now()) >= deadline
        {
            return Some("too late: the training has begun".into());
        }
        let status = match Status::parse(&c.status) {
            Ok(s) => s,
            Err(e) => return Some(e.to_string()),
        };
        let registration = c.registration.as_ref().map(|r| r.status);
        recipient_skip(&c.mailing.kind, c.mailing.segment, status, registration)
    }
}

/// Whether this recipient should still get mail of `kind` to `segment`, judged at send
/// time (the fan-out picked them earlier; they may have left, registered or given up their
/// seat since): `None` to send, or the reason not to.
///
/// * A confirmation goes to whoever asked, unless they are already in; a goodbye to who
///   left.
/// * Registration mail goes whatever the list status: it is about the person's own
///   registration (a forgotten person has no row, so nothing is claimed for them).
/// * List mail goes by its segment: the whole list to active subscribers; `registered` to
///   those who hold their seat; `unregistered` to active subscribers who have not since
///   registered, joined the waiting list or been offered a seat; `involved` to active
///   subscribers and anyone still registered, waiting or offered a seat.
fn recipient_skip(
    kind: &str,
    segment: Option<Segment>,
    status: Status,
    registration: Option<RegStatus>,
) -> Option<String> {
    let active = status == Status::Active;
    let live = registration.is_some_and(RegStatus::is_live);
    let send = match (kind, segment) {
        ("confirm", _) => status != Status::Active,
        ("goodbye", _) => status == Status::Unsubscribed,
        (KIND_REGISTRATION, _) => true,
        (_, None) => active,
        (_, Some(Segment::Registered)) => {
            return match registration {
                Some(RegStatus::Registered | RegStatus::Attended) => None,
                Some(other) => Some(format!("registration is {}", other.as_str())),
                None => Some("not registered".into()),
            };
        }
        (_, Some(Segment::Unregistered)) if active && live => {
            return registration.map(|r| format!("registration is {} now", r.as_str()));
        }
        (_, Some(Segment::Unregistered)) => active,
        (_, Some(Segment::Involved)) => active || live,
    };
    (!send).then(|| format!("subscriber is {}", status.as_str()))
}

/// The part after the @, lower-cased: policy rejections are counted by it.
fn recipient_domain(email: &str) -> String {
    email
        .rsplit_once('@')
        .map_or("", |(_, d)| d)
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_segment_is_checked_again_at_send_time() {
        use RegStatus as R;
        use Status as S;
        let skip = |kind, seg, st, reg| recipient_skip(kind, seg, st, reg).is_some();
        // Registration mail goes whatever the list status.
        for st in [S::Pending, S::Active, S::Unsubscribed, S::Bouncing] {
            assert!(!skip(KIND_REGISTRATION, None, st, Some(R::Registered)));
        }
        // The whole list: active only.
        assert!(!skip("reminder", None, S::Active, None));
        assert!(skip("reminder", None, S::Pending, Some(R::Registered)));
        // Registered: holds the seat, on the list or not.
        let reg = Some(Segment::Registered);
        assert!(!skip("reminder", reg, S::Pending, Some(R::Registered)));
        assert!(!skip("reminder", reg, S::Unsubscribed, Some(R::Attended)));
        assert!(skip("reminder", reg, S::Active, Some(R::Cancelled)));
        assert!(skip("reminder", reg, S::Active, Some(R::Waitlisted)));
        assert!(skip("reminder", reg, S::Active, None));
        // Unregistered: active, and still no live registration.
        let unreg = Some(Segment::Unregistered);
        assert!(!skip("reminder", unreg, S::Active, None));
        assert!(!skip("reminder", unreg, S::Active, Some(R::Cancelled)));
        assert!(skip("reminder", unreg, S::Active, Some(R::Waitlisted)));
        assert!(skip("reminder", unreg, S::Active, Some(R::Registered)));
        assert!(skip("reminder", unreg, S::Unsubscribed, None));
        // Involved: active, or still in.
        let inv = Some(Segment::Involved);
        assert!(!skip("cancel", inv, S::Active, None));
        assert!(!skip("cancel", inv, S::Pending, Some(R::Waitlisted)));
        assert!(!skip("update", inv, S::Unsubscribed, Some(R::Offered)));
        assert!(skip("update", inv, S::Pending, Some(R::Cancelled)));
        assert!(skip("update", inv, S::Pending, None));
        // Confirmation and goodbye as before.
        assert!(skip("confirm", None, S::Active, None));
        assert!(!skip("confirm", None, S::Bouncing, None));
        assert!(!skip("goodbye", None, S::Unsubscribed, None));
    }
}
