//! The `echo` binding: a `server` that writes back every byte it reads, then ends its side
//! when the peer ends theirs. Useful as the end of a pipeline to test what is in front of it.
//!
//! It serves every stream kind through the engine's `messages` kind, so it depends on no
//! protocol crate: behind a `ws` server it reflects every WebSocket message (text stays text,
//! and the close code comes back); behind an `http` server it answers 200 with the request
//! body (and trailers) streamed back and the request's `content-type` and `content-length`; behind a `fan` every
//! client sees what every client sends.
//!
//! ```yaml
//! name: example
//! bindings:
//!   tcp_server:
//!     type: tcp
//!     kind: server
//!     options:
//!       port: 12345
//!     exit: echo_server
//!   echo_server:
//!     type: echo
//!     kind: server
//! ```
//!
//! No options, no routes, no exit. Behind an `http` server:
//!
//! ```yaml
//! name: example
//! bindings:
//!   tcp_server:
//!     type: tcp
//!     kind: server
//!     options:
//!       port: 8080
//!     exit: http_server
//!   http_server:
//!     type: http
//!     kind: server
//!     exit: echo_server
//!   echo_server:
//!     type: echo
//!     kind: server
//! ```

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use zilla_engine::binding::{Binding, BindingFactory, BindingSchema, BuildContext};
use zilla_engine::messages::{MessageHandler, Messages, Session};
use zilla_engine::stream::{
    BoxFuture, ByteStream, Bytes, BytesHandler, StreamError, StreamInfo, StreamKind,
    connect_via_accept,
};
use zilla_engine::{BindingKind, BuildError, Registry};

/// Registers the `echo` binding type.
pub fn register(registry: &mut Registry) {
    registry.binding(EchoFactory);
}

/// Builds echo bindings.
#[derive(Debug)]
pub struct EchoFactory;

impl BindingFactory for EchoFactory {
    fn type_name(&self) -> &'static str {
        "echo"
    }

    fn kinds(&self) -> &'static [BindingKind] {
        &[BindingKind::Server]
    }

    fn accepts(&self, _kind: BindingKind) -> &'static [&'static str] {
        &[Bytes::NAME, Messages::NAME]
    }

    fn emits(&self, _kind: BindingKind) -> Option<&'static str> {
        None
    }

    fn schema(&self, _kind: BindingKind) -> BindingSchema {
        BindingSchema::default()
    }

    fn build(&self, context: &mut BuildContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
        let echo = Arc::new(Echo);
        // Bytes directly (one copy loop), every other kind as messages.
        context.publish::<Bytes>(echo.clone());
        context.publish::<Messages>(echo.clone());
        Ok(echo)
    }
}

/// Reflects what it receives.
#[derive(Debug)]
pub struct Echo;

impl Binding for Echo {}

impl BytesHandler for Echo {
    fn accept(&self, stream: ByteStream) -> BoxFuture<'_, Result<(), StreamError>> {
        Box::pin(async move {
            let (mut reader, mut writer) = tokio::io::split(stream.io);
            tokio::io::copy(&mut reader, &mut writer).await?;
            writer.shutdown().await?;
            Ok(())
        })
    }

    fn connect(&self, info: StreamInfo) -> BoxFuture<'_, Result<ByteStream, StreamError>> {
        Box::pin(async move { connect_via_accept(Arc::new(Echo), info) })
    }
}

impl MessageHandler for Echo {
    fn handle(
        &self,
        _info: StreamInfo,
        incoming: Session,
    ) -> BoxFuture<'_, Result<Session, StreamError>> {
        // The identity, as Zilla's echo: what the session was opened with and every message
        // go back as they came, pulled at the pace of the reader.
        Box::pin(async move { Ok(incoming) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn echoes_until_the_peer_ends() {
        let (near, far) = tokio::io::duplex(64);
        let task = tokio::spawn(async move {
            Echo.accept(ByteStream::new(far, StreamInfo::default()))
                .await
        });
        let (mut read, mut write) = tokio::io::split(near);
        write.write_all(b"hello").await.unwrap();
        write.shutdown().await.unwrap();
        let mut echoed = Vec::new();
        read.read_to_end(&mut echoed).await.unwrap();
        assert_eq!(echoed, b"hello");
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn reflects_messages_with_their_tags() {
        use futures_util::StreamExt;
        use zilla_engine::messages::Message;
        let sent = vec![Message::new(1, "text"), Message::new(2, vec![0u8, 255])];
        let incoming = Session {
            metadata: vec![("content-type".into(), "text/plain".into())],
            messages: Box::pin(futures_util::stream::iter(sent.clone().into_iter().map(Ok))),
        };
        let outgoing = Echo.handle(StreamInfo::default(), incoming).await.unwrap();
        assert_eq!(
            outgoing.metadata,
            vec![("content-type".to_owned(), "text/plain".to_owned())]
        );
        let echoed: Vec<Message> = outgoing.messages.map(|item| item.unwrap()).collect().await;
        assert_eq!(echoed, sent);
    }

    #[tokio::test]
    async fn connect_gives_an_echoing_stream() {
        let mut stream = Echo.connect(StreamInfo::default()).await.unwrap();
        stream.io.write_all(b"ping").await.unwrap();
        let mut buffer = [0u8; 4];
        stream.io.read_exact(&mut buffer).await.unwrap();
        assert_eq!(&buffer, b"ping");
    }
}
