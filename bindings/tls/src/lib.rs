//! The `tls` binding: terminates (`server`), originates (`client`) or routes without
//! terminating (`proxy`) TLS on `bytes` streams, on rustls with the aws-lc-rs provider.
//!
//! - **server** accepts a byte stream, completes the handshake with a key from the binding's
//!   `vault` (the one whose certificate names the SNI host, else the first of `keys`),
//!   negotiates ALPN, verifies client certificates per `mutual`, and hands the plaintext stream
//!   to the first route whose `when` matches the SNI (`authority`), the negotiated protocol
//!   (`alpn`) and the destination `port`. The stream then carries the SNI as its authority, the
//!   negotiated protocol, `secure`, and the client certificate's subject DN as its identity. A
//!   ClientHello no route can take is answered with a fatal alert (`unrecognized_name` or
//!   `no_application_protocol`) and closed before any application data. With
//!   `authorization`, the verified client certificate chain (PEM, leaf first) goes to that
//!   guard (an `x509` guard) once the handshake completes; its session decides `guarded`
//!   routes here, is carried inward on the stream (an http server's `guarded` routes and
//!   `${guarded[...]}` expressions see it, and so do an mqtt server's `guarded` routes when it
//!   has no `authorization` of its own), and a connection no route then takes is closed.
//!   With `mutual: requested`, a client may present no certificate: it gets no session, so
//!   a guarded route passes it by and a later unguarded route (or the binding's `exit`)
//!   takes it, as it takes a certificate the guard gives none of the roles asked for; a
//!   certificate that is presented must still verify.
//!   Routes' `guarded` is ignored while choosing the ALPN protocol, before any guard has run.
//! - **client** opens a stream through the route matching the wanted authority, ALPN and port
//!   (its exit, typically a tcp client) and runs the client handshake: SNI from `sni` or the
//!   stream's authority, ALPN from `alpn` or the stream's, trust from `trust` plus, with
//!   `trustcacerts`, the operating system's CA certificates (read with `rustls-native-certs`;
//!   they are also used when nothing else is trusted).
//! - **proxy** reads the ClientHello (at most `zilla.binding.tls.handshake.window.bytes`),
//!   routes on its SNI and offered ALPN protocols, and forwards every byte untouched.
//!
//! ```yaml
//! name: example
//! vaults:
//!   server:
//!     type: filesystem
//!     options:
//!       keys:
//!         store: localhost.p12
//!         password: ${{env.KEYSTORE_PASSWORD}}
//! bindings:
//!   tcp_server:
//!     type: tcp
//!     kind: server
//!     options:
//!       port: 9090
//!     exit: tls_server
//!   tls_server:
//!     type: tls
//!     kind: server
//!     vault: server
//!     options:
//!       keys:
//!         - localhost
//!       alpn:
//!         - echo
//!     routes:
//!       - when:
//!           - authority: localhost
//!             alpn: echo
//!         exit: echo_server
//!   echo_server:
//!     type: echo
//!     kind: server
//! ```
//!
//! Options (`server` and `client`; a `proxy` takes none):
//! - `version`: `TLS` (default) or `TLSv1.3` for TLS 1.2 and 1.3, `TLSv1.2` for TLS 1.2 only.
//! - `keys`: vault key aliases. Required on a server.
//! - `trust`: vault certificate aliases to verify the peer against. When the vault sets
//!   `revocation: crl`, the peer's certificate chain is also checked against the vault's
//!   certificate revocation lists: a revoked certificate, or one whose issuer has no list, is
//!   refused with a TLS alert (`certificate_revoked` for a revoked one).
//!   Beyond what webpki accepts, the client accepts what Java's default trust manager does
//!   for Zilla's own stores, nothing looser: an X.509 v1 server certificate that is trusted or
//!   signed directly by a trusted certificate, a trusted certificate presented as the server's
//!   own even when it is marked as a CA, and the common name as host name when a certificate
//!   has no DNS subject alternative name. A server key whose certificate is v1 is served. With
//!   `revocation: crl` only webpki's checks apply.
//! - `trustcacerts`: client only; also trust the system CA certificates.
//! - `sni`: server: the accepted SNI host names; client: the SNI to send (one name; a second is
//!   refused).
//! - `alpn`: server: the protocols that may be negotiated (default: those routes name);
//!   client: the protocols to offer.
//! - `mutual`: server: `required` (default when `trust` is given), `requested` or `none`.
//! - `authorization`: server only: `{<guard>: {credentials: {certificates: pem}}}`, exactly
//!   one guard, on a server that asks for client certificates (`mutual` not `none`). A client
//!   naming it is refused at load.
//! - `signers`: not supported yet; a config naming it is refused at load.
//!
//! Route conditions: `authority` (wildcards such as `*.example.com`), `alpn`, `port` (a number,
//! a `"8000-8010"` range or a list). Properties: `zilla.binding.tls.handshake.timeout` (seconds,
//! 10), `zilla.binding.tls.handshake.window.bytes` (65536),
//! `zilla.binding.tls.client.https.identification` (true: check the server certificate names
//! the host), `zilla.binding.tls.client.server.name.indication` (true: send SNI).
//!
//! Events: `BINDING_TLS_HANDSHAKE_FAILED`, `BINDING_TLS_HANDSHAKE_TIMEOUT`,
//! `BINDING_TLS_PEER_NOT_VERIFIED`, `BINDING_TLS_PROTOCOL_REJECTED`, `BINDING_TLS_KEY_REJECTED`
//! and `BINDING_TLS_TLS_FAILED`.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod client;
pub mod config;
pub mod events;
pub mod material;
mod pkix;
pub mod proxy;
pub mod route;
pub mod server;

