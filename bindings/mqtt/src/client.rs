//! The `mqtt` client: carries each `mqtt` session to a broker over its own connection,
//! opened through the exit (a `tcp` or `tls` client), speaking MQTT 5.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};
use zilla_engine::stream::{AsyncIo, BoxFuture, BytesHandler, StreamError, StreamInfo};

use crate::Lifecycle;
use crate::codec::{
    self, Ack, Connect, Decoder, Disconnect, Packet, Properties, PropertyContext, Publish, QoS,
    ReasonCode, Subscribe, Unsubscribe, Version, Will,
};
use crate::kind::events::TrySendError;
use crate::kind::{
    Acknowledgement, Delivery, EventSender, Message, MqttHandler, MqttSession, OpenedSession,
    SessionAccepted, SessionBegin, SessionEnd, SessionEvent, SessionRefused, SubscribeRequest,
};

/// Limits of a client.
#[derive(Debug, Clone)]
pub(crate) struct ClientSettings {
    pub connect_timeout: Duration,
    pub maximum_packet_size: u32,
    /// What the client tells the broker it takes at once (QoS 1 and 2 deliveries).
    pub receive_maximum: u16,
    /// Requests queued toward one broker connection.
    pub queue_capacity: usize,
}

/// The `mqtt` client binding's handler.
pub(crate) struct MqttClient {
    pub exit: Arc<dyn BytesHandler>,
    pub settings: ClientSettings,
    pub lifecycle: Lifecycle,
}

type Reply<T> = oneshot::Sender<Result<T, StreamError>>;

enum Command {
    Publish(Box<Message>, Reply<ReasonCode>),
    Subscribe(SubscribeRequest, Reply<Vec<ReasonCode>>),
    Unsubscribe(Vec<String>, Vec<(String, String)>, Reply<Vec<ReasonCode>>),
}

fn upstream(message: &str) -> StreamError {
    StreamError::Upstream(message.to_owned())
}

fn connect_packet(begin: &SessionBegin, settings: &ClientSettings) -> Connect {
    let will = begin.will.as_ref().map(|will| {
        let mut properties = will.message.properties.clone();
        properties.retain_allowed(PropertyContext::Will);
        properties.will_delay = (will.delay > 0).then_some(will.delay);
        Will {
            properties,
            topic: will.message.topic.clone(),
            payload: will.message.payload.clone(),
            qos: will.message.qos,
            retain: will.message.retain,
        }
    });
    Connect {
        version: Version::V5,
        clean_start: begin.clean_start,
        keep_alive: begin.keep_alive,
        properties: Properties {
            session_expiry: (begin.session_expiry > 0).then_some(begin.session_expiry),
            receive_maximum: Some(settings.receive_maximum),
            maximum_packet_size: Some(settings.maximum_packet_size),
            user: begin.user_properties.clone(),
            ..Properties::default()
        },
        client_id: begin.client_id.clone(),
        will,
        username: begin.username.clone(),
        password: begin.password.clone(),
    }
}

async fn write_packet<W: AsyncWrite + Unpin>(
    writer: &mut W,
    packet: &Packet,
) -> Result<(), StreamError> {
    let mut out = BytesMut::new();
    codec::encode(packet, Version::V5, &mut out)
        .map_err(|error| StreamError::Protocol(error.to_string()))?;
    writer.write_all(&out).await?;
    writer.flush().await?;
    Ok(())
}

