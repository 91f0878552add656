//! Typed options and route conditions of the tcp binding.

use schemars::JsonSchema;
use serde::Deserialize;
pub use zilla_engine::ports::Ports;

/// `options` of a tcp binding.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TcpOptions {
    /// Server: the address to listen on (default `0.0.0.0`). Client: the host to connect to,
    /// instead of the destination the caller asks for.
    pub host: Option<String>,
    /// Server: the ports to listen on. Client: the port to connect to.
    pub port: Option<Ports>,
    /// Server: the listen backlog (default 1024).
    pub backlog: Option<u32>,
    /// Disables Nagle's algorithm (default true).
    pub nodelay: Option<bool>,
    /// Enables TCP keep-alive probes (default false).
    pub keepalive: Option<bool>,
}

/// A route condition of a tcp binding; all given fields must match.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TcpCondition {
    /// Server: the listening host; client: the host name connected to. `*` wildcards allowed.
    pub authority: Option<String>,
    /// Server: the remote address; client: the address connected to, e.g. `127.0.0.0/8`.
    #[schemars(regex(pattern = r"^[0-9a-fA-F:.]+/(\d{1,3})$"))]
    pub cidr: Option<String>,
    /// Server: the local port; client: the port connected to.
    pub port: Option<Ports>,
}
