//! Several nodes sharing mailboxes: nodes, mailbox leases and fencing.
//!
//! Each mailbox is polled by one node at a time, the holder of its lease
//! (owner, expiry, and a fencing token that grows with every new lease).
//! A node renews what it holds with each heartbeat; a lease not renewed
//! within its time to live may be taken by another node, with a higher
//! token.
//!
//! Fencing: a node that holds leases keeps them in its [`Fences`]; every
//! write the store makes for a mailbox (journal, processing, settle records,
//! sync state, poll records) first checks, inside its write transaction,
//! that the database's lease for that mailbox is still this node's, with the
//! same token, and not expired. A node paused past its lease (SIGSTOP, GC, a
//! VM migration) that wakes up has its writes refused with
//! [`StoreError::Fenced`] — it drops the mailbox and goes on.
//!
//! Time is the database's clock, so nodes whose clocks disagree still agree
//! on who holds what.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::{NodeKind, Result, StoreError};

/// How long a lease lasts without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(15);
/// How often a node renews its leases and looks for free ones: often, so a
/// mailbox another node gives up (when a node joins) waits little for its
/// new holder; the writes are one small transaction per node.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// A node counts as alive, for sharing mailboxes out, while its last
/// heartbeat is this recent: three missed heartbeats. Far shorter than the
/// lease TTL, so a killed node (or one restarted under a new id) stops
/// shrinking the others' shares within seconds; its leases still run their
/// full TTL before anyone takes them.
pub const ALIVE_WITHIN: Duration = Duration::from_secs(6);

/// The right to write for one mailbox: held by `node_id` under `token`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Fence {
    pub mailbox_id: i64,
    pub node_id: String,
    pub token: i64,
}

/// A node as it registers.
#[derive(Debug, Clone)]
pub struct NewNode {
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub kind: NodeKind,
    /// Where its pid means something ([`pid_scope`]); None where unknown.
    pub pid_scope: Option<String>,
}

impl NewNode {
    /// A `serve` node, its pid scope unknown (tests; [`pid_scope`] otherwise).
    pub fn serve(id: &str, host: &str, pid: i64) -> NewNode {
        NewNode { id: id.into(), host: host.into(), pid, kind: NodeKind::Serve, pid_scope: None }
    }
}

/// Where a pid names one process: the machine's boot id and the process's
/// pid namespace. Two processes with the same scope see each other's pids,
/// so one can tell that the other is gone (its pid no longer runs) and free
/// its leases without waiting for the TTL. None where /proc does not say.
pub fn pid_scope() -> Option<String> {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let namespace = std::fs::read_link("/proc/self/ns/pid").ok()?;
    Some(format!("{}/{}", boot_id.trim(), namespace.display()))
}

/// What a `run-once` pass holds for its polls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassLeases {
    /// The leases it took: every mailbox nobody else held.
    pub held: Vec<Fence>,
    /// Mailboxes a live lease of another process holds, with its holder:
    /// that process polls them, the pass leaves them alone.
    pub held_elsewhere: Vec<(i64, String)>,
}

/// Decides what a `run-once` pass takes: every enabled mailbox whose lease
/// is free (never taken, released, or run out); the others stay with their
/// holders, returned beside. It takes no share and gives nothing up.
pub fn plan_pass(node_id: &str, now: &str, mailboxes: &[i64], leases: &[LeaseRow]) -> PassPlan {
    let by_mailbox: HashMap<i64, &LeaseRow> = leases.iter().map(|l| (l.mailbox_id, l)).collect();
    let mut plan = PassPlan::default();
    for &mailbox_id in mailboxes {
        match by_mailbox.get(&mailbox_id) {
            Some(l) if l.expires_at.as_str() > now && l.node_id.as_deref().is_some_and(|n| n != node_id) => {
                plan.held_elsewhere.push((mailbox_id, l.node_id.clone().unwrap_or_default()))
            }
            _ => plan.acquire.push(mailbox_id),
        }
    }
    plan
}

/// What [`plan_pass`] decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassPlan {
    pub acquire: Vec<i64>,
    pub held_elsewhere: Vec<(i64, String)>,
}

