//! Deadlines computed from untrusted durations, and a worker's recent time.

use std::cell::Cell;
use std::time::Duration;

use tokio::time::Instant;

/// Readings of [`recent`] that may return one clock reading before the clock is read again.
const READINGS_PER_CLOCK_READ: u8 = 32;

thread_local! {
    /// The clock as read when this worker last woke, and how often it was handed out since.
    /// `None` on a thread whose runtime does not call [`refresh_recent`] on waking.
    static RECENT: Cell<Option<(Instant, u8)>> = const { Cell::new(None) };
}

/// The time, as of this worker's last wake-up or a moment ago, for activity stamps and
/// deadlines of seconds: connection idle timeouts, the time an origin connection went idle.
///
/// Reading the clock costs about 25 ns on x86-64 Linux (the vDSO reads the TSC), and a proxied
/// exchange read it about seven times for such stamps (with tokio's own readings, 1 % of the
/// gateway's CPU time in `perf`, about half of it these). A worker reads it when it wakes from
/// waiting for events (see [`refresh_recent`]), and again after every
/// [`READINGS_PER_CLOCK_READ`] readings, since a busy worker can run for long without
/// waiting. A reading is never ahead of the clock, and behind it by the time the worker spent
/// since the last read: under load, microseconds; after a long computation on the worker (a
/// large body validated, say), as long as that took. A timeout measured from such a stamp
/// can fire early by as much, which is why only deadlines of seconds use it. Elsewhere (a
/// thread without the hook, a test's runtime with paused time) it is `Instant::now()`.
pub fn recent() -> Instant {
    RECENT.with(|recent| match recent.get() {
        Some((now, readings)) if readings < READINGS_PER_CLOCK_READ => {
            recent.set(Some((now, readings + 1)));
            now
        }
        Some(_) => {
            let now = Instant::now();
            recent.set(Some((now, 0)));
            now
        }
        None => Instant::now(),
    })
}

/// Reads the clock for [`recent`]: a worker runtime's hook for when it wakes
/// (`on_thread_unpark`), before it polls the tasks woken.
pub fn refresh_recent() {
    RECENT.with(|recent| recent.set(Some((Instant::now(), 0))));
}

/// `now + wait`, saturating far in the future instead of overflowing: a wait taken from a
/// client (a header, a keep-alive) must not panic a timer.
pub fn deadline_after(now: Instant, wait: Duration) -> Instant {
    now.checked_add(wait)
        // About 30 years, as tokio's own far future.
        .unwrap_or_else(|| now + Duration::from_secs(86400 * 365 * 30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_is_the_clock_on_a_thread_without_the_hook() {
        let before = Instant::now();
        std::thread::sleep(Duration::from_millis(5));
        assert!(recent() >= before + Duration::from_millis(5));
    }

    #[test]
    fn recent_is_read_again_on_waking_and_after_a_bound_of_readings() {
        std::thread::spawn(|| {
            refresh_recent();
            let woke = recent();
            std::thread::sleep(Duration::from_millis(5));
            // Handed out again until the bound of readings...
            for _ in 1..READINGS_PER_CLOCK_READ {
                assert_eq!(recent(), woke);
            }
            // ...then read again.
            assert!(recent() >= woke + Duration::from_millis(5));
            std::thread::sleep(Duration::from_millis(5));
            let before = Instant::now();
            refresh_recent();
            assert!(recent() >= before);
        })
        .join()
        .expect("the thread ran");
    }

    #[test]
    fn deadlines_saturate() {
        let now = Instant::now();
        assert!(deadline_after(now, Duration::MAX) > now);
        assert_eq!(
            deadline_after(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
    }
}
