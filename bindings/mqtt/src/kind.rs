//! The `mqtt` stream kind: one MQTT session, and the publications and subscriptions made in it.
//!
//! A server opens a session on its exit with [`MqttHandler::session`] once it has accepted a
//! client's CONNECT; the exit answers with what it supports ([`SessionAccepted`]) and a
//! [`MqttSession`] through which the server publishes, subscribes and unsubscribes. What the
//! exit delivers (messages matching the session's subscriptions, or the end of the session)
//! comes back on the [`SessionBegin::events`] channel the server gave it ([`events`]); that
//! channel is bounded, so a slow subscriber slows the exit down rather than growing a queue.
//!
//! Acknowledgements are end to end: [`MqttSession::publish`] completes when the exit has
//! taken responsibility for the message at its QoS (a broker's PUBACK or PUBREC), and a
//! [`Delivery`] at QoS 1 or 2 carries a sender the server fires once the subscriber has
//! acknowledged it. Dropping the session without [`MqttSession::end`] ends it abnormally, so
//! its will is published.
//!
//! The kind is version-neutral: messages carry MQTT 5 properties, and a 3.1.1 server side
//! simply leaves them empty.

pub mod events;

use bytes::Bytes;
use tokio::sync::oneshot;
use zilla_engine::guard::Authorization;
use zilla_engine::stream::{BoxFuture, StreamError, StreamInfo, StreamKind};

use crate::codec::{Properties, QoS, ReasonCode, SubscriptionOptions};

pub use events::{EventReceiver, EventSender, event_channel};

/// An application message, as published or delivered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// The topic name.
    pub topic: String,
    /// The QoS it is published or delivered at.
    pub qos: QoS,
    /// Whether it is (to be) retained.
    pub retain: bool,
    /// The payload.
    pub payload: Bytes,
    /// Message properties: payload format, expiry, content type, response topic,
    /// correlation data, user properties; on delivery, also subscription identifiers.
    pub properties: Properties,
}

/// A will: the message and its delay (MQTT 5 will delay interval, seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WillMessage {
    /// What is published when the session ends abnormally.
    pub message: Message,
    /// Seconds to wait before publishing it.
    pub delay: u32,
}

/// The opening of a session (what CONNECT asked for, once the server accepted it).
#[derive(Debug)]
pub struct SessionBegin {
    /// The client identifier (assigned by the server when the client sent none).
    pub client_id: String,
    /// Discard any existing session.
    pub clean_start: bool,
    /// Seconds the session outlives the connection (3.1.1: 0 for a clean session, otherwise
    /// `u32::MAX`, i.e. never expires).
    pub session_expiry: u32,
    /// The keep alive the client and server agreed, in seconds.
    pub keep_alive: u16,
    /// The will.
    pub will: Option<WillMessage>,
    /// The user name the client gave, unless the server consumed it as credentials.
    pub username: Option<String>,
    /// The password the client gave, unless the server consumed it as credentials.
    pub password: Option<Bytes>,
    /// CONNECT user properties.
    pub user_properties: Vec<(String, String)>,
    /// The guard sessions the client holds.
    pub authorization: Authorization,
    /// The transport's addresses and identity, if the session came over one.
    pub info: Option<StreamInfo>,
    /// Where the exit sends deliveries and the end of the session.
    pub events: EventSender,
}

/// What the exit supports, for CONNACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionAccepted {
    /// Whether an existing session was resumed.
    pub session_present: bool,
    /// The highest QoS accepted from publishers.
    pub maximum_qos: QoS,
    /// Whether retained messages are supported.
    pub retain_available: bool,
    /// Whether wildcard subscriptions are supported.
    pub wildcard_available: bool,
    /// Whether subscription identifiers are supported.
    pub subscription_ids_available: bool,
    /// Whether shared subscriptions are supported.
    pub shared_available: bool,
    /// The session expiry the exit grants, when it differs from the one asked for.
    pub session_expiry: Option<u32>,
    /// Of a resumed session: the QoS 2 packet identifiers whose message the exit took and
    /// whose PUBREL has not come (see [`MqttSession::received`]), so that a client sending
    /// one of them again gets PUBREC without a second publication.
    pub awaiting_release: Vec<u16>,
    /// Of a resumed session: the QoS 2 deliveries the subscriber answered with PUBREC and
    /// whose PUBCOMP has not come (see [`MqttSession::delivery_received`]); the server sends
    /// PUBREL for each again, as MQTT asks of a resumed session.
    pub awaiting_completion: Vec<u16>,
    /// Of a resumed session: the packet identifiers of QoS 1 and 2 deliveries sent over an
    /// earlier connection and not acknowledged, which the exit delivers again with them
    /// ([`Delivery::packet_id`]); the server gives them to no other delivery meanwhile.
    pub awaiting_acknowledgement: Vec<u16>,
}

