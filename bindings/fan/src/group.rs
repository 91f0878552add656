//! One fan group: its members, and the task that owns the shared exit session.
//!
//! Members send up through one channel whose bytes are bounded by a semaphore; the exit task
//! hands that channel to the exit session as its incoming messages. Each member has its own
//! queue of messages from the exit, bounded in bytes. The exit task reads the exit session only
//! while some member's queue is short ([`MEMBER_PACE`]), so the fastest member sets the pace;
//! it hands each message to every member without waiting, and drops a member whose queue is
//! full ([`MEMBER_QUEUE`]), i.e. one that fell far behind the fastest. No member can hold the
//! others back, and what the group holds is bounded.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zilla_engine::messages::{
    Message, MessageHandler, MessageStream, Session as Messages, chunks, write_all,
};
use zilla_engine::{ByteStream, StreamError, StreamInfo};

/// Bytes the group keeps queued for one member; a member whose queue would grow past this
/// when another message arrives is dropped (a member with an empty queue always takes one).
const MEMBER_QUEUE: usize = 1024 * 1024;
/// The exit session is read only while some member has fewer bytes than this queued. So a
/// member is dropped only once it is `MEMBER_QUEUE - MEMBER_PACE` bytes behind the fastest
/// member, never because of a short stall of its own while the others wait too.
const MEMBER_PACE: usize = 128 * 1024;
/// Bytes from members waiting for the exit session; when they are all taken, members wait.
const UPSTREAM_BUDGET: usize = 1024 * 1024;
/// What a message costs besides its payload, so that empty messages are bounded too.
const MESSAGE_OVERHEAD: usize = 64;
/// An exit session that ends sooner than this after opening is reopened after a delay, so an
/// exit that keeps closing at once is not hammered.
const QUICK_END: Duration = Duration::from_secs(1);
const REOPEN_DELAY_FIRST: Duration = Duration::from_millis(50);
const REOPEN_DELAY_MAX: Duration = Duration::from_secs(2);

fn cost(message: &Message) -> usize {
    message.payload.len().saturating_add(MESSAGE_OVERHEAD)
}

/// A member's message on its way to the exit, holding its share of [`UPSTREAM_BUDGET`].
type Upward = (Message, OwnedSemaphorePermit);

/// The group of one `fan` binding.
pub(crate) struct Group {
    qname: String,
    exit: Arc<dyn MessageHandler>,
    state: Mutex<State>,
    upstream_budget: Arc<Semaphore>,
    /// Signalled when a member takes a message from its queue or leaves: the exit task may be
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
    upstream: Option<mpsc::UnboundedSender<Upward>>,
    /// Counts exit tasks, so that a task outlived by its members never touches a newer group.
    generation: u64,
}

struct Member {
    peer: Option<SocketAddr>,
    replies: mpsc::UnboundedSender<Message>,
    /// Bytes queued in `replies` (see [`cost`]).
    queued: Arc<AtomicUsize>,
    ending: Arc<Ending>,
}

/// Set by the group when it ends a member; the member's session then stops at once.
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

impl EndReason {
    fn error(&self) -> StreamError {
        match self {
            EndReason::FellBehind => StreamError::Io(std::io::Error::other(
                "fan member fell too far behind and was dropped",
            )),
            EndReason::ExitFailed(message) => StreamError::Upstream(message.clone()),
        }
    }
}

impl Ending {
    /// The error a member ended by the group gets.
    fn error(&self) -> StreamError {
        self.reason
            .get()
            .map_or(StreamError::Stopped, EndReason::error)
    }
}

impl Member {
    fn end(&self, reason: EndReason) {
        // A member can only be ended once: it is removed from the group at the same time.
        let _ = self.ending.reason.set(reason);
        self.ending.signal.cancel();
    }
}

/// Why an exit session stopped.
enum ExitEnd {
    /// Every member left and what they sent was taken by the exit.
    MembersLeft,
    /// The exit session ended or failed.
    Closed,
}

/// Removes a member from the group however its session ends, cancellation included.
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
        tracing::debug!(binding = %self.group.qname, member = self.id, "member left");
    }
}

/// One member's session: what it sends goes up, what the exit answers comes down.
struct Session {
    membership: Option<Membership>,
    incoming: MessageStream,
    /// A message read from the member, waiting for upstream budget.
    pending: Option<Message>,
    replies: mpsc::UnboundedReceiver<Message>,
    queued: Arc<AtomicUsize>,
    upstream: mpsc::UnboundedSender<Upward>,
    ending: Arc<Ending>,
    retired: CancellationToken,
}

