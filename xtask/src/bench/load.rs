//! An open-loop HTTP/1.1 load generator: requests are due at exact, evenly spaced times whatever
//! the responses do, and each latency is measured from the time its request was *due*, so a
//! stall of the server counts against every request it delays (no coordinated omission).
//!
//! A dispatcher thread releases one permit per request as its time comes (an OS timer, finer
//! than tokio's millisecond wheel); keep-alive connections, each with at most one request in
//! flight, take the permits in turn. When every connection is busy, due requests wait, and that
//! wait is part of their latency.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// When each request is due: request `index` at `index / rate` seconds after the start, computed
/// from the index each time so that rounding never accumulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Requests per second.
    pub rate: u64,
    /// Requests in the run.
    pub total: u64,
}

impl Schedule {
    /// `rate` requests per second for `duration` (at least one request).
    pub fn new(rate: u64, duration: Duration) -> Self {
        let rate = rate.max(1);
        let total = (duration.as_nanos() * u128::from(rate) / NANOS_PER_SECOND).max(1);
        Self {
            rate,
            total: u64::try_from(total).unwrap_or(u64::MAX),
        }
    }

    /// How long after the start request `index` is due.
    pub fn due_at(&self, index: u64) -> Duration {
        let nanos = u128::from(index) * NANOS_PER_SECOND / u128::from(self.rate);
        duration_from_nanos(nanos)
    }

    /// How many requests are due `elapsed` after the start (those with `due_at(index) <=
    /// elapsed`), at most [`Schedule::total`].
    pub fn due_by(&self, elapsed: Duration) -> u64 {
        // due_at(i) <= e  ⇔  ⌊i·10⁹/rate⌋ <= e  ⇔  i·10⁹ < (e+1)·rate  ⇔  i < ⌈(e+1)·rate/10⁹⌉
        let bound = (elapsed.as_nanos() + 1) * u128::from(self.rate);
        let due = bound.div_ceil(NANOS_PER_SECOND);
        u64::try_from(due).unwrap_or(u64::MAX).min(self.total)
    }
}

fn duration_from_nanos(nanos: u128) -> Duration {
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// The value at percentile `percent` (0 to 100) of an ascending sample, by nearest rank: the
/// smallest value that at least `percent` % of the sample does not exceed.
pub fn percentile(sorted: &[Duration], percent: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (percent.clamp(0.0, 100.0) * sorted.len() as f64 / 100.0).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied()
}

/// One fixed-rate run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Where requests go.
    pub target: SocketAddr,
    /// The request path.
    pub path: String,
    /// Requests per second.
    pub rate: u64,
    /// How long requests are sent.
    pub duration: Duration,
    /// Keep-alive connections opened before the start.
    pub connections: usize,
    /// The response body length every answer must have.
    pub body_length: usize,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Latencies of the successful requests, ascending, each from its due time to the end of
    /// its response body.
    pub latencies: Vec<Duration>,
    /// Requests that failed or were answered with another status or body length.
    pub errors: u64,
    /// From the first request's due time to the last response: longer than the planned
    /// duration when the target (or the generator) could not keep up with the rate.
    pub elapsed: Duration,
}

impl Outcome {
    /// Requests completed per second of [`Outcome::elapsed`].
    pub fn achieved_rate(&self) -> f64 {
        (self.latencies.len() as u64 + self.errors) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The latency at `percent` (0 when nothing succeeded).
    pub fn percentile(&self, percent: f64) -> Duration {
        percentile(&self.latencies, percent).unwrap_or_default()
    }
}

/// Runs `plan` on a single-threaded runtime of its own (the generator should take as little
/// of the machine as it can) and returns the latencies.
pub fn run(plan: &Plan) -> Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the load generator's runtime")?;
    runtime.block_on(run_async(plan))
}

