//! `cargo xtask bench <scenario>`: runs one benchmark end to end on a release build, prints one
//! summary line per scenario and records the figures, with the date and commit, in
//! `docs/benchmarks.md`.

mod cache_scale;
mod grpc;
mod h2load;
mod http_proxy;
mod kafka_produce;
mod kafka_proxy;
mod load;
mod mqtt_client;
mod mqtt_idle;
mod mqtt_kafka;
mod optimized;
mod options;
mod policy;
pub mod soak;
mod sse_fanout;
mod tansu;
mod tls_h2;
mod usage;
mod validation;
mod wrk;

pub use options::Options;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use zilla_tests::{Gateway, workspace_dir};

use crate::shell::{cargo, cmd, run as run_command, stdout_of};

/// A benchmark scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// `zilla start` to readiness, and resident memory once idle, on examples/tcp.echo.
    Startup,
    /// S1 and S2 on examples/http.proxy: reverse-proxy throughput against nginx (wrk), and the
    /// latency added at a fixed rate, against nginx and a direct client.
    HttpProxy,
    /// S3 on examples/http.proxy.tls: TLS 1.3 and HTTP/2 terminated in front of an HTTP/1.1
    /// origin, against nginx with the same certificate (h2load): keep-alive req/s, new TLS
    /// connections/s and memory per idle TLS connection.
    TlsH2,
    /// S4 on examples/sse.kafka.fanout.bench: one Kafka topic fanned out to `--clients` SSE
    /// subscribers while the producer steps from 1 to 25 msg/s; deliveries, loss, latency and
    /// the gateway's broker sockets with 1 and with all subscribers.
    SseFanout,
    /// S7 on examples/http.kafka.produce: `POST` of 1 KB JSON to Kafka (one way, leader acks)
    /// against the S1 proxy and a native producer (wrk -c64), and p99 at half load.
    KafkaProduce,
    /// S8: librdkafka producing, consuming and at a fixed rate through the kafka `proxy`
    /// against straight to the broker; throughput ratios and added latency.
    KafkaProxy,
    /// S9, JWT: S1's gateway with a `jwt` guard on its http server (inline RS256 key, one
    /// token as `authorization: Bearer` on every request) against the same gateway without it.
    Jwt,
    /// S9, validation: S7's gateway with a JSON Schema model on its request content, and
    /// with JSON converted to registry-framed Avro on the way into Kafka, against the same
    /// gateway without a model (wrk -c64, in turn).
    Validation,
    /// S1's gateway recording every `http.*` metric (and `stream.*` on its tcp server) with a
    /// prometheus exporter, against the same gateway without telemetry.
    MetricsOverhead,
    /// S5, MQTT: `--clients` idle MQTT connections (default 18000) to mosquitto and to the
    /// gateway on examples/mqtt.kafka.proxy; resident memory per connection.
    MqttIdle,
    /// gRPC proxy: unary echo calls (h2load, pre-framed body) through the gateway in the shape
    /// of examples/grpc.proxy against straight to a tonic echo server, in S1's modes.
    GrpcProxy,
    /// grpc-kafka produce: one-way unary calls of 1 KB to Kafka against S7's http-kafka
    /// gateway given S7's POST, both loaded by h2load with 64 requests in flight.
    GrpcKafka,
    /// S6 on examples/mqtt.kafka.proxy against mosquitto: (a) QoS 1 fan-in from 32
    /// publishers to Kafka, (b) QoS 0 fan-out of one publisher to `--clients` subscribers
    /// (default 1000), (c) QoS 2 publishers and subscribers across a tansu restart.
    MqttKafka,
    /// S11: the Kafka cache at production size. (1) Every key of a compacted topic of 1 GB
    /// (1 000 000 keys of ~1 KB; `--quick` 100 000) looked up once by curl through
    /// http-kafka with a 64 MiB memory budget: lookups/s, latency, mismatches (none allowed),
    /// RSS against the budget, and the merged `GET /items` streamed. (2) A 2 GB delete-policy
    /// topic (`--quick` 200 MB) cached from start-up: produce-to-SSE latency of `live`
    /// subscribers meanwhile, and a `historical` subscriber resumed with `Last-Event-ID`
    /// getting every record once, in order per partition.
    CacheScale,
}

