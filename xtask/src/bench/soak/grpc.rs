//! The soak's gRPC part: each replica also serves `examples/grpc.kafka.fanout` (its bindings
//! renamed `grpc_*` and added to the replica's config, with its proto beside the config), so
//! `example.FanoutService/FanoutServerStream` streams the records of `messages` through the
//! cache, each message carrying its id in field 32767. The values reach `messages` through the
//! replicas too: the merged config adds `POST /messages` (http-kafka, `capability: produce`)
//! next to the SSE example's `POST /events`, and the producer posts each value as an encoded
//! `FanoutMessage`. Subscribers ([`stream`]) are tonic clients behind haproxy's gRPC frontend,
//! each resuming with `last-message-id` (its last message id, base64url) whenever its stream
//! ends, with the SSE subscribers' bookkeeping and back-off ([`super::clients`]).

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use bytes::Bytes;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message as _;
use tokio::net::TcpStream;
use tokio::sync::SemaphorePermit;
use tokio::time::Instant;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::metadata::MetadataValue;
use zilla_tests::workspace_dir;

use super::clients::{Ended, REQUEST_TIMEOUT, Route, Shared, Signals, Subscription, Transport};

/// The example whose bindings each replica serves next to the SSE and MQTT ones.
const EXAMPLE: &str = "examples/grpc.kafka.fanout";
/// The proto the example's catalog names, relative to the config's directory.
pub const PROTO: &str = "proto/fanout.proto";
/// The topic the fan-out streams.
pub const TOPIC: &str = "messages";
/// The produce route the merged config adds for [`TOPIC`].
pub const PATH: &str = "/messages";
const METHOD: &str = "/example.FanoutService/FanoutServerStream";
/// The example's `reliability.metadata`.
const LAST_MESSAGE_ID: &str = "last-message-id";
/// Given to every binding of the example whose name does not start with it already.
const PREFIX: &str = "grpc_";
/// The http-kafka binding producing `POST /messages` to [`TOPIC`].
const PUBLISH_BINDING: &str = "messages_publish";

/// Where the gRPC subscribers' values are `POST`ed: each an encoded `FanoutMessage`.
pub const MESSAGES: Route = Route {
    path: PATH,
    content_type: "application/octet-stream",
    encode: encode_value,
};

/// `FanoutRequest` of the example's proto.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FanoutRequest {}

/// `FanoutMessage` of the example's proto.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FanoutMessage {
    #[prost(string, tag = "1")]
    pub message: String,
    /// Added by the gateway (`reliability.field`): resumes after this message.
    #[prost(bytes = "vec", tag = "32767")]
    pub message_id: Vec<u8>,
}

fn encode_value(value: String) -> Bytes {
    Bytes::from(
        FanoutMessage {
            message: value,
            message_id: Vec::new(),
        }
        .encode_to_vec(),
    )
}

/// The `message` of a record of [`TOPIC`]; `None` when it is not a `FanoutMessage`.
pub fn decode_value(record: &[u8]) -> Option<String> {
    FanoutMessage::decode(record).ok().map(|m| m.message)
}

/// The example's proto, written beside each replica's config.
pub fn proto() -> Result<String> {
    let path = workspace_dir().join(EXAMPLE).join(PROTO);
    std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
}

/// `yaml` (the SSE and MQTT examples merged) with the gRPC example's catalog and bindings
/// (renamed with [`PREFIX`]) before its `telemetry`, and `POST /messages` producing to
/// [`TOPIC`] next to the SSE example's `POST /events`.
pub fn with_grpc_bindings(yaml: &str) -> Result<String> {
    let path = workspace_dir().join(EXAMPLE).join("zilla.yaml");
    let grpc_yaml = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let catalogs = between(&grpc_yaml, "\ncatalogs:\n", "\nbindings:\n")
        .with_context(|| format!("{}: no catalogs before the bindings", path.display()))?;
    let bindings_at = grpc_yaml
        .find("\nbindings:\n")
        .with_context(|| format!("{}: no bindings", path.display()))?;
    let grpc_bindings = prefixed(&grpc_yaml[bindings_at + "\nbindings:\n".len()..]);
    let cache_client = format!("{PREFIX}kafka_cache_client");
    if !binding_names(&grpc_bindings).contains(&cache_client.as_str()) {
        bail!("{}: no kafka_cache_client binding", path.display());
    }
    let publish = format!(
        "  {PUBLISH_BINDING}:\n    type: http-kafka\n    kind: proxy\n    routes:\n      - when:\n          - method: POST\n            path: {PATH}\n        exit: {cache_client}\n        with:\n          capability: produce\n          topic: {TOPIC}\n"
    );
    let added = format!("{publish}{}", grpc_bindings.trim_end_matches('\n'));

    let events_route = "        exit: events_publish\n";
    let route_at = yaml
        .find(events_route)
        .context("the SSE example has no route to events_publish")?
        + events_route.len();
    let route = format!(
        "      - when:\n          - headers:\n              :method: POST\n              :path: {PATH}\n        exit: {PUBLISH_BINDING}\n"
    );
    let yaml = format!("{}{route}{}", &yaml[..route_at], &yaml[route_at..]);

    if yaml.contains("\ncatalogs:\n") {
        bail!("the replica config has catalogs of its own already");
    }
    let bindings_at = yaml
        .find("\nbindings:\n")
        .context("the replica config has no bindings section")?;
    let telemetry_at = yaml
        .find("\ntelemetry:")
        .filter(|&at| at > bindings_at)
        .context("the replica config has no telemetry section after its bindings")?;
    let existing = binding_names(&yaml[bindings_at + "\nbindings:\n".len()..telemetry_at]);
    if let Some(name) = binding_names(&added)
        .into_iter()
        .find(|name| existing.contains(name))
    {
        bail!("binding {name} of {EXAMPLE} is in the replica config already");
    }
    Ok(format!(
        "{}\ncatalogs:\n{catalogs}{}\n{added}{}",
        &yaml[..bindings_at],
        &yaml[bindings_at..telemetry_at],
        &yaml[telemetry_at..]
    ))
}

