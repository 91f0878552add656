//! How zilla-rs runs connections, re-exported by the engine as `zilla_engine::workers`,
//! `zilla_engine::signal` and `zilla_engine::idle`:
//!
//! - [`workers`]: thread-per-core connection workers, each a single-threaded tokio runtime,
//!   fed in turn by the listening bindings;
//! - [`signal`]: waiting on a signal shared by many connections (a binding's retirement, the
//!   process's shutdown) without touching its lock on every poll of every connection;
//! - [`idle`]: a connection's idle timeout, set by the transport and owned by the protocol on
//!   top of it; [`time`]: deadlines from untrusted durations, and a worker's recent time.
//!
//! No config and no protocol here: a listening binding calls [`workers::spawn`] with each
//! accepted connection, and `zilla start -w N` (or the `zilla.engine.workers` property) decides
//! N. A minimal `zilla.yaml` whose connections run on the workers:
//!
//! ```yaml
//! name: echo
//! bindings:
//!   tcp_server:
//!     type: tcp
//!     kind: server
//!     options: { host: 0.0.0.0, port: 12345 }
//!     exit: echo_server
//!   echo_server:
//!     type: echo
//!     kind: server
//! ```

pub mod idle;
pub mod signal;
pub mod time;
pub mod workers;
