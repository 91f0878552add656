//! Typed options and route conditions of the sse binding.

use schemars::JsonSchema;
use serde::Deserialize;

/// The reconnection time written to subscribers when `retry` is not set, in milliseconds.
pub const DEFAULT_RETRY: u64 = 2000;

/// `options` of an sse binding.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SseOptions {
    /// Server: the reconnection time sent to subscribers (`retry:` field), in milliseconds
    /// (default 2000).
    pub retry: Option<u64>,
    /// Server: the models that the data of events sent on a path must satisfy; an event that
    /// fails is dropped.
    pub requests: Option<Vec<SseRequestConfig>>,
}

/// A model for the events of one path.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SseRequestConfig {
    /// The path the model applies to (`*` wildcards, `{name}` parameters).
    pub path: String,
    /// The model of event data (a model reference, e.g. `{model: json, catalog: ...}`).
    pub content: serde_json::Value,
}

/// A route condition of an sse binding.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SseCondition {
    /// The path, without query string (`*` wildcards, `{name}` parameters).
    pub path: Option<String>,
}
