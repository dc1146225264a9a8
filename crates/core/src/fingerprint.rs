//! Content fingerprint for deduplication across mailboxes.
//!
//! Two copies of one mail (the same mail reaching `support@` through To and
//! `helpdesk@` through Cc, or one fetched twice) differ only in what servers
//! add on the way: trace headers, spam verdicts, line endings. The fingerprint
//! hashes the mail without those, so copies agree while two different mails
//! that happen to reuse a Message-ID do not.

use sha2::{Digest, Sha256};

/// Headers added or rewritten in transit or by the receiving server. Names
/// ending in `-` are prefixes.
const TRANSIT_HEADERS: &[&str] = &[
    "received",
    "received-spf",
    "return-path",
    "delivered-to",
    "x-original-to",
    "x-delivered-to",
    "envelope-to",
    "x-envelope-to",
    "x-envelope-from",
    "x-rcpt-to",
    "x-original-recipient",
    "authentication-results",
    "arc-",
    "x-spam-",
    "x-virus-",
    "x-rspamd-",
    "x-amavis-",
    "x-ms-exchange-organization-",
    "x-ms-exchange-crosstenant-",
    "x-ms-exchange-transport-",
    "x-forefront-",
    "x-microsoft-antispam",
    "x-eopattributedmessage",
    "x-eoptenantattributedmessage",
    "x-ms-office365-filtering-",
    "x-originatororg",
    "x-ms-traffictypediagnostic",
    "status",
    "x-status",
    "x-keywords",
    "x-uid",
    "x-imapbase",
    "content-length",
    "lines",
    "x-dovecot-",
];

/// Whether a header name (as text, so a name that is not UTF-8 compares as
/// it always has: with replacement characters) is one added in transit.
fn is_transit_header(name: &str) -> bool {
    let name = name.trim().as_bytes();
    TRANSIT_HEADERS.iter().any(|t| {
        if t.ends_with('-') {
            name.len() >= t.len() && name[..t.len()].eq_ignore_ascii_case(t.as_bytes())
        } else {
            name.eq_ignore_ascii_case(t.as_bytes())
        }
    })
}

/// Splits raw bytes into the header block and the body (after the blank line).
pub fn split_header_body(raw: &[u8]) -> (&[u8], &[u8]) {
    let mut pos = 0;
    loop {
        let rest = &raw[pos..];
        if rest.starts_with(b"\n") {
            return (&raw[..pos], &raw[pos + 1..]);
        }
        if rest.starts_with(b"\r\n") {
            return (&raw[..pos], &raw[pos + 2..]);
        }
        match memchr::memchr(b'\n', rest) {
            Some(end) => pos += end + 1,
            None => return (raw, &[]),
        }
    }
}

/// One line of a header block, as header fields are read from it.
pub(crate) enum FieldLine<'a> {
    /// A field's first line: its name and value, trimmed. A line without a
    /// colon (junk, an mbox "From " line) is a field without a name: part
    /// of the content all the same.
    Start { name: &'a [u8], value: &'a [u8] },
    /// A folded continuation of the field before it, trimmed.
    Continuation(&'a [u8]),
}

/// The lines of a raw header block, blank ones left out, CRLF or LF.
pub(crate) fn field_lines(block: &[u8]) -> impl Iterator<Item = FieldLine<'_>> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', block).chain(std::iter::once(block.len())).filter_map(move |end| {
        let line = &block[start..end];
        start = end + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match line.first()? {
            b' ' | b'\t' => Some(FieldLine::Continuation(line.trim_ascii())),
            _ => Some(match memchr::memchr(b':', line) {
                Some(colon) => {
                    FieldLine::Start { name: line[..colon].trim_ascii(), value: line[colon + 1..].trim_ascii() }
                }
                None => FieldLine::Start { name: b"", value: line.trim_ascii() },
            }),
        }
    })
}

/// Header fields as (name, unfolded value) in order, from a raw header block.
pub fn header_fields(block: &[u8]) -> Vec<(&[u8], Vec<u8>)> {
    let mut fields: Vec<(&[u8], Vec<u8>)> = Vec::new();
    for line in field_lines(block) {
        match line {
            FieldLine::Start { name, value } => fields.push((name, value.to_vec())),
            // A continuation before any field belongs to none and is dropped.
            FieldLine::Continuation(more) => {
                if let Some((_, value)) = fields.last_mut() {
                    value.push(b' ');
                    value.extend_from_slice(more);
                }
            }
        }
    }
    fields
}

/// SHA-256 (hex) of the mail without transit headers, with unfolded header
/// values, LF line endings and no trailing blank lines.
pub fn content_fingerprint(raw: &[u8]) -> String {
    let (hasher, body) = hash_headers(raw);
    hash_body(hasher, body)
}

