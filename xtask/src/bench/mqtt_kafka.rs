//! `cargo xtask bench mqtt-kafka`: scenario S6 on `examples/mqtt.kafka.proxy` (tcp → mqtt
//! server → mqtt-kafka → kafka cache_client → cache_server → kafka client → tcp) against a
//! loopback tansu, with mosquitto (anonymous, no persistence) on the same workload as the
//! reference, measured in the same run:
//!
//! - **(a) QoS 1 fan-in**: [`PUBLISHERS`] MQTT 3.1.1 connections publishing 64-byte payloads at
//!   QoS 1 to one topic, each with up to [`WINDOW`] unacknowledged, so as fast as PUBACKs come
//!   back; mosquitto, then the gateway, in each round. The gateway acknowledges a QoS 1 PUBLISH
//!   only once Kafka has (leader acks). Afterwards the messages topic must hold exactly as
//!   many records as the gateway acknowledged messages (no publisher resends, so fewer is
//!   loss and more a message written twice), counted from its offsets. Last in each round,
//!   librdkafka (the peers' confluent-kafka) writes the records the gateway writes (key and
//!   `zilla:*` headers) straight to the broker with as many in flight, to a topic of its own:
//!   what the broker takes from a native producer, the ceiling behind the gateway.
//! - **(b) QoS 0 fan-out**: `--clients` subscribers (default [`SUBSCRIBERS`]) to each target
//!   at QoS 0, and one publisher sending a burst of QoS 0 messages as fast as its socket takes
//!   them; deliveries/s run from the first publish to the last delivery. Through the gateway
//!   the path is MQTT publish → Kafka produce → one cached fetch → every subscriber.
//! - **(c) QoS 2 across a broker restart**: the soak's paho-mqtt clients ([`MqttLoad`]), QoS 2
//!   publishers and QoS 2 subscribers with persistent sessions, against one gateway while
//!   tansu is killed and started again on the same data; the messages topic is read back and
//!   an acknowledged message missing, one written twice or one a QoS 2 subscriber received
//!   twice fails the run.
//!
//! The load clients (a, b) run in an optimised build of this xtask on two tokio threads and
//! speak MQTT with the gateway's own codec ([`super::mqtt_client`]).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use tokio::runtime::Runtime;
use zilla_binding_kafka::wire::{Isolation, OffsetSpec};
use zilla_binding_mqtt::codec::{Packet, QoS};
use zilla_tests::{Broker, Gateway, GatewayBuilder, Process, workspace_dir};

use super::kafka_produce::{Mode, NativeRecords, Produce, run_native};
use super::mqtt_client::Connection;
use super::optimized::rerun_optimized;
use super::options::Options;
use super::soak::check::read_back;
use super::soak::mqtt::{MESSAGES_TOPIC, MqttComparison, MqttLoad, MqttPlan, TOPICS};
use super::usage::{Usage, load_average, ticks_per_second};
use super::{Spread, commit, record, stop_gateway, today, zilla_binary};

const EXAMPLE: &str = "examples/mqtt.kafka.proxy";
/// The example's tcp server, where MQTT clients connect.
pub(super) const LISTENER: &str = "north_tcp_server";
/// QoS 1 publishers of the fan-in.
const PUBLISHERS: usize = 32;
/// Unacknowledged QoS 1 messages per publisher (the gateway sends up to 64 of a session to
/// Kafka at once; mosquitto takes any number from a 3.1.1 client).
const WINDOW: usize = 16;
const PAYLOAD_LENGTH: usize = 64;
const FAN_IN_TOPIC: &str = "bench/in";
const FAN_OUT_TOPIC: &str = "bench/out";
const SUBSCRIBERS: usize = 1000;
const DEFAULT_ROUNDS: usize = 3;
const DEFAULT_RUN: Duration = Duration::from_secs(8);
const WARM_UP: Duration = Duration::from_secs(2);
/// Messages in each fan-out burst (each to every subscriber).
const BURST: u64 = 1000;
const QUICK_BURST: u64 = 200;
/// Messages written to the socket at once in a burst.
const BURST_BATCH: u64 = 100;
/// A fan-out round ends when every delivery has arrived, or none has for this long...
const DRAIN_QUIET: Duration = Duration::from_secs(3);
/// ...or after this long.
const DRAIN_MAX: Duration = Duration::from_secs(120);
/// A PUBACK not there after this long fails the fan-in.
const ACK_TIMEOUT: Duration = Duration::from_secs(60);
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(120);
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(60);
const WARM_UP_INTERVAL: Duration = Duration::from_millis(100);
/// Connects in flight at once when subscribers connect.
const CONNECTS_AT_ONCE: usize = 100;
/// tansu answers a fetch parked at the log end only when its max-wait passes.
const FETCH_MAX_WAIT_MILLIS: &str = "10";
/// (c): QoS 2 messages per second over its publishers, seconds of load, and when tansu is
/// restarted (as a share of the load).
const EXACTLY_ONCE_RATE: u64 = 20;
const EXACTLY_ONCE_LOAD: Duration = Duration::from_secs(30);
const EXACTLY_ONCE_QUICK_LOAD: Duration = Duration::from_secs(12);
const RESTART_AT: f64 = 0.3;
/// File descriptors this process keeps beyond one per subscriber.
const SPARE_FDS: u64 = 512;

