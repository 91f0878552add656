//! The `mqtt` binding (MQTT 3.1.1 and 5), its codec ([`codec`]) and the `mqtt` stream kind
//! ([`kind`]).
//!
//! - `server` (accepts `bytes`, or `ws` for MQTT over WebSocket; opens `mqtt`): accepts
//!   CONNECT (3.1.1 or 5, limited by `options.versions`), checks credentials with the guard
//!   named in `options.authorization`, opens the client's session on the exit its `session`
//!   route chooses and answers CONNACK with what server and exit support together. Routes'
//!   `guarded` roles are checked against the sessions the connection holds: with
//!   `authorization`, that guard's session (over WebSocket, with those of the guards before
//!   it); without, the sessions its incoming stream carries, such as the one a `tls`
//!   server's `x509` guard made from the client certificate. A CONNECT whose sessions no
//!   route takes is refused with CONNACK 0x87 not authorized (5 in 3.1.1). It then
//!   runs the connection: keep alive (the client's, clamped for MQTT 5, enforced at 1.5× on
//!   what the client sends, deliveries to it not counting; over tcp or tls it replaces the
//!   transport's idle timeout, which a keep-alive of 0 turns off, and that timer enforces it;
//!   under a WebSocket, which holds the transport, the connection times its client itself
//!   and the transport's timeout stays as it is),
//!   QoS 0, 1 and 2 with their acknowledgement flows in both directions (a delivery its
//!   exit says was delivered before goes with the DUP flag), receive maximum
//!   both ways, topic aliases from the client, SUBSCRIBE options and subscription
//!   identifiers, UNSUBSCRIBE, PINGREQ, DISCONNECT (with session expiry and "with will").
//!   CONNACK says session present when the exit resumed one; the QoS 2 publications such a
//!   session had taken and not seen released are answered PUBREC again, not published again,
//!   when the client sends them anew, and the QoS 2 deliveries its subscriber had answered
//!   with PUBREC and not completed are released again (PUBREL after CONNACK; PUBREL goes
//!   once the exit has kept the PUBREC). The deliveries the session had sent and not seen
//!   acknowledged come again with their packet identifiers when the exit gives them, and no
//!   other delivery takes one of those meanwhile. A connection taken over by another with the same client
//!   identifier ends its sessions with 0x8E, not as an abnormal close.
//!   Publications and subscriptions are routed per topic by `publish`/`subscribe` routes;
//!   one that no route takes is refused with 0x87 (MQTT 5) or by closing (3.1.1, which has
//!   no other way). A bad packet is answered with the specification's reason code in
//!   DISCONNECT (MQTT 5) and the connection closed; only that connection is affected.
//!   Extended authentication (AUTH) is not offered: CONNECT with an authentication method
//!   is refused with 0x8C.
//! - `client` (accepts `mqtt`, opens `bytes`): carries each session to a broker over its own
//!   connection through its exit (a `tcp` or `tls` client), speaking MQTT 5 whatever the
//!   version the client spoke to the server. Acknowledgements are end to end: a publisher's
//!   PUBACK/PUBREC is the broker's, and a delivery is acknowledged to the broker only once
//!   the subscriber acknowledged it, so an unacknowledged QoS 1 or 2 message stays with the
//!   broker's session. A session that ends without DISCONNECT closes the broker connection
//!   without one, so the broker publishes the will (with its delay). Its routes are refused:
//!   the client has its one `exit`. A session whose broker leaves every packet identifier in
//!   use (65 535 subscribes, unsubscribes and QoS 1/2 publications unanswered) ends with 0x97
//!   (quota exceeded) instead of waiting for one.
//!
//! Retained messages, message expiry, no-local, retain-as-published, retain handling,
//! shared subscriptions, session present and takeover (0x8E) are the broker's: the client
//! passes them through unchanged.
//!
//! ```yaml
//! name: example
//! stores:
//!   memory0:
//!     type: memory
//! bindings:
//!   tcp_server:
//!     type: tcp
//!     kind: server
//!     options:
//!       host: 0.0.0.0
//!       port: 1883
//!     exit: mqtt_server
//!   mqtt_server:
//!     type: mqtt
//!     kind: server
//!     options:
//!       store: memory0
//!     routes:
//!       - when:
//!           - publish:
//!               - topic: sensors/#
//!           - subscribe:
//!               - topic: sensors/#
//!         exit: mqtt_client
//!   mqtt_client:
//!     type: mqtt
//!     kind: client
//!     exit: tcp_client
//!   tcp_client:
//!     type: tcp
//!     kind: client
//!     options:
//!       host: localhost
//!       port: 1884
//! ```
//!
//! Server options: `store`, the store (top-level `stores`, e.g. `type: memory`) that keeps
//! which connection owns each client identifier, under `<client-id>#owner` as Zilla keys it:
//! a connection claims its identifier after CONNECT passed its checks, the connection that
//! held it sees the claim and ends with 0x8E, and a connection removes its claim when it ends
//! unless another took it. Zilla requires `store` on every mqtt server; configs without it
//! still load here, and the server then keeps the claims in a memory store of its own
//! (bounded by `zilla.store.memory.maximum.bytes` like a named one). A claim the store
//! refuses (full) is answered CONNACK 0x89 (server busy; 3 "server unavailable" in 3.1.1);
//! `versions` (`[v3.1.1, v5]`), `authorization.<guard>.credentials.connect`
//! with one of `username`/`password`, a pattern with a `{credentials}` capture
//! (`Bearer {credentials}`); the field that carried the credentials is not passed on;
//! `topics: [{name, content}]`: a PUBLISH to a topic the first matching `name` filter covers
//! must pass its `content` model, or the connection is closed with 0x99 (payload format
//! invalid: DISCONNECT in MQTT 5, as Zilla does; a plain close in 3.1.1) and nothing is
//! passed on. Route
//! conditions: `session: [{client-id}]` (`*` wildcards), `publish: [{topic}]` and
//! `subscribe: [{topic}]` (`+` and `#` wildcards; a subscribe condition is matched against
//! the filter's text). A route with no `session` condition takes every session; one with no
//! `publish` (`subscribe`) condition takes no publication (subscription), except a route
//! with no `when` at all and the binding's `exit`, which take everything.
//!
//! Properties (prefix `zilla.binding.mqtt.`): `maximum.packet.size` (1048576, bytes, also
//! announced in CONNACK), `receive.maximum` (65535 announced; QoS 1/2 publications a client
//! may have in flight), `receive.bytes.maximum` (4194304: bytes of a client's QoS 1/2
//! publications, SUBSCRIBEs and UNSUBSCRIBEs waiting for their exits' answers; one that would
//! pass it is refused in turn: PUBACK or PUBREC `0x97`, SUBACK `0x97` per filter (`0x80` in
//! 3.1.1), UNSUBACK `0x80`; a 3.1.1 publication or unsubscription closes the connection
//! in its turn instead, 3.1.1 having no way to refuse one, and what follows it is not handled
//! (a DISCONNECT among it neither: the close is abnormal, will included). One is always taken when none waits), `topic.alias.maximum` (0), `keep.alive.minimum` (10) and
//! `keep.alive.maximum` (1000) seconds, `connect.timeout` (3 s: CONNECT, and the broker's
//! CONNACK on the client), `maximum.qos` (2), `retain.available`,
//! `wildcard.subscription.available`, `subscription.identifiers.available`,
//! `shared.subscription.available` (true), `inflight.maximum` (256, deliveries in flight
//! toward one client) and `queue.capacity` (64, deliveries queued between an exit and one
//! client).
//!
//! The codec is our own: no maintained codec-only crate fits. `mqttbytes` is abandoned,
//! `rumqttc`'s codec is internal to its client, `ntex-mqtt` is a framework, and
//! `mqtt-protocol-core` is a whole connection state machine (client and broker roles,
//! automatic acknowledgements) rather than a codec; `mqtt-proto` is a codec but gives no
//! reason codes for its decode errors, which a server needs to answer bad input the way the
//! specification asks.

