//! The CLI's commands, printing for people or (`--json`) for programs.

use std::io::{BufRead, IsTerminal};

use anyhow::{Context, anyhow, bail};
use mailrobot_core::TagFormat;
use mailrobot_secrets::Secret;
use mailrobot_sources::{PasswordScheme, SettleAction, TlsMode};
use mailrobot_store::{
    Capability, JournalState, Mailbox, MailboxKind, MessageFilter, MessageKind, NewMailbox, Store, TicketSummary,
};
use serde_json::Value;

use crate::app::{App, SETTING_TICKET_DIGITS, SETTING_TICKET_PREFIX};
use crate::cli::*;
use crate::mailbox_config::*;

pub fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).expect("JSON values serialize"));
}

fn read_password(add: &MailboxAdd) -> anyhow::Result<Option<Secret>> {
    read_secret(&add.name, add.password_env.as_deref(), add.password_stdin)
}

/// A mailbox password from the variable named `env` or the first line of stdin.
fn read_secret(mailbox: &str, env: Option<&str>, stdin: bool) -> anyhow::Result<Option<Secret>> {
    if let Some(var) = env {
        let value = std::env::var(var)
            .map_err(|_| anyhow!("environment variable {var} (named by --password-env) is not set or not UTF-8"))?;
        if value.is_empty() {
            bail!("environment variable {var} is empty; put the mailbox password in it");
        }
        return Ok(Some(Secret::new(value)));
    }
    if stdin {
        if std::io::stdin().is_terminal() {
            crate::esay!("Password for mailbox {mailbox} (one line):");
        }
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("cannot read the password from stdin")?;
        let value = line.trim_end_matches(['\r', '\n']).to_string();
        if value.is_empty() {
            bail!("no password on stdin");
        }
        return Ok(Some(Secret::new(value)));
    }
    Ok(None)
}

fn tls_mode(tls: TlsArg) -> TlsMode {
    match tls {
        TlsArg::None => TlsMode::None,
        TlsArg::Starttls => TlsMode::StartTls,
        TlsArg::Tls => TlsMode::Tls,
    }
}

pub fn mailbox_add(app: &App, add: &MailboxAdd) -> anyhow::Result<Mailbox> {
    mailbox_add_with_password(app, add, read_password(add)?)
}

/// Adds a mailbox whose password (if any) the caller already holds (the
/// admin UI's form); `add.password_env`/`password_stdin` are not read here.
/// Names the admin UI's addresses would take for a page of their own
/// (`/mailboxes/new` is the form for a new one), so no thing may be called so.
pub const RESERVED_NAMES: &[&str] = &["new"];

/// Refuses an empty or reserved name for a new `what`.
pub fn check_new_name(what: &str, name: &str) -> anyhow::Result<()> {
    if name.trim().is_empty() {
        bail!("a {what} needs a name");
    }
    if RESERVED_NAMES.iter().any(|r| name.trim().eq_ignore_ascii_case(r)) {
        bail!("{name:?} is kept for the admin UI's own pages; give the {what} another name");
    }
    Ok(())
}

