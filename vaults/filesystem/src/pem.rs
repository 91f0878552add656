//! PEM stores.
//!
//! `store` names a file or a directory. Each file is one entry, named by its file name without
//! the last extension (`certs/localhost.pem` is `localhost`); in a directory, the files ending
//! in `.pem`, `.crt`, `.cer` or `.key` are read in name order and files sharing a name are one
//! entry (`localhost.key` with `localhost.crt`).
//!
//! An entry with a private key is a key entry: its certificates, in file order, are the chain
//! (leaf first). An entry without a private key holds trusted certificates: a bundle file keeps
//! all of them under its one name.
//!
//! Certificate revocation lists (`X509 CRL` sections, or `.crl` files in PEM or DER) belong to
//! no entry: the store keeps them all, for `revocation: crl`.

use std::path::Path;

use pkcs8::EncryptedPrivateKeyInfoRef;
use pkcs8::der::Document;
use rustls_pki_types::pem::{PemObject, SectionKind};
use x509_parser::prelude::FromDer;
use zilla_engine::vault::{KeyEntry, PrivateKeyFormat};

use crate::error::VaultError;
use crate::store::{CertificateNames, Store};

const EXTENSIONS: [&str; 5] = ["pem", "crt", "cer", "key", "crl"];
const ENCRYPTED_BEGIN: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----";
const ENCRYPTED_END: &str = "-----END ENCRYPTED PRIVATE KEY-----";

#[derive(Default)]
struct Entry {
    keys: Vec<(Vec<u8>, PrivateKeyFormat)>,
    certificates: Vec<Vec<u8>>,
    crls: Vec<Vec<u8>>,
}

/// Reads the PEM file or directory at `path`; `password` decrypts encrypted PKCS#8 keys.
pub(crate) fn load(path: &Path, password: Option<&str>) -> Result<Store, VaultError> {
    let read_error = |source| VaultError::Read {
        path: path.to_owned(),
        source,
    };
    let files = if std::fs::metadata(path).map_err(read_error)?.is_dir() {
        let mut files = Vec::new();
        for dir_entry in std::fs::read_dir(path).map_err(read_error)? {
            let file = dir_entry.map_err(read_error)?.path();
            let pem_like = file
                .extension()
                .and_then(|extension| extension.to_str())
                .is_some_and(|extension| {
                    EXTENSIONS
                        .iter()
                        .any(|known| extension.eq_ignore_ascii_case(known))
                });
            if pem_like && file.is_file() {
                files.push(file);
            }
        }
        files.sort();
        files
    } else {
        vec![path.to_owned()]
    };

    let mut entries: Vec<(String, Entry)> = Vec::new();
    for file in files {
        let alias = file
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_default();
        let index = match entries.iter().position(|(other, _)| *other == alias) {
            Some(index) => index,
            None => {
                entries.push((alias.clone(), Entry::default()));
                entries.len() - 1
            }
        };
        read_file(&file, &alias, password, &mut entries[index].1)?;
    }

    let mut store = Store {
        path: path.to_owned(),
        keys: Vec::new(),
        certificates: Vec::new(),
        crls: Vec::new(),
    };
    for (alias, mut entry) in entries {
        store.crls.append(&mut entry.crls);
        let entry_error = |reason: String| VaultError::Entry {
            path: path.to_owned(),
            alias: alias.clone(),
            reason,
        };
        match entry.keys.len() {
            0 => store.certificates.extend(
                entry
                    .certificates
                    .into_iter()
                    .map(|der| (alias.clone(), der)),
            ),
            1 if entry.certificates.is_empty() => {
                return Err(entry_error(
                    "holds a private key without its certificate".into(),
                ));
            }
            1 => {
                if let Some((key, format)) = entry.keys.pop() {
                    store.keys.push((
                        alias.clone(),
                        KeyEntry {
                            chain: entry.certificates,
                            key,
                            format,
                        },
                    ));
                }
            }
            count => {
                return Err(entry_error(format!(
                    "holds {count} private keys; put each key in its own file"
                )));
            }
        }
    }
    Ok(store)
}

