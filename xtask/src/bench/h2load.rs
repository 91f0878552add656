//! Running `h2load` (nghttp2's HTTP/2 load generator) and reading its report.

use std::process::{Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::wrk::parse_duration;
use crate::shell::cmd;

/// What `h2load` reports about one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// `finished in <elapsed>, <rate> req/s`: in a timing-based run (`-D`) the rate counts the
    /// main duration only.
    pub elapsed: Duration,
    pub requests_per_second: f64,
    /// `requests: N total, N started, ...`: requests sent, answered or not.
    pub started: u64,
    /// `requests: ... N succeeded, N failed, N errored, N timeout`.
    pub succeeded: u64,
    pub failed: u64,
    pub errored: u64,
    pub timeout: u64,
    /// Responses with a status outside 2xx (`status codes:`).
    pub non_success: u64,
    /// What the first connection negotiated: `TLS Protocol:`, `Cipher:`, `Server Temp Key:`
    /// (the key exchange group) and `Application protocol:`.
    pub tls_protocol: String,
    pub cipher: String,
    pub key_exchange: String,
    pub application_protocol: String,
}

impl Report {
    /// An error unless every request succeeded with a 2xx status over TLS 1.3 and HTTP/2.
    pub fn check(&self) -> Result<()> {
        self.check_answers()?;
        if self.tls_protocol != "TLSv1.3" || self.application_protocol != "h2" {
            bail!(
                "negotiated {} and {} instead of TLSv1.3 and h2",
                self.tls_protocol,
                self.application_protocol
            );
        }
        Ok(())
    }

    /// An error unless every request succeeded with a 2xx status (over any protocol).
    pub fn check_answers(&self) -> Result<()> {
        if self.failed + self.errored + self.timeout + self.non_success > 0 {
            bail!(
                "{} failed, {} errored, {} timed out and {} answered outside 2xx, of {} succeeded",
                self.failed,
                self.errored,
                self.timeout,
                self.non_success,
                self.succeeded
            );
        }
        Ok(())
    }
}

/// `h2load -t<threads> -c<clients> -m<streams> <load> <url>`, where `load` is `-D <seconds>` or
/// `-n <requests>`; waits for it and parses its report.
pub fn run(
    threads: usize,
    clients: usize,
    streams: usize,
    load: Load,
    url: &str,
) -> Result<Report> {
    run_with(threads, clients, streams, load, url, &Extra::default())
}

/// What a run sends beyond h2load's default `GET`, and where it runs.
#[derive(Debug, Clone, Default)]
pub struct Extra {
    /// `-H <header>` for each: `name: value`.
    pub headers: Vec<String>,
    /// `-d <file>`: every request a `POST` of this file's bytes.
    pub data: Option<std::path::PathBuf>,
    /// `--h1`: HTTP/1.1 instead of HTTP/2.
    pub h1: bool,
    /// The CPUs h2load runs on (`taskset -c`), all when `None`.
    pub cpus: Option<String>,
}

/// [`run`] with `extra`'s headers, body, protocol and CPUs.
pub fn run_with(
    threads: usize,
    clients: usize,
    streams: usize,
    load: Load,
    url: &str,
    extra: &Extra,
) -> Result<Report> {
    let mut arguments = vec![
        format!("-t{threads}"),
        format!("-c{clients}"),
        format!("-m{streams}"),
    ];
    for header in &extra.headers {
        arguments.extend(["-H".to_owned(), header.clone()]);
    }
    if let Some(data) = &extra.data {
        arguments.extend(["-d".to_owned(), data.display().to_string()]);
    }
    if extra.h1 {
        arguments.push("--h1".to_owned());
    }
    match load {
        Load::Duration(duration) => {
            arguments.extend(["-D".to_owned(), duration.as_secs().max(1).to_string()]);
        }
        Load::Requests(requests) => arguments.extend(["-n".to_owned(), requests.to_string()]),
    }
    arguments.push(url.to_owned());
    let limit = match load {
        Load::Duration(duration) => duration + OVERRUN,
        Load::Requests(_) => OVERRUN,
    };
    let output = output_within(&arguments, extra.cpus.as_deref(), limit)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "h2load {} failed ({}):\n{stdout}{}",
            arguments.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse(&stdout).with_context(|| format!("unexpected h2load report:\n{stdout}"))
}

/// How long an h2load run may take beyond its duration before it is stopped as stalled.
const OVERRUN: Duration = Duration::from_secs(120);

/// Runs h2load with `arguments`; an error when it has not exited within `limit`. A client
/// whose connection completes only after a timing-based run's duration has ended is never
/// told to stop (h2load 1.52) and keeps sending: that happens when the proxy cannot complete
/// the handshakes within the duration, and the run is then no measurement.
fn output_within(arguments: &[String], cpus: Option<&str>, limit: Duration) -> Result<Output> {
    // taskset runs h2load in its own process (exec), so the pid below is h2load's.
    let mut command = match cpus {
        Some(cpus) => {
            let mut taskset = cmd("taskset", ["-c", cpus, "h2load"]);
            taskset.args(arguments);
            taskset
        }
        None => cmd("h2load", arguments),
    };
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run h2load (install it with `cargo xtask peers --only apt`)")?;
    let pid = child.id().to_string();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        // The receiver is gone only once the run has been given up.
        let _ = sender.send(child.wait_with_output());
    });
    match receiver.recv_timeout(limit) {
        Ok(output) => output.context("h2load did not finish"),
        Err(_) => {
            // Best effort: h2load may exit on its own meanwhile.
            let _ = cmd("kill", ["-KILL", &pid]).status();
            bail!(
                "h2load {} was still running after {limit:?}: the proxy stalled, or did not \
                 complete its clients' handshakes within the duration",
                arguments.join(" ")
            )
        }
    }
}

