//! A local drop folder as a mail source: other programs put `*.eml` files
//! into `DIR/inbox` (writing them in `DIR/tmp` first and renaming, so the
//! robot never sees half a file); settled files move to `DIR/processed` or
//! `DIR/failed`. Remote ids are file names.
//!
//! Whoever may write to the inbox is not trusted with anything else: a file
//! is opened without following symlinks, checked on the open descriptor (a
//! regular file, not over the size limit) and read no further than the limit,
//! so swapping a listed file for a link to, say, the master key gets the link
//! refused, not the key read.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::{Listing, MailSource, Outcome, RemoteMail, SourceError};

const SUBDIRS: [&str; 4] = ["inbox", "tmp", "processed", "failed"];

/// A drop folder on the local file system.
#[derive(Debug, Clone)]
pub struct DropFolderSource {
    root: PathBuf,
    /// Files over this many bytes are refused, not read.
    max_message_bytes: u64,
}

impl DropFolderSource {
    /// Opens the folder, creating `DIR/{inbox,tmp,processed,failed}`.
    pub fn open(path: PathBuf) -> Result<Self, SourceError> {
        for sub in SUBDIRS {
            let dir = path.join(sub);
            fs::create_dir_all(&dir).map_err(|e| {
                SourceError::permanent(format!(
                    "cannot create drop folder directory {}: {e} — check that the path is right \
                     and writable by the robot",
                    dir.display()
                ))
            })?;
        }
        Ok(DropFolderSource { root: path, max_message_bytes: u64::MAX })
    }

    /// Refuses files over `max` bytes (they stay in the inbox until settled
    /// into `failed/`).
    pub fn with_max_message_bytes(mut self, max: u64) -> Self {
        self.max_message_bytes = max;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn inbox(&self) -> PathBuf {
        self.root.join("inbox")
    }

    /// Runs blocking file work off the async threads.
    async fn blocking<T, F>(&self, f: F) -> Result<T, SourceError>
    where
        T: Send + 'static,
        F: FnOnce(PathBuf) -> Result<T, SourceError> + Send + 'static,
    {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || f(root))
            .await
            .map_err(|e| SourceError::transient(format!("drop folder task failed: {e}")))?
    }
}

#[async_trait::async_trait]
impl MailSource for DropFolderSource {
    async fn list(&mut self) -> Result<Vec<Listing>, SourceError> {
        self.blocking(|root| list_inbox(&root.join("inbox"))).await
    }

    async fn fetch(&mut self, remote_ids: &[String]) -> Result<Vec<RemoteMail>, SourceError> {
        let ids = remote_ids.to_vec();
        let max = self.max_message_bytes;
        self.blocking(move |root| {
            let inbox = root.join("inbox");
            let mut mails = Vec::with_capacity(ids.len());
            for id in ids {
                let Some(path) = inbox_path(&inbox, &id) else {
                    continue;
                };
                match read_mail_file(&path, max) {
                    Ok(FileRead::Mail(raw)) => mails.push(RemoteMail::new(id, raw)),
                    Ok(FileRead::TooLarge(at_least)) => mails.push(RemoteMail::oversized(id, at_least)),
                    Ok(FileRead::NotAFile(what)) => {
                        tracing::warn!(file = %id, what, "drop folder: not a regular file; refused");
                        mails.push(RemoteMail::not_a_mail(
                            id,
                            format!("the drop folder entry is {what}, not a regular file"),
                        ))
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        tracing::debug!(file = %id, "drop folder: file gone before fetch; skipped")
                    }
                    Err(e) => return Err(io_error("reading", &path, e)),
                }
            }
            Ok(mails)
        })
        .await
    }

