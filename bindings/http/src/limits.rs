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
//! | `zilla.binding.http.max.request.body.size` | 0 (none) | largest request body in bytes; a larger declared `content-length` is answered 413 before the body is read, a longer streamed body is cut (413 if the response has not started). Bodies that `options.requests` validates are read whole first, up to this size (8 MiB when unset), and answered 413 past it |
//! | `zilla.binding.http.client.idle.timeout.millis` | 90000 | how long a client keeps an idle pooled origin connection |

use std::time::Duration;

use http::HeaderValue;
use zilla_engine::properties::Properties;

const PREFIX: &str = "zilla.binding.http.";

/// How much of a body is read to validate it when no body limit is set.
const DEFAULT_MAX_VALIDATED_BODY_SIZE: u64 = 8 * 1024 * 1024;

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
        let body = properties.u64(&name("max.request.body.size"), 0);
        Self {
            max_header_list_size: u32_in("max.header.list.size", 8192, 64, 16 * 1024 * 1024),
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
        assert_eq!(defaults.max_request_body_size, None);
        assert_eq!(defaults.max_validated_body_size, 8 * 1024 * 1024);
        assert_eq!(defaults.header_read_timeout, Duration::from_secs(30));
        let properties = Properties::from_assignments([
            "zilla.binding.http.max.header.list.size=1024",
            "zilla.binding.http.max.request.body.size=10",
            "zilla.binding.http.header.read.timeout.millis=200",
            "zilla.binding.http.server.header=Zilla",
            "zilla.binding.http.max.frame.size=10",
        ]);
        let limits = Limits::from_properties(&properties);
        assert_eq!(limits.max_header_list_size, 1024);
        assert_eq!(limits.max_request_body_size, Some(10));
        assert_eq!(limits.max_validated_body_size, 10);
        assert_eq!(limits.header_read_timeout, Duration::from_millis(200));
        assert_eq!(limits.server_header.unwrap(), "Zilla");
        assert_eq!(limits.max_frame_size, 16_384);
    }
}
