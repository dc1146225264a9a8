//! What becomes of a batch of journaled mails, whatever the store.
//!
//! Two steps, so that no lock is held while mails are read:
//! 1. [`parse_batch`] parses the raw mails on every core, outside any lock
//!    (a 25 MB mail takes a while; other mailboxes keep writing meanwhile).
//! 2. [`file_batch`] runs inside the store's write transaction: for each mail
//!    it asks the store what it knows ([`Ledger`] lookups), [`decide`]s, and
//!    tells the store what to write ([`Ledger`] primitives).
//!
//! A store backend implements [`Ledger`] over its transaction and nothing
//! else: the ticket rules live here once.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::collections::HashMap;

use crate::answer::{
    AnswerContext, AnswerFacts, AnswerLimits, OutgoingAttachment, OutgoingKind, OutgoingMail, automatic_answer, folded,
    may_answer, template_vars,
};
use crate::classify::MailKind;
use crate::decide::{Decision, Lookups, decide};
use crate::mail::{Address, ParsedMail};
use crate::parse::parse;
use crate::rules::{Classification, Disposition, MailFacts, RuleSet, StoredRule, TicketFields, Verdict};
use crate::tag::TagFormat;
use crate::templates::{StoredTemplate, mail_languages, render_best};

/// A journaled mail waiting for processing, with its raw bytes.
#[derive(Debug, Clone)]
pub struct PendingMail {
    pub journal_id: i64,
    pub mailbox_id: i64,
    pub remote_id: String,
    pub raw: Vec<u8>,
}

/// A pending mail after parsing: the parsed mail, or why it cannot be read.
#[derive(Debug)]
pub struct ParsedPending {
    pub journal_id: i64,
    pub mailbox_id: i64,
    pub remote_id: String,
    pub parsed: Result<ParsedMail, String>,
}

/// Parses `pending` on up to `threads` threads, keeping the order. Each raw
/// mail is dropped as soon as it is parsed, so the batch holds about one
/// copy of its mails at a time. A mail that cannot be read, or that crashes
/// the parser, gets its reason instead; the batch goes on.
pub fn parse_batch(pending: Vec<PendingMail>, threads: usize) -> Vec<ParsedPending> {
    let threads = threads.clamp(1, pending.len().max(1));
    if threads == 1 {
        return pending.into_iter().map(parse_pending).collect();
    }
    // Work is taken one mail at a time, so one large mail does not leave the
    // other threads idle behind it.
    let slots: Vec<Mutex<Slot>> = pending.into_iter().map(|p| Mutex::new(Slot::Raw(p))).collect();
    let next = AtomicUsize::new(0);
    let work = || {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(slot) = slots.get(i) else { break };
            let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
            if let Slot::Raw(mail) = std::mem::replace(&mut *slot, Slot::Taken) {
                *slot = Slot::Parsed(Box::new(parse_pending(mail)));
            }
        }
    };
    // The calling thread is one of the workers: each thread that allocates
    // parsed mails keeps its own malloc arena, and fewer arenas hold less.
    std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(work);
        }
        work();
    });
    slots
        .into_iter()
        .map(|slot| match slot.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Slot::Parsed(parsed) => *parsed,
            Slot::Raw(_) | Slot::Taken => unreachable!("every slot is parsed before the scope ends"),
        })
        .collect()
}

enum Slot {
    Raw(PendingMail),
    Taken,
    Parsed(Box<ParsedPending>),
}

fn parse_pending(mail: PendingMail) -> ParsedPending {
    let parsed = parse_raw(&mail.raw);
    ParsedPending { journal_id: mail.journal_id, mailbox_id: mail.mailbox_id, remote_id: mail.remote_id, parsed }
}

/// Parses one raw mail: the parsed mail, or why it cannot be read (a
/// parser crash included).
pub fn parse_raw(raw: &[u8]) -> Result<ParsedMail, String> {
    match catch_unwind(AssertUnwindSafe(|| parse(raw))) {
        Ok(Ok(parsed)) => Ok(parsed),
        Ok(Err(err)) => Err(format!("cannot be read as an e-mail: {err}")),
        Err(_) => Err("the parser crashed on this mail; kept for a later retry".to_string()),
    }
}

