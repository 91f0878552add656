//! `cargo xtask bench mqtt-idle`: the MQTT half of scenario S5. `--clients` MQTT 3.1.1
//! connections (CONNECT with clean session and a 300 s keep alive, CONNACK, then nothing) are
//! opened to mosquitto and then to the gateway on `examples/mqtt.kafka.proxy` against a
//! loopback tansu, from 127.0.0.1 to 127.0.0.4 so no source address runs out of ephemeral
//! ports. Memory per connection = (resident memory with every connection open − resident
//! memory before) ÷ connections, where "before" is after one connection has come and gone, so
//! what the first connection sets up once (the gateway's Kafka connections) is not counted.
//! Every connection must still answer PINGREQ after the measurement. The gateway's cap on
//! connections (by default half its open-files limit) is raised to the connections measured.
//!
//! Every connection holds a descriptor in this process and one in the server; the container's
//! hard limit on open files bounds how many one run can hold.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use zilla_tests::rss_kib;

use super::mqtt_client::Connection;
use super::mqtt_kafka::{LISTENER, gateway_builder, start_broker_maintained_every};
use super::optimized::rerun_optimized;
use super::options::Options;
use super::usage::load_average;
use super::{commit, record, stop_gateway, today, zilla_binary};

/// The S5 target, 25 000, is above what this machine's open-files limit of 20 000 lets one
/// process hold: the default stays under it.
const DEFAULT_CONNECTIONS: usize = 18_000;
const QUICK_CONNECTIONS: usize = 2_000;
const KEEP_ALIVE_SECONDS: u16 = 300;
/// Source addresses the connections take in turn.
const SOURCES: [Ipv4Addr; 4] = [
    Ipv4Addr::new(127, 0, 0, 1),
    Ipv4Addr::new(127, 0, 0, 2),
    Ipv4Addr::new(127, 0, 0, 3),
    Ipv4Addr::new(127, 0, 0, 4),
];
/// Connects in flight at once.
const AT_ONCE: usize = 200;
/// How long the server sits with every connection open before its memory is read, so
/// buffers allocated just after CONNACK are counted.
const SETTLE: Duration = Duration::from_secs(3);
/// Descriptors this process (and each server) keeps beyond one per connection.
const SPARE_FDS: u64 = 256;
/// tansu answers a fetch parked at the log end only when its max-wait passes.
const FETCH_MAX_WAIT_MILLIS: &str = "10";
/// tansu's compaction pass sorts every record of `mqtt-sessions` (four per CONNECT): run every
/// 2 s, as by default, it slows the broker's answers to the connections still connecting until
/// the first connections wait longer than their keep-alive. What is measured is the gateway's
/// memory, not the broker's compaction.
const BROKER_MAINTENANCE: Duration = Duration::from_secs(3600);

/// Runs the MQTT half of S5 and records its figures (unless `--quick`).
pub fn run(options: &Options) -> Result<()> {
    if rerun_optimized()? {
        return Ok(());
    }
    let connections = options
        .clients
        .unwrap_or(if options.quick {
            QUICK_CONNECTIONS
        } else {
            DEFAULT_CONNECTIONS
        })
        .max(1);
    let limit =
        rlimit::increase_nofile_limit(u64::MAX).context("cannot raise the open-files limit")?;
    if limit < connections as u64 + SPARE_FDS {
        bail!(
            "{connections} connections need {} open files in this process and in each server; the limit is {limit}: pass a smaller --clients",
            connections as u64 + SPARE_FDS
        );
    }
    let binary = zilla_binary(options)?;
    let load_before = load_average();
    let runtime = super::load_runtime()?;

    let dir = super::bench_dir("zilla-bench-mqtt-idle-")?;
    println!(
        "S5 mqtt-idle: {connections} idle MQTT 3.1.1 connections, to mosquitto, then to the gateway"
    );
    let mosquitto = {
        let (process, port) = zilla_tests::mosquitto(dir.path())?;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let run = idle(&runtime, "mosquitto", address, process.pid(), connections)?;
        drop(process);
        run
    };
    let broker = start_broker_maintained_every(BROKER_MAINTENANCE)?;
    // By default the gateway accepts connections up to half its open-files limit (a proxied
    // connection takes two files); one here takes one, and the measurement needs them all.
    let mut gateway = gateway_builder(&binary, &broker, FETCH_MAX_WAIT_MILLIS)
        .property(
            "zilla.engine.maximum.connections",
            &(connections as u64 + SPARE_FDS).to_string(),
        )
        .start()?;
    let gateway_run = idle(
        &runtime,
        "gateway",
        gateway.address(LISTENER),
        gateway.pid(),
        connections,
    )
    .with_context(|| {
        let stderr = gateway.stderr();
        let broker_output = broker.log();
        format!(
            "the gateway's last lines on stderr:\n{}\ntansu's:\n{}",
            last_lines(&stderr, 20),
            last_lines(&broker_output, 20)
        )
    })?;
    stop_gateway(&mut gateway)?;
    drop(broker);

    let figures = Figures {
        connections,
        mosquitto,
        gateway: gateway_run,
        load: (load_before, load_average()),
    };
    println!("{}", figures.summary());
    if options.quick {
        println!("--quick: figures printed, not recorded");
    } else {
        record("mqtt-idle", &figures.table())?;
    }
    Ok(())
}

