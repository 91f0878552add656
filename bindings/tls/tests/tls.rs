//! The tls binding over real loopback sockets, against the `openssl` command line as the peer
//! and against itself, with certificates made by `openssl` for each run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout, timeout_at};
use zilla_engine::binding::{Binding, BindingFactory, BindingSchema, BuildContext};
use zilla_engine::components::{ComponentContext, ComponentFactory, Exporter};
use zilla_engine::events::Event;
use zilla_engine::properties::Properties;
use zilla_engine::stream::{BoxFuture, ByteStream, Bytes, BytesHandler, StreamError, StreamInfo};
use zilla_engine::vault::{KeyEntry, PrivateKeyFormat, Vault};
use zilla_engine::{BindingKind, BuildError, ConfigErrors, Engine, Registry};

const WAIT: Duration = Duration::from_secs(5);

/// A CA and leaf certificates for `localhost`, `*.example.com` and a client, made by openssl.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }
}

static PKI: LazyLock<Pki> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap();
    let openssl = |command: &str| {
        let output = std::process::Command::new("openssl")
            .args(command.split_whitespace())
            .current_dir(dir.path())
            .output()
            .expect("the openssl command line is installed");
        assert!(
            output.status.success(),
            "openssl {command}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    openssl(&format!(
        "req -x509 {ec} -keyout ca.key -subj /CN=TestCA -days 2 -out ca.pem \
         -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
    ));
    openssl("x509 -in ca.pem -outform DER -out ca.crt.der");
    let leaf = |name: &str, subject: &str, extensions: &str| {
        std::fs::write(dir.path().join(format!("{name}.ext")), extensions).unwrap();
        openssl(&format!(
            "req -new {ec} -keyout {name}.key -subj {subject} -out {name}.csr"
        ));
        openssl(&format!(
            "x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
             -out {name}.pem -extfile {name}.ext"
        ));
        openssl(&format!(
            "pkcs8 -topk8 -nocrypt -in {name}.key -outform DER -out {name}.key.der"
        ));
        openssl(&format!(
            "x509 -in {name}.pem -outform DER -out {name}.crt.der"
        ));
    };
    let server =
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n";
    leaf(
        "localhost",
        "/CN=localhost",
        &format!("subjectAltName=DNS:localhost\n{server}"),
    );
    leaf(
        "example",
        "/CN=*.example.com",
        &format!("subjectAltName=DNS:*.example.com\n{server}"),
    );
    leaf(
        "client",
        "/O=Zilla/CN=client",
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
    );
    // What Java's trust manager accepts and webpki alone does not (see `pkix.rs`): a v1
    // certificate (no `-extfile`) signed by the CA, a v3 one naming its host only in the
    // common name, a trusted self-signed CA certificate presented as the server's own, and a
    // v1 certificate from a CA nobody trusts.
    let v1 = |name: &str, subject: &str, ca: &str| {
        openssl(&format!(
            "req -new {ec} -keyout {name}.key -subj {subject} -out {name}.csr"
        ));
        openssl(&format!(
            "x509 -req -in {name}.csr -CA {ca}.pem -CAkey {ca}.key -CAcreateserial -days 2 \
             -out {name}.pem"
        ));
        openssl(&format!(
            "pkcs8 -topk8 -nocrypt -in {name}.key -outform DER -out {name}.key.der"
        ));
        openssl(&format!(
            "x509 -in {name}.pem -outform DER -out {name}.crt.der"
        ));
    };
    v1("v1", "/CN=localhost", "ca");
    leaf("cnonly", "/CN=localhost", server);
    openssl(&format!(
        "req -x509 {ec} -keyout pinned.key -subj /CN=localhost -days 2 -out pinned.pem \
         -addext basicConstraints=critical,CA:TRUE -addext subjectAltName=DNS:localhost"
    ));
    openssl("x509 -in pinned.pem -outform DER -out pinned.crt.der");
    openssl(&format!(
        "req -x509 {ec} -keyout otherca.key -subj /CN=OtherCA -days 2 -out otherca.pem \
         -addext basicConstraints=critical,CA:TRUE"
    ));
    v1("stranger", "/CN=localhost", "otherca");
    Pki { dir }
});

