//! The `ws` server: turns an `http` upgrade exchange into a WebSocket session on the routed
//! exit.

use std::sync::Arc;
use std::sync::atomic::AtomicU16;

use futures_util::StreamExt;
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use zilla_binding_http::kind::{self, HttpHandler, Request, Response};
use zilla_engine::guard::Authorization;
use zilla_engine::pattern::Pattern;
use zilla_engine::route::Routes;
use zilla_engine::stream::{BoxFuture, StreamError, StreamInfo};

use crate::Runtime;
use crate::kind::{WsHandler, WsRequest, WsStream};
use crate::session::{self, FailureCode, Incoming};

/// A compiled route condition: every given field must match.
#[derive(Debug)]
pub(crate) struct Condition {
    protocol: Option<Pattern>,
    scheme: Option<Pattern>,
    authority: Option<Pattern>,
    path: Option<Pattern>,
}

impl Condition {
    pub(crate) fn compile(raw: crate::config::WsCondition) -> Result<Self, String> {
        let compile = |pattern: Option<String>, separator| {
            pattern
                .map(|pattern| Pattern::compile(&pattern, separator))
                .transpose()
        };
        Ok(Self {
            protocol: compile(raw.protocol, None)?,
            scheme: compile(raw.scheme, None)?,
            authority: compile(raw.authority, None)?,
            path: compile(raw.path, Some('/'))?,
        })
    }

    pub(crate) fn matches(
        &self,
        protocol: Option<&str>,
        scheme: &str,
        authority: &str,
        path: &str,
    ) -> bool {
        let field = |pattern: &Option<Pattern>, value: Option<&str>| {
            pattern
                .as_ref()
                .is_none_or(|pattern| value.is_some_and(|value| pattern.matches(value)))
        };
        field(&self.protocol, protocol)
            && field(&self.scheme, Some(scheme))
            && field(&self.authority, Some(authority))
            && field(&self.path, Some(path))
    }
}

/// The first route that takes the session, and the subprotocol it was taken with: routes in
/// order, and for each the offered subprotocols in the peer's order of preference.
pub(crate) fn select<'r, W, E>(
    routes: &'r Routes<Condition, W, E>,
    authorization: Option<&Authorization>,
    protocols: &[String],
    scheme: &str,
    authority: &str,
    path: &str,
) -> Option<(&'r E, Option<String>)> {
    let candidates: Vec<Option<&str>> = if protocols.is_empty() {
        vec![None]
    } else {
        protocols.iter().map(|p| Some(p.as_str())).collect()
    };
    routes.iter().find_map(|route| {
        if !route.authorized(authorization) {
            return None;
        }
        candidates.iter().find_map(|protocol| {
            let matches = route.when.is_empty()
                || route
                    .when
                    .iter()
                    .any(|condition| condition.matches(*protocol, scheme, authority, path));
            matches.then(|| (&route.exit, protocol.map(str::to_owned)))
        })
    })
}

/// The `ws` server binding's `http` handler.
pub(crate) struct WsServer {
    pub routes: Routes<Condition, (), Arc<dyn WsHandler>>,
    pub config: WebSocketConfig,
    pub runtime: Runtime,
}

impl HttpHandler for WsServer {
    fn handle(&self, request: Request) -> BoxFuture<'_, Result<Response, StreamError>> {
        Box::pin(self.upgrade(request))
    }
}

/// Why a request is not a WebSocket handshake; answered with 400.
fn bad_handshake(reason: &str) -> Response {
    tracing::debug!(reason, "refused websocket handshake");
    let mut response = kind::status_response(StatusCode::BAD_REQUEST);
    response
        .headers_mut()
        .insert("sec-websocket-version", HeaderValue::from_static("13"));
    response
}

fn has_token(headers: &HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value.to_str().is_ok_and(|value| {
            value
                .split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    })
}

/// A key is 16 random bytes in base64: 24 characters ending in `==`.
fn valid_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        && matches!(key[21], b'A' | b'Q' | b'g' | b'w')
}

/// The subprotocols offered, in order.
pub(crate) fn offered_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|protocol| !protocol.is_empty())
        .map(str::to_owned)
        .collect()
}

