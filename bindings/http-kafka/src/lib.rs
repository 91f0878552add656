//! The `http-kafka` binding: a `proxy` that maps HTTP requests (the `http` stream kind, from an
//! `http` server) onto Kafka (the `kafka` stream kind, toward a `kafka` cache_client or
//! client), so a REST API reads and writes Kafka topics.
//!
//! A request is matched against the routes: `when` entries of `method` and `path` (the path
//! without its query; `*` matches anything and `{name}` captures one or more characters,
//! slashes included). The first route that matches and whose `guarded` roles are held decides
//! what happens, through its `with`; no match is `404`.
//!
//! **fetch** routes read:
//! - one item (no `merge`, typically `filters: [{key: ${params.id}}]`): the latest record that
//!   passes the filters (on a compacted topic, the latest per key). `200` with the value as body,
//!   the record's `content-type`, and an `etag` made of the Kafka progress at that record (plus
//!   `/<the record's etag header>`, as Zilla writes it); `204` for an empty value; `404` when
//!   there is no record or the latest one is a delete (tombstone). With `if-none-match` naming
//!   such a tag, only records after it count: nothing new is `304`. `prefer: wait=N` waits up
//!   to N seconds for a record to arrive before answering `304` (or `404`).
//! - a collection (`merge: {content-type: application/json}`): every latest value as one JSON
//!   array, `[` value `,` value … `]`, deletes and empty values left out. Through a `kafka`
//!   cache on a compacted topic the array is streamed as the cache replays it (the cached
//!   bytes, never the whole collection in memory), and its `etag` is the end of every
//!   partition the replay reads to; a key replaced while the array streams may appear twice,
//!   the newer value last. Otherwise (a `client` exit, a topic that is not compacted) the
//!   latest value per key is collected first and the `etag` is the progress the array
//!   reflects. `if-none-match` with that tag is `304`, and with `prefer: wait=N` the answer
//!   waits up to N seconds for a change. A streamed array that the cache stops feeding for
//!   the request timeout is cut, so the client sees an incomplete response, not a short array.
//!
//! **produce** routes write the request body as one record on `topic`, with `key` and `acks`
//! (`none`, `leader_only`, `in_sync_replicas`, the default). Expressions in `topic`, `key`,
//! `overrides`, `reply-to` and filters are compiled at load: `${params.name}`,
//! `${guarded['guard'].identity}`, `${guarded['guard'].attributes.name}`, and in `key` and
//! `overrides` `${idempotencyKey}` (the request's `idempotency-key` header, or a random UUID).
//! As in Zilla, a value with nothing behind it (a guard the request has no session of, a
//! parameter another `when` entry captures) is empty: a fetch filter keeps its condition, so
//! it then matches only records whose key or header is empty.
//! - Without `reply-to`, the record carries the request's `content-type` and the `overrides` as
//!   headers, a `DELETE` produces a delete (tombstone), and the answer is `204` once Kafka has
//!   acknowledged the record (at once with `acks: none`).
//! - With `reply-to`, the record carries every request header (pseudo-headers such as `:method`
//!   and `:path` included, `content-length` and `prefer` left out, `if-match` reduced to the part
//!   of the tag after `/`), the reply topic in `zilla:reply-to`, the `overrides`, and the
//!   correlation id `<idempotency key>-<md5 hex>` in `zilla:correlation-id` (see
//!   [`correlation`]). The reply topic is read (from where it ends, or from its start when the
//!   client chose the idempotency key, so a retried request finds its earlier reply) before the
//!   record is produced, and the first reply with that correlation id answers the request: its
//!   `:status` header (default `200`), its other headers and its value as body.
//! - With `async` too, a request with `prefer: respond-async` is answered `202` once produced,
//!   with the `async` headers (e.g. `location: /items/${params.id};cid=${correlationId}`). A `GET`
//!   on such a location (it must match one of the route's `when`) answers with the reply, or
//!   waits up to `prefer: wait=N` for it, or answers `202` with the location again.
//!
//! **Duplicates.** The `kafka` client writes each produced batch once even when it sends it
//! again after a lost connection, a broker restart or a leader move (its batches carry an
//! idempotent producer id and sequence), so a request answered `2xx` is in Kafka exactly once
//! and a failed one (`503`, `504`, or a connection lost before the answer) at most once. A
//! client's own retry is a new request and writes a new record, as in Zilla: the
//! `idempotency-key` header names the request in `${idempotencyKey}` and the correlation id
//! and lets a retried `reply-to` request find the earlier reply, but the gateway keeps no
//! record of the keys it has produced, so it does not refuse or merge a repeated one.
//! Consumers that must see a retried request once deduplicate on the key or correlation id.
//! Two cases fall outside "exactly once": a broker that grants the client no producer id
//! (no InitProducerId, or CLUSTER_AUTHORIZATION_FAILED for the principal) gets plain batches,
//! with a warning in the log; and a resend the broker answers UNKNOWN_PRODUCER_ID (it dropped
//! the producer's state after writing the first attempt) goes again under a new producer id.
//!
//! A body larger than the topic's `max.message.bytes` is `413`. Kafka failing is `503`, and
//! Kafka not answering within `zilla.binding.http.kafka.request.timeout.millis` (default 30000)
//! is `504`, both with an empty body; a produce is never answered `2xx` before Kafka
//! acknowledged it.
//!
//! | property | default | meaning |
//! |---|---|---|
//! | `zilla.binding.http.kafka.request.timeout.millis` | 30000 | how long a request waits for Kafka (a fetch to catch up, a produce to be acknowledged) before `504` |
//! | `zilla.binding.http.kafka.reply.timeout.millis` | 60000 | how long a synchronous produce (`reply-to` without `prefer: respond-async`) waits for its correlated reply once Kafka acknowledged the request record; then `504` (the request record stays produced) |
//! | `zilla.binding.http.kafka.maximum.wait.millis` | 120000 | the longest `prefer: wait=N` honoured: a larger N (any number of digits) waits this long | Bodies are passed through as they are: validating them is the job of the
//! http server's `requests` models.
//!
//! ```yaml
//! name: example
//! bindings:
//!   north_http_kafka_mapping:
//!     type: http-kafka
//!     kind: proxy
//!     options:
//!       idempotency:
//!         header: idempotency-key
//!       correlation:
//!         headers:
//!           reply-to: zilla:reply-to
//!           correlation-id: zilla:correlation-id
//!     routes:
//!       - when:
//!           - method: GET
//!             path: /items
//!         exit: north_kafka_cache_client
//!         with:
//!           capability: fetch
//!           topic: items-snapshots
//!           merge:
//!             content-type: application/json
//!       - when:
//!           - method: GET
//!             path: /items/{id}
//!         exit: north_kafka_cache_client
//!         with:
//!           capability: fetch
//!           topic: items-snapshots
//!           filters:
//!             - key: ${params.id}
//!       - when:
//!           - method: PUT
//!             path: /items/{id}
//!           - method: GET
//!             path: /items/{id};cid={correlationId}
//!         exit: north_kafka_cache_client
//!         with:
//!           capability: produce
//!           topic: items-requests
//!           acks: leader_only
//!           key: ${params.id}
//!           reply-to: items-responses
//!           async:
//!             location: /items/${params.id};cid=${correlationId}
//! ```
//!
//! Options: `idempotency.header` (default `idempotency-key`),
//! `correlation.headers.reply-to` (default `zilla:reply-to`) and
//! `correlation.headers.correlation-id` (default `zilla:correlation-id`). Every route needs a
//! `with`; the binding takes no binding-level `exit`.

