//! Topic allow-lists: a proxy with `routes` lets a client reach only the topics some route
//! matching the topic (`when: [{topic: ...}]`) and holding the client's guard sessions
//! (`guarded`) allows. The binding-level `exit`, as in every binding, is a last route that
//! allows every topic.
//!
//! A forbidden topic is answered as a broker enforcing ACLs answers it: the request goes to
//! the broker without it, the answer gets it back with TOPIC_AUTHORIZATION_FAILED, and the
//! connection stays open. A request naming only forbidden topics is answered by the proxy
//! without reaching the broker. Requests naming only allowed topics pass as the same bytes.
//! Every API key a proxy with routes forwards, and what it does with topics:
//!
//! | Key | API | Versions | Topics |
//! |----:|-----|----------|--------|
//! | 0 | Produce | broker's | forbidden topics' partitions answered TOPIC_AUTHORIZATION_FAILED |
//! | 1 | Fetch | up to v12 (v13 names topics by id) | same |
//! | 2 | ListOffsets | up to the schema's | same |
//! | 3 | Metadata | up to the schema's | named forbidden topics answered TOPIC_AUTHORIZATION_FAILED, never sent (no auto-creation); every-topic answers keep the allowed ones |
//! | 8 | OffsetCommit | same | forbidden partitions answered TOPIC_AUTHORIZATION_FAILED |
//! | 9 | OffsetFetch | same | same; every topic of a group (null list): the allowed ones only |
//! | 10 | FindCoordinator | broker's | none (brokers rewritten) |
//! | 11 | JoinGroup | up to the answer schema's | members' subscriptions keep allowed topics |
//! | 12, 13 | Heartbeat, LeaveGroup | broker's | none |
//! | 14 | SyncGroup | up to the answer schema's | the assignment keeps allowed topics |
//! | 15 | DescribeGroups | up to the answer schema's | members' subscriptions and assignments keep allowed topics |
//! | 16 | ListGroups | broker's | none |
//! | 17, 36 | SaslHandshake, SaslAuthenticate | see [`super::auth`] | none |
//! | 18 | ApiVersions | any | lists only this table's keys and versions |
//! | 19 | CreateTopics | up to the schema's | forbidden names answered TOPIC_AUTHORIZATION_FAILED |
//! | 20 | DeleteTopics | same | forbidden names, and topics named by id only, answered TOPIC_AUTHORIZATION_FAILED |
//! | 21 | DeleteRecords | same | forbidden partitions answered TOPIC_AUTHORIZATION_FAILED |
//! | 22 | InitProducerId | broker's | none |
//! | 23 | OffsetForLeaderEpoch | up to the schema's | forbidden partitions answered TOPIC_AUTHORIZATION_FAILED |
//! | 24 | AddPartitionsToTxn | up to v3 (v4 is for brokers) | one forbidden topic refuses the whole request: TOPIC_AUTHORIZATION_FAILED, the others OPERATION_NOT_ATTEMPTED |
//! | 25, 26 | AddOffsetsToTxn, EndTxn | broker's | none |
//! | 28 | TxnOffsetCommit | up to the schema's | forbidden partitions answered TOPIC_AUTHORIZATION_FAILED |
//! | 32 | DescribeConfigs | same | forbidden topic resources answered TOPIC_AUTHORIZATION_FAILED; broker resources pass |
//! | 33, 44 | AlterConfigs, IncrementalAlterConfigs | same | forbidden topic resources TOPIC_AUTHORIZATION_FAILED; any other resource (a broker's) CLUSTER_AUTHORIZATION_FAILED |
//! | 37 | CreatePartitions | same | forbidden topics answered TOPIC_AUTHORIZATION_FAILED |
//! | 42 | DeleteGroups | broker's | none |
//! | 60 | DescribeCluster | broker's | none (brokers rewritten) |
//!
//! Every other API key (ACLs, quotas, partition reassignment, the KIP-848 consumer group
//! protocol (ConsumerGroupHeartbeat, ConsumerGroupDescribe), whose assignments name topics by
//! id, inter-broker APIs, unknown keys) is left out of the ApiVersions answer, so clients never
//! use it, and closes the connection when sent anyway, as a broker does with an API it does not
//! offer; so does a version above the ones in this table.

use std::collections::HashSet;

