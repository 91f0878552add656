//! The `sse` server: answers `GET` exchanges with an event stream from the routed exit.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{ACCEPT, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, StatusCode};
use http_body::{Body, Frame};
use zilla_binding_http::kind::{self, BodyError, HttpHandler, Request, Response};
use zilla_engine::components::Validator;
use zilla_engine::guard::{Authorization, GuardSession};
use zilla_engine::pattern::Pattern;
use zilla_engine::route::Routes;
use zilla_engine::stream::{BoxFuture, StreamError};

use crate::codec;
use crate::kind::{SseEvent, SseHandler, SseItem, SseRequest, SseStream};

/// Zilla refuses longer `Last-Event-ID`s with 400.
const MAXIMUM_LAST_EVENT_ID_SIZE: usize = 254;

/// Events already available are written together up to this many bytes per body frame.
const FRAME_BYTES: usize = 16 * 1024;

/// A compiled route condition: the path, without query string.
#[derive(Debug)]
pub(crate) struct PathCondition {
    path: Option<Pattern>,
}

impl PathCondition {
    pub(crate) fn compile(raw: crate::config::SseCondition) -> Result<Self, String> {
        Ok(Self {
            path: raw
                .path
                .map(|path| Pattern::compile(&path, Some('/')))
                .transpose()?,
        })
    }

    pub(crate) fn matches(&self, path: &str) -> bool {
        self.path
            .as_ref()
            .is_none_or(|pattern| pattern.matches(path))
    }
}

/// How the server writes event streams.
#[derive(Debug, Clone)]
pub(crate) struct Writing {
    /// `retry:` written first, in milliseconds.
    pub retry: u64,
    /// Whether an empty comment follows, so that intermediaries pass the headers on at once.
    pub initial_comment: bool,
    /// The event type of challenges.
    pub challenge_event: Arc<str>,
    /// Write an empty comment when nothing was written for this long.
    pub idle: Option<Duration>,
}

/// The `sse` server binding's `http` handler.
pub(crate) struct SseServer {
    pub routes: Routes<PathCondition, (), Arc<dyn SseHandler>>,
    pub writing: Writing,
    /// `options.requests`: the model of the events of each path, first match applies.
    pub models: Vec<(Pattern, Arc<dyn Validator>)>,
}

impl HttpHandler for SseServer {
    fn handle(&self, request: Request) -> BoxFuture<'_, Result<Response, StreamError>> {
        Box::pin(self.subscribe(request))
    }
}

impl SseServer {
    async fn subscribe(&self, request: Request) -> Result<Response, StreamError> {
        if request.method() != Method::GET {
            let mut response = kind::status_response(StatusCode::METHOD_NOT_ALLOWED);
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET"));
            return Ok(response);
        }
        let scheme = kind::pseudo_header(&request, ":scheme").map(|s| s.into_owned());
        let authority = kind::pseudo_header(&request, ":authority").map(|s| s.into_owned());
        let timestamps = request
            .headers()
            .get_all(ACCEPT)
            .iter()
            .any(|accept| accept.to_str().is_ok_and(|a| a.contains("ext=timestamp")));
        let (parts, _body) = request.into_parts();
        let full_path = parts
            .uri
            .path_and_query()
            .map_or("/", |path| path.as_str())
            .to_owned();
        let (path, query) = match full_path.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (full_path.as_str(), None),
        };
        let last_event_id = match parts.headers.get("last-event-id") {
            Some(header) => Some(String::from_utf8_lossy(header.as_bytes()).into_owned()),
            None => query.and_then(last_event_id_param),
        };
        if last_event_id
            .as_ref()
            .is_some_and(|id| id.len() > MAXIMUM_LAST_EVENT_ID_SIZE)
        {
            return Ok(kind::status_response(StatusCode::BAD_REQUEST));
        }
        let route = self
            .routes
            .resolve(parts.extensions.get::<Authorization>(), |condition| {
                condition.matches(path)
            })
            .ok_or(StreamError::NoRoute)?;
        // The session a challenge is sent for: the one expiring first.
        let challenged = parts
            .extensions
            .get::<Authorization>()
            .and_then(|authorization| {
                authorization
                    .sessions()
                    .filter_map(|(_, session)| Some((session.expiring_at()?, session)))
                    .min_by_key(|(at, _)| *at)
                    .map(|(_, session)| session.clone())
            });
        let subscription = SseRequest {
            scheme: scheme.unwrap_or_else(|| "http".to_owned()),
            authority: authority.unwrap_or_default(),
            path: full_path.clone(),
            last_event_id,
            extensions: parts.extensions,
        };
        let mut events = route.exit.handle(subscription).await?;
        if let Some((_, model)) = self
            .models
            .iter()
            .find(|(pattern, _)| pattern.matches(path))
        {
            events = checked(events, model.clone());
        }
        let content_type = if timestamps {
            "text/event-stream;ext=timestamp"
        } else {
            "text/event-stream"
        };
        let mut body = EventBody::new(events, self.writing.clone(), timestamps);
        if let Some(session) = challenged {
            body = body.challenging(session);
        }
        let mut response = Response::new(kind::boxed(body));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        Ok(response)
    }
}

/// Events whose data their model refuses are dropped, as Zilla drops them; the rest go on in
/// the model's view (a stored form converted for clients). Challenges are not checked.
fn checked(events: SseStream, model: Arc<dyn Validator>) -> SseStream {
    use futures_util::StreamExt;
    Box::pin(events.filter_map(move |item| {
        let model = model.clone();
        async move {
            match item {
                Ok(SseItem::Event(mut event)) => {
                    // A schema the data names that is not cached yet is awaited here, off the
                    // worker's thread.
                    if let Some(fetching) = model.fetch(&event.data) {
                        fetching.await;
                    }
                    match model.decode(&event.data) {
                        Ok(converted) => {
                            if let Some(converted) = converted {
                                event.data = Bytes::from(converted);
                            }
                            Some(Ok(SseItem::Event(event)))
                        }
                        Err(reason) => {
                            tracing::debug!(id = ?event.id, %reason, "event dropped: its data fails the model");
                            None
                        }
                    }
                }
                other => Some(other),
            }
        }
    }))
}

