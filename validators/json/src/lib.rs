//! The `json` model: a message is valid when it is well-formed JSON and, when the reference
//! names a catalog, valid against the JSON Schema found there. Bindings use it wherever a
//! model reference is written, e.g. an http server's `options.requests[].content`, which
//! answers `400` to a request body it rejects.
//!
//! The schema is fetched from the catalog and compiled once, when the binding is built, so
//! an unknown catalog, subject or id, or a schema that does not compile, is a load error. The
//! schema's `$schema` picks its dialect; without one, it is read as draft 2019-09, Zilla's.
//! References to remote documents are never fetched.
//!
//! ```yaml
//! name: example
//! catalogs:
//!   catalog0:
//!     type: inline
//!     options:
//!       subjects:
//!         items:
//!           schema: |
//!             {"type": "object", "required": ["id"]}
//! bindings:
//!   http_server:
//!     type: http
//!     kind: server
//!     options:
//!       requests:
//!         - path: /items
//!           method: POST
//!           content:
//!             model: json
//!             catalog:
//!               catalog0:
//!                 - subject: items
//!                   version: latest
//!     exit: echo_server
//!   echo_server:
//!     type: echo
//!     kind: server
//! ```
//!
//! Reference keys:
//! - `model`: `json` (a bare `json` checks well-formedness only).
//! - `catalog`: one catalog of the namespace, with a list of one entry naming the schema:
//!   `{subject, version}` (`version` defaults to `latest`) or `{id}`. `{strategy}` needs a
//!   subject from the message's context (a Kafka topic), which bindings without one cannot
//!   give: it is refused at load there.
//! - `validate`: `strict` (default) rejects a message that violates the schema; `lenient`
//!   lets it through and logs the violation at debug level. Malformed JSON is rejected
//!   either way. With `{decode, encode}`, `decode` applies to messages arriving at the
//!   gateway and to stored messages read back, `encode` to messages the gateway stores (the
//!   records it produces to Kafka); a direction not given is strict.
//!
//! A rejection says why in a few words: `malformed JSON: ...` with line and column, or the
//! first schema violation with the JSON pointer of the offending value.

pub mod config;

use std::sync::Arc;

use zilla_engine::components::{ModelContext, ModelFactory, Validator};
use zilla_engine::events::Events;
use zilla_engine::{BuildError, Registry};

use config::{JsonModelConfig, ValidateMode};

/// The event a rejected or (leniently) let-through message raises.
pub const VALIDATION_FAILED: &str = "MODEL_JSON_VALIDATION_FAILED";

/// Registers the `json` model.
pub fn register(registry: &mut Registry) {
    registry.model(JsonModelFactory);
}

/// Builds `json` validators.
#[derive(Debug)]
pub struct JsonModelFactory;

impl ModelFactory for JsonModelFactory {
    fn type_name(&self) -> &'static str {
        "json"
    }

    fn schema(&self) -> serde_json::Value {
        serde_json::Value::from(schemars::schema_for!(JsonModelConfig))
    }

    fn build(
        &self,
        reference: &serde_json::Value,
        context: &ModelContext<'_>,
    ) -> Result<Arc<dyn Validator>, BuildError> {
        let config: JsonModelConfig =
            zilla_cataloged::model_config(reference, "json", |config: &JsonModelConfig| {
                &config.model
            })?;
        let lenient_decode = config
            .validate
            .is_some_and(|validate| validate.decode() == ValidateMode::Lenient);
        let lenient_encode = config
            .validate
            .is_some_and(|validate| validate.encode() == ValidateMode::Lenient);
        let schema = match &config.catalog {
            None => None,
            Some(catalog) => {
                let resolved = zilla_cataloged::resolve(catalog, context)?;
                let path = format!("catalog.{}[0]", resolved.catalog_name);
                Some(Arc::new(
                    compile(&resolved.text).map_err(|message| BuildError::at(path, message))?,
                ))
            }
        };
        Ok(Arc::new(JsonValidator {
            schema,
            lenient_decode,
            lenient_encode,
            events: context.events.clone(),
        }))
    }
}

