//! The `http` binding: HTTP/1.1 and HTTP/2 on byte streams, and the `http` stream kind (see
//! [`kind`]) that carries one request/response exchange between bindings.
//!
//! - `server` (accepts `bytes`, emits `http`) serves each connection with HTTP/1.1
//!   (keep-alive, pipelining, chunked bodies both ways, `Expect: 100-continue`) or HTTP/2
//!   (ALPN `h2` negotiated by a `tls` server in front, or prior knowledge over cleartext). Each
//!   exchange gets the connection's [`StreamInfo`](zilla_engine::stream::StreamInfo) in its
//!   extensions, is checked against the CORS policy (preflights are answered here),
//!   authorized by the guard of `options.authorization` when it carries credentials, and
//!   handed to the first route whose `when.headers` match and whose `guarded` roles are held.
//!   No route: 404 with an empty body; a route whose guard refuses: 401 without credentials,
//!   403 with credentials rejected or roles missing. A failed exchange is answered with the
//!   status of its error class ([`kind::status_of`]). Protocol upgrades are handed over
//!   (hyper's `OnUpgrade` stays in the request's extensions), and HTTP/2 extended CONNECT is
//!   enabled, so a `ws` server can sit behind it in both versions. An HTTP/2 connection's
//!   streams are polled by the connection's own task rather than spawned one task each.
//!   HTTP/1.1 requests without a body (`GET`, `HEAD`, an SSE subscription...) are read and
//!   answered by the connection's own task with the framing of [`h1`]; from the first request
//!   that is anything else (a body, `expect`, an upgrade, HTTP/1.0, a malformed head), hyper's
//!   HTTP/1.1 server serves the rest of the connection, starting with the bytes already read.
//! - `client` (accepts `http`, emits `bytes`) sends each exchange to the origin its
//!   `:scheme`/`:authority` name, over connections opened through its exit (a `tcp` client,
//!   or a `tls` client for https) and kept in a pool per origin. It speaks HTTP/2 when
//!   `versions` is `[h2]` (prior knowledge) or when TLS negotiated `h2`, else HTTP/1.1. An
//!   HTTP/2-only client keeps one connection per worker and origin; the origin's `GOAWAY` or
//!   close sends the next request on a new one, and a connection idle for
//!   `zilla.binding.http.client.idle.timeout.millis` is closed.
//!   Bodies and trailers stream both ways with backpressure. An upgrade (`connection:
//!   upgrade`) is passed to the origin; when the request came from an http server, the two
//!   upgraded connections are joined (WebSocket proxying), otherwise the `101` response keeps
//!   its `OnUpgrade` for the caller.
//!
//! ```yaml
//! name: example
//! bindings:
//!   tcp_server:
//!     type: tcp
//!     kind: server
//!     options:
//!       port: 8080
//!     exit: http_server
//!   http_server:
//!     type: http
//!     kind: server
//!     options:
//!       versions: [http/1.1, h2]
//!       access-control:
//!         policy: cross-origin
//!         allow:
//!           origins: [https://example.com]
//!           credentials: true
//!       authorization:
//!         jwt0:
//!           credentials:
//!             headers:
//!               authorization: Bearer {credentials}
//!     routes:
//!       - when:
//!           - headers:
//!               :path: /items/{id}
//!               :method: GET
//!         guarded:
//!           jwt0: [read:items]
//!         with:
//!           headers:
//!             overrides:
//!               x-item-id: ${params.id}
//!         exit: http_client
//!   http_client:
//!     type: http
//!     kind: client
//!     exit: tcp_client
//!   tcp_client:
//!     type: tcp
//!     kind: client
//!     options:
//!       host: localhost
//!       port: 9090
//! ```
//!
//! Options (both kinds unless noted):
//! - `versions`: `http/1.1`, `h2` (default both).
//! - `access-control` (server): `policy` `same-origin` (default) or `cross-origin` with
//!   `allow` `{origins, methods, headers, credentials}`, `max-age` (seconds) and
//!   `expose.headers`.
//! - `authorization` (server): one guard, with `credentials` patterns by `headers`, `query`
//!   parameter or `cookies` name (`Bearer {credentials}`, `{credentials}`, or
//!   `Basic {username}:{password}` for a header).
//! - `overrides`: request headers set on every routed (server) or sent (client) request.
//! - `requests` (server): request validation with models (see [`requests`]). Each entry has
//!   `path` (with `{name}` parameters; a trailing `/` and a query string may follow),
//!   optional `method` and `content-type` list, and models for `headers` (by name),
//!   `params.path` (by `{name}`), `params.query` (by name) and `content` (the body). The
//!   first entry matching a routed request applies; a value its model rejects gets `400`
//!   with an empty body, before the exit sees the request. A validated body is read whole
//!   first (bounded: see [`limits`]). `responses` are checked at load but not applied, as
//!   in Zilla's server.
//! - `requests` (client): response validation. The entry matching the request (by `path`,
//!   `method`, `content-type`) picks, among its `responses`, the last one whose `status` and
//!   `content-type` (media type, parameters aside) match; its `headers` models and
//!   `content` model (body read whole, bounded by the validated body limit) must pass, or
//!   the response becomes `502 Bad Gateway` (Zilla cuts the body short instead). Request
//!   models (`headers`, `params`, `content`) on a client are refused, as Zilla's client
//!   ignores them.
//!
//! Routes: `when: [{headers: {name: pattern}}]` (pseudo-headers allowed, `*` and `{param}`
//! wildcards), `guarded` (roles may use `${method}` and `${path}`), and
//! `with.headers.overrides` (values may use `${params.<name>}`). Limits and tuning come from
//! properties, listed in [`limits`].

