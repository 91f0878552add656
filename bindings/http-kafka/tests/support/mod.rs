//! Test support: a real tansu broker per test, a gateway built by the engine from a config,
//! the real `curl`, and the Python confluent-kafka client as the independent Kafka peer.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use zilla_engine::properties::Properties;
use zilla_engine::{Engine, Registry};

pub use zilla_tests::Broker;

pub use zilla_tests::python;

pub use zilla_tests::python_json as run_python;

/// Starts a Python script in the background; its JSON output comes with [`finish`].
pub fn spawn_python(script: &str, args: &[&str]) -> Result<tokio::process::Child> {
    tokio::process::Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running the peers' python")
}

/// Waits for a background Python script and parses its output.
pub async fn finish(child: tokio::process::Child) -> Result<serde_json::Value> {
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .context("python did not finish")??;
    if !output.status.success() {
        bail!(
            "python failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_json(&output.stdout)
}

fn parse_json(stdout: &[u8]) -> Result<serde_json::Value> {
    serde_json::from_slice(stdout).with_context(|| {
        format!(
            "python output is not JSON: {}",
            String::from_utf8_lossy(stdout)
        )
    })
}

/// Produces `[{key, value, headers: [[name, value]...]}]` records with confluent-kafka.
pub const PRODUCE: &str = r#"
import json, sys
from confluent_kafka import Producer
bootstrap, topic = sys.argv[1], sys.argv[2]
producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 1})
for record in json.load(sys.stdin):
    producer.produce(topic, key=record.get("key"), value=record.get("value"),
                     headers=[tuple(h) for h in record.get("headers", [])])
producer.flush(20)
print("[]")
"#;

/// Reads every record of a one-partition topic from the start with confluent-kafka, and prints
/// them as `[{key, value, headers, offset}]` (`value` null for tombstones).
pub const CONSUME: &str = r#"
import json, sys, time
from confluent_kafka import Consumer, TopicPartition
bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "peer", "enable.auto.commit": False})
consumer.assign([TopicPartition(topic, 0, 0)])
records, deadline = [], time.time() + 20
while len(records) < count and time.time() < deadline:
    message = consumer.poll(0.2)
    if message is None or message.error():
        continue
    records.append({
        "key": message.key().decode() if message.key() is not None else None,
        "value": message.value().decode("utf-8", "replace") if message.value() is not None else None,
        "headers": [[n, v.decode() if v is not None else None] for n, v in (message.headers() or [])],
        "offset": message.offset(),
    })
consumer.close()
print(json.dumps(records))
"#;

/// A service answering `count` requests: reads the request topic, checks nothing, and
/// produces to each request's `zilla:reply-to` topic a reply with the correlation id, status
/// `argv[4]` and a JSON body echoing the request. Prints what it saw.
pub const SERVICE: &str = r#"
import json, sys, time
from confluent_kafka import Consumer, Producer, TopicPartition
bootstrap, topic, count, status = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "service", "enable.auto.commit": False})
consumer.assign([TopicPartition(topic, 0, 0)])
producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 1})
seen, deadline = [], time.time() + 40
while len(seen) < count and time.time() < deadline:
    message = consumer.poll(0.1)
    if message is None or message.error():
        continue
    headers = [(n, v) for n, v in (message.headers() or [])]
    named = {n: v.decode() for n, v in headers if v is not None}
    body = message.value() or b""
    reply = json.dumps({"echo": body.decode("utf-8", "replace"), "if-match": named.get("if-match")})
    reply_status = "412" if named.get("if-match") == "revision=41" else status
    producer.produce(named["zilla:reply-to"], key=message.key(), value=reply.encode(),
                     headers=[(":status", reply_status.encode()),
                              ("content-type", b"application/json"),
                              ("x-service", b"python"),
                              ("zilla:correlation-id", named["zilla:correlation-id"].encode())])
    producer.flush(10)
    seen.append({
        "key": message.key().decode() if message.key() is not None else None,
        "value": body.decode("utf-8", "replace"),
        "headers": [[n, v.decode() if v is not None else None] for n, v in headers],
    })
