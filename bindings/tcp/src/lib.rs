//! The `tcp` binding: the network edge of every pipeline.
//!
//! - `server` listens on every configured port and hands each accepted connection to the
//!   first route whose conditions match (local `port`, remote `cidr`, listening `authority`),
//!   or to `exit`. A connection no route takes is closed.
//! - `client` connects where the caller asks (or to `options.host`/`port` when set); its
//!   routes, which have no exit, are an allow-list of destinations.
//!
//! ```yaml
//! name: example
//! bindings:
//!   tcp_server:
//!     type: tcp
//!     kind: server
//!     options:
//!       host: 0.0.0.0
//!       port: [8080, "9000-9002"]
//!     routes:
//!       - when:
//!           - port: 8080
//!         exit: echo_server
//!   echo_server:
//!     type: echo
//!     kind: server
//! ```
//!
//! Options: `host`, `port` (number, `"low-high"` range or a list), `backlog` (1024),
//! `nodelay` (true), `keepalive` (false). Listening sockets survive config reloads: a
//! rebuilt server takes over the socket of the one it replaces, and the connections the
//! replaced server accepted carry on through the pipeline they started on, up to the drain
//! timeout.
//!
//! Limits (properties):
//!
//! | property | default | meaning |
//! |---|---|---|
//! | `zilla.binding.tcp.maximum.connections` | 0 (none) | connections one tcp server holds open at once, over all its ports |
//! | `zilla.engine.maximum.connections` | 0 (none) | connections the whole process holds open at once, over every tcp server |
//! | `zilla.binding.tcp.idle.timeout.millis` | 300000 | a server connection on which nothing was read or written for this long is closed; 0 turns it off. The protocol on top owns the timeout once past its handshake: an HTTP exchange in progress (SSE, long polls, HTTP/2 streams) and a WebSocket session hold the connection, MQTT (directly over tcp or tls) sets 1.5 times the client's keep-alive, counting only what the client sends |
//! | `zilla.binding.tcp.client.connect.timeout.millis` | 10000 | how long a client waits for a connection to an origin |
//!
//! At a cap the server keeps accepting, and closes each connection over the cap at once with a
//! TCP reset (`SO_LINGER` 0), so a client learns of the refusal immediately instead of waiting
//! in the listen backlog, and the accept loop never spins: it only wakes for a connection that
//! arrived. Refusals raise `BINDING_TCP_CONNECTION_REFUSED` (at most one event per second per
//! server, with the count). Connections already open are not disturbed, and new ones are
//! accepted again as soon as open ones close.

pub mod config;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ipnet::IpNet;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;
use zilla_engine::binding::{Binding, BindingFactory, BindingSchema, BuildContext, StartContext};
use zilla_engine::events::Events;
use zilla_engine::idle::IdleTimeout;
use zilla_engine::limits::{ConnectionGate, ConnectionPermit, Throttle};
use zilla_engine::pattern::Pattern;
use zilla_engine::route::Routes;
use zilla_engine::stream::{BoxFuture, ByteStream, Bytes, BytesHandler, StreamError, StreamInfo};
use zilla_engine::{BindingKind, BuildError, Registry, workers};

use config::{Ports, TcpCondition, TcpOptions};

/// Registers the `tcp` binding type.
pub fn register(registry: &mut Registry) {
    registry.binding(TcpFactory).properties(&[
        MAXIMUM_CONNECTIONS_PROPERTY,
        IDLE_TIMEOUT_PROPERTY,
        CONNECT_TIMEOUT_PROPERTY,
    ]);
}

const DEFAULT_BACKLOG: u32 = 1024;

/// The per-server connection cap (0 = none).
pub const MAXIMUM_CONNECTIONS_PROPERTY: &str = "zilla.binding.tcp.maximum.connections";

/// The idle timeout of server connections, in milliseconds (0 = none).
pub const IDLE_TIMEOUT_PROPERTY: &str = "zilla.binding.tcp.idle.timeout.millis";

/// How long a client waits for a connection to an origin, in milliseconds.
pub const CONNECT_TIMEOUT_PROPERTY: &str = "zilla.binding.tcp.client.connect.timeout.millis";

const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Raised when a connection is closed because a connection cap is reached.
pub const CONNECTION_REFUSED: &str = "BINDING_TCP_CONNECTION_REFUSED";

