//! Command-line peers: `nc`, `openssl s_client`, `curl`, `mosquitto_sub`, a Python client... run
//! to completion with bytes on stdin and a timeout, or kept running in the background.

use std::ffi::OsStr;
use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::binary::workspace_dir;
use crate::process::Process;

/// How long [`Peer::run`] waits by default.
pub const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_secs(20);

/// A command-line program on the other side of a test.
///
/// ```no_run
/// # fn main() -> anyhow::Result<()> {
/// use zilla_tests::Peer;
/// let output = Peer::new("nc")
///     .args(["-q1", "127.0.0.1", "12345"])
///     .stdin("hello\n")
///     .run()?;
/// assert_eq!(output.stdout, b"hello\n");
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Peer {
    name: String,
    command: Command,
    stdin: Option<Vec<u8>>,
    hold_stdin: Duration,
    timeout: Duration,
    echo: bool,
}

impl Peer {
    /// A peer running `program` (looked up in `PATH`).
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        let program = program.as_ref();
        Self {
            name: program.to_string_lossy().into_owned(),
            command: Command::new(program),
            stdin: None,
            hold_stdin: Duration::ZERO,
            timeout: DEFAULT_PEER_TIMEOUT,
            echo: false,
        }
    }

    /// A peer running a Python script with the interpreter of the peers' virtualenv
    /// (`.peers/venv`, where `cargo xtask peers` installs confluent-kafka, paho-mqtt, grpcio,
    /// websockets, PyJWT...).
    pub fn python(script: &str) -> Self {
        let mut peer = Self::new(python());
        peer.command.args(["-c", script]);
        peer.name = "python".to_owned();
        peer
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.command.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.command.env(name, value);
        self
    }

    /// Sets the working directory.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.command.current_dir(dir.into());
        self
    }

    /// Bytes written to the peer's stdin, which is then closed (without this, stdin is empty).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// Keeps stdin open for `duration` after writing it, for peers that stop reading from the
    /// network as soon as stdin ends (e.g. `openssl s_client` without `-ign_eof`).
    pub fn hold_stdin(mut self, duration: Duration) -> Self {
        self.hold_stdin = duration;
        self
    }

    /// How long [`Peer::run`] waits for the peer to exit ([`DEFAULT_PEER_TIMEOUT`] by default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Also copies the peer's output to stderr as it arrives (for debugging a test).
    pub fn echo_output(mut self) -> Self {
        self.echo = true;
        self
    }

    /// Runs the peer to completion. An error when it cannot start or is still running after
    /// the timeout (it is then killed; the error shows its output). A non-zero exit is not an
    /// error: check `output.status`.
    pub fn run(self) -> Result<Output> {
        let name = self.name.clone();
        let timeout = self.timeout;
        let mut process = self.spawn()?;
        let status = process
            .wait(timeout)
            .with_context(|| format!("peer `{name}` timed out"))?;
        Ok(Output {
            status,
            stdout: process.stdout().into_bytes(),
            stderr: process.stderr().into_bytes(),
        })
    }

    /// Starts the peer in the background (a server such as `mosquitto`, or a subscriber). It
    /// is killed when the returned [`Process`] is dropped.
    pub fn spawn(mut self) -> Result<Process> {
        let stdin = self.stdin.take();
        self.command.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut process = Process::spawn(&self.name, &mut self.command, self.echo)?;
        if let (Some(bytes), Some(mut pipe)) = (stdin, process.child_mut().stdin.take()) {
            let hold = self.hold_stdin;
            std::thread::spawn(move || {
                // A peer may exit before reading everything; that shows in its output.
                let _ = pipe.write_all(&bytes).and_then(|()| pipe.flush());
                std::thread::sleep(hold);
            });
        }
        Ok(process)
    }
}

/// The Python interpreter of the peers' virtualenv (`<workspace>/.peers/venv/bin/python`).
pub fn python() -> PathBuf {
    peers_dir().join("venv").join("bin").join("python")
}