/// Runs S6 and records its figures (unless `--quick`).
pub fn run(options: &Options) -> Result<()> {
    if rerun_optimized()? {
        return Ok(());
    }
    let quick = options.quick;
    let rounds = options
        .rounds
        .unwrap_or(if quick { 1 } else { DEFAULT_ROUNDS })
        .max(1);
    let duration = options
        .seconds
        .map_or(
            if quick {
                Duration::from_secs(3)
            } else {
                DEFAULT_RUN
            },
            Duration::from_secs,
        )
        .max(Duration::from_secs(1));
    let subscribers = options.clients.unwrap_or(SUBSCRIBERS).max(1);
    let burst = if quick { QUICK_BURST } else { BURST };
    // Subscribers to both targets at once.
    let needed = 2 * subscribers as u64 + SPARE_FDS;
    let limit =
        rlimit::increase_nofile_limit(u64::MAX).context("cannot raise the open-files limit")?;
    if limit < needed {
        bail!(
            "{subscribers} subscribers per target need {needed} open files; the limit is {limit}"
        );
    }
    let binary = zilla_binary(options)?;
    let load_before = load_average();
    let runtime = super::load_runtime()?;

    let dir = super::bench_dir("zilla-bench-mqtt-")?;
    let (mosquitto, mosquitto_port) = zilla_tests::mosquitto(dir.path())?;
    let mosquitto = Target {
        name: "mosquitto",
        address: SocketAddr::from((Ipv4Addr::LOCALHOST, mosquitto_port)),
        pid: mosquitto.pid(),
        _process: Some(mosquitto),
    };
    let ticks = ticks_per_second();

    // (a) and (b) each on a fresh broker: tansu reads a topic of records with headers (as
    // the gateway writes them) the slower the more it holds, so (b) must not follow (a)'s.
    let broker = start_broker()?;
    let mut gateway = start_gateway(&binary, &broker, FETCH_MAX_WAIT_MILLIS)?;
    broker.create_topic(NATIVE_TOPIC, 1, false)?;
    let fan_in = fan_in(
        &runtime,
        [&mosquitto, &Target::gateway(&gateway)],
        &broker,
        ticks,
        rounds,
        duration,
    )?;
    stop_gateway(&mut gateway)?;
    let written = runtime.block_on(records_in(&broker.address(), MESSAGES_TOPIC))?;
    drop(broker);
    // No publisher resends (each waits for its PUBACKs on one connection, and any failure
    // fails the run), so the topic must hold exactly what the gateway acknowledged: fewer is
    // loss, more is a message written twice.
    let acked_missing = fan_in.gateway_acked.saturating_sub(written);
    let written_twice = written.saturating_sub(fan_in.gateway_acked);
    let broker = start_broker()?;
    let mut gateway = start_gateway(&binary, &broker, FETCH_MAX_WAIT_MILLIS)?;
    let fan_out = fan_out(
        &runtime,
        [&mosquitto, &Target::gateway(&gateway)],
        ticks,
        rounds,
        subscribers,
        burst,
    )?;
    stop_gateway(&mut gateway)?;
    drop(broker);
    drop(mosquitto);
    let exactly_once = exactly_once(&binary, quick)?;

    let figures = Figures {
        rounds,
        duration,
        subscribers,
        burst,
        fan_in,
        written,
        acked_missing,
        written_twice,
        fan_out,
        exactly_once,
        load: (load_before, load_average()),
    };
    println!("{}", figures.summary());
    if quick {
        println!("--quick: figures printed, not recorded");
    } else {
        record("mqtt-kafka", &figures.table())?;
    }
    let mut broken = figures.exactly_once.comparison.broken();
    if acked_missing > 0 {
        broken.push(format!(
            "{acked_missing} QoS 1 messages the gateway acknowledged are not in the topic"
        ));
    }
    if written_twice > 0 {
        broken.push(format!(
            "the topic holds {written_twice} more records than the gateway acknowledged QoS 1 messages"
        ));
    }
    if !broken.is_empty() {
        bail!("{}", broken.join("; "));
    }
    Ok(())
}

/// The records partition 0 of `topic` holds: its end offset less its start offset, from
/// ListOffsets with our own Kafka client. (Reading back the records themselves is no option
/// on tansu: a fetch of a few thousand records with headers takes it over a minute.)
async fn records_in(bootstrap: &str, topic: &str) -> Result<u64> {
    let cluster = super::tansu::cluster(bootstrap)?;
    let mut offsets = [0i64; 2];
    for (offset, spec) in offsets
        .iter_mut()
        .zip([OffsetSpec::Earliest, OffsetSpec::Latest])
    {
        *offset = cluster
            .list_offsets(topic, 0, spec, Isolation::ReadUncommitted)
            .await?
            .offset;
    }
    Ok(u64::try_from(offsets[1] - offsets[0]).unwrap_or(0))
}

