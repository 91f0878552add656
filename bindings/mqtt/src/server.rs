//! The `mqtt` server: speaks MQTT 3.1.1 and 5 to clients and opens `mqtt` sessions on its
//! routed exits.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};
use zilla_engine::components::Store;
use zilla_engine::guard::{Authorization, Guard};
use zilla_engine::pattern::Pattern;
use zilla_engine::route::Routes;
use zilla_engine::stream::{BoxFuture, StreamError, StreamInfo};

use crate::Lifecycle;
use crate::codec::{
    self, Ack, ConnAck, Connect, DecodeError, Decoder, Disconnect, Packet, Properties,
    PropertyContext, Publish, QoS, ReasonCode, SubAck, Subscribe, UnsubAck, Unsubscribe, Version,
    topic,
};
use crate::kind::{
    Acknowledgement, Delivery, EventReceiver, EventSender, Message, MqttHandler, MqttSession,
    OnSent, SessionBegin, SessionEnd, SessionEvent, SubscribeRequest, WillMessage, event_channel,
};
use crate::ownership::Ownership;

/// A compiled route condition.
#[derive(Debug)]
pub(crate) struct Condition {
    sessions: Option<Vec<Pattern>>,
    publish: Option<Vec<TopicPattern>>,
    subscribe: Option<Vec<TopicPattern>>,
}

/// A topic pattern of a route: `+` matches within one level, `#` anything.
#[derive(Debug)]
struct TopicPattern(regex::Regex);

impl TopicPattern {
    fn compile(pattern: &str) -> Result<Self, String> {
        let mut source = String::from("^");
        for part in pattern.split_inclusive(['+', '#']) {
            let (literal, wildcard) = match part.strip_suffix('+') {
                Some(literal) => (literal, "[^/]*"),
                None => match part.strip_suffix('#') {
                    Some(literal) => (literal, ".*"),
                    None => (part, ""),
                },
            };
            source.push_str(&regex::escape(literal));
            source.push_str(wildcard);
        }
        source.push('$');
        regex::Regex::new(&source)
            .map(TopicPattern)
            .map_err(|error| format!("invalid topic pattern `{pattern}`: {error}"))
    }

    fn matches(&self, topic: &str) -> bool {
        self.0.is_match(topic)
    }
}