pub mod codec;
pub mod config;
pub mod kind;

mod client;
mod ownership;
mod server;
#[cfg(test)]
mod server_tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes as Payload;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zilla_binding_ws::{Ws, WsHandler, WsMessage, WsRequest, WsStream};
use zilla_engine::binding::{Binding, BindingFactory, BindingSchema, BuildContext, StartContext};
use zilla_engine::guard::Authorization;
use zilla_engine::pattern::Pattern;
use zilla_engine::stream::{
    BoxFuture, ByteStream, Bytes, BytesHandler, StreamError, StreamInfo, StreamKind,
};
use zilla_engine::{BindingKind, BuildError, Registry};
use zilla_store_memory::MemoryStore;

pub use kind::{Mqtt, MqttHandler, MqttSession};

use codec::{QoS, Version};
use config::{MqttCondition, MqttOptions, MqttVersionName};

/// Registers the `mqtt` binding type.
pub fn register(registry: &mut Registry) {
    registry
        .binding(MqttFactory)
        .properties(PROPERTIES)
        // A server naming no store keeps its own memory store, bounded by this property even
        // in a distribution built without the `memory` store type.
        .properties(&[zilla_store_memory::MAXIMUM_BYTES_PROPERTY]);
}

/// Every `zilla.binding.mqtt.*` property the binding reads, declared to the registry.
const PROPERTIES: &[&str] = &[
    "zilla.binding.mqtt.connect.timeout",
    "zilla.binding.mqtt.inflight.maximum",
    "zilla.binding.mqtt.keep.alive.maximum",
    "zilla.binding.mqtt.keep.alive.minimum",
    "zilla.binding.mqtt.maximum.packet.size",
    "zilla.binding.mqtt.maximum.qos",
    "zilla.binding.mqtt.queue.capacity",
    "zilla.binding.mqtt.receive.bytes.maximum",
    "zilla.binding.mqtt.receive.maximum",
    "zilla.binding.mqtt.retain.available",
    "zilla.binding.mqtt.shared.subscription.available",
    "zilla.binding.mqtt.subscription.identifiers.available",
    "zilla.binding.mqtt.topic.alias.maximum",
    "zilla.binding.mqtt.wildcard.subscription.available",
];

