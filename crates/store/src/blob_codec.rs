//! Raw mails and entry bodies stored compressed.
//!
//! Every byte SQLite stores is written into its WAL, flushed, and written
//! again into the database file by the checkpoint; on a small machine those
//! writes, not the CPU, are what a pass waits for (an experiment that stored
//! a third of each mail's bytes ran 1.21× faster, docs/benchmarks.md). A
//! mail is compressed with LZ4 where it is fetched, on the thread that
//! hashes its batch, so the database lane only writes fewer bytes. Large
//! mails are stored as they are: they are streamed into the database and
//! never sit whole in memory twice.
//!
//! The text and HTML bodies of ticket entries are the other half of the
//! bytes written: SQLite keeps each body of 1 KB or more that compresses
//! as a BLOB holding its [`pack`]ed UTF-8, and smaller ones as TEXT, in
//! the same TEXT column (SQLite keeps a BLOB's storage class whatever the
//! column's affinity). The storage class is the codec: TEXT as it is, BLOB
//! LZ4. PostgreSQL compresses its own (TOAST) and holds text only;
//! `migrate-store` unpacks bodies on the way ([`PACKED_TEXT_COLUMNS`]).

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, Value, ValueRef};

use crate::{Result, StoreError};

/// The codec of a blob stored compressed (`blobs.codec`); NULL: as it is.
pub const LZ4: &str = "lz4";

/// Mails larger than this are stored as they are.
pub const PACK_AT_MOST: usize = 1 << 20;

/// `raw` compressed, when it is small enough to compress in memory and
/// compressing saves at least a tenth of it.
pub fn pack(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.len() > PACK_AT_MOST || raw.len() < 1024 {
        return None;
    }
    let packed = lz4_flex::block::compress_prepend_size(raw);
    (packed.len() * 10 <= raw.len() * 9).then_some(packed)
}

/// The bytes of a blob of `size` bytes stored as `stored` with `codec`.
pub(crate) fn unpack(codec: Option<&str>, stored: Vec<u8>, size: i64) -> Result<Vec<u8>> {
    let raw = match codec {
        None => return Ok(stored),
        Some(LZ4) => lz4_flex::block::decompress_size_prepended(&stored)
            .map_err(|e| StoreError::Corrupt(format!("a compressed blob does not decompress: {e}")))?,
        Some(other) => return Err(StoreError::Corrupt(format!("a blob is stored with an unknown codec {other:?}"))),
    };
    if raw.len() as i64 != size {
        return Err(StoreError::Corrupt(format!("a compressed blob holds {} bytes, not {size}", raw.len())));
    }
    Ok(raw)
}

/// Columns SQLite may hold as packed text: (table, column).
pub(crate) const PACKED_TEXT_COLUMNS: [(&str, &str); 3] =
    [("ticket_entries", "text_body"), ("ticket_entries", "html_body"), ("ticket_entries", "new_text")];

/// A body as SQLite stores it: packed when that saves a tenth, else as it is.
pub(crate) fn pack_text(text: &str) -> ToSqlOutput<'_> {
    match pack(text.as_bytes()) {
        Some(packed) => ToSqlOutput::Owned(Value::Blob(packed)),
        None => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
    }
}

/// The text of a packed body (a BLOB of a [`PACKED_TEXT_COLUMNS`] column).
pub(crate) fn unpack_text(stored: &[u8]) -> std::result::Result<String, String> {
    let bytes = lz4_flex::block::decompress_size_prepended(stored)
        .map_err(|e| format!("a compressed body does not decompress: {e}"))?;
    String::from_utf8(bytes).map_err(|e| format!("a compressed body is not UTF-8: {e}"))
}

/// A body read from SQLite, whichever way it was stored.
pub(crate) struct StoredText(pub String);

impl FromSql for StoredText {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value {
            ValueRef::Blob(stored) => unpack_text(stored)
                .map(StoredText)
                .map_err(|why| FromSqlError::Other(Box::new(StoreError::Corrupt(why)))),
            other => String::column_result(other).map(StoredText),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mails_come_back_as_they_went_in() {
        let text = "Subject: Printer\r\n\r\nThe printer on floor 3 is out of toner again.\r\n".repeat(100);
        let packed = pack(text.as_bytes()).expect("text compresses");
        assert!(packed.len() < text.len() / 4, "{} of {}", packed.len(), text.len());
        assert_eq!(unpack(Some(LZ4), packed, text.len() as i64).unwrap(), text.as_bytes());
        assert_eq!(unpack(None, b"as is".to_vec(), 5).unwrap(), b"as is");
    }

    #[test]
    fn what_does_not_shrink_or_is_large_is_stored_as_it_is() {
        // Bytes that do not repeat (as in a packed attachment) do not shrink.
        assert!(pack(&crate::testing::random_looking_bytes(64 * 1024)).is_none());
        assert!(pack(&vec![b'x'; PACK_AT_MOST + 1]).is_none(), "large mails are streamed, not compressed");
        assert!(pack(b"tiny").is_none());
    }

    #[test]
    fn bodies_are_stored_packed_when_that_pays_and_read_back_either_way() {
        let body = "Hello,\n\nthe VPN drops every ten minutes since Monday. Can you help?\n".repeat(40);
        let stored = pack_text(&body);
        let ToSqlOutput::Owned(Value::Blob(packed)) = &stored else { panic!("a 2.8 KB body is packed: {stored:?}") };
        assert!(packed.len() < body.len() / 4);
        let read = |v: ValueRef<'_>| StoredText::column_result(v).map(|t| t.0);
        assert_eq!(read(ValueRef::Blob(packed)).unwrap(), body);
        // Short bodies, and bodies stored before packing existed, are text.
        assert!(matches!(pack_text("Thanks!"), ToSqlOutput::Borrowed(ValueRef::Text(b"Thanks!"))));
        assert_eq!(read(ValueRef::Text(b"Thanks!")).unwrap(), "Thanks!");
        assert!(read(ValueRef::Blob(&packed[..packed.len() / 2])).is_err(), "damaged: an error, not a panic");
    }

    #[test]
    fn a_damaged_blob_is_an_error_not_a_panic() {
        let text = "hello world ".repeat(500);
        let mut packed = pack(text.as_bytes()).unwrap();
        assert!(unpack(Some(LZ4), packed.clone(), text.len() as i64 + 1).is_err(), "wrong size");
        packed.truncate(packed.len() / 2);
        assert!(unpack(Some(LZ4), packed, text.len() as i64).is_err());
        assert!(unpack(Some("zstd"), Vec::new(), 0).is_err());
    }
}
