//! A TNEF writer written from [MS-OXTNEF], for tests and fixtures only: the
//! robot reads TNEF, it never writes it. Checksums, padding and the
//! attributes Outlook puts first (version, code page, message class) are as
//! the specification gives them, so the streams are shaped like Outlook's.
#![allow(dead_code)]

const SIGNATURE: u32 = 0x223E_9F78;
pub const LVL_MESSAGE: u8 = 0x01;
pub const LVL_ATTACHMENT: u8 = 0x02;

const ATT_TNEF_VERSION: u32 = 0x0008_9006;
const ATT_OEM_CODEPAGE: u32 = 0x0006_9007;
const ATT_MESSAGE_CLASS: u32 = 0x0007_8008;
const ATT_MSG_PROPS: u32 = 0x0006_9003;
const ATT_ATTACH_REND_DATA: u32 = 0x0006_9002;
const ATT_ATTACH_TITLE: u32 = 0x0001_8010;
const ATT_ATTACH_DATA: u32 = 0x0006_800F;
const ATT_ATTACHMENT: u32 = 0x0006_9005;
pub const ATT_BODY: u32 = 0x0002_800C;

/// One MAPI property, encoded.
#[derive(Clone)]
pub struct Prop {
    bytes: Vec<u8>,
}

fn padded(out: &mut Vec<u8>, value: &[u8]) {
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + (4 - value.len() % 4) % 4, 0);
}

/// Text as Windows-1252 sees it (enough for the tests: Latin-1 letters).
pub fn cp1252(text: &str) -> Vec<u8> {
    text.chars().map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?')).collect()
}

impl Prop {
    fn variable(id: u32, ptype: u32, value: &[u8]) -> Self {
        let mut bytes = ((id << 16) | ptype).to_le_bytes().to_vec();
        bytes.extend_from_slice(&1u32.to_le_bytes());
        padded(&mut bytes, value);
        Self { bytes }
    }

    /// PT_STRING8, NUL-terminated, in Windows-1252.
    pub fn string8(id: u32, text: &str) -> Self {
        let mut value = cp1252(text);
        value.push(0);
        Self::variable(id, 0x001E, &value)
    }

    /// PT_UNICODE, NUL-terminated UTF-16LE.
    pub fn unicode(id: u32, text: &str) -> Self {
        let value: Vec<u8> = text.encode_utf16().chain([0]).flat_map(u16::to_le_bytes).collect();
        Self::variable(id, 0x001F, &value)
    }

    pub fn binary(id: u32, value: &[u8]) -> Self {
        Self::variable(id, 0x0102, value)
    }

    /// PT_OBJECT: the interface id counts in the value's length.
    pub fn object(id: u32, iid: &[u8; 16], object: &[u8]) -> Self {
        Self::variable(id, 0x000D, &[&iid[..], object].concat())
    }

    pub fn long(id: u32, value: u32) -> Self {
        let mut bytes = ((id << 16) | 0x0003).to_le_bytes().to_vec();
        bytes.extend_from_slice(&value.to_le_bytes());
        Self { bytes }
    }

    pub fn boolean(id: u32, value: bool) -> Self {
        let mut bytes = ((id << 16) | 0x000B).to_le_bytes().to_vec();
        bytes.extend_from_slice(&u32::from(value).to_le_bytes());
        Self { bytes }
    }

    /// A named property (by numeric id) holding a PT_LONG: readers must skip
    /// the name to get to what follows.
    pub fn named_long(guid: [u8; 16], name_id: u32, value: u32) -> Self {
        let mut bytes = ((0x8005u32 << 16) | 0x0003).to_le_bytes().to_vec();
        bytes.extend_from_slice(&guid);
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&name_id.to_le_bytes());
        bytes.extend_from_slice(&value.to_le_bytes());
        Self { bytes }
    }

    /// PT_SYSTIME (a FILETIME).
    pub fn systime(id: u32, filetime: u64) -> Self {
        let mut bytes = ((id << 16) | 0x0040).to_le_bytes().to_vec();
        bytes.extend_from_slice(&filetime.to_le_bytes());
        Self { bytes }
    }
}

fn props(list: &[Prop]) -> Vec<u8> {
    let mut out = (list.len() as u32).to_le_bytes().to_vec();
    for p in list {
        out.extend_from_slice(&p.bytes);
    }
    out
}

fn attribute(out: &mut Vec<u8>, level: u8, id: u32, data: &[u8]) {
    out.push(level);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    let checksum = data.iter().fold(0u16, |sum, &b| sum.wrapping_add(u16::from(b)));
    out.extend_from_slice(&checksum.to_le_bytes());
}

#[derive(Clone)]
pub struct Attachment {
    title: String,
    data: Vec<u8>,
    props: Vec<Prop>,
}

/// An attachment as Outlook writes it: attAttachTitle (8.3 or long name in
/// Windows-1252) and attAttachData, plus MAPI properties given with `prop`.
pub fn attachment(title: &str, data: &[u8]) -> Attachment {
    Attachment { title: title.to_string(), data: data.to_vec(), props: Vec::new() }
}

impl Attachment {
    pub fn prop(mut self, p: Prop) -> Self {
        self.props.push(p);
        self
    }
}

#[derive(Clone, Default)]
pub struct Message {
    message_attributes: Vec<(u32, Vec<u8>)>,
    props: Vec<Prop>,
    attachments: Vec<Attachment>,
    raw: Vec<(u8, u32, Vec<u8>)>,
}

impl Message {
    pub fn new() -> Self {
        Self::default()
    }

    /// A property for attMsgProps.
    pub fn prop(mut self, p: Prop) -> Self {
        self.props.push(p);
        self
    }

