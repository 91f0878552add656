//! One broker connection: length-prefixed frames, correlation ids, many requests in flight.
//!
//! A writer task sends queued request frames in order; a reader task reads response frames and
//! hands each to the caller waiting on its correlation id. Kafka answers requests on one
//! connection in order, so a response whose id nobody waits for means the stream is out of
//! step, and the connection is closed. A request that times out closes the connection too: the
//! broker may still answer it, and a fresh connection is the only clean state.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use zilla_engine::stream::{BytesHandler, StreamInfo};

use super::codec::{self, ApiVersionsRequest, Request};
use super::error::{ErrorCode, KafkaError};
use super::frame::{FrameError, FrameReader};
use super::sasl::{self, SaslChannel, SaslConfig};
use super::types::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};

/// How a connection is opened and bounded.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// `client.id` sent in every request header.
    pub client_id: String,
    /// Largest response frame accepted; larger ones close the connection with an error.
    pub max_frame_size: usize,
    /// How long a request may wait for its response (fetches add their `max_wait`).
    pub request_timeout: Duration,
    /// How long opening the connection (transport, ApiVersions, SASL) may take.
    pub connect_timeout: Duration,
    /// Requests queued for the writer before callers wait.
    pub max_queued_requests: usize,
    /// SASL credentials, when the broker requires authentication.
    pub sasl: Option<SaslConfig>,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            client_id: "zilla".into(),
            max_frame_size: 100 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_queued_requests: 1024,
            sasl: None,
        }
    }
}

/// The API versions chosen for a broker: for each API, the highest version both sides speak.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiVersions {
    broker: BTreeMap<i16, (i16, i16)>,
    chosen: BTreeMap<ApiKey, i16>,
}

impl ApiVersions {
    /// Chooses versions from the broker's ranges `(api key, min, max)`.
    pub fn negotiate(broker: &[(i16, i16, i16)]) -> Self {
        let broker: BTreeMap<i16, (i16, i16)> = broker
            .iter()
            .map(|(key, min, max)| (*key, (*min, *max)))
            .collect();
        let chosen = ApiKey::ALL
            .into_iter()
            .filter_map(|api| {
                let (client_min, client_max) = codec::client_versions(api);
                let (broker_min, broker_max) = *broker.get(&api.code())?;
                let version = client_max.min(broker_max);
                (version >= client_min.max(broker_min)).then_some((api, version))
            })
            .collect();
        Self { broker, chosen }
    }

    /// The version used for `api`, or `None` when the two sides share none.
    pub fn version(&self, api: ApiKey) -> Option<i16> {
        self.chosen.get(&api).copied()
    }

    /// The broker's advertised range for a raw API key.
    pub fn broker_range(&self, api_key: i16) -> Option<(i16, i16)> {
        self.broker.get(&api_key).copied()
    }
}

/// Why a connection closed; every waiting caller gets it as its error.
#[derive(Debug, Clone)]
enum CloseReason {
    Closed,
    Io(String),
    FrameTooLarge { size: i64, limit: usize },
    Malformed(String),
}

impl From<CloseReason> for KafkaError {
    fn from(reason: CloseReason) -> Self {
        match reason {
            CloseReason::Closed => KafkaError::ConnectionClosed,
            CloseReason::Io(message) => {
                KafkaError::Io(std::io::Error::new(std::io::ErrorKind::BrokenPipe, message))
            }
            CloseReason::FrameTooLarge { size, limit } => KafkaError::FrameTooLarge { size, limit },
            CloseReason::Malformed(reason) => KafkaError::Malformed {
                api: "response frame",
                reason,
            },
        }
    }
}

type Reply = oneshot::Sender<Result<Bytes, CloseReason>>;

/// Unanswered fire-and-forget requests remembered at most; older ones are forgotten.
const MAX_UNANSWERED: usize = 4096;