/// The requests of a fixed-rate run, falling due at the instants of a [`Schedule`] whatever
/// the answers do: a thread on an OS timer (finer than tokio's millisecond timer wheel)
/// releases them as permits, and idle workers take them in turn.
pub(super) struct Due {
    schedule: Schedule,
    start: Instant,
    next: AtomicU64,
    permits: Semaphore,
}

impl Due {
    /// The run of `schedule`, starting shortly (so that workers are idle before the first
    /// request is due).
    pub(super) fn new(schedule: Schedule) -> Arc<Self> {
        Arc::new(Self {
            schedule,
            start: Instant::now() + Duration::from_millis(20),
            next: AtomicU64::new(0),
            permits: Semaphore::new(0),
        })
    }

    /// Starts the thread that releases the requests for `workers` workers.
    pub(super) fn dispatch(self: &Arc<Self>, workers: usize) -> std::thread::JoinHandle<()> {
        let due = self.clone();
        std::thread::spawn(move || due.release(workers))
    }

    /// Waits for the next request: the instant it fell due, or `None` once the run is over.
    pub(super) async fn next(&self) -> Option<Instant> {
        self.permits.acquire().await.ok()?.forget();
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        (index < self.schedule.total).then(|| self.start + self.schedule.due_at(index))
    }

    /// How many requests the run has.
    pub(super) fn total(&self) -> u64 {
        self.schedule.total
    }

