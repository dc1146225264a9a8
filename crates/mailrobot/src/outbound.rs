//! Mail the robot sends: each mailbox's reply transport (`mailbox set NAME
//! --reply-via smtp …`), and the [`MailTransport`] the outbox engine sends
//! through.

use std::sync::Arc;

use anyhow::{anyhow, bail};
use mailrobot_outbox::{MailTransport, SendFailure};
use mailrobot_sources::TlsMode;
use mailrobot_sources::smtp::{SmtpLogin, SmtpSession};
use serde_json::{Value, json};

use crate::app::App;
use crate::mailbox_config::reply_secret_context;

/// `MAILROBOT_OUTBOX_LEASE_SECS`: how long a row claimed by a process that
/// died waits before another process takes it (default 120).
pub const LEASE_ENV: &str = "MAILROBOT_OUTBOX_LEASE_SECS";

/// The outbox engine's settings for this process.
pub fn engine_config(public_url: &str, tag: mailrobot_core::TagFormat) -> mailrobot_outbox::EngineConfig {
    let mut config = mailrobot_outbox::EngineConfig::new(public_url, tag);
    if let Some(secs) = std::env::var(LEASE_ENV).ok().and_then(|v| v.parse::<u64>().ok()).filter(|s| *s > 0) {
        config.lease = std::time::Duration::from_secs(secs);
    }
    config
}

/// How a mailbox sends (`reply` in its settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplyVia {
    /// Nothing is sent (the default until the operator chooses).
    None,
    Smtp,
    /// Microsoft Graph sendMail through the mailbox's connection.
    Graph,
    /// EWS CreateItem (SendAndSaveCopy) through an EWS mailbox's own
    /// endpoint and login.
    Ews,
}

/// What `mailbox set` was given about the reply transport.
#[derive(Debug, Clone, Default)]
pub struct ReplySettings {
    pub via: Option<ReplyVia>,
    pub smtp_server: Option<String>,
    pub smtp_tls: Option<crate::cli::TlsArg>,
    pub smtp_username: Option<String>,
    /// The password read from --smtp-password-env.
    pub smtp_password: Option<mailrobot_secrets::Secret>,
    pub smtp_connection: Option<String>,
    pub from: Option<String>,
    /// Where answers to what it sends should go (empty: none).
    pub reply_to: Option<String>,
}

impl ReplySettings {
    pub fn is_empty(&self) -> bool {
        self.via.is_none()
            && self.smtp_server.is_none()
            && self.smtp_tls.is_none()
            && self.smtp_username.is_none()
            && self.smtp_password.is_none()
            && self.smtp_connection.is_none()
            && self.from.is_none()
            && self.reply_to.is_none()
    }
}

fn tls_word(tls: crate::cli::TlsArg) -> &'static str {
    match tls {
        crate::cli::TlsArg::None => "none",
        crate::cli::TlsArg::Starttls => "starttls",
        crate::cli::TlsArg::Tls => "tls",
    }
}

