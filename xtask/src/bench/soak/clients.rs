//! The soak's load, inside this process: SSE subscribers that follow the topic through the load
//! balancer and resume with `Last-Event-ID` whenever their stream ends (gRPC subscribers, in
//! [`super::grpc`], share their bookkeeping and reconnection), and producers that `POST` unique
//! values at a fixed rate and note which ones were acknowledged (`204`).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Body;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use super::super::load::Schedule;
use super::super::sse_fanout::Seen;

pub const PATH: &str = "/events";
/// Where the SSE subscribers' values are `POST`ed: the text itself, to `events`.
pub const EVENTS: Route = Route {
    path: PATH,
    content_type: "text/plain",
    encode: Bytes::from,
};
/// Measured values are `soak-<seq>`; warm-up values `warm-<n>`.
const SAMPLE_PREFIX: &str = "soak-";
const WARM_UP_PREFIX: &str = "warm-";
/// The longest SSE line kept; a longer one spoils its event (counted as malformed).
const MAX_LINE: usize = 4 * 1024;
/// Subscriptions being opened at once at the start (the storm opens them all together).
const OPENING_AT_ONCE: usize = 256;
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Produce requests in flight at most; a due request waits for a free slot.
const PRODUCING_AT_ONCE: usize = 256;
/// Reconnection back-off after a failed attempt: doubles from the first up to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// What the subscribers share with the fault schedule.
pub struct Shared {
    pub target: SocketAddr,
    /// Sequence numbers of the measured run (bitsets are this long).
    pub total: u64,
    /// When each fault was injected, in order, and how many subscribers have had an event
    /// since the last one.
    pub faults: Mutex<Faults>,
    /// When the last value was due: a stall is counted up to here, not into the drain.
    pub producing_ended: Mutex<Option<Instant>>,
    /// Measured values received, over all subscribers (each once per subscriber).
    pub deliveries: AtomicU64,
    /// When the fault schedule ended; stalls are counted from here.
    pub schedule_end: Mutex<Option<Instant>>,
    /// Subscribers that have received a warm-up value.
    pub warmed: AtomicUsize,
    /// Subscribers whose first response was a 200 event stream.
    pub subscribed: AtomicUsize,
    /// The highest sequence number received by anyone, plus one.
    pub received_through: AtomicU64,
    /// How many subscribers have received how many measured values: the drain waits for the
    /// one that received least.
    received_by: Mutex<BTreeMap<u64, usize>>,
    pub first_error: Mutex<Option<String>>,
    opening: Semaphore,
}

impl Shared {
    pub fn new(target: SocketAddr, total: u64) -> Self {
        Self {
            target,
            total,
            faults: Mutex::new(Faults::default()),
            producing_ended: Mutex::new(None),
            deliveries: AtomicU64::new(0),
            schedule_end: Mutex::new(None),
            warmed: AtomicUsize::new(0),
            subscribed: AtomicUsize::new(0),
            received_through: AtomicU64::new(0),
            received_by: Mutex::new(BTreeMap::new()),
            first_error: Mutex::new(None),
            opening: Semaphore::new(OPENING_AT_ONCE),
        }
    }

    pub fn note_fault(&self) {
        let mut faults = lock(&self.faults);
        faults.times.push(Instant::now());
        faults.caught_up = 0;
    }

    /// Subscribers that have received an event since the last fault.
    pub fn caught_up(&self) -> usize {
        lock(&self.faults).caught_up
    }

    pub fn end_producing(&self, at: Instant) {
        *lock(&self.producing_ended) = Some(at);
    }

    /// The fewest measured values any subscriber has received.
    pub fn least_received(&self) -> u64 {
        lock(&self.received_by).keys().next().copied().unwrap_or(0)
    }

    /// A subscriber starts, having received nothing.
    fn note_subscriber(&self) {
        *lock(&self.received_by).entry(0).or_default() += 1;
    }

    /// A subscriber that had received `before` values received one more.
    fn note_received(&self, before: u64) {
        let mut received_by = lock(&self.received_by);
        if let Some(count) = received_by.get_mut(&before) {
            *count -= 1;
            if *count == 0 {
                received_by.remove(&before);
            }
        }
        *received_by.entry(before + 1).or_default() += 1;
    }

    pub fn end_schedule(&self) {
        *lock(&self.schedule_end) = Some(Instant::now());
    }

