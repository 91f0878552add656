//! Idleness of a network connection, owned by the protocol that speaks on it.
//!
//! A transport (the `tcp` server) wraps each connection in an [`IdleTimeout`] with its default
//! timeout, and hands the connection's [`IdleControl`] up in the stream's
//! `StreamInfo` (the engine's `zilla_engine::stream`). Only the protocol on top knows how long its
//! connection may rightly stay silent, so once past its handshake it says so through that handle:
//!
//! - MQTT replaces the timeout by 1.5 times the negotiated keep-alive (turning it off for a
//!   keep-alive of 0, as MQTT specifies), counting only what the client sends
//!   ([`IdleControl::set_read_timeout`]): the transport's timer is then MQTT's keep-alive timer,
//!   and a read that times out ([`is_idle_timeout`]) tells the connection to end with MQTT's
//!   reason. Under a WebSocket, which holds the connection, MQTT times its client itself and
//!   leaves the transport's timeout as it is;
//! - an HTTP exchange in progress (an SSE stream, a long poll, an HTTP/2 stream) and a WebSocket
//!   session hold the connection ([`IdleControl::hold`]) until they end, after which the timeout
//!   counts again from that moment.
//!
//! A connection that never gets past a protocol's handshake keeps the transport's timeout. Held
//! or not, a connection whose peer stops reading is still closed once a write has waited for
//! the timeout (unless the protocol turned the timeout off), so a hold never pins a dead
//! peer's buffers.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::time::{deadline_after, recent};

/// How a protocol changes the idle timeout of the connection it runs on. Cheap to clone; a
/// detached handle (the default, for streams no transport times out) does nothing.
#[derive(Clone, Default)]
pub struct IdleControl {
    shared: Option<Arc<IdleShared>>,
}

#[derive(Debug)]
struct IdleShared {
    /// Milliseconds; 0: never idle.
    timeout_millis: AtomicU64,
    holds: AtomicUsize,
    /// Milliseconds after `origin` at which the last hold was released.
    released_millis: AtomicU64,
    origin: Instant,
    /// Milliseconds after `origin` at which the stream's timer is armed; `u64::MAX`: never.
    armed_millis: AtomicU64,
    /// Bumped on every change the timer must see before it fires, so it re-reads the settings.
    generation: AtomicU64,
    /// Whether only reads count as activity (writes still time out when blocked).
    reads_only: AtomicBool,
    waker: AtomicWaker,
}

impl IdleShared {
    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.waker.wake();
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_millis.load(Ordering::Acquire))
    }

    fn released_at(&self) -> Instant {
        self.origin + Duration::from_millis(self.released_millis.load(Ordering::Acquire))
    }

    /// The last hold was released at `released` (milliseconds after `origin`): the stream's
    /// timer must be re-armed only if it is armed past the deadline counted from then (armed
    /// while the stream was held). A timer that fires early re-reads the deadline and
    /// re-arms on its own, so every other release costs no wake of the connection's task:
    /// an HTTP/1.1 connection takes a hold and releases it for each request.
    fn released(&self, released: u64) {
        let due = released.saturating_add(self.timeout_millis.load(Ordering::Acquire));
        if self.armed_millis.load(Ordering::Acquire) > due {
            self.changed();
        }
    }
}

impl std::fmt::Debug for IdleControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.shared {
            None => f.write_str("IdleControl(detached)"),
            Some(shared) => f
                .debug_struct("IdleControl")
                .field("timeout", &shared.timeout())
                .field("holds", &shared.holds.load(Ordering::Relaxed))
                .finish(),
        }
    }
}

