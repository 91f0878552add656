//! Consumer groups over the `kafka` stream kind: a member joins a group for one topic, gets
//! its share of the topic's partitions, keeps its place with heartbeats, and commits and
//! reads back the offsets it has consumed, so a reader that stops and starts again goes on
//! where the group left off.
//!
//! Members speak Kafka's `consumer` protocol (subscription and assignment v0) with the
//! `range` assignor, so a group's state reads the same in Kafka's tools as that of a Java
//! consumer: the leader splits each topic's partitions in contiguous ranges over the members
//! subscribed to it, sorted by member id.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::kind::{GroupJoin, GroupMembership, PartitionOffset};
use crate::wire::{
    Cluster, ErrorCode, HeartbeatRequest, JoinGroupRequest, KafkaError, LeaveGroupRequest,
    OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest,
};

/// The protocol type of Kafka consumers.
const PROTOCOL_TYPE: &str = "consumer";
/// The assignor this member offers.
const ASSIGNOR: &str = "range";
/// Version of the subscription and assignment encodings.
const CONSUMER_PROTOCOL_VERSION: i16 = 0;

/// What a member may commit when the records it reads are done out of order: per assigned
/// partition, the next offset read, held back to the first record still being processed.
/// A record is processed once [`CommitTracker::finish`] is called for it, so what is
/// committed is never past a record whose work is not done (at least once).
///
/// Records in progress are bounded by the caller (one entry each).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CommitTracker {
    read: BTreeMap<i32, i64>,
    pending: BTreeMap<i32, BTreeSet<i64>>,
    committed: BTreeMap<i32, i64>,
}

impl CommitTracker {
    /// A tracker for the partitions in `start`, read and committed up to there.
    pub fn new(start: &[PartitionOffset]) -> Self {
        let read: BTreeMap<i32, i64> = start
            .iter()
            .map(|offset| (offset.partition, offset.offset))
            .collect();
        Self {
            committed: read.clone(),
            read,
            pending: BTreeMap::new(),
        }
    }

    /// Records that reading went on to `progress` (next offsets); partitions not tracked are
    /// left out, and no partition goes back.
    pub fn read(&mut self, progress: &[PartitionOffset]) {
        for offset in progress {
            if let Some(next) = self.read.get_mut(&offset.partition) {
                *next = (*next).max(offset.offset);
            }
        }
    }

    /// The record at `offset` of `partition` is being processed: nothing past it is
    /// committed until it is finished.
    pub fn begin(&mut self, partition: i32, offset: i64) {
        if self.read.contains_key(&partition) {
            self.pending.entry(partition).or_default().insert(offset);
        }
    }

    /// The record at `offset` of `partition` is processed.
    pub fn finish(&mut self, partition: i32, offset: i64) {
        if let Some(offsets) = self.pending.get_mut(&partition) {
            offsets.remove(&offset);
            if offsets.is_empty() {
                self.pending.remove(&partition);
            }
        }
    }

    /// Whether no record is being processed.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }

    /// The next offsets read per partition: where a reader reopened after a failure goes on.
    pub fn positions(&self) -> Vec<PartitionOffset> {
        self.read
            .iter()
            .map(|(&partition, &offset)| PartitionOffset { partition, offset })
            .collect()
    }

    /// The offsets that may be committed and differ from what was committed last.
    pub fn committable(&self) -> Vec<PartitionOffset> {
        self.read
            .iter()
            .map(|(&partition, &read)| {
                let first_pending = self
                    .pending
                    .get(&partition)
                    .and_then(|offsets| offsets.first().copied());
                PartitionOffset {
                    partition,
                    offset: first_pending.map_or(read, |pending| pending.min(read)),
                }
            })
            .filter(|offset| self.committed.get(&offset.partition) != Some(&offset.offset))
            .collect()
    }

    /// Records that `offsets` were committed.
    pub fn committed(&mut self, offsets: &[PartitionOffset]) {
        for offset in offsets {
            self.committed.insert(offset.partition, offset.offset);
        }
    }
}

