//! How a `grpc` call is carried as a `messages` session, so a generic binding (`echo`, `fan`)
//! can answer gRPC calls without depending on this crate (Zilla's `grpc.echo`).
//!
//! The request metadata opens the session (`-bin` values in base64) and each request message
//! is one message with tag 0. The messages the handler returns are the response messages, the
//! metadata it answers with is the response metadata (`echo` answers with the request's), and
//! the end of its messages ends the call with `OK`; an error ends it with the error's status.

use std::sync::Arc;

use futures_util::StreamExt;
use zilla_engine::messages::{Message, MessageHandler, Session};
use zilla_engine::stream::{BoxFuture, StreamError};

use crate::kind::{GrpcHandler, GrpcRequest, GrpcResponse, Status};
use crate::metadata;

/// The `grpc` handler that carries each call into `handler`.
pub fn grpc_over_messages(handler: Arc<dyn MessageHandler>) -> Arc<dyn GrpcHandler> {
    Arc::new(GrpcOverMessages(handler))
}

struct GrpcOverMessages(Arc<dyn MessageHandler>);

impl GrpcHandler for GrpcOverMessages {
    fn call(&self, request: GrpcRequest) -> BoxFuture<'_, Result<GrpcResponse, Status>> {
        Box::pin(async move {
            let info = request.stream_info().cloned().unwrap_or_default();
            let incoming = Session {
                metadata: metadata::to_pairs(&request.metadata),
                messages: Box::pin(request.messages.map(|item| match item {
                    Ok(payload) => Ok(Message::new(0, payload)),
                    Err(status) => Err(StreamError::Protocol(status.to_string())),
                })),
            };
            let outgoing = self
                .0
                .handle(info, incoming)
                .await
                .map_err(|error| Status::from_stream_error(&error))?;
            let messages = outgoing.messages.map(|item| match item {
                Ok(message) => Ok(message.payload),
                Err(error) => Err(Status::from_stream_error(&error)),
            });
            let mut response = GrpcResponse::from_messages(Box::pin(messages));
            response.metadata = metadata::from_pairs(&outgoing.metadata);
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::{Code, MessageStream, ResponseItem};
    use bytes::Bytes;

    #[tokio::test]
    async fn a_call_is_answered_with_the_returned_messages_and_metadata() {
        let messages: MessageStream = Box::pin(futures_util::stream::iter([
            Ok(Bytes::from_static(b"one")),
            Ok(Bytes::from_static(b"two")),
        ]));
        let mut request = GrpcRequest::new("example.Echo", "Stream", messages);
        request.metadata.push_text("x-custom", "value");
        request
            .metadata
            .push_binary("x-raw-bin", Bytes::from_static(&[0, 255]));
        let response = grpc_over_messages(Arc::new(zilla_binding_echo::Echo))
            .call(request)
            .await
            .unwrap();
        assert_eq!(response.metadata.0.len(), 2);
        assert_eq!(
            response
                .metadata
                .get("x-raw-bin")
                .map(|v| v.as_bytes().to_vec()),
            Some(vec![0, 255])
        );
        let items: Vec<_> = response.items.collect().await;
        assert_eq!(
            items,
            vec![
                ResponseItem::Message(Bytes::from_static(b"one")),
                ResponseItem::Message(Bytes::from_static(b"two")),
                ResponseItem::Status(Status::ok()),
            ]
        );
    }

    #[tokio::test]
    async fn a_broken_request_ends_the_call_with_an_error_status() {
        let messages: MessageStream = Box::pin(futures_util::stream::iter([Err(Status::new(
            Code::Internal,
            "bad frame",
        ))]));
        let request = GrpcRequest::new("example.Echo", "Stream", messages);
        let response = grpc_over_messages(Arc::new(zilla_binding_echo::Echo))
            .call(request)
            .await
            .unwrap();
        let items: Vec<_> = response.items.collect().await;
        assert!(
            matches!(&items[..], [ResponseItem::Status(status)] if status.code == Code::Internal),
            "{items:?}"
        );
    }
}
