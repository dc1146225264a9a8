use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize)]
pub struct Mailbox {
    pub id: i64,
    pub name: String,
    pub kind: crate::MailboxKind,
    pub enabled: bool,
    /// Kind-specific settings (host, folders…); never holds secrets.
    pub config: serde_json::Value,
    pub has_secret: bool,
    /// The service connection whose tokens authenticate this mailbox.
    pub connection_id: Option<i64>,
    pub poll_seconds: i64,
    pub max_message_bytes: i64,
    pub status: crate::MailboxStatus,
    pub last_error: Option<String>,
    pub consecutive_failures: i64,
    pub last_poll_at: Option<String>,
    pub next_poll_at: Option<String>,
    pub created_at: String,
    /// A server asked for quiet until then (RFC 3339).
    pub throttled_until: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewMailbox {
    pub name: String,
    pub kind: crate::MailboxKind,
    pub config: serde_json::Value,
    /// Already sealed by the caller (context `mailbox:{name}:secret`).
    pub sealed_secret: Option<Vec<u8>>,
    pub connection_id: Option<i64>,
    pub poll_seconds: i64,
    pub max_message_bytes: i64,
}

/// What `mailbox set` and the mailbox page change.
#[derive(Debug, Clone)]
pub struct MailboxUpdate {
    pub config: serde_json::Value,
    pub poll_seconds: i64,
    pub max_message_bytes: i64,
    /// A new sealed password; None keeps the stored one.
    pub sealed_secret: Option<Vec<u8>>,
}

/// How one poll of a mailbox went.
#[derive(Debug, Clone)]
pub struct PollRecord {
    pub outcome: PollOutcome,
    /// The server asked for quiet until then (RFC 3339).
    pub throttled_until: Option<String>,
    /// RFC 3339 time of the next poll.
    pub next_poll_at: String,
}

/// What a poll ended with, as the mailbox's status will show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollOutcome {
    Ok,
    /// Failed: counts towards the backoff.
    Failed {
        error: String,
    },
    /// Waits for a person (its connection): no backoff, no network.
    Paused {
        error: String,
    },
    /// The server asked for quiet: not a failure, the backoff stays as it was.
    Throttled {
        message: String,
    },
}

impl PollOutcome {
    /// The error or message the mailbox shows, if any.
    pub fn error(&self) -> Option<&str> {
        match self {
            PollOutcome::Ok => None,
            PollOutcome::Failed { error } | PollOutcome::Paused { error } => Some(error),
            PollOutcome::Throttled { message } => Some(message),
        }
    }

    /// The new failure count, as an SQL expression of the old one: waiting
    /// for a person or for the server is no new failure.
    pub(crate) fn failures_sql(&self) -> &'static str {
        match self {
            PollOutcome::Ok => "0",
            PollOutcome::Failed { .. } => "consecutive_failures + 1",
            PollOutcome::Paused { .. } | PollOutcome::Throttled { .. } => "consecutive_failures",
        }
    }

    pub fn status(&self) -> crate::MailboxStatus {
        match self {
            PollOutcome::Ok => crate::MailboxStatus::Ok,
            PollOutcome::Failed { .. } => crate::MailboxStatus::Error,
            PollOutcome::Paused { .. } => crate::MailboxStatus::Paused,
            PollOutcome::Throttled { .. } => crate::MailboxStatus::Throttled,
        }
    }
}

/// A mail on its way into the journal: fetched, or refused before download.
#[derive(Debug, Clone)]
pub struct IncomingMail<'a> {
    pub remote_id: String,
    /// The raw bytes; empty when `rejected`.
    pub raw: &'a [u8],
    pub size: u64,
    /// Why the mail was not downloaded (e.g. over the size limit): it is
    /// journaled as `failed` with this reason and settled to the error folder.
    pub rejected: Option<String>,
    /// `raw`'s SHA-256 ([`raw_sha256`]) when the caller has it already:
    /// hashed off the store's write lock. The store hashes it otherwise.
    pub sha256: Option<String>,
    /// `raw` compressed by [`crate::blob_codec::pack`], when the caller
    /// compressed it (off the write lock): a store may keep these bytes
    /// instead.
    pub packed: Option<Vec<u8>>,
}