impl Session {
    /// The next message for the member; `None` once it left. Reads the member while waiting,
    /// so sending and receiving never hold each other up.
    async fn next(&mut self) -> Option<Result<Message, StreamError>> {
        let group = self.membership.as_ref()?.group.clone();
        let item = loop {
            let budget = self
                .pending
                .as_ref()
                .map_or(0, |message| cost(message).min(UPSTREAM_BUDGET));
            tokio::select! {
                biased;
                () = self.ending.signal.cancelled() => break Some(Err(self.ending.error())),
                () = self.retired.cancelled() => break Some(Err(StreamError::Stopped)),
                reply = self.replies.recv() => {
                    let Some(reply) = reply else { break None };
                    self.queued.fetch_sub(cost(&reply), Ordering::Relaxed);
                    group.room.notify_one();
                    return Some(Ok(reply));
                }
                permit = group
                    .upstream_budget
                    .clone()
                    .acquire_many_owned(u32::try_from(budget).unwrap_or(u32::MAX)),
                    if self.pending.is_some() =>
                {
                    let (Ok(permit), Some(message)) = (permit, self.pending.take()) else {
                        break None;
                    };
                    if self.upstream.send((message, permit)).is_err() {
                        break None;
                    }
                }
                item = self.incoming.next(), if self.pending.is_none() => match item {
                    Some(Ok(message)) => self.pending = Some(message),
                    Some(Err(error)) => break Some(Err(error)),
                    // As in Zilla, a member that closed its sending side receives nothing more.
                    None => break None,
                },
            }
        };
        // Leave at once, so nothing more is queued for this member.
        self.membership = None;
        item
    }
}

impl Group {
    pub(crate) fn new(qname: String, exit: Arc<dyn MessageHandler>) -> Arc<Self> {
        Arc::new(Self {
            qname,
            exit,
            state: Mutex::new(State::default()),
            upstream_budget: Arc::new(Semaphore::new(UPSTREAM_BUDGET)),
            room: Notify::new(),
            lifecycle: OnceLock::new(),
        })
    }

    pub(crate) fn start(&self, retired: CancellationToken, tasks: TaskTracker) {
        // The engine starts a binding once; a second call has nothing to add.
        let _ = self.lifecycle.set(Lifecycle { retired, tasks });
    }

    /// Serves a byte stream as a member. Unlike a messages caller, which may stop pulling,
    /// the member's stream is closed as soon as the group ends it (it fell behind, the exit
    /// failed, the binding was retired), even while a write to a peer that does not read is
    /// pending.
    pub(crate) async fn serve_bytes(
        self: Arc<Self>,
        stream: ByteStream,
    ) -> Result<(), StreamError> {
        let (reader, mut writer) = tokio::io::split(stream.io);
        let retired = self.retired();
        let (outgoing, ending) = self.join_member(&stream.info, chunks(reader))?;
        tokio::select! {
            written = write_all(outgoing, &mut writer) => written,
            () = ending.signal.cancelled() => Err(ending.error()),
            () = retired.cancelled() => Err(StreamError::Stopped),
        }
    }

    /// Joins a member: its messages go to the exit, and the returned stream carries what the
    /// exit answers until the member leaves or is ended.
    pub(crate) fn join(
        self: &Arc<Self>,
        info: &StreamInfo,
        incoming: MessageStream,
    ) -> Result<MessageStream, StreamError> {
        self.join_member(info, incoming)
            .map(|(outgoing, _)| outgoing)
    }

    fn join_member(
        self: &Arc<Self>,
        info: &StreamInfo,
        incoming: MessageStream,
    ) -> Result<(MessageStream, Arc<Ending>), StreamError> {
        let retired = self.retired();
        if retired.is_cancelled() {
            return Err(StreamError::Stopped);
        }
        let peer = info.source;
        let (replies_sender, replies) = mpsc::unbounded_channel();
        let ending = Arc::new(Ending::default());
        let queued = Arc::new(AtomicUsize::new(0));
        let mut state = self.lock();
        let id = state.next_member;
        state.next_member = id.wrapping_add(1);
        state.members.insert(
            id,
            Member {
                peer,
                replies: replies_sender,
                queued: queued.clone(),
                ending: ending.clone(),
            },
        );
        let upstream = match &state.upstream {
            Some(upstream) => upstream.clone(),
            None => {
                let (sender, receiver) = mpsc::unbounded_channel();
                state.generation = state.generation.wrapping_add(1);
                state.upstream = Some(sender.clone());
                self.spawn(self.clone().run_exit(receiver, state.generation));
                sender
            }
        };
        drop(state);
        tracing::debug!(binding = %self.qname, member = id, ?peer, "member joined");
        let session = Session {
            membership: Some(Membership {
                group: self.clone(),
                id,
            }),
            incoming,
            pending: None,
            replies,
            queued,
            upstream,
            ending: ending.clone(),
            retired,
        };
        let outgoing = futures_util::stream::unfold(session, |mut session| async move {
            session.next().await.map(|item| (item, session))
        });
        Ok((Box::pin(outgoing), ending))
    }

