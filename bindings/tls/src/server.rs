//! The `server` kind: terminates TLS and hands the plaintext stream to the route chosen by SNI,
//! negotiated ALPN and port.

use std::io;
use std::sync::Arc;

use rustls::server::danger::ClientCertVerifier;
use rustls::server::{Acceptor, ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::AsyncWriteExt;
use tokio_rustls::LazyConfigAcceptor;
use zilla_engine::BuildError;
use zilla_engine::binding::Binding;
use zilla_engine::events::Events;
use zilla_engine::guard::{Authorization, Guard};
use zilla_engine::stream::{AsyncIo, BoxFuture, ByteStream, BytesHandler, StreamError, StreamInfo};
use zilla_engine::vault::Vault;

use crate::config::{Mutual, TlsOptions};
use crate::events;
use crate::material::{self, NamedKey};
use crate::route::{Settings, TlsRoutes, first_unguarded, routable_on_port};

/// TLS alert `unrecognized_name` (RFC 6066): no route for the requested host.
const UNRECOGNIZED_NAME: u8 = 112;
/// TLS alert `no_application_protocol` (RFC 7301): no route for any offered protocol.
const NO_APPLICATION_PROTOCOL: u8 = 120;

/// A built tls server.
pub struct TlsServer {
    config: Arc<ServerConfig>,
    routes: TlsRoutes,
    sni: Option<Vec<String>>,
    alpn: Option<Vec<String>>,
    settings: Settings,
    events: Events,
    /// The guard of `options.authorization`, by qualified name.
    guard: Option<NamedGuard>,
}

/// A guard with the qualified name sessions are kept under.
pub type NamedGuard = (String, Arc<dyn Guard>);

/// What to do with a ClientHello.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Continue, negotiating this protocol (none when `None`).
    Proceed(Option<String>),
    /// Send this fatal alert and close.
    Reject(u8),
}

impl TlsServer {
    /// Builds a server from its options and the keys and trust of `vault`; `guard` is the
    /// guard `options.authorization` names, given each verified client certificate chain.
    pub fn build(
        options: &TlsOptions,
        vault: &dyn Vault,
        routes: TlsRoutes,
        settings: Settings,
        events: Events,
        guard: Option<NamedGuard>,
    ) -> Result<Self, BuildError> {
        let provider = crate::provider();
        if options.signers.is_some() {
            return Err(BuildError::at(
                "options.signers",
                "`signers` is not supported by this tls binding; name the keys with `keys`",
            ));
        }
        let aliases = options.keys.as_deref().unwrap_or_default();
        if aliases.is_empty() {
            return Err(BuildError::at(
                "options.keys",
                "a tls server needs `keys`: the vault aliases of its certificates",
            ));
        }
        let keys = aliases
            .iter()
            .map(|alias| material::load_key(vault, alias, &provider))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| BuildError::at("options.keys", error.to_string()))?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(crate::protocol_versions(options.version.as_deref())?)
            .map_err(|error| BuildError::at("options.version", error.to_string()))?;
        let config = match client_verifier(options, vault)? {
            Some(verifier) => builder.with_client_cert_verifier(verifier),
            None => builder.with_no_client_auth(),
        }
        .with_cert_resolver(Arc::new(KeysBySni(keys)));
        Ok(Self {
            config: Arc::new(config),
            routes,
            sni: options
                .sni
                .as_ref()
                .map(|names| names.iter().map(|name| name.to_ascii_lowercase()).collect()),
            alpn: options.alpn.clone(),
            settings,
            events,
            guard,
        })
    }

    async fn serve(&self, stream: ByteStream) -> Result<(), StreamError> {
        let ByteStream { io, info } = stream;
        let port = info.destination.map(|address| address.port());
        if !routable_on_port(&self.routes, port) {
            return Err(StreamError::NoRoute);
        }
        let seconds = self.settings.handshake_timeout.as_secs();
        let handshake = tokio::time::timeout(self.settings.handshake_timeout, async {
            let start = LazyConfigAcceptor::new(Acceptor::default(), io).await?;
            let hello = start.client_hello();
            let sni = hello.server_name().map(str::to_owned);
            let offered: Vec<String> = hello
                .alpn()
                .map(|protocols| {
                    protocols
                        .map(|protocol| String::from_utf8_lossy(protocol).into_owned())
                        .collect()
                })
                .unwrap_or_default();
            match decide(
                &self.routes,
                self.sni.as_deref(),
                self.alpn.as_deref(),
                sni.as_deref(),
                &offered,
                port,
            ) {
                Verdict::Reject(alert) => {
                    tracing::debug!(?sni, ?offered, ?port, "no route for the ClientHello");
                    reject(start.io, alert).await;
                    Ok(None)
                }
                Verdict::Proceed(alpn) => {
                    let config = match alpn {
                        None => self.config.clone(),
                        Some(protocol) => {
                            let mut config = (*self.config).clone();
                            config.alpn_protocols = vec![protocol.into_bytes()];
                            Arc::new(config)
                        }
                    };
                    start.into_stream(config).await.map(Some)
                }
            }
        })
        .await;
        let mut tls = match handshake {
            Err(_) => {
                events::handshake_timed_out(&self.events, seconds);
                return Err(StreamError::Protocol("TLS handshake timed out".into()));
            }
            Ok(Err(error)) => {
                events::handshake_failed(&self.events, &error);
                return Err(handshake_error(error));
            }
            Ok(Ok(None)) => return Err(StreamError::NoRoute),
            Ok(Ok(Some(tls))) => tls,
        };
        let (_, connection) = tls.get_ref();
        let sni = connection.server_name().map(str::to_owned);
        let alpn = connection
            .alpn_protocol()
            .map(|protocol| String::from_utf8_lossy(protocol).into_owned());
        let identity = connection
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| material::subject_dn(leaf));
        // A configured guard is the authority for the connection: its verdict replaces what
        // the network side carried, and a peer without a verified chain gets no session.
        let authorization = match &self.guard {
            None => info.authorization.clone(),
            Some((name, guard)) => {
                let mut authorization = Authorization::default();
                let session = connection
                    .peer_certificates()
                    .filter(|chain| !chain.is_empty())
                    .and_then(|chain| guard.reauthorize(&material::pem_chain(chain)));
                if let Some(session) = session {
                    authorization.insert(name.clone(), session);
                }
                authorization
            }
        };
        let exit = self
            .routes
            .resolve(Some(&authorization), |condition| {
                condition.matches(sni.as_deref(), alpn.as_deref(), port)
            })
            .map(|route| route.exit.clone());
        let Some(exit) = exit else {
            if let Err(error) = tls.shutdown().await {
                tracing::debug!(%error, "closing an unrouted TLS connection");
            }
            return Err(StreamError::NoRoute);
        };
        let info = StreamInfo {
            authority: sni,
            alpn: alpn.into_iter().collect(),
            secure: true,
            identity,
            authorization,
            ..info
        };
        exit.accept(ByteStream::new(tls, info)).await
    }
}