impl Condition {
    pub(crate) fn compile(raw: crate::config::MqttCondition) -> Result<Self, String> {
        let topics = |list: Option<Vec<crate::config::MqttTopicCondition>>| {
            list.map(|list| {
                list.iter()
                    .map(|condition| TopicPattern::compile(&condition.topic))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
        };
        Ok(Self {
            sessions: raw
                .session
                .map(|list| {
                    list.iter()
                        .map(|condition| {
                            Pattern::compile(condition.client_id.as_deref().unwrap_or("*"), None)
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?,
            publish: topics(raw.publish)?,
            subscribe: topics(raw.subscribe)?,
        })
    }

    fn matches_session(&self, client_id: &str) -> bool {
        self.sessions
            .as_ref()
            .is_none_or(|patterns| patterns.iter().any(|p| p.matches(client_id)))
    }

    fn matches_publish(&self, topic: &str) -> bool {
        self.publish
            .as_ref()
            .is_some_and(|patterns| patterns.iter().any(|p| p.matches(topic)))
    }

    fn matches_subscribe(&self, filter: &str) -> bool {
        self.subscribe
            .as_ref()
            .is_some_and(|patterns| patterns.iter().any(|p| p.matches(filter)))
    }
}

/// Which CONNECT field carries the guard's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CredentialsField {
    Username,
    Password,
}

/// `options.authorization`: the guard and where its credentials are.
pub(crate) struct Credentials {
    pub guard_name: String,
    pub guard: Arc<dyn Guard>,
    pub field: CredentialsField,
    pub pattern: Pattern,
}

/// Limits and capabilities of a server.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub versions: Vec<Version>,
    pub maximum_packet_size: u32,
    pub receive_maximum: u16,
    pub topic_alias_maximum: u16,
    pub keep_alive_minimum: u16,
    pub keep_alive_maximum: u16,
    pub connect_timeout: Duration,
    pub maximum_qos: QoS,
    pub retain_available: bool,
    pub wildcard_available: bool,
    pub subscription_ids_available: bool,
    pub shared_available: bool,
    /// Deliveries in flight toward one client, whatever its receive maximum.
    pub inflight_maximum: u16,
    /// Bytes of a client's packets waiting for their exits' answers (QoS 1/2 publications,
    /// subscriptions, unsubscriptions) past which the server refuses more of them.
    pub pending_bytes_maximum: usize,
    /// Deliveries queued between an exit and one client.
    pub queue_capacity: usize,
}

/// The state shared by every connection of one server.
pub(crate) struct Shared {
    pub routes: Routes<Condition, (), Arc<dyn MqttHandler>>,
    /// `options.topics`: the model each publication to a matching topic must pass.
    pub topics: Vec<TopicContent>,
    pub settings: Settings,
    pub credentials: Option<Credentials>,
    pub lifecycle: Lifecycle,
    /// Which connection owns each client identifier (`options.store`, or a store of the
    /// server's own), so that a second connection with the same identifier takes the session
    /// over from the first (MQTT 5 §3.1.4-3).
    pub store: Arc<dyn Store>,
}

/// One entry of `options.topics`, its model built.
pub(crate) struct TopicContent {
    pub filter: String,
    pub validator: Option<Arc<dyn zilla_engine::components::Validator>>,
}

impl Shared {
    /// Refuses a payload that the model of the first topic entry matching `topic` refuses. A
    /// schema the payload names that the catalog has not fetched yet is awaited first, so a
    /// slow registry holds up this publication only, not the worker's other connections.
    async fn check_content(&self, topic_name: &str, payload: &[u8]) -> Result<(), Close> {
        let entry = self
            .topics
            .iter()
            .find(|entry| topic::matches(&entry.filter, topic_name));
        let Some(validator) = entry.and_then(|entry| entry.validator.as_ref()) else {
            return Ok(());
        };
        if let Some(fetching) = validator.fetch(payload) {
            fetching.await;
        }
        if let Err(reason) = validator.validate(payload) {
            tracing::debug!(topic = topic_name, %reason, "mqtt publication refused by its model");
            return Err(close(ReasonCode::PAYLOAD_FORMAT_INVALID));
        }
        Ok(())
    }
}

type Route<'a> = &'a zilla_engine::route::Route<Condition, (), Arc<dyn MqttHandler>>;

/// A response waiting for the exit, written in the order its request came.
enum Pending {
    PubAck(u16, Result<ReasonCode, StreamError>),
    PubRec(u16, Result<ReasonCode, StreamError>),
    SubAck(u16, Vec<ReasonCode>),
    UnsubAck(u16, Vec<ReasonCode>),
    /// The subscriber's PUBREC of a delivery is kept by the exits: PUBREL may go.
    PubRel(u16),
    /// The connection ends here, after the responses before (a 3.1.1 refusal).
    Close(ReasonCode),
}

/// The filters of one SUBSCRIBE routed to one exit, with their places in the SUBSCRIBE.
struct SubscribeGroup {
    exit_name: String,
    exit: Arc<dyn MqttHandler>,
    indexes: Vec<usize>,
    request: SubscribeRequest,
}

/// A delivery sent to the client and not fully acknowledged.
struct Outbound {
    acknowledged: Option<oneshot::Sender<()>>,
    released: bool,
}

/// Why a connection ends.
enum Close {
    /// After the client's DISCONNECT.
    Normal,
    /// With a DISCONNECT carrying this reason (MQTT 5) and the session ended abnormally.
    Reason(ReasonCode),
    /// The exit ended the session; tell the client why.
    Ended(ReasonCode, Option<String>),
    /// The connection is gone.
    Gone,
}

fn close(reason: ReasonCode) -> Close {
    Close::Reason(reason)
}

impl From<DecodeError> for Close {
    fn from(error: DecodeError) -> Self {
        tracing::debug!(%error, "mqtt packet refused");
        Close::Reason(error.reason)
    }
}

/// Bytes a connection reads at once. The buffer is reserved when a read is attempted and
/// given back whenever the read has to wait with nothing buffered, so an idle connection
/// (most of an MQTT server's) holds no read buffer.
const READ_CAPACITY: usize = 4096;

/// Bytes reserved at a time while CONNECT is read. A CONNECT is rarely more than a few
/// hundred bytes, and the buffer of every connection still connecting is held at once
/// (hundreds while a fleet reconnects), freed in between the allocations connecting leaves
/// behind, where the allocator keeps its pages: a larger CONNECT only takes more reads.
const CONNECT_READ_CAPACITY: usize = 256;

impl Shared {
    /// Serves one client connection until it ends.
    ///
    /// Not an `async fn`: its arguments would stay in its future for the connection's whole
    /// life. CONNECT is read and answered in a boxed future of its own, freed once the
    /// connection is open, so the future an idle connection holds keeps only the loop's state.
    pub(crate) fn serve<IO>(
        self: Arc<Self>,
        io: IO,
        info: Option<StreamInfo>,
        authorization: Authorization,
    ) -> impl Future<Output = Result<(), StreamError>> + Send
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin,
    {
        let (reader, writer) = tokio::io::split(io);
        let connecting = Box::pin(self.connect(reader, writer, info, authorization));
        async move {
            let Some((mut connection, mut reader, mut writer)) = connecting.await? else {
                return Ok(());
            };
            let close = connection.run(&mut reader, &mut writer).await;
            // Boxed for the same reason as CONNECT: a DISCONNECT with its properties is large.
            Box::pin(connection.close(close, &mut writer)).await;
            Ok(())
        }
    }

    /// Reads CONNECT and opens the connection; `None` when it is refused or never comes.
    async fn connect<R, W>(
        self: Arc<Self>,
        mut reader: R,
        mut writer: W,
        info: Option<StreamInfo>,
        authorization: Authorization,
    ) -> Result<Option<(Connection, R, W)>, StreamError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut decoder = Decoder::new(self.settings.maximum_packet_size);
        let mut buffer = BytesMut::new();
        let first = tokio::time::timeout(
            self.settings.connect_timeout,
            read_packet(
                &mut reader,
                &mut decoder,
                &mut buffer,
                CONNECT_READ_CAPACITY,
            ),
        )
        .await;
        let connect = match first {
            Ok(Ok(Some(Packet::Connect(connect)))) => connect,
            Ok(Err(error)) if error.reason == ReasonCode::UNSUPPORTED_PROTOCOL_VERSION => {
                // Answered as 3.1.1 does, the lowest version a client may understand.
                let refusal = Packet::ConnAck(ConnAck {
                    reason: error.reason,
                    ..ConnAck::default()
                });
                let _ = write_packet(&mut writer, &refusal, Version::V3_1_1).await;
                return Ok(None);
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, "mqtt CONNECT refused");
                return Ok(None);
            }
            _ => return Ok(None),
        };
        // Boxed: checking CONNECT and opening the session is large work, done once.
        let Some(mut connection) =
            Box::pin(self.open(connect, info, authorization, &mut writer)).await?
        else {
            return Ok(None);
        };
        connection.decoder = decoder;
        connection.buffer = buffer;
        Ok(Some((connection, reader, writer)))
    }

    /// Whether the routes lead to more than one exit, so that a connection may open sessions
    /// on exits other than its session route's.
    fn routes_many_exits(&self) -> bool {
        let mut exits = self.routes.iter().map(|route| route.exit_name.as_str());
        let first = exits.next();
        exits.any(|exit| Some(exit) != first)
    }

    fn route_session(&self, authorization: &Authorization, client_id: &str) -> Option<Route<'_>> {
        self.routes
            .resolve(Some(authorization), |c| c.matches_session(client_id))
    }

    /// Checks CONNECT, opens the session and answers CONNACK; `None` when refused.
    async fn open<W: AsyncWrite + Unpin>(
        self: Arc<Self>,
        connect: Box<Connect>,
        info: Option<StreamInfo>,
        mut authorization: Authorization,
        writer: &mut W,
    ) -> Result<Option<Connection>, StreamError> {
        // Unboxed here, so that the decoded packet's allocation is not held by the connection.
        let connect = *connect;
        let version = connect.version;
        let settings = &self.settings;
        let refuse = |reason: ReasonCode| {
            Packet::ConnAck(ConnAck {
                reason,
                ..ConnAck::default()
            })
        };
        macro_rules! refuse {
            ($reason:expr) => {{
                write_packet(writer, &refuse($reason), version).await?;
                return Ok(None);
            }};
        }
        if !settings.versions.contains(&version) {
            refuse!(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
        }
        if connect.properties.auth_method.is_some() {
            // Extended authentication is not offered: say so rather than ignore it.
            refuse!(ReasonCode::BAD_AUTHENTICATION_METHOD);
        }
        let mut assigned_client_id = None;
        let client_id = if connect.client_id.is_empty() {
            if version == Version::V3_1_1 && !connect.clean_start {
                refuse!(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
            }
            let generated = format!("zilla-{}", uuid::Uuid::new_v4().simple());
            assigned_client_id = Some(generated.clone());
            generated
        } else {
            connect.client_id.clone()
        };
        let mut username = connect.username.clone();
        let mut password = connect.password.clone();
        if let Some(credentials) = &self.credentials {
            let field = match credentials.field {
                CredentialsField::Username => username.take(),
                CredentialsField::Password => password
                    .take()
                    .and_then(|password| String::from_utf8(password.to_vec()).ok()),
            };
            let session = field
                .and_then(|value| credentials.pattern.captures(&value))
                .and_then(|captures| {
                    captures
                        .into_iter()
                        .find(|(name, _)| name == "credentials")
                        .map(|(_, value)| value)
                })
                .and_then(|value| credentials.guard.reauthorize(&value));
            match session {
                Some(session) => authorization.insert(credentials.guard_name.clone(), session),
                None => refuse!(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
            }
        }
        let Some(route) = self.route_session(&authorization, &client_id) else {
            refuse!(ReasonCode::NOT_AUTHORIZED);
        };
        let keep_alive = match version {
            Version::V5 if connect.keep_alive != 0 => connect
                .keep_alive
                .clamp(settings.keep_alive_minimum, settings.keep_alive_maximum),
            _ => connect.keep_alive,
        };
        let session_expiry = match version {
            Version::V5 => connect.properties.session_expiry.unwrap_or(0),
            Version::V3_1_1 if connect.clean_start => 0,
            Version::V3_1_1 => u32::MAX,
        };
        let will = connect.will.clone().map(|will| {
            let mut properties = will.properties;
            let delay = properties.will_delay.take().unwrap_or(0);
            properties.retain_allowed(PropertyContext::Publish);
            WillMessage {
                message: Message {
                    topic: will.topic,
                    qos: will.qos,
                    retain: will.retain,
                    payload: will.payload,
                    properties,
                },
                delay,
            }
        });
        if let Some(will) = &will {
            if will.message.qos > settings.maximum_qos {
                refuse!(ReasonCode::QOS_NOT_SUPPORTED);
            }
            if will.message.retain && !settings.retain_available {
                refuse!(ReasonCode::RETAIN_NOT_SUPPORTED);
            }
        }
        let Ok(ownership) = Ownership::claim(self.store.clone(), client_id.clone()) else {
            tracing::debug!(%client_id, "mqtt store full: connection refused as busy");
            refuse!(ReasonCode::SERVER_BUSY);
        };
        let (events, receiver) = event_channel(settings.queue_capacity);
        let begin = SessionBegin {
            client_id,
            clean_start: connect.clean_start,
            session_expiry,
            keep_alive,
            will,
            username: username.clone(),
            password: password.clone(),
            user_properties: connect.properties.user.clone(),
            authorization: authorization.clone(),
            info: info.clone(),
            events: events.clone(),
        };
        let exit_name = route.exit_name.clone();
        let (accepted, session) = match route.exit.session(begin).await {
            Ok(opened) => opened,
            Err(refused) => {
                let connack = ConnAck {
                    reason: refused.reason,
                    properties: Properties {
                        reason_string: refused.reason_string,
                        ..Properties::default()
                    },
                    ..ConnAck::default()
                };
                write_packet(writer, &Packet::ConnAck(connack), version).await?;
                return Ok(None);
            }
        };
        let maximum_qos = accepted.maximum_qos.min(settings.maximum_qos);
        let retain_available = accepted.retain_available && settings.retain_available;
        let capabilities = Capabilities {
            maximum_qos,
            retain_available,
            wildcard_available: accepted.wildcard_available && settings.wildcard_available,
            subscription_ids_available: accepted.subscription_ids_available
                && settings.subscription_ids_available,
            shared_available: accepted.shared_available && settings.shared_available,
        };
        let mut properties = Properties::default();
        if version == Version::V5 {
            let available = |flag: bool| (!flag).then_some(0);
            properties = Properties {
                assigned_client_id,
                server_keep_alive: (keep_alive != connect.keep_alive).then_some(keep_alive),
                session_expiry: accepted.session_expiry.filter(|&e| e != session_expiry),
                receive_maximum: Some(settings.receive_maximum),
                maximum_qos: (maximum_qos != QoS::ExactlyOnce).then_some(maximum_qos as u8),
                retain_available: available(retain_available),
                maximum_packet_size: Some(settings.maximum_packet_size),
                topic_alias_maximum: (settings.topic_alias_maximum > 0)
                    .then_some(settings.topic_alias_maximum),
                wildcard_available: available(capabilities.wildcard_available),
                subscription_ids_available: available(capabilities.subscription_ids_available),
                shared_available: available(capabilities.shared_available),
                ..Properties::default()
            };
        }
        let connack = ConnAck {
            session_present: accepted.session_present && !connect.clean_start,
            reason: ReasonCode::SUCCESS,
            properties,
        };
        write_packet(writer, &Packet::ConnAck(connack), version).await?;
        // A resumed session's QoS 2 deliveries waiting for PUBCOMP are released again.
        let mut outbound = BTreeMap::new();
        if !connect.clean_start {
            for &packet_id in &accepted.awaiting_completion {
                write_packet(writer, &Packet::PubRel(Ack::success(packet_id)), version).await?;
                outbound.insert(
                    packet_id,
                    Outbound {
                        acknowledged: None,
                        released: true,
                    },
                );
            }
        }
        let client_receive_maximum = connect.properties.receive_maximum.unwrap_or(u16::MAX);
        // A resumed session's unacknowledged deliveries come again with their identifiers:
        // no other delivery takes one meanwhile. As many as deliveries may be in flight.
        let reserved: BTreeSet<u16> = if connect.clean_start {
            BTreeSet::new()
        } else {
            accepted
                .awaiting_acknowledgement
                .iter()
                .copied()
                .filter(|&id| id != 0 && !outbound.contains_key(&id))
                .take(usize::from(self.settings.inflight_maximum))
                .collect()
        };
        // A resumed session's QoS 2 publications waiting for PUBREL stay in flight.
        let released: BTreeSet<u16> = if connect.clean_start {
            BTreeSet::new()
        } else {
            accepted.awaiting_release.iter().copied().collect()
        };
        let mut sessions = Sessions::default();
        sessions.insert(exit_name, Arc::<dyn MqttSession>::from(session));
        // Past CONNECT, MQTT owns the connection's idleness: 1.5 times the keep-alive, as it
        // specifies, and none for a keep-alive of 0. Counted on what the client sends, the
        // transport's timer is the keep-alive timer; the connection times the client itself
        // only where that timer does not run (no transport, or one held by a WebSocket).
        let transport_keeps_alive = info.as_ref().is_some_and(|info| {
            info.idle
                .set_read_timeout(Duration::from_millis(u64::from(keep_alive) * 1500))
        });
        let later = self.routes_many_exits().then(|| {
            Box::new(LaterSessions {
                username,
                password,
                user_properties: connect.properties.user.clone(),
                info,
            })
        });
        Ok(Some(Connection {
            shared: self.clone(),
            ownership,
            version,
            clean_start: connect.clean_start,
            session_expiry,
            keep_alive,
            transport_keeps_alive,
            later,
            authorization,
            capabilities,
            events,
            receiver,
            sessions,
            decoder: Decoder::new(self.settings.maximum_packet_size),
            buffer: BytesMut::new(),
            pending: Responses::default(),
            inbound_inflight: u16::try_from(released.len()).unwrap_or(u16::MAX),
            closing: false,
            tracked: Some(Box::new(Tracked {
                aliases: BTreeMap::new(),
                released,
                outbound,
                reserved,
            }))
            .filter(|tracked| !tracked.is_empty()),
            next_packet_id: 1,
            outbound_maximum: client_receive_maximum
                .min(self.settings.inflight_maximum)
                .max(1),
            client_maximum_packet_size: connect.properties.maximum_packet_size.unwrap_or(u32::MAX),
        }))
    }
}

/// What the server and its session exit support together.
#[derive(Debug, Clone, Copy)]
struct Capabilities {
    maximum_qos: QoS,
    retain_available: bool,
    wildcard_available: bool,
    subscription_ids_available: bool,
    shared_available: bool,
}

/// The sessions of a connection by exit name: nearly always one, kept inline; others, opened
/// when a publish or subscribe is routed to another exit, in a list.
#[derive(Default)]
struct Sessions {
    first: Option<(String, Arc<dyn MqttSession>)>,
    others: Vec<(String, Arc<dyn MqttSession>)>,
}

impl Sessions {
    fn get(&self, exit_name: &str) -> Option<&Arc<dyn MqttSession>> {
        self.first
            .iter()
            .chain(&self.others)
            .find(|(name, _)| name == exit_name)
            .map(|(_, session)| session)
    }

    fn insert(&mut self, exit_name: String, session: Arc<dyn MqttSession>) {
        if self.first.is_none() {
            self.first = Some((exit_name, session));
        } else {
            self.others.push((exit_name, session));
        }
    }

    fn all(&self) -> impl Iterator<Item = &Arc<dyn MqttSession>> {
        self.first
            .iter()
            .chain(&self.others)
            .map(|(_, session)| session)
    }
}

/// Responses waiting for exits, in request order. The queue, whose creation allocates, exists
/// only while a response waits: most connections of an idle fleet have none. Boxed, so that
/// a connection without one holds a pointer rather than the queue.
#[derive(Default)]
struct Responses(Option<Box<Waiting>>);

#[derive(Default)]
struct Waiting {
    responses: FuturesOrdered<BoxFuture<'static, Pending>>,
    /// The size of the packet each response answers, in the same order.
    sizes: VecDeque<usize>,
    /// Their sum: what the exits hold for this client until they answer.
    bytes: usize,
}

impl Responses {
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |waiting| waiting.responses.len())
    }

    /// Bytes of the packets whose responses wait.
    fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |waiting| waiting.bytes)
    }

