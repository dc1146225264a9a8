//! Raw mails stored compressed.
//!
//! Every byte SQLite stores is written into its WAL, flushed, and written
//! again into the database file by the checkpoint; on a small machine those
//! writes, not the CPU, are what a pass waits for (an experiment that stored
//! a third of each mail's bytes ran 1.21× faster, docs/benchmarks.md). A
//! mail is compressed with LZ4 where it is fetched, on the thread that
//! hashes its batch, so the database lane only writes fewer bytes. Large
//! mails are stored as they are: they are streamed into the database and
//! never sit whole in memory twice.

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
    fn a_damaged_blob_is_an_error_not_a_panic() {
        let text = "hello world ".repeat(500);
        let mut packed = pack(text.as_bytes()).unwrap();
        assert!(unpack(Some(LZ4), packed.clone(), text.len() as i64 + 1).is_err(), "wrong size");
        packed.truncate(packed.len() / 2);
        assert!(unpack(Some(LZ4), packed, text.len() as i64).is_err());
        assert!(unpack(Some("zstd"), Vec::new(), 0).is_err());
    }
}
