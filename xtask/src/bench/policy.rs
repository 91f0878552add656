//! `cargo xtask bench jwt` (S9, JWT) and `cargo xtask bench metrics-overhead`: what a policy
//! costs S1's gateway. Two gateways proxy to S1's loopback nginx origin: the plain one on
//! `examples/http.proxy`, and the same config with the policy added. wrk loads them in turn in
//! S1's modes and rounds ([`interleaved`]), with the same request to both; the figure is the
//! policy's req/s ÷ the plain gateway's, with the CPU time each spends per request.
//!
//! - jwt: the `http_server` authorizes through a `jwt` guard with one inline RS256 key and
//!   routes only `guarded` requests. One token, minted by PyJWT before the run, is sent to both
//!   gateways as `authorization: Bearer <token>` on every request.
//! - metrics-overhead: the namespace records the metrics of Zilla's `http.metrics` example
//!   (every `http.*` metric, and `stream.opens.sent`, `stream.data.sent`, `stream.active.sent`),
//!   the `http_server` all `http.*` with its `method` and `path` attributes, the `tcp_server`
//!   all `stream.*`; a `prometheus` exporter serves them. After the runs, its counts must cover
//!   every request measured.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use zilla_tests::{Gateway, GatewayBuilder, free_port, python_json, workspace_dir};

use super::http_proxy::{
    Contest, Mode, PATH, Shape, Side, Versus, check_target, interleaved, others_share, pin, rate,
    start_origin,
};
use super::load;
use super::options::Options;
use super::usage::{MachineCpu, load_average, own_cpu_with_children, ticks_per_second};
use super::{commit, record, stop_gateway, today, zilla_binary};

/// A policy measured against the plain S1 gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Jwt,
    Metrics,
}

impl Policy {
    /// Its name in the progress lines and tables.
    fn name(self) -> &'static str {
        match self {
            Self::Jwt => "jwt",
            Self::Metrics => "metrics",
        }
    }

    /// The scenario name, and its markers in docs/benchmarks.md.
    fn scenario(self) -> &'static str {
        match self {
            Self::Jwt => "jwt",
            Self::Metrics => "metrics-overhead",
        }
    }

    /// The least policy req/s ÷ plain req/s aimed for.
    fn target(self) -> f64 {
        match self {
            Self::Jwt => 0.99,
            Self::Metrics => 0.98,
        }
    }
}

const ISSUER: &str = "https://auth.example.com";
const AUDIENCE: &str = "https://api.example.com";
const SCOPE: &str = "read:items";
/// Long enough to outlast any run: a token expiring mid-run would turn every request into 403.
const TOKEN_LIFETIME: Duration = Duration::from_secs(6 * 3600);

/// Generates an RSA 2048 key and prints its public JWK (`n`, `e`, and `kid`, `alg` RS256, `use`
/// sig; PyJWT's `key_ops` left out, as the guard takes none) and one token signed with it for
/// `argv[1]` issuer, `argv[2]` audience, `argv[3]` scope and `argv[4]` seconds of lifetime.
const MINT: &str = r#"
import json, sys, time, jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
issuer, audience, scope, lifetime = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
key = rsa.generate_private_key(65537, 2048)
jwk = {k: v for k, v in json.loads(RSAAlgorithm.to_jwk(key.public_key())).items() if k in ("n", "e")}
jwk.update(kty="RSA")
jwk.update(kid="bench", alg="RS256", use="sig")
now = int(time.time())
claims = {"iss": issuer, "aud": audience, "sub": "bench", "scope": scope, "iat": now,
          "exp": now + lifetime}
token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "bench"})
print(json.dumps({"jwk": jwk, "token": token}))
"#;

/// What the policy's gateway needs, prepared once.
enum Setup {
    /// The public key, as one line of JSON, and the token every request carries.
    Jwt {
        jwk: String,
        token: String,
    },
    Metrics,
}

impl Setup {
    fn of(policy: Policy) -> Result<Self> {
        match policy {
            Policy::Jwt => {
                let lifetime = TOKEN_LIFETIME.as_secs().to_string();
                let minted = python_json(MINT, &[ISSUER, AUDIENCE, SCOPE, &lifetime], "")
                    .context("cannot mint a token with PyJWT")?;
                let token = minted["token"]
                    .as_str()
                    .context("PyJWT printed no token")?
                    .to_owned();
                Ok(Self::Jwt {
                    jwk: minted["jwk"].to_string(),
                    token,
                })
            }
            Policy::Metrics => Ok(Self::Metrics),
        }
    }

