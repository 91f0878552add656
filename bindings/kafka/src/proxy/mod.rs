//! The `proxy` kind: Kafka clients connect to the gateway, and every request they send is
//! forwarded to the brokers through the binding's exit (a `tcp` or `tls` client).
//!
//! ```yaml
//! tcp_server:
//!   type: tcp
//!   kind: server
//!   options:
//!     host: 0.0.0.0
//!     port:
//!       - 9092        # bootstrap
//!       - 9100-9109   # one per broker
//!   exit: kafka_proxy
//! kafka_proxy:
//!   type: kafka
//!   kind: proxy
//!   options:
//!     servers:
//!       - kafka.internal:9092
//!     external:
//!       host: kafka.example.com
//!       port: 9092
//!       ports: 9100-9109
//!   exit: tcp_client
//! tcp_client:
//!   type: tcp
//!   kind: client
//! ```
//!
//! A connection arriving on `external.port` goes to a bootstrap server (`servers`, tried in
//! turn); one arriving on a broker's port goes to that broker's own advertised address. Each
//! broker id named in a Metadata, FindCoordinator or DescribeCluster response gets a port of
//! `external.ports` (`low + id` when that is free, else the lowest free one) the first time it
//! is seen, without a restart, and the response names `external.host` and that port instead
//! of the broker's address ([`rewrite`]).
//!
//! Each client connection has its own broker connection. Frames are read whole and bounded
//! (`zilla.binding.kafka.proxy.request.max.bytes`, `...response.max.bytes`, Kafka's
//! `socket.request.max.bytes` default of 100 MiB each); an oversized or malformed frame closes
//! that connection only. Requests go out as they came, with their correlation ids; responses
//! are matched to them in order, at most 4096 waiting per connection (the client's reads stop
//! until answers come back). Frames that arrive together (a client pipelining requests, a
//! broker answering several at once) leave together in one write, never waiting for more.
//! Only responses that name brokers are decoded: every other API, version and record set
//! (Produce, Fetch) passes through as the same bytes, unknown API keys included. ApiVersions
//! answers are narrowed only for the three rewritten APIs, to the versions decoded here.
//!
//! # Authentication and topic allow-lists
//!
//! ```yaml
//! guards:
//!   alice:
//!     type: inline
//!     options:
//!       identity: alice
//!       credentials: ${{env.ALICE_PASSWORD}}
//!   gateway:
//!     type: inline
//!     options:
//!       identity: zilla
//!       credentials: ${{env.BROKER_PASSWORD}}
//! bindings:
//!   kafka_proxy:
//!     type: kafka
//!     kind: proxy
//!     options:
//!       servers: [kafka.internal:9092]
//!       external: {host: kafka.example.com, port: 9092, ports: 9100-9109}
//!       authentication:                 # clients authenticate to the gateway
//!         mechanisms: [scram-sha-512, plain]
//!         guards: [alice]
//!       authorization:                  # the gateway authenticates to the brokers
//!         gateway:
//!           credentials:
//!             mechanism: scram-sha-512
//!             username: "{identity}"
//!             password: "{credentials}"
//!     routes:                           # the topics each identity may use
//!       - when:
//!           - topic: orders.*
//!         guarded:
//!           alice: []
//!         exit: tcp_client
//! ```
//!
//! - `options.authentication`: clients authenticate with SASL (`plain`, `scram-sha-256`,
//!   `scram-sha-512`, `oauthbearer`) checked against `guards` ([`auth`]): an `inline` guard
//!   holds one user and its password; a `jwt` guard verifies a bearer token, sent with
//!   `oauthbearer` (RFC 7628) or as the PLAIN password, and its roles claim (`scope` by
//!   default) gives the roles routes' `guarded` check. Until a client has
//!   authenticated only ApiVersions is forwarded; a wrong password is answered with
//!   SASL_AUTHENTICATION_FAILED and the connection closed. With `mutual` TLS in a `tls` server
//!   in front, the client certificate's `x509` guard session counts for `guarded` as well.
//!   Without `authentication`, clients' own SASL exchanges (SaslHandshake v1,
//!   SaslAuthenticate) pass through to the broker like any other request.
//! - `options.authorization`: the gateway's own SASL credentials toward the brokers, from one
//!   guard's configured identity and secret, exactly as a kafka `client`'s. Every broker
//!   connection is authenticated with them before a client request reaches it.
//! - `routes`: a topic allow-list ([`topics`]): a client may use a topic when a route's `when`
//!   matches it (`*` wildcards; no `when` matches every topic) and the client holds the
//!   route's `guarded` guards and roles. The binding-level `exit`, when given, allows every
//!   topic, as the last route of any binding does. Every route names the same exit. A
//!   forbidden topic gets Kafka's per-topic error (TOPIC_AUTHORIZATION_FAILED) in the answer
//!   and the connection stays open; answers listing topics nobody named (OffsetFetch for a
//!   whole group, Metadata for every topic, group members' subscriptions and assignments)
//!   keep only the allowed ones. [`topics`] has the table of every API forwarded and what
//!   happens to its topics; any other API is left out of ApiVersions and refused.
//!
//! OAUTHBEARER at the edge is checked with librdkafka (confluent-kafka's `oauth_cb` handing
//! pyjwt-signed tokens), and the kafka `client`'s OAUTHBEARER is tested against this edge:
//! no broker available to the tests (tansu) implements OAUTHBEARER.
//!
//! Not supported yet: SNI-based broker routing (one TLS listener, the broker chosen by the
//! server name), re-authentication on an open connection (clients
//! are told a session lifetime of 0; the connection closes when the guard session expires),
//! and SaslHandshake v0 (unframed SASL).

