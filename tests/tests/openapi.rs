//! The `openapi` binding through the real binary, on `examples/openapi.proxy`: an openapi
//! server generated from a spec in a filesystem catalog, in front of an openapi client calling
//! a real OpenAPI origin, Stoplight Prism mocking the same spec (npm `@stoplight/prism-cli`,
//! installed by `cargo xtask peers`). Driven by `curl`: calls the spec describes pass through
//! to Prism and back; invalid bodies and parameters are answered `400` by the gateway and
//! never reach Prism (its log counts the requests it received); paths the spec does not
//! describe are `404`. Then the config `zilla validate -v` prints, composites expanded, is
//! started on its own and behaves the same.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use zilla_tests::{Gateway, Peer, Process, curl, free_port, peers_dir, workspace_dir};

const LOOPBACK: (&str, &str) = ("zilla.binding.composite.listen.host", "127.0.0.1");

fn prism_binary() -> Result<PathBuf> {
    let prism = peers_dir().join("node/node_modules/.bin/prism");
    ensure!(
        prism.exists(),
        "{} is missing: run `cargo xtask peers`",
        prism.display()
    );
    Ok(prism)
}

/// The example's spec and config, with the gateway's and the origin's ports.
fn example(gateway: u16, origin: u16) -> Result<(String, String)> {
    let dir = workspace_dir().join("examples/openapi.proxy");
    let ports = |text: String| {
        text.replace("localhost:7114", &format!("localhost:{gateway}"))
            .replace("localhost:4010", &format!("localhost:{origin}"))
    };
    Ok((
        ports(std::fs::read_to_string(dir.join("bookshelf.yaml"))?),
        ports(std::fs::read_to_string(dir.join("zilla.yaml"))?),
    ))
}

/// Prism mocking `spec` on 127.0.0.1:`port`.
fn prism(dir: &Path, spec: &str, port: u16) -> Result<Process> {
    std::fs::write(dir.join("bookshelf.yaml"), spec)?;
    let process = Peer::new(prism_binary()?)
        .args(["mock", "-h", "127.0.0.1", "-p", &port.to_string()])
        .arg(dir.join("bookshelf.yaml"))
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(process);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "prism did not listen on {port}: {}{}",
        process.stdout(),
        process.stderr()
    )
}

/// How many requests Prism says it received.
fn received(prism: &Process) -> usize {
    prism.stdout().matches("Request received").count()
}

fn url(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}{path}")
}

/// The calls of the example's README, and the ones the spec forbids.
fn behaves_as_the_spec_says(port: u16, prism: &Process) -> Result<()> {
    let listed = curl(&[&url(port, "/books?limit=5")])?;
    ensure!(listed.status == 200, "GET /books: {listed:?}");
    ensure!(listed.body.contains("Dune"), "GET /books: {listed:?}");
    let found = curl(&[&url(port, "/books/9780441013593")])?;
    ensure!(
        found.status == 200 && found.body.contains("9780441013593"),
        "{found:?}"
    );
    let valid = r#"{"isbn": "9780441013593", "title": "Dune", "pages": 896, "subtitle": null}"#;
    let shelved = curl(&[
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "-d",
        valid,
        &url(port, "/books"),
    ])?;
    ensure!(shelved.status == 201, "POST /books: {shelved:?}");
    let before = received(prism);
    ensure!(
        before >= 3,
        "prism saw {before} requests:\n{}",
        prism.stdout()
    );
    let invalid_bodies = [
        r#"{"isbn": "9780441013593"}"#,
        r#"{"isbn": "978", "title": "Dune"}"#,
        r#"{"isbn": "9780441013593", "title": "Dune", "pages": 0}"#,
        r#"{"isbn": "9780441013593", "title": "Dune", "price": 3}"#,
        r#"not json"#,
    ];
    for body in invalid_bodies {
        for content_type in ["application/json", "text/plain"] {
            let rejected = curl(&[
                "-X",
                "POST",
                "-H",
                &format!("content-type: {content_type}"),
                "-d",
                body,
                &url(port, "/books"),
            ])?;
            ensure!(
                rejected.status == 400,
                "POST /books {body} as {content_type}: {rejected:?}"
            );
        }
    }
    for path in ["/books?limit=500", "/books?limit=x", "/books/123"] {
        let rejected = curl(&[&url(port, path)])?;
        ensure!(rejected.status == 400, "GET {path}: {rejected:?}");
    }
    let undescribed = curl(&["-X", "DELETE", &url(port, "/books")])?;
    ensure!(undescribed.status == 404, "DELETE /books: {undescribed:?}");
    // Let Prism log anything that did reach it.
    std::thread::sleep(Duration::from_millis(500));
    ensure!(
        received(prism) == before,
        "rejected requests reached the origin:\n{}",
        prism.stdout()
    );
    Ok(())
}

#[test]
fn openapi_proxy_validates_against_the_spec_and_its_expansion_behaves_the_same() -> Result<()> {
    let gateway_port = free_port()?;
    let origin_port = free_port()?;
    let (spec, config) = example(gateway_port, origin_port)?;
    let origin_dir = tempfile::tempdir()?;
    let prism = prism(origin_dir.path(), &spec, origin_port)?;

    let mut gateway = Gateway::builder(&config)
        .file("bookshelf.yaml", spec.clone())
        .property(LOOPBACK.0, LOOPBACK.1)
        .start()?;
    let address = gateway.address("example:north_openapi_server");
    ensure!(
        address.to_string() == format!("127.0.0.1:{gateway_port}"),
        "listening on {address}"
    );
    behaves_as_the_spec_says(gateway_port, &prism)?;

    let loopback = format!("{}={}", LOOPBACK.0, LOOPBACK.1);
    let printed = gateway
        .command(["validate", "-v", "-c", "zilla.yaml", "-P", &loopback])?
        .output()
        .context("cannot run zilla validate -v")?;
    ensure!(
        printed.status.success(),
        "validate -v: {}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let expanded = String::from_utf8(printed.stdout)?;
    ensure!(
        expanded.contains("example.north_openapi_server") && !expanded.contains("type: openapi"),
        "{expanded}"
    );
    gateway.terminate()?;

    // The printed config runs on its own, without the property: the host is written in it.
    let gateway = Gateway::builder(&expanded)
        .file("bookshelf.yaml", spec)
        .start()?;
    let names: Vec<&str> = gateway
        .listeners()
        .iter()
        .map(|l| l.binding.as_str())
        .collect();
    ensure!(names == ["example:north_openapi_server"], "{names:?}");
    behaves_as_the_spec_says(gateway_port, &prism)
}

#[test]
fn an_invalid_spec_fails_the_load_at_its_line() -> Result<()> {
    let (spec, config) = example(free_port()?, free_port()?)?;
    let spec = spec.replace("in: query", "in: cookie");
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("zilla.yaml"), config)?;
    std::fs::write(dir.path().join("bookshelf.yaml"), spec)?;
    let output = Peer::new(zilla_tests::zilla_binary()?)
        .args(["validate", "-c", "zilla.yaml"])
        .current_dir(dir.path())
        .run()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(!output.status.success(), "{stderr}");
    ensure!(
        stderr.contains("zilla.yaml:16:11: bindings.north_openapi_server.options.specs.bookshelf: specs/bookshelf:17:15: paths./books.get.parameters[0].in: parameters in `cookie` are not supported yet"),
        "{stderr}"
    );
    Ok(())
}
