//! `cargo xtask bench http-proxy`: scenarios S1 and S2, the gateway as an HTTP/1.1 reverse
//! proxy (`examples/http.proxy`) in front of a loopback nginx origin serving 1 KB, against nginx
//! configured as a reverse proxy to the same origin.
//!
//! - S1, throughput: `wrk -t2 -c64 -d10s --latency` against nginx and the gateway in turn
//!   (nginx, gateway, nginx, gateway, ...), five rounds after a warm-up; the median req/s of
//!   each, their spread, and the ratio. The gateway's resident memory is sampled while wrk
//!   runs, and the CPU time of both proxies (`/proc/<pid>/stat`) is read before and after.
//! - S2, added latency: an open-loop generator ([`super::load`]) at half the nginx median of
//!   S1, ten seconds per run, straight to the origin, through nginx and through the gateway in
//!   turn, five rounds; each round's added latency is the proxied percentile minus the direct
//!   one, and the figures are the medians over the rounds.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use zilla_tests::{Gateway, Peer, Process, free_port, rss_kib, workspace_dir};

use super::load::{self, Plan};
use super::optimized::rerun_optimized;
use super::usage::{MachineCpu, cpu_time, own_cpu_with_children, ticks_per_second, tree_cpu_time};
use super::wrk;
use super::{Spread, commit, record, today};
use crate::shell::{cargo, run as run_command};

/// The path every request asks for.
const PATH: &str = "/x";
/// The origin's response body length.
const BODY_LENGTH: usize = 1024;
/// Measured runs per target, in each scenario.
const ROUNDS: usize = 5;
const WRK_THREADS: usize = 2;
const WRK_CONNECTIONS: usize = 64;
const WRK_DURATION: Duration = Duration::from_secs(10);
const WRK_WARM_UP: Duration = Duration::from_secs(3);
/// How often the gateway's resident memory is read while wrk runs.
const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(250);
/// The fixed rate of S2 as a share of the nginx median of S1.
const LATENCY_LOAD: f64 = 0.5;
const LATENCY_DURATION: Duration = Duration::from_secs(10);
const LATENCY_WARM_UP: Duration = Duration::from_secs(2);
/// Enough keep-alive connections that a due request rarely waits for a free one at half load;
/// when it does, the wait counts in its latency.
const LATENCY_CONNECTIONS: usize = 32;
/// A target completing less than this share of the fixed rate fell behind it.
const FELL_BEHIND: f64 = 0.99;
/// A fixed-rate run with more failed requests than this share is not a measurement.
const MAX_ERROR_SHARE: f64 = 0.001;
const NGINX_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs S1 and S2 and records their figures.
pub fn run() -> Result<()> {
    // The load generator runs in this process: unoptimised, it would be the bottleneck.
    if rerun_optimized()? {
        return Ok(());
    }
    run_command(cargo().args(["build", "--release", "-p", "zilla", "--bin", "zilla"]))?;
    let binary = zilla_tests::build_zilla(true, false)?;
    let ticks = ticks_per_second();
    let machine_before = MachineCpu::now()?;
    let own_before = own_cpu_with_children(ticks)?;

    let dir = tempfile::Builder::new()
        .prefix("zilla-bench-http-proxy-")
        .tempdir()
        .context("cannot create the benchmark directory")?;
    // nginx workers drop root privileges and still need their temporary directories.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let body = response_body();
    let origin_port = free_port()?;
    let origin = Nginx::start(
        &dir.path().join("origin"),
        &origin_config(origin_port, &body),
        origin_port,
    )?;
    let proxy_port = free_port()?;
    let proxy = Nginx::start(
        &dir.path().join("proxy"),
        &proxy_config(proxy_port, origin_port),
        proxy_port,
    )?;
    let config = workspace_dir().join("examples/http.proxy/zilla.yaml");
    let mut gateway = Gateway::from_file(&config)
        .binary(&binary)
        .env("PROXY_PORT", "0")
        .env("ORIGIN_PORT", origin_port.to_string())
        .start()?;
    let targets = Targets {
        origin: origin.address(),
        nginx: proxy.address(),
        gateway: gateway.address("tcp_server"),
    };
    for (name, address) in [
        ("origin", targets.origin),
        ("nginx", targets.nginx),
        ("gateway", targets.gateway),
    ] {
        check_target(name, address, &body)?;
    }
    let idle_rss_kib = gateway.rss_kib()?;
    let processes = Processes {
        nginx: proxy.pid(),
        gateway: gateway.pid(),
        ticks_per_second: ticks,
    };

    let throughput = throughput(&targets, &processes)?;
    let rate = (throughput.nginx_rate.median * LATENCY_LOAD)
        .round()
        .max(1.0) as u64;
    let latency = latency(&targets, &processes, rate)?;

    let status = gateway.terminate()?;
    if !status.success() {
        bail!(
            "zilla exited with {status} on SIGTERM; stderr:\n{}",
            gateway.stderr()
        );
    }
    drop(proxy);
    drop(origin);
    let others_share = others_share(machine_before, own_before, ticks)?;

    let figures = Figures {
        throughput,
        latency,
        idle_rss_mib: idle_rss_kib as f64 / 1024.0,
        others_share,
    };
    println!("{}", figures.throughput_summary());
    println!("{}", figures.latency_summary());
    record("http-proxy", &figures.table())
}

