//! `cargo xtask bench kafka-produce`: scenario S7, `POST` of a 1 KB JSON body turned into a
//! Kafka record by the gateway on `examples/http.kafka.produce` (http-kafka produce, one way,
//! `acks: leader_only`) against a loopback tansu, with two references measured in the same run:
//!
//! - **proxy**: the S1 gateway (`examples/http.proxy`) in front of a loopback nginx answering
//!   `204`, given the same `POST`s: what the gateway's HTTP path costs without Kafka;
//! - **native**: librdkafka (the peers' Python confluent-kafka, [`NATIVE_PRODUCER`]) writing the
//!   same records straight to the broker with leader acks and at most [`CONCURRENCY`] records
//!   unacknowledged, as wrk keeps [`CONCURRENCY`] requests in flight: what the broker takes
//!   from a good client without the gateway. (Like the gateway's kafka client, librdkafka puts
//!   records that are waiting together into one produce request; tansu commits each request on
//!   its own, so a client sending one record per request would measure the broker's
//!   per-request cost instead.)
//!   In the throughput runs it also writes as an idempotent producer, as the gateway's kafka
//!   client does by default (`zilla.binding.kafka.client.produce.idempotent`): the same
//!   work on the broker's side (a producer id and a sequence per batch) as the gateway's.
//!
//! Throughput: `wrk -t2 -c64` with a Lua script for the `POST` (proxy, gateway) and the native
//! producer in turn (proxy, native, idempotent native, gateway, proxy, ...), several rounds
//! after a warm-up of each.
//! Latency: an open-loop generator at a fixed rate of half the gateway's median throughput,
//! each latency measured from the time its request was due (no coordinated omission), against
//! the three in turn.
//!
//! Every record the gateway and the native producer had acknowledged must be in the topic at
//! the end: the partition's end offset is compared with the acknowledgements.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use zilla_binding_kafka::wire::{Cluster, Isolation, OffsetSpec};
use zilla_tests::{Gateway, Peer, free_port, success, workspace_dir};

use super::http_proxy::Nginx;
use super::load::{Due, Schedule, connect, percentile};
use super::optimized::rerun_optimized;
use super::options::Options;
use super::tansu::{Broker, sockets_to};
use super::usage::{cpu_time, load_average, peak_rss_until_exit, ticks_per_second};
use super::wrk;
use super::{Spread, commit, record, stop_gateway, today};
use crate::shell::{cargo, cmd, run as run_command};

const TOPIC: &str = "events";
pub(super) const PATH: &str = "/events";
pub(super) const BODY_LENGTH: usize = 1024;
/// Requests (wrk connections) or produces in flight at once in the throughput runs.
pub(super) const CONCURRENCY: usize = 64;
pub(super) const WRK_THREADS: usize = 2;
/// wrk counts a request unanswered for this long as a timeout error (its default is 2 s).
const WRK_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_ROUNDS: usize = 5;
const DEFAULT_RUN: Duration = Duration::from_secs(10);
pub(super) const WARM_UP: Duration = Duration::from_secs(3);
/// The fixed rate of the latency runs, as a share of the gateway's median throughput.
const LATENCY_LOAD: f64 = 0.5;
const LATENCY_RUN: Duration = Duration::from_secs(5);
const LATENCY_WARM_UP: Duration = Duration::from_secs(2);
/// Connections (or produce workers) of the fixed-rate runs, each with one request in flight.
const LATENCY_CONNECTIONS: usize = 32;
/// A fixed-rate run with more failed requests than this share is not a measurement.
pub(super) const MAX_ERROR_SHARE: f64 = 0.001;
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the native producer may take beyond its run (start-up, the final flush).
const NATIVE_GRACE: Duration = Duration::from_secs(60);

/// Runs S7 and records its figures.
pub fn run(options: &Options) -> Result<()> {
    if rerun_optimized()? {
        return Ok(());
    }
    let rounds = options.rounds.unwrap_or(DEFAULT_ROUNDS).max(1);
    let duration = options
        .seconds
        .map_or(DEFAULT_RUN, Duration::from_secs)
        .max(Duration::from_secs(1));
    run_command(cargo().args(["build", "--release", "-p", "zilla", "--bin", "zilla"]))?;
    let binary = zilla_tests::build_zilla(true, false)?;
    let load_before = load_average();

    let dir = super::bench_dir("zilla-bench-kafka-produce-")?;
    // nginx workers drop root privileges and still need their directory.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let body = json_body();
    let script = dir.path().join("post.lua");
    std::fs::write(&script, wrk_script(&body))?;
    let origin = start_nginx(&dir.path().join("origin"))?;
    let broker = Broker::start()?;
    broker.create_topic(TOPIC, 1)?;
    let mut proxy = Gateway::from_file(workspace_dir().join("examples/http.proxy/zilla.yaml"))
        .binary(&binary)
        .env("PROXY_PORT", "0")
        .env("ORIGIN_PORT", origin.address().port().to_string())
        .start()?;
    let mut gateway =
        Gateway::from_file(workspace_dir().join("examples/http.kafka.produce/zilla.yaml"))
            .binary(&binary)
            .env("HTTP_PORT", "0")
            .env("KAFKA_BROKER", broker.address())
            .start()?;

    let runtime = super::load_runtime()?;
    let cluster = broker.cluster()?;
    let bench = Bench {
        proxy: proxy.address("tcp_server"),
        gateway: gateway.address("tcp_server"),
        proxy_pid: proxy.pid(),
        gateway_pid: gateway.pid(),
        broker_pid: broker.pid(),
        ticks_per_second: ticks_per_second(),
        script,
        body: Bytes::from(body),
        bootstrap: broker.address(),
        cluster,
        runtime,
        acknowledged: AtomicU64::new(0),
    };
    let offset_before = bench.end_offset()?;
    for (name, target) in [("proxy", bench.proxy), ("gateway", bench.gateway)] {
        bench
            .runtime
            .block_on(check_post(target, &bench.body))
            .with_context(|| format!("a POST through the {name}"))?;
    }
    bench.acknowledged.fetch_add(1, Ordering::Relaxed);
    let idle_rss_kib = gateway.rss_kib()?;

    let throughput = throughput(&bench, rounds, duration)?;
    let sockets = sockets_to(bench.gateway_pid, broker.port())?;
    let rate = (throughput.gateway.median * LATENCY_LOAD).round().max(1.0) as u64;
    let latency = latency(&bench, rounds, rate)?;
    let offset_after = bench.end_offset()?;

    for (name, process) in [("proxy", &mut proxy), ("gateway", &mut gateway)] {
        stop_gateway(process).with_context(|| format!("the {name} zilla"))?;
    }
    let acknowledged = bench.acknowledged.load(Ordering::Relaxed);
    let written = u64::try_from(offset_after - offset_before).unwrap_or(0);
    drop(bench);
    drop(broker);
    drop(origin);
    let figures = Figures {
        rounds,
        duration,
        throughput,
        latency,
        idle_rss_kib,
        sockets,
        acknowledged,
        written,
        load: (load_before, load_average()),
    };
    println!("{}", figures.summary());
    record("kafka-produce", &figures.table())?;
    if written < acknowledged {
        bail!("{acknowledged} records were acknowledged but only {written} are in the topic");
    }
    Ok(())
}