/// How many times [`join`] joins again, with the member id it was given, when the group
/// starts another rebalance between its JoinGroup and its SyncGroup.
const SYNC_REBALANCE_ATTEMPTS: usize = 5;

/// Joins the group, assigns the partitions when this member leads, and returns this
/// member's share. A SyncGroup answered `REBALANCE_IN_PROGRESS` joins again with the member
/// id the coordinator gave: a new id would leave the old one in the group until its session
/// times out, and a member left that way may lead the next generation without ever
/// assigning it.
pub(crate) async fn join(
    cluster: &Cluster,
    request: &GroupJoin,
) -> Result<GroupMembership, KafkaError> {
    let mut request = request.clone();
    let mut attempt = 1;
    loop {
        match join_once(cluster, &request).await {
            Err(JoinError {
                member_id,
                error:
                    KafkaError::Broker {
                        code: ErrorCode::REBALANCE_IN_PROGRESS,
                        ..
                    },
            }) if attempt < SYNC_REBALANCE_ATTEMPTS && !member_id.is_empty() => {
                request.member_id = member_id;
                attempt += 1;
            }
            result => return result.map_err(|failed| failed.error),
        }
    }
}

/// A failed [`join_once`], with the member id the coordinator gave (empty when JoinGroup
/// failed).
struct JoinError {
    member_id: String,
    error: KafkaError,
}

impl From<KafkaError> for JoinError {
    fn from(error: KafkaError) -> Self {
        Self {
            member_id: String::new(),
            error,
        }
    }
}

/// One JoinGroup and SyncGroup.
async fn join_once(cluster: &Cluster, request: &GroupJoin) -> Result<GroupMembership, JoinError> {
    let joined = cluster
        .join_group(&JoinGroupRequest {
            group_id: request.group_id.clone(),
            session_timeout: request.session_timeout,
            rebalance_timeout: request.rebalance_timeout,
            member_id: request.member_id.clone(),
            group_instance_id: None,
            protocol_type: PROTOCOL_TYPE.to_owned(),
            protocols: vec![(
                ASSIGNOR.to_owned(),
                encode_subscription(std::slice::from_ref(&request.topic)),
            )],
        })
        .await?;
    let assignments = if joined.is_leader() {
        let mut subscriptions = Vec::with_capacity(joined.members.len());
        for member in &joined.members {
            subscriptions.push((
                member.member_id.clone(),
                decode_subscription(member.metadata.clone())?,
            ));
        }
        let mut partitions = BTreeMap::new();
        for topic in subscriptions.iter().flat_map(|(_, topics)| topics) {
            if !partitions.contains_key(topic) {
                let count = cluster.partition_count(topic).await?;
                partitions.insert(topic.clone(), count);
            }
        }
        range_assign(&subscriptions, &partitions)
            .into_iter()
            .map(|(member, topics)| (member, encode_assignment(&topics)))
            .collect()
    } else {
        Vec::new()
    };
    let assignment = cluster
        .sync_group(&SyncGroupRequest {
            group_id: request.group_id.clone(),
            generation_id: joined.generation_id,
            member_id: joined.member_id.clone(),
            group_instance_id: None,
            protocol_type: Some(PROTOCOL_TYPE.to_owned()),
            protocol_name: joined.protocol_name.clone(),
            assignments,
        })
        .await
        .map_err(|error| JoinError {
            member_id: joined.member_id.clone(),
            error,
        })?;
    let mut partitions: Vec<i32> = decode_assignment(assignment)?
        .into_iter()
        .filter(|(topic, _)| *topic == request.topic)
        .flat_map(|(_, partitions)| partitions)
        .collect();
    partitions.sort_unstable();
    partitions.dedup();
    Ok(GroupMembership {
        group_id: request.group_id.clone(),
        topic: request.topic.clone(),
        generation_id: joined.generation_id,
        member_id: joined.member_id,
        partitions,
    })
}

