//! The requests and responses of the Kafka APIs this client speaks, as plain Rust types.
//!
//! These are this crate's own types: the codec converts them to and from the wire, so callers
//! never depend on the protocol library's generated structs.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;

use super::error::ErrorCode;

/// The Kafka APIs this client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ApiKey {
    /// Produce (0).
    Produce,
    /// Fetch (1).
    Fetch,
    /// ListOffsets (2).
    ListOffsets,
    /// Metadata (3).
    Metadata,
    /// OffsetCommit (8).
    OffsetCommit,
    /// OffsetFetch (9).
    OffsetFetch,
    /// FindCoordinator (10).
    FindCoordinator,
    /// JoinGroup (11).
    JoinGroup,
    /// Heartbeat (12).
    Heartbeat,
    /// LeaveGroup (13).
    LeaveGroup,
    /// SyncGroup (14).
    SyncGroup,
    /// SaslHandshake (17).
    SaslHandshake,
    /// ApiVersions (18).
    ApiVersions,
    /// CreateTopics (19).
    CreateTopics,
    /// DeleteTopics (20).
    DeleteTopics,
    /// InitProducerId (22).
    InitProducerId,
    /// DescribeConfigs (32).
    DescribeConfigs,
    /// SaslAuthenticate (36).
    SaslAuthenticate,
}

impl ApiKey {
    /// Every API this client speaks.
    pub const ALL: [Self; 18] = [
        Self::Produce,
        Self::Fetch,
        Self::ListOffsets,
        Self::Metadata,
        Self::OffsetCommit,
        Self::OffsetFetch,
        Self::FindCoordinator,
        Self::JoinGroup,
        Self::Heartbeat,
        Self::LeaveGroup,
        Self::SyncGroup,
        Self::SaslHandshake,
        Self::ApiVersions,
        Self::CreateTopics,
        Self::DeleteTopics,
        Self::InitProducerId,
        Self::DescribeConfigs,
        Self::SaslAuthenticate,
    ];

    /// The numeric key on the wire.
    pub fn code(self) -> i16 {
        match self {
            Self::Produce => 0,
            Self::Fetch => 1,
            Self::ListOffsets => 2,
            Self::Metadata => 3,
            Self::OffsetCommit => 8,
            Self::OffsetFetch => 9,
            Self::FindCoordinator => 10,
            Self::JoinGroup => 11,
            Self::Heartbeat => 12,
            Self::LeaveGroup => 13,
            Self::SyncGroup => 14,
            Self::SaslHandshake => 17,
            Self::ApiVersions => 18,
            Self::CreateTopics => 19,
            Self::DeleteTopics => 20,
            Self::InitProducerId => 22,
            Self::DescribeConfigs => 32,
            Self::SaslAuthenticate => 36,
        }
    }

    /// The API's name as Kafka spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Produce => "Produce",
            Self::Fetch => "Fetch",
            Self::ListOffsets => "ListOffsets",
            Self::Metadata => "Metadata",
            Self::OffsetCommit => "OffsetCommit",
            Self::OffsetFetch => "OffsetFetch",
            Self::FindCoordinator => "FindCoordinator",
            Self::JoinGroup => "JoinGroup",
            Self::Heartbeat => "Heartbeat",
            Self::LeaveGroup => "LeaveGroup",
            Self::SyncGroup => "SyncGroup",
            Self::SaslHandshake => "SaslHandshake",
            Self::ApiVersions => "ApiVersions",
            Self::CreateTopics => "CreateTopics",
            Self::DeleteTopics => "DeleteTopics",
            Self::InitProducerId => "InitProducerId",
            Self::DescribeConfigs => "DescribeConfigs",
            Self::SaslAuthenticate => "SaslAuthenticate",
        }
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A topic's UUID (all zeros when the broker did not report one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TopicId(pub u128);

impl TopicId {
    /// Whether the broker reported no id.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

/// How many replicas must have a produced batch before the broker answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// No answer at all (fire and forget).
    None,
    /// The leader has written it.
    Leader,
    /// All in-sync replicas have it.
    #[default]
    All,
}

impl Acks {
    pub(crate) fn code(self) -> i16 {
        match self {
            Self::None => 0,
            Self::Leader => 1,
            Self::All => -1,
        }
    }
}

/// Whether fetches may see records of open transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Isolation {
    /// Everything up to the high watermark.
    #[default]
    ReadUncommitted,
    /// Only up to the last stable offset.
    ReadCommitted,
}

impl Isolation {
    pub(crate) fn code(self) -> i8 {
        match self {
            Self::ReadUncommitted => 0,
            Self::ReadCommitted => 1,
        }
    }
}

/// A broker's address as advertised in metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// The broker id.
    pub node_id: i32,
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Rack, when assigned.
    pub rack: Option<String>,
}

