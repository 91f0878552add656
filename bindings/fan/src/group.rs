//! One fan group: its members, and the task that owns the shared exit stream.
//!
//! Members send up through one bounded channel that the exit task drains into the exit stream.
//! Each member has its own bounded queue of chunks from the exit. The exit task reads the exit
//! stream only while some member's queue is short ([`MEMBER_PACE`]), so the fastest member sets
//! the pace; it hands each chunk to every member without waiting, and drops a member whose queue
//! is full ([`MEMBER_QUEUE`]), i.e. one that fell far behind the fastest. No member can hold the
//! others back, and what the group holds is bounded.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zilla_engine::{ByteStream, BytesHandler, StreamError, StreamInfo};

/// Most bytes read at once from a member or from the exit: one queued chunk.
const CHUNK: usize = 16 * 1024;
/// Chunks the group keeps for one member (at most about 1 MiB with [`CHUNK`]); a member whose
/// queue is full when another chunk arrives is dropped.
const MEMBER_QUEUE: usize = 64;
/// The exit stream is read only while some member has fewer chunks than this queued. So a
/// member is dropped only once it is `MEMBER_QUEUE - MEMBER_PACE` chunks behind the fastest
/// member, never because of a short stall of its own while the others wait too.
const MEMBER_PACE: usize = 8;
/// Chunks from members waiting for the exit stream; when full, members wait.
const UPSTREAM_QUEUE: usize = 64;
/// An exit stream that ends sooner than this after opening is reopened after a delay, so an
/// exit that keeps closing at once is not hammered.
const QUICK_END: Duration = Duration::from_secs(1);
const REOPEN_DELAY_FIRST: Duration = Duration::from_millis(50);
const REOPEN_DELAY_MAX: Duration = Duration::from_secs(2);
/// How long closing a stream may take before it is simply dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The group of one `fan` binding.
pub(crate) struct Group {
    qname: String,
    exit: Arc<dyn BytesHandler>,
    state: Mutex<State>,
    /// Signalled when a member takes a chunk from its queue or leaves: the exit task may be
    /// waiting for room.
    room: Notify,
    lifecycle: OnceLock<Lifecycle>,
}

/// What the engine gives the binding when it starts.
struct Lifecycle {
    retired: CancellationToken,
    tasks: TaskTracker,
}

#[derive(Default)]
struct State {
    members: HashMap<u64, Member>,
    next_member: u64,
    /// Into the current exit task; present exactly while there are members.
    upstream: Option<mpsc::Sender<Bytes>>,
    /// Counts exit tasks, so that a task outlived by its members never touches a newer group.
    generation: u64,
}

struct Member {
    peer: Option<SocketAddr>,
    replies: mpsc::Sender<Bytes>,
    ending: Arc<Ending>,
}

/// Set by the group when it ends a member; the member's task then stops at once.
#[derive(Default)]
struct Ending {
    reason: OnceLock<EndReason>,
    signal: CancellationToken,
}

#[derive(Debug, Clone)]
enum EndReason {
    FellBehind,
    ExitFailed(String),
}

impl Member {
    fn end(&self, reason: EndReason) {
        // A member can only be ended once: it is removed from the group at the same time.
        let _ = self.ending.reason.set(reason);
        self.ending.signal.cancel();
    }
}

/// Why a member's stream stopped.
enum MemberEnd {
    /// It closed its sending side.
    Closed,
    /// Reading from or writing to it failed.
    Failed(io::Error),
    /// The group ended it (see [`Ending`]).
    Ended,
    /// The binding was retired.
    Retired,
}

/// Why an exit stream stopped.
enum ExitEnd {
    /// Every member left and what they sent was written.
    MembersLeft,
    /// The exit stream ended or failed.
    Closed,
}

/// Removes a member from the group however its task ends, cancellation included.
struct Membership {
    group: Arc<Group>,
    id: u64,
}

impl Drop for Membership {
    fn drop(&mut self) {
        let mut state = self.group.lock();
        state.members.remove(&self.id);
        if state.members.is_empty() {
            // Dropping the group's sender lets the exit task finish once members' data is out.
            state.upstream = None;
        }
        drop(state);
        self.group.room.notify_one();
    }
}

struct Joined {
    membership: Membership,
    replies: mpsc::Receiver<Bytes>,
    upstream: mpsc::Sender<Bytes>,
    ending: Arc<Ending>,
}

impl Group {
    pub(crate) fn new(qname: String, exit: Arc<dyn BytesHandler>) -> Arc<Self> {
        Arc::new(Self {
            qname,
            exit,
            state: Mutex::new(State::default()),
            room: Notify::new(),
            lifecycle: OnceLock::new(),
        })
    }

