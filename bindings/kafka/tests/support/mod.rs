//! Test support: a real tansu broker per test (the shared [`zilla_tests::Broker`]), a recording
//! forwarder to put in front of it, a plain TCP connector, and the Python confluent-kafka
//! client as the independent peer.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
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

pub use zilla_tests::Broker;

/// Our cluster client on a test broker.
pub trait BrokerCluster {
    /// A cluster client with test-sized timeouts.
    fn cluster(&self) -> Result<Cluster> {
        self.cluster_with(ConnectionConfig::default())
    }

    /// A cluster client with the given connection settings.
    fn cluster_with(&self, connection: ConnectionConfig) -> Result<Cluster>;
}

impl BrokerCluster for Broker {
    fn cluster_with(&self, connection: ConnectionConfig) -> Result<Cluster> {
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

/// Starts a broker behind a [`Tap`], which clients reach through the advertised address.
pub async fn start_tapped() -> Result<(Broker, Tap)> {
    let port = zilla_tests::free_port()?;
    let tap = Tap::start(port).await?;
    let broker = Broker::start_advertising(port, tap.port, &[])?;
    Ok((broker, tap))
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

pub use zilla_tests::python_json as run_python;
