//! The Kafka cache: `cache_server` fetches each topic-partition once per gateway and keeps its
//! records in memory; every subscriber reads that shared log with its own cursor, so any
//! number of subscribers cost one fetch per partition, and a slow subscriber only slows itself
//! (the log is shared, never copied per subscriber). Filters are evaluated on the shared
//! records; a filter on a header value (or a key, on topics that are not compacted) is looked
//! up in the partition's record index, so the reader reads only records that can pass. On
//! compacted topics a replay skips records a later one with the same key replaced; it starts
//! once the cache has fetched up to the replay's end, since only then is that known.
//!
//! Memory is bounded for the whole gateway (`zilla.binding.kafka.cache.memory.bytes`, default
//! 256 MiB, shared by every `cache_server`; see [`MemoryBudget`]) and per partition
//! (`zilla.binding.kafka.cache.partition.bytes`: by default 4 MiB with a disk tier, where
//! memory is only the hot tail in front of segment files that hold every record and the OS
//! page cache that the kernel can reclaim; 64 MiB without one). The count is of the bytes
//! really held: records are copied out of their fetch response, so none keeps a fetch frame
//! or a decompressed batch alive. Past a bound, superseded records of compacted topics go
//! first, then the oldest records of the coldest partitions (unread ones, then the least
//! recently read).
//!
//! The topic configs that make Kafka drop records are honoured, checked each time a fetch of
//! the partition brings something and, between fetches, every tenth of the age that applies
//! (within 1 s to 60 s). Records older than `retention.ms` are dropped (topics that are not
//! compacted). On topics whose `cleanup.policy` has `delete`, a partition keeps at most
//! `retention.bytes` (`-1`: no limit): in memory the smaller of it and the partition bound,
//! counted as above, and in segment files, where the oldest whole segments go but never the
//! one being written ([`DiskLog::retain_bytes`]). Both count records uncompressed, memory with
//! each record's overhead too, so for the same records the cache counts more bytes than Kafka
//! and drops them sooner: a reader then gets them from Kafka. On compacted topics a tombstone more than
//! `delete.retention.ms` old is removed (see [`crate::cache_log`]): latest-per-key replays no
//! longer yield it nor the records of its key before it, and an item lookup of its key finds
//! nothing without a fetch, as for a key never written. Ages are record timestamps against the
//! gateway's clock; a record without one is kept. A reader of an offset dropped by any of
//! these rules is served as for any offset the cache no longer holds: from disk if there, else
//! read through from Kafka.
//!
//! With a disk tier ([`Cache::with_disk`], as every `cache_server` has unless
//! `zilla.binding.kafka.cache.disk.bytes` is 0) every record fetched for a partition's history
//! is also written to its segment files ([`crate::cache_disk`]). A subscriber whose cursor is
//! before what memory holds, or at a record dropped from the middle, reads from those files a
//! block at a time; readers at the same place share the decoded block, counted in the memory
//! budget while held. Only what the disk does not hold either is read through from Kafka;
//! only when Kafka no longer has the offset does the reader move on, to Kafka's log start.
//! What a reader reads through is copied into its own buffer, at most 1 MiB per fetch (more
//! only for a single batch larger than that).
//!
//! The segment files are never written on a worker, nor read there but for blocks already
//! in the OS page cache: a worker serves thousands of connections, and a read that misses
//! the page cache or a slow disk would stall them all (see [`crate::cache_disk`] for how the
//! partition's lock stays clear of the disk). A fetch
//! is written, and the segments that retention, `retention.bytes` and the disk budget no
//! longer keep are deleted, on tokio's blocking pool; the partition's fetch task awaits the
//! write before its records enter memory (a reader that no longer finds a record in memory
//! finds it on disk) and before the next fetch is written (the files keep the partition's
//! order). A reader needing a block that no reader holds looks it up in the in-memory block
//! table on its worker; on Linux it reads the block there if its bytes are all in the page
//! cache (`RWF_NOWAIT`: a trip to the blocking pool would cost more than the read), else it
//! waits while the blocking pool reads and decodes it, and readers needing the same block
//! meanwhile wait for that same read. A block that cannot be read drops the segment files
//! through it, on the pool too.
//!
//! A topic that has had no reader for `zilla.binding.kafka.cache.idle.evict.millis` (default
//! 60 s) is evicted: its fetches stop and its records are dropped; `bootstrap` topics stay.
//! While a partition's history is still being fetched, live readers are served from a second
//! fetch that follows the partition's end (where that end is, a reader starting on many
//! partitions asks the broker in one ListOffsets request per leader); what it brings is kept in memory only (at most
//! `zilla.binding.kafka.cache.partition.bytes` when set, else 64 MiB, and never less than one
//! fetch). A read of one key of a compacted topic starts at
//! the key's latest record and then skips everything else the key index covers (the
//! per-partition key index, which outlives eviction), so an item lookup costs one small
//! fetch of its record whether or not the cache still holds it.
//!
//! Partitions are followed through the upstream's [`KafkaHandler::follow`]: with the `client`
//! kind, one fetch session per broker on a connection of its own, so subscribing, produce and
//! offset probes never queue behind a fetch parked at the log end.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::{FutureExt, Shared};
use futures_util::{StreamExt, stream};
use tokio::sync::{OnceCell, watch};
use tokio_util::sync::CancellationToken;
use zilla_engine::stream::{BoxFuture, StreamError};

use crate::cache_budget::Evictable;
pub use crate::cache_budget::MemoryBudget;
use crate::cache_disk::{
    BlockError, BlockMeta, DiskBlock, DiskEvictable, DiskLog, Located, Removed,
};
pub use crate::cache_disk::{DiskBudget, DiskTuning};
use crate::cache_log::{Chunk, Log, compact};
use crate::kind::{
    Condition, FetchBatch, FetchRequest, Filter, FollowStream, KafkaHandler, MergedItem,
    MergedRequest, MergedStream, Message, OffsetSpec, PartitionOffset, ProduceAck, ProduceRequest,
    ProducerIdentity, Start, TopicConfig, TopicMetadata, passes,
};
use crate::transforms::Transform;

/// Cache tuning, from `zilla.binding.kafka.cache.*` properties.
#[derive(Debug, Clone, Copy)]
pub struct CacheTuning {
    /// Bytes kept per partition.
    pub partition_bytes: usize,
    /// Bytes kept of what a partition's tail fetched while its history is still being
    /// fetched: only in memory (segment files take a partition's records in order, from
    /// the history), so not the smaller bound `partition_bytes` has where segment files
    /// hold the rest; at least one fetch.
    pub tail_bytes: usize,
    /// Fetch max-wait toward the broker, in milliseconds.
    pub fetch_max_wait_ms: i32,
    /// Bytes per fetch.
    pub fetch_max_bytes: i32,
    /// The memory budget of a cache made with [`Cache::new`] (a `cache_server` binding
    /// shares the gateway's, [`MemoryBudget::shared`]).
    pub memory_bytes: usize,
}

impl Default for CacheTuning {
    fn default() -> Self {
        Self {
            partition_bytes: 64 * 1024 * 1024,
            tail_bytes: 64 * 1024 * 1024,
            fetch_max_wait_ms: 500,
            fetch_max_bytes: 8 * 1024 * 1024,
            memory_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Where a partition's fetch stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Fetched {
    /// Whether at least one fetch answered.
    ready: bool,
    /// The next offset the cache will fetch.
    next: i64,
    /// The broker's high watermark at the last fetch.
    high_watermark: i64,
    /// Batches the partition's [`Tail`] has taken: a change wakes readers of the tail.
    tail_batches: u64,
}

struct PartitionCache {
    id: i32,
    log: RwLock<Log>,
    fetched: watch::Sender<Fetched>,
    /// The end of the records produced to the partition through this cache and acknowledged
    /// with their offset: a reader of the past reads up to here even before the cache has
    /// fetched them, so a client reads its own writes at once.
    produced: AtomicI64,
    /// The last probe of the broker's end for a live reader: when it was sent, and what it
    /// answered (`None`: it failed).
    end_probe: tokio::sync::Mutex<Option<(Instant, Option<i64>)>>,
    /// The partition's end, followed for live readers while the history is still being
    /// fetched.
    tail: Mutex<Option<Arc<Tail>>>,
    /// Readers of the partition now.
    readers: AtomicUsize,
    /// When it was last read, on the budget's clock.
    last_read: AtomicU64,
    budget: Arc<MemoryBudget>,
    /// The topic's `transforms`, applied to every record entering the cache.
    transform: Option<Arc<Transform>>,
    /// The partition's segment files (none without a disk tier, before the first fetch is
    /// written, or while another cache still holds its directory).
    disk: Mutex<Option<DiskLog>>,
    /// Where its segment files go, to open them later when another cache held them.
    disk_place: Option<DiskPlace>,
    /// Blocks read from disk that some reader still holds or waits for, by first offset:
    /// readers at the same place share one read and one copy.
    decoded: Mutex<DecodedBlocks>,
    /// Runs on the blocking pool before a block is read or a fetch written (tests hold file
    /// work back with it).
    #[cfg(test)]
    file_hook: Mutex<Option<FileHook>>,
    /// Sends every block read to the blocking pool, as when its bytes are not in the page
    /// cache (tests of the pool path set it: the blocks they read were just written).
    #[cfg(test)]
    cold_reads: std::sync::atomic::AtomicBool,
    /// Blocks read on the blocking pool.
    #[cfg(test)]
    pool_reads: AtomicUsize,
}

#[cfg(test)]
type FileHook = Arc<dyn Fn(FileWork) + Send + Sync>;

/// What [`PartitionCache::file_hook`] is called for.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileWork {
    /// The read of the block starting at this offset.
    Read(i64),
    Write,
}

/// Where a partition's segment files go.
struct DiskPlace {
    tuning: DiskTuning,
    topic: String,
    /// When to try opening them again (on the budget's clock).
    retry_at: AtomicU64,
}

/// The segment files of `place`'s topic, partition `partition`, from `start`; `None` while
/// another cache holds them, or when they cannot be opened (reported).
fn open_disk(
    place: &DiskPlace,
    budget: &Arc<MemoryBudget>,
    partition: i32,
    start: i64,
) -> Option<DiskLog> {
    let topic = &place.topic;
    match DiskLog::open(&place.tuning, budget.clone(), topic, partition, start) {
        Ok(Some(log)) => Some(log),
        Ok(None) => {
            tracing::debug!(%topic, partition, "cache directory held by another cache; trying again later");
            None
        }
        Err(error) => {
            tracing::warn!(%topic, partition, directory = %place.tuning.directory.display(), %error, "cannot open the cache's segment files; caching in memory only for now");
            None
        }
    }
}

/// How long a partition whose directory another cache held waits before trying again.
const DISK_RETRY_MILLIS: u64 = 5_000;

/// Runs `work` (file work) on tokio's blocking pool, off the worker (see the module docs);
/// `None` when it did not finish (it panicked, or the runtime is shutting down).
async fn off_worker<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(work).await.ok()
}

/// A block being read from disk, for every reader waiting for it.
type ReadingBlock = Shared<BoxFuture<'static, Result<Arc<DiskBlock>, Arc<BlockError>>>>;

/// A block of [`DecodedBlocks`].
enum Decoded {
    /// Read; alive while some reader holds it.
    Held(std::sync::Weak<DiskBlock>),
    /// Being read on the blocking pool.
    Reading(ReadingBlock),
}

#[derive(Default)]
struct DecodedBlocks {
    blocks: HashMap<i64, Decoded>,
    /// The size at which dropped entries are swept out.
    sweep_at: usize,
}

