//! The TNEF fixtures under tests/fixtures/eml are made here, from the
//! specification ([MS-OXTNEF], [MS-OXRTFCP]) by `support/tnef_writer.rs`:
//! this test fails when a committed fixture is not what the generator makes
//! (`MAILROBOT_WRITE_FIXTURES=1` rewrites them). Their expectations are
//! checked with every other fixture in `fixtures.rs`; here, what the parser
//! says beyond them (warnings, the body), and that an independent reader,
//! Python's `tnefparse` from PyPI, unpacks the same files from them.

#[path = "support/tnef_writer.rs"]
mod tnef_writer;

use std::path::PathBuf;

use sha2::{Digest, Sha256};
use tnef_writer::{Message, Prop, attachment, compress_rtf};

const PR_BODY: u32 = 0x1000;
const PR_RTF_COMPRESSED: u32 = 0x1009;
const PR_ATTACH_LONG_FILENAME: u32 = 0x3707;
const PR_ATTACH_MIME_TAG: u32 = 0x370E;
const PR_ATTACH_DATA: u32 = 0x3701;
const PR_ATTACH_CREATION_TIME: u32 = 0x3007;
const PR_ATTACH_METHOD: u32 = 0x3705;
const PR_RENDERING_POSITION: u32 = 0x370B;
/// PSETID_Common, as Outlook stores it.
const PSETID_COMMON: [u8; 16] = [0x08, 0x20, 0x06, 0, 0, 0, 0, 0, 0xC0, 0, 0, 0, 0, 0, 0, 0x46];

/// A 2×2 PNG.
const PNG: &str = "89504e470d0a1a0a0000000d4948445200000002000000020802000000fdd49a730000000f4944415478da63f8cf00041002080020ee05fb4c50558d0000000049454e44ae426082";

fn pdf() -> Vec<u8> {
    let mut pdf = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n".to_vec();
    pdf.extend_from_slice(b"2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\n");
    for i in 0..20 {
        pdf.extend_from_slice(format!("% Angebot Position {i}: VPN-Lizenz, 12 Monate, 49,00 EUR\n").as_bytes());
    }
    pdf.extend_from_slice(b"trailer\n<< /Root 1 0 R >>\n%%EOF\n");
    pdf
}

const RTF_BODY: &[u8] = b"{\\rtf1\\ansi\\ansicpg1252\\fromtext \\fbidis \\deff0{\\fonttbl\r\n{\\f0\\fswiss Arial;}\r\n{\\f1\\fmodern Courier New;}\r\n{\\f2\\fnil\\fcharset2 Symbol;}\r\n{\\f3\\fmodern\\fcharset0 Courier New;}}\r\n{\\colortbl\\red0\\green0\\blue0;\\red0\\green0\\blue255;}\r\n\\uc1\\pard\\plain\\deftab360 \\f0\\fs20 Guten Tag,\\par\r\n\\par\r\nanbei das Angebot f\\'fcr die VPN-Lizenzen und ein Bildschirmfoto der Fehlermeldung.\\par\r\n\\par\r\nMit freundlichen Gr\\'fc\\'dfen\\par\r\nJ\\'f6rg Brandt\\par\r\n}";

/// Outlook's winmail.dat: an RTF body, a named property, three files (one
/// named only by an 8.3 title and a long MAPI name, one with a MIME tag).
fn outlook_stream() -> Vec<u8> {
    Message::new()
        .prop(Prop::named_long(PSETID_COMMON, 0x8552, 0x0010_0000))
        .prop(Prop::binary(PR_RTF_COMPRESSED, &compress_rtf(RTF_BODY)))
        .attachment(
            attachment("ANGEBO~1.PDF", &pdf())
                .prop(Prop::long(PR_ATTACH_METHOD, 1))
                .prop(Prop::systime(PR_ATTACH_CREATION_TIME, 133_867_296_000_000_000))
                .prop(Prop::unicode(PR_ATTACH_LONG_FILENAME, "Angebot VPN März 2025.pdf"))
                .prop(Prop::string8(PR_ATTACH_MIME_TAG, "application/pdf"))
                .prop(Prop::long(PR_RENDERING_POSITION, u32::MAX)),
        )
        .attachment(
            attachment("Fehlermeldung.png", &hex::decode(PNG).unwrap())
                .prop(Prop::string8(PR_ATTACH_LONG_FILENAME, "Fehlermeldung.png"))
                .prop(Prop::string8(PR_ATTACH_MIME_TAG, "image/png")),
        )
        .attachment(attachment("Zugang.txt", &tnef_writer::cp1252("Benutzer: j.brandt\r\nGültig ab: 01.04.2025\r\n")))
        .to_bytes()
}

