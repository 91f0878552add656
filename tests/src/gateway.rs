//! A `zilla start` process with its own directory, started and waited on until ready.

use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::binary::zilla_binary;
use crate::peer::Peer;
use crate::process::Process;
use crate::ready::{self, Listener};

/// How long [`GatewayBuilder::start`] waits for the ready file by default.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How long an empty ready file must stay empty before it counts as "no listeners" when the
/// log has not said `started` (it may be a file seen between its creation and its first write).
const EMPTY_READY_GRACE: Duration = Duration::from_millis(100);

/// A running gateway: `zilla start -c <dir>/zilla.yaml -P zilla.engine.directory=<dir>/.zilla/engine`,
/// run in its own temporary directory. Killed when dropped; [`Gateway::terminate`] stops it
/// the way an operator does (`SIGTERM`, drain, exit status).
#[derive(Debug)]
pub struct Gateway {
    process: Process,
    listeners: Vec<Listener>,
    config_path: PathBuf,
    engine_dir: PathBuf,
    started_in: Duration,
    // Last: the directory is removed after the process is gone.
    dir: TempDir,
}

enum ConfigSource {
    Yaml(String),
    File(PathBuf),
    Url(String),
}

/// Options for starting a [`Gateway`]; see [`Gateway::builder`].
pub struct GatewayBuilder {
    config: ConfigSource,
    files: Vec<(PathBuf, Vec<u8>)>,
    env: Vec<(OsString, OsString)>,
    args: Vec<OsString>,
    binary: Option<PathBuf>,
    ready_timeout: Duration,
    echo_output: bool,
    own_process_group: bool,
}

impl std::fmt::Debug for GatewayBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayBuilder")
            .field("args", &self.args)
            .field("env", &self.env)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Starts a gateway on `yaml` and waits until it is ready.
    pub fn start(yaml: &str) -> Result<Gateway> {
        Self::builder(yaml).start()
    }

    /// A gateway on `yaml`, written to `zilla.yaml` in the gateway's directory and passed as
    /// `-c zilla.yaml` from that directory, so config errors name `zilla.yaml`.
    pub fn builder(yaml: &str) -> GatewayBuilder {
        GatewayBuilder::new(ConfigSource::Yaml(yaml.to_owned()))
    }

    /// A gateway on an existing config file (e.g. one of `examples/`), used in place: relative
    /// paths in it resolve against its own directory.
    pub fn from_file(path: impl Into<PathBuf>) -> GatewayBuilder {
        GatewayBuilder::new(ConfigSource::File(path.into()))
    }

    /// A gateway reading its config from `url` (`-c http://...`), which it polls for changes.
    pub fn from_url(url: &str) -> GatewayBuilder {
        GatewayBuilder::new(ConfigSource::Url(url.to_owned()))
    }

    /// Where clients connect to `binding`'s listener: `binding` is `namespace:name` or just
    /// `name`. An unspecified bound address (`0.0.0.0`) is given as loopback.
    ///
    /// # Panics
    /// When no listener belongs to `binding` (the message lists those that do exist): a test
    /// asking for a listener its config does not open has failed.
    pub fn address(&self, binding: &str) -> SocketAddr {
        match self.try_address(binding) {
            Some(address) => address,
            None => panic!(
                "no listener for binding `{binding}`; listeners: {:?}",
                self.listeners
                    .iter()
                    .map(|l| format!("{} {}", l.binding, l.bound))
                    .collect::<Vec<_>>()
            ),
        }
    }

    /// The first listening address of `binding`, if it has one.
    pub fn try_address(&self, binding: &str) -> Option<SocketAddr> {
        self.addresses(binding).into_iter().next()
    }

    /// Every listening address of `binding` (a `tcp` binding may listen on several ports).
    pub fn addresses(&self, binding: &str) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter(|listener| listener.is(binding))
            .map(Listener::address)
            .collect()
    }

    /// The listeners as read from the ready file at start.
    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// Reads the ready file again (after a reload changed the listeners) and returns it.
    pub fn refresh_listeners(&mut self) -> Result<&[Listener]> {
        let path = self.engine_dir.join("ready");
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {path:?}"))?;
        self.listeners = ready::parse(&text)?;
        Ok(&self.listeners)
    }

    /// The config file the gateway runs on. Rewrite it (or use [`Gateway::write_config`]) to
    /// exercise hot reload.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Replaces the config file's content in place (a plain write, as most tools do).
    pub fn write_config(&self, yaml: &str) -> Result<()> {
        std::fs::write(&self.config_path, yaml)
            .with_context(|| format!("cannot write {:?}", self.config_path))
    }

    /// The gateway's own temporary directory (its working directory).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The engine directory (`info`, `ready`, ...).
    pub fn engine_dir(&self) -> &Path {
        &self.engine_dir
    }

    /// A command running the same `zilla` binary from the gateway's directory with this
    /// gateway's engine directory, for `stop` and `metrics`: `gateway.command(["metrics"])`.
    pub fn command<I, S>(&self, args: I) -> Result<Command>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = crate::binary::zilla(args)?;
        command
            .arg("-P")
            .arg(engine_directory_property(&self.engine_dir))
            .current_dir(self.dir.path());
        Ok(command)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// How long it took from spawning the process to seeing its ready file.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// Resident memory of the gateway process in KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        self.process.rss_kib()
    }

    /// Everything the gateway printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.process.stdout()
    }

    /// Everything the gateway logged on stderr so far.
    pub fn stderr(&self) -> String {
        self.process.stderr()
    }

    /// Waits until the gateway's log (stderr) contains `needle`.
    pub fn wait_for_stderr(&self, needle: &str, timeout: Duration) -> Result<()> {
        self.process.wait_for_stderr(needle, timeout)
    }

    /// Waits until the gateway's stdout contains `needle` (e.g. a `stdout` exporter's events).
    pub fn wait_for_stdout(&self, needle: &str, timeout: Duration) -> Result<()> {
        self.process.wait_for_stdout(needle, timeout)
    }

    /// Sends a signal by name (`TERM`, `INT`, `HUP`...).
    pub fn signal(&self, signal: &str) -> Result<()> {
        self.process.signal(signal)
    }

    /// Stops the gateway with `SIGTERM` and returns its exit status once it has drained.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        self.process.terminate()
    }

    /// Waits for the gateway to exit on its own (e.g. after `zilla stop`).
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.process.wait(timeout)
    }

    /// The exit status if the gateway has exited, without waiting.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        self.process.try_status()
    }
}