/// Builds tcp bindings.
#[derive(Debug)]
pub struct TcpFactory;

impl BindingFactory for TcpFactory {
    fn type_name(&self) -> &'static str {
        "tcp"
    }

    fn kinds(&self) -> &'static [BindingKind] {
        &[BindingKind::Server, BindingKind::Client]
    }

    fn accepts(&self, kind: BindingKind) -> &'static [&'static str] {
        match kind {
            BindingKind::Client => &["bytes"],
            _ => &[],
        }
    }

    fn emits(&self, kind: BindingKind) -> Option<&'static str> {
        match kind {
            BindingKind::Server => Some("bytes"),
            _ => None,
        }
    }

    fn schema(&self, _kind: BindingKind) -> BindingSchema {
        BindingSchema {
            options: Some(BindingSchema::of::<TcpOptions>()),
            options_required: false,
            when: Some(BindingSchema::of::<TcpCondition>()),
            with: None,
        }
    }

    fn build(&self, context: &mut BuildContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
        let options: TcpOptions = context.options()?;
        match context.kind() {
            BindingKind::Server => TcpServer::build(context, options),
            _ => TcpClient::build(context, options),
        }
    }
}

/// A compiled route condition.
#[derive(Debug)]
struct Condition {
    authority: Option<Pattern>,
    cidr: Option<IpNet>,
    ports: Option<Ports>,
}

impl Condition {
    fn compile(raw: TcpCondition) -> Result<Self, String> {
        Ok(Self {
            authority: raw
                .authority
                .map(|authority| Pattern::compile(&authority, None))
                .transpose()?,
            cidr: raw
                .cidr
                .map(|cidr| {
                    cidr.parse::<IpNet>()
                        .map_err(|_| format!("`{cidr}` is not a CIDR block such as 10.0.0.0/8"))
                })
                .transpose()?,
            ports: raw.port,
        })
    }

    fn matches(&self, authority: Option<&str>, address: Option<IpAddr>, port: Option<u16>) -> bool {
        let authority_ok = self
            .authority
            .as_ref()
            .is_none_or(|pattern| authority.is_some_and(|a| pattern.matches(a)));
        let cidr_ok = self
            .cidr
            .as_ref()
            .is_none_or(|net| address.is_some_and(|a| net.contains(&canonical(a))));
        let port_ok = self
            .ports
            .as_ref()
            .is_none_or(|ports| port.is_some_and(|p| ports.contains(p)));
        authority_ok && cidr_ok && port_ok
    }
}

/// IPv4-mapped IPv6 addresses match IPv4 CIDR blocks.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn resolve_host(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    use std::net::ToSocketAddrs;
    let mut addresses = (host, port)
        .to_socket_addrs()
        .map_err(|error| format!("cannot resolve host `{host}`: {error}"))?;
    addresses
        .next()
        .ok_or_else(|| format!("host `{host}` resolves to no address"))
}

struct ServerShared {
    /// Shared, not copied, by every connection's task (for its log lines).
    qname: Arc<str>,
    host: String,
    routes: Routes<Condition, (), Arc<dyn BytesHandler>>,
    socket: SocketOptions,
    /// This server's connections.
    connections: Arc<ConnectionGate>,
    /// Every connection of the process.
    process_connections: Arc<ConnectionGate>,
    /// Zero: no idle timeout.
    idle_timeout: Duration,
    events: Events,
    refusals: Throttle,
}

impl ServerShared {
    /// Permits from the process gate and this server's gate, or `None` when either is full.
    fn admit(&self) -> Option<(ConnectionPermit, ConnectionPermit)> {
        let process = self.process_connections.try_acquire()?;
        let own = self.connections.try_acquire()?;
        Some((process, own))
    }

