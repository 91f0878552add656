//! Telemetry of zilla-rs, below the engine (which re-exports these modules under their own
//! names, `zilla_engine::metrics` and so on):
//!
//! - [`metrics`]: the metric registry with Zilla's names, kinds and units, the groups components
//!   declare, lock-free recording and bounded labelled series;
//! - [`events`]: Zilla's named events, routed to the configured exporters and the process log;
//! - [`telemetry`]: the checks of a config's `telemetry` sections against the declared metrics;
//! - [`traces`]: W3C trace context and the spans bindings record for exporters that send traces.
//!
//! A namespace enabling metrics, recorded for the bindings whose patterns match:
//!
//! ```yaml
//! name: example
//! telemetry:
//!   metrics:
//!     - stream.opens.received
//! bindings:
//!   tcp_server:
//!     type: tcp
//!     kind: server
//!     options:
//!       port: 12345
//!     telemetry:
//!       metrics:
//!         - stream.*
//!     exit: echo_server
//!   echo_server:
//!     type: echo
//!     kind: server
//! ```

pub mod events;
pub mod metrics;
pub mod telemetry;
pub mod traces;

/// The config model the checks read, under the name the modules use.
use zilla_config as config;