/// A vault over the DER files of [`Pki`]: key `x` is `x.key.der` with `x.crt.der` and the CA,
/// trusted certificate `x` is `x.crt.der`.
struct DirVault {
    dir: PathBuf,
}

impl Vault for DirVault {
    fn key(&self, alias: &str) -> Option<KeyEntry> {
        let read = |file: String| std::fs::read(self.dir.join(file)).ok();
        Some(KeyEntry {
            chain: vec![
                read(format!("{alias}.crt.der"))?,
                read("ca.crt.der".into())?,
            ],
            key: read(format!("{alias}.key.der"))?,
            format: PrivateKeyFormat::Pkcs8,
        })
    }

    fn certificate(&self, alias: &str) -> Option<Vec<u8>> {
        std::fs::read(self.dir.join(format!("{alias}.crt.der"))).ok()
    }

    fn certificates(&self) -> Vec<Vec<u8>> {
        self.certificate("ca").into_iter().collect()
    }

    fn signer(&self, _alias: &str) -> Option<Vec<Vec<u8>>> {
        None
    }
}

struct DirVaultFactory;

impl ComponentFactory<dyn Vault> for DirVaultFactory {
    fn type_name(&self) -> &'static str {
        "dir"
    }

    fn options_schema(&self) -> Option<serde_json::Value> {
        Some(json!({
            "type": "object",
            "properties": {"dir": {"type": "string"}},
            "required": ["dir"],
            "additionalProperties": false,
        }))
    }

    fn build(&self, context: &ComponentContext<'_>) -> Result<Arc<dyn Vault>, BuildError> {
        let options: serde_json::Value = context.options()?;
        let dir = options["dir"].as_str().unwrap_or_default();
        Ok(Arc::new(DirVault {
            dir: context.resolve_path(dir),
        }))
    }
}

/// What the test bindings and exporter saw.
#[derive(Clone, Default)]
struct Shared {
    entries: Arc<Mutex<HashMap<String, Arc<dyn BytesHandler>>>>,
    seen: Arc<Mutex<Vec<StreamInfo>>>,
    events: Arc<Mutex<Vec<(String, String)>>>,
}

struct Nothing;
impl Binding for Nothing {}

/// `socket`: a server binding that only hands its exit's handler to the test, which feeds it
/// the sockets it accepts.
struct SocketFactory(Shared);

impl BindingFactory for SocketFactory {
    fn type_name(&self) -> &'static str {
        "socket"
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
        let handler = context.exit::<Bytes>(&exit)?;
        self.0
            .entries
            .lock()
            .unwrap()
            .insert(context.name().name.clone(), handler);
        Ok(Arc::new(Nothing))
    }
}

/// `echo`: writes back what it reads and records the stream info it got.
struct EchoFactory(Shared);

struct Echo(Shared);

impl Binding for Echo {}

impl BytesHandler for Echo {
    fn accept(&self, stream: ByteStream) -> BoxFuture<'_, Result<(), StreamError>> {
        Box::pin(async move {
            self.0.seen.lock().unwrap().push(stream.info.clone());
            let (mut reader, mut writer) = tokio::io::split(stream.io);
            tokio::io::copy(&mut reader, &mut writer).await?;
            writer.shutdown().await?;
            Ok(())
        })
    }

    fn connect(&self, _info: StreamInfo) -> BoxFuture<'_, Result<ByteStream, StreamError>> {
        Box::pin(async { Err(StreamError::NoRoute) })
    }
}

