//! The Kafka side of the benchmarks: a tansu broker on SQLite in a directory on tmpfs, our own
//! Kafka wire client for producing to it directly, and a count of the gateway's connections to
//! it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use zilla_binding_kafka::wire::{Cluster, ClusterConfig, ConnectionConfig};
use zilla_engine::stream::{BoxFuture, ByteStream, BytesHandler, StreamError, StreamInfo};
use zilla_tests::{Peer, Process, free_port, success};

use crate::shell::{cmd, find_program};

const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A tansu broker listening and advertising on 127.0.0.1; stopped, and its data removed, when
/// dropped.
pub struct Broker {
    process: Process,
    port: u16,
    // Last: the directory goes once the process is gone.
    dir: tempfile::TempDir,
}

impl Broker {
    /// Starts a broker with the SQLite engine in a fresh directory on `/dev/shm` (the
    /// temporary directory when there is no tmpfs), and waits until it listens.
    pub fn start() -> Result<Self> {
        Self::start_maintained_every(Duration::from_secs(2))
    }

    /// [`Broker::start`] with SQLite maintenance (tansu's compaction and retention pass) every
    /// `interval` (whole seconds, at least one): a pass over a table of a million records
    /// takes longer than the 2 s [`Broker::start`] leaves between passes, and the broker then
    /// answers nothing else.
    pub fn start_maintained_every(interval: Duration) -> Result<Self> {
        let tansu = tansu()?;
        let dir = tempfile::Builder::new()
            .prefix("zilla-bench-tansu-")
            .tempdir_in("/dev/shm")
            .or_else(|_| {
                tempfile::Builder::new()
                    .prefix("zilla-bench-tansu-")
                    .tempdir()
            })
            .context("cannot create the broker's directory")?;
        let port = free_port()?;
        let url = format!("tcp://127.0.0.1:{port}");
        let process = Peer::new(tansu)
            .current_dir(dir.path())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .arg("--storage-engine")
            .arg(format!(
                "sqlite://tansu.db?maintenance_interval={}s",
                interval.as_secs().max(1)
            ))
            .spawn()?;
        let mut broker = Self { process, port, dir };
        broker.wait_until_listening()?;
        Ok(broker)
    }

