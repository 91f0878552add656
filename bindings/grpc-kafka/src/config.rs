//! Options and route parameters of the grpc-kafka binding, spelled as in Zilla's `zilla.yaml`.
//! Route conditions are the `grpc` binding's (`method`, `metadata`).

use schemars::JsonSchema;
use serde::Deserialize;
use zilla_binding_kafka::mapping::{FetchFilter, OrderedStrings, ProduceAcks};

/// `options` of a grpc-kafka `proxy`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrpcKafkaOptions {
    /// How fetched messages carry their message id, and how clients hand it back.
    pub reliability: Option<Reliability>,
    /// Where a produce call's idempotency key comes from.
    pub idempotency: Option<Idempotency>,
    /// The Kafka headers that carry a produced call and correlate it with its replies.
    pub correlation: Option<Correlation>,
}

/// `options.reliability`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reliability {
    /// The protobuf field number (bytes) added to each fetched message, holding its message
    /// id (default 32767).
    #[serde(default = "default_field")]
    #[schemars(range(min = 1, max = 536_870_911))]
    pub field: u32,
    /// The request metadata a reconnecting client sends its last message id in (default
    /// `last-message-id`).
    #[serde(default = "default_last_message_id")]
    pub metadata: String,
}

/// `options.idempotency`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Idempotency {
    /// The request metadata holding the idempotency key (default `idempotency-key`).
    #[serde(default = "default_idempotency")]
    pub metadata: String,
}

/// `options.correlation`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Correlation {
    /// The Kafka header names.
    pub headers: CorrelationHeaders,
}

/// `options.correlation.headers`: Kafka header names, shared with `kafka-grpc`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorrelationHeaders {
    /// The header naming the gRPC service (default `zilla:service`).
    #[serde(default = "default_service")]
    pub service: String,
    /// The header naming the gRPC method (default `zilla:method`).
    #[serde(default = "default_method")]
    pub method: String,
    /// The header carrying the correlation id (default `zilla:correlation-id`).
    #[serde(rename = "correlation-id", default = "default_correlation_id")]
    pub correlation_id: String,
    /// The header naming the reply topic (default `zilla:reply-to`).
    #[serde(rename = "reply-to", default = "default_reply_to")]
    pub reply_to: String,
}

impl Default for CorrelationHeaders {
    fn default() -> Self {
        Self {
            service: default_service(),
            method: default_method(),
            correlation_id: default_correlation_id(),
            reply_to: default_reply_to(),
        }
    }
}

/// The default reliability field number.
pub const DEFAULT_FIELD: u32 = 32767;

fn default_field() -> u32 {
    DEFAULT_FIELD
}

fn default_last_message_id() -> String {
    "last-message-id".to_owned()
}

fn default_idempotency() -> String {
    "idempotency-key".to_owned()
}

fn default_service() -> String {
    "zilla:service".to_owned()
}

fn default_method() -> String {
    "zilla:method".to_owned()
}

fn default_correlation_id() -> String {
    "zilla:correlation-id".to_owned()
}

fn default_reply_to() -> String {
    "zilla:reply-to".to_owned()
}

impl GrpcKafkaOptions {
    /// The reliability field number.
    pub fn field(&self) -> u32 {
        self.reliability.as_ref().map_or(DEFAULT_FIELD, |r| r.field)
    }

    /// The metadata name of the last message id, lower case.
    pub fn last_message_id(&self) -> String {
        self.reliability
            .as_ref()
            .map_or_else(default_last_message_id, |r| r.metadata.clone())
            .to_ascii_lowercase()
    }

    /// The metadata name of the idempotency key, lower case.
    pub fn idempotency(&self) -> String {
        Idempotency::metadata_of(self.idempotency.as_ref())
    }

    /// The correlation header names.
    pub fn headers(&self) -> CorrelationHeaders {
        Correlation::headers_of(self.correlation.as_ref())
    }
}

impl Idempotency {
    /// The metadata name of the idempotency key `idempotency` gives (the default when
    /// absent), lower case. Shared with `kafka-grpc`.
    pub fn metadata_of(idempotency: Option<&Self>) -> String {
        idempotency
            .map_or_else(default_idempotency, |i| i.metadata.clone())
            .to_ascii_lowercase()
    }
}

impl Correlation {
    /// The header names `correlation` gives (the defaults when absent). Shared with
    /// `kafka-grpc`.
    pub fn headers_of(correlation: Option<&Self>) -> CorrelationHeaders {
        correlation.map(|c| c.headers.clone()).unwrap_or_default()
    }
}

/// `with`: what a matched call does on Kafka.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(tag = "capability", rename_all = "lowercase")]
pub enum GrpcKafkaWith {
    /// Answer a (server-streaming) call with the records of a topic.
    Fetch(FetchWith),
    /// Produce the request messages to a topic and answer with the correlated replies.
    Produce(ProduceWith),
}

/// `with` of a `fetch` route.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FetchWith {
    /// The topic.
    pub topic: String,
    /// ORed filters; a record must match one of them.
    pub filters: Option<Vec<FetchFilter>>,
}

/// `with` of a `produce` route.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProduceWith {
    /// The topic request messages are produced to.
    pub topic: String,
    /// Which replicas must have each record (default `in_sync_replicas`).
    #[serde(default)]
    pub acks: ProduceAcks,
    /// The record key (default: the correlation id); may use guard values.
    pub key: Option<String>,
    /// Kafka headers added to each record; values may use guard values.
    pub overrides: Option<OrderedStrings>,
    /// The topic replies come back on. Without it the call is one-way: answered with one
    /// empty message once Kafka acknowledged every request message.
    #[serde(rename = "reply-to")]
    pub reply_to: Option<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn zilla_shapes() {
        let options: GrpcKafkaOptions = serde_json::from_value(json!({
            "reliability": {"field": 32767, "metadata": "Last-Message-Id"},
            "idempotency": {"metadata": "idempotency-key"},
            "correlation": {"headers": {"service": "s", "correlation-id": "c"}}
        }))
        .unwrap();
        assert_eq!(options.field(), 32767);
        assert_eq!(options.last_message_id(), "last-message-id");
        let headers = options.headers();
        assert_eq!(
            (
                headers.service.as_str(),
                headers.method.as_str(),
                headers.correlation_id.as_str(),
                headers.reply_to.as_str()
            ),
            ("s", "zilla:method", "c", "zilla:reply-to")
        );
        let produce: GrpcKafkaWith = serde_json::from_value(json!({
            "capability": "produce", "topic": "requests", "acks": "leader_only",
            "key": "k", "overrides": {"zilla:identity": "x"}, "reply-to": "responses"
        }))
        .unwrap();
        assert!(matches!(
            produce,
            GrpcKafkaWith::Produce(ProduceWith {
                acks: ProduceAcks::LeaderOnly,
                ..
            })
        ));
        let fetch: GrpcKafkaWith = serde_json::from_value(json!({
            "capability": "fetch", "topic": "messages",
            "filters": [{"key": "k", "headers": {"h": "v"}}]
        }))
        .unwrap();
        assert!(matches!(fetch, GrpcKafkaWith::Fetch(_)));
        for bad in [
            json!({"capability": "fetch", "topic": "t", "acks": "none"}),
            json!({"capability": "produce", "topic": "t", "filters": []}),
            json!({"capability": "merge", "topic": "t"}),
        ] {
            assert!(
                serde_json::from_value::<GrpcKafkaWith>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }
}
