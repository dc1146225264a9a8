//! What every command needs: the data directory, the store and the secret box.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use mailrobot_auth::TokenBroker;
use mailrobot_core::TagFormat;
use mailrobot_secrets::SecretBox;
use mailrobot_store::{
    AdminStore, AuthStore, Capability, DirectoryStore, LeaseStore, Mode, OutboxStore, PgStore, ProcessingRules,
    SealedStore, ServiceScopes, SqliteStore, Store,
};

use crate::pipeline::{BatchLimits, Pipeline};

pub const DB_FILE: &str = "mailrobot.db";
pub const SETTING_TICKET_PREFIX: &str = "ticket.prefix";
pub const SETTING_TICKET_DIGITS: &str = "ticket.digits";
/// Automatic mails to one sender within the window (default 1).
pub const SETTING_ANSWER_PER_SENDER: &str = "answer.per_sender";
pub const SETTING_ANSWER_SENDER_WINDOW: &str = "answer.sender_window_minutes";
/// Automatic mails on one ticket per day (default 10).
pub const SETTING_ANSWER_PER_TICKET: &str = "answer.per_ticket_per_day";
/// The settings that are whole numbers, with their bounds.
pub const NUMBER_SETTINGS: &[(&str, u32, u32)] = &[
    (SETTING_ANSWER_PER_SENDER, 0, 1000),
    (SETTING_ANSWER_SENDER_WINDOW, 1, 10_080),
    (SETTING_ANSWER_PER_TICKET, 0, 1000),
];

#[derive(Clone)]
pub struct App {
    pub data_dir: PathBuf,
    pub store: Arc<dyn Store>,
    /// The same database, seen through its service-connection side.
    pub auth_store: Arc<dyn AuthStore>,
    /// The same database, seen as the sealed values it holds (key rotation).
    pub sealed_store: Arc<dyn SealedStore>,
    /// The same database: administrators of the web UI and their sessions.
    pub admin_store: Arc<dyn AdminStore>,
    /// The same database: webhooks and the outbox of their deliveries.
    pub outbox: Arc<dyn OutboxStore>,
    /// The same database: rules, mail templates and contacts.
    pub directory: Arc<dyn DirectoryStore>,
    /// The same database: nodes and the leases of the mailboxes they poll.
    pub leases: Arc<dyn LeaseStore>,
    pub secrets: Arc<SecretBox>,
    /// How far each running poll of this process has got (the dashboard's).
    pub progress: Arc<mailrobot_views::progress::SyncProgress>,
    broker_cell: std::sync::OnceLock<Arc<TokenBroker>>,
}

/// The built-in default scopes of every Microsoft 365 capability and mode.
pub fn builtin_service_scopes() -> Vec<ServiceScopes> {
    Capability::ALL
        .iter()
        .flat_map(|c| [Mode::Delegated, Mode::Application].map(|m| (*c, m)))
        .map(|(capability, mode)| ServiceScopes {
            capability,
            mode,
            scopes: mailrobot_auth::model::default_scopes(capability, mode),
        })
        .collect()
}

/// The setting holding a value sealed with the master key of the first node
/// that opened a shared database.
const SETTING_KEY_CHECK: &str = "secrets.key_check";
const KEY_CHECK_CONTEXT: &str = "mailrobot key check";