    /// Queues the response to a packet of `size` bytes.
    fn push_back(&mut self, size: usize, response: BoxFuture<'static, Pending>) {
        let waiting = self.0.get_or_insert_with(Box::default);
        waiting.responses.push_back(response);
        waiting.sizes.push_back(size);
        waiting.bytes += size;
    }

    /// The next response once it is ready; never, while none waits (the connection's loop
    /// asks again after each packet it handles).
    fn next(&mut self) -> impl Future<Output = Pending> + '_ {
        std::future::poll_fn(move |cx| {
            let Some(waiting) = self.0.as_mut() else {
                return Poll::Pending;
            };
            let polled = waiting.responses.poll_next_unpin(cx);
            if polled.is_ready() {
                let size = waiting.sizes.pop_front().unwrap_or(0);
                waiting.bytes = waiting.bytes.saturating_sub(size);
            }
            if waiting.responses.is_empty() {
                self.0 = None;
            }
            match polled {
                Poll::Ready(Some(response)) => Poll::Ready(response),
                Poll::Ready(None) | Poll::Pending => Poll::Pending,
            }
        })
    }
}

/// One connected client.
struct Connection {
    shared: Arc<Shared>,
    /// This connection's claim on its client identifier: lost when another connection takes
    /// the session over.
    ownership: Ownership,
    version: Version,
    clean_start: bool,
    session_expiry: u32,
    keep_alive: u16,
    /// Whether the transport's idle timer times the keep-alive (see `open`); a read that
    /// times out then means the keep-alive passed.
    transport_keeps_alive: bool,
    /// What opening a session on another exit takes from CONNECT; `None` where the routes
    /// lead to one exit only (nearly always), so that the connection does not keep it.
    later: Option<Box<LaterSessions>>,
    authorization: Authorization,
    capabilities: Capabilities,
    events: EventSender,
    receiver: EventReceiver,
    /// Open sessions by exit name: the session route's exit first, others opened when a
    /// publish or subscribe is routed to them.
    sessions: Sessions,
    decoder: Decoder,
    buffer: BytesMut,
    /// Responses waiting for exits, in request order.
    pending: Responses,
    /// QoS 1 and 2 publications received and not fully acknowledged.
    inbound_inflight: u16,
    /// A 3.1.1 refusal is queued, which ends the connection in its turn: nothing the client
    /// sends after it is handled (not even DISCONNECT), since its answer could not be sent.
    closing: bool,
    /// Topic aliases and packets in flight; made when the first is, and freed once none is
    /// left, so that the idle connections of a fleet hold none of it.
    tracked: Option<Box<Tracked>>,
    next_packet_id: u16,
    outbound_maximum: u16,
    client_maximum_packet_size: u32,
}

