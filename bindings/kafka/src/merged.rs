//! A merged read built from followed partitions (see [`crate::follow`]) feeding a bounded
//! channel, merged into one stream that filters records and carries the progress of
//! every partition. The `client` kind uses it directly; the cache reads its own log instead.

use std::collections::VecDeque;
use std::sync::Arc;

use futures_util::{StreamExt, stream};
use tokio::sync::mpsc;
use zilla_engine::stream::{BoxFuture, StreamError};

use crate::follow::Followed;
use crate::kind::{
    Filter, MergedItem, MergedRequest, MergedStream, Message, OffsetSpec, PartitionOffset, Start,
    TopicMetadata, passes,
};

/// What a merged read needs from below.
pub(crate) trait PartitionReader: Send + Sync + 'static {
    fn follow(&self, topic: &str, partition: i32, offset: i64) -> Followed;
    fn metadata(&self, topic: &str) -> BoxFuture<'_, Result<TopicMetadata, StreamError>>;
    fn list_offset(
        &self,
        topic: &str,
        partition: i32,
        spec: OffsetSpec,
    ) -> BoxFuture<'_, Result<i64, StreamError>>;
}

enum Event {
    Batch {
        partition: i32,
        messages: Vec<Message>,
        next_offset: i64,
    },
}

/// Read but not yet delivered: records, then the end of their batch (which may lie past the
/// last record when control records or compaction left gaps).
enum Pending {
    Message(Message),
    Advance { partition: i32, offset: i64 },
}

struct State {
    events: mpsc::Receiver<Event>,
    pending: VecDeque<Pending>,
    progress: Vec<PartitionOffset>,
    targets: Vec<PartitionOffset>,
    filters: Vec<Filter>,
    synced: bool,
}

impl State {
    fn progress_snapshot(&self) -> Arc<[PartitionOffset]> {
        self.progress.clone().into()
    }

    fn advance(&mut self, partition: i32, offset: i64) {
        if let Some(entry) = self.progress.iter_mut().find(|p| p.partition == partition) {
            entry.offset = entry.offset.max(offset);
        }
    }

    fn reached_targets(&self) -> bool {
        self.targets.iter().all(|target| {
            self.progress
                .iter()
                .any(|p| p.partition == target.partition && p.offset >= target.offset)
        })
    }
}

/// Opens a merged read of `request.topic` on `reader`.
pub(crate) async fn open<R: PartitionReader>(
    reader: Arc<R>,
    request: MergedRequest,
) -> Result<MergedStream, StreamError> {
    let metadata = reader.metadata(&request.topic).await?;
    let (sender, events) = mpsc::channel(64);
    let mut progress = Vec::new();
    let mut targets = Vec::new();
    for &partition in metadata.partitions.iter().filter(|&&p| request.reads(p)) {
        let end = reader
            .list_offset(&request.topic, partition, OffsetSpec::Latest)
            .await?;
        let given = request.offsets.iter().find(|o| o.partition == partition);
        let start = match (given, request.start) {
            (Some(given), _) => given.offset,
            (None, Start::Live) => end,
            (None, Start::Historical | Start::Default) => {
                reader
                    .list_offset(&request.topic, partition, OffsetSpec::Earliest)
                    .await?
            }
        };
        progress.push(PartitionOffset {
            partition,
            offset: start,
        });
        targets.push(PartitionOffset {
            partition,
            offset: end,
        });
        tokio::spawn(fetch_loop(
            reader.clone(),
            request.topic.clone(),
            partition,
            start,
            sender.clone(),
        ));
    }
    let state = State {
        events,
        pending: VecDeque::new(),
        progress,
        targets,
        filters: request.filters,
        synced: false,
    };
    Ok(Box::pin(stream::unfold(state, next)))
}

async fn next(mut state: State) -> Option<(Result<MergedItem, StreamError>, State)> {
    loop {
        if !state.synced && state.pending.is_empty() && state.reached_targets() {
            state.synced = true;
            let progress = state.progress_snapshot();
            return Some((Ok(MergedItem::Synced(progress)), state));
        }
        match state.pending.pop_front() {
            Some(Pending::Message(message)) => {
                state.advance(message.partition, message.offset + 1);
                if passes(&state.filters, &message) {
                    let progress = state.progress_snapshot();
                    let item = MergedItem::Message {
                        message: Arc::new(message),
                        progress,
                    };
                    return Some((Ok(item), state));
                }
                continue;
            }
            Some(Pending::Advance { partition, offset }) => {
                state.advance(partition, offset);
                continue;
            }
            None => {}
        }
        match state.events.recv().await? {
            Event::Batch {
                partition,
                messages,
                next_offset,
            } => {
                state
                    .pending
                    .extend(messages.into_iter().map(Pending::Message));
                state.pending.push_back(Pending::Advance {
                    partition,
                    offset: next_offset,
                });
            }
        }
    }
}

async fn fetch_loop<R: PartitionReader>(
    reader: Arc<R>,
    topic: String,
    partition: i32,
    mut offset: i64,
    events: mpsc::Sender<Event>,
) {
    let mut batches = reader.follow(&topic, partition, offset);
    loop {
        let next = tokio::select! {
            _ = events.closed() => return,
            next = batches.next() => next,
        };
        match next {
            None => return,
            Some(Ok(batch)) => {
                if batch.messages.is_empty() && batch.next_offset <= offset {
                    continue;
                }
                offset = batch.next_offset.max(offset);
                let event = Event::Batch {
                    partition,
                    messages: batch.messages,
                    next_offset: offset,
                };
                if events.send(event).await.is_err() {
                    return;
                }
            }
            Some(Err(error)) => {
                tracing::debug!(%topic, partition, %error, "fetch failed; retrying");
            }
        }
    }
}
