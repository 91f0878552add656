//! The typed `json` model reference, spelled as in Zilla's `zilla.yaml`.

use schemars::JsonSchema;
use serde::Deserialize;

/// A `json` model reference: `{model: json, catalog: {...}, validate: ...}`. A bare `json`
/// arrives here as `{model: json}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonModelConfig {
    /// The model type: `json`.
    pub model: String,
    /// The catalog (at most one) holding the JSON Schema, and which of its schemas (a list
    /// of one entry; a second is refused). Without a catalog, messages only need to be well-formed
    /// JSON.
    #[schemars(extend("maxProperties" = 1))]
    pub catalog: Option<zilla_cataloged::CatalogReferences>,
    /// What a schema violation does: `strict` (the default) rejects the message, `lenient`
    /// lets it through and logs the violation. Malformed JSON is always rejected. In the
    /// object form, `decode` applies to messages arriving at the gateway or read from
    /// storage, `encode` to messages the gateway stores.
    pub validate: Option<ValidateConfig>,
}

pub use zilla_cataloged::{SchemaReference, Strategy};
pub use zilla_engine::components::{ValidateConfig, ValidateDirections, ValidateMode};

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn zilla_reference_spelling() {
        let config: JsonModelConfig = serde_json::from_value(json!({
            "model": "json",
            "catalog": {"catalog0": [
                {"subject": "items", "version": "latest"},
                {"id": 42},
                {"strategy": "topic"}
            ]},
            "validate": "lenient"
        }))
        .unwrap();
        let catalog = &config.catalog.unwrap()["catalog0"];
        assert_eq!(catalog[0].subject.as_deref(), Some("items"));
        assert_eq!(catalog[1].id, Some(42));
        assert_eq!(catalog[2].strategy, Some(Strategy::Topic));
        assert_eq!(config.validate.unwrap().decode(), ValidateMode::Lenient);

        let directions: ValidateConfig =
            serde_json::from_value(json!({"decode": "lenient", "encode": "strict"})).unwrap();
        assert_eq!(directions.decode(), ValidateMode::Lenient);
        let encode_only: ValidateConfig =
            serde_json::from_value(json!({"encode": "lenient"})).unwrap();
        assert_eq!(encode_only.decode(), ValidateMode::Strict);

        let error = serde_json::from_value::<ValidateConfig>(json!("loose")).unwrap_err();
        assert!(error.to_string().contains("`strict`, `lenient`"), "{error}");
        for bad in [
            json!({"model": "json", "catalogs": {}}),
            json!({"model": "json", "catalog": {"c": [{"subject": "s", "record": "r"}]}}),
            json!({"model": "json", "catalog": {"c": [{"strategy": "name"}]}}),
        ] {
            assert!(serde_json::from_value::<JsonModelConfig>(bad).is_err());
        }
    }

    #[test]
    fn schema_allows_one_catalog_and_one_way_to_name_a_schema() {
        let schema = serde_json::Value::from(schemars::schema_for!(JsonModelConfig));
        let text = schema.to_string();
        assert!(text.contains("\"maxProperties\":1"), "{text}");
        assert!(text.contains("\"oneOf\""), "{text}");
        let validator = jsonschema::validator_for(&schema).unwrap();
        assert!(validator.is_valid(&json!({"model": "json"})));
        assert!(validator.is_valid(&json!({"model": "json", "catalog": {"c": [{"id": 1}]}})));
        assert!(
            !validator
                .is_valid(&json!({"model": "json", "catalog": {"c": [{"id": 1, "subject": "s"}]}}))
        );
        assert!(
            !validator.is_valid(
                &json!({"model": "json", "catalog": {"a": [{"id": 1}], "b": [{"id": 1}]}})
            )
        );
    }
}