impl Default for SessionAccepted {
    fn default() -> Self {
        Self {
            session_present: false,
            maximum_qos: QoS::ExactlyOnce,
            retain_available: true,
            wildcard_available: true,
            subscription_ids_available: true,
            shared_available: true,
            session_expiry: None,
            awaiting_release: Vec::new(),
            awaiting_completion: Vec::new(),
            awaiting_acknowledgement: Vec::new(),
        }
    }
}

/// Why a session was refused: the reason code CONNACK carries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("session refused with reason code {:#04x}", reason.0)]
pub struct SessionRefused {
    /// The CONNACK reason code.
    pub reason: ReasonCode,
    /// A human-readable reason, for MQTT 5 clients.
    pub reason_string: Option<String>,
}

impl From<StreamError> for SessionRefused {
    fn from(error: StreamError) -> Self {
        let reason = match &error {
            StreamError::NoRoute | StreamError::Unauthorized => ReasonCode::NOT_AUTHORIZED,
            StreamError::Protocol(_) => ReasonCode::PROTOCOL_ERROR,
            StreamError::Stopped => ReasonCode::SERVER_SHUTTING_DOWN,
            StreamError::Upstream(_) | StreamError::Io(_) => ReasonCode::SERVER_UNAVAILABLE,
        };
        tracing::debug!(%error, "mqtt session refused");
        Self {
            reason,
            reason_string: None,
        }
    }
}

/// A SUBSCRIBE, as passed to an exit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubscribeRequest {
    /// The subscription identifier, if the client gave one.
    pub subscription_id: Option<u32>,
    /// Topic filters and their options.
    pub filters: Vec<(String, SubscriptionOptions)>,
    /// SUBSCRIBE user properties.
    pub user_properties: Vec<(String, String)>,
}

/// How a session ends normally.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionEnd {
    /// The DISCONNECT reason (0x04 asks for the will to be published).
    pub reason: ReasonCode,
    /// A new session expiry, if the client changed it on DISCONNECT.
    pub session_expiry: Option<u32>,
}

/// Told the packet identifier a QoS 1 or 2 delivery goes with, just before the server writes
/// it: an exit whose sessions outlive their connections keeps it, to send the message again
/// with it (see [`Delivery::packet_id`]).
pub struct OnSent(pub Box<dyn FnOnce(u16) + Send>);

impl std::fmt::Debug for OnSent {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("OnSent")
    }
}

/// A message delivered to the session.
#[derive(Debug, Default)]
pub struct Delivery {
    /// The message, at the QoS it is delivered at.
    pub message: Message,
    /// Fired when the subscriber has acknowledged it (PUBACK, or PUBREC for QoS 2, after
    /// [`MqttSession::delivery_received`]); `None`
    /// at QoS 0.
    pub acknowledged: Option<oneshot::Sender<()>>,
    /// Whether the session delivered it before without its acknowledgement (over an earlier
    /// connection): it is sent with the DUP flag.
    pub dup: bool,
    /// The packet identifier it was sent with over an earlier connection, one of
    /// [`SessionAccepted::awaiting_acknowledgement`]: it is sent again with it (MQTT 5
    /// §4.4), unless a delivery of this connection holds that identifier. `None`: the
    /// server picks one.
    pub packet_id: Option<u16>,
    /// Called with the packet identifier it is sent with (QoS 1 and 2).
    pub on_sent: Option<OnSent>,
}

