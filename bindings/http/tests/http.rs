//! The http binding end to end: pipelines built by the engine from `zilla.yaml`, driven by
//! the real `curl`, raw sockets, hyper clients, and a real `nginx` origin.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use zilla_engine::binding::{Binding, BindingFactory, BindingSchema, BuildContext, BuildError};
use zilla_engine::components::{ComponentContext, ComponentFactory};
use zilla_engine::guard::{Guard, GuardSession};
use zilla_engine::properties::Properties;
use zilla_engine::stream::{ByteStream, Bytes as ByteKind, BytesHandler, StreamInfo};
use zilla_engine::{BindingKind, Engine, Registry};

const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// Harness

/// A guard for tests: `options.tokens` maps a token to the roles it holds.
struct TokenGuard {
    tokens: BTreeMap<String, Vec<String>>,
}

struct TokenSession {
    identity: String,
    roles: Vec<String>,
}

impl GuardSession for TokenSession {
    fn identity(&self) -> Option<&str> {
        Some(&self.identity)
    }
    fn verify(&self, roles: &[String]) -> bool {
        roles.iter().all(|role| self.roles.contains(role))
    }
    fn attribute(&self, _name: &str) -> Option<String> {
        None
    }
    fn expires_at(&self) -> Option<SystemTime> {
        None
    }
}

impl Guard for TokenGuard {
    fn reauthorize(&self, credentials: &str) -> Option<Arc<dyn GuardSession>> {
        let roles = self.tokens.get(credentials)?;
        Some(Arc::new(TokenSession {
            identity: format!("user-{credentials}"),
            roles: roles.clone(),
        }))
    }
}

struct TokenGuardFactory;

impl ComponentFactory<dyn Guard> for TokenGuardFactory {
    fn type_name(&self) -> &'static str {
        "token"
    }
    fn options_schema(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({"type": "object"}))
    }
    fn build(&self, context: &ComponentContext<'_>) -> Result<Arc<dyn Guard>, BuildError> {
        #[derive(serde::Deserialize, Default)]
        struct Options {
            tokens: BTreeMap<String, Vec<String>>,
        }
        let options: Options = context.options()?;
        Ok(Arc::new(TokenGuard {
            tokens: options.tokens,
        }))
    }
}

/// Hands the bytes handler of its exit to the test, standing in for a transport such as a
/// tls server that has negotiated ALPN.
struct CaptureFactory(Arc<std::sync::Mutex<Option<Arc<dyn BytesHandler>>>>);

struct Captured;
impl Binding for Captured {}

impl BindingFactory for CaptureFactory {
    fn type_name(&self) -> &'static str {
        "capture"
    }
    fn kinds(&self) -> &'static [BindingKind] {
        &[BindingKind::Server]
    }
    fn accepts(&self, _kind: BindingKind) -> &'static [&'static str] {
        &[]
    }
    fn emits(&self, _kind: BindingKind) -> Option<&'static str> {
        Some("bytes")
    }
    fn schema(&self, _kind: BindingKind) -> BindingSchema {
        BindingSchema::default()
    }
    fn build(&self, context: &mut BuildContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
        let exit = context.config().exit.clone().unwrap_or_default();
        let handler = context.exit::<ByteKind>(&exit)?;
        *self.0.lock().unwrap() = Some(handler);
        Ok(Arc::new(Captured))
    }
}

/// A server binding of type `name` answering `http` exchanges with the handler `make` gives.
struct HandlerFactory<H> {
    name: &'static str,
    make: fn() -> H,
}

impl<H: zilla_binding_http::HttpHandler + Binding> BindingFactory for HandlerFactory<H> {
    fn type_name(&self) -> &'static str {
        self.name
    }
    fn kinds(&self) -> &'static [BindingKind] {
        &[BindingKind::Server]
    }
    fn accepts(&self, _kind: BindingKind) -> &'static [&'static str] {
        &["http"]
    }
    fn emits(&self, _kind: BindingKind) -> Option<&'static str> {
        None
    }
    fn schema(&self, _kind: BindingKind) -> BindingSchema {
        BindingSchema::default()
    }
    fn build(&self, context: &mut BuildContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
        let handler = Arc::new((self.make)());
        context.publish::<zilla_binding_http::Http>(handler.clone());
        Ok(handler)
    }
}

/// An `http` handler that reads the whole request body before answering with its length, as
/// a service that parses its input does; a body it cannot read fails the exchange.
struct Collect;
impl Binding for Collect {}

impl zilla_binding_http::HttpHandler for Collect {
    fn handle(
        &self,
        request: zilla_binding_http::Request,
    ) -> zilla_engine::BoxFuture<'_, Result<zilla_binding_http::Response, zilla_engine::StreamError>>
    {
        Box::pin(async move {
            let body = request
                .into_body()
                .collect()
                .await
                .map_err(|error| zilla_engine::StreamError::Protocol(error.to_string()))?;
            let length = body.to_bytes().len();
            Ok(http::Response::new(zilla_binding_http::kind::full(
                length.to_string(),
            )))
        })
    }
}

/// An `http` handler whose answer depends on the path, for responses no origin gives:
/// `/stalled`, `content-length: 5` and a body that sends `hello` and then never ends;
/// `/interim`, a `103` as the final response; anything else, `200` with no body.
struct Answers;
impl Binding for Answers {}

impl zilla_binding_http::HttpHandler for Answers {
    fn handle(
        &self,
        request: zilla_binding_http::Request,
    ) -> zilla_engine::BoxFuture<'_, Result<zilla_binding_http::Response, zilla_engine::StreamError>>
    {
        Box::pin(async move {
            let mut response = match request.uri().path() {
                "/stalled" => {
                    let first =
                        futures_util::stream::iter([Ok::<_, zilla_binding_http::kind::BodyError>(
                            hyper::body::Frame::data(Bytes::from_static(b"hello")),
                        )]);
                    let body = http_body_util::StreamBody::new(futures_util::StreamExt::chain(
                        first,
                        futures_util::stream::pending(),
                    ));
                    let mut response = http::Response::new(zilla_binding_http::kind::boxed(body));
                    response
                        .headers_mut()
                        .insert("content-length", http::HeaderValue::from_static("5"));
                    response
                }
                _ => http::Response::new(zilla_binding_http::kind::empty()),
            };
            if request.uri().path() == "/interim" {
                *response.status_mut() = http::StatusCode::EARLY_HINTS;
            }
            Ok(response)
        })
    }
}

/// A running gateway.
struct Gateway {
    engine: Engine,
}

impl Gateway {
    fn start(yaml: &str) -> Result<Self> {
        Self::start_with(yaml, &[])
    }

    fn start_with(yaml: &str, properties: &[&str]) -> Result<Self> {
        Self::start_in(Registry::new(), yaml, properties)
    }

    fn start_in(mut registry: Registry, yaml: &str, properties: &[&str]) -> Result<Self> {
        zilla_binding_tcp::register(&mut registry);
        zilla_binding_echo::register(&mut registry);
        zilla_binding_http::register(&mut registry);
        registry.guard(TokenGuardFactory);
        let engine = Engine::new(
            registry,
            Properties::from_assignments(properties.iter().copied()),
        );
        let config = engine
            .load(Path::new("zilla.yaml"), yaml)
            .map_err(|errors| anyhow::anyhow!("{errors}"))?;
        engine
            .apply(config)
            .map_err(|errors| anyhow::anyhow!("{errors}"))?;
        Ok(Self { engine })
    }

    /// `tcp server → http server → {name}0`, a binding of `factory`'s type.
    fn serving<H: zilla_binding_http::HttpHandler + Binding>(
        factory: HandlerFactory<H>,
        properties: &[&str],
    ) -> Result<Self> {
        let name = factory.name;
        let mut registry = Registry::new();
        registry.binding(factory);
        let yaml = echo_yaml(&format!("    exit: {name}0")).replace(
            "  echo_server:\n    type: echo",
            &format!("  {name}0:\n    type: {name}"),
        );
        Self::start_in(registry, &yaml, properties)
    }

    fn address(&self) -> SocketAddr {
        self.engine
            .listening()
            .into_iter()
            .find(|(owner, _)| owner.ends_with(":tcp_server"))
            .map(|(_, address)| address)
            .expect("tcp_server listens")
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address())
    }
}

/// An echo pipeline: `tcp server → http server → echo`, with `http_options` under the
/// http server.
fn echo_yaml(http_options: &str) -> String {
    format!(
        r#"
name: test
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
{http_options}
  echo_server:
    type: echo
    kind: server
"#
    )
}

struct CurlOutput {
    status: std::process::ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

impl CurlOutput {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

async fn curl(args: &[&str]) -> Result<CurlOutput> {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new("curl")
            .args(["-sS", "--max-time", "50"])
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("curl timed out")??;
    Ok(CurlOutput {
        status: output.status,
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// `curl -w` fields, one per line, after the body.
async fn curl_status(args: &[&str]) -> Result<(u16, String, CurlOutput)> {
    let mut all = vec!["-w", "%{http_code}\n%{http_version}\n"];
    if !args.contains(&"-o") {
        all.extend(["-o", "/dev/null"]);
    }
    all.extend_from_slice(args);
    let output = curl(&all).await?;
    let text = output.text();
    let mut lines = text.lines();
    let code = lines.next().unwrap_or_default().parse()?;
    let version = lines.next().unwrap_or_default().to_owned();
    Ok((code, version, output))
}

async fn sha256(path: &Path) -> Result<String> {
    let output = Command::new("sha256sum").arg(path).output().await?;
    ensure!(output.status.success(), "sha256sum failed");
    Ok(String::from_utf8(output.stdout)?
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned())
}

/// A file of `size` pseudo-random bytes.
fn random_file(dir: &Path, name: &str, size: usize) -> Result<PathBuf> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64 ^ size as u64;
    let mut bytes = Vec::with_capacity(size);
    while bytes.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(size);
    let path = dir.join(name);
    std::fs::write(&path, bytes)?;
    Ok(path)
}

/// Sends `raw` on a new connection and reads until the server closes or `WAIT` passes.
async fn raw_exchange(address: SocketAddr, raw: &[u8]) -> Result<String> {
    let mut stream = TcpStream::connect(address).await?;
    stream.write_all(raw).await?;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut response)).await;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

const GOAWAY: u8 = 0x7;

/// The types of the HTTP/2 frames in `bytes`.
fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let length =
            usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        types.push(bytes[3]);
        bytes = &bytes[(9 + length).min(bytes.len())..];
    }
    types
}

/// A free loopback port (the listener is dropped before the port is used).
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A real nginx origin on loopback.
struct Nginx {
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
    root: PathBuf,
    port: u16,
    h2_port: u16,
}

impl Nginx {
    async fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().join("www");
        std::fs::create_dir_all(root.join("static"))?;
        random_file(&root.join("static"), "1k.bin", 1024)?;
        let port = free_port()?;
        let h2_port = free_port()?;
        let base = dir.path().display();
        let config = format!(
            r#"
user root;
worker_processes 1;
error_log {base}/error.log warn;
pid {base}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {base}/client_body;
    proxy_temp_path {base}/proxy;
    fastcgi_temp_path {base}/fastcgi;
    uwsgi_temp_path {base}/uwsgi;
    scgi_temp_path {base}/scgi;
    keepalive_requests 10000000;
    server {{
        listen 127.0.0.1:{port};
        listen 127.0.0.1:{h2_port} http2;
        root {root};
        location = /x {{ return 200 "hello from nginx"; }}
        location = /connection {{ return 200 "$connection"; }}
        location = /brief {{ keepalive_timeout 1s; return 200 "$connection"; }}
        location = /protocol {{ return 200 "$server_protocol"; }}
        location = /item {{ return 200 "item=$http_x_item_id host=$host"; }}
        location /static/ {{ }}
    }}
}}
"#,
            root = root.display()
        );
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config)?;
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("nginx is installed (apt-get install nginx-light)")?;
        let deadline = Instant::now() + WAIT;
        loop {
            let up = TcpStream::connect(("127.0.0.1", port)).await.is_ok()
                && TcpStream::connect(("127.0.0.1", h2_port)).await.is_ok();
            if up {
                break;
            }
            if Instant::now() > deadline {
                bail!("nginx did not start");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self {
            child,
            _dir: dir,
            root,
            port,
            h2_port,
        })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // TERM, not KILL: the master then stops its workers, which would outlive a killed
        // master.
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.start_kill();
    }
}