/// The value of the `lastEventId` query parameter, percent-decoded.
fn last_event_id_param(query: &str) -> Option<String> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("lastEventId="))
        .map(percent_decode)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => decoded.push(b' '),
            b'%' if index + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[index + 1..index + 3])
                    .ok()
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok());
                match hex {
                    Some(byte) => {
                        decoded.push(byte);
                        index += 2;
                    }
                    None => decoded.push(b'%'),
                }
            }
            byte => decoded.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// The response body: the prelude, then the events as the exit yields them. Pulled by the
/// connection, so a slow subscriber slows the exit and a gone one drops it.
struct EventBody {
    prelude: Option<Bytes>,
    events: SseStream,
    writing: Writing,
    timestamps: bool,
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    challenge: Option<Challenge>,
    error: Option<StreamError>,
    done: bool,
}

/// Continuous authorization: a `challenge` event when the subscriber's session is expiring
/// (the http server ends the response when it expires).
struct Challenge {
    session: Arc<dyn GuardSession>,
    wake: Pin<Box<tokio::time::Sleep>>,
}

impl Challenge {
    /// The next instant worth looking at the session again: its expiring-at while ahead, then
    /// its expiry (a challenge response may have moved both on by then).
    fn next(session: &dyn GuardSession, now: SystemTime) -> Option<SystemTime> {
        [session.expiring_at(), session.expires_at()]
            .into_iter()
            .flatten()
            .find(|at| *at > now)
    }
}

impl EventBody {
    fn new(events: SseStream, writing: Writing, timestamps: bool) -> Self {
        let mut prelude = BytesMut::new();
        codec::write_retry(writing.retry, &mut prelude);
        if writing.initial_comment {
            codec::write_comment("", &mut prelude);
        }
        let idle = writing.idle.map(|idle| Box::pin(tokio::time::sleep(idle)));
        Self {
            prelude: Some(prelude.freeze()),
            events,
            writing,
            timestamps,
            idle,
            challenge: None,
            error: None,
            done: false,
        }
    }

    /// Sends `session`'s challenges.
    fn challenging(mut self, session: Arc<dyn GuardSession>) -> Self {
        if let Some(at) = Challenge::next(session.as_ref(), SystemTime::now()) {
            self.challenge = Some(Challenge {
                wake: Box::pin(tokio::time::sleep_until(
                    zilla_binding_http::expiry::instant(at),
                )),
                session,
            });
        }
        self
    }

    /// Writes a challenge when one is due, and arms the next look.
    fn poll_challenge(&mut self, cx: &mut Context<'_>, out: &mut BytesMut) {
        let Some(challenge) = self.challenge.as_mut() else {
            return;
        };
        let mut due = false;
        while challenge.wake.as_mut().poll(cx).is_ready() {
            let now = SystemTime::now();
            due |= challenge.session.challenge(now);
            match Challenge::next(challenge.session.as_ref(), now) {
                Some(at) => {
                    let at = zilla_binding_http::expiry::instant(at);
                    challenge.wake.as_mut().reset(at);
                }
                None => {
                    self.challenge = None;
                    break;
                }
            }
        }
        if due {
            self.write(
                SseItem::Challenge(crate::kind::SseChallenge::default()),
                out,
            );
        }
    }

    fn write(&self, item: SseItem, out: &mut BytesMut) {
        match item {
            SseItem::Event(event) => codec::write_event(&event, self.timestamps, out),
            SseItem::Challenge(challenge) => {
                let event = SseEvent::data(challenge.to_json())
                    .with_event(self.writing.challenge_event.as_ref());
                codec::write_event(&event, false, out);
            }
        }
    }

    fn restart_idle(&mut self) {
        if let (Some(sleep), Some(idle)) = (self.idle.as_mut(), self.writing.idle) {
            sleep.as_mut().reset(tokio::time::Instant::now() + idle);
        }
    }
}

impl Body for EventBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(prelude) = self.prelude.take() {
            self.restart_idle();
            return Poll::Ready(Some(Ok(Frame::data(prelude))));
        }
        if let Some(error) = self.error.take() {
            return Poll::Ready(Some(Err(Box::new(error))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        let mut out = BytesMut::new();
        self.poll_challenge(cx, &mut out);
        while out.len() < FRAME_BYTES {
            match self.events.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(item))) => self.write(item, &mut out),
                Poll::Ready(Some(Err(error))) => {
                    self.done = true;
                    if out.is_empty() {
                        return Poll::Ready(Some(Err(Box::new(error))));
                    }
                    // Reported on the next poll, after what was ready before it.
                    self.error = Some(error);
                    break;
                }
                Poll::Ready(None) => {
                    self.done = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        if !out.is_empty() {
            self.restart_idle();
            return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(sleep) = self.idle.as_mut()
            && sleep.as_mut().poll(cx).is_ready()
        {
            let mut out = BytesMut::new();
            codec::write_comment("", &mut out);
            self.restart_idle();
            return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_event_id_from_the_query() {
        assert_eq!(
            last_event_id_param("a=1&lastEventId=4%2F2+x&b"),
            Some("4/2 x".to_owned())
        );
        assert_eq!(last_event_id_param("lastEventId="), Some(String::new()));
        assert_eq!(last_event_id_param("a=1"), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
