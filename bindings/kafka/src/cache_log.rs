//! One cached partition's records in memory, and what they cost.
//!
//! Records are copied out of the fetch response into one allocation each (key, value and
//! headers together), so a cached record keeps only its own bytes alive, never the fetch
//! frame or the decompressed batch it came from; the copy is what makes the count in the
//! [`MemoryBudget`] the memory really held. Counting the frames instead would charge a
//! partition the whole frame (up to `fetch.max.bytes`) for as long as one of its records is
//! kept, which compaction and eviction make the common case.
//!
//! Records sit in offset order in slots; a record dropped from the middle (superseded on a
//! compacted topic) leaves its slot empty until the front reaches it, so no change is a scan.
//! On compacted topics a key index maps a hash of each key to the key's latest offset: it
//! answers item lookups and "is this record superseded" in O(1), and stays complete when
//! records are evicted. The hash is keyed per process (`RandomState`), so producers cannot
//! make two keys collide on purpose; an accidental 64-bit collision would hide the older key's
//! records from latest-per-key reads.
//!
//! A [`RecordIndex`] of header values (and of keys, on topics without the key index) lets
//! filtered readers read only the records that can match.
//!
//! A tombstone (a record with a null value) whose timestamp is more than the topic's
//! `delete.retention.ms` old is removed as Kafka's cleaner removes it ([`Log::expire_tombstones`]):
//! its record leaves memory, and its key leaves the key index, so an item lookup of the key
//! finds nothing, as for a key never written. What the key index kept for it becomes a marker
//! of the tombstone's offset (costing what the entry did), which keeps hiding the tombstone and
//! every older record of the key from latest-per-key reads wherever they come from (memory,
//! segment files or Kafka). A tombstone without a timestamp is kept.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::mem::size_of;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::cache_budget::MemoryBudget;
use crate::cache_index::{RecordIndex, Terms};
use crate::kind::{Filter, Header, Message};

/// Records read from the log per lock acquisition.
pub(crate) const READ_CHUNK: usize = 256;

/// What a record costs besides its payload: its `Arc<Message>`, the shared-bytes header of
/// its allocation, and the allocator's rounding of two allocations.
const RECORD_OVERHEAD: usize = size_of::<Message>() + 16 + 32 + 32;

/// What [`Log::read_from`] gives.
#[derive(Debug)]
pub(crate) enum Chunk {
    /// Records in offset order (none when nothing is held at or after the offset).
    Records(Vec<Arc<Message>>),
    /// A dropped record at this offset comes first.
    Hole(i64),
}

/// A tombstone known to the key index.
struct Tombstone {
    offset: i64,
    timestamp: i64,
    key: u64,
}

/// One offset of the log: a record, or a record dropped from the middle.
struct Slot {
    offset: i64,
    message: Option<Arc<Message>>,
    /// The hashes the record is indexed under: its entries leave the index with the slot
    /// (a record dropped from the middle stays a candidate, a hole to read from Kafka).
    terms: Terms,
}

/// The records of one partition that the cache holds, counted against a [`MemoryBudget`].
pub(crate) struct Log {
    budget: Arc<MemoryBudget>,
    slots: VecDeque<Slot>,
    /// Bytes counted for the records held.
    record_bytes: usize,
    /// Bytes counted for the slots and indexes (their capacity).
    structure_bytes: usize,
    /// Key hash → latest offset (compacted topics only).
    keys: HashMap<u64, i64>,
    /// Tombstones the key index still answers with, in offset order: what
    /// [`Log::expire_tombstones`] looks at.
    tombstones: VecDeque<Tombstone>,
    /// Key hash → offset of its tombstone, for keys whose tombstone was removed after
    /// `delete.retention.ms`: records of the key up to it are hidden from latest-per-key reads.
    removed: HashMap<u64, i64>,
    hasher: RandomState,
    /// Header values (and keys, without the key index) → records held.
    index: RecordIndex,
    /// Whether keys are in `index` (topics that are not compacted).
    keys_in_index: bool,
    /// Offsets of records held that a later record of the same key replaced, oldest first:
    /// what goes first over a budget.
    superseded: VecDeque<i64>,
    /// The first offset a reader can still get here (records before it were dropped or are
    /// not in Kafka any more).
    pub(crate) start: i64,
    /// The partition's first offset in Kafka, as last reported: where a historical read
    /// starts (served from Kafka for what the cache dropped).
    pub(crate) kafka_start: i64,
    /// The offset after the last appended batch: the key index is complete below it.
    pub(crate) next: i64,
}

