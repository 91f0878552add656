//! `cargo xtask bench validation` (S9, validation): what checking and converting request
//! content costs S7's gateway. Three gateways on `examples/http.kafka.produce` write S7's 1 KB
//! JSON `POST`s to one loopback tansu:
//!
//! - **plain**: the example as it is;
//! - **json**: the same with a JSON Schema `model` on the http server's request content for
//!   `POST /events`, from an `inline` catalog (the shape of Zilla's `http.json.schema`
//!   example): every body is parsed and checked before it is produced;
//! - **avro**: the same with an `avro` model with `view: json` on the `kafka_cache_client`'s
//!   `events` topic value, its schema from a `schema-registry` catalog (the shape of Zilla's
//!   `http.kafka.avro.json`): every body is converted from JSON to Avro binary with the
//!   registry's wire prefix before it is produced. The registry is the test harness's small
//!   one ([`zilla_tests::SchemaRegistry`]), asked once at load.
//!
//! `wrk -t2 -c64` loads them in turn (plain, json, avro, plain, ...) for several rounds after
//! a warm-up of each; the figures are the req/s of each, json ÷ plain (target ≥ 0.95) and
//! avro ÷ plain, and the gateway's CPU time per request. Before the runs, each gateway must
//! answer a valid body `204`, and the json and avro gateways must answer `400` to a body the
//! schema refuses (so the model is applied, not skipped).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use zilla_tests::{Gateway, SchemaRegistry, workspace_dir};

use super::kafka_produce::{
    BODY_LENGTH, CONCURRENCY, MAX_ERROR_SHARE, PATH, WARM_UP, WRK_THREADS, check_post, json_body,
    spawn_wrk, whole, wrk_script,
};
use super::options::Options;
use super::tansu::Broker;
use super::usage::peak_rss_until_exit;
use super::usage::{cpu_time, load_average, ticks_per_second};
use super::{Spread, commit, record, stop_gateway, today, wrk, zilla_binary};

const TOPIC: &str = "events";
const DEFAULT_ROUNDS: usize = 5;
const DEFAULT_RUN: Duration = Duration::from_secs(10);
const QUICK_ROUNDS: usize = 3;
const QUICK_RUN: Duration = Duration::from_secs(5);
/// The least json req/s ÷ plain req/s aimed for.
const TARGET: f64 = 0.95;

/// The JSON Schema of S7's body: every field required and constrained, nothing else allowed.
const JSON_SCHEMA: &str = r#"{"type":"object","properties":{"id":{"type":"string","pattern":"^[0-9a-f-]{36}$"},"type":{"type":"string","enum":["reading","alert"]},"payload":{"type":"string","maxLength":4096}},"required":["id","type","payload"],"additionalProperties":false}"#;

/// The Avro schema of S7's body.
const AVRO_SCHEMA: &str = r#"{"type":"record","name":"Event","namespace":"bench","fields":[{"name":"id","type":"string"},{"name":"type","type":"string"},{"name":"payload","type":"string"}]}"#;

/// A body both schemas refuse: `id` is a number.
const INVALID_BODY: &str = r#"{"id":1,"type":"reading","payload":"x"}"#;

/// The three gateways measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Plain,
    Json,
    Avro,
}

impl Variant {
    const ALL: [Variant; 3] = [Variant::Plain, Variant::Json, Variant::Avro];

    fn name(self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::Json => "json",
            Variant::Avro => "avro",
        }
    }

    /// `plain` (examples/http.kafka.produce) with this variant's model added.
    fn config(self, plain: &str, registry_url: &str) -> Result<String> {
        match self {
            Variant::Plain => Ok(plain.to_owned()),
            Variant::Json => {
                let catalogs = format!(
                    "catalogs:\n\
                     \x20 catalog0:\n\
                     \x20   type: inline\n\
                     \x20   options:\n\
                     \x20     subjects:\n\
                     \x20       event:\n\
                     \x20         schema: '{JSON_SCHEMA}'\n"
                );
                let config =
                    replace_once(plain, "\nbindings:\n", &format!("\n{catalogs}bindings:\n"))?;
                replace_once(
                    &config,
                    "      versions: [http/1.1]\n",
                    "      versions: [http/1.1]\n\
                     \x20     requests:\n\
                     \x20       - path: /events\n\
                     \x20         method: POST\n\
                     \x20         content-type:\n\
                     \x20           - application/json\n\
                     \x20         content:\n\
                     \x20           model: json\n\
                     \x20           catalog:\n\
                     \x20             catalog0:\n\
                     \x20               - subject: event\n",
                )
            }
            Variant::Avro => {
                let catalogs = format!(
                    "catalogs:\n\
                     \x20 registry0:\n\
                     \x20   type: schema-registry\n\
                     \x20   options:\n\
                     \x20     url: {registry_url}\n"
                );
                let config =
                    replace_once(plain, "\nbindings:\n", &format!("\n{catalogs}bindings:\n"))?;
                replace_once(
                    &config,
                    "    kind: cache_client\n",
                    "    kind: cache_client\n\
                     \x20   options:\n\
                     \x20     topics:\n\
                     \x20       - name: events\n\
                     \x20         value:\n\
                     \x20           model: avro\n\
                     \x20           view: json\n\
                     \x20           catalog:\n\
                     \x20             registry0:\n\
                     \x20               - strategy: topic\n\
                     \x20                 version: latest\n",
                )
            }
        }
    }
}

