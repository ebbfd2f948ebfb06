//! Filing what was read: messages whose reports are stored are moved, in groups, to the
//! done folder (reports) or the unknown folder (anything else), spelled with the server's
//! hierarchy delimiter. Nothing is ever deleted.

use async_imap::types::Capabilities;
use futures_util::TryStreamExt;

use super::{ImapError, ImapSession, timed};

/// Messages moved in one command.
const MOVE_BATCH: usize = 64;

/// Messages whose reports are recorded, waiting to be moved together: one MOVE per
/// folder for up to [`MOVE_BATCH`] messages, since on a large mailbox each MOVE costs the
/// server about as much as a hundred messages' worth of reading.
#[derive(Default)]
pub(super) struct Read {
    reports: Vec<u32>,
    others: Vec<u32>,
}

impl Read {
    pub(super) fn add(&mut self, uid: u32, was_report: bool) {
        if was_report {
            self.reports.push(uid);
        } else {
            self.others.push(uid);
        }
    }

    /// Enough to move together: file them before reading on.
    pub(super) fn is_full(&self) -> bool {
        self.reports.len() + self.others.len() >= MOVE_BATCH
    }

    /// Moves what was read to its folders and starts again.
    pub(super) async fn file(
        &mut self,
        session: &mut ImapSession,
        caps: &Capabilities,
        folders: &Folders,
    ) -> Result<(), ImapError> {
        for (uids, folder, label) in [
            (&mut self.reports, &folders.done, "processed"),
            (&mut self.others, &folders.unknown, "unknown"),
        ] {
            if uids.is_empty() {
                continue;
            }
            let set = uids
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",");
            move_messages(session, caps, &set, folder).await?;
            metrics::counter!("harborlist_bounce_mailbox_messages_total", "folder" => label)
                .increment(uids.len() as u64);
            uids.clear();
        }
        Ok(())
    }
}

/// The two folders read messages go to, as the server spells them.
pub(super) struct Folders {
    pub(super) done: String,
    pub(super) unknown: String,
}

/// `harborlist/processed` with the server's delimiter (`harborlist.processed` on a server
/// whose folders are separated by dots).
pub(super) fn spelled(folder: &str, delimiter: &str) -> String {
    folder.split('/').collect::<Vec<_>>().join(delimiter)
}

/// Moves the messages of a UID set: MOVE (RFC 6851) where offered; else COPY, then
/// `\Deleted` and an expunge of those UIDs only (UIDPLUS), so no other message flagged
/// deleted is touched.
async fn move_messages(
    session: &mut ImapSession,
    caps: &Capabilities,
    uid: &str,
    folder: &str,
) -> Result<(), ImapError> {
    if caps.has_str("MOVE") {
        return Ok(timed(session.uid_mv(&uid, folder)).await??);
    }
    timed(session.uid_copy(&uid, folder)).await??;
    let _: Vec<_> = timed(session.uid_store(&uid, "+FLAGS.SILENT (\\Deleted)"))
        .await??
        .try_collect()
        .await?;
    if caps.has_str("UIDPLUS") {
        let _: Vec<_> = timed(session.uid_expunge(&uid))
            .await??
            .try_collect()
            .await?;
    }
    // Without UIDPLUS the copy stays flagged deleted in the mailbox until the owner's
    // mail program expunges it; the search skips it meanwhile.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_take_the_servers_delimiter() {
        assert_eq!(spelled("harborlist/processed", "/"), "harborlist/processed");
        assert_eq!(spelled("harborlist/processed", "."), "harborlist.processed");
        assert_eq!(spelled("Bounces", "."), "Bounces");
    }
}