impl BindingFactory for EchoFactory {
    fn type_name(&self) -> &'static str {
        "echo"
    }
    fn kinds(&self) -> &'static [BindingKind] {
        &[BindingKind::Server]
    }
    fn accepts(&self, _kind: BindingKind) -> &'static [&'static str] {
        &["bytes"]
    }
    fn emits(&self, _kind: BindingKind) -> Option<&'static str> {
        None
    }
    fn schema(&self, _kind: BindingKind) -> BindingSchema {
        BindingSchema::default()
    }
    fn build(&self, context: &mut BuildContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
        let echo = Arc::new(Echo(self.0.clone()));
        context.publish::<Bytes>(echo.clone());
        Ok(echo)
    }
}

/// `dial`: a client binding that connects a TCP socket to the stream's destination.
struct DialFactory;

struct Dial;

impl Binding for Dial {}

impl BytesHandler for Dial {
    fn connect(&self, info: StreamInfo) -> BoxFuture<'_, Result<ByteStream, StreamError>> {
        Box::pin(async move {
            let destination = info
                .destination
                .ok_or_else(|| StreamError::Upstream("no destination".into()))?;
            let socket = TcpStream::connect(destination).await?;
            let info = StreamInfo {
                source: socket.local_addr().ok(),
                ..info
            };
            Ok(ByteStream::new(socket, info))
        })
    }
}

impl BindingFactory for DialFactory {
    fn type_name(&self) -> &'static str {
        "dial"
    }
    fn kinds(&self) -> &'static [BindingKind] {
        &[BindingKind::Client]
    }
    fn accepts(&self, _kind: BindingKind) -> &'static [&'static str] {
        &["bytes"]
    }
    fn emits(&self, _kind: BindingKind) -> Option<&'static str> {
        None
    }
    fn schema(&self, _kind: BindingKind) -> BindingSchema {
        BindingSchema::default()
    }
    fn build(&self, context: &mut BuildContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
        let dial = Arc::new(Dial);
        context.publish::<Bytes>(dial.clone());
        Ok(dial)
    }
}

/// `capture`: an exporter keeping `(binding, event name)` pairs.
struct CaptureFactory(Shared);

struct Capture(Shared);

impl Exporter for Capture {
    fn event(&self, event: &Event) {
        self.0
            .events
            .lock()
            .unwrap()
            .push((event.qname.to_string(), event.name.to_owned()));
    }
}

impl ComponentFactory<dyn Exporter> for CaptureFactory {
    fn type_name(&self) -> &'static str {
        "capture"
    }
    fn options_schema(&self) -> Option<serde_json::Value> {
        None
    }
    fn build(&self, _context: &ComponentContext<'_>) -> Result<Arc<dyn Exporter>, BuildError> {
        Ok(Arc::new(Capture(self.0.clone())))
    }
}

/// A running engine with the tls binding and the test components.
struct Gateway {
    _engine: Engine,
    shared: Shared,
}

impl Gateway {
    /// Loads `bindings` (YAML indented as under `bindings:`) with a `pki` vault.
    fn start(bindings: &str, properties: &[&str]) -> Result<Self, ConfigErrors> {
        let shared = Shared::default();
        let mut registry = Registry::new();
        zilla_binding_tls::register(&mut registry);
        registry
            .binding(SocketFactory(shared.clone()))
            .binding(EchoFactory(shared.clone()))
            .binding(DialFactory)
            .vault(DirVaultFactory)
            .exporter(CaptureFactory(shared.clone()));
        let engine = Engine::new(
            registry,
            Properties::from_assignments(properties.iter().copied()),
        );
        let text = format!(
            "name: test\ntelemetry:\n  exporters:\n    events:\n      type: capture\nvaults:\n  pki:\n    type: dir\n    options:\n      dir: {}\nbindings:\n{bindings}",
            PKI.dir.path().display()
        );
        let config = engine.load(Path::new("zilla.yaml"), &text)?;
        engine.apply(config)?;
        Ok(Self {
            _engine: engine,
            shared,
        })
    }

    fn entry(&self, name: &str) -> Arc<dyn BytesHandler> {
        self.shared.entries.lock().unwrap()[name].clone()
    }

