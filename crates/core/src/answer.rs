//! Whether the robot may answer a mail by itself (an acknowledgement, a
//! rejection), and if not, why — so that no two robots ever talk to each
//! other in a loop (RFC 3834 §2, and what real servers do beyond it).
//!
//! Two steps, both pure:
//! 1. [`blocked_by_headers`], at parse time: what the mail says about
//!    itself (auto-reply, bounce, list, bulk, another mailrobot,
//!    `Auto-Submitted` other than `no`, an Exchange suppression, a sender
//!    that never reads answers). Kept on [`ParsedMail::answer_block`].
//! 2. [`may_answer`], when an answer is about to be queued: that, plus what
//!    only the store knows — the robot's own addresses and how many
//!    automatic mails went to this sender and this ticket lately.
//!
//! A suppressed answer is recorded with its [`AnswerBlock::reason`]; it never
//! becomes an outbox row.

use mail_parser::Message;

use crate::classify::MailKind;
use crate::mail::{Address, ParsedMail};

/// The header every mail the robot sends carries: a mail with it came from
/// a mailrobot (this one or another) and is never answered automatically.
pub const ROBOT_HEADER: &str = "X-Mailrobot";

/// Local parts of senders that never read answers.
const NO_REPLY_LOCAL_PARTS: &[&str] = &[
    "noreply",
    "no-reply",
    "no_reply",
    "donotreply",
    "do-not-reply",
    "mailer-daemon",
    "postmaster",
    "bounce",
    "bounces",
];

/// Why the robot does not answer a mail by itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "code", content = "detail", rename_all = "kebab-case")]
pub enum AnswerBlock {
    AutoReply,
    Bounce,
    /// `Auto-Submitted` with a value other than `no` (RFC 3834).
    AutoSubmitted(String),
    /// `List-Id` or `List-Unsubscribe`.
    MailingList,
    /// `Precedence: list|bulk|junk`.
    Bulk(String),
    /// `X-Auto-Response-Suppress` asks for none (Exchange).
    SuppressedBySender,
    /// It carries [`ROBOT_HEADER`]: a mailrobot sent it.
    FromAMailrobot,
    /// noreply@, mailer-daemon@, postmaster@…
    NoReplySender(String),
    /// From one of the robot's own mailboxes.
    OwnAddress(String),
    /// No sender to answer.
    NoRecipient,
    /// The sender got an automatic mail within the window already.
    SenderRateLimit {
        sent: u32,
        limit: u32,
        window_minutes: u32,
    },
    /// The ticket got its day's automatic mails already.
    TicketRateLimit {
        sent: u32,
        limit: u32,
    },
}

impl AnswerBlock {
    /// Words for the journal, the ticket and the operator.
    pub fn reason(&self) -> String {
        match self {
            AnswerBlock::AutoReply => "not answered: it is an automatic reply".into(),
            AnswerBlock::Bounce => "not answered: it is a delivery report (bounce)".into(),
            AnswerBlock::AutoSubmitted(v) => format!("not answered: Auto-Submitted: {v}"),
            AnswerBlock::MailingList => "not answered: it came through a mailing list".into(),
            AnswerBlock::Bulk(p) => format!("not answered: Precedence: {p}"),
            AnswerBlock::SuppressedBySender => "not answered: the sender asked for no automatic answers".into(),
            AnswerBlock::FromAMailrobot => format!("not answered: a mailrobot sent it ({ROBOT_HEADER})"),
            AnswerBlock::NoReplySender(a) => format!("not answered: {a} does not read answers"),
            AnswerBlock::OwnAddress(a) => format!("not answered: {a} is one of the robot's own addresses"),
            AnswerBlock::NoRecipient => "not answered: the mail has no sender to answer".into(),
            AnswerBlock::SenderRateLimit { sent, limit, window_minutes } => format!(
                "not answered: the sender got {sent} automatic mails in the last {window_minutes} minutes (at most {limit})"
            ),
            AnswerBlock::TicketRateLimit { sent, limit } => {
                format!("not answered: the ticket got {sent} automatic mails today (at most {limit})")
            }
        }
    }
}

fn header<'a>(msg: &'a Message<'_>, name: &'static str) -> Option<&'a str> {
    msg.header_raw(name).map(str::trim)
}

