use super::*;
use proptest::prelude::*;
use proptest::strategy::Strategy as PropStrategy;
use serde_json::json;
use zilla_catalog_inline::InlineCatalog;
use zilla_catalog_inline::config::{InlineOptions, InlineSubject};
use zilla_engine::components::CatalogLookup;

const ITEM: &str = r#"{
    "type": "record", "name": "Item", "namespace": "example",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "count", "type": "int"},
        {"name": "total", "type": "long"},
        {"name": "price", "type": "double"},
        {"name": "open", "type": "boolean"},
        {"name": "note", "type": ["null", "string"], "default": null},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "attributes", "type": {"type": "map", "values": "long"}},
        {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["OPEN", "CLOSED"]}},
        {"name": "digest", "type": "bytes"},
        {"name": "code", "type": {"type": "fixed", "name": "Code", "size": 2}},
        {"name": "next", "type": ["null", "Item"], "default": null}
    ]
}"#;

const SIMPLE: &str = r#"{"type": "record", "name": "Event", "fields": [
    {"name": "id", "type": "string"}, {"name": "status", "type": "string"}]}"#;

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
        ("item", ITEM),
        ("items-value", SIMPLE),
        ("broken", "{\"type\": \"nope\"}"),
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

fn build_in(
    reference: serde_json::Value,
    catalogs: &Catalogs,
    topic_subject: Option<&str>,
) -> Result<Arc<dyn Validator>, BuildError> {
    let events = Events::default();
    AvroModelFactory.build(
        &reference,
        &ModelContext {
            catalogs,
            events: &events,
            topic_subject,
        },
    )
}

fn item_json() -> serde_json::Value {
    json!({
        "id": "a1", "count": 3, "total": 1_i64 << 40, "price": 2.5, "open": true,
        "note": {"string": "hi"}, "tags": ["x", "y"], "attributes": {"a": 1, "b": 2},
        "status": "CLOSED", "digest": "\u{0}\u{ff}", "code": "ab",
        "next": {"example.Item": {
            "id": "a2", "count": 0, "total": 0, "price": 0.0, "open": false, "note": null,
            "tags": [], "attributes": {}, "status": "OPEN", "digest": "", "code": "zz",
            "next": null
        }}
    })
}

fn item_view(framed: bool) -> Arc<dyn Validator> {
    build_in(
        json!({"model": "avro", "view": "json", "catalog": {"catalog0": [{"subject": "item"}]}}),
        &catalogs(framed),
        None,
    )
    .unwrap()
}

#[test]
fn json_round_trips_through_framed_avro() {
    let validator = item_view(true);
    let text = item_json().to_string();
    let stored = validator.encode(text.as_bytes()).unwrap().unwrap();
    let id = zilla_catalog_inline::schema_id(ITEM);
    assert_eq!(stored[0], 0);
    assert_eq!(&stored[1..5], &id.to_be_bytes());
    // The stored bytes are plain Avro binary after the prefix: the string `a1` first.
    assert_eq!(&stored[5..8], &[4, b'a', b'1']);
    let view = validator.decode(&stored).unwrap().unwrap();
    let back: serde_json::Value = serde_json::from_slice(&view).unwrap();
    assert_eq!(back, item_json());
    validator.validate(text.as_bytes()).unwrap();
}

#[test]
fn an_inline_catalog_frames_nothing() {
    let validator = item_view(false);
    let stored = validator
        .encode(item_json().to_string().as_bytes())
        .unwrap()
        .unwrap();
    assert_eq!(&stored[..3], &[4, b'a', b'1']);
    let back: serde_json::Value =
        serde_json::from_slice(&validator.decode(&stored).unwrap().unwrap()).unwrap();
    assert_eq!(back, item_json());
}

