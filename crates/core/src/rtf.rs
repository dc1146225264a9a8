//! Outlook's rich-text bodies: compressed RTF ([MS-OXRTFCP], the value of
//! PR_RTF_COMPRESSED in a TNEF stream) and a best-effort plain text of RTF.
//!
//! Both run on bytes from strangers: every read is bounds-checked, the output
//! is capped, and each loop consumes input, so nothing panics, hangs or grows
//! without bound.

use crate::codepage;

/// More RTF than this is not decompressed (a body is kilobytes; the cap
/// only stops a small stream from claiming to unpack into gigabytes).
pub const MAX_RTF: usize = 32 << 20;

const COMPRESSED: u32 = 0x7546_5A4C; // "LZFu"
const UNCOMPRESSED: u32 = 0x414C_454D; // "MELA"

/// The dictionary every compressed stream starts from ([MS-OXRTFCP] 2.1.2.1).
const INITIAL_DICTIONARY: &[u8] = b"{\\rtf1\\ansi\\mac\\deff0\\deftab720{\\fonttbl;}{\\f0\\fnil \\froman \\fswiss \\fmodern \\fscript \\fdecor MS Sans SerifSymbolArialTimes New RomanCourier{\\colortbl\\red0\\green0\\blue0\r\n\\par \\pard\\plain\\f0\\fs20\\b\\i\\u\\tab\\tx";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RtfError {
    #[error("compressed RTF shorter than its 16-byte header")]
    NoHeader,
    #[error("compressed RTF of unknown type {0:#010x}")]
    UnknownType(u32),
    #[error("compressed RTF cut off: it claims {claimed} bytes, {left} are there")]
    Truncated { claimed: u64, left: usize },
    #[error("compressed RTF unpacks to more than {MAX_RTF} bytes")]
    TooLarge,
}

/// What [`decompress`] read, with what was odd about it.
#[derive(Debug, PartialEq, Eq)]
pub struct Decompressed {
    pub rtf: Vec<u8>,
    /// Problems that did not stop reading (a CRC mismatch, a missing end).
    pub warnings: Vec<String>,
}

/// CRC-32 as [MS-OXRTFCP] 2.1.3.2 computes it: the IEEE polynomial, started
/// at 0 and not inverted at the end.
fn crc(bytes: &[u8]) -> u32 {
    static TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    bytes.iter().fold(0u32, |crc, &b| TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8))
}

fn le32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Unpacks a PR_RTF_COMPRESSED value, compressed ("LZFu") or stored ("MELA").
pub fn decompress(data: &[u8]) -> Result<Decompressed, RtfError> {
    if data.len() < 16 {
        return Err(RtfError::NoHeader);
    }
    let (comp_size, raw_size, comp_type, stored_crc) = (le32(data, 0), le32(data, 4), le32(data, 8), le32(data, 12));
    let mut warnings = Vec::new();
    // COMPSIZE counts the 12 header bytes after itself.
    let claimed = u64::from(comp_size).saturating_sub(12);
    let body = &data[16..];
    let contents = match usize::try_from(claimed).ok().and_then(|n| body.get(..n)) {
        Some(contents) => contents,
        None => return Err(RtfError::Truncated { claimed, left: body.len() }),
    };
    match comp_type {
        UNCOMPRESSED => {
            let n = (raw_size as usize).min(contents.len());
            if n > MAX_RTF {
                return Err(RtfError::TooLarge);
            }
            Ok(Decompressed { rtf: contents[..n].to_vec(), warnings })
        }
        COMPRESSED => {
            if crc(contents) != stored_crc {
                warnings.push("compressed RTF: CRC mismatch; unpacked anyway".to_string());
            }
            let (rtf, ended) = lzfu(contents, (raw_size as usize).min(MAX_RTF))?;
            if !ended {
                warnings.push("compressed RTF: no end marker; kept what was there".to_string());
            }
            Ok(Decompressed { rtf, warnings })
        }
        other => Err(RtfError::UnknownType(other)),
    }
}

