//! HTTP/2 exchanges with an origin, sent from the request's own task.
//!
//! A general-purpose pooled client (hyper-util's over hyper's HTTP/2 client) reaches each
//! connection through a channel and a task of its own, takes the pool's lock per request, and
//! spawns one more task per request to copy a streaming request body (every gRPC call has
//! one). Here each worker keeps one HTTP/2 connection per origin, driven by a task on that
//! worker, and the request's task opens the stream itself with the `h2` crate: it sends the
//! head, copies the request body while it waits for the response head, and then the response
//! body goes on copying whatever the request still sends while the downstream side reads it.
//! Nothing else is spawned per request and no lock is shared between workers.
//!
//! A connection the origin closed (or sent `GOAWAY` on) is found when the next request asks it
//! for a stream; the request, not yet sent, goes out on a new connection. A request without a
//! body that crossed the origin's `GOAWAY` on the wire (or was reset with REFUSED_STREAM) was
//! not processed, and goes out once more on a new connection; one with a body is answered
//! `503`, as its body has been read. A connection with no exchange for the client's idle
//! timeout is closed.
//!
//! Only HTTP/2-only clients (`versions: [h2]`) run this way: a client that may speak either
//! version learns which one from each connection and stays with the pooled client.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use http::uri::{Authority, Scheme};
use http::{HeaderMap, Version};
use http_body::{Body as _, Frame, SizeHint};
use zilla_engine::stream::StreamError;
use zilla_engine::workers;

use crate::client::{Connector, describe};
use crate::kind::{self, Body, BodyError, Request, Response};

/// Origins a worker keeps a connection to, at most: without an `:authority` override the
/// origin comes from the client's `host`, so the list is bounded. Past it, the least recently
/// opened connection is let go (its exchanges in progress finish).
const MAX_ORIGINS: usize = 64;

/// Flow-control windows offered to the origin: hyper's client defaults, so what an origin may
/// send ahead of the reader is what it was with the pooled client.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// The shortest period between two idle checks of a connection.
const MIN_IDLE_CHECK: Duration = Duration::from_millis(100);

/// An origin: whether it is reached over TLS, and its authority.
type OriginKey = (bool, Authority);

/// One connection's handle, shared by the requests on it.
#[derive(Clone)]
struct Handle {
    sender: SendRequest<Bytes>,
    /// Exchanges in progress on the connection: it is idle at 0.
    in_flight: Arc<AtomicUsize>,
    /// Tells connections apart when one is let go.
    id: u64,
}

#[derive(Default)]
struct WorkerConnections {
    open: Vec<(OriginKey, Handle)>,
    opened: u64,
}

/// Settings of the connections, from the client's limits.
#[derive(Debug, Clone, Copy)]
pub struct H2Settings {
    pub max_header_list_size: u32,
    pub idle_timeout: Duration,
}

/// The HTTP/2 origin connections of one http client exit: one per worker and origin.
pub struct H2Origins {
    connector: Connector,
    workers: Box<[Mutex<WorkerConnections>]>,
    settings: H2Settings,
}

impl H2Origins {
    pub fn new(connector: Connector, settings: H2Settings) -> Self {
        H2Origins {
            connector,
            workers: (0..workers::count())
                .map(|_| Mutex::new(WorkerConnections::default()))
                .collect(),
            settings,
        }
    }

