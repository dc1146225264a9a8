//! The mailbox store shared by the Graph and EWS front ends: mailboxes, folders, messages (kept
//! as raw MIME plus what Graph shows of them), the change log delta queries and SyncFolderItems
//! read, mailbox permissions, application access policies and the per-(app, mailbox)
//! concurrency counters.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use mail_parser::{MessageParser, MimeHeaders};

use crate::EmulatorError;
use crate::config::{AccessPolicySpec, FolderInfo, MailboxSpec, MessageInfo, ReadReceipt};

/// Well-known folders every mailbox has: (well-known name, display name, parent well-known name).
pub(crate) const WELL_KNOWN: [(&str, &str, &str); 12] = [
    ("inbox", "Inbox", "msgfolderroot"),
    ("archive", "Archive", "msgfolderroot"),
    ("conversationhistory", "Conversation History", "msgfolderroot"),
    ("deleteditems", "Deleted Items", "msgfolderroot"),
    ("drafts", "Drafts", "msgfolderroot"),
    ("junkemail", "Junk Email", "msgfolderroot"),
    ("outbox", "Outbox", "msgfolderroot"),
    ("sentitems", "Sent Items", "msgfolderroot"),
    ("clutter", "Clutter", "msgfolderroot"),
    ("scheduled", "Scheduled", "msgfolderroot"),
    ("searchfolders", "Search Folders", "msgfolderroot"),
    ("syncissues", "Sync Issues", "msgfolderroot"),
];

/// Prefix of REST ids (messages and folders), as Exchange's EWS-derived ids start.
const REST_PREFIX: &str = "AAMkA";
/// Prefix of immutable ids (`Prefer: IdType="ImmutableId"`), as Exchange's start.
const IMMUTABLE_PREFIX: &str = "AAkALgAA";
/// Random bytes after the prefix: 32 bytes give 44 base64 characters ending in `=`.
const ID_BYTES: usize = 32;