use bytes::Bytes;
use kafka_protocol::messages as kp;
use kafka_protocol::protocol::StrBytes;
use zilla_engine::guard::Authorization;
use zilla_engine::pattern::Pattern;
use zilla_engine::route::Routes;

use super::denied::{self, Denied, Split, TOPIC_AUTHORIZATION_FAILED};
use super::frame::RequestHeader;
use super::message::{decode_request, frame_with, response_header};

/// Fetch names topics by id from v13; the allow-list reads names, so Fetch stops at v12.
const FETCH_BY_NAME: i16 = 12;

/// AddPartitionsToTxn from v4 batches transactions for brokers; clients use v3 and below.
const ADD_PARTITIONS_BY_CLIENT: i16 = 3;

/// JoinGroup, SyncGroup and DescribeGroups: their answers name topics in members' data.
const MEMBERS: &[i16] = &[11, 14, 15];

/// The APIs a proxy with topic routes forwards: those without topics, and those whose topics
/// are checked here.
const FORWARDED: &[i16] = &[
    0,  // Produce
    1,  // Fetch
    2,  // ListOffsets
    3,  // Metadata
    8,  // OffsetCommit
    9,  // OffsetFetch
    10, // FindCoordinator
    11, // JoinGroup
    12, // Heartbeat
    13, // LeaveGroup
    14, // SyncGroup
    15, // DescribeGroups
    16, // ListGroups
    17, // SaslHandshake
    18, // ApiVersions
    19, // CreateTopics
    20, // DeleteTopics
    21, // DeleteRecords
    22, // InitProducerId
    23, // OffsetForLeaderEpoch
    24, // AddPartitionsToTxn (v3 and below: v4 and up are for brokers)
    25, // AddOffsetsToTxn (names a group, no topic)
    26, // EndTxn
    28, // TxnOffsetCommit
    32, // DescribeConfigs
    33, // AlterConfigs
    36, // SaslAuthenticate
    37, // CreatePartitions
    42, // DeleteGroups
    44, // IncrementalAlterConfigs
    60, // DescribeCluster
];

/// Whether a proxy with topic routes forwards `api_key`, and the highest version it reads.
/// `None`: the API is not forwarded. `Some(None)`: forwarded without looking into it.
pub(crate) fn forwarded(api_key: i16) -> Option<Option<i16>> {
    if !FORWARDED.contains(&api_key) {
        return None;
    }
    Some(match crate::wire::request_schema_versions(api_key) {
        Some((_, max)) if api_key == 1 => Some(max.min(FETCH_BY_NAME)),
        Some((_, max)) if api_key == 24 => Some(max.min(ADD_PARTITIONS_BY_CLIENT)),
        Some((_, max)) => Some(max),
        // Answers naming group members are decoded: up to their schema's versions.
        None if MEMBERS.contains(&api_key) => {
            crate::wire::response_schema_versions(api_key).map(|(_, max)| max)
        }
        None => None,
    })
}

/// The compiled routes: a topic pattern per `when` entry (none for any topic).
pub(crate) type TopicRoutes = Routes<Option<Pattern>, (), ()>;

/// Which topics which client may reach.
#[derive(Debug)]
pub(crate) struct TopicAccess {
    routes: TopicRoutes,
}

impl TopicAccess {
    pub(crate) fn new(routes: TopicRoutes) -> Self {
        Self { routes }
    }

    /// Whether a client holding `authorization` may reach `topic`.
    pub(crate) fn allows(&self, topic: &str, authorization: &Authorization) -> bool {
        self.routes
            .resolve(Some(authorization), |pattern| {
                pattern
                    .as_ref()
                    .is_none_or(|pattern| pattern.matches(topic))
            })
            .is_some()
    }
}

/// What to do with a request.
#[derive(Debug)]
pub(crate) enum Checked {
    /// Forward `frame` (or the request as it came), fixing the answer up with `fixup`.
    Forward {
        frame: Option<Bytes>,
        fixup: Option<Fixup>,
    },
    /// Answer with this response frame without asking the broker: every topic the request
    /// names is forbidden.
    Answer(Bytes),
    /// Close the connection, for this reason.
    Refuse(String),
}

impl Checked {
    fn unchanged() -> Self {
        Self::Forward {
            frame: None,
            fixup: None,
        }
    }
}