/// A node as `nodes list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeView {
    pub node_id: String,
    pub host: String,
    pub pid: i64,
    pub started: String,
    pub last_heartbeat: String,
    /// Whether its last heartbeat is recent ([`ALIVE_WITHIN`]).
    pub alive: bool,
    /// The names of the mailboxes whose leases it holds.
    pub mailboxes: Vec<String>,
}

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    pub mailbox_id: i64,
    /// None: released.
    pub node_id: Option<String>,
    pub token: i64,
    pub expires_at: String,
}

/// What one heartbeat changes, decided from what the database holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeasePlan {
    /// Leases this node still holds: renewed.
    pub renew: Vec<i64>,
    /// Leases this node gives up so other nodes get their share.
    pub release: Vec<i64>,
    /// Free or expired leases this node takes, each with a new token.
    pub acquire: Vec<i64>,
    /// When the first lease held by another node runs out (unless renewed),
    /// or a free lease left to others becomes anyone's: the next heartbeat
    /// comes no later, so a dead node's mailboxes are taken within the TTL,
    /// not the TTL plus a heartbeat period.
    pub others_expire_at: Option<String>,
    /// This node holds less than its share after this heartbeat: other
    /// nodes hold more than theirs and will give some up at their next.
    pub short_of_share: bool,
    /// Mailboxes over the share were kept because they are being polled.
    pub kept_busy: bool,
}

/// What one heartbeat found.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    /// The leases this node holds now.
    pub held: Vec<Fence>,
    /// The leases it gave up so other nodes get their share.
    pub released: Vec<i64>,
    /// How long until another node's lease may run out.
    pub next_expiry_in: Option<Duration>,
    /// This node holds less than its fair share: the next heartbeat comes
    /// soon, to take what the others give up.
    pub short_of_share: bool,
    /// Mailboxes of this node with new mail announced to another node
    /// (a Graph notification that reached it) since the last heartbeat.
    pub announced: Vec<Announcement>,
    /// It kept mailboxes over its share because they were being polled.
    pub kept_busy: bool,
}

/// New mail announced for a mailbox to a node that does not hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub mailbox_id: i64,
    /// The Graph lifecycle event that came with it (`subscriptionRemoved`…),
    /// for the holder's watcher.
    pub event: Option<String>,
}

/// A node whose heartbeat is recent enough ([`ALIVE_WITHIN`]) to count
/// when mailboxes are shared out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveNode {
    pub id: String,
    /// Its last heartbeat, RFC 3339 text in the database's clock.
    pub heartbeat_at: String,
}

/// A free lease (released, or run out) that no node took this long may be
/// taken by any node, even one already at its share: a mailbox nobody
/// polls is worse than an uneven share, which the next heartbeats even out.
/// Longer than a few quick beats, so a node short of its share gets the
/// first chance.
pub const UNCLAIMED_AFTER: Duration = Duration::from_secs(1);

/// A node short of its share counts as waiting for leases while it beats
/// this often (it beats every half second while short). A node that is
/// paused (SIGSTOP, a VM migration) stops counting within this time, so
/// the others stop giving mailboxes up for it, well before it stops
/// counting as alive.
pub const WAITING_WITHIN: Duration = Duration::from_millis(1500);