/// A 1 KB JSON object, the same for every request.
pub(super) fn json_body() -> String {
    let head =
        "{\"id\":\"8c1e6f3a-5b2d-4e7f-9a10-3c4d5e6f7a8b\",\"type\":\"reading\",\"payload\":\"";
    let tail = "\"}";
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let padding: String = (0..BODY_LENGTH - head.len() - tail.len())
        .map(|index| char::from(ALPHABET[index % ALPHABET.len()]))
        .collect();
    format!("{head}{padding}{tail}")
}

/// wrk's Lua script: every request a `POST` of `body` (a long bracket string: no escapes).
pub(super) fn wrk_script(body: &str) -> String {
    format!(
        "wrk.method = \"POST\"\n\
         wrk.headers[\"Content-Type\"] = \"application/json\"\n\
         wrk.body = [[{body}]]\n"
    )
}

/// What the measurements share.
struct Bench {
    proxy: SocketAddr,
    gateway: SocketAddr,
    proxy_pid: u32,
    gateway_pid: u32,
    broker_pid: u32,
    ticks_per_second: u64,
    script: std::path::PathBuf,
    body: Bytes,
    /// The broker as a bootstrap server.
    bootstrap: String,
    /// Our own Kafka client, to read the partition's end offset.
    cluster: Cluster,
    runtime: tokio::runtime::Runtime,
    /// Records the gateway or the native producer acknowledged.
    acknowledged: AtomicU64,
}

impl Bench {
    /// The end offset of the topic's partition.
    fn end_offset(&self) -> Result<i64> {
        let listed = self.runtime.block_on(self.cluster.list_offsets(
            TOPIC,
            0,
            OffsetSpec::Latest,
            Isolation::ReadUncommitted,
        ))?;
        Ok(listed.offset)
    }

    fn cpu(&self, pid: u32) -> Result<Duration> {
        cpu_time(pid, self.ticks_per_second)
    }
}

/// The things measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Proxy,
    Native,
    /// The native producer as an idempotent producer (throughput only).
    NativeIdempotent,
    Gateway,
}

/// One throughput run.
struct RateRun {
    rate: f64,
    /// CPU of whatever served the run (the proxy or gateway process, or this process for the
    /// native producer), in % of one core.
    cpu_percent: f64,
    broker_cpu_percent: f64,
    peak_rss_kib: u64,
    p99_ms: Option<f64>,
    /// wrk's connect, read, write and timeout errors.
    socket_errors: u64,
}

/// S7 throughput over the rounds.
struct Throughput {
    proxy: Spread,
    native: Spread,
    gateway: Spread,
    gateway_to_proxy: Spread,
    gateway_to_native: Spread,
    native_idempotent: Spread,
    gateway_to_native_idempotent: Spread,
    broker_cpu_native_idempotent: Spread,
    gateway_cpu_percent: Spread,
    proxy_cpu_percent: Spread,
    native_cpu_percent: Spread,
    broker_cpu_gateway: Spread,
    broker_cpu_native: Spread,
    gateway_peak_rss_kib: Spread,
    gateway_wrk_p99_ms: Spread,
    /// wrk's socket errors (mostly requests past its timeout) over all rounds.
    gateway_socket_errors: u64,
    proxy_socket_errors: u64,
}