#[derive(Default)]
struct Pending {
    closed: Option<CloseReason>,
    /// Send order of every request, so responses can be matched against what was skipped.
    sequence: u64,
    waiting: HashMap<i32, (u64, Reply)>,
    /// Requests the protocol says get no response (produce with acks none), in send order.
    /// Kafka never answers them; some brokers (tansu) do, and those answers are dropped.
    unanswered: VecDeque<(u64, i32)>,
}

impl Pending {
    fn next_sequence(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence
    }

    /// What to do with the response to `correlation`.
    fn take(&mut self, correlation: i32) -> Taken {
        if let Some(index) = self.unanswered.iter().position(|(_, c)| *c == correlation) {
            self.unanswered.drain(..=index);
            return Taken::Ignore;
        }
        match self.waiting.remove(&correlation) {
            Some((sequence, reply)) => {
                // Responses come in request order: fire-and-forget requests sent before this
                // one will not be answered any more.
                while self.unanswered.front().is_some_and(|(s, _)| *s < sequence) {
                    self.unanswered.pop_front();
                }
                Taken::Deliver(reply)
            }
            None => Taken::Unexpected,
        }
    }
}

enum Taken {
    Deliver(Reply),
    Ignore,
    Unexpected,
}

struct Shared {
    pending: Mutex<Pending>,
    cancel: CancellationToken,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding this lock cannot leave the map inconsistent: keep using it.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn close(&self, reason: CloseReason) {
        let waiting = {
            let mut pending = self.pending();
            if pending.closed.is_none() {
                pending.closed = Some(reason.clone());
            }
            std::mem::take(&mut pending.waiting)
        };
        self.cancel.cancel();
        for (_, (_, reply)) in waiting {
            let _ = reply.send(Err(reason.clone()));
        }
    }
}

struct Inner {
    address: String,
    config: ConnectionConfig,
    shared: Arc<Shared>,
    outbound: mpsc::Sender<Bytes>,
    correlation: AtomicI32,
    versions: OnceLock<ApiVersions>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}

