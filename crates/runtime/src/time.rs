//! Deadlines computed from untrusted durations.

use std::time::Duration;

use tokio::time::Instant;

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
    fn deadlines_saturate() {
        let now = Instant::now();
        assert!(deadline_after(now, Duration::MAX) > now);
        assert_eq!(
            deadline_after(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
    }
}
