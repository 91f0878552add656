//! One WebSocket session on an upgraded connection: the wire messages as [`WsMessage`]
//! streams, shared by the server and the client.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::task::{Context, Poll};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, Stream, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::Error as WireError;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;
use zilla_engine::stream::StreamError;

use crate::kind::{WsClose, WsMessage, WsStream};

/// A WebSocket over an upgraded HTTP connection.
pub(crate) type Wire = WebSocketStream<TokioIo<Upgraded>>;

const GOING_AWAY: u16 = 1001;
const PROTOCOL_ERROR: u16 = 1002;
const INVALID_DATA: u16 = 1007;
const TOO_BIG: u16 = 1009;
const INTERNAL_ERROR: u16 = 1011;

/// The close code a read failure asks for, set by the reading side and used by the writing
/// side when it closes (0: none).
pub(crate) type FailureCode = Arc<AtomicU16>;

/// Messages read from the wire, once the wire is there.
pub(crate) struct Incoming {
    state: IncomingState,
    failure: FailureCode,
}

enum IncomingState {
    /// The connection is not handed over yet.
    Waiting(oneshot::Receiver<SplitStream<Wire>>),
    Reading(SplitStream<Wire>),
    Done,
}

impl Incoming {
    /// Messages read from the wire that `wire` will deliver.
    pub(crate) fn pending(
        wire: oneshot::Receiver<SplitStream<Wire>>,
        failure: FailureCode,
    ) -> Self {
        Self {
            state: IncomingState::Waiting(wire),
            failure,
        }
    }

    /// Messages read from `wire`.
    pub(crate) fn reading(wire: SplitStream<Wire>, failure: FailureCode) -> Self {
        Self {
            state: IncomingState::Reading(wire),
            failure,
        }
    }
}

impl Stream for Incoming {
    type Item = Result<WsMessage, StreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                IncomingState::Waiting(receiver) => match Pin::new(receiver).poll(cx) {
                    Poll::Ready(Ok(wire)) => this.state = IncomingState::Reading(wire),
                    Poll::Ready(Err(_)) => {
                        this.state = IncomingState::Done;
                        return Poll::Ready(Some(Err(StreamError::Upstream(
                            "the connection was not upgraded".to_owned(),
                        ))));
                    }
                    Poll::Pending => return Poll::Pending,
                },
                IncomingState::Reading(wire) => match wire.poll_next_unpin(cx) {
                    Poll::Ready(Some(Ok(message))) => match message {
                        Message::Text(text) => return Poll::Ready(Some(Ok(WsMessage::Text(text)))),
                        Message::Binary(data) => {
                            return Poll::Ready(Some(Ok(WsMessage::Binary(data))));
                        }
                        Message::Close(frame) => {
                            this.state = IncomingState::Done;
                            let close = frame.map(|frame| WsClose {
                                code: u16::from(frame.code),
                                reason: frame.reason.as_str().to_owned(),
                            });
                            return Poll::Ready(Some(Ok(WsMessage::Close(close))));
                        }
                        // Answered by the wire itself.
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                    },
                    Poll::Ready(Some(Err(error))) => {
                        this.state = IncomingState::Done;
                        return match error {
                            WireError::ConnectionClosed | WireError::AlreadyClosed => {
                                Poll::Ready(None)
                            }
                            error => {
                                let code = match &error {
                                    WireError::Capacity(_) => TOO_BIG,
                                    WireError::Utf8(_) => INVALID_DATA,
                                    WireError::Protocol(_) => PROTOCOL_ERROR,
                                    _ => INTERNAL_ERROR,
                                };
                                this.failure.store(code, Ordering::Relaxed);
                                Poll::Ready(Some(Err(wire_error(error))))
                            }
                        };
                    }
                    Poll::Ready(None) => this.state = IncomingState::Done,
                    Poll::Pending => return Poll::Pending,
                },
                IncomingState::Done => return Poll::Ready(None),
            }
        }
    }
}

fn wire_error(error: WireError) -> StreamError {
    match error {
        WireError::Io(error) => StreamError::Io(error),
        error => StreamError::Protocol(error.to_string()),
    }
}

fn close_frame(close: WsClose) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(close.code),
        reason: close.reason.into(),
    }
}

/// Writes `outgoing` to the wire until it ends (then closes normally), fails (then closes
/// with the read failure's code, or 1011), or `stopped` (then closes with 1001).
pub(crate) async fn write(
    mut sink: SplitSink<Wire, Message>,
    mut outgoing: WsStream,
    failure: FailureCode,
    stopped: CancellationToken,
) {
    let close = loop {
        let next = match outgoing.next().now_or_never() {
            Some(next) => next,
            None => {
                // Nothing more is ready: put what was queued on the wire before waiting.
                if sink.flush().await.is_err() {
                    return;
                }
                tokio::select! {
                    next = outgoing.next() => next,
                    _ = stopped.cancelled() => break Some(WsClose { code: GOING_AWAY, reason: String::new() }),
                }
            }
        };
        let message = match next {
            None => break Some(WsClose::normal()),
            Some(Ok(WsMessage::Text(text))) => Message::Text(text),
            Some(Ok(WsMessage::Binary(data))) => Message::Binary(data),
            Some(Ok(WsMessage::Close(close))) => break close,
            Some(Err(error)) => {
                tracing::debug!(%error, "ws session failed");
                let code = match failure.load(Ordering::Relaxed) {
                    0 => INTERNAL_ERROR,
                    code => code,
                };
                break Some(WsClose {
                    code,
                    reason: String::new(),
                });
            }
        };
        if let Err(error) = sink.feed(message).await {
            tracing::debug!(%error, "ws write failed");
            return;
        }
    };
    // After the peer's close the wire has answered it already; a second close is refused.
    let _ = sink.send(Message::Close(close.map(close_frame))).await;
    let _ = sink.close().await;
}