/// Tells the coordinator the member is alive; an error (a rebalance, an unknown member)
/// means the member must join again.
pub(crate) async fn heartbeat(
    cluster: &Cluster,
    membership: &GroupMembership,
) -> Result<(), KafkaError> {
    cluster
        .heartbeat(&HeartbeatRequest {
            group_id: membership.group_id.clone(),
            generation_id: membership.generation_id,
            member_id: membership.member_id.clone(),
            group_instance_id: None,
        })
        .await
}

/// Leaves the group, so its partitions go to the other members at once.
pub(crate) async fn leave(
    cluster: &Cluster,
    membership: &GroupMembership,
) -> Result<(), KafkaError> {
    cluster
        .leave_group(&LeaveGroupRequest {
            group_id: membership.group_id.clone(),
            member_id: membership.member_id.clone(),
            group_instance_id: None,
        })
        .await
}

/// The group's committed next offsets for `partitions` of `topic`; partitions without a
/// committed offset are left out.
pub(crate) async fn committed(
    cluster: &Cluster,
    group_id: &str,
    topic: &str,
    partitions: &[i32],
) -> Result<Vec<PartitionOffset>, KafkaError> {
    let offsets = cluster
        .offset_fetch(&OffsetFetchRequest {
            group_id: group_id.to_owned(),
            topic: topic.to_owned(),
            partitions: partitions.to_vec(),
        })
        .await?;
    Ok(offsets
        .into_iter()
        .filter(|committed| committed.offset >= 0)
        .map(|committed| PartitionOffset {
            partition: committed.partition,
            offset: committed.offset,
        })
        .collect())
}

/// Commits the next offsets to read, within the member's generation.
pub(crate) async fn commit(
    cluster: &Cluster,
    membership: &GroupMembership,
    offsets: &[PartitionOffset],
) -> Result<(), KafkaError> {
    if offsets.is_empty() {
        return Ok(());
    }
    cluster
        .offset_commit(&OffsetCommitRequest {
            group_id: membership.group_id.clone(),
            generation_id: membership.generation_id,
            member_id: membership.member_id.clone(),
            group_instance_id: None,
            topic: membership.topic.clone(),
            offsets: offsets
                .iter()
                .map(|offset| (offset.partition, offset.offset, None))
                .collect(),
        })
        .await
}

/// Partitions per topic, as a consumer protocol assignment lists them.
type TopicPartitions = Vec<(String, Vec<i32>)>;

/// Splits each topic's partitions in contiguous ranges over the members subscribed to it,
/// sorted by member id; the first members get one more when the split is uneven.
fn range_assign(
    subscriptions: &[(String, Vec<String>)],
    partitions: &BTreeMap<String, u32>,
) -> Vec<(String, TopicPartitions)> {
    let mut members: Vec<&(String, Vec<String>)> = subscriptions.iter().collect();
    members.sort_by(|a, b| a.0.cmp(&b.0));
    let mut assigned: Vec<(String, TopicPartitions)> = members
        .iter()
        .map(|(member, _)| (member.clone(), Vec::new()))
        .collect();
    for (topic, count) in partitions {
        let subscribed: Vec<usize> = members
            .iter()
            .enumerate()
            .filter(|(_, (_, topics))| topics.contains(topic))
            .map(|(index, _)| index)
            .collect();
        if subscribed.is_empty() {
            continue;
        }
        let count = i32::try_from(*count).unwrap_or(i32::MAX);
        let share = count / subscribed.len() as i32;
        let extra = count % subscribed.len() as i32;
        let mut next = 0;
        for (rank, index) in subscribed.into_iter().enumerate() {
            let take = share + i32::from((rank as i32) < extra);
            assigned[index]
                .1
                .push((topic.clone(), (next..next + take).collect()));
            next += take;
        }
    }
    assigned
}