/// Runs `scenario`.
pub fn run(scenario: Scenario, options: &Options) -> Result<()> {
    match scenario {
        Scenario::Startup => startup(),
        Scenario::HttpProxy => http_proxy::run(options),
        Scenario::TlsH2 => tls_h2::run(options),
        Scenario::SseFanout => sse_fanout::run(options),
        Scenario::KafkaProduce => kafka_produce::run(options),
        Scenario::KafkaProxy => kafka_proxy::run(options),
        Scenario::Jwt => policy::run(policy::Policy::Jwt, options),
        Scenario::MetricsOverhead => policy::run(policy::Policy::Metrics, options),
        Scenario::Validation => validation::run(options),
        Scenario::MqttIdle => mqtt_idle::run(options),
        Scenario::MqttKafka => mqtt_kafka::run(options),
        Scenario::GrpcProxy => grpc::run_proxy(options),
        Scenario::GrpcKafka => grpc::run_kafka(options),
        Scenario::CacheScale => cache_scale::run(options),
    }
}

/// Measured runs, after one warm-up run.
const STARTUP_RUNS: usize = 10;

/// How long the gateway sits idle after readiness before its memory is read, so threads and
/// buffers set up right after start are counted.
const IDLE_SETTLE: Duration = Duration::from_millis(200);

fn startup() -> Result<()> {
    let binary = zilla_binary(&Options::default())?;
    let config = workspace_dir().join("examples/tcp.echo/zilla.yaml");
    let measure = || -> Result<(Duration, u64)> {
        let mut gateway = Gateway::from_file(&config)
            .binary(&binary)
            .env("ECHO_PORT", "0")
            .start()?;
        let started_in = gateway.started_in();
        std::thread::sleep(IDLE_SETTLE);
        let rss_kib = gateway.rss_kib()?;
        stop_gateway(&mut gateway)?;
        Ok((started_in, rss_kib))
    };
    measure().context("warm-up run")?;
    let mut times = Vec::with_capacity(STARTUP_RUNS);
    let mut rss = Vec::with_capacity(STARTUP_RUNS);
    for run in 1..=STARTUP_RUNS {
        let (time, kib) = measure().with_context(|| format!("run {run}"))?;
        times.push(time.as_secs_f64() * 1000.0);
        rss.push(kib as f64 / 1024.0);
    }
    let time = Spread::of(&times);
    let memory = Spread::of(&rss);
    println!(
        "startup: median {:.1} ms (min {:.1}, max {:.1}) over {STARTUP_RUNS} runs; idle RSS median {:.1} MiB (min {:.1}, max {:.1})",
        time.median, time.min, time.max, memory.median, memory.min, memory.max
    );

    let table = format!(
        "| date | commit | start-up median | min | max | idle RSS median | min | max |\n\
         |---|---|---|---|---|---|---|---|\n\
         | {} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} MiB | {:.1} MiB | {:.1} MiB |\n",
        today(),
        commit(),
        time.median,
        time.min,
        time.max,
        memory.median,
        memory.min,
        memory.max
    );
    record("startup", &table)
}

/// Stops `gateway` with `SIGTERM`; an error, with what it printed on stderr, unless it exits
/// cleanly.
fn stop_gateway(gateway: &mut Gateway) -> Result<()> {
    let status = gateway.terminate()?;
    if !status.success() {
        bail!(
            "zilla exited with {status} on SIGTERM; stderr:\n{}",
            gateway.stderr()
        );
    }
    Ok(())
}

