//! Zilla's progress tokens: the next offset of every partition of a merged read, encoded so a
//! client can hand it back (an HTTP `etag`/`if-none-match`, an SSE `Last-Event-ID`) and resume on
//! any gateway replica, Zilla's or ours.
//!
//! ```text
//! 0x01                       version, one byte
//! varint32  partitionCount   zigzag, then 7-bit groups, low group first
//! partitionCount × {
//!   varint32  partitionId    zigzag
//!   varint64  offset         zigzag
//! }
//! ```
//!
//! then base64url with padding: partitions 0 and 1 at offsets 2 and 1 give `AQQABAIC`. A
//! token may be followed by `/` and the record's own `etag` header value
//! (`AQQABAIC/revision=42`). Decoding accepts base64 with or without padding, as Java's
//! URL decoder (which Zilla uses) does.

use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_PAD_INDIFFERENT};

use crate::kind::PartitionOffset;

/// The only encoding version Zilla writes.
const VERSION: u8 = 1;

/// Text that is not a progress token; says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid progress: {0}")]
pub struct InvalidProgress(pub &'static str);

/// The token of `progress`, then `/` and `suffix` (the record's `etag` header) when given.
/// Partitions with a negative id are left out, as Zilla does.
pub fn encode(progress: &[PartitionOffset], suffix: Option<&[u8]>) -> String {
    let mut token = URL_SAFE.encode(encode_raw(progress));
    if let Some(suffix) = suffix {
        token.push('/');
        token.push_str(&String::from_utf8_lossy(suffix));
    }
    token
}

/// The bytes of the token of `progress` before base64: what `grpc-kafka` puts in each
/// message's reliability field, and what its clients send back base64url-encoded.
pub fn encode_raw(progress: &[PartitionOffset]) -> Vec<u8> {
    let partitions = progress.iter().filter(|entry| entry.partition >= 0);
    let count = i32::try_from(partitions.clone().count()).unwrap_or(i32::MAX);
    let mut raw = Vec::with_capacity(2 + progress.len() * 4);
    raw.push(VERSION);
    put_varint(&mut raw, zigzag32(count).into());
    for entry in partitions {
        put_varint(&mut raw, zigzag32(entry.partition).into());
        put_varint(&mut raw, zigzag64(entry.offset));
    }
    raw
}

/// The offsets a token (its part before any `/`) carries, sorted by partition.
///
/// Partitions the token does not list are up to the caller (Zilla reads them from the start).
/// A negative offset (never written by a merged read) leaves its partition unlisted.
pub fn decode(token: &str) -> Result<Vec<PartitionOffset>, InvalidProgress> {
    let base64 = progress_part(token);
    if base64.is_empty() {
        return Err(InvalidProgress("empty"));
    }
    if !is_base64url(base64) {
        return Err(InvalidProgress("not base64url"));
    }
    let raw = URL_SAFE_PAD_INDIFFERENT
        .decode(base64)
        .map_err(|_| InvalidProgress("not base64url"))?;
    decode_raw(&raw)
}

/// The offsets of a token's bytes before base64 ([`encode_raw`]), sorted by partition.
pub fn decode_raw(raw: &[u8]) -> Result<Vec<PartitionOffset>, InvalidProgress> {
    let mut reader = Reader { raw };
    if reader.byte()? != VERSION {
        return Err(InvalidProgress("unknown version"));
    }
    let count = unzigzag32(reader.varint32()?);
    // Every partition takes at least two bytes: a count beyond that is a lie.
    let count = usize::try_from(count)
        .ok()
        .filter(|count| *count <= reader.raw.len() / 2)
        .ok_or(InvalidProgress("bad partition count"))?;
    let mut offsets = Vec::with_capacity(count);
    for _ in 0..count {
        let partition = unzigzag32(reader.varint32()?);
        let offset = unzigzag64(reader.varint64()?);
        if partition < 0 {
            return Err(InvalidProgress("negative partition"));
        }
        if offset >= 0 {
            offsets.push(PartitionOffset { partition, offset });
        }
    }
    offsets.sort();
    Ok(offsets)
}

/// The base64 part of `token`: what comes before any `/`.
pub fn progress_part(token: &str) -> &str {
    token
        .split_once('/')
        .map_or(token, |(progress, _)| progress)
}

/// Whether `text` uses only base64url characters (padding included).
pub fn is_base64url(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'='))
}

/// The base64url form of a record key, as Zilla writes keys next to progress.
pub fn encode_key(key: &[u8]) -> String {
    URL_SAFE.encode(key)
}

fn zigzag32(value: i32) -> u32 {
    ((value << 1) ^ (value >> 31)) as u32
}

