//! TNEF, the `application/ms-tnef` part Outlook sends as `winmail.dat`
//! ([MS-OXTNEF]): the attachments and body it wraps, read so that a ticket
//! shows the files the sender attached instead of one opaque file.
//!
//! The stream is a signature, a key, then attributes: level (message or
//! attachment), id, length, data, a 16-bit checksum. attMsgProps and
//! attAttachment carry MAPI properties (a count, then tag, optional name,
//! and values padded to 4 bytes). Every length is checked against the bytes
//! left before it is used, nothing is allocated from a count, embedded
//! messages nest at most [`MAX_DEPTH`] deep, and attachments are capped:
//! hostile input yields an error or less, never a panic, a hang or a huge
//! allocation. Data is borrowed from the input until the end, then copied
//! once into the attachments.

use crate::codepage;
use crate::rtf;

const SIGNATURE: u32 = 0x223E_9F78;
const LVL_MESSAGE: u8 = 0x01;
const LVL_ATTACHMENT: u8 = 0x02;

// Attribute ids (the low word of the attribute tag; the high word is the type).
const ATT_BODY: u32 = 0x800C;
const ATT_ATTACH_DATA: u32 = 0x800F;
const ATT_ATTACH_TITLE: u32 = 0x8010;
const ATT_ATTACH_REND_DATA: u32 = 0x9002;
const ATT_MSG_PROPS: u32 = 0x9003;
const ATT_ATTACHMENT: u32 = 0x9005;
const ATT_OEM_CODEPAGE: u32 = 0x9007;

// MAPI property ids.
const PR_BODY: u32 = 0x1000;
const PR_RTF_COMPRESSED: u32 = 0x1009;
const PR_HTML: u32 = 0x1013;
const PR_DISPLAY_NAME: u32 = 0x3001;
const PR_ATTACH_DATA: u32 = 0x3701; // _BIN (binary) or _OBJ (object)
const PR_ATTACH_FILENAME: u32 = 0x3704;
const PR_ATTACH_METHOD: u32 = 0x3705;
const PR_ATTACH_LONG_FILENAME: u32 = 0x3707;
const PR_ATTACH_MIME_TAG: u32 = 0x370E;
const PR_ATTACH_CONTENT_ID: u32 = 0x3712;
const PR_ATTACHMENT_HIDDEN: u32 = 0x7FFE;

// MAPI property types.
const PT_I2: u32 = 0x0002;
const PT_LONG: u32 = 0x0003;
const PT_FLOAT: u32 = 0x0004;
const PT_DOUBLE: u32 = 0x0005;
const PT_CURRENCY: u32 = 0x0006;
const PT_APPTIME: u32 = 0x0007;
const PT_ERROR: u32 = 0x000A;
const PT_BOOLEAN: u32 = 0x000B;
const PT_OBJECT: u32 = 0x000D;
const PT_I8: u32 = 0x0014;
const PT_STRING8: u32 = 0x001E;
const PT_UNICODE: u32 = 0x001F;
const PT_SYSTIME: u32 = 0x0040;
const PT_CLSID: u32 = 0x0048;
const PT_BINARY: u32 = 0x0102;
const MV_FLAG: u32 = 0x1000;

const ATTACH_EMBEDDED_MSG: u32 = 5;
/// IID_IMessage {00020307-0000-0000-C000-000000000046} as stored.
const IID_IMESSAGE: [u8; 16] = [7, 3, 2, 0, 0, 0, 0, 0, 0xC0, 0, 0, 0, 0, 0, 0, 0x46];

/// Attachments of embedded messages are read this many levels down.
pub const MAX_DEPTH: u8 = 3;
/// More attachments than this in one stream are not read.
pub const MAX_ATTACHMENTS: usize = 1000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TnefError {
    #[error("not a TNEF stream (signature {0:#010x})")]
    Signature(u32),
    #[error("cut off at byte {at}: {what} needs {need} bytes, {left} left")]
    Truncated { at: usize, what: &'static str, need: u64, left: usize },
    #[error("MAPI property of unknown type {0:#06x}")]
    UnknownType(u32),
    #[error("named MAPI property of unknown kind {0}")]
    UnknownNameKind(u32),
    #[error("more than {MAX_ATTACHMENTS} attachments")]
    TooManyAttachments,
}

/// One file unpacked from a TNEF stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TnefAttachment {
    pub filename: Option<String>,
    /// PR_ATTACH_MIME_TAG when the sender set it.
    pub content_type: Option<String>,
    pub content_id: Option<String>,
    /// PR_ATTACHMENT_HIDDEN: shown in the body, not in the attachment list.
    pub hidden: bool,
    pub data: Vec<u8>,
}