/// Compiles a JSON Schema: its `$schema` picks the dialect, 2019-09 when it names none.
pub fn compile(text: &str) -> Result<jsonschema::Validator, String> {
    let schema: serde_json::Value =
        serde_json::from_str(text).map_err(|error| format!("the schema is not JSON: {error}"))?;
    let draft = jsonschema::Draft::Draft201909.detect(&schema);
    let mut options = jsonschema::options();
    if draft != jsonschema::Draft::Unknown {
        options = options.with_draft(draft);
    }
    options
        .build(&schema)
        .map_err(|error| format!("the schema is not a valid JSON Schema: {error}"))
}

/// A built `json` model.
pub struct JsonValidator {
    schema: Option<Arc<jsonschema::Validator>>,
    /// Whether a schema violation is let through in messages arriving at the gateway or read
    /// from storage (`validate` or its `decode`).
    lenient_decode: bool,
    /// The same for messages the gateway stores (`validate` or its `encode`).
    lenient_encode: bool,
    events: Events,
}

impl std::fmt::Debug for JsonValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonValidator")
            .field("schema", &self.schema.is_some())
            .field("lenient_decode", &self.lenient_decode)
            .field("lenient_encode", &self.lenient_encode)
            .finish()
    }
}

impl Validator for JsonValidator {
    fn validate(&self, data: &[u8]) -> Result<(), String> {
        self.check(data, self.lenient_decode)
    }

    fn encode(&self, data: &[u8]) -> Result<Option<Vec<u8>>, String> {
        self.check(data, self.lenient_encode).map(|()| None)
    }

    fn decode(&self, data: &[u8]) -> Result<Option<Vec<u8>>, String> {
        self.check(data, self.lenient_decode).map(|()| None)
    }
}

