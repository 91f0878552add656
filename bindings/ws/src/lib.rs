//! The `ws` binding (WebSocket, RFC 6455) and the `ws` stream kind (see [`kind`]).
//!
//! - `server` (accepts `http`, opens `ws`): checks the opening handshake (`GET` over
//!   HTTP/1.1 with `Upgrade: websocket`, `Connection: upgrade`, `Sec-WebSocket-Version: 13`
//!   and a well-formed `Sec-WebSocket-Key`; anything else gets 400), picks the first route
//!   that takes one of the offered subprotocols (in the peer's order of preference), asks the
//!   exit for the session, answers 101 with `Sec-WebSocket-Accept` and the chosen
//!   `Sec-WebSocket-Protocol`, and then speaks WebSocket on the handed-over connection:
//!   fragmented messages are joined, pings answered, close codes passed both ways, messages
//!   over the size bound closed with 1009. No route is 404; an exit that refuses maps as the
//!   `http` server maps errors. RFC 8441 (an HTTP/2 extended `CONNECT` with
//!   `:protocol: websocket`) is accepted too, answered 200, when the `http` server enables
//!   extended CONNECT.
//! - `client` (accepts `ws`, opens `http`): sends the upgrade through its exit (an `http`
//!   client that hands over the upgraded connection, as hyper does with its upgrade
//!   extension), checks `Sec-WebSocket-Accept` and the subprotocol, and runs the session.
//!   Fields the opener leaves empty come from `options.defaults`.
//!
//! ```yaml
//! name: example
//! bindings:
//!   http_server:
//!     type: http
//!     kind: server
//!     options:
//!       versions: [http/1.1]
//!     exit: ws_server
//!   ws_server:
//!     type: ws
//!     kind: server
//!     routes:
//!       - when:
//!           - protocol: echo
//!             path: /echo
//!         exit: echo_server
//!   echo_server:
//!     type: echo
//!     kind: server
//! ```
//!
//! Options (client only): `defaults{protocol, scheme, authority, path}`. Routes:
//! `when: [{protocol, scheme, authority, path}]` with `*` and `{name}` wildcards; `path`
//! includes the query string.
//!
//! Properties: `zilla.binding.ws.maximum.message.size` (bytes, 16777216) bounds one message,
//! fragments included.

pub mod config;
pub mod kind;

mod client;
mod server;
mod session;

use std::future::Future;
use std::sync::{Arc, OnceLock};

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zilla_binding_http::kind::Http;
use zilla_engine::binding::{Binding, BindingFactory, BindingSchema, BuildContext, StartContext};
use zilla_engine::stream::StreamKind;
use zilla_engine::{BindingKind, BuildError, Registry};

pub use kind::{Utf8Bytes, Ws, WsClose, WsHandler, WsMessage, WsRequest, WsStream};

use config::{WsCondition, WsOptions};
use server::Condition;

/// Registers the `ws` binding type.
pub fn register(registry: &mut Registry) {
    registry
        .binding(WsFactory)
        .properties(&["zilla.binding.ws.maximum.message.size"]);
    registry.adapter::<zilla_engine::messages::Messages, Ws>(kind::ws_over_messages);
}

const DEFAULT_MAXIMUM_MESSAGE_SIZE: u64 = 16 << 20;

/// Builds ws bindings.
#[derive(Debug)]
pub struct WsFactory;

impl BindingFactory for WsFactory {
    fn type_name(&self) -> &'static str {
        "ws"
    }

    fn kinds(&self) -> &'static [BindingKind] {
        &[BindingKind::Server, BindingKind::Client]
    }

    fn accepts(&self, kind: BindingKind) -> &'static [&'static str] {
        match kind {
            BindingKind::Server => &[Http::NAME],
            _ => &[Ws::NAME],
        }
    }

    fn emits(&self, kind: BindingKind) -> Option<&'static str> {
        match kind {
            BindingKind::Server => Some(Ws::NAME),
            _ => Some(Http::NAME),
        }
    }

    fn schema(&self, kind: BindingKind) -> BindingSchema {
        BindingSchema {
            options: match kind {
                BindingKind::Client => Some(BindingSchema::of::<WsOptions>()),
                _ => None,
            },
            options_required: false,
            when: Some(BindingSchema::of::<WsCondition>()),
            with: None,
        }
    }

    fn build(&self, context: &mut BuildContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
        if context.config().exit.is_none() && context.config().routes.is_empty() {
            return Err(BuildError::at(
                "",
                "a ws binding needs an `exit` or `routes` with exits",
            ));
        }
        let maximum = context.properties().u64(
            "zilla.binding.ws.maximum.message.size",
            DEFAULT_MAXIMUM_MESSAGE_SIZE,
        );
        let maximum = usize::try_from(maximum).unwrap_or(usize::MAX);
        let config = WebSocketConfig::default()
            .max_message_size(Some(maximum))
            .max_frame_size(Some(maximum));
        let runtime = Runtime::default();
        match context.kind() {
            BindingKind::Server => {
                let routes = context.routes::<Ws, _, _, ()>(Condition::compile)?;
                context.publish::<Http>(Arc::new(server::WsServer {
                    routes,
                    config,
                    runtime: runtime.clone(),
                }));
            }
            _ => {
                let options: WsOptions = context.options()?;
                let routes = context.routes::<Http, _, _, ()>(Condition::compile)?;
                context.publish::<Ws>(Arc::new(client::WsClient {
                    routes,
                    defaults: options.defaults.unwrap_or_default(),
                    config,
                    runtime: runtime.clone(),
                }));
            }
        }
        Ok(Arc::new(Built { runtime }))
    }
}

/// Where sessions run once their connection is handed over: tracked for shutdown, and cut
/// (close 1001) when the binding is retired.
#[derive(Clone, Default)]
pub(crate) struct Runtime {
    started: Arc<OnceLock<(CancellationToken, TaskTracker)>>,
}

impl Runtime {
    /// Runs `session`, which gets the token cancelled when the binding is retired.
    pub(crate) fn spawn<F, Fut>(&self, session: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        match self.started.get() {
            Some((retired, tasks)) => {
                tasks.spawn(session(retired.clone()));
            }
            None => {
                tokio::spawn(session(CancellationToken::new()));
            }
        }
    }
}

/// A built ws binding.
struct Built {
    runtime: Runtime,
}

impl Binding for Built {
    fn start(&self, context: &StartContext) {
        let _ = self
            .runtime
            .started
            .set((context.retired.clone(), context.tasks.clone()));
    }
}