/// `tcp server → http server → http client → tcp client → nginx`.
fn proxy_yaml(nginx_port: u16, client_options: &str, server_routes: &str) -> String {
    format!(
        r#"
name: test
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
{server_routes}
  http_client:
    type: http
    kind: client
{client_options}
    exit: tcp_client
  tcp_client:
    type: tcp
    kind: client
    options:
      host: 127.0.0.1
      port: {nginx_port}
"#
    )
}

// ---------------------------------------------------------------------------------------
// Server: HTTP/1.1 and HTTP/2 through echo

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_over_http11_and_h2_with_keep_alive() -> Result<()> {
    let gateway = Gateway::start(&echo_yaml("    exit: echo_server"))?;
    let dir = tempfile::tempdir()?;
    let input = random_file(dir.path(), "1k.bin", 1024)?;
    let data = format!("@{}", input.display());
    let url = gateway.url("/echo");

    // HTTP/1.1, two requests on one connection.
    let output = curl(&[
        "-v",
        "--http1.1",
        "-H",
        "content-type: application/octet-stream",
        "--data-binary",
        &data,
        &url,
        "--next",
        "--http1.1",
        &url,
    ])
    .await?;
    ensure!(output.status.success(), "{}", output.stderr);
    ensure!(
        output.stdout == std::fs::read(&input)?,
        "the echoed body differs"
    );
    ensure!(
        output.stderr.contains("Re-using existing connection"),
        "the second request used a new connection: {}",
        output.stderr
    );
    ensure!(
        output
            .stderr
            .contains("< content-type: application/octet-stream")
    );

    // HTTP/2 with prior knowledge.
    let echoed = dir.path().join("h2.out");
    let (code, version, output) = curl_status(&[
        "--http2-prior-knowledge",
        "--data-binary",
        &data,
        "-o",
        echoed.to_str().unwrap(),
        &url,
    ])
    .await?;
    ensure!(
        code == 200 && version == "2",
        "{code} {version} {}",
        output.stderr
    );
    ensure!(sha256(&echoed).await? == sha256(&input).await?);

    // HTTP/2 refused when only HTTP/1.1 is served: the gateway closes the connection.
    let h1_only = Gateway::start(&echo_yaml(
        "    options:\n      versions: [http/1.1]\n    exit: echo_server",
    ))?;
    let output = curl(&["--http2-prior-knowledge", &h1_only.url("/")]).await?;
    ensure!(!output.status.success());
    let (code, version, _) = curl_status(&["--http1.1", &h1_only.url("/")]).await?;
    ensure!(code == 200 && version == "1.1");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_uploads_of_1k_and_50m_come_back_identical() -> Result<()> {
    // 50 MiB is past the 8 MiB default body limit: lifted here.
    let gateway = Gateway::start_with(
        &echo_yaml("    exit: echo_server"),
        &["zilla.binding.http.max.request.body.size=0"],
    )?;
    let dir = tempfile::tempdir()?;
    for (name, size) in [("1k.bin", 1024), ("50m.bin", 50 * 1024 * 1024)] {
        let input = random_file(dir.path(), name, size)?;
        let expected = sha256(&input).await?;
        let data = format!("@{}", input.display());
        for version in ["--http1.1", "--http2-prior-knowledge"] {
            let output_path = dir.path().join(format!("{name}{version}.out"));
            let mut args = vec![
                version,
                "--data-binary",
                &data,
                "-o",
                output_path.to_str().unwrap(),
            ];
            if version == "--http1.1" {
                args.extend(["-H", "Transfer-Encoding: chunked"]);
            }
            let url = gateway.url("/upload");
            args.push(&url);
            let (code, _, output) = curl_status(&args).await?;
            ensure!(code == 200, "{name} {version}: {code} {}", output.stderr);
            ensure!(
                sha256(&output_path).await? == expected,
                "{name} {version}: echoed body differs"
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_continue_and_pipelining() -> Result<()> {
    // Echo answers at once, before reading the body: curl must not wait for a 100 then.
    let gateway = Gateway::start(&echo_yaml("    exit: echo_server"))?;
    let started = Instant::now();
    let output = curl(&[
        "--http1.1",
        "--expect100-timeout",
        "10",
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        "hello",
        &gateway.url("/"),
    ])
    .await?;
    ensure!(output.text() == "hello", "{}", output.stderr);
    ensure!(started.elapsed() < Duration::from_secs(5));

    // Two requests written at once are answered in order on the same connection.
    let response = raw_exchange(
        gateway.address(),
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nfirstPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nConnection: close\r\n\r\nsecond",
    )
    .await?;
    let first = response.find("\r\n\r\nfirst").context(response.clone())?;
    let second = response.find("\r\n\r\nsecond").context(response.clone())?;
    ensure!(first < second && response.matches("HTTP/1.1 200 OK").count() == 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_from_the_transport_picks_the_version_and_stream_info_reaches_routes() -> Result<()> {
    let captured = Arc::new(std::sync::Mutex::new(None));
    let mut registry = Registry::new();
    registry.binding(CaptureFactory(captured.clone()));
    let _gateway = Gateway::start_in(
        registry,
        r#"
name: test
bindings:
  capture0:
    type: capture
    kind: server
    exit: http_server
  http_server:
    type: http
    kind: server
    routes:
      - when:
          - headers:
              :scheme: https
        exit: echo_server
  echo_server:
    type: echo
    kind: server
"#,
        &[],
    )?;
    let handler = captured.lock().unwrap().clone().context("captured")?;
    let open = |secure: bool, alpn: &str| {
        let (near, far) = tokio::io::duplex(64 * 1024);
        let handler = handler.clone();
        let info = StreamInfo {
            secure,
            alpn: vec![alpn.to_owned()],
            ..StreamInfo::default()
        };
        tokio::spawn(async move { handler.accept(ByteStream::new(far, info)).await });
        TokioIo::new(near)
    };

    // ALPN `h2`: HTTP/2 from the first byte.
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        open(true, "h2"),
    )
    .await?;
    tokio::spawn(connection);
    let request =
        http::Request::post("https://gateway/").body(Full::new(Bytes::from_static(b"over h2")))?;
    let response = sender.send_request(request).await?;
    ensure!(response.status() == 200 && response.version() == http::Version::HTTP_2);
    ensure!(response.into_body().collect().await?.to_bytes() == "over h2");

    // ALPN `http/1.1` over TLS: `:scheme` is https for origin-form requests; the same
    // request on a plain stream is http and finds no route.
    for (secure, expected) in [(true, 200), (false, 404)] {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(open(secure, "http/1.1")).await?;
        tokio::spawn(connection);
        let request = http::Request::get("/")
            .header("host", "gateway")
            .body(Full::new(Bytes::new()))?;
        let response = sender.send_request(request).await?;
        ensure!(
            response.status() == expected,
            "secure {secure}: {}",
            response.status()
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Server: routing, CORS, authorization

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_headers_and_answers_404_otherwise() -> Result<()> {
    let gateway = Gateway::start(&echo_yaml(
        r#"    routes:
      - when:
          - headers:
              :path: /items/{id}
              :method: POST
              x-foo: "*"
        with:
          headers:
            overrides:
              content-type: text/item-${params.id}
        exit: echo_server"#,
    ))?;
    let output = curl(&[
        "-i",
        "-H",
        "x-foo: bar",
        "--data-binary",
        "body",
        &gateway.url("/items/42?q=1"),
    ])
    .await?;
    let text = output.text();
    ensure!(text.starts_with("HTTP/1.1 200"), "{text}");
    ensure!(text.contains("content-type: text/item-42"), "{text}");
    ensure!(text.ends_with("\r\n\r\nbody"), "{text}");

    for args in [
        vec!["-H", "x-foo: bar", "--data-binary", "b"],
        vec!["--data-binary", "no x-foo"],
        vec!["-H", "x-foo: bar"],
    ] {
        let path = if args.len() == 4 {
            "/other/42"
        } else {
            "/items/42"
        };
        let url = gateway.url(path);
        let mut all = vec!["-w", "%{http_code} %{size_download}"];
        all.extend(args.iter().copied());
        all.push(&url);
        let output = curl(&all).await?;
        ensure!(output.text() == "404 0", "{args:?}: {}", output.text());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_and_response_headers() -> Result<()> {
    let gateway = Gateway::start(&echo_yaml(
        r#"    options:
      access-control:
        policy: cross-origin
        allow:
          origins: [https://example.net:9090]
          methods: [GET, DELETE]
          credentials: true
        max-age: 600
    exit: echo_server"#,
    ))?;
    let url = gateway.url("/");
    let preflight = curl(&[
        "-i",
        "-X",
        "OPTIONS",
        "-H",
        "Origin: https://example.net:9090",
        "-H",
        "Access-Control-Request-Method: DELETE",
        "-H",
        "Access-Control-Request-Headers: x-api-key",
        &url,
    ])
    .await?
    .text()
    .to_ascii_lowercase();
    for expected in [
        "http/1.1 204",
        "access-control-allow-origin: https://example.net:9090",
        "access-control-allow-methods: delete",
        "access-control-allow-headers: x-api-key",
        "access-control-allow-credentials: true",
        "access-control-max-age: 600",
    ] {
        ensure!(
            preflight.contains(expected),
            "{expected} missing in {preflight}"
        );
    }
    let refused = curl(&[
        "-i",
        "-X",
        "OPTIONS",
        "-H",
        "Origin: https://example.net:9090",
        "-H",
        "Access-Control-Request-Method: PUT",
        &url,
    ])
    .await?
    .text();
    ensure!(refused.starts_with("HTTP/1.1 403"), "{refused}");

    let get = curl(&[
        "-i",
        "-H",
        "Origin: https://example.net:9090",
        "-H",
        "content-type: text/plain",
        "--data-binary",
        "x",
        &url,
    ])
    .await?
    .text()
    .to_ascii_lowercase();
    ensure!(get.starts_with("http/1.1 200"), "{get}");
    ensure!(get.contains("access-control-allow-origin: https://example.net:9090"));
    ensure!(get.contains("access-control-allow-credentials: true"));
    ensure!(get.contains("vary: origin"));
    let foreign = curl(&["-i", "-H", "Origin: https://evil.test", &url])
        .await?
        .text();
    ensure!(foreign.starts_with("HTTP/1.1 403"), "{foreign}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// As Zilla decides: with a guard and no session of it, 401 (no credentials) or 403 (refused);
/// a session whose roles no route takes, or no route at all with a session, is 404.
async fn guarded_routes_answer_401_403_or_pass() -> Result<()> {
    let yaml = r#"
name: test
guards:
  guard0:
    type: token
    options:
      tokens:
        reader: [read]
        writer: [read, "write:POST"]
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
      authorization:
        guard0:
          credentials:
            headers:
              authorization: Bearer {credentials}
            query:
              access_token: "{credentials}"
            cookies:
              session: "{credentials}"
    routes:
      - when:
          - headers:
              :path: /items
        guarded:
          guard0: [read, "write:${method}"]
        exit: echo_server
      - when:
          - headers:
              :path: /public
        exit: echo_server
  echo_server:
    type: echo
    kind: server
"#;
    let gateway = Gateway::start(yaml)?;
    let items = gateway.url("/items");
    let with_query = gateway.url("/items?access_token=writer");
    let public = gateway.url("/public");
    let nothing = gateway.url("/nothing");
    let cases: Vec<(Vec<&str>, u16)> = vec![
        (vec!["-X", "POST", &items], 401),
        (
            vec!["-X", "POST", "-H", "authorization: Bearer nobody", &items],
            403,
        ),
        (
            vec!["-X", "POST", "-H", "authorization: Bearer reader", &items],
            404,
        ),
        (
            vec!["-X", "POST", "-H", "authorization: Bearer writer", &items],
            200,
        ),
        (
            vec!["-X", "GET", "-H", "authorization: Bearer writer", &items],
            404,
        ),
        (vec!["-X", "POST", &with_query], 200),
        (
            vec!["-X", "POST", "--cookie", "a=1; session=writer", &items],
            200,
        ),
        (vec![&public], 200),
        (vec![&nothing], 401),
        (vec!["-H", "authorization: Bearer nobody", &nothing], 403),
        (vec!["-H", "authorization: Bearer reader", &nothing], 404),
    ];
    for (args, expected) in cases {
        let (code, _, output) = curl_status(&args).await?;
        ensure!(
            code == expected,
            "{args:?}: {code}, expected {expected}: {}",
            output.stderr
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Server: limits and misbehaving clients

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_requests() -> Result<()> {
    let gateway = Gateway::start_with(
        &echo_yaml("    exit: echo_server"),
        &[
            "zilla.binding.http.max.header.list.size=4096",
            "zilla.binding.http.max.request.body.size=1000",
        ],
    )?;
    let response = raw_exchange(gateway.address(), b"GARBAGE\r\n\r\n").await?;
    ensure!(response.starts_with("HTTP/1.1 400"), "{response:?}");
    let response = raw_exchange(gateway.address(), b"GET / HTTP/1.1\r\n\r\n").await?;
    ensure!(
        response.starts_with("HTTP/1.1 400"),
        "no Host: {response:?}"
    );

    let big = format!("x-big: {}", "a".repeat(5000));
    let url = gateway.url("/");
    let (code, _, _) = curl_status(&["--http1.1", "-H", &big, &url]).await?;
    ensure!(code == 431, "HTTP/1.1 oversized headers: {code}");
    let (code, _, _) = curl_status(&["--http2-prior-knowledge", "-H", &big, &url]).await?;
    ensure!(code == 431, "HTTP/2 oversized headers: {code}");

    let dir = tempfile::tempdir()?;
    let input = random_file(dir.path(), "1k.bin", 1024)?;
    let data = format!("@{}", input.display());
    let (code, _, _) = curl_status(&["--data-binary", &data, &url]).await?;
    ensure!(code == 413, "declared length over the limit: {code}");
    let (code, _, _) = curl_status(&["--data-binary", "small", &url]).await?;
    ensure!(code == 200, "a small body passes: {code}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_bodies_over_the_limit_are_refused_with_413() -> Result<()> {
    let gateway = Gateway::serving(
        HandlerFactory {
            name: "collect",
            make: || Collect,
        },
        &["zilla.binding.http.max.request.body.size=1000"],
    )?;
    let dir = tempfile::tempdir()?;
    let input = random_file(dir.path(), "1k.bin", 1024)?;
    let data = format!("@{}", input.display());
    let url = gateway.url("/");
    for version in ["--http1.1", "--http2-prior-knowledge"] {
        let (code, _, output) = curl_status(&[
            version,
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &data,
            &url,
        ])
        .await?;
        ensure!(code == 413, "{version}: {code} {}", output.stderr);
        let output = curl(&[version, "--data-binary", "within", &url]).await?;
        ensure!(output.text() == "6", "{version}: {}", output.text());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_settings_follow_the_properties() -> Result<()> {
    let gateway = Gateway::start_with(
        &echo_yaml("    exit: echo_server"),
        &[
            "zilla.binding.http.concurrent.streams=7",
            "zilla.binding.http.max.frame.size=32768",
            "zilla.binding.http.server.header=Zilla",
        ],
    )?;
    let output = tokio::time::timeout(
        WAIT,
        Command::new("nghttp")
            .args(["-nv", &gateway.url("/")])
            .output(),
    )
    .await??;
    let text = String::from_utf8_lossy(&output.stdout);
    ensure!(
        text.contains("SETTINGS_MAX_CONCURRENT_STREAMS(0x03):7"),
        "{text}"
    );
    ensure!(
        text.contains("SETTINGS_MAX_FRAME_SIZE(0x05):32768"),
        "{text}"
    );
    ensure!(text.contains("server: Zilla"), "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_keep_alive_connections_and_drains() -> Result<()> {
    let gateway = Gateway::start(&echo_yaml("    exit: echo_server"))?;
    let mut idle = TcpStream::connect(gateway.address()).await?;
    idle.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
        .await?;
    let mut buffer = vec![0; 1024];
    let read = idle.read(&mut buffer).await?;
    ensure!(String::from_utf8_lossy(&buffer[..read]).ends_with("ok"));
    // A connection that only had bodiless requests is served by the server's own loop.
    let mut idle_simple = TcpStream::connect(gateway.address()).await?;
    idle_simple
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    let read = idle_simple.read(&mut buffer).await?;
    ensure!(String::from_utf8_lossy(&buffer[..read]).starts_with("HTTP/1.1 200 OK\r\n"));
    let started = Instant::now();
    ensure!(
        gateway.engine.shutdown(Duration::from_secs(10)).await,
        "not drained"
    );
    ensure!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    for mut connection in [idle, idle_simple] {
        let mut rest = Vec::new();
        tokio::time::timeout(WAIT, connection.read_to_end(&mut rest)).await??;
        ensure!(rest.is_empty());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_are_closed_after_the_header_timeout() -> Result<()> {
    let gateway = Gateway::start_with(
        &echo_yaml("    exit: echo_server"),
        &["zilla.binding.http.header.read.timeout.millis=300"],
    )?;
    let closed_within = |mut stream: TcpStream| async move {
        let started = Instant::now();
        let mut buffer = Vec::new();
        let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut buffer)).await;
        ensure!(read.is_ok(), "the connection stayed open");
        Ok::<_, anyhow::Error>((
            started.elapsed(),
            String::from_utf8_lossy(&buffer).into_owned(),
        ))
    };
    // Silent from the start.
    let silent = TcpStream::connect(gateway.address()).await?;
    let (elapsed, _) = closed_within(silent).await?;
    ensure!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    // A head that never ends.
    let mut slow = TcpStream::connect(gateway.address()).await?;
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await?;
    let (elapsed, _) = closed_within(slow).await?;
    ensure!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    // Idle after one exchange on a keep-alive connection.
    let mut idle = TcpStream::connect(gateway.address()).await?;
    idle.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
        .await?;
    let (_, response) = closed_within(idle).await?;
    ensure!(
        response.starts_with("HTTP/1.1 200") && response.ends_with("ok"),
        "{response}"
    );
    // The same after a bodiless request, which the server's own loop answers.
    let mut idle = TcpStream::connect(gateway.address()).await?;
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    let (elapsed, response) = closed_within(idle).await?;
    ensure!(
        response.starts_with("HTTP/1.1 200") && elapsed < Duration::from_secs(5),
        "{elapsed:?} {response}"
    );
    // A head that stops half-way after a bodiless request.
    let mut slow = TcpStream::connect(gateway.address()).await?;
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n")
        .await?;
    let (elapsed, response) = closed_within(slow).await?;
    ensure!(
        response.matches("HTTP/1.1 200").count() == 1 && elapsed < Duration::from_secs(5),
        "{elapsed:?} {response}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_2000_concurrent_keep_alive_connections() -> Result<()> {
    let gateway = Gateway::start(&echo_yaml("    exit: echo_server"))?;
    let address = gateway.address();
    const CONNECTIONS: usize = 2000;
    let barrier = Arc::new(tokio::sync::Barrier::new(CONNECTIONS));
    let mut tasks = Vec::with_capacity(CONNECTIONS);
    for index in 0..CONNECTIONS {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(address).await?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            let driver = tokio::spawn(connection);
            let mut bodies = Vec::new();
            for round in 0..2 {
                let body = format!("connection {index} round {round}");
                let request = http::Request::post("/")
                    .header("host", "gateway")
                    .body(Full::new(Bytes::from(body.clone())))?;
                let response = sender.send_request(request).await?;
                ensure!(response.status() == 200);
                bodies.push((body, response.into_body().collect().await?.to_bytes()));
                // Every connection is open and has been served once before any goes on.
                if round == 0 {
                    barrier.wait().await;
                }
            }
            drop(sender);
            let _ = driver.await;
            for (sent, echoed) in bodies {
                ensure!(echoed == sent.as_bytes());
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(120), task).await???;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_clients_do_not_disturb_others() -> Result<()> {
    let gateway = Gateway::start(&echo_yaml("    exit: echo_server"))?;
    let address = gateway.address();
    // A client that sends an HTTP/2 preface followed by a frame on stream 0 that is not
    // allowed there, one that trickles a head byte by byte, and one that sends garbage.
    let mut broken_h2 = TcpStream::connect(address).await?;
    broken_h2
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await?;
    broken_h2
        .write_all(&[0, 0, 4, 0x0, 0x1, 0, 0, 0, 0, b'o', b'o', b'p', b's'])
        .await?;
    let trickle = tokio::spawn(async move {
        let mut slow = TcpStream::connect(address).await?;
        for byte in b"GET / HTTP/1.1\r\nHost: slow\r\n" {
            slow.write_all(&[*byte]).await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok::<_, anyhow::Error>(slow)
    });
    let garbage = raw_exchange(address, &[0xff; 300]).await?;
    ensure!(garbage.starts_with("HTTP/1.1 400"), "{garbage:?}");
    // Meanwhile well-behaved clients are served promptly, in both versions.
    for version in ["--http1.1", "--http2-prior-knowledge"] {
        let started = Instant::now();
        let output = curl(&[version, "--data-binary", "fine", &gateway.url("/")]).await?;
        ensure!(output.text() == "fine", "{version}: {}", output.stderr);
        ensure!(started.elapsed() < Duration::from_secs(5));
    }
    // The broken HTTP/2 connection was ended with GOAWAY and closed.
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, broken_h2.read_to_end(&mut rest)).await??;
    ensure!(frame_types(&rest).contains(&GOAWAY), "{rest:?}");
    trickle.abort();
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Client: the proxy pipeline to a real nginx

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_to_nginx_over_pooled_connections() -> Result<()> {
    let nginx = Nginx::start().await?;
    let gateway = Gateway::start(&proxy_yaml(nginx.port, "", "    exit: http_client"))?;
    let (code, _, _) = curl_status(&[&gateway.url("/x")]).await?;
    ensure!(code == 200);
    let output = curl(&[&gateway.url("/x")]).await?;
    ensure!(output.text() == "hello from nginx", "{}", output.stderr);
    // A proxied upload is read only once the origin is reached: the client waiting on
    // `Expect: 100-continue` gets its 100 first.
    let output = curl(&[
        "-v",
        "--http1.1",
        "--expect100-timeout",
        "10",
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        "hello",
        &gateway.url("/x"),
    ])
    .await?;
    ensure!(
        output.stderr.contains("HTTP/1.1 100 Continue"),
        "{}",
        output.stderr
    );
    ensure!(output.text() == "hello from nginx");

    let dir = tempfile::tempdir()?;
    let file = nginx.root.join("static/1k.bin");
    for version in ["--http1.1", "--http2-prior-knowledge"] {
        let out = dir.path().join(format!("static{version}"));
        let (code, _, output) = curl_status(&[
            version,
            "-o",
            out.to_str().unwrap(),
            &gateway.url("/static/1k.bin"),
        ])
        .await?;
        ensure!(code == 200, "{version}: {code} {}", output.stderr);
        ensure!(sha256(&out).await? == sha256(&file).await?, "{version}");
    }
    // Sequential requests reuse one origin connection.
    let mut connections = std::collections::BTreeSet::new();
    for _ in 0..20 {
        connections.insert(curl(&[&gateway.url("/connection")]).await?.text());
    }
    ensure!(
        connections.len() == 1,
        "origin connections: {connections:?}"
    );
    // Concurrent requests share a bounded pool and all succeed.
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let url = gateway.url("/x");
        tasks.push(tokio::spawn(async move { curl(&[&url]).await }));
    }
    for task in tasks {
        ensure!(task.await??.text() == "hello from nginx");
    }
    // An origin that is down answers 503, as Zilla does.
    let down = Gateway::start(&proxy_yaml(free_port()?, "", "    exit: http_client"))?;
    let (code, _, _) = curl_status(&[&down.url("/x")]).await?;
    ensure!(code == 503, "{code}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_connections_closed_while_idle_are_replaced_unseen() -> Result<()> {
    let nginx = Nginx::start().await?;
    let gateway = Gateway::start(&proxy_yaml(nginx.port, "", "    exit: http_client"))?;
    // nginx closes this connection one second after the answer, while it sits idle in the pool.
    let first = curl(&[&gateway.url("/brief")]).await?.text();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The next request finds it closed before sending and goes out on a new one.
    let output = curl(&[&gateway.url("/connection")]).await?;
    let second = output.text();
    ensure!(
        !second.is_empty() && second.chars().all(|c| c.is_ascii_digit()),
        "{second} {}",
        output.stderr
    );
    ensure!(
        second != first,
        "the closed connection {first} was used again"
    );
    for _ in 0..5 {
        let output = curl(&[&gateway.url("/x")]).await?;
        ensure!(output.text() == "hello from nginx", "{}", output.stderr);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_large_bodies_and_speaks_h2_to_the_origin() -> Result<()> {
    let nginx = Nginx::start().await?;
    let gateway = Gateway::start(&proxy_yaml(
        nginx.h2_port,
        "    options:\n      versions: [h2]",
        "    exit: http_client",
    ))?;
    let output = curl(&[&gateway.url("/protocol")]).await?;
    ensure!(
        output.text() == "HTTP/2.0",
        "{} {}",
        output.text(),
        output.stderr
    );
    let output = curl(&["--http2-prior-knowledge", &gateway.url("/static/1k.bin")]).await?;
    ensure!(output.stdout == std::fs::read(nginx.root.join("static/1k.bin"))?);
    let h1 = Gateway::start(&proxy_yaml(nginx.port, "", "    exit: http_client"))?;
    let output = curl(&["--http2-prior-knowledge", &h1.url("/protocol")]).await?;
    ensure!(output.text() == "HTTP/1.1", "{}", output.text());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_overrides_reach_the_origin() -> Result<()> {
    let nginx = Nginx::start().await?;
    let routes = r#"    routes:
      - when:
          - headers:
              :path: /items/{id}
        with:
          headers:
            overrides:
              :path: /item
              :authority: origin.test
              x-item-id: ${params.id}
        exit: http_client"#;
    let gateway = Gateway::start(&proxy_yaml(nginx.port, "", routes))?;
    let output = curl(&[&gateway.url("/items/7")]).await?;
    ensure!(
        output.text() == "item=7 host=origin.test",
        "{}",
        output.text()
    );
    let (code, _, _) = curl_status(&[&gateway.url("/other")]).await?;
    ensure!(code == 404);
    // The client's own overrides: the origin's `host` is the overriding authority, not the
    // client's, over HTTP/1.1 and HTTP/2 alike.
    let client_options = r#"    options:
      versions: [http/1.1]
      overrides:
        :authority: origin.test
        x-item-id: "9""#;
    let gateway = Gateway::start(&proxy_yaml(
        nginx.port,
        client_options,
        "    exit: http_client",
    ))?;
    for version in ["--http1.1", "--http2-prior-knowledge"] {
        let output = curl(&[version, "-H", "host: gateway.test", &gateway.url("/item")]).await?;
        ensure!(
            output.text() == "item=9 host=origin.test",
            "{version}: {}",
            output.text()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_and_streamed_bodies_pass_through_the_client() -> Result<()> {
    // The origin is a second gateway that echoes, so request trailers come back as response
    // trailers; the client speaks HTTP/2 to it.
    let origin = Gateway::start(&echo_yaml("    exit: echo_server"))?;
    let gateway = Gateway::start(&proxy_yaml(
        origin.address().port(),
        "    options:\n      versions: [h2]",
        "    exit: http_client",
    ))?;
    let stream = TcpStream::connect(gateway.address()).await?;
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await?;
    tokio::spawn(connection);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-checksum", http::HeaderValue::from_static("abc123"));
    let frames: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = vec![
        Ok(http_body::Frame::data(Bytes::from_static(b"first "))),
        Ok(http_body::Frame::data(Bytes::from_static(b"second"))),
        Ok(http_body::Frame::trailers(trailers)),
    ];
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
    let request = http::Request::post(format!("http://{}/", gateway.address()))
        .header("content-type", "text/plain")
        .body(body)?;
    let response = sender.send_request(request).await?;
    ensure!(response.status() == 200);
    ensure!(response.headers()["content-type"] == "text/plain");
    let collected = response.into_body().collect().await?;
    let trailers = collected.trailers().cloned().context("response trailers")?;
    ensure!(trailers["x-checksum"] == "abc123");
    ensure!(collected.to_bytes() == "first second");
    Ok(())
}

/// The Python with the `websockets` package (`cargo xtask peers` installs it).
fn python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.peers/venv/bin/python")
}

const WEBSOCKET_ORIGIN: &str = r#"
import asyncio
from websockets.asyncio.server import serve
async def echo(ws):
    async for message in ws:
        await ws.send(message)
async def main():
    async with serve(echo, "127.0.0.1", 0) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()
asyncio.run(main())
"#;

const WEBSOCKET_CLIENT: &str = r#"
import asyncio, sys
from websockets.asyncio.client import connect
async def main():
    async with connect(sys.argv[1]) as ws:
        for text in ["hello", "again"]:
            await ws.send(text)
            print(await ws.recv())
asyncio.run(main())
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_are_proxied_to_a_websocket_origin() -> Result<()> {
    let mut origin = Command::new(python())
        .args(["-c", WEBSOCKET_ORIGIN])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("the peers' Python venv has websockets")?;
    let mut port = String::new();
    let stdout = origin.stdout.take().context("origin stdout")?;
    tokio::time::timeout(
        WAIT,
        tokio::io::AsyncBufReadExt::read_line(&mut tokio::io::BufReader::new(stdout), &mut port),
    )
    .await??;
    let gateway = Gateway::start(&proxy_yaml(
        port.trim().parse()?,
        "",
        "    exit: http_client",
    ))?;
    let url = format!("ws://{}/chat", gateway.address());
    let output = tokio::time::timeout(
        WAIT,
        Command::new(python())
            .args(["-c", WEBSOCKET_CLIENT, &url])
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    ensure!(
        String::from_utf8_lossy(&output.stdout) == "hello\nagain\n",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Client: how the HTTP/1.1 origin leg frames what an origin sends back (RFC 9112 §6.3)

/// What a scripted origin does with a connection once it has written a response.
#[derive(Clone, Copy)]
enum After {
    /// Waits for the next request on it, whatever the response said: a client that must
    /// not reuse the connection is then caught reusing it.
    KeepOpen,
    /// Closes it: the end of a body delimited by close.
    Close,
    /// Closes it a while later, as an origin whose keep-alive timeout runs out.
    CloseLater(Duration),
    /// Answers before reading the request body, then stops sending and reads what still
    /// comes until the peer stops, as nginx's lingering close: the unread upload is not
    /// answered with a reset that could destroy the response in flight.
    Linger,
    /// Closes it at once with a reset (`SO_LINGER` 0), the request body unread: the
    /// client's writes then fail while the response is on its way.
    Reset,
}

/// A request as the scripted origin received it.
#[derive(Clone, Debug)]
struct Received {
    /// The origin connection it came on, numbered from 1 in accept order.
    connection: usize,
    method: String,
    path: String,
}

/// The response bytes for a request, and what follows them.
fn scripted(path: &str) -> (Vec<u8>, After) {
    const CL: &str =
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 12\r\n\r\nhello, world";
    let (response, after): (String, After) = match path {
        "/cl" => (CL.into(), After::KeepOpen),
        // Chunk extensions, quoted ones too, and a trailer section.
        "/chunked" => (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n\
             5;name=value\r\nhello\r\n\
             2;a=1;b=\"two words\"\r\n, \r\n\
             5\r\nworld\r\n\
             0;last\r\nx-checksum: abc123\r\nx-other: 1\r\n\r\n"
                .into(),
            After::KeepOpen,
        ),
        "/chunked-no-trailers" => (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
             5;name=value\r\nhello\r\n\
             2;a=1;b=\"two words\"\r\n, \r\n\
             5\r\nworld\r\n\
             0\r\n\r\n"
                .into(),
            After::KeepOpen,
        ),
        // End-to-end fields in the origin's case, a repeated one, its own date, and the
        // fields of its connection, which go no further.
        "/fields" => (
            "HTTP/1.1 200 OK\r\nServer: origin\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\n\
             X-Mixed-Case: Value One\r\nSet-Cookie: a=1\r\nContent-Length: 12\r\n\
             Set-Cookie: b=2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\
             Content-Type: text/plain\r\n\r\nhello, world"
                .into(),
            After::KeepOpen,
        ),
        // The same fields split by more framing lines than are forwarded as they came.
        "/fields-split" => (
            "HTTP/1.1 200 OK\r\nServer: origin\r\nKeep-Alive: timeout=5\r\n\
             Date: Tue, 01 Dec 2026 00:00:00 GMT\r\nKeep-Alive: timeout=5\r\n\
             X-Mixed-Case: Value One\r\nKeep-Alive: timeout=5\r\nSet-Cookie: a=1\r\n\
             Content-Length: 12\r\nSet-Cookie: b=2\r\nConnection: keep-alive\r\n\
             Content-Type: text/plain\r\n\r\nhello, world"
                .into(),
            After::KeepOpen,
        ),
        // A body sent after its head from a buffer of its own (see the test below).
        "/kb" => (
            format!(
                "HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n{}",
                "0123456789".repeat(100)
            ),
            After::KeepOpen,
        ),
        "/eof" => (
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nread until the origin closes"
                .into(),
            After::Close,
        ),
        // Answered to HEAD: the length of what GET would send, and no body.
        "/head" => (
            "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n".into(),
            After::KeepOpen,
        ),
        "/204" => (
            "HTTP/1.1 204 No Content\r\nx-origin: yes\r\n\r\n".into(),
            After::KeepOpen,
        ),
        "/304" => (
            "HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\n\r\n".into(),
            After::KeepOpen,
        ),
        // RFC 9110 §8.6: the length of the representation a 200 would have carried.
        "/304-with-length" => (
            "HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\ncontent-length: 50\r\n\r\n".into(),
            After::KeepOpen,
        ),
        "/interim" => (
            "HTTP/1.1 100 Continue\r\n\r\n\
             HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload; as=style\r\n\r\n\
             HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal"
                .into(),
            After::KeepOpen,
        ),
        "/http10" => (
            "HTTP/1.0 200 OK\r\ncontent-length: 9\r\n\r\nfrom 1.0!".into(),
            After::KeepOpen,
        ),
        "/close" => (
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 7\r\n\r\nclosing".into(),
            After::KeepOpen,
        ),
        "/bad-length" => (
            "HTTP/1.1 200 OK\r\ncontent-length: abc\r\n\r\nhello".into(),
            After::KeepOpen,
        ),
        "/two-lengths" => (
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!".into(),
            After::KeepOpen,
        ),
        "/bad-status" => (
            "HTTP/1.1 abc OK\r\ncontent-length: 5\r\n\r\nhello".into(),
            After::KeepOpen,
        ),
        // A good chunk first, so the head and some bytes may already be on their way down.
        "/bad-chunk" => (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
             5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n"
                .into(),
            After::KeepOpen,
        ),
        "/overflowing-chunk" => (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
             5\r\nhello\r\nfffffffffffffffffffff\r\nworld\r\n0\r\n\r\n"
                .into(),
            After::KeepOpen,
        ),
        "/te-and-cl" => (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 100\r\n\r\n\
             5\r\nhello\r\n0\r\n\r\n"
                .into(),
            After::KeepOpen,
        ),
        "/brief" => (CL.into(), After::CloseLater(Duration::from_millis(200))),
        // A body that starts and never ends.
        "/hold" => (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n".into(),
            After::KeepOpen,
        ),
        "/early" => (
            "HTTP/1.1 413 Content Too Large\r\nconnection: close\r\ncontent-length: 8\r\n\r\ntoo big!"
                .into(),
            After::Linger,
        ),
        "/early-reset" => (
            "HTTP/1.1 413 Content Too Large\r\nconnection: close\r\ncontent-length: 8\r\n\r\ntoo big!"
                .into(),
            After::Reset,
        ),
        // `/huge-head/{bytes}`: one header of that many bytes.
        _ if path.starts_with("/huge-head/") => {
            let size = path["/huge-head/".len()..].parse().unwrap_or(0);
            (
                format!(
                    "HTTP/1.1 200 OK\r\nx-huge: {}\r\ncontent-length: 2\r\n\r\nok",
                    "h".repeat(size)
                ),
                After::KeepOpen,
            )
        }
        _ => (
            "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".into(),
            After::KeepOpen,
        ),
    };
    (response.into_bytes(), after)
}

/// A raw HTTP/1.1 origin on loopback that answers each request with the bytes [`scripted`]
/// gives for its path, so the client binding meets responses no well-behaved server sends.
struct ScriptedOrigin {
    port: u16,
    accepted: Arc<AtomicUsize>,
    /// Connections the gateway has closed or the script ended.
    ended: Arc<AtomicUsize>,
    received: Arc<std::sync::Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptedOrigin {
    async fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let ended = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(std::sync::Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let accepted = accepted.clone();
            let ended = ended.clone();
            let received = received.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let connection = accepted.fetch_add(1, Ordering::SeqCst) + 1;
                    let received = received.clone();
                    let ended = ended.clone();
                    tokio::spawn(async move {
                        // A peer that goes away mid-exchange ends only its connection.
                        let _ = serve_scripted(stream, connection, received).await;
                        ended.fetch_add(1, Ordering::SeqCst);
                    });
                }
            }
        });
        Ok(Self {
            port,
            accepted,
            ended,
            received,
            task,
        })
    }

    /// Connections accepted so far.
    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The connection each request came on, in arrival order.
    fn connection_per_request(&self) -> Vec<usize> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|received| received.connection)
            .collect()
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// A gateway proxying every request to this origin.
    fn gateway(&self) -> Result<Gateway> {
        Gateway::start(&proxy_yaml(self.port, "", "    exit: http_client"))
    }
}

impl Drop for ScriptedOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves requests on one origin connection until the peer closes it or the script does.
async fn serve_scripted(
    mut stream: TcpStream,
    connection: usize,
    received: Arc<std::sync::Mutex<Vec<Received>>>,
) -> Result<()> {
    let mut buffer = Vec::new();
    loop {
        let Some(head) = read_until(&mut stream, &mut buffer, b"\r\n\r\n").await? else {
            return Ok(());
        };
        let head = String::from_utf8_lossy(&head).into_owned();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or_default().split(' ');
        let method = request_line.next().unwrap_or_default().to_owned();
        let path = request_line.next().unwrap_or_default().to_owned();
        let mut length = 0;
        let mut chunked = false;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse()?;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().ends_with("chunked");
            }
        }
        let (response, after) = scripted(&path);
        if !matches!(after, After::Linger | After::Reset) {
            read_request_body(&mut stream, &mut buffer, length, chunked).await?;
        }
        // Recorded before answering: once curl has its answer, the test sees the request.
        received.lock().unwrap().push(Received {
            connection,
            method,
            path,
        });
        if matches!(after, After::Reset) {
            // Long enough for the client's unread upload to fill the socket buffers, so its
            // writes are waiting when the answer and the reset come together.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        stream.write_all(&response).await?;
        match after {
            After::KeepOpen => {}
            After::Close => {
                stream.shutdown().await?;
                return Ok(());
            }
            After::CloseLater(delay) => {
                tokio::time::sleep(delay).await;
                return Ok(());
            }
            After::Reset => {
                stream.set_zero_linger()?;
                return Ok(());
            }
            After::Linger => {
                stream.shutdown().await?;
                let mut sink = vec![0; 64 * 1024];
                let _ = tokio::time::timeout(WAIT, async {
                    while stream.read(&mut sink).await? > 0 {}
                    Ok::<_, std::io::Error>(())
                })
                .await;
                return Ok(());
            }
        }
    }
}

/// Reads a request body announced by `content-length` or sent chunked, and drops it.
async fn read_request_body(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    length: usize,
    chunked: bool,
) -> Result<()> {
    if !chunked {
        return read_exact_buffered(stream, buffer, length).await;
    }
    loop {
        let line = read_until(stream, buffer, b"\r\n")
            .await?
            .context("the connection closed in a chunked body")?;
        let line = String::from_utf8_lossy(&line);
        let size = line.trim_end().split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16)?;
        if size == 0 {
            // Trailer fields, up to an empty line.
            while read_until(stream, buffer, b"\r\n")
                .await?
                .context("the connection closed in trailers")?
                .len()
                > 2
            {}
            return Ok(());
        }
        read_exact_buffered(stream, buffer, size + 2).await?;
    }
}

/// Takes bytes up to and including `delimiter` from `buffer`, reading more as needed; `None`
/// when the peer closes before any byte of it.
async fn read_until(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    delimiter: &[u8],
) -> Result<Option<Vec<u8>>> {
    loop {
        if let Some(at) = buffer
            .windows(delimiter.len())
            .position(|window| window == delimiter)
        {
            return Ok(Some(buffer.drain(..at + delimiter.len()).collect()));
        }
        let mut chunk = [0; 16 * 1024];
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            ensure!(buffer.is_empty(), "the connection closed mid-message");
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

async fn read_exact_buffered(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    length: usize,
) -> Result<()> {
    while buffer.len() < length {
        let mut chunk = [0; 16 * 1024];
        let read = stream.read(&mut chunk).await?;
        ensure!(read > 0, "the connection closed mid-body");
        buffer.extend_from_slice(&chunk[..read]);
    }
    buffer.drain(..length);
    Ok(())
}

/// One `curl` exchange through the gateway.
struct Fetched {
    /// The status curl saw, 0 when none.
    code: u16,
    /// Body bytes curl counted.
    size: u64,
    body: Vec<u8>,
    /// The response head(s) curl received.
    head: String,
    /// curl's exit code: 0 for a complete transfer.
    exit: Option<i32>,
    stderr: String,
}

impl Fetched {
    fn body(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `curl` `url` with `extra` arguments; a stalled exchange gives up after 20 s rather than
/// curl's 50 (a later `--max-time` wins).
async fn fetch(url: &str, extra: &[&str]) -> Result<Fetched> {
    let dir = tempfile::tempdir()?;
    let body = dir.path().join("body");
    let head = dir.path().join("head");
    let (body_arg, head_arg) = (body.display().to_string(), head.display().to_string());
    let mut args = vec![
        "--max-time",
        "20",
        "-o",
        &body_arg,
        "-D",
        &head_arg,
        "-w",
        "%{http_code} %{size_download}",
    ];
    args.extend_from_slice(extra);
    args.push(url);
    let output = curl(&args).await?;
    let text = output.text();
    let (code, size) = text.split_once(' ').unwrap_or_default();
    Ok(Fetched {
        code: code.parse().unwrap_or(0),
        size: size.trim().parse().unwrap_or(0),
        // curl creates the files only when it has something to put in them.
        body: std::fs::read(&body).unwrap_or_default(),
        head: std::fs::read_to_string(&head).unwrap_or_default(),
        exit: output.status.code(),
        stderr: output.stderr,
    })
}

/// `GET /cl` through `gateway` answers the whole `content-length` body.
async fn fetch_good(gateway: &Gateway, after: &str) -> Result<()> {
    let good = fetch(&gateway.url("/cl"), &[]).await?;
    ensure_served(
        &good,
        200,
        "hello, world",
        &format!("a good request after {after}"),
    )
}

/// A good request after one whose connection must not be reused goes out on a new one.
async fn fetch_good_on_a_new_connection(
    origin: &ScriptedOrigin,
    gateway: &Gateway,
    what: &str,
) -> Result<()> {
    let before = origin.connection_per_request();
    fetch_good(gateway, what).await?;
    let after = origin.connection_per_request();
    ensure!(
        after.len() == before.len() + 1 && after.last() != before.last(),
        "{what}: {after:?}"
    );
    Ok(())
}

/// The response was `code` with `body`, and curl's transfer ended cleanly.
fn ensure_served(fetched: &Fetched, code: u16, body: &str, what: &str) -> Result<()> {
    ensure!(
        fetched.code == code && fetched.exit == Some(0) && fetched.body() == body,
        "{what}: {} exit {:?} {:?} {}",
        fetched.code,
        fetched.exit,
        fetched.body(),
        fetched.stderr
    );
    Ok(())
}

/// The origin connections the requests so far came on, in order, must be `expected`.
fn ensure_connections(origin: &ScriptedOrigin, expected: &[usize], what: &str) -> Result<()> {
    let seen = origin.connection_per_request();
    ensure!(seen == expected, "{what}: {seen:?}");
    Ok(())
}

/// Requests on one connection through Python's `http.client`, which reads each response by
/// its framing: prints, per request, the status, the fields, the body and the local port the
/// connection had (`null` once closed).
const SEQUENCE_CLIENT: &str = r#"
import http.client, json, sys
connection = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=20)
out = []
for method, path, body, headers in json.loads(sys.argv[2]):
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    data = response.read()
    port = connection.sock.getsockname()[1] if connection.sock else None
    out.append({"status": response.status,
                "headers": {k.lower(): v for k, v in response.getheaders()},
                "body": data.decode("latin-1"), "port": port})
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_requests_and_then_a_body_share_one_client_connection() -> Result<()> {
    let origin = ScriptedOrigin::start().await?;
    let gateway = origin.gateway()?;
    // Bodiless requests first, answered by the server's own HTTP/1.1 loop; the POST hands the
    // connection to hyper's server, which answers the rest.
    let requests = serde_json::json!([
        ["GET", "/cl", null, {}],
        ["HEAD", "/head", null, {}],
        ["GET", "/chunked", null, {}],
        ["GET", "/eof", null, {}],
        ["GET", "/204", null, {}],
        ["GET", "/304", null, {}],
        ["DELETE", "/cl", null, {"content-length": "0"}],
        ["POST", "/cl", "abc", {}],
        ["GET", "/cl", null, {}],
        ["GET", "/cl", null, {"connection": "close"}],
    ]);
    let output = Command::new(python())
        .args(["-c", SEQUENCE_CLIENT])
        .arg(gateway.address().port().to_string())
        .arg(requests.to_string())
        .output()
        .await?;
    ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let responses: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout)?;
    let summary: Vec<(u64, &str)> = responses
        .iter()
        .map(|r| {
            (
                r["status"].as_u64().unwrap_or(0),
                r["body"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    ensure!(
        summary
            == [
                (200, "hello, world"),
                (200, ""),
                (200, "hello, world"),
                (200, "read until the origin closes"),
                (204, ""),
                (304, ""),
                (200, "hello, world"),
                (200, "hello, world"),
                (200, "hello, world"),
                (200, "hello, world"),
            ],
        "{summary:?}"
    );
    let header = |index: usize, name: &str| responses[index]["headers"][name].as_str();
    ensure!(header(0, "content-length") == Some("12"));
    ensure!(
        header(1, "content-length") == Some("100"),
        "HEAD keeps the length"
    );
    ensure!(header(2, "transfer-encoding") == Some("chunked"));
    ensure!(header(3, "transfer-encoding") == Some("chunked"));
    ensure!(header(4, "x-origin") == Some("yes") && header(4, "content-length").is_none());
    ensure!(header(5, "etag") == Some("\"v1\""));
    ensure!(header(9, "connection") == Some("close"));
    for (index, response) in responses.iter().enumerate() {
        let date = response["headers"]["date"].as_str().unwrap_or_default();
        ensure!(
            httpdate_like(date),
            "response {index} has no date: {response}"
        );
    }
    // One connection all along, closed after the request that asked for it.
    let ports: Vec<_> = responses.iter().map(|r| r["port"].as_u64()).collect();
    ensure!(
        ports[..9]
            .iter()
            .all(|port| port.is_some() && *port == ports[0])
            && ports[9].is_none(),
        "{ports:?}"
    );
    Ok(())
}

/// `Mon, 07 Dec 2026 04:00:00 GMT`.
fn httpdate_like(date: &str) -> bool {
    date.len() == 29 && date.ends_with(" GMT") && date.as_bytes()[3] == b','
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_simple_requests_are_answered_in_order() -> Result<()> {
    let origin = ScriptedOrigin::start().await?;
    let gateway = origin.gateway()?;
    let response = raw_exchange(
        gateway.address(),
        b"GET /cl HTTP/1.1\r\nHost: x\r\n\r\nGET /chunked HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\nGET /204 HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await?;
    let statuses: Vec<&str> = response
        .match_indices("HTTP/1.1 ")
        .map(|(at, _)| &response[at + 9..at + 12])
        .collect();
    ensure!(
        statuses == ["200", "200", "204", "200", "200"],
        "{response}"
    );
    // The chunked answer to a client that takes trailers (`te: trailers`) carries the trailer
    // field its response announced, not the other; the one to a client that did not say so
    // (answered by hyper's server, after the hand-over), none.
    ensure!(
        response.contains("\r\n5\r\nworld\r\n0\r\nx-checksum: abc123\r\n\r\n")
            && !response.contains("x-other")
            && response.ends_with("\r\n5\r\nworld\r\n0\r\n\r\n"),
        "{response}"
    );
    ensure!(response.matches("hello, world").count() == 2, "{response}");
    ensure!(
        origin
            .received()
            .iter()
            .map(|r| r.path.as_str())
            .collect::<Vec<_>>()
            == ["/cl", "/chunked", "/204", "/cl", "/chunked"]
    );
    Ok(())
}

/// An idle connection waits for its next request with a small read buffer; a head larger than
/// it, arriving in pieces, grows it and is answered, and so is a small request after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_larger_than_an_idle_connections_buffer_is_read_whole() -> Result<()> {
    let origin = ScriptedOrigin::start().await?;
    let gateway = origin.gateway()?;
    let mut stream = TcpStream::connect(gateway.address()).await?;
    let mut answered = Vec::new();
    // Reads until one more body has arrived.
    let read_answer = async |stream: &mut TcpStream, answered: &mut Vec<u8>| -> Result<()> {
        let bodies = |bytes: &[u8]| {
            String::from_utf8_lossy(bytes)
                .matches("hello, world")
                .count()
        };
        let before = bodies(answered);
        while bodies(answered) == before {
            let mut chunk = [0u8; 16 * 1024];
            let read = tokio::time::timeout(WAIT, stream.read(&mut chunk)).await??;
            ensure!(read > 0, "closed: {}", String::from_utf8_lossy(answered));
            answered.extend_from_slice(&chunk[..read]);
        }
        Ok(())
    };
    stream
        .write_all(b"GET /cl HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    read_answer(&mut stream, &mut answered).await?;
    let big = format!(
        "GET /cl HTTP/1.1\r\nHost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(6000)
    );
    for piece in big.as_bytes().chunks(1500) {
        stream.write_all(piece).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    read_answer(&mut stream, &mut answered).await?;
    stream
        .write_all(b"GET /cl HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    read_answer(&mut stream, &mut answered).await?;
    let response = String::from_utf8_lossy(&answered);
    ensure!(response.matches("HTTP/1.1 200").count() == 3, "{response}");
    ensure!(
        origin.received().iter().filter(|r| r.path == "/cl").count() == 3,
        "the origin saw every request"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_ends_with_its_length_and_an_interim_final_status_is_a_500() -> Result<()> {
    let gateway = Gateway::serving(
        HandlerFactory {
            name: "answers",
            make: || Answers,
        },
        &[],
    )?;
    // The body never ends, but its length is out: the next request on the connection is
    // answered.
    let mut client = TcpStream::connect(gateway.address()).await?;
    client
        .write_all(
            b"GET /stalled HTTP/1.1\r\nHost: x\r\n\r\nGET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await?;
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, client.read_to_end(&mut response))
        .await
        .context("the connection stayed open")??;
    let response = String::from_utf8_lossy(&response);
    ensure!(
        response.starts_with("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n")
            && response.contains("\r\n\r\nhelloHTTP/1.1 200 OK\r\n")
            && response.ends_with("\r\n\r\n"),
        "{response}"
    );
    // A 1xx is no final response.
    let response = raw_exchange(
        gateway.address(),
        b"GET /interim HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await?;
    ensure!(
        response.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
        "{response}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_mid_response_ends_its_exchange() -> Result<()> {
    let origin = ScriptedOrigin::start().await?;
    let gateway = origin.gateway()?;
    let mut client = TcpStream::connect(gateway.address()).await?;
    client
        .write_all(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    let mut seen = Vec::new();
    tokio::time::timeout(WAIT, async {
        let mut buffer = [0; 1024];
        while !String::from_utf8_lossy(&seen).contains("hello") {
            let read = client.read(&mut buffer).await?;
            ensure!(read > 0, "closed early");
            seen.extend_from_slice(&buffer[..read]);
        }
        Ok(())
    })
    .await??;
    ensure!(origin.ended.load(Ordering::SeqCst) == 0);
    drop(client);
    // The gateway lets go of the origin's unfinished response (and so its connection).
    let deadline = Instant::now() + WAIT;
    while origin.ended.load(Ordering::SeqCst) == 0 {
        ensure!(
            Instant::now() < deadline,
            "the origin connection stayed open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_requests_are_answered_in_http10_and_closed() -> Result<()> {
    let origin = ScriptedOrigin::start().await?;
    let gateway = origin.gateway()?;
    let started = Instant::now();
    let response = raw_exchange(gateway.address(), b"GET /cl HTTP/1.0\r\nHost: x\r\n\r\n").await?;
    ensure!(
        response.starts_with("HTTP/1.0 200 OK\r\n") && response.ends_with("\r\n\r\nhello, world"),
        "{response}"
    );
    ensure!(started.elapsed() < Duration::from_secs(5), "not closed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_origin_content_length_bodies_share_one_connection() -> Result<()> {
    let origin = ScriptedOrigin::start().await?;
    let gateway = origin.gateway()?;
    for round in 0..10 {
        let fetched = fetch(&gateway.url("/cl"), &[]).await?;
        ensure!(
            fetched.code == 200 && fetched.exit == Some(0) && fetched.body() == "hello, world",
            "request {round}: {} exit {:?} {:?} {}",
            fetched.code,
            fetched.exit,
            fetched.body(),
            fetched.stderr
        );
    }
    ensure!(
        origin.connections() == 1,
        "10 sequential requests took {} origin connections: {:?}",
        origin.connections(),
        origin.connection_per_request()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_origin_bodies_written_with_their_head_keep_the_connection_in_step() -> Result<()> {
    // A body's last data over 512 bytes goes out with the head in one vectored write; the
    // next exchange on the same connection follows it exactly.
    let origin = ScriptedOrigin::start().await?;
    let gateway = origin.gateway()?;
    let url = gateway.url("/kb");
    let output = curl(&["-v", &url, &url, &url]).await?;
    ensure!(
        output.text() == "0123456789".repeat(300),
        "{}",
        output.stderr
    );
    ensure!(
        output
            .stderr
            .matches("Re-using existing connection")
            .count()
            == 2,
        "one client connection: {}",
        output.stderr
    );
    Ok(())
}

/// The fields of a head curl wrote, names lower-cased, in order.
fn head_fields(head: &str) -> Vec<(String, String)> {
    head.lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_origin_fields_reach_the_client_as_the_origin_sent_them() -> Result<()> {
    let origin = ScriptedOrigin::start().await?;
    let expected = |extra: &[(&str, &str)]| {
        let mut fields: Vec<(String, String)> = [
            ("server", "origin"),
            ("date", "Tue, 01 Dec 2026 00:00:00 GMT"),
            ("x-mixed-case", "Value One"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
            ("content-type", "text/plain"),
            ("content-length", "12"),
        ]
        .iter()
        .chain(extra)
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
        fields.sort();
        fields
    };
    // Passed on as they came (in the origin's case), or read into a header map when split
    // by more framing lines: the same fields either way, and the connection's own stay.
    let gateway = origin.gateway()?;
    for path in ["/fields", "/fields-split"] {
        let fetched = fetch(&gateway.url(path), &[]).await?;
        ensure_served(&fetched, 200, "hello, world", path)?;
        let mut fields = head_fields(&fetched.head);
        fields.sort();
        ensure!(fields == expected(&[]), "{path}: {}", fetched.head);
    }
    let fetched = fetch(&gateway.url("/fields"), &[]).await?;
    ensure!(
        fetched.head.contains("\r\nX-Mixed-Case: Value One\r\n"),
        "the origin's own line: {}",
        fetched.head
    );
    // What the server adds from the response's fields still sees them, each alone: a CORS
    // policy exposing them, and a `server` field added only when the origin sent none.
    let fields_of = |fetched: &Fetched| {
        let mut fields = head_fields(&fetched.head);
        fields.sort();
        fields
    };
    let cors = Gateway::start(&proxy_yaml(
        origin.port,
        "",
        "    options:
      access-control:
        policy: cross-origin
        expose:
          headers: [x-mixed-case]
    exit: http_client",
    ))?;
    let fetched = fetch(&cors.url("/fields"), &["-H", "Origin: https://example.net"]).await?;
    ensure_served(&fetched, 200, "hello, world", "cors")?;
    let wanted = expected(&[
        ("access-control-allow-origin", "*"),
        ("access-control-expose-headers", "x-mixed-case"),
    ]);
    ensure!(fields_of(&fetched) == wanted, "cors: {}", fetched.head);
    let named = Gateway::start_with(
        &proxy_yaml(origin.port, "", "    exit: http_client"),
        &["zilla.binding.http.server.header=gateway"],
    )?;
    let fetched = fetch(&named.url("/fields"), &[]).await?;
    ensure_served(&fetched, 200, "hello, world", "server field")?;
    ensure!(
        fields_of(&fetched) == expected(&[]),
        "the origin's own server field, alone: {}",
        fetched.head
    );
    let fetched = fetch(&named.url("/cl"), &[]).await?;
    ensure_served(&fetched, 200, "hello, world", "server field added")?;
    ensure!(
        head_fields(&fetched.head).contains(&("server".to_owned(), "gateway".to_owned())),
        "{}",
        fetched.head
    );
    // So does a telemetry attribute of a response field, the server's and the client's.
    let attribute = "    telemetry:
      metrics: [http.response.size]
      attributes:
        mixed: ${http.response.x-mixed-case}";
    for (client, server, series) in [
        (attribute, "", "http_client"),
        ("", attribute, "http_server"),
    ] {
        let yaml = proxy_yaml(
            origin.port,
            client,
            &format!("{server}\n    exit: http_client"),
        )
        .replace(
            "name: test\n",
            "name: test\ntelemetry:\n  metrics: [http.response.size]\n",
        );
        let measured = Gateway::start(&yaml)?;
        let fetched = fetch(&measured.url("/fields"), &[]).await?;
        ensure_served(&fetched, 200, "hello, world", series)?;
        let wanted = format!("{series} http.response.size{{mixed=Value One}} count=1");
        let deadline = Instant::now() + WAIT;
        loop {
            let table = measured.engine.metrics().table();
            if table.contains(&wanted) {
                break;
            }
            ensure!(Instant::now() < deadline, "{wanted}: {table}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_origin_chunked_bodies_with_extensions_and_trailers() -> Result<()> {
    let origin = ScriptedOrigin::start().await?;
    let gateway = origin.gateway()?;
    for path in ["/chunked", "/chunked-no-trailers"] {
        let fetched = fetch(&gateway.url(path), &[]).await?;
        ensure!(
            fetched.code == 200 && fetched.exit == Some(0),
            "{path}: {} exit {:?} {}",
            fetched.code,
            fetched.exit,
            fetched.stderr
        );
        ensure!(
            fetched.body() == "hello, world",
            "{path}: the dechunked body, without extensions or trailers: {:?}",
            fetched.body()
        );
    }
    fetch_good(&gateway, "chunked bodies").await?;
    // The last chunk without trailers leaves the connection ready for the next request
    // (after a trailer section: see the test below).
    let connections = origin.connection_per_request();
    ensure!(
        connections.len() == 3 && connections[1] == connections[2],
        "the connection is reused after a chunked body: {connections:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_origin_connection_is_reused_after_a_trailer_section() -> Result<()> {
    let origin = ScriptedOrigin::start().await?;
    let gateway = origin.gateway()?;
    let fetched = fetch(&gateway.url("/chunked"), &[]).await?;
    ensure_served(&fetched, 200, "hello, world", "chunked with trailers")?;
    fetch_good(&gateway, "a trailer section").await?;
    ensure_connections(
        &origin,
        &[1, 1],
        "the connection is reused after the trailer section",
    )?;
    // The trailer fields reach a client that can receive them (HTTP/2), on the same
    // origin connection again.
    let stream = TcpStream::connect(gateway.address()).await?;
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await?;
    tokio::spawn(connection);
    let request = http::Request::get(format!("http://{}/chunked", gateway.address()))
        .body(http_body_util::Empty::<Bytes>::new())?;
    let collected = sender
        .send_request(request)
        .await?
        .into_body()
        .collect()
        .await?;
    let trailers = collected.trailers().cloned().context("response trailers")?;
    ensure!(trailers["x-checksum"] == "abc123" && trailers["x-other"] == "1");
    ensure!(collected.to_bytes() == "hello, world");
    ensure_connections(
        &origin,
        &[1, 1, 1],
        "the connection is reused after the trailer section",
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_origin_body_delimited_by_close() -> Result<()> {
    let origin = ScriptedOrigin::start().await?;
    let gateway = origin.gateway()?;
    let fetched = fetch(&gateway.url("/eof"), &[]).await?;
    ensure_served(
        &fetched,
        200,
        "read until the origin closes",
        "a body delimited by close",
    )?;
    fetch_good(&gateway, "a body delimited by close").await?;
    ensure_connections(
        &origin,
        &[1, 2],
        "the next request goes out on a new connection",
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_origin_head_response_has_no_body() -> Result<()> {
    let origin = ScriptedOrigin::start().await?;
    let gateway = origin.gateway()?;
    // Waiting for the 100 bytes the header announces would stall this until curl gives up.
    let fetched = fetch(&gateway.url("/head"), &["--head"]).await?;
    ensure!(
        fetched.code == 200 && fetched.exit == Some(0) && fetched.size == 0,
        "HEAD: {} exit {:?} {} body bytes {}",
        fetched.code,
        fetched.exit,
        fetched.size,
        fetched.stderr
    );
    fetch_good(&gateway, "HEAD").await?;
    let received = origin.received();
    ensure!(
        received
            .first()
            .is_some_and(|received| received.method == "HEAD" && received.path == "/head"),
        "the origin got {received:?}"
    );
    ensure_connections(
        &origin,
        &[1, 1],
        "the connection is reused after a HEAD answer without a body",
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_origin_204_and_304_have_no_body() -> Result<()> {
    let origin = ScriptedOrigin::start().await?;
    let gateway = origin.gateway()?;
    for (path, status) in [("/204", 204), ("/304", 304)] {
        let fetched = fetch(&gateway.url(path), &[]).await?;
        ensure!(
            fetched.code == status && fetched.exit == Some(0) && fetched.size == 0,
            "{path}: {} exit {:?} {} body bytes {}",
            fetched.code,
            fetched.exit,
            fetched.size,
            fetched.stderr
        );
    }
    fetch_good(&gateway, "204 and 304").await?;
    ensure_connections(
        &origin,
        &[1, 1, 1],
        "one connection for 204, 304 and the next GET",
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_origin_304_with_content_length_has_no_body() -> Result<()> {
    let origin = ScriptedOrigin::start().await?;
    let gateway = origin.gateway()?;
    let fetched = fetch(&gateway.url("/304-with-length"), &[]).await?;
    ensure!(
        fetched.code == 304 && fetched.exit == Some(0) && fetched.size == 0,
        "304 with content-length: {} exit {:?} {} body bytes {}",
        fetched.code,
        fetched.exit,
        fetched.size,
        fetched.stderr
    );
    fetch_good(&gateway, "304 with content-length").await?;
    ensure_connections(
        &origin,
        &[1, 1],
        "the connection is reused after a 304 with content-length",
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_origin_interim_responses_precede_the_final_one() -> Result<()> {
    let origin = ScriptedOrigin::start().await?;
    let gateway = origin.gateway()?;
    let fetched = fetch(&gateway.url("/interim"), &[]).await?;
    ensure!(
        fetched.code == 200 && fetched.exit == Some(0) && fetched.body() == "final",
        "100 and 103 then 200: {} exit {:?} {:?} {} {}",
        fetched.code,
        fetched.exit,
        fetched.body(),
        fetched.head,
        fetched.stderr
    );
    fetch_good(&gateway, "interim responses").await?;
    ensure_connections(
        &origin,
        &[1, 1],
        "the connection is reused after interim responses",
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_origin_http10_response_is_not_reused() -> Result<()> {
    let origin = ScriptedOrigin::start().await?;
    let gateway = origin.gateway()?;
    let fetched = fetch(&gateway.url("/http10"), &[]).await?;
    ensure_served(&fetched, 200, "from 1.0!", "HTTP/1.0")?;
    fetch_good(&gateway, "an HTTP/1.0 response").await?;
    ensure_connections(
        &origin,
        &[1, 2],
        "an HTTP/1.0 response without keep-alive ends its connection",
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_origin_connection_close_is_not_reused() -> Result<()> {
    let origin = ScriptedOrigin::start().await?;
    let gateway = origin.gateway()?;
    let fetched = fetch(&gateway.url("/close"), &[]).await?;
    ensure_served(&fetched, 200, "closing", "connection: close")?;
    fetch_good(&gateway, "connection: close").await?;
    ensure_connections(
        &origin,
        &[1, 2],
        "a response with connection: close ends its connection",
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_origin_malformed_heads_are_answered_5xx() -> Result<()> {
    let origin = ScriptedOrigin::start().await?;
    let gateway = origin.gateway()?;
    // Beyond the client's head limit (`h1::MAX_HEAD_SIZE`, about 400 KiB).
    let huge = format!("/huge-head/{}", 1024 * 1024);
    for path in ["/bad-length", "/two-lengths", "/bad-status", huge.as_str()] {
        let fetched = fetch(&gateway.url(path), &[]).await?;
        ensure!(
            (500..600).contains(&fetched.code) && fetched.exit == Some(0),
            "{path}: {} exit {:?} {:?} {}",
            fetched.code,
            fetched.exit,
            fetched.body(),
            fetched.stderr
        );
        fetch_good_on_a_new_connection(
            &origin,
            &gateway,
            &format!("{path}: the connection of a malformed response is not reused"),
        )
        .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_origin_head_over_64k_is_passed_whole_or_refused() -> Result<()> {
    // No RFC sets this limit: the client reads heads up to about 400 KiB
    // (`h1::MAX_HEAD_SIZE`), so a head a little over 64 KiB is passed on whole, and the
    // next request is served.
    let origin = ScriptedOrigin::start().await?;
    let gateway = origin.gateway()?;
    let size = 70 * 1024;
    let fetched = fetch(&gateway.url(&format!("/huge-head/{size}")), &[]).await?;
    let whole = fetched.code == 200
        && fetched.exit == Some(0)
        && fetched.body() == "ok"
        && fetched
            .head
            .contains(&format!("x-huge: {}\r\n", "h".repeat(size)));
    ensure!(
        whole,
        "a 70 KiB header: {} exit {:?} {}",
        fetched.code,
        fetched.exit,
        fetched.stderr
    );
    fetch_good(&gateway, "a 70 KiB header").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_origin_malformed_chunks_fail_the_transfer() -> Result<()> {
    let origin = ScriptedOrigin::start().await?;
    let gateway = origin.gateway()?;
    for path in ["/bad-chunk", "/overflowing-chunk"] {
        let fetched = fetch(&gateway.url(path), &[]).await?;
        // The head may already be on its way down: the status is then 200, and only a
        // failed transfer tells the client the body is not whole.
        ensure!(
            fetched.exit.is_some_and(|exit| exit != 0) || (500..600).contains(&fetched.code),
            "{path}: a broken chunked body passed as a complete response: {} exit {:?} {:?}",
            fetched.code,
            fetched.exit,
            fetched.body()
        );
        ensure!(
            fetched.body() != "helloworld",
            "{path}: the bytes after the bad chunk size were passed on"
        );
        fetch_good_on_a_new_connection(
            &origin,
            &gateway,
            &format!("{path}: the connection of a malformed body is not reused"),
        )
        .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_origin_chunked_framing_wins_over_content_length() -> Result<()> {
    let origin = ScriptedOrigin::start().await?;
    let gateway = origin.gateway()?;
    let fetched = fetch(&gateway.url("/te-and-cl"), &[]).await?;
    // RFC 9112 §6.3: transfer-encoding overrides content-length, and an intermediary that
    // forwards the message removes the content-length first.
    ensure!(
        fetched.code == 200 && fetched.exit == Some(0) && fetched.body() == "hello",
        "transfer-encoding and content-length: {} exit {:?} {:?} {} {}",
        fetched.code,
        fetched.exit,
        fetched.body(),
        fetched.head,
        fetched.stderr
    );
    ensure!(
        !fetched
            .head
            .to_ascii_lowercase()
            .contains("content-length: 100"),
        "the origin's content-length was passed on: {}",
        fetched.head
    );
    // Such a response may be an attempt to split it: its connection is not reused.
    fetch_good_on_a_new_connection(
        &origin,
        &gateway,
        "the connection of a response with both framings was reused",
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_origin_closing_an_idle_connection_is_replaced_unseen() -> Result<()> {
    let origin = ScriptedOrigin::start().await?;
    let gateway = origin.gateway()?;
    // The origin closes this connection 200 ms after its answer, while the gateway holds it.
    let fetched = fetch(&gateway.url("/brief"), &[]).await?;
    ensure!(
        fetched.code == 200 && fetched.body() == "hello, world",
        "{} {:?}",
        fetched.code,
        fetched.body()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    fetch_good(&gateway, "the origin closed the idle connection").await?;
    ensure_connections(
        &origin,
        &[1, 2],
        "the request after the close goes out on a new connection",
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_origin_final_response_before_the_upload_ends() -> Result<()> {
    let origin = ScriptedOrigin::start().await?;
    let gateway = origin.gateway()?;
    let dir = tempfile::tempdir()?;
    let upload = random_file(dir.path(), "1m.bin", 1024 * 1024)?;
    let data = format!("@{}", upload.display());
    let fetched = fetch(&gateway.url("/early"), &["--data-binary", &data]).await?;
    ensure!(
        fetched.code == 413,
        "413 before the 1 MiB upload was read: {} exit {:?} {:?} {}",
        fetched.code,
        fetched.exit,
        fetched.body(),
        fetched.stderr
    );
    fetch_good(&gateway, "an early 413 with connection: close").await?;
    ensure_connections(
        &origin,
        &[1, 2],
        "the connection the origin closed is not reused",
    )?;
    // An origin that resets the connection after its answer, the upload unread: the
    // gateway's writes fail, and the answer already sent is still what the client gets.
    // Without `Expect: 100-continue` the body is at hand at once, so the gateway is writing
    // it when the reset comes.
    let fetched = fetch(
        &gateway.url("/early-reset"),
        &["--data-binary", &data, "-H", "Expect:"],
    )
    .await?;
    ensure!(
        fetched.code == 413,
        "413, then a reset, before the 1 MiB upload was read: {} exit {:?} {:?} {}",
        fetched.code,
        fetched.exit,
        fetched.body(),
        fetched.stderr
    );
    fetch_good_on_a_new_connection(&origin, &gateway, "a reset after an early 413").await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Metrics

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_http_metrics() -> Result<()> {
    let yaml = echo_yaml("    exit: echo_server\n    telemetry:\n      metrics: [http.*]").replace(
        "name: test\n",
        "name: test\ntelemetry:\n  metrics: [http.request.size, http.response.size, http.active.requests, http.duration]\n",
    );
    let gateway = Gateway::start(&yaml)?;
    for body in ["abc", "defgh"] {
        let output = curl(&["--data-binary", body, &gateway.url("/")]).await?;
        ensure!(output.text() == body);
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let table = gateway.engine.metrics().table();
        let done = table.contains("test http_server http.request.size count=2 sum=8")
            && table.contains("test http_server http.response.size count=2 sum=8")
            && table.contains("test http_server http.active.requests 0")
            && table.contains("test http_server http.duration count=2");
        if done {
            break;
        }
        ensure!(Instant::now() < deadline, "metrics: {table}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Request validation with models

/// An echo pipeline whose http server validates `POST /items/{id}` against an inline JSON
/// Schema, with its header, path and query parameters checked as JSON.
const VALIDATED_YAML: &str = r#"
name: test
catalogs:
  catalog0:
    type: inline
    options:
      subjects:
        item:
          version: latest
          schema: |
            {
              "type": "object",
              "properties": {
                "id": {"type": "string"},
                "status": {"type": "string", "enum": ["open", "closed"]}
              },
              "required": ["id", "status"]
            }
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
      requests:
        - path: /items/{id}
          method: POST
          content-type:
            - application/json
          headers:
            x-meta: json
          params:
            path:
              id: json
            query:
              limit: json
          content:
            model: json
            catalog:
              catalog0:
                - subject: item
                  version: latest
          responses:
            - status: 200
              content:
                model: json
                catalog:
                  catalog0:
                    - subject: item
    exit: echo_server
  echo_server:
    type: echo
    kind: server
"#;

fn validating_registry() -> Registry {
    let mut registry = Registry::new();
    zilla_catalog_inline::register(&mut registry);
    zilla_validator_json::register(&mut registry);
    registry
}

/// `curl` with `args`: the status and the response body. curl 7.88 exits with an error
/// when an HTTP/2 server answers before reading the whole request and then resets the
/// stream (RFC 9113 §8.1 allows it), so only the status it printed is looked at.
async fn exchange(args: &[&str]) -> Result<(u16, String)> {
    let mut all = vec!["-w", "\n%{http_code}"];
    all.extend_from_slice(args);
    let output = curl(&all).await?;
    let text = output.text();
    let (body, code) = text.rsplit_once('\n').context("no status")?;
    let code = code.parse()?;
    ensure!(code != 0, "no response to {args:?}: {}", output.stderr);
    Ok((code, body.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_validated_against_an_inline_json_schema() -> Result<()> {
    let gateway = Gateway::start_in(validating_registry(), VALIDATED_YAML, &[])?;
    let valid = r#"{"id": "a1", "status": "open"}"#;
    let json = "content-type: application/json";
    for version in ["--http1.1", "--http2-prior-knowledge"] {
        let post = |path: &str| gateway.url(path);
        // A valid body passes through to echo unchanged.
        let (code, body) = exchange(&[
            version,
            "-H",
            json,
            "--data-binary",
            valid,
            &post("/items/1"),
        ])
        .await?;
        ensure!(
            code == 200 && body == valid,
            "{version} valid: {code} {body:?}"
        );

        // Malformed JSON and schema violations are answered 400 with an empty body.
        for invalid in [
            r#"{"id": "a1", "status": "#,
            r#"{"id": 7, "status": "open"}"#,
            r#"{"id": "a1", "status": "lost"}"#,
            r#"{"id": "a1"}"#,
            "[]",
        ] {
            let (code, body) = exchange(&[
                version,
                "-H",
                json,
                "--data-binary",
                invalid,
                &post("/items/1"),
            ])
            .await?;
            ensure!(
                code == 400 && body.is_empty(),
                "{version} {invalid}: {code} {body:?}"
            );
        }

        // Requests the entry does not apply to are not validated.
        let malformed = "{not json";
        for (args, what) in [
            (vec!["-H", json, &post("/other")], "another path"),
            (
                vec!["-H", json, "-X", "PUT", &post("/items/1")],
                "another method",
            ),
            (
                vec!["-H", "content-type: text/plain", &post("/items/1")],
                "another content-type",
            ),
        ] {
            let mut all = vec![version, "--data-binary", malformed];
            all.extend(args);
            let (code, body) = exchange(&all).await?;
            ensure!(
                code == 200 && body == malformed,
                "{version} {what}: {code} {body:?}"
            );
        }
        // A request without content-type is validated, as in Zilla.
        let (code, _) = exchange(&[
            version,
            "-H",
            "content-type:",
            "--data-binary",
            malformed,
            &post("/items/1"),
        ])
        .await?;
        ensure!(code == 400, "{version} no content-type: {code}");

        // Header, path parameter and query parameter values pass their models or get 400.
        for (path, header, expected) in [
            ("/items/42?limit=10", "x-meta: {\"a\": 1}", 200),
            ("/items/abc", "x-meta: [1]", 400),
            ("/items/1?limit=ten", "x-meta: 1", 400),
            ("/items/1", "x-meta: not-json", 400),
        ] {
            let (code, _) = exchange(&[
                version,
                "-H",
                json,
                "-H",
                header,
                "--data-binary",
                valid,
                &post(path),
            ])
            .await?;
            ensure!(code == expected, "{version} {path} {header}: {code}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_validated_bodies_stream_through_and_oversized_ones_get_413() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // About 2 MiB of valid JSON: curl sends `Expect: 100-continue` over HTTP/1.1 for it.
    let tags: Vec<String> = (0..150_000).map(|n| format!("\"tag{n}\"")).collect();
    let document = format!(
        r#"{{"id": "big", "status": "closed", "tags": [{}]}}"#,
        tags.join(",")
    );
    let input = dir.path().join("big.json");
    std::fs::write(&input, &document)?;
    let data = format!("@{}", input.display());

    let gateway = Gateway::start_in(validating_registry(), VALIDATED_YAML, &[])?;
    let url = gateway.url("/items/1");
    for version in ["--http1.1", "--http2-prior-knowledge"] {
        let echoed = dir.path().join("echoed.json");
        let (code, _, output) = curl_status(&[
            version,
            "-H",
            "content-type: application/json",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &data,
            "-o",
            echoed.to_str().unwrap(),
            &url,
        ])
        .await?;
        ensure!(code == 200, "{version}: {code} {}", output.stderr);
        ensure!(
            sha256(&echoed).await? == sha256(&input).await?,
            "{version}: the echoed body differs"
        );
        let broken = dir.path().join("broken.json");
        std::fs::write(&broken, &document[..document.len() - 1])?;
        let (code, _, _) = curl_status(&[
            version,
            "-H",
            "content-type: application/json",
            "--data-binary",
            &format!("@{}", broken.display()),
            &url,
        ])
        .await?;
        ensure!(code == 400, "{version} truncated: {code}");
    }

    // The body limit bounds what is read for validation.
    let limited = Gateway::start_in(
        validating_registry(),
        VALIDATED_YAML,
        &["zilla.binding.http.max.request.body.size=1000"],
    )?;
    let url = limited.url("/items/1");
    let padded = format!(r#"{{"id": "{}", "status": "open"}}"#, "x".repeat(2000));
    // Over HTTP/2 only a streamed body is tried: a 413 answered to the headers alone races
    // curl's upload, which curl 7.88 reports as a failed transfer without the status.
    for (version, chunked) in [
        ("--http1.1", false),
        ("--http1.1", true),
        ("--http2-prior-knowledge", true),
    ] {
        let mut args = vec![version, "-H", "content-type: application/json"];
        if chunked {
            args.extend(["-H", "Transfer-Encoding: chunked"]);
        }
        args.extend(["--data-binary", &padded, &url]);
        let (code, _, _) = curl_status(&args).await?;
        ensure!(code == 413, "{version} chunked={chunked}: {code}");
    }
    for version in ["--http1.1", "--http2-prior-knowledge"] {
        let (code, body) = exchange(&[
            version,
            "-H",
            "content-type: application/json",
            "--data-binary",
            r#"{"id": "a", "status": "open"}"#,
            &url,
        ])
        .await?;
        ensure!(code == 200 && body.contains("\"a\""), "{version}: {code}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_model_references_are_load_errors() -> Result<()> {
    for (from, to, expected) in [
        (
            "                - subject: item\n                  version: latest",
            "                - subject: items\n                  version: latest",
            "bindings.http_server.options.requests[0].content.catalog.catalog0[0]",
        ),
        (
            "          content:\n            model: json\n            catalog:\n              catalog0:",
            "          content:\n            model: json\n            catalog:\n              catalog9:",
            "unknown catalog `catalog9`",
        ),
        (
            "              limit: json",
            "              limit: avro",
            "unknown model type `avro`",
        ),
        (
            "              id: json",
            "              name: json",
            "bindings.http_server.options.requests[0].params.path.name",
        ),
    ] {
        ensure!(VALIDATED_YAML.contains(from), "{from}");
        let yaml = VALIDATED_YAML.replacen(from, to, 1);
        let Err(error) = Gateway::start_in(validating_registry(), &yaml, &[]) else {
            bail!("accepted: {to}");
        };
        let message = error.to_string();
        ensure!(message.contains(expected), "{expected}: {message}");
    }
    // Without the json model registered, the reference names a type this build lacks.
    let Err(error) = Gateway::start(VALIDATED_YAML) else {
        bail!("accepted without catalogs and models");
    };
    ensure!(error.to_string().contains("inline"), "{error}");
    Ok(())
}

#[tokio::test]
async fn a_client_refuses_request_models() -> Result<()> {
    // Zilla's client applies only `responses`; a request model there would be ignored.
    let yaml = format!(
        "{VALIDATED_YAML}  http_client:
    type: http
    kind: client
    options:
      requests:
        - path: /items
          content-type: [application/json]
          content:
            model: json
            catalog:
              catalog0:
                - subject: item
    exit: tcp_client
  tcp_client:
    type: tcp
    kind: client
    options:
      host: 127.0.0.1
      port: 9
"
    );
    let Err(error) = Gateway::start_in(validating_registry(), &yaml, &[]) else {
        bail!("accepted a request model on a client");
    };
    let message = error.to_string();
    ensure!(
        message.contains("bindings.http_client.options.requests[0]")
            && message.contains("a client validates responses only"),
        "{message}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_bodies_cross_an_http11_origin_leg() -> Result<()> {
    // The origin is a second gateway that echoes over HTTP/1.1: it answers before it has read
    // the request body, so the rest of the upload is written while the response is read.
    let limits = ["zilla.binding.http.max.request.body.size=0"];
    let origin = Gateway::start_with(&echo_yaml("    exit: echo_server"), &limits)?;
    let gateway = Gateway::start_with(
        &proxy_yaml(origin.address().port(), "", "    exit: http_client"),
        &limits,
    )?;
    let dir = tempfile::tempdir()?;
    for (name, size) in [
        ("empty.bin", 0),
        ("1k.bin", 1024),
        ("20m.bin", 20 * 1024 * 1024),
    ] {
        let input = random_file(dir.path(), name, size)?;
        let expected = sha256(&input).await?;
        let data = format!("@{}", input.display());
        for (framing, extra) in [
            ("length", None),
            ("chunked", Some("Transfer-Encoding: chunked")),
        ] {
            let output_path = dir.path().join(format!("{name}.{framing}.out"));
            let url = gateway.url("/upload");
            let mut args = vec![
                "--http1.1",
                "--data-binary",
                &data,
                "-o",
                output_path.to_str().unwrap(),
            ];
            if let Some(header) = extra {
                args.extend(["-H", header]);
            }
            args.push(&url);
            let (code, _, output) = curl_status(&args).await?;
            ensure!(code == 200, "{name} {framing}: {code} {}", output.stderr);
            ensure!(
                sha256(&output_path).await? == expected,
                "{name} {framing}: echoed body differs"
            );
        }
    }
    // A body with trailers goes out in the chunked coding, trailers last; the origin's
    // HTTP/1.1 server sends no trailers back undeclared, so the body is what returns.
    let stream = TcpStream::connect(gateway.address()).await?;
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await?;
    tokio::spawn(connection);
    for round in 0..3 {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-checksum", http::HeaderValue::from_static("abc123"));
        let frames: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = vec![
            Ok(http_body::Frame::data(Bytes::from_static(b"first "))),
            Ok(http_body::Frame::data(Bytes::from_static(b"second"))),
            Ok(http_body::Frame::trailers(trailers)),
        ];
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        let request = http::Request::post(format!("http://{}/", gateway.address()))
            .header("content-type", "text/plain")
            .body(body)?;
        let response = sender.send_request(request).await?;
        ensure!(response.status() == 200, "round {round}");
        let collected = response.into_body().collect().await?;
        ensure!(collected.to_bytes() == "first second", "round {round}");
    }
    Ok(())
}
