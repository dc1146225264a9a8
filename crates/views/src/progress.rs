//! Long work made visible: how far each mailbox's running poll has got
//! (mails fetched of those waiting on the server), for the dashboard. Kept
//! in memory by the process that polls; a finished poll leaves nothing.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;

/// One poll under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SyncProgressJson {
    pub mailbox_id: i64,
    /// New mails the listing found on the server.
    pub waiting: usize,
    /// Of those, fetched into the journal so far.
    pub fetched: usize,
    pub started_at: String,
}

#[derive(Debug, Default)]
pub struct SyncProgress {
    running: Mutex<HashMap<i64, SyncProgressJson>>,
}

impl SyncProgress {
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<i64, SyncProgressJson>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The listing found `waiting` new mails.
    pub fn start(&self, mailbox_id: i64, waiting: usize) {
        let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        self.running().insert(mailbox_id, SyncProgressJson { mailbox_id, waiting, fetched: 0, started_at });
    }

    pub fn fetched(&self, mailbox_id: i64, mails: usize) {
        if let Some(p) = self.running().get_mut(&mailbox_id) {
            p.fetched = (p.fetched + mails).min(p.waiting);
        }
    }

    pub fn finish(&self, mailbox_id: i64) {
        self.running().remove(&mailbox_id);
    }

    /// Every poll under way, by mailbox id.
    pub fn snapshot(&self) -> Vec<SyncProgressJson> {
        let mut all: Vec<SyncProgressJson> = self.running().values().cloned().collect();
        all.sort_by_key(|p| p.mailbox_id);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_is_visible_from_its_listing_until_it_ends() {
        let board = SyncProgress::default();
        board.start(7, 50_000);
        board.fetched(7, 2_000);
        board.fetched(7, 2_000);
        board.fetched(8, 10); // not running: ignored
        let now = board.snapshot();
        assert_eq!((now.len(), now[0].mailbox_id, now[0].waiting, now[0].fetched), (1, 7, 50_000, 4_000));
        board.fetched(7, 100_000);
        assert_eq!(board.snapshot()[0].fetched, 50_000, "never more than were waiting");
        board.finish(7);
        assert!(board.snapshot().is_empty());
    }
}
