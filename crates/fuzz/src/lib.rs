//! Fuzz targets for every parser of untrusted input, and a small fuzzer
//! ([`engine`]) that runs them on the stable toolchain: their corpora
//! (`crates/fuzz/corpus/<target>/`, plus `tests/fixtures/eml` for MIME)
//! run as ordinary tests (`tests/targets.rs`), followed by a few seconds of
//! mutated inputs (`MAILROBOT_FUZZ_SECS`). The same targets run under
//! libFuzzer with coverage for long runs (`crates/fuzz/libfuzzer`); see
//! docs/fuzzing.md.
//!
//! Each target takes arbitrary bytes. Properties: no panic, no hang, memory
//! bounded by the input's size (checked by the engine), and the invariants
//! each target asserts.

pub mod alloc;
pub mod engine;

use mailrobot_auth::protocol::{self, Grant, TokenResponse};
use mailrobot_core::subject::strip_reply_prefixes;
use mailrobot_core::{Decision, Lookups, MailKind, TagFormat};
use mailrobot_sources::fuzzing;

/// One fuzz target: a name (its corpus folder and test), the function, and
/// what the engine needs to mutate well.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
    /// More seed folders, relative to the workspace root (only `*.eml` files).
    pub seed_dirs: &'static [&'static str],
    /// Tokens the mutator inserts: the protocol's words.
    pub dictionary: &'static [&'static [u8]],
    /// Mutated inputs are cut to this length (large-input checks excepted).
    pub max_len: usize,
}

/// FNV-1a: how a session target splits its script into reads, fixed per input.
fn chunking(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)) | 1
}

/// A session's script read whole and in pieces must get as far either way.
fn same_either_way(name: &str, data: &[u8], session: fn(&[u8], u8, u64) -> &'static str) {
    let Some((&options, script)) = data.split_first() else { return };
    let whole = session(script, options, 0);
    let split = session(script, options, chunking(data));
    assert_eq!(whole, split, "{name}: the session got as far as {whole:?} reading whole, {split:?} reading in pieces");
}

/// MIME parsing, classification, threading and the ticket decision.
pub fn mime(data: &[u8]) {
    let first = mailrobot_core::parse(data);
    let again = mailrobot_core::parse(data);
    let mail = match (first, again) {
        (Ok(mail), Ok(again)) => {
            // Deterministic: the same bytes read the same way.
            assert_eq!(mail.kind, again.kind);
            assert_eq!(mail.message_id, again.message_id);
            assert_eq!(mail.subject, again.subject);
            assert_eq!(mail.refers_to, again.refers_to);
            assert_eq!(mail.text_body, again.text_body);
            assert_eq!(mail.attachments, again.attachments);
            assert_eq!(mail.no_auto_answer, again.no_auto_answer);
            mail
        }
        (Err(a), Err(b)) => {
            assert_eq!(a, b);
            return;
        }
        (a, b) => panic!("parsing the same bytes twice gave {:?} then {:?}", a.map(|m| m.kind), b.map(|m| m.kind)),
    };
    assert_eq!(mail.fingerprint, mailrobot_core::fingerprint::content_fingerprint(data));
    assert_eq!(mail.fingerprint.len(), 64);
    // refers_to: In-Reply-To then References, each id once.
    for id in mail.in_reply_to.iter().chain(&mail.references) {
        assert!(mail.refers_to.contains(id), "refers_to lacks {id:?}");
    }
    let unique: std::collections::HashSet<&String> = mail.refers_to.iter().collect();
    assert_eq!(unique.len(), mail.refers_to.len(), "refers_to names an id twice");
    if mail.kind != MailKind::Mail {
        assert!(mail.no_auto_answer, "an auto-reply or bounce the robot may answer");
    }
    // Threading tags: a tag found parses back, and writing it finds it again.
    let tags = TagFormat::default();
    for subject in std::iter::once(&mail.subject).chain(mail.original_subject.as_ref()) {
        if let Some(id) = tags.find(subject) {
            assert_eq!(tags.find(&tags.tag(id)), Some(id));
            assert_eq!(tags.parse_number(&tags.number(id)), Some(id));
        }
        let stripped = strip_reply_prefixes(subject);
        assert_eq!(strip_reply_prefixes(stripped), stripped);
    }
    let expected = if mail.kind == MailKind::Mail { Decision::NewTicket } else { Decision::Unmatched };
    assert_eq!(mailrobot_core::decide(&mail, &Lookups::default()), expected);
    let threaded = Lookups { thread_ticket: Some(7), ..Lookups::default() };
    assert_eq!(mailrobot_core::decide(&mail, &threaded), Decision::Append { ticket: 7 });
    if let Some(html) = &mail.html_body {
        let _ = mailrobot_core::html::sanitize(html);
        if let Some(start) = mailrobot_core::quote::html_quote_start(html) {
            assert!(html.is_char_boundary(start));
        }
    }
    // A reply's new text is part of its whole text, and not empty.
    if let Some(new) = &mail.new_text {
        assert!(mail.text_body.contains(new.as_str()) && !new.trim().is_empty(), "new text {new:?}");
    }
}