pub fn mailbox_add_with_password(app: &App, add: &MailboxAdd, password: Option<Secret>) -> anyhow::Result<Mailbox> {
    check_new_name("mailbox", &add.name)?;
    let need = |value: &Option<String>, flag: &str| {
        value.clone().filter(|v| !v.trim().is_empty()).ok_or_else(|| anyhow!("--kind {:?} needs {flag}", add.kind))
    };
    let default_port =
        |plain: u16, implicit_tls: u16| add.port.unwrap_or(if add.tls == TlsArg::Tls { implicit_tls } else { plain });
    let settle = match add.settle {
        SettleArg::Move => SettleAction::Move,
        SettleArg::MarkRead => SettleAction::MarkRead,
        SettleArg::Delete => SettleAction::Delete,
    };
    if add.ews_auth.is_some() && add.kind != MailboxKind::Ews {
        bail!("--ews-auth is for --kind ews");
    }
    let mut connection_id = None;
    let config = match add.kind {
        MailboxKind::Imap => MailboxConfig::Imap(ImapSettings {
            host: need(&add.host, "--host")?,
            port: default_port(143, 993),
            tls: tls_mode(add.tls),
            username: need(&add.username, "--username")?,
            auth: login_method(app, add, Capability::Imap, &mut connection_id)?,
            folder: add.folder.clone(),
            processed_folder: add.processed_folder.clone(),
            error_folder: add.error_folder.clone(),
            settle,
            allow_plaintext: add.allow_plaintext,
        }),
        MailboxKind::Pop3 => MailboxConfig::Pop3(Pop3Settings {
            host: need(&add.host, "--host")?,
            port: default_port(110, 995),
            tls: tls_mode(add.tls),
            username: need(&add.username, "--username")?,
            auth: login_method(app, add, Capability::Pop, &mut connection_id)?,
            keep_on_server: add.keep_on_server,
            allow_plaintext: add.allow_plaintext,
        }),
        MailboxKind::DropFolder => {
            let path = add.path.clone().ok_or_else(|| anyhow!("--kind drop-folder needs --path DIR"))?;
            let path = std::path::absolute(&path).with_context(|| format!("bad path {}", path.display()))?;
            MailboxConfig::DropFolder(DropFolderSettings { path })
        }
        MailboxKind::Ews => {
            let address = need(&add.address, "--address")?;
            let folder = if add.folder == "INBOX" { "inbox".to_string() } else { add.folder.clone() };
            let (connection, mode, url, username) = match &add.connection {
                Some(_) if add.ews_auth.is_some() => {
                    bail!("--ews-auth is for password logins (--ews-url, --username); --connection logs in with OAuth")
                }
                Some(name) => {
                    let c = app
                        .auth_store
                        .connection_by_name(name)?
                        .ok_or_else(|| anyhow!("no connection named {name:?}"))?;
                    if c.capability != Capability::Ews {
                        bail!("connection {name} is for {}, not ews (Exchange / Office 365)", c.capability);
                    }
                    connection_id = Some(c.id);
                    let tenant_url = app.auth_store.tenant(c.tenant_id)?.and_then(|t| t.ews_url);
                    let effective = tenant_url.unwrap_or_else(|| mailrobot_auth::model::DEFAULT_EWS.to_string());
                    if mailrobot_sources::ews::is_exchange_online(&effective) {
                        crate::esay!("warning: {}", mailrobot_sources::ews::EXCHANGE_ONLINE_WARNING);
                    }
                    (Some(name.clone()), Some(c.mode), None, None)
                }
                None => {
                    let url = need(&add.ews_url, "--ews-url (or --connection)")?;
                    (None, None, Some(url), Some(need(&add.username, "--username")?))
                }
            };
            if let Some(url) = &url
                && mailrobot_sources::ews::is_exchange_online(url)
            {
                crate::esay!("warning: {}", mailrobot_sources::ews::EXCHANGE_ONLINE_WARNING);
            }
            let password_scheme = username.is_some().then(|| match add.ews_auth.unwrap_or(EwsAuthArg::Auto) {
                EwsAuthArg::Auto => PasswordScheme::Auto,
                EwsAuthArg::Basic => PasswordScheme::Basic,
                EwsAuthArg::Ntlm => PasswordScheme::Ntlm,
            });
            MailboxConfig::Ews(EwsSettings {
                connection,
                mode,
                url,
                username,
                password_scheme,
                address,
                folder,
                processed_folder: add.processed_folder.clone(),
                error_folder: add.error_folder.clone(),
                settle,
                allow_plaintext: add.allow_plaintext,
            })
        }
        MailboxKind::Graph => {
            let name = need(&add.connection, "--connection")?;
            let connection = app
                .auth_store
                .connection_by_name(&name)?
                .ok_or_else(|| anyhow!("no connection named {name:?}; `mailrobot connection list` shows them"))?;
            if connection.capability != Capability::Graph {
                bail!("connection {name} is for {}, not graph (Exchange / Microsoft Graph)", connection.capability);
            }
            connection_id = Some(connection.id);
            if settle == SettleAction::MarkRead {
                eprintln!("warning: {}", mailrobot_sources::graph::MARK_READ_WARNING);
            }
            MailboxConfig::Graph(GraphSettings {
                connection: name,
                address: need(&add.address, "--address")?,
                // Graph names the inbox by its well-known name.
                folder: if add.folder == "INBOX" { "inbox".into() } else { add.folder.clone() },
                processed_folder: add.processed_folder.clone(),
                error_folder: add.error_folder.clone(),
                settle,
            })
        }
    };
    // Before anything is read or stored: no credential goes out in clear
    // to another machine unless the operator said so.
    config.check_plaintext().map_err(|e| anyhow!("{e}"))?;
    // Folder names, user names and addresses go into protocol lines.
    if let Some(settings) = config.to_stored_json().as_object() {
        for (key, value) in settings {
            if let Some(text) = value.as_str() {
                mailrobot_sources::error::refuse_line_breaks(text, &key.replace('_', " "))
                    .map_err(|e| anyhow!("{e}"))?;
            }
        }
    }
    let needs_password = match &config {
        MailboxConfig::Imap(_) | MailboxConfig::Pop3(_) => add.auth == AuthArg::Password,
        MailboxConfig::Ews(s) => s.connection.is_none(),
        _ => false,
    };
    if needs_password && password.is_none() {
        bail!(
            "--kind {} needs a password: --password-env VAR (the variable holding it) or --password-stdin",
            config.kind()
        );
    }
    if add.poll_seconds < 1 {
        bail!("--poll-seconds must be at least 1");
    }
    if let MailboxConfig::DropFolder(s) = &config {
        // Create the folder layout now so writers can start dropping files.
        mailrobot_sources::DropFolderSource::open(s.path.clone())
            .map_err(|e| anyhow!("cannot prepare the drop folder {}: {e}", s.path.display()))?;
    }
    let sealed_secret = password.map(|p| app.secrets.seal_str(&p, &secret_context(&add.name)));
    let mailbox = app.store.add_mailbox(&NewMailbox {
        name: add.name.clone(),
        kind: config.kind(),
        config: config.to_stored_json(),
        sealed_secret,
        connection_id,
        poll_seconds: add.poll_seconds,
        max_message_bytes: add.max_message_mb.max(1) << 20,
    })?;
    if add.disabled {
        app.store.set_mailbox_enabled(mailbox.id, false)?;
    }
    Ok(app.store.mailbox(mailbox.id)?)
}

