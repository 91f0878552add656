//! The certificates Java's default trust manager accepts and webpki refuses, accepted here too so
//! that stores made for Zilla keep working, each case on purpose and nothing looser:
//!
//! - **X.509 v1 certificates** (no extensions, as `openssl x509 -req` without `-extfile` makes
//!   them): webpki cannot parse them at all. A v1 server certificate is accepted when it is
//!   itself a trusted certificate or is signed directly by one; a v1 key certificate is served.
//! - **A trusted certificate presented as the server's own**, even when it is marked as a CA
//!   (`CaUsedAsEndEntity` in webpki): Java's PKIX validator accepts a chain whose end entity is
//!   in the trust store. The certificate must match byte for byte.
//! - **The common name as host name** when a certificate has no DNS subject alternative name
//!   (RFC 2818's fallback, which Java's HTTPS identification keeps): webpki reads only SANs.
//!
//! Everything else is webpki's answer. These paths still check the validity period, the host
//! name (unless identification is off) and the handshake signature with the certificate's key.
//! With `revocation: crl` they are closed: they cannot consult the lists.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{CertificateError, DigitallySignedStruct, Error, PeerMisbehaved, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use x509_parser::asn1_rs::Any;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{ASN1Time, FromDer, X509Certificate, X509Version};

use crate::material::{self, is_v1};

