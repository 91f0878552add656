//! The Kafka wire-protocol client.
//!
//! - [`Connection`]: one broker connection, opened through a
//!   [`BytesHandler`](zilla_engine::stream::BytesHandler) (in production the binding's exit, a
//!   `tcp` or `tls` client). Frames are length-prefixed and bounded
//!   ([`ConnectionConfig::max_frame_size`]); many requests are in flight at once, each matched
//!   to its caller by correlation id; ApiVersions is negotiated on open and SASL (PLAIN,
//!   SCRAM-SHA-256, SCRAM-SHA-512) runs when configured.
//! - [`Cluster`]: a client over the whole cluster: bootstrap servers, metadata (topic →
//!   partitions → leader, broker id → `host:port`), one pooled connection per broker shared by
//!   all callers, leader routing, reconnects with bounded exponential backoff, and retries that
//!   refresh metadata after NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION,
//!   LEADER_NOT_AVAILABLE or a lost connection. Operations: produce, fetch, list offsets
//!   (the calls made at the same time for partitions of one topic go as one request per
//!   leader), describe configs, metadata, find coordinator, join/sync/heartbeat/leave group, offset
//!   fetch/commit, init producer id, create/delete topics.
//! - Records: [`encode_batch`] and [`decode_batches`] for magic v2 batches (keys, null values,
//!   repeated headers in order, timestamps) with none, gzip, snappy (xerial-framed or raw on
//!   read), lz4 (frame format) and zstd; the decompressed size, and what the records decode
//!   to, are bounded by [`DecodeLimits`], per batch and per fetch response
//!   ([`DecompressBudget`]).
//! - [`Partitioner`]: Kafka's murmur2 (`toPositive(murmur2(key)) % partitions`) for keyed
//!   records, round-robin for null keys.
//!
//! # API versions
//!
//! For each API the connection uses the highest version both it and the broker support. This
//! client's ranges are what the protocol library encodes and decodes, limited to the versions
//! of Apache Kafka's response schemas embedded here (which the bounds check below walks), with
//! a few floors of its own:
//!
//! | API (key) | client versions | with tansu 0.6 |
//! |---|---|---|
//! | Produce (0) | 3-11 | 11 |
//! | Fetch (1) | 4-17 (topic ids from v13) | 17 |
//! | ListOffsets (2) | 1-10 | 9 |
//! | Metadata (3) | 1-12 | 12 |
//! | OffsetCommit (8) | 2-9 | 9 |
//! | OffsetFetch (9) | 1-9 (group list from v8) | 9 |
//! | FindCoordinator (10) | 1-6 (key list from v4) | 6 |
//! | JoinGroup (11) | 1-9 | 9 |
//! | Heartbeat (12) | 0-4 | 4 |
//! | LeaveGroup (13) | 0-5 (member list from v3) | 5 |
//! | SyncGroup (14) | 0-5 | 5 |
//! | SaslHandshake (17) | 1 (v0's raw SASL frames are not spoken) | 1 |
//! | ApiVersions (18) | v3 first, then the version the broker names, or v0 | 3 |
//! | CreateTopics (19) | 2-7 | 7 |
//! | DeleteTopics (20) | 1-6 | 6 |
//! | InitProducerId (22) | 3-5 | 5 |
//! | DescribeConfigs (32) | 1-4 | 4 |
//! | SaslAuthenticate (36) | 0-2 | 2 |
//!
//! # Untrusted bytes
//!
//! Every response is walked against Apache Kafka's message schema for its version before the
//! typed decoder runs: the decoder reserves memory from array counts before reading elements,
//! so an array announcing more elements than bytes left is refused first. Record batches are
//! decoded by this module's own code, which checks CRCs and bounds decompression. Malformed
//! input is an error, never a panic (property tests and `fuzz/` check this).
//!
//! # Broker behaviours tolerated
//!
//! These come from tansu 0.6; a client that handles them also works with Apache Kafka.
//! 1. A fetch parked at the log end is not woken by new data: it returns after `max_wait`,
//!    so [`FetchOptions::max_wait`] is the caller's choice (small values for low latency).
//! 2. DescribeConfigs returns only the configs set on the topic:
//!    [`Cluster::describe_configs`] fills in Kafka's defaults ([`TOPIC_DEFAULTS`]), marked
//!    [`ConfigSource::KafkaDefault`].
//! 3. ListOffsets with timestamp -3 (max timestamp) drops the connection: [`OffsetSpec`] has
//!    no such variant and negative timestamps are refused before sending.
//! 4. InitProducerId v0-v2 crashes the broker's storage: only v3 and later are sent.
//! 5. DescribeGroups drops the connection: it is never sent (group state comes from
//!    JoinGroup, SyncGroup, Heartbeat and OffsetFetch).
//! 6. Produce with acks=0 is answered although Kafka does not answer it: such answers are
//!    recognised and dropped instead of breaking the connection.
//! 7. Snappy batches are stored but cannot be fetched back from tansu; snappy decoding is
//!    checked against the batches librdkafka writes.

mod cluster;
mod codec;
mod configs;
mod connection;
mod error;
pub(crate) mod frame;
mod partitioner;
mod records;
mod sasl;
mod schema;
mod types;

pub use cluster::{Cluster, ClusterConfig, Endpoint, FetchedPartition, Lane, ProduceOptions};
pub use codec::{ApiVersionsRequest, ApiVersionsResponse, Request, check_response};
pub use configs::{TOPIC_DEFAULTS, fill_topic_defaults};
pub use connection::{ApiVersions, Connection, ConnectionConfig};
pub use error::{ErrorCode, KafkaError};
pub use partitioner::{Partitioner, murmur2, partition_for_key};
pub use records::*;
#[cfg(test)]
pub(crate) use sasl::{OAUTH_BEARER_ERROR_ACKNOWLEDGEMENT, Scram};
pub use sasl::{SaslConfig, SaslMechanism, oauth_bearer_client_first, oauth_bearer_token};
pub(crate) use sasl::{
    ScramCredential, ScramServer, StreamChannel, authenticate as sasl_authenticate,
    check_bearer_token, same_bytes, scram_client_first,
};
pub use types::*;

pub(crate) use schema::check as check_response_schema;
pub(crate) use schema::check_request as check_request_schema;

/// The versions of `api_key`'s request that the schema check knows, if it has its schema.
pub(crate) fn request_schema_versions(api_key: i16) -> Option<(i16, i16)> {
    schema::request_schema(api_key)
        .ok()
        .map(|schema| (schema.valid.min, schema.valid.max))
}

/// The versions of `api_key`'s response that the schema check knows, if it has its schema.
pub(crate) fn response_schema_versions(api_key: i16) -> Option<(i16, i16)> {
    schema::schema(api_key)
        .ok()
        .map(|schema| (schema.valid.min, schema.valid.max))
}