impl GatewayBuilder {
    fn new(config: ConfigSource) -> Self {
        Self {
            config,
            files: Vec::new(),
            env: Vec::new(),
            args: Vec::new(),
            binary: None,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            echo_output: false,
            own_process_group: false,
        }
    }

    /// Writes a file (a keystore, a spec, a JWKS...) at `relative` in the gateway's directory
    /// before starting, where a `zilla.yaml` given as text finds it by relative path.
    pub fn file(mut self, relative: impl Into<PathBuf>, contents: impl Into<Vec<u8>>) -> Self {
        self.files.push((relative.into(), contents.into()));
        self
    }

    /// Sets an environment variable of the gateway process (read by `${{env.NAME}}`).
    pub fn env(mut self, name: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Adds `-P name=value`.
    pub fn property(self, name: &str, value: &str) -> Self {
        self.arg("-P").arg(format!("{name}={value}"))
    }

    /// Adds `-w workers`.
    pub fn workers(self, workers: usize) -> Self {
        self.arg("-w").arg(workers.to_string())
    }

    /// Adds an argument after `start -c <file> -P zilla.engine.directory=<dir>`.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Runs this binary instead of [`crate::zilla_binary`].
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// How long to wait for the ready file ([`DEFAULT_READY_TIMEOUT`] by default).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Also copies the gateway's output to stderr as it arrives (it is captured either way).
    pub fn echo_output(mut self) -> Self {
        self.echo_output = true;
        self
    }

    /// Runs the gateway in a process group of its own, so a Ctrl-C in the terminal reaches
    /// only the caller, which then stops the gateway itself.
    pub fn own_process_group(mut self) -> Self {
        self.own_process_group = true;
        self
    }

    /// Starts the gateway and waits until its ready file lists its listeners. Fails, with the
    /// gateway's log in the error, when it exits first or the timeout passes.
    pub fn start(self) -> Result<Gateway> {
        let binary = match self.binary {
            Some(binary) => binary,
            None => zilla_binary()?,
        };
        let dir = tempfile::Builder::new()
            .prefix("zilla-gateway-")
            .tempdir()
            .context("cannot create the gateway directory")?;
        for (relative, contents) in &self.files {
            let path = dir.path().join(relative);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, contents).with_context(|| format!("cannot write {path:?}"))?;
        }
        let (config_arg, config_path) = match self.config {
            ConfigSource::Yaml(yaml) => {
                let path = dir.path().join("zilla.yaml");
                std::fs::write(&path, yaml).with_context(|| format!("cannot write {path:?}"))?;
                (PathBuf::from("zilla.yaml"), path)
            }
            ConfigSource::File(path) => {
                let path = std::fs::canonicalize(&path)
                    .with_context(|| format!("no config file {path:?}"))?;
                (path.clone(), path)
            }
            // No file to rewrite: the test changes what the server serves.
            ConfigSource::Url(url) => (PathBuf::from(url), PathBuf::new()),
        };
        let engine_dir = dir.path().join(".zilla").join("engine");
        std::fs::create_dir_all(&engine_dir)?;

        let mut command = Command::new(&binary);
        command
            .arg("start")
            .arg("-c")
            .arg(&config_arg)
            .arg("-P")
            .arg(engine_directory_property(&engine_dir))
            .args(&self.args)
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .current_dir(dir.path())
            .stdin(Stdio::null());
        if self.own_process_group {
            command.process_group(0);
        }
        let spawned = Instant::now();
        let mut process = Process::spawn("zilla start", &mut command, self.echo_output)?;
        let listeners = wait_until_ready(&mut process, &engine_dir, self.ready_timeout)?;
        Ok(Gateway {
            started_in: spawned.elapsed(),
            process,
            listeners,
            config_path,
            engine_dir,
            dir,
        })
    }
}