/// A connection to one broker, shared by clones: requests from all clones are pipelined.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("address", &self.inner.address)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Opens a connection to `host:port` through `connector` (a tcp or tls client), negotiates
    /// API versions and authenticates when SASL is configured.
    pub async fn open(
        connector: &dyn BytesHandler,
        host: &str,
        port: u16,
        config: &ConnectionConfig,
    ) -> Result<Self, KafkaError> {
        let address = format!("{host}:{port}");
        let opening = async {
            let info = StreamInfo {
                authority: Some(host.to_owned()),
                port: Some(port),
                ..StreamInfo::default()
            };
            let stream = connector
                .connect(info)
                .await
                .map_err(|source| KafkaError::Connect {
                    address: address.clone(),
                    source,
                })?;
            let connection = Self::start(stream.io, address.clone(), config.clone());
            connection.negotiate().await?;
            if let Some(sasl) = &config.sasl {
                sasl::authenticate(&connection, sasl).await?;
            }
            Ok(connection)
        };
        match tokio::time::timeout(config.connect_timeout, opening).await {
            Ok(result) => result,
            Err(_) => Err(KafkaError::Timeout {
                api: "connect",
                timeout: config.connect_timeout,
            }),
        }
    }

    fn start<IO>(io: IO, address: String, config: ConnectionConfig) -> Self
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(io);
        let (outbound, queue) = mpsc::channel(config.max_queued_requests.max(1));
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            cancel: CancellationToken::new(),
        });
        tokio::spawn(write_frames(write, queue, shared.clone()));
        tokio::spawn(read_frames(read, shared.clone(), config.max_frame_size));
        tracing::debug!(%address, "kafka connection opened");
        Self {
            inner: Arc::new(Inner {
                address,
                config,
                shared,
                outbound,
                correlation: AtomicI32::new(0),
                versions: OnceLock::new(),
            }),
        }
    }

    /// `host:port` of the broker.
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    /// Whether the connection has closed (it is then never usable again).
    pub fn is_closed(&self) -> bool {
        self.inner.shared.cancel.is_cancelled()
    }

    /// Closes the connection; waiting requests fail with [`KafkaError::ConnectionClosed`].
    pub fn close(&self) {
        self.inner.shared.close(CloseReason::Closed);
    }

    /// The negotiated API versions.
    pub fn api_versions(&self) -> Option<&ApiVersions> {
        self.inner.versions.get()
    }

    /// The version this connection uses for `api`.
    pub fn version(&self, api: ApiKey) -> Result<i16, KafkaError> {
        self.api_versions()
            .and_then(|versions| versions.version(api))
            .ok_or(KafkaError::UnsupportedVersion { api: api.name() })
    }

    /// Sends `request` and waits for its response (at most the configured request timeout).
    pub async fn call<R: Request>(&self, request: &R) -> Result<R::Response, KafkaError> {
        self.call_within(request, self.inner.config.request_timeout)
            .await
    }

    /// Sends `request` and waits at most `timeout` for its response.
    pub async fn call_within<R: Request>(
        &self,
        request: &R,
        timeout: Duration,
    ) -> Result<R::Response, KafkaError> {
        let version = self.version(R::API)?;
        let body = self.round_trip(request, version, timeout).await?;
        codec::decode_response::<R>(version, body)
    }

    /// Sends `request` without waiting for a response: for produce with acks none, which the
    /// broker does not answer. Returns once the request is queued for writing.
    pub async fn send<R: Request>(&self, request: &R) -> Result<(), KafkaError> {
        let version = self.version(R::API)?;
        let (correlation, frame) = self.frame(request, version)?;
        let place = self.place_in_queue().await?;
        let mut pending = self.inner.shared.pending();
        if let Some(reason) = &pending.closed {
            return Err(reason.clone().into());
        }
        let sequence = pending.next_sequence();
        pending.unanswered.push_back((sequence, correlation));
        if pending.unanswered.len() > MAX_UNANSWERED {
            pending.unanswered.pop_front();
        }
        // Queued under the lock that numbered it: see `place_in_queue`.
        place.send(frame);
        Ok(())
    }

    /// A place in the write queue, taken before a request is numbered. Requests are matched
    /// with their answers by send order (a waiting request's answer means that every
    /// fire-and-forget request sent before it will not be answered any more), so a request
    /// goes into the queue while the lock that gave it its number is held: numbered first and
    /// queued second, it could reach the socket after a request numbered later.
    async fn place_in_queue(&self) -> Result<mpsc::Permit<'_, Bytes>, KafkaError> {
        self.inner
            .outbound
            .reserve()
            .await
            .map_err(|_| self.closed_error())
    }

    fn frame<R: Request>(&self, request: &R, version: i16) -> Result<(i32, Bytes), KafkaError> {
        let correlation = self.inner.correlation.fetch_add(1, Ordering::Relaxed) & i32::MAX;
        let frame =
            codec::encode_request(request, version, correlation, &self.inner.config.client_id)?;
        Ok((correlation, frame))
    }

    fn closed_error(&self) -> KafkaError {
        self.inner
            .shared
            .pending()
            .closed
            .clone()
            .map_or(KafkaError::ConnectionClosed, KafkaError::from)
    }

    async fn round_trip<R: Request>(
        &self,
        request: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<Bytes, KafkaError> {
        let (correlation, frame) = self.frame(request, version)?;
        let (reply, response) = oneshot::channel();
        let place = self.place_in_queue().await?;
        {
            let mut pending = self.inner.shared.pending();
            if let Some(reason) = &pending.closed {
                return Err(reason.clone().into());
            }
            let sequence = pending.next_sequence();
            pending.waiting.insert(correlation, (sequence, reply));
            place.send(frame);
        }
        match tokio::time::timeout(timeout, response).await {
            Ok(Ok(Ok(body))) => Ok(body),
            Ok(Ok(Err(reason))) => Err(reason.into()),
            Ok(Err(_)) => Err(self.closed_error()),
            Err(_) => {
                tracing::debug!(address = %self.inner.address, api = %R::API, ?timeout, "request timed out; closing the connection");
                self.inner.shared.close(CloseReason::Closed);
                Err(KafkaError::Timeout {
                    api: R::API.name(),
                    timeout,
                })
            }
        }
    }

    /// ApiVersions v3 (flexible, with the client software name), falling back to the version
    /// the broker names, or v0, when it answers UNSUPPORTED_VERSION in the v0 layout.
    async fn negotiate(&self) -> Result<(), KafkaError> {
        let request = ApiVersionsRequest {
            software_name: "zilla-rs".into(),
            software_version: env!("CARGO_PKG_VERSION").into(),
        };
        let mut version = codec::client_versions(ApiKey::ApiVersions).1;
        let timeout = self.inner.config.request_timeout;
        loop {
            let body = self.round_trip(&request, version, timeout).await?;
            let parsed = codec::decode_response::<ApiVersionsRequest>(version, body.clone());
            let response = match parsed {
                Ok(response) if response.error != ErrorCode::UNSUPPORTED_VERSION => response,
                other if version == 0 => other?,
                _ => {
                    let named = codec::decode_response::<ApiVersionsRequest>(0, body)
                        .ok()
                        .and_then(|r| {
                            r.apis
                                .iter()
                                .find(|(key, _, _)| *key == ApiKey::ApiVersions.code())
                                .map(|(_, _, max)| *max)
                        })
                        .filter(|max| (0..version).contains(max));
                    version = named.unwrap_or(0);
                    tracing::debug!(address = %self.inner.address, version, "retrying ApiVersions");
                    continue;
                }
            };
            response.error.check("ApiVersions")?;
            let versions = ApiVersions::negotiate(&response.apis);
            tracing::debug!(address = %self.inner.address, ?versions.chosen, "api versions negotiated");
            let _ = self.inner.versions.set(versions);
            return Ok(());
        }
    }
}

