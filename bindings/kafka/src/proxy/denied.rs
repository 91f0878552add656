//! Requests naming forbidden topics, answered the way a broker enforcing ACLs answers them:
//! each forbidden topic (or topic resource) gets TOPIC_AUTHORIZATION_FAILED in its own entry
//! of the answer, the allowed ones go to the broker, and the connection stays open.
//!
//! A request is split ([`split`]): the forbidden entries are taken out and remembered, the rest
//! is re-encoded and forwarded; the broker's answer then gets the remembered entries back
//! ([`merge`]). A request left with nothing to forward is answered here, without the broker.
//! Answers whose request named no topic but which list topics anyway (OffsetFetch for every
//! topic of a group) keep only the allowed ones.

use bytes::Bytes;
use kafka_protocol::messages as kp;
use kafka_protocol::protocol::{Decodable, StrBytes};
use uuid::Uuid;

use super::message::{decode_request, frame_with};
use crate::wire;

/// Kafka's TOPIC_AUTHORIZATION_FAILED.
pub(crate) const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
/// Kafka's CLUSTER_AUTHORIZATION_FAILED: altering a broker's (or any non-topic) configuration.
pub(crate) const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
/// Kafka's OPERATION_NOT_ATTEMPTED: the allowed partitions of a transaction request refused
/// for another partition's sake.
pub(crate) const OPERATION_NOT_ATTEMPTED: i16 = 55;
/// Kafka's config resource type of a topic.
const TOPIC_RESOURCE: i8 = 2;

/// One entry taken out of a request: a topic with its partitions, or a config resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Denied {
    /// The consumer group it belongs to (OffsetFetch from v8, which names several).
    pub group: Option<String>,
    /// The topic or resource name; `None` for a topic named by id only.
    pub name: Option<String>,
    pub id: Uuid,
    /// The config resource type (DescribeConfigs, AlterConfigs).
    pub resource_type: i8,
    pub partitions: Vec<i32>,
    /// The error its answer carries.
    pub error: i16,
}

impl Denied {
    fn topic(name: &str, partitions: impl IntoIterator<Item = i32>) -> Self {
        Self {
            group: None,
            name: Some(name.to_owned()),
            id: Uuid::nil(),
            resource_type: TOPIC_RESOURCE,
            partitions: partitions.into_iter().collect(),
            error: TOPIC_AUTHORIZATION_FAILED,
        }
    }

    fn resource(resource_type: i8, name: &StrBytes, error: i16) -> Self {
        Self {
            resource_type,
            error,
            ..Self::topic(name.as_str(), [])
        }
    }

    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }

    fn topic_name(&self) -> kp::TopicName {
        kp::TopicName(StrBytes::from_string(self.name().to_owned()))
    }

    fn message(&self) -> Option<StrBytes> {
        Some(StrBytes::from_static_str(
            if self.error == TOPIC_AUTHORIZATION_FAILED {
                "Topic authorization failed."
            } else {
                "Cluster authorization failed."
            },
        ))
    }
}

/// What becomes of a request.
#[derive(Debug)]
pub(crate) enum Split {
    /// Every entry is allowed: forward the request as it came.
    Unchanged,
    /// Forward `frame`, the request without `denied`.
    Stripped { frame: Bytes, denied: Vec<Denied> },
    /// Nothing is left to forward: answer every entry of `denied` here.
    Refused { denied: Vec<Denied> },
}

/// The APIs whose requests [`split`] takes apart.
pub(crate) const SPLIT: &[i16] = &[2, 8, 9, 19, 20, 21, 23, 24, 28, 32, 33, 37, 44];

fn name(topic: &kp::TopicName) -> &str {
    topic.0.as_str()
}

/// Takes the entries `allows` refuses out of `entries`, as `denied_of` describes them.
fn strip<T>(
    entries: &mut Vec<T>,
    allowed: impl Fn(&T) -> bool,
    denied_of: impl Fn(&T) -> Denied,
) -> Vec<Denied> {
    let mut denied = Vec::new();
    entries.retain(|entry| {
        let keep = allowed(entry);
        if !keep {
            denied.push(denied_of(entry));
        }
        keep
    });
    denied
}

