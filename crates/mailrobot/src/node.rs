//! This `serve` process as one node of several sharing the database: it
//! registers with an id of its own, heartbeats, and polls only the
//! mailboxes whose leases it holds (see `mailrobot_store::lease`).

use std::sync::Arc;

use mailrobot_store::lease::{ALIVE_WITHIN, HEARTBEAT_EVERY, LEASE_TTL, pid_scope, time_until};
use mailrobot_store::{Heartbeat, LeaseStore, NewNode, NodeKind, NodeView, PassLeases};
use std::time::Duration;
use tokio::sync::watch;

pub struct Node {
    pub id: String,
    leases: Arc<dyn LeaseStore>,
    started: std::time::Instant,
    next_beat_in: std::sync::Mutex<Duration>,
    /// Told when a heartbeat changed what this node holds, so polling
    /// starts on a new lease at once.
    pub changed: tokio::sync::Notify,
    /// Mailboxes of this node with new mail announced to another node,
    /// not yet taken by the scheduler.
    announced: std::sync::Mutex<Vec<mailrobot_store::lease::Announcement>>,
    /// Mailboxes being polled now: given up last when over the share.
    busy: std::sync::Mutex<std::collections::HashSet<i64>>,
}

/// How long a node keeps mailboxes over its share because they are being
/// polled, before it gives them up anyway (a first sync of a large mailbox
/// must not keep a joining node waiting for its share).
const KEEP_BUSY_AT_MOST: Duration = Duration::from_secs(10);

/// Marks a mailbox busy while it lives (a poll in progress).
pub struct Busy<'a> {
    node: &'a Node,
    mailbox_id: i64,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.node.busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.mailbox_id);
    }
}

/// How often a node beats while it is short of its share, and in its first
/// lease TTL: nodes started together spread the mailboxes within a second or
/// two, not a few regular periods (the first to start takes them all).
pub const QUICK_BEAT: Duration = Duration::from_millis(500);

/// How long a node on a shared database waits after registering before it
/// takes leases: nodes started together (a deployment, a restart of all)
/// are then all registered when the first of them shares the mailboxes
/// out, so each polls its share from the start. Without it the first node
/// took every mailbox and started polling them all; the others got theirs
/// only as its polls ended, and three nodes started cold were slower than
/// one (0.92x). Kafka's consumer groups wait the same way before their
/// first rebalance (`group.initial.rebalance.delay.ms`).
pub const GATHER_FOR: Duration = QUICK_BEAT;

/// When a node that just registered as `me` takes its first leases: when
/// the gathering of the first node still gathering ends — the earliest of
/// the live nodes that registered less than [`GATHER_FOR`] before it and
/// have not beaten since (itself included). Nodes started a moment apart
/// then share the mailboxes out at one moment, not each its own
/// half-second later (the last would start polling last).
fn gathering_ends_in(me: &NodeView, nodes: &[NodeView]) -> Duration {
    let first_before_me = nodes
        .iter()
        .filter(|n| n.alive && n.last_heartbeat == n.started)
        .filter_map(|n| time_until(&n.started, &me.started))
        .filter(|before| *before < GATHER_FOR)
        .max()
        .unwrap_or_default();
    GATHER_FOR - first_before_me
}

/// The next heartbeat: the regular period; sooner when another node's lease
/// runs out first (just after it does), so a dead node's mailboxes are taken
/// within the lease TTL; [`QUICK_BEAT`] while starting or short of the share.
fn next_beat(beat: &Heartbeat, starting: bool) -> Duration {
    let regular = if starting || beat.short_of_share { QUICK_BEAT } else { HEARTBEAT_EVERY };
    match beat.next_expiry_in {
        Some(expiry) => regular.min(expiry + Duration::from_millis(50)),
        None => regular,
    }
}

/// The machine's name, as the kernel knows it.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Whether process `pid` of this pid namespace still runs (a zombie, killed
/// but not yet reaped, does not).
fn process_running(pid: i64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}

/// Registers this process among the nodes, frees the leases of processes
/// of this machine that are gone (a node or pass killed here: its
/// successor need not wait out the TTL) and turns fencing on for its
/// writes. Returns its id, unique per process.
fn register(leases: &dyn LeaseStore, kind: NodeKind) -> anyhow::Result<String> {
    let host = hostname();
    let pid = std::process::id();
    // Unique per process, even when a pid is reused on another start.
    let id = format!("{host}-{pid}-{:06x}", rand::random::<u32>() & 0xff_ffff);
    let pid_scope = pid_scope();
    if let Some(scope) = &pid_scope {
        let gone = leases.free_leases_of_gone(scope, &process_running)?;
        if !gone.is_empty() {
            tracing::info!(processes = ?gone, "freed the leases of processes of this machine that are gone");
        }
    }
    leases.register_node(&NewNode { id: id.clone(), host, pid: i64::from(pid), kind, pid_scope })?;
    leases.fences().enable();
    Ok(id)
}

