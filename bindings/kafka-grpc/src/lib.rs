//! The `kafka-grpc` binding: a `remote_server` that reads gRPC requests from Kafka topics
//! through its `entry` (a kafka `cache_client` or `client`), calls the service through its
//! route's exit (a `grpc` client) and produces the replies back to Kafka: the other half of
//! `grpc-kafka`'s produce, so gRPC services can call each other over Kafka (an event mesh).
//!
//! Requests are read as the consumer group `zilla:<namespace>-<binding>`: one member per
//! topic the routes name, which gets its share of the topic's partitions (gateways running
//! the same binding split them) and reads them from the group's committed offsets. The first
//! time the group reads a partition it starts at its end and commits that at once, so from
//! then on requests produced while no gateway reads the topic are answered when one starts.
//! A request is committed only once its last reply record is produced; a request whose
//! replies could not be produced, or whose call was cut when the gateway stopped, stays
//! uncommitted and is called again after the next start. The guarantee is at least once to
//! the service, with answered requests recognised: a request that was already in the topic
//! when a member started reading its partition (after a start or a rebalance) is first looked
//! up on its reply topic by correlation id, and when its final reply (the record carrying
//! `zilla:status`, with a timestamp no earlier than the request's) is there, because a member
//! that crashed or lost the partition produced it but did not commit it, the service is not
//! called again and the request is committed. A final reply older than the request answered an
//! earlier attempt of the same call, which the caller gave up on before the answer came: the
//! retry is called and answered again. A request is therefore executed twice only when its
//! call was cut before its final reply was produced (its partial replies are then followed by
//! the replies of the second call), when the caller retried it, or when the search of the
//! reply topic fails or takes over 30 s.
//!
//! Each route `when` entry takes the records of its `topic` filtered on `key`, `headers`, the
//! `zilla:reply-to` header (which must name `reply-to`) and, when `method` names one service,
//! the `zilla:service` header; `method` (`pkg.Service/Method`, `*` wildcards) selects the
//! calls. A request goes to the first route with an entry that takes it. The records of one request share a
//! `zilla:correlation-id`: the first starts the call (service and method from `zilla:service`
//! and `zilla:method`, request metadata from the `meta:*` headers, plus the `idempotency`
//! metadata holding the request's idempotency key, the correlation id without its `-<md5>`
//! suffix, when the request carries none), each value is one request message, and the record
//! without value ends the request (with a `zilla:status` other than `0`, it is broken off and
//! the call is cancelled). Records without correlation id, service, method or reply topic
//! are skipped, and so is a record without value whose request is not in progress (its call
//! ended, or another member read the request's first records), as Zilla does: a request
//! starts with a message.
//!
//! Calls go to the route's exit with the route's `with.scheme` and `with.authority`. While
//! the service is `UNAVAILABLE` before it took a request message, the call is tried again
//! after a backoff (100 ms doubling up to 5 s). Each response message is produced to the
//! request's reply topic, keyed like the request, with `zilla:correlation-id` (the response
//! metadata as `meta:*` headers on the first record); then a record without value carries the
//! final `zilla:status` and, when not empty, `zilla:message`. Acks: `options.acks` (default
//! `in_sync_replicas`).
//!
//! At most 256 calls run at once per binding; further requests wait in Kafka. Each call holds
//! at most 16 request messages the service has not taken yet.
//!
//! When the group rebalances, the member stops reading, gives the calls in progress up to 5 s
//! to finish and commits them, then cuts the rest without a reply and joins again; the
//! member that gets a partition next looks up the uncommitted requests as above, so a request
//! is not answered by two members.
//!
//! When the gateway stops, reading ends at once, calls whose request was read to its end
//! go on until the drain is over, the offsets they allow are committed and the member leaves
//! the group.
//!
//! ```yaml
//! name: example
//! bindings:
//!   kafka_grpc:
//!     type: kafka-grpc
//!     kind: remote_server
//!     entry: kafka_cache_client
//!     options:
//!       acks: leader_only
//!       correlation:
//!         headers:
//!           service: zilla:service
//!           method: zilla:method
//!           correlation-id: zilla:correlation-id
//!           reply-to: zilla:reply-to
//!     routes:
//!       - when:
//!           - topic: echo-requests
//!             reply-to: echo-responses
//!             method: example.EchoService/*
//!         exit: grpc_client
//!         with:
//!           scheme: http
//!           authority: localhost:50051
//! ```
//!
//! `entry` and `routes` are required; every route needs a `with`; the binding takes no
//! binding-level `exit`, and `guarded` routes are refused (requests read from Kafka carry no
//! credentials).