/// The request re-encoded without its denied entries (`frame`'s header kept), or its refusal.
fn finish<M: kafka_protocol::protocol::Encodable>(
    frame: &Bytes,
    offset: usize,
    request: &M,
    version: i16,
    denied: Vec<Denied>,
    nothing_left: bool,
) -> Result<Split, String> {
    if denied.is_empty() {
        Ok(Split::Unchanged)
    } else if nothing_left {
        Ok(Split::Refused { denied })
    } else {
        Ok(Split::Stripped {
            frame: frame_with(&frame[4..offset], request, version)?,
            denied,
        })
    }
}

/// Splits a request of one of the [`SPLIT`] APIs into what the broker may see and what is
/// answered here. A malformed request is an error.
/// Splits a request whose `topics` each name a topic in `$name`, with partitions numbered by
/// `$partitions.$index` when the API names partitions.
macro_rules! split_topics {
    (@partitions $t:ident) => {
        Vec::<i32>::new()
    };
    (@partitions $t:ident, $partitions:ident . $index:ident) => {
        $t.$partitions.iter().map(|p| p.$index).collect::<Vec<i32>>()
    };
    ($api_key:expr, $version:expr, $frame:expr, $allowed:expr, $request:ty, $name:ident
        $(, $partitions:ident . $index:ident)?) => {{
        let (offset, mut r): (_, $request) = decode_request($api_key, $version, $frame)?;
        let denied = strip(
            &mut r.topics,
            |t| $allowed(&t.$name),
            |t| {
                let partitions = split_topics!(@partitions t $(, $partitions . $index)?);
                Denied::topic(name(&t.$name), partitions)
            },
        );
        let empty = r.topics.is_empty();
        finish($frame, offset, &r, $version, denied, empty)
    }};
}

/// Splits an AlterConfigs or IncrementalAlterConfigs request: only allowed topics' resources
/// reach the broker.
macro_rules! split_alter {
    ($api_key:expr, $version:expr, $frame:expr, $allows:expr, $request:ty) => {{
        let (offset, mut r): (_, $request) = decode_request($api_key, $version, $frame)?;
        let denied = strip(
            &mut r.resources,
            |c| c.resource_type == TOPIC_RESOURCE && $allows(c.resource_name.as_str()),
            |c| {
                Denied::resource(
                    c.resource_type,
                    &c.resource_name,
                    alter_error(c.resource_type),
                )
            },
        );
        let empty = r.resources.is_empty();
        finish($frame, offset, &r, $version, denied, empty)
    }};
}