/// `text` with its one occurrence of `from` replaced by `to`; an error if it has none or several
/// (the example changed, and the model would land elsewhere).
fn replace_once(text: &str, from: &str, to: &str) -> Result<String> {
    let count = text.matches(from).count();
    ensure!(
        count == 1,
        "examples/http.kafka.produce/zilla.yaml holds {from:?} {count} times instead of once"
    );
    Ok(text.replacen(from, to, 1))
}

/// One throughput run of one gateway.
struct Run {
    rate: f64,
    /// The gateway's CPU time per request, in µs.
    cpu_us_per_request: f64,
    peak_rss_kib: u64,
}

/// Runs S9 (validation) and records its figures (with `--quick`: printed only).
pub fn run(options: &Options) -> Result<()> {
    let (default_rounds, default_run) = if options.quick {
        (QUICK_ROUNDS, QUICK_RUN)
    } else {
        (DEFAULT_ROUNDS, DEFAULT_RUN)
    };
    let rounds = options.rounds.unwrap_or(default_rounds).max(1);
    let duration = options
        .seconds
        .map_or(default_run, Duration::from_secs)
        .max(Duration::from_secs(1));
    let binary = zilla_binary(options)?;
    let ticks = ticks_per_second();
    let load_before = load_average();

    let dir = super::bench_dir("zilla-bench-validation-")?;
    let body = json_body();
    let script = dir.path().join("post.lua");
    std::fs::write(&script, wrk_script(&body))?;
    let broker = Broker::start()?;
    broker.create_topic(TOPIC, 1)?;
    let registry = SchemaRegistry::start()?;
    registry.register(&format!("{TOPIC}-value"), "AVRO", AVRO_SCHEMA)?;

    let plain_path = workspace_dir().join("examples/http.kafka.produce/zilla.yaml");
    let plain = std::fs::read_to_string(&plain_path)
        .with_context(|| format!("cannot read {}", plain_path.display()))?;
    let mut gateways = Vec::new();
    for variant in Variant::ALL {
        let gateway = Gateway::builder(&variant.config(&plain, registry.url())?)
            .binary(&binary)
            .env("HTTP_PORT", "0")
            .env("KAFKA_BROKER", broker.address())
            .start()
            .with_context(|| format!("the {} gateway", variant.name()))?;
        gateways.push((variant, gateway));
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the checks' runtime")?;
    let valid = Bytes::from(body);
    for (variant, gateway) in &gateways {
        let target = gateway.address("tcp_server");
        runtime
            .block_on(check_post(target, &valid))
            .with_context(|| format!("a valid POST to the {} gateway", variant.name()))?;
        let status = post_status(target, INVALID_BODY)?;
        let expected = if *variant == Variant::Plain { 204 } else { 400 };
        ensure!(
            status == expected,
            "the {} gateway answered {status} to a body the schema refuses, not {expected}",
            variant.name()
        );
    }

    println!(
        "S9 validation: wrk -t{WRK_THREADS} -c{CONCURRENCY} POST {BODY_LENGTH} B JSON, {}s each, plain, json and avro in turn, {rounds} rounds after a warm-up",
        duration.as_secs()
    );
    for (variant, gateway) in &gateways {
        rate_run(gateway, &script, WARM_UP, ticks)
            .with_context(|| format!("warm-up of {}", variant.name()))?;
    }
    let mut rounds_measured: Vec<[Run; 3]> = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let mut runs = Vec::with_capacity(3);
        for (variant, gateway) in &gateways {
            runs.push(
                rate_run(gateway, &script, duration, ticks)
                    .with_context(|| format!("round {round}, {}", variant.name()))?,
            );
        }
        let [plain, json, avro]: [Run; 3] = runs
            .try_into()
            .map_err(|_| anyhow::anyhow!("three runs a round"))?;
        println!(
            "  round {round}: plain {:.0} req/s ({:.0} µs CPU each), json {:.0} req/s ({:.0} µs), avro {:.0} req/s ({:.0} µs); json ÷ plain {:.3}, avro ÷ plain {:.3}",
            plain.rate,
            plain.cpu_us_per_request,
            json.rate,
            json.cpu_us_per_request,
            avro.rate,
            avro.cpu_us_per_request,
            json.rate / plain.rate,
            avro.rate / plain.rate,
        );
        rounds_measured.push([plain, json, avro]);
    }
    for (_, mut gateway) in gateways {
        stop_gateway(&mut gateway)?;
    }
    drop(registry);
    drop(broker);

    let spread = |figure: &dyn Fn(&[Run; 3]) -> f64| {
        Spread::of(&rounds_measured.iter().map(figure).collect::<Vec<_>>())
    };
    let figures = Figures {
        rounds,
        duration,
        plain: spread(&|[plain, _, _]| plain.rate),
        json: spread(&|[_, json, _]| json.rate),
        avro: spread(&|[_, _, avro]| avro.rate),
        json_to_plain: spread(&|[plain, json, _]| json.rate / plain.rate),
        avro_to_plain: spread(&|[plain, _, avro]| avro.rate / plain.rate),
        cpu_us: [
            spread(&|[plain, _, _]| plain.cpu_us_per_request),
            spread(&|[_, json, _]| json.cpu_us_per_request),
            spread(&|[_, _, avro]| avro.cpu_us_per_request),
        ],
        peak_rss_mib: [
            spread(&|[plain, _, _]| plain.peak_rss_kib as f64 / 1024.0),
            spread(&|[_, json, _]| json.peak_rss_kib as f64 / 1024.0),
            spread(&|[_, _, avro]| avro.peak_rss_kib as f64 / 1024.0),
        ],
        load: (load_before, load_average()),
    };
    println!("{}", figures.summary());
    if options.quick {
        return Ok(());
    }
    record("validation", &figures.table())
}

