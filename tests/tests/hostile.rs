//! Hostile clients against the real binary: slowloris heads and bodies, idle HTTP/1.1, HTTP/2
//! and tcp connections, a connection flood against a cap, oversized heads, bodies and HTTP/2
//! frames, HTTP/2 rapid reset, huge `prefer: wait` values and invalid UTF-8.
//!
//! The hostile side is raw sockets (HTTP/2 frames written by hand); alongside every attack a
//! well-behaved `curl` keeps requesting a file over its own keep-alive connection, and must keep
//! succeeding. Each test asserts the protocol's answer, that the gateway's RSS stays bounded
//! and that it never panicked. Short timeouts are set with `-P` properties. Figures (the
//! bystander's p99, the gateway's RSS) are printed for the reader, never asserted on.

#![allow(clippy::print_stderr)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use zilla_tests::{Gateway, Peer, Process};

/// One attack at a time: they share two cores with the gateway.
static SERIAL: Mutex<()> = Mutex::new(());

/// tcp → http → http-filesystem → filesystem, plus a tcp echo listener.
const CONFIG: &str = "name: test
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
    exit: http_filesystem
  http_filesystem:
    type: http-filesystem
    kind: proxy
    routes:
      - when:
          - path: /{path}
        exit: filesystem_server
        with:
          path: ${params.path}
  filesystem_server:
    type: filesystem
    kind: server
    options:
      location: files/
  tcp_echo:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    exit: echo_server
  echo_server:
    type: echo
    kind: server
";

/// Generous: the gateway idles at a few MiB; attacks must not grow it without bound.
const RSS_BOUND_KIB: u64 = 256 * 1024;

/// The gateway with short limits, and `extra` properties.
fn gateway(extra: &[(&str, &str)]) -> Result<Gateway> {
    let mut builder = Gateway::builder(CONFIG)
        .file("files/hello.txt", "hello, world\n")
        .property("zilla.binding.http.header.read.timeout.millis", "1000")
        .property("zilla.binding.http.body.read.timeout.millis", "1000")
        .property("zilla.binding.http.idle.timeout.millis", "1000")
        .property("zilla.binding.tcp.idle.timeout.millis", "1500")
        .property("zilla.binding.http.max.request.body.size", "65536")
        .property("zilla.binding.http.filesystem.maximum.wait.millis", "1000");
    for (name, value) in extra {
        builder = builder.property(name, value);
    }
    builder.start()
}

/// A well-behaved client: `curl` fetching a file `count` times over one HTTP/1.1 keep-alive
/// connection at 20 requests a second, printing status and seconds per request.
struct Bystander {
    curl: Process,
}

impl Bystander {
    fn start(address: SocketAddr, count: u32) -> Result<Self> {
        let url = format!("http://{address}/hello.txt");
        // Line-buffered, so the first answer shows while curl runs.
        let mut curl = Peer::new("stdbuf").args([
            "-oL",
            "curl",
            "-s",
            "--rate",
            "20/s",
            "-w",
            "%{http_code} %{time_total}\\n",
        ]);
        for _ in 0..count {
            curl = curl.args(["-o", "/dev/null", &url]);
        }
        let curl = curl.spawn()?;
        curl.wait_for_stdout("200 ", Duration::from_secs(10))
            .context("the well-behaved client got no first answer")?;
        Ok(Self { curl })
    }

    /// Waits for the client to finish; asserts every request succeeded and prints its p99.
    fn finish(mut self, what: &str) -> Result<()> {
        let status = self.curl.wait(Duration::from_secs(120))?;
        let output = self.curl.stdout();
        let mut seconds = Vec::new();
        for line in output.lines() {
            let (code, time) = line.split_once(' ').context("curl -w line")?;
            ensure!(
                code == "200",
                "{what}: the well-behaved client got {code}:\n{output}"
            );
            seconds.push(time.parse::<f64>()?);
        }
        ensure!(
            status.success(),
            "{what}: curl failed ({status}): {}",
            self.curl.stderr()
        );
        ensure!(!seconds.is_empty(), "{what}: the client made no request");
        seconds.sort_by(f64::total_cmp);
        let p99 = seconds[(seconds.len() * 99 / 100).min(seconds.len() - 1)];
        eprintln!(
            "{what}: well-behaved client: {} requests, all 200, p99 {:.1} ms",
            seconds.len(),
            p99 * 1000.0
        );
        Ok(())
    }
}

