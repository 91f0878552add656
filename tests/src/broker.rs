//! A real Kafka-compatible broker for end-to-end tests: tansu with its sqlite storage engine in
//! a fresh directory (on tmpfs when there is one), listening and advertising on 127.0.0.1 at a
//! port chosen at run time. Dropping a [`Broker`] stops it and removes its data.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::peer::free_port;

/// A running tansu broker.
pub struct Broker {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Extra `tansu broker` arguments (`--authentication`).
    extra: Vec<&'static str>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("port", &self.port).finish()
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
    /// Starts a broker and waits until it listens.
    pub fn start() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("zilla-e2e-broker-")
            .tempdir_in("/dev/shm")
            .or_else(|_| {
                tempfile::Builder::new()
                    .prefix("zilla-e2e-broker-")
                    .tempdir()
            })?;
        let mut broker = Self {
            port: free_port()?,
            dir,
            child: None,
            extra: Vec::new(),
        };
        broker.launch()?;
        Ok(broker)
    }

    fn launch(&mut self) -> Result<()> {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::File::create(self.dir.path().join("broker.log"))?;
        let child = Command::new(tansu())
            .current_dir(self.dir.path())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args([
                "--storage-engine",
                "sqlite://tansu.db?maintenance_interval=2s",
            ])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting tansu (install it with `cargo xtask peers`)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                bail!("tansu exited with {status}: {}", self.log());
            }
            ensure!(
                Instant::now() < deadline,
                "tansu did not listen: {}",
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

    /// The broker's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What the broker logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    /// Creates a topic with `partitions`, log-compacted when `compact`.
    pub fn create_topic(&self, name: &str, partitions: u32, compact: bool) -> Result<()> {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let partitions = partitions.to_string();
        let mut command = Command::new(tansu());
        command.current_dir(self.dir.path()).args([
            "topic",
            "create",
            "--broker",
            &url,
            "--partitions",
            &partitions,
        ]);
        if compact {
            command.args(["--config", "cleanup.policy=compact"]);
        }
        let output = command.arg(name).output().context("tansu topic create")?;
        ensure!(
            output.status.success(),
            "tansu topic create {name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    /// Creates SCRAM users (`name`, `secret`), then restarts the broker requiring SASL
    /// authentication (tansu: SCRAM-SHA-512 only). Create topics before this.
    pub fn require_authentication(&mut self, users: &[(&str, &str)]) -> Result<()> {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        for (name, secret) in users {
            let output = Command::new(tansu())
                .current_dir(self.dir.path())
                .args(["user", "create", "--broker", &url, name, secret])
                .output()
                .context("tansu user create")?;
            ensure!(
                output.status.success(),
                "tansu user create {name}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        self.extra = vec!["--authentication"];
        self.restart()
    }

    /// Stops the broker and starts it again on the same port and data.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.launch()
    }

    fn stop(&mut self) {
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