/// What the mail says about itself that forbids an automatic answer: the
/// first reason found, or None.
pub fn blocked_by_headers(msg: &Message<'_>, kind: MailKind, from: Option<&Address>) -> Option<AnswerBlock> {
    if header(msg, ROBOT_HEADER).is_some() {
        return Some(AnswerBlock::FromAMailrobot);
    }
    match kind {
        MailKind::Bounce => return Some(AnswerBlock::Bounce),
        MailKind::AutoReply => return Some(AnswerBlock::AutoReply),
        MailKind::Mail => {}
    }
    if let Some(token) = header(msg, "Auto-Submitted").map(|v| v.split(';').next().unwrap_or("").trim())
        && !token.eq_ignore_ascii_case("no")
    {
        return Some(AnswerBlock::AutoSubmitted(token.to_string()));
    }
    if header(msg, "List-Id").is_some() || header(msg, "List-Unsubscribe").is_some() {
        return Some(AnswerBlock::MailingList);
    }
    if let Some(p) = header(msg, "Precedence").map(str::to_ascii_lowercase)
        && matches!(p.as_str(), "bulk" | "junk" | "list" | "auto_reply")
    {
        return Some(AnswerBlock::Bulk(p));
    }
    let suppressed = header(msg, "X-Auto-Response-Suppress").is_some_and(|v| {
        v.split(',').any(|t| matches!(t.trim().to_ascii_lowercase().as_str(), "all" | "oof" | "autoreply"))
    });
    if suppressed {
        return Some(AnswerBlock::SuppressedBySender);
    }
    if let Some(from) = from.filter(|a| is_no_reply(&a.email)) {
        return Some(AnswerBlock::NoReplySender(from.email.clone()));
    }
    None
}

fn is_no_reply(email: &str) -> bool {
    let local = email.split('@').next().unwrap_or("").to_ascii_lowercase();
    let base = local.split('+').next().unwrap_or("");
    NO_REPLY_LOCAL_PARTS.contains(&base)
}

/// An address as it is compared: lower case, without `+tag` in the local part.
pub fn folded(email: &str) -> String {
    let email = email.trim().to_ascii_lowercase();
    match email.split_once('@') {
        Some((local, domain)) => format!("{}@{domain}", local.split('+').next().unwrap_or(local)),
        None => email,
    }
}

/// How many automatic mails the robot sends, at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerLimits {
    /// To one sender within [`AnswerLimits::sender_window_minutes`].
    pub per_sender: u32,
    pub sender_window_minutes: u32,
    /// To one ticket's requester per day.
    pub per_ticket_per_day: u32,
}

impl Default for AnswerLimits {
    fn default() -> Self {
        Self { per_sender: 1, sender_window_minutes: 10, per_ticket_per_day: 10 }
    }
}

/// What the store knows when an answer is about to be queued.
#[derive(Debug, Clone, Default)]
pub struct AnswerFacts<'a> {
    /// Addresses of the robot's own mailboxes (and their From addresses).
    pub own_addresses: &'a [String],
    /// Automatic mails to this sender within the window.
    pub sent_to_sender_recently: u32,
    /// Automatic mails on this ticket today.
    pub sent_on_ticket_today: u32,
    pub limits: AnswerLimits,
}

/// Whom to answer (Reply-To, else From, as written), or why not.
pub fn may_answer<'m>(mail: &'m ParsedMail, facts: &AnswerFacts<'_>) -> Result<&'m Address, AnswerBlock> {
    if let Some(block) = &mail.answer_block {
        return Err(block.clone());
    }
    let to = mail.requester().filter(|a| !a.email.is_empty()).ok_or(AnswerBlock::NoRecipient)?;
    let own: Vec<String> = facts.own_addresses.iter().map(|a| folded(a)).collect();
    for address in mail.from.iter().chain(std::iter::once(to)) {
        if own.contains(&folded(&address.email)) {
            return Err(AnswerBlock::OwnAddress(address.email.clone()));
        }
    }
    if is_no_reply(&to.email) {
        return Err(AnswerBlock::NoReplySender(to.email.clone()));
    }
    let limits = facts.limits;
    if facts.sent_to_sender_recently >= limits.per_sender {
        return Err(AnswerBlock::SenderRateLimit {
            sent: facts.sent_to_sender_recently,
            limit: limits.per_sender,
            window_minutes: limits.sender_window_minutes,
        });
    }
    if facts.sent_on_ticket_today >= limits.per_ticket_per_day {
        return Err(AnswerBlock::TicketRateLimit {
            sent: facts.sent_on_ticket_today,
            limit: limits.per_ticket_per_day,
        });
    }
    Ok(to)
}

/// What kind of mail the robot sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutgoingKind {
    /// To the requester of a new ticket: its number, and how to add to it.
    Acknowledgement,
    /// To the requester when an agent changes the ticket (its status), or a
    /// rule's copy of a mail to someone (`forward`).
    Notification,
    /// An agent's answer, written by a person.
    Reply,
    /// To the sender of a mail a rule or the unknown-sender policy refused.
    Rejection,
}

impl OutgoingKind {
    pub const ALL: [OutgoingKind; 4] =
        [OutgoingKind::Acknowledgement, OutgoingKind::Notification, OutgoingKind::Reply, OutgoingKind::Rejection];

