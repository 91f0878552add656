//! Typed options and route conditions of the tls binding.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

/// `options` of a tls `server` or `client` binding (a `proxy` takes none).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsOptions {
    /// The highest TLS version to offer: `TLSv1.3` or `TLS` (TLS 1.2 and 1.3, the default), or
    /// `TLSv1.2` (TLS 1.2 only).
    pub version: Option<String>,
    /// Aliases of private keys (with their certificate chains) in the binding's vault. A server
    /// presents the one whose certificate names the requested SNI host, else the first; a
    /// client presents the first when the server asks for a certificate.
    pub keys: Option<Vec<String>>,
    /// Aliases of trusted certificates in the binding's vault. A server verifies client
    /// certificates against them; a client verifies the server certificate against them.
    pub trust: Option<Vec<String>>,
    /// Client: also trust the operating system's CA certificates.
    pub trustcacerts: Option<bool>,
    /// Server: the only host names accepted as SNI. Client: the SNI host name to send (the
    /// first one), instead of the stream's authority.
    pub sni: Option<Vec<String>>,
    /// Server: the application protocols that may be negotiated (default: those named by
    /// routes). Client: the protocols to offer, instead of the stream's.
    pub alpn: Option<Vec<String>>,
    /// Server: whether to ask for a client certificate (default `required` when `trust` is
    /// given, else `none`).
    pub mutual: Option<Mutual>,
    /// Aliases of signer (CA) certificates in the vault, to present keys issued by them.
    /// Refused at load: not supported yet.
    #[schemars(extend("x-unsupported" = "`signers` is not supported yet; name the keys with `keys`"))]
    pub signers: Option<Vec<String>>,
    /// Server: the one guard (an `x509` guard) given the verified client certificate chain;
    /// its session authorizes `guarded` routes here and in the bindings inward.
    pub authorization: Option<BTreeMap<String, TlsAuthorization>>,
}

/// One guard of `authorization`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsAuthorization {
    /// What the guard is given.
    pub credentials: Option<TlsCredentials>,
}

/// The credentials a tls server hands its guard.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsCredentials {
    /// The client certificate chain, in this format (`pem`, leaf first).
    pub certificates: Option<CertificatesFormat>,
}

/// How a certificate chain is written for a guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CertificatesFormat {
    /// Concatenated PEM `CERTIFICATE` blocks.
    Pem,
}

/// Client certificate authentication on a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mutual {
    /// The handshake fails without a trusted client certificate.
    Required,
    /// A client certificate is asked for; if one is sent it must be trusted.
    Requested,
    /// No client certificate is asked for.
    None,
}

/// A route condition of a tls binding; all given fields must match.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsCondition {
    /// The SNI host name (server, proxy) or the authority connected to (client). `*` wildcards
    /// allowed, e.g. `*.example.com`.
    pub authority: Option<String>,
    /// The negotiated (server), offered (proxy) or wanted (client) application protocol.
    pub alpn: Option<String>,
    /// The destination port.
    pub port: Option<Ports>,
}

pub use zilla_engine::ports::Ports;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_reject_unknown_keys_and_bad_mutual() {
        let options: TlsOptions =
            serde_json::from_str(r#"{"keys": ["localhost"], "mutual": "requested"}"#).unwrap();
        assert_eq!(options.mutual, Some(Mutual::Requested));
        assert!(serde_json::from_str::<TlsOptions>(r#"{"key": ["localhost"]}"#).is_err());
        assert!(serde_json::from_str::<TlsOptions>(r#"{"mutual": "maybe"}"#).is_err());
    }
}
