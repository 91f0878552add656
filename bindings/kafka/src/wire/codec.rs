//! The one place that speaks the protocol library: our request types are converted to its
//! messages and encoded, and response bytes are checked against the schema walk and decoded
//! into our response types.
//!
//! The library's generated structs change between minor releases; keeping them behind this
//! module keeps those changes in one file.

use std::cmp::{max, min};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages as kp;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Message, StrBytes};

use super::error::{ErrorCode, KafkaError};
use super::schema;
use super::types::*;

mod sealed {
    pub trait Sealed {}
}

/// A request of one Kafka API, with the type its response decodes to.
///
/// Implemented by this module's request types only; the encoding is internal.
pub trait Request: sealed::Sealed + Send + Sync {
    /// The decoded response.
    type Response: Send + 'static;
    /// The API.
    const API: ApiKey;

    #[doc(hidden)]
    fn encode_body(&self, version: i16, buf: &mut BytesMut) -> Result<(), KafkaError>;

    #[doc(hidden)]
    fn decode_body(version: i16, body: Bytes) -> Result<Self::Response, KafkaError>;
}

/// The versions of `api` this client can encode and decode.
pub(crate) fn client_versions(api: ApiKey) -> (i16, i16) {
    fn range<Q: Message, S: Message>(floor: i16) -> (i16, i16) {
        (
            max(floor, max(Q::VERSIONS.min, S::VERSIONS.min)),
            min(Q::VERSIONS.max, S::VERSIONS.max),
        )
    }
    let (low, high) = match api {
        ApiKey::Produce => range::<kp::ProduceRequest, kp::ProduceResponse>(3),
        ApiKey::Fetch => range::<kp::FetchRequest, kp::FetchResponse>(4),
        ApiKey::ListOffsets => range::<kp::ListOffsetsRequest, kp::ListOffsetsResponse>(1),
        ApiKey::Metadata => range::<kp::MetadataRequest, kp::MetadataResponse>(1),
        ApiKey::OffsetCommit => range::<kp::OffsetCommitRequest, kp::OffsetCommitResponse>(2),
        ApiKey::OffsetFetch => range::<kp::OffsetFetchRequest, kp::OffsetFetchResponse>(1),
        ApiKey::FindCoordinator => {
            range::<kp::FindCoordinatorRequest, kp::FindCoordinatorResponse>(1)
        }
        ApiKey::JoinGroup => range::<kp::JoinGroupRequest, kp::JoinGroupResponse>(1),
        ApiKey::Heartbeat => range::<kp::HeartbeatRequest, kp::HeartbeatResponse>(0),
        ApiKey::LeaveGroup => range::<kp::LeaveGroupRequest, kp::LeaveGroupResponse>(0),
        ApiKey::SyncGroup => range::<kp::SyncGroupRequest, kp::SyncGroupResponse>(0),
        // v0 sends SASL tokens as raw frames, which this client does not do.
        ApiKey::SaslHandshake => range::<kp::SaslHandshakeRequest, kp::SaslHandshakeResponse>(1),
        ApiKey::ApiVersions => {
            let (low, high) = range::<kp::ApiVersionsRequest, kp::ApiVersionsResponse>(0);
            (low, min(high, 3))
        }
        ApiKey::CreateTopics => range::<kp::CreateTopicsRequest, kp::CreateTopicsResponse>(2),
        ApiKey::DeleteTopics => range::<kp::DeleteTopicsRequest, kp::DeleteTopicsResponse>(1),
        // v0-v2 crash some brokers' storage (tansu with sqlite); every Kafka since 2.5 has v3.
        ApiKey::InitProducerId => range::<kp::InitProducerIdRequest, kp::InitProducerIdResponse>(3),
        ApiKey::DescribeConfigs => {
            range::<kp::DescribeConfigsRequest, kp::DescribeConfigsResponse>(1)
        }
        ApiKey::SaslAuthenticate => {
            range::<kp::SaslAuthenticateRequest, kp::SaslAuthenticateResponse>(0)
        }
    };
    // Only versions the schema walk knows can be decoded safely.
    match schema::schema(api.code()) {
        Ok(schema) => (max(low, schema.valid.min), min(high, schema.valid.max)),
        Err(_) => (1, 0),
    }
}

/// Encodes a whole request frame: size, header, body.
pub(crate) fn encode_request<R: Request>(
    request: &R,
    version: i16,
    correlation_id: i32,
    client_id: &str,
) -> Result<Bytes, KafkaError> {
    let api = R::API;
    let key = kp::ApiKey::try_from(api.code()).map_err(|_| KafkaError::Encode {
        api: api.name(),
        reason: "unknown API key".into(),
    })?;
    let mut header = kp::RequestHeader::default();
    header.request_api_key = api.code();
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_string(client_id.to_owned()));

    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    encode(api, &header, key.request_header_version(version), &mut buf)?;
    request.encode_body(version, &mut buf)?;
    let size = i32::try_from(buf.len() - 4).map_err(|_| KafkaError::Encode {
        api: api.name(),
        reason: "request larger than 2 GiB".into(),
    })?;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}

/// Decodes a response frame after its correlation id.
pub(crate) fn decode_response<R: Request>(
    version: i16,
    mut frame: Bytes,
) -> Result<R::Response, KafkaError> {
    let api = R::API;
    let key = kp::ApiKey::try_from(api.code())
        .map_err(|_| KafkaError::malformed(api.name(), "unknown API key"))?;
    if key.response_header_version(version) >= 1 {
        let skip =
            schema::skip_tagged_fields(&frame).map_err(|e| KafkaError::malformed(api.name(), e))?;
        let _ = frame.split_to(skip);
    }
    R::decode_body(version, frame)
}

fn encode<M: Encodable>(
    api: ApiKey,
    message: &M,
    version: i16,
    buf: &mut BytesMut,
) -> Result<(), KafkaError> {
    message
        .encode(buf, version)
        .map_err(|e| KafkaError::Encode {
            api: api.name(),
            reason: e.to_string(),
        })
}