    pub fn as_str(self) -> &'static str {
        match self {
            OutgoingKind::Acknowledgement => "acknowledgement",
            OutgoingKind::Notification => "notification",
            OutgoingKind::Reply => "reply",
            OutgoingKind::Rejection => "rejection",
        }
    }

    /// Sent by the robot on its own (RFC 3834 `Auto-Submitted: auto-replied`),
    /// not written by a person.
    pub fn is_automatic(self) -> bool {
        !matches!(self, OutgoingKind::Reply)
    }
}

impl std::str::FromStr for OutgoingKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        OutgoingKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            format!("{s:?} is not a kind of mail: expected acknowledgement, notification, reply or rejection")
        })
    }
}

impl std::fmt::Display for OutgoingKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A file sent with a mail: its bytes are kept as a blob until sent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutgoingAttachment {
    pub filename: String,
    pub content_type: String,
    pub sha256: String,
    pub size: u64,
}

impl OutgoingAttachment {
    /// The original of a forwarded mail, by its stored blob.
    pub fn original(sha256: String, size: u64) -> Self {
        OutgoingAttachment {
            filename: "original.eml".into(),
            // Not message/rfc822: that type may not be base64 (RFC 2046
            // 5.2.1), and every attachment is sent as base64.
            content_type: "application/octet-stream".into(),
            sha256,
            size,
        }
    }
}

/// A mail the robot will send, as the outbox keeps it (rendered to MIME by
/// the sender at its first attempt).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutgoingMail {
    pub kind: OutgoingKind,
    pub mailbox_id: i64,
    /// None for a rejection (no ticket was made).
    pub ticket: Option<u64>,
    /// The journal row it answers.
    pub journal_id: i64,
    pub from: String,
    /// As written in the mail answered (Reply-To, else From).
    pub to: String,
    pub subject: String,
    /// Without angle brackets. Stable for the row: the idempotency key.
    pub message_id: String,
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
    pub text: String,
    /// The HTML alternative, when the template has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// Where answers should go, when the mailbox names an address other
    /// than the one it sends from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    #[serde(default)]
    pub attachments: Vec<OutgoingAttachment>,
}

/// What the store knows about answering a mail of one mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerContext {
    pub mailbox_id: i64,
    /// The mailbox's Reply-To for what it sends, if it names one.
    pub reply_to: Option<String>,
    /// The address the mailbox sends from.
    pub from: String,
    pub mailbox_name: String,
    /// Every address of the robot's mailboxes.
    pub own_addresses: Vec<String>,
    pub sent_to_sender_recently: u32,
    pub sent_on_ticket_today: u32,
}

/// The variables templates see for an automatic answer to `mail`.
pub fn template_vars(
    mail: &ParsedMail,
    to: &Address,
    context: &AnswerContext,
    ticket: Option<(u64, &str)>,
    tag: &crate::TagFormat,
) -> serde_json::Value {
    let subject = crate::subject::strip_reply_prefixes(&mail.subject);
    let subject = if subject.is_empty() { "(no subject)" } else { subject };
    let mut vars = serde_json::json!({
        "entry": {"subject": subject, "text": mail.text_body, "from": mail.from.as_ref().map(|a| a.as_written.as_str())},
        "requester": {"email": to.send_to(), "name": to.name},
        "mailbox": {"name": context.mailbox_name, "address": context.from},
    });
    if let Some((ticket, status)) = ticket {
        vars["ticket"] = serde_json::json!({
            "number": tag.number(ticket), "tag": tag.tag(ticket), "subject": subject, "status": status,
        });
    }
    vars
}

