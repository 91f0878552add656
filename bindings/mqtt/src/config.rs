//! Typed options and route conditions of the mqtt binding.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

/// `options` of an mqtt server.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttOptions {
    /// Protocol versions accepted (`v3.1.1`, `v5`); all when absent.
    pub versions: Option<Vec<MqttVersionName>>,
    /// The store (top-level `stores`) that records which connection owns each client
    /// identifier; a store of the server's own when absent.
    pub store: Option<String>,
    /// One guard, by name, and where CONNECT carries its credentials.
    pub authorization: Option<BTreeMap<String, MqttAuthorization>>,
    /// Topics whose publications are checked by a model: the first entry whose `name` (`+`
    /// and `#` wildcards) matches a PUBLISH topic applies.
    pub topics: Option<Vec<MqttTopicConfig>>,
}

/// One entry of `options.topics`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttTopicConfig {
    /// The topic filter.
    pub name: String,
    /// The model the payload must pass (`json`, `{model: json, catalog: ...}`, ...); a
    /// publication that fails it is refused with 0x99 (payload format invalid).
    pub content: Option<serde_json::Value>,
}

/// A protocol version as written in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum MqttVersionName {
    /// MQTT 3.1.1.
    #[serde(rename = "v3.1.1")]
    V3_1_1,
    /// MQTT 5.
    #[serde(rename = "v5")]
    V5,
}

/// How a guard authorizes sessions.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttAuthorization {
    /// Where the credentials are.
    pub credentials: MqttCredentials,
}

/// Where the credentials are.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttCredentials {
    /// In CONNECT.
    pub connect: MqttConnectCredentials,
}

/// A pattern over the CONNECT user name or password, with a `{credentials}` capture: e.g.
/// `Bearer {credentials}`. Exactly one of the two.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttConnectCredentials {
    /// A pattern over the user name.
    pub username: Option<String>,
    /// A pattern over the password.
    pub password: Option<String>,
}

/// A route condition of an mqtt server; a route matches a session unless it lists sessions
/// none of which match, and matches a publish or subscribe only when it lists a matching
/// topic.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttCondition {
    /// Client identifiers (`*` wildcards).
    pub session: Option<Vec<MqttSessionCondition>>,
    /// Topic names published to (`+` and `#` wildcards).
    pub publish: Option<Vec<MqttTopicCondition>>,
    /// Topic filters subscribed to (`+` and `#` wildcards, matched against the filter's text).
    pub subscribe: Option<Vec<MqttTopicCondition>>,
}

/// A session condition.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttSessionCondition {
    /// The client identifier pattern (default `*`).
    #[serde(rename = "client-id")]
    pub client_id: Option<String>,
}

/// A publish or subscribe condition.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttTopicCondition {
    /// The topic pattern.
    pub topic: String,
}
