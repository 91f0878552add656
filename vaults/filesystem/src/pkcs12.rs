//! PKCS#12 stores.
//!
//! Decoding and decryption (PBES2 with PBKDF2 and AES, and the legacy PKCS#12 PBE schemes
//! RC2-40-CBC and 3-key 3DES-CBC) are done by `p12-keystore`; this module links the decoded bags
//! into entries the way Java's `KeyStore` presents them:
//!
//! - a private key becomes a key entry named by its `friendlyName`, with the certificate that
//!   shares its `localKeyId` as leaf, followed by its issuers found in the store;
//! - a certificate without a `localKeyId` becomes a trusted certificate named by its
//!   `friendlyName` (or its subject when it has none), whether or not it carries Java's
//!   trusted-usage attribute: `openssl pkcs12 -export -nokeys` writes none.

use std::path::Path;

use p12_keystore::error::Error as Pkcs12Error;
use p12_keystore::{CertificateBag, Pkcs12Archive};
use zilla_engine::vault::{KeyEntry, PrivateKeyFormat};

use crate::error::VaultError;
use crate::store::{CertificateNames, Store};

struct Certificate<'a> {
    bag: &'a CertificateBag,
    names: CertificateNames,
}

/// Decrypts the PKCS#12 store at `path` from its bytes `data`; an absent password is the empty
/// one.
pub(crate) fn load(path: &Path, data: &[u8], password: Option<&str>) -> Result<Store, VaultError> {
    let archive = Pkcs12Archive::from_pkcs12(data, password.unwrap_or(""))
        .map_err(|error| classify(path, error))?;

    let mut certificates = Vec::with_capacity(archive.certs.len());
    for bag in &archive.certs {
        let names =
            CertificateNames::parse(bag.cert.as_der()).map_err(|reason| VaultError::Format {
                path: path.to_owned(),
                format: "pkcs12",
                reason: format!("certificate `{}`: {reason}", bag.cert.subject()),
            })?;
        certificates.push(Certificate { bag, names });
    }

    let mut store = Store {
        path: path.to_owned(),
        keys: Vec::new(),
        certificates: Vec::new(),
        crls: Vec::new(),
    };

    for key in &archive.keys {
        let leaf = key.local_key_id.as_ref().and_then(|id| {
            certificates.iter().position(|certificate| {
                certificate.bag.local_key_id.as_deref() == Some(id.as_ref())
            })
        });
        let alias = key
            .friendly_name
            .clone()
            .or_else(|| leaf.and_then(|index| certificates[index].bag.friendly_name.clone()))
            .or_else(|| key.local_key_id.as_ref().map(|id| hex(id.as_ref())));
        let (Some(alias), Some(leaf)) = (alias, leaf) else {
            tracing::warn!(
                store = %path.display(),
                alias = key.friendly_name.as_deref().unwrap_or(""),
                "skipping a private key without a matching certificate"
            );
            continue;
        };
        if store.keys.iter().any(|(other, _)| *other == alias) {
            tracing::warn!(store = %path.display(), %alias, "skipping a second key with the same alias");
            continue;
        }
        store.keys.push((
            alias,
            KeyEntry {
                chain: chain(leaf, &certificates),
                key: key.key.as_der().to_vec(),
                format: PrivateKeyFormat::Pkcs8,
            },
        ));
    }

    for certificate in &certificates {
        if certificate.bag.local_key_id.is_some() {
            continue;
        }
        let alias = certificate
            .bag
            .friendly_name
            .clone()
            .unwrap_or_else(|| certificate.names.subject_text.clone());
        if store.certificates.iter().any(|(other, _)| *other == alias) {
            tracing::warn!(store = %path.display(), %alias, "skipping a second certificate with the same alias");
            continue;
        }
        store
            .certificates
            .push((alias, certificate.bag.cert.as_der().to_vec()));
    }

    Ok(store)
}

/// The leaf at `leaf`, then each issuer found among `certificates`, up to a self-signed one.
fn chain(leaf: usize, certificates: &[Certificate<'_>]) -> Vec<Vec<u8>> {
    let mut taken = vec![leaf];
    let mut current = &certificates[leaf];
    while !current.names.self_signed() {
        let issuer = certificates.iter().enumerate().find(|(index, candidate)| {
            !taken.contains(index) && candidate.names.subject == current.names.issuer
        });
        let Some((index, issuer)) = issuer else {
            break;
        };
        taken.push(index);
        current = issuer;
    }
    taken
        .into_iter()
        .map(|index| certificates[index].bag.cert.as_der().to_vec())
        .collect()
}

fn classify(path: &Path, error: Pkcs12Error) -> VaultError {
    match error {
        Pkcs12Error::MacError(_) => VaultError::WrongPassword {
            path: path.to_owned(),
            format: "PKCS#12",
        },
        Pkcs12Error::UnpadError | Pkcs12Error::Pkcs5Error(_) | Pkcs12Error::InvalidPrivateKey => {
            VaultError::Decrypt {
                path: path.to_owned(),
                what: "contents".to_owned(),
                reason: error.to_string(),
            }
        }
        Pkcs12Error::IoError(source) => VaultError::Read {
            path: path.to_owned(),
            source,
        },
        other => VaultError::Format {
            path: path.to_owned(),
            format: "pkcs12",
            reason: other.to_string(),
        },
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
