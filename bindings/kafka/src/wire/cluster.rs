//! A client of a whole cluster: bootstrap, metadata, pooled broker connections, leader
//! routing, and retries after stale metadata or lost connections.
//!
//! Each broker gets up to three connections, one per [`Lane`]: a broker answers the requests
//! of one connection in order, so a fetch parked for its `max_wait` holds back everything
//! queued behind it. Metadata, offsets, configs, produce and group calls use the control lane;
//! one-off fetches ([`Cluster::fetch`]) the fetch lane; the long-lived parked fetch of a
//! broker's followed partitions ([`Cluster::fetch_parked`]) the parked lane.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use tokio::time::Instant;
use zilla_engine::stream::BytesHandler;

use super::configs::fill_topic_defaults;
use super::connection::{Connection, ConnectionConfig};
use super::error::{ErrorCode, KafkaError};
use super::partitioner::Partitioner;
use super::records::{
    BatchOptions, Compression, DecodeLimits, DecompressBudget, FetchedRecord, Record,
    decode_batches_within, encode_batch,
};
use super::types::*;

/// How a [`Cluster`] connects, caches and retries.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Bootstrap servers as `host:port`.
    pub bootstrap: Vec<String>,
    /// Settings of every broker connection.
    pub connection: ConnectionConfig,
    /// Cached topic metadata older than this is refreshed before use.
    pub metadata_max_age: Duration,
    /// First delay before reconnecting to a broker or retrying an operation.
    pub reconnect_backoff: Duration,
    /// Largest delay; the delay doubles per failure up to this.
    pub reconnect_backoff_max: Duration,
    /// How long an operation keeps retrying retriable failures before it returns the error.
    pub retry_timeout: Duration,
    /// Bounds applied when decoding fetched record batches.
    pub decode_limits: DecodeLimits,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            bootstrap: Vec::new(),
            connection: ConnectionConfig::default(),
            metadata_max_age: Duration::from_secs(300),
            reconnect_backoff: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(1),
            retry_timeout: Duration::from_secs(30),
            decode_limits: DecodeLimits::default(),
        }
    }
}

/// Settings of a produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceOptions {
    /// Acknowledgement level; with [`Acks::None`] the call returns once the request is queued.
    pub acks: Acks,
    /// How long the broker may wait for replication.
    pub timeout: Duration,
    /// Compression of the batch.
    pub compression: Compression,
    /// An idempotent producer's id, epoch and the sequence of the batch's first record:
    /// a batch the broker already has is acknowledged without being written again.
    pub idempotent: Option<(i64, i16, i32)>,
}

impl Default for ProduceOptions {
    fn default() -> Self {
        Self {
            acks: Acks::All,
            timeout: Duration::from_secs(30),
            compression: Compression::None,
            idempotent: None,
        }
    }
}

/// One partition's fetch result with decoded records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedPartition {
    /// Partition index.
    pub partition: i32,
    /// Error for the partition (e.g. OFFSET_OUT_OF_RANGE).
    pub error: ErrorCode,
    /// High watermark.
    pub high_watermark: i64,
    /// Last stable offset, `-1` when unknown.
    pub last_stable_offset: i64,
    /// Log start offset, `-1` when unknown.
    pub log_start_offset: i64,
    /// Records at or after the requested offset, without control records (and, with
    /// read-committed isolation, without aborted ones).
    pub records: Vec<FetchedRecord>,
    /// The offset to fetch next: past every complete batch received, including control
    /// batches and compacted gaps.
    pub next_offset: i64,
}

/// A broker's `host` and `port`.
pub type Endpoint = (String, u16);

/// Which of a broker's connections a request uses (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Metadata, offsets, configs, produce, groups and admin: requests the broker answers at
    /// once.
    Control,
    /// One-off fetches.
    Fetch,
    /// The fetch that parks at the log end for `max_wait`, shared by every partition followed
    /// on the broker.
    Parked,
    /// The fetch of partitions followed from behind their end (a history being cached): large
    /// answers that take the broker a while, which must not hold back the parked fetch's new
    /// records.
    CatchUp,
}

#[derive(Default)]
struct Slot {
    state: tokio::sync::Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    connection: Option<Connection>,
    failures: u32,
    retry_at: Option<Instant>,
}

struct CachedTopic {
    metadata: TopicMetadata,
    fetched: Instant,
}

#[derive(Default)]
struct State {
    brokers: BTreeMap<i32, Endpoint>,
    controller: Option<i32>,
    topics: HashMap<String, CachedTopic>,
    coordinators: HashMap<String, Endpoint>,
}

struct Inner {
    connector: Arc<dyn BytesHandler>,
    config: ClusterConfig,
    bootstrap: Vec<Endpoint>,
    state: Mutex<State>,
    pool: Mutex<HashMap<(Endpoint, Lane), Arc<Slot>>>,
    partitioner: Partitioner,
    offset_batches: Mutex<HashMap<OffsetBatchKey, Arc<OffsetBatch>>>,
}

/// What the partitions of one ListOffsets batch share.
type OffsetBatchKey = (String, OffsetSpec, Isolation);

/// ListOffsets calls for partitions of one topic made at the same time, answered by one
/// request per leader: a reader starting on every partition of a topic asks once rather
/// than once per partition (a broker that serves requests one at a time, as tansu does,
/// answers the last of 64 single requests only after 64 turns).
#[derive(Default)]
struct OffsetBatch {
    /// The partitions asked for, taken when the batch is sent.
    partitions: Mutex<Vec<i32>>,
    /// The answers so far, each leader's as it comes.
    answers: tokio::sync::watch::Sender<OffsetAnswers>,
}

