//! `cargo xtask soak`: scenario S10, bounded in time and traffic, on loopback. Two gateway
//! replicas run `examples/sse.kafka.fanout` (SSE fan-out of the `events` topic, and `POST
//! /events` producing to it) behind haproxy in TCP mode, on one tansu broker. The load runs in
//! this process ([`clients`]): SSE subscribers following the topic through haproxy, resuming
//! with `Last-Event-ID` whenever a stream ends, and producers `POST`ing unique values at a fixed
//! rate, each acknowledged value noted. While it runs, a fault schedule kills one replica
//! (`SIGKILL`) and restarts it, rewrites the other's config (a hot reload), restarts the broker
//! on the same port and data, and makes every subscriber reconnect at once. Every 10 s the
//! gateways', tansu's and haproxy's RSS, open files and CPU are sampled. Each replica also
//! serves `examples/mqtt.kafka.proxy` behind a second haproxy frontend, where paho-mqtt
//! publishers (QoS 1 and 2) and subscribers (QoS 1 and 2, persistent sessions) run through
//! the same faults ([`mqtt`]). And each serves `examples/grpc.kafka.fanout` behind a third
//! frontend ([`grpc`]): tonic subscribers stream the `messages` topic, resuming with
//! `last-message-id` whenever a stream ends, while a second producer `POST`s the same values,
//! protobuf-encoded, to `messages` through the replicas.
//!
//! Afterwards [`check`] reads the topics back with confluent-kafka and compares: an
//! acknowledged value missing from its topic, an SSE or gRPC subscriber missing a value of
//! its topic, receiving one twice or one that is not there fails the run; so does an
//! acknowledged MQTT message missing from the MQTT messages topic, or a QoS 2 one written or
//! delivered twice. It prints a summary line, writes
//! the samples as CSV (and a PNG plot when matplotlib is in the peers' virtualenv) under
//! `docs/soak/`, and records the figures in `docs/benchmarks.md`.
//!
//! The long mode (default 60 minutes, 5000 SSE and 100 gRPC subscribers) uses release builds; `--short` (100 s
//! of load, 300 SSE and 10 gRPC subscribers, about 3 minutes in all) uses the debug build (`ZILLA_BIN` when
//! set); `cargo xtask test` runs it ([`run_short`]) and fails on any loss.

pub(super) mod check;
mod clients;
mod grpc;
pub(super) mod mqtt;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::sync::watch;
use zilla_tests::{Broker, Gateway, Peer, Process, free_port, success, workspace_dir};

use super::load::Schedule;
use super::optimized::rerun_optimized;
use super::usage::{cpu_time, ticks_per_second};
use super::{commit, record, today};
use crate::shell::find_program;
use check::{Comparison, Drift, Sample};
use clients::Shared;
use mqtt::{MqttComparison, MqttLoad, MqttPlan};

const TOPIC: &str = "events";
const EXAMPLE: &str = "examples/sse.kafka.fanout";
const SAMPLE_INTERVAL: Duration = Duration::from_secs(10);
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(180);
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(120);
const WARM_UP_INTERVAL: Duration = Duration::from_millis(250);
/// After producing, deliveries are awaited until every subscriber has received as many values
/// as were acknowledged and none arrives for this long...
const DRAIN_QUIET: Duration = Duration::from_secs(3);
/// ...or this long has passed.
const DRAIN_MAX: Duration = Duration::from_secs(60);
/// How long subscribers may take to have an event after the last fault before the schedule
/// is declared over anyway.
const RECOVERY_MAX: Duration = Duration::from_secs(60);
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// tansu answers a fetch parked at the log end only when its max-wait passes.
const FETCH_MAX_WAIT_MILLIS: &str = "50";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const PLOT_TIMEOUT: Duration = Duration::from_secs(300);
/// File descriptors this process keeps beyond one per subscriber.
const SPARE_FDS: u64 = 512;

/// Flags of `cargo xtask soak`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Minutes of load in the long mode.
    #[arg(long, default_value_t = 60)]
    pub minutes: u64,
    /// The short mode (the one `cargo xtask test` runs): 100 s of load, 300 SSE and 10 gRPC subscribers, on the debug build.
    #[arg(long)]
    pub short: bool,
    /// SSE subscribers (default 5000; 300 with --short).
    #[arg(long)]
    pub clients: Option<usize>,
    /// Values POSTed per second (default 5; 10 with --short).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Do not write the figures into docs/ (the check still fails on any loss).
    #[arg(long)]
    pub no_record: bool,
    /// The replicas' Kafka cache memory budget in bytes
    /// (`zilla.binding.kafka.cache.memory.bytes`; the gateway's default when absent).
    #[arg(long)]
    pub cache_bytes: Option<u64>,
}

/// What one run does, derived from the options.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    mode: &'static str,
    clients: usize,
    rate: u64,
    load: Duration,
    /// Each fault and how long after the load started it comes.
    faults: Vec<(Fault, Duration)>,
    /// Samples from here on count for drift: one fault spacing after the schedule.
    drift_from: Duration,
    release: bool,
    /// The MQTT clients, publishing for the whole load.
    mqtt: MqttPlan,
    /// gRPC fan-out subscribers.
    grpc_clients: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// `SIGKILL` to replica a, then the same replica started again on its port.
    KillReplica,
    /// Replica b's config rewritten in place: a hot reload under load.
    Reload,
    /// tansu killed and started again on the same port and data.
    BrokerRestart,
    /// Every subscriber drops its stream and resumes at once (`Last-Event-ID`,
    /// `last-message-id`).
    ReconnectStorm,
}

