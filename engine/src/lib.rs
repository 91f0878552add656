//! The protocol-agnostic core of zilla-rs.
//!
//! - [`config`]: the `zilla.yaml` pipeline (substitution, YAML, schema, references, stream
//!   kinds), with errors that name file, line, column and config path: the `zilla-config`
//!   crate, re-exported.
//! - [`registry`]: the explicit list of component types compiled in; [`kinds`]: the adapters
//!   between stream kinds.
//! - [`binding`], [`stream`], [`messages`]: how bindings are built and how they hand streams to
//!   each other; `messages` is the kind generic bindings (`echo`, `fan`) serve.
//! - [`route`], [`pattern`], [`expr`]: Zilla's routing rules, wildcard patterns and runtime
//!   expressions, compiled once at load.
//! - [`engine`]: the running gateway, reload that keeps unchanged bindings, drain on shutdown.
//! - [`metrics`], [`events`], [`traces`], [`telemetry`]: Zilla's metric names and event stream
//!   and request spans, read by exporters, and the checks of `telemetry` sections: the
//!   `zilla-telemetry` crate, re-exported.
//! - [`limits`]: connection caps and clamping of client-supplied numbers, shared by every
//!   listener.
//! - [`workers`]: thread-per-core connection workers (one single-threaded runtime each);
//!   [`signal`]: waiting on shared signals without touching their locks on every poll;
//!   [`idle`]: idle timeouts, owned by the protocol on top of a connection: the
//!   `zilla-runtime` crate, re-exported.
//!
//! A minimal config the engine loads (with the `tcp` and `echo` bindings registered):
//!
//! ```yaml
//! name: example
//! bindings:
//!   tcp_server:
//!     type: tcp
//!     kind: server
//!     options:
//!       host: 0.0.0.0
//!       port: 12345
//!     exit: echo_server
//!   echo_server:
//!     type: echo
//!     kind: server
//! ```

pub mod binding;
pub mod components;
/// The config pipeline, in its own crate (`zilla-config`) and re-exported here.
pub use zilla_config as config;
pub mod engine;
/// Connection workers, shared-signal waits, connection idleness and a worker's recent time, in
/// their own crate (`zilla-runtime`).
pub use zilla_runtime::{idle, signal, time, workers};
/// Metrics, events, spans and the telemetry checks, in their own crate (`zilla-telemetry`).
pub use zilla_telemetry::{events, metrics, telemetry, traces};
pub mod expr;
pub mod guard;
pub mod kinds;
pub mod limits;
pub mod listeners;
pub mod messages;
mod metered;
pub mod pattern;
/// Port sets in tcp and tls options, from the config crate.
pub use zilla_config::ports;
pub mod properties;
pub mod registry;
pub mod route;
pub mod store_watch;
pub mod stream;
pub mod vault;

pub use binding::{Binding, BindingFactory, BindingSchema, BuildContext, BuildError, StartContext};
pub use config::{BindingKind, ConfigError, ConfigErrors, QualifiedName};
pub use engine::{ApplyReport, Engine};
pub use registry::{Expander, Registry};
pub use stream::{BoxFuture, ByteStream, Bytes, BytesHandler, StreamError, StreamInfo, StreamKind};
