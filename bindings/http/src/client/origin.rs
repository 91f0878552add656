//! HTTP/1.1 exchanges with an origin, run inside the request's own task.
//!
//! A general-purpose pooled client (hyper-util's) gives every origin connection its own task and
//! reaches it through a channel: each request crosses tasks twice and takes the pool's lock. A
//! proxy's request already has a task, and each worker has its own connections, so here the
//! request drives its connection itself: the request future polls the connection until the
//! response head arrives, then the response body polls it while the downstream side reads, and
//! at the end of the body the connection goes back to its worker's idle list. A connection that
//! is not in an exchange is not polled at all; one the origin closed meanwhile is found closed
//! when it is next taken, and the request, not yet sent, goes out on a new connection.
//!
//! Only HTTP/1.1 runs this way. Upgrades and HTTP/2 origins (which multiplex one connection
//! between requests, and so need a task of their own) stay with the pooled client.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Uri};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use zilla_engine::stream::StreamError;
use zilla_engine::workers;

use crate::client::{Connector, OriginIo, describe};
use crate::kind::{self, Body, BodyError, Request, Response};

/// Origins a worker keeps idle connections to, and remembers as HTTP/2, at most: without an
/// `:authority` override the origin comes from the client's `host`, so the lists are bounded.
const MAX_ORIGINS: usize = 64;

/// An origin, as a pool key: its scheme (https or not) and authority.
type OriginKey = (bool, Authority);

/// A connection between exchanges: the handle requests are sent through, and the connection
/// itself, polled only by the exchange using it.
struct Driven {
    sender: http1::SendRequest<Body>,
    connection: Pin<Box<http1::Connection<OriginIo, Body>>>,
}

struct Idle {
    driven: Driven,
    since: Instant,
}

#[derive(Default)]
struct WorkerPool {
    /// Idle connections by origin: a list, as an exit reaches one origin or very few.
    idle: Vec<(OriginKey, Vec<Idle>)>,
    /// Origins whose connections negotiated HTTP/2: their requests go to the pooled client.
    h2: Vec<OriginKey>,
}

/// What an exchange sent this way ended with.
pub enum Outcome {
    /// The origin's response.
    Response(Response),
    /// The origin speaks HTTP/2 (or the request is better sent by the pooled client): the
    /// request, untouched, for the pooled client.
    Elsewhere(Request),
}

/// The HTTP/1.1 origin connections of one http client exit: an idle list per worker and origin.
pub struct DirectOrigins {
    connector: Connector,
    workers: Box<[Mutex<WorkerPool>]>,
    idle_timeout: Duration,
    max_idle: usize,
}

