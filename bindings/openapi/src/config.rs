//! Typed options and route conditions of the openapi binding, spelled as in Zilla's
//! `zilla.yaml`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

/// `options` of an openapi `server` or `client`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenapiOptions {
    /// TLS for `https` servers. Refused at load: not supported yet.
    #[schemars(extend("x-unsupported" = "`tls` (https servers) is not supported yet by openapi bindings"))]
    pub tls: Option<serde_json::Value>,
    /// HTTP settings of the generated http server.
    pub http: Option<HttpOptions>,
    /// The documents, by a name routes use as `spec`.
    #[schemars(extend("minProperties" = 1))]
    pub specs: BTreeMap<String, SpecConfig>,
}

/// `options.http`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpOptions {
    /// The guard that authorizes requests (at most one) and where requests carry its
    /// credentials, as an http server's `authorization` (server kind only).
    #[schemars(extend("maxProperties" = 1))]
    pub authorization: Option<BTreeMap<String, serde_json::Value>>,
}

/// One entry of `options.specs`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpecConfig {
    /// The base URLs to serve (server) or call (client): a URL is used as it is; one with `*`
    /// (matching any characters) selects the document's servers it matches, as the document
    /// writes them with variables at their defaults; all of the document's servers when absent.
    #[schemars(extend("minItems" = 1))]
    pub servers: Option<Vec<String>>,
    /// The guard each security scheme of the document is checked by, by scheme name.
    pub security: Option<BTreeMap<String, String>>,
    /// Where the document is: one catalog, with the subject and version.
    #[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
    pub catalog: BTreeMap<String, CatalogSubject>,
    /// An overlay document. Refused at load: not supported yet.
    #[schemars(extend("x-unsupported" = "`overlay` is not supported yet by openapi bindings"))]
    pub overlay: Option<serde_json::Value>,
}

/// `catalog.<name>` of a spec.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogSubject {
    /// The subject the document is registered under.
    pub subject: String,
    /// Its version; `latest` by default.
    pub version: Option<String>,
}

/// A route condition of an openapi `server`: every key given must match.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenapiCondition {
    /// The spec name (a key of `options.specs`).
    pub spec: Option<String>,
    /// The operationId, `*` matching any characters.
    pub operation: Option<String>,
    /// A tag of the operation.
    pub tag: Option<String>,
    /// Server URLs. Refused at load: not supported yet.
    #[schemars(extend("x-unsupported" = "routing by `servers` is not supported yet by openapi bindings"))]
    pub servers: Option<serde_json::Value>,
}
