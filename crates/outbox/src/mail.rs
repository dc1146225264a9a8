//! Mail to requesters: the MIME a queued [`OutgoingMail`] becomes at its
//! first attempt, and the transport that sends it (the binary implements
//! [`MailTransport`]: SMTP with a password or a connection's tokens).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use mailrobot_core::OutgoingMail;
use mailrobot_core::answer::ROBOT_HEADER;

/// Why a send failed, and whether trying again later may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendFailure {
    pub transient: bool,
    pub text: String,
}

#[async_trait::async_trait]
pub trait MailTransport: Send + Sync {
    /// Sends `message` (CRLF lines) from `from` to `to` through the
    /// transport of mailbox `mailbox_id`.
    async fn send(&self, mailbox_id: i64, from: &str, to: &str, message: &[u8]) -> Result<(), SendFailure>;
}

/// A header value as RFC 2047 encoded words when it is not plain ASCII.
fn encoded(value: &str) -> String {
    if value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return value.to_string();
    }
    // Whole characters per word, each word at most 75 characters.
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in value.chars() {
        if (chunk.len() + c.len_utf8()).div_ceil(3) * 4 > 60 {
            words.push(format!("=?UTF-8?B?{}?=", STANDARD.encode(&chunk)));
            chunk.clear();
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(format!("=?UTF-8?B?{}?=", STANDARD.encode(&chunk)));
    }
    words.join("\r\n ")
}

fn base64_lines(bytes: &[u8], out: &mut String) {
    let encoded = STANDARD.encode(bytes);
    for line in encoded.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push_str("\r\n");
    }
}

/// A file name for a `Content-Disposition` parameter (RFC 2231 when not ASCII).
fn filename_parameter(name: &str) -> String {
    let safe: String = name.chars().filter(|c| !c.is_control() && *c != '"' && *c != '\\').collect();
    if safe.is_ascii() {
        format!("filename=\"{safe}\"")
    } else {
        let encoded: String = safe
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b".-_".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        format!("filename*=UTF-8''{encoded}")
    }
}

