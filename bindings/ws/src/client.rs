//! The `ws` client: opens a WebSocket session on an origin by sending an upgrade exchange
//! through its `http` exit.

use std::sync::Arc;
use std::sync::atomic::AtomicU16;

use futures_util::StreamExt;
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use http::{HeaderValue, Method, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use zilla_binding_http::kind::{self, HttpHandler};
use zilla_engine::route::Routes;
use zilla_engine::stream::{BoxFuture, StreamError};

use crate::Runtime;
use crate::config::WsDefaults;
use crate::kind::{WsHandler, WsRequest, WsStream};
use crate::server::{Condition, select};
use crate::session::{self, FailureCode, Incoming};

/// The `ws` client binding's `ws` handler.
pub(crate) struct WsClient {
    pub routes: Routes<Condition, (), Arc<dyn HttpHandler>>,
    pub defaults: WsDefaults,
    pub config: WebSocketConfig,
    pub runtime: Runtime,
}

impl WsHandler for WsClient {
    fn handle(
        &self,
        request: WsRequest,
        incoming: WsStream,
    ) -> BoxFuture<'_, Result<WsStream, StreamError>> {
        Box::pin(self.open(request, incoming))
    }
}

fn or_default(value: String, default: &Option<String>, fallback: &str) -> String {
    if !value.is_empty() {
        value
    } else {
        default.clone().unwrap_or_else(|| fallback.to_owned())
    }
}

impl WsClient {
    async fn open(&self, request: WsRequest, outgoing: WsStream) -> Result<WsStream, StreamError> {
        let protocol = request
            .protocol
            .clone()
            .or_else(|| request.protocols.first().cloned())
            .or_else(|| self.defaults.protocol.clone());
        let scheme = match or_default(request.scheme, &self.defaults.scheme, "http").as_str() {
            "ws" => "http".to_owned(),
            "wss" => "https".to_owned(),
            scheme => scheme.to_owned(),
        };
        let authority = or_default(request.authority, &self.defaults.authority, "");
        let path = or_default(request.path, &self.defaults.path, "/");
        let offered: Vec<String> = protocol.iter().cloned().collect();
        let authorization = request
            .extensions
            .get::<zilla_engine::guard::Authorization>()
            .cloned();
        let (exit, _) = select(
            &self.routes,
            authorization.as_ref(),
            &offered,
            &scheme,
            &authority,
            &path,
        )
        .ok_or(StreamError::NoRoute)?;
        let uri = if authority.is_empty() {
            path.clone()
        } else {
            format!("{scheme}://{authority}{path}")
        };
        let key = generate_key();
        let mut builder = http::Request::builder()
            .method(Method::GET)
            .uri(uri)
            .header(UPGRADE, HeaderValue::from_static("websocket"))
            .header(CONNECTION, HeaderValue::from_static("upgrade"))
            .header("sec-websocket-version", HeaderValue::from_static("13"))
            .header(SEC_WEBSOCKET_KEY, key.as_str());
        if let Some(protocol) = &protocol {
            builder = builder.header("sec-websocket-protocol", protocol.as_str());
        }
        let mut upgrade = builder
            .body(kind::empty())
            .map_err(|error| StreamError::Protocol(format!("bad websocket request: {error}")))?;
        if let Some(authorization) = authorization {
            upgrade.extensions_mut().insert(authorization);
        }
        let response = exit.handle(upgrade).await?;
        match response.status() {
            StatusCode::SWITCHING_PROTOCOLS => {}
            StatusCode::NOT_FOUND => return Err(StreamError::NoRoute),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(StreamError::Unauthorized);
            }
            status => {
                return Err(StreamError::Upstream(format!(
                    "origin answered {status} to the websocket upgrade"
                )));
            }
        }
        let expected = derive_accept_key(key.as_bytes());
        if response
            .headers()
            .get(SEC_WEBSOCKET_ACCEPT)
            .is_none_or(|accept| accept.as_bytes() != expected.as_bytes())
        {
            return Err(StreamError::Upstream(
                "origin answered a wrong sec-websocket-accept".to_owned(),
            ));
        }
        let answered = response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|value| value.to_str().ok());
        if answered.is_some() && answered != protocol.as_deref() {
            return Err(StreamError::Upstream(
                "origin chose a subprotocol that was not offered".to_owned(),
            ));
        }
        let upgraded = hyper::upgrade::on(response).await.map_err(|error| {
            StreamError::Upstream(format!(
                "the http exit did not hand over the upgraded connection: {error}"
            ))
        })?;
        let wire = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Client,
            Some(self.config),
        )
        .await;
        let (sink, stream) = wire.split();
        let failure: FailureCode = Arc::new(AtomicU16::new(0));
        let writer_failure = failure.clone();
        self.runtime.spawn(move |stopped| async move {
            session::write(sink, outgoing, writer_failure, stopped).await;
        });
        Ok(Box::pin(Incoming::reading(stream, failure)))
    }
}