/// Runs `attack` against a gateway started with `extra` properties while a [`Bystander`] makes
/// `requests` requests, then checks that the gateway is sane and the bystander was served.
fn under_attack(
    what: &str,
    extra: &[(&str, &str)],
    requests: u32,
    attack: impl FnOnce(&mut Gateway, SocketAddr) -> Result<()>,
) -> Result<()> {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut gateway = gateway(extra)?;
    let address = gateway.address("tcp_server");
    let bystander = Bystander::start(address, requests)?;
    attack(&mut gateway, address)?;
    check_gateway(&mut gateway, what)?;
    bystander.finish(what)?;
    ensure!(
        gateway.terminate()?.success(),
        "{what}: the gateway did not exit cleanly"
    );
    Ok(())
}

/// Checks the gateway is sane after an attack: bounded RSS, no panic, still running.
fn check_gateway(gateway: &mut Gateway, what: &str) -> Result<()> {
    let rss = gateway.rss_kib()?;
    eprintln!("{what}: gateway RSS {rss} KiB");
    ensure!(rss < RSS_BOUND_KIB, "{what}: RSS {rss} KiB");
    let stderr = gateway.stderr();
    ensure!(
        !stderr.contains("panicked"),
        "{what}: the gateway panicked:\n{stderr}"
    );
    ensure!(
        gateway.try_status()?.is_none(),
        "{what}: the gateway exited"
    );
    Ok(())
}

