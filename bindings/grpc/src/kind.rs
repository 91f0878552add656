//! The `grpc` stream kind: one gRPC call.
//!
//! A call is a [`GrpcRequest`] (which method, the request metadata, an optional deadline, and
//! the stream of request messages) answered by a [`GrpcHandler`] with either a
//! [`GrpcResponse`] (the response metadata, then a stream of [`ResponseItem`]s: messages,
//! then one final [`Status`] with its trailers) or, at once, a [`Status`] (a trailers-only
//! answer: no message was or will be sent).
//!
//! Messages are whole, de-framed and uncompressed protobuf bytes: the `grpc` server and client
//! bindings do the HTTP/2 framing (length prefix, compression flag, size limit); what flows
//! between bindings is one [`Bytes`] per message.
//!
//! Lifecycle and cancellation:
//! - The request messages end (`None`) when the caller half-closes; an `Err(Status)` item
//!   means the caller's side broke (a malformed frame, an invalid message, the peer reset
//!   the stream). A handler that sees it stops and drops what it opened.
//! - The response ends after its [`ResponseItem::Status`]; a response stream that ends
//!   without one ends with [`Code::Ok`] and no trailers.
//! - Dropping the response (or the future of [`GrpcHandler::call`]) cancels the call: the
//!   handler's own exit streams are dropped with it, so a client cancel reaches the upstream
//!   server as a reset. Dropping the request messages tells the caller the handler will read
//!   no more.
//! - Both directions are pulled: the next message is asked for only when the receiver can
//!   take it, so nothing is buffered without bound. Producers that push (a Kafka reader, a
//!   task) use [`message_channel`] / [`response_channel`], which are bounded.
//!
//! Metadata names are lower case. Values of names ending in `-bin` are binary
//! ([`MetadataValue::Binary`], base64 on the wire); the others are text. Reserved headers
//! (pseudo-headers, `content-type`, `te`, `user-agent`, `grpc-*`) are not metadata: the
//! bindings read or write them themselves.

use std::fmt;
use std::pin::Pin;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::time::Instant;
use zilla_engine::guard::Authorization;
use zilla_engine::stream::{BoxFuture, StreamError, StreamInfo, StreamKind};

/// A gRPC status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Code {
    /// Success.
    Ok = 0,
    /// Cancelled, typically by the caller.
    Cancelled = 1,
    /// Unknown error.
    Unknown = 2,
    /// The client gave an invalid argument.
    InvalidArgument = 3,
    /// The deadline passed before the call finished.
    DeadlineExceeded = 4,
    /// Some requested entity was not found.
    NotFound = 5,
    /// The entity already exists.
    AlreadyExists = 6,
    /// The caller may not do this.
    PermissionDenied = 7,
    /// A resource (a size limit, a quota) is exhausted.
    ResourceExhausted = 8,
    /// The system is not in a state required for the operation.
    FailedPrecondition = 9,
    /// The operation was aborted.
    Aborted = 10,
    /// Out of the valid range.
    OutOfRange = 11,
    /// Not implemented or not supported.
    Unimplemented = 12,
    /// An internal invariant is broken (a malformed frame).
    Internal = 13,
    /// The service is unavailable.
    Unavailable = 14,
    /// Unrecoverable data loss.
    DataLoss = 15,
    /// No valid authentication credentials.
    Unauthenticated = 16,
}

impl Code {
    /// The code of a `grpc-status` value; unknown numbers are [`Code::Unknown`], as gRPC says.
    pub fn from_u32(value: u32) -> Self {
        use Code::*;
        const ALL: [Code; 17] = [
            Ok,
            Cancelled,
            Unknown,
            InvalidArgument,
            DeadlineExceeded,
            NotFound,
            AlreadyExists,
            PermissionDenied,
            ResourceExhausted,
            FailedPrecondition,
            Aborted,
            OutOfRange,
            Unimplemented,
            Internal,
            Unavailable,
            DataLoss,
            Unauthenticated,
        ];
        usize::try_from(value)
            .ok()
            .and_then(|index| ALL.get(index).copied())
            .unwrap_or(Unknown)
    }

    /// The `grpc-status` number.
    pub fn as_u32(self) -> u32 {
        self as u32
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataValue {
    /// A text value (names not ending in `-bin`).
    Text(String),
    /// A binary value (names ending in `-bin`), decoded.
    Binary(Bytes),
}

impl MetadataValue {
    /// The value's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            MetadataValue::Text(text) => text.as_bytes(),
            MetadataValue::Binary(bytes) => bytes,
        }
    }
}

/// Ordered metadata (request headers, response headers or trailers); a name may repeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata(pub Vec<(String, MetadataValue)>);

impl Metadata {
    /// No metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a text value (`name` lower case, not ending in `-bin`).
    pub fn push_text(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0
            .push((name.into(), MetadataValue::Text(value.into())));
    }