/// The message as sent, threaded under the mail it answers. An automatic
/// one says so (RFC 3834); every one asks Exchange for no automatic answers
/// back and names the robot. `attachments` are the files' bytes, in the
/// order of `mail.attachments`.
pub fn render(mail: &OutgoingMail, date: DateTime<Utc>, attachments: &[Vec<u8>]) -> String {
    let mut out = String::new();
    let mut header = |name: &str, value: &str| {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    };
    header("From", &mail.from);
    header("To", &mail.to);
    header("Subject", &encoded(&mail.subject));
    header("Date", &date.to_rfc2822());
    header("Message-ID", &format!("<{}>", mail.message_id));
    if let Some(reply_to) = &mail.reply_to {
        header("Reply-To", reply_to);
    }
    if let Some(id) = &mail.in_reply_to {
        header("In-Reply-To", &format!("<{id}>"));
    }
    if !mail.references.is_empty() {
        let refs: Vec<String> = mail.references.iter().map(|r| format!("<{r}>")).collect();
        header("References", &refs.join("\r\n "));
    }
    if mail.kind.is_automatic() {
        header("Auto-Submitted", "auto-replied");
    }
    header("X-Auto-Response-Suppress", "All");
    header(ROBOT_HEADER, env!("CARGO_PKG_VERSION"));
    header("MIME-Version", "1.0");
    let text = mail.text.replace("\r\n", "\n").replace('\n', "\r\n");
    // Boundaries start with "=_", which base64 lines never contain.
    const MIXED: &str = "=_mailrobot_mixed";
    const ALTERNATIVE: &str = "=_mailrobot_alternative";
    let body = |out: &mut String| match &mail.html {
        None => {
            out.push_str("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n");
            base64_lines(text.as_bytes(), out);
        }
        Some(html) => {
            out.push_str(&format!("Content-Type: multipart/alternative; boundary=\"{ALTERNATIVE}\"\r\n\r\n"));
            for (content_type, bytes) in [("text/plain", text.as_bytes()), ("text/html", html.as_bytes())] {
                out.push_str(&format!(
                    "--{ALTERNATIVE}\r\nContent-Type: {content_type}; charset=utf-8\r\n\
                     Content-Transfer-Encoding: base64\r\n\r\n"
                ));
                base64_lines(bytes, out);
            }
            out.push_str(&format!("--{ALTERNATIVE}--\r\n"));
        }
    };
    if mail.attachments.is_empty() {
        body(&mut out);
        return out;
    }
    header("Content-Type", &format!("multipart/mixed; boundary=\"{MIXED}\""));
    out.push_str(&format!("\r\n--{MIXED}\r\n"));
    body(&mut out);
    for (meta, bytes) in mail.attachments.iter().zip(attachments) {
        out.push_str(&format!(
            "--{MIXED}\r\nContent-Type: {}\r\nContent-Disposition: attachment; {}\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n",
            meta.content_type.replace(['\r', '\n'], ""),
            filename_parameter(&meta.filename)
        ));
        base64_lines(bytes, &mut out);
    }
    out.push_str(&format!("--{MIXED}--\r\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailrobot_core::OutgoingKind;

    #[test]
    fn an_acknowledgement_carries_the_headers_that_stop_loops_and_thread_replies() {
        let mail = OutgoingMail {
            kind: OutgoingKind::Acknowledgement,
            mailbox_id: 1,
            ticket: Some(7),
            journal_id: 9,
            from: "support@contoso.example".into(),
            to: "Ann.Desk+x@example.com".into(),
            subject: "[TKT-000007] Drucker brennt – schnell".into(),
            message_id: "mailrobot.acknowledgement.7.9@contoso.example".into(),
            in_reply_to: Some("1@example.com".into()),
            references: vec!["0@example.com".into(), "1@example.com".into()],
            text: "Hello,\nticket TKT-000007.\n".into(),
            html: None,
            reply_to: Some("servicedesk@contoso.example".into()),
            attachments: Vec::new(),
        };
        let rendered = render(&mail, DateTime::parse_from_rfc3339("2026-12-02T10:00:00Z").unwrap().into(), &[]);
        for line in [
            "From: support@contoso.example\r\n",
            "To: Ann.Desk+x@example.com\r\n",
            "Message-ID: <mailrobot.acknowledgement.7.9@contoso.example>\r\n",
            "In-Reply-To: <1@example.com>\r\n",
            "References: <0@example.com>\r\n <1@example.com>\r\n",
            "Auto-Submitted: auto-replied\r\n",
            "X-Auto-Response-Suppress: All\r\n",
            "Reply-To: servicedesk@contoso.example\r\n",
            "X-Mailrobot: ",
        ] {
            assert!(rendered.contains(line), "{line:?} in\n{rendered}");
        }
        // What another parser reads back.
        let parsed = mailrobot_core::parse(rendered.as_bytes()).unwrap();
        assert_eq!(parsed.subject, mail.subject);
        assert_eq!(parsed.text_body.replace("\r\n", "\n").trim_end(), "Hello,\nticket TKT-000007.");
        assert_eq!(parsed.in_reply_to, ["1@example.com"]);
        assert!(parsed.answer_block.is_some(), "a robot's mail is never answered by a robot");
    }

    #[test]
    fn a_template_with_html_sends_both_alternatives_and_the_files_beside_them() {
        let mail = OutgoingMail {
            kind: OutgoingKind::Notification,
            mailbox_id: 1,
            ticket: Some(7),
            journal_id: 0,
            from: "support@contoso.example".into(),
            to: "ann@example.com".into(),
            subject: "[TKT-000007] Printer".into(),
            message_id: "mailrobot.notification.7.1@contoso.example".into(),
            in_reply_to: None,
            references: Vec::new(),
            text: "Closed.\n".into(),
            html: Some("<p>Closed.</p>".into()),
            reply_to: None,
            attachments: vec![mailrobot_core::OutgoingAttachment {
                filename: "log.txt".into(),
                content_type: "text/plain".into(),
                sha256: "x".into(),
                size: 3,
            }],
        };
        let rendered = render(&mail, Utc::now(), &[b"abc".to_vec()]);
        assert!(rendered.contains("Auto-Submitted: auto-replied\r\n"));
        let parsed = mailrobot_core::parse(rendered.as_bytes()).unwrap();
        assert_eq!(parsed.text_body.trim_end(), "Closed.");
        assert_eq!(parsed.html_body.as_deref().map(str::trim), Some("<p>Closed.</p>"));
        assert_eq!(parsed.attachments.len(), 1);
        assert_eq!(parsed.attachments[0].data, b"abc");
        let without_files = render(&OutgoingMail { attachments: Vec::new(), ..mail }, Utc::now(), &[]);
        let parsed = mailrobot_core::parse(without_files.as_bytes()).unwrap();
        assert_eq!((parsed.text_body.trim_end(), parsed.attachments.len()), ("Closed.", 0));
        assert!(parsed.html_body.is_some());
    }

    #[test]
    fn an_agent_s_reply_carries_its_files_and_is_not_marked_automatic() {
        let mail = OutgoingMail {
            kind: OutgoingKind::Reply,
            mailbox_id: 1,
            ticket: Some(7),
            journal_id: 0,
            from: "support@contoso.example".into(),
            to: "ann@example.com".into(),
            subject: "Re: [TKT-000007] Printer".into(),
            message_id: "mailrobot.reply.7.abc@contoso.example".into(),
            in_reply_to: None,
            references: Vec::new(),
            text: "Fixed it.\n".into(),
            attachments: vec![mailrobot_core::OutgoingAttachment {
                filename: "Prüfbericht.pdf".into(),
                content_type: "application/pdf".into(),
                sha256: "x".into(),
                size: 9,
            }],
            html: None,
            reply_to: None,
        };
        let rendered = render(&mail, Utc::now(), &[b"%PDF-1.4\n".to_vec()]);
        assert!(!rendered.contains("Auto-Submitted"), "a person wrote it");
        let parsed = mailrobot_core::parse(rendered.as_bytes()).unwrap();
        assert_eq!(parsed.text_body.trim_end(), "Fixed it.");
        assert_eq!(parsed.attachments.len(), 1);
        assert_eq!(parsed.attachments[0].filename.as_deref(), Some("Prüfbericht.pdf"));
        assert_eq!(parsed.attachments[0].data, b"%PDF-1.4\n");
    }
}