/// One wrk run against `gateway`.
fn rate_run(
    gateway: &Gateway,
    script: &std::path::Path,
    duration: Duration,
    ticks: u64,
) -> Result<Run> {
    let pid = gateway.pid();
    let cpu_before = cpu_time(pid, ticks)?;
    let mut child: Child = spawn_wrk(gateway.address("tcp_server"), script, duration)?;
    let peak_rss_kib = match peak_rss_until_exit(&mut child, pid) {
        Ok(peak) => peak,
        Err(error) => {
            // wrk may already be gone; the error says what went wrong.
            let _ = child.kill();
            let _ = child.wait();
            return Err(error);
        }
    };
    let cpu_used = cpu_time(pid, ticks)?.saturating_sub(cpu_before);
    let report = wrk::finish(child)?;
    if report.non_success > 0
        || report.socket_errors as f64 > MAX_ERROR_SHARE * report.requests as f64
    {
        bail!(
            "{} responses outside 2xx/3xx and {} socket errors in {} requests",
            report.non_success,
            report.socket_errors,
            report.requests
        );
    }
    Ok(Run {
        rate: report.requests_per_second,
        cpu_us_per_request: cpu_used.as_secs_f64() * 1e6 / report.requests.max(1) as f64,
        peak_rss_kib,
    })
}

/// The status a `POST` of `body` to [`PATH`] is answered with, on a connection of its own.
fn post_status(target: SocketAddr, body: &str) -> Result<u16> {
    let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "POST {PATH} HTTP/1.1\r\nhost: {target}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    while !answer.windows(2).any(|pair| pair == b"\r\n") {
        let read = stream.read(&mut buffer)?;
        ensure!(read > 0, "{target} closed the connection without answering");
        answer.extend_from_slice(&buffer[..read]);
        ensure!(
            started.elapsed() < Duration::from_secs(10) && answer.len() < 64 * 1024,
            "no status line from {target}"
        );
    }
    let line = String::from_utf8_lossy(&answer);
    line.split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .with_context(|| format!("not an HTTP status line: {line}"))
}

/// Everything recorded.
struct Figures {
    rounds: usize,
    duration: Duration,
    plain: Spread,
    json: Spread,
    avro: Spread,
    json_to_plain: Spread,
    avro_to_plain: Spread,
    /// CPU µs per request: plain, json, avro.
    cpu_us: [Spread; 3],
    /// Peak RSS under load, MiB: plain, json, avro.
    peak_rss_mib: [Spread; 3],
    load: (Option<f64>, Option<f64>),
}

