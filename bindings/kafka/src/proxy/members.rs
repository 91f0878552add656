//! Consumer group members' subscriptions and assignments, which name topics inside opaque
//! bytes of JoinGroup, SyncGroup and DescribeGroups answers: any client may describe any
//! group, and a group's leader sees every member's subscription. With topic routes, each is
//! decoded as Kafka's consumer protocol and keeps only the topics the client may use; bytes
//! that are not the consumer protocol (a Kafka Connect group's) are emptied, since the topics
//! in them, if any, cannot be checked.
//!
//! The consumer protocol's counts are checked against the bytes left before the protocol
//! library decodes them, so a member announcing two billion topics costs nothing.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages as kp;
use kafka_protocol::protocol::{Decodable, Encodable};

use super::message::frame_with;
use crate::wire;

/// The consumer protocol versions decoded here (newer ones are read as this one, as Kafka's
/// own consumer does: later versions only add fields at the end).
const CONSUMER_PROTOCOL_VERSION: i16 = 3;

/// Reads the consumer protocol's fields without allocating.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn skip(&mut self, count: usize) -> Result<(), String> {
        self.0 = self
            .0
            .get(count..)
            .ok_or("member data shorter than its fields")?;
        Ok(())
    }

    fn int16(&mut self) -> Result<i16, String> {
        let bytes = self.0.get(..2).ok_or("member data truncated")?;
        let value = i16::from_be_bytes([bytes[0], bytes[1]]);
        self.skip(2)?;
        Ok(value)
    }

    fn int32(&mut self) -> Result<i32, String> {
        let bytes = self.0.get(..4).ok_or("member data truncated")?;
        let value = i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        self.skip(4)?;
        Ok(value)
    }

    /// A (nullable) string: an int16 length.
    fn string(&mut self) -> Result<(), String> {
        let length = self.int16()?;
        if length > 0 {
            self.skip(length as usize)?;
        }
        Ok(())
    }

    /// Nullable bytes: an int32 length.
    fn bytes(&mut self) -> Result<(), String> {
        let length = self.int32()?;
        if length > 0 {
            self.skip(length as usize)?;
        }
        Ok(())
    }

    /// An array whose every element takes at least `least` bytes.
    fn array(
        &mut self,
        least: usize,
        mut element: impl FnMut(&mut Self) -> Result<(), String>,
    ) -> Result<(), String> {
        let count = self.int32()?;
        if count < 0 {
            return Ok(());
        }
        if (count as usize).saturating_mul(least) > self.0.len() {
            return Err("member data announces more elements than it holds".into());
        }
        for _ in 0..count {
            element(self)?;
        }
        Ok(())
    }

    /// A topic and its partitions.
    fn topic_partitions(&mut self) -> Result<(), String> {
        self.string()?;
        self.array(4, |c| c.int32().map(|_| ()))
    }
}

fn check_subscription(body: &[u8], version: i16) -> Result<(), String> {
    let mut cursor = Cursor(body);
    cursor.array(2, Cursor::string)?;
    cursor.bytes()?;
    if version >= 1 {
        cursor.array(6, Cursor::topic_partitions)?;
    }
    if version >= 2 {
        cursor.int32()?;
    }
    if version >= 3 {
        cursor.string()?;
    }
    Ok(())
}

fn check_assignment(body: &[u8]) -> Result<(), String> {
    let mut cursor = Cursor(body);
    cursor.array(6, Cursor::topic_partitions)?;
    cursor.bytes()
}

/// The version prefix and the rest of one member's data.
fn versioned(data: &Bytes) -> Result<(i16, Bytes), String> {
    let version = Cursor(data).int16()?;
    if version < 0 {
        return Err(format!("consumer protocol version {version}"));
    }
    Ok((version.min(CONSUMER_PROTOCOL_VERSION), data.slice(2..)))
}

fn encoded<M: Encodable>(version: i16, message: &M) -> Result<Bytes, String> {
    let mut out = BytesMut::with_capacity(64);
    out.put_i16(version);
    message
        .encode(&mut out, version)
        .map_err(|error| error.to_string())?;
    Ok(out.freeze())
}

/// A member's subscription with only the allowed topics; empty when it is not the consumer
/// protocol's.
pub(crate) fn subscription(data: &Bytes, allows: &dyn Fn(&str) -> bool) -> Bytes {
    let filtered = || -> Result<Bytes, String> {
        let (version, mut body) = versioned(data)?;
        check_subscription(&body, version)?;
        let mut message = kp::ConsumerProtocolSubscription::decode(&mut body, version)
            .map_err(|error| error.to_string())?;
        message.topics.retain(|topic| allows(topic.as_str()));
        message
            .owned_partitions
            .retain(|owned| allows(owned.topic.0.as_str()));
        encoded(version, &message)
    };
    if data.is_empty() {
        return Bytes::new();
    }
    filtered().unwrap_or_default()
}

/// A member's assignment with only the allowed topics; empty when it is not the consumer
/// protocol's.
pub(crate) fn assignment(data: &Bytes, allows: &dyn Fn(&str) -> bool) -> Bytes {
    let filtered = || -> Result<Bytes, String> {
        let (version, mut body) = versioned(data)?;
        check_assignment(&body)?;
        let mut message = kp::ConsumerProtocolAssignment::decode(&mut body, version)
            .map_err(|error| error.to_string())?;
        message
            .assigned_partitions
            .retain(|assigned| allows(assigned.topic.0.as_str()));
        encoded(version, &message)
    };
    if data.is_empty() {
        return Bytes::new();
    }
    filtered().unwrap_or_default()
}

