//! WAL checkpoints on a thread of their own.
//!
//! By default SQLite checkpoints inside the commit that grows the WAL past
//! 1,000 pages: the writer copies those pages into the database file while
//! everything that waits for its lock (the next batch's journal, filing)
//! waits for the copy too. Here the writer only nudges this thread after
//! each commit, and the thread runs a PASSIVE checkpoint on its own
//! connection: it copies what is committed, never blocks the writer or the
//! readers, and uses the core the writer is not on. The SQLite
//! documentation describes this arrangement (`wal_autocheckpoint`: "run
//! checkpoints from a separate thread"). The writer keeps a far larger
//! automatic checkpoint as a backstop, so the WAL stays bounded even if
//! this thread falls behind.

use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use crate::StoreError;

/// The writer's own automatic checkpoint, in pages (8 KB): only when this
/// thread has fallen 32 MB behind.
pub(crate) const BACKSTOP_PAGES: i64 = 4_000;

pub(crate) struct Checkpointer {
    wake: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Opens the checkpoint connection to `path` and starts its thread.
    pub(crate) fn start(path: &Path) -> crate::Result<Self> {
        let open_err = |source| StoreError::Open { path: path.display().to_string(), source };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(open_err)?;
        let (wake, woken) = sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_when_woken(conn, woken))
            .map_err(|e| StoreError::Unavailable(format!("could not start the WAL checkpoint thread: {e}")))?;
        Ok(Self { wake: Some(wake), thread: Some(thread) })
    }

    /// Asks for a checkpoint after a commit; nudges while one runs are
    /// folded into the next.
    pub(crate) fn nudge(&self) {
        if let Some(wake) = &self.wake {
            // Full: a checkpoint is already due. Gone: nothing to nudge.
            let _ = wake.try_send(());
        }
    }
}

impl Drop for Checkpointer {
    /// Waits for the thread: its connection closes last, and the last
    /// connection to close checkpoints everything and removes the WAL.
    fn drop(&mut self) {
        self.wake.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn checkpoint_when_woken(conn: Connection, woken: Receiver<()>) {
    while woken.recv().is_ok() {
        let started = std::time::Instant::now();
        // (busy, frames in the WAL, frames copied into the database)
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        }) {
            Ok((_, in_wal, copied)) => {
                tracing::trace!(in_wal, copied, ms = started.elapsed().as_millis() as u64, "checkpointed the WAL")
            }
            // Not fatal: the writer's backstop checkpoint still bounds the WAL.
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; the next commit tries again"),
        }
    }
}
