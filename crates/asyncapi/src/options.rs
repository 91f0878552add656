//! The options and routes of an `asyncapi` binding, spelled as Zilla spells them, as far as the
//! generator reads them. Keys it does not implement are refused (`deny_unknown_fields`), never
//! skipped.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `options` of an `asyncapi` binding.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsyncapiOptions {
    /// The documents, by label (the name routes use in `spec`).
    pub specs: BTreeMap<String, SpecOptions>,
    /// Proxy: which channels of the Kafka document hold the MQTT broker's state, when its
    /// channels do not say so with `x-zilla-mqtt-kafka`.
    #[serde(rename = "mqtt-kafka")]
    pub mqtt_kafka: Option<MqttKafkaOptions>,
}

/// `options.specs.<label>`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecOptions {
    /// Where the document comes from (`<catalog>: {subject, version}`). The caller reads the
    /// document and hands it over parsed; the generator does not read this.
    pub catalog: Option<serde_json::Value>,
    /// The servers of the document to use, by URL (`mqtt://localhost:7183`, `*` wildcards) or
    /// by name; all when absent.
    pub servers: Option<Vec<String>>,
    /// One server, by URL or name (the spelling of Zilla's examples).
    pub server: Option<String>,
}

/// `options.mqtt-kafka`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttKafkaOptions {
    /// The channels, by id in the Kafka document.
    pub channels: MqttKafkaChannels,
}

/// `options.mqtt-kafka.channels`.
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsyncapiCondition {
    /// The document label (`api-id` in Zilla 0.9).
    #[serde(alias = "api-id")]
    pub spec: String,
    /// The operation id, `*` wildcards allowed; every operation when absent
    /// (`operation-id` in Zilla 0.9).
    #[serde(alias = "operation-id")]
    pub operation: Option<String>,
}

/// `with` of an `asyncapi` proxy route.
#[derive(Debug, Clone, Deserialize)]
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
            json!({"specs": {"a": {"security": {}}}}),
            json!({"specs": {}, "tls": {}}),
        ] {
            let error = serde_json::from_value::<AsyncapiOptions>(refused).unwrap_err();
            assert!(error.to_string().contains("unknown field"), "{error}");
        }
    }
}
