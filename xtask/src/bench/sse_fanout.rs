//! `cargo xtask bench sse-fanout`: scenario S4, one Kafka topic fanned out to many SSE
//! subscribers by the gateway on `examples/sse.kafka.fanout.bench` (tcp → http → sse → sse-kafka →
//! kafka cache → kafka client → tansu).
//!
//! The subscribers are tasks of this process (`GET /events`, reading the chunked event stream
//! with bounded buffers, see [`reader`]); past [`ADDRESSES_FROM`] of them they connect from
//! several 127.0.0.x source addresses. A producer in this process (our Kafka wire client,
//! `acks` leader) writes records carrying their sequence number and the time they were sent,
//! stepping through [`RATES`] for a fixed time each, in several rounds. For every step it
//! counts each subscriber's deliveries (once each: a repeat is a duplicate, a gap is a loss
//! against the expected rate × subscribers) and the latency from send to receipt.
//!
//! First one subscriber, then all of them: the gateway's connections to the broker are counted
//! with `ss` in both cases, and must not grow with the subscribers. Before measuring, the
//! producer sends warm-up records until every subscriber has received one, so each
//! subscription is known to be live.

mod histogram;
mod reader;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use zilla_binding_kafka::wire::{Acks, Cluster, ProduceOptions, Record};
use zilla_tests::{Gateway, rss_kib, workspace_dir};

use super::load::Schedule;
use super::optimized::rerun_optimized;
use super::options::Options;
use super::tansu::{Broker, sockets_to};
use super::usage::{RSS_SAMPLE_INTERVAL, cpu_time, load_average, ticks_per_second};
use super::{Spread, commit, record, stop_gateway, today};
use crate::shell::{cargo, run as run_command};
use histogram::Histogram;
use reader::SseReader;

/// Producer rates stepped through in each round, in messages per second.
const RATES: [u64; 4] = [1, 5, 10, 25];
const DEFAULT_CLIENTS: usize = 10_000;
const DEFAULT_ROUNDS: usize = 5;
const DEFAULT_STEP: Duration = Duration::from_secs(10);
/// The single-subscriber phase: one step at this rate, for this long.
const SINGLE_RATE: u64 = 5;
const SINGLE_STEP: Duration = Duration::from_secs(4);
const TOPIC: &str = "events";
const PATH: &str = "/events";
/// tansu answers a fetch parked at the log end only when its max-wait passes.
const FETCH_MAX_WAIT_MILLIS: &str = "10";
/// Subscribers per source address: more need further 127.0.0.x addresses, since one address
/// has only ~28 k ephemeral ports toward the gateway's port.
const ADDRESSES_FROM: usize = 20_000;
/// Subscriptions being opened at once (the gateway's accept backlog is finite).
const OPENING_AT_ONCE: usize = 256;
const CONNECT_ATTEMPTS: u32 = 5;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(180);
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(60);
const WARM_UP_INTERVAL: Duration = Duration::from_millis(200);
/// After a step, deliveries are awaited until none arrives for this long...
const DRAIN_QUIET: Duration = Duration::from_secs(3);
/// ...or this long has passed.
const DRAIN_MAX: Duration = Duration::from_secs(30);
/// How long the gateway's CPU is measured with every subscriber live and nothing produced.
const IDLE_MEASURE: Duration = Duration::from_secs(3);
const READ_BUFFER: usize = 4096;
/// File descriptors this process keeps beyond one per subscriber.
const SPARE_FDS: u64 = 256;

/// Runs S4 and records its figures.
pub fn run(options: &Options) -> Result<()> {
    if rerun_optimized()? {
        return Ok(());
    }
    let clients = options.clients.unwrap_or(DEFAULT_CLIENTS).max(1);
    let rounds = options.rounds.unwrap_or(DEFAULT_ROUNDS).max(1);
    let step = options
        .seconds
        .map_or(DEFAULT_STEP, Duration::from_secs)
        .max(Duration::from_secs(1));
    raise_fd_limit(clients)?;
    run_command(cargo().args(["build", "--release", "-p", "zilla", "--bin", "zilla"]))?;
    let binary = zilla_tests::build_zilla(true, false)?;
    let load_before = load_average();

    let broker = Broker::start()?;
    broker.create_topic(TOPIC, 1)?;
    let config = workspace_dir().join("examples/sse.kafka.fanout.bench/zilla.yaml");
    let mut gateway = Gateway::from_file(&config)
        .binary(&binary)
        .env("SSE_PORT", "0")
        .env("KAFKA_BROKER", broker.address())
        .property(
            "zilla.binding.kafka.client.fetch.max.wait.millis",
            FETCH_MAX_WAIT_MILLIS,
        )
        .start()?;
    let gateway_fds = open_files_limit(gateway.pid())?;
    if gateway_fds < clients as u64 + 64 {
        bail!("the gateway may open only {gateway_fds} files, too few for {clients} subscribers");
    }
    let idle_rss_kib = gateway.rss_kib()?;
    let runtime = super::load_runtime()?;
    let setup = Setup {
        target: gateway.address("tcp_server"),
        cluster: broker.cluster()?,
        gateway: gateway.pid(),
        broker: broker.pid(),
        broker_port: broker.port(),
        ticks_per_second: ticks_per_second(),
    };

    println!(
        "S4: 1 subscriber, {SINGLE_RATE} msg/s for {}s",
        SINGLE_STEP.as_secs()
    );
    let single = runtime
        .block_on(phase(
            &setup,
            1,
            Run::new(1, &[SINGLE_RATE], 1, SINGLE_STEP),
        ))
        .context("the single-subscriber phase")?;
    println!(
        "S4: {clients} subscribers, {RATES:?} msg/s for {}s each, {rounds} rounds",
        step.as_secs()
    );
    let fanout = runtime
        .block_on(phase(&setup, clients, Run::new(2, &RATES, rounds, step)))
        .context("the fan-out phase")?;
    drop(runtime);

    stop_gateway(&mut gateway)?;
    drop(broker);
    let figures = Figures {
        clients,
        rounds,
        step,
        single,
        fanout,
        idle_rss_kib,
        load: (load_before, load_average()),
    };
    println!("{}", figures.summary());
    record("sse-fanout", &figures.table())
}