#[derive(Default)]
struct OffsetAnswers {
    listed: HashMap<i32, ListedOffset>,
    /// Every leader answered or failed: a partition without an answer asks alone, with the
    /// usual retries.
    done: bool,
}

/// Sends an [`OffsetBatch`]; dropped unsent (its task dropped before it ran, as when the
/// runtime stops), it takes the batch out of the map, so that no later caller joins a batch
/// that will never be sent, and lets the callers waiting on it ask alone.
struct OffsetBatchSender {
    cluster: Cluster,
    key: OffsetBatchKey,
    batch: Arc<OffsetBatch>,
}

impl OffsetBatchSender {
    /// Takes the batch out of the map (if still there): later callers open a batch of their
    /// own.
    fn close(&self) {
        let mut batches = self
            .cluster
            .inner
            .offset_batches
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if batches
            .get(&self.key)
            .is_some_and(|open| Arc::ptr_eq(open, &self.batch))
        {
            batches.remove(&self.key);
        }
    }

    /// One ListOffsets request per leader of the batch's partitions (each asked once),
    /// with the topic's cached metadata: without it, or for a partition whose leader it does
    /// not know, the callers ask alone.
    async fn send(self) {
        // Let the callers polled with the first one join.
        tokio::task::yield_now().await;
        self.close();
        let mut partitions = std::mem::take(
            &mut *self
                .batch
                .partitions
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        partitions.sort_unstable();
        partitions.dedup();
        let (topic, spec, isolation) = &self.key;
        let mut by_leader: HashMap<Endpoint, Vec<(i32, OffsetSpec)>> = HashMap::new();
        if let Some(metadata) = self.cluster.cached_topic(topic) {
            for partition in partitions {
                if let Ok(leader) = self.cluster.leader_of(&metadata, partition) {
                    by_leader
                        .entry(leader)
                        .or_default()
                        .push((partition, *spec));
                }
            }
        }
        let requests = by_leader.into_iter().map(|(leader, partitions)| {
            let request = ListOffsetsRequest {
                topic: topic.clone(),
                partitions,
                isolation: *isolation,
            };
            let this = &self;
            async move {
                let listed = match this.cluster.connection_to_endpoint(&leader).await {
                    Ok(connection) => connection.call(&request).await,
                    Err(error) => Err(error),
                };
                match listed {
                    Ok(listed) => {
                        if listed.iter().any(|l| l.error.is_stale_metadata()) {
                            this.cluster.invalidate(topic);
                        }
                        this.batch.answers.send_modify(|answers| {
                            answers
                                .listed
                                .extend(listed.into_iter().map(|l| (l.partition, l)));
                        });
                    }
                    Err(error) if error.invalidates_metadata() => this.cluster.invalidate(topic),
                    Err(_) => {}
                }
            }
        });
        join_all(requests).await;
    }
}

impl Drop for OffsetBatchSender {
    fn drop(&mut self) {
        self.close();
        self.batch
            .answers
            .send_modify(|answers| answers.done = true);
    }
}

/// A Kafka client over many brokers. Clones share connections and metadata.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("bootstrap", &self.inner.bootstrap)
            .finish_non_exhaustive()
    }
}

/// Retries an operation with doubling delays until the retry timeout.
struct Retry {
    deadline: Instant,
    failures: u32,
    initial: Duration,
    max: Duration,
}

