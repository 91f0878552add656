//! The `echo` binding: a `server` that writes back every byte it reads, then ends its side
//! when the peer ends theirs. Useful as the end of a pipeline to test what is in front of it.
//!
//! It also answers `http` exchanges: status 200, the request body streamed back as the
//! response body, and the request's `content-type` (and `content-length`, when known) copied.
//! Behind a `ws` server it reflects every WebSocket message, close code included.
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

use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use tokio::io::AsyncWriteExt;
use zilla_binding_http::{Http, HttpHandler};
use zilla_binding_ws::{Ws, WsEcho};
use zilla_engine::binding::{Binding, BindingFactory, BindingSchema, BuildContext};
use zilla_engine::stream::{
    BoxFuture, ByteStream, Bytes, BytesHandler, StreamError, StreamInfo, connect_via_accept,
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
        &["bytes", "http", "ws"]
    }

    fn emits(&self, _kind: BindingKind) -> Option<&'static str> {
        None
    }

    fn schema(&self, _kind: BindingKind) -> BindingSchema {
        BindingSchema::default()
    }

    fn build(&self, context: &mut BuildContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
        let echo = Arc::new(Echo);
        context.publish::<Bytes>(echo.clone());
        context.publish::<Http>(echo.clone());
        context.publish::<Ws>(Arc::new(WsEcho));
        Ok(echo)
    }
}

/// Reflects bytes.
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

impl HttpHandler for Echo {
    fn handle(
        &self,
        request: zilla_binding_http::Request,
    ) -> BoxFuture<'_, Result<zilla_binding_http::Response, StreamError>> {
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let mut response = zilla_binding_http::Response::new(body);
            for name in [CONTENT_TYPE, CONTENT_LENGTH] {
                if let Some(value) = parts.headers.get(&name) {
                    response.headers_mut().insert(name, value.clone());
                }
            }
            Ok(response)
        })
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
    async fn reflects_http_exchanges() {
        use http_body_util::BodyExt;
        let request = http::Request::builder()
            .method("POST")
            .uri("/anything")
            .header("content-type", "text/plain")
            .header("x-other", "not copied")
            .body(zilla_binding_http::kind::full("hello"))
            .unwrap();
        let response = Echo.handle(request).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/plain");
        assert!(!response.headers().contains_key("x-other"));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "hello");
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
