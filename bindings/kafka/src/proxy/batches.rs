//! Counting the records of a record set without decoding them, for the `kafka.*.records`
//! metrics.
//!
//! A record set is a run of entries that all start `offset: int64, length: int32`, then
//! `length` bytes. In a RecordBatch (magic 2) the byte at 16 is the magic and the int32 at
//! 57 the number of records in the batch. A legacy message set (magic 0 or 1) has its magic
//! at the same byte 16 (after the message's crc), and each of its entries is one message.
//! A compressed legacy message is a wrapper holding its messages compressed; it counts as one,
//! since telling its messages apart means decompressing it.

/// Where a batch's length is: after the int64 base offset.
const LENGTH_AT: usize = 8;
/// The bytes before a batch's (or a legacy message's) `length` bytes.
const ENTRY_HEADER: usize = 12;
/// Where the magic byte is, in a batch and in a legacy message alike.
const MAGIC_AT: usize = 16;
/// Where a RecordBatch's records count is.
const RECORDS_AT: usize = 57;
/// The magic of a RecordBatch.
const BATCH_MAGIC: i8 = 2;

/// The records in a record set and its bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RecordSetCount {
    /// Records in the whole batches (or legacy messages) of the set.
    pub records: u64,
    /// Every byte of the set, a truncated last batch included.
    pub bytes: u64,
}

impl std::ops::AddAssign for RecordSetCount {
    fn add_assign(&mut self, other: Self) {
        self.records = self.records.saturating_add(other.records);
        self.bytes = self.bytes.saturating_add(other.bytes);
    }
}

/// Counts the records of `set` batch by batch. A batch running past the end of `set` (a
/// Fetch response may end with part of a batch, cut at the fetch size) counts for bytes only;
/// so does whatever follows an entry with a negative length or a RecordBatch too short to hold
/// its records count, since nothing after it can be trusted to be where it claims.
pub(crate) fn count(set: &[u8]) -> RecordSetCount {
    let mut records = 0u64;
    let mut rest = set;
    while let Some(length) = rest.get(LENGTH_AT..ENTRY_HEADER).and_then(read_i32) {
        let Some(end) = usize::try_from(length)
            .ok()
            .and_then(|length| length.checked_add(ENTRY_HEADER))
        else {
            break;
        };
        let Some(entry) = rest.get(..end) else {
            break;
        };
        let Some(&magic) = entry.get(MAGIC_AT) else {
            break;
        };
        if magic as i8 == BATCH_MAGIC {
            match entry.get(RECORDS_AT..RECORDS_AT + 4).and_then(read_i32) {
                Some(count) => records = records.saturating_add(count.max(0) as u64),
                None => break,
            }
        } else {
            records = records.saturating_add(1);
        }
        rest = &rest[end..];
    }
    RecordSetCount {
        records,
        bytes: set.len() as u64,
    }
}

fn read_i32(bytes: &[u8]) -> Option<i32> {
    Some(i32::from_be_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A RecordBatch of `records` records (their bytes are filler: only the header is read).
    fn batch(base_offset: i64, records: i32) -> Vec<u8> {
        let payload = vec![0xAB; 7 * records.max(0) as usize];
        let mut out = Vec::new();
        out.extend_from_slice(&base_offset.to_be_bytes());
        // batchLength: everything after this field.
        let length = (RECORDS_AT + 4 - ENTRY_HEADER + payload.len()) as i32;
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes()); // partitionLeaderEpoch
        out.push(2); // magic
        out.extend_from_slice(&[0; 4]); // crc
        out.extend_from_slice(&[0; 2]); // attributes
        out.extend_from_slice(&(records - 1).to_be_bytes()); // lastOffsetDelta
        out.extend_from_slice(&[0; 16]); // base and max timestamps
        out.extend_from_slice(&(-1i64).to_be_bytes()); // producerId
        out.extend_from_slice(&(-1i16).to_be_bytes()); // producerEpoch
        out.extend_from_slice(&(-1i32).to_be_bytes()); // baseSequence
        assert_eq!(out.len(), RECORDS_AT);
        out.extend_from_slice(&records.to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// A legacy (magic `magic`) message with `value`.
    fn message(offset: i64, magic: u8, value: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&[0; 4]); // crc
        body.push(magic);
        body.push(0); // attributes
        if magic == 1 {
            body.extend_from_slice(&0i64.to_be_bytes()); // timestamp
        }
        body.extend_from_slice(&(-1i32).to_be_bytes()); // null key
        body.extend_from_slice(&(value.len() as i32).to_be_bytes());
        body.extend_from_slice(value);
        let mut out = Vec::new();
        out.extend_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(&(body.len() as i32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn a_batch_counts_its_records() {
        let set = batch(0, 3);
        assert_eq!(
            count(&set),
            RecordSetCount {
                records: 3,
                bytes: set.len() as u64
            }
        );
        assert_eq!(count(&[]), RecordSetCount::default());
    }

    #[test]
    fn several_batches_add_up() {
        let mut set = batch(0, 3);
        set.extend(batch(3, 1));
        set.extend(batch(4, 250));
        assert_eq!(count(&set).records, 254);
        assert_eq!(count(&set).bytes, set.len() as u64);
    }

    #[test]
    fn a_truncated_last_batch_counts_its_bytes_only() {
        let mut set = batch(0, 2);
        let whole = set.len();
        set.extend(batch(2, 5));
        for cut in [whole + 1, whole + 11, whole + 20, whole + 60, set.len() - 1] {
            let partial = &set[..cut];
            assert_eq!(
                count(partial),
                RecordSetCount {
                    records: 2,
                    bytes: cut as u64
                },
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_legacy_message_set_counts_its_messages() {
        let mut set = message(0, 0, b"a");
        set.extend(message(1, 1, b"bb"));
        set.extend(message(2, 1, b"ccc"));
        assert_eq!(count(&set).records, 3);
        // Its last message cut short.
        assert_eq!(count(&set[..set.len() - 2]).records, 2);
    }

    #[test]
    fn garbage_counts_bytes_and_stops() {
        let mut negative = batch(0, 4);
        negative.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 9, 0xFF, 0xFF, 0xFF, 0xFF, 2, 2]);
        negative.extend(batch(9, 4));
        assert_eq!(count(&negative).records, 4);
        // A magic-2 batch too short for its records count.
        let mut short = 5i64.to_be_bytes().to_vec();
        short.extend_from_slice(&10i32.to_be_bytes());
        short.extend_from_slice(&[0, 0, 0, 0, 2, 0, 0, 0, 0, 0]);
        assert_eq!(count(&short).records, 0);
        // A negative records count adds nothing.
        let mut odd = batch(0, 1);
        odd[RECORDS_AT..RECORDS_AT + 4].copy_from_slice(&(-7i32).to_be_bytes());
        assert_eq!(count(&odd).records, 0);
        assert_eq!(count(&[0xFF; 11]).bytes, 11);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let counted = count(&bytes);
            prop_assert_eq!(counted.bytes, bytes.len() as u64);
        }

        #[test]
        fn batches_cut_anywhere_count_only_whole_ones(
            sizes in proptest::collection::vec(0i32..40, 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut set = Vec::new();
            let mut ends = Vec::new();
            for size in &sizes {
                set.extend(batch(0, *size));
                ends.push(set.len());
            }
            let cut = cut.index(set.len() + 1);
            let whole: i32 = sizes
                .iter()
                .zip(&ends)
                .filter(|(_, end)| **end <= cut)
                .map(|(size, _)| *size)
                .sum();
            prop_assert_eq!(count(&set[..cut]).records, whole as u64);
        }
    }
}
