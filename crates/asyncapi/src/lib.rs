//! AsyncAPI documents as the gateway reads them, and the `zilla.yaml` pipelines an `asyncapi`
//! binding stands for.
//!
//! - [`parse`] reads an AsyncAPI 2.0–2.6 or 3.0 document (YAML or JSON) into a [`Spec`]: its
//!   servers (protocol, host, port), channels (address, parameters, messages,
//!   `bindings.kafka.topic`, `x-zilla-mqtt-kafka`), operations (3.0 `send`/`receive` with their
//!   channel and messages; 2.x `publish`/`subscribe`, read as `send`/`receive`; `bindings.http`,
//!   `bindings.mqtt`, `x-zilla-http-kafka`, `x-zilla-sse`, `x-zilla-sse-kafka`; traits applied;
//!   3.0 `reply`), and messages (content type, payload schema in JSON Schema or Avro,
//!   `correlationId`, `bindings.kafka.key`). Every `$ref` within the document is resolved,
//!   chains followed and cycles refused; payload schemas are made self-contained (what they
//!   refer to is copied into their `$defs`, so recursive schemas stay finite). A reference to
//!   another document, an unknown or misplaced `x-zilla-*` key, a version other than 2.0–2.6
//!   or 3.0, or a malformed part the gateway reads fails with
//!   `file:line:column: path: message`. Descriptive parts (info, tags' descriptions,
//!   examples, security schemes) are not modelled.
//! - [`generate()`] turns one `asyncapi` binding (its kind, [`AsyncapiOptions`], routes and
//!   parsed documents) into a [`Namespace`] of plain bindings: see [`generate`](mod@generate)
//!   for the names and shapes, and [`Namespace::to_yaml`] for the text. [`expand`] does it
//!   for every `asyncapi` binding of a namespace at once, wiring their exits together.
//!
//! ```
//! use std::collections::BTreeMap;
//! use indexmap::IndexMap;
//! use zilla_asyncapi::{AsyncapiOptions, Composite, CompositeKind, Overrides, generate, parse};
//!
//! let kafka = parse("kafka.yaml", "
//! asyncapi: 3.0.0
//! info: {title: Items, version: 1.0.0}
//! servers:
//!   plain: {host: 'localhost:9092', protocol: kafka}
//! channels:
//!   items: {address: items}
//! operations:
//!   readItems: {action: receive, channel: {$ref: '#/channels/items'}}
//! ").unwrap();
//! let options: AsyncapiOptions =
//!     serde_json::from_value(serde_json::json!({"specs": {"kafka_api": {}}})).unwrap();
//! let specs = IndexMap::from([("kafka_api".to_owned(), kafka)]);
//! let namespace = generate("south", &Composite {
//!     kind: CompositeKind::Client,
//!     options: &options,
//!     routes: &[],
//!     specs: &specs,
//!     exit: None,
//!     exits: &BTreeMap::new(),
//!     overrides: &Overrides::default(),
//! }).unwrap();
//! let yaml = namespace.to_yaml().unwrap();
//! assert!(yaml.contains("kafka_client0"));
//! assert!(yaml.contains("localhost:9092"));
//! ```
//!
//! A config that uses it, in Zilla's shape (the `asyncapi` binding type itself is wired in by
//! the engine's composite bindings):
//!
//! ```yaml
//! bindings:
//!   north_mqtt_server:
//!     type: asyncapi
//!     kind: server
//!     options:
//!       specs:
//!         mqtt_api: {catalog: {specs: {subject: mqtt}}}
//!     exit: south_kafka_proxy
//!   south_kafka_proxy:
//!     type: asyncapi
//!     kind: proxy
//!     options:
//!       specs:
//!         mqtt_api: {catalog: {specs: {subject: mqtt}}}
//!         kafka_api: {catalog: {specs: {subject: kafka}}}
//!     routes:
//!       - when: [{spec: mqtt_api, operation: sendReadings}]
//!         exit: south_kafka_client
//!         with: {spec: kafka_api, operation: produceReadings}
//!   south_kafka_client:
//!     type: asyncapi
//!     kind: client
//!     options:
//!       specs:
//!         kafka_api: {catalog: {specs: {subject: kafka}}}
//! ```
//!
//! Options ([`AsyncapiOptions`]): `specs.<label>` with `catalog` (read by the caller),
//! `servers` (URLs with `*` wildcards, or server names; a client also takes a
//! `protocol://host:port` URL the document does not list, as written) or `server`; proxy `mqtt-kafka.channels`
//! `{sessions, messages, retained}` (channel ids of the Kafka document, when its channels carry
//! no `x-zilla-mqtt-kafka` role). Routes ([`AsyncapiRoute`]): `when: [{spec, operation}]`
//! (`api-id`/`operation-id` accepted), `with: {spec, operation}`, `exit`. Anything else
//! (`security`, `tls`, ...) is refused.
//!
//! Why our own model: the Rust AsyncAPI crates we looked at did not fit. `asyncapi` (0.2)
//! models 2.3 only and reads YAML through the deprecated `serde_yaml` 0.8;
//! `asyncapi-rust-models` models 3.0 for generating documents; `roas-asyncapi` models 2.6 and
//! 3.x with serde, so its errors carry no line and column, and it keeps protocol bindings as
//! raw JSON, which is most of what the gateway reads. This crate reads the document through
//! `zilla-config`'s positioned YAML tree, so every error points into the file.

pub mod generate;
pub mod model;
pub mod options;
mod parse;
mod resolve;
mod schema;

pub use generate::{
    Composite, CompositeKind, ExitTarget, GenerateError, Namespace, Overrides, entry, expand,
    generate, generated_bindings, namespace_name,
};
pub use model::{Action, Channel, Message, Operation, Payload, SchemaFormat, Server, Spec};
pub use options::{AsyncapiOptions, AsyncapiRoute};
pub use parse::parse;
pub use zilla_config::ConfigError;