/// Applies `given` to the mailbox's `reply` settings (what is not given
/// stays) and checks the result; returns the new config and the sealed
/// password to store, if one was given.
pub fn apply(
    app: &App,
    m: &mailrobot_store::Mailbox,
    given: &ReplySettings,
) -> anyhow::Result<(Value, Option<Vec<u8>>)> {
    let mut config = m.config.clone();
    let mut reply = config.get("reply").cloned().unwrap_or_else(|| json!({"via": "none"}));
    let set = |reply: &mut Value, key: &str, value: Option<String>| {
        if let Some(value) = value {
            reply[key] = Value::String(value);
        }
    };
    if let Some(via) = given.via {
        reply["via"] = json!(match via {
            ReplyVia::None => "none",
            ReplyVia::Smtp => "smtp",
            ReplyVia::Graph => "graph",
            ReplyVia::Ews => "ews",
        });
    }
    set(&mut reply, "server", given.smtp_server.clone());
    set(&mut reply, "tls", given.smtp_tls.map(|t| tls_word(t).to_string()));
    set(&mut reply, "username", given.smtp_username.clone());
    set(&mut reply, "connection", given.smtp_connection.clone());
    set(&mut reply, "from", given.from.clone());
    match given.reply_to.as_deref().map(str::trim) {
        Some("") => {
            reply.as_object_mut().map(|r| r.remove("reply_to"));
        }
        Some(address) if !address.contains('@') || address.contains(['\r', '\n']) => {
            bail!("--reply-to takes an address, not {address:?}")
        }
        Some(address) => reply["reply_to"] = Value::String(address.to_string()),
        None => {}
    }
    if given.smtp_password.is_some() {
        reply.as_object_mut().map(|r| r.remove("connection"));
    }
    if given.smtp_connection.is_some() {
        reply.as_object_mut().map(|r| r.remove("username"));
    }
    let text = |key: &str| reply.get(key).and_then(|v| v.as_str()).map(str::to_string);
    match text("via").as_deref() {
        Some("smtp") => {
            let server = text("server").ok_or_else(|| anyhow!("--reply-via smtp needs --smtp-server H[:P]"))?;
            let tls = tls_mode(text("tls").as_deref());
            crate::commands_smtp::parse_server(&server, tls)?;
            // Neither a user nor a connection: an anonymous relay (a
            // connector that trusts the robot's address).
            if let Some(connection) = text("connection") {
                crate::commands_auth::find_connection(app.auth_store.as_ref(), &connection)?;
            } else if text("username").is_some()
                && given.smtp_password.is_none()
                && app.outbox.mailbox_reply_secret(m.id)?.is_none()
            {
                bail!("--smtp-username needs its password: --smtp-password-env VAR");
            }
        }
        Some("graph") if m.kind != mailrobot_store::MailboxKind::Graph || m.connection_id.is_none() => bail!(
            "--reply-via graph sends through a Microsoft Graph mailbox's own connection; mailbox {} is {}: \
             use --reply-via smtp",
            m.name,
            m.kind
        ),
        Some("ews") if m.kind != mailrobot_store::MailboxKind::Ews => bail!(
            "--reply-via ews sends through an EWS mailbox's own endpoint and login; mailbox {} is {}: use \
             --reply-via smtp{}",
            m.name,
            m.kind,
            if m.kind == mailrobot_store::MailboxKind::Graph { " or --reply-via graph" } else { "" }
        ),
        _ => {}
    }
    config["reply"] = reply;
    if matches!(text_of(&config, "via").as_deref(), Some("smtp" | "graph" | "ews")) && reply_from(&config).is_none() {
        bail!("the mailbox has no address to send from: give --from ADDR");
    }
    let sealed = given.smtp_password.as_ref().map(|p| app.secrets.seal_str(p, &reply_secret_context(&m.name)));
    Ok((config, sealed))
}

/// The Reply-To a mailbox puts on what it sends (`--reply-to`), if any.
fn reply_to_of(config: &Value) -> Option<String> {
    text_of(config, "reply_to")
}

fn text_of(config: &Value, key: &str) -> Option<String> {
    config.get("reply").and_then(|r| r.get(key)).and_then(|v| v.as_str()).map(str::to_string)
}

/// The address a mailbox sends from (the store reads it the same way).
fn reply_from(config: &Value) -> Option<String> {
    let text = |v: Option<&Value>| v.and_then(|v| v.as_str()).map(str::to_string);
    text(config.pointer("/reply/from"))
        .or_else(|| text(config.get("address")))
        .or_else(|| text(config.get("username")).filter(|u| u.contains('@')))
}

fn tls_mode(word: Option<&str>) -> TlsMode {
    match word {
        Some("tls") => TlsMode::Tls,
        Some("none") => TlsMode::None,
        _ => TlsMode::StartTls,
    }
}

pub use mailrobot_web::ops::ReplyFile;

/// A content type from a file name (what mail clients go by).
pub fn content_type_of(filename: &str) -> &'static str {
    match filename.rsplit_once('.').map(|(_, ext)| ext.to_ascii_lowercase()).as_deref() {
        Some("pdf") => "application/pdf",
        Some("txt" | "log") => "text/plain",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("csv") => "text/csv",
        Some("zip") => "application/zip",
        Some("docx") => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        Some("xlsx") => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        _ => "application/octet-stream",
    }
}