/// Decides a heartbeat: keep what is ours and live; give up what is over
/// our fair share (`ceil(mailboxes / live nodes)`) when another node short
/// of its share is beating; take free or expired leases up to the share,
/// and any lease left free longer than [`UNCLAIMED_AFTER`]. `now` is the
/// database's time as RFC 3339 text; `live` includes this node.
pub fn plan_leases(
    node_id: &str,
    now: &str,
    live: &[LiveNode],
    mailboxes: &[i64],
    leases: &[LeaseRow],
    busy: &[i64],
) -> LeasePlan {
    let by_mailbox: HashMap<i64, &LeaseRow> = leases.iter().map(|l| (l.mailbox_id, l)).collect();
    let live_nodes = live.len().max(1);
    let share = mailboxes.len().div_ceil(live_nodes);
    let floor = mailboxes.len() / live_nodes;
    let unclaimed_since = shifted(now, -chrono::Duration::from_std(UNCLAIMED_AFTER).unwrap_or_default());
    let mut plan = LeasePlan::default();
    let mut held_by: HashMap<&str, usize> = HashMap::new();
    let mut free: Vec<&LeaseRow> = Vec::new();
    let mut never_leased = Vec::new();
    for &mailbox_id in mailboxes {
        match by_mailbox.get(&mailbox_id) {
            Some(l) if l.expires_at.as_str() > now && l.node_id.as_deref() == Some(node_id) => {
                plan.renew.push(mailbox_id)
            }
            Some(l) if l.expires_at.as_str() > now && l.node_id.is_some() => {
                *held_by.entry(l.node_id.as_deref().unwrap_or_default()).or_default() += 1;
                plan.note_change_at(&l.expires_at);
            }
            Some(l) => free.push(l),
            None => never_leased.push(mailbox_id),
        }
    }
    let waiting_since = shifted(now, -chrono::Duration::from_std(WAITING_WITHIN).unwrap_or_default());
    let another_waits = live.iter().any(|n| {
        n.id != node_id
            && n.heartbeat_at.as_str() > waiting_since.as_str()
            && held_by.get(n.id.as_str()).copied().unwrap_or(0) < floor
    });
    if plan.renew.len() > share && another_waits {
        // Idle mailboxes go first; busy ones stay while idle ones suffice,
        // and are kept back otherwise (the caller insists by passing none).
        let over = plan.renew.len() - share;
        let (idle, kept): (Vec<i64>, Vec<i64>) = plan.renew.iter().partition(|m| !busy.contains(m));
        plan.release = idle.iter().rev().take(over).copied().collect();
        plan.kept_busy = plan.release.len() < over;
        plan.renew = kept.into_iter().chain(idle.into_iter().filter(|m| !plan.release.contains(m))).collect();
        plan.renew.sort_unstable();
    }
    // Nodes take free leases from different ends of the list, so two nodes
    // starting together do not both reach for the same first mailboxes.
    // Mailboxes never leased (new ones) go by share alone: when nodes start
    // together, the first must not take them all.
    let mut candidates: Vec<(i64, Option<&str>)> = never_leased.iter().map(|&m| (m, None)).collect();
    candidates.extend(free.iter().map(|l| (l.mailbox_id, Some(l.expires_at.as_str()))));
    candidates.sort_by_key(|(m, _)| *m);
    if node_hash(node_id) % 2 == 1 {
        candidates.reverse();
    }
    let mut wanted = share.saturating_sub(plan.renew.len());
    for (mailbox_id, free_since) in candidates {
        let unclaimed = free_since.is_some_and(|since| since <= unclaimed_since.as_str());
        if wanted > 0 {
            wanted -= 1;
            plan.acquire.push(mailbox_id);
        } else if unclaimed {
            plan.acquire.push(mailbox_id);
        } else if let Some(since) = free_since {
            // Left to a node short of its share; ours once unclaimed.
            plan.note_change_at(&shifted(since, chrono::Duration::from_std(UNCLAIMED_AFTER).unwrap_or_default()));
        }
    }
    // Shares are rounded up, so a node may rightly end one short: only the
    // fair share rounded down counts as short.
    plan.short_of_share = plan.renew.len() + plan.acquire.len() < floor;
    plan
}

impl LeasePlan {
    fn note_change_at(&mut self, at: &str) {
        if self.others_expire_at.as_deref().is_none_or(|e| at < e) {
            self.others_expire_at = Some(at.to_string());
        }
    }
}