/// Two handles are equal when they control the same connection (or are both detached).
impl PartialEq for IdleControl {
    fn eq(&self, other: &Self) -> bool {
        match (&self.shared, &other.shared) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for IdleControl {}

impl IdleControl {
    /// Replaces the connection's idle timeout; `Duration::ZERO` turns it off.
    pub fn set_timeout(&self, timeout: Duration) {
        if let Some(shared) = &self.shared {
            let millis = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
            shared.timeout_millis.store(millis, Ordering::Release);
            shared.changed();
        }
    }

    /// Replaces the connection's idle timeout as [`IdleControl::set_timeout`] does, and from
    /// now on counts only what is read as activity: a peer that only receives, without a word
    /// of its own for `timeout`, is idle. For a protocol whose keep-alive is a promise of the
    /// peer's (MQTT's), so that the transport's timer is the protocol's and the protocol keeps
    /// none of its own.
    ///
    /// Changes nothing and returns false for a detached handle or a connection that is held
    /// (by a WebSocket session under the protocol, say), where the timer would not run: the
    /// protocol must then time its peer itself. Only the protocol that owns the connection
    /// calls it, once it owns it: a hold taken afterwards would stop the timer it now relies
    /// on. The connection stays in this mode for its life.
    pub fn set_read_timeout(&self, timeout: Duration) -> bool {
        let Some(shared) = &self.shared else {
            return false;
        };
        if shared.holds.load(Ordering::Acquire) > 0 {
            return false;
        }
        shared.reads_only.store(true, Ordering::Release);
        self.set_timeout(timeout);
        true
    }

    /// The connection's idle timeout, `None` for a detached handle or when it is off.
    pub fn timeout(&self) -> Option<Duration> {
        self.shared
            .as_ref()
            .map(|shared| shared.timeout())
            .filter(|timeout| !timeout.is_zero())
    }

    /// Keeps the connection from timing out while silent until the hold is dropped.
    pub fn hold(&self) -> IdleHold {
        if let Some(shared) = &self.shared {
            // The deadline only moves later (to none): the timer, when it fires, finds the
            // stream held and re-arms, so the connection's task is not woken for it.
            shared.holds.fetch_add(1, Ordering::AcqRel);
        }
        IdleHold {
            shared: self.shared.clone(),
        }
    }
}

/// What an [`IdleTimeout`] fails a read or write with once the stream was idle for its timeout,
/// inside an [`io::Error`] of kind [`io::ErrorKind::TimedOut`]; [`is_idle_timeout`] tells it
/// from the kernel's own timeouts (a TCP keep-alive or retransmission giving up).
#[derive(Debug)]
struct IdleElapsed {
    millis: u128,
}

impl std::fmt::Display for IdleElapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "idle for {} ms", self.millis)
    }
}

impl std::error::Error for IdleElapsed {}

/// Whether `error` is a stream's idle timeout (see [`IdleTimeout`]), rather than another
/// failure, a kernel timeout among them.
pub fn is_idle_timeout(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::TimedOut
        && error
            .get_ref()
            .is_some_and(|inner| inner.is::<IdleElapsed>())
}

/// A protocol's claim that its connection is rightly silent (see [`IdleControl::hold`]).
#[derive(Debug)]
pub struct IdleHold {
    shared: Option<Arc<IdleShared>>,
}

impl Drop for IdleHold {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            let elapsed = recent()
                .saturating_duration_since(shared.origin)
                .as_millis();
            let elapsed = u64::try_from(elapsed).unwrap_or(u64::MAX);
            shared.released_millis.fetch_max(elapsed, Ordering::AcqRel);
            if shared.holds.fetch_sub(1, Ordering::AcqRel) == 1 {
                shared.released(elapsed);
            }
        }
    }
}

/// A byte stream that fails with [`io::ErrorKind::TimedOut`] once nothing was read or written
/// for the idle timeout, so a silent or vanished peer does not hold a connection forever. The
/// protocol on top changes the timeout through [`IdleTimeout::control`].
///
/// Activity only stores the time; the timer is re-armed lazily when it fires or when the
/// control changes, so a busy stream costs no timer updates.
pub struct IdleTimeout<T> {
    inner: T,
    shared: Arc<IdleShared>,
    last_activity: Instant,
    /// Since when a write has been waiting for the peer to read.
    write_blocked_since: Option<Instant>,
    /// The control generation the timer was armed for.
    seen: u64,
    timer: Pin<Box<Sleep>>,
}

impl<T> std::fmt::Debug for IdleTimeout<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleTimeout")
            .field("timeout", &self.shared.timeout())
            .finish_non_exhaustive()
    }
}

