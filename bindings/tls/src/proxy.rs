//! The `proxy` kind: routes a TLS connection by the SNI and ALPN of its ClientHello without
//! terminating it; the exit gets the untouched bytes, the ClientHello included.

use std::io;

use rustls::server::Acceptor;
use tokio::io::{AsyncRead, AsyncReadExt};
use zilla_engine::binding::Binding;
use zilla_engine::events::Events;
use zilla_engine::stream::{BoxFuture, ByteStream, BytesHandler, Rewind, StreamError, StreamInfo};

use crate::events;
use crate::route::{Settings, TlsRoutes, routable_on_port};

/// A built tls proxy.
pub struct TlsProxy {
    routes: TlsRoutes,
    settings: Settings,
    events: Events,
}

impl TlsProxy {
    /// A proxy over `routes`.
    pub fn new(routes: TlsRoutes, settings: Settings, events: Events) -> Self {
        Self {
            routes,
            settings,
            events,
        }
    }

    async fn serve(&self, stream: ByteStream) -> Result<(), StreamError> {
        let ByteStream { mut io, info } = stream;
        let port = info.destination.map(|address| address.port());
        if !routable_on_port(&self.routes, port) {
            return Err(StreamError::NoRoute);
        }
        let peeked = tokio::time::timeout(
            self.settings.handshake_timeout,
            read_client_hello(&mut io, self.settings.handshake_window),
        )
        .await;
        let hello = match peeked {
            Err(_) => {
                events::handshake_timed_out(
                    &self.events,
                    self.settings.handshake_timeout.as_secs(),
                );
                return Err(StreamError::Protocol("no ClientHello in time".into()));
            }
            Ok(Err(HelloError::Io(error))) => return Err(StreamError::Io(error)),
            Ok(Err(error)) => {
                let name = match &error {
                    HelloError::Invalid(error) => events::classify_tls(error),
                    _ => events::PROTOCOL_REJECTED,
                };
                self.events.emit(name, 0, error.to_string());
                return Err(StreamError::Protocol(error.to_string()));
            }
            Ok(Ok(hello)) => hello,
        };
        let exit = self
            .routes
            .resolve(None, |condition| {
                condition.matches_any_alpn(hello.server_name.as_deref(), &hello.alpn, port)
            })
            .map(|route| route.exit.clone());
        let Some(exit) = exit else {
            tracing::debug!(sni = ?hello.server_name, alpn = ?hello.alpn, ?port, "no route");
            return Err(StreamError::NoRoute);
        };
        let info = StreamInfo {
            authority: hello.server_name,
            alpn: hello.alpn,
            ..info
        };
        exit.accept(ByteStream::new(Rewind::new(hello.bytes, io), info))
            .await
    }
}

impl Binding for TlsProxy {}

impl BytesHandler for TlsProxy {
    fn accept(&self, stream: ByteStream) -> BoxFuture<'_, Result<(), StreamError>> {
        Box::pin(self.serve(stream))
    }

    fn connect(&self, _info: StreamInfo) -> BoxFuture<'_, Result<ByteStream, StreamError>> {
        Box::pin(async {
            Err(StreamError::Upstream(
                "a tls proxy accepts streams; it does not open them".into(),
            ))
        })
    }
}

/// A ClientHello read off a connection, with every byte read so far.
#[derive(Debug)]
pub struct PeekedHello {
    /// The bytes read, to replay to the exit.
    pub bytes: Vec<u8>,
    /// The SNI host name, lowercase.
    pub server_name: Option<String>,
    /// The offered ALPN protocols, in the client's order.
    pub alpn: Vec<String>,
}

/// Why no ClientHello could be read.
#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    /// The connection ended first.
    #[error("connection closed before a complete ClientHello")]
    Closed,
    /// More than the window was read without completing it.
    #[error("no complete ClientHello within {0} bytes")]
    TooLarge(usize),
    /// The bytes are not a TLS ClientHello.
    #[error("not a TLS ClientHello: {0}")]
    Invalid(rustls::Error),
    /// Reading failed.
    #[error(transparent)]
    Io(io::Error),
}