#[test]
fn defaults_fill_missing_fields() {
    let validator = item_view(true);
    let mut item = item_json();
    let object = item.as_object_mut().unwrap();
    object.remove("note");
    object.remove("next");
    let stored = validator
        .encode(item.to_string().as_bytes())
        .unwrap()
        .unwrap();
    let back: serde_json::Value =
        serde_json::from_slice(&validator.decode(&stored).unwrap().unwrap()).unwrap();
    assert_eq!(back["note"], serde_json::Value::Null);
    assert_eq!(back["next"], serde_json::Value::Null);
}

#[test]
fn json_that_does_not_fit_is_refused_with_where() {
    let validator = item_view(true);
    let cases = [
        (json!({"count": "x"}), "/count: expected int"),
        (json!({"count": 1_i64 << 40}), "/count: expected int"),
        (json!({"status": "LOST"}), "`LOST` is not a symbol"),
        (json!({"note": "bare"}), "/note: a union value"),
        (json!({"note": {"int": 1}}), "`int` is not a branch"),
        (json!({"code": "abc"}), "expected 2 bytes"),
        (json!({"digest": "\u{100}"}), "/digest: expected bytes"),
        (json!({"extra": 1}), "`extra` is not a field"),
        (json!({"tags": ["ok", 1]}), "/tags/1: expected string"),
    ];
    for (change, expected) in cases {
        let mut item = item_json();
        for (key, value) in change.as_object().unwrap() {
            item[key] = value.clone();
        }
        let reason = validator.encode(item.to_string().as_bytes()).unwrap_err();
        assert!(reason.contains(expected), "{change}: {reason}");
        assert!(validator.validate(item.to_string().as_bytes()).is_err());
    }
    let mut missing = item_json();
    missing.as_object_mut().unwrap().remove("id");
    assert!(
        validator
            .encode(missing.to_string().as_bytes())
            .unwrap_err()
            .contains("/id: missing")
    );
    assert!(
        validator
            .encode(b"{\"id\":")
            .unwrap_err()
            .starts_with("malformed JSON")
    );
}

#[test]
fn stored_messages_that_are_not_avro_are_refused() {
    let validator = item_view(true);
    let id = zilla_catalog_inline::schema_id(ITEM).to_be_bytes();
    let prefixed = |body: &[u8]| [&[0], &id[..], body].concat();
    assert!(validator.decode(b"{\"id\": \"a1\"}").is_err(), "no prefix");
    assert!(validator.decode(&prefixed(&[])).is_err(), "empty datum");
    assert!(validator.decode(&prefixed(&[0x7f])).is_err(), "truncated");
    let good = validator
        .encode(item_json().to_string().as_bytes())
        .unwrap()
        .unwrap();
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(
        validator
            .decode(&trailing)
            .unwrap_err()
            .contains("left over")
    );
    let mut unknown = good.clone();
    unknown[1..5].copy_from_slice(&7u32.to_be_bytes());
    assert!(
        validator
            .decode(&unknown)
            .unwrap_err()
            .contains("no schema with id 7")
    );
    // A huge length prefix is refused, not allocated.
    let huge = prefixed(&[0xfe, 0xff, 0xff, 0xff, 0x0f]);
    assert!(validator.decode(&huge).is_err());
}

#[test]
fn without_a_view_clients_see_bare_avro() {
    let validator = build_in(
        json!({"model": "avro", "catalog": {"catalog0": [{"subject": "items-value"}]}}),
        &catalogs(true),
        None,
    )
    .unwrap();
    let datum = [&[4][..], b"a1", &[4], b"OK"].concat();
    validator.validate(&datum).unwrap();
    let stored = validator.encode(&datum).unwrap().unwrap();
    assert_eq!(&stored[5..], &datum[..]);
    assert_eq!(validator.decode(&stored).unwrap().unwrap(), datum);
    assert!(validator.validate(&datum[..3]).is_err());
}

