//! What the pages ask the robot to do. The binary implements this with the
//! code its commands run, so a form and its CLI command check and store
//! alike; the UI only turns forms into these calls and errors into words.

use mailrobot_store::Tenant;

/// A tenant as the form gives it. Empty fields are None.
#[derive(Debug, Clone, Default)]
pub struct TenantForm {
    pub name: String,
    pub client_id: String,
    pub tenant: Option<String>,
    /// Write-only: None keeps the stored one.
    pub client_secret: Option<String>,
    /// `YYYY-MM-DD`.
    pub secret_expires: Option<String>,
    /// An uploaded PEM (certificate and private key); None keeps the stored one.
    pub certificate_pem: Option<String>,
    pub authority_url: Option<String>,
    pub graph_url: Option<String>,
    pub ews_url: Option<String>,
}

/// A refusal or failure, in words for the administrator.
pub type OpResult<T> = Result<T, String>;

#[async_trait::async_trait]
pub trait Operations:
    ConnectionOperations + MailboxOperations + ServiceOperations + WebhookOperations + TicketOperations + Send + Sync
{
    async fn add_tenant(&self, form: TenantForm) -> OpResult<Tenant>;
    /// Saves the tenant called `name` (the form's name is not changed).
    async fn update_tenant(&self, name: &str, form: TenantForm) -> OpResult<Tenant>;
}

/// A new service connection as the form gives it.
#[derive(Debug, Clone)]
pub struct ConnectionForm {
    pub name: String,
    pub tenant: String,
    pub capability: mailrobot_store::Capability,
    pub mode: mailrobot_store::Mode,
    /// Empty: the capability's default scopes.
    pub scopes: Vec<String>,
}

/// Where an SMTP connection's test logs in (all optional: Microsoft 365's
/// SMTP server with STARTTLS, as the signed-in user).
#[derive(Debug, Clone, Default)]
pub struct SmtpCheck {
    /// `host[:port]`.
    pub server: Option<String>,
    /// `starttls` (default), `tls` or `none`.
    pub security: Option<String>,
    /// The sending address to log in as.
    pub address: Option<String>,
}

/// The connections' part of [`Operations`].
#[async_trait::async_trait]
pub trait ConnectionOperations: Send + Sync {
    async fn add_connection(&self, form: ConnectionForm) -> OpResult<mailrobot_store::Connection>;
    /// Starts Setup Authentication for a browser: the identity platform's
    /// URL to send it to. `initiator` binds the flow to that browser.
    async fn begin_setup(&self, connection: &str, initiator: String) -> OpResult<String>;
    /// Gets a token now; for an SMTP connection, also logs in to the SMTP
    /// server with it (nothing is sent). What came back, in words.
    async fn test_connection(&self, connection: &str, smtp: SmtpCheck) -> OpResult<String>;
}

/// A new mailbox as the form gives it. Fields that do not apply to its
/// type are ignored, as the CLI ignores flags that do not apply.
#[derive(Debug, Clone, Default)]
pub struct MailboxForm {
    pub name: String,
    pub kind: Option<mailrobot_store::MailboxKind>,
    pub connection: Option<String>,
    pub address: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    /// `tls`, `starttls` or `none`.
    pub security: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ews_url: Option<String>,
    pub path: Option<String>,
    pub folder: String,
    pub processed_folder: String,
    pub error_folder: String,
    /// `move`, `mark-read` or `delete`.
    pub after_processing: String,
    pub poll_seconds: i64,
    pub max_message_mb: i64,
}

/// What a mailbox test found.
#[derive(Debug, Clone, Default)]
pub struct MailboxTest {
    /// In words, for the page ("reachable; 3 mails waiting").
    pub said: String,
    /// The folders the robot can see in the live mailbox (the pickers').
    pub folders: Vec<String>,
}

/// What "Poll now" did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollNow {
    /// This process polled the mailbox: what the pass did, in words.
    Polled(String),
    /// Another node polls the mailbox (or the next to take it will) and was
    /// asked to poll it now: who, in words.
    Asked(String),
}

