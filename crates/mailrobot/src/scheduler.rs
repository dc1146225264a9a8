//! Polling: `run-once` polls every enabled mailbox once; `serve` keeps one
//! loop per mailbox whose lease its node holds. Mailboxes are independent: one that fails backs off on
//! its own schedule and never holds up the others.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use mailrobot_store::{LeaseStore, Mailbox, PollOutcome, PollRecord};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::node::{Node, Pass};
use crate::pipeline::{Pipeline, PollError, PollReport};

/// Longest wait between polls of a failing mailbox.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How often `serve` looks for added, enabled or disabled mailboxes.
const RELOAD_EVERY: Duration = Duration::from_secs(2);
/// A push watcher that ended is started again after this long.
const WATCH_AGAIN_AFTER: Duration = Duration::from_secs(600);

/// Delay before the next poll: the mailbox's interval after success; after
/// failures, the interval doubled per consecutive failure, capped.
pub fn next_delay(poll_seconds: i64, consecutive_failures: i64) -> Duration {
    let base = poll_seconds.max(1) as u64;
    if consecutive_failures <= 0 {
        return Duration::from_secs(base);
    }
    let factor = 1u64 << consecutive_failures.min(16);
    Duration::from_secs(base.saturating_mul(factor)).min(MAX_BACKOFF)
}

/// Polls one mailbox and records the outcome (status, error, next poll).
pub async fn poll_and_record(pipeline: &Pipeline, mailbox: &Mailbox) -> (Result<PollReport, PollError>, Duration) {
    poll_and_record_on(pipeline, mailbox, None).await
}

/// [`poll_and_record`] for a node: the mailbox counts as busy (given up
/// last when the node is over its share) only once its poll has a slot. One
/// still waiting for a slot has done nothing a handover would waste, so a
/// node that starts with more mailboxes than slots hands the waiting ones
/// to the nodes that join.
async fn poll_and_record_on(
    pipeline: &Pipeline,
    mailbox: &Mailbox,
    node: Option<&Node>,
) -> (Result<PollReport, PollError>, Duration) {
    // A server asked for quiet: nobody polls before then, whichever process.
    if let Some(wait) = mailbox.throttled_until.as_deref().and_then(until) {
        tracing::info!(mailbox = %mailbox.name, until = ?mailbox.throttled_until, "throttled by the server; not polling yet");
        let report = PollReport {
            mailbox: mailbox.name.clone(),
            throttled_until: mailbox.throttled_until.clone(),
            ..Default::default()
        };
        return (Ok(report), wait);
    }
    let permit = pipeline.poll_permits.clone().acquire_owned().await;
    let busy = node.map(|node| node.busy(mailbox.id));
    tracing::debug!(mailbox = %mailbox.name, "poll started");
    let started = Instant::now();
    let result = pipeline.poll(mailbox).await;
    drop(busy);
    drop(permit);
    // Fenced: another node holds the mailbox now; its polls record the
    // outcome (ours would be refused too). The loop ends at its next turn.
    if let Err(err) = &result
        && err.is_fenced()
    {
        tracing::info!(mailbox = %mailbox.name, error = %err, "lease lost mid-poll; another node polls this mailbox now");
        return (result, RELOAD_EVERY);
    }
    let outcome = match &result {
        Ok(_) => PollOutcome::Ok,
        // A wait the server asked for is no failure: it never feeds the
        // doubling backoff, and the mailbox shows it is held back.
        Err(err) if err.retry_after().is_some() => PollOutcome::Throttled { message: err.to_string() },
        Err(err) if err.is_paused() => PollOutcome::Paused { error: err.to_string() },
        Err(err) => PollOutcome::Failed { error: err.to_string() },
    };
    let failures = match &outcome {
        PollOutcome::Ok => 0,
        PollOutcome::Failed { .. } => mailbox.consecutive_failures + 1,
        PollOutcome::Paused { .. } | PollOutcome::Throttled { .. } => mailbox.consecutive_failures,
    };
    // A paused mailbox is checked at its normal pace: the check is local and
    // it should resume as soon as a person has fixed its connection. A
    // throttled one waits as long as the server asked, and no longer.
    let mut delay = match &outcome {
        PollOutcome::Failed { .. } => next_delay(mailbox.poll_seconds, failures),
        _ => next_delay(mailbox.poll_seconds, 0),
    };
    let retry_after = result.as_ref().err().and_then(PollError::retry_after);
    let throttled_until = retry_after.map(|wait| {
        delay = wait;
        (Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default())
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    });
    let next = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
    let record = PollRecord {
        outcome: outcome.clone(),
        next_poll_at: next.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        throttled_until,
    };
    match &result {
        Ok(report) => tracing::info!(
            mailbox = %mailbox.name, listed = report.listed, fetched = report.fetched,
            processed = report.processed, failed = report.failed, duplicates = report.duplicates,
            tickets_created = report.tickets_created, settled = report.settled,
            seconds = started.elapsed().as_secs_f64(), "poll done"
        ),
        Err(err) if matches!(outcome, PollOutcome::Throttled { .. }) => tracing::info!(
            mailbox = %mailbox.name, error = %err, retry_in_seconds = delay.as_secs_f64(),
            "held back by the server; polling again when it said"
        ),
        Err(err) => tracing::warn!(
            mailbox = %mailbox.name, error = %err, consecutive_failures = failures,
            retry_in_seconds = delay.as_secs(), "poll failed; backing off"
        ),
    }
    let fetched = result.as_ref().map_or(0, |r| r.fetched);
    let label = crate::metrics::mailbox_label(mailbox.id, &mailbox.name);
    crate::metrics::record_poll(&label, result.is_ok(), started.elapsed().as_secs_f64(), failures, fetched);
    let store = pipeline.store.clone();
    let id = mailbox.id;
    if let Err(err) = tokio::task::spawn_blocking(move || store.record_poll(id, &record))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
    {
        tracing::error!(mailbox = %mailbox.name, error = %err, "could not record the poll outcome");
    }
    (result, delay)
}

