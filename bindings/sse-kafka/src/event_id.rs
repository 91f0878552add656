//! Zilla's sse-kafka event ids: the progress of a merged read, encoded so that a subscriber
//! can hand it back (`Last-Event-ID` or `?lastEventId=`) and resume on any gateway replica.
//!
//! The progress (the next offset of every partition) is written as
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
//! and then base64url encoded with padding, e.g. partitions 0 and 1 at offsets 2 and 1 give
//! `AQQABAIC`. When the record has an `etag` header, `/` and its value follow. The
//! `["${base64(key)}","${etag}"]` form wraps that in a JSON pair with the base64url key (or
//! `null`).
//!
//! Decoding accepts all three shapes, with or without base64 padding.

use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_PAD_INDIFFERENT};
use zilla_binding_kafka::kind::PartitionOffset;

/// The only encoding version Zilla writes.
const VERSION: u8 = 1;

/// A last event id that is not one of Zilla's id shapes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid last event id: {0}")]
pub struct InvalidEventId(pub &'static str);

/// The base64url form of a key, as it appears in ids and in the data of `delete` events.
pub fn encode_key(key: &[u8]) -> String {
    URL_SAFE.encode(key)
}

/// The `${etag}` id: the encoded progress, then `/etag` when the record has an `etag` header.
pub fn encode_progress(progress: &[PartitionOffset], etag: Option<&[u8]>) -> String {
    let mut raw = Vec::with_capacity(2 + progress.len() * 4);
    raw.push(VERSION);
    put_varint(&mut raw, zigzag32(count(progress.len())).into());
    for entry in progress {
        put_varint(&mut raw, zigzag32(entry.partition).into());
        put_varint(&mut raw, zigzag64(entry.offset));
    }
    let mut id = URL_SAFE.encode(&raw);
    if let Some(etag) = etag {
        id.push('/');
        id.push_str(&String::from_utf8_lossy(etag));
    }
    id
}

/// The `["${base64(key)}","${etag}"]` id: a JSON pair of the base64url key (`null` for a null
/// key) and the `${etag}` id.
pub fn encode_key_and_progress(
    key: Option<&[u8]>,
    progress: &[PartitionOffset],
    etag: Option<&[u8]>,
) -> String {
    let progress = encode_progress(progress, etag);
    match key {
        Some(key) => format!("[\"{}\",\"{progress}\"]", encode_key(key)),
        None => format!("[null,\"{progress}\"]"),
    }
}

/// The per-partition offsets an id of any of the three shapes carries.
///
/// Partitions the id does not list (e.g. added since) are up to the caller; Zilla reads them
/// from the start. An offset below zero (never written by a merged read) leaves its partition
/// unlisted.
pub fn decode(id: &str) -> Result<Vec<PartitionOffset>, InvalidEventId> {
    let raw = URL_SAFE_PAD_INDIFFERENT
        .decode(progress_part(id)?)
        .map_err(|_| InvalidEventId("not base64url"))?;
    let mut reader = Reader { raw: &raw };
    if reader.byte()? != VERSION {
        return Err(InvalidEventId("unknown version"));
    }
    let count = unzigzag32(reader.varint32()?);
    // Every partition takes at least two bytes: a count beyond that is a lie.
    let count = usize::try_from(count)
        .ok()
        .filter(|count| *count <= reader.raw.len() / 2)
        .ok_or(InvalidEventId("bad partition count"))?;
    let mut offsets = Vec::with_capacity(count);
    for _ in 0..count {
        let partition = unzigzag32(reader.varint32()?);
        let offset = unzigzag64(reader.varint64()?);
        if partition < 0 {
            return Err(InvalidEventId("negative partition"));
        }
        if offset >= 0 {
            offsets.push(PartitionOffset { partition, offset });
        }
    }
    Ok(offsets)
}

/// The base64 progress inside `progress64`, `progress64/etag` or `["key64","progress64[/etag]"]`.
fn progress_part(id: &str) -> Result<&str, InvalidEventId> {
    let id = id.trim();
    let progress = if let Some(pair) = id.strip_prefix('[') {
        // The key is base64url or `null`, so the first comma ends it; the etag may hold
        // anything, so the progress ends at the `/` or closing quote, whichever comes first.
        let (_, second) = pair
            .split_once(',')
            .ok_or(InvalidEventId("expected [key, id]"))?;
        let quoted = second
            .trim_start()
            .strip_prefix('"')
            .ok_or(InvalidEventId("expected a quoted id"))?;
        let end = quoted
            .find(['/', '"'])
            .ok_or(InvalidEventId("unclosed id"))?;
        &quoted[..end]
    } else {
        id.split_once('/').map_or(id, |(progress, _)| progress)
    };
    if progress.is_empty() {
        return Err(InvalidEventId("empty"));
    }
    Ok(progress)
}

fn count(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
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
    fn byte(&mut self) -> Result<u8, InvalidEventId> {
        let (first, rest) = self.raw.split_first().ok_or(InvalidEventId("truncated"))?;
        self.raw = rest;
        Ok(*first)
    }

    fn varint(&mut self, max_bytes: u32) -> Result<u64, InvalidEventId> {
        let mut value = 0u64;
        for index in 0..max_bytes {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(InvalidEventId("varint too long"))
    }

    fn varint32(&mut self) -> Result<u32, InvalidEventId> {
        u32::try_from(self.varint(5)?).map_err(|_| InvalidEventId("varint32 out of range"))
    }

    fn varint64(&mut self) -> Result<u64, InvalidEventId> {
        self.varint(10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn progress(pairs: &[(i32, i64)]) -> Vec<PartitionOffset> {
        pairs
            .iter()
            .map(|&(partition, offset)| PartitionOffset { partition, offset })
            .collect()
    }

    // Expected ids below are written from the format, byte by byte, and match the ids in
    // Zilla's sse-kafka spec scripts (`server.sent.messages.with.etag`, `...key.and.etag`,
    // `...null.key`, `server.sent.null`).

    #[test]
    fn progress_of_the_spec_scripts() {
        // 01 | 04 (2 partitions) | 00 04 (p0 @ 2) | 02 02 (p1 @ 1)
        assert_eq!(
            encode_progress(&progress(&[(0, 2), (1, 1)]), None),
            "AQQABAIC"
        );
        // 01 | 04 | 00 06 (p0 @ 3) | 02 02
        assert_eq!(
            encode_progress(&progress(&[(0, 3), (1, 1)]), None),
            "AQQABgIC"
        );
        assert_eq!(
            encode_progress(&progress(&[(0, 2), (1, 1)]), Some(b"revision=42")),
            "AQQABAIC/revision=42"
        );
    }

    #[test]
    fn key_and_progress_of_the_spec_scripts() {
        assert_eq!(
            encode_key_and_progress(
                Some(b"key"),
                &progress(&[(0, 2), (1, 1)]),
                Some(b"revision=42")
            ),
            r#"["a2V5","AQQABAIC/revision=42"]"#
        );
        assert_eq!(
            encode_key_and_progress(None, &progress(&[(0, 3), (1, 1)]), None),
            r#"[null,"AQQABgIC"]"#
        );
        assert_eq!(encode_key(b"key"), "a2V5");
    }

    #[test]
    fn padding_and_multi_byte_varints() {
        // 01 02 00 02: one partition, p0 @ 1; four bytes need padding.
        assert_eq!(encode_progress(&progress(&[(0, 1)]), None), "AQIAAg==");
        // 01 | 06 | 00 d8 04 (p0 @ 300 → 600) | 02 00 (p1 @ 0) | 04 e0 c5 08 (p2 @ 70000)
        assert_eq!(
            encode_progress(&progress(&[(0, 300), (1, 0), (2, 70000)]), None),
            "AQYA2AQCAATgxQg="
        );
        assert_eq!(encode_progress(&[], None), "AQA=");
        assert_eq!(encode_key(&[0xfb, 0xff]), "-_8=");
    }

    #[test]
    fn decodes_every_shape() {
        let expected = progress(&[(0, 2), (1, 1)]);
        for id in [
            "AQQABAIC",
            "AQQABAIC/revision=42",
            r#"["a2V5","AQQABAIC"]"#,
            r#"["a2V5","AQQABAIC/revision=42"]"#,
            r#"[null,"AQQABAIC"]"#,
            r#"[null, "AQQABAIC/W/"x,y""]"#,
        ] {
            assert_eq!(decode(id), Ok(expected.clone()), "{id}");
        }
        assert_eq!(decode("AQIAAg=="), Ok(progress(&[(0, 1)])));
        assert_eq!(decode("AQIAAg"), Ok(progress(&[(0, 1)])));
        assert_eq!(
            decode("AQYA2AQCAATgxQg="),
            Ok(progress(&[(0, 300), (1, 0), (2, 70000)]))
        );
    }

    #[test]
    fn negative_offsets_leave_the_partition_unlisted() {
        // 01 | 04 | 00 03 (p0 @ -2) | 02 02 (p1 @ 1)
        assert_eq!(decode("AQQAAwIC"), Ok(progress(&[(1, 1)])));
    }

    #[test]
    fn rejects_what_is_not_an_id() {
        for id in [
            "",
            "/etag",
            "5",
            "not base64!",
            "AgQABAIC",     // version 2
            "AQQABA==",     // two partitions announced, one present
            "AQ==",         // no count
            "AQEAAg==",     // count -1
            "AQIBAg==",     // partition -1
            "AQL______wEA", // partition varint longer than five bytes
            "[\"a2V5\"]",
            "[\"a2V5\",AQQABAIC]",
            "[\"a2V5\",\"AQQABAIC",
        ] {
            assert!(decode(id).is_err(), "{id} decoded as {:?}", decode(id));
        }
    }

    fn progress_strategy() -> impl Strategy<Value = Vec<PartitionOffset>> {
        proptest::collection::vec((0..i32::MAX, 0..i64::MAX), 0..40).prop_map(|pairs| {
            pairs
                .into_iter()
                .map(|(partition, offset)| PartitionOffset { partition, offset })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn every_shape_round_trips(
            progress in progress_strategy(),
            key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            etag in proptest::option::of("[ -~]{0,30}"),
        ) {
            let etag = etag.as_deref().map(str::as_bytes);
            prop_assert_eq!(decode(&encode_progress(&progress, etag)), Ok(progress.clone()));
            let pair = encode_key_and_progress(key.as_deref(), &progress, etag);
            prop_assert_eq!(decode(&pair), Ok(progress));
        }

        #[test]
        fn arbitrary_text_never_panics(id in ".{0,64}") {
            let _ = decode(&id);
        }
    }
}
