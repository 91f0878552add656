//! The `proxy` kind: answers each SSE subscription with a merged read of a Kafka topic.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use zilla_binding_kafka::kind::{
    KafkaHandler, MergedItem, MergedRequest, Message, PartitionOffset, Start,
};
use zilla_binding_kafka::mapping::FilterTemplate;
use zilla_binding_sse::{SseEvent, SseHandler, SseItem, SseRequest, SseStream};
use zilla_engine::expr::{Expression, RouteScope};
use zilla_engine::pattern::{Captures, Pattern};
use zilla_engine::route::Routes;
use zilla_engine::stream::{BoxFuture, StreamError};

use crate::config::{EventIdFormat, SseKafkaCondition, SseKafkaWith};
use crate::event_id;

/// The event type of a tombstone.
const DELETE_EVENT: &str = "delete";
/// The header whose value is appended to event ids.
const ETAG_HEADER: &[u8] = b"etag";

/// A compiled `when` entry.
#[derive(Debug)]
pub(crate) struct PathCondition(Option<Pattern>);

impl PathCondition {
    pub(crate) fn compile(raw: SseKafkaCondition) -> Result<Self, String> {
        // `{name}` captures may span `/`, as Zilla's `.+` does.
        raw.path
            .map(|path| Pattern::compile(&path, None))
            .transpose()
            .map(Self)
    }

    fn captures(&self, path: &str) -> Option<Captures> {
        match &self.0 {
            None => Some(Captures::new()),
            Some(pattern) => pattern.captures(path),
        }
    }
}

/// A compiled `with`: expressions parsed once, evaluated per subscription.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(try_from = "SseKafkaWith")]
pub(crate) struct Subscription {
    topic: Expression,
    filters: Vec<FilterTemplate>,
    event_id: EventIdFormat,
}

impl TryFrom<SseKafkaWith> for Subscription {
    type Error = String;

    fn try_from(with: SseKafkaWith) -> Result<Self, String> {
        let compile = |text: &str| Expression::compile(text, &[]);
        let filters = FilterTemplate::all(with.filters, &[])?;
        Ok(Self {
            topic: compile(&with.topic)?,
            filters,
            event_id: with.event.and_then(|event| event.id).unwrap_or_default(),
        })
    }
}

impl Subscription {
    /// The merged read for one subscriber.
    fn request(
        &self,
        context: &RouteScope<'_>,
        last_event_id: Option<&str>,
    ) -> Result<MergedRequest, StreamError> {
        // A guard value with no session behind it must not widen or blank a filter.
        let evaluate = |expression: &Expression| {
            expression
                .evaluate(context)
                .ok_or(StreamError::Unauthorized)
        };
        let filters = self
            .filters
            .iter()
            .map(|template| template.evaluate(context).ok_or(StreamError::Unauthorized))
            .collect::<Result<_, StreamError>>()?;
        let (start, offsets) = match last_event_id.filter(|id| !id.is_empty()) {
            // Partitions the id does not name are read from the start, so none is skipped.
            Some(id) => match event_id::decode(id) {
                Ok(offsets) => (Start::Historical, offsets),
                // As Zilla does: an id that cannot be read replays the history. Refusing it
                // (400) would make browsers stop reconnecting for good.
                Err(error) => {
                    tracing::debug!(%error, "unreadable last event id; replaying history");
                    (Start::Historical, Vec::new())
                }
            },
            None => (Start::Default, Vec::new()),
        };
        Ok(MergedRequest {
            topic: evaluate(&self.topic)?,
            start,
            offsets,
            filters,
            latest_per_key: false,
            partitions: Vec::new(),
        })
    }
}

/// A built sse-kafka proxy.
pub(crate) struct SseKafkaProxy {
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) routes: Routes<PathCondition, Subscription, Arc<dyn KafkaHandler>>,
}