async fn write_frames<W: AsyncWrite>(
    write: W,
    mut queue: mpsc::Receiver<Bytes>,
    shared: Arc<Shared>,
) {
    tokio::pin!(write);
    let mut batch = Vec::with_capacity(64);
    loop {
        let received = tokio::select! {
            _ = shared.cancel.cancelled() => break,
            count = queue.recv_many(&mut batch, 64) => count,
        };
        if received == 0 {
            break;
        }
        let writing = async {
            for frame in batch.drain(..) {
                write.write_all(&frame).await?;
            }
            write.flush().await
        };
        let result = tokio::select! {
            _ = shared.cancel.cancelled() => break,
            result = writing => result,
        };
        if let Err(error) = result {
            tracing::debug!(%error, "kafka connection write failed");
            shared.close(CloseReason::Io(error.to_string()));
            break;
        }
    }
    let _ = write.shutdown().await;
}

async fn read_frames<R: AsyncRead>(read: R, shared: Arc<Shared>, max_frame_size: usize) {
    tokio::pin!(read);
    let reason = tokio::select! {
        _ = shared.cancel.cancelled() => CloseReason::Closed,
        reason = read_loop(&mut read, &shared, max_frame_size) => reason,
    };
    if !matches!(reason, CloseReason::Closed) {
        tracing::debug!(?reason, "kafka connection closed");
    }
    shared.close(reason);
}

async fn read_loop<R: AsyncRead + Unpin>(
    read: &mut R,
    shared: &Shared,
    max_frame_size: usize,
) -> CloseReason {
    // A frame's buffer grows as its bytes arrive, so a size prefix alone (up to
    // `max_frame_size`) never makes the connection allocate the whole frame.
    let mut frames = FrameReader::new(read, max_frame_size);
    loop {
        let frame = match frames.next().await {
            Ok(Some(frame)) => frame,
            Ok(None) => return CloseReason::Closed,
            Err(error) => return close_reason(error, frames.buffered_len()),
        };
        if frame.len() < 8 {
            return CloseReason::Malformed(format!("frame size {}", frame.len() - 4));
        }
        let mut frame = frame.slice(4..);
        let correlation = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
        let _ = frame.split_to(4);
        let taken = shared.pending().take(correlation);
        match taken {
            Taken::Deliver(reply) => {
                let _ = reply.send(Ok(frame));
            }
            Taken::Ignore => {}
            Taken::Unexpected => {
                return CloseReason::Malformed(format!(
                    "response with unexpected correlation id {correlation}"
                ));
            }
        }
    }
}