/// Where each target listens.
struct Targets {
    origin: SocketAddr,
    nginx: SocketAddr,
    gateway: SocketAddr,
}

/// Whose CPU time and memory are read.
struct Processes {
    /// The nginx proxy's master (its workers are its children).
    nginx: u32,
    gateway: u32,
    ticks_per_second: u64,
}

/// One `GET` through `address` returns the origin's body.
fn check_target(name: &str, address: SocketAddr, body: &str) -> Result<()> {
    let (status, received) =
        load::probe(address, PATH).with_context(|| format!("cannot GET {PATH} from {name}"))?;
    if status != 200 || received != body.as_bytes() {
        bail!(
            "{name} at {address} answered {status} with {} bytes instead of the origin's {BODY_LENGTH}",
            received.len()
        );
    }
    Ok(())
}

/// S1's results.
struct Throughput {
    nginx_rate: Spread,
    gateway_rate: Spread,
    /// Each round's gateway req/s ÷ nginx req/s.
    round_ratios: Spread,
    gateway_peak_rss_mib: Spread,
    /// CPU time over wall time, in % of one core.
    gateway_cpu_percent: Spread,
    nginx_cpu_percent: Spread,
    /// CPU time per completed request, in µs.
    gateway_cpu_per_request: Spread,
    nginx_cpu_per_request: Spread,
}

/// One wrk run against one proxy.
struct WrkRun {
    report: wrk::Report,
    cpu: Duration,
    wall: Duration,
    peak_rss_kib: u64,
}

impl WrkRun {
    fn cpu_percent(&self) -> f64 {
        100.0 * self.cpu.as_secs_f64() / self.wall.as_secs_f64()
    }

    fn cpu_micros_per_request(&self) -> f64 {
        1e6 * self.cpu.as_secs_f64() / self.report.requests.max(1) as f64
    }
}