/// A server certificate verifier: webpki first, then the cases in the module docs.
#[derive(Debug)]
pub(crate) struct JavaCompatibleVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    /// DER of the vault's trusted certificates (not the system's).
    trusted: Vec<Vec<u8>>,
    /// `zilla.binding.tls.client.https.identification`: whether the host name is checked.
    check_name: bool,
    /// Whether revocation lists apply, which closes the non-webpki paths.
    revocation: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl JavaCompatibleVerifier {
    pub(crate) fn new(
        webpki: Arc<WebPkiServerVerifier>,
        trusted: Vec<Vec<u8>>,
        check_name: bool,
        revocation: bool,
        provider: &CryptoProvider,
    ) -> Self {
        Self {
            webpki,
            trusted,
            check_name,
            revocation,
            algorithms: provider.signature_verification_algorithms,
        }
    }

    /// Whether Java would accept `der` for `server_name` where webpki said `error`.
    fn java_accepts(
        &self,
        der: &[u8],
        server_name: &ServerName<'_>,
        now: UnixTime,
        error: &CertificateError,
    ) -> bool {
        let Ok((_, certificate)) = X509Certificate::from_der(der) else {
            return false;
        };
        let Ok(now) = ASN1Time::from_timestamp(i64::try_from(now.as_secs()).unwrap_or(i64::MAX))
        else {
            return false;
        };
        if !certificate.validity().is_valid_at(now) {
            return false;
        }
        let name_only = matches!(
            error,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
        );
        let chain_trusted = if name_only {
            // webpki checks the chain before the name: this error means the chain is trusted.
            true
        } else if matches!(
            error,
            // webpki's `CaUsedAsEndEntity` and v1 parse failures arrive as `Other`.
            CertificateError::UnknownIssuer
                | CertificateError::BadEncoding
                | CertificateError::Other(_)
        ) {
            self.trusted.iter().any(|trusted| trusted.as_slice() == der)
                || (certificate.version() == X509Version::V1
                    && self.issued_by_trusted(der, &certificate))
        } else {
            false
        };
        chain_trusted && (!self.check_name || names_server(der, &certificate, server_name))
    }

    /// Whether a trusted certificate whose subject is `certificate`'s issuer signed it.
    fn issued_by_trusted(&self, der: &[u8], certificate: &X509Certificate<'_>) -> bool {
        let Some(signature_algorithm) = signature_algorithm(der) else {
            return false;
        };
        self.trusted.iter().any(|trusted| {
            let Ok((_, issuer)) = X509Certificate::from_der(trusted) else {
                return false;
            };
            if issuer.subject().as_raw() != certificate.issuer().as_raw() {
                return false;
            }
            let Some(key_algorithm) = algorithm_of(issuer.public_key().raw) else {
                return false;
            };
            self.algorithms.all.iter().any(|algorithm| {
                algorithm.signature_alg_id().as_ref() == signature_algorithm
                    && algorithm.public_key_alg_id().as_ref() == key_algorithm
                    && algorithm
                        .verify_signature(
                            &issuer.public_key().subject_public_key.data,
                            certificate.tbs_certificate.as_ref(),
                            &certificate.signature_value.data,
                        )
                        .is_ok()
            })
        })
    }

    /// A handshake signature made with a v1 certificate's key, which webpki cannot read.
    fn verify_with_v1_key(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
        tls13: bool,
    ) -> Result<HandshakeSignatureValid, Error> {
        let (_, certificate) = X509Certificate::from_der(cert)
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let key = certificate.public_key();
        let key_algorithm = algorithm_of(key.raw)
            .ok_or(Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if tls13 {
            return rustls::crypto::verify_tls13_signature_with_raw_key(
                message,
                &SubjectPublicKeyInfoDer::from(key.raw),
                dss,
                &self.algorithms,
            );
        }
        let candidates = self
            .algorithms
            .mapping
            .iter()
            .find(|(scheme, _)| *scheme == dss.scheme)
            .map(|(_, algorithms)| *algorithms)
            .ok_or(PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme)?;
        // TLS 1.2 may need several algorithms tried for one scheme.
        for algorithm in candidates {
            if algorithm.public_key_alg_id().as_ref() != key_algorithm {
                continue;
            }
            return algorithm
                .verify_signature(&key.subject_public_key.data, message, dss.signature())
                .map(|()| HandshakeSignatureValid::assertion())
                .map_err(|_| Error::InvalidCertificate(CertificateError::BadSignature));
        }
        // No algorithm of the scheme fits the certificate's key.
        Err(Error::InvalidCertificate(CertificateError::BadSignature))
    }
}

impl ServerCertVerifier for JavaCompatibleVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let error = match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => return Ok(verified),
            // The chain is checked before the name, so a name error means the chain is trusted.
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => return Ok(ServerCertVerified::assertion()),
            Err(error) => error,
        };
        match &error {
            Error::InvalidCertificate(reason)
                if !self.revocation && self.java_accepts(end_entity, server_name, now, reason) =>
            {
                tracing::debug!(%reason, "server certificate accepted as Java's trust manager would");
                Ok(ServerCertVerified::assertion())
            }
            _ => Err(error),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        // webpki first: a v1 certificate is parsed a second time only when webpki cannot
        // read it, not on every handshake.
        match self.webpki.verify_tls12_signature(message, cert, dss) {
            Err(Error::InvalidCertificate(_)) if is_v1(cert) => {
                self.verify_with_v1_key(message, cert, dss, false)
            }
            verified => verified,
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        // webpki first: a v1 certificate is parsed a second time only when webpki cannot
        // read it, not on every handshake.
        match self.webpki.verify_tls13_signature(message, cert, dss) {
            Err(Error::InvalidCertificate(_)) if is_v1(cert) => {
                self.verify_with_v1_key(message, cert, dss, true)
            }
            verified => verified,
        }
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Whether the certificate names the server as Java's HTTPS identification does: a DNS name
/// against its DNS subject alternative names, or its common name when it has none; an IP
/// address against its IP address SANs only.
fn names_server(
    der: &[u8],
    certificate: &X509Certificate<'_>,
    server_name: &ServerName<'_>,
) -> bool {
    match server_name {
        ServerName::DnsName(name) => {
            let host = name.as_ref().trim_end_matches('.').to_ascii_lowercase();
            material::names_host(&material::dns_names(der), &host)
        }
        ServerName::IpAddress(address) => {
            let octets: Vec<u8> = match std::net::IpAddr::from(*address) {
                std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
                std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
            };
            certificate
                .subject_alternative_name()
                .ok()
                .flatten()
                .is_some_and(|san| {
                    san.value.general_names.iter().any(|name| {
                        matches!(name, GeneralName::IPAddress(ip) if *ip == octets.as_slice())
                    })
                })
        }
        _ => false,
    }
}

/// The contents of the first element of a DER SEQUENCE when that element is itself a
/// SEQUENCE: the `AlgorithmIdentifier` of a `SubjectPublicKeyInfo`, without its header, the
/// form rustls' algorithm identifiers take.
fn algorithm_of(spki: &[u8]) -> Option<&[u8]> {
    let (_, outer) = Any::from_der(spki).ok()?;
    let (_, algorithm) = Any::from_der(outer.data).ok()?;
    Some(algorithm.data)
}

/// The certificate's `signatureAlgorithm` contents: the element after `tbsCertificate`.
fn signature_algorithm(der: &[u8]) -> Option<&[u8]> {
    let (_, outer) = Any::from_der(der).ok()?;
    let (rest, _tbs) = Any::from_der(outer.data).ok()?;
    let (_, algorithm) = Any::from_der(rest).ok()?;
    Some(algorithm.data)
}
