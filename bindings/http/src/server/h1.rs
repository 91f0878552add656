//! The server's HTTP/1.1 connections, read and written by the connection's own task.
//!
//! Most requests a gateway serves carry no body: `GET`, `HEAD`, `DELETE`, `OPTIONS`, an SSE
//! subscription. For those the whole exchange is simple: read the head, answer it, write the
//! response. Here the connection's task does exactly that, with the head parsed by `httparse`
//! into values that share the read buffer and the response written from one buffer reused for
//! every exchange. hyper's server would hand each request from its connection to a service
//! future, its body through a channel, and the response through its dispatcher's state
//! machine and its own buffers.
//!
//! The first request that is anything else (one with a body, `expect`, an upgrade, HTTP/1.0, a
//! malformed or oversized head) is handed to hyper's HTTP/1.1 server together with every byte
//! read after the last answered request, and hyper serves the rest of the connection. So
//! request bodies, `100 Continue`, upgrades and the protocol's error answers (400, 431) are
//! hyper's, as before, and what is here never has to decide them.
//!
//! The behaviour clients see is hyper's (see [`encode_response_head`]): the same framing
//! rules, `date`, `connection: close` when the connection will close, the header read
//! timeout from the moment a head is awaited, and a connection closed when the client hangs
//! up while its exchange is in progress. One difference: a response whose fields an HTTP/1.1
//! origin sent and nothing on the way read ([`ForwardedFields`]) keeps the origin's lines as
//! they came, names in the origin's case, where hyper writes every name lower-cased.

use std::cell::RefCell;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt;
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use zilla_engine::guard::ConnectionSessions;
use zilla_engine::limits::deadline_after;
use zilla_engine::signal::OnWake;
use zilla_engine::stream::{AsyncIo, StreamInfo};
use zilla_engine::time::recent;

use super::{Lifecycle, Shared};
use crate::body::{SeriesCache, exchange_body_unboxed};
use crate::h1::{
    BodySize, ForwardedFields, HeadScratch, RequestHead, ResponseFraming,
    encode_announced_trailers, encode_chunk_start, encode_response_head, parse_request_head,
};
use crate::kind;

/// How a connection served here ended.
pub(super) enum Served {
    /// It is done with.
    Closed,
    /// A request only a full server takes starts with these bytes; what follows them is
    /// still on the connection.
    HandOver(Bytes),
}

/// How much is read from the connection at a time once a head is under way.
const READ_SIZE: usize = 8 * 1024;

/// The read buffer a connection keeps while it waits for its next request with nothing
/// buffered: most heads fit, and thousands of idle keep-alive connections each holding
/// [`READ_SIZE`] would add up (nginx's `client_header_buffer_size` is the same idea). A head
/// that does not fit grows the buffer on the next pass.
const IDLE_READ_SIZE: usize = 2 * 1024;

/// Response body data up to this size is copied beside its framing and written with it;
/// larger data is written from its own buffer.
const COPY_MAX: usize = 16 * 1024;

/// The last data of a body with a length, from this size up, is written from its own buffer
/// together with what is buffered (one vectored write) rather than copied after it: nothing
/// follows it to coalesce with, and a copy writes every cache line of it once more.
const LAST_COPY_MAX: usize = 512;

/// The most response bytes buffered before they are written out.
const WRITE_MAX: usize = 64 * 1024;

/// The largest write buffer a connection keeps between responses: thousands of idle
/// keep-alive connections each holding the largest response they once sent would add up.
const WRITE_KEPT: usize = 8 * 1024;

/// Why an exchange stopped before its response was complete.
enum Cut {
    /// The binding was retired, or the client hung up: the connection closes now.
    Closed,
    /// The connection failed.
    Failed(io::Error),
}

impl From<io::Error> for Cut {
    fn from(error: io::Error) -> Self {
        Cut::Failed(error)
    }
}

/// One HTTP/1.1 connection served here.
pub(super) struct Connection<'a> {
    pub shared: &'a Arc<Shared>,
    pub io: &'a mut Box<dyn AsyncIo>,
    pub info: &'a Arc<StreamInfo>,
    pub sessions: &'a ConnectionSessions,
    pub series: &'a SeriesCache,
}

