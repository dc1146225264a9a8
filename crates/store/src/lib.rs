//! The robot's memory: mailboxes, the mail journal, tickets and their entries,
//! attachments (content-addressed) and the outbox.
//!
//! Callers use the [`Store`] trait; [`SqliteStore`] is the embedded default,
//! [`PgStore`] lets several nodes share one PostgreSQL database.
//!
//! The journal is what makes the robot exactly-once: a mail is written (raw
//! bytes + row in state `fetched`) and committed before anything changes in
//! the remote mailbox; its ticket change and its new state are written in one
//! transaction; the remote mailbox is settled only after that, and the
//! settlement is recorded last. Every step can be repeated after a crash.

pub mod admin;
pub mod auth;
pub mod blob_codec;
pub mod directory;
mod error;
pub mod lease;
pub mod migrate;
pub mod model;
pub mod outbox;
mod pg;
mod process;
mod schema;
pub mod sealed;
mod sqlite;
mod sqlite_admin;
mod sqlite_auth;
mod sqlite_checkpoint;
mod sqlite_directory;
mod sqlite_lease;
mod sqlite_ledger;
mod sqlite_outbox;
mod sqlite_sealed;
pub mod states;
pub mod testing;

pub use admin::{Admin, AdminStore, ApiToken, Session};
pub use auth::*;
pub use directory::{Contact, ContactSource, DirectoryStore, NewContact, NewRule, Rule, Template, TemplateKey};
pub use error::StoreError;
pub use lease::{Announcement, Fence, Fences, Heartbeat, LeaseStore, NewNode, NodeView, PassLeases};
pub use model::*;
pub use outbox::{
    AfterAttempt, Attempt, Delivery, DeliveryFilter, DeliveryView, EventRecord, MailView, OutboxStore, QueuedMail,
    Webhook,
};
pub use pg::{DEFAULT_SESSIONS as DEFAULT_PG_SESSIONS, MIN_SESSIONS as MIN_PG_SESSIONS, PgStore, redacted_url};
pub use sealed::{Resealed, SealedRef, SealedStore, SealedValue};
/// Blocking helpers for tools and tests that work beside a PostgreSQL store.
pub mod pg_tools {
    pub use crate::pg::{copy_out_table, execute_batch, table_names};
}
pub use sqlite::SqliteStore;
pub use states::{
    Capability, ConnectionState, DeliveryState, JournalState, MailboxKind, MailboxStatus, MessageKind, Mode, NodeKind,
    TicketStatus, WebhookEvent,
};

use mailrobot_core::{Ledger, PendingMail, TagFormat};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Rules that shape processing; kept in the store's settings.
#[derive(Debug, Clone, Default)]
pub struct ProcessingRules {
    pub tag: TagFormat,
    /// How many automatic mails the robot sends at most.
    pub answer_limits: mailrobot_core::AnswerLimits,
}

pub trait Store: Send + Sync {
    /// Whether this store keeps raw mails compressed when given them so
    /// ([`IncomingMail::packed`]): SQLite does; PostgreSQL compresses on
    /// the server.
    fn keeps_packed_mail(&self) -> bool {
        false
    }

    // --- mailboxes ---
    fn add_mailbox(&self, new: &NewMailbox) -> Result<Mailbox>;
    fn mailboxes(&self) -> Result<Vec<Mailbox>>;
    fn mailbox_by_name(&self, name: &str) -> Result<Option<Mailbox>>;
    fn mailbox(&self, id: i64) -> Result<Mailbox>;
    /// The sealed secret (password) of a mailbox, if it has one.
    fn mailbox_secret(&self, id: i64) -> Result<Option<Vec<u8>>>;
    fn set_mailbox_enabled(&self, id: i64, enabled: bool) -> Result<()>;
    /// Where an incremental source stands (Graph deltaLink, EWS SyncState).
    fn mailbox_sync_state(&self, id: i64) -> Result<Option<String>>;
    /// Stored only after every mail the state covers is journaled.
    fn set_mailbox_sync_state(&self, id: i64, state: Option<&str>) -> Result<()>;
    fn remove_mailbox(&self, id: i64) -> Result<()>;
    /// Changes a mailbox's settings (its kind and name stay).
    fn update_mailbox(&self, id: i64, update: &MailboxUpdate) -> Result<Mailbox>;
    /// Records how a poll went: resets or raises the failure count and the
    /// time the next poll is due.
    fn record_poll(&self, id: i64, result: &PollRecord) -> Result<()>;

    // --- push subscriptions ---
    /// The mailbox's Graph subscription, if the robot made one.
    fn push_subscription(&self, mailbox_id: i64) -> Result<Option<PushSubscription>>;
    /// The subscription a notification names, whichever node made it.
    fn push_subscription_by_id(&self, subscription_id: &str) -> Result<Option<PushSubscription>>;
    /// Records the mailbox's subscription, replacing an earlier one; refused
    /// ([`StoreError::Fenced`]) when this node does not hold the mailbox.
    fn save_push_subscription(&self, subscription: &PushSubscription) -> Result<()>;
    fn forget_push_subscription(&self, mailbox_id: i64) -> Result<()>;