impl Fault {
    const ALL: [Fault; 4] = [
        Fault::KillReplica,
        Fault::Reload,
        Fault::BrokerRestart,
        Fault::ReconnectStorm,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::KillReplica => "replica kill -9 and restart",
            Self::Reload => "config reload",
            Self::BrokerRestart => "broker restart",
            Self::ReconnectStorm => "reconnect storm",
        }
    }
}

impl Plan {
    fn new(options: &Options) -> Self {
        let (mode, clients, rate, load, spacings) = if options.short {
            ("short", 300, 10, Duration::from_secs(100), 7)
        } else {
            (
                "long",
                5000,
                5,
                Duration::from_secs(options.minutes.max(1) * 60),
                12,
            )
        };
        // The faults come one spacing apart from the first spacing on, leaving the rest of the
        // load (at least a third of it) after the schedule.
        let spacing = load / spacings;
        let faults = Fault::ALL
            .iter()
            .zip(1u32..)
            .map(|(fault, n)| (*fault, spacing * n))
            .collect();
        Self {
            mode,
            clients: options.clients.unwrap_or(clients).max(1),
            rate: options.rate.unwrap_or(rate).max(1),
            load,
            faults,
            drift_from: spacing * (Fault::ALL.len() as u32 + 1),
            release: !options.short,
            mqtt: MqttPlan {
                qos1_publishers: 4,
                qos2_publishers: 2,
                qos1_subscribers: if options.short { 3 } else { 10 },
                qos2_subscribers: if options.short { 3 } else { 10 },
                rate,
            },
            grpc_clients: if options.short { 10 } else { 100 },
        }
    }
}

/// Runs the soak; an error when any acknowledged value or delivery was lost or repeated.
pub fn run(options: &Options) -> Result<()> {
    run_on(options, None)
}

/// The short mode on `binary`, leaving `docs/` alone: the form `cargo xtask test` runs.
pub fn run_short(binary: &Path) -> Result<()> {
    let options = Options {
        minutes: 0,
        short: true,
        clients: None,
        rate: None,
        no_record: true,
        cache_bytes: None,
    };
    run_on(&options, Some(binary))
}

