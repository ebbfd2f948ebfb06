//! One claimed delivery, for the sender loop in [`super`]: skip it if it should not go
//! (the training has begun, the subscriber left), compose it, wait for a sending turn and the
//! rate limit, hand it to the relay under a crash-bound permit, and turn the relay's answer
//! into an [`Outcome`] by the failure's class: sent; a bounce (failed, counts towards
//! `bouncing`); a rejection (failed, does not count); a temporary failure (retry later
//! with backoff, one attempt spent); or a relay fault (back to the queue as it was, and the
//! whole sender pauses, see `super::super::relay`). While the sender is paused, claimed
//! messages go back to the queue without being handed over.

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
    store::{delivery::Claimed, record::Outcome},
};

impl Sender {
    pub(super) async fn deliver(
        &self,
        composer: &Composer,
        c: &Claimed,
        shutdown: &CancellationToken,
        slot: &mut Option<OwnedSemaphorePermit>,
    ) -> Outcome {
        let list_mail = is_list_mail(&c.mailing.kind);
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
                    bounce: false,
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
                    clears_bounces: list_mail && c.bounce_streak != 0,
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
                let reason = if e.class == Class::Bounce {
                    "bounce"
                } else {
                    "rejected"
                };
                metrics::counter!("harborlist_messages_failed_total", "reason" => reason)
                    .increment(1);
                tracing::warn!(mailing = %c.mailing.key, %to, error = %shown, bounce, "permanent failure; not retrying");
                Outcome::Failed {
                    delivery_id: c.delivery_id,
                    subscriber_id: c.subscriber_id,
                    error,
                    bounce,
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
                bounce: false,
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
        let wanted: &[&str] = match c.mailing.kind.as_str() {
            // A confirmation goes to whoever asked, unless they are already in.
            "confirm" => &["pending", "unsubscribed", "bouncing"],
            "goodbye" => &["unsubscribed"],
            // Registration mail is transactional: it goes whatever the list status.
            crate::store::registrations::KIND_REGISTRATION => return None,
            _ => &["active"],
        };
        (!wanted.contains(&c.status.as_str())).then(|| format!("subscriber is {}", c.status))
    }
}
