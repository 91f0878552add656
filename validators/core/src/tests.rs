use super::*;
use proptest::prelude::*;
use serde_json::json;
use std::sync::Mutex;
use zilla_engine::components::{Catalog, CatalogLookup, Exporter};
use zilla_engine::events::Event;

struct NoCatalogs;

impl CatalogLookup for NoCatalogs {
    fn catalog(&self, _name: &str) -> Option<Arc<dyn Catalog>> {
        None
    }
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
    events: &Events,
) -> Result<Arc<dyn Validator>, BuildError> {
    let model = reference
        .get("model")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("string")
        .to_owned();
    let factory = CoreModel::ALL
        .into_iter()
        .find(|candidate| candidate.name() == model)
        .map(CoreModelFactory)
        .unwrap_or(CoreModelFactory(CoreModel::String));
    let context = ModelContext {
        catalogs: &NoCatalogs,
        events,
        topic_subject: None,
    };
    factory.build(&reference, &context)
}

fn build(reference: serde_json::Value) -> Arc<dyn Validator> {
    build_with(reference, &Events::default()).unwrap()
}

#[test]
fn strings_check_encoding_length_and_pattern() {
    let plain = build(json!({"model": "string"}));
    plain.validate("héllo".as_bytes()).unwrap();
    assert_eq!(plain.validate(b"\xff").unwrap_err(), "not UTF-8 text");

    let bounded = build(json!({"model": "string", "minLength": 2, "maxLength": 4}));
    bounded.validate(b"ab").unwrap();
    bounded.validate(b"abcd").unwrap();
    assert!(
        bounded
            .validate(b"a")
            .unwrap_err()
            .contains("fewer than the 2")
    );
    assert!(
        bounded
            .validate(b"abcde")
            .unwrap_err()
            .contains("more than the 4")
    );
    // Lengths count bytes of the encoded text, as Zilla does: `é` is two.
    assert!(bounded.validate("ééé".as_bytes()).is_err());

    let pattern = build(json!({"model": "string", "pattern": "[a-z]+[0-9]?"}));
    pattern.validate(b"abc7").unwrap();
    // The whole text must match, not a part of it.
    assert!(pattern.validate(b"ABCabc").is_err());
    assert!(pattern.validate(b"abc77").is_err());

    let utf16 = build(json!({"model": "string", "encoding": "utf_16", "maxLength": 6}));
    utf16.validate(&[0x00, b'h', 0x00, b'i']).unwrap();
    utf16.validate(&[0xff, 0xfe, b'h', 0x00]).unwrap();
    assert!(utf16.validate(&[0x00]).is_err(), "odd length");
    assert!(
        utf16.validate(&[0xd8, 0x00, 0x00, b'a']).is_err(),
        "lone surrogate"
    );
    assert!(
        utf16
            .validate(&[0x00, b'a', 0x00, b'b', 0x00, b'c', 0x00, b'd'])
            .is_err()
    );
}

#[test]
fn integers_check_text_binary_range_and_multiple() {
    let int32 = build(json!({"model": "int32"}));
    for good in ["0", "-1", "2147483647", "-2147483648", "007"] {
        int32.validate(good.as_bytes()).unwrap();
    }
    for bad in ["", "-", "+1", " 1", "1 ", "1.0", "2147483648", "0x10", "١"] {
        assert_eq!(
            int32.validate(bad.as_bytes()).unwrap_err(),
            "not an int32",
            "{bad:?}"
        );
    }
    let int64 = build(json!({"model": "int64"}));
    int64.validate(b"9223372036854775807").unwrap();
    assert!(int64.validate(b"9223372036854775808").is_err());

    let binary = build(json!({"model": "int32", "format": "binary", "range": "[0,10)"}));
    binary.validate(&9i32.to_be_bytes()).unwrap();
    assert!(binary.validate(&10i32.to_be_bytes()).is_err());
    assert!(binary.validate(&(-1i32).to_be_bytes()).is_err());
    assert!(binary.validate(&[0, 0, 1]).is_err());
    let binary64 = build(json!({"model": "int64", "format": "binary"}));
    binary64.validate(&i64::MIN.to_be_bytes()).unwrap();
    assert!(binary64.validate(&[0; 4]).is_err());

    let ranged = build(json!({"model": "int32", "range": "(,100]", "multiple": 5}));
    ranged.validate(b"100").unwrap();
    ranged.validate(b"-5").unwrap();
    assert_eq!(ranged.validate(b"105").unwrap_err(), "out of range");
    assert_eq!(ranged.validate(b"7").unwrap_err(), "not a multiple of 5");
}