    fn seen(&self) -> Vec<StreamInfo> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Whether `binding` raised `name` within a few seconds.
    async fn raised(&self, binding: &str, name: &str) -> bool {
        let qname = format!("test:{binding}");
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            let raised = self
                .shared
                .events
                .lock()
                .unwrap()
                .iter()
                .any(|(q, n)| *q == qname && n == name);
            if raised {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

/// Accepts loopback connections and hands each to `handler`; reports how each ended.
async fn listen(
    handler: Arc<dyn BytesHandler>,
) -> (SocketAddr, mpsc::UnboundedReceiver<Result<(), StreamError>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (ended, results) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((socket, peer)) = listener.accept().await {
            let (handler, ended) = (handler.clone(), ended.clone());
            tokio::spawn(async move {
                let info = StreamInfo {
                    source: Some(peer),
                    destination: Some(address),
                    ..StreamInfo::default()
                };
                let _ = ended.send(handler.accept(ByteStream::new(socket, info)).await);
            });
        }
    });
    (address, results)
}

async fn next_result(
    results: &mut mpsc::UnboundedReceiver<Result<(), StreamError>>,
) -> Result<(), StreamError> {
    timeout(WAIT, results.recv())
        .await
        .expect("the handler finished")
        .expect("a result")
}

/// What `openssl s_client` printed and whether it exited by itself.
struct Peer {
    stdout: Vec<u8>,
    stderr: String,
    exited: bool,
}

/// Runs `openssl s_client` against `address`, trusting the test CA, sends `input` and reads
/// until `expect` arrived (or, with `expect` empty, until it exits).
async fn s_client(address: SocketAddr, args: &[&str], input: &[u8], expect: &[u8]) -> Peer {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &address.to_string(), "-quiet"])
        .args(["-verify_return_error", "-CAfile", &PKI.path("ca.pem")])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the openssl command line is installed");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).await.unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    let deadline = Instant::now() + WAIT;
    while let Ok(Ok(read)) = timeout_at(deadline, stdout.read(&mut buffer)).await {
        if read == 0 {
            break;
        }
        received.extend_from_slice(&buffer[..read]);
        if !expect.is_empty() && received.ends_with(expect) {
            break;
        }
    }
    let exited = expect.is_empty() && timeout_at(deadline, child.wait()).await.is_ok();
    let _ = child.start_kill();
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = timeout(WAIT, pipe.read_to_string(&mut stderr)).await;
    }
    drop(stdin);
    Peer {
        stdout: received,
        stderr,
        exited,
    }
}

const SERVER: &str = r#"
  front:
    type: socket
    kind: server
    exit: tls_server
  tls_server:
    type: tls
    kind: server
    vault: pki
    options:
      keys: [localhost, example]
    routes:
      - when:
          - authority: localhost
            alpn: echo
          - authority: "*.example.com"
        exit: echo
  echo:
    type: echo
    kind: server
"#;

#[tokio::test]
async fn server_echoes_to_openssl_and_describes_the_stream() {
    let gateway = Gateway::start(SERVER, &[]).unwrap();
    let (address, _results) = listen(gateway.entry("front")).await;

    let peer = s_client(
        address,
        &[
            "-servername",
            "localhost",
            "-verify_hostname",
            "localhost",
            "-alpn",
            "echo",
        ],
        b"hello\n",
        b"hello\n",
    )
    .await;
    assert_eq!(peer.stdout, b"hello\n", "{}", peer.stderr);
    let seen = gateway.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].authority.as_deref(), Some("localhost"));
    assert_eq!(seen[0].alpn, vec!["echo".to_owned()]);
    assert!(seen[0].secure);
    assert_eq!(seen[0].identity, None);
    assert_eq!(seen[0].destination, Some(address));

    // The certificate for *.example.com is chosen by SNI: openssl checks the name.
    let peer = s_client(
        address,
        &[
            "-servername",
            "api.example.com",
            "-verify_hostname",
            "api.example.com",
        ],
        b"wildcard\n",
        b"wildcard\n",
    )
    .await;
    assert_eq!(peer.stdout, b"wildcard\n", "{}", peer.stderr);
    assert_eq!(
        gateway.seen()[1].authority.as_deref(),
        Some("api.example.com")
    );
    assert_eq!(gateway.seen()[1].alpn, Vec::<String>::new());
}

