//! `cargo xtask bench tls-h2`: scenario S3, the gateway terminating TLS 1.3 and HTTP/2 as a
//! reverse proxy (`examples/http.proxy.tls`) in front of the loopback nginx origin of S1
//! (HTTP/1.1, 1 KB), against nginx doing the same (`listen ... ssl http2`, `ssl_protocols
//! TLSv1.3`, `proxy_pass` over an upstream keep-alive pool), with the same certificate and key
//! (a P-256 `localhost` certificate generated for the run) and as many workers as cores each.
//!
//! In each round, nginx then the gateway, for each figure; five rounds after a warm-up
//! (`--quick`: three of five seconds, printed only):
//!
//! - **(a) keep-alive throughput**: `h2load -t2 -c64 -m10 -D 10` (64 connections, 10 streams
//!   each); req/s as h2load counts them over the duration, and the proxy's user and system CPU
//!   time per request, read from `/proc` before and after the run.
//! - **(b) new TLS connections per second**: back-to-back batches of `h2load -t2 -c64 -n64`
//!   for ten seconds: 64 clients each open a connection, complete a full TLS 1.3 handshake
//!   (h2load resumes no sessions), send one request and close. The rate is the connections
//!   completed over the time h2load reports for the batches; the proxy's CPU time per
//!   connection is read around the whole series. Batches rather than one large run because
//!   h2load opens all of its clients at once: a burst beyond nginx's accept backlog (511)
//!   would be dropped and retried after a second, measuring the backlog, not the handshakes.
//!   `openssl s_time -new` was not used: it holds one connection at a time, so it measures the
//!   client's own handshake latency with the proxy mostly idle, and it speaks no HTTP/2.
//! - **(c) memory per idle TLS connection**: on a freshly started nginx and gateway (so memory
//!   freed by earlier runs is not reused and hidden), after one request through each, a Python
//!   client ([`IDLE_CLIENT`], the standard `ssl` module) opens [`IDLE_CONNECTIONS`]
//!   connections that complete the TLS 1.3 handshake (verifying the certificate), negotiate
//!   `h2` and exchange the HTTP/2 preface and SETTINGS, then stay idle. The figure is the
//!   growth of the proxy's resident memory (`VmRSS`; for nginx, of all its worker processes
//!   added up) divided by the number of connections, all of which must still be open after
//!   the reading.
//!
//! Every run must succeed with 2xx answers only, over TLSv1.3 and h2, and both proxies must
//! negotiate the same cipher and key exchange.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use zilla_tests::{Gateway, free_port, python, rss_kib, workspace_dir};

use super::h2load::{self, Load};
use super::http_proxy::{
    BODY_LENGTH, Nginx, PATH, Shape, cores, nginx_dir, origin_config, others_share, rate,
    response_body, reverse_proxy_config,
};
use super::options::Options;
use super::usage::{
    MachineCpu, Measured, Meter, ProxyCost, children, own_cpu_with_children, ticks_per_second,
};
use super::{Spread, commit, record, stop_gateway, today, zilla_binary};
use crate::demo::generate_keystore;
use crate::shell::cmd;

/// h2load threads, as wrk's in S1.
const H2LOAD_THREADS: usize = 2;
/// Keep-alive connections of (a), and streams in flight on each.
const CLIENTS: usize = 64;
const STREAMS: usize = 10;
/// Connections h2load opens at once in each batch of (b), well below nginx's accept backlog.
const HANDSHAKE_BATCH: usize = 64;
/// Idle connections of (c).
const IDLE_CONNECTIONS: usize = 1000;
/// How long a proxy is left alone before its memory is read.
const IDLE_SETTLE: Duration = Duration::from_secs(1);
/// The password of the generated keystore.
const KEYSTORE_PASSWORD: &str = "bench-only";

/// Opens `count` idle HTTP/2-over-TLS-1.3 connections to `127.0.0.1:port`, verifying the
/// `localhost` certificate against `cafile`; prints `{"open": N}`, waits for a line on stdin,
/// then prints `{"alive": N}`: how many were neither closed nor sent a GOAWAY meanwhile.
const IDLE_CLIENT: &str = r#"
import json, resource, socket, ssl, sys
port, count, cafile = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
wanted = count + 64
if soft != resource.RLIM_INFINITY and soft < wanted:
    resource.setrlimit(resource.RLIMIT_NOFILE,
        (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard), hard))
