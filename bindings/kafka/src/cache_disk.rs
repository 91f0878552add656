//! The disk tier of the Kafka cache. Every record a `cache_server` fetches for a partition's
//! history is also written, in blocks, to segment files under
//! `<zilla.engine.directory>/<zilla.engine.cache.directory>/<namespace>.<binding>/<topic>-<partition>/`
//! (segments named by their 19-digit base offset, `.log`). Memory keeps the hot part of each
//! partition within the memory budget; a reader behind it reads the blocks it needs from
//! disk, so any number of readers behind the memory tail cost the broker nothing, and readers
//! at the same place share one decoded copy of a block (see `cache`).
//!
//! Why plain files read with `pread` rather than `mmap` or an embedded store: the cache is
//! append-only and read by offset, which needs no more than a block table; `pread` of one
//! block (a few tens of KiB) reads through the OS page cache like a mapping does, without
//! `unsafe`, without a mapping's SIGBUS when a file shrinks under it, and, unlike a page
//! fault, as a call that can be made on another thread; an embedded key-value store would
//! add write amplification and a second copy of what Kafka already orders.
//!
//! Where the work runs: each of the gateway's few single-threaded workers serves thousands of
//! connections, and one read that misses the page cache, or a write or deletion on a slow
//! disk, would stall them all. So every file operation (reading and decoding a block,
//! writing a fetch's blocks, creating, rolling and deleting segments, opening, emptying and
//! sweeping directories) runs on tokio's blocking pool, awaited by the task that needs it
//! (see `cache`), but one: on Linux a block whose bytes are all in the OS page cache is read
//! and decoded on the worker ([`read_cached_block`], `preadv2` with `RWF_NOWAIT`, which
//! fails rather than wait for the disk), since the trip to the pool costs more than such a
//! read; any other block, and every block where `RWF_NOWAIT` is not supported, goes to the
//! pool. The workers otherwise only look things up in memory: the block table
//! ([`DiskLog::locate`], [`DiskLog::filter_terms`]). The partition's lock covers that table
//! and nothing else: a write is prepared under it ([`DiskLog::writer`]), written without it
//! ([`Writer::write`]) and entered under it again ([`DiskLog::commit`]), and segments taken
//! out of the table are deleted once it is released ([`Removed`]), so a worker looking up a
//! block never waits on the lock for the disk.
//!
//! What stays in memory per block is its offset range, position and a 256-bit filter of the
//! hashes of its keys and header values (a block is cut at 32 KiB or 64 such hashes, so the
//! filter stays selective): a filtered reader skips blocks that cannot hold a match without
//! reading them. That table is counted in the memory budget.
//!
//! Each block carries a CRC-32C of its bytes. A block that fails the check or does not
//! decode is reported and its segment dropped, with every older one: readers then get those
//! records from Kafka, never a wrong record and never a panic. Files are only ever read by
//! the process that wrote them: a partition directory is locked (`.lock`) while in use,
//! emptied when a new owner takes it, and removed with its partition; a directory whose
//! lock nobody holds (left by a killed gateway) is removed when the binding next starts
//! caching. A write that fails (a full disk) drops the partition's files, and the disk
//! starts again after that fetch.
//!
//! Disk use is bounded for the whole gateway (`zilla.binding.kafka.cache.disk.bytes`,
//! default 4 GiB): past it the oldest segments of the coldest partitions are deleted, and
//! readers needing them read from Kafka again. A partition of a topic whose `cleanup.policy`
//! has `delete` is bounded by its `retention.bytes` too, as in Kafka: its oldest segments go
//! while its files hold more, except the one being written ([`DiskLog::retain_bytes`]). Segments roll at
//! `zilla.binding.kafka.cache.segment.bytes` (default 64 MiB, smaller than Zilla's 1 GiB
//! because a segment is also what the disk budget deletes at once).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::mem::size_of;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::cache_budget::{Members, MemoryBudget, shared};
use crate::cache_log::{compact, size_of_message};
use crate::kind::{Condition, Filter, Header, Message};

/// The tag that starts every block.
pub const MAGIC: &[u8; 4] = b"ZKC1";
/// Magic, payload length, CRC-32C of the payload, record count.
pub const BLOCK_HEADER: usize = 16;
/// Payload bytes a block is cut at (a single larger record makes a block of its own).
pub(crate) const BLOCK_BYTES: usize = 32 * 1024;
/// Key and header hashes a block is cut at, so its 256-bit filter stays selective (about
/// one false match in seven for a filter of one value).
const BLOCK_TERMS: usize = 64;

/// Disk-tier settings, from `zilla.binding.kafka.cache.*` properties.
#[derive(Debug, Clone)]
pub struct DiskTuning {
    /// `<engine dir>/<cache dir>/<namespace>.<binding>`.
    pub directory: PathBuf,
    /// Bytes a segment file grows to before the next one starts.
    pub segment_bytes: u64,
    /// The gateway's disk budget.
    pub budget: Arc<DiskBudget>,
}

/// What the disk budget needs of a cached partition.
pub(crate) trait DiskEvictable: Send + Sync {
    /// As [`crate::cache_budget::Evictable::temperature`].
    fn temperature(&self) -> (bool, u64);

    /// Deletes the partition's oldest segment (its only one too when `all`); the bytes freed.
    fn drop_oldest_segment(&self, all: bool) -> u64;
}

/// The bytes the cache's segment files take, for the whole gateway.
pub struct DiskBudget {
    limit: AtomicU64,
    used: AtomicU64,
    members: Members<dyn DiskEvictable>,
    /// One enforcement at a time.
    enforcing: Mutex<()>,
}

impl std::fmt::Debug for DiskBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskBudget")
            .field("limit", &self.limit.load(Ordering::Relaxed))
            .field("used", &self.used())
            .finish()
    }
}