    /// The header line wrk sends to both gateways.
    fn header(&self) -> Option<String> {
        match self {
            Self::Jwt { token, .. } => Some(format!("authorization: Bearer {token}")),
            Self::Metrics => None,
        }
    }

    /// `plain` (examples/http.proxy) with the policy added; `metrics_port` is the exporter's.
    fn config(&self, plain: &str, metrics_port: u16) -> Result<String> {
        match self {
            Self::Jwt { jwk, .. } => {
                let guards = format!(
                    "guards:\n\
                     \x20 jwt0:\n\
                     \x20   type: jwt\n\
                     \x20   options:\n\
                     \x20     issuer: {ISSUER}\n\
                     \x20     audience: {AUDIENCE}\n\
                     \x20     roles: scope\n\
                     \x20     keys:\n\
                     \x20       - {jwk}\n"
                );
                let config =
                    replace_once(plain, "\nbindings:\n", &format!("\n{guards}bindings:\n"))?;
                replace_once(
                    &config,
                    HTTP_SERVER_TAIL,
                    &format!(
                        "      versions: [http/1.1]\n\
                         \x20     authorization:\n\
                         \x20       jwt0:\n\
                         \x20         credentials:\n\
                         \x20           headers:\n\
                         \x20             authorization: Bearer {{credentials}}\n\
                         \x20   routes:\n\
                         \x20     - guarded:\n\
                         \x20         jwt0: [{SCOPE}]\n\
                         \x20       exit: http_client\n"
                    ),
                )
            }
            Self::Metrics => {
                let telemetry = format!(
                    "telemetry:\n\
                     \x20 metrics:\n\
                     \x20   - stream.opens.sent\n\
                     \x20   - stream.data.sent\n\
                     \x20   - stream.active.sent\n\
                     \x20   - http.request.size\n\
                     \x20   - http.response.size\n\
                     \x20   - http.active.requests\n\
                     \x20   - http.duration\n\
                     \x20 exporters:\n\
                     \x20   prometheus0:\n\
                     \x20     type: prometheus\n\
                     \x20     options:\n\
                     \x20       endpoints:\n\
                     \x20         - scheme: http\n\
                     \x20           port: {metrics_port}\n\
                     \x20           path: /metrics\n"
                );
                let config =
                    replace_once(plain, "\nbindings:\n", &format!("\n{telemetry}bindings:\n"))?;
                let config = replace_once(
                    &config,
                    "    exit: http_server\n",
                    "    exit: http_server\n    telemetry:\n      metrics:\n        - stream.*\n",
                )?;
                replace_once(
                    &config,
                    HTTP_SERVER_TAIL,
                    concat!(
                        "      versions: [http/1.1]\n",
                        "    exit: http_client\n",
                        "    telemetry:\n",
                        "      metrics:\n",
                        "        - http.*\n",
                        "      attributes:\n",
                        "        method: ${http.request.method}\n",
                        "        path: ${http.request.path}\n",
                    ),
                )
            }
        }
    }
}

/// The end of the `http_server` binding in examples/http.proxy.
const HTTP_SERVER_TAIL: &str = "      versions: [http/1.1]\n    exit: http_client\n";

/// `text` with its one occurrence of `from` replaced by `to`; an error if it has none or several
/// (the example changed, and the policy would land elsewhere).
fn replace_once(text: &str, from: &str, to: &str) -> Result<String> {
    let count = text.matches(from).count();
    ensure!(
        count == 1,
        "examples/http.proxy/zilla.yaml holds {from:?} {count} times instead of once"
    );
    Ok(text.replacen(from, to, 1))
}

/// One mode's plain gateway and the policy's.
struct Gateways {
    mode: Mode,
    plain: Gateway,
    policy: Gateway,
    metrics: SocketAddr,
}