/// The signals that end or wind down a connection, polled only once they fire.
struct Signals {
    retired: OnWake<tokio_util::sync::WaitForCancellationFutureOwned>,
    shutdown: OnWake<tokio_util::sync::WaitForCancellationFutureOwned>,
    /// A shutdown asked the connection to close once its exchange in progress has ended.
    stopping: bool,
}

impl Connection<'_> {
    /// Serves requests until the connection closes or a request needs hyper's server.
    pub(super) async fn serve(self, prefix: Bytes, lifecycle: &Lifecycle) -> io::Result<Served> {
        let Connection {
            shared,
            io,
            info,
            sessions,
            series,
        } = self;
        let mut read = prefix
            .try_into_mut()
            .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
        let mut write = BytesMut::new();
        let mut scratch = HeadScratch::default();
        let mut signals = Signals {
            retired: OnWake::new(lifecycle.retired.clone().cancelled_owned()),
            shutdown: OnWake::new(lifecycle.shutdown.clone().cancelled_owned()),
            stopping: false,
        };
        let max_head = shared.limits.max_header_list_size as usize;
        let header_timeout = shared.limits.header_read_timeout;
        // One timer for the connection's life, moved only when it fires before the deadline
        // of the head then awaited: awaiting a head costs no timer update.
        let timer = tokio::time::sleep(header_timeout);
        tokio::pin!(timer);
        loop {
            // The head.
            let mut deadline = None;
            let (request, keep_alive, wants_trailers) = loop {
                match parse_request_head(&mut read, max_head, &mut scratch) {
                    RequestHead::Simple {
                        request,
                        keep_alive,
                        // hyper's rule: a trailer section carries fields only for a client
                        // that said it takes them.
                        accepts_trailers,
                    } => break (request, keep_alive, accepts_trailers),
                    RequestHead::Other(taken) => {
                        return Ok(Served::HandOver(join(taken, read)));
                    }
                    RequestHead::Partial => {}
                }
                if signals.stopping && read.is_empty() {
                    return Ok(Served::Closed);
                }
                let due = *deadline.get_or_insert_with(|| deadline_after(recent(), header_timeout));
                if read.is_empty() {
                    // A buffer that grew for an earlier head is let go; a small one is
                    // reclaimed whole once the last request sharing it has been dropped.
                    if read.capacity() > IDLE_READ_SIZE {
                        read = BytesMut::new();
                    }
                    read.reserve(IDLE_READ_SIZE);
                } else {
                    read.reserve(READ_SIZE);
                }
                tokio::select! {
                    biased;
                    read = io.read_buf(&mut read) => {
                        if read? == 0 {
                            return Ok(Served::Closed);
                        }
                    }
                    _ = &mut signals.retired => return Ok(Served::Closed),
                    _ = &mut signals.shutdown, if !signals.stopping => signals.stopping = true,
                    () = &mut timer, if !header_timeout.is_zero() => {
                        if Instant::now() >= due {
                            tracing::debug!(binding = %shared.qname, "no request head in time: closing");
                            return Ok(Served::Closed);
                        }
                        timer.as_mut().reset(due);
                    }
                }
            };
            // The exchange.
            let method = request.method().clone();
            let held = info.idle.hold();
            // This loop writes forwarded fields (see below).
            let exchange = shared.exchange(
                request.map(|()| kind::empty()),
                info,
                sessions,
                series,
                true,
            );
            tokio::pin!(exchange);
            // Room to notice the client hanging up. What is left after the head usually has
            // it; reserving more now, while the request still shares the buffer, would mean a
            // new one.
            if read.capacity() == read.len() {
                read.reserve(1024);
            }
            let (response, record, expiry) = loop {
                tokio::select! {
                    biased;
                    response = &mut exchange => break response,
                    _ = &mut signals.retired => return Ok(Served::Closed),
                    _ = &mut signals.shutdown, if !signals.stopping => signals.stopping = true,
                    // Watches for the client hanging up; a pipelined request waits in `read`.
                    read = io.read_buf(&mut read), if read.is_empty() => {
                        if read? == 0 {
                            return Ok(Served::Closed);
                        }
                    }
                }
            };
            // The response.
            let keep_alive = keep_alive && !signals.stopping;
            let (mut parts, mut body) = response.into_parts();
            if parts.status.is_informational() {
                // Only a final response may end an exchange; hyper answers 500 for one that
                // is not, and so does this.
                tracing::debug!(status = %parts.status, "an interim status as the final response: 500");
                parts = kind::status_response(http::StatusCode::INTERNAL_SERVER_ERROR)
                    .into_parts()
                    .0;
                body = kind::empty();
            }
            // Counted for the exchange's metrics, ended when its guard session expires, and
            // holding the connection open, in place rather than in a box of its own.
            let mut body = exchange_body_unboxed(body, record, expiry, held);
            let size = if body.is_end_stream() {
                BodySize::Empty
            } else {
                body.size_hint()
                    .exact()
                    .map_or(BodySize::Unknown, BodySize::Known)
            };
            let reason = parts
                .extensions
                .get::<hyper::ext::ReasonPhrase>()
                .map(hyper::ext::ReasonPhrase::as_bytes);
            let forwarded = parts.extensions.get::<ForwardedFields>();
            let head = with_date(|date| {
                encode_response_head(
                    &parts, reason, forwarded, &method, size, keep_alive, date, &mut write,
                )
            });
            // The response's fields and extensions are done with: the next request's go in
            // their maps.
            scratch.recycle(parts.headers);
            scratch.recycle_extensions(parts.extensions);
            let mut out = Output {
                io: &mut *io,
                write: &mut write,
                signals: &mut signals,
            };
            let sent = match head.framing {
                ResponseFraming::None => Ok(true),
                framing => {
                    out.send_body(&mut read, &mut body, framing, wants_trailers)
                        .await
                }
            };
            drop(body);
            let complete = match sent {
                Ok(complete) => complete,
                // Retired, or the client hung up, or the body failed: nothing more is sent.
                Err(Cut::Closed) => return Ok(Served::Closed),
                Err(Cut::Failed(error)) => return Err(error),
            };
            let flushed = out.flush().await;
            // A large response leaves no large buffer behind on an idle connection.
            if out.write.capacity() > WRITE_KEPT {
                *out.write = BytesMut::new();
            }
            match flushed {
                Ok(()) => {}
                Err(Cut::Closed) => return Ok(Served::Closed),
                Err(Cut::Failed(error)) => return Err(error),
            }
            if head.close || !complete || out.signals.stopping {
                out.shutdown().await;
                return Ok(Served::Closed);
            }
        }
    }
}