/// A TNEF stream (winmail.dat) and the RTF and text inside it.
pub fn tnef(data: &[u8]) {
    let first = mailrobot_core::tnef::read(data);
    assert_eq!(first, mailrobot_core::tnef::read(data), "reading the same stream twice differs");
    let Ok(tnef) = first else { return };
    // Files are pieces of the stream (a body decoded from one byte per
    // character to UTF-8 at most triples).
    let total: usize = tnef.attachments.iter().map(|a| a.data.len()).sum();
    assert!(total <= data.len() * 3, "{total} bytes of files out of a {}-byte stream", data.len());
    assert!(tnef.attachments.len() <= mailrobot_core::tnef::MAX_ATTACHMENTS);
    if let Some(rtf) = &tnef.rtf {
        assert!(rtf.len() <= mailrobot_core::rtf::MAX_RTF);
        let _ = mailrobot_core::rtf::to_text(rtf);
    }
}

/// A POP3 session against a scripted server (first byte: options).
pub fn pop3_session(data: &[u8]) {
    same_either_way("POP3", data, fuzzing::pop3_session);
}

/// An IMAP session against a scripted server (first byte: options), read
/// whole and in pieces. How far it gets may differ: the frame guard sees
/// bytes as they are read, before the parser, so reading ahead meets a
/// refused literal sooner (a real server sends nothing before it is asked).
pub fn imap_session(data: &[u8]) {
    let Some((&options, script)) = data.split_first() else { return };
    fuzzing::imap_session(script, options, 0);
    fuzzing::imap_session(script, options, chunking(data));
}

/// The IMAP frame guard alone (first byte: options).
pub fn imap_frames(data: &[u8]) {
    let Some((&options, stream)) = data.split_first() else { return };
    fuzzing::imap_frames(stream, options, chunking(data));
}

/// An SMTP session against a scripted server (first byte: options).
pub fn smtp_session(data: &[u8]) {
    same_either_way("SMTP", data, fuzzing::smtp_session);
}

/// An EWS SOAP answer.
pub fn ews_answer(data: &[u8]) {
    fuzzing::ews_answer(data);
}

/// A `WWW-Authenticate` header value.
pub fn www_authenticate(data: &[u8]) {
    fuzzing::www_authenticate(data);
}

/// A Graph answer body (error JSON, delta page, `$batch`).
pub fn graph_answer(data: &[u8]) {
    fuzzing::graph_answer(data);
}

/// An NTLM CHALLENGE message, and the answer to it.
pub fn ntlm_challenge(data: &[u8]) {
    fuzzing::ntlm_challenge(data);
}

/// A token endpoint answer (first byte: HTTP status and grant), read as
/// an error and as a token.
pub fn token_error(data: &[u8]) {
    let Some((&options, body)) = data.split_first() else { return };
    let status = [400, 401, 403, 429, 500, 503, 200, 302][usize::from(options & 7)];
    let grant = [Grant::AuthorizationCode, Grant::RefreshToken, Grant::ClientCredentials, Grant::RefreshToken]
        [usize::from((options >> 3) & 3)];
    let body = String::from_utf8_lossy(body);
    let error = protocol::classify(status, &body, grant);
    let _ = error.to_string();
    if let Ok(token) = serde_json::from_str::<TokenResponse>(&body) {
        let _ = token.expires_in_seconds();
    }
}

const MIME_WORDS: &[&[u8]] = &[
    b"From: ",
    b"To: ",
    b"Subject: ",
    b"Message-ID: <",
    b"In-Reply-To: <",
    b"References: <a@x> <b@x>",
    b"Return-Path: <>",
    b"Auto-Submitted: auto-replied",
    b"Auto-Submitted: no",
    b"X-Autoreply: yes",
    b"Precedence: bulk",
    b"List-Id: <l.x>",
    b"X-Failed-Recipients: a@x",
    b"MIME-Version: 1.0",
    b"Content-Type: multipart/mixed; boundary=\"b\"",
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=b",
    b"Content-Type: message/rfc822",
    b"Content-Type: message/delivery-status",
    b"Content-Type: text/rfc822-headers",
    b"Content-Type: text/html; charset=utf-8",
    b"Content-Type: text/plain; charset=iso-2022-jp",
    b"Content-Transfer-Encoding: base64",
    b"Content-Transfer-Encoding: quoted-printable",
    b"Content-Disposition: attachment; filename*=utf-8''%C3%A4.pdf",
    b"Content-ID: <c@x>",
    b"\r\n--b\r\n",
    b"\r\n--b--\r\n",
    b"=?utf-8?B?w6Q=?=",
    b"=?iso-8859-1?Q?=E4?=",
    b"[TKT-000123]",
    b"Re: AW: ",
    b"Automatic reply: ",
    b"MAILER-DAEMON@x",
    b"\r\n\r\n",
    b"\r\n ",
    b"=\r\n",
    b"<script>",
];