/// Queues an agent's reply to the ticket `number`: to its requester, from
/// the mailbox it came in through, threaded under its latest mail. The
/// outbound mail, as `outbox list` shows it.
pub fn queue_reply(
    app: &App,
    number: &str,
    text: &str,
    files: Vec<ReplyFile>,
) -> anyhow::Result<mailrobot_views::OutboxMailJson> {
    use mailrobot_core::{OutgoingAttachment, OutgoingKind};
    let tag = app.tag_format()?;
    let id = tag
        .parse_number(number)
        .and_then(|n| i64::try_from(n).ok())
        .ok_or_else(|| anyhow!("{number:?} is not a ticket number like {}", tag.number(123)))?;
    let ticket = app.store.ticket(id)?.ok_or_else(|| anyhow!("no ticket {number}"))?;
    if text.trim().is_empty() {
        bail!("a reply needs a text");
    }
    let to = ticket.summary.requester.clone().ok_or_else(|| anyhow!("ticket {number} has no requester to answer"))?;
    let (mailbox_id, from) = app.outbox.ticket_mailbox(id)?.ok_or_else(|| anyhow!("ticket {number} has no mailbox"))?;
    let mailbox = app.store.mailbox(mailbox_id)?;
    let from = from.ok_or_else(|| {
        anyhow!(
            "mailbox {} sends no mail: choose how with `mailrobot mailbox set {} --reply-via smtp …`",
            mailbox.name,
            mailbox.name
        )
    })?;
    let vars = ticket_vars(&tag, &ticket.summary, &mailbox, &from, text);
    let rendered = render_template(app, OutgoingKind::Reply, &mailbox, &vars)?;
    let mut mail = ticket_mail(OutgoingKind::Reply, &ticket, &mailbox, from, to, rendered);
    mail.attachments = files
        .iter()
        .map(|f| OutgoingAttachment {
            filename: f.filename.clone(),
            content_type: f.content_type.clone(),
            sha256: String::new(),
            size: f.bytes.len() as u64,
        })
        .collect();
    let bytes: Vec<Vec<u8>> = files.into_iter().map(|f| f.bytes).collect();
    let row = app.outbox.queue_reply(&mail, &bytes)?;
    tracing::info!(ticket = %tag.number(id as u64), mail = row, "reply queued");
    let view = app.outbox.mails()?.into_iter().find(|m| m.id == row).ok_or_else(|| anyhow!("the reply vanished"))?;
    Ok(mailrobot_views::OutboxMailJson::of(&view, &tag))
}

/// A mail to a ticket's requester that a person caused (an agent's reply, a
/// status notification): from the ticket's mailbox, threaded under the
/// ticket's latest mail, with a Message-ID of its own.
fn ticket_mail(
    kind: mailrobot_core::OutgoingKind,
    ticket: &mailrobot_store::TicketDetail,
    mailbox: &mailrobot_store::Mailbox,
    from: String,
    to: String,
    rendered: mailrobot_core::templates::Rendered,
) -> mailrobot_core::OutgoingMail {
    let id = ticket.summary.id;
    let domain = from.rsplit_once('@').map_or("mailrobot.invalid", |(_, d)| d).to_string();
    let unique: u64 = rand::random();
    let references: Vec<String> = ticket.entries.iter().filter_map(|e| e.message_id.clone()).collect();
    mailrobot_core::OutgoingMail {
        kind,
        mailbox_id: mailbox.id,
        ticket: Some(id as u64),
        journal_id: 0,
        from,
        to,
        subject: rendered.subject,
        message_id: format!("mailrobot.{}.{id}.{unique:016x}@{domain}", kind.as_str()),
        in_reply_to: references.last().cloned(),
        references,
        text: rendered.text,
        html: rendered.html,
        reply_to: reply_to_of(&mailbox.config),
        attachments: Vec::new(),
    }
}