fn throughput(targets: &Targets, processes: &Processes) -> Result<Throughput> {
    println!(
        "S1: wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{}s, nginx and gateway in turn, {ROUNDS} rounds after a warm-up",
        WRK_DURATION.as_secs()
    );
    for target in [targets.nginx, targets.gateway] {
        let child = wrk::spawn(target, PATH, WRK_THREADS, WRK_CONNECTIONS, WRK_WARM_UP)?;
        wrk::finish(child).context("warm-up")?;
    }
    let mut nginx = Vec::with_capacity(ROUNDS);
    let mut gateway = Vec::with_capacity(ROUNDS);
    for round in 1..=ROUNDS {
        let by_nginx = wrk_run(targets.nginx, processes.nginx, true, processes)
            .with_context(|| format!("round {round}, nginx"))?;
        let by_gateway = wrk_run(targets.gateway, processes.gateway, false, processes)
            .with_context(|| format!("round {round}, gateway"))?;
        println!(
            "  round {round}: nginx {:.0} req/s ({:.0} % CPU), gateway {:.0} req/s ({:.0} % CPU, {:.1} MiB)",
            by_nginx.report.requests_per_second,
            by_nginx.cpu_percent(),
            by_gateway.report.requests_per_second,
            by_gateway.cpu_percent(),
            by_gateway.peak_rss_kib as f64 / 1024.0
        );
        nginx.push(by_nginx);
        gateway.push(by_gateway);
    }
    let spread = |runs: &[WrkRun], figure: fn(&WrkRun) -> f64| {
        Spread::of(&runs.iter().map(figure).collect::<Vec<_>>())
    };
    let ratios: Vec<f64> = nginx
        .iter()
        .zip(&gateway)
        .map(|(nginx, gateway)| {
            gateway.report.requests_per_second / nginx.report.requests_per_second
        })
        .collect();
    Ok(Throughput {
        nginx_rate: spread(&nginx, |run| run.report.requests_per_second),
        gateway_rate: spread(&gateway, |run| run.report.requests_per_second),
        round_ratios: Spread::of(&ratios),
        gateway_peak_rss_mib: spread(&gateway, |run| run.peak_rss_kib as f64 / 1024.0),
        gateway_cpu_percent: spread(&gateway, WrkRun::cpu_percent),
        nginx_cpu_percent: spread(&nginx, WrkRun::cpu_percent),
        gateway_cpu_per_request: spread(&gateway, WrkRun::cpu_micros_per_request),
        nginx_cpu_per_request: spread(&nginx, WrkRun::cpu_micros_per_request),
    })
}

/// One measured wrk run against `target`, served by `pid` (with its children when `tree`).
fn wrk_run(target: SocketAddr, pid: u32, tree: bool, processes: &Processes) -> Result<WrkRun> {
    let cpu = || {
        if tree {
            tree_cpu_time(pid, processes.ticks_per_second)
        } else {
            cpu_time(pid, processes.ticks_per_second)
        }
    };
    let cpu_before = cpu()?;
    let started = Instant::now();
    let mut child = wrk::spawn(target, PATH, WRK_THREADS, WRK_CONNECTIONS, WRK_DURATION)?;
    let peak_rss_kib = match sample_rss_until_exit(&mut child, pid) {
        Ok(peak) => peak,
        Err(error) => {
            // Best effort: wrk may already be gone, and the error says what went wrong.
            let _ = child.kill();
            let _ = child.wait();
            return Err(error);
        }
    };
    let wall = started.elapsed();
    let cpu_used = cpu()?.saturating_sub(cpu_before);
    let report = wrk::finish(child)?;
    if report.non_success > 0 || report.socket_errors > 0 {
        bail!(
            "{target}: {} responses outside 2xx/3xx and {} socket errors in {} requests",
            report.non_success,
            report.socket_errors,
            report.requests
        );
    }
    Ok(WrkRun {
        report,
        cpu: cpu_used,
        wall,
        peak_rss_kib,
    })
}

/// The largest resident memory of `pid` seen while `child` runs.
fn sample_rss_until_exit(child: &mut Child, pid: u32) -> Result<u64> {
    let mut peak = rss_kib(pid)?;
    while child.try_wait()?.is_none() {
        std::thread::sleep(RSS_SAMPLE_INTERVAL);
        peak = peak.max(rss_kib(pid)?);
    }
    Ok(peak)
}

