//! The typed model of an AsyncAPI document: the parts the gateway uses, the same for 2.x and
//! 3.0 documents, with every `$ref` already resolved.

use std::collections::BTreeMap;

use indexmap::IndexMap;
use serde::Deserialize;

/// A parsed AsyncAPI document.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// The file the document was read from, as given to [`crate::parse`].
    pub file: String,
    /// The `asyncapi` version field, e.g. `3.0.0`.
    pub version: String,
    /// `defaultContentType`.
    pub default_content_type: Option<String>,
    /// Servers by name, in document order.
    pub servers: IndexMap<String, Server>,
    /// Channels by id (3.0: the key under `channels`; 2.x: the channel's address).
    pub channels: IndexMap<String, Channel>,
    /// Operations by id (3.0: the key under `operations`; 2.x: `operationId`, or
    /// `<address>.publish` / `<address>.subscribe` when it has none).
    pub operations: IndexMap<String, Operation>,
}

impl Spec {
    /// Whether any server speaks `protocol` (`mqtt`, `http`, `kafka`, ...; `secure-mqtt` counts
    /// as `mqtt`).
    pub fn has_protocol(&self, protocol: &str) -> bool {
        self.servers.values().any(|server| server.speaks(protocol))
    }
}

/// A server.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// `protocol`, lower-cased: `mqtt`, `secure-mqtt`, `http`, `https`, `kafka`, `kafka-secure`, ...
    pub protocol: String,
    /// The host name, server variables replaced by their defaults.
    pub host: String,
    /// The port, when the host or URL names one.
    pub port: Option<u16>,
    /// The path after the host (3.0 `pathname`, or the path of a 2.x `url`).
    pub pathname: Option<String>,
}

impl Server {
    /// Whether this server speaks `protocol`, plainly or over TLS.
    pub fn speaks(&self, protocol: &str) -> bool {
        self.protocol == protocol
            || self.protocol == format!("secure-{protocol}")
            || self.protocol == format!("{protocol}-secure")
            || (protocol == "http" && self.protocol == "https")
    }

    /// Whether the protocol is spoken over TLS.
    pub fn secure(&self) -> bool {
        self.protocol.starts_with("secure-")
            || self.protocol.ends_with("-secure")
            || self.protocol == "https"
            || self.protocol == "wss"
    }

    /// `protocol://host[:port][pathname]`: the URL a binding's `servers` selection names.
    pub fn url(&self) -> String {
        let mut url = format!("{}://{}", self.protocol, self.host);
        if let Some(port) = self.port {
            url.push_str(&format!(":{port}"));
        }
        if let Some(pathname) = &self.pathname {
            url.push_str(pathname);
        }
        url
    }
}

/// A channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Channel {
    /// The address (an MQTT topic, an HTTP path, a Kafka topic); `None` when the document
    /// leaves it to run time (3.0 `address: null`).
    pub address: Option<String>,
    /// The names of the `{parameters}` of the address, in order.
    pub parameters: Vec<String>,
    /// The messages that may travel on it, by id.
    pub messages: IndexMap<String, Message>,
    /// `bindings.kafka`.
    pub kafka: Option<KafkaChannelBinding>,
    /// `x-zilla-mqtt-kafka`: the role of this Kafka channel in an MQTT broker kept in Kafka.
    pub mqtt_kafka: Option<MqttKafkaChannel>,
}

impl Channel {
    /// The Kafka topic: `bindings.kafka.topic` when given, else the address.
    pub fn topic(&self) -> Option<&str> {
        self.kafka
            .as_ref()
            .and_then(|kafka| kafka.topic.as_deref())
            .or(self.address.as_deref())
    }
}

/// `bindings.kafka` of a channel.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaChannelBinding {
    /// The topic name, when it differs from the address.
    pub topic: Option<String>,
    /// The number of partitions (documentation only: the gateway creates no topics).
    pub partitions: Option<u32>,
    /// The number of replicas (documentation only).
    pub replicas: Option<u32>,
    /// Topic configuration (documentation only).
    pub topic_configuration: Option<serde_json::Value>,
    /// The binding version.
    pub binding_version: Option<String>,
}

/// `x-zilla-mqtt-kafka` on a Kafka channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttKafkaChannel {
    /// Which of the three topics this channel is.
    pub role: MqttKafkaRole,
}

/// The topics an MQTT broker kept in Kafka uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MqttKafkaRole {
    /// Session state (compacted).
    Sessions,
    /// Published messages.
    Messages,
    /// Retained messages (compacted).
    Retained,
}

/// What an operation does, from the point of view of the clients of the gateway: `send`
/// (2.x `publish`) means clients send messages to the gateway, `receive` (2.x `subscribe`)
/// means they receive them. This is how Zilla reads the documents it generates bindings from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Clients send (MQTT PUBLISH, HTTP POST/PUT, Kafka produce).
    Send,
    /// Clients receive (MQTT SUBSCRIBE, HTTP GET, SSE, Kafka fetch).
    Receive,
}