/// A new ticket, as the rules make it from its first mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTicket<'a> {
    /// The subject without reply prefixes; `(no subject)` when empty.
    pub subject: &'a str,
    pub requester: Option<&'a str>,
    pub requester_name: Option<&'a str>,
}

impl<'a> NewTicket<'a> {
    pub fn from_mail(mail: &'a ParsedMail) -> Self {
        let requester = mail.requester();
        let subject = crate::subject::strip_reply_prefixes(&mail.subject);
        Self {
            subject: if subject.is_empty() { "(no subject)" } else { subject },
            requester: requester.map(|a| a.send_to()).filter(|e| !e.is_empty()),
            requester_name: requester.and_then(|a| a.name.as_deref()),
        }
    }
}

/// How the journal records a processed mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filed {
    /// A copy of a mail already processed: no entry of its own.
    Duplicate { ticket: Option<u64> },
    /// Filed by its kind, on a ticket or (an unmatched auto-reply or bounce)
    /// on none.
    Mail { kind: MailKind, ticket: Option<u64>, created_ticket: bool },
}

impl Filed {
    pub fn ticket(self) -> Option<u64> {
        match self {
            Filed::Duplicate { ticket } | Filed::Mail { ticket, .. } => ticket,
        }
    }
}

/// A change to a ticket that others are told about (webhooks), written in
/// the same transaction as the change itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketChange {
    /// A mail made the ticket; its first entry is the latest one.
    Created,
    /// A mail was added as the ticket's latest entry.
    EntryAdded,
}

/// What happens to mail from a sender the directory does not know, per
/// mailbox (`mailbox set NAME --unknown-senders …`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownSenders {
    /// The requester of a new ticket becomes a contact.
    #[default]
    Create,
    /// Tickets are made; the directory is left alone.
    Accept,
    /// No ticket; the sender gets the `rejection` template.
    Reject,
}

impl UnknownSenders {
    pub fn as_str(self) -> &'static str {
        match self {
            UnknownSenders::Create => "create",
            UnknownSenders::Accept => "accept",
            UnknownSenders::Reject => "reject",
        }
    }
}

impl std::str::FromStr for UnknownSenders {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "create" => Ok(UnknownSenders::Create),
            "accept" => Ok(UnknownSenders::Accept),
            "reject" => Ok(UnknownSenders::Reject),
            other => Err(format!("{other:?} is not an unknown-sender policy: expected create, accept or reject")),
        }
    }
}

/// A mailbox's settings that processing needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailboxPolicy {
    pub unknown_senders: UnknownSenders,
    /// The language of its templates when the mail names none it has.
    pub language: Option<String>,
}

/// What processing reads once per batch: rules, templates, mailbox settings.
struct BatchContext {
    rules: RuleSet,
    templates: Option<Vec<StoredTemplate>>,
    policies: HashMap<i64, MailboxPolicy>,
}

impl BatchContext {
    fn policy<L: Ledger + ?Sized>(&mut self, ledger: &mut L, mailbox_id: i64) -> Result<MailboxPolicy, L::Error> {
        if let Some(p) = self.policies.get(&mailbox_id) {
            return Ok(p.clone());
        }
        let policy = ledger.mailbox_policy(mailbox_id)?;
        self.policies.insert(mailbox_id, policy.clone());
        Ok(policy)
    }

    fn templates<L: Ledger + ?Sized>(&mut self, ledger: &mut L) -> Result<&[StoredTemplate], L::Error> {
        if self.templates.is_none() {
            self.templates = Some(ledger.templates()?);
        }
        Ok(self.templates.as_deref().unwrap_or_default())
    }
}

/// What the store offers processing, inside one write transaction. Lookups
/// see what earlier mails of the same batch wrote.
pub trait Ledger {
    type Error;

