//! `cargo xtask demo`: starts the gateway on the examples, with whatever peers they need, checks
//! each with a real client, prints what to try, and stops everything cleanly on Ctrl-C.
//!
//! An example is a config in `examples/`, the environment its `${{env.X}}` read, a check and
//! the commands to show. Examples that need a backend (a Kafka broker, an HTTP origin) start it
//! in [`Setup::peers`] first and hand its address to the config through the environment.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use zilla_tests::{Gateway, Peer, Process, success, workspace_dir};

use crate::peers::Group;
use crate::shell::{cargo, run as run_command};

/// How long a check waits for its answer.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// One example the demo runs.
struct Example {
    /// The folder under `examples/`.
    name: &'static str,
    /// Environment variables its `zilla.yaml` reads.
    env: Vec<(&'static str, String)>,
    /// Proves the running example answers, with a real client.
    check: fn(&Gateway, &Setup) -> Result<()>,
    /// What a person can type to try it.
    tries: fn(&Gateway, &Setup) -> Vec<String>,
}

/// What the examples share: a scratch directory for generated files, and background peers.
struct Setup {
    dir: tempfile::TempDir,
    /// Backends the examples talk to, stopped after the gateways.
    peers: Vec<Process>,
    /// The Kafka bootstrap server the Kafka examples use.
    kafka: String,
}

/// The broker of the Kafka examples: one the user runs, or one the demo starts and stops.
enum Kafka {
    External(String),
    Local(zilla_tests::Broker),
}

impl Kafka {
    fn bootstrap(&self) -> String {
        match self {
            Kafka::External(bootstrap) => bootstrap.clone(),
            Kafka::Local(broker) => broker.address(),
        }
    }
}

impl Setup {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Runs the demo until Ctrl-C (or SIGTERM).
pub fn run() -> Result<()> {
    crate::peers::install(&[Group::Apt])?;
    let kafka = match std::env::var("KAFKA_BOOTSTRAP_SERVER") {
        Ok(bootstrap) if !bootstrap.is_empty() => {
            println!("using the Kafka at KAFKA_BOOTSTRAP_SERVER={bootstrap}");
            Kafka::External(bootstrap)
        }
        _ => {
            // The first run builds the broker (the step says how long it takes).
            crate::peers::install(&[Group::Tansu])?;
            let broker = zilla_tests::Broker::start()?;
            broker.create_topic("items-snapshots", 1, true)?;
            broker.create_topic("events", 1, false)?;
            println!("started a local tansu broker at {}", broker.address());
            Kafka::Local(broker)
        }
    };
    run_command(cargo().args(["build", "-p", "zilla", "--bin", "zilla"]))?;
    let binary = zilla_tests::build_zilla(false, false)?;

    let mut setup = Setup {
        dir: tempfile::Builder::new().prefix("zilla-demo-").tempdir()?,
        peers: Vec::new(),
        kafka: kafka.bootstrap(),
    };
    let examples = vec![
        tcp_echo(),
        tls_echo(&mut setup)?,
        kafka_crud(&setup),
        kafka_fanout(&setup),
    ];

    let mut running = Vec::new();
    for example in examples {
        let config = workspace_dir()
            .join("examples")
            .join(example.name)
            .join("zilla.yaml");
        let mut builder = Gateway::from_file(&config)
            .binary(&binary)
            .own_process_group()
            .echo_output();
        for (name, value) in &example.env {
            builder = builder.env(name, value);
        }
        let gateway = builder
            .start()
            .with_context(|| format!("the {} example did not start", example.name))?;
        running.push((example, gateway));
    }

    println!();
    for (example, gateway) in &running {
        let check = match (example.check)(gateway, &setup) {
            Ok(()) => "checked: it answers".to_owned(),
            Err(error) => format!("CHECK FAILED: {error:#}"),
        };
        println!(
            "{} (examples/{}/zilla.yaml, pid {}): {check}",
            example.name,
            example.name,
            gateway.pid()
        );
        for line in (example.tries)(gateway, &setup) {
            println!("    {line}");
        }
    }
    println!("\nGateway logs follow. Ctrl-C stops the demo.\n");

    let reason = wait_for_stop(&mut running);
    println!(
        "\n{}; stopping",
        reason.as_deref().unwrap_or("a gateway stopped")
    );
    let mut failures = Vec::new();
    for (example, gateway) in &mut running {
        match gateway.terminate() {
            Ok(status) if status.success() => println!("{}: stopped", example.name),
            Ok(status) => failures.push(format!("{}: exited with {status}", example.name)),
            Err(error) => failures.push(format!("{}: {error:#}", example.name)),
        }
    }
    for peer in &mut setup.peers {
        // Peers are ours to stop; how they exit on SIGTERM says nothing about the gateway.
        let _ = peer.terminate();
    }
    reason?;
    if !failures.is_empty() {
        bail!("not stopped cleanly: {}", failures.join("; "));
    }
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM (Ok, with what happened) or for a gateway to exit by itself
/// (an error).
fn wait_for_stop(running: &mut [(Example, Gateway)]) -> Result<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = &mut ctrl_c => return Ok("Ctrl-C".to_owned()),
                _ = terminate.recv() => return Ok("SIGTERM".to_owned()),
                _ = tick.tick() => {
                    for (example, gateway) in running.iter_mut() {
                        if let Some(status) = gateway.try_status()? {
                            bail!("the {} gateway exited by itself ({status})", example.name);
                        }
                    }
                }
            }
        }
    })
}

