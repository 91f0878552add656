//! Test support: a real tansu broker per test, the Python confluent-kafka client to produce,
//! a gateway built by the engine from a `zilla.yaml`, and `curl` as the SSE subscriber.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::ChildStdout;
use zilla_engine::properties::Properties;
use zilla_engine::{Engine, Registry};

/// How long a test waits for anything to arrive.
pub const WAIT: Duration = Duration::from_secs(30);

/// A real tansu broker per test: the end-to-end harness's.
pub use zilla_tests::Broker;

/// One record to produce.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: Option<String>,
    pub value: Option<String>,
    pub headers: Vec<(String, String)>,
}

impl Record {
    pub fn new(key: &str, value: &str) -> Self {
        Self {
            key: Some(key.to_owned()),
            value: Some(value.to_owned()),
            headers: Vec::new(),
        }
    }

    pub fn tombstone(key: &str) -> Self {
        Self {
            key: Some(key.to_owned()),
            value: None,
            headers: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

const PRODUCE: &str = r#"
import json, sys
from confluent_kafka import Producer
bootstrap, topic = sys.argv[1], sys.argv[2]
producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                     "enable.idempotence": False, "max.in.flight": 1})
errors = []
def delivered(error, message):
    if error is not None:
        errors.append(str(error))
for record in json.load(sys.stdin):
    producer.produce(topic, key=record["k"], value=record["v"],
                     headers=[(n, v) for n, v in record["h"]], on_delivery=delivered)
producer.flush(20)
print(json.dumps(errors))
"#;

use zilla_tests::python;

/// Produces `records` in order with the Python confluent-kafka client and waits for the acks.
pub async fn produce(broker: &Broker, topic: &str, records: &[Record]) -> Result<()> {
    let records: Vec<serde_json::Value> = records
        .iter()
        .map(|record| {
            serde_json::json!({
                "k": record.key,
                "v": record.value,
                "h": record.headers,
            })
        })
        .collect();
    let input = serde_json::to_string(&records)?;
    let address = broker.address();
    let topic = topic.to_owned();
    let output = tokio::task::spawn_blocking(move || -> Result<std::process::Output> {
        use std::io::Write;
        let mut child = Command::new(python())
            .arg("-c")
            .arg(PRODUCE)
            .args([&address, &topic])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running the peers' python (create it with `cargo xtask peers`)")?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.as_bytes())?;
        }
        Ok(child.wait_with_output()?)
    })
    .await??;
    if !output.status.success() {
        bail!(
            "producer failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let errors: Vec<String> = serde_json::from_slice(&output.stdout)?;
    if !errors.is_empty() {
        bail!("produce errors: {errors:?}");
    }
    Ok(())
}

/// The bindings of the pipeline.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    zilla_binding_tcp::register(&mut registry);
    zilla_binding_http::register(&mut registry);
    zilla_binding_sse::register(&mut registry);
    zilla_binding_kafka::register(&mut registry);
    zilla_binding_sse_kafka::register(&mut registry);
    registry
}

/// A gateway built by the engine: `tcp → http → sse → sse-kafka → kafka cache_client →
/// kafka cache_server → kafka client → tcp client → broker`.
pub struct Gateway {
    engine: Engine,
}

const CONFIG: &str = r#"
name: test
bindings:
  tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    exit: http_server
  http_server:
    type: http
    kind: server
    options:
      versions: [http/1.1]
    exit: sse_server
  sse_server:
    type: sse
    kind: server
    exit: sse_kafka_proxy
  sse_kafka_proxy:
    type: sse-kafka
    kind: proxy
    routes:
      - when:
          - path: /events/{topic}
        exit: kafka_cache_client
        with:
          topic: ${params.topic}
      - when:
          - path: /items/{key}/{tag}
        exit: kafka_cache_client
        with:
          topic: items
          filters:
            - key: ${params.key}
              headers:
                tag: ${params.tag}
      - when:
          - path: /keyed/{topic}
        exit: kafka_cache_client
        with:
          topic: ${params.topic}
          event:
            id: '["${base64(key)}","${etag}"]'
  kafka_cache_client:
    type: kafka
    kind: cache_client
    exit: kafka_cache_server
  kafka_cache_server:
    type: kafka
    kind: cache_server
    exit: kafka_client
  kafka_client:
    type: kafka
    kind: client
    options:
      servers:
        - BROKER
    exit: tcp_client
  tcp_client:
    type: tcp
    kind: client
"#;

impl Gateway {
    /// Loads and applies the gateway config against `broker`.
    pub fn start(broker: &Broker) -> Result<Self> {
        let engine = Engine::new(
            registry(),
            Properties::from_assignments(["zilla.binding.kafka.client.fetch.max.wait.millis=20"]),
        );
        let text = CONFIG.replace("BROKER", &broker.address());
        let config = engine
            .load(Path::new("zilla.yaml"), &text)
            .map_err(|errors| anyhow::anyhow!("{errors}"))?;
        engine
            .apply(config)
            .map_err(|errors| anyhow::anyhow!("{errors}"))?;
        Ok(Self { engine })
    }

    fn address(&self) -> SocketAddr {
        self.engine
            .listening()
            .into_iter()
            .find(|(name, _)| name.ends_with("tcp_server"))
            .map(|(_, address)| address)
            .expect("tcp_server listens")
    }

    /// `http://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address())
    }
}

/// One event as a subscriber sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// `curl -sN` subscribed to an event stream, read event by event.
pub struct Subscriber {
    child: tokio::process::Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Subscriber {
    /// Subscribes to `url` with extra curl arguments (e.g. a `Last-Event-ID` header).
    pub fn open(url: &str, args: &[&str]) -> Result<Self> {
        let mut child = tokio::process::Command::new("curl")
            .args(["-sN", "--fail"])
            .args(args)
            .arg(url)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("running curl")?;
        let stdout = child.stdout.take().context("curl stdout")?;
        Ok(Self {
            child,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// The next event (the `retry:` preamble is skipped).
    pub async fn next(&mut self) -> Result<Event> {
        let mut event = Event::default();
        let mut fields = 0;
        let mut data_lines = 0;
        loop {
            let line = tokio::time::timeout(WAIT, self.lines.next_line())
                .await
                .context("no event in time")??
                .context("event stream ended")?;
            if line.is_empty() {
                if fields > 0 {
                    return Ok(event);
                }
                continue;
            }
            let (name, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match name {
                "id" => event.id = Some(value.to_owned()),
                "event" => event.event = Some(value.to_owned()),
                "data" => {
                    if data_lines > 0 {
                        event.data.push('\n');
                    }
                    event.data.push_str(value);
                    data_lines += 1;
                }
                _ => continue,
            }
            fields += 1;
        }
    }

    /// The next `count` events.
    pub async fn take(&mut self, count: usize) -> Result<Vec<Event>> {
        let mut events = Vec::with_capacity(count);
        for _ in 0..count {
            events.push(
                self.next()
                    .await
                    .with_context(|| format!("after {} of {count} events", events.len()))?,
            );
        }
        Ok(events)
    }

    /// Disconnects, as a subscriber that goes away does.
    pub async fn close(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The HTTP status curl gets for `url`, with extra arguments.
pub async fn status(url: &str, args: &[&str]) -> Result<u16> {
    let output = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "10",
            ])
            .args(args)
            .arg(url)
            .output(),
    )
    .await??;
    Ok(String::from_utf8_lossy(&output.stdout).trim().parse()?)
}
