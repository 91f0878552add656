//! End-to-end test harness: runs the real `zilla` binary on a config and talks to it with real
//! third-party peers (`nc`, `openssl`, `curl`, `mosquitto`, `tansu`, Python clients...).
//!
//! # Writing an end-to-end test
//!
//! A test is a file in `tests/tests/` (one per scenario family). It starts a [`Gateway`] on a
//! `zilla.yaml`, finds the ports it listens on through [`Gateway::address`], drives it with a
//! [`Peer`], and asserts on what the peer saw:
//!
//! ```no_run
//! use zilla_tests::{Gateway, Peer};
//!
//! #[test]
//! fn tcp_echo_reflects_bytes() -> anyhow::Result<()> {
//!     let mut gateway = Gateway::start(
//!         r#"
//! name: test
//! bindings:
//!   tcp_server:
//!     type: tcp
//!     kind: server
//!     options:
//!       host: 127.0.0.1
//!       port: 0
//!     exit: echo_server
//!   echo_server:
//!     type: echo
//!     kind: server
//! "#,
//!     )?;
//!     let address = gateway.address("tcp_server");
//!     let output = Peer::new("nc")
//!         .args(["-q1", &address.ip().to_string(), &address.port().to_string()])
//!         .stdin("hello\n")
//!         .run()?;
//!     assert_eq!(output.stdout, b"hello\n");
//!     assert!(gateway.terminate()?.success());
//!     Ok(())
//! }
//! # fn main() {}
//! ```
//!
//! Rules of thumb:
//!
//! - **Ports**: write `port: 0` in the config and ask [`Gateway::address`]; the gateway reports
//!   the port it bound in its ready file. For peers that cannot report theirs (a broker, an
//!   origin server), pick one with [`free_port`] and pass it to the config through
//!   [`GatewayBuilder::env`] and `${{env.NAME}}`.
//! - **Files**: keystores, specs and JWKS files go next to the config with
//!   [`GatewayBuilder::file`]; relative paths in the config resolve against its directory.
//! - **Readiness**: [`GatewayBuilder::start`] returns once every listener is bound (or fails
//!   with the gateway's log). Background peers started with [`Peer::spawn`] have no such
//!   protocol: wait for their own output ([`Process::wait_for_stdout`] and friends) or poll
//!   their port before using them.
//! - **Hot reload**: rewrite [`Gateway::config_path`] ([`Gateway::write_config`]), wait for the
//!   log line with [`Gateway::wait_for_stderr`], then [`Gateway::refresh_listeners`].
//! - **Config errors**: [`validate`] runs `zilla validate -c zilla.yaml`; errors on stderr read
//!   `zilla.yaml:<line>:<column>: <path>: <message>`.
//! - **Shutdown**: [`Gateway::terminate`] sends `SIGTERM` and returns the exit status; a
//!   gateway that is dropped is killed, so a failing test leaves nothing behind.
//! - **No timing assertions**: timeouts only bound waits; benchmarks measure speed.
//!
//! # The binary
//!
//! [`zilla_binary`] builds `zilla` once per test process (`cargo build -p zilla --bin zilla`,
//! honouring `CARGO_TARGET_DIR`) or uses `ZILLA_BIN` when set, e.g. to test a release build.
//!
//! # The readiness protocol
//!
//! `zilla start -c FILE -P zilla.engine.directory=DIR` writes `DIR/info` (`pid=<pid>` on its
//! first line) at start and, once every listener is bound, `DIR/ready` with one line per
//! listening socket: `<namespace>:<binding> <ip>:<port>` (see [`ready`]). It logs a line
//! containing `started` on stderr at the same time, and exits 0 after draining on `SIGTERM`.

mod apicurio;
mod binary;
mod broker;
mod curl;
mod gateway;
mod mosquitto;
mod nginx;
mod peer;
pub mod pki;
mod process;
pub mod ready;
mod registry;
mod socket;

pub use apicurio::{ApicurioRegistry, ArtifactIds};
pub use binary::{build_zilla, workspace_dir, zilla, zilla_binary};
pub use broker::{Broker, kcat};
pub use curl::{CurlResponse, curl, curl_status_body, post_keyed, sse_events};
pub use gateway::{DEFAULT_READY_TIMEOUT, Gateway, GatewayBuilder, validate, validate_with_env};
pub use mosquitto::{mosquitto, mosquitto_with};
pub use nginx::{nginx, nginx_h2c, nginx_with};
pub use peer::{
    DEFAULT_PEER_TIMEOUT, Peer, accepts_connections, free_port, free_port_block, peers_dir, python,
    python_json, success,
};
pub use process::{Process, RssSampler, TERMINATE_TIMEOUT, rss_bytes, rss_kib};
pub use ready::Listener;
pub use registry::SchemaRegistry;
pub use socket::{connect, echo};