/// Nodes sharing a database must share one master key, or each could not
/// open what the others sealed: the first node seals a known value, every
/// later one must open it.
pub(crate) fn check_master_key(store: &dyn Store, secrets: &SecretBox) -> anyhow::Result<()> {
    match store.setting(SETTING_KEY_CHECK)? {
        None => {
            let sealed = secrets.seal(KEY_CHECK_CONTEXT.as_bytes(), KEY_CHECK_CONTEXT);
            store.set_setting(SETTING_KEY_CHECK, &hex::encode(sealed))?;
            Ok(())
        }
        Some(stored) => {
            let sealed = hex::decode(stored.trim()).unwrap_or_default();
            match secrets.open(&sealed, KEY_CHECK_CONTEXT) {
                // Opened with a previous key during a key rotation: sealed
                // again under the current one, so the old key can go.
                Ok(_) if secrets.needs_reseal(&sealed) => {
                    let sealed = secrets.seal(KEY_CHECK_CONTEXT.as_bytes(), KEY_CHECK_CONTEXT);
                    store.set_setting(SETTING_KEY_CHECK, &hex::encode(sealed))?;
                    Ok(())
                }
                Ok(_) => Ok(()),
                Err(_) => anyhow::bail!(
                    "this node's master key cannot open the secrets of the shared database: give every node the \
                     same {} (the key of the node that first used this database{})",
                    mailrobot_secrets::MASTER_KEY_ENV,
                    SecretBox::key_id_of(&sealed).map(|id| format!(", key id {id}")).unwrap_or_default()
                ),
            }
        }
    }
}

/// Stores the built-in defaults the database lacks (a write only when some
/// are missing: every command opens the store).
fn seed_service_scopes(store: &dyn AuthStore) -> anyhow::Result<()> {
    let defaults = builtin_service_scopes();
    if store.service_scopes()?.len() < defaults.len() {
        store.seed_service_scopes(&defaults)?;
    }
    Ok(())
}

impl App {
    /// Opens the data directory and the database: the SQLite file in the
    /// data directory, or the PostgreSQL database at `database_url` — then,
    /// with `key_check`, refuses a master key other than the one the shared
    /// database's first node used.
    pub fn open(data_dir: &Path, database_url: Option<&str>, key_check: bool) -> anyhow::Result<Self> {
        crate::data_dir::secure(data_dir)?;
        let secrets = SecretBox::load(data_dir)?;
        match database_url {
            None => {
                crate::data_dir::prepare_database_file(&data_dir.join(DB_FILE))?;
                let sqlite = Arc::new(SqliteStore::open(&data_dir.join(DB_FILE))?);
                Self::with_store(data_dir, sqlite, secrets)
            }
            Some(url) => {
                tracing::debug!(database = %mailrobot_store::redacted_url(url), "opening PostgreSQL");
                let pg = Arc::new(PgStore::connect_with_sessions(url, database_sessions()?)?);
                match check_master_key(pg.as_ref(), &secrets) {
                    Ok(()) => {}
                    Err(err) if key_check => return Err(err),
                    // `secrets` commands go on (they diagnose keys
                    // themselves); the check value was resealed if it could be.
                    Err(err) => tracing::debug!(error = %err, "master key check skipped"),
                }
                Self::with_store(data_dir, pg, secrets)
            }
        }
    }

    fn with_store<S>(data_dir: &Path, store: Arc<S>, secrets: SecretBox) -> anyhow::Result<Self>
    where
        S: Store + AuthStore + AdminStore + OutboxStore + DirectoryStore + SealedStore + LeaseStore + 'static,
    {
        seed_service_scopes(store.as_ref())?;
        Ok(Self {
            data_dir: data_dir.to_path_buf(),
            store: store.clone() as Arc<dyn Store>,
            auth_store: store.clone() as Arc<dyn AuthStore>,
            admin_store: store.clone() as Arc<dyn AdminStore>,
            outbox: store.clone() as Arc<dyn OutboxStore>,
            directory: store.clone() as Arc<dyn DirectoryStore>,
            leases: store.clone() as Arc<dyn LeaseStore>,
            sealed_store: store as Arc<dyn SealedStore>,
            secrets: Arc::new(secrets),
            progress: Arc::default(),
            broker_cell: std::sync::OnceLock::new(),
        })
    }

    /// The token broker, made on first use (commands that never need a
    /// token never build an HTTP client).
    pub fn broker(&self) -> anyhow::Result<Arc<TokenBroker>> {
        if let Some(broker) = self.broker_cell.get() {
            return Ok(broker.clone());
        }
        let broker = Arc::new(TokenBroker::new(self.auth_store.clone(), self.secrets.clone())?);
        Ok(self.broker_cell.get_or_init(|| broker).clone())
    }

