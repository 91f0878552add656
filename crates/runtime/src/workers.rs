//! Connection workers: thread-per-core, as nginx, Envoy and Zilla itself run.
//!
//! [`start`] starts N OS threads, each driving its own single-threaded (`current_thread`)
//! tokio runtime: its own epoll, timer wheel and run queue. A listening binding hands each
//! accepted connection to the next worker in turn ([`spawn`]), and everything the connection
//! does then stays on that thread: its tasks (`tokio::spawn` inside a worker spawns on that
//! worker), its timers, and the origin connections it opens. No task migrates between cores and
//! no wake-up crosses threads on the request path.
//!
//! Shared state (the Kafka caches, guards, metrics, the config) stays shared: it is `Sync` and
//! reached through `Arc`s, as before. Work that belongs to no connection (accept loops, config
//! reload, metrics files, background tasks a binding spawns from `start`) runs on the process's
//! main runtime. Without [`start`] (unit tests, embedders), [`spawn`] spawns on the current
//! runtime, as `tokio::spawn` does.
//!
//! A worker blocks only its own connections: code on a worker must not block the thread
//! (`block_in_place` is unavailable there; `spawn_blocking` works). Each worker's blocking pool
//! (file reads of the Kafka cache, validation of large bodies) has at most
//! [`BLOCKING_THREADS_PER_WORKER`] threads; more work waits for one, so a burst of cold disk
//! reads cannot start hundreds of threads.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// The most threads a worker's blocking pool runs at once (tokio's default is 512).
pub const BLOCKING_THREADS_PER_WORKER: usize = 32;

/// The running workers: set once per process.
static WORKERS: OnceLock<Workers> = OnceLock::new();

thread_local! {
    /// The index of the worker running on this thread, if it is one.
    static CURRENT: Cell<Option<usize>> = const { Cell::new(None) };
}

struct Workers {
    handles: Vec<Handle>,
    /// The next worker to hand a connection to.
    next: AtomicUsize,
}

/// Starts `count` workers (at least one), named `zilla-worker-<index>`. Returns once every
/// worker's runtime is running. Only the first call in a process starts anything; later calls
/// return at once.
pub fn start(count: usize) -> io::Result<()> {
    if WORKERS.get().is_some() {
        return Ok(());
    }
    let count = count.max(1);
    let mut handles = Vec::with_capacity(count);
    for index in 0..count {
        // Drives the tasks spawned onto this worker for the life of the process.
        let handle = thread_runtime(
            format!("zilla-worker-{index}"),
            move || CURRENT.with(|current| current.set(Some(index))),
            std::future::pending::<()>(),
        )?;
        handles.push(handle);
    }
    // A concurrent first call may have won; its workers serve, these threads stay parked.
    let _ = WORKERS.set(Workers {
        handles,
        next: AtomicUsize::new(0),
    });
    Ok(())
}

/// Starts an OS thread named `name` driving its own `current_thread` runtime until `run`
/// ends, and returns that runtime's handle once it runs. `setup` runs on the thread first, so
/// nothing spawned through the handle runs before it.
pub fn thread_runtime(
    name: String,
    setup: impl FnOnce() + Send + 'static,
    run: impl Future<Output = ()> + Send + 'static,
) -> io::Result<Handle> {
    let (sender, receiver) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new().name(name).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(BLOCKING_THREADS_PER_WORKER)
            .on_thread_unpark(crate::time::refresh_recent)
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                let _ = sender.send(Err(error));
                return;
            }
        };
        setup();
        let _ = sender.send(Ok(runtime.handle().clone()));
        runtime.block_on(run);
    })?;
    receiver
        .recv()
        .map_err(|_| io::Error::other("a runtime thread ended while starting"))?
}

/// How many workers run: at least one (the current runtime, when none were started).
pub fn count() -> usize {
    WORKERS.get().map_or(1, |workers| workers.handles.len())
}

/// The index of the worker this thread is, or `None` off the workers.
pub fn current() -> Option<usize> {
    CURRENT.with(Cell::get)
}

/// The index, below [`count`], of the per-worker state this thread uses: its worker's, or 0
/// off the workers.
pub fn slot() -> usize {
    current().unwrap_or(0)
}

/// Spawns `future` on the next worker in turn, or on the current runtime when no workers run.
/// Must be called within a tokio runtime when no workers run.
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match WORKERS.get() {
        Some(workers) => {
            let index = workers.next.fetch_add(1, Ordering::Relaxed) % workers.handles.len();
            workers.handles[index].spawn(future)
        }
        None => tokio::spawn(future),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Off the workers (and with none started in this test process), spawning uses the
    /// current runtime and there is one slot.
    #[tokio::test]
    async fn without_workers_the_current_runtime_serves() {
        assert_eq!(current(), None);
        assert_eq!(slot(), 0);
        let on = spawn(async { std::thread::current().id() }).await;
        assert!(on.is_ok());
    }
}
