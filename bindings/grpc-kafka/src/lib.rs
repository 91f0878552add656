//! The `grpc-kafka` binding: a `proxy` (accepts `grpc`, opens `kafka`) that answers gRPC
//! calls from a `grpc` server with Kafka topics, through a kafka `cache_client` (or `client`).
//!
//! A call is matched against the routes (`when: [{method, metadata}]`, as the `grpc` binding
//! matches them); the first route that matches and whose `guarded` roles are held decides,
//! through its `with`, what happens. No match is `UNIMPLEMENTED`.
//!
//! **`capability: produce`** (unary and client-streaming calls, or any call with
//! `reply-to`): each request message becomes one record on `topic`, keyed by `key` (default:
//! the correlation id), acknowledged as `acks` says (default `in_sync_replicas`) before the
//! next is produced. Each record's headers are, in order: the `overrides`; with `reply-to`,
//! `zilla:service` (`pkg.Service`), `zilla:method` (`Method`), `zilla:reply-to` (the reply
//! topic) and `zilla:correlation-id`; then the request metadata as `meta:<name>` (values of
//! `-bin` metadata in base64). The correlation id is `<idempotency key>-<md5 hex>`, the key
//! being the `idempotency-key` metadata or a random UUID, and the MD5 covering the service,
//! method and reply-to headers (names and values) then each override's value, as Zilla makes
//! it. When the request ends, a record without value and without the `meta:*` headers marks
//! its end (with `zilla:status: 10`, `ABORTED`, when the caller broke off).
//! - With `reply-to`, the reply topic is read before anything is produced (from its end, or
//!   from its start when the client chose the idempotency key, so a retried call finds its
//!   replies), filtered on `zilla:correlation-id`. Each reply value is a response message; the
//!   first reply's `meta:*` headers are the response metadata; the reply without value ends
//!   the call with its `zilla:status` (default `0`) and `zilla:message`. For a method the grpc
//!   server knows (from its catalog) to answer with one message, only the last reply before the
//!   final one is sent, with its metadata: a service gateway that died between a reply and its
//!   final record leaves that reply ahead of the complete answer of the member that called the
//!   service again. A non-OK status before any message is answered trailers-only. The replies are waited for until the call's
//!   deadline (`grpc-timeout`), then it ends `DEADLINE_EXCEEDED`; without a deadline, until
//!   the client cancels or the gateway stops. A call that ends (deadline, cancel, stop) before
//!   its request was all produced still ends the request in Kafka, broken off (`ABORTED`), so
//!   the service side cancels its call too.
//! - Without `reply-to` the call is one-way: answered with one empty message and `OK` once
//!   Kafka acknowledged every message.
//!
//! **`capability: fetch`** (server-streaming calls): streams the records of `topic` that pass
//! `filters` (`[{key, headers: {name: value}}]`: all of a filter's conditions, any one filter),
//! from the topic's start, as response messages: each record's value followed by one more
//! protobuf field of type `bytes`, number `reliability.field` (default 32767), holding the
//! message id: the progress of every partition after that record (see [`message_id`]). A
//! client that reconnects with the last id it received, base64url-encoded, in the
//! `reliability.metadata` metadata (default `last-message-id`) receives exactly the records
//! after it, from this gateway or any other reading the same cluster. The request message is
//! not read.
//!
//! `topic`, `key`, `overrides` values and filter values may use
//! `${guarded['<guard>'].identity}` and `${guarded['<guard>'].attributes.<name>}`; a call
//! without that guard's session is `PERMISSION_DENIED`. Kafka failing is `UNAVAILABLE`.
//!
//! ```yaml
//! name: example
//! bindings:
//!   grpc_kafka:
//!     type: grpc-kafka
//!     kind: proxy
//!     options:
//!       reliability:
//!         field: 32767
//!         metadata: last-message-id
//!       idempotency:
//!         metadata: idempotency-key
//!       correlation:
//!         headers:
//!           service: zilla:service
//!           method: zilla:method
//!           correlation-id: zilla:correlation-id
//!           reply-to: zilla:reply-to
//!     routes:
//!       - when:
//!           - method: example.FanoutService/*
//!         exit: kafka_cache_client
//!         with:
//!           capability: fetch
//!           topic: messages
//!           filters:
//!             - headers:
//!                 tag: news
//!       - when:
//!           - method: example.EchoService/*
//!         exit: kafka_cache_client
//!         with:
//!           capability: produce
//!           topic: echo-requests
//!           acks: leader_only
//!           reply-to: echo-responses
//! ```
//!
//! Every route needs a `with`; the binding takes no binding-level `exit`. Options are all
//! optional, with the defaults shown.

pub mod config;
pub mod message_id;
pub mod proxy;

mod route;

use std::sync::Arc;

use zilla_binding_grpc::Grpc;
use zilla_binding_grpc::config::{GrpcCondition, MethodCondition};
use zilla_binding_kafka::kind::Kafka;
use zilla_engine::binding::{Binding, BindingFactory, BindingSchema, BuildContext};
use zilla_engine::stream::StreamKind;
use zilla_engine::{BindingKind, BuildError, Registry};

use config::{GrpcKafkaOptions, GrpcKafkaWith};
use proxy::{GrpcKafkaProxy, HeaderNames};
use route::Target;

/// Registers the `grpc-kafka` binding type.
pub fn register(registry: &mut Registry) {
    registry.binding(GrpcKafkaFactory);
}

/// Builds grpc-kafka bindings.
#[derive(Debug)]
pub struct GrpcKafkaFactory;

impl BindingFactory for GrpcKafkaFactory {
    fn type_name(&self) -> &'static str {
        "grpc-kafka"
    }

    fn kinds(&self) -> &'static [BindingKind] {
        &[BindingKind::Proxy]
    }

    fn accepts(&self, _kind: BindingKind) -> &'static [&'static str] {
        &[Grpc::NAME]
    }

    fn emits(&self, _kind: BindingKind) -> Option<&'static str> {
        Some(Kafka::NAME)
    }

    fn schema(&self, _kind: BindingKind) -> BindingSchema {
        BindingSchema {
            options: Some(BindingSchema::of::<GrpcKafkaOptions>()),
            options_required: false,
            when: Some(BindingSchema::of::<GrpcCondition>()),
            with: Some(BindingSchema::of::<GrpcKafkaWith>()),
        }
    }

    fn build(&self, context: &mut BuildContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
        let options: GrpcKafkaOptions = context.options()?;
        if context.config().exit.is_some() {
            return Err(BuildError::at(
                "exit",
                "a grpc-kafka proxy takes no binding-level `exit`: each route names its exit and its `with`",
            ));
        }
        let routes = context.routes::<Kafka, _, _, Target>(MethodCondition::compile)?;
        if routes.is_empty() {
            return Err(BuildError::at(
                "routes",
                "a grpc-kafka proxy needs `routes`",
            ));
        }
        if let Some(index) = routes.iter().position(|route| route.with.is_none()) {
            return Err(BuildError::at(
                format!("routes[{index}]"),
                "every grpc-kafka route needs a `with` (capability fetch or produce)",
            ));
        }
        let proxy = Arc::new(GrpcKafkaProxy {
            name: context.name().to_string(),
            namespace: context.name().namespace.clone(),
            routes,
            field: options.field(),
            last_message_id: options.last_message_id(),
            idempotency: options.idempotency(),
            headers: HeaderNames::from(options.headers()),
            stopping: tokio_util::sync::CancellationToken::new(),
            retired: tokio_util::sync::CancellationToken::new(),
        });
        context.publish::<Grpc>(proxy.clone());
        Ok(proxy)
    }
}
