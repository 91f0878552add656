//! The bounded channel that carries a session's [`SessionEvent`]s from its exits to the
//! server's connection.
//!
//! Most connections of an MQTT server sit idle, and a channel exists for each of them, so an
//! empty one holds nothing but its counters: its queue is allocated with the first event and
//! given back once drained, where a tokio `mpsc` channel allocates a block of 32 slots and
//! its cache-padded state when created (about 1.5 KiB).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;

use super::SessionEvent;

/// Slots a drained queue keeps; a larger one is given back.
const KEPT_CAPACITY: usize = 4;

/// Makes a channel holding at most `capacity` events (at least one).
pub fn event_channel(capacity: usize) -> (EventSender, EventReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            senders: 1,
            receiving: true,
            receiver: None,
        }),
        writable: Notify::new(),
        capacity: capacity.max(1),
    });
    (
        EventSender {
            shared: shared.clone(),
        },
        EventReceiver { shared },
    )
}

struct Shared {
    state: Mutex<State>,
    /// Senders wait here for room, or for the receiver to go.
    writable: Notify,
    capacity: usize,
}

struct State {
    queue: VecDeque<SessionEvent>,
    senders: usize,
    /// Whether the receiver is still there.
    receiving: bool,
    /// The waiting receiver, woken by an event or the last sender's going. A waker rather
    /// than a `Notify`: the future of a connection waiting for events stays small.
    receiver: Option<Waker>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // No code holding the lock panics; a poisoned queue is still a consistent queue.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes the receiver, if it waits; outside the lock.
    fn wake_receiver(&self, mut state: MutexGuard<'_, State>) {
        let receiver = state.receiver.take();
        drop(state);
        if let Some(receiver) = receiver {
            receiver.wake();
        }
    }

    /// Queues `event` if there is room.
    fn try_send(&self, event: SessionEvent) -> Result<(), TrySendError> {
        let mut state = self.state();
        if !state.receiving {
            return Err(TrySendError::Closed(event));
        }
        if state.queue.len() >= self.capacity {
            return Err(TrySendError::Full(event));
        }
        state.queue.push_back(event);
        self.wake_receiver(state);
        Ok(())
    }

    /// Resolves once the queue has room (`Ok`) or the receiver is gone (`Err`).
    async fn writable(&self) -> Result<(), ReceiverGone> {
        loop {
            // Registered before the queue is looked at, so a slot freed in between wakes it.
            let mut notified = pin!(self.writable.notified());
            notified.as_mut().enable();
            {
                let state = self.state();
                if !state.receiving {
                    return Err(ReceiverGone);
                }
                if state.queue.len() < self.capacity {
                    return Ok(());
                }
            }
            notified.await;
        }
    }
}

/// Where an exit sends a session's events. Cloning adds a sender; the receiver sees the end
/// of the channel once every sender is dropped.
pub struct EventSender {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EventSender {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("EventSender")
    }
}

impl Clone for EventSender {
    fn clone(&self) -> Self {
        self.shared.state().senders += 1;
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for EventSender {
    fn drop(&mut self) {
        let mut state = self.shared.state();
        state.senders -= 1;
        if state.senders == 0 {
            self.shared.wake_receiver(state);
        }
    }
}

impl EventSender {
    /// Sends `event`, waiting while the channel is full; the event back if the receiver is
    /// gone.
    pub async fn send(&self, event: SessionEvent) -> Result<(), SendError> {
        let mut event = event;
        loop {
            if self.shared.writable().await.is_err() {
                return Err(SendError(event));
            }
            // Another sender may have taken the room meanwhile: wait again.
            match self.shared.try_send(event) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(back)) => event = back,
                Err(TrySendError::Closed(back)) => return Err(SendError(back)),
            }
        }
    }

    /// Sends `event` if the channel has room now.
    pub fn try_send(&self, event: SessionEvent) -> Result<(), TrySendError> {
        self.shared.try_send(event)
    }

    /// Resolves once the channel has room, or with an error once the receiver is gone.
    /// Another sender may take the room before this one sends.
    pub async fn ready(&self) -> Result<(), ReceiverGone> {
        self.shared.writable().await
    }
}

/// Where the server receives a session's events.
pub struct EventReceiver {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EventReceiver {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("EventReceiver")
    }
}

