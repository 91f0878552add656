//! How an `http` exchange is carried as a `messages` session, so a generic binding (`echo`,
//! `fan`) can be the exit of an `http` caller without depending on this crate.
//!
//! The request headers open the session (its metadata); the request body becomes the incoming
//! messages: data frames with tag [`DATA`], trailers as one message with tag [`TRAILERS`]
//! holding `name: value\r\n` lines. The messages the handler returns become the response
//! body the same way, with status 200 and the `content-type` and `content-length` of the
//! metadata the handler answered with (`echo` answers with the request's, as Zilla's echo
//! reflects the request's headers; `fan` answers with none, and the body is then chunked).

use std::sync::Arc;

use futures_util::StreamExt;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::Frame;
use zilla_engine::messages::{Message, MessageHandler, Session};
use zilla_engine::stream::{BoxFuture, StreamError};

use crate::kind::{BodyError, HttpHandler, Request, Response, boxed, stream_info};

/// Tag of a message holding body data.
pub const DATA: u8 = 0;
/// Tag of a message holding trailers, as `name: value\r\n` lines.
pub const TRAILERS: u8 = 1;

/// The `http` handler that carries each exchange into `handler`.
pub fn http_over_messages(handler: Arc<dyn MessageHandler>) -> Arc<dyn HttpHandler> {
    Arc::new(HttpOverMessages(handler))
}

struct HttpOverMessages(Arc<dyn MessageHandler>);

impl HttpHandler for HttpOverMessages {
    fn handle(&self, request: Request) -> BoxFuture<'_, Result<Response, StreamError>> {
        Box::pin(async move {
            let info = stream_info(&request).cloned().unwrap_or_default();
            let (parts, body) = request.into_parts();
            let messages = http_body_util::BodyStream::new(body).map(|frame| match frame {
                Ok(frame) => Ok(to_message(frame)),
                Err(error) => Err(StreamError::Protocol(error.to_string())),
            });
            let metadata = parts
                .headers
                .iter()
                .filter_map(|(name, value)| {
                    Some((name.to_string(), value.to_str().ok()?.to_owned()))
                })
                .collect();
            let incoming = Session {
                metadata,
                messages: Box::pin(messages),
            };
            let outgoing = self.0.handle(info, incoming).await?;
            let frames = outgoing.messages.map(|message| match message {
                Ok(message) => Ok(to_frame(message)),
                Err(error) => Err(BodyError::from(error)),
            });
            let mut response = Response::new(boxed(http_body_util::StreamBody::new(frames)));
            for (name, value) in &outgoing.metadata {
                let name = match name.as_str() {
                    "content-type" => CONTENT_TYPE,
                    "content-length" => CONTENT_LENGTH,
                    _ => continue,
                };
                if let Ok(value) = HeaderValue::from_str(value) {
                    response.headers_mut().insert(name, value);
                }
            }
            Ok(response)
        })
    }
}

fn to_message(frame: Frame<bytes::Bytes>) -> Message {
    match frame.into_data() {
        Ok(data) => Message::new(DATA, data),
        Err(frame) => {
            let mut lines = Vec::new();
            for (name, value) in frame.into_trailers().iter().flatten() {
                lines.extend_from_slice(name.as_str().as_bytes());
                lines.extend_from_slice(b": ");
                lines.extend_from_slice(value.as_bytes());
                lines.extend_from_slice(b"\r\n");
            }
            Message::new(TRAILERS, lines)
        }
    }
}

fn to_frame(message: Message) -> Frame<bytes::Bytes> {
    if message.tag != TRAILERS {
        return Frame::data(message.payload);
    }
    let mut trailers = HeaderMap::new();
    for line in message.payload.split(|byte| *byte == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|byte| *byte == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii_start();
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) && trailers.try_append(name, value).is_err()
        {
            // More fields than a header map holds: the rest are left out.
            break;
        }
    }
    Frame::trailers(trailers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn trailers_round_trip_through_a_message() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", HeaderValue::from_static("abc123"));
        trailers.append("x-more", HeaderValue::from_static("a"));
        trailers.append("x-more", HeaderValue::from_static("b"));
        let message = to_message(Frame::trailers(trailers.clone()));
        assert_eq!(message.tag, TRAILERS);
        let frame = to_frame(message);
        assert_eq!(frame.into_trailers().ok(), Some(trailers));
    }

    #[test]
    fn a_trailers_message_with_more_fields_than_a_map_holds_keeps_those_that_fit() {
        let lines: String = (0..40_000).map(|index| format!("x-{index}: v\n")).collect();
        let frame = to_frame(Message::new(TRAILERS, bytes::Bytes::from(lines)));
        let trailers = frame.into_trailers().ok().unwrap_or_default();
        assert!(trailers.contains_key("x-0"));
        assert!(trailers.keys_len() > 20_000, "{}", trailers.keys_len());
        assert!(!trailers.contains_key("x-39999"));
    }

    /// A messages handler that answers with what it received.
    struct Identity;

    impl MessageHandler for Identity {
        fn handle(
            &self,
            _info: zilla_engine::stream::StreamInfo,
            incoming: Session,
        ) -> BoxFuture<'_, Result<Session, StreamError>> {
            Box::pin(async move { Ok(incoming) })
        }
    }

    #[tokio::test]
    async fn an_exchange_is_answered_with_the_returned_messages() {
        let request = http::Request::builder()
            .method("POST")
            .header("content-type", "text/plain")
            .header("content-length", "5")
            .body(crate::kind::full("hello"))
            .unwrap();
        let response = http_over_messages(Arc::new(Identity))
            .handle(request)
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/plain");
        assert_eq!(response.headers()["content-length"], "5");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "hello");
    }
}
