//! [`LeaseStore`] on PostgreSQL, and the fencing check of its writes.

use crate::lease::Announcement;
use std::time::Duration;

use tokio_postgres::Row;

use super::{PgStore, PgTx};
use crate::lease::{
    ALIVE_WITHIN, Fence, Fences, Heartbeat, LeaseRow, LeaseStore, LiveNode, NewNode, NodeView, PassLeases, alive_since,
    expiry, plan_leases, plan_pass, time_until,
};
use crate::{NodeKind, Result};

/// The database's time, as RFC 3339 text with milliseconds: the one clock
/// every node agrees on.
fn db_now(tx: &mut PgTx<'_>) -> Result<String> {
    Ok(tx.query_one(&format!("SELECT {NOW_SQL}"), &[])?.try_get(0)?)
}

/// The database's time as RFC 3339 text with milliseconds, in SQL.
const NOW_SQL: &str = r#"to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"#;

fn lease_from_row(r: &Row) -> Result<LeaseRow> {
    Ok(LeaseRow { mailbox_id: r.try_get(0)?, node_id: r.try_get(1)?, token: r.try_get(2)?, expires_at: r.try_get(3)? })
}

/// Refuses the transaction's writes for `mailboxes` unless this process holds
/// their leases (when it takes leases at all). Each lease row is locked
/// `FOR SHARE` as it is read (in mailbox order), so a takeover, which updates
/// the row, waits until this transaction ends, and one that committed before
/// is what this transaction reads: the fence holds also for writes made
/// without the write lock ([`PgStore::write_for_mailbox`]).
pub(crate) fn check_fences(fences: &Fences, tx: &mut PgTx<'_>, mailboxes: &[i64]) -> Result<()> {
    if !fences.is_enabled() {
        return Ok(());
    }
    let mut sorted = mailboxes.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    for mailbox_id in sorted {
        fences.check(mailbox_id, || {
            let row = tx.query_opt(
                &format!(
                    "SELECT mailbox_id, node_id, token, expires_at, {NOW_SQL}
                     FROM mailbox_leases WHERE mailbox_id = $1 FOR SHARE"
                ),
                &[&mailbox_id],
            )?;
            match row {
                Some(row) => Ok((Some(lease_from_row(&row)?), row.try_get(4)?)),
                None => Ok((None, db_now(tx)?)),
            }
        })?;
    }
    Ok(())
}

/// Takes leases for `node_id`, each with a token above any before.
fn acquire(tx: &mut PgTx<'_>, mailboxes: &[i64], node_id: &str, until: &str) -> Result<()> {
    for id in mailboxes {
        tx.exec(
            "INSERT INTO mailbox_leases (mailbox_id, node_id, token, expires_at) VALUES ($1, $2, 1, $3)
             ON CONFLICT (mailbox_id) DO UPDATE SET node_id = excluded.node_id,
                 token = mailbox_leases.token + 1, expires_at = excluded.expires_at",
            &[id, &node_id, &until],
        )?;
    }
    Ok(())
}

/// The live leases `node_id` holds.
fn held_by(tx: &mut PgTx<'_>, node_id: &str, now: &str) -> Result<Vec<Fence>> {
    tx.query(
        "SELECT mailbox_id, token FROM mailbox_leases WHERE node_id = $1 AND expires_at > $2 ORDER BY mailbox_id",
        &[&node_id, &now],
    )?
    .iter()
    .map(|r| Ok(Fence { mailbox_id: r.try_get(0)?, node_id: node_id.to_string(), token: r.try_get(1)? }))
    .collect()
}

fn enabled_mailboxes(tx: &mut PgTx<'_>) -> Result<Vec<i64>> {
    Ok(tx
        .query("SELECT id FROM mailboxes WHERE enabled ORDER BY id", &[])?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?)
}

fn all_leases(tx: &mut PgTx<'_>) -> Result<Vec<LeaseRow>> {
    tx.query("SELECT mailbox_id, node_id, token, expires_at FROM mailbox_leases", &[])?
        .iter()
        .map(lease_from_row)
        .collect()
}

