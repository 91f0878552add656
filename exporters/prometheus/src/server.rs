//! The HTTP endpoints. One listener per port for the whole process, shared by every exporter
//! that names the port: a reload builds the new exporter while the old one still runs, and
//! both must be able to hold the port. The listener closes when the last exporter using it is
//! dropped.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, ALLOW, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use zilla_engine::metrics::Metrics;

use crate::exposition::{Format, render};

/// Scrapes served at once per port; further connections wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;
/// A client that does not send its request head within this time is disconnected.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

static SERVERS: Mutex<BTreeMap<u16, Weak<Server>>> = Mutex::new(BTreeMap::new());
static NEXT_ROUTE: AtomicU64 = AtomicU64::new(1);

struct Route {
    id: u64,
    path: String,
    metrics: Metrics,
}

/// One listening port.
pub(crate) struct Server {
    routes: Mutex<Vec<Route>>,
    stopped: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stopped.cancel();
    }
}

/// An exporter's path on a port; dropping it removes the path, and the last one on a port
/// closes the port.
pub(crate) struct Registration {
    server: Arc<Server>,
    id: u64,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.id)
            .finish()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut routes = self
            .server
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        routes.retain(|route| route.id != self.id);
    }
}

/// Serves `metrics` at `path` on `port` (all interfaces), listening if no exporter does yet.
pub(crate) fn register(port: u16, path: &str, metrics: Metrics) -> std::io::Result<Registration> {
    let mut servers = SERVERS.lock().unwrap_or_else(PoisonError::into_inner);
    let server = match servers.get(&port).and_then(Weak::upgrade) {
        Some(server) => server,
        None => {
            let server = listen(port)?;
            servers.insert(port, Arc::downgrade(&server));
            server
        }
    };
    servers.retain(|_, server| server.strong_count() > 0);
    let id = NEXT_ROUTE.fetch_add(1, Ordering::Relaxed);
    server
        .routes
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Route {
            id,
            path: path.to_owned(),
            metrics,
        });
    Ok(Registration { server, id })
}

fn listen(port: u16) -> std::io::Result<Arc<Server>> {
    let runtime = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
    let listener = StdListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))?;
    listener.set_nonblocking(true)?;
    let server = Arc::new(Server {
        routes: Mutex::new(Vec::new()),
        stopped: CancellationToken::new(),
    });
    let weak = Arc::downgrade(&server);
    let stopped = server.stopped.clone();
    runtime.spawn(async move {
        match TcpListener::from_std(listener) {
            Ok(listener) => accept(listener, weak, stopped).await,
            Err(error) => tracing::warn!(port, %error, "prometheus endpoint cannot listen"),
        }
    });
    Ok(server)
}

async fn accept(listener: TcpListener, server: Weak<Server>, stopped: CancellationToken) {
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = connections.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            _ = stopped.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let server = server.clone();
        let stopped = stopped.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(respond(&server, &request)) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = stopped.cancelled() => {}
                _ = connection => {}
            }
            drop(permit);
        });
    }
}

fn respond(server: &Weak<Server>, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let metrics = server.upgrade().and_then(|server| {
        let routes = server.routes.lock().unwrap_or_else(PoisonError::into_inner);
        // The newest registration of a path wins: after a reload, the new exporter's.
        routes
            .iter()
            .rev()
            .find(|route| route.path == request.uri().path())
            .map(|route| route.metrics.clone())
    });
    let Some(metrics) = metrics else {
        return status(StatusCode::NOT_FOUND);
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = status(StatusCode::METHOD_NOT_ALLOWED);
        response
            .headers_mut()
            .insert(ALLOW, http::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let accept = request
        .headers()
        .get(ACCEPT)
        .and_then(|value| value.to_str().ok());
    let format = Format::negotiate(accept);
    let body = render(&metrics.snapshot(), format);
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static(format.content_type()),
    );
    response
}

fn status(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}