/// Only a body, as compressed RTF, and one file whose data comes as
/// PR_ATTACH_DATA_BIN instead of attAttachData.
fn rtf_only_stream() -> Vec<u8> {
    let rtf = b"{\\rtf1\\ansi\\ansicpg1252\\deff0{\\fonttbl{\\f0\\fswiss Calibri;}}\\pard Der Drucker im 2. OG druckt nur noch leere Seiten.\\par Die Fehlerliste h\\'e4ngt an.\\par}";
    Message::new()
        .prop(Prop::binary(PR_RTF_COMPRESSED, &compress_rtf(rtf)))
        .attachment(
            attachment("FEHLER~1.CSV", b"")
                .prop(Prop::string8(PR_ATTACH_LONG_FILENAME, "Fehlerliste Drucker.csv"))
                .prop(Prop::binary(PR_ATTACH_DATA, b"Zeit;Code\r\n08:15;E-302\r\n08:17;E-302\r\n")),
        )
        .to_bytes()
}

/// The same as `outlook_stream` with a plain-text body too, cut off in the
/// middle of the PDF (a gateway that truncated the part).
fn truncated_stream() -> Vec<u8> {
    let whole = Message::new()
        .prop(Prop::string8(PR_BODY, "siehe Anhang"))
        .attachment(attachment("Auftrag.pdf", &pdf()))
        .to_bytes();
    whole[..whole.len() / 2].to_vec()
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            out.push(if i <= chunk.len() { char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]) } else { '=' });
        }
    }
    out.as_bytes().chunks(76).map(|l| std::str::from_utf8(l).unwrap()).collect::<Vec<_>>().join("\r\n")
}

struct Fixture {
    path: &'static str,
    stream: fn() -> Vec<u8>,
    eml: fn(&str) -> String,
}

const BOUNDARY: &str = "_004_DB9PR04MB8412C0A17E5B3D2F9E6A41C7B2D09DB9PR04MB8412eurp_";

fn outlook_eml(winmail: &str) -> String {
    format!(
        "Received: from mx-gw01.contoso.com (mx-gw01.contoso.com [10.20.1.15])\r
\tby mbx01.contoso.com (Postfix) with ESMTPS id 4Z3mVb1wQ4z2yrC\r
\tfor <helpdesk@contoso.com>; Wed, 02 Apr 2025 09:12:41 +0200 (CEST)\r
From: =?iso-8859-1?Q?Brandt=2C_J=F6rg?= <joerg.brandt@example.org>\r
To: \"helpdesk@contoso.com\" <helpdesk@contoso.com>\r
Subject: Angebot VPN-Lizenzen und Fehlermeldung\r
Thread-Topic: Angebot VPN-Lizenzen und Fehlermeldung\r
Thread-Index: AdujB2nV0m3Qp7ZfQy2x9k4rT8L1Ew==\r
Date: Wed, 2 Apr 2025 07:12:36 +0000\r
Message-ID: <DB9PR04MB8412C0A17E5B3D2F9E6A41C7B2D09@DB9PR04MB8412.eurprd04.prod.outlook.com>\r
Accept-Language: de-DE, en-US\r
Content-Language: de-DE\r
X-MS-Has-Attach: yes\r
X-MS-TNEF-Correlator: <DB9PR04MB8412C0A17E5B3D2F9E6A41C7B2D09@DB9PR04MB8412.eurprd04.prod.outlook.com>\r
MIME-Version: 1.0\r
Content-Type: multipart/mixed;\r
\tboundary=\"{BOUNDARY}\"\r
\r
--{BOUNDARY}\r
Content-Type: text/plain; charset=\"iso-8859-1\"\r
Content-Transfer-Encoding: quoted-printable\r
\r
Guten Tag,\r
\r
anbei das Angebot f=FCr die VPN-Lizenzen und ein Bildschirmfoto der Fehlerm=\r
eldung.\r
\r
Mit freundlichen Gr=FC=DFen\r
J=F6rg Brandt\r
\r
--{BOUNDARY}\r
Content-Type: application/ms-tnef; name=\"winmail.dat\"\r
Content-Description: winmail.dat\r
Content-Disposition: attachment; filename=\"winmail.dat\"\r
Content-Transfer-Encoding: base64\r
\r
{winmail}\r
\r
--{BOUNDARY}--\r
"
    )
}