impl<'a> IncomingMail<'a> {
    pub fn fetched(remote_id: impl Into<String>, raw: &'a [u8]) -> Self {
        Self { remote_id: remote_id.into(), raw, size: raw.len() as u64, rejected: None, sha256: None, packed: None }
    }

    pub fn rejected(remote_id: impl Into<String>, size: u64, reason: impl Into<String>) -> Self {
        Self { remote_id: remote_id.into(), raw: &[], size, rejected: Some(reason.into()), sha256: None, packed: None }
    }

    /// With `raw`'s SHA-256, computed by [`raw_sha256`].
    pub fn hashed(self, sha256: String) -> Self {
        Self { sha256: Some(sha256), ..self }
    }

    /// With `raw` compressed by [`crate::blob_codec::pack`] (if it was).
    pub fn packed(self, packed: Option<Vec<u8>>) -> Self {
        Self { packed, ..self }
    }

    /// The SHA-256 the raw bytes are stored under.
    pub(crate) fn raw_sha256(&self) -> String {
        self.sha256.clone().unwrap_or_else(|| raw_sha256(self.raw))
    }
}

/// What parsing made of a batch's mails, by remote id.
pub type Parses = std::collections::HashMap<String, Result<mailrobot_core::ParsedMail, String>>;

/// A batch's [`Parses`], waited for when called: a store may store the raw
/// bytes meanwhile ([`crate::Store::journal_and_file`]).
pub type ParsesLater<'a> = Box<dyn FnOnce() -> Parses + Send + 'a>;

/// A journal row that filing writes once, when it records the outcome: the
/// mail was fetched in the same transaction ([`crate::Store::journal_and_file`]).
#[derive(Debug, Clone)]
pub(crate) struct FreshRow {
    pub(crate) mailbox_id: i64,
    pub(crate) remote_id: String,
    pub(crate) raw_sha256: String,
    pub(crate) size: i64,
}

