//! One claimed delivery, for the sender loop in [`super`]: skip it if it should not go
//! (the training has begun, the subscriber left), compose it, wait for a sending turn and the
//! rate limit, hand it to the relay under a crash-bound permit, and turn the relay's answer
//! into an [`Outcome`] (sent, retry later with backoff, or failed for good).

use std::time::Instant;

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::Sender;
use crate::{
    clock::to_millis,
    domain::redact,
    mail::{
        Letter, Recipient,
        context::{Composer, is_list_mail},
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
        };
        let recipient = Recipient {
            subscriber_id: c.subscriber_id,
            email: &c.email,
            name: c.name.as_deref(),
            unsub_nonce: &c.unsub_nonce,
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
        if shutdown.is_cancelled() {
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
        let to = redact(&c.email);
        match result {
            Ok(()) => {
                metrics::counter!("harborlist_messages_sent_total", "kind" => c.mailing.kind.clone())
                    .increment(1);
                tracing::debug!(mailing = %c.mailing.key, %to, "sent");
                Outcome::Sent {
                    delivery_id: c.delivery_id,
                    subscriber_id: c.subscriber_id,
                    clears_bounces: list_mail && c.bounce_streak != 0,
                }
            }
            Err(e) if e.is_permanent() => {
                let bounce = list_mail && e.counts_as_bounce();
                let error = e.to_string();
                metrics::counter!("harborlist_messages_failed_total", "reason" => "permanent")
                    .increment(1);
                tracing::warn!(mailing = %c.mailing.key, %to, %error, "permanent failure; not retrying");
                Outcome::Failed {
                    delivery_id: c.delivery_id,
                    subscriber_id: c.subscriber_id,
                    error,
                    bounce,
                }
            }
            Err(e) => {
                let error = e.to_string();
                let attempts = u32::try_from(c.attempts).unwrap_or(u32::MAX);
                if attempts >= self.config.max_attempts {
                    metrics::counter!("harborlist_messages_failed_total", "reason" => "retries_exhausted").increment(1);
                    tracing::warn!(mailing = %c.mailing.key, %to, %error, attempts, "giving up after repeated temporary failures");
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
                tracing::info!(mailing = %c.mailing.key, %to, %error, attempts, retry_in = ?delay, "temporary failure; will retry");
                let at = self.clock.now()
                    + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::seconds(30));
                Outcome::Retry {
                    delivery_id: c.delivery_id,
                    at_ms: to_millis(at),
                    error,
                }
            }
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
            _ => &["active"],
        };
        (!wanted.contains(&c.status.as_str())).then(|| format!("subscriber is {}", c.status))
    }
}
