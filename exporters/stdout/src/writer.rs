//! The one thread that writes event lines to standard output.
//!
//! Events are raised on the threads that serve streams; writing to stdout can block (a full
//! pipe, a slow terminal), so callers only queue a line and a dedicated thread writes it. When
//! the queue is full the line is dropped and counted, never waited for; the count is reported
//! through `tracing` once the writer catches up.

use std::io::{self, Write};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

/// Lines waiting for the writer thread.
const QUEUE: usize = 8192;
/// Most lines written under one stdout lock, so a steady flow of events does not keep other
/// writers to stdout out.
const BATCH: usize = 256;

enum Message {
    Line(String),
    /// Answered once every line queued before it is written and flushed.
    Flush(mpsc::Sender<()>),
}

static WRITER: OnceLock<Option<SyncSender<Message>>> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);

fn writer() -> Option<&'static SyncSender<Message>> {
    WRITER
        .get_or_init(|| {
            let (sender, receiver) = mpsc::sync_channel(QUEUE);
            match std::thread::Builder::new()
                .name("zilla-stdout".into())
                .spawn(move || write_lines(receiver))
            {
                Ok(_) => Some(sender),
                Err(error) => {
                    tracing::error!(%error, "cannot start the stdout event writer; events will not be printed");
                    None
                }
            }
        })
        .as_ref()
}

/// Queues one line (without its line end) for stdout. Never blocks.
pub(crate) fn submit(line: String) {
    let Some(writer) = writer() else {
        return;
    };
    match writer.try_send(Message::Line(line)) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
        Err(TrySendError::Disconnected(_)) => {}
    }
}

/// Waits until every line queued so far is written to stdout and flushed, or `timeout` passes;
/// returns whether it was. Meant for the end of the process, whose exit would lose what is
/// still queued.
pub fn flush(timeout: Duration) -> bool {
    let Some(writer) = WRITER.get().and_then(Option::as_ref) else {
        return true;
    };
    let deadline = Instant::now() + timeout;
    let (done, written) = mpsc::channel();
    let mut message = Message::Flush(done);
    loop {
        match writer.try_send(message) {
            Ok(()) => break,
            Err(TrySendError::Disconnected(_)) => return false,
            Err(TrySendError::Full(returned)) => {
                if Instant::now() >= deadline {
                    return false;
                }
                message = returned;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    written
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .is_ok()
}

fn write_lines(receiver: Receiver<Message>) {
    let stdout = io::stdout();
    let mut failing = false;
    while let Ok(first) = receiver.recv() {
        let mut flushed = Vec::new();
        {
            // Written through `io::Stdout` rather than `print!`, which panics when stdout is
            // closed; this thread is the only place events reach stdout. What is already
            // queued goes out under one lock, then one flush.
            let mut out = stdout.lock();
            let mut result = Ok(());
            let mut next = Some(first);
            let mut batched = 0;
            while let Some(message) = next {
                batched += 1;
                match message {
                    Message::Line(line) => {
                        if result.is_ok() {
                            result = out
                                .write_all(line.as_bytes())
                                .and_then(|()| out.write_all(b"\n"));
                        }
                    }
                    Message::Flush(done) => flushed.push(done),
                }
                next = if batched < BATCH {
                    receiver.try_recv().ok()
                } else {
                    None
                };
            }
            result = result.and_then(|()| out.flush());
            match result {
                Ok(()) => failing = false,
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(%error, "writing events to stdout failed");
                }
                Err(_) => {}
            }
        }
        for done in flushed {
            let _ = done.send(());
        }
        let dropped = DROPPED.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "stdout was not keeping up; events were not printed"
            );
        }
    }
}
