//! The `kafka` stream kind: what the protocol-mapping bindings (`http-kafka`, `sse-kafka`,
//! `mqtt-kafka`, `grpc-kafka`) ask of Kafka, and what the `kafka` bindings (`client`,
//! `cache_client`, `cache_server`) answer.
//!
//! Two levels, as in Zilla:
//! - **merged**: [`KafkaHandler::merged`] reads one topic across all its partitions, from live
//!   or historical starts or exact per-partition offsets (a resume token), filtered by key and
//!   headers, each message carrying the progress of every partition; [`KafkaHandler::produce`]
//!   writes one record and reports its ack.
//! - **partition**: [`KafkaHandler::fetch`], [`KafkaHandler::metadata`],
//!   [`KafkaHandler::describe`], [`KafkaHandler::list_offset`]: what a cache or a merged reader
//!   is built from.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use zilla_engine::stream::{BoxFuture, StreamError, StreamKind};

pub use crate::wire::Header;

/// One record of a partition, as delivered to readers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The partition it is in.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// The key; `None` is a null key.
    pub key: Option<Bytes>,
    /// The value; `None` is a tombstone (a delete on compacted topics).
    pub value: Option<Bytes>,
    /// Headers in order (names may repeat).
    pub headers: Vec<Header>,
}

impl Message {
    /// The bytes of its key, value, header names and header values.
    pub fn payload_bytes(&self) -> usize {
        self.key.as_ref().map_or(0, Bytes::len)
            + self.value.as_ref().map_or(0, Bytes::len)
            + self
                .headers
                .iter()
                .map(|h| h.name.len() + h.value.as_ref().map_or(0, Bytes::len))
                .sum::<usize>()
    }

    /// The value of the first header named `name`.
    pub fn header(&self, name: &[u8]) -> Option<&Bytes> {
        self.headers
            .iter()
            .find(|header| header.name.as_ref() == name)
            .and_then(|header| header.value.as_ref())
    }
}

/// Where a merged read starts when no offsets are given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Start {
    /// The topic's `defaultOffset` in the cache (historical when not configured).
    #[default]
    Default,
    /// Only records produced from now on.
    Live,
    /// Everything still retained, then live.
    Historical,
}

impl Start {
    /// `self`, or the topic's `defaultOffset` from `defaults` (by topic name) when `self` is
    /// [`Start::Default`] and the topic has one.
    pub fn or_topic_default(
        self,
        topic: &str,
        defaults: &std::collections::HashMap<String, Start>,
    ) -> Start {
        match self {
            Start::Default => defaults.get(topic).copied().unwrap_or(Start::Default),
            given => given,
        }
    }
}

/// A partition and an offset: the next record to read there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionOffset {
    /// Partition id.
    pub partition: i32,
    /// Next offset to read.
    pub offset: i64,
}

/// One element of a repeated-header sequence match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderMatch {
    /// Exactly this value.
    Value(Bytes),
    /// Any one value (MQTT `+`).
    Skip,
    /// Any number of values, zero included (MQTT `#`).
    SkipMany,
}

/// One condition of a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The key equals this.
    Key(Bytes),
    /// Some header `name` has this value.
    Header {
        /// Header name.
        name: Bytes,
        /// Header value.
        value: Bytes,
    },
    /// The values of every header `name`, in order, match this sequence.
    Headers {
        /// Header name.
        name: Bytes,
        /// The sequence.
        values: Vec<HeaderMatch>,
    },
    /// The inner condition does not hold.
    Not(Box<Condition>),
}

impl Condition {
    /// Whether `message` satisfies this condition.
    pub fn matches(&self, message: &Message) -> bool {
        match self {
            Condition::Key(key) => message.key.as_ref() == Some(key),
            Condition::Header { name, value } => message
                .headers
                .iter()
                .any(|header| header.name == *name && header.value.as_ref() == Some(value)),
            Condition::Headers { name, values } => {
                let actual: Vec<&[u8]> = message
                    .headers
                    .iter()
                    .filter(|header| header.name == *name)
                    .map(|header| header.value.as_deref().unwrap_or_default())
                    .collect();
                sequence_matches(values, &actual)
            }
            Condition::Not(inner) => !inner.matches(message),
        }
    }
}

