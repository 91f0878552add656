//! Entity tags made of Kafka progress, in Zilla's exact encoding, so tags handed out by a
//! Zilla node are understood here and the other way round.
//!
//! The tag is the URL-safe base64 (with padding) of: a version byte `1`, the number of
//! partitions, then each partition id and next offset; numbers are zig-zag varints (32-bit for
//! counts and ids, 64-bit for offsets). An item's tag may be followed by `/` and the value of
//! the record's own `etag` header: `AQQABAIC/revision=42`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;
use zilla_binding_kafka::kind::PartitionOffset;

const VERSION: u8 = 1;

/// The tag of `progress` (partitions with a negative id are left out, as Zilla does).
pub fn encode(progress: &[PartitionOffset]) -> String {
    let partitions: Vec<&PartitionOffset> = progress.iter().filter(|p| p.partition >= 0).collect();
    let mut bytes = vec![VERSION];
    put_varint(&mut bytes, zigzag32(partitions.len() as i32));
    for partition in partitions {
        put_varint(&mut bytes, zigzag32(partition.partition));
        put_varint(&mut bytes, zigzag64(partition.offset));
    }
    URL_SAFE.encode(bytes)
}

/// The progress a tag (its part before any `/`) names; `None` when it is not one.
pub fn decode(tag: &str) -> Option<Vec<PartitionOffset>> {
    let progress = tag.split_once('/').map_or(tag, |(progress, _)| progress);
    if progress.is_empty() || !progress.len().is_multiple_of(4) {
        return None;
    }
    let bytes = URL_SAFE.decode(progress).ok()?;
    let (&version, mut rest) = bytes.split_first()?;
    if version != VERSION {
        return None;
    }
    let count = unzigzag32(take_varint(&mut rest)?);
    let mut partitions = Vec::with_capacity(count.clamp(0, 1024) as usize);
    for _ in 0..count {
        let partition = unzigzag32(take_varint(&mut rest)?);
        let offset = unzigzag64(take_varint(&mut rest)?);
        if partition >= 0 {
            partitions.push(PartitionOffset { partition, offset });
        }
    }
    partitions.sort();
    Some(partitions)
}

/// An item's tag: the progress tag, then `/` and the record's `etag` header when it has one.
pub fn item(progress: &[PartitionOffset], record_etag: Option<&[u8]>) -> String {
    let tag = encode(progress);
    match record_etag {
        Some(suffix) => format!("{tag}/{}", String::from_utf8_lossy(suffix)),
        None => tag,
    }
}

/// Splits a tag written by a client (`if-none-match`, `if-match`) into the whole tag and the
/// part after `/`, as Zilla reads them: the progress part must be base64url characters. Quotes
/// and a weakness mark around it are dropped, so standard HTTP clients work too.
pub fn parse(header: &str) -> Option<(String, Option<String>)> {
    let tag = header.trim();
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    let tag = tag
        .strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
        .unwrap_or(tag);
    let (progress, suffix) = match tag.split_once('/') {
        Some((progress, suffix)) => (progress, Some(suffix.to_owned())),
        None => (tag, None),
    };
    let valid = !progress.is_empty()
        && progress
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'='));
    valid.then(|| (tag.to_owned(), suffix))
}

fn zigzag32(value: i32) -> u64 {
    u64::from(((value << 1) ^ (value >> 31)) as u32)
}

fn zigzag64(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag32(value: u64) -> i32 {
    let value = value as u32;
    ((value >> 1) as i32) ^ -((value & 1) as i32)
}

fn unzigzag64(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn take_varint(input: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    fn offsets(pairs: &[(i32, i64)]) -> Vec<PartitionOffset> {
        pairs
            .iter()
            .map(|&(partition, offset)| PartitionOffset { partition, offset })
            .collect()
    }

    #[test]
    fn matches_the_tags_zilla_hands_out() {
        // From Zilla's http-kafka conformance scripts: progress (0,2),(1,1) and (0,1),(1,1).
        assert_eq!(encode(&offsets(&[(0, 2), (1, 1)])), "AQQABAIC");
        assert_eq!(encode(&offsets(&[(0, 1), (1, 1)])), "AQQAAgIC");
        assert_eq!(decode("AQQABAIC"), Some(offsets(&[(0, 2), (1, 1)])));
        assert_eq!(
            decode("AQQABAIC/revision=42"),
            Some(offsets(&[(0, 2), (1, 1)]))
        );
        assert_eq!(
            item(&offsets(&[(0, 2), (1, 1)]), Some(b"revision=42")),
            "AQQABAIC/revision=42"
        );
        // A single partition needs padding, which Zilla keeps.
        assert_eq!(encode(&offsets(&[(0, 5)])), "AQIACg==");
        assert_eq!(decode("AQIACg=="), Some(offsets(&[(0, 5)])));
    }

    #[test]
    fn rejects_what_is_not_a_tag() {
        assert_eq!(decode(""), None);
        assert_eq!(decode("AQIACg"), None, "unpadded");
        assert_eq!(decode("AgIACg=="), None, "version 2");
        assert_eq!(decode("AQQA"), None, "truncated");
        assert_eq!(decode("****"), None);
        assert_eq!(parse("*"), None);
        assert_eq!(
            parse("\"AQQABAIC/revision=42\""),
            Some(("AQQABAIC/revision=42".into(), Some("revision=42".into())))
        );
        assert_eq!(parse("AQQABAIC"), Some(("AQQABAIC".into(), None)));
        assert_eq!(parse("W/\"AQQABAIC\""), Some(("AQQABAIC".into(), None)));
    }

    proptest! {
        #[test]
        fn round_trips(pairs in proptest::collection::btree_map(0i32..10_000, 0i64..i64::MAX, 0..20)) {
            let progress: Vec<PartitionOffset> = pairs
                .into_iter()
                .map(|(partition, offset)| PartitionOffset { partition, offset })
                .collect();
            let tag = encode(&progress);
            prop_assert!(parse(&tag).is_some());
            prop_assert_eq!(decode(&tag), Some(progress));
        }
    }
}
