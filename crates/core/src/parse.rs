//! Raw bytes → [`ParsedMail`], best effort: broken charsets, bad encodings and
//! missing headers degrade what is read, they do not stop it. Only input that
//! is not a mail at all is an error.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::LazyLock;

use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::{
    Addr, Encoding, HeaderName, HeaderValue, Message, MessageParser, MessagePart, MimeHeaders, PartType,
};

use crate::classify::{bounced_original, classify};
use crate::fingerprint::{FieldLine, content_fingerprint, field_lines, split_header_body};
use crate::mail::{Address, Attachment, ParsedMail};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("the message is empty")]
    Empty,
    #[error("no header fields found: this is not an e-mail message (it starts with \"{0}\")")]
    NoHeader(String),
    #[error("the MIME structure could not be read")]
    Unreadable,
}

/// The parser of every mail and of the mails and headers inside one: it
/// parses the fields the robot reads as values (MIME, dates, addresses,
/// message ids, subject) and keeps every other field raw, for `header_raw`.
/// Mail-parser's default also parses Received (several per mail in real
/// traffic), List-* and others the robot never reads as values.
pub(crate) static PARSER: LazyLock<MessageParser> = LazyLock::new(|| {
    MessageParser::new()
        .with_mime_headers()
        .with_date_headers()
        .with_address_headers()
        .with_message_ids()
        .header_text(HeaderName::Subject)
});

/// Parses one raw mail.
pub fn parse(raw: &[u8]) -> Result<ParsedMail, ParseError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(ParseError::Empty);
    }
    if !starts_with_header_field(raw) {
        let head: String = raw.iter().take(16).flat_map(|b| std::ascii::escape_default(*b)).map(char::from).collect();
        return Err(ParseError::NoHeader(head));
    }
    // Raw 8-bit header bytes that are not UTF-8 (RFC 6532) are a legacy
    // charset; Windows-1252 is what such senders almost always mean.
    let (block, _) = split_header_body(raw);
    let transcoded;
    let readable = if std::str::from_utf8(block).is_ok() {
        raw
    } else {
        transcoded = [legacy_text(block).as_bytes(), &raw[block.len()..]].concat();
        &transcoded[..]
    };
    let msg = PARSER.parse(readable).ok_or(ParseError::Unreadable)?;
    Ok(read(msg, raw))
}

/// A mail starts with a header field: a name of printable ASCII without
/// spaces, then a colon.
fn starts_with_header_field(raw: &[u8]) -> bool {
    let (block, _) = split_header_body(raw);
    let first_name = field_lines(block).find_map(|line| match line {
        FieldLine::Start { name, .. } => Some(name),
        FieldLine::Continuation(_) => None,
    });
    first_name.is_some_and(|name| !name.is_empty() && name.iter().all(|&b| b.is_ascii_graphic() && b != b':'))
}

fn read(mut msg: Message<'_>, raw: &[u8]) -> ParsedMail {
    let mut mail = read_fields(&msg, raw);
    // Last, because it moves decoded contents out of the parsed message
    // instead of copying them (a 25 MB attachment stays one buffer).
    mail.attachments = take_attachments(&mut msg);
    unpack_tnef(&mut mail);
    mail.new_text = crate::quote::new_text(&mail.text_body).map(str::to_string);
    mail
}

fn read_fields(msg: &Message<'_>, raw: &[u8]) -> ParsedMail {
    let subject = msg.subject().unwrap_or_default().trim().to_string();
    let from = msg.from().and_then(|a| a.first()).and_then(address);
    let mut warnings = Vec::new();
    for (i, part) in msg.parts.iter().enumerate() {
        if part.is_encoding_problem {
            warnings.push(format!("part {i}: content could not be decoded as declared; kept as read"));
        }
    }
    let kind = classify(msg, from.as_ref().map(|a| a.email.as_str()), &subject);
    let answer_block = crate::answer::blocked_by_headers(msg, kind, from.as_ref());

    let in_reply_to = id_list(msg.in_reply_to());
    let references = id_list(msg.references());
    // Each id once, in order. A set, not a search of the list: References
    // can hold a hundred thousand ids, and searching made that quadratic.
    let mut refers_to: Vec<String> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for id in in_reply_to.iter().chain(&references) {
        if seen.insert(id) {
            refers_to.push(id.clone());
        }
    }
    let mut original_subject = None;
    if kind == crate::MailKind::Bounce {
        let (original_id, subject) = bounced_original(msg);
        if let Some(id) = original_id
            && !seen.contains(id.as_str())
        {
            refers_to.push(id);
        }
        original_subject = subject;
    }

    ParsedMail {
        message_id: msg.message_id().map(|id| id.trim().to_string()).filter(|id| !id.is_empty()),
        subject,
        from,
        reply_to: addresses(msg.reply_to()),
        to: addresses(msg.to()),
        cc: addresses(msg.cc()),
        date: msg.date().map(|d| d.to_rfc3339()),
        in_reply_to,
        references,
        refers_to,
        original_subject,
        text_body: text_body(msg),
        new_text: None,
        html_body: html_body(msg),
        attachments: Vec::new(),
        kind,
        no_auto_answer: answer_block.is_some(),
        answer_block,
        fingerprint: content_fingerprint(raw),
        warnings,
        raw_size: raw.len() as u64,
        header_block: {
            let (block, _) = split_header_body(raw);
            String::from_utf8_lossy(&block[..block.len().min(crate::mail::HEADER_BLOCK_LIMIT)]).into_owned()
        },
    }
}