    /// Told once per batch, before its first mail, what filing it will look
    /// up, so a store where every lookup is a round trip can read them all at
    /// once. Answers must still see what the batch writes.
    fn prefetch(&mut self, _lookups: &BatchLookups) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Whether the journal row still waits for processing: another process
    /// sharing the store may have processed it since it was read.
    fn is_pending(&mut self, journal_id: i64) -> Result<bool, Self::Error>;
    /// The ticket of an earlier processed copy of this mail (same fingerprint
    /// and Message-ID, another journal row): `Some(None)` if that copy made
    /// no ticket, `None` if there is no such copy.
    fn earlier_copy(
        &mut self,
        journal_id: i64,
        fingerprint: &str,
        message_id: Option<&str>,
    ) -> Result<Option<Option<u64>>, Self::Error>;
    fn ticket_exists(&mut self, ticket: u64) -> Result<bool, Self::Error>;
    /// The ticket of the first journaled mail with this Message-ID that has one.
    fn ticket_of_message(&mut self, message_id: &str) -> Result<Option<u64>, Self::Error>;
    fn create_ticket(&mut self, ticket: &NewTicket<'_>) -> Result<u64, Self::Error>;
    /// Adds the mail (bodies, attachments) as the ticket's next entry.
    fn add_entry(&mut self, ticket: u64, journal_id: i64, mail: &ParsedMail) -> Result<(), Self::Error>;
    /// Records a change for those told about changes (the outbox).
    fn ticket_changed(&mut self, ticket: u64, change: TicketChange) -> Result<(), Self::Error>;
    /// What answering a mail of this mailbox needs to know (`recipient_key`:
    /// the folded address the answer would go to); None when the mailbox
    /// sends no mail (`--reply-via none`).
    fn answer_context(
        &mut self,
        mailbox_id: i64,
        recipient_key: &str,
        ticket: Option<u64>,
        limits: &AnswerLimits,
    ) -> Result<Option<AnswerContext>, Self::Error>;
    /// Queues a mail in the outbox, in this transaction.
    fn queue_mail(&mut self, mail: &OutgoingMail) -> Result<(), Self::Error>;
    /// Every enabled rule, in the order they apply (read once per batch).
    fn rules(&mut self) -> Result<Vec<StoredRule>, Self::Error>;
    /// Every stored mail template (read once per batch, when first needed).
    fn templates(&mut self) -> Result<Vec<StoredTemplate>, Self::Error>;
    /// What the mailbox's settings say about senders and language.
    fn mailbox_policy(&mut self, mailbox_id: i64) -> Result<MailboxPolicy, Self::Error>;
    /// Whether the directory has a contact with this folded address.
    fn contact_known(&mut self, key: &str) -> Result<bool, Self::Error>;
    /// Adds the address to the directory (nothing if it is there already).
    fn add_contact(&mut self, address: &Address) -> Result<(), Self::Error>;
    /// Sets what rules decided on the ticket (category, queue, tags…).
    fn set_ticket_fields(&mut self, ticket: u64, fields: &TicketFields) -> Result<(), Self::Error>;
    /// Records on the journal row what the rules did.
    fn record_rules(&mut self, journal_id: i64, summary: &str) -> Result<(), Self::Error>;
    /// The journaled raw mail as an attachment (`message/rfc822`), for a
    /// rule's forward.
    fn original_attachment(&mut self, journal_id: i64) -> Result<Option<OutgoingAttachment>, Self::Error>;
    /// Records on the journal row what was decided about answering it.
    fn record_answer(&mut self, journal_id: i64, answer: &str) -> Result<(), Self::Error>;
    /// Records how the mail was filed, on its journal row. Called before
    /// any write that refers to that row (entry, answer, rules, outbox), so
    /// a store may write the row only now.
    fn record_processed(&mut self, journal_id: i64, mail: &ParsedMail, filed: Filed) -> Result<(), Self::Error>;
    fn record_failed(&mut self, journal_id: i64, reason: &str) -> Result<(), Self::Error>;
}

/// The keys filing a batch looks up ([`Ledger::prefetch`]): the mails'
/// journal rows, fingerprints, tagged tickets, the Message-IDs they refer
/// to and their requesters' folded addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchLookups {
    pub journal_ids: Vec<i64>,
    pub fingerprints: Vec<String>,
    pub tickets: Vec<u64>,
    pub referred_message_ids: Vec<String>,
    pub requester_keys: Vec<String>,
}

impl BatchLookups {
    fn of(batch: &[ParsedPending], tag: &TagFormat) -> Self {
        let mut lookups = Self::default();
        for pending in batch {
            lookups.journal_ids.push(pending.journal_id);
            let Ok(mail) = &pending.parsed else { continue };
            lookups.fingerprints.push(mail.fingerprint.clone());
            lookups.tickets.extend(tagged_number(mail, tag));
            lookups.referred_message_ids.extend(mail.refers_to.iter().cloned());
            lookups.requester_keys.extend(requester_key(mail));
        }
        for keys in [&mut lookups.fingerprints, &mut lookups.referred_message_ids, &mut lookups.requester_keys] {
            keys.sort_unstable();
            keys.dedup();
        }
        lookups.tickets.sort_unstable();
        lookups.tickets.dedup();
        lookups
    }
}

