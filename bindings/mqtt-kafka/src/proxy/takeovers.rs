use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use zilla_binding_kafka::kind::{
    Condition, Filter, HeaderMatch, MergedItem, Message as Record, PartitionOffset,
};
use zilla_binding_mqtt::codec::ReasonCode;
use zilla_binding_mqtt::kind::events::TrySendError;
use zilla_binding_mqtt::kind::{EventSender, SessionEvent};

use super::{MIGRATE_SUFFIX, MqttKafkaProxy, SENDER_ID, read_from};

/// How long a session waits for the gateway's takeover reader to start reading.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// One session of this gateway, followed until it ends.
struct Followed {
    /// A UUID rather than its text: one allocation less per session.
    session_id: Uuid,
    /// Partition and offset of its own takeover record, once Kafka acknowledged it.
    own: Option<(i32, i64)>,
    /// Takeover records of other sessions of its client read before `own` was known.
    earlier: Vec<(i32, i64)>,
    taken_over: bool,
    /// Cancelled on takeover: the session's subscriptions and state writes stop.
    closed: CancellationToken,
    /// Where the server hears that the session was taken over.
    events: EventSender,
}

impl Followed {
    /// Whether a takeover record of another session at `partition`, `offset` came after
    /// this session's own. Before Kafka gave the own record's place, it is kept for later.
    fn later(&mut self, partition: i32, offset: i64) -> bool {
        match self.own {
            // One client's records share a partition: a record elsewhere (the topic's
            // partitions changed) is not ordered with the own one, and ends the session as
            // a takeover would rather than leave two sessions of the client running.
            Some((own_partition, own_offset)) => partition != own_partition || offset > own_offset,
            None => {
                self.earlier.push((partition, offset));
                false
            }
        }
    }

    /// Whether `sender`, a takeover record's `sender-id`, names this session.
    fn wrote(&self, sender: &[u8]) -> bool {
        let mut text = Uuid::encode_buffer();
        self.session_id
            .hyphenated()
            .encode_lower(&mut text)
            .as_bytes()
            == sender
    }

    fn take_over(&mut self) {
        if self.taken_over {
            return;
        }
        self.taken_over = true;
        self.earlier = Vec::new();
        self.closed.cancel();
        let taken_over = SessionEvent::Ended {
            reason: ReasonCode::SESSION_TAKEN_OVER,
            reason_string: None,
        };
        // The reader must not wait on one session's full queue.
        if let Err(TrySendError::Full(event)) = self.events.try_send(taken_over) {
            let events = self.events.clone();
            tokio::spawn(async move {
                let _ = events.send(event).await;
            });
        }
    }
}

/// The sessions of this gateway that a takeover record can end, and whether the reader of
/// those records has started.
pub(crate) struct Takeovers {
    /// By client identifier: usually one session, two while one takes another over.
    sessions: Mutex<HashMap<String, Vec<Followed>>>,
    reading: watch::Sender<bool>,
}

impl Default for Takeovers {
    fn default() -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
            reading: watch::channel(false).0,
        }
    }
}

impl Takeovers {
    /// Waits until the reader has started, so that any record written from now on is read;
    /// false if it did not within [`READY_TIMEOUT`] (Kafka unreachable).
    pub(crate) async fn ready(&self) -> bool {
        let mut reading = self.reading.subscribe();
        matches!(
            tokio::time::timeout(READY_TIMEOUT, reading.wait_for(|reading| *reading)).await,
            Ok(Ok(_))
        )
    }

    /// Follows a new session, before its takeover record is written.
    pub(crate) fn follow(
        &self,
        client_id: &str,
        session_id: Uuid,
        closed: CancellationToken,
        events: EventSender,
    ) {
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions
                .entry(client_id.to_owned())
                // Most clients have one session at a time.
                .or_insert_with(|| Vec::with_capacity(1))
                .push(Followed {
                    session_id,
                    own: None,
                    earlier: Vec::new(),
                    taken_over: false,
                    closed,
                    events,
                });
        }
    }

    /// Kafka acknowledged the session's takeover record at `partition`, `offset` (`None`:
    /// unknown, and any other session's record read from now on takes it over).
    pub(crate) fn written(
        &self,
        client_id: &str,
        session_id: Uuid,
        partition: i32,
        offset: Option<i64>,
    ) {
        let Ok(mut sessions) = self.sessions.lock() else {
            return;
        };
        let Some(followed) = sessions
            .get_mut(client_id)
            .and_then(|list| list.iter_mut().find(|f| f.session_id == session_id))
        else {
            return;
        };
        followed.own = Some((partition, offset.unwrap_or(-1)));
        let earlier = std::mem::take(&mut followed.earlier);
        if earlier
            .into_iter()
            .any(|(partition, offset)| followed.later(partition, offset))
        {
            followed.take_over();
        }
    }

    /// Stops following a session that ended; whether it was taken over.
    pub(crate) fn unfollow(&self, client_id: &str, session_id: Uuid) -> bool {
        let Ok(mut sessions) = self.sessions.lock() else {
            return false;
        };
        let Some(list) = sessions.get_mut(client_id) else {
            return false;
        };
        let taken_over = list
            .iter()
            .position(|f| f.session_id == session_id)
            .is_some_and(|index| list.swap_remove(index).taken_over);
        if list.is_empty() {
            sessions.remove(client_id);
        }
        taken_over
    }

    /// A takeover record read from the sessions topic: it takes over every session of its
    /// client on this gateway that wrote its own record before it.
    fn read(&self, record: &Record) {
        let (Some(key), Some(sender)) = (&record.key, record.header(SENDER_ID.as_bytes())) else {
            return;
        };
        let Some(client_id) = key
            .strip_suffix(MIGRATE_SUFFIX.as_bytes())
            .and_then(|client_id| std::str::from_utf8(client_id).ok())
        else {
            return;
        };
        let Ok(mut sessions) = self.sessions.lock() else {
            return;
        };
        let Some(list) = sessions.get_mut(client_id) else {
            return;
        };
        for followed in list {
            if !followed.wrote(sender)
                && !followed.taken_over
                && followed.later(record.partition, record.offset)
            {
                tracing::debug!(%client_id, "session taken over");
                followed.take_over();
            }
        }
    }
}