impl JsonValidator {
    /// Checks `data`; a schema violation is let through (and reported) when `lenient`.
    fn check(&self, data: &[u8], lenient: bool) -> Result<(), String> {
        let value: serde_json::Value = serde_json::from_slice(data).map_err(|error| {
            let reason = format!("malformed JSON: {error}");
            self.events.emit(VALIDATION_FAILED, 0, reason.clone());
            reason
        })?;
        let Some(schema) = &self.schema else {
            return Ok(());
        };
        match schema.validate(&value) {
            Ok(()) => Ok(()),
            Err(error) => {
                let at = error.instance_path().as_str();
                let at = if at.is_empty() { "/" } else { at };
                // Masked: the reason must not echo message content into logs and events.
                let reason = format!("`{at}`: {}", error.masked());
                self.events.emit(VALIDATION_FAILED, 0, reason.clone());
                if lenient {
                    tracing::debug!(%reason, "schema violation let through (lenient)");
                    Ok(())
                } else {
                    Err(reason)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
    use std::collections::HashMap;
    use zilla_catalog_inline::InlineCatalog;
    use zilla_catalog_inline::config::{InlineOptions, InlineSubject};
    use zilla_engine::components::{Catalog, CatalogLookup};

    const ITEM: &str = r#"{
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "status": {"type": "string", "enum": ["open", "closed"]},
            "tags": {"type": "array", "items": {"type": "string"}}
        },
        "required": ["id", "status"],
        "additionalProperties": false
    }"#;

    struct Catalogs(HashMap<String, Arc<dyn Catalog>>);

    impl CatalogLookup for Catalogs {
        fn catalog(&self, name: &str) -> Option<Arc<dyn Catalog>> {
            self.0.get(name).cloned()
        }
    }

    fn catalogs(subjects: &[(&str, &str)]) -> Catalogs {
        let options = InlineOptions {
            subjects: Some(
                subjects
                    .iter()
                    .map(|(name, schema)| {
                        (
                            (*name).to_owned(),
                            InlineSubject {
                                schema: (*schema).to_owned(),
                                version: "latest".to_owned(),
                            },
                        )
                    })
                    .collect(),
            ),
        };
        let catalog: Arc<dyn Catalog> = Arc::new(InlineCatalog::new(&options).unwrap());
        Catalogs(HashMap::from([("catalog0".to_owned(), catalog)]))
    }

    fn build_with(
        reference: &serde_json::Value,
        catalogs: &Catalogs,
    ) -> Result<Arc<dyn Validator>, BuildError> {
        let events = Events::default();
        let context = ModelContext {
            catalogs,
            events: &events,
            topic_subject: None,
        };
        JsonModelFactory.build(reference, &context)
    }

    fn build(reference: serde_json::Value) -> Result<Arc<dyn Validator>, BuildError> {
        build_with(&reference, &catalogs(&[("item", ITEM), ("broken", "{")]))
    }

    fn item_validator() -> Arc<dyn Validator> {
        build(json!({"model": "json", "catalog": {"catalog0": [{"subject": "item", "version": "latest"}]}}))
            .unwrap()
    }

    #[test]
    fn valid_documents_pass() {
        let validator = item_validator();
        validator
            .validate(br#"{"id": "a1", "status": "open"}"#)
            .unwrap();
        validator
            .validate(b" {\"id\":\"a1\",\"status\":\"closed\",\"tags\":[\"x\"]}\n")
            .unwrap();
    }

    #[test]
    fn malformed_json_is_rejected_with_its_position() {
        let validator = item_validator();
        for bad in [
            &b"{\"id\": \"a1\", \"status\": "[..],
            b"",
            b"{\"id\": \"a1\"} trailing",
            b"\xff\xfe",
            b"{'id': 'a1'}",
        ] {
            let reason = validator.validate(bad).unwrap_err();
            assert!(reason.starts_with("malformed JSON: "), "{reason}");
        }
        let reason = validator.validate(b"{\n  \"id\": nope}").unwrap_err();
        assert!(reason.contains("line 2"), "{reason}");
    }

    #[test]
    fn schema_violations_name_the_offending_value() {
        let validator = item_validator();
        let reason = validator
            .validate(br#"{"id": 7, "status": "open"}"#)
            .unwrap_err();
        assert!(reason.starts_with("`/id`: "), "{reason}");
        assert!(reason.contains("string"), "{reason}");
        let reason = validator
            .validate(br#"{"id": "a", "status": "lost"}"#)
            .unwrap_err();
        assert!(reason.starts_with("`/status`: "), "{reason}");
        assert!(!reason.contains("lost"), "values are masked: {reason}");
        let reason = validator.validate(br#"{"id": "a"}"#).unwrap_err();
        assert!(reason.starts_with("`/`: "), "{reason}");
        assert!(reason.contains("status"), "{reason}");
        let reason = validator
            .validate(br#"{"id": "a", "status": "open", "tags": ["ok", 3]}"#)
            .unwrap_err();
        assert!(reason.starts_with("`/tags/1`: "), "{reason}");
        assert!(validator.validate(b"[]").is_err());
    }

    #[test]
    fn a_bare_json_model_checks_well_formedness_only() {
        let validator = build(json!({"model": "json"})).unwrap();
        validator.validate(b"[1, 2, {\"any\": null}]").unwrap();
        validator.validate(b"42").unwrap();
        assert!(validator.validate(b"{").is_err());
    }

    #[test]
    fn lenient_lets_violations_through_but_not_malformed_json() {
        for validate in [json!("lenient"), json!({"decode": "lenient"})] {
            let validator = build(json!({
                "model": "json",
                "catalog": {"catalog0": [{"subject": "item"}]},
                "validate": validate
            }))
            .unwrap();
            validator.validate(br#"{"id": 7}"#).unwrap();
            assert!(validator.validate(b"{\"id\": ").is_err());
        }
        let strict = build(json!({
            "model": "json",
            "catalog": {"catalog0": [{"subject": "item"}]},
            "validate": {"decode": "strict", "encode": "lenient"}
        }))
        .unwrap();
        assert!(strict.validate(br#"{"id": 7}"#).is_err());
    }

    /// `validate.encode` governs what the gateway stores (a Kafka record it produces), and
    /// `validate.decode` what arrives or is read back; neither stands in for the other.
    #[test]
    fn each_direction_follows_its_own_mode() {
        let invalid = br#"{"id": 7}"#;
        let decode_lenient = build(json!({
            "model": "json",
            "catalog": {"catalog0": [{"subject": "item"}]},
            "validate": {"decode": "lenient", "encode": "strict"}
        }))
        .unwrap();
        decode_lenient.validate(invalid).unwrap();
        decode_lenient.decode(invalid).unwrap();
        assert!(decode_lenient.encode(invalid).is_err());

        let encode_lenient = build(json!({
            "model": "json",
            "catalog": {"catalog0": [{"subject": "item"}]},
            "validate": {"encode": "lenient"}
        }))
        .unwrap();
        assert_eq!(encode_lenient.encode(invalid), Ok(None));
        assert!(encode_lenient.validate(invalid).is_err());
        assert!(encode_lenient.decode(invalid).is_err());
        // Malformed JSON is refused in every direction.
        assert!(encode_lenient.encode(b"{").is_err());

        let both = build(json!({
            "model": "json",
            "catalog": {"catalog0": [{"subject": "item"}]},
            "validate": "lenient"
        }))
        .unwrap();
        assert_eq!(both.encode(invalid), Ok(None));
        both.validate(invalid).unwrap();
    }

    #[test]
    fn schemas_are_found_by_id_in_either_spelling() {
        let id = zilla_catalog_inline::schema_id(ITEM);
        let signed = i64::from(id as i32);
        for written in [i64::from(id), signed] {
            let validator =
                build(json!({"model": "json", "catalog": {"catalog0": [{"id": written}]}}))
                    .unwrap();
            assert!(validator.validate(br#"{"id": 7}"#).is_err());
            validator
                .validate(br#"{"id": "x", "status": "open"}"#)
                .unwrap();
        }
    }

    #[test]
    fn the_schema_dialect_follows_dollar_schema() {
        // `dependentRequired` exists from 2019-09 on; draft 7 ignores it.
        let schema = |dialect: &str| format!(r#"{{{dialect}"dependentRequired": {{"a": ["b"]}}}}"#);
        let default = compile(&schema("")).unwrap();
        assert!(!default.is_valid(&json!({"a": 1})));
        let draft7 = compile(&schema(
            r#""$schema": "http://json-schema.org/draft-07/schema#", "#,
        ))
        .unwrap();
        assert!(draft7.is_valid(&json!({"a": 1})));
        let draft2020 = compile(&schema(
            r#""$schema": "https://json-schema.org/draft/2020-12/schema", "#,
        ))
        .unwrap();
        assert!(!draft2020.is_valid(&json!({"a": 1})));
    }

    #[test]
    fn bad_references_are_load_errors_at_their_path() {
        let cases = [
            (
                json!({"model": "json", "catalog": {"catalog9": [{"subject": "item"}]}}),
                "catalog.catalog9",
                "unknown catalog",
            ),
            (
                json!({"model": "json", "catalog": {"catalog0": [{"subject": "nope"}]}}),
                "catalog.catalog0[0]",
                "no schema for subject `nope`",
            ),
            (
                json!({"model": "json", "catalog": {"catalog0": [{"subject": "item", "version": "2"}]}}),
                "catalog.catalog0[0]",
                "version `2`",
            ),
            (
                json!({"model": "json", "catalog": {"catalog0": [{"id": 1}]}}),
                "catalog.catalog0[0]",
                "no schema with id 1",
            ),
            (
                json!({"model": "json", "catalog": {"catalog0": [{"subject": "item"}, {"id": 1}]}}),
                "catalog.catalog0[1]",
                "a second schema is not supported",
            ),
            (
                json!({"model": "json", "catalog": {"catalog0": [{"id": 1_i64 << 40}]}}),
                "catalog.catalog0[0]",
                "out of range",
            ),
            (
                json!({"model": "json", "catalog": {"catalog0": [{"strategy": "topic"}]}}),
                "catalog.catalog0[0]",
                "`strategy: topic` takes the subject",
            ),
            (
                json!({"model": "json", "catalog": {"catalog0": [{"subject": "item", "id": 1}]}}),
                "catalog.catalog0[0]",
                "exactly one",
            ),
            (
                json!({"model": "json", "catalog": {"catalog0": [{}]}}),
                "catalog.catalog0[0]",
                "exactly one",
            ),
            (
                json!({"model": "json", "catalog": {"catalog0": []}}),
                "catalog.catalog0",
                "name the schema",
            ),
            (
                json!({"model": "json", "catalog": {}}),
                "catalog",
                "exactly one catalog",
            ),
            (
                json!({"model": "json", "catalog": {"catalog0": [{"subject": "broken"}]}}),
                "catalog.catalog0[0]",
                "not JSON",
            ),
            (
                json!({"model": "json", "catalog": {"catalog0": [{"subject": "item"}]}, "view": "x"}),
                "",
                "unknown field `view`",
            ),
            (
                json!({"model": "json", "validate": "loose"}),
                "",
                "`strict`, `lenient`",
            ),
            (json!({"model": "avro"}), "model", "not the json model"),
        ];
        for (reference, path, message) in cases {
            let Err(error) = build(reference.clone()) else {
                panic!("{reference} was accepted");
            };
            assert_eq!(error.path, path, "{reference}: {error}");
            assert!(error.message.contains(message), "{reference}: {error}");
        }
        let Err(invalid_schema) = build_with(
            &json!({"model": "json", "catalog": {"catalog0": [{"subject": "s"}]}}),
            &catalogs(&[("s", r#"{"type": "no-such-type"}"#)]),
        ) else {
            panic!("an invalid schema was accepted");
        };
        assert!(
            invalid_schema.message.contains("not a valid JSON Schema"),
            "{invalid_schema}"
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let validator = item_validator();
            let _ = validator.validate(&data);
            let bare = build(json!({"model": "json"})).unwrap();
            let _ = bare.validate(&data);
        }

        #[test]
        fn arbitrary_json_text_never_panics(text in "[\\[\\]{}\",:0-9a-z \\\\-]{0,256}") {
            let validator = item_validator();
            let _ = validator.validate(text.as_bytes());
        }

        #[test]
        fn deep_nesting_is_refused_not_overflowed(depth in 100usize..5000) {
            let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let bare = build(json!({"model": "json"})).unwrap();
            let result = bare.validate(text.as_bytes());
            // serde_json stops at its recursion limit instead of overflowing the stack.
            prop_assert_eq!(result.is_ok(), depth <= 127);
        }

        #[test]
        fn generated_items_match_the_schema_verdict(
            id in proptest::option::of("[a-z0-9]{0,8}"),
            status in proptest::option::of(prop_oneof![Just("open"), Just("closed"), Just("lost")]),
        ) {
            let mut object = serde_json::Map::new();
            if let Some(id) = &id {
                object.insert("id".into(), json!(id));
            }
            if let Some(status) = status {
                object.insert("status".into(), json!(status));
            }
            let text = serde_json::Value::Object(object).to_string();
            let expected = id.is_some() && matches!(status, Some("open" | "closed"));
            prop_assert_eq!(item_validator().validate(text.as_bytes()).is_ok(), expected);
        }
    }
}