/// Whether `actual` matches `pattern`, where `Skip` takes one value and `SkipMany` any run.
fn sequence_matches(pattern: &[HeaderMatch], actual: &[&[u8]]) -> bool {
    match pattern.split_first() {
        None => actual.is_empty(),
        Some((HeaderMatch::SkipMany, rest)) => {
            (0..=actual.len()).any(|skip| sequence_matches(rest, &actual[skip..]))
        }
        Some((first, rest)) => match actual.split_first() {
            None => false,
            Some((value, remaining)) => {
                let head = match first {
                    HeaderMatch::Value(expected) => expected.as_ref() == *value,
                    HeaderMatch::Skip => true,
                    HeaderMatch::SkipMany => true,
                };
                head && sequence_matches(rest, remaining)
            }
        },
    }
}

/// Conditions that must all hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filter {
    /// ANDed conditions.
    pub conditions: Vec<Condition>,
}

impl Filter {
    /// Whether every condition holds.
    pub fn matches(&self, message: &Message) -> bool {
        self.conditions
            .iter()
            .all(|condition| condition.matches(message))
    }
}

/// Whether `message` passes `filters`: any one filter (ORed), or no filter at all.
pub fn passes(filters: &[Filter], message: &Message) -> bool {
    filters.is_empty() || filters.iter().any(|filter| filter.matches(message))
}

/// A merged read of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MergedRequest {
    /// The topic.
    pub topic: String,
    /// Where to start when `offsets` does not say.
    pub start: Start,
    /// Exact next offsets per partition (a resume token); partitions not listed use `start`.
    pub offsets: Vec<PartitionOffset>,
    /// ORed filters; empty means every record.
    pub filters: Vec<Filter>,
    /// On a compacted topic, skip records superseded by a later record with the same key
    /// during the historical part (Zilla's cache replay).
    pub latest_per_key: bool,
    /// The partitions to read, sorted; empty reads every partition of the topic (a member of
    /// a consumer group reads only the partitions assigned to it).
    pub partitions: Vec<i32>,
}

impl MergedRequest {
    /// The replies to one request: the records of `topic` whose `header` holds
    /// `correlation_id`, from the oldest when some may be there already (a retried request,
    /// or a later look for the reply), else from now.
    pub fn replies(topic: String, header: Bytes, correlation_id: Bytes, from_oldest: bool) -> Self {
        Self {
            topic,
            start: if from_oldest {
                Start::Historical
            } else {
                Start::Live
            },
            filters: vec![Filter {
                conditions: vec![Condition::Header {
                    name: header,
                    value: correlation_id,
                }],
            }],
            ..Self::default()
        }
    }

    /// Whether the read covers `partition`.
    pub fn reads(&self, partition: i32) -> bool {
        self.partitions.is_empty() || self.partitions.binary_search(&partition).is_ok()
    }
}

/// What a merged read yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergedItem {
    /// A record that passed the filters, with the progress of every partition after it.
    Message {
        /// The record.
        message: Arc<Message>,
        /// Next offset per partition, this record included, sorted by partition.
        progress: Arc<[PartitionOffset]>,
    },
    /// Every partition has reached the end it had when the read began: what follows is live.
    /// Carries the progress at that point.
    Synced(Arc<[PartitionOffset]>),
    /// The first item of a read that replays only the latest record per key (`latest_per_key`
    /// on a compacted topic, read through the cache): the end of each partition the replay
    /// reads up to. Until [`MergedItem::Synced`] each key then comes once, with its latest
    /// record (a key replaced while the replay runs may come again, the newer record last),
    /// so a reader can pass the records on as they come instead of collecting them first.
    /// Reads that do not deduplicate (the `client` kind, other topics) never send it.
    Snapshot(Arc<[PartitionOffset]>),
}

/// A merged read in progress. Dropping it ends the read.
pub type MergedStream = Pin<Box<dyn Stream<Item = Result<MergedItem, StreamError>> + Send>>;

/// How many replicas must have a produced record before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// No acknowledgement.
    None,
    /// The leader (Zilla's default for mappings: `leader_only`).
    #[default]
    Leader,
    /// All in-sync replicas.
    All,
}

/// One record to produce.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProduceRequest {
    /// The topic.
    pub topic: String,
    /// An explicit partition; otherwise chosen by `hash_key` or `key` (murmur2), or
    /// round-robin for a null key.
    pub partition: Option<i32>,
    /// The key.
    pub key: Option<Bytes>,
    /// Overrides the key for partitioning only (Zilla's `hashKey`).
    pub hash_key: Option<Bytes>,
    /// The value; `None` produces a tombstone.
    pub value: Option<Bytes>,
    /// Headers in order.
    pub headers: Vec<Header>,
    /// Milliseconds since the epoch; `None` for now.
    pub timestamp: Option<i64>,
    /// Acknowledgement level.
    pub acks: Acks,
    /// Written as Kafka's idempotent producer would (needs an explicit `partition`): the
    /// broker writes a record sent again with the same producer and sequence only once.
    pub idempotent: Option<ProducerSequence>,
}

