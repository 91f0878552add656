//! Typed options and route conditions of the ws binding.

use schemars::JsonSchema;
use serde::Deserialize;

/// `options` of a ws binding (client only).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WsOptions {
    /// What a session opened on the client uses where its own request leaves a field empty.
    pub defaults: Option<WsDefaults>,
}

/// Defaults of the client's upgrade request.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WsDefaults {
    /// The subprotocol to ask for.
    pub protocol: Option<String>,
    /// `http` or `https` (`ws`/`wss` also accepted).
    pub scheme: Option<String>,
    /// The authority (`host[:port]`) to ask for.
    pub authority: Option<String>,
    /// The path to ask for.
    pub path: Option<String>,
}

/// A route condition of a ws binding; all given fields must match (`*` wildcards and
/// `{name}` parameters).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WsCondition {
    /// The subprotocol.
    pub protocol: Option<String>,
    /// The scheme.
    pub scheme: Option<String>,
    /// The authority.
    pub authority: Option<String>,
    /// The path, including the query string.
    pub path: Option<String>,
}