/// One pass over every enabled mailbox, all at once — those whose leases
/// it could take: a mailbox a `serve` node (or another pass) holds is that
/// process's to poll, and is reported with its holder instead.
pub async fn run_once(
    pipeline: &Pipeline,
    leases: Arc<dyn LeaseStore>,
) -> anyhow::Result<Vec<(Mailbox, Result<PollReport, PollError>)>> {
    let pass = Pass::start(leases).await?;
    let results = poll_for_pass(pipeline, &pass).await;
    pass.finish().await;
    results
}

async fn poll_for_pass(
    pipeline: &Pipeline,
    pass: &Pass,
) -> anyhow::Result<Vec<(Mailbox, Result<PollReport, PollError>)>> {
    let store = pipeline.store.clone();
    let mailboxes = tokio::task::spawn_blocking(move || store.mailboxes()).await??;
    let polls = mailboxes.into_iter().filter(|m| m.enabled).map(|mailbox| async move {
        if let Some(holder) = pass.held_elsewhere(mailbox.id) {
            tracing::info!(mailbox = %mailbox.name, node = holder, "polled by another process; this pass leaves it");
            let report =
                PollReport { mailbox: mailbox.name.clone(), held_by: Some(holder.to_string()), ..Default::default() };
            return Some((mailbox, Ok(report)));
        }
        if !pass.holds(mailbox.id) {
            // Enabled after the pass took its leases: the next pass polls it.
            tracing::debug!(mailbox = %mailbox.name, "enabled after this pass began; left to the next");
            return None;
        }
        let (result, _) = poll_and_record(pipeline, &mailbox).await;
        Some((mailbox, result))
    });
    Ok(futures::future::join_all(polls).await.into_iter().flatten().collect())
}

