//! The server's own decisions, on an in-memory connection with raw packets from our codec:
//! credentials through a guard, routing refusals, receive maximum, keep alive. The exit is a
//! session that records what reached it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use zilla_engine::config::model::{BindingConfig, Origin, RouteConfig};
use zilla_engine::guard::{Guard, GuardSession};
use zilla_engine::pattern::Pattern;
use zilla_engine::route::Routes;
use zilla_engine::stream::{BoxFuture, ByteStream, BytesHandler, StreamError, StreamInfo};

use crate::Lifecycle;
use crate::codec::{self, Connect, Decoder, Packet, Properties, Publish, QoS, ReasonCode, Version};
use crate::kind::{
    Acknowledgement, Message, MqttHandler, MqttSession, OpenedSession, SessionAccepted,
    SessionBegin, SessionEnd, SessionRefused, SubscribeRequest,
};
use crate::server::{Condition, Credentials, CredentialsField, Settings, Shared, TopicContent};

/// Accepts the token `good`.
struct TokenGuard;

struct TokenSession;

impl GuardSession for TokenSession {
    fn identity(&self) -> Option<&str> {
        Some("alice")
    }
    fn verify(&self, _roles: &[String]) -> bool {
        true
    }
    fn attribute(&self, _name: &str) -> Option<String> {
        None
    }
    fn expires_at(&self) -> Option<SystemTime> {
        None
    }
}

impl Guard for TokenGuard {
    fn reauthorize(&self, credentials: &str) -> Option<Arc<dyn GuardSession>> {
        (credentials == "good").then(|| Arc::new(TokenSession) as Arc<dyn GuardSession>)
    }
}

/// What reached the exit.
#[derive(Default)]
struct Seen {
    usernames: Vec<Option<String>>,
    identities: Vec<Option<String>>,
    published: Vec<Message>,
    /// Topic filters subscribed, in order.
    subscribed: Vec<String>,
    /// Sessions dropped (their connection ended).
    dropped: usize,
}

/// An exit that accepts every session and publication, and stalls QoS 1 acknowledgements
/// when asked, to fill the receive maximum.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Seen>>,
    stall: bool,
    /// When set, publication and SUBSCRIBE acknowledgements wait for a permit each.
    gate: Option<Arc<tokio::sync::Semaphore>>,
}

struct RecorderSession {
    recorder: Recorder,
}

impl Drop for RecorderSession {
    fn drop(&mut self) {
        self.recorder.seen.lock().unwrap().dropped += 1;
    }
}

impl MqttHandler for Recorder {
    fn session(&self, begin: SessionBegin) -> BoxFuture<'_, Result<OpenedSession, SessionRefused>> {
        let mut seen = self.seen.lock().unwrap();
        seen.usernames.push(begin.username.clone());
        seen.identities.push(
            begin
                .authorization
                .session("test:jwt")
                .and_then(|s| s.identity().map(str::to_owned)),
        );
        let session = RecorderSession {
            recorder: self.clone(),
        };
        Box::pin(async move {
            Ok((
                SessionAccepted::default(),
                Box::new(session) as Box<dyn MqttSession>,
            ))
        })
    }
}

impl MqttSession for RecorderSession {
    fn publish(&self, message: Message) -> BoxFuture<'_, Result<Acknowledgement, StreamError>> {
        self.recorder.seen.lock().unwrap().published.push(message);
        let stall = self.recorder.stall;
        let gate = self.recorder.gate.clone();
        Box::pin(async move {
            let acknowledgement: Acknowledgement = if stall {
                Box::pin(std::future::pending())
            } else {
                Box::pin(async move {
                    if let Some(gate) = gate {
                        gate.acquire().await.unwrap().forget();
                    }
                    Ok(ReasonCode::SUCCESS)
                })
            };
            Ok(acknowledgement)
        })
    }

    fn subscribe(
        &self,
        request: SubscribeRequest,
    ) -> BoxFuture<'_, Result<Acknowledgement<Vec<ReasonCode>>, StreamError>> {
        let granted = request
            .filters
            .iter()
            .map(|(_, options)| ReasonCode(options.qos as u8))
            .collect();
        self.recorder
            .seen
            .lock()
            .unwrap()
            .subscribed
            .extend(request.filters.iter().map(|(filter, _)| filter.clone()));
        let gate = self.recorder.gate.clone();
        Box::pin(async move {
            Ok(Box::pin(async move {
                if let Some(gate) = gate {
                    gate.acquire().await.unwrap().forget();
                }
                Ok(granted)
            }) as Acknowledgement<Vec<ReasonCode>>)
        })
    }

    fn unsubscribe(
        &self,
        filters: Vec<String>,
        _user_properties: Vec<(String, String)>,
    ) -> BoxFuture<'_, Result<Acknowledgement<Vec<ReasonCode>>, StreamError>> {
        let answered = vec![ReasonCode::SUCCESS; filters.len()];
        Box::pin(async move {
            Ok(Box::pin(async move { Ok(answered) }) as Acknowledgement<Vec<ReasonCode>>)
        })
    }

    fn end(&self, _end: SessionEnd) {}
}

