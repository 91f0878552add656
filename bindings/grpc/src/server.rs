//! The `grpc` server: answers gRPC calls arriving as `http` exchanges, through the routed
//! `grpc` exit.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{ALLOW, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body::Frame;
use tokio::sync::watch;
use tokio::time::Instant;
use zilla_binding_http::kind::{self, Body, BodyError, HttpHandler, Request, Response};
use zilla_engine::route::Routes;
use zilla_engine::stream::{BoxFuture, StreamError};

use crate::codec::{self, Decoder, Encoding};
use crate::config::MethodCondition;
use crate::kind::{
    Code, GrpcHandler, GrpcRequest, MessageStream, ResponseItem, ResponseStream, Status,
};
use crate::metadata;
use crate::proto::{Method as ProtoMethod, Services};
use crate::telemetry::{CallRecord, GrpcMetrics};

/// The `grpc` server binding's `http` handler.
pub(crate) struct GrpcServer {
    pub routes: Routes<MethodCondition, (), Arc<dyn GrpcHandler>>,
    /// The services of the binding's catalog; `None` when it names none (any method passes
    /// and messages are not checked).
    pub services: Option<Arc<Services>>,
    /// The most a request message may hold.
    pub maximum_message_size: usize,
    /// The `grpc.*` metrics the binding records.
    pub metrics: Arc<GrpcMetrics>,
}

impl HttpHandler for GrpcServer {
    fn handle(&self, request: Request) -> BoxFuture<'_, Result<Response, StreamError>> {
        Box::pin(self.serve(request))
    }
}

/// Whether `content-type` is gRPC over HTTP/2 (`application/grpc`, `application/grpc+proto`,
/// `application/grpc;...`).
fn is_grpc(content_type: &str) -> bool {
    let content_type = content_type.trim();
    content_type == "application/grpc"
        || content_type.starts_with("application/grpc+")
        || content_type.starts_with("application/grpc;")
}