/// `--auth oauth` binds the mailbox to a connection for `capability`.
fn login_method(
    app: &App,
    add: &MailboxAdd,
    capability: Capability,
    connection_id: &mut Option<i64>,
) -> anyhow::Result<LoginMethod> {
    if add.auth == AuthArg::Password {
        return Ok(LoginMethod::Password);
    }
    let name = add.connection.clone().ok_or_else(|| anyhow!("--auth oauth needs --connection NAME"))?;
    let connection = app
        .auth_store
        .connection_by_name(&name)?
        .ok_or_else(|| anyhow!("no connection named {name:?}; `mailrobot connection list` shows them"))?;
    if connection.capability != capability {
        bail!("connection {name} is for {}, not {capability}", connection.capability);
    }
    *connection_id = Some(connection.id);
    Ok(LoginMethod::Oauth)
}

/// Changes a mailbox: `set`'s fields given replace those settings; a
/// password given replaces the stored one. Checked as `mailbox add` checks.
pub fn mailbox_update(app: &App, set: &MailboxSet, password: Option<Secret>) -> anyhow::Result<Mailbox> {
    let m = find_mailbox(app.store.as_ref(), &set.name)?;
    let mut config = m.config.clone();
    let settings = config.as_object_mut().ok_or_else(|| anyhow!("mailbox {} has unreadable settings", m.name))?;
    let settle = set.settle.map(|s| match s {
        SettleArg::Move => "move",
        SettleArg::MarkRead => "mark-read",
        SettleArg::Delete => "delete",
    });
    for (key, flag, value) in [
        ("folder", "--folder", set.folder.as_deref()),
        ("processed_folder", "--processed-folder", set.processed_folder.as_deref()),
        ("error_folder", "--error-folder", set.error_folder.as_deref()),
        ("settle", "--settle", settle),
    ] {
        let Some(value) = value else { continue };
        if !settings.contains_key(key) {
            bail!("{flag} does not apply to a {} mailbox", m.kind);
        }
        if value.trim().is_empty() {
            bail!("{flag} cannot be empty");
        }
        mailrobot_sources::error::refuse_line_breaks(value, flag).map_err(|e| anyhow!("{e}"))?;
        settings.insert(key.to_string(), value.trim().into());
    }
    if let Some(policy) = &set.unknown_senders {
        let policy: mailrobot_core::UnknownSenders = policy.parse().map_err(|e: String| anyhow!("{e}"))?;
        settings.insert("unknown_senders".into(), policy.as_str().into());
    }
    if let Some(language) = &set.language {
        let language = language.trim().to_ascii_lowercase();
        if !language.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') || language.len() > 35 {
            bail!("--language takes a language tag such as de or en-gb, not {language:?}");
        }
        if language.is_empty() {
            settings.remove("language");
        } else {
            settings.insert("language".into(), language.into());
        }
    }
    let poll_seconds = set.poll_seconds.unwrap_or(m.poll_seconds);
    if poll_seconds < 1 {
        bail!("--poll-seconds must be at least 1");
    }
    let max_message_bytes = set.max_message_mb.map_or(m.max_message_bytes, |mb| mb.max(1) << 20);
    if password.is_some() && !m.has_secret {
        bail!("mailbox {} logs in without a password (a connection or a drop folder)", m.name);
    }
    // The settings must still read as this kind's.
    let check = Mailbox { config: config.clone(), ..m.clone() };
    MailboxConfig::from_mailbox(&check).map_err(|e| anyhow!("{e}"))?;
    let sealed_secret = password.map(|p| app.secrets.seal_str(&p, &secret_context(&m.name)));
    Ok(app.store.update_mailbox(
        m.id,
        &mailrobot_store::MailboxUpdate { config, poll_seconds, max_message_bytes, sealed_secret },
    )?)
}