impl Figures {
    fn summary(&self) -> String {
        format!(
            "S9 validation: plain {:.0} req/s, json {:.0} req/s, avro {:.0} req/s; json ÷ plain {:.3} (rounds {:.3} to {:.3}; target ≥ {TARGET}); \
             avro ÷ plain {:.3} (rounds {:.3} to {:.3}); CPU per request plain / json / avro {:.0} / {:.0} / {:.0} µs",
            self.plain.median,
            self.json.median,
            self.avro.median,
            self.json_to_plain.median,
            self.json_to_plain.min,
            self.json_to_plain.max,
            self.avro_to_plain.median,
            self.avro_to_plain.min,
            self.avro_to_plain.max,
            self.cpu_us[0].median,
            self.cpu_us[1].median,
            self.cpu_us[2].median,
        )
    }

    fn table(&self) -> String {
        let load = |value: Option<f64>| value.map_or_else(|| "?".to_owned(), |v| format!("{v:.1}"));
        format!(
            "`wrk -t{WRK_THREADS} -c{CONCURRENCY} -d{}s` `POST` of {BODY_LENGTH} B JSON, plain, json and avro gateway in turn, median (min to max) of {} rounds; \
             the ratios are medians of each round's ratio; CPU per request is the gateway's user + system time from `/proc/<pid>/stat`:\n\n\
             | date | commit | plain req/s | json req/s | avro req/s | json ÷ plain (target ≥ {TARGET}) | avro ÷ plain | CPU per request plain / json / avro | peak RSS plain / json / avro |\n\
             |---|---|---|---|---|---|---|---|---|\n\
             | {date} | {commit} | {} | {} | {} | **{:.3}** ({:.3} to {:.3}) | **{:.3}** ({:.3} to {:.3}) | {:.0} / {:.0} / {:.0} µs | {:.1} / {:.1} / {:.1} MiB |\n\n\
             - 1-minute load average of the machine: {} before, {} after.\n",
            self.duration.as_secs(),
            self.rounds,
            whole(&self.plain),
            whole(&self.json),
            whole(&self.avro),
            self.json_to_plain.median,
            self.json_to_plain.min,
            self.json_to_plain.max,
            self.avro_to_plain.median,
            self.avro_to_plain.min,
            self.avro_to_plain.max,
            self.cpu_us[0].median,
            self.cpu_us[1].median,
            self.cpu_us[2].median,
            self.peak_rss_mib[0].median,
            self.peak_rss_mib[1].median,
            self.peak_rss_mib[2].median,
            load(self.load.0),
            load(self.load.1),
            date = today(),
            commit = commit(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both model variants are the plain example with the model added, and the gateway
    /// accepts them (the avro one reads its subject from the harness's registry at load).
    #[test]
    fn variant_configs_validate() -> Result<()> {
        let plain = std::fs::read_to_string(
            workspace_dir().join("examples/http.kafka.produce/zilla.yaml"),
        )?;
        let registry = SchemaRegistry::start()?;
        registry.register(&format!("{TOPIC}-value"), "AVRO", AVRO_SCHEMA)?;
        for variant in [Variant::Json, Variant::Avro] {
            let config = variant.config(&plain, registry.url())?;
            assert_ne!(config, plain);
            let output = zilla_tests::validate_with_env(
                &config,
                &[("HTTP_PORT", "0"), ("KAFKA_BROKER", "127.0.0.1:9092")],
            )?;
            assert!(
                output.status.success(),
                "{config}\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// S7's body fits both schemas' shape: the JSON Schema's pattern and enum, the Avro
    /// record's fields.
    #[test]
    fn the_body_fits_the_schemas() -> Result<()> {
        let body: serde_json::Value = serde_json::from_str(&json_body())?;
        let id = body["id"].as_str().context("id")?;
        assert_eq!(id.len(), 36);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit() || c == '-'));
        assert_eq!(body["type"], "reading");
        let schema: serde_json::Value = serde_json::from_str(AVRO_SCHEMA)?;
        let fields: Vec<&str> = schema["fields"]
            .as_array()
            .context("fields")?
            .iter()
            .filter_map(|field| field["name"].as_str())
            .collect();
        let mut keys: Vec<&str> = body
            .as_object()
            .context("object")?
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        let mut sorted = fields.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted);
        Ok(())
    }

    #[test]
    fn a_missing_anchor_is_an_error() {
        assert!(replace_once("name: x\n", "\nbindings:\n", "").is_err());
    }
}
