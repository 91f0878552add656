//! Partition choice compatible with Kafka's Java producer: murmur2 of the key, and a
//! round-robin rotation for records without a key.

use std::sync::atomic::{AtomicU32, Ordering};

/// Kafka's murmur2 (the Java client's `Utils.murmur2`, seed `0x9747b28c`).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition the Java producer's default partitioner picks for a keyed record:
/// `toPositive(murmur2(key)) % partitions`.
pub fn partition_for_key(key: &[u8], partitions: u32) -> Option<u32> {
    if partitions == 0 {
        return None;
    }
    Some((murmur2(key) & 0x7fff_ffff) as u32 % partitions)
}

/// Chooses partitions: murmur2 for keyed records, round-robin for records with a null key.
#[derive(Debug, Default)]
pub struct Partitioner {
    next: AtomicU32,
}

impl Partitioner {
    /// A partitioner whose rotation starts at partition 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The partition for a record with `key` in a topic of `partitions` partitions; `None` when
    /// the topic has no partitions.
    pub fn partition(&self, key: Option<&[u8]>, partitions: u32) -> Option<u32> {
        match key {
            Some(key) => partition_for_key(key, partitions),
            None if partitions == 0 => None,
            None => Some(self.next.fetch_add(1, Ordering::Relaxed) % partitions),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_murmur2_vectors() {
        // Values of org.apache.kafka.common.utils.Utils.murmur2 for these inputs.
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (input, expected) in cases {
            assert_eq!(
                murmur2(input),
                *expected,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn null_keys_rotate() {
        let partitioner = Partitioner::new();
        let picks: Vec<_> = (0..6).map(|_| partitioner.partition(None, 3)).collect();
        assert_eq!(
            picks,
            [Some(0), Some(1), Some(2), Some(0), Some(1), Some(2)]
        );
        assert_eq!(partitioner.partition(None, 0), None);
    }

    #[test]
    fn keyed_partition_is_stable_and_in_range() {
        for partitions in 1..20 {
            let p = partition_for_key(b"key", partitions).unwrap();
            assert!(p < partitions);
            assert_eq!(
                Some(p),
                Partitioner::new().partition(Some(b"key"), partitions)
            );
        }
    }
}