/// A node or pass stopped: its leases free at once. A pass leaves no row
/// (a `run-once` a minute would pile them up); a node's stays for `nodes list`.
fn stopped(tx: &mut PgTx<'_>, node_id: &str, now: &str) -> Result<()> {
    tx.exec("UPDATE nodes SET stopped_at = $2 WHERE id = $1", &[&node_id, &now])?;
    tx.exec("DELETE FROM nodes WHERE id = $1 AND kind = $2", &[&node_id, &NodeKind::RunOnce])?;
    tx.exec("UPDATE mailbox_leases SET node_id = NULL, expires_at = $2 WHERE node_id = $1", &[&node_id, &now])?;
    Ok(())
}

impl LeaseStore for PgStore {
    fn register_node(&self, node: &NewNode) -> Result<()> {
        self.write_leases(|tx| {
            let now = db_now(tx)?;
            tx.exec(
                "INSERT INTO nodes (id, host, pid, started_at, heartbeat_at, kind, pid_scope)
                 VALUES ($1, $2, $3, $4, $4, $5, $6)",
                &[&node.id, &node.host, &node.pid, &now, &node.kind, &node.pid_scope],
            )?;
            Ok(())
        })
    }

    fn heartbeat_keeping(&self, node_id: &str, ttl: Duration, busy: &[i64]) -> Result<Heartbeat> {
        let (held, released, next_expiry_in, (short_of_share, kept_busy), announced) = self.write_leases(|tx| {
            let now = db_now(tx)?;
            tx.exec("UPDATE nodes SET heartbeat_at = $2 WHERE id = $1", &[&node_id, &now])?;
            let live: Vec<LiveNode> = tx
                .query(
                    "SELECT id, heartbeat_at FROM nodes WHERE stopped_at IS NULL AND heartbeat_at > $1 AND kind = $2",
                    &[&alive_since(&now, ALIVE_WITHIN.min(ttl)), &NodeKind::Serve],
                )?
                .iter()
                .map(|r| Ok(LiveNode { id: r.try_get(0)?, heartbeat_at: r.try_get(1)? }))
                .collect::<Result<_>>()?;
            let mailboxes = enabled_mailboxes(tx)?;
            let leases = all_leases(tx)?;
            let plan = plan_leases(node_id, &now, &live, &mailboxes, &leases, busy);
            let until = expiry(&now, ttl);
            let next_expiry_in = plan.others_expire_at.as_deref().and_then(|at| time_until(&now, at));
            // The rows to change, locked in mailbox order as fenced writers
            // lock theirs ([`check_fences`]): waiting for one of them cannot
            // close a cycle with a writer of several mailboxes.
            let changing: Vec<i64> = plan.renew.iter().chain(&plan.release).chain(&plan.acquire).copied().collect();
            tx.query(
                "SELECT 1 FROM mailbox_leases WHERE mailbox_id = ANY($1) ORDER BY mailbox_id FOR NO KEY UPDATE",
                &[&changing],
            )?;
            tx.exec(
                "UPDATE mailbox_leases SET expires_at = $3 WHERE mailbox_id = ANY($1) AND node_id = $2",
                &[&plan.renew, &node_id, &until],
            )?;
            tx.exec(
                "UPDATE mailbox_leases SET node_id = NULL, expires_at = $3 WHERE mailbox_id = ANY($1) AND node_id = $2",
                &[&plan.release, &node_id, &now],
            )?;
            acquire(tx, &plan.acquire, node_id, &until)?;
            let held = held_by(tx, node_id, &now)?;
            let announced = tx
                .query(
                    "SELECT mailbox_id, announced_event FROM mailbox_leases
                     WHERE node_id = $1 AND expires_at > $2 AND announced_at IS NOT NULL",
                    &[&node_id, &now],
                )?
                .iter()
                .map(|r| Ok(Announcement { mailbox_id: r.try_get(0)?, event: r.try_get(1)? }))
                .collect::<Result<Vec<_>>>()?;
            for a in &announced {
                tx.exec(
                    "UPDATE mailbox_leases SET announced_at = NULL, announced_event = NULL WHERE mailbox_id = $1",
                    &[&a.mailbox_id],
                )?;
            }
            Ok((held, plan.release, next_expiry_in, (plan.short_of_share, plan.kept_busy), announced))
        })?;
        self.fences.set(held.clone());
        Ok(Heartbeat { held, released, next_expiry_in, short_of_share, announced, kept_busy })
    }

