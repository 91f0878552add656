//! HTTP/1.1 exchanges with an origin, run inside the request's own task.
//!
//! A general-purpose pooled client (hyper-util's) gives every origin connection its own task and
//! reaches it through a channel: each request crosses tasks twice and takes the pool's lock.
//! Even hyper's single-connection client reaches the connection's state through a channel and
//! a oneshot, which wake the request's task again for each hand-over. A proxy's request
//! already has a task, and each worker has its own connections, so here the request drives
//! its connection itself, with the framing of [`h1`](crate::h1): the request future writes
//! the head (and the body, as the downstream side gives it) and reads until the response head
//! is complete; the response body then reads the connection as the downstream side asks for
//! more (and writes what is left of the request body), and at the end of the body the
//! connection goes back to its worker's idle list. A connection that is not in an exchange is
//! not polled at all; one the origin closed meanwhile is found closed when it is next taken,
//! and the request goes out on a new connection.
//!
//! Only HTTP/1.1 runs this way. Upgrades and HTTP/2 origins (which multiplex one connection
//! between requests, and so need a task of their own) stay with the pooled client.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

use bytes::{Bytes, BytesMut};
use http::request;
use http::uri::Authority;
use http::{HeaderMap, Method, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use tokio::io::AsyncWrite;
use tokio_util::io::{poll_read_buf, poll_write_buf};
use zilla_engine::stream::{AsyncIo, StreamError};
use zilla_engine::time::recent;
use zilla_engine::workers;

use crate::client::Connector;
use crate::h1::{self, BodyFraming, ChunkedDecoder, Decoded, FramingError, RequestFraming};
use crate::kind::{self, Body, BodyError, Request, Response};

/// Origins a worker keeps idle connections to, and remembers as HTTP/2, at most: without an
/// `:authority` override the origin comes from the client's `host`, so the lists are bounded.
const MAX_ORIGINS: usize = 64;

/// Room made in a connection's read buffer before each read.
const READ_RESERVE: usize = 8 * 1024;

/// Request body bytes gathered before they are written.
const WRITE_BATCH: usize = 64 * 1024;

/// An origin, as a pool key: its scheme (https or not) and authority.
type OriginKey = (bool, Authority);

/// An HTTP/1.1 connection to an origin and its buffers.
struct Connection {
    io: Box<dyn AsyncIo>,
    /// Bytes read and not yet taken by a response.
    read: BytesMut,
    /// Bytes to write.
    write: BytesMut,
    /// Kept from one response head to the next (where fields lie, their names).
    scratch: h1::HeadScratch,
}

struct Idle {
    connection: Box<Connection>,
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

/// The request body still to be written, and how.
struct Upload {
    body: Body,
    framing: RequestFraming,
    /// Bytes a `content-length` framing still expects.
    remaining: u64,
    /// Whether any of the body has been taken: a request whose body has not is still whole.
    started: bool,
    done: bool,
}

/// Why an exchange failed.
enum Failure {
    /// Before the origin could have acted on the request (a reused connection found closed):
    /// the body, untouched, to send again on a new one.
    Unsent(Body),
    Failed(String),
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
        let Some(authority) = uri.authority().cloned() else {
            return Ok(Outcome::Elsewhere(request));
        };
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let key: OriginKey = (https, authority);
        if self.pool().h2.contains(&key) {
            return Ok(Outcome::Elsewhere(request));
        }
        let (mut parts, mut body) = request.into_parts();
        // Idle connections first; each one found closed hands the body back unsent.
        while let Some(connection) = self.take(&key) {
            match self
                .exchange(connection, true, &mut parts, body, &key)
                .await
            {
                Ok(response) => return Ok(Outcome::Response(response)),
                Err(Failure::Unsent(unsent)) => body = unsent,
                Err(Failure::Failed(error)) => return Err(StreamError::Upstream(error)),
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
            return Ok(Outcome::Elsewhere(Request::from_parts(parts, body)));
        }
        // Boxed once for its life: an exchange moves it from the idle list to the response
        // body and back, and a pointer moves more cheaply than its buffers' and maps' state.
        let connection = Box::new(Connection {
            io: io.into_inner(),
            read: BytesMut::new(),
            write: BytesMut::new(),
            scratch: h1::HeadScratch::default(),
        });
        match self
            .exchange(connection, false, &mut parts, body, &key)
            .await
        {
            Ok(response) => Ok(Outcome::Response(response)),
            Err(Failure::Unsent(_)) => Err(StreamError::Upstream(
                "the origin closed a new connection before the request was sent".into(),
            )),
            Err(Failure::Failed(error)) => Err(StreamError::Upstream(error)),
        }
    }

    /// An idle connection to `key` that the origin has not closed, if this worker has one.
    fn take(&self, key: &OriginKey) -> Option<Box<Connection>> {
        loop {
            let idle = {
                let mut pool = self.pool();
                let (_, list) = pool.idle.iter_mut().find(|(origin, _)| origin == key)?;
                list.pop()?
            };
            if recent().saturating_duration_since(idle.since) >= self.idle_timeout {
                continue;
            }
            let mut connection = idle.connection;
            // An idle connection has nothing to read: a close, an error or stray bytes all
            // mean it cannot carry a request. Polled without a waker, as nobody waits here.
            let mut context = Context::from_waker(Waker::noop());
            if connection.poll_read(&mut context).is_pending() {
                return Some(connection);
            }
        }
    }

    /// Sends the request on `connection`, driving it until the response head arrives.
    async fn exchange(
        self: &Arc<Self>,
        mut connection: Box<Connection>,
        reused: bool,
        parts: &mut request::Parts,
        body: Body,
        key: &OriginKey,
    ) -> Result<Response, Failure> {
        let target = parts.uri.path_and_query().map_or("/", |path| path.as_str());
        let exact = body.size_hint().exact();
        let framing = RequestFraming::choose(
            &parts.method,
            exact,
            exact
                .is_none()
                .then(|| h1::declared_length(&parts.headers))
                .flatten(),
        );
        h1::encode_request_head(
            &parts.method,
            target,
            key.1.as_str(),
            &parts.headers,
            framing,
            &mut connection.write,
        );
        let mut upload = Upload {
            done: body.is_end_stream() && framing != RequestFraming::Chunked,
            remaining: match framing {
                RequestFraming::Length(length) => length,
                _ => 0,
            },
            body,
            framing,
            started: false,
        };
        let forward = parts.extensions.get::<h1::TakesForwardedFields>().is_some();
        let mut received = false;
        // A failed write ends the upload but not the exchange: an origin that answers early
        // (a `413` before the body) may stop reading and close, and its answer is still to
        // be read.
        let mut write_failed: Option<ExchangeError> = None;
        let head = poll_fn(|cx| {
            if write_failed.is_none() {
                let written = if upload.done {
                    // The head may be written but not yet flushed.
                    if connection.write.is_empty() {
                        Poll::Ready(Ok(()))
                    } else {
                        connection.poll_flush_write(cx)
                    }
                } else {
                    connection.poll_upload(&mut upload, cx)
                };
                match written {
                    // The request body itself failed: nothing more can be sent or awaited.
                    Poll::Ready(Err(error @ ExchangeError::Body(_))) => {
                        return Poll::Ready(Err(error));
                    }
                    Poll::Ready(Err(error)) => {
                        connection.write.clear();
                        write_failed = Some(error);
                    }
                    _ => {}
                }
            }
            // Once the response head is complete the request's fields are done with (no retry
            // follows): the response's go in their map.
            connection.poll_head(
                &parts.method,
                forward,
                &mut parts.headers,
                &mut received,
                cx,
            )
        })
        .await;
        let head = match (head, write_failed.take()) {
            (Ok(head), None) => head,
            (Ok(head), Some(_)) => {
                // Answered, with the request not sent whole: the connection is not reused.
                return Ok(self.respond(connection, None, head, &mut parts.extensions, false, key));
            }
            (Err(error), write_failed) => {
                // Why the write failed says more than the close it led to.
                let error = write_failed.unwrap_or(error);
                // A reused connection the origin closed before answering anything: the
                // origin dropped it while idle, so the request can go again, if it can be
                // sent whole again and repeating it is harmless.
                let retry = reused
                    && !received
                    && !upload.started
                    && parts.method.is_idempotent()
                    && error.is_closed();
                return Err(if retry {
                    Failure::Unsent(upload.body)
                } else {
                    Failure::Failed(error.to_string())
                });
            }
        };
        let upload = (!upload.done).then_some(upload);
        let keep_alive = head.keep_alive;
        Ok(self.respond(
            connection,
            upload,
            head,
            &mut parts.extensions,
            keep_alive,
            key,
        ))
    }

    /// The response of `head`, its body read from `connection` (which also writes what is
    /// left of `upload`). The request's `extensions` map, emptied, becomes the response's: the
    /// server's own HTTP/1.1 loop hands it on to the next request on its connection, whose
    /// first extension then allocates no map.
    fn respond(
        self: &Arc<Self>,
        connection: Box<Connection>,
        upload: Option<Upload>,
        head: h1::ResponseHead,
        extensions: &mut http::Extensions,
        keep_alive: bool,
        key: &OriginKey,
    ) -> Response {
        let mut response = http::Response::new(());
        *response.status_mut() = head.status;
        *response.version_mut() = head.version;
        *response.headers_mut() = head.headers;
        *response.extensions_mut() = h1::emptied(std::mem::take(extensions));
        if let Some(reason) = head.reason
            && let Ok(reason) = hyper::ext::ReasonPhrase::try_from(reason)
        {
            response.extensions_mut().insert(reason);
        }
        if let Some(forwarded) = head.forwarded {
            response.extensions_mut().insert(forwarded);
        }
        let decoder = match head.framing {
            BodyFraming::Empty => Decoder::Empty,
            BodyFraming::Length(length) => Decoder::Length(length),
            BodyFraming::Chunked => Decoder::Chunked(ChunkedDecoder::default()),
            BodyFraming::UntilClose => Decoder::UntilClose,
        };
        let body = DrivenBody {
            connection: Some(connection),
            upload,
            decoder,
            keep_alive,
            origins: self.clone(),
            key: key.clone(),
        };
        let (parts, ()) = response.into_parts();
        Response::from_parts(parts, kind::boxed(body))
    }

    fn put_back(&self, key: OriginKey, connection: Box<Connection>) {
        let now = recent();
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
        drop_expired(list, now, self.idle_timeout, self.max_idle);
        if list.len() < self.max_idle {
            list.push(Idle {
                connection,
                since: now,
            });
        }
    }
}

/// Drops the connections of `list` idle for `timeout` or longer at `now`, before one more is
/// put back. A worker puts its connections back in the order they went idle, so the oldest is
/// first, and the list is looked through only when that one has expired (every exchange puts
/// its connection back), or when the list is full (`max_idle`), so that an expired connection
/// put back out of order (by a thread other than the worker, whose clock readings differ) does
/// not keep a live one out. [`DirectOrigins::take`] skips expired connections either way.
fn drop_expired(list: &mut Vec<Idle>, now: Instant, timeout: Duration, max_idle: usize) {
    let expired = |idle: &Idle| now.saturating_duration_since(idle.since) >= timeout;
    if list.len() >= max_idle || list.first().is_some_and(expired) {
        list.retain(|idle| !expired(idle));
    }
}

/// Why reading or writing a connection failed.
#[derive(Debug, thiserror::Error)]
enum ExchangeError {
    #[error("the origin closed the connection{0}")]
    Closed(&'static str),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Framing(#[from] FramingError),
    /// The request body failed, or did not match its length.
    #[error("{0}")]
    Body(String),
    #[error("the origin switched protocols unasked")]
    SwitchedUnasked,
}

impl ExchangeError {
    fn is_closed(&self) -> bool {
        match self {
            ExchangeError::Closed(_) => true,
            ExchangeError::Io(error) => matches!(
                error.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }
}

impl Connection {
    /// Reads more into the read buffer: `Ready(Ok(0))` at the origin's close.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < READ_RESERVE / 2 {
            self.read.reserve(READ_RESERVE);
        }
        poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read)
    }

    /// Writes the write buffer out, then flushes the transport.
    fn poll_flush_write(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ExchangeError>> {
        while !self.write.is_empty() {
            match poll_write_buf(Pin::new(&mut self.io), cx, &mut self.write) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(ExchangeError::Io(io::ErrorKind::WriteZero.into())));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error.into())),
                Poll::Pending => return Poll::Pending,
            }
        }
        Pin::new(&mut self.io).poll_flush(cx).map_err(Into::into)
    }

    /// Writes the request body as the downstream side gives it, until it has ended.
    fn poll_upload(
        &mut self,
        upload: &mut Upload,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), ExchangeError>> {
        loop {
            if !self.write.is_empty() {
                if self.write.len() < WRITE_BATCH && !upload.done {
                    // Small pieces are gathered while the body has more at hand.
                } else {
                    std::task::ready!(self.poll_flush_write(cx))?;
                }
            }
            if upload.done {
                if self.write.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            let frame = match Pin::new(&mut upload.body).poll_frame(cx) {
                Poll::Pending => {
                    if self.write.is_empty() {
                        return Poll::Pending;
                    }
                    // Nothing more at hand: what was gathered goes out now.
                    std::task::ready!(self.poll_flush_write(cx))?;
                    return Poll::Pending;
                }
                Poll::Ready(frame) => frame,
            };
            upload.started = true;
            match frame {
                None => {
                    match upload.framing {
                        RequestFraming::Chunked => h1::encode_last_chunk(None, &mut self.write),
                        RequestFraming::Length(_) if upload.remaining > 0 => {
                            return Poll::Ready(Err(ExchangeError::Body(
                                "the request body ended before its content-length".into(),
                            )));
                        }
                        _ => {}
                    }
                    upload.done = true;
                }
                Some(Err(error)) => {
                    return Poll::Ready(Err(ExchangeError::Body(error.to_string())));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        if data.is_empty() {
                            continue;
                        }
                        match upload.framing {
                            RequestFraming::Chunked => {
                                h1::encode_chunk_start(data.len(), &mut self.write);
                                self.write.extend_from_slice(&data);
                                self.write.extend_from_slice(b"\r\n");
                            }
                            _ => {
                                let length = data.len() as u64;
                                if length > upload.remaining {
                                    return Poll::Ready(Err(ExchangeError::Body(
                                        "the request body is longer than its content-length".into(),
                                    )));
                                }
                                upload.remaining -= length;
                                self.write.extend_from_slice(&data);
                            }
                        }
                    }
                    Err(frame) => {
                        // Trailers end the body; only the chunked coding can carry them.
                        if upload.framing == RequestFraming::Chunked {
                            h1::encode_last_chunk(frame.trailers_ref(), &mut self.write);
                            upload.done = true;
                        }
                    }
                },
            }
        }
    }

    /// Reads until a final response head is complete; interim (`1xx`) ones are skipped.
    fn poll_head(
        &mut self,
        method: &Method,
        forward: bool,
        spare: &mut HeaderMap,
        received: &mut bool,
        cx: &mut Context<'_>,
    ) -> Poll<Result<h1::ResponseHead, ExchangeError>> {
        loop {
            if !self.read.is_empty() {
                *received = true;
                if let Some(head) = h1::parse_response_head_into(
                    &mut self.read,
                    method,
                    forward,
                    spare,
                    &mut self.scratch,
                )? {
                    if head.status == StatusCode::SWITCHING_PROTOCOLS {
                        return Poll::Ready(Err(ExchangeError::SwitchedUnasked));
                    }
                    if head.status.is_informational() {
                        *spare = head.headers;
                        continue;
                    }
                    return Poll::Ready(Ok(head));
                }
            }
            match std::task::ready!(self.poll_read(cx)) {
                Ok(0) => {
                    return Poll::Ready(Err(ExchangeError::Closed(if *received {
                        " in the middle of the response head"
                    } else {
                        " before answering"
                    })));
                }
                Ok(_) => {}
                Err(error) => return Poll::Ready(Err(error.into())),
            }
        }
    }
}

