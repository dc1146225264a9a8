//! The admin UI as `serve` runs it, and the `admin` commands that give it
//! its administrators.

use std::io::Read;
use std::sync::Arc;

use anyhow::{Context, bail};
use mailrobot_secrets::Secret;
use mailrobot_store::{Connection, Mailbox, MailboxKind, ServiceScopes, Tenant, TenantUpdate};
use mailrobot_web::ops::{
    ConnectionForm, ConnectionOperations, MailboxForm, MailboxOperations, MailboxSettingsForm, MailboxTest, OpResult,
    Operations, PollNow, ReplyFile, ServiceOperations, SmtpCheck, TenantForm, TicketOperations, WebhookOperations,
};
use mailrobot_web::{SignInThrottle, WebState, password};
use serde_json::json;

use crate::app::App;
use crate::cli::{AdminCommand, ApiTokenCommand, AuthArg, MailboxAdd, ProviderArg, SettleArg, TenantAdd, TlsArg};
use crate::commands::print_json;

pub fn state(app: &App, public_url: &str) -> anyhow::Result<WebState> {
    Ok(WebState {
        store: app.store.clone(),
        admins: app.admin_store.clone(),
        auth: app.auth_store.clone(),
        outbox: app.outbox.clone(),
        directory: app.directory.clone(),
        leases: app.leases.clone(),
        public_url: public_url.trim_end_matches('/').to_string(),
        secure_cookies: public_url.starts_with("https://"),
        throttle: Arc::new(SignInThrottle::default()),
        ops: Arc::new(RobotOperations { app: app.clone() }),
        tag: app.tag_format()?,
        progress: app.progress.clone(),
        db_permits: Arc::new(tokio::sync::Semaphore::new(mailrobot_web::db_concurrency())),
    })
}

/// The UI's forms, done by the code the CLI's commands run.
struct RobotOperations {
    app: App,
}

impl RobotOperations {
    /// Runs command code (blocking: SQLite, sealing) off the async threads;
    /// an error becomes the words the page shows.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&App) -> anyhow::Result<T> + Send + 'static,
    ) -> OpResult<T> {
        let app = self.app.clone();
        match tokio::task::spawn_blocking(move || work(&app)).await {
            Ok(result) => result.map_err(|e| format!("{e:#}")),
            Err(e) => Err(format!("the operation stopped: {e}")),
        }
    }
}

#[async_trait::async_trait]
impl TicketOperations for RobotOperations {
    async fn reply(
        &self,
        number: &str,
        text: String,
        files: Vec<ReplyFile>,
    ) -> OpResult<mailrobot_views::OutboxMailJson> {
        let number = number.to_string();
        self.run(move |app| crate::outbound::queue_reply(app, &number, &text, files)).await
    }

    async fn set_status(&self, ticket_id: i64, status: mailrobot_store::TicketStatus) -> OpResult<bool> {
        self.run(move |app| crate::outbound::set_status(app, ticket_id, status)).await
    }
}

#[async_trait::async_trait]
impl WebhookOperations for RobotOperations {
    async fn add_webhook(
        &self,
        url: String,
        events: Vec<mailrobot_store::WebhookEvent>,
        secret: String,
    ) -> OpResult<mailrobot_store::Webhook> {
        self.run(move |app| crate::commands_webhooks::add_webhook(app, &url, &events, &secret)).await
    }
}

fn expiry(form: &TenantForm) -> anyhow::Result<Option<String>> {
    form.secret_expires.as_deref().map(crate::commands_auth::parse_expiry).transpose()
}

#[async_trait::async_trait]
impl ConnectionOperations for RobotOperations {
    async fn add_connection(&self, form: ConnectionForm) -> OpResult<Connection> {
        self.run(move |app| {
            crate::commands_auth::connection_add(
                app,
                &form.name,
                &form.tenant,
                form.capability,
                form.mode,
                &form.scopes,
            )
        })
        .await
    }

    async fn begin_setup(&self, connection: &str, initiator: String) -> OpResult<String> {
        let name = connection.to_string();
        let (c, public) = self
            .run(move |app| {
                let c = app
                    .auth_store
                    .connection_by_name(&name)?
                    .with_context(|| format!("no connection named {name:?}"))?;
                Ok((c, crate::commands_auth::public_url(app, None)?))
            })
            .await?;
        let broker = self.app.broker().map_err(|e| e.to_string())?;
        broker.begin_authorization(c.id, &public, &initiator, None).await.map_err(|e| e.to_string())
    }