    /// Releases one permit per request when it falls due, then one per worker so that every
    /// worker learns that the run is over.
    fn release(&self, workers: usize) {
        let mut released = 0;
        while released < self.schedule.total {
            let now = Instant::now();
            if now < self.start {
                std::thread::sleep(self.start - now);
                continue;
            }
            let due = self.schedule.due_by(now - self.start);
            if due > released {
                self.permits
                    .add_permits(usize::try_from(due - released).unwrap_or(Semaphore::MAX_PERMITS));
                released = due;
            }
            if released < self.schedule.total {
                let next = self.start + self.schedule.due_at(released);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        }
        self.permits.add_permits(workers);
    }
}

async fn run_async(plan: &Plan) -> Result<Outcome> {
    let mut senders = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections.max(1) {
        senders.push(connect(plan.target).await?);
    }
    // Connections are open and idle before the first request is due.
    let shared = Due::new(Schedule::new(plan.rate, plan.duration));
    let start = shared.start;
    let dispatcher = shared.dispatch(senders.len());
    let mut tasks = Vec::with_capacity(senders.len());
    for sender in senders {
        let shared = shared.clone();
        let plan = plan.clone();
        tasks.push(tokio::spawn(async move {
            connection(sender, &shared, &plan).await
        }));
    }
    let mut latencies = Vec::with_capacity(usize::try_from(shared.total()).unwrap_or(0));
    let mut errors = 0;
    let mut failure = None;
    for task in tasks {
        match task.await {
            Ok(Ok((mut own, own_errors))) => {
                latencies.append(&mut own);
                errors += own_errors;
            }
            Ok(Err(error)) => failure = Some(error),
            Err(error) => failure = Some(anyhow::Error::new(error)),
        }
    }
    if dispatcher.join().is_err() {
        bail!("the load generator's dispatcher failed");
    }
    if let Some(error) = failure {
        return Err(error.context("a load generator connection failed"));
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    Ok(Outcome {
        latencies,
        errors,
        elapsed,
    })
}

async fn connection(
    mut sender: SendRequest<Empty<Bytes>>,
    shared: &Due,
    plan: &Plan,
) -> Result<(Vec<Duration>, u64)> {
    let host = plan.target.to_string();
    let mut latencies = Vec::new();
    let mut errors = 0;
    loop {
        let Some(due) = shared.next().await else {
            return Ok((latencies, errors));
        };
        match exchange(&mut sender, &plan.path, &host, plan.body_length).await {
            Ok(()) => latencies.push(due.elapsed()),
            Err(_) => {
                errors += 1;
                if sender.is_closed() {
                    sender = connect(plan.target).await?;
                }
            }
        }
    }
}

/// An HTTP/1.1 connection to `target` (no Nagle delay), driven in the background.
pub(super) async fn connect<B>(target: SocketAddr) -> Result<SendRequest<B>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(target)
        .await
        .with_context(|| format!("cannot connect to {target}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // The connection ends with the run, or fails and the next request reports it.
        let _ = connection.await;
    });
    Ok(sender)
}

/// One `GET`, read to the end of its body.
async fn exchange(
    sender: &mut SendRequest<Empty<Bytes>>,
    path: &str,
    host: &str,
    body_length: usize,
) -> Result<()> {
    sender.ready().await?;
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .body(Empty::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if status != hyper::StatusCode::OK || body.len() != body_length {
        bail!("{status} with {} bytes", body.len());
    }
    Ok(())
}

/// A single `GET` on a new connection, with `header` (`name: value`) when given: the status and
/// body, to check a target before loading it.
pub fn probe(target: SocketAddr, path: &str, header: Option<&str>) -> Result<(u16, Bytes)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut sender = connect::<Empty<Bytes>>(target).await?;
        sender.ready().await?;
        let mut request = hyper::Request::get(path).header(hyper::header::HOST, target.to_string());
        if let Some(header) = header {
            let (name, value) = header
                .split_once(':')
                .with_context(|| format!("`{header}` is not `name: value`"))?;
            request = request.header(name.trim(), value.trim());
        }
        let request = request.body(Empty::new())?;
        let response =
            tokio::time::timeout(Duration::from_secs(5), sender.send_request(request)).await??;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_evenly_spaced_without_drift() {
        let schedule = Schedule::new(3, Duration::from_secs(2));
        assert_eq!(schedule.total, 6);
        assert_eq!(schedule.due_at(0), Duration::ZERO);
        assert_eq!(schedule.due_at(1), Duration::from_nanos(333_333_333));
        assert_eq!(schedule.due_at(2), Duration::from_nanos(666_666_666));
        assert_eq!(schedule.due_at(3), Duration::from_secs(1));
        // A million intervals later, still exactly on the second.
        assert_eq!(schedule.due_at(3_000_000), Duration::from_secs(1_000_000));
    }

    #[test]
    fn the_due_count_agrees_with_the_due_times() {
        for rate in [1, 3, 7, 1000, 12_345, 1_000_000_007] {
            let schedule = Schedule {
                rate,
                total: u64::MAX,
            };
            for index in [0, 1, 2, 5, 99, 12_344, 77_777] {
                let at = schedule.due_at(index);
                assert!(
                    schedule.due_by(at) > index,
                    "rate {rate}: request {index} is due at {at:?}"
                );
                if let Some(before) = at.checked_sub(Duration::from_nanos(1)) {
                    assert!(
                        schedule.due_by(before) <= index,
                        "rate {rate}: request {index} is not due at {before:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_due_count_stops_at_the_total() {
        let schedule = Schedule::new(1000, Duration::from_millis(10));
        assert_eq!(schedule.total, 10);
        assert_eq!(schedule.due_by(Duration::ZERO), 1);
        assert_eq!(schedule.due_by(Duration::from_micros(4500)), 5);
        assert_eq!(schedule.due_by(Duration::from_secs(60)), 10);
        assert_eq!(Schedule::new(0, Duration::ZERO).total, 1);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let sample: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile(&sample, 50.0), Some(Duration::from_micros(50)));
        assert_eq!(percentile(&sample, 99.0), Some(Duration::from_micros(99)));
        assert_eq!(percentile(&sample, 99.9), Some(Duration::from_micros(100)));
        assert_eq!(percentile(&sample, 100.0), Some(Duration::from_micros(100)));
        assert_eq!(percentile(&sample, 0.0), Some(Duration::from_micros(1)));
        let three = [1, 2, 3].map(Duration::from_millis);
        assert_eq!(percentile(&three, 50.0), Some(Duration::from_millis(2)));
        assert_eq!(percentile(&three, 99.0), Some(Duration::from_millis(3)));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
