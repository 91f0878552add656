//! The `grpc` client: sends each call as an `http` exchange (HTTP/2 through an `http` client)
//! and turns the answer back into a `grpc` response.

use std::sync::Arc;

use futures_util::StreamExt;
use http::header::{CONTENT_TYPE, TE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body::Frame;
use zilla_binding_http::kind::{self, Body, BodyError, HttpHandler};
use zilla_engine::route::Routes;
use zilla_engine::stream::BoxFuture;

use crate::codec::{self, Decoder, Encoding};
use crate::config::MethodCondition;
use crate::kind::{
    Code, GrpcHandler, GrpcRequest, GrpcResponse, MessageStream, Metadata, ResponseItem, Status,
};
use crate::metadata;

/// The `grpc` client binding's `grpc` handler.
pub(crate) struct GrpcClient {
    pub routes: Routes<MethodCondition, (), Arc<dyn HttpHandler>>,
    /// The most a response message may hold.
    pub maximum_message_size: usize,
}

impl GrpcHandler for GrpcClient {
    fn call(&self, request: GrpcRequest) -> BoxFuture<'_, Result<GrpcResponse, Status>> {
        Box::pin(self.send(request))
    }
}

impl GrpcClient {
    async fn send(&self, request: GrpcRequest) -> Result<GrpcResponse, Status> {
        let route = crate::config::route_of(&self.routes, &request)?;
        let timeout = request.timeout();
        if timeout.is_some_and(|left| left.is_zero()) {
            return Err(Status::new(Code::DeadlineExceeded, "deadline exceeded"));
        }
        let authority = if request.authority.is_empty() {
            "localhost"
        } else {
            request.authority.as_str()
        };
        // Pushed rather than `format!`ed: this runs for every call.
        let full_method = request.full_method();
        let mut uri =
            String::with_capacity(request.scheme.len() + authority.len() + full_method.len() + 4);
        for part in [request.scheme.as_str(), "://", authority, "/", full_method] {
            uri.push_str(part);
        }
        let uri = http::Uri::try_from(uri)
            .map_err(|error| Status::new(Code::Internal, error.to_string()))?;
        // Built in place with constant names and values, not through `http`'s builder, which
        // parses each name and value given as text: this runs for every call.
        let mut http_request = http::Request::new(request_body(request.messages));
        *http_request.method_mut() = Method::POST;
        *http_request.uri_mut() = uri;
        let headers = http_request.headers_mut();
        // Room for the usual few; a call with thousands of metadata entries grows the map as it
        // goes instead of asking for more than a header map may hold.
        headers.reserve(4 + request.metadata.0.len().min(64));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        headers.insert(
            codec::names::ACCEPT_ENCODING,
            HeaderValue::from_static(codec::ACCEPT_ENCODING),
        );
        if let Some(timeout) = timeout {
            let value = HeaderValue::try_from(codec::format_timeout(timeout))
                .map_err(|error| Status::new(Code::Internal, error.to_string()))?;
            headers.insert(codec::names::TIMEOUT, value);
        }
        metadata::to_headers(&request.metadata, headers);
        *http_request.extensions_mut() = request.extensions;
        let response = route
            .exit
            .handle(http_request)
            .await
            .map_err(|error| Status::from_stream_error(&error))?;
        let (parts, body) = response.into_parts();
        if parts.status != StatusCode::OK {
            return Err(Status::new(
                status_of_http(parts.status),
                format!("upstream answered HTTP {}", parts.status),
            ));
        }
        if parts.headers.contains_key(codec::names::STATUS) {
            return Err(read_status(&parts.headers));
        }
        let content_type = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        if !content_type.starts_with("application/grpc") {
            return Err(Status::new(
                Code::Unknown,
                format!("upstream answered with content-type `{content_type}`"),
            ));
        }
        let header = parts
            .headers
            .get(codec::names::ENCODING)
            .and_then(|value| value.to_str().ok());
        let encoding = Encoding::parse(header).map_err(|mut status| {
            status.code = Code::Internal;
            status
        })?;
        let response_metadata = metadata::from_headers(&parts.headers)
            .map_err(|message| Status::new(Code::Internal, message))?;
        let mut response = GrpcResponse::new(response_items(
            body,
            Decoder::new(self.maximum_message_size, encoding),
        ));
        response.metadata = response_metadata;
        Ok(response)
    }
}

/// The status gRPC gives an HTTP status other than 200.
fn status_of_http(status: StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502..=504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// The status of trailers (or of a trailers-only response's headers).
fn read_status(headers: &HeaderMap) -> Status {
    let code = headers
        .get(codec::names::STATUS)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u32>().ok());
    let Some(code) = code else {
        return Status::new(Code::Internal, "upstream sent no valid grpc-status");
    };
    let message = headers
        .get(codec::names::MESSAGE)
        .map(|value| codec::decode_message(value.as_bytes()))
        .unwrap_or_default();
    Status {
        code: Code::from_u32(code),
        message,
        trailers: metadata::from_headers(headers).unwrap_or_else(|_| Metadata::new()),
    }
}