/// Raises this process's open-files limit to fit `clients` sockets.
fn raise_fd_limit(clients: usize) -> Result<()> {
    let limit =
        rlimit::increase_nofile_limit(u64::MAX).context("cannot raise the open-files limit")?;
    let needed = clients as u64 + SPARE_FDS;
    if limit < needed {
        bail!(
            "{clients} subscribers need {needed} open files; the hard limit allows {limit} (raise it with `ulimit -Hn`)"
        );
    }
    Ok(())
}

/// The soft `Max open files` of a running process.
fn open_files_limit(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/limits");
    let limits = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_open_files(&limits).with_context(|| format!("no `Max open files` in {path}"))
}

fn parse_open_files(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        return Some(u64::MAX);
    }
    soft.parse().ok()
}

/// The source address of subscriber `index` of `clients`: the default (127.0.0.1) while one
/// address is enough, then 127.0.0.2, 127.0.0.3, ... for each [`ADDRESSES_FROM`] subscribers.
fn source_address(index: usize, clients: usize) -> Option<Ipv4Addr> {
    if clients <= ADDRESSES_FROM {
        return None;
    }
    let offset = u8::try_from(2 + index / ADDRESSES_FROM).unwrap_or(u8::MAX);
    Some(Ipv4Addr::new(127, 0, 0, offset))
}

/// What every phase needs.
struct Setup {
    target: SocketAddr,
    cluster: Cluster,
    gateway: u32,
    broker: u32,
    broker_port: u16,
    ticks_per_second: u64,
}

/// The records one phase produces: steps in order, each a rate held for a time, and the
/// sequence numbers they use.
#[derive(Debug, Clone, PartialEq)]
struct Run {
    /// Written into every record so that a subscriber can tell this phase's records apart.
    id: u32,
    steps: Vec<StepPlan>,
    /// Sequence numbers used in all.
    total: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct StepPlan {
    round: usize,
    schedule: Schedule,
    /// The sequence number of the step's first record.
    first: u64,
}

impl Run {
    fn new(id: u32, rates: &[u64], rounds: usize, step: Duration) -> Self {
        let mut steps = Vec::new();
        let mut next = 0;
        for round in 1..=rounds {
            for &rate in rates {
                let schedule = Schedule::new(rate, step);
                steps.push(StepPlan {
                    round,
                    schedule,
                    first: next,
                });
                next += schedule.total;
            }
        }
        Self {
            id,
            steps,
            total: next,
        }
    }

    /// The step that sent sequence number `seq`.
    fn step_of(&self, seq: u64) -> Option<usize> {
        if seq >= self.total {
            return None;
        }
        Some(self.steps.partition_point(|step| step.first <= seq) - 1)
    }
}

/// What a record's value says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Payload {
    /// A measured record: its phase, sequence number, and when it was sent (µs since the
    /// epoch).
    Sample { run: u32, seq: u64, sent_us: u64 },
    /// A warm-up record of a phase.
    WarmUp { run: u32 },
}

impl Payload {
    fn encode(self) -> String {
        match self {
            Self::Sample { run, seq, sent_us } => {
                format!("{{\"run\":{run},\"seq\":{seq},\"sent_us\":{sent_us}}}")
            }
            Self::WarmUp { run } => format!("{{\"run\":{run},\"warm_up\":true}}"),
        }
    }

    fn decode(data: &[u8]) -> Option<Self> {
        let run = u32::try_from(number_after(data, b"\"run\":")?).ok()?;
        if find(data, b"\"warm_up\":true").is_some() {
            return Some(Self::WarmUp { run });
        }
        Some(Self::Sample {
            run,
            seq: number_after(data, b"\"seq\":")?,
            sent_us: number_after(data, b"\"sent_us\":")?,
        })
    }
}

/// The decimal number right after `key`.
fn number_after(data: &[u8], key: &[u8]) -> Option<u64> {
    let start = find(data, key)? + key.len();
    let digits = data[start..]
        .iter()
        .take_while(|byte| byte.is_ascii_digit())
        .count();
    std::str::from_utf8(&data[start..start + digits])
        .ok()?
        .parse()
        .ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        })
}

/// Which sequence numbers one subscriber has received.
#[derive(Debug)]
pub(super) struct Seen(Vec<u64>);

impl Seen {
    pub(super) fn new(total: u64) -> Self {
        Self(vec![0; usize::try_from(total.div_ceil(64)).unwrap_or(0)])
    }

    /// Marks `seq`; false when it was already marked (a duplicate).
    /// Whether `seq` is marked.
    pub(super) fn contains(&self, seq: u64) -> bool {
        usize::try_from(seq / 64)
            .ok()
            .and_then(|at| self.0.get(at))
            .is_some_and(|word| word & (1 << (seq % 64)) != 0)
    }

    pub(super) fn insert(&mut self, seq: u64) -> bool {
        let Some(word) = usize::try_from(seq / 64)
            .ok()
            .and_then(|at| self.0.get_mut(at))
        else {
            return false;
        };
        let bit = 1 << (seq % 64);
        let fresh = *word & bit == 0;
        *word |= bit;
        fresh
    }
}

/// Counts shared by every subscriber of a phase.
struct Tally {
    run: Run,
    steps: Vec<StepTally>,
    subscribed: AtomicUsize,
    /// Subscribers that received a warm-up record.
    warmed: AtomicUsize,
    /// Subscribers that could not subscribe.
    failed: AtomicUsize,
    /// Subscriptions that ended (the gateway closed them, or they broke) while measuring.
    ended: AtomicUsize,
    first_error: Mutex<Option<String>>,
    /// Records of another phase, or beyond this one's sequence numbers.
    stray: AtomicU64,
    /// Events without a readable payload, or past the reader's bounds.
    malformed: AtomicU64,
    /// Set once the phase is over: subscriptions ending after it are not counted.
    finished: AtomicBool,
}