    fn note_error(&self, error: &anyhow::Error) {
        lock(&self.first_error).get_or_insert_with(|| format!("{error:#}"));
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Default)]
pub struct Faults {
    times: Vec<Instant>,
    caught_up: usize,
}

/// What one subscriber saw over the whole run.
pub struct Subscription {
    /// Measured sequence numbers received (each once).
    pub seen: Seen,
    pub received: u64,
    /// Values received again, over all values.
    pub duplicates: u64,
    /// How many times each value received more than once was received again: the checker
    /// compares this with how often the topic holds the value (a produce retried after a lost
    /// acknowledgement writes it twice, and then an exact subscriber receives it twice too).
    /// At most one entry per value of the run.
    pub repeats: HashMap<u64, u64>,
    /// Events that were neither a measured nor a warm-up value, or past the line bound.
    pub malformed: u64,
    pub warmed: bool,
    /// Streams opened after the first one.
    pub reconnects: u64,
    /// Attempts that failed (refused, not 200, broken before the head).
    pub failed_attempts: u64,
    /// What resumes after the last value received: the SSE event id, or the gRPC message id
    /// base64url-encoded.
    pub(super) last_id: Option<String>,
    last_event: Option<Instant>,
    /// For each fault in order: how long after it the first event arrived.
    pub first_event_after: Vec<Duration>,
    /// The longest time without an event since the schedule ended.
    pub longest_stall: Duration,
}

impl Subscription {
    pub(super) fn new(total: u64) -> Self {
        Self {
            seen: Seen::new(total),
            received: 0,
            duplicates: 0,
            repeats: HashMap::new(),
            malformed: 0,
            warmed: false,
            reconnects: 0,
            failed_attempts: 0,
            last_id: None,
            last_event: None,
            first_event_after: Vec::new(),
            longest_stall: Duration::ZERO,
        }
    }

