//! A child process whose stdout and stderr are drained by threads into shared buffers, so the
//! child never blocks on a full pipe and a test can read what it printed so far at any time.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long [`Process::terminate`] waits for the process to exit after `SIGTERM`.
pub const TERMINATE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the output of an exited process is still collected.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// What a process printed on one of its pipes so far.
#[derive(Clone, Default)]
pub(crate) struct Capture {
    shared: Arc<(Mutex<CaptureState>, Condvar)>,
}

#[derive(Default)]
struct CaptureState {
    bytes: Vec<u8>,
    closed: bool,
}

impl Capture {
    pub(crate) fn bytes(&self) -> Vec<u8> {
        let (state, _) = &*self.shared;
        state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .bytes
            .clone()
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    fn append(&self, chunk: &[u8]) {
        let (state, changed) = &*self.shared;
        state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .bytes
            .extend_from_slice(chunk);
        changed.notify_all();
    }

    fn close(&self) {
        let (state, changed) = &*self.shared;
        state.lock().unwrap_or_else(PoisonError::into_inner).closed = true;
        changed.notify_all();
    }

    /// Waits until the captured text contains `needle`; false on timeout or when the pipe
    /// closed without it.
    pub(crate) fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (state, changed) = &*self.shared;
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if String::from_utf8_lossy(&state.bytes).contains(needle) {
                return true;
            }
            let now = Instant::now();
            if state.closed || now >= deadline {
                return false;
            }
            state = changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Drains `reader` on a thread, copying to `echo` as well when given.
    pub(crate) fn drain(
        &self,
        mut reader: impl Read + Send + 'static,
        mut echo: Option<Box<dyn Write + Send>>,
    ) -> JoinHandle<()> {
        let capture = self.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 8192];
            loop {
                match reader.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(read) => {
                        capture.append(&buffer[..read]);
                        if let Some(echo) = echo.as_mut() {
                            // Echoing is a convenience for a human watching; losing it is harmless.
                            let _ = echo.write_all(&buffer[..read]).and_then(|()| echo.flush());
                        }
                    }
                }
            }
            capture.close();
        })
    }
}