fn throughput(bench: &Bench, rounds: usize, duration: Duration) -> Result<Throughput> {
    println!(
        "S7: wrk -t{WRK_THREADS} -c{CONCURRENCY} POST {BODY_LENGTH} B, and {CONCURRENCY} native produces in flight, {}s each, proxy, native (plain, then idempotent) and gateway in turn, {rounds} rounds after a warm-up",
        duration.as_secs()
    );
    for target in [
        Target::Proxy,
        Target::Native,
        Target::NativeIdempotent,
        Target::Gateway,
    ] {
        rate_run(bench, target, WARM_UP).with_context(|| format!("warm-up of {target:?}"))?;
    }
    let mut runs: Vec<[RateRun; 4]> = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let context = |target| format!("round {round}, {target:?}");
        let proxy =
            rate_run(bench, Target::Proxy, duration).with_context(|| context(Target::Proxy))?;
        let native =
            rate_run(bench, Target::Native, duration).with_context(|| context(Target::Native))?;
        let idempotent = rate_run(bench, Target::NativeIdempotent, duration)
            .with_context(|| context(Target::NativeIdempotent))?;
        let gateway =
            rate_run(bench, Target::Gateway, duration).with_context(|| context(Target::Gateway))?;
        println!(
            "  round {round}: proxy {:.0} req/s, native {:.0} produces/s ({:.0} % CPU, tansu {:.0} %), idempotent {:.0} produces/s (tansu {:.0} %), gateway {:.0} req/s ({:.0} % CPU, tansu {:.0} %, {:.1} MiB)",
            proxy.rate,
            native.rate,
            native.cpu_percent,
            native.broker_cpu_percent,
            idempotent.rate,
            idempotent.broker_cpu_percent,
            gateway.rate,
            gateway.cpu_percent,
            gateway.broker_cpu_percent,
            gateway.peak_rss_kib as f64 / 1024.0
        );
        runs.push([proxy, native, idempotent, gateway]);
    }
    let spread = |figure: &dyn Fn(&[RateRun; 4]) -> f64| {
        Spread::of(&runs.iter().map(figure).collect::<Vec<_>>())
    };
    Ok(Throughput {
        proxy: spread(&|[proxy, _, _, _]| proxy.rate),
        native: spread(&|[_, native, _, _]| native.rate),
        gateway: spread(&|[_, _, _, gateway]| gateway.rate),
        gateway_to_proxy: spread(&|[proxy, _, _, gateway]| gateway.rate / proxy.rate),
        gateway_to_native: spread(&|[_, native, _, gateway]| gateway.rate / native.rate),
        native_idempotent: spread(&|[_, _, idempotent, _]| idempotent.rate),
        gateway_to_native_idempotent: spread(&|[_, _, idempotent, gateway]| {
            gateway.rate / idempotent.rate
        }),
        broker_cpu_native_idempotent: spread(&|[_, _, idempotent, _]| {
            idempotent.broker_cpu_percent
        }),
        gateway_cpu_percent: spread(&|[_, _, _, gateway]| gateway.cpu_percent),
        proxy_cpu_percent: spread(&|[proxy, _, _, _]| proxy.cpu_percent),
        native_cpu_percent: spread(&|[_, native, _, _]| native.cpu_percent),
        broker_cpu_gateway: spread(&|[_, _, _, gateway]| gateway.broker_cpu_percent),
        broker_cpu_native: spread(&|[_, native, _, _]| native.broker_cpu_percent),
        gateway_peak_rss_kib: spread(&|[_, _, _, gateway]| gateway.peak_rss_kib as f64),
        gateway_wrk_p99_ms: spread(&|[_, _, _, gateway]| gateway.p99_ms.unwrap_or(f64::NAN)),
        gateway_socket_errors: runs
            .iter()
            .map(|[_, _, _, gateway]| gateway.socket_errors)
            .sum(),
        proxy_socket_errors: runs
            .iter()
            .map(|[proxy, _, _, _]| proxy.socket_errors)
            .sum(),
    })
}

/// One throughput run against `target`.
fn rate_run(bench: &Bench, target: Target, duration: Duration) -> Result<RateRun> {
    let broker_before = bench.cpu(bench.broker_pid)?;
    let started = Instant::now();
    let (rate, cpu_percent, peak_rss_kib, p99_ms, socket_errors) = match target {
        Target::Native | Target::NativeIdempotent => {
            let produce = if target == Target::Native {
                Produce::Plain
            } else {
                Produce::Idempotent
            };
            let report = native(bench, Mode::Throughput, CONCURRENCY, duration, produce)?;
            (
                report.in_time as f64 / report.seconds,
                100.0 * report.cpu_seconds / report.seconds,
                0,
                None,
                0,
            )
        }
        Target::Proxy | Target::Gateway => {
            let (address, pid) = if target == Target::Proxy {
                (bench.proxy, bench.proxy_pid)
            } else {
                (bench.gateway, bench.gateway_pid)
            };
            let cpu_before = bench.cpu(pid)?;
            let mut child = spawn_wrk(address, &bench.script, duration)?;
            let peak = match peak_rss_until_exit(&mut child, pid) {
                Ok(peak) => peak,
                Err(error) => {
                    // wrk may already be gone; the error says what went wrong.
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(error);
                }
            };
            let wall = started.elapsed().as_secs_f64();
            let cpu_used = bench.cpu(pid)?.saturating_sub(cpu_before);
            let report = wrk::finish(child)?;
            // A rare stall past wrk's timeout is a figure to record; more is a broken run.
            if report.non_success > 0
                || report.socket_errors as f64 > MAX_ERROR_SHARE * report.requests as f64
            {
                bail!(
                    "{address}: {} responses outside 2xx/3xx and {} socket errors in {} requests",
                    report.non_success,
                    report.socket_errors,
                    report.requests
                );
            }
            if target == Target::Gateway {
                bench
                    .acknowledged
                    .fetch_add(report.requests, Ordering::Relaxed);
            }
            (
                report.requests_per_second,
                100.0 * cpu_used.as_secs_f64() / wall,
                peak,
                Some(report.p99.as_secs_f64() * 1000.0),
                report.socket_errors,
            )
        }
    };
    let wall = started.elapsed().as_secs_f64();
    let broker_used = bench.cpu(bench.broker_pid)?.saturating_sub(broker_before);
    Ok(RateRun {
        rate,
        cpu_percent,
        broker_cpu_percent: 100.0 * broker_used.as_secs_f64() / wall,
        peak_rss_kib,
        p99_ms,
        socket_errors,
    })
}