fn node_hash(node_id: &str) -> u64 {
    node_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// `now` plus `ttl`, as RFC 3339 text with milliseconds.
pub fn expiry(now: &str, ttl: Duration) -> String {
    shifted(now, chrono::Duration::from_std(ttl).unwrap_or_default())
}

/// `now` (RFC 3339) moved by `by`, as RFC 3339 text with milliseconds.
fn shifted(now: &str, by: chrono::Duration) -> String {
    let now = chrono::DateTime::parse_from_rfc3339(now)
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(|_| chrono::Utc::now());
    (now + by).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// How long from `now` until `at` (both RFC 3339), if `at` is later.
pub fn time_until(now: &str, at: &str) -> Option<Duration> {
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
    (parse(at)? - parse(now)?).to_std().ok()
}

/// `now` minus `ttl`: nodes whose heartbeat is later are alive.
pub(crate) fn alive_since(now: &str, ttl: Duration) -> String {
    shifted(now, -chrono::Duration::from_std(ttl).unwrap_or_default())
}

/// The leases this process holds, by mailbox: what its writes are fenced
/// with. Empty and disabled in processes that take no leases (the CLI, a
/// single `run-once`), whose writes are not fenced.
#[derive(Debug, Default)]
pub struct Fences {
    enabled: std::sync::atomic::AtomicBool,
    /// Whether a heartbeat (or a pass taking its leases) has said what this
    /// process holds: a node just started holds nothing until its first.
    known: std::sync::atomic::AtomicBool,
    held: RwLock<HashMap<i64, Fence>>,
    /// Writes refused because a newer lease exists (or ours ran out).
    refused: AtomicU64,
}

impl Fences {
    /// From now on, every write for a mailbox needs its lease.
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::SeqCst);
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::SeqCst)
    }

    /// Replaces what this process holds (after a heartbeat).
    pub fn set(&self, fences: Vec<Fence>) {
        let mut held = self.held.write().unwrap_or_else(|p| p.into_inner());
        *held = fences.into_iter().map(|f| (f.mailbox_id, f)).collect();
        self.known.store(true, Ordering::SeqCst);
    }

    /// Whether what this process holds is known yet (see [`Fences::set`]).
    pub fn is_known(&self) -> bool {
        self.known.load(Ordering::SeqCst)
    }

    /// Forgets one lease (the node found itself fenced, or gave it up).
    pub fn drop_mailbox(&self, mailbox_id: i64) {
        self.held.write().unwrap_or_else(|p| p.into_inner()).remove(&mailbox_id);
    }

    pub fn get(&self, mailbox_id: i64) -> Option<Fence> {
        self.held.read().unwrap_or_else(|p| p.into_inner()).get(&mailbox_id).cloned()
    }

    pub fn held(&self) -> Vec<Fence> {
        let mut all: Vec<Fence> = self.held.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        all.sort_by_key(|f| f.mailbox_id);
        all
    }

    /// How many writes were refused.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Checks, inside a write transaction, that this process may write for
    /// `mailbox_id`: `stored` reads the database's lease for it and the
    /// database's time. Without fencing enabled, every write may go.
    pub fn check(&self, mailbox_id: i64, stored: impl FnOnce() -> Result<(Option<LeaseRow>, String)>) -> Result<()> {
        if !self.is_enabled() {
            return Ok(());
        }
        let Some(fence) = self.get(mailbox_id) else {
            return Err(self.refuse(mailbox_id, "this node holds no lease for it".into()));
        };
        let (lease, now) = stored()?;
        match lease {
            Some(l) if l.node_id.as_deref() == Some(fence.node_id.as_str()) && l.token == fence.token => {
                if l.expires_at.as_str() > now.as_str() {
                    Ok(())
                } else {
                    Err(self.refuse(mailbox_id, format!("its lease (token {}) ran out at {}", l.token, l.expires_at)))
                }
            }
            Some(l) => Err(self.refuse(
                mailbox_id,
                format!(
                    "a newer lease exists (token {} held by {}; this write carried token {})",
                    l.token,
                    l.node_id.as_deref().unwrap_or("nobody"),
                    fence.token
                ),
            )),
            None => Err(self.refuse(mailbox_id, "it has no lease".into())),
        }
    }

    fn refuse(&self, mailbox_id: i64, reason: String) -> StoreError {
        self.refused.fetch_add(1, Ordering::Relaxed);
        self.drop_mailbox(mailbox_id);
        tracing::warn!(mailbox_id, %reason, "write refused: fenced");
        StoreError::Fenced { mailbox_id, reason }
    }
}

