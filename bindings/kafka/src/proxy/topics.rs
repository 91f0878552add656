//! Topic allow-lists: a proxy with `routes` lets a client reach only the topics some route
//! matching the topic (`when: [{topic: ...}]`) and holding the client's guard sessions
//! (`guarded`) allows. The binding-level `exit`, as in every binding, is a last route that
//! allows every topic.
//!
//! Metadata, Produce and Fetch name forbidden topics back with TOPIC_AUTHORIZATION_FAILED, as a
//! broker enforcing ACLs does: the request goes to the broker without them, and the answer gets
//! them back with the error (a Metadata request for every topic gets the forbidden ones left
//! out). Produce and Fetch requests naming only allowed topics pass as the same bytes. Other
//! requests naming a forbidden topic (ListOffsets, OffsetCommit, OffsetFetch,
//! OffsetForLeaderEpoch, CreateTopics, DeleteTopics, DeleteRecords, CreatePartitions,
//! DescribeConfigs) close the connection. Every other API is left out of the ApiVersions
//! answer and closes the connection when sent, since its topics, if any, are not checked here.

use std::collections::HashSet;

use bytes::Bytes;
use kafka_protocol::messages as kp;
use kafka_protocol::protocol::StrBytes;
use zilla_engine::guard::Authorization;
use zilla_engine::pattern::Pattern;
use zilla_engine::route::Routes;

use super::frame::RequestHeader;
use super::message::{decode_request, frame_with};

/// Kafka's TOPIC_AUTHORIZATION_FAILED.
pub(crate) const TOPIC_AUTHORIZATION_FAILED: i16 = 29;

