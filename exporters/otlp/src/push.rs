//! The push task: every `interval`, the metrics (cumulative, so a failed push loses nothing:
//! the next one carries the same totals), the buffered log records and the buffered spans,
//! each POSTed as JSON.
//! A failure is retried sooner, backing off from one second up to `interval`; log records
//! leave the buffer only once the receiver answered 2xx. The task never touches the data
//! path: bindings only append to the buffer.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Uri};
use tokio_util::sync::CancellationToken;
use zilla_engine::metrics::Metrics;

use crate::buffer::RecordBuffer;
use crate::encode;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a receiver's answer read (its body is only a partial-success report).
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// The first retry delay after a failure.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// How long the last push may take when the exporter stops.
const FINAL_PUSH: Duration = Duration::from_secs(2);

/// Where and how to push.
#[derive(Debug, Clone)]
pub struct Target {
    /// The metrics endpoint, when `signals` has `metrics`.
    pub metrics: Option<Uri>,
    /// The logs endpoint, when `signals` has `logs`.
    pub logs: Option<Uri>,
    /// The traces endpoint, when `signals` has `traces`.
    pub traces: Option<Uri>,
    /// `credentials.headers.authorization`.
    pub authorization: Option<HeaderValue>,
    /// `interval`.
    pub interval: Duration,
    /// The namespace's `telemetry.attributes`, sent as resource attributes.
    pub resource: Vec<(String, String)>,
}

struct Pusher {
    target: Target,
    metrics: Metrics,
    logs: Arc<RecordBuffer>,
    spans: Arc<RecordBuffer>,
}

/// Runs until `stopped`, then pushes once more.
pub async fn run(
    target: Target,
    metrics: Metrics,
    logs: Arc<RecordBuffer>,
    spans: Arc<RecordBuffer>,
    stopped: CancellationToken,
) {
    let pusher = Pusher {
        target,
        metrics,
        logs,
        spans,
    };
    let mut delay = pusher.target.interval;
    let mut failing = false;
    loop {
        tokio::select! {
            () = stopped.cancelled() => {
                if tokio::time::timeout(FINAL_PUSH, pusher.push()).await.is_err() {
                    tracing::debug!("otlp: the last push did not finish in time");
                }
                return;
            }
            () = tokio::time::sleep(delay) => {}
        }
        let pushed = pusher.push().await;
        let dropped = pusher.logs.take_dropped();
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "otlp: events dropped: the retry buffer was full while the receiver did not accept them"
            );
        }
        let dropped = pusher.spans.take_dropped();
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "otlp: spans dropped: the retry buffer was full while the receiver did not accept them"
            );
        }
        match pushed {
            Ok(()) => {
                if failing {
                    tracing::info!("otlp: the receiver accepts pushes again");
                }
                failing = false;
                delay = pusher.target.interval;
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, waiting = pusher.logs.len(), "otlp: push failed; retrying");
                }
                delay = if failing {
                    (delay * 2).min(pusher.target.interval)
                } else {
                    FIRST_RETRY.min(pusher.target.interval)
                };
                failing = true;
            }
        }
    }
}

impl Pusher {
    /// Pushes the metrics and every buffered log record; the first failure stops it.
    async fn push(&self) -> Result<(), String> {
        if let Some(uri) = &self.target.metrics {
            let now = encode::unix_nanos(SystemTime::now());
            let metrics = self
                .metrics
                .snapshot()
                .iter()
                .map(|series| {
                    let kind = self
                        .metrics
                        .binding_kind(&series.namespace, &series.binding);
                    encode::metric(series, kind.as_deref(), now)
                })
                .collect();
            self.post(uri, encode::metrics_body(&self.target.resource, metrics))
                .await?;
        }
        let resource = &self.target.resource;
        if let Some(uri) = &self.target.logs {
            self.drain(uri, &self.logs, |records| {
                encode::logs_body(resource, records.iter().map(String::as_str))
            })
            .await?;
        }
        if let Some(uri) = &self.target.traces {
            self.drain(uri, &self.spans, |records| {
                encode::traces_body(resource, records.iter().map(String::as_str))
            })
            .await?;
        }
        Ok(())
    }

    /// Posts every batch of `buffer` to `uri` in the body `body` makes of its records,
    /// acknowledging each once posted.
    async fn drain(
        &self,
        uri: &Uri,
        buffer: &RecordBuffer,
        body: impl Fn(&[String]) -> String,
    ) -> Result<(), String> {
        while let Some(batch) = buffer.batch() {
            self.post(uri, body(&batch.records)).await?;
            buffer.acknowledge(batch.last);
        }
        Ok(())
    }

    async fn post(&self, uri: &Uri, body: String) -> Result<(), String> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(uri.clone())
            .header(CONTENT_TYPE, "application/json");
        if let Some(authorization) = &self.target.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        let request = request
            .body(Bytes::from(body))
            .map_err(|error| error.to_string())?;
        let limits = zilla_fetch::Limits {
            timeout: REQUEST_TIMEOUT,
            max_body_bytes: MAX_ANSWER_BYTES,
        };
        let status = zilla_fetch::send(request, limits)
            .await
            .map_err(|error| format!("{uri}: {error}"))?
            .status;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("{uri}: answered {status}"))
        }
    }
}
