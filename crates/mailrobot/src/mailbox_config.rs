//! Typed mailbox settings (stored as JSON beside the mailbox) and the source
//! each kind opens.

use std::path::PathBuf;
use std::time::Duration;

use mailrobot_secrets::SecretBox;
use std::sync::Arc;

use mailrobot_sources::{
    BearerTokens, Credentials, DropFolderSource, EwsAuth, EwsConfig, EwsSource, GraphConfig, GraphSource,
    GraphSubscriber, ImapConfig, ImapSource, MailSource, PasswordScheme, Pop3Config, Pop3Source, SettleAction,
    SourceError, TlsMode,
};
use mailrobot_store::{Mailbox, MailboxKind, Mode};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum MailboxConfig {
    Imap(ImapSettings),
    Pop3(Pop3Settings),
    DropFolder(DropFolderSettings),
    Graph(GraphSettings),
    Ews(EwsSettings),
}

/// Exchange Web Services: through a service connection (OAuth), or with a
/// username and password (Exchange Server on-premises, NTLM or Basic).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EwsSettings {
    /// The connection's name and mode (`delegated`/`application`), if OAuth.
    pub connection: Option<String>,
    pub mode: Option<Mode>,
    /// For password logins; OAuth mailboxes use their tenant's EWS URL.
    pub url: Option<String>,
    pub username: Option<String>,
    /// For password logins: auto, basic or ntlm. Absent in settings stored
    /// before NTLM came, read as auto.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_scheme: Option<PasswordScheme>,
    pub address: String,
    pub folder: String,
    pub processed_folder: String,
    pub error_folder: String,
    pub settle: SettleAction,
    /// The password may go to a non-loopback `http://` URL (`--allow-plaintext`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_plaintext: bool,
}

fn is_false(b: &bool) -> bool {
    !b
}

/// How an IMAP or POP3 mailbox logs in.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LoginMethod {
    #[default]
    Password,
    /// SASL XOAUTH2 with the service connection's access token.
    Oauth,
}

/// Exchange / Microsoft Graph through a service connection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GraphSettings {
    /// The connection's name when the mailbox was added (the mailbox row
    /// holds its id).
    pub connection: String,
    pub address: String,
    pub folder: String,
    pub processed_folder: String,
    pub error_folder: String,
    pub settle: SettleAction,
}

