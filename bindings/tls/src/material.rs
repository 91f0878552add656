//! Key and trust material: vault entries turned into rustls types, and the certificate fields
//! the binding reads (host names to pick a key by SNI, the subject as the stream identity).

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, Error, RootCertStore};
use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, PrivatePkcs1KeyDer,
    PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate, X509Version};
use zilla_engine::guard::escape_dn_value;
use zilla_engine::vault::{KeyEntry, PrivateKeyFormat, Vault};

/// Why vault material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    /// No key under the alias.
    #[error("no key `{0}` in the vault")]
    MissingKey(String),
    /// No trusted certificate under the alias.
    #[error("no trusted certificate `{0}` in the vault")]
    MissingCertificate(String),
    /// The key entry has no certificate.
    #[error("key `{0}` has no certificate chain")]
    EmptyChain(String),
    /// The key cannot sign or does not belong to its certificate.
    #[error("key `{alias}` is unusable: {source}")]
    BadKey {
        /// The key alias.
        alias: String,
        /// What rustls said.
        source: rustls::Error,
    },
    /// A trusted certificate cannot be used as a trust anchor.
    #[error("trusted certificate `{alias}` is unusable: {source}")]
    BadCertificate {
        /// The certificate alias, or `system` for the operating system's store.
        alias: String,
        /// What rustls said.
        source: rustls::Error,
    },
}

/// A server or client key, ready to present, with the host names its certificate is for.
#[derive(Debug)]
pub struct NamedKey {
    /// DNS names of the leaf certificate (subject alternative names, else the common name).
    pub names: Vec<String>,
    /// The key with its chain.
    pub key: Arc<CertifiedKey>,
}

/// Loads the key under `alias` and checks that it matches its certificate.
pub fn load_key(
    vault: &dyn Vault,
    alias: &str,
    provider: &CryptoProvider,
) -> Result<NamedKey, MaterialError> {
    let entry = vault
        .key(alias)
        .ok_or_else(|| MaterialError::MissingKey(alias.to_owned()))?;
    certified_key(alias, entry, provider)
}

fn certified_key(
    alias: &str,
    entry: KeyEntry,
    provider: &CryptoProvider,
) -> Result<NamedKey, MaterialError> {
    let Some(leaf) = entry.chain.first() else {
        return Err(MaterialError::EmptyChain(alias.to_owned()));
    };
    let names = dns_names(leaf);
    let v1 = is_v1(leaf);
    let chain: Vec<CertificateDer<'static>> =
        entry.chain.into_iter().map(CertificateDer::from).collect();
    let key: PrivateKeyDer<'static> = match entry.format {
        PrivateKeyFormat::Pkcs8 => PrivatePkcs8KeyDer::from(entry.key).into(),
        PrivateKeyFormat::Pkcs1 => PrivatePkcs1KeyDer::from(entry.key).into(),
        PrivateKeyFormat::Sec1 => PrivateSec1KeyDer::from(entry.key).into(),
    };
    // rustls cannot parse a v1 certificate to check the key against; Java serves them.
    let key = if v1 {
        certified_v1_key(chain, key, provider)
    } else {
        CertifiedKey::from_der(chain, key, provider)
    }
    .map_err(|source| MaterialError::BadKey {
        alias: alias.to_owned(),
        source,
    })?;
    Ok(NamedKey {
        names,
        key: Arc::new(key),
    })
}

/// Whether `der` parses as an X.509 version 1 certificate.
pub(crate) fn is_v1(der: &[u8]) -> bool {
    X509Certificate::from_der(der)
        .is_ok_and(|(_, certificate)| certificate.version() == X509Version::V1)
}

/// A key whose certificate is v1, which rustls cannot parse to check the key against: the
/// certificate's public key is compared with the private key's here instead.
fn certified_v1_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, Error> {
    let signing = provider.key_provider.load_private_key(key)?;
    let leaf = chain.first().ok_or(Error::NoCertificatesPresented)?;
    let (_, certificate) = X509Certificate::from_der(leaf)
        .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
    if let Some(public) = signing.public_key()
        && public.as_ref() != certificate.public_key().raw
    {
        return Err(Error::InconsistentKeys(
            rustls::InconsistentKeys::KeyMismatch,
        ));
    }
    Ok(CertifiedKey::new(chain, signing))
}