impl DiskBudget {
    /// A budget of `limit` bytes of its own.
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            limit: AtomicU64::new(limit),
            used: AtomicU64::new(0),
            members: Members::new(),
            enforcing: Mutex::new(()),
        })
    }

    /// The gateway's budget, shared by every `cache_server` alive (the newest limit applies).
    pub fn shared(limit: u64) -> Arc<Self> {
        static SHARED: OnceLock<Mutex<Weak<DiskBudget>>> = OnceLock::new();
        shared(
            &SHARED,
            || Self::new(limit),
            |budget| budget.limit.store(limit, Ordering::Relaxed),
        )
    }

    /// Bytes in segment files now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    fn charge(&self, bytes: u64) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
    }

    fn release(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                Some(used.saturating_sub(bytes))
            });
    }

    pub(crate) fn register(&self, member: Weak<dyn DiskEvictable>) {
        self.members.register(member);
    }

    /// Deletes segments, oldest first from the coldest partitions, until the files fit the
    /// budget. A partition's segment being written goes only when nothing else is left.
    pub(crate) fn enforce(&self) {
        let limit = self.limit.load(Ordering::Relaxed);
        if self.used() <= limit {
            return;
        }
        let Ok(_enforcing) = self.enforcing.try_lock() else {
            return;
        };
        let members = self.members.coldest_first(|member| member.temperature());
        for all in [false, true] {
            for (_, member) in &members {
                while self.used() > limit {
                    if member.drop_oldest_segment(all) == 0 {
                        break;
                    }
                }
                if self.used() <= limit {
                    return;
                }
            }
        }
    }
}

/// Where a block is and what it covers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlockMeta {
    /// The first offset it covers (its first record, or a gap before it).
    pub(crate) first: i64,
    /// The offset after the last one it covers.
    pub(crate) next: i64,
    position: u64,
    /// Header and payload bytes.
    len: u32,
    /// A 256-bit filter of the hashes of its records' keys and header values.
    terms: [u64; 4],
}

struct Segment {
    base: i64,
    path: PathBuf,
    file: Arc<File>,
    len: u64,
    blocks: Vec<BlockMeta>,
    /// The newest record timestamp in it.
    newest: i64,
}

/// What [`DiskLog::locate`] found for an offset.
pub(crate) enum Located {
    /// The offset is not on disk.
    Missing,
    /// No block from the offset up to this one can hold a record passing the filters.
    Skip(i64),
    /// The first block from the offset that may.
    Block(Arc<File>, BlockMeta),
}

/// One partition's segment files.
pub(crate) struct DiskLog {
    directory: PathBuf,
    /// Held (locked) while the files are this log's (taken only when the log is dropped).
    lock: Option<File>,
    segments: VecDeque<Segment>,
    /// The first offset on disk.
    pub(crate) start: i64,
    /// The offset after the last block.
    pub(crate) next: i64,
    segment_bytes: u64,
    budget: Arc<DiskBudget>,
    memory: Arc<MemoryBudget>,
    /// Bytes of the block table counted in the memory budget.
    counted: usize,
    hashes: Hashes,
}

/// Why a block could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("cannot read cache block: {0}")]
    Io(#[from] io::Error),
    #[error("corrupt cache block: {0}")]
    Corrupt(&'static str),
    /// The read ended before the block was read (the runtime shut down, or the read
    /// panicked): the block is not at fault.
    #[error("cache block read did not finish")]
    Unfinished,
}

/// `topic` as a path component: Kafka's own topic characters stay, anything else (which
/// Kafka would not have accepted) is escaped, so no name can leave the cache directory.
pub(crate) fn path_component(topic: &str) -> String {
    let mut escaped = String::with_capacity(topic.len());
    for byte in topic.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' => escaped.push(byte as char),
            b'.' if !escaped.is_empty() => escaped.push('.'),
            _ => escaped.push_str(&format!("%{byte:02X}")),
        }
    }
    escaped
}

/// A namespace or binding name as part of a directory name: `path_component` with dots
/// escaped as well, so `<namespace>.<binding>` names one pair only.
pub(crate) fn name_component(name: &str) -> String {
    path_component(name).replace('.', "%2E")
}

/// Removes the partition directories under `directory` that no live gateway holds.
pub(crate) fn sweep(directory: &Path) {
    let Ok(entries) = fs::read_dir(directory) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(lock) = File::open(path.join(".lock")) else {
            let _ = fs::remove_dir_all(&path);
            continue;
        };
        if lock.try_lock().is_ok() {
            let _ = fs::remove_dir_all(&path);
        }
    }
}