mod auth;
mod batches;
mod brokers;
mod denied;
mod members;
mod message;
mod rewrite;
pub mod telemetry;
mod topics;

use std::collections::VecDeque;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use schemars::JsonSchema;
use serde::Deserialize;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{Notify, Semaphore};
use zilla_engine::BuildError;
use zilla_engine::binding::{Binding, BuildContext};
use zilla_engine::guard::Authorization;
use zilla_engine::pattern::Pattern;
use zilla_engine::stream::{
    AsyncIo, BoxFuture, ByteStream, Bytes, BytesHandler, StreamError, StreamInfo,
};

use crate::wire::frame::{self, FrameError, FrameReader, Outbox};
pub use auth::{AuthenticationOptions, EdgeMechanism};
use auth::{EdgeAuth, Exchange, Step};
use brokers::{BrokerAddress, Brokers};
use telemetry::ProxyMetrics;
use topics::{Checked, Fixup, TopicAccess};

use crate::config::{KafkaAuthorization, KafkaCondition};
use crate::wire;

/// `options` of a kafka `proxy`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaProxyOptions {
    /// Bootstrap servers of the cluster behind the gateway, as `host:port`, reached through
    /// the exit.
    #[schemars(length(min = 1))]
    pub servers: Vec<String>,
    /// Where clients reach the gateway.
    pub external: ExternalOptions,
    /// The gateway's own SASL credentials toward the brokers, from one guard (as a kafka
    /// `client`'s): `{<guard>: {credentials: {mechanism, username, password}}}`, where
    /// `{identity}` and `{credentials}` are the guard's configured identity and secret.
    #[schemars(extend("maxProperties" = 1))]
    pub authorization: Option<std::collections::BTreeMap<String, KafkaAuthorization>>,
    /// How clients authenticate to the gateway (SASL, checked against guards). Without it,
    /// clients' own SASL exchanges pass through to the brokers.
    pub authentication: Option<AuthenticationOptions>,
}

/// How clients reach the brokers through the gateway.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExternalOptions {
    /// The host name or address clients are given for every broker.
    pub host: String,
    /// The bootstrap port: connections arriving on it go to `servers`.
    pub port: u16,
    /// The ports given to brokers, `"low-high"`: a connection arriving on a broker's port
    /// goes to that broker. The server in front must listen on all of them.
    pub ports: String,
}

/// The largest frame an unauthenticated client may send: Kafka's default
/// `sasl.server.max.receive.size`.
const MAX_SASL_RECEIVE: usize = 512 * 1024;
/// The most requests waiting for an answer on one connection.
const MAX_IN_FLIGHT: usize = 4096;
/// Kafka's `socket.request.max.bytes` default.
const DEFAULT_MAX_FRAME: u64 = 100 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn parse_ports(text: &str) -> Option<RangeInclusive<u16>> {
    let (low, high) = text.split_once('-')?;
    let low: u16 = low.trim().parse().ok()?;
    let high: u16 = high.trim().parse().ok()?;
    (low > 0 && low <= high).then_some(low..=high)
}

/// A binding whose handler is all there is.
struct Passive;

impl Binding for Passive {}