/// `mailbox set` on the command line.
pub fn mailbox_set(app: &App, set: &MailboxSet) -> anyhow::Result<Mailbox> {
    let password = read_secret(&set.name, set.password_env.as_deref(), set.password_stdin)?;
    let smtp_password = match &set.smtp_password_env {
        Some(var) => Some(Secret::new(std::env::var(var).map_err(|_| {
            anyhow!("environment variable {var} (named by --smtp-password-env) is not set or not UTF-8")
        })?)),
        None => None,
    };
    let reply = crate::outbound::ReplySettings {
        via: set.reply_via,
        smtp_server: set.smtp_server.clone(),
        smtp_tls: set.smtp_tls,
        smtp_username: set.smtp_username.clone(),
        smtp_password,
        smtp_connection: set.smtp_connection.clone(),
        from: set.from.clone(),
        reply_to: set.reply_to.clone(),
    };
    let m = mailbox_update(app, set, password)?;
    apply_reply(app, m, &reply)
}

/// Applies what was given about a mailbox's reply transport (nothing when
/// nothing was) and stores it, the SMTP password sealed.
pub fn apply_reply(app: &App, m: Mailbox, reply: &crate::outbound::ReplySettings) -> anyhow::Result<Mailbox> {
    if reply.is_empty() {
        return Ok(m);
    }
    let (config, sealed) = crate::outbound::apply(app, &m, reply)?;
    let update = mailrobot_store::MailboxUpdate {
        config,
        poll_seconds: m.poll_seconds,
        max_message_bytes: m.max_message_bytes,
        sealed_secret: None,
    };
    let m = app.store.update_mailbox(m.id, &update)?;
    if let Some(sealed) = sealed {
        app.outbox.set_mailbox_reply_secret(m.id, Some(&sealed))?;
    }
    Ok(m)
}

/// `tickets reply NUMBER --body-file F [--attach FILE …]`.
pub fn tickets_reply(
    app: &App,
    number: &str,
    body_file: &std::path::Path,
    attachments: &[std::path::PathBuf],
    json_out: bool,
) -> anyhow::Result<()> {
    let text = if body_file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
        text
    } else {
        std::fs::read_to_string(body_file).with_context(|| format!("cannot read {}", body_file.display()))?
    };
    let mut files = Vec::new();
    for path in attachments {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let filename = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "file".into());
        let content_type = crate::outbound::content_type_of(&filename).to_string();
        files.push(crate::outbound::ReplyFile { filename, content_type, bytes });
    }
    let queued = crate::outbound::queue_reply(app, number, &text, files)?;
    if json_out {
        print_json(&serde_json::to_value(&queued)?);
    } else {
        crate::say!(
            "Reply to {} queued (outbox {}); `mailrobot serve` sends it, or the next `run-once`.",
            queued.to.as_deref().unwrap_or("-"),
            queued.id
        );
    }
    Ok(())
}

