use std::process::ExitCode;

use clap::Parser;
use mailrobot::app::App;
use mailrobot::cli::*;
use mailrobot::commands::{self, print_json};
use tracing_subscriber::EnvFilter;

fn init_logs(format: LogFormat, long_running: bool) {
    // Commands that print their own results log only warnings by default.
    let default = if long_running { "info" } else { "warn" };
    let filter = EnvFilter::try_from_env("MAILROBOT_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    // Crates that log through `log` (async-imap) trace every command they
    // send, LOGIN's password included: cap them below trace, whatever
    // MAILROBOT_LOG asks for.
    if log::max_level() > log::LevelFilter::Debug {
        log::set_max_level(log::LevelFilter::Debug);
    }
}

/// Threads for blocking work (store calls) at most.
const MAX_BLOCKING_THREADS: usize = 64;

/// Caps glibc's malloc arenas at four per core, unless `MALLOC_ARENA_MAX`
/// says otherwise. Store calls hop between blocking threads, and buffers
/// are freed on other threads than made them: with glibc's default (eight
/// per core) each arena kept its own high-water mark, and peak RSS of a
/// 10,000-mail ingest on PostgreSQL reached 150–175 MB; with one per core,
/// threads parsing and filing side by side waited on each other's arena
/// lock (SQLite ingest 0.85×). Figures: docs/benchmarks.md.
fn cap_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        // SAFETY: mallopt only sets an allocator parameter; called before
        // any other thread starts.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, (cores * 4).clamp(2, 256) as libc::c_int);
        }
    }
    // Buffers of 4 MB and more (a large mail, its decoded attachment) are
    // mapped on their own and given back to the system when freed. glibc's
    // default raises this threshold to the largest block freed so far, so
    // after the first large mail every later one stayed in some thread's
    // arena: a pass over 25 mails of 20 MB peaked at 266 MB, 132 MB with this.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: as above.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        }
    }
}

