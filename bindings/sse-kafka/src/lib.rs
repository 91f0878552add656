//! The `sse-kafka` binding: Server-Sent Events subscriptions answered from Kafka topics.
//!
//! A `proxy` (accepts `sse`, opens `kafka`) takes each subscription from an `sse` server,
//! picks the first route whose `when.path` matches the path (without query string) and whose
//! `guarded` roles are held, and reads `with.topic` across all its partitions through its exit
//! (normally a kafka `cache_client`, so that one Kafka fetch serves every subscriber):
//!
//! - each record becomes an event whose `data` is the value and whose `id` is the progress of
//!   every partition after it (see [`event_id`]); a tombstone (null value) becomes an event
//!   of type `delete` whose data is the base64url key;
//! - `with.filters` select records: a filter's `key` and `headers` must all match, and any one
//!   filter is enough;
//! - a subscriber that comes back with its last event id (`Last-Event-ID` header or
//!   `?lastEventId=`, both read by the `sse` server) resumes exactly after it, on this or any
//!   other gateway reading the same Kafka cluster: the id carries the partition offsets.
//!   Without an id, the read starts where the cache's `defaultOffset` for the topic says
//!   (historical unless configured). An id that is none of Zilla's shapes replays the
//!   topic's history, as Zilla does (a 400 would make browsers stop reconnecting); so does an
//!   id whose offsets Kafka no longer has (the read moves on to the log start).
//!
//! ```yaml
//! name: example
//! bindings:
//!   sse_server:
//!     type: sse
//!     kind: server
//!     exit: sse_kafka_proxy
//!   sse_kafka_proxy:
//!     type: sse-kafka
//!     kind: proxy
//!     routes:
//!       - when:
//!           - path: /events/{id}/{tag}
//!         exit: kafka_cache_client
//!         with:
//!           topic: events-${params.id}
//!           filters:
//!             - key: ${params.id}
//!               headers:
//!                 tag: ${params.tag}
//!           event:
//!             id: '["${base64(key)}","${etag}"]'
//!   kafka_cache_client:
//!     type: kafka
//!     kind: cache_client
//!     exit: kafka_cache_server
//! ```
//!
//! No `options`. Routes: `when: [{path}]` with `*` and `{name}` wildcards; `with.topic`
//! (required), `with.filters[{key, headers: {name: value}}]` and `with.event.id` (`${etag}`,
//! the default, or `["${base64(key)}","${etag}"]`). `topic`, `key` and header values may use
//! `${params.<name>}`, `${guarded['<guard>'].identity}` and
//! `${guarded['<guard>'].attributes.<name>}`; a subscription whose guard values are missing
//! is refused.

pub mod config;
pub mod event_id;

mod proxy;

use std::sync::Arc;

use zilla_binding_kafka::kind::Kafka;
use zilla_binding_sse::Sse;
use zilla_engine::binding::{Binding, BindingFactory, BindingSchema, BuildContext};
use zilla_engine::stream::StreamKind;
use zilla_engine::{BindingKind, BuildError, Registry};

use config::{SseKafkaCondition, SseKafkaWith};
use proxy::{PathCondition, SseKafkaProxy, Subscription};

/// Registers the `sse-kafka` binding type.
pub fn register(registry: &mut Registry) {
    registry.binding(SseKafkaFactory);
}

/// Builds sse-kafka bindings.
#[derive(Debug)]
pub struct SseKafkaFactory;

impl BindingFactory for SseKafkaFactory {
    fn type_name(&self) -> &'static str {
        "sse-kafka"
    }

    fn kinds(&self) -> &'static [BindingKind] {
        &[BindingKind::Proxy]
    }

    fn accepts(&self, _kind: BindingKind) -> &'static [&'static str] {
        &[Sse::NAME]
    }

    fn emits(&self, _kind: BindingKind) -> Option<&'static str> {
        Some(Kafka::NAME)
    }

    fn schema(&self, _kind: BindingKind) -> BindingSchema {
        BindingSchema {
            options: None,
            options_required: false,
            when: Some(BindingSchema::of::<SseKafkaCondition>()),
            with: Some(BindingSchema::of::<SseKafkaWith>()),
        }
    }

    fn build(&self, context: &mut BuildContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
        let routes = context.routes::<Kafka, SseKafkaCondition, PathCondition, Subscription>(
            PathCondition::compile,
        )?;
        if routes.is_empty() {
            return Err(BuildError::at(
                "",
                "an sse-kafka proxy needs `routes` (or an `exit`) to a kafka binding",
            ));
        }
        let proxy = Arc::new(SseKafkaProxy {
            name: context.name().to_string(),
            namespace: context.name().namespace.clone(),
            routes,
        });
        context.publish::<Sse>(proxy);
        Ok(Arc::new(Built))
    }
}

/// A built proxy: its handler is all there is.
struct Built;

impl Binding for Built {}
