//! Bytes checked by the wire walker (`zilla_validator_protobuf::wire::check`, which gRPC
//! requests and responses go through) and decoded by `prost_reflect::DynamicMessage::decode`,
//! against a proto2 schema with every kind of field (groups, extensions, required fields,
//! maps, packed and unpacked repeated fields, recursion): the two must accept and refuse the
//! same inputs, and the walker must never panic.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use zilla_validator_protobuf::{schema, wire};

const SCHEMA: &str = r#"
    syntax = "proto2";
    package fuzz;
    enum Colour { RED = 0; GREEN = 1; }
    message Node {
      optional int32 i32 = 1; optional sint64 s64 = 2; optional fixed32 f32 = 3;
      optional double f64 = 4; optional string text = 5; optional bytes data = 6;
      optional Colour colour = 7; optional bool flag = 8;
      repeated int64 packed = 9 [packed = true]; repeated fixed64 unpacked = 10;
      repeated string texts = 11; optional Node child = 12; repeated Node children = 13;
      map<string, Node> named = 14; map<int32, string> numbered = 15;
      oneof choice { uint32 u32 = 16; float f = 17; }
      optional group Block = 18 { optional int32 inner = 19; optional Node deep = 20; }
      required sfixed32 needed = 21;
      extensions 100 to 199;
    }
    extend Node { repeated sint32 more = 100; optional Node other = 101; }
"#;

fn node() -> &'static MessageDescriptor {
    static NODE: OnceLock<MessageDescriptor> = OnceLock::new();
    NODE.get_or_init(|| {
        let pool = schema::compile(&[("fuzz.proto".to_owned(), SCHEMA.to_owned())])
            .expect("the schema compiles");
        pool.get_message_by_name("fuzz.Node")
            .expect("the schema has Node")
    })
}

fuzz_target!(|data: &[u8]| {
    let descriptor = node();
    let walked = wire::check(descriptor, data).is_ok();
    let decoded = DynamicMessage::decode(descriptor.clone(), data).is_ok();
    assert_eq!(walked, decoded, "{data:?}");
});