fn new_id(prefix: &str) -> String {
    use rand::RngCore;
    let mut b = [0u8; ID_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("{prefix}{}", URL_SAFE.encode(b))
}

/// Whether a string has the shape of an id this store hands out (else Graph answers
/// `ErrorInvalidIdMalformed`). EWS spells the same ids with `+` and `/`.
pub(crate) fn id_well_formed(id: &str) -> bool {
    let rest = id.strip_prefix(IMMUTABLE_PREFIX).or_else(|| id.strip_prefix(REST_PREFIX));
    rest.is_some_and(|r| URL_SAFE.decode(r.replace('+', "-").replace('/', "_")).is_ok_and(|b| b.len() == ID_BYTES))
}

/// Graph (URL-safe) spelling of an id given in EWS (standard base64) spelling.
pub(crate) fn from_ews_id(id: &str) -> String {
    id.replace('+', "-").replace('/', "_")
}

/// An address as Graph shows it: `{"emailAddress": {"name", "address"}}`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Addr {
    pub name: String,
    pub address: String,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Attachment {
    pub name: String,
    pub content_type: String,
    pub inline: bool,
    pub content_id: Option<String>,
    pub bytes: Vec<u8>,
}

/// What Graph and EWS show of a MIME message, read once on delivery.
#[derive(Debug, Clone, Default)]
pub(crate) struct Summary {
    pub subject: String,
    pub from: Option<Addr>,
    pub sender: Option<Addr>,
    pub to: Vec<Addr>,
    pub cc: Vec<Addr>,
    pub reply_to: Vec<Addr>,
    pub internet_message_id: String,
    pub sent_ms: Option<i64>,
    pub html: Option<String>,
    pub text: Option<String>,
    pub preview: String,
    pub importance: &'static str,
    pub conversation_id: String,
    pub attachments: Vec<Attachment>,
    /// The `Disposition-Notification-To` address: the sender asks for a read receipt (RFC 8098).
    pub receipt_to: Option<String>,
}

impl Summary {
    /// The addresses transport delivers to: `To` and `Cc` (a `Bcc` header does not travel).
    pub fn recipients(&self) -> Vec<String> {
        self.to.iter().chain(&self.cc).map(|a| a.address.clone()).filter(|a| !a.is_empty()).collect()
    }
}

fn addrs(a: Option<&mail_parser::Address<'_>>) -> Vec<Addr> {
    a.map(|a| {
        a.iter()
            .map(|x| Addr {
                name: x.name().unwrap_or_else(|| x.address().unwrap_or_default()).to_string(),
                address: x.address().unwrap_or_default().to_string(),
            })
            .collect()
    })
    .unwrap_or_default()
}

/// Reads the parts of a MIME message Graph shows. Unparseable input still makes a message (Exchange
/// accepts anything transport hands it): an empty subject and the raw text as body.
pub(crate) fn summarize(mime: &[u8]) -> Summary {
    let Some(m) = MessageParser::default().parse(mime) else {
        let text = String::from_utf8_lossy(mime).into_owned();
        return Summary { preview: preview(&text), text: Some(text), importance: "normal", ..Default::default() };
    };
    // mail-parser renders text parts as HTML too; Graph shows HTML only when the mail has some.
    let has_html = m.html_part(0).is_some_and(|p| p.is_content_type("text", "html"));
    let html = m.body_html(0).map(|c| c.into_owned()).filter(|_| has_html);
    let text = m.body_text(0).map(|c| c.into_owned());
    let importance = match m.header_raw("Importance").or_else(|| m.header_raw("X-Priority")).map(str::trim) {
        Some(v) if v.eq_ignore_ascii_case("high") || v.starts_with('1') || v.starts_with('2') => "high",
        Some(v) if v.eq_ignore_ascii_case("low") || v.starts_with('4') || v.starts_with('5') => "low",
        _ => "normal",
    };
    let message_id = m.message_id().map(|id| format!("<{id}>")).unwrap_or_default();
    // A conversation is named by the first message of its thread, as Exchange groups them.
    let root = m
        .references()
        .as_text_list()
        .and_then(|l| l.first().map(|s| s.to_string()))
        .or_else(|| m.references().as_text().map(str::to_string))
        .or_else(|| m.in_reply_to().as_text().map(str::to_string))
        .unwrap_or_else(|| message_id.clone());
    let digest = crate::jwt::sha256(root.as_bytes());
    let attachments = m
        .attachments()
        .map(|p| Attachment {
            name: p.attachment_name().unwrap_or("attachment").to_string(),
            content_type: p
                .content_type()
                .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("octet-stream")))
                .unwrap_or_else(|| "application/octet-stream".into()),
            inline: p.content_disposition().is_some_and(|d| d.ctype().eq_ignore_ascii_case("inline")),
            content_id: p.content_id().map(str::to_string),
            bytes: p.contents().to_vec(),
        })
        .collect::<Vec<_>>();
    let preview_src = text.clone().unwrap_or_else(|| html.clone().map(|h| strip_tags(&h)).unwrap_or_default());
    Summary {
        subject: m.subject().unwrap_or_default().to_string(),
        from: addrs(m.from()).into_iter().next(),
        sender: addrs(m.sender().or(m.from())).into_iter().next(),
        to: addrs(m.to()),
        cc: addrs(m.cc()),
        reply_to: addrs(m.reply_to()),
        internet_message_id: message_id,
        sent_ms: m.date().map(|d| d.to_timestamp() * 1000),
        preview: preview(&preview_src),
        html,
        text,
        importance,
        conversation_id: format!("AAQkA{}", URL_SAFE.encode(&digest[..24])),
        attachments,
        receipt_to: m.header_raw("Disposition-Notification-To").and_then(receipt_address),
    }
}

/// The address of a `Disposition-Notification-To` header (`Name <a@b>` or `a@b`).
fn receipt_address(value: &str) -> Option<String> {
    let value = value.trim();
    let address = match (value.rfind('<'), value.rfind('>')) {
        (Some(open), Some(close)) if open < close => &value[open + 1..close],
        _ => value,
    };
    let address = address.trim();
    address.contains('@').then(|| address.to_string())
}

/// Graph's `bodyPreview`: the first 255 characters of the text, whitespace collapsed.
fn preview(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(255).collect()
}

fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Folder {
    pub id: String,
    pub parent: Option<String>,
    pub display_name: String,
    pub well_known: Option<&'static str>,
}