    async fn test_connection(&self, connection: &str, smtp: SmtpCheck) -> OpResult<String> {
        let name = connection.to_string();
        let c = self
            .run(move |app| {
                app.auth_store.connection_by_name(&name)?.with_context(|| format!("no connection named {name:?}"))
            })
            .await?;
        let token = crate::commands_auth::connection_token(&self.app, &c).await.map_err(|e| e.to_string())?;
        let who = c.authenticated_upn.as_deref().map(|u| format!(", authenticated as {u}")).unwrap_or_default();
        let said = format!(
            "a token for {} valid until {}{who}",
            token.resource,
            token.expires_at.format("%Y-%m-%d %H:%M UTC")
        );
        if c.capability != mailrobot_store::Capability::Smtp {
            return Ok(said);
        }
        // An SMTP connection is only useful if the server takes its tokens.
        let tls = match smtp.security.as_deref() {
            Some("tls") => TlsArg::Tls,
            Some("none") => TlsArg::None,
            _ => TlsArg::Starttls,
        };
        let mut value = json!({});
        let ok = crate::commands_smtp::connection_smtp_check(
            &self.app,
            &c,
            smtp.server.as_deref().filter(|s| !s.trim().is_empty()),
            tls.into(),
            smtp.address.as_deref().filter(|s| !s.trim().is_empty()),
            &mut value,
        )
        .await
        .map_err(|e| format!("{e:#}"))?;
        let smtp_said = crate::commands_smtp::outcome_line(&value["smtp"]);
        if ok { Ok(format!("{said}; {smtp_said}")) } else { Err(format!("{said}, but {smtp_said}")) }
    }
}

#[async_trait::async_trait]
impl MailboxOperations for RobotOperations {
    async fn add_mailbox(&self, form: MailboxForm) -> OpResult<Mailbox> {
        self.run(move |app| {
            let kind = form.kind.context("choose the mailbox's Type")?;
            let tls = match form.security.as_str() {
                "none" => TlsArg::None,
                "starttls" => TlsArg::Starttls,
                _ => TlsArg::Tls,
            };
            let settle = match form.after_processing.as_str() {
                "mark-read" => SettleArg::MarkRead,
                "delete" => SettleArg::Delete,
                _ => SettleArg::Move,
            };
            // IMAP and POP3 log in with the connection's tokens when one is chosen.
            let auth = if form.connection.is_some() { AuthArg::Oauth } else { AuthArg::Password };
            let password_login = !matches!(kind, MailboxKind::Graph | MailboxKind::DropFolder)
                && (form.connection.is_none() || kind == MailboxKind::Ews && form.ews_url.is_some());
            let add = MailboxAdd {
                name: form.name.clone(),
                kind,
                host: form.host.clone(),
                port: form.port,
                tls,
                username: form.username.clone(),
                password_env: None,
                password_stdin: false,
                folder: form.folder.clone(),
                processed_folder: form.processed_folder.clone(),
                error_folder: form.error_folder.clone(),
                settle,
                keep_on_server: false,
                path: form.path.clone().map(Into::into),
                connection: form.connection.clone().filter(|_| !(kind == MailboxKind::Ews && form.ews_url.is_some())),
                auth,
                address: form.address.clone(),
                ews_url: form.ews_url.clone(),
                ews_auth: None,
                poll_seconds: form.poll_seconds,
                max_message_mb: form.max_message_mb,
                disabled: false,
                allow_plaintext: false,
            };
            if form.name.is_empty() {
                bail!("a mailbox needs a name");
            }
            let password = form.password.filter(|_| password_login).map(Secret::new);
            crate::commands::mailbox_add_with_password(app, &add, password)
        })
        .await
    }

    async fn test_mailbox(&self, name: &str) -> OpResult<MailboxTest> {
        let (mailbox, pipeline) = self.mailbox_and_pipeline(name).await?;
        let probe = pipeline.probe(&mailbox).await.map_err(|e| e.to_string())?;
        Ok(MailboxTest {
            said: format!("reachable; {} mails waiting, {} folders seen", probe.waiting, probe.folders.len()),
            folders: probe.folders.into_iter().map(|f| f.name).collect(),
        })
    }