/// Runs the policy's scenario and records its figures (with `--quick`: printed only).
pub fn run(policy: Policy, options: &Options) -> Result<()> {
    let binary = zilla_binary(options)?;
    let ticks = ticks_per_second();
    let machine_before = MachineCpu::now()?;
    let own_before = own_cpu_with_children(ticks)?;
    let load_before = load_average();
    let shape = Shape::of(options);
    let setup = Setup::of(policy)?;
    let header = setup.header();

    let (_dir, body, origin) = start_origin("zilla-bench-policy-")?;
    let origin_port = origin.address().port();
    let plain_path = workspace_dir().join("examples/http.proxy/zilla.yaml");
    let plain_config = std::fs::read_to_string(&plain_path)
        .with_context(|| format!("cannot read {}", plain_path.display()))?;
    let start = |builder: GatewayBuilder, mode: &Mode| {
        builder
            .binary(&binary)
            .workers(mode.workers)
            .env("PROXY_PORT", "0")
            .env("ORIGIN_PORT", origin_port.to_string())
            .start()
    };
    let mut all = Vec::new();
    for mode in Mode::all() {
        let metrics_port = free_port()?;
        let plain = start(Gateway::from_file(&plain_path), &mode)?;
        let with_policy = start(
            Gateway::builder(&setup.config(&plain_config, metrics_port)?),
            &mode,
        )
        .with_context(|| format!("the {} gateway", policy.name()))?;
        if let Some(cpus) = mode.proxy_cpus() {
            pin(plain.pid(), false, &cpus)?;
            pin(with_policy.pid(), false, &cpus)?;
        }
        for (name, gateway) in [("plain", &plain), (policy.name(), &with_policy)] {
            check_target(
                name,
                gateway.address("tcp_server"),
                &body,
                header.as_deref(),
            )?;
        }
        if policy == Policy::Jwt {
            let (status, _) = load::probe(with_policy.address("tcp_server"), PATH, None)?;
            ensure!(
                status == 401,
                "the jwt gateway answered {status} to a request without a token instead of 401"
            );
        }
        all.push(Gateways {
            mode,
            plain,
            policy: with_policy,
            metrics: SocketAddr::from(([127, 0, 0, 1], metrics_port)),
        });
    }

    let contests: Vec<Contest<'_>> = all
        .iter()
        .map(|gateways| Contest {
            mode: gateways.mode,
            reference: Side {
                target: gateways.plain.address("tcp_server"),
                pid: gateways.plain.pid(),
                tree: false,
                header: header.as_deref(),
            },
            candidate: Side {
                target: gateways.policy.address("tcp_server"),
                pid: gateways.policy.pid(),
                tree: false,
                header: header.as_deref(),
            },
        })
        .collect();
    let measured = interleaved(
        &contests,
        ["plain", policy.name()],
        origin.pid(),
        shape,
        ticks,
    )?;
    if policy == Policy::Metrics {
        for (gateways, versus) in all.iter().zip(&measured) {
            check_counted(gateways.metrics, versus.candidate_requests)
                .with_context(|| format!("mode {}", gateways.mode.name))?;
        }
    }
    let modes: Vec<Mode> = all.iter().map(|gateways| gateways.mode).collect();
    for mut gateways in all.drain(..) {
        stop_gateway(&mut gateways.plain)?;
        stop_gateway(&mut gateways.policy)?;
    }
    drop(origin);

    let figures = Figures {
        policy,
        shape,
        modes: modes.into_iter().zip(measured).collect(),
        others_share: others_share(machine_before, own_before, ticks)?,
        load: (load_before, load_average()),
    };
    for line in figures.summaries() {
        println!("{line}");
    }
    if options.quick {
        return Ok(());
    }
    record(policy.scenario(), &figures.table())
}

/// The exporter at `metrics` counted at least `measured` requests in `http.duration` (the
/// warm-up and the checks add a few more).
fn check_counted(metrics: SocketAddr, measured: u64) -> Result<()> {
    let (status, text) = load::probe(metrics, "/metrics", None)?;
    ensure!(status == 200, "the prometheus exporter answered {status}");
    let text = String::from_utf8_lossy(&text);
    let counted = counted_requests(&text)?;
    if counted < measured as f64 {
        bail!(
            "the exporter counted {counted} requests in http_duration_milliseconds_count, fewer than the {measured} measured"
        );
    }
    Ok(())
}

/// The sum of `http_duration_milliseconds_count` over the `http_server` binding's series.
fn counted_requests(exposition: &str) -> Result<f64> {
    let mut total = 0.0;
    let mut series = 0;
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("http_duration_milliseconds_count{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        if labels.contains("binding=\"http_server\"") {
            total += value
                .trim()
                .parse::<f64>()
                .with_context(|| format!("unexpected series: {line}"))?;
            series += 1;
        }
    }
    ensure!(
        series > 0,
        "no http_duration_milliseconds_count series of http_server in:\n{exposition}"
    );
    Ok(total)
}

/// Everything recorded.
struct Figures {
    policy: Policy,
    shape: Shape,
    modes: Vec<(Mode, Versus)>,
    /// The share of the machine's CPU time (all cores) other work took during the run.
    others_share: f64,
    /// The 1-minute load average before and after.
    load: (Option<f64>, Option<f64>),
}