#[derive(Debug, Clone)]
pub(crate) struct Message {
    /// Changes on every move (unless the client asks for immutable ids).
    pub rest_id: String,
    pub immutable_id: String,
    pub folder: String,
    pub mime: Arc<Vec<u8>>,
    pub summary: Arc<Summary>,
    pub created_ms: i64,
    pub received_ms: i64,
    pub modified_ms: i64,
    pub is_read: bool,
    pub categories: Vec<String>,
    /// Mailbox change number of the last change (delta and SyncFolderItems order by it).
    pub seq: u64,
    /// Change number of the last change other than the read flag (EWS `Update` vs `ReadFlagChange`).
    pub content_seq: u64,
    /// Change number of its arrival in its folder (EWS `Create` vs `Update`).
    pub created_seq: u64,
    /// A read receipt is asked for and not yet sent nor suppressed (MAPI's "receipt pending").
    pub receipt_pending: bool,
}

impl Message {
    /// `@odata.etag` / EWS ChangeKey: changes with every change of the message.
    pub fn change_key(&self) -> String {
        let mut b = self.immutable_id.as_bytes()[..8].to_vec();
        b.extend_from_slice(&self.seq.to_be_bytes());
        format!("CQAAABYAAA{}", URL_SAFE.encode(b))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Removal {
    /// Moved to another folder.
    Moved,
    /// Deleted.
    Deleted,
}

/// What happened to a message, as Graph change notifications name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    Created,
    Updated,
    Deleted,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Updated => "updated",
            ChangeKind::Deleted => "deleted",
        }
    }
}

/// A change of a message, kept until change notifications have looked at it (`subscriptions`
/// drains them). A move is two changes: `deleted` in the folder left (the id the client knew) and
/// `created` in the folder entered (the new id), as the item is a new one there.
#[derive(Debug, Clone)]
pub(crate) struct MailChange {
    pub kind: ChangeKind,
    pub folder: String,
    pub rest_id: String,
    pub immutable_id: String,
    /// The message's change key at that moment (`@odata.etag` in the notification).
    pub change_key: String,
    /// The mailbox change number of the change.
    pub seq: u64,
}

/// Changes kept at most while nobody drains them (the server's notifier drains them every tick).
const MAX_PENDING_CHANGES: usize = 50_000;

/// A message that left a folder, for delta `@removed` and SyncFolderItems `Delete`.
#[derive(Debug, Clone)]
pub(crate) struct Tombstone {
    pub folder: String,
    pub rest_id: String,
    pub immutable_id: String,
    pub seq: u64,
    pub reason: Removal,
}

#[derive(Debug, Clone)]
pub(crate) struct Mailbox {
    pub id: String,
    pub tenant_id: String,
    pub address: String,
    pub display_name: String,
    /// The user whose mailbox this is (None for shared mailboxes).
    pub owner_oid: Option<String>,
    pub rest_disabled: bool,
    pub latency_ms: u64,
    pub folders: Vec<Folder>,
    pub messages: Vec<Message>,
    pub tombstones: Vec<Tombstone>,
    /// Users (oids) with full access besides the owner.
    pub full_access: Vec<String>,
    /// Apps (client ids) whose Exchange service principal has full access.
    pub app_full_access: Vec<String>,
    /// Users (oids) who may send as the mailbox besides the owner (`Add-RecipientPermission
    /// -AccessRights SendAs`): full access alone does not let a delegate send as it.
    pub send_as: Vec<String>,
    /// Bumped to expire every delta token and sync state at once.
    pub epoch: u64,
    /// The mailbox change number.
    pub seq: u64,
    /// Read receipts sent for its messages, oldest first.
    pub receipts: Vec<ReadReceipt>,
    /// Message changes change notifications have not looked at yet, oldest first.
    pub changes: Vec<MailChange>,
}

impl Mailbox {
    fn new(tenant_id: String, address: String, display_name: String, owner_oid: Option<String>) -> Mailbox {
        let root = Folder {
            id: new_id(REST_PREFIX),
            parent: None,
            display_name: "Top of Information Store".into(),
            well_known: Some("msgfolderroot"),
        };
        let mut folders = vec![root.clone()];
        for (wk, name, _) in WELL_KNOWN {
            folders.push(Folder {
                id: new_id(REST_PREFIX),
                parent: Some(root.id.clone()),
                display_name: name.into(),
                well_known: Some(wk),
            });
        }
        Mailbox {
            id: owner_oid.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            tenant_id,
            address,
            display_name,
            owner_oid,
            rest_disabled: false,
            latency_ms: 0,
            folders,
            messages: Vec::new(),
            tombstones: Vec::new(),
            full_access: Vec::new(),
            app_full_access: Vec::new(),
            send_as: Vec::new(),
            epoch: 1,
            seq: 0,
            receipts: Vec::new(),
            changes: Vec::new(),
        }
    }

