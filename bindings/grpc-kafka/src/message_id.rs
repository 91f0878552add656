//! The message id of a fetched message: the progress of every partition after its record
//! ([`zilla_binding_kafka::progress::encode_raw`], Zilla's `GrpcKafkaMessageField` v1), added
//! to the message as one more protobuf field of type `bytes` (number `reliability.field`).
//! Protobuf parsers keep fields they do not know, so the message still decodes as its type;
//! a client reads the field and, when it reconnects, sends it back base64url-encoded in the
//! `reliability.metadata` metadata (`last-message-id`).

use bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use zilla_binding_kafka::kind::PartitionOffset;
use zilla_binding_kafka::progress;

/// `message` followed by field `field` holding the id of `progress`.
pub fn append(field: u32, message: &[u8], progress: &[PartitionOffset]) -> Bytes {
    let id = progress::encode_raw(progress);
    let id_length = id.len() as u64;
    let mut out = BytesMut::with_capacity(
        message.len() + key_len(field) + encoded_len_varint(id_length) + id.len(),
    );
    out.put_slice(message);
    encode_key(field, WireType::LengthDelimited, &mut out);
    encode_varint(id_length, &mut out);
    out.put_slice(&id);
    out.freeze()
}

/// The partitions a client's last message id names: base64url text, or the raw id when the
/// metadata is binary (`-bin`). An id that is none of these reads from the start, as Zilla
/// does.
pub fn resume_offsets(text_or_raw: Result<&str, &[u8]>) -> Vec<PartitionOffset> {
    let decoded = match text_or_raw {
        Ok(text) => progress::decode(text),
        Err(raw) => progress::decode_raw(raw),
    };
    decoded.unwrap_or_else(|error| {
        tracing::debug!(%error, "unreadable last message id; reading from the start");
        Vec::new()
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use bytes::Buf;
    use proptest::prelude::*;
    use prost::encoding::{decode_key, decode_varint};

    /// Splits a message into the bytes before the id field and the id.
    fn split(field: u32, mut bytes: &[u8], message_len: usize) -> (Vec<u8>, Vec<u8>) {
        let message = bytes[..message_len].to_vec();
        bytes.advance(message_len);
        let (number, wire_type) = decode_key(&mut bytes).unwrap();
        assert_eq!((number, wire_type), (field, WireType::LengthDelimited));
        let length = decode_varint(&mut bytes).unwrap() as usize;
        assert_eq!(length, bytes.len());
        (message, bytes.to_vec())
    }

    #[test]
    fn the_field_holds_zillas_encoding() {
        let progress = [
            PartitionOffset {
                partition: 0,
                offset: 2,
            },
            PartitionOffset {
                partition: 1,
                offset: 1,
            },
        ];
        // `0a 0b "Hello World"`, then field 32767 (key 0xfa 0xff 0x0f), length 6, the id.
        let message = b"\x0a\x0bHello World";
        let appended = append(32767, message, &progress);
        assert_eq!(
            &appended[message.len()..],
            b"\xfa\xff\x0f\x06\x01\x04\x00\x04\x02\x02"
        );
        assert_eq!(resume_offsets(Ok("AQQABAIC")), progress);
        assert_eq!(
            resume_offsets(Err(&b"\x01\x04\x00\x04\x02\x02"[..])),
            progress
        );
        assert!(resume_offsets(Ok("not an id!")).is_empty());
    }

    proptest! {
        #[test]
        fn ids_round_trip(
            field in 1u32..536_870_911,
            message in proptest::collection::vec(any::<u8>(), 0..64),
            offsets in proptest::collection::btree_map(0i32..1000, 0i64..i64::MAX, 0..8),
        ) {
            let progress: Vec<PartitionOffset> = offsets
                .into_iter()
                .map(|(partition, offset)| PartitionOffset { partition, offset })
                .collect();
            let appended = append(field, &message, &progress);
            let (before, id) = split(field, &appended, message.len());
            prop_assert_eq!(before, message);
            prop_assert_eq!(progress::decode_raw(&id).unwrap(), progress.clone());
            let text = base64_url(&id);
            prop_assert_eq!(resume_offsets(Ok(&text)), progress);
        }
    }

    fn base64_url(raw: &[u8]) -> String {
        // The token of the same progress is the base64url of the same bytes.
        let progress = progress::decode_raw(raw).unwrap();
        progress::encode(&progress, None)
    }
}