#[test]
fn strategy_topic_uses_the_topic_subject() {
    let reference = json!({"model": "avro", "view": "json", "catalog": {"catalog0": [{"strategy": "topic", "version": "latest"}]}});
    let validator = build_in(reference.clone(), &catalogs(true), Some("items-value")).unwrap();
    let stored = validator
        .encode(br#"{"id": "1", "status": "OK"}"#)
        .unwrap()
        .unwrap();
    assert_eq!(
        &stored[1..5],
        &zilla_catalog_inline::schema_id(SIMPLE).to_be_bytes()
    );
    let Err(error) = build_in(reference, &catalogs(true), None) else {
        panic!("strategy: topic was accepted without a topic");
    };
    assert!(error.message.contains("strategy: topic"), "{error}");
}

#[test]
fn lenient_applies_to_checks_not_conversions() {
    let validator = build_in(
        json!({"model": "avro", "view": "json", "validate": "lenient", "catalog": {"catalog0": [{"subject": "items-value"}]}}),
        &catalogs(true),
        None,
    )
    .unwrap();
    validator.validate(br#"{"id": 1}"#).unwrap();
    assert!(validator.validate(b"{").is_err());
    assert!(validator.encode(br#"{"id": 1}"#).is_err());
}

#[test]
fn strategy_encoded_checks_each_message_against_the_schema_its_prefix_names() {
    let catalogs = catalogs(true);
    let writer = build_in(
        json!({"model": "avro", "view": "json", "catalog": {"catalog0": [{"subject": "items-value"}]}}),
        &catalogs,
        None,
    )
    .unwrap();
    let event = serde_json::to_vec(&json!({"id": "e1", "status": "open"})).unwrap();
    let framed = writer.encode(&event).unwrap().unwrap();
    let simple_id = catalogs.0.resolve_subject("items-value", "latest").unwrap();
    let item_id = catalogs.0.resolve_subject("item", "latest").unwrap();
    assert_ne!(simple_id, item_id);
    assert_eq!(framed[1..5], simple_id.to_be_bytes());

    let encoded = build_in(
        json!({"model": "avro", "catalog": {"catalog0": [{"strategy": "encoded"}]}}),
        &catalogs,
        None,
    )
    .unwrap();
    encoded.validate(&framed).unwrap();
    assert_eq!(encoded.encode(&framed).unwrap(), None, "stored as it came");
    assert_eq!(encoded.decode(&framed).unwrap().unwrap(), framed[5..]);

    // The same datum under the prefix of another schema does not fit it.
    let mut misnamed = framed.clone();
    misnamed[1..5].copy_from_slice(&item_id.to_be_bytes());
    assert!(encoded.validate(&misnamed).is_err());
    assert!(encoded.encode(&misnamed).is_err());
    // A bare datum names no schema; an unknown id is no schema.
    assert!(encoded.validate(&framed[5..]).is_err());
    let mut unknown = framed.clone();
    unknown[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(encoded.validate(&unknown).is_err());
}

/// With `strategy: encoded` a message is stored as it came, so `validate.encode` decides
/// whether one that does not fit the schema its prefix names is stored, and
/// `validate.decode` whether one arriving or read back passes; neither stands in for the
/// other.
#[test]
fn strategy_encoded_checks_each_direction_with_its_own_mode() {
    let catalogs = catalogs(true);
    let writer = build_in(
        json!({"model": "avro", "view": "json", "catalog": {"catalog0": [{"subject": "items-value"}]}}),
        &catalogs,
        None,
    )
    .unwrap();
    let event = serde_json::to_vec(&json!({"id": "e1", "status": "open"})).unwrap();
    let mut misnamed = writer.encode(&event).unwrap().unwrap();
    let item_id = catalogs.0.resolve_subject("item", "latest").unwrap();
    misnamed[1..5].copy_from_slice(&item_id.to_be_bytes());
    let encoded = |validate: serde_json::Value| {
        build_in(
            json!({"model": "avro", "validate": validate, "catalog": {"catalog0": [{"strategy": "encoded"}]}}),
            &catalogs,
            None,
        )
        .unwrap()
    };

    let decode_lenient = encoded(json!({"decode": "lenient", "encode": "strict"}));
    decode_lenient.validate(&misnamed).unwrap();
    assert!(
        decode_lenient.encode(&misnamed).is_err(),
        "stored though strict"
    );

    let encode_lenient = encoded(json!({"encode": "lenient"}));
    assert_eq!(
        encode_lenient.encode(&misnamed).unwrap(),
        None,
        "stored as it came"
    );
    assert!(encode_lenient.validate(&misnamed).is_err());
    // A message naming no schema is refused whatever the mode.
    assert!(encode_lenient.encode(&misnamed[5..]).is_err());
}

#[test]
fn bad_references_are_load_errors() {
    let cases = [
        (json!({"model": "avro"}), "", "missing field `catalog`"),
        (
            json!({"model": "avro", "catalog": {"catalog0": [{"subject": "broken"}]}}),
            "catalog.catalog0[0]",
            "not an Avro schema",
        ),
        (
            json!({"model": "avro", "catalog": {"catalog0": [{"subject": "none"}]}}),
            "catalog.catalog0[0]",
            "no schema for subject",
        ),
        (
            json!({"model": "avro", "view": "xml", "catalog": {"catalog0": [{"subject": "item"}]}}),
            "",
            "unknown variant",
        ),
        (
            json!({"model": "avro", "view": "json", "catalog": {"catalog0": [{"strategy": "encoded"}]}}),
            "catalog.catalog0[0]",
            "a message in the JSON `view` carries none",
        ),
    ];
    for (reference, path, message) in cases {
        let Err(error) = build_in(reference.clone(), &catalogs(true), None) else {
            panic!("{reference} was accepted");
        };
        assert_eq!(error.path, path, "{reference}: {error}");
        assert!(error.message.contains(message), "{reference}: {error}");
    }
    let encoded = json!({"model": "avro", "catalog": {"catalog0": [{"strategy": "encoded"}]}});
    let Err(error) = build_in(encoded, &catalogs(false), None) else {
        panic!("`strategy: encoded` was accepted on a catalog that frames nothing");
    };
    assert!(error.message.contains("puts no schema id"), "{error}");
}

fn arbitrary_item() -> impl PropStrategy<Value = serde_json::Value> {
    (
        ".{0,12}",
        any::<i32>(),
        any::<i64>(),
        // Quarters: exact in binary and in decimal text, whatever the JSON parser's rounding.
        any::<i32>().prop_map(|n| f64::from(n) / 4.0),
        any::<bool>(),
        proptest::option::of(".{0,8}"),
        proptest::collection::vec(".{0,4}", 0..4),
        proptest::collection::btree_map("[a-z]{1,4}", any::<i64>(), 0..4),
        prop_oneof![Just("OPEN"), Just("CLOSED")],
        proptest::collection::vec(any::<u8>(), 0..8),
        proptest::collection::vec(any::<u8>(), 2..=2),
    )
        .prop_map(
            |(id, count, total, price, open, note, tags, attributes, status, digest, code)| {
                let latin1 =
                    |bytes: &[u8]| bytes.iter().map(|b| char::from(*b)).collect::<String>();
                json!({
                    "id": id, "count": count, "total": total, "price": price, "open": open,
                    "note": note.map_or(serde_json::Value::Null, |note| json!({"string": note})),
                    "tags": tags, "attributes": attributes, "status": status,
                    "digest": latin1(&digest), "code": latin1(&code), "next": null
                })
            },
        )
}

proptest! {
    #[test]
    fn generated_values_round_trip(item in arbitrary_item()) {
        let validator = item_view(true);
        let stored = validator.encode(item.to_string().as_bytes()).unwrap().unwrap();
        let back: serde_json::Value =
            serde_json::from_slice(&validator.decode(&stored).unwrap().unwrap()).unwrap();
        prop_assert_eq!(back, item);
    }

    #[test]
    fn arbitrary_stored_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let validator = item_view(true);
        let id = zilla_catalog_inline::schema_id(ITEM).to_be_bytes();
        let _ = validator.decode(&[&[0], &id[..], &body].concat());
        let _ = validator.decode(&body);
        let _ = validator.validate(&body);
    }
}
