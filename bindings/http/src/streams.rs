//! The HTTP/2 server's streams, run inside their connection's task.
//!
//! hyper's HTTP/2 server hands each request stream to an executor. Spawned as tokio tasks
//! (hyper-util's `TokioExecutor`), every stream costs a task allocation, and every wake
//! between the connection and its streams (a request's data arriving, a response ready to
//! send) goes through the scheduler. A connection is served on one worker anyway
//! (thread-per-core), so its streams are polled by the connection's own task instead: the
//! connection future is wrapped in [`WithStreams`], and [`StreamExecutor`] is the executor the
//! connection is built with.
//!
//! When the connection ends, streams still running are moved to a task of their own
//! ([`WithStreams::release`]), as spawned streams would go on: an exchange whose client went
//! away still finishes what it started upstream. A stream that panics ends alone, as a task
//! of its own would.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};

type StreamFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The executor of one connection's streams: what it is given waits for the connection's
/// [`WithStreams`] to poll it.
#[derive(Clone, Default)]
pub(crate) struct StreamExecutor(Arc<Mutex<Handed>>);

#[derive(Default)]
struct Handed {
    streams: Vec<StreamFuture>,
    /// The connection's task, when it waits and a stream could be handed over outside its
    /// poll (hyper hands them over while the connection is polled).
    waker: Option<Waker>,
}

impl StreamExecutor {
    fn handed(&self) -> MutexGuard<'_, Handed> {
        // Nothing panics while holding the lock; a poisoned one still holds valid streams.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        // A stream that panics ends alone, as a task of its own would, not its connection.
        let stream = AssertUnwindSafe(stream).catch_unwind().map(drop);
        let mut handed = self.handed();
        handed.streams.push(Box::pin(stream));
        if let Some(waker) = handed.waker.take() {
            waker.wake();
        }
    }
}

/// A connection future polled together with the streams it hands to its [`StreamExecutor`];
/// ready when the connection is.
pub(crate) struct WithStreams<C> {
    connection: Pin<Box<C>>,
    executor: StreamExecutor,
    streams: FuturesUnordered<StreamFuture>,
}

impl<C: Future> WithStreams<C> {
    /// `connection`, built with `executor`.
    pub(crate) fn new(connection: C, executor: StreamExecutor) -> Self {
        Self {
            connection: Box::pin(connection),
            executor,
            streams: FuturesUnordered::new(),
        }
    }

    /// The connection, to ask it to finish.
    pub(crate) fn connection(&mut self) -> Pin<&mut C> {
        self.connection.as_mut()
    }

    /// Moves the streams still running to a task of their own (once the connection ended).
    pub(crate) fn release(mut self) {
        self.adopt();
        if !self.streams.is_empty() {
            let mut streams = self.streams;
            tokio::spawn(async move { while streams.next().await.is_some() {} });
        }
    }

    fn adopt(&mut self) {
        let handed = std::mem::take(&mut self.executor.handed().streams);
        self.streams.extend(handed);
    }
}

impl<C: Future> Future for WithStreams<C> {
    type Output = C::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = &mut *self;
        if let Poll::Ready(output) = this.connection.as_mut().poll(cx) {
            return Poll::Ready(output);
        }
        this.adopt();
        // Ready(None) once every stream is done; the set takes new ones after that.
        while let Poll::Ready(Some(())) = this.streams.poll_next_unpin(cx) {}
        let mut handed = this.executor.handed();
        if handed.streams.is_empty() {
            if !handed
                .waker
                .as_ref()
                .is_some_and(|waker| waker.will_wake(cx.waker()))
            {
                handed.waker = Some(cx.waker().clone());
            }
            Poll::Pending
        } else {
            // Handed over while the streams were polled: poll again soon.
            handed.waker = None;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Executor;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn streams_run_in_the_connection_task_and_a_panicking_one_ends_alone() {
        let executor = StreamExecutor::default();
        let finished = Arc::new(AtomicBool::new(false));
        let (end, ended) = tokio::sync::oneshot::channel::<()>();
        // A connection that hands over two streams, then ends when told.
        let connection = {
            let executor = executor.clone();
            let finished = finished.clone();
            async move {
                executor.execute(async { panic!("a stream's bug") });
                executor.execute(async move {
                    tokio::task::yield_now().await;
                    finished.store(true, Ordering::SeqCst);
                    let _ = end.send(());
                });
                let _ = ended.await;
                "closed"
            }
        };
        let with_streams = WithStreams::new(connection, executor);
        assert_eq!(with_streams.await, "closed");
        assert!(finished.load(Ordering::SeqCst));
    }
}