/// How much one h2load run sends.
#[derive(Debug, Clone, Copy)]
pub enum Load {
    /// Timing-based (`-D`): as many requests as the clients complete in this long.
    Duration(Duration),
    /// `-n`: this many requests, shared out among the clients.
    Requests(usize),
}

/// Parses the report `h2load` prints.
pub fn parse(report: &str) -> Result<Report> {
    let mut finished = None;
    let mut requests = None;
    let mut non_success = None;
    let mut tls = [None, None, None, None];
    for line in report.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("finished in ") {
            // `4.83s, 828.55 req/s, 57.50KB/s`
            let mut fields = rest.split(", ");
            let elapsed = parse_duration(fields.next().unwrap_or_default())?;
            let rate = fields
                .next()
                .and_then(|rate| rate.strip_suffix(" req/s"))
                .context("no req/s after `finished in`")?
                .parse::<f64>()?;
            finished = Some((elapsed, rate));
        } else if let Some(rest) = line.strip_prefix("requests: ") {
            requests = Some(counts(rest)?);
        } else if let Some(rest) = line.strip_prefix("status codes: ") {
            let counts = counts(rest)?;
            non_success = Some(
                ["3xx", "4xx", "5xx"]
                    .iter()
                    .map(|class| counts.get(class).copied().unwrap_or(0))
                    .sum::<u64>(),
            );
        } else {
            let labels = [
                "TLS Protocol: ",
                "Cipher: ",
                "Server Temp Key: ",
                "Application protocol: ",
            ];
            for (value, label) in tls.iter_mut().zip(labels) {
                if let Some(rest) = line.strip_prefix(label) {
                    value.get_or_insert_with(|| rest.to_owned());
                }
            }
        }
    }
    let (elapsed, requests_per_second) = finished.context("no `finished in` line")?;
    let requests = requests.context("no `requests:` line")?;
    let count = |name: &str| {
        requests
            .get(name)
            .copied()
            .with_context(|| format!("no `{name}` count in the `requests:` line"))
    };
    let [tls_protocol, cipher, key_exchange, application_protocol] =
        tls.map(|value| value.unwrap_or_else(|| "none".to_owned()));
    Ok(Report {
        elapsed,
        requests_per_second,
        started: count("started")?,
        succeeded: count("succeeded")?,
        failed: count("failed")?,
        errored: count("errored")?,
        timeout: count("timeout")?,
        non_success: non_success.context("no `status codes:` line")?,
        tls_protocol,
        cipher,
        key_exchange,
        application_protocol,
    })
}

/// `10 total, 10 started, 0 failed` as a map from name to count.
fn counts(line: &str) -> Result<std::collections::HashMap<&str, u64>> {
    line.split(", ")
        .map(|field| {
            let (count, name) = field
                .split_once(' ')
                .with_context(|| format!("`{field}` is not `<count> <name>`"))?;
            Ok((name, count.parse::<u64>()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "\
starting benchmark...
spawning thread #0: 32 total client(s). Timing-based test with 0s of warm-up time and 10s of main duration for measurements.
TLS Protocol: TLSv1.3
Cipher: TLS_AES_128_GCM_SHA256
Server Temp Key: X25519 253 bits
Application protocol: h2
progress: 10% done

finished in 10.02s, 20131.40 req/s, 22.81MB/s
requests: 201314 total, 201954 started, 201314 done, 201314 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 201314 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 228.13MB (239214540) total, 3.84MB (4026280) headers (space savings 95.24%), 196.59MB (206145536) data
                     min         max         mean         sd        +/- sd
time for request:      659us     91.30ms     31.51ms     10.21ms    71.18%
";

    #[test]
    fn a_clean_report_is_read() -> Result<()> {
        let report = parse(REPORT)?;
        assert_eq!(
            report,
            Report {
                elapsed: Duration::from_millis(10_020),
                requests_per_second: 20131.40,
                started: 201_954,
                succeeded: 201_314,
                failed: 0,
                errored: 0,
                timeout: 0,
                non_success: 0,
                tls_protocol: "TLSv1.3".to_owned(),
                cipher: "TLS_AES_128_GCM_SHA256".to_owned(),
                key_exchange: "X25519 253 bits".to_owned(),
                application_protocol: "h2".to_owned(),
            }
        );
        report.check()
    }

    #[test]
    fn failures_and_other_protocols_fail_the_check() -> Result<()> {
        let failed = parse(
            &REPORT
                .replace("0 failed, 0 errored", "3 failed, 1 errored")
                .replace("0 4xx", "2 4xx"),
        )?;
        assert_eq!(
            (failed.failed, failed.errored, failed.non_success),
            (3, 1, 2)
        );
        assert!(failed.check().is_err());
        let downgraded = parse(&REPORT.replace("TLSv1.3", "TLSv1.2"))?;
        assert!(downgraded.check().is_err());
        let cleartext = parse(
            &REPORT
                .lines()
                .filter(|line| !line.contains(": h2") && !line.starts_with("TLS"))
                .collect::<Vec<_>>()
                .join("\n"),
        )?;
        assert_eq!(cleartext.tls_protocol, "none");
        assert!(cleartext.check().is_err());
        Ok(())
    }

    #[test]
    fn a_report_without_its_totals_is_an_error() {
        assert!(parse("").is_err());
        let without = REPORT
            .lines()
            .filter(|line| !line.starts_with("requests:"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(parse(&without).is_err());
    }
}