context = ssl.create_default_context(cafile=cafile)
context.minimum_version = ssl.TLSVersion.TLSv1_3
context.set_alpn_protocols(['h2'])
SETTINGS, GOAWAY, ACK = 4, 7, 1

def frame(kind, flags=0):
    return bytes([0, 0, 0, kind, flags, 0, 0, 0, 0])

def read_exact(connection, length):
    data = b''
    while len(data) < length:
        chunk = connection.recv(length - len(data))
        if not chunk:
            raise ConnectionError('closed during the HTTP/2 preface')
        data += chunk
    return data

def open_one():
    connection = context.wrap_socket(
        socket.create_connection(('127.0.0.1', port), timeout=600), server_hostname='localhost')
    if connection.version() != 'TLSv1.3' or connection.selected_alpn_protocol() != 'h2':
        raise ConnectionError('negotiated %s and %s' % (connection.version(),
            connection.selected_alpn_protocol()))
    connection.sendall(b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n' + frame(SETTINGS))
    settings = acked = False
    while not (settings and acked):
        header = read_exact(connection, 9)
        read_exact(connection, int.from_bytes(header[:3], 'big'))
        kind, flags = header[3], header[4]
        if kind == GOAWAY:
            raise ConnectionError('GOAWAY during the HTTP/2 preface')
        if kind == SETTINGS and flags & ACK:
            acked = True
        elif kind == SETTINGS:
            settings = True
            connection.sendall(frame(SETTINGS, ACK))
    return connection

connections = [open_one() for _ in range(count)]
print(json.dumps({'open': len(connections)}), flush=True)
sys.stdin.readline()
alive = 0
for connection in connections:
    connection.setblocking(False)
    pending, closed = b'', False
    try:
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                closed = True
                break
            pending += chunk
    except ssl.SSLWantReadError:
        pass
    except OSError:
        closed = True
    kinds = []
    while len(pending) >= 9:
        kinds.append(pending[3])
        pending = pending[9 + int.from_bytes(pending[:3], 'big'):]
    if not closed and GOAWAY not in kinds:
        alive += 1
    connection.close()
print(json.dumps({'alive': alive}), flush=True)
"#;

/// Runs S3 and records its figures (with `--quick`: fewer, shorter rounds, printed only).
pub fn run(options: &Options) -> Result<()> {
    let binary = zilla_binary(options)?;
    let ticks = ticks_per_second();
    let machine_before = MachineCpu::now()?;
    let own_before = own_cpu_with_children(ticks)?;
    let shape = Shape::of(options);
    let dir = nginx_dir("zilla-bench-tls-h2-")?;
    generate_keystore(dir.path(), KEYSTORE_PASSWORD)?;
    let setup = Setup {
        dir: dir.path().to_owned(),
        binary,
        origin_port: free_port()?,
        workers: cores(),
        ticks_per_second: ticks,
    };
    let body = response_body();
    let origin = Nginx::start(
        &setup.dir.join("origin"),
        &origin_config(setup.origin_port, &body),
        setup.origin_port,
    )?;
    let proxies = Proxies::start(&setup, "proxies")?;
    for target in Target::BOTH {
        check_target(&setup, target, proxies.port(target), &body)?;
    }

    println!(
        "S3: {} workers each; (a) h2load -t{H2LOAD_THREADS} -c{CLIENTS} -m{STREAMS} -D {}, \
         (b) h2load -t{H2LOAD_THREADS} -c{HANDSHAKE_BATCH} -n{HANDSHAKE_BATCH} batches for {}s, \
         (c) {IDLE_CONNECTIONS} idle connections on fresh proxies; nginx then gateway, {} rounds after a warm-up",
        setup.workers,
        shape.duration.as_secs(),
        shape.duration.as_secs(),
        shape.rounds
    );
    for target in Target::BOTH {
        keep_alive(&proxies, target, shape.warm_up).context("warm-up")?;
        handshakes(&proxies, target, shape.warm_up).context("warm-up")?;
    }
    let mut rounds = Vec::with_capacity(shape.rounds);
    for round in 1..=shape.rounds {
        let measured =
            measure_round(&setup, &proxies, shape).with_context(|| format!("round {round}"))?;
        println!("  round {round}: {}", measured.summary());
        rounds.push(measured);
    }
    proxies.stop()?;
    drop(origin);

    let figures = Figures::of(&rounds, &setup, shape)?;
    println!("{}", figures.summary());
    if options.quick {
        return Ok(());
    }
    let others = others_share(machine_before, own_before, ticks)?;
    record("tls-h2", &figures.table(others))
}

/// What every proxy of the run shares.
struct Setup {
    dir: PathBuf,
    binary: PathBuf,
    origin_port: u16,
    /// `zilla start -w` and nginx's `worker_processes`, equal.
    workers: usize,
    ticks_per_second: u64,
}

impl Setup {
    fn certificate(&self) -> PathBuf {
        self.dir.join("localhost.crt")
    }
}

/// One of the two proxies measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Nginx,
    Gateway,
}