const IMAP_WORDS: &[&[u8]] = &[
    b"* OK ",
    b"* NO ",
    b"* BAD ",
    b"* BYE ",
    b"* PREAUTH ",
    b"A0001 OK ",
    b"A0002 NO ",
    b"A0003 BAD ",
    b"* CAPABILITY IMAP4rev1 MOVE UIDPLUS\r\n",
    b"* LIST (\\HasNoChildren) \"/\" Failed\r\n",
    b"* 2 EXISTS\r\n",
    b"* OK [UIDVALIDITY 4294967295] x\r\n",
    b"* SEARCH 1 2 3\r\n",
    b"* 1 FETCH (UID 1 RFC822.SIZE 5 BODY[]<0> {5}\r\nabcde)\r\n",
    b"* 1 FETCH (FLAGS (\\Seen))\r\n",
    b"{0}\r\n",
    b"{4294967296}\r\n",
    b"{5+}\r\n",
    b"[TRYCREATE]",
    b"[ALREADYEXISTS]",
    b"[UNAVAILABLE]",
    b"NIL",
    b"\"\\\"\"",
    b"\r\n",
];

const POP3_WORDS: &[&[u8]] = &[
    b"+OK ",
    b"-ERR ",
    b"+ ",
    b"\r\n.\r\n",
    b"\r\n..",
    b"PIPELINING\r\n",
    b"SASL PLAIN XOAUTH2\r\n",
    b"USER\r\n",
    b"STLS\r\n",
    b"[SYS/TEMP] ",
    b"[IN-USE] ",
    b"[AUTH] ",
    b"1 uid-1\r\n",
    b"1 4294967295\r\n",
    b"4294967296 x\r\n",
    b"eyJzdGF0dXMiOiI0MDEifQ==",
    b"\r\n",
];

const SMTP_WORDS: &[&[u8]] = &[
    b"220 ",
    b"220-",
    b"250-",
    b"250 ",
    b"334 ",
    b"235 ",
    b"354 ",
    b"421 ",
    b"535 ",
    b"250-AUTH PLAIN LOGIN XOAUTH2\r\n",
    b"250-SIZE 0\r\n",
    b"250-SIZE 18446744073709551616\r\n",
    b"250-8BITMIME\r\n",
    b"250-STARTTLS\r\n",
    b"VXNlcm5hbWU6",
    b"\r\n",
];

const EWS_WORDS: &[&[u8]] = &[
    b"<?xml version=\"1.0\" encoding=\"utf-8\"?>",
    b"<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\">",
    b"<s:Body>",
    b"ResponseClass=\"Error\"",
    b"ResponseClass=\"Success\"",
    b"<m:ResponseCode>ErrorServerBusy</m:ResponseCode>",
    b"<m:ResponseCode>ErrorInvalidSyncStateData</m:ResponseCode>",
    b"<m:ResponseCode>ErrorItemNotFound</m:ResponseCode>",
    b"<t:Value Name=\"BackOffMilliseconds\">18446744073709551615</t:Value>",
    b"<m:SyncState>",
    b"<m:IncludesLastItemInRange>false</m:IncludesLastItemInRange>",
    b"<t:Create><t:Message><t:ItemId Id=\"A1\"/></t:Message></t:Create>",
    b"<t:Delete><t:ItemId Id=\"A1\"/></t:Delete>",
    b"<t:MimeContent CharacterSet=\"UTF-8\">",
    b"<t:FolderId Id=\"F\"/>",
    b"<t:DisplayName>Processed</t:DisplayName>",
    b"<faultstring>",
    b"&amp;",
    b"&#x0;",
    b"<![CDATA[",
    b"<!DOCTYPE x [<!ENTITY e \"&e;&e;\">]>",
];

const HEADER_WORDS: &[&[u8]] = &[
    b"NTLM",
    b"Negotiate",
    b"Basic realm=\"x\"",
    b"Bearer",
    b", ",
    b"\"",
    b"\\",
    b"=",
    b"TlRMTVNTUAACAAAA",
    b"realm=\"a,b\"",
];

