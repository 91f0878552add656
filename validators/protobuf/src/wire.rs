//! Whether bytes decode as a message, found without building the message.
//!
//! `prost_reflect::DynamicMessage::decode` builds every field as a `Value`: a packed repeated
//! field of one-byte varints takes about fifty times its wire size in memory, so a message at
//! the 4 MiB gRPC limit could take hundreds of MiB to check. [`check`] walks the wire format
//! against the descriptor instead and allocates nothing. It accepts exactly what
//! `DynamicMessage::decode` accepts (a property test holds the two to it): the same wire type
//! per field kind (packed or not for packable repeated fields), UTF-8 strings, fixed-width
//! values whole, nested messages and groups within their bounds and the same recursion limit,
//! unknown fields skipped as it reads them, and map entries read as it reads them (their
//! field's wire type unchecked). Primitives are read with `prost::encoding`'s own functions.
//! No crate offers such a walk: `prost-reflect` decodes into values only.

use prost::encoding::{WireType, check_wire_type, decode_key, decode_varint};
use prost::{DecodeError, bytes::Buf};
use prost_reflect::{Kind, MessageDescriptor};

/// Messages and groups nested deeper than this are refused, as `prost` refuses them.
const RECURSION_LIMIT: u32 = 100;

/// Why bytes do not decode as a message (the same reasons `prost` gives).
#[derive(Debug)]
pub struct WireError(String);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "failed to decode Protobuf message: {}", self.0)
    }
}

impl std::error::Error for WireError {}

impl From<DecodeError> for WireError {
    fn from(error: DecodeError) -> Self {
        // `DecodeError` prints its own prefix; keep only the reason.
        let text = error.to_string();
        let reason = text
            .strip_prefix("failed to decode Protobuf message: ")
            .unwrap_or(&text);
        Self(reason.to_owned())
    }
}

fn error(reason: &str) -> WireError {
    WireError(reason.to_owned())
}

/// `Ok` when `bytes` decode as a `descriptor` message.
pub fn check(descriptor: &MessageDescriptor, mut bytes: &[u8]) -> Result<(), WireError> {
    fields(descriptor, &mut bytes, RECURSION_LIMIT)
}

/// The fields of a `descriptor` message, to the end of `buf`; `depth` is what is left of the
/// recursion limit for them.
fn fields(descriptor: &MessageDescriptor, buf: &mut &[u8], depth: u32) -> Result<(), WireError> {
    while !buf.is_empty() {
        let (tag, wire_type) = decode_key(buf)?;
        field(descriptor, tag, wire_type, buf, depth)?;
    }
    Ok(())
}

/// The shape of a field or an extension: what decides how its values are read.
struct Shape {
    number: u32,
    kind: Kind,
    list: bool,
    map: bool,
    group: bool,
}

/// Field `tag` of a `descriptor` message, its key read.
fn field(
    descriptor: &MessageDescriptor,
    tag: u32,
    wire_type: WireType,
    buf: &mut &[u8],
    depth: u32,
) -> Result<(), WireError> {
    let shape = if let Some(field) = descriptor.get_field(tag) {
        Shape {
            number: field.number(),
            kind: field.kind(),
            list: field.is_list(),
            map: field.is_map(),
            group: field.is_group(),
        }
    } else if let Some(extension) = descriptor.get_extension(tag) {
        Shape {
            number: extension.number(),
            kind: extension.kind(),
            list: extension.is_list(),
            map: extension.is_map(),
            group: extension.is_group(),
        }
    } else {
        return unknown(tag, wire_type, buf, depth);
    };
    if shape.map {
        let Kind::Message(entry) = &shape.kind else {
            return Err(error("map field without an entry message"));
        };
        return map_entry(entry, buf, depth);
    }
    if shape.list && wire_type == WireType::LengthDelimited && packable(&shape.kind) {
        let mut packed = delimited(buf)?;
        while !packed.is_empty() {
            value(&shape, shape.kind.wire_type(), &mut packed, depth)?;
        }
        return Ok(());
    }
    value(&shape, wire_type, buf, depth)
}