impl SseKafkaProxy {
    async fn subscribe(&self, request: SseRequest) -> Result<SseStream, StreamError> {
        let path = request.path_without_query();
        let authorization = request.authorization();
        let Some((route, captures)) = self
            .routes
            .resolve_with(authorization, |condition| condition.captures(path))
        else {
            let path_matched = self.routes.iter().any(|route| {
                route.when.is_empty()
                    || route
                        .when
                        .iter()
                        .any(|condition| condition.captures(path).is_some())
            });
            return Err(if path_matched {
                StreamError::Unauthorized
            } else {
                StreamError::NoRoute
            });
        };
        let Some(subscription) = &route.with else {
            tracing::debug!(binding = %self.name, path, "route has no `with`: nothing to read");
            return Err(StreamError::NoRoute);
        };
        let context = RouteScope {
            captures: &captures,
            authorization,
            namespace: &self.namespace,
        };
        let merged = subscription.request(&context, request.last_event_id.as_deref())?;
        tracing::debug!(
            binding = %self.name,
            path,
            topic = %merged.topic,
            resume = !merged.offsets.is_empty(),
            "subscribing"
        );
        let format = subscription.event_id;
        let records = route.exit.merged(merged).await?;
        Ok(Box::pin(records.filter_map(move |item| {
            std::future::ready(match item {
                Ok(MergedItem::Message { message, progress }) => {
                    Some(Ok(SseItem::Event(event(format, &message, &progress))))
                }
                Ok(MergedItem::Synced(_) | MergedItem::Snapshot(_)) => None,
                Err(error) => Some(Err(error)),
            })
        })))
    }
}

impl SseHandler for SseKafkaProxy {
    fn handle(&self, request: SseRequest) -> BoxFuture<'_, Result<SseStream, StreamError>> {
        Box::pin(self.subscribe(request))
    }
}

