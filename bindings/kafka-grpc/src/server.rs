//! The `remote_server` kind: reads request records, calls the service for each request and
//! produces its replies.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zilla_binding_grpc::kind::{MessageSender, message_channel};
use zilla_binding_grpc::{
    Code, GrpcHandler, GrpcRequest, MessageStream, Metadata, ResponseItem, Status,
};
use zilla_binding_grpc_kafka::proxy::{
    HeaderNames, MESSAGE_HEADER, STATUS_HEADER, meta_headers, metadata_of,
};
use zilla_binding_kafka::group::CommitTracker;
use zilla_binding_kafka::kind::{
    Acks, Condition, Filter, GroupJoin, GroupMembership, Header, KafkaHandler, MergedItem,
    MergedRequest, Message, OffsetSpec, PartitionOffset, ProduceRequest, Start,
};
use zilla_engine::pattern::Pattern;
use zilla_engine::route::{Route, Routes};
use zilla_engine::stream::StreamError;

use crate::config::{KafkaGrpcCondition, KafkaGrpcWith};

/// Calls in progress per binding: requests beyond wait in Kafka.
pub(crate) const MAXIMUM_CALLS: usize = 256;
/// Request messages read ahead of what the service has taken, per call.
const REQUEST_CAPACITY: usize = 16;
/// The first wait before a failed read or an `UNAVAILABLE` call is retried; doubled up to
/// [`MAXIMUM_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAXIMUM_BACKOFF: Duration = Duration::from_secs(5);
/// How long the group coordinator keeps a member that stopped without leaving.
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the coordinator waits for the members to join again in a rebalance.
const REBALANCE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a member that lost its partitions lets the calls in progress finish (and
/// commits them) before it cuts the rest and joins again: well within the rebalance
/// timeout, after up to a heartbeat interval spent noticing the rebalance.
const REBALANCE_DRAIN: Duration = Duration::from_secs(5);
/// Heartbeats go out well within the session timeout.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);
/// The last commit and the leave when the binding stops get this long each.
const FINAL_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the reply topic is searched for the final reply of a request that may have been
/// answered already; past it, the request is called again (at least once).
const ANSWER_SEARCH_TIMEOUT: Duration = Duration::from_secs(30);

/// A compiled `when` entry: the merged read it opens and the methods it serves.
#[derive(Debug)]
pub(crate) struct Subscription {
    topic: String,
    filter: Filter,
    method: Option<Pattern>,
}

impl Subscription {
    /// Compiles a `when` entry, filtering on key, headers, the reply topic and (when the
    /// method names one service) the service, under the configured header `names`.
    pub(crate) fn compile(raw: KafkaGrpcCondition, names: &HeaderNames) -> Result<Self, String> {
        let method = raw
            .method
            .as_deref()
            .map(|method| Pattern::compile(method, Some('/')))
            .transpose()?;
        let mut conditions = Vec::new();
        if let Some(key) = raw.key {
            conditions.push(Condition::Key(Bytes::from(key)));
        }
        for (name, value) in raw.headers.unwrap_or_default() {
            conditions.push(Condition::Header {
                name: Bytes::from(name),
                value: Bytes::from(value),
            });
        }
        conditions.push(Condition::Header {
            name: names.reply_to.clone(),
            value: Bytes::from(raw.reply_to),
        });
        if let Some(service) = raw
            .method
            .as_deref()
            .and_then(|method| method.split_once('/'))
            .map(|(service, _)| service)
            .filter(|service| !service.contains('*'))
        {
            conditions.push(Condition::Header {
                name: names.service.clone(),
                value: Bytes::copy_from_slice(service.as_bytes()),
            });
        }
        Ok(Self {
            topic: raw.topic,
            filter: Filter { conditions },
            method,
        })
    }
}

/// A route to the service that answers the requests it takes.
type ServiceRoute = Route<Subscription, KafkaGrpcWith, Arc<dyn GrpcHandler>>;

/// What every reader of one binding shares.
pub(crate) struct Server {
    pub(crate) name: String,
    /// The consumer group requests are read as: `zilla:<namespace>-<binding>`.
    pub(crate) group_id: String,
    pub(crate) kafka: Arc<dyn KafkaHandler>,
    pub(crate) routes: Routes<Subscription, KafkaGrpcWith, Arc<dyn GrpcHandler>>,
    pub(crate) headers: HeaderNames,
    pub(crate) idempotency: String,
    pub(crate) acks: Acks,
    pub(crate) calls: Arc<Semaphore>,
    /// Cancelled when the binding stops reading requests.
    pub(crate) stopping: CancellationToken,
    /// Cancelled when calls still in progress must end.
    pub(crate) retired: CancellationToken,
}

impl Server {
    /// Starts one group member per topic the routes read, tracked by `tasks`, until the
    /// binding stops.
    pub(crate) fn start(self: &Arc<Self>, tasks: &TaskTracker) {
        let mut topics: BTreeMap<&str, Vec<(usize, usize)>> = BTreeMap::new();
        for (route_index, route) in self.routes.iter().enumerate() {
            for (when_index, subscription) in route.when.iter().enumerate() {
                topics
                    .entry(subscription.topic.as_str())
                    .or_default()
                    .push((route_index, when_index));
            }
        }
        for (topic, entries) in topics {
            let server = self.clone();
            let topic = topic.to_owned();
            let calls = tasks.clone();
            tasks.spawn(async move { server.consume(topic, entries, &calls).await });
        }
    }

    /// Reads the requests of one topic as a member of the binding's consumer group for as
    /// long as the binding runs, joining again whenever the group rebalances.
    async fn consume(&self, topic: String, entries: Vec<(usize, usize)>, tasks: &TaskTracker) {
        let mut member_id = String::new();
        let mut backoff = FIRST_BACKOFF;
        while !self.stopping.is_cancelled() {
            let join = GroupJoin {
                group_id: self.group_id.clone(),
                topic: topic.clone(),
                member_id: member_id.clone(),
                session_timeout: SESSION_TIMEOUT,
                rebalance_timeout: REBALANCE_TIMEOUT,
            };
            let joined = tokio::select! {
                joined = self.kafka.join_group(join) => joined,
                () = self.stopping.cancelled() => return,
            };
            let membership = match joined {
                Ok(membership) => membership,
                Err(error) => {
                    tracing::debug!(binding = %self.name, %topic, %error, "group join failed; retrying");
                    // A member id the coordinator forgot is no use for the next try.
                    member_id.clear();
                    self.pause(&mut backoff).await;
                    continue;
                }
            };
            backoff = FIRST_BACKOFF;
            member_id = membership.member_id.clone();
            tracing::debug!(binding = %self.name, %topic, generation = membership.generation_id, partitions = ?membership.partitions, "joined the group");
            if let Err(error) = self.serve(&membership, &entries, tasks).await {
                tracing::debug!(binding = %self.name, %topic, %error, "group membership lost; joining again");
            }
        }
    }

    /// Waits `backoff` (or until the binding stops) and doubles it.
    async fn pause(&self, backoff: &mut Duration) {
        tokio::select! {
            () = tokio::time::sleep(*backoff) => {}
            () = self.stopping.cancelled() => {}
        }
        *backoff = (*backoff * 2).min(MAXIMUM_BACKOFF);
    }

    /// Serves one generation: reads the assigned partitions from the committed offsets,
    /// commits each request once its replies are produced, and keeps the membership alive.
    /// Returns `Ok` when the binding stopped (after the calls in progress ended and the
    /// member left the group), an error when the membership was lost.
    async fn serve(
        &self,
        membership: &GroupMembership,
        entries: &[(usize, usize)],
        tasks: &TaskTracker,
    ) -> Result<(), StreamError> {
        let (start, ends) = self.start_offsets(membership).await?;
        let tracker = Arc::new(Mutex::new(CommitTracker::new(&start)));
        let finished = Arc::new(Notify::new());
        let progress = Progress {
            tracker: tracker.clone(),
            finished: finished.clone(),
            ends: ends.into(),
            cut: self.retired.child_token(),
        };
        let mut open = HashMap::new();
        let outcome = tokio::select! {
            () = self.read(membership, entries, &mut open, &progress, tasks) => Ok(()),
            lost = self.maintain(membership, &progress) => lost,
            () = self.stopping.cancelled() => Ok(()),
        };
        // Requests whose last record was not read yet cannot be finished: their calls are
        // cut without a reply and stay uncommitted, to be answered after the next start.
        for request in open.into_values() {
            request.abandoned.cancel();
        }
        if outcome.is_err() {
            // The partitions go to other members, which call again what is not committed or
            // answered: the calls in progress get a moment to finish and be committed, then
            // the rest are cut so that no request is answered by two members at once.
            let drained = async {
                while !lock(&tracker).is_idle() {
                    finished.notified().await;
                    let _ = self.commit(membership, &tracker).await;
                }
            };
            let _ = tokio::time::timeout(REBALANCE_DRAIN, drained).await;
            progress.cut.cancel();
        }
        if outcome.is_ok() {
            // Stopping: let the calls in progress end (until the drain is over) while the
            // membership is kept, so their requests are committed.
            let drained = async {
                while !lock(&tracker).is_idle() {
                    let notified = finished.notified();
                    tokio::select! {
                        () = notified => {}
                        () = tokio::time::sleep(HEARTBEAT_INTERVAL) => {
                            self.kafka.heartbeat(membership).await?;
                        }
                    }
                    self.commit(membership, &tracker).await?;
                }
                Ok::<(), StreamError>(())
            };
            tokio::select! {
                result = drained => result?,
                () = self.retired.cancelled() => {}
            }
        }
        let committed = tokio::time::timeout(FINAL_CALL_TIMEOUT, self.commit(membership, &tracker))
            .await
            .map_err(|_| StreamError::Upstream("final offset commit timed out".to_owned()))
            .and_then(|result| result);
        if outcome.is_ok() {
            let _ =
                tokio::time::timeout(FINAL_CALL_TIMEOUT, self.kafka.leave_group(membership)).await;
        }
        committed.and(outcome)
    }

    /// Where the member starts in each assigned partition: the group's committed offset, or
    /// (the first time the group reads a partition) its end, committed at once so that
    /// requests produced while no gateway runs are answered when one starts. Also returns
    /// each partition's end at that moment: the requests before it may have been answered by
    /// a member that stopped before committing them.
    async fn start_offsets(
        &self,
        membership: &GroupMembership,
    ) -> Result<(Vec<PartitionOffset>, Vec<PartitionOffset>), StreamError> {
        let mut start = self
            .kafka
            .committed_offsets(
                &membership.group_id,
                &membership.topic,
                &membership.partitions,
            )
            .await?;
        let mut fresh = Vec::new();
        let mut ends = Vec::new();
        for &partition in &membership.partitions {
            let offset = self
                .kafka
                .list_offset(&membership.topic, partition, OffsetSpec::Latest)
                .await?;
            if start.iter().all(|offset| offset.partition != partition) {
                fresh.push(PartitionOffset { partition, offset });
            }
            ends.push(PartitionOffset { partition, offset });
        }
        self.kafka.commit_offsets(membership, &fresh).await?;
        start.extend(fresh);
        start.sort_unstable();
        Ok((start, ends))
    }

    /// Commits what the tracker allows.
    async fn commit(
        &self,
        membership: &GroupMembership,
        tracker: &Mutex<CommitTracker>,
    ) -> Result<(), StreamError> {
        let offsets = lock(tracker).committable();
        if offsets.is_empty() {
            return Ok(());
        }
        self.kafka.commit_offsets(membership, &offsets).await?;
        lock(tracker).committed(&offsets);
        Ok(())
    }

    /// Heartbeats, and commits whenever a request was answered; returns when the
    /// membership is lost.
    async fn maintain(
        &self,
        membership: &GroupMembership,
        progress: &Progress,
    ) -> Result<(), StreamError> {
        let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
        loop {
            let notified = progress.finished.notified();
            tokio::select! {
                _ = heartbeat.tick() => self.kafka.heartbeat(membership).await?,
                () = notified => {}
            }
            self.commit(membership, &progress.tracker).await?;
        }
    }

    /// Reads the requests of the assigned partitions, reopening the read where it stopped
    /// after a failure; with no partition assigned, reads nothing.
    async fn read(
        &self,
        membership: &GroupMembership,
        entries: &[(usize, usize)],
        open: &mut HashMap<Bytes, OpenRequest>,
        progress: &Progress,
        tasks: &TaskTracker,
    ) {
        if membership.partitions.is_empty() {
            return std::future::pending().await;
        }
        let filters: Vec<Filter> = entries
            .iter()
            .filter_map(|&(route, when)| self.subscription(route, when))
            .map(|(_, subscription)| subscription.filter.clone())
            .collect();
        let mut backoff = FIRST_BACKOFF;
        loop {
            let request = MergedRequest {
                topic: membership.topic.clone(),
                start: Start::Live,
                offsets: lock(&progress.tracker).positions(),
                filters: filters.clone(),
                latest_per_key: false,
                partitions: membership.partitions.clone(),
            };
            let mut records = match self.kafka.merged(request).await {
                Ok(records) => records,
                Err(error) => {
                    tracing::debug!(binding = %self.name, topic = %membership.topic, %error, "request read failed; retrying");
                    self.pause(&mut backoff).await;
                    continue;
                }
            };
            while let Some(item) = records.next().await {
                match item {
                    Ok(MergedItem::Message {
                        message,
                        progress: after,
                    }) => {
                        backoff = FIRST_BACKOFF;
                        self.dispatch(entries, &message, open, progress, tasks)
                            .await;
                        lock(&progress.tracker).read(&after);
                    }
                    Ok(MergedItem::Synced(at)) => lock(&progress.tracker).read(&at),
                    // Requests are read whole, not per key.
                    Ok(MergedItem::Snapshot(_)) => {}
                    Err(error) => {
                        tracing::debug!(binding = %self.name, %error, "request read broke; reopening");
                        break;
                    }
                }
            }
            self.pause(&mut backoff).await;
        }
    }

    /// The route and the `when` entry at these indexes.
    fn subscription(
        &self,
        route_index: usize,
        when_index: usize,
    ) -> Option<(&ServiceRoute, &Subscription)> {
        let route = self.routes.iter().nth(route_index)?;
        Some((route, route.when.get(when_index)?))
    }

    /// Hands one request record to its call, starting the call on its first record with the
    /// first route whose `when` entry takes it.
    async fn dispatch(
        &self,
        entries: &[(usize, usize)],
        message: &Message,
        open: &mut HashMap<Bytes, OpenRequest>,
        progress: &Progress,
        tasks: &TaskTracker,
    ) {
        let Some(correlation_id) = message.header(&self.headers.correlation_id).cloned() else {
            tracing::debug!(binding = %self.name, offset = message.offset, "request without correlation id; skipped");
            return;
        };
        if let Some(OpenRequest { sender, .. }) = open.get(&correlation_id) {
            let delivered = match &message.value {
                Some(value) => sender.send(Ok(value.clone())).await.is_ok(),
                None => {
                    if let Some(status) = broken_off(message) {
                        let _ = sender.send(Err(status)).await;
                    }
                    false
                }
            };
            if !delivered {
                // The request ended, or its call is over.
                open.remove(&correlation_id);
            }
            return;
        }
        let Some(value) = message.value.clone() else {
            // The end of a request whose call is over (it ended early, it was answered
            // already, or its first records were read by another member): not a new request.
            tracing::debug!(binding = %self.name, offset = message.offset, "end of a request not in progress; skipped");
            return;
        };
        let (Some(service), Some(method), Some(reply_to)) = (
            text(message.header(&self.headers.service)),
            text(message.header(&self.headers.method)),
            text(message.header(&self.headers.reply_to)),
        ) else {
            tracing::debug!(binding = %self.name, offset = message.offset, "request without service, method or reply-to; skipped");
            return;
        };
        let full_method = format!("{service}/{method}");
        let Some((route, _)) = entries
            .iter()
            .filter_map(|&(route, when)| self.subscription(route, when))
            .find(|(_, subscription)| {
                subscription.filter.matches(message)
                    && subscription
                        .method
                        .as_ref()
                        .is_none_or(|pattern| pattern.matches(&full_method))
            })
        else {
            return;
        };
        let Some(with) = route.with.as_ref() else {
            return;
        };
        // Calls that ended leave their senders closed.
        open.retain(|_, request| !request.sender.is_closed());
        let permit = tokio::select! {
            permit = self.calls.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = self.stopping.cancelled() => return,
        };
        let (sender, messages) = message_channel(REQUEST_CAPACITY);
        let abandoned = CancellationToken::new();
        let _ = sender.send(Ok(value)).await;
        open.insert(
            correlation_id.clone(),
            OpenRequest {
                sender,
                abandoned: abandoned.clone(),
            },
        );
        let mut metadata = metadata_of(message);
        if metadata.get(&self.idempotency).is_none() {
            metadata.push_text(self.idempotency.clone(), idempotency_key(&correlation_id));
        }
        let (partition, offset) = (message.partition, message.offset);
        let call = Call {
            recheck: progress.may_be_answered(partition, offset),
            exit: route.exit.clone(),
            scheme: with.scheme.clone(),
            authority: with.authority.clone(),
            service: service.to_owned(),
            method: method.to_owned(),
            metadata,
            reply: Reply {
                kafka: self.kafka.clone(),
                topic: reply_to.to_owned(),
                key: message.key.clone(),
                correlation_header: self.headers.correlation_id.clone(),
                correlation_id,
                acks: self.acks,
                requested_at: message.timestamp,
            },
        };
        lock(&progress.tracker).begin(partition, offset);
        let progress = progress.clone();
        let cut = progress.cut.clone();
        let name = self.name.clone();
        tasks.spawn(async move {
            let _permit = permit;
            tokio::select! {
                result = call.run(messages) => match result {
                    Ok(()) => {
                        lock(&progress.tracker).finish(partition, offset);
                        progress.finished.notify_one();
                    }
                    // Not committed: the request is answered again after a restart.
                    Err(error) => tracing::warn!(binding = %name, partition, offset, %error, "reply not produced; the request stays uncommitted"),
                },
                () = cut.cancelled() => {}
                () = abandoned.cancelled() => {}
            }
        });
    }
}

/// A request whose call started and whose last record is still to be read.
struct OpenRequest {
    sender: MessageSender,
    /// Cancelled to cut the call without a reply when the rest of the request will not be
    /// read.
    abandoned: CancellationToken,
}

/// The commit state of one generation, shared with its calls.
#[derive(Clone)]
struct Progress {
    tracker: Arc<Mutex<CommitTracker>>,
    /// Notified when a call's replies are all produced.
    finished: Arc<Notify>,
    /// The end of each partition when the generation started.
    ends: Arc<[PartitionOffset]>,
    /// Cancelled when the calls of this generation must end: the binding retired, or the
    /// member lost its partitions.
    cut: CancellationToken,
}

impl Progress {
    /// Whether the request at `offset` was in the topic before this member started reading
    /// it, so a member that stopped without committing it may have answered it already.
    fn may_be_answered(&self, partition: i32, offset: i64) -> bool {
        self.ends
            .iter()
            .any(|end| end.partition == partition && offset < end.offset)
    }
}

fn lock(tracker: &Mutex<CommitTracker>) -> std::sync::MutexGuard<'_, CommitTracker> {
    tracker
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The status an end-of-request record carries when the caller broke off.
fn broken_off(message: &Message) -> Option<Status> {
    let status = zilla_binding_grpc_kafka::proxy::status_of(message);
    (status.code != Code::Ok).then_some(status)
}

fn text(value: Option<&Bytes>) -> Option<&str> {
    value.and_then(|value| std::str::from_utf8(value).ok())
}

/// The idempotency key a correlation id (`<key>-<32 hex digits>`) was made from; the whole id
/// when it has another shape.
fn idempotency_key(correlation_id: &[u8]) -> String {
    let text = String::from_utf8_lossy(correlation_id);
    match text.rsplit_once('-') {
        Some((key, digest))
            if !key.is_empty()
                && digest.len() == 32
                && digest.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            key.to_owned()
        }
        _ => text.into_owned(),
    }
}