/// tansu with the topics the example needs (one partition each).
pub(super) fn start_broker() -> Result<Broker> {
    start_broker_maintained_every(Duration::from_secs(2))
}

/// [`start_broker`] with tansu's compaction and retention pass every `interval`: a pass sorts
/// every record of a compacted topic, so with the tens of thousands of records that S5's
/// connections write to `mqtt-sessions` each pass holds the broker up longer.
///
/// The broker's header table is indexed ([`Broker::index_headers`]), as the soak does: without
/// the index tansu 0.6.0 reads every header row stored for each record it fetches, and the
/// gateway's reads of `mqtt-sessions` (every record there has headers) and its fetches parked
/// at each log end then cost the broker more with every record written.
pub(super) fn start_broker_maintained_every(interval: Duration) -> Result<Broker> {
    let broker = Broker::start_maintained_every(interval)?;
    for (topic, compacted) in TOPICS {
        broker.create_topic(topic, 1, compacted)?;
    }
    broker.index_headers()?;
    Ok(broker)
}

/// The gateway on the example, its MQTT listener on a free port.
pub(super) fn start_gateway(
    binary: &std::path::Path,
    broker: &Broker,
    fetch_max_wait_millis: &str,
) -> Result<Gateway> {
    gateway_builder(binary, broker, fetch_max_wait_millis).start()
}

/// [`start_gateway`], to be started.
pub(super) fn gateway_builder(
    binary: &std::path::Path,
    broker: &Broker,
    fetch_max_wait_millis: &str,
) -> GatewayBuilder {
    Gateway::from_file(workspace_dir().join(EXAMPLE).join("zilla.yaml"))
        .binary(binary)
        .env("MQTT_PORT", "0")
        .env("KAFKA_BOOTSTRAP_SERVER", broker.address())
        .property(
            "zilla.binding.kafka.client.fetch.max.wait.millis",
            fetch_max_wait_millis,
        )
}

/// An MQTT server measured: mosquitto or the gateway.
struct Target {
    name: &'static str,
    address: SocketAddr,
    pid: u32,
    /// mosquitto's process, stopped when the target is dropped.
    _process: Option<Process>,
}

impl Target {
    fn gateway(gateway: &Gateway) -> Self {
        Self {
            name: "gateway",
            address: gateway.address(LISTENER),
            pid: gateway.pid(),
            _process: None,
        }
    }
}

/// `<id>` padded with `.` to [`PAYLOAD_LENGTH`] bytes.
fn payload(id: &str) -> Bytes {
    let mut payload = String::with_capacity(PAYLOAD_LENGTH);
    payload.push_str(id);
    while payload.len() < PAYLOAD_LENGTH {
        payload.push('.');
    }
    Bytes::from(payload)
}

/// The id a [`payload`] carries.
fn payload_id(value: &str) -> Option<&str> {
    let id = value.trim_end_matches('.');
    (!id.is_empty()).then_some(id)
}

/// One fan-in run of one target.
struct FanInRun {
    acked: u64,
    rate: f64,
    cpu: Usage,
    broker_cpu: Usage,
}

/// (a) over the rounds.
struct FanIn {
    mosquitto: Spread,
    gateway: Spread,
    ratio: Spread,
    /// The same records from librdkafka straight to the broker: what the broker takes.
    native: Spread,
    gateway_to_native: Spread,
    /// The broker's CPU per record of the native producer, µs.
    broker_cpu_per_native_record: Spread,
    /// CPU time per acknowledged message, µs.
    mosquitto_cpu_per_message: Spread,
    gateway_cpu_per_message: Spread,
    broker_cpu_per_message: Spread,
    /// PUBACKs the gateway sent, warm-up included.
    gateway_acked: u64,
}

/// Where the native producer of (a) writes: a topic of its own, so that the messages topic
/// holds only what the gateway wrote.
const NATIVE_TOPIC: &str = "bench-native";
/// The records the gateway writes for a 3.1.1 QoS 1 PUBLISH to [`FAN_IN_TOPIC`]: its topic as
/// the key, a `zilla:filter` per level, the publisher's client identifier, the QoS.
const NATIVE_RECORDS: NativeRecords<'static> = NativeRecords {
    topic: NATIVE_TOPIC,
    key: Some(FAN_IN_TOPIC),
    headers: &[
        ("zilla:filter", "bench"),
        ("zilla:filter", "in"),
        ("zilla:local", "bench-pub-1-0"),
        ("zilla:qos", "1"),
    ],
};

/// One run of the native producer: its rate and the broker's CPU per record.
fn native_run(broker: &Broker, ticks: u64, duration: Duration) -> Result<(f64, f64)> {
    let before = Usage::of(broker.pid(), false, ticks)?;
    let report = run_native(
        &broker.address(),
        &NATIVE_RECORDS,
        &payload("native"),
        Mode::Throughput,
        PUBLISHERS * WINDOW,
        duration,
        Produce::Plain,
    )?;
    let broker_cpu = Usage::of(broker.pid(), false, ticks)?.since(&before);
    Ok((
        report.in_time as f64 / report.seconds,
        per_message(&broker_cpu, report.acknowledged),
    ))
}