impl GrpcServer {
    async fn serve(&self, request: Request) -> Result<Response, StreamError> {
        if request.method() != Method::POST {
            let mut response = kind::status_response(StatusCode::METHOD_NOT_ALLOWED);
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("POST"));
            return Ok(response);
        }
        let content_type = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        if !is_grpc(content_type) {
            return Ok(kind::status_response(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        }
        let scheme = kind::pseudo_header(&request, ":scheme").map(|s| s.into_owned());
        let authority = kind::pseudo_header(&request, ":authority").map(|s| s.into_owned());
        let (parts, body) = request.into_parts();
        let Some((service, method)) = parts
            .uri
            .path()
            .strip_prefix('/')
            .and_then(|path| path.split_once('/'))
            .filter(|(service, method)| {
                !service.is_empty() && !method.is_empty() && !method.contains('/')
            })
        else {
            return Ok(trailers_only(&Status::new(
                Code::Unimplemented,
                format!("`{}` is not a gRPC method path", parts.uri.path()),
            )));
        };
        let (service, method) = (service.to_owned(), method.to_owned());
        // Dropped with the response body, or at any earlier answer.
        let record = self.metrics.start();
        // Looked up by their constant names: a name given as text is parsed on every lookup.
        let header = |name: &http::HeaderName| {
            parts
                .headers
                .get(name)
                .and_then(|value| value.to_str().ok())
        };
        let encoding = match Encoding::parse(header(&codec::names::ENCODING)) {
            Ok(encoding) => encoding,
            Err(status) => return Ok(trailers_only(&status)),
        };
        let deadline = match header(&codec::names::TIMEOUT) {
            None => None,
            Some(value) => match codec::parse_timeout(value) {
                Some(timeout) => Some(Instant::now() + timeout),
                None => {
                    return Ok(trailers_only(&Status::new(
                        Code::Internal,
                        format!("malformed grpc-timeout `{value}`"),
                    )));
                }
            },
        };
        let request_metadata = match metadata::from_headers(&parts.headers) {
            Ok(found) => found,
            Err(message) => return Ok(trailers_only(&Status::new(Code::Internal, message))),
        };
        let proto_method = match &self.services {
            None => None,
            Some(services) => match services.method(&service, &method) {
                Some(found) => Some(found.clone()),
                None => {
                    return Ok(trailers_only(&Status::new(
                        Code::Unimplemented,
                        format!("unknown method {service}/{method}"),
                    )));
                }
            },
        };
        // A request the server refuses itself (a malformed frame, an oversized or invalid
        // message) is answered with that status, whatever the exit is doing.
        let server_streaming = proto_method.as_ref().map(ProtoMethod::server_streaming);
        let (failed, failure) = watch::channel(None);
        let mut messages = request_messages(
            body,
            Decoder::new(self.maximum_message_size, encoding),
            proto_method,
            failed,
        );
        if let Some(record) = &record {
            messages = record.requests(messages);
        }
        let call = GrpcRequest {
            scheme: scheme.unwrap_or_else(|| "http".to_owned()),
            authority: authority.unwrap_or_default(),
            service,
            method,
            metadata: request_metadata,
            deadline,
            messages,
            extensions: parts.extensions,
            server_streaming,
            full_method: std::sync::OnceLock::new(),
        };
        let route = match crate::config::route_of(&self.routes, &call) {
            Ok(route) => route,
            Err(status) => return Ok(trailers_only(&status)),
        };
        let mut failure_watch = failure.clone();
        let answer = tokio::select! {
            biased;
            status = local_failure(&mut failure_watch) => Err(status),
            () = until(deadline) => Err(deadline_exceeded()),
            answer = route.exit.call(call) => answer,
        };
        let response = match answer {
            Ok(response) => response,
            Err(status) => return Ok(trailers_only(&prefer_local(&failure, status))),
        };
        let items = match &record {
            Some(record) => record.responses(response.items),
            None => response.items,
        };
        let mut http_response = Response::new(response_body(ResponseBody {
            items: Some(items),
            failure,
            deadline,
            record,
        }));
        let headers = http_response.headers_mut();
        grpc_headers(headers);
        metadata::to_headers(&response.metadata, headers);
        Ok(http_response)
    }
}

fn deadline_exceeded() -> Status {
    Status::new(Code::DeadlineExceeded, "deadline exceeded")
}

/// Waits until `deadline`; forever without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Waits until the request failed on this side; forever once it ended without failing.
async fn local_failure(failure: &mut watch::Receiver<Option<Status>>) -> Status {
    loop {
        if let Some(status) = failure.borrow_and_update().clone() {
            return status;
        }
        if failure.changed().await.is_err() {
            if let Some(status) = failure.borrow().clone() {
                return status;
            }
            return std::future::pending().await;
        }
    }
}

/// The status of a failure on this side if there was one (the exit may have seen the same
/// failure first and answered with its own, vaguer status), else `status`.
fn prefer_local(failure: &watch::Receiver<Option<Status>>, status: Status) -> Status {
    failure.borrow().clone().unwrap_or(status)
}

/// `content-type` and `grpc-accept-encoding` of every response.
fn grpc_headers(headers: &mut HeaderMap) {
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(
        codec::names::ACCEPT_ENCODING,
        HeaderValue::from_static(codec::ACCEPT_ENCODING),
    );
}

/// Writes `status` as `grpc-status`, `grpc-message` and trailing metadata.
pub(crate) fn write_status(status: &Status, headers: &mut HeaderMap) {
    let code = match status.code {
        // The status of nearly every call, without formatting a number.
        Code::Ok => HeaderValue::from_static("0"),
        code => HeaderValue::from(code.as_u32()),
    };
    headers.insert(codec::names::STATUS, code);
    if !status.message.is_empty()
        && let Ok(message) = HeaderValue::from_str(&codec::encode_message(&status.message))
    {
        headers.insert(codec::names::MESSAGE, message);
    }
    metadata::to_headers(&status.trailers, headers);
}

/// A response that is only a status (HTTP 200, the status in the headers, no body).
pub(crate) fn trailers_only(status: &Status) -> Response {
    let mut response = Response::new(kind::empty());
    let headers = response.headers_mut();
    grpc_headers(headers);
    write_status(status, headers);
    response
}

/// The request body as messages: de-framed, size-checked and, when the method is known,
/// decoded against its input type. A failure is reported to `failed` (so the server answers
/// it) and ends the messages with that status.
fn request_messages(
    body: Body,
    decoder: Decoder,
    method: Option<ProtoMethod>,
    failed: watch::Sender<Option<Status>>,
) -> MessageStream {
    struct State {
        body: Body,
        decoder: Decoder,
        method: Option<ProtoMethod>,
        failed: watch::Sender<Option<Status>>,
        ended: bool,
    }
    impl State {
        fn fail(mut self, status: Status) -> Option<(Result<Bytes, Status>, State)> {
            self.ended = true;
            self.failed.send_replace(Some(status.clone()));
            Some((Err(status), self))
        }
    }
    let state = State {
        body,
        decoder,
        method,
        failed,
        ended: false,
    };
    Box::pin(futures_util::stream::unfold(
        state,
        |mut state| async move {
            if state.ended {
                return None;
            }
            loop {
                match state.decoder.next_message() {
                    Ok(Some(message)) => {
                        let invalid = state.method.as_ref().and_then(|method| {
                            let error = method.check_input(&message).err()?;
                            Some(Status::new(
                                Code::InvalidArgument,
                                format!("invalid {}: {error}", method.input_name()),
                            ))
                        });
                        if let Some(status) = invalid {
                            return state.fail(status);
                        }
                        return Some((Ok(message), state));
                    }
                    Ok(None) => {}
                    Err(status) => return state.fail(status),
                }
                match http_body_util::BodyExt::frame(&mut state.body).await {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            state.decoder.push(data);
                        }
                    }
                    Some(Err(error)) => {
                        // The client went away or reset the stream: nothing to answer.
                        state.ended = true;
                        let status = Status::new(Code::Cancelled, error.to_string());
                        return Some((Err(status), state));
                    }
                    None => {
                        if let Err(status) = state.decoder.finish() {
                            return state.fail(status);
                        }
                        return None;
                    }
                }
            }
        },
    ))
}