fn rtf_only_eml(winmail: &str) -> String {
    format!(
        "Received: from relay.example.net (relay.example.net [198.51.100.23])\r
\tby mbx01.contoso.com (Postfix) with ESMTPS id 4Z4pXc2yR7z3zsD\r
\tfor <helpdesk@contoso.com>; Thu, 03 Apr 2025 14:02:10 +0200 (CEST)\r
From: Ines Vogel <ines.vogel@example.net>\r
To: helpdesk@contoso.com\r
Subject: Drucker 2. OG druckt leere Seiten\r
Date: Thu, 3 Apr 2025 12:02:05 +0000\r
Message-ID: <0A1B2C3D4E5F60718293A4B5C6D7E8F9@exch02.example.net>\r
X-MS-TNEF-Correlator: <0A1B2C3D4E5F60718293A4B5C6D7E8F9@exch02.example.net>\r
MIME-Version: 1.0\r
Content-Type: application/ms-tnef; name=\"winmail.dat\"\r
Content-Disposition: attachment; filename=\"winmail.dat\"\r
Content-Transfer-Encoding: base64\r
\r
{winmail}\r
"
    )
}

fn truncated_eml(winmail: &str) -> String {
    format!(
        "Received: from exch01.example.org (exch01.example.org [192.0.2.130])\r
\tby mbx01.contoso.com (Postfix) with ESMTPS id 4Z5qYd3zS8z4atE\r
\tfor <helpdesk@contoso.com>; Fri, 04 Apr 2025 10:30:00 +0200 (CEST)\r
From: \"Kurz, Renate\" <renate.kurz@example.org>\r
To: helpdesk@contoso.com\r
Subject: Auftrag Notebook\r
Date: Fri, 4 Apr 2025 08:29:55 +0000\r
Message-ID: <5E4D3C2B1A0F9E8D7C6B5A4938271605@exch01.example.org>\r
MIME-Version: 1.0\r
Content-Type: multipart/mixed; boundary=\"==cut==\"\r
\r
--==cut==\r
Content-Type: text/plain; charset=\"us-ascii\"\r
\r
siehe Anhang\r
\r
--==cut==\r
Content-Type: application/ms-tnef; name=\"winmail.dat\"\r
Content-Disposition: attachment; filename=\"winmail.dat\"\r
Content-Transfer-Encoding: base64\r
\r
{winmail}\r
\r
--==cut==--\r
"
    )
}

const FIXTURES: &[Fixture] = &[
    Fixture { path: "new/tnef-winmail-dat-attachments.eml", stream: outlook_stream, eml: outlook_eml },
    Fixture { path: "new/tnef-rtf-body-only.eml", stream: rtf_only_stream, eml: rtf_only_eml },
    Fixture { path: "broken/tnef-truncated-winmail-dat.eml", stream: truncated_stream, eml: truncated_eml },
];

fn fixtures_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()))
        .join("../../tests/fixtures/eml")
}

