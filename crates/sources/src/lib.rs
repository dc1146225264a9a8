//! Mail sources: where mail comes from, behind one [`MailSource`] trait.
//!
//! A source lists what is waiting in the watched folder, fetches raw MIME for the
//! ids the pipeline asks for, and settles mails (moves them to a processed or
//! error folder, marks them read, or deletes them) only when the pipeline says
//! the ticket is committed. Sources never decide anything about tickets.
//!
//! Remote ids are stable strings that name one copy of a mail in one mailbox:
//! IMAP `"{uidvalidity}:{uid}"`, POP3 the UIDL, a drop folder the file name.

/// Runs a source call; if it failed with a network error on a connection
/// kept from an earlier call (the server may have timed it out meanwhile),
/// runs it once more on a fresh connection. Safe because list and fetch only
/// read and settle is idempotent (a new POP3 session simply repeats its
/// DELEs). Expects `$self.conn: Option<_>`, `$self.cfg.endpoint()` and
/// `$self.note(err)`.
macro_rules! with_retry {
    ($self:ident, $call:expr) => {{
        let reused = $self.conn.is_some();
        match $call.await {
            Err(e) if reused && e.is_transient() => {
                tracing::debug!(server = %$self.cfg.endpoint(), error = %e, "retrying on a fresh connection");
                $self.conn = None;
                let r = $call.await;
                r.map_err(|e| $self.note(e))
            }
            r => r.map_err(|e| $self.note(e)),
        }
    }};
}

pub mod credentials;
pub mod drop_folder;
pub mod error;
pub mod ews;
#[doc(hidden)]
pub mod fuzzing;
pub mod graph;
pub mod graph_subscriptions;
mod http1;
pub mod http_body;
pub mod imap;
mod imap_guard;
pub mod ntlm;
pub mod paging;
pub mod plaintext;
pub mod pop3;
pub mod smtp;
pub mod throttle;
pub mod tls;

pub use credentials::Credentials;
pub use drop_folder::DropFolderSource;
pub use error::{ErrorKind, SourceError};
pub use ews::{EwsAuth, EwsConfig, EwsSource, PasswordScheme};
pub use graph::{GraphConfig, GraphSource};
pub use graph_subscriptions::{GraphSubscriber, Subscription, SubscriptionRequest};
pub use imap::{ImapConfig, ImapSource};
pub use pop3::{Pop3Config, Pop3Source};
pub use smtp::{SmtpConfig, SmtpLogin, SmtpSession};
pub use tls::TlsMode;

/// Where a source gets OAuth2 bearer tokens (the service connection's token
/// broker). Asked again when a server says a token expired mid-session.
#[async_trait::async_trait]
pub trait BearerTokens: Send + Sync {
    /// A valid token; `renew` when the server refused the last one.
    async fn token(&self, renew: bool) -> Result<String, SourceError>;
}

impl std::fmt::Debug for dyn BearerTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerTokens")
    }
}

/// One mail waiting in the source, as listed (before its body is fetched).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub remote_id: String,
    /// Size in bytes as the server reports it, when it does.
    pub size: Option<u64>,
}

/// One fetched mail: its remote id and its raw bytes exactly as received.
#[derive(Debug, Clone)]
pub struct RemoteMail {
    pub remote_id: String,
    pub raw: Vec<u8>,
    /// Set when the source did not take the mail (`raw` is then empty):
    /// the pipeline journals it as failed with this reason, and settles it
    /// into the error folder.
    pub refused: Option<Refusal>,
}

/// Why a source did not take a mail it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Over the mailbox's size limit: reading stopped once it had at least
    /// this many bytes (or the server announced as many).
    TooLarge { at_least: u64 },
    /// Not something the robot reads as a mail (a drop folder's symlink,
    /// device or directory): the reason says what it is.
    NotAMail { reason: String },
    /// Not fetched this time: the fetch's byte budget was spent on the mails
    /// before it. Not journaled; the pipeline asks for it again next batch.
    Deferred,
}

impl RemoteMail {
    pub fn new(remote_id: String, raw: Vec<u8>) -> Self {
        Self { remote_id, raw, refused: None }
    }

    pub fn oversized(remote_id: String, at_least: u64) -> Self {
        Self { remote_id, raw: Vec::new(), refused: Some(Refusal::TooLarge { at_least }) }
    }

    /// Left for the next fetch (see [`Refusal::Deferred`]).
    pub fn deferred(remote_id: String) -> Self {
        Self { remote_id, raw: Vec::new(), refused: Some(Refusal::Deferred) }
    }

