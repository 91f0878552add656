//! `cargo xtask bench kafka-proxy`: scenario S8, Kafka clients through the gateway's `kafka`
//! `proxy` against the same clients straight to the broker (a loopback tansu), in the same
//! run.
//!
//! The load client is librdkafka (the peers' Python confluent-kafka, [`LOAD_CLIENT`]):
//!
//! - **produce**: [`RECORDS`] records of [`RECORD_SIZE`] bytes as fast as the producer
//!   takes them (leader acks, `linger.ms` 5), timed until every one is acknowledged;
//! - **consume**: the [`RECORDS`] records of a topic written once before the rounds
//!   ([`CONSUME_TOPIC`]), from offset 0;
//! - **latency**: one record every `1 / LATENCY_RATE` seconds (no batching wait), each
//!   measured from the time it was due until its acknowledgement (no coordinated omission).
//!
//! Each measured round runs each kind of run direct and through the proxy back to back, direct
//! first in odd rounds and the proxy first in even ones, each once the broker has finished
//! the previous run's work ([`settle`]); the figures are the medians over the rounds, with
//! throughput as proxy ÷ direct and the p99 the proxy adds.

use anyhow::{Context, Result, bail};
use zilla_tests::{Gateway, python_json};

use std::time::{Duration, Instant};

use super::options::Options;
use super::tansu::Broker;
use super::usage::{cpu_time, ticks_per_second};
use super::{Spread, commit, record, stop_gateway, today};
use crate::shell::{cargo, run as run_command};

/// What produce and latency runs write to.
const TOPIC: &str = "proxied";
/// What consume runs read: written once, so every consume run reads the same partition.
/// tansu's fetch works through the rest of the partition from the fetched offset on, so a
/// consume of a partition that grows with every produce run gets slower round by round.
const CONSUME_TOPIC: &str = "consumed";
const RECORDS: usize = 200_000;
/// Records per produce and consume run with `--quick`.
const QUICK_RECORDS: usize = 20_000;
const RECORD_SIZE: usize = 100;
const DEFAULT_ROUNDS: usize = 5;
/// Records per second of the latency runs.
const LATENCY_RATE: u32 = 1000;
const DEFAULT_LATENCY_SECONDS: u64 = 10;
/// Ports the gateway gives brokers (tansu has one).
const BROKER_PORTS: u16 = 4;

/// The librdkafka load client: `produce N SIZE`, `consume N`, `latency RATE SECONDS`, each
/// printing one JSON object.
const LOAD_CLIENT: &str = r#"
import json, sys, time
from confluent_kafka import Consumer, Producer, TopicPartition
mode, bootstrap, topic = sys.argv[1:4]
if mode == 'produce':
    count, size = int(sys.argv[4]), int(sys.argv[5])
    producer = Producer({'bootstrap.servers': bootstrap, 'acks': 1, 'linger.ms': 5,
        'queue.buffering.max.messages': 1000000})
    value, outcome = b'x' * size, {'delivered': 0, 'failed': 0}
    def report(error, message):
        outcome['failed' if error else 'delivered'] += 1
    start = time.perf_counter()
    for i in range(count):
        while True:
            try:
                producer.produce(topic, value, partition=0, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.01)
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush(300)
    outcome['seconds'] = time.perf_counter() - start
    print(json.dumps(outcome))
elif mode == 'consume':
    count = int(sys.argv[4])
    consumer = Consumer({'bootstrap.servers': bootstrap, 'group.id': 'bench',
        'enable.auto.commit': False, 'fetch.wait.max.ms': 10})
    consumer.assign([TopicPartition(topic, 0, 0)])
    seen, start = 0, time.perf_counter()
    deadline = start + 300
    while seen < count and time.perf_counter() < deadline:
        seen += sum(1 for m in consumer.consume(10000, 1.0) if not m.error())
    elapsed = time.perf_counter() - start
    consumer.close()
    print(json.dumps({'consumed': seen, 'seconds': elapsed}))
else:
    rate, seconds = float(sys.argv[4]), float(sys.argv[5])
    producer = Producer({'bootstrap.servers': bootstrap, 'acks': 1, 'linger.ms': 0})
    producer.produce(topic, b'warm', partition=0)
    producer.flush(30)
    latencies, failed, interval = [], [0], 1.0 / rate
    start, sent = time.perf_counter(), 0
    while True:
        due = start + sent * interval
        if due > start + seconds:
            break
        while time.perf_counter() < due:
            producer.poll(max(0.0, due - time.perf_counter()))
        def report(error, message, due=due):
            if error:
                failed[0] += 1
            else:
                latencies.append(time.perf_counter() - due)
        producer.produce(topic, b'x' * 100, partition=0, on_delivery=report)
        sent += 1
    producer.flush(60)
    latencies.sort()
    pick = lambda p: latencies[max(0, int(len(latencies) * p / 100.0 + 0.999999) - 1)] * 1e6
    print(json.dumps({'sent': sent, 'failed': failed[0], 'p50_us': pick(50), 'p99_us': pick(99)}))