    /// Owns the exit session of one generation: opens it, reopens it while members remain,
    /// and closes it when they have all left.
    async fn run_exit(self: Arc<Self>, upstream: mpsc::UnboundedReceiver<Upward>, generation: u64) {
        let retired = self.retired();
        let upstream = Arc::new(tokio::sync::Mutex::new(upstream));
        let mut quick_ends: u32 = 0;
        loop {
            let drained = CancellationToken::new();
            let incoming = upward(upstream.clone(), drained.clone());
            let opened = tokio::select! {
                () = retired.cancelled() => return,
                opened = self.exit.handle(StreamInfo::default(), Messages::new(incoming)) => opened,
            };
            let outgoing = match opened {
                Ok(outgoing) => outgoing.messages,
                Err(error) => {
                    tracing::warn!(binding = %self.qname, %error, "exit session failed to open; closing the group");
                    let message = match error {
                        StreamError::Upstream(message) => message,
                        other => other.to_string(),
                    };
                    self.fail(generation, message);
                    return;
                }
            };
            tracing::debug!(binding = %self.qname, "exit session opened");
            let opened = Instant::now();
            let end = tokio::select! {
                () = retired.cancelled() => return,
                () = drained.cancelled() => ExitEnd::MembersLeft,
                end = self.fan_out(outgoing, generation) => end,
            };
            if let ExitEnd::MembersLeft = end {
                tracing::debug!(binding = %self.qname, "last member left; closing the exit session");
                return;
            }
            if members_left(&upstream).await {
                return;
            }
            if opened.elapsed() < QUICK_END {
                let delay = REOPEN_DELAY_FIRST
                    .saturating_mul(1 << quick_ends.min(8))
                    .min(REOPEN_DELAY_MAX);
                quick_ends = quick_ends.saturating_add(1);
                tracing::debug!(binding = %self.qname, ?delay, "exit session ended early; reopening after a delay");
                tokio::select! {
                    () = retired.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                if members_left(&upstream).await {
                    return;
                }
            } else {
                quick_ends = 0;
                tracing::debug!(binding = %self.qname, "exit session ended; reopening");
            }
        }
    }

    /// Reads the exit session and offers every message to every member of `generation`.
    async fn fan_out(&self, mut outgoing: MessageStream, generation: u64) -> ExitEnd {
        loop {
            self.wait_for_room(generation).await;
            match outgoing.next().await {
                Some(Ok(message)) => self.broadcast(message, generation),
                Some(Err(error)) => {
                    tracing::debug!(binding = %self.qname, %error, "the exit session failed");
                    return ExitEnd::Closed;
                }
                None => return ExitEnd::Closed,
            }
        }
    }

    /// Returns once some member of `generation` has fewer than [`MEMBER_PACE`] bytes queued,
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
                        .all(|member| member.queued.load(Ordering::Relaxed) >= MEMBER_PACE)
            };
            if !waiting {
                return;
            }
            // A permit stored by a signal sent since the check makes this return at once.
            self.room.notified().await;
        }
    }

    fn broadcast(&self, message: Message, generation: u64) {
        let mut state = self.lock();
        if state.generation != generation {
            return;
        }
        let qname = &self.qname;
        let size = cost(&message);
        state.members.retain(|id, member| {
            let queued = member.queued.load(Ordering::Relaxed);
            if queued > 0 && queued.saturating_add(size) > MEMBER_QUEUE {
                tracing::warn!(binding = %qname, member = id, peer = ?member.peer, "member fell too far behind; dropping it");
                member.end(EndReason::FellBehind);
                return false;
            }
            member.queued.fetch_add(size, Ordering::Relaxed);
            member.replies.send(message.clone()).is_ok()
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

/// Members' messages as the incoming side of one exit session; `drained` is cancelled when
/// every member has left and their messages were taken.
fn upward(
    upstream: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Upward>>>,
    drained: CancellationToken,
) -> MessageStream {
    Box::pin(futures_util::stream::unfold(
        (upstream, drained),
        |(upstream, drained)| async move {
            let next = upstream.lock().await.recv().await;
            match next {
                // The permit is released here: the message has left the group.
                Some((message, _permit)) => Some((Ok(message), (upstream, drained))),
                None => {
                    drained.cancel();
                    None
                }
            }
        },
    ))
}

/// Whether every member of the generation has left and nothing they sent is waiting.
async fn members_left(upstream: &tokio::sync::Mutex<mpsc::UnboundedReceiver<Upward>>) -> bool {
    let upstream = upstream.lock().await;
    upstream.is_closed() && upstream.is_empty()
}