    /// Adds a binary value (`name` lower case, ending in `-bin`).
    pub fn push_binary(&mut self, name: impl Into<String>, value: impl Into<Bytes>) {
        self.0
            .push((name.into(), MetadataValue::Binary(value.into())));
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&MetadataValue> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }

    /// Every entry, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &MetadataValue)> {
        self.0.iter().map(|(name, value)| (name.as_str(), value))
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The outcome of a call: a code, a message for people, and trailing metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The code (`grpc-status`).
    pub code: Code,
    /// The message (`grpc-message`).
    pub message: String,
    /// Trailing metadata.
    pub trailers: Metadata,
}

impl Status {
    /// A status with `code` and `message` and no trailers.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            trailers: Metadata::new(),
        }
    }

    /// Success.
    pub fn ok() -> Self {
        Self::new(Code::Ok, "")
    }

    /// The status answering a stream error between bindings: no route `UNIMPLEMENTED`, not
    /// authorized `PERMISSION_DENIED`, a protocol error `INTERNAL`, and `UNAVAILABLE` when
    /// what is behind the gateway cannot answer.
    pub fn from_stream_error(error: &StreamError) -> Self {
        let code = match error {
            StreamError::NoRoute => Code::Unimplemented,
            StreamError::Unauthorized => Code::PermissionDenied,
            StreamError::Protocol(_) => Code::Internal,
            StreamError::Upstream(_) | StreamError::Io(_) | StreamError::Stopped => {
                Code::Unavailable
            }
        };
        Self::new(code, error.to_string())
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Status {}

/// Request messages: each item one whole message; an `Err` ends the stream abnormally.
pub type MessageStream = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

/// What a response carries after its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseItem {
    /// One whole response message.
    Message(Bytes),
    /// The final status with its trailers; nothing follows it.
    Status(Status),
}

/// Response messages, then the final status.
pub type ResponseStream = Pin<Box<dyn Stream<Item = ResponseItem> + Send>>;

/// One call (Zilla's `GrpcBeginEx` plus the request messages).
pub struct GrpcRequest {
    /// `http` or `https`.
    pub scheme: String,
    /// The authority the client called (`host[:port]`).
    pub authority: String,
    /// The fully qualified service, `pkg.Service`.
    pub service: String,
    /// The method name, `Method`.
    pub method: String,
    /// Request metadata.
    pub metadata: Metadata,
    /// When the call must be finished (from `grpc-timeout`); `None` for no deadline.
    pub deadline: Option<Instant>,
    /// The request messages.
    pub messages: MessageStream,
    /// What the transport and guards knew: [`StreamInfo`], [`Authorization`].
    pub extensions: http::Extensions,
    /// Whether the method answers with a stream of messages, when the server knows it from
    /// its catalog; `None` when it does not.
    pub server_streaming: Option<bool>,
    /// `service/method`, built once: each binding the call passes matches its routes on it.
    pub(crate) full_method: OnceLock<String>,
}

impl GrpcRequest {
    /// A call of `service`/`method` with `messages` and nothing else.
    pub fn new(
        service: impl Into<String>,
        method: impl Into<String>,
        messages: MessageStream,
    ) -> Self {
        Self {
            scheme: "http".to_owned(),
            authority: String::new(),
            service: service.into(),
            method: method.into(),
            metadata: Metadata::new(),
            deadline: None,
            messages,
            extensions: http::Extensions::new(),
            server_streaming: None,
            full_method: OnceLock::new(),
        }
    }

    /// `pkg.Service/Method`, as routes match it (built on first use; `service` and `method`
    /// are not to change once the call is routed).
    pub fn full_method(&self) -> &str {
        self.full_method.get_or_init(|| {
            let mut full = String::with_capacity(self.service.len() + 1 + self.method.len());
            full.push_str(&self.service);
            full.push('/');
            full.push_str(&self.method);
            full
        })
    }

    /// The time left before the deadline (zero once passed); `None` without a deadline.
    pub fn timeout(&self) -> Option<Duration> {
        self.deadline
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }

    /// The connection's [`StreamInfo`], if the call came through a transport.
    pub fn stream_info(&self) -> Option<&StreamInfo> {
        self.extensions
            .get::<std::sync::Arc<StreamInfo>>()
            .map(std::sync::Arc::as_ref)
    }

    /// The guard sessions the call holds.
    pub fn authorization(&self) -> Option<&Authorization> {
        self.extensions.get::<Authorization>()
    }
}

impl fmt::Debug for GrpcRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcRequest")
            .field("service", &self.service)
            .field("method", &self.method)
            .field("metadata", &self.metadata)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// The answer to a call that sends a response (not trailers-only).
pub struct GrpcResponse {
    /// Response metadata (sent as headers before the first message).
    pub metadata: Metadata,
    /// Messages, then the status.
    pub items: ResponseStream,
}