fn address(addr: &Addr<'_>) -> Option<Address> {
    let as_written = addr.address.as_deref().unwrap_or("").trim().to_string();
    let email = as_written.to_lowercase();
    let name = addr.name.as_deref().map(str::trim).filter(|n| !n.is_empty()).map(str::to_string);
    (!email.is_empty() || name.is_some()).then_some(Address { name, email, as_written })
}

fn addresses(list: Option<&mail_parser::Address<'_>>) -> Vec<Address> {
    list.map(|l| l.iter().filter_map(address).collect()).unwrap_or_default()
}

fn id_list(value: &HeaderValue<'_>) -> Vec<String> {
    let ids: Vec<&str> = match value {
        HeaderValue::Text(id) => vec![id.as_ref()],
        HeaderValue::TextList(ids) => ids.iter().map(Cow::as_ref).collect(),
        _ => Vec::new(),
    };
    ids.into_iter().map(str::trim).filter(|id| !id.is_empty()).map(str::to_string).collect()
}

/// Bytes in a legacy 8-bit charset, read as Windows-1252.
fn legacy_text(bytes: &[u8]) -> String {
    match charset_decoder(b"windows-1252") {
        Some(decode) => decode(bytes),
        None => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// The undecoded content of a part, as it stands in the raw message.
fn raw_content<'a>(msg: &'a Message<'_>, part: &MessagePart<'_>) -> &'a [u8] {
    let raw = msg.raw_message();
    let start = (part.offset_body as usize).min(raw.len());
    let end = (part.offset_end as usize).clamp(start, raw.len());
    &raw[start..end]
}

/// A text part declared without a charset whose 8-bit bytes are not UTF-8
/// was decoded with replacement characters: read it again as a legacy charset.
fn repaired_text<'a>(msg: &Message<'_>, part: &MessagePart<'_>, text: &'a str) -> Cow<'a, str> {
    let no_charset = part.content_type().is_none_or(|ct| ct.attribute("charset").is_none());
    if text.contains('\u{FFFD}') && no_charset && part.encoding == Encoding::None {
        Cow::Owned(legacy_text(raw_content(msg, part)).trim_end().to_string())
    } else {
        Cow::Borrowed(text)
    }
}

/// Base64 read the lenient way RFC 2045 asks for: characters outside the
/// alphabet are skipped, decoding stops at padding, a cut-off tail is dropped.
pub(crate) fn lenient_base64(encoded: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in encoded {
        let value = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

fn text_body(msg: &Message<'_>) -> String {
    let mut text = String::new();
    for id in &msg.text_body {
        let Some(part) = msg.parts.get(*id as usize) else {
            continue;
        };
        let piece: Cow<'_, str> = match &part.body {
            PartType::Text(t) => repaired_text(msg, part, t),
            PartType::Html(h) => Cow::Owned(mail_parser::decoders::html::html_to_text(h)),
            _ => continue,
        };
        if !text.is_empty() && !piece.is_empty() {
            text.push('\n');
        }
        text.push_str(&piece);
    }
    text
}

fn html_body(msg: &Message<'_>) -> Option<String> {
    let html: Vec<&str> = msg
        .html_body
        .iter()
        .filter_map(|id| match &msg.parts.get(*id as usize)?.body {
            PartType::Html(h) => Some(h.as_ref()),
            _ => None,
        })
        .collect();
    (!html.is_empty()).then(|| html.join("\n"))
}

/// Parts that are neither text nor HTML bodies nor delivery-report
/// machinery, with their decoded contents moved out of `msg`.
fn take_attachments(msg: &mut Message<'_>) -> Vec<Attachment> {
    let ids = msg.attachments.clone();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let Some(part) = msg.parts.get(id as usize) else { continue };
        if part.is_content_type("message", "delivery-status")
            || part.is_content_type("message", "disposition-notification")
        {
            continue;
        }
        let content_type = part
            .content_type()
            .map(|ct| match ct.c_subtype.as_deref() {
                Some(sub) => format!("{}/{}", ct.c_type, sub),
                None => ct.c_type.to_string(),
            })
            .map(|ct| ct.to_ascii_lowercase())
            .unwrap_or_else(|| match part.body {
                PartType::Message(_) => "message/rfc822".to_string(),
                PartType::Text(_) => "text/plain".to_string(),
                _ => "application/octet-stream".to_string(),
            });
        let disposition_inline = part.content_disposition().map(|cd| cd.c_type.eq_ignore_ascii_case("inline"));
        let content_id = part
            .content_id()
            .map(|id| id.trim().trim_start_matches('<').trim_end_matches('>').to_string())
            .filter(|id| !id.is_empty());
        let filename = part.attachment_name().map(str::to_string);
        // The parser gave up on bad base64 and kept the encoded text.
        let undecoded_base64 = part.is_encoding_problem
            && part.content_transfer_encoding().is_some_and(|e| e.trim().eq_ignore_ascii_case("base64"));
        let data = if undecoded_base64 {
            lenient_base64(raw_content(msg, part))
        } else {
            match std::mem::take(&mut msg.parts[id as usize].body) {
                PartType::Binary(bytes) | PartType::InlineBinary(bytes) => bytes.into_owned(),
                PartType::Text(text) | PartType::Html(text) => text.into_owned().into_bytes(),
                PartType::Message(inner) => inner.raw_message().to_vec(),
                PartType::Multipart(_) => Vec::new(),
            }
        };
        out.push(Attachment {
            filename,
            inline: disposition_inline.unwrap_or(content_id.is_some()),
            content_type,
            content_id,
            data,
        });
    }
    out
}