impl DirectOrigins {
    /// Connections through `connector`; at most `max_idle` idle ones per worker and origin, each
    /// kept for `idle_timeout` at most.
    pub fn new(connector: Connector, idle_timeout: Duration, max_idle: usize) -> Self {
        DirectOrigins {
            connector,
            workers: (0..workers::count())
                .map(|_| Mutex::new(WorkerPool::default()))
                .collect(),
            idle_timeout,
            max_idle,
        }
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, WorkerPool> {
        // Each worker takes only its own entry: the lock is never contended.
        self.workers[workers::slot() % self.workers.len()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `request` (with an absolute URI, as the pooled client takes it) to its origin.
    pub async fn send(self: &Arc<Self>, request: Request) -> Result<Outcome, StreamError> {
        let uri = request.uri();
        let (Some(authority), Some(path)) = (uri.authority().cloned(), uri.path_and_query()) else {
            return Ok(Outcome::Elsewhere(request));
        };
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let key: OriginKey = (https, authority);
        if self.pool().h2.contains(&key) {
            return Ok(Outcome::Elsewhere(request));
        }
        // HTTP/1.1 sends the origin form and `host`.
        let path = path.clone();
        let (mut parts, body) = request.into_parts();
        parts.uri = Uri::from(path);
        let host = HeaderValue::from_str(key.1.as_str())
            .map_err(|_| StreamError::Protocol("the request's :authority is not valid".into()))?;
        parts.headers.insert(header::HOST, host);
        let mut request = Request::from_parts(parts, body);
        // Idle connections first; each one found closed hands the request back unsent.
        loop {
            let Some(driven) = self.take(&key).await else {
                break;
            };
            match self.exchange(driven, request, &key).await? {
                Sent::Answered(response) => return Ok(Outcome::Response(response)),
                Sent::Unsent(unsent) => request = unsent,
            }
        }
        let io = self.connector.connect(https, &key.1).await?;
        if io.is_h2() {
            {
                let mut pool = self.pool();
                if pool.h2.len() < MAX_ORIGINS {
                    pool.h2.push(key.clone());
                }
            }
            return Ok(Outcome::Elsewhere(absolute(request, &key)?));
        }
        let (sender, connection) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|error| StreamError::Upstream(describe(&error)))?;
        let driven = Driven {
            sender,
            connection: Box::pin(connection),
        };
        match self.exchange(driven, request, &key).await? {
            Sent::Answered(response) => Ok(Outcome::Response(response)),
            Sent::Unsent(_) => Err(StreamError::Upstream(
                "the origin closed a new connection before the request was sent".into(),
            )),
        }
    }

    /// An idle connection to `key` that is ready for a request, if this worker has one.
    async fn take(&self, key: &OriginKey) -> Option<Driven> {
        loop {
            let idle = {
                let mut pool = self.pool();
                let (_, list) = pool.idle.iter_mut().find(|(origin, _)| origin == key)?;
                list.pop()?
            };
            if idle.since.elapsed() >= self.idle_timeout {
                continue;
            }
            let mut driven = idle.driven;
            // The connection finishes the last exchange (and reads a close, if the origin sent
            // one) before it takes the next request.
            let ready = poll_fn(|cx| {
                if driven.connection.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(false);
                }
                driven.sender.poll_ready(cx).map(|ready| ready.is_ok())
            })
            .await;
            if ready {
                return Some(driven);
            }
        }
    }

    /// Sends `request` on `driven`, driving the connection until the response head arrives.
    async fn exchange(
        self: &Arc<Self>,
        mut driven: Driven,
        request: Request,
        key: &OriginKey,
    ) -> Result<Sent, StreamError> {
        let mut connection_ended = false;
        let answer = {
            let mut sending = pin!(driven.sender.try_send_request(request));
            poll_fn(|cx| {
                if !connection_ended && driven.connection.as_mut().poll(cx).is_ready() {
                    connection_ended = true;
                }
                sending.as_mut().poll(cx)
            })
            .await
        };
        match answer {
            Ok(response) => {
                let (parts, body) = response.into_parts();
                let body = DrivenBody {
                    body,
                    driven: (!connection_ended).then_some(driven),
                    origins: self.clone(),
                    key: key.clone(),
                };
                Ok(Sent::Answered(Response::from_parts(
                    parts,
                    kind::boxed(body),
                )))
            }
            Err(mut error) => match error.take_message() {
                Some(unsent) => Ok(Sent::Unsent(unsent)),
                None => Err(StreamError::Upstream(describe(error.error()))),
            },
        }
    }

    fn put_back(&self, key: OriginKey, driven: Driven) {
        let now = Instant::now();
        let mut pool = self.pool();
        let index = match pool.idle.iter().position(|(origin, _)| *origin == key) {
            Some(index) => index,
            None => {
                pool.idle.retain(|(_, list)| !list.is_empty());
                if pool.idle.len() >= MAX_ORIGINS {
                    // Full of other origins: this connection closes instead of waiting.
                    return;
                }
                pool.idle.push((key, Vec::new()));
                pool.idle.len() - 1
            }
        };
        let list = &mut pool.idle[index].1;
        list.retain(|idle| now.duration_since(idle.since) < self.idle_timeout);
        if list.len() < self.max_idle {
            list.push(Idle { driven, since: now });
        }
    }
}

enum Sent {
    Answered(Response),
    Unsent(Request),
}

/// Back to the absolute form the pooled client takes.
fn absolute(request: Request, key: &OriginKey) -> Result<Request, StreamError> {
    let (mut parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    parts.uri = Uri::builder()
        .scheme(if key.0 { "https" } else { "http" })
        .authority(key.1.clone())
        .path_and_query(path)
        .build()
        .map_err(|error| StreamError::Protocol(error.to_string()))?;
    parts.headers.remove(header::HOST);
    Ok(Request::from_parts(parts, body))
}

/// A response body that drives its connection while it is read, and gives the connection back
/// to its worker's idle list once the body has ended. Dropped before the end, it closes the
/// connection with it (the rest of the response would otherwise be read by the next request).
struct DrivenBody {
    body: Incoming,
    driven: Option<Driven>,
    origins: Arc<DirectOrigins>,
    key: OriginKey,
}

impl DrivenBody {
    /// Gives the connection back to its worker's idle list: the response has been read whole.
    fn release(&mut self) {
        if let Some(driven) = self.driven.take() {
            self.origins.put_back(self.key.clone(), driven);
        }
    }
}

impl Drop for DrivenBody {
    fn drop(&mut self) {
        // Dropped once all its bytes were read, the connection is still good for the next
        // request; dropped earlier, it goes with the body.
        if self.body.is_end_stream() {
            self.release();
        }
    }
}

impl http_body::Body for DrivenBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        // Twice at most: reading the body may ask the connection for more, which it reads at
        // once rather than after another wake-up.
        for _ in 0..2 {
            if let Some(driven) = &mut this.driven
                && driven.connection.as_mut().poll(cx).is_ready()
            {
                this.driven = None;
            }
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Pending => continue,
                Poll::Ready(None) => {
                    this.release();
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(frame)) => {
                    // The downstream side may stop polling once it has all the bytes a length
                    // announced: the connection goes back now.
                    if this.body.is_end_stream() {
                        this.release();
                    }
                    return Poll::Ready(Some(frame.map_err(Into::into)));
                }
            }
        }
        Poll::Pending
    }

    // `is_end_stream` stays false: the downstream side then polls an empty body to its end
    // too, which is when the connection goes back to the idle list.

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
