//! The client pipelines for MQTT brokers and HTTP (SSE) servers: what an `asyncapi` client
//! generates when its document's selected servers speak `mqtt`, `http` or `sse`.
//!
//! | server protocol | bindings generated |
//! |---|---|
//! | `mqtt` | [`MQTT_CLIENT`] → [`TCP_CLIENT`] |
//! | `http` | [`SSE_CLIENT`] (when an operation is marked `x-zilla-sse`) → [`HTTP_CLIENT`] → [`TCP_CLIENT`] |
//! | `sse` | [`SSE_CLIENT`] → [`HTTP_CLIENT`] → [`TCP_CLIENT`] |
//!
//! The tcp client connects to the first selected server (as Zilla does); the http client
//! speaks HTTP/1.1 and sends that server's `host:port` as `:authority`, so the origin sees its
//! own name rather than the gateway's. Requests keep their path, so a server with a base path
//! (`pathname`, or a path in its URL) is refused rather than reached without it.

use serde_json::json;

use super::{GenerateError, HTTP_CLIENT, MQTT_CLIENT, Namespace, SSE_CLIENT, TCP_CLIENT};
use crate::model::{Server, Spec};

/// What an `asyncapi` client speaks to its servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientProtocol {
    /// Zilla's Kafka client chain.
    Kafka,
    /// An MQTT client to a broker.
    Mqtt,
    /// An HTTP client (and an SSE client over it) to an HTTP server.
    Http,
}

/// The one protocol the selected servers speak; TLS and other protocols are refused.
pub(crate) fn protocol(label: &str, servers: &[Server]) -> Result<ClientProtocol, GenerateError> {
    let path = format!("options.specs.{label}");
    let mut found = None;
    for server in servers {
        if server.secure() {
            return Err(GenerateError::Config {
                path,
                message: format!(
                    "server `{}`: TLS to the server (`{}`) is not supported",
                    server.url(),
                    server.protocol
                ),
            });
        }
        let protocol = if server.speaks("kafka") {
            ClientProtocol::Kafka
        } else if server.speaks("mqtt") {
            ClientProtocol::Mqtt
        } else if server.speaks("http") || server.speaks("sse") {
            ClientProtocol::Http
        } else {
            return Err(GenerateError::Config {
                path,
                message: format!(
                    "server `{}`: an asyncapi client speaks kafka, mqtt, http or sse, not `{}`",
                    server.url(),
                    server.protocol
                ),
            });
        };
        // Requests keep the path they came with: a base path on the server would be dropped.
        if protocol != ClientProtocol::Kafka
            && let Some(pathname) = server
                .pathname
                .as_deref()
                .filter(|p| !p.is_empty() && *p != "/")
        {
            return Err(GenerateError::Config {
                path,
                message: format!(
                    "server `{}`: a path on the server (`{pathname}`) is not supported: requests reach it with the path they came with",
                    server.url()
                ),
            });
        }
        match found {
            None => found = Some(protocol),
            Some(previous) if previous == protocol => {}
            Some(_) => {
                return Err(GenerateError::Config {
                    path,
                    message: "the selected servers speak different protocols: select servers of one protocol".into(),
                });
            }
        }
    }
    found.ok_or_else(|| GenerateError::Config {
        path,
        message: "no server".into(),
    })
}

/// A `protocol://host[:port][/path]` URL as a server, when it is one.
pub(crate) fn server_of_url(url: &str) -> Option<Server> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return None;
    }
    let (authority, pathname) = match rest.find('/') {
        Some(index) => (&rest[..index], Some(rest[index..].to_owned())),
        None => (rest, None),
    };
    let (host, port) = crate::parse::split_host_port(authority);
    if host.is_empty() || host.contains([':', '@', '?', '#']) {
        return None;
    }
    Some(Server {
        protocol: scheme.to_ascii_lowercase(),
        host,
        port,
        pathname,
    })
}

/// The host and port of the first server, `port` when it names none.
fn first_endpoint(servers: &[Server], default_port: u16) -> (String, u16) {
    servers
        .first()
        .map(|server| (server.host.clone(), server.port.unwrap_or(default_port)))
        .unwrap_or_else(|| ("localhost".to_owned(), default_port))
}

fn tcp_client(host: &str, port: u16, namespace: &mut Namespace) {
    namespace.bindings.insert(
        TCP_CLIENT.into(),
        json!({"type": "tcp", "kind": "client", "options": {"host": host, "port": port}}),
    );
}

/// [`MQTT_CLIENT`] → [`TCP_CLIENT`] to the broker.
pub(crate) fn mqtt_client(servers: &[Server], namespace: &mut Namespace) {
    namespace.bindings.insert(
        MQTT_CLIENT.into(),
        json!({"type": "mqtt", "kind": "client", "exit": TCP_CLIENT}),
    );
    let (host, port) = first_endpoint(servers, 1883);
    tcp_client(&host, port, namespace);
}

/// [`SSE_CLIENT`] (when the document has SSE operations) → [`HTTP_CLIENT`] → [`TCP_CLIENT`].
pub(crate) fn http_client(spec: &Spec, servers: &[Server], namespace: &mut Namespace) {
    let sse = servers.iter().any(|server| server.speaks("sse"))
        || spec
            .operations
            .values()
            .any(|operation| operation.sse.is_some());
    if sse {
        namespace.bindings.insert(
            SSE_CLIENT.into(),
            json!({"type": "sse", "kind": "client", "exit": HTTP_CLIENT}),
        );
    }
    let (host, port) = first_endpoint(servers, 80);
    namespace.bindings.insert(
        HTTP_CLIENT.into(),
        json!({
            "type": "http",
            "kind": "client",
            "options": {"versions": ["http/1.1"], "overrides": {":authority": format!("{host}:{port}")}},
            "exit": TCP_CLIENT,
        }),
    );
    tcp_client(&host, port, namespace);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_become_servers() {
        let server = server_of_url("mqtt://broker:1884").unwrap_or_else(|| panic!("a URL"));
        assert_eq!(
            (server.protocol.as_str(), server.host.as_str(), server.port),
            ("mqtt", "broker", Some(1884))
        );
        let server = server_of_url("HTTP://origin/base").unwrap_or_else(|| panic!("a URL"));
        assert_eq!(
            (
                server.protocol.as_str(),
                server.port,
                server.pathname.as_deref()
            ),
            ("http", None, Some("/base"))
        );
        assert!(server_of_url("plain").is_none());
        assert!(server_of_url("://host").is_none());
        assert!(server_of_url("mqtt://").is_none());
        assert!(server_of_url("mqtt://user@host").is_none());
    }

    #[test]
    fn a_server_path_the_client_would_drop_is_refused() {
        let server = |url| server_of_url(url).unwrap_or_else(|| panic!("a URL"));
        for url in ["http://origin/base", "mqtt://broker/x"] {
            let refused = protocol("south", &[server(url)]);
            assert!(
                matches!(&refused, Err(GenerateError::Config { message, .. }) if message.contains("a path on the server")),
                "{url}: {refused:?}"
            );
        }
        for url in ["http://origin/", "http://origin:8080", "mqtt://broker"] {
            assert!(protocol("south", &[server(url)]).is_ok(), "{url}");
        }
    }
}