/// An idempotent producer's identity (from [`KafkaHandler::init_producer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ProducerIdentity {
    /// The producer id.
    pub id: i64,
    /// The producer epoch.
    pub epoch: i16,
}

/// Where one record stands in an idempotent producer's sequence of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ProducerSequence {
    /// The producer.
    pub producer: ProducerIdentity,
    /// The record's sequence number in the partition (0 for the producer's first record
    /// there, then one more per record, sent in that order).
    pub sequence: i32,
}

/// Where a produced record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceAck {
    /// Partition.
    pub partition: i32,
    /// Offset, when the broker acknowledged it (`None` with [`Acks::None`], and for an
    /// idempotent record the broker already had).
    pub offset: Option<i64>,
}

/// A topic's partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    /// Partition ids, sorted.
    pub partitions: Vec<i32>,
}

/// The topic configs that change how records are kept and read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    /// `cleanup.policy` contains `compact`.
    pub compacted: bool,
    /// `cleanup.policy` contains `delete`.
    pub deleting: bool,
    /// `retention.ms`, `-1` for forever.
    pub retention_ms: i64,
    /// `retention.bytes`: what one partition keeps at most (when `deleting`), `-1` for no
    /// limit.
    pub retention_bytes: i64,
    /// `delete.retention.ms`: how long a tombstone is kept (when `compacted`).
    pub delete_retention_ms: i64,
    /// `max.message.bytes`.
    pub max_message_bytes: i64,
}

impl Default for TopicConfig {
    /// Kafka's defaults.
    fn default() -> Self {
        Self {
            compacted: false,
            deleting: true,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            delete_retention_ms: 24 * 3600 * 1000,
            max_message_bytes: 1_048_588,
        }
    }
}

/// A partition-level fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The first offset wanted.
    pub offset: i64,
    /// How long the broker may wait for data, in milliseconds.
    pub max_wait_ms: i32,
    /// How many bytes to ask for at most.
    pub max_bytes: i32,
    /// `offset` is the partition's end (a follow of what comes next): a follow joins the
    /// broker's parked fetch at once, rather than first fetching on its own behind other
    /// partitions' first fetches.
    pub from_end: bool,
}

/// What a partition-level fetch returns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchBatch {
    /// Records from the requested offset on.
    pub messages: Vec<Message>,
    /// The offset to fetch next (past control records and compaction gaps).
    pub next_offset: i64,
    /// The partition's high watermark.
    pub high_watermark: i64,
    /// The partition's log start offset (`-1` when unknown).
    pub log_start_offset: i64,
}

/// What [`KafkaHandler::follow`] yields.
pub type FollowStream<'a> =
    Pin<Box<dyn Stream<Item = Result<FetchBatch, StreamError>> + Send + 'a>>;

const FOLLOW_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

/// Which end of a partition [`KafkaHandler::list_offset`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start.
    Earliest,
    /// The high watermark.
    Latest,
}

/// How a member joins a consumer group ([`KafkaHandler::join_group`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupJoin {
    /// The group id.
    pub group_id: String,
    /// The one topic this member reads.
    pub topic: String,
    /// The member id of a previous generation, empty on the first join.
    pub member_id: String,
    /// How long the coordinator keeps a member that sends no heartbeat.
    pub session_timeout: Duration,
    /// How long the coordinator waits for the members to rejoin in a rebalance.
    pub rebalance_timeout: Duration,
}

/// A member's place in one generation of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMembership {
    /// The group id.
    pub group_id: String,
    /// The topic the member reads.
    pub topic: String,
    /// The generation.
    pub generation_id: i32,
    /// This member's id.
    pub member_id: String,
    /// The partitions of `topic` assigned to this member, sorted.
    pub partitions: Vec<i32>,
}

