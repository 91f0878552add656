//! Following partitions: every partition a broker leads is fetched in one Fetch request, on a
//! connection of its own ([`wire::Lane::Parked`]), so the broker parks one fetch per gateway
//! rather than one per partition, and nothing else waits behind it.
//!
//! A partition that starts being followed first gets one fetch that does not park (on the
//! fetch lane), so its first records never wait for the broker's parked fetch to come back;
//! then it joins its leader's session. A broker has two sessions: partitions far behind
//! their end (a history being cached) are fetched together on a connection of their own
//! ([`wire::Lane::CatchUp`]), without parking, and join the parked session once they reach
//! the end; a partition that falls behind again goes back. So a live record waits neither for
//! another partition's history nor for a response holding it. A partition whose reader is slow (its queue full) is
//! left out of the session's requests until the reader catches up. When the leader moves or
//! its connection fails, the metadata is refreshed and the partition joins the new leader's
//! session at the offset it had reached, so readers see no gap and no duplicate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::{Stream, stream};
use tokio::sync::mpsc;
use zilla_engine::stream::StreamError;

use crate::kind::{FetchBatch, Message};
use crate::wire::{self, Cluster, Endpoint, KafkaError};

/// Batches waiting per followed partition before its fetching pauses.
const FOLLOW_QUEUE: usize = 2;
/// How long a session whose partitions are all paused waits before looking again.
const PAUSED_POLL: Duration = Duration::from_millis(10);
const BACKOFF_START: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// What a follower yields: batches in offset order, or errors it retries after.
pub(crate) type Followed =
    std::pin::Pin<Box<dyn Stream<Item = Result<FetchBatch, StreamError>> + Send>>;

fn upstream(error: KafkaError) -> StreamError {
    StreamError::Upstream(error.to_string())
}

/// Fetch settings of the sessions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FollowTuning {
    /// How long the broker may park a session's fetch.
    pub(crate) max_wait: Duration,
    /// Bytes per fetch response (`zilla.binding.kafka.client.fetch.max.bytes`).
    pub(crate) max_bytes: i32,
}

type PartitionKey = (String, i32);
/// Members are told apart by id: the same partition may be followed twice (the cache follows
/// a partition's end while it still fetches its history).
type MemberId = u64;

struct Member {
    topic: String,
    partition: i32,
    /// Rounds since this member was last in a request; of two members of one partition, the
    /// one that waited longer goes in (a request names a partition once).
    waited: u32,
    offset: i64,
    high_watermark: i64,
    partition_max_bytes: i32,
    sender: mpsc::Sender<Result<FetchBatch, StreamError>>,
    /// The phase of the session it was last placed in (`None` before its first), from which
    /// its next phase is decided: a re-placed member (a leader move) keeps its hysteresis.
    phase: Option<Phase>,
    /// Failed fetches of this member in a row, and when it may be fetched again: a partition
    /// whose records cannot be decoded (a batch over the decompression limit, a corrupt
    /// batch) is asked for again after a growing pause, not in every round.
    failures: u32,
    retry_at: Option<tokio::time::Instant>,
}

/// One broker's followed partitions.
#[derive(Default)]
struct Session {
    members: Mutex<HashMap<MemberId, Member>>,
}

impl Session {
    fn members(&self) -> MutexGuard<'_, HashMap<MemberId, Member>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where a followed partition is against its end, which decides its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Phase {
    /// Behind the end: fetched without parking, on [`wire::Lane::CatchUp`].
    CatchingUp,
    /// At the end: fetched in the parked fetch, on [`wire::Lane::Parked`].
    AtEnd,
}

/// How many records a partition at its end may fall behind before it leaves the parked
/// session: a few records produced while a fetch was out are fetched with the others, and
/// only a history (or a burst the parked fetch cannot carry) gets the catch-up connection.
const CATCH_UP_LAG: i64 = 1000;

impl Phase {
    /// The phase of `member`, coming from `current` (`None`: just placed).
    fn of(member: &Member, current: Option<Self>) -> Self {
        let lag = if member.high_watermark >= 0 {
            member.high_watermark - member.offset
        } else {
            0
        };
        match current {
            Some(Self::CatchingUp) if lag > 0 => Self::CatchingUp,
            _ if lag > CATCH_UP_LAG => Self::CatchingUp,
            _ => Self::AtEnd,
        }
    }
}

type SessionKey = (Endpoint, Phase);

/// Follows partitions of a cluster, two sessions per broker (see [`Phase`]).
pub(crate) struct Follower {
    cluster: Cluster,
    tuning: FollowTuning,
    sessions: Mutex<HashMap<SessionKey, Arc<Session>>>,
    next_member: std::sync::atomic::AtomicU64,
}