fn decode<M: Decodable + HeaderVersion>(
    api: ApiKey,
    version: i16,
    mut body: Bytes,
) -> Result<M, KafkaError> {
    schema::check(api.code(), version, &body).map_err(|e| KafkaError::malformed(api.name(), e))?;
    M::decode(&mut body, version).map_err(|e| KafkaError::malformed(api.name(), e))
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_owned())
}

fn owned(value: StrBytes) -> String {
    value.as_str().to_owned()
}

fn owned_opt(value: Option<StrBytes>) -> Option<String> {
    value.map(owned)
}

fn topic_name(value: &str) -> kp::TopicName {
    kp::TopicName(text(value))
}

fn uuid(id: TopicId) -> uuid::Uuid {
    uuid::Uuid::from_u128(id.0)
}

fn millis(duration: Duration) -> i32 {
    i32::try_from(duration.as_millis()).unwrap_or(i32::MAX)
}

fn port(api: ApiKey, port: i32) -> Result<u16, KafkaError> {
    u16::try_from(port).map_err(|_| KafkaError::malformed(api.name(), format!("port {port}")))
}

macro_rules! request {
    ($request:ty => $response:ty, $api:expr) => {
        impl sealed::Sealed for $request {}
        impl Request for $request {
            type Response = $response;
            const API: ApiKey = $api;

            fn encode_body(&self, version: i16, buf: &mut BytesMut) -> Result<(), KafkaError> {
                encode(Self::API, &self.to_wire(version), version, buf)
            }

            fn decode_body(version: i16, body: Bytes) -> Result<Self::Response, KafkaError> {
                Self::from_wire(version, decode(Self::API, version, body)?)
            }
        }
    };
}

/// An ApiVersions request (the first request on every connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiVersionsRequest {
    /// Client software name (v3+).
    pub software_name: String,
    /// Client software version (v3+).
    pub software_version: String,
}

/// An ApiVersions response: the broker's version range per API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiVersionsResponse {
    /// Error (UNSUPPORTED_VERSION when the request version is too new).
    pub error: ErrorCode,
    /// (api key, min, max).
    pub apis: Vec<(i16, i16, i16)>,
}

request!(ApiVersionsRequest => ApiVersionsResponse, ApiKey::ApiVersions);

impl ApiVersionsRequest {
    fn to_wire(&self, _version: i16) -> kp::ApiVersionsRequest {
        let mut wire = kp::ApiVersionsRequest::default();
        wire.client_software_name = text(&self.software_name);
        wire.client_software_version = text(&self.software_version);
        wire
    }

    fn from_wire(
        _version: i16,
        wire: kp::ApiVersionsResponse,
    ) -> Result<ApiVersionsResponse, KafkaError> {
        Ok(ApiVersionsResponse {
            error: ErrorCode(wire.error_code),
            apis: wire
                .api_keys
                .into_iter()
                .map(|api| (api.api_key, api.min_version, api.max_version))
                .collect(),
        })
    }
}

request!(MetadataRequest => Metadata, ApiKey::Metadata);

impl MetadataRequest {
    fn to_wire(&self, _version: i16) -> kp::MetadataRequest {
        let mut wire = kp::MetadataRequest::default();
        wire.topics = self.topics.as_ref().map(|topics| {
            topics
                .iter()
                .map(|name| {
                    let mut topic = kp::metadata_request::MetadataRequestTopic::default();
                    topic.name = Some(topic_name(name));
                    topic
                })
                .collect()
        });
        wire.allow_auto_topic_creation = self.allow_auto_topic_creation;
        wire
    }

    fn from_wire(_version: i16, wire: kp::MetadataResponse) -> Result<Metadata, KafkaError> {
        let brokers = wire
            .brokers
            .into_iter()
            .map(|broker| {
                Ok(Broker {
                    node_id: broker.node_id.0,
                    host: owned(broker.host),
                    port: port(ApiKey::Metadata, broker.port)?,
                    rack: owned_opt(broker.rack),
                })
            })
            .collect::<Result<_, KafkaError>>()?;
        let topics = wire
            .topics
            .into_iter()
            .map(|topic| TopicMetadata {
                error: ErrorCode(topic.error_code),
                name: topic.name.map(|n| owned(n.0)).unwrap_or_default(),
                id: TopicId(topic.topic_id.as_u128()),
                internal: topic.is_internal,
                partitions: topic
                    .partitions
                    .into_iter()
                    .map(|p| PartitionMetadata {
                        error: ErrorCode(p.error_code),
                        partition: p.partition_index,
                        leader: p.leader_id.0,
                        leader_epoch: p.leader_epoch,
                        replicas: p.replica_nodes.into_iter().map(|b| b.0).collect(),
                        isr: p.isr_nodes.into_iter().map(|b| b.0).collect(),
                    })
                    .collect(),
            })
            .collect();
        Ok(Metadata {
            cluster_id: owned_opt(wire.cluster_id),
            controller_id: wire.controller_id.0,
            brokers,
            topics,
        })
    }
}

request!(ProduceRequest => ProduceResponse, ApiKey::Produce);

impl ProduceRequest {
    fn to_wire(&self, version: i16) -> kp::ProduceRequest {
        let mut partition = kp::produce_request::PartitionProduceData::default();
        partition.index = self.partition;
        partition.records = Some(self.records.clone());
        let mut topic = kp::produce_request::TopicProduceData::default();
        if version >= 13 {
            topic.topic_id = uuid(self.topic_id);
        } else {
            topic.name = topic_name(&self.topic);
        }
        topic.partition_data = vec![partition];
        let mut wire = kp::ProduceRequest::default();
        wire.transactional_id = self
            .transactional_id
            .as_deref()
            .map(|id| kp::TransactionalId(text(id)));
        wire.acks = self.acks.code();
        wire.timeout_ms = millis(self.timeout);
        wire.topic_data = vec![topic];
        wire
    }