"#;

/// A broker using less than this share of one core is done with the previous run's work.
const SETTLED_SHARE: f64 = 0.6;
/// Over how long the broker's share is taken.
const SETTLE_WINDOW: Duration = Duration::from_secs(1);
/// The longest wait for the broker to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until the broker has finished the work an earlier run left it: a consumer that
/// closes once it has its records leaves a fetch behind it (tansu answers the first fetch from
/// offset 0 with some 50 000 records and keeps building the next one for seconds), and the
/// next run, whichever target it measures, would meet a busy broker. Settled is a share of
/// one core under [`SETTLED_SHARE`] over [`SETTLE_WINDOW`]: tansu's periodic maintenance
/// keeps it from ever being idle.
fn settle(broker: &Broker) -> Result<()> {
    let ticks = ticks_per_second();
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let before = cpu_time(broker.pid(), ticks)?;
        std::thread::sleep(SETTLE_WINDOW);
        let used = cpu_time(broker.pid(), ticks)?.saturating_sub(before);
        let share = used.as_secs_f64() / SETTLE_WINDOW.as_secs_f64();
        if share < SETTLED_SHARE || Instant::now() >= deadline {
            return Ok(());
        }
    }
}

/// `1 + BROKER_PORTS` consecutive free ports (bootstrap, then brokers); the first.
fn port_block() -> Result<u16> {
    zilla_tests::free_port_block(1 + BROKER_PORTS)
}

/// Records per second of one produce run, checking every record was acknowledged.
fn produce(bootstrap: &str, topic: &str, records: usize) -> Result<f64> {
    let report = python_json(
        LOAD_CLIENT,
        &[
            "produce",
            bootstrap,
            topic,
            &records.to_string(),
            &RECORD_SIZE.to_string(),
        ],
        "",
    )?;
    let number = |key: &str| number(&report, key);
    if number("delivered")? as usize != records {
        bail!("not every record was acknowledged: {report}");
    }
    Ok(records as f64 / number("seconds")?)
}

/// The number `key` of a load client's JSON report.
fn number(report: &serde_json::Value, key: &str) -> Result<f64> {
    report[key]
        .as_f64()
        .with_context(|| format!("no `{key}` in {report}"))
}

/// Records per second of one consume run.
fn consume(bootstrap: &str, records: usize) -> Result<f64> {
    let report = python_json(
        LOAD_CLIENT,
        &["consume", bootstrap, CONSUME_TOPIC, &records.to_string()],
        "",
    )?;
    let number = |key: &str| number(&report, key);
    if (number("consumed")? as usize) < records {
        bail!("not every record was read: {report}");
    }
    Ok(records as f64 / number("seconds")?)
}

/// p50 and p99 in µs of one fixed-rate run.
fn latency(bootstrap: &str, seconds: u64) -> Result<(f64, f64)> {
    let report = python_json(
        LOAD_CLIENT,
        &[
            "latency",
            bootstrap,
            TOPIC,
            &LATENCY_RATE.to_string(),
            &seconds.to_string(),
        ],
        "",
    )?;
    let number = |key: &str| number(&report, key);
    if number("failed")? > 0.0 {
        bail!("records failed: {report}");
    }
    Ok((number("p50_us")?, number("p99_us")?))
}

/// One target's figures, a sample per round.
#[derive(Debug, Default)]
struct Samples {
    produce: Vec<f64>,
    consume: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
}

/// Where a run's client connects.
#[derive(Debug, Clone, Copy)]
enum Target {
    Direct = 0,
    Proxy = 1,
}

/// What a round measures on each target in turn.
#[derive(Debug, Clone, Copy)]
enum Measure {
    Produce,
    Consume,
    Latency,
}