/// A Metadata response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata {
    /// The cluster id.
    pub cluster_id: Option<String>,
    /// The controller broker id (`-1` when unknown).
    pub controller_id: i32,
    /// The brokers.
    pub brokers: Vec<Broker>,
    /// The topics asked for (or all).
    pub topics: Vec<TopicMetadata>,
}

/// A topic in a Metadata response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    /// Error for the topic (e.g. UNKNOWN_TOPIC_OR_PARTITION).
    pub error: ErrorCode,
    /// Topic name.
    pub name: String,
    /// Topic id (zero before Metadata v10).
    pub id: TopicId,
    /// Whether the topic is internal.
    pub internal: bool,
    /// Partitions, in the broker's order.
    pub partitions: Vec<PartitionMetadata>,
}

/// A partition in a Metadata response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    /// Error for the partition (e.g. LEADER_NOT_AVAILABLE).
    pub error: ErrorCode,
    /// Partition index.
    pub partition: i32,
    /// Leader broker id, `-1` when none.
    pub leader: i32,
    /// Leader epoch, `-1` when unknown.
    pub leader_epoch: i32,
    /// Replica broker ids.
    pub replicas: Vec<i32>,
    /// In-sync replica broker ids.
    pub isr: Vec<i32>,
}

/// What a produce of one batch to one partition returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceResponse {
    /// Error for the partition.
    pub error: ErrorCode,
    /// Offset assigned to the first record.
    pub base_offset: i64,
    /// Append time when the topic uses log-append time, else `-1`.
    pub log_append_time: i64,
    /// Log start offset (v5+), else `-1`.
    pub log_start_offset: i64,
    /// The broker's error message (v8+).
    pub error_message: Option<String>,
}

/// A partition to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchPartition {
    /// Partition index.
    pub partition: i32,
    /// First offset wanted.
    pub offset: i64,
}

/// Settings of a fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchOptions {
    /// How long the broker may wait for `min_bytes`. Some brokers (tansu) do not wake a
    /// parked fetch when data arrives, so this is the latency of a caught-up reader there.
    pub max_wait: Duration,
    /// Bytes the broker waits for before answering.
    pub min_bytes: i32,
    /// Bytes per response.
    pub max_bytes: i32,
    /// Bytes per partition.
    pub partition_max_bytes: i32,
    /// Isolation level.
    pub isolation: Isolation,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
            max_bytes: 50 * 1024 * 1024,
            partition_max_bytes: 1024 * 1024,
            isolation: Isolation::ReadUncommitted,
        }
    }
}

/// A Fetch request (the low-level form; [`crate::wire::Cluster::fetch`] builds it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// Settings.
    pub options: FetchOptions,
    /// Topics with their partitions.
    pub topics: Vec<FetchTopic>,
}

/// A topic in a Fetch request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchTopic {
    /// Name (used up to Fetch v12).
    pub name: String,
    /// Id (used from Fetch v13).
    pub id: TopicId,
    /// Partitions.
    pub partitions: Vec<FetchPartition>,
}

/// A Fetch response before record decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResponse {
    /// Top-level error (v7+).
    pub error: ErrorCode,
    /// Topics.
    pub topics: Vec<FetchResponseTopic>,
}

/// A topic in a Fetch response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResponseTopic {
    /// Name (up to v12; empty after).
    pub name: String,
    /// Id (v13+; zero before).
    pub id: TopicId,
    /// Partitions.
    pub partitions: Vec<FetchResponsePartition>,
}

/// A partition in a Fetch response, with its raw record batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResponsePartition {
    /// Partition index.
    pub partition: i32,
    /// Error for the partition.
    pub error: ErrorCode,
    /// High watermark.
    pub high_watermark: i64,
    /// Last stable offset, `-1` when unknown.
    pub last_stable_offset: i64,
    /// Log start offset, `-1` when unknown.
    pub log_start_offset: i64,
    /// Aborted transactions as (producer id, first offset).
    pub aborted_transactions: Vec<(i64, i64)>,
    /// Record batches, undecoded.
    pub records: Bytes,
}

/// Which offset ListOffsets should find.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OffsetSpec {
    /// The log start offset (timestamp `-2`).
    Earliest,
    /// The log end offset (timestamp `-1`).
    Latest,
    /// The first offset whose timestamp is at or after this many milliseconds since the epoch.
    Timestamp(i64),
}

impl OffsetSpec {
    pub(crate) fn timestamp(self) -> Result<i64, super::error::KafkaError> {
        match self {
            Self::Earliest => Ok(-2),
            Self::Latest => Ok(-1),
            // Negative timestamps select special offsets, and -3 (max timestamp) makes some
            // brokers drop the connection.
            Self::Timestamp(t) if t >= 0 => Ok(t),
            Self::Timestamp(t) => Err(super::error::KafkaError::InvalidArgument(format!(
                "offset timestamp {t} is negative"
            ))),
        }
    }
}