    /// Closes `socket` with a reset and reports the refusal (throttled).
    fn refuse(&self, socket: TcpStream, peer: SocketAddr) {
        if let Err(error) = socket2::SockRef::from(&socket).set_linger(Some(Duration::ZERO)) {
            tracing::debug!(%error, "linger not set");
        }
        drop(socket);
        if let Some(count) = self.refusals.note() {
            let (open, maximum) = if self.process_connections.maximum() > 0
                && self.process_connections.open() >= self.process_connections.maximum()
            {
                (
                    self.process_connections.open(),
                    self.process_connections.maximum(),
                )
            } else {
                (self.connections.open(), self.connections.maximum())
            };
            tracing::warn!(binding = %self.qname, %peer, count, open, maximum, "connection cap reached: refusing");
            self.events.emit_with(CONNECTION_REFUSED, 0, || {
                format!("{count} connection(s) refused, latest from {peer}: {open} open of at most {maximum}")
            });
        }
    }
}

/// A listening tcp server.
struct TcpServer {
    shared: Arc<ServerShared>,
    /// Moved into the accept loops on start, so a retired server holds no socket.
    listeners: Mutex<Vec<Arc<TcpListener>>>,
}

impl TcpServer {
    fn build(
        context: &mut BuildContext<'_>,
        options: TcpOptions,
    ) -> Result<Arc<dyn Binding>, BuildError> {
        let routes = context.routes::<Bytes, _, _, ()>(Condition::compile)?;
        if routes.is_empty() {
            return Err(BuildError::at(
                "",
                "a tcp server needs an `exit` or `routes` with exits",
            ));
        }
        let host = options.host.clone().unwrap_or_else(|| "0.0.0.0".to_owned());
        let Some(ports) = options.port.clone() else {
            return Err(BuildError::at(
                "options",
                "missing `port`: a tcp server needs one",
            ));
        };
        let backlog = options.backlog.unwrap_or(DEFAULT_BACKLOG);
        let owner = context.name().to_string();
        let mut listeners = Vec::new();
        for port in ports.iter() {
            let address = resolve_host(&host, port)
                .map_err(|message| BuildError::at("options.host", message))?;
            let listener = context
                .listeners()
                .claim(&owner, address, backlog)
                .map_err(|error| {
                    BuildError::at(
                        "options.port",
                        format!("cannot listen on {address}: {error}"),
                    )
                })?;
            listeners.push(listener);
        }
        Ok(Arc::new(TcpServer {
            shared: Arc::new(ServerShared {
                qname: Arc::from(owner.as_str()),
                host,
                routes,
                socket: SocketOptions::of(&options),
                connections: ConnectionGate::new(
                    usize::try_from(context.properties().u64(MAXIMUM_CONNECTIONS_PROPERTY, 0))
                        .unwrap_or(usize::MAX),
                ),
                process_connections: context.process_connections(),
                idle_timeout: context
                    .properties()
                    .millis(IDLE_TIMEOUT_PROPERTY, DEFAULT_IDLE_TIMEOUT),
                events: context.events().clone(),
                refusals: Throttle::new(Duration::from_secs(1)),
            }),
            listeners: Mutex::new(listeners),
        }))
    }
}

impl Binding for TcpServer {
    fn start(&self, context: &StartContext) {
        let listeners = match self.listeners.lock() {
            Ok(mut listeners) => std::mem::take(&mut *listeners),
            Err(_) => return,
        };
        for listener in listeners {
            let shared = self.shared.clone();
            let context = context.clone();
            tokio::spawn(accept_loop(shared, listener, context));
        }
    }
}

/// The connections one accept loop started, so that retirement can cut them: an abort
/// handle each, in a map. Each connection's task waiting on the retirement token itself would
/// cost it some 180 bytes more (the wait's future, boxed so that it is polled only once it
/// fires, and its waker's state), which an idle connection holds for its whole life.
#[derive(Default)]
struct OpenConnections {
    state: Mutex<OpenState>,
}

#[derive(Default)]
struct OpenState {
    next: u64,
    /// The tasks of the connections open, by the id [`OpenConnections::reserve`] gave; `None`
    /// until the task is spawned.
    tasks: HashMap<u64, Option<AbortHandle>>,
    /// Retired: a connection whose task is spawned from now on is cut at once.
    cut: bool,
}

impl OpenConnections {
    fn state(&self) -> MutexGuard<'_, OpenState> {
        // Nothing panics while holding the lock; the map stays whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for a connection about to be spawned; the guard, held by the connection's
    /// task, gives it up when the task ends.
    fn reserve(self: &Arc<Self>) -> OpenGuard {
        let mut state = self.state();
        let id = state.next;
        state.next += 1;
        state.tasks.insert(id, None);
        OpenGuard {
            open: self.clone(),
            id,
        }
    }