/// `wrk -t2 -c64 -d<seconds>s --latency -s <script> http://<target>/events`.
pub(super) fn spawn_wrk(target: SocketAddr, script: &Path, duration: Duration) -> Result<Child> {
    let mut command = cmd(
        "wrk",
        [
            format!("-t{WRK_THREADS}"),
            format!("-c{CONCURRENCY}"),
            format!("-d{}s", duration.as_secs().max(1)),
            format!("--timeout={}s", WRK_TIMEOUT.as_secs()),
            "--latency".to_owned(),
        ],
    );
    command
        .arg("-s")
        .arg(script)
        .arg(format!("http://{target}{PATH}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
        .spawn()
        .context("cannot run wrk (install it with `cargo xtask peers --only apt`)")
}

/// S7 latency at a fixed rate, in ms.
struct Latency {
    rate: u64,
    proxy_p50: Spread,
    proxy_p99: Spread,
    native_p50: Spread,
    native_p99: Spread,
    gateway_p50: Spread,
    gateway_p99: Spread,
    gateway_cpu_percent: Spread,
}

/// One fixed-rate run: p50 and p99 in ms, and the CPU share of the process serving it.
struct LatencyRun {
    p50: f64,
    p99: f64,
    cpu_percent: f64,
}

fn latency(bench: &Bench, rounds: usize, rate: u64) -> Result<Latency> {
    println!(
        "S7: {rate} req/s ({:.0} % of the gateway median) over {LATENCY_CONNECTIONS} connections, {}s per run, proxy, native and gateway in turn, {rounds} rounds after a warm-up",
        LATENCY_LOAD * 100.0,
        LATENCY_RUN.as_secs()
    );
    for target in [Target::Proxy, Target::Native, Target::Gateway] {
        latency_run(bench, target, rate, LATENCY_WARM_UP)
            .with_context(|| format!("warm-up of {target:?}"))?;
    }
    let mut runs: Vec<[LatencyRun; 3]> = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let context = |target| format!("round {round}, {target:?}");
        let measure =
            |target| latency_run(bench, target, rate, LATENCY_RUN).with_context(|| context(target));
        let proxy = measure(Target::Proxy)?;
        let native = measure(Target::Native)?;
        let gateway = measure(Target::Gateway)?;
        println!(
            "  round {round}: p50/p99 proxy {:.2}/{:.2} ms, native {:.2}/{:.2} ms, gateway {:.2}/{:.2} ms",
            proxy.p50, proxy.p99, native.p50, native.p99, gateway.p50, gateway.p99
        );
        runs.push([proxy, native, gateway]);
    }
    let spread = |figure: &dyn Fn(&[LatencyRun; 3]) -> f64| {
        Spread::of(&runs.iter().map(figure).collect::<Vec<_>>())
    };
    Ok(Latency {
        rate,
        proxy_p50: spread(&|[proxy, _, _]| proxy.p50),
        proxy_p99: spread(&|[proxy, _, _]| proxy.p99),
        native_p50: spread(&|[_, native, _]| native.p50),
        native_p99: spread(&|[_, native, _]| native.p99),
        gateway_p50: spread(&|[_, _, gateway]| gateway.p50),
        gateway_p99: spread(&|[_, _, gateway]| gateway.p99),
        gateway_cpu_percent: spread(&|[_, _, gateway]| gateway.cpu_percent),
    })
}

fn latency_run(bench: &Bench, target: Target, rate: u64, duration: Duration) -> Result<LatencyRun> {
    if target == Target::Native {
        let report = native(
            bench,
            Mode::Rate(rate),
            LATENCY_CONNECTIONS,
            duration,
            Produce::Plain,
        )?;
        let millis = |micros: Option<f64>| micros.map_or(f64::NAN, |micros| micros / 1000.0);
        return Ok(LatencyRun {
            p50: millis(report.p50_us),
            p99: millis(report.p99_us),
            cpu_percent: 100.0 * report.cpu_seconds / report.seconds,
        });
    }
    let (address, pid) = if target == Target::Proxy {
        (bench.proxy, bench.proxy_pid)
    } else {
        (bench.gateway, bench.gateway_pid)
    };
    let cpu_before = bench.cpu(pid)?;
    let started = Instant::now();
    let outcome = bench.runtime.block_on(async {
        let mut workers = Vec::with_capacity(LATENCY_CONNECTIONS);
        for _ in 0..LATENCY_CONNECTIONS {
            workers.push(HttpPost::connect(address, bench.body.clone()).await?);
        }
        fixed_rate(workers, Schedule::new(rate, duration)).await
    })?;
    let wall = started.elapsed().as_secs_f64();
    let cpu_used = bench.cpu(pid)?.saturating_sub(cpu_before);
    let requests = outcome.latencies.len() as u64 + outcome.errors;
    if outcome.errors as f64 > MAX_ERROR_SHARE * requests as f64 {
        bail!(
            "{target:?}: {} of {requests} requests failed",
            outcome.errors
        );
    }
    if target == Target::Gateway {
        bench
            .acknowledged
            .fetch_add(outcome.latencies.len() as u64, Ordering::Relaxed);
    }
    let millis = |percent| {
        percentile(&outcome.latencies, percent)
            .map_or(f64::NAN, |latency| latency.as_secs_f64() * 1000.0)
    };
    Ok(LatencyRun {
        p50: millis(50.0),
        p99: millis(99.0),
        cpu_percent: 100.0 * cpu_used.as_secs_f64() / wall,
    })
}

/// What the native producer writes besides its body: where, with which key and headers.
#[derive(Debug, Clone, Copy)]
pub(super) struct NativeRecords<'a> {
    pub topic: &'a str,
    /// No key when `None`.
    pub key: Option<&'a str>,
    pub headers: &'a [(&'a str, &'a str)],
}

/// S7's records: to [`TOPIC`], no key, the `content-type` the gateway's route adds.
const S7_RECORDS: NativeRecords<'static> = NativeRecords {
    topic: TOPIC,
    key: None,
    headers: &[("content-type", "application/json")],
};

/// How the native producer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// As fast as acknowledgements come back, with a bounded number outstanding.
    Throughput,
    /// At this many records per second, each due at an exact time.
    Rate(u64),
}

