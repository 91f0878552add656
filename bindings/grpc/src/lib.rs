//! The `grpc` binding (gRPC over HTTP/2) and the `grpc` stream kind (see [`kind`]): one gRPC
//! call, with its method, metadata, deadline, request messages, response messages and final
//! status with trailers.
//!
//! - `server` (accepts `http`, emits `grpc`): answers `POST /pkg.Service/Method` exchanges
//!   with `content-type: application/grpc` (or `application/grpc+proto`), as an `http` server
//!   in front decodes them from HTTP/2 (cleartext prior knowledge, or TLS with ALPN `h2`).
//!   Request messages are de-framed with the size limit checked on each 5-byte prefix before
//!   the message is buffered (`RESOURCE_EXHAUSTED`); a compressed message is inflated when
//!   `grpc-encoding` is `gzip` (other encodings: `UNIMPLEMENTED`; the flag without an
//!   encoding, a bad flag or a stream cut inside a message: `INTERNAL`). When the binding's
//!   `catalog` names `.proto` services, a method they do not declare is `UNIMPLEMENTED` and a
//!   request message that does not decode as the method's input type is `INVALID_ARGUMENT`.
//!   `grpc-timeout` becomes the call's deadline, enforced here (`DEADLINE_EXCEEDED`, and the
//!   exit's call is dropped) and passed on. No route: `UNIMPLEMENTED`. Statuses the server
//!   decides before the exit answers are sent trailers-only. Other methods get HTTP 405, other
//!   content types 415 (gRPC-Web is not served). The server records Zilla's `grpc.*` metrics
//!   for each call when the binding's `telemetry.metrics` select them ([`telemetry`]).
//! - `client` (accepts `grpc`, emits `http`): sends each call as an HTTP/2 `POST` through its
//!   exit (an `http` client with `versions: [h2]`, or over TLS with ALPN `h2`), with the
//!   metadata, `te: trailers` and the time left as `grpc-timeout`. A trailers-only answer, an
//!   HTTP status other than 200 (mapped as gRPC specifies: 404 `UNIMPLEMENTED`, 503
//!   `UNAVAILABLE`, ...) or an unreachable origin (`UNAVAILABLE`) fails the call; otherwise
//!   the response metadata, messages (gzip inflated, size-checked) and the trailers' status
//!   come back. Dropping the response resets the upstream stream, so a client cancel reaches
//!   the server.
//!
//! Generic bindings (`echo`, `fan`) serve `grpc` callers through the `messages` adapter
//! registered here ([`messages`]): each request message becomes one message and what comes
//! back is the response, ending with `OK`.
//!
//! ```yaml
//! name: example
//! catalogs:
//!   host_filesystem:
//!     type: filesystem
//!     options:
//!       subjects:
//!         echo:
//!           path: proto/echo.proto
//! bindings:
//!   tcp_server:
//!     type: tcp
//!     kind: server
//!     options:
//!       port: 7151
//!     exit: http_server
//!   http_server:
//!     type: http
//!     kind: server
//!     options:
//!       versions: [h2]
//!     exit: grpc_server
//!   grpc_server:
//!     type: grpc
//!     kind: server
//!     catalog:
//!       host_filesystem:
//!         - subject: echo
//!     routes:
//!       - when:
//!           - method: example.EchoService/*
//!             metadata:
//!               custom-text: custom value
//!               custom-binary-bin:
//!                 base64: Y3VzdG9tIHZhbHVl
//!         exit: grpc_client
//!   grpc_client:
//!     type: grpc
//!     kind: client
//!     exit: http_client
//!   http_client:
//!     type: http
//!     kind: client
//!     options:
//!       versions: [h2]
//!     exit: tcp_client
//!   tcp_client:
//!     type: tcp
//!     kind: client
//!     options:
//!       host: localhost
//!       port: 50051
//! ```
//!
//! Binding-level `catalog` (`server` kind; refused on a `client`): `{<catalog>: [{subject,
//! version?}]}`, each entry a `.proto` text compiled at load with `protox` (an entry is
//! importable as `<subject>.proto`, and `google/protobuf/*.proto` are built in); a schema that
//! does not compile is a load error.
//! Options: none (Zilla 1.x `options.services` is refused; use `catalog`). Routes, both kinds:
//! `when: [{method, metadata}]`, `method` as `pkg.Service/Method` with `*` wildcards,
//! `metadata` values as text or `{base64: ...}` for binary values.
//!
//! Properties: `zilla.binding.grpc.maximum.message.size` (bytes, default 4194304) bounds each
//! message in both directions, before and after decompression.

pub mod codec;
pub mod config;
pub mod kind;
pub mod messages;
pub mod metadata;
pub mod proto;
pub mod telemetry;

mod client;
mod server;

use std::sync::Arc;