#[tokio::test]
async fn server_closes_connections_no_route_takes() {
    let gateway = Gateway::start(SERVER, &[]).unwrap();
    let (address, mut results) = listen(gateway.entry("front")).await;

    let peer = s_client(
        address,
        &["-servername", "localhost", "-alpn", "other"],
        b"hello\n",
        b"",
    )
    .await;
    assert!(peer.exited, "openssl should be disconnected");
    assert!(peer.stdout.is_empty());
    assert!(
        peer.stderr.contains("no application protocol"),
        "{}",
        peer.stderr
    );
    assert!(matches!(
        next_result(&mut results).await,
        Err(StreamError::NoRoute)
    ));

    let peer = s_client(
        address,
        &["-servername", "unknown.test", "-alpn", "echo"],
        b"hello\n",
        b"",
    )
    .await;
    assert!(peer.exited, "openssl should be disconnected");
    assert!(peer.stdout.is_empty());
    assert!(peer.stderr.contains("unrecognized name"), "{}", peer.stderr);
    assert!(matches!(
        next_result(&mut results).await,
        Err(StreamError::NoRoute)
    ));
    assert!(gateway.seen().is_empty());
}

const MUTUAL: &str = r#"
  front:
    type: socket
    kind: server
    exit: tls_server
  tls_server:
    type: tls
    kind: server
    vault: pki
    options:
      keys: [localhost]
      trust: [ca]
      mutual: required
      alpn: [echo]
    exit: echo
  echo:
    type: echo
    kind: server
  app:
    type: socket
    kind: server
    exit: tls_client
  tls_client:
    type: tls
    kind: client
    vault: pki
    options:
      keys: [client]
      trust: [ca]
    routes:
      - when:
          - alpn: echo
        exit: dial
  dial:
    type: dial
    kind: client
"#;

#[tokio::test]
async fn client_and_server_authenticate_each_other() {
    let gateway = Gateway::start(MUTUAL, &[]).unwrap();
    let (address, _results) = listen(gateway.entry("front")).await;
    let client = gateway.entry("app");

    let mut stream = client
        .connect(StreamInfo {
            destination: Some(address),
            authority: Some("localhost".into()),
            alpn: vec!["echo".into()],
            ..StreamInfo::default()
        })
        .await
        .unwrap();
    assert!(stream.info.secure);
    assert_eq!(stream.info.alpn, vec!["echo".to_owned()]);
    assert_eq!(stream.info.destination, Some(address));
    stream.io.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    timeout(WAIT, stream.io.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"ping");
    let seen = gateway.seen();
    assert_eq!(seen[0].identity.as_deref(), Some("CN=client,O=Zilla"));
    assert_eq!(seen[0].alpn, vec!["echo".to_owned()]);

    // The client's routes only allow the echo protocol.
    let refused = client
        .connect(StreamInfo {
            destination: Some(address),
            authority: Some("localhost".into()),
            alpn: vec!["h2".into()],
            ..StreamInfo::default()
        })
        .await;
    assert!(matches!(refused, Err(StreamError::NoRoute)));

    // The server certificate does not name this host.
    let refused = client
        .connect(StreamInfo {
            destination: Some(address),
            authority: Some("elsewhere.test".into()),
            alpn: vec!["echo".into()],
            ..StreamInfo::default()
        })
        .await;
    assert!(matches!(refused, Err(StreamError::Upstream(_))));
    assert!(
        gateway
            .raised("tls_client", "BINDING_TLS_PEER_NOT_VERIFIED")
            .await
    );
}