/// A connection's topic aliases and packets in flight. The maps and sets are B-trees: half
/// the size of a hash map when empty, which most of them are.
#[derive(Default)]
struct Tracked {
    /// Topic aliases the client set.
    aliases: BTreeMap<u16, String>,
    /// QoS 2 packet identifiers answered with PUBREC and waiting for PUBREL.
    released: BTreeSet<u16>,
    /// Deliveries in flight toward the client.
    outbound: BTreeMap<u16, Outbound>,
    /// Identifiers of a resumed session's deliveries that are to come again with them.
    reserved: BTreeSet<u16>,
}

/// What a connection that tracks nothing reads.
static NOTHING_TRACKED: Tracked = Tracked {
    aliases: BTreeMap::new(),
    released: BTreeSet::new(),
    outbound: BTreeMap::new(),
    reserved: BTreeSet::new(),
};

impl Tracked {
    fn is_empty(&self) -> bool {
        self.aliases.is_empty()
            && self.released.is_empty()
            && self.outbound.is_empty()
            && self.reserved.is_empty()
    }
}

/// What CONNECT gave that a session opened later, on another exit, is opened with.
struct LaterSessions {
    username: Option<String>,
    password: Option<bytes::Bytes>,
    user_properties: Vec<(String, String)>,
    info: Option<StreamInfo>,
}

/// Tells an MQTT 5 client why its connection ends, when it is not its own DISCONNECT or a
/// broken connection, and shuts the connection down.
async fn say_goodbye<W: AsyncWrite + Unpin>(writer: &mut W, close: &Close, version: Version) {
    let disconnect = match close {
        Close::Reason(reason) if version == Version::V5 => Some(Disconnect::with_reason(*reason)),
        Close::Ended(reason, reason_string) if version == Version::V5 => Some(Disconnect {
            reason: *reason,
            properties: Properties {
                reason_string: reason_string.clone(),
                ..Properties::default()
            },
        }),
        _ => None,
    };
    if let Some(disconnect) = disconnect {
        let _ = write_packet(writer, &Packet::Disconnect(disconnect), version).await;
    }
    let _ = writer.shutdown().await;
}