    /// Notes a change of message `i` for change notifications.
    fn note_change(&mut self, kind: ChangeKind, i: usize) {
        let m = &self.messages[i];
        let change = MailChange {
            kind,
            folder: m.folder.clone(),
            rest_id: m.rest_id.clone(),
            immutable_id: m.immutable_id.clone(),
            change_key: m.change_key(),
            seq: m.seq,
        };
        self.push_change(change);
    }

    fn push_change(&mut self, change: MailChange) {
        if self.changes.len() >= MAX_PENDING_CHANGES {
            self.changes.drain(..MAX_PENDING_CHANGES / 5);
        }
        self.changes.push(change);
    }

    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// A folder by id (either spelling) or well-known name (case-insensitive, as Graph).
    pub fn folder(&self, key: &str) -> Option<&Folder> {
        let graph = from_ews_id(key);
        self.folders.iter().find(|f| f.id == graph || f.well_known.is_some_and(|w| w.eq_ignore_ascii_case(key)))
    }

    /// A folder as the admin API names it: id, well-known name, or a display name (unique).
    pub fn folder_loose(&self, key: &str) -> Option<&Folder> {
        self.folder(key).or_else(|| self.folders.iter().find(|f| f.display_name.eq_ignore_ascii_case(key)))
    }

    pub fn root(&self) -> &Folder {
        &self.folders[0]
    }

    pub fn children(&self, parent: &str) -> impl Iterator<Item = &Folder> {
        self.folders.iter().filter(move |f| f.parent.as_deref() == Some(parent))
    }

    pub fn message_index(&self, id: &str) -> Option<usize> {
        let id = from_ews_id(id);
        self.messages.iter().position(|m| m.rest_id == id || m.immutable_id == id)
    }

    pub fn message(&self, id: &str) -> Option<&Message> {
        self.message_index(id).map(|i| &self.messages[i])
    }