impl Target {
    /// In the order each round measures them.
    const BOTH: [Self; 2] = [Self::Nginx, Self::Gateway];

    fn name(self) -> &'static str {
        match self {
            Self::Nginx => "nginx",
            Self::Gateway => "gateway",
        }
    }
}

/// nginx and the gateway, both terminating TLS with the same key in front of the origin.
struct Proxies {
    nginx: Nginx,
    gateway: Gateway,
    ticks_per_second: u64,
}

impl Proxies {
    /// Starts both, nginx in `<dir>/<name>`.
    fn start(setup: &Setup, name: &str) -> Result<Self> {
        let nginx_port = free_port()?;
        let nginx = Nginx::start(
            &setup.dir.join(name),
            &nginx_proxy_config(setup, nginx_port),
            nginx_port,
        )?;
        let gateway =
            Gateway::from_file(workspace_dir().join("examples/http.proxy.tls/zilla.yaml"))
                .binary(&setup.binary)
                .workers(setup.workers)
                .env("PROXY_PORT", "0")
                .env("ORIGIN_PORT", setup.origin_port.to_string())
                .env("KEYSTORE_PATH", setup.dir.join("localhost.p12"))
                .env("KEYSTORE_PASSWORD", KEYSTORE_PASSWORD)
                .start()?;
        Ok(Self {
            nginx,
            gateway,
            ticks_per_second: setup.ticks_per_second,
        })
    }

    fn port(&self, target: Target) -> u16 {
        match target {
            Target::Nginx => self.nginx.address().port(),
            Target::Gateway => self.gateway.address("tcp_server").port(),
        }
    }

    fn url(&self, target: Target) -> String {
        format!("https://127.0.0.1:{}{PATH}", self.port(target))
    }

    /// Starts reading the CPU time of `target` (nginx: its master and workers).
    fn meter(&self, target: Target) -> Result<Meter> {
        match target {
            Target::Nginx => Meter::start(self.nginx.pid(), true, self.ticks_per_second),
            Target::Gateway => Meter::start(self.gateway.pid(), false, self.ticks_per_second),
        }
    }

    /// The resident memory of `target`, in KiB: for nginx, its workers' added up.
    fn rss_kib(&self, target: Target) -> Result<u64> {
        match target {
            Target::Nginx => children(self.nginx.pid())
                .into_iter()
                .map(rss_kib)
                .sum::<Result<u64>>(),
            Target::Gateway => self.gateway.rss_kib(),
        }
    }

    fn stop(mut self) -> Result<()> {
        stop_gateway(&mut self.gateway)?;
        drop(self.nginx);
        Ok(())
    }
}

/// The nginx reference: S1's reverse proxy, listening on `port` with TLS 1.3 only and HTTP/2,
/// with the generated key and certificate.
fn nginx_proxy_config(setup: &Setup, port: u16) -> String {
    let tls = format!(
        "\x20       ssl_certificate {};\n\
         \x20       ssl_certificate_key {};\n\
         \x20       ssl_protocols TLSv1.3;\n",
        setup.certificate().display(),
        setup.dir.join("localhost.key").display()
    );
    reverse_proxy_config(
        &format!("127.0.0.1:{port} ssl http2"),
        &tls,
        setup.origin_port,
        setup.workers,
    )
}