impl Figures {
    fn summaries(&self) -> Vec<String> {
        let name = self.policy.name();
        self.modes
            .iter()
            .map(|(mode, versus)| {
                format!(
                    "{} mode {}: {name} {} req/s, plain {} req/s; {name} ÷ plain {:.3} (rounds {:.3} to {:.3}; target ≥ {}); \
                     {name} {}; plain {}",
                    self.policy.scenario(),
                    mode.describe(),
                    rate(&versus.candidate_rate),
                    rate(&versus.reference_rate),
                    versus.ratio(),
                    versus.round_ratios.min,
                    versus.round_ratios.max,
                    self.policy.target(),
                    versus.candidate.describe(),
                    versus.reference.describe(),
                )
            })
            .collect()
    }

    fn table(&self) -> String {
        let name = self.policy.name();
        let date = today();
        let commit = commit();
        let mut table = format!(
            "`wrk -t2 -c64 -d{}s`, {name} and plain gateway in turn, median (min to max) of {} rounds; \
             CPU per request is user + system time from `/proc/<pid>/stat`:\n\n\
             | date | commit | mode | workers each | {name} req/s | plain req/s | {name} ÷ plain | CPU per request (user + system), {name} / plain | context switches per request, {name} / plain | CPU, {name} / plain | machine idle, {name} / plain run | peak RSS, {name} / plain |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|\n",
            self.shape.duration.as_secs(),
            self.shape.rounds,
        );
        for (mode, versus) in &self.modes {
            table.push_str(&format!(
                "| {date} | {commit} | {} | {} | {} | {:.1} / {:.1} MiB |\n",
                mode.name,
                mode.workers,
                versus.cells(3),
                versus.candidate_peak_rss_mib.median,
                versus.reference_peak_rss_mib.median,
            ));
        }
        table.push('\n');
        for (mode, _) in &self.modes {
            table.push_str(&format!("- Mode {}.\n", mode.describe()));
        }
        let load = |value: Option<f64>| value.map_or_else(|| "?".to_owned(), |v| format!("{v:.1}"));
        let cores = super::http_proxy::cores();
        table.push_str(&format!(
            "- Other work on the {cores}-core machine took {:.0} % of its CPU time during the run; \
             1-minute load average {} before, {} after.\n",
            self.others_share * 100.0,
            load(self.load.0),
            load(self.load.1),
        ));
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain() -> Result<String> {
        Ok(std::fs::read_to_string(
            workspace_dir().join("examples/http.proxy/zilla.yaml"),
        )?)
    }

    /// Both variants are the plain example with the policy added (the JWT one with a key and a
    /// token minted by PyJWT), and the gateway accepts them.
    #[test]
    fn policy_configs_validate() -> Result<()> {
        let plain = plain()?;
        let jwt = Setup::of(Policy::Jwt)?;
        let Setup::Jwt { token, .. } = &jwt else {
            bail!("no token minted");
        };
        assert_eq!(token.split('.').count(), 3, "{token}");
        let jwt = jwt.config(&plain, 7190)?;
        assert!(jwt.contains("guarded:") && jwt.contains(r#""kid":"bench""#));
        let metrics = Setup::Metrics.config(&plain, 7190)?;
        assert!(metrics.contains("- http.*") && metrics.contains("- stream.*"));
        for config in [jwt, metrics] {
            let output = zilla_tests::validate_with_env(
                &config,
                &[("PROXY_PORT", "0"), ("ORIGIN_PORT", "8080")],
            )?;
            assert!(
                output.status.success(),
                "{config}\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    #[test]
    fn a_missing_anchor_is_an_error() {
        assert!(replace_once("name: x\n", "\nbindings:\n", "").is_err());
        assert!(replace_once("a\na\n", "a\n", "b\n").is_err());
    }

    #[test]
    fn requests_are_summed_over_the_http_server_series() -> Result<()> {
        let exposition = "# TYPE http_duration_milliseconds histogram\n\
            http_duration_milliseconds_count{namespace=\"http-proxy\",binding=\"http_server\",method=\"GET\",path=\"/x\"} 1200\n\
            http_duration_milliseconds_count{namespace=\"http-proxy\",binding=\"http_server\",method=\"GET\",path=\"/\"} 3\n\
            http_duration_milliseconds_count{namespace=\"http-proxy\",binding=\"other\"} 99\n\
            http_duration_milliseconds_sum{namespace=\"http-proxy\",binding=\"http_server\"} 4\n";
        assert_eq!(counted_requests(exposition)?, 1203.0);
        assert!(counted_requests("").is_err());
        Ok(())
    }
}