/// The names of the bindings in a `bindings:` section's body (its two-space keys).
fn binding_names(bindings: &str) -> Vec<&str> {
    bindings
        .lines()
        .filter_map(|line| line.strip_prefix("  "))
        .filter(|rest| !rest.starts_with(' '))
        .filter_map(|rest| rest.strip_suffix(':'))
        .collect()
}

/// `bindings` (a `bindings:` section's body) with every binding name not starting with
/// [`PREFIX`] given it, where it is defined and wherever an `exit` names it.
fn prefixed(bindings: &str) -> String {
    let names = binding_names(bindings);
    let renamed = |name: &str| {
        if names.contains(&name) && !name.starts_with(PREFIX) {
            format!("{PREFIX}{name}")
        } else {
            name.to_owned()
        }
    };
    bindings
        .lines()
        .map(|line| {
            if let Some(name) = line.strip_prefix("  ").and_then(|r| r.strip_suffix(':'))
                && !name.starts_with(' ')
            {
                return format!("  {}:\n", renamed(name));
            }
            let indent = line.len() - line.trim_start().len();
            match line.trim_start().strip_prefix("exit: ") {
                Some(exit) => format!("{}exit: {}\n", &line[..indent], renamed(exit.trim_end())),
                None => format!("{line}\n"),
            }
        })
        .collect()
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let to = from + text[from..].find(end)?;
    Some(&text[from..to])
}

/// One HTTP/2 connection as the service a tonic client calls.
struct Connection(http2::SendRequest<tonic::body::Body>);

impl Service<http::Request<tonic::body::Body>> for Connection {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(request))
    }
}

/// `example.FanoutService/FanoutServerStream`, resuming with `last-message-id`.
#[derive(Debug, Clone, Copy)]
pub struct Grpc;

impl Transport for Grpc {
    fn stream<'a>(
        self,
        shared: &'a Shared,
        subscription: &'a mut Subscription,
        opened_once: &'a mut bool,
        signals: Signals<'a>,
        permit: Option<SemaphorePermit<'a>>,
    ) -> impl Future<Output = Result<(bool, Ended)>> + Send + 'a {
        stream(shared, subscription, opened_once, signals, permit)
    }
}

/// Opens one `FanoutServerStream` call on a connection of its own (resuming after the last
/// message id seen) and reads it until it ends; returns whether it opened, and why it ended.
async fn stream(
    shared: &Shared,
    subscription: &mut Subscription,
    opened_once: &mut bool,
    (storm, stop): Signals<'_>,
    permit: Option<SemaphorePermit<'_>>,
) -> Result<(bool, Ended)> {
    if *stop.borrow() {
        return Ok((false, Ended::Stop));
    }
    let socket = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(shared.target))
        .await
        .context("connect timed out")??;
    socket.set_nodelay(true)?;
    let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(socket)).await?;
    let connection = tokio::spawn(connection);
    let opened = open(shared.target, sender, subscription.last_id.as_deref()).await;
    drop(permit);
    let mut messages = match opened {
        Ok(messages) => messages,
        Err(error) => {
            connection.abort();
            return Err(error);
        }
    };
    subscription.opened(shared, opened_once);
    storm.mark_unchanged();
    let ended = loop {
        tokio::select! {
            message = messages.message() => match message {
                Ok(Some(message)) => {
                    let id = (!message.message_id.is_empty())
                        .then(|| URL_SAFE.encode(&message.message_id));
                    subscription.event(shared, id, message.message.as_bytes(), Instant::now());
                }
                Ok(None) | Err(_) => break Ended::Closed,
            },
            _ = storm.changed() => break Ended::Storm,
            _ = stop.changed() => break Ended::Stop,
        }
    };
    connection.abort();
    Ok((true, ended))
}