impl DecodedBlocks {
    fn insert(&mut self, first: i64, block: Decoded) {
        if self.blocks.len() >= self.sweep_at {
            self.blocks.retain(|_, block| match block {
                Decoded::Held(block) => block.strong_count() > 0,
                Decoded::Reading(_) => true,
            });
            self.sweep_at = (self.blocks.len() * 2).max(64);
        }
        self.blocks.insert(first, block);
    }
}

impl DiskEvictable for PartitionCache {
    fn temperature(&self) -> (bool, u64) {
        Evictable::temperature(self)
    }

    /// Called by the disk budget's enforcement, which runs on the blocking pool: the file is
    /// deleted there, once the lock is released.
    fn drop_oldest_segment(&self, all: bool) -> u64 {
        let (freed, removed) = self
            .lock_disk()
            .as_mut()
            .map_or((0, Removed::default()), |disk| disk.drop_oldest(all));
        drop(removed);
        freed
    }
}

impl Evictable for PartitionCache {
    fn temperature(&self) -> (bool, u64) {
        (
            self.readers.load(Ordering::Relaxed) > 0,
            self.last_read.load(Ordering::Relaxed),
        )
    }

    fn evict(&self, want: usize, keep: usize) -> usize {
        self.log
            .write()
            .map(|mut log| log.evict(want, keep))
            .unwrap_or(0)
    }
}

/// While the cache still fetches a partition's history, live readers would wait for all of
/// it before seeing a new record. A tail follows the partition from the end a live reader
/// started at, into a log of its own, until the history fetch has caught up with it.
struct Tail {
    /// The first offset of the tail.
    start: i64,
    log: RwLock<Log>,
    /// The next offset the tail will fetch.
    next: AtomicI64,
    /// Ends the tail (a child of the topic's token).
    stop: CancellationToken,
}

impl PartitionCache {
    fn lock_disk(&self) -> std::sync::MutexGuard<'_, Option<DiskLog>> {
        self.disk.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_decoded(&self) -> std::sync::MutexGuard<'_, DecodedBlocks> {
        self.decoded.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn before_file_work(&self, work: FileWork) {
        let hook = self
            .file_hook
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(hook) = hook {
            hook(work);
        }
    }

    /// The block `meta` of the partition's segment `file`, decoded, shared with every other
    /// reader holding it or waiting for it. A block no reader holds is read on the worker if
    /// its bytes are all in the page cache (a trip to the blocking pool would cost more than
    /// that read), else on the blocking pool, so a read from a cold page cache or a slow disk
    /// stalls only its readers.
    async fn disk_block(
        self: &Arc<Self>,
        file: Arc<std::fs::File>,
        meta: BlockMeta,
    ) -> Result<Arc<DiskBlock>, Arc<BlockError>> {
        #[cfg(target_os = "linux")]
        if !self.entered(meta.first)
            && let Some(block) = self.read_cached_block(&file, &meta)
        {
            return Ok(block);
        }
        let reading = {
            let mut decoded = self.lock_decoded();
            if let Some(Decoded::Held(block)) = decoded.blocks.get(&meta.first)
                && let Some(block) = block.upgrade()
            {
                return Ok(block);
            }
            match decoded.blocks.get(&meta.first) {
                Some(Decoded::Reading(reading)) => reading.clone(),
                _ => {
                    let partition = self.clone();
                    let read = off_worker(move || partition.read_block(&file, &meta));
                    let reading = read
                        .map(|read| read.unwrap_or_else(|| Err(Arc::new(BlockError::Unfinished))))
                        .boxed()
                        .shared();
                    decoded.insert(meta.first, Decoded::Reading(reading.clone()));
                    reading
                }
            }
        };
        let block = reading.clone().await;
        if let Err(error) = &block
            && matches!(**error, BlockError::Unfinished)
        {
            // The read ended without entering its block: the next reader reads again.
            let mut decoded = self.lock_decoded();
            if let Some(Decoded::Reading(current)) = decoded.blocks.get(&meta.first)
                && current.ptr_eq(&reading)
            {
                decoded.blocks.remove(&meta.first);
            }
        }
        block
    }

    /// Whether some reader holds the block starting at `first`, or waits for its read.
    #[cfg(target_os = "linux")]
    fn entered(&self, first: i64) -> bool {
        match self.lock_decoded().blocks.get(&first) {
            Some(Decoded::Held(block)) => block.strong_count() > 0,
            Some(Decoded::Reading(_)) => true,
            None => false,
        }
    }

    /// The block `meta` of `file` if its bytes are all in the page cache, read and decoded
    /// on the worker without waiting for the disk, and entered for the readers that come
    /// while some reader holds it; `None` otherwise (any error included: the blocking pool
    /// then reads it again, and reports what it finds).
    #[cfg(target_os = "linux")]
    fn read_cached_block(&self, file: &std::fs::File, meta: &BlockMeta) -> Option<Arc<DiskBlock>> {
        #[cfg(test)]
        if self.cold_reads.load(Ordering::Relaxed) {
            return None;
        }
        let messages = crate::cache_disk::read_cached_block(file, meta, self.id)?;
        let block = Arc::new(DiskBlock::new(meta, messages, self.budget.clone()));
        {
            let mut decoded = self.lock_decoded();
            // Another reader entered the block meanwhile: its copy is shared, not this one.
            if let Some(Decoded::Held(held)) = decoded.blocks.get(&meta.first)
                && let Some(held) = held.upgrade()
            {
                return Some(held);
            }
            // A read on the pool keeps its entry: its readers get its copy when it ends.
            if !matches!(decoded.blocks.get(&meta.first), Some(Decoded::Reading(_))) {
                decoded.insert(meta.first, Decoded::Held(Arc::downgrade(&block)));
            }
        }
        self.budget.enforce();
        Some(block)
    }

    /// Reads and decodes the block `meta` of `file`, and enters it for the readers that come
    /// while some reader holds it. A block that cannot be read drops the segment files through
    /// it. Blocking: runs on the blocking pool.
    fn read_block(
        &self,
        file: &std::fs::File,
        meta: &BlockMeta,
    ) -> Result<Arc<DiskBlock>, Arc<BlockError>> {
        #[cfg(test)]
        {
            self.pool_reads.fetch_add(1, Ordering::Relaxed);
            self.before_file_work(FileWork::Read(meta.first));
        }
        let read = crate::cache_disk::read_block(file, meta, self.id)
            .map(|messages| Arc::new(DiskBlock::new(meta, messages, self.budget.clone())));
        {
            let mut decoded = self.lock_decoded();
            match &read {
                Ok(block) => decoded.insert(meta.first, Decoded::Held(Arc::downgrade(block))),
                Err(_) => {
                    decoded.blocks.remove(&meta.first);
                }
            }
        }
        match read {
            Ok(block) => {
                self.budget.enforce();
                Ok(block)
            }
            Err(error) => {
                let removed = self
                    .lock_disk()
                    .as_mut()
                    .map(|disk| disk.drop_through(meta.first));
                drop(removed);
                Err(Arc::new(error))
            }
        }
    }

    /// Opens the partition's segment files from `start` if it has none yet (none opened yet,
    /// or another cache held them), at most every [`DISK_RETRY_MILLIS`]; whether it has them
    /// now. Blocking: runs on the blocking pool.
    fn reopen_disk(&self, start: i64) -> bool {
        let Some(place) = &self.disk_place else {
            return false;
        };
        let now = self.budget.now();
        if now < place.retry_at.load(Ordering::Relaxed) {
            return false;
        }
        place
            .retry_at
            .store(now + DISK_RETRY_MILLIS, Ordering::Relaxed);
        let Some(opened) = open_disk(place, &self.budget, self.id, start) else {
            return false;
        };
        // Only the partition's fetch opens its files: nothing else has meanwhile.
        self.lock_disk().get_or_insert(opened);
        true
    }

    /// `batch` with the topic's `transforms` applied to its records.
    fn transformed(&self, mut batch: FetchBatch) -> FetchBatch {
        if let Some(transform) = &self.transform {
            batch.messages.iter_mut().for_each(|m| transform.apply(m));
        }
        batch
    }

    /// Writes `batch` to the partition's segment files (when the cache has a disk tier) on
    /// the blocking pool, and gives it back once written; `None` when the write did not
    /// finish (it panicked, or the runtime is shutting down).
    async fn write_disk(
        self: &Arc<Self>,
        batch: FetchBatch,
        config: &TopicConfig,
    ) -> Option<FetchBatch> {
        // An empty fetch at the end of the log (one every max-wait) brings the files nothing:
        // it takes no trip to the blocking pool.
        let nothing_new = batch.messages.is_empty()
            && self
                .lock_disk()
                .as_ref()
                .is_some_and(|disk| batch.next_offset <= disk.next);
        if self.disk_place.is_none() || nothing_new {
            return Some(batch);
        }
        let from = self.log.read().map(|log| log.next).unwrap_or_default();
        let partition = self.clone();
        let config = config.clone();
        off_worker(move || {
            partition.append_disk(&batch, &config, from);
            batch
        })
        .await
    }

    /// Appends `batch` to the partition's segment files (opening them if none are open yet,
    /// from `from`, where the memory log has reached), drops the segments the topic's configs
    /// and the disk budget no longer keep. The lock is held only to look at and update the
    /// block table, never while a file is written or deleted: readers looking up blocks on
    /// a worker do not wait for the disk. Blocking: runs on the blocking pool.
    fn append_disk(&self, batch: &FetchBatch, config: &TopicConfig, from: i64) {
        let writer = || {
            self.lock_disk()
                .as_mut()
                .map(|disk| disk.writer(batch.log_start_offset))
        };
        let Some(writer) = writer().or_else(|| self.reopen_disk(from).then(writer).flatten())
        else {
            return;
        };
        #[cfg(test)]
        self.before_file_work(FileWork::Write);
        let written = writer.write(&batch.messages, batch.next_offset);
        let now = now_millis();
        let (result, removed, budget) = {
            let mut disk = self.lock_disk();
            let Some(disk) = disk.as_mut() else {
                return;
            };
            let (result, mut removed) = disk.commit(written);
            if !config.compacted {
                removed.absorb(disk.expire(config.retention_ms, now));
            }
            if config.deleting {
                removed.absorb(disk.retain_bytes(config.retention_bytes));
            }
            (result, removed, disk.budget().clone())
        };
        drop(removed);
        if let Err(error) = result {
            tracing::warn!(partition = self.id, %error, "cannot write the cache's segment files; reading older records from Kafka");
        }
        budget.enforce();
    }

    /// Drops what has aged out under the topic's configs from memory and the segment files
    /// (when no fetch arrived to do it); segment files are deleted on the blocking pool.
    async fn expire(&self, config: &TopicConfig) {
        let now = now_millis();
        if let Ok(mut log) = self.log.write() {
            expire_log(&mut log, config, now);
        }
        if config.compacted {
            return;
        }
        let removed = self
            .lock_disk()
            .as_mut()
            .map(|disk| disk.expire(config.retention_ms, now));
        if let Some(removed) = removed.filter(|removed| !removed.is_empty()) {
            off_worker(move || drop(removed)).await;
        }
    }

