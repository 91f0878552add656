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

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::mem::size_of;

use crate::kind::{Condition, Filter, Message};

/// What the allocator adds to each allocation, counted with it.
const ALLOCATION_OVERHEAD: usize = 16;

/// Hashes of keys and header values → offsets of the records that carry them, oldest first.
#[derive(Default)]
pub(crate) struct RecordIndex {
    offsets: HashMap<u64, Postings>,
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

/// The offsets of the records held that carry one value, oldest first. Many values are
/// carried by one record only (identifiers, timestamps): that offset is kept in the map's
/// entry rather than in a list of its own, an allocation less per such record.
#[derive(Debug)]
enum Postings {
    One(i64),
    Many(VecDeque<i64>),
}

impl Postings {
    fn len(&self) -> usize {
        match self {
            Postings::One(_) => 1,
            Postings::Many(offsets) => offsets.len(),
        }
    }

    /// Adds `offset`, newer than every offset held.
    fn push(&mut self, offset: i64) {
        match self {
            Postings::One(first) => {
                *self = Postings::Many(VecDeque::from([*first, offset]));
            }
            Postings::Many(offsets) => offsets.push_back(offset),
        }
    }

    /// Drops the offsets up to `offset`; whether any is left.
    fn drop_to(&mut self, offset: i64) -> bool {
        match self {
            Postings::One(first) => *first > offset,
            Postings::Many(offsets) => {
                while offsets.front().is_some_and(|&front| front <= offset) {
                    offsets.pop_front();
                }
                match offsets.len() {
                    0 => false,
                    1 => {
                        let last = offsets[0];
                        *self = Postings::One(last);
                        true
                    }
                    length => {
                        // A list that shrank to a quarter gives its memory back.
                        if length * 4 < offsets.capacity() {
                            offsets.shrink_to(length * 2);
                        }
                        true
                    }
                }
            }
        }
    }

    /// The offsets at or after `from`, in order.
    fn from(&self, from: i64) -> impl Iterator<Item = i64> + '_ {
        let (one, many) = match self {
            Postings::One(offset) => ((*offset >= from).then_some(*offset), None),
            Postings::Many(offsets) => {
                let start = offsets.partition_point(|&offset| offset < from);
                (None, Some(offsets.range(start..).copied()))
            }
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    /// Bytes of the list's allocation, if it has one.
    fn heap_bytes(&self) -> usize {
        match self {
            Postings::Many(offsets) if offsets.capacity() > 0 => {
                offsets.capacity() * size_of::<i64>() + ALLOCATION_OVERHEAD
            }
            _ => 0,
        }
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
            match self.offsets.entry(*term) {
                Entry::Vacant(vacant) => {
                    vacant.insert(Postings::One(offset));
                }
                Entry::Occupied(mut occupied) => {
                    let postings = occupied.get_mut();
                    let before = postings.heap_bytes();
                    postings.push(offset);
                    self.heap_bytes = self.heap_bytes + postings.heap_bytes() - before;
                }
            }
        }
    }

    /// Drops the entries of the record at `offset` (the oldest indexed) under `terms`.
    pub(crate) fn remove_oldest(&mut self, terms: &Terms, offset: i64) {
        self.heap_bytes = self.heap_bytes.saturating_sub(terms.heap_bytes());
        for term in terms.iter() {
            let Some(postings) = self.offsets.get_mut(term) else {
                continue;
            };
            let before = postings.heap_bytes();
            if !postings.drop_to(offset) {
                self.offsets.remove(term);
                self.heap_bytes = self.heap_bytes.saturating_sub(before);
                continue;
            }
            self.heap_bytes = (self.heap_bytes + postings.heap_bytes()).saturating_sub(before);
        }
        if self.offsets.len() * 4 < self.offsets.capacity() {
            self.offsets.shrink_to(self.offsets.len() * 2);
        }
    }

    /// Bytes the index holds.
    pub(crate) fn bytes(&self) -> usize {
        self.offsets.capacity() * (size_of::<(u64, Postings)>() + 1) + self.heap_bytes
    }

    /// Values indexed (distinct hashes).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.offsets.len()
    }

    /// The offsets list to look `condition` up by, when it can be looked up; `None` for a
    /// value no record held carries.
    fn lookup(&self, condition: &Condition, with_key: bool) -> Option<Option<&Postings>> {
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
            let mut best: Option<Option<&Postings>> = None;
            for condition in &filter.conditions {
                if let Some(list) = self.lookup(condition, with_key) {
                    let length = |list: Option<&Postings>| list.map_or(0, Postings::len);
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
            let taken: Vec<i64> = list.from(from).take(limit).collect();
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
    fn a_value_of_one_record_keeps_its_offset_in_the_entry() {
        // No larger than the list it replaces: the inline offset costs the entry nothing.
        assert_eq!(size_of::<Postings>(), size_of::<VecDeque<i64>>());
        let mut index = RecordIndex::default();
        for offset in 0..3 {
            index.insert(&Terms::One(offset as u64), offset);
        }
        assert_eq!(
            index.heap_bytes, 0,
            "three values of one record each: no list"
        );
        index.insert(&Terms::One(1), 3);
        assert!(index.heap_bytes > 0, "a value of two records has a list");
        index.remove_oldest(&Terms::One(0), 0);
        index.remove_oldest(&Terms::One(1), 1);
        assert_eq!(index.heap_bytes, 0, "back to one record, back in the entry");
        let of = |term: u64| {
            index
                .offsets
                .get(&term)
                .map(|p| p.from(0).collect::<Vec<_>>())
        };
        assert_eq!(of(1), Some(vec![3]));
        assert_eq!(of(2), Some(vec![2]));
        assert_eq!(of(0), None);
    }

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