fn fan_in(
    runtime: &Runtime,
    targets: [&Target; 2],
    broker: &Broker,
    ticks: u64,
    rounds: usize,
    duration: Duration,
) -> Result<FanIn> {
    println!(
        "S6 (a): {PUBLISHERS} publishers, QoS 1, {PAYLOAD_LENGTH} B, {WINDOW} unacknowledged each, {} s per run, mosquitto, the gateway, then the same records from librdkafka straight to tansu ({} in flight), {rounds} rounds after a warm-up",
        duration.as_secs(),
        PUBLISHERS * WINDOW
    );
    let broker_pid = broker.pid();
    let mut run_id = 0;
    let mut next_run = || {
        run_id += 1;
        run_id
    };
    let mut gateway_acked = 0;
    for target in targets {
        let run = fan_in_run(runtime, target, broker_pid, ticks, next_run(), WARM_UP)
            .with_context(|| format!("warm-up of {}", target.name))?;
        if target.name == "gateway" {
            gateway_acked += run.acked;
        }
    }
    native_run(broker, ticks, WARM_UP).context("warm-up of the native producer")?;
    let mut runs = Vec::with_capacity(rounds);
    let mut natives = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let [mosquitto, gateway] = targets.map(|target| {
            fan_in_run(runtime, target, broker_pid, ticks, next_run(), duration)
                .with_context(|| format!("round {round}, {}", target.name))
        });
        let (mosquitto, gateway) = (mosquitto?, gateway?);
        let native = native_run(broker, ticks, duration)
            .with_context(|| format!("round {round}, the native producer"))?;
        println!(
            "  round {round}: mosquitto {:.0} msg/s ({:.1} µs CPU/msg), gateway {:.0} msg/s ({:.1} µs CPU/msg, tansu {:.1}), native {:.0} records/s (tansu {:.1} µs/record)",
            mosquitto.rate,
            per_message(&mosquitto.cpu, mosquitto.acked),
            gateway.rate,
            per_message(&gateway.cpu, gateway.acked),
            per_message(&gateway.broker_cpu, gateway.acked),
            native.0,
            native.1,
        );
        gateway_acked += gateway.acked;
        natives.push((native, gateway.rate));
        runs.push((mosquitto, gateway));
    }
    let spread = |figure: &dyn Fn(&FanInRun, &FanInRun) -> f64| {
        Spread::of(&runs.iter().map(|(m, g)| figure(m, g)).collect::<Vec<_>>())
    };
    let native_spread = |figure: &dyn Fn((f64, f64), f64) -> f64| {
        Spread::of(
            &natives
                .iter()
                .map(|&(native, gateway)| figure(native, gateway))
                .collect::<Vec<_>>(),
        )
    };
    Ok(FanIn {
        mosquitto: spread(&|m, _| m.rate),
        gateway: spread(&|_, g| g.rate),
        ratio: spread(&|m, g| g.rate / m.rate),
        native: native_spread(&|(rate, _), _| rate),
        gateway_to_native: native_spread(&|(rate, _), gateway| gateway / rate),
        broker_cpu_per_native_record: native_spread(&|(_, cpu), _| cpu),
        mosquitto_cpu_per_message: spread(&|m, _| per_message(&m.cpu, m.acked)),
        gateway_cpu_per_message: spread(&|_, g| per_message(&g.cpu, g.acked)),
        broker_cpu_per_message: spread(&|_, g| per_message(&g.broker_cpu, g.acked)),
        gateway_acked,
    })
}

/// CPU time per message in µs.
fn per_message(usage: &Usage, messages: u64) -> f64 {
    usage.total().as_secs_f64() * 1e6 / messages.max(1) as f64
}

fn fan_in_run(
    runtime: &Runtime,
    target: &Target,
    broker_pid: u32,
    ticks: u64,
    run_id: usize,
    duration: Duration,
) -> Result<FanInRun> {
    let connections = runtime.block_on(async {
        let mut connections = Vec::with_capacity(PUBLISHERS);
        for index in 0..PUBLISHERS {
            let client_id = format!("bench-pub-{run_id}-{index}");
            connections.push(Connection::connect(target.address, None, &client_id, 0).await?);
        }
        anyhow::Ok(connections)
    })?;
    let cpu_before = Usage::of(target.pid, false, ticks)?;
    let broker_before = Usage::of(broker_pid, false, ticks)?;
    let started = Instant::now();
    let until = started + duration;
    let acked = runtime.block_on(async {
        let tasks: Vec<_> = connections
            .into_iter()
            .enumerate()
            .map(|(index, connection)| {
                let prefix = format!("r{run_id}p{index}s");
                tokio::spawn(publish_qos1(connection, prefix, until))
            })
            .collect();
        let mut acked = 0;
        for task in tasks {
            acked += task.await.context("a publisher panicked")??;
        }
        anyhow::Ok(acked)
    })?;
    let wall = started.elapsed();
    let cpu = Usage::of(target.pid, false, ticks)?.since(&cpu_before);
    let broker_cpu = Usage::of(broker_pid, false, ticks)?.since(&broker_before);
    Ok(FanInRun {
        acked,
        rate: acked as f64 / wall.as_secs_f64(),
        cpu,
        broker_cpu,
    })
}