/// S2's results, in µs.
struct Latency {
    rate: u64,
    direct_p50: Spread,
    direct_p99: Spread,
    nginx_added_p50: Spread,
    nginx_added_p99: Spread,
    gateway_added_p50: Spread,
    gateway_added_p99: Spread,
    /// CPU time over wall time at the fixed rate, in % of one core.
    nginx_cpu_percent: Spread,
    gateway_cpu_percent: Spread,
    /// The generator's own CPU share on the direct runs, in % of one core.
    generator_cpu_percent: Spread,
    /// Requests completed per second.
    direct_achieved: Spread,
    nginx_achieved: Spread,
    gateway_achieved: Spread,
}

/// One fixed-rate run: p50 and p99 in µs, and the CPU share of the process serving it.
struct LatencyRun {
    p50: f64,
    p99: f64,
    cpu_percent: f64,
    /// The generator's own CPU time over wall time, in % of one core.
    generator_cpu_percent: f64,
    /// Requests completed per second, below the planned rate when the run fell behind.
    achieved_rate: f64,
}

fn latency(targets: &Targets, processes: &Processes, rate: u64) -> Result<Latency> {
    println!(
        "S2: {rate} req/s ({:.0} % of the nginx median) over {LATENCY_CONNECTIONS} connections, {}s per run, direct, nginx and gateway in turn, {ROUNDS} rounds after a warm-up",
        LATENCY_LOAD * 100.0,
        LATENCY_DURATION.as_secs()
    );
    let plan = |target, duration| Plan {
        target,
        path: PATH.to_owned(),
        rate,
        duration,
        connections: LATENCY_CONNECTIONS,
        body_length: BODY_LENGTH,
    };
    for target in [targets.origin, targets.nginx, targets.gateway] {
        fixed_rate(&plan(target, LATENCY_WARM_UP), None, processes).context("warm-up")?;
    }
    let mut direct = Vec::with_capacity(ROUNDS);
    let mut nginx = Vec::with_capacity(ROUNDS);
    let mut gateway = Vec::with_capacity(ROUNDS);
    for round in 1..=ROUNDS {
        let context = |name: &str| format!("round {round}, {name}");
        let straight = fixed_rate(&plan(targets.origin, LATENCY_DURATION), None, processes)
            .with_context(|| context("direct"))?;
        let by_nginx = fixed_rate(
            &plan(targets.nginx, LATENCY_DURATION),
            Some((processes.nginx, true)),
            processes,
        )
        .with_context(|| context("nginx"))?;
        let by_gateway = fixed_rate(
            &plan(targets.gateway, LATENCY_DURATION),
            Some((processes.gateway, false)),
            processes,
        )
        .with_context(|| context("gateway"))?;
        println!(
            "  round {round}: p50/p99 direct {:.0}/{:.0} µs, nginx {:.0}/{:.0} µs, gateway {:.0}/{:.0} µs; achieved {:.0}, {:.0}, {:.0} req/s; generator {:.0} % CPU",
            straight.p50,
            straight.p99,
            by_nginx.p50,
            by_nginx.p99,
            by_gateway.p50,
            by_gateway.p99,
            straight.achieved_rate,
            by_nginx.achieved_rate,
            by_gateway.achieved_rate,
            straight.generator_cpu_percent
        );
        direct.push(straight);
        nginx.push(by_nginx);
        gateway.push(by_gateway);
    }
    let added = |proxied: &[LatencyRun], figure: fn(&LatencyRun) -> f64| {
        Spread::of(
            &proxied
                .iter()
                .zip(&direct)
                .map(|(proxied, direct)| figure(proxied) - figure(direct))
                .collect::<Vec<_>>(),
        )
    };
    let spread = |runs: &[LatencyRun], figure: fn(&LatencyRun) -> f64| {
        Spread::of(&runs.iter().map(figure).collect::<Vec<_>>())
    };
    Ok(Latency {
        rate,
        direct_p50: spread(&direct, |run| run.p50),
        direct_p99: spread(&direct, |run| run.p99),
        nginx_added_p50: added(&nginx, |run| run.p50),
        nginx_added_p99: added(&nginx, |run| run.p99),
        gateway_added_p50: added(&gateway, |run| run.p50),
        gateway_added_p99: added(&gateway, |run| run.p99),
        nginx_cpu_percent: spread(&nginx, |run| run.cpu_percent),
        gateway_cpu_percent: spread(&gateway, |run| run.cpu_percent),
        generator_cpu_percent: spread(&direct, |run| run.generator_cpu_percent),
        direct_achieved: spread(&direct, |run| run.achieved_rate),
        nginx_achieved: spread(&nginx, |run| run.achieved_rate),
        gateway_achieved: spread(&gateway, |run| run.achieved_rate),
    })
}