    pub fn in_folder<'a>(&'a self, folder: &'a str) -> impl Iterator<Item = &'a Message> + 'a {
        self.messages.iter().filter(move |m| m.folder == folder)
    }

    /// Creates a subfolder; Exchange refuses a duplicate name under one parent (ErrorFolderExists).
    pub fn create_folder(&mut self, parent: &str, name: &str) -> Result<Folder, MailError> {
        let parent = self.folder(parent).ok_or(MailError::FolderNotFound)?.id.clone();
        if name.trim().is_empty() {
            return Err(MailError::Invalid("displayName must not be empty".into()));
        }
        if self.children(&parent).any(|f| f.display_name.eq_ignore_ascii_case(name)) {
            return Err(MailError::FolderExists);
        }
        let f = Folder { id: new_id(REST_PREFIX), parent: Some(parent), display_name: name.into(), well_known: None };
        self.folders.push(f.clone());
        Ok(f)
    }

    /// Puts a MIME message into a folder; returns its index.
    pub fn deliver(
        &mut self,
        folder: &str,
        mime: Vec<u8>,
        received_ms: i64,
        is_read: bool,
    ) -> Result<usize, MailError> {
        let folder = self.folder_loose(folder).ok_or(MailError::FolderNotFound)?.id.clone();
        let seq = self.next_seq();
        let summary = summarize(&mime);
        let receipt_pending = summary.receipt_to.is_some() && !is_read;
        self.messages.push(Message {
            rest_id: new_id(REST_PREFIX),
            immutable_id: new_id(IMMUTABLE_PREFIX),
            folder,
            mime: Arc::new(mime),
            summary: Arc::new(summary),
            created_ms: received_ms,
            received_ms,
            modified_ms: received_ms,
            is_read,
            categories: Vec::new(),
            seq,
            content_seq: seq,
            created_seq: seq,
            receipt_pending,
        });
        let i = self.messages.len() - 1;
        self.note_change(ChangeKind::Created, i);
        Ok(i)
    }

    /// Moves a message; its REST id changes (the immutable one does not). Returns its index.
    pub fn move_message(&mut self, id: &str, dest: &str, now_ms: i64) -> Result<usize, MailError> {
        let dest = self.folder(dest).ok_or(MailError::FolderNotFound)?.id.clone();
        let i = self.message_index(id).ok_or(MailError::ItemNotFound)?;
        let seq = self.next_seq();
        let m = &mut self.messages[i];
        let left = MailChange {
            kind: ChangeKind::Deleted,
            folder: m.folder.clone(),
            rest_id: m.rest_id.clone(),
            immutable_id: m.immutable_id.clone(),
            change_key: m.change_key(),
            seq,
        };
        let from = std::mem::replace(&mut m.folder, dest);
        let tomb = Tombstone {
            folder: from,
            rest_id: m.rest_id.clone(),
            immutable_id: m.immutable_id.clone(),
            seq,
            reason: Removal::Moved,
        };
        m.rest_id = new_id(REST_PREFIX);
        m.seq = seq;
        m.created_seq = seq;
        m.content_seq = seq;
        m.modified_ms = now_ms;
        self.tombstones.push(tomb);
        self.push_change(left);
        self.note_change(ChangeKind::Created, i);
        Ok(i)
    }

    pub fn delete_message(&mut self, id: &str) -> Result<(), MailError> {
        let i = self.message_index(id).ok_or(MailError::ItemNotFound)?;
        let seq = self.next_seq();
        let m = self.messages.remove(i);
        self.push_change(MailChange {
            kind: ChangeKind::Deleted,
            folder: m.folder.clone(),
            rest_id: m.rest_id.clone(),
            immutable_id: m.immutable_id.clone(),
            change_key: m.change_key(),
            seq,
        });
        self.tombstones.push(Tombstone {
            folder: m.folder,
            rest_id: m.rest_id,
            immutable_id: m.immutable_id,
            seq,
            reason: Removal::Deleted,
        });
        Ok(())
    }

    /// Sets the read flag and/or categories (Graph PATCH, EWS UpdateItem).
    pub fn update_message(
        &mut self,
        id: &str,
        is_read: Option<bool>,
        categories: Option<Vec<String>>,
        now_ms: i64,
    ) -> Result<usize, MailError> {
        let i = self.message_index(id).ok_or(MailError::ItemNotFound)?;
        let seq = self.next_seq();
        let m = &mut self.messages[i];
        if let Some(r) = is_read {
            m.is_read = r;
        }
        if let Some(c) = categories {
            m.categories = c;
            m.content_seq = seq;
        }
        m.seq = seq;
        m.modified_ms = now_ms;
        self.note_change(ChangeKind::Updated, i);
        Ok(i)
    }

    /// The read receipt due when message `i` is read (`read`) or deleted unread (`not-read`):
    /// sent unless `suppressed`; either way it is no longer pending (Exchange sends one at most).
    /// Returns whether one was sent.
    pub fn settle_receipt(&mut self, i: usize, kind: &str, suppressed: bool, cause: &str, now_ms: i64) -> bool {
        let m = &mut self.messages[i];
        if !std::mem::take(&mut m.receipt_pending) || suppressed {
            return false;
        }
        let receipt = ReadReceipt {
            mailbox: self.address.clone(),
            to: m.summary.receipt_to.clone().unwrap_or_default(),
            internet_message_id: m.summary.internet_message_id.clone(),
            subject: m.summary.subject.clone(),
            kind: kind.into(),
            cause: cause.into(),
            at: chrono::DateTime::from_timestamp_millis(now_ms),
        };
        tracing::info!(mailbox = %receipt.mailbox, to = %receipt.to, kind, cause, "read receipt sent");
        self.receipts.push(receipt);
        true
    }

    pub fn folder_name(&self, id: &str) -> String {
        self.folders
            .iter()
            .find(|f| f.id == id)
            .map(|f| f.well_known.map(str::to_string).unwrap_or_else(|| f.display_name.clone()))
            .unwrap_or_default()
    }

    pub fn info(&self, m: &Message) -> MessageInfo {
        MessageInfo {
            id: m.rest_id.clone(),
            immutable_id: m.immutable_id.clone(),
            folder_id: m.folder.clone(),
            folder: self.folder_name(&m.folder),
            subject: m.summary.subject.clone(),
            internet_message_id: m.summary.internet_message_id.clone(),
            is_read: m.is_read,
            categories: m.categories.clone(),
            received_at: chrono::DateTime::from_timestamp_millis(m.received_ms),
        }
    }

    pub fn folder_info(&self, f: &Folder) -> FolderInfo {
        FolderInfo {
            id: f.id.clone(),
            display_name: f.display_name.clone(),
            well_known_name: f.well_known.map(str::to_string),
            parent_id: f.parent.clone(),
            total: self.in_folder(&f.id).count(),
            unread: self.in_folder(&f.id).filter(|m| !m.is_read).count(),
        }
    }
}