/// Nodes and leases, on the shared database.
pub trait LeaseStore: Send + Sync {
    /// Records this process as a node (its id is unique per process).
    fn register_node(&self, node: &NewNode) -> Result<()>;
    /// One heartbeat: records that the node lives, renews its leases, gives
    /// up what is over its share and takes free or expired ones. Returns
    /// the leases it holds now (also kept in [`LeaseStore::fences`]).
    fn heartbeat(&self, node_id: &str, ttl: Duration) -> Result<Heartbeat> {
        self.heartbeat_keeping(node_id, ttl, &[])
    }
    /// A heartbeat that gives up mailboxes in `busy` (being polled now)
    /// only when not enough others are over the share: a mailbox given up
    /// mid-poll wastes the batch in flight (its writes are fenced, and the
    /// new holder fetches it again).
    fn heartbeat_keeping(&self, node_id: &str, ttl: Duration, busy: &[i64]) -> Result<Heartbeat>;
    /// Tells whichever node holds the mailbox that new mail was announced
    /// (it hears of it at its next heartbeat). False when no node holds it
    /// now: the next node to take its lease hears of it with the lease (a
    /// mailbox never leased is polled at once by its first holder anyway).
    fn announce_mail(&self, mailbox_id: i64, event: Option<&str>) -> Result<bool>;
    /// A node stopping: gives its leases up at once, so others take them
    /// without waiting for the TTL.
    fn stop_node(&self, node_id: &str) -> Result<()>;
    /// A `run-once` pass (registered as [`NodeKind::RunOnce`]) takes every
    /// free lease, each with a new token ([`plan_pass`]); kept in
    /// [`LeaseStore::fences`].
    fn take_free_leases(&self, node_id: &str, ttl: Duration) -> Result<PassLeases>;
    /// Renews the leases `node_id` still holds, taking none (a pass longer
    /// than the TTL); returns them (also kept in [`LeaseStore::fences`]).
    fn renew_leases(&self, node_id: &str, ttl: Duration) -> Result<Vec<Fence>>;
    /// Frees at once the leases of processes in `pid_scope` (this machine,
    /// this pid namespace) that `is_running` says are gone — a node or a
    /// pass killed or crashed here — and marks them stopped. Returns their
    /// ids. Processes elsewhere are left to their leases' TTL.
    fn free_leases_of_gone(&self, pid_scope: &str, is_running: &dyn Fn(i64) -> bool) -> Result<Vec<String>>;
    /// Every node seen, newest first, with what it holds; alive when its
    /// last heartbeat is within `alive_within`.
    fn nodes(&self, alive_within: Duration) -> Result<Vec<NodeView>>;
    /// The leases as stored (for tests and `nodes list`).
    fn leases(&self) -> Result<Vec<LeaseRow>>;
    /// This process's fences.
    fn fences(&self) -> &Fences;
    /// Whether `serve` processes elsewhere may share these mailboxes
    /// (PostgreSQL); one SQLite file has one `serve`.
    fn shared_by_nodes(&self) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(mailbox_id: i64, node: Option<&str>, expires_at: &str) -> LeaseRow {
        LeaseRow { mailbox_id, node_id: node.map(str::to_string), token: 1, expires_at: expires_at.into() }
    }

    /// Nodes a, b, c… (the first `n`), all beating now.
    fn live(n: usize) -> Vec<LiveNode> {
        ["a", "b", "c", "d"][..n].iter().map(|id| LiveNode { id: id.to_string(), heartbeat_at: NOW.into() }).collect()
    }

    const NOW: &str = "2026-12-02T10:00:00.000Z";
    const LATER: &str = "2026-12-02T10:00:15.000Z";
    const EARLIER: &str = "2026-12-02T09:59:59.000Z";

    #[test]
    fn a_lone_node_takes_every_mailbox() {
        let plan = plan_leases("a", NOW, &live(1), &[1, 2, 3], &[], &[]);
        assert_eq!(plan.acquire.len(), 3);
        assert!(plan.renew.is_empty() && plan.release.is_empty());
    }