/// Whether a repeated field of `kind` may come packed.
fn packable(kind: &Kind) -> bool {
    !matches!(kind, Kind::String | Kind::Bytes | Kind::Message(_))
}

/// One value of a field of `shape`.
fn value(shape: &Shape, wire_type: WireType, buf: &mut &[u8], depth: u32) -> Result<(), WireError> {
    match &shape.kind {
        Kind::Bool
        | Kind::Int32
        | Kind::Int64
        | Kind::Uint32
        | Kind::Uint64
        | Kind::Sint32
        | Kind::Sint64
        | Kind::Enum(_) => {
            check_wire_type(WireType::Varint, wire_type)?;
            decode_varint(buf)?;
        }
        Kind::Fixed32 | Kind::Sfixed32 | Kind::Float => {
            check_wire_type(WireType::ThirtyTwoBit, wire_type)?;
            fixed(buf, 4)?;
        }
        Kind::Fixed64 | Kind::Sfixed64 | Kind::Double => {
            check_wire_type(WireType::SixtyFourBit, wire_type)?;
            fixed(buf, 8)?;
        }
        Kind::String => {
            check_wire_type(WireType::LengthDelimited, wire_type)?;
            let text = delimited(buf)?;
            std::str::from_utf8(text)
                .map_err(|_| error("invalid string value: data is not UTF-8 encoded"))?;
        }
        Kind::Bytes => {
            check_wire_type(WireType::LengthDelimited, wire_type)?;
            delimited(buf)?;
        }
        Kind::Message(message) if shape.group => {
            check_wire_type(WireType::StartGroup, wire_type)?;
            limit(depth)?;
            loop {
                let (tag, wire_type) = decode_key(buf)?;
                if wire_type == WireType::EndGroup {
                    if tag != shape.number {
                        return Err(error("unexpected end group tag"));
                    }
                    break;
                }
                field(message, tag, wire_type, buf, depth - 1)?;
            }
        }
        Kind::Message(message) => {
            check_wire_type(WireType::LengthDelimited, wire_type)?;
            limit(depth)?;
            let mut inner = delimited(buf)?;
            fields(message, &mut inner, depth - 1)?;
        }
    }
    Ok(())
}

/// One entry of a map field: its key (1) and value (2) read as their fields' values, other
/// fields skipped; the map field's own wire type is not looked at (nor is it by `prost-reflect`).
fn map_entry(entry: &MessageDescriptor, buf: &mut &[u8], depth: u32) -> Result<(), WireError> {
    let mut inner = delimited(buf)?;
    while !inner.is_empty() {
        let (tag, wire_type) = decode_key(&mut inner)?;
        match entry.get_field(tag).filter(|_| tag == 1 || tag == 2) {
            Some(field) => {
                let shape = Shape {
                    number: field.number(),
                    kind: field.kind(),
                    list: false,
                    map: false,
                    group: field.is_group(),
                };
                value(&shape, wire_type, &mut inner, depth)?;
            }
            None => skip(tag, wire_type, &mut inner, depth, true)?,
        }
    }
    Ok(())
}

/// A field the message does not declare, read as `prost-reflect` keeps unknown fields.
fn unknown(tag: u32, wire_type: WireType, buf: &mut &[u8], depth: u32) -> Result<(), WireError> {
    skip(tag, wire_type, buf, depth, false)
}

/// Skips the value of field `tag`. `prost::encoding::skip_field` (`limited`) refuses any
/// value past the recursion limit; `prost-reflect`'s unknown fields only a group.
fn skip(
    tag: u32,
    wire_type: WireType,
    buf: &mut &[u8],
    depth: u32,
    limited: bool,
) -> Result<(), WireError> {
    if limited {
        limit(depth)?;
    }
    match wire_type {
        WireType::Varint => {
            decode_varint(buf)?;
        }
        WireType::ThirtyTwoBit => fixed(buf, 4)?,
        WireType::SixtyFourBit => fixed(buf, 8)?,
        WireType::LengthDelimited => {
            delimited(buf)?;
        }
        WireType::StartGroup => {
            limit(depth)?;
            loop {
                let (inner, inner_wire_type) = decode_key(buf)?;
                if inner_wire_type == WireType::EndGroup {
                    if inner != tag {
                        return Err(error("unexpected end group tag"));
                    }
                    break;
                }
                skip(inner, inner_wire_type, buf, depth - 1, limited)?;
            }
        }
        WireType::EndGroup => return Err(error("unexpected end group tag")),
    }
    Ok(())
}