use std::sync::{Arc, OnceLock};

use rustls::SupportedProtocolVersion;
use rustls::crypto::CryptoProvider;
use zilla_engine::binding::{Binding, BindingFactory, BindingSchema, BuildContext};
use zilla_engine::stream::Bytes;
use zilla_engine::{BindingKind, BuildError, Registry};

use crate::client::TlsClient;
use crate::config::{CertificatesFormat, Mutual, TlsCondition, TlsOptions};
use crate::proxy::TlsProxy;
use crate::route::{Condition, Settings, TlsRoutes};
use crate::server::{NamedGuard, TlsServer};

/// Registers the `tls` binding type.
pub fn register(registry: &mut Registry) {
    registry.binding(TlsFactory).properties(route::PROPERTIES);
}

/// Builds tls bindings.
#[derive(Debug)]
pub struct TlsFactory;

impl BindingFactory for TlsFactory {
    fn type_name(&self) -> &'static str {
        "tls"
    }

    fn kinds(&self) -> &'static [BindingKind] {
        &[BindingKind::Server, BindingKind::Client, BindingKind::Proxy]
    }

    fn accepts(&self, _kind: BindingKind) -> &'static [&'static str] {
        &["bytes"]
    }

    fn emits(&self, _kind: BindingKind) -> Option<&'static str> {
        Some("bytes")
    }

    fn schema(&self, kind: BindingKind) -> BindingSchema {
        let mut options = (kind != BindingKind::Proxy).then(BindingSchema::of::<TlsOptions>);
        // Each side reads only its own half of the shared options shape.
        let refused = match kind {
            BindingKind::Server => Some((
                "trustcacerts",
                "`trustcacerts` is not supported on a tls server: it adds the system's CA certificates to what a tls client trusts; a server trusts client certificates from `trust`",
            )),
            BindingKind::Client => Some((
                "mutual",
                "`mutual` is not supported on a tls client: a tls server asks for client certificates; a client presents the one its `keys` name",
            )),
            _ => None,
        };
        if let (Some(options), Some((key, reason))) = (options.as_mut(), refused)
            && let Some(schema) = options.pointer_mut(&format!("/properties/{key}"))
        {
            schema["x-unsupported"] = reason.into();
        }
        BindingSchema {
            options,
            options_required: kind == BindingKind::Server,
            when: Some(BindingSchema::of::<TlsCondition>()),
            with: None,
        }
    }

    fn uses_vault(&self, kind: BindingKind) -> bool {
        // A proxy routes by the ClientHello's names and holds no keys.
        kind != BindingKind::Proxy
    }

    fn build(&self, context: &mut BuildContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
        let routes: TlsRoutes =
            context.routes::<Bytes, TlsCondition, Condition, _>(Condition::compile)?;
        if routes.is_empty() {
            return Err(BuildError::at(
                "exit",
                "a tls binding needs an `exit` or `routes`",
            ));
        }
        let settings = Settings::from_properties(context.properties());
        let events = context.events().clone();
        match context.kind() {
            BindingKind::Server => {
                let options: TlsOptions = context.options()?;
                let vault = context.vault()?.ok_or_else(|| {
                    BuildError::at("vault", "a tls server needs a `vault` holding its keys")
                })?;
                let guard = certificate_guard(&options, context)?;
                let server = Arc::new(TlsServer::build(
                    &options,
                    vault.as_ref(),
                    routes,
                    settings,
                    events,
                    guard,
                )?);
                context.publish::<Bytes>(server.clone());
                Ok(server)
            }
            BindingKind::Client => {
                let options: TlsOptions = context.options()?;
                if options.authorization.is_some() {
                    return Err(BuildError::at(
                        "options.authorization",
                        "a tls client takes no `authorization`: it is where a server hands client certificates to a guard",
                    ));
                }
                let vault = context.vault()?;
                let client = Arc::new(TlsClient::build(
                    &options,
                    vault.as_deref(),
                    routes,
                    settings,
                    events,
                )?);
                context.publish::<Bytes>(client.clone());
                Ok(client)
            }
            BindingKind::Proxy => {
                let proxy = Arc::new(TlsProxy::new(routes, settings, events));
                context.publish::<Bytes>(proxy.clone());
                Ok(proxy)
            }
            other => Err(BuildError::at(
                "kind",
                format!("a tls binding cannot be a {other}"),
            )),
        }
    }
}

