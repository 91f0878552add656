//! Resource limits at the edge, shared by every listener and protocol stack: connection caps,
//! idle timeouts on byte streams (in [`crate::idle`]), throttled reporting of refusals, and
//! clamping of numbers a client supplies.
//!
//! Everything here is lock-free (atomics only) and cheap to clone, so a per-worker runtime can
//! hold the same gates as a shared one. The engine holds one process-wide [`ConnectionGate`]
//! (`zilla.engine.maximum.connections`), handed to bindings through
//! [`crate::binding::BuildContext::process_connections`]; a binding adds its own gate for its
//! per-binding cap. A connection holds one [`ConnectionPermit`] per gate it passed, and gives
//! them back when it is dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::properties::Properties;

/// The property capping the connections the whole process holds open at once (0 = no cap).
pub const MAXIMUM_CONNECTIONS_PROPERTY: &str = "zilla.engine.maximum.connections";

/// Counts open connections against a cap. Shared by every listener it covers.
#[derive(Debug)]
pub struct ConnectionGate {
    open: AtomicUsize,
    /// 0: no cap, only counting.
    maximum: usize,
}

impl ConnectionGate {
    /// A gate admitting at most `maximum` connections at once; 0 admits any number.
    pub fn new(maximum: usize) -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            maximum,
        })
    }

    /// The process-wide gate, capped by [`MAXIMUM_CONNECTIONS_PROPERTY`].
    pub fn from_properties(properties: &Properties) -> Arc<Self> {
        let maximum = properties.u64(MAXIMUM_CONNECTIONS_PROPERTY, 0);
        Self::new(usize::try_from(maximum).unwrap_or(usize::MAX))
    }

    /// The cap, 0 when there is none.
    pub fn maximum(&self) -> usize {
        self.maximum
    }

    /// Connections holding a permit now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// A permit when the gate is below its cap, `None` when it is full.
    pub fn try_acquire(self: &Arc<Self>) -> Option<ConnectionPermit> {
        let maximum = self.maximum;
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |open| {
                (maximum == 0 || open < maximum).then_some(open + 1)
            })
            .ok()
            .map(|_| ConnectionPermit { gate: self.clone() })
    }
}

/// One connection admitted by a [`ConnectionGate`]; dropping it frees the place.
#[derive(Debug)]
pub struct ConnectionPermit {
    gate: Arc<ConnectionGate>,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.gate.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Lets one report through per interval and counts the ones held back, so a flood of refusals
/// raises a handful of events instead of one per connection.
#[derive(Debug)]
pub struct Throttle {
    interval_millis: u64,
    /// Milliseconds since `origin` of the last report, `u64::MAX` before the first.
    last: AtomicU64,
    held: AtomicU64,
    origin: Instant,
}

impl Throttle {
    /// At most one report per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval_millis: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            last: AtomicU64::new(u64::MAX),
            held: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }

    /// Notes one occurrence; returns how many occurred since the last report (this one
    /// included) when a report is due now.
    pub fn note(&self) -> Option<u64> {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.held.fetch_add(1, Ordering::AcqRel);
        let last = self.last.load(Ordering::Acquire);
        let due = last == u64::MAX || now.saturating_sub(last) >= self.interval_millis;
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.held.swap(0, Ordering::AcqRel).max(1))
        } else {
            None
        }
    }
}

/// Deadlines from untrusted durations, in the runtime crate (`zilla-runtime`).
pub use zilla_runtime::time::deadline_after;

/// An untrusted count of seconds (a header value, a query parameter): `None` unless it is
/// decimal digits, and at most `maximum` however large the number written.
pub fn clamped_seconds(text: &str, maximum: Duration) -> Option<Duration> {
    let digits = text.trim();
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let seconds = digits.parse::<u64>().unwrap_or(u64::MAX);
    Some(Duration::from_secs(seconds).min(maximum))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_admits_up_to_its_cap_and_frees_places_on_drop() {
        let gate = ConnectionGate::new(2);
        let first = gate.try_acquire().unwrap();
        let second = gate.try_acquire().unwrap();
        assert!(gate.try_acquire().is_none());
        assert_eq!(gate.open(), 2);
        drop(first);
        assert_eq!(gate.open(), 1);
        let third = gate.try_acquire().unwrap();
        assert!(gate.try_acquire().is_none());
        drop((second, third));
        assert_eq!(gate.open(), 0);
    }

    #[test]
    fn gate_without_cap_only_counts() {
        let gate = ConnectionGate::new(0);
        let permits: Vec<_> = (0..1000).map(|_| gate.try_acquire().unwrap()).collect();
        assert_eq!(gate.open(), 1000);
        drop(permits);
        assert_eq!(gate.open(), 0);
    }

    #[test]
    fn gate_is_exact_under_contention() {
        let gate = ConnectionGate::new(100);
        let admitted = AtomicUsize::new(0);
        let tried = std::sync::Barrier::new(8);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    let mut held = Vec::new();
                    for _ in 0..1000 {
                        if let Some(permit) = gate.try_acquire() {
                            held.push(permit);
                        }
                    }
                    admitted.fetch_add(held.len(), Ordering::Relaxed);
                    // Held until every thread tried, so no place is freed early.
                    tried.wait();
                });
            }
        });
        assert_eq!(admitted.load(Ordering::Relaxed), 100);
        assert_eq!(gate.open(), 0);
    }

    #[test]
    fn gate_reads_its_cap_from_properties() {
        let properties = Properties::from_assignments(["zilla.engine.maximum.connections=3"]);
        assert_eq!(ConnectionGate::from_properties(&properties).maximum(), 3);
        assert_eq!(
            ConnectionGate::from_properties(&Properties::default()).maximum(),
            0
        );
    }

    #[tokio::test(start_paused = true)]
    async fn throttle_reports_once_per_interval_with_the_count() {
        let throttle = Throttle::new(Duration::from_secs(1));
        assert_eq!(throttle.note(), Some(1));
        assert_eq!(throttle.note(), None);
        assert_eq!(throttle.note(), None);
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert_eq!(throttle.note(), Some(3));
        assert_eq!(throttle.note(), None);
    }

    #[test]
    fn untrusted_seconds_are_clamped_never_overflow() {
        let maximum = Duration::from_secs(120);
        assert_eq!(clamped_seconds("5", maximum), Some(Duration::from_secs(5)));
        assert_eq!(clamped_seconds("99999999999", maximum), Some(maximum));
        assert_eq!(
            clamped_seconds("999999999999999999999999999999", maximum),
            Some(maximum)
        );
        assert_eq!(clamped_seconds("-1", maximum), None);
        assert_eq!(clamped_seconds("1e3", maximum), None);
        assert_eq!(clamped_seconds("", maximum), None);
    }
}
