//! The `ws` stream kind: one WebSocket session, as two message streams.
//!
//! A session is opened with a [`WsRequest`] (subprotocol, scheme, authority, path) and the
//! stream of messages coming from the opener; the handler answers with the stream of messages
//! going back. Messages are whole: fragments are joined, and control frames (ping, pong) are
//! answered by the binding that speaks the wire protocol, so they never reach a handler. A
//! [`WsMessage::Close`] carries the close code and reason; a stream that ends without one
//! closes normally (1000).
//!
//! Both streams are pulled, so backpressure holds end to end: a handler that stops polling
//! the incoming stream stops reading from the peer.
//!
//! An echo is the identity: `Ok(incoming)`.

use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;
use zilla_engine::guard::Authorization;
use zilla_engine::stream::{BoxFuture, StreamError, StreamInfo, StreamKind};

pub use tokio_tungstenite::tungstenite::Utf8Bytes;

/// The opening of a session (Zilla's `WsBeginEx`).
#[derive(Debug, Default)]
pub struct WsRequest {
    /// The subprotocol of this session. Server side: the one the routes chose among those
    /// the peer offered (and answered in `Sec-WebSocket-Protocol`). Client side: the one to
    /// ask for.
    pub protocol: Option<String>,
    /// Every subprotocol the peer offered, in its order of preference (server side).
    pub protocols: Vec<String>,
    /// `ws`/`http` or `wss`/`https`, as the opener saw it.
    pub scheme: String,
    /// The authority (`host[:port]`).
    pub authority: String,
    /// The path, including the query string if there is one.
    pub path: String,
    /// What the transport and guards knew: [`StreamInfo`], [`Authorization`].
    pub extensions: http::Extensions,
}

impl WsRequest {
    /// The connection's [`StreamInfo`], if the session came through a transport.
    pub fn stream_info(&self) -> Option<&StreamInfo> {
        self.extensions.get::<StreamInfo>()
    }

    /// The guard sessions the session holds.
    pub fn authorization(&self) -> Option<&Authorization> {
        self.extensions.get::<Authorization>()
    }
}

/// A close code and reason (Zilla's `WsEndEx`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsClose {
    /// The status code, e.g. 1000 (normal), 1001 (going away), 4000-4999 (application).
    pub code: u16,
    /// Why, at most 123 bytes of UTF-8.
    pub reason: String,
}

impl WsClose {
    /// Code 1000, no reason.
    pub fn normal() -> Self {
        Self {
            code: 1000,
            reason: String::new(),
        }
    }
}

/// One message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsMessage {
    /// A text message (valid UTF-8).
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
    /// The end of this direction; `None` when the peer gave no code.
    Close(Option<WsClose>),
}

impl WsMessage {
    /// A text message.
    pub fn text(text: impl Into<Utf8Bytes>) -> Self {
        WsMessage::Text(text.into())
    }

    /// A binary message.
    pub fn binary(data: impl Into<Bytes>) -> Self {
        WsMessage::Binary(data.into())
    }
}

/// A stream of messages in one direction. An `Err` item ends it abnormally (the binding then
/// closes the session with 1011, or drops the connection).
pub type WsStream = Pin<Box<dyn Stream<Item = Result<WsMessage, StreamError>> + Send>>;

/// Handler of the `ws` stream kind: answers one session.
pub trait WsHandler: Send + Sync + 'static {
    /// Takes the session's incoming messages and returns its outgoing ones; an `Err` refuses
    /// the session (before any message flows).
    fn handle(
        &self,
        request: WsRequest,
        incoming: WsStream,
    ) -> BoxFuture<'_, Result<WsStream, StreamError>>;
}

/// The `ws` stream kind.
#[derive(Debug)]
pub struct Ws;

impl StreamKind for Ws {
    const NAME: &'static str = "ws";
    type Handler = dyn WsHandler;
}

/// The handler of a binding that reflects every message back, close included.
#[derive(Debug, Default)]
pub struct WsEcho;

impl WsHandler for WsEcho {
    fn handle(
        &self,
        _request: WsRequest,
        incoming: WsStream,
    ) -> BoxFuture<'_, Result<WsStream, StreamError>> {
        Box::pin(async move { Ok(incoming) })
    }
}
