//! Zilla's sse-kafka event ids: the progress of a merged read
//! ([`zilla_binding_kafka::progress`]), which a subscriber hands back (`Last-Event-ID` or
//! `?lastEventId=`) to resume on any gateway replica.
//!
//! An id has one of two shapes: `${etag}` is the progress token, then `/` and the record's
//! `etag` header when it has one; `["${base64(key)}","${etag}"]` wraps that in a JSON pair
//! with the base64url key (or `null`). Decoding accepts both.

use zilla_binding_kafka::kind::PartitionOffset;
use zilla_binding_kafka::progress::{self, InvalidProgress};

pub use zilla_binding_kafka::progress::encode_key;

/// The `${etag}` id.
pub fn encode_progress(offsets: &[PartitionOffset], etag: Option<&[u8]>) -> String {
    progress::encode(offsets, etag)
}

/// The `["${base64(key)}","${etag}"]` id: a JSON pair of the base64url key (`null` for a null
/// key) and the `${etag}` id.
pub fn encode_key_and_progress(
    key: Option<&[u8]>,
    offsets: &[PartitionOffset],
    etag: Option<&[u8]>,
) -> String {
    let id = progress::encode(offsets, etag);
    match key {
        Some(key) => format!("[\"{}\",\"{id}\"]", encode_key(key)),
        None => format!("[null,\"{id}\"]"),
    }
}

/// The per-partition offsets an id of either shape carries (see [`progress::decode`]).
pub fn decode(id: &str) -> Result<Vec<PartitionOffset>, InvalidProgress> {
    progress::decode(progress_part(id.trim())?)
}

/// The progress token inside `progress64[/etag]` or `["key64","progress64[/etag]"]`.
fn progress_part(id: &str) -> Result<&str, InvalidProgress> {
    let Some(pair) = id.strip_prefix('[') else {
        return Ok(id);
    };
    // The key is base64url or `null`, so the first comma ends it; the etag may hold anything,
    // so the progress ends at the `/` or closing quote, whichever comes first.
    let (_, second) = pair
        .split_once(',')
        .ok_or(InvalidProgress("expected [key, id]"))?;
    let quoted = second
        .trim_start()
        .strip_prefix('"')
        .ok_or(InvalidProgress("expected a quoted id"))?;
    let end = quoted
        .find(['/', '"'])
        .ok_or(InvalidProgress("unclosed id"))?;
    Ok(&quoted[..end])
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

    // Expected ids below match the ids in Zilla's sse-kafka spec scripts
    // (`server.sent.messages.with.etag`, `...key.and.etag`, `...null.key`, `server.sent.null`).

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
    }

    #[test]
    fn rejects_pairs_that_are_not_ids() {
        for id in [
            "[\"a2V5\"]",
            "[\"a2V5\",AQQABAIC]",
            "[\"a2V5\",\"AQQABAIC",
            "[\"a2V5\",\"not base64!\"]",
        ] {
            assert!(decode(id).is_err(), "{id} decoded as {:?}", decode(id));
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
        fn every_shape_round_trips(
            offsets in progress_strategy(),
            key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            etag in proptest::option::of("[ -~]{0,30}"),
        ) {
            let etag = etag.as_deref().map(str::as_bytes);
            prop_assert_eq!(decode(&encode_progress(&offsets, etag)), Ok(offsets.clone()));
            let pair = encode_key_and_progress(key.as_deref(), &offsets, etag);
            prop_assert_eq!(decode(&pair), Ok(offsets));
        }

        #[test]
        fn arbitrary_text_never_panics(id in ".{0,64}") {
            let _ = decode(&id);
        }
    }
}
