//! Windows code page numbers (what TNEF and RTF name) → text.

use mail_parser::decoders::charsets::map::charset_decoder;

/// Bytes in Windows code page `cp`, as text. Unknown code pages are read
/// as Windows-1252, which is what such senders almost always mean.
pub fn decode(cp: u32, bytes: &[u8]) -> String {
    if cp == 65001 || bytes.is_ascii() {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let name: &[u8] = match cp {
        1250 => b"cp1250",
        1251 => b"cp1251",
        1253 => b"cp1253",
        1254 => b"cp1254",
        1255 => b"cp1255",
        1256 => b"cp1256",
        1257 => b"cp1257",
        1258 => b"cp1258",
        874 => b"windows-874",
        932 => b"ms932",
        936 => b"cp936",
        949 => b"windows-949",
        950 => b"big5",
        850 => b"cp850",
        866 => b"cp866",
        20866 => b"koi8-r",
        21866 => b"koi8-u",
        10000 => b"macintosh",
        28591 => b"iso-8859-1",
        28592 => b"iso-8859-2",
        28595 => b"iso-8859-5",
        28597 => b"iso-8859-7",
        28605 => b"iso-8859-15",
        54936 => b"gb18030",
        _ => b"cp1252",
    };
    match charset_decoder(name).or_else(|| charset_decoder(b"cp1252")) {
        Some(decoder) => decoder(bytes),
        None => String::from_utf8_lossy(bytes).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_legacy_code_pages() {
        assert_eq!(decode(1252, b"f\xfcr"), "für");
        assert_eq!(decode(1251, b"\xcf\xf0\xe8"), "При");
        assert_eq!(decode(65001, "für".as_bytes()), "für");
        assert_eq!(decode(4711, b"f\xfcr"), "für", "unknown code pages read as 1252");
    }
}