/// What a TNEF stream holds that the robot uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tnef {
    pub attachments: Vec<TnefAttachment>,
    /// PR_BODY, or attBody.
    pub body: Option<String>,
    /// PR_HTML.
    pub html: Option<String>,
    /// PR_RTF_COMPRESSED, decompressed.
    pub rtf: Option<Vec<u8>>,
    /// Oddities that did not stop reading (bad checksums, a broken RTF body).
    pub warnings: Vec<String>,
}

impl Tnef {
    pub fn is_empty(&self) -> bool {
        self.attachments.is_empty() && self.body.is_none() && self.html.is_none() && self.rtf.is_none()
    }
}

/// Reads a TNEF stream.
pub fn read(data: &[u8]) -> Result<Tnef, TnefError> {
    read_nested(data, 0)
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    /// Where `data` starts in the outermost stream, for error positions.
    base: usize,
}

impl<'a> Cursor<'a> {
    fn new(data: &'a [u8], base: usize) -> Self {
        Self { data, pos: 0, base }
    }

    fn left(&self) -> usize {
        self.data.len() - self.pos
    }

    fn take(&mut self, n: u64, what: &'static str) -> Result<&'a [u8], TnefError> {
        match usize::try_from(n).ok().filter(|&n| n <= self.left()) {
            Some(n) => {
                let bytes = &self.data[self.pos..self.pos + n];
                self.pos += n;
                Ok(bytes)
            }
            None => Err(TnefError::Truncated { at: self.base + self.pos, what, need: n, left: self.left() }),
        }
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, TnefError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, TnefError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, TnefError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Values are padded to 4 bytes; a writer that left out the padding of
    /// the last value is forgiven.
    fn skip_padding(&mut self, len: usize) {
        let pad = (4 - len % 4) % 4;
        self.pos += pad.min(self.left());
    }
}

/// One MAPI property value as it stands in the stream.
#[derive(Clone, Copy)]
struct Prop<'a> {
    id: u32,
    ptype: u32,
    value: &'a [u8],
}

/// An attachment while it is read: slices of the stream.
#[derive(Default)]
struct Pending<'a> {
    title: Option<&'a [u8]>,
    data: Option<&'a [u8]>,
    long_name: Option<Prop<'a>>,
    short_name: Option<Prop<'a>>,
    display_name: Option<Prop<'a>>,
    mime: Option<Prop<'a>>,
    content_id: Option<Prop<'a>>,
    method: Option<u32>,
    hidden: bool,
    /// PR_ATTACH_DATA_OBJ: an interface id, then the object.
    object: Option<&'a [u8]>,
}