/// Hashes the header fields that are not transit headers — each as its
/// lowercased name, `:`, its unfolded value and LF, then one LF — and
/// returns the hasher and the body without its trailing white space. The
/// same bytes as [`header_fields`] would give, written into one buffer as
/// the lines go (a value and a lowercased name per field cost more than
/// the hashing).
fn hash_headers(raw: &[u8]) -> (Sha256, &[u8]) {
    let (block, body) = split_header_body(raw);
    let mut normalized = Vec::with_capacity(block.len() + 1);
    // Whether the field being read is hashed (its continuation lines too).
    let mut hashing = false;
    for line in field_lines(block) {
        match line {
            FieldLine::Start { name, value } => {
                let name = String::from_utf8_lossy(name);
                hashing = !is_transit_header(&name);
                if hashing {
                    normalized.extend(name.bytes().map(|b| b.to_ascii_lowercase()));
                    normalized.push(b':');
                    normalized.extend_from_slice(value);
                    normalized.push(b'\n');
                }
            }
            // Before any field, `hashing` is false: such a line is dropped.
            FieldLine::Continuation(more) if hashing => {
                normalized.pop(); // the field's LF, written again after this line
                normalized.push(b' ');
                normalized.extend_from_slice(more);
                normalized.push(b'\n');
            }
            FieldLine::Continuation(_) => {}
        }
    }
    normalized.push(b'\n');
    let mut hasher = Sha256::new();
    hasher.update(&normalized);
    let body_end = body.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |i| i + 1);
    (hasher, &body[..body_end])
}

