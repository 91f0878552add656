//! The http binding's limits and tuning, from `-P` properties.
//!
//! | property | default | meaning |
//! |---|---|---|
//! | `zilla.binding.http.max.header.list.size` | 8192 | largest request head (HTTP/1.1) or header list (HTTP/2) in bytes; larger ones are answered 431 |
//! | `zilla.binding.http.concurrent.streams` | 100 | HTTP/2 streams a client may have open on one connection |
//! | `zilla.binding.http.max.frame.size` | 16384 | largest HTTP/2 frame the server accepts |
//! | `zilla.binding.http.server.header` | unset | a `server` header added to every response |
//! | `zilla.binding.http.user.agent.header` | unset | the `user-agent` a client sends when the request has none |
//! | `zilla.binding.http.header.read.timeout.millis` | 30000 | time a client has to send a request head, including the first request on a connection and the next one on an idle keep-alive connection; the connection is closed when it runs out |
//! | `zilla.binding.http.max.request.body.size` | 8388608 (8 MiB) | largest request body in bytes, 0 for no limit; a larger declared `content-length` is answered 413 before the body is read, a longer streamed body is cut (413 if the response has not started). Bodies that `options.requests` validates are read whole first, up to this size (8 MiB when 0), and answered 413 past it |
//! | `zilla.binding.http.body.read.timeout.millis` | 30000 | longest wait for the next piece of a request body (0 = none); a stalled body is cut and answered 408 if the response has not started, and the connection closed. Not applied to extended `CONNECT` streams (WebSocket over HTTP/2), whose body is a long-lived stream |
//! | `zilla.binding.http.maximum.connections` | 0 (none) | connections one http server serves at once; each one over it has its requests answered `503` with `retry-after: 1` and is then closed (HTTP/1.1 `connection: close`, HTTP/2 `GOAWAY`) |
//! | `zilla.binding.http.idle.timeout.millis` | 60000 | an HTTP/2 connection with no open stream for this long is closed with `GOAWAY` (0 = never); HTTP/1.1 keep-alive connections are bounded by `header.read.timeout.millis` |
//! | `zilla.binding.http.keep.alive.interval.millis` | 30000 | HTTP/2 `PING` sent after this long without a frame from the client (0 = none) |
//! | `zilla.binding.http.keep.alive.timeout.millis` | 20000 | an HTTP/2 connection whose `PING` is not acknowledged within this is closed |
//! | `zilla.binding.http.max.pending.accept.reset.streams` | 20 | HTTP/2 streams a client may open and reset before they are served; past it the connection ends with `GOAWAY` (`ENHANCE_YOUR_CALM`): the rapid reset attack (CVE-2023-44487) |
//! | `zilla.binding.http.max.local.error.reset.streams` | 1024 | HTTP/2 streams the server may reset for protocol errors on one connection before it ends it with `GOAWAY` |
//! | `zilla.binding.http.client.idle.timeout.millis` | 90000 | how long a client keeps an idle pooled origin connection |
//!
//! HTTP/1.1 connections read and write through buffers of at most 64 KiB (or the header limit,
//! when larger); HTTP/2 flow control windows are hyper's defaults (1 MiB per stream and per
//! connection, 400 KiB of queued sends per stream).

use std::time::Duration;

use http::HeaderValue;
use zilla_engine::properties::Properties;

const PREFIX: &str = "zilla.binding.http.";

/// Every property [`Limits::from_properties`] reads, declared to the registry.
pub const PROPERTIES: &[&str] = &[
    "zilla.binding.http.body.read.timeout.millis",
    "zilla.binding.http.client.idle.timeout.millis",
    "zilla.binding.http.client.max.idle.connections",
    "zilla.binding.http.concurrent.streams",
    "zilla.binding.http.header.read.timeout.millis",
    "zilla.binding.http.idle.timeout.millis",
    "zilla.binding.http.keep.alive.interval.millis",
    "zilla.binding.http.keep.alive.timeout.millis",
    "zilla.binding.http.max.frame.size",
    "zilla.binding.http.max.header.list.size",
    "zilla.binding.http.max.local.error.reset.streams",
    "zilla.binding.http.max.pending.accept.reset.streams",
    "zilla.binding.http.max.request.body.size",
    "zilla.binding.http.maximum.connections",
    "zilla.binding.http.server.header",
    "zilla.binding.http.user.agent.header",
];