/// Reads until the peer closes (or resets); the bytes read. Fails if still open at `within`.
fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Result<Vec<u8>> {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0; 16 * 1024];
    loop {
        let left = within.saturating_sub(started.elapsed());
        ensure!(!left.is_zero(), "still open after {within:?}");
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buffer) {
            Ok(0) => return Ok(received),
            Ok(read) => received.extend_from_slice(&buffer[..read]),
            Err(error) if error.kind() == ErrorKind::ConnectionReset => return Ok(received),
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                bail!("still open after {within:?}")
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// The status code of the first response in `bytes`.
fn status_of(bytes: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(bytes);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Sends `request` raw and returns the status of the answer (the connection is then dropped).
fn raw_status(address: SocketAddr, request: &[u8]) -> Result<u16> {
    let mut stream = TcpStream::connect(address)?;
    stream.write_all(request)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut received = Vec::new();
    let mut buffer = [0; 4096];
    while !received.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        received.extend_from_slice(&buffer[..read]);
    }
    status_of(&received)
        .with_context(|| format!("no HTTP response: {:?}", String::from_utf8_lossy(&received)))
}

#[test]
fn slowloris_heads_and_bodies_are_cut_after_the_read_timeout() -> Result<()> {
    under_attack("slowloris", &[], 80, |_gateway, address| {
        // Heads trickled one header line every 200 ms, never finished.
        let mut heads = Vec::new();
        for _ in 0..50 {
            let mut stream = TcpStream::connect(address)?;
            stream.write_all(b"GET /hello.txt HTTP/1.1\r\nhost: localhost\r\n")?;
            heads.push(stream);
        }
        // Bodies that promise 1000 bytes, send 10, then stall.
        let mut bodies = Vec::new();
        for index in 0..50 {
            let mut stream = TcpStream::connect(address)?;
            let head = format!(
                "POST /upload-{index}.txt HTTP/1.1\r\nhost: localhost\r\ncontent-length: 1000\r\n\r\n0123456789"
            );
            stream.write_all(head.as_bytes())?;
            bodies.push(stream);
        }
        let started = Instant::now();
        let mut closed_heads = 0;
        while started.elapsed() < Duration::from_secs(10) && closed_heads < heads.len() {
            std::thread::sleep(Duration::from_millis(200));
            closed_heads = 0;
            for stream in &mut heads {
                if stream.write_all(b"x-slow: 1\r\n").is_err() {
                    closed_heads += 1;
                }
            }
        }
        ensure!(
            closed_heads == heads.len(),
            "{closed_heads} of {} slow heads closed",
            heads.len()
        );
        eprintln!("slow heads: all closed after {:?}", started.elapsed());
        for (index, stream) in bodies.iter_mut().enumerate() {
            let answer = read_until_closed(stream, Duration::from_secs(10))
                .with_context(|| format!("slow body {index}"))?;
            ensure!(
                status_of(&answer) == Some(408),
                "slow body {index} answered {:?}",
                String::from_utf8_lossy(&answer)
            );
        }
        Ok(())
    })
}

/// HTTP/2 frames written by hand: the hostile side needs to send what no client library will.
mod h2 {
    use super::*;

    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const GOAWAY: u8 = 0x7;
    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;
    pub const FRAME_SIZE_ERROR: u32 = 0x6;

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let length = payload.len() as u32;
        let mut frame = length.to_be_bytes()[1..].to_vec();
        frame.extend([kind, flags]);
        frame.extend(stream.to_be_bytes());
        frame.extend(payload);
        frame
    }

    /// A request head in HPACK, from the static table and literals without indexing.
    pub fn request(method_post: bool, path: &str) -> Vec<u8> {
        let mut block = vec![if method_post { 0x83 } else { 0x82 }, 0x86];
        // `:path` (static index 4) and `:authority` (index 1), literal values.
        for (index, value) in [(0x04u8, path), (0x01, "localhost")] {
            block.push(index);
            block.push(value.len() as u8);
            block.extend(value.as_bytes());
        }
        block
    }

    /// Opens a connection: preface and empty SETTINGS.
    pub fn connect(address: SocketAddr) -> Result<TcpStream> {
        let mut stream = TcpStream::connect(address)?;
        stream.write_all(PREFACE)?;
        stream.write_all(&frame(SETTINGS, 0, 0, &[]))?;
        Ok(stream)
    }

    /// Reads frames until `GOAWAY` (its error code) or the connection closes (`None`).
    pub fn until_goaway(stream: &mut TcpStream, within: Duration) -> Result<Option<u32>> {
        let started = Instant::now();
        let mut buffer = Vec::new();
        let mut chunk = [0; 16 * 1024];
        loop {
            while buffer.len() >= 9 {
                let length = u32::from_be_bytes([0, buffer[0], buffer[1], buffer[2]]) as usize;
                if buffer.len() < 9 + length {
                    break;
                }
                if buffer[3] == GOAWAY && length >= 8 {
                    let code = &buffer[9 + 4..9 + 8];
                    return Ok(Some(u32::from_be_bytes([
                        code[0], code[1], code[2], code[3],
                    ])));
                }
                buffer.drain(..9 + length);
            }
            let left = within.saturating_sub(started.elapsed());
            ensure!(!left.is_zero(), "no GOAWAY within {within:?}");
            stream.set_read_timeout(Some(left))?;
            match stream.read(&mut chunk) {
                Ok(0) => return Ok(None),
                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                Err(error) if error.kind() == ErrorKind::ConnectionReset => return Ok(None),
                Err(error) => bail!("no GOAWAY within {within:?}: {error}"),
            }
        }
    }
}

