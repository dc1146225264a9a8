use crate::classify::MailKind;

/// A mail address with its decoded display name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Address {
    pub name: Option<String>,
    /// Lower-cased addr-spec (what matching compares); may be empty for a
    /// group without members.
    pub email: String,
    /// The addr-spec exactly as written (case and plus-addressing kept):
    /// where an answer goes.
    #[serde(default)]
    pub as_written: String,
}

impl Address {
    /// Where mail to this address goes: as written.
    pub fn send_to(&self) -> &str {
        if self.as_written.is_empty() { &self.email } else { &self.as_written }
    }
}

/// An attachment or inline part (not a text or HTML body part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub filename: Option<String>,
    pub content_type: String,
    pub content_id: Option<String>,
    pub inline: bool,
    /// The decoded content.
    pub data: Vec<u8>,
}

impl Attachment {
    pub fn size(&self) -> usize {
        self.data.len()
    }
}

/// Everything the robot needs from one mail, decoded best-effort.
#[derive(Debug, Clone)]
pub struct ParsedMail {
    /// Message-ID without angle brackets.
    pub message_id: Option<String>,
    pub subject: String,
    pub from: Option<Address>,
    pub reply_to: Vec<Address>,
    pub to: Vec<Address>,
    pub cc: Vec<Address>,
    /// RFC 3339, when the Date header could be read.
    pub date: Option<String>,
    pub in_reply_to: Vec<String>,
    pub references: Vec<String>,
    /// Message ids this mail refers to, in order: In-Reply-To, References,
    /// and for a bounce the Message-ID of the returned original.
    pub refers_to: Vec<String>,
    /// Subject of the embedded original of a bounce, if any.
    pub original_subject: Option<String>,
    /// Plain text; derived from the HTML body when the mail has no text part.
    pub text_body: String,
    /// The new text of a reply, without the history it quotes, when that
    /// could be told apart ([`crate::quote`]); None: all of `text_body` is new.
    pub new_text: Option<String>,
    /// The HTML body as received (sanitize before display: [`crate::html`]).
    pub html_body: Option<String>,
    pub attachments: Vec<Attachment>,
    pub kind: MailKind,
    /// The robot must not answer this mail automatically (auto-reply, bounce,
    /// Precedence bulk/junk/list, mailing lists, another mailrobot…).
    pub no_auto_answer: bool,
    /// Why not, when it must not ([`crate::answer`]).
    pub answer_block: Option<crate::answer::AnswerBlock>,
    /// SHA-256 (hex) of the mail without its trace headers: equal for copies
    /// of one mail delivered to several mailboxes.
    pub fingerprint: String,
    /// Decoding problems met on the way (kept for the journal, not fatal).
    pub warnings: Vec<String>,
    /// The raw mail's size in bytes.
    pub raw_size: u64,
    /// The header block as read (at most [`HEADER_BLOCK_LIMIT`] bytes), for
    /// rules that test a header.
    pub header_block: String,
}

/// How much of a header block a parsed mail keeps.
pub const HEADER_BLOCK_LIMIT: usize = 64 * 1024;

impl ParsedMail {
    /// The address a ticket's requester is: Reply-To if given, else From.
    pub fn requester(&self) -> Option<&Address> {
        self.reply_to.first().or(self.from.as_ref())
    }
}