fn zigzag64(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag32(value: u32) -> i32 {
    ((value >> 1) as i32) ^ -((value & 1) as i32)
}

fn unzigzag64(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

struct Reader<'a> {
    raw: &'a [u8],
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, InvalidProgress> {
        let (first, rest) = self.raw.split_first().ok_or(InvalidProgress("truncated"))?;
        self.raw = rest;
        Ok(*first)
    }

    fn varint(&mut self, max_bytes: u32) -> Result<u64, InvalidProgress> {
        let mut value = 0u64;
        for index in 0..max_bytes {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(InvalidProgress("varint too long"))
    }

    fn varint32(&mut self) -> Result<u32, InvalidProgress> {
        u32::try_from(self.varint(5)?).map_err(|_| InvalidProgress("varint32 out of range"))
    }

    fn varint64(&mut self) -> Result<u64, InvalidProgress> {
        self.varint(10)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    fn progress(pairs: &[(i32, i64)]) -> Vec<PartitionOffset> {
        pairs
            .iter()
            .map(|&(partition, offset)| PartitionOffset { partition, offset })
            .collect()
    }

    // Expected tokens are written from the format, byte by byte, and match those in Zilla's
    // http-kafka and sse-kafka spec scripts.

    #[test]
    fn tokens_of_the_spec_scripts() {
        // 01 | 04 (2 partitions) | 00 04 (p0 @ 2) | 02 02 (p1 @ 1)
        assert_eq!(encode(&progress(&[(0, 2), (1, 1)]), None), "AQQABAIC");
        assert_eq!(encode(&progress(&[(0, 1), (1, 1)]), None), "AQQAAgIC");
        assert_eq!(encode(&progress(&[(0, 3), (1, 1)]), None), "AQQABgIC");
        assert_eq!(
            encode(&progress(&[(0, 2), (1, 1)]), Some(b"revision=42")),
            "AQQABAIC/revision=42"
        );
    }

    #[test]
    fn padding_and_multi_byte_varints() {
        assert_eq!(encode(&progress(&[(0, 1)]), None), "AQIAAg==");
        assert_eq!(encode(&progress(&[(0, 5)]), None), "AQIACg==");
        // 01 | 06 | 00 d8 04 (p0 @ 300) | 02 00 (p1 @ 0) | 04 e0 c5 08 (p2 @ 70000)
        assert_eq!(
            encode(&progress(&[(0, 300), (1, 0), (2, 70000)]), None),
            "AQYA2AQCAATgxQg="
        );
        assert_eq!(encode(&[], None), "AQA=");
        assert_eq!(encode_key(&[0xfb, 0xff]), "-_8=");
    }

    #[test]
    fn negative_partitions_are_left_out_and_negative_offsets_unlisted() {
        assert_eq!(
            encode(&progress(&[(-1, 4), (0, 2), (1, 1)]), None),
            "AQQABAIC"
        );
        // 01 | 04 | 00 03 (p0 @ -2) | 02 02 (p1 @ 1)
        assert_eq!(decode("AQQAAwIC"), Ok(progress(&[(1, 1)])));
    }

    #[test]
    fn decodes_with_or_without_padding_and_suffix() {
        assert_eq!(decode("AQQABAIC"), Ok(progress(&[(0, 2), (1, 1)])));
        assert_eq!(
            decode("AQQABAIC/revision=42"),
            Ok(progress(&[(0, 2), (1, 1)]))
        );
        assert_eq!(decode("AQIAAg=="), Ok(progress(&[(0, 1)])));
        assert_eq!(decode("AQIAAg"), Ok(progress(&[(0, 1)])));
        // 01 | 04 | 02 02 (p1 @ 1) | 00 04 (p0 @ 2): sorted by partition.
        assert_eq!(decode("AQQCAgAE"), Ok(progress(&[(0, 2), (1, 1)])));
    }

    #[test]
    fn rejects_what_is_not_a_token() {
        for token in [
            "",
            "/etag",
            "5",
            "****",
            "not base64!",
            "AgQABAIC",     // version 2
            "AQQABA==",     // two partitions announced, one present
            "AQQA",         // truncated
            "AQ==",         // no count
            "AQEAAg==",     // count -1
            "AQIBAg==",     // partition -1
            "AQL______wEA", // partition varint longer than five bytes
        ] {
            assert!(
                decode(token).is_err(),
                "{token} decoded as {:?}",
                decode(token)
            );
        }
    }

    fn progress_strategy() -> impl Strategy<Value = Vec<PartitionOffset>> {
        proptest::collection::btree_map(0..i32::MAX, 0..i64::MAX, 0..40).prop_map(|pairs| {
            pairs
                .into_iter()
                .map(|(partition, offset)| PartitionOffset { partition, offset })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn round_trips(
            progress in progress_strategy(),
            suffix in proptest::option::of("[ -~]{0,30}"),
        ) {
            let token = encode(&progress, suffix.as_deref().map(str::as_bytes));
            prop_assert!(is_base64url(progress_part(&token)));
            prop_assert_eq!(decode(&token), Ok(progress));
        }

        #[test]
        fn arbitrary_text_never_panics(token in ".{0,64}") {
            let _ = decode(&token);
        }
    }
}