impl EventReceiver {
    /// The next event; `None` once every sender is gone and the queue is empty. Cancel-safe:
    /// an event is taken only when this resolves with it.
    pub fn recv(&mut self) -> impl Future<Output = Option<SessionEvent>> + '_ {
        std::future::poll_fn(|context| self.poll_recv(context))
    }

    /// Polls for the next event, as [`Self::recv`].
    pub fn poll_recv(&mut self, context: &mut Context<'_>) -> Poll<Option<SessionEvent>> {
        match self.take(Some(context.waker())) {
            Taken::Event(event) => Poll::Ready(Some(event)),
            Taken::Ended => Poll::Ready(None),
            Taken::Empty => Poll::Pending,
        }
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Option<SessionEvent> {
        match self.take(None) {
            Taken::Event(event) => Some(event),
            Taken::Empty | Taken::Ended => None,
        }
    }

    /// Takes the next event; with nothing to take, `waker` waits for one.
    fn take(&self, waker: Option<&Waker>) -> Taken {
        let mut state = self.shared.state();
        let Some(event) = state.queue.pop_front() else {
            if state.senders == 0 {
                return Taken::Ended;
            }
            if let Some(waker) = waker
                && !state
                    .receiver
                    .as_ref()
                    .is_some_and(|kept| kept.will_wake(waker))
            {
                state.receiver = Some(waker.clone());
            }
            return Taken::Empty;
        };
        if state.queue.is_empty() && state.queue.capacity() > KEPT_CAPACITY {
            // A burst is over: an idle connection holds no large queue.
            state.queue = VecDeque::new();
        }
        drop(state);
        self.shared.writable.notify_one();
        Taken::Event(event)
    }
}

/// What the receiver found in the queue.
enum Taken {
    Event(SessionEvent),
    Empty,
    /// Empty, and every sender is gone.
    Ended,
}

impl Drop for EventReceiver {
    fn drop(&mut self) {
        let queued = {
            let mut state = self.shared.state();
            state.receiving = false;
            std::mem::take(&mut state.queue)
        };
        // Events nobody will receive are dropped outside the lock: a delivery's
        // acknowledgement sender tells its exit it was not acknowledged.
        drop(queued);
        self.shared.writable.notify_waiters();
    }
}

/// The receiver is gone: the event comes back.
#[derive(Debug, thiserror::Error)]
#[error("the session's connection is gone")]
pub struct SendError(pub SessionEvent);

/// Why [`EventSender::try_send`] did not send; the event comes back.
#[derive(Debug, thiserror::Error)]
pub enum TrySendError {
    /// The channel is full.
    #[error("the session's event channel is full")]
    Full(SessionEvent),
    /// The receiver is gone.
    #[error("the session's connection is gone")]
    Closed(SessionEvent),
}

/// The receiver is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the session's connection is gone")]
pub struct ReceiverGone;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::codec::ReasonCode;

    fn ended(code: u8) -> SessionEvent {
        SessionEvent::Ended {
            reason: ReasonCode(code),
            reason_string: None,
        }
    }

    fn code(event: Option<SessionEvent>) -> Option<u8> {
        match event {
            Some(SessionEvent::Ended { reason, .. }) => Some(reason.0),
            _ => None,
        }
    }

    #[tokio::test]
    async fn events_come_in_order_and_a_full_channel_holds_its_sender() {
        let (sender, mut receiver) = event_channel(2);
        sender.send(ended(1)).await.unwrap();
        sender.send(ended(2)).await.unwrap();
        assert!(matches!(
            sender.try_send(ended(9)),
            Err(TrySendError::Full(_))
        ));
        let waiting = tokio::spawn({
            let sender = sender.clone();
            async move { sender.send(ended(3)).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        assert_eq!(code(receiver.recv().await), Some(1));
        assert!(waiting.await.unwrap());
        assert_eq!(code(receiver.recv().await), Some(2));
        assert_eq!(code(receiver.recv().await), Some(3));
        drop(sender);
        assert_eq!(code(receiver.recv().await), None);
    }

    #[tokio::test]
    async fn a_receiver_waits_for_the_next_event() {
        let (sender, mut receiver) = event_channel(1);
        let received = tokio::spawn(async move { code(receiver.recv().await) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        sender.ready().await.unwrap();
        sender.try_send(ended(7)).unwrap();
        assert_eq!(received.await.unwrap(), Some(7));
    }

    #[tokio::test]
    async fn senders_see_the_receiver_go() {
        let (sender, receiver) = event_channel(1);
        sender.try_send(ended(1)).unwrap();
        let waiting = tokio::spawn({
            let sender = sender.clone();
            async move { sender.send(ended(2)).await.is_err() }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(receiver);
        assert!(waiting.await.unwrap());
        assert!(matches!(
            sender.try_send(ended(3)),
            Err(TrySendError::Closed(_))
        ));
        assert_eq!(sender.ready().await, Err(ReceiverGone));
    }

    #[tokio::test]
    async fn a_drained_burst_gives_its_queue_back() {
        let (sender, mut receiver) = event_channel(64);
        for index in 0..32 {
            sender.try_send(ended(index)).unwrap();
        }
        for _ in 0..32 {
            receiver.recv().await;
        }
        assert_eq!(sender.shared.state().queue.capacity(), 0);
    }
}