/// `outbox list` and `outbox resend`.
pub fn outbox_command(app: &App, command: &OutboxCommand) -> anyhow::Result<()> {
    match command {
        OutboxCommand::List { json } => {
            let tag = app.tag_format()?;
            let views: Vec<mailrobot_views::OutboxMailJson> =
                app.outbox.mails()?.iter().map(|m| mailrobot_views::OutboxMailJson::of(m, &tag)).collect();
            if *json {
                print_json(&serde_json::to_value(&views)?);
            } else {
                for m in &views {
                    crate::say!(
                        "{:<6} {:<11} {:<16} {:<7} {:<32} {}",
                        m.id,
                        m.ticket.as_deref().unwrap_or("-"),
                        m.kind.as_deref().unwrap_or("-"),
                        m.state,
                        m.to.as_deref().unwrap_or("-"),
                        m.last_error.as_deref().unwrap_or("")
                    );
                }
            }
        }
        OutboxCommand::Resend { id } => {
            if !app.outbox.resend_mail(*id)? {
                bail!("no outbound mail {id}; `mailrobot outbox list` shows them");
            }
            crate::say!("Mail {id} queued again; `mailrobot serve` (or the next `run-once`) sends it.");
        }
    }
    Ok(())
}

pub fn mailbox_json(m: &Mailbox) -> Value {
    serde_json::to_value(mailrobot_web::json::MailboxJson::of(m)).expect("views serialize")
}

pub fn mailbox_list(app: &App, json_out: bool) -> anyhow::Result<()> {
    let mailboxes = app.store.mailboxes()?;
    if json_out {
        print_json(&Value::Array(mailboxes.iter().map(mailbox_json).collect()));
        return Ok(());
    }
    if mailboxes.is_empty() {
        crate::say!("No mailboxes. Add one with `mailrobot mailbox add`.");
    }
    for m in &mailboxes {
        let state = if m.enabled { m.status.as_str() } else { "disabled" };
        crate::say!("{:<20} {:<12} {:<8} {}", m.name, m.kind, state, m.last_error.as_deref().unwrap_or(""));
    }
    Ok(())
}

pub fn find_mailbox(store: &dyn Store, name: &str) -> anyhow::Result<Mailbox> {
    store
        .mailbox_by_name(name)?
        .ok_or_else(|| anyhow!("no mailbox named {name:?}; `mailrobot mailbox list` shows the names"))
}

pub fn ticket_json(t: &TicketSummary, tag: &TagFormat) -> Value {
    serde_json::to_value(mailrobot_web::json::TicketJson::of(t, tag)).expect("views serialize")
}

/// `nodes list`: the `serve` processes sharing the database.
pub fn nodes_list(app: &App, json_out: bool) -> anyhow::Result<()> {
    let nodes = app.leases.nodes(mailrobot_store::lease::ALIVE_WITHIN)?;
    if json_out {
        print_json(&serde_json::to_value(&nodes)?);
        return Ok(());
    }
    if nodes.is_empty() {
        crate::say!("No node has served yet.");
    }
    for node in &nodes {
        crate::say!(
            "{} on {} — {}, started {}, last heartbeat {}; {} mailboxes: {}",
            node.node_id,
            node.host,
            if node.alive { "alive" } else { "gone" },
            node.started,
            node.last_heartbeat,
            node.mailboxes.len(),
            node.mailboxes.join(", ")
        );
    }
    Ok(())
}

pub fn tickets_list(app: &App, json_out: bool) -> anyhow::Result<()> {
    let tag = app.tag_format()?;
    let tickets = app.store.tickets()?;
    if json_out {
        print_json(&Value::Array(tickets.iter().map(|t| ticket_json(t, &tag)).collect()));
        return Ok(());
    }
    for t in &tickets {
        crate::say!(
            "{:<12} {:<6} {:>3} entries  {:<28} {}",
            tag.number(t.id as u64),
            t.status,
            t.entries,
            t.requester.as_deref().unwrap_or("-"),
            t.subject
        );
    }
    Ok(())
}