/// Takeover records: those with a `sender-id` header.
fn takeover_filters() -> Vec<Filter> {
    vec![Filter {
        conditions: vec![Condition::Headers {
            name: Bytes::from_static(SENDER_ID.as_bytes()),
            values: vec![HeaderMatch::Skip, HeaderMatch::SkipMany],
        }],
    }]
}

/// Reads every takeover record written to the sessions topic from the gateway's start, on
/// behalf of all its sessions, until `shutdown`; a read that fails resumes where it was.
pub(crate) async fn run(proxy: Arc<MqttKafkaProxy>, shutdown: CancellationToken) {
    let mut resume: Vec<PartitionOffset> = Vec::new();
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        let started = tokio::select! {
            () = shutdown.cancelled() => break,
            started = read_from(
                &proxy.sessions_exit,
                &proxy.topics.sessions,
                takeover_filters(),
                &resume,
            ) => started,
        };
        let mut read = match started {
            Ok((read, starts)) => {
                resume = starts;
                read
            }
            Err(error) => {
                tracing::debug!(%error, "takeover records cannot be read; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        proxy.takeovers.reading.send_replace(true);
        loop {
            let item = tokio::select! {
                () = shutdown.cancelled() => return,
                item = read.next() => item,
            };
            match item {
                Some(Ok(MergedItem::Message { message, progress })) => {
                    proxy.takeovers.read(&message);
                    resume = progress.to_vec();
                }
                Some(Ok(MergedItem::Synced(progress))) => resume = progress.to_vec(),
                Some(Ok(MergedItem::Snapshot(_))) => {}
                // The read retries on its own.
                Some(Err(error)) => tracing::debug!(%error, "takeover records read failed"),
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The session named `name` in these tests.
    fn id(name: &str) -> Uuid {
        Uuid::from_u128(name.bytes().fold(0, |id, byte| id << 8 | u128::from(byte)))
    }

    fn takeover(client_id: &str, sender: &str, offset: i64) -> Record {
        Record {
            partition: 0,
            offset,
            timestamp: 0,
            key: Some(Bytes::from(format!("{client_id}{MIGRATE_SUFFIX}"))),
            value: Some(Bytes::new()),
            headers: vec![zilla_binding_kafka::kind::Header::new(
                Bytes::from_static(SENDER_ID.as_bytes()),
                Bytes::from(id(sender).to_string()),
            )],
        }
    }

    fn follow(
        takeovers: &Takeovers,
        session_id: &str,
    ) -> (CancellationToken, zilla_binding_mqtt::kind::EventReceiver) {
        let closed = CancellationToken::new();
        let (events, receiver) = zilla_binding_mqtt::kind::event_channel(1);
        takeovers.follow("client", id(session_id), closed.clone(), events);
        (closed, receiver)
    }

    #[test]
    fn only_a_record_after_the_sessions_own_takes_it_over() {
        let takeovers = Takeovers::default();
        let (closed, mut events) = follow(&takeovers, "b");
        takeovers.written("client", id("b"), 0, Some(11));
        // An earlier session's record read late, and the session's own: no takeover.
        takeovers.read(&takeover("client", "a", 10));
        takeovers.read(&takeover("client", "b", 11));
        takeovers.read(&takeover("other", "c", 12));
        assert!(!closed.is_cancelled());
        assert!(events.try_recv().is_none());
        takeovers.read(&takeover("client", "c", 13));
        assert!(closed.is_cancelled());
        assert!(matches!(
            events.try_recv(),
            Some(SessionEvent::Ended { reason, .. }) if reason == ReasonCode::SESSION_TAKEN_OVER
        ));
        assert!(takeovers.unfollow("client", id("b")));
        assert!(takeovers.sessions.lock().is_ok_and(|s| s.is_empty()));
    }

    #[test]
    fn a_record_read_before_the_own_write_is_acknowledged_is_placed_once_it_is() {
        let takeovers = Takeovers::default();
        let (before, _events) = follow(&takeovers, "b");
        takeovers.read(&takeover("client", "a", 10));
        takeovers.written("client", id("b"), 0, Some(11));
        assert!(!before.is_cancelled());
        let (after, _events) = follow(&takeovers, "d");
        takeovers.read(&takeover("client", "c", 13));
        takeovers.written("client", id("d"), 0, Some(12));
        assert!(after.is_cancelled());
        assert!(before.is_cancelled());
        assert!(!takeovers.unfollow("client", id("missing")));
    }
}
