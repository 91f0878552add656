//! What really reaches stdout: this test binary runs itself as a child process (the
//! `child_process` test, which only acts when the child variable is set), with a fixed time
//! zone, and reads the child's standard output.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use zilla_engine::components::{ComponentContext, ComponentFactory, Exporter};
use zilla_engine::config::model::{ComponentConfig, Origin};
use zilla_engine::events::Event;
use zilla_engine::metrics::Metrics;
use zilla_engine::properties::Properties;
use zilla_engine::{
    Binding, BindingFactory, BindingKind, BindingSchema, BuildContext, BuildError, Engine,
    QualifiedName, Registry, StartContext,
};
use zilla_exporter_stdout::StdoutExporterFactory;

const CHILD: &str = "ZILLA_EXPORTER_STDOUT_TEST_CHILD";

/// UTC+05:30 with no daylight saving, as a POSIX TZ string, so no tz database is needed.
const ZONE: &str = "IST-5:30";

/// Raises one event when started, as a binding would.
struct Announcer;

impl BindingFactory for Announcer {
    fn type_name(&self) -> &'static str {
        "announcer"
    }
    fn kinds(&self) -> &'static [BindingKind] {
        &[BindingKind::Server]
    }
    fn accepts(&self, _kind: BindingKind) -> &'static [&'static str] {
        &[]
    }
    fn emits(&self, _kind: BindingKind) -> Option<&'static str> {
        None
    }
    fn schema(&self, _kind: BindingKind) -> BindingSchema {
        BindingSchema::default()
    }
    fn build(&self, _context: &mut BuildContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
        Ok(Arc::new(Announcer))
    }
}

impl Binding for Announcer {
    fn start(&self, context: &StartContext) {
        context
            .events
            .emit("BINDING_ANNOUNCER_STARTED", 0x07, "announcer started");
    }
}

/// Two namespaces, each with a `stdout` exporter: every event is still printed once.
const CONFIG: &str = "
name: test
telemetry:
  exporters:
    stdout0:
      type: stdout
bindings:
  app0:
    type: announcer
    kind: server
---
name: other
telemetry:
  exporters:
    stdout1:
      type: stdout
";

fn built_exporter() -> Arc<dyn Exporter> {
    let name = QualifiedName::new("test", "stdout0");
    let config = ComponentConfig {
        type_name: "stdout".into(),
        options: None,
        vault: None,
        store: None,
        origin: Origin::default(),
    };
    let properties = Properties::default();
    let metrics = Metrics::default();
    let context = ComponentContext {
        name: &name,
        config: &config,
        base_dir: ".".into(),
        properties: &properties,
        metrics: &metrics,
        telemetry_attributes: &[],
        events: Default::default(),
    };
    StdoutExporterFactory.build(&context).unwrap()
}

/// The child's side: prints through a directly built exporter, then through a whole engine.
#[test]
fn child_process() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let exporter = built_exporter();
    let another = built_exporter();
    for (trace_id, message) in [(0x2a, "first"), (u64::MAX, "second")] {
        let event = Event {
            qname: "test:net0".into(),
            // 2023-11-14 22:13:20.250 UTC
            timestamp: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_250),
            trace_id,
            name: "BINDING_TCP_DNS_FAILED",
            message: format!("Unable to resolve host dns for address {message}.example:9092."),
        };
        // The engine hands each event to every exporter; only one prints it.
        exporter.event(&event);
        another.event(&event);
    }
    drop((exporter, another));

    let mut registry = Registry::new();
    zilla_exporter_stdout::register(&mut registry);
    registry.binding(Announcer);
    let engine = Engine::new(registry, Properties::default());
    let config = engine.load(Path::new("zilla.yaml"), CONFIG).unwrap();
    engine.apply(config).unwrap();
    assert!(zilla_exporter_stdout::flush(Duration::from_secs(10)));
}

fn child_output() -> Vec<String> {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_process", "--test-threads=1"])
        .env(CHILD, "1")
        .env("TZ", ZONE)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        // The test harness starts a line with this before running the test.
        .map(|line| line.trim_start_matches("test child_process ... "))
        .filter(|line| line.starts_with("test:") || line.starts_with("test."))
        .map(str::to_owned)
        .collect()
}

#[test]
fn events_reach_stdout_once_each_in_zillas_format() {
    let lines = child_output();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert_eq!(
        lines[0],
        "test:net0 [15/Nov/2023:03:43:20 +0530] [000000000000002ad] BINDING_TCP_DNS_FAILED \
         Unable to resolve host dns for address first.example:9092."
    );
    assert_eq!(
        lines[1],
        "test:net0 [15/Nov/2023:03:43:20 +0530] [ffffffffffffffffd] BINDING_TCP_DNS_FAILED \
         Unable to resolve host dns for address second.example:9092."
    );

    // Raised by a binding through the engine, at the current time.
    let (qname, rest) = lines[2].split_once(' ').unwrap();
    assert!(
        qname.starts_with("test") && qname.ends_with("app0"),
        "{qname}"
    );
    let (timestamp, rest) = rest.split_once("] ").unwrap();
    let timestamp = timestamp.strip_prefix('[').unwrap();
    assert_eq!(
        timestamp.len(),
        "15/Nov/2023:03:43:20 +0530".len(),
        "{timestamp}"
    );
    assert!(timestamp.ends_with(" +0530"), "{timestamp}");
    assert_eq!(&timestamp[2..3], "/");
    assert_eq!(&timestamp[6..7], "/");
    assert_eq!(
        rest,
        "[0000000000000007d] BINDING_ANNOUNCER_STARTED announcer started"
    );
}

#[test]
fn options_are_rejected() {
    let mut registry = Registry::new();
    zilla_exporter_stdout::register(&mut registry);
    let engine = Engine::new(registry, Properties::default());
    let with_options = "
name: test
telemetry:
  exporters:
    stdout0:
      type: stdout
      options:
        format: json
";
    let errors = engine
        .load(Path::new("zilla.yaml"), with_options)
        .unwrap_err()
        .to_string();
    assert!(errors.contains("options"), "{errors}");
    let without = "
name: test
telemetry:
  exporters:
    stdout0:
      type: stdout
";
    engine.load(Path::new("zilla.yaml"), without).unwrap();
}