/// The event for one record: its value as data, or for a tombstone a `delete` event whose
/// data is the base64url key.
pub(crate) fn event(
    format: EventIdFormat,
    message: &Message,
    progress: &[PartitionOffset],
) -> SseEvent {
    let etag = message.header(ETAG_HEADER).map(|etag| etag.as_ref());
    let key = message.key.as_deref();
    let id = match format {
        EventIdFormat::Etag => event_id::encode_progress(progress, etag),
        EventIdFormat::KeyAndEtag => event_id::encode_key_and_progress(key, progress, etag),
    };
    let mut event = match &message.value {
        Some(value) => SseEvent::data(value.clone()),
        None => SseEvent::data(key.map(event_id::encode_key).unwrap_or_default())
            .with_event(DELETE_EVENT),
    };
    event.id = Some(id);
    event.timestamp = u64::try_from(message.timestamp)
        .ok()
        .map(|millis| SystemTime::UNIX_EPOCH + Duration::from_millis(millis));
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use zilla_binding_kafka::kind::Header;
    use zilla_binding_kafka::kind::{Condition, Filter};
    use zilla_engine::guard::{Authorization, GuardSession};

    fn message(key: Option<&str>, value: Option<&str>, headers: &[(&str, &str)]) -> Message {
        Message {
            partition: 0,
            offset: 1,
            timestamp: 1_700_000_000_000,
            key: key.map(|key| Bytes::copy_from_slice(key.as_bytes())),
            value: value.map(|value| Bytes::copy_from_slice(value.as_bytes())),
            headers: headers
                .iter()
                .map(|(name, value)| Header {
                    name: Bytes::copy_from_slice(name.as_bytes()),
                    value: Some(Bytes::copy_from_slice(value.as_bytes())),
                })
                .collect(),
        }
    }

    fn progress() -> Vec<PartitionOffset> {
        vec![
            PartitionOffset {
                partition: 0,
                offset: 2,
            },
            PartitionOffset {
                partition: 1,
                offset: 1,
            },
        ]
    }

    #[test]
    fn records_become_events_as_in_the_spec_scripts() {
        let hello = message(
            Some("key"),
            Some("Hello, world"),
            &[("header", "value"), ("etag", "revision=42")],
        );
        let event = event(EventIdFormat::Etag, &hello, &progress());
        assert_eq!(event.id.as_deref(), Some("AQQABAIC/revision=42"));
        assert_eq!(event.event, None);
        assert_eq!(event.data, Bytes::from_static(b"Hello, world"));
        assert_eq!(
            event.timestamp,
            Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000))
        );

        let keyed = super::event(EventIdFormat::KeyAndEtag, &hello, &progress());
        assert_eq!(
            keyed.id.as_deref(),
            Some(r#"["a2V5","AQQABAIC/revision=42"]"#)
        );

        let unkeyed = message(None, Some("Hello, world"), &[]);
        let unkeyed = super::event(EventIdFormat::KeyAndEtag, &unkeyed, &progress());
        assert_eq!(unkeyed.id.as_deref(), Some(r#"[null,"AQQABAIC"]"#));
    }

    #[test]
    fn tombstones_are_delete_events_carrying_the_key() {
        let tombstone = message(Some("key"), None, &[]);
        let event = event(EventIdFormat::Etag, &tombstone, &progress());
        assert_eq!(event.event.as_deref(), Some("delete"));
        assert_eq!(event.data, Bytes::from_static(b"a2V5"));
        assert_eq!(event.id.as_deref(), Some("AQQABAIC"));

        let unkeyed = super::event(EventIdFormat::Etag, &message(None, None, &[]), &progress());
        assert_eq!(unkeyed.event.as_deref(), Some("delete"));
        assert!(unkeyed.data.is_empty());
    }

    struct Identity(&'static str);

    impl GuardSession for Identity {
        fn identity(&self) -> Option<&str> {
            Some(self.0)
        }
        fn verify(&self, _roles: &[String]) -> bool {
            true
        }
        fn attribute(&self, name: &str) -> Option<String> {
            (name == "tenant").then(|| "acme".to_owned())
        }
        fn expires_at(&self) -> Option<SystemTime> {
            None
        }
    }

    fn subscription(with: serde_json::Value) -> Subscription {
        serde_json::from_value(with).unwrap()
    }

    #[test]
    fn filters_and_topic_from_params_and_guards() {
        let subscription = subscription(serde_json::json!({
            "topic": "events-${guarded['jwt0'].attributes.tenant}",
            "filters": [
                {"key": "${params.id}", "headers": {"tag": "${params.tag}"}},
                {"headers": {"owner": "${guarded['jwt0'].identity}"}},
                {}
            ]
        }));
        let captures = vec![
            ("id".to_owned(), "k1".to_owned()),
            ("tag".to_owned(), "red".to_owned()),
        ];
        let mut authorization = Authorization::default();
        authorization.insert("test:jwt0", Arc::new(Identity("alice")));
        let context = RouteScope {
            captures: &captures,
            authorization: Some(&authorization),
            namespace: "test",
        };
        let request = subscription.request(&context, None).unwrap();
        assert_eq!(request.topic, "events-acme");
        assert_eq!(request.start, Start::Default);
        assert!(request.offsets.is_empty());
        assert_eq!(
            request.filters,
            vec![
                Filter {
                    conditions: vec![
                        Condition::Key(Bytes::from_static(b"k1")),
                        Condition::Header {
                            name: Bytes::from_static(b"tag"),
                            value: Bytes::from_static(b"red"),
                        },
                    ],
                },
                Filter {
                    conditions: vec![Condition::Header {
                        name: Bytes::from_static(b"owner"),
                        value: Bytes::from_static(b"alice"),
                    }],
                },
                Filter::default(),
            ]
        );

        let anonymous = RouteScope {
            captures: &captures,
            authorization: None,
            namespace: "test",
        };
        assert!(matches!(
            subscription.request(&anonymous, None),
            Err(StreamError::Unauthorized)
        ));
    }

    #[test]
    fn last_event_id_resumes_or_replays_history() {
        let subscription = subscription(serde_json::json!({"topic": "t"}));
        let captures = Captures::new();
        let context = RouteScope {
            captures: &captures,
            authorization: None,
            namespace: "test",
        };
        let resumed = subscription
            .request(&context, Some(r#"["a2V5","AQQABAIC/revision=42"]"#))
            .unwrap();
        assert_eq!(resumed.start, Start::Historical);
        assert_eq!(resumed.offsets, progress());
        let fresh = subscription.request(&context, Some("")).unwrap();
        assert_eq!(fresh.start, Start::Default);
        let unreadable = subscription.request(&context, Some("garbage!")).unwrap();
        assert_eq!(unreadable.start, Start::Historical);
        assert!(unreadable.offsets.is_empty());
    }

    #[test]
    fn bad_expressions_fail_to_compile() {
        let error = serde_json::from_value::<Subscription>(serde_json::json!({
            "topic": "events-${nope}"
        }))
        .unwrap_err();
        assert!(error.to_string().contains("unknown expression"), "{error}");
    }
}