/// The key raw mail and attachments are stored under: their SHA-256, in
/// lowercase hex.
pub fn raw_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Where the remote copy of a journaled mail must go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SettleTo {
    Processed,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownMail {
    pub journal_id: i64,
    pub remote_id: String,
    pub state: crate::JournalState,
    pub settled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsettled {
    pub journal_id: i64,
    pub remote_id: String,
    pub settle_to: SettleTo,
}

/// What processing made of one journaled mail.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessedMail {
    pub journal_id: i64,
    pub mailbox_id: i64,
    pub remote_id: String,
    pub subject: Option<String>,
    pub state: crate::JournalState,
    pub kind: Option<crate::MessageKind>,
    pub ticket_id: Option<i64>,
    pub created_ticket: bool,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TicketSummary {
    pub id: i64,
    pub subject: String,
    pub requester: Option<String>,
    pub requester_name: Option<String>,
    pub status: crate::TicketStatus,
    pub entries: i64,
    pub created_at: String,
    pub updated_at: String,
    /// What rules set (`rules add … --set-category` and the like).
    #[serde(flatten)]
    pub fields: mailrobot_core::TicketFields,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttachmentView {
    pub filename: Option<String>,
    pub content_type: String,
    pub size: i64,
    pub content_id: Option<String>,
    pub inline: bool,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct EntryView {
    pub position: i64,
    pub journal_id: i64,
    pub message_id: Option<String>,
    pub from: Option<String>,
    pub from_name: Option<String>,
    pub subject: String,
    pub kind: crate::MessageKind,
    pub date: Option<String>,
    pub text_body: String,
    /// The text without the history it quotes, when a reply's could be
    /// told apart; None: all of `text_body` is new.
    pub new_text: Option<String>,
    pub html_body: Option<String>,
    pub attachments: Vec<AttachmentView>,
    pub created_at: String,
    /// What was decided about answering its mail (the journal row's).
    pub answer: Option<String>,
    /// What rules did to its mail (the journal row's).
    pub rules: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TicketDetail {
    #[serde(flatten)]
    pub summary: TicketSummary,
    pub entries: Vec<EntryView>,
}

/// Which tickets a list shows: a page of them, newest first.
#[derive(Debug, Clone, Default)]
pub struct TicketQuery {
    /// Words in the subject or the requester's address or name; a ticket
    /// number (`123`) matches that ticket too.
    pub text: Option<String>,
    /// A ticket id to match as well (the number typed, parsed by the caller).
    pub number: Option<i64>,
    pub status: Option<crate::TicketStatus>,
    /// Tickets with an entry from this mailbox.
    pub mailbox_id: Option<i64>,
    /// Only tickets with a smaller id (the cursor: the last one shown).
    pub before_id: Option<i64>,
    pub limit: usize,
}

#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    pub state: Option<crate::JournalState>,
    pub mailbox_id: Option<i64>,
    /// A page, newest first: at most this many, with ids below `before_id`.
    /// None: every row, oldest first (the CLI's complete list).
    pub page: Option<MessagePage>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct MessagePage {
    pub before_id: Option<i64>,
    pub limit: usize,
}

/// One row of the journal: one fetched copy of a mail.
#[derive(Debug, Clone, Serialize)]
pub struct MessageView {
    pub journal_id: i64,
    pub mailbox: String,
    pub remote_id: String,
    pub message_id: Option<String>,
    pub subject: Option<String>,
    pub from: Option<String>,
    pub state: crate::JournalState,
    pub kind: Option<crate::MessageKind>,
    pub ticket_id: Option<i64>,
    pub reason: Option<String>,
    pub size: i64,
    pub raw_sha256: Option<String>,
    pub settled: bool,
    pub fetched_at: String,
    pub processed_at: Option<String>,
    /// What was decided about answering it by itself (`acknowledged to …`, or why not).
    pub answer: Option<String>,
    /// What rules did to it.
    pub rules: Option<String>,
}

/// What the journal holds of one mailbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MailboxCounts {
    pub mailbox_id: i64,
    /// Fetched since the time asked for (today, on the dashboard).
    pub fetched_since: i64,
    /// Journaled, not processed yet.
    pub waiting: i64,
    pub failed: i64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub tickets: i64,
    pub messages: i64,
    pub fetched: i64,
    pub processed: i64,
    pub failed: i64,
    pub unsettled: i64,
}

/// A ticket's tags as stored (a JSON array of strings, or NULL).
pub(crate) fn tags_from_json(stored: Option<String>) -> Vec<String> {
    stored.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
}

/// Tags to store: NULL when there are none.
pub(crate) fn tags_to_json(tags: &[String]) -> Option<String> {
    (!tags.is_empty()).then(|| serde_json::to_string(tags).unwrap_or_default())
}

/// A search text as a LIKE pattern: its wildcards escaped (backslash, the
/// default escape of PostgreSQL and the one SQLite's queries name), so the
/// words are looked for as typed.
pub(crate) fn like_pattern(text: &str) -> String {
    format!("%{}%", text.trim().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"))
}

/// What changing a ticket's status did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusChange {
    NoTicket,
    Unchanged,
    Changed,
}

/// A mailbox's policy for new mail, read from its settings.
pub(crate) fn mailbox_policy(config: &str) -> mailrobot_core::MailboxPolicy {
    let config: serde_json::Value = serde_json::from_str(config).unwrap_or_default();
    let text = |key: &str| config.get(key).and_then(|v| v.as_str()).map(str::to_string);
    mailrobot_core::MailboxPolicy {
        unknown_senders: text("unknown_senders").and_then(|p| p.parse().ok()).unwrap_or_default(),
        language: text("language").filter(|l| !l.is_empty()),
    }
}

/// A Graph change-notification subscription the robot keeps for a mailbox
/// (at most one per mailbox). The `clientState` Graph echoes in every
/// notification is a secret: it is stored sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSubscription {
    pub mailbox_id: i64,
    /// Graph's id of the subscription.
    pub subscription_id: String,
    pub sealed_client_state: Vec<u8>,
    pub notification_url: String,
    /// What it watches (connection, address, folder), as the robot names it.
    pub watching: String,
    /// When Graph ends it unless renewed (RFC 3339).
    pub expires_at: String,
    pub created_at: String,
    pub renewed_at: Option<String>,
}