/// Adds the body with LF line endings and finishes the fingerprint.
fn hash_body(mut hasher: Sha256, body: &[u8]) -> String {
    // Each line without its CR, then LF; hashed in one piece (one call per
    // line cost more than the hashing itself).
    let mut normalized = Vec::with_capacity(body.len() + 1);
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', body).chain(std::iter::once(body.len())) {
        let line = &body[start..end];
        normalized.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        normalized.push(b'\n');
        start = end + 1;
    }
    hasher.update(&normalized);
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIL: &str =
        "From: a@example.com\r\nTo: b@example.com\r\nSubject: Hi\r\n there\r\nMessage-ID: <1@x>\r\n\r\nBody\r\n";

    #[test]
    fn copies_with_other_trace_headers_and_line_endings_agree() {
        let copy = format!(
            "Return-Path: <a@example.com>\nDelivered-To: c@example.com\nReceived: from x by y;\n Mon, 1 Jan 2024 00:00:00 +0000\nX-Spam-Score: 1\n{}\n\n",
            MAIL.replace("\r\n", "\n").trim_end()
        );
        assert_eq!(content_fingerprint(MAIL.as_bytes()), content_fingerprint(copy.as_bytes()));
    }

    #[test]
    fn other_content_differs() {
        let other = MAIL.replace("Body", "Other body");
        assert_ne!(content_fingerprint(MAIL.as_bytes()), content_fingerprint(other.as_bytes()));
        let other_subject = MAIL.replace("Subject: Hi", "Subject: Ho");
        assert_ne!(content_fingerprint(MAIL.as_bytes()), content_fingerprint(other_subject.as_bytes()));
    }

    #[test]
    fn splits_and_unfolds() {
        let (head, body) = split_header_body(MAIL.as_bytes());
        assert_eq!(body, b"Body\r\n");
        let fields = header_fields(head);
        assert_eq!(fields[2].0, b"Subject");
        assert_eq!(fields[2].1, b"Hi there");
    }

    /// The split as first written, line by line.
    fn split_line_by_line(raw: &[u8]) -> (&[u8], &[u8]) {
        let mut pos = 0;
        while pos < raw.len() {
            let line_end = raw[pos..].iter().position(|&b| b == b'\n').map_or(raw.len(), |i| pos + i + 1);
            let line = &raw[pos..line_end];
            if line == b"\n" || line == b"\r\n" {
                return (&raw[..pos], &raw[line_end..]);
            }
            pos = line_end;
        }
        (raw, &[])
    }

    #[test]
    fn the_split_is_the_one_first_written() {
        let mails: &[&[u8]] = &[
            b"",
            b"\n",
            b"\r\n",
            b"\r",
            b"\nbody",
            b"A: b\r\n\r\nbody\r\n\r\nmore",
            b"A: b\n\nbody",
            b"A: b\r\n \r\n\r\nbody",
            b"A: b\r\r\n\r\nbody",
            b"A: b\r\nno body",
            b"A: b\r\n",
            b"A: b\r\n\r",
        ];
        for mail in mails {
            assert_eq!(split_header_body(mail), split_line_by_line(mail), "{:?}", String::from_utf8_lossy(mail));
        }
    }

    /// Header fields as first read: line by line, each value unfolded.
    fn header_fields_as_first_written(block: &[u8]) -> Vec<(&[u8], Vec<u8>)> {
        let mut fields: Vec<(&[u8], Vec<u8>)> = Vec::new();
        for line in block.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            if line[0] == b' ' || line[0] == b'\t' {
                if let Some((_, value)) = fields.last_mut() {
                    value.push(b' ');
                    value.extend_from_slice(line.trim_ascii());
                }
                continue;
            }
            match line.iter().position(|&b| b == b':') {
                Some(colon) => fields.push((line[..colon].trim_ascii(), line[colon + 1..].trim_ascii().to_vec())),
                None => fields.push((b"", line.trim_ascii().to_vec())),
            }
        }
        fields
    }

    /// The header hashing as first written: each field unfolded into its
    /// own value, its name lowercased into a new string, four updates each.
    fn hash_headers_field_by_field(raw: &[u8]) -> (Sha256, &[u8]) {
        let (block, body) = split_header_body(raw);
        let mut hasher = Sha256::new();
        for (name, value) in header_fields_as_first_written(block) {
            let name = String::from_utf8_lossy(name);
            let lowercase = name.trim().to_ascii_lowercase();
            let transit = TRANSIT_HEADERS
                .iter()
                .any(|t| if t.ends_with('-') { lowercase.starts_with(t) } else { lowercase == *t });
            if transit {
                continue;
            }
            hasher.update(name.to_ascii_lowercase().as_bytes());
            hasher.update(b":");
            hasher.update(&value);
            hasher.update(b"\n");
        }
        hasher.update(b"\n");
        let body_end = body.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |i| i + 1);
        (hasher, &body[..body_end])
    }

    /// The fingerprint as first written, one update per body line:
    /// fingerprints stored by earlier versions must still match new copies.
    fn fingerprint_line_by_line(raw: &[u8]) -> String {
        let (mut hasher, body) = hash_headers_field_by_field(raw);
        for line in body.split(|&b| b == b'\n') {
            hasher.update(line.strip_suffix(b"\r").unwrap_or(line));
            hasher.update(b"\n");
        }
        hex::encode(hasher.finalize())
    }

    #[test]
    fn fingerprints_match_those_stored_by_earlier_versions() {
        let bodies: &[&str] = &[
            "Body\r\n",
            "",
            "\r\n\r\n",
            "one\ntwo\r\nthree\rstill three\r\n\r\n\nfour  \t\r\n",
            "no newline at the end",
            "\n\nleading blank lines\r\n",
            "ends with CR\r",
            "caf\u{e9} \u{1F600}\r\n",
        ];
        for body in bodies {
            let mail = format!("From: a@example.com\r\nSubject: Hi\r\n\r\n{body}");
            assert_eq!(content_fingerprint(mail.as_bytes()), fingerprint_line_by_line(mail.as_bytes()), "{body:?}");
        }
        let headers_only = b"From: a@example.com\r\nSubject: no body";
        assert_eq!(content_fingerprint(headers_only), fingerprint_line_by_line(headers_only));
        let header_blocks: &[&[u8]] = &[
            b"From: a@example.com\r\nSubject: Hi\r\n",
            b"Subject: folded\r\n\tover\r\n   three  \r\n lines\r\nFrom: a@example.com\n",
            b" a continuation before any field\r\nFrom: a@example.com\r\n",
            b"From a@example.com Mon Jan  1 00:00:00 2024\nFrom: a@example.com\n",
            b"RECEIVED: from x\r\n by y\r\nX-Spam-Flag: YES\r\nx-SPAM-score: 1\r\nArc-Seal: i=1\r\nFrom: a@x\r\n",
            b"Received-SPF: pass\r\nReceivedX: kept\r\nStatus: RO\r\nStatusX: kept\r\n",
            b"Subject: a blank continuation\r\n \r\nTo: b@x\r\n",
            b"  Subject  :  spaced  \r\nX-Empty:\r\n:no name\r\n",
            b"Na\xefve-Header: latin-1 name\r\nSubject: \xe9t\xe9\r\n",
            b"\xc2\xa0Received: a name with a no-break space\r\nX-\xc3\x9c: umlaut\r\n",
            b"From: a@x\rSubject: a lone CR\r\n",
        ];
        for block in header_blocks {
            let mail = [*block, b"\r\nBody\r\n"].concat();
            assert_eq!(
                content_fingerprint(&mail),
                fingerprint_line_by_line(&mail),
                "{:?}",
                String::from_utf8_lossy(block)
            );
        }
        // Fixed values: a change to both forms at once shows here.
        assert_eq!(
            content_fingerprint(MAIL.as_bytes()),
            "e429eabb4ad2e46a53ee6e714647da43b8d7e7c6fc7eeaef71045155b2c924a9"
        );
        assert_eq!(
            content_fingerprint(&[header_blocks[4], b"\r\nBody\r\n"].concat()),
            "b6d7a0cce5b1e85bf2bfd8c6d691429644e527a4121adb356497ccdfdb330f23"
        );
    }
}