/// A ListOffsets request for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsRequest {
    /// Topic.
    pub topic: String,
    /// Partitions and what to find.
    pub partitions: Vec<(i32, OffsetSpec)>,
    /// Isolation level (v2+).
    pub isolation: Isolation,
}

/// One partition's answer to ListOffsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    /// Partition.
    pub partition: i32,
    /// Error.
    pub error: ErrorCode,
    /// Timestamp of the found record, `-1` for the special offsets.
    pub timestamp: i64,
    /// The offset, `-1` when none matched.
    pub offset: i64,
}

/// Where a topic config value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// Set on the topic.
    Topic,
    /// Set on the broker dynamically or statically.
    Broker,
    /// The broker's built-in default.
    Default,
    /// Not returned by the broker; filled in from Kafka's documented default.
    KafkaDefault,
    /// A source code this client does not know.
    Other(i8),
}

impl ConfigSource {
    pub(crate) fn from_code(code: i8) -> Self {
        match code {
            1 => Self::Topic,
            2..=4 | 6 => Self::Broker,
            5 => Self::Default,
            other => Self::Other(other),
        }
    }
}

/// One config entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// Value; `None` when null or sensitive.
    pub value: Option<String>,
    /// Where it came from.
    pub source: ConfigSource,
    /// Whether it cannot be changed.
    pub read_only: bool,
    /// Whether the value is hidden.
    pub sensitive: bool,
}

/// A topic's configs by name.
pub type TopicConfigs = BTreeMap<String, ConfigEntry>;

/// A group coordinator (or transaction coordinator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinator {
    /// Broker id.
    pub node_id: i32,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
}

/// A FindCoordinator request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindCoordinatorRequest {
    /// Group id (or transactional id).
    pub key: String,
    /// 0 for a group, 1 for a transaction.
    pub key_type: i8,
}

/// A FindCoordinator answer for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindCoordinatorResponse {
    /// Error.
    pub error: ErrorCode,
    /// Error message.
    pub error_message: Option<String>,
    /// The coordinator, when found.
    pub coordinator: Coordinator,
}

/// A JoinGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGroupRequest {
    /// Group id.
    pub group_id: String,
    /// Session timeout.
    pub session_timeout: Duration,
    /// Rebalance timeout (v1+).
    pub rebalance_timeout: Duration,
    /// Member id: empty on the first join.
    pub member_id: String,
    /// Static membership id (v5+).
    pub group_instance_id: Option<String>,
    /// Protocol type, e.g. `consumer`.
    pub protocol_type: String,
    /// Supported protocols with their metadata, in preference order.
    pub protocols: Vec<(String, Bytes)>,
}

/// A member as reported to the group leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// Member id.
    pub member_id: String,
    /// Static membership id.
    pub group_instance_id: Option<String>,
    /// The member's protocol metadata.
    pub metadata: Bytes,
}

/// A JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGroupResponse {
    /// Error.
    pub error: ErrorCode,
    /// Generation.
    pub generation_id: i32,
    /// Protocol type (v7+).
    pub protocol_type: Option<String>,
    /// Chosen protocol.
    pub protocol_name: Option<String>,
    /// Leader member id.
    pub leader: String,
    /// This member's id.
    pub member_id: String,
    /// All members (only for the leader).
    pub members: Vec<GroupMember>,
}

impl JoinGroupResponse {
    /// Whether this member leads the group (and must compute assignments).
    pub fn is_leader(&self) -> bool {
        self.leader == self.member_id
    }
}

/// A SyncGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncGroupRequest {
    /// Group id.
    pub group_id: String,
    /// Generation.
    pub generation_id: i32,
    /// Member id.
    pub member_id: String,
    /// Static membership id.
    pub group_instance_id: Option<String>,
    /// Protocol type (v5+).
    pub protocol_type: Option<String>,
    /// Protocol name (v5+).
    pub protocol_name: Option<String>,
    /// Assignments per member (leader only).
    pub assignments: Vec<(String, Bytes)>,
}

/// A SyncGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncGroupResponse {
    /// Error.
    pub error: ErrorCode,
    /// This member's assignment.
    pub assignment: Bytes,
}

/// A Heartbeat request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatRequest {
    /// Group id.
    pub group_id: String,
    /// Generation.
    pub generation_id: i32,
    /// Member id.
    pub member_id: String,
    /// Static membership id.
    pub group_instance_id: Option<String>,
}

/// A LeaveGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveGroupRequest {
    /// Group id.
    pub group_id: String,
    /// Member id.
    pub member_id: String,
    /// Static membership id.
    pub group_instance_id: Option<String>,
}