/// What an exit tells its session.
#[derive(Debug)]
pub enum SessionEvent {
    /// A message for the subscriber (boxed: messages carry every MQTT 5 property).
    Deliver(Box<Delivery>),
    /// The exit ended the session: taken over by another connection with the same client
    /// identifier (0x8E), the exit shutting down, the upstream gone.
    Ended {
        /// Why, for DISCONNECT.
        reason: ReasonCode,
        /// A human-readable reason.
        reason_string: Option<String>,
    },
}

/// What an exit answers once it has taken responsibility for a request: the outcome for a
/// publication, one reason code per filter for a subscribe or unsubscribe.
pub type Acknowledgement<T = ReasonCode> = BoxFuture<'static, Result<T, StreamError>>;

/// An open session on an exit.
///
/// Each request completes in two steps so that order is kept without waiting: the returned
/// future resolves once the request is queued on the exit, in call order (waiting while the
/// exit's queue is full), and yields the [`Acknowledgement`] to await for the outcome.
pub trait MqttSession: Send + Sync + 'static {
    /// Publishes `message` (its acknowledgement is immediate at QoS 0).
    fn publish(&self, message: Message) -> BoxFuture<'_, Result<Acknowledgement, StreamError>>;

    /// Publishes a QoS 2 `message` the client sent with `packet_id`. An exit whose sessions
    /// outlive their connections uses the identifier to take the message once, even when the
    /// client sends it again after a reconnection (to this gateway or another) because it
    /// never got PUBREC; by default, [`Self::publish`].
    fn publish_exactly_once(
        &self,
        packet_id: u16,
        message: Message,
    ) -> BoxFuture<'_, Result<Acknowledgement, StreamError>> {
        let _ = packet_id;
        self.publish(message)
    }

    /// Subscribes.
    fn subscribe(
        &self,
        request: SubscribeRequest,
    ) -> BoxFuture<'_, Result<Acknowledgement<Vec<ReasonCode>>, StreamError>>;

    /// Unsubscribes.
    fn unsubscribe(
        &self,
        filters: Vec<String>,
        user_properties: Vec<(String, String)>,
    ) -> BoxFuture<'_, Result<Acknowledgement<Vec<ReasonCode>>, StreamError>>;

    /// The QoS 2 publication `packet_id` was taken (the server is about to send PUBREC):
    /// an exit whose sessions outlive their connections keeps the identifier until
    /// [`Self::released`], and the returned future completes once it is kept.
    fn received(&self, _packet_id: u16) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }

    /// The client released the QoS 2 publication `packet_id` (PUBREL).
    fn released(&self, _packet_id: u16) {}

    /// The subscriber answered the QoS 2 delivery `packet_id` with PUBREC: called before
    /// the delivery's acknowledgement fires, so an exit whose sessions outlive their
    /// connections can keep the identifier (and give it back in
    /// [`SessionAccepted::awaiting_completion`]) until [`Self::delivery_completed`]. The
    /// server sends PUBREL once the returned future completes: once the subscriber may have
    /// handed the message over, a resumed session must not send it again.
    fn delivery_received(&self, _packet_id: u16) -> BoxFuture<'static, ()> {
        Box::pin(std::future::ready(()))
    }

    /// The subscriber completed the QoS 2 delivery `packet_id` (PUBCOMP).
    fn delivery_completed(&self, _packet_id: u16) {}

    /// Ends the session normally (the client sent DISCONNECT), or, with reason 0x8E, because
    /// another connection with the same client identifier took it over (the session goes on
    /// there: nothing due at an abnormal end is).
    fn end(&self, end: SessionEnd);
}

/// A session an exit opened, and what it supports.
pub type OpenedSession = (SessionAccepted, Box<dyn MqttSession>);

/// Handler of the `mqtt` stream kind.
pub trait MqttHandler: Send + Sync + 'static {
    /// Opens a session.
    fn session(&self, begin: SessionBegin) -> BoxFuture<'_, Result<OpenedSession, SessionRefused>>;
}

/// The `mqtt` stream kind.
#[derive(Debug)]
pub struct Mqtt;

impl StreamKind for Mqtt {
    const NAME: &'static str = "mqtt";
    type Handler = dyn MqttHandler;
}
