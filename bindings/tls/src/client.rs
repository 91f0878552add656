//! The `client` kind: opens a stream through its exit (a tcp client) and originates TLS on it.

use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, SignatureScheme};
use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;
use zilla_engine::BuildError;
use zilla_engine::binding::Binding;
use zilla_engine::events::Events;
use zilla_engine::stream::{BoxFuture, ByteStream, BytesHandler, StreamError, StreamInfo};
use zilla_engine::vault::Vault;

use crate::config::TlsOptions;
use crate::events;
use crate::material::{self, NamedKey};
use crate::pkix::JavaCompatibleVerifier;
use crate::route::{Settings, TlsRoutes};

/// A built tls client.
pub struct TlsClient {
    config: Arc<ClientConfig>,
    routes: TlsRoutes,
    sni: Option<String>,
    alpn: Option<Vec<String>>,
    settings: Settings,
    events: Events,
}

impl TlsClient {
    /// Builds a client from its options and the keys and trust of `vault`, if any.
    pub fn build(
        options: &TlsOptions,
        vault: Option<&dyn Vault>,
        routes: TlsRoutes,
        settings: Settings,
        events: Events,
    ) -> Result<Self, BuildError> {
        let provider = crate::provider();
        if options.signers.is_some() {
            return Err(BuildError::at(
                "options.signers",
                "`signers` is not supported by this tls binding; name the key with `keys`",
            ));
        }
        let needs_vault = |path: &str| {
            BuildError::at(
                path,
                "names entries of a vault, but the binding has no `vault`",
            )
        };
        let nothing_named = options.keys.is_none() && options.trust.is_none();
        // The vault certificates this client trusts, for the cases Java accepts beyond webpki.
        let trusted: Vec<Vec<u8>> = match (&options.trust, vault) {
            (Some(aliases), Some(vault)) => aliases
                .iter()
                .filter_map(|alias| vault.certificate(alias))
                .collect(),
            (None, Some(vault)) if nothing_named => vault.certificates(),
            _ => Vec::new(),
        };
        let mut roots = match (&options.trust, vault) {
            (Some(aliases), Some(vault)) => material::trust_anchors(vault, aliases)
                .map_err(|error| BuildError::at("options.trust", error.to_string()))?,
            (Some(_), None) => return Err(needs_vault("options.trust")),
            (None, Some(vault)) if nothing_named => {
                let mut roots = RootCertStore::empty();
                material::add_all_trusted(&mut roots, vault);
                roots
            }
            (None, _) => RootCertStore::empty(),
        };
        if options.trustcacerts == Some(true) || roots.is_empty() {
            material::add_system_roots(&mut roots);
        }
        if roots.is_empty() {
            return Err(BuildError::at(
                "options.trust",
                "no trusted certificates: name some with `trust`, or install the system CA certificates",
            ));
        }
        let mut webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone());
        let revocation = material::revocation_lists(vault);
        let checks_revocation = revocation.is_some();
        if let Some(lists) = revocation {
            // A server certificate revoked by, or whose issuer has no, revocation list is
            // refused: rustls' default for an unknown status, and Zilla's.
            webpki = webpki.with_crls(lists);
        }
        let webpki = webpki
            .build()
            .map_err(|error| BuildError::at("options.trust", error.to_string()))?;
        let verifier: Arc<dyn ServerCertVerifier> = Arc::new(JavaCompatibleVerifier::new(
            webpki,
            trusted,
            settings.https_identification,
            checks_revocation,
            &provider,
        ));
        let keys = match (&options.keys, vault) {
            (Some(aliases), Some(vault)) => aliases
                .iter()
                .map(|alias| material::load_key(vault, alias, &provider))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| BuildError::at("options.keys", error.to_string()))?,
            (Some(_), None) => return Err(needs_vault("options.keys")),
            (None, _) => Vec::new(),
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(crate::protocol_versions(options.version.as_deref())?)
            .map_err(|error| BuildError::at("options.version", error.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = if keys.is_empty() {
            builder.with_no_client_auth()
        } else {
            builder.with_client_cert_resolver(Arc::new(ClientKeys(keys)))
        };
        config.enable_sni = settings.server_name_indication;
        // A ClientHello carries one host name: a second would never be sent.
        if options.sni.as_ref().is_some_and(|names| names.len() > 1) {
            return Err(BuildError::at(
                "options.sni[1]",
                "a second `sni` name is not supported on a tls client: a ClientHello names one server",
            ));
        }
        Ok(Self {
            config: Arc::new(config),
            routes,
            sni: options
                .sni
                .as_ref()
                .and_then(|names| names.first().cloned()),
            alpn: options.alpn.clone(),
            settings,
            events,
        })
    }

    async fn open(&self, info: StreamInfo) -> Result<ByteStream, StreamError> {
        let port = info.destination.map(|address| address.port());
        let exit = self
            .routes
            .resolve(None, |condition| {
                condition.matches_any_alpn(info.authority.as_deref(), &info.alpn, port)
            })
            .map(|route| route.exit.clone())
            .ok_or(StreamError::NoRoute)?;
        let name = self.sni.clone().or_else(|| info.authority.clone());
        let server_name = match &name {
            Some(name) => ServerName::try_from(name.trim_end_matches('.').to_owned())
                .map_err(|_| StreamError::Upstream(format!("`{name}` is not a valid server name")))?,
            None => info
                .destination
                .map(|address| ServerName::IpAddress(address.ip().into()))
                .ok_or_else(|| {
                    StreamError::Upstream(
                        "no server name: the stream has no authority or destination and `sni` is not set"
                            .into(),
                    )
                })?,
        };
        let alpn = self.alpn.clone().unwrap_or_else(|| info.alpn.clone());
        let config = if alpn.is_empty() {
            self.config.clone()
        } else {
            let mut config = (*self.config).clone();
            config.alpn_protocols = alpn.into_iter().map(String::into_bytes).collect();
            Arc::new(config)
        };
        let network = exit.connect(info.clone()).await?;
        let seconds = self.settings.handshake_timeout.as_secs();
        let handshake = TlsConnector::from(config).connect(server_name, network.io);
        let tls = match tokio::time::timeout(self.settings.handshake_timeout, handshake).await {
            Err(_) => {
                events::handshake_timed_out(&self.events, seconds);
                return Err(StreamError::Upstream("TLS handshake timed out".into()));
            }
            Ok(Err(error)) => {
                events::handshake_failed(&self.events, &error);
                return Err(StreamError::Upstream(format!(
                    "TLS handshake failed: {error}"
                )));
            }
            Ok(Ok(tls)) => tls,
        };
        let negotiated = tls
            .get_ref()
            .1
            .alpn_protocol()
            .map(|protocol| String::from_utf8_lossy(protocol).into_owned());
        let info = StreamInfo {
            authority: info.authority.or(name),
            alpn: negotiated.into_iter().collect(),
            secure: true,
            ..network.info
        };
        Ok(ByteStream::new(tls, info))
    }
}

impl Binding for TlsClient {}

impl BytesHandler for TlsClient {
    fn connect(&self, info: StreamInfo) -> BoxFuture<'_, Result<ByteStream, StreamError>> {
        Box::pin(self.open(info))
    }
}

/// Presents the first key that can sign with a scheme the server accepts.
#[derive(Debug)]
struct ClientKeys(Vec<NamedKey>);

impl ResolvesClientCert for ClientKeys {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        schemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0
            .iter()
            .find(|key| key.key.key.choose_scheme(schemes).is_some())
            .map(|key| key.key.clone())
    }

    fn has_certs(&self) -> bool {
        !self.0.is_empty()
    }
}