/// Publishes `<prefix><n>` at QoS 1 until `until`, keeping [`WINDOW`] unacknowledged, then
/// waits for the last acknowledgements; how many were acknowledged.
async fn publish_qos1(mut connection: Connection, prefix: String, until: Instant) -> Result<u64> {
    // Packet ids 1..=WINDOW, reused once acknowledged: slot `id - 1` holds the message.
    let mut in_flight: Vec<Option<u64>> = vec![None; WINDOW];
    let mut unacked = 0usize;
    let mut next = 0u64;
    let mut acked = 0;
    loop {
        if Instant::now() < until {
            for (slot, message) in in_flight.iter_mut().enumerate() {
                if message.is_none() {
                    let packet_id = u16::try_from(slot + 1)?;
                    connection.queue_publish(
                        FAN_IN_TOPIC,
                        QoS::AtLeastOnce,
                        Some(packet_id),
                        payload(&format!("{prefix}{next}")),
                    )?;
                    *message = Some(next);
                    next += 1;
                    unacked += 1;
                }
            }
            connection.flush().await?;
        }
        if unacked == 0 {
            return Ok(acked);
        }
        let mut packet = Some(
            tokio::time::timeout(ACK_TIMEOUT, connection.receive())
                .await
                .with_context(|| format!("no PUBACK within {ACK_TIMEOUT:?}"))??,
        );
        while let Some(received) = packet {
            match received {
                Packet::PubAck(ack) => {
                    let slot = usize::from(ack.packet_id)
                        .checked_sub(1)
                        .and_then(|slot| in_flight.get_mut(slot))
                        .with_context(|| format!("PUBACK of unknown id {}", ack.packet_id))?;
                    slot.take()
                        .with_context(|| format!("PUBACK of id {} twice", ack.packet_id))?;
                    acked += 1;
                    unacked -= 1;
                }
                other => bail!("expected PUBACK, got {other:?}"),
            }
            packet = connection.buffered()?;
        }
    }
}

/// What the subscribers of one target share.
struct FanOutShared {
    /// The measured burst's number: deliveries of other bursts are not counted.
    burst: AtomicU64,
    subscribed: AtomicUsize,
    /// Subscribers that have received a warm-up message.
    warmed: AtomicUsize,
    delivered: AtomicU64,
    /// The last measured delivery, in ns since `epoch`.
    last_delivery: AtomicU64,
    epoch: Instant,
}

/// One fan-out burst.
struct FanOutRun {
    delivered: u64,
    expected: u64,
    rate: f64,
    cpu: Usage,
}

/// (b) over the rounds.
struct FanOut {
    mosquitto: Spread,
    gateway: Spread,
    ratio: Spread,
    /// delivered ÷ expected, lowest over the rounds.
    mosquitto_delivered: f64,
    gateway_delivered: f64,
    mosquitto_cpu_per_delivery: Spread,
    gateway_cpu_per_delivery: Spread,
}

