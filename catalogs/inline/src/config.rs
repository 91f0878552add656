//! Typed options of the inline catalog, spelled as in Zilla's `zilla.yaml`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

/// `options` of an `inline` catalog.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InlineOptions {
    /// The schemas, by subject. A subject name may hold `*` wildcards (`orders.*-value`), which
    /// then answer for every subject they match that no exact name answers for.
    #[schemars(extend("propertyNames" = {"pattern": "^[a-zA-Z]+[a-zA-Z0-9\\._\\-\\*]*$"}))]
    pub subjects: Option<BTreeMap<String, InlineSubject>>,
}

/// One subject of an inline catalog.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InlineSubject {
    /// The schema text (JSON Schema, Avro, Protobuf: whatever the models that use it read).
    pub schema: String,
    /// The version this schema is registered as; `latest` by default.
    #[serde(default = "latest")]
    #[schemars(default = "latest")]
    pub version: String,
}

/// The version every subject has unless it says otherwise.
pub fn latest() -> String {
    crate::LATEST.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zilla_option_spelling() {
        let options: InlineOptions = serde_json::from_value(serde_json::json!({
            "subjects": {
                "subject1": {"version": "latest", "schema": "{\"type\": \"object\"}"},
                "orders.*-value": {"schema": "{}"}
            }
        }))
        .unwrap();
        let subjects = options.subjects.unwrap();
        assert_eq!(subjects["subject1"].version, "latest");
        assert_eq!(subjects["orders.*-value"].version, "latest");
        for bad in [
            serde_json::json!({"subject": {}}),
            serde_json::json!({"subjects": {"s": {"version": "latest"}}}),
            serde_json::json!({"subjects": {"s": {"schema": "{}", "id": 1}}}),
        ] {
            assert!(serde_json::from_value::<InlineOptions>(bad).is_err());
        }
    }

    #[test]
    fn schema_restricts_subject_names() {
        let schema = serde_json::Value::from(schemars::schema_for!(InlineOptions));
        let subjects = &schema["properties"]["subjects"];
        assert_eq!(
            subjects["propertyNames"]["pattern"], "^[a-zA-Z]+[a-zA-Z0-9\\._\\-\\*]*$",
            "{schema}"
        );
        assert_eq!(schema["additionalProperties"], false, "{schema}");
        let subject = &schema["$defs"]["InlineSubject"];
        assert_eq!(
            subject["properties"]["version"]["default"], "latest",
            "{schema}"
        );
        assert_eq!(
            subject["required"],
            serde_json::json!(["schema"]),
            "{schema}"
        );
    }
}