/// The response body: the exit's messages framed, then its status as trailers; or, first,
/// a failure of the request on this side or the deadline.
struct ResponseBody {
    items: Option<ResponseStream>,
    failure: watch::Receiver<Option<Status>>,
    deadline: Option<Instant>,
    /// The call's metrics, recorded once the final status is sent.
    record: Option<CallRecord>,
}

fn response_body(body: ResponseBody) -> Body {
    let frames = futures_util::stream::unfold(body, |mut body| async move {
        let items = body.items.as_mut()?;
        let status = tokio::select! {
            biased;
            status = local_failure(&mut body.failure) => status,
            () = until(body.deadline) => deadline_exceeded(),
            item = items.next() => match item {
                Some(ResponseItem::Message(message)) => {
                    let frame: Result<Frame<Bytes>, BodyError> =
                        Ok(Frame::data(codec::frame(&message)));
                    return Some((frame, body));
                }
                Some(ResponseItem::Status(status)) => prefer_local(&body.failure, status),
                None => prefer_local(&body.failure, Status::ok()),
            },
        };
        // Dropping the exit's response here cancels what is still running behind it.
        body.items = None;
        body.record = None;
        let mut trailers = HeaderMap::new();
        write_status(&status, &mut trailers);
        Some((Ok(Frame::trailers(trailers)), body))
    });
    kind::boxed(http_body_util::StreamBody::new(frames))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types() {
        assert!(is_grpc("application/grpc"));
        assert!(is_grpc("application/grpc+proto"));
        assert!(is_grpc("application/grpc; charset=utf-8"));
        assert!(!is_grpc("application/grpc-web"));
        assert!(!is_grpc("application/json"));
    }

    #[test]
    fn statuses_are_written_with_their_trailers() {
        let mut status = Status::new(Code::NotFound, "no such item: 100%");
        status.trailers.push_text("x-detail", "d");
        let mut headers = HeaderMap::new();
        write_status(&status, &mut headers);
        assert_eq!(headers["grpc-status"], "5");
        assert_eq!(headers["grpc-message"], "no such item: 100%25");
        assert_eq!(headers["x-detail"], "d");
    }
}
