//! The `sse` stream kind: one subscription, answered by a stream of events.
//!
//! A subscription is an [`SseRequest`] (where, and the id of the last event the subscriber
//! saw); the answer is an [`SseStream`] of [`SseItem`]s that ends when the subscription ends.
//! Events are pulled: the next item is asked for only when the subscriber can take it, so a
//! slow subscriber slows its own source and nothing is buffered without bound. Dropping the
//! stream cancels the subscription upstream.
//!
//! Besides events, a source can yield [`SseItem::Challenge`]: the `sse` server writes it as
//! Zilla's `challenge` event, which asks the subscriber to send fresh credentials (a `POST`
//! with `content-type: application/x-challenge-response` on the same connection) before its
//! session expires. This is how continuous authorization reaches an SSE subscriber: whatever
//! knows when the session needs refreshing yields a challenge into the stream.

use std::pin::Pin;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::Stream;
use zilla_engine::guard::Authorization;
use zilla_engine::stream::{BoxFuture, StreamError, StreamInfo, StreamKind};

/// A subscription (Zilla's `SseBeginEx`).
#[derive(Debug, Default)]
pub struct SseRequest {
    /// `http` or `https`.
    pub scheme: String,
    /// The authority the subscriber asked for (`host[:port]`).
    pub authority: String,
    /// The path, including the query string if there is one.
    pub path: String,
    /// The id of the last event the subscriber saw: from `Last-Event-ID`, or else the
    /// `lastEventId` query parameter.
    pub last_event_id: Option<String>,
    /// What the transport and guards knew: [`StreamInfo`], [`Authorization`].
    pub extensions: http::Extensions,
}

impl SseRequest {
    /// The path without its query string.
    pub fn path_without_query(&self) -> &str {
        self.path
            .split_once('?')
            .map_or(self.path.as_str(), |(path, _)| path)
    }

    /// The connection's [`StreamInfo`], if the subscription came through a transport.
    pub fn stream_info(&self) -> Option<&StreamInfo> {
        self.extensions
            .get::<std::sync::Arc<StreamInfo>>()
            .map(std::sync::Arc::as_ref)
    }

    /// The guard sessions the subscription holds.
    pub fn authorization(&self) -> Option<&Authorization> {
        self.extensions.get::<Authorization>()
    }
}

/// One event (Zilla's `SseDataEx` plus payload).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `id` field; a subscriber reconnects with the last one it saw.
    pub id: Option<String>,
    /// The `event` field (the event type); `None` means the default type, `message`.
    pub event: Option<String>,
    /// The `data`, lines joined with `\n`.
    pub data: Bytes,
    /// When the event happened, written as Zilla's `timestamp` field when the subscriber asks
    /// for it with `accept: text/event-stream;ext=timestamp`.
    pub timestamp: Option<SystemTime>,
}

impl SseEvent {
    /// An event with `data` and nothing else.
    pub fn data(data: impl Into<Bytes>) -> Self {
        Self {
            data: data.into(),
            ..Self::default()
        }
    }

    /// Sets the `id`.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the event type.
    pub fn with_event(mut self, event: impl Into<String>) -> Self {
        self.event = Some(event.into());
        self
    }
}

/// A request to re-authorize: the request the subscriber must send to refresh its session.
///
/// Written as an event of type `challenge` (property
/// `zilla.binding.sse.challenge.event.type`) whose data is the JSON
/// `{"method": ..., "headers": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseChallenge {
    /// The method of the re-authorization request.
    pub method: String,
    /// Headers the re-authorization request must carry, in order.
    pub headers: Vec<(String, String)>,
}

impl Default for SseChallenge {
    /// Zilla's challenge: `POST` with `content-type: application/x-challenge-response`.
    fn default() -> Self {
        Self {
            method: "POST".to_owned(),
            headers: vec![(
                "content-type".to_owned(),
                "application/x-challenge-response".to_owned(),
            )],
        }
    }
}

impl SseChallenge {
    /// The event data: `{"method":"POST","headers":{"content-type":"application/x-challenge-response"}}`.
    pub fn to_json(&self) -> String {
        let headers: serde_json::Map<String, serde_json::Value> = self
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), serde_json::Value::String(value.clone())))
            .collect();
        let mut object = serde_json::Map::new();
        object.insert(
            "method".to_owned(),
            serde_json::Value::String(self.method.clone()),
        );
        object.insert("headers".to_owned(), serde_json::Value::Object(headers));
        serde_json::Value::Object(object).to_string()
    }
}

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// An event for the subscriber.
    Event(SseEvent),
    /// Ask the subscriber to re-authorize (see [`SseChallenge`]).
    Challenge(SseChallenge),
}

impl From<SseEvent> for SseItem {
    fn from(event: SseEvent) -> Self {
        SseItem::Event(event)
    }
}

/// The answer to a subscription: items until the subscription ends. An `Err` item ends it
/// abnormally (the `sse` server then aborts the response instead of ending it).
pub type SseStream = Pin<Box<dyn Stream<Item = Result<SseItem, StreamError>> + Send>>;

/// Handler of the `sse` stream kind: answers one subscription.
///
/// An `Err` refuses the subscription; the `sse` server maps it to a status (no route 404,
/// not authorized 403, ...).
pub trait SseHandler: Send + Sync + 'static {
    /// Starts answering `request`.
    fn handle(&self, request: SseRequest) -> BoxFuture<'_, Result<SseStream, StreamError>>;
}

/// The `sse` stream kind.
#[derive(Debug)]
pub struct Sse;

impl StreamKind for Sse {
    const NAME: &'static str = "sse";
    type Handler = dyn SseHandler;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_data_is_zilla_json() {
        assert_eq!(
            SseChallenge::default().to_json(),
            r#"{"method":"POST","headers":{"content-type":"application/x-challenge-response"}}"#
        );
    }

    #[test]
    fn path_without_query() {
        let request = SseRequest {
            path: "/events/1?lastEventId=3".into(),
            ..SseRequest::default()
        };
        assert_eq!(request.path_without_query(), "/events/1");
    }
}