/// A consumer protocol subscription: version, topics, no user data.
fn encode_subscription(topics: &[String]) -> Bytes {
    let mut buffer = BytesMut::new();
    buffer.put_i16(CONSUMER_PROTOCOL_VERSION);
    put_array_length(&mut buffer, topics.len());
    for topic in topics {
        put_string(&mut buffer, topic);
    }
    buffer.put_i32(-1);
    buffer.freeze()
}

/// The topics of a consumer protocol subscription (any version: later versions append
/// fields).
fn decode_subscription(mut bytes: Bytes) -> Result<Vec<String>, KafkaError> {
    let _version = get_i16(&mut bytes)?;
    let count = get_array_length(&mut bytes)?;
    let mut topics = Vec::new();
    for _ in 0..count {
        topics.push(get_string(&mut bytes)?);
    }
    Ok(topics)
}

/// A consumer protocol assignment: version, partitions per topic, no user data.
fn encode_assignment(topics: &[(String, Vec<i32>)]) -> Bytes {
    let mut buffer = BytesMut::new();
    buffer.put_i16(CONSUMER_PROTOCOL_VERSION);
    put_array_length(&mut buffer, topics.len());
    for (topic, partitions) in topics {
        put_string(&mut buffer, topic);
        put_array_length(&mut buffer, partitions.len());
        for partition in partitions {
            buffer.put_i32(*partition);
        }
    }
    buffer.put_i32(-1);
    buffer.freeze()
}

/// The partitions per topic of a consumer protocol assignment; an empty assignment (a
/// member the leader gave nothing) has none.
fn decode_assignment(mut bytes: Bytes) -> Result<TopicPartitions, KafkaError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let _version = get_i16(&mut bytes)?;
    let count = get_array_length(&mut bytes)?;
    let mut topics = Vec::new();
    for _ in 0..count {
        let topic = get_string(&mut bytes)?;
        let partitions = get_array_length(&mut bytes)?;
        let mut list = Vec::new();
        for _ in 0..partitions {
            list.push(get_i32(&mut bytes)?);
        }
        topics.push((topic, list));
    }
    Ok(topics)
}

fn put_array_length(buffer: &mut BytesMut, length: usize) {
    buffer.put_i32(i32::try_from(length).unwrap_or(i32::MAX));
}

fn put_string(buffer: &mut BytesMut, text: &str) {
    buffer.put_i16(i16::try_from(text.len()).unwrap_or(i16::MAX));
    buffer.put_slice(text.as_bytes());
}

fn malformed(reason: &str) -> KafkaError {
    KafkaError::malformed("ConsumerProtocol", reason)
}

fn get_i16(bytes: &mut Bytes) -> Result<i16, KafkaError> {
    if bytes.remaining() < 2 {
        return Err(malformed("truncated"));
    }
    Ok(bytes.get_i16())
}

fn get_i32(bytes: &mut Bytes) -> Result<i32, KafkaError> {
    if bytes.remaining() < 4 {
        return Err(malformed("truncated"));
    }
    Ok(bytes.get_i32())
}

/// An array length, refused when negative or longer than the bytes left could hold (every
/// element takes at least two bytes), so a forged count reserves nothing.
fn get_array_length(bytes: &mut Bytes) -> Result<usize, KafkaError> {
    let length = get_i32(bytes)?;
    let length = usize::try_from(length).map_err(|_| malformed("negative array length"))?;
    if length > bytes.remaining() / 2 {
        return Err(malformed("array longer than its bytes"));
    }
    Ok(length)
}