    async fn update_mailbox(&self, name: &str, form: MailboxSettingsForm) -> OpResult<Mailbox> {
        let name = name.to_string();
        self.run(move |app| {
            let settle = match form.after_processing.as_deref() {
                Some("move") => Some(SettleArg::Move),
                Some("mark-read") => Some(SettleArg::MarkRead),
                Some("delete") => Some(SettleArg::Delete),
                _ => None,
            };
            let set = crate::cli::MailboxSet {
                mailbox: None,
                reply_via: None,
                smtp_server: None,
                smtp_tls: None,
                smtp_username: None,
                smtp_password_env: None,
                smtp_connection: None,
                from: None,
                reply_to: None,
                name,
                folder: form.folder,
                processed_folder: form.processed_folder,
                error_folder: form.error_folder,
                settle,
                poll_seconds: form.poll_seconds,
                max_message_mb: form.max_message_mb,
                password_env: None,
                password_stdin: false,
                unknown_senders: form.unknown_senders,
                language: form.language,
            };
            let m = crate::commands::mailbox_update(app, &set, form.password.map(Secret::new))?;
            let reply = match form.reply {
                Some(r) => reply_settings(r)?,
                None => crate::outbound::ReplySettings::default(),
            };
            crate::commands::apply_reply(app, m, &reply)
        })
        .await
    }

    async fn poll_now(&self, name: &str) -> OpResult<PollNow> {
        let (mailbox, pipeline) = self.mailbox_and_pipeline(name).await?;
        if !mailbox.enabled {
            // No node takes it, and the one still holding it gives it up.
            return Err(format!(
                "mailbox {} is disabled, and nodes poll only enabled mailboxes: enable it first",
                mailbox.name
            ));
        }
        if !self.polls_here(&mailbox).await? {
            // Another node polls it (or the next to take it will): that node
            // is asked to poll now, as when a Graph notification reaches the
            // wrong node.
            let id = mailbox.id;
            let told = self.run(move |app| Ok(app.leases.announce_mail(id, None)?)).await?;
            return Ok(PollNow::Asked(if told {
                "another node polls this mailbox; it was asked to poll it now".to_string()
            } else {
                "no node holds this mailbox now; the next node to take it polls it at once".to_string()
            }));
        }
        let (result, _) = crate::scheduler::poll_and_record(&pipeline, &mailbox).await;
        let report = result.map_err(|e| e.to_string())?;
        Ok(PollNow::Polled(format!(
            "{} fetched, {} processed ({} new tickets), {} failed, {} duplicates",
            report.fetched, report.processed, report.tickets_created, report.failed, report.duplicates
        )))
    }
}