/// Where one request's replies go.
struct Reply {
    kafka: Arc<dyn KafkaHandler>,
    topic: String,
    key: Option<Bytes>,
    correlation_header: Bytes,
    correlation_id: Bytes,
    acks: Acks,
    /// The request record's timestamp: only a final reply written since answers it.
    requested_at: i64,
}

impl Reply {
    async fn produce(
        &self,
        value: Option<Bytes>,
        extra: impl IntoIterator<Item = Header>,
    ) -> Result<(), StreamError> {
        let mut headers = vec![Header::new(
            self.correlation_header.clone(),
            self.correlation_id.clone(),
        )];
        headers.extend(extra);
        self.kafka
            .produce(ProduceRequest {
                topic: self.topic.clone(),
                key: self.key.clone(),
                value,
                headers,
                acks: self.acks,
                ..ProduceRequest::default()
            })
            .await
            .map(|_| ())
    }

    /// Whether the reply topic already holds this request's final reply (a record without
    /// value carrying `zilla:status`, written no earlier than the request). A final reply
    /// older than the request answered an earlier attempt of the same call, which the caller
    /// gave up on before it came; the retry is called again. A search that fails or takes
    /// too long counts as no.
    async fn answered(&self) -> bool {
        let request = MergedRequest {
            topic: self.topic.clone(),
            start: Start::Historical,
            offsets: Vec::new(),
            filters: vec![Filter {
                conditions: vec![Condition::Header {
                    name: self.correlation_header.clone(),
                    value: self.correlation_id.clone(),
                }],
            }],
            latest_per_key: false,
            partitions: Vec::new(),
        };
        let search = async {
            let mut records = self.kafka.merged(request).await?;
            while let Some(item) = records.next().await {
                match item? {
                    MergedItem::Message { message, .. } => {
                        if message.value.is_none()
                            && message.header(STATUS_HEADER).is_some()
                            && message.timestamp >= self.requested_at
                        {
                            return Ok(true);
                        }
                    }
                    MergedItem::Synced(_) => return Ok(false),
                    MergedItem::Snapshot(_) => {}
                }
            }
            Ok::<bool, StreamError>(false)
        };
        match tokio::time::timeout(ANSWER_SEARCH_TIMEOUT, search).await {
            Ok(Ok(found)) => found,
            Ok(Err(error)) => {
                tracing::warn!(topic = %self.topic, %error, "reply search failed; calling the service again");
                false
            }
            Err(_) => {
                tracing::warn!(topic = %self.topic, "reply search timed out; calling the service again");
                false
            }
        }
    }