/// The request messages, framed. An error item fails the body, which resets the exchange.
fn request_body(messages: MessageStream) -> Body {
    let frames = messages.map(|item| match item {
        Ok(message) => Ok(Frame::data(codec::frame(&message))),
        Err(status) => Err(BodyError::from(status)),
    });
    kind::boxed(http_body_util::StreamBody::new(frames))
}

/// The response body as messages, then the status of its trailers.
fn response_items(body: Body, decoder: Decoder) -> crate::kind::ResponseStream {
    struct State {
        body: Body,
        decoder: Decoder,
        ended: bool,
    }
    let state = State {
        body,
        decoder,
        ended: false,
    };
    let finish = |mut state: State, status: Status| {
        state.ended = true;
        Some((ResponseItem::Status(status), state))
    };
    Box::pin(futures_util::stream::unfold(
        state,
        move |mut state| async move {
            if state.ended {
                return None;
            }
            loop {
                match state.decoder.next_message() {
                    Ok(Some(message)) => return Some((ResponseItem::Message(message), state)),
                    Ok(None) => {}
                    Err(status) => return finish(state, status),
                }
                match http_body_util::BodyExt::frame(&mut state.body).await {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => state.decoder.push(&data),
                        Err(frame) => {
                            let status = match frame.into_trailers() {
                                Ok(trailers) => match state.decoder.finish() {
                                    Ok(()) => read_status(&trailers),
                                    Err(status) => status,
                                },
                                Err(_) => continue,
                            };
                            return finish(state, status);
                        }
                    },
                    Some(Err(error)) => {
                        let status = Status::new(
                            Code::Unavailable,
                            format!("upstream stream failed: {error}"),
                        );
                        return finish(state, status);
                    }
                    None => {
                        let status = match state.decoder.finish() {
                            Ok(()) => Status::new(Code::Internal, "upstream sent no grpc-status"),
                            Err(status) => status,
                        };
                        return finish(state, status);
                    }
                }
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::HeaderValue;

    fn message(bytes: &'static [u8]) -> ResponseItem {
        ResponseItem::Message(Bytes::from_static(bytes))
    }

    fn body(frames: Vec<Result<Frame<Bytes>, BodyError>>) -> Body {
        kind::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames,
        )))
    }

    #[tokio::test]
    async fn a_response_body_becomes_messages_and_a_status() {
        let mut wire = bytes::BytesMut::new();
        codec::encode(b"one", &mut wire);
        codec::encode(b"two", &mut wire);
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("5"));
        trailers.insert("grpc-message", HeaderValue::from_static("not%20here"));
        trailers.insert("x-why", HeaderValue::from_static("gone"));
        let (first, second) = wire.split_at(6);
        let items: Vec<_> = response_items(
            body(vec![
                Ok(Frame::data(Bytes::copy_from_slice(first))),
                Ok(Frame::data(Bytes::copy_from_slice(second))),
                Ok(Frame::trailers(trailers)),
            ]),
            Decoder::new(100, Encoding::Identity),
        )
        .collect()
        .await;
        let mut expected = Status::new(Code::NotFound, "not here");
        expected.trailers.push_text("x-why", "gone");
        assert_eq!(
            items,
            vec![
                message(b"one"),
                message(b"two"),
                ResponseItem::Status(expected)
            ]
        );
    }

    #[tokio::test]
    async fn a_body_without_trailers_or_cut_short_is_an_error() {
        let items: Vec<_> = response_items(
            body(vec![Ok(Frame::data(Bytes::from_static(&[
                0, 0, 0, 0, 9, 1,
            ])))]),
            Decoder::new(100, Encoding::Identity),
        )
        .collect()
        .await;
        assert!(
            matches!(&items[..], [ResponseItem::Status(s)] if s.code == Code::Internal),
            "{items:?}"
        );
        let items: Vec<_> = response_items(
            body(vec![Err(BodyError::from("reset"))]),
            Decoder::new(100, Encoding::Identity),
        )
        .collect()
        .await;
        assert!(
            matches!(&items[..], [ResponseItem::Status(s)] if s.code == Code::Unavailable),
            "{items:?}"
        );
    }

    #[test]
    fn http_statuses_map_as_grpc_says() {
        assert_eq!(status_of_http(StatusCode::NOT_FOUND), Code::Unimplemented);
        assert_eq!(
            status_of_http(StatusCode::SERVICE_UNAVAILABLE),
            Code::Unavailable
        );
        assert_eq!(status_of_http(StatusCode::IM_A_TEAPOT), Code::Unknown);
    }
}