impl RobotOperations {
    /// Whether this process polls `mailbox` itself: always outside a node
    /// (no leases); in a node, when it holds the lease. A node just started
    /// takes its share at its first heartbeat, and a mailbox no node holds
    /// may come to this one at the next: both are waited for, briefly.
    async fn polls_here(&self, mailbox: &Mailbox) -> OpResult<bool> {
        let fences = self.app.leases.fences();
        if !fences.is_enabled() {
            return Ok(true);
        }
        let deadline = std::time::Instant::now() + crate::node::GATHER_FOR + 2 * crate::node::QUICK_BEAT;
        loop {
            if fences.get(mailbox.id).is_some() {
                return Ok(true);
            }
            if fences.is_known() {
                let name = mailbox.name.clone();
                let elsewhere = self
                    .run(move |app| {
                        let nodes = app.leases.nodes(mailrobot_store::lease::ALIVE_WITHIN)?;
                        Ok(nodes.iter().any(|n| n.alive && n.mailboxes.contains(&name)))
                    })
                    .await?;
                if elsewhere {
                    return Ok(false);
                }
            }
            if std::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    async fn mailbox_and_pipeline(&self, name: &str) -> OpResult<(Mailbox, crate::pipeline::Pipeline)> {
        let name = name.to_string();
        self.run(move |app| {
            let mailbox = crate::commands::find_mailbox(app.store.as_ref(), &name)?;
            Ok((mailbox, app.pipeline()?))
        })
        .await
    }
}

#[async_trait::async_trait]
impl ServiceOperations for RobotOperations {
    async fn set_service_scopes(&self, scopes: ServiceScopes) -> OpResult<()> {
        self.run(move |app| {
            if scopes.scopes.is_empty() {
                bail!("give at least one scope");
            }
            if scopes.mode == mailrobot_store::Mode::Application
                && scopes.scopes.iter().any(|s| !s.ends_with("/.default"))
            {
                bail!("application mode (client credentials) takes one scope of the form {{resource}}/.default");
            }
            mailrobot_auth::model::check_one_resource(&scopes.scopes).map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(app.auth_store.set_service_scopes(&scopes)?)
        })
        .await
    }
}

#[async_trait::async_trait]
impl Operations for RobotOperations {
    async fn add_tenant(&self, form: TenantForm) -> OpResult<Tenant> {
        self.run(move |app| {
            let add = TenantAdd {
                name: form.name.clone(),
                provider: ProviderArg::Microsoft365,
                client_id: form.client_id.clone(),
                tenant: form.tenant.clone(),
                client_secret_env: None,
                client_secret_stdin: false,
                secret_expires: form.secret_expires.clone(),
                certificate_file: None,
                authority_url: form.authority_url.clone(),
                graph_url: form.graph_url.clone(),
                ews_url: form.ews_url.clone(),
                authorize_url: None,
                token_url: None,
                allow_plaintext: false,
            };
            if form.name.is_empty() {
                bail!("a tenant needs a name");
            }
            let secret = form.client_secret.map(Secret::new);
            crate::commands_auth::tenant_add_with_secret(app, &add, secret, form.certificate_pem)
        })
        .await
    }

    async fn update_tenant(&self, name: &str, form: TenantForm) -> OpResult<Tenant> {
        let name = name.to_string();
        self.run(move |app| {
            let tenant = app.auth_store.tenant_by_name(&name)?.with_context(|| format!("no tenant named {name:?}"))?;
            let update = TenantUpdate {
                client_id: form.client_id.clone(),
                directory: form.tenant.clone(),
                authority_url: form.authority_url.clone(),
                graph_url: form.graph_url.clone(),
                ews_url: form.ews_url.clone(),
                secret_expires_at: expiry(&form)?,
                certificate_info: None,
            };
            let secret = form.client_secret.map(Secret::new);
            crate::commands_auth::tenant_update(app, &tenant, update, secret, form.certificate_pem)
        })
        .await
    }
}

/// The demo's administrator: made (or given a fresh password) so a newcomer
/// can sign in to the UI the demo serves. Returns (email, password) to
/// print, or None when other administrators exist (theirs to use).
pub const DEMO_ADMIN: &str = "admin@demo.test";

pub fn demo_admin(app: &App) -> anyhow::Result<Option<(String, String)>> {
    let admins = app.admin_store.admins()?;
    if admins.iter().any(|a| !a.email.eq_ignore_ascii_case(DEMO_ADMIN)) {
        return Ok(None);
    }
    let password = mailrobot_web::session::random_token()[..20].to_string();
    let hash = password::hash(&password)?;
    if admins.is_empty() {
        app.admin_store.add_admin(DEMO_ADMIN, &hash)?;
    } else {
        app.admin_store.set_admin_password(DEMO_ADMIN, &hash)?;
    }
    Ok(Some((DEMO_ADMIN.to_string(), password)))
}

/// What the demos print before serving: where the UI is, and how to sign in.
pub fn print_demo_sign_in(app: &App, listen: std::net::SocketAddr) -> anyhow::Result<()> {
    match demo_admin(app)? {
        Some((email, password)) => println!(
            "\n   The admin UI: http://{listen}/ — sign in as {email} with the password {password}\n   \
             (made for this demo; `mailrobot admin create` makes your own)."
        ),
        None => println!("\n   The admin UI: http://{listen}/ — sign in with your administrator's email and password."),
    }
    Ok(())
}

/// The password from standard input: the first line, without its line end.
fn password_from_stdin() -> anyhow::Result<String> {
    let mut input = String::new();
    std::io::stdin().take(4096).read_to_string(&mut input).context("reading the password from standard input")?;
    let password = input.lines().next().unwrap_or("").to_string();
    if password.is_empty() {
        bail!("no password on standard input: pipe it in, e.g. `printf '%s\\n' \"$PW\" | mailrobot admin create …`");
    }
    Ok(password)
}

pub fn api_token_command(app: &App, command: &ApiTokenCommand) -> anyhow::Result<()> {
    match command {
        ApiTokenCommand::Create { name, read_only } => {
            if name.trim().is_empty() {
                bail!("an API token needs a name");
            }
            let token = format!("{}{}", mailrobot_web::api::TOKEN_PREFIX, mailrobot_web::session::random_token());
            let t = app.admin_store.add_api_token(name, &mailrobot_web::session::token_sha256(&token), *read_only)?;
            let access = if t.read_only { "read-only" } else { "read and write" };
            println!(
                "API token {} ({access}); send it as `Authorization: Bearer <token>`. It is shown only now:",
                t.name
            );
            println!("{token}");
        }
        ApiTokenCommand::List { json } => {
            let tokens = app.admin_store.api_tokens()?;
            if *json {
                print_json(&json!(tokens));
            } else {
                for t in &tokens {
                    let access = if t.read_only { "read-only" } else { "read-write" };
                    crate::say!("{:<24} {:<10} created {}", t.name, access, t.created_at);
                }
            }
        }
        ApiTokenCommand::Revoke { name } => {
            if !app.admin_store.revoke_api_token(name)? {
                bail!("no API token named {name:?}; `mailrobot api-token list` shows them");
            }
            crate::say!("API token {name} revoked.");
        }
    }
    Ok(())
}

pub fn admin_command(app: &App, command: &AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::Create { email, password_stdin } | AdminCommand::Add { email, password_stdin } => {
            if !password_stdin {
                bail!("give the password on standard input with --password-stdin (never on the command line)");
            }
            let creating_first = matches!(command, AdminCommand::Create { .. });
            if creating_first && !app.admin_store.admins()?.is_empty() {
                bail!("an administrator exists already; add more with `mailrobot admin add`");
            }
            if !email.contains('@') || email.trim() != email {
                bail!("{email:?} is not an email address");
            }
            let hash = password::hash(&password_from_stdin()?)?;
            let admin = app.admin_store.add_admin(email, &hash)?;
            crate::say!("Administrator {} added; sign in at the URL `mailrobot serve` prints.", admin.email);
        }
        AdminCommand::List { json } => {
            let admins = app.admin_store.admins()?;
            if *json {
                print_json(&json!(admins));
            } else {
                for a in &admins {
                    crate::say!(
                        "{:<32} added {}  last sign-in {}",
                        a.email,
                        a.created_at,
                        a.last_sign_in_at.as_deref().unwrap_or("never")
                    );
                }
            }
        }
        AdminCommand::Remove { email } => {
            if !app.admin_store.remove_admin(email)? {
                bail!("no administrator {email:?}; `mailrobot admin list` shows them");
            }
            crate::say!("Administrator {email} removed; their sessions ended.");
        }
    }
    Ok(())
}

/// The UI's and the API's reply form as `mailbox set` takes it.
fn reply_settings(form: mailrobot_web::ops::ReplyForm) -> anyhow::Result<crate::outbound::ReplySettings> {
    use crate::outbound::ReplyVia;
    let given = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let via = match given(form.via).as_deref() {
        None => None,
        Some("none") => Some(ReplyVia::None),
        Some("smtp") => Some(ReplyVia::Smtp),
        Some("graph") => Some(ReplyVia::Graph),
        Some("ews") => Some(ReplyVia::Ews),
        Some(other) => anyhow::bail!("{other:?} is not a reply transport: none, smtp, graph or ews"),
    };
    let smtp_tls = match given(form.smtp_tls).as_deref() {
        None => None,
        Some("starttls") => Some(crate::cli::TlsArg::Starttls),
        Some("tls") => Some(crate::cli::TlsArg::Tls),
        Some("none") => Some(crate::cli::TlsArg::None),
        Some(other) => anyhow::bail!("{other:?} is not an SMTP security: starttls, tls or none"),
    };
    Ok(crate::outbound::ReplySettings {
        via,
        smtp_server: given(form.smtp_server),
        smtp_tls,
        smtp_username: given(form.smtp_username),
        smtp_password: given(form.smtp_password).map(Secret::new),
        smtp_connection: given(form.smtp_connection),
        from: given(form.from),
        // Empty removes it.
        reply_to: form.reply_to.map(|r| r.trim().to_string()),
    })
}