fn main() -> ExitCode {
    cap_malloc_arenas();
    let cli = Cli::parse();
    init_logs(cli.log_format, matches!(cli.command, Command::Serve { .. } | Command::Demo { once: false, .. }));
    // Store calls run on blocking threads; with thousands of mailboxes
    // tokio's default (up to 512, each kept 10 s) left hundreds idle. They
    // wait on one writer (SQLite) or a small pool (PostgreSQL) anyway.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            mailrobot::esay!("error: {err:#}");
            ExitCode::FAILURE
        }
    };
    // Do not wait for blocking tasks a stopped poll left behind: their work
    // is either committed or repeatable.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    code
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Opens its own two databases: App::open would open (or create) the wrong one.
    if let Command::MigrateStore { from, to, json } = &cli.command {
        return mailrobot::commands_migrate::migrate_store(from, to.as_deref(), cli.database_url.as_deref(), *json)
            .await;
    }
    // `secrets` commands diagnose and repair a key change themselves.
    let key_check = !matches!(cli.command, Command::Secrets(_));
    let app = App::open(&cli.data_dir, cli.database_url.as_deref(), key_check)?;
    match cli.command {
        Command::Serve { listen, public_url } => mailrobot::serve::serve(&app, listen, public_url).await?,
        Command::RunOnce { json } => return run_once(&app, json).await,
        Command::Mailbox(command) => match command {
            MailboxCommand::Add(add) => {
                let mailbox = commands::mailbox_add(&app, &add)?;
                mailrobot::say!("Added mailbox {} ({}).", mailbox.name, mailbox.kind);
            }
            MailboxCommand::List { json } => commands::mailbox_list(&app, json)?,
            MailboxCommand::Test { name, json } => {
                let mailbox = commands::find_mailbox(app.store.as_ref(), &name)?;
                let result = app.pipeline()?.probe(&mailbox).await;
                let mut value =
                    serde_json::json!({"mailbox": mailbox.name, "kind": mailbox.kind, "ok": result.is_ok()});
                match &result {
                    Ok(probe) => {
                        value["folders"] = serde_json::to_value(&probe.folders)?;
                        value["waiting"] = serde_json::json!(probe.waiting);
                        value["unread"] = serde_json::json!(probe.unread);
                    }
                    Err(err) => value["error"] = serde_json::json!(err.to_string()),
                }
                if let Some(reply) = mailrobot::outbound::check_reply(&app, &mailbox).await {
                    value["reply"] = reply;
                }
                if json {
                    print_json(&value);
                } else {
                    match &result {
                        Ok(probe) => {
                            mailrobot::say!("{}: reachable; {} mails waiting", mailbox.name, probe.waiting);
                            for f in &probe.folders {
                                let count = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_else(|| "?".into());
                                mailrobot::say!(
                                    "  {:<30} {:>6} mails, {:>6} unread",
                                    f.name,
                                    count(f.total),
                                    count(f.unread)
                                );
                            }
                        }
                        Err(err) => mailrobot::say!("{}: {err}", mailbox.name),
                    }
                    if let Some(reply) = value.get("reply") {
                        let words = match (reply["ok"].as_bool(), reply["error"].as_str()) {
                            (Some(true), _) => match reply["needs"].as_str() {
                                Some(needs) => format!("reached; sending also needs {needs}"),
                                None => "can send".to_string(),
                            },
                            (Some(false), Some(error)) => format!("cannot send: {error}"),
                            _ => format!("shows only when sending; needs {}", reply["needs"].as_str().unwrap_or("?")),
                        };
                        mailrobot::say!("  replies via {}: {words}", reply["via"].as_str().unwrap_or("?"));
                    }
                }
                if result.is_err() {
                    return Ok(ExitCode::from(3));
                }
            }
            MailboxCommand::Enable { name } => {
                let m = commands::find_mailbox(app.store.as_ref(), &name)?;
                app.store.set_mailbox_enabled(m.id, true)?;
                mailrobot::say!("Mailbox {name} enabled.");
            }
            MailboxCommand::Set(mut set) => {
                if let Some(name) = set.mailbox.take() {
                    set.name = name;
                }
                if set.name.is_empty() {
                    anyhow::bail!("name the mailbox: `mailrobot mailbox set NAME [--folder F] …`");
                }
                let m = commands::mailbox_set(&app, &set)?;
                mailrobot::say!("Mailbox {} saved.", m.name);
            }
            MailboxCommand::Disable { name } => {
                let m = commands::find_mailbox(app.store.as_ref(), &name)?;
                app.store.set_mailbox_enabled(m.id, false)?;
                mailrobot::say!("Mailbox {name} disabled.");
            }
            MailboxCommand::Remove { name } => {
                let m = commands::find_mailbox(app.store.as_ref(), &name)?;
                app.store.remove_mailbox(m.id)?;
                mailrobot::say!("Mailbox {name} removed; its journal and tickets stay.");
            }
        },
        Command::Nodes(NodesCommand::List { json }) => commands::nodes_list(&app, json)?,
        Command::Tickets(TicketsCommand::List { json }) => commands::tickets_list(&app, json)?,
        Command::Tickets(TicketsCommand::Show { number, json }) => commands::tickets_show(&app, &number, json)?,
        Command::Tickets(TicketsCommand::Reply { number, body_file, attachments, json }) => {
            commands::tickets_reply(&app, &number, &body_file, &attachments, json)?
        }
        Command::Tickets(TicketsCommand::Status { number, status }) => {
            let tag = app.tag_format()?;
            let id = tag
                .parse_number(&number)
                .and_then(|n| i64::try_from(n).ok())
                .ok_or_else(|| anyhow::anyhow!("{number:?} is not a ticket number like {}", tag.number(123)))?;
            if !mailrobot::outbound::set_status(&app, id, status)? {
                anyhow::bail!("no ticket {number}");
            }
            mailrobot::say!("Ticket {} is {status}.", tag.number(id as u64));
        }
        Command::Messages(MessagesCommand::List { json, state, mailbox }) => {
            commands::messages_list(&app, json, state, mailbox)?
        }
        Command::Messages(MessagesCommand::Retry { mailbox }) => {
            let id = match mailbox {
                Some(name) => Some(commands::find_mailbox(app.store.as_ref(), &name)?.id),
                None => None,
            };
            let n = app.store.retry_failed(id)?;
            mailrobot::say!("{n} failed mails queued again; the next pass processes them.");
        }
        Command::Settings(command) => commands::settings(&app, &command)?,
        Command::Tenant(command) => mailrobot::commands_auth::tenant_command(&app, &command)?,
        Command::Connection(command) => return mailrobot::commands_auth::connection_command(&app, &command).await,
        Command::Smtp(SmtpCommand::Test(test)) => return mailrobot::commands_smtp::smtp_test(&app, &test).await,
        Command::Secrets(SecretsCommand::Status { json }) => return mailrobot::commands_secrets::status(&app, json),
        Command::Secrets(SecretsCommand::Reseal { json }) => return mailrobot::commands_secrets::reseal(&app, json),
        Command::Admin(command) => mailrobot::web::admin_command(&app, &command)?,
        Command::ApiToken(command) => mailrobot::web::api_token_command(&app, &command)?,
        Command::Outbox(command) => commands::outbox_command(&app, &command)?,
        Command::Webhook(command) => mailrobot::commands_webhooks::webhook_command(&app, &command)?,
        Command::Rules(command) => mailrobot::commands_rules::rules_command(&app, &command)?,
        Command::Templates(command) => mailrobot::commands_rules::templates_command(&app, &command)?,
        Command::Contacts(command) => mailrobot::commands_rules::contacts_command(&app, &command)?,
        Command::Demo { once, local: true, listen } => mailrobot::demo::run_local(&app, once, listen).await?,
        Command::Demo { once, local: false, listen } => mailrobot::demo_m365::run(&app, once, listen).await?,
        Command::MigrateStore { .. } => unreachable!("dispatched before the store is opened"),
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_once(app: &App, json: bool) -> anyhow::Result<ExitCode> {
    let pipeline = app.pipeline()?;
    let results = mailrobot::scheduler::run_once(&pipeline, app.leases.clone()).await?;
    // What the pass queued (acknowledgements, webhook events), tried once,
    // so a cron job of `run-once` sends too. Retries wait for the next run.
    let public_url = mailrobot::commands_auth::public_url(app, None).unwrap_or_default();
    let outbox = mailrobot_outbox::Engine::new(
        app.store.clone(),
        app.outbox.clone(),
        app.secrets.clone(),
        mailrobot::outbound::engine_config(&public_url, app.tag_format()?),
    )?
    .with_mail(mailrobot::outbound::RobotMail::transport(app));
    let attempted = outbox.drain().await;
    tracing::debug!(attempted, "outbox tried once");
    // Exit codes a cron job can read (README): 0 all done, 2 a mailbox
    // failed or waits for a person, 3 none failed but a server held one back.
    let (mut failed, mut held_back) = (0, 0);
    let mut reports = Vec::new();
    for (mailbox, result) in &results {
        match result {
            Ok(r) if r.held_by.is_some() => {
                if !json {
                    mailrobot::say!(
                        "{}: polled by node {}; this pass leaves it to that node",
                        mailbox.name,
                        r.held_by.as_deref().unwrap_or("")
                    );
                }
                reports.push(serde_json::json!({"mailbox": mailbox.name, "ok": true, "report": r}));
            }
            Ok(r) if r.throttled_until.is_some() => {
                held_back += 1;
                if !json {
                    mailrobot::say!(
                        "{}: throttled by the server; not polled before {}",
                        mailbox.name,
                        r.throttled_until.as_deref().unwrap_or("")
                    );
                }
                reports.push(serde_json::json!({"mailbox": mailbox.name, "ok": true, "report": r}));
            }
            Ok(r) => {
                if !json {
                    mailrobot::say!(
                        "{}: {} listed, {} fetched, {} processed, {} duplicates, {} failed, {} new tickets, {} settled",
                        mailbox.name,
                        r.listed,
                        r.fetched,
                        r.processed,
                        r.duplicates,
                        r.failed,
                        r.tickets_created,
                        r.settled
                    );
                }
                reports.push(serde_json::json!({"mailbox": mailbox.name, "ok": true, "report": r}));
            }
            Err(err) if err.retry_after().is_some() => {
                held_back += 1;
                mailrobot::esay!("{}: held back by the server: {err}", mailbox.name);
                reports.push(serde_json::json!({"mailbox": mailbox.name, "ok": false, "held_back": true, "error": err.to_string()}));
            }
            Err(err) => {
                failed += 1;
                mailrobot::esay!("{}: could not be polled: {err}", mailbox.name);
                reports.push(serde_json::json!({"mailbox": mailbox.name, "ok": false, "error": err.to_string()}));
            }
        }
    }
    if json {
        print_json(&serde_json::Value::Array(reports));
    }
    if results.is_empty() && !json {
        mailrobot::say!("No enabled mailboxes. Add one with `mailrobot mailbox add`.");
    }
    Ok(if failed > 0 {
        ExitCode::from(2)
    } else if held_back > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}