    fn announce_mail(&self, mailbox_id: i64, event: Option<&str>) -> Result<bool> {
        self.write_leases(|tx| {
            let now = db_now(tx)?;
            let held = tx.query_opt(
                "UPDATE mailbox_leases SET announced_at = $2, announced_event = COALESCE($3, announced_event)
                 WHERE mailbox_id = $1 RETURNING node_id IS NOT NULL AND expires_at > $2",
                &[&mailbox_id, &now, &event],
            )?;
            Ok(match held {
                Some(row) => row.try_get(0)?,
                None => false,
            })
        })
    }

    fn stop_node(&self, node_id: &str) -> Result<()> {
        self.write_leases(|tx| {
            let now = db_now(tx)?;
            stopped(tx, node_id, &now)
        })?;
        self.fences.set(Vec::new());
        Ok(())
    }

    fn take_free_leases(&self, node_id: &str, ttl: Duration) -> Result<PassLeases> {
        let leases = self.write_leases(|tx| {
            let now = db_now(tx)?;
            tx.exec("UPDATE nodes SET heartbeat_at = $2 WHERE id = $1", &[&node_id, &now])?;
            let plan = plan_pass(node_id, &now, &enabled_mailboxes(tx)?, &all_leases(tx)?);
            acquire(tx, &plan.acquire, node_id, &expiry(&now, ttl))?;
            Ok(PassLeases { held: held_by(tx, node_id, &now)?, held_elsewhere: plan.held_elsewhere })
        })?;
        self.fences.set(leases.held.clone());
        Ok(leases)
    }

    fn renew_leases(&self, node_id: &str, ttl: Duration) -> Result<Vec<Fence>> {
        let held = self.write_leases(|tx| {
            let now = db_now(tx)?;
            tx.exec("UPDATE nodes SET heartbeat_at = $2 WHERE id = $1", &[&node_id, &now])?;
            tx.exec(
                "UPDATE mailbox_leases SET expires_at = $3 WHERE node_id = $1 AND expires_at > $2",
                &[&node_id, &now, &expiry(&now, ttl)],
            )?;
            held_by(tx, node_id, &now)
        })?;
        self.fences.set(held.clone());
        Ok(held)
    }

    fn free_leases_of_gone(&self, pid_scope: &str, is_running: &dyn Fn(i64) -> bool) -> Result<Vec<String>> {
        self.write_leases(|tx| {
            let now = db_now(tx)?;
            let candidates =
                tx.query("SELECT id, pid FROM nodes WHERE pid_scope = $1 AND stopped_at IS NULL", &[&pid_scope])?;
            let mut gone = Vec::new();
            for row in candidates {
                let (id, pid): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
                if !is_running(pid) {
                    stopped(tx, &id, &now)?;
                    gone.push(id);
                }
            }
            Ok(gone)
        })
    }

    fn nodes(&self, alive_within: Duration) -> Result<Vec<NodeView>> {
        self.read(|tx| {
            let now = db_now(tx)?;
            let since = alive_since(&now, alive_within);
            let mut nodes: Vec<NodeView> = tx
                .query(
                    "SELECT id, host, pid, started_at, heartbeat_at, stopped_at IS NULL AND heartbeat_at > $1
                     FROM nodes WHERE kind = $2 ORDER BY started_at DESC, id",
                    &[&since, &NodeKind::Serve],
                )?
                .iter()
                .map(|r| {
                    Ok(NodeView {
                        node_id: r.try_get(0)?,
                        host: r.try_get(1)?,
                        pid: r.try_get(2)?,
                        started: r.try_get(3)?,
                        last_heartbeat: r.try_get(4)?,
                        alive: r.try_get(5)?,
                        mailboxes: Vec::new(),
                    })
                })
                .collect::<Result<_>>()?;
            let held = tx.query(
                "SELECT l.node_id, b.name FROM mailbox_leases l JOIN mailboxes b ON b.id = l.mailbox_id
                 WHERE l.node_id IS NOT NULL AND l.expires_at > $1 ORDER BY b.name",
                &[&now],
            )?;
            for row in held {
                let node_id: String = row.try_get(0)?;
                if let Some(node) = nodes.iter_mut().find(|n| n.node_id == node_id) {
                    node.mailboxes.push(row.try_get(1)?);
                }
            }
            Ok(nodes)
        })
    }