impl Default for Log {
    fn default() -> Self {
        Self::new(MemoryBudget::new(usize::MAX), 0)
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.budget
            .release(self.record_bytes + self.structure_bytes);
    }
}

/// The bytes a record costs in the cache.
pub(crate) fn size_of_message(message: &Message) -> usize {
    message.payload_bytes() + RECORD_OVERHEAD + message.headers.len() * size_of::<Header>()
}

/// `message` with its key, value and headers copied into one allocation of their own.
pub(crate) fn compact(message: Message) -> Message {
    let mut buffer = BytesMut::with_capacity(message.payload_bytes());
    let mut put = |bytes: &Bytes| {
        let at = buffer.len();
        buffer.extend_from_slice(bytes);
        at..buffer.len()
    };
    let key = message.key.as_ref().map(&mut put);
    let value = message.value.as_ref().map(&mut put);
    let headers: Vec<_> = message
        .headers
        .iter()
        .map(|header| (put(&header.name), header.value.as_ref().map(&mut put)))
        .collect();
    let buffer = buffer.freeze();
    Message {
        key: key.map(|range| buffer.slice(range)),
        value: value.map(|range| buffer.slice(range)),
        headers: headers
            .into_iter()
            .map(|(name, value)| Header {
                name: buffer.slice(name),
                value: value.map(|range| buffer.slice(range)),
            })
            .collect(),
        ..message
    }
}

impl Log {
    /// An empty log whose first readable offset is `start`, counted against `budget`.
    pub(crate) fn new(budget: Arc<MemoryBudget>, start: i64) -> Self {
        Self {
            budget,
            slots: VecDeque::new(),
            record_bytes: 0,
            structure_bytes: 0,
            keys: HashMap::new(),
            tombstones: VecDeque::new(),
            removed: HashMap::new(),
            hasher: RandomState::new(),
            index: RecordIndex::default(),
            keys_in_index: false,
            superseded: VecDeque::new(),
            start,
            kafka_start: start,
            next: start,
        }
    }