pub mod config;
pub use zilla_binding_kafka::correlation;
pub mod etag;
mod headers;
mod proxy;
mod route;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderName;
use zilla_binding_http::kind::Http;
use zilla_binding_kafka::kind::Kafka;
use zilla_engine::binding::{Binding, BindingFactory, BindingSchema, BuildContext};
use zilla_engine::stream::StreamKind;
use zilla_engine::{BindingKind, BuildError, Registry};

use config::{HttpKafkaCondition, HttpKafkaOptions, HttpKafkaWith};
use proxy::HttpKafkaProxy;
use route::{Condition, Target};

/// How long a request waits for Kafka by default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest `prefer: wait` honoured, in milliseconds.
pub const MAXIMUM_WAIT_PROPERTY: &str = "zilla.binding.http.kafka.maximum.wait.millis";

/// Below the tcp idle timeout (300 s), so a waiting request is not cut as idle.
const DEFAULT_MAXIMUM_WAIT: Duration = Duration::from_secs(120);

/// How long a synchronous produce waits for its correlated reply, in milliseconds.
pub const REPLY_TIMEOUT_PROPERTY: &str = "zilla.binding.http.kafka.reply.timeout.millis";

const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// Registers the `http-kafka` binding type.
pub fn register(registry: &mut Registry) {
    registry.binding(HttpKafkaFactory).properties(&[
        MAXIMUM_WAIT_PROPERTY,
        REPLY_TIMEOUT_PROPERTY,
        REQUEST_TIMEOUT_PROPERTY,
    ]);
}