/// [`run`] on `binary` when given (`cargo xtask test` passes the build it has just made); else
/// on a release build in the long mode, and on `ZILLA_BIN` or the debug build in the short one.
pub fn run_on(options: &Options, binary: Option<&Path>) -> Result<()> {
    let plan = Plan::new(options);
    if plan.release && rerun_optimized()? {
        return Ok(());
    }
    let haproxy = find_program("haproxy")
        .context("haproxy is not installed: run `cargo xtask peers --only apt`")?;
    let limit =
        rlimit::increase_nofile_limit(u64::MAX).context("cannot raise the open-files limit")?;
    let subscribers = (plan.clients + plan.grpc_clients) as u64;
    if limit < subscribers + SPARE_FDS {
        bail!(
            "{subscribers} subscribers need {} open files; the hard limit allows {limit}",
            subscribers + SPARE_FDS
        );
    }
    let binary = match binary {
        Some(binary) => binary.to_owned(),
        None if plan.release => zilla_tests::build_zilla(true, true)?,
        None => zilla_tests::zilla_binary()?,
    };
    println!(
        "S10 soak ({} mode): {} SSE and {} gRPC subscribers, {} values/s for {} s; faults: {}",
        plan.mode,
        plan.clients,
        plan.grpc_clients,
        plan.rate,
        plan.load.as_secs(),
        plan.faults
            .iter()
            .map(|(fault, at)| format!("{} at {} s", fault.name(), at.as_secs()))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let mut broker = Broker::start()?;
    broker.create_topic(TOPIC, 1, false)?;
    // Without it tansu's fetches slow down as the run's records accumulate; see the method.
    broker.index_headers()?;
    broker.create_topic(grpc::TOPIC, 1, false)?;
    for (topic, compacted) in mqtt::TOPICS {
        broker.create_topic(topic, 1, compacted)?;
    }
    let mut replicas = [
        Replica::start("gateway-a", &binary, &broker, options.cache_bytes)?,
        Replica::start("gateway-b", &binary, &broker, options.cache_bytes)?,
    ];
    let balancer = LoadBalancer::start(&haproxy, &replicas)?;
    let outcome = soak(&plan, &mut broker, &mut replicas, &balancer, &binary);
    let values = outcome
        .as_ref()
        .ok()
        .map(|_| check::read_back(&broker, TOPIC));
    let mqtt_values = outcome
        .as_ref()
        .ok()
        .map(|_| check::read_back(&broker, mqtt::MESSAGES_TOPIC));
    let grpc_values = outcome
        .as_ref()
        .ok()
        .map(|_| check::read_back_messages(&broker, grpc::TOPIC));
    // How a replica stops says nothing about the run's outcome, which must not be hidden.
    for replica in &mut replicas {
        match replica.gateway.terminate() {
            Ok(status) if status.success() => {}
            Ok(status) => eprintln!("{} exited with {status} on SIGTERM", replica.name),
            Err(error) => eprintln!("{}: {error:#}", replica.name),
        }
    }
    drop(balancer);
    drop(broker);
    let outcome = outcome?;
    let values = values.context("no read-back")??;
    let mqtt_values = mqtt_values.context("no MQTT read-back")??;
    let grpc_values = grpc_values.context("no gRPC read-back")??;
    let mqtt_comparison = MqttComparison::new(&mqtt_values, &outcome.mqtt);

    let comparison = Comparison::new(
        &values,
        outcome.total,
        &outcome.produced,
        &outcome.subscriptions,
        plan.faults.len(),
    );
    let grpc_comparison = Comparison::new(
        &grpc_values,
        outcome.total,
        &outcome.grpc.produced,
        &outcome.grpc.subscriptions,
        plan.faults.len(),
    );
    let report = Report {
        plan: &plan,
        comparison: &comparison,
        grpc: &grpc_comparison,
        mqtt: &mqtt_comparison,
        outcome: &outcome,
    };
    println!("{}", report.summary());
    if !options.no_record {
        report.write_files()?;
        record(&format!("soak-{}", plan.mode), &report.table())?;
    }
    let mut broken: Vec<String> = comparison
        .verdict()
        .err()
        .map(|error| format!("{error:#}"))
        .into_iter()
        .collect();
    broken.extend(
        grpc_comparison
            .verdict()
            .err()
            .map(|error| format!("gRPC: {error:#}")),
    );
    broken.extend(mqtt_comparison.broken());
    if broken.is_empty() {
        Ok(())
    } else {
        bail!("{}", broken.join("; "))
    }
}

/// The ports a replica listens on.
#[derive(Debug, Clone, Copy)]
struct Ports {
    http: u16,
    mqtt: u16,
    grpc: u16,
}

impl Ports {
    fn free() -> Result<Self> {
        Ok(Self {
            http: free_port()?,
            mqtt: free_port()?,
            grpc: free_port()?,
        })
    }
}

/// One gateway replica on a port of its own, which it keeps across restarts (haproxy's
/// backends are fixed).
struct Replica {
    name: &'static str,
    ports: Ports,
    yaml: String,
    /// The gRPC example's proto, written beside the config at each start.
    proto: String,
    reloads: usize,
    /// The cache memory budget it runs with, if not the default.
    cache_bytes: Option<u64>,
    gateway: Gateway,
}

impl Replica {
    fn start(
        name: &'static str,
        binary: &Path,
        broker: &Broker,
        cache_bytes: Option<u64>,
    ) -> Result<Self> {
        let path = workspace_dir().join(EXAMPLE).join("zilla.yaml");
        let yaml = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let yaml = grpc::with_grpc_bindings(&mqtt::with_mqtt_bindings(&yaml)?)?;
        let proto = grpc::proto()?;
        let ports = Ports::free()?;
        let gateway = launch(binary, &yaml, &proto, ports, broker, cache_bytes)?;
        Ok(Self {
            name,
            ports,
            yaml,
            proto,
            reloads: 0,
            cache_bytes,
            gateway,
        })
    }

    /// `SIGKILL`, then the same config started again on the same port.
    fn kill_and_restart(&mut self, binary: &Path, broker: &Broker) -> Result<()> {
        self.gateway.signal("KILL")?;
        // A port just released may take a moment to bind again.
        let mut attempt = 0;
        self.gateway = loop {
            attempt += 1;
            match launch(
                binary,
                &self.yaml,
                &self.proto,
                self.ports,
                broker,
                self.cache_bytes,
            ) {
                Ok(gateway) => break gateway,
                Err(error) if attempt >= 5 => return Err(error),
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        };
        Ok(())
    }

    /// Rewrites the config (a comment more each time) and waits until it is reloaded.
    fn reload(&mut self) -> Result<()> {
        self.reloads += 1;
        self.gateway
            .write_config(&format!("{}\n# soak reload {}\n", self.yaml, self.reloads))?;
        let deadline = Instant::now() + RELOAD_TIMEOUT;
        while self.gateway.stderr().matches("config reloaded").count() < self.reloads {
            if Instant::now() > deadline {
                bail!(
                    "{} did not reload within {RELOAD_TIMEOUT:?}; stderr:\n{}",
                    self.name,
                    self.gateway.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

/// Starts a replica with its HTTP, MQTT and gRPC ports, and the gRPC example's proto where its
/// catalog finds it (relative to the config).
fn launch(
    binary: &Path,
    yaml: &str,
    proto: &str,
    ports: Ports,
    broker: &Broker,
    cache_bytes: Option<u64>,
) -> Result<Gateway> {
    let mut builder = Gateway::builder(yaml);
    if let Some(bytes) = cache_bytes {
        builder = builder.property("zilla.binding.kafka.cache.memory.bytes", &bytes.to_string());
    }
    builder
        .binary(binary)
        .file(grpc::PROTO, proto)
        .env("HTTP_PORT", ports.http.to_string())
        .env("MQTT_PORT", ports.mqtt.to_string())
        .env("GRPC_PORT", ports.grpc.to_string())
        .env("KAFKA_BOOTSTRAP_SERVER", broker.address())
        .env("WWW_DIR", workspace_dir().join(EXAMPLE).join("www"))
        .property(
            "zilla.binding.kafka.client.fetch.max.wait.millis",
            FETCH_MAX_WAIT_MILLIS,
        )
        // A restart under load on a busy machine may take longer than the default.
        .ready_timeout(READY_TIMEOUT)
        .start()
}

/// haproxy in TCP mode in front of the replicas: round robin, a replica that refuses a
/// connection is retried on the other, and health checks every second take a dead one out.
struct LoadBalancer {
    process: Process,
    address: SocketAddr,
    /// The MQTT frontend.
    mqtt_address: SocketAddr,
    /// The gRPC frontend.
    grpc_address: SocketAddr,
    // Last: the config goes once the process is gone.
    _dir: tempfile::TempDir,
}

impl LoadBalancer {
    fn start(haproxy: &Path, replicas: &[Replica]) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("zilla-soak-").tempdir()?;
        let ports = Ports::free()?;
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, haproxy_config(ports, replicas))?;
        let process = Peer::new(haproxy).args(["-db", "-f"]).arg(&path).spawn()?;
        let address = SocketAddr::from(([127, 0, 0, 1], ports.http));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !zilla_tests::accepts_connections(address.port()) {
            if Instant::now() > deadline {
                bail!("haproxy did not listen on {address}: {}", process.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self {
            process,
            address,
            mqtt_address: SocketAddr::from(([127, 0, 0, 1], ports.mqtt)),
            grpc_address: SocketAddr::from(([127, 0, 0, 1], ports.grpc)),
            _dir: dir,
        })
    }
}

/// HTTP, MQTT and gRPC on `ports`, each balanced over the replicas' own port.
fn haproxy_config(ports: Ports, replicas: &[Replica]) -> String {
    let servers = |port: fn(&Replica) -> u16| -> String {
        replicas
            .iter()
            .map(|replica| {
                format!(
                    "  server {} 127.0.0.1:{} check inter 1s fall 1 rise 1\n",
                    replica.name,
                    port(replica)
                )
            })
            .collect()
    };
    // haproxy holds two descriptors per connection: 9000 fits under a 20000 hard limit.
    format!(
        "global\n  maxconn 9000\n\n\
         defaults\n  mode tcp\n  retries 3\n  option redispatch\n  timeout connect 2s\n  \
         timeout client 1h\n  timeout server 1h\n\n\
         frontend soak\n  bind 127.0.0.1:{}\n  default_backend replicas\n\n\
         backend replicas\n  balance roundrobin\n{}\n\
         frontend soak_mqtt\n  bind 127.0.0.1:{}\n  default_backend mqtt_replicas\n\n\
         backend mqtt_replicas\n  balance roundrobin\n{}\n\
         frontend soak_grpc\n  bind 127.0.0.1:{}\n  default_backend grpc_replicas\n\n\
         backend grpc_replicas\n  balance roundrobin\n{}",
        ports.http,
        servers(|replica| replica.ports.http),
        ports.mqtt,
        servers(|replica| replica.ports.mqtt),
        ports.grpc,
        servers(|replica| replica.ports.grpc),
    )
}

/// What the load saw, for the checker.
struct Outcome {
    total: u64,
    produced: clients::Produced,
    subscriptions: Vec<clients::Subscription>,
    samples: Vec<Sample>,
    /// Each fault: when it came (s after the load started) and how long injecting it took.
    faults: Vec<(Fault, f64, Duration)>,
    /// When the schedule was over: every subscriber had an event after the last fault, or
    /// [`RECOVERY_MAX`] had passed.
    schedule_end: f64,
    subscribe_time: Duration,
    warm_up_time: Duration,
    first_error: Option<String>,
    mqtt: mqtt::MqttOutcome,
    grpc: GrpcOutcome,
}

/// What the gRPC producer and subscribers saw.
struct GrpcOutcome {
    produced: clients::Produced,
    subscriptions: Vec<clients::Subscription>,
    first_error: Option<String>,
}

fn soak(
    plan: &Plan,
    broker: &mut Broker,
    replicas: &mut [Replica; 2],
    balancer: &LoadBalancer,
    binary: &Path,
) -> Result<Outcome> {
    let runtime = super::load_runtime()?;
    let schedule = Schedule::new(plan.rate, plan.load);
    // The MQTT clients connect first: they are few and ready while the SSE ones subscribe.
    let mqtt_load = MqttLoad::start(balancer.mqtt_address, &plan.mqtt, plan.load)?;
    println!(
        "  MQTT: {} + {} publishers (QoS 1 + QoS 2), {} + {} subscribers live",
        plan.mqtt.qos1_publishers,
        plan.mqtt.qos2_publishers,
        plan.mqtt.qos1_subscribers,
        plan.mqtt.qos2_subscribers
    );
    let shared = Arc::new(Shared::new(balancer.address, schedule.total));
    let grpc_shared = Arc::new(Shared::new(balancer.grpc_address, schedule.total));
    // Each kind of subscriber with its own bookkeeping, its count and the route its values
    // are produced on.
    let kinds = [
        ("SSE", &shared, plan.clients, clients::EVENTS),
        ("gRPC", &grpc_shared, plan.grpc_clients, grpc::MESSAGES),
    ];
    let (storm, storm_signal) = watch::channel(0u64);
    let (stop, stop_signal) = watch::channel(false);
    let subscribers: Vec<_> = (0..plan.clients)
        .map(|_| {
            runtime.spawn(clients::subscriber(
                clients::Sse,
                shared.clone(),
                storm_signal.clone(),
                stop_signal.clone(),
            ))
        })
        .collect();
    let grpc_subscribers: Vec<_> = (0..plan.grpc_clients)
        .map(|_| {
            runtime.spawn(clients::subscriber(
                grpc::Grpc,
                grpc_shared.clone(),
                storm_signal.clone(),
                stop_signal.clone(),
            ))
        })
        .collect();

    let started = Instant::now();
    for (transport, shared, count, _) in &kinds {
        while shared.subscribed.load(Ordering::Relaxed) < *count {
            if started.elapsed() > SUBSCRIBE_TIMEOUT {
                bail!(
                    "only {} of {count} {transport} subscribers subscribed within {SUBSCRIBE_TIMEOUT:?}: {:?}",
                    shared.subscribed.load(Ordering::Relaxed),
                    shared.first_error.lock().map(|e| e.clone()).ok().flatten()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let subscribe_time = started.elapsed();
    println!(
        "  {} SSE and {} gRPC subscribed in {:.1} s",
        plan.clients,
        plan.grpc_clients,
        subscribe_time.as_secs_f64()
    );
    // Live once each has received a value produced after it subscribed.
    let started = Instant::now();
    let mut sent = 0;
    let cold = || {
        kinds
            .iter()
            .filter(|(_, shared, count, _)| shared.warmed.load(Ordering::Relaxed) < *count)
            .collect::<Vec<_>>()
    };
    loop {
        let cold = cold();
        if cold.is_empty() {
            break;
        }
        if started.elapsed() > WARM_UP_TIMEOUT {
            bail!(
                "not every subscriber received a warm-up value within {WARM_UP_TIMEOUT:?}: {}",
                cold.iter()
                    .map(|(transport, shared, count, _)| format!(
                        "{} of {count} {transport}",
                        shared.warmed.load(Ordering::Relaxed)
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        for (_, _, _, route) in cold {
            let _ = runtime.block_on(clients::warm_up(balancer.address, *route, sent));
        }
        sent += 1;
        std::thread::sleep(WARM_UP_INTERVAL);
    }
    let warm_up_time = started.elapsed();
    println!(
        "  all live after {sent} warm-up values in {:.1} s",
        warm_up_time.as_secs_f64()
    );

    let load_start = Instant::now();
    mqtt_load.go()?;
    let producer = runtime.spawn(clients::produce(
        balancer.address,
        clients::EVENTS,
        schedule,
        tokio::time::Instant::from_std(load_start),
    ));
    let grpc_producer = runtime.spawn(clients::produce(
        balancer.address,
        grpc::MESSAGES,
        schedule,
        tokio::time::Instant::from_std(load_start),
    ));
    let mut sampler = Sampler::new(load_start);
    let mut faults = Vec::new();
    for &(fault, at) in &plan.faults {
        sampler.until(load_start + at, broker, replicas, balancer)?;
        let injected = Instant::now();
        println!(
            "  {:>5.0} s: {}",
            load_start.elapsed().as_secs_f64(),
            fault.name()
        );
        shared.note_fault();
        grpc_shared.note_fault();
        match fault {
            Fault::KillReplica => replicas[0].kill_and_restart(binary, broker)?,
            Fault::Reload => replicas[1].reload()?,
            Fault::BrokerRestart => broker.restart()?,
            Fault::ReconnectStorm => {
                storm.send_modify(|generation| *generation += 1);
            }
        }
        faults.push((
            fault,
            injected.duration_since(load_start).as_secs_f64(),
            injected.elapsed(),
        ));
    }
    let recovering = Instant::now();
    let caught_up = || {
        kinds
            .iter()
            .all(|(_, shared, count, _)| shared.caught_up() >= *count)
    };
    while !caught_up() && recovering.elapsed() < RECOVERY_MAX {
        sampler.until(
            Instant::now() + Duration::from_millis(20),
            broker,
            replicas,
            balancer,
        )?;
    }
    shared.end_schedule();
    grpc_shared.end_schedule();
    let schedule_end = load_start.elapsed().as_secs_f64();
    println!(
        "  {schedule_end:>5.0} s: schedule over, {} of {} SSE and {} of {} gRPC subscribers had an event since the last fault",
        shared.caught_up(),
        plan.clients,
        grpc_shared.caught_up(),
        plan.grpc_clients
    );

    let load_end = load_start + schedule.due_at(schedule.total - 1);
    sampler.until(load_end, broker, replicas, balancer)?;
    shared.end_producing(tokio::time::Instant::from_std(load_end));
    grpc_shared.end_producing(tokio::time::Instant::from_std(load_end));
    let produced = runtime.block_on(producer)?;
    let grpc_produced = runtime.block_on(grpc_producer)?;
    let draining = Instant::now();
    let deliveries = || {
        shared.deliveries.load(Ordering::Relaxed) + grpc_shared.deliveries.load(Ordering::Relaxed)
    };
    let behind = || {
        shared.least_received() < produced.acknowledged_count
            || grpc_shared.least_received() < grpc_produced.acknowledged_count
    };
    let mut last = (deliveries(), Instant::now());
    // A subscriber still resuming on a loaded machine has not missed anything yet: wait until
    // each has received at least as many values as were acknowledged, then for quiet.
    while (behind() || last.1.elapsed() < DRAIN_QUIET) && draining.elapsed() < DRAIN_MAX {
        std::thread::sleep(Duration::from_millis(100));
        let now = deliveries();
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    sampler.sample(broker, replicas, balancer)?;
    let _ = stop.send(true);
    let finished = |subscribers: Vec<tokio::task::JoinHandle<clients::Subscription>>| {
        runtime.block_on(async {
            let mut done = Vec::with_capacity(subscribers.len());
            for subscriber in subscribers {
                done.push(subscriber.await?);
            }
            anyhow::Ok(done)
        })
    };
    let subscriptions = finished(subscribers)?;
    let grpc_subscriptions = finished(grpc_subscribers)?;
    let first_error = shared.first_error.lock().ok().and_then(|e| e.clone());
    let grpc_first_error = grpc_shared.first_error.lock().ok().and_then(|e| e.clone());
    let mqtt = mqtt_load.finish()?;
    Ok(Outcome {
        total: schedule.total,
        produced,
        subscriptions,
        samples: sampler.samples,
        faults,
        schedule_end,
        subscribe_time,
        warm_up_time,
        first_error,
        mqtt,
        grpc: GrpcOutcome {
            produced: grpc_produced,
            subscriptions: grpc_subscriptions,
            first_error: grpc_first_error,
        },
    })
}

/// Samples RSS, open files and CPU of every process each [`SAMPLE_INTERVAL`].
struct Sampler {
    start: Instant,
    next: Instant,
    ticks_per_second: u64,
    /// The CPU time each process (by pid) had used at its previous sample, and when.
    previous: Vec<(u32, Duration, Instant)>,
    samples: Vec<Sample>,
}

impl Sampler {
    fn new(start: Instant) -> Self {
        Self {
            start,
            next: start,
            ticks_per_second: ticks_per_second(),
            previous: Vec::new(),
            samples: Vec::new(),
        }
    }

    /// Sleeps until `deadline`, sampling whenever a sample is due.
    fn until(
        &mut self,
        deadline: Instant,
        broker: &Broker,
        replicas: &[Replica],
        balancer: &LoadBalancer,
    ) -> Result<()> {
        loop {
            let now = Instant::now();
            if now >= self.next {
                self.sample(broker, replicas, balancer)?;
                self.next += SAMPLE_INTERVAL;
                continue;
            }
            if now >= deadline {
                return Ok(());
            }
            std::thread::sleep(self.next.min(deadline) - now);
        }
    }

    fn sample(
        &mut self,
        broker: &Broker,
        replicas: &[Replica],
        balancer: &LoadBalancer,
    ) -> Result<()> {
        let now = Instant::now();
        let mut processes: Vec<(&str, u32)> = replicas
            .iter()
            .map(|replica| (replica.name, replica.gateway.pid()))
            .collect();
        processes.push(("tansu", broker.pid()));
        processes.push(("haproxy", balancer.process.pid()));
        for (process, pid) in processes {
            let cpu = cpu_time(pid, self.ticks_per_second)?;
            let cpu_percent = match self.previous.iter().find(|(p, _, _)| *p == pid) {
                Some((_, before, at)) => {
                    (cpu.saturating_sub(*before)).as_secs_f64()
                        / now.duration_since(*at).as_secs_f64().max(1e-3)
                        * 100.0
                }
                None => 0.0,
            };
            self.previous.retain(|(p, _, _)| *p != pid);
            self.previous.push((pid, cpu, now));
            self.samples.push(Sample {
                seconds: now.duration_since(self.start).as_secs_f64(),
                process: process.to_owned(),
                pid,
                rss_kib: zilla_tests::rss_kib(pid)?,
                fds: check::fd_count(pid)?,
                cpu_percent,
            });
        }
        Ok(())
    }
}

/// Plots RSS, open files and CPU per process over time, with the faults marked.
const PLOT: &str = r#"
import csv, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
rows = list(csv.DictReader(open(sys.argv[1])))
faults = [float(at) for at in sys.argv[3].split(",") if at]
figure, axes = plt.subplots(3, 1, sharex=True, figsize=(9, 8))
for name in sorted({row["process"] for row in rows}):
    own = [row for row in rows if row["process"] == name]
    seconds = [float(row["seconds"]) for row in own]
    axes[0].plot(seconds, [int(row["rss_kib"]) / 1024 for row in own], label=name)
    axes[1].plot(seconds, [int(row["fds"]) for row in own], label=name)
    axes[2].plot(seconds, [float(row["cpu_percent"]) for row in own], label=name)
for axis, label in zip(axes, ["RSS (MiB)", "open files", "CPU (% of a core)"]):
    axis.set_ylabel(label)
    axis.grid(alpha=0.3)
    for at in faults:
        axis.axvline(at, color="grey", linestyle=":")
axes[0].legend(loc="upper left", fontsize="small")
axes[2].set_xlabel("seconds since the load started (dotted: faults)")
figure.suptitle(sys.argv[4], fontsize="medium")
figure.tight_layout()
figure.savefig(sys.argv[2], dpi=80)
"#;

/// ` (first: <error>)` when there was one.
fn first_error(error: Option<&String>) -> String {
    error.map_or_else(String::new, |e| format!(" (first: {e})"))
}

struct Report<'a> {
    plan: &'a Plan,
    comparison: &'a Comparison,
    grpc: &'a Comparison,
    mqtt: &'a MqttComparison,
    outcome: &'a Outcome,
}

impl Report<'_> {
    fn drift(&self, process: &str) -> Option<Drift> {
        check::drift(
            &self.outcome.samples,
            process,
            self.plan.drift_from.as_secs_f64(),
        )
    }

    fn drift_text(&self, process: &str) -> String {
        self.drift(process).map_or_else(
            || format!("{process}: too few samples"),
            |drift| {
                format!(
                    "{process} {:.1} MiB, {:+.1} %/h, fds {}..{}, CPU {:.0} %",
                    drift.rss_mean_kib / 1024.0,
                    drift.rss_percent_per_hour,
                    drift.fds_min,
                    drift.fds_max,
                    drift.cpu_mean_percent
                )
            },
        )
    }

    /// The first event (message) after each fault, median/max, of `comparison`'s subscribers.
    fn first_events(&self, comparison: &Comparison) -> String {
        self.outcome
            .faults
            .iter()
            .zip(&comparison.first_event)
            .map(|((fault, _, _), first)| {
                format!(
                    "{} {:.2}/{:.2} s{}",
                    fault.name(),
                    first.median.as_secs_f64(),
                    first.max.as_secs_f64(),
                    if first.without > 0 {
                        format!(" ({} without)", first.without)
                    } else {
                        String::new()
                    }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn summary(&self) -> String {
        let c = self.comparison;
        let sse = format!(
            "S10 soak ({} mode, {} s, {} subscribers, {} values/s): acknowledged {} of {}, in the topic {}, \
             acknowledged-but-missing {}; delivered ÷ expected {:.4} (lowest subscriber {:.4}); duplicates {} \
             (written twice in the topic {}, received again as written {}); reconnects {}, failed attempts {}{}; \
             produce requests failed {}{}; first event after each fault (median/max): {}; longest stall after the schedule {:.2} s; \
             after {} s: {}",
            self.plan.mode,
            self.plan.load.as_secs(),
            c.subscribers,
            self.plan.rate,
            c.acknowledged,
            self.outcome.total,
            c.in_topic,
            c.acknowledged_missing,
            c.overall_ratio,
            c.lowest_ratio,
            c.duplicates,
            c.topic_duplicates,
            c.topic_repeats,
            c.reconnects,
            c.failed_attempts,
            first_error(self.outcome.first_error.as_ref()),
            self.outcome.produced.failed,
            first_error(self.outcome.produced.first_error.as_ref()),
            self.first_events(c),
            c.longest_stall.as_secs_f64(),
            self.plan.drift_from.as_secs(),
            ["gateway-a", "gateway-b", "tansu", "haproxy"]
                .map(|process| self.drift_text(process))
                .join("; "),
        );
        format!("{sse}; {}; {}", self.grpc_summary(), self.mqtt.summary())
    }

    fn grpc_summary(&self) -> String {
        let g = self.grpc;
        let o = &self.outcome.grpc;
        format!(
            "gRPC: acknowledged {} of {}, in the topic {}, acknowledged-but-missing {}; {} subscribers, \
             delivered ÷ expected {:.4} (lowest subscriber {:.4}), missed {}, not in the topic {}; duplicates {} \
             (written twice in the topic {}, received again as written {}); reconnects {}, failed attempts {}{}; \
             produce requests failed {}{}; first message after each fault (median/max): {}; longest stall after the schedule {:.2} s",
            g.acknowledged,
            self.outcome.total,
            g.in_topic,
            g.acknowledged_missing,
            g.subscribers,
            g.overall_ratio,
            g.lowest_ratio,
            g.missed,
            g.phantom,
            g.duplicates,
            g.topic_duplicates,
            g.topic_repeats,
            g.reconnects,
            g.failed_attempts,
            first_error(o.first_error.as_ref()),
            o.produced.failed,
            first_error(o.produced.first_error.as_ref()),
            self.first_events(g),
            g.longest_stall.as_secs_f64(),
        )
    }

    fn files(&self) -> (PathBuf, PathBuf) {
        let dir = workspace_dir().join("docs/soak");
        (
            dir.join(format!("{}.csv", self.plan.mode)),
            dir.join(format!("{}.png", self.plan.mode)),
        )
    }

    /// The samples as CSV, and their plot when matplotlib is there.
    fn write_files(&self) -> Result<()> {
        let (csv, png) = self.files();
        if let Some(dir) = csv.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut text = format!("{}\n", check::CSV_HEADER);
        for sample in &self.outcome.samples {
            text.push_str(&sample.csv());
            text.push('\n');
        }
        std::fs::write(&csv, text).with_context(|| format!("cannot write {}", csv.display()))?;
        let faults: Vec<String> = self
            .outcome
            .faults
            .iter()
            .map(|(_, at, _)| format!("{at:.0}"))
            .collect();
        let title = format!(
            "S10 soak, {} mode: {} subscribers, {} values/s, {} ({})",
            self.plan.mode,
            self.comparison.subscribers,
            self.plan.rate,
            today(),
            commit()
        );
        let plotted = Peer::python(PLOT)
            .arg(&csv)
            .arg(&png)
            .arg(faults.join(","))
            .arg(title)
            // The first run builds matplotlib's font cache.
            .timeout(PLOT_TIMEOUT)
            .run()
            .and_then(|output| success(&output));
        if let Err(error) = plotted {
            println!(
                "no plot (install matplotlib with `cargo xtask peers --only python`): {error:#}"
            );
            let _ = std::fs::remove_file(&png);
        }
        Ok(())
    }

    fn table(&self) -> String {
        let c = self.comparison;
        let o = self.outcome;
        let (csv, png) = self.files();
        let name = |path: &Path| {
            path.file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let mut table = format!(
            "| date | commit | load | subscribers | values/s | acknowledged | in the topic | acknowledged-but-missing | delivered ÷ expected (lowest subscriber) | duplicates | longest stall after the schedule |\n\
             |---|---|---|---|---|---|---|---|---|---|---|\n\
             | {} | {} | {} s | {} | {} | {} of {} | {} | {} | {:.4} ({:.4}) | {} | {:.2} s |\n\n",
            today(),
            commit(),
            self.plan.load.as_secs(),
            c.subscribers,
            self.plan.rate,
            c.acknowledged,
            o.total,
            c.in_topic,
            c.acknowledged_missing,
            c.overall_ratio,
            c.lowest_ratio,
            c.duplicates,
            c.longest_stall.as_secs_f64(),
        );
        table.push_str("| fault | at | injected in | first event after it, median | max |\n|---|---|---|---|---|\n");
        for ((fault, at, took), first) in o.faults.iter().zip(&c.first_event) {
            table.push_str(&format!(
                "| {} | {at:.0} s | {:.2} s | {:.2} s | {:.2} s{} |\n",
                fault.name(),
                took.as_secs_f64(),
                first.median.as_secs_f64(),
                first.max.as_secs_f64(),
                if first.without > 0 {
                    format!(" ({} subscribers without)", first.without)
                } else {
                    String::new()
                }
            ));
        }
        table.push_str(&format!(
            "\nAfter the schedule (from {} s; it ended at {:.0} s, when every subscriber had an event after the last fault or after {} s), per process: \
             mean RSS, RSS drift (least squares), open files min..max, mean CPU:\n\n",
            self.plan.drift_from.as_secs(),
            o.schedule_end,
            RECOVERY_MAX.as_secs(),
        ));
        for process in ["gateway-a", "gateway-b", "tansu", "haproxy"] {
            table.push_str(&format!("- {}\n", self.drift_text(process)));
        }
        table.push_str(&format!(
            "\n- Subscribing took {:.1} s, warming up {:.1} s; {} reconnects, {} failed attempts{}; \
             {} produce requests failed{}, {} of them written anyway; {} malformed events; {} duplicates in the topic ({} repeats by subscribers of values written twice, not counted as duplicates).\n\
             - Samples every {} s: [{}](soak/{}){}\n",
            o.subscribe_time.as_secs_f64(),
            o.warm_up_time.as_secs_f64(),
            c.reconnects,
            c.failed_attempts,
            first_error(o.first_error.as_ref()),
            o.produced.failed,
            first_error(o.produced.first_error.as_ref()),
            c.unacknowledged_written,
            c.malformed,
            c.topic_duplicates,
            c.topic_repeats,
            SAMPLE_INTERVAL.as_secs(),
            name(&csv),
            name(&csv),
            if png.exists() {
                format!("; plot:\n\n![soak {}](soak/{})\n", self.plan.mode, name(&png))
            } else {
                ".".to_owned()
            },
        ));
        table.push_str(&format!(
            "- {} (`example.FanoutService/FanoutServerStream` of `messages`, through haproxy's gRPC frontend; the values `POST`ed to `messages` through the replicas at the same rate).\n",
            self.grpc_summary(),
        ));
        table.push_str(&format!(
            "- {} ({} QoS 1 and {} QoS 2 publishers, {} QoS 1 and {} QoS 2 subscribers with persistent sessions, through haproxy's MQTT frontend).\n",
            self.mqtt.summary(),
            self.plan.mqtt.qos1_publishers,
            self.plan.mqtt.qos2_publishers,
            self.plan.mqtt.qos1_subscribers,
            self.plan.mqtt.qos2_subscribers,
        ));
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(short: bool) -> Options {
        Options {
            minutes: 60,
            short,
            clients: None,
            rate: None,
            no_record: true,
            cache_bytes: None,
        }
    }

    #[test]
    fn faults_come_in_order_and_leave_time_after_the_schedule() {
        for short in [true, false] {
            let plan = Plan::new(&options(short));
            let times: Vec<Duration> = plan.faults.iter().map(|(_, at)| *at).collect();
            assert!(times.windows(2).all(|pair| pair[0] < pair[1]), "{times:?}");
            assert_eq!(plan.faults.len(), 4);
            assert!(plan.drift_from > *times.last().unwrap_or(&Duration::MAX));
            assert!(plan.load >= plan.drift_from + plan.load / 4, "{plan:?}");
        }
        let short = Plan::new(&options(true));
        assert_eq!((short.clients, short.load), (300, Duration::from_secs(100)));
        assert!(!short.release);
        let long = Plan::new(&options(false));
        assert_eq!((long.clients, long.load), (5000, Duration::from_secs(3600)));
    }

    #[test]
    fn haproxy_balances_every_replica_in_tcp_mode() {
        let config = haproxy_config(
            Ports {
                http: 8080,
                mqtt: 1883,
                grpc: 9090,
            },
            &[],
        );
        assert!(config.contains("mode tcp"));
        assert!(config.contains("bind 127.0.0.1:8080"));
        assert!(config.contains("bind 127.0.0.1:1883"));
        assert!(config.contains("bind 127.0.0.1:9090"));
        assert!(config.contains("option redispatch"));
    }
}