    fn leases(&self) -> Result<Vec<LeaseRow>> {
        self.read(|tx| {
            tx.query("SELECT mailbox_id, node_id, token, expires_at FROM mailbox_leases ORDER BY mailbox_id", &[])?
                .iter()
                .map(lease_from_row)
                .collect()
        })
    }

    fn fences(&self) -> &Fences {
        &self.fences
    }

    fn shared_by_nodes(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use crate::lease::{LeaseStore, NewNode};
    use crate::testing::TestDatabase;
    use crate::{MailboxKind, NewMailbox, PgStore, Store, StoreError};

    fn node(store: &PgStore, id: &str) {
        store.register_node(&NewNode::serve(id, "test", 1)).unwrap();
        store.fences().enable();
    }

    /// A mailbox's writes run beside other writers, without the write lock:
    /// a node taking its lease over must wait until a write that passed the
    /// fence has committed, and the old holder's next write is refused. So a
    /// stale write never lands after a newer lease.
    #[test]
    fn a_takeover_waits_for_the_write_in_flight_then_fences_the_old_holder() {
        let db = TestDatabase::create();
        let (a, b) = (PgStore::connect(&db.url).unwrap(), PgStore::connect(&db.url).unwrap());
        let mailbox = a
            .add_mailbox(&NewMailbox {
                name: "box".into(),
                kind: MailboxKind::DropFolder,
                config: serde_json::json!({"path": "/tmp/x"}),
                sealed_secret: None,
                connection_id: None,
                poll_seconds: 60,
                max_message_bytes: 1 << 20,
            })
            .unwrap()
            .id;
        let short = Duration::from_millis(300);
        node(&a, "a");
        assert_eq!(a.heartbeat("a", short).unwrap().held.len(), 1);
        node(&b, "b");

        let (locked_tx, locked) = mpsc::channel();
        let (go, go_rx) = mpsc::channel::<()>();
        let (a_ref, b_ref) = (&a, &b);
        std::thread::scope(|scope| {
            // a's write passes the fence, then dawdles past its lease.
            let writing = scope.spawn(move || {
                let a = a_ref;
                a.write_for_mailbox(&[mailbox], |tx| {
                    locked_tx.send(()).unwrap();
                    // Never for ever: a failing test must fail, not hang.
                    go_rx.recv_timeout(Duration::from_secs(10)).unwrap();
                    tx.exec("UPDATE mailboxes SET sync_state = 'from a' WHERE id = $1", &[&mailbox])?;
                    Ok(())
                })
            });
            locked.recv().unwrap();
            std::thread::sleep(short + Duration::from_millis(100));
            let (took_tx, took) = mpsc::channel();
            let taking = scope.spawn(move || {
                let beat = b_ref.heartbeat("b", Duration::from_secs(15));
                took_tx.send(Instant::now()).unwrap();
                beat
            });
            assert!(took.recv_timeout(Duration::from_millis(500)).is_err(), "b took the lease while a was writing");
            let released = Instant::now();
            go.send(()).unwrap();
            writing.join().unwrap().expect("a's write passed the fence before the takeover");
            assert!(took.recv().unwrap() >= released);
            let beat = taking.join().unwrap().unwrap();
            assert_eq!(beat.held.len(), 1, "b holds the mailbox once a's write is in");
        });
        assert_eq!(b.mailbox_sync_state(mailbox).unwrap().as_deref(), Some("from a"));
        let late = a.write_for_mailbox(&[mailbox], |tx| {
            tx.exec("UPDATE mailboxes SET sync_state = 'late' WHERE id = $1", &[&mailbox])?;
            Ok(())
        });
        assert!(matches!(late, Err(StoreError::Fenced { .. })), "{late:?}");
        assert_eq!(b.mailbox_sync_state(mailbox).unwrap().as_deref(), Some("from a"));
    }
}