    /// One event, received at `now`.
    pub(super) fn event(&mut self, shared: &Shared, id: Option<String>, data: &[u8], now: Instant) {
        if id.is_some() {
            self.last_id = id;
        }
        {
            let mut faults = lock(&shared.faults);
            let noted = self.first_event_after.len();
            if noted < faults.times.len() {
                for fault in &faults.times[noted..] {
                    self.first_event_after
                        .push(now.saturating_duration_since(*fault));
                }
                faults.caught_up += 1;
            }
        }
        self.stall_until(shared, now);
        self.last_event = Some(now);
        match Value::parse(data) {
            Some(Value::Sample(seq)) => {
                if seq < shared.total && self.seen.insert(seq) {
                    shared.note_received(self.received);
                    self.received += 1;
                    shared.deliveries.fetch_add(1, Ordering::Relaxed);
                    shared
                        .received_through
                        .fetch_max(seq + 1, Ordering::Relaxed);
                } else if seq < shared.total {
                    self.duplicates += 1;
                    *self.repeats.entry(seq).or_default() += 1;
                } else {
                    self.malformed += 1;
                }
            }
            Some(Value::WarmUp) => {
                if !self.warmed {
                    self.warmed = true;
                    shared.warmed.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => self.malformed += 1,
        }
    }

    /// A stream opened: the first one makes this subscriber subscribed, later ones are
    /// reconnects.
    pub(super) fn opened(&mut self, shared: &Shared, opened_once: &mut bool) {
        if *opened_once {
            self.reconnects += 1;
        } else {
            *opened_once = true;
            shared.subscribed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts the time without events up to `now`, from the end of the fault schedule on.
    pub fn stall_until(&mut self, shared: &Shared, now: Instant) {
        let Some(end) = *lock(&shared.schedule_end) else {
            return;
        };
        let since = self.last_event.map_or(end, |last| last.max(end));
        self.longest_stall = self.longest_stall.max(now.saturating_duration_since(since));
    }
}

/// A value the producers send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    Sample(u64),
    WarmUp,
}

impl Value {
    pub fn parse(data: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(data).ok()?;
        if let Some(seq) = text.strip_prefix(SAMPLE_PREFIX) {
            return seq.parse().ok().map(Self::Sample);
        }
        text.strip_prefix(WARM_UP_PREFIX)
            .filter(|n| n.parse::<u64>().is_ok())
            .map(|_| Self::WarmUp)
    }
}

/// Server-sent events parsed from body bytes in whatever pieces they come, with a bounded line.
#[derive(Debug, Default)]
struct EventParser {
    line: Vec<u8>,
    line_too_long: bool,
    id: Option<String>,
    data: Vec<u8>,
    has_data: bool,
}

impl EventParser {
    /// Calls `on_event(id, data)` for every event `input` completes; returns the lines that
    /// were too long.
    fn feed(&mut self, input: &[u8], on_event: &mut impl FnMut(Option<String>, &[u8])) -> u64 {
        let mut too_long = 0;
        for &byte in input {
            if byte != b'\n' {
                if self.line.len() < MAX_LINE {
                    self.line.push(byte);
                } else {
                    self.line_too_long = true;
                }
                continue;
            }
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            if self.line_too_long {
                too_long += 1;
            } else {
                self.line_done(on_event);
            }
            self.line.clear();
            self.line_too_long = false;
        }
        too_long
    }

    fn line_done(&mut self, on_event: &mut impl FnMut(Option<String>, &[u8])) {
        if self.line.is_empty() {
            if self.has_data {
                on_event(self.id.take(), &self.data);
            }
            self.id = None;
            self.data.clear();
            self.has_data = false;
            return;
        }
        let (field, value) = match self.line.iter().position(|&b| b == b':') {
            Some(0) => return, // a comment
            Some(at) => {
                let value = &self.line[at + 1..];
                (&self.line[..at], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (&self.line[..], &b""[..]),
        };
        match field {
            b"id" => self.id = Some(String::from_utf8_lossy(value).into_owned()),
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            _ => {}
        }
    }
}

/// Why a stream stopped being read.
pub(super) enum Ended {
    /// The server ended it or the connection broke.
    Closed,
    /// The reconnect storm: drop it and resume at once.
    Storm,
    /// The run is over.
    Stop,
}

/// The reconnect storm's and the end of the run's signals, as a stream watches them.
pub type Signals<'a> = (&'a mut watch::Receiver<u64>, &'a mut watch::Receiver<bool>);

/// How a subscriber follows its topic: one stream at a time, opened resuming after
/// [`Subscription::last_id`] and read until it ends.
pub trait Transport: Copy {
    /// Opens one stream and reads it until it ends; returns whether it opened, and why it
    /// ended.
    fn stream<'a>(
        self,
        shared: &'a Shared,
        subscription: &'a mut Subscription,
        opened_once: &'a mut bool,
        signals: Signals<'a>,
        permit: Option<tokio::sync::SemaphorePermit<'a>>,
    ) -> impl Future<Output = Result<(bool, Ended)>> + Send + 'a;
}

/// `GET /events` as `text/event-stream`, resuming with `Last-Event-ID`.
#[derive(Debug, Clone, Copy)]
pub struct Sse;

impl Transport for Sse {
    fn stream<'a>(
        self,
        shared: &'a Shared,
        subscription: &'a mut Subscription,
        opened_once: &'a mut bool,
        signals: Signals<'a>,
        permit: Option<tokio::sync::SemaphorePermit<'a>>,
    ) -> impl Future<Output = Result<(bool, Ended)>> + Send + 'a {
        stream(shared, subscription, opened_once, signals, permit)
    }
}

/// One subscriber until `stop` says the run is over; returns what it saw.
pub async fn subscriber(
    transport: impl Transport,
    shared: Arc<Shared>,
    mut storm: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) -> Subscription {
    let mut subscription = Subscription::new(shared.total);
    shared.note_subscriber();
    let mut opened_once = false;
    let mut backoff = BACKOFF_FIRST;
    loop {
        let permit = if opened_once {
            None
        } else {
            shared.opening.acquire().await.ok()
        };
        let ended = transport
            .stream(
                &shared,
                &mut subscription,
                &mut opened_once,
                (&mut storm, &mut stop),
                permit,
            )
            .await;
        match ended {
            Ok((opened, ended)) => {
                if opened {
                    backoff = BACKOFF_FIRST;
                }
                match ended {
                    Ended::Stop => break,
                    Ended::Storm => continue,
                    Ended::Closed if opened => continue,
                    Ended::Closed => {}
                }
            }
            Err(error) => {
                shared.note_error(&error);
            }
        }
        subscription.failed_attempts += 1;
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => break,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    let until = (*lock(&shared.producing_ended)).unwrap_or_else(Instant::now);
    subscription.stall_until(&shared, until);
    subscription
}

/// Opens one stream (resuming after the last event id seen) and reads it until it ends;
/// returns whether it opened, and why it ended.
async fn stream(
    shared: &Shared,
    subscription: &mut Subscription,
    opened_once: &mut bool,
    (storm, stop): Signals<'_>,
    permit: Option<tokio::sync::SemaphorePermit<'_>>,
) -> Result<(bool, Ended)> {
    if *stop.borrow() {
        return Ok((false, Ended::Stop));
    }
    let socket = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(shared.target))
        .await
        .context("connect timed out")??;
    socket.set_nodelay(true)?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(socket)).await?;
    let connection = tokio::spawn(connection);
    let mut request = hyper::Request::get(PATH)
        .header(hyper::header::HOST, shared.target.to_string())
        .header(hyper::header::ACCEPT, "text/event-stream");
    if let Some(id) = &subscription.last_id {
        request = request.header("last-event-id", id);
    }
    let response = tokio::time::timeout(
        REQUEST_TIMEOUT,
        sender.send_request(request.body(Empty::<Bytes>::new())?),
    )
    .await
    .context("no response head in time")??;
    drop(permit);
    if response.status() != hyper::StatusCode::OK {
        connection.abort();
        bail!("GET {PATH} answered {}", response.status());
    }
    subscription.opened(shared, opened_once);
    storm.mark_unchanged();
    let mut body = response.into_body();
    let mut parser = EventParser::default();
    let ended = loop {
        tokio::select! {
            frame = body.frame() => match frame {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    let now = Instant::now();
                    let too_long = parser.feed(&data, &mut |id, event| {
                        subscription.event(shared, id, event, now);
                    });
                    subscription.malformed += too_long;
                }
                Some(Err(_)) | None => break Ended::Closed,
            },
            _ = storm.changed() => break Ended::Storm,
            _ = stop.changed() => break Ended::Stop,
        }
    };
    connection.abort();
    Ok((true, ended))
}

