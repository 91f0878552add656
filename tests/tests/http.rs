//! HTTP through the real binary: HTTP/1.1 and HTTP/2 over TLS to an nginx origin with
//! byte-identical bodies, and a WebSocket proxied to a TLS origin.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use zilla_tests::{Gateway, Peer, free_port, nginx, nginx_h2c, pki};

/// A test CA (`ca.pem`) and a `localhost` leaf it signed: `key.pem`, `leaf.pem` (leaf then CA)
/// and `localhost.pem` (key, leaf and CA, for the vault).
fn certificates(dir: &Path) -> Result<()> {
    pki::certificate(dir, "ca", "/CN=test-ca", None, &[])?;
    pki::server_certificate(dir, "leaf-only", "ca", "localhost")?;
    std::fs::rename(dir.join("leaf-only.key"), dir.join("key.pem"))?;
    let read = |name: &str| std::fs::read(dir.join(name));
    let chain = [read("leaf-only.pem")?, read("ca.pem")?].concat();
    std::fs::write(dir.join("leaf.pem"), &chain)?;
    std::fs::write(
        dir.join("localhost.pem"),
        [read("key.pem")?, chain].concat(),
    )?;
    Ok(())
}

const TLS_PROXY: &str = "name: test
vaults:
  server:
    type: filesystem
    options:
      keys:
        store: localhost.pem
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
      alpn:
        - h2
        - http/1.1
    exit: http_server
  http_server:
    type: http
    kind: server
    options:
      versions:
        - http/1.1
        - h2
    routes:
      - when:
          - headers:
              :path: /files/*
        exit: http_client
  http_client:
    type: http
    kind: client
    exit: tcp_client
  tcp_client:
    type: tcp
    kind: client
    options:
      host: 127.0.0.1
      port: ${{env.ORIGIN_PORT}}
";

fn sha256(path: &Path) -> Result<String> {
    let output = Peer::new("sha256sum").arg(path).run()?;
    Ok(String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned())
}

#[test]
fn http1_and_h2_over_tls_to_nginx_are_byte_identical() -> Result<()> {
    let dir = tempfile::tempdir()?;
    certificates(dir.path())?;
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("files"))?;
    let small: Vec<u8> = (0..1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.join("files/small.bin"), &small)?;
    let big: Vec<u8> = (0..50 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(root.join("files/big.bin"), &big)?;
    let (_nginx, origin) = nginx(&dir.path().join("nginx"), &root)?;

    let mut gateway = Gateway::builder(TLS_PROXY)
        .file(
            "localhost.pem",
            std::fs::read(dir.path().join("localhost.pem"))?,
        )
        .env("ORIGIN_PORT", origin.to_string())
        .start()?;
    let port = gateway.address("tcp_server").port();
    let resolve = format!("localhost:{port}:127.0.0.1");
    for (version, expected_version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        for file in ["small.bin", "big.bin"] {
            let out = dir.path().join(format!("{file}{version}"));
            let output = Peer::new("curl")
                .args(["-sS", "-o"])
                .arg(&out)
                .args(["-w", "%{http_version} %{http_code}", version, "--cacert"])
                .arg(dir.path().join("ca.pem"))
                .args(["--resolve", &resolve])
                .arg(format!("https://localhost:{port}/files/{file}"))
                .timeout(Duration::from_secs(60))
                .run()?;
            let written = String::from_utf8_lossy(&output.stdout).into_owned();
            ensure!(
                written == format!("{expected_version} 200"),
                "{version} {file}: {written} {}",
                String::from_utf8_lossy(&output.stderr)
            );
            assert_eq!(
                sha256(&out)?,
                sha256(&root.join("files").join(file))?,
                "{version} {file}"
            );
        }
    }
    // No route: 404 with an empty body.
    let output = Peer::new("curl")
        .args(["-sS", "-w", "%{http_code}", "--http2", "--cacert"])
        .arg(dir.path().join("ca.pem"))
        .args(["--resolve", &resolve])
        .arg(format!("https://localhost:{port}/elsewhere"))
        .run()?;
    assert_eq!(String::from_utf8_lossy(&output.stdout), "404");
    assert!(gateway.terminate()?.success());
    Ok(())
}

const H2C_ORIGIN_PROXY: &str = "name: test
bindings:
  tcp_server:
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
      versions:
        - http/1.1
    exit: http_client
  http_client:
    type: http
    kind: client
    options:
      versions:
        - h2
    exit: tcp_client
  tcp_client:
    type: tcp
    kind: client
    options:
      host: 127.0.0.1
      port: ${{env.ORIGIN_PORT}}
";

/// An HTTP/2-only client to an nginx origin in cleartext that ends each connection after three
/// requests (`GOAWAY`): every request is answered, over HTTP/2, on new connections as needed;
/// large responses read in parallel arrive whole (the client gives flow-control credit back as
/// it reads).
#[test]
fn an_h2_only_client_reconnects_after_goaway_and_streams_large_bodies() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("files"))?;
    let small = b"small file\n".to_vec();
    std::fs::write(root.join("files/small.txt"), &small)?;
    let big: Vec<u8> = (0..12 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(root.join("files/big.bin"), &big)?;
    let nginx_dir = dir.path().join("nginx");
    let (_nginx, origin) = nginx_h2c(&nginx_dir, &root, "keepalive_requests 3;")?;
    let gateway = Gateway::builder(H2C_ORIGIN_PROXY)
        .env("ORIGIN_PORT", origin.to_string())
        .start()?;
    let base = format!("http://{}", gateway.address("tcp_server"));

    const SMALL_REQUESTS: usize = 10;
    for attempt in 0..SMALL_REQUESTS {
        let output = Peer::new("curl")
            .args(["-sS", "-w", " %{http_code}"])
            .arg(format!("{base}/files/small.txt"))
            .run()?;
        let written = String::from_utf8_lossy(&output.stdout).into_owned();
        assert_eq!(written, "small file\n 200", "request {attempt}");
    }
    let downloads: Vec<_> = (0..4)
        .map(|index| {
            let out = dir.path().join(format!("big-{index}.bin"));
            let process = Peer::new("curl")
                .args(["-sS", "-o"])
                .arg(&out)
                .args(["-w", "%{http_code}"])
                .arg(format!("{base}/files/big.bin"))
                .spawn();
            process.map(|process| (process, out))
        })
        .collect::<Result<_>>()?;
    for (mut process, out) in downloads {
        let status = process.wait(Duration::from_secs(60))?;
        ensure!(status.success(), "curl failed: {}", process.stderr());
        assert_eq!(process.stdout(), "200");
        assert_eq!(sha256(&out)?, sha256(&root.join("files/big.bin"))?);
    }
    // nginx logged every request as HTTP/2, on as many connections as its limit makes.
    let log = std::fs::read_to_string(nginx_dir.join("logs/access.log"))?;
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), SMALL_REQUESTS + 4, "{log}");
    assert!(
        lines
            .iter()
            .all(|line| line.starts_with("200 GET /files/") && line.ends_with(" HTTP/2.0")),
        "{log}"
    );
    Ok(())
}

const WS_PROXY: &str = "name: test
vaults:
  client:
    type: filesystem
    options:
      trust:
        store: ca.pem
        type: pem
bindings:
  tcp_server:
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
      versions:
        - http/1.1
    exit: ws_server
  ws_server:
    type: ws
    kind: server
    routes:
      - when:
          - protocol: echo
        exit: ws_client
  ws_client:
    type: ws
    kind: client
    exit: http_client
  http_client:
    type: http
    kind: client
    exit: tls_client
  tls_client:
    type: tls
    kind: client
    vault: client
    options:
      trust:
        - ca
      sni:
        - localhost
      alpn:
        - http/1.1
    exit: tcp_client
  tcp_client:
    type: tcp
    kind: client
    options:
      host: 127.0.0.1
      port: ${{env.ORIGIN_PORT}}
";

/// A WebSocket echo origin over TLS (Python `websockets`), answering the `echo` subprotocol.
const WSS_ORIGIN: &str = r#"
import asyncio, ssl, sys
import websockets
port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
async def echo(socket):
    async for message in socket:
        await socket.send(message)
async def main():
    async with websockets.serve(echo, "127.0.0.1", port, ssl=context, subprotocols=["echo"]):
        print("ready", flush=True)
        await asyncio.Future()
asyncio.run(main())
"#;

const WS_CLIENT: &str = r#"
import asyncio, sys
import websockets
async def main():
    async with websockets.connect(sys.argv[1], subprotocols=["echo"]) as socket:
        assert socket.subprotocol == "echo", socket.subprotocol
        await socket.send("hello over wss")
        text = await socket.recv()
        await socket.send(b"\x00\x01binary")
        data = await socket.recv()
        print(text, data.hex())
asyncio.run(main())
"#;

#[test]
fn websocket_proxied_to_a_tls_origin() -> Result<()> {
    let dir = tempfile::tempdir()?;
    certificates(dir.path())?;
    let origin = free_port()?;
    let server = Peer::python(WSS_ORIGIN)
        .arg(origin.to_string())
        .arg(dir.path().join("leaf.pem"))
        .arg(dir.path().join("key.pem"))
        .spawn()?;
    server
        .wait_for_stdout("ready", Duration::from_secs(20))
        .context("websocket origin")?;
    let mut gateway = Gateway::builder(WS_PROXY)
        .file("ca.pem", std::fs::read(dir.path().join("ca.pem"))?)
        .env("ORIGIN_PORT", origin.to_string())
        .start()?;
    let address = gateway.address("tcp_server");
    let output = Peer::python(WS_CLIENT)
        .arg(format!("ws://{address}/chat"))
        .timeout(Duration::from_secs(20))
        .run()?;
    ensure!(
        output.status.success(),
        "client: {}\ngateway: {}",
        String::from_utf8_lossy(&output.stderr),
        gateway.stderr()
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("hello over wss {}", "0001".to_owned() + &hex(b"binary"))
    );
    assert!(gateway.terminate()?.success());
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
