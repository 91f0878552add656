//! Typed route config of the sse-kafka binding, in Zilla's YAML shape. The binding has no
//! `options`.

use schemars::JsonSchema;
use serde::Deserialize;

/// One entry of `routes[].when`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SseKafkaCondition {
    /// The subscription path (without query string); `*` matches anything and `{name}`
    /// captures a value for `${params.name}`.
    pub path: Option<String>,
}

/// `routes[].with`: what to read from Kafka for a matching subscription.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SseKafkaWith {
    /// The topic to read; may use `${params.<name>}` and `${guarded['<guard>'].identity}`.
    pub topic: String,
    /// Records to deliver: any one filter must match (no filters: every record).
    pub filters: Option<Vec<SseKafkaFilter>>,
    /// How events are written.
    pub event: Option<SseKafkaEvent>,
}

/// A filter: all of its conditions must hold (the shape every Kafka mapping shares).
pub use zilla_binding_kafka::mapping::FetchFilter as SseKafkaFilter;

/// `with.event`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SseKafkaEvent {
    /// The event id: `${etag}` (default) or `["${base64(key)}","${etag}"]`.
    pub id: Option<EventIdFormat>,
}

/// The two event id forms Zilla offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
pub enum EventIdFormat {
    /// The encoded progress of every partition, plus `/etag` when the record has an `etag`
    /// header.
    #[default]
    #[serde(rename = "${etag}")]
    Etag,
    /// A JSON pair of the base64url record key and the `${etag}` id.
    #[serde(rename = "[\"${base64(key)}\",\"${etag}\"]")]
    KeyAndEtag,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zilla_route_shapes() {
        let with: SseKafkaWith = serde_json::from_value(serde_json::json!({
            "topic": "events-${params.id}",
            "filters": [
                {"key": "${params.id}", "headers": {"tag": "${params.tag}"}},
                {"headers": {"zilla:identity": "${guarded['jwt0'].identity}"}}
            ],
            "event": {"id": "[\"${base64(key)}\",\"${etag}\"]"}
        }))
        .unwrap();
        assert_eq!(with.topic, "events-${params.id}");
        assert_eq!(with.filters.as_ref().map(Vec::len), Some(2));
        assert_eq!(
            with.event.and_then(|e| e.id),
            Some(EventIdFormat::KeyAndEtag)
        );

        let with: SseKafkaWith = serde_json::from_value(serde_json::json!({
            "topic": "t", "event": {"id": "${etag}"}
        }))
        .unwrap();
        assert_eq!(with.event.and_then(|e| e.id), Some(EventIdFormat::Etag));
    }

    #[test]
    fn rejects_what_zilla_rejects() {
        for bad in [
            serde_json::json!({"filters": []}),
            serde_json::json!({"topic": "t", "extra": 1}),
            serde_json::json!({"topic": "t", "filters": [{"value": "x"}]}),
            serde_json::json!({"topic": "t", "event": {"id": "${key}"}}),
        ] {
            assert!(
                serde_json::from_value::<SseKafkaWith>(bad.clone()).is_err(),
                "{bad}"
            );
        }
        assert!(
            serde_json::from_value::<SseKafkaCondition>(serde_json::json!({"method": "GET"}))
                .is_err()
        );
    }
}