    fn from_wire(_version: i16, wire: kp::ProduceResponse) -> Result<ProduceResponse, KafkaError> {
        let partition = wire
            .responses
            .into_iter()
            .flat_map(|topic| topic.partition_responses)
            .next()
            .ok_or_else(|| KafkaError::malformed("Produce", "no partition in the response"))?;
        Ok(ProduceResponse {
            error: ErrorCode(partition.error_code),
            base_offset: partition.base_offset,
            log_append_time: partition.log_append_time_ms,
            log_start_offset: partition.log_start_offset,
            error_message: owned_opt(partition.error_message),
        })
    }
}

request!(FetchRequest => FetchResponse, ApiKey::Fetch);

impl FetchRequest {
    fn to_wire(&self, version: i16) -> kp::FetchRequest {
        let options = &self.options;
        let mut wire = kp::FetchRequest::default();
        wire.max_wait_ms = millis(options.max_wait);
        wire.min_bytes = options.min_bytes;
        wire.max_bytes = options.max_bytes;
        wire.isolation_level = options.isolation.code();
        wire.topics = self
            .topics
            .iter()
            .map(|t| {
                let mut topic = kp::fetch_request::FetchTopic::default();
                if version >= 13 {
                    topic.topic_id = uuid(t.id);
                } else {
                    topic.topic = topic_name(&t.name);
                }
                topic.partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let mut partition = kp::fetch_request::FetchPartition::default();
                        partition.partition = p.partition;
                        partition.fetch_offset = p.offset;
                        partition.partition_max_bytes = options.partition_max_bytes;
                        partition
                    })
                    .collect();
                topic
            })
            .collect();
        wire
    }

    fn from_wire(_version: i16, wire: kp::FetchResponse) -> Result<FetchResponse, KafkaError> {
        Ok(FetchResponse {
            error: ErrorCode(wire.error_code),
            topics: wire
                .responses
                .into_iter()
                .map(|topic| FetchResponseTopic {
                    name: owned(topic.topic.0),
                    id: TopicId(topic.topic_id.as_u128()),
                    partitions: topic
                        .partitions
                        .into_iter()
                        .map(|p| FetchResponsePartition {
                            partition: p.partition_index,
                            error: ErrorCode(p.error_code),
                            high_watermark: p.high_watermark,
                            last_stable_offset: p.last_stable_offset,
                            log_start_offset: p.log_start_offset,
                            aborted_transactions: p
                                .aborted_transactions
                                .unwrap_or_default()
                                .into_iter()
                                .map(|a| (a.producer_id.0, a.first_offset))
                                .collect(),
                            records: p.records.unwrap_or_default(),
                        })
                        .collect(),
                })
                .collect(),
        })
    }
}

impl ListOffsetsRequest {
    fn to_wire(&self, version: i16) -> Result<kp::ListOffsetsRequest, KafkaError> {
        let mut topic = kp::list_offsets_request::ListOffsetsTopic::default();
        topic.name = topic_name(&self.topic);
        topic.partitions = self
            .partitions
            .iter()
            .map(|(index, spec)| {
                let mut partition = kp::list_offsets_request::ListOffsetsPartition::default();
                partition.partition_index = *index;
                partition.timestamp = spec.timestamp()?;
                Ok(partition)
            })
            .collect::<Result<_, KafkaError>>()?;
        let mut wire = kp::ListOffsetsRequest::default();
        wire.replica_id = kp::BrokerId(-1);
        if version >= 2 {
            wire.isolation_level = self.isolation.code();
        }
        wire.topics = vec![topic];
        Ok(wire)
    }

    fn from_wire(
        _version: i16,
        wire: kp::ListOffsetsResponse,
    ) -> Result<Vec<ListedOffset>, KafkaError> {
        Ok(wire
            .topics
            .into_iter()
            .flat_map(|topic| topic.partitions)
            .map(|p| ListedOffset {
                partition: p.partition_index,
                error: ErrorCode(p.error_code),
                timestamp: p.timestamp,
                offset: p.offset,
            })
            .collect())
    }
}

impl sealed::Sealed for ListOffsetsRequest {}
impl Request for ListOffsetsRequest {
    type Response = Vec<ListedOffset>;
    const API: ApiKey = ApiKey::ListOffsets;

    fn encode_body(&self, version: i16, buf: &mut BytesMut) -> Result<(), KafkaError> {
        encode(Self::API, &self.to_wire(version)?, version, buf)
    }

    fn decode_body(version: i16, body: Bytes) -> Result<Self::Response, KafkaError> {
        Self::from_wire(version, decode(Self::API, version, body)?)
    }
}

request!(DescribeConfigsRequest => DescribeConfigsResponse, ApiKey::DescribeConfigs);

impl DescribeConfigsRequest {
    const TOPIC_RESOURCE: i8 = 2;

    fn to_wire(&self, _version: i16) -> kp::DescribeConfigsRequest {
        let mut resource = kp::describe_configs_request::DescribeConfigsResource::default();
        resource.resource_type = Self::TOPIC_RESOURCE;
        resource.resource_name = text(&self.topic);
        resource.configuration_keys = None;
        let mut wire = kp::DescribeConfigsRequest::default();
        wire.resources = vec![resource];
        wire
    }

    fn from_wire(
        _version: i16,
        wire: kp::DescribeConfigsResponse,
    ) -> Result<DescribeConfigsResponse, KafkaError> {
        let result =
            wire.results.into_iter().next().ok_or_else(|| {
                KafkaError::malformed("DescribeConfigs", "no resource in response")
            })?;
        Ok(DescribeConfigsResponse {
            error: ErrorCode(result.error_code),
            message: owned_opt(result.error_message),
            configs: result
                .configs
                .into_iter()
                .map(|c| {
                    (
                        owned(c.name),
                        ConfigEntry {
                            value: owned_opt(c.value),
                            source: ConfigSource::from_code(c.config_source),
                            read_only: c.read_only,
                            sensitive: c.is_sensitive,
                        },
                    )
                })
                .collect(),
        })
    }
}

request!(FindCoordinatorRequest => FindCoordinatorResponse, ApiKey::FindCoordinator);