struct StepTally {
    received: AtomicU64,
    duplicates: AtomicU64,
    /// When the step's first record was due, µs since the epoch (0 until then).
    started_us: AtomicU64,
    /// When the last delivery of the step arrived, µs since the epoch.
    last_us: AtomicU64,
    /// Deliveries in each second from the step's start.
    per_second: Box<[AtomicU64]>,
    latency: Histogram,
}

impl StepTally {
    fn new(plan: &StepPlan) -> Self {
        let seconds = plan.schedule.due_at(plan.schedule.total).as_secs() + DRAIN_MAX.as_secs() + 2;
        Self {
            received: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            started_us: AtomicU64::new(0),
            last_us: AtomicU64::new(0),
            per_second: (0..seconds).map(|_| AtomicU64::new(0)).collect(),
            latency: Histogram::default(),
        }
    }

    fn per_second(&self) -> Vec<u64> {
        self.per_second
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .collect()
    }
}

impl Tally {
    fn new(run: Run) -> Self {
        let steps = run.steps.iter().map(StepTally::new).collect();
        Self {
            run,
            steps,
            subscribed: AtomicUsize::new(0),
            warmed: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            ended: AtomicUsize::new(0),
            first_error: Mutex::new(None),
            stray: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            finished: AtomicBool::new(false),
        }
    }

    fn note_error(&self, error: &anyhow::Error) {
        let mut first = self
            .first_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        first.get_or_insert_with(|| format!("{error:#}"));
    }