/// Runs `plan`, reading the CPU time of `serving` (a pid, and whether its children count).
fn fixed_rate(
    plan: &Plan,
    serving: Option<(u32, bool)>,
    processes: &Processes,
) -> Result<LatencyRun> {
    let cpu = || -> Result<Duration> {
        match serving {
            Some((pid, true)) => tree_cpu_time(pid, processes.ticks_per_second),
            Some((pid, false)) => cpu_time(pid, processes.ticks_per_second),
            None => Ok(Duration::ZERO),
        }
    };
    let generator_cpu = || cpu_time(std::process::id(), processes.ticks_per_second);
    let cpu_before = cpu()?;
    let generator_before = generator_cpu()?;
    let started = Instant::now();
    let outcome = load::run(plan)?;
    let wall = started.elapsed();
    let cpu_used = cpu()?.saturating_sub(cpu_before);
    let generator_used = generator_cpu()?.saturating_sub(generator_before);
    let requests = outcome.latencies.len() as u64 + outcome.errors;
    if outcome.errors as f64 > MAX_ERROR_SHARE * requests as f64 {
        bail!(
            "{}: {} of {requests} requests failed",
            plan.target,
            outcome.errors
        );
    }
    let micros = |percent| outcome.percentile(percent).as_secs_f64() * 1e6;
    Ok(LatencyRun {
        p50: micros(50.0),
        p99: micros(99.0),
        cpu_percent: 100.0 * cpu_used.as_secs_f64() / wall.as_secs_f64(),
        generator_cpu_percent: 100.0 * generator_used.as_secs_f64() / wall.as_secs_f64(),
        achieved_rate: outcome.achieved_rate(),
    })
}

/// Everything recorded.
struct Figures {
    throughput: Throughput,
    latency: Latency,
    idle_rss_mib: f64,
    /// The share of the machine's CPU time (all cores) that other work took during the run.
    others_share: f64,
}

impl Figures {
    fn throughput_ratio(&self) -> f64 {
        self.throughput.gateway_rate.median / self.throughput.nginx_rate.median
    }

    /// Our added p99 ÷ nginx's; meaningless (None) when nginx adds nothing measurable.
    fn latency_ratio(&self) -> Option<f64> {
        let nginx = self.latency.nginx_added_p99.median;
        (nginx > 0.0).then(|| self.latency.gateway_added_p99.median / nginx)
    }

    fn throughput_summary(&self) -> String {
        let s1 = &self.throughput;
        format!(
            "S1 http-proxy: gateway {} req/s, nginx {} req/s; gateway ÷ nginx {:.2} (rounds {:.2} to {:.2}; target ≥ 1.3); \
             gateway RSS {:.1} MiB idle, {:.1} MiB peak; CPU {:.0} µs/request gateway, {:.0} µs/request nginx",
            rate(&s1.gateway_rate),
            rate(&s1.nginx_rate),
            self.throughput_ratio(),
            s1.round_ratios.min,
            s1.round_ratios.max,
            self.idle_rss_mib,
            s1.gateway_peak_rss_mib.median,
            s1.gateway_cpu_per_request.median,
            s1.nginx_cpu_per_request.median,
        )
    }