/// The native producer: librdkafka (Python confluent-kafka) writing the 1 KB body with a
/// `content-type` header, leader acks (or, as an idempotent producer, every in-sync
/// replica's, which on one broker is the leader's), no compression, `linger.ms=1`, and at most
/// `in_flight` records awaiting their acknowledgement (what wrk's connections or the
/// generator's connections amount to). In [`Mode::Rate`] each latency runs from the record's
/// due time to its delivery report.
const NATIVE_PRODUCER: &str = r#"
import json, resource, sys, time
from confluent_kafka import Producer

bootstrap, topic, mode, in_flight, seconds, rate, key, headers, produce = sys.argv[1:10]
in_flight, seconds, rate = int(in_flight), float(seconds), int(rate)
idempotent = produce == "idempotent"
body = sys.stdin.buffer.read()
key = key.encode() if key else None
headers = [(name, value.encode()) for name, value in json.loads(headers)]
producer = Producer({
    "bootstrap.servers": bootstrap,
    # librdkafka's idempotent producer asks for every in-sync replica's ack: on one broker,
    # the leader's.
    "acks": "all" if idempotent else "1",
    "enable.idempotence": idempotent,
    "compression.type": "none",
    "linger.ms": 1,
    "queue.buffering.max.messages": in_flight,
})
state = {"outstanding": 0, "acknowledged": 0, "errors": 0, "first_error": ""}
latencies = []

def settle(error):
    state["outstanding"] -= 1
    if error is None:
        state["acknowledged"] += 1
        return True
    state["errors"] += 1
    state["first_error"] = state["first_error"] or " ".join(str(error).split())
    return False

def counted(error, message):
    settle(error)

def timed(due):
    def delivered(error, message):
        if settle(error):
            latencies.append(time.monotonic() - due)
    return delivered

def send(on_delivery):
    while state["outstanding"] >= in_flight:
        producer.poll(0.001)
    producer.produce(topic, body, key=key, headers=headers, on_delivery=on_delivery)
    state["outstanding"] += 1
    producer.poll(0)

cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
cpu_before = cpu()
started = time.monotonic()
if mode == "throughput":
    deadline = started + seconds
    while time.monotonic() < deadline:
        send(counted)
    in_time = state["acknowledged"]
else:
    start = started + 0.05
    for index in range(max(int(rate * seconds), 1)):
        due = start + index / rate
        while True:
            wait = due - time.monotonic()
            if wait <= 0:
                break
            producer.poll(min(wait, 0.001))
        send(timed(due))
    in_time = 0
elapsed = time.monotonic() - started
producer.flush(30)
cpu_used = cpu() - cpu_before
latencies.sort()

def percentile(percent):
    if not latencies:
        return "none"
    rank = max(1, -(-len(latencies) * percent // 100))
    return latencies[int(rank) - 1] * 1e6

for name, value in [("in_time", in_time), ("seconds", elapsed), ("acknowledged", state["acknowledged"]),
                    ("errors", state["errors"]), ("unsettled", state["outstanding"]),
                    ("cpu_seconds", cpu_used), ("p50_us", percentile(50)), ("p99_us", percentile(99)),
                    ("first_error", state["first_error"])]:
    print(f"{name}={value}")
"#;

/// How the native producer writes its batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Produce {
    /// Plain batches, librdkafka's default.
    Plain,
    /// As an idempotent producer (a producer id and a sequence per batch), as the gateway's
    /// kafka client writes by default.
    Idempotent,
}

/// What one native producer run reports.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct NativeReport {
    /// Records acknowledged within the run's time (throughput mode).
    pub in_time: u64,
    /// How long the run sent, in seconds.
    pub seconds: f64,
    /// Records acknowledged, including those awaited after the run.
    pub acknowledged: u64,
    errors: u64,
    /// Records without a delivery report after the final flush.
    unsettled: u64,
    /// The producer process's CPU time in seconds (librdkafka's threads included).
    pub cpu_seconds: f64,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    first_error: String,
}

impl NativeReport {
    /// Reads the script's `name=value` lines.
    fn parse(output: &str) -> Result<Self> {
        let value = |name: &str| -> Result<&str> {
            output
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
                .with_context(|| format!("no `{name}=` in the native producer's report"))
        };
        let number = |name: &str| -> Result<f64> {
            let text = value(name)?;
            text.parse()
                .with_context(|| format!("`{name}={text}` is not a number"))
        };
        let count = |name: &str| -> Result<u64> {
            let text = value(name)?;
            text.parse()
                .with_context(|| format!("`{name}={text}` is not a count"))
        };
        let optional = |name: &str| -> Result<Option<f64>> {
            match value(name)? {
                "none" => Ok(None),
                _ => number(name).map(Some),
            }
        };
        Ok(Self {
            in_time: count("in_time")?,
            seconds: number("seconds")?,
            acknowledged: count("acknowledged")?,
            errors: count("errors")?,
            unsettled: count("unsettled")?,
            cpu_seconds: number("cpu_seconds")?,
            p50_us: optional("p50_us")?,
            p99_us: optional("p99_us")?,
            first_error: value("first_error")?.to_owned(),
        })
    }
}

/// Runs the native producer and counts what it had acknowledged.
fn native(
    bench: &Bench,
    mode: Mode,
    in_flight: usize,
    duration: Duration,
    produce: Produce,
) -> Result<NativeReport> {
    let report = run_native(
        &bench.bootstrap,
        &S7_RECORDS,
        &bench.body,
        mode,
        in_flight,
        duration,
        produce,
    )?;
    bench
        .acknowledged
        .fetch_add(report.acknowledged, Ordering::Relaxed);
    Ok(report)
}