fn settings() -> Settings {
    Settings {
        versions: vec![Version::V3_1_1, Version::V5],
        maximum_packet_size: 1024,
        receive_maximum: 2,
        topic_alias_maximum: 0,
        keep_alive_minimum: 1,
        keep_alive_maximum: 1000,
        connect_timeout: Duration::from_secs(3),
        maximum_qos: QoS::ExactlyOnce,
        retain_available: true,
        wildcard_available: true,
        subscription_ids_available: true,
        shared_available: true,
        inflight_maximum: 16,
        pending_bytes_maximum: 1 << 20,
        queue_capacity: 4,
    }
}

fn shared(recorder: Recorder, credentials: bool) -> Arc<Shared> {
    shared_guarded(recorder, credentials, Vec::new())
}

/// A route of the publications to `topic`, to `exit`.
fn publish_route(topic: &str, exit: &str, guarded: Vec<(String, Vec<String>)>) -> RouteConfig {
    RouteConfig {
        when: vec![json!({"publish": [{"topic": topic}]})],
        guarded,
        exit: exit.into(),
        with: None,
        origin: Origin::default(),
    }
}

/// A server's routes, `exits` giving the handler of each exit name.
fn routes_of(
    routes: Vec<RouteConfig>,
    exits: impl Fn(&str) -> Arc<dyn MqttHandler>,
) -> Routes<Condition, (), Arc<dyn MqttHandler>> {
    let config = BindingConfig {
        type_name: "mqtt".into(),
        kind: zilla_engine::BindingKind::Server,
        entry: None,
        vault: None,
        catalog: None,
        options: None,
        exit: None,
        routes,
        telemetry_metrics: Vec::new(),
        telemetry_attributes: Vec::new(),
        json: json!({}),
        origin: Origin::default(),
        namespace: "test".into(),
    };
    Routes::build(&config, |name| Ok(exits(name)), Condition::compile).unwrap()
}

/// A server on `routes`, with a memory store of its own.
fn shared_of(
    routes: Routes<Condition, (), Arc<dyn MqttHandler>>,
    credentials: Option<Credentials>,
    topics: Vec<TopicContent>,
) -> Arc<Shared> {
    Arc::new(Shared {
        routes,
        topics,
        settings: settings(),
        credentials,
        lifecycle: Lifecycle::default(),
        store: Arc::new(zilla_store_memory::MemoryStore::new(1 << 20)),
    })
}

/// Like [`shared`], its route `guarded` by `guarded`.
fn shared_guarded(
    recorder: Recorder,
    credentials: bool,
    guarded: Vec<(String, Vec<String>)>,
) -> Arc<Shared> {
    let exit: Arc<dyn MqttHandler> = Arc::new(recorder);
    let routes = routes_of(vec![publish_route("sensors/#", "exit", guarded)], |_| {
        exit.clone()
    });
    let credentials = credentials.then(|| Credentials {
        guard_name: "test:jwt".into(),
        guard: Arc::new(TokenGuard),
        field: CredentialsField::Username,
        pattern: Pattern::compile("Bearer {credentials}", None).unwrap(),
    });
    let topics = vec![TopicContent {
        filter: "sensors/+/count".into(),
        validator: Some(Arc::new(Digits)),
    }];
    shared_of(routes, credentials, topics)
}

/// A client end of an in-memory connection served by `shared`.
fn connect(shared: Arc<Shared>) -> DuplexStream {
    let (client, server) = tokio::io::duplex(64 * 1024);
    tokio::spawn(shared.serve(server, None, Default::default()));
    client
}

async fn send(io: &mut DuplexStream, packet: Packet, version: Version) {
    let mut out = BytesMut::new();
    codec::encode(&packet, version, &mut out).unwrap();
    io.write_all(&out).await.unwrap();
}

/// The next packet, `None` once the server closed.
async fn receive(io: &mut DuplexStream, version: Version) -> Option<Packet> {
    let mut decoder = Decoder {
        version: Some(version),
        maximum_packet_size: u32::MAX,
    };
    let mut buffer = BytesMut::new();
    loop {
        if let Some(packet) = decoder.decode(&mut buffer).unwrap() {
            return Some(packet);
        }
        // One byte at a time, so nothing after this packet is consumed.
        let mut byte = [0u8; 1];
        if io.read(&mut byte).await.unwrap() == 0 {
            return None;
        }
        buffer.extend_from_slice(&byte);
    }
}

