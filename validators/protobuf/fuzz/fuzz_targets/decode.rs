//! Stored message bytes through the protobuf model's `decode` and `validate` (the message
//! index array, the Protobuf binary decoder and the JSON view), against a recursive schema
//! with every kind of field: malformed input must come back as an error, without panics or
//! large allocations.

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use zilla_catalog_inline::InlineCatalog;
use zilla_catalog_inline::config::{InlineOptions, InlineSubject};
use zilla_engine::components::{Catalog, CatalogLookup, ModelContext, ModelFactory};
use zilla_engine::events::Events;
use zilla_validator_protobuf::ProtobufModelFactory;

const SCHEMA: &str = r#"
    syntax = "proto3";
    package fuzz;
    import "google/protobuf/any.proto";
    import "google/protobuf/duration.proto";
    import "google/protobuf/struct.proto";
    import "google/protobuf/timestamp.proto";
    import "google/protobuf/wrappers.proto";
    enum Kind { A = 0; B = 1; }
    message Node {
      string id = 1;
      double d = 2; float f = 3; int32 i32 = 4; int64 i64 = 5; uint32 u32 = 6; uint64 u64 = 7;
      sint32 s32 = 8; sint64 s64 = 9; fixed32 x32 = 10; fixed64 x64 = 11;
      sfixed32 sx32 = 12; sfixed64 sx64 = 13; bool b = 14; bytes data = 15; Kind kind = 16;
      repeated string tags = 17;
      repeated int64 packed = 18;
      map<string, Node> children = 19;
      oneof choice { string text = 20; Node next = 21; }
      google.protobuf.Timestamp at = 22;
      google.protobuf.Duration took = 23;
      google.protobuf.Struct extra = 24;
      google.protobuf.Any any = 25;
      google.protobuf.StringValue note = 26;
      optional int32 maybe = 27;
      Wrapper.Legacy legacy = 28;
    }
    message Wrapper {
      message Legacy { int32 n = 1; }
    }
"#;

struct Catalogs(Arc<dyn Catalog>);

impl CatalogLookup for Catalogs {
    fn catalog(&self, _name: &str) -> Option<Arc<dyn Catalog>> {
        Some(self.0.clone())
    }
}

fuzz_target!(|data: &[u8]| {
    let options = InlineOptions {
        subjects: Some(
            [(
                "node".to_owned(),
                InlineSubject {
                    schema: SCHEMA.to_owned(),
                    version: "latest".to_owned(),
                },
            )]
            .into_iter()
            .collect(),
        ),
    };
    let Ok(catalog) = InlineCatalog::new(&options) else {
        return;
    };
    let catalogs = Catalogs(Arc::new(catalog));
    let events = Events::default();
    let context = ModelContext {
        catalogs: &catalogs,
        events: &events,
        topic_subject: None,
    };
    for view in [serde_json::json!("json"), serde_json::Value::Null] {
        let mut reference = serde_json::json!({
            "model": "protobuf",
            "catalog": {"catalog0": [{"subject": "node", "record": "Node"}]}
        });
        if !view.is_null() {
            reference["view"] = view.clone();
        }
        let Ok(validator) = ProtobufModelFactory.build(&reference, &context) else {
            return;
        };
        if let Ok(Some(json)) = validator.decode(data) {
            // What the view writes must read back.
            if !view.is_null() {
                assert!(validator.encode(&json).is_ok(), "{}", String::from_utf8_lossy(&json));
            }
        }
        let _ = validator.validate(data);
        let _ = validator.encode(data);
    }
});
