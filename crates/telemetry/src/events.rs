//! Zilla-style events (structured, named occurrences such as a failed TLS handshake), routed to
//! the configured exporters. With no exporter configured they still reach the process log.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::traces::Span;

/// One event.
#[derive(Debug, Clone)]
pub struct Event {
    /// The binding or component that raised it: `namespace:name`.
    pub qname: Arc<str>,
    /// When it happened.
    pub timestamp: SystemTime,
    /// Trace id of the stream it concerns, 0 when none.
    pub trace_id: u64,
    /// The event name in Zilla's form, e.g. `BINDING_TLS_HANDSHAKE_FAILED`.
    pub name: &'static str,
    /// Human-readable detail.
    pub message: String,
}

/// Where events go: cheap to clone, shared by every binding; the exporter list is swapped on
/// reload.
#[derive(Clone, Default)]
pub struct Events {
    exporters: Arc<ArcSwap<Vec<Arc<dyn Exporter>>>>,
    /// Whether any exporter takes spans: read on every request, so one atomic load.
    traced: Arc<AtomicBool>,
    /// Whether any exporter takes events: read on every request, so one atomic load.
    logged: Arc<AtomicBool>,
    qname: Arc<str>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("qname", &self.qname)
            .finish_non_exhaustive()
    }
}

impl Events {
    /// The same sink, raising events as `qname`.
    pub fn named(&self, qname: impl Into<Arc<str>>) -> Self {
        Self {
            exporters: self.exporters.clone(),
            traced: self.traced.clone(),
            logged: self.logged.clone(),
            qname: qname.into(),
        }
    }

    /// Replaces the exporters (on load and reload).
    pub fn set_exporters(&self, exporters: Vec<Arc<dyn Exporter>>) {
        let traced = exporters.iter().any(|exporter| exporter.traces());
        let logged = exporters.iter().any(|exporter| exporter.events());
        self.exporters.store(Arc::new(exporters));
        self.traced.store(traced, Ordering::Relaxed);
        self.logged.store(logged, Ordering::Relaxed);
    }

    /// The name events and spans are raised under.
    pub fn qname(&self) -> &Arc<str> {
        &self.qname
    }

    /// Whether a span would go anywhere: an exporter sends traces.
    pub fn traced(&self) -> bool {
        self.traced.load(Ordering::Relaxed)
    }

    /// Hands a finished span to the exporters that send traces.
    pub fn span(&self, span: &Span) {
        for exporter in self.exporters.load().iter() {
            if exporter.traces() {
                exporter.span(span);
            }
        }
    }

    /// Whether an event would go anywhere: an exporter takes events or debug logging is on.
    /// Lets a hot path skip building a message nobody reads.
    pub fn enabled(&self) -> bool {
        self.logged.load(Ordering::Relaxed) || tracing::enabled!(tracing::Level::DEBUG)
    }

    /// Raises an event whose message is built only if it goes anywhere.
    pub fn emit_with(&self, name: &'static str, trace_id: u64, message: impl FnOnce() -> String) {
        if self.enabled() {
            self.emit(name, trace_id, message());
        }
    }

    /// Raises an event.
    pub fn emit(&self, name: &'static str, trace_id: u64, message: impl Into<String>) {
        let event = Event {
            qname: self.qname.clone(),
            timestamp: SystemTime::now(),
            trace_id,
            name,
            message: message.into(),
        };
        tracing::debug!(qname = %event.qname, event = event.name, "{}", event.message);
        if self.logged.load(Ordering::Relaxed) {
            for exporter in self.exporters.load().iter() {
                if exporter.events() {
                    exporter.event(&event);
                }
            }
        }
    }
}

/// Reads metrics and events and sends them somewhere (`telemetry.exporters`).
pub trait Exporter: Send + Sync + 'static {
    /// Handles one event. Called on the thread that raised it: must not block.
    fn event(&self, event: &Event);
    /// Starts background work (endpoints, push intervals); stops when `stopped` is cancelled.
    fn start(&self, _stopped: tokio_util::sync::CancellationToken) {}
    /// Whether it takes events: a hot path builds an event's message only while one does
    /// (or debug logging is on).
    fn events(&self) -> bool {
        true
    }
    /// Whether it sends traces: bindings record spans only while one does.
    fn traces(&self) -> bool {
        false
    }
    /// Handles one finished span. Called on the thread that recorded it: must not block.
    fn span(&self, _span: &Span) {}
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Keeps the names of the events it is handed; takes events or not as told.
    struct Recorder {
        takes_events: bool,
        seen: Mutex<Vec<&'static str>>,
    }

    impl Exporter for Recorder {
        fn event(&self, event: &Event) {
            if let Ok(mut seen) = self.seen.lock() {
                seen.push(event.name);
            }
        }

        fn events(&self) -> bool {
            self.takes_events
        }
    }

    fn recorder(takes_events: bool) -> Arc<Recorder> {
        Arc::new(Recorder {
            takes_events,
            seen: Mutex::new(Vec::new()),
        })
    }

    #[test]
    fn messages_are_built_only_for_exporters_that_take_events() {
        let events = Events::default().named("ns:b");
        let metrics_only = recorder(false);
        events.set_exporters(vec![metrics_only.clone()]);
        let mut built = false;
        events.emit_with("TEST_EVENT", 0, || {
            built = true;
            String::new()
        });
        // Debug logging (no subscriber in unit tests) is off: nothing asks for the message.
        assert!(!built);
        assert!(!events.enabled());

        let logs = recorder(true);
        events.set_exporters(vec![metrics_only.clone(), logs.clone()]);
        assert!(events.enabled());
        events.emit_with("TEST_EVENT", 0, String::new);
        assert_eq!(*logs.seen.lock().unwrap(), vec!["TEST_EVENT"]);
        assert!(metrics_only.seen.lock().unwrap().is_empty());
    }
}
