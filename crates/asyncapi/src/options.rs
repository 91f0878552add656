//! The options and routes of an `asyncapi` binding, spelled as Zilla spells them, as far as the
//! generator reads them. Keys it does not implement are refused (`deny_unknown_fields`), never
//! skipped.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

impl AsyncapiOptions {
    /// The keys Zilla documents that are set here and not supported, by config path.
    pub fn unsupported(&self) -> Vec<String> {
        let mut keys: Vec<String> = [
            ("tcp", self.tcp.is_some()),
            ("tls", self.tls.is_some()),
            ("http", self.http.is_some()),
            ("mqtt", self.mqtt.is_some()),
            ("kafka", self.kafka.is_some()),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(key, _)| format!("options.{key}"))
        .collect();
        for (label, spec) in &self.specs {
            if spec.security.is_some() {
                keys.push(format!("options.specs.{label}.security"));
            }
            for (catalog, subject) in spec.catalog.iter().flatten() {
                if subject.overlay.is_some() {
                    keys.push(format!("options.specs.{label}.catalog.{catalog}.overlay"));
                }
            }
        }
        keys
    }
}

/// `options` of an `asyncapi` binding.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AsyncapiOptions {
    /// The documents, by label (the name routes use in `spec`).
    #[schemars(extend("minProperties" = 1))]
    pub specs: BTreeMap<String, SpecOptions>,
    /// Options of the generated tcp servers. Refused: not supported yet.
    #[schemars(extend("x-unsupported" = "`tcp` options are not supported yet by asyncapi bindings: the servers listen where the document's server URLs say"))]
    pub tcp: Option<serde_json::Value>,
    /// TLS of secure servers. Refused: not supported yet.
    #[schemars(extend("x-unsupported" = "`tls` (secure servers) is not supported yet by asyncapi bindings"))]
    pub tls: Option<serde_json::Value>,
    /// Authorization of the generated http server. Refused: not supported yet.
    #[schemars(extend("x-unsupported" = "`http` options (authorization) are not supported yet by asyncapi bindings"))]
    pub http: Option<serde_json::Value>,
    /// Authorization and store of the generated mqtt server. Refused: not supported yet.
    #[schemars(extend("x-unsupported" = "`mqtt` options (authorization, store) are not supported yet by asyncapi bindings"))]
    pub mqtt: Option<serde_json::Value>,
    /// SASL and topic settings of the generated kafka bindings. Refused: not supported yet.
    #[schemars(extend("x-unsupported" = "`kafka` options (sasl, topics) are not supported yet by asyncapi bindings"))]
    pub kafka: Option<serde_json::Value>,
    /// Proxy: which channels of the Kafka document hold the MQTT broker's state, when its
    /// channels do not say so with `x-zilla-mqtt-kafka`.
    #[serde(rename = "mqtt-kafka")]
    pub mqtt_kafka: Option<MqttKafkaOptions>,
}

/// `options.specs.<label>`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpecOptions {
    /// Where the document comes from (`<catalog>: {subject, version}`, one catalog). The
    /// caller reads the document and hands it over parsed; the generator does not read this.
    #[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
    pub catalog: Option<BTreeMap<String, CatalogSubject>>,
    /// The servers of the document to use, by URL (`mqtt://localhost:7183`, `*` wildcards) or
    /// by name; all when absent.
    pub servers: Option<Vec<String>>,
    /// One server, by URL or name (the spelling of Zilla's examples).
    pub server: Option<String>,
    /// Security schemes bound to guards. Refused: not supported yet.
    #[schemars(extend("x-unsupported" = "`security` (guards for the document's security schemes) is not supported yet by asyncapi bindings"))]
    pub security: Option<serde_json::Value>,
}

/// `options.specs.<label>.catalog.<catalog>`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogSubject {
    /// The subject the document is registered under.
    pub subject: String,
    /// Its version; `latest` by default.
    pub version: Option<String>,
    /// An overlay applied to the document. Refused: not supported yet.
    #[schemars(extend("x-unsupported" = "`overlay` is not supported yet by asyncapi bindings"))]
    pub overlay: Option<serde_json::Value>,
}

/// `options.mqtt-kafka`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttKafkaOptions {
    /// The channels, by id in the Kafka document.
    pub channels: MqttKafkaChannels,
}

/// `options.mqtt-kafka.channels`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttKafkaChannels {
    /// The channel of session state.
    pub sessions: String,
    /// The channel of messages.
    pub messages: String,
    /// The channel of retained messages.
    pub retained: String,
}

/// A route of an `asyncapi` proxy.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AsyncapiRoute {
    /// Operations of the entry-side document this route takes.
    #[serde(default)]
    pub when: Vec<AsyncapiCondition>,
    /// The `asyncapi` client binding the route leads to.
    pub exit: String,
    /// The operation of the Kafka-side document the taken operations map to.
    pub with: AsyncapiWith,
}

/// `when` of an `asyncapi` proxy route.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AsyncapiCondition {
    /// The document label (`api-id` in Zilla 0.9).
    #[serde(alias = "api-id")]
    pub spec: String,
    /// The operation id, `*` wildcards allowed; every operation when absent
    /// (`operation-id` in Zilla 0.9).
    #[serde(alias = "operation-id")]
    pub operation: Option<String>,
    /// Operations by tag. Refused: not supported yet.
    #[schemars(extend("x-unsupported" = "routing by `tag` is not supported yet by asyncapi bindings"))]
    pub tag: Option<serde_json::Value>,
}

/// `with` of an `asyncapi` proxy route.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AsyncapiWith {
    /// The document label of the Kafka side (`api-id` in Zilla 0.9).
    #[serde(alias = "api-id")]
    pub spec: String,
    /// The Kafka-side operation; the one with the same id as the entry-side operation when
    /// absent (`operation-id` in Zilla 0.9).
    #[serde(alias = "operation-id")]
    pub operation: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn zilla_spelling() {
        let options: AsyncapiOptions = serde_json::from_value(json!({
            "specs": {
                "mqtt_api": {"servers": ["mqtt://localhost:7183"], "catalog": {"c": {"subject": "s"}}},
                "kafka_api": {"server": "kafka://localhost:9092"}
            },
            "mqtt-kafka": {"channels": {"sessions": "s", "messages": "m", "retained": "r"}}
        }))
        .unwrap();
        assert_eq!(options.specs.len(), 2);
        assert_eq!(options.mqtt_kafka.unwrap().channels.retained, "r");
        let route: AsyncapiRoute = serde_json::from_value(json!({
            "when": [{"api-id": "mqtt_api", "operation-id": "send*"}],
            "exit": "client",
            "with": {"spec": "kafka_api", "operation": "produce"}
        }))
        .unwrap();
        assert_eq!(route.when[0].spec, "mqtt_api");
        assert_eq!(route.with.operation.as_deref(), Some("produce"));
        for refused in [
            json!({"specs": {"a": {"secret": {}}}}),
            json!({"specs": {}, "store": {}}),
        ] {
            let error = serde_json::from_value::<AsyncapiOptions>(refused).unwrap_err();
            assert!(error.to_string().contains("unknown field"), "{error}");
        }
    }
}
