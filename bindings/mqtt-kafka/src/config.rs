//! Typed options and routes of the mqtt-kafka binding, in Zilla 2.x's YAML shape.

use schemars::JsonSchema;
use serde::Deserialize;

/// `options` of an mqtt-kafka proxy.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttKafkaOptions {
    /// The server reference announced to clients for redirection between gateways.
    #[schemars(extend("x-unsupported" = "mqtt-kafka `server` (redirection between gateways) is not supported yet"))]
    pub server: Option<String>,
    /// The Kafka topics the broker's state lives in.
    pub topics: MqttKafkaTopics,
    /// Topic patterns with an `{identity}` capture (e.g. `place/{identity}/#`): the captured
    /// level is the partitioning key of the messages published to a matching topic.
    pub clients: Option<Vec<String>>,
    /// Limits on publishing.
    pub publish: Option<MqttKafkaPublish>,
}

/// `options.topics`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttKafkaTopics {
    /// The log-compacted topic holding session records (takeover signals, wills).
    pub sessions: String,
    /// The topic messages are published to and read from (unless a route says otherwise).
    pub messages: String,
    /// The log-compacted topic holding the retained message of every MQTT topic.
    pub retained: String,
}

/// `options.publish`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttKafkaPublish {
    /// The highest QoS clients may publish at.
    #[serde(rename = "qosMax")]
    pub qos_max: Option<QosName>,
}

/// A QoS level as written in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum QosName {
    /// QoS 0.
    AtMostOnce,
    /// QoS 1.
    AtLeastOnce,
    /// QoS 2.
    ExactlyOnce,
}

/// A route condition: the MQTT topics published to, or the topic filters subscribed to.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttKafkaCondition {
    /// Topic names published to (`+` and `#` wildcards).
    pub publish: Option<Vec<MqttKafkaTopicCondition>>,
    /// Topic filters subscribed to (`+` and `#` wildcards, matched against the filter's text).
    pub subscribe: Option<Vec<MqttKafkaTopicCondition>>,
}

/// A publish or subscribe condition.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttKafkaTopicCondition {
    /// The topic pattern.
    pub topic: String,
}

/// `routes[].with`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttKafkaWith {
    /// The Kafka topic the route's messages are published to and read from, instead of
    /// `options.topics.messages`.
    pub messages: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zilla_shapes() {
        let options: MqttKafkaOptions = serde_json::from_value(serde_json::json!({
            "topics": {"sessions": "s", "messages": "m", "retained": "r"},
            "clients": ["place/{identity}/#"],
            "publish": {"qosMax": "at_least_once"}
        }))
        .unwrap();
        assert_eq!(options.topics.messages, "m");
        assert_eq!(
            options.publish.and_then(|publish| publish.qos_max),
            Some(QosName::AtLeastOnce)
        );
        let condition: MqttKafkaCondition = serde_json::from_value(serde_json::json!({
            "publish": [{"topic": "place/+/device/#"}],
            "subscribe": [{"topic": "place/#"}]
        }))
        .unwrap();
        assert_eq!(condition.publish.map(|list| list.len()), Some(1));
        let with: MqttKafkaWith =
            serde_json::from_value(serde_json::json!({"messages": "devices"})).unwrap();
        assert_eq!(with.messages.as_deref(), Some("devices"));
    }

    #[test]
    fn rejects_what_zilla_rejects() {
        for bad in [
            serde_json::json!({"topics": {"sessions": "s", "messages": "m"}}),
            serde_json::json!({"topics": {"sessions": "s", "messages": "m", "retained": "r"},
                               "publish": {"qosMax": 2}}),
            serde_json::json!({"topics": {"sessions": "s", "messages": "m", "retained": "r"},
                               "extra": true}),
        ] {
            assert!(
                serde_json::from_value::<MqttKafkaOptions>(bad.clone()).is_err(),
                "{bad}"
            );
        }
        assert!(
            serde_json::from_value::<MqttKafkaCondition>(
                serde_json::json!({"session": [{"client-id": "*"}]})
            )
            .is_err()
        );
    }
}