/// A preferred port when it is free, so the commands stay the same from run to run; otherwise
/// 0, and the gateway picks one.
fn port_or_any(preferred: u16) -> String {
    match TcpListener::bind(("127.0.0.1", preferred)) {
        Ok(_) => preferred.to_string(),
        Err(_) => "0".to_owned(),
    }
}

fn tcp_echo() -> Example {
    Example {
        name: "tcp.echo",
        env: vec![("ECHO_PORT", port_or_any(12345))],
        check: |gateway, _| {
            let address = gateway.address("tcp_server");
            expect_echo(nc(address), "hello from nc")
        },
        tries: |gateway, _| {
            let address = gateway.address("tcp_server");
            vec![format!(
                "echo hello | nc -q1 {} {}",
                address.ip(),
                address.port()
            )]
        },
    }
}

fn kafka_crud(setup: &Setup) -> Example {
    Example {
        name: "http.kafka.crud",
        env: vec![
            ("HTTP_PORT", port_or_any(7114)),
            ("KAFKA_BOOTSTRAP_SERVER", setup.kafka.clone()),
        ],
        check: |gateway, _| {
            let base = format!("http://{}", gateway.address("web_tcp"));
            let put = curl_status(&[
                "-X",
                "PUT",
                "-d",
                r#"{"name":"demo"}"#,
                &format!("{base}/items/demo"),
            ])?;
            if put != "204" {
                bail!("PUT answered {put}");
            }
            let get = curl_status(&[&format!("{base}/items/demo")])?;
            if get != "200" {
                bail!("GET answered {get}");
            }
            Ok(())
        },
        tries: |gateway, _| {
            let base = format!("http://{}", gateway.address("web_tcp"));
            vec![
                format!(
                    "curl -X PUT {base}/items/1 -H 'content-type: application/json' -d '{{\"name\":\"one\"}}'"
                ),
                format!("curl {base}/items/1"),
                format!("curl {base}/items"),
                format!("curl -X DELETE {base}/items/1"),
            ]
        },
    }
}