/// Sets ticket `id`'s status; when it changed, the requester is told (a
/// `notification`, queued in the same transaction) if the ticket's mailbox
/// sends mail. False: no such ticket.
pub fn set_status(app: &App, id: i64, status: mailrobot_store::TicketStatus) -> anyhow::Result<bool> {
    use mailrobot_core::OutgoingKind;
    let Some(ticket) = app.store.ticket(id)? else { return Ok(false) };
    let notification = match (ticket.summary.requester.clone(), app.outbox.ticket_mailbox(id)?) {
        (Some(to), Some((mailbox_id, Some(from)))) if ticket.summary.status != status => {
            let tag = app.tag_format()?;
            let mailbox = app.store.mailbox(mailbox_id)?;
            let mut summary = ticket.summary.clone();
            summary.status = status;
            let vars = ticket_vars(&tag, &summary, &mailbox, &from, "");
            let rendered = render_template(app, OutgoingKind::Notification, &mailbox, &vars)?;
            Some(ticket_mail(OutgoingKind::Notification, &ticket, &mailbox, from, to, rendered))
        }
        _ => None,
    };
    let found = app.outbox.set_status_notifying(id, status, notification.as_ref())?;
    if let Some(n) = &notification {
        tracing::info!(ticket = id, %status, to = %n.to, "status changed; requester notified");
    }
    Ok(found)
}

/// The variables templates see for a mail about `ticket` (an agent's reply
/// or a notification): `text` is what the agent wrote.
pub fn ticket_vars(
    tag: &mailrobot_core::TagFormat,
    ticket: &mailrobot_store::TicketSummary,
    mailbox: &mailrobot_store::Mailbox,
    from: &str,
    text: &str,
) -> Value {
    let number = ticket.id as u64;
    json!({
        "ticket": {
            "number": tag.number(number), "tag": tag.tag(number), "subject": ticket.subject,
            "status": ticket.status.as_str(),
        },
        "entry": {"subject": ticket.subject, "text": text, "from": from},
        "requester": {"email": ticket.requester, "name": ticket.requester_name},
        "mailbox": {"name": mailbox.name, "address": from},
    })
}

/// Renders the mailbox's template of `kind` (in its language, if it names
/// one), else the built-in one. A stored template that fails is reported.
pub fn render_template(
    app: &App,
    kind: mailrobot_core::OutgoingKind,
    mailbox: &mailrobot_store::Mailbox,
    vars: &Value,
) -> anyhow::Result<mailrobot_core::templates::Rendered> {
    let stored: Vec<mailrobot_core::StoredTemplate> = app
        .directory
        .templates()?
        .into_iter()
        .map(|t| mailrobot_core::StoredTemplate {
            kind: t.kind,
            mailbox_id: t.mailbox_id,
            language: t.language,
            template: t.template,
        })
        .collect();
    let languages: Vec<String> =
        mailbox.config.get("language").and_then(|l| l.as_str()).map(str::to_string).into_iter().collect();
    let (rendered, error) = mailrobot_core::templates::render_best(&stored, kind, mailbox.id, &languages, vars);
    if let Some(error) = error {
        tracing::warn!(mailbox = %mailbox.name, %kind, %error, "a stored template failed; the built-in one was used");
    }
    Ok(rendered)
}