impl Follower {
    pub(crate) fn new(cluster: Cluster, tuning: FollowTuning) -> Self {
        Self {
            cluster,
            tuning,
            sessions: Mutex::new(HashMap::new()),
            next_member: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<SessionKey, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows `topic`/`partition` from `offset`, asking for up to `max_bytes` of it per
    /// fetch; `from_end` when `offset` is the partition's end, so the follow joins the parked
    /// fetch at once (its first fetch of its own would queue behind other partitions' first
    /// fetches, which on a topic being cached carry their histories). Dropping the stream
    /// stops following.
    pub(crate) fn follow(
        self: &Arc<Self>,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
        from_end: bool,
    ) -> Followed {
        let (sender, receiver) = mpsc::channel(FOLLOW_QUEUE);
        let member = Member {
            topic: topic.to_owned(),
            partition,
            waited: 0,
            offset,
            high_watermark: -1,
            partition_max_bytes: max_bytes.clamp(1, self.tuning.max_bytes.max(1)),
            sender,
            phase: None,
            failures: 0,
            retry_at: None,
        };
        if from_end {
            tokio::spawn(self.clone().place(member));
        } else {
            tokio::spawn(self.clone().start(member));
        }
        Box::pin(stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|item| (item, receiver))
        }))
    }

    /// The first fetch, which does not park, then the leader's session.
    async fn start(self: Arc<Self>, mut member: Member) {
        let (topic, partition) = (member.topic.clone(), member.partition);
        let mut backoff = BACKOFF_START;
        loop {
            if member.sender.is_closed() {
                return;
            }
            let options = wire::FetchOptions {
                max_wait: Duration::ZERO,
                max_bytes: self.tuning.max_bytes,
                partition_max_bytes: member.partition_max_bytes,
                ..wire::FetchOptions::default()
            };
            match fetch_once(&self.cluster, &topic, partition, member.offset, &options).await {
                Ok(batch) => {
                    member.offset = batch.next_offset.max(member.offset);
                    member.high_watermark = batch.high_watermark;
                    if member.sender.send(Ok(batch)).await.is_err() {
                        return;
                    }
                    break;
                }
                Err(error) => {
                    if member.sender.send(Err(error)).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        self.place(member).await;
    }

    /// Adds the partition to its leader's session, refreshing metadata until a leader is
    /// known.
    async fn place(self: Arc<Self>, mut member: Member) {
        let (topic, partition) = (member.topic.clone(), member.partition);
        let mut backoff = BACKOFF_START;
        loop {
            if member.sender.is_closed() {
                return;
            }
            match self.cluster.leader(&topic, partition).await {
                Ok(endpoint) => {
                    let key = (endpoint, Phase::of(&member, member.phase));
                    member.phase = Some(key.1);
                    let mut sessions = self.sessions();
                    let session = sessions.entry(key.clone()).or_insert_with(|| {
                        let session = Arc::new(Session::default());
                        tokio::spawn(self.clone().run(key, session.clone()));
                        session
                    });
                    let id = self
                        .next_member
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    session.members().insert(id, member);
                    return;
                }
                Err(error) => {
                    tracing::debug!(%topic, partition, %error, "no leader to follow yet");
                    self.cluster.invalidate(&topic);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Moves member `id` out of `session` and into its (new) leader's session.
    fn replace(self: &Arc<Self>, session: &Session, id: MemberId) {
        if let Some(member) = session.members().remove(&id) {
            self.cluster.invalidate(&member.topic);
            tokio::spawn(self.clone().place(member));
        }
    }

    /// Moves member `id` of `session` to the session of the phase it is now in (same
    /// leader).
    fn rephase(self: &Arc<Self>, session: &Session, id: MemberId) {
        if let Some(member) = session.members().remove(&id) {
            tokio::spawn(self.clone().place(member));
        }
    }

    /// Ends the session when it has no member left; members are added under the sessions
    /// lock, so none can arrive between the check and the removal.
    fn retire(&self, key: &SessionKey, session: &Arc<Session>) -> bool {
        let mut sessions = self.sessions();
        if !session.members().is_empty() {
            return false;
        }
        if sessions
            .get(key)
            .is_some_and(|current| Arc::ptr_eq(current, session))
        {
            sessions.remove(key);
        }
        true
    }

    /// The session's fetch loop: one Fetch for every partition with room for more.
    async fn run(self: Arc<Self>, key: SessionKey, session: Arc<Session>) {
        let (endpoint, phase) = (key.0.clone(), key.1);
        let (lane, max_wait) = match phase {
            Phase::AtEnd => (wire::Lane::Parked, self.tuning.max_wait),
            Phase::CatchingUp => (wire::Lane::CatchUp, Duration::ZERO),
        };
        let mut backoff = BACKOFF_START;
        loop {
            let wanted: Vec<(MemberId, PartitionKey, i64, i32)> = {
                let mut members = session.members();
                members.retain(|_, member| !member.sender.is_closed());
                let mut chosen: HashMap<PartitionKey, MemberId> = HashMap::new();
                let now = tokio::time::Instant::now();
                for (id, member) in members.iter() {
                    if member.sender.capacity() == 0
                        || member.retry_at.is_some_and(|retry_at| retry_at > now)
                    {
                        continue;
                    }
                    let key = (member.topic.clone(), member.partition);
                    match chosen.get(&key) {
                        Some(other) if members[other].waited >= member.waited => {}
                        _ => {
                            chosen.insert(key, *id);
                        }
                    }
                }
                for member in members.values_mut() {
                    member.waited = member.waited.saturating_add(1);
                }
                chosen
                    .into_iter()
                    .filter_map(|(key, id)| {
                        let member = members.get_mut(&id)?;
                        member.waited = 0;
                        Some((id, key, member.offset, member.partition_max_bytes))
                    })
                    .collect()
            };
            if wanted.is_empty() {
                if self.retire(&key, &session) {
                    return;
                }
                tokio::time::sleep(PAUSED_POLL).await;
                continue;
            }
            let mut topics: Vec<wire::FetchTopic> = Vec::new();
            let mut partition_max_bytes = 1;
            for (id, (topic, partition), offset, max_bytes) in &wanted {
                partition_max_bytes = partition_max_bytes.max(*max_bytes);
                let fetch = wire::FetchPartition {
                    partition: *partition,
                    offset: *offset,
                };
                match topics.iter_mut().find(|t| &t.name == topic) {
                    Some(entry) => entry.partitions.push(fetch),
                    None => match self.cluster.topic(topic).await {
                        Ok(metadata) => topics.push(wire::FetchTopic {
                            name: topic.clone(),
                            id: metadata.id,
                            partitions: vec![fetch],
                        }),
                        Err(_) => self.replace(&session, *id),
                    },
                }
            }
            let member_of = |topic: &str, partition: i32| {
                wanted
                    .iter()
                    .find(|(_, key, _, _)| key.0 == topic && key.1 == partition)
                    .map(|(id, _, _, _)| *id)
            };
            if topics.is_empty() {
                continue;
            }
            let options = wire::FetchOptions {
                max_wait,
                max_bytes: self.tuning.max_bytes,
                partition_max_bytes,
                ..wire::FetchOptions::default()
            };
            let response = match self
                .cluster
                .fetch_on(&endpoint, lane, topics.clone(), &options)
                .await
            {
                Ok(response) => {
                    backoff = BACKOFF_START;
                    response
                }
                Err(error) => {
                    tracing::debug!(?endpoint, %error, "session fetch failed; finding leaders again");
                    for topic in &topics {
                        for partition in &topic.partitions {
                            if let Some(id) = member_of(&topic.name, partition.partition) {
                                self.replace(&session, id);
                            }
                        }
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            // One decompression budget for the whole response.
            let mut decompress = self.cluster.decompress_budget();
            for fetched_topic in response.topics {
                let name = match topics.iter().find(|t| {
                    t.name == fetched_topic.name
                        || (fetched_topic.name.is_empty() && t.id == fetched_topic.id)
                }) {
                    Some(topic) => topic.name.clone(),
                    None => continue,
                };
                for raw in fetched_topic.partitions {
                    let Some(id) = member_of(&name, raw.partition) else {
                        continue;
                    };
                    if raw.error.is_stale_metadata() {
                        self.replace(&session, id);
                        continue;
                    }
                    let Some(offset) = session.members().get(&id).map(|member| member.offset)
                    else {
                        continue;
                    };
                    let decoded = self
                        .cluster
                        .decode_partition_within(raw, offset, &options, &mut decompress)
                        .map_err(upstream);
                    let batch = match decoded {
                        Ok(fetched) => batch_of(&self.cluster, &name, offset, fetched).await,
                        Err(error) => Err(error),
                    };
                    let mut members = session.members();
                    let Some(member) = members.get_mut(&id) else {
                        continue;
                    };
                    match batch {
                        Ok(batch) => {
                            member.failures = 0;
                            member.retry_at = None;
                            let news = !batch.messages.is_empty()
                                || batch.next_offset != member.offset
                                || batch.high_watermark != member.high_watermark;
                            if !news {
                                continue;
                            }
                            let (next, high_watermark) = (batch.next_offset, batch.high_watermark);
                            // There is room: only partitions with room were fetched, and only
                            // this loop sends once a partition is in a session.
                            if member.sender.try_send(Ok(batch)).is_ok() {
                                member.offset = next.max(member.offset);
                                member.high_watermark = high_watermark;
                                if Phase::of(member, Some(phase)) != phase {
                                    drop(members);
                                    self.rephase(&session, id);
                                }
                            }
                        }
                        Err(error) => {
                            member.failures = member.failures.saturating_add(1);
                            member.retry_at =
                                Some(tokio::time::Instant::now() + retry_pause(member.failures));
                            let _ = member.sender.try_send(Err(error));
                        }
                    }
                }
            }
        }
    }
}

/// The pause before a member that failed `failures` times in a row is fetched again:
/// doubling from [`BACKOFF_START`] up to [`BACKOFF_MAX`].
fn retry_pause(failures: u32) -> Duration {
    BACKOFF_START
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(BACKOFF_MAX)
}

/// One fetch of one partition that does not wait in any session.
pub(crate) async fn fetch_once(
    cluster: &Cluster,
    topic: &str,
    partition: i32,
    offset: i64,
    options: &wire::FetchOptions,
) -> Result<FetchBatch, StreamError> {
    let fetched = cluster
        .fetch(
            topic,
            &[wire::FetchPartition { partition, offset }],
            options,
        )
        .await
        .map_err(upstream)?;
    let Some(fetched) = fetched.into_iter().find(|p| p.partition == partition) else {
        return Err(StreamError::Upstream("fetch answered no partition".into()));
    };
    batch_of(cluster, topic, offset, fetched).await
}

/// The batch a fetched partition gives its reader. An offset Kafka no longer has (retention)
/// or does not have yet moves to the nearest end of the log.
async fn batch_of(
    cluster: &Cluster,
    topic: &str,
    offset: i64,
    fetched: wire::FetchedPartition,
) -> Result<FetchBatch, StreamError> {
    let partition = fetched.partition;
    if fetched.error == wire::ErrorCode::OFFSET_OUT_OF_RANGE {
        let earliest = cluster
            .list_offsets(
                topic,
                partition,
                wire::OffsetSpec::Earliest,
                wire::Isolation::ReadUncommitted,
            )
            .await
            .map_err(upstream)?
            .offset;
        return Ok(FetchBatch {
            messages: Vec::new(),
            next_offset: earliest.max(offset.min(fetched.high_watermark)),
            high_watermark: fetched.high_watermark,
            log_start_offset: earliest,
        });
    }
    if !fetched.error.is_ok() {
        return Err(StreamError::Upstream(format!(
            "fetch {topic}/{partition}: error {}",
            fetched.error.0
        )));
    }
    let messages = fetched
        .records
        .into_iter()
        .map(|record| Message {
            partition,
            offset: record.offset,
            timestamp: record.timestamp,
            key: record.key,
            value: record.value,
            headers: record.headers,
        })
        .collect();
    Ok(FetchBatch {
        messages,
        next_offset: fetched.next_offset,
        high_watermark: fetched.high_watermark,
        log_start_offset: fetched.log_start_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_pauses_double_up_to_the_maximum() {
        assert_eq!(retry_pause(1), BACKOFF_START);
        assert_eq!(retry_pause(2), BACKOFF_START * 2);
        assert_eq!(retry_pause(3), BACKOFF_START * 4);
        assert_eq!(retry_pause(40), BACKOFF_MAX);
        assert_eq!(retry_pause(u32::MAX), BACKOFF_MAX);
    }

    fn member(offset: i64, high_watermark: i64, phase: Option<Phase>) -> Member {
        let (sender, _) = mpsc::channel(1);
        Member {
            topic: "t".to_owned(),
            partition: 0,
            waited: 0,
            offset,
            high_watermark,
            partition_max_bytes: 1,
            sender,
            phase,
            failures: 0,
            retry_at: None,
        }
    }

    #[test]
    fn a_partition_catches_up_only_far_behind_and_leaves_only_at_its_end() {
        use Phase::{AtEnd, CatchingUp};
        let phase = |offset, phase| {
            let member = member(offset, 5000, phase);
            Phase::of(&member, member.phase)
        };
        // Just placed: far behind catches up, a little behind or unknown joins the end.
        assert_eq!(phase(0, None), CatchingUp);
        assert_eq!(phase(4500, None), AtEnd);
        assert_eq!(Phase::of(&member(0, -1, None), None), AtEnd);
        // Catching up: stays until the end is reached.
        assert_eq!(phase(4999, Some(CatchingUp)), CatchingUp);
        assert_eq!(phase(5000, Some(CatchingUp)), AtEnd);
        // At the end (also when placed again after a leader move): a few records behind
        // stay in the parked session.
        assert_eq!(phase(4500, Some(AtEnd)), AtEnd);
        assert_eq!(phase(3999, Some(AtEnd)), CatchingUp);
    }
}