    fn latency_summary(&self) -> String {
        let s2 = &self.latency;
        format!(
            "S2 http-proxy at {} req/s: added p50/p99 gateway {:+.0}/{:+.0} µs, nginx {:+.0}/{:+.0} µs (direct {:.0}/{:.0} µs); \
             gateway ÷ nginx added p99 {} (targets: p99 added ≤ 250 µs, ratio ≤ 0.7); achieved req/s direct {:.0}, nginx {:.0}, gateway {:.0}",
            s2.rate,
            s2.gateway_added_p50.median,
            s2.gateway_added_p99.median,
            s2.nginx_added_p50.median,
            s2.nginx_added_p99.median,
            s2.direct_p50.median,
            s2.direct_p99.median,
            self.latency_ratio()
                .map_or_else(|| "n/a".to_owned(), |ratio| format!("{ratio:.2}")),
            s2.direct_achieved.median,
            s2.nginx_achieved.median,
            s2.gateway_achieved.median,
        )
    }

    /// What to keep in mind reading the figures: how much of the machine other work took, and
    /// which targets could not keep up with the fixed rate.
    fn notes(&self) -> String {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let mut notes = format!(
            "Other work on the {cores}-core machine took {:.0} % of its CPU time during the run.",
            self.others_share * 100.0
        );
        let s2 = &self.latency;
        for (name, achieved) in [
            ("The direct client", &s2.direct_achieved),
            ("nginx", &s2.nginx_achieved),
            ("The gateway", &s2.gateway_achieved),
        ] {
            if achieved.min < FELL_BEHIND * s2.rate as f64 {
                notes.push_str(&format!(
                    " {name} fell behind the fixed rate in some rounds (down to {:.0} req/s): \
                     its latency there includes queueing past its capacity.",
                    achieved.min
                ));
            }
        }
        notes
    }

    fn table(&self) -> String {
        let s1 = &self.throughput;
        let s2 = &self.latency;
        format!(
            "S1, throughput (`wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{}s`), median (min to max) of {ROUNDS} rounds:\n\n\
             | date | commit | gateway req/s | nginx req/s | gateway ÷ nginx | gateway RSS idle / peak | CPU per request, gateway / nginx | CPU, gateway / nginx |\n\
             |---|---|---|---|---|---|---|---|\n\
             | {date} | {commit} | {} | {} | **{:.2}** ({:.2} to {:.2}) | {:.1} / {:.1} MiB | {:.0} / {:.0} µs | {:.0} % / {:.0} % |\n\n\
             S2, latency at a fixed {} req/s (half the nginx median), {}s per run, median (min to max) of {ROUNDS} rounds, in µs:\n\n\
             | date | commit | direct p50 / p99 | nginx added p50 / p99 | gateway added p50 / p99 | gateway ÷ nginx added p99 | achieved req/s, direct / nginx / gateway | CPU at that rate, gateway / nginx / generator |\n\
             |---|---|---|---|---|---|---|---|\n\
             | {date} | {commit} | {:.0} / {:.0} | {} / {} | {} / {} | **{}** | {:.0} / {:.0} / {:.0} | {:.0} % / {:.0} % / {:.0} % |\n\n\
             {}\n",
            WRK_DURATION.as_secs(),
            rate(&s1.gateway_rate),
            rate(&s1.nginx_rate),
            self.throughput_ratio(),
            s1.round_ratios.min,
            s1.round_ratios.max,
            self.idle_rss_mib,
            s1.gateway_peak_rss_mib.median,
            s1.gateway_cpu_per_request.median,
            s1.nginx_cpu_per_request.median,
            s1.gateway_cpu_percent.median,
            s1.nginx_cpu_percent.median,
            s2.rate,
            LATENCY_DURATION.as_secs(),
            s2.direct_p50.median,
            s2.direct_p99.median,
            micros(&s2.nginx_added_p50),
            micros(&s2.nginx_added_p99),
            micros(&s2.gateway_added_p50),
            micros(&s2.gateway_added_p99),
            self.latency_ratio()
                .map_or_else(|| "n/a".to_owned(), |ratio| format!("{ratio:.2}")),
            s2.direct_achieved.median,
            s2.nginx_achieved.median,
            s2.gateway_achieved.median,
            s2.gateway_cpu_percent.median,
            s2.nginx_cpu_percent.median,
            s2.generator_cpu_percent.median,
            self.notes(),
            date = today(),
            commit = commit(),
        )
    }
}