impl FindCoordinatorRequest {
    fn to_wire(&self, version: i16) -> kp::FindCoordinatorRequest {
        let mut wire = kp::FindCoordinatorRequest::default();
        if version >= 4 {
            wire.coordinator_keys = vec![text(&self.key)];
        } else {
            wire.key = text(&self.key);
        }
        wire.key_type = self.key_type;
        wire
    }

    fn from_wire(
        version: i16,
        wire: kp::FindCoordinatorResponse,
    ) -> Result<FindCoordinatorResponse, KafkaError> {
        let api = ApiKey::FindCoordinator;
        // Version 4 answers in a list (one entry per key asked), earlier ones at the top.
        let (error_code, error_message, node_id, host, port_number) = if version >= 4 {
            let found =
                wire.coordinators.into_iter().next().ok_or_else(|| {
                    KafkaError::malformed(api.name(), "no coordinator in response")
                })?;
            (
                found.error_code,
                found.error_message,
                found.node_id,
                found.host,
                found.port,
            )
        } else {
            (
                wire.error_code,
                wire.error_message,
                wire.node_id,
                wire.host,
                wire.port,
            )
        };
        let error = ErrorCode(error_code);
        Ok(FindCoordinatorResponse {
            error,
            error_message: owned_opt(error_message),
            coordinator: Coordinator {
                node_id: node_id.0,
                host: owned(host),
                port: if error.is_ok() {
                    port(api, port_number)?
                } else {
                    0
                },
            },
        })
    }
}

request!(JoinGroupRequest => JoinGroupResponse, ApiKey::JoinGroup);

impl JoinGroupRequest {
    fn to_wire(&self, _version: i16) -> kp::JoinGroupRequest {
        let mut wire = kp::JoinGroupRequest::default();
        wire.group_id = kp::GroupId(text(&self.group_id));
        wire.session_timeout_ms = millis(self.session_timeout);
        wire.rebalance_timeout_ms = millis(self.rebalance_timeout);
        wire.member_id = text(&self.member_id);
        wire.group_instance_id = self.group_instance_id.as_deref().map(text);
        wire.protocol_type = text(&self.protocol_type);
        wire.protocols = self
            .protocols
            .iter()
            .map(|(name, metadata)| {
                let mut protocol = kp::join_group_request::JoinGroupRequestProtocol::default();
                protocol.name = text(name);
                protocol.metadata = metadata.clone();
                protocol
            })
            .collect();
        wire
    }

    fn from_wire(
        _version: i16,
        wire: kp::JoinGroupResponse,
    ) -> Result<JoinGroupResponse, KafkaError> {
        Ok(JoinGroupResponse {
            error: ErrorCode(wire.error_code),
            generation_id: wire.generation_id,
            protocol_type: owned_opt(wire.protocol_type),
            protocol_name: owned_opt(wire.protocol_name),
            leader: owned(wire.leader),
            member_id: owned(wire.member_id),
            members: wire
                .members
                .into_iter()
                .map(|m| GroupMember {
                    member_id: owned(m.member_id),
                    group_instance_id: owned_opt(m.group_instance_id),
                    metadata: m.metadata,
                })
                .collect(),
        })
    }
}

request!(SyncGroupRequest => SyncGroupResponse, ApiKey::SyncGroup);

impl SyncGroupRequest {
    fn to_wire(&self, version: i16) -> kp::SyncGroupRequest {
        let mut wire = kp::SyncGroupRequest::default();
        wire.group_id = kp::GroupId(text(&self.group_id));
        wire.generation_id = self.generation_id;
        wire.member_id = text(&self.member_id);
        wire.group_instance_id = self.group_instance_id.as_deref().map(text);
        if version >= 5 {
            wire.protocol_type = self.protocol_type.as_deref().map(text);
            wire.protocol_name = self.protocol_name.as_deref().map(text);
        }
        wire.assignments = self
            .assignments
            .iter()
            .map(|(member, assignment)| {
                let mut entry = kp::sync_group_request::SyncGroupRequestAssignment::default();
                entry.member_id = text(member);
                entry.assignment = assignment.clone();
                entry
            })
            .collect();
        wire
    }

    fn from_wire(
        _version: i16,
        wire: kp::SyncGroupResponse,
    ) -> Result<SyncGroupResponse, KafkaError> {
        Ok(SyncGroupResponse {
            error: ErrorCode(wire.error_code),
            assignment: wire.assignment,
        })
    }
}

request!(HeartbeatRequest => ErrorResponse, ApiKey::Heartbeat);

impl HeartbeatRequest {
    fn to_wire(&self, _version: i16) -> kp::HeartbeatRequest {
        let mut wire = kp::HeartbeatRequest::default();
        wire.group_id = kp::GroupId(text(&self.group_id));
        wire.generation_id = self.generation_id;
        wire.member_id = text(&self.member_id);
        wire.group_instance_id = self.group_instance_id.as_deref().map(text);
        wire
    }

    fn from_wire(_version: i16, wire: kp::HeartbeatResponse) -> Result<ErrorResponse, KafkaError> {
        Ok(ErrorResponse {
            error: ErrorCode(wire.error_code),
        })
    }
}

request!(LeaveGroupRequest => ErrorResponse, ApiKey::LeaveGroup);

impl LeaveGroupRequest {
    fn to_wire(&self, version: i16) -> kp::LeaveGroupRequest {
        let mut wire = kp::LeaveGroupRequest::default();
        wire.group_id = kp::GroupId(text(&self.group_id));
        if version >= 3 {
            let mut member = kp::leave_group_request::MemberIdentity::default();
            member.member_id = text(&self.member_id);
            member.group_instance_id = self.group_instance_id.as_deref().map(text);
            wire.members = vec![member];
        } else {
            wire.member_id = text(&self.member_id);
        }
        wire
    }