/// What processing made of one mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub journal_id: i64,
    pub mailbox_id: i64,
    pub remote_id: String,
    pub result: Result<ProcessedAs, String>,
}

/// A processed mail: its subject and how it was filed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessedAs {
    pub subject: String,
    pub filed: Filed,
}

/// Files each parsed mail through `ledger`, in order. Mails another process
/// took meanwhile are left out of the result.
pub fn file_batch<L: Ledger + ?Sized>(
    ledger: &mut L,
    batch: Vec<ParsedPending>,
    tag: &TagFormat,
    limits: &AnswerLimits,
) -> Result<Vec<Outcome>, L::Error> {
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut context =
        BatchContext { rules: RuleSet::compile(ledger.rules()?), templates: None, policies: HashMap::new() };
    ledger.prefetch(&BatchLookups::of(&batch, tag))?;
    for mail in batch {
        if !ledger.is_pending(mail.journal_id)? {
            continue;
        }
        let result = match mail.parsed {
            Ok(parsed) => {
                let filing = Filing { mailbox_id: mail.mailbox_id, journal_id: mail.journal_id, tag, limits };
                Ok(filing.file(ledger, &mut context, parsed)?)
            }
            Err(reason) => {
                ledger.record_failed(mail.journal_id, &reason)?;
                Err(reason)
            }
        };
        outcomes.push(Outcome {
            journal_id: mail.journal_id,
            mailbox_id: mail.mailbox_id,
            remote_id: mail.remote_id,
            result,
        });
    }
    Ok(outcomes)
}

/// What the rules would do to a stored mail (`rules test --message ID`):
/// nothing is written. `decision` is how it would be filed today.
pub fn test_rules<L: Ledger + ?Sized>(
    ledger: &mut L,
    mailbox_id: i64,
    journal_id: i64,
    mail: &ParsedMail,
    tag: &TagFormat,
) -> Result<RulesTest, L::Error> {
    let found = lookups(ledger, journal_id, mail, tag)?;
    let decision = decide(mail, &found);
    let rules = RuleSet::compile(ledger.rules()?);
    let (facts, _) = mail_facts(ledger, mail, &decision)?;
    let mut verdict = rules.evaluate(mailbox_id, mail, &facts);
    let policy = ledger.mailbox_policy(mailbox_id)?;
    let unknown_sender_rejected = rejects_unknown_sender(&policy, &decision, &facts, mail);
    if unknown_sender_rejected && verdict.disposition == Disposition::File {
        verdict.disposition = Disposition::Reject { rule: UNKNOWN_SENDER.into() };
    }
    Ok(RulesTest { classification: facts.classification, contact_known: facts.contact_known, verdict })
}

/// What `rules test` shows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RulesTest {
    pub classification: Classification,
    pub contact_known: bool,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// The name a rejection by the unknown-sender policy goes by.
const UNKNOWN_SENDER: &str = "the mailbox's unknown-sender policy";

fn mail_facts<L: Ledger + ?Sized>(
    ledger: &mut L,
    mail: &ParsedMail,
    decision: &Decision,
) -> Result<(MailFacts, String), L::Error> {
    let requester_key = requester_key(mail).unwrap_or_default();
    let contact_known = !requester_key.is_empty() && ledger.contact_known(&requester_key)?;
    let has_ticket = matches!(decision, Decision::Append { .. });
    Ok((MailFacts { classification: Classification::of(mail.kind, has_ticket), contact_known }, requester_key))
}

/// Whether the policy refuses this mail: a person's new ticket from a
/// sender the directory does not know.
fn rejects_unknown_sender(policy: &MailboxPolicy, decision: &Decision, facts: &MailFacts, mail: &ParsedMail) -> bool {
    policy.unknown_senders == UnknownSenders::Reject
        && matches!(decision, Decision::NewTicket)
        && !facts.contact_known
        && mail.kind == MailKind::Mail
}

/// One mail being filed.
struct Filing<'a> {
    mailbox_id: i64,
    journal_id: i64,
    tag: &'a TagFormat,
    limits: &'a AnswerLimits,
}

