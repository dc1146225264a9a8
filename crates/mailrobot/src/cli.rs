//! The command line — the contract outside checks drive. Add freely; do not
//! rename or remove.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "mailrobot", version, about = "Turns mail into tickets, exactly once.")]
pub struct Cli {
    /// Where the database, the master key and the demo's files live.
    #[arg(long, global = true, env = "MAILROBOT_DATA_DIR", default_value = "./mailrobot-data")]
    pub data_dir: PathBuf,

    /// A PostgreSQL database shared by several nodes
    /// (postgres://user:password@host:port/db) instead of the SQLite file in
    /// the data directory. Prefer the environment variable: a password on a
    /// command line is visible to every user of the machine.
    #[arg(long, global = true, env = "MAILROBOT_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "MAILROBOT_LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Poll every enabled mailbox on its schedule and serve /healthz and /metrics.
    Serve {
        #[arg(long, default_value = "127.0.0.1:8025", env = "MAILROBOT_LISTEN")]
        listen: SocketAddr,
        /// The address people's browsers reach this server at (behind a proxy:
        /// the https address they see). Setup Authentication redirects to
        /// {public-url}/wm/externalAuth/redirect.html.
        #[arg(long, env = "MAILROBOT_PUBLIC_URL")]
        public_url: Option<String>,
    },
    /// One pass over every enabled mailbox, then exit (non-zero if a mailbox could not be polled).
    RunOnce {
        /// Print the per-mailbox reports as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add, list, enable, disable or remove mailboxes.
    #[command(subcommand)]
    Mailbox(MailboxCommand),
    /// Tickets made from mail.
    #[command(subcommand)]
    Tickets(TicketsCommand),
    /// The mail journal: one row per fetched copy of a mail.
    #[command(subcommand)]
    Messages(MessagesCommand),
    /// Show or change settings (ticket number format).
    #[command(subcommand)]
    Settings(SettingsCommand),
    /// App registrations at an identity provider (Microsoft 365 or any OAuth2 server).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Service connections: tenant + capability + mode, with their tokens.
    #[command(subcommand)]
    Connection(ConnectionCommand),
    /// Outbound mail over SMTP.
    #[command(subcommand)]
    Smtp(SmtpCommand),
    /// Secrets at rest: which master key sealed them; re-seal after a key change.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Administrators who sign in to the web UI `serve` offers.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Tokens for the REST API (/api/v1).
    #[command(subcommand)]
    ApiToken(ApiTokenCommand),
    /// Mail the robot sends (acknowledgements): what is queued, sent, failed.
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// Webhooks: ticket events POSTed, signed (Standard Webhooks), to another system.
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Rules: conditions → actions applied to each mail, in order.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Templates of the mails the robot sends (minijinja), per mailbox and language.
    #[command(subcommand)]
    Templates(TemplatesCommand),
    /// The sender directory.
    #[command(subcommand)]
    Contacts(ContactsCommand),
    /// The `serve` processes sharing this database, and the mailboxes each polls.
    #[command(subcommand)]
    Nodes(NodesCommand),
    /// Move an SQLite installation into an empty PostgreSQL database: every
    /// table in one transaction, verified (row counts and checksums). Refused
    /// while a node runs on either database, or when the target holds data.
    /// Name the target with MAILROBOT_DATABASE_URL rather than --to: a
    /// password on a command line is visible to every user of the machine.
    MigrateStore {
        /// The SQLite database: sqlite:PATH, PATH being the mailrobot.db file
        /// (or the data directory holding it).
        #[arg(long, value_name = "sqlite:PATH")]
        from: String,
        /// The empty PostgreSQL database (postgres://user:password@host:port/db).
        /// Default, and preferred: MAILROBOT_DATABASE_URL.
        #[arg(long, value_name = "postgres://…")]
        to: Option<String>,
        /// Print the report (per table: rows, checksum) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The whole story on embedded defaults: sample mails dropped into a
    /// drop folder become tickets; then keeps serving.
    Demo {
        /// Run the story and exit instead of serving afterwards.
        #[arg(long)]
        once: bool,
        /// The local story only: a drop folder, no Microsoft 365.
        #[arg(long)]
        local: bool,
        #[arg(long, default_value = "127.0.0.1:8025")]
        listen: SocketAddr,
    },
}

#[derive(Debug, Args, Default)]
pub struct MailboxSet {
    /// The mailbox: `mailbox set NAME …` (or `--name NAME`).
    #[arg(value_name = "NAME", conflicts_with = "name")]
    pub mailbox: Option<String>,
    #[arg(long, default_value = "", hide_default_value = true)]
    pub name: String,
    #[arg(long)]
    pub folder: Option<String>,
    #[arg(long)]
    pub processed_folder: Option<String>,
    #[arg(long)]
    pub error_folder: Option<String>,
    #[arg(long, value_enum)]
    pub settle: Option<SettleArg>,
    #[arg(long)]
    pub poll_seconds: Option<i64>,
    #[arg(long)]
    pub max_message_mb: Option<i64>,
    /// Name of the environment variable holding a new password.
    #[arg(long, conflicts_with = "password_stdin")]
    pub password_env: Option<String>,
    /// Read a new password from the first line of standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// How the mailbox answers requesters: `smtp`, `graph` (its connection), `ews` (an EWS
    /// mailbox's own endpoint and login), or `none` (the default).
    #[arg(long, value_enum)]
    pub reply_via: Option<crate::outbound::ReplyVia>,
    /// The SMTP server replies go through: host[:port].
    #[arg(long)]
    pub smtp_server: Option<String>,
    #[arg(long, value_enum)]
    pub smtp_tls: Option<TlsArg>,
    #[arg(long, conflicts_with = "smtp_connection")]
    pub smtp_username: Option<String>,
    /// Name of the environment variable holding the SMTP password.
    #[arg(long, requires = "smtp_username")]
    pub smtp_password_env: Option<String>,
    /// An smtp service connection to log in with (SASL XOAUTH2).
    #[arg(long)]
    pub smtp_connection: Option<String>,
    /// The address replies are sent from (default: the mailbox's address).
    #[arg(long)]
    pub from: Option<String>,
    /// A Reply-To for what the mailbox sends ("" removes it).
    #[arg(long)]
    pub reply_to: Option<String>,
    /// What happens to mail from senders the directory does not know.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["create", "accept", "reject"]))]
    pub unknown_senders: Option<String>,
    /// The language of the mailbox's templates when a mail names none it has (e.g. de).
    #[arg(long)]
    pub language: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ApiTokenCommand {
    /// Make a token; it is printed once, alone on the last line, and only
    /// its hash is kept.
    Create {
        #[arg(long)]
        name: String,
        /// The token may read but not change anything.
        #[arg(long)]
        read_only: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: requests with it are refused at once.
    Revoke {
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// Every outbound mail, oldest first.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Queue a mail again, now (its Message-ID stays).
    Resend { id: i64 },
}

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Send ticket events to URL, signed with the secret in the environment
    /// variable VAR (`whsec_<base64>`, as the Standard Webhooks libraries take it).
    Add {
        #[arg(long)]
        url: String,
        /// Name of the environment variable holding the secret.
        #[arg(long)]
        secret_env: String,
        /// The events to send (all when none is given); repeat for several.
        #[arg(long = "event", value_enum)]
        events: Vec<mailrobot_store::WebhookEvent>,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    /// Stop sending (events keep queueing; `enable` sends them).
    Disable {
        #[arg(long)]
        id: i64,
    },
    Enable {
        #[arg(long)]
        id: i64,
    },
    /// Remove the webhook and its queued deliveries.
    Remove {
        #[arg(long)]
        id: i64,
    },
    /// Every delivery with its state and the receiver's last answer, newest first.
    Deliveries {
        #[arg(long)]
        webhook: Option<i64>,
        #[arg(long, value_enum)]
        state: Option<mailrobot_store::DeliveryState>,
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// Send a delivery again (same webhook-id), now.
    Resend {
        /// The delivery's id (see `webhook deliveries`).
        #[arg(long)]
        id: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// The first administrator (refused once one exists: use `add`).
    Create {
        #[arg(long)]
        email: String,
        /// Read the password from standard input (the first line).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Another administrator.
    Add {
        #[arg(long)]
        email: String,
        /// Read the password from standard input (the first line).
        #[arg(long)]
        password_stdin: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove an administrator; their sessions end at once.
    Remove {
        #[arg(long)]
        email: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum MailboxCommand {
    /// Add a mailbox. Passwords come from an environment variable or stdin, never the command line.
    Add(Box<MailboxAdd>),
    /// Change a mailbox: the flags given replace those settings, the rest stay.
    Set(Box<MailboxSet>),
    List {
        #[arg(long)]
        json: bool,
    },
    /// Connect, authenticate, list folders, count what waits: what an admin checks before enabling.
    Test {
        name: String,
        #[arg(long)]
        json: bool,
    },
    Enable {
        name: String,
    },
    Disable {
        name: String,
    },
    /// Stop watching a mailbox; its journal and tickets stay.
    Remove {
        name: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum AuthArg {
    Password,
    Oauth,
}

/// How an EWS mailbox with a password logs in.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum EwsAuthArg {
    /// NTLM when the server offers it (the password never travels), else Basic.
    Auto,
    Basic,
    Ntlm,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum TlsArg {
    None,
    Starttls,
    Tls,
}

impl From<TlsArg> for mailrobot_sources::TlsMode {
    fn from(tls: TlsArg) -> Self {
        match tls {
            TlsArg::None => mailrobot_sources::TlsMode::None,
            TlsArg::Starttls => mailrobot_sources::TlsMode::StartTls,
            TlsArg::Tls => mailrobot_sources::TlsMode::Tls,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum SettleArg {
    Move,
    MarkRead,
    Delete,
}

#[derive(Debug, Args)]
pub struct MailboxAdd {
    #[arg(long)]
    pub name: String,
    #[arg(long, value_enum)]
    pub kind: mailrobot_store::MailboxKind,
    #[arg(long)]
    pub host: Option<String>,
    /// Default: 143 (IMAP) / 110 (POP3), or 993 / 995 with --tls tls.
    #[arg(long)]
    pub port: Option<u16>,
    #[arg(long, value_enum, default_value_t = TlsArg::Tls)]
    pub tls: TlsArg,
    #[arg(long)]
    pub username: Option<String>,
    /// Name of the environment variable holding the password.
    #[arg(long, conflicts_with = "password_stdin")]
    pub password_env: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    pub password_stdin: bool,
    #[arg(long, default_value = "INBOX")]
    pub folder: String,
    #[arg(long, default_value = "Processed")]
    pub processed_folder: String,
    #[arg(long, default_value = "Failed")]
    pub error_folder: String,
    /// What happens to a processed mail in an IMAP mailbox.
    #[arg(long, value_enum, default_value_t = SettleArg::Move)]
    pub settle: SettleArg,
    /// POP3: leave processed mails on the server.
    #[arg(long)]
    pub keep_on_server: bool,
    /// Drop folder: the directory holding inbox/, tmp/, processed/, failed/.
    #[arg(long)]
    pub path: Option<PathBuf>,
    /// Graph, or IMAP/POP3 with --auth oauth: the service connection whose tokens open the mailbox.
    #[arg(long)]
    pub connection: Option<String>,
    /// IMAP/POP3: log in with a password, or with SASL XOAUTH2 and the connection's tokens.
    #[arg(long, value_enum, default_value_t = AuthArg::Password)]
    pub auth: AuthArg,
    /// Graph / EWS: the mailbox address (a user's or a shared mailbox).
    #[arg(long)]
    pub address: Option<String>,
    /// EWS with a password (Exchange Server on-premises): the full .../EWS/Exchange.asmx URL.
    #[arg(long)]
    pub ews_url: Option<String>,
    /// EWS with a password: NTLM or Basic, or auto (the default) to take NTLM where the server offers it.
    #[arg(long, value_enum)]
    pub ews_auth: Option<EwsAuthArg>,
    #[arg(long, default_value_t = 60)]
    pub poll_seconds: i64,
    /// Larger mails are not downloaded; they are journaled as failed.
    #[arg(long, default_value_t = 50)]
    pub max_message_mb: i64,
    /// Add it disabled (enable later with `mailbox enable`).
    #[arg(long)]
    pub disabled: bool,
    /// Allow the password or token to travel unencrypted (no TLS, or an
    /// http:// URL) to a host other than this machine. Refused otherwise.
    #[arg(long)]
    pub allow_plaintext: bool,
}

#[derive(Debug, Subcommand)]
pub enum TicketsCommand {
    List {
        #[arg(long)]
        json: bool,
    },
    Show {
        /// e.g. TKT-000123 (or 123)
        number: String,
        #[arg(long)]
        json: bool,
    },
    /// Answer the requester by mail (through the ticket's mailbox's --reply-via).
    Reply {
        number: String,
        /// The text (UTF-8); `-` reads standard input.
        #[arg(long)]
        body_file: std::path::PathBuf,
        /// A file to attach; repeat for several.
        #[arg(long = "attach")]
        attachments: Vec<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Set the status; the requester is notified when the ticket's mailbox sends mail.
    Status {
        number: String,
        #[arg(value_enum)]
        status: mailrobot_store::TicketStatus,
    },
}

/// `rules add`: the conditions (all must match) and the actions.
#[derive(Debug, Args, Default)]
pub struct RuleAdd {
    #[arg(long)]
    pub name: String,
    /// Only for this mailbox (default: every mailbox).
    #[arg(long)]
    pub mailbox: Option<String>,
    /// Its place in the order, 1 first (default: last).
    #[arg(long)]
    pub position: Option<i64>,
    /// The whole rule as JSON ({"conditions": [...], "actions": [...]}) instead of the flags below.
    #[arg(long, conflicts_with_all = ["from", "to", "cc", "subject_contains", "subject_regex", "body_contains",
        "body_regex", "header", "attachment_type", "larger_than", "smaller_than", "classification", "contact"])]
    pub definition: Option<String>,
    /// The sender is this address or in this domain; repeat for any of several.
    #[arg(long)]
    pub from: Vec<String>,
    #[arg(long)]
    pub to: Vec<String>,
    #[arg(long)]
    pub cc: Vec<String>,
    #[arg(long)]
    pub subject_contains: Option<String>,
    #[arg(long)]
    pub subject_regex: Option<String>,
    #[arg(long)]
    pub body_contains: Option<String>,
    #[arg(long)]
    pub body_regex: Option<String>,
    /// NAME (present) or NAME=VALUE (equal, ignoring case).
    #[arg(long)]
    pub header: Vec<String>,
    /// e.g. application/pdf or image/*.
    #[arg(long)]
    pub attachment_type: Option<String>,
    /// The raw mail is larger than this many bytes.
    #[arg(long)]
    pub larger_than: Option<u64>,
    #[arg(long)]
    pub smaller_than: Option<u64>,
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["new", "reply", "auto-reply", "bounce"]))]
    pub classification: Option<String>,
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["known", "unknown"]))]
    pub contact: Option<String>,
    #[arg(long)]
    pub set_category: Option<String>,
    #[arg(long)]
    pub set_priority: Option<String>,
    #[arg(long)]
    pub set_queue: Option<String>,
    #[arg(long)]
    pub set_assignee: Option<String>,
    /// Repeat for several.
    #[arg(long)]
    pub add_tag: Vec<String>,
    #[arg(long)]
    pub no_acknowledgement: bool,
    /// Journal only: no ticket, no answer.
    #[arg(long)]
    pub ignore: bool,
    /// No ticket; the sender gets the rejection template.
    #[arg(long)]
    pub reject: bool,
    /// Send a copy (the original attached) to this address.
    #[arg(long)]
    pub forward: Option<String>,
    /// No later rule applies.
    #[arg(long)]
    pub stop: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    Add(Box<RuleAdd>),
    /// Every rule, in the order they apply.
    List {
        #[arg(long)]
        json: bool,
    },
    Remove {
        id: i64,
    },
    /// Which rules match a journaled mail and what they would do; changes nothing.
    Test {
        /// The journal id (`mailrobot messages list`).
        #[arg(long)]
        message: i64,
        #[arg(long)]
        json: bool,
    },
}

/// Which template: kind, mailbox, language.
#[derive(Debug, Args)]
pub struct TemplateKeyArgs {
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(["acknowledgement", "notification", "reply", "rejection"]))]
    pub kind: String,
    /// Only for this mailbox (default: every mailbox).
    #[arg(long)]
    pub mailbox: Option<String>,
    /// A language tag such as de or en-gb (default: any language).
    #[arg(long, default_value = "")]
    pub language: String,
}

#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// Stored templates, and which kinds use the built-in one.
    List {
        #[arg(long)]
        json: bool,
    },
    /// The template that applies, and its preview with sample values.
    Show {
        #[command(flatten)]
        key: TemplateKeyArgs,
        #[arg(long)]
        json: bool,
    },
    /// Store a template (checked by rendering it with sample values first).
    Set {
        #[command(flatten)]
        key: TemplateKeyArgs,
        #[arg(long, required_unless_present = "reset")]
        subject: Option<String>,
        /// The plain-text part; `-` reads standard input.
        #[arg(long, required_unless_present = "reset")]
        text_file: Option<std::path::PathBuf>,
        /// An HTML part (optional).
        #[arg(long)]
        html_file: Option<std::path::PathBuf>,
        /// Remove the stored template: the built-in one applies again.
        #[arg(long, conflicts_with_all = ["subject", "text_file", "html_file"])]
        reset: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ContactsCommand {
    List {
        #[arg(long)]
        json: bool,
    },
    /// Add a contact (or update the name and organisation of a known one).
    Add {
        email: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        organisation: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// A contact and the tickets they requested.
    Show {
        email: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum MessagesCommand {
    List {
        #[arg(long)]
        json: bool,
        #[arg(long)]
        state: Option<mailrobot_store::JournalState>,
        #[arg(long)]
        mailbox: Option<String>,
    },
    /// Put failed mails back in the queue; the next pass processes them again.
    Retry {
        #[arg(long)]
        mailbox: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SettingsCommand {
    Show,
    /// Keys: ticket.prefix (default "TKT-"), ticket.digits (default 6),
    /// answer.per_sender (1), answer.sender_window_minutes (10),
    /// answer.per_ticket_per_day (10).
    Set {
        key: String,
        value: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ProviderArg {
    Microsoft365,
    Oauth2,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Register an app registration's credentials. The client secret comes
    /// from an environment variable or stdin, never the command line.
    Add(Box<TenantAdd>),
    /// Change a tenant: the flags given replace those settings, the rest
    /// stay (an empty URL goes back to the default).
    Set(Box<TenantSet>),
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct TenantSet {
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub client_id: Option<String>,
    #[arg(long)]
    pub tenant: Option<String>,
    /// Name of the environment variable holding a new client secret.
    #[arg(long)]
    pub client_secret_env: Option<String>,
    #[arg(long)]
    pub client_secret_stdin: bool,
    #[arg(long)]
    pub secret_expires: Option<String>,
    #[arg(long)]
    pub certificate_file: Option<PathBuf>,
    #[arg(long)]
    pub authority_url: Option<String>,
    #[arg(long)]
    pub graph_url: Option<String>,
    #[arg(long)]
    pub ews_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct TenantAdd {
    #[arg(long)]
    pub name: String,
    #[arg(long, value_enum, default_value_t = ProviderArg::Microsoft365)]
    pub provider: ProviderArg,
    /// Application (client) ID of the app registration.
    #[arg(long)]
    pub client_id: String,
    /// Directory (tenant) ID, a GUID or a domain (Microsoft 365).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Name of the environment variable holding the client secret.
    #[arg(long)]
    pub client_secret_env: Option<String>,
    /// Read the client secret from the first line of standard input.
    #[arg(long)]
    pub client_secret_stdin: bool,
    /// When the client secret expires (YYYY-MM-DD): the robot warns 30 days before.
    #[arg(long)]
    pub secret_expires: Option<String>,
    /// PEM file with the app's certificate and RSA private key, used instead of a secret.
    #[arg(long)]
    pub certificate_file: Option<PathBuf>,
    /// Sign-in host without tenant (default https://login.microsoftonline.com).
    #[arg(long)]
    pub authority_url: Option<String>,
    /// Graph host without version (default https://graph.microsoft.com).
    #[arg(long)]
    pub graph_url: Option<String>,
    /// Full EWS URL (default https://outlook.office365.com/EWS/Exchange.asmx).
    #[arg(long)]
    pub ews_url: Option<String>,
    /// Generic OAuth2: the authorize endpoint.
    #[arg(long)]
    pub authorize_url: Option<String>,
    /// Generic OAuth2: the token endpoint.
    #[arg(long)]
    pub token_url: Option<String>,
    /// Allow http:// URLs to hosts other than this machine: the client
    /// secret and tokens would travel unencrypted. Refused otherwise.
    #[arg(long)]
    pub allow_plaintext: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConnectionCommand {
    Add {
        #[arg(long)]
        name: String,
        #[arg(long)]
        tenant: String,
        /// graph (Exchange / Microsoft Graph), ews (Exchange / Office 365), imap, pop or smtp
        #[arg(long)]
        capability: mailrobot_store::Capability,
        /// delegated (Setup Authentication by a person) or application (client credentials)
        #[arg(long)]
        mode: mailrobot_store::Mode,
        /// Scopes instead of the capability's defaults (repeat the flag).
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
    /// Start Setup Authentication: prints the URL to open; `serve` receives the redirect.
    Authorize {
        name: String,
        #[arg(long, env = "MAILROBOT_PUBLIC_URL")]
        public_url: Option<String>,
        /// Pre-fill the sign-in name.
        #[arg(long)]
        login_hint: Option<String>,
    },
    /// Get a token now and show the connection's state. For an smtp
    /// connection, also log in to the SMTP server with it (nothing is sent).
    Test {
        name: String,
        #[arg(long)]
        json: bool,
        /// smtp connections: the server, host[:port] (default smtp.office365.com:587).
        #[arg(long)]
        smtp_server: Option<String>,
        /// smtp connections: how the SMTP connection is protected.
        #[arg(long, value_enum, default_value_t = TlsArg::Starttls)]
        smtp_tls: TlsArg,
        /// smtp connections: the mailbox that logs in and sends (default: the
        /// user who ran Setup Authentication; required in application mode).
        #[arg(long)]
        address: Option<String>,
    },
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SmtpCommand {
    /// Connect, secure, log in and quit: checks an SMTP server and its
    /// credentials without sending anything.
    Test(SmtpTest),
}

#[derive(Debug, Args)]
pub struct SmtpTest {
    /// host[:port]; the port defaults to 587 (starttls), 465 (tls) or 25 (none).
    #[arg(long)]
    pub server: String,
    #[arg(long, value_enum, default_value_t = TlsArg::Starttls)]
    pub tls: TlsArg,
    /// Password login: the user name (AUTH PLAIN, or LOGIN).
    #[arg(long)]
    pub username: Option<String>,
    /// The environment variable holding the password (never the password itself).
    #[arg(long)]
    pub password_env: Option<String>,
    /// OAuth login (SASL XOAUTH2) with this service connection's tokens.
    #[arg(long)]
    pub connection: Option<String>,
    /// With --connection: the mailbox that logs in (default: the user who ran
    /// Setup Authentication).
    #[arg(long)]
    pub address: Option<String>,
    /// Extra trusted CA certificates (PEM) for a private or self-signed server certificate.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Allow the login to travel unencrypted (--tls none) to a host other
    /// than this machine. Refused otherwise.
    #[arg(long)]
    pub allow_plaintext: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// How many stored secrets each master key sealed.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Re-seal every stored secret with the current master key (the new one in
    /// MAILROBOT_MASTER_KEY or the key file; the old one in
    /// MAILROBOT_PREVIOUS_MASTER_KEYS). All or nothing.
    Reseal {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// Every node seen (newest first): id, host, started, last heartbeat, mailboxes held.
    List {
        #[arg(long)]
        json: bool,
    },
}