/// How an answer is fixed up for the topics left out of its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fixup {
    /// Metadata: keep `requested` topics only (every allowed one when `None`), then name
    /// `denied` with TOPIC_AUTHORIZATION_FAILED.
    Metadata {
        requested: Option<Vec<String>>,
        denied: Vec<String>,
    },
    /// Produce: these topics' partitions get TOPIC_AUTHORIZATION_FAILED.
    Produce { denied: Vec<(String, Vec<i32>)> },
    /// Fetch: these topics' partitions get TOPIC_AUTHORIZATION_FAILED.
    Fetch { denied: Vec<(String, Vec<i32>)> },
    /// JoinGroup, SyncGroup, DescribeGroups: members' topics narrowed to the allowed ones.
    Members { api_key: i16 },
    /// Another API: the `denied` entries are added to the answer ([`denied::merge`]).
    Denied { api_key: i16, denied: Vec<Denied> },
}

fn name(topic: &kp::TopicName) -> &str {
    topic.0.as_str()
}

fn topic_name(text: &str) -> kp::TopicName {
    kp::TopicName(StrBytes::from_string(text.to_owned()))
}

/// Checks one request against the allow-list.
pub(crate) fn check(
    access: &TopicAccess,
    authorization: &Authorization,
    header: RequestHeader,
    frame: &Bytes,
) -> Checked {
    let version = header.api_version;
    let Some(highest) = forwarded(header.api_key) else {
        return Checked::Refuse(format!(
            "API key {} is not forwarded by a proxy with topic routes",
            header.api_key
        ));
    };
    if highest.is_some_and(|highest| version > highest) {
        return Checked::Refuse(format!(
            "API key {} v{version} is above the v{} read here",
            header.api_key,
            highest.unwrap_or_default()
        ));
    }
    let allows = |topic: &str| access.allows(topic, authorization);
    let result = match header.api_key {
        3 => metadata(frame, version, &allows),
        0 => produce(frame, version, &allows),
        1 => fetch(frame, version, &allows),
        api_key if denied::SPLIT.contains(&api_key) => {
            denied::split(api_key, version, frame, &allows).and_then(|split| match split {
                // OffsetFetch answers may list topics nobody named (every topic of a group).
                Split::Unchanged if api_key == 9 => Ok(Checked::Forward {
                    frame: None,
                    fixup: Some(Fixup::Denied {
                        api_key,
                        denied: Vec::new(),
                    }),
                }),
                Split::Unchanged => Ok(Checked::unchanged()),
                Split::Stripped { frame, denied } => Ok(Checked::Forward {
                    frame: Some(frame),
                    fixup: Some(Fixup::Denied { api_key, denied }),
                }),
                Split::Refused { denied } => {
                    let header = response_header(api_key, version, header.correlation_id)?;
                    denied::merge(api_key, version, &header, None, &denied, &allows)
                        .map(Checked::Answer)
                }
            })
        }
        api_key if MEMBERS.contains(&api_key) => Ok(Checked::Forward {
            frame: None,
            fixup: Some(Fixup::Members { api_key }),
        }),
        _ => Ok(Checked::unchanged()),
    };
    result.unwrap_or_else(Checked::Refuse)
}

fn metadata(frame: &Bytes, version: i16, allows: &dyn Fn(&str) -> bool) -> Result<Checked, String> {
    let (offset, mut request): (usize, kp::MetadataRequest) = decode_request(3, version, frame)?;
    let every = match &request.topics {
        None => true,
        Some(topics) => version == 0 && topics.is_empty(),
    };
    if every {
        return Ok(Checked::Forward {
            frame: None,
            fixup: Some(Fixup::Metadata {
                requested: None,
                denied: Vec::new(),
            }),
        });
    }
    let topics = request.topics.take().unwrap_or_default();
    let mut kept = Vec::with_capacity(topics.len());
    let mut requested = Vec::with_capacity(topics.len());
    let mut denied = Vec::new();
    for topic in topics {
        let Some(topic_name) = topic.name.as_ref().map(|n| name(n).to_owned()) else {
            return Ok(Checked::Refuse("Metadata names a topic by id only".into()));
        };
        if allows(&topic_name) {
            requested.push(topic_name);
            kept.push(topic);
        } else {
            denied.push(topic_name);
        }
    }
    if denied.is_empty() {
        return Ok(Checked::Forward {
            frame: None,
            fixup: Some(Fixup::Metadata {
                requested: Some(requested),
                denied,
            }),
        });
    }
    // A denied topic never reaches the broker, which could otherwise create it.
    request.topics = Some(kept);
    let frame = frame_with(&frame[4..offset], &request, version)?;
    Ok(Checked::Forward {
        frame: Some(frame),
        fixup: Some(Fixup::Metadata {
            requested: Some(requested),
            denied,
        }),
    })
}

