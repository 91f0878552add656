//! The composed schema `zilla schema` prints is a valid JSON Schema that accepts the examples.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use zilla::engine::config::node::Node;
use zilla::engine::config::{Resolver, Source};

/// Values for the `${{env.X}}` the examples read: what matters to the schema is their type.
struct ExampleEnv;

impl Resolver for ExampleEnv {
    fn resolve(&self, resolver: &str, name: &str) -> Result<String, String> {
        if resolver != "env" {
            return Err(format!("no resolver {resolver}"));
        }
        // Ports and durations must be numbers; everything else only needs to be a string.
        let value = if name.ends_with("PORT") || name.ends_with("CHALLENGE") {
            "0"
        } else {
            "localhost:9092"
        };
        Ok(value.to_owned())
    }
}

#[test]
fn composed_schema_compiles_and_accepts_every_example() {
    let schema = zilla::registry().schema();
    let validator = jsonschema::validator_for(&schema).expect("the composed schema compiles");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path().join("zilla.yaml");
        if !path.exists() {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let source = Source::new(path.display().to_string(), text, &ExampleEnv).unwrap();
        for document in Node::parse_documents(&source).unwrap() {
            let instance = document.to_json();
            let errors: Vec<String> = validator
                .iter_errors(&instance)
                .map(|error| format!("{}: {error}", error.instance_path()))
                .collect();
            assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
        }
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} examples found");

    // And it rejects what the loader rejects: a type-specific unknown key, a wrong kind.
    let bad_option = serde_json::json!({"name": "x", "bindings": {"t": {
        "type": "tcp", "kind": "server", "options": {"port": 1, "colour": "blue"}, "exit": "e"}}});
    assert!(!validator.is_valid(&bad_option));
    let bad_kind =
        serde_json::json!({"name": "x", "bindings": {"e": {"type": "echo", "kind": "client"}}});
    assert!(!validator.is_valid(&bad_kind));
}