/// The `zilla` to measure: `--binary`, or a release build of the working tree.
fn zilla_binary(options: &Options) -> Result<PathBuf> {
    match &options.binary {
        Some(binary) => Ok(binary.clone()),
        None => {
            run_command(cargo().args(["build", "--release", "-p", "zilla", "--bin", "zilla"]))?;
            zilla_tests::build_zilla(true, false)
        }
    }
}

/// Median, minimum and maximum of a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(sample: &[f64]) -> Self {
        let mut sorted = sample.to_vec();
        sorted.sort_by(f64::total_cmp);
        let count = sorted.len();
        let median = match count {
            0 => f64::NAN,
            _ if count % 2 == 1 => sorted[count / 2],
            _ => (sorted[count / 2 - 1] + sorted[count / 2]) / 2.0,
        };
        Self {
            median,
            min: sorted.first().copied().unwrap_or(f64::NAN),
            max: sorted.last().copied().unwrap_or(f64::NAN),
        }
    }
}

fn today() -> String {
    time::OffsetDateTime::now_utc().date().to_string()
}

/// The commit measured, marked `+dirty` when tracked files have uncommitted changes.
fn commit() -> String {
    let root = workspace_dir();
    let Some(hash) = stdout_of(cmd("git", ["rev-parse", "--short", "HEAD"]).current_dir(&root))
    else {
        return "unknown".to_owned();
    };
    let dirty =
        stdout_of(cmd("git", ["status", "--porcelain", "--untracked-files=no"]).current_dir(&root))
            .is_some_and(|status| !status.is_empty());
    if dirty { format!("{hash}+dirty") } else { hash }
}

/// Replaces the figures of `scenario` in docs/benchmarks.md (between its markers, which are
/// appended with a heading when missing).
fn record(scenario: &str, figures: &str) -> Result<()> {
    let path = workspace_dir().join("docs/benchmarks.md");
    let document = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(&path, with_figures(&document, scenario, figures))
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("recorded in {}", relative(&path));
    Ok(())
}

fn relative(path: &Path) -> String {
    path.strip_prefix(workspace_dir())
        .unwrap_or(path)
        .display()
        .to_string()
}

fn with_figures(document: &str, scenario: &str, figures: &str) -> String {
    let begin = format!("<!-- bench:{scenario}:begin -->\n");
    let end = format!("<!-- bench:{scenario}:end -->");
    if let Some(start) = document.find(&begin) {
        let content_start = start + begin.len();
        if let Some(length) = document[content_start..].find(&end) {
            return format!(
                "{}{figures}{}",
                &document[..content_start],
                &document[content_start + length..]
            );
        }
    }
    let mut document = document.trim_end().to_owned();
    document.push_str(&format!("\n\n## {scenario}\n\n{begin}{figures}{end}\n"));
    document
}

/// A temporary directory for one scenario's files, named `<prefix>...`.
fn bench_dir(prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .context("cannot create the benchmark directory")
}

/// The runtime the load clients of a scenario run on: two threads.
fn load_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the load clients' runtime")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_has_median_min_and_max() {
        let odd = Spread::of(&[3.0, 1.0, 2.0]);
        assert_eq!(
            odd,
            Spread {
                median: 2.0,
                min: 1.0,
                max: 3.0
            }
        );
        assert_eq!(Spread::of(&[4.0, 1.0, 3.0, 2.0]).median, 2.5);
    }

    #[test]
    fn figures_replace_what_is_between_the_markers() {
        let document = "# Benchmarks\n\n<!-- bench:startup:begin -->\nold\n<!-- bench:startup:end -->\n\nmore\n";
        assert_eq!(
            with_figures(document, "startup", "new\n"),
            "# Benchmarks\n\n<!-- bench:startup:begin -->\nnew\n<!-- bench:startup:end -->\n\nmore\n"
        );
    }

    #[test]
    fn missing_markers_are_appended_with_a_heading() {
        assert_eq!(
            with_figures("# Benchmarks\n", "startup", "new\n"),
            "# Benchmarks\n\n## startup\n\n<!-- bench:startup:begin -->\nnew\n<!-- bench:startup:end -->\n"
        );
    }
}