pub(crate) fn split(
    api_key: i16,
    version: i16,
    frame: &Bytes,
    allows: &dyn Fn(&str) -> bool,
) -> Result<Split, String> {
    let topic_allowed = |topic: &kp::TopicName| allows(name(topic));
    match api_key {
        2 => split_topics!(
            api_key,
            version,
            frame,
            topic_allowed,
            kp::ListOffsetsRequest,
            name,
            partitions.partition_index
        ),
        8 => split_topics!(
            api_key,
            version,
            frame,
            topic_allowed,
            kp::OffsetCommitRequest,
            name,
            partitions.partition_index
        ),
        9 => {
            let (offset, mut r): (_, kp::OffsetFetchRequest) =
                decode_request(api_key, version, frame)?;
            let mut denied = Vec::new();
            if let Some(topics) = r.topics.as_mut() {
                denied = strip(
                    topics,
                    |t| topic_allowed(&t.name),
                    |t| Denied::topic(name(&t.name), t.partition_indexes.iter().copied()),
                );
            }
            for group in &mut r.groups {
                if let Some(topics) = group.topics.as_mut() {
                    let group_id = group.group_id.0.as_str().to_owned();
                    denied.extend(
                        strip(
                            topics,
                            |t| topic_allowed(&t.name),
                            |t| Denied::topic(name(&t.name), t.partition_indexes.iter().copied()),
                        )
                        .into_iter()
                        .map(|mut d| {
                            d.group = Some(group_id.clone());
                            d
                        }),
                    );
                }
            }
            let empty = if version < 8 {
                r.topics.as_ref().is_some_and(Vec::is_empty)
            } else {
                r.groups
                    .iter()
                    .all(|g| g.topics.as_ref().is_some_and(Vec::is_empty))
            };
            finish(frame, offset, &r, version, denied, empty)
        }
        19 => split_topics!(
            api_key,
            version,
            frame,
            topic_allowed,
            kp::CreateTopicsRequest,
            name
        ),
        20 => {
            let (offset, mut r): (_, kp::DeleteTopicsRequest) =
                decode_request(api_key, version, frame)?;
            let mut denied = strip(
                &mut r.topic_names,
                |t| topic_allowed(t),
                |t| Denied::topic(name(t), []),
            );
            denied.extend(strip(
                &mut r.topics,
                |t| t.name.as_ref().is_some_and(&topic_allowed),
                |t| Denied {
                    name: t.name.as_ref().map(|n| name(n).to_owned()),
                    id: t.topic_id,
                    ..Denied::topic("", [])
                },
            ));
            let empty = r.topic_names.is_empty() && r.topics.is_empty();
            finish(frame, offset, &r, version, denied, empty)
        }
        21 => split_topics!(
            api_key,
            version,
            frame,
            topic_allowed,
            kp::DeleteRecordsRequest,
            name,
            partitions.partition_index
        ),
        23 => split_topics!(
            api_key,
            version,
            frame,
            topic_allowed,
            kp::OffsetForLeaderEpochRequest,
            topic,
            partitions.partition
        ),
        24 => {
            // A transaction takes all its partitions or none: one forbidden topic refuses the
            // request, the allowed partitions answered OPERATION_NOT_ATTEMPTED, as Kafka does.
            let (_, r): (_, kp::AddPartitionsToTxnRequest) =
                decode_request(api_key, version, frame)?;
            if r.v3_and_below_topics.iter().all(|t| topic_allowed(&t.name)) {
                return Ok(Split::Unchanged);
            }
            let denied = r
                .v3_and_below_topics
                .iter()
                .map(|t| Denied {
                    error: if topic_allowed(&t.name) {
                        OPERATION_NOT_ATTEMPTED
                    } else {
                        TOPIC_AUTHORIZATION_FAILED
                    },
                    ..Denied::topic(name(&t.name), t.partitions.iter().copied())
                })
                .collect();
            Ok(Split::Refused { denied })
        }
        28 => split_topics!(
            api_key,
            version,
            frame,
            topic_allowed,
            kp::TxnOffsetCommitRequest,
            name,
            partitions.partition_index
        ),
        32 => {
            // Broker and logger configurations name no topic and may be read.
            let (offset, mut r): (_, kp::DescribeConfigsRequest) =
                decode_request(api_key, version, frame)?;
            let denied = strip(
                &mut r.resources,
                |c| c.resource_type != TOPIC_RESOURCE || allows(c.resource_name.as_str()),
                |c| {
                    Denied::resource(
                        c.resource_type,
                        &c.resource_name,
                        TOPIC_AUTHORIZATION_FAILED,
                    )
                },
            );
            let empty = r.resources.is_empty();
            finish(frame, offset, &r, version, denied, empty)
        }
        33 => split_alter!(api_key, version, frame, allows, kp::AlterConfigsRequest),
        44 => split_alter!(
            api_key,
            version,
            frame,
            allows,
            kp::IncrementalAlterConfigsRequest
        ),
        37 => split_topics!(
            api_key,
            version,
            frame,
            topic_allowed,
            kp::CreatePartitionsRequest,
            name
        ),
        _ => Err(format!("API key {api_key} is not split here")),
    }
}