impl PollNow {
    /// What it did, in words (the API's message).
    pub fn said(self) -> String {
        match self {
            PollNow::Polled(said) | PollNow::Asked(said) => said,
        }
    }
}

/// The mailboxes' part of [`Operations`].
#[async_trait::async_trait]
pub trait MailboxOperations: Send + Sync {
    async fn add_mailbox(&self, form: MailboxForm) -> OpResult<mailrobot_store::Mailbox>;
    /// Connects, lists folders and counts what waits, changing nothing.
    async fn test_mailbox(&self, name: &str) -> OpResult<MailboxTest>;
    /// One pass over the mailbox now, or the node that polls it asked to.
    async fn poll_now(&self, name: &str) -> OpResult<PollNow>;
    /// Saves the settings the mailbox's page edits (as `mailbox set`).
    async fn update_mailbox(&self, name: &str, form: MailboxSettingsForm) -> OpResult<mailrobot_store::Mailbox>;
}

/// The Services page's part of [`Operations`].
#[async_trait::async_trait]
pub trait ServiceOperations: Send + Sync {
    /// Checks and stores a capability and mode's default scopes (new
    /// connections get them; existing ones keep theirs).
    async fn set_service_scopes(&self, scopes: mailrobot_store::ServiceScopes) -> OpResult<()>;
}

/// A mailbox's settings as its page's form gives them (empty: keep).
#[derive(Debug, Clone, Default)]
pub struct MailboxSettingsForm {
    pub folder: Option<String>,
    pub processed_folder: Option<String>,
    pub error_folder: Option<String>,
    /// `move`, `mark-read` or `delete`.
    pub after_processing: Option<String>,
    pub poll_seconds: Option<i64>,
    pub max_message_mb: Option<i64>,
    /// A new password; None keeps the stored one.
    pub password: Option<String>,
    /// `create`, `accept` or `reject`: mail from senders the directory does not know.
    pub unknown_senders: Option<String>,
    /// The templates' language when a mail names none (empty: none).
    pub language: Option<String>,
    /// How the mailbox answers requesters (`mailbox set --reply-via …`).
    pub reply: Option<ReplyForm>,
}

/// A mailbox's reply transport, as `mailbox set --reply-via …` takes it;
/// what is not given stays.
#[derive(Debug, Clone, Default)]
pub struct ReplyForm {
    /// `none`, `smtp`, `graph` or `ews`.
    pub via: Option<String>,
    pub smtp_server: Option<String>,
    /// `starttls`, `tls` or `none`.
    pub smtp_tls: Option<String>,
    pub smtp_username: Option<String>,
    /// Write-only.
    pub smtp_password: Option<String>,
    pub smtp_connection: Option<String>,
    pub from: Option<String>,
    /// A Reply-To for what the mailbox sends; empty removes it.
    pub reply_to: Option<String>,
}

/// The webhooks' part of [`Operations`].
#[async_trait::async_trait]
pub trait WebhookOperations: Send + Sync {
    /// Checks the URL and the `whsec_` secret, seals the secret and adds the
    /// webhook (no events: all of them).
    async fn add_webhook(
        &self,
        url: String,
        events: Vec<mailrobot_store::WebhookEvent>,
        secret: String,
    ) -> OpResult<mailrobot_store::Webhook>;
}

/// A file an agent attaches to a reply.
#[derive(Debug, Clone)]
pub struct ReplyFile {
    pub filename: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// The tickets' part of [`Operations`].
#[async_trait::async_trait]
pub trait TicketOperations: Send + Sync {
    /// Queues an agent's reply to the ticket's requester, with files.
    async fn reply(
        &self,
        number: &str,
        text: String,
        files: Vec<ReplyFile>,
    ) -> OpResult<mailrobot_views::OutboxMailJson>;
    /// Sets the ticket's status; the requester is notified by mail when its
    /// mailbox sends mail. False: no such ticket.
    async fn set_status(&self, ticket_id: i64, status: mailrobot_store::TicketStatus) -> OpResult<bool>;
}
