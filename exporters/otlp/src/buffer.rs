//! The bounded retry buffer of encoded records (log records, spans): each is added from the
//! thread that raised it (a short lock, no I/O), the push task sends them in batches and
//! removes only what the receiver accepted. When the buffer is full the oldest records make
//! room and are counted as dropped. Logs and spans have a buffer each.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Most bytes of encoded records held.
pub const MAX_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Most records held.
pub const MAX_BUFFER_RECORDS: usize = 16 * 1024;
/// Most bytes of records sent in one request.
pub const MAX_BATCH_BYTES: usize = 512 * 1024;

#[derive(Default)]
struct State {
    /// (sequence number, encoded record), oldest first.
    records: VecDeque<(u64, String)>,
    bytes: usize,
    next: u64,
    dropped: u64,
}

/// Encoded records waiting to be sent.
#[derive(Default)]
pub struct RecordBuffer {
    state: Mutex<State>,
}

impl std::fmt::Debug for RecordBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordBuffer").finish_non_exhaustive()
    }
}

/// Records taken to send, up to the sequence number of the last one.
#[derive(Debug)]
pub struct Batch {
    /// The encoded records.
    pub records: Vec<String>,
    /// The sequence number of the last record.
    pub last: u64,
}

impl RecordBuffer {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a record, evicting the oldest ones when full.
    pub fn push(&self, record: String) {
        let mut state = self.lock();
        if record.len() > MAX_BATCH_BYTES {
            state.dropped += 1;
            return;
        }
        while state.bytes + record.len() > MAX_BUFFER_BYTES
            || state.records.len() >= MAX_BUFFER_RECORDS
        {
            let Some((_, evicted)) = state.records.pop_front() else {
                break;
            };
            state.bytes -= evicted.len();
            state.dropped += 1;
        }
        let sequence = state.next;
        state.next += 1;
        state.bytes += record.len();
        state.records.push_back((sequence, record));
    }

    /// The oldest records, up to [`MAX_BATCH_BYTES`], left in place until
    /// [`RecordBuffer::acknowledge`]; `None` when empty.
    pub fn batch(&self) -> Option<Batch> {
        let state = self.lock();
        let mut bytes = 0;
        let mut records = Vec::new();
        let mut last = None;
        for (sequence, record) in &state.records {
            if !records.is_empty() && bytes + record.len() > MAX_BATCH_BYTES {
                break;
            }
            bytes += record.len();
            records.push(record.clone());
            last = Some(*sequence);
        }
        last.map(|last| Batch { records, last })
    }

    /// Removes every record up to `last`, which the receiver accepted.
    pub fn acknowledge(&self, last: u64) {
        let mut state = self.lock();
        while state
            .records
            .front()
            .is_some_and(|(sequence, _)| *sequence <= last)
        {
            if let Some((_, record)) = state.records.pop_front() {
                state.bytes -= record.len();
            }
        }
    }

    /// How many records were dropped since the last call.
    pub fn take_dropped(&self) -> u64 {
        std::mem::take(&mut self.lock().dropped)
    }

    /// How many records wait.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_acknowledged_records_leave_and_overflow_drops_the_oldest() {
        let buffer = RecordBuffer::default();
        for index in 0..3 {
            buffer.push(format!("r{index}"));
        }
        let batch = buffer.batch().unwrap();
        assert_eq!(batch.records, ["r0", "r1", "r2"]);
        buffer.push("r3".into());
        // A failed send acknowledges nothing: the same records come again.
        assert_eq!(buffer.batch().unwrap().records.len(), 4);
        buffer.acknowledge(batch.last);
        assert_eq!(buffer.batch().unwrap().records, ["r3"]);
        buffer.acknowledge(3);
        assert!(buffer.batch().is_none());

        let record = "x".repeat(1024);
        for _ in 0..(MAX_BUFFER_BYTES / 1024 + 10) {
            buffer.push(record.clone());
        }
        assert!(buffer.len() <= MAX_BUFFER_BYTES / 1024);
        assert_eq!(buffer.take_dropped(), 10);
        assert_eq!(buffer.take_dropped(), 0);
        let batch = buffer.batch().unwrap();
        assert!(batch.records.len() * 1024 <= MAX_BATCH_BYTES);
    }
}