    // --- journal ---
    /// What the journal already knows of these remote ids in one mailbox.
    fn known_remote_ids(&self, mailbox_id: i64, remote_ids: &[String]) -> Result<Vec<KnownMail>>;
    /// Stores fetched mails (raw bytes, state `fetched`) in one transaction.
    /// Remote ids already journaled are skipped. Returns how many were new.
    fn journal(&self, mailbox_id: i64, mails: &[IncomingMail<'_>]) -> Result<usize>;
    /// Up to `limit` journaled mails in state `fetched` (of one mailbox, or
    /// all), in arrival order, with their raw bytes — fewer when their bytes
    /// would pass `max_bytes` (always at least one), so the memory a batch
    /// holds has a bound whatever the mails are.
    fn pending_mails(&self, mailbox_id: Option<i64>, limit: usize, max_bytes: u64) -> Result<Vec<PendingMail>>;
    /// The bytes the next [`Store::pending_mails`] with the same arguments
    /// would read (the mails' sizes as received), without reading them:
    /// None when no mail waits. A node takes them from its memory budget
    /// before reading.
    fn pending_batch_bytes(&self, mailbox_id: Option<i64>, limit: usize, max_bytes: u64) -> Result<Option<u64>>;
    /// Runs `work` in one write transaction, committed when it returns `Ok`.
    /// The ticket rules ([`mailrobot_core::file_batch`]) run there.
    fn with_ledger(&self, work: &mut dyn FnMut(&mut dyn Ledger<Error = StoreError>) -> Result<()>) -> Result<()> {
        self.with_ledger_for(&[], work)
    }
    /// [`Store::with_ledger`] for mails of these mailboxes: refused
    /// ([`StoreError::Fenced`]) when this node does not hold their leases.
    fn with_ledger_for(
        &self,
        mailboxes: &[i64],
        work: &mut dyn FnMut(&mut dyn Ledger<Error = StoreError>) -> Result<()>,
    ) -> Result<()>;
    /// Processes a batch of pending mails (see [`Store::pending_mails`]):
    /// parsed on every core outside any lock, then filed in one transaction.
    fn process_pending(
        &self,
        mailbox_id: Option<i64>,
        limit: usize,
        max_bytes: u64,
        rules: &ProcessingRules,
    ) -> Result<Vec<ProcessedMail>> {
        process::process_pending(self, mailbox_id, limit, max_bytes, rules)
    }
    /// Journals fetched mails and files them once `parses` tells what
    /// parsing made of them: each new mail's journal row is written once,
    /// with its outcome, in the transaction that files it ([`Store::journal`]
    /// then [`Store::process_pending`] write it, then update it). The raw
    /// bytes may be stored before, while the parsing goes on. Remote ids
    /// journaled already (or twice in `mails`: the first counts) are left
    /// out; a rejected mail is journaled as failed and not filed. Refused
    /// ([`StoreError::Fenced`]) when this node does not hold the mailbox.
    fn journal_and_file(
        &self,
        mailbox_id: i64,
        mails: &[IncomingMail<'_>],
        parses: ParsesLater<'_>,
        rules: &ProcessingRules,
    ) -> Result<Vec<ProcessedMail>>;
    /// Processed or failed mails whose remote copy is not settled yet.
    fn unsettled(&self, mailbox_id: i64) -> Result<Vec<Unsettled>>;
    fn mark_settled(&self, journal_ids: &[i64]) -> Result<()>;
    /// Puts failed mails back to `fetched` so the next pass processes them
    /// again (after a fix). Returns how many.
    fn retry_failed(&self, mailbox_id: Option<i64>) -> Result<usize>;
    /// [`Store::retry_failed`] for one mail; false if it is not a failed
    /// mail with its raw bytes kept.
    fn retry_message(&self, journal_id: i64) -> Result<bool>;

    // --- views ---
    fn tickets(&self) -> Result<Vec<TicketSummary>>;
    fn ticket(&self, id: i64) -> Result<Option<TicketDetail>>;
    /// Tickets matching `query`, newest first, at most `query.limit`.
    fn search_tickets(&self, query: &TicketQuery) -> Result<Vec<TicketSummary>>;
    /// Returns whether the ticket exists.
    fn set_ticket_status(&self, id: i64, status: TicketStatus) -> Result<bool>;
    /// Stored bytes (a mail or an attachment) by their SHA-256.
    fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>>;
    /// A journaled mail's raw bytes, if they were kept.
    fn message_raw(&self, journal_id: i64) -> Result<Option<Vec<u8>>>;
    fn messages(&self, filter: &MessageFilter) -> Result<Vec<MessageView>>;
    fn counts(&self) -> Result<Counts>;
    /// Per mailbox: mails fetched since `since` (RFC 3339), waiting for
    /// processing, and failed. Mailboxes without mail are left out.
    fn mailbox_counts(&self, since: &str) -> Result<Vec<MailboxCounts>>;

    // --- settings ---
    fn setting(&self, key: &str) -> Result<Option<String>>;
    fn set_setting(&self, key: &str, value: &str) -> Result<()>;
}