/// Trust anchors from the trusted certificates under `aliases`.
pub fn trust_anchors(
    vault: &dyn Vault,
    aliases: &[String],
) -> Result<RootCertStore, MaterialError> {
    let mut roots = RootCertStore::empty();
    for alias in aliases {
        let certificate = vault
            .certificate(alias)
            .ok_or_else(|| MaterialError::MissingCertificate(alias.clone()))?;
        roots
            .add(CertificateDer::from(certificate))
            .map_err(|source| MaterialError::BadCertificate {
                alias: alias.clone(),
                source,
            })?;
    }
    Ok(roots)
}

/// The certificate revocation lists peers are checked against when the vault asks for
/// revocation checking (`revocation: crl`), `None` when it does not.
pub fn revocation_lists(
    vault: Option<&dyn Vault>,
) -> Option<Vec<CertificateRevocationListDer<'static>>> {
    vault.and_then(Vault::revocation_lists).map(|lists| {
        lists
            .into_iter()
            .map(CertificateRevocationListDer::from)
            .collect()
    })
}

/// Adds every trusted certificate of the vault that can be a trust anchor.
pub fn add_all_trusted(roots: &mut RootCertStore, vault: &dyn Vault) {
    let (added, ignored) =
        roots.add_parsable_certificates(vault.certificates().into_iter().map(CertificateDer::from));
    if ignored > 0 {
        tracing::warn!(
            added,
            ignored,
            "some vault certificates cannot be trust anchors"
        );
    }
}

/// Adds the operating system's CA certificates, read once per process.
pub fn add_system_roots(roots: &mut RootCertStore) {
    static SYSTEM: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    let system = SYSTEM.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        for error in &loaded.errors {
            tracing::warn!(%error, "reading system CA certificates");
        }
        loaded.certs
    });
    let (added, ignored) = roots.add_parsable_certificates(system.iter().cloned());
    tracing::debug!(added, ignored, "system CA certificates");
}

/// The DNS names a certificate is for: its subject alternative names, or its common name when
/// it has none.
pub fn dns_names(certificate: &[u8]) -> Vec<String> {
    let Ok((_, certificate)) = X509Certificate::from_der(certificate) else {
        return Vec::new();
    };
    let from_san: Vec<String> = certificate
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(name) => Some(name.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if !from_san.is_empty() {
        return from_san;
    }
    certificate
        .subject()
        .iter_common_name()
        .filter_map(|name| name.as_str().ok())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// A certificate chain as concatenated PEM `CERTIFICATE` blocks in the order given (leaf
/// first), the credentials a tls server hands its `authorization` guard, as Zilla does.
pub fn pem_chain(chain: &[CertificateDer<'_>]) -> String {
    use base64::Engine;
    let mut pem = String::new();
    for certificate in chain {
        let encoded = base64::engine::general_purpose::STANDARD.encode(certificate.as_ref());
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in encoded.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    pem
}

/// Whether `host` (lowercase) is one of `names`; `*.example.com` stands for one label.
pub fn names_host(names: &[String], host: &str) -> bool {
    names.iter().any(|name| match name.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => name == host,
    })
}

/// The subject of a certificate as an RFC 4514 distinguished name (most specific attribute
/// first, e.g. `CN=client,O=Example`), the form Java's `X500Principal.getName()` gives.
pub fn subject_dn(certificate: &[u8]) -> Option<String> {
    let (_, certificate) = X509Certificate::from_der(certificate).ok()?;
    let rdns: Vec<String> = certificate
        .subject()
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|attribute| {
                    let oid = attribute.attr_type().to_id_string();
                    let name = match oid.as_str() {
                        "2.5.4.3" => "CN",
                        "2.5.4.6" => "C",
                        "2.5.4.7" => "L",
                        "2.5.4.8" => "ST",
                        "2.5.4.9" => "STREET",
                        "2.5.4.10" => "O",
                        "2.5.4.11" => "OU",
                        "0.9.2342.19200300.100.1.25" => "DC",
                        "0.9.2342.19200300.100.1.1" => "UID",
                        _ => oid.as_str(),
                    };
                    let value = match attribute.as_str() {
                        Ok(text) => escape_dn_value(text),
                        Err(_) => format!("#{}", hex(attribute.as_slice())),
                    };
                    format!("{name}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    Some(rdns.into_iter().rev().collect::<Vec<_>>().join(","))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_names_cover_one_label() {
        let names = vec!["*.example.com".to_owned(), "localhost".to_owned()];
        assert!(names_host(&names, "api.example.com"));
        assert!(names_host(&names, "localhost"));
        assert!(!names_host(&names, "example.com"));
        assert!(!names_host(&names, "a.b.example.com"));
        assert!(!names_host(&names, ".example.com"));
    }
}