/// Builds a kafka `proxy`.
pub(crate) fn build(context: &mut BuildContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
    let options: KafkaProxyOptions = context.options()?;
    let exit = proxy_exit(context)?;
    let connector = context.exit::<Bytes>(&exit)?;
    let access = if context.config().routes.is_empty() {
        None
    } else {
        let routes = zilla_engine::route::Routes::build(
            context.config(),
            |_| Ok(()),
            |condition: KafkaCondition| {
                condition
                    .topic
                    .map(|topic| Pattern::compile(&topic, None))
                    .transpose()
            },
        )?;
        Some(TopicAccess::new(routes))
    };
    let broker_sasl =
        crate::credentials::sasl_config(context, None, options.authorization.as_ref())?;
    let edge = options
        .authentication
        .as_ref()
        .map(|authentication| EdgeAuth::build(context, authentication))
        .transpose()?;
    let Some(ports) = parse_ports(&options.external.ports) else {
        return Err(BuildError::at(
            "options.external.ports",
            "expected a port range `low-high`",
        ));
    };
    if ports.contains(&options.external.port) {
        return Err(BuildError::at(
            "options.external.port",
            "the bootstrap port must lie outside `external.ports`",
        ));
    }
    let mut servers = Vec::new();
    for (index, server) in options.servers.iter().enumerate() {
        let parsed = server
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host.to_owned(), port.parse::<u16>().ok()?)))
            .filter(|(host, _)| !host.is_empty());
        let Some((host, port)) = parsed else {
            return Err(BuildError::at(
                format!("options.servers[{index}]"),
                "expected `host:port`",
            ));
        };
        servers.push(BrokerAddress { host, port });
    }
    if servers.is_empty() {
        return Err(BuildError::at("options.servers", "name a bootstrap server"));
    }
    let properties = context.properties();
    let max_request = properties
        .u64(
            "zilla.binding.kafka.proxy.request.max.bytes",
            DEFAULT_MAX_FRAME,
        )
        .min(i32::MAX as u64) as usize;
    let max_response = properties
        .u64(
            "zilla.binding.kafka.proxy.response.max.bytes",
            DEFAULT_MAX_FRAME,
        )
        .min(i32::MAX as u64) as usize;
    let metrics = ProxyMetrics::new(&context.metrics(), &context.config().telemetry_attributes);
    let proxy = Arc::new(Proxy {
        connector,
        access,
        edge,
        broker_sasl,
        servers,
        next_server: AtomicUsize::new(0),
        external_host: options.external.host.clone(),
        bootstrap_port: options.external.port,
        brokers: Brokers::new(ports),
        max_request,
        max_response,
        metrics,
    });
    context.publish::<Bytes>(Arc::new(ProxyHandler(proxy)));
    Ok(Arc::new(Passive))
}