    fn tail(&self) -> Option<Arc<Tail>> {
        self.tail.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Where a live reader starts while the history's first fetch is still out: where the
    /// tail following the end has got to, or else the broker's end. Concurrent callers share
    /// one probe, as long as it was sent after they asked. `None` when the broker cannot say
    /// (the reader then waits for the first fetch).
    async fn live_end(&self, upstream: &dyn KafkaHandler, topic: &TopicCache) -> Option<i64> {
        if let Some(tail) = self.tail() {
            return Some(tail.next.load(Ordering::Acquire));
        }
        let asked = Instant::now();
        let mut probe = self.end_probe.lock().await;
        // A failed probe is shared too: otherwise each caller queued behind it would wait
        // out a failing probe of its own, one after the other.
        if let Some((sent, end)) = *probe
            && sent >= asked
        {
            return end;
        }
        let sent = Instant::now();
        match upstream
            .list_offset(&topic.name, self.id, OffsetSpec::Latest)
            .await
        {
            Ok(end) => {
                *probe = Some((sent, Some(end)));
                Some(end)
            }
            Err(error) => {
                tracing::debug!(topic = %topic.name, partition = self.id, %error, "end probe failed");
                *probe = Some((sent, None));
                None
            }
        }
    }

    /// Ends the tail once the history fetch reached `next`, where the tail has been.
    fn retire_tail(&self, next: i64) {
        let mut tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        if tail
            .as_ref()
            .is_some_and(|tail| next >= tail.next.load(Ordering::Acquire))
            && let Some(tail) = tail.take()
        {
            tail.stop.cancel();
        }
    }
}

struct TopicCache {
    name: String,
    config: TopicConfig,
    partitions: Vec<Arc<PartitionCache>>,
    /// Stops this topic's fetches (on eviction, or with the whole cache).
    stopped: CancellationToken,
    /// When a reader was last seen.
    last_read: Mutex<Instant>,
}

/// The shared cache of a `cache_server` binding.
pub struct Cache {
    upstream: Arc<dyn KafkaHandler>,
    budget: Arc<MemoryBudget>,
    topics: Mutex<HashMap<String, Arc<OnceCell<Arc<TopicCache>>>>>,
    defaults: HashMap<String, Start>,
    tuning: CacheTuning,
    stopped: CancellationToken,
    /// `bootstrap` topics: never evicted.
    pinned: Mutex<std::collections::HashSet<String>>,
    /// `topics[].transforms`, by topic.
    transforms: HashMap<String, Arc<Transform>>,
    /// Where partitions keep their segment files, if anywhere.
    disk: Option<DiskTuning>,
    /// Set once directories left by a gateway that ended were removed.
    swept: OnceCell<()>,
}

impl Cache {
    /// A cache in front of `upstream`; `defaults` gives each topic's `defaultOffset`.
    pub fn new(
        upstream: Arc<dyn KafkaHandler>,
        defaults: HashMap<String, Start>,
        tuning: CacheTuning,
    ) -> Self {
        let budget = MemoryBudget::new(tuning.memory_bytes);
        Self::with_budget(upstream, defaults, tuning, budget)
    }

    /// A cache in front of `upstream` that counts what it holds against `budget`.
    pub fn with_budget(
        upstream: Arc<dyn KafkaHandler>,
        defaults: HashMap<String, Start>,
        tuning: CacheTuning,
        budget: Arc<MemoryBudget>,
    ) -> Self {
        Self {
            upstream,
            budget,
            topics: Mutex::new(HashMap::new()),
            defaults,
            tuning,
            stopped: CancellationToken::new(),
            pinned: Mutex::new(Default::default()),
            transforms: HashMap::new(),
            disk: None,
            swept: OnceCell::new(),
        }
    }

    /// The same cache keeping partitions' records in segment files too (see
    /// [`crate::cache_disk`]).
    pub fn with_disk(mut self, disk: DiskTuning) -> Self {
        self.disk = Some(disk);
        self
    }

    /// Where `topic`'s segment files go, if the cache has a disk tier.
    fn disk_place(&self, topic: &str) -> Option<DiskPlace> {
        let tuning = self.disk.as_ref()?;
        Some(DiskPlace {
            tuning: tuning.clone(),
            topic: topic.to_owned(),
            retry_at: AtomicU64::new(0),
        })
    }

    /// The same cache applying `transforms` (by topic) to records as they enter it.
    pub fn transforming(mut self, transforms: HashMap<String, Transform>) -> Self {
        self.transforms = transforms
            .into_iter()
            .map(|(topic, transform)| (topic, Arc::new(transform)))
            .collect();
        self
    }

    /// The memory budget the cache counts against.
    pub fn budget(&self) -> &Arc<MemoryBudget> {
        &self.budget
    }

    /// Bytes of segment files the gateway's caches keep now (0 without a disk tier).
    pub fn disk_used(&self) -> u64 {
        self.disk.as_ref().map_or(0, |disk| disk.budget.used())
    }

    /// The topics cached now.
    pub fn cached_topics(&self) -> Vec<String> {
        let topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<String> = topics
            .iter()
            .filter(|(_, cell)| cell.initialized())
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }

    /// Stops fetching and drops every topic that has had no reader for `idle`, except
    /// `bootstrap` topics. Returns the topics evicted.
    pub fn evict_idle(&self, idle: Duration) -> Vec<String> {
        let now = Instant::now();
        let pinned = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        let mut evicted = Vec::new();
        // Readers take their handle on a topic under the same lock (see `topic`), so none can
        // start reading a topic between the count and the eviction.
        topics.retain(|name, cell| {
            let Some(topic) = cell.get() else {
                return true;
            };
            let mut last_read = topic.last_read.lock().unwrap_or_else(|e| e.into_inner());
            if pinned.contains(name) || Arc::strong_count(topic) > 1 {
                *last_read = now;
                return true;
            }
            if now.duration_since(*last_read) < idle {
                return true;
            }
            topic.stopped.cancel();
            evicted.push(name.clone());
            false
        });
        if !evicted.is_empty() {
            tracing::debug!(topics = ?evicted, "evicted idle topics from the cache");
        }
        evicted
    }

    /// Stops every fetch (the binding was retired or the gateway stops).
    pub fn stop(&self) {
        self.stopped.cancel();
    }

    /// Starts fetching `topic` now (a `bootstrap` topic).
    pub async fn bootstrap(&self, topic: &str) -> Result<(), StreamError> {
        self.pinned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(topic.to_owned());
        self.topic(topic).await.map(|_| ())
    }

    /// Notes a record produced through this cache at `offset`, for readers of a cached topic
    /// to read up to it.
    fn produced(&self, topic: &str, partition: i32, offset: i64) {
        let cached = self
            .topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
            .and_then(|cell| cell.get().cloned());
        if let Some(partition) = cached.and_then(|topic| {
            topic
                .partitions
                .iter()
                .find(|cached| cached.id == partition)
                .cloned()
        }) {
            partition.produced.fetch_max(offset + 1, Ordering::AcqRel);
        }
    }

    async fn topic(&self, topic: &str) -> Result<Arc<TopicCache>, StreamError> {
        loop {
            let cell = {
                let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
                topics.entry(topic.to_owned()).or_default().clone()
            };
            self.open(topic, &cell).await?;
            // The handle is taken under the topics lock, where eviction decides: a topic
            // evicted since it was opened is opened again.
            let topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(current) = topics.get(topic)
                && Arc::ptr_eq(current, &cell)
                && let Some(cached) = cell.get()
            {
                return Ok(cached.clone());
            }
        }
    }

    /// Starts caching `topic` in `cell`, unless it is already.
    async fn open(&self, topic: &str, cell: &OnceCell<Arc<TopicCache>>) -> Result<(), StreamError> {
        let result = cell
            .get_or_try_init(|| async {
                let (metadata, config) =
                    tokio::join!(self.upstream.metadata(topic), self.upstream.describe(topic));
                let metadata = metadata?;
                let config = config.unwrap_or_default();
                // The partitions' starts are asked together: the requests are pipelined on
                // one connection rather than waiting for each other's round trip.
                let starts = futures_util::future::try_join_all(metadata.partitions.iter().map(
                    |&id| self.upstream.list_offset(topic, id, OffsetSpec::Earliest),
                ))
                .await?;
                if let Some(tuning) = &self.disk {
                    let directory = tuning.directory.clone();
                    self.swept
                        .get_or_init(|| async move {
                            off_worker(move || crate::cache_disk::sweep(&directory)).await;
                        })
                        .await;
                }
                let stopped = self.stopped.child_token();
                let mut partitions = Vec::new();
                for (&id, start) in metadata.partitions.iter().zip(starts) {
                    let (fetched, _) = watch::channel(Fetched::default());
                    let partition = Arc::new(PartitionCache {
                        id,
                        log: RwLock::new(Log::new(self.budget.clone(), start)),
                        fetched,
                        produced: AtomicI64::new(0),
                        end_probe: tokio::sync::Mutex::new(None),
                        tail: Mutex::new(None),
                        readers: AtomicUsize::new(0),
                        last_read: AtomicU64::new(self.budget.now()),
                        budget: self.budget.clone(),
                        transform: self.transforms.get(topic).cloned(),
                        disk: Mutex::new(None),
                        disk_place: self.disk_place(topic),
                        decoded: Mutex::new(DecodedBlocks::default()),
                        #[cfg(test)]
                        file_hook: Mutex::new(None),
                        #[cfg(test)]
                        cold_reads: std::sync::atomic::AtomicBool::new(false),
                        #[cfg(test)]
                        pool_reads: AtomicUsize::new(0),
                    });
                    let evictable: Arc<dyn Evictable> = partition.clone();
                    self.budget.register(Arc::downgrade(&evictable));
                    if let Some(disk) = &self.disk {
                        let evictable: Arc<dyn DiskEvictable> = partition.clone();
                        disk.budget.register(Arc::downgrade(&evictable));
                    }
                    tokio::spawn(fetch_partition(
                        self.upstream.clone(),
                        topic.to_owned(),
                        config.clone(),
                        partition.clone(),
                        start,
                        self.tuning,
                        stopped.clone(),
                    ));
                    partitions.push(partition);
                }
                tracing::debug!(%topic, partitions = partitions.len(), compacted = config.compacted, "caching topic");
                Ok::<_, StreamError>(Arc::new(TopicCache {
                    name: topic.to_owned(),
                    config,
                    partitions,
                    stopped,
                    last_read: Mutex::new(Instant::now()),
                }))
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) => {
                // Let the next subscriber try again (the topic may be created later).
                self.topics
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(topic);
                Err(error)
            }
        }
    }