/// Handler of the `kafka` stream kind.
pub trait KafkaHandler: Send + Sync + 'static {
    /// Reads `request.topic` across all partitions.
    fn merged(&self, request: MergedRequest) -> BoxFuture<'_, Result<MergedStream, StreamError>>;

    /// Produces one record and waits for its acknowledgement.
    fn produce(&self, request: ProduceRequest) -> BoxFuture<'_, Result<ProduceAck, StreamError>>;

    /// The topic's partitions.
    fn metadata(&self, topic: &str) -> BoxFuture<'_, Result<TopicMetadata, StreamError>>;

    /// A new idempotent producer identity (InitProducerId without a transactional id), for
    /// records of `topic`. Handlers that do not reach a broker refuse it.
    fn init_producer(&self, topic: &str) -> BoxFuture<'_, Result<ProducerIdentity, StreamError>> {
        let _ = topic;
        Box::pin(std::future::ready(Err(StreamError::Upstream(
            "idempotent producers are not supported here".to_owned(),
        ))))
    }

    /// The topic's configs, Kafka's defaults filled in.
    fn describe(&self, topic: &str) -> BoxFuture<'_, Result<TopicConfig, StreamError>>;

    /// One partition-level fetch.
    fn fetch(&self, request: FetchRequest) -> BoxFuture<'_, Result<FetchBatch, StreamError>>;

    /// Follows one partition from `request.offset`: its batches in order, for as long as the
    /// stream is read. Errors are reported and retried after a backoff. The `client` kind
    /// fetches every partition a broker leads in one request; this default fetches in a loop.
    fn follow(&self, request: FetchRequest) -> FollowStream<'_> {
        Box::pin(futures_util::stream::unfold(
            (self, request, FOLLOW_BACKOFF),
            |(handler, mut request, backoff)| async move {
                match handler.fetch(request.clone()).await {
                    Ok(batch) => {
                        request.offset = batch.next_offset.max(request.offset);
                        Some((Ok(batch), (handler, request, FOLLOW_BACKOFF)))
                    }
                    Err(error) => {
                        tokio::time::sleep(backoff).await;
                        let backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
                        Some((Err(error), (handler, request, backoff)))
                    }
                }
            },
        ))
    }

    /// The earliest or latest offset of one partition.
    fn list_offset(
        &self,
        topic: &str,
        partition: i32,
        spec: OffsetSpec,
    ) -> BoxFuture<'_, Result<i64, StreamError>>;

    /// Joins a consumer group for one topic and returns this member's share of its
    /// partitions ([`crate::group`]).
    fn join_group(
        &self,
        request: GroupJoin,
    ) -> BoxFuture<'_, Result<GroupMembership, StreamError>> {
        let _ = request;
        Box::pin(async { Err(groups_not_offered()) })
    }

    /// Keeps a member in its group; an error means it must join again.
    fn heartbeat(&self, membership: &GroupMembership) -> BoxFuture<'_, Result<(), StreamError>> {
        let _ = membership;
        Box::pin(async { Err(groups_not_offered()) })
    }

    /// Leaves a group.
    fn leave_group(&self, membership: &GroupMembership) -> BoxFuture<'_, Result<(), StreamError>> {
        let _ = membership;
        Box::pin(async { Err(groups_not_offered()) })
    }

    /// The group's committed next offsets for `partitions` of `topic` (partitions without a
    /// committed offset left out).
    fn committed_offsets(
        &self,
        group_id: &str,
        topic: &str,
        partitions: &[i32],
    ) -> BoxFuture<'_, Result<Vec<PartitionOffset>, StreamError>> {
        let _ = (group_id, topic, partitions);
        Box::pin(async { Err(groups_not_offered()) })
    }

    /// Commits the next offsets to read of the member's topic, within its generation.
    fn commit_offsets(
        &self,
        membership: &GroupMembership,
        offsets: &[PartitionOffset],
    ) -> BoxFuture<'_, Result<(), StreamError>> {
        let _ = (membership, offsets);
        Box::pin(async { Err(groups_not_offered()) })
    }
}