/// What the producers did.
pub struct Produced {
    /// Sequence numbers answered `204`.
    pub acknowledged: Seen,
    pub acknowledged_count: u64,
    /// Requests answered otherwise, or that failed or timed out.
    pub failed: u64,
    pub first_error: Option<String>,
}

/// Where and how values are `POST`ed.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub path: &'static str,
    pub content_type: &'static str,
    /// The request body carrying a value.
    pub encode: fn(String) -> Bytes,
}

/// `POST`s `soak-<seq>` on `route` for every sequence number of `schedule` at its due time
/// from `start`, each on a connection of its own (so a failure says nothing about the others).
pub async fn produce(
    target: SocketAddr,
    route: Route,
    schedule: Schedule,
    start: Instant,
) -> Produced {
    let acknowledged = Arc::new(Mutex::new((Seen::new(schedule.total), 0u64)));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let slots = Arc::new(Semaphore::new(PRODUCING_AT_ONCE));
    let mut requests = tokio::task::JoinSet::new();
    for seq in 0..schedule.total {
        tokio::time::sleep_until(start + schedule.due_at(seq)).await;
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let (acknowledged, failed, first_error) =
            (acknowledged.clone(), failed.clone(), first_error.clone());
        requests.spawn(async move {
            let value = format!("{SAMPLE_PREFIX}{seq}");
            match post(target, route, value).await {
                Ok(()) => {
                    let mut acknowledged = lock(&acknowledged);
                    acknowledged.0.insert(seq);
                    acknowledged.1 += 1;
                }
                Err(error) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    lock(&first_error).get_or_insert_with(|| format!("{error:#}"));
                }
            }
            drop(slot);
        });
        while requests.try_join_next().is_some() {}
    }
    while requests.join_next().await.is_some() {}
    let (seen, count) = std::mem::replace(&mut *lock(&acknowledged), (Seen::new(0), 0));
    let first_error = lock(&first_error).take();
    Produced {
        acknowledged: seen,
        acknowledged_count: count,
        failed: failed.load(Ordering::Relaxed),
        first_error,
    }
}

/// `POST`s warm-up value `n` on `route`; whether it was acknowledged does not matter.
pub async fn warm_up(target: SocketAddr, route: Route, n: u64) -> Result<()> {
    post(target, route, format!("{WARM_UP_PREFIX}{n}")).await
}