/// A running child process with captured output. Killed (`SIGKILL`) when dropped, so a failing
/// test never leaves it behind.
pub struct Process {
    name: String,
    child: Child,
    stdout: Capture,
    stderr: Capture,
    drains: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("pid", &self.child.id())
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Process {
    /// Spawns `command` with piped stdout and stderr (and null stdin unless the command set
    /// one). With `echo`, output is also copied to this process's stderr as it arrives.
    pub(crate) fn spawn(name: &str, command: &mut Command, echo: bool) -> Result<Self> {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start `{name}`"))?;
        let stdout = Capture::default();
        let stderr = Capture::default();
        let mut drains = Vec::new();
        let echo_to = || echo.then(|| Box::new(std::io::stderr()) as Box<dyn Write + Send>);
        if let Some(pipe) = child.stdout.take() {
            drains.push(stdout.drain(pipe, echo_to()));
        }
        if let Some(pipe) = child.stderr.take() {
            drains.push(stderr.drain(pipe, echo_to()));
        }
        Ok(Self {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
            drains,
            status: None,
        })
    }

    pub(crate) fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything printed on stdout so far (lossy UTF-8).
    pub fn stdout(&self) -> String {
        self.stdout.text()
    }

    /// Everything printed on stderr so far (lossy UTF-8).
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Waits until stdout contains `needle`.
    pub fn wait_for_stdout(&self, needle: &str, timeout: Duration) -> Result<()> {
        if self.stdout.wait_for(needle, timeout) {
            return Ok(());
        }
        bail!(
            "`{}` did not print {needle:?} on stdout within {timeout:?}; stdout:\n{}\nstderr:\n{}",
            self.name,
            self.stdout(),
            self.stderr()
        )
    }

    /// Waits until stderr contains `needle` (logs go to stderr).
    pub fn wait_for_stderr(&self, needle: &str, timeout: Duration) -> Result<()> {
        if self.stderr.wait_for(needle, timeout) {
            return Ok(());
        }
        bail!(
            "`{}` did not print {needle:?} on stderr within {timeout:?}; stderr:\n{}",
            self.name,
            self.stderr()
        )
    }

    /// The exit status if the process has exited, without waiting.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
            if self.status.is_some() {
                self.join_drains();
            }
        }
        Ok(self.status)
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!(
                    "`{}` (pid {}) did not exit within {timeout:?}; stderr:\n{}",
                    self.name,
                    self.pid(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends a signal by name (`TERM`, `INT`, `HUP`, `USR2`...) with the system `kill` command.
    pub fn signal(&self, signal: &str) -> Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("cannot run `kill`")?;
        if !status.success() {
            bail!("`kill -{signal} {}` failed: {status}", self.pid());
        }
        Ok(())
    }

    /// Sends `SIGTERM` and waits (up to [`TERMINATE_TIMEOUT`]) for the exit status. On timeout
    /// the process is killed and an error returned.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.try_status()? {
            return Ok(status);
        }
        self.signal("TERM")?;
        match self.wait(TERMINATE_TIMEOUT) {
            Ok(status) => Ok(status),
            Err(error) => {
                self.kill();
                Err(error.context(format!("`{}` ignored SIGTERM; killed", self.name)))
            }
        }
    }

    /// Kills the process (`SIGKILL`) and reaps it.
    pub fn kill(&mut self) {
        if self.status.is_none() {
            // Both fail only when the process is already gone, which is what we want.
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
            self.join_drains();
        }
    }

    /// Resident memory in KiB (`VmRSS` from `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> Result<u64> {
        rss_kib(self.pid())
    }

    /// Lets the drain threads take in the last output. A pipe can outlive the process when a
    /// child of it inherited the pipe (`sh -c 'sleep 30'`), so the wait is bounded and a
    /// remaining thread is left to end with that pipe.
    fn join_drains(&mut self) {
        let deadline = Instant::now() + DRAIN_GRACE;
        while Instant::now() < deadline && !self.drains.iter().all(JoinHandle::is_finished) {
            std::thread::sleep(Duration::from_millis(1));
        }
        for drain in self.drains.drain(..) {
            if drain.is_finished() {
                // A drain thread never panics.
                let _ = drain.join();
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Resident memory of process `pid` in KiB (`VmRSS` from `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_vm_rss(&status).with_context(|| format!("no VmRSS line in {path}"))
}

/// Resident memory of process `pid` in bytes (0 once it is gone).
pub fn rss_bytes(pid: u32) -> u64 {
    rss_kib(pid).map_or(0, |kib| kib * 1024)
}

/// Samples the resident memory of a process every 20 ms until dropped and keeps the peak: a
/// peak between coarser samples would be missed, and a memory bound is about what a process
/// holds at worst.
pub struct RssSampler {
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    /// Starts sampling process `pid`.
    pub fn start(pid: u32) -> Self {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let (peak, stop) = (
            std::sync::Arc::new(AtomicU64::new(rss_bytes(pid))),
            std::sync::Arc::new(AtomicBool::new(false)),
        );
        let thread = {
            let (peak, stop) = (peak.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_bytes(pid), Ordering::Relaxed);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            })
        };
        Self {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    /// The highest resident memory seen so far, in bytes.
    pub fn peak(&self) -> u64 {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\tzilla\nVmPeak:\t  20000 kB\nVmRSS:\t    5120 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(5120));
        assert_eq!(parse_vm_rss("Name:\tzilla\n"), None);
    }

    #[test]
    fn own_rss_is_positive() -> Result<()> {
        assert!(rss_kib(std::process::id())? > 0);
        Ok(())
    }

    #[test]
    fn output_is_captured_while_the_process_runs() -> Result<()> {
        let mut command = Command::new("sh");
        command.args(["-c", "echo out; echo err >&2; sleep 30"]);
        let mut process = Process::spawn("sh", &mut command, false)?;
        process.wait_for_stdout("out", Duration::from_secs(5))?;
        process.wait_for_stderr("err", Duration::from_secs(5))?;
        assert!(process.try_status()?.is_none());
        let status = process.terminate()?;
        assert!(!status.success(), "sh dies of SIGTERM: {status}");
        Ok(())
    }

    #[test]
    fn waiting_for_missing_output_fails_with_what_was_printed() -> Result<()> {
        let mut command = Command::new("sh");
        command.args(["-c", "echo something-else"]);
        let process = Process::spawn("sh", &mut command, false)?;
        let error = match process.wait_for_stdout("never", Duration::from_millis(200)) {
            Ok(()) => anyhow::bail!("wait_for_stdout should fail"),
            Err(error) => format!("{error:#}"),
        };
        assert!(error.contains("something-else"), "{error}");
        Ok(())
    }

    #[test]
    fn a_process_that_traps_sigterm_exits_cleanly() -> Result<()> {
        let mut command = Command::new("sh");
        command.args([
            "-c",
            "trap 'exit 0' TERM; echo up; while :; do sleep 0.05; done",
        ]);
        let mut process = Process::spawn("sh", &mut command, false)?;
        process.wait_for_stdout("up", Duration::from_secs(5))?;
        assert!(process.terminate()?.success());
        Ok(())
    }
}
