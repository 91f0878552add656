//! `cargo xtask bench grpc-proxy` and `cargo xtask bench grpc-kafka`: what the gRPC bindings
//! cost, each against a reference measured in the same run.
//!
//! - **grpc-proxy**: unary calls of `example.EchoService/EchoUnary` (the service of
//!   `examples/grpc.echo`, a 100-character message) made by `h2load` over cleartext HTTP/2
//!   with a pre-framed request body, straight to a tonic echo server that runs in this process
//!   ([`EchoServer`]), and through the gateway in the shape of `examples/grpc.proxy` (tcp →
//!   http (h2) → grpc server checking the calls against the proto → grpc client → http (h2) →
//!   tcp) in front of the same tonic server. In S1's modes: A, everything sharing every core,
//!   the gateway with as many workers as cores; B, the gateway with one worker alone on CPU 0,
//!   h2load and the tonic server on the other CPUs (so the direct runs leave CPU 0 idle). The
//!   figure is the gateway's calls/s ÷ the direct calls/s, with the gateway's and tonic's CPU
//!   time per call.
//! - **grpc-kafka**: one-way unary calls (no `reply-to`) carrying a 1 KB message turned into
//!   Kafka records by the `grpc-kafka` binding (`capability: produce`, `acks: leader_only`,
//!   the kafka cache client chain of S7) against S7's http-kafka gateway
//!   (`examples/http.kafka.produce`) given `POST`s of S7's 1 KB JSON body, both on one loopback
//!   tansu topic and loaded the same way: `h2load` with 64 requests in flight (HTTP/2 for gRPC,
//!   `--h1` for S7). S7's own figures use wrk; h2load here keeps the two loads alike.
//!
//! h2load counts an HTTP 2xx as a success, and a gRPC failure is an HTTP 200 with a
//! `grpc-status` trailer, so each run is checked against what the far end saw: every call
//! h2load counted must have reached the tonic server (its own count), or must be a record in
//! the topic (its end offset), and the far end saw no more than h2load started. Both scenarios run on an optimised build of the xtask, as the
//! tonic server is part of it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use prost::Message as _;
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use zilla_binding_kafka::wire::{Isolation, OffsetSpec};
use zilla_tests::{Gateway, free_port, workspace_dir};

use super::h2load::{self, Extra, Load};
use super::http_proxy::{Mode, Shape, cores, pin, rate};
use super::kafka_produce::{BODY_LENGTH, CONCURRENCY, json_body};
use super::optimized::rerun_optimized;
use super::options::Options;
use super::tansu::Broker;
use super::usage::{Meter, cpu_time, load_average, ticks_per_second};
use super::{Spread, commit, record, stop_gateway, today, zilla_binary};

/// The method every call goes to.
const METHOD: &str = "example.EchoService/EchoUnary";
/// Characters of the message the grpc-proxy calls echo.
const ECHO_MESSAGE_LENGTH: usize = 100;
/// grpc-proxy: h2load threads, connections and streams in flight on each (64 calls in
/// flight, as S1's wrk connections).
const PROXY_THREADS: usize = 2;
const PROXY_CLIENTS: usize = 8;
const PROXY_STREAMS: usize = 8;
/// grpc-kafka: h2load threads; connections are [`CONCURRENCY`], one request in flight each.
const KAFKA_THREADS: usize = 2;
const TOPIC: &str = "events";
/// grpc-kafka: the characters of the message, so that the record's value (the encoded
/// message) is [`BODY_LENGTH`] bytes as S7's.
const PRODUCE_MESSAGE_LENGTH: usize = BODY_LENGTH - 3;

/// `EchoMessage` of `examples/grpc.echo/proto/echo.proto`, for the tonic server.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoMessage {
    #[prost(string, tag = "1")]
    pub message: String,
    #[prost(int32, tag = "2")]
    pub count: i32,
}