/// The one exit every request leaves by: the binding's `exit` and every route's, which must
/// name the same one (a proxy reaches one cluster; routes only say which topics may be used).
fn proxy_exit(context: &BuildContext<'_>) -> Result<String, BuildError> {
    let config = context.config();
    let mut exit = config.exit.clone();
    for (index, route) in config.routes.iter().enumerate() {
        match &exit {
            None => exit = Some(route.exit.clone()),
            Some(known) if *known != route.exit => {
                return Err(BuildError::at(
                    format!("routes[{index}].exit"),
                    format!(
                        "every route of a kafka proxy leads to the same exit (`{known}`): routes choose topics, not clusters"
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    exit.ok_or_else(|| BuildError::at("", "a kafka proxy needs an `exit` (a tcp or tls client)"))
}

struct Proxy {
    connector: Arc<dyn BytesHandler>,
    /// The topic allow-list, when the binding has routes.
    access: Option<TopicAccess>,
    /// Client authentication at the gateway.
    edge: Option<EdgeAuth>,
    /// The gateway's own credentials toward the brokers.
    broker_sasl: Option<wire::SaslConfig>,
    servers: Vec<BrokerAddress>,
    next_server: AtomicUsize,
    external_host: String,
    bootstrap_port: u16,
    brokers: Brokers,
    max_request: usize,
    max_response: usize,
    metrics: ProxyMetrics,
}

/// The `bytes` handler the proxy publishes.
struct ProxyHandler(Arc<Proxy>);

impl BytesHandler for ProxyHandler {
    fn accept(&self, stream: ByteStream) -> BoxFuture<'_, Result<(), StreamError>> {
        Box::pin(self.0.clone().serve(stream))
    }

    fn connect(&self, info: StreamInfo) -> BoxFuture<'_, Result<ByteStream, StreamError>> {
        let handler: Arc<dyn BytesHandler> = Arc::new(ProxyHandler(self.0.clone()));
        Box::pin(async move { zilla_engine::stream::connect_via_accept(handler, info) })
    }
}

/// One request waiting for its answer.
#[derive(Debug, Clone)]
struct Pending {
    correlation_id: i32,
    api_key: i16,
    api_version: i16,
    /// False for Produce with acks=0, which Kafka does not answer (some brokers do).
    answered: bool,
    /// When it left for the broker.
    sent: Instant,
    /// How the answer is fixed up for topics the request was stripped of.
    fixup: Option<Box<Fixup>>,
    /// The answer made here for a request never sent to the broker (every topic it names
    /// is forbidden); it goes to the client once every earlier request is answered.
    local: Option<bytes::Bytes>,
}

/// The ApiVersions key, whose answer the proxy rewrites.
const API_VERSIONS: i16 = 18;

type ClientReader = FrameReader<ReadHalf<Box<dyn AsyncIo>>>;
type Writer = WriteHalf<Box<dyn AsyncIo>>;

/// Counts an open client connection for as long as it lives.
struct ConnectionGauge<'a>(&'a ProxyMetrics);

impl Drop for ConnectionGauge<'_> {
    fn drop(&mut self) {
        self.0.connections(-1);
    }
}

fn protocol(error: FrameError) -> StreamError {
    match error {
        FrameError::Io(error) => StreamError::Io(error),
        other => StreamError::Protocol(other.to_string()),
    }
}

impl Proxy {
    async fn serve(self: Arc<Self>, stream: ByteStream) -> Result<(), StreamError> {
        self.metrics.connections(1);
        let _gauge = ConnectionGauge(&self.metrics);
        let port = stream.info.destination.map(|address| address.port());
        let upstream = match port {
            Some(port) if port != self.bootstrap_port && self.brokers.in_range(port) => {
                let Some((id, address)) = self.brokers.broker_at(port) else {
                    return Err(StreamError::Protocol(format!(
                        "no broker has been given port {port} yet"
                    )));
                };
                tracing::debug!(broker = id, host = %address.host, port = address.port, "proxying to broker");
                self.open(&address).await?
            }
            _ => self.open_bootstrap().await?,
        };
        let mut broker = upstream.io;
        if let Some(sasl) = &self.broker_sasl {
            // The gateway's own credentials: the broker connection is authenticated before
            // any of the client's requests reach it.
            let channel = wire::StreamChannel::new(broker, self.max_response);
            let authenticated =
                tokio::time::timeout(CONNECT_TIMEOUT, wire::sasl_authenticate(&channel, sasl))
                    .await;
            match authenticated {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%error, "kafka proxy cannot authenticate to the broker");
                    return Err(StreamError::Upstream(error.to_string()));
                }
                Err(_) => {
                    return Err(StreamError::Upstream(
                        "authenticating to the broker timed out".into(),
                    ));
                }
            }
            broker = channel.into_inner();
        }
        let result = self
            .relay(stream.io, broker, stream.info.authorization.clone())
            .await;
        if let Err(error) = &result {
            tracing::debug!(%error, "kafka proxy connection closed");
        }
        result
    }

    async fn open(&self, address: &BrokerAddress) -> Result<ByteStream, StreamError> {
        let info = StreamInfo {
            authority: Some(address.host.clone()),
            port: Some(address.port),
            ..StreamInfo::default()
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, self.connector.connect(info)).await {
            Ok(result) => result,
            Err(_) => Err(StreamError::Upstream(format!(
                "connecting to {}:{} timed out",
                address.host, address.port
            ))),
        }
    }

    async fn open_bootstrap(&self) -> Result<ByteStream, StreamError> {
        let start = self.next_server.fetch_add(1, Ordering::Relaxed);
        let mut last = None;
        for offset in 0..self.servers.len() {
            let server = &self.servers[(start + offset) % self.servers.len()];
            match self.open(server).await {
                Ok(stream) => return Ok(stream),
                Err(error) => {
                    tracing::debug!(host = %server.host, port = server.port, %error, "bootstrap server unreachable");
                    last = Some(error);
                }
            }
        }
        Err(last.unwrap_or_else(|| StreamError::Upstream("no bootstrap server".into())))
    }

    /// The version range the proxy offers for an API, given the broker's: narrowed to what the
    /// topic allow-list reads and to the SASL exchange the proxy answers itself.
    fn api_range(&self, api_key: i16, min: i16, max: i16) -> Option<(i16, i16)> {
        let (mut min, mut max) = (min, max);
        // With topic routes, an API not forwarded is left out (`?`).
        if self.access.is_some()
            && let Some(highest) = topics::forwarded(api_key)?
        {
            max = max.min(highest);
        }
        if self.edge.is_some() && Exchange::handles(api_key) {
            // The proxy's own SASL: framed SaslHandshake (v1) and the SaslAuthenticate
            // versions it decodes, whatever the broker speaks.
            let (low, high) = wire::request_schema_versions(api_key)?;
            min = if api_key == 17 { 1 } else { low };
            max = high;
        }
        Some((min, max))
    }

    /// Answers the client's SASL exchange; ApiVersions goes to the broker meanwhile. `None`
    /// when the client left before authenticating.
    async fn authenticate(
        &self,
        edge: &EdgeAuth,
        client: &mut ClientReader,
        client_write: &mut Writer,
        broker: &mut ClientReader,
        broker_write: &mut Writer,
        authorization: &Authorization,
    ) -> Result<Option<auth::Authenticated>, StreamError> {
        let mut exchange = Exchange::new(edge);
        while let Some(frame) = client.next().await.map_err(protocol)? {
            let header = frame::request_header(&frame).map_err(protocol)?;
            self.metrics.request(header.api_key, frame.len());
            if header.api_key == API_VERSIONS {
                let request = Pending {
                    correlation_id: header.correlation_id,
                    api_key: header.api_key,
                    api_version: header.api_version,
                    answered: true,
                    sent: Instant::now(),
                    fixup: None,
                    local: None,
                };
                write_frame(broker_write, &frame).await?;
                let Some(answer) = broker.next().await.map_err(protocol)? else {
                    return Err(StreamError::Upstream("the broker closed".into()));
                };
                if frame::response_correlation_id(&answer).map_err(protocol)?
                    != header.correlation_id
                {
                    return Err(StreamError::Protocol(
                        "the broker answered another request".into(),
                    ));
                }
                let out = self.answer(&request, answer, authorization)?;
                write_frame(client_write, &out).await?;
                continue;
            }
            let step = exchange
                .answer(header, &frame)
                .map_err(StreamError::Protocol)?;
            let (reply, outcome) = match step {
                Step::Continue(reply) => (reply, None),
                Step::Done(reply, who) => (reply, Some(Ok(who))),
                Step::Fail(reply, reason) => (reply, Some(Err(reason))),
            };
            if let Some(offset) = rewrite::body_offset(header.api_key, header.api_version, &reply) {
                self.metrics.response(
                    header.api_key,
                    header.api_version,
                    reply.len(),
                    &reply[offset..],
                );
            }
            write_frame(client_write, &reply).await?;
            match outcome {
                None => {}
                Some(Ok(who)) => {
                    tracing::debug!(guard = %who.guard, identity = who.session.identity().unwrap_or_default(), "kafka client authenticated");
                    return Ok(Some(who));
                }
                Some(Err(reason)) => {
                    tracing::info!(%reason, "kafka client authentication failed");
                    return Err(StreamError::Protocol(reason));
                }
            }
        }
        Ok(None)
    }

    /// Forwards requests and answers until either side closes or misbehaves.
    async fn relay(
        &self,
        client: Box<dyn AsyncIo>,
        broker: Box<dyn AsyncIo>,
        mut authorization: Authorization,
    ) -> Result<(), StreamError> {
        let (client_read, mut client_write) = tokio::io::split(client);
        let (broker_read, mut broker_write) = tokio::io::split(broker);
        // Until the client is authenticated its frames are SASL messages: bounded as a broker
        // bounds them (`sasl.server.max.receive.size`), not by what an authenticated client may
        // produce.
        let first_limit = match self.edge {
            Some(_) => self.max_request.min(MAX_SASL_RECEIVE),
            None => self.max_request,
        };
        let mut client_frames = FrameReader::new(client_read, first_limit);
        let mut broker_frames = FrameReader::new(broker_read, self.max_response);
        let mut expires = None;
        if let Some(edge) = &self.edge {
            let Some(who) = self
                .authenticate(
                    edge,
                    &mut client_frames,
                    &mut client_write,
                    &mut broker_frames,
                    &mut broker_write,
                    &authorization,
                )
                .await?
            else {
                return Ok(());
            };
            expires = who.session.expires_at();
            authorization.insert(who.guard, who.session);
            client_frames.set_max(self.max_request);
        }
        let authorization = authorization;
        let pending = Mutex::new(VecDeque::<Pending>::new());
        let permits = Semaphore::new(MAX_IN_FLIGHT);
        let answered_here = Notify::new();

        let requests = async {
            let mut to_broker = Outbox::default();
            loop {
                // Requests that came in together go to the broker in one write; the write
                // happens before waiting for more, so none waits behind a quiet client.
                let frame = match client_frames.buffered().map_err(protocol)? {
                    Some(frame) if !to_broker.full() => frame,
                    buffered => {
                        to_broker.flush(&mut broker_write).await?;
                        match buffered {
                            Some(frame) => frame,
                            None => match client_frames.next().await.map_err(protocol)? {
                                Some(frame) => frame,
                                None => break,
                            },
                        }
                    }
                };
                let header = frame::request_header(&frame).map_err(protocol)?;
                if self.edge.is_some() && Exchange::handles(header.api_key) {
                    return Err(StreamError::Protocol(
                        "re-authentication on an open connection is not supported".into(),
                    ));
                }
                let (frame, fixup, local) = match &self.access {
                    None => (frame, None, None),
                    Some(access) => match topics::check(access, &authorization, header, &frame) {
                        Checked::Forward {
                            frame: rewritten,
                            fixup,
                        } => (rewritten.unwrap_or(frame), fixup.map(Box::new), None),
                        Checked::Answer(answer) => (frame, None, Some(answer)),
                        Checked::Refuse(reason) => {
                            tracing::info!(%reason, "kafka request refused; closing the connection");
                            return Err(StreamError::Protocol(reason));
                        }
                    },
                };
                let answered = local.is_some()
                    || header.api_key != 0
                    || frame::produce_acks(&frame, header.api_version) != Some(0);
                if answered {
                    match permits.try_acquire() {
                        Ok(permit) => permit.forget(),
                        Err(_) => {
                            // The broker answers only what it was sent.
                            to_broker.flush(&mut broker_write).await?;
                            permits
                                .acquire()
                                .await
                                .map_err(|_| StreamError::Stopped)?
                                .forget();
                        }
                    }
                }
                let forward = local.is_none();
                {
                    let mut pending = lock(&pending);
                    // Unanswered acks=0 produces are forgotten once the queue is full.
                    if pending.len() >= MAX_IN_FLIGHT
                        && let Some(index) = pending.iter().position(|p| !p.answered)
                    {
                        pending.remove(index);
                    }
                    pending.push_back(Pending {
                        correlation_id: header.correlation_id,
                        api_key: header.api_key,
                        api_version: header.api_version,
                        answered,
                        sent: Instant::now(),
                        fixup,
                        local,
                    });
                }
                self.metrics.request(header.api_key, frame.len());
                if forward {
                    if header.api_key == 0 {
                        // What the broker gets: a request stripped of forbidden topics counts
                        // only the allowed ones.
                        self.metrics.produced(header.api_version, &frame);
                    }
                    to_broker.push(frame);
                } else {
                    to_broker.flush(&mut broker_write).await?;
                    answered_here.notify_one();
                }
            }
            to_broker.flush(&mut broker_write).await?;
            Ok::<(), StreamError>(())
        };

        let responses = async {
            let mut to_client = Outbox::default();
            loop {
                self.send_here(&mut to_client, &permits, take_local(&pending));
                // Answers that came in together go to the client in one write.
                let buffered = match broker_frames.buffered().map_err(protocol)? {
                    Some(frame) if !to_client.full() => Some(frame),
                    buffered => {
                        to_client.flush(&mut client_write).await?;
                        buffered
                    }
                };
                let frame = match buffered {
                    Some(frame) => frame,
                    None => {
                        // Answers made here come first: any of them waiting was sent before
                        // the broker's next answer was asked for.
                        let next = tokio::select! {
                            biased;
                            () = answered_here.notified() => continue,
                            next = broker_frames.next() => next,
                        };
                        match next.map_err(protocol)? {
                            Some(frame) => frame,
                            None => break,
                        }
                    }
                };
                let correlation_id = frame::response_correlation_id(&frame).map_err(protocol)?;
                let (earlier, request) = take_pending(&pending, correlation_id)?;
                self.send_here(&mut to_client, &permits, earlier);
                let Some(request) = request else {
                    // An answer to an acks=0 produce already forgotten: pass it on as is.
                    to_client.push(frame);
                    continue;
                };
                if request.answered {
                    permits.add_permits(1);
                }
                to_client.push(self.answer(&request, frame, &authorization)?);
            }
            to_client.flush(&mut client_write).await?;
            Ok::<(), StreamError>(())
        };

        let expiry = async {
            match expires {
                Some(at) => {
                    let left = at
                        .duration_since(SystemTime::now())
                        .unwrap_or(Duration::ZERO);
                    tokio::time::sleep(left).await;
                }
                None => std::future::pending::<()>().await,
            }
        };

        tokio::select! {
            result = requests => result,
            result = responses => result,
            () = expiry => Err(StreamError::Protocol("the client's session expired".into())),
        }
    }

    /// The response to hand the client: rewritten when it names brokers or must name the
    /// topics its request was stripped of.
    fn answer(
        &self,
        request: &Pending,
        frame: bytes::Bytes,
        authorization: &Authorization,
    ) -> Result<bytes::Bytes, StreamError> {
        self.metrics
            .duration(request.api_key, request.sent.elapsed());
        let Some(offset) = rewrite::body_offset(request.api_key, request.api_version, &frame)
        else {
            return Ok(frame);
        };
        self.metrics.response(
            request.api_key,
            request.api_version,
            frame.len(),
            &frame[offset..],
        );
        if request.api_key == 1 {
            self.metrics.fetched(request.api_version, &frame, offset);
        }
        let allows = |topic: &str| {
            self.access
                .as_ref()
                .is_none_or(|access| access.allows(topic, authorization))
        };
        if let Some(Fixup::Denied { api_key, denied }) = request.fixup.as_deref() {
            let body = frame.slice(offset..);
            return denied::merge(
                *api_key,
                request.api_version,
                &frame[4..offset],
                Some(&body),
                denied,
                &allows,
            )
            .map_err(|error| {
                tracing::warn!(%error, "kafka proxy cannot name refused topics in an answer; closing the connection");
                StreamError::Upstream(error)
            });
        }
        if let Some(Fixup::Members { api_key }) = request.fixup.as_deref() {
            let body = frame.slice(offset..);
            return members::narrow(*api_key, request.api_version, &frame[4..offset], &body, &allows)
                .map_err(|error| {
                    tracing::warn!(%error, "kafka proxy cannot read a group's members; closing the connection");
                    StreamError::Upstream(error)
                });
        }
        if let Some(fixup) = request.fixup.as_deref()
            && !matches!(fixup, Fixup::Metadata { .. })
        {
            return topics::fix_records(fixup, request.api_version, &frame, offset).map_err(
                |error| {
                    tracing::warn!(%error, "kafka proxy cannot name refused topics in an answer; closing the connection");
                    StreamError::Upstream(error)
                },
            );
        }
        if !rewrite::rewrites(request.api_key) {
            return Ok(frame);
        }
        let fix = |topics: &mut Vec<
            kafka_protocol::messages::metadata_response::MetadataResponseTopic,
        >| {
            self.metrics.metadata(topics);
            if let Some(fixup) = request.fixup.as_deref() {
                topics::fix_metadata(fixup, topics, &allows);
            }
        };
        let api_range = |api_key: i16, min: i16, max: i16| self.api_range(api_key, min, max);
        match rewrite::rewrite(
            request.api_key,
            request.api_version,
            &frame,
            offset,
            &self.external_host,
            &self.brokers,
            &api_range,
            Some(&fix),
        ) {
            Ok(out) => Ok(out),
            // An ApiVersions answer the client's version cannot decode names no broker (a
            // broker answers an unsupported ApiVersions version in v0's shape).
            Err(error) if request.api_key == API_VERSIONS => {
                tracing::debug!(%error, "ApiVersions answer passed on unchanged");
                Ok(frame)
            }
            Err(error) => {
                tracing::warn!(%error, "kafka proxy cannot rewrite a broker address; closing the connection");
                Err(StreamError::Upstream(error.to_string()))
            }
        }
    }
}

