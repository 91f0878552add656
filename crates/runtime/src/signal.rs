//! Waiting on a shared signal (retirement, shutdown) without paying for it on every poll.
//!
//! A connection task waits on its work and, beside it in a `select!`, on signals shared by
//! many connections: the binding's `retired` and `shutdown` tokens. `select!` polls every
//! branch each time the task wakes, and polling a `CancellationToken`'s `cancelled()` future
//! takes the token's mutex and its waiters' mutex, shared by every connection of the binding
//! (or of the process) and bouncing between cores, once or more per request.
//!
//! [`OnWake`] polls its future only after that future asked to be woken and was: the first
//! poll registers the future's waiter (one pass through the shared locks per connection), and
//! later polls of the task cost an uncontended atomic swap on connection-local memory until the
//! signal fires.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// `future`, polled only when its own waker fired since its last poll (and on the first poll).
pub struct OnWake<F> {
    future: Pin<Box<F>>,
    flag: Arc<Flag>,
    /// Wakes `flag`: what `future` is polled with.
    waker: Waker,
}

/// Set by the inner future's waker; forwards the wake to the task polling [`OnWake`].
struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future> OnWake<F> {
    pub fn new(future: F) -> Self {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Self {
            future: Box::pin(future),
            waker: Waker::from(flag.clone()),
            flag,
        }
    }
}

impl<F: Future> Future for OnWake<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Registered before the flag is read, so a wake between the two is not lost.
        self.flag.task.register(cx.waker());
        if !self.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let this = &mut *self;
        this.future
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Counts its polls; ready once `ready` is set and it is woken.
    struct Counted {
        polls: Arc<AtomicUsize>,
        ready: Arc<AtomicBool>,
        waker: Arc<AtomicWaker>,
    }

    impl Future for Counted {
        type Output = ();

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            self.waker.register(cx.waker());
            if self.ready.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    #[test]
    fn the_inner_future_is_polled_only_when_woken() {
        let polls = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(AtomicBool::new(false));
        let inner_waker = Arc::new(AtomicWaker::new());
        let mut gated = OnWake::new(Counted {
            polls: polls.clone(),
            ready: ready.clone(),
            waker: inner_waker.clone(),
        });
        let task = Waker::noop();
        let mut cx = Context::from_waker(task);
        for _ in 0..100 {
            assert!(Pin::new(&mut gated).poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        ready.store(true, Ordering::SeqCst);
        // Ready but not woken: still not polled.
        assert!(Pin::new(&mut gated).poll(&mut cx).is_pending());
        inner_waker.wake();
        assert!(Pin::new(&mut gated).poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_cancellation_reaches_the_waiting_task() {
        let token = tokio_util::sync::CancellationToken::new();
        let waiting = tokio::spawn(OnWake::new(token.clone().cancelled_owned()));
        tokio::task::yield_now().await;
        token.cancel();
        let ended = tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await;
        assert!(matches!(ended, Ok(Ok(()))));
    }
}