/// A request body as h2load sends it: one gRPC message (uncompressed) of `message`.
fn framed(message: &EchoMessage) -> Vec<u8> {
    let encoded = message.encode_to_vec();
    let mut framed = Vec::with_capacity(5 + encoded.len());
    framed.push(0);
    // A message of a few KiB always fits the 4-byte length.
    framed.extend_from_slice(
        &u32::try_from(encoded.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    framed.extend_from_slice(&encoded);
    framed
}

fn echo_message(length: usize) -> EchoMessage {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    EchoMessage {
        message: (0..length)
            .map(|index| char::from(ALPHABET[index % ALPHABET.len()]))
            .collect(),
        count: 0,
    }
}

/// The headers of a gRPC call.
fn grpc_headers() -> Vec<String> {
    vec![
        "content-type: application/grpc".to_owned(),
        "te: trailers".to_owned(),
    ]
}

fn proto() -> Result<String> {
    let path = workspace_dir().join("examples/grpc.echo/proto/echo.proto");
    std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
}

/// The tonic echo server of the grpc-proxy reference: `EchoUnary` answers its request, the
/// other methods are `UNIMPLEMENTED`. It counts the calls it answered.
#[derive(Clone)]
struct EchoServer {
    answered: Arc<AtomicU64>,
}

impl NamedService for EchoServer {
    const NAME: &'static str = "example.EchoService";
}

struct EchoUnary(Arc<AtomicU64>);

impl UnaryService<EchoMessage> for EchoUnary {
    type Response = EchoMessage;
    type Future = std::future::Ready<Result<tonic::Response<EchoMessage>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<EchoMessage>) -> Self::Future {
        self.0.fetch_add(1, Ordering::Relaxed);
        std::future::ready(Ok(tonic::Response::new(request.into_inner())))
    }
}

impl<B> Service<http::Request<B>> for EchoServer
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() == format!("/{METHOD}") {
            let method = EchoUnary(self.answered.clone());
            Box::pin(async move {
                let mut grpc = Grpc::new(tonic_prost::ProstCodec::default());
                Ok(grpc.unary(method, request).await)
            })
        } else {
            Box::pin(async move { Ok(tonic::Status::unimplemented("").into_http()) })
        }
    }
}