/// Picks the ALPN protocol to negotiate and checks that a route takes the connection.
///
/// The protocol is the first one offered, in the client's order, that `allowed_alpn` allows (any
/// when absent) and a route takes; failing that, with `allowed_alpn` given, the first offered one
/// it allows; else none.
fn decide(
    routes: &TlsRoutes,
    allowed_sni: Option<&[String]>,
    allowed_alpn: Option<&[String]>,
    sni: Option<&str>,
    offered: &[String],
    port: Option<u16>,
) -> Verdict {
    if let (Some(allowed), Some(sni)) = (allowed_sni, sni)
        && !allowed.iter().any(|name| name == sni)
    {
        return Verdict::Reject(UNRECOGNIZED_NAME);
    }
    let allowed = |protocol: &&String| {
        allowed_alpn.is_none_or(|alpn| alpn.iter().any(|allowed| allowed == *protocol))
    };
    let routed = |protocol: Option<&str>| {
        first_unguarded(routes, |condition| condition.matches(sni, protocol, port)).is_some()
    };
    let alpn = offered
        .iter()
        .filter(allowed)
        .find(|protocol| routed(Some(protocol.as_str())))
        .or_else(|| allowed_alpn.and_then(|_| offered.iter().find(allowed)))
        .cloned();
    if routed(alpn.as_deref()) {
        return Verdict::Proceed(alpn);
    }
    let host_routed = first_unguarded(routes, |condition| {
        condition.matches_ignoring_alpn(sni, port)
    })
    .is_some();
    Verdict::Reject(if host_routed {
        NO_APPLICATION_PROTOCOL
    } else {
        UNRECOGNIZED_NAME
    })
}

/// Whether a server asks for client certificates: `mutual`, by default `required` when `trust`
/// is given, else `none`.
pub(crate) fn mutual(options: &TlsOptions) -> Mutual {
    options.mutual.unwrap_or(if options.trust.is_some() {
        Mutual::Required
    } else {
        Mutual::None
    })
}