fn fan_out(
    runtime: &Runtime,
    targets: [&Target; 2],
    ticks: u64,
    rounds: usize,
    subscribers: usize,
    burst: u64,
) -> Result<FanOut> {
    println!(
        "S6 (b): {subscribers} QoS 0 subscribers per target, bursts of {burst} QoS 0 messages of {PAYLOAD_LENGTH} B, mosquitto then the gateway, {rounds} rounds"
    );
    let mut tasks = Vec::new();
    let mut shared = Vec::new();
    for target in targets {
        let state = Arc::new(FanOutShared {
            burst: AtomicU64::new(0),
            subscribed: AtomicUsize::new(0),
            warmed: AtomicUsize::new(0),
            delivered: AtomicU64::new(0),
            last_delivery: AtomicU64::new(0),
            epoch: Instant::now(),
        });
        let started = Instant::now();
        let permits = Arc::new(tokio::sync::Semaphore::new(CONNECTS_AT_ONCE));
        for index in 0..subscribers {
            let client_id = format!("bench-sub-{}-{index}", target.name);
            tasks.push(runtime.spawn(subscriber(
                target.address,
                client_id,
                state.clone(),
                permits.clone(),
            )));
        }
        wait_for(&state.subscribed, subscribers, SUBSCRIBE_TIMEOUT, || {
            failed(&tasks)
        })
        .with_context(|| format!("subscribing to {}", target.name))?;
        println!(
            "  {subscribers} subscribed to {} in {:.1} s",
            target.name,
            started.elapsed().as_secs_f64()
        );
        // Live once each has received a message published after it subscribed.
        let warming = Instant::now();
        let mut publisher = runtime.block_on(Connection::connect(
            target.address,
            None,
            &format!("bench-warm-{}", target.name),
            0,
        ))?;
        let mut sent = 0u64;
        while state.warmed.load(Ordering::Relaxed) < subscribers {
            if warming.elapsed() > WARM_UP_TIMEOUT {
                bail!(
                    "only {} of {subscribers} subscribers to {} received a warm-up message within {WARM_UP_TIMEOUT:?}",
                    state.warmed.load(Ordering::Relaxed),
                    target.name
                );
            }
            runtime.block_on(async {
                publisher.queue_publish(
                    FAN_OUT_TOPIC,
                    QoS::AtMostOnce,
                    None,
                    payload(&format!("w{sent}")),
                )?;
                publisher.flush().await
            })?;
            sent += 1;
            std::thread::sleep(WARM_UP_INTERVAL);
        }
        shared.push(state);
    }

    let mut runs = Vec::with_capacity(rounds);
    let mut burst_id = 0;
    for round in 1..=rounds {
        let mut pair = Vec::with_capacity(2);
        for (target, state) in targets.into_iter().zip(&shared) {
            burst_id += 1;
            let run = fan_out_run(runtime, target, state, ticks, burst_id, burst, subscribers)
                .with_context(|| format!("round {round}, {}", target.name))?;
            pair.push(run);
        }
        if let [mosquitto, gateway] = &pair[..] {
            println!(
                "  round {round}: mosquitto {:.0} deliveries/s ({} of {}), gateway {:.0} deliveries/s ({} of {}, {:.2} µs CPU each)",
                mosquitto.rate,
                mosquitto.delivered,
                mosquitto.expected,
                gateway.rate,
                gateway.delivered,
                gateway.expected,
                per_message(&gateway.cpu, gateway.delivered)
            );
        }
        runs.push(pair);
    }
    for task in &tasks {
        task.abort();
    }
    let spread = |target: usize, figure: &dyn Fn(&FanOutRun) -> f64| {
        Spread::of(
            &runs
                .iter()
                .filter_map(|pair| pair.get(target).map(figure))
                .collect::<Vec<_>>(),
        )
    };
    let ratios: Vec<f64> = runs
        .iter()
        .filter_map(|pair| match &pair[..] {
            [mosquitto, gateway] => Some(gateway.rate / mosquitto.rate),
            _ => None,
        })
        .collect();
    let share = |run: &FanOutRun| run.delivered as f64 / run.expected.max(1) as f64;
    Ok(FanOut {
        mosquitto: spread(0, &|run| run.rate),
        gateway: spread(1, &|run| run.rate),
        ratio: Spread::of(&ratios),
        mosquitto_delivered: spread(0, &share).min,
        gateway_delivered: spread(1, &share).min,
        mosquitto_cpu_per_delivery: spread(0, &|run| per_message(&run.cpu, run.delivered)),
        gateway_cpu_per_delivery: spread(1, &|run| per_message(&run.cpu, run.delivered)),
    })
}

/// Whether a subscriber task has ended (with an error: they run until aborted).
fn failed(tasks: &[tokio::task::JoinHandle<Result<()>>]) -> bool {
    tasks.iter().any(|task| task.is_finished())
}