/// Reads until one packet is decoded; `Ok(None)` at the end of the stream.
async fn read_packet<R: AsyncRead + Unpin>(
    reader: &mut R,
    decoder: &mut Decoder,
    buffer: &mut BytesMut,
    capacity: usize,
) -> Result<Option<Packet>, DecodeError> {
    loop {
        if let Some(packet) = decoder.decode(buffer)? {
            return Ok(Some(packet));
        }
        match read_idle(reader, buffer, capacity).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

/// Reads into `buffer` as `read_buf` does, with room for `capacity` more bytes, but gives
/// an empty buffer's memory back while the read waits: the next attempt reserves it again.
/// Not an `async fn`, whose future would keep its arguments besides the closure's.
fn read_idle<'a, R: AsyncRead + Unpin>(
    reader: &'a mut R,
    buffer: &'a mut BytesMut,
    capacity: usize,
) -> impl Future<Output = std::io::Result<usize>> + 'a {
    std::future::poll_fn(move |cx| {
        if buffer.capacity() == buffer.len() {
            buffer.reserve(capacity);
        }
        let polled = pin!(reader.read_buf(&mut *buffer)).poll(cx);
        if polled.is_pending() && buffer.is_empty() {
            *buffer = BytesMut::new();
        }
        polled
    })
}

async fn write_packet<W: AsyncWrite + Unpin>(
    writer: &mut W,
    packet: &Packet,
    version: Version,
) -> Result<(), StreamError> {
    let mut out = BytesMut::new();
    codec::encode(packet, version, &mut out)
        .map_err(|error| StreamError::Protocol(error.to_string()))?;
    writer.write_all(&out).await?;
    writer.flush().await?;
    Ok(())
}

impl Connection {
    /// What the connection tracks, to read.
    fn tracked(&self) -> &Tracked {
        self.tracked.as_deref().unwrap_or(&NOTHING_TRACKED)
    }

    /// What the connection tracks, to take from: nothing is made for it (a client's PUBACK or
    /// PUBREL of an unknown identifier must not cost an allocation).
    fn tracked_mut(&mut self) -> Option<&mut Tracked> {
        self.tracked.as_deref_mut()
    }

    /// What the connection tracks, to change: made on first use.
    fn tracking(&mut self) -> &mut Tracked {
        self.tracked.get_or_insert_with(Box::default)
    }

    /// Frees what the connection tracks once it is empty.
    fn settle_tracked(&mut self) {
        if self
            .tracked
            .as_ref()
            .is_some_and(|tracked| tracked.is_empty())
        {
            self.tracked = None;
        }
    }

