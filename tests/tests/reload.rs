//! Hot reload through the real binary never cuts a connection: a listener port added, a
//! catalog edited, a vault's key file replaced. Connections accepted before the reload finish
//! on the pipeline that accepted them; new ones get the new config. Peers: raw sockets, `curl`
//! and `openssl s_client`.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use zilla_tests::{Gateway, Peer, connect, echo, free_port, nginx, pki};

const RELOADED: Duration = Duration::from_secs(10);

/// Waits for the `n`th "config reloaded" line and returns the log from there.
fn reloaded(gateway: &Gateway, n: usize) -> Result<String> {
    let deadline = std::time::Instant::now() + RELOADED;
    loop {
        let stderr = gateway.stderr();
        if let Some((index, _)) = stderr.match_indices("config reloaded").nth(n - 1) {
            let line_start = stderr[..index].rfind('\n').map_or(0, |i| i + 1);
            let line_end = stderr[index..]
                .find('\n')
                .map_or(stderr.len(), |i| index + i);
            return Ok(stderr[line_start..line_end].to_owned());
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "no reload #{n}; stderr:\n{stderr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ports_config(ports: &str) -> String {
    format!(
        "name: test
bindings:
  tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: {ports}
    exit: echo_server
  echo_server:
    type: echo
    kind: server
"
    )
}

#[test]
fn adding_a_listener_port_keeps_open_connections() -> Result<()> {
    let (first, second) = (free_port()?, free_port()?);
    let mut gateway = Gateway::start(&ports_config(&first.to_string()))?;
    let address: SocketAddr = format!("127.0.0.1:{first}").parse()?;
    let mut open = connect(address)?;
    assert_eq!(echo(&mut open, b"before")?, b"before");

    gateway.write_config(&ports_config(&format!("[{first}, {second}]")))?;
    let report = reloaded(&gateway, 1)?;
    ensure!(
        report.contains("built=1") && report.contains("kept=1") && report.contains("retired=1"),
        "{report}"
    );
    // The connection accepted by the replaced server still works, through the same echo...
    assert_eq!(echo(&mut open, b"after")?, b"after");
    // ...and both ports take new connections on the new server.
    assert_eq!(echo(&mut connect(address)?, b"first")?, b"first");
    let added: SocketAddr = format!("127.0.0.1:{second}").parse()?;
    assert_eq!(echo(&mut connect(added)?, b"second")?, b"second");
    assert_eq!(echo(&mut open, b"still")?, b"still");

    drop(open);
    assert!(gateway.terminate()?.success());
    Ok(())
}

fn catalog_config(required: &str) -> String {
    format!(
        r#"name: test
catalogs:
  catalog0:
    type: inline
    options:
      subjects:
        item:
          version: latest
          schema: |
            {{"type": "object", "required": {required}}}
bindings:
  plain_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    exit: plain_echo
  plain_echo:
    type: echo
    kind: server
  http_tcp:
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
      requests:
        - path: /items
          method: POST
          content:
            model: json
            catalog:
              catalog0:
                - subject: item
    exit: http_echo
  http_echo:
    type: echo
    kind: server
"#
    )
}

fn post_status(address: SocketAddr, body: &str) -> Result<String> {
    let output = Peer::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "content-type: application/json",
            "--data-binary",
            body,
            &format!("http://{address}/items"),
        ])
        .timeout(Duration::from_secs(10))
        .run()?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn editing_a_catalog_keeps_connections_of_bindings_that_do_not_use_it() -> Result<()> {
    let mut gateway = Gateway::start(&catalog_config(r#"["id"]"#))?;
    let plain = gateway.address("plain_server");
    let http = gateway.address("http_tcp");
    let mut open = connect(plain)?;
    assert_eq!(echo(&mut open, b"before")?, b"before");
    assert_eq!(post_status(http, r#"{"id": "a"}"#)?, "200");

    gateway.write_config(&catalog_config(r#"["id", "status"]"#))?;
    let report = reloaded(&gateway, 1)?;
    // The http server validates with the catalog, and its tcp server exits to it: both are
    // rebuilt. The plain pipeline and the http server's echo do not use the catalog.
    ensure!(
        report.contains("built=2") && report.contains("kept=3") && report.contains("retired=2"),
        "{report}"
    );
    assert_eq!(echo(&mut open, b"after")?, b"after");
    // New requests see the new schema.
    assert_eq!(post_status(http, r#"{"id": "a"}"#)?, "400");
    assert_eq!(post_status(http, r#"{"id": "a", "status": "x"}"#)?, "200");

    drop(open);
    assert!(gateway.terminate()?.success());
    Ok(())
}

const TLS_CONFIG: &str = "name: test
vaults:
  server:
    type: filesystem
    options:
      keys:
        store: keys
        type: pem
bindings:
  tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    exit: tls_server
  tls_server:
    type: tls
    kind: server
    vault: server
    options:
      keys:
        - localhost
    exit: echo_server
  echo_server:
    type: echo
    kind: server
";

/// Writes a self-signed `localhost` certificate whose organisation is `organisation`, with its
/// key, to `keys/localhost.pem` in `dir`.
fn write_key(dir: &Path, organisation: &str) -> Result<()> {
    std::fs::create_dir_all(dir.join("keys"))?;
    pki::certificate(
        dir,
        "cert",
        &format!("/O={organisation}/CN=localhost"),
        None,
        &["subjectAltName=DNS:localhost"],
    )?;
    let mut pem = std::fs::read(dir.join("cert.key"))?;
    pem.extend(std::fs::read(dir.join("cert.pem"))?);
    // Written next to the store and renamed into it, as a deployment replaces a key file.
    std::fs::write(dir.join("localhost.pem.new"), pem)?;
    std::fs::rename(
        dir.join("localhost.pem.new"),
        dir.join("keys/localhost.pem"),
    )?;
    Ok(())
}

/// The subject of the certificate the server at `address` presents, as `openssl s_client`
/// prints it.
fn presented_subject(address: SocketAddr) -> Result<String> {
    let output = Peer::new("openssl")
        .args([
            "s_client",
            "-connect",
            &address.to_string(),
            "-servername",
            "localhost",
        ])
        .stdin("")
        .timeout(Duration::from_secs(10))
        .run()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find(|line| line.starts_with("subject="))
        .map(str::to_owned)
        .with_context(|| format!("no subject in:\n{stdout}"))
}

/// An `openssl s_client` session kept open: lines written are echoed back through TLS.
struct Session {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Session {
    fn open(address: SocketAddr) -> Result<Self> {
        let mut child = Command::new("openssl")
            .args([
                "s_client",
                "-quiet",
                "-connect",
                &address.to_string(),
                "-servername",
                "localhost",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting openssl s_client")?;
        let input = child.stdin.take().context("no stdin")?;
        let output = BufReader::new(child.stdout.take().context("no stdout")?);
        Ok(Self {
            child,
            input,
            output,
        })
    }

    fn echo(&mut self, line: &str) -> Result<String> {
        writeln!(self.input, "{line}")?;
        self.input.flush()?;
        let mut echoed = String::new();
        self.output.read_line(&mut echoed)?;
        Ok(echoed.trim_end().to_owned())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn replacing_a_vault_key_file_rebuilds_the_tls_binding_and_keeps_open_connections() -> Result<()> {
    let dir = tempfile::tempdir()?;
    write_key(dir.path(), "first")?;
    let pem = std::fs::read(dir.path().join("keys/localhost.pem"))?;
    let mut gateway = Gateway::builder(TLS_CONFIG)
        .file("keys/localhost.pem", pem)
        .start()?;
    let address = gateway.address("tcp_server");
    ensure!(presented_subject(address)?.contains("first"));
    let mut session = Session::open(address)?;
    assert_eq!(session.echo("before")?, "before");

    // The config text stays the same; only the key file changes.
    write_key(gateway.dir(), "second")?;
    let report = reloaded(&gateway, 1)?;
    ensure!(
        report.contains("built=2") && report.contains("kept=1"),
        "{report}"
    );
    // New handshakes get the new certificate; the open session carries on.
    ensure!(presented_subject(address)?.contains("second"));
    assert_eq!(session.echo("after")?, "after");

    drop(session);
    assert!(gateway.terminate()?.success());
    Ok(())
}

/// A config served over HTTP (by nginx, which sends an `ETag` and answers `If-None-Match`) is
/// polled: an unchanged config costs a 304 and no reload, a changed one is reloaded without
/// cutting connections, a broken one or an unreachable server keeps the running config.
#[test]
fn config_from_a_url_is_polled_and_reloaded() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root)?;
    let (first, second) = (free_port()?, free_port()?);
    std::fs::write(root.join("zilla.yaml"), ports_config(&first.to_string()))?;
    let (mut server, port) = nginx(&dir.path().join("nginx"), &root)?;
    let access_log = dir.path().join("nginx/logs/access.log");

    let url = format!("http://127.0.0.1:{port}/zilla.yaml");
    let mut gateway = Gateway::from_url(&url)
        .property("zilla.engine.config.poll.interval.seconds", "1")
        .start()?;
    let address: SocketAddr = format!("127.0.0.1:{first}").parse()?;
    let mut open = connect(address)?;
    assert_eq!(echo(&mut open, b"before")?, b"before");

    // Unchanged: the gateway asks with the ETag nginx gave and gets 304s.
    std::thread::sleep(Duration::from_millis(2500));
    let log = std::fs::read_to_string(&access_log)?;
    ensure!(
        log.lines().next() == Some("200 GET /zilla.yaml HTTP/1.1")
            && log
                .lines()
                .skip(1)
                .any(|line| line.starts_with("304 GET /zilla.yaml")),
        "{log}"
    );
    ensure!(!gateway.stderr().contains("config reloaded"));

    // Changed: reloaded, the open connection kept, the new port served.
    std::fs::write(
        root.join("zilla.yaml"),
        ports_config(&format!("[{first}, {second}]")),
    )?;
    let report = reloaded(&gateway, 1)?;
    ensure!(
        report.contains("built=1") && report.contains("retired=1"),
        "{report}"
    );
    assert_eq!(echo(&mut open, b"after")?, b"after");
    let added: SocketAddr = format!("127.0.0.1:{second}").parse()?;
    assert_eq!(echo(&mut connect(added)?, b"second")?, b"second");

    // Broken: an error naming the URL, and the running config stays.
    std::fs::write(root.join("zilla.yaml"), "name: test\nbindings: [\n")?;
    let deadline = std::time::Instant::now() + RELOADED;
    while !gateway.stderr().contains("config reload failed") {
        ensure!(std::time::Instant::now() < deadline, "{}", gateway.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure!(gateway.stderr().contains(&url), "{}", gateway.stderr());
    assert_eq!(echo(&mut connect(added)?, b"kept")?, b"kept");

    // Unreachable: a warning, and still the running config.
    server.kill();
    std::thread::sleep(Duration::from_millis(1500));
    ensure!(
        gateway
            .stderr()
            .contains(&format!("cannot read config {url}")),
        "{}",
        gateway.stderr()
    );
    assert_eq!(echo(&mut connect(added)?, b"still")?, b"still");
    assert_eq!(echo(&mut open, b"open")?, b"open");

    drop(open);
    assert!(gateway.terminate()?.success());
    Ok(())
}

/// A config URL nothing answers on fails the start with the URL in the error.
#[test]
fn an_unreachable_config_url_fails_the_start() -> Result<()> {
    let url = format!("http://127.0.0.1:{}/zilla.yaml", free_port()?);
    let error = Gateway::from_url(&url).start().unwrap_err().to_string();
    ensure!(
        error.contains(&format!("cannot read config {url}")),
        "{error}"
    );
    Ok(())
}