    fn from_wire(_version: i16, wire: kp::LeaveGroupResponse) -> Result<ErrorResponse, KafkaError> {
        let member_error = wire
            .members
            .iter()
            .map(|m| m.error_code)
            .find(|code| *code != 0);
        Ok(ErrorResponse {
            error: ErrorCode(if wire.error_code != 0 {
                wire.error_code
            } else {
                member_error.unwrap_or(0)
            }),
        })
    }
}

request!(OffsetFetchRequest => OffsetFetchResponse, ApiKey::OffsetFetch);

impl OffsetFetchRequest {
    fn to_wire(&self, version: i16) -> kp::OffsetFetchRequest {
        let mut wire = kp::OffsetFetchRequest::default();
        if version >= 8 {
            let mut topic = kp::offset_fetch_request::OffsetFetchRequestTopics::default();
            topic.name = topic_name(&self.topic);
            topic.partition_indexes = self.partitions.clone();
            let mut group = kp::offset_fetch_request::OffsetFetchRequestGroup::default();
            group.group_id = kp::GroupId(text(&self.group_id));
            group.topics = Some(vec![topic]);
            wire.groups = vec![group];
        } else {
            let mut topic = kp::offset_fetch_request::OffsetFetchRequestTopic::default();
            topic.name = topic_name(&self.topic);
            topic.partition_indexes = self.partitions.clone();
            wire.group_id = kp::GroupId(text(&self.group_id));
            wire.topics = Some(vec![topic]);
        }
        wire
    }

    fn from_wire(
        version: i16,
        wire: kp::OffsetFetchResponse,
    ) -> Result<OffsetFetchResponse, KafkaError> {
        if version >= 8 {
            let group = wire.groups.into_iter().next().ok_or_else(|| {
                KafkaError::malformed(ApiKey::OffsetFetch.name(), "no group in response")
            })?;
            Ok(OffsetFetchResponse {
                error: ErrorCode(group.error_code),
                offsets: group
                    .topics
                    .into_iter()
                    .flat_map(|t| t.partitions)
                    .map(|p| CommittedOffset {
                        partition: p.partition_index,
                        error: ErrorCode(p.error_code),
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: owned_opt(p.metadata),
                    })
                    .collect(),
            })
        } else {
            Ok(OffsetFetchResponse {
                error: ErrorCode(wire.error_code),
                offsets: wire
                    .topics
                    .into_iter()
                    .flat_map(|t| t.partitions)
                    .map(|p| CommittedOffset {
                        partition: p.partition_index,
                        error: ErrorCode(p.error_code),
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: owned_opt(p.metadata),
                    })
                    .collect(),
            })
        }
    }
}

request!(OffsetCommitRequest => OffsetCommitResponse, ApiKey::OffsetCommit);

impl OffsetCommitRequest {
    fn to_wire(&self, _version: i16) -> kp::OffsetCommitRequest {
        let mut topic = kp::offset_commit_request::OffsetCommitRequestTopic::default();
        topic.name = topic_name(&self.topic);
        topic.partitions = self
            .offsets
            .iter()
            .map(|(index, offset, metadata)| {
                let mut partition =
                    kp::offset_commit_request::OffsetCommitRequestPartition::default();
                partition.partition_index = *index;
                partition.committed_offset = *offset;
                partition.committed_metadata = metadata.as_deref().map(text);
                partition
            })
            .collect();
        let mut wire = kp::OffsetCommitRequest::default();
        wire.group_id = kp::GroupId(text(&self.group_id));
        wire.generation_id_or_member_epoch = self.generation_id;
        wire.member_id = text(&self.member_id);
        wire.group_instance_id = self.group_instance_id.as_deref().map(text);
        wire.topics = vec![topic];
        wire
    }

    fn from_wire(
        _version: i16,
        wire: kp::OffsetCommitResponse,
    ) -> Result<OffsetCommitResponse, KafkaError> {
        Ok(OffsetCommitResponse {
            partitions: wire
                .topics
                .into_iter()
                .flat_map(|t| t.partitions)
                .map(|p| (p.partition_index, ErrorCode(p.error_code)))
                .collect(),
        })
    }
}

request!(InitProducerIdRequest => ProducerIdentity, ApiKey::InitProducerId);

impl InitProducerIdRequest {
    fn to_wire(&self, _version: i16) -> kp::InitProducerIdRequest {
        let mut wire = kp::InitProducerIdRequest::default();
        wire.transactional_id = self
            .transactional_id
            .as_deref()
            .map(|id| kp::TransactionalId(text(id)));
        wire.transaction_timeout_ms = millis(self.transaction_timeout);
        wire
    }

    fn from_wire(
        _version: i16,
        wire: kp::InitProducerIdResponse,
    ) -> Result<ProducerIdentity, KafkaError> {
        Ok(ProducerIdentity {
            error: ErrorCode(wire.error_code),
            producer_id: wire.producer_id.0,
            producer_epoch: wire.producer_epoch,
        })
    }
}

request!(CreateTopicsRequest => Vec<TopicResult>, ApiKey::CreateTopics);

impl CreateTopicsRequest {
    fn to_wire(&self, _version: i16) -> kp::CreateTopicsRequest {
        let mut wire = kp::CreateTopicsRequest::default();
        wire.timeout_ms = millis(self.timeout);
        wire.topics = self
            .topics
            .iter()
            .map(|t| {
                let mut topic = kp::create_topics_request::CreatableTopic::default();
                topic.name = topic_name(&t.name);
                topic.num_partitions = t.partitions;
                topic.replication_factor = t.replication_factor;
                topic.configs = t
                    .configs
                    .iter()
                    .map(|(name, value)| {
                        let mut config = kp::create_topics_request::CreatableTopicConfig::default();
                        config.name = text(name);
                        config.value = Some(text(value));
                        config
                    })
                    .collect();
                topic
            })
            .collect();
        wire
    }

    fn from_wire(
        _version: i16,
        wire: kp::CreateTopicsResponse,
    ) -> Result<Vec<TopicResult>, KafkaError> {
        Ok(wire
            .topics
            .into_iter()
            .map(|t| TopicResult {
                name: owned(t.name.0),
                error: ErrorCode(t.error_code),
                message: owned_opt(t.error_message),
            })
            .collect())
    }
}