/// What `mailbox test` says about the mailbox's reply transport, before the
/// first send: an SMTP login (nothing sent), for Graph whether the
/// connection was granted a send permission, for EWS a GetFolder of the
/// mailbox's Sent Items with its credentials (nothing sent; Send As shows
/// only in a send). None: it sends no mail.
pub async fn check_reply(app: &App, m: &mailrobot_store::Mailbox) -> Option<Value> {
    match text_of(&m.config, "via").as_deref() {
        Some("smtp") => {
            let cfg = match smtp_config(app, m.id) {
                Ok(cfg) => cfg,
                Err(e) => return Some(json!({"via": "smtp", "ok": false, "error": format!("{e:#}")})),
            };
            Some(match mailrobot_sources::smtp::check(&cfg).await {
                Ok(info) => {
                    json!({"via": "smtp", "ok": true, "server": cfg.endpoint(), "authenticated_as": info.authenticated_as})
                }
                Err(e) => json!({"via": "smtp", "ok": false, "server": cfg.endpoint(), "error": e.to_string()}),
            })
        }
        Some("graph") => {
            let connection = m.connection_id.and_then(|id| app.auth_store.connection(id).ok().flatten());
            let Some(c) = connection else {
                return Some(json!({"via": "graph", "ok": false, "error": "the mailbox has no connection"}));
            };
            if c.mode == mailrobot_store::Mode::Application {
                // An app-only token says nothing documented about its roles:
                // only a send shows a missing permission.
                return Some(json!({
                    "via": "graph", "checked": false,
                    "needs": "Mail.Send (application permission, with admin consent)",
                }));
            }
            let granted = c.granted_scopes.clone().unwrap_or_default();
            let ok = granted.split_whitespace().any(|s| s.ends_with("/Mail.Send") || s.ends_with("/Mail.Send.Shared"));
            let mut value = json!({"via": "graph", "ok": ok, "granted_scopes": granted});
            if !ok {
                value["error"] = json!(
                    "the connection was not granted Mail.Send.Shared (a shared mailbox) or Mail.Send: add it to the \
                     connection's scopes and run Setup Authentication again"
                );
            }
            Some(value)
        }
        Some("ews") => Some(check_ews(app, m).await),
        _ => None,
    }
}

/// The SMTP session settings of a mailbox's `--reply-via smtp`.
fn smtp_config(app: &App, mailbox_id: i64) -> anyhow::Result<mailrobot_sources::smtp::SmtpConfig> {
    Ok(smtp_config_and_key(app, mailbox_id)?.0)
}

/// The SMTP session settings, and the pool key of a session logged in with
/// them: every reply setting and a hash of the sealed password, so a
/// changed server, security, login or password never reuses a session.
fn smtp_config_and_key(app: &App, mailbox_id: i64) -> anyhow::Result<(mailrobot_sources::smtp::SmtpConfig, String)> {
    use std::hash::{Hash, Hasher};
    let m = app.store.mailbox(mailbox_id)?;
    let sealed = app.outbox.mailbox_reply_secret(m.id)?;
    // The sealed bytes change with every new password (a fresh nonce): a
    // hash of them tells sessions apart without keeping the secret here.
    let mut digest = std::collections::hash_map::DefaultHasher::new();
    sealed.hash(&mut digest);
    let key = format!(
        "{mailbox_id}|{}|{:016x}",
        m.config.get("reply").map(|r| r.to_string()).unwrap_or_default(),
        digest.finish()
    );
    let text = |key: &str| text_of(&m.config, key);
    if text("via").as_deref() != Some("smtp") {
        bail!("mailbox {} no longer sends mail (--reply-via)", m.name);
    }
    let server = text("server").ok_or_else(|| anyhow!("mailbox {} has no --smtp-server", m.name))?;
    let tls = tls_mode(text("tls").as_deref());
    let login = match (text("connection"), text("username")) {
        (Some(connection), _) => {
            let c = crate::commands_auth::find_connection(app.auth_store.as_ref(), &connection)?;
            let from = reply_from(&m.config).unwrap_or_default();
            SmtpLogin::XOAuth2 {
                username: from,
                tokens: crate::commands_smtp::connection_tokens(app, &c)?,
                app_id: crate::commands_smtp::app_only_client_id(app, &c)?,
            }
        }
        (None, Some(username)) => {
            let sealed =
                sealed.ok_or_else(|| anyhow!("mailbox {} has no SMTP password: --smtp-password-env", m.name))?;
            let password = app.secrets.open_str(&sealed, &reply_secret_context(&m.name))?;
            SmtpLogin::Password { username, password: password.expose().to_string() }
        }
        (None, None) => SmtpLogin::Anonymous,
    };
    Ok((crate::commands_smtp::config(&server, tls, login, None)?, key))
}

