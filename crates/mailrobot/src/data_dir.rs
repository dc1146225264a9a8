//! The data directory holds the database (mails, tickets, sealed secrets) and
//! usually the master key: only the robot's user may read it. It is created
//! 0700 with files 0600; an existing one that others can read is tightened
//! when the robot owns it, and refused — naming the command that fixes it —
//! when another user does (the robot cannot tighten that).
//!
//! Only the directory and the files directly in it are judged: a drop
//! folder someone put inside keeps its own modes (other users may write to
//! it), behind the directory's 0700.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, bail};

/// Mode of the data directory.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file the robot keeps in it.
pub const FILE_MODE: u32 = 0o600;

/// Creates the data directory, or tightens an existing one, so that nobody
/// but the robot's user can read it.
pub fn secure(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    }
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    let mut refused = Vec::new();
    let dir_meta = fs::metadata(dir).with_context(|| format!("cannot read the data directory {}", dir.display()))?;
    if !dir_meta.is_dir() {
        bail!("the data directory {} is not a directory; choose another --data-dir", dir.display());
    }
    tighten(dir, &dir_meta, DIR_MODE, me, &mut refused)?;
    let entries = fs::read_dir(dir).with_context(|| format!("cannot list the data directory {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list the data directory {}", dir.display()))?;
        // Not followed: a symlink's own mode means nothing.
        let meta = match entry.path().symlink_metadata() {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", entry.path().display())),
        };
        if meta.is_file() {
            tighten(&entry.path(), &meta, FILE_MODE, me, &mut refused)?;
        }
    }
    if !refused.is_empty() {
        let fixes: Vec<String> = refused.iter().map(|r| format!("  {r}")).collect();
        bail!(
            "the data directory {} holds secrets but other users can read parts of it that belong to another \
             user, so the robot cannot tighten them. Run (as root, or as their owner):\n{}\nor choose another \
             --data-dir",
            dir.display(),
            fixes.join("\n")
        );
    }
    Ok(())
}

/// Takes away group and other access from `path` if the robot owns it;
/// otherwise notes the commands that would fix it.
fn tighten(path: &Path, meta: &fs::Metadata, mode: u32, me: u32, refused: &mut Vec<String>) -> anyhow::Result<()> {
    let current = meta.permissions().mode() & 0o777;
    if current & 0o077 == 0 {
        return Ok(());
    }
    if meta.uid() == me {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).with_context(|| {
            format!("cannot chmod {:o} {}; run `chmod {:o} {}`", mode, path.display(), mode, path.display())
        })?;
        tracing::warn!(path = %path.display(), was = format!("{current:o}"), now = format!("{mode:o}"), "tightened the mode of a data directory entry");
        return Ok(());
    }
    let quoted = shell_quote(path);
    refused.push(format!("chown {} {quoted} && chmod {mode:o} {quoted}", user_name(me)));
    Ok(())
}

/// Creates (or opens) a file in the data directory that only its owner may read.
pub fn private_file(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).mode(FILE_MODE).open(path)
}

/// Makes sure the database file exists with mode 0600 before SQLite opens
/// it: SQLite gives its `-wal` and `-shm` files the database file's mode.
pub fn prepare_database_file(path: &Path) -> anyhow::Result<()> {
    private_file(path).with_context(|| format!("cannot create the database {}", path.display()))?;
    Ok(())
}

fn user_name(uid: u32) -> String {
    // SAFETY: getpwuid returns a pointer into static storage or null; the
    // name is copied out at once.
    unsafe {
        let pw = libc::getpwuid(uid);
        if pw.is_null() || (*pw).pw_name.is_null() {
            return uid.to_string();
        }
        std::ffi::CStr::from_ptr((*pw).pw_name).to_string_lossy().into_owned()
    }
}

fn shell_quote(path: &Path) -> String {
    let s = path.display().to_string();
    if s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c)) {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_directory_is_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/data");
        secure(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        prepare_database_file(&dir.join("db")).unwrap();
        assert_eq!(mode(&dir.join("db")), 0o600);
    }

    #[test]
    fn an_own_open_directory_and_its_files_are_tightened_but_not_subfolders() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(dir.join("mailrobot.db"), b"").unwrap();
        fs::set_permissions(dir.join("mailrobot.db"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::create_dir(dir.join("drop")).unwrap();
        fs::set_permissions(dir.join("drop"), fs::Permissions::from_mode(0o777)).unwrap();
        secure(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("mailrobot.db")), 0o600);
        assert_eq!(mode(&dir.join("drop")), 0o777, "a drop folder keeps the operator's modes");
    }

    #[test]
    fn quoting_for_the_advice() {
        assert_eq!(shell_quote(Path::new("/var/lib/robot")), "/var/lib/robot");
        assert_eq!(shell_quote(Path::new("/a b/it's")), r"'/a b/it'\''s'");
    }
}