impl Proxy {
    /// Queues the answers made here for the client, counted as the broker's answers are, and
    /// frees their places in the queue.
    fn send_here(&self, to_client: &mut Outbox, permits: &Semaphore, answers: Vec<Pending>) {
        for request in answers {
            let Some(local) = request.local else {
                continue;
            };
            permits.add_permits(1);
            self.metrics
                .duration(request.api_key, request.sent.elapsed());
            if let Some(offset) = rewrite::body_offset(request.api_key, request.api_version, &local)
            {
                self.metrics.response(
                    request.api_key,
                    request.api_version,
                    local.len(),
                    &local[offset..],
                );
            }
            to_client.push(local);
        }
    }
}

/// Inspects one frame of untrusted bytes the way a proxy does, for fuzzing: the request
/// header and Produce `acks` of `frame` read as a request (and, for the APIs the topic
/// allow-list and the SASL exchange read, decoded and split as for a client allowed the topic
/// `orders`), and `frame` read as the response of `api_key` at `version`, rewritten when that
/// API names brokers (gateway host `proxy`, broker ports 9100-9103) or topics (narrowed to
/// `orders`). Malformed input is an error, never a panic.
pub fn inspect_frame(api_key: i16, version: i16, frame: &bytes::Bytes) -> Result<(), String> {
    if let Ok(header) = frame::request_header(frame)
        && header.api_key == 0
    {
        let _ = frame::produce_acks(frame, header.api_version);
    }
    if let Ok(header) = frame::request_header(frame) {
        let version = header.api_version;
        use kafka_protocol::messages as kp;
        let _ = match header.api_key {
            0 => message::decode_request::<kp::ProduceRequest>(0, version, frame).map(|_| ()),
            1 => message::decode_request::<kp::FetchRequest>(1, version, frame).map(|_| ()),
            3 => message::decode_request::<kp::MetadataRequest>(3, version, frame).map(|_| ()),
            17 => {
                message::decode_request::<kp::SaslHandshakeRequest>(17, version, frame).map(|_| ())
            }
            36 => message::decode_request::<kp::SaslAuthenticateRequest>(36, version, frame)
                .map(|_| ()),
            key if denied::SPLIT.contains(&key) => {
                denied::split(key, version, frame, &|topic| topic == "orders").map(|_| ())
            }
            _ => Ok(()),
        };
    }
    frame::response_correlation_id(frame).map_err(|error| error.to_string())?;
    let offset = rewrite::body_offset(api_key, version, frame).ok_or("no response body")?;
    let body = frame.slice(offset..);
    let only_orders = |topic: &str| topic == "orders";
    if denied::SPLIT.contains(&api_key) && api_key != 24 {
        denied::merge(
            api_key,
            version,
            &frame[4..offset],
            Some(&body),
            &[],
            &only_orders,
        )?;
    }
    if matches!(api_key, 11 | 14 | 15) {
        members::narrow(api_key, version, &frame[4..offset], &body, &only_orders)?;
    }
    if rewrite::rewrites(api_key) {
        rewrite::rewrite(
            api_key,
            version,
            frame,
            offset,
            "proxy",
            &Brokers::new(9100..=9103),
            &rewrite::as_broker_offers,
            None,
        )
        .map_err(|error| error.to_string())?;
    }
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// The answers made here that are next in line (no request still waiting for the broker
/// before them).
fn take_local(pending: &Mutex<VecDeque<Pending>>) -> Vec<Pending> {
    let mut pending = lock(pending);
    let mut ready = Vec::new();
    while pending.front().is_some_and(|p| p.local.is_some()) {
        ready.extend(pending.pop_front());
    }
    ready
}

/// The request `correlation_id` answers, after the answers made here that come before it,
/// dropping acks=0 produces the broker skipped. `None` when it answers nothing waiting (an
/// acks=0 produce forgotten earlier); an error when the broker skipped a request it must
/// answer.
fn take_pending(
    pending: &Mutex<VecDeque<Pending>>,
    correlation_id: i32,
) -> Result<(Vec<Pending>, Option<Pending>), StreamError> {
    let mut pending = lock(pending);
    let from_broker = |p: &Pending| p.local.is_none();
    let Some(index) = pending
        .iter()
        .position(|p| from_broker(p) && p.correlation_id == correlation_id)
    else {
        return if pending.iter().any(|p| p.answered && from_broker(p)) {
            Err(StreamError::Protocol(format!(
                "broker answered correlation id {correlation_id}, which no request carries"
            )))
        } else {
            Ok((Vec::new(), None))
        };
    };
    if pending
        .iter()
        .take(index)
        .any(|p| p.answered && from_broker(p))
    {
        return Err(StreamError::Protocol(format!(
            "broker answered correlation id {correlation_id} out of order"
        )));
    }
    let earlier = pending
        .drain(..index)
        .filter(|p| p.local.is_some())
        .collect();
    Ok((earlier, pending.pop_front()))
}

async fn write_frame(
    io: &mut WriteHalf<Box<dyn AsyncIo>>,
    frame: &[u8],
) -> Result<(), StreamError> {
    io.write_all(frame).await?;
    io.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(entries: &[(i32, bool)]) -> Mutex<VecDeque<Pending>> {
        Mutex::new(
            entries
                .iter()
                .map(|&(correlation_id, answered)| Pending {
                    correlation_id,
                    api_key: 0,
                    api_version: 9,
                    answered,
                    sent: Instant::now(),
                    fixup: None,
                    local: None,
                })
                .collect(),
        )
    }

    #[test]
    fn answers_match_in_order_and_skip_unanswered_produces() {
        let pending = waiting(&[(1, false), (2, true), (3, true)]);
        assert_eq!(
            take_pending(&pending, 2).unwrap().1.unwrap().correlation_id,
            2
        );
        assert!(
            take_pending(&pending, 9).is_err(),
            "unknown id with 3 waiting"
        );
        let pending = waiting(&[(1, true), (2, true)]);
        assert!(take_pending(&pending, 2).is_err(), "1 skipped");
        let pending = waiting(&[(1, false)]);
        assert_eq!(
            take_pending(&pending, 1).unwrap().1.unwrap().correlation_id,
            1
        );
        assert!(take_pending(&pending, 5).unwrap().1.is_none());
    }

    #[test]
    fn port_ranges_parse() {
        assert_eq!(parse_ports("9100-9109"), Some(9100..=9109));
        assert_eq!(parse_ports("9109-9100"), None);
        assert_eq!(parse_ports("0-1"), None);
        assert_eq!(parse_ports("9100"), None);
    }
}