    /// A message-level attribute (attBody, attSubject…), before attMsgProps.
    pub fn attribute(mut self, id: u32, data: &[u8]) -> Self {
        self.message_attributes.push((id, data.to_vec()));
        self
    }

    pub fn attachment(mut self, a: Attachment) -> Self {
        self.attachments.push(a);
        self
    }

    /// Any attribute, written last as given (checksum computed).
    pub fn raw_attribute(mut self, level: u8, id: u32, data: &[u8]) -> Self {
        self.raw.push((level, id, data.to_vec()));
        self
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = SIGNATURE.to_le_bytes().to_vec();
        out.extend_from_slice(&0x5A3Du16.to_le_bytes());
        attribute(&mut out, LVL_MESSAGE, ATT_TNEF_VERSION, &0x0001_0000u32.to_le_bytes());
        attribute(&mut out, LVL_MESSAGE, ATT_OEM_CODEPAGE, &[1252u32.to_le_bytes(), 0u32.to_le_bytes()].concat());
        attribute(&mut out, LVL_MESSAGE, ATT_MESSAGE_CLASS, b"IPM.Microsoft Mail.Note\0");
        for (id, data) in &self.message_attributes {
            attribute(&mut out, LVL_MESSAGE, *id, data);
        }
        if !self.props.is_empty() {
            attribute(&mut out, LVL_MESSAGE, ATT_MSG_PROPS, &props(&self.props));
        }
        for a in &self.attachments {
            // RENDDATA: atyp file, position none, no size, no flags.
            let mut rend = 1u16.to_le_bytes().to_vec();
            rend.extend_from_slice(&u32::MAX.to_le_bytes());
            rend.extend_from_slice(&[0; 8]);
            attribute(&mut out, LVL_ATTACHMENT, ATT_ATTACH_REND_DATA, &rend);
            let mut title = cp1252(&a.title);
            title.push(0);
            attribute(&mut out, LVL_ATTACHMENT, ATT_ATTACH_TITLE, &title);
            attribute(&mut out, LVL_ATTACHMENT, ATT_ATTACH_DATA, &a.data);
            if !a.props.is_empty() {
                attribute(&mut out, LVL_ATTACHMENT, ATT_ATTACHMENT, &props(&a.props));
            }
        }
        for (level, id, data) in &self.raw {
            attribute(&mut out, *level, *id, data);
        }
        out
    }
}

/// The dictionary compressed RTF starts from ([MS-OXRTFCP] 2.1.2.1).
const RTF_DICTIONARY: &[u8] = b"{\\rtf1\\ansi\\mac\\deff0\\deftab720{\\fonttbl;}{\\f0\\fnil \\froman \\fswiss \\fmodern \\fscript \\fdecor MS Sans SerifSymbolArialTimes New RomanCourier{\\colortbl\\red0\\green0\\blue0\r\n\\par \\pard\\plain\\f0\\fs20\\b\\i\\u\\tab\\tx";

/// [MS-OXRTFCP] 2.1.3.2, bit by bit (the reader uses a table).
pub fn rtf_crc(bytes: &[u8]) -> u32 {
    let mut crc = 0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    crc
}

/// A compressor written from [MS-OXRTFCP] 2.2.3 for the tests: greedy
/// longest match against the dictionary as the reader will see it.
pub fn compress_rtf(rtf: &[u8]) -> Vec<u8> {
    let mut dict = [0u8; 4096];
    dict[..RTF_DICTIONARY.len()].copy_from_slice(RTF_DICTIONARY);
    let mut write = RTF_DICTIONARY.len();
    let mut contents = Vec::new();
    let mut pos = 0;
    let mut done = false;
    while !done {
        let control_at = contents.len();
        contents.push(0u8);
        for bit in 0..8 {
            if pos >= rtf.len() {
                // The end marker: a reference to the write position.
                contents[control_at] |= 1 << bit;
                contents.extend_from_slice(&((write as u16) << 4).to_be_bytes());
                done = true;
                break;
            }
            let (mut best_offset, mut best_len) = (0, 0);
            for offset in 0..4096usize {
                if offset == write {
                    continue;
                }
                let mut len = 0;
                while len < 17 && pos + len < rtf.len() {
                    // What the reader will see: bytes it wrote during this
                    // very reference where the ranges overlap.
                    let back = (offset + len + 4096 - write) % 4096;
                    let b = if back < len { rtf[pos + back] } else { dict[(offset + len) % 4096] };
                    if b != rtf[pos + len] {
                        break;
                    }
                    len += 1;
                }
                if len > best_len {
                    (best_offset, best_len) = (offset, len);
                }
            }
            let take = if best_len >= 2 {
                contents[control_at] |= 1 << bit;
                contents.extend_from_slice(&(((best_offset as u16) << 4) | (best_len as u16 - 2)).to_be_bytes());
                best_len
            } else {
                contents.push(rtf[pos]);
                1
            };
            for &b in &rtf[pos..pos + take] {
                dict[write] = b;
                write = (write + 1) % 4096;
            }
            pos += take;
        }
    }
    let mut out = Vec::new();
    out.extend_from_slice(&(contents.len() as u32 + 12).to_le_bytes());
    out.extend_from_slice(&(rtf.len() as u32).to_le_bytes());
    out.extend_from_slice(&0x7546_5A4Cu32.to_le_bytes());
    out.extend_from_slice(&rtf_crc(&contents).to_le_bytes());
    out.extend_from_slice(&contents);
    out
}

pub fn stored_rtf(rtf: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(rtf.len() as u32 + 12).to_le_bytes());
    out.extend_from_slice(&(rtf.len() as u32).to_le_bytes());
    out.extend_from_slice(&0x414C_454Du32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(rtf);
    out
}