/// Removes the topics `allows` refuses from a request's `topics`, and returns each removed
/// topic's name and partitions (nothing when every topic is allowed).
fn retain_allowed<T>(
    topics: &mut Vec<T>,
    allows: &dyn Fn(&str) -> bool,
    topic_name: impl Fn(&T) -> &str,
    partitions: impl Fn(&T) -> Vec<i32>,
) -> Vec<(String, Vec<i32>)> {
    let mut denied = Vec::new();
    topics.retain(|topic| {
        let allowed = allows(topic_name(topic));
        if !allowed {
            denied.push((topic_name(topic).to_owned(), partitions(topic)));
        }
        allowed
    });
    denied
}

fn produce(frame: &Bytes, version: i16, allows: &dyn Fn(&str) -> bool) -> Result<Checked, String> {
    let (offset, mut request): (usize, kp::ProduceRequest) = decode_request(0, version, frame)?;
    let denied = retain_allowed(
        &mut request.topic_data,
        allows,
        |topic| name(&topic.name),
        |topic| topic.partition_data.iter().map(|p| p.index).collect(),
    );
    if denied.is_empty() {
        return Ok(Checked::unchanged());
    }
    let frame = frame_with(&frame[4..offset], &request, version)?;
    Ok(Checked::Forward {
        frame: Some(frame),
        fixup: Some(Fixup::Produce { denied }),
    })
}

fn fetch(frame: &Bytes, version: i16, allows: &dyn Fn(&str) -> bool) -> Result<Checked, String> {
    let (offset, mut request): (usize, kp::FetchRequest) = decode_request(1, version, frame)?;
    let denied = retain_allowed(
        &mut request.topics,
        allows,
        |topic| name(&topic.topic),
        |topic| topic.partitions.iter().map(|p| p.partition).collect(),
    );
    if denied.is_empty() {
        return Ok(Checked::unchanged());
    }
    let frame = frame_with(&frame[4..offset], &request, version)?;
    Ok(Checked::Forward {
        frame: Some(frame),
        fixup: Some(Fixup::Fetch { denied }),
    })
}

/// Applies a Metadata fixup to the topics of a response about to be encoded.
pub(crate) fn fix_metadata(
    fixup: &Fixup,
    topics: &mut Vec<kp::metadata_response::MetadataResponseTopic>,
    allows: &dyn Fn(&str) -> bool,
) {
    let Fixup::Metadata { requested, denied } = fixup else {
        return;
    };
    match requested {
        Some(requested) => {
            let requested: HashSet<&str> = requested.iter().map(String::as_str).collect();
            topics.retain(|topic| {
                topic
                    .name
                    .as_ref()
                    .is_some_and(|topic| requested.contains(name(topic)))
            });
        }
        None => topics.retain(|topic| topic.name.as_ref().is_some_and(|topic| allows(name(topic)))),
    }
    for topic in denied {
        let mut refused = kp::metadata_response::MetadataResponseTopic::default();
        refused.error_code = TOPIC_AUTHORIZATION_FAILED;
        refused.name = Some(topic_name(topic));
        refused.topic_authorized_operations = i32::MIN;
        topics.push(refused);
    }
}