/// An operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    /// Send or receive.
    pub action: Action,
    /// The id of its channel in [`Spec::channels`].
    pub channel: String,
    /// The messages it carries: its own `messages`, or else every message of its channel.
    pub messages: Vec<Message>,
    /// `tags[].name`.
    pub tags: Vec<String>,
    /// `bindings.http`.
    pub http: Option<HttpOperationBinding>,
    /// `bindings.mqtt`.
    pub mqtt: Option<MqttOperationBinding>,
    /// `bindings.x-zilla-http-kafka`.
    pub http_kafka: Option<ZillaHttpKafka>,
    /// `bindings.x-zilla-sse`: the operation is served as server-sent events.
    pub sse: Option<ZillaSse>,
    /// `bindings.x-zilla-sse-kafka`.
    pub sse_kafka: Option<ZillaSseKafka>,
    /// `reply` (3.0): where the answer to a request goes.
    pub reply: Option<Reply>,
}

/// `bindings.http` of an operation (2.x also has `type: request|response`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpOperationBinding {
    /// The HTTP method.
    pub method: Option<String>,
    /// 2.x: `request` or `response`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// A JSON Schema of the query parameters.
    pub query: Option<serde_json::Value>,
    /// The binding version.
    pub binding_version: Option<String>,
}

/// `bindings.mqtt` of an operation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MqttOperationBinding {
    /// The quality of service.
    pub qos: Option<u8>,
    /// Whether messages are retained.
    pub retain: Option<bool>,
    /// The binding version.
    pub binding_version: Option<String>,
}

/// `x-zilla-http-kafka`: how an HTTP operation maps onto Kafka beyond what the channels say.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZillaHttpKafka {
    /// The HTTP method, when `bindings.http` does not say.
    pub method: Option<String>,
    /// Kafka headers to set on produced records (values may use `{identity}`).
    pub overrides: Option<BTreeMap<String, String>>,
    /// Filters of fetched records.
    pub filters: Option<Vec<ZillaKafkaFilter>>,
}

/// `x-zilla-sse`: marks an operation as served over server-sent events.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZillaSse {
    /// The request method: only `GET`, the one server-sent events are served on (Zilla's
    /// examples write it; Zilla routes `GET` whatever it says, so anything else is refused).
    pub method: Option<SseMethod>,
}

/// The method of an `x-zilla-sse` operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SseMethod {
    /// `GET`.
    #[serde(rename = "GET")]
    Get,
}

/// `x-zilla-sse-kafka`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZillaSseKafka {
    /// Filters of the records streamed.
    pub filters: Option<Vec<ZillaKafkaFilter>>,
}

/// A Kafka record filter of an `x-zilla-*` extension.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZillaKafkaFilter {
    /// The record key.
    pub key: Option<String>,
    /// Header values by name.
    pub headers: Option<BTreeMap<String, String>>,
}

/// `reply` of a 3.0 operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The id of the reply channel, when it names one.
    pub channel: Option<String>,
}

/// A message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Its id (the key it is declared under), when it has one.
    pub id: Option<String>,
    /// `name`.
    pub name: Option<String>,
    /// `contentType`, or the document's `defaultContentType`.
    pub content_type: Option<String>,
    /// The payload schema.
    pub payload: Option<Payload>,
    /// `correlationId.location`, e.g. `$message.header#/correlation-id`.
    pub correlation_id: Option<String>,
    /// `bindings.kafka.key`: the schema of the record key.
    pub kafka_key: Option<serde_json::Value>,
}

/// A payload schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    /// The schema language.
    pub format: SchemaFormat,
    /// The schema, self-contained: every `$ref` it made into the document points into its
    /// own `$defs`.
    pub schema: serde_json::Value,
}

/// A schema language (`schemaFormat`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaFormat {
    /// AsyncAPI's schema object or JSON Schema (the default).
    Json,
    /// Apache Avro.
    Avro,
    /// Another language (Protobuf, RAML, OpenAPI): kept as written.
    Other(String),
}

impl SchemaFormat {
    /// Reads a `schemaFormat` value.
    pub fn of(format: Option<&str>) -> Self {
        let Some(format) = format else {
            return Self::Json;
        };
        let media = format
            .split(';')
            .next()
            .unwrap_or(format)
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            "application/vnd.aai.asyncapi"
            | "application/vnd.aai.asyncapi+json"
            | "application/vnd.aai.asyncapi+yaml"
            | "application/schema+json"
            | "application/schema+yaml" => Self::Json,
            "application/vnd.apache.avro"
            | "application/vnd.apache.avro+json"
            | "application/vnd.apache.avro+yaml" => Self::Avro,
            _ => Self::Other(format.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_formats_are_read_by_media_type() {
        assert_eq!(SchemaFormat::of(None), SchemaFormat::Json);
        assert_eq!(
            SchemaFormat::of(Some("application/vnd.aai.asyncapi+json;version=3.0.0")),
            SchemaFormat::Json
        );
        assert_eq!(
            SchemaFormat::of(Some("application/schema+yaml;version=draft-07")),
            SchemaFormat::Json
        );
        assert_eq!(
            SchemaFormat::of(Some("application/vnd.apache.avro;version=1.9.0")),
            SchemaFormat::Avro
        );
        assert_eq!(
            SchemaFormat::of(Some("application/x-protobuf")),
            SchemaFormat::Other("application/x-protobuf".into())
        );
    }

    #[test]
    fn servers_name_their_url() {
        let server = Server {
            protocol: "mqtt".into(),
            host: "localhost".into(),
            port: Some(1883),
            pathname: None,
        };
        assert_eq!(server.url(), "mqtt://localhost:1883");
        assert!(server.speaks("mqtt") && !server.secure());
        let secure = Server {
            protocol: "secure-mqtt".into(),
            ..server
        };
        assert!(secure.speaks("mqtt") && secure.secure());
    }
}