    pub(crate) fn start(&self, retired: CancellationToken, tasks: TaskTracker) {
        // The engine starts a binding once; a second call has nothing to add.
        let _ = self.lifecycle.set(Lifecycle { retired, tasks });
    }

    /// Serves one member until it leaves or is ended.
    pub(crate) async fn serve(self: Arc<Self>, stream: ByteStream) -> Result<(), StreamError> {
        let retired = self.retired();
        if retired.is_cancelled() {
            return Err(StreamError::Stopped);
        }
        let peer = stream.info.source;
        let Joined {
            membership,
            replies,
            upstream,
            ending,
        } = self.join(peer);
        tracing::debug!(binding = %self.qname, member = membership.id, ?peer, "member joined");
        let (reader, mut writer) = tokio::io::split(stream.io);
        let end = tokio::select! {
            end = forward(reader, upstream) => end,
            end = deliver(replies, &mut writer, &self.room) => end,
            () = ending.signal.cancelled() => MemberEnd::Ended,
            () = retired.cancelled() => MemberEnd::Retired,
        };
        // Leave before closing, so nothing more is queued for this member.
        let id = membership.id;
        drop(membership);
        tracing::debug!(binding = %self.qname, member = id, ?peer, "member left");
        if let Some(reason) = ending.reason.get() {
            return Err(match reason {
                EndReason::FellBehind => StreamError::Io(io::Error::other(
                    "fan member fell too far behind and was dropped",
                )),
                EndReason::ExitFailed(message) => StreamError::Upstream(message.clone()),
            });
        }
        match end {
            MemberEnd::Retired => Err(StreamError::Stopped),
            MemberEnd::Failed(error) => Err(StreamError::Io(error)),
            MemberEnd::Closed | MemberEnd::Ended => {
                let _ = tokio::time::timeout(CLOSE_GRACE, writer.shutdown()).await;
                Ok(())
            }
        }
    }

    fn join(self: &Arc<Self>, peer: Option<SocketAddr>) -> Joined {
        let (replies_sender, replies) = mpsc::channel(MEMBER_QUEUE);
        let ending = Arc::new(Ending::default());
        let mut state = self.lock();
        let id = state.next_member;
        state.next_member = id.wrapping_add(1);
        state.members.insert(
            id,
            Member {
                peer,
                replies: replies_sender,
                ending: ending.clone(),
            },
        );
        let upstream = match &state.upstream {
            Some(upstream) => upstream.clone(),
            None => {
                let (sender, receiver) = mpsc::channel(UPSTREAM_QUEUE);
                state.generation = state.generation.wrapping_add(1);
                state.upstream = Some(sender.clone());
                self.spawn(self.clone().run_exit(receiver, state.generation));
                sender
            }
        };
        drop(state);
        Joined {
            membership: Membership {
                group: self.clone(),
                id,
            },
            replies,
            upstream,
            ending,
        }
    }

    /// Owns the exit stream of one generation: opens it, reopens it while members remain, and
    /// closes it when they have all left.
    async fn run_exit(self: Arc<Self>, mut upstream: mpsc::Receiver<Bytes>, generation: u64) {
        let retired = self.retired();
        let mut quick_ends: u32 = 0;
        loop {
            let connected = tokio::select! {
                () = retired.cancelled() => return,
                connected = self.exit.connect(StreamInfo::default()) => connected,
            };
            let stream = match connected {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(binding = %self.qname, %error, "exit stream failed to open; closing the group");
                    let message = match error {
                        StreamError::Upstream(message) => message,
                        other => other.to_string(),
                    };
                    self.fail(generation, message);
                    return;
                }
            };
            tracing::debug!(binding = %self.qname, "exit stream opened");
            let opened = Instant::now();
            let (mut reader, mut writer) = tokio::io::split(stream.io);
            let end = tokio::select! {
                () = retired.cancelled() => return,
                end = send_upstream(&mut upstream, &mut writer) => end,
                end = self.fan_out(&mut reader, generation) => end,
            };
            if let ExitEnd::MembersLeft = end {
                tracing::debug!(binding = %self.qname, "last member left; closing the exit stream");
                let _ = tokio::time::timeout(CLOSE_GRACE, writer.shutdown()).await;
                return;
            }
            drop((reader, writer));
            if upstream.is_closed() && upstream.is_empty() {
                return;
            }
            if opened.elapsed() < QUICK_END {
                let delay = REOPEN_DELAY_FIRST
                    .saturating_mul(1 << quick_ends.min(8))
                    .min(REOPEN_DELAY_MAX);
                quick_ends = quick_ends.saturating_add(1);
                tracing::debug!(binding = %self.qname, ?delay, "exit stream ended early; reopening after a delay");
                tokio::select! {
                    () = retired.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                if upstream.is_closed() && upstream.is_empty() {
                    return;
                }
            } else {
                quick_ends = 0;
                tracing::debug!(binding = %self.qname, "exit stream ended; reopening");
            }
        }
    }

