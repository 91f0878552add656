//! The channel through which a store (`components::Store`) tells watchers of a key about its
//! changes.
//!
//! The mqtt server watches one key per connection (the owner record of its client
//! identifier), so a gateway holding many idle connections holds as many channels. tokio's
//! `watch` channel costs about 350 bytes each, sized for many receivers (eight notifiers),
//! and a task waiting on it holds a waiter node of some 60 bytes in its future. This one is a
//! lock around the value, its version and the wakers of the watchers waiting, about 80 bytes,
//! with the same semantics for the few watchers a key has: a watcher sees the value as it is
//! now, and [`StoreWatch::changed`] resolves once a value it has not seen was sent. A waiting
//! watcher's future is a reference to it.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

/// The bytes one channel allocates (its shared state and the `Arc`'s two counts), for a
/// store that counts what it holds.
pub const CHANNEL_BYTES: usize = 2 * std::mem::size_of::<usize>() + std::mem::size_of::<Shared>();

/// A value held in a store; `None` where a key is absent.
pub type StoreValue = Option<Arc<[u8]>>;

/// The store's side of a watched key: tells every [`StoreWatch`] of each new value, and that
/// no more will come once dropped.
pub struct StoreWatchers {
    shared: Arc<Shared>,
}

/// A watcher of one key (`components::Store::watch` gives one).
pub struct StoreWatch {
    shared: Arc<Shared>,
    /// The version of the value this watcher has seen.
    seen: u64,
}

/// The store stopped telling watchers of changes (the key's channel was dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the store no longer tells this watcher of changes")]
pub struct WatchClosed;

struct Shared {
    state: Mutex<State>,
}

struct State {
    value: StoreValue,
    version: u64,
    closed: bool,
    /// The watchers waiting for a change. Taken by each change: one of a watcher that went
    /// meanwhile is woken for nothing once.
    waiting: Vec<Waker>,
}

impl State {
    fn wake_all(&mut self) -> Vec<Waker> {
        std::mem::take(&mut self.waiting)
    }
}

fn wake(wakers: Vec<Waker>) {
    for waker in wakers {
        waker.wake();
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned value is still a whole value.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl StoreWatchers {
    /// A channel holding `value`, with no watcher yet.
    pub fn new(value: StoreValue) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    value,
                    version: 0,
                    closed: false,
                    waiting: Vec::new(),
                }),
            }),
        }
    }

    /// A new watcher, which has seen the value held now.
    pub fn subscribe(&self) -> StoreWatch {
        let seen = self.shared.state().version;
        StoreWatch {
            shared: self.shared.clone(),
            seen,
        }
    }

    /// Holds `value` and tells every watcher; returns the value it replaced.
    pub fn send_replace(&self, value: StoreValue) -> StoreValue {
        let (previous, waiting) = {
            let mut state = self.shared.state();
            state.version = state.version.wrapping_add(1);
            (std::mem::replace(&mut state.value, value), state.wake_all())
        };
        // Woken outside the lock: a woken task may run on another thread at once.
        wake(waiting);
        previous
    }

    /// How many watchers there are.
    pub fn receiver_count(&self) -> usize {
        Arc::strong_count(&self.shared) - 1
    }
}

impl Drop for StoreWatchers {
    fn drop(&mut self) {
        let waiting = {
            let mut state = self.shared.state();
            state.closed = true;
            state.wake_all()
        };
        wake(waiting);
    }
}

impl StoreWatch {
    /// The value held now.
    pub fn borrow(&self) -> StoreValue {
        self.shared.state().value.clone()
    }

    /// The value held now, marked seen.
    pub fn borrow_and_update(&mut self) -> StoreValue {
        let state = self.shared.state();
        self.seen = state.version;
        state.value.clone()
    }

    /// Whether a value this watcher has not seen was sent; an error once no more can come
    /// and none is unseen.
    pub fn has_changed(&self) -> Result<bool, WatchClosed> {
        let state = self.shared.state();
        if state.version != self.seen {
            Ok(true)
        } else if state.closed {
            Err(WatchClosed)
        } else {
            Ok(false)
        }
    }

    /// Resolves once a value this watcher has not seen was sent, and marks it seen; an error
    /// once no more can come.
    pub async fn changed(&mut self) -> Result<(), WatchClosed> {
        std::future::poll_fn(|cx| self.poll_changed(cx)).await
    }