/// Applies a Produce or Fetch fixup to a response frame whose body starts at `offset`.
pub(crate) fn fix_records(
    fixup: &Fixup,
    version: i16,
    frame: &Bytes,
    offset: usize,
) -> Result<Bytes, String> {
    let header = &frame[4..offset];
    let body = frame.slice(offset..);
    match fixup {
        Fixup::Produce { denied } => {
            crate::wire::check_response_schema(0, version, &body)?;
            let mut response =
                <kp::ProduceResponse as kafka_protocol::protocol::Decodable>::decode(
                    &mut body.clone(),
                    version,
                )
                .map_err(|error| error.to_string())?;
            for (topic, partitions) in denied {
                let mut refused = kp::produce_response::TopicProduceResponse::default();
                refused.name = topic_name(topic);
                for &index in partitions {
                    let mut partition = kp::produce_response::PartitionProduceResponse::default();
                    partition.index = index;
                    partition.error_code = TOPIC_AUTHORIZATION_FAILED;
                    partition.base_offset = -1;
                    partition.log_append_time_ms = -1;
                    partition.log_start_offset = -1;
                    refused.partition_responses.push(partition);
                }
                response.responses.push(refused);
            }
            frame_with(header, &response, version)
        }
        Fixup::Fetch { denied } => {
            crate::wire::check_response_schema(1, version, &body)?;
            let mut response = <kp::FetchResponse as kafka_protocol::protocol::Decodable>::decode(
                &mut body.clone(),
                version,
            )
            .map_err(|error| error.to_string())?;
            for (topic, partitions) in denied {
                let mut refused = kp::fetch_response::FetchableTopicResponse::default();
                refused.topic = topic_name(topic);
                for &index in partitions {
                    let mut partition = kp::fetch_response::PartitionData::default();
                    partition.partition_index = index;
                    partition.error_code = TOPIC_AUTHORIZATION_FAILED;
                    partition.high_watermark = -1;
                    partition.last_stable_offset = -1;
                    partition.log_start_offset = -1;
                    partition.preferred_read_replica = kp::BrokerId(-1);
                    refused.partitions.push(partition);
                }
                response.responses.push(refused);
            }
            frame_with(header, &response, version)
        }
        Fixup::Metadata { .. } | Fixup::Denied { .. } | Fixup::Members { .. } => Ok(frame.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::{Decodable, Encodable};

    use super::super::message::request_frame as request;

    fn response<M: Encodable>(api_key: i16, version: i16, message: &M) -> (Bytes, usize) {
        super::super::message::response_for_test(api_key, version, message)
    }

    fn only_orders(topic: &str) -> bool {
        topic == "orders"
    }

    fn produce_request(topics: &[&str]) -> kp::ProduceRequest {
        let mut request = kp::ProduceRequest::default();
        request.acks = -1;
        for topic in topics {
            let mut data = kp::produce_request::TopicProduceData::default();
            data.name = topic_name(topic);
            for index in [0, 1] {
                let mut partition = kp::produce_request::PartitionProduceData::default();
                partition.index = index;
                partition.records = Some(Bytes::from_static(b"records"));
                data.partition_data.push(partition);
            }
            request.topic_data.push(data);
        }
        request
    }

    #[test]
    fn produce_keeps_allowed_topics_and_answers_for_denied_ones() {
        for version in [3, 9, 11] {
            let allowed = request(0, version, &produce_request(&["orders"]));
            assert!(matches!(
                produce(&allowed, version, &only_orders).unwrap(),
                Checked::Forward {
                    frame: None,
                    fixup: None
                }
            ));
            let mixed = request(0, version, &produce_request(&["orders", "audit"]));
            let Checked::Forward {
                frame: Some(stripped),
                fixup: Some(fixup),
            } = produce(&mixed, version, &only_orders).unwrap()
            else {
                panic!("v{version}: not rewritten");
            };
            let (_, sent): (_, kp::ProduceRequest) = decode_request(0, version, &stripped).unwrap();
            assert_eq!(sent.topic_data.len(), 1);
            assert_eq!(name(&sent.topic_data[0].name), "orders");
            assert_eq!(
                fixup,
                Fixup::Produce {
                    denied: vec![("audit".into(), vec![0, 1])]
                }
            );

            let mut answer = kp::ProduceResponse::default();
            let mut topic = kp::produce_response::TopicProduceResponse::default();
            topic.name = topic_name("orders");
            topic
                .partition_responses
                .push(kp::produce_response::PartitionProduceResponse::default());
            answer.responses.push(topic);
            let (frame, offset) = response(0, version, &answer);
            let fixed = fix_records(&fixup, version, &frame, offset).unwrap();
            let decoded = kp::ProduceResponse::decode(&mut fixed.slice(offset..), version).unwrap();
            let seen: Vec<_> = decoded
                .responses
                .iter()
                .flat_map(|t| {
                    t.partition_responses
                        .iter()
                        .map(move |p| (name(&t.name).to_owned(), p.index, p.error_code))
                })
                .collect();
            assert_eq!(
                seen,
                vec![
                    ("orders".into(), 0, 0),
                    ("audit".into(), 0, TOPIC_AUTHORIZATION_FAILED),
                    ("audit".into(), 1, TOPIC_AUTHORIZATION_FAILED)
                ],
                "v{version}"
            );
        }
    }

    #[test]
    fn fetch_of_a_denied_topic_is_answered_with_the_error() {
        let version = 12;
        let mut fetch_request = kp::FetchRequest::default();
        for topic in ["audit", "orders"] {
            let mut wanted = kp::fetch_request::FetchTopic::default();
            wanted.topic = topic_name(topic);
            wanted
                .partitions
                .push(kp::fetch_request::FetchPartition::default());
            fetch_request.topics.push(wanted);
        }
        let frame = request(1, version, &fetch_request);
        let Checked::Forward {
            frame: Some(stripped),
            fixup: Some(fixup),
        } = fetch(&frame, version, &only_orders).unwrap()
        else {
            panic!("not rewritten");
        };
        let (_, sent): (_, kp::FetchRequest) = decode_request(1, version, &stripped).unwrap();
        assert_eq!(sent.topics.len(), 1);
        let (answer, offset) = response(1, version, &kp::FetchResponse::default());
        let fixed = fix_records(&fixup, version, &answer, offset).unwrap();
        let decoded = kp::FetchResponse::decode(&mut fixed.slice(offset..), version).unwrap();
        assert_eq!(name(&decoded.responses[0].topic), "audit");
        assert_eq!(
            decoded.responses[0].partitions[0].error_code,
            TOPIC_AUTHORIZATION_FAILED
        );
    }

    #[test]
    fn metadata_never_asks_the_broker_about_a_denied_topic() {
        let version = 12;
        let mut metadata = kp::MetadataRequest::default();
        let mut wanted = Vec::new();
        for topic in ["orders", "audit"] {
            let mut entry = kp::metadata_request::MetadataRequestTopic::default();
            entry.name = Some(topic_name(topic));
            wanted.push(entry);
        }
        metadata.topics = Some(wanted);
        metadata.allow_auto_topic_creation = true;
        let frame = request(3, version, &metadata);
        let Checked::Forward {
            frame: Some(stripped),
            fixup: Some(fixup),
        } = metadata_check(&frame, version)
        else {
            panic!("not rewritten");
        };
        let (_, sent): (_, kp::MetadataRequest) = decode_request(3, version, &stripped).unwrap();
        let sent: Vec<_> = sent
            .topics
            .unwrap()
            .iter()
            .map(|t| name(t.name.as_ref().unwrap()).to_owned())
            .collect();
        assert_eq!(sent, vec!["orders".to_owned()]);

        // The broker also names a topic nobody asked for; it is dropped.
        let mut listed = Vec::new();
        for topic in ["orders", "other"] {
            let mut entry = kp::metadata_response::MetadataResponseTopic::default();
            entry.name = Some(topic_name(topic));
            listed.push(entry);
        }
        fix_metadata(&fixup, &mut listed, &only_orders);
        let seen: Vec<_> = listed
            .iter()
            .map(|t| (name(t.name.as_ref().unwrap()).to_owned(), t.error_code))
            .collect();
        assert_eq!(
            seen,
            vec![
                ("orders".into(), 0),
                ("audit".into(), TOPIC_AUTHORIZATION_FAILED)
            ]
        );

        // Every topic: only the allowed ones are listed.
        metadata.topics = None;
        let Checked::Forward {
            frame: None,
            fixup: Some(every),
        } = metadata_check(&request(3, version, &metadata), version)
        else {
            panic!("every topic");
        };
        let mut listed = Vec::new();
        for topic in ["orders", "audit"] {
            let mut entry = kp::metadata_response::MetadataResponseTopic::default();
            entry.name = Some(topic_name(topic));
            listed.push(entry);
        }
        fix_metadata(&every, &mut listed, &only_orders);
        assert_eq!(listed.len(), 1);
    }

    fn metadata_check(frame: &Bytes, version: i16) -> Checked {
        metadata(frame, version, &only_orders).unwrap()
    }

    #[test]
    fn apis_without_checked_topics_are_not_forwarded() {
        assert_eq!(forwarded(29), None, "DescribeAcls");
        assert_eq!(forwarded(27), None, "WriteTxnMarkers");
        assert_eq!(forwarded(68), None, "ConsumerGroupHeartbeat");
        assert_eq!(forwarded(24), Some(Some(3)), "AddPartitionsToTxn");
        assert_eq!(forwarded(1), Some(Some(FETCH_BY_NAME)));
        assert_eq!(forwarded(12), Some(None), "Heartbeat names no topic");
    }
}