/// What the store can refuse; each front end words it its own way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum MailError {
    #[error("The specified object was not found in the store.")]
    ItemNotFound,
    #[error("The specified folder could not be found in the store.")]
    FolderNotFound,
    #[error("A folder with the specified name already exists.")]
    FolderExists,
    #[error("{0}")]
    Invalid(String),
}

/// All mailboxes plus the settings around them.
#[derive(Debug, Default)]
pub(crate) struct MailStore {
    pub mailboxes: Vec<Mailbox>,
    /// (tenant id, client id) → mailbox addresses the app may reach app-only.
    pub policies: HashMap<(String, String), Vec<String>>,
    /// (tenant id, client id) of apps registered as Exchange service principals.
    pub service_principals: Vec<(String, String)>,
    /// (client id, mailbox id) → requests in flight.
    pub inflight: HashMap<(String, String), usize>,
    /// Concurrent requests allowed per (app, mailbox); Outlook's limit is 4.
    pub concurrency_limit: usize,
}

impl MailStore {
    pub fn new() -> MailStore {
        MailStore { concurrency_limit: 4, ..Default::default() }
    }

    /// A mailbox by address (case-insensitive) or id.
    pub fn find(&self, key: &str) -> Option<usize> {
        self.mailboxes.iter().position(|m| m.address.eq_ignore_ascii_case(key) || m.id.eq_ignore_ascii_case(key))
    }

    pub fn get(&self, key: &str) -> Result<&Mailbox, EmulatorError> {
        self.find(key).map(|i| &self.mailboxes[i]).ok_or_else(|| EmulatorError::NotFound(format!("mailbox {key}")))
    }

    pub fn get_mut(&mut self, key: &str) -> Result<&mut Mailbox, EmulatorError> {
        match self.find(key) {
            Some(i) => Ok(&mut self.mailboxes[i]),
            None => Err(EmulatorError::NotFound(format!("mailbox {key}"))),
        }
    }

    pub fn add(
        &mut self,
        spec: &MailboxSpec,
        tenant_id: String,
        owner: Option<(String, String)>,
    ) -> Result<&Mailbox, EmulatorError> {
        if !spec.address.contains('@') {
            return Err(EmulatorError::Invalid(format!("'{}' is not a mail address", spec.address)));
        }
        if self.find(&spec.address).is_some() {
            return Err(EmulatorError::Conflict(format!("mailbox {}", spec.address)));
        }
        let name = spec
            .display_name
            .clone()
            .or_else(|| owner.as_ref().map(|(_, n)| n.clone()))
            .unwrap_or_else(|| spec.address.clone());
        let mut mb = Mailbox::new(tenant_id, spec.address.clone(), name, owner.map(|(oid, _)| oid));
        mb.rest_disabled = spec.rest_disabled;
        mb.latency_ms = spec.latency_ms;
        self.mailboxes.push(mb);
        Ok(self.mailboxes.last().expect("just pushed"))
    }

    /// Transport of a sent message: a copy into the Inbox of every recipient that is a mailbox
    /// here, once per mailbox however often it is named; other recipients are outside the
    /// emulator and see nothing. Graph `sendMail` and EWS `CreateItem` both send through here.
    /// Returns how many mailboxes got it.
    pub fn transport(&mut self, recipients: &[String], mime: &[u8], now_ms: i64) -> usize {
        let mut reached: Vec<usize> = Vec::new();
        for r in recipients {
            let Some(i) = self.mailboxes.iter().position(|m| m.address.eq_ignore_ascii_case(r.trim())) else {
                continue;
            };
            if !reached.contains(&i) && self.mailboxes[i].deliver("inbox", mime.to_vec(), now_ms, false).is_ok() {
                reached.push(i);
            }
        }
        reached.len()
    }

    pub fn set_policy(&mut self, tenant_id: String, p: &AccessPolicySpec) {
        self.policies.insert((tenant_id, p.client_id.clone()), p.mailboxes.clone());
    }