    /// Reads the exit stream and offers every chunk to every member of `generation`.
    async fn fan_out<R: AsyncRead + Unpin>(&self, reader: &mut R, generation: u64) -> ExitEnd {
        let mut buffer = BytesMut::new();
        loop {
            self.wait_for_room(generation).await;
            buffer.reserve(CHUNK);
            match reader.read_buf(&mut buffer).await {
                Ok(0) => return ExitEnd::Closed,
                Ok(_) => self.broadcast(buffer.split().freeze(), generation),
                Err(error) => {
                    tracing::debug!(binding = %self.qname, %error, "reading the exit stream failed");
                    return ExitEnd::Closed;
                }
            }
        }
    }

    /// Returns once some member of `generation` has fewer than [`MEMBER_PACE`] chunks queued,
    /// or there is no member to wait for.
    async fn wait_for_room(&self, generation: u64) {
        loop {
            let waiting = {
                let state = self.lock();
                state.generation == generation
                    && !state.members.is_empty()
                    && state
                        .members
                        .values()
                        .all(|member| member.replies.capacity() <= MEMBER_QUEUE - MEMBER_PACE)
            };
            if !waiting {
                return;
            }
            // A permit stored by a signal sent since the check makes this return at once.
            self.room.notified().await;
        }
    }

    fn broadcast(&self, chunk: Bytes, generation: u64) {
        let mut state = self.lock();
        if state.generation != generation {
            return;
        }
        let qname = &self.qname;
        state
            .members
            .retain(|id, member| match member.replies.try_send(chunk.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    tracing::warn!(binding = %qname, member = id, peer = ?member.peer, "member fell too far behind; dropping it");
                    member.end(EndReason::FellBehind);
                    false
                }
                Err(TrySendError::Closed(_)) => false,
            });
        if state.members.is_empty() {
            state.upstream = None;
        }
    }

    /// Ends every member of `generation`: its exit cannot be reached.
    fn fail(&self, generation: u64, message: String) {
        let mut state = self.lock();
        if state.generation != generation {
            return;
        }
        for member in state.members.values() {
            member.end(EndReason::ExitFailed(message.clone()));
        }
        state.members.clear();
        state.upstream = None;
    }

    fn retired(&self) -> CancellationToken {
        self.lifecycle
            .get()
            .map(|lifecycle| lifecycle.retired.clone())
            .unwrap_or_default()
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        match self.lifecycle.get() {
            Some(lifecycle) => {
                lifecycle.tasks.spawn(task);
            }
            None => {
                tokio::spawn(task);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock; if something ever did, the map is still sound.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Member → group: reads the member and queues its bytes for the exit stream.
async fn forward<R: AsyncRead + Unpin>(mut reader: R, upstream: mpsc::Sender<Bytes>) -> MemberEnd {
    let mut buffer = BytesMut::new();
    loop {
        buffer.reserve(CHUNK);
        match reader.read_buf(&mut buffer).await {
            Ok(0) => return MemberEnd::Closed,
            Ok(_) => {}
            Err(error) => return MemberEnd::Failed(error),
        }
        if upstream.send(buffer.split().freeze()).await.is_err() {
            return MemberEnd::Ended;
        }
    }
}

/// Group → member: writes what the exit sent, in order.
async fn deliver<W: AsyncWrite + Unpin>(
    mut replies: mpsc::Receiver<Bytes>,
    writer: &mut W,
    room: &Notify,
) -> MemberEnd {
    while let Some(chunk) = replies.recv().await {
        room.notify_one();
        if let Err(error) = writer.write_all(&chunk).await {
            return MemberEnd::Failed(error);
        }
        if replies.is_empty()
            && let Err(error) = writer.flush().await
        {
            return MemberEnd::Failed(error);
        }
    }
    MemberEnd::Ended
}

/// Group → exit: writes members' bytes to the exit stream.
async fn send_upstream<W: AsyncWrite + Unpin>(
    upstream: &mut mpsc::Receiver<Bytes>,
    writer: &mut W,
) -> ExitEnd {
    while let Some(chunk) = upstream.recv().await {
        if let Err(error) = writer.write_all(&chunk).await {
            tracing::debug!(%error, "writing the exit stream failed");
            return ExitEnd::Closed;
        }
        if upstream.is_empty()
            && let Err(error) = writer.flush().await
        {
            tracing::debug!(%error, "flushing the exit stream failed");
            return ExitEnd::Closed;
        }
    }
    ExitEnd::MembersLeft
}