request!(DeleteTopicsRequest => Vec<TopicResult>, ApiKey::DeleteTopics);

impl DeleteTopicsRequest {
    fn to_wire(&self, version: i16) -> kp::DeleteTopicsRequest {
        let mut wire = kp::DeleteTopicsRequest::default();
        wire.timeout_ms = millis(self.timeout);
        if version >= 6 {
            wire.topics = self
                .topics
                .iter()
                .map(|name| {
                    let mut topic = kp::delete_topics_request::DeleteTopicState::default();
                    topic.name = Some(topic_name(name));
                    topic
                })
                .collect();
        } else {
            wire.topic_names = self.topics.iter().map(|name| topic_name(name)).collect();
        }
        wire
    }

    fn from_wire(
        _version: i16,
        wire: kp::DeleteTopicsResponse,
    ) -> Result<Vec<TopicResult>, KafkaError> {
        Ok(wire
            .responses
            .into_iter()
            .map(|t| TopicResult {
                name: t.name.map(|n| owned(n.0)).unwrap_or_default(),
                error: ErrorCode(t.error_code),
                message: owned_opt(t.error_message),
            })
            .collect())
    }
}

request!(SaslHandshakeRequest => SaslHandshakeResponse, ApiKey::SaslHandshake);

impl SaslHandshakeRequest {
    fn to_wire(&self, _version: i16) -> kp::SaslHandshakeRequest {
        let mut wire = kp::SaslHandshakeRequest::default();
        wire.mechanism = text(&self.mechanism);
        wire
    }

    fn from_wire(
        _version: i16,
        wire: kp::SaslHandshakeResponse,
    ) -> Result<SaslHandshakeResponse, KafkaError> {
        Ok(SaslHandshakeResponse {
            error: ErrorCode(wire.error_code),
            mechanisms: wire.mechanisms.into_iter().map(owned).collect(),
        })
    }
}

request!(SaslAuthenticateRequest => SaslAuthenticateResponse, ApiKey::SaslAuthenticate);

impl SaslAuthenticateRequest {
    fn to_wire(&self, _version: i16) -> kp::SaslAuthenticateRequest {
        let mut wire = kp::SaslAuthenticateRequest::default();
        wire.auth_bytes = self.auth_bytes.clone();
        wire
    }

    fn from_wire(
        _version: i16,
        wire: kp::SaslAuthenticateResponse,
    ) -> Result<SaslAuthenticateResponse, KafkaError> {
        Ok(SaslAuthenticateResponse {
            error: ErrorCode(wire.error_code),
            message: owned_opt(wire.error_message),
            auth_bytes: wire.auth_bytes,
        })
    }
}