impl GraphSettings {
    /// The Graph client's settings: the connection's tokens and Graph URL.
    fn client_config(&self, mailbox: &Mailbox, ctx: &OpenContext<'_>) -> Result<GraphConfig, SourceError> {
        let (tokens, base_url) = ctx
            .tokens
            .clone()
            .ok_or_else(|| SourceError::permanent(format!("mailbox {} has no service connection", mailbox.name)))?;
        Ok(GraphConfig {
            base_url,
            address: self.address.clone(),
            folder: self.folder.clone(),
            processed_folder: self.processed_folder.clone(),
            error_folder: self.error_folder.clone(),
            settle: self.settle,
            tokens,
            timeout: NETWORK_TIMEOUT,
            delta_link: ctx.sync_state.clone(),
            max_message_bytes: Some(max_message_bytes(mailbox)),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImapSettings {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub username: String,
    #[serde(default)]
    pub auth: LoginMethod,
    pub folder: String,
    pub processed_folder: String,
    pub error_folder: String,
    pub settle: SettleAction,
    /// The password or token may go without TLS to another machine (`--allow-plaintext`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_plaintext: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Pop3Settings {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub username: String,
    #[serde(default)]
    pub auth: LoginMethod,
    pub keep_on_server: bool,
    /// The password or token may go without TLS to another machine (`--allow-plaintext`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_plaintext: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DropFolderSettings {
    pub path: PathBuf,
}

/// What opening a mailbox may need besides its settings.
pub struct OpenContext<'a> {
    pub sealed_secret: Option<&'a [u8]>,
    pub secrets: &'a SecretBox,
    /// Bearer tokens of the mailbox's service connection, and the service's
    /// base URL (Graph host, or EWS URL).
    pub tokens: Option<(Arc<dyn BearerTokens>, String)>,
    /// The app's client id when the connection is in application mode
    /// (IMAP/POP3 XOAUTH2 then logs in to the mailbox as the app).
    pub app_id: Option<String>,
    /// Where an incremental source stopped last time.
    pub sync_state: Option<String>,
}

/// A mailbox's stored password, opened; it lives as long as the login that
/// needs it.
fn stored_password(name: &str, sealed: Option<&[u8]>, secrets: &SecretBox) -> Result<String, SourceError> {
    let sealed = sealed.ok_or_else(|| {
        SourceError::permanent(format!("mailbox {name} has no password stored; add it again with --password-env"))
    })?;
    let password =
        secrets.open_str(sealed, &secret_context(name)).map_err(|e| SourceError::permanent(e.to_string()))?;
    Ok(password.expose().to_string())
}

impl EwsSettings {
    /// The EWS client's settings: the connection's tokens (app-only ones
    /// impersonate the mailbox), or the stored password for the mailbox's
    /// own URL.
    fn client_config(&self, mailbox: &Mailbox, ctx: &OpenContext<'_>) -> Result<EwsConfig, SourceError> {
        let (auth, url) = match (&self.connection, ctx.tokens.clone()) {
            (Some(_), Some((tokens, url))) => match self.mode {
                Some(Mode::Application) => (EwsAuth::Application(tokens), url),
                _ => (EwsAuth::Delegated(tokens), url),
            },
            (Some(_), None) => {
                return Err(SourceError::permanent(format!("mailbox {} has no service connection", mailbox.name)));
            }
            (None, _) => {
                let username = self.username.clone().unwrap_or_default();
                let password = stored_password(&mailbox.name, ctx.sealed_secret, ctx.secrets)?;
                let url = self.url.clone().ok_or_else(|| SourceError::permanent("an EWS mailbox needs --ews-url"))?;
                let scheme = self.password_scheme.unwrap_or_default();
                (EwsAuth::Password { username, password, scheme }, url)
            }
        };
        Ok(EwsConfig {
            url,
            address: self.address.clone(),
            folder: self.folder.clone(),
            processed_folder: self.processed_folder.clone(),
            error_folder: self.error_folder.clone(),
            settle: self.settle,
            auth,
            timeout: NETWORK_TIMEOUT,
            sync_state: ctx.sync_state.clone(),
            max_message_bytes: max_message_bytes(mailbox),
        })
    }
}

/// The context a mailbox's password is sealed for.
pub fn secret_context(mailbox_name: &str) -> String {
    format!("mailbox:{mailbox_name}:password")
}

/// The sealing context of the password of a mailbox's SMTP reply transport.
pub fn reply_secret_context(mailbox_name: &str) -> String {
    format!("mailbox:{mailbox_name}:reply-password")
}

/// The mailbox's size limit in bytes.
fn max_message_bytes(mailbox: &Mailbox) -> u64 {
    u64::try_from(mailbox.max_message_bytes).unwrap_or(0)
}

/// How long one network step may take before the poll gives up.
const NETWORK_TIMEOUT: Duration = Duration::from_secs(60);

impl MailboxConfig {
    pub fn from_mailbox(mailbox: &Mailbox) -> Result<Self, SourceError> {
        let mut value = mailbox.config.clone();
        if let Some(obj) = value.as_object_mut() {
            obj.insert("kind".into(), mailbox.kind.as_str().into());
        }
        serde_json::from_value(value).map_err(|e| {
            SourceError::permanent(format!(
                "mailbox {} has unreadable settings ({e}); remove and add it again",
                mailbox.name
            ))
        })
    }

    /// The JSON stored in the mailbox row (the kind lives in its own column).
    pub fn to_stored_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).expect("mailbox settings serialize");
        if let Some(obj) = value.as_object_mut() {
            obj.remove("kind");
        }
        value
    }

    pub fn kind(&self) -> MailboxKind {
        match self {
            MailboxConfig::Imap(_) => MailboxKind::Imap,
            MailboxConfig::Pop3(_) => MailboxKind::Pop3,
            MailboxConfig::DropFolder(_) => MailboxKind::DropFolder,
            MailboxConfig::Graph(_) => MailboxKind::Graph,
            MailboxConfig::Ews(_) => MailboxKind::Ews,
        }
    }

    /// Refuses settings that would send a password or token unencrypted to
    /// another machine, unless the mailbox allows it. Checked when the
    /// mailbox is added and again before every connect. (Mailboxes behind a
    /// service connection are checked against their tenant's URLs.)
    pub fn check_plaintext(&self) -> Result<(), SourceError> {
        use mailrobot_sources::plaintext::{check_host, check_url};
        match self {
            MailboxConfig::Imap(s) => check_host(&s.host, s.tls != TlsMode::None, "the IMAP login", s.allow_plaintext),
            MailboxConfig::Pop3(s) => check_host(&s.host, s.tls != TlsMode::None, "the POP3 login", s.allow_plaintext),
            MailboxConfig::Ews(EwsSettings { url: Some(url), connection: None, allow_plaintext, .. }) => {
                check_url(url, "the EWS password (Basic or NTLM)", *allow_plaintext)
            }
            MailboxConfig::Ews(_) | MailboxConfig::Graph(_) | MailboxConfig::DropFolder(_) => Ok(()),
        }
    }

    /// An EWS mailbox's client, asking the server nothing (no folder is
    /// looked up): what sends its mail (`--reply-via ews`).
    pub fn ews_client(&self, mailbox: &Mailbox, ctx: OpenContext<'_>) -> Result<EwsSource, SourceError> {
        match self {
            MailboxConfig::Ews(s) => EwsSource::client(s.client_config(mailbox, &ctx)?),
            _ => Err(SourceError::permanent(format!("mailbox {} is not an EWS mailbox", mailbox.name))),
        }
    }

    /// A Graph mailbox's change-notification subscriber, with the tokens a
    /// poll of it uses, asking the server nothing.
    pub fn graph_subscriber(&self, mailbox: &Mailbox, ctx: OpenContext<'_>) -> Result<GraphSubscriber, SourceError> {
        match self {
            MailboxConfig::Graph(s) => GraphSubscriber::new(s.client_config(mailbox, &ctx)?),
            _ => Err(SourceError::permanent(format!("mailbox {} is not a Graph mailbox", mailbox.name))),
        }
    }

    /// Connects to the mailbox. The password is opened from its sealed form
    /// here and lives only as long as the connection setup needs it.
    pub async fn open(&self, mailbox: &Mailbox, ctx: OpenContext<'_>) -> Result<Box<dyn MailSource>, SourceError> {
        let (sealed_secret, secrets) = (ctx.sealed_secret, ctx.secrets);
        // The login for IMAP/POP3: the stored password, or a fresh token.
        let credentials = |username: &str, method: LoginMethod| {
            let username = username.to_string();
            let tokens = ctx.tokens.as_ref().map(|(t, _)| t.clone());
            let sealed = sealed_secret.map(<[u8]>::to_vec);
            let name = mailbox.name.clone();
            let app_id = ctx.app_id.clone();
            async move {
                match method {
                    LoginMethod::Oauth => {
                        let tokens = tokens.ok_or_else(|| {
                            SourceError::permanent(format!(
                                "mailbox {name} logs in with OAuth but has no service connection"
                            ))
                        })?;
                        Ok::<_, SourceError>(Credentials::XOAuth2 {
                            username,
                            access_token: tokens.token(false).await?,
                            app_id,
                        })
                    }
                    LoginMethod::Password => Ok(Credentials::Password {
                        username,
                        password: stored_password(&name, sealed.as_deref(), secrets)?,
                    }),
                }
            }
        };
        // XOAUTH2 sessions opened later in the pass ask for a current token.
        let token_source = |method: LoginMethod| match method {
            LoginMethod::Oauth => ctx.tokens.as_ref().map(|(t, _)| t.clone()),
            LoginMethod::Password => None,
        };
        Ok(match self {
            MailboxConfig::Imap(s) => Box::new(
                ImapSource::connect(ImapConfig {
                    host: s.host.clone(),
                    port: s.port,
                    tls: s.tls,
                    credentials: credentials(&s.username, s.auth).await?,
                    tokens: token_source(s.auth),
                    folder: s.folder.clone(),
                    processed_folder: s.processed_folder.clone(),
                    error_folder: s.error_folder.clone(),
                    settle: s.settle,
                    extra_ca_file: None,
                    timeout: NETWORK_TIMEOUT,
                    max_message_bytes: max_message_bytes(mailbox),
                })
                .await?,
            ),
            MailboxConfig::Pop3(s) => Box::new(
                Pop3Source::connect(Pop3Config {
                    host: s.host.clone(),
                    port: s.port,
                    tls: s.tls,
                    credentials: credentials(&s.username, s.auth).await?,
                    tokens: token_source(s.auth),
                    keep_on_server: s.keep_on_server,
                    extra_ca_file: None,
                    timeout: NETWORK_TIMEOUT,
                    max_message_bytes: max_message_bytes(mailbox),
                })
                .await?,
            ),
            MailboxConfig::DropFolder(s) => {
                Box::new(DropFolderSource::open(s.path.clone())?.with_max_message_bytes(max_message_bytes(mailbox)))
            }
            MailboxConfig::Ews(s) => Box::new(EwsSource::connect(s.client_config(mailbox, &ctx)?).await?),
            MailboxConfig::Graph(s) => Box::new(GraphSource::connect(s.client_config(mailbox, &ctx)?).await?),
        })
    }
}