fn engine_directory_property(engine_dir: &Path) -> OsString {
    let mut property = OsString::from("zilla.engine.directory=");
    property.push(engine_dir);
    property
}

fn wait_until_ready(
    process: &mut Process,
    engine_dir: &Path,
    timeout: Duration,
) -> Result<Vec<Listener>> {
    let ready_path = engine_dir.join("ready");
    let deadline = Instant::now() + timeout;
    let mut empty_since = None;
    loop {
        if let Some(status) = process.try_status()? {
            bail!(
                "zilla exited with {status} before it was ready; stderr:\n{}",
                process.stderr()
            );
        }
        match std::fs::read_to_string(&ready_path) {
            Ok(text) if ready::is_complete(&text) => {
                if !text.is_empty() {
                    return ready::parse(&text);
                }
                let since = *empty_since.get_or_insert_with(Instant::now);
                if process.stderr().contains("started") || since.elapsed() >= EMPTY_READY_GRACE {
                    return Ok(Vec::new());
                }
            }
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error).with_context(|| format!("cannot read {ready_path:?}")),
        }
        if Instant::now() >= deadline {
            process.kill();
            bail!(
                "zilla was not ready within {timeout:?} (no complete {ready_path:?}); stderr:\n{}",
                process.stderr()
            );
        }
        // Fine-grained so that start-up times measured through this are not rounded up.
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Runs `zilla validate -c zilla.yaml` on `yaml` (written to a temporary directory, so errors
/// read `zilla.yaml:<line>:<column>: <path>: <message>`).
pub fn validate(yaml: &str) -> Result<Output> {
    validate_with_env(yaml, &[])
}

/// [`validate`] with environment variables for `${{env.NAME}}`.
pub fn validate_with_env(yaml: &str, env: &[(&str, &str)]) -> Result<Output> {
    let dir = tempfile::Builder::new()
        .prefix("zilla-validate-")
        .tempdir()?;
    std::fs::write(dir.path().join("zilla.yaml"), yaml)?;
    let mut peer = Peer::new(zilla_binary()?)
        .args(["validate", "-c", "zilla.yaml"])
        .current_dir(dir.path());
    for (name, value) in env {
        peer = peer.env(name, value);
    }
    peer.run()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our own stand-in for the binary, speaking only the readiness protocol, so that these
    /// tests check the harness whatever state the gateway is in.
    const PROTOCOL_SCRIPT: &str = r#"#!/bin/sh
dir=$(echo "$5" | sed 's/^zilla.engine.directory=//')
echo "pid=$$" > "$dir/info"
trap 'echo draining >&2; exit 0' TERM
if [ "$MODE" = fail ]; then echo "zilla.yaml:1:1: : broken" >&2; exit 1; fi
if [ "$MODE" = never ]; then while :; do sleep 0.05; done; fi
if [ "$MODE" = empty ]; then : > "$dir/ready"; echo "started" >&2; while :; do sleep 0.05; done; fi
printf 'example:tcp_server 0.0.0.0:%s\nexample:tls_server 127.0.0.1:2\n' "$PORT" > "$dir/ready.tmp"
mv "$dir/ready.tmp" "$dir/ready"
echo "config $3 started" >&2
while :; do sleep 0.05; done
"#;

    fn script(dir: &Path) -> Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("zilla");
        std::fs::write(&path, PROTOCOL_SCRIPT)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        Ok(path)
    }

    #[test]
    fn ready_listeners_are_addressable_and_terminate_drains() -> Result<()> {
        let bin = tempfile::tempdir()?;
        let mut gateway = Gateway::builder("name: example\n")
            .binary(script(bin.path())?)
            .env("PORT", "4567")
            .start()?;
        assert_eq!(gateway.address("tcp_server"), "127.0.0.1:4567".parse()?);
        assert_eq!(
            gateway.address("example:tls_server"),
            "127.0.0.1:2".parse()?
        );
        assert_eq!(gateway.try_address("other"), None);
        assert_eq!(
            std::fs::read_to_string(gateway.config_path())?,
            "name: example\n"
        );
        gateway.wait_for_stderr("config zilla.yaml started", Duration::from_secs(5))?;
        let info = std::fs::read_to_string(gateway.engine_dir().join("info"))?;
        assert_eq!(info.trim(), format!("pid={}", gateway.pid()));
        assert!(gateway.rss_kib()? > 0);
        let status = gateway.terminate()?;
        assert!(status.success(), "{status}");
        assert!(gateway.stderr().contains("draining"));
        Ok(())
    }

    #[test]
    fn an_exit_before_ready_is_an_error_with_the_log() -> Result<()> {
        let bin = tempfile::tempdir()?;
        let result = Gateway::builder("name: example\n")
            .binary(script(bin.path())?)
            .env("MODE", "fail")
            .start();
        let error = result.err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(error.contains("before it was ready"), "{error}");
        assert!(error.contains("zilla.yaml:1:1"), "{error}");
        Ok(())
    }

    #[test]
    fn a_gateway_never_ready_times_out() -> Result<()> {
        let bin = tempfile::tempdir()?;
        let result = Gateway::builder("name: example\n")
            .binary(script(bin.path())?)
            .env("MODE", "never")
            .ready_timeout(Duration::from_millis(300))
            .start();
        let error = result.err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(error.contains("not ready within"), "{error}");
        Ok(())
    }

    #[test]
    fn an_empty_ready_file_means_no_listeners() -> Result<()> {
        let bin = tempfile::tempdir()?;
        let gateway = Gateway::builder("name: example\n")
            .binary(script(bin.path())?)
            .env("MODE", "empty")
            .start()?;
        assert!(gateway.listeners().is_empty());
        Ok(())
    }

    #[test]
    fn extra_files_land_next_to_the_config() -> Result<()> {
        let bin = tempfile::tempdir()?;
        let gateway = Gateway::builder("name: example\n")
            .binary(script(bin.path())?)
            .env("PORT", "1")
            .file("tls/keys.pem", "secret")
            .start()?;
        assert_eq!(
            std::fs::read_to_string(gateway.dir().join("tls/keys.pem"))?,
            "secret"
        );
        Ok(())
    }
}
