//! Typed options of the schema-registry catalog, spelled as in Zilla's `zilla.yaml`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

/// `options` of a `schema-registry` (or `karapace`) catalog.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistryOptions {
    /// The registry's base URL, e.g. `http://localhost:8081`.
    pub url: String,
    /// The schema context; subjects outside `default` are qualified as `:.<context>:<subject>`.
    pub context: Option<String>,
    /// How long, in seconds, a subject's resolution is trusted before it is fetched again
    /// (default 300). Schemas by id never change and stay cached.
    #[serde(rename = "max-age")]
    pub max_age: Option<u64>,
    /// Trust and keys from a vault for TLS to the registry (not supported by this build: the
    /// load fails; an https registry is verified against the system trust store).
    pub tls: Option<serde_json::Value>,
    /// Credentials sent with every request.
    pub credentials: Option<Credentials>,
}

/// `credentials` of a registry catalog.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// Request headers: only `authorization`.
    pub headers: Option<BTreeMap<String, String>>,
}