impl WsServer {
    async fn upgrade(&self, mut request: Request) -> Result<Response, StreamError> {
        // RFC 8441: WebSocket over an HTTP/2 stream opened with an extended CONNECT.
        let extended_connect = request.version() == Version::HTTP_2
            && request.method() == Method::CONNECT
            && request
                .extensions()
                .get::<hyper::ext::Protocol>()
                .is_some_and(|protocol| protocol.as_str().eq_ignore_ascii_case("websocket"));
        let headers = request.headers();
        if !extended_connect {
            if !has_token(headers, UPGRADE, "websocket") {
                return Ok(bad_handshake("no `upgrade: websocket`"));
            }
            if request.method() != Method::GET || request.version() != Version::HTTP_11 {
                return Ok(bad_handshake("not an HTTP/1.1 GET"));
            }
            if !has_token(headers, CONNECTION, "upgrade") {
                return Ok(bad_handshake("no `connection: upgrade`"));
            }
        }
        if headers
            .get("sec-websocket-version")
            .is_none_or(|version| version.as_bytes() != b"13")
        {
            return Ok(bad_handshake("not `sec-websocket-version: 13`"));
        }
        let accept = if extended_connect {
            None
        } else {
            let accept = headers
                .get(SEC_WEBSOCKET_KEY)
                .filter(|key| valid_key(key.as_bytes()))
                .and_then(|key| HeaderValue::from_str(&derive_accept_key(key.as_bytes())).ok());
            match accept {
                Some(accept) => Some(accept),
                None => return Ok(bad_handshake("missing or malformed `sec-websocket-key`")),
            }
        };
        let protocols = offered_protocols(request.headers());
        let scheme = kind::pseudo_header(&request, ":scheme")
            .map(|s| s.into_owned())
            .unwrap_or_else(|| "http".to_owned());
        let authority = kind::pseudo_header(&request, ":authority")
            .map(|s| s.into_owned())
            .unwrap_or_default();
        let path = kind::pseudo_header(&request, ":path")
            .map(|s| s.into_owned())
            .unwrap_or_else(|| "/".to_owned());
        let (exit, protocol) = select(
            &self.routes,
            request.extensions().get::<Authorization>(),
            &protocols,
            &scheme,
            &authority,
            &path,
        )
        .ok_or(StreamError::NoRoute)?;
        let answered_protocol = match &protocol {
            None => None,
            Some(protocol) => match HeaderValue::from_str(protocol) {
                Ok(value) => Some(value),
                Err(_) => return Ok(bad_handshake("malformed `sec-websocket-protocol`")),
            },
        };
        if request
            .extensions()
            .get::<hyper::upgrade::OnUpgrade>()
            .is_none()
        {
            return Err(StreamError::Protocol(
                "the http server cannot hand over this connection".to_owned(),
            ));
        }
        let on_upgrade = hyper::upgrade::on(&mut request);
        let (parts, _body) = request.into_parts();
        // A WebSocket may rightly stay quiet: the session holds the connection from timing out
        // as idle underneath for as long as it lasts.
        let held = parts
            .extensions
            .get::<Arc<StreamInfo>>()
            .map(|info| info.idle.hold());
        let failure: FailureCode = Arc::new(AtomicU16::new(0));
        let (deliver, wire) = oneshot::channel();
        let session = WsRequest {
            protocol,
            protocols,
            scheme,
            authority,
            path,
            extensions: parts.extensions,
        };
        let incoming: WsStream = Box::pin(Incoming::pending(wire, failure.clone()));
        let outgoing = exit.handle(session, incoming).await?;
        let config = self.config;
        // The connection is handed over only after the response went out, so the session
        // runs on its own task.
        self.runtime.spawn(move |stopped| async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(error) => {
                    tracing::debug!(%error, "websocket upgrade failed");
                    return;
                }
            };
            let wire = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(config),
            )
            .await;
            let (sink, stream) = wire.split();
            // When the handler dropped its incoming stream, nobody reads: only write.
            let _ = deliver.send(stream);
            session::write(sink, outgoing, failure, stopped).await;
            drop(held);
        });
        let mut response = kind::status_response(if extended_connect {
            StatusCode::OK
        } else {
            StatusCode::SWITCHING_PROTOCOLS
        });
        let headers = response.headers_mut();
        if let Some(accept) = accept {
            headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
        }
        if let Some(protocol) = answered_protocol {
            headers.insert("sec-websocket-protocol", protocol);
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Answers every session with what it received.
    struct WsEcho;

    impl WsHandler for WsEcho {
        fn handle(
            &self,
            _request: WsRequest,
            incoming: WsStream,
        ) -> BoxFuture<'_, Result<WsStream, StreamError>> {
            Box::pin(async move { Ok(incoming) })
        }
    }
    use zilla_engine::config::model::{BindingConfig, Origin, RouteConfig};

    fn compiled(routes: Vec<(serde_json::Value, &str)>) -> Routes<Condition, (), String> {
        let config = BindingConfig {
            type_name: "ws".into(),
            kind: zilla_engine::BindingKind::Server,
            entry: None,
            vault: None,
            catalog: None,
            options: None,
            exit: None,
            routes: routes
                .into_iter()
                .map(|(when, exit)| RouteConfig {
                    when: when.as_array().cloned().unwrap_or_default(),
                    guarded: Vec::new(),
                    exit: exit.into(),
                    with: None,
                    origin: Origin::default(),
                })
                .collect(),
            telemetry_metrics: Vec::new(),
            telemetry_attributes: Vec::new(),
            json: json!({}),
            origin: Origin::default(),
            namespace: "test".into(),
        };
        Routes::build(&config, |exit| Ok(exit.to_owned()), Condition::compile).unwrap()
    }

    fn offered(protocols: &[&str]) -> Vec<String> {
        protocols.iter().map(|p| (*p).to_owned()).collect()
    }

    #[test]
    fn the_first_route_wins_then_the_peers_preference() {
        let routes = compiled(vec![
            (json!([{"protocol": "b"}]), "only_b"),
            (json!([{"protocol": "a*", "path": "/x/{id}"}]), "a_on_x"),
            (json!([]), "any"),
        ]);
        let pick = |protocols: &[&str], path: &str| {
            select(&routes, None, &offered(protocols), "http", "h", path)
                .map(|(exit, protocol)| (exit.clone(), protocol))
        };
        assert_eq!(
            pick(&["a", "b"], "/x/1"),
            Some(("only_b".to_owned(), Some("b".to_owned())))
        );
        assert_eq!(
            pick(&["c", "ab"], "/x/1"),
            Some(("a_on_x".to_owned(), Some("ab".to_owned())))
        );
        assert_eq!(
            pick(&["c", "ab"], "/x/1/2"),
            Some(("any".to_owned(), Some("c".to_owned())))
        );
        assert_eq!(pick(&[], "/x/1"), Some(("any".to_owned(), None)));
        let strict = compiled(vec![(json!([{"protocol": "echo"}]), "echo")]);
        assert!(select(&strict, None, &[], "http", "h", "/").is_none());
        assert!(select(&strict, None, &offered(&["chat"]), "http", "h", "/").is_none());
    }

    #[test]
    fn handshake_headers() {
        assert_eq!(
            derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert!(valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!valid_key(b"dGhlIHNhbXBsZSBub25jZQ"));
        assert!(!valid_key(b"dGhlIHNhbXBsZSBub25jZR=="));
        assert!(!valid_key(b"dGhlIHNhbXBsZSBub2*jZQ=="));
        let mut headers = HeaderMap::new();
        headers.append(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        headers.append("sec-websocket-protocol", HeaderValue::from_static("a, b"));
        headers.append("sec-websocket-protocol", HeaderValue::from_static("c"));
        assert!(has_token(&headers, CONNECTION, "upgrade"));
        assert!(!has_token(&headers, UPGRADE, "websocket"));
        assert_eq!(offered_protocols(&headers), offered(&["a", "b", "c"]));
    }

    fn server() -> WsServer {
        let config = BindingConfig {
            type_name: "ws".into(),
            kind: zilla_engine::BindingKind::Server,
            entry: None,
            vault: None,
            catalog: None,
            options: None,
            exit: None,
            routes: vec![RouteConfig {
                when: vec![json!({"path": "/only"})],
                guarded: Vec::new(),
                exit: "echo".into(),
                with: None,
                origin: Origin::default(),
            }],
            telemetry_metrics: Vec::new(),
            telemetry_attributes: Vec::new(),
            json: json!({}),
            origin: Origin::default(),
            namespace: "test".into(),
        };
        let echo: Arc<dyn WsHandler> = Arc::new(WsEcho);
        let routes = Routes::build(&config, |_| Ok(echo.clone()), Condition::compile).unwrap();
        WsServer {
            routes,
            config: WebSocketConfig::default(),
            runtime: Runtime::default(),
        }
    }

    fn request(path: &str, headers: &[(&str, &str)]) -> Request {
        let mut builder = http::Request::builder().uri(path).header("host", "h");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(kind::empty()).unwrap()
    }

    const GOOD: &[(&str, &str)] = &[
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[tokio::test]
    async fn refusals_before_any_upgrade() {
        let server = server();
        let status = |response: Result<Response, StreamError>| response.map(|r| r.status());
        assert_eq!(
            status(server.handle(request("/only", &[])).await).unwrap(),
            StatusCode::BAD_REQUEST
        );
        let mut old = GOOD.to_vec();
        old[2] = ("sec-websocket-version", "8");
        assert_eq!(
            status(server.handle(request("/only", &old)).await).unwrap(),
            StatusCode::BAD_REQUEST
        );
        let mut post = request("/only", GOOD);
        *post.method_mut() = Method::POST;
        assert_eq!(
            status(server.handle(post).await).unwrap(),
            StatusCode::BAD_REQUEST
        );
        assert!(matches!(
            server.handle(request("/other", GOOD)).await,
            Err(StreamError::NoRoute)
        ));
        // Routed, but no connection to take over (not served by hyper with upgrades).
        assert!(matches!(
            server.handle(request("/only", GOOD)).await,
            Err(StreamError::Protocol(_))
        ));
    }
}