fn read_nested(data: &[u8], depth: u8) -> Result<Tnef, TnefError> {
    let mut c = Cursor::new(data, 0);
    let signature = c.u32("signature")?;
    if signature != SIGNATURE {
        return Err(TnefError::Signature(signature));
    }
    c.u16("key")?;
    let mut out = Tnef::default();
    let mut codepage = 1252;
    let mut body_attr: Option<&[u8]> = None;
    let mut msg_props: Vec<Prop<'_>> = Vec::new();
    let mut pending: Vec<Pending<'_>> = Vec::new();
    let mut bad_checksums = 0usize;
    while c.left() > 0 {
        let level = c.u8("attribute level")?;
        let id = c.u32("attribute id")? & 0xFFFF;
        let len = c.u32("attribute length")?;
        let value = c.take(u64::from(len), "attribute data")?;
        let checksum = c.u16("attribute checksum")?;
        if value.iter().fold(0u16, |sum, &b| sum.wrapping_add(u16::from(b))) != checksum {
            bad_checksums += 1;
        }
        match (level, id) {
            (LVL_MESSAGE, ATT_OEM_CODEPAGE) if value.len() >= 4 => {
                codepage = u32::from_le_bytes([value[0], value[1], value[2], value[3]]);
            }
            (LVL_MESSAGE, ATT_BODY) => body_attr = Some(value),
            (LVL_MESSAGE, ATT_MSG_PROPS) => {
                read_props(value, c.base + c.pos - 2 - value.len(), |p| {
                    if matches!(p.id, PR_BODY | PR_RTF_COMPRESSED | PR_HTML) {
                        msg_props.push(p);
                    }
                })?;
            }
            (LVL_ATTACHMENT, ATT_ATTACH_REND_DATA) => {
                if pending.len() >= MAX_ATTACHMENTS {
                    return Err(TnefError::TooManyAttachments);
                }
                pending.push(Pending::default());
            }
            (LVL_ATTACHMENT, ATT_ATTACH_TITLE | ATT_ATTACH_DATA | ATT_ATTACHMENT) => {
                // attAttachRendData opens an attachment; a stream that
                // forgot it still has one.
                if pending.is_empty() {
                    pending.push(Pending::default());
                }
                let Some(current) = pending.last_mut() else { continue };
                match id {
                    ATT_ATTACH_TITLE => current.title = Some(value),
                    ATT_ATTACH_DATA => current.data = Some(value),
                    _ => read_props(value, c.base + c.pos - 2 - value.len(), |p| match p.id {
                        PR_ATTACH_DATA if p.ptype == PT_BINARY => current.data = Some(p.value),
                        PR_ATTACH_DATA if p.ptype == PT_OBJECT => current.object = Some(p.value),
                        PR_ATTACH_LONG_FILENAME => current.long_name = Some(p),
                        PR_ATTACH_FILENAME => current.short_name = Some(p),
                        PR_DISPLAY_NAME => current.display_name = Some(p),
                        PR_ATTACH_MIME_TAG => current.mime = Some(p),
                        PR_ATTACH_CONTENT_ID => current.content_id = Some(p),
                        PR_ATTACH_METHOD => current.method = int(p),
                        PR_ATTACHMENT_HIDDEN => current.hidden = int(p).is_some_and(|v| v != 0),
                        _ => {}
                    })?,
                }
            }
            _ => {}
        }
    }
    if bad_checksums > 0 {
        out.warnings.push(format!("winmail.dat: {bad_checksums} attribute checksum(s) wrong; read anyway"));
    }

    // Properties win over the attributes they duplicate ([MS-OXTNEF] 2.1.3).
    for p in &msg_props {
        match p.id {
            PR_BODY => out.body = string(*p, codepage),
            PR_HTML => out.html = string(*p, codepage),
            PR_RTF_COMPRESSED => match rtf::decompress(p.value) {
                Ok(unpacked) => {
                    out.warnings.extend(unpacked.warnings.into_iter().map(|w| format!("winmail.dat: {w}")));
                    out.rtf = Some(unpacked.rtf);
                }
                Err(err) => out.warnings.push(format!("winmail.dat: RTF body not read: {err}")),
            },
            _ => {}
        }
    }
    if out.body.is_none() {
        out.body = body_attr.map(|b| trim_nul(codepage::decode(codepage, b))).filter(|b| !b.is_empty());
    }

    for p in pending {
        let filename = [p.long_name, p.display_name, p.short_name]
            .into_iter()
            .flatten()
            .find_map(|prop| string(prop, codepage))
            .or_else(|| p.title.map(|t| trim_nul(codepage::decode(codepage, t))).filter(|t| !t.is_empty()));
        let content_type = p.mime.and_then(|m| string(m, codepage)).map(|m| m.to_ascii_lowercase());
        let content_id = p
            .content_id
            .and_then(|id| string(id, codepage))
            .map(|id| id.trim().trim_start_matches('<').trim_end_matches('>').to_string())
            .filter(|id| !id.is_empty());
        let data = match (p.data, p.object) {
            (_, Some(object)) if p.method == Some(ATTACH_EMBEDDED_MSG) || object.starts_with(&IID_IMESSAGE) => {
                embedded(&mut out, &object[object.len().min(16)..], filename.as_deref(), depth)?;
                continue;
            }
            (Some(data), _) => data,
            // Another OLE object (IStorage, IStream): the object after its interface id.
            (None, Some(object)) => &object[object.len().min(16)..],
            (None, None) => {
                out.warnings.push(format!(
                    "winmail.dat: attachment {} has no data (attached by reference?)",
                    filename.as_deref().unwrap_or("without a name")
                ));
                continue;
            }
        };
        if out.attachments.len() >= MAX_ATTACHMENTS {
            return Err(TnefError::TooManyAttachments);
        }
        out.attachments.push(TnefAttachment {
            filename,
            content_type,
            content_id,
            hidden: p.hidden,
            data: data.to_vec(),
        });
    }
    Ok(out)
}

