use std::sync::Mutex;

use super::*;
use proptest::prelude::*;
use serde_json::json;
use zilla_catalog_inline::InlineCatalog;
use zilla_catalog_inline::config::{InlineOptions, InlineSubject};
use zilla_engine::components::{CatalogLookup, Exporter};
use zilla_engine::events::Event;

const REQUEST: &str = r#"
    syntax = "proto3";
    package example;
    import "google/protobuf/timestamp.proto";
    import "google/protobuf/wrappers.proto";
    message Request {
      string message = 1;
      int32 count = 2;
      int64 total_bytes = 3;
      Status status = 4;
      repeated string tags = 5;
      map<string, int32> attributes = 6;
      google.protobuf.Timestamp at = 7;
      google.protobuf.StringValue note = 8;
      Detail detail = 9;
      optional bool urgent = 10;
      message Detail { bytes data = 1; }
    }
    enum Status { UNKNOWN = 0; OPEN = 1; CLOSED = 2; }
    message Reply { string answer = 1; }
"#;

/// The same package with a field added: a later version of the subject.
const REQUEST_V2: &str = r#"
    syntax = "proto3";
    package example;
    message Request { string message = 1; int32 count = 2; string origin = 3; }
"#;

const LEGACY: &str = r#"
    syntax = "proto2";
    message Legacy { required string id = 1; optional int32 n = 2; }
"#;

/// An inline catalog, optionally framing messages the way a schema registry does.
struct TestCatalog {
    inner: InlineCatalog,
    framed: bool,
}

impl Catalog for TestCatalog {
    fn resolve_subject(&self, subject: &str, version: &str) -> Result<u32, String> {
        self.inner.resolve_subject(subject, version)
    }
    fn schema(&self, id: u32) -> Result<Arc<str>, String> {
        self.inner.schema(id)
    }
    fn prefix(&self, id: u32) -> Vec<u8> {
        if self.framed {
            let mut prefix = vec![0];
            prefix.extend_from_slice(&id.to_be_bytes());
            prefix
        } else {
            Vec::new()
        }
    }
    fn unprefix<'a>(&self, data: &'a [u8]) -> Result<Option<(u32, &'a [u8])>, String> {
        if !self.framed {
            return Ok(None);
        }
        match data {
            [0, a, b, c, d, rest @ ..] => Ok(Some((u32::from_be_bytes([*a, *b, *c, *d]), rest))),
            _ => Err("no prefix".to_owned()),
        }
    }
}

struct Catalogs(Arc<dyn Catalog>);

impl CatalogLookup for Catalogs {
    fn catalog(&self, name: &str) -> Option<Arc<dyn Catalog>> {
        (name == "catalog0").then(|| self.0.clone())
    }
}

fn catalogs(framed: bool) -> Catalogs {
    let subjects = [
        ("request", REQUEST),
        ("request-v2", REQUEST_V2),
        ("legacy", LEGACY),
        ("requests-value", REQUEST),
        ("broken", "syntax = \"proto3\"; message {"),
        (
            "imports",
            "syntax = \"proto3\"; import \"other.proto\"; message A { Other o = 1; }",
        ),
    ]
    .into_iter()
    .map(|(name, schema)| {
        (
            name.to_owned(),
            InlineSubject {
                schema: schema.to_owned(),
                version: "latest".to_owned(),
            },
        )
    })
    .collect();
    let inner = InlineCatalog::new(&InlineOptions {
        subjects: Some(subjects),
    })
    .unwrap();
    Catalogs(Arc::new(TestCatalog { inner, framed }))
}

#[derive(Default)]
struct Recorder(Mutex<Vec<(String, String)>>);

impl Exporter for Recorder {
    fn event(&self, event: &Event) {
        self.0
            .lock()
            .unwrap()
            .push((event.name.to_owned(), event.message.clone()));
    }
}

fn build_with(
    reference: serde_json::Value,
    catalogs: &Catalogs,
    events: &Events,
    topic_subject: Option<&str>,
) -> Result<Arc<dyn Validator>, BuildError> {
    ProtobufModelFactory.build(
        &reference,
        &ModelContext {
            catalogs,
            events,
            topic_subject,
        },
    )
}