fn read_file(
    file: &Path,
    alias: &str,
    password: Option<&str>,
    entry: &mut Entry,
) -> Result<(), VaultError> {
    let data = std::fs::read(file).map_err(|source| VaultError::Read {
        path: file.to_owned(),
        source,
    })?;
    let format_error = |reason: String| VaultError::Format {
        path: file.to_owned(),
        format: "pem",
        reason,
    };
    let found_before = entry.keys.len() + entry.certificates.len() + entry.crls.len();
    let is_crl_file = file
        .extension()
        .and_then(|extension| extension.to_str())
        .is_some_and(|extension| extension.eq_ignore_ascii_case("crl"));
    if is_crl_file && !data.starts_with(b"-----") {
        // `openssl ca -gencrl -outform DER` and most CA tools write `.crl` files as DER.
        check_crl(&data).map_err(|reason| format_error(format!("revocation list: {reason}")))?;
        entry.crls.push(data);
        return Ok(());
    }
    let text = String::from_utf8_lossy(&data);
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(VaultError::Entry {
            path: file.to_owned(),
            alias: alias.to_owned(),
            reason: "holds a traditionally encrypted key, which is not supported; convert it \
                     with `openssl pkcs8 -topk8`"
                .into(),
        });
    }

    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(&data) {
        let (kind, der) = section.map_err(|error| format_error(error.to_string()))?;
        match kind {
            SectionKind::Certificate => {
                CertificateNames::parse(&der)
                    .map_err(|reason| format_error(format!("certificate: {reason}")))?;
                entry.certificates.push(der);
            }
            SectionKind::PrivateKey => entry.keys.push((der, PrivateKeyFormat::Pkcs8)),
            SectionKind::RsaPrivateKey => entry.keys.push((der, PrivateKeyFormat::Pkcs1)),
            SectionKind::EcPrivateKey => entry.keys.push((der, PrivateKeyFormat::Sec1)),
            SectionKind::Crl => {
                check_crl(&der)
                    .map_err(|reason| format_error(format!("revocation list: {reason}")))?;
                entry.crls.push(der);
            }
            _ => {}
        }
    }

    for block in encrypted_blocks(&text) {
        // `der` cannot decode these parameters from a PEM reader, so decode the DER instead.
        let (_, document) = Document::from_pem(block)
            .map_err(|error| format_error(format!("encrypted private key: {error}")))?;
        let encrypted = EncryptedPrivateKeyInfoRef::try_from(document.as_bytes())
            .map_err(|error| format_error(format!("encrypted private key: {error}")))?;
        let Some(password) = password else {
            return Err(VaultError::Entry {
                path: file.to_owned(),
                alias: alias.to_owned(),
                reason: "holds an encrypted private key but no `password` is configured".into(),
            });
        };
        let decrypted = encrypted
            .decrypt(password)
            .map_err(|error| VaultError::Decrypt {
                path: file.to_owned(),
                what: format!("the private key of `{alias}`"),
                reason: error.to_string(),
            })?;
        entry
            .keys
            .push((decrypted.as_bytes().to_vec(), PrivateKeyFormat::Pkcs8));
    }

    if entry.keys.len() + entry.certificates.len() + entry.crls.len() == found_before {
        return Err(format_error(
            "no CERTIFICATE, PRIVATE KEY or X509 CRL sections".into(),
        ));
    }
    Ok(())
}

/// Whether `der` is a certificate revocation list.
fn check_crl(der: &[u8]) -> Result<(), String> {
    use x509_parser::prelude::CertificateRevocationList;
    CertificateRevocationList::from_der(der)
        .map(|_| ())
        .map_err(|error| error.to_string())
}

/// Each `ENCRYPTED PRIVATE KEY` section, markers included; the PEM reader skips these.
fn encrypted_blocks(text: &str) -> Vec<&str> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(ENCRYPTED_BEGIN) {
        let Some(length) = rest[start..].find(ENCRYPTED_END) else {
            // An unterminated section is left for the decoder to report.
            blocks.push(&rest[start..]);
            break;
        };
        let end = start + length + ENCRYPTED_END.len();
        blocks.push(&rest[start..end]);
        rest = &rest[end..];
    }
    blocks
}