    /// The loop protection's limits, from the settings.
    pub fn answer_limits(&self) -> anyhow::Result<mailrobot_core::AnswerLimits> {
        let mut limits = mailrobot_core::AnswerLimits::default();
        let read = |key: &str, default: u32| -> anyhow::Result<u32> {
            match self.store.setting(key)? {
                Some(v) => v.parse().with_context(|| format!("setting {key} is not a number: {v:?}")),
                None => Ok(default),
            }
        };
        limits.per_sender = read(SETTING_ANSWER_PER_SENDER, limits.per_sender)?;
        limits.sender_window_minutes = read(SETTING_ANSWER_SENDER_WINDOW, limits.sender_window_minutes)?;
        limits.per_ticket_per_day = read(SETTING_ANSWER_PER_TICKET, limits.per_ticket_per_day)?;
        Ok(limits)
    }

    pub fn tag_format(&self) -> anyhow::Result<TagFormat> {
        let default = TagFormat::default();
        let prefix = self.store.setting(SETTING_TICKET_PREFIX)?.unwrap_or(default.prefix);
        let digits = match self.store.setting(SETTING_TICKET_DIGITS)? {
            Some(d) => d.parse().with_context(|| format!("setting {SETTING_TICKET_DIGITS} is not a number: {d:?}"))?,
            None => default.digits,
        };
        Ok(TagFormat { prefix, digits })
    }

    pub fn pipeline(&self) -> anyhow::Result<Pipeline> {
        Ok(Pipeline {
            store: self.store.clone(),
            secrets: self.secrets.clone(),
            rules: ProcessingRules { tag: self.tag_format()?, answer_limits: self.answer_limits()? },
            broker: Some(self.broker()?),
            limits: batch_limits()?,
            progress: self.progress.clone(),
            poll_permits: Arc::new(tokio::sync::Semaphore::new(poll_concurrency()?)),
            mail_in_memory: crate::mail_in_memory::MailInMemory::from_env()?,
            graph_push: None,
        })
    }
}

/// `MAILROBOT_DATABASE_SESSIONS`: PostgreSQL sessions a process opens at
/// most (default 4, at least 2).
pub const DATABASE_SESSIONS_ENV: &str = "MAILROBOT_DATABASE_SESSIONS";

fn database_sessions() -> anyhow::Result<u32> {
    use mailrobot_store::{DEFAULT_PG_SESSIONS, MIN_PG_SESSIONS};
    match std::env::var(DATABASE_SESSIONS_ENV) {
        Ok(value) => value.parse().ok().filter(|n: &u32| *n >= MIN_PG_SESSIONS).with_context(|| {
            format!(
                "{DATABASE_SESSIONS_ENV} must be a number of sessions, at least {MIN_PG_SESSIONS} \
                 (one for the node's writer, one for the rest), got {value:?}"
            )
        }),
        Err(_) => Ok(DEFAULT_PG_SESSIONS),
    }
}

/// `MAILROBOT_POLL_CONCURRENCY`: polls running at once (default 32).
pub const POLL_CONCURRENCY_ENV: &str = "MAILROBOT_POLL_CONCURRENCY";

fn poll_concurrency() -> anyhow::Result<usize> {
    match std::env::var(POLL_CONCURRENCY_ENV) {
        Ok(value) => value
            .parse()
            .ok()
            .filter(|n: &usize| *n > 0)
            .with_context(|| format!("{POLL_CONCURRENCY_ENV} must be a positive number, got {value:?}")),
        Err(_) => Ok(32),
    }
}

/// Batch size: `MAILROBOT_BATCH_MAILS` (default 1,000 mails per commit).
/// Smaller batches lose less work to a crash; larger ones fsync less often.
pub const BATCH_ENV: &str = "MAILROBOT_BATCH_MAILS";

fn batch_limits() -> anyhow::Result<BatchLimits> {
    let mut limits = BatchLimits::default();
    if let Ok(value) = std::env::var(BATCH_ENV) {
        limits.max_mails = value
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .with_context(|| format!("{BATCH_ENV} must be a positive number, got {value:?}"))?;
    }
    Ok(limits)
}