/// Waits until `counter` reaches `count`; an error past `timeout` or once `failed`.
fn wait_for(
    counter: &AtomicUsize,
    count: usize,
    timeout: Duration,
    failed: impl Fn() -> bool,
) -> Result<()> {
    let started = Instant::now();
    while counter.load(Ordering::Relaxed) < count {
        if failed() {
            bail!(
                "a subscriber failed ({} of {count} subscribed)",
                counter.load(Ordering::Relaxed)
            );
        }
        if started.elapsed() > timeout {
            bail!(
                "only {} of {count} within {timeout:?}",
                counter.load(Ordering::Relaxed)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// One QoS 0 subscriber: counts the measured burst's messages until aborted.
async fn subscriber(
    server: SocketAddr,
    client_id: String,
    shared: Arc<FanOutShared>,
    permits: Arc<tokio::sync::Semaphore>,
) -> Result<()> {
    let mut connection = {
        let _permit = permits.acquire().await?;
        let mut connection = Connection::connect(server, None, &client_id, 0).await?;
        connection.subscribe(FAN_OUT_TOPIC, QoS::AtMostOnce).await?;
        connection
    };
    shared.subscribed.fetch_add(1, Ordering::Relaxed);
    let mut warm = false;
    loop {
        let Packet::Publish(publish) = connection.receive().await? else {
            continue;
        };
        let id = std::str::from_utf8(&publish.payload)
            .ok()
            .and_then(payload_id)
            .unwrap_or_default();
        if let Some(burst) = id.strip_prefix('b').and_then(|rest| rest.split_once('-')) {
            if burst.0.parse::<u64>().ok() == Some(shared.burst.load(Ordering::Relaxed)) {
                shared.delivered.fetch_add(1, Ordering::Relaxed);
                let at = u64::try_from(shared.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
                shared.last_delivery.fetch_max(at, Ordering::Relaxed);
            }
        } else if id.starts_with('w') && !warm {
            warm = true;
            shared.warmed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn fan_out_run(
    runtime: &Runtime,
    target: &Target,
    shared: &FanOutShared,
    ticks: u64,
    burst_id: u64,
    burst: u64,
    subscribers: usize,
) -> Result<FanOutRun> {
    shared.delivered.store(0, Ordering::Relaxed);
    shared.last_delivery.store(0, Ordering::Relaxed);
    shared.burst.store(burst_id, Ordering::Relaxed);
    let mut publisher = runtime.block_on(Connection::connect(
        target.address,
        None,
        &format!("bench-fan-out-{burst_id}"),
        0,
    ))?;
    let expected = burst * subscribers as u64;
    let cpu_before = Usage::of(target.pid, false, ticks)?;
    let started = Instant::now();
    runtime.block_on(async {
        let mut sent = 0;
        while sent < burst {
            let batch_end = (sent + BURST_BATCH).min(burst);
            for n in sent..batch_end {
                publisher.queue_publish(
                    FAN_OUT_TOPIC,
                    QoS::AtMostOnce,
                    None,
                    payload(&format!("b{burst_id}-{n}")),
                )?;
            }
            publisher.flush().await?;
            sent = batch_end;
        }
        anyhow::Ok(())
    })?;
    let mut last_count = 0;
    let mut quiet_since = Instant::now();
    loop {
        let delivered = shared.delivered.load(Ordering::Relaxed);
        if delivered >= expected
            || quiet_since.elapsed() > DRAIN_QUIET
            || started.elapsed() > DRAIN_MAX
        {
            break;
        }
        if delivered != last_count {
            last_count = delivered;
            quiet_since = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let cpu = Usage::of(target.pid, false, ticks)?.since(&cpu_before);
    let delivered = shared.delivered.load(Ordering::Relaxed);
    let start = started.duration_since(shared.epoch).as_nanos() as f64;
    let span = (shared.last_delivery.load(Ordering::Relaxed) as f64 - start).max(1.0) / 1e9;
    Ok(FanOutRun {
        delivered,
        expected,
        rate: delivered as f64 / span,
        cpu,
    })
}

/// (c) and how it went.
struct ExactlyOnce {
    comparison: MqttComparison,
    load: Duration,
    restart_at: Duration,
    restart_took: Duration,
}

fn exactly_once(binary: &std::path::Path, quick: bool) -> Result<ExactlyOnce> {
    let load = if quick {
        EXACTLY_ONCE_QUICK_LOAD
    } else {
        EXACTLY_ONCE_LOAD
    };
    let plan = MqttPlan {
        qos1_publishers: 0,
        qos2_publishers: 2,
        qos1_subscribers: 0,
        qos2_subscribers: 2,
        rate: EXACTLY_ONCE_RATE,
    };
    println!(
        "S6 (c): {} QoS 2 publishers ({EXACTLY_ONCE_RATE} msg/s in all) and {} QoS 2 subscribers (paho-mqtt, persistent sessions) for {} s, tansu restarted {:.0} s in",
        plan.qos2_publishers,
        plan.qos2_subscribers,
        load.as_secs(),
        load.as_secs_f64() * RESTART_AT
    );
    let mut broker = start_broker()?;
    // As in the soak: a restart under load needs the broker found again quickly.
    let mut gateway = start_gateway(binary, &broker, "50")?;
    let clients = MqttLoad::start(gateway.address(LISTENER), &plan, load)?;
    clients.go()?;
    let restart_at = load.mul_f64(RESTART_AT);
    std::thread::sleep(restart_at);
    let restarting = Instant::now();
    broker.restart()?;
    let restart_took = restarting.elapsed();
    let outcome = clients.finish()?;
    let values = read_back(&broker, MESSAGES_TOPIC)?;
    stop_gateway(&mut gateway)?;
    let comparison = MqttComparison::new(&values, &outcome);
    println!("  {}", comparison.summary());
    Ok(ExactlyOnce {
        comparison,
        load,
        restart_at,
        restart_took,
    })
}

/// Everything S6 measured.
struct Figures {
    rounds: usize,
    duration: Duration,
    subscribers: usize,
    burst: u64,
    fan_in: FanIn,
    /// Records in the messages topic after the fan-in.
    written: u64,
    acked_missing: u64,
    written_twice: u64,
    fan_out: FanOut,
    exactly_once: ExactlyOnce,
    load: (Option<f64>, Option<f64>),
}

fn range(spread: &Spread, decimals: usize) -> String {
    format!(
        "{:.*} ({:.*} to {:.*})",
        decimals, spread.median, decimals, spread.min, decimals, spread.max
    )
}

fn load_average_text(load: Option<f64>) -> String {
    load.map_or_else(|| "?".to_owned(), |load| format!("{load:.1}"))
}

impl Figures {
    fn summary(&self) -> String {
        let c = &self.exactly_once.comparison;
        format!(
            "S6 mqtt-kafka: (a) QoS 1 fan-in {:.0} msg/s gateway, {:.0} mosquitto, ratio {:.3}; CPU {:.1} µs/msg gateway (+ {:.1} tansu), {:.1} mosquitto; {} records in the topic for {} acknowledged; the same records from librdkafka {:.0}/s (tansu {:.1} µs each), gateway ÷ native {:.3}. \
             (b) QoS 0 fan-out to {}: {:.0} deliveries/s gateway, {:.0} mosquitto, ratio {:.3}; delivered ÷ expected {:.4} gateway, {:.4} mosquitto. \
             (c) QoS 2 across a tansu restart: {} of {} acknowledged, {} missing, {} written twice, {} delivered twice",
            self.fan_in.gateway.median,
            self.fan_in.mosquitto.median,
            self.fan_in.ratio.median,
            self.fan_in.gateway_cpu_per_message.median,
            self.fan_in.broker_cpu_per_message.median,
            self.fan_in.mosquitto_cpu_per_message.median,
            self.written,
            self.fan_in.gateway_acked,
            self.fan_in.native.median,
            self.fan_in.broker_cpu_per_native_record.median,
            self.fan_in.gateway_to_native.median,
            self.subscribers,
            self.fan_out.gateway.median,
            self.fan_out.mosquitto.median,
            self.fan_out.ratio.median,
            self.fan_out.gateway_delivered,
            self.fan_out.mosquitto_delivered,
            c.acknowledged,
            c.published,
            c.acknowledged_missing,
            c.qos2_written_again,
            c.qos2_duplicates,
        )
    }

    fn table(&self) -> String {
        let a = &self.fan_in;
        let b = &self.fan_out;
        let c = &self.exactly_once.comparison;
        let date = today();
        let commit = commit();
        format!(
            "| date | commit | part | gateway | mosquitto | gateway ÷ mosquitto | gateway CPU | mosquitto CPU | check |\n\
             |---|---|---|---|---|---|---|---|---|\n\
             | {date} | {commit} | (a) QoS 1 fan-in, msg/s | {} | {} | {} | {:.1} µs/msg (+ tansu {:.1}) | {:.1} µs/msg | {} records in Kafka for {} acknowledged (warm-up included): {} missing, {} extra |\n\
             | {date} | {commit} | (a) the same records from librdkafka straight to tansu, records/s | {} | | gateway ÷ native {} | | | tansu {:.1} µs per record ({:.1} per gateway message) |\n\
             | {date} | {commit} | (b) QoS 0 fan-out 1 → {}, deliveries/s | {} | {} | {} | {:.2} µs/delivery | {:.2} µs/delivery | delivered ÷ expected, lowest round: gateway {:.4}, mosquitto {:.4} |\n\
             | {date} | {commit} | (c) QoS 2 across a tansu restart | {} of {} acknowledged | | | | | {} missing, {} written twice, {} received twice by {} QoS 2 subscribers ({} missed) |\n\
             \n\
             Median (min to max) of {} rounds; (a) {} publishers × {} in flight, {} s per run; (b) bursts of {} messages; \
             (c) {} s at {} msg/s, tansu restarted {:.0} s in (took {:.1} s). 1-minute load average {} before, {} after.\n",
            range(&a.gateway, 0),
            range(&a.mosquitto, 0),
            range(&a.ratio, 3),
            a.gateway_cpu_per_message.median,
            a.broker_cpu_per_message.median,
            a.mosquitto_cpu_per_message.median,
            self.written,
            a.gateway_acked,
            self.acked_missing,
            self.written_twice,
            range(&a.native, 0),
            range(&a.gateway_to_native, 3),
            a.broker_cpu_per_native_record.median,
            a.broker_cpu_per_message.median,
            self.subscribers,
            range(&b.gateway, 0),
            range(&b.mosquitto, 0),
            range(&b.ratio, 3),
            b.gateway_cpu_per_delivery.median,
            b.mosquitto_cpu_per_delivery.median,
            b.gateway_delivered,
            b.mosquitto_delivered,
            c.acknowledged,
            c.published,
            c.acknowledged_missing,
            c.qos2_written_again,
            c.qos2_duplicates,
            c.subscribers,
            c.missed,
            self.rounds,
            PUBLISHERS,
            WINDOW,
            self.duration.as_secs(),
            self.burst,
            self.exactly_once.load.as_secs(),
            EXACTLY_ONCE_RATE,
            self.exactly_once.restart_at.as_secs_f64(),
            self.exactly_once.restart_took.as_secs_f64(),
            load_average_text(self.load.0),
            load_average_text(self.load.1),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_padded_and_their_ids_read_back() {
        let value = payload("r3p7s12");
        assert_eq!(value.len(), PAYLOAD_LENGTH);
        let text = std::str::from_utf8(&value).unwrap_or_default();
        assert_eq!(payload_id(text), Some("r3p7s12"));
        assert_eq!(payload_id("...."), None);
    }
}
