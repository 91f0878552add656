//! The MQTT load clients' connection: MQTT 3.1.1 over a tokio TCP socket, framed and encoded
//! with the gateway's own codec (`zilla_binding_mqtt::codec`), so the same client talks to
//! the gateway and to mosquitto and neither side is favoured by a client library's choices.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use zilla_binding_mqtt::codec::{
    self, Connect, Decoder, Packet, Properties, Publish, QoS, ReasonCode, Subscribe,
    SubscriptionOptions, Version,
};

/// The largest packet a load client accepts: the benchmarks' payloads are far smaller.
const MAX_PACKET: u32 = 64 * 1024;
/// Bytes read from the socket at once.
const READ_CHUNK: usize = 16 * 1024;
/// How long a server may take to answer CONNECT or SUBSCRIBE.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// One MQTT 3.1.1 client connection.
pub struct Connection {
    socket: TcpStream,
    decoder: Decoder,
    /// Received bytes not yet decoded: at most one partial packet plus one read.
    input: BytesMut,
    /// Encoded packets not yet written.
    output: BytesMut,
}

impl Connection {
    /// Connects to `server`, from `source` when given (another loopback address when one
    /// address runs out of ephemeral ports), sends CONNECT and waits for a successful CONNACK.
    pub async fn connect(
        server: SocketAddr,
        source: Option<IpAddr>,
        client_id: &str,
        keep_alive: u16,
    ) -> Result<Self> {
        let socket = match source {
            None => TcpStream::connect(server).await,
            Some(source) => {
                let socket = TcpSocket::new_v4()?;
                socket.bind(SocketAddr::new(source, 0))?;
                socket.connect(server).await
            }
        }
        .with_context(|| format!("cannot connect to {server}"))?;
        socket.set_nodelay(true)?;
        let mut decoder = Decoder::new(MAX_PACKET);
        // A client knows the version it asks for; the decoder otherwise assumes MQTT 5.
        decoder.version = Some(Version::V3_1_1);
        let mut connection = Self {
            socket,
            decoder,
            input: BytesMut::with_capacity(READ_CHUNK),
            output: BytesMut::new(),
        };
        connection.queue(&Packet::Connect(Box::new(Connect {
            version: Version::V3_1_1,
            clean_start: true,
            keep_alive,
            properties: Properties::default(),
            client_id: client_id.to_owned(),
            will: None,
            username: None,
            password: None,
        })))?;
        connection.flush().await?;
        match connection.answer().await? {
            Packet::ConnAck(connack) if connack.reason == ReasonCode::SUCCESS => Ok(connection),
            Packet::ConnAck(connack) => bail!("CONNACK refused: {:?}", connack.reason),
            other => bail!("expected CONNACK, got {other:?}"),
        }
    }

    /// Subscribes to `filter` at `qos` and waits for a SUBACK granting it.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Result<()> {
        self.queue(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            properties: Properties::default(),
            filters: vec![(
                filter.to_owned(),
                SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                },
            )],
        }))?;
        self.flush().await?;
        match self.answer().await? {
            Packet::SubAck(suback) if suback.reasons.iter().all(|r| !r.is_error()) => Ok(()),
            Packet::SubAck(suback) => bail!("SUBACK refused: {:?}", suback.reasons),
            other => bail!("expected SUBACK, got {other:?}"),
        }
    }

    /// Encodes a PUBLISH for the next [`Connection::flush`].
    pub fn queue_publish(
        &mut self,
        topic: &str,
        qos: QoS,
        packet_id: Option<u16>,
        payload: Bytes,
    ) -> Result<()> {
        self.queue(&Packet::Publish(Publish {
            qos,
            topic: topic.to_owned(),
            packet_id,
            payload,
            ..Publish::default()
        }))
    }

    /// Encodes `packet` for the next [`Connection::flush`].
    pub fn queue(&mut self, packet: &Packet) -> Result<()> {
        codec::encode(packet, Version::V3_1_1, &mut self.output)
            .with_context(|| format!("cannot encode {packet:?}"))
    }

    /// Writes what was queued.
    pub async fn flush(&mut self) -> Result<()> {
        if !self.output.is_empty() {
            self.socket.write_all(&self.output).await?;
            self.output.clear();
        }
        Ok(())
    }

    /// The next packet from the server; an error when the connection ends.
    pub async fn receive(&mut self) -> Result<Packet> {
        loop {
            if let Some(packet) = self.decoder.decode(&mut self.input)? {
                return Ok(packet);
            }
            self.input.reserve(READ_CHUNK);
            if self.socket.read_buf(&mut self.input).await? == 0 {
                bail!("the server closed the connection");
            }
        }
    }

    /// Packets already received and decodable without reading the socket again.
    pub fn buffered(&mut self) -> Result<Option<Packet>> {
        Ok(self.decoder.decode(&mut self.input)?)
    }

    /// The next packet, within [`ANSWER_TIMEOUT`].
    async fn answer(&mut self) -> Result<Packet> {
        tokio::time::timeout(ANSWER_TIMEOUT, self.receive())
            .await
            .with_context(|| format!("no answer within {ANSWER_TIMEOUT:?}"))?
    }

    /// PINGREQ, answered by PINGRESP: the connection is still served.
    pub async fn ping(&mut self) -> Result<()> {
        self.queue(&Packet::PingReq)?;
        self.flush().await?;
        match self.answer().await? {
            Packet::PingResp => Ok(()),
            other => bail!("expected PINGRESP, got {other:?}"),
        }
    }
}