/// The call, with `last-message-id` when there is one; an error unless the stream opened.
async fn open(
    target: SocketAddr,
    sender: http2::SendRequest<tonic::body::Body>,
    last_id: Option<&str>,
) -> Result<tonic::Streaming<FanoutMessage>> {
    let origin = http::Uri::try_from(format!("http://{target}"))?;
    let mut client = tonic::client::Grpc::with_origin(Connection(sender), origin);
    let mut request = tonic::Request::new(FanoutRequest {});
    if let Some(id) = last_id {
        request
            .metadata_mut()
            .insert(LAST_MESSAGE_ID, MetadataValue::try_from(id)?);
    }
    let response = tokio::time::timeout(REQUEST_TIMEOUT, async {
        client.ready().await?;
        let response = client
            .server_streaming(
                request,
                http::uri::PathAndQuery::from_static(METHOD),
                tonic_prost::ProstCodec::default(),
            )
            .await?;
        anyhow::Ok(response)
    })
    .await
    .context("no response head in time")??;
    Ok(response.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_round_trips_as_the_protos_message() -> Result<()> {
        let proto = proto()?;
        assert!(proto.contains("string message = 1;"), "{proto}");
        assert!(proto.contains("bytes message_id = 32767;"), "{proto}");
        assert!(
            proto.contains("rpc FanoutServerStream(FanoutRequest) returns (stream FanoutMessage);")
        );
        let body = encode_value("soak-7".to_owned());
        assert_eq!(&body[..], b"\x0a\x06soak-7");
        assert_eq!(decode_value(&body).as_deref(), Some("soak-7"));
        // As the gateway streams it: the id appended as field 32767.
        let mut streamed = body.to_vec();
        streamed.extend(b"\xfa\xff\x0f\x02\x01\x00");
        let message = FanoutMessage::decode(&streamed[..])?;
        assert_eq!(
            (message.message.as_str(), &message.message_id[..]),
            ("soak-7", &b"\x01\x00"[..])
        );
        Ok(())
    }

    #[test]
    fn bindings_are_prefixed_where_defined_and_named() {
        let bindings = "  tcp_server:\n    type: tcp\n    exit: grpc_server\n  grpc_server:\n    type: grpc\n    routes:\n      - when:\n          - method: x/*\n        exit: kafka_client\n  kafka_client:\n    type: kafka\n";
        let renamed = prefixed(bindings);
        assert_eq!(
            binding_names(&renamed),
            ["grpc_tcp_server", "grpc_server", "grpc_kafka_client"]
        );
        assert!(renamed.contains("    exit: grpc_server\n"), "{renamed}");
        assert!(
            renamed.contains("        exit: grpc_kafka_client\n"),
            "{renamed}"
        );
    }

    #[test]
    fn the_replica_config_serves_the_fanout_with_unique_binding_names() -> Result<()> {
        let path = workspace_dir().join("examples/sse.kafka.fanout/zilla.yaml");
        let yaml = super::super::mqtt::with_mqtt_bindings(&std::fs::read_to_string(path)?)?;
        let yaml = with_grpc_bindings(&yaml)?;
        let bindings_at = yaml.find("\nbindings:\n").context("no bindings")?;
        let telemetry_at = yaml.find("\ntelemetry:").context("no telemetry")?;
        let names = binding_names(&yaml[bindings_at..telemetry_at]);
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        for name in [
            "grpc_tcp_server",
            "grpc_server",
            "grpc_kafka",
            "grpc_kafka_cache_client",
            "kafka_client",
            "grpc_kafka_client",
            "north_mqtt_server",
            PUBLISH_BINDING,
        ] {
            assert!(names.contains(&name), "{name}: {names:?}");
        }
        // The catalog comes along, before the bindings; the produce route after `/events`'.
        let catalog = yaml
            .find("\ncatalogs:\n  host_filesystem:")
            .context("no catalog")?;
        assert!(catalog < bindings_at);
        assert!(yaml.contains(&format!("path: {PROTO}")), "{yaml}");
        let events = yaml
            .find(":path: /events\n        exit: events_publish")
            .context("events")?;
        let messages = yaml
            .find(&format!(":path: {PATH}\n        exit: {PUBLISH_BINDING}"))
            .context("no produce route")?;
        let page = yaml.find("exit: page_mapping").context("no page route")?;
        assert!(events < messages && messages < page, "{yaml}");
        assert_eq!(yaml.matches("\nbindings:").count(), 1, "{yaml}");
        Ok(())
    }
}