    /// Whether the app has an Exchange service principal in the tenant (`New-ServicePrincipal`).
    pub fn has_service_principal(&self, tenant_id: &str, client_id: &str) -> bool {
        self.service_principals.iter().any(|(t, c)| t == tenant_id && c.eq_ignore_ascii_case(client_id))
    }

    /// Whether an application access policy keeps the app away from the mailbox.
    pub fn blocked_by_policy(&self, mb: &Mailbox, client_id: &str) -> bool {
        self.policies
            .get(&(mb.tenant_id.clone(), client_id.to_string()))
            .is_some_and(|allowed| !allowed.iter().any(|a| a.eq_ignore_ascii_case(&mb.address) || a == &mb.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIME: &str = "From: Alice <alice@example.test>\r\nTo: Bob <bob@example.test>, carol@example.test\r\n\
        Subject: Hello\r\nMessage-ID: <m1@example.test>\r\nDate: Tue, 1 Jul 2025 10:00:00 +0000\r\n\
        Importance: High\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHi   there\r\nBob\r\n";

    #[test]
    fn summary_reads_the_headers_graph_shows() {
        let s = summarize(MIME.as_bytes());
        assert_eq!(s.subject, "Hello");
        assert_eq!(s.from, Some(Addr { name: "Alice".into(), address: "alice@example.test".into() }));
        assert_eq!(s.to.len(), 2);
        assert_eq!(s.to[1].name, "carol@example.test");
        assert_eq!(s.internet_message_id, "<m1@example.test>");
        assert_eq!(s.preview, "Hi there Bob");
        assert_eq!(s.importance, "high");
        assert_eq!(s.sent_ms, Some(1_751_364_000_000));
    }

    #[test]
    fn a_receipt_request_is_read_from_the_headers_and_sent_once() {
        let asking =
            MIME.replace("Importance: High\r\n", "Disposition-Notification-To: \"Alice\" <alice@example.test>\r\n");
        assert_eq!(summarize(asking.as_bytes()).receipt_to.as_deref(), Some("alice@example.test"));
        assert_eq!(summarize(MIME.as_bytes()).receipt_to, None);
        let mut mb = Mailbox::new("t".into(), "a@b.test".into(), "A".into(), None);
        let i = mb.deliver("inbox", asking.into_bytes(), 0, false).unwrap();
        assert!(mb.settle_receipt(i, "read", false, "EWS UpdateItem", 0));
        assert!(!mb.settle_receipt(i, "read", false, "EWS UpdateItem", 0), "at most one");
        assert_eq!(mb.receipts.len(), 1);
        assert_eq!((mb.receipts[0].to.as_str(), mb.receipts[0].kind.as_str()), ("alice@example.test", "read"));
        // Suppressed: none sent, and none due any more.
        let j = mb
            .deliver(
                "inbox",
                MIME.replace("Importance: High\r\n", "Disposition-Notification-To: x@y.test\r\n").into_bytes(),
                0,
                false,
            )
            .unwrap();
        assert!(!mb.settle_receipt(j, "read", true, "EWS UpdateItem", 0));
        assert!(!mb.settle_receipt(j, "read", false, "EWS UpdateItem", 0));
        assert_eq!(mb.receipts.len(), 1);
    }

    #[test]
    fn ids_are_well_formed_and_moves_change_rest_ids() {
        let mut mb = Mailbox::new("t".into(), "a@b.test".into(), "A".into(), None);
        let i = mb.deliver("inbox", MIME.as_bytes().to_vec(), 0, false).unwrap();
        let (rest, imm) = (mb.messages[i].rest_id.clone(), mb.messages[i].immutable_id.clone());
        assert!(
            id_well_formed(&rest) && id_well_formed(&imm) && id_well_formed(&rest.replace('-', "+").replace('_', "/"))
        );
        assert!(!id_well_formed("nope") && !id_well_formed("AAMkAxyz"));
        mb.move_message(&rest, "archive", 1).unwrap();
        assert!(mb.message(&rest).is_none());
        assert_eq!(mb.message(&imm).unwrap().immutable_id, imm);
        assert_eq!(mb.tombstones.len(), 1);
        assert!(mb.create_folder("inbox", "Done").is_ok());
        assert_eq!(mb.create_folder("inbox", "done"), Err(MailError::FolderExists));
    }
}