/// Fetch names topics by id from v13; the allow-list reads names, so Fetch stops at v12.
const FETCH_BY_NAME: i16 = 12;

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
    32, // DescribeConfigs
    36, // SaslAuthenticate
    37, // CreatePartitions
    42, // DeleteGroups
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
        Some((_, max)) => Some(max),
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
        2 | 8 | 9 | 19 | 20 | 21 | 23 | 32 | 37 => named_topics(header.api_key, version, frame)
            .map(|topics| {
                match topics.into_iter().find(|topic| match topic {
                    Some(topic) => !allows(topic),
                    None => true,
                }) {
                    Some(Some(topic)) => Checked::Refuse(format!(
                        "API key {} names the forbidden topic {topic}",
                        header.api_key
                    )),
                    Some(None) => Checked::Refuse(format!(
                        "API key {} names a topic by id only",
                        header.api_key
                    )),
                    None => Checked::unchanged(),
                }
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

fn produce(frame: &Bytes, version: i16, allows: &dyn Fn(&str) -> bool) -> Result<Checked, String> {
    let (offset, mut request): (usize, kp::ProduceRequest) = decode_request(0, version, frame)?;
    if request
        .topic_data
        .iter()
        .all(|topic| allows(name(&topic.name)))
    {
        return Ok(Checked::unchanged());
    }
    let mut denied = Vec::new();
    request.topic_data.retain(|topic| {
        let allowed = allows(name(&topic.name));
        if !allowed {
            denied.push((
                name(&topic.name).to_owned(),
                topic.partition_data.iter().map(|p| p.index).collect(),
            ));
        }
        allowed
    });
    let frame = frame_with(&frame[4..offset], &request, version)?;
    Ok(Checked::Forward {
        frame: Some(frame),
        fixup: Some(Fixup::Produce { denied }),
    })
}

fn fetch(frame: &Bytes, version: i16, allows: &dyn Fn(&str) -> bool) -> Result<Checked, String> {
    let (offset, mut request): (usize, kp::FetchRequest) = decode_request(1, version, frame)?;
    if request
        .topics
        .iter()
        .all(|topic| allows(name(&topic.topic)))
    {
        return Ok(Checked::unchanged());
    }
    let mut denied = Vec::new();
    request.topics.retain(|topic| {
        let allowed = allows(name(&topic.topic));
        if !allowed {
            denied.push((
                name(&topic.topic).to_owned(),
                topic.partitions.iter().map(|p| p.partition).collect(),
            ));
        }
        allowed
    });
    let frame = frame_with(&frame[4..offset], &request, version)?;
    Ok(Checked::Forward {
        frame: Some(frame),
        fixup: Some(Fixup::Fetch { denied }),
    })
}

/// The topics a request of one of the other checked APIs names; `None` for one named by id.
fn named_topics(api_key: i16, version: i16, frame: &Bytes) -> Result<Vec<Option<String>>, String> {
    let owned = |topic: &kp::TopicName| Some(name(topic).to_owned());
    Ok(match api_key {
        2 => {
            let (_, r): (_, kp::ListOffsetsRequest) = decode_request(api_key, version, frame)?;
            r.topics.iter().map(|t| owned(&t.name)).collect()
        }
        8 => {
            let (_, r): (_, kp::OffsetCommitRequest) = decode_request(api_key, version, frame)?;
            r.topics.iter().map(|t| owned(&t.name)).collect()
        }
        9 => {
            let (_, r): (_, kp::OffsetFetchRequest) = decode_request(api_key, version, frame)?;
            let mut topics: Vec<_> = r.topics.iter().flatten().map(|t| owned(&t.name)).collect();
            for group in &r.groups {
                topics.extend(group.topics.iter().flatten().map(|t| owned(&t.name)));
            }
            topics
        }
        19 => {
            let (_, r): (_, kp::CreateTopicsRequest) = decode_request(api_key, version, frame)?;
            r.topics.iter().map(|t| owned(&t.name)).collect()
        }
        20 => {
            let (_, r): (_, kp::DeleteTopicsRequest) = decode_request(api_key, version, frame)?;
            let mut topics: Vec<_> = r.topic_names.iter().map(owned).collect();
            topics.extend(
                r.topics
                    .iter()
                    .map(|t| t.name.as_ref().map(|n| name(n).to_owned())),
            );
            topics
        }
        21 => {
            let (_, r): (_, kp::DeleteRecordsRequest) = decode_request(api_key, version, frame)?;
            r.topics.iter().map(|t| owned(&t.name)).collect()
        }
        23 => {
            let (_, r): (_, kp::OffsetForLeaderEpochRequest) =
                decode_request(api_key, version, frame)?;
            r.topics.iter().map(|t| owned(&t.topic)).collect()
        }
        32 => {
            let (_, r): (_, kp::DescribeConfigsRequest) = decode_request(api_key, version, frame)?;
            // Resource type 2 is a topic; brokers and loggers name no topic.
            r.resources
                .iter()
                .filter(|resource| resource.resource_type == 2)
                .map(|resource| Some(resource.resource_name.as_str().to_owned()))
                .collect()
        }
        37 => {
            let (_, r): (_, kp::CreatePartitionsRequest) = decode_request(api_key, version, frame)?;
            r.topics.iter().map(|t| owned(&t.name)).collect()
        }
        _ => Vec::new(),
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
        Fixup::Metadata { .. } => Ok(frame.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::protocol::{Decodable, Encodable};

    use super::super::message::request_frame as request;

    fn response<M: Encodable>(api_key: i16, version: i16, message: &M) -> (Bytes, usize) {
        let key = kp::ApiKey::try_from(api_key).unwrap();
        let mut header = BytesMut::new();
        header.put_i32(3);
        if key.response_header_version(version) >= 1 {
            header.put_u8(0);
        }
        let offset = 4 + header.len();
        (frame_with(&header, message, version).unwrap(), offset)
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
        assert_eq!(forwarded(24), None, "AddPartitionsToTxn");
        assert_eq!(forwarded(29), None, "DescribeAcls");
        assert_eq!(forwarded(1), Some(Some(FETCH_BY_NAME)));
        assert_eq!(forwarded(12), Some(None), "Heartbeat names no topic");
    }
}