#[tokio::test]
async fn server_requires_a_client_certificate() {
    let gateway = Gateway::start(MUTUAL, &[]).unwrap();
    let (address, mut results) = listen(gateway.entry("front")).await;

    let peer = s_client(
        address,
        &["-servername", "localhost", "-alpn", "echo"],
        b"hello\n",
        b"",
    )
    .await;
    assert!(peer.exited, "openssl should be disconnected");
    assert!(peer.stdout.is_empty());
    assert!(next_result(&mut results).await.is_err());
    assert!(
        gateway
            .raised("tls_server", "BINDING_TLS_PEER_NOT_VERIFIED")
            .await
    );
    assert!(gateway.seen().is_empty());

    let peer = s_client(
        address,
        &[
            "-servername",
            "localhost",
            "-alpn",
            "echo",
            "-cert",
            &PKI.path("client.pem"),
            "-key",
            &PKI.path("client.key"),
        ],
        b"hello\n",
        b"hello\n",
    )
    .await;
    assert_eq!(peer.stdout, b"hello\n", "{}", peer.stderr);
    assert_eq!(
        gateway.seen()[0].identity.as_deref(),
        Some("CN=client,O=Zilla")
    );
}

/// Starts `openssl s_server` presenting `<certificate>.pem`, answering each line reversed
/// (`-rev`); returns it with its port.
async fn s_server(certificate: &str, args: &[&str]) -> (tokio::process::Child, u16) {
    let mut server = Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            "127.0.0.1:0",
            "-rev",
            "-alpn",
            "echo",
        ])
        .args([
            "-cert",
            &PKI.path(&format!("{certificate}.pem")),
            "-key",
            &PKI.path(&format!("{certificate}.key")),
        ])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = server.stdout.take().unwrap();
    let mut banner = Vec::new();
    let mut byte = [0u8; 1];
    let port = loop {
        timeout(WAIT, stdout.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        banner.push(byte[0]);
        let text = String::from_utf8_lossy(&banner);
        if let Some(line) = text.lines().find(|line| line.starts_with("ACCEPT "))
            && text.ends_with('\n')
        {
            break line.rsplit(':').next().unwrap().parse::<u16>().unwrap();
        }
    };
    server.stdout = Some(stdout);
    (server, port)
}