/// The LZ77 variant of [MS-OXRTFCP] 2.2.3: a control byte says, bit by bit
/// from the lowest, whether each of the next eight tokens is a literal byte
/// or a big-endian reference (12-bit dictionary offset, 4-bit length - 2);
/// a reference to the write position ends the stream. Returns the output
/// and whether the end marker was met.
fn lzfu(contents: &[u8], expected: usize) -> Result<(Vec<u8>, bool), RtfError> {
    let mut dict = [0u8; 4096];
    dict[..INITIAL_DICTIONARY.len()].copy_from_slice(INITIAL_DICTIONARY);
    let mut write = INITIAL_DICTIONARY.len();
    // The header's size is a hint only: the cap is what bounds the output.
    let mut out = Vec::with_capacity(expected.min(1 << 20));
    let mut pos = 0;
    while let Some(&control) = contents.get(pos) {
        pos += 1;
        for bit in 0..8 {
            if control & (1 << bit) == 0 {
                let Some(&b) = contents.get(pos) else { return Ok((out, false)) };
                pos += 1;
                out.push(b);
                dict[write] = b;
                write = (write + 1) % 4096;
            } else {
                let Some(pair) = contents.get(pos..pos + 2) else { return Ok((out, false)) };
                pos += 2;
                let word = u16::from_be_bytes([pair[0], pair[1]]) as usize;
                let (offset, len) = (word >> 4, (word & 0xF) + 2);
                if offset == write {
                    return Ok((out, true));
                }
                // Byte by byte: a reference may overlap the bytes it writes.
                for i in 0..len {
                    let b = dict[(offset + i) % 4096];
                    out.push(b);
                    dict[write] = b;
                    write = (write + 1) % 4096;
                }
            }
            if out.len() > MAX_RTF {
                return Err(RtfError::TooLarge);
            }
        }
    }
    Ok((out, false))
}

/// Destinations whose text is not the document's text.
const SKIPPED_DESTINATIONS: &[&[u8]] = &[
    b"fonttbl",
    b"colortbl",
    b"stylesheet",
    b"info",
    b"pict",
    b"object",
    b"header",
    b"footer",
    b"headerl",
    b"headerr",
    b"footerl",
    b"footerr",
    b"fldinst",
    b"listtable",
    b"listoverridetable",
    b"rsidtbl",
    b"themedata",
    b"colorschememapping",
    b"datastore",
    b"latentstyles",
    b"xmlnstbl",
    b"filetbl",
    b"revtbl",
    b"generator",
];

#[derive(Clone, Copy)]
struct Group {
    skip: bool,
    /// \ucN: how many fallback characters follow each \u.
    uc: usize,
}