#[test]
fn idle_connections_are_closed_after_the_idle_timeout() -> Result<()> {
    under_attack("idle", &[], 80, |gateway, address| {
        // HTTP/1.1: one exchange, then silence on the keep-alive connection.
        let mut h1 = Vec::new();
        for _ in 0..20 {
            let mut stream = TcpStream::connect(address)?;
            stream.write_all(b"GET /hello.txt HTTP/1.1\r\nhost: localhost\r\n\r\n")?;
            h1.push(stream);
        }
        for stream in &mut h1 {
            let received = read_until_closed(stream, Duration::from_secs(10))?;
            ensure!(status_of(&received) == Some(200), "idle h1 exchange");
        }
        // HTTP/2: a connection with no stream gets GOAWAY.
        let mut h2_streams = Vec::new();
        for _ in 0..20 {
            h2_streams.push(h2::connect(address)?);
        }
        for stream in &mut h2_streams {
            let goaway = h2::until_goaway(stream, Duration::from_secs(10))?;
            ensure!(goaway == Some(0), "idle h2: GOAWAY {goaway:?}");
            read_until_closed(stream, Duration::from_secs(10))?;
        }
        // Plain tcp (echo): silence after an echo.
        let echo = gateway.address("tcp_echo");
        let mut stream = TcpStream::connect(echo)?;
        stream.write_all(b"ping")?;
        let mut pong = [0; 4];
        stream.read_exact(&mut pong)?;
        ensure!(&pong == b"ping");
        let started = Instant::now();
        read_until_closed(&mut stream, Duration::from_secs(10))?;
        eprintln!("idle tcp closed after {:?}", started.elapsed());

        Ok(())
    })
}

/// Raises this process's open files limit so it can hold the flood's sockets.
fn raise_open_files(needed: u64) -> Result<()> {
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    if soft < needed {
        ensure!(hard >= needed, "open files hard limit {hard} < {needed}");
        rlimit::setrlimit(rlimit::Resource::NOFILE, needed, hard)?;
    }
    Ok(())
}

