//! Test support: a real tansu broker per test, a plain TCP connector, and the Python
//! confluent-kafka client as the independent peer.
//!
//! The broker runs with the sqlite storage engine in a fresh directory on tmpfs, listening and
//! advertising on 127.0.0.1 with a port chosen at run time. Dropping a [`Broker`] kills it and
//! removes its directory.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use zilla_binding_kafka::wire::{Cluster, ClusterConfig, ConnectionConfig, NewTopic};
use zilla_engine::stream::{BoxFuture, ByteStream, BytesHandler, StreamError, StreamInfo};

/// Connects to `authority:port` with a plain TCP socket: the transport a tcp client binding
/// provides in production.
#[derive(Debug, Default)]
pub struct TcpConnector;

impl BytesHandler for TcpConnector {
    fn connect(&self, info: StreamInfo) -> BoxFuture<'_, Result<ByteStream, StreamError>> {
        Box::pin(async move {
            let host = info
                .authority
                .clone()
                .ok_or_else(|| StreamError::Upstream("no host".into()))?;
            let port = info
                .port
                .ok_or_else(|| StreamError::Upstream("no port".into()))?;
            let socket = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            socket.set_nodelay(true)?;
            Ok(ByteStream::new(socket, info))
        })
    }
}

/// The tansu executable: `$TANSU`, else `tansu` from `PATH`, else `~/.cargo/bin/tansu`.
fn tansu_executable() -> PathBuf {
    if let Some(path) = std::env::var_os("TANSU") {
        return path.into();
    }
    let from_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("tansu"))
            .find(|candidate| candidate.is_file())
    });
    from_path.unwrap_or_else(|| {
        let home = std::env::var_os("HOME").unwrap_or_default();
        PathBuf::from(home).join(".cargo/bin/tansu")
    })
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A tansu broker process with its own data directory.
pub struct Broker {
    pub port: u16,
    /// The port advertised in metadata (the broker's own unless started behind a [`Tap`]).
    pub advertised: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Broker {
    /// Starts a broker without authentication.
    pub fn start() -> Result<Self> {
        Self::start_with(&[])
    }

    /// Starts a broker with extra arguments (e.g. `--authentication`).
    pub fn start_with(args: &[&str]) -> Result<Self> {
        let port = free_port()?;
        Self::start_advertising(port, port, args)
    }

    /// Starts a broker behind a [`Tap`], which clients reach through the advertised address.
    pub async fn start_tapped() -> Result<(Self, Tap)> {
        let port = free_port()?;
        let tap = Tap::start(port).await?;
        let broker = Self::start_advertising(port, tap.port, &[])?;
        Ok((broker, tap))
    }

    fn start_advertising(port: u16, advertised: u16, args: &[&str]) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("zilla-kafka-wire-")
            .tempdir_in("/dev/shm")
            .or_else(|_| {
                tempfile::Builder::new()
                    .prefix("zilla-kafka-wire-")
                    .tempdir()
            })?;
        let mut broker = Self {
            port,
            advertised,
            dir,
            child: None,
        };
        broker.launch(args)?;
        Ok(broker)
    }

    fn launch(&mut self, args: &[&str]) -> Result<()> {
        let url = self.url();
        let advertised = format!("tcp://127.0.0.1:{}", self.advertised);
        let log = std::fs::File::create(self.dir.path().join("broker.log"))?;
        let child = Command::new(tansu_executable())
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
                "sqlite://tansu.db?maintenance_interval=2s",
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting tansu (install it with `cargo xtask peers`)")?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                bail!("tansu exited with {status}: {}", self.log());
            }
            if Instant::now() > deadline {
                bail!("tansu did not listen within 10 s: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The broker's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    /// `127.0.0.1:port`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `tcp://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("tcp://{}", self.address())
    }

    /// Kills the broker process, keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops and starts the broker on the same port and data directory.
    pub fn restart_with(&mut self, args: &[&str]) -> Result<()> {
        self.stop();
        self.launch(args)
    }

    /// Runs the tansu CLI against this broker (e.g. `["topic", "list"]`).
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let output = Command::new(tansu_executable())
            .current_dir(self.dir.path())
            .args(args)
            .args(["--broker", &self.url()])
            .output()?;
        if !output.status.success() {
            bail!(
                "tansu {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// A cluster client with test-sized timeouts.
    pub fn cluster(&self) -> Result<Cluster> {
        self.cluster_with(ConnectionConfig::default())
    }

    /// A cluster client with the given connection settings.
    pub fn cluster_with(&self, connection: ConnectionConfig) -> Result<Cluster> {
        let config = ClusterConfig {
            bootstrap: vec![self.address()],
            connection: ConnectionConfig {
                request_timeout: Duration::from_secs(10),
                connect_timeout: Duration::from_secs(5),
                ..connection
            },
            reconnect_backoff: Duration::from_millis(20),
            reconnect_backoff_max: Duration::from_millis(500),
            retry_timeout: Duration::from_secs(10),
            ..ClusterConfig::default()
        };
        Ok(Cluster::new(Arc::new(TcpConnector), config)?)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

type Captured = Arc<std::sync::Mutex<Vec<Arc<std::sync::Mutex<Vec<u8>>>>>>;

/// A TCP forwarder that records the bytes clients send, one buffer per connection: lets a
/// test look at what another client put on the wire.
pub struct Tap {
    pub port: u16,
    captured: Captured,
    task: tokio::task::JoinHandle<()>,
}

impl Tap {
    async fn start(target: u16) -> Result<Self> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let captured: Captured = Arc::default();
        let connections = captured.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(upstream) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                else {
                    continue;
                };
                let buffer = Arc::new(std::sync::Mutex::new(Vec::new()));
                connections.lock().unwrap().push(buffer.clone());
                let (mut client_read, mut client_write) = client.into_split();
                let (mut upstream_read, mut upstream_write) = upstream.into_split();
                tokio::spawn(async move {
                    let mut chunk = vec![0u8; 64 * 1024];
                    while let Ok(n) = client_read.read(&mut chunk).await {
                        if n == 0 || upstream_write.write_all(&chunk[..n]).await.is_err() {
                            break;
                        }
                        buffer.lock().unwrap().extend_from_slice(&chunk[..n]);
                    }
                    let _ = upstream_write.shutdown().await;
                });
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut upstream_read, &mut client_write).await;
                });
            }
        });
        Ok(Self {
            port,
            captured,
            task,
        })
    }

    /// What clients sent so far, per connection.
    pub fn captured(&self) -> Vec<Vec<u8>> {
        self.captured
            .lock()
            .unwrap()
            .iter()
            .map(|buffer| buffer.lock().unwrap().clone())
            .collect()
    }

    /// `127.0.0.1:port` of the tap.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Creates a topic through our client and checks the broker accepted it.
pub async fn create_topic(
    cluster: &Cluster,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<()> {
    let topic = NewTopic {
        configs: configs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..NewTopic::new(name, partitions)
    };
    let results = cluster
        .create_topics(&[topic], Duration::from_secs(5))
        .await?;
    for result in results {
        if !result.error.is_ok() {
            bail!("creating {name}: {} {:?}", result.error, result.message);
        }
    }
    Ok(())
}

/// The Python of the peers' virtualenv, which has confluent-kafka.
pub fn python() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.join("../../.peers/venv/bin/python")
}

/// Runs a Python script with arguments and stdin, returning stdout parsed as JSON.
pub fn run_python(script: &str, args: &[&str], stdin: &str) -> Result<serde_json::Value> {
    use std::io::Write;
    let mut child = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running the peers' python (create it with `cargo xtask peers`)")?;
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "python failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "python output is not JSON: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}