/// Refuses a message or group nested past the recursion limit.
fn limit(depth: u32) -> Result<(), WireError> {
    if depth == 0 {
        return Err(error("recursion limit reached"));
    }
    Ok(())
}

/// Takes `width` bytes.
fn fixed(buf: &mut &[u8], width: usize) -> Result<(), WireError> {
    if buf.remaining() < width {
        return Err(error("buffer underflow"));
    }
    buf.advance(width);
    Ok(())
}

/// Takes a length-delimited value, returning its bytes.
fn delimited<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], WireError> {
    let length = decode_varint(buf)?;
    let length = usize::try_from(length)
        .ok()
        .filter(|length| *length <= buf.len())
        .ok_or_else(|| error("buffer underflow"))?;
    let (value, rest) = buf.split_at(length);
    *buf = rest;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use prost::Message;
    use prost_reflect::DynamicMessage;

    /// Every kind of field: scalars of each wire type, packable and not, repeated, nested and
    /// recursive messages, maps, a oneof, a proto2 group, required fields and an extension.
    const PROTO: &str = r#"
syntax = "proto2";
package wire.test;

enum Colour { RED = 0; GREEN = 1; }

message Everything {
  optional int32 i32 = 1;
  optional sint64 s64 = 2;
  optional fixed32 f32 = 3;
  optional double f64 = 4;
  optional string text = 5;
  optional bytes data = 6;
  optional Colour colour = 7;
  optional bool flag = 8;
  repeated int64 packed = 9 [packed = true];
  repeated fixed64 unpacked = 10;
  repeated string texts = 11;
  optional Everything child = 12;
  repeated Everything children = 13;
  map<string, Everything> named = 14;
  map<int32, string> numbered = 15;
  oneof choice { uint32 u32 = 16; float f = 17; }
  optional group Block = 18 { optional int32 inner = 19; optional Everything deep = 20; }
  required sfixed32 needed = 21;
  extensions 100 to 199;
}

extend Everything { repeated sint32 more = 100; }
"#;

    fn descriptor() -> MessageDescriptor {
        let pool = crate::schema::compile(&[("wire.proto".into(), PROTO.into())]).unwrap();
        pool.get_message_by_name("wire.test.Everything").unwrap()
    }

    fn decodes(descriptor: &MessageDescriptor, bytes: &[u8]) -> bool {
        DynamicMessage::decode(descriptor.clone(), bytes).is_ok()
    }

    fn key(tag: u32, wire_type: u8) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::encode_varint(u64::from(tag) << 3 | u64::from(wire_type), &mut out);
        out
    }

    fn varint(value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::encode_varint(value, &mut out);
        out
    }

    /// One field on the wire: a tag among the declared, the extension's and unknown ones, any
    /// of the eight wire type values, and a payload shaped by the wire type or not at all.
    fn field_bytes(inner: BoxedStrategy<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
        let tag = prop_oneof![1u32..=22, Just(100u32), Just(101u32), 1u32..1000];
        let payload = prop_oneof![
            any::<u64>().prop_map(varint),
            proptest::collection::vec(any::<u8>(), 0..10),
            inner.prop_map(|bytes| [varint(bytes.len() as u64), bytes].concat()),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(|bytes| [
                varint(bytes.len() as u64),
                bytes
            ]
            .concat()),
            Just("héllo".as_bytes().to_vec())
                .prop_map(|bytes| [varint(bytes.len() as u64), bytes].concat()),
            Just(vec![2, 0xff, 0xfe]),
        ];
        (tag, 0u8..8, payload).prop_map(|(tag, wire_type, payload)| {
            let mut out = key(tag, wire_type);
            out.extend(payload);
            if wire_type == 3 {
                out.extend(key(tag, 4));
            }
            out
        })
    }

    /// Messages made of such fields, nested a few levels through length-delimited payloads.
    fn message_bytes() -> impl Strategy<Value = Vec<u8>> {
        let leaf = proptest::collection::vec(any::<u8>(), 0..8).boxed();
        leaf.prop_recursive(4, 64, 8, |inner| {
            proptest::collection::vec(field_bytes(inner), 0..8)
                .prop_map(|fields| fields.concat())
                .boxed()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// The walk accepts exactly what `DynamicMessage::decode` accepts.
        #[test]
        fn accepts_what_decoding_accepts(bytes in message_bytes()) {
            let descriptor = descriptor();
            prop_assert_eq!(check(&descriptor, &bytes).is_ok(), decodes(&descriptor, &bytes), "{:?}", bytes);
        }

        /// The same for any bytes at all.
        #[test]
        fn accepts_what_decoding_accepts_of_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let descriptor = descriptor();
            prop_assert_eq!(check(&descriptor, &bytes).is_ok(), decodes(&descriptor, &bytes), "{:?}", bytes);
        }
    }

    /// Real messages, and each of them cut short at every length.
    #[test]
    fn encoded_messages_pass_and_their_prefixes_agree() {
        let descriptor = descriptor();
        let json = r#"{"i32": -5, "s64": "-7", "f32": 3, "f64": 1.5, "text": "héllo", "data": "AAE=",
            "colour": "GREEN", "flag": true, "packed": ["1", "300", "-2"], "unpacked": ["9"],
            "texts": ["a", ""], "child": {"needed": 1, "text": "c"}, "children": [{"needed": 2}],
            "named": {"k": {"needed": 3}}, "numbered": {"4": "four"}, "u32": 8,
            "block": {"inner": 6, "deep": {"needed": 4}}, "needed": 7, "[wire.test.more]": [1, -1]}"#;
        let mut deserializer = serde_json::Deserializer::from_str(json);
        let message = DynamicMessage::deserialize(descriptor.clone(), &mut deserializer).unwrap();
        let bytes = message.encode_to_vec();
        assert!(check(&descriptor, &bytes).is_ok());
        for end in 0..bytes.len() {
            let prefix = &bytes[..end];
            assert_eq!(
                check(&descriptor, prefix).is_ok(),
                decodes(&descriptor, prefix),
                "first {end} bytes"
            );
        }
    }

    /// Nesting at the recursion limit and one past it, through messages and through groups.
    #[test]
    fn the_recursion_limit_is_decodings() {
        let descriptor = descriptor();
        for depth in [98, 99, 100, 101, 102] {
            // `child` (12) nested `depth` times.
            let mut message = Vec::new();
            for _ in 0..depth {
                message = [key(12, 2), varint(message.len() as u64), message].concat();
            }
            assert_eq!(
                check(&descriptor, &message).is_ok(),
                decodes(&descriptor, &message),
                "messages {depth} deep"
            );
            // Unknown groups (field 500) nested `depth` times.
            let mut group = Vec::new();
            for _ in 0..depth {
                group = [key(500, 3), group, key(500, 4)].concat();
            }
            assert_eq!(
                check(&descriptor, &group).is_ok(),
                decodes(&descriptor, &group),
                "unknown groups {depth} deep"
            );
            // The `Block` group (18) holding `deep` (20) messages.
            let mut mixed = Vec::new();
            for _ in 0..depth / 2 {
                let block = [key(18, 3), mixed, key(18, 4)].concat();
                mixed = [key(20, 2), varint(block.len() as u64), block].concat();
            }
            let mixed = [key(12, 2), varint(mixed.len() as u64), mixed].concat();
            assert_eq!(
                check(&descriptor, &mixed).is_ok(),
                decodes(&descriptor, &mixed),
                "groups and messages {depth} deep"
            );
        }
    }

    /// A packed field of a million one-byte varints: checked without building a value each.
    #[test]
    fn a_large_packed_field_is_checked() {
        let descriptor = descriptor();
        let values = vec![1u8; 1 << 20];
        let message = [key(9, 2), varint(values.len() as u64), values].concat();
        assert!(check(&descriptor, &message).is_ok());
        let mut truncated = message.clone();
        truncated.pop();
        assert!(check(&descriptor, &truncated).is_err());
    }
}
