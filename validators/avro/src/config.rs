//! The typed `avro` model reference, spelled as in Zilla's `zilla.yaml`.

use schemars::JsonSchema;
use serde::Deserialize;
use zilla_cataloged::CatalogReferences;
use zilla_engine::components::ValidateConfig;

/// `{model: avro, catalog: {...}, view: json, validate: ...}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AvroModelConfig {
    /// `avro`.
    pub model: String,
    /// The catalog (exactly one) holding the Avro schema, and which of its schemas.
    #[schemars(extend("maxProperties" = 1, "minProperties" = 1))]
    pub catalog: CatalogReferences,
    /// `json`: clients read and write JSON, stored messages are Avro binary.
    pub view: Option<View>,
    /// `strict` (default) or `lenient`, or one per direction.
    pub validate: Option<ValidateConfig>,
}

/// The form clients see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum View {
    /// Avro's JSON encoding.
    Json,
}
