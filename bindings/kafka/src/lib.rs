//! The `kafka` binding: Zilla's Kafka client, which the protocol-mapping bindings
//! (`http-kafka`, `sse-kafka`, `mqtt-kafka`, `grpc-kafka`) use to produce to and fetch from a
//! Kafka cluster.
//!
//! This crate holds the Kafka wire-protocol client the binding is built on, in [`wire`]:
//! broker connections opened through the binding's exit (a `tcp` or `tls` client), API
//! version negotiation, SASL, cluster metadata and leader routing, record batches with every
//! Kafka compression codec, Kafka's partitioner, and the produce, fetch, offset, config,
//! consumer-group and admin calls. See [`wire`] for the API versions used and the broker
//! behaviours tolerated.
//!
//! The binding is configured the way Zilla's is:
//!
//! ```yaml
//! name: example
//! bindings:
//!   kafka_client:
//!     type: kafka
//!     kind: client
//!     options:
//!       servers:
//!         - localhost:9092
//!     exit: tcp_client
//!   tcp_client:
//!     type: tcp
//!     kind: client
//! ```
//!
//! Options of the `client` kind: `servers` (bootstrap `host:port` list) and `authorization`
//! (SASL credentials from one guard: `plain`, `scram-sha-256` or `scram-sha-512` with
//! `username` and `password`, or `oauthbearer` with a `token`; `{identity}` and
//! `{credentials}` in them are the guard's configured identity and secret). A mechanism given
//! keys that are not its own (a `token` with `plain`, a `password` with `oauthbearer`) is
//! refused at load, as is a token that is not an RFC 6750 bearer token:
//!
//! ```yaml
//! guards:
//!   authn_kafka:
//!     type: inline
//!     options:
//!       credentials: ${{env.KAFKA_SASL_TOKEN}}
//! bindings:
//!   kafka_client:
//!     type: kafka
//!     kind: client
//!     options:
//!       servers: [localhost:9092]
//!       authorization:
//!         authn_kafka:
//!           credentials:
//!             mechanism: oauthbearer
//!             token: "{credentials}"
//!     exit: tcp_client
//! ```
//!
//! OAUTHBEARER (RFC 7628, [`wire`]) is tested against this crate's own `proxy` kind, which
//! verifies the token with a `jwt` guard: no broker available to the tests (tansu) implements
//! OAUTHBEARER. That edge is in turn checked with librdkafka as the client.
//!
//! The `client` kind produces as Kafka's idempotent producer does (property
//! `zilla.binding.kafka.client.produce.idempotent`, default true): each partition's batches
//! carry a producer id and a running sequence, so a batch sent again after a lost connection,
//! a broker restart or a leader move is written once.
//!
//! The `proxy` kind forwards Kafka clients' connections to a cluster, rewriting broker
//! addresses so every broker is reached through the gateway, and records `kafka.*` metrics
//! ([`proxy`]).
//!
//! Each kind takes only its own keys, and the load refuses the others': `servers`, `sasl`
//! and `authorization` belong to the `client`, `bootstrap` (topics fetched from start-up) to
//! the `cache_server`. Only a `cache_client` routes (by `topic`, to cache servers, without
//! `guarded`: its requests carry no credentials); a `client` and a `cache_server` have one
//! `exit`. `kafka.*` metrics are the `proxy`'s, but for `kafka.cache.size` and
//! `kafka.cache.disk.size`, which only a `cache_server` records.
//!
//! `topics[].defaultOffset` (`client`, `cache_client`, `cache_server`): where a merged read
//! that gives no offsets (an SSE client without `last-event-id`, a gRPC fetch without a
//! message id, ...) starts on that topic: `live` (only records produced from then on) or
//! `historical` (everything retained, then live; the default). A `cache_client`'s setting wins
//! over its `cache_server`'s.
//!
//! `topics[].key` and `topics[].value` of the cache kinds are model references (`avro`,
//! `json`, `string`, ...): a `cache_client` validates and converts what it produces, a
//! `cache_server` what it reads ([`models`]). A `cache_server` topic's `transforms`
//! (`extract-key`, `extract-headers`) lift fields of a record's JSON key or value into its key
//! and headers as it enters the cache ([`transforms`]).

pub mod wire;

pub mod binding;
pub mod cache;
mod cache_budget;
pub mod cache_disk;
mod cache_index;
mod cache_log;
pub mod client;
pub mod config;
pub mod correlation;
mod credentials;
mod follow;
pub mod group;
mod idempotence;
pub mod kind;
pub mod mapping;
mod merged;
pub mod models;
pub mod progress;
pub mod proxy;
pub mod transforms;

pub use binding::KafkaFactory;
pub use kind::{Kafka, KafkaHandler};

/// Registers the `kafka` binding type.
pub fn register(registry: &mut zilla_engine::Registry) {
    registry.binding(KafkaFactory).properties(&[
        "zilla.binding.kafka.cache.disk.bytes",
        "zilla.binding.kafka.cache.idle.evict.millis",
        "zilla.binding.kafka.cache.memory.bytes",
        "zilla.binding.kafka.cache.partition.bytes",
        "zilla.binding.kafka.cache.segment.bytes",
        "zilla.binding.kafka.client.decompress.max.bytes",
        "zilla.binding.kafka.client.fetch.max.bytes",
        "zilla.binding.kafka.client.fetch.max.wait.millis",
        "zilla.binding.kafka.client.id",
        "zilla.binding.kafka.client.meta.max.age.ms",
        "zilla.binding.kafka.client.produce.idempotent",
        "zilla.binding.kafka.client.produce.request.timeout.millis",
        "zilla.binding.kafka.proxy.request.max.bytes",
        "zilla.binding.kafka.proxy.response.max.bytes",
        "zilla.engine.cache.directory",
        // Read by the program running the engine too; the cache keeps its files under it.
        "zilla.engine.directory",
    ]);
    registry.metric_group(&proxy::telemetry::KAFKA_METRICS);
}