    fn worker(&self, slot: usize) -> std::sync::MutexGuard<'_, WorkerConnections> {
        // Each worker takes only its own entry (and its connections' tasks, on the same
        // worker): the lock is never contended.
        self.workers[slot % self.workers.len()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `request` (with an absolute URI) to its origin over HTTP/2.
    pub async fn send(self: &Arc<Self>, request: Request) -> Result<Response, StreamError> {
        let uri = request.uri();
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| StreamError::Protocol("the request names no :authority".into()))?;
        let key: OriginKey = (uri.scheme() == Some(&Scheme::HTTPS), authority);
        let (mut head, body) = request.into_parts();
        head.version = Version::HTTP_2;
        let end_of_stream = body.is_end_stream();
        let head = http::Request::from_parts(head, ());
        // A connection the origin has closed is found not ready before anything is sent: the
        // request then goes out on a new connection. So does a request without a body that the
        // origin refused unprocessed: its stream was past the last one a `GOAWAY` let through
        // (the GOAWAY crossed the request on the wire), or it was reset with REFUSED_STREAM.
        let mut fresh = false;
        let mut body = Some(body);
        // Kept for a second attempt only where one can happen (no body, reused connection).
        let mut head = Some(head);
        let (response, exchange) = loop {
            let (in_flight, mut sender, id) = loop {
                let Handle {
                    sender,
                    in_flight,
                    id,
                } = match self.current(&key) {
                    Some(handle) if !fresh => handle,
                    _ => {
                        fresh = true;
                        self.connect(&key).await?
                    }
                };
                match sender.ready().await {
                    Ok(sender) => break (in_flight, sender, id),
                    Err(error) => {
                        self.forget(&key, id);
                        if fresh {
                            return Err(StreamError::Upstream(describe(&error)));
                        }
                        fresh = true;
                    }
                }
            };
            // A refusal here is of this request (e.g. a header HTTP/2 does not allow), not of
            // the connection: a dead connection is found by the next request's `ready`.
            let this_head = if end_of_stream && !fresh {
                head.clone()
            } else {
                head.take()
            }
            .ok_or_else(|| StreamError::Upstream("the request was already sent".into()))?;
            let (response, stream) = sender
                .send_request(this_head, end_of_stream)
                .map_err(|error| StreamError::Upstream(describe(&error)))?;
            let mut exchange = Exchange {
                pipe: (!end_of_stream)
                    .then(|| body.take())
                    .flatten()
                    .map(|body| BodyPipe {
                        body,
                        stream,
                        pending: None,
                    }),
                _in_flight: InFlight::new(in_flight),
            };
            let mut response = response;
            let answered = poll_fn(|cx| {
                exchange.poll_pipe(cx);
                Pin::new(&mut response).poll(cx)
            })
            .await;
            match answered {
                Ok(response) => break (response, exchange),
                Err(error) if end_of_stream && !fresh && refused_unprocessed(&error) => {
                    tracing::debug!(error = %describe(&error), "request refused unprocessed; sending it on a new connection");
                    self.forget(&key, id);
                    fresh = true;
                }
                Err(error) => return Err(StreamError::Upstream(describe(&error))),
            }
        };
        let (parts, recv) = response.into_parts();
        let body = ResponseBody {
            recv,
            trailers_read: false,
            exchange,
        };
        Ok(Response::from_parts(parts, kind::boxed(body)))
    }

    /// This worker's connection to `key`, if it has one that is still open.
    fn current(&self, key: &OriginKey) -> Option<Handle> {
        let worker = self.worker(workers::slot());
        worker
            .open
            .iter()
            .find(|(origin, _)| origin == key)
            .map(|(_, handle)| handle.clone())
    }

    /// Lets connection `id` to `key` go (it failed or was idle too long).
    fn forget(&self, key: &OriginKey, id: u64) {
        self.forget_on(workers::slot(), key, id);
    }

    fn forget_on(&self, slot: usize, key: &OriginKey, id: u64) {
        self.worker(slot)
            .open
            .retain(|(origin, handle)| !(origin == key && handle.id == id));
    }

    /// Opens a connection to `key` and makes it this worker's connection there. Its task runs
    /// on this worker.
    async fn connect(self: &Arc<Self>, key: &OriginKey) -> Result<Handle, StreamError> {
        let io = self.connector.connect(key.0, &key.1).await?;
        let (sender, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_header_list_size(self.settings.max_header_list_size)
            .handshake::<_, Bytes>(io.into_inner())
            .await
            .map_err(|error| StreamError::Upstream(describe(&error)))?;
        let slot = workers::slot();
        let handle = {
            let mut worker = self.worker(slot);
            worker.opened += 1;
            let handle = Handle {
                sender,
                in_flight: Arc::new(AtomicUsize::new(0)),
                id: worker.opened,
            };
            worker.open.retain(|(origin, _)| origin != key);
            if worker.open.len() >= MAX_ORIGINS {
                worker.open.remove(0);
            }
            worker.open.push((key.clone(), handle.clone()));
            handle
        };
        let watch = IdleWatch {
            origins: Arc::downgrade(self),
            slot,
            key: key.clone(),
            id: handle.id,
            in_flight: handle.in_flight.clone(),
            timeout: self.settings.idle_timeout,
        };
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = &mut connection => ended,
                () = watch.idle() => {
                    // Out of the worker's list: no new exchange takes it, and the connection
                    // ends (GOAWAY) once a request that took its handle just before is done.
                    connection.await
                }
            };
            if let Err(error) = ended {
                tracing::debug!(error = %describe(&error), "HTTP/2 origin connection ended");
            }
            watch.forget();
        });
        Ok(handle)
    }
}

/// Whether the origin refused a stream without processing it, so it may be sent again: a
/// graceful `GOAWAY` that came before the stream was let through (h2 fails only the streams
/// past the GOAWAY's last stream id this way), or a `RST_STREAM` with REFUSED_STREAM.
fn refused_unprocessed(error: &h2::Error) -> bool {
    error.is_remote()
        && matches!(
            (error.is_go_away(), error.reason()),
            (true, Some(h2::Reason::NO_ERROR)) | (false, Some(h2::Reason::REFUSED_STREAM))
        )
}