/// Keeps one polling loop per mailbox whose lease this node holds, until
/// `stop` turns true. Loops of mailboxes whose leases went elsewhere end.
pub async fn run_forever(pipeline: Pipeline, node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    // Each loop with what wakes it for new mail announced elsewhere.
    let mut loops: HashMap<i64, (JoinHandle<()>, Arc<Notify>)> = HashMap::new();
    loop {
        loops.retain(|_, (handle, _)| !handle.is_finished());
        let held = node.held();
        loops.retain(|id, (handle, _)| {
            let keep = held.contains(id);
            if !keep {
                tracing::info!(mailbox_id = id, node = %node.id, "lease gone: another node polls this mailbox now");
                handle.abort();
            }
            keep
        });
        for id in held {
            if let std::collections::hash_map::Entry::Vacant(slot) = loops.entry(id) {
                tracing::info!(mailbox_id = id, node = %node.id, "watching mailbox");
                let arrived = Arc::new(Notify::new());
                let looping = mailbox_loop(pipeline.clone(), node.clone(), id, arrived.clone(), stop.clone());
                slot.insert((tokio::spawn(looping), arrived));
            }
        }
        for told in node.take_announced() {
            if let Some((_, arrived)) = loops.get(&told.mailbox_id) {
                arrived.notify_one();
            }
            if let (Some(event), Some(push)) = (&told.event, &pipeline.graph_push) {
                push.lifecycle_for(told.mailbox_id, event);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(RELOAD_EVERY) => {}
            _ = node.changed.notified() => {}
            _ = stop.changed() => break,
        }
    }
    // Stopping mid-poll is safe: every step is committed or repeatable.
    for (_, (handle, _)) in loops {
        handle.abort();
    }
}

/// Aborts a task when dropped: a mailbox loop's push watcher ends with it.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Polls one mailbox on its schedule, and at once when `arrived` is told
/// of new mail (by the server's push, or by another node that heard of it).
async fn mailbox_loop(
    pipeline: Pipeline,
    node: Arc<Node>,
    id: i64,
    arrived: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    // New mail announced ends the wait between polls; the schedule stays
    // as the safety net.
    let mut _watcher: Option<(AbortOnDrop, Instant, (serde_json::Value, Option<i64>))> = None;
    let mut announced = false;
    loop {
        // A lease lost (fenced, or rebalanced away) ends the loop at once.
        if !node.holds(id) {
            return;
        }
        let store = pipeline.store.clone();
        let mailbox = match tokio::task::spawn_blocking(move || store.mailbox(id)).await {
            Ok(Ok(m)) if m.enabled => m,
            Ok(Ok(disabled)) => {
                // Disabled or removed: its Graph subscription ends too,
                // once the watcher (which could renew it) is gone.
                drop(_watcher.take());
                if let Some(push) = &pipeline.graph_push {
                    push.unsubscribe(&pipeline, &disabled).await;
                }
                return;
            }
            Ok(Err(mailrobot_store::StoreError::NoSuchMailbox(_))) => return,
            Ok(Err(err)) => {
                tracing::error!(mailbox_id = id, error = %err, "could not read mailbox");
                tokio::time::sleep(RELOAD_EVERY).await;
                continue;
            }
            Err(_) => return,
        };
        // The watcher follows the mailbox's settings (a new folder needs a
        // new subscription); one that ended (no push offered, an error) is
        // tried again after a while.
        let settings = (mailbox.config.clone(), mailbox.connection_id);
        let stale = _watcher.as_ref().is_some_and(|(w, since, watched): &(AbortOnDrop, Instant, _)| {
            *watched != settings || (w.0.is_finished() && since.elapsed() > WATCH_AGAIN_AFTER)
        });
        if stale {
            _watcher = None;
        }
        if _watcher.is_none() {
            _watcher =
                watch_for_mail(&pipeline, &mailbox, &arrived).map(|w| (AbortOnDrop(w), Instant::now(), settings));
        }
        // A backoff recorded by an earlier process is honoured too; new mail
        // announced by the server is fetched at once.
        if let Some(wait) = mailbox.next_poll_at.as_deref().and_then(until).filter(|_| !announced) {
            tokio::select! {
                _ = tokio::time::sleep(wait.min(RELOAD_EVERY * 5)) => continue,
                _ = arrived.notified() => tracing::debug!(mailbox = %mailbox.name, "new mail announced"),
                _ = stop.changed() => return,
            }
        }
        announced = false;
        let (_, delay) = tokio::select! {
            done = poll_and_record_on(&pipeline, &mailbox, Some(&node)) => done,
            _ = stop.changed() => return,
        };
        tokio::select! {
            _ = tokio::time::sleep(delay.min(RELOAD_EVERY * 5)) => {}
            _ = arrived.notified() => {
                tracing::debug!(mailbox = %mailbox.name, "new mail announced");
                announced = true;
            }
            _ = stop.changed() => return,
        }
    }
}

/// Starts the task that wakes `arrived` when the server announces new
/// mail: IMAP IDLE, Graph change notifications. None for other kinds.
fn watch_for_mail(pipeline: &Pipeline, mailbox: &Mailbox, arrived: &Arc<Notify>) -> Option<JoinHandle<()>> {
    let (pipeline, mailbox, arrived) = (pipeline.clone(), mailbox.clone(), arrived.clone());
    match mailbox.kind {
        mailrobot_store::MailboxKind::Imap => {
            Some(tokio::spawn(async move { pipeline.watch(&mailbox, &arrived).await }))
        }
        mailrobot_store::MailboxKind::Graph => {
            let push = pipeline.graph_push.clone()?;
            Some(tokio::spawn(push.watch(pipeline, mailbox, arrived)))
        }
        _ => None,
    }
}

/// How long until an RFC 3339 time, if it is in the future.
fn until(at: &str) -> Option<Duration> {
    let at = chrono::DateTime::parse_from_rfc3339(at).ok()?;
    (at.with_timezone(&Utc) - Utc::now()).to_std().ok().filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(next_delay(60, 0), Duration::from_secs(60));
        assert_eq!(next_delay(60, 1), Duration::from_secs(120));
        assert_eq!(next_delay(60, 3), Duration::from_secs(480));
        assert_eq!(next_delay(60, 40), MAX_BACKOFF);
        assert_eq!(next_delay(0, 0), Duration::from_secs(1));
    }
}