fn last_lines(text: &str, count: usize) -> String {
    let tail: Vec<&str> = text.lines().rev().take(count).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// One server with every connection open.
struct IdleRun {
    before_kib: u64,
    after_kib: u64,
    connect_time: Duration,
}

impl IdleRun {
    fn bytes_per_connection(&self, connections: usize) -> f64 {
        self.after_kib.saturating_sub(self.before_kib) as f64 * 1024.0 / connections as f64
    }
}

fn idle(
    runtime: &Runtime,
    name: &str,
    server: SocketAddr,
    pid: u32,
    connections: usize,
) -> Result<IdleRun> {
    // The first connection sets up what every later one shares.
    runtime
        .block_on(Connection::connect(
            server,
            None,
            &format!("idle-first-{name}"),
            KEEP_ALIVE_SECONDS,
        ))
        .with_context(|| format!("the first connection to {name}"))?;
    std::thread::sleep(SETTLE);
    let before_kib = rss_kib(pid)?;
    let started = Instant::now();
    let mut open = runtime.block_on(connect_all(server, name, connections))?;
    let connect_time = started.elapsed();
    std::thread::sleep(SETTLE);
    let after_kib = rss_kib(pid)?;
    runtime
        .block_on(ping_all(&mut open))
        .with_context(|| format!("{name}: a connection was not served after the measurement"))?;
    println!(
        "  {name}: {connections} connected in {:.1} s; RSS {:.1} MiB before, {:.1} MiB with every connection open",
        connect_time.as_secs_f64(),
        before_kib as f64 / 1024.0,
        after_kib as f64 / 1024.0
    );
    drop(open);
    Ok(IdleRun {
        before_kib,
        after_kib,
        connect_time,
    })
}

async fn connect_all(server: SocketAddr, name: &str, count: usize) -> Result<Vec<Connection>> {
    let permits = Arc::new(Semaphore::new(AT_ONCE));
    let tasks: Vec<_> = (0..count)
        .map(|index| {
            let permits = permits.clone();
            let client_id = format!("idle-{name}-{index}");
            let source = IpAddr::V4(SOURCES[index % SOURCES.len()]);
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await?;
                Connection::connect(server, Some(source), &client_id, KEEP_ALIVE_SECONDS).await
            })
        })
        .collect();
    let mut open = Vec::with_capacity(count);
    for (index, task) in tasks.into_iter().enumerate() {
        let connection = task
            .await
            .context("a connecting task panicked")?
            .with_context(|| format!("connection {index} of {count}"))?;
        open.push(connection);
    }
    Ok(open)
}

/// One PINGREQ after another: the connections are idle, each answer comes at once.
async fn ping_all(open: &mut [Connection]) -> Result<()> {
    for (index, connection) in open.iter_mut().enumerate() {
        connection
            .ping()
            .await
            .with_context(|| format!("connection {index}"))?;
    }
    Ok(())
}

/// What S5's MQTT half measured.
struct Figures {
    connections: usize,
    mosquitto: IdleRun,
    gateway: IdleRun,
    load: (Option<f64>, Option<f64>),
}

impl Figures {
    fn ratio(&self) -> f64 {
        self.gateway.bytes_per_connection(self.connections)
            / self.mosquitto.bytes_per_connection(self.connections)
    }

    fn summary(&self) -> String {
        format!(
            "S5 mqtt-idle: {} connections: gateway {:.0} B per connection, mosquitto {:.0} B, ratio {:.2} (targets ≤ 4096 B and ≤ 2.0)",
            self.connections,
            self.gateway.bytes_per_connection(self.connections),
            self.mosquitto.bytes_per_connection(self.connections),
            self.ratio()
        )
    }

    fn table(&self) -> String {
        let load = |load: Option<f64>| load.map_or_else(|| "?".to_owned(), |l| format!("{l:.1}"));
        format!(
            "| date | commit | connections | gateway B/connection | mosquitto B/connection | gateway ÷ mosquitto | gateway RSS before → after | mosquitto RSS before → after | connect time gateway / mosquitto |\n\
             |---|---|---|---|---|---|---|---|---|\n\
             | {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.1} → {:.1} MiB | {:.1} → {:.1} MiB | {:.1} s / {:.1} s |\n\
             \n\
             1-minute load average {} before, {} after.\n",
            today(),
            commit(),
            self.connections,
            self.gateway.bytes_per_connection(self.connections),
            self.mosquitto.bytes_per_connection(self.connections),
            self.ratio(),
            self.gateway.before_kib as f64 / 1024.0,
            self.gateway.after_kib as f64 / 1024.0,
            self.mosquitto.before_kib as f64 / 1024.0,
            self.mosquitto.after_kib as f64 / 1024.0,
            self.gateway.connect_time.as_secs_f64(),
            self.mosquitto.connect_time.as_secs_f64(),
            load(self.load.0),
            load(self.load.1),
        )
    }
}