#[test]
fn a_connection_flood_is_held_at_the_cap_and_served_again_after() -> Result<()> {
    const FLOOD: usize = 10_000;
    const CAP: usize = 1_000;
    raise_open_files(FLOOD as u64 + 1024)?;
    let properties = [
        ("zilla.binding.tcp.maximum.connections", "1000"),
        // The flood's connections send nothing: keep them until the test closes them.
        ("zilla.binding.http.header.read.timeout.millis", "60000"),
        ("zilla.binding.tcp.idle.timeout.millis", "60000"),
    ];
    // The bystander connects before the flood: it holds one of the places.
    under_attack("flood", &properties, 300, |gateway, address| {
        let started = Instant::now();
        let mut flood = Vec::with_capacity(FLOOD);
        let mut refused_at_connect = 0;
        for _ in 0..FLOOD {
            match TcpStream::connect_timeout(&address, Duration::from_secs(10)) {
                Ok(stream) => flood.push(stream),
                Err(_) => refused_at_connect += 1,
            }
        }
        eprintln!(
            "flood: {FLOOD} connections attempted in {:?}",
            started.elapsed()
        );
        // Give the gateway time to accept (and refuse) the backlog.
        std::thread::sleep(Duration::from_secs(2));
        let mut held = 0;
        let mut refused = refused_at_connect;
        for stream in &mut flood {
            stream.set_nonblocking(true)?;
            let mut byte = [0; 1];
            match stream.read(&mut byte) {
                Err(error) if error.kind() == ErrorKind::WouldBlock => held += 1,
                _ => refused += 1,
            }
        }
        eprintln!("flood: {held} held, {refused} refused");
        check_gateway(gateway, "flood")?;
        ensure!(held < CAP, "{held} flood connections held, cap {CAP}");
        ensure!(held >= CAP - 10, "only {held} flood connections held");
        ensure!(refused == FLOOD - held);
        // Those held are served: a request on one is answered.
        let held_stream = flood
            .iter_mut()
            .find(|stream| {
                let mut byte = [0; 1];
                matches!((&**stream).read(&mut byte), Err(error) if error.kind() == ErrorKind::WouldBlock)
            })
            .context("no held connection")?;
        held_stream.set_nonblocking(false)?;
        held_stream.write_all(
            b"GET /hello.txt HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
        )?;
        let answer = read_until_closed(held_stream, Duration::from_secs(10))?;
        ensure!(
            status_of(&answer) == Some(200),
            "a held connection is served"
        );

        drop(flood);
        // Served again once the flood is gone.
        let started = Instant::now();
        loop {
            let output = Peer::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!("http://{address}/hello.txt"))
                .run()?;
            if output.stdout == b"200" {
                break;
            }
            ensure!(
                started.elapsed() < Duration::from_secs(10),
                "not served again after the flood: {}",
                String::from_utf8_lossy(&output.stdout)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        gateway
            .wait_for_stderr("connection cap reached", Duration::from_secs(5))
            .context("no refusal logged")?;
        Ok(())
    })
}

#[test]
fn oversized_heads_bodies_and_frames_are_refused() -> Result<()> {
    under_attack("oversized", &[], 60, |gateway, address| {
        let dir = tempfile::tempdir()?;
        let url = format!("http://{address}/hello.txt");

        // A 16 KiB header against the 8 KiB default: 431.
        let big_header = format!("x-big: {}", "a".repeat(16 * 1024));
        for http2 in [false, true] {
            let mut curl = Peer::new("curl").args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                &big_header,
            ]);
            if http2 {
                curl = curl.arg("--http2-prior-knowledge");
            }
            let output = curl.arg(&url).run()?;
            let code = String::from_utf8_lossy(&output.stdout).into_owned();
            eprintln!(
                "oversized header over h{}: {code}",
                if http2 { 2 } else { 1 }
            );
            ensure!(
                code == "431",
                "oversized header (h2: {http2}) answered {code}"
            );
        }
        // A 100 KiB body against a 64 KiB limit: 413, declared or chunked.
        let body = dir.path().join("body.bin");
        std::fs::write(&body, vec![b'x'; 100 * 1024])?;
        for chunked in [false, true] {
            let mut curl = Peer::new("curl").args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                "POST",
                "--data-binary",
            ]);
            curl = curl.arg(format!("@{}", body.display()));
            if chunked {
                curl = curl.args(["-H", "transfer-encoding: chunked"]);
            }
            let output = curl
                .arg(format!("http://{address}/big-{chunked}.txt"))
                .run()?;
            let code = String::from_utf8_lossy(&output.stdout).into_owned();
            ensure!(
                code == "413",
                "oversized body (chunked: {chunked}) answered {code}"
            );
        }
        ensure!(
            !gateway.dir().join("files/big-false.txt").exists()
                && !gateway.dir().join("files/big-true.txt").exists(),
            "an oversized body was written"
        );
        // An HTTP/2 DATA frame larger than the 16 KiB maximum frame size: GOAWAY FRAME_SIZE_ERROR.
        let mut stream = h2::connect(address)?;
        stream.write_all(&h2::frame(
            h2::HEADERS,
            h2::END_HEADERS,
            1,
            &h2::request(true, "/frame.txt"),
        ))?;
        // Only the frame header and part of the payload may be read before the error.
        let _ = stream.write_all(&h2::frame(h2::DATA, 0, 1, &vec![0; 20_000]));
        let goaway = h2::until_goaway(&mut stream, Duration::from_secs(10))?;
        ensure!(
            goaway == Some(h2::FRAME_SIZE_ERROR),
            "oversized frame: GOAWAY {goaway:?}"
        );

        Ok(())
    })
}