impl MqttHandler for MqttClient {
    fn session(&self, begin: SessionBegin) -> BoxFuture<'_, Result<OpenedSession, SessionRefused>> {
        Box::pin(async move {
            let stream = self.exit.connect(StreamInfo::default()).await?;
            let (mut reader, mut writer) = tokio::io::split(stream.io);
            let connect = connect_packet(&begin, &self.settings);
            write_packet(&mut writer, &Packet::Connect(Box::new(connect))).await?;
            let mut decoder = Decoder {
                version: Some(Version::V5),
                maximum_packet_size: self.settings.maximum_packet_size,
            };
            let mut buffer = BytesMut::with_capacity(4096);
            let connack = tokio::time::timeout(self.settings.connect_timeout, async {
                loop {
                    match decoder.decode(&mut buffer) {
                        Ok(Some(packet)) => return Ok(packet),
                        Ok(None) => {}
                        Err(error) => return Err(StreamError::Protocol(error.to_string())),
                    }
                    if reader.read_buf(&mut buffer).await? == 0 {
                        return Err(upstream("the broker closed before CONNACK"));
                    }
                }
            })
            .await
            .map_err(|_| upstream("no CONNACK in time"))??;
            let Packet::ConnAck(connack) = connack else {
                return Err(
                    StreamError::Protocol("the broker did not answer CONNACK".into()).into(),
                );
            };
            if connack.reason.is_error() {
                return Err(SessionRefused {
                    reason: connack.reason,
                    reason_string: connack.properties.reason_string,
                });
            }
            let properties = &connack.properties;
            let available = |flag: Option<u8>| flag != Some(0);
            let accepted = SessionAccepted {
                session_present: connack.session_present,
                maximum_qos: match properties.maximum_qos {
                    Some(0) => QoS::AtMostOnce,
                    Some(1) => QoS::AtLeastOnce,
                    _ => QoS::ExactlyOnce,
                },
                retain_available: available(properties.retain_available),
                wildcard_available: available(properties.wildcard_available),
                subscription_ids_available: available(properties.subscription_ids_available),
                shared_available: available(properties.shared_available),
                session_expiry: properties.session_expiry,
                // The broker keeps its QoS 2 state: a publication sent again reaches it,
                // and it sends PUBREL again itself.
                awaiting_release: Vec::new(),
                awaiting_completion: Vec::new(),
                awaiting_acknowledgement: Vec::new(),
            };
            let keep_alive = properties.server_keep_alive.unwrap_or(begin.keep_alive);
            let (commands, receiver) = mpsc::channel(self.settings.queue_capacity.max(1));
            let (end, ended) = oneshot::channel();
            let upstream = Upstream {
                reader,
                writer,
                decoder,
                buffer,
                events: begin.events,
                held: None,
                pending: HashMap::new(),
                released: HashSet::new(),
                received: HashSet::new(),
                acknowledgements: FuturesUnordered::new(),
                inflight: 0,
                broker_receive_maximum: properties.receive_maximum.unwrap_or(u16::MAX),
                broker_maximum_packet_size: properties.maximum_packet_size.unwrap_or(u32::MAX),
                next_packet_id: 1,
            };
            let retired = self.lifecycle.retired();
            self.lifecycle.spawn(async move {
                upstream.run(receiver, ended, keep_alive, retired).await;
            });
            let session = ClientSession {
                commands,
                end: Mutex::new(Some(end)),
            };
            Ok((accepted, Box::new(session) as Box<dyn MqttSession>))
        })
    }
}

/// One session's handle on its broker connection.
struct ClientSession {
    commands: mpsc::Sender<Command>,
    /// Sending ends the session normally; dropping it unsent, abnormally.
    end: Mutex<Option<oneshot::Sender<SessionEnd>>>,
}

impl ClientSession {
    async fn request<T: Send + 'static>(
        &self,
        command: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<Acknowledgement<T>, StreamError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| upstream("the broker connection ended"))?;
        Ok(Box::pin(async move {
            answer
                .await
                .map_err(|_| upstream("the broker connection ended"))?
        }))
    }
}

impl MqttSession for ClientSession {
    fn publish(&self, message: Message) -> BoxFuture<'_, Result<Acknowledgement, StreamError>> {
        Box::pin(self.request(|reply| Command::Publish(Box::new(message), reply)))
    }

    fn subscribe(
        &self,
        request: SubscribeRequest,
    ) -> BoxFuture<'_, Result<Acknowledgement<Vec<ReasonCode>>, StreamError>> {
        Box::pin(self.request(|reply| Command::Subscribe(request, reply)))
    }

    fn unsubscribe(
        &self,
        filters: Vec<String>,
        user_properties: Vec<(String, String)>,
    ) -> BoxFuture<'_, Result<Acknowledgement<Vec<ReasonCode>>, StreamError>> {
        Box::pin(self.request(|reply| Command::Unsubscribe(filters, user_properties, reply)))
    }

    fn end(&self, end: SessionEnd) {
        if end.reason == ReasonCode::SESSION_TAKEN_OVER {
            // Closed without DISCONNECT when dropped, as the client's own connection was:
            // the broker then does what a takeover asks of it (will, session).
            return;
        }
        if let Ok(mut slot) = self.end.lock()
            && let Some(sender) = slot.take()
        {
            let _ = sender.send(end);
        }
    }
}

/// A request waiting for the broker's answer.
enum Waiting {
    Publish(Reply<ReasonCode>),
    Subscribe(Reply<Vec<ReasonCode>>),
    Unsubscribe(Reply<Vec<ReasonCode>>),
}