/// The client certificate verifier `options.mutual` asks for, from `options.trust` (or every
/// trusted certificate of the vault when `trust` is absent).
fn client_verifier(
    options: &TlsOptions,
    vault: &dyn Vault,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, BuildError> {
    let mutual = mutual(options);
    if mutual == Mutual::None {
        return Ok(None);
    }
    let roots = match &options.trust {
        Some(aliases) => material::trust_anchors(vault, aliases)
            .map_err(|error| BuildError::at("options.trust", error.to_string()))?,
        None => {
            let mut roots = RootCertStore::empty();
            material::add_all_trusted(&mut roots, vault);
            roots
        }
    };
    if roots.is_empty() {
        return Err(BuildError::at(
            "options.mutual",
            "client certificates need trusted certificates to verify them: name them with `trust`",
        ));
    }
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crate::provider());
    if mutual == Mutual::Requested {
        builder = builder.allow_unauthenticated();
    }
    if let Some(lists) = material::revocation_lists(Some(vault)) {
        // A client certificate revoked by, or whose issuer has no, revocation list is refused:
        // rustls' default for an unknown status, and Zilla's.
        builder = builder.with_crls(lists);
    }
    builder
        .build()
        .map(Some)
        .map_err(|error| BuildError::at("options.trust", error.to_string()))
}

/// Sends a fatal alert before any handshake reply, then closes.
async fn reject(mut io: Box<dyn AsyncIo>, alert: u8) {
    const ALERT: u8 = 21;
    const FATAL: u8 = 2;
    let record = [ALERT, 3, 3, 0, 2, FATAL, alert];
    let sent = async {
        io.write_all(&record).await?;
        io.shutdown().await
    };
    if let Err(error) = sent.await {
        tracing::debug!(%error, "sending a TLS alert");
    }
}

fn handshake_error(error: io::Error) -> StreamError {
    if events::classify(&error).is_some() {
        StreamError::Protocol(error.to_string())
    } else {
        StreamError::Io(error)
    }
}

/// Presents the key whose certificate names the SNI host, else the first one.
#[derive(Debug)]
struct KeysBySni(Vec<NamedKey>);

impl ResolvesServerCert for KeysBySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let by_name = hello.server_name().and_then(|host| {
            self.0
                .iter()
                .find(|key| material::names_host(&key.names, host))
        });
        by_name.or(self.0.first()).map(|key| key.key.clone())
    }
}

impl Binding for TlsServer {}

impl BytesHandler for TlsServer {
    fn accept(&self, stream: ByteStream) -> BoxFuture<'_, Result<(), StreamError>> {
        Box::pin(self.serve(stream))
    }

    fn connect(&self, _info: StreamInfo) -> BoxFuture<'_, Result<ByteStream, StreamError>> {
        Box::pin(async {
            Err(StreamError::Upstream(
                "a tls server accepts streams; it does not open them".into(),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::tests::routes;

    fn offered(protocols: &[&str]) -> Vec<String> {
        protocols.iter().map(|p| (*p).to_owned()).collect()
    }

    #[test]
    fn alpn_is_chosen_by_routes_in_client_order() {
        let routes = routes(
            &[(r#"{"alpn": "h2"}"#, "h2"), (r#"{"alpn": "echo"}"#, "echo")],
            None,
        );
        let decide = |sni, protocols: &[&str]| {
            decide(&routes, None, None, sni, &offered(protocols), Some(443))
        };
        assert_eq!(
            decide(None, &["echo", "h2"]),
            Verdict::Proceed(Some("echo".into()))
        );
        assert_eq!(
            decide(None, &["x", "h2"]),
            Verdict::Proceed(Some("h2".into()))
        );
        assert_eq!(
            decide(None, &["x"]),
            Verdict::Reject(NO_APPLICATION_PROTOCOL)
        );
        assert_eq!(decide(None, &[]), Verdict::Reject(NO_APPLICATION_PROTOCOL));
    }

    #[test]
    fn alpn_option_limits_what_is_negotiated() {
        let routes = routes(&[], Some("default"));
        let allowed = offered(&["http/1.1"]);
        let decide = |protocols: &[&str]| {
            decide(
                &routes,
                None,
                Some(&allowed),
                None,
                &offered(protocols),
                None,
            )
        };
        assert_eq!(
            decide(&["h2", "http/1.1"]),
            Verdict::Proceed(Some("http/1.1".into()))
        );
        assert_eq!(decide(&["h2"]), Verdict::Proceed(None));
    }

    #[test]
    fn unknown_hosts_are_unrecognized_names() {
        let routes = routes(&[(r#"{"authority": "*.example.com"}"#, "example")], None);
        let names = offered(&["api.example.com", "localhost"]);
        let decide = |sni| decide(&routes, Some(&names), None, sni, &[], None);
        assert_eq!(decide(Some("api.example.com")), Verdict::Proceed(None));
        assert_eq!(
            decide(Some("www.example.com")),
            Verdict::Reject(UNRECOGNIZED_NAME)
        );
        assert_eq!(
            decide(Some("localhost")),
            Verdict::Reject(UNRECOGNIZED_NAME)
        );
        assert_eq!(decide(None), Verdict::Reject(UNRECOGNIZED_NAME));
    }
}