pub mod config;

mod server;

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use zilla_binding_grpc::Grpc;
use zilla_binding_kafka::kind::Kafka;
use zilla_engine::binding::{Binding, BindingFactory, BindingSchema, BuildContext, StartContext};
use zilla_engine::stream::StreamKind;
use zilla_engine::{BindingKind, BuildError, Registry};

use config::{KafkaGrpcCondition, KafkaGrpcOptions, KafkaGrpcWith};
use server::{MAXIMUM_CALLS, Server, Subscription};
use zilla_binding_grpc_kafka::proxy::HeaderNames;

/// Registers the `kafka-grpc` binding type.
pub fn register(registry: &mut Registry) {
    registry.binding(KafkaGrpcFactory);
}

/// Builds kafka-grpc bindings.
#[derive(Debug)]
pub struct KafkaGrpcFactory;

impl BindingFactory for KafkaGrpcFactory {
    fn type_name(&self) -> &'static str {
        "kafka-grpc"
    }

    fn kinds(&self) -> &'static [BindingKind] {
        &[BindingKind::RemoteServer]
    }

    fn accepts(&self, _kind: BindingKind) -> &'static [&'static str] {
        &[]
    }

    fn emits(&self, _kind: BindingKind) -> Option<&'static str> {
        Some(Grpc::NAME)
    }

    fn entry_emits(&self, _kind: BindingKind) -> Option<&'static str> {
        Some(Kafka::NAME)
    }

    fn schema(&self, _kind: BindingKind) -> BindingSchema {
        BindingSchema {
            options: Some(BindingSchema::of::<KafkaGrpcOptions>()),
            options_required: false,
            when: Some(BindingSchema::of::<KafkaGrpcCondition>()),
            with: Some(BindingSchema::of::<KafkaGrpcWith>()),
        }
    }

    fn build(&self, context: &mut BuildContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
        let options: KafkaGrpcOptions = context.options()?;
        if context.config().exit.is_some() {
            return Err(BuildError::at(
                "exit",
                "a kafka-grpc remote_server takes no binding-level `exit`: each route names its exit and its `with`",
            ));
        }
        let Some(entry) = context.config().entry.clone() else {
            return Err(BuildError::at(
                "",
                "a kafka-grpc remote_server needs an `entry`: the kafka binding requests are read from",
            ));
        };
        let kafka = context.exit::<Kafka>(&entry)?;
        let names = HeaderNames::from(options.headers());
        let routes =
            context.routes::<Grpc, KafkaGrpcCondition, Subscription, KafkaGrpcWith>(|raw| {
                Subscription::compile(raw, &names)
            })?;
        if routes.is_empty() {
            return Err(BuildError::at(
                "routes",
                "a kafka-grpc remote_server needs `routes`",
            ));
        }
        // Requests read from Kafka carry no guard session to check roles against.
        if let Some(index) = routes.iter().position(|route| !route.guarded.is_empty()) {
            return Err(BuildError::at(
                format!("routes[{index}].guarded"),
                "kafka-grpc `guarded` routes are not supported: requests read from Kafka carry no credentials",
            ));
        }
        if let Some(index) = routes
            .iter()
            .position(|route| route.with.is_none() || route.when.is_empty())
        {
            return Err(BuildError::at(
                format!("routes[{index}]"),
                "every kafka-grpc route needs `when` (the topic to read) and `with` (scheme and authority)",
            ));
        }
        Ok(Arc::new(Built {
            server: Arc::new(Server {
                name: context.name().to_string(),
                group_id: format!("zilla:{}-{}", context.name().namespace, context.name().name),
                kafka,
                routes,
                headers: names,
                idempotency: options.idempotency(),
                acks: options.acks.into(),
                calls: Arc::new(Semaphore::new(MAXIMUM_CALLS)),
                stopping: CancellationToken::new(),
                retired: CancellationToken::new(),
            }),
        }))
    }
}

/// A built remote server: its readers start with the binding.
struct Built {
    server: Arc<Server>,
}

impl Binding for Built {
    fn start(&self, context: &StartContext) {
        self.server.start(&context.tasks);
        // Stop reading new requests at once; calls in progress go on until the drain is over.
        context.forward_to(self.server.stopping.clone(), self.server.retired.clone());
    }
}
