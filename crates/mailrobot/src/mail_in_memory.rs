//! A node-wide bound on mail fetched and not yet filed.
//!
//! Each poll keeps at most two batches in memory (one being filed, the next
//! fetched), and up to `MAILROBOT_POLL_CONCURRENCY` polls run at once: after
//! an outage, 32 mailboxes with a backlog of large mails would hold 2 GB.
//! Filing is one commit at a time on a node anyway, so batches beyond a few
//! only wait. Before fetching a batch a poll takes its size from this
//! budget (the sizes the server listed, or a guess where it lists none); the
//! batch gives it back once filed.
//!
//! A poll may wait here while it holds one of the node's poll slots: memory,
//! not connections, is then what the node is short of. A source that waits
//! out a server's request for quiet inside a fetch keeps its share during
//! that wait; such waits are short (at most
//! [`mailrobot_sources::throttle::MAX_WAIT_IN_PASS`] each, longer ones end
//! the pass), so a few throttled mailboxes slow the others, they never stop
//! them.

use std::sync::{Arc, Mutex};

/// `MAILROBOT_MAIL_IN_MEMORY_MB`: megabytes of fetched mail a node holds
/// before its polls wait to fetch more. The default, two full batches, lets
/// one poll fetch its next batch while the one before is filed; more only
/// waits for the database (a backlog in 32 mailboxes drained as fast with
/// 32 MB as without a bound, docs/benchmarks.md).
pub const MAIL_IN_MEMORY_ENV: &str = "MAILROBOT_MAIL_IN_MEMORY_MB";
const DEFAULT_MB: u64 = 64;

/// What a mail whose size the server does not list (Graph) is taken to
/// weigh until its fetch shows its real size.
pub const UNLISTED_MAIL_BYTES: u64 = 256 << 10;

/// The budget itself; shared by every poll of a node.
#[derive(Debug)]
pub struct MailInMemory {
    limit: u64,
    state: Mutex<Usage>,
    /// Polls wait here in turn (tokio's mutex is first come, first served):
    /// a large batch is not passed over forever by small ones.
    turn: tokio::sync::Mutex<()>,
    freed: tokio::sync::Notify,
}

#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    held: u64,
    peak: u64,
}

/// A batch's share of the budget, given back when dropped.
#[derive(Debug)]
pub struct Held {
    budget: Arc<MailInMemory>,
    bytes: u64,
}

impl MailInMemory {
    pub fn new(limit_bytes: u64) -> Arc<Self> {
        Arc::new(Self {
            limit: limit_bytes.max(1),
            state: Mutex::new(Usage::default()),
            turn: tokio::sync::Mutex::new(()),
            freed: tokio::sync::Notify::new(),
        })
    }

    /// The budget `MAILROBOT_MAIL_IN_MEMORY_MB` sets.
    pub fn from_env() -> anyhow::Result<Arc<Self>> {
        let mb = match std::env::var(MAIL_IN_MEMORY_ENV) {
            Ok(value) => value.parse::<u64>().ok().filter(|mb| *mb > 0).ok_or_else(|| {
                anyhow::anyhow!("{MAIL_IN_MEMORY_ENV} must be a positive number of megabytes, got {value:?}")
            })?,
            Err(_) => DEFAULT_MB,
        };
        Ok(Self::new(mb << 20))
    }

    /// Takes `bytes` from the budget, waiting until they fit. A batch larger
    /// than the whole budget (one huge mail) waits until nothing else is held.
    pub async fn hold(self: &Arc<Self>, bytes: u64) -> Held {
        let _turn = self.turn.lock().await;
        loop {
            // Registered before the check: a release in between still wakes us.
            let freed = self.freed.notified();
            if self.try_take(bytes) {
                return Held { budget: self.clone(), bytes };
            }
            freed.await;
        }
    }

    fn try_take(&self, bytes: u64) -> bool {
        self.update(|usage| {
            let fits = usage.held == 0 || usage.held.saturating_add(bytes) <= self.limit;
            if fits {
                usage.held += bytes;
            }
            fits
        })
    }

    fn update<T>(&self, change: impl FnOnce(&mut Usage) -> T) -> T {
        let mut usage = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let result = change(&mut usage);
        usage.peak = usage.peak.max(usage.held);
        crate::metrics::record_mail_in_memory(usage.held, usage.peak);
        result
    }

    /// Bytes held now.
    pub fn held(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).held
    }

    /// The most ever held at once.
    pub fn peak(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).peak
    }
}

impl Held {
    /// Sets the share to what the fetch really brought. It may go over the
    /// budget (the bytes are here already); the next polls wait the longer.
    pub fn resize(&mut self, bytes: u64) {
        let before = std::mem::replace(&mut self.bytes, bytes);
        self.budget.update(|usage| usage.held = usage.held - before + bytes);
        if bytes < before {
            self.budget.freed.notify_one();
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let bytes = self.bytes;
        self.budget.update(|usage| usage.held -= bytes);
        self.budget.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Whether `hold` is still waiting after the runtime has had time to run it.
    async fn waits<F: std::future::Future>(fut: F) -> bool {
        tokio::time::timeout(Duration::from_millis(50), fut).await.is_err()
    }

    #[tokio::test]
    async fn a_poll_waits_until_its_batch_fits() {
        let budget = MailInMemory::new(100);
        let first = budget.hold(60).await;
        assert!(waits(budget.hold(50)).await, "60 + 50 is over 100");
        let second = budget.hold(40).await;
        assert_eq!(budget.held(), 100);
        drop(first);
        let third = budget.hold(50).await;
        assert_eq!(budget.held(), 90);
        drop((second, third));
        assert_eq!(budget.held(), 0);
        assert_eq!(budget.peak(), 100);
    }

    #[tokio::test]
    async fn a_batch_larger_than_the_budget_goes_alone() {
        let budget = MailInMemory::new(100);
        let small = budget.hold(10).await;
        assert!(waits(budget.hold(500)).await, "waits for the others to be filed");
        drop(small);
        let huge = budget.hold(500).await;
        assert!(waits(budget.hold(1)).await, "nothing else while it is held");
        drop(huge);
        assert_eq!(budget.peak(), 500);
    }

    #[tokio::test]
    async fn the_fetched_size_replaces_the_guess() {
        let budget = MailInMemory::new(100);
        let mut guessed = budget.hold(30).await;
        guessed.resize(120);
        assert_eq!(budget.held(), 120, "over the budget: the bytes are here");
        assert!(waits(budget.hold(1)).await);
        guessed.resize(20);
        let other = budget.hold(80).await;
        assert_eq!(budget.held(), 100);
        drop((guessed, other));
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test]
    async fn a_large_batch_is_not_passed_over_by_small_ones() {
        let budget = MailInMemory::new(100);
        let first = budget.hold(20).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        // The large batch waits for the first; the small one would fit now
        // but must wait behind it, or small batches could starve it.
        for (name, bytes) in [("large", 90u64), ("small", 10)] {
            let (budget, order) = (budget.clone(), order.clone());
            waiting.push(tokio::spawn(async move {
                let _held = budget.hold(bytes).await;
                order.lock().unwrap().push(name);
            }));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(order.lock().unwrap().is_empty(), "{:?}", order.lock().unwrap());
        drop(first);
        for task in waiting {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["large", "small"]);
    }
}
