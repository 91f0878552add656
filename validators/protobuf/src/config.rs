//! The typed `protobuf` model reference, spelled as in Zilla's `zilla.yaml`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use zilla_cataloged::{CatalogReferences, SchemaReference, Strategy};
use zilla_engine::components::ValidateConfig;

/// `{model: protobuf, catalog: {...}, view: json, validate: ...}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProtobufModelConfig {
    /// `protobuf`.
    pub model: String,
    /// The catalog (exactly one) holding the `.proto` schema, which of its schemas, and
    /// which message of it (`record`).
    #[schemars(extend("maxProperties" = 1, "minProperties" = 1))]
    pub catalog: BTreeMap<String, Vec<ProtobufSchemaReference>>,
    /// `json`: clients read and write JSON, stored messages are Protobuf binary.
    pub view: Option<View>,
    /// `strict` (default) or `lenient`, or one per direction.
    pub validate: Option<ValidateConfig>,
}

impl ProtobufModelConfig {
    /// The catalog references without `record`, as the shared resolver reads them.
    pub fn schema_references(&self) -> CatalogReferences {
        self.catalog
            .iter()
            .map(|(name, references)| {
                let references = references
                    .iter()
                    .map(ProtobufSchemaReference::schema_reference)
                    .collect();
                (name.clone(), references)
            })
            .collect()
    }

    /// The message type the first reference names.
    pub fn record(&self) -> Option<&str> {
        self.catalog
            .values()
            .next()
            .and_then(|references| references.first())
            .map(|reference| reference.record.as_str())
    }
}

/// A schema reference of the protobuf model: one of `id`, `subject` or `strategy`, as for
/// every model, and the `record` (message type) messages are.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [
    {"required": ["id"], "not": {"required": ["version"]}},
    {"required": ["subject"]},
    {"required": ["strategy"]},
]))]
pub struct ProtobufSchemaReference {
    /// The schema id in the catalog.
    pub id: Option<i64>,
    /// The subject whose schema to use.
    pub subject: Option<String>,
    /// Derive the subject from the message's context (`topic`: a Kafka topic).
    pub strategy: Option<Strategy>,
    /// The subject's version; `latest` by default.
    pub version: Option<String>,
    /// The message type: its name in the schema's package (`Request`, `Outer.Inner`) or its
    /// full name (`example.Request`).
    pub record: String,
}

impl ProtobufSchemaReference {
    /// The reference without `record`.
    pub fn schema_reference(&self) -> SchemaReference {
        SchemaReference {
            id: self.id,
            subject: self.subject.clone(),
            strategy: self.strategy,
            version: self.version.clone(),
        }
    }
}

/// The form clients see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum View {
    /// Protobuf's canonical JSON mapping.
    Json,
}