/// Closes an idle connection: once it has had no exchange for the idle timeout, it leaves its
/// worker's list, and the connection ends when the last request holding its handle is done.
struct IdleWatch {
    origins: Weak<H2Origins>,
    slot: usize,
    key: OriginKey,
    id: u64,
    in_flight: Arc<AtomicUsize>,
    timeout: Duration,
}

impl IdleWatch {
    async fn idle(&self) {
        let mut idle_checks = 0;
        // A zero timeout would make this loop spin: check at most ten times a second.
        let period = self.timeout.max(MIN_IDLE_CHECK);
        loop {
            tokio::time::sleep(period).await;
            if self.in_flight.load(Ordering::Relaxed) == 0 {
                idle_checks += 1;
            } else {
                idle_checks = 0;
            }
            // Idle at two checks in a row: idle for at least one whole timeout.
            if idle_checks >= 2 {
                self.forget();
                return;
            }
        }
    }

    fn forget(&self) {
        if let Some(origins) = self.origins.upgrade() {
            origins.forget_on(self.slot, &self.key, self.id);
        }
    }
}

/// Counts an exchange in progress on its connection while it lives.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(count)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What an exchange holds besides the response: the rest of the request body to send.
struct Exchange {
    pipe: Option<BodyPipe>,
    _in_flight: InFlight,
}

impl Exchange {
    /// Copies what the request body has ready; the pipe goes once the body has been sent
    /// whole, or failed (the stream is then reset, which the response side sees).
    fn poll_pipe(&mut self, cx: &mut Context<'_>) {
        if let Some(pipe) = &mut self.pipe
            && let Poll::Ready(result) = pipe.poll(cx)
        {
            if let Err(error) = result {
                tracing::debug!(%error, "request body to the HTTP/2 origin ended early");
            }
            self.pipe = None;
        }
    }
}

/// The request body being copied into its HTTP/2 stream, within the flow-control window the
/// origin grants.
struct BodyPipe {
    body: Body,
    stream: SendStream<Bytes>,
    /// Data taken from the body and not yet sent whole.
    pending: Option<Bytes>,
}

impl BodyPipe {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BodyError>> {
        loop {
            if let Some(data) = &mut self.pending {
                self.stream.reserve_capacity(data.len());
                match self.stream.poll_capacity(cx) {
                    Poll::Ready(Some(Ok(0))) => continue,
                    Poll::Ready(Some(Ok(granted))) => {
                        let chunk = data.split_to(granted.min(data.len()));
                        let last = data.is_empty();
                        if last {
                            self.pending = None;
                        }
                        let end = last && self.body.is_end_stream();
                        self.stream.send_data(chunk, end)?;
                        if end {
                            return Poll::Ready(Ok(()));
                        }
                        continue;
                    }
                    Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(error.into())),
                    Poll::Ready(None) => {
                        return Poll::Ready(Err("the origin closed the request stream".into()));
                    }
                    Poll::Pending => return self.poll_reset(cx),
                }
            }
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {
                        if self.body.is_end_stream() {
                            self.stream.send_data(Bytes::new(), true)?;
                            return Poll::Ready(Ok(()));
                        }
                    }
                    Ok(data) => self.pending = Some(data),
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            self.stream.send_trailers(trailers)?;
                            return Poll::Ready(Ok(()));
                        }
                    }
                },
                Poll::Ready(None) => {
                    self.stream.send_data(Bytes::new(), true)?;
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Some(Err(error))) => {
                    self.stream.send_reset(h2::Reason::CANCEL);
                    return Poll::Ready(Err(error));
                }
                Poll::Pending => return self.poll_reset(cx),
            }
        }
    }

    /// Ends the copy when the origin reset the stream (it answered without reading the rest).
    fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BodyError>> {
        match self.stream.poll_reset(cx) {
            Poll::Ready(Ok(reason)) => {
                Poll::Ready(Err(format!("the origin reset the stream: {reason}").into()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error.into())),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The origin's response body; reading it also goes on copying the request body, for calls
/// whose request streams on after the response has begun.
struct ResponseBody {
    recv: RecvStream,
    trailers_read: bool,
    exchange: Exchange,
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        this.exchange.poll_pipe(cx);
        if this.trailers_read {
            return Poll::Ready(None);
        }
        if !this.recv.is_end_stream() {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Read: the origin may send as much again.
                    if let Err(error) = this.recv.flow_control().release_capacity(data.len()) {
                        return Poll::Ready(Some(Err(error.into())));
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(error)) => return Poll::Ready(Some(Err(error.into()))),
                None => {}
            }
        }
        let trailers: Option<HeaderMap> = match ready!(this.recv.poll_trailers(cx)) {
            Ok(trailers) => trailers,
            Err(error) => return Poll::Ready(Some(Err(error.into()))),
        };
        this.trailers_read = true;
        // The response is whole: a request body still open has nobody left to read it.
        this.exchange.pipe = None;
        Poll::Ready(trailers.map(|trailers| Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.trailers_read
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
