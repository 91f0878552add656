//! The `stdout` exporter: prints every event on standard output, one line each, in Zilla's
//! format:
//!
//! ```text
//! <namespace>:<name> [dd/MMM/yyyy:HH:mm:ss Z] [<trace id>d] <EVENT_NAME> <message>
//! test:net0 [14/Nov/2023:22:13:20 +0000] [000000000000002ad] BINDING_TCP_DNS_FAILED Unable to resolve host dns for address example.com:9092.
//! ```
//!
//! The time is local, to the second; the trace id is 16 hex digits followed by a literal `d`,
//! exactly as Zilla prints it.
//!
//! ```yaml
//! name: example
//! telemetry:
//!   exporters:
//!     stdout_logs_exporter:
//!       type: stdout
//! ```
//!
//! Options: none.
//!
//! Behaviour:
//! - Raising an event never blocks: the line is queued for one writer thread. If stdout does
//!   not keep up and the queue (8192 lines) is full, the event is not printed, and how many
//!   were skipped is logged through `tracing` once the writer catches up.
//! - However many `stdout` exporters are configured (in any namespace), each event is printed
//!   once, as in Zilla where only one stdout exporter is active at a time.
//! - [`flush`] waits for queued lines to be written, for use before the process exits.

mod format;
mod writer;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use zilla_engine::components::{ComponentContext, ComponentFactory, Exporter};
use zilla_engine::events::Event;
use zilla_engine::{BuildError, Registry};

pub use writer::flush;

/// Registers the `stdout` exporter type.
pub fn register(registry: &mut Registry) {
    registry.exporter(StdoutExporterFactory);
}

/// Builds `stdout` exporters.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdoutExporterFactory;

impl ComponentFactory<dyn Exporter> for StdoutExporterFactory {
    fn type_name(&self) -> &'static str {
        "stdout"
    }

    fn options_schema(&self) -> Option<serde_json::Value> {
        None
    }

    fn build(&self, _context: &ComponentContext<'_>) -> Result<Arc<dyn Exporter>, BuildError> {
        Ok(Arc::new(StdoutExporter::new()))
    }
}

/// Prints events on stdout in Zilla's format.
///
/// Every live instance receives the same events (the engine gives each event to every
/// configured exporter), so only the oldest live one prints. A reload builds new instances
/// before dropping the old ones, so printing carries on without a gap or a duplicate.
#[derive(Debug)]
pub struct StdoutExporter {
    id: u64,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static LIVE: Mutex<BTreeSet<u64>> = Mutex::new(BTreeSet::new());
/// The id of the instance that prints, 0 when there is none.
static PRINTING: AtomicU64 = AtomicU64::new(0);

fn update_live(change: impl FnOnce(&mut BTreeSet<u64>)) {
    let mut live = LIVE.lock().unwrap_or_else(PoisonError::into_inner);
    change(&mut live);
    PRINTING.store(live.first().copied().unwrap_or(0), Ordering::Release);
}

impl StdoutExporter {
    /// A new exporter. Also usable without config, e.g. for `zilla start -l`, which prints
    /// events when no exporter is configured.
    pub fn new() -> Self {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        update_live(|live| {
            live.insert(id);
        });
        Self { id }
    }

    fn prints(&self) -> bool {
        PRINTING.load(Ordering::Acquire) == self.id
    }
}

impl Default for StdoutExporter {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for StdoutExporter {
    fn drop(&mut self) {
        let id = self.id;
        update_live(|live| {
            live.remove(&id);
        });
    }
}

impl Exporter for StdoutExporter {
    fn event(&self, event: &Event) {
        if self.prints() {
            writer::submit(format::event_line(event, &chrono::Local));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_oldest_live_exporter_prints() {
        let first = StdoutExporter::new();
        let second = StdoutExporter::new();
        let third = StdoutExporter::new();
        assert!(first.prints());
        assert!(!second.prints());
        assert!(!third.prints());
        drop(first);
        drop(third);
        assert!(second.prints());
        drop(second);
        assert_eq!(PRINTING.load(Ordering::Acquire), 0);
    }
}