consumer.close()
print(json.dumps(seen))
"#;

fn registry() -> Registry {
    let mut registry = Registry::new();
    zilla_binding_tcp::register(&mut registry);
    zilla_binding_http::register(&mut registry);
    zilla_binding_kafka::register(&mut registry);
    zilla_binding_http_kafka::register(&mut registry);
    registry
}

/// The pipeline `tcp server → http server → http-kafka → kafka cache_client → kafka
/// cache_server → kafka client → tcp client → broker`, with the given http-kafka routes.
pub fn config(broker: &Broker, bootstrap: &[&str], mapping: &str) -> String {
    let bootstrap = if bootstrap.is_empty() {
        String::new()
    } else {
        format!(
            "    options:\n      bootstrap:\n{}",
            bootstrap
                .iter()
                .map(|topic| format!("        - {topic}\n"))
                .collect::<String>()
        )
    };
    format!(
        r#"
name: test
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    exit: north_http_server
  north_http_server:
    type: http
    kind: server
    routes:
      - when:
          - headers:
              :scheme: http
        exit: north_http_kafka_mapping
  north_http_kafka_mapping:
    type: http-kafka
    kind: proxy
{mapping}
  north_kafka_cache_client:
    type: kafka
    kind: cache_client
    exit: south_kafka_cache_server
  south_kafka_cache_server:
    type: kafka
    kind: cache_server
{bootstrap}    exit: south_kafka_client
  south_kafka_client:
    type: kafka
    kind: client
    options:
      servers:
        - {address}
    exit: south_tcp_client
  south_tcp_client:
    type: tcp
    kind: client
"#,
        address = broker.address()
    )
}

/// Loads and builds `yaml` without serving it; the errors as text when it is refused.
pub fn check(yaml: &str) -> Result<(), String> {
    let engine = Engine::new(registry(), Properties::default());
    let config = engine
        .load(Path::new("zilla.yaml"), yaml)
        .map_err(|errors| errors.to_string())?;
    engine
        .apply(config)
        .map(|_| ())
        .map_err(|errors| errors.to_string())
}

/// A running engine and the address its tcp server listens on.
pub struct Gateway {
    engine: Engine,
    pub address: SocketAddr,
}

impl Gateway {
    pub fn start(yaml: &str) -> Self {
        Self::start_with(yaml, &[])
    }

    pub fn start_with(yaml: &str, properties: &[&str]) -> Self {
        let mut assignments = vec!["zilla.binding.kafka.client.fetch.max.wait.millis=20"];
        assignments.extend_from_slice(properties);
        let engine = Engine::new(registry(), Properties::from_assignments(assignments));
        let config = engine
            .load(Path::new("zilla.yaml"), yaml)
            .unwrap_or_else(|errors| panic!("{errors}"));
        engine
            .apply(config)
            .unwrap_or_else(|errors| panic!("{errors}"));
        let address = engine
            .listening()
            .into_iter()
            .find(|(binding, _)| binding == "test:north_tcp_server")
            .map(|(_, address)| address)
            .expect("tcp server listening");
        Self { engine, address }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub async fn stop(self) {
        assert!(self.engine.shutdown(Duration::from_secs(5)).await);
    }
}

/// What curl saw.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Exchange {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Runs `curl -s -i <args>` and parses the response.
pub async fn curl(args: &[&str]) -> Exchange {
    let output = tokio::process::Command::new("curl")
        .args(["-s", "-S", "-i", "--max-time", "30"])
        .args(args)
        .output()
        .await
        .expect("curl runs");
    assert!(
        output.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let raw = String::from_utf8(output.stdout).expect("text");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Exchange {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Repeats `curl args` until `done` holds for its result (the cache follows Kafka within
/// milliseconds, not at once), for at most 10 s; returns the last result.
pub async fn eventually(args: &[&str], done: impl Fn(&Exchange) -> bool) -> Exchange {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let exchange = curl(args).await;
        if done(&exchange) || Instant::now() > deadline {
            return exchange;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