    #[test]
    fn a_node_that_joins_gets_its_share_as_the_others_give_theirs_up() {
        let mailboxes: Vec<i64> = (1..=6).collect();
        let held: Vec<LeaseRow> = mailboxes.iter().map(|&m| lease(m, Some("a"), LATER)).collect();
        // Two nodes alive: a keeps three, releases three.
        let plan = plan_leases("a", NOW, &live(2), &mailboxes, &held, &[]);
        assert_eq!((plan.renew.len(), plan.release.len(), plan.acquire.len()), (3, 3, 0));
        // b sees the released ones free (released leases have no owner).
        let after: Vec<LeaseRow> = held
            .iter()
            .map(|l| if plan.release.contains(&l.mailbox_id) { lease(l.mailbox_id, None, NOW) } else { l.clone() })
            .collect();
        let plan_b = plan_leases("b", NOW, &live(2), &mailboxes, &after, &[]);
        assert_eq!(plan_b.acquire.len(), 3);
        assert!(plan_b.acquire.iter().all(|m| plan.release.contains(m)));
        assert!(!plan.short_of_share && !plan_b.short_of_share);
    }

    #[test]
    fn a_node_knows_it_is_short_of_its_share_until_the_others_give_some_up() {
        let mailboxes: Vec<i64> = (1..=7).collect();
        let held: Vec<LeaseRow> = mailboxes.iter().map(|&m| lease(m, Some("a"), LATER)).collect();
        assert!(plan_leases("b", NOW, &live(2), &mailboxes, &held, &[]).short_of_share);
        // Seven over two: four and three; the node with three is not short.
        let after: Vec<LeaseRow> =
            held.iter().map(|l| if l.mailbox_id > 4 { lease(l.mailbox_id, None, NOW) } else { l.clone() }).collect();
        let plan_b = plan_leases("b", NOW, &live(2), &mailboxes, &after, &[]);
        assert_eq!((plan_b.acquire.len(), plan_b.short_of_share), (3, false));
        assert!(!plan_leases("a", NOW, &live(1), &mailboxes, &held, &[]).short_of_share);
    }

    #[test]
    fn a_pass_takes_every_free_lease_and_leaves_live_ones_to_their_holders() {
        let leases = [
            lease(1, Some("dead"), EARLIER),
            lease(2, Some("b"), LATER),
            lease(3, None, EARLIER),
            lease(5, Some("pass"), LATER),
        ];
        let plan = plan_pass("pass", NOW, &[1, 2, 3, 4, 5], &leases);
        assert_eq!(plan.acquire, vec![1, 3, 4, 5]);
        assert_eq!(plan.held_elsewhere, vec![(2, "b".to_string())]);
    }

    #[test]
    fn expired_leases_are_taken_and_live_ones_of_others_are_not() {
        let leases = [lease(1, Some("dead"), EARLIER), lease(2, Some("b"), LATER)];
        let plan = plan_leases("a", NOW, &live(2), &[1, 2], &leases, &[]);
        assert_eq!(plan.acquire, vec![1]);
        // Our own lease that ran out is not renewed: it is taken anew (with a new token).
        let plan = plan_leases("a", NOW, &live(1), &[1], &[lease(1, Some("a"), EARLIER)], &[]);
        assert_eq!((plan.renew.len(), plan.acquire.clone()), (0, vec![1]));
    }

    #[test]
    fn a_lease_nobody_took_goes_to_a_node_already_at_its_share() {
        // Three nodes alive, nine mailboxes: a holds its three; b and c hold
        // none, but nobody took the three that ran out long ago (b and c
        // are paused, say): a takes them rather than leave them unpolled.
        let long_ago = "2026-12-02T09:59:55.000Z";
        let mut leases: Vec<LeaseRow> = (1..=3).map(|m| lease(m, Some("a"), LATER)).collect();
        leases.extend((4..=6).map(|m| lease(m, Some("dead"), long_ago)));
        // These ran out just now: left to b and c for a second.
        leases.extend((7..=9).map(|m| lease(m, Some("dead"), NOW)));
        let mailboxes: Vec<i64> = (1..=9).collect();
        let plan = plan_leases("a", NOW, &live(3), &mailboxes, &leases, &[]);
        assert_eq!(plan.renew, vec![1, 2, 3]);
        let mut taken = plan.acquire.clone();
        taken.sort();
        assert_eq!(taken, vec![4, 5, 6]);
        assert_eq!(
            plan.others_expire_at.as_deref(),
            Some("2026-12-02T10:00:01.000Z"),
            "a looks again when they are unclaimed"
        );
        // b, short of its share, takes its share at once (and whatever
        // is unclaimed besides).
        let plan_b = plan_leases("b", NOW, &live(3), &mailboxes, &leases, &[]);
        assert!(plan_b.acquire.len() >= 3 && !plan_b.short_of_share, "{plan_b:?}");
    }