/// Where a response goes: the connection, the bytes buffered for it, and the signals that cut
/// a write that waits on a client that stopped reading.
struct Output<'a> {
    io: &'a mut Box<dyn AsyncIo>,
    write: &'a mut BytesMut,
    signals: &'a mut Signals,
}

impl Output<'_> {
    /// Writes `body` in `framing`, after the head already in `write`; `false` when the body
    /// ended short of its length or past it, which leaves the connection unusable. The
    /// trailer section carries fields only for a client that asked for them (`te: trailers`).
    async fn send_body<B>(
        &mut self,
        read: &mut BytesMut,
        body: &mut B,
        framing: ResponseFraming,
        wants_trailers: bool,
    ) -> Result<bool, Cut>
    where
        B: http_body::Body<Data = Bytes, Error = kind::BodyError> + Unpin,
    {
        let mut sent: u64 = 0;
        let mut trailers = None;
        loop {
            if let ResponseFraming::Length(length) = framing
                && sent == length
            {
                // All the length announced is out: the message ends here, as hyper ends it,
                // whether or not the body would say so.
                return Ok(true);
            }
            // A frame at hand goes into the buffer (up to a bound); waiting for one, what is
            // buffered goes out.
            let ready = if self.write.len() < WRITE_MAX {
                body.frame().now_or_never()
            } else {
                None
            };
            let frame = match ready {
                Some(frame) => frame,
                None => {
                    self.flush().await?;
                    loop {
                        let signals = &mut *self.signals;
                        tokio::select! {
                            biased;
                            frame = body.frame() => break frame,
                            _ = &mut signals.retired => return Err(Cut::Closed),
                            _ = &mut signals.shutdown, if !signals.stopping => signals.stopping = true,
                            read = self.io.read_buf(read), if read.is_empty() => {
                                if read? == 0 {
                                    return Err(Cut::Closed);
                                }
                            }
                        }
                    }
                }
            };
            let frame = match frame {
                None => break,
                Some(Ok(frame)) => frame,
                Some(Err(error)) => {
                    tracing::debug!(%error, "response body failed: closing");
                    return Err(Cut::Closed);
                }
            };
            let mut data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    trailers = frame.into_trailers().ok();
                    continue;
                }
            };
            if data.is_empty() {
                continue;
            }
            if let ResponseFraming::Length(length) = framing {
                let room = length - sent;
                if data.len() as u64 > room {
                    // What fits is sent; the client sees the rest missing and the close.
                    tracing::debug!(length, "response body longer than its length: closing");
                    data.truncate(usize::try_from(room).unwrap_or(usize::MAX));
                    self.write.extend_from_slice(&data);
                    self.flush().await?;
                    return Ok(false);
                }
            }
            sent += data.len() as u64;
            if let ResponseFraming::Chunked(_) = framing {
                encode_chunk_start(data.len(), self.write);
            }
            let last = matches!(framing, ResponseFraming::Length(length) if sent == length);
            if data.len() <= COPY_MAX && !(last && data.len() > LAST_COPY_MAX) {
                self.write.extend_from_slice(&data);
            } else {
                let signals = &mut *self.signals;
                let mut both = (&mut *self.write).chain(&mut data);
                tokio::select! {
                    biased;
                    _ = &mut signals.retired => return Err(Cut::Closed),
                    written = self.io.write_all_buf(&mut both) => written?,
                }
                self.write.clear();
            }
            if let ResponseFraming::Chunked(_) = framing {
                self.write.extend_from_slice(b"\r\n");
            }
        }
        Ok(match framing {
            ResponseFraming::Chunked(announced) => {
                let trailers = trailers.as_ref().filter(|_| wants_trailers);
                encode_announced_trailers(trailers, announced.as_deref(), self.write);
                true
            }
            ResponseFraming::Length(length) => sent == length,
            ResponseFraming::None => true,
        })
    }

    /// Writes out what `write` holds; a retirement cuts a write the client keeps waiting.
    async fn flush(&mut self) -> Result<(), Cut> {
        let signals = &mut *self.signals;
        let write = &mut *self.write;
        let io = &mut *self.io;
        tokio::select! {
            biased;
            _ = &mut signals.retired => Err(Cut::Closed),
            written = async {
                if !write.is_empty() {
                    io.write_all(write).await?;
                    write.clear();
                }
                io.flush().await
            } => written.map_err(Cut::Failed),
        }
    }

    /// Ends the connection's sending side, unless the binding is retired first.
    async fn shutdown(&mut self) {
        let signals = &mut *self.signals;
        let io = &mut *self.io;
        tokio::select! {
            biased;
            _ = &mut signals.retired => {}
            _ = io.shutdown() => {}
        }
    }
}

/// `taken`, then `rest`.
fn join(taken: Bytes, rest: BytesMut) -> Bytes {
    if taken.is_empty() {
        return rest.freeze();
    }
    let mut joined = BytesMut::with_capacity(taken.len() + rest.len());
    joined.extend_from_slice(&taken);
    joined.extend_from_slice(&rest);
    joined.freeze()
}

/// Calls `with` with the `date` value (RFC 9110 §5.6.7) of a response sent now, formatted
/// once a second per thread.
fn with_date<R>(with: impl FnOnce(&[u8]) -> R) -> R {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    DATE.with_borrow_mut(|(cached, date)| {
        if *cached != second {
            *cached = second;
            *date = httpdate::fmt_http_date(now);
        }
        with(date.as_bytes())
    })
}
