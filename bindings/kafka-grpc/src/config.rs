//! Options, route conditions and route parameters of the kafka-grpc binding, spelled as in
//! Zilla's `zilla.yaml`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use zilla_binding_grpc_kafka::config::{Correlation, CorrelationHeaders, Idempotency};
use zilla_binding_kafka::mapping::ProduceAcks;

/// `options` of a kafka-grpc `remote_server`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaGrpcOptions {
    /// Which replicas must have each reply record (default `in_sync_replicas`).
    #[serde(default)]
    pub acks: ProduceAcks,
    /// The metadata the request's idempotency key is passed to the service in.
    pub idempotency: Option<Idempotency>,
    /// The Kafka headers that carry a request and correlate its replies.
    pub correlation: Option<Correlation>,
}

impl KafkaGrpcOptions {
    /// The metadata name of the idempotency key, lower case.
    pub fn idempotency(&self) -> String {
        Idempotency::metadata_of(self.idempotency.as_ref())
    }

    /// The correlation header names.
    pub fn headers(&self) -> CorrelationHeaders {
        Correlation::headers_of(self.correlation.as_ref())
    }
}

/// One `when` entry: which request records a route serves.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaGrpcCondition {
    /// The topic requests are read from.
    pub topic: String,
    /// Only records with this key.
    pub key: Option<String>,
    /// Only records carrying these header values.
    pub headers: Option<BTreeMap<String, String>>,
    /// Only requests whose `zilla:reply-to` names this topic; replies go there.
    #[serde(rename = "reply-to")]
    pub reply_to: String,
    /// Only requests for this method, `pkg.Service/Method` (`*` wildcards allowed).
    #[schemars(regex(pattern = r"^[^/]+/[^/]+"))]
    pub method: Option<String>,
}

/// `with`: how the service is called.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaGrpcWith {
    /// `http` or `https`.
    pub scheme: String,
    /// The `:authority` of the calls (`host:port`).
    pub authority: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn zilla_shapes() {
        let options: KafkaGrpcOptions = serde_json::from_value(json!({
            "acks": "leader_only",
            "idempotency": {"metadata": "Idempotency-Key"},
            "correlation": {"headers": {"reply-to": "r"}}
        }))
        .unwrap();
        assert_eq!(options.acks, ProduceAcks::LeaderOnly);
        assert_eq!(options.idempotency(), "idempotency-key");
        assert_eq!(options.headers().reply_to, "r");
        assert_eq!(options.headers().service, "zilla:service");
        let when: KafkaGrpcCondition = serde_json::from_value(json!({
            "topic": "requests", "reply-to": "responses", "method": "example.EchoService/*",
            "key": "k", "headers": {"h": "v"}
        }))
        .unwrap();
        assert_eq!(when.reply_to, "responses");
        assert!(serde_json::from_value::<KafkaGrpcCondition>(json!({"topic": "t"})).is_err());
        assert!(serde_json::from_value::<KafkaGrpcWith>(json!({"scheme": "http"})).is_err());
    }
}