    /// A merged read served from the cache.
    pub async fn merged(&self, request: MergedRequest) -> Result<MergedStream, StreamError> {
        let topic = self.topic(&request.topic).await?;
        let start = match request
            .start
            .or_topic_default(&request.topic, &self.defaults)
        {
            Start::Default => Start::Historical,
            given => given,
        };
        let partitions: Vec<Arc<PartitionCache>> = topic
            .partitions
            .iter()
            .filter(|partition| request.reads(partition.id))
            .cloned()
            .collect();
        // Every partition is waited for at once: a reader starts after the slowest
        // partition's first fetch, not after the sum of them.
        let starts = partitions.iter().map(|partition| {
            let request = &request;
            let topic = &topic;
            async move {
                let mut receiver = partition.fetched.subscribe();
                let live = start == Start::Live && request.offsets.is_empty();
                if live
                    && !receiver.borrow_and_update().ready
                    && let Some(end) = partition.live_end(self.upstream.as_ref(), topic).await
                {
                    // A live reader needs only where the partition ends now, not the first
                    // fetch of its history (seconds on a big topic): it joins the tail that
                    // follows the end, or starts one there.
                    self.start_tail(topic, partition, end);
                    return Ok::<_, StreamError>((end, end, receiver));
                }
                let fetched = *receiver
                    .wait_for(|fetched| fetched.ready)
                    .await
                    .map_err(|_| StreamError::Stopped)?;
                let log_start = partition
                    .log
                    .read()
                    .map(|log| log.kafka_start)
                    .unwrap_or_default();
                // A reader of the past ends where the cache's last fetch saw the partition
                // end, or past the records produced through this cache, whichever is later:
                // a client reads its own writes at once, and a record written by another
                // client or gateway once the cache has fetched it (the broker is not asked
                // per reader: that would be a request per partition for every `GET`). A
                // live reader only needs what comes next.
                let end = if live {
                    fetched.high_watermark
                } else {
                    partition
                        .produced
                        .load(Ordering::Acquire)
                        .max(fetched.high_watermark)
                };
                let given = request
                    .offsets
                    .iter()
                    .find(|offset| offset.partition == partition.id);
                let cursor = match (given, start) {
                    (Some(given), _) => given.offset,
                    (None, Start::Live) => end,
                    (None, _) => log_start,
                };
                if given.is_none() && start == Start::Live && fetched.next < end {
                    self.start_tail(topic, partition, end);
                }
                Ok::<_, StreamError>((cursor, end, receiver))
            }
        });
        let mut receivers = Vec::new();
        let mut cursors = Vec::new();
        let mut targets = Vec::new();
        for (cursor, end, receiver) in futures_util::future::try_join_all(starts).await? {
            cursors.push(cursor);
            targets.push(end);
            receivers.push(receiver);
        }
        let latest_per_key = request.latest_per_key && topic.config.compacted;
        let key = single_key(&request.filters)
            .filter(|_| latest_per_key)
            .cloned();
        for partition in &partitions {
            partition.readers.fetch_add(1, Ordering::Relaxed);
        }
        // Read-through fetches land in the reader's own buffer: an item lookup needs only the
        // batch of its record, a replay a bounded slice of the partition at a time.
        let read_through_bytes = if key.is_some() {
            64 * 1024
        } else {
            self.tuning.fetch_max_bytes.min(READ_THROUGH_BYTES)
        };
        let snapshot = latest_per_key.then(|| {
            partitions
                .iter()
                .zip(&targets)
                .map(|(partition, &offset)| PartitionOffset {
                    partition: partition.id,
                    offset,
                })
                .collect()
        });
        let reader = Reader {
            snapshot,
            upstream: self.upstream.clone(),
            read_through_bytes,
            fetch_max_bytes: self.tuning.fetch_max_bytes,
            key,
            latest_per_key,
            topic,
            partitions,
            cursors,
            targets,
            receivers,
            filters: request.filters,
            synced: false,
            buffer: VecDeque::new(),
            disk_block: None,
            next_partition: 0,
        };
        Ok(Box::pin(stream::unfold(reader, Reader::next)))
    }
}

impl Cache {
    /// Follows `partition`'s end from `end` for live readers, unless a tail already does.
    fn start_tail(&self, topic: &Arc<TopicCache>, partition: &Arc<PartitionCache>, end: i64) {
        let mut current = partition.tail.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|tail| tail.start <= end) {
            return;
        }
        if let Some(old) = current.take() {
            old.stop.cancel();
        }
        let tail = Arc::new(Tail {
            start: end,
            log: RwLock::new(Log::new(self.budget.clone(), end)),
            next: AtomicI64::new(end),
            stop: topic.stopped.child_token(),
        });
        *current = Some(tail.clone());
        tracing::debug!(topic = %topic.name, partition = partition.id, from = end, "following the end while the history is fetched");
        tokio::spawn(fetch_tail(
            self.upstream.clone(),
            topic.name.clone(),
            topic.config.clone(),
            partition.clone(),
            tail,
            self.tuning,
        ));
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        self.stopped.cancel();
    }
}

