//! One-shot HTTP/1.1 requests over `http` or `https` (TLS verified against the system's roots),
//! for the components that read a document from a URL now and then: a JWKS, a config served
//! over HTTP. Each request opens its own connection: these are rare reads, not a data path, so
//! a pool would only hold sockets open.
//!
//! A general client (reqwest) would bring a second TLS and connection stack; this is the few
//! lines hyper's own connection API needs, with the bounds every caller wants: a deadline for
//! the whole exchange and a limit on the body read.
//!
//! ```no_run
//! # async fn run() -> Result<(), zilla_fetch::FetchError> {
//! let uri: http::Uri = "https://issuer.example.com/.well-known/jwks.json".parse().unwrap();
//! let request = http::Request::get(uri).body(bytes::Bytes::new()).unwrap();
//! let response = zilla_fetch::send(request, zilla_fetch::Limits::default()).await?;
//! assert!(response.status.is_success());
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("`{0}` is not an http:// or https:// URL with a host")]
    Url(String),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("TLS to {0}: {1}")]
    Tls(String, String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("the response body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("no response within {0:?}")]
    Timeout(Duration),
}

/// Bounds of one exchange.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// For connecting, sending and reading the whole response.
    pub timeout: Duration,
    /// The largest body read.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            max_body_bytes: 1 << 20,
        }
    }
}

/// A whole response.
#[derive(Debug)]
pub struct Response {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// Sends `request` to the host its URI names and reads the whole response. The request's
/// `host` header is set from the URI unless given.
pub async fn send(request: http::Request<Bytes>, limits: Limits) -> Result<Response, FetchError> {
    tokio::time::timeout(limits.timeout, exchange(request, limits.max_body_bytes))
        .await
        .map_err(|_| FetchError::Timeout(limits.timeout))?
}

async fn exchange(
    request: http::Request<Bytes>,
    max_body_bytes: usize,
) -> Result<Response, FetchError> {
    let uri = request.uri().clone();
    let secure = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(FetchError::Url(uri.to_string())),
    };
    let (Some(host), Some(authority)) = (uri.host(), uri.authority()) else {
        return Err(FetchError::Url(uri.to_string()));
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let authority = authority.as_str().to_owned();

    let (mut parts, body) = request.into_parts();
    parts.uri = uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .map_err(|e: http::uri::InvalidUri| FetchError::Url(e.to_string()))?;
    if !parts.headers.contains_key(http::header::HOST) {
        let value =
            http::HeaderValue::from_str(&authority).map_err(|e| FetchError::Url(e.to_string()))?;
        parts.headers.insert(http::header::HOST, value);
    }
    let request = http::Request::from_parts(parts, Full::new(body));

    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| FetchError::Connect(format!("{host}:{port}"), e))?;
    let response = if secure {
        let tls = tls_connector()
            .connect(server_name(&host)?, tcp)
            .await
            .map_err(|e| FetchError::Tls(host.clone(), e.to_string()))?;
        over(hyper_util::rt::TokioIo::new(tls), request).await?
    } else {
        over(hyper_util::rt::TokioIo::new(tcp), request).await?
    };
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, max_body_bytes)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                FetchError::TooLarge(max_body_bytes)
            } else {
                FetchError::Http(e.to_string())
            }
        })?
        .to_bytes();
    Ok(Response {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

fn server_name(host: &str) -> Result<rustls_pki_types::ServerName<'static>, FetchError> {
    rustls_pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| FetchError::Tls(host.to_owned(), e.to_string()))
}

/// Verifies servers against the system's trust store, read once per process.
fn tls_connector() -> tokio_rustls::TlsConnector {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        for certificate in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(certificate);
        }
        Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    });
    tokio_rustls::TlsConnector::from(config.clone())
}

async fn over<T>(
    io: T,
    request: http::Request<Full<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, FetchError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| FetchError::Http(e.to_string()))?;
    // The connection task ends with the exchange: nothing else is sent on it.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| FetchError::Http(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves one canned response on a free port and hands back what it was sent.
    async fn serve_once(
        response: &'static [u8],
    ) -> (u16, tokio::task::JoinHandle<anyhow::Result<String>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await?;
            let mut received = vec![0; 4096];
            let n = socket.read(&mut received).await?;
            socket.write_all(response).await?;
            socket.shutdown().await?;
            Ok(String::from_utf8_lossy(&received[..n]).into_owned())
        });
        (port, task)
    }

    fn get(url: &str) -> http::Request<Bytes> {
        http::Request::get(url).body(Bytes::new()).unwrap()
    }

    #[tokio::test]
    async fn reads_a_response_and_sends_host() {
        let (port, server) =
            serve_once(b"HTTP/1.1 200 OK\r\netag: \"v1\"\r\ncontent-length: 5\r\n\r\nhello").await;
        let url = format!("http://127.0.0.1:{port}/a/b?c=d");
        let response = send(get(&url), Limits::default()).await.unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.headers["etag"], "\"v1\"");
        assert_eq!(&response.body[..], b"hello");
        let request = server.await.unwrap().unwrap();
        assert!(
            request.starts_with("GET /a/b?c=d HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request
                .to_ascii_lowercase()
                .contains(&format!("host: 127.0.0.1:{port}\r\n"))
        );
    }

    #[tokio::test]
    async fn refuses_a_body_over_the_limit() {
        let (port, _server) =
            serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n0123456789").await;
        let limits = Limits {
            max_body_bytes: 4,
            ..Limits::default()
        };
        let url = format!("http://127.0.0.1:{port}/");
        let error = send(get(&url), limits).await.unwrap_err();
        assert!(matches!(error, FetchError::TooLarge(4)), "{error}");
    }

    #[tokio::test]
    async fn gives_up_at_the_deadline() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let limits = Limits {
            timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let url = format!("http://127.0.0.1:{port}/");
        let error = send(get(&url), limits).await.unwrap_err();
        assert!(matches!(error, FetchError::Timeout(_)), "{error}");
        drop(listener);
    }

    #[tokio::test]
    async fn refuses_other_schemes() {
        let error = send(get("ftp://example.com/x"), Limits::default())
            .await
            .unwrap_err();
        assert!(matches!(error, FetchError::Url(_)), "{error}");
    }
}