pub fn tickets_show(app: &App, number: &str, json_out: bool) -> anyhow::Result<()> {
    let tag = app.tag_format()?;
    let id = tag
        .parse_number(number)
        .ok_or_else(|| anyhow!("{number:?} is not a ticket number like {}", tag.number(123)))?;
    let ticket = app.store.ticket(id as i64)?.ok_or_else(|| anyhow!("no ticket {}", tag.number(id)))?;
    if json_out {
        let value = serde_json::to_value(mailrobot_web::json::TicketDetailJson::of(&ticket, &tag))?;
        print_json(&value);
        return Ok(());
    }
    let s = &ticket.summary;
    crate::say!(
        "{} {}  [{}]  requester {}",
        tag.tag(s.id as u64),
        s.subject,
        s.status,
        s.requester.as_deref().unwrap_or("-")
    );
    for e in &ticket.entries {
        crate::say!("\n#{} {} from {} — {}", e.position, e.kind, e.from.as_deref().unwrap_or("?"), e.subject);
        for line in e.text_body.lines().take(8) {
            crate::say!("    {line}");
        }
        for a in &e.attachments {
            crate::say!(
                "    📎 {} ({}, {} bytes)",
                a.filename.as_deref().unwrap_or("(unnamed)"),
                a.content_type,
                a.size
            );
        }
    }
    Ok(())
}

pub fn messages_list(
    app: &App,
    json_out: bool,
    state: Option<JournalState>,
    mailbox: Option<String>,
) -> anyhow::Result<()> {
    let mailbox_id = match mailbox {
        Some(name) => Some(find_mailbox(app.store.as_ref(), &name)?.id),
        None => None,
    };
    let tag = app.tag_format()?;
    let rows = app.store.messages(&MessageFilter { state, mailbox_id, page: None })?;
    if json_out {
        let views: Vec<_> = rows.iter().map(|m| mailrobot_web::json::MessageJson::of(m, &tag)).collect();
        print_json(&serde_json::to_value(views)?);
        return Ok(());
    }
    for m in &rows {
        crate::say!(
            "{:>6} {:<14} {:<9} {:<10} {:<12} {}{}",
            m.journal_id,
            m.mailbox,
            m.state,
            m.kind.map_or("-", MessageKind::as_str),
            m.ticket_id.map(|t| tag.number(t as u64)).unwrap_or_else(|| "-".into()),
            m.subject.as_deref().unwrap_or(&m.remote_id),
            m.reason.as_deref().map(|r| format!("  ({r})")).unwrap_or_default()
        );
    }
    Ok(())
}

pub fn settings(app: &App, command: &SettingsCommand) -> anyhow::Result<()> {
    match command {
        SettingsCommand::Show => {
            let tag = app.tag_format()?;
            crate::say!("{SETTING_TICKET_PREFIX} = {}", tag.prefix);
            crate::say!("{SETTING_TICKET_DIGITS} = {}", tag.digits);
            let limits = app.answer_limits()?;
            crate::say!("{} = {}", crate::app::SETTING_ANSWER_PER_SENDER, limits.per_sender);
            crate::say!("{} = {}", crate::app::SETTING_ANSWER_SENDER_WINDOW, limits.sender_window_minutes);
            crate::say!("{} = {}", crate::app::SETTING_ANSWER_PER_TICKET, limits.per_ticket_per_day);
        }
        SettingsCommand::Set { key, value } => {
            match key.as_str() {
                SETTING_TICKET_PREFIX => {
                    if value.is_empty() || value.contains([']', '[']) || value.chars().any(char::is_whitespace) {
                        bail!("ticket.prefix must be non-empty, without spaces or brackets");
                    }
                }
                SETTING_TICKET_DIGITS => {
                    let digits: usize = value.parse().context("ticket.digits must be a number")?;
                    if !(1..=12).contains(&digits) {
                        bail!("ticket.digits must be between 1 and 12");
                    }
                }
                number if crate::app::NUMBER_SETTINGS.iter().any(|(k, ..)| *k == number) => {
                    let (_, min, max) = crate::app::NUMBER_SETTINGS.iter().find(|(k, ..)| *k == number).unwrap();
                    let n: u32 = value.parse().with_context(|| format!("{number} must be a whole number"))?;
                    if !(*min..=*max).contains(&n) {
                        bail!("{number} must be between {min} and {max}");
                    }
                }
                other => {
                    let mut known = vec![SETTING_TICKET_PREFIX, SETTING_TICKET_DIGITS];
                    known.extend(crate::app::NUMBER_SETTINGS.iter().map(|(k, ..)| *k));
                    bail!("unknown setting {other:?}; known: {}", known.join(", "))
                }
            }
            app.store.set_setting(key, value)?;
            crate::say!("{key} = {value}");
        }
    }
    Ok(())
}