fn build(reference: serde_json::Value, framed: bool) -> Arc<dyn Validator> {
    build_with(reference, &catalogs(framed), &Events::default(), None).unwrap()
}

fn request_view(framed: bool) -> Arc<dyn Validator> {
    build(
        json!({"model": "protobuf", "view": "json",
               "catalog": {"catalog0": [{"subject": "request", "record": "Request"}]}}),
        framed,
    )
}

fn pool_message(name: &str) -> MessageDescriptor {
    let file = schema::compile_file("request.proto", REQUEST).unwrap();
    file.parent_pool().get_message_by_name(name).unwrap()
}

fn id_of(schema: &str) -> u32 {
    zilla_catalog_inline::schema_id(schema)
}

#[test]
fn json_lands_as_registry_framed_protobuf_and_reads_back_as_zilla_writes_it() {
    let validator = request_view(true);
    let input = json!({
        "message": "hello", "count": 10, "totalBytes": "1099511627776", "status": "OPEN",
        "tags": ["a", "b"], "attributes": {"x": 1}, "at": "2024-01-02T03:04:05Z",
        "note": "wrapped", "detail": {"data": "AP8="}, "urgent": false
    });
    let stored = validator
        .encode(input.to_string().as_bytes())
        .unwrap()
        .unwrap();
    // Magic byte, schema id, then the one-byte index array of the file's first message.
    assert_eq!(stored[0], 0);
    assert_eq!(&stored[1..5], &id_of(REQUEST).to_be_bytes());
    assert_eq!(stored[5], 0);
    let message = DynamicMessage::decode(pool_message("example.Request"), &stored[6..]).unwrap();
    assert_eq!(
        message.get_field_by_name("message").unwrap().as_str(),
        Some("hello")
    );
    assert_eq!(
        message.get_field_by_name("total_bytes").unwrap().as_i64(),
        Some(1 << 40)
    );
    assert!(
        message.has_field_by_name("urgent"),
        "explicit presence kept"
    );

    let json: serde_json::Value =
        serde_json::from_slice(&validator.decode(&stored).unwrap().unwrap()).unwrap();
    assert_eq!(
        json,
        json!({
            "message": "hello", "count": 10, "total_bytes": "1099511627776", "status": "OPEN",
            "tags": ["a", "b"], "attributes": {"x": 1}, "at": "2024-01-02T03:04:05Z",
            "note": "wrapped", "detail": {"data": "AP8="}, "urgent": false
        })
    );

    // Defaults are written out; unset message fields and unset optionals are not.
    let empty = validator.encode(b"{}").unwrap().unwrap();
    assert_eq!(empty.len(), 6);
    let json: serde_json::Value =
        serde_json::from_slice(&validator.decode(&empty).unwrap().unwrap()).unwrap();
    assert_eq!(
        json,
        json!({"message": "", "count": 0, "total_bytes": "0", "status": "UNKNOWN",
               "tags": [], "attributes": {}})
    );
}