/// Runs S8 and records its figures; with `--quick`, one short round ([`QUICK_RECORDS`]
/// records, 3 s of latency) whose figures are printed, not recorded.
pub fn run(options: &Options) -> Result<()> {
    let quick = options.quick;
    let rounds = if quick {
        1
    } else {
        options.rounds.unwrap_or(DEFAULT_ROUNDS).max(1)
    };
    let default_seconds = if quick { 3 } else { DEFAULT_LATENCY_SECONDS };
    let latency_seconds = options.seconds.unwrap_or(default_seconds).max(1);
    let records = if quick { QUICK_RECORDS } else { RECORDS };
    let binary = match &options.binary {
        Some(binary) => binary.clone(),
        None => {
            run_command(cargo().args(["build", "--release", "-p", "zilla", "--bin", "zilla"]))?;
            zilla_tests::build_zilla(true, false)?
        }
    };
    let broker = Broker::start()?;
    broker.create_topic(TOPIC, 1)?;
    broker.create_topic(CONSUME_TOPIC, 1)?;
    let base = port_block()?;
    let yaml = format!(
        r#"
name: bench
bindings:
  tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port:
        - {base}
        - "{low}-{high}"
    exit: kafka_proxy
  kafka_proxy:
    type: kafka
    kind: proxy
    options:
      servers:
        - {broker}
      external:
        host: 127.0.0.1
        port: {base}
        ports: "{low}-{high}"
    exit: tcp_client
  tcp_client:
    type: tcp
    kind: client
"#,
        low = base + 1,
        high = base + BROKER_PORTS,
        broker = broker.address(),
    );
    let mut gateway = Gateway::builder(&yaml).binary(&binary).start()?;
    let direct = broker.address();
    let proxied = format!("127.0.0.1:{base}");

    // Warm-up, both ways; the proxied one fills the topic the consume runs read.
    produce(&direct, TOPIC, records).context("warm-up produce, direct")?;
    produce(&proxied, CONSUME_TOPIC, records).context("warm-up produce, proxied")?;
    // Indexed by `Target`.
    let addresses = [direct.as_str(), proxied.as_str()];
    let mut samples = [Samples::default(), Samples::default()];
    for round in 1..=rounds {
        let context = || format!("round {round}");
        // The broker's speed drifts within a run (its log grows; it stalls for tens of
        // milliseconds now and then, direct clients as much as proxied ones): whichever
        // target always ran second would carry the drift. Odd rounds go direct first, even
        // rounds through the proxy first.
        let order = if round % 2 == 1 {
            [Target::Direct, Target::Proxy]
        } else {
            [Target::Proxy, Target::Direct]
        };
        // Each measure runs on both targets before the next begins.
        for measure in [Measure::Produce, Measure::Consume, Measure::Latency] {
            for target in order {
                let (address, figures) =
                    (addresses[target as usize], &mut samples[target as usize]);
                settle(&broker)?;
                match measure {
                    Measure::Produce => figures
                        .produce
                        .push(produce(address, TOPIC, records).with_context(context)?),
                    Measure::Consume => figures
                        .consume
                        .push(consume(address, records).with_context(context)?),
                    Measure::Latency => {
                        let (p50, p99) = latency(address, latency_seconds).with_context(context)?;
                        figures.p50.push(p50);
                        figures.p99.push(p99);
                    }
                }
            }
        }
    }
    stop_gateway(&mut gateway)?;
    drop(broker);

    let [direct_samples, proxy_samples] = samples;
    let median = |sample: &[f64]| Spread::of(sample).median;
    let produce_ratio = median(&proxy_samples.produce) / median(&direct_samples.produce);
    let consume_ratio = median(&proxy_samples.consume) / median(&direct_samples.consume);
    let added_p50 = median(&proxy_samples.p50) - median(&direct_samples.p50);
    let added_p99 = median(&proxy_samples.p99) - median(&direct_samples.p99);
    println!(
        "kafka-proxy: produce {:.0} rec/s through the proxy, {:.0} direct (ratio {produce_ratio:.3}); \
         consume {:.0} vs {:.0} (ratio {consume_ratio:.3}); at {LATENCY_RATE} rec/s p99 {:.0} µs vs {:.0} µs \
         (added p50 {added_p50:.0} µs, p99 {added_p99:.0} µs); medians of {rounds} rounds",
        median(&proxy_samples.produce),
        median(&direct_samples.produce),
        median(&proxy_samples.consume),
        median(&direct_samples.consume),
        median(&proxy_samples.p99),
        median(&direct_samples.p99),
    );
    let table = format!(
        "| date | commit | produce rec/s proxy | direct | ratio | consume rec/s proxy | direct | ratio | p99 µs proxy | direct | added p50 µs | added p99 µs |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n\
         | {} | {} | {:.0} | {:.0} | {produce_ratio:.3} | {:.0} | {:.0} | {consume_ratio:.3} | {:.0} | {:.0} | {added_p50:.0} | {added_p99:.0} |\n\n\
         {records} records of {RECORD_SIZE} bytes per produce and consume run (librdkafka, leader acks, one partition); \
         latency at {LATENCY_RATE} records/s for {latency_seconds} s; medians of {rounds} rounds.\n",
        today(),
        commit(),
        median(&proxy_samples.produce),
        median(&direct_samples.produce),
        median(&proxy_samples.consume),
        median(&direct_samples.consume),
        median(&proxy_samples.p99),
        median(&direct_samples.p99),
    );
    if quick {
        println!("--quick: not recorded");
        return Ok(());
    }
    record("kafka-proxy", &table)?;
    Ok(())
}
