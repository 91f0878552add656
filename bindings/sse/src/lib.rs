//! The `sse` binding (Server-Sent Events) and the `sse` stream kind (see [`kind`]).
//!
//! - `server` (accepts `http`, opens `sse`): answers `GET` exchanges with a
//!   `text/event-stream`. The route is chosen on the path without query string; the subscriber's
//!   last event id comes from the `Last-Event-ID` header, or else the `lastEventId` query
//!   parameter. The stream starts with `retry:` and carries each event as `id:`, `event:` and
//!   one `data:` line per line of data; [`kind::SseItem::Challenge`] becomes Zilla's
//!   `challenge` event. A subscriber that sends `accept: text/event-stream;ext=timestamp`
//!   also gets Zilla's `timestamp:` field. Other methods get 405, an unrouted path 404, a last
//!   event id over 254 bytes 400. When the subscriber goes away, the exit's stream is dropped.
//! - `client` (accepts `sse`, opens `http`): sends `GET path` with
//!   `accept: text/event-stream` and `last-event-id` through its exit (an `http` client) and
//!   decodes the answer incrementally (comments, BOM, CR/LF/CRLF line ends, `retry`), with a
//!   bound on line and event size.
//!
//! ```yaml
//! name: example
//! bindings:
//!   http_server:
//!     type: http
//!     kind: server
//!     routes:
//!       - when:
//!           - headers:
//!               accept: text/event-stream
//!         exit: sse_server
//!   sse_server:
//!     type: sse
//!     kind: server
//!     options:
//!       retry: 5000
//!     routes:
//!       - when:
//!           - path: /events/{id}
//!         exit: sse_client
//!   sse_client:
//!     type: sse
//!     kind: client
//!     exit: http_client
//! ```
//!
//! Options: `retry` (milliseconds, default 2000) and, on a server, `requests[{path,
//! content}]`: the model of the events sent on a path (`*` and `{name}` wildcards, first
//! match applies). An event whose data the model refuses is dropped, as in Zilla, and the
//! others are sent in the model's view (e.g. Avro converted to JSON). Routes: `when:
//! [{path}]` with `*` and `{name}` wildcards, on both kinds.
//!
//! Properties: `zilla.binding.sse.initial.comment.enabled` (false) writes an empty comment
//! right after `retry:`; `zilla.binding.sse.challenge.event.type` (`challenge`);
//! `zilla.binding.sse.maximum.idle.time` (milliseconds, 0 = off) writes an empty comment
//! when nothing was written for that long; `zilla.binding.sse.client.maximum.event.size`
//! (bytes, 1048576) bounds what the client decodes.

pub mod codec;
pub mod config;
pub mod kind;

mod client;
mod server;

use std::sync::Arc;
use std::time::Duration;

use zilla_binding_http::kind::Http;
use zilla_engine::binding::{Binding, BindingFactory, BindingSchema, BuildContext};
use zilla_engine::pattern::Pattern;
use zilla_engine::stream::StreamKind;
use zilla_engine::{BindingKind, BuildError, Registry};

pub use kind::{Sse, SseChallenge, SseEvent, SseHandler, SseItem, SseRequest, SseStream};

use config::{DEFAULT_RETRY, SseCondition, SseOptions};
use server::PathCondition;

/// Registers the `sse` binding type.
pub fn register(registry: &mut Registry) {
    registry.binding(SseFactory).properties(&[
        "zilla.binding.sse.maximum.idle.time",
        "zilla.binding.sse.initial.comment.enabled",
        "zilla.binding.sse.challenge.event.type",
        "zilla.binding.sse.client.maximum.event.size",
    ]);
}

const DEFAULT_MAXIMUM_EVENT_SIZE: u64 = 1 << 20;

/// Builds sse bindings.
#[derive(Debug)]
pub struct SseFactory;

impl BindingFactory for SseFactory {
    fn type_name(&self) -> &'static str {
        "sse"
    }

    fn kinds(&self) -> &'static [BindingKind] {
        &[BindingKind::Server, BindingKind::Client]
    }

    fn accepts(&self, kind: BindingKind) -> &'static [&'static str] {
        match kind {
            BindingKind::Server => &[Http::NAME],
            _ => &[Sse::NAME],
        }
    }

    fn emits(&self, kind: BindingKind) -> Option<&'static str> {
        match kind {
            BindingKind::Server => Some(Sse::NAME),
            _ => Some(Http::NAME),
        }
    }

    fn schema(&self, kind: BindingKind) -> BindingSchema {
        let mut options = BindingSchema::of::<SseOptions>();
        if kind == BindingKind::Client
            && let Some(retry) = options.pointer_mut("/properties/retry")
        {
            retry["x-unsupported"] = serde_json::Value::from(
                "`retry` is not supported on an sse client: it is the reconnection time an sse server sends its subscribers",
            );
        }
        BindingSchema {
            options: Some(options),
            options_required: false,
            when: Some(BindingSchema::of::<SseCondition>()),
            with: None,
        }
    }

    fn build(&self, context: &mut BuildContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
        let options: SseOptions = context.options()?;
        let mut models = Vec::new();
        for (index, request) in options.requests.iter().flatten().enumerate() {
            let at = format!("options.requests[{index}]");
            if context.kind() != BindingKind::Server {
                return Err(BuildError::at(
                    &at,
                    "`requests` models apply to the events an sse server sends; a client has none",
                ));
            }
            let pattern = Pattern::compile(&request.path, Some('/'))
                .map_err(|message| BuildError::at(format!("{at}.path"), message))?;
            models.push((
                pattern,
                context.model(&request.content, &format!("{at}.content"))?,
            ));
        }
        if context.config().exit.is_none() && context.config().routes.is_empty() {
            return Err(BuildError::at(
                "",
                "an sse binding needs an `exit` or `routes` with exits",
            ));
        }
        let properties = context.properties();
        match context.kind() {
            BindingKind::Server => {
                let routes = context.routes::<Sse, _, _, ()>(PathCondition::compile)?;
                let idle = properties.millis("zilla.binding.sse.maximum.idle.time", Duration::ZERO);
                let server = Arc::new(server::SseServer {
                    routes,
                    writing: server::Writing {
                        retry: options.retry.unwrap_or(DEFAULT_RETRY),
                        initial_comment: properties
                            .bool("zilla.binding.sse.initial.comment.enabled", false),
                        challenge_event: properties
                            .get("zilla.binding.sse.challenge.event.type")
                            .unwrap_or("challenge")
                            .into(),
                        idle: (!idle.is_zero()).then_some(idle),
                    },
                    models,
                });
                context.publish::<Http>(server);
            }
            _ => {
                let routes = context.routes::<Http, _, _, ()>(PathCondition::compile)?;
                let max_event_size = properties.u64(
                    "zilla.binding.sse.client.maximum.event.size",
                    DEFAULT_MAXIMUM_EVENT_SIZE,
                );
                let client = Arc::new(client::SseClient {
                    routes,
                    max_event_size: usize::try_from(max_event_size).unwrap_or(usize::MAX),
                });
                context.publish::<Sse>(client);
            }
        }
        Ok(Arc::new(Built))
    }
}

/// A built sse binding: all its work happens in the handler it publishes.
struct Built;

impl Binding for Built {}