#[test]
fn catalogs_without_a_prefix_still_carry_the_message_indexes() {
    let validator = request_view(false);
    let stored = validator.encode(br#"{"message": "hi"}"#).unwrap().unwrap();
    assert_eq!(stored, b"\x00\x0a\x02hi");
    assert_eq!(
        validator.decode(&stored).unwrap().unwrap(),
        br#"{"message":"hi","count":0,"total_bytes":"0","status":"UNKNOWN","tags":[],"attributes":{}}"#
    );
}

#[test]
fn nested_and_later_records_are_named_by_their_indexes() {
    let reply = build(
        json!({"model": "protobuf", "view": "json",
               "catalog": {"catalog0": [{"subject": "request", "record": "example.Reply"}]}}),
        true,
    );
    let stored = reply.encode(br#"{"answer": "yes"}"#).unwrap().unwrap();
    assert_eq!(&stored[5..7], &[2, 2], "[1]: the file's second message");
    assert_eq!(
        reply.decode(&stored).unwrap().unwrap(),
        br#"{"answer":"yes"}"#
    );
    let detail = build(
        json!({"model": "protobuf", "view": "json",
               "catalog": {"catalog0": [{"subject": "request", "record": "Request.Detail"}]}}),
        true,
    );
    let stored = detail.encode(br#"{"data": "AQ=="}"#).unwrap().unwrap();
    // [0, 1]: the map field's entry type, declared before it, is the first child, as in the
    // descriptor protoc and Confluent's serializers count.
    assert_eq!(&stored[5..8], &[4, 0, 2]);
    assert_eq!(
        detail.decode(&stored).unwrap().unwrap(),
        br#"{"data":"AQ=="}"#
    );
}

#[test]
fn decode_reads_the_writers_schema_and_message() {
    // Configured with version 1, reading a record written with version 2 of the subject.
    let validator = request_view(true);
    let v2 = pool_of(REQUEST_V2, "example.Request");
    let mut message = DynamicMessage::new(v2);
    message.set_field_by_name("origin", Value::String("edge".to_owned()));
    let mut stored = vec![0];
    stored.extend_from_slice(&id_of(REQUEST_V2).to_be_bytes());
    stored.push(0);
    message.encode(&mut stored).unwrap();
    assert_eq!(
        validator.decode(&stored).unwrap().unwrap(),
        br#"{"message":"","count":0,"origin":"edge"}"#
    );
    // Indexes naming no message of the writer's schema, and no framing at all, are refused.
    let mut unknown_index = stored.clone();
    unknown_index[5] = 2;
    unknown_index.insert(6, 10);
    let error = validator.decode(&unknown_index).unwrap_err();
    assert!(error.contains("name no message"), "{error}");
    assert!(validator.decode(b"\x0a\x02hi").is_err());
}

fn pool_of(text: &str, name: &str) -> MessageDescriptor {
    let file = schema::compile_file("other.proto", text).unwrap();
    file.parent_pool().get_message_by_name(name).unwrap()
}

#[test]
fn a_topic_strategy_writes_with_the_topics_subject() {
    let by_topic = build_with(
        json!({"model": "protobuf", "view": "json",
               "catalog": {"catalog0": [{"strategy": "topic", "record": "Request"}]}}),
        &catalogs(true),
        &Events::default(),
        Some("requests-value"),
    )
    .unwrap();
    let stored = by_topic.encode(br#"{"count": 3}"#).unwrap().unwrap();
    assert_eq!(&stored[1..5], &id_of(REQUEST).to_be_bytes());
    let without_topic = build_with(
        json!({"model": "protobuf",
               "catalog": {"catalog0": [{"strategy": "topic", "record": "Request"}]}}),
        &catalogs(true),
        &Events::default(),
        None,
    );
    assert!(without_topic.is_err());
}

#[test]
fn invalid_json_is_refused_with_an_event() {
    let recorder = Arc::new(Recorder::default());
    let events = Events::default().named("test:cache0");
    events.set_exporters(vec![recorder.clone()]);
    let validator = build_with(
        json!({"model": "protobuf", "view": "json",
               "catalog": {"catalog0": [{"subject": "request", "record": "Request"}]}}),
        &catalogs(true),
        &events,
        None,
    )
    .unwrap();
    for invalid in [
        &br#"{"message": "hi", "invalid": "field"}"#[..],
        br#"{"count": "ten"}"#,
        br#"{"count": 1.5}"#,
        br#"{"status": "NOPE"}"#,
        br#"{"message": 1}"#,
        br#"{"message": "hi""#,
        br#"{"message": "hi"} trailing"#,
        br#"[]"#,
        b"\xff",
    ] {
        assert!(
            validator.encode(invalid).is_err(),
            "{}",
            String::from_utf8_lossy(invalid)
        );
        assert!(validator.validate(invalid).is_err());
    }
    let recorded = recorder.0.lock().unwrap().clone();
    assert_eq!(recorded.len(), 18, "{recorded:?}");
    assert!(recorded.iter().all(|(name, _)| name == VALIDATION_FAILED));
    assert!(recorded[0].1.contains("invalid"), "{recorded:?}");
}

#[test]
fn bare_binary_is_checked_framed_and_unframed() {
    let validator = build(
        json!({"model": "protobuf",
               "catalog": {"catalog0": [{"subject": "request", "record": "Request"}]}}),
        true,
    );
    let valid = b"\x0a\x0bhello world\x10\x0a";
    validator.validate(valid).unwrap();
    let stored = validator.encode(valid).unwrap().unwrap();
    assert_eq!(&stored[5..], b"\x00\x0a\x0bhello world\x10\x0a");
    assert_eq!(validator.decode(&stored).unwrap().unwrap(), valid);

    for invalid in [
        // `count` (2) as text: the wrong wire type.
        &b"\x12\x03ten"[..],
        // An extra field 99.
        b"\x0a\x02hi\x98\x06\x01",
        // `message` (1) as a varint: fields in the wrong order of a different schema.
        b"\x08\x0a\x12\x02hi",
        // Truncated.
        b"\x0a\x05he",
        // Not UTF-8 in a string.
        b"\x0a\x02\xff\xfe",
    ] {
        assert!(validator.validate(invalid).is_err(), "{invalid:?}");
        assert!(validator.encode(invalid).is_err(), "{invalid:?}");
    }
    let mut unknown = stored.clone();
    unknown.extend_from_slice(b"\x98\x06\x01");
    assert!(validator.decode(&unknown).is_err());
}

#[test]
fn lenient_passes_unknown_fields_only_where_nothing_is_converted() {
    let catalogs = catalogs(true);
    let lenient = build_with(
        json!({"model": "protobuf", "validate": "lenient",
               "catalog": {"catalog0": [{"subject": "request", "record": "Request"}]}}),
        &catalogs,
        &Events::default(),
        None,
    )
    .unwrap();
    let extra = b"\x0a\x02hi\x98\x06\x01";
    lenient.validate(extra).unwrap();
    let stored = lenient.encode(extra).unwrap().unwrap();
    assert_eq!(lenient.decode(&stored).unwrap().unwrap(), extra);
    assert!(lenient.validate(b"\x0a\x05he").is_err(), "malformed");

    let lenient_view = build_with(
        json!({"model": "protobuf", "view": "json", "validate": {"decode": "lenient"},
               "catalog": {"catalog0": [{"subject": "request", "record": "Request"}]}}),
        &catalogs,
        &Events::default(),
        None,
    )
    .unwrap();
    lenient_view
        .validate(br#"{"message": "hi", "invalid": "field"}"#)
        .unwrap();
    assert!(lenient_view.validate(br#"{"count": "ten"}"#).is_err());
    assert!(
        lenient_view
            .encode(br#"{"message": "hi", "invalid": "field"}"#)
            .is_err(),
        "conversion is strict"
    );
    assert!(
        lenient_view.decode(&stored).is_err(),
        "conversion is strict"
    );
}

#[test]
fn proto2_required_fields_are_required() {
    let validator = build(
        json!({"model": "protobuf", "view": "json",
               "catalog": {"catalog0": [{"subject": "legacy", "record": "Legacy"}]}}),
        true,
    );
    let error = validator.encode(br#"{"n": 1}"#).unwrap_err();
    assert!(error.contains("required field `id`"), "{error}");
    let stored = validator.encode(br#"{"id": "x"}"#).unwrap().unwrap();
    // `n` has presence (proto2 `optional`): unset, it is not written.
    assert_eq!(
        validator.decode(&stored).unwrap().unwrap(),
        br#"{"id":"x"}"#
    );
}

#[test]
fn bad_references_are_load_errors_at_their_path() {
    let cases = [
        (
            json!({"model": "protobuf", "catalog": {"catalog0": [{"subject": "request"}]}}),
            "",
            "missing field `record`",
        ),
        (
            json!({"model": "protobuf", "catalog": {"catalog0": [{"subject": "request", "record": "Nope"}]}}),
            "catalog.catalog0[0].record",
            "declares no message `Nope`",
        ),
        (
            json!({"model": "protobuf", "catalog": {"catalog0": [{"subject": "broken", "record": "A"}]}}),
            "catalog.catalog0[0]",
            "not a Protobuf schema",
        ),
        (
            json!({"model": "protobuf", "catalog": {"catalog0": [{"subject": "imports", "record": "A"}]}}),
            "catalog.catalog0[0]",
            "other.proto",
        ),
        (
            json!({"model": "protobuf", "catalog": {"catalog0": [{"subject": "nope", "record": "A"}]}}),
            "catalog.catalog0[0]",
            "nope",
        ),
        (
            json!({"model": "protobuf", "catalog": {"other": [{"subject": "request", "record": "Request"}]}}),
            "catalog.other",
            "unknown catalog",
        ),
        (
            json!({"model": "protobuf", "view": "xml", "catalog": {"catalog0": [{"subject": "request", "record": "Request"}]}}),
            "",
            "unknown variant",
        ),
        (
            json!({"model": "protobuf", "catalog": {"catalog0": [{"subject": "request", "record": "Request", "extra": 1}]}}),
            "",
            "unknown field `extra`",
        ),
        (
            json!({"model": "protobuf", "catalog": {"catalog0": [{"strategy": "encoded", "record": "Request"}]}}),
            "catalog.catalog0[0]",
            "not supported",
        ),
    ];
    for (reference, path, message) in cases {
        let Err(error) = build_with(reference.clone(), &catalogs(true), &Events::default(), None)
        else {
            panic!("{reference} was accepted");
        };
        assert_eq!(error.path, path, "{reference}: {error}");
        assert!(error.message.contains(message), "{reference}: {error}");
    }
}

#[test]
fn the_schema_requires_record_and_follows_zilla_spelling() {
    let schema = ProtobufModelFactory.schema();
    let text = schema.to_string();
    assert!(text.contains("\"record\""), "{schema}");
    assert_eq!(schema["additionalProperties"], false);
}

/// The field shapes generated schemas are made of.
#[derive(Debug, Clone, Copy)]
enum Scalar {
    Double,
    Float,
    Int32,
    Int64,
    Uint32,
    Uint64,
    Sint32,
    Sint64,
    Fixed32,
    Fixed64,
    Sfixed32,
    Sfixed64,
    Bool,
    String,
    Bytes,
    Enum,
}

impl Scalar {
    const ALL: [Scalar; 16] = [
        Scalar::Double,
        Scalar::Float,
        Scalar::Int32,
        Scalar::Int64,
        Scalar::Uint32,
        Scalar::Uint64,
        Scalar::Sint32,
        Scalar::Sint64,
        Scalar::Fixed32,
        Scalar::Fixed64,
        Scalar::Sfixed32,
        Scalar::Sfixed64,
        Scalar::Bool,
        Scalar::String,
        Scalar::Bytes,
        Scalar::Enum,
    ];

    fn proto(self) -> &'static str {
        match self {
            Scalar::Double => "double",
            Scalar::Float => "float",
            Scalar::Int32 => "int32",
            Scalar::Int64 => "int64",
            Scalar::Uint32 => "uint32",
            Scalar::Uint64 => "uint64",
            Scalar::Sint32 => "sint32",
            Scalar::Sint64 => "sint64",
            Scalar::Fixed32 => "fixed32",
            Scalar::Fixed64 => "fixed64",
            Scalar::Sfixed32 => "sfixed32",
            Scalar::Sfixed64 => "sfixed64",
            Scalar::Bool => "bool",
            Scalar::String => "string",
            Scalar::Bytes => "bytes",
            Scalar::Enum => "Color",
        }
    }

    fn values(self) -> BoxedStrategy<Value> {
        match self {
            Scalar::Double => any::<f64>()
                .prop_filter("finite", |v| v.is_finite())
                .prop_map(Value::F64)
                .boxed(),
            Scalar::Float => any::<f32>()
                .prop_filter("finite", |v| v.is_finite())
                .prop_map(Value::F32)
                .boxed(),
            Scalar::Int32 | Scalar::Sint32 | Scalar::Sfixed32 => {
                any::<i32>().prop_map(Value::I32).boxed()
            }
            Scalar::Int64 | Scalar::Sint64 | Scalar::Sfixed64 => {
                any::<i64>().prop_map(Value::I64).boxed()
            }
            Scalar::Uint32 | Scalar::Fixed32 => any::<u32>().prop_map(Value::U32).boxed(),
            Scalar::Uint64 | Scalar::Fixed64 => any::<u64>().prop_map(Value::U64).boxed(),
            Scalar::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
            Scalar::String => ".{0,12}".prop_map(Value::String).boxed(),
            Scalar::Bytes => proptest::collection::vec(any::<u8>(), 0..12)
                .prop_map(|bytes| Value::Bytes(bytes.into()))
                .boxed(),
            Scalar::Enum => (0..3).prop_map(Value::EnumNumber).boxed(),
        }
    }
}

/// One field of a generated message.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Single(Scalar),
    Optional(Scalar),
    Repeated(Scalar),
    Map(Scalar),
    Nested,
    Wrapper,
    Timestamp,
}

fn shapes() -> impl Strategy<Value = Shape> {
    let scalar = proptest::sample::select(Scalar::ALL.to_vec());
    prop_oneof![
        scalar.clone().prop_map(Shape::Single),
        scalar.clone().prop_map(Shape::Optional),
        scalar.clone().prop_map(Shape::Repeated),
        scalar.prop_map(Shape::Map),
        Just(Shape::Nested),
        Just(Shape::Wrapper),
        Just(Shape::Timestamp),
    ]
}

/// `.proto` text of a message `Generated` with `shapes` as fields 1, 2, ...
fn generated_schema(shapes: &[Shape]) -> String {
    let mut text = String::from(
        "syntax = \"proto3\";\npackage gen;\nimport \"google/protobuf/wrappers.proto\";\n\
         import \"google/protobuf/timestamp.proto\";\nenum Color { RED = 0; GREEN = 1; BLUE = 2; }\n\
         message Inner { string label = 1; sint64 weight = 2; }\nmessage Generated {\n",
    );
    for (index, shape) in shapes.iter().enumerate() {
        let number = index + 1;
        let field = match shape {
            Shape::Single(scalar) => format!("{} f{number}", scalar.proto()),
            Shape::Optional(scalar) => format!("optional {} f{number}", scalar.proto()),
            Shape::Repeated(scalar) => format!("repeated {} f{number}", scalar.proto()),
            Shape::Map(scalar) => format!("map<string, {}> f{number}", scalar.proto()),
            Shape::Nested => format!("Inner f{number}"),
            Shape::Wrapper => format!("google.protobuf.Int64Value f{number}"),
            Shape::Timestamp => format!("google.protobuf.Timestamp f{number}"),
        };
        text.push_str(&format!("  {field} = {number};\n"));
    }
    text.push_str("}\n");
    text
}

/// A value for each field (`None`: left unset); a message field's is the list of its fields'
/// values.
fn field_values(shape: Shape) -> BoxedStrategy<Option<Value>> {
    match shape {
        Shape::Single(scalar) | Shape::Optional(scalar) => {
            proptest::option::of(scalar.values()).boxed()
        }
        Shape::Repeated(scalar) => proptest::collection::vec(scalar.values(), 0..4)
            .prop_map(|items| Some(Value::List(items)))
            .boxed(),
        Shape::Map(scalar) => proptest::collection::hash_map("[a-z]{0,4}", scalar.values(), 0..4)
            .prop_map(|entries| {
                Some(Value::Map(
                    entries
                        .into_iter()
                        .map(|(key, value)| (prost_reflect::MapKey::String(key), value))
                        .collect(),
                ))
            })
            .boxed(),
        Shape::Nested => proptest::option::of(("[a-z]{0,6}", any::<i64>()))
            .prop_map(|inner| {
                inner.map(|(label, weight)| {
                    Value::List(vec![Value::String(label), Value::I64(weight)])
                })
            })
            .boxed(),
        Shape::Wrapper => proptest::option::of(any::<i64>())
            .prop_map(|value| value.map(Value::I64))
            .boxed(),
        Shape::Timestamp => {
            proptest::option::of((-62_135_596_800i64..253_402_300_799, 0i32..1_000_000_000))
                .prop_map(|at| {
                    at.map(|(seconds, nanos)| {
                        Value::List(vec![Value::I64(seconds), Value::I32(nanos)])
                    })
                })
                .boxed()
        }
    }
}

/// Sets field `f{number}` of `message` from a generated value.
fn set_generated(message: &mut DynamicMessage, number: u32, shape: Shape, value: Value) {
    let field = message.descriptor().get_field(number).unwrap();
    let value = match (shape, value) {
        (Shape::Nested | Shape::Wrapper | Shape::Timestamp, value) => {
            let prost_reflect::Kind::Message(descriptor) = field.kind() else {
                unreachable!("message fields");
            };
            let mut nested = DynamicMessage::new(descriptor);
            match (shape, value) {
                (Shape::Wrapper, value) => nested.set_field_by_number(1, value),
                (_, Value::List(parts)) => {
                    for (index, part) in parts.into_iter().enumerate() {
                        nested.set_field_by_number(index as u32 + 1, part);
                    }
                }
                _ => unreachable!("generated as a list"),
            }
            Value::Message(nested)
        }
        (_, value) => value,
    };
    message.set_field(&field, value);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Random messages of random schemas: Protobuf → JSON (decode) → Protobuf (encode) gives
    /// the same message back.
    #[test]
    fn json_round_trips_generated_messages(
        (shapes, values) in proptest::collection::vec(shapes(), 1..10).prop_flat_map(|shapes| {
            let values: Vec<_> = shapes.iter().map(|shape| field_values(*shape)).collect();
            (Just(shapes), values)
        })
    ) {
        let text = generated_schema(&shapes);
        let subjects = [("generated".to_owned(), InlineSubject { schema: text.clone(), version: "latest".to_owned() })]
            .into_iter()
            .collect();
        let inner = InlineCatalog::new(&InlineOptions { subjects: Some(subjects) }).unwrap();
        let catalogs = Catalogs(Arc::new(TestCatalog { inner, framed: true }));
        let validator = build_with(
            json!({"model": "protobuf", "view": "json",
                   "catalog": {"catalog0": [{"subject": "generated", "record": "Generated"}]}}),
            &catalogs,
            &Events::default(),
            None,
        ).unwrap();
        let descriptor = pool_of(&text, "gen.Generated");
        let mut message = DynamicMessage::new(descriptor.clone());
        for (index, (shape, value)) in shapes.iter().zip(values).enumerate() {
            if let Some(value) = value {
                set_generated(&mut message, index as u32 + 1, *shape, value);
            }
        }
        let mut stored = vec![0];
        stored.extend_from_slice(&id_of(&text).to_be_bytes());
        // `Generated` is the file's second message.
        stored.extend_from_slice(&[2, 2]);
        message.encode(&mut stored).unwrap();

        let json = validator.decode(&stored).unwrap().unwrap();
        let again = validator.encode(&json).unwrap().unwrap();
        prop_assert_eq!(&again[..7], &stored[..7]);
        let decoded = DynamicMessage::decode(descriptor.clone(), &again[7..]).unwrap();
        // Compared as read from the wire, where an empty list or map and an unset one are the
        // same.
        let original = DynamicMessage::decode(descriptor, &stored[7..]).unwrap();
        prop_assert_eq!(&decoded, &original, "{}", String::from_utf8_lossy(&json));
        // And the JSON of the round-tripped message is the JSON it was made from.
        let json_again = validator.decode(&again).unwrap().unwrap();
        prop_assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&json_again).unwrap(),
            serde_json::from_slice::<serde_json::Value>(&json).unwrap()
        );
    }

    #[test]
    fn arbitrary_stored_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
        for framed in [true, false] {
            let validator = request_view(framed);
            let _ = validator.decode(&data);
            let _ = validator.encode(&data);
            let _ = validator.validate(&data);
        }
    }
}