/// One `GET` with curl, over HTTP/2 and TLS 1.3 with the certificate verified, returns the
/// origin's body.
fn check_target(setup: &Setup, target: Target, port: u16, body: &str) -> Result<()> {
    let url = format!("https://localhost:{port}{PATH}");
    let output = cmd(
        "curl",
        [
            "-sS",
            "--max-time",
            "30",
            "--http2",
            "--tlsv1.3",
            "--resolve",
            &format!("localhost:{port}:127.0.0.1"),
            "--write-out",
            "\n%{http_version} %{http_code}",
        ],
    )
    .arg("--cacert")
    .arg(setup.certificate())
    .arg(&url)
    .output()
    .context("cannot run curl")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let expected = format!("{body}\n2 200");
    if !output.status.success() || stdout != expected {
        bail!(
            "{} at {url} answered `{}` ({} bytes; {}) instead of the origin's {BODY_LENGTH} bytes over HTTP/2 with 200",
            target.name(),
            stdout.lines().last().unwrap_or_default(),
            stdout.len(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// One measured run of (a) or (b) against one proxy.
struct Run {
    /// Requests per second (a), or new connections per second (b).
    rate: f64,
    /// Requests (a) or connections (b) completed.
    completed: u64,
    measured: Measured,
    /// `TLS_AES_128_GCM_SHA256, X25519 253 bits`.
    negotiated: String,
}

fn negotiated(report: &h2load::Report) -> String {
    format!("{}, {}", report.cipher, report.key_exchange)
}

/// (a): keep-alive connections for `duration`.
fn keep_alive(proxies: &Proxies, target: Target, duration: Duration) -> Result<Run> {
    let meter = proxies.meter(target)?;
    let report = h2load::run(
        H2LOAD_THREADS,
        CLIENTS,
        STREAMS,
        Load::Duration(duration),
        &proxies.url(target),
    )?;
    let measured = meter.stop()?;
    report
        .check()
        .with_context(|| format!("{} keep-alive", target.name()))?;
    Ok(Run {
        rate: report.requests_per_second,
        completed: report.succeeded,
        measured,
        negotiated: negotiated(&report),
    })
}

/// (b): batches of new connections, one request each, for `duration`.
fn handshakes(proxies: &Proxies, target: Target, duration: Duration) -> Result<Run> {
    let meter = proxies.meter(target)?;
    let started = Instant::now();
    let mut connections = 0;
    let mut elapsed = Duration::ZERO;
    let mut negotiations = Vec::new();
    while started.elapsed() < duration {
        let report = h2load::run(
            H2LOAD_THREADS,
            HANDSHAKE_BATCH,
            1,
            Load::Requests(HANDSHAKE_BATCH),
            &proxies.url(target),
        )?;
        report
            .check()
            .with_context(|| format!("{} new connections", target.name()))?;
        connections += report.succeeded;
        elapsed += report.elapsed;
        negotiations.push(negotiated(&report));
    }
    let measured = meter.stop()?;
    negotiations.dedup();
    if negotiations.len() != 1 {
        bail!(
            "{} negotiated differently across batches: {negotiations:?}",
            target.name()
        );
    }
    Ok(Run {
        rate: connections as f64 / elapsed.as_secs_f64().max(1e-9),
        completed: connections,
        measured,
        negotiated: negotiations.remove(0),
    })
}

/// (c): KiB of resident memory each of [`IDLE_CONNECTIONS`] idle TLS connections adds to a
/// fresh `target`, which has answered one request first.
fn idle_memory(proxies: &Proxies, target: Target, certificate: &Path) -> Result<f64> {
    let warm_up = h2load::run(1, 1, 1, Load::Requests(1), &proxies.url(target))?;
    warm_up.check().context("warm-up request")?;
    std::thread::sleep(IDLE_SETTLE);
    let before = proxies.rss_kib(target)?;
    let mut client = IdleClient::open(proxies.port(target), IDLE_CONNECTIONS, certificate)?;
    std::thread::sleep(IDLE_SETTLE);
    let after = proxies.rss_kib(target)?;
    let alive = client.close()?;
    if alive != IDLE_CONNECTIONS {
        bail!(
            "only {alive} of {IDLE_CONNECTIONS} idle connections to {} were still open after the reading",
            target.name()
        );
    }
    Ok(after.saturating_sub(before) as f64 / IDLE_CONNECTIONS as f64)
}

/// The Python [`IDLE_CLIENT`] holding its connections open; killed when dropped.
struct IdleClient {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl IdleClient {
    /// Starts the client and waits until all its connections are open.
    fn open(port: u16, count: usize, certificate: &Path) -> Result<Self> {
        let mut child = std::process::Command::new(python())
            .args(["-c", IDLE_CLIENT, &port.to_string(), &count.to_string()])
            .arg(certificate)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot run the peers' python (create it with `cargo xtask peers`)")?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            bail!("the idle client has no pipes");
        };
        let mut client = Self {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        };
        let opened = client.count("open")?;
        if opened != count {
            bail!("the idle client opened {opened} of {count} connections");
        }
        Ok(client)
    }

    /// Tells the client to check its connections and close them; how many were still open.
    fn close(&mut self) -> Result<usize> {
        writeln!(self.stdin).context("the idle client is gone")?;
        let alive = self.count("alive")?;
        self.child.wait()?;
        Ok(alive)
    }

    /// Reads the client's next line, `{"<key>": N}`.
    fn count(&mut self, key: &str) -> Result<usize> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("the idle client exited before reporting `{key}` (its error is above)");
        }
        let value: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("the idle client printed `{}`", line.trim()))?;
        value[key]
            .as_u64()
            .map(|count| count as usize)
            .with_context(|| format!("no `{key}` in {value}"))
    }
}

impl Drop for IdleClient {
    fn drop(&mut self) {
        // Best effort: the client may already have exited.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every figure of one round, nginx's and the gateway's.
struct Round {
    keep_alive: [Run; 2],
    handshakes: [Run; 2],
    /// KiB per idle connection.
    idle_kib: [f64; 2],
}

fn measure_round(setup: &Setup, proxies: &Proxies, shape: Shape) -> Result<Round> {
    let [nginx, gateway] = Target::BOTH;
    let keep_alive = [
        keep_alive(proxies, nginx, shape.duration)?,
        keep_alive(proxies, gateway, shape.duration)?,
    ];
    let handshakes = [
        handshakes(proxies, nginx, shape.duration)?,
        handshakes(proxies, gateway, shape.duration)?,
    ];
    for runs in [&keep_alive, &handshakes] {
        if runs[0].negotiated != runs[1].negotiated {
            bail!(
                "nginx negotiated {} and the gateway {}: the handshakes are not comparable",
                runs[0].negotiated,
                runs[1].negotiated
            );
        }
    }
    // Fresh proxies, so the idle connections cannot reuse memory freed by the runs above.
    let fresh = Proxies::start(setup, "idle")?;
    let idle_kib = [
        idle_memory(&fresh, nginx, &setup.certificate())?,
        idle_memory(&fresh, gateway, &setup.certificate())?,
    ];
    fresh.stop()?;
    Ok(Round {
        keep_alive,
        handshakes,
        idle_kib,
    })
}

impl Round {
    fn summary(&self) -> String {
        let cpu = |run: &Run| {
            run.measured.usage.total().as_secs_f64() * 1e6 / run.completed.max(1) as f64
        };
        let [nginx, gateway] = &self.keep_alive;
        let [nginx_new, gateway_new] = &self.handshakes;
        format!(
            "keep-alive nginx {:.0} req/s ({:.1} µs/request), gateway {:.0} req/s ({:.1} µs/request); \
             new connections nginx {:.0}/s ({:.0} µs each), gateway {:.0}/s ({:.0} µs each); \
             idle connection nginx {:.1} KiB, gateway {:.1} KiB",
            nginx.rate,
            cpu(nginx),
            gateway.rate,
            cpu(gateway),
            nginx_new.rate,
            cpu(nginx_new),
            gateway_new.rate,
            cpu(gateway_new),
            self.idle_kib[0],
            self.idle_kib[1],
        )
    }
}

/// One figure, (a) or (b), over the rounds.
struct Rates {
    nginx: Spread,
    gateway: Spread,
    /// Each round's gateway ÷ nginx.
    round_ratios: Spread,
    nginx_cost: ProxyCost,
    gateway_cost: ProxyCost,
}

impl Rates {
    fn of(runs: &[&[Run; 2]]) -> Self {
        let spread = |figure: &dyn Fn(&[Run; 2]) -> f64| {
            Spread::of(&runs.iter().map(|pair| figure(pair)).collect::<Vec<_>>())
        };
        let cost = |index: usize| {
            ProxyCost::of(
                runs.iter()
                    .map(|pair| (&pair[index].measured, pair[index].completed)),
            )
        };
        Self {
            nginx: spread(&|pair| pair[0].rate),
            gateway: spread(&|pair| pair[1].rate),
            round_ratios: spread(&|pair| pair[1].rate / pair[0].rate),
            nginx_cost: cost(0),
            gateway_cost: cost(1),
        }
    }

    fn ratio(&self) -> f64 {
        self.gateway.median / self.nginx.median
    }

    /// `0.93 (0.88 to 0.97)`, the median ratio between `emphasis` (`**` for Markdown bold).
    fn ratio_with_range(&self, emphasis: &str) -> String {
        format!(
            "{emphasis}{:.2}{emphasis} ({:.2} to {:.2})",
            self.ratio(),
            self.round_ratios.min,
            self.round_ratios.max
        )
    }
}

/// S3's results.
struct Figures {
    shape: Shape,
    workers: usize,
    /// What both proxies negotiated.
    negotiated: String,
    keep_alive: Rates,
    handshakes: Rates,
    /// KiB per idle TLS connection.
    nginx_idle: Spread,
    gateway_idle: Spread,
}

impl Figures {
    fn of(rounds: &[Round], setup: &Setup, shape: Shape) -> Result<Self> {
        let negotiated = rounds
            .first()
            .map(|round| round.keep_alive[0].negotiated.clone())
            .context("no rounds")?;
        let idle = |index: usize| {
            Spread::of(
                &rounds
                    .iter()
                    .map(|round| round.idle_kib[index])
                    .collect::<Vec<_>>(),
            )
        };
        Ok(Self {
            shape,
            workers: setup.workers,
            negotiated,
            keep_alive: Rates::of(
                &rounds
                    .iter()
                    .map(|round| &round.keep_alive)
                    .collect::<Vec<_>>(),
            ),
            handshakes: Rates::of(
                &rounds
                    .iter()
                    .map(|round| &round.handshakes)
                    .collect::<Vec<_>>(),
            ),
            nginx_idle: idle(0),
            gateway_idle: idle(1),
        })
    }

    fn summary(&self) -> String {
        format!(
            "S3 tls-h2 ({}, {} workers each): keep-alive gateway {} req/s, nginx {} req/s, gateway ÷ nginx {}; \
             gateway {}; nginx {}. New TLS connections gateway {}/s, nginx {}/s, gateway ÷ nginx {}; \
             per connection gateway {}; nginx {}. Memory per idle TLS connection gateway {:.1} KiB, nginx {:.1} KiB",
            self.negotiated,
            self.workers,
            rate(&self.keep_alive.gateway),
            rate(&self.keep_alive.nginx),
            self.keep_alive.ratio_with_range(""),
            self.keep_alive.gateway_cost.describe(),
            self.keep_alive.nginx_cost.describe(),
            rate(&self.handshakes.gateway),
            rate(&self.handshakes.nginx),
            self.handshakes.ratio_with_range(""),
            self.handshakes.gateway_cost.describe(),
            self.handshakes.nginx_cost.describe(),
            self.gateway_idle.median,
            self.nginx_idle.median,
        )
    }

    /// The table recorded, with `others`, the share of the machine's CPU time other work took.
    fn table(&self, others: f64) -> String {
        let kib = |spread: &Spread| {
            format!(
                "{:.1} ({:.1} to {:.1})",
                spread.median, spread.min, spread.max
            )
        };
        format!(
            "S3, HTTP/2 over TLS 1.3 ({}), {} workers each, median (min to max) of {} rounds; (a) `h2load -t{H2LOAD_THREADS} -c{CLIENTS} -m{STREAMS} -D {}`, \
             (b) batches of `h2load -t{H2LOAD_THREADS} -c{HANDSHAKE_BATCH} -n{HANDSHAKE_BATCH}` for {}s (a full handshake and one request per connection), \
             (c) {IDLE_CONNECTIONS} idle connections on fresh proxies; CPU is user + system time from `/proc/<pid>/stat` (nginx: master and workers), in µs:\n\n\
             | date | commit | (a) gateway req/s | (a) nginx req/s | (a) gateway ÷ nginx | (a) CPU per request, gateway / nginx | (b) gateway new connections/s | (b) nginx new connections/s | (b) gateway ÷ nginx | (b) CPU per connection, gateway / nginx | (c) memory per idle TLS connection, gateway / nginx |\n\
             |---|---|---|---|---|---|---|---|---|---|---|\n\
             | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} / {} | {} / {} KiB |\n\n\
             Other work on the {}-core machine took {:.0} % of its CPU time during the run.\n",
            self.negotiated,
            self.workers,
            self.shape.rounds,
            self.shape.duration.as_secs(),
            self.shape.duration.as_secs(),
            today(),
            commit(),
            rate(&self.keep_alive.gateway),
            rate(&self.keep_alive.nginx),
            self.keep_alive.ratio_with_range("**"),
            self.keep_alive.gateway_cost.per_request(),
            self.keep_alive.nginx_cost.per_request(),
            rate(&self.handshakes.gateway),
            rate(&self.handshakes.nginx),
            self.handshakes.ratio_with_range("**"),
            self.handshakes.gateway_cost.per_request(),
            self.handshakes.nginx_cost.per_request(),
            kib(&self.gateway_idle),
            kib(&self.nginx_idle),
            cores(),
            others * 100.0,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::usage::Usage;

    fn run(rate: f64, completed: u64, cpu_millis: u64) -> Run {
        Run {
            rate,
            completed,
            measured: Measured {
                usage: Usage {
                    user: Duration::from_millis(cpu_millis),
                    system: Duration::from_millis(cpu_millis / 2),
                    context_switches: completed,
                },
                wall: Duration::from_secs(10),
                machine_idle: 0.25,
            },
            negotiated: "TLS_AES_128_GCM_SHA256, X25519 253 bits".to_owned(),
        }
    }

    /// Medians and per-round ratios over the rounds, and a table row with a cell for every
    /// column of its header.
    #[test]
    fn rounds_become_one_table_row() -> Result<()> {
        let rounds: Vec<Round> = [1.0, 2.0, 3.0]
            .into_iter()
            .map(|scale| Round {
                keep_alive: [
                    run(20_000.0 * scale, 200_000, 2_000),
                    run(10_000.0 * scale, 100_000, 2_000),
                ],
                handshakes: [run(4_000.0, 40_000, 4_000), run(5_000.0, 50_000, 4_000)],
                idle_kib: [20.0 * scale, 10.0 * scale],
            })
            .collect();
        let setup = Setup {
            dir: PathBuf::new(),
            binary: PathBuf::new(),
            origin_port: 0,
            workers: 2,
            ticks_per_second: 100,
        };
        let figures = Figures::of(&rounds, &setup, Shape::FULL)?;
        assert_eq!(figures.keep_alive.gateway.median, 20_000.0);
        assert_eq!(figures.keep_alive.ratio(), 0.5);
        assert_eq!(figures.handshakes.ratio(), 1.25);
        // 2 s user + 1 s system over 100 000 requests.
        let per_request = figures.keep_alive.gateway_cost.total_per_request.median;
        assert!((per_request - 30.0).abs() < 1e-9, "{per_request}");
        assert_eq!(
            (figures.gateway_idle.median, figures.nginx_idle.median),
            (20.0, 40.0)
        );
        let table = figures.table(0.1);
        let lines: Vec<&str> = table.lines().filter(|line| line.starts_with('|')).collect();
        assert_eq!(lines.len(), 3, "{table}");
        let cells = |line: &str| line.matches('|').count();
        assert_eq!(cells(lines[0]), cells(lines[2]), "{table}");
        assert!(lines[2].contains("| **0.50** (0.50 to 0.50) |"), "{table}");
        assert!(table.contains("TLS_AES_128_GCM_SHA256, X25519 253 bits"));
        Ok(())
    }

    /// The nginx reference accepts its TLS configuration: HTTP/2 over TLS 1.3 only, with the
    /// generated certificate, in front of the origin (no gateway involved).
    #[test]
    fn the_nginx_reference_serves_the_origin_over_http2_and_tls_1_3() -> Result<()> {
        let dir = nginx_dir("zilla-test-tls-h2-")?;
        generate_keystore(dir.path(), KEYSTORE_PASSWORD)?;
        let setup = Setup {
            dir: dir.path().to_owned(),
            binary: PathBuf::new(),
            origin_port: free_port()?,
            workers: 1,
            ticks_per_second: ticks_per_second(),
        };
        let body = response_body();
        let _origin = Nginx::start(
            &setup.dir.join("origin"),
            &origin_config(setup.origin_port, &body),
            setup.origin_port,
        )?;
        let port = free_port()?;
        let _nginx = Nginx::start(
            &setup.dir.join("proxy"),
            &nginx_proxy_config(&setup, port),
            port,
        )?;
        check_target(&setup, Target::Nginx, port, &body)?;
        let downgraded = cmd("curl", ["-sS", "-k", "--tls-max", "1.2"])
            .arg(format!("https://127.0.0.1:{port}{PATH}"))
            .output()?;
        assert!(!downgraded.status.success(), "TLS 1.2 was accepted");
        Ok(())
    }
}