fn get_string(bytes: &mut Bytes) -> Result<String, KafkaError> {
    let length = usize::try_from(get_i16(bytes)?).map_err(|_| malformed("null string"))?;
    if bytes.remaining() < length {
        return Err(malformed("truncated string"));
    }
    String::from_utf8(bytes.split_to(length).to_vec()).map_err(|_| malformed("string not UTF-8"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn subscriptions_and_assignments_round_trip() {
        let topics = vec!["requests".to_owned(), "other".to_owned()];
        assert_eq!(
            decode_subscription(encode_subscription(&topics)).unwrap(),
            topics
        );
        let assignment = vec![
            ("requests".to_owned(), vec![0, 2]),
            ("other".to_owned(), vec![]),
        ];
        assert_eq!(
            decode_assignment(encode_assignment(&assignment)).unwrap(),
            assignment
        );
        assert!(decode_assignment(Bytes::new()).unwrap().is_empty());
    }

    #[test]
    fn subscriptions_read_as_kafka_writes_them() {
        // Java's ConsumerProtocol v0 for ["t"] without user data.
        let java = Bytes::from_static(b"\x00\x00\x00\x00\x00\x01\x00\x01t\xff\xff\xff\xff");
        assert_eq!(decode_subscription(java.clone()).unwrap(), ["t"]);
        assert_eq!(encode_subscription(&["t".to_owned()]), java);
    }

    fn at(partition: i32, offset: i64) -> PartitionOffset {
        PartitionOffset { partition, offset }
    }

    #[test]
    fn commits_wait_for_the_first_record_in_progress() {
        let mut tracker = CommitTracker::new(&[at(0, 10), at(1, 0)]);
        assert!(tracker.committable().is_empty());
        tracker.begin(0, 10);
        tracker.begin(0, 12);
        tracker.read(&[at(0, 13), at(1, 4), at(2, 99)]);
        // Partition 0 is held at its first record in progress, which is what it committed.
        assert_eq!(tracker.committable(), [at(1, 4)]);
        tracker.committed(&[at(1, 4)]);
        tracker.finish(0, 12);
        assert!(tracker.committable().is_empty());
        assert!(!tracker.is_idle());
        tracker.finish(0, 10);
        assert!(tracker.is_idle());
        assert_eq!(tracker.committable(), [at(0, 13)]);
        // Partitions this member was not given are not tracked; reads never go back.
        tracker.begin(2, 5);
        tracker.read(&[at(0, 1)]);
        assert!(tracker.is_idle());
        assert_eq!(tracker.positions(), [at(0, 13), at(1, 4)]);
    }

    #[test]
    fn ranges_split_each_topic_over_its_subscribers() {
        let subscriptions = vec![
            ("b".to_owned(), vec!["t".to_owned()]),
            ("a".to_owned(), vec!["t".to_owned(), "u".to_owned()]),
            ("c".to_owned(), vec!["t".to_owned()]),
        ];
        let partitions = BTreeMap::from([("t".to_owned(), 5), ("u".to_owned(), 2)]);
        let assigned = range_assign(&subscriptions, &partitions);
        assert_eq!(
            assigned,
            vec![
                (
                    "a".to_owned(),
                    vec![("t".to_owned(), vec![0, 1]), ("u".to_owned(), vec![0, 1])]
                ),
                ("b".to_owned(), vec![("t".to_owned(), vec![2, 3])]),
                ("c".to_owned(), vec![("t".to_owned(), vec![4])]),
            ]
        );
    }

    proptest! {
        #[test]
        fn malformed_protocol_bytes_are_errors(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_subscription(Bytes::from(bytes.clone()));
            let _ = decode_assignment(Bytes::from(bytes));
        }

        #[test]
        fn every_partition_is_assigned_once(members in 1usize..6, count in 0u32..40) {
            let subscriptions: Vec<(String, Vec<String>)> = (0..members)
                .map(|index| (format!("m{index}"), vec!["t".to_owned()]))
                .collect();
            let assigned = range_assign(&subscriptions, &BTreeMap::from([("t".to_owned(), count)]));
            let mut all: Vec<i32> = assigned
                .into_iter()
                .flat_map(|(_, topics)| topics)
                .flat_map(|(_, partitions)| partitions)
                .collect();
            all.sort_unstable();
            prop_assert_eq!(all, (0..count as i32).collect::<Vec<_>>());
        }
    }
}
