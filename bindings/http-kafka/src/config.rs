//! Options, route conditions and route parameters of the http-kafka binding, spelled as in
//! Zilla's `zilla.yaml`.

use schemars::JsonSchema;
use serde::Deserialize;

pub use zilla_binding_kafka::mapping::{FetchFilter, OrderedStrings, ProduceAcks};

/// `options` of an http-kafka `proxy`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpKafkaOptions {
    /// Where a produce request's idempotency key comes from.
    pub idempotency: Option<Idempotency>,
    /// The Kafka headers that correlate a request with its reply.
    pub correlation: Option<Correlation>,
}

impl HttpKafkaOptions {
    /// The request header holding the idempotency key, lower case.
    pub fn idempotency_header(&self) -> String {
        self.idempotency
            .as_ref()
            .map_or_else(default_idempotency_header, |idempotency| {
                idempotency.header.clone()
            })
            .to_ascii_lowercase()
    }

    /// The Kafka header naming the reply topic.
    pub fn reply_to_header(&self) -> String {
        self.correlation
            .as_ref()
            .map_or_else(default_reply_to, |c| c.headers.reply_to.clone())
    }

    /// The Kafka header carrying the correlation id.
    pub fn correlation_id_header(&self) -> String {
        self.correlation
            .as_ref()
            .map_or_else(default_correlation_id, |c| c.headers.correlation_id.clone())
    }
}

/// `options.idempotency`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Idempotency {
    /// The HTTP request header holding the idempotency key (default `idempotency-key`).
    pub header: String,
}

/// `options.correlation`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Correlation {
    /// The Kafka header names used for request/reply correlation.
    pub headers: CorrelationHeaders,
}

/// `options.correlation.headers`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorrelationHeaders {
    /// The Kafka header naming the topic a reply goes to (default `zilla:reply-to`).
    #[serde(rename = "reply-to", default = "default_reply_to")]
    pub reply_to: String,
    /// The Kafka header carrying the correlation id (default `zilla:correlation-id`).
    #[serde(rename = "correlation-id", default = "default_correlation_id")]
    pub correlation_id: String,
}

fn default_idempotency_header() -> String {
    "idempotency-key".to_owned()
}

fn default_reply_to() -> String {
    "zilla:reply-to".to_owned()
}

fn default_correlation_id() -> String {
    "zilla:correlation-id".to_owned()
}

/// One `when` entry: every field given must match.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpKafkaCondition {
    /// The request method (`*` wildcards allowed).
    pub method: Option<String>,
    /// The request path without its query. `*` matches any characters and `{name}` captures
    /// one or more characters (slashes included) for `${params.name}`.
    #[schemars(regex(pattern = r"^/"))]
    pub path: Option<String>,
}

/// `with`: what a matched request does on Kafka.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(tag = "capability", rename_all = "lowercase")]
pub enum HttpKafkaWith {
    /// Read the latest value of one item, or of every item as a JSON array.
    Fetch(FetchWith),
    /// Write the request body as one record, optionally waiting for a reply.
    Produce(ProduceWith),
}

/// `with` of a `fetch` route.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FetchWith {
    /// The topic; may use `${params.name}` and guard values.
    pub topic: String,
    /// ORed filters; a record must match one of them.
    pub filters: Option<Vec<FetchFilter>>,
    /// Answer with every latest value merged into one document.
    pub merge: Option<Merge>,
}

/// `with.merge` of a `fetch` route.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Merge {
    /// The merged document's type: `application/json` (a JSON array of the values).
    #[serde(rename = "content-type")]
    pub content_type: MergeContentType,
    /// How values are merged: appended to an initially empty array.
    pub patch: Option<MergePatch>,
}

/// The only merged content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum MergeContentType {
    /// `application/json`.
    #[serde(rename = "application/json")]
    ApplicationJson,
}

/// `with.merge.patch`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MergePatch {
    /// The initial document: `[]`.
    pub initial: MergeInitial,
    /// Where each value goes: `/-` (appended).
    pub path: MergePath,
}

/// The only initial merge document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum MergeInitial {
    /// `[]`.
    #[serde(rename = "[]")]
    EmptyArray,
}

/// The only merge path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum MergePath {
    /// `/-`: append.
    #[serde(rename = "/-")]
    Append,
}

/// `with` of a `produce` route.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("dependentRequired" = {"async": ["reply-to"]}))]
pub struct ProduceWith {
    /// The topic; may use `${params.name}` and guard values.
    pub topic: String,
    /// Which replicas must have the record before it counts as written (default
    /// `in_sync_replicas`).
    #[serde(default)]
    pub acks: ProduceAcks,
    /// The record key; may use `${params.name}`, guard values and `${idempotencyKey}`.
    pub key: Option<String>,
    /// Kafka headers added to the record; values may use the same expressions as `key`.
    pub overrides: Option<OrderedStrings>,
    /// The topic replies come back on: the HTTP response waits for the reply whose
    /// correlation id header matches the request's.
    #[serde(rename = "reply-to")]
    pub reply_to: Option<String>,
    /// The Kafka header name the correlation id is sent in, instead of
    /// `options.correlation.headers.correlation-id`.
    #[serde(rename = "correlation-id")]
    pub correlation_id: Option<String>,
    /// Response headers of a `202 Accepted` answer to `prefer: respond-async`, e.g.
    /// `location: /items/${params.id};cid=${correlationId}`.
    #[serde(rename = "async")]
    pub async_headers: Option<OrderedStrings>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn produce_and_fetch_with_are_told_apart_by_capability() {
        let produce: HttpKafkaWith = serde_json::from_value(json!({
            "capability": "produce",
            "topic": "items-commands",
            "acks": "leader_only",
            "key": "${params.id}",
            "overrides": {"zilla:identity": "x", "a": "b"},
            "reply-to": "items-replies",
            "async": {"location": "/items/${params.id};${correlationId}"}
        }))
        .unwrap();
        let HttpKafkaWith::Produce(produce) = produce else {
            panic!("not produce")
        };
        assert_eq!(produce.acks, ProduceAcks::LeaderOnly);
        assert_eq!(
            produce.overrides.unwrap().0,
            [
                ("zilla:identity".into(), "x".into()),
                ("a".into(), "b".into())
            ]
        );
        let fetch: HttpKafkaWith = serde_json::from_value(json!({
            "capability": "fetch",
            "topic": "items",
            "merge": {"content-type": "application/json", "patch": {"initial": "[]", "path": "/-"}}
        }))
        .unwrap();
        assert!(matches!(
            fetch,
            HttpKafkaWith::Fetch(FetchWith { merge: Some(_), .. })
        ));
        let unknown = serde_json::from_value::<HttpKafkaWith>(json!({
            "capability": "fetch", "topic": "t", "acks": "none"
        }));
        assert!(unknown.is_err());
    }

    #[test]
    fn option_defaults() {
        let options = HttpKafkaOptions::default();
        assert_eq!(options.idempotency_header(), "idempotency-key");
        assert_eq!(options.reply_to_header(), "zilla:reply-to");
        assert_eq!(options.correlation_id_header(), "zilla:correlation-id");
        let options: HttpKafkaOptions = serde_json::from_value(json!({
            "idempotency": {"header": "X-Request-Id"},
            "correlation": {"headers": {"reply-to": "r"}}
        }))
        .unwrap();
        assert_eq!(options.idempotency_header(), "x-request-id");
        assert_eq!(options.reply_to_header(), "r");
        assert_eq!(options.correlation_id_header(), "zilla:correlation-id");
    }
}