/// Altering a non-topic resource (a broker's configuration) is the cluster's business, which
/// no topic allow-list grants.
fn alter_error(resource_type: i8) -> i16 {
    if resource_type == TOPIC_RESOURCE {
        TOPIC_AUTHORIZATION_FAILED
    } else {
        CLUSTER_AUTHORIZATION_FAILED
    }
}

/// An AlterConfigs or IncrementalAlterConfigs answer with the refused resources added.
macro_rules! merge_alter {
    ($api_key:expr, $version:expr, $header:expr, $body:expr, $denied:expr, $response:ty,
        $entry:ty) => {{
        let mut r: $response = decoded($api_key, $version, $body)?;
        for d in $denied {
            r.responses.push(
                <$entry>::default()
                    .with_error_code(d.error)
                    .with_error_message(d.message())
                    .with_resource_type(d.resource_type)
                    .with_resource_name(StrBytes::from_string(d.name().to_owned())),
            );
        }
        frame_with($header, &r, $version)
    }};
}

/// The broker's answer `body` (or, when `None`, an empty answer made here) with the `denied`
/// entries added, encoded after `header` (a response header, size prefix excluded). Topics an
/// OffsetFetch answer lists without having been asked are kept only when `allows` them.
pub(crate) fn merge(
    api_key: i16,
    version: i16,
    header: &[u8],
    body: Option<&Bytes>,
    denied: &[Denied],
    allows: &dyn Fn(&str) -> bool,
) -> Result<Bytes, String> {
    match api_key {
        2 => {
            let mut r: kp::ListOffsetsResponse = decoded(api_key, version, body)?;
            for d in denied {
                let partitions = d.partitions.iter().map(|&index| {
                    kp::list_offsets_response::ListOffsetsPartitionResponse::default()
                        .with_partition_index(index)
                        .with_error_code(d.error)
                        .with_timestamp(-1)
                        .with_offset(-1)
                        .with_leader_epoch(-1)
                });
                r.topics.push(
                    kp::list_offsets_response::ListOffsetsTopicResponse::default()
                        .with_name(d.topic_name())
                        .with_partitions(partitions.collect()),
                );
            }
            frame_with(header, &r, version)
        }
        8 => {
            let mut r: kp::OffsetCommitResponse = decoded(api_key, version, body)?;
            for d in denied {
                let partitions = d.partitions.iter().map(|&index| {
                    kp::offset_commit_response::OffsetCommitResponsePartition::default()
                        .with_partition_index(index)
                        .with_error_code(d.error)
                });
                r.topics.push(
                    kp::offset_commit_response::OffsetCommitResponseTopic::default()
                        .with_name(d.topic_name())
                        .with_partitions(partitions.collect()),
                );
            }
            frame_with(header, &r, version)
        }
        9 => {
            let mut r: kp::OffsetFetchResponse = decoded(api_key, version, body)?;
            r.topics.retain(|t| allows(name(&t.name)));
            for group in &mut r.groups {
                group.topics.retain(|t| allows(name(&t.name)));
            }
            for d in denied {
                if version < 8 {
                    let partitions = d.partitions.iter().map(|&index| {
                        kp::offset_fetch_response::OffsetFetchResponsePartition::default()
                            .with_partition_index(index)
                            .with_committed_offset(-1)
                            .with_committed_leader_epoch(-1)
                            .with_metadata(Some(StrBytes::default()))
                            .with_error_code(d.error)
                    });
                    r.topics.push(
                        kp::offset_fetch_response::OffsetFetchResponseTopic::default()
                            .with_name(d.topic_name())
                            .with_partitions(partitions.collect()),
                    );
                    continue;
                }
                let group_id = d.group.clone().unwrap_or_default();
                let index = match r
                    .groups
                    .iter()
                    .position(|g| g.group_id.0.as_str() == group_id)
                {
                    Some(index) => index,
                    None => {
                        r.groups.push(
                            kp::offset_fetch_response::OffsetFetchResponseGroup::default()
                                .with_group_id(kp::GroupId(StrBytes::from_string(group_id))),
                        );
                        r.groups.len() - 1
                    }
                };
                let partitions = d.partitions.iter().map(|&index| {
                    kp::offset_fetch_response::OffsetFetchResponsePartitions::default()
                        .with_partition_index(index)
                        .with_committed_offset(-1)
                        .with_committed_leader_epoch(-1)
                        .with_metadata(Some(StrBytes::default()))
                        .with_error_code(d.error)
                });
                r.groups[index].topics.push(
                    kp::offset_fetch_response::OffsetFetchResponseTopics::default()
                        .with_name(d.topic_name())
                        .with_partitions(partitions.collect()),
                );
            }
            frame_with(header, &r, version)
        }
        19 => {
            let mut r: kp::CreateTopicsResponse = decoded(api_key, version, body)?;
            for d in denied {
                r.topics.push(
                    kp::create_topics_response::CreatableTopicResult::default()
                        .with_name(d.topic_name())
                        .with_error_code(d.error)
                        .with_error_message(d.message())
                        .with_topic_config_error_code(d.error)
                        .with_num_partitions(-1)
                        .with_replication_factor(-1)
                        .with_configs(None),
                );
            }
            frame_with(header, &r, version)
        }
        20 => {
            let mut r: kp::DeleteTopicsResponse = decoded(api_key, version, body)?;
            for d in denied {
                r.responses.push(
                    kp::delete_topics_response::DeletableTopicResult::default()
                        .with_name(d.name.as_ref().map(|_| d.topic_name()))
                        .with_topic_id(d.id)
                        .with_error_code(d.error)
                        .with_error_message(d.message()),
                );
            }
            frame_with(header, &r, version)
        }
        21 => {
            let mut r: kp::DeleteRecordsResponse = decoded(api_key, version, body)?;
            for d in denied {
                let partitions = d.partitions.iter().map(|&index| {
                    kp::delete_records_response::DeleteRecordsPartitionResult::default()
                        .with_partition_index(index)
                        .with_low_watermark(-1)
                        .with_error_code(d.error)
                });
                r.topics.push(
                    kp::delete_records_response::DeleteRecordsTopicResult::default()
                        .with_name(d.topic_name())
                        .with_partitions(partitions.collect()),
                );
            }
            frame_with(header, &r, version)
        }
        23 => {
            let mut r: kp::OffsetForLeaderEpochResponse = decoded(api_key, version, body)?;
            for d in denied {
                let partitions = d.partitions.iter().map(|&index| {
                    kp::offset_for_leader_epoch_response::EpochEndOffset::default()
                        .with_partition(index)
                        .with_error_code(d.error)
                        .with_leader_epoch(-1)
                        .with_end_offset(-1)
                });
                r.topics.push(
                    kp::offset_for_leader_epoch_response::OffsetForLeaderTopicResult::default()
                        .with_topic(d.topic_name())
                        .with_partitions(partitions.collect()),
                );
            }
            frame_with(header, &r, version)
        }
        24 => {
            // Always answered here in full (never merged into a broker's answer).
            let mut r = kp::AddPartitionsToTxnResponse::default();
            for d in denied {
                let partitions = d.partitions.iter().map(|&index| {
                    kp::add_partitions_to_txn_response::AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(index)
                        .with_partition_error_code(d.error)
                });
                r.results_by_topic_v3_and_below.push(
                    kp::add_partitions_to_txn_response::AddPartitionsToTxnTopicResult::default()
                        .with_name(d.topic_name())
                        .with_results_by_partition(partitions.collect()),
                );
            }
            frame_with(header, &r, version)
        }
        28 => {
            let mut r: kp::TxnOffsetCommitResponse = decoded(api_key, version, body)?;
            for d in denied {
                let partitions = d.partitions.iter().map(|&index| {
                    kp::txn_offset_commit_response::TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(index)
                        .with_error_code(d.error)
                });
                r.topics.push(
                    kp::txn_offset_commit_response::TxnOffsetCommitResponseTopic::default()
                        .with_name(d.topic_name())
                        .with_partitions(partitions.collect()),
                );
            }
            frame_with(header, &r, version)
        }
        32 => {
            let mut r: kp::DescribeConfigsResponse = decoded(api_key, version, body)?;
            for d in denied {
                r.results.push(
                    kp::describe_configs_response::DescribeConfigsResult::default()
                        .with_error_code(d.error)
                        .with_error_message(d.message())
                        .with_resource_type(d.resource_type)
                        .with_resource_name(StrBytes::from_string(d.name().to_owned())),
                );
            }
            frame_with(header, &r, version)
        }
        33 => merge_alter!(
            api_key,
            version,
            header,
            body,
            denied,
            kp::AlterConfigsResponse,
            kp::alter_configs_response::AlterConfigsResourceResponse
        ),
        44 => merge_alter!(
            api_key,
            version,
            header,
            body,
            denied,
            kp::IncrementalAlterConfigsResponse,
            kp::incremental_alter_configs_response::AlterConfigsResourceResponse
        ),
        37 => {
            let mut r: kp::CreatePartitionsResponse = decoded(api_key, version, body)?;
            for d in denied {
                r.results.push(
                    kp::create_partitions_response::CreatePartitionsTopicResult::default()
                        .with_name(d.topic_name())
                        .with_error_code(d.error)
                        .with_error_message(d.message()),
                );
            }
            frame_with(header, &r, version)
        }
        _ => Err(format!("API key {api_key} is not merged here")),
    }
}