/// Builds mqtt bindings.
#[derive(Debug)]
pub struct MqttFactory;

const PREFIX: &str = "zilla.binding.mqtt.";

impl BindingFactory for MqttFactory {
    fn type_name(&self) -> &'static str {
        "mqtt"
    }

    fn kinds(&self) -> &'static [BindingKind] {
        &[BindingKind::Server, BindingKind::Client]
    }

    fn accepts(&self, kind: BindingKind) -> &'static [&'static str] {
        match kind {
            BindingKind::Server => &[Bytes::NAME, Ws::NAME],
            _ => &[Mqtt::NAME],
        }
    }

    fn emits(&self, kind: BindingKind) -> Option<&'static str> {
        match kind {
            BindingKind::Server => Some(Mqtt::NAME),
            _ => Some(Bytes::NAME),
        }
    }

    fn schema(&self, kind: BindingKind) -> BindingSchema {
        match kind {
            BindingKind::Server => BindingSchema {
                options: Some(BindingSchema::of::<MqttOptions>()),
                options_required: false,
                when: Some(BindingSchema::of::<MqttCondition>()),
                with: None,
            },
            _ => BindingSchema {
                options: None,
                options_required: false,
                when: None,
                with: None,
            },
        }
    }

    fn build(&self, context: &mut BuildContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
        let properties = context.properties();
        let number = |name: &str, default: u64| properties.u64(&format!("{PREFIX}{name}"), default);
        let flag = |name: &str| properties.bool(&format!("{PREFIX}{name}"), true);
        let clamp16 = |value: u64| u16::try_from(value).unwrap_or(u16::MAX);
        let maximum_packet_size = u32::try_from(number("maximum.packet.size", 1 << 20))
            .unwrap_or(codec::MAX_VARINT)
            .clamp(16, codec::MAX_VARINT + 5);
        let connect_timeout = Duration::from_secs(number("connect.timeout", 3));
        let queue_capacity = usize::try_from(number("queue.capacity", 64)).unwrap_or(64);
        let lifecycle = Lifecycle::default();
        match context.kind() {
            BindingKind::Server => {
                if context.config().exit.is_none() && context.config().routes.is_empty() {
                    return Err(BuildError::at(
                        "",
                        "an mqtt server needs an `exit` or `routes` with exits",
                    ));
                }
                let options: MqttOptions = context.options()?;
                let versions = match &options.versions {
                    None => vec![Version::V3_1_1, Version::V5],
                    Some(names) => names
                        .iter()
                        .map(|name| match name {
                            MqttVersionName::V3_1_1 => Version::V3_1_1,
                            MqttVersionName::V5 => Version::V5,
                        })
                        .collect(),
                };
                let credentials = match &options.authorization {
                    None => None,
                    Some(guards) => {
                        if guards.len() != 1 {
                            return Err(BuildError::at(
                                "options.authorization",
                                "exactly one guard is supported",
                            ));
                        }
                        let Some((name, authorization)) = guards.iter().next() else {
                            return Err(BuildError::at("options.authorization", "no guard"));
                        };
                        let connect = &authorization.credentials.connect;
                        let (field, pattern) = match (&connect.username, &connect.password) {
                            (Some(pattern), None) => (server::CredentialsField::Username, pattern),
                            (None, Some(pattern)) => (server::CredentialsField::Password, pattern),
                            _ => {
                                return Err(BuildError::at(
                                    format!("options.authorization.{name}.credentials.connect"),
                                    "give exactly one of `username` and `password`",
                                ));
                            }
                        };
                        let path = format!("options.authorization.{name}.credentials.connect");
                        let pattern = Pattern::compile(pattern, None)
                            .map_err(|message| BuildError::at(path.clone(), message))?;
                        if !pattern.as_str().contains("{credentials}") {
                            return Err(BuildError::at(
                                path,
                                "the pattern needs a `{credentials}` capture",
                            ));
                        }
                        let (guard_name, guard) =
                            context.presented_guard(name).map_err(|error| {
                                BuildError::at("options.authorization", error.message)
                            })?;
                        Some(server::Credentials {
                            guard_name,
                            guard,
                            field,
                            pattern,
                        })
                    }
                };
                let settings = server::Settings {
                    versions,
                    maximum_packet_size,
                    receive_maximum: clamp16(number("receive.maximum", 65535)).max(1),
                    topic_alias_maximum: clamp16(number("topic.alias.maximum", 0)),
                    keep_alive_minimum: clamp16(number("keep.alive.minimum", 10)),
                    keep_alive_maximum: clamp16(number("keep.alive.maximum", 1000)),
                    connect_timeout,
                    maximum_qos: match number("maximum.qos", 2) {
                        0 => QoS::AtMostOnce,
                        1 => QoS::AtLeastOnce,
                        _ => QoS::ExactlyOnce,
                    },
                    retain_available: flag("retain.available"),
                    wildcard_available: flag("wildcard.subscription.available"),
                    subscription_ids_available: flag("subscription.identifiers.available"),
                    shared_available: flag("shared.subscription.available"),
                    inflight_maximum: clamp16(number("inflight.maximum", 256)).max(1),
                    pending_bytes_maximum: usize::try_from(number(
                        "receive.bytes.maximum",
                        4 << 20,
                    ))
                    .unwrap_or(usize::MAX)
                    .max(1),
                    queue_capacity,
                };
                let mut topics = Vec::new();
                for (index, entry) in options.topics.iter().flatten().enumerate() {
                    let path = format!("options.topics[{index}]");
                    if !codec::topic::valid_filter(&entry.name) {
                        return Err(BuildError::at(format!("{path}.name"), "not a topic filter"));
                    }
                    let validator = match &entry.content {
                        Some(content) => Some(context.model(content, &format!("{path}.content"))?),
                        None => None,
                    };
                    topics.push(server::TopicContent {
                        filter: entry.name.clone(),
                        validator,
                    });
                }
                let store = match &options.store {
                    Some(name) => context
                        .store(name)
                        .map_err(|error| BuildError::at("options.store", error.message))?,
                    None => Arc::new(MemoryStore::new(zilla_store_memory::maximum_bytes(
                        context.properties(),
                    ))),
                };
                let routes = context.routes::<Mqtt, _, _, ()>(server::Condition::compile)?;
                let shared = Arc::new(server::Shared {
                    routes,
                    topics,
                    settings,
                    credentials,
                    lifecycle: lifecycle.clone(),
                    store,
                });
                context.publish::<Bytes>(Arc::new(ServerHandler {
                    shared: shared.clone(),
                }));
                context.publish::<Ws>(Arc::new(ServerHandler { shared }));
            }
            _ => {
                // The client has one way out; Zilla's mqtt client routes nothing either.
                if !context.config().routes.is_empty() {
                    return Err(BuildError::at(
                        "routes",
                        "`routes` are not supported on an mqtt client: give it one `exit`",
                    ));
                }
                let Some(exit) = context.config().exit.clone() else {
                    return Err(BuildError::at("exit", "an mqtt client needs an `exit`"));
                };
                let exit = context.exit::<Bytes>(&exit)?;
                context.publish::<Mqtt>(Arc::new(client::MqttClient {
                    exit,
                    settings: client::ClientSettings {
                        connect_timeout,
                        maximum_packet_size,
                        receive_maximum: clamp16(number("receive.maximum", 65535)).max(1),
                        queue_capacity,
                    },
                    lifecycle: lifecycle.clone(),
                }));
            }
        }
        Ok(Arc::new(Built { lifecycle }))
    }
}