    async fn settle(&mut self, outcomes: &[(String, Outcome)]) -> Result<(), SourceError> {
        let outcomes = outcomes.to_vec();
        self.blocking(move |root| {
            let inbox = root.join("inbox");
            let mut touched = [false, false];
            for (id, outcome) in outcomes {
                let Some(src) = inbox_path(&inbox, &id) else { continue };
                let (idx, target) = match outcome {
                    Outcome::Processed => (0, root.join("processed")),
                    Outcome::Failed => (1, root.join("failed")),
                };
                match move_no_clobber(&src, &target, &id)? {
                    Some(dest) => {
                        touched[idx] = true;
                        tracing::debug!(from = %src.display(), to = %dest.display(), "drop folder: settled");
                    }
                    None => tracing::debug!(file = %id, "drop folder: already settled"),
                }
            }
            // The renames are durable only once both directories are synced.
            if touched.iter().any(|t| *t) {
                sync_dir(&inbox)?;
            }
            for (idx, name) in ["processed", "failed"].iter().enumerate() {
                if touched[idx] {
                    sync_dir(&root.join(name))?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn close(&mut self) -> Result<(), SourceError> {
        Ok(())
    }
}

/// What reading one inbox entry found.
#[derive(Debug, PartialEq, Eq)]
enum FileRead {
    Mail(Vec<u8>),
    /// Over the limit: at least this many bytes.
    TooLarge(u64),
    /// A symlink, FIFO, device, socket or directory: what it is.
    NotAFile(&'static str),
}

/// Reads a mail file without following a symlink, judging the descriptor it
/// opened (not the name, which may have been swapped since it was listed),
/// and reading at most `max` + 1 bytes whatever the file claims.
fn read_mail_file(path: &Path, max: u64) -> io::Result<FileRead> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    // O_NONBLOCK: opening a FIFO must not wait for a writer.
    let file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(file) => file,
        // O_NOFOLLOW on a symlink fails with ELOOP.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(FileRead::NotAFile("a symbolic link")),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a named pipe"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_block_device() || kind.is_char_device() {
            "a device"
        } else {
            "not a regular file"
        };
        return Ok(FileRead::NotAFile(what));
    }
    if meta.len() > max {
        return Ok(FileRead::TooLarge(meta.len()));
    }
    // The file may grow after fstat: the read itself is bounded too.
    let mut raw = Vec::with_capacity(meta.len() as usize);
    file.take(max.saturating_add(1)).read_to_end(&mut raw)?;
    if raw.len() as u64 > max {
        return Ok(FileRead::TooLarge(raw.len() as u64));
    }
    Ok(FileRead::Mail(raw))
}

fn list_inbox(inbox: &Path) -> Result<Vec<Listing>, SourceError> {
    let entries = fs::read_dir(inbox).map_err(|e| io_error("listing", inbox, e))?;
    let mut listings = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error("listing", inbox, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            tracing::warn!(file = ?entry.path(), "drop folder: file name is not UTF-8; ignored");
            continue;
        };
        if !name.ends_with(".eml") || name.starts_with('.') {
            continue;
        }
        // metadata() of a DirEntry does not follow symlinks: only real files count.
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error("reading metadata of", &entry.path(), e)),
        };
        if meta.is_file() {
            listings.push(Listing { remote_id: name.to_string(), size: Some(meta.len()) });
        }
    }
    listings.sort_by(|a, b| a.remote_id.cmp(&b.remote_id));
    Ok(listings)
}

/// The inbox path for a remote id, refusing anything that is not a plain
/// file name (ids come from the journal, but never trust a path).
fn inbox_path(inbox: &Path, id: &str) -> Option<PathBuf> {
    let plain = !id.is_empty() && id != "." && id != ".." && !id.contains('/') && !id.contains('\0');
    if !plain {
        tracing::warn!(remote_id = %id, "drop folder: not a file name; skipped");
        return None;
    }
    Some(inbox.join(id))
}

