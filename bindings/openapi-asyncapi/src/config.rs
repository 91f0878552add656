//! The options and routes of an `openapi-asyncapi` proxy, spelled as Zilla spells them. Keys
//! that are not built are in the schema marked `x-unsupported`, so a config using them fails
//! to load at their position; unknown keys are refused (`deny_unknown_fields`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

/// `options` of an `openapi-asyncapi` proxy.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenapiAsyncapiOptions {
    /// The documents on each side, by label.
    pub specs: Specs,
}

/// `options.specs`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Specs {
    /// The OpenAPI documents (the HTTP side), by the label routes use in `when.spec`.
    #[schemars(extend("minProperties" = 1))]
    pub openapi: BTreeMap<String, OpenapiSpec>,
    /// The AsyncAPI documents (the Kafka side), by the label routes use in `with.spec`.
    #[schemars(extend("minProperties" = 1))]
    pub asyncapi: BTreeMap<String, AsyncapiSpec>,
}

/// `options.specs.openapi.<label>`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenapiSpec {
    /// Where the document is: one catalog, with the subject and version.
    #[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
    pub catalog: BTreeMap<String, CatalogSubject>,
    /// Security schemes bound to guards. Refused: not supported yet.
    #[schemars(extend("x-unsupported" = "`security` (guarded Kafka mappings) is not supported yet by openapi-asyncapi bindings; the openapi server checks the document's security"))]
    pub security: Option<serde_json::Value>,
    /// An overlay document (deprecated spelling). Refused: not supported yet.
    #[schemars(extend("x-unsupported" = "`overlay` is not supported yet by openapi-asyncapi bindings"))]
    pub overlay: Option<serde_json::Value>,
}

/// `options.specs.asyncapi.<label>`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AsyncapiSpec {
    /// Where the document is: one catalog, with the subject and version.
    #[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
    pub catalog: BTreeMap<String, CatalogSubject>,
    /// An overlay document (deprecated spelling). Refused: not supported yet.
    #[schemars(extend("x-unsupported" = "`overlay` is not supported yet by openapi-asyncapi bindings"))]
    pub overlay: Option<serde_json::Value>,
}

/// `catalog.<catalog>` of a spec.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogSubject {
    /// The subject the document is registered under.
    pub subject: String,
    /// Its version; `latest` by default.
    pub version: Option<String>,
    /// An overlay applied to the document. Refused: not supported yet.
    #[schemars(extend("x-unsupported" = "`overlay` is not supported yet by openapi-asyncapi bindings"))]
    pub overlay: Option<serde_json::Value>,
}

/// `when` of a route: the OpenAPI operations it takes; every key given must match.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenapiAsyncapiCondition {
    /// The OpenAPI label (a key of `options.specs.openapi`); every OpenAPI document when
    /// absent.
    pub spec: Option<String>,
    /// The `operationId`, `*` matching any characters; every operation when absent.
    pub operation: Option<String>,
    /// A tag the operation has.
    pub tag: Option<String>,
    /// Operations by server URL. Refused: not supported yet.
    #[schemars(extend("x-unsupported" = "routing by `servers` is not supported yet by openapi-asyncapi bindings"))]
    pub servers: Option<serde_json::Value>,
}

/// `with` of a route: the AsyncAPI operations the taken OpenAPI operations map onto.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("not" = {"required": ["operation", "tag"]}))]
pub struct OpenapiAsyncapiWith {
    /// The AsyncAPI label (a key of `options.specs.asyncapi`); may be left out when there is
    /// one.
    pub spec: Option<String>,
    /// One operation id: every taken OpenAPI operation maps onto it. With `*` (any
    /// characters), or when absent, each OpenAPI operation maps onto the AsyncAPI operation
    /// of the same id among those it matches.
    pub operation: Option<String>,
    /// Each OpenAPI operation maps onto the AsyncAPI operation of the same id among those
    /// with this tag.
    pub tag: Option<String>,
}

impl OpenapiAsyncapiWith {
    /// Whether each OpenAPI operation maps onto the AsyncAPI operation of its own id (Zilla's
    /// "bulk" mapping), rather than all onto `operation`.
    pub fn by_same_id(&self) -> bool {
        self.tag.is_some() || self.operation.as_deref().is_none_or(|op| op.contains('*'))
    }
}