/// One `POST` of `value` on `route` on a new connection; an error unless answered `204`.
async fn post(target: SocketAddr, route: Route, value: String) -> Result<()> {
    tokio::time::timeout(REQUEST_TIMEOUT, async move {
        let socket = TcpStream::connect(target).await?;
        socket.set_nodelay(true)?;
        let (mut sender, connection) = http1::handshake(TokioIo::new(socket)).await?;
        let connection = tokio::spawn(connection);
        let body = Full::new((route.encode)(value));
        let length = body.size_hint().exact().unwrap_or(0);
        let request = hyper::Request::post(route.path)
            .header(hyper::header::HOST, target.to_string())
            .header(hyper::header::CONTENT_TYPE, route.content_type)
            .header(hyper::header::CONTENT_LENGTH, length)
            .body(body)?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let _ = response.into_body().collect().await;
        connection.abort();
        if status != hyper::StatusCode::NO_CONTENT {
            bail!("POST {} answered {status}", route.path);
        }
        Ok(())
    })
    .await
    .context("POST timed out")?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(parser: &mut EventParser, input: &[u8]) -> (Vec<(Option<String>, String)>, u64) {
        let mut out = Vec::new();
        let too_long = parser.feed(input, &mut |id, data| {
            out.push((id, String::from_utf8_lossy(data).into_owned()));
        });
        (out, too_long)
    }

    #[test]
    fn events_are_parsed_across_pieces_with_their_ids() {
        let mut parser = EventParser::default();
        let (first, _) = events(&mut parser, b": hello\n\nid:a1\ndata: soak-1\n\nid: a");
        assert_eq!(first, [(Some("a1".to_owned()), "soak-1".to_owned())]);
        let (second, _) = events(&mut parser, b"2\r\ndata:x\r\ndata:y\r\n\r\ndata:z\n\n");
        assert_eq!(
            second,
            [
                (Some("a2".to_owned()), "x\ny".to_owned()),
                (None, "z".to_owned())
            ]
        );
    }

    #[test]
    fn a_line_past_the_bound_is_counted_not_kept() {
        let mut parser = EventParser::default();
        let mut long = b"data:".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        long.extend(b"\n\ndata:soak-2\n\n");
        let (out, too_long) = events(&mut parser, &long);
        assert_eq!(too_long, 1);
        assert_eq!(out, [(None, "soak-2".to_owned())]);
    }

    #[test]
    fn values_are_told_apart() {
        assert_eq!(Value::parse(b"soak-42"), Some(Value::Sample(42)));
        assert_eq!(Value::parse(b"warm-3"), Some(Value::WarmUp));
        assert_eq!(Value::parse(b"soak-x"), None);
        assert_eq!(Value::parse(b"other"), None);
    }

    #[test]
    fn repeats_are_duplicates_and_faults_get_their_first_event() {
        let shared = Shared::new(SocketAddr::from(([127, 0, 0, 1], 1)), 10);
        let mut subscription = Subscription::new(10);
        let start = Instant::now();
        shared.note_fault();
        subscription.event(
            &shared,
            Some("i1".into()),
            b"soak-1",
            start + Duration::from_secs(1),
        );
        subscription.event(&shared, None, b"soak-1", start + Duration::from_secs(2));
        subscription.event(&shared, None, b"soak-99", start + Duration::from_secs(2));
        subscription.event(&shared, None, b"warm-0", start + Duration::from_secs(2));
        assert_eq!((subscription.received, subscription.duplicates), (1, 1));
        assert_eq!(subscription.repeats, HashMap::from([(1, 1)]));
        assert_eq!(subscription.malformed, 1);
        assert!(subscription.warmed);
        assert_eq!(subscription.last_id.as_deref(), Some("i1"));
        assert_eq!(subscription.first_event_after.len(), 1);
        assert_eq!(shared.caught_up(), 1);
        assert!(subscription.first_event_after[0] > Duration::from_millis(900));
        assert_eq!(shared.received_through.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn the_drain_waits_for_the_subscriber_that_received_least() {
        let shared = Shared::new(SocketAddr::from(([127, 0, 0, 1], 1)), 10);
        let now = Instant::now();
        let (mut first, mut second) = (Subscription::new(10), Subscription::new(10));
        shared.note_subscriber();
        shared.note_subscriber();
        first.event(&shared, None, b"soak-1", now);
        first.event(&shared, None, b"soak-2", now);
        first.event(&shared, None, b"soak-2", now);
        assert_eq!(
            shared.least_received(),
            0,
            "the second has received nothing"
        );
        second.event(&shared, None, b"soak-2", now);
        assert_eq!(shared.least_received(), 1);
        second.event(&shared, None, b"soak-1", now);
        assert_eq!(shared.least_received(), 2, "a repeat counts once");
    }
}
