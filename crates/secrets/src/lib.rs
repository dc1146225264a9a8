//! Secrets at rest.
//!
//! Passwords, client secrets and refresh tokens are sealed with AES-256-GCM
//! before they reach the database. Each sealed value carries the id of the
//! key that sealed it, so the master key can rotate: new values use the
//! current key, old ones still open with a previous key until re-sealed.
//! The sealed value is also bound to a context string (e.g.
//! `"mailbox:support:password"`), so a ciphertext copied into another row
//! does not open there.
//!
//! The master key comes from `MAILROBOT_MASTER_KEY` (64 hex digits or base64
//! of 32 bytes) or from `master.key` in the data directory, created on first
//! use with mode 0600. Previous keys for rotation: `MAILROBOT_PREVIOUS_MASTER_KEYS`
//! (comma-separated, same encodings).

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub const MASTER_KEY_ENV: &str = "MAILROBOT_MASTER_KEY";
pub const PREVIOUS_KEYS_ENV: &str = "MAILROBOT_PREVIOUS_MASTER_KEYS";
pub const KEY_FILE_NAME: &str = "master.key";

const MAGIC: &[u8; 4] = b"MRS1";
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 12;
const HEADER_LEN: usize = MAGIC.len() + KEY_ID_LEN + NONCE_LEN;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{MASTER_KEY_ENV} (or a previous key) is not 32 bytes as 64 hex digits or base64")]
    BadKeyEncoding,
    #[error(
        "the master key file {path} could not be read or created: {source} — check the data directory's permissions"
    )]
    KeyFile { path: String, source: std::io::Error },
    #[error(
        "this secret was sealed with key {0}, which is not loaded: set {MASTER_KEY_ENV} or {PREVIOUS_KEYS_ENV} to that key"
    )]
    UnknownKey(String),
    #[error("a stored secret is damaged or belongs elsewhere; enter it again")]
    Corrupt,
}

/// A secret in memory: zeroed on drop, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// The clear value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

struct MasterKey {
    id: [u8; KEY_ID_LEN],
    cipher: Aes256Gcm,
}

impl MasterKey {
    fn new(bytes: &[u8; 32]) -> Self {
        let digest = Sha256::digest(bytes);
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        Self { id, cipher: Aes256Gcm::new(bytes.into()) }
    }
}

/// Seals and opens secrets with the current master key and any previous ones.
pub struct SecretBox {
    current: MasterKey,
    previous: Vec<MasterKey>,
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBox(key {})", self.current_key_id())
    }
}

impl SecretBox {
    pub fn from_key(key: &[u8; 32]) -> Self {
        Self { current: MasterKey::new(key), previous: Vec::new() }
    }

    /// The key from the environment, else the data directory's key file
    /// (created with mode 0600 if missing).
    pub fn load(data_dir: &Path) -> Result<Self, SecretError> {
        let current = match std::env::var(MASTER_KEY_ENV) {
            Ok(text) if !text.trim().is_empty() => decode_key(&text)?,
            _ => load_or_create_key_file(&data_dir.join(KEY_FILE_NAME))?,
        };
        let mut secret_box = Self::from_key(&current);
        if let Ok(list) = std::env::var(PREVIOUS_KEYS_ENV) {
            for text in list.split(',').filter(|t| !t.trim().is_empty()) {
                secret_box.previous.push(MasterKey::new(&decode_key(text)?));
            }
        }
        Ok(secret_box)
    }

    pub fn current_key_id(&self) -> String {
        hex::encode(self.current.id)
    }