/// Runs the native producer against `bootstrap`; every record must be acknowledged.
pub(super) fn run_native(
    bootstrap: &str,
    records: &NativeRecords<'_>,
    body: &Bytes,
    mode: Mode,
    in_flight: usize,
    duration: Duration,
    produce: Produce,
) -> Result<NativeReport> {
    let (mode_arg, rate) = match mode {
        Mode::Throughput => ("throughput", 0),
        Mode::Rate(rate) => ("rate", rate),
    };
    let output = Peer::python(NATIVE_PRODUCER)
        .args([
            bootstrap.to_owned(),
            records.topic.to_owned(),
            mode_arg.to_owned(),
            in_flight.to_string(),
            duration.as_secs_f64().to_string(),
            rate.to_string(),
            records.key.unwrap_or_default().to_owned(),
            serde_json::to_string(records.headers)?,
            match produce {
                Produce::Plain => "plain",
                Produce::Idempotent => "idempotent",
            }
            .to_owned(),
        ])
        .stdin(body.to_vec())
        .timeout(duration + NATIVE_GRACE)
        .run()
        .context("the native producer (install it with `cargo xtask peers --only python`)")?;
    success(&output).context("the native producer failed")?;
    let report = NativeReport::parse(&String::from_utf8_lossy(&output.stdout))?;
    if report.errors > 0 || report.unsettled > 0 {
        bail!(
            "the native producer had {} failed and {} unacknowledged records: {}",
            report.errors,
            report.unsettled,
            report.first_error
        );
    }
    Ok(report)
}

/// `POST /events` with the JSON body on one keep-alive connection; the answer must be `204`.
struct HttpPost {
    target: SocketAddr,
    sender: SendRequest<Full<Bytes>>,
    body: Bytes,
}

impl HttpPost {
    async fn connect(target: SocketAddr, body: Bytes) -> Result<Self> {
        Ok(Self {
            target,
            sender: connect(target).await?,
            body,
        })
    }
}

impl HttpPost {
    async fn exchange(&mut self) -> Result<()> {
        if self.sender.is_closed() {
            self.sender = connect(self.target).await?;
        }
        post(&mut self.sender, self.target, self.body.clone()).await
    }
}

async fn post(
    sender: &mut SendRequest<Full<Bytes>>,
    target: SocketAddr,
    body: Bytes,
) -> Result<()> {
    sender.ready().await?;
    let request = hyper::Request::post(PATH)
        .header(hyper::header::HOST, target.to_string())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    response.into_body().collect().await?;
    if status != hyper::StatusCode::NO_CONTENT {
        bail!("answered {status}");
    }
    Ok(())
}

/// One `POST` on a new connection must be answered `204` in time.
pub(super) async fn check_post(target: SocketAddr, body: &Bytes) -> Result<()> {
    tokio::time::timeout(ANSWER_TIMEOUT, async {
        let mut sender = connect(target).await?;
        post(&mut sender, target, body.clone()).await
    })
    .await
    .with_context(|| format!("no answer from {target} within {ANSWER_TIMEOUT:?}"))?
}

/// What a fixed-rate run measured.
struct Outcome {
    /// Latencies of the successful exchanges, ascending, each from its due time.
    latencies: Vec<Duration>,
    errors: u64,
}