/// Where connections and broker sessions run: tracked for shutdown, and cut when the
/// binding is retired.
#[derive(Clone, Default)]
pub(crate) struct Lifecycle {
    started: Arc<OnceLock<(CancellationToken, TaskTracker)>>,
}

impl Lifecycle {
    /// Cancelled when the binding is retired (never, before it starts).
    pub(crate) fn retired(&self) -> CancellationToken {
        self.started
            .get()
            .map(|(retired, _)| retired.clone())
            .unwrap_or_default()
    }

    /// Runs `task`, tracked once the binding has started.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        match self.started.get() {
            Some((_, tasks)) => {
                tasks.spawn(task);
            }
            None => {
                tokio::spawn(task);
            }
        }
    }
}

struct Built {
    lifecycle: Lifecycle,
}

impl Binding for Built {
    fn start(&self, context: &StartContext) {
        let _ = self
            .lifecycle
            .started
            .set((context.retired.clone(), context.tasks.clone()));
    }
}

/// The server's handler for byte streams (MQTT over TCP or TLS) and WebSocket sessions.
struct ServerHandler {
    shared: Arc<server::Shared>,
}

impl BytesHandler for ServerHandler {
    fn accept(&self, stream: ByteStream) -> BoxFuture<'_, Result<(), StreamError>> {
        // A server with a guard of its own authorizes with that guard's verdict alone; one
        // without authorizes with the sessions established on the path (a tls server's
        // `x509` guard), as Zilla's stream authorization travels inward.
        let authorization = match &self.shared.credentials {
            Some(_) => Authorization::default(),
            None => stream.info.authorization.clone(),
        };
        Box::pin(
            self.shared
                .clone()
                .serve(stream.io, Some(stream.info), authorization),
        )
    }

    fn connect(&self, info: StreamInfo) -> BoxFuture<'_, Result<ByteStream, StreamError>> {
        let handler: Arc<dyn BytesHandler> = Arc::new(ServerHandler {
            shared: self.shared.clone(),
        });
        Box::pin(async move { zilla_engine::stream::connect_via_accept(handler, info) })
    }
}