/// Why reading frames ended, `buffered` bytes of a frame read: a close (or an end of stream
/// without TLS's close_notify) before a frame's size prefix is whole ends the connection
/// cleanly, and one inside a frame, a negative size, or a short frame, is malformed.
fn close_reason(error: FrameError, buffered: usize) -> CloseReason {
    let inside = "connection closed inside a frame";
    match error {
        FrameError::Oversized { size, .. } if size < 0 => {
            CloseReason::Malformed(format!("frame size {size}"))
        }
        FrameError::Oversized { size, max } => CloseReason::FrameTooLarge { size, limit: max },
        FrameError::Truncated if buffered < 4 => CloseReason::Closed,
        FrameError::Truncated => CloseReason::Malformed(inside.into()),
        FrameError::Io(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
            if buffered < 4 {
                CloseReason::Closed
            } else {
                CloseReason::Malformed(inside.into())
            }
        }
        FrameError::Io(error) => CloseReason::Io(error.to_string()),
        FrameError::Short => CloseReason::Malformed("frame too short".into()),
    }
}

impl SaslChannel for Connection {
    async fn handshake(
        &self,
        request: &SaslHandshakeRequest,
    ) -> Result<SaslHandshakeResponse, KafkaError> {
        self.call(request).await
    }

    async fn authenticate(
        &self,
        request: &SaslAuthenticateRequest,
    ) -> Result<SaslAuthenticateResponse, KafkaError> {
        self.call(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::types::MetadataRequest;
    use tokio::io::AsyncReadExt;

    fn frame(correlation: i32, body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        out.extend_from_slice(&correlation.to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn started(max_frame_size: usize) -> (Connection, tokio::io::DuplexStream) {
        started_with(max_frame_size, &[(3, 0, 12)])
    }

    fn started_with(
        max_frame_size: usize,
        broker: &[(i16, i16, i16)],
    ) -> (Connection, tokio::io::DuplexStream) {
        let (near, far) = tokio::io::duplex(1 << 16);
        let config = ConnectionConfig {
            max_frame_size,
            request_timeout: Duration::from_secs(5),
            ..ConnectionConfig::default()
        };
        let connection = Connection::start(near, "test:0".into(), config);
        let versions = ApiVersions::negotiate(broker);
        let _ = connection.inner.versions.set(versions);
        (connection, far)
    }

    async fn read_request(far: &mut tokio::io::DuplexStream) -> (i32, Vec<u8>) {
        let mut size = [0u8; 4];
        far.read_exact(&mut size).await.unwrap();
        let mut request = vec![0u8; i32::from_be_bytes(size) as usize];
        far.read_exact(&mut request).await.unwrap();
        let correlation = i32::from_be_bytes([request[4], request[5], request[6], request[7]]);
        (correlation, request)
    }

    /// A produce with acks none, which Kafka does not answer (and tansu does).
    fn fire_and_forget_produce() -> crate::wire::types::ProduceRequest {
        use crate::wire::types::{Acks, ProduceRequest, TopicId};
        ProduceRequest {
            topic: "t".into(),
            topic_id: TopicId::default(),
            partition: 0,
            records: Bytes::new(),
            acks: Acks::None,
            timeout: Duration::from_secs(1),
            transactional_id: None,
        }
    }

    /// How reading ends: as the connection read its frames before it used the frame reader.
    #[test]
    fn reading_ends_for_the_reasons_it_did() {
        let eof = || FrameError::Io(std::io::ErrorKind::UnexpectedEof.into());
        assert!(matches!(
            close_reason(FrameError::Oversized { size: -5, max: 9 }, 4),
            CloseReason::Malformed(reason) if reason == "frame size -5"
        ));
        assert!(matches!(
            close_reason(FrameError::Oversized { size: 10, max: 9 }, 4),
            CloseReason::FrameTooLarge { size: 10, limit: 9 }
        ));
        assert!(matches!(
            close_reason(FrameError::Truncated, 2),
            CloseReason::Closed
        ));
        assert!(matches!(close_reason(eof(), 0), CloseReason::Closed));
        assert!(matches!(
            close_reason(FrameError::Truncated, 6),
            CloseReason::Malformed(_)
        ));
        assert!(matches!(close_reason(eof(), 6), CloseReason::Malformed(_)));
        assert!(matches!(
            close_reason(
                FrameError::Io(std::io::ErrorKind::ConnectionReset.into()),
                0
            ),
            CloseReason::Io(_)
        ));
    }

    #[tokio::test]
    async fn oversized_response_frames_are_refused() {
        let (connection, mut far) = started(64);
        let call = tokio::spawn({
            let connection = connection.clone();
            async move { connection.call(&MetadataRequest::default()).await }
        });
        let (correlation, _) = read_request(&mut far).await;
        far.write_all(&frame(correlation, &[0u8; 100]))
            .await
            .unwrap();
        let error = call.await.unwrap().unwrap_err();
        assert!(
            matches!(
                error,
                KafkaError::FrameTooLarge {
                    size: 104,
                    limit: 64
                }
            ),
            "{error}"
        );
        assert!(connection.is_closed());
    }

    #[tokio::test]
    async fn truncated_responses_are_errors() {
        let (connection, mut far) = started(1 << 20);
        let call = tokio::spawn({
            let connection = connection.clone();
            async move { connection.call(&MetadataRequest::default()).await }
        });
        let (correlation, _) = read_request(&mut far).await;
        // Metadata v12 with the brokers array cut short.
        far.write_all(&frame(correlation, &[0, 0, 0, 0, 0, 5, 0, 0]))
            .await
            .unwrap();
        let error = call.await.unwrap().unwrap_err();
        assert!(matches!(error, KafkaError::Malformed { .. }), "{error}");
    }

    #[tokio::test]
    async fn pipelined_responses_reach_their_callers_in_any_order() {
        let (connection, mut far) = started(1 << 20);
        let calls: Vec<_> = (0..3)
            .map(|i| {
                let connection = connection.clone();
                let topic = format!("t{i}");
                tokio::spawn(async move {
                    let request = MetadataRequest {
                        topics: Some(vec![topic.clone()]),
                        ..MetadataRequest::default()
                    };
                    (topic, connection.call(&request).await)
                })
            })
            .collect();
        let mut requests = Vec::new();
        for _ in 0..3 {
            requests.push(read_request(&mut far).await);
        }
        // Answer in reverse order, echoing each request's topic as the cluster id.
        for (correlation, request) in requests.iter().rev() {
            let at = request
                .windows(2)
                .rposition(|w| w[0] == b't' && w[1].is_ascii_digit())
                .unwrap();
            let topic = &request[at..at + 2];
            // Metadata v12: header tags, throttle, no brokers, cluster id, controller, no
            // topics, no authorized operations field, tags.
            let mut body = vec![0u8, 0, 0, 0, 0, 1, 3];
            body.extend_from_slice(topic);
            body.extend_from_slice(&[0, 0, 0, 1, 1, 0]);
            far.write_all(&frame(*correlation, &body)).await.unwrap();
        }
        for call in calls {
            let (topic, result) = call.await.unwrap();
            assert_eq!(result.unwrap().cluster_id.as_deref(), Some(topic.as_str()));
        }
    }

    #[tokio::test]
    async fn api_versions_falls_back_when_v3_is_refused() {
        let (near, mut far) = tokio::io::duplex(1 << 16);
        let opening = tokio::spawn(async move {
            let connection = Connection::start(near, "test:0".into(), ConnectionConfig::default());
            connection.negotiate().await.map(|()| connection)
        });
        let (correlation, request) = read_request(&mut far).await;
        assert_eq!(&request[..4], &[0, 18, 0, 3], "ApiVersions v3 first");
        // A broker without v3 answers in the v0 layout: UNSUPPORTED_VERSION and its ranges.
        let refusal = [0, 35, 0, 0, 0, 1, 0, 18, 0, 0, 0, 2];
        far.write_all(&frame(correlation, &refusal)).await.unwrap();

        let (correlation, request) = read_request(&mut far).await;
        assert_eq!(
            &request[..4],
            &[0, 18, 0, 2],
            "then the version the broker named"
        );
        let mut body = vec![0, 0, 0, 0, 0, 2];
        body.extend_from_slice(&[0, 18, 0, 0, 0, 2, 0, 3, 0, 0, 0, 12]);
        body.extend_from_slice(&[0, 0, 0, 0]);
        far.write_all(&frame(correlation, &body)).await.unwrap();

        let connection = opening.await.unwrap().unwrap();
        assert_eq!(connection.version(ApiKey::Metadata).unwrap(), 12);
        assert_eq!(connection.version(ApiKey::ApiVersions).unwrap(), 2);
        assert!(connection.version(ApiKey::Produce).is_err());
    }

    #[tokio::test]
    async fn answers_to_fire_and_forget_requests_are_dropped() {
        let (connection, mut far) = started_with(1 << 20, &[(0, 3, 9), (3, 0, 12)]);
        connection.send(&fire_and_forget_produce()).await.unwrap();
        let call = tokio::spawn({
            let connection = connection.clone();
            async move { connection.call(&MetadataRequest::default()).await }
        });
        let (unanswered, _) = read_request(&mut far).await;
        let (correlation, _) = read_request(&mut far).await;
        // Some brokers answer acks=0 produces anyway; that answer must not break the stream.
        far.write_all(&frame(unanswered, &[0, 0, 0, 0]))
            .await
            .unwrap();
        far.write_all(&frame(
            correlation,
            &[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 0],
        ))
        .await
        .unwrap();
        let metadata = call.await.unwrap().unwrap();
        assert!(metadata.brokers.is_empty());
        assert!(!connection.is_closed());
    }

    /// A broker that answers fire-and-forget requests (as tansu does) sees them in the order
    /// their answers are matched against: requests sent from many tasks at once must reach the
    /// socket in the order the connection registered them, or the answer to a fire-and-forget
    /// request that overtook a waiting one arrives after it was forgotten and closes the
    /// connection as unexpected.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_fire_and_forget_and_waiting_requests_keep_the_connection() {
        let (connection, far) = started_with(1 << 20, &[(0, 3, 9), (3, 0, 12)]);
        let broker = tokio::spawn(async move {
            let (mut read, mut write) = tokio::io::split(far);
            loop {
                let mut size = [0u8; 4];
                if read.read_exact(&mut size).await.is_err() {
                    return;
                }
                let mut request = vec![0u8; i32::from_be_bytes(size) as usize];
                if read.read_exact(&mut request).await.is_err() {
                    return;
                }
                let correlation =
                    i32::from_be_bytes([request[4], request[5], request[6], request[7]]);
                let body: &[u8] = if request[1] == 3 {
                    &[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 0]
                } else {
                    &[0, 0, 0, 0]
                };
                if write.write_all(&frame(correlation, body)).await.is_err() {
                    return;
                }
            }
        });
        let tasks: Vec<_> = (0..16)
            .map(|task| {
                let connection = connection.clone();
                tokio::spawn(async move {
                    let produce = fire_and_forget_produce();
                    for round in 0..500 {
                        if (round + task) % 2 == 0 {
                            connection.send(&produce).await?;
                        } else {
                            connection.call(&MetadataRequest::default()).await?;
                        }
                    }
                    Ok::<_, KafkaError>(())
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert!(!connection.is_closed());
        broker.abort();
    }
}