    pub fn is_deferred(&self) -> bool {
        self.refused == Some(Refusal::Deferred)
    }

    pub fn not_a_mail(remote_id: String, reason: impl Into<String>) -> Self {
        Self { remote_id, raw: Vec::new(), refused: Some(Refusal::NotAMail { reason: reason.into() }) }
    }

    /// Whether the source refused it for being over the size limit.
    pub fn oversized_at_least(&self) -> Option<u64> {
        match self.refused {
            Some(Refusal::TooLarge { at_least }) => Some(at_least),
            _ => None,
        }
    }
}

/// What `mailbox test` shows an admin before enabling a mailbox.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Probe {
    /// Folders the robot can see, with counts where the server gives them.
    pub folders: Vec<FolderProbe>,
    /// Mails waiting in the watched folder (what the next pass would take).
    pub waiting: usize,
    /// Unread mails in the watched folder, where the server says.
    pub unread: Option<u64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FolderProbe {
    pub name: String,
    pub total: Option<u64>,
    pub unread: Option<u64>,
}

/// Where a mail goes once the robot is done with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Ticket committed: apply the mailbox's settle action (move to the
    /// processed folder, mark read, or delete).
    Processed,
    /// Could not be processed: move to the error folder (sources without
    /// folders leave it where it is; the journal remembers it).
    Failed,
}

/// What to do with a processed mail in the remote mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SettleAction {
    Move,
    MarkRead,
    Delete,
}

/// A mailbox the robot reads from.
///
/// How a wait for new mail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// The server announced new mail: poll now.
    NewMail,
    /// The wait ran its time, or the server told of other changes.
    Quiet,
    /// The server (or the source kind) has no push: poll on a schedule.
    NotOffered,
}

/// Calls come in this order within one session: `list`, then any number of
/// `fetch` and `settle`, then `close`. A source may reconnect on its own.
#[async_trait::async_trait]
pub trait MailSource: Send {
    /// Every mail currently waiting in the watched folder. Mails the robot
    /// has already settled may still appear (e.g. a failed move); the
    /// pipeline filters them by remote id.
    async fn list(&mut self) -> Result<Vec<Listing>, SourceError>;

    /// Raw MIME for the given remote ids, in any order. Ids that vanished
    /// since `list` are left out of the result, not reported as errors. A
    /// source that cannot know sizes before downloading may stop at a byte
    /// budget and hand the rest back as [`RemoteMail::deferred`]: the
    /// pipeline asks for them again in its next batch.
    async fn fetch(&mut self, remote_ids: &[String]) -> Result<Vec<RemoteMail>, SourceError>;

    /// Applies the outcome to each mail. Must be idempotent: settling a mail
    /// that was already settled (or is gone) succeeds.
    async fn settle(&mut self, outcomes: &[(String, Outcome)]) -> Result<(), SourceError>;

    /// Ends the session cleanly (IMAP LOGOUT, POP3 QUIT which commits deletes).
    async fn close(&mut self) -> Result<(), SourceError>;

    /// Whether a mail the robot settled that is listed again means the settle
    /// did not take effect (POP3 deletes lost with a failed QUIT, an IMAP
    /// move undone), so the pipeline must settle it again. False where a
    /// listed name can be a new mail (a drop folder reusing a file name).
    fn resettle_if_listed_again(&self) -> bool {
        false
    }

    /// Connects, authenticates and looks around without changing anything.
    async fn probe(&mut self) -> Result<Probe, SourceError> {
        let waiting = self.list().await?.len();
        Ok(Probe { waiting, ..Probe::default() })
    }

    /// Waits, for at most `max`, until the server says new mail arrived
    /// (IMAP IDLE, RFC 2177). Sources without push answer
    /// [`Push::NotOffered`] at once: the pipeline polls them.
    async fn wait_for_mail(&mut self, _max: std::time::Duration) -> Result<Push, SourceError> {
        Ok(Push::NotOffered)
    }

    /// At most this many mails per `fetch`, if the source wants fewer than
    /// the pipeline's batch: a source that pays a request per mail gains
    /// nothing from big batches, and a fetch that fails after its retries
    /// throws away what it downloaded for the whole batch.
    fn max_batch(&self) -> Option<usize> {
        None
    }

    /// Where an incremental source stands after `list` (Graph's deltaLink,
    /// EWS's SyncState), to be stored once every listed mail is journaled
    /// and handed back next time. None for sources that list everything.
    fn sync_state(&self) -> Option<String> {
        None
    }
}