async fn fetch_partition(
    upstream: Arc<dyn KafkaHandler>,
    topic: String,
    config: TopicConfig,
    partition: Arc<PartitionCache>,
    mut offset: i64,
    tuning: CacheTuning,
    stopped: CancellationToken,
) {
    // A quiet partition brings no fetch to check ages at: a timer does.
    let period = expiry_period(&config);
    let mut expiry = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let request = FetchRequest {
            topic: topic.clone(),
            partition: partition.id,
            offset,
            max_wait_ms: tuning.fetch_max_wait_ms,
            max_bytes: tuning.fetch_max_bytes,
            from_end: false,
        };
        let mut batches = upstream.follow(request);
        loop {
            let followed = tokio::select! {
                followed = next_batch(&mut batches, &stopped, &topic, partition.id) => followed,
                _ = expiry.tick() => {
                    partition.expire(&config).await;
                    continue;
                }
            };
            let batch = match followed {
                Followed::Stopped => return,
                Followed::Ended => break,
                Followed::Batch(batch) => batch,
            };
            let (next_offset, high_watermark) = (batch.next_offset, batch.high_watermark);
            let batch = partition.transformed(batch);
            // On disk before in memory: a reader that no longer finds a record in memory
            // finds it on disk. Awaited, so fetches are written in order.
            let Some(batch) = partition.write_disk(batch, &config).await else {
                // The write did not finish: the batch is fetched again.
                break;
            };
            store(&partition.log, batch, &config, &tuning, &partition);
            offset = next_offset.max(offset);
            partition.retire_tail(offset);
            // Readers wake only when there is something new: an empty fetch (every max-wait
            // at the end of the log) must not wake every subscriber.
            partition.fetched.send_if_modified(|current| {
                let fetched = Fetched {
                    ready: true,
                    next: offset,
                    high_watermark: high_watermark.max(offset),
                    tail_batches: current.tail_batches,
                };
                let changed = *current != fetched;
                *current = fetched;
                changed
            });
        }
        // The follow ended (its handler went away): follow again after a pause.
        tokio::select! {
            _ = stopped.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// What a followed partition gave.
enum Followed {
    /// The cache or the topic stopped.
    Stopped,
    /// The follow ended (its handler went away).
    Ended,
    Batch(FetchBatch),
}

/// The next batch of `batches`. Errors are logged and skipped: the follower retries by
/// itself after a backoff.
async fn next_batch(
    batches: &mut FollowStream<'_>,
    stopped: &CancellationToken,
    topic: &str,
    partition: i32,
) -> Followed {
    loop {
        let next = tokio::select! {
            _ = stopped.cancelled() => return Followed::Stopped,
            next = batches.next() => next,
        };
        match next {
            None => return Followed::Ended,
            Some(Err(error)) => {
                tracing::debug!(%topic, partition, %error, "cache fetch failed; retrying");
            }
            Some(Ok(batch)) => return Followed::Batch(batch),
        }
    }
}

/// Adds fetched records of `partition` (transformed) to `log` (its own or its tail's), and
/// trims it to the budget.
fn store(
    log: &RwLock<Log>,
    batch: FetchBatch,
    config: &TopicConfig,
    tuning: &CacheTuning,
    partition: &PartitionCache,
) {
    let budget = &partition.budget;
    if let Ok(mut log) = log.write() {
        if log.is_empty() && batch.log_start_offset > log.start {
            log.start = batch.log_start_offset;
        }
        log.kafka_start = log.kafka_start.max(batch.log_start_offset);
        log.append(batch.messages, batch.next_offset, config.compacted);
        expire_log(&mut log, config, now_millis());
        let over = log
            .record_bytes()
            .saturating_sub(partition_limit(config, tuning));
        if over > 0 {
            log.evict(over, 0);
        }
    }
    // Outside the lock: eviction may take this partition's lock too.
    budget.enforce();
}

/// Drops from `log` what has aged out under the topic's configs: records older than
/// `retention.ms` or, on compacted topics, tombstones older than `delete.retention.ms`.
fn expire_log(log: &mut Log, config: &TopicConfig, now_ms: i64) {
    if config.compacted {
        log.expire_tombstones(config.delete_retention_ms, now_ms);
    } else {
        log.expire(config.retention_ms, now_ms);
    }
}

/// How often a partition's ages are checked between fetches: a tenth of the shortest age
/// that applies, within 1 s to 60 s (checks that find nothing cost a look at the front).
fn expiry_period(config: &TopicConfig) -> Duration {
    let age = if config.compacted {
        config.delete_retention_ms
    } else {
        config.retention_ms
    };
    let millis = u64::try_from(age / 10).unwrap_or(u64::MAX);
    Duration::from_millis(millis.clamp(1_000, 60_000))
}

/// The record bytes a partition keeps in memory: `zilla.binding.kafka.cache.partition.bytes`,
/// or the topic's `retention.bytes` when that is smaller and the topic deletes.
fn partition_limit(config: &TopicConfig, tuning: &CacheTuning) -> usize {
    match usize::try_from(config.retention_bytes) {
        Ok(retention) if config.deleting => tuning.partition_bytes.min(retention),
        _ => tuning.partition_bytes,
    }
}

/// Follows a partition's end into its [`Tail`] until the tail is retired.
async fn fetch_tail(
    upstream: Arc<dyn KafkaHandler>,
    topic: String,
    config: TopicConfig,
    partition: Arc<PartitionCache>,
    tail: Arc<Tail>,
    tuning: CacheTuning,
) {
    // The tail's records are read by offset only: its log needs no key index.
    let config = TopicConfig {
        compacted: false,
        ..config
    };
    let tuning = CacheTuning {
        partition_bytes: tuning
            .tail_bytes
            .max(usize::try_from(tuning.fetch_max_bytes).unwrap_or(usize::MAX)),
        ..tuning
    };
    let request = FetchRequest {
        topic: topic.clone(),
        partition: partition.id,
        offset: tail.start,
        max_wait_ms: tuning.fetch_max_wait_ms,
        max_bytes: tuning.fetch_max_bytes,
        from_end: true,
    };
    let mut batches = upstream.follow(request);
    loop {
        let batch = match next_batch(&mut batches, &tail.stop, &topic, partition.id).await {
            Followed::Stopped | Followed::Ended => return,
            Followed::Batch(batch) => batch,
        };
        let news =
            !batch.messages.is_empty() || batch.next_offset > tail.next.load(Ordering::Acquire);
        let next = batch.next_offset;
        let batch = FetchBatch {
            log_start_offset: -1,
            ..batch
        };
        store(
            &tail.log,
            partition.transformed(batch),
            &config,
            &tuning,
            &partition,
        );
        tail.next.fetch_max(next, Ordering::AcqRel);
        if news {
            partition
                .fetched
                .send_modify(|fetched| fetched.tail_batches += 1);
        }
    }
}

/// The next records of `log` from `offset` for a reader with `filters`: through the record
/// index when the filters can be looked up there (then with the offset where the next read
/// can start, past what cannot pass), else every record.
fn read_log(log: &Log, offset: i64, filters: &[Filter], skip_holes: bool) -> (Chunk, Option<i64>) {
    match log.read_matching(offset, filters, skip_holes) {
        Some((chunk, scanned)) => (chunk, Some(scanned)),
        None => (log.read_from(offset, skip_holes), None),
    }
}

/// The key of `filters` when they are one filter naming a key.
fn single_key(filters: &[Filter]) -> Option<&Bytes> {
    match filters {
        [filter] => filter
            .conditions
            .iter()
            .find_map(|condition| match condition {
                Condition::Key(key) => Some(key),
                _ => None,
            }),
        _ => None,
    }
}

/// Bytes per read-through fetch of a replay: what one reader buffers from Kafka at most.
const READ_THROUGH_BYTES: i32 = 1024 * 1024;

/// Blocks a filtered reader looks at on disk per lookup: a long run of blocks that cannot
/// match must not hold the partition's disk lock for long.
const DISK_BLOCKS_PER_LOOK: usize = 4096;

/// What [`Reader::fill`] found.
enum Fill {
    /// Records (or a gap to step over) were taken from the cache.
    Filled,
    /// Nothing new in the cache.
    Nothing,
    /// Partition `.0` needs records from `.1` on that the cache no longer holds.
    ReadThrough(usize, i64),
}

struct Reader {
    upstream: Arc<dyn KafkaHandler>,
    /// Bytes per read-through fetch.
    read_through_bytes: i32,
    /// The most a read-through fetch asks for (the cache's own fetch size).
    fetch_max_bytes: i32,
    topic: Arc<TopicCache>,
    /// The partitions read, in the order of `cursors`, `targets` and `receivers`.
    partitions: Vec<Arc<PartitionCache>>,
    cursors: Vec<i64>,
    targets: Vec<i64>,
    receivers: Vec<watch::Receiver<Fetched>>,
    filters: Vec<Filter>,
    /// The one key of an item lookup on a compacted topic.
    key: Option<Bytes>,
    latest_per_key: bool,
    /// The ends a latest-per-key replay announces before its first record.
    snapshot: Option<Arc<[PartitionOffset]>>,
    synced: bool,
    buffer: VecDeque<(usize, Arc<Message>)>,
    /// The disk block (of partition `.0`) the buffer's records came from, held (and counted)
    /// until the reader is past it.
    disk_block: Option<(usize, Arc<DiskBlock>)>,
    next_partition: usize,
}

impl Drop for Reader {
    fn drop(&mut self) {
        for partition in &self.partitions {
            partition.readers.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Whether a latest-per-key replay steps over `message` because a later record of its key
/// replaced it. When that record lies at or past the replay's `end` (it arrived while the
/// replay ran), the end moves past it: the replay then still brings the key's latest record
/// before it is synced, rather than leaving the key out.
fn replaced(log: &Log, message: &Message, end: &mut i64) -> bool {
    if message.offset >= *end {
        return false;
    }
    match log.replaced_at(message) {
        Some(latest) => {
            *end = (*end).max(latest + 1);
            true
        }
        None => false,
    }
}

impl Reader {
    fn progress(&self) -> Arc<[PartitionOffset]> {
        self.partitions
            .iter()
            .zip(&self.cursors)
            .map(|(partition, offset)| PartitionOffset {
                partition: partition.id,
                offset: *offset,
            })
            .collect()
    }

    fn reached_targets(&self) -> bool {
        self.cursors
            .iter()
            .zip(&self.targets)
            .all(|(cursor, target)| cursor >= target)
    }

    /// Reads the next chunk of some partition into the buffer.
    fn fill(&mut self) -> Fill {
        let count = self.partitions.len();
        for step in 0..count {
            let index = (self.next_partition + step) % count;
            let partition = &self.partitions[index];
            let fetched = *self.receivers[index].borrow_and_update();
            let cursor = self.cursors[index];
            if cursor >= fetched.next
                && let Some(tail) = partition.tail().filter(|tail| cursor >= tail.start)
            {
                // Past what the history fetch has reached: the tail has it, unless it
                // dropped it over budget (then the history fetch will bring it).
                let Ok(log) = tail.log.read() else {
                    continue;
                };
                if cursor < log.start {
                    continue;
                }
                let (Chunk::Records(chunk), scanned) = read_log(&log, cursor, &self.filters, true)
                else {
                    continue;
                };
                if chunk.is_empty() {
                    let next = scanned.unwrap_or_else(|| tail.next.load(Ordering::Acquire));
                    if next > cursor {
                        self.cursors[index] = next;
                        self.next_partition = (index + 1) % count;
                        return Fill::Filled;
                    }
                    continue;
                }
                self.buffer
                    .extend(chunk.into_iter().map(|message| (index, message)));
                self.next_partition = (index + 1) % count;
                return Fill::Filled;
            }
            partition
                .last_read
                .store(partition.budget.now(), Ordering::Relaxed);
            let Ok(log) = partition.log.read() else {
                continue;
            };
            if self.latest_per_key
                && self.cursors[index] < self.targets[index]
                && log.next < self.targets[index]
            {
                // A replay of the latest value per key (a collection or an item lookup):
                // which records later ones replaced is known only once the cache has fetched
                // up to where the replay ends, so it waits for that.
                continue;
            }
            let cursor = &mut self.cursors[index];
            if let Some(key) = &self.key {
                // An item lookup: the key index knows every record of the key below
                // `log.next`, so the cursor goes straight to the key's latest record, and
                // once past it, past everything the index covers.
                match log.latest_of(key) {
                    Some(latest) if *cursor <= latest => *cursor = latest,
                    _ if *cursor < log.next => {
                        *cursor = log.next;
                        self.next_partition = (index + 1) % count;
                        return Fill::Filled;
                    }
                    _ => {}
                }
            }
            if *cursor < log.start {
                // Kafka may still have what the cache dropped or never fetched: ask it rather
                // than skipping ahead.
                self.next_partition = (index + 1) % count;
                return Fill::ReadThrough(index, *cursor);
            }
            let (chunk, scanned) = read_log(&log, *cursor, &self.filters, self.latest_per_key);
            let chunk = match chunk {
                Chunk::Records(chunk) => chunk,
                Chunk::Hole(offset) => {
                    // A record dropped from the middle (superseded, so only latest-per-key
                    // readers may step over it): Kafka still has it.
                    *cursor = offset;
                    self.next_partition = (index + 1) % count;
                    return Fill::ReadThrough(index, offset);
                }
            };
            if chunk.is_empty() {
                // Nothing cached past the cursor (that can pass the filters): move over gaps
                // up to what was fetched.
                let next = scanned.unwrap_or(fetched.next);
                if next > *cursor {
                    *cursor = next;
                    self.next_partition = (index + 1) % count;
                    return Fill::Filled;
                }
                continue;
            }
            let historical_end = &mut self.targets[index];
            for message in chunk {
                let skip = self.latest_per_key && replaced(&log, &message, historical_end);
                if skip {
                    *cursor = message.offset + 1;
                } else {
                    self.buffer.push_back((index, message));
                }
            }
            self.next_partition = (index + 1) % count;
            return Fill::Filled;
        }
        Fill::Nothing
    }

    /// Reads partition `index` from `offset` on from the cache's segment files into the
    /// buffer, a block at a time (blocks that cannot hold a record passing the filters are
    /// stepped over unread). `false` when the disk does not have `offset`: then Kafka must
    /// be asked.
    async fn read_disk(&mut self, index: usize, offset: i64) -> bool {
        let partition = self.partitions[index].clone();
        let held = self
            .disk_block
            .as_ref()
            .filter(|(held, block)| *held == index && block.covers(offset))
            .map(|(_, block)| block.clone());
        let (block, block_next) = match held {
            Some(block) => {
                let next = block.next;
                (block, next)
            }
            None => {
                // Under the lock only the block table is looked at; the block is read on the
                // blocking pool.
                let located = {
                    let disk = partition.lock_disk();
                    let Some(disk) = disk.as_ref() else {
                        return false;
                    };
                    let terms = disk.filter_terms(&self.filters);
                    disk.locate(offset, terms.as_deref(), DISK_BLOCKS_PER_LOOK)
                };
                let (file, meta) = match located {
                    Located::Missing => return false,
                    Located::Skip(next) => {
                        self.cursors[index] = next.max(offset);
                        return true;
                    }
                    Located::Block(file, meta) => (file, meta),
                };
                match partition.disk_block(file, meta).await {
                    // The last block's end moves on over a gap with no record after it was
                    // decoded: the block table knows the newer end.
                    Ok(block) => (block, meta.next),
                    Err(error) => {
                        if !matches!(*error, BlockError::Unfinished) {
                            tracing::warn!(topic = %self.topic.name, partition = partition.id, from = meta.first, %error, "dropped the cache's segment files up to a block that cannot be read; reading those records from Kafka");
                        }
                        return false;
                    }
                }
            }
        };
        let mut taken = false;
        {
            let Ok(log) = partition.log.read() else {
                return false;
            };
            let historical_end = &mut self.targets[index];
            for message in block.messages.iter().filter(|m| m.offset >= offset) {
                let skip = self.latest_per_key && replaced(&log, message, historical_end);
                if !skip {
                    self.buffer.push_back((index, message.clone()));
                    taken = true;
                }
            }
        }
        if !taken {
            self.cursors[index] = block_next.max(offset + 1);
        }
        self.disk_block = Some((index, block));
        true
    }

    /// Reads partition `index` from `offset` on straight from Kafka into the buffer. Only
    /// when Kafka no longer has `offset` either (retention) does the cursor move on, to
    /// Kafka's log start.
    async fn read_through(&mut self, index: usize, offset: i64) -> Result<(), StreamError> {
        let partition = &self.partitions[index];
        let mut batch = self
            .upstream
            .fetch(FetchRequest {
                topic: self.topic.name.clone(),
                partition: partition.id,
                offset,
                max_wait_ms: 0,
                max_bytes: self.read_through_bytes,
                from_end: false,
            })
            .await?;
        let mut next = batch.next_offset.max(offset);
        {
            let log = partition.log.read().map_err(|_| StreamError::Stopped)?;
            let historical_end = &mut self.targets[index];
            for mut message in std::mem::take(&mut batch.messages) {
                if message.offset < offset {
                    continue;
                }
                if let Some(transform) = &partition.transform {
                    transform.apply(&mut message);
                }
                let skip = self.latest_per_key && replaced(&log, &message, historical_end);
                if skip {
                    next = next.max(message.offset + 1);
                } else {
                    // A copy, so the buffer does not keep the whole fetch alive.
                    self.buffer.push_back((index, Arc::new(compact(message))));
                }
            }
        }
        if self.buffer.iter().all(|(i, _)| *i != index) {
            if next == offset {
                if batch.high_watermark > offset && self.read_through_bytes < self.fetch_max_bytes {
                    // The record there is larger than the fetch asked for, and the broker
                    // answered with part of its batch: ask for more.
                    self.read_through_bytes = self
                        .read_through_bytes
                        .saturating_mul(2)
                        .min(self.fetch_max_bytes);
                } else {
                    // Nothing came back (the broker answered before having it): ask again
                    // soon.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            self.cursors[index] = next;
        }
        Ok(())
    }

    async fn next(mut self) -> Option<(Result<MergedItem, StreamError>, Self)> {
        if let Some(ends) = self.snapshot.take() {
            return Some((Ok(MergedItem::Snapshot(ends)), self));
        }
        loop {
            if let Some((index, message)) = self.buffer.pop_front() {
                self.cursors[index] = self.cursors[index].max(message.offset + 1);
                if passes(&self.filters, &message) {
                    let progress = self.progress();
                    return Some((Ok(MergedItem::Message { message, progress }), self));
                }
                continue;
            }
            if !self.synced && self.reached_targets() {
                self.synced = true;
                let progress = self.progress();
                return Some((Ok(MergedItem::Synced(progress)), self));
            }
            if let Some((index, block)) = &self.disk_block
                && self.cursors[*index] >= block.next
            {
                self.disk_block = None;
            }
            match self.fill() {
                Fill::Filled => continue,
                Fill::ReadThrough(index, offset) => {
                    if self.read_disk(index, offset).await {
                        // A replay from disk reads one block after another without waiting
                        // for anything: let the worker's other tasks run.
                        tokio::task::consume_budget().await;
                        continue;
                    }
                    if let Err(error) = self.read_through(index, offset).await {
                        tracing::debug!(topic = %self.topic.name, %error, "read-through fetch failed; retrying");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
                Fill::Nothing => {}
            }
            // Wait for any partition to fetch more.
            if self.receivers.is_empty() {
                return None;
            }
            let changes = self
                .receivers
                .iter_mut()
                .map(|receiver| Box::pin(receiver.changed()));
            let (changed, _, _) = futures_util::future::select_all(changes).await;
            if changed.is_err() {
                return None;
            }
        }
    }
}

/// The cache's `kafka` handler: reads from the cache, everything else passes through.
pub struct CacheHandler {
    pub(crate) cache: Arc<Cache>,
}

impl CacheHandler {
    /// The handler of `cache`.
    pub fn new(cache: Arc<Cache>) -> Self {
        Self { cache }
    }
}

impl KafkaHandler for CacheHandler {
    fn merged(&self, request: MergedRequest) -> BoxFuture<'_, Result<MergedStream, StreamError>> {
        Box::pin(self.cache.merged(request))
    }

    fn produce(&self, request: ProduceRequest) -> BoxFuture<'_, Result<ProduceAck, StreamError>> {
        Box::pin(async move {
            let topic = request.topic.clone();
            let ack = self.cache.upstream.produce(request).await?;
            if let Some(offset) = ack.offset {
                self.cache.produced(&topic, ack.partition, offset);
            }
            Ok(ack)
        })
    }

    fn metadata(&self, topic: &str) -> BoxFuture<'_, Result<TopicMetadata, StreamError>> {
        self.cache.upstream.metadata(topic)
    }

    fn init_producer(&self, topic: &str) -> BoxFuture<'_, Result<ProducerIdentity, StreamError>> {
        self.cache.upstream.init_producer(topic)
    }

    fn describe(&self, topic: &str) -> BoxFuture<'_, Result<TopicConfig, StreamError>> {
        self.cache.upstream.describe(topic)
    }

    fn fetch(&self, request: FetchRequest) -> BoxFuture<'_, Result<FetchBatch, StreamError>> {
        self.cache.upstream.fetch(request)
    }

    fn follow(&self, request: FetchRequest) -> FollowStream<'_> {
        self.cache.upstream.follow(request)
    }

    fn list_offset(
        &self,
        topic: &str,
        partition: i32,
        spec: OffsetSpec,
    ) -> BoxFuture<'_, Result<i64, StreamError>> {
        self.cache.upstream.list_offset(topic, partition, spec)
    }

    crate::kind::forward_group_calls!(self, _topic => Ok::<_, StreamError>(&self.cache.upstream));
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache_log::READ_CHUNK;
    use crate::kind::{MergedItem, MergedStream};

    fn message(offset: i64, key: &str, value: Option<&str>) -> Message {
        Message {
            partition: 0,
            offset,
            timestamp: 0,
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            headers: Vec::new(),
        }
    }

    /// One partition in memory, for the cache's own logic; the tests in `tests/cache.rs` run
    /// the same paths against a real broker. Fetches of offsets in `1..gate` wait until the
    /// gate opens, so a test can hold the history fetch back.
    struct Partition {
        records: Mutex<Vec<Message>>,
        compacted: bool,
        gate: i64,
        open: watch::Sender<bool>,
        /// While set, probes of the end fail after a pause (a broker away for longer than the
        /// client retries).
        end_fails: std::sync::atomic::AtomicBool,
        end_probes: AtomicUsize,
        /// Fetches that do not wait (a reader's read-through, not the cache's own fetch).
        read_throughs: AtomicUsize,
        /// While set, the fetch of offset 0 waits at the gate too (the history's first fetch
        /// held back).
        first_held: std::sync::atomic::AtomicBool,
        /// What `describe` answers, when not the defaults (with `compacted`).
        config: Mutex<Option<TopicConfig>>,
    }

    impl Partition {
        fn new(records: Vec<(&str, Option<&str>)>, compacted: bool, gate: i64) -> Arc<Self> {
            let records = records
                .into_iter()
                .enumerate()
                .map(|(offset, (key, value))| message(offset as i64, key, value))
                .collect();
            Arc::new(Self {
                records: Mutex::new(records),
                compacted,
                gate,
                open: watch::channel(gate <= 1).0,
                end_fails: std::sync::atomic::AtomicBool::new(false),
                end_probes: AtomicUsize::new(0),
                read_throughs: AtomicUsize::new(0),
                first_held: std::sync::atomic::AtomicBool::new(false),
                config: Mutex::new(None),
            })
        }

        fn end(&self) -> i64 {
            self.records.lock().unwrap().len() as i64
        }

        fn append(&self, key: &str, value: &str) {
            let mut records = self.records.lock().unwrap();
            let offset = records.len() as i64;
            records.push(message(offset, key, Some(value)));
        }
    }

    impl KafkaHandler for Partition {
        fn merged(&self, _: MergedRequest) -> BoxFuture<'_, Result<MergedStream, StreamError>> {
            Box::pin(async { Err(StreamError::NoRoute) })
        }

        fn produce(
            &self,
            request: ProduceRequest,
        ) -> BoxFuture<'_, Result<ProduceAck, StreamError>> {
            let mut records = self.records.lock().unwrap();
            let offset = records.len() as i64;
            records.push(Message {
                offset,
                ..message(offset, "", None)
            });
            if let Some(last) = records.last_mut() {
                last.key = request.key;
                last.value = request.value;
            }
            Box::pin(async move {
                Ok(ProduceAck {
                    partition: 0,
                    offset: Some(offset),
                })
            })
        }

        fn metadata(&self, _: &str) -> BoxFuture<'_, Result<TopicMetadata, StreamError>> {
            Box::pin(async {
                Ok(TopicMetadata {
                    partitions: vec![0],
                })
            })
        }

        fn describe(&self, _: &str) -> BoxFuture<'_, Result<TopicConfig, StreamError>> {
            let config = self.config.lock().unwrap().clone().unwrap_or(TopicConfig {
                compacted: self.compacted,
                ..TopicConfig::default()
            });
            Box::pin(async move { Ok(config) })
        }

        /// One record per fetch.
        fn fetch(&self, request: FetchRequest) -> BoxFuture<'_, Result<FetchBatch, StreamError>> {
            if request.max_wait_ms == 0 {
                self.read_throughs.fetch_add(1, Ordering::Relaxed);
            }
            Box::pin(async move {
                let held = (1..self.gate).contains(&request.offset)
                    || (request.offset == 0 && self.first_held.load(Ordering::Relaxed));
                if held {
                    let mut open = self.open.subscribe();
                    let _ = open.wait_for(|open| *open).await;
                }
                let (record, end) = {
                    let records = self.records.lock().unwrap();
                    (
                        records.get(request.offset as usize).cloned(),
                        records.len() as i64,
                    )
                };
                if record.is_none() {
                    tokio::time::sleep(Duration::from_millis(request.max_wait_ms as u64)).await;
                }
                Ok(FetchBatch {
                    next_offset: request.offset + i64::from(record.is_some()),
                    messages: record.into_iter().collect(),
                    high_watermark: end,
                    log_start_offset: 0,
                })
            })
        }

        fn list_offset(
            &self,
            _: &str,
            _: i32,
            spec: OffsetSpec,
        ) -> BoxFuture<'_, Result<i64, StreamError>> {
            let end = self.end();
            let fails = spec == OffsetSpec::Latest && self.end_fails.load(Ordering::Relaxed);
            if spec == OffsetSpec::Latest {
                self.end_probes.fetch_add(1, Ordering::Relaxed);
            }
            Box::pin(async move {
                if fails {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    return Err(StreamError::Upstream("broker unreachable".into()));
                }
                Ok(match spec {
                    OffsetSpec::Earliest => 0,
                    OffsetSpec::Latest => end,
                })
            })
        }
    }

    fn cache_of(upstream: Arc<Partition>, partition_bytes: usize) -> Arc<Cache> {
        let tuning = CacheTuning {
            partition_bytes,
            fetch_max_wait_ms: 10,
            ..CacheTuning::default()
        };
        Arc::new(Cache::new(upstream, HashMap::new(), tuning))
    }

    /// A cache on disk of a partition of `records` records, once it has fetched them all:
    /// memory keeps nothing past each fetch, so readers read from the segment files.
    async fn fetched_to_disk(
        records: usize,
        directory: &std::path::Path,
    ) -> (Arc<Partition>, Arc<Cache>, Arc<PartitionCache>) {
        let upstream = Partition::new(vec![("k", Some("v")); records], false, 0);
        let cache = disk_cache_of(upstream.clone(), directory);
        let topic = cache.topic("t").await.unwrap();
        let partition = topic.partitions[0].clone();
        let end = i64::try_from(records).unwrap();
        partition
            .fetched
            .subscribe()
            .wait_for(|fetched| fetched.next == end)
            .await
            .unwrap();
        (upstream, cache, partition)
    }

    fn disk_cache_of(upstream: Arc<Partition>, directory: &std::path::Path) -> Arc<Cache> {
        let tuning = CacheTuning {
            partition_bytes: 1,
            fetch_max_wait_ms: 10,
            ..CacheTuning::default()
        };
        let disk = DiskTuning {
            directory: directory.to_owned(),
            segment_bytes: 64 * 1024,
            budget: DiskBudget::new(u64::MAX),
        };
        Arc::new(Cache::new(upstream, HashMap::new(), tuning).with_disk(disk))
    }

    /// A compacted partition where `a@2` replaces `a@0`.
    const A_REPLACED: &[(&str, Option<&str>)] = &[
        ("a", Some("1")),
        ("b", Some("1")),
        ("a", Some("2")),
        ("c", Some("1")),
    ];

    fn offsets_of(messages: Vec<(i64, String)>) -> Vec<i64> {
        messages.into_iter().map(|(offset, _)| offset).collect()
    }

    fn request(start: Start, filters: Vec<Filter>) -> MergedRequest {
        MergedRequest {
            topic: "t".into(),
            start,
            filters,
            latest_per_key: true,
            ..MergedRequest::default()
        }
    }

    /// The next `count` messages as (offset, key).
    async fn messages(stream: &mut MergedStream, count: usize) -> Vec<(i64, String)> {
        let mut got = Vec::new();
        while got.len() < count {
            let item = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .unwrap_or_else(|_| panic!("a message within 10 s after {got:?}"));
            match item {
                Some(Ok(MergedItem::Message { message, .. })) => got.push((
                    message.offset,
                    String::from_utf8_lossy(message.key.as_deref().unwrap_or_default())
                        .into_owned(),
                )),
                Some(Ok(MergedItem::Synced(_) | MergedItem::Snapshot(_))) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        got
    }

    /// Every item of `stream` up to its sync: `(offset, key)` per record, the snapshot's ends
    /// and the progress at the sync.
    async fn until_synced(stream: &mut MergedStream) -> (Vec<(i64, String)>, Vec<i64>, Vec<i64>) {
        let (mut got, mut ends) = (Vec::new(), Vec::new());
        loop {
            let item = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .unwrap_or_else(|_| panic!("the sync within 10 s after {got:?}"));
            match item {
                Some(Ok(MergedItem::Message { message, .. })) => got.push((
                    message.offset,
                    String::from_utf8_lossy(message.key.as_deref().unwrap_or_default())
                        .into_owned(),
                )),
                Some(Ok(MergedItem::Snapshot(snapshot))) => {
                    ends = snapshot.iter().map(|end| end.offset).collect();
                }
                Some(Ok(MergedItem::Synced(progress))) => {
                    return (got, ends, progress.iter().map(|p| p.offset).collect());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_live_reader_gets_new_records_while_the_history_is_held_back() {
        let upstream = Partition::new(vec![("h", Some("v")); 50], false, 50);
        let cache = cache_of(upstream.clone(), 64 * 1024 * 1024);
        let mut historical = cache
            .merged(request(Start::Historical, Vec::new()))
            .await
            .unwrap();
        let mut live = cache
            .merged(request(Start::Live, Vec::new()))
            .await
            .unwrap();
        upstream.append("live", "now");
        // The history fetch is stuck at offset 1; only a fetch of the end can bring this.
        assert_eq!(messages(&mut live, 1).await, [(50, "live".to_owned())]);
        upstream.open.send_replace(true);
        let all = messages(&mut historical, 51).await;
        let offsets: Vec<i64> = all.iter().map(|(offset, _)| *offset).collect();
        assert_eq!(offsets, (0..51).collect::<Vec<_>>());
        upstream.append("later", "x");
        assert_eq!(messages(&mut live, 1).await, [(51, "later".to_owned())]);
        // The history caught up with the tail: the tail is gone.
        tokio::time::timeout(Duration::from_secs(10), async {
            while cache.topic("t").await.unwrap().partitions[0]
                .tail()
                .is_some()
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the tail retires");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_live_reader_does_not_wait_for_the_historys_first_fetch() {
        let upstream = Partition::new(vec![("h", Some("v")); 50], false, 50);
        // The first fetch waits until the hook is in place.
        upstream.open.send_replace(false);
        upstream.first_held.store(true, Ordering::Relaxed);
        let cache = cache_of(upstream.clone(), 64 * 1024 * 1024);
        let open_live = || {
            tokio::time::timeout(
                Duration::from_secs(5),
                cache.merged(request(Start::Live, Vec::new())),
            )
        };
        let mut live = open_live()
            .await
            .expect("opened while the first fetch is held")
            .unwrap();
        upstream.append("live", "now");
        assert_eq!(messages(&mut live, 1).await, [(50, "live".to_owned())]);
        // A second live reader joins the tail where it has got to.
        let mut second = open_live().await.expect("opened again").unwrap();
        upstream.append("more", "x");
        assert_eq!(messages(&mut second, 1).await, [(51, "more".to_owned())]);
        assert_eq!(messages(&mut live, 1).await, [(51, "more".to_owned())]);
        upstream.open.send_replace(true);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_never_ask_the_broker_for_the_end() {
        let upstream = Partition::new(vec![("k", Some("v")); 10], false, 0);
        let cache = cache_of(upstream.clone(), 64 * 1024 * 1024);
        let mut first = cache
            .merged(request(Start::Historical, Vec::new()))
            .await
            .unwrap();
        let _ = messages(&mut first, 10).await;
        // A broker that could not answer would hold every reader that asked it.
        upstream.end_fails.store(true, Ordering::Relaxed);
        upstream.end_probes.store(0, Ordering::Relaxed);
        let resume = || MergedRequest {
            offsets: vec![PartitionOffset {
                partition: 0,
                offset: 5,
            }],
            ..request(Start::Historical, Vec::new())
        };
        let readers = futures_util::future::join_all((0..20).map(|_| cache.merged(resume()))).await;
        for reader in readers {
            let mut reader = reader.unwrap();
            assert_eq!(messages(&mut reader, 1).await, [(5, "k".to_owned())]);
        }
        assert_eq!(upstream.end_probes.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_reads_its_own_write_before_the_cache_has_fetched_it() {
        // The cache's fetch of offset 1 on waits at the gate.
        let upstream = Partition::new(vec![("a", Some("1"))], false, 2);
        let cache = cache_of(upstream.clone(), 64 * 1024 * 1024);
        let handler = CacheHandler::new(cache.clone());
        let mut first = handler
            .merged(request(Start::Historical, Vec::new()))
            .await
            .unwrap();
        assert_eq!(until_synced(&mut first).await.0, [(0, "a".to_owned())]);
        let ack = handler
            .produce(ProduceRequest {
                topic: "t".into(),
                key: Some(Bytes::from_static(b"b")),
                value: Some(Bytes::from_static(b"1")),
                ..ProduceRequest::default()
            })
            .await
            .unwrap();
        assert_eq!(ack.offset, Some(1));
        let mut reader = handler
            .merged(request(Start::Historical, Vec::new()))
            .await
            .unwrap();
        let opener = {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                upstream.open.send_replace(true);
            })
        };
        let (records, _, synced) = until_synced(&mut reader).await;
        assert_eq!(
            records,
            [(0, "a".to_owned()), (1, "b".to_owned())],
            "the acknowledged write comes before the sync"
        );
        assert_eq!(synced, [2]);
        opener.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_behind_the_cache_read_through() {
        let upstream = Partition::new(vec![("k", Some("v")); 40], false, 0);
        let cache = cache_of(upstream, 1);
        let mut first = cache
            .merged(request(Start::Historical, Vec::new()))
            .await
            .unwrap();
        let _ = messages(&mut first, 40).await;
        let mut second = cache
            .merged(request(Start::Historical, Vec::new()))
            .await
            .unwrap();
        assert_eq!(
            offsets_of(messages(&mut second, 40).await),
            (0..40).collect::<Vec<_>>()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_key_reads_start_at_the_keys_latest_record_and_idle_topics_go() {
        let upstream = Partition::new(A_REPLACED.to_vec(), true, 0);
        let cache = cache_of(upstream, 64 * 1024 * 1024);
        // A replay skips the records the cache knows to be superseded, so the cache must
        // first hold the whole partition: a reader that keeps every record gets the last one
        // only once the cache's fetch has reached it (and it reads from the cache alone).
        let mut every = cache
            .merged(MergedRequest {
                latest_per_key: false,
                ..request(Start::Historical, Vec::new())
            })
            .await
            .unwrap();
        assert_eq!(messages(&mut every, 4).await.len(), 4);
        drop(every);
        let mut all = cache
            .merged(request(Start::Historical, Vec::new()))
            .await
            .unwrap();
        assert_eq!(
            messages(&mut all, 3).await,
            [
                (1, "b".to_owned()),
                (2, "a".to_owned()),
                (3, "c".to_owned())
            ]
        );
        let key = |key: &'static str| {
            vec![Filter {
                conditions: vec![Condition::Key(Bytes::from_static(key.as_bytes()))],
            }]
        };
        let mut lookup = cache
            .merged(request(Start::Historical, key("a")))
            .await
            .unwrap();
        assert_eq!(messages(&mut lookup, 1).await, [(2, "a".to_owned())]);
        assert!(cache.evict_idle(Duration::ZERO).is_empty(), "read now");
        drop((all, lookup));
        assert_eq!(cache.evict_idle(Duration::ZERO), ["t"]);
        assert!(cache.cached_topics().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_behind_memory_share_the_disk_and_never_ask_kafka() {
        let directory = tempfile::tempdir().unwrap();
        let records: Vec<(String, Option<&str>)> =
            (0..200).map(|i| (format!("k{i}"), Some("v"))).collect();
        let upstream = Partition::new(
            records.iter().map(|(k, v)| (k.as_str(), *v)).collect(),
            false,
            0,
        );
        // Memory keeps nothing past each fetch: every record a reader gets comes from disk.
        let cache = disk_cache_of(upstream.clone(), directory.path());
        let mut first = cache
            .merged(request(Start::Historical, Vec::new()))
            .await
            .unwrap();
        assert_eq!(
            offsets_of(messages(&mut first, 200).await),
            (0..200).collect::<Vec<_>>()
        );
        let readers = futures_util::future::join_all(
            (0..20).map(|_| cache.merged(request(Start::Historical, Vec::new()))),
        )
        .await;
        for reader in readers {
            let mut reader = reader.unwrap();
            assert_eq!(
                offsets_of(messages(&mut reader, 200).await),
                (0..200).collect::<Vec<_>>()
            );
        }
        assert_eq!(
            upstream.read_throughs.load(Ordering::Relaxed),
            0,
            "no reader asked Kafka"
        );
        let filtered = vec![Filter {
            conditions: vec![Condition::Key(Bytes::from_static(b"k150"))],
        }];
        let mut lookup = cache
            .merged(MergedRequest {
                latest_per_key: false,
                ..request(Start::Historical, filtered)
            })
            .await
            .unwrap();
        assert_eq!(messages(&mut lookup, 1).await, [(150, "k150".to_owned())]);
        let segments = directory.path().join("t-0");
        assert!(
            std::fs::read_dir(&segments).unwrap().count() > 1,
            "segment files are there"
        );
        drop((first, lookup));
        assert_eq!(cache.evict_idle(Duration::ZERO), ["t"]);
        // The fetch task lets go of the partition once it sees the eviction.
        tokio::time::timeout(Duration::from_secs(10), async {
            while segments.exists() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("an evicted partition's files are removed");
    }

    /// Holds the partition's next file work of kind `held` back until another task of the
    /// test's runtime releases it: on a `current_thread` runtime that task runs only while
    /// the file work is off the worker. Set once the work waited in vain (it goes on after
    /// 5 s, so a regression fails rather than hangs).
    fn hold_next(partition: &PartitionCache, held: FileWork) -> Arc<std::sync::atomic::AtomicBool> {
        let stalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let started = Arc::new(tokio::sync::Notify::new());
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = Mutex::new(Some(released));
        let hook = {
            let (stalled, started) = (stalled.clone(), started.clone());
            move |work: FileWork| {
                let Some(released) = released.lock().unwrap().take_if(|_| work == held) else {
                    return;
                };
                started.notify_one();
                if released.recv_timeout(Duration::from_secs(5)).is_err() {
                    stalled.store(true, Ordering::SeqCst);
                }
            }
        };
        *partition.file_hook.lock().unwrap() = Some(Arc::new(hook));
        tokio::spawn(async move {
            started.notified().await;
            let _ = release.send(());
        });
        stalled
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_block_read_from_disk_leaves_the_worker_to_its_other_tasks() {
        let directory = tempfile::tempdir().unwrap();
        let (upstream, cache, partition) = fetched_to_disk(50, directory.path()).await;
        // As if the blocks had left the page cache: they are read on the pool.
        partition.cold_reads.store(true, Ordering::Relaxed);
        let stalled = hold_next(&partition, FileWork::Read(0));
        let mut reader = cache
            .merged(request(Start::Historical, Vec::new()))
            .await
            .unwrap();
        let got = offsets_of(messages(&mut reader, 50).await);
        assert!(
            !stalled.load(Ordering::SeqCst),
            "the block was read on the worker: the task releasing it could not run"
        );
        assert_eq!(got, (0..50).collect::<Vec<_>>());
        assert_eq!(upstream.read_throughs.load(Ordering::Relaxed), 0);
        assert!(partition.pool_reads.load(Ordering::Relaxed) > 0);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "current_thread")]
    async fn a_block_in_the_page_cache_is_read_on_the_worker() {
        let directory = tempfile::tempdir().unwrap();
        let (upstream, cache, partition) = fetched_to_disk(50, directory.path()).await;
        // The blocks were just written: their bytes are in the page cache.
        let mut reader = cache
            .merged(request(Start::Historical, Vec::new()))
            .await
            .unwrap();
        let got = offsets_of(messages(&mut reader, 50).await);
        assert_eq!(got, (0..50).collect::<Vec<_>>());
        assert_eq!(upstream.read_throughs.load(Ordering::Relaxed), 0);
        if crate::cache_disk::nowait_supported() {
            assert_eq!(
                partition.pool_reads.load(Ordering::Relaxed),
                0,
                "a block in the page cache went to the blocking pool"
            );
        } else {
            eprintln!("RWF_NOWAIT reads unsupported here: every block went to the pool");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn readers_of_a_block_being_read_wait_for_that_read() {
        let directory = tempfile::tempdir().unwrap();
        let (_, cache, partition) = fetched_to_disk(10, directory.path()).await;
        let first_reads = Arc::new(AtomicUsize::new(0));
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = Mutex::new(released);
        let hook = {
            let first_reads = first_reads.clone();
            move |work: FileWork| {
                if work == FileWork::Read(0) {
                    first_reads.fetch_add(1, Ordering::SeqCst);
                    let _ = released
                        .lock()
                        .unwrap()
                        .recv_timeout(Duration::from_secs(5));
                }
            }
        };
        *partition.file_hook.lock().unwrap() = Some(Arc::new(hook));
        // As if the block had left the page cache: it is read on the pool.
        partition.cold_reads.store(true, Ordering::Relaxed);
        // The first block's read is held until every reader has asked for it.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = release.send(());
        });
        let readers = (0..5).map(|_| async {
            let mut reader = cache
                .merged(request(Start::Historical, Vec::new()))
                .await
                .unwrap();
            offsets_of(messages(&mut reader, 10).await)
        });
        for got in futures_util::future::join_all(readers).await {
            assert_eq!(got, (0..10).collect::<Vec<_>>());
        }
        assert_eq!(
            first_reads.load(Ordering::SeqCst),
            1,
            "the readers waited for one read"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_fetch_is_written_to_disk_off_the_worker() {
        let directory = tempfile::tempdir().unwrap();
        let upstream = Partition::new(vec![("k", Some("v")); 20], false, 0);
        // The first fetch waits until the hook is in place.
        upstream.open.send_replace(false);
        upstream.first_held.store(true, Ordering::Relaxed);
        let cache = disk_cache_of(upstream.clone(), directory.path());
        let topic = cache.topic("t").await.unwrap();
        let stalled = hold_next(&topic.partitions[0], FileWork::Write);
        upstream.open.send_replace(true);
        let mut reader = cache
            .merged(request(Start::Historical, Vec::new()))
            .await
            .unwrap();
        let got = offsets_of(messages(&mut reader, 20).await);
        assert!(
            !stalled.load(Ordering::SeqCst),
            "the fetch was written on the worker: the task releasing it could not run"
        );
        assert_eq!(got, (0..20).collect::<Vec<_>>());
        assert_eq!(upstream.read_throughs.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_corrupt_segment_is_read_from_kafka_instead() {
        let directory = tempfile::tempdir().unwrap();
        let upstream = Partition::new(vec![("k", Some("value")); 50], false, 0);
        let cache = disk_cache_of(upstream.clone(), directory.path());
        let mut first = cache
            .merged(request(Start::Historical, Vec::new()))
            .await
            .unwrap();
        let _ = messages(&mut first, 50).await;
        for entry in std::fs::read_dir(directory.path().join("t-0")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "log") {
                let mut bytes = std::fs::read(&path).unwrap();
                for byte in bytes.iter_mut().skip(20).step_by(7) {
                    *byte ^= 0x5a;
                }
                std::fs::write(&path, bytes).unwrap();
            }
        }
        let mut second = cache
            .merged(request(Start::Historical, Vec::new()))
            .await
            .unwrap();
        assert_eq!(
            offsets_of(messages(&mut second, 50).await),
            (0..50).collect::<Vec<_>>()
        );
        assert!(
            upstream.read_throughs.load(Ordering::Relaxed) > 0,
            "Kafka answered instead"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cache_whose_directory_was_held_opens_it_once_free() {
        let directory = tempfile::tempdir().unwrap();
        let upstream = Partition::new(vec![("k", Some("v")); 5], false, 0);
        let first = disk_cache_of(upstream.clone(), directory.path());
        let second = disk_cache_of(upstream.clone(), directory.path());
        let mut reader = first
            .merged(request(Start::Historical, Vec::new()))
            .await
            .unwrap();
        let _ = messages(&mut reader, 5).await;
        let mut other = second
            .merged(request(Start::Historical, Vec::new()))
            .await
            .unwrap();
        let _ = messages(&mut other, 5).await;
        let held = |cache: &Arc<Cache>| {
            let cache = cache.clone();
            async move {
                cache.topic("t").await.unwrap().partitions[0]
                    .disk
                    .lock()
                    .unwrap()
                    .is_some()
            }
        };
        assert!(held(&first).await);
        assert!(!held(&second).await, "the directory is the first cache's");
        // The first cache lets go (as a binding replaced on reload does).
        drop(reader);
        first.stop();
        drop(first);
        tokio::time::timeout(Duration::from_secs(20), async {
            while !held(&second).await {
                upstream.append("k", "more");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("the second cache takes the directory once it is free");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_key_replaced_after_the_replay_began_still_comes_before_the_sync() {
        // One read chunk's worth of records, so the replay's first chunk ends exactly at its
        // end: a@0, then k1..k255.
        let keys: Vec<String> = std::iter::once("a".to_owned())
            .chain((1..READ_CHUNK).map(|i| format!("k{i}")))
            .collect();
        let upstream = Partition::new(
            keys.iter().map(|key| (key.as_str(), Some("1"))).collect(),
            true,
            0,
        );
        let cache = cache_of(upstream.clone(), 64 * 1024 * 1024);
        let mut warm = cache
            .merged(request(Start::Historical, Vec::new()))
            .await
            .unwrap();
        assert_eq!(until_synced(&mut warm).await.0.len(), READ_CHUNK);
        // The replay's end is fixed when it opens (256); `a` is replaced at 256 before the
        // replay reads a@0, and the cache has fetched the replacement.
        let mut replay = cache
            .merged(request(Start::Historical, Vec::new()))
            .await
            .unwrap();
        upstream.append("a", "2");
        let mut every = cache
            .merged(MergedRequest {
                latest_per_key: false,
                ..request(Start::Historical, Vec::new())
            })
            .await
            .unwrap();
        messages(&mut every, READ_CHUNK + 1).await;
        let (records, ends, synced) = until_synced(&mut replay).await;
        let end = READ_CHUNK as i64;
        assert_eq!(ends, [end]);
        assert_eq!(records.len(), READ_CHUNK, "every key once: {records:?}");
        assert_eq!(
            records.last(),
            Some(&(end, "a".to_owned())),
            "a@0 is stepped over for a@256, which still comes before the sync"
        );
        assert_eq!(synced, [end + 1]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_latest_per_key_replay_waits_for_the_records_that_replace_others() {
        // The history fetch stops at offset 1 until the gate opens: a@0 is all the cache has,
        // and only a@2 tells it a@0 was replaced.
        let upstream = Partition::new(A_REPLACED.to_vec(), true, 2);
        let cache = cache_of(upstream.clone(), 64 * 1024 * 1024);
        let mut all = cache
            .merged(request(Start::Historical, Vec::new()))
            .await
            .unwrap();
        let snapshot = tokio::time::timeout(Duration::from_secs(10), all.next()).await;
        assert!(
            matches!(&snapshot, Ok(Some(Ok(MergedItem::Snapshot(ends)))) if ends[0].offset == 4),
            "the replay names its end first: {snapshot:?}"
        );
        let early = tokio::time::timeout(Duration::from_millis(300), all.next()).await;
        assert!(
            early.is_err(),
            "nothing before the replaced record is known: {early:?}"
        );
        upstream.open.send_replace(true);
        assert_eq!(
            messages(&mut all, 3).await,
            [
                (1, "b".to_owned()),
                (2, "a".to_owned()),
                (3, "c".to_owned())
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_bytes_bounds_memory_and_older_offsets_are_read_from_kafka() {
        let upstream = Partition::new(vec![("k", Some("v")); 40], false, 0);
        let one = crate::cache_log::size_of_message(&message(0, "k", Some("v")));
        *upstream.config.lock().unwrap() = Some(TopicConfig {
            retention_bytes: (one * 5) as i64,
            ..TopicConfig::default()
        });
        let cache = cache_of(upstream.clone(), 64 * 1024 * 1024);
        let mut first = cache
            .merged(request(Start::Historical, Vec::new()))
            .await
            .unwrap();
        assert_eq!(
            offsets_of(messages(&mut first, 40).await),
            (0..40).collect::<Vec<_>>()
        );
        {
            let topic = cache.topic("t").await.unwrap();
            let log = topic.partitions[0].log.read().unwrap();
            assert_eq!(
                log.offsets(),
                (35..40).collect::<Vec<_>>(),
                "the newest stay"
            );
            assert_eq!(log.start, 35);
        }
        let asked = upstream.read_throughs.load(Ordering::Relaxed);
        let mut second = cache
            .merged(request(Start::Historical, Vec::new()))
            .await
            .unwrap();
        assert_eq!(
            offsets_of(messages(&mut second, 40).await),
            (0..40).collect::<Vec<_>>(),
            "no offset is skipped"
        );
        assert!(
            upstream.read_throughs.load(Ordering::Relaxed) > asked,
            "what the cache dropped came from Kafka"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tombstones_older_than_delete_retention_are_gone_from_replays_and_lookups() {
        let directory = tempfile::tempdir().unwrap();
        let now = now_millis();
        let hour_ago = now - 3_600_000;
        let upstream = || {
            let upstream = Partition::new(
                vec![
                    ("a", Some("1")),
                    ("b", Some("1")),
                    ("a", None),
                    ("c", None),
                    ("d", Some("1")),
                ],
                true,
                0,
            );
            for record in upstream.records.lock().unwrap().iter_mut() {
                record.timestamp = if record.offset < 3 { hour_ago } else { now };
            }
            *upstream.config.lock().unwrap() = Some(TopicConfig {
                compacted: true,
                delete_retention_ms: 60_000,
                ..TopicConfig::default()
            });
            upstream
        };
        let in_memory = upstream();
        let on_disk = upstream();
        // The second cache keeps nothing in memory: its replays come from the segment files.
        for (upstream, cache) in [
            (in_memory.clone(), cache_of(in_memory, 64 * 1024 * 1024)),
            (on_disk.clone(), disk_cache_of(on_disk, directory.path())),
        ] {
            let mut replay = cache
                .merged(request(Start::Historical, Vec::new()))
                .await
                .unwrap();
            let (records, _, synced) = until_synced(&mut replay).await;
            assert_eq!(
                records,
                [
                    (1, "b".to_owned()),
                    (3, "c".to_owned()),
                    (4, "d".to_owned())
                ],
                "a's old tombstone and the record it deleted are gone, c's young one stays"
            );
            assert_eq!(synced, [5]);
            let key = |key: &'static str| {
                request(
                    Start::Historical,
                    vec![Filter {
                        conditions: vec![Condition::Key(Bytes::from_static(key.as_bytes()))],
                    }],
                )
            };
            let asked = upstream.read_throughs.load(Ordering::Relaxed);
            let mut lookup = cache.merged(key("a")).await.unwrap();
            assert_eq!(until_synced(&mut lookup).await.0, [], "a is not found");
            assert_eq!(
                upstream.read_throughs.load(Ordering::Relaxed),
                asked,
                "without asking Kafka"
            );
            let mut lookup = cache.merged(key("c")).await.unwrap();
            assert_eq!(until_synced(&mut lookup).await.0, [(3, "c".to_owned())]);
        }
    }
}