/// The guard a server's `options.authorization` names: exactly one, given the client
/// certificate chain as PEM, on a server that asks for client certificates.
fn certificate_guard(
    options: &TlsOptions,
    context: &BuildContext<'_>,
) -> Result<Option<NamedGuard>, BuildError> {
    let Some(authorization) = &options.authorization else {
        return Ok(None);
    };
    let mut guards = authorization.iter();
    let (Some((name, guard)), None) = (guards.next(), guards.next()) else {
        return Err(BuildError::at(
            "options.authorization",
            "name exactly one guard",
        ));
    };
    let path = format!("options.authorization.{name}");
    let pem = guard
        .credentials
        .as_ref()
        .and_then(|credentials| credentials.certificates)
        == Some(CertificatesFormat::Pem);
    if !pem {
        return Err(BuildError::at(
            format!("{path}.credentials"),
            "the guard is given the client certificate chain: write `credentials: {certificates: pem}`",
        ));
    }
    if server::mutual(options) == Mutual::None {
        return Err(BuildError::at(
            "options.mutual",
            "`authorization` needs client certificates: set `mutual` to `required` or `requested` (or name `trust`)",
        ));
    }
    context
        .guard(name)
        .map(Some)
        .map_err(|error| BuildError::at(path, error.message))
}

/// The crypto provider every tls binding uses: aws-lc-rs, shared by the process.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// The protocol versions `version` allows. Like Java's `SSLContext` protocol names, a version
/// names the highest one offered; rustls has nothing older than TLS 1.2.
pub(crate) fn protocol_versions(
    version: Option<&str>,
) -> Result<&'static [&'static SupportedProtocolVersion], BuildError> {
    static TLS12_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
    match version {
        None | Some("TLS" | "TLSv1.3") => Ok(rustls::ALL_VERSIONS),
        Some("TLSv1.2") => Ok(TLS12_ONLY),
        Some(other) => Err(BuildError::at(
            "options.version",
            format!("unsupported TLS version `{other}`; expected TLS, TLSv1.3 or TLSv1.2"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_name_the_highest_offered() {
        assert_eq!(protocol_versions(None).unwrap().len(), 2);
        assert_eq!(protocol_versions(Some("TLSv1.3")).unwrap().len(), 2);
        let tls12 = protocol_versions(Some("TLSv1.2")).unwrap();
        assert_eq!(tls12.len(), 1);
        assert_eq!(tls12[0].version, rustls::ProtocolVersion::TLSv1_2);
        assert!(protocol_versions(Some("TLSv1.1")).is_err());
    }

    #[test]
    fn proxy_takes_no_options_and_server_needs_them() {
        assert!(TlsFactory.schema(BindingKind::Proxy).options.is_none());
        assert!(TlsFactory.schema(BindingKind::Server).options_required);
        assert!(!TlsFactory.schema(BindingKind::Client).options_required);
    }
}
