//! The record index of a cached partition: a hash of each header (name and value) and, on
//! topics without a key index, of each key, mapped to the offsets of the records held that
//! carry it. A filtered reader asks the index for the records that can match instead of
//! reading every record; its cost follows the records that match, not the partition's size.
//!
//! Each filter (filters are ORed) is looked up through one of its conditions (conditions are
//! ANDed): an exact key or header value, the one with the fewest records. A filter with no
//! such condition (only `not`, or header sequences) makes the read a scan again. The hashes
//! are keyed per process (`RandomState`), so producers cannot make values collide on purpose;
//! an accidental collision only makes a record a candidate, which the reader's filter then
//! rejects.
//!
//! The index holds an entry per indexed value of every record the log holds, and drops a
//! record's entries when the record leaves the front of the log; its bytes (the map, the
//! offset lists and each record's list of hashes) are counted with the log's.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::mem::size_of;

use crate::kind::{Condition, Filter, Message};

/// What the allocator adds to each allocation, counted with it.
const ALLOCATION_OVERHEAD: usize = 16;

/// Hashes of keys and header values → offsets of the records that carry them, oldest first.
#[derive(Default)]
pub(crate) struct RecordIndex {
    offsets: HashMap<u64, VecDeque<i64>>,
    hasher: RandomState,
    /// Bytes of the offset lists and of the records' hash lists (not of the map itself).
    heap_bytes: usize,
}

/// The hashes one record is indexed under, once each. Most records carry one indexed value
/// or none: one is kept inline rather than in an allocation of its own (every record the log
/// holds keeps its terms, to drop its entries when it leaves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Terms {
    One(u64),
    /// None (an empty list allocates nothing), or more than one.
    Many(Box<[u64]>),
}

impl Default for Terms {
    fn default() -> Self {
        Terms::Many(Box::default())
    }
}

impl std::ops::Deref for Terms {
    type Target = [u64];

    fn deref(&self) -> &[u64] {
        match self {
            Terms::One(term) => std::slice::from_ref(term),
            Terms::Many(terms) => terms,
        }
    }
}

impl Terms {
    /// The terms of `hashes`, sorted and once each.
    fn of(hashes: impl IntoIterator<Item = u64>) -> Self {
        let mut hashes = hashes.into_iter();
        let Some(first) = hashes.next() else {
            return Terms::default();
        };
        let mut more: Vec<u64> = hashes.filter(|&hash| hash != first).collect();
        if more.is_empty() {
            return Terms::One(first);
        }
        more.push(first);
        more.sort_unstable();
        more.dedup();
        Terms::Many(more.into_boxed_slice())
    }

    /// The bytes of the allocation holding them, if any.
    fn heap_bytes(&self) -> usize {
        match self {
            Terms::Many(terms) if !terms.is_empty() => {
                std::mem::size_of_val(&**terms) + ALLOCATION_OVERHEAD
            }
            _ => 0,
        }
    }
}

fn deque_bytes(deque: &VecDeque<i64>) -> usize {
    if deque.capacity() == 0 {
        0
    } else {
        deque.capacity() * size_of::<i64>() + ALLOCATION_OVERHEAD
    }
}