fn is_tnef(a: &Attachment) -> bool {
    matches!(a.content_type.as_str(), "application/ms-tnef" | "application/vnd.ms-tnef")
        || a.filename.as_deref().is_some_and(|n| n.eq_ignore_ascii_case("winmail.dat"))
}

/// Replaces each winmail.dat by the files and body it wraps. One that cannot
/// be read stays as it is, with a warning: nothing the sender sent is lost.
fn unpack_tnef(mail: &mut ParsedMail) {
    if !mail.attachments.iter().any(is_tnef) {
        return;
    }
    let mut out = Vec::with_capacity(mail.attachments.len());
    for a in std::mem::take(&mut mail.attachments) {
        if !is_tnef(&a) {
            out.push(a);
            continue;
        }
        let unpacked = match crate::tnef::read(&a.data) {
            Ok(unpacked) if !unpacked.is_empty() => unpacked,
            Ok(_) => {
                out.push(a);
                continue;
            }
            Err(err) => {
                mail.warnings.push(format!("winmail.dat not unpacked, kept as it is: {err}"));
                out.push(a);
                continue;
            }
        };
        mail.warnings.extend(unpacked.warnings);
        let had_text = !mail.text_body.trim().is_empty();
        if mail.html_body.is_none() {
            mail.html_body = unpacked.html;
        }
        if mail.text_body.trim().is_empty() {
            if let Some(body) = &unpacked.body {
                mail.text_body = body.clone();
            } else if let Some(html) = &mail.html_body {
                mail.text_body = mail_parser::decoders::html::html_to_text(html);
            } else if let Some(rtf) = &unpacked.rtf {
                mail.text_body = crate::rtf::to_text(rtf);
            }
        }
        for t in unpacked.attachments {
            let content_type = t
                .content_type
                .filter(|ct| ct.contains('/'))
                .unwrap_or_else(|| content_type_of(t.filename.as_deref().unwrap_or("")).to_string());
            out.push(Attachment {
                inline: t.hidden && t.content_id.is_some(),
                filename: t.filename,
                content_type,
                content_id: t.content_id,
                data: t.data,
            });
        }
        // The RTF is the only form of the body the sender's Outlook kept:
        // keep it, as a file anyone can open. Beside the plain text Outlook
        // sends with it, it would be one more file on every Outlook mail.
        if let (Some(rtf), None, None, false) = (unpacked.rtf, &unpacked.body, &mail.html_body, had_text) {
            out.push(Attachment {
                filename: Some("body.rtf".into()),
                content_type: "application/rtf".into(),
                content_id: None,
                inline: false,
                data: rtf,
            });
        }
    }
    mail.attachments = out;
}

/// The type of a file unpacked from winmail.dat, which names none, by its
/// extension.
fn content_type_of(filename: &str) -> &'static str {
    let ext = filename.rsplit_once('.').map(|(_, ext)| ext.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" => "text/plain",
        "csv" => "text/csv",
        "htm" | "html" => "text/html",
        "rtf" => "application/rtf",
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "bmp" => "image/bmp",
        "tif" | "tiff" => "image/tiff",
        "zip" => "application/zip",
        "xml" => "application/xml",
        "eml" => "message/rfc822",
        "msg" => "application/vnd.ms-outlook",
        "doc" => "application/msword",
        "xls" => "application/vnd.ms-excel",
        "ppt" => "application/vnd.ms-powerpoint",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "pptx" => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A mail that refers to very many others (References grows with every
    /// reply in a long thread, and a sender can make it megabytes): each id
    /// is kept once, in linear time.
    #[test]
    fn many_references_read_in_linear_time() {
        let ids: String = (0..100_000).map(|i| format!(" <{i}@example.test>\r\n")).collect();
        let raw = format!(
            "From: a@example.test\r\nSubject: x\r\nIn-Reply-To: <7@example.test>\r\nReferences:{ids}\r\nbody\r\n"
        );
        let started = std::time::Instant::now();
        let mail = parse(raw.as_bytes()).unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(15), "took {:?}", started.elapsed());
        assert_eq!(mail.references.len(), 100_000);
        assert_eq!(mail.refers_to.len(), 100_000);
        assert_eq!(mail.refers_to[0], "7@example.test");
        assert_eq!(mail.refers_to[1], "0@example.test");
    }
}