/// `mailbox test` for `--reply-via ews`: the client that sends, signed in,
/// finds the mailbox's Sent Items. An app-only connection impersonates the
/// mailbox and so sends as it; a delegate (connection or password) also
/// needs Send As, which only a send shows.
async fn check_ews(app: &App, m: &mailrobot_store::Mailbox) -> Value {
    let checked = async {
        let client = app.pipeline()?.ews_client(m).await?;
        client.check_sent_items().await?;
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = checked {
        return json!({"via": "ews", "ok": false, "error": format!("{e:#}")});
    }
    use crate::mailbox_config::{EwsSettings, MailboxConfig};
    let app_only = matches!(
        MailboxConfig::from_mailbox(m),
        Ok(MailboxConfig::Ews(EwsSettings { connection: Some(_), mode: Some(mailrobot_store::Mode::Application), .. }))
    );
    let mut value = json!({"via": "ews", "ok": true, "checked": "signed in and found its Sent Items (nothing sent)"});
    if !app_only {
        value["needs"] = json!(
            "Send As on the mailbox for the account signing in, unless it is that account's own (shows only when \
             sending)"
        );
    }
    value
}

/// Sends through each mailbox's reply transport; SMTP sessions are kept
/// open between mails ([`SmtpPool`]).
pub struct RobotMail {
    pub app: App,
    pool: SmtpPool,
}

/// Logged-in SMTP sessions waiting for their next mail, per mailbox and
/// login: a session is taken for one mail and put back after it, so the
/// engine's concurrent senders each hold one. One that idled too long is
/// closed; one that idled more than a second is asked NOOP first.
#[derive(Default)]
struct SmtpPool {
    /// Per key: (session, when it was opened, when it was put back).
    #[allow(clippy::type_complexity)]
    idle: std::sync::Mutex<std::collections::HashMap<String, Vec<(SmtpSession, Instant, Instant)>>>,
}

use std::time::Instant;

/// How long a pooled session may idle (servers close idle ones after a
/// minute or more; NOOP catches those that do sooner).
const SMTP_IDLE: std::time::Duration = std::time::Duration::from_secs(30);
/// A session put back this recently is used without a NOOP first.
const SMTP_FRESH: std::time::Duration = std::time::Duration::from_secs(1);
/// A session is closed after this long however busy it is (a server's
/// changed certificate or policy is met again by a new login).
const SMTP_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(300);
/// Sessions kept per mailbox and login.
const SMTP_POOL_PER_KEY: usize = 16;

impl SmtpPool {
    /// A pooled session, when it was opened, and how long it idled.
    fn take(&self, key: &str) -> Option<(SmtpSession, Instant, std::time::Duration)> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let sessions = idle.get_mut(key)?;
        while let Some((session, opened, since)) = sessions.pop() {
            if since.elapsed() < SMTP_IDLE && opened.elapsed() < SMTP_MAX_AGE {
                return Some((session, opened, since.elapsed()));
            }
            // Too old: dropped (closing the connection) rather than used.
        }
        None
    }

    fn put(&self, key: String, session: SmtpSession, opened: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let sessions = idle.entry(key).or_default();
        sessions.retain(|(_, _, since)| since.elapsed() < SMTP_IDLE);
        if sessions.len() < SMTP_POOL_PER_KEY && opened.elapsed() < SMTP_MAX_AGE {
            sessions.push((session, opened, Instant::now()));
        }
    }
}

impl RobotMail {
    pub fn transport(app: &App) -> Arc<dyn MailTransport> {
        Arc::new(Self { app: app.clone(), pool: SmtpPool::default() })
    }

    /// A logged-in session for `cfg`: a pooled one that still answers, else
    /// a new one.
    async fn session(
        &self,
        key: &str,
        cfg: mailrobot_sources::smtp::SmtpConfig,
    ) -> Result<(SmtpSession, Instant), mailrobot_sources::SourceError> {
        while let Some((mut session, opened, idled)) = self.pool.take(key) {
            // Back from the previous mail a moment ago: no need to ask.
            if idled < SMTP_FRESH || session.is_alive().await {
                return Ok((session, opened));
            }
        }
        Ok((SmtpSession::connect(cfg).await?, Instant::now()))
    }
}