impl DiskLog {
    /// Takes the directory of `topic`-`partition` under `tuning.directory`, emptied, for a
    /// log starting at `start`. `None` when another cache holds it (a binding being replaced
    /// still runs): the partition is then cached in memory only.
    pub(crate) fn open(
        tuning: &DiskTuning,
        memory: Arc<MemoryBudget>,
        topic: &str,
        partition: i32,
        start: i64,
    ) -> io::Result<Option<Self>> {
        let directory = tuning
            .directory
            .join(format!("{}-{partition}", path_component(topic)));
        fs::create_dir_all(&directory)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(directory.join(".lock"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Ok(None),
            Err(fs::TryLockError::Error(error)) => return Err(error),
        }
        // An owner that ended unlinks the lock file while still holding it: a lock taken on
        // that file, opened just before, is not the directory's.
        let current = fs::metadata(directory.join(".lock"))?;
        let locked = lock.metadata()?;
        if (current.dev(), current.ino()) != (locked.dev(), locked.ino()) {
            return Ok(None);
        }
        for entry in fs::read_dir(&directory)?.flatten() {
            if entry.file_name() != ".lock" {
                fs::remove_file(entry.path())?;
            }
        }
        Ok(Some(Self {
            directory,
            lock: Some(lock),
            segments: VecDeque::new(),
            start,
            next: start,
            segment_bytes: tuning.segment_bytes.max(BLOCK_BYTES as u64),
            budget: tuning.budget.clone(),
            memory,
            counted: 0,
            hashes: Hashes(RandomState::new()),
        }))
    }

    /// Bytes of segment files.
    pub(crate) fn bytes(&self) -> u64 {
        self.segments.iter().map(|segment| segment.len).sum()
    }

    /// For each filter (ORed), the terms all of which a block must have to hold a match;
    /// `None` when some filter can match anything (no key or header value to look for).
    pub(crate) fn filter_terms(&self, filters: &[Filter]) -> Option<Vec<Vec<u64>>> {
        if filters.is_empty() {
            return None;
        }
        let mut all = Vec::with_capacity(filters.len());
        for filter in filters {
            let terms: Vec<u64> = filter
                .conditions
                .iter()
                .filter_map(|condition| match condition {
                    Condition::Key(key) => Some(self.hashes.key(key)),
                    Condition::Header { name, value } => Some(self.hashes.header(name, value)),
                    _ => None,
                })
                .collect();
            if terms.is_empty() {
                return None;
            }
            all.push(terms);
        }
        Some(all)
    }

    /// Where the next blocks of a fetch whose partition starts at `log_start` in Kafka go:
    /// taken under the log's lock, so that [`Writer::write`] writes them without it and
    /// [`DiskLog::commit`] enters them in the block table.
    pub(crate) fn writer(&mut self, log_start: i64) -> Writer {
        if self.segments.is_empty() && log_start > self.next {
            self.start = log_start;
            self.next = log_start;
        }
        Writer {
            directory: self.directory.clone(),
            segment_bytes: self.segment_bytes,
            hashes: self.hashes.clone(),
            next: self.next,
            segment: self.segments.back().map(|s| (s.file.clone(), s.len)),
        }
    }

    /// Enters what `written` wrote in the block table. Blocks written to a segment deleted
    /// meanwhile (by the disk budget or an unreadable block) are lost: the disk then starts
    /// after them. After a failed write everything on disk is dropped (readers go to Kafka)
    /// and the error returned. The files to delete are returned, for after the lock.
    pub(crate) fn commit(&mut self, written: Written) -> (io::Result<()>, Removed) {
        for block in written.blocks {
            if let Some(path) = block.created {
                if self.segments.is_empty() {
                    self.start = block.meta.first;
                }
                self.segments.push_back(Segment {
                    base: block.meta.first,
                    path,
                    file: block.file.clone(),
                    len: 0,
                    blocks: Vec::new(),
                    newest: i64::MIN,
                });
            }
            match self.segments.back_mut() {
                Some(segment) if Arc::ptr_eq(&segment.file, &block.file) => {
                    segment.blocks.push(block.meta);
                    segment.len += u64::from(block.meta.len);
                    segment.newest = segment.newest.max(block.newest);
                    self.budget.charge(u64::from(block.meta.len));
                }
                // The segment was dropped while the block was written to it (the disk budget
                // or an unreadable block dropped every segment): the disk starts after it.
                _ => self.start = block.meta.next,
            }
            self.next = block.meta.next;
        }
        if let Some((error, created)) = written.failed {
            // Nothing before the end of this fetch is on disk any more: the disk starts
            // after it, so readers of those offsets go to Kafka.
            let mut removed = self.clear();
            removed.0.extend(created);
            self.start = written.end;
            self.next = written.end;
            self.recount();
            return (Err(error), removed);
        }
        if written.end > self.next {
            // A gap with no record (compacted away, or transaction markers): the last block
            // covers it, or the disk starts past it.
            match self.segments.back_mut().and_then(|s| s.blocks.last_mut()) {
                Some(last) => last.next = written.end,
                None => self.start = written.end,
            }
            self.next = written.end;
        }
        self.recount();
        (Ok(()), Removed::default())
    }

    /// Appends the records of a fetch at or after [`DiskLog::next`], in blocks, all under
    /// `&mut self` (the cache writes without holding its log: see [`DiskLog::writer`]).
    #[cfg(test)]
    pub(crate) fn append(
        &mut self,
        messages: &[Message],
        next: i64,
        log_start: i64,
    ) -> io::Result<()> {
        let written = self.writer(log_start).write(messages, next);
        self.commit(written).0
    }

    /// Counts the block table in the memory budget.
    fn recount(&mut self) {
        let bytes = self
            .segments
            .iter()
            .map(|segment| {
                segment.blocks.capacity() * size_of::<BlockMeta>() + size_of::<Segment>()
            })
            .sum::<usize>();
        if bytes > self.counted {
            self.memory.charge(bytes - self.counted);
        } else {
            self.memory.release(self.counted - bytes);
        }
        self.counted = bytes;
    }

    /// The block holding `offset`, or (with `filters`' terms) the first block from it that
    /// may hold a match, looking at most at `limit` blocks.
    pub(crate) fn locate(&self, offset: i64, terms: Option<&[Vec<u64>]>, limit: usize) -> Located {
        if offset < self.start || offset >= self.next {
            return Located::Missing;
        }
        let segment = self
            .segments
            .partition_point(|segment| segment.base <= offset)
            .saturating_sub(1);
        let mut looked = 0;
        for segment in self.segments.range(segment..) {
            let from = segment.blocks.partition_point(|block| block.next <= offset);
            for block in &segment.blocks[from..] {
                let may_match = terms.is_none_or(|terms| {
                    terms
                        .iter()
                        .any(|filter| filter.iter().all(|term| has(&block.terms, *term)))
                });
                if may_match {
                    return Located::Block(segment.file.clone(), *block);
                }
                looked += 1;
                if looked == limit {
                    return Located::Skip(block.next);
                }
            }
        }
        Located::Skip(self.next)
    }

    /// Drops the oldest segment (not the one being written unless `all`): the bytes freed,
    /// and its file to delete.
    pub(crate) fn drop_oldest(&mut self, all: bool) -> (u64, Removed) {
        if self.segments.len() < 2 && !all {
            return (0, Removed::default());
        }
        let Some(segment) = self.segments.pop_front() else {
            return (0, Removed::default());
        };
        self.start = self.segments.front().map_or(self.next, |next| {
            next.blocks.first().map_or(self.next, |b| b.first)
        });
        self.budget.release(segment.len);
        self.recount();
        (segment.len, Removed(vec![segment.path]))
    }

    /// Drops every segment up to the one holding `offset`, inclusive (a corrupt block).
    pub(crate) fn drop_through(&mut self, offset: i64) -> Removed {
        let mut removed = Removed::default();
        while self.segments.front().is_some_and(|s| s.base <= offset) {
            removed.absorb(self.drop_oldest(true).1);
        }
        removed
    }

    /// Drops whole segments whose every record is older than `retention_ms` (not the one
    /// being written).
    pub(crate) fn expire(&mut self, retention_ms: i64, now_ms: i64) -> Removed {
        let mut removed = Removed::default();
        if retention_ms < 0 {
            return removed;
        }
        while self.segments.len() > 1
            && self
                .segments
                .front()
                .is_some_and(|s| s.newest > 0 && now_ms - s.newest > retention_ms)
        {
            removed.absorb(self.drop_oldest(false).1);
        }
        removed
    }

    /// Drops whole segments, oldest first, while the files hold more than `retention_bytes`
    /// (a topic's `retention.bytes`; negative: no limit). The segment being written stays, as
    /// Kafka keeps its active segment.
    pub(crate) fn retain_bytes(&mut self, retention_bytes: i64) -> Removed {
        let mut removed = Removed::default();
        let Ok(limit) = u64::try_from(retention_bytes) else {
            return removed;
        };
        let mut bytes = self.bytes();
        while bytes > limit {
            let (freed, files) = self.drop_oldest(false);
            removed.absorb(files);
            if freed == 0 {
                break;
            }
            bytes -= freed;
        }
        removed
    }

    fn clear(&mut self) -> Removed {
        let mut removed = Removed::default();
        while !self.segments.is_empty() {
            removed.absorb(self.drop_oldest(true).1);
        }
        removed
    }

    /// The disk budget the files count against.
    pub(crate) fn budget(&self) -> &Arc<DiskBudget> {
        &self.budget
    }
}

impl Drop for DiskLog {
    fn drop(&mut self) {
        let leftover = Leftover {
            removed: self.clear(),
            _lock: self.lock.take(),
            directory: std::mem::take(&mut self.directory),
        };
        self.memory.release(self.counted);
        // The last holder of a partition may be a worker (the last reader of an evicted
        // topic): the files are deleted on the blocking pool when there is one. A task the
        // runtime drops unrun (at shutdown) deletes them as it is dropped.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn_blocking(move || drop(leftover));
        }
    }
}

