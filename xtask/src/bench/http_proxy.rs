//! `cargo xtask bench http-proxy`: scenarios S1 and S2, the gateway as an HTTP/1.1 reverse
//! proxy (`examples/http.proxy`) in front of a loopback nginx origin serving 1 KB, against nginx
//! configured as a reverse proxy to the same origin.
//!
//! - S1, throughput: `wrk -t2 -c64 -d10s --latency` in two modes. Mode A: every process
//!   shares every core, both proxies with as many workers as cores (`zilla start -w N`,
//!   `worker_processes N`). Mode B: each proxy with one worker, pinned alone to CPU 0
//!   (`taskset`), wrk and the origin on the other CPUs. In each round: nginx then the gateway
//!   of mode A, then of mode B; five rounds after a warm-up (`--quick`: three of five seconds,
//!   printed only). Per run, from `/proc`: the proxy's user and system CPU time and its
//!   threads' context switches (before and after, per completed request), the machine's idle
//!   share, and the gateway's peak resident memory. Figures are medians with their spread.
//! - S2, added latency: an open-loop generator ([`super::load`]) at half the nginx median of
//!   S1, ten seconds per run, straight to the origin, through nginx and through the gateway in
//!   turn, five rounds; each round's added latency is the proxied percentile minus the direct
//!   one, and the figures are the medians over the rounds.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use zilla_tests::{Gateway, Peer, Process, free_port, workspace_dir};

use super::load::{self, Plan};
use super::optimized::rerun_optimized;
use super::options::Options;
use super::usage::{
    MachineCpu, Measured, Meter, ProxyCost, children, cpu_time, own_cpu_with_children,
    peak_rss_until_exit, ticks_per_second, tree_cpu_time,
};
use super::wrk;
use super::{Spread, commit, record, stop_gateway, today, zilla_binary};
use crate::shell::cmd;

/// The path every request asks for.
pub(super) const PATH: &str = "/x";
/// The origin's response body length.
pub(super) const BODY_LENGTH: usize = 1024;
/// Measured runs per target, in each scenario.
const ROUNDS: usize = 5;
const WRK_THREADS: usize = 2;
const WRK_CONNECTIONS: usize = 64;
const WRK_DURATION: Duration = Duration::from_secs(10);
const WRK_WARM_UP: Duration = Duration::from_secs(3);
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

/// Runs S1 and S2 and records their figures (with `--quick`: a short S1, printed only).
pub fn run(options: &Options) -> Result<()> {
    // The load generator runs in this process: unoptimised, it would be the bottleneck.
    if rerun_optimized()? {
        return Ok(());
    }
    let binary = zilla_binary(options)?;
    let ticks = ticks_per_second();
    let machine_before = MachineCpu::now()?;
    let own_before = own_cpu_with_children(ticks)?;
    let shape = Shape::of(options);

    let (dir, body, origin) = start_origin("zilla-bench-http-proxy-")?;
    let origin_port = origin.address().port();
    let config = workspace_dir().join("examples/http.proxy/zilla.yaml");
    let mut pairs = Vec::new();
    for mode in Mode::all() {
        let proxy_port = free_port()?;
        let nginx = Nginx::start(
            &dir.path().join(format!("proxy-{}", mode.name)),
            &proxy_config(proxy_port, origin_port, mode.workers),
            proxy_port,
        )?;
        let gateway = Gateway::from_file(&config)
            .binary(&binary)
            .workers(mode.workers)
            .env("PROXY_PORT", "0")
            .env("ORIGIN_PORT", origin_port.to_string())
            .start()?;
        if let Some(cpus) = mode.proxy_cpus() {
            pin(nginx.pid(), true, &cpus)?;
            pin(gateway.pid(), false, &cpus)?;
        }
        let targets = Targets {
            origin: origin.address(),
            nginx: nginx.address(),
            gateway: gateway.address("tcp_server"),
        };
        for (name, address) in [
            ("origin", targets.origin),
            ("nginx", targets.nginx),
            ("gateway", targets.gateway),
        ] {
            check_target(name, address, &body, None)?;
        }
        let idle_rss_kib = gateway.rss_kib()?;
        pairs.push(Pair {
            mode,
            processes: Processes {
                nginx: nginx.pid(),
                gateway: gateway.pid(),
                ticks_per_second: ticks,
            },
            targets,
            idle_rss_kib,
            nginx,
            gateway,
        });
    }

    let throughput = throughput(&pairs, origin.pid(), shape)?;
    for mode in &throughput {
        println!("{}", mode.summary());
    }
    let latency = if options.quick {
        None
    } else {
        // S2 runs on mode A's pair: the equal default worker counts, nothing pinned.
        let shared = &pairs[0];
        pin(origin.pid(), true, &all_cpus())?;
        let rate = (throughput[0].versus.reference_rate.median * LATENCY_LOAD)
            .round()
            .max(1.0) as u64;
        Some(latency(&shared.targets, &shared.processes, rate)?)
    };

    for mut pair in pairs {
        stop_gateway(&mut pair.gateway)?;
        drop(pair.nginx);
    }
    drop(origin);
    let Some(latency) = latency else {
        return Ok(());
    };
    let others_share = others_share(machine_before, own_before, ticks)?;

    let figures = Figures {
        throughput,
        latency,
        others_share,
    };
    println!("{}", figures.latency_summary());
    record("http-proxy", &figures.table())
}