/// Runs a Python script of the peers' virtualenv with arguments and `stdin`, and parses what it
/// printed as JSON: how the crate tests drive confluent-kafka and other Python clients.
pub fn python_json(script: &str, args: &[&str], stdin: &str) -> Result<serde_json::Value> {
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

/// Where `cargo xtask peers` installs what does not go system-wide (`<workspace>/.peers`).
pub fn peers_dir() -> PathBuf {
    workspace_dir().join(".peers")
}

/// A TCP port that was free on 127.0.0.1 a moment ago. Another process may take it before it
/// is used: prefer port 0 in gateway configs and read the chosen port from the ready file
/// ([`crate::Gateway::address`]); use this for peers that cannot report their port.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Whether a server accepts connections on `127.0.0.1:port`. A connection whose local
/// address is its own peer is not a server: while nothing listens on a port of the kernel's
/// ephemeral range, a connect to it can be given that same port as its source and complete
/// by simultaneous open, connected to itself, and a wait loop would take the peer for ready
/// before it has bound its port.
pub fn accepts_connections(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port))
        .is_ok_and(|stream| stream.local_addr().ok() != stream.peer_addr().ok())
}

/// The first of `count` consecutive ports free on 127.0.0.1 (for a server listening on a
/// port range, such as a Kafka proxy's one port per broker). They are picked below the
/// kernel's ephemeral range, so neither [`free_port`] nor an outgoing connection takes one of
/// them between this check and the server binding them.
pub fn free_port_block(count: u16) -> Result<u16> {
    use std::hash::BuildHasher;
    const FLOOR: u16 = 10_000;
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let span = ephemeral.saturating_sub(FLOOR).saturating_sub(count);
    ensure!(span > 0, "no room for {count} ports below {ephemeral}");
    for attempt in 0..200u32 {
        let random = std::collections::hash_map::RandomState::new().hash_one(attempt);
        let first = FLOOR + (random % u64::from(span)) as u16;
        let bound: std::io::Result<Vec<TcpListener>> = (first..first + count)
            .map(|port| TcpListener::bind(("127.0.0.1", port)))
            .collect();
        if bound.is_ok() {
            return Ok(first);
        }
    }
    bail!("no {count} consecutive free ports")
}

/// Checks that `output` is a successful exit, with its stderr in the error otherwise.
pub fn success(output: &Output) -> Result<()> {
    if !output.status.success() {
        bail!(
            "exited with {}; stdout:\n{}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn stdin_reaches_the_peer_and_stdout_comes_back() -> Result<()> {
        let output = Peer::new("cat").stdin("hello\n").run()?;
        success(&output)?;
        assert_eq!(output.stdout, b"hello\n");
        Ok(())
    }

    #[test]
    fn a_peer_still_running_at_the_timeout_is_an_error_with_its_output() -> Result<()> {
        let started = Instant::now();
        let result = Peer::new("sh")
            .args(["-c", "echo partial; sleep 30"])
            .timeout(Duration::from_millis(300))
            .run();
        let error = match result {
            Ok(output) => bail!("should time out, got {output:?}"),
            Err(error) => format!("{error:#}"),
        };
        assert!(error.contains("timed out"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(10));
        Ok(())
    }

    #[test]
    fn held_stdin_stays_open() -> Result<()> {
        // `cat` exits at stdin EOF, so it runs at least as long as stdin is held.
        let started = Instant::now();
        let output = Peer::new("cat")
            .stdin("x")
            .hold_stdin(Duration::from_millis(400))
            .run()?;
        assert_eq!(output.stdout, b"x");
        assert!(started.elapsed() >= Duration::from_millis(400));
        Ok(())
    }

    #[test]
    fn non_zero_exits_are_reported_by_success() -> Result<()> {
        let output = Peer::new("sh").args(["-c", "echo why >&2; exit 3"]).run()?;
        assert_eq!(output.status.code(), Some(3));
        let error = success(&output).err().map(|e| e.to_string());
        assert!(error.is_some_and(|e| e.contains("why")));
        Ok(())
    }

    #[test]
    fn free_ports_can_be_bound() -> Result<()> {
        let port = free_port()?;
        assert_ne!(port, 0);
        TcpListener::bind(("127.0.0.1", port))?;
        Ok(())
    }
}
