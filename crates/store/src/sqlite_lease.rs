//! [`LeaseStore`] on SQLite, and the fencing check of its writes.

use crate::lease::Announcement;
use std::time::Duration;

use rusqlite::{OptionalExtension, Transaction, params};

use crate::lease::{
    ALIVE_WITHIN, Fence, Fences, Heartbeat, LeaseRow, LeaseStore, LiveNode, NewNode, NodeView, PassLeases, alive_since,
    expiry, plan_leases, plan_pass, time_until,
};
use crate::sqlite::SqliteStore;
use crate::{NodeKind, Result};

/// The database's time, as RFC 3339 text with milliseconds.
fn db_now(tx: &Transaction<'_>) -> Result<String> {
    Ok(tx.query_row("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')", [], |r| r.get(0))?)
}

fn lease_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LeaseRow> {
    Ok(LeaseRow { mailbox_id: r.get(0)?, node_id: r.get(1)?, token: r.get(2)?, expires_at: r.get(3)? })
}

/// Refuses the transaction's writes for `mailboxes` unless this process holds
/// their leases (when it takes leases at all).
pub(crate) fn check_fences(fences: &Fences, tx: &Transaction<'_>, mailboxes: &[i64]) -> Result<()> {
    for &mailbox_id in mailboxes {
        fences.check(mailbox_id, || {
            let lease = tx
                .prepare_cached(
                    "SELECT mailbox_id, node_id, token, expires_at FROM mailbox_leases WHERE mailbox_id = ?1",
                )?
                .query_row([mailbox_id], lease_from_row)
                .optional()?;
            Ok((lease, db_now(tx)?))
        })?;
    }
    Ok(())
}

/// Takes leases for `node_id`, each with a token above any before.
fn acquire(tx: &Transaction<'_>, mailboxes: &[i64], node_id: &str, until: &str) -> Result<()> {
    for id in mailboxes {
        tx.prepare_cached(
            "INSERT INTO mailbox_leases (mailbox_id, node_id, token, expires_at) VALUES (?1, ?2, 1, ?3)
             ON CONFLICT (mailbox_id) DO UPDATE SET node_id = excluded.node_id,
                 token = mailbox_leases.token + 1, expires_at = excluded.expires_at",
        )?
        .execute(params![id, node_id, until])?;
    }
    Ok(())
}

/// The live leases `node_id` holds.
fn held_by(tx: &Transaction<'_>, node_id: &str, now: &str) -> Result<Vec<Fence>> {
    Ok(tx
        .prepare_cached(
            "SELECT mailbox_id, token FROM mailbox_leases WHERE node_id = ?1 AND expires_at > ?2 ORDER BY mailbox_id",
        )?
        .query_map(params![node_id, now], |r| {
            Ok(Fence { mailbox_id: r.get(0)?, node_id: node_id.to_string(), token: r.get(1)? })
        })?
        .collect::<rusqlite::Result<_>>()?)
}

/// A node or pass stopped: its leases free at once. A pass leaves no row
/// (a `run-once` a minute would pile them up); a node's stays for `nodes list`.
fn stopped(tx: &Transaction<'_>, node_id: &str, now: &str) -> Result<()> {
    tx.execute("UPDATE nodes SET stopped_at = ?2 WHERE id = ?1", params![node_id, now])?;
    tx.execute("DELETE FROM nodes WHERE id = ?1 AND kind = ?2", params![node_id, NodeKind::RunOnce])?;
    tx.execute("UPDATE mailbox_leases SET node_id = NULL, expires_at = ?2 WHERE node_id = ?1", params![node_id, now])?;
    Ok(())
}

fn enabled_mailboxes(tx: &Transaction<'_>) -> Result<Vec<i64>> {
    Ok(tx
        .prepare_cached("SELECT id FROM mailboxes WHERE enabled ORDER BY id")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?)
}

fn all_leases(tx: &Transaction<'_>) -> Result<Vec<LeaseRow>> {
    Ok(tx
        .prepare_cached("SELECT mailbox_id, node_id, token, expires_at FROM mailbox_leases")?
        .query_map([], lease_from_row)?
        .collect::<rusqlite::Result<_>>()?)
}