    /// The task of connection `id` was spawned: cut it with the others on retirement, or now
    /// if retirement already came. A task that already ended gave its place up: nothing to
    /// keep then.
    fn spawned(&self, id: u64, task: AbortHandle) {
        let mut state = self.state();
        if state.cut {
            drop(state);
            task.abort();
        } else if let Some(place) = state.tasks.get_mut(&id) {
            *place = Some(task);
        }
    }

    /// Cuts every connection open, and those spawned from now on.
    fn cut(&self) {
        let tasks = {
            let mut state = self.state();
            state.cut = true;
            std::mem::take(&mut state.tasks)
        };
        for task in tasks.into_values().flatten() {
            task.abort();
        }
    }
}

/// A connection's place in [`OpenConnections`], given up when dropped.
struct OpenGuard {
    open: Arc<OpenConnections>,
    id: u64,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.open.state().tasks.remove(&self.id);
    }
}

async fn accept_loop(shared: Arc<ServerShared>, listener: Arc<TcpListener>, context: StartContext) {
    let open = Arc::new(OpenConnections::default());
    {
        // A reload replaced this binding and the drain timeout passed, or shutdown drained:
        // cut what is still open. Until then a connection runs on the pipeline it was
        // accepted by, whatever reloads happen.
        let open = open.clone();
        let retired = context.retired.clone();
        tokio::spawn(async move {
            retired.cancelled().await;
            open.cut();
        });
    }
    loop {
        let accepted = tokio::select! {
            _ = context.retired.cancelled() => break,
            _ = context.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((socket, peer)) => match shared.admit() {
                Some(permits) => serve(&shared, socket, peer, permits, &context, &open),
                None => shared.refuse(socket, peer),
            },
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(binding = %shared.qname, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracing::debug!(binding = %shared.qname, "stopped accepting");
}

fn serve(
    shared: &Arc<ServerShared>,
    socket: TcpStream,
    peer: SocketAddr,
    permits: (ConnectionPermit, ConnectionPermit),
    context: &StartContext,
    open: &Arc<OpenConnections>,
) {
    let local = socket.local_addr().ok();
    if let Err(error) = shared.socket.apply(&socket) {
        tracing::debug!(%error, "socket options not applied");
    }
    let route = shared.routes.resolve(None, |condition| {
        condition.matches(Some(&shared.host), Some(peer.ip()), local.map(|l| l.port()))
    });
    let Some(route) = route else {
        tracing::debug!(binding = %shared.qname, %peer, "no route: closing");
        return;
    };
    // Handed to a worker: the socket leaves this runtime's reactor for the worker's.
    let socket = match socket.into_std() {
        Ok(socket) => socket,
        Err(error) => {
            tracing::debug!(binding = %shared.qname, %peer, %error, "connection not handed over");
            return;
        }
    };
    let place = open.reserve();
    let id = place.id;
    tracing::debug!(binding = %shared.qname, %peer, connection = id, "connection accepted");
    // The task's cell is sized by everything its future captures, kept for the connection's
    // whole life: what only starting the connection needs is boxed and freed once started,
    // and the stream and its `StreamInfo` are made in a block of their own, so that only the
    // exit's future outlives them.
    let start = Box::new(Start {
        socket,
        peer,
        local,
        idle_timeout: shared.idle_timeout,
        exit: route.exit.clone(),
        qname: shared.qname.clone(),
    });
    let connection = context.tasks.track_future(async move {
        // Held until the connection is done with.
        let _permits = permits;
        let _place = place;
        // Its future borrows the exit, so the exit lives as long.
        let exit;
        let accepted = {
            // Moved out of the captured box in a block of its own, so the box is freed here
            // (a box the future captured would be freed only when the connection ends).
            let Start {
                socket,
                peer,
                local,
                idle_timeout,
                exit: handler,
                qname,
            } = *{ start };
            exit = handler;
            let socket = match TcpStream::from_std(socket) {
                Ok(socket) => socket,
                Err(error) => {
                    tracing::debug!(binding = %qname, %peer, %error, "connection not registered");
                    return;
                }
            };
            let mut info = StreamInfo {
                source: Some(peer),
                destination: local,
                ..StreamInfo::default()
            };
            let stream = if idle_timeout.is_zero() {
                ByteStream::new(socket, info)
            } else {
                // The protocol on top takes over the timeout once past its handshake.
                let socket = IdleTimeout::new(socket, idle_timeout);
                info.idle = socket.control();
                ByteStream::new(socket, info)
            };
            exit.accept(stream)
        };
        if let Err(error) = accepted.await {
            tracing::debug!(connection = id, %error, "connection ended");
        }
    });
    let task = workers::spawn(connection);
    open.spawned(id, task.abort_handle());
}

/// What a connection's task needs to start it, and no longer once it runs.
struct Start {
    socket: std::net::TcpStream,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    idle_timeout: Duration,
    exit: Arc<dyn BytesHandler>,
    qname: Arc<str>,
}

/// The options every connection gets, accepted or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SocketOptions {
    /// On by default: Kafka, HTTP and MQTT peers write whole messages and wait for answers, and
    /// Nagle's algorithm would hold a small message back until the previous one is
    /// acknowledged, which the peer's delayed acknowledgement can put off by 40 ms.
    nodelay: bool,
    keepalive: bool,
}

impl SocketOptions {
    fn of(options: &TcpOptions) -> Self {
        Self {
            nodelay: options.nodelay.unwrap_or(true),
            keepalive: options.keepalive.unwrap_or(false),
        }
    }

    fn apply(&self, socket: &TcpStream) -> std::io::Result<()> {
        socket.set_nodelay(self.nodelay)?;
        if self.keepalive {
            socket2::SockRef::from(socket).set_keepalive(true)?;
        }
        Ok(())
    }
}

/// Connects to origins.
struct TcpClient {
    host: Option<String>,
    port: Option<u16>,
    routes: Routes<Condition, (), ()>,
    socket: SocketOptions,
    connect_timeout: Duration,
}

impl TcpClient {
    fn build(
        context: &mut BuildContext<'_>,
        options: TcpOptions,
    ) -> Result<Arc<dyn Binding>, BuildError> {
        let routes = Routes::build(context.config(), |_| Ok(()), Condition::compile)?;
        let socket = SocketOptions::of(&options);
        let client = Arc::new(TcpClient {
            host: options.host,
            port: options.port.and_then(|ports| ports.iter().next()),
            routes,
            socket,
            connect_timeout: context
                .properties()
                .millis(CONNECT_TIMEOUT_PROPERTY, Duration::from_secs(10)),
        });
        context.publish::<Bytes>(client.clone());
        Ok(client)
    }

    async fn destination(
        &self,
        info: &StreamInfo,
    ) -> Result<(SocketAddr, Option<String>), StreamError> {
        let port = self
            .port
            .or(info.port)
            .or(info.destination.map(|d| d.port()));
        let host = self.host.clone().or_else(|| info.authority.clone());
        match (host, port) {
            (Some(host), Some(port)) => {
                if let Ok(ip) = host.parse::<IpAddr>() {
                    return Ok((SocketAddr::new(ip, port), Some(host)));
                }
                let resolved = tokio::net::lookup_host((host.as_str(), port))
                    .await
                    .map_err(|error| {
                        StreamError::Upstream(format!("cannot resolve `{host}`: {error}"))
                    })?
                    .next();
                match resolved {
                    Some(address) => Ok((address, Some(host))),
                    None => Err(StreamError::Upstream(format!(
                        "`{host}` resolves to no address"
                    ))),
                }
            }
            _ => match info.destination {
                Some(destination) => Ok((destination, None)),
                None => Err(StreamError::Upstream(
                    "no destination: set `options.host` and `options.port`".to_owned(),
                )),
            },
        }
    }
}

/// A connection to `address` with `options` applied.
async fn open(
    address: SocketAddr,
    options: SocketOptions,
    timeout: Duration,
) -> Result<TcpStream, StreamError> {
    let socket = tokio::time::timeout(timeout, TcpStream::connect(address))
        .await
        .map_err(|_| StreamError::Upstream(format!("connect to {address} timed out")))?
        .map_err(|error| StreamError::Upstream(format!("connect to {address}: {error}")))?;
    options.apply(&socket)?;
    Ok(socket)
}

impl Binding for TcpClient {}

impl BytesHandler for TcpClient {
    fn connect(&self, info: StreamInfo) -> BoxFuture<'_, Result<ByteStream, StreamError>> {
        Box::pin(async move {
            let (address, host) = self.destination(&info).await?;
            if !self.routes.is_empty()
                && self
                    .routes
                    .resolve(None, |condition| {
                        condition.matches(host.as_deref(), Some(address.ip()), Some(address.port()))
                    })
                    .is_none()
            {
                return Err(StreamError::NoRoute);
            }
            let socket = open(address, self.socket, self.connect_timeout).await?;
            let info = StreamInfo {
                source: socket.local_addr().ok(),
                destination: Some(address),
                ..info
            };
            Ok(ByteStream::new(socket, info))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_match_on_every_field() {
        let condition = Condition::compile(TcpCondition {
            authority: Some("*.example.com".into()),
            cidr: Some("127.0.0.0/8".into()),
            port: Some(Ports(vec![8080..=8081])),
        })
        .unwrap();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(condition.matches(Some("a.example.com"), Some(local), Some(8081)));
        assert!(!condition.matches(Some("a.example.org"), Some(local), Some(8081)));
        assert!(!condition.matches(
            Some("a.example.com"),
            Some("10.0.0.1".parse().unwrap()),
            Some(8081)
        ));
        assert!(!condition.matches(Some("a.example.com"), Some(local), Some(9000)));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(condition.matches(Some("a.example.com"), Some(mapped), Some(8080)));
    }

    const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

    /// Nagle's algorithm is off on both ends a gateway holds, unless a config turns it back
    /// on: checked on the sockets themselves (`getsockopt`).
    #[tokio::test]
    async fn connections_have_nodelay_unless_configured_otherwise() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        for (nodelay, expected) in [(None, true), (Some(false), false), (Some(true), true)] {
            let options = TcpOptions {
                nodelay,
                ..TcpOptions::default()
            };
            let opened = open(address, SocketOptions::of(&options), CONNECT_TIMEOUT)
                .await
                .unwrap();
            assert_eq!(opened.nodelay().unwrap(), expected, "client, {nodelay:?}");
            let (accepted, _) = listener.accept().await.unwrap();
            assert!(!accepted.nodelay().unwrap(), "the kernel's default");
            SocketOptions::of(&options).apply(&accepted).unwrap();
            assert_eq!(accepted.nodelay().unwrap(), expected, "server, {nodelay:?}");
        }
        let keepalive = TcpOptions {
            keepalive: Some(true),
            ..TcpOptions::default()
        };
        let opened = open(address, SocketOptions::of(&keepalive), CONNECT_TIMEOUT)
            .await
            .unwrap();
        assert!(socket2::SockRef::from(&opened).keepalive().unwrap());
        assert!(opened.nodelay().unwrap());
    }

    #[tokio::test]
    async fn retirement_cuts_the_connections_open_and_those_spawned_after_it() {
        let open = Arc::new(OpenConnections::default());
        let spawn = |open: &Arc<OpenConnections>| {
            let place = open.reserve();
            let id = place.id;
            let task = tokio::spawn(async move {
                let _place = place;
                std::future::pending::<()>().await;
            });
            open.spawned(id, task.abort_handle());
            task
        };
        let first = spawn(&open);
        let second = spawn(&open);
        // A connection that ended gives its place up.
        let place = open.reserve();
        let id = place.id;
        let ended = tokio::spawn(async move { drop(place) });
        ended.await.unwrap();
        open.spawned(id, tokio::spawn(async {}).abort_handle());
        assert_eq!(open.state().tasks.len(), 2);
        open.cut();
        assert!(first.await.unwrap_err().is_cancelled());
        assert!(second.await.unwrap_err().is_cancelled());
        assert!(open.state().tasks.is_empty());
        let late = spawn(&open);
        assert!(late.await.unwrap_err().is_cancelled());
        assert!(open.state().tasks.is_empty());
    }

    #[test]
    fn bad_cidr_is_a_load_error() {
        let error = Condition::compile(TcpCondition {
            authority: None,
            cidr: Some("127.0.0.1".into()),
            port: None,
        })
        .unwrap_err();
        assert!(error.contains("CIDR"));
    }
}
