//! Typed options of the kafka binding, in Zilla's YAML shape (2.x, with the 1.x `sasl` form
//! still accepted).

use schemars::JsonSchema;
use serde::Deserialize;

/// `options` of a kafka binding (every kind shares one shape, as in Zilla).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaOptions {
    /// client: bootstrap servers as `host:port`. Without it, brokers are reached through the
    /// exit's own `host`/`port` options, as Zilla 1.x did.
    pub servers: Option<Vec<String>>,
    /// cache_server: topics fetched from start-up, even with no subscriber.
    pub bootstrap: Option<Vec<String>>,
    /// Per-topic settings.
    pub topics: Option<Vec<TopicOptions>>,
    /// client: SASL credentials (Zilla 1.x form).
    pub sasl: Option<SaslOptions>,
    /// client: SASL credentials from a guard (Zilla 2.x form): `{<guard>: {credentials:
    /// {mechanism, username, password}}}`, or `{mechanism: oauthbearer, token}`, where
    /// `{identity}` and `{credentials}` in `username`, `password` and `token` are the guard's
    /// configured identity and secret.
    #[schemars(extend("maxProperties" = 1))]
    pub authorization: Option<std::collections::BTreeMap<String, KafkaAuthorization>>,
    /// Deprecated in Zilla; accepted and ignored.
    pub merged: Option<Vec<String>>,
    /// Schema catalog references for topics. Refused at load: not supported yet.
    #[schemars(extend("x-unsupported" = "kafka `catalog` references are not supported yet"))]
    pub catalog: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Settings of one topic.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TopicOptions {
    /// The topic name.
    pub name: String,
    /// Where subscribers that give no offset start: `live` or `historical` (default).
    #[serde(rename = "defaultOffset")]
    pub default_offset: Option<DefaultOffset>,
    /// `none` (default) or `json_patch`. Refused at load: not supported yet.
    #[schemars(extend("x-unsupported" = "kafka topic `deltaType` is not supported yet; values are delivered whole"))]
    #[serde(rename = "deltaType")]
    pub delta_type: Option<DeltaType>,
    /// The key's model: cache_client encodes produced keys with it, cache_server decodes
    /// keys read from Kafka (see [`crate::models`]).
    pub key: Option<serde_json::Value>,
    /// The value's model, applied as the key's.
    pub value: Option<serde_json::Value>,
    /// cache_server: record transforms (`extract-key`, `extract-headers`) applied as records
    /// enter the cache (see [`crate::transforms`]).
    #[schemars(length(min = 1, max = 2))]
    pub transforms: Option<Vec<TransformConfig>>,
}

/// One entry of `transforms`: exactly one of its two members.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    /// `${message.key.<field>}` or `${message.value.<field>}`: the record's new key.
    #[serde(rename = "extract-key")]
    #[schemars(regex(pattern = r"^\$\{message\.(key|value)\.([A-Za-z_][A-Za-z0-9_]*)\}$"))]
    pub extract_key: Option<String>,
    /// Header name → `${message.key.<field>}` or `${message.value.<field>}`: headers added.
    #[serde(rename = "extract-headers")]
    pub extract_headers: Option<std::collections::BTreeMap<String, String>>,
}

/// `defaultOffset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DefaultOffset {
    /// From now on.
    Live,
    /// Everything retained.
    Historical,
}

/// `deltaType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeltaType {
    /// Whole values.
    None,
    /// JSON patches between values.
    JsonPatch,
}

/// One guard's entry of `authorization`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaAuthorization {
    /// The SASL credentials, with `{identity}` / `{credentials}` templates.
    pub credentials: KafkaCredentials,
}

/// The SASL credentials of `authorization`: `username` and `password` for `plain` and the
/// SCRAM mechanisms, `token` for `oauthbearer` (as Zilla's schema, one shape or the other; a
/// mix is refused at load).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaCredentials {
    /// `plain`, `scram-sha-1`, `scram-sha-256`, `scram-sha-512` or `oauthbearer`.
    pub mechanism: SaslMechanism,
    /// The user (not with `oauthbearer`).
    pub username: Option<String>,
    /// The password (not with `oauthbearer`).
    pub password: Option<String>,
    /// The bearer token (`oauthbearer` only).
    pub token: Option<String>,
}

/// SASL credentials.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SaslOptions {
    /// `plain`, `scram-sha-1`, `scram-sha-256` or `scram-sha-512`.
    pub mechanism: SaslMechanism,
    /// The user.
    pub username: String,
    /// The password.
    pub password: String,
}

/// A SASL mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum SaslMechanism {
    /// PLAIN.
    #[serde(rename = "plain")]
    Plain,
    /// SCRAM-SHA-1.
    #[serde(rename = "scram-sha-1")]
    ScramSha1,
    /// SCRAM-SHA-256.
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// SCRAM-SHA-512.
    #[serde(rename = "scram-sha-512")]
    ScramSha512,
    /// OAUTHBEARER (RFC 7628): a bearer token, in `authorization` only.
    #[serde(rename = "oauthbearer")]
    OauthBearer,
}

/// A route condition of the cache kinds.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaCondition {
    /// The topic, `*` and `{param}` wildcards allowed.
    pub topic: Option<String>,
}

impl KafkaOptions {
    /// The settings of `topic`, if configured.
    pub fn topic(&self, topic: &str) -> Option<&TopicOptions> {
        self.topics.as_ref()?.iter().find(|t| t.name == topic)
    }
}
