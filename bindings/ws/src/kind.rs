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
//! An echo is the identity: `Ok(incoming)`. A generic binding (`echo`, `fan`) serves `ws`
//! sessions through [`ws_over_messages`].

use std::future::ready;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use zilla_engine::guard::Authorization;
use zilla_engine::messages::{Message, MessageHandler, Session};
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
        self.extensions
            .get::<std::sync::Arc<StreamInfo>>()
            .map(std::sync::Arc::as_ref)
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

/// Tag of a text message carried as a generic message (the WebSocket opcode).
pub const TEXT: u8 = 1;
/// Tag of a binary message carried as a generic message (the WebSocket opcode).
pub const BINARY: u8 = 2;

/// Carries ws sessions into a `messages` handler (`echo`, `fan`): each text or binary message
/// is one message tagged [`TEXT`] or [`BINARY`]; the peer's close ends the incoming messages,
/// and when the handler's messages end the session closes with the code the peer closed with
/// (RFC 6455 §5.5.1: the answering close echoes the status code), or normally.
pub fn ws_over_messages(handler: Arc<dyn MessageHandler>) -> Arc<dyn WsHandler> {
    Arc::new(WsOverMessages(handler))
}

struct WsOverMessages(Arc<dyn MessageHandler>);

impl WsHandler for WsOverMessages {
    fn handle(
        &self,
        request: WsRequest,
        incoming: WsStream,
    ) -> BoxFuture<'_, Result<WsStream, StreamError>> {
        Box::pin(async move {
            let info = request.stream_info().cloned().unwrap_or_default();
            let close = Arc::new(OnceLock::<WsClose>::new());
            let peer_close = close.clone();
            let messages = incoming.scan((), move |(), item| {
                ready(match item {
                    Ok(WsMessage::Text(text)) => Some(Ok(Message::new(TEXT, Bytes::from(text)))),
                    Ok(WsMessage::Binary(data)) => Some(Ok(Message::new(BINARY, data))),
                    Ok(WsMessage::Close(code)) => {
                        if let Some(code) = code {
                            let _ = peer_close.set(code);
                        }
                        None
                    }
                    Err(error) => Some(Err(error)),
                })
            });
            let incoming = Session::new(Box::pin(messages));
            let outgoing = self.0.handle(info, incoming).await?;
            let replies = outgoing.messages.map(|item| item.and_then(to_ws));
            let closing = futures_util::stream::once(async move { close.get().cloned() })
                .filter_map(|code| ready(code.map(|code| Ok(WsMessage::Close(Some(code))))));
            Ok(Box::pin(replies.chain(closing)) as WsStream)
        })
    }
}

fn to_ws(message: Message) -> Result<WsMessage, StreamError> {
    if message.tag == TEXT {
        Utf8Bytes::try_from(message.payload)
            .map(WsMessage::Text)
            .map_err(|_| StreamError::Protocol("a text message that is not UTF-8".into()))
    } else {
        Ok(WsMessage::Binary(message.payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_and_the_close_code_come_back_through_a_generic_handler() {
        let sent = vec![
            Ok(WsMessage::text("hello")),
            Ok(WsMessage::binary(vec![0u8, 255])),
            Ok(WsMessage::Close(Some(WsClose {
                code: 4001,
                reason: "bye".into(),
            }))),
            Ok(WsMessage::text("after close: never read")),
        ];
        let incoming: WsStream = Box::pin(futures_util::stream::iter(sent));
        let outgoing = ws_over_messages(Arc::new(zilla_binding_echo::Echo))
            .handle(WsRequest::default(), incoming)
            .await
            .unwrap();
        let seen: Vec<WsMessage> = outgoing.map(|item| item.unwrap()).collect().await;
        assert_eq!(
            seen,
            vec![
                WsMessage::text("hello"),
                WsMessage::binary(vec![0u8, 255]),
                WsMessage::Close(Some(WsClose {
                    code: 4001,
                    reason: "bye".into()
                })),
            ]
        );
    }

    #[test]
    fn a_text_tag_on_bytes_that_are_not_utf8_is_a_protocol_error() {
        assert!(to_ws(Message::new(TEXT, vec![0xff])).is_err());
        assert_eq!(
            to_ws(Message::new(TEXT, "ok")).unwrap(),
            WsMessage::text("ok")
        );
    }
}
