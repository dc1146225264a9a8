//! Processing as any store runs it: read the pending mails, parse them with
//! no lock held, file them in one transaction. The rules are core's
//! ([`mailrobot_core::process`]); a backend only offers the primitives.

use mailrobot_core::{Filed, Outcome, ParsedPending, file_batch, parse_batch};

use crate::{JournalState, MessageKind, ProcessedMail, ProcessingRules, Result, Store};

/// Threads that parse one batch. Parsing holds no lock, so mailboxes parse
/// side by side on the pipeline's blocking threads; splitting one batch
/// across both cores measured no faster (`bench/run.sh`: the other core is
/// busy with the server and the next download) and raised peak RSS by 60%
/// (each thread's malloc arena keeps its own high-water mark).
const PARSE_THREADS: usize = 1;

pub(crate) fn process_pending<S: Store + ?Sized>(
    store: &S,
    mailbox_id: Option<i64>,
    limit: usize,
    max_bytes: u64,
    rules: &ProcessingRules,
) -> Result<Vec<ProcessedMail>> {
    let pending = store.pending_mails(mailbox_id, limit, max_bytes)?;
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    let started = std::time::Instant::now();
    let batch = parse_batch(pending, PARSE_THREADS);
    tracing::debug!(mails = batch.len(), ms = started.elapsed().as_millis() as u64, "parsed a batch");
    file_parsed(store, batch, rules)
}

pub(crate) fn file_parsed<S: Store + ?Sized>(
    store: &S,
    batch: Vec<ParsedPending>,
    rules: &ProcessingRules,
) -> Result<Vec<ProcessedMail>> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let mut mailboxes: Vec<i64> = batch.iter().map(|p| p.mailbox_id).collect();
    mailboxes.sort_unstable();
    mailboxes.dedup();
    let started = std::time::Instant::now();
    let mut batch = Some(batch);
    let mut outcomes = Vec::new();
    store.with_ledger_for(&mailboxes, &mut |ledger| {
        outcomes = file_batch(ledger, batch.take().unwrap_or_default(), &rules.tag, &rules.answer_limits)?;
        Ok(())
    })?;
    tracing::debug!(mails = outcomes.len(), ms = started.elapsed().as_millis() as u64, "filed a batch");
    Ok(outcomes.into_iter().map(processed_mail).collect())
}

fn processed_mail(outcome: Outcome) -> ProcessedMail {
    let (subject, state, kind, ticket_id, created_ticket, reason) = match outcome.result {
        Ok(done) => {
            let created = matches!(done.filed, Filed::Mail { created_ticket: true, .. });
            let ticket = done.filed.ticket().map(|t| t as i64);
            (Some(done.subject), JournalState::Processed, Some(MessageKind::from(done.filed)), ticket, created, None)
        }
        Err(reason) => {
            tracing::warn!(journal_id = outcome.journal_id, remote_id = %outcome.remote_id, %reason, "mail failed");
            (None, JournalState::Failed, None, None, false, Some(reason))
        }
    };
    ProcessedMail {
        journal_id: outcome.journal_id,
        mailbox_id: outcome.mailbox_id,
        remote_id: outcome.remote_id,
        subject,
        state,
        kind,
        ticket_id,
        created_ticket,
        reason,
    }
}