impl GrpcResponse {
    /// A response of `items` without metadata.
    pub fn new(items: ResponseStream) -> Self {
        Self {
            metadata: Metadata::new(),
            items,
        }
    }

    /// A response streaming `messages` and ending with [`Code::Ok`]; an `Err` in `messages`
    /// ends it with that status instead.
    pub fn from_messages(messages: MessageStream) -> Self {
        let items = messages
            .map(Some)
            .chain(futures_util::stream::once(async { None }))
            .scan(false, |finished, item| {
                let next = if *finished {
                    None
                } else {
                    match item {
                        Some(Ok(message)) => Some(ResponseItem::Message(message)),
                        Some(Err(status)) => {
                            *finished = true;
                            Some(ResponseItem::Status(status))
                        }
                        None => {
                            *finished = true;
                            Some(ResponseItem::Status(Status::ok()))
                        }
                    }
                };
                std::future::ready(next)
            });
        Self::new(Box::pin(items))
    }
}

impl fmt::Debug for GrpcResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcResponse")
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

/// Handler of the `grpc` stream kind: answers one call.
pub trait GrpcHandler: Send + Sync + 'static {
    /// Answers `request`. An `Err` is a trailers-only answer: the status, no message.
    fn call(&self, request: GrpcRequest) -> BoxFuture<'_, Result<GrpcResponse, Status>>;
}

/// The `grpc` stream kind.
#[derive(Debug)]
pub struct Grpc;

impl StreamKind for Grpc {
    const NAME: &'static str = "grpc";
    type Handler = dyn GrpcHandler;
}

/// Sends request (or response) messages into a [`MessageStream`] made by [`message_channel`].
pub type MessageSender = tokio::sync::mpsc::Sender<Result<Bytes, Status>>;

/// A bounded channel of messages: the sender waits while `capacity` messages are unread.
/// Dropping the sender ends the stream normally; dropping the stream makes `send` fail, which
/// tells the producer to stop.
pub fn message_channel(capacity: usize) -> (MessageSender, MessageStream) {
    let (sender, receiver) = tokio::sync::mpsc::channel(capacity.max(1));
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    (sender, Box::pin(stream))
}

/// Sends response items into a [`ResponseStream`] made by [`response_channel`].
pub type ResponseSender = tokio::sync::mpsc::Sender<ResponseItem>;

/// A bounded channel of response items, as [`message_channel`].
pub fn response_channel(capacity: usize) -> (ResponseSender, ResponseStream) {
    let (sender, receiver) = tokio::sync::mpsc::channel(capacity.max(1));
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    (sender, Box::pin(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_numbers_are_unknown() {
        for number in 0..17 {
            assert_eq!(Code::from_u32(number).as_u32(), number);
        }
        assert_eq!(Code::from_u32(17), Code::Unknown);
        assert_eq!(Code::from_u32(u32::MAX), Code::Unknown);
    }

    #[test]
    fn stream_errors_map_to_statuses() {
        assert_eq!(
            Status::from_stream_error(&StreamError::NoRoute).code,
            Code::Unimplemented
        );
        assert_eq!(
            Status::from_stream_error(&StreamError::Upstream("down".into())).code,
            Code::Unavailable
        );
        assert_eq!(
            Status::from_stream_error(&StreamError::Protocol("bad".into())).code,
            Code::Internal
        );
    }

    #[tokio::test]
    async fn a_response_from_messages_ends_with_its_status() {
        let messages: MessageStream = Box::pin(futures_util::stream::iter([
            Ok(Bytes::from_static(b"a")),
            Ok(Bytes::from_static(b"b")),
        ]));
        let items: Vec<_> = GrpcResponse::from_messages(messages).items.collect().await;
        assert_eq!(
            items,
            vec![
                ResponseItem::Message(Bytes::from_static(b"a")),
                ResponseItem::Message(Bytes::from_static(b"b")),
                ResponseItem::Status(Status::ok()),
            ]
        );
        let failing: MessageStream = Box::pin(futures_util::stream::iter([
            Ok(Bytes::from_static(b"a")),
            Err(Status::new(Code::Aborted, "gone")),
            Ok(Bytes::from_static(b"never")),
        ]));
        let items: Vec<_> = GrpcResponse::from_messages(failing).items.collect().await;
        assert_eq!(
            items.last(),
            Some(&ResponseItem::Status(Status::new(Code::Aborted, "gone")))
        );
        assert_eq!(items.len(), 2);
    }

    #[tokio::test]
    async fn channels_are_bounded() {
        let (sender, mut stream) = message_channel(1);
        sender.send(Ok(Bytes::from_static(b"1"))).await.unwrap();
        assert!(sender.try_send(Ok(Bytes::from_static(b"2"))).is_err());
        assert_eq!(stream.next().await, Some(Ok(Bytes::from_static(b"1"))));
        drop(sender);
        assert_eq!(stream.next().await, None);
    }
}