impl<T> IdleTimeout<T> {
    /// Wraps `inner` with `timeout` (`Duration::ZERO`: none until a protocol sets one).
    pub fn new(inner: T, timeout: Duration) -> Self {
        let now = Instant::now();
        let shared = Arc::new(IdleShared {
            timeout_millis: AtomicU64::new(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
            holds: AtomicUsize::new(0),
            released_millis: AtomicU64::new(0),
            origin: now,
            armed_millis: AtomicU64::new(u64::MAX),
            generation: AtomicU64::new(0),
            reads_only: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        let mut idle = Self {
            inner,
            shared,
            last_activity: now,
            write_blocked_since: None,
            seen: 0,
            timer: Box::pin(tokio::time::sleep_until(now)),
        };
        idle.rearm();
        idle
    }

    /// The handle the protocol on top uses to change this stream's timeout.
    pub fn control(&self) -> IdleControl {
        IdleControl {
            shared: Some(self.shared.clone()),
        }
    }

    /// When the stream is idle as things stand, `None` for never.
    fn deadline(&self) -> Option<Instant> {
        let timeout = self.shared.timeout();
        if timeout.is_zero() {
            return None;
        }
        let silent = (self.shared.holds.load(Ordering::Acquire) == 0)
            .then(|| deadline_after(self.last_activity.max(self.shared.released_at()), timeout));
        let Some(blocked) = self.write_blocked_since else {
            return silent;
        };
        let blocked = deadline_after(blocked.max(self.last_activity), timeout);
        if self.shared.reads_only.load(Ordering::Relaxed) {
            // The peer's silence counts from its last word whatever the writes do: a write
            // that blocks can only bring the deadline earlier, or a peer that reads slowly
            // and never speaks would be kept by every write it makes wait.
            return Some(silent.map_or(blocked, |silent| silent.min(blocked)));
        }
        Some(blocked)
    }

    fn rearm(&mut self) {
        let mut due = self.deadline();
        self.note_armed(due);
        if due.is_none() && self.shared.holds.load(Ordering::Acquire) == 0 {
            // The last hold went between the two reads above (another thread), seeing the
            // timer armed before: read again now that `armed_millis` says never.
            due = self.deadline();
            self.note_armed(due);
        }
        let due = due.unwrap_or_else(|| deadline_after(Instant::now(), Duration::MAX));
        self.timer.as_mut().reset(due);
    }

    fn note_armed(&self, due: Option<Instant>) {
        let millis = due.map_or(u64::MAX, |due| {
            u64::try_from(
                due.saturating_duration_since(self.shared.origin)
                    .as_millis(),
            )
            .unwrap_or(u64::MAX)
        });
        self.shared.armed_millis.store(millis, Ordering::Release);
    }

    /// Ready with an error once the stream has been idle for the timeout.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        self.shared.waker.register(cx.waker());
        let generation = self.shared.generation.load(Ordering::Acquire);
        if generation != self.seen {
            self.seen = generation;
            self.rearm();
        }
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            match self.deadline() {
                Some(due) if due <= Instant::now() => {
                    return Poll::Ready(io::Error::new(
                        io::ErrorKind::TimedOut,
                        IdleElapsed {
                            millis: self.shared.timeout().as_millis(),
                        },
                    ));
                }
                _ => self.rearm(),
            }
        }
    }

    fn wrote(&mut self, result: &io::Result<usize>) {
        self.write_blocked_since = None;
        if matches!(result, Ok(written) if *written > 0)
            && !self.shared.reads_only.load(Ordering::Relaxed)
        {
            self.last_activity = recent();
        }
    }

    /// A write waits for the peer: idle from now on, whatever holds the connection.
    fn poll_write_blocked(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.write_blocked_since.is_none() {
            self.write_blocked_since = Some(Instant::now());
            self.rearm();
        }
        self.poll_idle(cx).map(Err)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.last_activity = recent();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(result) => {
                this.wrote(&result);
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_write_blocked(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => {
                this.wrote(&result);
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_write_blocked(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn read_error(idle: &mut IdleTimeout<tokio::io::DuplexStream>) -> io::ErrorKind {
        let mut byte = [0; 1];
        match idle.read(&mut byte).await {
            Ok(read) => panic!("read {read} bytes instead of timing out"),
            Err(error) => error.kind(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn idle_stream_times_out_and_busy_one_does_not() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut idle = IdleTimeout::new(near, Duration::from_secs(10));
        // Activity every 6 s keeps it open past the timeout.
        let silence = read_three_then_time_out(&mut idle, &mut far, Duration::from_secs(6)).await;
        assert_eq!(silence, Duration::from_secs(10));
    }

    /// Reads a byte from `far` three times, `every` apart; then how long until a read times
    /// out.
    async fn read_three_then_time_out(
        idle: &mut IdleTimeout<tokio::io::DuplexStream>,
        far: &mut tokio::io::DuplexStream,
        every: Duration,
    ) -> Duration {
        for _ in 0..3 {
            tokio::time::advance(every).await;
            far.write_all(b"x").await.unwrap();
            let mut byte = [0; 1];
            idle.read_exact(&mut byte).await.unwrap();
        }
        let started = Instant::now();
        assert_eq!(read_error(idle).await, io::ErrorKind::TimedOut);
        started.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_times_out_a_write() {
        let (near, _far) = tokio::io::duplex(8);
        let mut idle = IdleTimeout::new(near, Duration::from_secs(5));
        let error = idle.write_all(&[0; 64]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_keeps_a_silent_stream_and_the_timeout_restarts_at_release() {
        let (near, _far) = tokio::io::duplex(64);
        let mut idle = IdleTimeout::new(near, Duration::from_secs(10));
        let hold = idle.control().hold();
        let started = Instant::now();
        let release = async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(hold);
        };
        let (kind, ()) = tokio::join!(read_error(&mut idle), release);
        assert_eq!(kind, io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(70));
    }

    /// Counts the wakes of a task.
    struct Wakes(AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_release_wakes_the_reader_only_when_its_timer_must_move() {
        let (near, _far) = tokio::io::duplex(64);
        let mut idle = IdleTimeout::new(near, Duration::from_secs(10));
        let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut byte = [0; 1];
        let mut poll = |idle: &mut IdleTimeout<_>| {
            let mut buf = ReadBuf::new(&mut byte);
            Pin::new(idle).poll_read(&mut cx, &mut buf).is_pending()
        };
        assert!(poll(&mut idle));
        let control = idle.control();
        // An exchange shorter than the timeout: its hold and release leave the timer as it is.
        drop(control.hold());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        // A hold outlasting the timeout: the timer fires, finds the stream held and waits
        // for nothing more; the release must then wake the reader to count from it.
        let hold = control.hold();
        tokio::time::advance(Duration::from_secs(11)).await;
        let fired = wakes.0.load(Ordering::SeqCst);
        assert_eq!(fired, 1, "the timer fired");
        assert!(poll(&mut idle));
        drop(hold);
        assert_eq!(wakes.0.load(Ordering::SeqCst), fired + 1);
        let released = Instant::now();
        assert_eq!(read_error(&mut idle).await, io::ErrorKind::TimedOut);
        assert_eq!(released.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_stream_whose_peer_stops_reading_still_times_out() {
        let (near, _far) = tokio::io::duplex(8);
        let mut idle = IdleTimeout::new(near, Duration::from_secs(5));
        let _hold = idle.control().hold();
        let started = Instant::now();
        let error = idle.write_all(&[0; 64]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn the_protocol_on_top_lengthens_shortens_or_turns_off_the_timeout() {
        let (near, _far) = tokio::io::duplex(64);
        let mut idle = IdleTimeout::new(near, Duration::from_secs(300));
        let control = idle.control();
        let started = Instant::now();
        let shorten = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            control.set_timeout(Duration::from_secs(15));
        };
        let (kind, ()) = tokio::join!(read_error(&mut idle), shorten);
        assert_eq!(kind, io::ErrorKind::TimedOut);
        // Counted from the last activity (the start), not from the change.
        assert_eq!(started.elapsed(), Duration::from_secs(15));

        let (near, _far) = tokio::io::duplex(64);
        let mut idle = IdleTimeout::new(near, Duration::from_secs(10));
        idle.control().set_timeout(Duration::from_secs(600));
        let started = Instant::now();
        assert_eq!(read_error(&mut idle).await, io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(600));

        let (near, _far) = tokio::io::duplex(64);
        let mut idle = IdleTimeout::new(near, Duration::from_secs(10));
        let control = idle.control();
        control.set_timeout(Duration::ZERO);
        assert_eq!(control.timeout(), None);
        let mut byte = [0; 1];
        let waited = tokio::time::timeout(Duration::from_secs(86_400), idle.read(&mut byte)).await;
        assert!(waited.is_err(), "a stream with the timeout off timed out");
    }

    /// A stream (with `capacity` bytes of buffer to its peer) whose protocol set a 10 s read
    /// timeout over the transport's 60 s, and its peer's end.
    fn read_timeout_stream(
        capacity: usize,
    ) -> (
        IdleTimeout<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
    ) {
        let (near, far) = tokio::io::duplex(capacity);
        let idle = IdleTimeout::new(near, Duration::from_secs(60));
        assert!(idle.control().set_read_timeout(Duration::from_secs(10)));
        (idle, far)
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_timeout_counts_reads_and_not_writes() {
        let (mut idle, mut far) = read_timeout_stream(4096);
        let started = Instant::now();
        // Writes every 4 s, which the peer reads: activity for a plain timeout, not here.
        let writes = async {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                if idle.write_all(b"x").await.is_err() {
                    break;
                }
            }
        };
        let drain = async {
            let mut sink = [0; 16];
            let _ = tokio::time::timeout(Duration::from_secs(30), far.read(&mut sink)).await;
        };
        tokio::join!(writes, drain);
        assert_eq!(read_error(&mut idle).await, io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(20));
        assert_eq!(idle.control().timeout(), Some(Duration::from_secs(10)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_timeout_resets_with_every_read() {
        let (mut idle, mut far) = read_timeout_stream(64);
        let silence = read_three_then_time_out(&mut idle, &mut far, Duration::from_secs(8)).await;
        assert_eq!(silence, Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_or_detached_connection_takes_no_read_timeout() {
        assert!(!IdleControl::default().set_read_timeout(Duration::from_secs(1)));
        let (near, mut far) = tokio::io::duplex(4096);
        let mut idle = IdleTimeout::new(near, Duration::from_secs(60));
        let hold = idle.control().hold();
        assert!(!idle.control().set_read_timeout(Duration::from_secs(10)));
        assert_eq!(idle.control().timeout(), Some(Duration::from_secs(60)));
        drop(hold);
        // Refused, the connection still counts writes: a plain 10 s timeout, written to at
        // 4 s and 8 s, times out at 18 s.
        idle.control().set_timeout(Duration::from_secs(10));
        let started = Instant::now();
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_secs(4)).await;
            idle.write_all(b"x").await.unwrap();
        }
        let mut sink = [0; 4];
        far.read_exact(&mut sink[..2]).await.unwrap();
        assert_eq!(read_error(&mut idle).await, io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(18));
        assert!(idle.control().set_read_timeout(Duration::from_secs(1)));
    }

    /// A peer that reads slowly and never speaks: each write waits for it, and still the
    /// stream times out 10 s after the peer's last word.
    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_never_speaks_times_out_in_read_timeout_mode() {
        let (mut idle, mut far) = read_timeout_stream(8);
        let started = Instant::now();
        let peer = async {
            let mut sink = [0; 8];
            loop {
                tokio::time::sleep(Duration::from_secs(3)).await;
                match far.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        let writes = async {
            loop {
                if let Err(error) = idle.write_all(&[0; 8]).await {
                    return error;
                }
            }
        };
        let error = tokio::time::timeout(Duration::from_secs(120), async {
            tokio::select! {
                error = writes => error,
                () = peer => panic!("the peer stopped first"),
            }
        })
        .await
        .expect("the writes kept the silent peer's stream open");
        assert!(is_idle_timeout(&error));
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[test]
    fn only_the_idle_timeout_is_one() {
        let idle = io::Error::new(io::ErrorKind::TimedOut, IdleElapsed { millis: 5 });
        assert!(is_idle_timeout(&idle));
        assert_eq!(idle.to_string(), "idle for 5 ms");
        assert!(!is_idle_timeout(&io::Error::from(io::ErrorKind::TimedOut)));
        assert!(!is_idle_timeout(&io::Error::other(IdleElapsed {
            millis: 5
        })));
    }

    #[test]
    fn detached_controls_do_nothing_and_compare_by_connection() {
        let detached = IdleControl::default();
        detached.set_timeout(Duration::from_secs(1));
        drop(detached.hold());
        assert_eq!(detached.timeout(), None);
        assert_eq!(detached, IdleControl::default());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (near, _far) = tokio::io::duplex(8);
            let idle = IdleTimeout::new(near, Duration::from_secs(3));
            assert_eq!(idle.control(), idle.control());
            assert_ne!(idle.control(), detached);
            assert_eq!(idle.control().timeout(), Some(Duration::from_secs(3)));
        });
    }
}