/// Bytes in flight between a WebSocket session and its MQTT connection.
const WS_PIPE_BUFFER: usize = 64 * 1024;

impl WsHandler for ServerHandler {
    /// MQTT over WebSocket: binary messages carry the byte stream (MQTT 5 §6), in any
    /// framing; the connection is served over an in-memory pipe.
    fn handle(
        &self,
        request: WsRequest,
        mut incoming: WsStream,
    ) -> BoxFuture<'_, Result<WsStream, StreamError>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            let authorization = request.authorization().cloned().unwrap_or_default();
            let info = request.stream_info().cloned();
            let (near, far) = tokio::io::duplex(WS_PIPE_BUFFER);
            let (mut far_reader, mut far_writer) = tokio::io::split(far);
            let lifecycle = shared.lifecycle.clone();
            lifecycle.spawn(async move {
                let _ = shared.serve(near, info, authorization).await;
            });
            // Incoming messages are written into the pipe on their own task.
            tokio::spawn(async move {
                while let Some(Ok(message)) = incoming.next().await {
                    let data = match message {
                        WsMessage::Binary(data) => data,
                        // Text frames are not MQTT (MQTT 5 §6): the connection ends.
                        WsMessage::Text(_) | WsMessage::Close(_) => break,
                    };
                    if far_writer.write_all(&data).await.is_err() {
                        break;
                    }
                }
                let _ = far_writer.shutdown().await;
            });
            let outgoing = PipeReader {
                reader: Box::pin(async move {
                    let mut chunk = vec![0u8; 16 * 1024];
                    let read = far_reader.read(&mut chunk).await;
                    (far_reader, chunk, read)
                }),
            };
            Ok(Box::pin(outgoing) as WsStream)
        })
    }
}

type PipeRead = (
    tokio::io::ReadHalf<tokio::io::DuplexStream>,
    Vec<u8>,
    std::io::Result<usize>,
);

/// What the MQTT connection writes, as binary messages.
struct PipeReader {
    reader: Pin<Box<dyn Future<Output = PipeRead> + Send>>,
}

impl Stream for PipeReader {
    type Item = Result<WsMessage, StreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let (mut reader, mut chunk, read) = match self.reader.as_mut().poll(cx) {
            Poll::Ready(done) => done,
            Poll::Pending => return Poll::Pending,
        };
        match read {
            Ok(0) | Err(_) => {
                self.reader = Box::pin(std::future::pending());
                Poll::Ready(None)
            }
            Ok(count) => {
                let message = WsMessage::Binary(Payload::copy_from_slice(&chunk[..count]));
                self.reader = Box::pin(async move {
                    let read = reader.read(&mut chunk).await;
                    (reader, chunk, read)
                });
                Poll::Ready(Some(Ok(message)))
            }
        }
    }
}