/// How long a request waits for Kafka (a fetch to catch up, a produce to be acknowledged), in
/// milliseconds, before `504`.
pub const REQUEST_TIMEOUT_PROPERTY: &str = "zilla.binding.http.kafka.request.timeout.millis";

/// Builds http-kafka bindings.
#[derive(Debug)]
pub struct HttpKafkaFactory;

impl BindingFactory for HttpKafkaFactory {
    fn type_name(&self) -> &'static str {
        "http-kafka"
    }

    fn kinds(&self) -> &'static [BindingKind] {
        &[BindingKind::Proxy]
    }

    fn accepts(&self, _kind: BindingKind) -> &'static [&'static str] {
        &[Http::NAME]
    }

    fn emits(&self, _kind: BindingKind) -> Option<&'static str> {
        Some(Kafka::NAME)
    }

    fn schema(&self, _kind: BindingKind) -> BindingSchema {
        BindingSchema {
            options: Some(BindingSchema::of::<HttpKafkaOptions>()),
            options_required: false,
            when: Some(BindingSchema::of::<HttpKafkaCondition>()),
            with: Some(BindingSchema::of::<HttpKafkaWith>()),
        }
    }

    fn build(&self, context: &mut BuildContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
        let options: HttpKafkaOptions = context.options()?;
        if context.config().exit.is_some() {
            return Err(BuildError::at(
                "exit",
                "an http-kafka proxy takes no binding-level `exit`: each route names its exit and its `with`",
            ));
        }
        let routes = context.routes::<Kafka, _, _, Target>(Condition::compile)?;
        if routes.is_empty() {
            return Err(BuildError::at(
                "routes",
                "an http-kafka proxy needs `routes`",
            ));
        }
        if let Some(index) = routes.iter().position(|route| route.with.is_none()) {
            return Err(BuildError::at(
                format!("routes[{index}]"),
                "every http-kafka route needs a `with` (capability fetch or produce)",
            ));
        }
        let idempotency_header = options.idempotency_header();
        let idempotency_header =
            HeaderName::from_bytes(idempotency_header.as_bytes()).map_err(|_| {
                BuildError::at(
                    "options.idempotency.header",
                    format!("`{idempotency_header}` is not an HTTP header name"),
                )
            })?;
        let proxy = Arc::new(HttpKafkaProxy {
            qname: context.name().to_string(),
            namespace: context.name().namespace.clone(),
            routes,
            idempotency_header,
            reply_to_header: Bytes::from(options.reply_to_header()),
            correlation_header: Bytes::from(options.correlation_id_header()),
            timeout: context
                .properties()
                .millis(REQUEST_TIMEOUT_PROPERTY, DEFAULT_TIMEOUT),
            maximum_wait: context
                .properties()
                .millis(MAXIMUM_WAIT_PROPERTY, DEFAULT_MAXIMUM_WAIT),
            reply_timeout: context
                .properties()
                .millis(REPLY_TIMEOUT_PROPERTY, DEFAULT_REPLY_TIMEOUT),
            limits: Mutex::new(HashMap::new()),
            stopping: tokio_util::sync::CancellationToken::new(),
        });
        context.publish::<Http>(proxy.clone());
        Ok(proxy)
    }
}