#[test]
fn decimals_check_text_binary_range_and_multiple() {
    let double = build(json!({"model": "double", "range": "[0.5,10)", "multiple": 0.1}));
    for good in ["0.5", "0.7", "9.9", "5e0", "1E-0"] {
        double
            .validate(good.as_bytes())
            .unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    for bad in ["NaN", "inf", "Infinity", "+1", ".5", "5.", "1e", "", "1,5"] {
        assert_eq!(
            double.validate(bad.as_bytes()).unwrap_err(),
            "not a double",
            "{bad:?}"
        );
    }
    assert_eq!(double.validate(b"10").unwrap_err(), "out of range");
    assert_eq!(
        double.validate(b"0.75").unwrap_err(),
        "not a multiple of 0.1"
    );
    let float = build(json!({"model": "float"}));
    float.validate(b"3.4e38").unwrap();
    assert!(float.validate(b"3.5e38").is_err(), "beyond f32");
    let binary = build(json!({"model": "float", "format": "binary", "range": "[0,1]"}));
    binary.validate(&0.25f32.to_be_bytes()).unwrap();
    assert!(binary.validate(&2.0f32.to_be_bytes()).is_err());
    assert!(binary.validate(&0.25f64.to_be_bytes()).is_err());
}

#[test]
fn booleans_are_one_byte_and_bytes_are_anything() {
    let boolean = build(json!({"model": "boolean"}));
    boolean.validate(&[0]).unwrap();
    boolean.validate(&[1]).unwrap();
    for bad in [&b""[..], b"\x02", b"true", b"\x00\x00"] {
        assert!(boolean.validate(bad).is_err());
    }
    let bytes = build(json!({"model": "bytes"}));
    bytes.validate(b"").unwrap();
    bytes.validate(&[0xff, 0x00]).unwrap();
}

#[test]
fn lenient_passes_constraint_failures_not_malformed_values_and_raises_events() {
    let recorder = Arc::new(Recorder::default());
    let events = Events::default().named("test:http0");
    events.set_exporters(vec![recorder.clone()]);
    let lenient = build_with(
        json!({"model": "int32", "range": "[,10]", "validate": "lenient"}),
        &events,
    )
    .unwrap();
    lenient.validate(b"11").unwrap();
    assert_eq!(lenient.validate(b"x").unwrap_err(), "not an int32");
    let per_direction = build_with(
        json!({"model": "int32", "range": "[,10]", "validate": {"encode": "lenient"}}),
        &events,
    )
    .unwrap();
    assert!(per_direction.validate(b"11").is_err());
    assert_eq!(per_direction.encode(b"11").unwrap(), None);
    let recorded = recorder.0.lock().unwrap().clone();
    assert_eq!(recorded.len(), 4, "{recorded:?}");
    assert!(recorded.iter().all(|(name, _)| name == VALIDATION_FAILED));
    assert_eq!(recorded[0].1, "int32: out of range");
    assert_eq!(recorded[1].1, "int32: not an int32");
}

#[test]
fn bad_references_are_load_errors_at_their_path() {
    let cases = [
        (
            json!({"model": "int32", "range": "[1,0]"}),
            "range",
            "empty",
        ),
        (
            json!({"model": "int32", "range": "1..2"}),
            "range",
            "not an interval",
        ),
        (
            json!({"model": "int32", "multiple": 0}),
            "multiple",
            "not be 0",
        ),
        (
            json!({"model": "double", "multiple": 0.0}),
            "multiple",
            "non-zero",
        ),
        (
            json!({"model": "string", "pattern": "("}),
            "pattern",
            "not a regular expression",
        ),
        (
            json!({"model": "string", "minLength": 5, "maxLength": 2}),
            "minLength",
            "above",
        ),
        (
            json!({"model": "string", "encoding": "latin1"}),
            "",
            "unknown variant",
        ),
        (
            json!({"model": "int32", "format": "hex"}),
            "",
            "unknown variant",
        ),
        (
            json!({"model": "int32", "catalog": {}}),
            "",
            "unknown field `catalog`",
        ),
        (
            json!({"model": "boolean", "view": "json"}),
            "",
            "unknown field `view`",
        ),
        (
            json!({"model": "int32", "validate": "loose"}),
            "",
            "`strict`, `lenient`",
        ),
    ];
    for (reference, path, message) in cases {
        let Err(error) = build_with(reference.clone(), &Events::default()) else {
            panic!("{reference} was accepted");
        };
        assert_eq!(error.path, path, "{reference}: {error}");
        assert!(error.message.contains(message), "{reference}: {error}");
    }
}

#[test]
fn schemas_follow_zilla_spelling() {
    let schema = CoreModelFactory(CoreModel::String).schema();
    let properties = &schema["properties"];
    assert!(properties.get("minLength").is_some(), "{schema}");
    assert!(properties.get("maxLength").is_some(), "{schema}");
    assert_eq!(schema["additionalProperties"], false);
    let validator = jsonschema_of(CoreModel::Int32);
    assert!(validator(
        &json!({"model": "int32", "range": "[0,100)", "format": "binary"})
    ));
    assert!(!validator(&json!({"model": "int32", "range": "0-100"})));
    let validator = jsonschema_of(CoreModel::Double);
    assert!(validator(
        &json!({"model": "double", "range": "(-0.5,1.25]", "multiple": 0.25})
    ));
}

fn jsonschema_of(model: CoreModel) -> impl Fn(&serde_json::Value) -> bool {
    let validator = jsonschema::validator_for(&CoreModelFactory(model).schema()).unwrap();
    move |value: &serde_json::Value| validator.is_valid(value)
}

proptest! {
    #[test]
    fn int32_text_agrees_with_the_number(value in any::<i32>(), low in any::<i32>(), span in 0i32..1000) {
        let high = low.saturating_add(span);
        let validator = build(json!({"model": "int32", "range": format!("[{low},{high}]")}));
        let verdict = validator.validate(value.to_string().as_bytes()).is_ok();
        prop_assert_eq!(verdict, (low..=high).contains(&value));
        let binary = build(json!({"model": "int32", "format": "binary"}));
        prop_assert!(binary.validate(&value.to_be_bytes()).is_ok());
    }

    #[test]
    fn doubles_written_by_rust_are_accepted(value in any::<f64>().prop_filter("finite", |v| v.is_finite())) {
        let validator = build(json!({"model": "double"}));
        // Rust's shortest round-trip form, with or without an exponent.
        let (shortest, plain) = (format!("{value:?}"), format!("{value}"));
        prop_assert!(validator.validate(shortest.as_bytes()).is_ok(), "{}", shortest);
        prop_assert!(validator.validate(plain.as_bytes()).is_ok(), "{}", plain);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
        for model in CoreModel::ALL {
            let validator = build(json!({"model": model.name()}));
            let _ = validator.validate(&data);
        }
        let utf16 = build(json!({"model": "string", "encoding": "utf_16", "pattern": "a+"}));
        let _ = utf16.validate(&data);
    }
}