impl RobotMail {
    /// Microsoft Graph `sendMail` as the mailbox, with its connection's tokens.
    async fn send_by_graph(&self, m: &mailrobot_store::Mailbox, message: &[u8]) -> Result<(), SendFailure> {
        let permanent = |text: String| SendFailure { transient: false, text };
        let failure =
            |e: mailrobot_sources::SourceError| SendFailure { transient: e.is_transient(), text: e.to_string() };
        let connection_id =
            m.connection_id.ok_or_else(|| permanent(format!("mailbox {} has no connection", m.name)))?;
        let broker = self.app.broker().map_err(|e| permanent(format!("{e:#}")))?;
        let urls = broker.service_urls(connection_id).await.map_err(|e| permanent(e.to_string()))?;
        mailrobot_sources::plaintext::check_url(&urls.graph, "the connection's access token", urls.allow_plaintext)
            .map_err(failure)?;
        let address = m.config.get("address").and_then(|a| a.as_str()).unwrap_or_default().to_string();
        let tokens = Arc::new(crate::pipeline::ConnectionTokens { broker, connection_id });
        let client = mailrobot_sources::graph::GraphClient::new(mailrobot_sources::GraphConfig {
            base_url: urls.graph,
            address,
            folder: "inbox".into(),
            processed_folder: String::new(),
            error_folder: String::new(),
            settle: mailrobot_sources::SettleAction::MarkRead,
            tokens,
            timeout: std::time::Duration::from_secs(60),
            delta_link: None,
            max_message_bytes: None,
        })
        .map_err(failure)?;
        let sent = client.send_mime(message).await.map_err(failure);
        if sent.is_ok() {
            crate::crash::point("after-mail-sent");
        }
        sent
    }
}

impl RobotMail {
    /// EWS CreateItem as the mailbox, through the client a poll of it uses.
    async fn send_by_ews(&self, m: &mailrobot_store::Mailbox, message: &[u8]) -> Result<(), SendFailure> {
        let pipeline = self.app.pipeline().map_err(|e| SendFailure { transient: false, text: format!("{e:#}") })?;
        let client = pipeline
            .ews_client(m)
            .await
            .map_err(|e| SendFailure { transient: e.is_transient(), text: e.to_string() })?;
        let sent = client
            .send_mime(message)
            .await
            .map_err(|e| SendFailure { transient: e.is_transient(), text: e.to_string() });
        if sent.is_ok() {
            crate::crash::point("after-mail-sent");
        }
        sent
    }
}

#[async_trait::async_trait]
impl MailTransport for RobotMail {
    async fn send(&self, mailbox_id: i64, from: &str, to: &str, message: &[u8]) -> Result<(), SendFailure> {
        let permanent = |text: String| SendFailure { transient: false, text };
        let m = self.app.store.mailbox(mailbox_id).map_err(|e| permanent(e.to_string()))?;
        match text_of(&m.config, "via").as_deref() {
            Some("graph") => return self.send_by_graph(&m, message).await,
            Some("ews") => return self.send_by_ews(&m, message).await,
            _ => {}
        }
        let (cfg, key) = smtp_config_and_key(&self.app, mailbox_id)
            .map_err(|e| SendFailure { transient: false, text: format!("{e:#}") })?;
        let failure =
            |e: mailrobot_sources::SourceError| SendFailure { transient: e.is_transient(), text: e.to_string() };
        let (mut session, opened) = self.session(&key, cfg).await.map_err(failure)?;
        let sent = session.send(from, &[to], message).await;
        if sent.is_ok() {
            // The window a crash can resend in: sent, not yet recorded.
            crate::crash::point("after-mail-sent");
            self.pool.put(key, session, opened);
        }
        // After any failure the session is closed, not pooled: a timeout or
        // a late answer would leave its replies out of step with the next
        // mail's commands.
        sent.map_err(failure)
    }
}