impl Node {
    /// Registers this process and turns fencing on for its writes; takes its
    /// first leases at once when it is the only `serve` the database can
    /// have, else at its first heartbeat, after [`GATHER_FOR`].
    pub fn start(leases: Arc<dyn LeaseStore>) -> anyhow::Result<Node> {
        let id = register(leases.as_ref(), NodeKind::Serve)?;
        let first_beat_in = if leases.shared_by_nodes() {
            let nodes = leases.nodes(ALIVE_WITHIN)?;
            let gathering_for = match nodes.iter().find(|n| n.node_id == id) {
                Some(me) => gathering_ends_in(me, &nodes),
                None => GATHER_FOR,
            };
            tracing::info!(node = %id, ?gathering_for, "node started; takes its share of the mailboxes once the nodes starting with it have registered");
            gathering_for
        } else {
            let beat = leases.heartbeat(&id, LEASE_TTL)?;
            tracing::info!(node = %id, mailboxes = beat.held.len(), "node started");
            next_beat(&beat, true)
        };
        Ok(Node {
            id,
            leases,
            started: std::time::Instant::now(),
            next_beat_in: std::sync::Mutex::new(first_beat_in),
            changed: Default::default(),
            announced: Default::default(),
            busy: Default::default(),
        })
    }

    /// Heartbeats until `stop`; then gives the leases up at once.
    pub async fn heartbeat(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut keeping_busy_since: Option<std::time::Instant> = None;
        loop {
            let wait = *self.next_beat_in.lock().unwrap_or_else(|p| p.into_inner());
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => break,
            }
            let node = self.clone();
            let started = std::time::Instant::now();
            let before = self.held();
            let busy: Vec<i64> = if keeping_busy_since.is_some_and(|since| since.elapsed() > KEEP_BUSY_AT_MOST) {
                Vec::new()
            } else {
                self.busy.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect()
            };
            match tokio::task::spawn_blocking(move || node.leases.heartbeat_keeping(&node.id, LEASE_TTL, &busy)).await {
                Ok(Ok(beat)) => {
                    keeping_busy_since = if beat.kept_busy { keeping_busy_since.or(Some(started)) } else { None };
                    tracing::debug!(node = %self.id, mailboxes = beat.held.len(), "heartbeat");
                    let starting = self.started.elapsed() < LEASE_TTL;
                    *self.next_beat_in.lock().unwrap_or_else(|p| p.into_inner()) = next_beat(&beat, starting);
                    let now = self.held();
                    let lost: Vec<i64> =
                        before.iter().filter(|m| !now.contains(m) && !beat.released.contains(m)).copied().collect();
                    if !lost.is_empty() {
                        tracing::warn!(node = %self.id, mailboxes = ?lost, "leases lost: another node took them while this node was away");
                    }
                    if !beat.announced.is_empty() {
                        tracing::debug!(node = %self.id, mailboxes = ?beat.announced, "new mail announced to another node");
                        self.announced.lock().unwrap_or_else(|p| p.into_inner()).extend(beat.announced.iter().cloned());
                    }
                    if now != before || !beat.announced.is_empty() {
                        self.changed.notify_one();
                    }
                }
                // The leases run out by themselves; writes are fenced meanwhile.
                Ok(Err(err)) => tracing::error!(node = %self.id, error = %err, "heartbeat failed"),
                Err(err) => tracing::error!(node = %self.id, error = %err, "heartbeat failed"),
            }
            if started.elapsed() > LEASE_TTL / 2 {
                tracing::warn!(node = %self.id, took = ?started.elapsed(), "a heartbeat took more than half the lease TTL");
            }
        }
        let node = self.clone();
        match tokio::task::spawn_blocking(move || node.leases.stop_node(&node.id)).await {
            Ok(Ok(())) => tracing::info!(node = %self.id, "node stopped; its leases are free"),
            _ => tracing::warn!(node = %self.id, "could not give the leases up; they run out within {:?}", LEASE_TTL),
        }
    }

    /// Mailboxes whose new mail was announced to another node since the
    /// last call (see [`mailrobot_store::Heartbeat::announced`]).
    pub fn take_announced(&self) -> Vec<mailrobot_store::lease::Announcement> {
        std::mem::take(&mut *self.announced.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The mailboxes this node may poll now.
    pub fn held(&self) -> Vec<i64> {
        self.leases.fences().held().into_iter().map(|f| f.mailbox_id).collect()
    }

    /// Marks `mailbox_id` as being polled until the guard is dropped.
    pub fn busy(&self, mailbox_id: i64) -> Busy<'_> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner()).insert(mailbox_id);
        Busy { node: self, mailbox_id }
    }

    pub fn holds(&self, mailbox_id: i64) -> bool {
        self.leases.fences().get(mailbox_id).is_some()
    }
}