/// An automatic answer to `mail` (an acknowledgement or a rejection), its
/// text rendered from a template, threaded under the requester's mail.
pub fn automatic_answer(
    kind: OutgoingKind,
    mail: &ParsedMail,
    to: &Address,
    context: &AnswerContext,
    journal_id: i64,
    ticket: Option<u64>,
    rendered: crate::templates::Rendered,
) -> OutgoingMail {
    let domain = context.from.rsplit_once('@').map_or("mailrobot.invalid", |(_, d)| d);
    let mut references = mail.references.clone();
    if let Some(id) = &mail.message_id
        && !references.contains(id)
    {
        references.push(id.clone());
    }
    let message_id = match ticket {
        Some(ticket) => format!("mailrobot.{}.{ticket}.{journal_id}@{domain}", kind.as_str()),
        None => format!("mailrobot.{}.{journal_id}@{domain}", kind.as_str()),
    };
    OutgoingMail {
        kind,
        mailbox_id: context.mailbox_id,
        ticket,
        journal_id,
        from: context.from.clone(),
        to: to.send_to().to_string(),
        subject: rendered.subject,
        message_id,
        in_reply_to: mail.message_id.clone(),
        references,
        text: rendered.text,
        html: rendered.html,
        reply_to: context.reply_to.clone(),
        attachments: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;

    fn mail(headers: &str) -> ParsedMail {
        parse(format!("{headers}Subject: Printer\r\nMessage-ID: <1@example.com>\r\n\r\nIt smokes.\r\n").as_bytes())
            .unwrap()
    }

    fn facts() -> AnswerFacts<'static> {
        AnswerFacts::default()
    }

    #[test]
    fn a_person_s_mail_is_answered_at_its_reply_to_as_written() {
        let m = mail("From: Ann <ann@example.com>\r\nReply-To: Ann.Desk+Tickets@Example.com\r\n");
        assert_eq!(m.answer_block, None);
        // Matched folded, answered as written.
        let to = may_answer(&m, &facts()).unwrap();
        assert_eq!((to.email.as_str(), to.send_to()), ("ann.desk+tickets@example.com", "Ann.Desk+Tickets@Example.com"));
        let m = mail("From: ann@example.com\r\nAuto-Submitted: no\r\n");
        assert_eq!(may_answer(&m, &facts()).unwrap().email, "ann@example.com", "Auto-Submitted: no is a person");
    }

    /// Every case the issue names, each with its reason.
    #[test]
    fn mails_that_must_never_be_answered_automatically() {
        let cases: &[(&str, AnswerBlock)] = &[
            ("From: a@example.com\r\nAuto-Submitted: auto-replied\r\n", AnswerBlock::AutoReply),
            ("From: a@example.com\r\nAuto-Submitted: auto-generated\r\n", AnswerBlock::AutoReply),
            ("From: a@example.com\r\nX-Autoreply: yes\r\n", AnswerBlock::AutoReply),
            ("From: MAILER-DAEMON@example.com\r\n", AnswerBlock::Bounce),
            ("From: a@example.com\r\nList-Id: <help.lists.example.com>\r\n", AnswerBlock::MailingList),
            ("From: a@example.com\r\nList-Unsubscribe: <mailto:leave@example.com>\r\n", AnswerBlock::MailingList),
            ("From: a@example.com\r\nPrecedence: bulk\r\n", AnswerBlock::Bulk("bulk".into())),
            ("From: a@example.com\r\nPrecedence: junk\r\n", AnswerBlock::Bulk("junk".into())),
            ("From: a@example.com\r\nPrecedence: list\r\n", AnswerBlock::Bulk("list".into())),
            ("From: a@example.com\r\nX-Auto-Response-Suppress: All\r\n", AnswerBlock::SuppressedBySender),
            ("From: desk@other.example\r\nX-Mailrobot: 0.1.0\r\n", AnswerBlock::FromAMailrobot),
            ("From: noreply@shop.example\r\n", AnswerBlock::NoReplySender("noreply@shop.example".into())),
            ("From: No-Reply+x@shop.example\r\n", AnswerBlock::NoReplySender("no-reply+x@shop.example".into())),
            ("From: postmaster@example.com\r\n", AnswerBlock::Bounce),
        ];
        for (headers, expected) in cases {
            let m = mail(headers);
            assert_eq!(m.answer_block.as_ref(), Some(expected), "{headers}");
            assert!(m.no_auto_answer, "{headers}");
            assert_eq!(may_answer(&m, &facts()).unwrap_err(), *expected, "{headers}");
            assert!(expected.reason().starts_with("not answered: "));
        }
    }

    #[test]
    fn the_robot_s_own_addresses_and_the_rate_limits() {
        let own = ["Support@Contoso.example".to_string()];
        let m = mail("From: support+robot@contoso.example\r\n");
        let with_own = AnswerFacts { own_addresses: &own, ..facts() };
        assert_eq!(
            may_answer(&m, &with_own).unwrap_err(),
            AnswerBlock::OwnAddress("support+robot@contoso.example".into())
        );
        let m = mail("From: ann@example.com\r\n");
        let busy_sender = AnswerFacts { sent_to_sender_recently: 1, ..facts() };
        assert!(matches!(may_answer(&m, &busy_sender), Err(AnswerBlock::SenderRateLimit { limit: 1, .. })));
        let busy_ticket = AnswerFacts { sent_on_ticket_today: 10, ..facts() };
        assert!(matches!(may_answer(&m, &busy_ticket), Err(AnswerBlock::TicketRateLimit { limit: 10, .. })));
        let m = mail("To: desk@example.com\r\n");
        assert_eq!(may_answer(&m, &facts()).unwrap_err(), AnswerBlock::NoRecipient);
    }

    #[test]
    fn addresses_fold_case_and_plus_tags_only_for_matching() {
        assert_eq!(folded(" Ann.Desk+Tickets@Example.COM "), "ann.desk@example.com");
        assert_eq!(folded("not-an-address"), "not-an-address");
    }
}