    /// Bytes counted for this log.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.record_bytes + self.structure_bytes
    }

    /// Whether no record is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Bytes counted for the records held (what eviction can free).
    pub(crate) fn record_bytes(&self) -> usize {
        self.record_bytes
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The latest offset of `key` fetched so far (compacted topics).
    pub(crate) fn latest_of(&self, key: &[u8]) -> Option<i64> {
        self.keys.get(&self.hash(key)).copied()
    }

    /// The offset of the later record of the same key that replaced `message`, if one did,
    /// or of the tombstone of its key removed after `delete.retention.ms` when `message` is
    /// that tombstone or older (compacted topics): a latest-per-key read steps over it.
    pub(crate) fn replaced_at(&self, message: &Message) -> Option<i64> {
        let hash = self.hash(message.key.as_ref()?);
        match self.keys.get(&hash) {
            Some(&latest) => (latest > message.offset).then_some(latest),
            None => self
                .removed
                .get(&hash)
                .copied()
                .filter(|&tombstone| tombstone >= message.offset),
        }
    }

    fn recount_structure(&mut self) {
        let bytes = self.slots.capacity() * size_of::<Slot>()
            + (self.keys.capacity() + self.removed.capacity()) * (size_of::<(u64, i64)>() + 1)
            + self.tombstones.capacity() * size_of::<Tombstone>()
            + self.superseded.capacity() * size_of::<i64>()
            + self.index.bytes();
        if bytes > self.structure_bytes {
            self.budget.charge(bytes - self.structure_bytes);
        } else {
            self.budget.release(self.structure_bytes - bytes);
        }
        self.structure_bytes = bytes;
    }

    /// Appends fetched records (copied out of their fetch), indexing keys when `compacted`;
    /// `next` is the offset the fetch reached.
    pub(crate) fn append(&mut self, messages: Vec<Message>, next: i64, compacted: bool) {
        let mut added = 0;
        self.keys_in_index = !compacted;
        for message in messages {
            if self
                .slots
                .back()
                .is_some_and(|last| last.offset >= message.offset)
                || message.offset < self.next
            {
                continue; // already have it (a refetch after reconnect)
            }
            if compacted && let Some(key) = &message.key {
                let hash = self.hash(key);
                if let Some(previous) = self.keys.insert(hash, message.offset)
                    && previous >= self.start
                {
                    self.superseded.push_back(previous);
                }
                // The new record hides every older one of the key by itself.
                self.removed.remove(&hash);
                if message.value.is_none() {
                    self.tombstones.push_back(Tombstone {
                        offset: message.offset,
                        timestamp: message.timestamp,
                        key: hash,
                    });
                }
            }
            let message = compact(message);
            added += size_of_message(&message);
            self.next = self.next.max(message.offset + 1);
            let terms = self.index.terms_of(&message, self.keys_in_index);
            self.index.insert(&terms, message.offset);
            self.slots.push_back(Slot {
                offset: message.offset,
                message: Some(Arc::new(message)),
                terms,
            });
        }
        self.next = self.next.max(next);
        self.record_bytes += added;
        self.budget.charge(added);
        self.recount_structure();
    }

    /// Drops records oldest first (superseded ones before any other) until `want` bytes are
    /// freed or the records held are down to `keep` bytes. Returns the bytes freed.
    pub(crate) fn evict(&mut self, want: usize, keep: usize) -> usize {
        let mut freed = 0;
        while freed < want && self.record_bytes > keep {
            let Some(offset) = self.superseded.pop_front() else {
                break;
            };
            freed += self.clear(offset);
        }
        while freed < want && self.record_bytes > keep {
            let Some(size) = self.pop_front() else {
                break;
            };
            freed += size;
        }
        self.drop_empty_front();
        self.budget.release(freed);
        self.recount_structure();
        freed
    }

    /// Empties the slot of `offset`; returns the bytes it held (not yet released).
    fn clear(&mut self, offset: i64) -> usize {
        let index = self.slots.partition_point(|slot| slot.offset < offset);
        let Some(slot) = self.slots.get_mut(index).filter(|s| s.offset == offset) else {
            return 0;
        };
        let size = slot.message.take().map_or(0, |m| size_of_message(&m));
        self.record_bytes -= size;
        size
    }

    /// Drops the first slot and its index entries; returns the bytes of its record (not yet
    /// released), `None` when the log is empty.
    fn pop_front(&mut self) -> Option<usize> {
        let slot = self.slots.pop_front()?;
        self.start = self.start.max(slot.offset + 1);
        self.index.remove_oldest(&slot.terms, slot.offset);
        let size = slot.message.map_or(0, |message| size_of_message(&message));
        self.record_bytes -= size;
        Some(size)
    }

    fn drop_empty_front(&mut self) {
        while self
            .slots
            .front()
            .is_some_and(|slot| slot.message.is_none())
        {
            self.pop_front();
        }
    }

    /// Drops the oldest records timestamped before `now_ms - retention_ms`.
    pub(crate) fn expire(&mut self, retention_ms: i64, now_ms: i64) {
        if retention_ms < 0 {
            return;
        }
        let mut freed = 0;
        while let Some(front) = self.slots.front() {
            let expired = front
                .message
                .as_ref()
                .is_none_or(|m| m.timestamp > 0 && now_ms - m.timestamp > retention_ms);
            if !expired {
                break;
            }
            freed += self.pop_front().unwrap_or(0);
        }
        self.budget.release(freed);
        self.recount_structure();
    }

    /// Removes the tombstones timestamped before `now_ms - delete_retention_ms` that are still
    /// their key's latest record (compacted topics): the record leaves memory, the key the
    /// key index (see the module docs). Tombstones are looked at in offset order and the
    /// first one not yet old enough stops the pass, as [`Log::expire`] stops at the first
    /// record to keep; one without a timestamp is kept and looked at no more.
    pub(crate) fn expire_tombstones(&mut self, delete_retention_ms: i64, now_ms: i64) {
        if delete_retention_ms < 0 {
            return;
        }
        let mut freed = 0;
        while let Some(tombstone) = self.tombstones.front() {
            let latest = self.keys.get(&tombstone.key) == Some(&tombstone.offset);
            if latest && tombstone.timestamp > 0 {
                if now_ms - tombstone.timestamp <= delete_retention_ms {
                    break;
                }
                let (key, offset) = (tombstone.key, tombstone.offset);
                self.keys.remove(&key);
                self.removed.insert(key, offset);
                freed += self.clear(offset);
            }
            // A tombstone a later record replaced is an ordinary superseded record now.
            self.tombstones.pop_front();
        }
        self.drop_empty_front();
        self.budget.release(freed);
        self.recount_structure();
    }

    /// Up to [`READ_CHUNK`] records at or after `offset`. Unless `skip_holes`, the chunk ends
    /// before the first record dropped from the middle, and when that is the first thing at
    /// or after `offset`, its offset comes back instead (the reader must get it from Kafka).
    /// Only latest-per-key readers of compacted topics skip holes: what is dropped from the
    /// middle is always superseded.
    pub(crate) fn read_from(&self, offset: i64, skip_holes: bool) -> Chunk {
        let index = self.slots.partition_point(|slot| slot.offset < offset);
        let mut records = Vec::new();
        for slot in self.slots.range(index..) {
            match &slot.message {
                Some(message) => records.push(message.clone()),
                None if skip_holes => {}
                None if records.is_empty() => return Chunk::Hole(slot.offset),
                None => break,
            }
            if records.len() == READ_CHUNK {
                break;
            }
        }
        Chunk::Records(records)
    }

    /// Like [`Log::read_from`], for a reader with `filters`, through the record index: up to
    /// [`READ_CHUNK`] records that may pass them (the reader still applies the filters), and
    /// where the next read can start, past records that cannot pass. A dropped record only
    /// stops the chunk when it may have passed. `None` when the filters cannot be looked up
    /// in the index: the reader reads with [`Log::read_from`].
    pub(crate) fn read_matching(
        &self,
        offset: i64,
        filters: &[Filter],
        skip_holes: bool,
    ) -> Option<(Chunk, i64)> {
        let (candidates, scanned) =
            self.index
                .candidates(filters, self.keys_in_index, offset, READ_CHUNK)?;
        let mut scanned = scanned.unwrap_or(self.next).max(offset);
        let mut records = Vec::new();
        for candidate in candidates {
            let index = self.slots.partition_point(|slot| slot.offset < candidate);
            let Some(slot) = self.slots.get(index).filter(|s| s.offset == candidate) else {
                continue;
            };
            match &slot.message {
                Some(message) => records.push(message.clone()),
                None if skip_holes => {}
                None if records.is_empty() => return Some((Chunk::Hole(candidate), candidate)),
                None => {
                    scanned = candidate;
                    break;
                }
            }
        }
        Some((Chunk::Records(records), scanned))
    }

    /// Values in the record index.
    #[cfg(test)]
    pub(crate) fn indexed_values(&self) -> usize {
        self.index.len()
    }

    /// Every slot from `offset` on: its offset and its record, if still held.
    #[cfg(test)]
    fn slots_from(&self, offset: i64) -> Vec<(i64, Option<Arc<Message>>)> {
        self.slots
            .iter()
            .filter(|slot| slot.offset >= offset)
            .map(|slot| (slot.offset, slot.message.clone()))
            .collect()
    }

    /// The offsets of the records held, in order.
    #[cfg(test)]
    pub(crate) fn offsets(&self) -> Vec<i64> {
        self.slots
            .iter()
            .filter(|slot| slot.message.is_some())
            .map(|slot| slot.offset)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::{Condition, passes};
    use proptest::prelude::*;

    fn message(offset: i64, key: &str, value: Option<&str>) -> Message {
        Message {
            partition: 0,
            offset,
            timestamp: 0,
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            headers: vec![Header::new("h", "x")],
        }
    }

    #[test]
    fn compacted_log_knows_superseded_records_and_evicts_them_first() {
        let budget = MemoryBudget::new(usize::MAX);
        let mut log = Log::new(budget.clone(), 0);
        log.append(
            vec![
                message(0, "a", Some("1")),
                message(1, "b", Some("1")),
                message(2, "a", Some("2")),
                message(3, "c", None),
            ],
            4,
            true,
        );
        assert_eq!(budget.held(), log.bytes());
        let one = size_of_message(&message(0, "a", Some("1")));
        assert_eq!(log.replaced_at(&message(0, "a", Some("1"))), Some(2));
        assert_eq!(log.replaced_at(&message(2, "a", Some("2"))), None);
        assert_eq!(log.latest_of(b"a"), Some(2));
        assert_eq!(log.latest_of(b"z"), None);
        assert_eq!(log.evict(1, 0), one, "the superseded record goes first");
        assert_eq!(log.offsets(), [1, 2, 3]);
        assert_eq!(log.start, 1);
        assert!(matches!(log.read_from(0, false), Chunk::Records(r) if r.len() == 3));
        log.append(vec![message(4, "b", Some("2"))], 5, true);
        log.evict(1, 0);
        assert_eq!(log.offsets(), [2, 3, 4], "the superseded b@1 went");
        log.append(vec![message(5, "a", Some("3"))], 6, true);
        log.evict(1, 0);
        assert_eq!(log.offsets(), [3, 4, 5], "then a@2");
        log.append(vec![message(6, "c", Some("2"))], 7, true);
        log.evict(1, 0);
        assert_eq!(log.offsets(), [4, 5, 6], "then c@3");
        log.append(
            vec![message(7, "x", Some("1")), message(8, "b", Some("3"))],
            9,
            true,
        );
        log.evict(1, 0);
        assert_eq!(log.offsets(), [5, 6, 7, 8], "then b@4");
        log.append(vec![message(9, "x", Some("2"))], 10, true);
        log.evict(1, 0);
        assert_eq!(log.offsets(), [5, 6, 8, 9], "x@7 from the middle");
        let offsets = |chunk: Chunk| match chunk {
            Chunk::Records(records) => records.iter().map(|r| r.offset).collect(),
            Chunk::Hole(offset) => vec![-offset],
        };
        assert_eq!(offsets(log.read_from(5, false)), [5, 6], "up to the hole");
        assert_eq!(offsets(log.read_from(7, false)), [-7], "the hole first");
        assert_eq!(offsets(log.read_from(7, true)), [8, 9]);
        assert_eq!(offsets(log.read_from(5, true)), [5, 6, 8, 9]);
        log.append(vec![message(8, "x", Some("dup"))], 10, true);
        assert_eq!(
            log.offsets(),
            [5, 6, 8, 9],
            "refetched records are not duplicated"
        );
        log.evict(usize::MAX, 0);
        assert!(log.offsets().is_empty());
        assert_eq!(log.start, 10);
        assert_eq!(
            log.latest_of(b"a"),
            Some(5),
            "the key index outlives eviction"
        );
        drop(log);
        assert_eq!(budget.held(), 0, "a dropped log gives its bytes back");
    }

    fn at(message: Message, timestamp: i64) -> Message {
        Message {
            timestamp,
            ..message
        }
    }

    /// What a latest-per-key replay of the log from its start reads from memory: the records
    /// held that no later record of their key replaced.
    fn replay(log: &Log) -> Vec<i64> {
        let Chunk::Records(records) = log.read_from(log.start, true) else {
            panic!("latest-per-key reads skip holes");
        };
        records
            .iter()
            .filter(|record| log.replaced_at(record).is_none())
            .map(|record| record.offset)
            .collect()
    }

    #[test]
    fn tombstones_older_than_delete_retention_leave_the_log_and_the_key_index() {
        const DAY: i64 = 86_400_000;
        let now = 10 * DAY;
        let old = now - 2 * DAY;
        let young = now - DAY / 2;
        let budget = MemoryBudget::new(usize::MAX);
        let mut log = Log::new(budget.clone(), 0);
        log.append(
            vec![
                at(message(0, "a", Some("1")), old),
                at(message(1, "b", Some("1")), old),
                at(message(2, "a", None), old),
                at(message(3, "d", None), old),
                at(message(4, "d", Some("2")), old),
                at(message(5, "e", None), 0),
                at(message(6, "c", Some("1")), young),
                at(message(7, "c", None), young),
            ],
            8,
            true,
        );
        assert_eq!(
            replay(&log),
            [1, 2, 4, 5, 7],
            "every tombstone is young enough"
        );

        log.expire_tombstones(DAY, now);
        assert_eq!(log.latest_of(b"a"), None, "the key index forgot a");
        assert_eq!(log.replaced_at(&message(2, "a", None)), Some(2));
        assert_eq!(
            log.replaced_at(&message(0, "a", Some("1"))),
            Some(2),
            "what a's tombstone replaced stays hidden"
        );
        assert_eq!(log.latest_of(b"c"), Some(7), "a younger tombstone stays");
        assert_eq!(
            log.latest_of(b"d"),
            Some(4),
            "a replaced tombstone changes nothing"
        );
        assert_eq!(
            log.latest_of(b"e"),
            Some(5),
            "one without a timestamp stays"
        );
        assert!(!log.offsets().contains(&2), "a's tombstone left memory");
        assert_eq!(replay(&log), [1, 4, 5, 7]);
        assert_eq!(budget.held(), log.bytes());

        log.expire_tombstones(DAY, now + DAY);
        assert_eq!(log.latest_of(b"c"), None);
        assert_eq!(replay(&log), [1, 4, 5]);
        assert_eq!(log.latest_of(b"e"), Some(5));

        // A key written again is an ordinary key, whose new record hides the old ones.
        log.append(vec![at(message(8, "a", Some("3")), now)], 9, true);
        assert_eq!(log.latest_of(b"a"), Some(8));
        assert_eq!(log.replaced_at(&message(0, "a", Some("1"))), Some(8));
        assert_eq!(log.replaced_at(&message(8, "a", Some("3"))), None);
        assert_eq!(replay(&log), [1, 4, 5, 8]);

        // A negative delete.retention.ms keeps tombstones.
        log.append(vec![at(message(9, "b", None), old)], 10, true);
        log.expire_tombstones(-1, now);
        assert_eq!(log.latest_of(b"b"), Some(9));
        assert_eq!(budget.held(), log.bytes());
        drop(log);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn an_expired_tombstone_at_the_front_moves_the_start() {
        let mut log = Log::default();
        log.append(
            vec![
                at(message(0, "a", None), 1_000),
                at(message(1, "b", Some("1")), 1_000),
            ],
            2,
            true,
        );
        log.expire_tombstones(10, 2_000);
        assert_eq!(log.offsets(), [1]);
        assert_eq!(
            log.start, 1,
            "the offset is not held: a reader of it asks Kafka"
        );
        assert_eq!(log.latest_of(b"a"), None);
    }

    #[test]
    fn delete_policy_drops_oldest_and_keeps_what_it_is_told() {
        let mut log = Log::default();
        log.append(
            (0..10).map(|i| message(i, "k", Some("v"))).collect(),
            10,
            false,
        );
        let one = size_of_message(&message(0, "k", Some("v")));
        log.evict(usize::MAX, one * 3);
        assert_eq!(log.offsets(), [7, 8, 9]);
        assert_eq!(log.start, 7);
    }

    #[test]
    fn copies_keep_only_their_own_bytes() {
        let frame = Bytes::from(vec![7u8; 1 << 20]);
        let record = Message {
            partition: 0,
            offset: 0,
            timestamp: 0,
            key: Some(frame.slice(0..4)),
            value: Some(frame.slice(10..20)),
            headers: vec![Header {
                name: frame.slice(30..31),
                value: None,
            }],
        };
        let copy = compact(record.clone());
        assert_eq!(copy, record);
        drop(record);
        // The frame is the only owner left: the copy does not reference it.
        assert!(frame.is_unique());
    }

    /// What a filtered read of the log gives: a record that passes, or a dropped record that
    /// may have (to read from Kafka).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Read {
        Record(i64),
        Hole(i64),
    }

    fn bytes_of(name: &str, byte: u8) -> Bytes {
        Bytes::from(format!("{name}{byte}"))
    }

    fn record(offset: i64, key: Option<u8>, headers: &[(u8, Option<u8>)]) -> Message {
        Message {
            partition: 0,
            offset,
            timestamp: 0,
            key: key.map(|k| bytes_of("k", k)),
            value: Some(Bytes::from_static(b"v")),
            headers: headers
                .iter()
                .map(|&(name, value)| Header {
                    name: bytes_of("n", name),
                    value: value.map(|v| bytes_of("v", v)),
                })
                .collect(),
        }
    }

    /// Reads the log from `from` on through the record index, as a reader does (a hole is
    /// read from Kafka, then the reader goes on past it); `None` when the index cannot serve
    /// the filters.
    fn read_indexed(
        log: &Log,
        from: i64,
        filters: &[Filter],
        skip_holes: bool,
    ) -> Option<Vec<Read>> {
        let mut got = Vec::new();
        let mut cursor = from;
        for _ in 0..100_000 {
            match log.read_matching(cursor, filters, skip_holes)? {
                (Chunk::Hole(offset), _) => {
                    assert!(offset >= cursor);
                    got.push(Read::Hole(offset));
                    cursor = offset + 1;
                }
                (Chunk::Records(records), scanned) => {
                    assert!(scanned >= cursor, "the read never goes back");
                    if records.is_empty() {
                        if scanned <= cursor || scanned >= log.next {
                            return Some(got);
                        }
                        cursor = scanned;
                        continue;
                    }
                    for record in records {
                        assert!(record.offset >= cursor, "records come in order");
                        if passes(filters, &record) {
                            got.push(Read::Record(record.offset));
                        }
                        cursor = record.offset + 1;
                    }
                }
            }
        }
        panic!("the read does not end");
    }

    fn condition_strategy() -> impl Strategy<Value = Condition> {
        prop_oneof![
            (0u8..4).prop_map(|k| Condition::Key(bytes_of("k", k))),
            (0u8..3, 0u8..3).prop_map(|(n, v)| Condition::Header {
                name: bytes_of("n", n),
                value: bytes_of("v", v),
            }),
            (0u8..3, 0u8..3).prop_map(|(n, v)| Condition::Not(Box::new(Condition::Header {
                name: bytes_of("n", n),
                value: bytes_of("v", v),
            }))),
        ]
    }

    /// A batch: records (offset step, key, headers), then an eviction (bytes wanted, bytes
    /// kept) or none.
    type Batch = (
        Vec<(i64, Option<u8>, Vec<(u8, Option<u8>)>)>,
        Option<(usize, usize)>,
    );

    fn batch_strategy() -> impl Strategy<Value = Batch> {
        (
            proptest::collection::vec(
                (
                    1i64..3,
                    proptest::option::of(0u8..4),
                    proptest::collection::vec((0u8..3, proptest::option::of(0u8..3)), 0..4),
                ),
                0..120,
            ),
            proptest::option::of((0usize..20_000, 0usize..40_000)),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Filtered reads through the index give what a scan of every record held gives,
        /// after any appends and evictions, and the index's bytes are counted.
        #[test]
        fn indexed_reads_equal_a_scan(
            compacted in any::<bool>(),
            batches in proptest::collection::vec(batch_strategy(), 1..8),
            filters in proptest::collection::vec(
                proptest::collection::vec(condition_strategy(), 1..4)
                    .prop_map(|conditions| Filter { conditions }),
                1..4,
            ),
            from_fraction in 0.0f64..1.1,
            skip_holes in any::<bool>(),
        ) {
            let budget = MemoryBudget::new(usize::MAX);
            let mut log = Log::new(budget.clone(), 0);
            let mut originals: HashMap<i64, Message> = HashMap::new();
            let mut next = 0;
            for (records, eviction) in batches {
                let mut messages = Vec::new();
                for (step, key, headers) in records {
                    next += step;
                    let message = record(next, key, &headers);
                    originals.insert(next, message.clone());
                    messages.push(message);
                }
                log.append(messages, next + 1, compacted);
                if let Some((want, keep)) = eviction {
                    log.evict(want, keep);
                }
                prop_assert_eq!(budget.held(), log.bytes());
            }
            let from = (next as f64 * from_fraction) as i64;
            let indexable = filters.iter().all(|filter| {
                filter.conditions.iter().any(|condition| match condition {
                    Condition::Header { .. } => true,
                    Condition::Key(_) => !compacted,
                    _ => false,
                })
            });
            let got = read_indexed(&log, from, &filters, skip_holes);
            prop_assert_eq!(got.is_some(), indexable);
            let Some(got) = got else {
                return Ok(());
            };
            let mut holes = Vec::new();
            let mut scanned = Vec::new();
            for (offset, message) in log.slots_from(from) {
                match message {
                    Some(message) if passes(&filters, &message) => {
                        scanned.push(Read::Record(offset));
                    }
                    Some(_) => {}
                    None => holes.push(offset),
                }
            }
            let records: Vec<Read> = got
                .iter()
                .copied()
                .filter(|read| matches!(read, Read::Record(_)))
                .collect();
            prop_assert_eq!(&records, &scanned);
            let mut sorted = got.clone();
            sorted.sort_by_key(|read| match read {
                Read::Record(offset) | Read::Hole(offset) => *offset,
            });
            prop_assert_eq!(&sorted, &got, "in offset order");
            let got_holes: Vec<i64> = got
                .iter()
                .filter_map(|read| match read {
                    Read::Hole(offset) => Some(*offset),
                    Read::Record(_) => None,
                })
                .collect();
            if skip_holes {
                prop_assert!(got_holes.is_empty());
            } else {
                // Every hole given is a dropped record, and every dropped record that would
                // have passed is given.
                for offset in &got_holes {
                    prop_assert!(holes.contains(offset));
                }
                for offset in holes {
                    if passes(&filters, &originals[&offset]) {
                        prop_assert!(got_holes.contains(&offset), "hole {} missed", offset);
                    }
                }
            }
            log.evict(usize::MAX, 0);
            prop_assert_eq!(log.indexed_values(), 0, "evicted records leave the index");
            prop_assert_eq!(budget.held(), log.bytes());
            drop(log);
            prop_assert_eq!(budget.held(), 0);
        }
    }

    #[test]
    fn a_header_filter_reads_only_matching_records() {
        let mut log = Log::default();
        let records = (0..10_000)
            .map(|i| {
                record(
                    i,
                    Some((i % 4) as u8),
                    &[(0, Some(u8::from(i % 1000 == 0)))],
                )
            })
            .collect();
        log.append(records, 10_000, false);
        let filters = [Filter {
            conditions: vec![Condition::Header {
                name: bytes_of("n", 0),
                value: bytes_of("v", 1),
            }],
        }];
        let Some((Chunk::Records(chunk), scanned)) = log.read_matching(0, &filters, false) else {
            panic!("the header filter is served by the index");
        };
        let offsets: Vec<i64> = chunk.iter().map(|record| record.offset).collect();
        assert_eq!(offsets, (0..10).map(|i| i * 1000).collect::<Vec<_>>());
        assert_eq!(scanned, 10_000, "nothing else can match");
        let unindexed = [Filter {
            conditions: vec![Condition::Not(Box::new(Condition::Key(bytes_of("k", 0))))],
        }];
        assert!(log.read_matching(0, &unindexed, false).is_none());
    }

    #[test]
    fn the_index_is_counted() {
        let plain = {
            let mut log = Log::default();
            log.append(vec![record(0, None, &[])], 1, false);
            log.bytes()
        };
        let mut log = Log::default();
        let headers: Vec<(u8, Option<u8>)> = (0..3).map(|n| (n, Some(n))).collect();
        log.append(vec![record(0, Some(1), &headers)], 1, false);
        assert_eq!(log.indexed_values(), 4, "three headers and the key");
        assert!(
            log.bytes() >= plain + 4 * (size_of::<(u64, VecDeque<i64>)>() + size_of::<i64>()),
            "{} against {plain}",
            log.bytes()
        );
    }
}