    fn wait_until_listening(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.process.try_status()? {
                bail!(
                    "tansu exited with {status}:\n{}{}",
                    self.process.stdout(),
                    self.process.stderr()
                );
            }
            if zilla_tests::accepts_connections(self.port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "tansu did not listen on port {} within {READY_TIMEOUT:?}",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `127.0.0.1:<port>`, as a bootstrap server.
    pub fn address(&self) -> String {
        self.socket_address().to_string()
    }

    fn socket_address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// `tansu topic create --partitions <partitions> <name>`.
    pub fn create_topic(&self, name: &str, partitions: u32) -> Result<()> {
        self.create_topic_with(name, partitions, &[])
    }

    /// [`Broker::create_topic`] with topic configs (`name=value`, e.g.
    /// `cleanup.policy=compact`), each given as `--config`.
    pub fn create_topic_with(&self, name: &str, partitions: u32, configs: &[&str]) -> Result<()> {
        let mut peer = Peer::new(tansu()?)
            .current_dir(self.dir.path())
            .args(["topic", "create", "--broker"])
            .arg(format!("tcp://{}", self.address()))
            .arg("--partitions")
            .arg(partitions.to_string());
        for config in configs {
            peer = peer.args(["--config", config]);
        }
        let output = peer.arg(name).run()?;
        success(&output).with_context(|| format!("cannot create topic {name}"))
    }

    /// Our own Kafka client, connected straight to the broker over plain TCP.
    pub fn cluster(&self) -> Result<Cluster> {
        cluster(&self.address())
    }
}

/// Our own Kafka client, connected over plain TCP to the broker at `bootstrap`.
pub fn cluster(bootstrap: &str) -> Result<Cluster> {
    let config = ClusterConfig {
        bootstrap: vec![bootstrap.to_owned()],
        connection: ConnectionConfig {
            client_id: "zilla-bench".to_owned(),
            ..ConnectionConfig::default()
        },
        ..ClusterConfig::default()
    };
    Ok(Cluster::new(Arc::new(TcpConnector), config)?)
}

impl Drop for Broker {
    fn drop(&mut self) {
        // How tansu exits on SIGTERM says nothing about the gateway.
        let _ = self.process.terminate();
    }
}

fn tansu() -> Result<std::path::PathBuf> {
    find_program("tansu").context("tansu is not installed: run `cargo xtask peers --only tansu`")
}

/// Connects to `authority:port` with a plain TCP socket, as a tcp client binding does for the
/// gateway.
struct TcpConnector;

impl BytesHandler for TcpConnector {
    fn connect(&self, info: StreamInfo) -> BoxFuture<'_, Result<ByteStream, StreamError>> {
        Box::pin(async move {
            let host = info
                .authority
                .clone()
                .ok_or_else(|| StreamError::Upstream("no broker host".into()))?;
            let port = info
                .port
                .ok_or_else(|| StreamError::Upstream("no broker port".into()))?;
            let socket = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            socket.set_nodelay(true)?;
            Ok(ByteStream::new(socket, info))
        })
    }
}

/// The established TCP connections process `pid` holds to `127.0.0.1:<port>`, from
/// `ss -Htnp state established dst 127.0.0.1:<port>`.
pub fn sockets_to(pid: u32, port: u16) -> Result<usize> {
    let output = cmd(
        "ss",
        [
            "-Htnp",
            "state",
            "established",
            "dst",
            &format!("127.0.0.1:{port}"),
        ],
    )
    .output()
    .context("cannot run ss (install iproute2 with `cargo xtask peers --only apt`)")?;
    if !output.status.success() {
        bail!("ss failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(count_owned_by(
        &String::from_utf8_lossy(&output.stdout),
        pid,
    ))
}

/// The lines of an `ss -p` listing whose `users:((...))` name `pid`.
fn count_owned_by(listing: &str, pid: u32) -> usize {
    let needle = format!("pid={pid},");
    listing
        .lines()
        .filter(|line| {
            line.split_once("users:(")
                .is_some_and(|(_, users)| users.contains(&needle))
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_are_counted_per_process() {
        let listing = "\
0      0      127.0.0.1:60352 127.0.0.1:19092 users:((\"zilla\",pid=4406,fd=31))
0      0      127.0.0.1:60354 127.0.0.1:19092 users:((\"zilla\",pid=4406,fd=32))
0      0      127.0.0.1:60356 127.0.0.1:19092 users:((\"xtask\",pid=44060,fd=9))
0      0      127.0.0.1:60358 127.0.0.1:19092 users:((\"python3\",pid=406,fd=3))
0      0      127.0.0.1:60360 127.0.0.1:19092
";
        assert_eq!(count_owned_by(listing, 4406), 2);
        assert_eq!(count_owned_by(listing, 44060), 1);
        assert_eq!(count_owned_by(listing, 406), 1);
        assert_eq!(count_owned_by(listing, 1), 0);
        assert_eq!(count_owned_by("", 4406), 0);
    }

    /// A real broker takes a topic, our client produces to it, and `ss` sees our connection.
    #[test]
    fn a_broker_serves_our_client_and_its_sockets_are_counted() -> Result<()> {
        use zilla_binding_kafka::wire::{Acks, ProduceOptions, Record};
        let broker = Broker::start()?;
        broker.create_topic("bench-check", 1)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let cluster = broker.cluster()?;
        let record = Record {
            timestamp: 0,
            key: None,
            value: Some(bytes::Bytes::from_static(b"hello")),
            headers: Vec::new(),
        };
        let options = ProduceOptions {
            acks: Acks::Leader,
            ..ProduceOptions::default()
        };
        let records = std::slice::from_ref(&record);
        let first = runtime.block_on(cluster.produce("bench-check", 0, records, &options))?;
        let second = runtime.block_on(cluster.produce("bench-check", 0, records, &options))?;
        assert_eq!((first, second), (Some(0), Some(1)));
        assert!(sockets_to(std::process::id(), broker.port())? >= 1);
        assert_eq!(sockets_to(broker.pid(), broker.port())?, 0);
        Ok(())
    }
}