    /// [`StoreWatch::changed`] as a poll: `cx` is woken by the next change unless ready.
    pub fn poll_changed(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WatchClosed>> {
        let mut state = self.shared.state();
        if state.version != self.seen {
            self.seen = state.version;
            return Poll::Ready(Ok(()));
        }
        if state.closed {
            return Poll::Ready(Err(WatchClosed));
        }
        if !state
            .waiting
            .iter()
            .any(|waiting| waiting.will_wake(cx.waker()))
        {
            // Room for one at a time: a key rarely has more than one watcher waiting.
            state.waiting.reserve_exact(1);
            state.waiting.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl std::fmt::Debug for StoreWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreWatch")
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn value(bytes: &[u8]) -> StoreValue {
        Some(Arc::from(bytes))
    }

    #[test]
    fn a_watcher_sees_the_value_and_each_change() {
        let watchers = StoreWatchers::new(value(b"one"));
        let mut watch = watchers.subscribe();
        assert_eq!(watch.borrow(), value(b"one"));
        assert_eq!(watch.has_changed(), Ok(false));
        assert_eq!(watchers.send_replace(value(b"two")), value(b"one"));
        assert_eq!(watch.has_changed(), Ok(true));
        assert_eq!(watch.borrow_and_update(), value(b"two"));
        assert_eq!(watch.has_changed(), Ok(false));
        // A watcher made after a change has seen it.
        let later = watchers.subscribe();
        assert_eq!(later.has_changed(), Ok(false));
    }

    #[test]
    fn receivers_are_counted() {
        let watchers = StoreWatchers::new(None);
        assert_eq!(watchers.receiver_count(), 0);
        let first = watchers.subscribe();
        let second = watchers.subscribe();
        assert_eq!(watchers.receiver_count(), 2);
        drop(first);
        assert_eq!(watchers.receiver_count(), 1);
        drop(second);
        assert_eq!(watchers.receiver_count(), 0);
    }

    #[test]
    fn an_unseen_value_outlives_the_channel() {
        let watchers = StoreWatchers::new(None);
        let watch = watchers.subscribe();
        watchers.send_replace(value(b"last"));
        drop(watchers);
        assert_eq!(watch.has_changed(), Ok(true));
        assert_eq!(watch.borrow(), value(b"last"));
        let unchanged = {
            let watchers = StoreWatchers::new(None);
            watchers.subscribe()
        };
        assert_eq!(unchanged.has_changed(), Err(WatchClosed));
    }

    #[tokio::test]
    async fn changed_wakes_every_waiting_watcher() {
        let watchers = StoreWatchers::new(None);
        let waiting: Vec<_> = (0..3)
            .map(|_| {
                let mut watch = watchers.subscribe();
                tokio::spawn(async move {
                    watch.changed().await.unwrap();
                    watch.borrow()
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        watchers.send_replace(value(b"new"));
        for task in waiting {
            assert_eq!(task.await.unwrap(), value(b"new"));
        }
    }

    #[test]
    fn a_watcher_polled_again_waits_once() {
        let watchers = StoreWatchers::new(None);
        let mut watch = watchers.subscribe();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(watch.poll_changed(&mut cx).is_pending());
        assert!(watch.poll_changed(&mut cx).is_pending());
        assert_eq!(watchers.shared.state().waiting.len(), 1);
        watchers.send_replace(value(b"new"));
        assert_eq!(watchers.shared.state().waiting.len(), 0);
        assert_eq!(watch.poll_changed(&mut cx), Poll::Ready(Ok(())));
    }

    #[tokio::test]
    async fn changed_returns_at_once_for_a_value_sent_before_and_fails_once_closed() {
        let watchers = StoreWatchers::new(None);
        let mut watch = watchers.subscribe();
        watchers.send_replace(value(b"a"));
        watchers.send_replace(value(b"b"));
        // Two values sent, one change seen: it is the latest value that counts.
        watch.changed().await.unwrap();
        assert_eq!(watch.borrow(), value(b"b"));
        let waiting = tokio::spawn(async move { watch.changed().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(watchers);
        assert_eq!(waiting.await.unwrap(), Err(WatchClosed));
    }
}