/// `12345 (12001 to 12888)`.
fn rate(spread: &Spread) -> String {
    format!(
        "{:.0} ({:.0} to {:.0})",
        spread.median, spread.min, spread.max
    )
}

/// `+85 (+70 to +120)`.
fn micros(spread: &Spread) -> String {
    format!(
        "{:+.0} ({:+.0} to {:+.0})",
        spread.median, spread.min, spread.max
    )
}

/// The share of the machine's CPU time since `machine_before` that went to processes other
/// than this one and the children it has waited for (wrk, both nginx, the gateway).
fn others_share(machine_before: MachineCpu, own_before: Duration, ticks: u64) -> Result<f64> {
    let machine = MachineCpu::now()?;
    let own = own_cpu_with_children(ticks)?.saturating_sub(own_before);
    let tick = 1.0 / ticks.max(1) as f64;
    let busy = machine.busy_ticks.saturating_sub(machine_before.busy_ticks) as f64 * tick;
    let total = machine
        .total_ticks
        .saturating_sub(machine_before.total_ticks) as f64
        * tick;
    Ok(((busy - own.as_secs_f64()) / total.max(tick)).clamp(0.0, 1.0))
}

/// The origin's 1 KB body: printable, and free of what an nginx string would interpret.
fn response_body() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..BODY_LENGTH)
        .map(|index| char::from(ALPHABET[index % ALPHABET.len()]))
        .collect()
}

/// What both nginx configs share: a prefix-relative pid, log and temporary files, keep-alive
/// connections that never run out of requests, no access log.
fn nginx_config(http: &str) -> String {
    format!(
        "worker_processes auto;\n\
         pid nginx.pid;\n\
         error_log error.log warn;\n\
         events {{\n    worker_connections 4096;\n}}\n\
         http {{\n\
         \x20   access_log off;\n\
         \x20   default_type text/plain;\n\
         \x20   keepalive_requests 10000000;\n\
         \x20   keepalive_timeout 300s;\n\
         \x20   client_body_temp_path client_body;\n\
         \x20   proxy_temp_path proxy;\n\
         \x20   fastcgi_temp_path fastcgi;\n\
         \x20   uwsgi_temp_path uwsgi;\n\
         \x20   scgi_temp_path scgi;\n\
         {http}}}\n"
    )
}

/// The origin: `GET /x` answers 200 with `body`.
fn origin_config(port: u16, body: &str) -> String {
    nginx_config(&format!(
        "    server {{\n\
         \x20       listen 127.0.0.1:{port};\n\
         \x20       location = {PATH} {{\n\
         \x20           return 200 \"{body}\";\n\
         \x20       }}\n\
         \x20   }}\n"
    ))
}

/// The reference proxy: every request to the origin over a pool of keep-alive connections.
fn proxy_config(port: u16, origin_port: u16) -> String {
    nginx_config(&format!(
        "    upstream origin {{\n\
         \x20       server 127.0.0.1:{origin_port};\n\
         \x20       keepalive 64;\n\
         \x20       keepalive_requests 10000000;\n\
         \x20   }}\n\
         \x20   server {{\n\
         \x20       listen 127.0.0.1:{port};\n\
         \x20       location / {{\n\
         \x20           proxy_pass http://origin;\n\
         \x20           proxy_http_version 1.1;\n\
         \x20           proxy_set_header Connection \"\";\n\
         \x20       }}\n\
         \x20   }}\n"
    ))
}