/// How much of a body is read to validate it when no body limit is set.
const DEFAULT_MAX_VALIDATED_BODY_SIZE: u64 = 8 * 1024 * 1024;

/// The request body limit when the property is unset: large enough for any Kafka record at
/// the broker's default size, small enough that a handful of uploads cannot exhaust memory.
const DEFAULT_MAX_REQUEST_BODY_SIZE: u64 = 8 * 1024 * 1024;

/// Resolved limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request head / header list, bytes.
    pub max_header_list_size: u32,
    /// HTTP/2 streams per connection.
    pub concurrent_streams: u32,
    /// Largest HTTP/2 frame.
    pub max_frame_size: u32,
    /// `server` header for responses.
    pub server_header: Option<HeaderValue>,
    /// `user-agent` header for client requests that have none.
    pub user_agent_header: Option<HeaderValue>,
    /// Time to receive a request head.
    pub header_read_timeout: Duration,
    /// Largest request body, `None` for no limit.
    pub max_request_body_size: Option<u64>,
    /// Largest request body read whole to be validated.
    pub max_validated_body_size: u64,
    /// Idle time before a pooled origin connection is closed.
    pub client_idle_timeout: Duration,
    /// Idle HTTP/1.1 origin connections kept per worker and origin.
    pub client_max_idle_connections: usize,
    /// Longest wait for the next piece of a request body; zero for none.
    pub body_read_timeout: Duration,
    /// Connections served at once; 0 for no cap.
    pub maximum_connections: usize,
    /// HTTP/2 connection idle time with no open stream; zero for none.
    pub idle_timeout: Duration,
    /// HTTP/2 keep-alive `PING` interval; zero for none.
    pub keep_alive_interval: Duration,
    /// HTTP/2 keep-alive `PING` acknowledgement timeout.
    pub keep_alive_timeout: Duration,
    /// HTTP/2 streams reset before being served, per connection.
    pub max_pending_accept_reset_streams: usize,
    /// HTTP/2 streams reset by the server for errors, per connection.
    pub max_local_error_reset_streams: usize,
    /// HTTP/1.1 read and write buffer bound.
    pub max_buffer_size: usize,
}