fn connect_packet(version: Version, username: Option<&str>, keep_alive: u16) -> Packet {
    Packet::Connect(Box::new(Connect {
        version,
        clean_start: true,
        keep_alive,
        properties: Properties::default(),
        client_id: "c1".into(),
        will: None,
        username: username.map(str::to_owned),
        password: None,
    }))
}

async fn connack(io: &mut DuplexStream, version: Version) -> ReasonCode {
    match receive(io, version).await {
        Some(Packet::ConnAck(connack)) => connack.reason,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[tokio::test]
async fn credentials_are_checked_by_the_guard_and_not_passed_on() {
    let recorder = Recorder::default();
    let shared = shared(recorder.clone(), true);
    for version in [Version::V5, Version::V3_1_1] {
        let mut io = connect(shared.clone());
        send(
            &mut io,
            connect_packet(version, Some("Bearer bad"), 0),
            version,
        )
        .await;
        assert_eq!(
            connack(&mut io, version).await,
            ReasonCode::BAD_USER_NAME_OR_PASSWORD
        );
        let mut io = connect(shared.clone());
        send(&mut io, connect_packet(version, None, 0), version).await;
        assert_eq!(
            connack(&mut io, version).await,
            ReasonCode::BAD_USER_NAME_OR_PASSWORD
        );
        let mut io = connect(shared.clone());
        send(
            &mut io,
            connect_packet(version, Some("Bearer good"), 0),
            version,
        )
        .await;
        assert_eq!(connack(&mut io, version).await, ReasonCode::SUCCESS);
    }
    let seen = recorder.seen.lock().unwrap();
    assert_eq!(seen.usernames, vec![None, None]);
    assert_eq!(seen.identities, vec![Some("alice".to_owned()); 2]);
}

/// A session holding `roles`, as a tls server's `x509` guard makes one.
struct RolesSession(Vec<String>);

impl GuardSession for RolesSession {
    fn identity(&self) -> Option<&str> {
        Some("bob")
    }
    fn verify(&self, roles: &[String]) -> bool {
        roles.iter().all(|role| self.0.contains(role))
    }
    fn attribute(&self, _name: &str) -> Option<String> {
        None
    }
    fn expires_at(&self) -> Option<SystemTime> {
        None
    }
}

/// A client end of a byte stream handed to the server's handler, carrying a `test:x509`
/// session holding `roles` (none when `None`).
fn connect_carrying(shared: Arc<Shared>, roles: Option<&[&str]>) -> DuplexStream {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let mut info = StreamInfo::default();
    if let Some(roles) = roles {
        let roles = roles.iter().map(|role| (*role).to_owned()).collect();
        info.authorization
            .insert("test:x509", Arc::new(RolesSession(roles)));
    }
    let handler = crate::ServerHandler { shared };
    tokio::spawn(async move { handler.accept(ByteStream::new(server, info)).await });
    client
}

#[tokio::test]
async fn without_a_guard_routes_are_guarded_by_the_sessions_the_stream_carries() {
    let guarded = vec![("x509".to_owned(), vec!["internal".to_owned()])];
    let shared = shared_guarded(Recorder::default(), false, guarded.clone());
    for version in [Version::V5, Version::V3_1_1] {
        let mut io = connect_carrying(shared.clone(), Some(&["internal"]));
        send(&mut io, connect_packet(version, None, 0), version).await;
        assert_eq!(connack(&mut io, version).await, ReasonCode::SUCCESS);
        for roles in [Some(&["other"][..]), None] {
            let mut io = connect_carrying(shared.clone(), roles);
            send(&mut io, connect_packet(version, None, 0), version).await;
            assert_eq!(connack(&mut io, version).await, ReasonCode::NOT_AUTHORIZED);
        }
    }
    // A server with a guard of its own decides with that guard alone: the session the
    // stream carries does not satisfy the route.
    let shared = shared_guarded(Recorder::default(), true, guarded);
    let mut io = connect_carrying(shared, Some(&["internal"]));
    send(
        &mut io,
        connect_packet(Version::V5, Some("Bearer good"), 0),
        Version::V5,
    )
    .await;
    assert_eq!(
        connack(&mut io, Version::V5).await,
        ReasonCode::NOT_AUTHORIZED
    );
}

fn publish(topic: &str, qos: QoS, packet_id: u16) -> Packet {
    Packet::Publish(Publish {
        qos,
        topic: topic.into(),
        packet_id: (qos != QoS::AtMostOnce).then_some(packet_id),
        payload: Bytes::from_static(b"x"),
        ..Publish::default()
    })
}

/// A server whose `other/#` publications go to a second exit: the session there is opened
/// with what CONNECT gave (username, user properties), as the first one was.
#[tokio::test]
async fn a_publication_routed_to_a_second_exit_opens_a_session_there_with_connects_fields() {
    let first = Recorder::default();
    let second = Recorder::default();
    let exits: [Arc<dyn MqttHandler>; 2] = [Arc::new(first.clone()), Arc::new(second.clone())];
    let routes = routes_of(
        vec![
            publish_route("sensors/#", "first", Vec::new()),
            publish_route("other/#", "second", Vec::new()),
        ],
        |name| exits[usize::from(name == "second")].clone(),
    );
    let shared = shared_of(routes, None, Vec::new());
    let mut io = connect(shared);
    send(
        &mut io,
        connect_packet(Version::V5, Some("dev"), 0),
        Version::V5,
    )
    .await;
    assert_eq!(connack(&mut io, Version::V5).await, ReasonCode::SUCCESS);
    for (topic, packet_id) in [("other/a", 1), ("sensors/a", 2)] {
        send(
            &mut io,
            publish(topic, QoS::AtLeastOnce, packet_id),
            Version::V5,
        )
        .await;
        match receive(&mut io, Version::V5).await {
            Some(Packet::PubAck(ack)) => assert_eq!(
                (ack.packet_id, ack.reason),
                (packet_id, ReasonCode::SUCCESS)
            ),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    let first = first.seen.lock().unwrap();
    let second = second.seen.lock().unwrap();
    assert_eq!(first.usernames, vec![Some("dev".to_owned())]);
    assert_eq!(second.usernames, vec![Some("dev".to_owned())]);
    assert_eq!(second.published.len(), 1);
    assert_eq!(second.published[0].topic, "other/a");
    assert_eq!(first.published.len(), 1);
    assert_eq!(first.published[0].topic, "sensors/a");
}

#[tokio::test]
async fn unrouted_publications_are_refused_in_5_and_closed_in_3_1_1() {
    let recorder = Recorder::default();
    let shared = shared(recorder.clone(), false);
    let mut io = connect(shared.clone());
    send(&mut io, connect_packet(Version::V5, None, 0), Version::V5).await;
    connack(&mut io, Version::V5).await;
    send(
        &mut io,
        publish("private/a", QoS::AtLeastOnce, 7),
        Version::V5,
    )
    .await;
    send(
        &mut io,
        publish("sensors/a", QoS::AtLeastOnce, 8),
        Version::V5,
    )
    .await;
    let acks: Vec<_> = [
        receive(&mut io, Version::V5).await,
        receive(&mut io, Version::V5).await,
    ]
    .into_iter()
    .map(|packet| match packet {
        Some(Packet::PubAck(ack)) => (ack.packet_id, ack.reason),
        other => panic!("expected PUBACK, got {other:?}"),
    })
    .collect();
    assert_eq!(
        acks,
        vec![(7, ReasonCode::NOT_AUTHORIZED), (8, ReasonCode::SUCCESS)]
    );
    let mut io = connect(shared);
    send(
        &mut io,
        connect_packet(Version::V3_1_1, None, 0),
        Version::V3_1_1,
    )
    .await;
    connack(&mut io, Version::V3_1_1).await;
    send(
        &mut io,
        publish("private/a", QoS::AtLeastOnce, 1),
        Version::V3_1_1,
    )
    .await;
    assert_eq!(receive(&mut io, Version::V3_1_1).await, None);
    let published = &recorder.seen.lock().unwrap().published;
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].topic, "sensors/a");
}

#[tokio::test]
async fn a_client_over_its_receive_maximum_is_disconnected() {
    let recorder = Recorder {
        stall: true,
        ..Recorder::default()
    };
    let mut io = connect(shared(recorder, false));
    send(&mut io, connect_packet(Version::V5, None, 0), Version::V5).await;
    let Some(Packet::ConnAck(connack)) = receive(&mut io, Version::V5).await else {
        panic!("no CONNACK");
    };
    assert_eq!(connack.properties.receive_maximum, Some(2));
    for id in 1..=3 {
        send(
            &mut io,
            publish("sensors/a", QoS::AtLeastOnce, id),
            Version::V5,
        )
        .await;
    }
    match receive(&mut io, Version::V5).await {
        Some(Packet::Disconnect(disconnect)) => {
            assert_eq!(disconnect.reason, ReasonCode::RECEIVE_MAXIMUM_EXCEEDED)
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_disconnected_after_one_and_a_half_keep_alives() {
    let mut io = connect(shared(Recorder::default(), false));
    let silence = pinged_then_timed_out(&mut io).await;
    assert!(silence >= Duration::from_millis(2900));
}

/// Connects with a 2 s keep-alive; a ping within 1.5 × 2 s keeps the connection, then
/// silence ends it with DISCONNECT 0x8d: how long the silence lasted.
async fn pinged_then_timed_out(io: &mut DuplexStream) -> Duration {
    send(io, connect_packet(Version::V5, None, 2), Version::V5).await;
    connack(io, Version::V5).await;
    tokio::time::sleep(Duration::from_millis(2900)).await;
    send(io, Packet::PingReq, Version::V5).await;
    assert_eq!(receive(io, Version::V5).await, Some(Packet::PingResp));
    let started = tokio::time::Instant::now();
    match receive(io, Version::V5).await {
        Some(Packet::Disconnect(disconnect)) => {
            assert_eq!(disconnect.reason, ReasonCode::KEEP_ALIVE_TIMEOUT)
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    started.elapsed()
}

/// Over a transport with an idle timeout, the transport's timer is the keep-alive timer: the
/// server sets it to 1.5 × the keep-alive on reads only, and its expiry ends the connection
/// with DISCONNECT 0x8d, not as a broken connection.
#[tokio::test(start_paused = true)]
async fn over_a_transport_its_idle_timer_times_the_keep_alive() {
    let (mut io, server) = tokio::io::duplex(64 * 1024);
    let server = zilla_engine::idle::IdleTimeout::new(server, Duration::from_secs(300));
    let control = server.control();
    let info = StreamInfo {
        idle: control.clone(),
        ..StreamInfo::default()
    };
    tokio::spawn(shared(Recorder::default(), false).serve(server, Some(info), Default::default()));
    let silence = pinged_then_timed_out(&mut io).await;
    assert_eq!(control.timeout(), Some(Duration::from_secs(3)));
    assert!(silence >= Duration::from_millis(2900) && silence <= Duration::from_millis(3100));
}

/// A model that takes ASCII digits only.
struct Digits;

impl zilla_engine::components::Validator for Digits {
    fn validate(&self, data: &[u8]) -> Result<(), String> {
        if !data.is_empty() && data.iter().all(u8::is_ascii_digit) {
            Ok(())
        } else {
            Err("not digits".into())
        }
    }
}

#[tokio::test]
async fn publications_a_topic_model_refuses_are_closed_with_0x99_and_not_passed_on() {
    let recorder = Recorder::default();
    let shared = shared(recorder.clone(), false);
    let counted = |payload: &'static [u8], id: u16| {
        Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            topic: "sensors/a/count".into(),
            packet_id: Some(id),
            payload: Bytes::from_static(payload),
            ..Publish::default()
        })
    };
    let mut io = connect(shared.clone());
    send(&mut io, connect_packet(Version::V5, None, 0), Version::V5).await;
    connack(&mut io, Version::V5).await;
    send(&mut io, counted(b"42", 1), Version::V5).await;
    match receive(&mut io, Version::V5).await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.reason, ReasonCode::SUCCESS),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    // Topics no entry covers are not checked.
    send(
        &mut io,
        publish("sensors/a", QoS::AtLeastOnce, 2),
        Version::V5,
    )
    .await;
    match receive(&mut io, Version::V5).await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.reason, ReasonCode::SUCCESS),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    send(&mut io, counted(b"forty-two", 3), Version::V5).await;
    match receive(&mut io, Version::V5).await {
        Some(Packet::Disconnect(disconnect)) => {
            assert_eq!(disconnect.reason, ReasonCode::PAYLOAD_FORMAT_INVALID)
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    assert_eq!(receive(&mut io, Version::V5).await, None);
    let mut io = connect(shared);
    send(
        &mut io,
        connect_packet(Version::V3_1_1, None, 0),
        Version::V3_1_1,
    )
    .await;
    connack(&mut io, Version::V3_1_1).await;
    send(&mut io, counted(b"x", 4), Version::V3_1_1).await;
    assert_eq!(receive(&mut io, Version::V3_1_1).await, None);
    let published = &recorder.seen.lock().unwrap().published;
    let payloads: Vec<&[u8]> = published.iter().map(|m| m.payload.as_ref()).collect();
    assert_eq!(payloads, vec![b"42".as_slice(), b"x".as_slice()]);
}

/// A server over `store`, the way `options.store` hands it one.
fn shared_over(recorder: Recorder, store: Arc<zilla_store_memory::MemoryStore>) -> Arc<Shared> {
    let mut shared = Arc::try_unwrap(shared(recorder, false))
        .ok()
        .expect("a fresh server state has one owner");
    shared.store = store;
    Arc::new(shared)
}

#[tokio::test]
async fn a_second_connection_takes_over_through_the_store() {
    use zilla_engine::components::Store;
    let store = Arc::new(zilla_store_memory::MemoryStore::new(1 << 20));
    let shared = shared_over(Recorder::default(), store.clone());
    let version = Version::V5;
    let mut first = connect(shared.clone());
    send(&mut first, connect_packet(version, None, 0), version).await;
    assert_eq!(connack(&mut first, version).await, ReasonCode::SUCCESS);
    let first_record = store
        .get("c1#owner")
        .expect("the first connection's record");
    let mut second = connect(shared.clone());
    send(&mut second, connect_packet(version, None, 0), version).await;
    assert_eq!(connack(&mut second, version).await, ReasonCode::SUCCESS);
    let told = tokio::time::timeout(Duration::from_secs(5), receive(&mut first, version));
    match told.await.expect("the first connection is told within 5 s") {
        Some(Packet::Disconnect(disconnect)) => {
            assert_eq!(disconnect.reason, ReasonCode::SESSION_TAKEN_OVER)
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    assert_eq!(receive(&mut first, version).await, None);
    let second_record = store
        .get("c1#owner")
        .expect("the second connection's record");
    assert_ne!(first_record, second_record);
    // The replaced connection ending leaves the new owner's record alone; the owner ending
    // removes it.
    send(
        &mut second,
        Packet::Disconnect(codec::Disconnect::with_reason(ReasonCode::SUCCESS)),
        version,
    )
    .await;
    assert_eq!(receive(&mut second, version).await, None);
    tokio::time::timeout(Duration::from_secs(5), async {
        while !store.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the store emptied once both connections ended");
    assert_eq!(store.held(), 0);
}

#[tokio::test]
async fn a_full_store_refuses_the_connection_as_busy() {
    let store = Arc::new(zilla_store_memory::MemoryStore::new(16));
    let shared = shared_over(Recorder::default(), store.clone());
    for version in [Version::V5, Version::V3_1_1] {
        let mut io = connect(shared.clone());
        send(&mut io, connect_packet(version, None, 0), version).await;
        let expected = match version {
            Version::V5 => ReasonCode::SERVER_BUSY,
            // 3.1.1 has no "busy": its closest return code is "server unavailable".
            Version::V3_1_1 => ReasonCode::SERVER_UNAVAILABLE,
        };
        assert_eq!(connack(&mut io, version).await, expected);
        assert_eq!(receive(&mut io, version).await, None);
    }
    assert!(store.is_empty());
}

/// [`Digits`], whose payloads starting with `F` name a schema it must fetch first: the fetch
/// lands when `landed` is notified.
struct FetchingDigits {
    landed: Arc<tokio::sync::Notify>,
}

impl zilla_engine::components::Validator for FetchingDigits {
    fn validate(&self, data: &[u8]) -> Result<(), String> {
        Digits.validate(data.strip_prefix(b"F").unwrap_or(data))
    }

    fn fetch(&self, data: &[u8]) -> Option<zilla_engine::components::Fetching> {
        let landed = self.landed.clone();
        data.starts_with(b"F")
            .then(|| Box::pin(async move { landed.notified().await }) as _)
    }
}

#[tokio::test]
async fn a_publication_waiting_for_its_schema_holds_up_no_other_connection() {
    let recorder = Recorder::default();
    let landed = Arc::new(tokio::sync::Notify::new());
    let mut state = Arc::try_unwrap(shared(recorder.clone(), false))
        .ok()
        .expect("a fresh server state has one owner");
    state.topics = vec![TopicContent {
        filter: "sensors/+/count".into(),
        validator: Some(Arc::new(FetchingDigits {
            landed: landed.clone(),
        })),
    }];
    let state = Arc::new(state);
    let counted = |payload: &'static [u8], id: u16| {
        Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            topic: "sensors/a/count".into(),
            packet_id: Some(id),
            payload: Bytes::from_static(payload),
            ..Publish::default()
        })
    };
    let mut waiting = connect(state.clone());
    send(
        &mut waiting,
        connect_packet(Version::V5, None, 0),
        Version::V5,
    )
    .await;
    connack(&mut waiting, Version::V5).await;
    send(&mut waiting, counted(b"F42", 1), Version::V5).await;

    // The test runs on one thread, as a worker does: the other client is answered meanwhile.
    let mut other = connect(state);
    let mut other_connect = connect_packet(Version::V5, None, 0);
    if let Packet::Connect(connect) = &mut other_connect {
        connect.client_id = "c2".into();
    }
    send(&mut other, other_connect, Version::V5).await;
    connack(&mut other, Version::V5).await;
    send(&mut other, counted(b"7", 1), Version::V5).await;
    match receive(&mut other, Version::V5).await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.reason, ReasonCode::SUCCESS),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    assert!(
        tokio::time::timeout(
            Duration::from_millis(100),
            receive(&mut waiting, Version::V5)
        )
        .await
        .is_err(),
        "answered before its schema was fetched"
    );

    landed.notify_one();
    match receive(&mut waiting, Version::V5).await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.reason, ReasonCode::SUCCESS),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    let published = &recorder.seen.lock().unwrap().published;
    let payloads: Vec<&[u8]> = published.iter().map(|m| m.payload.as_ref()).collect();
    assert_eq!(payloads, vec![b"7".as_slice(), b"F42".as_slice()]);
}

/// A server whose SUBSCRIBEs and publications to `sensors/#` go to `recorder`, with a byte
/// bound of 300 on what waits for it.
fn bounded_server(recorder: &Recorder) -> Arc<Shared> {
    let exit: Arc<dyn MqttHandler> = Arc::new(recorder.clone());
    let subscribe_route = RouteConfig {
        when: vec![json!({"subscribe": [{"topic": "sensors/#"}]})],
        guarded: Vec::new(),
        exit: "exit".into(),
        with: None,
        origin: Origin::default(),
    };
    let routes = vec![
        subscribe_route,
        publish_route("sensors/#", "exit", Vec::new()),
    ];
    Arc::new(Shared {
        routes: routes_of(routes, |_| exit.clone()),
        topics: Vec::new(),
        settings: Settings {
            pending_bytes_maximum: 300,
            receive_maximum: 100,
            ..settings()
        },
        credentials: None,
        lifecycle: Lifecycle::default(),
        store: Arc::new(zilla_store_memory::MemoryStore::new(1 << 20)),
    })
}

/// A connected client of [`bounded_server`] whose exit answers publications and SUBSCRIBEs
/// only as the returned gate gives permits.
async fn gated_connection(
    version: Version,
) -> (DuplexStream, Recorder, Arc<tokio::sync::Semaphore>) {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let recorder = Recorder {
        gate: Some(gate.clone()),
        ..Recorder::default()
    };
    let mut io = connect(bounded_server(&recorder));
    send(&mut io, connect_packet(version, None, 0), version).await;
    assert_eq!(connack(&mut io, version).await, ReasonCode::SUCCESS);
    (io, recorder, gate)
}

/// QoS 1 publications 1 to 3 of 120 bytes each: the third passes [`bounded_server`]'s byte
/// bound while the first two wait.
async fn send_three_publications(io: &mut DuplexStream, version: Version) {
    for id in 1..=3u16 {
        let publish = Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            topic: "sensors/a".into(),
            packet_id: Some(id),
            payload: Bytes::from(vec![b'p'; 120]),
            ..Publish::default()
        });
        send(io, publish, version).await;
    }
}

/// SUBSCRIBEs of a little over 100 bytes each, while their exit has not answered: those past
/// the byte bound of what waits (300) are refused in turn (0x97; 0x80 in 3.1.1) without
/// reaching the exit, and the connection goes on reading (a PINGREQ behind them is answered).
#[tokio::test]
async fn subscribes_past_the_byte_bound_of_what_waits_are_refused() {
    for version in [Version::V5, Version::V3_1_1] {
        let (mut io, recorder, gate) = gated_connection(version).await;
        let filters: Vec<String> = (0..5)
            .map(|index| format!("sensors/{index}/{}", "x".repeat(96)))
            .collect();
        for (index, filter) in filters.iter().enumerate() {
            let subscribe = codec::Subscribe {
                packet_id: index as u16 + 1,
                properties: Properties::default(),
                filters: vec![(filter.clone(), codec::SubscriptionOptions::default())],
            };
            send(&mut io, Packet::Subscribe(subscribe), version).await;
        }
        send(&mut io, Packet::PingReq, version).await;
        assert!(matches!(
            receive(&mut io, version).await,
            Some(Packet::PingResp)
        ));
        assert_eq!(recorder.seen.lock().unwrap().subscribed, filters[..2]);
        gate.add_permits(2);
        let refused = match version {
            Version::V5 => ReasonCode::QUOTA_EXCEEDED,
            _ => ReasonCode::UNSPECIFIED_ERROR,
        };
        for index in 1..=5u16 {
            match receive(&mut io, version).await {
                Some(Packet::SubAck(suback)) => {
                    assert_eq!(suback.packet_id, index);
                    let expected = if index <= 2 {
                        ReasonCode::SUCCESS
                    } else {
                        refused
                    };
                    assert_eq!(suback.reasons, vec![expected], "{version:?} SUBACK {index}");
                }
                other => panic!("expected SUBACK {index}, got {other:?}"),
            }
        }
    }
}

/// QoS 1 publications past the byte bound of what waits: refused in turn with PUBACK 0x97 in
/// MQTT 5, after the PUBACKs of those before; a 3.1.1 connection, which cannot be told, is
/// closed at that turn, and nothing it sends after the refused one is handled (a QoS 0
/// publication behind it does not reach the exit, a PINGREQ is not answered). Nothing
/// refused reaches the exit.
#[tokio::test]
async fn publications_past_the_byte_bound_of_what_waits_are_refused() {
    for version in [Version::V5, Version::V3_1_1] {
        let (mut io, recorder, gate) = gated_connection(version).await;
        send_three_publications(&mut io, version).await;
        send(
            &mut io,
            publish("sensors/late", QoS::AtMostOnce, 0),
            version,
        )
        .await;
        send(&mut io, Packet::PingReq, version).await;
        let published = || recorder.seen.lock().unwrap().published.len();
        if version == Version::V5 {
            assert!(matches!(
                receive(&mut io, version).await,
                Some(Packet::PingResp)
            ));
            assert_eq!(published(), 3, "the first two and the QoS 0 one");
        } else {
            let answer =
                tokio::time::timeout(Duration::from_millis(200), receive(&mut io, version));
            assert!(answer.await.is_err(), "answered after the refusal");
            assert_eq!(published(), 2, "the first two only");
        }
        gate.add_permits(2);
        for id in 1..=2u16 {
            match receive(&mut io, version).await {
                Some(Packet::PubAck(ack)) => {
                    assert_eq!((ack.packet_id, ack.reason), (id, ReasonCode::SUCCESS));
                }
                other => panic!("expected PUBACK {id}, got {other:?}"),
            }
        }
        match (version, receive(&mut io, version).await) {
            (Version::V5, Some(Packet::PubAck(ack))) => {
                assert_eq!((ack.packet_id, ack.reason), (3, ReasonCode::QUOTA_EXCEEDED));
            }
            (Version::V3_1_1, None) => assert_eq!(published(), 2),
            (_, other) => panic!("{version:?}: expected the third refused, got {other:?}"),
        }
    }
}

/// An UNSUBSCRIBE past the byte bound of what waits, behind two SUBSCRIBEs: refused in its
/// turn with UNSUBACK 0x80 in MQTT 5; a 3.1.1 connection is closed in its turn, after both
/// SUBACKs.
#[tokio::test]
async fn an_unsubscribe_past_the_byte_bound_is_refused_in_its_turn() {
    for version in [Version::V5, Version::V3_1_1] {
        let (mut io, recorder, gate) = gated_connection(version).await;
        let filter = |index: usize| format!("sensors/{index}/{}", "x".repeat(96));
        for index in 1..=2u16 {
            let subscribe = codec::Subscribe {
                packet_id: index,
                properties: Properties::default(),
                filters: vec![(filter(index.into()), codec::SubscriptionOptions::default())],
            };
            send(&mut io, Packet::Subscribe(subscribe), version).await;
        }
        let unsubscribe = codec::Unsubscribe {
            packet_id: 3,
            properties: Properties::default(),
            filters: vec![filter(1)],
        };
        send(&mut io, Packet::Unsubscribe(unsubscribe), version).await;
        gate.add_permits(2);
        for index in 1..=2u16 {
            match receive(&mut io, version).await {
                Some(Packet::SubAck(suback)) => assert_eq!(suback.packet_id, index),
                other => panic!("expected SUBACK {index}, got {other:?}"),
            }
        }
        assert_eq!(recorder.seen.lock().unwrap().subscribed.len(), 2);
        match (version, receive(&mut io, version).await) {
            (Version::V5, Some(Packet::UnsubAck(unsuback))) => {
                assert_eq!(unsuback.packet_id, 3);
                assert_eq!(unsuback.reasons, vec![ReasonCode::UNSPECIFIED_ERROR]);
            }
            (Version::V3_1_1, None) => {}
            (_, other) => panic!("{version:?}: expected the UNSUBSCRIBE refused, got {other:?}"),
        }
    }
}

/// A 3.1.1 connection closing at a refused publication's turn, while the publications before
/// it wait for an exit that does not answer, still ends when the client goes away: what the
/// client sends is read (and dropped) meanwhile, so its end of stream is seen.
#[tokio::test]
async fn a_closing_connection_still_ends_when_its_client_goes() {
    let (mut io, recorder, _gate) = gated_connection(Version::V3_1_1).await;
    send_three_publications(&mut io, Version::V3_1_1).await;
    send(&mut io, Packet::PingReq, Version::V3_1_1).await;
    drop(io);
    let ended = async {
        while recorder.seen.lock().unwrap().dropped == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), ended)
        .await
        .expect("the connection never ended");
    assert_eq!(recorder.seen.lock().unwrap().published.len(), 2);
}