/// Exchanges fall due at exact intervals of `schedule` ([`Due`]); each latency runs from the
/// exchange's due time, so a stall counts against every exchange it delays.
async fn fixed_rate(workers: Vec<HttpPost>, schedule: Schedule) -> Result<Outcome> {
    let due = Due::new(schedule);
    let dispatcher = due.dispatch(workers.len());
    let mut tasks = tokio::task::JoinSet::new();
    for mut worker in workers {
        let due = due.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            while let Some(due_at) = due.next().await {
                match worker.exchange().await {
                    Ok(()) => latencies.push(due_at.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        });
    }
    let mut outcome = Outcome {
        latencies: Vec::with_capacity(usize::try_from(due.total()).unwrap_or(0)),
        errors: 0,
    };
    while let Some(joined) = tasks.join_next().await {
        let (mut latencies, errors) = joined.context("a load worker failed")?;
        outcome.latencies.append(&mut latencies);
        outcome.errors += errors;
    }
    if dispatcher.join().is_err() {
        bail!("the load generator's dispatcher failed");
    }
    outcome.latencies.sort_unstable();
    Ok(outcome)
}

/// Everything recorded.
struct Figures {
    rounds: usize,
    duration: Duration,
    throughput: Throughput,
    latency: Latency,
    idle_rss_kib: u64,
    sockets: usize,
    acknowledged: u64,
    written: u64,
    load: (Option<f64>, Option<f64>),
}

impl Figures {
    fn gateway_to_proxy(&self) -> f64 {
        self.throughput.gateway.median / self.throughput.proxy.median
    }

    fn gateway_to_native(&self) -> f64 {
        self.throughput.gateway.median / self.throughput.native.median
    }

    /// Whether tansu was busy enough during the native runs to be what limits both.
    fn broker_bound(&self) -> bool {
        self.throughput.broker_cpu_native.median >= 90.0
    }

    fn summary(&self) -> String {
        let t = &self.throughput;
        let l = &self.latency;
        format!(
            "S7 kafka-produce: gateway {:.0} req/s, proxy {:.0} req/s, native {:.0} produces/s; gateway ÷ proxy {:.2} (target ≥ 0.7), \
             gateway ÷ native {:.2}, ÷ idempotent native {:.2} (target ≥ 0.95 where the broker bounds both); tansu CPU {:.0} % under the native producer{}; at {} req/s p99 gateway {:.2} ms, \
             native {:.2} ms, proxy {:.2} ms; gateway RSS {:.1} MiB idle, {:.1} MiB peak; {} broker sockets; {} acknowledged, {} in the topic",
            t.gateway.median,
            t.proxy.median,
            t.native.median,
            self.gateway_to_proxy(),
            self.gateway_to_native(),
            t.gateway.median / t.native_idempotent.median,
            t.broker_cpu_native.median,
            if self.broker_bound() {
                " (the broker is the bottleneck)"
            } else {
                ""
            },
            l.rate,
            l.gateway_p99.median,
            l.native_p99.median,
            l.proxy_p99.median,
            self.idle_rss_kib as f64 / 1024.0,
            t.gateway_peak_rss_kib.median / 1024.0,
            self.sockets,
            self.acknowledged,
            self.written,
        )
    }

    fn table(&self) -> String {
        let t = &self.throughput;
        let l = &self.latency;
        let load = |load: Option<f64>| load.map_or_else(|| "?".to_owned(), |l| format!("{l:.1}"));
        format!(
            "Throughput, {CONCURRENCY} in flight, {}s per run, median (min to max) of {} rounds:\n\n\
             | date | commit | gateway req/s | proxy req/s | native produces/s | gateway ÷ proxy | gateway ÷ native | CPU gateway / proxy / native producer | tansu CPU with gateway / native |\n\
             |---|---|---|---|---|---|---|---|---|\n\
             | {date} | {commit} | {} | {} | {} | **{:.2}** ({:.2} to {:.2}) | **{:.2}** ({:.2} to {:.2}) | {:.0} / {:.0} / {:.0} % | {:.0} / {:.0} % |\n\n\
             Latency at a fixed {} req/s (half the gateway median), {LATENCY_CONNECTIONS} connections, {}s per run, median (min to max) of {} rounds, in ms:\n\n\
             | date | commit | gateway p50 / p99 | native p50 / p99 | proxy p50 / p99 | gateway CPU at that rate |\n\
             |---|---|---|---|---|---|\n\
             | {date} | {commit} | {} / **{}** | {} / {} | {} / {} | {:.0} % |\n\n\
             - Gateway RSS {:.1} MiB idle, {:.1} MiB peak under wrk; gateway → broker sockets (`ss`): {}; wrk's own p99 at saturation: {:.1} ms; wrk socket errors (unanswered after {}s) over the rounds: gateway {}, proxy {}.\n\
             - Records acknowledged by the gateway and the native producer: {}; written to the topic: {} (requests in flight when a run stopped may be written without being counted).\n\
             - The native producer as an idempotent producer too (as the gateway's kafka client writes by default; librdkafka then asks for every in-sync replica's ack, here the one broker's), in the same rounds: {} produces/s, tansu CPU {:.0} %; gateway ÷ it **{:.2}** ({:.2} to {:.2}).\n\
             - {}\n\
             - 1-minute load average of the 2-core machine: {} before, {} after.\n",
            self.duration.as_secs(),
            self.rounds,
            whole(&t.gateway),
            whole(&t.proxy),
            whole(&t.native),
            self.gateway_to_proxy(),
            t.gateway_to_proxy.min,
            t.gateway_to_proxy.max,
            self.gateway_to_native(),
            t.gateway_to_native.min,
            t.gateway_to_native.max,
            t.gateway_cpu_percent.median,
            t.proxy_cpu_percent.median,
            t.native_cpu_percent.median,
            t.broker_cpu_gateway.median,
            t.broker_cpu_native.median,
            l.rate,
            LATENCY_RUN.as_secs(),
            self.rounds,
            hundredths(&l.gateway_p50),
            hundredths(&l.gateway_p99),
            hundredths(&l.native_p50),
            hundredths(&l.native_p99),
            hundredths(&l.proxy_p50),
            hundredths(&l.proxy_p99),
            l.gateway_cpu_percent.median,
            self.idle_rss_kib as f64 / 1024.0,
            t.gateway_peak_rss_kib.median / 1024.0,
            self.sockets,
            t.gateway_wrk_p99_ms.median,
            WRK_TIMEOUT.as_secs(),
            t.gateway_socket_errors,
            t.proxy_socket_errors,
            self.acknowledged,
            self.written,
            whole(&t.native_idempotent),
            t.broker_cpu_native_idempotent.median,
            t.gateway.median / t.native_idempotent.median,
            t.gateway_to_native_idempotent.min,
            t.gateway_to_native_idempotent.max,
            if self.broker_bound() {
                "tansu used a full core or more under the native producer: the broker bounds both rates, so gateway ÷ native is the figure that speaks for the gateway."
            } else {
                "tansu had CPU to spare under the native producer."
            },
            load(self.load.0),
            load(self.load.1),
            date = today(),
            commit = commit(),
        )
    }
}

/// `12345 (12001 to 12888)`.
pub(super) fn whole(spread: &Spread) -> String {
    format!(
        "{:.0} ({:.0} to {:.0})",
        spread.median, spread.min, spread.max
    )
}

/// `1.23 (1.01 to 1.50)`.
fn hundredths(spread: &Spread) -> String {
    format!(
        "{:.2} ({:.2} to {:.2})",
        spread.median, spread.min, spread.max
    )
}

/// A loopback nginx answering every request `204`, run in the foreground from its own prefix
/// directory; stopped when dropped.
fn start_nginx(prefix: &Path) -> Result<Nginx> {
    let port = free_port()?;
    Nginx::start(prefix, &nginx_config(port), port)
}

/// The origin: every request answered `204` on keep-alive connections that never run out of
/// requests, with prefix-relative pid, log and temporary files.
fn nginx_config(port: u16) -> String {
    format!(
        "worker_processes auto;\n\
         pid nginx.pid;\n\
         error_log error.log warn;\n\
         events {{\n    worker_connections 4096;\n}}\n\
         http {{\n\
         \x20   access_log off;\n\
         \x20   keepalive_requests 10000000;\n\
         \x20   keepalive_timeout 300s;\n\
         \x20   client_body_temp_path client_body;\n\
         \x20   proxy_temp_path proxy;\n\
         \x20   fastcgi_temp_path fastcgi;\n\
         \x20   uwsgi_temp_path uwsgi;\n\
         \x20   scgi_temp_path scgi;\n\
         \x20   server {{\n\
         \x20       listen 127.0.0.1:{port};\n\
         \x20       location / {{\n\
         \x20           return 204;\n\
         \x20       }}\n\
         \x20   }}\n\
         }}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_one_kilobyte_of_json_the_script_carries_verbatim() {
        let body = json_body();
        assert_eq!(body.len(), BODY_LENGTH);
        assert!(body.starts_with('{') && body.ends_with('}'));
        assert_eq!(body.matches('"').count() % 2, 0);
        assert!(!body.contains("]]") && !body.contains('\\'));
        let script = wrk_script(&body);
        assert!(script.contains(&format!("wrk.body = [[{body}]]\n")));
        assert!(script.contains("wrk.method = \"POST\""));
    }

    /// wrk posts through the script to a real nginx, which answers 204 to all; the fixed-rate
    /// driver completes every scheduled POST (no timing is asserted).
    #[test]
    fn wrk_and_the_fixed_rate_driver_post_to_nginx() -> Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let nginx = start_nginx(&dir.path().join("origin"))?;
        let target = nginx.address();
        let script = dir.path().join("post.lua");
        let body = json_body();
        std::fs::write(&script, wrk_script(&body))?;

        let report = wrk::finish(spawn_wrk(target, &script, Duration::from_secs(1))?)?;
        assert!(report.requests > 0);
        assert_eq!((report.non_success, report.socket_errors), (0, 0));

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let body = Bytes::from(body);
        runtime.block_on(check_post(target, &body))?;
        let outcome = runtime.block_on(async {
            let mut workers = Vec::new();
            for _ in 0..4 {
                workers.push(HttpPost::connect(target, body.clone()).await?);
            }
            fixed_rate(workers, Schedule::new(400, Duration::from_millis(250))).await
        })?;
        assert_eq!(outcome.errors, 0);
        assert_eq!(outcome.latencies.len(), 100);
        assert!(outcome.latencies.is_sorted());
        Ok(())
    }

    /// The native producer's records land in a real broker, as many as it reports
    /// acknowledged, in both modes (the throughput run as an idempotent producer).
    #[test]
    fn native_produces_are_all_written() -> Result<()> {
        let broker = Broker::start()?;
        broker.create_topic(TOPIC, 1)?;
        let body = Bytes::from(json_body());
        let second = Duration::from_secs(1);
        let records = NativeRecords {
            key: Some("k"),
            ..S7_RECORDS
        };
        let throughput = run_native(
            &broker.address(),
            &records,
            &body,
            Mode::Throughput,
            8,
            second,
            Produce::Idempotent,
        )?;
        assert!(throughput.in_time > 0);
        assert!(throughput.acknowledged >= throughput.in_time);
        assert_eq!(throughput.p99_us, None);
        let rate = run_native(
            &broker.address(),
            &S7_RECORDS,
            &body,
            Mode::Rate(50),
            4,
            second,
            Produce::Plain,
        )?;
        assert_eq!(rate.acknowledged, 50);
        assert!(rate.p50_us.is_some() && rate.p99_us >= rate.p50_us);

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let end = runtime.block_on(broker.cluster()?.list_offsets(
            TOPIC,
            0,
            OffsetSpec::Latest,
            Isolation::ReadUncommitted,
        ))?;
        assert_eq!(
            u64::try_from(end.offset)?,
            throughput.acknowledged + rate.acknowledged
        );
        Ok(())
    }

    #[test]
    fn the_native_report_is_read() -> Result<()> {
        let report = NativeReport::parse(
            "in_time=2000\nseconds=1.002\nacknowledged=2010\nerrors=0\nunsettled=0\n\
             cpu_seconds=0.25\np50_us=none\np99_us=1234.5\nfirst_error=\n",
        )?;
        assert_eq!(
            report,
            NativeReport {
                in_time: 2000,
                seconds: 1.002,
                acknowledged: 2010,
                errors: 0,
                unsettled: 0,
                cpu_seconds: 0.25,
                p50_us: None,
                p99_us: Some(1234.5),
                first_error: String::new(),
            }
        );
        assert!(NativeReport::parse("in_time=1\n").is_err());
        let garbled = "in_time=2000\nseconds=soon\nacknowledged=2010\nerrors=0\nunsettled=0\n\
                       cpu_seconds=0.25\np50_us=none\np99_us=none\nfirst_error=\n";
        assert!(NativeReport::parse(garbled).is_err());
        Ok(())
    }

    /// The example gateway answers the benchmark's POSTs with 204 and writes one record for
    /// each (no timing is asserted).
    #[test]
    fn the_example_gateway_writes_a_record_per_post() -> Result<()> {
        let broker = Broker::start()?;
        broker.create_topic(TOPIC, 1)?;
        let gateway =
            Gateway::from_file(workspace_dir().join("examples/http.kafka.produce/zilla.yaml"))
                .env("HTTP_PORT", "0")
                .env("KAFKA_BROKER", broker.address())
                .start()?;
        let target = gateway.address("tcp_server");
        let body = Bytes::from(json_body());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(check_post(target, &body))?;
        let outcome = runtime.block_on(async {
            let mut workers = Vec::new();
            for _ in 0..2 {
                workers.push(HttpPost::connect(target, body.clone()).await?);
            }
            fixed_rate(workers, Schedule::new(100, Duration::from_millis(300))).await
        })?;
        assert_eq!(outcome.errors, 0);
        assert_eq!(outcome.latencies.len(), 30);
        let end = runtime.block_on(broker.cluster()?.list_offsets(
            TOPIC,
            0,
            OffsetSpec::Latest,
            Isolation::ReadUncommitted,
        ))?;
        assert_eq!(end.offset, 31);
        Ok(())
    }
}
