//! The `messages` stream kind: a session of whole messages each way, for bindings that work on
//! any protocol (`echo`, `fan`).
//!
//! A binding that serves every stream kind publishes one [`MessageHandler`]. A caller of
//! another kind reaches it through an adapter the kind's own crate registers
//! ([`crate::Registry::adapter`]): the `ws` crate carries each WebSocket message as one
//! message, the `http` crate carries a request body as messages and answers with the messages
//! returned, and the engine carries `bytes` as chunks (and, the other way, a `messages` caller
//! over a `bytes` exit). So the generic bindings depend on no protocol crate, and the engine
//! knows no protocol: it only knows that a kind can be carried as messages.
//!
//! A message has a `tag` the carrying protocol gives meaning to (WebSocket: text or binary);
//! generic bindings pass it through unchanged. Both directions are pulled, so backpressure
//! holds end to end.

use std::pin::Pin;
use std::sync::Arc;

use bytes::BytesMut;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::stream::{
    BoxFuture, ByteStream, BytesHandler, StreamError, StreamInfo, StreamKind, connect_via_accept,
};

/// One message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// What the carrying protocol keeps with the payload (e.g. WebSocket text or binary);
    /// `0` where it keeps nothing. Generic bindings pass it through unchanged.
    pub tag: u8,
    /// The payload.
    pub payload: bytes::Bytes,
}

impl Message {
    /// A message with `tag` and `payload`.
    pub fn new(tag: u8, payload: impl Into<bytes::Bytes>) -> Self {
        Self {
            tag,
            payload: payload.into(),
        }
    }
}

/// Messages in one direction. An `Err` item ends the session abnormally; the end of the
/// stream ends it normally.
pub type MessageStream = Pin<Box<dyn Stream<Item = Result<Message, StreamError>> + Send>>;

/// One direction of a session: what it was opened with, then its messages.
pub struct Session {
    /// Name/value pairs the carrying protocol opened this direction with (HTTP: the request
    /// or response headers); empty where it has none. Generic bindings pass them through
    /// unchanged: `echo` answers with what it was opened with, as Zilla's echo does.
    pub metadata: Vec<(String, String)>,
    /// The messages.
    pub messages: MessageStream,
}

impl Session {
    /// A session of `messages` without metadata.
    pub fn new(messages: MessageStream) -> Self {
        Self {
            metadata: Vec::new(),
            messages,
        }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

/// Handler of the `messages` kind: answers one session.
pub trait MessageHandler: Send + Sync + 'static {
    /// Takes the session's incoming direction and returns its outgoing one; an `Err` refuses
    /// the session before any message flows.
    fn handle(
        &self,
        info: StreamInfo,
        incoming: Session,
    ) -> BoxFuture<'_, Result<Session, StreamError>>;
}

/// The `messages` stream kind.
#[derive(Debug)]
pub struct Messages;

impl StreamKind for Messages {
    const NAME: &'static str = "messages";
    type Handler = dyn MessageHandler;
}

/// Most bytes read at once from a byte stream into one message.
const CHUNK: usize = 16 * 1024;

/// The messages of a byte reader: each read becomes one message with tag 0.
pub fn chunks(reader: impl tokio::io::AsyncRead + Send + Unpin + 'static) -> MessageStream {
    Box::pin(futures_util::stream::unfold(
        (reader, BytesMut::new()),
        |(mut reader, mut buffer)| async move {
            buffer.reserve(CHUNK);
            match reader.read_buf(&mut buffer).await {
                Ok(0) => None,
                Ok(_) => Some((
                    Ok(Message::new(0, buffer.split().freeze())),
                    (reader, buffer),
                )),
                Err(error) => Some((Err(StreamError::Io(error)), (reader, buffer))),
            }
        },
    ))
}

/// Writes every payload of `messages` to `writer`, then shuts it down.
///
/// While a payload is being written the next item is already awaited (one at most), so an
/// error that ends the stream (the session was ended on the other side) is seen at once even
/// when the writer is stuck behind a peer that does not read.
pub async fn write_all(
    mut messages: MessageStream,
    writer: &mut (impl tokio::io::AsyncWrite + Unpin),
) -> Result<(), StreamError> {
    let mut next = messages.next().await;
    while let Some(item) = next.take() {
        let message = item?;
        let mut ahead = None;
        {
            let mut write = std::pin::pin!(async {
                writer.write_all(&message.payload).await?;
                writer.flush().await
            });
            loop {
                tokio::select! {
                    written = &mut write => {
                        written?;
                        break;
                    }
                    item = messages.next(), if ahead.is_none() => match item {
                        Some(Err(error)) => return Err(error),
                        item => ahead = Some(item),
                    },
                }
            }
        }
        next = match ahead {
            Some(item) => item,
            None => messages.next().await,
        };
    }
    writer.shutdown().await?;
    Ok(())
}

/// Carries `bytes` streams into a messages handler: what the peer writes arrives in chunks,
/// and the payloads returned are written back.
pub struct BytesOverMessages(pub Arc<dyn MessageHandler>);

impl BytesHandler for BytesOverMessages {
    fn accept(&self, stream: ByteStream) -> BoxFuture<'_, Result<(), StreamError>> {
        Box::pin(async move {
            let (reader, mut writer) = tokio::io::split(stream.io);
            let outgoing = self
                .0
                .handle(stream.info, Session::new(chunks(reader)))
                .await?;
            write_all(outgoing.messages, &mut writer).await
        })
    }

    fn connect(&self, info: StreamInfo) -> BoxFuture<'_, Result<ByteStream, StreamError>> {
        let handler: Arc<dyn BytesHandler> = Arc::new(BytesOverMessages(self.0.clone()));
        Box::pin(async move { connect_via_accept(handler, info) })
    }
}

/// Carries messages sessions over a `bytes` exit: payloads are written to a stream the exit
/// opens, and what it answers comes back in chunks (tags are not kept).
pub struct MessagesOverBytes(pub Arc<dyn BytesHandler>);

impl MessageHandler for MessagesOverBytes {
    fn handle(
        &self,
        info: StreamInfo,
        incoming: Session,
    ) -> BoxFuture<'_, Result<Session, StreamError>> {
        Box::pin(async move {
            let stream = self.0.connect(info).await?;
            let (reader, mut writer) = tokio::io::split(stream.io);
            let sending = tokio::spawn(async move {
                if let Err(error) = write_all(incoming.messages, &mut writer).await {
                    tracing::debug!(%error, "writing a message session to bytes failed");
                }
            });
            // The writer task ends with the session: when the reply stream is dropped, so is
            // the guard that aborts it.
            let guard = AbortOnDrop(sending);
            Ok(Session::new(Box::pin(chunks(reader).map(move |item| {
                let _ = &guard;
                item
            }))))
        })
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) fn bytes_over_messages(handler: Arc<dyn MessageHandler>) -> Arc<dyn BytesHandler> {
    Arc::new(BytesOverMessages(handler))
}

pub(crate) fn messages_over_bytes(handler: Arc<dyn BytesHandler>) -> Arc<dyn MessageHandler> {
    Arc::new(MessagesOverBytes(handler))
}