use zilla_binding_http::kind::Http;
use zilla_engine::binding::{Binding, BindingFactory, BindingSchema, BuildContext};
use zilla_engine::stream::StreamKind;
use zilla_engine::{BindingKind, BuildError, Registry};

pub use kind::{
    Code, Grpc, GrpcHandler, GrpcRequest, GrpcResponse, MessageStream, Metadata, MetadataValue,
    ResponseItem, ResponseStream, Status,
};

use config::{GrpcCondition, GrpcOptions, MethodCondition};

/// Registers the `grpc` binding type and the adapter that carries `grpc` calls to generic
/// bindings.
pub fn register(registry: &mut Registry) {
    registry
        .binding(GrpcFactory)
        .properties(&["zilla.binding.grpc.maximum.message.size"]);
    registry.adapter::<zilla_engine::messages::Messages, Grpc>(messages::grpc_over_messages);
    registry.metric_group(&telemetry::GRPC_METRICS);
}

/// Builds grpc bindings.
#[derive(Debug)]
pub struct GrpcFactory;

impl BindingFactory for GrpcFactory {
    fn type_name(&self) -> &'static str {
        "grpc"
    }

    fn kinds(&self) -> &'static [BindingKind] {
        &[BindingKind::Server, BindingKind::Client]
    }

    fn accepts(&self, kind: BindingKind) -> &'static [&'static str] {
        match kind {
            BindingKind::Server => &[Http::NAME],
            _ => &[Grpc::NAME],
        }
    }

    fn emits(&self, kind: BindingKind) -> Option<&'static str> {
        match kind {
            BindingKind::Server => Some(Grpc::NAME),
            _ => Some(Http::NAME),
        }
    }

    fn schema(&self, _kind: BindingKind) -> BindingSchema {
        BindingSchema {
            options: Some(BindingSchema::of::<GrpcOptions>()),
            options_required: false,
            when: Some(BindingSchema::of::<GrpcCondition>()),
            with: None,
        }
    }

    fn catalog_schema(&self, kind: BindingKind) -> Option<serde_json::Value> {
        // The server checks calls against the services; a client has nothing to check them
        // for, so its `catalog` is refused rather than ignored.
        (kind == BindingKind::Server).then(|| {
            BindingSchema::of::<std::collections::BTreeMap<String, Vec<config::ProtoReference>>>()
        })
    }

    fn build(&self, context: &mut BuildContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
        let options: GrpcOptions = context.options()?;
        if options.services.is_some() {
            return Err(BuildError::at(
                "options.services",
                "grpc `options.services` is not supported; name the .proto files with `catalog`",
            ));
        }
        if context.config().exit.is_none() && context.config().routes.is_empty() {
            return Err(BuildError::at(
                "",
                "a grpc binding needs an `exit` or `routes` with exits",
            ));
        }
        let services = load_services(context)?;
        let maximum = context.properties().u64(
            "zilla.binding.grpc.maximum.message.size",
            codec::DEFAULT_MAXIMUM_MESSAGE_SIZE as u64,
        );
        let maximum_message_size = usize::try_from(maximum).unwrap_or(usize::MAX);
        match context.kind() {
            BindingKind::Server => {
                let routes = context.routes::<Grpc, _, _, ()>(MethodCondition::compile)?;
                let metrics = Arc::new(telemetry::GrpcMetrics::new(&context.metrics()));
                context.publish::<Http>(Arc::new(server::GrpcServer {
                    routes,
                    services,
                    maximum_message_size,
                    metrics,
                }));
            }
            _ => {
                let routes = context.routes::<Http, _, _, ()>(MethodCondition::compile)?;
                context.publish::<Grpc>(Arc::new(client::GrpcClient {
                    routes,
                    maximum_message_size,
                }));
            }
        }
        Ok(Arc::new(Built))
    }
}

/// The services of the binding-level `catalog`, compiled; `None` when it names none.
fn load_services(context: &BuildContext<'_>) -> Result<Option<Arc<proto::Services>>, BuildError> {
    let schemas = zilla_cataloged::binding_catalog_schemas(context)?;
    if schemas.is_empty() {
        return Ok(None);
    }
    let sources: Vec<(String, String)> = schemas
        .iter()
        .map(|(reference, schema)| {
            // The schema allows only subjects (`config::ProtoReference`).
            let name = match &reference.subject {
                Some(subject) => proto::file_name(subject),
                None => format!("schema-{}.proto", schema.id),
            };
            (name, schema.text.to_string())
        })
        .collect();
    let pool = proto::compile(&sources).map_err(|error| BuildError::at("catalog", error))?;
    Ok(Some(Arc::new(proto::Services::new(&pool))))
}

/// A built grpc binding: all its work happens in the handler it publishes.
struct Built;

impl Binding for Built {}