    /// The record that ends the replies: no value, `zilla:status` and `zilla:message`.
    async fn finish(&self, status: &Status, extra: Vec<Header>) -> Result<(), StreamError> {
        let mut headers = extra;
        headers.push(Header::new(
            Bytes::from_static(STATUS_HEADER),
            status.code.as_u32().to_string(),
        ));
        if !status.message.is_empty() {
            headers.push(Header::new(
                Bytes::from_static(MESSAGE_HEADER),
                status.message.clone(),
            ));
        }
        self.produce(None, headers).await
    }
}

/// One request, called and answered.
struct Call {
    /// Whether to look for the request's final reply before calling: a member that stopped
    /// before committing the request may have answered it.
    recheck: bool,
    exit: Arc<dyn GrpcHandler>,
    scheme: String,
    authority: String,
    service: String,
    method: String,
    metadata: Metadata,
    reply: Reply,
}

impl Call {
    /// Calls the service, again after a backoff while it is `UNAVAILABLE` before it took any
    /// request message, and produces what it answers.
    async fn run(self, messages: MessageStream) -> Result<(), StreamError> {
        if self.recheck && self.reply.answered().await {
            tracing::debug!(service = %self.service, "request already answered; not called again");
            return Ok(());
        }
        let messages = Arc::new(Mutex::new(messages));
        let mut backoff = FIRST_BACKOFF;
        let response = loop {
            let taken = Arc::new(AtomicBool::new(false));
            let lent = lend(messages.clone(), taken.clone());
            let mut request = GrpcRequest::new(self.service.clone(), self.method.clone(), lent);
            request.scheme = self.scheme.clone();
            request.authority = self.authority.clone();
            request.metadata = self.metadata.clone();
            match self.exit.call(request).await {
                Err(status)
                    if status.code == Code::Unavailable && !taken.load(Ordering::Acquire) =>
                {
                    tracing::debug!(%status, service = %self.service, "service unavailable; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAXIMUM_BACKOFF);
                }
                other => break other,
            }
        };
        let mut response = match response {
            Ok(response) => response,
            Err(status) => return self.reply.finish(&status, Vec::new()).await,
        };
        let mut meta: Vec<Header> = meta_headers(&response.metadata).collect();
        while let Some(item) = response.items.next().await {
            match item {
                ResponseItem::Message(value) => {
                    self.reply
                        .produce(Some(value), std::mem::take(&mut meta))
                        .await?;
                }
                ResponseItem::Status(status) => return self.reply.finish(&status, meta).await,
            }
        }
        self.reply.finish(&Status::ok(), meta).await
    }
}

/// A stream that reads from `shared` and records in `taken` that it gave out a message, so a
/// call that failed before taking any can be tried again with the same messages.
fn lend(shared: Arc<Mutex<MessageStream>>, taken: Arc<AtomicBool>) -> MessageStream {
    Box::pin(futures_util::stream::poll_fn(move |context| {
        let mut stream = shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let polled = stream.as_mut().poll_next(context);
        if matches!(polled, std::task::Poll::Ready(Some(_))) {
            taken.store(true, Ordering::Release);
        }
        polled
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn idempotency_keys_come_from_correlation_ids() {
        assert_eq!(
            idempotency_key(
                b"59410e57-3e0f-4b61-9328-f645a7968ac8-d41d8cd98f00b204e9800998ecf8427e"
            ),
            "59410e57-3e0f-4b61-9328-f645a7968ac8"
        );
        assert_eq!(idempotency_key(b"plain"), "plain");
        assert_eq!(idempotency_key(b"a-short"), "a-short");
    }

    #[test]
    fn conditions_filter_on_reply_to_and_service() {
        let subscription = Subscription::compile(
            KafkaGrpcCondition {
                topic: "requests".into(),
                key: Some("k".into()),
                headers: Some([("h".to_owned(), "v".to_owned())].into()),
                reply_to: "responses".into(),
                method: Some("example.EchoService/*".into()),
            },
            &HeaderNames {
                service: Bytes::from_static(b"svc"),
                method: Bytes::from_static(b"m"),
                correlation_id: Bytes::from_static(b"c"),
                reply_to: Bytes::from_static(b"r"),
            },
        )
        .unwrap();
        assert_eq!(
            subscription.filter.conditions,
            vec![
                Condition::Key(Bytes::from_static(b"k")),
                Condition::Header {
                    name: Bytes::from_static(b"h"),
                    value: Bytes::from_static(b"v"),
                },
                Condition::Header {
                    name: Bytes::from_static(b"r"),
                    value: Bytes::from_static(b"responses"),
                },
                Condition::Header {
                    name: Bytes::from_static(b"svc"),
                    value: Bytes::from_static(b"example.EchoService"),
                },
            ]
        );
        assert!(
            subscription
                .method
                .as_ref()
                .unwrap()
                .matches("example.EchoService/EchoUnary")
        );
    }

    #[tokio::test]
    async fn a_lent_stream_says_whether_it_gave_anything() {
        let (sender, messages) = message_channel(4);
        let shared = Arc::new(Mutex::new(messages));
        let taken = Arc::new(AtomicBool::new(false));
        drop(lend(shared.clone(), taken.clone()));
        assert!(!taken.load(Ordering::Acquire));
        sender.send(Ok(Bytes::from_static(b"a"))).await.unwrap();
        let mut again = lend(shared, taken.clone());
        assert_eq!(again.next().await, Some(Ok(Bytes::from_static(b"a"))));
        assert!(taken.load(Ordering::Acquire));
    }
}