/// How the rest of a response body is read.
enum Decoder {
    /// None at all, whatever the head says (a `HEAD` request's, a `204`'s or a `304`'s).
    Empty,
    /// This many bytes more.
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Until the origin closes.
    UntilClose,
    /// Read whole.
    Done,
}

/// A response body that reads its connection as the downstream side asks for more, and gives
/// the connection back to its worker's idle list once the body has ended. Dropped before the
/// end, it closes the connection with it (the rest of the response would otherwise be read by
/// the next request).
struct DrivenBody {
    connection: Option<Box<Connection>>,
    /// What is left of the request body to write, when the origin answered before all of it.
    upload: Option<Upload>,
    decoder: Decoder,
    /// Whether the response lets the connection carry another exchange.
    keep_alive: bool,
    origins: Arc<DirectOrigins>,
    key: OriginKey,
}

impl DrivenBody {
    fn ended(&self) -> bool {
        match &self.decoder {
            Decoder::Empty | Decoder::Done | Decoder::Length(0) => true,
            Decoder::Chunked(decoder) => decoder.is_done(),
            Decoder::Length(_) | Decoder::UntilClose => false,
        }
    }

    /// The body has been read whole: the connection goes back to its worker's idle list if
    /// both messages ended cleanly and nothing else came.
    fn release(&mut self) {
        self.decoder = Decoder::Done;
        if let Some(connection) = self.connection.take()
            && self.keep_alive
            && self.upload.is_none()
            && connection.read.is_empty()
            && connection.write.is_empty()
        {
            self.origins.put_back(self.key.clone(), connection);
        }
    }