type Io = Box<dyn AsyncIo>;

/// A broker connection.
struct Upstream {
    reader: ReadHalf<Io>,
    writer: WriteHalf<Io>,
    decoder: Decoder,
    buffer: BytesMut,
    events: EventSender,
    /// A delivery waiting for room in the events channel; nothing more is read meanwhile.
    held: Option<SessionEvent>,
    pending: HashMap<u16, Waiting>,
    /// QoS 2 publications answered with PUBREC, waiting for PUBCOMP.
    released: HashSet<u16>,
    /// QoS 2 deliveries received and not yet released by the broker.
    received: HashSet<u16>,
    acknowledgements: FuturesUnordered<BoxFuture<'static, Option<(u16, QoS)>>>,
    inflight: u16,
    broker_receive_maximum: u16,
    broker_maximum_packet_size: u32,
    next_packet_id: u16,
}

/// Why a broker connection ends.
enum Stop {
    /// Tell the session why (the broker disconnected or failed).
    Ended(ReasonCode, Option<String>),
    /// The session is gone; nobody to tell.
    Quiet,
    /// The session ended: normally with how, or abnormally (`None`).
    Finish(Option<SessionEnd>),
}

impl Upstream {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut ended: oneshot::Receiver<SessionEnd>,
        keep_alive: u16,
        retired: tokio_util::sync::CancellationToken,
    ) {
        let period = Duration::from_secs(u64::from(keep_alive.max(1)));
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let events = self.events.clone();
        let stop = loop {
            if self.held.is_none()
                && let Err(stop) = self.drain().await
            {
                break stop;
            }
            let reading = self.held.is_none();
            let sending = self.inflight < self.broker_receive_maximum;
            tokio::select! {
                read = self.reader.read_buf(&mut self.buffer), if reading => match read {
                    Ok(0) | Err(_) => break Stop::Ended(ReasonCode::SERVER_UNAVAILABLE, None),
                    Ok(_) => {}
                },
                ready = events.ready(), if !reading => match ready {
                    Ok(()) => {
                        if let Some(event) = self.held.take() {
                            match events.try_send(event) {
                                Ok(()) => {}
                                // Another sender took the room: wait for the next.
                                Err(TrySendError::Full(event)) => self.held = Some(event),
                                Err(TrySendError::Closed(_)) => break Stop::Quiet,
                            }
                        }
                    }
                    Err(_) => break Stop::Quiet,
                },
                command = commands.recv(), if sending => match command {
                    Some(command) => {
                        if let Err(stop) = self.command(command).await {
                            break stop;
                        }
                    }
                    // The session is dropped: `ended` says how.
                    None => break Stop::Finish((&mut ended).await.ok()),
                },
                end = &mut ended => break Stop::Finish(end.ok()),
                Some(acknowledged) = self.acknowledgements.next() => {
                    if let Some((id, qos)) = acknowledged {
                        let packet = match qos {
                            QoS::ExactlyOnce => Packet::PubRec(Ack::success(id)),
                            _ => Packet::PubAck(Ack::success(id)),
                        };
                        if write_packet(&mut self.writer, &packet).await.is_err() {
                            break Stop::Ended(ReasonCode::SERVER_UNAVAILABLE, None);
                        }
                    }
                }
                _ = ping.tick(), if keep_alive > 0 => {
                    if write_packet(&mut self.writer, &Packet::PingReq).await.is_err() {
                        break Stop::Ended(ReasonCode::SERVER_UNAVAILABLE, None);
                    }
                }
                _ = retired.cancelled() => break Stop::Ended(ReasonCode::SERVER_SHUTTING_DOWN, None),
            }
        };
        match stop {
            Stop::Finish(end) => self.finish(end).await,
            Stop::Ended(reason, reason_string) => {
                let event = SessionEvent::Ended {
                    reason,
                    reason_string,
                };
                let _ = self.events.send(event).await;
            }
            Stop::Quiet => {}
        }
    }

    /// Ends the broker connection: with DISCONNECT when the session ended normally; without,
    /// so that the broker publishes the will, when it was dropped.
    async fn finish(mut self, end: Option<SessionEnd>) {
        if let Some(end) = end {
            let disconnect = Disconnect {
                reason: end.reason,
                properties: Properties {
                    session_expiry: end.session_expiry,
                    ..Properties::default()
                },
            };
            let _ = write_packet(&mut self.writer, &Packet::Disconnect(disconnect)).await;
            let _ = self.writer.shutdown().await;
        }
    }

    /// Handles the whole packets in the buffer, until one delivery has to wait.
    async fn drain(&mut self) -> Result<(), Stop> {
        while self.held.is_none() {
            let packet = match self.decoder.decode(&mut self.buffer) {
                Ok(Some(packet)) => packet,
                Ok(None) => return Ok(()),
                Err(error) => {
                    tracing::debug!(%error, "mqtt broker sent a bad packet");
                    let disconnect = Packet::Disconnect(Disconnect::with_reason(error.reason));
                    let _ = write_packet(&mut self.writer, &disconnect).await;
                    return Err(Stop::Ended(ReasonCode::SERVER_UNAVAILABLE, None));
                }
            };
            self.packet(packet).await?;
        }
        Ok(())
    }

    async fn write(&mut self, packet: Packet) -> Result<(), Stop> {
        write_packet(&mut self.writer, &packet)
            .await
            .map_err(|_| Stop::Ended(ReasonCode::SERVER_UNAVAILABLE, None))
    }

    async fn packet(&mut self, packet: Packet) -> Result<(), Stop> {
        match packet {
            Packet::Publish(publish) => {
                let packet_id = publish.packet_id.unwrap_or(0);
                if publish.qos == QoS::ExactlyOnce && !self.received.insert(packet_id) {
                    // Delivered already; the PUBREC follows its acknowledgement.
                    return Ok(());
                }
                let (acknowledged, waiting) = match publish.qos {
                    QoS::AtMostOnce => (None, None),
                    qos => {
                        let (sender, receiver) = oneshot::channel();
                        (Some(sender), Some((receiver, qos)))
                    }
                };
                if let Some((receiver, qos)) = waiting {
                    self.acknowledgements.push(Box::pin(async move {
                        // Unacknowledged (the subscriber went away): the broker keeps it.
                        receiver.await.ok().map(|()| (packet_id, qos))
                    }));
                }
                let dup = publish.dup;
                let event = SessionEvent::Deliver(Box::new(Delivery {
                    dup,
                    message: Message {
                        topic: publish.topic,
                        qos: publish.qos,
                        retain: publish.retain,
                        payload: publish.payload,
                        properties: publish.properties,
                    },
                    acknowledged,
                    ..Delivery::default()
                }));
                match self.events.try_send(event) {
                    Ok(()) => {}
                    Err(TrySendError::Full(event)) => self.held = Some(event),
                    Err(TrySendError::Closed(_)) => return Err(Stop::Quiet),
                }
                Ok(())
            }
            Packet::PubRel(ack) => {
                self.received.remove(&ack.packet_id);
                self.write(Packet::PubComp(Ack::success(ack.packet_id)))
                    .await
            }
            Packet::PubAck(ack) => {
                if let Some(Waiting::Publish(reply)) = self.pending.remove(&ack.packet_id) {
                    self.inflight = self.inflight.saturating_sub(1);
                    let _ = reply.send(Ok(ack.reason));
                }
                Ok(())
            }
            Packet::PubRec(ack) => {
                if let Some(Waiting::Publish(reply)) = self.pending.remove(&ack.packet_id) {
                    let _ = reply.send(Ok(ack.reason));
                    if ack.reason.is_error() {
                        self.inflight = self.inflight.saturating_sub(1);
                        return Ok(());
                    }
                    self.released.insert(ack.packet_id);
                    return self
                        .write(Packet::PubRel(Ack::success(ack.packet_id)))
                        .await;
                }
                Ok(())
            }
            Packet::PubComp(ack) => {
                if self.released.remove(&ack.packet_id) {
                    self.inflight = self.inflight.saturating_sub(1);
                }
                Ok(())
            }
            Packet::SubAck(suback) => {
                if let Some(Waiting::Subscribe(reply)) = self.pending.remove(&suback.packet_id) {
                    let _ = reply.send(Ok(suback.reasons));
                }
                Ok(())
            }
            Packet::UnsubAck(unsuback) => {
                if let Some(Waiting::Unsubscribe(reply)) = self.pending.remove(&unsuback.packet_id)
                {
                    let _ = reply.send(Ok(unsuback.reasons));
                }
                Ok(())
            }
            Packet::PingResp => Ok(()),
            Packet::Disconnect(disconnect) => Err(Stop::Ended(
                disconnect.reason,
                disconnect.properties.reason_string,
            )),
            _ => {
                let disconnect =
                    Packet::Disconnect(Disconnect::with_reason(ReasonCode::PROTOCOL_ERROR));
                let _ = self.write(disconnect).await;
                Err(Stop::Ended(ReasonCode::SERVER_UNAVAILABLE, None))
            }
        }
    }

    /// A packet identifier no request toward the broker holds. When all 65 535 are held (a
    /// broker answering nothing while subscribes and unsubscribes, which receive maximum does
    /// not count, pile up), the session ends rather than search forever.
    fn allocate_packet_id(&mut self) -> Result<u16, Stop> {
        let (pending, released) = (&self.pending, &self.released);
        next_free_packet_id(&mut self.next_packet_id, |id| {
            pending.contains_key(&id) || released.contains(&id)
        })
        .ok_or_else(|| {
            Stop::Ended(
                ReasonCode::QUOTA_EXCEEDED,
                Some("every packet identifier toward the broker is in use".to_owned()),
            )
        })
    }

    async fn command(&mut self, command: Command) -> Result<(), Stop> {
        match command {
            Command::Publish(message, reply) => {
                let message = *message;
                let packet_id = match message.qos {
                    QoS::AtMostOnce => None,
                    _ => Some(self.allocate_packet_id()?),
                };
                let publish = Packet::Publish(Publish {
                    dup: false,
                    qos: message.qos,
                    retain: message.retain,
                    topic: message.topic,
                    packet_id,
                    properties: message.properties,
                    payload: message.payload,
                });
                let mut out = BytesMut::new();
                if let Err(error) = codec::encode(&publish, Version::V5, &mut out) {
                    let _ = reply.send(Err(StreamError::Protocol(error.to_string())));
                    return Ok(());
                }
                if out.len() > self.broker_maximum_packet_size as usize {
                    let _ = reply.send(Ok(ReasonCode::PACKET_TOO_LARGE));
                    return Ok(());
                }
                match packet_id {
                    None => {
                        let _ = reply.send(Ok(ReasonCode::SUCCESS));
                    }
                    Some(id) => {
                        self.inflight += 1;
                        self.pending.insert(id, Waiting::Publish(reply));
                    }
                }
                self.writer
                    .write_all(&out)
                    .await
                    .map_err(|_| Stop::Ended(ReasonCode::SERVER_UNAVAILABLE, None))?;
                self.writer
                    .flush()
                    .await
                    .map_err(|_| Stop::Ended(ReasonCode::SERVER_UNAVAILABLE, None))
            }
            Command::Subscribe(request, reply) => {
                let packet_id = self.allocate_packet_id()?;
                self.pending.insert(packet_id, Waiting::Subscribe(reply));
                let subscribe = Subscribe {
                    packet_id,
                    properties: Properties {
                        subscription_ids: request.subscription_id.into_iter().collect(),
                        user: request.user_properties,
                        ..Properties::default()
                    },
                    filters: request.filters,
                };
                self.write(Packet::Subscribe(subscribe)).await
            }
            Command::Unsubscribe(filters, user, reply) => {
                let packet_id = self.allocate_packet_id()?;
                self.pending.insert(packet_id, Waiting::Unsubscribe(reply));
                let unsubscribe = Unsubscribe {
                    packet_id,
                    properties: Properties {
                        user,
                        ..Properties::default()
                    },
                    filters,
                };
                self.write(Packet::Unsubscribe(unsubscribe)).await
            }
        }
    }
}

/// The first packet identifier from `next` on (1 to 65 535, wrapping) that is not `taken`,
/// moving `next` past it; `None`, after one round, when every one is.
fn next_free_packet_id(next: &mut u16, taken: impl Fn(u16) -> bool) -> Option<u16> {
    for _ in 0..u16::MAX {
        let id = (*next).max(1);
        *next = id.checked_add(1).unwrap_or(1);
        if !taken(id) {
            return Some(id);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_ids_wrap_skip_what_is_taken_and_run_out() {
        let mut next = u16::MAX;
        assert_eq!(next_free_packet_id(&mut next, |_| false), Some(u16::MAX));
        assert_eq!(next_free_packet_id(&mut next, |id| id < 3), Some(3));
        assert_eq!(next, 4);
        // Every identifier taken: the search ends after one round instead of spinning.
        assert_eq!(next_free_packet_id(&mut next, |_| true), None);
        // Zero is never an identifier.
        let mut zero = 0;
        assert_eq!(next_free_packet_id(&mut zero, |_| false), Some(1));
    }
}