/// Segment files taken out of a log's block table, deleted when this is dropped: after the
/// partition's lock is released, so no reader waits on the lock for a deletion.
#[must_use]
#[derive(Default)]
pub(crate) struct Removed(Vec<PathBuf>);

impl Removed {
    pub(crate) fn absorb(&mut self, mut other: Removed) {
        self.0.append(&mut other.0);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Drop for Removed {
    fn drop(&mut self) {
        for path in self.0.drain(..) {
            let _ = fs::remove_file(path);
        }
    }
}

/// What a dropped log leaves to delete: its segment files, then its lock file and directory.
/// The lock is released last (as the field drops), so no other cache takes the directory
/// before it is gone.
struct Leftover {
    removed: Removed,
    _lock: Option<File>,
    directory: PathBuf,
}

impl Drop for Leftover {
    fn drop(&mut self) {
        drop(std::mem::take(&mut self.removed));
        let _ = fs::remove_file(self.directory.join(".lock"));
        let _ = fs::remove_dir(&self.directory);
    }
}

/// The keyed hashes of keys and header values that blocks' filters hold (keyed per log).
#[derive(Clone)]
struct Hashes(RandomState);

impl Hashes {
    fn term(&self, tag: u8, name: &[u8], value: &[u8]) -> u64 {
        self.0.hash_one((tag, name, value))
    }

    fn key(&self, key: &[u8]) -> u64 {
        self.term(0, b"", key)
    }

    fn header(&self, name: &[u8], value: &[u8]) -> u64 {
        self.term(1, name, value)
    }

    fn of(&self, message: &Message) -> Vec<u64> {
        let mut terms: Vec<u64> = message
            .headers
            .iter()
            .filter_map(|header| {
                let value = header.value.as_ref()?;
                Some(self.header(&header.name, value))
            })
            .collect();
        if let Some(key) = &message.key {
            terms.push(self.key(key));
        }
        terms
    }
}

/// Writes a fetch's blocks to a partition's segment files without holding the partition's
/// lock (made by [`DiskLog::writer`], entered by [`DiskLog::commit`]). One at a time per
/// log: the cache writes a partition's fetches one after the other.
pub(crate) struct Writer {
    directory: PathBuf,
    segment_bytes: u64,
    hashes: Hashes,
    /// The offset the next block starts at.
    next: i64,
    /// The segment being written: its file and length.
    segment: Option<(Arc<File>, u64)>,
}

/// What a [`Writer`] wrote, for [`DiskLog::commit`].
pub(crate) struct Written {
    blocks: Vec<WrittenBlock>,
    /// Where the fetch reached: the log's next offset once committed.
    end: i64,
    /// The write that failed, if one did.
    failed: Option<FailedWrite>,
}

struct WrittenBlock {
    /// The segment file it went to.
    file: Arc<File>,
    /// The file's path, when the block started it.
    created: Option<PathBuf>,
    meta: BlockMeta,
    /// The newest record timestamp in it.
    newest: i64,
}

/// A block write that failed, with the segment file created for it if any.
type FailedWrite = (io::Error, Option<PathBuf>);

impl Writer {
    /// Writes the records of a fetch at or after where the log had reached, in blocks;
    /// `next` is where the fetch reached. Stops at the first failed write.
    pub(crate) fn write(mut self, messages: &[Message], next: i64) -> Written {
        let fresh: Vec<&Message> = messages
            .iter()
            .filter(|message| message.offset >= self.next)
            .collect();
        let end = fresh
            .last()
            .map_or(next, |last| next.max(last.offset + 1))
            .max(self.next);
        let mut written = Written {
            blocks: Vec::new(),
            end,
            failed: None,
        };
        let mut at = 0;
        while at < fresh.len() {
            // The header's place comes first, filled in once the records are in: the block is
            // written as it was built, without a copy.
            let mut block = BytesMut::zeroed(BLOCK_HEADER);
            let mut terms = [0u64; 4];
            let mut newest = i64::MIN;
            let first = self.next;
            let mut count = 0u32;
            let mut term_count = 0;
            while at < fresh.len()
                && (count == 0
                    || (block.len() - BLOCK_HEADER < BLOCK_BYTES && term_count < BLOCK_TERMS))
            {
                let message = fresh[at];
                encode(&mut block, message);
                let message_terms = self.hashes.of(message);
                term_count += message_terms.len();
                for term in message_terms {
                    set(&mut terms, term);
                }
                newest = newest.max(message.timestamp);
                count += 1;
                at += 1;
            }
            let block_next = if at == fresh.len() {
                next.max(fresh[at - 1].offset + 1)
            } else {
                fresh[at].offset
            };
            seal(&mut block, count);
            let meta = BlockMeta {
                first,
                next: block_next,
                position: 0,
                len: 0,
                terms,
            };
            match self.write_block(meta, &block) {
                Ok(block) => written.blocks.push(WrittenBlock { newest, ..block }),
                Err(failed) => {
                    written.failed = Some(failed);
                    break;
                }
            }
        }
        written
    }

    /// Writes `block` at the end of the segment being written, or starts a new one when it
    /// would grow past the segment size; `meta` gets the block's place.
    fn write_block(&mut self, meta: BlockMeta, block: &[u8]) -> Result<WrittenBlock, FailedWrite> {
        let len = block.len() as u64;
        let Ok(len32) = u32::try_from(len) else {
            return Err((io::Error::other("cache block over 4 GiB"), None));
        };
        let (file, position, created) = match &self.segment {
            Some((file, position)) if *position == 0 || position + len <= self.segment_bytes => {
                (file.clone(), *position, None)
            }
            _ => {
                let path = self.directory.join(format!("{:019}.log", meta.first));
                let file = OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(|error| (error, None))?;
                (Arc::new(file), 0, Some(path))
            }
        };
        if let Err(error) = file.write_all_at(block, position) {
            return Err((error, created));
        }
        self.segment = Some((file.clone(), position + len));
        self.next = meta.next;
        Ok(WrittenBlock {
            file,
            created,
            meta: BlockMeta {
                position,
                len: len32,
                ..meta
            },
            newest: i64::MIN,
        })
    }
}

fn bit(term: u64) -> [(usize, u64); 2] {
    [
        ((term & 0xff) as usize / 64, 1 << (term & 63)),
        (((term >> 8) & 0xff) as usize / 64, 1 << ((term >> 8) & 63)),
    ]
}

fn set(terms: &mut [u64; 4], term: u64) {
    for (word, mask) in bit(term) {
        terms[word] |= mask;
    }
}

fn has(terms: &[u64; 4], term: u64) -> bool {
    bit(term)
        .iter()
        .all(|(word, mask)| terms[*word] & mask != 0)
}

/// Fills in the header of `block` (its first [`BLOCK_HEADER`] bytes) for the `count` records
/// after it.
fn seal(block: &mut [u8], count: u32) {
    let (header, payload) = block.split_at_mut(BLOCK_HEADER);
    header[..4].copy_from_slice(MAGIC);
    header[4..8].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    header[8..12].copy_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    header[12..16].copy_from_slice(&count.to_be_bytes());
}

fn put_optional(buffer: &mut BytesMut, bytes: Option<&Bytes>) {
    match bytes {
        Some(bytes) => {
            buffer.put_i32(bytes.len() as i32);
            buffer.extend_from_slice(bytes);
        }
        None => buffer.put_i32(-1),
    }
}

fn encode(buffer: &mut BytesMut, message: &Message) {
    buffer.put_i64(message.offset);
    buffer.put_i64(message.timestamp);
    put_optional(buffer, message.key.as_ref());
    put_optional(buffer, message.value.as_ref());
    buffer.put_u32(message.headers.len() as u32);
    for header in &message.headers {
        put_optional(buffer, Some(&header.name));
        put_optional(buffer, header.value.as_ref());
    }
}

/// Reads the block `meta` of `file`. Blocking: the cache calls it on the blocking pool.
pub(crate) fn read_block(
    file: &File,
    meta: &BlockMeta,
    partition: i32,
) -> Result<Vec<Message>, BlockError> {
    let mut bytes = vec![0u8; meta.len as usize];
    file.read_exact_at(&mut bytes, meta.position)?;
    decode_block(Bytes::from(bytes), meta.first, meta.next, partition)
}

/// Set once `RWF_NOWAIT` reads are found unsupported (a kernel before 4.14, or a filesystem
/// without them): every block then goes to the blocking pool without trying again. For the
/// whole process, since the cache's directories are normally on one filesystem.
#[cfg(target_os = "linux")]
static NOWAIT_UNSUPPORTED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// The block `meta` of `file`, decoded, if all its bytes are in the OS page cache: read with
/// `preadv2(RWF_NOWAIT)`, which fails instead of waiting for the disk, so the worker can
/// call it. `None` when any byte would need the disk, or on any error (a block that does not
/// decode included): the caller then reads it on the blocking pool, which reports errors.
#[cfg(target_os = "linux")]
pub(crate) fn read_cached_block(
    file: &File,
    meta: &BlockMeta,
    partition: i32,
) -> Option<Vec<Message>> {
    use rustix::io::{Errno, IoSliceMut, ReadWriteFlags, preadv2};
    if NOWAIT_UNSUPPORTED.load(Ordering::Relaxed) {
        return None;
    }
    let mut bytes = vec![0u8; meta.len as usize];
    let read = preadv2(
        file,
        &mut [IoSliceMut::new(&mut bytes)],
        meta.position,
        ReadWriteFlags::NOWAIT,
    );
    match read {
        // A short read means part of the block was not cached (or the file is shorter).
        Ok(read) if read == bytes.len() => {
            decode_block(Bytes::from(bytes), meta.first, meta.next, partition).ok()
        }
        Err(Errno::OPNOTSUPP | Errno::NOSYS) => {
            NOWAIT_UNSUPPORTED.store(true, Ordering::Relaxed);
            None
        }
        _ => None,
    }
}

/// Whether [`read_cached_block`] is still tried (tests skip what needs it where it is not).
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn nowait_supported() -> bool {
    !NOWAIT_UNSUPPORTED.load(Ordering::Relaxed)
}

fn take_optional(buffer: &mut Bytes) -> Result<Option<Bytes>, BlockError> {
    if buffer.remaining() < 4 {
        return Err(BlockError::Corrupt("truncated length"));
    }
    let len = buffer.get_i32();
    if len == -1 {
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(|_| BlockError::Corrupt("negative length"))?;
    if buffer.remaining() < len {
        return Err(BlockError::Corrupt("length past the block"));
    }
    Ok(Some(buffer.split_to(len)))
}

/// Decodes a block covering `first..next`: every record checked, so corrupt bytes give an
/// error, never a panic or a record out of place. Records share the block's one allocation.
pub fn decode_block(
    mut bytes: Bytes,
    first: i64,
    next: i64,
    partition: i32,
) -> Result<Vec<Message>, BlockError> {
    if bytes.len() < BLOCK_HEADER || &bytes[..4] != MAGIC {
        return Err(BlockError::Corrupt("no block header"));
    }
    bytes.advance(4);
    let len = bytes.get_u32() as usize;
    let crc = bytes.get_u32();
    let count = bytes.get_u32() as usize;
    if bytes.remaining() != len {
        return Err(BlockError::Corrupt("length mismatch"));
    }
    if crc32c::crc32c(&bytes) != crc {
        return Err(BlockError::Corrupt("checksum mismatch"));
    }
    // Each record takes at least 28 bytes: a count past that is corrupt (and must not size
    // an allocation).
    if count > len / 28 + 1 {
        return Err(BlockError::Corrupt("record count past the block"));
    }
    let mut messages = Vec::with_capacity(count);
    let mut previous = first - 1;
    for _ in 0..count {
        if bytes.remaining() < 16 {
            return Err(BlockError::Corrupt("truncated record"));
        }
        let offset = bytes.get_i64();
        let timestamp = bytes.get_i64();
        if offset <= previous || offset >= next {
            return Err(BlockError::Corrupt("record offset out of place"));
        }
        previous = offset;
        let key = take_optional(&mut bytes)?;
        let value = take_optional(&mut bytes)?;
        if bytes.remaining() < 4 {
            return Err(BlockError::Corrupt("truncated headers"));
        }
        let headers = bytes.get_u32() as usize;
        if headers > bytes.remaining() / 8 {
            return Err(BlockError::Corrupt("header count past the block"));
        }
        let mut list = Vec::with_capacity(headers);
        for _ in 0..headers {
            let name = take_optional(&mut bytes)?.ok_or(BlockError::Corrupt("null header name"))?;
            let value = take_optional(&mut bytes)?;
            list.push(Header { name, value });
        }
        messages.push(Message {
            partition,
            offset,
            timestamp,
            key,
            value,
            headers: list,
        });
    }
    if bytes.has_remaining() {
        return Err(BlockError::Corrupt("bytes after the last record"));
    }
    Ok(messages)
}

/// A decoded block, shared by the readers reading it; its bytes are counted in the memory
/// budget while any of them holds it. Its records are copied out of the block's bytes, as
/// the memory log's are out of fetches, so a record kept by a reader keeps only its own
/// bytes alive.
pub(crate) struct DiskBlock {
    pub(crate) first: i64,
    pub(crate) next: i64,
    pub(crate) messages: Vec<Arc<Message>>,
    bytes: usize,
    budget: Arc<MemoryBudget>,
}

impl DiskBlock {
    pub(crate) fn new(meta: &BlockMeta, messages: Vec<Message>, budget: Arc<MemoryBudget>) -> Self {
        let messages: Vec<Arc<Message>> =
            messages.into_iter().map(|m| Arc::new(compact(m))).collect();
        let bytes = messages.iter().map(|m| size_of_message(m)).sum();
        budget.charge(bytes);
        Self {
            first: meta.first,
            next: meta.next,
            messages,
            bytes,
            budget,
        }
    }

    /// Whether `offset` is in the range the block covers.
    pub(crate) fn covers(&self, offset: i64) -> bool {
        (self.first..self.next).contains(&offset)
    }
}

impl Drop for DiskBlock {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn message(offset: i64, key: &str, value: Option<&str>, header: Option<&str>) -> Message {
        Message {
            partition: 3,
            offset,
            timestamp: 1_000 + offset,
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            headers: header
                .map(|h| {
                    vec![Header {
                        name: Bytes::from_static(b"h"),
                        value: Some(Bytes::copy_from_slice(h.as_bytes())),
                    }]
                })
                .unwrap_or_default(),
        }
    }

    fn tuning(directory: &Path, segment_bytes: u64, limit: u64) -> DiskTuning {
        DiskTuning {
            directory: directory.to_owned(),
            segment_bytes,
            budget: DiskBudget::new(limit),
        }
    }

    fn read_all(log: &DiskLog, from: i64, terms: Option<&[Vec<u64>]>) -> Vec<Message> {
        let mut offset = from;
        let mut out = Vec::new();
        loop {
            match log.locate(offset, terms, 1000) {
                Located::Missing => return out,
                Located::Skip(next) => offset = next,
                Located::Block(file, meta) => {
                    let records = read_block(&file, &meta, 3).unwrap();
                    out.extend(records.into_iter().filter(|m| m.offset >= offset));
                    offset = meta.next;
                }
            }
        }
    }

    #[test]
    fn records_come_back_from_disk_by_offset_and_filter() {
        let dir = tempfile::tempdir().unwrap();
        let tuning = tuning(dir.path(), 64 * 1024, u64::MAX);
        let memory = MemoryBudget::new(usize::MAX);
        let mut log = DiskLog::open(&tuning, memory.clone(), "orders", 3, 10)
            .unwrap()
            .unwrap();
        let value = "v".repeat(1000);
        let records: Vec<Message> = (10..410)
            .filter(|o| o % 7 != 0)
            .map(|o| {
                message(
                    o,
                    &format!("k{}", o % 50),
                    Some(&value),
                    Some(if o == 300 { "rare" } else { "common" }),
                )
            })
            .collect();
        for chunk in records.chunks(37) {
            let next = chunk.last().unwrap().offset + 1;
            log.append(chunk, next, 0).unwrap();
        }
        log.append(&[], 420, 0).unwrap();
        assert_eq!((log.start, log.next), (10, 420));
        assert!(log.segments.len() > 1, "segments roll");
        assert!(memory.held() > 0, "the block table is counted");
        assert_eq!(tuning.budget.used(), log.bytes());
        let all = read_all(&log, 10, None);
        assert_eq!(all, records);
        let from_middle = read_all(&log, 200, None);
        assert_eq!(from_middle[0].offset, 200);
        let filter = Filter {
            conditions: vec![Condition::Header {
                name: Bytes::from_static(b"h"),
                value: Bytes::from_static(b"rare"),
            }],
        };
        let terms = log.filter_terms(std::slice::from_ref(&filter));
        let found: Vec<i64> = read_all(&log, 10, terms.as_deref())
            .iter()
            .filter(|m| crate::kind::passes(std::slice::from_ref(&filter), m))
            .map(|m| m.offset)
            .collect();
        assert_eq!(found, [300]);
        let blocks: usize = log.segments.iter().map(|s| s.blocks.len()).sum();
        let mut returned = 0;
        let mut offset = 10;
        loop {
            match log.locate(offset, terms.as_deref(), 1000) {
                Located::Block(_, meta) => {
                    returned += 1;
                    offset = meta.next;
                }
                Located::Skip(next) => offset = next,
                Located::Missing => break,
            }
        }
        // One block holds the match; each other one passes the filter by chance about one
        // time in twenty (the hashes are keyed per process), so most are skipped.
        assert!(
            returned * 2 < blocks,
            "the filter skips most blocks ({returned} of {blocks})"
        );
        assert!(matches!(log.locate(5, None, 10), Located::Missing));
        assert!(matches!(log.locate(420, None, 10), Located::Missing));

        // The budget deletes the oldest segments.
        let freed = log.drop_oldest(false).0;
        assert!(freed > 0);
        assert!(log.start > 10);
        assert_eq!(read_all(&log, log.start, None).last(), records.last());
        let path = log.directory.clone();
        drop(log);
        assert_eq!(tuning.budget.used(), 0);
        assert_eq!(memory.held(), 0);
        assert!(!path.exists(), "a dropped log removes its files");
    }

    #[test]
    fn a_held_directory_is_not_shared_and_a_free_one_is_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let tuning = tuning(dir.path(), 1 << 20, u64::MAX);
        let memory = MemoryBudget::new(usize::MAX);
        let mut first = DiskLog::open(&tuning, memory.clone(), "t", 0, 0)
            .unwrap()
            .unwrap();
        first
            .append(&[message(0, "a", Some("1"), None)], 1, 0)
            .unwrap();
        assert!(
            DiskLog::open(&tuning, memory.clone(), "t", 0, 0)
                .unwrap()
                .is_none()
        );
        // A killed gateway leaves its files; the next one empties them.
        let stale = dir.path().join("t-1");
        fs::create_dir_all(&stale).unwrap();
        fs::write(stale.join("0000000000000000000.log"), b"junk").unwrap();
        let second = DiskLog::open(&tuning, memory.clone(), "t", 1, 0)
            .unwrap()
            .unwrap();
        assert_eq!(
            fs::read_dir(&stale).unwrap().count(),
            1,
            "only .lock is left"
        );
        drop(second);
        fs::create_dir_all(dir.path().join("gone-0")).unwrap();
        sweep(dir.path());
        assert!(!dir.path().join("gone-0").exists());
        assert!(dir.path().join("t-0").exists(), "a held directory stays");
        assert_eq!(path_component("../x"), "%2E.%2Fx");
        assert_eq!(path_component("a.b-c_1"), "a.b-c_1");
    }

    #[test]
    fn the_disk_budget_deletes_the_coldest_partitions_segments() {
        struct Member(Mutex<DiskLog>, bool);
        impl DiskEvictable for Member {
            fn temperature(&self) -> (bool, u64) {
                (self.1, 0)
            }
            fn drop_oldest_segment(&self, all: bool) -> u64 {
                self.0.lock().unwrap().drop_oldest(all).0
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let budget = DiskBudget::new(300 * 1024);
        let tuning = DiskTuning {
            directory: dir.path().to_owned(),
            segment_bytes: 64 * 1024,
            budget: budget.clone(),
        };
        let memory = MemoryBudget::new(usize::MAX);
        let value = "v".repeat(4000);
        let mut members = Vec::new();
        for (partition, read) in [(0, true), (1, false)] {
            let mut log = DiskLog::open(&tuning, memory.clone(), "t", partition, 0)
                .unwrap()
                .unwrap();
            let records: Vec<Message> = (0..50)
                .map(|o| message(o, "k", Some(&value), None))
                .collect();
            log.append(&records, 50, 0).unwrap();
            let member = Arc::new(Member(Mutex::new(log), read));
            budget.register(Arc::downgrade(&(member.clone() as Arc<dyn DiskEvictable>)));
            members.push(member);
        }
        assert!(budget.used() > 300 * 1024);
        budget.enforce();
        assert!(budget.used() <= 300 * 1024, "{budget:?}");
        let read = members[0].0.lock().unwrap();
        let unread = members[1].0.lock().unwrap();
        assert_eq!(
            read.start, 0,
            "the partition with readers keeps its segments"
        );
        assert!(unread.start > 0, "the unread one lost its oldest");
    }

    #[test]
    fn retention_bytes_drops_the_oldest_segments_but_never_the_one_being_written() {
        let dir = tempfile::tempdir().unwrap();
        let tuning = tuning(dir.path(), 64 * 1024, u64::MAX);
        let memory = MemoryBudget::new(usize::MAX);
        let mut log = DiskLog::open(&tuning, memory.clone(), "t", 0, 0)
            .unwrap()
            .unwrap();
        let value = "v".repeat(4000);
        let records: Vec<Message> = (0..100)
            .map(|o| message(o, "k", Some(&value), None))
            .collect();
        log.append(&records, 100, 0).unwrap();
        let segments = log.segments.len();
        assert!(segments > 4, "{segments} segments");
        let held = log.bytes();

        drop(log.retain_bytes(-1));
        assert_eq!(log.bytes(), held, "-1 is no limit");
        drop(log.retain_bytes(held as i64));
        assert_eq!(log.bytes(), held, "at the limit nothing goes");

        let limit = 150 * 1024;
        drop(log.retain_bytes(limit));
        assert!(log.bytes() <= limit as u64, "{} bytes left", log.bytes());
        assert!(log.segments.len() < segments);
        assert!(log.start > 0, "the oldest records are gone");
        assert_eq!(tuning.budget.used(), log.bytes());
        assert!(matches!(log.locate(0, None, 10), Located::Missing));
        assert!(matches!(
            log.locate(log.start - 1, None, 10),
            Located::Missing
        ));
        let kept = read_all(&log, log.start, None);
        assert_eq!(kept.first().map(|m| m.offset), Some(log.start));
        assert_eq!(kept.last(), records.last(), "the newest stay");

        // Smaller than the segment being written: that one stays whole.
        drop(log.retain_bytes(0));
        assert_eq!(log.segments.len(), 1);
        assert_eq!(read_all(&log, log.start, None).last(), records.last());
    }

    #[test]
    fn a_failed_write_leaves_the_disk_starting_after_the_fetch() {
        let dir = tempfile::tempdir().unwrap();
        // Every block rolls a new segment file, so a write needs the directory.
        let tuning = tuning(dir.path(), 1, u64::MAX);
        let mut log = DiskLog::open(&tuning, MemoryBudget::new(usize::MAX), "t", 0, 0)
            .unwrap()
            .unwrap();
        let value = "v".repeat(BLOCK_BYTES);
        let first: Vec<Message> = (0..3)
            .map(|o| message(o, "k", Some(&value), None))
            .collect();
        log.append(&first, 3, 0).unwrap();
        fs::remove_dir_all(dir.path().join("t-0")).unwrap();
        let second: Vec<Message> = (3..8)
            .map(|o| message(o, "k", Some(&value), None))
            .collect();
        assert!(log.append(&second, 10, 0).is_err());
        assert_eq!((log.start, log.next), (10, 10));
        for offset in 0..10 {
            assert!(
                matches!(log.locate(offset, None, 10), Located::Missing),
                "{offset}"
            );
        }
        assert_eq!(tuning.budget.used(), 0);
    }

    #[test]
    fn blocks_written_to_a_segment_dropped_meanwhile_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let tuning = tuning(dir.path(), 1 << 20, u64::MAX);
        let mut log = DiskLog::open(&tuning, MemoryBudget::new(usize::MAX), "t", 0, 0)
            .unwrap()
            .unwrap();
        log.append(&[message(0, "a", Some("1"), None)], 1, 0)
            .unwrap();
        let writer = log.writer(0);
        // The disk budget drops the segment being written while a fetch is written to it.
        let (freed, removed) = log.drop_oldest(true);
        assert!(freed > 0);
        drop(removed);
        let written = writer.write(
            &[
                message(1, "b", Some("2"), None),
                message(2, "c", Some("3"), None),
            ],
            3,
        );
        let (result, removed) = log.commit(written);
        result.unwrap();
        drop(removed);
        assert_eq!((log.start, log.next), (3, 3));
        assert!(matches!(log.locate(1, None, 10), Located::Missing));
        assert_eq!(tuning.budget.used(), 0);
        log.append(&[message(3, "d", Some("4"), None)], 4, 0)
            .unwrap();
        let offsets: Vec<i64> = read_all(&log, log.start, None)
            .iter()
            .map(|m| m.offset)
            .collect();
        assert_eq!(offsets, [3]);
        assert_eq!(tuning.budget.used(), log.bytes());
    }

    #[test]
    fn names_map_to_one_directory_each() {
        assert_ne!(
            format!("{}.{}", name_component("a.b"), name_component("c")),
            format!("{}.{}", name_component("a"), name_component("b.c"))
        );
    }

    #[test]
    fn corrupt_blocks_are_errors() {
        let mut block = BytesMut::zeroed(BLOCK_HEADER);
        encode(&mut block, &message(5, "k", Some("v"), Some("x")));
        seal(&mut block, 1);
        let good = block.freeze();
        assert_eq!(decode_block(good.clone(), 5, 6, 0).unwrap().len(), 1);
        assert!(
            decode_block(good.clone(), 6, 7, 0).is_err(),
            "offset out of place"
        );
        let mut flipped = good.to_vec();
        flipped[BLOCK_HEADER + 3] ^= 1;
        assert!(matches!(
            decode_block(Bytes::from(flipped), 5, 6, 0),
            Err(BlockError::Corrupt("checksum mismatch"))
        ));
        assert!(decode_block(good.slice(..good.len() - 1), 5, 6, 0).is_err());
    }

    proptest! {
        #[test]
        fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), crc_ok: bool) {
            let mut bytes = bytes;
            if crc_ok && bytes.len() >= BLOCK_HEADER {
                // Make the header consistent so the decoder reaches the records.
                bytes[..4].copy_from_slice(MAGIC);
                let len = (bytes.len() - BLOCK_HEADER) as u32;
                bytes[4..8].copy_from_slice(&len.to_be_bytes());
                let crc = crc32c::crc32c(&bytes[BLOCK_HEADER..]);
                bytes[8..12].copy_from_slice(&crc.to_be_bytes());
            }
            let _ = decode_block(Bytes::from(bytes), 0, i64::MAX, 0);
        }

        #[test]
        fn blocks_round_trip(records in proptest::collection::vec(
            (proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
             proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
             proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..8), proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8))), 0..3),
             1i64..5), 1..60)) {
            let dir = tempfile::tempdir().unwrap();
            let tuning = tuning(dir.path(), 4096, u64::MAX);
            let mut log = DiskLog::open(&tuning, MemoryBudget::new(usize::MAX), "p", 0, 0).unwrap().unwrap();
            let mut offset = 0;
            let messages: Vec<Message> = records.into_iter().map(|(key, value, headers, step)| {
                offset += step;
                Message {
                    partition: 3,
                    offset,
                    timestamp: offset,
                    key: key.map(Bytes::from),
                    value: value.map(Bytes::from),
                    headers: headers.into_iter().map(|(name, value)| Header { name: Bytes::from(name), value: value.map(Bytes::from) }).collect(),
                }
            }).collect();
            for chunk in messages.chunks(7) {
                log.append(chunk, chunk.last().unwrap().offset + 1, 0).unwrap();
            }
            prop_assert_eq!(read_all(&log, 0, None), messages);
        }
    }
}
