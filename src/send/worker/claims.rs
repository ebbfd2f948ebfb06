//! Claims and their leases, for the sender loop in [`super`].
//!
//! Every claim gets its own lease owner ([`Sender::next_owner`]), so it can be renewed,
//! released or recorded against on its own. A turn claims now ([`Sender::claim_now`]) or takes
//! up the claim made ahead while the previous batch was sending ([`Sender::claim_ahead`],
//! [`Sender::take_up`]); a stopping sender gives that one back ([`Sender::give_back`]). Leases
//! are renewed while their batch waits or sends ([`Sender::keep_lease`]), and a claim whose
//! answer was lost with the database connection is released when it answers again
//! ([`Sender::release_lost_claims`]).

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

use super::Sender;
use crate::{
    clock::to_millis,
    store::{StoreError, delivery::Claimed},
};

/// The next batch's claim, made while the current batch is sending (see
/// [`Sender::turn`]).
pub(super) struct Ahead {
    owner: String,
    /// Starts the claim.
    pub(super) go: Arc<Notify>,
    /// Ends the task's renewal of the claimed batch's lease, or the task if it has not
    /// claimed yet.
    stop: CancellationToken,
    claimed: oneshot::Receiver<Result<Vec<Claimed>, StoreError>>,
}

impl Sender {
    /// A new lease owner: one per claim, so that a claim can be renewed, released or
    /// recorded against on its own.
    pub(super) fn next_owner(&self) -> String {
        format!(
            "{}#{}",
            self.config.instance,
            self.turn.fetch_add(1, Ordering::Relaxed)
        )
    }

    pub(super) async fn claim_now(&self, owner: &str) -> Result<Vec<Claimed>, StoreError> {
        let now = self.clock.now();
        let lease_until = now
            + chrono::Duration::from_std(self.config.lease).unwrap_or(chrono::Duration::minutes(5));
        self.store
            .claim(
                owner,
                to_millis(now),
                to_millis(lease_until),
                self.config.batch,
            )
            .await
    }

    /// Starts the claim of the next batch, to run once `go` is notified (when the current
    /// batch is half handed out). While its batch waits, the task renews the batch's lease,
    /// until `stop`: then the turn that takes the batch up renews it itself.
    pub(super) fn claim_ahead(self: &Arc<Self>) -> Ahead {
        let owner = self.next_owner();
        let go = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let (tx, claimed) = oneshot::channel();
        let (this, task_owner, task_go, task_stop) = (
            Arc::clone(self),
            owner.clone(),
            Arc::clone(&go),
            stop.clone(),
        );
        tokio::spawn(async move {
            tokio::select! {
                _ = task_go.notified() => {}
                _ = task_stop.cancelled() => {
                    let _ = tx.send(Ok(Vec::new()));
                    return;
                }
            }
            let result = this.claim_now(&task_owner).await;
            let holds = matches!(&result, Ok(batch) if !batch.is_empty());
            let _ = tx.send(result);
            if holds {
                tokio::select! {
                    never = this.keep_lease(&task_owner) => match never {},
                    _ = task_stop.cancelled() => {}
                }
            }
        });
        Ahead {
            owner,
            go,
            stop,
            claimed,
        }
    }

    /// Waits for a claim made ahead and takes over its batch from the task that made it.
    pub(super) async fn take_up(&self, ahead: Ahead) -> (String, Result<Vec<Claimed>, StoreError>) {
        ahead.go.notify_one();
        let result = ahead.claimed.await.unwrap_or_else(|_| {
            Err(StoreError::Corrupt(
                "the claim made ahead was dropped".into(),
            ))
        });
        ahead.stop.cancel();
        (ahead.owner, result)
    }

    /// Returns a claim made ahead that no turn will send (the sender is stopping).
    pub(super) async fn give_back(&self, ahead: Ahead) {
        ahead.stop.cancel();
        let owner = ahead.owner.clone();
        let _ = ahead.claimed.await;
        match self.store.release_claim(&owner).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "returned deliveries claimed ahead to the queue"),
            Err(e) => {
                tracing::warn!(error = %e, "could not return the deliveries claimed ahead; they go back when their lease ends");
            }
        }
    }

    /// Renews `owner`'s lease every third of it, until dropped.
    pub(super) async fn keep_lease(&self, owner: &str) -> std::convert::Infallible {
        loop {
            tokio::time::sleep((self.config.lease / 3).max(Duration::from_millis(100))).await;
            let until = self.clock.now()
                + chrono::Duration::from_std(self.config.lease)
                    .unwrap_or(chrono::Duration::minutes(5));
            if let Err(e) = self.store.extend_lease(owner, to_millis(until)).await {
                tracing::warn!(error = %e, "could not renew the lease; those deliveries may be sent twice");
            }
        }
    }

    pub(super) async fn release_lost_claims(&self) -> Result<(), StoreError> {
        let owners: Vec<String> = self
            .lost_claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for owner in owners {
            let released = self.store.release_claim(&owner).await?;
            if released > 0 {
                tracing::info!(
                    count = released,
                    "released deliveries from a claim whose answer was lost"
                );
            }
            self.lost_claims
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|o| o != &owner);
        }
        Ok(())
    }
}
