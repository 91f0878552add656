//! The `sse` client: subscribes to an origin through an `http` exit and decodes its event
//! stream.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderValue, Method, StatusCode};
use http_body::Body as _;
use zilla_binding_http::kind::{self, Body, HttpHandler};
use zilla_engine::route::Routes;
use zilla_engine::stream::{BoxFuture, StreamError};

use crate::codec::Decoder;
use crate::kind::{SseEvent, SseHandler, SseItem, SseRequest, SseStream};
use crate::server::PathCondition;

/// The `sse` client binding's `sse` handler.
pub(crate) struct SseClient {
    pub routes: Routes<PathCondition, (), Arc<dyn HttpHandler>>,
    /// Bound on one line and on one event's data.
    pub max_event_size: usize,
}

impl SseHandler for SseClient {
    fn handle(&self, request: SseRequest) -> BoxFuture<'_, Result<SseStream, StreamError>> {
        Box::pin(self.subscribe(request))
    }
}

impl SseClient {
    async fn subscribe(&self, request: SseRequest) -> Result<SseStream, StreamError> {
        let route = self
            .routes
            .resolve(request.authorization(), |condition| {
                condition.matches(request.path_without_query())
            })
            .ok_or(StreamError::NoRoute)?;
        let uri = if request.authority.is_empty() {
            request.path.clone()
        } else {
            let scheme = if request.scheme.is_empty() {
                "http"
            } else {
                request.scheme.as_str()
            };
            format!("{scheme}://{}{}", request.authority, request.path)
        };
        let mut builder = http::Request::builder()
            .method(Method::GET)
            .uri(uri)
            .header(ACCEPT, HeaderValue::from_static("text/event-stream"));
        if let Some(id) = &request.last_event_id {
            builder = builder.header("last-event-id", id.as_str());
        }
        let mut outgoing = builder
            .body(kind::empty())
            .map_err(|error| StreamError::Protocol(format!("bad subscription: {error}")))?;
        if let Some(authorization) = request.authorization() {
            outgoing.extensions_mut().insert(authorization.clone());
        }
        let response = route.exit.handle(outgoing).await?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Err(StreamError::NoRoute),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(StreamError::Unauthorized);
            }
            status => {
                return Err(StreamError::Upstream(format!(
                    "origin answered {status} instead of an event stream"
                )));
            }
        }
        let is_event_stream = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| {
                value
                    .trim_start()
                    .to_ascii_lowercase()
                    .starts_with("text/event-stream")
            });
        if !is_event_stream {
            return Err(StreamError::Upstream(
                "origin answered without content-type text/event-stream".to_owned(),
            ));
        }
        Ok(Box::pin(DecodedEvents {
            body: response.into_body(),
            decoder: Decoder::new(self.max_event_size),
            ready: VecDeque::new(),
            decoded: Vec::new(),
            done: false,
        }))
    }
}

/// The events of a response body, decoded as they arrive.
struct DecodedEvents {
    body: Body,
    decoder: Decoder,
    ready: VecDeque<SseEvent>,
    decoded: Vec<SseEvent>,
    done: bool,
}

impl Stream for DecodedEvents {
    type Item = Result<SseItem, StreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(event) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(SseItem::Event(event))));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if let Err(error) = this.decoder.feed(&data, &mut this.decoded) {
                        this.done = true;
                        return Poll::Ready(Some(Err(StreamError::Protocol(error.to_string()))));
                    }
                    this.ready.extend(this.decoded.drain(..));
                }
                Poll::Ready(Some(Err(error))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(StreamError::Upstream(format!(
                        "event stream broken: {error}"
                    )))));
                }
                Poll::Ready(None) => this.done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