/// The text of an RTF document, best effort: paragraphs and line breaks as
/// newlines, \'hh bytes in the document's code page, \u characters, and
/// no tables, fonts, pictures or ignorable destinations (which also drops
/// the HTML tags of Outlook's HTML-in-RTF, keeping its text).
pub fn to_text(rtf: &[u8]) -> String {
    let mut text = String::new();
    let mut pending: Vec<u8> = Vec::new(); // \'hh bytes not yet decoded
    let mut codepage = 1252u32;
    let mut stack: Vec<Group> = Vec::new();
    let mut group = Group { skip: false, uc: 1 };
    let mut group_start = false;
    let mut fallback_left = 0usize; // characters after \u still to drop
    let mut i = 0;
    let flush = |pending: &mut Vec<u8>, text: &mut String, codepage: u32| {
        if !pending.is_empty() {
            text.push_str(&codepage::decode(codepage, pending));
            pending.clear();
        }
    };
    while i < rtf.len() {
        let b = rtf[i];
        i += 1;
        match b {
            b'{' => {
                flush(&mut pending, &mut text, codepage);
                stack.push(group);
                group_start = true;
                fallback_left = 0;
            }
            b'}' => {
                flush(&mut pending, &mut text, codepage);
                if let Some(outer) = stack.pop() {
                    group = outer;
                }
                group_start = false;
                fallback_left = 0;
            }
            b'\\' => {
                let Some(&next) = rtf.get(i) else { break };
                if next.is_ascii_alphabetic() {
                    let start = i;
                    while i < rtf.len() && rtf[i].is_ascii_alphabetic() && i - start < 32 {
                        i += 1;
                    }
                    let word = &rtf[start..i];
                    let num_start = i;
                    if rtf.get(i) == Some(&b'-') {
                        i += 1;
                    }
                    while i < rtf.len() && rtf[i].is_ascii_digit() && i - num_start < 11 {
                        i += 1;
                    }
                    let param: Option<i64> = std::str::from_utf8(&rtf[num_start..i]).ok().and_then(|s| s.parse().ok());
                    if rtf.get(i) == Some(&b' ') {
                        i += 1;
                    }
                    if group_start && SKIPPED_DESTINATIONS.contains(&word) {
                        group.skip = true;
                    }
                    group_start = false;
                    if fallback_left > 0 {
                        fallback_left -= 1;
                        continue;
                    }
                    if word != b"u" {
                        flush(&mut pending, &mut text, codepage);
                    }
                    if group.skip {
                        continue;
                    }
                    match word {
                        b"par" | b"line" | b"sect" | b"page" | b"row" => text.push('\n'),
                        b"tab" | b"cell" => text.push('\t'),
                        b"ansicpg" => codepage = param.and_then(|p| u32::try_from(p).ok()).unwrap_or(1252),
                        b"uc" => group.uc = param.and_then(|p| usize::try_from(p).ok()).unwrap_or(1).min(8),
                        b"u" => {
                            flush(&mut pending, &mut text, codepage);
                            // A signed 16-bit value: negative numbers are the upper half.
                            let unit = param.unwrap_or(0) as i16 as u16;
                            text.push(char::from_u32(u32::from(unit)).unwrap_or('\u{FFFD}'));
                            fallback_left = group.uc;
                        }
                        b"emdash" => text.push('—'),
                        b"endash" => text.push('–'),
                        b"bullet" => text.push('•'),
                        b"lquote" => text.push('‘'),
                        b"rquote" => text.push('’'),
                        b"ldblquote" => text.push('“'),
                        b"rdblquote" => text.push('”'),
                        _ => {}
                    }
                } else {
                    i += 1;
                    let was_start = std::mem::take(&mut group_start);
                    match next {
                        b'*' if was_start => group.skip = true,
                        b'\'' => {
                            let hex = rtf.get(i..i + 2).and_then(|h| std::str::from_utf8(h).ok());
                            let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
                            i = (i + 2).min(rtf.len());
                            if fallback_left > 0 {
                                fallback_left -= 1;
                            } else if let (Some(byte), false) = (byte, group.skip) {
                                pending.push(byte);
                            }
                        }
                        b'\\' | b'{' | b'}' if !group.skip && fallback_left == 0 => {
                            flush(&mut pending, &mut text, codepage);
                            text.push(char::from(next));
                        }
                        b'~' if !group.skip => text.push('\u{a0}'),
                        b'_' if !group.skip => text.push('-'),
                        b'\n' | b'\r' if !group.skip => {
                            flush(&mut pending, &mut text, codepage);
                            text.push('\n');
                        }
                        _ => fallback_left = fallback_left.saturating_sub(1),
                    }
                }
            }
            b'\r' | b'\n' => {}
            _ => {
                group_start = false;
                if fallback_left > 0 {
                    fallback_left -= 1;
                } else if !group.skip {
                    if b.is_ascii() {
                        flush(&mut pending, &mut text, codepage);
                        text.push(char::from(b));
                    } else {
                        pending.push(b);
                    }
                }
            }
        }
    }
    flush(&mut pending, &mut text, codepage);
    text.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::tnef::writer::{compress_rtf as compress, stored_rtf as stored};

    const SAMPLE: &[u8] = b"{\\rtf1\\ansi\\ansicpg1252\\pard hello world}\r\n";

    /// The example of [MS-OXRTFCP] 3.1.1, byte for byte.
    #[test]
    fn decompresses_the_specification_example() {
        let spec: [u8; 0x31] = [
            0x2d, 0x00, 0x00, 0x00, 0x2b, 0x00, 0x00, 0x00, 0x4c, 0x5a, 0x46, 0x75, 0xf1, 0xc5, 0xc7, 0xa7, 0x03, 0x00,
            0x0a, 0x00, 0x72, 0x63, 0x70, 0x67, 0x31, 0x32, 0x35, 0x42, 0x32, 0x0a, 0xf3, 0x20, 0x68, 0x65, 0x6c, 0x09,
            0x00, 0x20, 0x62, 0x77, 0x05, 0xb0, 0x6c, 0x64, 0x7d, 0x0a, 0x80, 0x0f, 0xa0,
        ];
        let got = decompress(&spec).unwrap();
        assert_eq!(got.rtf, SAMPLE);
        assert!(got.warnings.is_empty(), "{:?}", got.warnings);
    }

    #[test]
    fn round_trips_through_the_test_compressor() {
        let text: Vec<u8> =
            b"{\\rtf1\\ansi\\ansicpg1252 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa \\par Gr\\'fc\\'df}"
                .iter()
                .copied()
                .cycle()
                .take(10_000)
                .collect();
        let packed = compress(&text);
        assert!(packed.len() < text.len() / 2, "compresses: {} of {}", packed.len(), text.len());
        let got = decompress(&packed).unwrap();
        assert_eq!(got.rtf, text);
        assert!(got.warnings.is_empty());
        assert_eq!(decompress(&stored(SAMPLE)).unwrap().rtf, SAMPLE);
    }

    #[test]
    fn broken_streams_are_errors_or_warnings_never_panics() {
        assert_eq!(decompress(b"short"), Err(RtfError::NoHeader));
        let mut packed = compress(SAMPLE);
        packed[8] = b'X';
        assert!(matches!(decompress(&packed), Err(RtfError::UnknownType(_))));
        let packed = compress(SAMPLE);
        assert!(matches!(decompress(&packed[..packed.len() - 3]), Err(RtfError::Truncated { .. })));
        let mut bad_crc = packed.clone();
        bad_crc[12] ^= 1;
        assert_eq!(decompress(&bad_crc).unwrap().warnings.len(), 1);
        // COMPSIZE claims four gigabytes.
        let mut huge = packed.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decompress(&huge), Err(RtfError::Truncated { .. })));
    }

    /// Every reference at its longest: the output is capped, not the input.
    #[test]
    fn a_bomb_stops_at_the_cap() {
        let mut contents = Vec::new();
        let mut write = INITIAL_DICTIONARY.len();
        for _ in 0..(MAX_RTF / (17 * 8) + 16) {
            contents.extend_from_slice(&[0xFF]); // all eight tokens are references
            for _ in 0..8 {
                // Anywhere but the write position, which would end the stream.
                let offset = ((write + 1) % 4096) as u16;
                contents.extend_from_slice(&((offset << 4) | 0xF).to_be_bytes());
                write = (write + 17) % 4096;
            }
        }
        let mut data = Vec::new();
        data.extend_from_slice(&(contents.len() as u32 + 12).to_le_bytes());
        data.extend_from_slice(&u32::MAX.to_le_bytes());
        data.extend_from_slice(&COMPRESSED.to_le_bytes());
        data.extend_from_slice(&crc(&contents).to_le_bytes());
        data.extend_from_slice(&contents);
        let got = decompress(&data).map(|d| d.rtf.len());
        assert!(matches!(got, Err(RtfError::TooLarge)), "{got:?}");
    }

    #[test]
    fn plain_text_of_outlook_rtf() {
        let rtf = b"{\\rtf1\\ansi\\ansicpg1252\\deff0{\\fonttbl{\\f0\\fswiss Calibri;}}{\\colortbl;\\red0\\green0\\blue0;}\r\n{\\*\\generator Riched20;}\\pard Hallo Frau M\\'fcller,\\par\r\nder Zugang ist \\b eingerichtet\\b0 .\\par\r\n\\u8364?10 \\{netto\\}\\line Gr\\'fc\\'dfe}";
        assert_eq!(to_text(rtf), "Hallo Frau Müller,\nder Zugang ist eingerichtet.\n€10 {netto}\nGrüße");
        assert_eq!(to_text(SAMPLE), "hello world");
    }

    #[test]
    fn html_in_rtf_keeps_the_text_without_the_tags() {
        let rtf = b"{\\rtf1\\ansi\\fromhtml1 {\\*\\htmltag64 <p>}Erste Zeile{\\*\\htmltag72 </p>}\\par {\\*\\htmltag64 <p>}zweite{\\*\\htmltag72 </p>}}";
        assert_eq!(to_text(rtf), "Erste Zeile\nzweite");
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            let _ = decompress(&data);
            let _ = to_text(&data);
        }

        #[test]
        fn random_contents_behind_a_valid_header_never_panic(contents in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            let mut data = Vec::new();
            data.extend_from_slice(&(contents.len() as u32 + 12).to_le_bytes());
            data.extend_from_slice(&4096u32.to_le_bytes());
            data.extend_from_slice(&COMPRESSED.to_le_bytes());
            data.extend_from_slice(&crc(&contents).to_le_bytes());
            data.extend_from_slice(&contents);
            if let Ok(got) = decompress(&data) {
                // Each input byte yields at most 17 output bytes.
                proptest::prop_assert!(got.rtf.len() <= contents.len() * 17);
            }
        }
    }
}
