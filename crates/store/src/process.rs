//! Processing as any store runs it: read the pending mails, parse them with
//! no lock held, file them in one transaction. The rules are core's
//! ([`mailrobot_core::process`]); a backend only offers the primitives.

use std::collections::HashSet;

use mailrobot_core::{Filed, Ledger, Outcome, ParsedPending, file_batch, parse_batch};

use crate::{IncomingMail, JournalState, MessageKind, Parses, ProcessedMail, ProcessingRules, Result, Store};

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

/// The part of [`crate::Store::journal_and_file`] both backends share,
/// once each new mail's bytes are stored and its row id drawn: files the
/// parsed ones through `ledger`, which writes each fresh row as it records
/// its outcome. `fresh` holds the mails in the order given, with their ids.
pub(crate) fn file_fresh<L>(
    ledger: &mut L,
    mailbox_id: i64,
    fresh: Vec<(i64, &IncomingMail<'_>)>,
    mut parses: Parses,
    rules: &ProcessingRules,
) -> Result<Vec<ProcessedMail>>
where
    L: Ledger<Error = crate::StoreError> + ?Sized,
{
    let started = std::time::Instant::now();
    let batch: Vec<ParsedPending> = fresh
        .into_iter()
        .map(|(journal_id, mail)| ParsedPending {
            journal_id,
            mailbox_id,
            remote_id: mail.remote_id.clone(),
            parsed: parses.remove(&mail.remote_id).unwrap_or_else(|| {
                Err("not parsed: the parsing of its batch stopped; kept for a later retry".to_string())
            }),
        })
        .collect();
    let outcomes = file_batch(ledger, batch, &rules.tag, &rules.answer_limits)?;
    tracing::debug!(mails = outcomes.len(), ms = started.elapsed().as_millis() as u64, "journaled and filed a batch");
    Ok(outcomes.into_iter().map(processed_mail).collect())
}

/// Which of `mails` are new to the journal, by index in the order given:
/// not among `journaled` (remote ids the mailbox has already), and the
/// first of a remote id met twice.
pub(crate) fn new_mails(mails: &[IncomingMail<'_>], mut journaled: HashSet<String>) -> Vec<usize> {
    (0..mails.len()).filter(|&i| journaled.insert(mails[i].remote_id.clone())).collect()
}

/// Filing records every mail it is given; a fresh row it left unwritten
/// would be a mail journaled nowhere, so the transaction is refused.
pub(crate) fn check_all_written(unwritten: &std::collections::HashMap<i64, crate::model::FreshRow>) -> Result<()> {
    match unwritten.len() {
        0 => Ok(()),
        n => Err(crate::StoreError::Corrupt(format!(
            "filing left {n} fetched mails without a journal row (a bug); nothing was written, they are fetched again"
        ))),
    }
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