const GRAPH_WORDS: &[&[u8]] = &[
    b"{\"error\":{\"code\":\"",
    b"\"message\":\"",
    b"\"value\":[",
    b"{\"id\":\"AAMk=\",\"receivedDateTime\":\"2024-01-01T00:00:00Z\"}",
    b"\"@removed\":{\"reason\":\"deleted\"}",
    b"\"@odata.nextLink\":\"",
    b"\"@odata.deltaLink\":\"",
    b"{\"responses\":[",
    b"{\"id\":\"1\",\"status\":429,\"headers\":{\"Retry-After\":\"18446744073709551616\"},\"body\":{}}",
    b"\"status\":404",
    b"\"status\":65536",
    b"ErrorItemNotFound",
    b"syncStateNotFound",
    b"MailboxNotEnabledForRESTAPI",
    b"[[[[[[[[[[[[[[[[",
    b"1e999",
    b"\"\\ud800\"",
];

const NTLM_WORDS: &[&[u8]] = &[
    b"NTLMSSP\0",
    b"\x02\0\0\0",
    b"\x07\0\x08\0",
    b"\0\0\0\0",
    b"\x01\x02\x00\x00",
    b"\xff\xff\xff\xff",
    b"\x05\x82\x8a\xe2",
];

const TNEF_WORDS: &[&[u8]] = &[
    b"\x78\x9f\x3e\x22",                                                 // signature
    b"\x01\x06\x90\x08\x00",                                             // attTnefVersion
    b"\x01\x03\x90\x06\x00",                                             // attMsgProps
    b"\x02\x02\x90\x06\x00",                                             // attAttachRendData
    b"\x02\x10\x80\x01\x00",                                             // attAttachTitle
    b"\x02\x0f\x80\x06\x00",                                             // attAttachData
    b"\x02\x05\x90\x06\x00",                                             // attAttachment
    b"\x02\x01\x0d\x00\x01\x37",                                         // PR_ATTACH_DATA_OBJ
    b"\x07\x03\x02\x00\x00\x00\x00\x00\xc0\x00\x00\x00\x00\x00\x00\x46", // IID_IMessage
    b"\x1f\x00\x07\x37",                                                 // PR_ATTACH_LONG_FILENAME, Unicode
    b"\x02\x01\x09\x10",                                                 // PR_RTF_COMPRESSED
    b"\x03\x00\x05\x80",                                                 // a named property
    b"LZFu",
    b"MELA",
    b"\xff\xff\xff\xff",
];

const TOKEN_WORDS: &[&[u8]] = &[
    b"{\"error\":\"invalid_grant\"",
    b",\"error_description\":\"AADSTS70008: expired\\r\\nTrace ID: x\"",
    b",\"error_codes\":[7000215]",
    b",\"error_codes\":[4294967296]",
    b",\"correlation_id\":\"c\"",
    b"\"access_token\":\"t\"",
    b"\"expires_in\":\"3599\"",
    b"\"expires_in\":1e400",
    b"temporarily_unavailable",
    b"AADSTS",
];

/// Every target, in the order docs/fuzzing.md lists them.
pub const TARGETS: &[Target] = &[
    Target { name: "mime", run: mime, seed_dirs: &["tests/fixtures/eml"], dictionary: MIME_WORDS, max_len: 64 << 10 },
    Target { name: "imap_session", run: imap_session, seed_dirs: &[], dictionary: IMAP_WORDS, max_len: 32 << 10 },
    Target { name: "imap_frames", run: imap_frames, seed_dirs: &[], dictionary: IMAP_WORDS, max_len: 32 << 10 },
    Target { name: "pop3_session", run: pop3_session, seed_dirs: &[], dictionary: POP3_WORDS, max_len: 32 << 10 },
    Target { name: "smtp_session", run: smtp_session, seed_dirs: &[], dictionary: SMTP_WORDS, max_len: 16 << 10 },
    Target { name: "ews_answer", run: ews_answer, seed_dirs: &[], dictionary: EWS_WORDS, max_len: 64 << 10 },
    Target {
        name: "www_authenticate",
        run: www_authenticate,
        seed_dirs: &[],
        dictionary: HEADER_WORDS,
        max_len: 4 << 10,
    },
    Target { name: "graph_answer", run: graph_answer, seed_dirs: &[], dictionary: GRAPH_WORDS, max_len: 64 << 10 },
    Target { name: "ntlm_challenge", run: ntlm_challenge, seed_dirs: &[], dictionary: NTLM_WORDS, max_len: 4 << 10 },
    Target { name: "token_error", run: token_error, seed_dirs: &[], dictionary: TOKEN_WORDS, max_len: 8 << 10 },
    Target { name: "tnef", run: tnef, seed_dirs: &[], dictionary: TNEF_WORDS, max_len: 64 << 10 },
];

/// The target called `name`.
pub fn target(name: &str) -> &'static Target {
    TARGETS.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no fuzz target {name:?}"))
}
