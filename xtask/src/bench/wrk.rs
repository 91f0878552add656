//! Running `wrk` and reading its report.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::shell::cmd;

/// What `wrk --latency` reports about one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// `Requests/sec:`.
    pub requests_per_second: f64,
    /// Completed requests (`N requests in T, ...`).
    pub requests: u64,
    /// Median latency from the `Latency Distribution`.
    pub p50: Duration,
    /// 99th percentile latency from the `Latency Distribution`.
    pub p99: Duration,
    /// Responses with a status outside 2xx and 3xx.
    pub non_success: u64,
    /// Connect, read, write and timeout errors added up.
    pub socket_errors: u64,
}

/// `wrk -t<threads> -c<connections> -d<seconds>s --latency http://<target><path>`, started in
/// the background with its output captured; [`finish`] waits for it and reads the report.
/// Run by `taskset -c <cpus>` when `cpus` is given (a CPU list such as `1`); every request
/// carries `header` (`name: value`, wrk's `-H`) when given.
pub fn spawn(
    cpus: Option<&str>,
    target: SocketAddr,
    path: &str,
    header: Option<&str>,
    threads: usize,
    connections: usize,
    duration: Duration,
) -> Result<std::process::Child> {
    let mut arguments = Vec::new();
    if let Some(cpus) = cpus {
        arguments.extend(["-c".to_owned(), cpus.to_owned(), "wrk".to_owned()]);
    }
    arguments.extend([
        format!("-t{threads}"),
        format!("-c{connections}"),
        format!("-d{}s", duration.as_secs().max(1)),
        "--latency".to_owned(),
    ]);
    if let Some(header) = header {
        arguments.extend(["-H".to_owned(), header.to_owned()]);
    }
    arguments.push(format!("http://{target}{path}"));
    let program = if cpus.is_some() { "taskset" } else { "wrk" };
    cmd(program, arguments)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run wrk (install it with `cargo xtask peers --only apt`)")
}

/// Waits for a `wrk` started by [`spawn`] and parses its report.
pub fn finish(child: std::process::Child) -> Result<Report> {
    let output = child.wait_with_output().context("wrk did not finish")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed ({}):\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse(&stdout).with_context(|| format!("unexpected wrk report:\n{stdout}"))
}

/// Parses the report `wrk --latency` prints.
pub fn parse(report: &str) -> Result<Report> {
    let mut requests_per_second = None;
    let mut requests = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut non_success = 0;
    let mut socket_errors = 0;
    for line in report.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", rate] => requests_per_second = Some(rate.parse::<f64>()?),
            [count, "requests", "in", ..] => requests = Some(count.parse::<u64>()?),
            ["50%", latency] => p50 = Some(parse_duration(latency)?),
            ["99%", latency] => p99 = Some(parse_duration(latency)?),
            ["Non-2xx", "or", "3xx", "responses:", count] => non_success = count.parse()?,
            ["Socket", "errors:", counts @ ..] => {
                // `connect 0, read 0, write 0, timeout 0`
                for count in counts.iter().skip(1).step_by(2) {
                    socket_errors += count.trim_end_matches(',').parse::<u64>()?;
                }
            }
            _ => {}
        }
    }
    Ok(Report {
        requests_per_second: requests_per_second.context("no `Requests/sec:` line")?,
        requests: requests.context("no `N requests in` line")?,
        p50: p50.context("no 50% latency (was --latency given?)")?,
        p99: p99.context("no 99% latency (was --latency given?)")?,
        non_success,
        socket_errors,
    })
}

/// A wrk duration: a number with the unit `us`, `ms`, `s`, `m` or `h`.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("`{text}` has no unit"))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .with_context(|| format!("`{text}` is not a number"))?;
    let nanos_per_unit = match unit {
        "us" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => bail!("`{text}` has an unknown unit"),
    };
    let nanos = (number * nanos_per_unit).round();
    if !(0.0..=u64::MAX as f64).contains(&nanos) {
        bail!("`{text}` is not a duration");
    }
    Ok(Duration::from_nanos(nanos as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "\
Running 10s test @ http://127.0.0.1:40123/x
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.59ms    1.83ms  32.74ms   85.21%
    Req/Sec    13.21k     1.27k   16.52k    71.50%
  Latency Distribution
     50%    2.14ms
     75%    3.05ms
     90%    4.51ms
     99%    9.70ms
  263012 requests in 10.01s, 318.60MB read
Requests/sec:  26281.40
Transfer/sec:     31.84MB
";

    #[test]
    fn a_clean_report_is_read() -> Result<()> {
        let report = parse(REPORT)?;
        assert_eq!(
            report,
            Report {
                requests_per_second: 26281.40,
                requests: 263_012,
                p50: Duration::from_micros(2140),
                p99: Duration::from_micros(9700),
                non_success: 0,
                socket_errors: 0,
            }
        );
        Ok(())
    }

    #[test]
    fn errors_are_counted() -> Result<()> {
        let report = REPORT.replace(
            "Requests/sec:",
            "  Socket errors: connect 0, read 3, write 1, timeout 12\n  Non-2xx or 3xx responses: 7\nRequests/sec:",
        );
        let report = parse(&report)?;
        assert_eq!(report.socket_errors, 16);
        assert_eq!(report.non_success, 7);
        Ok(())
    }

    #[test]
    fn latencies_carry_their_unit() -> Result<()> {
        assert_eq!(parse_duration("655.36us")?, Duration::from_nanos(655_360));
        assert_eq!(parse_duration("1.50ms")?, Duration::from_micros(1500));
        assert_eq!(parse_duration("2.00s")?, Duration::from_secs(2));
        assert_eq!(parse_duration("1.00m")?, Duration::from_secs(60));
        assert!(parse_duration("12").is_err());
        assert!(parse_duration("12ns").is_err());
        Ok(())
    }

    #[test]
    fn a_report_without_latencies_is_an_error() {
        let without = REPORT
            .lines()
            .filter(|line| !line.contains('%') || line.contains("Stdev"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(parse(&without).is_err());
        assert!(parse("").is_err());
    }
}
