//! A real Kafka-compatible broker for tests: tansu with its sqlite storage engine in a fresh
//! directory (on tmpfs when there is one), listening on 127.0.0.1 at a port chosen at run time.
//! Dropping a [`Broker`] stops it and removes its data.
//!
//! This is the one broker harness of the workspace: the end-to-end tests here and the kafka,
//! http-kafka and sse-kafka crate tests all start their broker with it. A test that needs to
//! see the bytes on the wire puts its own forwarder in front and starts the broker with
//! [`Broker::start_advertising`], so clients that follow metadata go through the forwarder.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::peer::{accepts_connections, free_port};

/// A running tansu broker.
pub struct Broker {
    port: u16,
    advertised_host: String,
    advertised: u16,
    args: Vec<String>,
    /// How often tansu runs its retention and compaction queries.
    maintenance: Duration,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("port", &self.port)
            .field("advertised", &self.advertised)
            .finish()
    }
}

/// The tansu executable: `$TANSU`, else `tansu` on `PATH`, else `~/.cargo/bin/tansu`.
fn tansu() -> PathBuf {
    if let Some(path) = std::env::var_os("TANSU") {
        return path.into();
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("tansu"))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo/bin/tansu")
        })
}

impl Broker {
    /// Starts a broker without authentication and waits until it listens.
    pub fn start() -> Result<Self> {
        Self::start_with(&[])
    }

    /// Starts a broker that runs its retention and compaction queries every `interval`
    /// rather than every 2 s. tansu 0.6.0's compaction groups every stored record of a
    /// compacted topic by key, sorting the whole table; at a million records a pass takes
    /// longer than the interval and the broker answers nothing else.
    pub fn start_maintained_every(interval: Duration) -> Result<Self> {
        let port = free_port()?;
        let mut broker = Self::launch_new_stopped("127.0.0.1", port, port, &[])?;
        broker.maintenance = interval;
        broker.launch()?;
        Ok(broker)
    }

    /// Starts a broker with extra `tansu broker` arguments (e.g. `--authentication`).
    pub fn start_with(args: &[&str]) -> Result<Self> {
        let port = free_port()?;
        Self::start_advertising(port, port, args)
    }

    /// Starts a broker listening on `port` that advertises `advertised` in metadata: the port
    /// of a forwarder the test put in front of it.
    pub fn start_advertising(port: u16, advertised: u16, args: &[&str]) -> Result<Self> {
        Self::launch_new("127.0.0.1", port, advertised, args)
    }

    /// Starts a broker listening on 127.0.0.1 that advertises another host with its port
    /// (e.g. `127.0.0.2`, where nothing listens): a broker on a private network whose
    /// advertised address clients cannot use.
    pub fn start_advertising_host(host: &str, args: &[&str]) -> Result<Self> {
        let port = free_port()?;
        Self::launch_new(host, port, port, args)
    }

    fn launch_new(host: &str, port: u16, advertised: u16, args: &[&str]) -> Result<Self> {
        let mut broker = Self::launch_new_stopped(host, port, advertised, args)?;
        broker.launch()?;
        Ok(broker)
    }