impl Retry {
    async fn after(&mut self, error: KafkaError) -> Result<(), KafkaError> {
        if !error.is_retriable() {
            return Err(error);
        }
        let delay = backoff(self.initial, self.max, self.failures);
        if Instant::now() + delay >= self.deadline {
            return Err(error);
        }
        self.failures += 1;
        tracing::debug!(%error, ?delay, "retrying kafka request");
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

fn backoff(initial: Duration, max: Duration, failures: u32) -> Duration {
    initial.saturating_mul(1u32 << failures.min(16)).min(max)
}

fn parse_endpoint(server: &str) -> Result<Endpoint, KafkaError> {
    let invalid =
        || KafkaError::InvalidArgument(format!("bootstrap server {server:?} is not host:port"));
    let (host, port) = server.trim().rsplit_once(':').ok_or_else(invalid)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(invalid());
    }
    Ok((host.to_owned(), port.parse().map_err(|_| invalid())?))
}

impl Cluster {
    /// A client that reaches brokers through `connector` (a tcp or tls client). Nothing is
    /// connected until the first call.
    pub fn new(
        connector: Arc<dyn BytesHandler>,
        config: ClusterConfig,
    ) -> Result<Self, KafkaError> {
        let bootstrap = config
            .bootstrap
            .iter()
            .map(|server| parse_endpoint(server))
            .collect::<Result<Vec<_>, _>>()?;
        if bootstrap.is_empty() {
            return Err(KafkaError::InvalidArgument("no bootstrap servers".into()));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                connector,
                config,
                bootstrap,
                state: Mutex::new(State::default()),
                pool: Mutex::new(HashMap::new()),
                partitioner: Partitioner::new(),
                offset_batches: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ClusterConfig {
        &self.inner.config
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is a cache: after a panic elsewhere it is still safe to read and refill.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn retry(&self) -> Retry {
        let config = &self.inner.config;
        Retry {
            deadline: Instant::now() + config.retry_timeout,
            failures: 0,
            initial: config.reconnect_backoff,
            max: config.reconnect_backoff_max,
        }
    }

    fn request_timeout(&self) -> Duration {
        self.inner.config.connection.request_timeout
    }

    /// The pooled control connection to `host:port`, opened (after the broker's backoff) when
    /// there is none or it has closed.
    pub async fn connection_to(&self, host: &str, port: u16) -> Result<Connection, KafkaError> {
        self.connection_on(&(host.to_owned(), port), Lane::Control)
            .await
    }

    /// The pooled connection to `endpoint` on `lane`, opened (after the broker's backoff) when
    /// there is none or it has closed.
    pub async fn connection_on(
        &self,
        endpoint: &Endpoint,
        lane: Lane,
    ) -> Result<Connection, KafkaError> {
        let (host, port) = (endpoint.0.as_str(), endpoint.1);
        let slot = {
            let mut pool = self.inner.pool.lock().unwrap_or_else(|e| e.into_inner());
            pool.entry((endpoint.clone(), lane)).or_default().clone()
        };
        let mut state = slot.state.lock().await;
        if let Some(connection) = &state.connection {
            if !connection.is_closed() {
                return Ok(connection.clone());
            }
            tracing::debug!(host, port, "kafka connection lost; reconnecting");
            state.connection = None;
        }
        if let Some(at) = state.retry_at {
            tokio::time::sleep_until(at).await;
        }
        let config = &self.inner.config;
        match Connection::open(&*self.inner.connector, host, port, &config.connection).await {
            Ok(connection) => {
                state.connection = Some(connection.clone());
                state.failures = 0;
                state.retry_at = None;
                Ok(connection)
            }
            Err(error) => {
                let delay = backoff(
                    config.reconnect_backoff,
                    config.reconnect_backoff_max,
                    state.failures,
                );
                state.failures = state.failures.saturating_add(1);
                state.retry_at = Some(Instant::now() + delay);
                tracing::debug!(host, port, %error, ?delay, "kafka connect failed");
                Err(error)
            }
        }
    }

    async fn connection_to_endpoint(&self, endpoint: &Endpoint) -> Result<Connection, KafkaError> {
        self.connection_on(endpoint, Lane::Control).await
    }

    /// A connection to any broker: an open pooled one if there is one, else the known brokers
    /// and then the bootstrap servers in turn.
    async fn any_connection(&self) -> Result<Connection, KafkaError> {
        let mut candidates: Vec<Endpoint> = self.state().brokers.values().cloned().collect();
        for endpoint in &self.inner.bootstrap {
            if !candidates.contains(endpoint) {
                candidates.push(endpoint.clone());
            }
        }
        {
            let pool = self.inner.pool.lock().unwrap_or_else(|e| e.into_inner());
            for endpoint in &candidates {
                if let Some(slot) = pool.get(&(endpoint.clone(), Lane::Control))
                    && let Ok(state) = slot.state.try_lock()
                    && let Some(connection) = &state.connection
                    && !connection.is_closed()
                {
                    return Ok(connection.clone());
                }
            }
        }
        let mut last_error = None;
        for endpoint in &candidates {
            match self.connection_to_endpoint(endpoint).await {
                Ok(connection) => return Ok(connection),
                Err(error @ KafkaError::Authentication(_)) => return Err(error),
                Err(error) => last_error = Some(error),
            }
        }
        Err(KafkaError::NoBroker(
            last_error.map_or_else(|| "no servers".into(), |e| e.to_string()),
        ))
    }

    /// Fetches metadata for `topics` (all topics for `None`) and refreshes the caches.
    pub async fn metadata(&self, topics: Option<&[&str]>) -> Result<Metadata, KafkaError> {
        let request = MetadataRequest {
            topics: topics.map(|t| t.iter().map(|s| (*s).to_owned()).collect()),
            allow_auto_topic_creation: false,
        };
        let metadata = self.call_any(&request, Ok).await?;
        self.remember(&metadata);
        Ok(metadata)
    }

    /// Sends `request` to any broker, retrying what [`Retry`] retries; `accept` turns the
    /// response into the result, its error failing the attempt (and so retried when
    /// retriable).
    async fn call_any<R: super::codec::Request, T>(
        &self,
        request: &R,
        accept: impl Fn(R::Response) -> Result<T, KafkaError>,
    ) -> Result<T, KafkaError> {
        let mut retry = self.retry();
        loop {
            let attempt = async {
                let connection = self.any_connection().await?;
                accept(connection.call(request).await?)
            };
            match attempt.await {
                Ok(accepted) => return Ok(accepted),
                Err(error) => retry.after(error).await?,
            }
        }
    }

    fn remember(&self, metadata: &Metadata) {
        let now = Instant::now();
        let mut state = self.state();
        for broker in &metadata.brokers {
            state
                .brokers
                .insert(broker.node_id, (broker.host.clone(), broker.port));
        }
        if metadata.controller_id >= 0 {
            state.controller = Some(metadata.controller_id);
        }
        for topic in &metadata.topics {
            if topic.error.is_ok() {
                state.topics.insert(
                    topic.name.clone(),
                    CachedTopic {
                        metadata: topic.clone(),
                        fetched: now,
                    },
                );
            } else {
                state.topics.remove(&topic.name);
            }
        }
    }

    /// Forgets the cached metadata of `topic`, so the next use refreshes it.
    pub fn invalidate(&self, topic: &str) {
        self.state().topics.remove(topic);
    }

    /// The metadata of `topic`, from the cache when fresh.
    pub async fn topic(&self, topic: &str) -> Result<TopicMetadata, KafkaError> {
        {
            let state = self.state();
            if let Some(cached) = state.topics.get(topic)
                && cached.fetched.elapsed() < self.inner.config.metadata_max_age
            {
                return Ok(cached.metadata.clone());
            }
        }
        let metadata = self.metadata(Some(&[topic])).await?;
        let found = metadata
            .topics
            .into_iter()
            .find(|t| t.name == topic)
            .ok_or_else(|| KafkaError::UnknownTopic(topic.to_owned()))?;
        match found.error {
            ErrorCode::NONE => Ok(found),
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION => {
                Err(KafkaError::UnknownTopic(topic.to_owned()))
            }
            code => Err(KafkaError::Broker {
                api: "Metadata",
                code,
                message: None,
            }),
        }
    }

    /// The number of partitions of `topic`.
    pub async fn partition_count(&self, topic: &str) -> Result<u32, KafkaError> {
        Ok(self.topic(topic).await?.partitions.len() as u32)
    }

    /// The partition a record with `key` goes to: Kafka's murmur2 for keys, round-robin for
    /// null keys.
    pub async fn partition_for(&self, topic: &str, key: Option<&[u8]>) -> Result<i32, KafkaError> {
        let count = self.partition_count(topic).await?;
        self.inner
            .partitioner
            .partition(key, count)
            .map(|p| p as i32)
            .ok_or_else(|| KafkaError::UnknownTopic(topic.to_owned()))
    }

    fn leader_of(&self, topic: &TopicMetadata, partition: i32) -> Result<Endpoint, KafkaError> {
        let no_leader = || KafkaError::NoLeader {
            topic: topic.name.clone(),
            partition,
        };
        let leader = topic
            .partitions
            .iter()
            .find(|p| p.partition == partition)
            .filter(|p| p.leader >= 0)
            .ok_or_else(no_leader)?
            .leader;
        self.state()
            .brokers
            .get(&leader)
            .cloned()
            .ok_or_else(no_leader)
    }

    /// The leader of `topic`/`partition`, from the cached metadata when fresh.
    pub async fn leader(&self, topic: &str, partition: i32) -> Result<Endpoint, KafkaError> {
        let metadata = self.topic(topic).await?;
        self.leader_of(&metadata, partition)
    }

    async fn leader_connection(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<(TopicMetadata, Connection), KafkaError> {
        let metadata = self.topic(topic).await?;
        let endpoint = self.leader_of(&metadata, partition)?;
        Ok((metadata, self.connection_to_endpoint(&endpoint).await?))
    }

    /// Produces `records` as one batch to `topic`/`partition`. Returns the base offset, or
    /// `None` with [`Acks::None`], where the broker does not answer, and for an idempotent
    /// batch the broker already had.
    ///
    /// Lost connections and leader moves are retried, so a batch whose acknowledgement was
    /// lost may be written twice (at-least-once), unless it is idempotent.
    pub async fn produce(
        &self,
        topic: &str,
        partition: i32,
        records: &[Record],
        options: &ProduceOptions,
    ) -> Result<Option<i64>, KafkaError> {
        let mut batch_options = BatchOptions {
            compression: options.compression,
            ..BatchOptions::default()
        };
        if let Some((producer_id, producer_epoch, base_sequence)) = options.idempotent {
            batch_options.producer_id = producer_id;
            batch_options.producer_epoch = producer_epoch;
            batch_options.base_sequence = base_sequence;
        }
        let batch = encode_batch(records, &batch_options)?;
        let mut retry = self.retry();
        loop {
            let attempt = async {
                let (metadata, connection) = self.leader_connection(topic, partition).await?;
                let request = ProduceRequest {
                    topic: topic.to_owned(),
                    topic_id: metadata.id,
                    partition,
                    records: batch.clone(),
                    acks: options.acks,
                    timeout: options.timeout,
                    transactional_id: None,
                };
                if options.acks == Acks::None {
                    connection.send(&request).await?;
                    return Ok(None);
                }
                let response = connection
                    .call_within(&request, self.request_timeout() + options.timeout)
                    .await?;
                if response.error.is_ok() {
                    Ok(Some(response.base_offset))
                } else if options.idempotent.is_some()
                    && response.error == ErrorCode::DUPLICATE_SEQUENCE_NUMBER
                {
                    // Written before (a retry whose first answer was lost, or a resend).
                    Ok(None)
                } else {
                    Err(KafkaError::Broker {
                        api: "Produce",
                        code: response.error,
                        message: response.error_message,
                    })
                }
            };
            match attempt.await {
                Ok(offset) => return Ok(offset),
                Err(error) => {
                    if error.invalidates_metadata() {
                        self.invalidate(topic);
                    }
                    retry.after(error).await?;
                }
            }
        }
    }

    /// Fetches `partitions` of `topic` from their leaders (one request per leader, in
    /// parallel) and decodes the records.
    pub async fn fetch(
        &self,
        topic: &str,
        partitions: &[FetchPartition],
        options: &FetchOptions,
    ) -> Result<Vec<FetchedPartition>, KafkaError> {
        let wanted: HashMap<i32, i64> =
            partitions.iter().map(|p| (p.partition, p.offset)).collect();
        let mut results: BTreeMap<i32, FetchedPartition> = BTreeMap::new();
        let mut pending: Vec<FetchPartition> = partitions.to_vec();
        let mut retry = self.retry();
        // One decompression budget for everything this fetch brings.
        let mut decompress = self.decompress_budget();
        while !pending.is_empty() {
            let mut failed = Vec::new();
            let mut last_error = None;
            match self.topic(topic).await {
                Err(error) => {
                    failed = pending.clone();
                    last_error = Some(error);
                }
                Ok(metadata) => {
                    let mut by_leader: HashMap<Endpoint, Vec<FetchPartition>> = HashMap::new();
                    for partition in &pending {
                        match self.leader_of(&metadata, partition.partition) {
                            Ok(endpoint) => by_leader.entry(endpoint).or_default().push(*partition),
                            Err(error) => {
                                failed.push(*partition);
                                last_error = Some(error);
                            }
                        }
                    }
                    let requests = by_leader.into_iter().map(|(endpoint, partitions)| {
                        let metadata = &metadata;
                        async move {
                            let outcome = self
                                .fetch_from(&endpoint, metadata, partitions.clone(), options)
                                .await;
                            (partitions, outcome)
                        }
                    });
                    for (partitions, outcome) in join_all(requests).await {
                        match outcome {
                            Ok(response) => {
                                for raw in response {
                                    if raw.error.is_stale_metadata() {
                                        if let Some(p) =
                                            partitions.iter().find(|p| p.partition == raw.partition)
                                        {
                                            failed.push(*p);
                                        }
                                        last_error = Some(KafkaError::Broker {
                                            api: "Fetch",
                                            code: raw.error,
                                            message: None,
                                        });
                                        continue;
                                    }
                                    let offset = wanted.get(&raw.partition).copied().unwrap_or(0);
                                    let decoded = self.decode_partition_within(
                                        raw,
                                        offset,
                                        options,
                                        &mut decompress,
                                    )?;
                                    results.insert(decoded.partition, decoded);
                                }
                            }
                            Err(error) => {
                                failed.extend(partitions);
                                last_error = Some(error);
                            }
                        }
                    }
                }
            }
            if failed.is_empty() {
                break;
            }
            self.invalidate(topic);
            let error = last_error.unwrap_or(KafkaError::ConnectionClosed);
            retry.after(error).await?;
            pending = failed;
        }
        Ok(results.into_values().collect())
    }

    async fn fetch_from(
        &self,
        endpoint: &Endpoint,
        metadata: &TopicMetadata,
        partitions: Vec<FetchPartition>,
        options: &FetchOptions,
    ) -> Result<Vec<FetchResponsePartition>, KafkaError> {
        let connection = self.connection_on(endpoint, Lane::Fetch).await?;
        let request = FetchRequest {
            options: *options,
            topics: vec![FetchTopic {
                name: metadata.name.clone(),
                id: metadata.id,
                partitions,
            }],
        };
        let response = connection
            .call_within(&request, self.request_timeout() + options.max_wait)
            .await?;
        response.error.check("Fetch")?;
        Ok(response
            .topics
            .into_iter()
            .flat_map(|t| t.partitions)
            .collect())
    }

    /// Sends one Fetch of `topics` to the broker at `endpoint` on its [`Lane::Parked`]
    /// connection, so the broker may park it for `max_wait` without holding back any other
    /// request. The records are left undecoded ([`Cluster::decode_partition`]).
    pub async fn fetch_parked(
        &self,
        endpoint: &Endpoint,
        topics: Vec<FetchTopic>,
        options: &FetchOptions,
    ) -> Result<FetchResponse, KafkaError> {
        self.fetch_on(endpoint, Lane::Parked, topics, options).await
    }

    /// Sends one Fetch of `topics` to the broker at `endpoint` on `lane`'s connection
    /// ([`Lane::Parked`] or [`Lane::CatchUp`]). The records are left undecoded.
    pub async fn fetch_on(
        &self,
        endpoint: &Endpoint,
        lane: Lane,
        topics: Vec<FetchTopic>,
        options: &FetchOptions,
    ) -> Result<FetchResponse, KafkaError> {
        let connection = self.connection_on(endpoint, lane).await?;
        let request = FetchRequest {
            options: *options,
            topics,
        };
        let response = connection
            .call_within(&request, self.request_timeout() + options.max_wait)
            .await?;
        response.error.check("Fetch")?;
        Ok(response)
    }

    /// Decodes a fetched partition from `offset` on: records of batches that began before
    /// it, control records and (read-committed) aborted records are left out.
    pub fn decode_partition(
        &self,
        raw: FetchResponsePartition,
        offset: i64,
        options: &FetchOptions,
    ) -> Result<FetchedPartition, KafkaError> {
        self.decode_partition_within(raw, offset, options, &mut self.decompress_budget())
    }

    /// The decompression budget of one fetch response ([`DecodeLimits`]).
    pub fn decompress_budget(&self) -> DecompressBudget {
        DecompressBudget::new(&self.inner.config.decode_limits)
    }

    /// [`Cluster::decode_partition`], taking what decompression uses from `budget`, shared by
    /// the partitions of one response. Batches past the budget are left for the next fetch
    /// (the partition's next offset stops before them).
    pub fn decode_partition_within(
        &self,
        raw: FetchResponsePartition,
        offset: i64,
        options: &FetchOptions,
        budget: &mut DecompressBudget,
    ) -> Result<FetchedPartition, KafkaError> {
        let (batches, _) = decode_batches_within(raw.records, budget)?;
        let mut aborted_from: Vec<(i64, i64)> = raw.aborted_transactions.clone();
        aborted_from.sort_by_key(|(_, first)| *first);
        let mut aborting: HashSet<i64> = HashSet::new();
        let mut next_offset = offset;
        let mut records = Vec::new();
        for batch in batches {
            next_offset = next_offset.max(batch.last_offset.saturating_add(1));
            if options.isolation == Isolation::ReadCommitted {
                // Producers whose aborted transaction starts at or before this batch.
                aborted_from.retain(|(producer, first)| {
                    if *first <= batch.last_offset {
                        aborting.insert(*producer);
                        false
                    } else {
                        true
                    }
                });
                if batch.control {
                    aborting.remove(&batch.producer_id);
                    continue;
                }
                if batch.transactional && aborting.contains(&batch.producer_id) {
                    continue;
                }
            }
            if batch.control {
                continue;
            }
            records.extend(batch.records.into_iter().filter(|r| r.offset >= offset));
        }
        Ok(FetchedPartition {
            partition: raw.partition,
            error: raw.error,
            high_watermark: raw.high_watermark,
            last_stable_offset: raw.last_stable_offset,
            log_start_offset: raw.log_start_offset,
            records,
            next_offset,
        })
    }

    /// Finds an offset of `topic`/`partition` on its leader. A timestamp spec must be
    /// non-negative: the special timestamp -3 (max timestamp) is never sent.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: i32,
        spec: OffsetSpec,
        isolation: Isolation,
    ) -> Result<ListedOffset, KafkaError> {
        spec.timestamp()?;
        let mut retry = self.retry();
        // The batch's wait counts in the retry window, which the retries alone after it share
        // (the first of them is made even past it, as before the batch).
        let batched = tokio::time::timeout_at(
            retry.deadline,
            self.batched_offset(topic, partition, spec, isolation),
        );
        if let Ok(Some(listed)) = batched.await
            && listed.error == ErrorCode::NONE
        {
            return Ok(listed);
        }
        let request = ListOffsetsRequest {
            topic: topic.to_owned(),
            partitions: vec![(partition, spec)],
            isolation,
        };
        loop {
            let attempt = async {
                let (_, connection) = self.leader_connection(topic, partition).await?;
                let listed = connection
                    .call(&request)
                    .await?
                    .into_iter()
                    .find(|l| l.partition == partition)
                    .ok_or_else(|| KafkaError::malformed("ListOffsets", "partition missing"))?;
                listed.error.check("ListOffsets")?;
                Ok::<_, KafkaError>(listed)
            };
            match attempt.await {
                Ok(listed) => return Ok(listed),
                Err(error) => {
                    if error.invalidates_metadata() {
                        self.invalidate(topic);
                    }
                    retry.after(error).await?;
                }
            }
        }
    }

    /// The metadata of `topic` if cached, however old.
    fn cached_topic(&self, topic: &str) -> Option<TopicMetadata> {
        self.state()
            .topics
            .get(topic)
            .map(|cached| cached.metadata.clone())
    }

    /// `partition`'s answer from a batch of the ListOffsets calls made at the same time for
    /// `topic` ([`OffsetBatch`]); `None` when the batch got none for it.
    async fn batched_offset(
        &self,
        topic: &str,
        partition: i32,
        spec: OffsetSpec,
        isolation: Isolation,
    ) -> Option<ListedOffset> {
        let mut answers = {
            let mut batches = self
                .inner
                .offset_batches
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let key = (topic.to_owned(), spec, isolation);
            let batch = match batches.get(&key) {
                Some(batch) => batch.clone(),
                None => {
                    let batch = Arc::new(OffsetBatch::default());
                    batches.insert(key.clone(), batch.clone());
                    // Sent by a task of its own, so that no caller's cancellation strands
                    // the others, once the callers polled with this one have joined.
                    let sender = OffsetBatchSender {
                        cluster: self.clone(),
                        key,
                        batch: batch.clone(),
                    };
                    tokio::spawn(sender.send());
                    batch
                }
            };
            // Joined while the batch is still open: it is taken out of the map, under the
            // same lock, before its partitions are.
            batch
                .partitions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(partition);
            batch.answers.subscribe()
        };
        let answers = answers
            .wait_for(|answers| answers.done || answers.listed.contains_key(&partition))
            .await
            .ok()?;
        answers.listed.get(&partition).copied()
    }

    /// The configs of `topic`, completed with Kafka's defaults for every config the broker
    /// did not return (see [`ConfigSource::KafkaDefault`]).
    pub async fn describe_configs(&self, topic: &str) -> Result<TopicConfigs, KafkaError> {
        let request = DescribeConfigsRequest {
            topic: topic.to_owned(),
        };
        let mut configs = self
            .call_any(&request, |response| {
                response
                    .error
                    .check_with("DescribeConfigs", response.message)?;
                Ok(response.configs)
            })
            .await?;
        fill_topic_defaults(&mut configs);
        Ok(configs)
    }

    /// Creates topics (through the controller when known). Per-topic errors are in the
    /// results.
    pub async fn create_topics(
        &self,
        topics: &[NewTopic],
        timeout: Duration,
    ) -> Result<Vec<TopicResult>, KafkaError> {
        let request = CreateTopicsRequest {
            topics: topics.to_vec(),
            timeout,
        };
        self.topics_call(&request, timeout, topics.iter().map(|t| t.name.as_str()))
            .await
    }

    /// Deletes topics (through the controller when known). Per-topic errors are in the
    /// results.
    pub async fn delete_topics(
        &self,
        topics: &[&str],
        timeout: Duration,
    ) -> Result<Vec<TopicResult>, KafkaError> {
        let request = DeleteTopicsRequest {
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            timeout,
        };
        self.topics_call(&request, timeout, topics.iter().copied())
            .await
    }

    /// Sends a topic admin request (given `timeout` on the broker) to the controller, then
    /// forgets the cached metadata of the `changed` topics.
    async fn topics_call<'a, R: super::codec::Request>(
        &self,
        request: &R,
        timeout: Duration,
        changed: impl IntoIterator<Item = &'a str>,
    ) -> Result<R::Response, KafkaError> {
        let connection = self.controller_connection().await?;
        let results = connection
            .call_within(request, self.request_timeout() + timeout)
            .await?;
        for topic in changed {
            self.invalidate(topic);
        }
        Ok(results)
    }

    async fn controller_connection(&self) -> Result<Connection, KafkaError> {
        let controller = {
            let state = self.state();
            state
                .controller
                .and_then(|id| state.brokers.get(&id).cloned())
        };
        match controller {
            Some(endpoint) => self.connection_to_endpoint(&endpoint).await,
            None => self.any_connection().await,
        }
    }

    /// Gets a producer id for an idempotent (no transactional id) or transactional producer.
    pub async fn init_producer_id(
        &self,
        transactional_id: Option<&str>,
        transaction_timeout: Duration,
    ) -> Result<ProducerIdentity, KafkaError> {
        let request = InitProducerIdRequest {
            transactional_id: transactional_id.map(str::to_owned),
            transaction_timeout,
        };
        let mut retry = self.retry();
        loop {
            let attempt = async {
                let connection = match transactional_id {
                    Some(id) => self.coordinator_connection(id, 1).await?,
                    None => self.any_connection().await?,
                };
                let identity = connection.call(&request).await?;
                identity.error.check("InitProducerId")?;
                Ok(identity)
            };
            match attempt.await {
                Ok(identity) => return Ok(identity),
                Err(error) => {
                    if let Some(id) = transactional_id {
                        self.forget_coordinator(id, &error);
                    }
                    retry.after(error).await?;
                }
            }
        }
    }

    /// Finds the coordinator of `group` (and caches it for the group calls).
    pub async fn find_coordinator(&self, group: &str) -> Result<Coordinator, KafkaError> {
        self.lookup_coordinator(group, 0).await
    }

    async fn lookup_coordinator(&self, key: &str, key_type: i8) -> Result<Coordinator, KafkaError> {
        let request = FindCoordinatorRequest {
            key: key.to_owned(),
            key_type,
        };
        let coordinator = self
            .call_any(&request, |response| {
                response
                    .error
                    .check_with("FindCoordinator", response.error_message)?;
                Ok(response.coordinator)
            })
            .await?;
        self.state().coordinators.insert(
            coordinator_key(key, key_type),
            (coordinator.host.clone(), coordinator.port),
        );
        Ok(coordinator)
    }

    async fn coordinator_connection(
        &self,
        key: &str,
        key_type: i8,
    ) -> Result<Connection, KafkaError> {
        let cached = self
            .state()
            .coordinators
            .get(&coordinator_key(key, key_type))
            .cloned();
        let endpoint = match cached {
            Some(endpoint) => endpoint,
            None => {
                let coordinator = self.lookup_coordinator(key, key_type).await?;
                (coordinator.host, coordinator.port)
            }
        };
        self.connection_to_endpoint(&endpoint).await
    }

    fn forget_coordinator(&self, key: &str, error: &KafkaError) {
        let stale = error.code().is_some_and(ErrorCode::is_stale_coordinator)
            || error.invalidates_metadata();
        if stale {
            let mut state = self.state();
            state.coordinators.remove(&coordinator_key(key, 0));
            state.coordinators.remove(&coordinator_key(key, 1));
        }
    }

    /// Sends a group request to the group's coordinator, re-finding the coordinator when it
    /// moved. Returns the response and its error code; group protocol errors (rebalance,
    /// unknown member...) are left to the caller.
    async fn group_call<R: super::codec::Request>(
        &self,
        group: &str,
        request: &R,
        timeout: Duration,
        error_of: fn(&R::Response) -> ErrorCode,
    ) -> Result<R::Response, KafkaError> {
        let mut retry = self.retry();
        loop {
            let attempt = async {
                let connection = self.coordinator_connection(group, 0).await?;
                let response = connection.call_within(request, timeout).await?;
                let code = error_of(&response);
                if code.is_stale_coordinator() {
                    return Err(KafkaError::Broker {
                        api: R::API.name(),
                        code,
                        message: None,
                    });
                }
                Ok(response)
            };
            match attempt.await {
                Ok(response) => return Ok(response),
                Err(error) => {
                    self.forget_coordinator(group, &error);
                    retry.after(error).await?;
                }
            }
        }
    }

    /// Joins a group. A broker asking for a member id (MEMBER_ID_REQUIRED) is answered by
    /// rejoining with the id it gave. Group errors are returned as [`KafkaError::Broker`].
    pub async fn join_group(
        &self,
        request: &JoinGroupRequest,
    ) -> Result<JoinGroupResponse, KafkaError> {
        let timeout = self.request_timeout() + request.rebalance_timeout;
        let mut response = self
            .group_call(&request.group_id, request, timeout, |r| r.error)
            .await?;
        if response.error == ErrorCode::MEMBER_ID_REQUIRED {
            let rejoin = JoinGroupRequest {
                member_id: response.member_id.clone(),
                ..request.clone()
            };
            response = self
                .group_call(&rejoin.group_id, &rejoin, timeout, |r| r.error)
                .await?;
        }
        response.error.check("JoinGroup")?;
        Ok(response)
    }

    /// Sends the group's assignments (leader) or gets this member's (followers).
    pub async fn sync_group(&self, request: &SyncGroupRequest) -> Result<Bytes, KafkaError> {
        let timeout = self.request_timeout();
        let response = self
            .group_call(&request.group_id, request, timeout, |r| r.error)
            .await?;
        response.error.check("SyncGroup")?;
        Ok(response.assignment)
    }

    /// Keeps a member alive; REBALANCE_IN_PROGRESS comes back as a [`KafkaError::Broker`].
    pub async fn heartbeat(&self, request: &HeartbeatRequest) -> Result<(), KafkaError> {
        let response = self
            .group_call(&request.group_id, request, self.request_timeout(), |r| {
                r.error
            })
            .await?;
        response.error.check("Heartbeat")
    }

    /// Leaves a group.
    pub async fn leave_group(&self, request: &LeaveGroupRequest) -> Result<(), KafkaError> {
        let response = self
            .group_call(&request.group_id, request, self.request_timeout(), |r| {
                r.error
            })
            .await?;
        response.error.check("LeaveGroup")
    }

    /// The committed offsets of a group for partitions of a topic.
    pub async fn offset_fetch(
        &self,
        request: &OffsetFetchRequest,
    ) -> Result<Vec<CommittedOffset>, KafkaError> {
        let response = self
            .group_call(&request.group_id, request, self.request_timeout(), |r| {
                first_error(std::iter::once(r.error).chain(r.offsets.iter().map(|o| o.error)))
            })
            .await?;
        response.error.check("OffsetFetch")?;
        for offset in &response.offsets {
            offset.error.check("OffsetFetch")?;
        }
        Ok(response.offsets)
    }

    /// Commits offsets of a group for partitions of a topic.
    pub async fn offset_commit(&self, request: &OffsetCommitRequest) -> Result<(), KafkaError> {
        let response = self
            .group_call(&request.group_id, request, self.request_timeout(), |r| {
                first_error(r.partitions.iter().map(|(_, code)| *code))
            })
            .await?;
        for (_, code) in &response.partitions {
            code.check("OffsetCommit")?;
        }
        Ok(())
    }
}

fn coordinator_key(key: &str, key_type: i8) -> String {
    format!("{key_type}:{key}")
}

fn first_error(codes: impl IntoIterator<Item = ErrorCode>) -> ErrorCode {
    codes
        .into_iter()
        .find(|code| !code.is_ok())
        .unwrap_or(ErrorCode::NONE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let initial = Duration::from_millis(50);
        let max = Duration::from_secs(1);
        let delays: Vec<_> = (0..7)
            .map(|f| backoff(initial, max, f).as_millis())
            .collect();
        assert_eq!(delays, [50, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff(initial, max, 1000), max);
    }

    /// A connector that never connects: the test below sends nothing.
    struct Unreachable;

    impl BytesHandler for Unreachable {
        fn connect(
            &self,
            _info: zilla_engine::stream::StreamInfo,
        ) -> zilla_engine::stream::BoxFuture<
            '_,
            Result<zilla_engine::stream::ByteStream, zilla_engine::stream::StreamError>,
        > {
            Box::pin(async { Err(zilla_engine::stream::StreamError::NoRoute) })
        }
    }

    /// A batch whose sending task is dropped before it runs (the runtime stopping) leaves the
    /// map, and its callers are told it is done: none waits on it, and a later call opens a
    /// batch of its own.
    #[test]
    fn a_batch_never_sent_leaves_no_one_waiting() {
        let config = ClusterConfig {
            bootstrap: vec!["127.0.0.1:9".into()],
            ..ClusterConfig::default()
        };
        let cluster = Cluster::new(Arc::new(Unreachable), config).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut answers = runtime.block_on(async {
            let waiting = cluster.batched_offset("t", 0, OffsetSpec::Latest, Isolation::default());
            let mut waiting = std::pin::pin!(waiting);
            // Joined (and its sender spawned), not answered.
            assert!(futures_util::poll!(waiting.as_mut()).is_pending());
            let batches = cluster.inner.offset_batches.lock().unwrap();
            let batch = batches.values().next().unwrap();
            batch.answers.subscribe()
        });
        assert_eq!(cluster.inner.offset_batches.lock().unwrap().len(), 1);
        drop(runtime);
        assert!(cluster.inner.offset_batches.lock().unwrap().is_empty());
        assert!(answers.borrow_and_update().done);
    }

    #[test]
    fn bootstrap_servers_parse() {
        assert_eq!(
            parse_endpoint("localhost:9092").unwrap(),
            ("localhost".to_owned(), 9092)
        );
        assert_eq!(
            parse_endpoint("[::1]:9092").unwrap(),
            ("::1".to_owned(), 9092)
        );
        assert!(parse_endpoint("localhost").is_err());
        assert!(parse_endpoint(":9092").is_err());
        assert!(parse_endpoint("host:99999").is_err());
    }
}