/// Moves `src` into `dir` under `name`, or `stem-N.ext` if that name is
/// taken: never overwrites. Returns `None` if `src` is gone (already settled).
fn move_no_clobber(src: &Path, dir: &Path, name: &str) -> Result<Option<PathBuf>, SourceError> {
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s, Some(e)),
        _ => (name, None),
    };
    for n in 0u32.. {
        let candidate = match (n, ext) {
            (0, _) => name.to_string(),
            (n, Some(ext)) => format!("{stem}-{n}.{ext}"),
            (n, None) => format!("{stem}-{n}"),
        };
        let dest = dir.join(&candidate);
        // link + unlink is a rename that fails instead of replacing an
        // existing file, even if another process races us.
        match fs::hard_link(src, &dest) {
            Ok(()) => {
                fs::remove_file(src).or_else(ignore_not_found).map_err(|e| io_error("removing", src, e))?;
                return Ok(Some(dest));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !src.exists() => return Ok(None),
            // File systems without hard links: check, then rename.
            Err(e) if matches!(e.kind(), io::ErrorKind::Unsupported | io::ErrorKind::PermissionDenied) => {
                if dest.exists() {
                    continue;
                }
                return match fs::rename(src, &dest) {
                    Ok(()) => Ok(Some(dest)),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(io_error("moving", src, e)),
                };
            }
            Err(e) => return Err(io_error("moving", src, e)),
        }
    }
    unreachable!("u32 suffixes exhausted")
}

fn ignore_not_found(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound { Ok(()) } else { Err(e) }
}

fn sync_dir(dir: &Path) -> Result<(), SourceError> {
    fs::File::open(dir).and_then(|f| f.sync_all()).map_err(|e| io_error("syncing", dir, e))
}

fn io_error(doing: &str, path: &Path, e: io::Error) -> SourceError {
    let message = format!("drop folder: {doing} {} failed: {e}", path.display());
    match e.kind() {
        io::ErrorKind::PermissionDenied => {
            SourceError::permanent(format!("{message} — give the robot access to the folder"))
        }
        io::ErrorKind::NotFound => SourceError::permanent(format!("{message} — check the drop folder path")),
        _ => SourceError::transient(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clash_gets_suffix() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::create_dir_all(&a).unwrap();
        fs::create_dir_all(&b).unwrap();
        fs::write(b.join("m.eml"), "old").unwrap();
        fs::write(b.join("m-1.eml"), "older").unwrap();
        fs::write(a.join("m.eml"), "new").unwrap();
        let dest = move_no_clobber(&a.join("m.eml"), &b, "m.eml").unwrap().unwrap();
        assert_eq!(dest, b.join("m-2.eml"));
        assert_eq!(fs::read_to_string(b.join("m.eml")).unwrap(), "old");
        assert_eq!(fs::read_to_string(dest).unwrap(), "new");
        assert!(move_no_clobber(&a.join("m.eml"), &b, "m.eml").unwrap().is_none());
    }

    #[test]
    fn reads_regular_files_only_and_never_past_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("master.key");
        fs::write(&secret, "SECRET-KEY-BYTES").unwrap();
        let mail = dir.path().join("m.eml");
        fs::write(&mail, "Subject: x\r\n\r\nbody").unwrap();
        assert_eq!(read_mail_file(&mail, 100).unwrap(), FileRead::Mail(b"Subject: x\r\n\r\nbody".to_vec()));
        assert_eq!(read_mail_file(&mail, 5).unwrap(), FileRead::TooLarge(18));

        let link = dir.path().join("link.eml");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        assert_eq!(read_mail_file(&link, 100).unwrap(), FileRead::NotAFile("a symbolic link"));

        let fifo = dir.path().join("fifo.eml");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(read_mail_file(&fifo, 100).unwrap(), FileRead::NotAFile("a named pipe"));
        assert_eq!(read_mail_file(dir.path(), 100).unwrap(), FileRead::NotAFile("a directory"));
        assert_eq!(read_mail_file(Path::new("/dev/zero"), 100).unwrap(), FileRead::NotAFile("a device"));
    }

    #[test]
    fn ids_must_be_file_names() {
        let inbox = Path::new("/x/inbox");
        assert!(inbox_path(inbox, "../etc/passwd").is_none());
        assert!(inbox_path(inbox, "..").is_none());
        assert_eq!(inbox_path(inbox, "a.eml").unwrap(), inbox.join("a.eml"));
    }
}