    fn launch_new_stopped(host: &str, port: u16, advertised: u16, args: &[&str]) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("zilla-test-broker-")
            .tempdir_in("/dev/shm")
            .or_else(|_| {
                tempfile::Builder::new()
                    .prefix("zilla-test-broker-")
                    .tempdir()
            })?;
        Ok(Self {
            port,
            advertised_host: host.to_owned(),
            advertised,
            args: args.iter().map(|arg| (*arg).to_owned()).collect(),
            maintenance: Duration::from_secs(2),
            dir,
            child: None,
        })
    }

    fn launch(&mut self) -> Result<()> {
        let url = self.url();
        let advertised = format!("tcp://{}:{}", self.advertised_host, self.advertised);
        let log = std::fs::File::create(self.dir.path().join("broker.log"))?;
        let child = Command::new(tansu())
            .current_dir(self.dir.path())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
            ])
            .args([
                "--storage-engine",
                &format!(
                    "sqlite://tansu.db?maintenance_interval={}s",
                    self.maintenance.as_secs().max(1)
                ),
            ])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting tansu (install it with `cargo xtask peers`)")?;
        self.child = Some(child);
        self.wait_until_listening()
    }

    /// Waits until the broker accepts connections (it may be restarting).
    pub fn wait_until_listening(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !accepts_connections(self.port) {
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                bail!("tansu exited with {status}: {}", self.log());
            }
            ensure!(
                Instant::now() < deadline,
                "tansu did not listen within 10 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// `127.0.0.1:<port>`, for `KAFKA_BOOTSTRAP_SERVER` and client configs.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `tcp://127.0.0.1:<port>`, as the tansu CLI takes it.
    pub fn url(&self) -> String {
        format!("tcp://{}", self.address())
    }

    /// The port the broker listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port the broker advertises in metadata (its own unless a forwarder is in front).
    pub fn advertised(&self) -> u16 {
        self.advertised
    }

    /// The broker's process id, for measuring what it uses (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// What the broker logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    /// Adds an index on the `header` table of the broker's sqlite database. tansu 0.6.0
    /// creates that table without one and looks up each fetched record's headers with a
    /// query over it, so a fetch costs a pass over every header row stored: over a long run
    /// the broker spends its CPU on the fetches parked at each log end and a reader starting
    /// from the beginning waits minutes per fetch. Kafka semantics are unchanged. Done with
    /// the broker running (sqlite's own locking), by the peers' Python.
    pub fn index_headers(&self) -> Result<()> {
        const INDEX: &str = r#"
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], timeout=60)
connection.execute("create index if not exists header_record on header (topition, offset_id)")
connection.commit()
print("{}")
"#;
        let database = self.dir.path().join("tansu.db");
        crate::python_json(INDEX, &[&database.to_string_lossy()], "")
            .context("indexing tansu's header table")?;
        Ok(())
    }

    /// Creates a topic with `partitions`, log-compacted when `compact`.
    pub fn create_topic(&self, name: &str, partitions: u32, compact: bool) -> Result<()> {
        let configs: &[&str] = if compact {
            &["cleanup.policy=compact"]
        } else {
            &[]
        };
        self.create_topic_with(name, partitions, configs)
    }

    /// Creates a topic with `partitions` and topic configs (`name=value`).
    pub fn create_topic_with(&self, name: &str, partitions: u32, configs: &[&str]) -> Result<()> {
        let partitions = partitions.to_string();
        let mut args = vec!["topic", "create", name, "--partitions", &partitions];
        for config in configs {
            args.extend(["--config", config]);
        }
        self.cli(&args).map(|_| ())
    }

    /// Reads up to `count` records of `topic` from its start with confluent-kafka (20 s without
    /// a record ends the read): `[{"k", "v", "h": [[name, value]...]}]`, text decoded as UTF-8.
    pub fn consume(&self, topic: &str, count: usize) -> Result<Vec<serde_json::Value>> {
        let output = crate::Peer::python(CONSUME)
            .args([self.address(), topic.to_owned(), count.to_string()])
            .timeout(Duration::from_secs(60))
            .run()?;
        ensure!(
            output.status.success(),
            "consumer: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(serde_json::from_slice(&output.stdout)?)
    }

    /// Runs the tansu CLI against this broker (e.g. `["user", "create", "alice", "s3cret"]`)
    /// and returns what it printed.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let output = Command::new(tansu())
            .current_dir(self.dir.path())
            .args(args)
            .args(["--broker", &self.url()])
            .output()
            .context("running the tansu CLI")?;
        ensure!(
            output.status.success(),
            "tansu {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Creates SCRAM users (`name`, `secret`), then restarts the broker requiring SASL
    /// authentication (tansu: SCRAM-SHA-512 only). Create topics before this.
    pub fn require_authentication(&mut self, users: &[(&str, &str)]) -> Result<()> {
        for (name, secret) in users {
            self.cli(&["user", "create", name, secret])?;
        }
        self.args.push("--authentication".to_owned());
        self.restart()
    }

    /// Stops the broker and starts it again on the same port and data.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.launch()
    }

    /// Stops the broker and starts it again on the same port and data with other arguments.
    pub fn restart_with(&mut self, args: &[&str]) -> Result<()> {
        self.args = args.iter().map(|arg| (*arg).to_owned()).collect();
        self.restart()
    }

    /// Kills the broker process, keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs kcat with `args`, feeding it `stdin`, and returns what it printed. It loads the current
/// librdkafka of the peers directory (Debian's cannot parse tansu's ApiVersions answer).
pub fn kcat(args: &[&str], stdin: &str) -> Result<String> {
    let output = crate::peer::Peer::new("kcat")
        .env("LD_LIBRARY_PATH", crate::peer::peers_dir().join("lib"))
        .args(args)
        .stdin(stdin)
        .timeout(Duration::from_secs(40))
        .run()?;
    ensure!(
        output.status.success(),
        "kcat {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Reads `count` records of a topic from the start: `[{"k", "v", "h": [[name, value]...]}]`.
const CONSUME: &str = r#"
import json, sys, uuid
from confluent_kafka import Consumer
bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": str(uuid.uuid4()),
                     "auto.offset.reset": "earliest", "enable.auto.commit": False})
consumer.subscribe([topic])
records = []
while len(records) < count:
    message = consumer.poll(20)
    if message is None:
        break
    if message.error():
        continue
    text = lambda b: None if b is None else b.decode()
    records.append({"k": text(message.key()), "v": text(message.value()),
                    "h": [[n, text(v)] for n, v in (message.headers() or [])]})
consumer.close()
print(json.dumps(records))
"#;