/// The consumer group calls of a [`KafkaHandler`] that hands them to another: `$route` maps
/// the group's topic (`$topic`, a `&str`) to `Result<&Arc<dyn KafkaHandler>, StreamError>`.
macro_rules! forward_group_calls {
    ($self:ident, $topic:ident => $route:expr) => {
        fn join_group(
            &$self,
            request: $crate::kind::GroupJoin,
        ) -> zilla_engine::stream::BoxFuture<
            '_,
            Result<$crate::kind::GroupMembership, zilla_engine::stream::StreamError>,
        > {
            Box::pin(async move {
                let $topic = request.topic.as_str();
                let handler = $route?.clone();
                handler.join_group(request).await
            })
        }

        fn heartbeat(
            &$self,
            membership: &$crate::kind::GroupMembership,
        ) -> zilla_engine::stream::BoxFuture<'_, Result<(), zilla_engine::stream::StreamError>> {
            let membership = membership.clone();
            Box::pin(async move {
                let $topic = membership.topic.as_str();
                let handler = $route?.clone();
                handler.heartbeat(&membership).await
            })
        }

        fn leave_group(
            &$self,
            membership: &$crate::kind::GroupMembership,
        ) -> zilla_engine::stream::BoxFuture<'_, Result<(), zilla_engine::stream::StreamError>> {
            let membership = membership.clone();
            Box::pin(async move {
                let $topic = membership.topic.as_str();
                let handler = $route?.clone();
                handler.leave_group(&membership).await
            })
        }

        fn committed_offsets(
            &$self,
            group_id: &str,
            topic: &str,
            partitions: &[i32],
        ) -> zilla_engine::stream::BoxFuture<
            '_,
            Result<Vec<$crate::kind::PartitionOffset>, zilla_engine::stream::StreamError>,
        > {
            let (group_id, topic, partitions) =
                (group_id.to_owned(), topic.to_owned(), partitions.to_vec());
            Box::pin(async move {
                let $topic = topic.as_str();
                let handler = $route?.clone();
                handler.committed_offsets(&group_id, &topic, &partitions).await
            })
        }

        fn commit_offsets(
            &$self,
            membership: &$crate::kind::GroupMembership,
            offsets: &[$crate::kind::PartitionOffset],
        ) -> zilla_engine::stream::BoxFuture<'_, Result<(), zilla_engine::stream::StreamError>> {
            let (membership, offsets) = (membership.clone(), offsets.to_vec());
            Box::pin(async move {
                let $topic = membership.topic.as_str();
                let handler = $route?.clone();
                handler.commit_offsets(&membership, &offsets).await
            })
        }
    };
}
pub(crate) use forward_group_calls;

fn groups_not_offered() -> StreamError {
    StreamError::Upstream("this kafka binding offers no consumer groups".to_owned())
}

/// The `kafka` stream kind.
#[derive(Debug)]
pub struct Kafka;

impl StreamKind for Kafka {
    const NAME: &'static str = "kafka";
    type Handler = dyn KafkaHandler;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(key: &str, headers: &[(&str, &str)]) -> Message {
        Message {
            partition: 0,
            offset: 0,
            timestamp: 0,
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: Some(Bytes::from_static(b"v")),
            headers: headers
                .iter()
                .map(|(name, value)| Header {
                    name: Bytes::copy_from_slice(name.as_bytes()),
                    value: Some(Bytes::copy_from_slice(value.as_bytes())),
                })
                .collect(),
        }
    }

    fn levels(values: &[&str]) -> Condition {
        Condition::Headers {
            name: Bytes::from_static(b"zilla:filter"),
            values: values
                .iter()
                .map(|value| match *value {
                    "+" => HeaderMatch::Skip,
                    "#" => HeaderMatch::SkipMany,
                    other => HeaderMatch::Value(Bytes::copy_from_slice(other.as_bytes())),
                })
                .collect(),
        }
    }

    #[test]
    fn filters_or_of_ands() {
        let m = message("k1", &[("tag", "red"), ("tag", "blue")]);
        let key = Condition::Key(Bytes::from_static(b"k1"));
        let red = Condition::Header {
            name: Bytes::from_static(b"tag"),
            value: Bytes::from_static(b"red"),
        };
        let green = Condition::Header {
            name: Bytes::from_static(b"tag"),
            value: Bytes::from_static(b"green"),
        };
        assert!(passes(&[], &m));
        assert!(passes(
            &[Filter {
                conditions: vec![key.clone(), red.clone()]
            }],
            &m
        ));
        assert!(!passes(
            &[Filter {
                conditions: vec![key.clone(), green.clone()]
            }],
            &m
        ));
        assert!(passes(
            &[
                Filter {
                    conditions: vec![green.clone()]
                },
                Filter {
                    conditions: vec![Condition::Not(Box::new(green))]
                }
            ],
            &m
        ));
    }

    #[test]
    fn header_sequences_match_topic_levels() {
        let m = message(
            "sensor/1/temp",
            &[
                ("zilla:filter", "sensor"),
                ("zilla:filter", "1"),
                ("zilla:filter", "temp"),
            ],
        );
        assert!(levels(&["sensor", "1", "temp"]).matches(&m));
        assert!(levels(&["sensor", "+", "temp"]).matches(&m));
        assert!(levels(&["sensor", "#"]).matches(&m));
        assert!(levels(&["#"]).matches(&m));
        assert!(levels(&["+", "+", "+"]).matches(&m));
        assert!(!levels(&["+", "+"]).matches(&m));
        assert!(!levels(&["sensor", "2", "#"]).matches(&m));
        assert!(levels(&["sensor", "1", "temp", "#"]).matches(&m));
    }
}