impl Limits {
    /// Reads the properties, warning about values out of range.
    pub fn from_properties(properties: &Properties) -> Self {
        let name = |suffix: &str| format!("{PREFIX}{suffix}");
        let u32_in = |suffix: &str, default: u32, low: u32, high: u32| -> u32 {
            let key = name(suffix);
            let value = properties.u64(&key, u64::from(default));
            match u32::try_from(value) {
                Ok(value) if (low..=high).contains(&value) => value,
                _ => {
                    tracing::warn!(property = %key, value, "out of range {low}..={high}; using {default}");
                    default
                }
            }
        };
        let header = |suffix: &str| {
            let key = name(suffix);
            properties
                .get(&key)
                .and_then(|value| match HeaderValue::from_str(value) {
                    Ok(value) => Some(value),
                    Err(_) => {
                        tracing::warn!(property = %key, "not a valid header value; ignored");
                        None
                    }
                })
        };
        let body = properties.u64(
            &name("max.request.body.size"),
            DEFAULT_MAX_REQUEST_BODY_SIZE,
        );
        let count = |suffix: &str, default: u64| {
            usize::try_from(properties.u64(&name(suffix), default)).unwrap_or(usize::MAX)
        };
        let max_header_list_size = u32_in("max.header.list.size", 8192, 64, 16 * 1024 * 1024);
        Self {
            body_read_timeout: properties
                .millis(&name("body.read.timeout.millis"), Duration::from_secs(30)),
            maximum_connections: count("maximum.connections", 0),
            idle_timeout: properties.millis(&name("idle.timeout.millis"), Duration::from_secs(60)),
            keep_alive_interval: properties
                .millis(&name("keep.alive.interval.millis"), Duration::from_secs(30)),
            keep_alive_timeout: properties
                .millis(&name("keep.alive.timeout.millis"), Duration::from_secs(20)),
            max_pending_accept_reset_streams: count("max.pending.accept.reset.streams", 20),
            max_local_error_reset_streams: count("max.local.error.reset.streams", 1024),
            // hyper's minimum is 8 KiB; a head may need more than 64 KiB when allowed.
            max_buffer_size: (max_header_list_size as usize).max(64 * 1024),
            max_header_list_size,
            concurrent_streams: u32_in("concurrent.streams", 100, 1, u32::MAX),
            // HTTP/2 bounds the frame size (RFC 9113 §6.5.2).
            max_frame_size: u32_in("max.frame.size", 16_384, 16_384, 16_777_215),
            server_header: header("server.header"),
            user_agent_header: header("user.agent.header"),
            header_read_timeout: properties
                .millis(&name("header.read.timeout.millis"), Duration::from_secs(30)),
            max_request_body_size: (body > 0).then_some(body),
            max_validated_body_size: if body > 0 {
                body
            } else {
                DEFAULT_MAX_VALIDATED_BODY_SIZE
            },
            client_idle_timeout: properties
                .millis(&name("client.idle.timeout.millis"), Duration::from_secs(90)),
            client_max_idle_connections: count("client.max.idle.connections", 256),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let defaults = Limits::from_properties(&Properties::default());
        assert_eq!(defaults.max_header_list_size, 8192);
        assert_eq!(defaults.concurrent_streams, 100);
        assert_eq!(defaults.max_request_body_size, Some(8 * 1024 * 1024));
        assert_eq!(defaults.body_read_timeout, Duration::from_secs(30));
        assert_eq!(defaults.maximum_connections, 0);
        assert_eq!(defaults.idle_timeout, Duration::from_secs(60));
        assert_eq!(defaults.max_pending_accept_reset_streams, 20);
        assert_eq!(defaults.max_buffer_size, 64 * 1024);
        assert_eq!(defaults.max_validated_body_size, 8 * 1024 * 1024);
        assert_eq!(defaults.header_read_timeout, Duration::from_secs(30));
        let properties = Properties::from_assignments([
            "zilla.binding.http.max.header.list.size=1024",
            "zilla.binding.http.max.request.body.size=10",
            "zilla.binding.http.header.read.timeout.millis=200",
            "zilla.binding.http.server.header=Zilla",
            "zilla.binding.http.max.frame.size=10",
            "zilla.binding.http.maximum.connections=1000",
            "zilla.binding.http.idle.timeout.millis=500",
        ]);
        let limits = Limits::from_properties(&properties);
        assert_eq!(limits.max_header_list_size, 1024);
        assert_eq!(limits.max_request_body_size, Some(10));
        assert_eq!(limits.max_validated_body_size, 10);
        assert_eq!(limits.header_read_timeout, Duration::from_millis(200));
        assert_eq!(limits.server_header.unwrap(), "Zilla");
        assert_eq!(limits.max_frame_size, 16_384);
        assert_eq!(limits.maximum_connections, 1000);
        assert_eq!(limits.idle_timeout, Duration::from_millis(500));
        let unlimited =
            Properties::from_assignments(["zilla.binding.http.max.request.body.size=0"]);
        assert_eq!(
            Limits::from_properties(&unlimited).max_request_body_size,
            None
        );
    }
}