impl LeaseStore for SqliteStore {
    fn register_node(&self, node: &NewNode) -> Result<()> {
        self.write(|tx| {
            let now = db_now(tx)?;
            tx.execute(
                "INSERT INTO nodes (id, host, pid, started_at, heartbeat_at, kind, pid_scope)
                 VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6)",
                params![node.id, node.host, node.pid, now, node.kind, node.pid_scope],
            )?;
            Ok(())
        })
    }

    fn heartbeat_keeping(&self, node_id: &str, ttl: Duration, busy: &[i64]) -> Result<Heartbeat> {
        let (held, released, next_expiry_in, (short_of_share, kept_busy), announced) = self.write(|tx| {
            let now = db_now(tx)?;
            tx.execute("UPDATE nodes SET heartbeat_at = ?2 WHERE id = ?1", params![node_id, now])?;
            let live: Vec<LiveNode> = tx
                .prepare_cached(
                    "SELECT id, heartbeat_at FROM nodes WHERE stopped_at IS NULL AND heartbeat_at > ?1 AND kind = ?2",
                )?
                .query_map(params![alive_since(&now, ALIVE_WITHIN.min(ttl)), NodeKind::Serve], |r| {
                    Ok(LiveNode { id: r.get(0)?, heartbeat_at: r.get(1)? })
                })?
                .collect::<rusqlite::Result<_>>()?;
            let mailboxes = enabled_mailboxes(tx)?;
            let leases = all_leases(tx)?;
            let plan = plan_leases(node_id, &now, &live, &mailboxes, &leases, busy);
            let until = expiry(&now, ttl);
            let next_expiry_in = plan.others_expire_at.as_deref().and_then(|at| time_until(&now, at));
            for id in &plan.renew {
                tx.prepare_cached("UPDATE mailbox_leases SET expires_at = ?3 WHERE mailbox_id = ?1 AND node_id = ?2")?
                    .execute(params![id, node_id, until])?;
            }
            for id in &plan.release {
                tx.prepare_cached(
                    "UPDATE mailbox_leases SET node_id = NULL, expires_at = ?3 WHERE mailbox_id = ?1 AND node_id = ?2",
                )?
                .execute(params![id, node_id, now])?;
            }
            acquire(tx, &plan.acquire, node_id, &until)?;
            let held = held_by(tx, node_id, &now)?;
            let announced: Vec<Announcement> = tx
                .prepare_cached(
                    "SELECT mailbox_id, announced_event FROM mailbox_leases
                     WHERE node_id = ?1 AND expires_at > ?2 AND announced_at IS NOT NULL",
                )?
                .query_map(params![node_id, now], |r| Ok(Announcement { mailbox_id: r.get(0)?, event: r.get(1)? }))?
                .collect::<rusqlite::Result<_>>()?;
            for a in &announced {
                tx.prepare_cached(
                    "UPDATE mailbox_leases SET announced_at = NULL, announced_event = NULL WHERE mailbox_id = ?1",
                )?
                .execute([a.mailbox_id])?;
            }
            Ok((held, plan.release, next_expiry_in, (plan.short_of_share, plan.kept_busy), announced))
        })?;
        self.fences.set(held.clone());
        Ok(Heartbeat { held, released, next_expiry_in, short_of_share, announced, kept_busy })
    }

    fn announce_mail(&self, mailbox_id: i64, event: Option<&str>) -> Result<bool> {
        self.write(|tx| {
            let now = db_now(tx)?;
            let held = tx
                .query_row(
                    "UPDATE mailbox_leases SET announced_at = ?2, announced_event = COALESCE(?3, announced_event)
                     WHERE mailbox_id = ?1 RETURNING node_id IS NOT NULL AND expires_at > ?2",
                    params![mailbox_id, now, event],
                    |row| row.get::<_, bool>(0),
                )
                .optional()?;
            Ok(held.unwrap_or(false))
        })
    }

    fn stop_node(&self, node_id: &str) -> Result<()> {
        self.write(|tx| {
            let now = db_now(tx)?;
            stopped(tx, node_id, &now)
        })?;
        self.fences.set(Vec::new());
        Ok(())
    }

    fn take_free_leases(&self, node_id: &str, ttl: Duration) -> Result<PassLeases> {
        let leases = self.write(|tx| {
            let now = db_now(tx)?;
            tx.execute("UPDATE nodes SET heartbeat_at = ?2 WHERE id = ?1", params![node_id, now])?;
            let plan = plan_pass(node_id, &now, &enabled_mailboxes(tx)?, &all_leases(tx)?);
            acquire(tx, &plan.acquire, node_id, &expiry(&now, ttl))?;
            Ok(PassLeases { held: held_by(tx, node_id, &now)?, held_elsewhere: plan.held_elsewhere })
        })?;
        self.fences.set(leases.held.clone());
        Ok(leases)
    }

    fn renew_leases(&self, node_id: &str, ttl: Duration) -> Result<Vec<Fence>> {
        let held = self.write(|tx| {
            let now = db_now(tx)?;
            tx.execute("UPDATE nodes SET heartbeat_at = ?2 WHERE id = ?1", params![node_id, now])?;
            tx.execute(
                "UPDATE mailbox_leases SET expires_at = ?3 WHERE node_id = ?1 AND expires_at > ?2",
                params![node_id, now, expiry(&now, ttl)],
            )?;
            held_by(tx, node_id, &now)
        })?;
        self.fences.set(held.clone());
        Ok(held)
    }

    fn free_leases_of_gone(&self, pid_scope: &str, is_running: &dyn Fn(i64) -> bool) -> Result<Vec<String>> {
        self.write(|tx| {
            let now = db_now(tx)?;
            let candidates: Vec<(String, i64)> = tx
                .prepare_cached("SELECT id, pid FROM nodes WHERE pid_scope = ?1 AND stopped_at IS NULL")?
                .query_map([pid_scope], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let gone: Vec<String> =
                candidates.into_iter().filter(|(_, pid)| !is_running(*pid)).map(|(id, _)| id).collect();
            for id in &gone {
                stopped(tx, id, &now)?;
            }
            Ok(gone)
        })
    }

    fn nodes(&self, alive_within: Duration) -> Result<Vec<NodeView>> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let now = db_now(&tx)?;
        let since = alive_since(&now, alive_within);
        let mut nodes: Vec<NodeView> = tx
            .prepare(
                "SELECT id, host, pid, started_at, heartbeat_at, stopped_at IS NULL AND heartbeat_at > ?1
                 FROM nodes WHERE kind = ?2 ORDER BY started_at DESC, id",
            )?
            .query_map(params![since, NodeKind::Serve], |r| {
                Ok(NodeView {
                    node_id: r.get(0)?,
                    host: r.get(1)?,
                    pid: r.get(2)?,
                    started: r.get(3)?,
                    last_heartbeat: r.get(4)?,
                    alive: r.get(5)?,
                    mailboxes: Vec::new(),
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let held: Vec<(String, String)> = tx
            .prepare(
                "SELECT l.node_id, b.name FROM mailbox_leases l JOIN mailboxes b ON b.id = l.mailbox_id
                 WHERE l.node_id IS NOT NULL AND l.expires_at > ?1 ORDER BY b.name",
            )?
            .query_map([&now], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (node_id, mailbox) in held {
            if let Some(node) = nodes.iter_mut().find(|n| n.node_id == node_id) {
                node.mailboxes.push(mailbox);
            }
        }
        Ok(nodes)
    }

    fn leases(&self) -> Result<Vec<LeaseRow>> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare("SELECT mailbox_id, node_id, token, expires_at FROM mailbox_leases ORDER BY mailbox_id")?;
        Ok(stmt.query_map([], lease_from_row)?.collect::<rusqlite::Result<_>>()?)
    }

    fn fences(&self) -> &Fences {
        &self.fences
    }

    fn shared_by_nodes(&self) -> bool {
        false
    }
}