/// How long and how often S1 (and S3) measure.
#[derive(Debug, Clone, Copy)]
pub(super) struct Shape {
    pub(super) rounds: usize,
    pub(super) duration: Duration,
    pub(super) warm_up: Duration,
}

impl Shape {
    pub(super) const FULL: Self = Self {
        rounds: ROUNDS,
        duration: WRK_DURATION,
        warm_up: WRK_WARM_UP,
    };
    pub(super) const QUICK: Self = Self {
        rounds: 3,
        duration: Duration::from_secs(5),
        warm_up: Duration::from_secs(1),
    };

    /// [`Self::QUICK`] with `--quick`, else [`Self::FULL`].
    pub(super) fn of(options: &Options) -> Self {
        if options.quick {
            Self::QUICK
        } else {
            Self::FULL
        }
    }
}

/// A temporary directory, named `<prefix>...`, for nginx prefix directories.
pub(super) fn nginx_dir(prefix: &str) -> Result<tempfile::TempDir> {
    let dir = super::bench_dir(prefix)?;
    // nginx workers drop root privileges and still need their temporary directories.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

/// How the proxies are placed on the machine for S1.
#[derive(Debug, Clone, Copy)]
pub(super) struct Mode {
    pub(super) name: &'static str,
    /// `zilla start -w` and nginx's `worker_processes`, equal.
    pub(super) workers: usize,
    /// Each proxy alone on CPU 0, wrk and the origin on the other CPUs.
    pub(super) pinned: bool,
}

impl Mode {
    /// A: everything shares every core, as many workers as cores. B (on two cores or more):
    /// each proxy with one worker pinned alone to CPU 0, wrk and the origin on the others.
    pub(super) fn all() -> Vec<Self> {
        let cores = cores();
        let mut modes = vec![Self {
            name: "A",
            workers: cores,
            pinned: false,
        }];
        if cores >= 2 {
            modes.push(Self {
                name: "B",
                workers: 1,
                pinned: true,
            });
        }
        modes
    }

    pub(super) fn proxy_cpus(&self) -> Option<String> {
        self.pinned.then(|| PROXY_CPU.to_string())
    }

    /// Where wrk and the origin run in this mode.
    pub(super) fn load_cpus(&self) -> String {
        if self.pinned {
            format!("{}-{}", PROXY_CPU + 1, cores() - 1)
        } else {
            all_cpus()
        }
    }

    pub(super) fn describe(&self) -> String {
        if self.pinned {
            format!(
                "B: {} worker each, each proxy alone on CPU {PROXY_CPU}, wrk and origin on CPUs {}",
                self.workers,
                self.load_cpus()
            )
        } else {
            format!(
                "A: {} workers each, everything sharing CPUs {}",
                self.workers,
                all_cpus()
            )
        }
    }
}

/// The CPU a pinned proxy runs on in mode B.
const PROXY_CPU: usize = 0;

pub(super) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn all_cpus() -> String {
    format!("0-{}", cores() - 1)
}

/// Sets the CPU affinity of every thread of `pid` (and of its children when `tree`).
pub(super) fn pin(pid: u32, tree: bool, cpus: &str) -> Result<()> {
    let mut pids = vec![pid];
    if tree {
        pids.extend(children(pid));
    }
    for pid in pids {
        let output = cmd("taskset", ["-a", "-p", "-c", cpus, &pid.to_string()])
            .output()
            .context("cannot run taskset (util-linux)")?;
        if !output.status.success() {
            bail!(
                "taskset -a -p -c {cpus} {pid} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    Ok(())
}

/// One mode's nginx proxy and gateway.
struct Pair {
    mode: Mode,
    processes: Processes,
    targets: Targets,
    idle_rss_kib: u64,
    nginx: Nginx,
    gateway: Gateway,
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

/// One `GET` through `address` (with `header`, `name: value`, when given) returns the origin's
/// body.
pub(super) fn check_target(
    name: &str,
    address: SocketAddr,
    body: &str,
    header: Option<&str>,
) -> Result<()> {
    let (status, received) = load::probe(address, PATH, header)
        .with_context(|| format!("cannot GET {PATH} from {name}"))?;
    if status != 200 || received != body.as_bytes() {
        bail!(
            "{name} at {address} answered {status} with {} bytes instead of the origin's {BODY_LENGTH}",
            received.len()
        );
    }
    Ok(())
}

/// S1's results in one mode: the gateway the candidate, nginx the reference.
struct Throughput {
    mode: Mode,
    shape: Shape,
    versus: Versus,
    gateway_idle_rss_mib: f64,
}

impl Throughput {
    fn summary(&self) -> String {
        let versus = &self.versus;
        format!(
            "S1 mode {}: gateway {} req/s, nginx {} req/s; gateway ÷ nginx {:.2} (rounds {:.2} to {:.2}); \
             gateway {}; nginx {}; gateway RSS {:.1} MiB idle, {:.1} MiB peak",
            self.mode.describe(),
            rate(&versus.candidate_rate),
            rate(&versus.reference_rate),
            versus.ratio(),
            versus.round_ratios.min,
            versus.round_ratios.max,
            versus.candidate.describe(),
            versus.reference.describe(),
            self.gateway_idle_rss_mib,
            versus.candidate_peak_rss_mib.median,
        )
    }

    fn row(&self, date: &str, commit: &str) -> String {
        format!(
            "| {date} | {commit} | {} | {} | {} | {:.1} / {:.1} MiB |\n",
            self.mode.name,
            self.mode.workers,
            self.versus.cells(2),
            self.gateway_idle_rss_mib,
            self.versus.candidate_peak_rss_mib.median,
        )
    }
}

/// A proxy wrk loads in an interleaved comparison, and whose CPU time is read.
#[derive(Debug, Clone, Copy)]
pub(super) struct Side<'a> {
    pub(super) target: SocketAddr,
    pub(super) pid: u32,
    /// Whether its direct children count too (nginx's master and workers).
    pub(super) tree: bool,
    /// A header line (`name: value`) wrk sends with every request.
    pub(super) header: Option<&'a str>,
}

/// Two proxies compared in one mode: the candidate's rate is divided by the reference's.
pub(super) struct Contest<'a> {
    pub(super) mode: Mode,
    pub(super) reference: Side<'a>,
    pub(super) candidate: Side<'a>,
}

/// What one [`Contest`] measured over the rounds.
pub(super) struct Versus {
    pub(super) reference_rate: Spread,
    pub(super) candidate_rate: Spread,
    /// Each round's candidate req/s ÷ reference req/s.
    pub(super) round_ratios: Spread,
    pub(super) reference: ProxyCost,
    pub(super) candidate: ProxyCost,
    pub(super) reference_peak_rss_mib: Spread,
    pub(super) candidate_peak_rss_mib: Spread,
    /// Requests the candidate completed in the measured runs.
    pub(super) candidate_requests: u64,
}

impl Versus {
    /// The candidate's median req/s ÷ the reference's.
    pub(super) fn ratio(&self) -> f64 {
        self.candidate_rate.median / self.reference_rate.median
    }

    /// The table cells S1 and the policy scenarios share, each candidate then reference: req/s,
    /// the ratio in bold (to `decimals`, with the rounds' range), CPU per request, context
    /// switches per request, CPU share and the machine's idle share.
    pub(super) fn cells(&self, decimals: usize) -> String {
        format!(
            "{} | {} | **{:.decimals$}** ({:.decimals$} to {:.decimals$}) | {} / {} µs | {:.2} / {:.2} | {:.0} % / {:.0} % | {:.0} % / {:.0} %",
            rate(&self.candidate_rate),
            rate(&self.reference_rate),
            self.ratio(),
            self.round_ratios.min,
            self.round_ratios.max,
            self.candidate.per_request(),
            self.reference.per_request(),
            self.candidate.switches_per_request.median,
            self.reference.switches_per_request.median,
            self.candidate.cpu_percent.median,
            self.reference.cpu_percent.median,
            self.candidate.machine_idle.median,
            self.reference.machine_idle.median,
        )
    }

    fn of(reference: &[WrkRun], candidate: &[WrkRun]) -> Self {
        let spread = |runs: &[WrkRun], figure: fn(&WrkRun) -> f64| {
            Spread::of(&runs.iter().map(figure).collect::<Vec<_>>())
        };
        let ratios: Vec<f64> = reference
            .iter()
            .zip(candidate)
            .map(|(reference, candidate)| {
                candidate.report.requests_per_second / reference.report.requests_per_second
            })
            .collect();
        let peak_mib = |run: &WrkRun| run.peak_rss_kib as f64 / 1024.0;
        Self {
            reference_rate: spread(reference, |run| run.report.requests_per_second),
            candidate_rate: spread(candidate, |run| run.report.requests_per_second),
            round_ratios: Spread::of(&ratios),
            reference: WrkRun::cost(reference),
            candidate: WrkRun::cost(candidate),
            reference_peak_rss_mib: spread(reference, peak_mib),
            candidate_peak_rss_mib: spread(candidate, peak_mib),
            candidate_requests: candidate.iter().map(|run| run.report.requests).sum(),
        }
    }
}

/// One wrk run against one proxy.
struct WrkRun {
    report: wrk::Report,
    measured: Measured,
    peak_rss_kib: u64,
}

impl WrkRun {
    /// CPU µs per completed request.
    fn cpu_per_request(&self) -> f64 {
        self.measured.usage.total().as_secs_f64() * 1e6 / self.report.requests.max(1) as f64
    }

    fn cost(runs: &[Self]) -> ProxyCost {
        ProxyCost::of(runs.iter().map(|run| (&run.measured, run.report.requests)))
    }
}

/// S1 in every mode: nginx the reference, the gateway the candidate.
fn throughput(pairs: &[Pair], origin: u32, shape: Shape) -> Result<Vec<Throughput>> {
    let contests: Vec<Contest<'_>> = pairs
        .iter()
        .map(|pair| Contest {
            mode: pair.mode,
            reference: Side {
                target: pair.targets.nginx,
                pid: pair.processes.nginx,
                tree: true,
                header: None,
            },
            candidate: Side {
                target: pair.targets.gateway,
                pid: pair.processes.gateway,
                tree: false,
                header: None,
            },
        })
        .collect();
    let ticks = pairs
        .first()
        .map_or_else(ticks_per_second, |pair| pair.processes.ticks_per_second);
    let measured = interleaved(&contests, ["nginx", "gateway"], origin, shape, ticks)?;
    Ok(pairs
        .iter()
        .zip(measured)
        .map(|(pair, versus)| Throughput {
            mode: pair.mode,
            shape,
            versus,
            gateway_idle_rss_mib: pair.idle_rss_kib as f64 / 1024.0,
        })
        .collect())
}

/// Runs `wrk -t2 -c64` against both sides of every contest: in each round, for each contest in
/// turn, the reference then the candidate, with the origin's CPUs set for the contest's mode
/// before its runs; `shape.rounds` rounds after a warm-up of each. `names` are the reference's
/// and the candidate's, for the progress lines; `ticks_per_second` as [`ticks_per_second`]
/// reads it.
pub(super) fn interleaved(
    contests: &[Contest<'_>],
    names: [&str; 2],
    origin: u32,
    shape: Shape,
    ticks_per_second: u64,
) -> Result<Vec<Versus>> {
    let [reference_name, candidate_name] = names;
    println!(
        "wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{}s, {reference_name} and {candidate_name} in turn in each mode, {} rounds after a warm-up",
        shape.duration.as_secs(),
        shape.rounds
    );
    for contest in contests {
        println!("  mode {}", contest.mode.describe());
        pin(origin, true, &contest.mode.load_cpus())?;
        for side in [&contest.reference, &contest.candidate] {
            let child = spawn_wrk(side, &contest.mode, shape.warm_up)?;
            wrk::finish(child).context("warm-up")?;
        }
    }
    let mut reference: Vec<Vec<WrkRun>> = contests.iter().map(|_| Vec::new()).collect();
    let mut candidate: Vec<Vec<WrkRun>> = contests.iter().map(|_| Vec::new()).collect();
    for round in 1..=shape.rounds {
        for (index, contest) in contests.iter().enumerate() {
            let mode = &contest.mode;
            pin(origin, true, &mode.load_cpus())?;
            let by_reference = wrk_run(&contest.reference, mode, shape, ticks_per_second)
                .with_context(|| format!("round {round}, mode {}, {reference_name}", mode.name))?;
            let by_candidate = wrk_run(&contest.candidate, mode, shape, ticks_per_second)
                .with_context(|| format!("round {round}, mode {}, {candidate_name}", mode.name))?;
            println!(
                "  round {round} mode {}: {reference_name} {:.0} req/s ({:.1} µs/request), {candidate_name} {:.0} req/s ({:.1} µs/request, {:.1} MiB)",
                mode.name,
                by_reference.report.requests_per_second,
                by_reference.cpu_per_request(),
                by_candidate.report.requests_per_second,
                by_candidate.cpu_per_request(),
                by_candidate.peak_rss_kib as f64 / 1024.0
            );
            reference[index].push(by_reference);
            candidate[index].push(by_candidate);
        }
    }
    Ok(reference
        .iter()
        .zip(&candidate)
        .map(|(reference, candidate)| Versus::of(reference, candidate))
        .collect())
}

/// wrk against `side` for `duration`, on the load CPUs of `mode` when it is pinned.
fn spawn_wrk(side: &Side<'_>, mode: &Mode, duration: Duration) -> Result<Child> {
    wrk::spawn(
        mode.pinned.then(|| mode.load_cpus()).as_deref(),
        side.target,
        PATH,
        side.header,
        WRK_THREADS,
        WRK_CONNECTIONS,
        duration,
    )
}

/// One measured wrk run against `side`.
fn wrk_run(side: &Side<'_>, mode: &Mode, shape: Shape, ticks_per_second: u64) -> Result<WrkRun> {
    let meter = Meter::start(side.pid, side.tree, ticks_per_second)?;
    let mut child = spawn_wrk(side, mode, shape.duration)?;
    let peak_rss_kib = match peak_rss_until_exit(&mut child, side.pid) {
        Ok(peak) => peak,
        Err(error) => {
            // Best effort: wrk may already be gone, and the error says what went wrong.
            let _ = child.kill();
            let _ = child.wait();
            return Err(error);
        }
    };
    let measured = meter.stop()?;
    let report = wrk::finish(child)?;
    if report.non_success > 0 || report.socket_errors > 0 {
        bail!(
            "{}: {} responses outside 2xx/3xx and {} socket errors in {} requests",
            side.target,
            report.non_success,
            report.socket_errors,
            report.requests
        );
    }
    Ok(WrkRun {
        report,
        measured,
        peak_rss_kib,
    })
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
    /// S1 in each mode, A first.
    throughput: Vec<Throughput>,
    latency: Latency,
    /// The share of the machine's CPU time (all cores) that other work took during the run.
    others_share: f64,
}

impl Figures {
    /// Our added p99 ÷ nginx's; meaningless (None) when nginx adds nothing measurable.
    fn latency_ratio(&self) -> Option<f64> {
        let nginx = self.latency.nginx_added_p99.median;
        (nginx > 0.0).then(|| self.latency.gateway_added_p99.median / nginx)
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
        let date = today();
        let commit = commit();
        let shape = self
            .throughput
            .first()
            .map_or(Shape::FULL, |mode| mode.shape);
        let mut table = format!(
            "S1, throughput (`wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{}s`), median (min to max) of {} rounds; \
             CPU per request is user + system time from `/proc/<pid>/stat` (nginx: master and workers), \
             context switches are every thread's, idle is the machine's idle share during the run:\n\n\
             | date | commit | mode | workers each | gateway req/s | nginx req/s | gateway ÷ nginx | CPU per request (user + system), gateway / nginx | context switches per request, gateway / nginx | CPU, gateway / nginx | machine idle, gateway / nginx run | gateway RSS idle / peak |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|\n",
            shape.duration.as_secs(),
            shape.rounds,
        );
        for mode in &self.throughput {
            table.push_str(&mode.row(&date, &commit));
        }
        table.push('\n');
        for mode in &self.throughput {
            table.push_str(&format!("- Mode {}.\n", mode.mode.describe()));
        }
        let s2 = &self.latency;
        table.push_str(&format!(
            "\nS2, latency at a fixed {} req/s (half the mode A nginx median), mode A's proxies, {}s per run, median (min to max) of {ROUNDS} rounds, in µs:\n\n\
             | date | commit | direct p50 / p99 | nginx added p50 / p99 | gateway added p50 / p99 | gateway ÷ nginx added p99 | achieved req/s, direct / nginx / gateway | CPU at that rate, gateway / nginx / generator |\n\
             |---|---|---|---|---|---|---|---|\n\
             | {date} | {commit} | {:.0} / {:.0} | {} / {} | {} / {} | **{}** | {:.0} / {:.0} / {:.0} | {:.0} % / {:.0} % / {:.0} % |\n\n\
             {}\n",
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
        ));
        table
    }
}

/// `12345 (12001 to 12888)`.
pub(super) fn rate(spread: &Spread) -> String {
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
pub(super) fn others_share(
    machine_before: MachineCpu,
    own_before: Duration,
    ticks: u64,
) -> Result<f64> {
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
pub(super) fn response_body() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..BODY_LENGTH)
        .map(|index| char::from(ALPHABET[index % ALPHABET.len()]))
        .collect()
}

/// What both nginx configs share: a prefix-relative pid, log and temporary files, keep-alive
/// connections that never run out of requests, no access log.
fn nginx_config(http: &str, workers: &str) -> String {
    format!(
        "worker_processes {workers};\n\
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

/// The origin: `GET /x` answers 200 with `body`, on as many workers as cores.
/// S1's loopback nginx origin serving [`response_body`], in a new directory named from
/// `prefix` (where other nginx instances of the run go too): the directory, the body and the
/// origin.
pub(super) fn start_origin(prefix: &str) -> Result<(tempfile::TempDir, String, Nginx)> {
    let dir = nginx_dir(prefix)?;
    let body = response_body();
    let port = free_port()?;
    let origin = Nginx::start(
        &dir.path().join("origin"),
        &origin_config(port, &body),
        port,
    )?;
    Ok((dir, body, origin))
}

pub(super) fn origin_config(port: u16, body: &str) -> String {
    nginx_config(
        &format!(
            "    server {{\n\
         \x20       listen 127.0.0.1:{port};\n\
         \x20       location = {PATH} {{\n\
         \x20           return 200 \"{body}\";\n\
         \x20       }}\n\
         \x20   }}\n"
        ),
        "auto",
    )
}

/// The reference proxy: every request to the origin over a pool of keep-alive connections.
/// Stock otherwise: default buffering, no `reuseport`, `workers` worker processes.
fn proxy_config(port: u16, origin_port: u16, workers: usize) -> String {
    reverse_proxy_config(&format!("127.0.0.1:{port}"), "", origin_port, workers)
}

/// [`proxy_config`] listening on `listen` (an nginx `listen` directive's parameters), with
/// `server` (whole lines) added to its `server` block, e.g. TLS directives.
pub(super) fn reverse_proxy_config(
    listen: &str,
    server: &str,
    origin_port: u16,
    workers: usize,
) -> String {
    nginx_config(
        &format!(
            "    upstream origin {{\n\
         \x20       server 127.0.0.1:{origin_port};\n\
         \x20       keepalive 64;\n\
         \x20       keepalive_requests 10000000;\n\
         \x20   }}\n\
         \x20   server {{\n\
         \x20       listen {listen};\n\
         {server}\
         \x20       location / {{\n\
         \x20           proxy_pass http://origin;\n\
         \x20           proxy_http_version 1.1;\n\
         \x20           proxy_set_header Connection \"\";\n\
         \x20       }}\n\
         \x20   }}\n"
        ),
        &workers.to_string(),
    )
}

/// An nginx running in the foreground on a config in its own prefix directory; stopped with
/// `SIGTERM` when dropped (killing only the master would leave its workers listening).
pub(super) struct Nginx {
    process: Process,
    port: u16,
}

impl Nginx {
    pub(super) fn start(prefix: &Path, config: &str, port: u16) -> Result<Self> {
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
            if zilla_tests::accepts_connections(self.port) {
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

    pub(super) fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub(super) fn pid(&self) -> u32 {
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
            &proxy_config(proxy_port, origin_port, 1),
            proxy_port,
        )?;
        for address in [origin.address(), proxy.address()] {
            check_target("nginx", address, &body, None)?;
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
        let (status, _) = load::probe(proxy.address(), "/missing", None)?;
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
