//! `mailrobot migrate-store --from sqlite:PATH [--to postgres://…]`: moves an
//! SQLite installation into an empty PostgreSQL database (the copy itself
//! is [`mailrobot_store::migrate`]: one transaction, every table verified).
//!
//! Runs before any store is opened (opening one would create or migrate the
//! wrong database). The target comes from `--to` or, preferably,
//! `MAILROBOT_DATABASE_URL` — a password on a command line is visible to
//! every user of the machine — and is only ever shown without its password.

use std::fs::File;
use std::io::IsTerminal;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use mailrobot_store::migrate::{MigrationReport, TableReport, sqlite_to_postgres_with_progress};
use mailrobot_store::redacted_url;

use crate::app::DB_FILE;
use crate::commands::print_json;
use crate::serve::LOCK_FILE;

pub async fn migrate_store(
    from: &str,
    to: Option<&str>,
    database_url: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let source = source_path(from)?;
    let target = target_url(to.or(database_url))?;
    if to.is_some_and(|url| url::Url::parse(url).is_ok_and(|u| u.password().is_some())) {
        crate::esay!(
            "note: the password in --to is visible to other users of this machine while the copy runs; \
             MAILROBOT_DATABASE_URL keeps it off the command line"
        );
    }
    let data_dir = source.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    // Held until the copy is committed: no `serve` starts on the source meanwhile.
    let _lock = hold_serve_lock(&data_dir)?;

    let show_progress = !json && std::io::stderr().is_terminal();
    let report = {
        let (source, target) = (source.clone(), target.clone());
        tokio::task::spawn_blocking(move || {
            sqlite_to_postgres_with_progress(&source, &target, &mut |table: &TableReport| {
                if show_progress {
                    crate::esay!("  copied {} ({} rows), verified", table.table, table.rows);
                }
            })
        })
        .await
        .context("the copy stopped unexpectedly")??
    };
    // The nodes that start on PostgreSQL must use the key that sealed the
    // copied secrets: the source's. Its check value is written now, so a
    // first node started with another key is refused, not the right ones.
    {
        let (target, data_dir) = (target.clone(), data_dir.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let secrets = mailrobot_secrets::SecretBox::load(&data_dir)?;
            let store = mailrobot_store::PgStore::connect(&target)?;
            crate::app::check_master_key(&store, &secrets)
        })
        .await
        .context("the master key check stopped unexpectedly")??;
    }

    if json {
        print_json(&serde_json::to_value(&report)?);
    } else {
        print_summary(&report, &data_dir);
    }
    Ok(ExitCode::SUCCESS)
}

/// The SQLite file `--from` names: `sqlite:PATH` (or `sqlite://PATH`), PATH
/// being the database file or the data directory holding it.
fn source_path(from: &str) -> anyhow::Result<PathBuf> {
    let Some(rest) = from.strip_prefix("sqlite:") else {
        bail!(
            "--from takes sqlite:PATH, PATH being the robot's database file (e.g. \
             sqlite:./mailrobot-data/{DB_FILE}); got {from:?}"
        );
    };
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    if rest.is_empty() {
        bail!("--from sqlite:PATH needs a PATH (e.g. sqlite:./mailrobot-data/{DB_FILE})");
    }
    let mut path = PathBuf::from(rest);
    if path.is_dir() {
        path.push(DB_FILE);
    }
    if !path.is_file() {
        bail!("there is no SQLite database at {}: name the robot's {DB_FILE} (in its data directory)", path.display());
    }
    Ok(path)
}

/// The target's URL; never shown with its password.
fn target_url(url: Option<&str>) -> anyhow::Result<String> {
    let url = url.ok_or_else(|| {
        anyhow!(
            "name the empty PostgreSQL database to move into: set MAILROBOT_DATABASE_URL=postgres://user:password@host:port/db \
             (preferred: a password on a command line is visible to other users of the machine) or pass --to"
        )
    })?;
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        bail!(
            "the target must be a postgres:// URL (postgres://user:password@host:port/db), not {}",
            redacted_url(url)
        );
    }
    Ok(url.to_string())
}

/// Takes the lock a `serve` on this data directory holds (the same kernel
/// lock as [`crate::serve::ServeLock`]), or refuses naming the process that
/// has it.
fn hold_serve_lock(data_dir: &Path) -> anyhow::Result<Option<File>> {
    let path = data_dir.join(LOCK_FILE);
    let file = match crate::data_dir::private_file(&path) {
        Ok(file) => file,
        // A data directory we may not write to: an existing lock is still read.
        Err(_) => match File::open(&path) {
            Ok(file) => file,
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "cannot open the serve lock; going on without it");
                return Ok(None);
            }
        },
    };
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        bail!(
            "refusing to migrate: a `mailrobot serve` (pid {}) is running on {}; stop it first — migrate-store copies \
             a database nobody writes to",
            holder.trim(),
            data_dir.display()
        );
    }
    Ok(Some(file))
}

fn print_summary(report: &MigrationReport, data_dir: &Path) {
    crate::say!("Moved {} into {} in one transaction; every table verified.", report.source, report.target);
    crate::say!("  {:<20} {:>10}  {:<18} {:>8}", "TABLE", "ROWS", "SHA-256", "NEXT ID");
    for t in &report.tables {
        let next = t.next_id.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
        crate::say!("  {:<20} {:>10}  {:<18} {:>8}", t.table, t.rows, format!("{}…", &t.checksum[..16]), next);
    }
    crate::say!("  {} tables, {} rows.", report.tables.len(), report.rows);
    if report.replaced > 0 {
        crate::say!(
            "Replaced {} rows the target held from being opened before (service scopes, settings).",
            report.replaced
        );
    }
    crate::say!(
        "Next: start the robot with MAILROBOT_DATABASE_URL naming this database and the same master key \
         ({} or {}); keep {} as a backup, and do not start `serve` on it again.",
        mailrobot_secrets::MASTER_KEY_ENV,
        data_dir.join(mailrobot_secrets::KEY_FILE_NAME).display(),
        report.source
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_is_an_sqlite_path_and_the_target_a_postgres_url() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join(DB_FILE);
        std::fs::write(&db, b"").unwrap();
        let from = |s: &str| source_path(s).map_err(|e| e.to_string());
        assert_eq!(from(&format!("sqlite:{}", db.display())).unwrap(), db);
        assert_eq!(from(&format!("sqlite://{}", dir.path().display())).unwrap(), db, "a data directory");
        assert!(from(&db.display().to_string()).unwrap_err().contains("sqlite:PATH"));
        assert!(from("sqlite:/nonexistent/x.db").unwrap_err().contains("no SQLite database"));

        assert!(target_url(None).unwrap_err().to_string().contains("MAILROBOT_DATABASE_URL"));
        let err = target_url(Some("mysql://u:hunter2@h/db")).unwrap_err().to_string();
        assert!(err.contains("postgres://") && !err.contains("hunter2"), "{err}");
        assert_eq!(target_url(Some("postgresql://u:p@h/db")).unwrap(), "postgresql://u:p@h/db");
    }
}