/// An attached Outlook item: its own TNEF stream. Its attachments join the
/// outer ones, its text becomes `<name>.txt`.
fn embedded(out: &mut Tnef, stream: &[u8], name: Option<&str>, depth: u8) -> Result<(), TnefError> {
    let name = name.unwrap_or("attached message");
    if depth >= MAX_DEPTH {
        out.warnings.push(format!("winmail.dat: {name}: messages nested deeper than {MAX_DEPTH} not unpacked"));
        return Ok(());
    }
    match read_nested(stream, depth + 1) {
        Ok(inner) => {
            out.warnings.extend(inner.warnings);
            if let Some(body) = inner.body {
                out.attachments.push(TnefAttachment {
                    filename: Some(format!("{name}.txt")),
                    content_type: Some("text/plain".into()),
                    content_id: None,
                    hidden: false,
                    data: body.into_bytes(),
                });
            }
            if out.attachments.len() + inner.attachments.len() > MAX_ATTACHMENTS {
                return Err(TnefError::TooManyAttachments);
            }
            out.attachments.extend(inner.attachments);
        }
        Err(err) => out.warnings.push(format!("winmail.dat: {name}: attached message not read: {err}")),
    }
    Ok(())
}

/// Walks a counted list of MAPI properties ([MS-OXTNEF] 2.1.3.4), calling
/// `found` with the first value of each.
fn read_props<'a>(data: &'a [u8], base: usize, mut found: impl FnMut(Prop<'a>)) -> Result<(), TnefError> {
    let mut c = Cursor::new(data, base);
    let count = c.u32("property count")?;
    // No allocation from `count`: each round reads at least four bytes or fails.
    for _ in 0..count {
        let tag = c.u32("property tag")?;
        let (id, ptype) = (tag >> 16, tag & 0xFFFF);
        if id >= 0x8000 {
            // A named property: GUID, kind, then an id or a UTF-16 name.
            c.take(16, "property name GUID")?;
            match c.u32("property name kind")? {
                0 => {
                    c.u32("property name id")?;
                }
                1 => {
                    let len = c.u32("property name length")?;
                    c.take(u64::from(len), "property name")?;
                    c.skip_padding(len as usize);
                }
                kind => return Err(TnefError::UnknownNameKind(kind)),
            }
        }
        let base_type = ptype & !MV_FLAG;
        let variable = matches!(base_type, PT_STRING8 | PT_UNICODE | PT_BINARY | PT_OBJECT);
        let values = if ptype & MV_FLAG != 0 || variable { c.u32("value count")? } else { 1 };
        for i in 0..values {
            let value = if variable {
                let len = c.u32("value length")?;
                let bytes = c.take(u64::from(len), "property value")?;
                c.skip_padding(len as usize);
                bytes
            } else {
                let size = match base_type {
                    // 16-bit values are padded to four bytes.
                    PT_I2 | PT_BOOLEAN | PT_LONG | PT_FLOAT | PT_ERROR => 4,
                    PT_DOUBLE | PT_CURRENCY | PT_APPTIME | PT_I8 | PT_SYSTIME => 8,
                    PT_CLSID => 16,
                    other => return Err(TnefError::UnknownType(other)),
                };
                c.take(size, "property value")?
            };
            if i == 0 {
                found(Prop { id, ptype: base_type, value });
            }
        }
    }
    Ok(())
}