/// One `run-once` pass among the nodes: it takes the leases nobody holds
/// and keeps them (renewing) while it polls; mailboxes another process
/// holds are that process's to poll. It counts for no node's share.
pub struct Pass {
    pub id: String,
    leases: Arc<dyn LeaseStore>,
    taken: PassLeases,
    renewing: tokio::task::JoinHandle<()>,
}

impl Pass {
    pub async fn start(leases: Arc<dyn LeaseStore>) -> anyhow::Result<Pass> {
        let store = leases.clone();
        let (id, taken) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let id = register(store.as_ref(), NodeKind::RunOnce)?;
            let taken = store.take_free_leases(&id, LEASE_TTL)?;
            Ok((id, taken))
        })
        .await??;
        tracing::debug!(pass = %id, held = taken.held.len(), elsewhere = taken.held_elsewhere.len(), "pass leases taken");
        let (store, pass_id) = (leases.clone(), id.clone());
        // A pass longer than the TTL (a first sync) keeps what it holds.
        let renewing = tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT_EVERY).await;
                let (store, pass_id) = (store.clone(), pass_id.clone());
                match tokio::task::spawn_blocking(move || store.renew_leases(&pass_id, LEASE_TTL)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => tracing::warn!(error = %err, "could not renew the pass's leases"),
                    Err(err) => tracing::warn!(error = %err, "could not renew the pass's leases"),
                }
            }
        });
        Ok(Pass { id, leases, taken, renewing })
    }

    /// The process that holds `mailbox_id`, when not this pass.
    pub fn held_elsewhere(&self, mailbox_id: i64) -> Option<&str> {
        self.taken.held_elsewhere.iter().find(|(m, _)| *m == mailbox_id).map(|(_, node)| node.as_str())
    }

    pub fn holds(&self, mailbox_id: i64) -> bool {
        self.leases.fences().get(mailbox_id).is_some()
    }

    /// Gives the leases up at once.
    pub async fn finish(self) {
        self.renewing.abort();
        let (store, id) = (self.leases.clone(), self.id.clone());
        match tokio::task::spawn_blocking(move || store.stop_node(&id)).await {
            Ok(Ok(())) => {}
            _ => {
                tracing::warn!(pass = %self.id, "could not give the pass's leases up; they run out within {:?}", LEASE_TTL)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, started: &str, last_heartbeat: &str, alive: bool) -> NodeView {
        NodeView {
            node_id: id.into(),
            host: "h".into(),
            pid: 1,
            started: started.into(),
            last_heartbeat: last_heartbeat.into(),
            alive,
            mailboxes: Vec::new(),
        }
    }

    #[test]
    fn a_node_starting_alone_gathers_for_the_whole_window() {
        let me = node("c", "2026-12-05T00:00:00.300Z", "2026-12-05T00:00:00.300Z", true);
        assert_eq!(gathering_ends_in(&me, std::slice::from_ref(&me)), GATHER_FOR);
    }

    #[test]
    fn nodes_started_a_moment_apart_take_their_leases_together() {
        let me = node("c", "2026-12-05T00:00:00.300Z", "2026-12-05T00:00:00.300Z", true);
        let nodes = [
            // Still gathering: c's first beat comes when a's does.
            node("a", "2026-12-05T00:00:00.100Z", "2026-12-05T00:00:00.100Z", true),
            node("b", "2026-12-05T00:00:00.200Z", "2026-12-05T00:00:00.200Z", true),
            // Beating already (its gathering is over), gone, or too long ago.
            node("d", "2026-12-05T00:00:00.000Z", "2026-12-05T00:00:00.250Z", true),
            node("e", "2026-12-05T00:00:00.050Z", "2026-12-05T00:00:00.050Z", false),
            node("f", "2026-12-04T23:59:59.000Z", "2026-12-04T23:59:59.000Z", true),
            me.clone(),
        ];
        assert_eq!(gathering_ends_in(&me, &nodes), GATHER_FOR - Duration::from_millis(200));
    }
}