impl RecordIndex {
    fn key_hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one((0u8, key))
    }

    fn header_hash(&self, name: &[u8], value: &[u8]) -> u64 {
        self.hasher.hash_one((1u8, name, value))
    }

    /// The hashes `message` is indexed under (its key's only when `with_key`), once each.
    pub(crate) fn terms_of(&self, message: &Message, with_key: bool) -> Terms {
        let headers = message.headers.iter().filter_map(|header| {
            let value = header.value.as_ref()?;
            Some(self.header_hash(&header.name, value))
        });
        let key = message
            .key
            .as_ref()
            .filter(|_| with_key)
            .map(|key| self.key_hash(key));
        Terms::of(headers.chain(key))
    }

    /// Indexes the record at `offset` (newer than every record indexed) under `terms`.
    pub(crate) fn insert(&mut self, terms: &Terms, offset: i64) {
        self.heap_bytes += terms.heap_bytes();
        for term in terms.iter() {
            let deque = self.offsets.entry(*term).or_default();
            let before = deque_bytes(deque);
            deque.push_back(offset);
            self.heap_bytes = self.heap_bytes + deque_bytes(deque) - before;
        }
    }

    /// Drops the entries of the record at `offset` (the oldest indexed) under `terms`.
    pub(crate) fn remove_oldest(&mut self, terms: &Terms, offset: i64) {
        self.heap_bytes = self.heap_bytes.saturating_sub(terms.heap_bytes());
        for term in terms.iter() {
            let Some(deque) = self.offsets.get_mut(term) else {
                continue;
            };
            let before = deque_bytes(deque);
            while deque.front().is_some_and(|&front| front <= offset) {
                deque.pop_front();
            }
            if deque.is_empty() {
                self.offsets.remove(term);
                self.heap_bytes = self.heap_bytes.saturating_sub(before);
                continue;
            }
            // A list that shrank to a quarter gives its memory back.
            if deque.len() * 4 < deque.capacity() {
                deque.shrink_to(deque.len() * 2);
            }
            self.heap_bytes = (self.heap_bytes + deque_bytes(deque)).saturating_sub(before);
        }
        if self.offsets.len() * 4 < self.offsets.capacity() {
            self.offsets.shrink_to(self.offsets.len() * 2);
        }
    }

    /// Bytes the index holds.
    pub(crate) fn bytes(&self) -> usize {
        self.offsets.capacity() * (size_of::<(u64, VecDeque<i64>)>() + 1) + self.heap_bytes
    }

    /// Values indexed (distinct hashes).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.offsets.len()
    }

    /// The offsets list to look `condition` up by, when it can be looked up; `None` for a
    /// value no record held carries.
    fn lookup(&self, condition: &Condition, with_key: bool) -> Option<Option<&VecDeque<i64>>> {
        let term = match condition {
            Condition::Key(key) if with_key => self.key_hash(key),
            Condition::Header { name, value } => self.header_hash(name, value),
            _ => return None,
        };
        Some(self.offsets.get(&term))
    }

    /// The offsets at or after `from`, in order, of the records held that may pass `filters`,
    /// at most `limit` of them, and the offset up to which no other record held can pass
    /// (`None`: past every record held). `None` when some filter has no condition the index
    /// can look up (or there is no filter): the reader must read every record.
    pub(crate) fn candidates(
        &self,
        filters: &[Filter],
        with_key: bool,
        from: i64,
        limit: usize,
    ) -> Option<(Vec<i64>, Option<i64>)> {
        if filters.is_empty() || limit == 0 {
            return None;
        }
        let mut lists = Vec::with_capacity(filters.len());
        for filter in filters {
            let mut best: Option<Option<&VecDeque<i64>>> = None;
            for condition in &filter.conditions {
                if let Some(list) = self.lookup(condition, with_key) {
                    let length = |list: Option<&VecDeque<i64>>| list.map_or(0, VecDeque::len);
                    if best.is_none_or(|best| length(list) < length(best)) {
                        best = Some(list);
                    }
                }
            }
            // A filter no record can pass adds nothing; one that cannot be looked up makes
            // every record a candidate.
            if let Some(list) = best? {
                lists.push(list);
            }
        }
        let mut offsets = Vec::new();
        // Where a list was cut at `limit`: past it that list was not read.
        let mut bound: Option<i64> = None;
        for list in lists {
            let start = list.partition_point(|&offset| offset < from);
            let taken: Vec<i64> = list.range(start..).take(limit).copied().collect();
            if taken.len() == limit
                && let Some(&last) = taken.last()
            {
                bound = Some(bound.map_or(last, |bound| bound.min(last)));
            }
            offsets.extend(taken);
        }
        offsets.sort_unstable();
        offsets.dedup();
        if let Some(bound) = bound {
            offsets.retain(|&offset| offset <= bound);
        }
        offsets.truncate(limit);
        let scanned = if offsets.len() == limit || bound.is_some() {
            offsets.last().map(|last| last + 1)
        } else {
            None
        };
        Some((offsets, scanned))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    #[test]
    fn terms_are_sorted_once_each_and_one_is_inline() {
        assert!(Terms::of([]).is_empty());
        assert_eq!(Terms::of([]).heap_bytes(), 0);
        assert_eq!(Terms::of([7]), Terms::One(7));
        assert_eq!(Terms::of([7, 7, 7]), Terms::One(7));
        assert_eq!(Terms::of([7]).heap_bytes(), 0);
        let many = Terms::of([9, 3, 9, 5, 3]);
        assert_eq!(&*many, &[3, 5, 9]);
        assert_eq!(many.heap_bytes(), 3 * 8 + ALLOCATION_OVERHEAD);
    }

    fn header(name: u8, value: u8) -> Condition {
        Condition::Header {
            name: Bytes::from(vec![name]),
            value: Bytes::from(vec![value]),
        }
    }

    proptest! {
        /// Read `limit` candidates at a time, the index gives exactly the records carrying
        /// one of the filters' values, in order, whatever the limit.
        #[test]
        fn candidates_in_pieces_are_every_match(
            records in proptest::collection::vec(
                proptest::collection::vec((0u8..2, 0u8..3), 0..3),
                0..300,
            ),
            wanted in proptest::collection::vec((0u8..2, 0u8..3), 1..4),
            limit in 1usize..20,
        ) {
            let mut index = RecordIndex::default();
            let messages: Vec<Message> = records
                .iter()
                .enumerate()
                .map(|(offset, headers)| Message {
                    partition: 0,
                    offset: offset as i64,
                    timestamp: 0,
                    key: None,
                    value: None,
                    headers: headers
                        .iter()
                        .map(|&(n, v)| crate::kind::Header::new(vec![n], vec![v]))
                        .collect(),
                })
                .collect();
            for message in &messages {
                let terms = index.terms_of(message, true);
                index.insert(&terms, message.offset);
            }
            let filters: Vec<Filter> = wanted
                .iter()
                .map(|&(n, v)| Filter { conditions: vec![header(n, v)] })
                .collect();
            let expected: Vec<i64> = messages
                .iter()
                .filter(|message| filters.iter().any(|filter| filter.matches(message)))
                .map(|message| message.offset)
                .collect();
            let mut got: Vec<i64> = Vec::new();
            let mut from = 0;
            loop {
                let (offsets, scanned) = index
                    .candidates(&filters, true, from, limit)
                    .ok_or_else(|| TestCaseError::fail("header filters are indexed"))?;
                prop_assert!(offsets.len() <= limit);
                got.extend(&offsets);
                match scanned {
                    None => break,
                    Some(scanned) => {
                        prop_assert!(scanned > from, "a read makes progress");
                        prop_assert!(offsets.iter().all(|&offset| offset < scanned));
                        from = scanned;
                    }
                }
            }
            prop_assert_eq!(got, expected);
            for message in &messages {
                let terms = index.terms_of(message, true);
                index.remove_oldest(&terms, message.offset);
            }
            prop_assert_eq!(index.len(), 0);
            prop_assert_eq!(index.heap_bytes, 0, "every list's bytes are given back");
        }
    }
}