pub mod body;
pub mod client;
pub mod config;
pub mod cors;
pub mod credentials;
pub mod expiry;
pub mod h1;
pub mod io;
pub mod kind;
pub mod limits;
pub mod messages;
pub mod requests;
pub mod route;
pub mod server;
mod streams;
pub mod telemetry;

use std::sync::Arc;

use zilla_engine::binding::{Binding, BindingFactory, BindingSchema, BuildContext};
use zilla_engine::{BindingKind, BuildError, Registry};

pub use kind::{Body, Http, HttpHandler, Request, Response};

use config::{HttpClientOptions, HttpCondition, HttpServerOptions, HttpWith};

/// Registers the `http` binding type.
pub fn register(registry: &mut Registry) {
    registry.binding(HttpFactory).properties(limits::PROPERTIES);
    registry.metric_group(&telemetry::HTTP_METRICS);
    registry.adapter::<zilla_engine::messages::Messages, Http>(messages::http_over_messages);
}

/// Builds http bindings.
#[derive(Debug)]
pub struct HttpFactory;

impl BindingFactory for HttpFactory {
    fn type_name(&self) -> &'static str {
        "http"
    }

    fn kinds(&self) -> &'static [BindingKind] {
        &[BindingKind::Server, BindingKind::Client]
    }

    fn accepts(&self, kind: BindingKind) -> &'static [&'static str] {
        match kind {
            BindingKind::Server => &["bytes"],
            _ => &["http"],
        }
    }

    fn emits(&self, kind: BindingKind) -> Option<&'static str> {
        match kind {
            BindingKind::Server => Some("http"),
            _ => Some("bytes"),
        }
    }

    fn schema(&self, kind: BindingKind) -> BindingSchema {
        let options = match kind {
            BindingKind::Server => BindingSchema::of::<HttpServerOptions>(),
            _ => BindingSchema::of::<HttpClientOptions>(),
        };
        BindingSchema {
            options: Some(options),
            options_required: false,
            when: Some(BindingSchema::of::<HttpCondition>()),
            with: Some(BindingSchema::of::<HttpWith>()),
        }
    }

    fn build(&self, context: &mut BuildContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
        match context.kind() {
            BindingKind::Server => server::HttpServer::build(context),
            _ => client::HttpClient::build(context),
        }
    }
}