/// Decodes a response body of `api` at `version` through the schema check and the typed
/// decoder, discarding the result: the entry point of the fuzz target and property tests.
pub fn check_response(api: ApiKey, version: i16, body: Bytes) -> Result<(), KafkaError> {
    fn run<R: Request>(version: i16, body: Bytes) -> Result<(), KafkaError> {
        decode_response::<R>(version, body).map(|_| ())
    }
    match api {
        ApiKey::Produce => run::<ProduceRequest>(version, body),
        ApiKey::Fetch => run::<FetchRequest>(version, body),
        ApiKey::ListOffsets => run::<ListOffsetsRequest>(version, body),
        ApiKey::Metadata => run::<MetadataRequest>(version, body),
        ApiKey::OffsetCommit => run::<OffsetCommitRequest>(version, body),
        ApiKey::OffsetFetch => run::<OffsetFetchRequest>(version, body),
        ApiKey::FindCoordinator => run::<FindCoordinatorRequest>(version, body),
        ApiKey::JoinGroup => run::<JoinGroupRequest>(version, body),
        ApiKey::Heartbeat => run::<HeartbeatRequest>(version, body),
        ApiKey::LeaveGroup => run::<LeaveGroupRequest>(version, body),
        ApiKey::SyncGroup => run::<SyncGroupRequest>(version, body),
        ApiKey::SaslHandshake => run::<SaslHandshakeRequest>(version, body),
        ApiKey::ApiVersions => run::<ApiVersionsRequest>(version, body),
        ApiKey::CreateTopics => run::<CreateTopicsRequest>(version, body),
        ApiKey::DeleteTopics => run::<DeleteTopicsRequest>(version, body),
        ApiKey::InitProducerId => run::<InitProducerIdRequest>(version, body),
        ApiKey::DescribeConfigs => run::<DescribeConfigsRequest>(version, body),
        ApiKey::SaslAuthenticate => run::<SaslAuthenticateRequest>(version, body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{
        fetch_response, join_group_response, metadata_response, offset_fetch_response,
        produce_response,
    };
    use proptest::prelude::*;

    fn header(api: ApiKey, version: i16) -> BytesMut {
        let mut buf = BytesMut::new();
        let key = kp::ApiKey::try_from(api.code()).unwrap();
        if key.response_header_version(version) >= 1 {
            buf.put_u8(0);
        }
        buf
    }

    fn encoded<M: Encodable>(api: ApiKey, version: i16, message: &M) -> Bytes {
        let mut buf = header(api, version);
        message.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    fn default_response(api: ApiKey, version: i16) -> Bytes {
        macro_rules! default_of {
            ($t:ty) => {
                encoded(api, version, &<$t>::default())
            };
        }
        match api {
            ApiKey::Produce => default_of!(kp::ProduceResponse),
            ApiKey::Fetch => default_of!(kp::FetchResponse),
            ApiKey::ListOffsets => default_of!(kp::ListOffsetsResponse),
            ApiKey::Metadata => default_of!(kp::MetadataResponse),
            ApiKey::OffsetCommit => default_of!(kp::OffsetCommitResponse),
            ApiKey::OffsetFetch => default_of!(kp::OffsetFetchResponse),
            ApiKey::FindCoordinator => default_of!(kp::FindCoordinatorResponse),
            ApiKey::JoinGroup => default_of!(kp::JoinGroupResponse),
            ApiKey::Heartbeat => default_of!(kp::HeartbeatResponse),
            ApiKey::LeaveGroup => default_of!(kp::LeaveGroupResponse),
            ApiKey::SyncGroup => default_of!(kp::SyncGroupResponse),
            ApiKey::SaslHandshake => default_of!(kp::SaslHandshakeResponse),
            ApiKey::ApiVersions => default_of!(kp::ApiVersionsResponse),
            ApiKey::CreateTopics => default_of!(kp::CreateTopicsResponse),
            ApiKey::DeleteTopics => default_of!(kp::DeleteTopicsResponse),
            ApiKey::InitProducerId => default_of!(kp::InitProducerIdResponse),
            ApiKey::DescribeConfigs => default_of!(kp::DescribeConfigsResponse),
            ApiKey::SaslAuthenticate => default_of!(kp::SaslAuthenticateResponse),
        }
    }

    /// Responses with nested arrays, nullable fields and (in flexible versions) known tagged
    /// fields, as the protocol library encodes them.
    fn populated_responses() -> Vec<(ApiKey, i16, Bytes)> {
        let mut out = Vec::new();
        let (low, high) = client_versions(ApiKey::Metadata);
        for version in low..=high {
            let partition = metadata_response::MetadataResponsePartition::default()
                .with_partition_index(2)
                .with_leader_id(kp::BrokerId(111))
                .with_replica_nodes(vec![kp::BrokerId(111), kp::BrokerId(112)])
                .with_isr_nodes(vec![kp::BrokerId(111)]);
            let topic = metadata_response::MetadataResponseTopic::default()
                .with_name(Some(topic_name("topic")))
                .with_partitions(vec![partition.clone(), partition]);
            let topic = if version >= 10 {
                topic.with_topic_id(uuid::Uuid::from_u128(7))
            } else {
                topic
            };
            let broker = metadata_response::MetadataResponseBroker::default()
                .with_node_id(kp::BrokerId(111))
                .with_host(text("localhost"))
                .with_port(9092);
            let message = kp::MetadataResponse::default()
                .with_brokers(vec![broker])
                .with_topics(vec![topic]);
            out.push((
                ApiKey::Metadata,
                version,
                encoded(ApiKey::Metadata, version, &message),
            ));
        }
        let (low, high) = client_versions(ApiKey::Fetch);
        for version in low..=high {
            let mut partition = fetch_response::PartitionData::default()
                .with_partition_index(1)
                .with_high_watermark(10)
                .with_aborted_transactions(Some(vec![
                    fetch_response::AbortedTransaction::default()
                        .with_producer_id(kp::ProducerId(5))
                        .with_first_offset(3),
                ]));
            partition.records = Some(Bytes::from_static(b"batch bytes"));
            if version >= 12 {
                partition = partition.with_current_leader(
                    fetch_response::LeaderIdAndEpoch::default()
                        .with_leader_id(kp::BrokerId(3))
                        .with_leader_epoch(4),
                );
            }
            let topic =
                fetch_response::FetchableTopicResponse::default().with_partitions(vec![partition]);
            let topic = if version >= 13 {
                topic.with_topic_id(uuid::Uuid::from_u128(9))
            } else {
                topic.with_topic(topic_name("topic"))
            };
            let mut message = kp::FetchResponse::default().with_responses(vec![topic]);
            if version >= 16 {
                message = message.with_node_endpoints(vec![
                    fetch_response::NodeEndpoint::default()
                        .with_node_id(kp::BrokerId(3))
                        .with_host(text("h"))
                        .with_port(1),
                ]);
            }
            out.push((
                ApiKey::Fetch,
                version,
                encoded(ApiKey::Fetch, version, &message),
            ));
        }
        let (low, high) = client_versions(ApiKey::Produce);
        for version in low..=high {
            let mut partition = produce_response::PartitionProduceResponse::default()
                .with_index(0)
                .with_base_offset(42);
            if version >= 10 {
                partition = partition.with_current_leader(
                    produce_response::LeaderIdAndEpoch::default()
                        .with_leader_id(kp::BrokerId(2))
                        .with_leader_epoch(1),
                );
            }
            let topic = produce_response::TopicProduceResponse::default()
                .with_name(topic_name("topic"))
                .with_partition_responses(vec![partition]);
            let message = kp::ProduceResponse::default().with_responses(vec![topic]);
            out.push((
                ApiKey::Produce,
                version,
                encoded(ApiKey::Produce, version, &message),
            ));
        }
        let (low, high) = client_versions(ApiKey::JoinGroup);
        for version in low..=high {
            let member = join_group_response::JoinGroupResponseMember::default()
                .with_member_id(text("m"))
                .with_metadata(Bytes::from_static(b"meta"));
            let message = kp::JoinGroupResponse::default()
                .with_member_id(text("m"))
                .with_leader(text("m"))
                .with_members(vec![member.clone(), member]);
            out.push((
                ApiKey::JoinGroup,
                version,
                encoded(ApiKey::JoinGroup, version, &message),
            ));
        }
        let (low, high) = client_versions(ApiKey::OffsetFetch);
        for version in low..=high {
            let message = if version >= 8 {
                let partition = offset_fetch_response::OffsetFetchResponsePartitions::default()
                    .with_partition_index(1)
                    .with_committed_offset(5);
                let topic = offset_fetch_response::OffsetFetchResponseTopics::default()
                    .with_name(topic_name("topic"))
                    .with_partitions(vec![partition]);
                let group = offset_fetch_response::OffsetFetchResponseGroup::default()
                    .with_group_id(kp::GroupId(text("g")))
                    .with_topics(vec![topic]);
                kp::OffsetFetchResponse::default().with_groups(vec![group])
            } else {
                let partition = offset_fetch_response::OffsetFetchResponsePartition::default()
                    .with_partition_index(1)
                    .with_committed_offset(5)
                    .with_metadata(Some(text("md")));
                let topic = offset_fetch_response::OffsetFetchResponseTopic::default()
                    .with_name(topic_name("topic"))
                    .with_partitions(vec![partition]);
                kp::OffsetFetchResponse::default().with_topics(vec![topic])
            };
            out.push((
                ApiKey::OffsetFetch,
                version,
                encoded(ApiKey::OffsetFetch, version, &message),
            ));
        }
        out
    }

    #[test]
    fn every_api_has_versions_this_client_speaks() {
        for api in ApiKey::ALL {
            let (low, high) = client_versions(api);
            assert!(low <= high, "{api}: {low}..{high}");
        }
        assert_eq!(client_versions(ApiKey::InitProducerId).0, 3);
        assert_eq!(client_versions(ApiKey::ApiVersions).1, 3);
    }

    /// The schema walk followed by the library's decoder, without our conversions.
    fn walk_and_decode(api: ApiKey, version: i16, mut body: Bytes) -> Result<(), KafkaError> {
        let key = kp::ApiKey::try_from(api.code()).unwrap();
        if key.response_header_version(version) >= 1 {
            let skip = schema::skip_tagged_fields(&body).unwrap();
            let _ = body.split_to(skip);
        }
        macro_rules! decoded {
            ($t:ty) => {
                decode::<$t>(api, version, body).map(|_| ())
            };
        }
        match api {
            ApiKey::Produce => decoded!(kp::ProduceResponse),
            ApiKey::Fetch => decoded!(kp::FetchResponse),
            ApiKey::ListOffsets => decoded!(kp::ListOffsetsResponse),
            ApiKey::Metadata => decoded!(kp::MetadataResponse),
            ApiKey::OffsetCommit => decoded!(kp::OffsetCommitResponse),
            ApiKey::OffsetFetch => decoded!(kp::OffsetFetchResponse),
            ApiKey::FindCoordinator => decoded!(kp::FindCoordinatorResponse),
            ApiKey::JoinGroup => decoded!(kp::JoinGroupResponse),
            ApiKey::Heartbeat => decoded!(kp::HeartbeatResponse),
            ApiKey::LeaveGroup => decoded!(kp::LeaveGroupResponse),
            ApiKey::SyncGroup => decoded!(kp::SyncGroupResponse),
            ApiKey::SaslHandshake => decoded!(kp::SaslHandshakeResponse),
            ApiKey::ApiVersions => decoded!(kp::ApiVersionsResponse),
            ApiKey::CreateTopics => decoded!(kp::CreateTopicsResponse),
            ApiKey::DeleteTopics => decoded!(kp::DeleteTopicsResponse),
            ApiKey::InitProducerId => decoded!(kp::InitProducerIdResponse),
            ApiKey::DescribeConfigs => decoded!(kp::DescribeConfigsResponse),
            ApiKey::SaslAuthenticate => decoded!(kp::SaslAuthenticateResponse),
        }
    }

    #[test]
    fn schema_walk_accepts_what_the_protocol_library_encodes() {
        for api in ApiKey::ALL {
            let (low, high) = client_versions(api);
            for version in low..=high {
                let body = default_response(api, version);
                if let Err(error) = walk_and_decode(api, version, body) {
                    panic!("{api} v{version}: {error}");
                }
            }
        }
        for (api, version, body) in populated_responses() {
            if let Err(error) = walk_and_decode(api, version, body) {
                panic!("populated {api} v{version}: {error}");
            }
        }
    }

    #[test]
    fn populated_responses_decode_to_our_types() {
        for (api, version, body) in populated_responses() {
            match api {
                ApiKey::Metadata => {
                    let metadata = decode_response::<MetadataRequest>(version, body).unwrap();
                    assert_eq!(metadata.brokers[0].port, 9092);
                    assert_eq!(metadata.topics[0].partitions[0].replicas, [111, 112]);
                }
                ApiKey::Fetch => {
                    let fetch = decode_response::<FetchRequest>(version, body).unwrap();
                    let partition = &fetch.topics[0].partitions[0];
                    assert_eq!(partition.records, Bytes::from_static(b"batch bytes"));
                    assert_eq!(partition.aborted_transactions, [(5, 3)]);
                }
                ApiKey::Produce => {
                    let produce = decode_response::<ProduceRequest>(version, body).unwrap();
                    assert_eq!(produce.base_offset, 42);
                }
                ApiKey::OffsetFetch => {
                    let fetched = decode_response::<OffsetFetchRequest>(version, body).unwrap();
                    assert_eq!(fetched.offsets[0].offset, 5);
                }
                _ => {}
            }
        }
    }

    #[test]
    fn error_names_follow_kafka_spelling() {
        assert_eq!(
            super::super::error::error_name(6).as_deref(),
            Some("NOT_LEADER_OR_FOLLOWER")
        );
        assert_eq!(super::super::error::error_name(0), None);
        assert_eq!(ErrorCode(3).to_string(), "UNKNOWN_TOPIC_OR_PARTITION (3)");
        assert!(ErrorCode::NOT_LEADER_OR_FOLLOWER.is_retriable());
    }

    fn any_api() -> impl Strategy<Value = ApiKey> {
        proptest::sample::select(ApiKey::ALL.to_vec())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn random_response_bytes_are_errors_not_panics(
            api in any_api(),
            version in 0i16..20,
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let (low, high) = client_versions(api);
            let version = low + version % (high - low + 1);
            let _ = check_response(api, version, Bytes::from(bytes));
        }

        #[test]
        fn mutated_and_truncated_responses_are_errors_not_panics(
            pick in any::<proptest::sample::Index>(),
            at in any::<proptest::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<proptest::sample::Index>(),
        ) {
            let responses = populated_responses();
            let (api, version, body) = &responses[pick.index(responses.len())];
            let mut mutated = BytesMut::from(&body[..]);
            let index = at.index(mutated.len());
            mutated[index] = byte;
            let _ = check_response(*api, *version, mutated.freeze());
            let truncated = body.slice(..cut.index(body.len()));
            prop_assert!(check_response(*api, *version, truncated).is_err() || body.is_empty());
        }
    }
}