/// The broker's answer decoded after the schema check, or an empty one.
fn decoded<M: Decodable + Default>(
    api_key: i16,
    version: i16,
    body: Option<&Bytes>,
) -> Result<M, String> {
    let Some(body) = body else {
        return Ok(M::default());
    };
    wire::check_response_schema(api_key, version, body)?;
    M::decode(&mut body.clone(), version).map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::protocol::Encodable;

    use super::super::message::request_frame as request;

    fn only_orders(topic: &str) -> bool {
        topic == "orders"
    }

    fn topic(text: &str) -> kp::TopicName {
        kp::TopicName(StrBytes::from_string(text.to_owned()))
    }

    /// A response frame of `message` and where its body starts.
    fn response<M: Encodable>(api_key: i16, version: i16, message: &M) -> (Bytes, usize) {
        super::super::message::response_for_test(api_key, version, message)
    }

    fn commit(topics: &[&str]) -> kp::OffsetCommitRequest {
        let mut r = kp::OffsetCommitRequest::default();
        r.group_id = kp::GroupId(StrBytes::from_static_str("g"));
        for name in topics {
            r.topics.push(
                kp::offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(topic(name))
                    .with_partitions(vec![
                        kp::offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(5),
                    ]),
            );
        }
        r
    }

    #[test]
    fn a_commit_naming_a_forbidden_topic_reaches_the_broker_without_it() {
        for version in [2, 7, 8, 9] {
            let frame = request(8, version, &commit(&["orders", "audit"]));
            let Split::Stripped {
                frame: stripped,
                denied,
            } = split(8, version, &frame, &only_orders).unwrap()
            else {
                panic!("v{version}: not stripped");
            };
            let (_, sent): (_, kp::OffsetCommitRequest) =
                decode_request(8, version, &stripped).unwrap();
            assert_eq!(sent.topics.len(), 1);
            assert_eq!(name(&sent.topics[0].name), "orders");
            assert_eq!(sent.group_id.0.as_str(), "g");

            // The broker answers for orders; the client hears about both.
            let mut answer = kp::OffsetCommitResponse::default();
            answer.topics.push(
                kp::offset_commit_response::OffsetCommitResponseTopic::default()
                    .with_name(topic("orders"))
                    .with_partitions(vec![
                        kp::offset_commit_response::OffsetCommitResponsePartition::default(),
                    ]),
            );
            let (frame, offset) = response(8, version, &answer);
            let body = frame.slice(offset..);
            let merged = merge(
                8,
                version,
                &frame[4..offset],
                Some(&body),
                &denied,
                &only_orders,
            )
            .unwrap();
            let decoded =
                kp::OffsetCommitResponse::decode(&mut merged.slice(offset..), version).unwrap();
            let seen: Vec<_> = decoded
                .topics
                .iter()
                .map(|t| (name(&t.name).to_owned(), t.partitions[0].error_code))
                .collect();
            assert_eq!(
                seen,
                vec![
                    ("orders".into(), 0),
                    ("audit".into(), TOPIC_AUTHORIZATION_FAILED)
                ],
                "v{version}"
            );
        }
    }

    #[test]
    fn a_request_naming_only_forbidden_topics_is_answered_here() {
        let version = 5;
        let mut create = kp::CreateTopicsRequest::default();
        create.topics.push(
            kp::create_topics_request::CreatableTopic::default()
                .with_name(topic("audit"))
                .with_num_partitions(1),
        );
        let frame = request(19, version, &create);
        let Split::Refused { denied } = split(19, version, &frame, &only_orders).unwrap() else {
            panic!("not refused");
        };
        let header = super::super::message::response_header(19, version, 7).unwrap();
        let answer = merge(19, version, &header, None, &denied, &only_orders).unwrap();
        let offset = 4 + header.len();
        let decoded =
            kp::CreateTopicsResponse::decode(&mut answer.slice(offset..), version).unwrap();
        assert_eq!(decoded.topics.len(), 1);
        assert_eq!(name(&decoded.topics[0].name), "audit");
        assert_eq!(decoded.topics[0].error_code, TOPIC_AUTHORIZATION_FAILED);
        // The frame's size prefix counts what follows it.
        assert_eq!(
            i32::from_be_bytes([answer[0], answer[1], answer[2], answer[3]]) as usize,
            answer.len() - 4
        );

        // Allowed topics only: forwarded as they came.
        let frame = request(8, 8, &commit(&["orders"]));
        assert!(matches!(
            split(8, 8, &frame, &only_orders).unwrap(),
            Split::Unchanged
        ));
    }

    #[test]
    fn every_topic_of_a_group_lists_only_the_allowed_ones() {
        for version in [2, 5, 7, 8, 9] {
            let mut fetch = kp::OffsetFetchRequest::default();
            if version < 8 {
                fetch.group_id = kp::GroupId(StrBytes::from_static_str("g"));
                fetch.topics = None;
            } else {
                fetch.groups.push(
                    kp::offset_fetch_request::OffsetFetchRequestGroup::default()
                        .with_group_id(kp::GroupId(StrBytes::from_static_str("g")))
                        .with_topics(None),
                );
            }
            let frame = request(9, version, &fetch);
            assert!(matches!(
                split(9, version, &frame, &only_orders).unwrap(),
                Split::Unchanged
            ));
            let mut answer = kp::OffsetFetchResponse::default();
            for name in ["orders", "audit"] {
                if version < 8 {
                    answer.topics.push(
                        kp::offset_fetch_response::OffsetFetchResponseTopic::default()
                            .with_name(topic(name)),
                    );
                }
            }
            if version >= 8 {
                answer.groups.push(
                    kp::offset_fetch_response::OffsetFetchResponseGroup::default()
                        .with_group_id(kp::GroupId(StrBytes::from_static_str("g")))
                        .with_topics(
                            ["orders", "audit"]
                                .iter()
                                .map(|n| {
                                    kp::offset_fetch_response::OffsetFetchResponseTopics::default()
                                        .with_name(topic(n))
                                })
                                .collect(),
                        ),
                );
            }
            let (frame, offset) = response(9, version, &answer);
            let body = frame.slice(offset..);
            let merged = merge(
                9,
                version,
                &frame[4..offset],
                Some(&body),
                &[],
                &only_orders,
            )
            .unwrap();
            let decoded =
                kp::OffsetFetchResponse::decode(&mut merged.slice(offset..), version).unwrap();
            let listed: Vec<String> = if version < 8 {
                decoded
                    .topics
                    .iter()
                    .map(|t| name(&t.name).to_owned())
                    .collect()
            } else {
                decoded.groups[0]
                    .topics
                    .iter()
                    .map(|t| name(&t.name).to_owned())
                    .collect()
            };
            assert_eq!(listed, vec!["orders".to_owned()], "v{version}");
        }
    }

    #[test]
    fn broker_configs_may_be_read_but_not_altered() {
        let version = 1;
        let mut describe = kp::DescribeConfigsRequest::default();
        for (resource_type, resource) in [(4, "1"), (2, "audit"), (2, "orders")] {
            describe.resources.push(
                kp::describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(resource_type)
                    .with_resource_name(StrBytes::from_static_str(resource)),
            );
        }
        let frame = request(32, version, &describe);
        let Split::Stripped { frame, denied } = split(32, version, &frame, &only_orders).unwrap()
        else {
            panic!("not stripped");
        };
        let (_, sent): (_, kp::DescribeConfigsRequest) =
            decode_request(32, version, &frame).unwrap();
        assert_eq!(sent.resources.len(), 2, "the broker and orders");
        assert_eq!(denied.len(), 1);
        assert_eq!(denied[0].error, TOPIC_AUTHORIZATION_FAILED);

        let mut alter = kp::IncrementalAlterConfigsRequest::default();
        alter.resources.push(
            kp::incremental_alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(StrBytes::from_static_str("1")),
        );
        let frame = request(44, 0, &alter);
        let Split::Refused { denied } = split(44, 0, &frame, &only_orders).unwrap() else {
            panic!("not refused");
        };
        assert_eq!(denied[0].error, CLUSTER_AUTHORIZATION_FAILED);
    }

    #[test]
    fn a_transaction_with_a_forbidden_topic_adds_no_partition() {
        let version = 3;
        let mut add = kp::AddPartitionsToTxnRequest::default();
        add.v3_and_below_transactional_id = kp::TransactionalId(StrBytes::from_static_str("tx"));
        for name in ["orders", "audit"] {
            add.v3_and_below_topics.push(
                kp::add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                    .with_name(topic(name))
                    .with_partitions(vec![0]),
            );
        }
        let frame = request(24, version, &add);
        let Split::Refused { denied } = split(24, version, &frame, &only_orders).unwrap() else {
            panic!("not refused");
        };
        let errors: Vec<_> = denied.iter().map(|d| (d.name(), d.error)).collect();
        assert_eq!(
            errors,
            vec![
                ("orders", OPERATION_NOT_ATTEMPTED),
                ("audit", TOPIC_AUTHORIZATION_FAILED)
            ]
        );
    }

    #[test]
    fn a_malformed_request_is_an_error() {
        let mut frame = BytesMut::new();
        frame.put_i32(12);
        frame.put_i16(8);
        frame.put_i16(8);
        frame.put_i32(1);
        frame.put_i16(-1);
        frame.put_i16(0x7fff);
        for api_key in SPLIT {
            assert!(split(*api_key, 1, &frame.clone().freeze(), &only_orders).is_err());
        }
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_are_errors_not_panics(
            api in proptest::sample::select(SPLIT.to_vec()),
            version in 0i16..12,
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
        ) {
            let body = Bytes::from(body);
            let _ = merge(api, version, &[0, 0, 0, 7], Some(&body), &[], &only_orders);
            let frame = super::super::message::raw_request(api, version, &body);
            let _ = split(api, version, &frame, &only_orders);
        }
    }
}
