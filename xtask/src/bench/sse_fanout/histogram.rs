//! A latency histogram that many subscriber tasks record into at once without locks: exact
//! microseconds below 1024 µs, then 512 buckets per power of two (under 0.2 % error), up to
//! about twelve days.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Values below this are counted exactly.
const LINEAR: u64 = 1024;
/// Buckets per power of two above [`LINEAR`].
const PER_OCTAVE: u64 = 512;
/// Powers of two above [`LINEAR`] covered (up to 2^40 µs).
const OCTAVES: u64 = 30;
const BUCKETS: usize = (LINEAR + OCTAVES * PER_OCTAVE) as usize;
const LARGEST: u64 = (1 << 40) - 1;

/// Counts of latencies in microseconds.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count())
            .finish()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Histogram {
    /// Counts one latency of `micros` µs.
    pub fn record(&self, micros: u64) {
        self.buckets[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
    }

    /// How many latencies were recorded.
    pub fn count(&self) -> u64 {
        self.buckets
            .iter()
            .map(|bucket| bucket.load(Ordering::Relaxed))
            .sum()
    }

    /// The latency at `percent` (0 to 100) by nearest rank, as the largest value of its
    /// bucket; `None` when nothing was recorded.
    pub fn percentile(&self, percent: f64) -> Option<Duration> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|bucket| bucket.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((percent.clamp(0.0, 100.0) / 100.0 * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(Duration::from_micros(largest_in(bucket)));
            }
        }
        None
    }
}

fn bucket_of(micros: u64) -> usize {
    let micros = micros.min(LARGEST);
    if micros < LINEAR {
        return micros as usize;
    }
    // micros >= 2^10: shifting right by (magnitude - 9) leaves a mantissa in [512, 1024).
    let magnitude = u64::from(63 - micros.leading_zeros());
    let shift = magnitude - 9;
    let mantissa = micros >> shift;
    (LINEAR + (shift - 1) * PER_OCTAVE + (mantissa - PER_OCTAVE)) as usize
}

fn smallest_in(bucket: usize) -> u64 {
    let bucket = bucket as u64;
    if bucket < LINEAR {
        return bucket;
    }
    let shift = (bucket - LINEAR) / PER_OCTAVE + 1;
    let mantissa = (bucket - LINEAR) % PER_OCTAVE + PER_OCTAVE;
    mantissa << shift
}

fn largest_in(bucket: usize) -> u64 {
    if bucket + 1 >= BUCKETS {
        return LARGEST;
    }
    smallest_in(bucket + 1) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1023), 1023);
        assert_eq!(bucket_of(1024), 1024);
        assert_eq!(bucket_of(1025), 1024);
        assert_eq!(bucket_of(1026), 1025);
        assert_eq!(bucket_of(LARGEST), BUCKETS - 1);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        for bucket in 0..BUCKETS {
            let (low, high) = (smallest_in(bucket), largest_in(bucket));
            assert_eq!(bucket_of(low), bucket);
            assert_eq!(bucket_of(high), bucket);
            if bucket + 1 < BUCKETS {
                assert_eq!(smallest_in(bucket + 1), high + 1);
            }
            assert!(
                (high - low) as f64 <= low as f64 / 500.0 + 1.0,
                "bucket {bucket}"
            );
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let histogram = Histogram::default();
        assert_eq!(histogram.percentile(50.0), None);
        for micros in 1..=100 {
            histogram.record(micros);
        }
        assert_eq!(histogram.count(), 100);
        assert_eq!(histogram.percentile(50.0), Some(Duration::from_micros(50)));
        assert_eq!(histogram.percentile(99.0), Some(Duration::from_micros(99)));
        assert_eq!(
            histogram.percentile(100.0),
            Some(Duration::from_micros(100))
        );
        assert_eq!(histogram.percentile(0.0), Some(Duration::from_micros(1)));
        histogram.record(1_000_000);
        let top = histogram.percentile(100.0).unwrap_or_default();
        assert!(top >= Duration::from_secs(1) && top <= Duration::from_millis(1002));
    }
}