/// Reads until a whole ClientHello (possibly spread over several records) has arrived, keeping
/// at most `limit` bytes.
pub async fn read_client_hello<R: AsyncRead + Unpin>(
    io: &mut R,
    limit: usize,
) -> Result<PeekedHello, HelloError> {
    const CHUNK: usize = 4096;
    let mut acceptor = Acceptor::default();
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let read = io.read(&mut chunk).await.map_err(HelloError::Io)?;
        if read == 0 {
            return Err(HelloError::Closed);
        }
        bytes.extend_from_slice(&chunk[..read]);
        if bytes.len() > limit {
            return Err(HelloError::TooLarge(limit));
        }
        let mut fresh = &chunk[..read];
        while !fresh.is_empty() {
            // rustls only refuses input once its own message buffer is full.
            match acceptor.read_tls(&mut fresh) {
                Ok(0) | Err(_) => return Err(HelloError::TooLarge(bytes.len())),
                Ok(_) => {}
            }
        }
        match acceptor.accept() {
            Ok(None) => {}
            Ok(Some(accepted)) => {
                let hello = accepted.client_hello();
                let server_name = hello.server_name().map(str::to_owned);
                let alpn = hello
                    .alpn()
                    .map(|protocols| {
                        protocols
                            .map(|protocol| String::from_utf8_lossy(protocol).into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                return Ok(PeekedHello {
                    bytes,
                    server_name,
                    alpn,
                });
            }
            Err((error, _)) => return Err(HelloError::Invalid(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::ServerName;
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// The first flight of a real rustls client offering `alpn` to `host`.
    fn client_hello(host: &str, alpn: &[&str]) -> Vec<u8> {
        let mut config = rustls::ClientConfig::builder_with_provider(crate::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        let mut connection = rustls::ClientConnection::new(
            Arc::new(config),
            ServerName::try_from(host.to_owned()).unwrap(),
        )
        .unwrap();
        let mut bytes = Vec::new();
        while connection.wants_write() {
            connection.write_tls(&mut bytes).unwrap();
        }
        bytes
    }

    #[tokio::test]
    async fn reads_sni_and_alpn_from_a_fragmented_hello() {
        let hello = client_hello("api.example.com", &["h2", "echo"]);
        let (mut near, mut far) = tokio::io::duplex(64 * 1024);
        let sent = hello.clone();
        let writer = tokio::spawn(async move {
            // One byte at a time, so the hello arrives in as many reads as possible.
            for byte in sent {
                near.write_all(&[byte]).await.unwrap();
                tokio::task::yield_now().await;
            }
            near
        });
        let peeked = read_client_hello(&mut far, 65_536).await.unwrap();
        assert_eq!(peeked.server_name.as_deref(), Some("api.example.com"));
        assert_eq!(peeked.alpn, vec!["h2".to_owned(), "echo".to_owned()]);
        assert_eq!(peeked.bytes, hello);
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn garbage_and_oversize_and_truncation_are_errors() {
        let mut garbage: &[u8] = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";
        assert!(matches!(
            read_client_hello(&mut garbage, 65_536).await,
            Err(HelloError::Invalid(_))
        ));
        let hello = client_hello("localhost", &[]);
        let mut truncated = &hello[..hello.len() - 1];
        assert!(matches!(
            read_client_hello(&mut truncated, 65_536).await,
            Err(HelloError::Closed)
        ));
        let mut whole = &hello[..];
        assert!(matches!(
            read_client_hello(&mut whole, 100).await,
            Err(HelloError::TooLarge(100))
        ));
        // A record announcing a 16 MiB handshake message.
        let mut endless = vec![0x16, 3, 1, 0x40, 0, 1, 0xff, 0xff, 0xff];
        endless.resize(70_000, 0);
        assert!(read_client_hello(&mut &endless[..], 65_536).await.is_err());
    }
}