impl Filing<'_> {
    fn file<L: Ledger + ?Sized>(
        &self,
        ledger: &mut L,
        context: &mut BatchContext,
        mail: ParsedMail,
    ) -> Result<ProcessedAs, L::Error> {
        let journal_id = self.journal_id;
        let found = lookups(ledger, journal_id, &mail, self.tag)?;
        let decision = decide(&mail, &found);
        if let Decision::Duplicate { ticket } = decision {
            let filed = Filed::Duplicate { ticket };
            ledger.record_processed(journal_id, &mail, filed)?;
            return Ok(ProcessedAs { subject: mail.subject, filed });
        }
        let (facts, _) = mail_facts(ledger, &mail, &decision)?;
        let mut verdict = if context.rules.is_empty() {
            Verdict::default()
        } else {
            context.rules.evaluate(self.mailbox_id, &mail, &facts)
        };
        let policy = context.policy(ledger, self.mailbox_id)?;
        if verdict.disposition == Disposition::File && rejects_unknown_sender(&policy, &decision, &facts, &mail) {
            verdict.disposition = Disposition::Reject { rule: UNKNOWN_SENDER.into() };
        }
        // The ticket the mail goes on, and whether filing opens it.
        let ticket = match (&verdict.disposition, decision) {
            (Disposition::File, Decision::Duplicate { .. }) => unreachable!("duplicates returned above"),
            (Disposition::File, Decision::NewTicket) => {
                Some((ledger.create_ticket(&NewTicket::from_mail(&mail))?, true))
            }
            (Disposition::File, Decision::Append { ticket }) => Some((ticket, false)),
            (Disposition::File, Decision::Unmatched) | (Disposition::Ignore { .. } | Disposition::Reject { .. }, _) => {
                None
            }
        };
        let filed = Filed::Mail {
            kind: mail.kind,
            ticket: ticket.map(|(ticket, _)| ticket),
            created_ticket: ticket.is_some_and(|(_, created)| created),
        };
        // The journal row first: the entry, the answer and the forwards
        // refer to it, and a store may write it only now (a mail journaled
        // and filed in one transaction, `Store::journal_and_file`).
        ledger.record_processed(journal_id, &mail, filed)?;
        if let Disposition::Reject { rule } = &verdict.disposition {
            self.reject(ledger, context, &policy, &mail, rule)?;
        }
        if let Some((ticket, created)) = ticket {
            ledger.add_entry(ticket, journal_id, &mail)?;
            if !verdict.fields.is_empty() {
                ledger.set_ticket_fields(ticket, &verdict.fields)?;
            }
            if !created {
                ledger.ticket_changed(ticket, TicketChange::EntryAdded)?;
            } else {
                if policy.unknown_senders == UnknownSenders::Create
                    && !facts.contact_known
                    && mail.kind == MailKind::Mail
                    && let Some(requester) = mail.requester().filter(|a| !a.email.is_empty())
                {
                    ledger.add_contact(requester)?;
                }
                ledger.ticket_changed(ticket, TicketChange::Created)?;
                if verdict.acknowledge {
                    self.acknowledge(ledger, context, &policy, ticket, &mail)?;
                } else {
                    ledger.record_answer(journal_id, "not answered: a rule said no acknowledgement")?;
                }
            }
        }
        for (to, rule) in &verdict.forwards {
            self.forward(ledger, &mail, filed.ticket(), to, rule)?;
        }
        if let Some(summary) = verdict.summary() {
            ledger.record_rules(journal_id, &summary)?;
        }
        Ok(ProcessedAs { subject: mail.subject, filed })
    }

    /// Whom an automatic answer goes to and from where, or why none is sent
    /// (recorded on the journal row).
    fn answerable<'m, L: Ledger + ?Sized>(
        &self,
        ledger: &mut L,
        mail: &'m ParsedMail,
        ticket: Option<u64>,
    ) -> Result<Option<(&'m Address, AnswerContext)>, L::Error> {
        let limits = *self.limits;
        let recipient_key = requester_key(mail).unwrap_or_default();
        let Some(context) = ledger.answer_context(self.mailbox_id, &recipient_key, ticket, &limits)? else {
            return Ok(None);
        };
        let facts = AnswerFacts {
            own_addresses: &context.own_addresses,
            sent_to_sender_recently: context.sent_to_sender_recently,
            sent_on_ticket_today: context.sent_on_ticket_today,
            limits,
        };
        match may_answer(mail, &facts) {
            Ok(to) => Ok(Some((to, context))),
            Err(block) => {
                ledger.record_answer(self.journal_id, &block.reason())?;
                Ok(None)
            }
        }
    }

    /// Queues the acknowledgement of a new ticket, unless the mailbox sends
    /// no mail or the mail must not be answered ([`may_answer`]); the
    /// decision is recorded on the journal row either way.
    fn acknowledge<L: Ledger + ?Sized>(
        &self,
        ledger: &mut L,
        batch: &mut BatchContext,
        policy: &MailboxPolicy,
        ticket: u64,
        mail: &ParsedMail,
    ) -> Result<(), L::Error> {
        let Some((to, context)) = self.answerable(ledger, mail, Some(ticket))? else { return Ok(()) };
        let vars = template_vars(mail, to, &context, Some((ticket, "open")), self.tag);
        let ack =
            self.render(ledger, batch, policy, OutgoingKind::Acknowledgement, mail, to, &context, Some(ticket), &vars)?;
        ledger.queue_mail(&ack)?;
        ledger.record_answer(self.journal_id, &format!("acknowledged to {}", ack.to))
    }

    /// No ticket: the sender is told, if the mailbox sends mail and the mail
    /// may be answered.
    fn reject<L: Ledger + ?Sized>(
        &self,
        ledger: &mut L,
        batch: &mut BatchContext,
        policy: &MailboxPolicy,
        mail: &ParsedMail,
        rule: &str,
    ) -> Result<(), L::Error> {
        let Some((to, context)) = self.answerable(ledger, mail, None)? else { return Ok(()) };
        let mut vars = template_vars(mail, to, &context, None, self.tag);
        vars["rule"] = serde_json::json!({"name": rule});
        let rejection = self.render(ledger, batch, policy, OutgoingKind::Rejection, mail, to, &context, None, &vars)?;
        ledger.queue_mail(&rejection)?;
        ledger.record_answer(self.journal_id, &format!("rejected; told {}", rejection.to))
    }

    #[allow(clippy::too_many_arguments)]
    fn render<L: Ledger + ?Sized>(
        &self,
        ledger: &mut L,
        batch: &mut BatchContext,
        policy: &MailboxPolicy,
        kind: OutgoingKind,
        mail: &ParsedMail,
        to: &Address,
        context: &AnswerContext,
        ticket: Option<u64>,
        vars: &serde_json::Value,
    ) -> Result<OutgoingMail, L::Error> {
        let mut languages = mail_languages(&mail.header_block);
        languages.extend(policy.language.iter().cloned());
        let (rendered, error) = render_best(batch.templates(ledger)?, kind, self.mailbox_id, &languages, vars);
        if let Some(error) = error {
            ledger.record_rules(
                self.journal_id,
                &format!("the stored {kind} template failed ({error}); the built-in one was used"),
            )?;
        }
        Ok(automatic_answer(kind, mail, to, context, self.journal_id, ticket, rendered))
    }

    /// A rule's copy of the mail to `to`, the original attached.
    fn forward<L: Ledger + ?Sized>(
        &self,
        ledger: &mut L,
        mail: &ParsedMail,
        ticket: Option<u64>,
        to: &str,
        rule: &str,
    ) -> Result<(), L::Error> {
        // A robot's mail (another mailrobot's, an auto-reply, this robot's
        // own forward coming back through a group) is not passed on again.
        if let Some(block) = &mail.answer_block {
            let reason = block.reason().replacen("not answered: ", "", 1);
            return ledger.record_rules(self.journal_id, &format!("not forwarded to {to}: {reason}"));
        }
        let Some(context) = ledger.answer_context(self.mailbox_id, &folded(to), ticket, self.limits)? else {
            return ledger.record_rules(self.journal_id, &format!("not forwarded to {to}: the mailbox sends no mail"));
        };
        if context.own_addresses.iter().any(|a| folded(a) == folded(to)) {
            return ledger
                .record_rules(self.journal_id, &format!("not forwarded to {to}: it is the robot's own address"));
        }
        let domain = context.from.rsplit_once('@').map_or("mailrobot.invalid", |(_, d)| d);
        let from = mail.from.as_ref().map_or("(unknown sender)", |a| a.as_written.as_str());
        let text = format!(
            "Forwarded by rule \"{rule}\" of mailbox {}.\n\nFrom: {from}\nSubject: {}\n{}\n\n{}",
            context.mailbox_name,
            mail.subject,
            ticket.map(|t| format!("Ticket: {}\n", self.tag.number(t))).unwrap_or_default(),
            mail.text_body
        );
        let forward = OutgoingMail {
            kind: OutgoingKind::Notification,
            mailbox_id: self.mailbox_id,
            ticket,
            journal_id: self.journal_id,
            from: context.from.clone(),
            to: to.to_string(),
            subject: format!("Fwd: {}", mail.subject),
            message_id: format!("mailrobot.forward.{}.{}@{domain}", self.journal_id, folded(to).replace('@', ".")),
            in_reply_to: None,
            references: Vec::new(),
            text,
            html: None,
            reply_to: None,
            attachments: ledger.original_attachment(self.journal_id)?.into_iter().collect(),
        };
        ledger.queue_mail(&forward)
    }
}

