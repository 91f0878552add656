//! Stored message bytes through the avro model's `decode` and `validate` (the Avro binary
//! decoder and the JSON view), against a schema with every kind of type, recursion included:
//! malformed input must come back as an error, without panics or large allocations.

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use zilla_catalog_inline::InlineCatalog;
use zilla_catalog_inline::config::{InlineOptions, InlineSubject};
use zilla_engine::components::{Catalog, CatalogLookup, ModelContext, ModelFactory};
use zilla_engine::events::Events;
use zilla_validator_avro::AvroModelFactory;

const SCHEMA: &str = r#"{
    "type": "record", "name": "Node", "fields": [
        {"name": "id", "type": "string"},
        {"name": "n", "type": ["null", "int", "long", "float", "double", "boolean"]},
        {"name": "data", "type": "bytes"},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "map", "type": {"type": "map", "values": "long"}},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"]}},
        {"name": "code", "type": {"type": "fixed", "name": "Code", "size": 4}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "children", "type": {"type": "array", "items": "Node"}}
    ]
}"#;

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
        let mut reference = serde_json::json!({"model": "avro", "catalog": {"catalog0": [{"subject": "node"}]}});
        if !view.is_null() {
            reference["view"] = view;
        }
        let Ok(validator) = AvroModelFactory.build(&reference, &context) else {
            return;
        };
        let _ = validator.decode(data);
        let _ = validator.validate(data);
        let _ = validator.encode(data);
    }
});