/// An error code answer (Heartbeat, LeaveGroup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorResponse {
    /// Error.
    pub error: ErrorCode,
}

/// An OffsetFetch request for one group and topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetFetchRequest {
    /// Group id.
    pub group_id: String,
    /// Topic.
    pub topic: String,
    /// Partitions.
    pub partitions: Vec<i32>,
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// Partition.
    pub partition: i32,
    /// Error.
    pub error: ErrorCode,
    /// Committed offset, `-1` when none.
    pub offset: i64,
    /// Committed leader epoch, `-1` when unknown.
    pub leader_epoch: i32,
    /// Commit metadata.
    pub metadata: Option<String>,
}

/// An OffsetFetch response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetFetchResponse {
    /// Group-level error.
    pub error: ErrorCode,
    /// Offsets of the requested partitions.
    pub offsets: Vec<CommittedOffset>,
}

/// An OffsetCommit request for one group and topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitRequest {
    /// Group id.
    pub group_id: String,
    /// Generation, `-1` for commits outside a group generation.
    pub generation_id: i32,
    /// Member id, empty outside a generation.
    pub member_id: String,
    /// Static membership id.
    pub group_instance_id: Option<String>,
    /// Topic.
    pub topic: String,
    /// (partition, offset, metadata).
    pub offsets: Vec<(i32, i64, Option<String>)>,
}

/// Per-partition results of OffsetCommit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitResponse {
    /// (partition, error).
    pub partitions: Vec<(i32, ErrorCode)>,
}

/// An InitProducerId request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitProducerIdRequest {
    /// Transactional id, `None` for an idempotent producer.
    pub transactional_id: Option<String>,
    /// Transaction timeout.
    pub transaction_timeout: Duration,
}

/// An InitProducerId response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdentity {
    /// Error.
    pub error: ErrorCode,
    /// Producer id.
    pub producer_id: i64,
    /// Producer epoch.
    pub producer_epoch: i16,
}

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    /// Name.
    pub name: String,
    /// Partitions, `-1` for the broker default.
    pub partitions: i32,
    /// Replication factor, `-1` for the broker default.
    pub replication_factor: i16,
    /// Topic configs.
    pub configs: Vec<(String, String)>,
}

impl NewTopic {
    /// A topic with `partitions` partitions and default replication.
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        Self {
            name: name.into(),
            partitions,
            replication_factor: -1,
            configs: Vec::new(),
        }
    }
}

/// A CreateTopics request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTopicsRequest {
    /// Topics.
    pub topics: Vec<NewTopic>,
    /// How long the broker may take.
    pub timeout: Duration,
}

/// A DeleteTopics request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteTopicsRequest {
    /// Topic names.
    pub topics: Vec<String>,
    /// How long the broker may take.
    pub timeout: Duration,
}

/// A per-topic result of CreateTopics or DeleteTopics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicResult {
    /// Topic name.
    pub name: String,
    /// Error.
    pub error: ErrorCode,
    /// Error message.
    pub message: Option<String>,
}

/// A DescribeConfigs request for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeConfigsRequest {
    /// Topic name.
    pub topic: String,
}

/// A DescribeConfigs response for one topic, as the broker sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeConfigsResponse {
    /// Error.
    pub error: ErrorCode,
    /// Error message.
    pub message: Option<String>,
    /// Configs returned.
    pub configs: TopicConfigs,
}

/// A SaslHandshake request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslHandshakeRequest {
    /// Mechanism, e.g. `SCRAM-SHA-512`.
    pub mechanism: String,
}

/// A SaslHandshake response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslHandshakeResponse {
    /// Error.
    pub error: ErrorCode,
    /// Mechanisms the broker enables.
    pub mechanisms: Vec<String>,
}

/// A SaslAuthenticate request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslAuthenticateRequest {
    /// SASL bytes.
    pub auth_bytes: Bytes,
}

/// A SaslAuthenticate response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslAuthenticateResponse {
    /// Error.
    pub error: ErrorCode,
    /// Error message.
    pub message: Option<String>,
    /// SASL bytes.
    pub auth_bytes: Bytes,
}

/// A Metadata request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetadataRequest {
    /// Topics; `None` for all.
    pub topics: Option<Vec<String>>,
    /// Whether the broker may create missing topics (v4+).
    pub allow_auto_topic_creation: bool,
}

/// A Produce request for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceRequest {
    /// Topic name (up to v12).
    pub topic: String,
    /// Topic id (v13+).
    pub topic_id: TopicId,
    /// Partition.
    pub partition: i32,
    /// Encoded record batch(es).
    pub records: Bytes,
    /// Acknowledgement level.
    pub acks: Acks,
    /// How long the broker may wait for replication.
    pub timeout: Duration,
    /// Transactional id, when producing in a transaction.
    pub transactional_id: Option<String>,
}