fn int(p: Prop<'_>) -> Option<u32> {
    match (p.ptype, p.value) {
        (PT_LONG | PT_I2 | PT_BOOLEAN, [a, b, c, d, ..]) => Some(u32::from_le_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

fn trim_nul(mut s: String) -> String {
    let end = s.trim_end_matches('\0').len();
    s.truncate(end);
    s
}

/// A string property (8-bit in the stream's code page, or UTF-16); binary
/// values are read as 8-bit text (PR_HTML is often binary).
fn string(p: Prop<'_>, codepage: u32) -> Option<String> {
    let text = match p.ptype {
        PT_UNICODE => {
            let units: Vec<u16> = p.value.chunks_exact(2).map(|u| u16::from_le_bytes([u[0], u[1]])).collect();
            String::from_utf16_lossy(&units)
        }
        PT_STRING8 | PT_BINARY => codepage::decode(codepage, p.value),
        _ => return None,
    };
    Some(trim_nul(text)).filter(|t| !t.is_empty())
}

/// A TNEF writer built from [MS-OXTNEF] for the tests and fixtures.
#[cfg(test)]
#[path = "../tests/support/tnef_writer.rs"]
pub(crate) mod writer;

#[cfg(test)]
mod tests {
    use super::writer::{Message, Prop as P, attachment};
    use super::*;

    #[test]
    fn reads_the_existing_outlook_fixture_stream() {
        // The winmail.dat of tests/fixtures/eml/new/winmail-dat-tnef.eml.
        let data = crate::parse::lenient_base64(
            "eJ8+IloMAQaQCAAEAAAAAAABAAEAAQeQBgAIAAAA5AQAAAAAAADoAAEIgAcAGAAAAElQTS5NaWNy
b3NvZnQgTWFpbC5Ob3RlADEIAgKQBgASAAAAAQD/////AAAAAAAAAAAAAAAA/QMCEIABAAwAAABB
dWZ0cmFnLnR4dABYBAIPgAYARwAAAEJpdHRlIFZQTi1adWdhbmcgZvxyIEZyYXUgUmVuYXRlIEt1
cnogZWlucmljaHRlbi4NCktvc3RlbnN0ZWxsZSA0NzExLg0KTxg="
                .as_bytes(),
        );
        let tnef = read(&data).unwrap();
        assert_eq!(tnef.attachments.len(), 1);
        let a = &tnef.attachments[0];
        assert_eq!(a.filename.as_deref(), Some("Auftrag.txt"));
        assert_eq!(
            codepage::decode(1252, &a.data),
            "Bitte VPN-Zugang für Frau Renate Kurz einrichten.\r\nKostenstelle 4711.\r\n"
        );
        assert!(tnef.warnings.is_empty(), "{:?}", tnef.warnings);
    }

    #[test]
    fn mapi_properties_win_over_attributes() {
        let stream = Message::new()
            .attachment(
                attachment("SHORT~1.PDF", b"old")
                    .prop(P::unicode(PR_ATTACH_LONG_FILENAME, "Angebot März 2025.pdf"))
                    .prop(P::binary(PR_ATTACH_DATA, b"%PDF-1.7 new"))
                    .prop(P::string8(PR_ATTACH_MIME_TAG, "application/PDF")),
            )
            .to_bytes();
        let tnef = read(&stream).unwrap();
        let a = &tnef.attachments[0];
        assert_eq!(a.filename.as_deref(), Some("Angebot März 2025.pdf"));
        assert_eq!(a.data, b"%PDF-1.7 new");
        assert_eq!(a.content_type.as_deref(), Some("application/pdf"));
    }

    #[test]
    fn body_from_pr_body_or_compressed_rtf() {
        let stream = Message::new().prop(P::string8(PR_BODY, "Hallo Welt\r\n")).to_bytes();
        assert_eq!(read(&stream).unwrap().body.as_deref(), Some("Hallo Welt\r\n"));

        let rtf_text = b"{\\rtf1\\ansi\\ansicpg1252 Gr\\'fc\\'dfe\\par}";
        let stream =
            Message::new().prop(P::binary(PR_RTF_COMPRESSED, &super::writer::compress_rtf(rtf_text))).to_bytes();
        let tnef = read(&stream).unwrap();
        assert_eq!(tnef.body, None);
        assert_eq!(tnef.rtf.as_deref(), Some(&rtf_text[..]));
    }

    #[test]
    fn embedded_messages_join_their_attachments_and_text() {
        let inner = Message::new()
            .prop(P::string8(PR_BODY, "Die weitergeleitete Nachricht"))
            .attachment(attachment("inner.txt", b"inner"))
            .to_bytes();
        let stream =
            Message::new()
                .attachment(attachment("outer.txt", b"outer"))
                .attachment(
                    attachment("Weiterleitung", b"")
                        .prop(P::long(PR_ATTACH_METHOD, ATTACH_EMBEDDED_MSG))
                        .prop(P::object(PR_ATTACH_DATA, &IID_IMESSAGE, &inner)),
                )
                .to_bytes();
        let tnef = read(&stream).unwrap();
        let names: Vec<_> = tnef.attachments.iter().map(|a| a.filename.as_deref().unwrap()).collect();
        assert_eq!(names, ["outer.txt", "Weiterleitung.txt", "inner.txt"]);
    }

    #[test]
    fn broken_streams_are_errors() {
        assert_eq!(read(b"MZ\x90\x00"), Err(TnefError::Signature(0x0090_5A4D)));
        let stream = Message::new().attachment(attachment("a.txt", b"hello world")).to_bytes();
        for cut in [3, 7, 20, stream.len() - 1] {
            assert!(matches!(read(&stream[..cut]), Err(TnefError::Truncated { .. })), "cut at {cut}");
        }
        // A length of four gigabytes is refused, not allocated.
        let mut huge = stream.clone();
        let last_len_at = stream.len() - 2 - 11 - 4;
        huge[last_len_at..last_len_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(read(&huge), Err(TnefError::Truncated { .. })));
    }

    #[test]
    fn a_wrong_checksum_is_a_warning() {
        let mut stream = Message::new().attachment(attachment("a.txt", b"hello")).to_bytes();
        let last = stream.len() - 1;
        stream[last] ^= 0xFF;
        let tnef = read(&stream).unwrap();
        assert_eq!(tnef.attachments.len(), 1);
        assert_eq!(tnef.warnings.len(), 1);
    }

    #[test]
    fn a_property_count_of_four_billion_costs_nothing() {
        let mut attr = u32::MAX.to_le_bytes().to_vec();
        attr.extend_from_slice(&((PR_ATTACH_METHOD << 16) | PT_LONG).to_le_bytes());
        attr.extend_from_slice(&1u32.to_le_bytes());
        let stream = Message::new().raw_attribute(LVL_ATTACHMENT, 0x0006_0000 | ATT_ATTACHMENT, &attr).to_bytes();
        assert!(matches!(read(&stream), Err(TnefError::Truncated { .. })));
    }

    #[test]
    fn nesting_is_bounded() {
        let mut stream = Message::new().attachment(attachment("deepest.txt", b"x")).to_bytes();
        for level in 0..10 {
            stream = Message::new()
                .attachment(
                    attachment(&format!("level{level}"), b"")
                        .prop(P::long(PR_ATTACH_METHOD, ATTACH_EMBEDDED_MSG))
                        .prop(P::object(PR_ATTACH_DATA, &IID_IMESSAGE, &stream)),
                )
                .to_bytes();
        }
        let tnef = read(&stream).unwrap();
        assert!(tnef.attachments.is_empty());
        assert!(tnef.warnings.iter().any(|w| w.contains("nested deeper")), "{:?}", tnef.warnings);
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..4096)) {
            let _ = read(&data);
        }

        /// Random bytes behind a valid signature, and mutations of a valid stream.
        #[test]
        fn damaged_streams_never_panic(tail in proptest::collection::vec(proptest::num::u8::ANY, 0..4096),
                                       flips in proptest::collection::vec((0usize..4096, proptest::num::u8::ANY), 0..16)) {
            let mut data = SIGNATURE.to_le_bytes().to_vec();
            data.extend_from_slice(&[1, 0]);
            data.extend_from_slice(&tail);
            let _ = read(&data);
            let mut stream = Message::new()
                .prop(P::binary(PR_RTF_COMPRESSED, &super::writer::compress_rtf(b"{\\rtf1 hello}")))
                .attachment(attachment("a.txt", b"hello").prop(P::unicode(PR_ATTACH_LONG_FILENAME, "long a.txt")))
                .to_bytes();
            for (at, byte) in flips {
                let n = stream.len();
                stream[at % n] = byte;
            }
            if let Ok(tnef) = read(&stream) {
                // Nothing comes out bigger than what went in (RTF aside, which is capped).
                let total: usize = tnef.attachments.iter().map(|a| a.data.len()).sum();
                proptest::prop_assert!(total <= stream.len());
            }
        }
    }
}