#[test]
fn http2_rapid_reset_ends_the_connection_and_spares_others() -> Result<()> {
    under_attack("rapid reset", &[], 80, |gateway, address| {
        let rss_before = gateway.rss_kib()?;
        let started = Instant::now();
        let mut goaways = 0;
        for _ in 0..20 {
            let mut stream = h2::connect(address)?;
            // Streams opened and cancelled at once, in batches, as the attack does.
            let mut batch = Vec::new();
            let mut sent = 0;
            'attack: for id in (1..20_000u32).step_by(2) {
                batch.extend(h2::frame(
                    h2::HEADERS,
                    h2::END_HEADERS | h2::END_STREAM,
                    id,
                    &h2::request(false, "/hello.txt"),
                ));
                batch.extend(h2::frame(h2::RST_STREAM, 0, id, &8u32.to_be_bytes()));
                if batch.len() > 32 * 1024 {
                    if stream.write_all(&batch).is_err() {
                        break 'attack;
                    }
                    batch.clear();
                }
                sent += 1;
            }
            let goaway = h2::until_goaway(&mut stream, Duration::from_secs(10))?;
            ensure!(
                goaway == Some(h2::ENHANCE_YOUR_CALM),
                "rapid reset: GOAWAY {goaway:?} after {sent} streams"
            );
            goaways += 1;
        }
        eprintln!(
            "rapid reset: {goaways} connections ended with GOAWAY ENHANCE_YOUR_CALM in {:?}; RSS {rss_before} KiB before",
            started.elapsed()
        );
        Ok(())
    })
}

#[test]
fn a_huge_prefer_wait_is_clamped_and_answered() -> Result<()> {
    under_attack("prefer wait", &[], 40, |_gateway, address| {
        let url = format!("http://{address}/hello.txt");
        let head = Peer::new("curl").args(["-s", "-I", &url]).run()?;
        let head = String::from_utf8_lossy(&head.stdout).into_owned();
        let etag = head
            .lines()
            .find_map(|line| line.strip_prefix("etag: "))
            .context("no etag")?
            .trim()
            .to_owned();
        for wait in ["99999999999", "999999999999999999999999999999"] {
            let started = Instant::now();
            let output = Peer::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                .args(["-H", &format!("if-none-match: {etag}")])
                .args(["-H", &format!("prefer: wait={wait}")])
                .arg(&url)
                .timeout(Duration::from_secs(30))
                .run()?;
            let code = String::from_utf8_lossy(&output.stdout).into_owned();
            eprintln!("prefer: wait={wait}: {code} after {:?}", started.elapsed());
            ensure!(code == "304", "prefer: wait={wait} answered {code}");
        }
        Ok(())
    })
}

#[test]
fn invalid_utf8_in_paths_queries_and_headers_is_answered_without_panic() -> Result<()> {
    under_attack("invalid UTF-8", &[], 40, |_gateway, address| {
        let cases: [(&str, &[u8], &[u16]); 6] = [
            (
                "percent-encoded path",
                b"GET /%FF%FE.txt HTTP/1.1\r\nhost: localhost\r\n\r\n",
                &[400],
            ),
            (
                "raw path bytes",
                b"GET /\xff\xfe.txt HTTP/1.1\r\nhost: localhost\r\n\r\n",
                &[400],
            ),
            (
                "query",
                b"GET /hello.txt?q=%FF%FE&\xff=1 HTTP/1.1\r\nhost: localhost\r\n\r\n",
                &[200, 400],
            ),
            (
                "prefer",
                b"GET /hello.txt HTTP/1.1\r\nhost: localhost\r\nprefer: wait=\xff\xfe\r\n\r\n",
                &[200, 400],
            ),
            (
                "if-none-match",
                b"GET /hello.txt HTTP/1.1\r\nhost: localhost\r\nif-none-match: \"\xff\xfe\"\r\n\r\n",
                &[200, 400],
            ),
            (
                "host",
                b"GET /hello.txt HTTP/1.1\r\nhost: \xff\xfe\r\n\r\n",
                &[400],
            ),
        ];
        for (what, request, expected) in cases {
            let status = raw_status(address, request).with_context(|| what.to_owned())?;
            eprintln!("invalid UTF-8 in {what}: {status}");
            ensure!(
                expected.contains(&status),
                "invalid UTF-8 in {what}: {status}"
            );
        }
        Ok(())
    })
}