/// An nginx running in the foreground on a config in its own prefix directory; stopped with
/// `SIGTERM` when dropped (killing only the master would leave its workers listening).
struct Nginx {
    process: Process,
    port: u16,
}

impl Nginx {
    fn start(prefix: &Path, config: &str, port: u16) -> Result<Self> {
        std::fs::create_dir_all(prefix)?;
        std::fs::set_permissions(prefix, std::fs::Permissions::from_mode(0o755))?;
        let config_path = prefix.join("nginx.conf");
        std::fs::write(&config_path, config)
            .with_context(|| format!("cannot write {}", config_path.display()))?;
        let mut prefix_arg = prefix.as_os_str().to_owned();
        prefix_arg.push("/");
        let process = Peer::new("nginx")
            .arg("-p")
            .arg(prefix_arg)
            .arg("-c")
            .arg(&config_path)
            .arg("-e")
            .arg(prefix.join("error.log"))
            .args(["-g", "daemon off;"])
            .spawn()
            .context("cannot run nginx (install it with `cargo xtask peers --only apt`)")?;
        let mut nginx = Self { process, port };
        nginx.wait_until_listening(prefix)?;
        Ok(nginx)
    }

    fn wait_until_listening(&mut self, prefix: &Path) -> Result<()> {
        let deadline = Instant::now() + NGINX_READY_TIMEOUT;
        loop {
            if let Some(status) = self.process.try_status()? {
                bail!(
                    "nginx exited with {status}; stderr:\n{}\nerror.log:\n{}",
                    self.process.stderr(),
                    read_or_empty(&prefix.join("error.log"))
                );
            }
            if TcpStream::connect_timeout(&self.address(), Duration::from_millis(100)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "nginx did not listen on {} within {NGINX_READY_TIMEOUT:?}",
                    self.address()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn pid(&self) -> u32 {
        self.process.pid()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // Terminating kills the master if it ignores SIGTERM; nothing more can be done here.
        let _ = self.process.terminate();
    }
}

fn read_or_empty(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_one_kilobyte_nginx_returns_verbatim() {
        let body = response_body();
        assert_eq!(body.len(), BODY_LENGTH);
        assert!(
            body.bytes()
                .all(|byte| byte.is_ascii_alphanumeric() && byte != b'$')
        );
    }

    /// Both nginx configs serve the body, and the fixed-rate generator completes every
    /// scheduled request through them (no timing is asserted).
    #[test]
    fn origin_and_proxy_serve_the_body_to_the_load_generator() -> Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let body = response_body();
        let origin_port = free_port()?;
        let origin = Nginx::start(
            &dir.path().join("origin"),
            &origin_config(origin_port, &body),
            origin_port,
        )?;
        let proxy_port = free_port()?;
        let proxy = Nginx::start(
            &dir.path().join("proxy"),
            &proxy_config(proxy_port, origin_port),
            proxy_port,
        )?;
        for address in [origin.address(), proxy.address()] {
            check_target("nginx", address, &body)?;
            let outcome = load::run(&Plan {
                target: address,
                path: PATH.to_owned(),
                rate: 400,
                duration: Duration::from_millis(250),
                connections: 4,
                body_length: BODY_LENGTH,
            })?;
            assert_eq!(outcome.errors, 0);
            assert_eq!(outcome.latencies.len(), 100);
            assert!(outcome.latencies.is_sorted());
        }
        let (status, _) = load::probe(proxy.address(), "/missing")?;
        assert_eq!(status, 404);
        Ok(())
    }

    #[test]
    fn a_broken_config_fails_with_nginx_s_complaint() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let error = match Nginx::start(dir.path(), "no_such_directive on;\n", port) {
            Ok(_) => bail!("nginx started on a broken config"),
            Err(error) => format!("{error:#}"),
        };
        assert!(error.contains("no_such_directive"), "{error}");
        Ok(())
    }
}