#[test]
fn committed_fixtures_are_what_the_generator_makes() {
    let rewrite = std::env::var_os("MAILROBOT_WRITE_FIXTURES").is_some();
    let mut stale = Vec::new();
    for f in FIXTURES {
        let eml = (f.eml)(&base64(&(f.stream)()));
        let path = fixtures_dir().join(f.path);
        if rewrite {
            std::fs::write(&path, &eml).unwrap();
        } else if std::fs::read(&path).ok().as_deref() != Some(eml.as_bytes()) {
            stale.push(f.path);
        }
    }
    assert!(stale.is_empty(), "stale fixtures (MAILROBOT_WRITE_FIXTURES=1 rewrites them): {stale:?}");
}

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[test]
fn the_outlook_mail_shows_its_files_and_keeps_the_rtf() {
    let raw = std::fs::read(fixtures_dir().join(FIXTURES[0].path)).unwrap();
    let mail = mailrobot_core::parse(&raw).unwrap();
    let files: Vec<(&str, &str, String)> = mail
        .attachments
        .iter()
        .map(|a| (a.filename.as_deref().unwrap_or(""), a.content_type.as_str(), sha256(&a.data)))
        .collect();
    assert_eq!(
        files,
        [
            ("Angebot VPN März 2025.pdf", "application/pdf", sha256(&pdf())),
            ("Fehlermeldung.png", "image/png", sha256(&hex::decode(PNG).unwrap())),
            (
                "Zugang.txt",
                "text/plain",
                sha256(&tnef_writer::cp1252("Benutzer: j.brandt\r\nGültig ab: 01.04.2025\r\n"))
            ),
        ],
        "beside the mail's own text part, the RTF body is no file of its own"
    );
    assert!(mail.text_body.contains("anbei das Angebot für die VPN-Lizenzen"), "{}", mail.text_body);
    assert!(mail.warnings.is_empty(), "{:?}", mail.warnings);
}

#[test]
fn a_tnef_only_mail_gets_its_text_from_the_rtf() {
    let raw = std::fs::read(fixtures_dir().join(FIXTURES[1].path)).unwrap();
    let mail = mailrobot_core::parse(&raw).unwrap();
    assert_eq!(mail.text_body, "Der Drucker im 2. OG druckt nur noch leere Seiten.\nDie Fehlerliste hängt an.");
    let names: Vec<_> = mail.attachments.iter().map(|a| a.filename.as_deref().unwrap_or("")).collect();
    assert_eq!(names, ["Fehlerliste Drucker.csv", "body.rtf"]);
    assert_eq!(mail.attachments[0].content_type, "text/csv");
}

#[test]
fn a_broken_winmail_dat_is_kept_with_a_warning() {
    let raw = std::fs::read(fixtures_dir().join(FIXTURES[2].path)).unwrap();
    let mail = mailrobot_core::parse(&raw).unwrap();
    assert_eq!(mail.attachments.len(), 1);
    assert_eq!(mail.attachments[0].filename.as_deref(), Some("winmail.dat"));
    assert_eq!(mail.attachments[0].data, truncated_stream());
    assert_eq!(mail.warnings.len(), 1, "{:?}", mail.warnings);
    assert!(
        mail.warnings[0].starts_with("winmail.dat not unpacked, kept as it is: cut off at byte"),
        "{:?}",
        mail.warnings
    );
}

/// What Python's tnefparse (an independent reader) finds in each readable
/// stream: file names and SHA-256 of their contents, and the RTF body.
#[test]
fn tnefparse_unpacks_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let python =
        mailrobot_testkit::python::venv_python(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")), "tnefparse", "1.4.0");
    mailrobot_testkit::python::ensure_module(&python, "compressed_rtf", "compressed-rtf==1.0.7");
    let script = r#"
import hashlib, json, sys
from tnefparse.tnef import TNEF
t = TNEF(open(sys.argv[1], "rb").read())
files = []
for a in t.attachments:
    name = a.long_filename()
    if isinstance(name, bytes):
        name = name.decode("cp1252")
    files.append([name.rstrip("\x00"), hashlib.sha256(a.data).hexdigest()])
rtf = t.rtfbody
print(json.dumps({"files": files, "rtf": hashlib.sha256(rtf).hexdigest() if rtf else None}))
"#;
    for f in &FIXTURES[..2] {
        let stream = (f.stream)();
        let file = dir.path().join("winmail.dat");
        std::fs::write(&file, &stream).unwrap();
        let out = std::process::Command::new(&python).arg("-c").arg(script).arg(&file).output().unwrap();
        assert!(out.status.success(), "{}: {}", f.path, String::from_utf8_lossy(&out.stderr));
        let theirs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let ours = mailrobot_core::tnef::read(&stream).unwrap();
        let files: Vec<serde_json::Value> = ours
            .attachments
            .iter()
            .map(|a| serde_json::json!([a.filename.as_deref().unwrap_or(""), sha256(&a.data)]))
            .collect();
        assert_eq!(theirs["files"], serde_json::Value::Array(files), "{}", f.path);
        assert_eq!(theirs["rtf"], serde_json::json!(ours.rtf.as_deref().map(sha256)), "{}", f.path);
    }
}