    /// One event received by a subscriber at `now_us`.
    fn deliver(&self, data: &[u8], seen: &mut Seen, warmed: &mut bool, now_us: u64) {
        match Payload::decode(data) {
            Some(Payload::Sample { run, seq, sent_us }) if run == self.run.id => {
                let Some(step) = self.run.step_of(seq) else {
                    self.stray.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let tally = &self.steps[step];
                if seen.insert(seq) {
                    tally.received.fetch_add(1, Ordering::Relaxed);
                    tally.latency.record(now_us.saturating_sub(sent_us));
                    tally.last_us.fetch_max(now_us, Ordering::Relaxed);
                    let started_us = tally.started_us.load(Ordering::Relaxed);
                    let second = (now_us.saturating_sub(started_us) / 1_000_000) as usize;
                    if let Some(count) = tally.per_second.get(second) {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                } else {
                    tally.duplicates.fetch_add(1, Ordering::Relaxed);
                }
            }
            Some(Payload::WarmUp { run }) if run == self.run.id => {
                if !*warmed {
                    *warmed = true;
                    self.warmed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Some(_) => {
                self.stray.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                self.malformed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One subscriber, from connecting until its task is aborted or the stream ends.
async fn subscriber(
    index: usize,
    clients: usize,
    target: SocketAddr,
    tally: Arc<Tally>,
    opening: Arc<Semaphore>,
) {
    let mut subscribed = false;
    let result = subscribe(index, clients, target, &tally, &opening, &mut subscribed).await;
    if let Err(error) = &result {
        tally.note_error(error);
    }
    if !subscribed {
        tally.failed.fetch_add(1, Ordering::Relaxed);
    } else if !tally.finished.load(Ordering::Relaxed) {
        if result.is_ok() {
            tally.note_error(&anyhow::anyhow!("the gateway ended a subscription"));
        }
        tally.ended.fetch_add(1, Ordering::Relaxed);
    }
}

async fn subscribe(
    index: usize,
    clients: usize,
    target: SocketAddr,
    tally: &Tally,
    opening: &Semaphore,
    subscribed: &mut bool,
) -> Result<()> {
    let permit = opening.acquire().await?;
    let mut stream = connect(index, clients, target).await?;
    let request = format!(
        "GET {PATH} HTTP/1.1\r\nhost: {target}\r\naccept: text/event-stream\r\ncache-control: no-cache\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut reader = SseReader::default();
    let mut seen = Seen::new(tally.run.total);
    let mut warmed = false;
    let mut buffer = vec![0u8; READ_BUFFER];
    let mut permit = Some(permit);
    let mut oversized = 0;
    loop {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            if !*subscribed {
                bail!("the gateway closed the connection before answering");
            }
            return Ok(());
        }
        let now_us = unix_micros();
        reader.feed(&buffer[..read], &mut |data: &[u8]| {
            tally.deliver(data, &mut seen, &mut warmed, now_us);
        })?;
        if reader.is_open() && !*subscribed {
            *subscribed = true;
            // The next subscriber may start opening.
            drop(permit.take());
            tally.subscribed.fetch_add(1, Ordering::Relaxed);
        }
        if reader.oversized() > oversized {
            tally
                .malformed
                .fetch_add(reader.oversized() - oversized, Ordering::Relaxed);
            oversized = reader.oversized();
        }
        if reader.has_ended() {
            return Ok(());
        }
    }
}

/// Connects from this subscriber's source address, retrying refusals (a full accept backlog).
async fn connect(
    index: usize,
    clients: usize,
    target: SocketAddr,
) -> Result<tokio::net::TcpStream> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let socket = TcpSocket::new_v4()?;
        if let Some(source) = source_address(index, clients) {
            socket
                .bind(SocketAddr::new(IpAddr::V4(source), 0))
                .with_context(|| format!("cannot bind {source}"))?;
        }
        match tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(target)).await {
            Ok(Ok(stream)) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Ok(Err(error)) if attempt >= CONNECT_ATTEMPTS => {
                return Err(error).with_context(|| format!("cannot connect to {target}"));
            }
            Err(_) if attempt >= CONNECT_ATTEMPTS => {
                bail!("no connection to {target} within {CONNECT_TIMEOUT:?}, {attempt} times")
            }
            _ => tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await,
        }
    }
}

/// Produces one record with the leader's acknowledgement.
async fn produce(cluster: &Cluster, payload: Payload) -> Result<()> {
    let record = Record {
        timestamp: i64::try_from(unix_micros() / 1000).unwrap_or(0),
        key: None,
        value: Some(Bytes::from(payload.encode())),
        headers: Vec::new(),
    };
    let options = ProduceOptions {
        acks: Acks::Leader,
        ..ProduceOptions::default()
    };
    cluster.produce(TOPIC, 0, &[record], &options).await?;
    Ok(())
}

/// What one phase measured.
struct PhaseOutcome {
    clients: usize,
    subscribed: usize,
    failed: usize,
    warmed: usize,
    ended: usize,
    first_error: Option<String>,
    subscribe_time: Duration,
    sockets_subscribed: usize,
    sockets_end: usize,
    rss_subscribed_kib: u64,
    rss_peak_kib: u64,
    /// The gateway's CPU with every subscriber live and nothing produced, in % of one core.
    idle_cpu_percent: f64,
    stray: u64,
    malformed: u64,
    steps: Vec<StepOutcome>,
}

/// What one step measured.
#[derive(Debug, Clone)]
struct StepOutcome {
    rate: u64,
    produce_errors: u64,
    expected: u64,
    received: u64,
    duplicates: u64,
    /// Deliveries per second while the step runs (see [`steady_rate`]).
    deliveries_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    gateway_cpu_percent: f64,
    generator_cpu_percent: f64,
    broker_cpu_percent: f64,
}

async fn phase(setup: &Setup, clients: usize, run: Run) -> Result<PhaseOutcome> {
    let tally = Arc::new(Tally::new(run));
    let opening = Arc::new(Semaphore::new(OPENING_AT_ONCE));
    let mut subscribers = JoinSet::new();
    let started = Instant::now();
    for index in 0..clients {
        subscribers.spawn(subscriber(
            index,
            clients,
            setup.target,
            tally.clone(),
            opening.clone(),
        ));
    }
    while tally.subscribed.load(Ordering::Relaxed) + tally.failed.load(Ordering::Relaxed) < clients
    {
        if started.elapsed() > SUBSCRIBE_TIMEOUT {
            bail!(
                "only {} of {clients} subscribed within {SUBSCRIBE_TIMEOUT:?}",
                tally.subscribed.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let subscribe_time = started.elapsed();
    let subscribed = tally.subscribed.load(Ordering::Relaxed);
    println!(
        "  {subscribed} of {clients} subscribed in {:.1}s",
        subscribe_time.as_secs_f64()
    );
    if subscribed == 0 {
        bail!(
            "no subscription succeeded: {}",
            tally
                .first_error
                .lock()
                .map(|e| e.clone())
                .unwrap_or_default()
                .unwrap_or_default()
        );
    }

    // Every subscription is live once it has received a record produced after it opened.
    let warming = Instant::now();
    while tally.warmed.load(Ordering::Relaxed)
        < subscribed - tally.ended.load(Ordering::Relaxed).min(subscribed)
    {
        if warming.elapsed() > WARM_UP_TIMEOUT {
            bail!(
                "only {} of {subscribed} subscribers received a warm-up record within {WARM_UP_TIMEOUT:?}",
                tally.warmed.load(Ordering::Relaxed)
            );
        }
        produce(&setup.cluster, Payload::WarmUp { run: tally.run.id }).await?;
        tokio::time::sleep(WARM_UP_INTERVAL).await;
    }
    // Warm-up records still on their way are not counted; let them arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let warmed = tally.warmed.load(Ordering::Relaxed);
    let sockets_subscribed = sockets_to(setup.gateway, setup.broker_port)?;
    let rss_subscribed_kib = rss_kib(setup.gateway)?;
    let idle_since = Instant::now();
    let idle_cpu_before = cpu_time(setup.gateway, setup.ticks_per_second)?;
    tokio::time::sleep(IDLE_MEASURE).await;
    let idle_cpu = cpu_time(setup.gateway, setup.ticks_per_second)?.saturating_sub(idle_cpu_before);
    let idle_cpu_percent = 100.0 * idle_cpu.as_secs_f64() / idle_since.elapsed().as_secs_f64();
    println!(
        "  live after {:.1}s of warm-up records; gateway: {sockets_subscribed} broker sockets, {:.1} MiB, {idle_cpu_percent:.0} % CPU with nothing produced",
        warming.elapsed().as_secs_f64(),
        rss_subscribed_kib as f64 / 1024.0
    );

    let peak = Arc::new(AtomicU64::new(rss_subscribed_kib));
    let sampling = {
        let peak = peak.clone();
        let pid = setup.gateway;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RSS_SAMPLE_INTERVAL);
            loop {
                tick.tick().await;
                if let Ok(kib) = rss_kib(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
            }
        })
    };
    let mut steps = Vec::with_capacity(tally.run.steps.len());
    for index in 0..tally.run.steps.len() {
        let outcome = step(setup, &tally, index, warmed).await?;
        println!(
            "  round {} at {:>2} msg/s: {:.0} deliveries/s of {} expected, {} lost, {} duplicates, p50/p99 {:.1}/{:.1} ms, gateway CPU {:.0} %",
            tally.run.steps[index].round,
            outcome.rate,
            outcome.deliveries_per_second,
            outcome.rate * warmed as u64,
            outcome.expected.saturating_sub(outcome.received),
            outcome.duplicates,
            outcome.p50_ms,
            outcome.p99_ms,
            outcome.gateway_cpu_percent
        );
        steps.push(outcome);
    }
    sampling.abort();
    let sockets_end = sockets_to(setup.gateway, setup.broker_port)?;
    tally.finished.store(true, Ordering::Relaxed);
    subscribers.shutdown().await;

    let first_error = tally
        .first_error
        .lock()
        .map(|error| error.clone())
        .unwrap_or_default();
    Ok(PhaseOutcome {
        clients,
        subscribed,
        failed: tally.failed.load(Ordering::Relaxed),
        warmed,
        ended: tally.ended.load(Ordering::Relaxed),
        first_error,
        subscribe_time,
        sockets_subscribed,
        sockets_end,
        rss_subscribed_kib,
        rss_peak_kib: peak.load(Ordering::Relaxed),
        idle_cpu_percent,
        stray: tally.stray.load(Ordering::Relaxed),
        malformed: tally.malformed.load(Ordering::Relaxed),
        steps,
    })
}

/// Produces one step's records on schedule, then waits for their deliveries.
async fn step(setup: &Setup, tally: &Arc<Tally>, index: usize, live: usize) -> Result<StepOutcome> {
    let plan = tally.run.steps[index];
    let step_tally = &tally.steps[index];
    let cpu = |pid| cpu_time(pid, setup.ticks_per_second);
    let before = (
        cpu(setup.gateway)?,
        cpu(std::process::id())?,
        cpu(setup.broker)?,
    );
    let started = Instant::now();
    let started_us = unix_micros();
    step_tally.started_us.store(started_us, Ordering::Relaxed);

    let mut sends = JoinSet::new();
    for offset in 0..plan.schedule.total {
        tokio::time::sleep_until(started + plan.schedule.due_at(offset)).await;
        let cluster = setup.cluster.clone();
        let payload = Payload::Sample {
            run: tally.run.id,
            seq: plan.first + offset,
            sent_us: unix_micros(),
        };
        sends.spawn(async move { produce(&cluster, payload).await });
    }
    let mut produce_errors = 0;
    while let Some(sent) = sends.join_next().await {
        if !matches!(sent, Ok(Ok(()))) {
            produce_errors += 1;
        }
    }

    let expected = plan.schedule.total * live as u64;
    let draining = Instant::now();
    let mut last_count = step_tally.received.load(Ordering::Relaxed);
    let mut last_progress = Instant::now();
    loop {
        let received = step_tally.received.load(Ordering::Relaxed);
        if received >= expected || draining.elapsed() > DRAIN_MAX {
            break;
        }
        if received != last_count {
            last_count = received;
            last_progress = Instant::now();
        } else if last_progress.elapsed() > DRAIN_QUIET {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = started.elapsed();
    let after = (
        cpu(setup.gateway)?,
        cpu(std::process::id())?,
        cpu(setup.broker)?,
    );
    let percent = |used: Duration| 100.0 * used.as_secs_f64() / wall.as_secs_f64();

    let received = step_tally.received.load(Ordering::Relaxed);
    let last_us = step_tally.last_us.load(Ordering::Relaxed);
    let scheduled = plan.schedule.due_at(plan.schedule.total);
    let millis = |percent| {
        step_tally
            .latency
            .percentile(percent)
            .map_or(f64::NAN, |latency| latency.as_secs_f64() * 1000.0)
    };
    Ok(StepOutcome {
        rate: plan.schedule.rate,
        produce_errors,
        expected,
        received,
        duplicates: step_tally.duplicates.load(Ordering::Relaxed),
        deliveries_per_second: steady_rate(&step_tally.per_second(), scheduled)
            .unwrap_or_else(|| overall_rate(received, scheduled, started_us, last_us)),
        p50_ms: millis(50.0),
        p99_ms: millis(99.0),
        max_ms: millis(100.0),
        gateway_cpu_percent: percent(after.0.saturating_sub(before.0)),
        generator_cpu_percent: percent(after.1.saturating_sub(before.1)),
        broker_cpu_percent: percent(after.2.saturating_sub(before.2)),
    })
}

/// The rate of deliveries while records are being produced: the median count of the whole
/// seconds of the step but the first, whose start waits for the first record's latency. (The
/// second after the step is cut off by its end.) In step with the producer, that is rate ×
/// subscribers; a gateway that falls behind delivers less per second. `None` for steps too
/// short to have such seconds.
fn steady_rate(per_second: &[u64], scheduled: Duration) -> Option<f64> {
    let counts: Vec<f64> = measured_seconds(per_second, scheduled)?
        .iter()
        .map(|&count| count as f64)
        .collect();
    Some(Spread::of(&counts).median)
}

fn measured_seconds(per_second: &[u64], scheduled: Duration) -> Option<&[u64]> {
    let whole = usize::try_from(scheduled.as_secs())
        .ok()?
        .min(per_second.len());
    per_second.get(1..whole).filter(|inner| !inner.is_empty())
}

/// For short steps: `received` deliveries over the longer of the step's `scheduled` time and
/// the time from its start to its last delivery (a gateway that falls behind stretches it).
fn overall_rate(received: u64, scheduled: Duration, started_us: u64, last_us: u64) -> f64 {
    let until_last = Duration::from_micros(last_us.saturating_sub(started_us));
    let span = scheduled.max(until_last).max(Duration::from_millis(1));
    received as f64 / span.as_secs_f64()
}

/// Figures of one rate over the rounds.
struct RateFigures {
    rate: u64,
    expected_per_second: f64,
    deliveries_per_second: Spread,
    expected: u64,
    received: u64,
    duplicates: u64,
    produce_errors: u64,
    p50_ms: Spread,
    p99_ms: Spread,
    max_ms: f64,
    gateway_cpu_percent: Spread,
    generator_cpu_percent: Spread,
    broker_cpu_percent: Spread,
}

impl RateFigures {
    fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.received)
    }
}

fn by_rate(steps: &[StepOutcome], live: usize) -> Vec<RateFigures> {
    let mut rates: Vec<u64> = steps.iter().map(|step| step.rate).collect();
    rates.sort_unstable();
    rates.dedup();
    rates
        .into_iter()
        .map(|rate| {
            let of_rate: Vec<&StepOutcome> = steps.iter().filter(|s| s.rate == rate).collect();
            let spread = |figure: fn(&StepOutcome) -> f64| {
                Spread::of(&of_rate.iter().map(|step| figure(step)).collect::<Vec<_>>())
            };
            let sum = |figure: fn(&StepOutcome) -> u64| of_rate.iter().map(|s| figure(s)).sum();
            RateFigures {
                rate,
                expected_per_second: (rate * live as u64) as f64,
                deliveries_per_second: spread(|s| s.deliveries_per_second),
                expected: sum(|s| s.expected),
                received: sum(|s| s.received),
                duplicates: sum(|s| s.duplicates),
                produce_errors: sum(|s| s.produce_errors),
                p50_ms: spread(|s| s.p50_ms),
                p99_ms: spread(|s| s.p99_ms),
                max_ms: of_rate.iter().map(|s| s.max_ms).fold(0.0, f64::max),
                gateway_cpu_percent: spread(|s| s.gateway_cpu_percent),
                generator_cpu_percent: spread(|s| s.generator_cpu_percent),
                broker_cpu_percent: spread(|s| s.broker_cpu_percent),
            }
        })
        .collect()
}

/// Everything recorded.
struct Figures {
    clients: usize,
    rounds: usize,
    step: Duration,
    single: PhaseOutcome,
    fanout: PhaseOutcome,
    idle_rss_kib: u64,
    load: (Option<f64>, Option<f64>),
}

impl Figures {
    fn rates(&self) -> Vec<RateFigures> {
        by_rate(&self.fanout.steps, self.fanout.warmed)
    }

    fn sockets_constant(&self) -> bool {
        let single = self.single.sockets_subscribed;
        single == self.fanout.sockets_subscribed && single == self.fanout.sockets_end
    }

    /// Subscriber memory in the gateway, per subscriber.
    fn kib_per_subscriber(&self) -> f64 {
        self.fanout
            .rss_subscribed_kib
            .saturating_sub(self.idle_rss_kib) as f64
            / self.fanout.subscribed.max(1) as f64
    }

    fn lost_and_duplicates(&self) -> (u64, u64) {
        let rates = self.rates();
        (
            rates.iter().map(RateFigures::lost).sum(),
            rates.iter().map(|rate| rate.duplicates).sum(),
        )
    }

    fn summary(&self) -> String {
        let rates = self.rates();
        let top = rates.last();
        let (lost, duplicates) = self.lost_and_duplicates();
        let top_text = top.map_or_else(String::new, |top| {
            format!(
                "at {} msg/s {:.0} deliveries/s (expected {:.0}; rounds {:.0} to {:.0}), p50/p99 {:.1}/{:.1} ms; ",
                top.rate,
                top.deliveries_per_second.median,
                top.expected_per_second,
                top.deliveries_per_second.min,
                top.deliveries_per_second.max,
                top.p50_ms.median,
                top.p99_ms.median,
            )
        });
        format!(
            "S4 sse-fanout: {} of {} subscribers live; {top_text}lost {lost}, duplicates {duplicates} over all rates; \
             gateway broker sockets {} with 1 subscriber, {} / {} with {} ({}); gateway RSS {:.1} MiB idle, {:.1} MiB subscribed ({:.1} KiB each), {:.1} MiB peak; \
             gateway CPU {:.0} % with the subscribers and nothing produced (targets: ≥ 250 k deliveries/s, no loss, broker sockets constant)",
            self.fanout.warmed,
            self.clients,
            self.single.sockets_subscribed,
            self.fanout.sockets_subscribed,
            self.fanout.sockets_end,
            self.fanout.subscribed,
            if self.sockets_constant() {
                "constant"
            } else {
                "NOT constant"
            },
            self.idle_rss_kib as f64 / 1024.0,
            self.fanout.rss_subscribed_kib as f64 / 1024.0,
            self.kib_per_subscriber(),
            self.fanout.rss_peak_kib as f64 / 1024.0,
            self.fanout.idle_cpu_percent,
        )
    }

    fn table(&self) -> String {
        let mut table = format!(
            "{} of {} subscribers live, {} rounds of {}s per rate, median (min to max) over the rounds:\n\n\
             | date | commit | msg/s | expected deliveries/s | deliveries/s | delivered ÷ expected | lost | duplicates | p50 latency | p99 latency | gateway CPU | load generator CPU | tansu CPU |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
            self.fanout.warmed,
            self.clients,
            self.rounds,
            self.step.as_secs(),
        );
        for rate in self.rates() {
            table.push_str(&format!(
                "| {date} | {commit} | {} | {:.0} | {} | {:.4} | {} | {} | {} ms | {} ms | {:.0} % | {:.0} % | {:.0} % |\n",
                rate.rate,
                rate.expected_per_second,
                whole(&rate.deliveries_per_second),
                rate.received as f64 / rate.expected.max(1) as f64,
                rate.lost(),
                rate.duplicates,
                tenths(&rate.p50_ms),
                tenths(&rate.p99_ms),
                rate.gateway_cpu_percent.median,
                rate.generator_cpu_percent.median,
                rate.broker_cpu_percent.median,
                date = today(),
                commit = commit(),
            ));
        }
        let produce_errors: u64 = self.rates().iter().map(|rate| rate.produce_errors).sum();
        let worst = self
            .rates()
            .iter()
            .map(|rate| rate.max_ms)
            .fold(0.0, f64::max);
        let load = |load: Option<f64>| load.map_or_else(|| "?".to_owned(), |l| format!("{l:.1}"));
        let single = self.single.steps.first();
        table.push_str(&format!(
            "\n- Gateway → broker sockets (`ss`): {} with 1 subscriber; {} with {} subscribers, {} at the end: **{}**.\n\
             - Gateway RSS: {:.1} MiB idle, {:.1} MiB with {} subscribers ({:.1} KiB each), {:.1} MiB peak while producing.\n\
             - Gateway CPU with every subscriber live and nothing produced ({}s): {:.0} % with 1 subscriber, {:.0} % with {}.\n\
             - Subscribing {} took {:.1} s; {} failed, {} ended early{}; {} stray and {} malformed events; {} produce errors; slowest delivery {:.0} ms.\n\
             - 1 subscriber at {} msg/s: p50/p99 {:.1}/{:.1} ms.\n\
             - 1-minute load average of the 2-core machine: {} before, {} after.\n",
            self.single.sockets_subscribed,
            self.fanout.sockets_subscribed,
            self.fanout.subscribed,
            self.fanout.sockets_end,
            if self.sockets_constant() { "constant" } else { "NOT constant" },
            self.idle_rss_kib as f64 / 1024.0,
            self.fanout.rss_subscribed_kib as f64 / 1024.0,
            self.fanout.subscribed,
            self.kib_per_subscriber(),
            self.fanout.rss_peak_kib as f64 / 1024.0,
            IDLE_MEASURE.as_secs(),
            self.single.idle_cpu_percent,
            self.fanout.idle_cpu_percent,
            self.fanout.subscribed,
            self.fanout.clients,
            self.fanout.subscribe_time.as_secs_f64(),
            self.fanout.failed,
            self.fanout.ended,
            self.fanout
                .first_error
                .as_ref()
                .map_or_else(String::new, |error| format!(" (first error: {error})")),
            self.fanout.stray,
            self.fanout.malformed,
            produce_errors,
            worst,
            SINGLE_RATE,
            single.map_or(f64::NAN, |step| step.p50_ms),
            single.map_or(f64::NAN, |step| step.p99_ms),
            load(self.load.0),
            load(self.load.1),
        ));
        table
    }
}

/// `249870 (249001 to 250000)`.
fn whole(spread: &Spread) -> String {
    format!(
        "{:.0} ({:.0} to {:.0})",
        spread.median, spread.min, spread.max
    )
}

/// `12.3 (11.0 to 14.9)`.
fn tenths(spread: &Spread) -> String {
    format!(
        "{:.1} ({:.1} to {:.1})",
        spread.median, spread.min, spread.max
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        for payload in [
            Payload::Sample {
                run: 2,
                seq: 2049,
                sent_us: 1_764_000_000_123_456,
            },
            Payload::WarmUp { run: 7 },
        ] {
            assert_eq!(Payload::decode(payload.encode().as_bytes()), Some(payload));
        }
        assert_eq!(Payload::decode(b"hello"), None);
        assert_eq!(Payload::decode(b"{\"run\":1,\"seq\":3}"), None);
    }

    #[test]
    fn sequence_numbers_map_to_their_step() {
        let run = Run::new(1, &[1, 5], 2, Duration::from_secs(2));
        let totals: Vec<u64> = run.steps.iter().map(|s| s.schedule.total).collect();
        assert_eq!(totals, [2, 10, 2, 10]);
        assert_eq!(run.total, 24);
        let rounds: Vec<usize> = run.steps.iter().map(|s| s.round).collect();
        assert_eq!(rounds, [1, 1, 2, 2]);
        assert_eq!(run.step_of(0), Some(0));
        assert_eq!(run.step_of(1), Some(0));
        assert_eq!(run.step_of(2), Some(1));
        assert_eq!(run.step_of(11), Some(1));
        assert_eq!(run.step_of(12), Some(2));
        assert_eq!(run.step_of(23), Some(3));
        assert_eq!(run.step_of(24), None);
    }

    #[test]
    fn repeats_are_duplicates() {
        let mut seen = Seen::new(130);
        assert!(seen.insert(0));
        assert!(seen.insert(129));
        assert!(!seen.insert(129));
        assert!(seen.insert(64));
        assert!(!seen.insert(0));
        assert!(!seen.insert(130 + 64), "beyond the run");
    }

    #[test]
    fn deliveries_are_counted_once_per_subscriber_with_their_latency() {
        let tally = Tally::new(Run::new(3, &[2], 1, Duration::from_secs(1)));
        let mut seen = Seen::new(tally.run.total);
        let mut warmed = false;
        let sample = |seq, sent_us| {
            Payload::Sample {
                run: 3,
                seq,
                sent_us,
            }
            .encode()
        };
        tally.deliver(
            Payload::WarmUp { run: 3 }.encode().as_bytes(),
            &mut seen,
            &mut warmed,
            0,
        );
        tally.deliver(
            Payload::WarmUp { run: 3 }.encode().as_bytes(),
            &mut seen,
            &mut warmed,
            0,
        );
        tally.deliver(sample(0, 1_000).as_bytes(), &mut seen, &mut warmed, 1_800);
        tally.deliver(sample(0, 1_000).as_bytes(), &mut seen, &mut warmed, 4_000);
        tally.deliver(sample(1, 2_000).as_bytes(), &mut seen, &mut warmed, 2_500);
        tally.deliver(sample(9, 2_000).as_bytes(), &mut seen, &mut warmed, 2_500);
        let other_run = Payload::Sample {
            run: 2,
            seq: 1,
            sent_us: 0,
        }
        .encode();
        tally.deliver(other_run.as_bytes(), &mut seen, &mut warmed, 2_500);
        tally.deliver(b"not ours", &mut seen, &mut warmed, 2_500);
        let step = &tally.steps[0];
        assert!(warmed);
        assert_eq!(tally.warmed.load(Ordering::Relaxed), 1);
        assert_eq!(step.received.load(Ordering::Relaxed), 2);
        assert_eq!(step.duplicates.load(Ordering::Relaxed), 1);
        assert_eq!(step.last_us.load(Ordering::Relaxed), 2_500);
        assert_eq!(
            step.latency.percentile(50.0),
            Some(Duration::from_micros(500))
        );
        assert_eq!(
            step.latency.percentile(100.0),
            Some(Duration::from_micros(800))
        );
        assert_eq!(tally.stray.load(Ordering::Relaxed), 2);
        assert_eq!(tally.malformed.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_step_that_falls_behind_is_stretched() {
        let ten = Duration::from_secs(10);
        assert_eq!(overall_rate(1_000, ten, 5_000_000, 9_000_000), 100.0);
        assert_eq!(overall_rate(1_000, ten, 5_000_000, 25_000_000), 50.0);
        assert_eq!(overall_rate(0, ten, 5_000_000, 0), 0.0);
    }

    #[test]
    fn the_steady_rate_skips_the_first_second_and_the_drain() {
        let four = Duration::from_secs(4);
        // Second 0 waits for the first latency; seconds 4 and later are the drain.
        let counts = [700, 1_000, 990, 1_010, 300, 0, 0];
        assert_eq!(steady_rate(&counts, four), Some(1_000.0));
        let falling_behind = [700, 800, 800, 800, 800, 800, 200];
        assert_eq!(steady_rate(&falling_behind, four), Some(800.0));
        assert_eq!(steady_rate(&counts, Duration::from_secs(1)), None);
        assert_eq!(steady_rate(&counts, Duration::from_millis(500)), None);
        assert_eq!(steady_rate(&counts, Duration::from_secs(2)), Some(1_000.0));
    }

    #[test]
    fn source_addresses_spread_past_the_threshold() {
        assert_eq!(source_address(0, ADDRESSES_FROM), None);
        assert_eq!(source_address(ADDRESSES_FROM - 1, ADDRESSES_FROM), None);
        let many = 3 * ADDRESSES_FROM;
        assert_eq!(source_address(0, many), Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(
            source_address(ADDRESSES_FROM, many),
            Some(Ipv4Addr::new(127, 0, 0, 3))
        );
        assert_eq!(
            source_address(many - 1, many),
            Some(Ipv4Addr::new(127, 0, 0, 4))
        );
    }

    #[test]
    fn the_open_files_limit_is_read() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            20000                20000                files     \n";
        assert_eq!(parse_open_files(limits), Some(20_000));
        assert_eq!(
            parse_open_files(
                "Max open files            unlimited            unlimited            files"
            ),
            Some(u64::MAX)
        );
        assert_eq!(parse_open_files("Max processes 10 10"), None);
        assert!(open_files_limit(std::process::id()).is_ok());
    }

    #[test]
    fn rates_are_summarised_over_rounds() {
        let step = |rate, received, per_second, p99| StepOutcome {
            rate,
            produce_errors: 0,
            expected: rate * 10 * 100,
            received,
            duplicates: 0,
            deliveries_per_second: per_second,
            p50_ms: 1.0,
            p99_ms: p99,
            max_ms: p99 * 2.0,
            gateway_cpu_percent: 10.0,
            generator_cpu_percent: 5.0,
            broker_cpu_percent: 1.0,
        };
        let steps = [
            step(5, 5_000, 500.0, 3.0),
            step(1, 1_000, 100.0, 2.0),
            step(5, 4_990, 499.0, 9.0),
            step(1, 1_000, 100.0, 4.0),
            step(5, 5_000, 500.0, 6.0),
        ];
        let rates = by_rate(&steps, 100);
        assert_eq!(rates.len(), 2);
        assert_eq!(rates[0].rate, 1);
        assert_eq!(rates[0].lost(), 0);
        assert_eq!(rates[0].p99_ms.median, 3.0);
        assert_eq!(rates[1].rate, 5);
        assert_eq!(rates[1].expected_per_second, 500.0);
        assert_eq!(rates[1].lost(), 10);
        assert_eq!(rates[1].deliveries_per_second.median, 500.0);
        assert_eq!(rates[1].deliveries_per_second.min, 499.0);
        assert_eq!(rates[1].p99_ms.median, 6.0);
        assert_eq!(rates[1].max_ms, 18.0);
    }

    /// The whole harness against a real gateway on the example and a real broker, at a small
    /// scale: every subscriber gets every record once, and the gateway holds as many broker
    /// connections for three subscribers as for one (no timing is asserted).
    #[test]
    fn subscribers_receive_every_record_through_the_example_gateway() -> Result<()> {
        let broker = Broker::start()?;
        broker.create_topic(TOPIC, 1)?;
        let gateway =
            Gateway::from_file(workspace_dir().join("examples/sse.kafka.fanout.bench/zilla.yaml"))
                .env("SSE_PORT", "0")
                .env("KAFKA_BROKER", broker.address())
                .property(
                    "zilla.binding.kafka.client.fetch.max.wait.millis",
                    FETCH_MAX_WAIT_MILLIS,
                )
                .start()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let setup = Setup {
            target: gateway.address("tcp_server"),
            cluster: broker.cluster()?,
            gateway: gateway.pid(),
            broker: broker.pid(),
            broker_port: broker.port(),
            ticks_per_second: ticks_per_second(),
        };
        let step = Duration::from_secs(1);
        let one = runtime.block_on(phase(&setup, 1, Run::new(1, &[4], 1, step)))?;
        let three = runtime.block_on(phase(&setup, 3, Run::new(2, &[2, 8], 1, step)))?;
        for (phase, subscribers) in [(&one, 1), (&three, 3)] {
            assert_eq!(phase.subscribed, subscribers);
            assert_eq!(phase.warmed, subscribers);
            assert_eq!((phase.failed, phase.ended), (0, 0));
            assert_eq!((phase.stray, phase.malformed), (0, 0));
            for step in &phase.steps {
                assert_eq!(step.expected, step.rate * subscribers as u64);
                assert_eq!(step.received, step.expected, "rate {}", step.rate);
                assert_eq!((step.duplicates, step.produce_errors), (0, 0));
            }
        }
        assert!(one.sockets_subscribed >= 1);
        assert_eq!(three.sockets_subscribed, one.sockets_subscribed);
        assert_eq!(three.sockets_end, one.sockets_subscribed);
        Ok(())
    }
}