    fn fail(
        &mut self,
        error: impl Into<BodyError>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.connection = None;
        self.decoder = Decoder::Done;
        Poll::Ready(Some(Err(error.into())))
    }
}

impl Drop for DrivenBody {
    fn drop(&mut self) {
        // Dropped once all its bytes were read, the connection is still good for the next
        // request; dropped earlier, it goes with the body.
        if self.ended() {
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
        if this.ended() {
            this.release();
            return Poll::Ready(None);
        }
        let Some(connection) = &mut this.connection else {
            return Poll::Ready(None);
        };
        // The origin answered before the whole request was written: write on as it is read.
        if let Some(upload) = &mut this.upload {
            match connection.poll_upload(upload, cx) {
                Poll::Ready(Ok(())) => this.upload = None,
                // The origin stopped reading, or the request body failed: its answer may
                // still be whole, but the connection is not reused, and the request body is
                // not polled again after its error.
                Poll::Ready(Err(_)) => {
                    this.keep_alive = false;
                    this.upload = None;
                    connection.write.clear();
                }
                Poll::Pending => {}
            }
        }
        loop {
            let decoded = match &mut this.decoder {
                Decoder::Length(remaining) => {
                    if connection.read.is_empty() {
                        Decoded::NeedMore
                    } else {
                        let take = usize::try_from(*remaining)
                            .unwrap_or(usize::MAX)
                            .min(connection.read.len());
                        *remaining -= take as u64;
                        Decoded::Data(connection.read.split_to(take).freeze())
                    }
                }
                Decoder::Chunked(decoder) => match decoder.decode(&mut connection.read) {
                    Ok(decoded) => decoded,
                    Err(error) => return this.fail(error),
                },
                Decoder::UntilClose => {
                    if connection.read.is_empty() {
                        Decoded::NeedMore
                    } else {
                        Decoded::Data(connection.read.split().freeze())
                    }
                }
                Decoder::Empty | Decoder::Done => Decoded::End,
            };
            match decoded {
                Decoded::Data(data) => {
                    // The downstream side may stop polling once it has all the bytes a length
                    // announced: the connection goes back now.
                    if this.ended() {
                        this.release();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Decoded::Trailers(trailers) => {
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Decoded::End => {
                    this.release();
                    return Poll::Ready(None);
                }
                Decoded::NeedMore => {}
            }
            match connection.poll_read(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    if matches!(this.decoder, Decoder::UntilClose) {
                        this.connection = None;
                        this.decoder = Decoder::Done;
                        return Poll::Ready(None);
                    }
                    return this.fail(ExchangeError::Closed(
                        " before the end of the response body",
                    ));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(error)) => return this.fail(error),
            }
        }
    }

    // `is_end_stream` stays false: the downstream side then polls an empty body to its end
    // too, which is when the connection goes back to the idle list.

    fn size_hint(&self) -> SizeHint {
        match self.decoder {
            Decoder::Length(remaining) => SizeHint::with_exact(remaining),
            Decoder::Done => SizeHint::with_exact(0),
            // Unknown rather than zero: the downstream side then keeps the head's
            // `content-length` of a `HEAD` or `304` answer, and sends no body for it anyway.
            Decoder::Empty | Decoder::Chunked(_) | Decoder::UntilClose => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle_since(since: Instant) -> Idle {
        let (io, _peer) = tokio::io::duplex(64);
        Idle {
            connection: Box::new(Connection {
                io: Box::new(io),
                read: BytesMut::new(),
                write: BytesMut::new(),
                scratch: h1::HeadScratch::default(),
            }),
            since,
        }
    }

    #[tokio::test]
    async fn idle_connections_past_the_timeout_are_dropped_oldest_first() {
        let timeout = Duration::from_secs(10);
        let start = Instant::now();
        let at = |seconds| start + Duration::from_secs(seconds);
        let mut list = vec![idle_since(at(0)), idle_since(at(4)), idle_since(at(8))];
        // Nothing expired: all kept.
        drop_expired(&mut list, at(9), timeout, 8);
        assert_eq!(list.len(), 3);
        // The two oldest expired.
        drop_expired(&mut list, at(15), timeout, 8);
        let left: Vec<Instant> = list.iter().map(|idle| idle.since).collect();
        assert_eq!(left, [at(8)]);
        drop_expired(&mut list, at(18), timeout, 8);
        assert!(list.is_empty());
    }

    #[tokio::test]
    async fn a_full_idle_list_drops_an_expired_connection_out_of_order() {
        let timeout = Duration::from_secs(10);
        let start = Instant::now();
        let at = |seconds| start + Duration::from_secs(seconds);
        // The oldest is not first (put back by another thread): seen only when the list is
        // full.
        let mut list = vec![idle_since(at(8)), idle_since(at(0))];
        drop_expired(&mut list, at(12), timeout, 4);
        assert_eq!(list.len(), 2);
        drop_expired(&mut list, at(12), timeout, 2);
        let left: Vec<Instant> = list.iter().map(|idle| idle.since).collect();
        assert_eq!(left, [at(8)]);
    }
}