    #[test]
    fn an_over_share_node_gives_up_mailboxes_only_while_a_short_node_is_beating() {
        let mailboxes: Vec<i64> = (1..=6).collect();
        let held: Vec<LeaseRow> = mailboxes.iter().map(|&m| lease(m, Some("a"), LATER)).collect();
        let mut nodes = live(2);
        assert_eq!(plan_leases("a", NOW, &nodes, &mailboxes, &held, &[]).release.len(), 3);
        // b's last heartbeat is three seconds old: it still counts as alive
        // (its share is kept for it), but it is not taking anything now.
        nodes[1].heartbeat_at = "2026-12-02T09:59:57.000Z".into();
        let plan = plan_leases("a", NOW, &nodes, &mailboxes, &held, &[]);
        assert!(plan.release.is_empty(), "nothing given up for a node that does not beat");
        assert_eq!(plan.renew.len(), 6);
    }

    #[test]
    fn mailboxes_being_polled_are_given_up_last() {
        let mailboxes: Vec<i64> = (1..=6).collect();
        let held: Vec<LeaseRow> = mailboxes.iter().map(|&m| lease(m, Some("a"), LATER)).collect();
        let plan = plan_leases("a", NOW, &live(2), &mailboxes, &held, &[4, 5, 6]);
        let mut released = plan.release.clone();
        released.sort();
        assert_eq!((released, plan.renew.clone(), plan.kept_busy), (vec![1, 2, 3], vec![4, 5, 6], false));
        // Only one idle: it goes, the busy ones stay (for now).
        let plan = plan_leases("a", NOW, &live(2), &mailboxes, &held, &[1, 2, 3, 4, 5]);
        assert_eq!((plan.release.clone(), plan.kept_busy), (vec![6], true));
        assert_eq!(plan.renew, vec![1, 2, 3, 4, 5]);
        // Insisting (no busy list): the share again.
        assert_eq!(plan_leases("a", NOW, &live(2), &mailboxes, &held, &[]).release.len(), 3);
    }

    #[test]
    fn fences_refuse_a_stale_token_an_expired_lease_and_a_mailbox_not_held() {
        let fences = Fences::default();
        assert!(fences.check(1, || unreachable!("not enabled: no read")).is_ok());
        fences.enable();
        fences.set(vec![Fence { mailbox_id: 1, node_id: "a".into(), token: 4 }]);
        let ok = || {
            Ok((
                Some(LeaseRow { mailbox_id: 1, node_id: Some("a".into()), token: 4, expires_at: LATER.into() }),
                NOW.into(),
            ))
        };
        assert!(fences.check(1, ok).is_ok());
        let newer = || {
            Ok((
                Some(LeaseRow { mailbox_id: 1, node_id: Some("b".into()), token: 5, expires_at: LATER.into() }),
                NOW.into(),
            ))
        };
        assert!(matches!(fences.check(1, newer), Err(StoreError::Fenced { mailbox_id: 1, .. })));
        assert!(fences.get(1).is_none(), "a fenced mailbox is dropped");
        fences.set(vec![Fence { mailbox_id: 1, node_id: "a".into(), token: 4 }]);
        let expired = || {
            Ok((
                Some(LeaseRow { mailbox_id: 1, node_id: Some("a".into()), token: 4, expires_at: EARLIER.into() }),
                NOW.into(),
            ))
        };
        assert!(fences.check(1, expired).is_err());
        assert!(fences.check(2, || unreachable!("not held: refused before reading")).is_err());
        assert_eq!(fences.refused(), 3);
    }
}