    async fn run<R, W>(&mut self, reader: &mut R, writer: &mut W) -> Close
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let keep_alive =
            (self.keep_alive > 0).then(|| Duration::from_millis(u64::from(self.keep_alive) * 1500));
        // Only where the transport does not time the keep-alive; boxed, so that connections
        // whose transport does (nearly all) do not carry a timer in their future.
        let mut own_timer = keep_alive
            .filter(|_| !self.transport_keeps_alive)
            .map(|period| Box::pin(tokio::time::sleep(period)));
        let pending_limit = usize::from(self.shared.settings.receive_maximum) + 64;
        let retired = self.shared.lifecycle.retired();
        // Packets already buffered behind CONNECT.
        if let Err(close) = Box::pin(self.drain(writer)).await {
            return close;
        }
        loop {
            // Closing, what the client sends is read and dropped: its end of stream and the
            // keep-alive (timed by the read) still end the connection if the turn never comes.
            let reading = self.closing || self.pending.len() < pending_limit;
            self.settle_tracked();
            let delivering = self.tracked().outbound.len() < usize::from(self.outbound_maximum);
            if self.ownership.is_lost() {
                return Close::Ended(ReasonCode::SESSION_TAKEN_OVER, None);
            }
            tokio::select! {
                read = read_idle(reader, &mut self.buffer, READ_CAPACITY), if reading => {
                    match read {
                        Err(error)
                            if self.transport_keeps_alive
                                && zilla_engine::idle::is_idle_timeout(&error) =>
                        {
                            return close(ReasonCode::KEEP_ALIVE_TIMEOUT);
                        }
                        Ok(0) | Err(_) => return Close::Gone,
                        Ok(_) => {}
                    }
                    if let (Some(timer), Some(period)) = (own_timer.as_mut(), keep_alive) {
                        timer.as_mut().reset(Instant::now() + period);
                    }
                    // Handling a packet, a response or a delivery is boxed while it runs: its
                    // future is many times the size of the loop's, which idle connections
                    // would otherwise all hold.
                    if let Err(close) = Box::pin(self.drain(writer)).await {
                        return close;
                    }
                }
                pending = self.pending.next() => {
                    if let Err(close) = Box::pin(self.respond(pending, writer)).await {
                        return close;
                    }
                }
                Some(event) = self.receiver.recv(), if delivering => {
                    if let Err(close) = Box::pin(self.deliver(event, writer)).await {
                        return close;
                    }
                }
                () = poll_timer(&mut own_timer) => return close(ReasonCode::KEEP_ALIVE_TIMEOUT),
                _ = retired.cancelled() => return close(ReasonCode::SERVER_SHUTTING_DOWN),
                _ = self.ownership.lost() => {
                    return Close::Ended(ReasonCode::SESSION_TAKEN_OVER, None);
                }
            }
        }
    }

    /// Ends the connection for `close`: tells an MQTT 5 client why, and ends the sessions.
    async fn close<W: AsyncWrite + Unpin>(self, close: Close, writer: &mut W) {
        if let Close::Ended(ReasonCode::SESSION_TAKEN_OVER, _) = close {
            // The session goes on in the connection that took it over: its exits must not
            // end it as an abnormal close would (no will with a delay, no expiry).
            let end = SessionEnd {
                reason: ReasonCode::SESSION_TAKEN_OVER,
                session_expiry: None,
            };
            for session in self.sessions.all() {
                session.end(end.clone());
            }
        }
        say_goodbye(writer, &close, self.version).await;
        // Sessions dropped here without `end` end abnormally: their wills are published.
        drop(self);
    }

    /// Writes `packet`; borrows only the writer, so a connection need not be `Sync`.
    fn write<'w, W: AsyncWrite + Unpin>(
        &self,
        writer: &'w mut W,
        packet: Packet,
    ) -> impl Future<Output = Result<(), Close>> + 'w {
        let version = self.version;
        async move {
            write_packet(writer, &packet, version)
                .await
                .map_err(|_| Close::Gone)
        }
    }

    /// Whether a packet of `size` bytes that waits for an exit's answer fits under the byte
    /// bound of what waits: one always does when nothing waits. The server keeps reading past
    /// the bound (a client's acknowledgements must get through, and an exit's answer may
    /// depend on them) and refuses such packets instead.
    fn has_room_for(&self, size: usize) -> bool {
        self.pending.len() == 0
            || self.pending.bytes().saturating_add(size)
                <= self.shared.settings.pending_bytes_maximum
    }

    /// Handles every whole packet in the buffer.
    async fn drain<W: AsyncWrite + Unpin>(&mut self, writer: &mut W) -> Result<(), Close> {
        loop {
            if self.closing {
                self.buffer.clear();
                return Ok(());
            }
            let buffered = self.buffer.len();
            let Some(packet) = self.decoder.decode(&mut self.buffer)? else {
                return Ok(());
            };
            let size = buffered - self.buffer.len();
            self.handle(packet, size, writer).await?;
        }
    }

    /// Handles `packet`, which took `size` bytes on the wire.
    async fn handle<W: AsyncWrite + Unpin>(
        &mut self,
        packet: Packet,
        size: usize,
        writer: &mut W,
    ) -> Result<(), Close> {
        match packet {
            Packet::Publish(publish) => self.publish(publish, size, writer).await,
            Packet::PubRel(ack) => {
                let reason = if self
                    .tracked_mut()
                    .is_some_and(|tracked| tracked.released.remove(&ack.packet_id))
                {
                    self.inbound_inflight = self.inbound_inflight.saturating_sub(1);
                    for session in self.sessions.all() {
                        session.released(ack.packet_id);
                    }
                    ReasonCode::SUCCESS
                } else {
                    ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
                };
                let comp = Ack {
                    reason,
                    ..Ack::success(ack.packet_id)
                };
                self.write(writer, Packet::PubComp(comp)).await
            }
            Packet::PubAck(ack) => {
                if let Some(outbound) = self
                    .tracked_mut()
                    .and_then(|tracked| tracked.outbound.remove(&ack.packet_id))
                    && let Some(acknowledged) = outbound.acknowledged
                {
                    let _ = acknowledged.send(());
                }
                Ok(())
            }
            Packet::PubRec(ack) => {
                let Some(outbound) = self
                    .tracked
                    .as_mut()
                    .and_then(|tracked| tracked.outbound.get_mut(&ack.packet_id))
                else {
                    let rel = Ack {
                        reason: ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
                        ..Ack::success(ack.packet_id)
                    };
                    return self.write(writer, Packet::PubRel(rel)).await;
                };
                let kept: Vec<_> = if ack.reason.is_error() {
                    Vec::new()
                } else {
                    self.sessions
                        .all()
                        .map(|session| session.delivery_received(ack.packet_id))
                        .collect()
                };
                if let Some(acknowledged) = outbound.acknowledged.take() {
                    let _ = acknowledged.send(());
                }
                if ack.reason.is_error() {
                    if let Some(tracked) = self.tracked_mut() {
                        tracked.outbound.remove(&ack.packet_id);
                    }
                    return Ok(());
                }
                outbound.released = true;
                // PUBREL lets the subscriber hand the message over: it goes once the exits
                // keep the PUBREC, so that a resumed session does not send the message again.
                let packet_id = ack.packet_id;
                self.pending.push_back(
                    size,
                    Box::pin(async move {
                        futures_util::future::join_all(kept).await;
                        Pending::PubRel(packet_id)
                    }),
                );
                Ok(())
            }
            Packet::PubComp(ack) => {
                if self
                    .tracked()
                    .outbound
                    .get(&ack.packet_id)
                    .is_some_and(|outbound| outbound.released)
                {
                    if let Some(tracked) = self.tracked_mut() {
                        tracked.outbound.remove(&ack.packet_id);
                    }
                    for session in self.sessions.all() {
                        session.delivery_completed(ack.packet_id);
                    }
                }
                Ok(())
            }
            Packet::Subscribe(subscribe) => self.subscribe(subscribe, size).await,
            Packet::Unsubscribe(unsubscribe) => self.unsubscribe(unsubscribe, size).await,
            Packet::PingReq => self.write(writer, Packet::PingResp).await,
            Packet::Disconnect(disconnect) => {
                if self.session_expiry == 0
                    && disconnect.properties.session_expiry.is_some_and(|e| e > 0)
                {
                    return Err(close(ReasonCode::PROTOCOL_ERROR));
                }
                let end = SessionEnd {
                    reason: disconnect.reason,
                    session_expiry: disconnect.properties.session_expiry,
                };
                for session in self.sessions.all() {
                    session.end(end.clone());
                }
                Err(Close::Normal)
            }
            // No extended authentication was agreed in CONNECT, so AUTH is a protocol error;
            // so is a second CONNECT and anything only a server sends.
            Packet::Auth(_)
            | Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp => Err(close(ReasonCode::PROTOCOL_ERROR)),
        }
    }

    /// The session on the exit of `route`, opened now if this is its first use.
    async fn session_for(
        &mut self,
        exit_name: &str,
        exit: Arc<dyn MqttHandler>,
    ) -> Result<Arc<dyn MqttSession>, ReasonCode> {
        if let Some(session) = self.sessions.get(exit_name) {
            return Ok(session.clone());
        }
        let Some(later) = &self.later else {
            // The routes lead to the session route's exit only: not reached.
            tracing::debug!(
                exit = exit_name,
                "mqtt route to a second exit of a one-exit server"
            );
            return Err(ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR);
        };
        let begin = SessionBegin {
            client_id: self.ownership.client_id().to_owned(),
            clean_start: self.clean_start,
            session_expiry: self.session_expiry,
            keep_alive: self.keep_alive,
            will: None,
            username: later.username.clone(),
            password: later.password.clone(),
            user_properties: later.user_properties.clone(),
            authorization: self.authorization.clone(),
            info: later.info.clone(),
            events: self.events.clone(),
        };
        match exit.session(begin).await {
            Ok((_, session)) => {
                let session = Arc::<dyn MqttSession>::from(session);
                self.sessions.insert(exit_name.to_owned(), session.clone());
                Ok(session)
            }
            Err(refused) => Err(refused.reason),
        }
    }

    async fn publish<W: AsyncWrite + Unpin>(
        &mut self,
        mut publish: Publish,
        size: usize,
        writer: &mut W,
    ) -> Result<(), Close> {
        let v5 = self.version == Version::V5;
        if let Some(alias) = publish.properties.topic_alias.take() {
            if alias > self.shared.settings.topic_alias_maximum {
                return Err(close(ReasonCode::TOPIC_ALIAS_INVALID));
            }
            if publish.topic.is_empty() {
                match self.tracked().aliases.get(&alias) {
                    Some(topic) => publish.topic = topic.clone(),
                    None => return Err(close(ReasonCode::PROTOCOL_ERROR)),
                }
            } else {
                self.tracking().aliases.insert(alias, publish.topic.clone());
            }
        }
        if !publish.properties.subscription_ids.is_empty() {
            return Err(close(ReasonCode::PROTOCOL_ERROR));
        }
        if publish.qos > self.capabilities.maximum_qos {
            return Err(close(ReasonCode::QOS_NOT_SUPPORTED));
        }
        if publish.retain && !self.capabilities.retain_available {
            return Err(close(ReasonCode::RETAIN_NOT_SUPPORTED));
        }
        self.shared
            .check_content(&publish.topic, &publish.payload)
            .await?;
        let packet_id = publish.packet_id.unwrap_or(0);
        if publish.qos != QoS::AtMostOnce {
            if publish.qos == QoS::ExactlyOnce && self.tracked().released.contains(&packet_id) {
                // A redelivery of a message already taken: acknowledge it again only.
                let rec = Packet::PubRec(Ack::success(packet_id));
                return self.write(writer, rec).await;
            }
            if self.inbound_inflight >= self.shared.settings.receive_maximum {
                return Err(close(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED));
            }
            self.inbound_inflight += 1;
        }
        if publish.qos != QoS::AtMostOnce && !self.has_room_for(size) {
            // Answered in turn with the publications before it (PUBACKs keep their order):
            // quota exceeded; 3.1.1 knows no refusal, so its connection closes at that turn.
            self.closing = !v5;
            let refused = Ok(ReasonCode::QUOTA_EXCEEDED);
            let response = if publish.qos == QoS::ExactlyOnce {
                Pending::PubRec(packet_id, refused)
            } else {
                Pending::PubAck(packet_id, refused)
            };
            self.pending
                .push_back(0, Box::pin(std::future::ready(response)));
            return Ok(());
        }
        let route = self
            .shared
            .routes
            .resolve(Some(&self.authorization), |c| {
                c.matches_publish(&publish.topic)
            })
            .map(|route| (route.exit_name.clone(), route.exit.clone()));
        let session = match route {
            Some((name, exit)) => self.session_for(&name, exit).await,
            None => Err(ReasonCode::NOT_AUTHORIZED),
        };
        let keeper = session.as_ref().ok().cloned();
        let acknowledgement: Acknowledgement = match session {
            Ok(session) => {
                let message = Message {
                    topic: publish.topic,
                    qos: publish.qos,
                    retain: publish.retain,
                    payload: publish.payload,
                    properties: publish.properties,
                };
                let published = if message.qos == QoS::ExactlyOnce {
                    session.publish_exactly_once(packet_id, message).await
                } else {
                    session.publish(message).await
                };
                match published {
                    Ok(acknowledgement) => acknowledgement,
                    Err(error) => Box::pin(async move { Err(error) }),
                }
            }
            Err(reason) => {
                if !v5 {
                    // 3.1.1 has no way to refuse a publication but closing.
                    return Err(close(reason));
                }
                Box::pin(async move { Ok(reason) })
            }
        };
        match publish.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.pending.push_back(
                size,
                Box::pin(async move { Pending::PubAck(packet_id, acknowledgement.await) }),
            ),
            QoS::ExactlyOnce => self.pending.push_back(
                size,
                Box::pin(async move {
                    let result = acknowledgement.await;
                    // The exit keeps the identifier before PUBREC tells the client it may
                    // release: a resend after a reconnection is then known.
                    if let (Ok(reason), Some(session)) = (&result, &keeper)
                        && !reason.is_error()
                    {
                        session.received(packet_id).await;
                    }
                    Pending::PubRec(packet_id, result)
                }),
            ),
        }
        Ok(())
    }

    async fn subscribe(&mut self, subscribe: Subscribe, size: usize) -> Result<(), Close> {
        let subscription_id = subscribe.properties.subscription_ids.first().copied();
        if subscription_id.is_some() && !self.capabilities.subscription_ids_available {
            return Err(close(ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED));
        }
        let count = subscribe.filters.len();
        let packet_id = subscribe.packet_id;
        if !self.has_room_for(size) {
            // Every filter refused, in turn with the SUBSCRIBEs before it (0x80 in 3.1.1).
            let reasons = vec![ReasonCode::QUOTA_EXCEEDED; count];
            let response = Pending::SubAck(packet_id, reasons);
            self.pending
                .push_back(0, Box::pin(std::future::ready(response)));
            return Ok(());
        }
        let mut reasons = vec![ReasonCode::UNSPECIFIED_ERROR; count];
        // Filters grouped by exit, with their index in the SUBSCRIBE.
        let mut groups: Vec<SubscribeGroup> = Vec::new();
        for (index, (filter, mut options)) in subscribe.filters.into_iter().enumerate() {
            let refusal = if !topic::valid_filter(&filter) {
                Some(ReasonCode::TOPIC_FILTER_INVALID)
            } else if topic::shared(&filter).is_some() && !self.capabilities.shared_available {
                Some(ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED)
            } else if topic::has_wildcard(&filter) && !self.capabilities.wildcard_available {
                Some(ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED)
            } else {
                None
            };
            if let Some(reason) = refusal {
                reasons[index] = reason;
                continue;
            }
            options.qos = options.qos.min(self.capabilities.maximum_qos);
            let Some(route) = self
                .shared
                .routes
                .resolve(Some(&self.authorization), |c| c.matches_subscribe(&filter))
            else {
                reasons[index] = ReasonCode::NOT_AUTHORIZED;
                continue;
            };
            match groups
                .iter_mut()
                .find(|group| group.exit_name == route.exit_name)
            {
                Some(group) => {
                    group.indexes.push(index);
                    group.request.filters.push((filter, options));
                }
                None => groups.push(SubscribeGroup {
                    exit_name: route.exit_name.clone(),
                    exit: route.exit.clone(),
                    indexes: vec![index],
                    request: SubscribeRequest {
                        subscription_id,
                        filters: vec![(filter, options)],
                        user_properties: subscribe.properties.user.clone(),
                    },
                }),
            }
        }
        let mut waiting = Vec::new();
        for SubscribeGroup {
            exit_name,
            exit,
            indexes,
            request,
        } in groups
        {
            let acknowledgement = match self.session_for(&exit_name, exit).await {
                Ok(session) => session.subscribe(request).await.ok(),
                Err(reason) => {
                    for &index in &indexes {
                        reasons[index] = reason;
                    }
                    continue;
                }
            };
            waiting.push((indexes, acknowledgement));
        }
        self.pending.push_back(
            size,
            Box::pin(async move {
                for (indexes, acknowledgement) in waiting {
                    let granted = match acknowledgement {
                        Some(acknowledgement) => acknowledgement.await.ok(),
                        None => None,
                    };
                    for (position, index) in indexes.into_iter().enumerate() {
                        reasons[index] = granted
                            .as_ref()
                            .and_then(|granted| granted.get(position).copied())
                            .unwrap_or(ReasonCode::UNSPECIFIED_ERROR);
                    }
                }
                Pending::SubAck(packet_id, reasons)
            }),
        );
        Ok(())
    }

    async fn unsubscribe(&mut self, unsubscribe: Unsubscribe, size: usize) -> Result<(), Close> {
        let count = unsubscribe.filters.len();
        if !self.has_room_for(size) {
            let response = if self.version == Version::V5 {
                let reasons = vec![ReasonCode::UNSPECIFIED_ERROR; count];
                Pending::UnsubAck(unsubscribe.packet_id, reasons)
            } else {
                // 3.1.1 has no way to refuse an unsubscription but closing, in its turn.
                self.closing = true;
                Pending::Close(ReasonCode::QUOTA_EXCEEDED)
            };
            self.pending
                .push_back(0, Box::pin(std::future::ready(response)));
            return Ok(());
        }
        let mut reasons = vec![ReasonCode::NO_SUBSCRIPTION_EXISTED; count];
        let mut waiting = Vec::new();
        for (index, filter) in unsubscribe.filters.into_iter().enumerate() {
            if !topic::valid_filter(&filter) {
                reasons[index] = ReasonCode::TOPIC_FILTER_INVALID;
                continue;
            }
            let Some(route) = self
                .shared
                .routes
                .resolve(Some(&self.authorization), |c| c.matches_subscribe(&filter))
            else {
                reasons[index] = ReasonCode::NOT_AUTHORIZED;
                continue;
            };
            // A filter on an exit never used has no subscription there.
            let Some(session) = self.sessions.get(&route.exit_name) else {
                continue;
            };
            let acknowledgement = session
                .unsubscribe(vec![filter], unsubscribe.properties.user.clone())
                .await
                .ok();
            waiting.push((index, acknowledgement));
        }
        let packet_id = unsubscribe.packet_id;
        self.pending.push_back(
            size,
            Box::pin(async move {
                for (index, acknowledgement) in waiting {
                    let answered = match acknowledgement {
                        Some(acknowledgement) => acknowledgement.await.ok(),
                        None => None,
                    };
                    reasons[index] = answered
                        .and_then(|answered| answered.first().copied())
                        .unwrap_or(ReasonCode::UNSPECIFIED_ERROR);
                }
                Pending::UnsubAck(packet_id, reasons)
            }),
        );
        Ok(())
    }

    async fn respond<W: AsyncWrite + Unpin>(
        &mut self,
        pending: Pending,
        writer: &mut W,
    ) -> Result<(), Close> {
        let v5 = self.version == Version::V5;
        let outcome = |result: Result<ReasonCode, StreamError>| match result {
            Ok(reason) => Ok(reason),
            Err(error) => {
                tracing::debug!(%error, "mqtt publish failed on the exit");
                if v5 {
                    Ok(ReasonCode::UNSPECIFIED_ERROR)
                } else {
                    Err(Close::Gone)
                }
            }
        };
        let packet = match pending {
            Pending::PubAck(id, result) => {
                self.inbound_inflight = self.inbound_inflight.saturating_sub(1);
                let reason = outcome(result)?;
                if !v5 && reason.is_error() {
                    return Err(close(reason));
                }
                Packet::PubAck(Ack {
                    reason,
                    ..Ack::success(id)
                })
            }
            Pending::PubRec(id, result) => {
                let reason = outcome(result)?;
                if !v5 && reason.is_error() {
                    return Err(close(reason));
                }
                if reason.is_error() {
                    self.inbound_inflight = self.inbound_inflight.saturating_sub(1);
                } else {
                    self.tracking().released.insert(id);
                }
                Packet::PubRec(Ack {
                    reason,
                    ..Ack::success(id)
                })
            }
            Pending::PubRel(id) => Packet::PubRel(Ack::success(id)),
            Pending::Close(reason) => return Err(close(reason)),
            Pending::SubAck(id, reasons) => Packet::SubAck(SubAck {
                packet_id: id,
                properties: Properties::default(),
                reasons,
            }),
            Pending::UnsubAck(id, reasons) => Packet::UnsubAck(UnsubAck {
                packet_id: id,
                properties: Properties::default(),
                reasons,
            }),
        };
        self.write(writer, packet).await
    }

    fn allocate_packet_id(&mut self) -> u16 {
        let tracked = self.tracking();
        if tracked.outbound.len() + tracked.reserved.len() >= usize::from(u16::MAX) {
            // Every identifier taken: the reservations give way.
            tracked.reserved.clear();
        }
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            let tracked = self.tracked();
            if !tracked.outbound.contains_key(&id) && !tracked.reserved.contains(&id) {
                return id;
            }
        }
    }

    async fn deliver<W: AsyncWrite + Unpin>(
        &mut self,
        event: SessionEvent,
        writer: &mut W,
    ) -> Result<(), Close> {
        let Delivery {
            message,
            acknowledged,
            dup,
            packet_id,
            on_sent,
        } = match event {
            SessionEvent::Deliver(delivery) => *delivery,
            SessionEvent::Ended {
                reason,
                reason_string,
            } => {
                // A broker may close the replaced connection before this one sees the
                // takeover.
                if self.ownership.is_lost() {
                    return Err(Close::Ended(ReasonCode::SESSION_TAKEN_OVER, None));
                }
                return Err(Close::Ended(reason, reason_string));
            }
        };
        let mut properties = message.properties;
        properties.topic_alias = None;
        let mut publish = Publish {
            // DUP is for QoS 1 and 2 only (MQTT 5 §3.3.1.1).
            dup: dup && message.qos != QoS::AtMostOnce,
            qos: message.qos,
            retain: message.retain,
            topic: message.topic,
            packet_id: None,
            properties,
            payload: message.payload,
        };
        if publish.qos != QoS::AtMostOnce {
            // A delivery of an earlier connection goes again with its identifier, unless
            // this connection holds that one.
            let id = match packet_id {
                Some(id) if id != 0 && !self.tracked().outbound.contains_key(&id) => {
                    if let Some(tracked) = self.tracked_mut() {
                        tracked.reserved.remove(&id);
                    }
                    id
                }
                _ => self.allocate_packet_id(),
            };
            publish.packet_id = Some(id);
        }
        let mut out = BytesMut::new();
        if let Err(error) = codec::encode(&Packet::Publish(publish.clone()), self.version, &mut out)
        {
            tracing::debug!(%error, "mqtt delivery cannot be encoded");
            return Ok(());
        }
        if out.len() > self.client_maximum_packet_size as usize {
            // Over what the client accepts: discarded, as MQTT 5 §3.1.2.11.4 asks.
            if let Some(acknowledged) = acknowledged {
                let _ = acknowledged.send(());
            }
            return Ok(());
        }
        if let Some(id) = publish.packet_id {
            if let Some(OnSent(on_sent)) = on_sent {
                on_sent(id);
            }
            self.tracking().outbound.insert(
                id,
                Outbound {
                    acknowledged,
                    released: false,
                },
            );
        }
        writer.write_all(&out).await.map_err(|_| Close::Gone)?;
        writer.flush().await.map_err(|_| Close::Gone)
    }
}

/// Ready when `timer` fires; never without one.
fn poll_timer(timer: &mut Option<Pin<Box<Sleep>>>) -> impl Future<Output = ()> + '_ {
    std::future::poll_fn(move |cx| match timer {
        Some(timer) => timer.as_mut().poll(cx),
        None => Poll::Pending,
    })
}