/// The ticket number the mail's subject is tagged with. A bounce carries
/// the tag in the subject of the original it returns.
fn tagged_number(mail: &ParsedMail, tag: &TagFormat) -> Option<u64> {
    tag.find(&mail.subject).or_else(|| mail.original_subject.as_deref().and_then(|s| tag.find(s)))
}

/// The folded address of whom a new ticket would be for, as the directory
/// keys contacts.
fn requester_key(mail: &ParsedMail) -> Option<String> {
    mail.requester().map(|a| folded(&a.email)).filter(|key| !key.is_empty())
}

fn lookups<L: Ledger + ?Sized>(
    ledger: &mut L,
    journal_id: i64,
    mail: &ParsedMail,
    tag: &TagFormat,
) -> Result<Lookups, L::Error> {
    let duplicate_of = ledger.earlier_copy(journal_id, &mail.fingerprint, mail.message_id.as_deref())?;
    let tagged_ticket = match tagged_number(mail, tag) {
        Some(id) if ledger.ticket_exists(id)? => Some(id),
        _ => None,
    };
    let mut thread_ticket = None;
    if tagged_ticket.is_none() {
        for id in &mail.refers_to {
            if let Some(ticket) = ledger.ticket_of_message(id)? {
                thread_ticket = Some(ticket);
                break;
            }
        }
    }
    Ok(Lookups { duplicate_of, tagged_ticket, thread_ticket })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(i: i64, raw: &str) -> PendingMail {
        PendingMail { journal_id: i, mailbox_id: 1, remote_id: i.to_string(), raw: raw.as_bytes().to_vec() }
    }

    #[test]
    fn parallel_parsing_keeps_order_and_reasons() {
        let batch: Vec<PendingMail> = (0..50)
            .map(|i| {
                if i % 7 == 3 {
                    pending(i, "")
                } else {
                    pending(i, &format!("From: a@b.c\r\nSubject: mail {i}\r\n\r\nbody\r\n"))
                }
            })
            .collect();
        for threads in [1, 2, 8] {
            let parsed = parse_batch(batch.clone(), threads);
            assert_eq!(parsed.len(), 50);
            for (i, p) in parsed.iter().enumerate() {
                assert_eq!(p.journal_id, i as i64);
                match &p.parsed {
                    Ok(mail) => assert_eq!(mail.subject, format!("mail {i}")),
                    Err(reason) => {
                        assert_eq!(i % 7, 3);
                        assert!(reason.starts_with("cannot be read as an e-mail"), "{reason}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_new_ticket_takes_the_subject_without_prefixes() {
        let mail = parse(b"From: Ann <ann@example.com>\r\nSubject: AW: Re: Printer\r\n\r\nx\r\n").unwrap();
        let ticket = NewTicket::from_mail(&mail);
        assert_eq!(
            (ticket.subject, ticket.requester, ticket.requester_name),
            ("Printer", Some("ann@example.com"), Some("Ann"))
        );
        let empty = parse(b"From: ann@example.com\r\nSubject: Re:\r\n\r\nx\r\n").unwrap();
        assert_eq!(NewTicket::from_mail(&empty).subject, "(no subject)");
    }
}