#[tokio::test]
async fn client_talks_to_openssl_server() {
    let gateway = Gateway::start(MUTUAL, &[]).unwrap();
    // `-Verify` requires our client certificate.
    let (mut server, port) = s_server(
        "localhost",
        &["-Verify", "1", "-CAfile", &PKI.path("ca.pem")],
    )
    .await;

    let mut stream = gateway
        .entry("app")
        .connect(StreamInfo {
            destination: Some(SocketAddr::from(([127, 0, 0, 1], port))),
            authority: Some("localhost".into()),
            alpn: vec!["echo".into()],
            ..StreamInfo::default()
        })
        .await
        .unwrap();
    assert_eq!(stream.info.alpn, vec!["echo".to_owned()]);
    stream.io.write_all(b"hello\n").await.unwrap();
    let mut reversed = [0u8; 6];
    timeout(WAIT, stream.io.read_exact(&mut reversed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&reversed, b"olleh\n");
    let _ = server.start_kill();
}

/// A tls client trusting `trust`, dialing what the stream names.
fn trusting(trust: &str) -> String {
    format!(
        r#"
  app:
    type: socket
    kind: server
    exit: tls_client
  tls_client:
    type: tls
    kind: client
    vault: pki
    options:
      trust: [{trust}]
      alpn: [echo]
    exit: dial
  dial:
    type: dial
    kind: client
"#
    )
}

/// Whether the client trusting `trust` completes a handshake with `openssl s_server` presenting
/// `certificate` for the host `authority`, and the bytes then flow both ways.
async fn handshake(trust: &str, certificate: &str, authority: &str, properties: &[&str]) -> bool {
    let gateway = Gateway::start(&trusting(trust), properties).unwrap();
    let (mut server, port) = s_server(certificate, &[]).await;
    let connected = gateway
        .entry("app")
        .connect(StreamInfo {
            destination: Some(SocketAddr::from(([127, 0, 0, 1], port))),
            authority: Some(authority.into()),
            alpn: vec!["echo".into()],
            ..StreamInfo::default()
        })
        .await;
    let flowed = match connected {
        Ok(mut stream) => {
            stream.io.write_all(b"java\n").await.unwrap();
            let mut reversed = [0u8; 5];
            timeout(WAIT, stream.io.read_exact(&mut reversed))
                .await
                .is_ok_and(|read| read.is_ok() && &reversed == b"avaj\n")
        }
        Err(_) => false,
    };
    let _ = server.start_kill();
    flowed
}

#[tokio::test]
async fn client_accepts_the_certificates_java_trusts_and_no_others() {
    // A v1 certificate signed by a trusted CA, checked against its common name.
    assert!(handshake("ca", "v1", "localhost", &[]).await);
    assert!(!handshake("ca", "v1", "other.example", &[]).await);
    // A v1 certificate from a CA that is not trusted.
    assert!(!handshake("ca", "stranger", "localhost", &[]).await);
    // A v3 certificate without subject alternative names: the common name is the host.
    assert!(handshake("ca", "cnonly", "localhost", &[]).await);
    assert!(!handshake("ca", "cnonly", "other.example", &[]).await);
    // A self-signed CA certificate presented as the server's own: only when it is trusted.
    assert!(handshake("pinned", "pinned", "localhost", &[]).await);
    assert!(!handshake("ca", "pinned", "localhost", &[]).await);
    assert!(!handshake("pinned", "pinned", "other.example", &[]).await);
    // Without host identification only the name check goes.
    let anyname = ["zilla.binding.tls.client.https.identification=false"];
    assert!(handshake("ca", "v1", "other.example", &anyname).await);
    assert!(!handshake("ca", "stranger", "localhost", &anyname).await);
}

const V1_SERVER: &str = r#"
  front:
    type: socket
    kind: server
    exit: tls_server
  tls_server:
    type: tls
    kind: server
    vault: pki
    options:
      keys: [v1]
    exit: echo
  echo:
    type: echo
    kind: server
"#;

#[tokio::test]
async fn server_presents_a_v1_certificate() {
    let gateway = Gateway::start(V1_SERVER, &[]).unwrap();
    let (address, _results) = listen(gateway.entry("front")).await;
    let peer = s_client(
        address,
        &["-servername", "localhost", "-verify_hostname", "localhost"],
        b"hello\n",
        b"hello\n",
    )
    .await;
    assert_eq!(peer.stdout, b"hello\n", "{}", peer.stderr);
}

const PROXY: &str = r#"
  front:
    type: socket
    kind: server
    exit: tls_proxy
  tls_proxy:
    type: tls
    kind: proxy
    routes:
      - when:
          - authority: localhost
        exit: tls_server
  tls_server:
    type: tls
    kind: server
    vault: pki
    options:
      keys: [localhost]
    exit: echo
  echo:
    type: echo
    kind: server
"#;

#[tokio::test]
async fn proxy_forwards_tls_by_sni_without_terminating_it() {
    let gateway = Gateway::start(PROXY, &[]).unwrap();
    let (address, mut results) = listen(gateway.entry("front")).await;

    let peer = s_client(
        address,
        &[
            "-servername",
            "localhost",
            "-verify_hostname",
            "localhost",
            "-alpn",
            "echo",
        ],
        b"through\n",
        b"through\n",
    )
    .await;
    assert_eq!(peer.stdout, b"through\n", "{}", peer.stderr);
    let seen = gateway.seen();
    assert_eq!(seen[0].authority.as_deref(), Some("localhost"));
    assert_eq!(seen[0].alpn, vec!["echo".to_owned()]);
    assert!(seen[0].secure);

    let peer = s_client(address, &["-servername", "other.test"], b"hello\n", b"").await;
    assert!(peer.exited, "openssl should be disconnected");
    assert!(peer.stdout.is_empty());
    // The first connection ends when openssl is stopped, the second one is not routed.
    let mut ended = vec![
        next_result(&mut results).await,
        next_result(&mut results).await,
    ];
    ended.retain(|result| matches!(result, Err(StreamError::NoRoute)));
    assert_eq!(ended.len(), 1);
    assert_eq!(gateway.seen().len(), 1);
}

#[tokio::test]
async fn proxy_closes_garbage_and_oversized_hellos() {
    let gateway =
        Gateway::start(PROXY, &["zilla.binding.tls.handshake.window.bytes=1024"]).unwrap();
    let (address, mut results) = listen(gateway.entry("front")).await;

    let mut socket = TcpStream::connect(address).await.unwrap();
    socket
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = timeout(WAIT, socket.read_to_end(&mut answer))
        .await
        .unwrap();
    assert!(answer.is_empty());
    assert!(matches!(
        next_result(&mut results).await,
        Err(StreamError::Protocol(_))
    ));
    assert!(
        gateway
            .raised("tls_proxy", "BINDING_TLS_PROTOCOL_REJECTED")
            .await
    );

    // A handshake record announcing more than the window allows.
    let mut socket = TcpStream::connect(address).await.unwrap();
    let mut record = vec![0x16, 3, 1, 0x08, 0, 1, 0, 0x07, 0xfc];
    record.resize(2048 + 5, 0);
    let _ = socket.write_all(&record).await;
    let _ = timeout(WAIT, socket.read_to_end(&mut answer))
        .await
        .unwrap();
    assert!(answer.is_empty());
    assert!(matches!(
        next_result(&mut results).await,
        Err(StreamError::Protocol(_))
    ));
    assert!(gateway.seen().is_empty());
}

#[tokio::test]
async fn silent_connections_time_out() {
    let gateway = Gateway::start(SERVER, &["zilla.binding.tls.handshake.timeout=1"]).unwrap();
    let (address, mut results) = listen(gateway.entry("front")).await;

    let started = Instant::now();
    let mut socket = TcpStream::connect(address).await.unwrap();
    let mut answer = Vec::new();
    let _ = timeout(WAIT, socket.read_to_end(&mut answer))
        .await
        .unwrap();
    assert!(answer.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(matches!(
        next_result(&mut results).await,
        Err(StreamError::Protocol(_))
    ));
    assert!(
        gateway
            .raised("tls_server", "BINDING_TLS_HANDSHAKE_TIMEOUT")
            .await
    );
}

#[test]
fn bad_configs_name_what_is_wrong() {
    let without_vault = r#"
  tls_server:
    type: tls
    kind: server
    options:
      keys: [localhost]
    exit: echo
  echo:
    type: echo
    kind: server
"#;
    let error = rejection(without_vault);
    assert!(error.contains("needs a `vault`"), "{error}");

    let missing_key = without_vault.replace("    options:", "    vault: pki\n    options:");
    let missing_key = missing_key.replace("[localhost]", "[missing]");
    let error = rejection(&missing_key);
    assert!(error.contains("no key `missing`"), "{error}");

    let proxy_options = r#"
  tls_proxy:
    type: tls
    kind: proxy
    options:
      keys: [localhost]
    exit: echo
  echo:
    type: echo
    kind: server
"#;
    rejection(proxy_options);

    let unknown_option = SERVER.replace("keys:", "keystore:");
    let error = rejection(&unknown_option);
    assert!(error.contains("keystore"), "{error}");

    let unknown_condition = SERVER.replace("- authority: localhost", "- host: localhost");
    let error = rejection(&unknown_condition);
    assert!(error.contains("host"), "{error}");

    let bad_port = SERVER.replace("alpn: echo", "alpn: echo\n            port: \"9-1\"");
    let error = rejection(&bad_port);
    assert!(error.contains("ends before it starts"), "{error}");
}

/// Why loading `bindings` fails.
fn rejection(bindings: &str) -> String {
    Gateway::start(bindings, &[])
        .err()
        .expect("the config is rejected")
        .to_string()
}