    /// Seals `plaintext` for `context` with the current key.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .current
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: context.as_bytes() })
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut sealed = Vec::with_capacity(HEADER_LEN + ciphertext.len());
        sealed.extend_from_slice(MAGIC);
        sealed.extend_from_slice(&self.current.id);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    pub fn seal_str(&self, secret: &Secret, context: &str) -> Vec<u8> {
        self.seal(secret.expose().as_bytes(), context)
    }

    /// Opens a value sealed for `context` by the current or a previous key.
    pub fn open(&self, sealed: &[u8], context: &str) -> Result<Zeroizing<Vec<u8>>, SecretError> {
        if sealed.len() < HEADER_LEN || &sealed[..MAGIC.len()] != MAGIC {
            return Err(SecretError::Corrupt);
        }
        let key_id = &sealed[MAGIC.len()..MAGIC.len() + KEY_ID_LEN];
        let nonce = &sealed[MAGIC.len() + KEY_ID_LEN..HEADER_LEN];
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == key_id)
            .ok_or_else(|| SecretError::UnknownKey(hex::encode(key_id)))?;
        key.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: &sealed[HEADER_LEN..], aad: context.as_bytes() })
            .map(Zeroizing::new)
            .map_err(|_| SecretError::Corrupt)
    }

    pub fn open_str(&self, sealed: &[u8], context: &str) -> Result<Secret, SecretError> {
        let bytes = self.open(sealed, context)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| SecretError::Corrupt)?;
        Ok(Secret::new(text))
    }

    /// The id (hex) of the key a value was sealed with, if it is one of ours.
    pub fn key_id_of(sealed: &[u8]) -> Option<String> {
        (sealed.len() >= HEADER_LEN && &sealed[..MAGIC.len()] == MAGIC)
            .then(|| hex::encode(&sealed[MAGIC.len()..MAGIC.len() + KEY_ID_LEN]))
    }

    /// Whether a sealed value should be re-sealed with the current key.
    pub fn needs_reseal(&self, sealed: &[u8]) -> bool {
        sealed.len() < HEADER_LEN || sealed[MAGIC.len()..MAGIC.len() + KEY_ID_LEN] != self.current.id
    }
}

fn decode_key(text: &str) -> Result<[u8; 32], SecretError> {
    let text = text.trim();
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).map_err(|_| SecretError::BadKeyEncoding)?
    } else {
        base64::engine::general_purpose::STANDARD.decode(text).map_err(|_| SecretError::BadKeyEncoding)?
    };
    bytes.try_into().map_err(|_| SecretError::BadKeyEncoding)
}

fn load_or_create_key_file(path: &Path) -> Result<[u8; 32], SecretError> {
    let io_err = |source| SecretError::KeyFile { path: path.display().to_string(), source };
    match fs::read_to_string(path) {
        Ok(text) => {
            let mode = fs::metadata(path).map_err(io_err)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "master key file is readable by others; chmod 600 it");
            }
            decode_key(&text)
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).map_err(io_err)?;
            }
            let mut key = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut key);
            // create_new: two processes starting at once must not both write a key.
            match OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
                Ok(mut file) => {
                    file.write_all(hex::encode(key).as_bytes()).map_err(io_err)?;
                    file.sync_all().map_err(io_err)?;
                    tracing::info!(path = %path.display(), "created a new master key file");
                    Ok(key)
                }
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => load_or_create_key_file(path),
                Err(err) => Err(io_err(err)),
            }
        }
        Err(err) => Err(io_err(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_with_context() {
        let sb = SecretBox::from_key(&[7u8; 32]);
        let sealed = sb.seal(b"hunter2", "mailbox:a:password");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(&*sb.open(&sealed, "mailbox:a:password").unwrap(), b"hunter2");
        assert!(matches!(sb.open(&sealed, "mailbox:b:password"), Err(SecretError::Corrupt)));
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(matches!(sb.open(&tampered, "mailbox:a:password"), Err(SecretError::Corrupt)));
    }

    #[test]
    fn rotation_opens_old_values_and_flags_them() {
        let old = SecretBox::from_key(&[1u8; 32]);
        let sealed = old.seal(b"s3cret", "ctx");
        let mut new = SecretBox::from_key(&[2u8; 32]);
        assert!(matches!(new.open(&sealed, "ctx"), Err(SecretError::UnknownKey(_))));
        new.previous.push(MasterKey::new(&[1u8; 32]));
        assert_eq!(&*new.open(&sealed, "ctx").unwrap(), b"s3cret");
        assert!(new.needs_reseal(&sealed));
        assert!(!new.needs_reseal(&new.seal(b"x", "ctx")));
    }

    #[test]
    fn key_file_is_created_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(KEY_FILE_NAME);
        let first = load_or_create_key_file(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load_or_create_key_file(&path).unwrap(), first);
    }

    #[test]
    fn key_encodings() {
        assert_eq!(decode_key(&"ab".repeat(32)).unwrap(), [0xab; 32]);
        let b64 = base64::engine::general_purpose::STANDARD.encode([3u8; 32]);
        assert_eq!(decode_key(&b64).unwrap(), [3u8; 32]);
        assert!(decode_key("short").is_err());
    }

    #[test]
    fn secret_debug_hides_value() {
        assert_eq!(format!("{:?}", Secret::new("pw")), "Secret(***)");
    }
}
