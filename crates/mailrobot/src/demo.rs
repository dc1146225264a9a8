//! `mailrobot demo --local`: sample mails dropped into a drop folder become
//! tickets, and the robot says what it made of each one. The Microsoft 365
//! story (`mailrobot demo`) is in [`crate::demo_m365`] and reuses the report.

use std::net::SocketAddr;

use anyhow::Context;
use mailrobot_store::{JournalState, MailboxKind, MessageFilter, MessageKind};

use crate::app::App;
use crate::cli::{MailboxAdd, SettleArg, TlsArg};
use crate::commands::mailbox_add;
use crate::scheduler::poll_and_record;

pub(crate) mod samples {
    include!(concat!(env!("OUT_DIR"), "/demo_mails.rs"));
}

pub const DEMO_MAILBOX: &str = "demo-inbox";

/// The local story: a drop folder on the embedded defaults.
pub async fn run_local(app: &App, once: bool, listen: SocketAddr) -> anyhow::Result<()> {
    let drop_dir = app.data_dir.join("demo-dropfolder");
    println!("mailrobot demo — data in {}", app.data_dir.display());
    let mailbox = match app.store.mailbox_by_name(DEMO_MAILBOX)? {
        Some(m) => m,
        None => {
            println!("1. Adding drop-folder mailbox {DEMO_MAILBOX:?} at {}", drop_dir.display());
            mailbox_add(app, &demo_mailbox(&drop_dir))?
        }
    };
    let drop_dir = match crate::mailbox_config::MailboxConfig::from_mailbox(&mailbox)? {
        crate::mailbox_config::MailboxConfig::DropFolder(s) => s.path,
        _ => anyhow::bail!("mailbox {DEMO_MAILBOX:?} exists but is not a drop folder; use another --data-dir"),
    };

    // Writers put a file in tmp/ and rename it into inbox/ (the Maildir
    // convention), so the robot never sees half a file. Names are unique per
    // run so a second demo drops new files (which then dedupe).
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f");
    println!("2. Dropping {} sample mails into {}/inbox", samples::DEMO_MAILS.len(), drop_dir.display());
    let mut dropped = Vec::new();
    for (name, bytes) in samples::DEMO_MAILS {
        let file = format!("{stamp}-{name}");
        let tmp = drop_dir.join("tmp").join(&file);
        std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, drop_dir.join("inbox").join(&file))?;
        dropped.push((name.to_string(), file));
    }

    println!("3. One pass of the robot over the mailbox:\n");
    poll_and_report(app, mailbox.id, &dropped, "kept in failed/").await?;
    let tag = app.tag_format()?;
    println!("\nTry: mailrobot --data-dir {} tickets show {} --json", app.data_dir.display(), tag.number(1));
    if once {
        return Ok(());
    }
    println!(
        "\n5. Serving: drop more .eml files into {}/inbox (write to tmp/ first, then rename). Ctrl-C stops.",
        drop_dir.display()
    );
    crate::web::print_demo_sign_in(app, listen)?;
    crate::serve::serve(app, listen, None).await
}

/// Polls the demo mailbox once and says what became of each sample mail
/// (`delivered`: sample name → remote id), then lists the tickets.
pub(crate) async fn poll_and_report(
    app: &App,
    mailbox_id: i64,
    delivered: &[(String, String)],
    failed_where: &str,
) -> anyhow::Result<()> {
    let pipeline = app.pipeline()?;
    let (result, _) = poll_and_record(&pipeline, &app.store.mailbox(mailbox_id)?).await;
    let report = result.context("the demo mailbox could not be polled")?;

    let tag = app.tag_format()?;
    let rows = app.store.messages(&MessageFilter { mailbox_id: Some(mailbox_id), ..Default::default() })?;
    for (name, remote_id) in delivered {
        let Some(row) = rows.iter().find(|r| &r.remote_id == remote_id) else {
            println!("   {name:<38} → not seen (still in the inbox?)");
            continue;
        };
        let ticket = row.ticket_id.map(|t| tag.number(t as u64));
        let what = match (row.state, row.kind, &ticket) {
            (JournalState::Failed, _, _) => format!("FAILED, {failed_where}: {}", row.reason.as_deref().unwrap_or("")),
            (_, Some(MessageKind::Duplicate), Some(t)) => format!("duplicate of a mail already on {t}: no new entry"),
            (_, Some(MessageKind::Duplicate), None) => "duplicate of a mail already journaled".to_string(),
            (_, Some(kind), Some(t)) => {
                let first = app
                    .store
                    .ticket(row.ticket_id.unwrap_or_default())?
                    .and_then(|d| d.entries.first().map(|e| e.journal_id == row.journal_id))
                    .unwrap_or(false);
                match (first, kind) {
                    (true, _) => format!("new ticket {t}"),
                    (false, MessageKind::Mail) => format!("reply, added to {t}"),
                    (false, other) => format!("{other} recorded on {t} (no new ticket)"),
                }
            }
            (_, Some(kind), None) => format!("{kind} matching no ticket: kept in the journal only"),
            (state, None, _) => state.to_string(),
        };
        println!("   {name:<38} → {what}");
    }
    println!(
        "\n   {} mails: {} processed, {} duplicates, {} failed; {} new tickets.\n",
        report.fetched, report.processed, report.duplicates, report.failed, report.tickets_created
    );
    println!("   Tickets now:\n");
    for t in app.store.tickets()? {
        println!(
            "   {:<12} {:>2} entries  {:<30} {}",
            tag.number(t.id as u64),
            t.entries,
            t.requester.unwrap_or_default(),
            t.subject
        );
    }
    Ok(())
}

fn demo_mailbox(drop_dir: &std::path::Path) -> MailboxAdd {
    MailboxAdd {
        name: DEMO_MAILBOX.to_string(),
        kind: MailboxKind::DropFolder,
        host: None,
        port: None,
        tls: TlsArg::None,
        username: None,
        password_env: None,
        password_stdin: false,
        folder: "INBOX".into(),
        processed_folder: "Processed".into(),
        error_folder: "Failed".into(),
        settle: SettleArg::Move,
        keep_on_server: false,
        path: Some(drop_dir.to_path_buf()),
        connection: None,
        auth: crate::cli::AuthArg::Password,
        address: None,
        ews_url: None,
        ews_auth: None,
        poll_seconds: 5,
        max_message_mb: 50,
        disabled: false,
        allow_plaintext: false,
    }
}