/// A JoinGroup (11), SyncGroup (14) or DescribeGroups (15) answer, whose body `body` follows
/// `header`, with every member's topics narrowed to the allowed ones.
pub(crate) fn narrow(
    api_key: i16,
    version: i16,
    header: &[u8],
    body: &Bytes,
    allows: &dyn Fn(&str) -> bool,
) -> Result<Bytes, String> {
    wire::check_response_schema(api_key, version, body)?;
    match api_key {
        11 => {
            let mut r = kp::JoinGroupResponse::decode(&mut body.clone(), version)
                .map_err(|error| error.to_string())?;
            for member in &mut r.members {
                member.metadata = subscription(&member.metadata, allows);
            }
            frame_with(header, &r, version)
        }
        14 => {
            let mut r = kp::SyncGroupResponse::decode(&mut body.clone(), version)
                .map_err(|error| error.to_string())?;
            r.assignment = assignment(&r.assignment, allows);
            frame_with(header, &r, version)
        }
        15 => {
            let mut r = kp::DescribeGroupsResponse::decode(&mut body.clone(), version)
                .map_err(|error| error.to_string())?;
            for group in &mut r.groups {
                for member in &mut group.members {
                    member.member_metadata = subscription(&member.member_metadata, allows);
                    member.member_assignment = assignment(&member.member_assignment, allows);
                }
            }
            frame_with(header, &r, version)
        }
        _ => Err(format!("API key {api_key} names no group members")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::StrBytes;

    fn only_orders(topic: &str) -> bool {
        topic == "orders"
    }

    fn topic_partition(name: &str) -> kp::consumer_protocol_assignment::TopicPartition {
        kp::consumer_protocol_assignment::TopicPartition::default()
            .with_topic(kp::TopicName(StrBytes::from_string(name.to_owned())))
            .with_partitions(vec![0, 1])
    }

    #[test]
    fn subscriptions_and_assignments_keep_only_allowed_topics() {
        for version in [0, 1, 3] {
            let subscribed = kp::ConsumerProtocolSubscription::default().with_topics(vec![
                StrBytes::from_static_str("orders"),
                StrBytes::from_static_str("audit"),
            ]);
            let data = encoded(version, &subscribed).unwrap();
            let (_, mut body) = versioned(&subscription(&data, &only_orders)).unwrap();
            let decoded = kp::ConsumerProtocolSubscription::decode(&mut body, version).unwrap();
            assert_eq!(decoded.topics, vec![StrBytes::from_static_str("orders")]);

            let assigned =
                kp::ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
                    topic_partition("audit"),
                    topic_partition("orders"),
                ]);
            let data = encoded(version, &assigned).unwrap();
            let (_, mut body) = versioned(&assignment(&data, &only_orders)).unwrap();
            let decoded = kp::ConsumerProtocolAssignment::decode(&mut body, version).unwrap();
            assert_eq!(decoded.assigned_partitions, vec![topic_partition("orders")]);
        }
    }

    #[test]
    fn other_protocols_and_hostile_counts_are_emptied() {
        // A subscription announcing two billion topics.
        let mut data = BytesMut::new();
        data.put_i16(0);
        data.put_i32(2_000_000_000);
        data.put_i16(6);
        assert!(subscription(&data.freeze(), &only_orders).is_empty());
        assert!(assignment(&Bytes::from_static(b"\x00\x00\xff"), &only_orders).is_empty());
        assert!(assignment(&Bytes::new(), &only_orders).is_empty());
    }

    #[test]
    fn described_groups_name_only_allowed_topics() {
        let version = 5;
        let subscribed = kp::ConsumerProtocolSubscription::default()
            .with_topics(vec![StrBytes::from_static_str("audit")]);
        let member = kp::describe_groups_response::DescribedGroupMember::default()
            .with_member_metadata(encoded(1, &subscribed).unwrap());
        let answer = kp::DescribeGroupsResponse::default().with_groups(vec![
            kp::describe_groups_response::DescribedGroup::default()
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_members(vec![member]),
        ]);
        let header = super::super::message::response_header(15, version, 7).unwrap();
        let body = frame_with(&[], &answer, version).unwrap().slice(4..);
        let narrowed = narrow(15, version, &header, &body, &only_orders).unwrap();
        let decoded =
            kp::DescribeGroupsResponse::decode(&mut narrowed.slice(4 + header.len()..), version)
                .unwrap();
        let (_, mut body) = versioned(&decoded.groups[0].members[0].member_metadata).unwrap();
        let decoded = kp::ConsumerProtocolSubscription::decode(&mut body, 1).unwrap();
        assert!(decoded.topics.is_empty());
    }

    proptest::proptest! {
        #[test]
        fn random_member_data_is_emptied_or_narrowed_never_a_panic(
            api in proptest::sample::select(vec![11i16, 14, 15]),
            version in 0i16..8,
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
        ) {
            let body = Bytes::from(body);
            let _ = subscription(&body, &only_orders);
            let _ = assignment(&body, &only_orders);
            let _ = narrow(api, version, &[0, 0, 0, 7], &body, &only_orders);
        }
    }
}