fn kafka_fanout(setup: &Setup) -> Example {
    Example {
        name: "sse.kafka.fanout",
        env: vec![
            ("HTTP_PORT", port_or_any(7115)),
            ("KAFKA_BOOTSTRAP_SERVER", setup.kafka.clone()),
            (
                "WWW_DIR",
                workspace_dir()
                    .join("examples/sse.kafka.fanout/www")
                    .display()
                    .to_string(),
            ),
        ],
        check: |gateway, _| {
            let base = format!("http://{}", gateway.address("web_tcp"));
            let status = curl_status(&[
                "-X",
                "POST",
                "-d",
                "hello from the demo",
                &format!("{base}/events"),
            ])?;
            if status != "204" {
                bail!("POST answered {status}");
            }
            Ok(())
        },
        tries: |gateway, _| {
            let base = format!("http://{}", gateway.address("web_tcp"));
            vec![
                format!("curl -N {base}/events                       # watch (leave it running)"),
                format!(
                    "curl -X POST {base}/events -d 'hello'       # publish, in another terminal"
                ),
                format!("open {base}/index.html in a browser"),
            ]
        },
    }
}

/// The status code curl got for `args`.
fn curl_status(args: &[&str]) -> Result<String> {
    let output = Peer::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .args(args)
        .run()?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn nc(address: SocketAddr) -> Peer {
    Peer::new("nc").args([address.ip().to_string(), address.port().to_string()])
}

const KEYSTORE_PASSWORD: &str = "demo-only";

fn tls_echo(setup: &mut Setup) -> Result<Example> {
    generate_keystore(setup.dir.path(), KEYSTORE_PASSWORD)?;
    Ok(Example {
        name: "tls.echo",
        env: vec![
            ("TLS_ECHO_PORT", port_or_any(23456)),
            (
                "KEYSTORE_PATH",
                setup.path("localhost.p12").display().to_string(),
            ),
            ("KEYSTORE_PASSWORD", KEYSTORE_PASSWORD.to_owned()),
        ],
        check: |gateway, setup| {
            let address = gateway.address("tcp_server");
            expect_echo(
                s_client(address, &setup.path("localhost.crt")),
                "hello over tls",
            )
        },
        tries: |gateway, setup| {
            let address = gateway.address("tcp_server");
            vec![
                format!(
                    "openssl s_client -quiet -connect {address} -servername localhost -CAfile {} -verify_return_error",
                    setup.path("localhost.crt").display()
                ),
                "(then type a line: it comes back)".to_owned(),
            ]
        },
    })
}

fn s_client(address: SocketAddr, ca_file: &Path) -> Peer {
    Peer::new("openssl")
        .args(["s_client", "-quiet", "-verify_return_error"])
        .args(["-connect", &address.to_string(), "-servername", "localhost"])
        .arg("-CAfile")
        .arg(ca_file)
}

/// A self-signed `localhost` certificate and its key, as PEM (`localhost.crt`, `localhost.key`)
/// and as a PKCS#12 keystore (`localhost.p12`, alias `localhost`, locked with `password`), in
/// `dir`.
pub(crate) fn generate_keystore(dir: &Path, password: &str) -> Result<()> {
    let openssl = |args: &[&str]| -> Result<()> {
        let output = Peer::new("openssl").args(args).current_dir(dir).run()?;
        success(&output).with_context(|| format!("openssl {}", args.join(" ")))
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "30",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
        "-keyout",
        "localhost.key",
        "-out",
        "localhost.crt",
    ])?;
    openssl(&[
        "pkcs12",
        "-export",
        "-name",
        "localhost",
        "-inkey",
        "localhost.key",
        "-in",
        "localhost.crt",
        "-out",
        "localhost.p12",
        "-passout",
        &format!("pass:{password}"),
    ])
}

/// Sends one line through `peer` and waits for it to come back. The peer keeps its stdin
/// open so it does not hang up before the answer arrives; it is killed once it has.
fn expect_echo(peer: Peer, line: &str) -> Result<()> {
    let mut process = peer
        .stdin(format!("{line}\n"))
        .hold_stdin(CHECK_TIMEOUT)
        .spawn()?;
    process.wait_for_stdout(line, CHECK_TIMEOUT)?;
    process.kill();
    Ok(())
}