/// The tonic server, serving on its own runtime until dropped.
struct Tonic {
    address: SocketAddr,
    answered: Arc<AtomicU64>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Tonic {
    fn start() -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores())
            .thread_name("tonic-echo")
            .enable_all()
            .build()
            .context("cannot start the tonic server's runtime")?;
        let address = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let answered = Arc::new(AtomicU64::new(0));
        let service = EchoServer {
            answered: answered.clone(),
        };
        let server = tonic::transport::Server::builder()
            .add_service(service)
            .serve(address);
        runtime.spawn(async move {
            if let Err(error) = server.await {
                eprintln!("tonic echo server failed: {error}");
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !zilla_tests::accepts_connections(address.port()) {
            ensure!(
                std::time::Instant::now() < deadline,
                "the tonic echo server is not listening on {address}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self {
            address,
            answered,
            runtime: Some(runtime),
        })
    }

    fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }
}

impl Drop for Tonic {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The part of both gateways' configs up to the grpc server, whose calls of `EchoService` go
/// to `exit`: a cleartext HTTP/2 listener and the proto beside the config.
fn grpc_server(name: &str, exit: &str) -> String {
    format!(
        "name: {name}
catalogs:
  host_filesystem:
    type: filesystem
    options:
      subjects:
        echo:
          path: echo.proto
bindings:
  tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    exit: http_server
  http_server:
    type: http
    kind: server
    options:
      versions: [h2]
    exit: grpc_server
  grpc_server:
    type: grpc
    kind: server
    catalog:
      host_filesystem:
        - subject: echo
    routes:
      - when:
          - method: example.EchoService/*
        exit: {exit}
"
    )
}

/// The grpc-proxy gateway's config: `examples/grpc.proxy` without its TLS listener, the tonic
/// server as the exit.
fn proxy_config(tonic: SocketAddr) -> String {
    grpc_server("grpc-proxy-bench", "grpc_client")
        + &format!(
            "  grpc_client:
    type: grpc
    kind: client
    exit: http_client
  http_client:
    type: http
    kind: client
    options:
      versions: [h2]
    exit: tcp_client
  tcp_client:
    type: tcp
    kind: client
    options:
      host: {}
      port: {}
",
            tonic.ip(),
            tonic.port()
        )
}

/// The grpc-kafka gateway's config: the calls of `EchoService` produced one way to
/// [`TOPIC`] through S7's kafka chain.
fn kafka_config(bootstrap: &str) -> String {
    grpc_server("grpc-kafka-bench", "grpc_kafka")
        + &format!(
            "  grpc_kafka:
    type: grpc-kafka
    kind: proxy
    routes:
      - when:
          - method: example.EchoService/*
        exit: kafka_cache_client
        with:
          capability: produce
          topic: {TOPIC}
          acks: leader_only
  kafka_cache_client:
    type: kafka
    kind: cache_client
    exit: kafka_cache_server
  kafka_cache_server:
    type: kafka
    kind: cache_server
    exit: kafka_client
  kafka_client:
    type: kafka
    kind: client
    options:
      servers:
        - {bootstrap}
    exit: tcp_client
  tcp_client:
    type: tcp
    kind: client
"
        )
}

/// Rounds and durations: S1's (`--quick`: 3 rounds of 5 s, printed only).
fn shape(options: &Options) -> Shape {
    let mut shape = Shape::of(options);
    if let Some(rounds) = options.rounds {
        shape.rounds = rounds.max(1);
    }
    if let Some(seconds) = options.seconds {
        shape.duration = Duration::from_secs(seconds.max(1));
    }
    shape
}

/// One measured h2load run.
struct CallRun {
    rate: f64,
    calls: u64,
    /// CPU µs per call of the gateway (none for direct runs) and of the far end (the tonic
    /// server, or tansu).
    gateway_cpu: Option<f64>,
    far_end_cpu: f64,
}

/// Runs `grpc-proxy` and records its figures.
pub fn run_proxy(options: &Options) -> Result<()> {
    // The tonic server runs in this process: unoptimised, it would be the bottleneck.
    if rerun_optimized()? {
        return Ok(());
    }
    let shape = shape(options);
    let binary = zilla_binary(options)?;
    let load_before = load_average();
    let dir = super::bench_dir("zilla-bench-grpc-proxy-")?;
    let body = dir.path().join("call.bin");
    std::fs::write(&body, framed(&echo_message(ECHO_MESSAGE_LENGTH)))?;
    let tonic = Tonic::start()?;
    let proto = proto()?;
    let modes = Mode::all();
    let mut gateways = Vec::with_capacity(modes.len());
    for mode in &modes {
        let gateway = Gateway::builder(&proxy_config(tonic.address))
            .binary(&binary)
            .file("echo.proto", proto.as_bytes())
            .workers(mode.workers)
            .start()?;
        if let Some(cpus) = mode.proxy_cpus() {
            pin(gateway.pid(), false, &cpus)?;
        }
        gateways.push(gateway);
    }
    let ticks = ticks_per_second();
    let own = std::process::id();
    // Read before this process is pinned: the number of cores follows its affinity.
    let all_cpus = format!("0-{}", cores() - 1);
    let load_cpus: Vec<Option<String>> = modes
        .iter()
        .map(|mode| mode.pinned.then(|| mode.load_cpus()))
        .collect();
    let descriptions: Vec<String> = modes
        .iter()
        .zip(&load_cpus)
        .map(|(mode, load_cpus)| match (mode.proxy_cpus(), load_cpus) {
            (Some(gateway_cpus), Some(load_cpus)) => format!(
                "{}: the gateway with {} worker alone on CPU {gateway_cpus}, h2load and tonic on CPUs {load_cpus}",
                mode.name, mode.workers
            ),
            _ => format!(
                "{}: the gateway with {} workers, everything sharing CPUs {all_cpus}",
                mode.name, mode.workers
            ),
        })
        .collect();

    let run = |index: usize, gateway: Option<&Gateway>, duration: Duration| -> Result<CallRun> {
        let load_cpus = load_cpus[index].clone();
        pin(own, false, load_cpus.as_deref().unwrap_or(&all_cpus))?;
        let target = gateway.map_or(tonic.address, |gateway| gateway.address("tcp_server"));
        let meter = gateway
            .map(|gateway| Meter::start(gateway.pid(), false, ticks))
            .transpose()?;
        let own_before = cpu_time(own, ticks)?;
        let answered_before = tonic.answered();
        let report = h2load::run_with(
            PROXY_THREADS,
            PROXY_CLIENTS,
            PROXY_STREAMS,
            Load::Duration(duration),
            &format!("http://{target}/{METHOD}"),
            &Extra {
                headers: grpc_headers(),
                data: Some(body.clone()),
                h1: false,
                cpus: load_cpus.clone(),
            },
        )?;
        let measured = meter.map(|meter| meter.stop()).transpose()?;
        let own_cpu = cpu_time(own, ticks)? - own_before;
        report.check_answers()?;
        // Calls still in flight when h2load stopped may have been answered since.
        std::thread::sleep(Duration::from_millis(200));
        let answered = tonic.answered() - answered_before;
        ensure!(
            answered >= report.succeeded && answered <= report.started,
            "h2load started {} calls through {target} and counted {} answered, but the tonic server answered {answered}",
            report.started,
            report.succeeded
        );
        let per_call = |cpu: Duration| cpu.as_secs_f64() * 1e6 / report.succeeded.max(1) as f64;
        Ok(CallRun {
            rate: report.requests_per_second,
            calls: report.succeeded,
            gateway_cpu: measured.map(|measured| per_call(measured.usage.total())),
            far_end_cpu: per_call(own_cpu),
        })
    };

    println!(
        "grpc-proxy: h2load -t{PROXY_THREADS} -c{PROXY_CLIENTS} -m{PROXY_STREAMS} unary {METHOD} ({ECHO_MESSAGE_LENGTH}-character message), direct to tonic and through the gateway in turn in each mode, {} rounds of {} s after a warm-up",
        shape.rounds,
        shape.duration.as_secs()
    );
    for (index, gateway) in gateways.iter().enumerate() {
        println!("  mode {}", descriptions[index]);
        run(index, None, shape.warm_up).context("warm-up, direct")?;
        run(index, Some(gateway), shape.warm_up).context("warm-up, gateway")?;
    }
    let mut runs: Vec<Vec<(CallRun, CallRun)>> = modes.iter().map(|_| Vec::new()).collect();
    for round in 1..=shape.rounds {
        for (index, (mode, gateway)) in modes.iter().zip(&gateways).enumerate() {
            let direct = run(index, None, shape.duration)
                .with_context(|| format!("round {round}, mode {}, direct", mode.name))?;
            let through = run(index, Some(gateway), shape.duration)
                .with_context(|| format!("round {round}, mode {}, gateway", mode.name))?;
            println!(
                "  round {round} mode {}: direct {:.0} calls/s (tonic {:.1} µs/call), gateway {:.0} calls/s ({:.1} µs/call, tonic {:.1} µs/call)",
                mode.name,
                direct.rate,
                direct.far_end_cpu,
                through.rate,
                through.gateway_cpu.unwrap_or(f64::NAN),
                through.far_end_cpu
            );
            runs[index].push((direct, through));
        }
    }
    pin(own, false, &all_cpus)?;
    for gateway in &mut gateways {
        stop_gateway(gateway)?;
    }
    drop(tonic);

    let spread = |runs: &[(CallRun, CallRun)], figure: &dyn Fn(&(CallRun, CallRun)) -> f64| {
        Spread::of(&runs.iter().map(figure).collect::<Vec<_>>())
    };
    let mut table = format!(
        "`h2load -t{PROXY_THREADS} -c{PROXY_CLIENTS} -m{PROXY_STREAMS} -D {}` unary `{METHOD}` ({ECHO_MESSAGE_LENGTH}-character message), direct to a tonic 0.14 echo server and through the gateway in turn, median (min to max) of {} rounds; CPU per call is user + system time from `/proc/<pid>/stat`:\n\n\
         | date | commit | mode | gateway calls/s | direct calls/s | gateway ÷ direct | gateway CPU per call | tonic CPU per call, direct / through |\n\
         |---|---|---|---|---|---|---|---|\n",
        shape.duration.as_secs(),
        shape.rounds
    );
    let mut summaries = Vec::new();
    for ((mode, description), runs) in modes.iter().zip(&descriptions).zip(&runs) {
        let direct = spread(runs, &|(direct, _)| direct.rate);
        let through = spread(runs, &|(_, through)| through.rate);
        let ratios = spread(runs, &|(direct, through)| through.rate / direct.rate);
        let gateway_cpu = spread(runs, &|(_, through)| {
            through.gateway_cpu.unwrap_or(f64::NAN)
        });
        let tonic_direct = spread(runs, &|(direct, _)| direct.far_end_cpu);
        let tonic_through = spread(runs, &|(_, through)| through.far_end_cpu);
        let ratio = through.median / direct.median;
        summaries.push(format!(
            "grpc-proxy mode {description}: gateway {} calls/s, direct {} calls/s; gateway ÷ direct {ratio:.3} (rounds {:.3} to {:.3}; target ≥ 0.8); gateway {:.1} µs/call, tonic {:.1} / {:.1} µs/call",
            rate(&through),
            rate(&direct),
            ratios.min,
            ratios.max,
            gateway_cpu.median,
            tonic_direct.median,
            tonic_through.median
        ));
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | **{ratio:.2}** ({:.2} to {:.2}) | {:.1} µs | {:.1} / {:.1} µs |\n",
            today(),
            commit(),
            mode.name,
            rate(&through),
            rate(&direct),
            ratios.min,
            ratios.max,
            gateway_cpu.median,
            tonic_direct.median,
            tonic_through.median
        ));
    }
    let calls: u64 = runs
        .iter()
        .flatten()
        .map(|(_, through)| through.calls)
        .sum();
    table.push('\n');
    for description in &descriptions {
        table.push_str(&format!("- Mode {description}.\n"));
    }
    table.push_str(&format!(
        "- {calls} calls through the gateway, each answered by the tonic server (its count); 1-minute load average {} before, {} after.\n",
        load(load_before),
        load(load_average())
    ));
    for summary in &summaries {
        println!("{summary}");
    }
    finish("grpc-proxy", options, &table)
}

fn load(value: Option<f64>) -> String {
    value.map_or_else(|| "?".to_owned(), |value| format!("{value:.1}"))
}

/// Records `table` unless the run was `--quick`.
fn finish(scenario: &str, options: &Options, table: &str) -> Result<()> {
    if options.quick {
        println!("--quick: not recorded");
        return Ok(());
    }
    record(scenario, table)
}

/// Runs `grpc-kafka` and records its figures.
pub fn run_kafka(options: &Options) -> Result<()> {
    if rerun_optimized()? {
        return Ok(());
    }
    let shape = shape(options);
    let binary = zilla_binary(options)?;
    let load_before = load_average();
    let dir = super::bench_dir("zilla-bench-grpc-kafka-")?;
    let grpc_body = dir.path().join("call.bin");
    let message = echo_message(PRODUCE_MESSAGE_LENGTH);
    ensure!(message.encoded_len() == BODY_LENGTH, "message length");
    std::fs::write(&grpc_body, framed(&message))?;
    let json = dir.path().join("post.json");
    std::fs::write(&json, json_body())?;

    let broker = Broker::start()?;
    broker.create_topic(TOPIC, 1)?;
    let mut http_kafka =
        Gateway::from_file(workspace_dir().join("examples/http.kafka.produce/zilla.yaml"))
            .binary(&binary)
            .env("HTTP_PORT", "0")
            .env("KAFKA_BROKER", broker.address())
            .start()?;
    let mut grpc_kafka = Gateway::builder(&kafka_config(&broker.address()))
        .binary(&binary)
        .file("echo.proto", proto()?.as_bytes())
        .start()?;
    let runtime = super::load_runtime()?;
    let cluster = broker.cluster()?;
    let end_offset = || -> Result<i64> {
        Ok(runtime
            .block_on(cluster.list_offsets(
                TOPIC,
                0,
                OffsetSpec::Latest,
                Isolation::ReadUncommitted,
            ))?
            .offset)
    };
    let ticks = ticks_per_second();

    let run = |grpc: bool, duration: Duration| -> Result<CallRun> {
        let gateway = if grpc { &grpc_kafka } else { &http_kafka };
        let address = gateway.address("tcp_server");
        let (url, extra) = if grpc {
            (
                format!("http://{address}/{METHOD}"),
                Extra {
                    headers: grpc_headers(),
                    data: Some(grpc_body.clone()),
                    ..Extra::default()
                },
            )
        } else {
            (
                format!("http://{address}{}", super::kafka_produce::PATH),
                Extra {
                    headers: vec!["content-type: application/json".to_owned()],
                    data: Some(json.clone()),
                    h1: true,
                    cpus: None,
                },
            )
        };
        let offset_before = end_offset()?;
        let meter = Meter::start(gateway.pid(), false, ticks)?;
        let broker_before = cpu_time(broker.pid(), ticks)?;
        let report = h2load::run_with(
            KAFKA_THREADS,
            CONCURRENCY,
            1,
            Load::Duration(duration),
            &url,
            &extra,
        )?;
        let measured = meter.stop()?;
        let broker_cpu = cpu_time(broker.pid(), ticks)? - broker_before;
        report.check_answers()?;
        // Answers still in flight when h2load stopped may land after it is done.
        std::thread::sleep(Duration::from_millis(500));
        let written = u64::try_from(end_offset()? - offset_before).unwrap_or(0);
        ensure!(
            written >= report.succeeded && written <= report.started,
            "h2load started {} requests to {url} and counted {} answered, but {written} records were written",
            report.started,
            report.succeeded
        );
        let per_call = |cpu: Duration| cpu.as_secs_f64() * 1e6 / report.succeeded.max(1) as f64;
        Ok(CallRun {
            rate: report.requests_per_second,
            calls: report.succeeded,
            gateway_cpu: Some(per_call(measured.usage.total())),
            far_end_cpu: per_call(broker_cpu),
        })
    };

    println!(
        "grpc-kafka: h2load -t{KAFKA_THREADS} -c{CONCURRENCY} -m1, one-way unary calls ({BODY_LENGTH}-byte message) and S7's POST ({BODY_LENGTH}-byte JSON, --h1) in turn, {} rounds of {} s after a warm-up",
        shape.rounds,
        shape.duration.as_secs()
    );
    run(false, shape.warm_up).context("warm-up, http-kafka")?;
    run(true, shape.warm_up).context("warm-up, grpc-kafka")?;
    let mut runs: Vec<(CallRun, CallRun)> = Vec::with_capacity(shape.rounds);
    for round in 1..=shape.rounds {
        let http = run(false, shape.duration).with_context(|| format!("round {round}, S7"))?;
        let grpc =
            run(true, shape.duration).with_context(|| format!("round {round}, grpc-kafka"))?;
        println!(
            "  round {round}: S7 {:.0} req/s ({:.1} µs/request, tansu {:.1}), grpc-kafka {:.0} calls/s ({:.1} µs/call, tansu {:.1})",
            http.rate,
            http.gateway_cpu.unwrap_or(f64::NAN),
            http.far_end_cpu,
            grpc.rate,
            grpc.gateway_cpu.unwrap_or(f64::NAN),
            grpc.far_end_cpu
        );
        runs.push((http, grpc));
    }
    for gateway in [&mut http_kafka, &mut grpc_kafka] {
        stop_gateway(gateway)?;
    }
    drop(broker);

    let spread = |figure: &dyn Fn(&(CallRun, CallRun)) -> f64| {
        Spread::of(&runs.iter().map(figure).collect::<Vec<_>>())
    };
    let http = spread(&|(http, _)| http.rate);
    let grpc = spread(&|(_, grpc)| grpc.rate);
    let ratios = spread(&|(http, grpc)| grpc.rate / http.rate);
    let cpu = |figure: &dyn Fn(&(CallRun, CallRun)) -> Option<f64>| {
        spread(&|pair| figure(pair).unwrap_or(f64::NAN)).median
    };
    let http_cpu = cpu(&|(http, _)| http.gateway_cpu);
    let grpc_cpu = cpu(&|(_, grpc)| grpc.gateway_cpu);
    let http_tansu = cpu(&|(http, _)| Some(http.far_end_cpu));
    let grpc_tansu = cpu(&|(_, grpc)| Some(grpc.far_end_cpu));
    let ratio = grpc.median / http.median;
    let calls: u64 = runs.iter().map(|(_, grpc)| grpc.calls).sum();
    println!(
        "grpc-kafka: {} calls/s, S7 {} req/s; grpc-kafka ÷ S7 {ratio:.3} (rounds {:.3} to {:.3}); gateway {grpc_cpu:.1} / {http_cpu:.1} µs per call / request, tansu {grpc_tansu:.1} / {http_tansu:.1} µs",
        rate(&grpc),
        rate(&http),
        ratios.min,
        ratios.max
    );
    let table = format!(
        "`h2load -t{KAFKA_THREADS} -c{CONCURRENCY} -m1 -D {}`: one-way unary calls of a {BODY_LENGTH}-byte message through `grpc-kafka` and S7's `POST` of {BODY_LENGTH} bytes of JSON through `http-kafka` (`--h1`), in turn, to one loopback tansu partition (`acks: leader_only`); median (min to max) of {} rounds; CPU per call or request is user + system time from `/proc/<pid>/stat`:\n\n\
         | date | commit | grpc-kafka calls/s | S7 req/s | grpc-kafka ÷ S7 | gateway CPU per call / request | tansu CPU per call / request |\n\
         |---|---|---|---|---|---|---|\n\
         | {} | {} | {} | {} | **{ratio:.2}** ({:.2} to {:.2}) | {grpc_cpu:.1} / {http_cpu:.1} µs | {grpc_tansu:.0} / {http_tansu:.0} µs |\n\n\
         - {calls} calls measured, each a record in the topic (its end offset); 1-minute load average {} before, {} after.\n",
        shape.duration.as_secs(),
        shape.rounds,
        today(),
        commit(),
        rate(&grpc),
        rate(&http),
        ratios.min,
        ratios.max,
        load(load_before),
        load(load_average())
    );
    finish("grpc-kafka", options, &table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_proto() -> std::path::PathBuf {
        workspace_dir().join("examples/grpc.echo/proto/echo.proto")
    }

    /// The framed body is one uncompressed gRPC message whose payload decodes back.
    #[test]
    fn a_framed_call_decodes_to_its_message() -> Result<()> {
        let message = echo_message(PRODUCE_MESSAGE_LENGTH);
        assert_eq!(message.encoded_len(), BODY_LENGTH);
        let body = framed(&message);
        assert_eq!(body[0], 0);
        let length = u32::from_be_bytes(body[1..5].try_into()?) as usize;
        assert_eq!(length, body.len() - 5);
        assert_eq!(EchoMessage::decode(&body[5..])?, message);
        Ok(())
    }

    /// The field numbers of [`EchoMessage`] are the example proto's.
    #[test]
    fn the_message_matches_the_example_proto() -> Result<()> {
        let proto = std::fs::read_to_string(example_proto())?;
        assert!(proto.contains("string message = 1;"), "{proto}");
        assert!(proto.contains("int32 count = 2;"), "{proto}");
        assert!(proto.contains("rpc EchoUnary(EchoMessage) returns (EchoMessage);"));
        Ok(())
    }

    /// Both gateway configs load.
    #[test]
    fn configs_validate() -> Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::copy(example_proto(), dir.path().join("echo.proto"))?;
        for (name, config) in [
            (
                "proxy",
                proxy_config(SocketAddr::from(([127, 0, 0, 1], 7000))),
            ),
            ("kafka", kafka_config("127.0.0.1:9092")),
        ] {
            let path = dir.path().join(format!("{name}.yaml"));
            std::fs::write(&path, &config)?;
            let output = std::process::Command::new(zilla_tests::zilla_binary()?)
                .args(["validate", "-c"])
                .arg(&path)
                .output()?;
            assert!(
                output.status.success(),
                "{config}\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// The tonic reference answers a call h2load-style (pre-framed body, cleartext HTTP/2)
    /// and counts it.
    #[test]
    fn the_tonic_server_echoes_and_counts() -> Result<()> {
        let tonic = Tonic::start()?;
        let dir = tempfile::tempdir()?;
        let body = dir.path().join("call.bin");
        std::fs::write(&body, framed(&echo_message(ECHO_MESSAGE_LENGTH)))?;
        let report = h2load::run_with(
            1,
            1,
            1,
            Load::Requests(3),
            &format!("http://{}/{METHOD}", tonic.address),
            &Extra {
                headers: grpc_headers(),
                data: Some(body),
                ..Extra::default()
            },
        )?;
        report.check_answers()?;
        assert_eq!(report.succeeded, 3);
        assert_eq!(tonic.answered(), 3);
        Ok(())
    }

    #[test]
    fn unknown_paths_are_not_counted() -> Result<()> {
        let tonic = Tonic::start()?;
        let report = h2load::run(
            1,
            1,
            1,
            Load::Requests(1),
            &format!("http://{}/example.EchoService/Other", tonic.address),
        )?;
        assert_eq!(report.succeeded, 1, "UNIMPLEMENTED is an HTTP 200");
        assert_eq!(tonic.answered(), 0);
        Ok(())
    }
}
